"""Arithmetic layers with constant operands, softmax and leaky ReLU: what imported ONNX
graphs hold besides convolutions and pooling.

    Scale(c)        y = x * c                     (broadcast; c is a parameter, "scale")
    Shift(c)        y = x + c                     (broadcast; c is a parameter, "b")
    MatMul(B)       y = x @ B                     (NumPy's matmul broadcasting; B is "W")
    Gemm(B, C)      y = alpha * op(A) @ op(B) + beta * C,  op = transpose when trans*
    Softmax(axis)   y = exp(x) / sum(exp(x)) along ``axis``
    Clip(lo, hi)    y = min(max(x, lo), hi)
    LeakyReLU(a)    y = x if x > 0 else a * x

A broadcast operand receives the gradient summed over the axes it was broadcast along
(:func:`reduce_to`). Under the deconvnet's rules nothing here changes: only ReLU does, and
biases are not added on the way down (a backward pass never adds them).
"""
import numpy as np

from .. import functional as F
from .. import runtime
from ..backend import get_array_module
from ..functional._checks import check_shape
from .base import Layer


def reduce_to(grad, shape):
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    shape = tuple(shape)
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _broadcast_shape(label, a, b):
    try:
        return np.broadcast_shapes(tuple(a), tuple(b))
    except ValueError:
        raise ValueError(f"{label}: shapes {tuple(a)} and {tuple(b)} do not broadcast") from None


def _shared(ufunc, x, constant):
    """``ufunc(x, constant)`` broadcast, on the CPU shared among the cores by the first axis
    (one NumPy pass is single-threaded: DenseNet's imported per-channel Mul and Add took a
    fifth of its forward pass at batch 8)."""
    xp = get_array_module(x)
    if xp is not np:
        return ufunc(x, constant)
    out = np.empty(np.broadcast_shapes(x.shape, constant.shape), np.result_type(x, constant))
    return runtime.elementwise(ufunc, out, x, constant)


class _ConstantOperand(Layer):
    """A layer ``y = op(x, c)`` with a constant operand stored as a parameter."""

    key = None

    def __init__(self, constant):
        super().__init__()
        self.params[self.key] = constant

    @property
    def constant(self):
        return self.params[self.key]

    def extra_repr(self):
        return f"shape={tuple(self.constant.shape)}"


class Scale(_ConstantOperand):
    """y = x * scale, broadcasting; dx = dy * scale, dscale = sum dy * x."""

    key = "scale"

    def forward(self, x, train=False):
        _broadcast_shape(self._label(), x.shape, self.constant.shape)
        self._cache = x
        return _shared(np.multiply, x, self.constant)

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x = self._saved()
        check_shape(dy, _broadcast_shape(self._label(), x.shape, self.constant.shape),
                    self._label(), "dy")
        if self._wants_param_grads(rule, param_grads):
            self.grads[self.key] = reduce_to(dy * x, self.constant.shape)
        return reduce_to(dy * self.constant, x.shape) if input_grad else None


class Shift(_ConstantOperand):
    """y = x + b, broadcasting; dx = dy, db = sum dy."""

    key = "b"

    def forward(self, x, train=False):
        _broadcast_shape(self._label(), x.shape, self.constant.shape)
        self._cache = x.shape
        return _shared(np.add, x, self.constant)

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape = self._saved()
        check_shape(dy, _broadcast_shape(self._label(), x_shape, self.constant.shape),
                    self._label(), "dy")
        if self._wants_param_grads(rule, param_grads):
            self.grads[self.key] = reduce_to(dy, self.constant.shape)
        return reduce_to(dy, x_shape) if input_grad else None


class Constant(Layer):
    """Yields a fixed array whatever its input (a constant operand of a Concat in an
    imported graph); its input receives a zero gradient."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, train=False):
        self._cache = x
        return self.value

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x = self._saved()
        return get_array_module(x).zeros_like(x)

    def extra_repr(self):
        return f"shape={tuple(self.value.shape)}"


def _swap(a):
    return a.swapaxes(-1, -2) if a.ndim >= 2 else a


class MatMul(_ConstantOperand):
    """y = x @ W with NumPy's matmul broadcasting; W has at least 2 axes.

    dx = dy @ W^T (summed over broadcast axes), dW = x^T @ dy (likewise).
    """

    key = "W"

    def __init__(self, W):
        if W.ndim < 2:
            raise ValueError(f"MatMul: the constant operand must have at least 2 axes, got "
                             f"shape {tuple(W.shape)}")
        super().__init__(W)

    def _output_shape(self, x_shape):
        W_shape = tuple(self.constant.shape)
        if len(x_shape) == 1:
            return W_shape[:-2] + W_shape[-1:]
        batch = _broadcast_shape(self._label(), x_shape[:-2], W_shape[:-2])
        return tuple(batch) + (x_shape[-2], W_shape[-1])

    def forward(self, x, train=False):
        if x.ndim < 1 or x.shape[-1] != self.constant.shape[-2]:
            raise ValueError(f"{self._label()}: input {tuple(x.shape)} cannot be multiplied by "
                             f"W {tuple(self.constant.shape)}")
        self._cache = x
        xp = get_array_module(x)
        return xp.matmul(x, self.constant)

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x = self._saved()
        xp = get_array_module(dy)
        W = self.constant
        check_shape(dy, self._output_shape(x.shape), self._label(), "dy")
        x2 = x[None, :] if x.ndim == 1 else x                # a vector is a row: (1, K)
        dy2 = xp.expand_dims(dy, -2) if x.ndim == 1 else dy  # (..., 1, N) then
        if self._wants_param_grads(rule, param_grads):
            self.grads[self.key] = reduce_to(xp.matmul(_swap(x2), dy2), W.shape)
        if not input_grad:
            return None
        dx = xp.matmul(dy2, _swap(W))
        return reduce_to(dx, x2.shape).reshape(x.shape)


class Multiply(Layer):
    """y = x_1 * x_2 * ... of computed tensors, broadcasting; dx_i = dy * prod_{j != i} x_j
    (summed over the axes x_i was broadcast along). Takes a list, like Add."""

    takes_list = True

    def forward(self, xs, train=False):
        shape = ()
        for x in xs:
            shape = _broadcast_shape(self._label(), shape, x.shape)
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        self._cache = list(xs)
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        xs = self._saved()
        grads = []
        for i, x in enumerate(xs):
            others = dy
            for j, other in enumerate(xs):
                if j != i:
                    others = others * other
            grads.append(reduce_to(others, x.shape))
        return grads


class Gemm(Layer):
    """ONNX's Gemm with a constant B and C: y = alpha * A' @ B' + beta * C.

    A : (M, K) or (K, M) when ``transA``;  B : (K, N) or (N, K) when ``transB``;
    C : broadcastable to (M, N) (optional). Parameters "W" (B as given) and "b" (C).
    A Gemm with alpha = beta = 1, no transA and transB (PyTorch's export of Linear) is
    imported as :class:`~minconv.nn.Linear` instead.
    """

    def __init__(self, B, C=None, alpha=1.0, beta=1.0, transA=False, transB=False):
        super().__init__()
        if B.ndim != 2:
            raise ValueError(f"Gemm: B must be 2-D, got shape {tuple(B.shape)}")
        self.params["W"] = B
        if C is not None:
            self.params["b"] = C
        self.alpha, self.beta = float(alpha), float(beta)
        self.transA, self.transB = bool(transA), bool(transB)

    def _B(self):
        return self.params["W"].T if self.transB else self.params["W"]

    def forward(self, A, train=False):
        if A.ndim != 2:
            raise ValueError(f"{self._label()}: expected a 2-D input, got shape {tuple(A.shape)}")
        A2 = A.T if self.transA else A
        B = self._B()
        if A2.shape[1] != B.shape[0]:
            raise ValueError(f"{self._label()}: op(A) {tuple(A2.shape)} @ op(B) {tuple(B.shape)}: "
                             f"inner sizes differ")
        y = runtime.matmul(A2, B)
        if self.alpha != 1.0:
            y *= A.dtype.type(self.alpha)
        if "b" in self.params:
            C = self.params["b"]
            _broadcast_shape(self._label(), y.shape, C.shape)
            y = y + (C * C.dtype.type(self.beta) if self.beta != 1.0 else C)
        self._cache = A
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        A = self._saved()
        A2 = A.T if self.transA else A
        B = self._B()
        check_shape(dy, (A2.shape[0], B.shape[1]), self._label(), "dy")
        alpha = dy.dtype.type(self.alpha)
        if self._wants_param_grads(rule, param_grads):
            dB = runtime.matmul(A2.T, dy) * alpha         # (K, N)
            self.grads["W"] = dB.T if self.transB else dB
            if "b" in self.params:
                self.grads["b"] = reduce_to(dy, self.params["b"].shape) * dy.dtype.type(self.beta)
        if not input_grad:
            return None
        dA2 = runtime.matmul(dy, B.T) * alpha             # (M, K)
        return dA2.T.copy() if self.transA else dA2

    def extra_repr(self):
        return (f"W={tuple(self.params['W'].shape)}, alpha={self.alpha}, beta={self.beta}, "
                f"transA={self.transA}, transB={self.transB}")


class Softmax(Layer):
    """Softmax along ``axis``. With ``flatten=True`` (ONNX before opset 13) the input is
    first viewed as 2-D, (prod(shape[:axis]), prod(shape[axis:])), and normalised per row.

    dx = y * (dy - sum(dy * y)) along the same axis.
    """

    def __init__(self, axis=-1, flatten=False):
        super().__init__()
        self.axis, self.flatten = int(axis), bool(flatten)

    def _view(self, a):
        """``a`` as the array the softmax runs over and the axis to run along."""
        axis = self.axis % a.ndim if -a.ndim <= self.axis < a.ndim else None
        if axis is None:
            raise ValueError(f"{self._label()}: axis {self.axis} out of range for input "
                             f"{tuple(a.shape)}")
        if self.flatten:
            return a.reshape(int(np.prod(a.shape[:axis])), -1), 1
        return a, axis

    def forward(self, x, train=False):
        view, axis = self._view(x)
        xp = get_array_module(x)
        z = view - view.max(axis=axis, keepdims=True)
        e = xp.exp(z)
        y = (e / e.sum(axis=axis, keepdims=True)).reshape(x.shape)
        self._cache = y
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        y = self._saved()
        check_shape(dy, y.shape, self._label(), "dy")
        y2, axis = self._view(y)
        dy2, _ = self._view(dy)
        return (y2 * (dy2 - (dy2 * y2).sum(axis=axis, keepdims=True))).reshape(y.shape)

    def extra_repr(self):
        return f"axis={self.axis}" + (", flatten=True" if self.flatten else "")


class Clip(Layer):
    """y = min(max(x, low), high) (ReLU6 is Clip(0, 6)); dx = dy where low < x < high,
    0 elsewhere, under every rule. ``None`` leaves that side open."""

    def __init__(self, low=None, high=None):
        super().__init__()
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def forward(self, x, train=False):
        xp = get_array_module(x)
        self._cache = x
        return xp.clip(x, self.low, self.high) if (self.low, self.high) != (None, None) \
            else x.copy()

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        F.activation.check_rule(rule)
        x = self._saved()
        check_shape(dy, x.shape, self._label(), "dy")
        inside = True
        if self.low is not None:
            inside = x > self.low
        if self.high is not None:
            inside = inside & (x < self.high)
        return dy * inside

    def extra_repr(self):
        return f"low={self.low}, high={self.high}"


class LeakyReLU(Layer):
    """y = x for x > 0, alpha * x otherwise; dx = dy * (1 or alpha), under every rule
    (the deconvnet's relu* is defined for ReLU only)."""

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x, train=False):
        xp = get_array_module(x)
        self._cache = x
        return xp.where(x > 0, x, x * x.dtype.type(self.alpha))

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        F.activation.check_rule(rule)
        x = self._saved()
        check_shape(dy, x.shape, self._label(), "dy")
        xp = get_array_module(dy)
        return xp.where(x > 0, dy, dy * dy.dtype.type(self.alpha))

    def extra_repr(self):
        return f"alpha={self.alpha}"
