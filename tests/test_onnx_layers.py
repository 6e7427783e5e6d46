"""The layers imported ONNX graphs need beyond the paper's: every backward pass against
centred finite differences (float64, random upstream gradient), forwards against PyTorch.

Reshape, Transpose, Flatten(axis), Squeeze, Unsqueeze, Pad (constant, reflect, edge, wrap,
negative widths), Scale, Shift, Multiply, MatMul, Gemm, Softmax, LeakyReLU, the padded
max and average poolings (asymmetric pads, dilation, ceil mode) and the global poolings.
"""
import numpy as np
import pytest

from conftest import assert_grad_close, distinct, numerical_gradient
from minconv.nn import arith, tensor_ops, window_pool

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def check_layer(layer, x, rng, params=(), inputs_list=False):
    """Gradient check of ``layer`` at ``x`` (an array or a list of arrays) and of the
    named parameters."""
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy, param_grads=True)

    def f():
        return layer.forward(x)
    for k, xi in enumerate(x if inputs_list else [x]):
        assert_grad_close(dx[k] if inputs_list else dx, numerical_gradient(f, xi, dy),
                          what=f"{type(layer).__name__} dx{k}")
    for key in params:
        assert_grad_close(layer.grads[key], numerical_gradient(f, layer.params[key], dy),
                          what=f"{type(layer).__name__} d{key}")
    return y


@pytest.mark.parametrize("layer, shape", [
    (tensor_ops.Reshape((0, -1, 2)), (2, 3, 4)),
    (tensor_ops.Reshape((6, 4)), (2, 3, 4)),
    (tensor_ops.Transpose((0, 2, 1, 3)), (2, 3, 4, 2)),          # a channel shuffle's middle
    (tensor_ops.Transpose(), (2, 3, 4)),
    (tensor_ops.Flatten(0), (2, 3, 4)),
    (tensor_ops.Flatten(2), (2, 3, 4, 2)),
    (tensor_ops.Flatten(-1), (2, 3, 4)),
    (tensor_ops.Squeeze((1, -1)), (2, 1, 3, 1)),
    (tensor_ops.Squeeze(), (2, 1, 3, 1)),
    (tensor_ops.Unsqueeze((0, 3)), (2, 3)),
])
def test_rearrangements(layer, shape, rng):
    x = rng.standard_normal(shape)
    y = check_layer(layer, x, rng)
    assert y.size == x.size


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [((0, 0), (1, 0), (2, 1), (0, 3)),
                                  ((0, 0), (0, 0), (-1, 2), (1, -2))])  # negative: a crop
def test_pad_gradient(mode, pads, rng):
    x = rng.standard_normal((2, 2, 4, 5))
    check_layer(tensor_ops.Pad(pads, mode, value=0.5), x, rng)


@pytest.mark.parametrize("mode, torch_mode", [("constant", "constant"), ("reflect", "reflect"),
                                              ("edge", "replicate"), ("wrap", "circular")])
def test_pad_matches_torch(mode, torch_mode, rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    y = tensor_ops.Pad(((0, 0), (0, 0), (2, 1), (3, 2)), mode).forward(x)
    expected = TF.pad(torch.from_numpy(x), (3, 2, 2, 1), mode=torch_mode).numpy()
    np.testing.assert_allclose(y, expected, rtol=0, atol=0)


def test_pad_errors():
    with pytest.raises(ValueError, match="reflect padding"):
        tensor_ops.Pad(((0, 0), (0, 0), (4, 0), (0, 0)), "reflect").forward(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="4-D input"):
        tensor_ops.Pad(((1, 1),), "constant").forward(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="unknown mode"):
        tensor_ops.Pad(((1, 1),), "mirror")


@pytest.mark.parametrize("x_shape, c_shape", [((2, 3, 4, 4), (1, 3, 1, 1)), ((3, 4), (4,)),
                                               ((4,), (2, 4))])  # the constant broadcasts x up
def test_scale_and_shift(x_shape, c_shape, rng):
    x = rng.standard_normal(x_shape)
    check_layer(arith.Scale(rng.standard_normal(c_shape)), x, rng, params=["scale"])
    check_layer(arith.Shift(rng.standard_normal(c_shape)), x, rng, params=["b"])


def test_multiply(rng):
    xs = [rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))]
    y = check_layer(arith.Multiply(), xs, rng, inputs_list=True)
    np.testing.assert_allclose(y, xs[0] * xs[1])


@pytest.mark.parametrize("x_shape, W_shape", [((5, 4), (4, 3)), ((2, 5, 4), (4, 3)),
                                               ((2, 5, 4), (2, 4, 3)), ((4,), (4, 3)),
                                               ((1, 5, 4), (3, 4, 2))])
def test_matmul(x_shape, W_shape, rng):
    x, W = rng.standard_normal(x_shape), rng.standard_normal(W_shape)
    y = check_layer(arith.MatMul(W), x, rng, params=["W"])
    np.testing.assert_allclose(y, np.matmul(x, W))


@pytest.mark.parametrize("transA", [False, True])
@pytest.mark.parametrize("transB", [False, True])
@pytest.mark.parametrize("c_shape", [None, (3,), (4, 3), (1, 1)])
def test_gemm(transA, transB, c_shape, rng):
    A = rng.standard_normal((5, 4) if transA else (4, 5))
    B = rng.standard_normal((3, 5) if transB else (5, 3))
    C = None if c_shape is None else rng.standard_normal(c_shape)
    layer = arith.Gemm(B, C, alpha=0.7, beta=-1.3, transA=transA, transB=transB)
    y = check_layer(layer, A, rng, params=["W"] + ([] if C is None else ["b"]))
    expected = 0.7 * (A.T if transA else A) @ (B.T if transB else B)
    if C is not None:
        expected = expected - 1.3 * C
    np.testing.assert_allclose(y, expected)


@pytest.mark.parametrize("axis, flatten", [(-1, False), (1, False), (0, False), (1, True),
                                           (2, True)])
def test_softmax(axis, flatten, rng):
    x = rng.standard_normal((2, 3, 4))
    y = check_layer(arith.Softmax(axis, flatten), x, rng)
    if flatten:
        expected = torch.softmax(torch.from_numpy(x.reshape(int(np.prod(x.shape[:axis])), -1)),
                                 1).numpy().reshape(x.shape)
    else:
        expected = torch.softmax(torch.from_numpy(x), axis).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("low, high", [(0.0, 6.0), (-0.5, None), (None, 0.3)])
def test_clip(low, high, rng):
    x = rng.uniform(-1, 1, (2, 3, 4)) * 8
    x[np.abs(x - (low or 0)) < 0.05] += 0.2  # away from the kinks
    y = check_layer(arith.Clip(low, high), x, rng)
    np.testing.assert_array_equal(y, torch.clamp(torch.from_numpy(x), low, high).numpy())


def test_leaky_relu(rng):
    x = rng.choice([-1.0, 1.0], size=(2, 3, 4)) * rng.uniform(0.2, 1.2, size=(2, 3, 4))
    y = check_layer(arith.LeakyReLU(0.2), x, rng)
    np.testing.assert_allclose(y, TF.leaky_relu(torch.from_numpy(x), 0.2).numpy())


# (kernel, stride, pads (top, left, bottom, right), dilation, ceil_mode)
WINDOWS = [
    ((3, 3), (2, 2), (0, 0, 1, 1), (1, 1), False),   # AlexNet's pool5 in the light model
    ((3, 2), (2, 1), (1, 0, 2, 1), (1, 1), True),
    ((2, 2), (1, 2), (0, 1, 0, 0), (2, 1), False),   # dilation
    ((3, 3), (2, 2), (1, 1, 1, 1), (2, 2), True),
]


@pytest.mark.parametrize("kernel, stride, pads, dilation, ceil_mode", WINDOWS)
def test_padded_max_pool(kernel, stride, pads, dilation, ceil_mode, rng):
    x = distinct((2, 2, 7, 8), rng)
    check_layer(window_pool.PaddedMaxPool2D(kernel, stride, pads, dilation, ceil_mode), x, rng)


@pytest.mark.parametrize("kernel, stride, pads, dilation, ceil_mode", WINDOWS)
@pytest.mark.parametrize("include", [False, True])
def test_padded_avg_pool(kernel, stride, pads, dilation, ceil_mode, include, rng):
    x = rng.standard_normal((2, 2, 7, 8))
    check_layer(window_pool.PaddedAvgPool2D(kernel, stride, pads, dilation, ceil_mode, include),
                x, rng)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
def test_padded_max_pool_matches_torch(ceil_mode, dilation, rng):
    x = distinct((2, 3, 9, 10), rng).astype(np.float32)
    y = window_pool.PaddedMaxPool2D((3, 3), (2, 2), (1, 1, 1, 1), (dilation,) * 2,
                                    ceil_mode).forward(x)
    expected = TF.max_pool2d(torch.from_numpy(x), 3, 2, 1, dilation, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(y, expected.numpy())


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("include", [False, True])
def test_padded_avg_pool_matches_torch(ceil_mode, include, rng):
    x = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    y = window_pool.PaddedAvgPool2D((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), ceil_mode,
                                    include).forward(x)
    expected = TF.avg_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=ceil_mode,
                             count_include_pad=include)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_global_pools(rng):
    x = distinct((2, 3, 4, 5), rng)
    y = check_layer(window_pool.GlobalMaxPool(), x, rng)
    np.testing.assert_array_equal(y, x.max(axis=(2, 3), keepdims=True))
    y = check_layer(window_pool.GlobalAvgPool(), x, rng)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3), keepdims=True))


def test_window_errors():
    with pytest.raises(ValueError, match="larger than the padded input"):
        window_pool.PaddedMaxPool2D((5, 5), (1, 1), (0, 0, 0, 0)).forward(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="4-D"):
        window_pool.PaddedAvgPool2D((2, 2)).forward(np.zeros((1, 3, 3)))
