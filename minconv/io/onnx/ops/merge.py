"""Add, Sum, Mul and Concat.

Between two computed tensors they are minconv's Add and Concat (and Multiply for Mul);
with a constant operand, Add and Mul become a Shift or a Scale whose constant is a
parameter (DenseNet's exported BatchNorm is Mul and Add by per-channel constants).
"""
import numpy as np

from ....nn.arith import Constant, Multiply, Scale, Shift
from ....nn.merge import Add, Concat, Identity
from ..node import as_float
from ..registry import converter
from .norm import fold_affine


def _split(node):
    """The computed inputs and the sum (or product, for Mul) of the constant ones."""
    variables = [t for i, t in enumerate(node.inputs) if t and not node.is_constant(i)]
    constants = [node.constant(i) for i, t in enumerate(node.inputs) if t and node.is_constant(i)]
    return variables, constants


def _legacy_broadcast(node):
    """Before opset 7, Add and Mul broadcast only with broadcast=1 and ``axis``."""
    if node.opset < 7 and node.attr("broadcast", 0):
        raise node.unsupported("broadcast", "(opset < 7 broadcasting) is not supported")
    node.attr("axis")


def _elementwise(node, merge, constant_layer, combine):
    _legacy_broadcast(node)
    variables, constants = _split(node)
    if constants:
        value = as_float(combine(constants))
        if not variables:
            raise node.unsupported("inputs", "are all constant")
        if len(variables) == 1:
            scale, shift = (value, 0.0) if constant_layer is Scale else (1.0, value)
            folded = fold_affine(node, variables[0], scale, shift)
            return folded or node.layer(constant_layer(value), inputs=variables)
        merged = node.layer(merge(), inputs=variables, output=None, suffix="merge")
        return node.layer(constant_layer(value), inputs=[node.importer.internal(merged)])
    if len(variables) == 1:
        return node.layer(Identity(), inputs=variables)
    return node.layer(merge(), inputs=variables)


@converter("Add")
def add(node):
    return _elementwise(node, Add, Shift, lambda values: sum(values[1:], values[0]))


@converter("Sum")
def sum_(node):
    return add(node)


@converter("Mul")
def mul(node):
    return _elementwise(node, Multiply, Scale, lambda values: np.prod(np.broadcast_arrays(
        *values), axis=0) if len(values) > 1 else values[0])


@converter("Concat")
def concat(node):
    sources = []
    for i, tensor in enumerate(node.inputs):
        if node.is_constant(i):  # a constant piece: a node that yields it
            name = node.layer(Constant(node.constant(i)), inputs=[node.importer.inputs[0]],
                              output=None, suffix=f"constant{i}")
            tensor = node.importer.internal(name)
        sources.append(tensor)
    return node.layer(Concat(int(node.attr("axis", 1))), inputs=sources)
