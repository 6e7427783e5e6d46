"""Sequential: a named chain of layers, run forward and backward as one net.

Layers are addressed by name (``net["conv5"]``), the forward pass can stop at
a layer (``until="conv5"`` includes that layer's output), and the backward pass
can start at one (``start="conv5"``) and follow any of the three rules.
Parameters appear under dotted names, ``"conv1.W"``, as in checkpoints.
"""
from collections import OrderedDict

from ..backend import get_array_module
from ..functional.activation import check_rule
from .base import Layer

_PREFIXES = {"Conv2D": "conv", "ConvTranspose2D": "convt", "ReLU": "relu", "MaxPool2D": "pool",
             "LRN": "norm", "Dropout": "drop", "Flatten": "flatten", "Linear": "fc"}


class Sequential(Layer):
    """A chain of layers: ``Sequential(l1, l2, ...)`` or ``Sequential([(name, layer), ...])``.

    Unnamed layers are named by kind and position among their kind: conv1, relu1, pool1, ...
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple, OrderedDict)):
            items = layers[0].items() if isinstance(layers[0], OrderedDict) else layers[0]
        else:
            items = layers
        self._layers = OrderedDict()
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
        self.config = None  # set by model builders: {"model": ..., "kwargs": {...}}

    # -- addressing ----------------------------------------------------------
    @property
    def names(self):
        return list(self._layers)

    @property
    def layers(self):
        return list(self._layers.values())

    def items(self):
        return self._layers.items()

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers.values())

    def index(self, name):
        """Position of the layer called ``name``; ValueError listing the valid names."""
        if name not in self._layers:
            raise ValueError(f"unknown layer {name!r}; valid names: {', '.join(self._layers)}")
        return self.names.index(name)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.layers[key]
        return self._layers[self.names[self.index(key)]]

    # -- parameters ------------------------------------------------------------
    @property
    def params(self):
        """Live parameter arrays under dotted names: {"conv1.W": ..., ...}."""
        return {f"{name}.{key}": value for name, layer in self._layers.items()
                for key, value in layer.params.items()}

    @params.setter
    def params(self, value):  # Layer.__init__ assigns {}; parameters live in the layers
        if value:
            self.load_state_dict(value)

    @property
    def grads(self):
        return {f"{name}.{key}": value for name, layer in self._layers.items()
                for key, value in layer.grads.items()}

    @grads.setter
    def grads(self, value):
        if not value:  # Layer.__init__ assigns {} before the layers exist
            for layer in getattr(self, "_layers", {}).values():
                layer.grads = {}

    def state_dict(self):
        return self.params

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters, checking names and shapes first (nothing
        changes when anything is off)."""
        own = self.params
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            if key in own and tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(f"load_state_dict: {key} has shape {tuple(value.shape)}, the "
                                 f"net expects {tuple(own[key].shape)}")
        for key, value in state.items():
            if key in own:
                name, param = key.rsplit(".", 1)
                layer = self._layers[name]
                layer.params[param] = _like(value, layer.params[param])

    def num_params(self):
        return int(sum(v.size for v in self.params.values()))

    # -- running ---------------------------------------------------------------
    def forward(self, x, train=False, until=None, record=()):
        """Run the layers in order; stop after ``until`` (inclusive) if given.

        ``record`` names layers whose outputs are kept in ``self.outputs``.
        """
        stop = self.index(until) if until is not None else len(self) - 1
        for name in record:
            self.index(name)
        self.outputs = {}
        for position, (name, layer) in enumerate(self._layers.items()):
            if position > stop:
                break
            try:
                x = layer.forward(x, train=train)
            except ValueError as error:
                raise _in_layer(name, layer, error) from None
            if name in record:
                self.outputs[name] = x
        return x

    def backward(self, dy, rule="grad", start=None, stop=None, param_grads=None, release=False):
        """Send ``dy`` down the net under ``rule`` and return the gradient at the bottom.

        start       : the layer whose output ``dy`` is the gradient of (default: the last)
        stop        : the lowest layer to reach (default: the first). It computes only its
                      parameter gradients, and None is returned: a training step has no
                      use for the gradient below its lowest trainable layer.
        param_grads : fill the layers' ``grads`` (default: only under rule "grad"); the
                      visualisations go down with False and leave ``grads`` alone
        release     : free each layer's forward cache once it is done (lower peak memory)
        """
        check_rule(rule)
        first = self.index(start) if start is not None else len(self) - 1
        last = self.index(stop) if stop is not None else 0
        if last > first:
            raise ValueError(f"backward: stop layer {stop!r} lies above start layer {start!r}")
        layers = list(self._layers.items())
        for position in range(first, last - 1, -1):
            name, layer = layers[position]
            try:
                dy = layer.backward(dy, rule=rule, param_grads=param_grads,
                                    input_grad=stop is None or position > last)
            except ValueError as error:
                raise _in_layer(name, layer, error) from None
            if release:
                layer.clear_cache()
        return None if stop is not None else dy

    def clear_cache(self):
        for layer in self._layers.values():
            layer.clear_cache()
        self.outputs = {}

    def to(self, device):
        for layer in self._layers.values():
            layer.to(device)
        return self

    def astype(self, dtype):
        for layer in self._layers.values():
            layer.astype(dtype)
        return self

    @property
    def device(self):
        for layer in self._layers.values():
            if layer.device is not None:
                return layer.device
        return None

    def __repr__(self):
        lines = [f"  ({name}): {layer!r}" for name, layer in self._layers.items()]
        return "Sequential(\n" + "\n".join(lines) + "\n)"


def _in_layer(name, layer, error):
    """The error, prefixed with the layer's name unless the layer already named itself."""
    message = str(error)
    if message.startswith(layer._label()):
        return ValueError(message)
    return ValueError(f"layer {name!r} ({type(layer).__name__}): {message}")


def _like(value, reference):
    """``value`` as an array of the same module and dtype as ``reference`` (a copy)."""
    xp = get_array_module(reference)
    return xp.array(value, dtype=reference.dtype)
