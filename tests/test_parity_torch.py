"""Parity with PyTorch CPU, forward and backward, in float32.

PyTorch's autograd gives the reference gradients for a random upstream gradient.
Switches of max pooling must equal PyTorch's ``return_indices`` exactly.
"""
import numpy as np
import pytest

import minconv as mc

torch = pytest.importorskip("torch", reason="PyTorch not installed: parity tests need "
                                            "`pip install torch==2.13.0`")
TF = torch.nn.functional
F = mc.functional
RTOL = 1e-4


def assert_close(actual, expected, what, rtol=RTOL):
    """max |actual - expected| <= rtol * max |expected| (float32 sums reorder freely)."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}"
    scale = max(float(np.abs(expected).max()), 1e-30)
    err = float(np.abs(actual.astype(np.float64) - expected).max()) / scale
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:.0e}"


def leaf(a):
    return torch.tensor(a, requires_grad=True)


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# (N, C, H, W, F, kh, kw, stride, padding, dilation)
CONV_GRID = [
    (1, 2, 5, 5, 3, 3, 3, 1, 0, 1),
    (2, 3, 7, 6, 2, 3, 2, 2, 1, 1),
    (2, 2, 8, 7, 2, 3, 3, 1, 2, 2),
    (1, 1, 9, 8, 2, 2, 3, (2, 1), (1, 0), (1, 2)),
    (3, 2, 9, 11, 2, 5, 3, 2, 2, 1),
    (2, 3, 4, 5, 4, 1, 1, 1, 0, 1),
    (4, 8, 16, 13, 6, 3, 3, 1, 1, 1),
    # real ZFNet layers at batch 1: conv1 (224 -> 110) and conv2 (55 -> 26)
    (1, 3, 224, 224, 96, 7, 7, 2, 1, 1),
    (1, 96, 55, 55, 256, 5, 5, 2, 0, 1),
    (1, 256, 13, 13, 384, 3, 3, 1, 1, 1),  # conv3
]


@pytest.mark.parametrize("case", CONV_GRID)
def test_conv2d(case, rng):
    N, C, H, W_, F_, kh, kw, s, p, d = case
    x, W, b = randn(rng, N, C, H, W_), randn(rng, F_, C, kh, kw), randn(rng, F_)
    xt, Wt, bt = leaf(x), leaf(W), leaf(b)
    yt = TF.conv2d(xt, Wt, bt, s, p, d)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.conv2d(x, W, b, s, p, d), yt, "conv2d y")
    dx, dW, db = F.conv2d_backward(dy, x, W, s, p, d)
    assert_close(dx, xt.grad, "conv2d dx")
    assert_close(dW, Wt.grad, "conv2d dW")
    assert_close(db, bt.grad, "conv2d db")


# (N, C_in, Hi, Wi, C_out, kh, kw, stride, padding, dilation, output_padding)
CONVT_GRID = [
    (1, 2, 3, 3, 3, 3, 3, 1, 0, 1, 0),
    (2, 3, 3, 4, 2, 3, 2, 2, 1, 1, 1),
    (2, 2, 4, 3, 2, 3, 3, 2, 0, 2, (1, 0)),
    (1, 2, 3, 4, 3, 2, 3, 1, (0, 1), (2, 3), (1, 2)),
    (2, 3, 5, 5, 2, 4, 4, 2, 1, 1, 0),
    (2, 4, 6, 5, 3, 5, 3, 3, 2, 1, 2),
    (1, 96, 26, 26, 48, 5, 5, 2, 0, 1, 1),  # ZFNet's conv2 run backwards (26 -> 56)
]


@pytest.mark.parametrize("case", CONVT_GRID)
def test_conv_transpose2d(case, rng):
    N, Ci, Hi, Wi, Co, kh, kw, s, p, d, op = case
    x, W, b = randn(rng, N, Ci, Hi, Wi), randn(rng, Ci, Co, kh, kw), randn(rng, Co)
    xt, Wt, bt = leaf(x), leaf(W), leaf(b)
    yt = TF.conv_transpose2d(xt, Wt, bt, s, p, op, 1, d)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.conv_transpose2d(x, W, b, s, p, d, output_padding=op), yt, "convT y")
    dx, dW, db = F.conv_transpose2d_backward(dy, x, W, s, p, d, output_padding=op)
    assert_close(dx, xt.grad, "convT dx")
    assert_close(dW, Wt.grad, "convT dW")
    assert_close(db, bt.grad, "convT db")


# grouped: (N, C, H, W, F, k, stride, padding, dilation, groups)
GROUPED_GRID = [
    (2, 8, 13, 11, 6, 3, 1, 1, 1, 2),      # groups=2
    (1, 96, 27, 27, 256, 5, 1, 2, 1, 2),    # AlexNet's two-tower conv2
    (2, 16, 14, 14, 16, 3, 2, 1, 1, 16),    # depthwise, stride 2
    (2, 8, 9, 10, 16, 3, 1, 2, 2, 8),       # depthwise with a channel multiplier, dilation
]


@pytest.mark.parametrize("case", GROUPED_GRID)
def test_conv2d_grouped(case, rng):
    N, C, H, W_, F_, k, s, p, d, g = case
    x, W, b = randn(rng, N, C, H, W_), randn(rng, F_, C // g, k, k), randn(rng, F_)
    xt, Wt, bt = leaf(x), leaf(W), leaf(b)
    yt = TF.conv2d(xt, Wt, bt, s, p, d, g)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.conv2d(x, W, b, s, p, d, g), yt, "grouped conv2d y")
    dx, dW, db = F.conv2d_backward(dy, x, W, s, p, d, g)
    assert_close(dx, xt.grad, "grouped conv2d dx")
    assert_close(dW, Wt.grad, "grouped conv2d dW")
    assert_close(db, bt.grad, "grouped conv2d db")


@pytest.mark.parametrize("case", GROUPED_GRID)
def test_conv_transpose2d_grouped(case, rng):
    N, Ci, Hi, Wi, Co, k, s, p, d, g = case
    op = 1 if s > 1 else 0
    x, W, b = randn(rng, N, Ci, Hi, Wi), randn(rng, Ci, Co // g, k, k), randn(rng, Co)
    xt, Wt, bt = leaf(x), leaf(W), leaf(b)
    yt = TF.conv_transpose2d(xt, Wt, bt, s, p, op, g, d)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.conv_transpose2d(x, W, b, s, p, d, g, output_padding=op), yt,
                 "grouped convT y")
    dx, dW, db = F.conv_transpose2d_backward(dy, x, W, s, p, d, g, output_padding=op)
    assert_close(dx, xt.grad, "grouped convT dx")
    assert_close(dW, Wt.grad, "grouped convT dW")
    assert_close(db, bt.grad, "grouped convT db")


def test_grouped_layer_matches_torch(rng):
    layer = mc.nn.Conv2D(6, 9, 3, padding="same", groups=3)
    torch_layer = torch.nn.Conv2d(6, 9, 3, padding="same", groups=3)
    with torch.no_grad():
        torch_layer.weight.copy_(torch.from_numpy(layer.params["W"]))
        torch_layer.bias.copy_(torch.from_numpy(randn(rng, 9)))
    layer.params["b"] = torch_layer.bias.detach().numpy().copy()
    x = randn(rng, 2, 6, 7, 8)
    assert_close(layer.forward(x), torch_layer(torch.from_numpy(x)), "Conv2D(groups=3) y")


# (N, C, H, W, kernel, stride, padding, ceil_mode)
POOL_GRID = [
    (1, 1, 4, 4, 2, 2, 0, False),
    (2, 3, 7, 7, 3, 2, 0, False),
    (2, 2, 6, 8, 3, 2, 0, True),
    (1, 2, 7, 5, 3, 2, 1, True),
    (2, 2, 5, 7, (2, 3), (1, 2), (1, 1), False),
    (2, 3, 10, 9, 3, 3, 1, True),
    (2, 2, 8, 8, 2, 3, 1, True),     # stride > kernel: gaps between windows
    (1, 96, 110, 110, 3, 2, 0, True),  # ZFNet pool1: 110 -> 55
    (1, 256, 26, 26, 3, 2, 0, True),   # ZFNet pool2: 26 -> 13
    (1, 256, 13, 13, 3, 2, 0, False),  # ZFNet pool5: 13 -> 6
]


@pytest.mark.parametrize("case", POOL_GRID)
def test_max_pool2d(case, rng):
    N, C, H, W_, k, s, p, ceil = case
    x = randn(rng, N, C, H, W_)
    xt = leaf(x)
    yt, it = TF.max_pool2d(xt, k, s, p, 1, ceil, return_indices=True)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    y, switches = F.max_pool2d(x, k, s, p, ceil)
    np.testing.assert_array_equal(y, yt.detach().numpy())  # a max is exact
    np.testing.assert_array_equal(switches, it.numpy())
    assert np.issubdtype(switches.dtype, np.integer)
    assert_close(F.max_unpool2d(dy, switches, x.shape), xt.grad, "max_pool2d dx")
    if np.all(np.asarray(s) >= np.asarray(k)):
        # PyTorch's unpool scatters (the last write wins where windows overlap, minconv sums,
        # as pooling's backward must): the two agree when windows are disjoint
        unpooled = TF.max_unpool2d(torch.from_numpy(dy), it, k, s, p, output_size=(H, W_))
        assert_close(F.max_unpool2d(dy, switches, x.shape), unpooled, "max_unpool2d")


@pytest.mark.parametrize("case", POOL_GRID[:6])
def test_max_pool2d_ties(case, rng, kernels):
    """Few distinct values, many ties: both libraries give the first in row-major order."""
    N, C, H, W_, k, s, p, ceil = case
    x = rng.integers(0, 3, size=(N, C, H, W_)).astype(np.float32)
    _, it = TF.max_pool2d(torch.from_numpy(x), k, s, p, 1, ceil, return_indices=True)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, ceil)[1], it.numpy())


# (N, C, H, W, size, alpha, beta, k, input scale)
LRN_GRID = [
    (2, 7, 3, 4, 5, 1e-4, 0.75, 2.0, 30.0),
    (1, 6, 4, 3, 5, 0.5, 0.75, 1.0, 1.0),
    (2, 5, 3, 3, 4, 0.3, 0.6, 1.5, 1.0),
    (2, 3, 2, 5, 7, 0.2, 0.75, 1.0, 1.0),
    (1, 4, 3, 3, 1, 0.5, 0.75, 1.0, 1.0),
    (1, 96, 55, 55, 5, 1e-4, 0.75, 2.0, 20.0),  # ZFNet norm1
]


@pytest.mark.parametrize("case", LRN_GRID)
def test_lrn(case, rng):
    N, C, H, W_, size, alpha, beta, k, scale = case
    x = (scale * rng.standard_normal((N, C, H, W_))).astype(np.float32)
    xt = leaf(x)
    yt = TF.local_response_norm(xt, size, alpha, beta, k)
    dy = randn(rng, N, C, H, W_)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.lrn(x, size, alpha, beta, k), yt, "lrn y")
    assert_close(F.lrn_backward(dy, x, size, alpha, beta, k), xt.grad, "lrn dx")


@pytest.mark.parametrize("N, fin, fout", [(1, 7, 5), (4, 9216, 64)])
def test_linear(N, fin, fout, rng):
    x, W, b = randn(rng, N, fin), randn(rng, fout, fin), randn(rng, fout)
    xt, Wt, bt = leaf(x), leaf(W), leaf(b)
    yt = TF.linear(xt, Wt, bt)
    dy = randn(rng, N, fout)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.linear(x, W, b), yt, "linear y")
    dx, dW, db = F.linear_backward(dy, x, W)
    assert_close(dx, xt.grad, "linear dx")
    assert_close(dW, Wt.grad, "linear dW")
    assert_close(db, bt.grad, "linear db")


@pytest.mark.parametrize("N, K, scale", [(1, 3, 1.0), (8, 10, 1.0), (5, 1000, 30.0)])
def test_cross_entropy(N, K, scale, rng):
    z = (scale * rng.standard_normal((N, K))).astype(np.float32)
    labels = rng.integers(0, K, size=N)
    zt = leaf(z)
    Lt = TF.cross_entropy(zt, torch.from_numpy(labels))
    Lt.backward()
    loss = mc.nn.SoftmaxCrossEntropy()
    L = loss.forward(z, labels)
    assert abs(L - Lt.item()) <= RTOL * abs(Lt.item())
    assert_close(loss.backward(), zt.grad, "cross_entropy dz")


def test_cross_entropy_extreme_logits():
    """Logits of 1e4 overflow a naive exp; log-sum-exp stays finite, like PyTorch."""
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], dtype=np.float32)
    labels = np.array([1, 2])
    L, probs = F.softmax_cross_entropy(z, labels)
    Lt = TF.cross_entropy(torch.from_numpy(z), torch.from_numpy(labels))
    assert np.isfinite(L) and np.all(np.isfinite(probs))
    assert abs(float(L) - Lt.item()) <= RTOL * abs(Lt.item())


def test_sequential_matches_torch(rng):
    """A small ZFNet-shaped stack, forward and backward, against torch.nn with the same weights."""
    net = mc.nn.Sequential(
        mc.nn.Conv2D(3, 8, 7, stride=2, padding=1), mc.nn.ReLU(),
        mc.nn.MaxPool2D(3, 2, ceil_mode=True), mc.nn.LRN(5, 1e-4, 0.75, 2.0),
        mc.nn.Conv2D(8, 6, 5, stride=2), mc.nn.ReLU(),
        mc.nn.Flatten(), mc.nn.Linear(6 * 3 * 3, 4))
    for layer in net:
        for key in layer.params:
            layer.params[key] = 0.3 * randn(rng, *layer.params[key].shape)
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 7, 2, 1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(3, 2, ceil_mode=True), torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        torch.nn.Conv2d(8, 6, 5, 2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(54, 4))
    with torch.no_grad():
        for (name, value), tparam in zip(net.params.items(), ref.parameters()):
            assert tuple(tparam.shape) == value.shape, name
            tparam.copy_(torch.from_numpy(value))
    x = randn(rng, 2, 3, 39, 39)
    xt = leaf(x)
    yt = ref(xt)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(net.forward(x), yt, "net y")
    assert_close(net.backward(dy), xt.grad, "net dx")
    for (name, grad), tparam in zip(net.grads.items(), ref.parameters()):
        assert_close(grad, tparam.grad, f"net {name}")


def _views(a):
    """Non-contiguous views of the same values: every-other column, transposed, Fortran."""
    wide = np.zeros(a.shape[:3] + (2 * a.shape[3],), a.dtype)
    wide[..., ::2] = a
    return {"strided": wide[..., ::2], "transposed": np.ascontiguousarray(
        a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), "fortran": np.asfortranarray(a)}


@pytest.mark.parametrize("layout", ["strided", "transposed", "fortran"])
def test_non_contiguous_inputs(layout, rng, kernels):
    x, W, b = randn(rng, 2, 3, 9, 8), randn(rng, 4, 3, 3, 2), randn(rng, 4)
    xv, Wv = _views(x)[layout], _views(W)[layout]
    assert not xv.flags.c_contiguous and not Wv.flags.c_contiguous
    xt, Wt, bt = leaf(x), leaf(W), leaf(b)
    yt = TF.conv2d(xt, Wt, bt, 2, 1)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(F.conv2d(xv, Wv, b, 2, 1), yt, "conv2d y")
    dx, dW, db = F.conv2d_backward(_views(dy)[layout], xv, Wv, 2, 1)
    assert_close(dx, xt.grad, "conv2d dx")
    assert_close(dW, Wt.grad, "conv2d dW")
    assert_close(F.conv_transpose2d(_views(dy)[layout], Wv, None, 2, 1, output_padding=(1, 0)),
                 TF.conv_transpose2d(torch.from_numpy(dy), Wt, None, 2, 1, (1, 0)), "convT y")
    y, switches = F.max_pool2d(xv, 3, 2, 1, True)
    yt, it = TF.max_pool2d(torch.from_numpy(x), 3, 2, 1, 1, True, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(switches, it.numpy())
    assert_close(F.lrn(xv, 3, 0.5, 0.75, 1.0),
                 TF.local_response_norm(torch.from_numpy(x), 3, 0.5, 0.75, 1.0), "lrn y")
    xt = leaf(x)
    TF.local_response_norm(xt, 3, 0.5, 0.75, 1.0).backward(torch.from_numpy(x))
    assert_close(F.lrn_backward(xv, xv, 3, 0.5, 0.75, 1.0), xt.grad, "lrn dx")
