"""The fully connected layer: y = x W^T + b."""
from ..runtime import matmul
from ._checks import check_array, check_same_dtype, check_shape


def _check_linear(op, x, W, b):
    check_array(x, op, "input", 2, "(N, in_features)")
    check_array(W, op, "weight", 2, "(out_features, in_features)")
    check_same_dtype(op, input=x, weight=W, bias=b)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"{op}: input has {x.shape[1]} features but the weight {tuple(W.shape)} "
                         f"expects {W.shape[1]} (input shape {tuple(x.shape)})")
    if b is not None:
        check_array(b, op, "bias", 1)
        check_shape(b, (W.shape[0],), op, "bias")


def linear(x, W, b=None):
    """x : (N, in), W : (out, in), b : (out,) -> y : (N, out) = x @ W.T + b."""
    _check_linear("linear", x, W, b)
    y = matmul(x, W.T)
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, W, *, need_input_grad=True, need_weight_grad=True):
    """Gradients of :func:`linear`: dx = dy W (N, in), dW = dy^T x (out, in), db = sum dy (out,).

    A gradient that is not needed comes back as None.
    """
    _check_linear("linear_backward", x, W, None)
    check_array(dy, "linear_backward", "dy", 2, "(N, out_features)")
    check_same_dtype("linear_backward", dy=dy, input=x)  # no silent change of the grads' dtype
    check_shape(dy, (x.shape[0], W.shape[0]), "linear_backward", "dy")
    dx = matmul(dy, W) if need_input_grad else None
    if not need_weight_grad:
        return dx, None, None
    return dx, matmul(dy.T, x), dy.sum(axis=0)
