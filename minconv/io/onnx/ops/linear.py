"""Gemm and MatMul with constant weights.

PyTorch exports a fully connected layer as Gemm(transB=1, alpha=beta=1) with a 1-D C:
that becomes minconv's :class:`~minconv.nn.Linear` (W (out, in), b (out,)). Every other
Gemm is the general :class:`~minconv.nn.arith.Gemm`.
"""
import numpy as np

from ....nn import Linear
from ....nn.arith import Gemm, MatMul
from ....nn.tensor_ops import Squeeze
from ..node import as_float
from ..registry import converter


@converter("Gemm")
def gemm(node):
    node.check_rank(0, 2)
    B = as_float(node.required_constant(1, "B"))
    C = node.required_constant(2, "C").astype(B.dtype) if node.has_input(2) else None
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    transA, transB = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    if node.opset < 7:
        node.attr("broadcast")
    out_features = B.shape[0] if transB else B.shape[1]
    if not transA and alpha == 1.0 and beta == 1.0 and B.ndim == 2 and (
            C is None or C.size == out_features and C.ndim == 1 or C.shape == (1, out_features)):
        W = B if transB else np.ascontiguousarray(B.T)
        layer = Linear(W.shape[1], W.shape[0], bias=C is not None, init_std=0.0, dtype=W.dtype)
        layer.params["W"] = W
        if C is not None:
            layer.params["b"] = np.ascontiguousarray(C.reshape(-1))
        return node.layer(layer)
    return node.layer(Gemm(B, C, alpha, beta, transA, transB))


@converter("MatMul")
def matmul(node):
    if node.is_constant(0):
        raise node.unsupported("A", "is a constant and B is not: minconv supports MatMul "
                               "with a constant right-hand operand only")
    B = as_float(node.required_constant(1, "B"))
    if B.ndim == 1:  # a vector: a one-column matrix, and that column's axis dropped
        return node.chain([("matrix", MatMul(B[:, None])), (None, Squeeze((-1,)))])
    return node.layer(MatMul(B))


