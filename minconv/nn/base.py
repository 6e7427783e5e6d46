"""The layer protocol shared by every stateful layer and by Sequential.

A layer holds its parameters in ``params`` (name -> array), state that is not
trained in ``buffers`` (BatchNorm's running statistics) and, after
``backward``, their gradients in ``grads`` (same keys, overwritten at each
call). ``backward(dy, rule, param_grads, input_grad)`` can skip either
gradient: the visualisations need only dx, a training step's lowest layer
only its parameter gradients. ``forward(x, train)`` keeps what the backward pass needs; ``backward``
without a preceding ``forward`` is an error that names the layer.

Every layer remembers the shape and dtype of what its last ``forward`` returned,
and its ``backward`` refuses a ``dy`` of another shape or dtype (a gradient of
the wrong dtype would otherwise change the dtype of every gradient below it).
Subclasses get this without doing anything (``__init_subclass__`` wraps their
``forward`` and ``backward``). Containers, whose ``backward`` takes ``start=``
(the layer ``dy`` belongs to), leave the check to the layer that receives ``dy``.
"""
import abc
import contextlib
import functools
import inspect

import numpy as np

from ..backend import get_array_module, to_device
from ..functional import prepared

_DEFAULT_RNG = [np.random.default_rng(0)]


def set_seed(seed):
    """Seed the generator that initialises weights and drives dropout by default."""
    _DEFAULT_RNG[0] = np.random.default_rng(seed)


def default_rng():
    return _DEFAULT_RNG[0]


class _ShapeOnly(np.ndarray):
    """One zero seen through zero strides: the shape and dtype of a parameter, no memory.
    In-place scaling (``weights *= std``) leaves it as it is instead of copying it out."""

    def _same(self, other):
        return self

    __imul__ = __iadd__ = __isub__ = __itruediv__ = _same


class _NoDraws:
    """Stands in for the default generator while :func:`shapes_only` is active: each
    "draw" is a :class:`_ShapeOnly` array, so no parameter memory is allocated."""

    def __init__(self, real):
        self.real = real

    def standard_normal(self, size=None, dtype=np.float64):
        shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size or ())
        zero = np.zeros(1, dtype)
        return np.lib.stride_tricks.as_strided(zero, shape, (0,) * len(shape)).view(_ShapeOnly)

    def integers(self, *args, **kwargs):  # Dropout's seed: the real generator is not advanced
        return 0

    def __getattr__(self, name):
        return getattr(self.real, name)


@contextlib.contextmanager
def shapes_only():
    """Build nets inside this block to learn their parameter shapes without allocating them.

    Parameters initialised from the default generator come out as zero-stride views
    of a single zero (sizes and shapes right, memory none), until ``load_state_dict``
    replaces them with real arrays. Checkpoint loading uses it to bound what a file may
    make it allocate by what the config it claims implies.
    """
    real = _DEFAULT_RNG[0]
    _DEFAULT_RNG[0] = _NoDraws(real)
    try:
        yield
    finally:
        _DEFAULT_RNG[0] = real


class Unformed:
    """A layer's output that a fused forward pass never formed (a convolution pooled band
    by band, see :class:`~minconv.nn.Graph`): it has the output's ``shape`` and ``dtype``,
    and :func:`formed` computes it, once, the first time a backward pass needs it."""

    def __init__(self, compute, shape, dtype):
        self._compute = compute
        self._value = None
        self.shape, self.dtype = tuple(shape), dtype

    def value(self):
        if self._value is None:
            self._value = self._compute()
            self._compute = None
        return self._value


def formed(value):
    """``value``, or the array an :class:`Unformed` stands for."""
    return value.value() if isinstance(value, Unformed) else value


def remembers_output(forward):
    """``forward`` that keeps its output's (shape, dtype), against which the backward
    pass checks dy (every layer's ``forward``, wrapped by ``Layer.__init_subclass__``)."""
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        y = forward(self, *args, **kwargs)
        self._output_spec = (tuple(y.shape), y.dtype) if hasattr(y, "dtype") and \
            hasattr(y, "shape") else None
        return y
    return wrapper


def _checks_dy(backward):
    @functools.wraps(backward)
    def wrapper(self, dy=None, *args, **kwargs):
        spec = getattr(self, "_output_spec", None)
        if spec is not None and dy is not None:
            shape, dtype = spec
            if not hasattr(dy, "dtype") or tuple(dy.shape) != shape or dy.dtype != dtype:
                got = f"{dy.dtype} {tuple(dy.shape)}" if hasattr(dy, "dtype") else \
                    type(dy).__name__
                raise ValueError(f"{self._label()}: dy is {got}, expected {dtype} {shape} "
                                 "(the shape and dtype of the layer's output)")
        return backward(self, dy, *args, **kwargs)
    return wrapper


class Layer(abc.ABC):
    """Base class: parameters, gradients, a name, and the forward/backward protocol."""

    # True where forward(x, train, relu=True) returns max(y, 0) from the layer's own pass
    # (Conv2D, BatchNorm2D, Add): a Graph then fuses a ReLU that alone reads its output
    fuses_relu = False
    # True where forward(x, train, out=a) writes the output into ``a`` (Conv2D): a Graph
    # then hands it the slice of a concatenation's output that it alone feeds
    writes_into = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}  # state that is not trained (BatchNorm's running statistics)
        self.name = None
        self._cache = None
        self._output_spec = None  # (shape, dtype) of the last forward's output

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = remembers_output(cls.__dict__["forward"])
        backward = cls.__dict__.get("backward")
        if backward is not None and "start" not in inspect.signature(backward).parameters:
            cls.backward = _checks_dy(backward)

    # -- protocol ------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x, train=False):
        """y = layer(x); keeps what ``backward`` needs."""

    @abc.abstractmethod
    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        """dx from dy under ``rule``.

        param_grads : fill ``grads`` too (default: only under rule "grad")
        input_grad  : False skips dx and returns None (the lowest layer of a training step)
        """

    def __call__(self, x, train=False):
        return self.forward(x, train=train)

    # -- helpers for subclasses ----------------------------------------------
    def _label(self):
        kind = type(self).__name__
        return f"{self.name} ({kind})" if self.name else kind

    def _saved(self):
        """The forward cache, or a clear error when backward comes first."""
        if self._cache is None:
            raise ValueError(f"{self._label()}: backward called before forward")
        return self._cache

    def _wants_param_grads(self, rule, param_grads):
        """Whether this backward pass computes parameter gradients. When it does, the
        last pass's are dropped first: the new ones replace them anyway, and a step then
        never holds both (VGG-16's fc6 gradient alone is 411 MB)."""
        wanted = rule == "grad" if param_grads is None else bool(param_grads)
        if wanted:
            self.grads.clear()
        return wanted

    def clear_cache(self):
        """Forget what the last forward kept (frees its activations)."""
        self._cache = None
        self._output_spec = None

    # -- locked weights ----------------------------------------------------------
    def lock_weights(self):
        """Make the parameters read-only, so that the fast paths keep what they derive
        from them (the tiles' tap-major weights, Winograd's transformed filters: see
        :mod:`minconv.functional.prepared`) instead of deriving it on every call, as an
        inference runtime does. Writing to a locked parameter raises NumPy's read-only
        error and the optimizers refuse them; ``load_state_dict`` puts new, unlocked
        arrays in their place. A parameter that is a view of another array is copied
        first. Returns self."""
        for key, value in self.params.items():
            if isinstance(value, np.ndarray):
                if not prepared.lockable(value):
                    value = self.params[key] = value.copy()
                prepared.lock(value)
        return self

    def unlock_weights(self):
        """Undo :meth:`lock_weights`: the parameters writable, what was kept dropped."""
        for value in self.params.values():
            prepared.unlock(value)
        return self

    # -- devices and dtypes ----------------------------------------------------
    def to(self, device):
        """Move parameters (and gradients) to ``device`` in place; returns self."""
        self.params = to_device(self.params, device)
        self.grads = to_device(self.grads, device)
        self.buffers = to_device(self.buffers, device)
        self._cache = None
        return self

    def astype(self, dtype):
        """Cast parameters to ``dtype`` in place (e.g. float64 for gradient checks); returns self."""
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        self.buffers = {k: v.astype(dtype) for k, v in self.buffers.items()}
        self.grads = {}
        self._cache = None
        return self

    @property
    def device(self):
        for value in self.params.values():
            return "cuda" if get_array_module(value) is not np else "cpu"
        return None

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
