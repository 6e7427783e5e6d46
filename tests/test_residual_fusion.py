"""A residual connection's Add made by the convolution below it: every path adds a given
residual to y (the 1x1 tiles as they store y), and a Graph hands a Conv2D that alone
feeds a two-input Add the Add's other input, with the same outputs and gradients as the
Add run on its own."""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_same_backward, spy_on
from minconv._kernels import kernels_for

F = mc.functional
nn = mc.nn

# (plan, kernel size, stride, padding, input channels): a geometry each path serves itself
PATH_CASES = [("columns", 3, 1, 1, 8), ("per_image", 3, 2, 1, 8), ("rows", 3, 1, 1, 8),
              ("fused_rows", 3, 1, 1, 8), ("direct", 5, 1, 2, 3), ("pointwise", 1, 1, 0, 8),
              ("pointwise", 1, 2, 0, 8), ("winograd", 3, 1, 1, 8), ("shifted", 3, 1, 1, 8)]


@pytest.mark.parametrize("plan, k, stride, padding, C", PATH_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("relu", [False, True])
def test_every_path_adds_a_residual(plan, k, stride, padding, C, dtype, batch, relu):
    rng = np.random.default_rng(k * 10 + batch)
    x = rng.standard_normal((batch, C, 12, 11)).astype(dtype)
    W = rng.standard_normal((16, C, k, k)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    y, _ = F.conv2d_planned(x, W, b, stride=stride, padding=padding, plan=plan)
    residual = rng.standard_normal(y.shape).astype(dtype)
    expected = y + residual
    if relu:
        expected = np.maximum(expected, 0)
    got, _ = F.conv2d_planned(x, W, b, stride=stride, padding=padding, plan=plan, relu=relu,
                              residual=residual)
    np.testing.assert_array_equal(got, expected)


def test_the_tiles_add_a_residual_as_they_store():
    if not kernels_for(np.zeros(1, np.float32)).fused_kernels(np.float32):
        pytest.skip("no tiles on this CPU")
    from minconv._kernels import cpu_pointwise
    rng = np.random.default_rng(0)
    for N, C, F_, P in ((1, 64, 256, 3136), (2, 512, 2048, 49), (3, 7, 13, 37)):
        w = rng.standard_normal((F_, C)).astype(np.float32)
        x = rng.standard_normal((N, C, P)).astype(np.float32)
        z = rng.standard_normal((N, F_, P)).astype(np.float32)
        z[0, 0, 0] = np.nan                                      # the ReLU keeps NaN
        plain = cpu_pointwise.pointwise_matmul(w, x, np.empty((N, F_, P), np.float32))
        got = cpu_pointwise.pointwise_matmul(w, x, np.empty((N, F_, P), np.float32),
                                             relu=True, addend=z)
        np.testing.assert_array_equal(got, np.maximum(plain + z, 0))
    with pytest.raises(ValueError, match=r"addend must be float32 \(3, 13, 37\)"):
        cpu_pointwise.pointwise_matmul(w, x, np.empty((N, F_, P), np.float32),
                                       addend=z[:, :, :-1])


def test_a_residual_of_the_wrong_shape_or_dtype_is_a_clear_error():
    x = np.zeros((2, 3, 6, 6), np.float32)
    W = np.zeros((4, 3, 1, 1), np.float32)
    for residual in (np.zeros((2, 4, 5, 6), np.float32), np.zeros((2, 4, 6, 6)), [[0.0]]):
        with pytest.raises(ValueError, match=r"conv2d: residual must be a float32 ndarray of "
                                             r"shape \(2, 4, 6, 6\)"):
            F.conv2d_planned(x, W, residual=residual)


def bottleneck(rng, dtype="float32", downsample=False):
    """ResNet's bottleneck (without batch norm): 1x1, 3x3, 1x1, each but the last with a
    ReLU, plus the shortcut (a 1x1 projection with ``downsample``, added after the main
    branch), then a ReLU."""
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(8, 4, 1, rng=rng, dtype=dtype, init_std=0.5))
    g.add("relu1", nn.ReLU())
    g.add("conv2", nn.Conv2D(4, 4, 3, padding=1, rng=rng, dtype=dtype, init_std=0.5))
    g.add("relu2", nn.ReLU())
    g.add("conv3", nn.Conv2D(4, 8, 1, rng=rng, dtype=dtype, init_std=0.5))
    shortcut = "input"
    if downsample:
        g.add("down", nn.Conv2D(8, 8, 1, rng=rng, dtype=dtype, init_std=0.5), inputs="input")
        shortcut = "down"
    g.add("add", nn.Add(), inputs=["conv3", shortcut])
    g.add("relu", nn.ReLU())
    return g


def adds_run(g):
    """The names of the Add nodes of ``g`` that run their own forward pass."""
    return spy_on(g, nn.Add, "forward")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("downsample", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_a_graph_adds_the_shortcut_in_the_convolution(dtype, downsample, train):
    rng = np.random.default_rng(3)
    g = bottleneck(rng, dtype, downsample)
    ran = adds_run(g)
    x = rng.standard_normal((2, 8, 7, 6)).astype(dtype)
    y = g.forward(x, train=train)
    assert ran == []
    expected = g.forward(x, train=train, record=["relu"])    # recorded: the Add runs
    assert ran == ["add"]
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("downsample", [False, True])
def test_gradients_after_an_added_pass_are_the_adds_gradients(downsample):
    rng = np.random.default_rng(4)
    g, h = bottleneck(rng, "float64", downsample), bottleneck(np.random.default_rng(4),
                                                             "float64", downsample)
    h.load_state_dict(g.state_dict())
    x = rng.standard_normal((2, 8, 5, 5))
    dy = rng.standard_normal((2, 8, 5, 5))
    ran = adds_run(g)
    np.testing.assert_array_equal(g.forward(x), h.forward(x, record=["relu"]))
    assert ran == []                                           # the added pass
    assert_same_backward(g, h, dy)


def test_no_fused_add_where_the_convolution_is_read_twice_or_the_shapes_differ():
    rng = np.random.default_rng(5)
    g = bottleneck(rng)
    g.add("side", nn.ReLU(), inputs="conv3")                    # conv3 read twice
    g.add("out", nn.Add(), inputs=["relu", "side"])
    ran = adds_run(g)
    g.forward(rng.standard_normal((1, 8, 4, 4)).astype(np.float32))
    assert sorted(ran) == ["add", "out"]
    h = nn.Graph()
    h.add("conv", nn.Conv2D(3, 4, 1))
    h.add("add", nn.Add(), inputs=["conv", "input"])           # (1, 4, ...) + (1, 3, ...)
    with pytest.raises(ValueError, match="add"):
        h.forward(np.zeros((1, 3, 4, 4), np.float32))
