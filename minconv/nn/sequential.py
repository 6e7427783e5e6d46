"""Sequential: a named chain of layers, run forward and backward as one net.

Layers are addressed by name (``net["conv5"]``), the forward pass can stop at
a layer (``until="conv5"`` includes that layer's output), and the backward pass
can start at one (``start="conv5"``) and follow any of the three rules.
Parameters appear under dotted names, ``"conv1.W"``, as in checkpoints.
Sequential and Graph nest: a layer inside is reached by its dotted path
(``"layer1.0.conv1"``) wherever a name is taken (:mod:`minconv.nn.container`).
A ReLU right after a Conv2D or BatchNorm2D whose output is not recorded is fused
into it, as in a Graph (:mod:`minconv.nn.graph`).
"""
from collections import OrderedDict

from ..functional.activation import check_rule
from .base import Layer
from .container import Container, fuses_relu, is_container, mutates_input
from .layers import ReLU

_PREFIXES = {"Conv2D": "conv", "ConvTranspose2D": "convt", "ReLU": "relu", "MaxPool2D": "pool",
             "LRN": "norm", "Dropout": "drop", "Flatten": "flatten", "Linear": "fc"}


class Sequential(Container):
    """A chain of layers: ``Sequential(l1, l2, ...)`` or ``Sequential([(name, layer), ...])``.

    Unnamed layers are named by kind and position among their kind: conv1, relu1, pool1, ...
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple, OrderedDict)):
            items = layers[0].items() if isinstance(layers[0], OrderedDict) else layers[0]
        else:
            items = layers
        counts = {}
        for item in items:
            name, layer = item if isinstance(item, tuple) else (None, item)
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequential: expected minconv layers, got {type(layer).__name__}")
            if name is None:
                prefix = _PREFIXES.get(type(layer).__name__, type(layer).__name__.lower())
                counts[prefix] = counts.get(prefix, 0) + 1
                name = f"{prefix}{counts[prefix]}"
            if name in self._layers or "." in name:
                raise ValueError(f"Sequential: layer name {name!r} is repeated or contains '.'")
            layer.name = name
            self._layers[name] = layer

    # -- addressing ----------------------------------------------------------
    def __getitem__(self, key):
        if isinstance(key, int):
            return self.layers[key]
        return self.resolve(key)

    def _mutates_input(self):
        return bool(self._layers) and mutates_input(self.layers[0])

    # -- running ---------------------------------------------------------------
    def forward(self, x, train=False, until=None, record=()):
        """Run the layers in order; stop after ``until`` (inclusive) if given.

        ``record`` names layers whose outputs are kept in ``self.outputs``: what each
        produced, copied when a later layer works in place (ZFNet's ReLUs overwrite the
        convolutions' outputs).
        """
        head, rest = self._split(until) if until is not None else (None, None)
        stop = self.index(head) if head is not None else len(self) - 1
        for name in record:
            self._split(name)
        self.outputs = {}
        layers = list(self._layers.items())[:stop + 1]
        in_place_after = [any(mutates_input(later) for _, later in layers[i + 1:])
                          for i in range(len(layers))] if record else None
        fused = False  # whether the layer before applied this ReLU
        for position, (name, layer) in enumerate(layers):
            if fused:
                x, fused = layer.forward_fused(x), False
            else:
                fused = self._fuses_next(layers, position, stop, record)
                x = self._forward_child(name, layer, x, train,
                                        until=rest if position == stop else None,
                                        record=self._sub_record(name, record), relu=fused)
            if is_container(layer):
                self._collect(name, layer, x, ())
            if name in record:
                self.outputs[name] = x.copy() if in_place_after[position] else x
        return x

    @staticmethod
    def _fuses_next(layers, position, stop, record):
        """Whether layer ``position`` applies the ReLU that follows it (as a Graph does,
        :mod:`minconv.nn.graph`): it ``fuses_relu``, the next layer is a ReLU that runs,
        and the layer's own output is not recorded."""
        name, layer = layers[position]
        return (position < stop and fuses_relu(layer)
                and type(layers[position + 1][1]) is ReLU and name not in record)

    def backward(self, dy, rule="grad", start=None, stop=None, param_grads=None, release=False,
                 input_grad=True, extra=None):
        """Send ``dy`` down the net under ``rule`` and return the gradient at the bottom.

        start       : the layer whose output ``dy`` is the gradient of (default: the last)
        stop        : the lowest layer to reach (default: the first). It computes only its
                      parameter gradients, and None is returned: a training step has no
                      use for the gradient below its lowest trainable layer.
        param_grads : fill the layers' ``grads`` (default: only under rule "grad"); the
                      visualisations go down with False and leave ``grads`` alone
        release     : free each layer's forward cache once it is done (lower peak memory)
        input_grad  : False: the gradient below the first layer is not wanted (None returned)
        extra       : {dotted path inside: gradient}, gradients of inner outputs read by
                      layers outside (a Graph's dotted inputs), added at those layers

        ``start`` and ``stop`` may be dotted paths into nested Sequentials and Graphs.
        """
        check_rule(rule)
        start_head, start_rest = self._split(start) if start is not None else (None, None)
        stop_head, stop_rest = self._split(stop) if stop is not None else (None, None)
        first = self.index(start_head) if start is not None else len(self) - 1
        last = self.index(stop_head) if stop is not None else 0
        if last > first:
            raise ValueError(f"backward: stop layer {stop!r} lies above start layer {start!r}")
        layers = list(self._layers.items())
        inner = {}
        for path, g in (extra or {}).items():
            head, rest = self._split(path)
            if rest is None:
                inner.setdefault(head, {})[None] = g
            else:
                inner.setdefault(head, {})[rest] = g
        for position in range(first, last - 1, -1):
            name, layer = layers[position]
            joining = inner.get(name, {})
            if None in joining:  # the gradient of this layer's output read outside
                dy = dy + joining.pop(None)
            dy = self._backward_child(
                name, layer, dy, rule, param_grads,
                input_grad=(stop is None and input_grad) or position > last, release=release,
                start=start_rest if position == first else None,
                stop=stop_rest if position == last else None, extra=joining or None)
        return None if stop is not None or not input_grad else dy

    def __repr__(self):
        lines = [f"  ({name}): {layer!r}" for name, layer in self._layers.items()]
        return "Sequential(\n" + "\n".join(lines) + "\n)"
