"""A Conv2D keeps its forward product as one prepared kernel call (the pointwise and direct
paths' ``prepare``) while its input's shape, its weights, its geometry and its plan stay
the same: the outputs are those of the general path, bit for bit, and anything that
changes sends the layer back to it."""
import numpy as np
import pytest

import minconv as mc

F = mc.functional
nn = mc.nn


@pytest.fixture(autouse=True)
def _tiles():
    from minconv._kernels import kernels_for
    fused = getattr(kernels_for(np.zeros(1, np.float32)), "fused_kernels", None)
    if fused is None or not fused(np.float32):
        pytest.skip("the compiled tiles do not run here")


def counted(layer):
    """The layer with its prepared calls counted in ``layer.prepared_runs``."""
    real = layer._run_prepared
    layer.prepared_runs = 0

    def run(*args):
        y = real(*args)
        layer.prepared_runs += y is not None
        return y

    layer._run_prepared = run
    return layer


# (in channels, filters, kernel, padding, batch, map): 1x1 at batch 1 and on a batch of
# maps of >= 100 positions (pointwise); SqueezeNet's expands and a first layer at batch 1
# (direct: 576 taps on rows of 13 take the tiles that hold filters to a vector with AVX2)
CASES = [(16, 64, 1, 0, 1, 13), (8, 24, 1, 0, 3, 11), (16, 64, 3, 1, 1, 13),
         (64, 256, 3, 1, 1, 13), (3, 16, 3, 0, 1, 20)]


@pytest.mark.parametrize("C, F_, k, pad, N, H", CASES, ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_prepared_call_gives_the_general_paths_outputs(C, F_, k, pad, N, H, relu):
    rng = np.random.default_rng(C * F_)
    layer = counted(nn.Conv2D(C, F_, k, padding=pad, rng=rng, init_std=0.3).lock_weights())
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    first = layer.forward(x, relu=relu)
    assert layer.plan.forward in ("pointwise", "direct") and layer.prepared_runs == 0
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    second = layer.forward(x2, relu=relu)
    assert layer.prepared_runs == 1
    general = F.conv2d_planned(x2, layer.params["W"], layer.params["b"], padding=pad,
                               plan=layer.plan, relu=relu)[0]
    np.testing.assert_array_equal(second, general)
    assert not np.array_equal(first, second)
    # the same into a concatenation's slice
    joined = np.full((N, F_ + 5) + second.shape[2:], -7.0, np.float32)
    part = joined[:, 2:F_ + 2]
    assert layer.forward(x2, relu=relu, out=part) is part
    assert layer.prepared_runs == 2
    np.testing.assert_array_equal(joined[:, 2:F_ + 2], general)
    assert (joined[:, :2] == -7).all() and (joined[:, F_ + 2:] == -7).all()
    # its backward pass is the general one's
    dy = rng.standard_normal(second.shape).astype(np.float32)
    layer.forward(x2)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(
        dx, F.conv2d_backward(dy, x2, layer.params["W"], padding=pad, plan=layer.plan)[0])


def test_anything_that_changes_goes_back_to_the_general_path():
    rng = np.random.default_rng(0)
    layer = counted(nn.Conv2D(16, 32, 1, rng=rng, init_std=0.3))
    x = rng.standard_normal((1, 16, 13, 13)).astype(np.float32)
    layer.forward(x)
    layer.forward(x)
    assert layer.prepared_runs == 1

    def check(y, W, b, runs, **geometry):
        assert layer.prepared_runs == runs
        np.testing.assert_allclose(y, F.conv2d(x, W, b, **geometry), rtol=1e-5, atol=1e-5)

    # weights written in place (unlocked) are read as they are now
    layer.params["W"] *= 2
    check(layer.forward(x), layer.params["W"], layer.params["b"], 2)
    # new weight arrays (as a state dict puts in): the general path, then a new prepared call
    layer.params["W"] = rng.standard_normal((32, 16, 1, 1)).astype(np.float32)
    layer.params["b"] = np.ones(32, np.float32)
    check(layer.forward(x), layer.params["W"], layer.params["b"], 2)
    check(layer.forward(x), layer.params["W"], layer.params["b"], 3)
    # another input shape, an input that is not contiguous, another geometry
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    check(layer.forward(x), layer.params["W"], layer.params["b"], 3)
    x = np.asfortranarray(x)
    check(layer.forward(x), layer.params["W"], layer.params["b"], 3)
    x = np.ascontiguousarray(x)
    layer.stride = (2, 2)
    check(layer.forward(x), layer.params["W"], layer.params["b"], 3, stride=2)
    layer.stride = (1, 1)
    layer.forward(x)
    # a forced plan, a residual, another ReLU
    assert layer.prepared_runs == 3
    with F.using_plan("columns"):
        check(layer.forward(x), layer.params["W"], layer.params["b"], 3)
    assert layer.plan.forward == "columns"
    plain = layer.forward(x)                # planned afresh: the general path
    assert layer.prepared_runs == 3
    residual = np.ones((1, 32, 9, 9), np.float32)
    np.testing.assert_array_equal(layer.forward(x, residual=residual), plain + 1)
    np.testing.assert_array_equal(layer.forward(x, relu=True), np.maximum(plain, 0))
    assert layer.prepared_runs == 3
    np.testing.assert_array_equal(layer.forward(x, relu=True), np.maximum(plain, 0))
    np.testing.assert_array_equal(layer.forward(x), plain)   # prepared for relu=False again
    np.testing.assert_array_equal(layer.forward(x), plain)
    assert layer.prepared_runs == 5


def test_an_out_that_does_not_fit_gets_the_general_paths_error():
    rng = np.random.default_rng(1)
    layer = counted(nn.Conv2D(16, 32, 1, rng=rng))
    x = rng.standard_normal((1, 16, 13, 13)).astype(np.float32)
    layer.forward(x)
    with pytest.raises(ValueError, match=r"out"):
        layer.forward(x, out=np.empty((1, 31, 13, 13), np.float32))
    with pytest.raises(ValueError, match=r"out"):
        layer.forward(x, out=np.empty((1, 32, 13, 13), np.float64))
    assert layer.prepared_runs == 0


def test_the_kernel_objects_check_their_operands_once_and_each_call_its_input_and_output():
    """PreparedDirect refills its padded buffer on every call (a second input is not served
    the first one's borders or values, at a stride too); both objects name what does not fit
    when made, and give None for an input or out that does not fit a call."""
    from minconv._kernels import cpu_direct, cpu_pointwise
    rng = np.random.default_rng(5)
    W = rng.standard_normal((12, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    for stride, padding in (((1, 1), (1, 1)), ((2, 2), (2, 1))):
        call = cpu_direct.PreparedDirect((1, 3, 17, 19), W, b, stride, padding, (1, 1), True,
                                         cpu_direct.direct_filter_blocks)
        for seed in (1, 2):
            x = np.random.default_rng(seed).standard_normal((1, 3, 17, 19)).astype(np.float32)
            want = cpu_direct.conv2d_direct(x, W, b, stride, padding, (1, 1), relu=True)
            np.testing.assert_array_equal(call.run(x), want)
    w = rng.standard_normal((10, 6)).astype(np.float32)
    pointwise = cpu_pointwise.PreparedPointwise(w, (2, 6, 5, 4), None, False)
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    out = np.empty((2, 16, 5, 4), np.float32)[:, 3:13]                 # a concatenation's slice
    assert pointwise.run(x, out) is out
    np.testing.assert_allclose(out, np.einsum("fc,nchw->nfhw", w, x), rtol=1e-5, atol=1e-5)
    for bad_x in (x.astype(np.float64), x[:, :, :, ::-1], x[:1], list(x)):
        assert pointwise.run(bad_x) is None
        assert call.run(bad_x) is None
    y_shape = call.y_shape
    x_call = np.random.default_rng(3).standard_normal((1, 3, 17, 19)).astype(np.float32)
    wide = np.empty(y_shape[:3] + (2 * y_shape[3],), np.float32)
    for bad_out in (np.empty(y_shape), wide[..., ::2],
                    np.empty((1, 24) + y_shape[2:], np.float32)[:, ::2]):
        assert call.run(x_call, bad_out) is None      # the direct tiles write a whole array
    for bad_out in (np.empty((2, 10, 5, 4)), np.empty((2, 10, 4, 5), np.float32),
                    np.empty((2, 10, 5, 8), np.float32)[..., ::2]):
        assert pointwise.run(x, bad_out) is None
    with pytest.raises(ValueError, match=r"PreparedPointwise: input shape \(2, 7, 5, 4\) does "
                                         r"not fit w \(10, 6\)"):
        cpu_pointwise.PreparedPointwise(w, (2, 7, 5, 4))
    with pytest.raises(ValueError, match=r"PreparedPointwise: bias must be float32 \(10,\)"):
        cpu_pointwise.PreparedPointwise(w, (2, 6, 5, 4), np.zeros(9, np.float32))
    with pytest.raises(ValueError, match=r"PreparedDirect: input shape \(1, 4, 17, 19\) does "
                                         r"not match the weights float32 \(12, 3, 3, 3\)"):
        cpu_direct.PreparedDirect((1, 4, 17, 19), W, b, (1, 1), (1, 1), (1, 1), False,
                                  cpu_direct.direct_filter_blocks)
    with pytest.raises(ValueError, match=r"no output for input \(1, 3, 2, 2\)"):
        cpu_direct.PreparedDirect((1, 3, 2, 2), W, b, (1, 1), (0, 0), (1, 1), False,
                                  cpu_direct.direct_filter_blocks)
