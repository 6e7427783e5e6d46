"""A convolution and the max pooling above it in one pass: the direct tiles pool each band
of rows as they make it (conv2d_direct_maxpool), and a Graph outside training runs a
Conv2D (with or without a fused ReLU) and the MaxPool2D that alone reads it so, with the
same outputs, switches and gradients as the two layers run one after the other."""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_same_backward, spy_on, tiles_at
from minconv._kernels import kernels_for

F = mc.functional
nn = mc.nn
cpu_direct = pytest.importorskip("minconv._kernels.cpu_direct", reason="kernels not built")
cpu_pool = pytest.importorskip("minconv._kernels.cpu_pool", reason="kernels not built")

# (x_shape, F, k, conv stride, conv padding, pool kernel, pool stride, pool padding, ceil):
# SqueezeNet's and ResNet's first layers (bands of rows that meet, shared by the threads
# at batch 1), AlexNet's stride 4, a stride-1 layer under a 2x2 pool, ceil-mode windows
# past the edge, and maps a few rows high
CASES = [((1, 3, 224, 224), 64, 3, 2, 0, 3, 2, 0, False),
         ((1, 3, 96, 100), 16, 7, 2, 3, 3, 2, 1, False),
         ((2, 3, 99, 99), 12, 11, 4, 2, 3, 2, 0, True),
         ((3, 1, 28, 28), 20, 5, 1, 2, 2, 2, 0, False),
         ((1, 3, 35, 37), 7, 3, 2, 1, 3, 2, 1, True),
         ((2, 4, 9, 40), 5, 3, 1, 0, 3, 3, 1, True)]


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_direct_tiles_pool_bands_as_the_two_kernels_do(case, relu, isa):
    shape, F_, k, s, p, pk, ps, pp, ceil = case
    rng = np.random.default_rng(F_)
    x = rng.standard_normal(shape).astype(np.float32)
    W = rng.standard_normal((F_, shape[1], k, k)).astype(np.float32)
    b = rng.standard_normal(F_).astype(np.float32)
    with tiles_at(isa):
        y = cpu_direct.conv2d_direct(x, W, b, (s, s), (p, p), (1, 1), relu=relu)
        expected = cpu_pool.maxpool_values(y, pk, pk, (ps, ps), (pp, pp), ceil)
        got = cpu_direct.conv2d_direct_maxpool(x, W, b, (s, s), (p, p), (1, 1), relu,
                                              (pk, pk), (ps, ps), (pp, pp),
                                              expected.shape[2:])
    np.testing.assert_array_equal(got, expected)


def test_planned_pass_declines_what_it_does_not_take():
    """float64, many channels (not the direct plan), groups and a pool larger than the map:
    None, and the caller runs the two layers."""
    rng = np.random.default_rng(0)
    pool = dict(pool_kernel=3, pool_stride=2)
    x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
    W = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    y, plan = F.conv2d_maxpool_planned(x, W, stride=2, relu=True, **pool)
    if plan.forward == "direct" and kernels_for(x).fused_kernels(np.float32):
        expected = F.max_pool2d(F.conv2d_planned(x, W, stride=2, relu=True)[0], 3, 2,
                                switches=False)
        np.testing.assert_array_equal(y, expected)
    assert F.conv2d_maxpool_planned(x.astype(np.float64), W.astype(np.float64), **pool)[0] \
        is None
    wide = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    assert F.conv2d_maxpool_planned(wide, rng.standard_normal((8, 16, 3, 3)).astype(
        np.float32), **pool)[0] is None
    assert F.conv2d_maxpool_planned(x, np.concatenate([W[:, :1]] * 3), groups=3,
                                    **pool)[0] is None
    assert F.conv2d_maxpool_planned(x, W, stride=4, pool_kernel=9)[0] is None
    empty, plan = F.conv2d_maxpool_planned(x[:0], W, stride=2, **pool)
    if plan.forward == "direct" and kernels_for(x).fused_kernels(np.float32):
        assert empty.shape == (0, 8, 4, 4)


def first_block(rng, relu=True):
    """A first layer as SqueezeNet's: conv 3x3/2 over RGB, ReLU, max pool 3x3/2 (ceil),
    then a 1x1 convolution."""
    g = nn.Graph()
    g.add("conv", nn.Conv2D(3, 8, 3, stride=2, rng=rng, init_std=0.5))
    if relu:
        g.add("relu", nn.ReLU())
    g.add("pool", nn.MaxPool2D(3, 2, ceil_mode=True))
    g.add("mix", nn.Conv2D(8, 4, 1, rng=rng, init_std=0.5))
    return g


def pooled_passes(g):
    """The names of the Conv2D nodes of ``g`` whose forward pass pooled as it went."""
    return spy_on(g, nn.Conv2D, "forward_pooled", counts=lambda y: y is not None)


def tiles():
    return kernels_for(np.zeros(1, np.float32)).fused_kernels(np.float32)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_graph_pools_a_first_layer_in_one_pass(relu, batch):
    """On the direct plan the pooled pass gives the two layers' output bit for bit; on
    the planner's own plan too, or (a batch that fills the cores, where the pooled pass
    takes the direct tiles and the planner alone would not) within float32's rounding."""
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 3, 33, 34)).astype(np.float32)
    g = first_block(rng, relu)
    pooled = pooled_passes(g)
    y = g.forward(x)
    unfused = g.forward(x, record=["mix"])                       # recorded: two passes
    assert pooled == (["conv"] if tiles() else [])
    if g["conv"].plan.forward == "direct":                       # the record pass's plan
        np.testing.assert_array_equal(y, unfused)
    else:
        np.testing.assert_allclose(y, unfused, rtol=1e-5, atol=1e-5)
    g["conv"].forced_plan = "direct"                             # a forced plan is kept
    np.testing.assert_array_equal(g.forward(x), g.forward(x, record=["mix"]))
    g["conv"].forced_plan = "per_image"
    del pooled[:]
    g.forward(x)
    assert pooled == []


def test_gradients_and_switches_after_a_pooled_pass_are_the_two_layers():
    rng = np.random.default_rng(7)
    g, h = first_block(rng), first_block(np.random.default_rng(7))
    h.load_state_dict(g.state_dict())
    x = rng.standard_normal((1, 3, 41, 39)).astype(np.float32)
    pooled = pooled_passes(g)
    y = g.forward(x)
    np.testing.assert_array_equal(y, h.forward(x, record=["mix"]))
    assert pooled == (["conv"] if tiles() and g["conv"].plan.forward == "direct" else [])
    np.testing.assert_array_equal(g["pool"].switches, h["pool"].switches)
    assert_same_backward(g, h, rng.standard_normal(y.shape).astype(np.float32))


def test_switches_after_a_pooled_pass_point_at_its_maxima():
    """The convolution's output, formed for the switches on the pooled pass's plan (direct
    at any batch), holds the pooled values where the switches point."""
    rng = np.random.default_rng(8)
    g = nn.Graph()
    g.add("conv", nn.Conv2D(3, 8, 3, stride=2, rng=rng, init_std=0.5))
    g.add("relu", nn.ReLU())
    g.add("pool", nn.MaxPool2D(3, 2, ceil_mode=True))
    x = rng.standard_normal((3, 3, 29, 31)).astype(np.float32)
    y = g.forward(x)
    conv = g["conv"]
    formed = conv.planned_output(x, conv.plan, relu=True).reshape(3, 8, -1)
    switches = g["pool"].switches.reshape(3, 8, -1)
    np.testing.assert_array_equal(np.take_along_axis(formed, switches, axis=2),
                                  y.reshape(3, 8, -1))


def test_no_pooled_pass_in_training_or_where_the_convolution_is_read_twice():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 30, 30)).astype(np.float32)
    g = first_block(rng)
    pooled = pooled_passes(g)
    g.forward(x, train=True)
    g.forward(x, until="pool")
    assert pooled == []
    h = nn.Graph()
    h.add("conv", nn.Conv2D(3, 8, 3, stride=2))
    h.add("pool", nn.MaxPool2D(2, 2))
    h.add("side", nn.MaxPool2D(2, 2), inputs="conv")               # conv read twice
    h.add("sum", nn.Add(), inputs=["pool", "side"])
    pooled = pooled_passes(h)
    h.forward(x)
    assert pooled == []


def test_a_pool_that_does_not_fit_names_itself():
    g = first_block(np.random.default_rng(2))
    g["pool"].kernel_size = 40
    with pytest.raises(ValueError, match="pool"):
        g.forward(np.zeros((1, 3, 20, 20), np.float32))
