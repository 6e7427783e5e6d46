"""BatchNorm2D, AvgPool2D, AdaptiveAvgPool2D, Add, Concat, Identity, Tanh, Sigmoid:
float64 gradient checks with a random upstream gradient, PyTorch parity (float32)
forward and backward, the reference kernels against the compiled ones, bad input."""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_grad_close, numerical_gradient, rel_error

torch = pytest.importorskip("torch")
TF = torch.nn.functional
F = mc.functional
nn = mc.nn


def gradcheck_layer(layer, x, rng, train=False, reset=None):
    """dx and every parameter gradient of ``layer`` against centred differences."""
    def f():
        if reset is not None:
            reset()
        return layer.forward(x, train=train)
    y = f()
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    assert set(grads) == set(layer.params)
    assert_grad_close(dx, numerical_gradient(f, x, dy), what=f"{layer!r} dx")
    for key, param in layer.params.items():
        assert_grad_close(grads[key], numerical_gradient(f, param, dy), what=f"{layer!r} d{key}")


def close(actual, expected, what, tol=1e-4):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.2e}"


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- BatchNorm2D

def _bn64(C, rng):
    bn = nn.BatchNorm2D(C).astype(np.float64)
    bn.params["gamma"] = rng.uniform(0.5, 1.5, C)
    bn.params["beta"] = rng.standard_normal(C)
    bn.buffers["running_mean"] = rng.standard_normal(C) * 0.3
    bn.buffers["running_var"] = rng.uniform(0.5, 2.0, C)
    return bn


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 3), (4, 3, 1, 1)])
def test_batchnorm_gradcheck(shape, train, rng, kernels):
    bn = _bn64(shape[1], rng)
    saved = {k: v.copy() for k, v in bn.buffers.items()}

    def reset():  # each training forward moves the running statistics: start from the same
        for k, v in saved.items():
            bn.buffers[k][...] = v
    gradcheck_layer(bn, rng.standard_normal(shape) * 2 + 0.5, rng, train=train, reset=reset)


@pytest.mark.parametrize("shape", [(4, 6, 7, 5), (2, 16, 9, 9), (3, 5, 1, 1)])
def test_batchnorm_parity_with_running_stats(shape, rng, kernels):
    C = shape[1]
    x = randn(rng, *shape) * 3 + 1
    gamma, beta = randn(rng, C) + 1, randn(rng, C)
    mean0, var0 = randn(rng, C), np.abs(randn(rng, C)) + 0.5
    bn = nn.BatchNorm2D(C, eps=1e-3, momentum=0.3)
    bn.params.update(gamma=gamma.copy(), beta=beta.copy())
    bn.buffers.update(running_mean=mean0.copy(), running_var=var0.copy())
    tbn = torch.nn.BatchNorm2d(C, eps=1e-3, momentum=0.3)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(gamma))
        tbn.bias.copy_(torch.from_numpy(beta))
        tbn.running_mean.copy_(torch.from_numpy(mean0))
        tbn.running_var.copy_(torch.from_numpy(var0))
    xt = torch.tensor(x, requires_grad=True)
    # one training step: batch statistics, running statistics updated
    tbn.train()
    yt = tbn(xt)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    y = bn.forward(x, train=True)
    dx = bn.backward(dy)
    close(y, yt, "BN train y")
    close(dx, xt.grad, "BN train dx")
    close(bn.grads["gamma"], tbn.weight.grad, "BN dgamma")
    close(bn.grads["beta"], tbn.bias.grad, "BN dbeta")
    close(bn.buffers["running_mean"], tbn.running_mean, "BN running_mean")
    close(bn.buffers["running_var"], tbn.running_var, "BN running_var (unbiased)")
    # evaluation: running statistics
    tbn.eval()
    xt.grad = None
    yt = tbn(xt)
    yt.backward(torch.from_numpy(dy))
    close(bn.forward(x, train=False), yt, "BN eval y")
    close(bn.backward(dy), xt.grad, "BN eval dx")
    assert bn.forward(x).dtype == np.float32


def test_batchnorm_kernels_match_reference(rng):
    from minconv._kernels import reference_norm
    import minconv._kernels as K
    x, dy = randn(rng, 3, 8, 6, 7), randn(rng, 3, 8, 6, 7)
    mean, var = reference_norm.batchnorm_stats(x)
    m2, v2 = K.cpu.batchnorm_stats(x)
    close(m2, mean, "mean", 1e-5)
    close(v2, var, "var", 1e-5)
    invstd = (1 / np.sqrt(var + 1e-5)).astype(np.float32)
    gamma = randn(rng, 8)
    for train in (True, False):
        ref = reference_norm.batchnorm_backward(dy, x, mean, invstd, gamma, train)
        got = K.cpu.batchnorm_backward(dy, x, mean, invstd, gamma, train)
        for a, b, what in zip(got, ref, ("dx", "dgamma", "dbeta")):
            close(a, b, f"{what} train={train}", 1e-5)
            assert a.dtype == np.float32


def test_batchnorm_deconv_rule_is_the_eval_scale(rng):
    bn = _bn64(3, rng)
    x, dy = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    bn.forward(x)
    scale = bn.params["gamma"] / np.sqrt(bn.buffers["running_var"] + bn.eps)
    for rule in ("deconv", "guided"):
        np.testing.assert_allclose(bn.backward(dy, rule=rule), dy * scale.reshape(1, -1, 1, 1))
    assert bn.grads == {}  # the visualisation rules leave the gradients alone


def test_batchnorm_bad_input(rng):
    bn = nn.BatchNorm2D(4)
    with pytest.raises(ValueError, match="3 channels"):
        bn.forward(randn(rng, 2, 3, 5, 5))
    with pytest.raises(ValueError, match="more than one value"):
        bn.forward(randn(rng, 1, 4, 1, 1), train=True)
    with pytest.raises(ValueError, match="4-D"):
        F.batch_norm(randn(rng, 2, 4), None, None, np.zeros(4, np.float32),
                     np.ones(4, np.float32))
    with pytest.raises(ValueError, match="backward called before forward"):
        nn.BatchNorm2D(4).backward(randn(rng, 2, 4, 3, 3))


# ---------------------------------------------------------------- average pooling

AVG_GRID = [  # (shape, kernel, stride, padding, ceil_mode, count_include_pad)
    ((2, 3, 6, 6), 2, None, 0, False, True),
    ((1, 2, 7, 5), 3, 2, 1, False, True),
    ((1, 2, 7, 5), 3, 2, 1, False, False),
    ((2, 2, 8, 7), 3, 2, 1, True, True),
    ((2, 2, 8, 7), 3, 2, 1, True, False),
    ((1, 3, 5, 6), (2, 3), (2, 1), (1, 0), True, True),
    ((1, 1, 6, 6), 3, 2, 0, True, True),
    ((1, 2, 7, 5), 2, 2, 0, False, True),         # 2x2/2 windows inside the map
    ((1, 2, 7, 5), 2, 2, 0, True, True),          # ... and past its edge
    ((2, 4, 7, 7), 7, 1, 0, False, True),         # one window over the map: plane means
    ((1, 3, 5, 6), (5, 6), 2, 0, True, False),
]


@pytest.mark.parametrize("case", AVG_GRID)
def test_avgpool_parity(case, rng, kernels):
    shape, k, s, p, ceil, inc = case
    x = randn(rng, *shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=inc)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    layer = nn.AvgPool2D(k, s, p, ceil_mode=ceil, count_include_pad=inc)
    close(layer.forward(x), yt, f"avg_pool2d y {case}")
    close(layer.backward(dy), xt.grad, f"avg_pool2d dx {case}")


@pytest.mark.parametrize("case", AVG_GRID[1:5] + AVG_GRID[-1:])
def test_avgpool_gradcheck(case, rng):
    shape, k, s, p, ceil, inc = case
    gradcheck_layer(nn.AvgPool2D(k, s, p, ceil_mode=ceil, count_include_pad=inc),
                    rng.standard_normal(shape), rng)


ADAPTIVE_GRID = [((2, 3, 7, 7), (1, 1)), ((1, 2, 10, 7), (3, 4)), ((1, 2, 5, 5), (7, 7)),
                 ((1, 2, 2, 3), (7, 5)), ((2, 2, 14, 14), 7), ((1, 1, 6, 9), (None, 4))]


@pytest.mark.parametrize("shape, out", ADAPTIVE_GRID)
def test_adaptive_avgpool_parity(shape, out, rng):
    x = randn(rng, *shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.adaptive_avg_pool2d(xt, out)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    layer = nn.AdaptiveAvgPool2D(out)
    close(layer.forward(x), yt, f"adaptive y {shape}->{out}")
    close(layer.backward(dy), xt.grad, f"adaptive dx {shape}->{out}")


@pytest.mark.parametrize("shape", [(1, 1000, 13, 13), (2, 3, 7), (2, 3, 4, 5, 6), (1, 2, 56, 56)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_means(shape, dtype, rng):
    """Each plane's mean, in the input's dtype, against float64 NumPy."""
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    y = F.plane_means(x)
    assert y.shape == shape[:2] + (1,) * (len(shape) - 2) and y.dtype == dtype
    expected = x.astype(np.float64).mean(axis=tuple(range(2, len(shape))), keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("shape, out", ADAPTIVE_GRID[:4])
def test_adaptive_avgpool_gradcheck(shape, out, rng):
    gradcheck_layer(nn.AdaptiveAvgPool2D(out), rng.standard_normal(shape), rng)


def test_pool_bad_input(rng):
    with pytest.raises(ValueError, match="larger than the padded input"):
        nn.AvgPool2D(5).forward(randn(rng, 1, 1, 3, 3))
    with pytest.raises(ValueError, match="4-D"):
        nn.AdaptiveAvgPool2D(2).forward(randn(rng, 3, 3))
    with pytest.raises(ValueError, match="output_size"):
        nn.AdaptiveAvgPool2D(0).forward(randn(rng, 1, 1, 3, 3))


# ---------------------------------------------------------------- Add, Concat, Identity

def test_add_and_concat_gradcheck(rng):
    a, b, c = (rng.standard_normal((2, 3, 4, 4)) for _ in range(3))
    d = rng.standard_normal((2, 5, 4, 4))
    for layer, xs in ((nn.Add(), [a, b, c]), (nn.Concat(), [a, d, b])):
        y = layer.forward(xs)
        dy = rng.standard_normal(y.shape)
        dxs = layer.backward(dy)
        for i, x in enumerate(xs):
            num = numerical_gradient(lambda: layer.forward(xs), x, dy)
            assert_grad_close(dxs[i], num, what=f"{layer!r} input {i}")


def test_add_concat_parity(rng):
    a, b = randn(rng, 2, 3, 4, 5), randn(rng, 2, 2, 4, 5)
    close(nn.Concat().forward([a, b]), torch.cat([torch.tensor(a), torch.tensor(b)], 1), "cat")
    close(nn.Concat(axis=3).forward([a, a]),
          torch.cat([torch.tensor(a), torch.tensor(a)], 3), "cat axis 3")
    close(nn.Add().forward([a, a, a]), torch.tensor(a) * 3, "add")


def test_identity_and_saturating_gradcheck(rng):
    x = rng.standard_normal((2, 3, 4, 4)) * 2
    gradcheck_layer(nn.Identity(), x, rng)
    gradcheck_layer(nn.Tanh(), x, rng)
    gradcheck_layer(nn.Sigmoid(), x, rng)


def test_tanh_sigmoid_parity(rng):
    x = randn(rng, 2, 3, 5, 5) * 4
    x[0, 0, 0, :2] = [80.0, -80.0]  # no overflow in the sigmoid
    for layer, fn in ((nn.Tanh(), torch.tanh), (nn.Sigmoid(), torch.sigmoid)):
        xt = torch.tensor(x, requires_grad=True)
        yt = fn(xt)
        dy = randn(rng, *x.shape)
        yt.backward(torch.from_numpy(dy))
        y = layer.forward(x)
        assert y.dtype == np.float32
        close(y, yt, f"{layer!r} y", 1e-6)
        for rule in ("grad", "deconv", "guided"):  # smooth: every rule is the derivative
            close(layer.backward(dy, rule=rule), xt.grad, f"{layer!r} dx {rule}", 1e-6)


def test_merge_bad_input(rng):
    a, b = randn(rng, 2, 3, 4, 4), randn(rng, 2, 3, 5, 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 3, 5, 4\)"):
        nn.Add().forward([a, b])
    with pytest.raises(ValueError, match="only that axis may differ"):
        nn.Concat().forward([a, b])
    with pytest.raises(ValueError, match="list"):
        nn.Add().forward(a)
