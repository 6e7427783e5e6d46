"""Converters from ONNX operators to minconv layers, registered by operator type and opset.

Each operator family lives in a module of :mod:`minconv.io.onnx.ops`; a converter is a
function of one :class:`~minconv.io.onnx.node.Node` registered with

    @converter("Relu")                 # every opset
    @converter("Squeeze", since=13)    # opset 13 on (axes became an input)

and the importer picks, for a model of opset v, the newest registration with
``since <= v``. A converter adds layers to the graph (``node.layer(...)``) or, when
all its inputs are constants, may return the output values instead (constant folding).
"""
_CONVERTERS = {}


def converter(op_type, since=1):
    """Register the decorated function as the converter of ``op_type`` from opset ``since``."""
    def register(function):
        _CONVERTERS.setdefault(op_type, []).append((since, function))
        _CONVERTERS[op_type].sort(key=lambda entry: entry[0])
        return function
    return register


def converter_for(op_type, opset):
    """The converter for ``op_type`` at ``opset``, or None when there is none."""
    _load_ops()
    found = None
    for since, function in _CONVERTERS.get(op_type, ()):
        if since <= opset:
            found = function
    return found


def supported_ops():
    """The operator types that have a converter."""
    _load_ops()
    return sorted(_CONVERTERS)


def _load_ops():
    from . import ops  # noqa: F401  (importing the package registers every converter)
