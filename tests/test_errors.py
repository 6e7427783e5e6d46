"""Bad input gives a ValueError that names the op or layer and the shapes involved,
never a silent broadcast or a NumPy traceback from inside a kernel."""
import re

import numpy as np
import pytest

import minconv as mc

F = mc.functional
nn = mc.nn


def shape(*dims):
    """A regex matching the tuple ``dims`` as Python prints it."""
    return re.escape(str(tuple(dims)))


@pytest.fixture
def x():
    return np.zeros((2, 3, 8, 8), np.float32)


@pytest.fixture
def W():
    return np.zeros((4, 3, 3, 3), np.float32)


# ---------------------------------------------------------------- functional ops

def test_conv2d_3d_input(x, W):
    with pytest.raises(ValueError, match=f"conv2d.*4-D input.*{shape(3, 8, 8)}"):
        F.conv2d(x[0], W)


def test_conv2d_layer_3d_input(x):
    with pytest.raises(ValueError, match=f"conv2d.*4-D input.*{shape(3, 8, 8)}"):
        nn.Conv2D(3, 4, 3).forward(x[0])


def test_channel_mismatch(W):
    two = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match=f"conv2d.*2 channels.*{shape(4, 3, 3, 3)}.*expects 3"):
        F.conv2d(two, W)
    with pytest.raises(ValueError, match=f"conv2d.*2 channels.*{shape(1, 2, 8, 8)}"):
        nn.Conv2D(3, 4, 3).forward(two)


def test_kernel_larger_than_input():
    with pytest.raises(ValueError, match=f"conv2d.*kernel 7x7.*larger.*4x4.*{shape(1, 3, 4, 4)}"):
        F.conv2d(np.zeros((1, 3, 4, 4), np.float32), np.zeros((2, 3, 7, 7), np.float32))
    # padding 2 makes it fit: 4 + 2*2 = 8 >= 7
    y = F.conv2d(np.zeros((1, 3, 4, 4), np.float32), np.zeros((2, 3, 7, 7), np.float32),
                 padding=2)
    assert y.shape == (1, 2, 2, 2)


def test_integer_input(x, W):
    with pytest.raises(ValueError, match=f"conv2d.*float32 or float64.*int64.*{shape(2, 3, 8, 8)}"):
        F.conv2d(x.astype(np.int64), W)
    with pytest.raises(ValueError, match="max_pool2d.*float32 or float64.*int32"):
        F.max_pool2d(x.astype(np.int32), 2)
    with pytest.raises(ValueError, match="lrn.*float32 or float64.*uint8"):
        F.lrn(x.astype(np.uint8))


def test_dtype_mismatch(x, W):
    pattern = f"conv2d.*dtypes differ.*float32 {shape(2, 3, 8, 8)}.*float64 {shape(4, 3, 3, 3)}"
    with pytest.raises(ValueError, match=pattern):
        F.conv2d(x, W.astype(np.float64))
    with pytest.raises(ValueError, match="conv2d.*dtypes differ.*bias float64"):
        F.conv2d(x, W, np.zeros(4))
    with pytest.raises(ValueError, match="linear.*dtypes differ"):
        F.linear(np.zeros((2, 3), np.float32), np.zeros((4, 3)))
    y = F.conv2d(x, W)
    with pytest.raises(ValueError, match="conv2d_backward.*dtypes differ"):
        F.conv2d_backward(y.astype(np.float64), x, W)
    with pytest.raises(ValueError, match="conv_transpose2d_backward.*dtypes differ"):
        F.conv_transpose2d_backward(x.astype(np.float64), y, W)


def test_wrong_dy_shape(x, W):
    y = F.conv2d(x, W)
    with pytest.raises(ValueError, match=f"conv2d_backward.*dy.*{shape(2, 4, 5, 6)}.*"
                                         f"{shape(2, 4, 6, 6)}"):
        F.conv2d_backward(y[:, :, 1:], x, W)
    with pytest.raises(ValueError, match="conv_transpose2d_backward.*dy"):
        F.conv_transpose2d_backward(x[:, :, 1:], y, W)
    with pytest.raises(ValueError, match=f"lrn_backward.*dy.*{shape(2, 2, 8, 8)}"):
        F.lrn_backward(x[:, :2], x)
    with pytest.raises(ValueError, match=f"relu_backward.*dy.*{shape(1, 3, 8, 8)}"):
        F.relu_backward(x[:1], x)
    with pytest.raises(ValueError, match=f"linear_backward.*dy.*{shape(2, 5)}.*{shape(2, 4)}"):
        F.linear_backward(np.zeros((2, 5), np.float32), np.zeros((2, 3), np.float32),
                          np.zeros((4, 3), np.float32))
    _, mask = F.dropout(np.ones((4, 3), np.float32), 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"dropout_backward.*dy.*{shape(1, 3)}"):
        F.dropout_backward(np.ones((1, 3), np.float32), mask)  # would broadcast silently


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(kernel_size=3, stride=2, padding=2), r"max_pool2d: padding \(2, 2\).*half.*\(3, 3\)"),
    (dict(kernel_size=2, padding=-1), r"max_pool2d: padding must be >= 0"),
    (dict(kernel_size=0), r"max_pool2d: kernel_size must be >= 1"),
    (dict(kernel_size=9), r"max_pool2d: kernel \(9, 9\) is larger.*8x8"),
    (dict(kernel_size=(2, 2, 2)), r"max_pool2d: kernel_size must be an int or a pair"),
])
def test_bad_pool_arguments(x, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        F.max_pool2d(x, **kwargs)


def test_bad_pool_padding_in_a_net(x):
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.MaxPool2D(2, padding=2))
    with pytest.raises(ValueError, match=r"pool1.*MaxPool2D.*padding \(2, 2\)"):
        net.forward(x)


def test_unpool_bad_switches(x):
    y, switches = F.max_pool2d(x, 2)
    with pytest.raises(ValueError, match=r"switches must lie in \[0, 64\) for planes of 8x8"):
        F.max_unpool2d(y, switches + 64, x.shape)
    with pytest.raises(ValueError, match="max_unpool2d.*switches must be integers"):
        F.max_unpool2d(y, switches.astype(np.float32), x.shape)
    with pytest.raises(ValueError, match=f"max_unpool2d.*{shape(2, 4, 8, 8)}.*{shape(2, 3, 4, 4)}"):
        F.max_unpool2d(y, switches, (2, 4, 8, 8))


@pytest.mark.parametrize("labels, pattern", [
    (np.array([0, 4, 1]), r"labels must lie in \[0, 4\), got values in \[0, 4\]"),
    (np.array([0, -1, 1]), r"labels must lie in \[0, 4\)"),
    (np.array([0.0, 1.0, 1.0]), "labels must be integer class indices, got float64"),
    (np.array([0, 1]), r"labels must have shape \(3,\) to match logits \(3, 4\), got \(2,\)"),
    (np.array([[0], [1], [2]]), r"labels must have shape \(3,\)"),
])
def test_bad_labels(labels, pattern):
    with pytest.raises(ValueError, match="softmax_cross_entropy: " + pattern):
        nn.SoftmaxCrossEntropy().forward(np.zeros((3, 4), np.float32), labels)


def test_bad_hyperparameters(x, W):
    with pytest.raises(ValueError, match=r"conv2d: stride must be >= 1, got \(0, 0\)"):
        F.conv2d(x, W, stride=0)
    with pytest.raises(ValueError, match="conv_transpose2d: output_padding"):
        F.conv_transpose2d(F.conv2d(x, W), W, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="lrn: size must be a positive integer"):
        F.lrn(x, size=0)
    with pytest.raises(ValueError, match="dropout: p must be in"):
        F.dropout(x, 1.0)
    with pytest.raises(ValueError, match="unknown backward rule 'relu'"):
        F.relu_backward(x, x, rule="relu")


# ---------------------------------------------------------------- layers

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(size=0), "size must be a positive integer, got 0"),
    (dict(size=2.5), "size must be a positive integer, got 2.5"),
    (dict(k=0.0), "k must be positive"),
])
def test_lrn_layer_checks_like_the_op(x, kwargs, pattern):
    with pytest.raises(ValueError, match="lrn: " + pattern):
        F.lrn(x, **kwargs)
    with pytest.raises(ValueError, match="LRN: " + pattern):
        nn.LRN(**kwargs).forward(x)
    with pytest.raises(ValueError, match=r"norm1 \(LRN\): " + pattern):
        nn.Sequential(nn.LRN(**kwargs)).forward(x)


def all_layers():
    return [nn.Conv2D(3, 4, 3), nn.ConvTranspose2D(3, 4, 3), nn.ReLU(), nn.MaxPool2D(2),
            nn.LRN(), nn.Dropout(), nn.Flatten(), nn.Linear(3, 4), nn.SoftmaxCrossEntropy(),
            nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU())]


@pytest.mark.parametrize("layer", all_layers(), ids=lambda layer: type(layer).__name__)
def test_backward_before_forward(layer):
    dy = np.zeros((2, 3, 4, 4), np.float32)
    kind = type(layer).__name__ if not isinstance(layer, nn.Sequential) else r"relu1 \(ReLU\)"
    with pytest.raises(ValueError, match=f"{kind}.*backward called before forward"):
        layer.backward(dy)


def test_backward_before_forward_names_the_layer_in_a_net():
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU(), nn.Conv2D(4, 2, 1))
    with pytest.raises(ValueError, match=r"conv2 \(Conv2D\): backward called before forward"):
        net.backward(np.zeros((1, 2, 6, 6), np.float32))


@pytest.mark.parametrize("layer, x_shape, dy_shape", [
    (nn.Conv2D(3, 4, 3), (2, 3, 8, 8), (2, 4, 8, 8)),
    (nn.ConvTranspose2D(3, 4, 3), (2, 3, 8, 8), (2, 4, 8, 8)),
    (nn.ReLU(), (2, 3, 8, 8), (2, 3, 8, 1)),
    (nn.MaxPool2D(2), (2, 3, 8, 8), (2, 3, 8, 8)),
    (nn.LRN(), (2, 3, 8, 8), (1, 3, 8, 8)),
    (nn.Flatten(), (2, 3, 8, 8), (2, 190)),
    (nn.Flatten(), (2, 3, 8, 8), (1, 384)),
    (nn.Linear(192, 4), (2, 192), (2, 5)),
], ids=lambda v: type(v).__name__ if isinstance(v, mc.nn.Layer) else str(v))
def test_layer_wrong_dy_shape(layer, x_shape, dy_shape):
    layer.forward(np.ones(x_shape, np.float32))
    with pytest.raises(ValueError, match=f"dy.*{shape(*dy_shape)}"):
        layer.backward(np.zeros(dy_shape, np.float32))


def test_dropout_wrong_dy_shape_in_train_and_eval():
    layer = nn.Dropout(0.5)
    for train in (True, False):
        layer.forward(np.ones((4, 3), np.float32), train=train)
        with pytest.raises(ValueError, match=r"Dropout.*dy.*\(1, 3\).*\(4, 3\)"):
            layer.backward(np.ones((1, 3), np.float32))


def test_sequential_error_names_the_layer(x):
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU(), nn.Conv2D(5, 2, 3))
    with pytest.raises(ValueError, match=r"'conv2' \(Conv2D\).*4 channels.*expects 5"):
        net.forward(x)
    with pytest.raises(ValueError, match=r"'conv1' \(Conv2D\).*2 channels"):
        net.forward(x[:, :2])
    with pytest.raises(ValueError, match=r"'conv1' \(Conv2D\).*4-D input.*\(3, 8, 8\)"):
        net.forward(x[0])


def test_unknown_layer_name(x):
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU(), nn.MaxPool2D(2))
    listing = "valid names: conv1, relu1, pool1"
    with pytest.raises(ValueError, match=f"unknown layer 'nope'; {listing}"):
        net["nope"]
    with pytest.raises(ValueError, match=f"unknown layer 'nope'; {listing}"):
        net.forward(x, until="nope")
    with pytest.raises(ValueError, match=f"unknown layer 'nope'; {listing}"):
        net.forward(x, record=("conv1", "nope"))
    net.forward(x)
    with pytest.raises(ValueError, match=f"unknown layer 'nope'; {listing}"):
        net.backward(np.zeros((2, 4, 3, 3), np.float32), start="nope")
    with pytest.raises(ValueError, match="unknown backward rule 'Deconv'"):
        net.backward(np.zeros((2, 4, 3, 3), np.float32), rule="Deconv")


def test_sequential_construction_errors():
    with pytest.raises(ValueError, match="Sequential: layer name 'a' is repeated"):
        nn.Sequential([("a", nn.ReLU()), ("a", nn.ReLU())])
    with pytest.raises(ValueError, match="Sequential: layer name 'a.b'"):
        nn.Sequential([("a.b", nn.ReLU())])
    with pytest.raises(ValueError, match="Sequential: expected minconv layers, got function"):
        nn.Sequential(nn.ReLU(), lambda v: v)
