"""Layers where the paths of a Graph meet (Add, Concat), and Identity.

Add and Concat take a list of inputs: a :class:`~minconv.nn.Graph` node with
several ``inputs`` hands them over in that order, and their backward pass
returns one gradient per input.
"""
from .. import functional as F
from ..functional.activation import check_rule
from .base import Layer


class _Merge(Layer):
    takes_list = True   # a Graph passes the outputs of all the node's inputs as one list

    def __init__(self):
        super().__init__()
        self.input_names = None  # the Graph's node names, for error messages

    def _names(self, xs):
        if not isinstance(xs, (list, tuple)):
            raise ValueError(f"{self._label()}: expected a list of inputs, got "
                             f"{type(xs).__name__}")
        if self.input_names is not None and len(self.input_names) == len(xs):
            return self.input_names
        return None


class Add(_Merge):
    """y = x_1 + x_2 + ... (a residual connection); the gradient goes to every input unchanged.
    ``forward(xs, train, relu=True)`` returns max(y, 0) (a Graph fuses the ReLU after it)."""
    fuses_relu = True

    def forward(self, xs, train=False, relu=False):
        y = F.add(xs, names=self._names(xs), relu=relu)
        self._cache = len(xs)
        return y

    def forward_added(self, y, count):
        """The forward pass where the layer below added the other inputs to its own output
        as it wrote it (a Graph's fusion, see :class:`~minconv.nn.Graph`): ``y`` is the sum
        of ``count`` inputs (with the ReLU after it, where that was fused), returned as it
        is."""
        self._cache = count
        self._output_spec = (tuple(y.shape), y.dtype)
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return [dy] * self._saved()


class Concat(_Merge):
    """Join the inputs along ``axis`` (1: channels); the gradient is split back into slices."""

    def __init__(self, axis=1):
        super().__init__()
        self.axis = int(axis)

    def forward(self, xs, train=False):
        y = F.concat(xs, self.axis, names=self._names(xs))
        self._cache = [x.shape[self.axis] for x in xs]
        return y

    def forward_joined(self, y, sizes):
        """The forward pass where the layers below wrote their outputs straight into their
        slices of ``y`` (a Graph's join, see :class:`~minconv.nn.Graph`), ``sizes`` along
        the axis: y is returned as it is."""
        self._cache = list(sizes)
        self._output_spec = (tuple(y.shape), y.dtype)
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return F.concat_backward(dy, self._saved(), self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class Identity(Layer):
    """y = x: a placeholder (a shortcut without projection, a removed layer)."""

    def forward(self, x, train=False):
        self._cache = True
        return x

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return dy
