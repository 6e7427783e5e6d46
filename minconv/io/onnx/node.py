"""One ONNX node as its converter sees it: attributes, constant inputs, static shapes, and
the means to add layers to the graph under the node's name."""
import numpy as np


class Node:
    """The view of one ONNX node that a converter works with.

    attr(key, default)   an attribute (marked as understood; any attribute no converter
                         reads is an error naming the operator, the node and the attribute)
    constant(i)          the value of input i when it is known at load time, else None
    shape(i)             the static shape of input i (None for an unknown size)
    layer(layer, ...)    add a layer to the graph computing output 0 from input 0
    """

    def __init__(self, proto, opset, importer, name):
        from onnx import helper
        self.proto, self.opset, self.importer, self.name = proto, opset, importer, name
        self.op_type = proto.op_type
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = {}
        for attribute in proto.attribute:
            value = helper.get_attribute_value(attribute)
            self.attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
        self._read = set()

    # -- reading -------------------------------------------------------------
    def attr(self, key, default=None):
        self._read.add(key)
        return self.attrs.get(key, default)

    def output_needed(self, i):
        """Whether output i exists and something downstream (or the graph) reads it."""
        return i < len(self.outputs) and self.outputs[i] in self.importer.needed_tensors

    def has_input(self, i):
        return i < len(self.inputs) and self.inputs[i] != ""

    def constant(self, i):
        return self.importer.constants.get(self.inputs[i]) if self.has_input(i) else None

    def is_constant(self, i):
        return self.has_input(i) and self.inputs[i] in self.importer.constants

    def required_constant(self, i, what):
        """Input i, which minconv needs to know at load time (weights, shapes, axes)."""
        value = self.constant(i)
        if value is None:
            raise self.unsupported(what, f"(input {i}, {self.inputs[i]!r}) must be a constant "
                                   "known at load time (an initializer or a folded subgraph)")
        return value

    def shape(self, i):
        return self.importer.shape_of(self.inputs[i])

    def spatial_shape(self, i, what):
        """(H, W) of input i, which must be statically known (for auto_pad and the like)."""
        shape = self.shape(i)
        if shape is None or len(shape) != 4 or None in shape[2:]:
            raise self.unsupported(what, f"needs the static (H, W) of input {self.inputs[i]!r}, "
                                   f"but its shape is {shape}")
        return shape[2:]

    # -- errors --------------------------------------------------------------
    def unsupported(self, attribute, why):
        return ValueError(f"ONNX {self.op_type} node {self.name!r}: attribute {attribute!r} "
                          f"{why}")

    def check_attributes(self):
        unread = sorted(set(self.attrs) - self._read)
        if unread:
            values = ", ".join(f"{key}={self.attrs[key]!r}" for key in unread)
            raise self.unsupported(unread[0], f"is not supported by minconv's importer ({values})")

    def check_rank(self, i, rank, what="input"):
        shape = self.importer.shape_of(self.inputs[i], infer=False)  # when known cheaply
        if shape is not None and len(shape) != rank:
            raise ValueError(f"ONNX {self.op_type} node {self.name!r}: minconv supports only "
                             f"{rank}-D {what}s here, got shape {tuple(shape)}")

    # -- building ------------------------------------------------------------
    def layer(self, layer, inputs=None, output=0, suffix=None):
        """Add ``layer`` to the graph under this node's name (plus ``_suffix``), reading the
        ONNX tensors ``inputs`` (default: input 0) and producing output ``output`` (an
        index, or None for an intermediate result). Returns the graph node's name."""
        inputs = [self.inputs[0]] if inputs is None else inputs
        name = self.name if suffix is None else f"{self.name}_{suffix}"
        return self.importer.add_layer(name, layer, inputs, self,
                                       None if output is None else self.outputs[output])

    def chain(self, layers):
        """Add (suffix, layer) pairs one after another from input 0; the last one makes
        output 0 (give it the suffix None to carry the node's own name)."""
        source = [self.inputs[0]]
        for position, (suffix, layer) in enumerate(layers):
            last = position == len(layers) - 1
            name = self.layer(layer, inputs=source, output=0 if last else None, suffix=suffix)
            source = [self.importer.internal(name)]
        return name


def ints(values):
    return tuple(int(v) for v in values)


def as_float(array):
    """Weights as float32 unless the file gave float64: contiguous and writable (the
    arrays ONNX hands over may be read-only views of the file's bytes; training updates
    parameters in place), copied only when they are not."""
    array = np.asarray(array)
    dtype = np.float64 if array.dtype == np.float64 else np.float32
    return np.require(array, dtype, requirements=("C", "W"))
