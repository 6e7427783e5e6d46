"""What Sequential and Graph share: named children, dotted paths, parameters and state.

A container holds named layers, which may themselves be containers. A layer at
any depth is addressed by its dotted path, ``"layer3.1.conv2"``, exactly as the
keys of its parameters read (``"layer3.1.conv2.W"``): ``net["layer3.1.conv2"]``,
``forward(until=...)``, ``backward(start=..., stop=...)`` and ``record=`` all
take such paths. ``named_layers()`` lists every non-container layer under its
path, in the order a forward pass runs them.

Parameters (``params``, trained) and buffers (``buffers``, e.g. BatchNorm's
running statistics) live in the layers; the container's views of them are
dicts under dotted names, and ``state_dict()`` is both together.
"""
import functools
import inspect
from collections import OrderedDict

from ..backend import get_array_module
from .base import Layer


class LayerError(ValueError):
    """A ValueError raised inside the layer at ``path``; the message names the path."""

    def __init__(self, path, kind, detail, labelled=False):
        self.path, self.kind, self.detail, self.labelled = path, kind, detail, labelled
        head = f"{path} ({kind})" if labelled else f"layer {path!r} ({kind})"
        super().__init__(f"{head}: {detail}")


def in_layer(name, layer, error):
    """``error`` from ``layer`` (called ``name`` in its container) as a LayerError naming
    the layer's full path."""
    if isinstance(error, LayerError):
        return LayerError(f"{name}.{error.path}", error.kind, error.detail, error.labelled)
    message, label = str(error), layer._label()
    if message.startswith(label + ": "):  # the layer named itself already
        return LayerError(name, type(layer).__name__, message[len(label) + 2:], labelled=True)
    return LayerError(name, type(layer).__name__, message)


def is_container(layer):
    return _is_container_class(type(layer))


@functools.lru_cache(maxsize=None)
def _is_container_class(cls):
    # by class, once: isinstance against the abstract Layer's subclasses goes through
    # ABCMeta on every call, and a pass asks for every node
    return issubclass(cls, Container)


def fuses_relu(layer):
    """Whether ``layer`` can apply a ReLU that follows it (``forward(x, train, relu=True)``):
    its class says so, and its forward takes ``relu`` (a subclass that overrides forward
    without it is run as it is)."""
    return not is_container(layer) and _forward_takes_relu(type(layer))


@functools.lru_cache(maxsize=None)
def _forward_takes_relu(cls):
    return bool(cls.fuses_relu) and "relu" in inspect.signature(cls.forward).parameters


def split_path(path):
    """``"layer3.1.conv2"`` -> ``("layer3", "1.conv2")``; ``"fc"`` -> ``("fc", None)``."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a layer name must be a non-empty string, got {path!r}")
    head, _, rest = path.partition(".")
    return head, (rest or None)


def mutates_input(layer):
    """True when running ``layer`` overwrites its input (an in-place ReLU at its bottom)."""
    if is_container(layer):
        return layer._mutates_input()
    return bool(getattr(layer, "inplace", False))


class Container(Layer):
    """Base of Sequential and Graph: children in ``self._layers`` (name -> layer)."""

    def __init__(self):
        self._layers = OrderedDict()
        super().__init__()
        self.config = None  # set by model builders: {"model": ..., "kwargs": {...}}
        self.outputs = {}

    # -- addressing ----------------------------------------------------------------
    @property
    def names(self):
        """Names of the direct children, in the order they were added."""
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

    def _child(self, name):
        if name not in self._layers:
            raise ValueError(f"unknown layer {name!r}; valid names: {', '.join(self._layers)}")
        return self._layers[name]

    def _split(self, path):
        """(head, rest) of a dotted path, checked: the head is a child and the rest,
        if any, a path inside it."""
        head, rest = split_path(path)
        child = self._child(head)
        if rest is not None:
            if not is_container(child):
                raise ValueError(f"unknown layer {path!r}: {head!r} is a "
                                 f"{type(child).__name__}, which holds no layers")
            try:
                child._split(rest)
            except ValueError:
                valid = [f"{head}.{n}" for n, _ in child.named_layers(leaves=False)]
                raise ValueError(f"unknown layer {path!r}; valid names under {head!r}: "
                                 f"{', '.join(valid)}") from None
        return head, rest

    def index(self, name):
        """Position among ``names`` of the child called ``name`` (for a dotted path: of the
        child holding it); ValueError listing the valid names."""
        head, _ = self._split(name)
        return self.names.index(head)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.layers[key]
        return self.resolve(key)

    def resolve(self, path):
        """The layer at a dotted ``path``; ValueError listing the valid names."""
        head, rest = self._split(path)
        child = self._layers[head]
        return child if rest is None else child.resolve(rest)

    def named_layers(self, leaves=True):
        """(dotted path, layer) of every layer inside, in running order; with
        ``leaves=False`` the containers are listed too (before their contents)."""
        out = []
        for name, layer in self._ordered_children():
            if is_container(layer):
                if not leaves:
                    out.append((name, layer))
                out += [(f"{name}.{sub}", inner) for sub, inner in layer.named_layers(leaves)]
            else:
                out.append((name, layer))
        return out

    def _ordered_children(self):
        return list(self._layers.items())

    # -- parameters, gradients and buffers ------------------------------------------
    def _gather(self, attribute):
        return {f"{name}.{key}": value for name, layer in self._layers.items()
                for key, value in getattr(layer, attribute).items()}

    @property
    def params(self):
        """Live parameter arrays under dotted names: {"conv1.W": ..., "layer1.0.bn1.gamma": ...}."""
        return self._gather("params")

    @params.setter
    def params(self, value):  # Layer.__init__ assigns {}; parameters live in the layers
        if value:
            self.load_state_dict(value, strict=False)

    @property
    def grads(self):
        return self._gather("grads")

    @grads.setter
    def grads(self, value):
        if not value:  # Layer.__init__ assigns {} before the layers exist
            for layer in self._layers.values():
                layer.grads = {}

    @property
    def buffers(self):
        """Live buffers (state that is not trained) under dotted names."""
        return self._gather("buffers")

    @buffers.setter
    def buffers(self, value):
        if value:
            self.load_state_dict(value, strict=False)

    def state_dict(self):
        """Parameters and buffers under dotted names (the live arrays)."""
        return {**self.params, **self.buffers}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters and buffers, checking names and shapes first
        (nothing changes when anything is off)."""
        own = self.state_dict()
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
                path, entry = key.rsplit(".", 1)
                layer = self.resolve(path)
                store = layer.params if entry in layer.params else layer.buffers
                store[entry] = _like(value, store[entry])

    def num_params(self):
        return int(sum(v.size for v in self.params.values()))

    def lock_weights(self):
        """Lock every layer's parameters (:meth:`Layer.lock_weights`); returns self."""
        for layer in self._layers.values():
            layer.lock_weights()
        return self

    def unlock_weights(self):
        for layer in self._layers.values():
            layer.unlock_weights()
        return self

    # -- caches, devices, dtypes -----------------------------------------------------
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

    def _mutates_input(self):
        return False

    # -- running children --------------------------------------------------------------
    @staticmethod
    def _forward_child(name, layer, x, train, until=None, record=(), relu=False, out=None):
        try:
            if is_container(layer):
                return layer.forward(x, train=train, until=until, record=record)
            if out is not None:  # the slice of a concatenation's output this layer feeds
                return layer.forward(x, train=train, relu=relu, out=out)
            if relu:  # a ReLU that only this layer's output feeds, fused into it
                return layer.forward(x, train=train, relu=True)
            return layer.forward(x, train=train)
        except ValueError as error:
            raise in_layer(name, layer, error) from None

    @staticmethod
    def _backward_child(name, layer, dy, rule, param_grads, input_grad, release, start=None,
                        stop=None, extra=None):
        try:
            if is_container(layer):
                return layer.backward(dy, rule=rule, start=start, stop=stop,
                                      param_grads=param_grads, release=release,
                                      input_grad=input_grad, extra=extra)
            return layer.backward(dy, rule=rule, param_grads=param_grads, input_grad=input_grad)
        except ValueError as error:
            raise in_layer(name, layer, error) from None
        finally:
            if release:
                layer.clear_cache()

    def _collect(self, name, layer, value, record):
        """Keep the output of child ``name`` (and what it recorded inside) in ``outputs``."""
        if name in record:
            self.outputs[name] = value
        if is_container(layer):
            for sub, inner in layer.outputs.items():
                self.outputs[f"{name}.{sub}"] = inner

    def _sub_record(self, name, record):
        """The paths of ``record`` that lie inside child ``name``, relative to it."""
        return tuple(path[len(name) + 1:] for path in record if path.startswith(name + "."))


def _like(value, reference):
    """``value`` as an array of the same module and dtype as ``reference`` (a copy)."""
    xp = get_array_module(reference)
    return xp.array(value, dtype=reference.dtype)
