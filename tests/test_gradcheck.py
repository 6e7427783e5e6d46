"""Every backward pass against centred finite differences, in float64.

Each functional op and each layer is checked over a grid of geometries (stride,
padding, dilation, non-square kernels and inputs, ceil_mode, overlapping pooling,
batch 1 and > 1), on the reference kernels and on the compiled ones.
"""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_grad_close, away_from_zero, distinct, numerical_gradient

F = mc.functional
pytestmark = pytest.mark.usefixtures("kernels")

# (N, C, H, W, F, kh, kw, stride, padding, dilation)
CONV_GRID = [
    (1, 2, 5, 5, 3, 3, 3, 1, 0, 1),
    (2, 3, 7, 6, 2, 3, 2, 2, 1, 1),                 # non-square kernel and input, stride 2
    (2, 2, 8, 7, 2, 3, 3, 1, 2, 2),                 # dilation, padding wider than the kernel/2
    (1, 1, 9, 8, 2, 2, 3, (2, 1), (1, 0), (1, 2)),  # per-axis stride/padding/dilation
    (3, 2, 9, 11, 2, 5, 3, 2, 2, 1),                # ZFNet-like: large kernel, stride 2
    (2, 3, 4, 5, 4, 1, 1, 1, 0, 1),                 # 1x1
]
CONV_IDS = [f"N{c[0]}C{c[1]}{c[2]}x{c[3]}k{c[5]}x{c[6]}s{c[7]}p{c[8]}d{c[9]}" for c in CONV_GRID]


@pytest.mark.parametrize("case", CONV_GRID, ids=CONV_IDS)
def test_conv2d(case, rng):
    N, C, H, W_, F_, kh, kw, s, p, d = case
    x = rng.standard_normal((N, C, H, W_))
    W = rng.standard_normal((F_, C, kh, kw))
    b = rng.standard_normal(F_)
    y = F.conv2d(x, W, b, s, p, d)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = F.conv2d_backward(dy, x, W, s, p, d)

    def f():
        return F.conv2d(x, W, b, s, p, d)
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="conv2d dx")
    assert_grad_close(dW, numerical_gradient(f, W, dy), what="conv2d dW")
    assert_grad_close(db, numerical_gradient(f, b, dy), what="conv2d db")


# (N, C_in, Hi, Wi, C_out, kh, kw, stride, padding, dilation, output_padding)
CONVT_GRID = [
    (1, 2, 3, 3, 3, 3, 3, 1, 0, 1, 0),
    (2, 3, 3, 4, 2, 3, 2, 2, 1, 1, 1),             # stride 2 with output_padding
    (2, 2, 4, 3, 2, 3, 3, 2, 0, 2, (1, 0)),
    (1, 2, 3, 4, 3, 2, 3, 1, (0, 1), (2, 3), (1, 2)),  # output_padding >= stride (dilation > stride)
    (2, 3, 3, 3, 2, 4, 4, 2, 1, 1, 0),             # the usual 4x4/2 upsampling
]


@pytest.mark.parametrize("case", CONVT_GRID)
def test_conv_transpose2d(case, rng):
    N, Ci, Hi, Wi, Co, kh, kw, s, p, d, op = case
    x = rng.standard_normal((N, Ci, Hi, Wi))
    W = rng.standard_normal((Ci, Co, kh, kw))
    b = rng.standard_normal(Co)

    def f():
        return F.conv_transpose2d(x, W, b, s, p, d, output_padding=op)
    dy = rng.standard_normal(f().shape)
    dx, dW, db = F.conv_transpose2d_backward(dy, x, W, s, p, d, output_padding=op)
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="conv_transpose2d dx")
    assert_grad_close(dW, numerical_gradient(f, W, dy), what="conv_transpose2d dW")
    assert_grad_close(db, numerical_gradient(f, b, dy), what="conv_transpose2d db")


# grouped convolution: (N, C, H, W, F, k, stride, padding, dilation, groups)
GROUPED_GRID = [
    (2, 4, 6, 5, 6, 3, 1, 1, 1, 2),    # groups=2, batch > 1, non-square input
    (1, 4, 7, 7, 4, 3, 2, 1, 1, 4),    # depthwise (groups == C), stride 2
    (2, 3, 7, 6, 6, 2, 1, 0, 2, 3),    # depthwise with a channel multiplier of 2, dilation
]
GROUPED_IDS = [f"N{c[0]}C{c[1]}F{c[4]}g{c[9]}s{c[6]}d{c[8]}" for c in GROUPED_GRID]


@pytest.mark.parametrize("case", GROUPED_GRID, ids=GROUPED_IDS)
def test_conv2d_grouped(case, rng):
    N, C, H, W_, F_, k, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W_))
    W = rng.standard_normal((F_, C // g, k, k))
    b = rng.standard_normal(F_)

    def f():
        return F.conv2d(x, W, b, s, p, d, groups=g)
    dy = rng.standard_normal(f().shape)
    dx, dW, db = F.conv2d_backward(dy, x, W, s, p, d, groups=g)
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="grouped conv2d dx")
    assert_grad_close(dW, numerical_gradient(f, W, dy), what="grouped conv2d dW")
    assert_grad_close(db, numerical_gradient(f, b, dy), what="grouped conv2d db")


@pytest.mark.parametrize("case", GROUPED_GRID, ids=GROUPED_IDS)
def test_conv_transpose2d_grouped(case, rng):
    N, Ci, Hi, Wi, Co, k, s, p, d, g = case
    x = rng.standard_normal((N, Ci, Hi - 2, Wi - 2))
    W = rng.standard_normal((Ci, Co // g, k, k))
    b = rng.standard_normal(Co)
    op = 1 if s > 1 else 0

    def f():
        return F.conv_transpose2d(x, W, b, s, p, d, groups=g, output_padding=op)
    dy = rng.standard_normal(f().shape)
    dx, dW, db = F.conv_transpose2d_backward(dy, x, W, s, p, d, groups=g, output_padding=op)
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="grouped conv_transpose2d dx")
    assert_grad_close(dW, numerical_gradient(f, W, dy), what="grouped conv_transpose2d dW")
    assert_grad_close(db, numerical_gradient(f, b, dy), what="grouped conv_transpose2d db")


# (N, C, H, W, kernel, stride, padding, ceil_mode)
POOL_GRID = [
    (1, 1, 4, 4, 2, 2, 0, False),
    (2, 3, 7, 7, 3, 2, 0, False),            # overlapping 3x3/2: one element can win twice
    (2, 2, 6, 8, 3, 2, 0, True),             # ceil_mode: partial windows at the edge
    (1, 2, 7, 5, 3, 2, 1, True),             # padding and ceil_mode
    (2, 2, 5, 7, (2, 3), (1, 2), (1, 1), False),  # non-square kernel and stride
    (1, 2, 11, 11, 3, 2, 0, True),           # ZFNet's rounding: 11 -> 5 floor, 6 ceil
]


@pytest.mark.parametrize("case", POOL_GRID)
def test_max_pool2d(case, rng):
    N, C, H, W_, k, s, p, ceil = case
    x = distinct((N, C, H, W_), rng)
    y, switches = F.max_pool2d(x, k, s, p, ceil)
    dy = rng.standard_normal(y.shape)
    dx = F.max_unpool2d(dy, switches, x.shape)
    num = numerical_gradient(lambda: F.max_pool2d(x, k, s, p, ceil)[0], x, dy)
    assert_grad_close(dx, num, what="max_pool2d dx")


@pytest.mark.parametrize("case", POOL_GRID)
def test_max_unpool2d(case, rng):
    """Unpooling is linear in y; its adjoint gathers the upstream gradient at the switches."""
    N, C, H, W_, k, s, p, ceil = case
    _, switches = F.max_pool2d(distinct((N, C, H, W_), rng), k, s, p, ceil)
    y = rng.standard_normal(switches.shape)
    dx = rng.standard_normal((N, C, H, W_))
    gather = np.take_along_axis(dx.reshape(N, C, -1), switches.reshape(N, C, -1), axis=2)
    num = numerical_gradient(lambda: F.max_unpool2d(y, switches, (N, C, H, W_)), y, dx)
    assert_grad_close(gather.reshape(y.shape), num, what="max_unpool2d")


# (N, C, size, alpha, beta, k, input scale)
LRN_GRID = [
    (2, 7, 5, 1e-4, 0.75, 2.0, 30.0),   # ZFNet's constants on activations of realistic size
    (1, 6, 5, 0.5, 0.75, 1.0, 1.0),     # strong normalisation: the cross term dominates
    (2, 5, 4, 0.3, 0.6, 1.5, 1.0),      # even window: asymmetric around the channel
    (1, 4, 3, 1.0, 1.2, 0.5, 1.0),
    (2, 3, 7, 0.2, 0.75, 1.0, 1.0),     # window wider than the channel count
    (1, 3, 1, 0.5, 0.75, 1.0, 1.0),     # size 1: no neighbours
]


@pytest.mark.parametrize("case", LRN_GRID)
def test_lrn(case, rng):
    N, C, size, alpha, beta, k, scale = case
    x = scale * rng.standard_normal((N, C, 3, 4))
    dy = rng.standard_normal(x.shape)
    dx = F.lrn_backward(dy, x, size, alpha, beta, k)
    num = numerical_gradient(lambda: F.lrn(x, size, alpha, beta, k), x, dy)
    assert_grad_close(dx, num, what="lrn_backward")
    y = F.lrn(x, size, alpha, beta, k)
    _, scale_arr = mc._kernels.reference.lrn_forward(x, size, alpha, beta, k)
    dx_cached = F.lrn_backward(dy, x, size, alpha, beta, k, y=y, scale=scale_arr)
    assert_grad_close(dx_cached, num, what="lrn_backward with cached y, scale")


def test_lrn_backward_is_not_pass_through(rng):
    """Some NumPy libraries copied dy straight through LRN (deeppy issue 15). Make sure
    this check would catch that: at strong normalisation the true dx is far from
    both dy and the elementwise part dy * scale^-beta."""
    x = rng.standard_normal((1, 6, 3, 3))
    dy = rng.standard_normal(x.shape)
    num = numerical_gradient(lambda: F.lrn(x, 5, 1.0, 0.75, 1.0), x, dy)
    _, scale = mc._kernels.reference.lrn_forward(x, 5, 1.0, 0.75, 1.0)
    from conftest import rel_error
    assert rel_error(dy, num) > 0.1
    assert rel_error(dy * scale ** -0.75, num) > 0.01
    assert_grad_close(F.lrn_backward(dy, x, 5, 1.0, 0.75, 1.0), num, what="lrn_backward")


@pytest.mark.parametrize("shape", [(1, 5), (3, 2, 4, 5)])
def test_relu(shape, rng):
    x = away_from_zero(shape, rng)
    dy = rng.standard_normal(shape)
    num = numerical_gradient(lambda: F.relu(x), x, dy)
    assert_grad_close(F.relu_backward(dy, x), num, what="relu")
    assert_grad_close(F.relu_backward(dy, F.relu(x)), num, what="relu from its output")


@pytest.mark.parametrize("N", [1, 4])
def test_linear(N, rng):
    x = rng.standard_normal((N, 7))
    W = rng.standard_normal((5, 7))
    b = rng.standard_normal(5)
    dy = rng.standard_normal((N, 5))
    dx, dW, db = F.linear_backward(dy, x, W)

    def f():
        return F.linear(x, W, b)
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="linear dx")
    assert_grad_close(dW, numerical_gradient(f, W, dy), what="linear dW")
    assert_grad_close(db, numerical_gradient(f, b, dy), what="linear db")


def test_dropout_fixed_mask(rng):
    x = rng.standard_normal((3, 10))
    dy = rng.standard_normal(x.shape)

    def f():  # the same generator state each call: the same mask
        return F.dropout(x, 0.4, np.random.default_rng(5))[0]
    _, mask = F.dropout(x, 0.4, np.random.default_rng(5))
    assert 0 < np.count_nonzero(mask) < mask.size
    assert_grad_close(F.dropout_backward(dy, mask), numerical_gradient(f, x, dy), what="dropout")


@pytest.mark.parametrize("N, K", [(1, 3), (5, 4)])
def test_softmax_cross_entropy(N, K, rng):
    z = 3.0 * rng.standard_normal((N, K))
    labels = rng.integers(0, K, size=N)
    _, probs = F.softmax_cross_entropy(z, labels)
    g = rng.standard_normal()  # the loss is a scalar: a random scalar upstream gradient
    num = numerical_gradient(lambda: F.softmax_cross_entropy(z, labels)[0], z, g)
    assert_grad_close(g * F.softmax_cross_entropy_backward(probs, labels), num,
                      what="softmax cross-entropy")


# ---------------------------------------------------------------- layers


def check_layer(layer, x, rng, train=False, reset=None):
    """Gradcheck a layer: dx, and every parameter gradient under the "grad" rule."""
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
        assert_grad_close(grads[key], numerical_gradient(f, param, dy),
                          what=f"{layer!r} d{key}")


def _float64(layer, std=0.5):
    """Cast to float64 and give the weights a size that makes every term count."""
    layer.astype(np.float64)
    rng = np.random.default_rng(7)
    for key in layer.params:
        layer.params[key] = std * rng.standard_normal(layer.params[key].shape)
    return layer


@pytest.mark.parametrize("N", [1, 2])
def test_conv2d_layer(N, rng):
    layer = _float64(mc.nn.Conv2D(2, 3, (3, 2), stride=2, padding=1, dilation=(1, 2)))
    check_layer(layer, rng.standard_normal((N, 2, 7, 8)), rng)


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_conv2d_layer(groups, rng):
    layer = _float64(mc.nn.Conv2D(4, 4, 3, padding="same", groups=groups))
    assert layer.params["W"].shape == (4, 4 // groups, 3, 3)
    check_layer(layer, rng.standard_normal((2, 4, 5, 6)), rng)


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_conv_transpose2d_layer(groups, rng):
    layer = _float64(mc.nn.ConvTranspose2D(4, 4, 3, stride=2, padding=1, output_padding=1,
                                           groups=groups))
    assert layer.params["W"].shape == (4, 4 // groups, 3, 3)
    check_layer(layer, rng.standard_normal((2, 4, 3, 4)), rng)


@pytest.mark.parametrize("N", [1, 2])
def test_conv_transpose2d_layer(N, rng):
    layer = _float64(mc.nn.ConvTranspose2D(3, 2, (3, 2), stride=2, padding=1,
                                           output_padding=1))
    check_layer(layer, rng.standard_normal((N, 3, 3, 4)), rng)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_maxpool_layer(ceil_mode, rng):
    check_layer(mc.nn.MaxPool2D(3, 2, padding=1, ceil_mode=ceil_mode),
                distinct((2, 2, 6, 7), rng), rng)


def test_lrn_layer(rng):
    check_layer(mc.nn.LRN(size=3, alpha=0.5, beta=0.75, k=1.0),
                rng.standard_normal((2, 5, 3, 3)), rng)


def test_relu_layer(rng):
    check_layer(mc.nn.ReLU(), away_from_zero((2, 3, 4, 4), rng), rng)


def test_dropout_layer(rng):
    layer = mc.nn.Dropout(0.5)

    def reset():  # the same mask on every forward of the check
        layer.rng = np.random.default_rng(11)
    check_layer(layer, rng.standard_normal((4, 6)), rng, train=True, reset=reset)


def test_flatten_layer(rng):
    check_layer(mc.nn.Flatten(), rng.standard_normal((2, 3, 2, 2)), rng)


@pytest.mark.parametrize("N", [1, 3])
def test_linear_layer(N, rng):
    check_layer(_float64(mc.nn.Linear(6, 4)), rng.standard_normal((N, 6)), rng)


def test_softmax_cross_entropy_layer(rng):
    loss = mc.nn.SoftmaxCrossEntropy()
    z = rng.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 2])
    loss.forward(z, labels)
    g = rng.standard_normal()
    num = numerical_gradient(lambda: loss.forward(z, labels), z, g)
    loss.forward(z, labels)
    assert_grad_close(loss.backward(g), num, what="SoftmaxCrossEntropy")


def small_net():
    """conv -> relu -> LRN -> overlapping ceil-mode pool -> conv -> relu -> pool -> fc -> fc."""
    net = mc.nn.Sequential(
        mc.nn.Conv2D(2, 4, 3, stride=1, padding=1), mc.nn.ReLU(),
        mc.nn.LRN(size=3, alpha=0.5, beta=0.75, k=1.0),
        mc.nn.MaxPool2D(3, 2, ceil_mode=True),
        mc.nn.Conv2D(4, 3, (2, 3), stride=1, padding=(0, 1)), mc.nn.ReLU(),
        mc.nn.MaxPool2D(2, 1),
        mc.nn.Flatten(), mc.nn.Linear(3 * 2 * 3, 5), mc.nn.ReLU(), mc.nn.Linear(5, 3))
    net.astype(np.float64)
    rng = np.random.default_rng(3)
    for layer in net:
        for key in layer.params:
            layer.params[key] = 0.5 * rng.standard_normal(layer.params[key].shape)
    return net


@pytest.mark.parametrize("N", [1, 2])
def test_sequential(N, rng):
    net = small_net()
    x = rng.standard_normal((N, 2, 8, 8))
    check_layer(net, x, rng)
    assert len(net.grads) == 8 and "conv2.W" in net.grads and "fc2.b" in net.grads


def test_sequential_with_loss(rng):
    net, loss = small_net(), mc.nn.SoftmaxCrossEntropy()
    x = rng.standard_normal((3, 2, 8, 8))
    labels = np.array([2, 0, 1])

    def f():
        return loss.forward(net.forward(x, train=True), labels)
    f()
    dx = net.backward(loss.backward())
    grads = {k: v.copy() for k, v in net.grads.items()}
    assert_grad_close(dx, numerical_gradient(f, x, 1.0), what="net dx")
    for key in ("conv1.W", "conv1.b", "conv2.W", "fc1.W", "fc2.b"):
        assert_grad_close(grads[key], numerical_gradient(f, net.params[key], 1.0), what=key)
