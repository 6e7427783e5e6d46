"""The API's numerics: NaN propagates through max pooling as in PyTorch (the switch at the
NaN) in every kernel; empty batches give empty results for every op; labels are validated
(range, integer type) wherever they enter; every layer refuses a gradient of the wrong
dtype or shape; ``record=`` returns what each layer produced, even when a later layer
works in place."""
import numpy as np
import pytest
import torch

import minconv as mc
from minconv import data
from minconv._kernels import reference
import minconv._kernels as kernels_module

F = mc.functional
nn = mc.nn
NAN = np.nan


# ------------------------------------------------------------------ NaN in max pooling

def nan_input(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 9, 27)).astype(dtype)   # rows of more than 16 outputs
    x[rng.random(x.shape) < 0.15] = NAN
    x[0, 0, :3, :3] = NAN                            # a window of NaN only
    x[0, 1, 0, :4] = [1, NAN, 3, 2]                  # the issue's window
    return x


POOLS = [(2, 2, 0, False), (3, 2, 1, True), (3, 1, 0, False), (3, 1, 1, False),
         ((2, 3), (1, 2), (1, 1), True)]


def torch_pool(x, k, s, p, ceil):
    y, i = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil,
                                          return_indices=True)
    return y.numpy(), i.numpy()


def pair(v):
    return (v, v) if isinstance(v, int) else v


def check_kernel(kernel, dtype):
    x = nan_input(dtype)
    for k, s, p, ceil in POOLS:
        (kh, kw), stride, padding = pair(k), pair(s), pair(p)
        y, switches = kernel.maxpool_forward(x, kh, kw, stride, padding, ceil)
        ty, ti = torch_pool(x, k, s, p, ceil)
        assert np.array_equal(y, ty, equal_nan=True), (k, s, p, ceil)
        assert np.array_equal(switches, ti), (k, s, p, ceil)
        values = kernel.maxpool_values(x, kh, kw, stride, padding, ceil)   # inference's
        assert np.array_equal(values, ty, equal_nan=True), (k, s, p, ceil)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_like_pytorch_in_the_reference(dtype):
    check_kernel(reference, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_like_pytorch_in_the_compiled_kernel(dtype):
    if not kernels_module.CPU_BUILT:
        pytest.skip("Cython kernels not built")
    from minconv._kernels import cpu_pool
    check_kernel(cpu_pool, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_like_pytorch_in_the_cuda_kernel(dtype, monkeypatch):
    import _cuda_emulator as emulator
    from minconv._kernels import cuda
    if emulator.compiler() is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels")
    fake = emulator.fake_cupy()
    monkeypatch.setattr(cuda, "_cupy", lambda: fake)
    cuda._module.cache_clear()
    cuda._function.cache_clear()
    try:
        check_kernel(cuda, dtype)
    finally:
        cuda._module.cache_clear()
        cuda._function.cache_clear()


def test_the_issue_window_gives_nan():
    x = np.array([1, NAN, 3, 2], np.float32).reshape(1, 1, 2, 2)
    y, s = F.max_pool2d(x, 2)
    assert np.isnan(y).all() and s.ravel().tolist() == [1]
    y, s = F.max_pool2d(np.full((1, 1, 2, 2), NAN, np.float32), 2)
    assert np.isnan(y).all() and s.ravel().tolist() == [3]  # PyTorch: the last NaN


# ------------------------------------------------------------------ empty batches

def empty(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


W = np.ones((4, 3, 3, 3), np.float32)
OPS = {
    "conv2d": lambda: F.conv2d(empty(0, 3, 8, 8), W, np.zeros(4, np.float32), padding=1),
    "conv2d_planned": lambda: F.conv2d_planned(empty(0, 3, 8, 8), W, np.zeros(4, np.float32),
                                               padding=1),
    "conv2d_backward": lambda: F.conv2d_backward(empty(0, 4, 8, 8), empty(0, 3, 8, 8), W,
                                                 padding=1),
    "conv2d_maxpool_planned": lambda: F.conv2d_maxpool_planned(   # (None without the tiles)
        empty(0, 3, 8, 8), W, np.zeros(4, np.float32), padding=1, pool_kernel=2),
    "conv_transpose2d": lambda: F.conv_transpose2d(empty(0, 4, 8, 8), W,
                                                   np.zeros(3, np.float32)),
    "conv_transpose2d_backward": lambda: F.conv_transpose2d_backward(
        empty(0, 3, 10, 10), empty(0, 4, 8, 8), W),
    "im2col": lambda: F.im2col(empty(0, 3, 8, 8), 3, 3),
    "col2im": lambda: F.col2im(empty(27, 0), (0, 3, 8, 8), 3, 3),
    "max_pool2d": lambda: F.max_pool2d(empty(0, 3, 8, 8), 2),
    "max_unpool2d": lambda: F.max_unpool2d(empty(0, 3, 4, 4), empty(0, 3, 4, 4, dtype=np.int64),
                                           (0, 3, 8, 8)),
    "lrn": lambda: F.lrn(empty(0, 3, 8, 8)),
    "lrn_backward": lambda: F.lrn_backward(empty(0, 3, 8, 8), empty(0, 3, 8, 8)),
    "relu": lambda: F.relu(empty(0, 3)),
    "relu_backward": lambda: F.relu_backward(empty(0, 3), empty(0, 3)),
    "dropout": lambda: F.dropout(empty(0, 3), 0.5, np.random.default_rng(0)),
    "dropout_backward": lambda: F.dropout_backward(empty(0, 3), empty(0, 3)),
    "linear": lambda: F.linear(empty(0, 5), np.ones((2, 5), np.float32)),
    "linear_backward": lambda: F.linear_backward(empty(0, 2), empty(0, 5),
                                                 np.ones((2, 5), np.float32)),
    "softmax": lambda: F.softmax(empty(0, 4)),
    "softmax_cross_entropy": lambda: F.softmax_cross_entropy(empty(0, 4),
                                                             np.zeros(0, np.int64)),
    "softmax_cross_entropy_backward": lambda: F.softmax_cross_entropy_backward(
        empty(0, 4), np.zeros(0, np.int64)),
    "avg_pool2d": lambda: F.avg_pool2d(empty(0, 3, 8, 8), 2),
    "avg_pool2d_backward": lambda: F.avg_pool2d_backward(empty(0, 3, 4, 4), (0, 3, 8, 8), 2),
    "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(empty(0, 3, 8, 8), 1),
    "adaptive_avg_pool2d_backward": lambda: F.adaptive_avg_pool2d_backward(
        empty(0, 3, 1, 1), (0, 3, 8, 8)),
    "batch_norm": lambda: F.batch_norm(empty(0, 3, 8, 8), np.ones(3, np.float32),
                                       np.zeros(3, np.float32), np.zeros(3, np.float32),
                                       np.ones(3, np.float32)),
    "batch_norm_backward": lambda: F.batch_norm_backward(
        empty(0, 3, 8, 8), empty(0, 3, 8, 8), np.ones(3, np.float32), np.zeros(3, np.float32),
        np.ones(3, np.float32)),
    "add": lambda: F.add([empty(0, 3, 8, 8), empty(0, 3, 8, 8)]),
    "concat": lambda: F.concat([empty(0, 3, 8, 8), empty(0, 2, 8, 8)]),
    "concat_backward": lambda: F.concat_backward(empty(0, 5, 8, 8), [3, 2]),
    "sigmoid": lambda: F.sigmoid(empty(0, 3)),
    "sigmoid_backward": lambda: F.sigmoid_backward(empty(0, 3), empty(0, 3)),
    "tanh": lambda: F.tanh(empty(0, 3)),
    "tanh_backward": lambda: F.tanh_backward(empty(0, 3), empty(0, 3)),
}
EXPECTED = {  # the leading (batch) dimension of each result that has one
    "conv2d": [(0, 4, 8, 8)], "conv2d_planned": [(0, 4, 8, 8)],
    "conv2d_backward": [(0, 3, 8, 8), (4, 3, 3, 3), (4,)],
    "conv_transpose2d": [(0, 3, 10, 10)],
    "conv_transpose2d_backward": [(0, 4, 8, 8), (4, 3, 3, 3), (3,)],
    "im2col": [(27, 0)], "col2im": [(0, 3, 8, 8)], "max_pool2d": [(0, 3, 4, 4), (0, 3, 4, 4)],
    "max_unpool2d": [(0, 3, 8, 8)], "lrn": [(0, 3, 8, 8)], "lrn_backward": [(0, 3, 8, 8)],
    "relu": [(0, 3)], "relu_backward": [(0, 3)], "linear": [(0, 2)],
    "linear_backward": [(0, 5), (2, 5), (2,)], "softmax": [(0, 4)],
    "softmax_cross_entropy_backward": [(0, 4)], "avg_pool2d": [(0, 3, 4, 4)],
    "avg_pool2d_backward": [(0, 3, 8, 8)], "adaptive_avg_pool2d": [(0, 3, 1, 1)],
    "adaptive_avg_pool2d_backward": [(0, 3, 8, 8)], "batch_norm": [(0, 3, 8, 8)],
    "batch_norm_backward": [(0, 3, 8, 8), (3,), (3,)], "add": [(0, 3, 8, 8)],
    "concat": [(0, 5, 8, 8)], "sigmoid": [(0, 3)], "sigmoid_backward": [(0, 3)],
    "tanh": [(0, 3)], "tanh_backward": [(0, 3)], "dropout_backward": [(0, 3)],
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_empty_batches_give_empty_results(op):
    if not hasattr(F, op):
        pytest.skip(f"no {op} in minconv.functional here")
    result = OPS[op]()
    results = result if isinstance(result, tuple) else (result,)
    for got, shape in zip(results, EXPECTED.get(op, [])):
        assert got is not None and tuple(got.shape) == shape, (op, got, shape)
    if op in ("conv2d_backward", "conv_transpose2d_backward", "linear_backward"):
        assert not results[1].any() and not results[2].any()  # no examples: zero gradients


@pytest.mark.parametrize("model", ["zfnet_mini", "lenet5", "resnet_mini", "vgg_mini"])
def test_empty_batches_through_whole_nets(model):
    try:
        net = mc.models.build(model, num_classes=10)
    except ValueError:
        pytest.skip(f"no {model} here")
    shape = tuple(mc.models.input_shape_of(net))
    y = net.forward(empty(0, *shape), train=False)
    assert y.shape == (0, 10)
    dx = net.backward(empty(0, 10))
    assert dx.shape == (0,) + shape


def test_every_functional_op_is_tried_on_an_empty_batch():
    ops = {name for name in dir(F) if name.startswith(("conv", "max_", "avg_", "adaptive",
                                                        "batch_norm", "lrn", "relu", "linear",
                                                        "dropout", "softmax", "sigmoid", "tanh",
                                                        "add", "concat", "im2col", "col2im"))}
    helpers = {"conv_matrix", "conv_output_size", "conv_plan", "conv_transpose_output_size",
               "conv_paths", "conv", "conv_pool", "conv_run"}
    assert ops - helpers <= set(OPS), sorted(ops - helpers - set(OPS))


# ------------------------------------------------------------------ labels

def test_labels_are_validated_everywhere_they_enter():
    logits = np.zeros((3, 4), np.float32)
    for bad, pattern in (([0, 1, -1], r"\[0, 4\).*\[-1, 1\]"), ([0, 1, 4], r"\[0, 4\)"),
                         (np.array([0.0, 1.0, 2.0]), "integer class indices")):
        with pytest.raises(ValueError, match=pattern):
            F.softmax_cross_entropy(logits, bad)
        with pytest.raises(ValueError, match=pattern):
            F.softmax_cross_entropy_backward(logits, bad)
    with pytest.raises(ValueError, match="ArrayLoader: labels must be integer"):
        data.ArrayLoader(np.zeros((3, 28, 28), np.uint8), [0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"ArrayLoader: labels must lie in >= 0"):
        data.ArrayLoader(np.zeros((3, 28, 28), np.uint8), [0, -1, 2])
    net = mc.models.lenet5()
    for labels, pattern in (([0, -1], r"evaluate: labels must lie in \[0, 10\)"),
                            ([0, 10], r"\[0, 10\)")):
        loader = [(np.zeros((2, 1, 28, 28), np.float32), np.array(labels))]
        with pytest.raises(ValueError, match=pattern):
            mc.train.evaluate(net, loader)
    loader = [(np.zeros((2, 1, 28, 28), np.float32), np.array([0.0, 1.0]))]
    with pytest.raises(ValueError, match="evaluate: labels must be integer"):
        mc.train.evaluate(net, loader)


# ------------------------------------------------------------------ gradients

LEAVES = {  # layer -> input (the output's shape and dtype are what dy must have)
    "Conv2D": (lambda: nn.Conv2D(3, 4, 3), (2, 3, 8, 8)),
    "ConvTranspose2D": (lambda: nn.ConvTranspose2D(3, 4, 3), (2, 3, 8, 8)),
    "ReLU": (lambda: nn.ReLU(), (2, 3, 8, 8)),
    "MaxPool2D": (lambda: nn.MaxPool2D(2), (2, 3, 8, 8)),
    "LRN": (lambda: nn.LRN(), (2, 3, 8, 8)),
    "Dropout": (lambda: nn.Dropout(), (2, 3, 8, 8)),
    "Flatten": (lambda: nn.Flatten(), (2, 3, 8, 8)),
    "Linear": (lambda: nn.Linear(12, 5), (2, 12)),
    "AvgPool2D": (lambda: nn.AvgPool2D(2), (2, 3, 8, 8)),
    "AdaptiveAvgPool2D": (lambda: nn.AdaptiveAvgPool2D(1), (2, 3, 8, 8)),
    "BatchNorm2D": (lambda: nn.BatchNorm2D(3), (2, 3, 8, 8)),
    "Identity": (lambda: nn.Identity(), (2, 3, 8, 8)),
    "Sigmoid": (lambda: nn.Sigmoid(), (2, 3, 8, 8)),
    "Tanh": (lambda: nn.Tanh(), (2, 3, 8, 8)),
    "Add": (lambda: nn.Add(), [(2, 3, 8, 8), (2, 3, 8, 8)]),
    "Concat": (lambda: nn.Concat(), [(2, 3, 8, 8), (2, 2, 8, 8)]),
}
NOT_LEAVES = {"Layer", "Container", "Sequential", "Graph", "SoftmaxCrossEntropy"}


def test_every_layer_class_is_covered():
    import inspect
    layers = {name for name in dir(nn) if inspect.isclass(getattr(nn, name))
              and issubclass(getattr(nn, name), nn.Layer)}
    assert layers - NOT_LEAVES <= set(LEAVES), sorted(layers - NOT_LEAVES - set(LEAVES))


@pytest.mark.parametrize("kind", sorted(LEAVES))
@pytest.mark.parametrize("train", [False, True])
def test_every_layer_refuses_a_gradient_of_the_wrong_dtype_or_shape(kind, train):
    if not hasattr(nn, kind):
        pytest.skip(f"no {kind} in minconv.nn here")
    make, shape = LEAVES[kind]
    layer = make()
    rng = np.random.default_rng(0)
    x = [rng.standard_normal(s).astype(np.float32) for s in shape] \
        if isinstance(shape, list) else rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x, train=train)
    with pytest.raises(ValueError, match=rf"{kind}.*dy is float64 .*expected float32"):
        layer.backward(np.ones(y.shape, np.float64))
    with pytest.raises(ValueError, match=rf"{kind}.*dy is float32 .*expected float32"):
        layer.backward(np.ones((y.shape[0] + 1,) + y.shape[1:], np.float32))
    dx = layer.backward(np.ones(y.shape, np.float32))  # the right one passes
    for a in (dx if isinstance(dx, (list, tuple)) else [dx]):
        assert a.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_linear_backward_refuses_another_dtype():
    x, Wl = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="linear_backward.*dtypes differ"):
        F.linear_backward(np.ones((2, 4), np.float64), x, Wl)


# ------------------------------------------------------------------ record=

def test_record_returns_what_each_layer_produced_despite_in_place_relus():
    net = mc.models.zfnet_mini(num_classes=10)
    assert net["relu1"].inplace
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    net.forward(x, record=["conv1", "relu1", "fc6", "fc8"])
    out = dict(net.outputs)
    conv1 = net["conv1"].forward(x)
    assert np.array_equal(out["conv1"], conv1) and (out["conv1"] < 0).any()
    assert np.array_equal(out["relu1"], np.maximum(conv1, 0))
    assert (out["fc6"] < 0).any()
