"""What a Graph's forward pass fuses, worked out once per schedule from the edges.

**ReLUs.** A ReLU that alone reads the output of a layer that can apply it itself
(``fuses_relu``: Conv2D, BatchNorm2D, Add) is fused into that layer: the layer writes
max(y, 0) as it writes y, and the ReLU keeps that output for its backward pass without
another pass over the memory. The layer's own output y is then never formed, so a layer
whose output is recorded (``record``) or asked for (``until``) is not fused.

**Residual Adds.** An Add of two inputs, one of them the output of a Conv2D that only
the Add reads, is made by that convolution: it adds the other input to y as it writes it
(``forward(x, residual=...)``; the 1x1 tiles do so in their store, ResNet's bottlenecks
end so), with the Add's fused ReLU, and the Add keeps the sum as its output. The other
input must be computed by then (it comes earlier in the order, or is the graph's input).

**Concatenations joined in place.** Outside training, a concatenation along the
channels whose inputs are each read by it alone and written by layers that can write
into a given array (``writes_into``: Conv2D, with or without a fused ReLU) is joined in
place: its output is allocated when the first of those layers runs, each writes its
slice of it, and nothing is copied. (SqueezeNet's fire modules and Inception's blocks
end so.)

**A first layer's pooling.** Outside training, a MaxPool2D that alone reads the output
of a Conv2D (with or without a fused ReLU) runs with it in one pass where the
convolution has few input channels (a first layer;
:func:`~minconv.functional.conv2d_maxpool_planned`): the convolution's output, a net's
largest map, is never formed. The convolution and the ReLU hold it unformed
(:class:`~minconv.nn.base.Unformed`), and a backward pass forms it, on the pass's plan,
when it needs it.

Every output and gradient is the same with and without them, with one exception: with a
batch that fills the cores, the pooled pass gives a strided few-channel convolution the
direct tiles, which the planner alone would not (there it would take per_image or
shifted), and its sums then run in another order (a difference within float32's
rounding). A layer's forced plan (``forced_plan``, ``using_plan``) is kept.
"""
import functools

from ..backend import get_array_module
from .base import Unformed
from .container import fuses_relu, in_layer, mutates_input
from .conv import Conv2D
from .layers import MaxPool2D, ReLU
from .merge import Add, Concat


def relu_fusions(layers, inputs, order, uses):
    """{layer: relu} for each ReLU node whose one input is a layer that ``fuses_relu``
    and that nothing else reads (``uses``: how many nodes read each output)."""
    fusions = {}
    for name in order:
        layer, sources = layers[name], inputs[name]
        if type(layer) is not ReLU or len(sources) != 1:
            continue
        below = layers.get(sources[0])
        if below is not None and fuses_relu(below) and uses[sources[0]] == 1:
            fusions[sources[0]] = name
    return fusions


def joined_concatenations(layers, inputs, order, uses, fusions):
    """{concat: [the layer that writes each input]} for each Concat along the channels
    whose inputs are outputs of layers that ``writes_into`` (or ReLUs fused into them)
    read by that Concat alone, and whose output no node overwrites in place."""
    fused_into = {relu: source for source, relu in fusions.items()}
    joins = {}
    for name in order:
        layer, sources = layers[name], inputs[name]
        readers = [n for n, ins in inputs.items() if name in ins]
        if (type(layer) is not Concat or layer.axis != 1 or len(set(sources)) != len(sources)
                or any(mutates_input(layers[c]) for c in readers)):
            continue
        writers = [fused_into.get(i, i) for i in sources]
        if all(i in layers and uses[i] == 1 and getattr(layers[w], "writes_into", False)
               for i, w in zip(sources, writers)):
            joins[name] = writers
    return joins


def pooled_convolutions(layers, inputs, order, uses, fusions):
    """{convolution: max pooling} for each MaxPool2D node whose one input is the output of
    a Conv2D (or of a ReLU fused into one) that nothing else reads."""
    fused_into = {relu: source for source, relu in fusions.items()}
    pools = {}
    for name in order:
        layer, sources = layers[name], inputs[name]
        if type(layer) is not MaxPool2D or len(sources) != 1 or sources[0] not in layers:
            continue
        conv = fused_into.get(sources[0], sources[0])
        if type(layers[conv]) is Conv2D and uses[sources[0]] == 1 and uses[conv] == 1:
            pools[conv] = name
    return pools


def residual_convolutions(layers, inputs, order, uses):
    """{convolution: (add, other input)} for each Add node of two inputs whose input from a
    Conv2D is read by it alone and whose other input comes earlier in ``order`` (or is the
    graph's input); of two such convolutions, the later one."""
    position = {name: k for k, name in enumerate(order)}
    residuals = {}
    for name in order:
        sources = inputs[name]
        if type(layers[name]) is not Add or len(sources) != 2 or sources[0] == sources[1]:
            continue
        for conv, other in ((sources[1], sources[0]), (sources[0], sources[1])):
            if (conv in layers and type(layers[conv]) is Conv2D and uses[conv] == 1
                    and (other not in position or position[other] < position[conv])):
                residuals[conv] = (name, other)
                break
    return residuals


def forward_added(name, conv, x, train, add, other, relu, added):
    """Conv2D node ``name`` with the Add ``add`` above it: y + other (max(., 0) with the
    Add's fused ``relu``) made as the convolution writes y, the sum left in ``added[add]``
    for the Add node and returned. None where ``other`` is missing or does not fit y (the
    two then run as usual)."""
    shape = conv.output_shape(x.shape) if getattr(x, "ndim", 0) == 4 else None
    if (other is None or shape is None or type(other) is not type(x)
            or tuple(other.shape) != tuple(shape) or other.dtype != x.dtype):
        return None
    try:
        y = conv.forward(x, train=train, relu=relu, residual=other)
    except ValueError as error:
        raise in_layer(name, conv, error) from None
    added[add] = y
    return y


def forward_pooled(name, conv, pool_name, pool, x, relu, pooled):
    """Conv2D node ``name`` and the max pooling node ``pool_name`` above it in one pass,
    where the convolution's plan allows: the pooled output goes to ``pooled[pool_name]``
    for the pooling node, and the convolution's own output is returned unformed (formed
    if a backward pass needs it); None where the two run as usual."""
    try:
        y = conv.forward_pooled(x, pool, relu=relu)
    except ValueError as error:
        raise in_layer(name, conv, error) from None
    if y is None:
        return None
    pooled[pool_name] = y
    return Unformed(functools.partial(conv.planned_output, x, conv.plan, relu=relu),
                    conv.output_shape(x.shape), x.dtype)


class Joins:
    """The concatenations a forward pass joins in place (see the module docstring): each
    one's output, allocated when the first of its writers runs, and the slice each writer
    is handed. A writer whose output would not fit its slice (a graph whose concatenation
    will fail) runs as usual, and that concatenation then copies its inputs as usual."""

    def __init__(self, layers, joins):
        self._layers = layers
        self._joins = joins
        self._slot = {w: (c, k) for c, writers in joins.items() for k, w in enumerate(writers)}
        self._outputs = {}   # concat -> (output, channel offsets, slices written)

    def slice_for(self, name, layer, x):
        """The slice of a concatenation's output that writer ``name`` is to write, or None."""
        if name not in self._slot or getattr(x, "ndim", 0) != 4:
            return None       # (an input of the wrong kind: the layer's own error follows)
        concat, k = self._slot[name]
        shape = layer.output_shape(x.shape)
        if concat not in self._outputs:
            writers = [self._layers[w] for w in self._joins[concat]]
            starts = [0]
            for writer in writers:
                starts.append(starts[-1] + writer.out_channels)
            y = get_array_module(x).empty((shape[0], starts[-1]) + tuple(shape[2:]),
                                          dtype=x.dtype)
            self._outputs[concat] = (y, starts, set())
        y, starts, written = self._outputs[concat]
        part = y[:, starts[k]:starts[k + 1]]
        if tuple(part.shape) != tuple(shape) or y.dtype != x.dtype:
            return None
        written.add(k)
        return part

    def complete(self, name):
        """Whether every input of concatenation ``name`` was written in place."""
        entry = self._outputs.get(name)
        return entry is not None and len(entry[2]) == len(self._joins[name])

    def output(self, name):
        """(output, channel sizes) of a complete concatenation."""
        y, starts, _ = self._outputs[name]
        return y, [b - a for a, b in zip(starts, starts[1:])]
