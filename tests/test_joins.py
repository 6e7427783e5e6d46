"""Concatenations joined in place: a convolution writes y into a given array (the channel
slice of a concatenation's output) on every path, and a Graph outside training hands
each Conv2D that alone feeds a channel concatenation its slice, with the same outputs
and gradients as the concatenation that copies."""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_same_backward, spy_on

F = mc.functional
nn = mc.nn

# (plan, kernel size, stride, padding, input channels): a geometry each path serves itself
PATH_CASES = [("columns", 3, 1, 1, 8), ("per_image", 3, 2, 1, 8), ("rows", 3, 1, 1, 8),
              ("fused_rows", 3, 1, 1, 8), ("direct", 5, 2, 2, 3), ("direct", 3, 1, 1, 8),
              ("pointwise", 1, 1, 0, 8),
              ("pointwise", 1, 2, 0, 8), ("winograd", 3, 1, 1, 8), ("shifted", 3, 1, 1, 8),
              ("shifted", 7, 2, 3, 3)]


@pytest.mark.parametrize("plan, k, stride, padding, C", PATH_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("relu", [False, True])
def test_every_path_writes_into_a_channel_slice(plan, k, stride, padding, C, dtype, batch,
                                                relu):
    rng = np.random.default_rng(k * 10 + batch)
    x = rng.standard_normal((batch, C, 12, 11)).astype(dtype)
    W = rng.standard_normal((16, C, k, k)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    expected, _ = F.conv2d_planned(x, W, b, stride=stride, padding=padding, plan=plan,
                                   relu=relu)
    joined = np.full((batch, 16 + 5 + 7) + expected.shape[2:], -7.0, dtype=dtype)
    part = joined[:, 5:21]
    y, _ = F.conv2d_planned(x, W, b, stride=stride, padding=padding, plan=plan, relu=relu,
                            out=part)
    assert y is part
    np.testing.assert_array_equal(joined[:, 5:21], expected)
    assert (joined[:, :5] == -7).all() and (joined[:, 21:] == -7).all()   # nothing else


def test_grouped_convolutions_write_into_a_channel_slice():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    W = rng.standard_normal((12, 2, 3, 3)).astype(np.float32)
    joined = np.zeros((2, 20, 9, 9), np.float32)
    F.conv2d_planned(x, W, None, padding=1, groups=4, out=joined[:, 8:])
    np.testing.assert_array_equal(joined[:, 8:], F.conv2d(x, W, None, padding=1, groups=4))
    assert not joined[:, :8].any()


def test_out_of_the_wrong_shape_dtype_or_layout_is_a_clear_error():
    x = np.zeros((2, 3, 6, 6), np.float32)
    W = np.zeros((4, 3, 3, 3), np.float32)
    for out in (np.zeros((2, 5, 4, 4), np.float32),                 # channels
                np.zeros((2, 4, 4, 4), np.float64),                 # dtype
                np.zeros((2, 4, 4, 8), np.float32)[..., ::2],       # maps not contiguous
                [[0.0]]):
        with pytest.raises(ValueError, match=r"conv2d: out must be a float32 ndarray of "
                                             r"shape \(2, 4, 4, 4\)"):
            F.conv2d_planned(x, W, out=out)


def fire(rng, dtype="float64"):
    """SqueezeNet's fire module: squeeze 1x1, then expand 1x1 and 3x3, each with a ReLU,
    concatenated, then a 1x1 convolution."""
    g = nn.Graph()
    g.add("squeeze", nn.Conv2D(6, 3, 1, rng=rng, dtype=dtype, init_std=0.5))
    g.add("squeeze_relu", nn.ReLU())
    g.add("e1", nn.Conv2D(3, 4, 1, rng=rng, dtype=dtype, init_std=0.5), inputs="squeeze_relu")
    g.add("e1_relu", nn.ReLU())
    g.add("e3", nn.Conv2D(3, 5, 3, padding=1, rng=rng, dtype=dtype, init_std=0.5),
          inputs="squeeze_relu")
    g.add("e3_relu", nn.ReLU())
    g.add("cat", nn.Concat(), inputs=["e1_relu", "e3_relu"])
    g.add("mix", nn.Conv2D(9, 2, 1, rng=rng, dtype=dtype, init_std=0.5))
    return g


def copies_made(g):
    """The names of the Concat nodes of ``g`` that run their own (copying) forward pass."""
    return spy_on(g, nn.Concat, "forward")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_graph_joins_a_concatenation_in_place(dtype):
    rng = np.random.default_rng(3)
    g = fire(rng, dtype)
    copied = copies_made(g)
    x = rng.standard_normal((2, 6, 7, 8)).astype(dtype)
    y = g.forward(x)
    assert copied == []
    expected = g.forward(x, record=["cat"])                  # recorded: copied as before
    assert copied == ["cat"]
    np.testing.assert_array_equal(y, expected)


def test_gradients_after_a_joined_pass_are_the_copying_pass_gradients():
    rng = np.random.default_rng(4)
    g, h = fire(rng), fire(np.random.default_rng(4))
    h.load_state_dict(g.state_dict())
    copied = copies_made(h)
    x = rng.standard_normal((2, 6, 5, 5))
    y = g.forward(x)
    np.testing.assert_array_equal(y, h.forward(x, record=["mix"]))
    assert copied == ["cat"]
    dy = rng.standard_normal(y.shape)
    assert_same_backward(g, h, dy)


def test_no_join_in_training_or_where_an_input_is_read_twice_or_overwritten():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, 5, 5))
    g = fire(rng)
    copied = copies_made(g)
    g.forward(x, train=True)
    assert copied == ["cat"]
    h = fire(rng)
    h.add("relu", nn.ReLU(inplace=True), inputs="cat")         # the output overwritten
    copied = copies_made(h)
    h.forward(x)
    assert copied == ["cat"]
    k = nn.Graph()
    k.add("a", nn.Conv2D(2, 3, 3, padding=1, dtype="float64"))
    k.add("b", nn.Conv2D(2, 3, 3, padding=1, dtype="float64"), inputs="input")
    k.add("cat", nn.Concat(), inputs=["a", "b"])
    k.add("sum", nn.Add(), inputs=["a", "b"])                  # a and b read twice
    k.add("out", nn.Concat(), inputs=["cat", "sum"])           # inputs no layer writes
    copied = copies_made(k)
    k.forward(rng.standard_normal((1, 2, 4, 4)))
    assert sorted(copied) == ["cat", "out"]


def test_inputs_that_do_not_fit_are_concatenated_as_usual():
    g = nn.Graph()
    g.add("a", nn.Conv2D(2, 3, 3, padding=1))
    g.add("b", nn.Conv2D(2, 4, 3), inputs="input")             # a smaller map
    g.add("cat", nn.Concat(), inputs=["a", "b"])
    with pytest.raises(ValueError, match="cat"):
        g.forward(np.zeros((1, 2, 6, 6), np.float32))
