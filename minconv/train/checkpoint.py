"""Checkpoints: one ``.npz`` file, written atomically, read without pickle and within bounds.

Layout of the archive (every entry a plain array):

    meta.json          uint8 bytes of a JSON document: format, version, the model
                       config {"model": ..., "kwargs": {...}}, epoch, best validation
                       error, optimiser scalars, schedule state, the states of the
                       random generators (each Dropout layer's and the data loader's),
                       the training history and free-form ``extra`` settings
    param/<name>       parameters under dotted names, e.g. param/conv1.W, and buffers
                       (BatchNorm's running statistics, param/bn1.running_mean)
    velocity/<name>    the optimiser's momentum buffers
    array/<name>       other arrays (e.g. array/mean_image for ZF preprocessing)

Writing: every parameter, buffer and array must be finite (a diverged state is
never saved); the file is written to a temporary name beside the target, flushed
to disk and renamed over it, so a write that dies half-way never replaces the
last good checkpoint.

Reading trusts nothing in the file. Only a regular file is opened (never a FIFO
or a device). Before anything is inflated or allocated, the zip directory and
each entry's ``.npy`` header are checked: only the entries above, plain numeric
dtypes, sizes that agree with the header, ``meta.json`` at most
``MAX_META_BYTES``, every other entry at most the size the config implies (the
net is first built with shapes only, see :func:`minconv.nn.shapes_only`), and
the whole at most ``MAX_CHECKPOINT_BYTES``. Every ``meta.json`` field is checked
against its schema; any failure is a ValueError naming the file and the field.
"""
import copy
import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..backend import to_device

FORMAT, VERSION = "minconv-checkpoint", 1
MAX_META_BYTES = 64 << 20                 # the history of a very long run fits many times
MAX_ARRAY_BYTES = 1 << 30                 # array/<name>: a mean image is 0.8 MB
MAX_CHECKPOINT_BYTES = int(os.environ.get("MINCONV_MAX_CHECKPOINT_BYTES", 16 << 30))
GROUPS = ("param", "velocity", "array")


def generator_states(net):
    """{layer name: bit-generator state} of every layer that draws random numbers (Dropout)."""
    return {name: layer.rng.bit_generator.state for name, layer in net.named_layers()
            if isinstance(getattr(layer, "rng", None), np.random.Generator)}


def set_generator_states(net, states):
    for name, state in states.items():
        net[name].rng.bit_generator.state = state


def _host(a):
    return np.ascontiguousarray(to_device(a, "cpu"))


def _non_finite(entries):
    """Names of the float arrays in ``entries`` that hold NaN or infinity."""
    return [name for name, a in entries.items()
            if a.dtype.kind == "f" and not np.isfinite(a).all()]


def save_checkpoint(path, net, optimizer=None, schedule=None, epoch=0, best_val_error=None,
                    generators=None, history=None, extra=None, arrays=None):
    """Write ``net`` and the training state to ``path`` atomically; returns ``path``.

    generators : {name: numpy Generator} saved beside the net's own (e.g. {"data": loader.rng})
    extra      : JSON-able settings to keep (data preprocessing, command-line arguments)
    arrays     : {name: array} stored as ``array/<name>``

    A parameter, buffer or array holding NaN or infinity, or a non-finite
    ``best_val_error``, is a ValueError and nothing is written.
    """
    path = os.fspath(path)
    if best_val_error is not None and not math.isfinite(best_val_error):
        raise ValueError(f"{path}: not saved: best_val_error is {best_val_error}")
    meta = {"format": FORMAT, "version": VERSION, "config": getattr(net, "config", None),
            "epoch": int(epoch), "best_val_error": best_val_error,
            "optimizer": None, "schedule": None if schedule is None else schedule.state_dict(),
            "rng": {"layers": generator_states(net),
                    "extra": {k: g.bit_generator.state for k, g in (generators or {}).items()}},
            "history": list(history or []), "extra": dict(extra or {})}
    entries = {f"param/{k}": _host(v) for k, v in net.state_dict().items()}  # and buffers
    if optimizer is not None:
        scalars, buffers = optimizer.state_dict()
        meta["optimizer"] = scalars
        entries.update({f"velocity/{k}": _host(v) for k, v in buffers.items()})
    entries.update({f"array/{k}": _host(v) for k, v in (arrays or {}).items()})
    bad = _non_finite(entries)
    if bad:
        raise ValueError(f"{path}: not saved: {', '.join(bad[:5])}"
                         f"{' and more' if len(bad) > 5 else ''} hold NaN or infinity")
    # allow_nan=False: the file stays strict JSON that any reader accepts
    entries["meta.json"] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(),
                                         dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:  # KeyboardInterrupt too: never leave the half-written file
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: the rebuilt net and the saved state."""
    path: str
    net: object
    meta: dict
    velocity: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    @property
    def epoch(self):
        return self.meta["epoch"]

    @property
    def best_val_error(self):
        return self.meta["best_val_error"]

    @property
    def history(self):
        return self.meta["history"]

    @property
    def extra(self):
        return self.meta["extra"]

    def restore(self, optimizer=None, schedule=None, generators=None):
        """Put the saved optimiser, schedule and generator states back into live objects.

        The optimiser state must be complete: after the first step, momentum SGD
        needs a buffer for every parameter it trains, with that parameter's shape
        and dtype (anything else would resume silently, not bit-identically).
        """
        if optimizer is not None and self.meta["optimizer"] is not None:
            _check_velocity(self.path, optimizer, self.meta["optimizer"], self.velocity)
            optimizer.load_state_dict(self.meta["optimizer"], self.velocity)
        if schedule is not None and self.meta["schedule"] is not None:
            try:
                schedule.load_state_dict(self.meta["schedule"])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{self.path}: meta.json field schedule: {error}") from None
        try:
            set_generator_states(self.net, self.meta["rng"]["layers"])
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{self.path}: meta.json field rng.layers: {error}") from None
        saved = self.meta["rng"]["extra"]
        for name, generator in (generators or {}).items():
            if name not in saved:
                raise ValueError(f"{self.path}: no saved state for generator {name!r}")
            try:
                generator.bit_generator.state = saved[name]
            except (TypeError, ValueError, KeyError) as error:
                raise ValueError(f"{self.path}: meta.json field rng.extra.{name}: "
                                 f"{error}") from None


def _check_velocity(path, optimizer, scalars, buffers):
    """Every parameter the optimiser trains has its momentum buffer (after step 1), each of
    the parameter's shape and dtype, and no buffer is left over."""
    params = optimizer.net.params
    planned = copy.copy(optimizer)  # which parameters the saved settings train, as SGD sees it
    planned.frozen, planned.lr_mult = list(scalars["frozen"]), dict(scalars["lr_mult"])
    needed = planned.trainable if scalars["momentum"] and scalars["steps"] > 0 else []
    missing = [k for k in needed if k not in buffers]
    unexpected = [k for k in buffers if k not in params]
    if missing or unexpected:
        raise ValueError(f"{path}: optimiser state incomplete: momentum buffers missing "
                         f"{missing}, unexpected {unexpected}")
    for name, value in buffers.items():
        p = params[name]
        if tuple(value.shape) != tuple(p.shape) or value.dtype != p.dtype:
            raise ValueError(f"{path}: momentum buffer {name} is {value.dtype} "
                             f"{tuple(value.shape)}, the parameter {p.dtype} {tuple(p.shape)}")


# ------------------------------------------------------------------ reading, within bounds

def _open_regular(path):
    """Open ``path`` for reading only if it is a regular file (a FIFO would block forever,
    a device never end)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: not a regular file (a directory, FIFO or device); "
                         "a checkpoint is a .npz file")
    return open(path, "rb")


def _npy_header(f, where):
    """(shape, dtype, fortran, header bytes) of an .npy stream, checked: plain numbers only."""
    try:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"npy format version {version}")
        shape, fortran, dtype = reader(f, max_header_size=10000)
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as error:
        raise ValueError(f"{where}: bad .npy header ({error})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biuf":
        raise ValueError(f"{where}: dtype {dtype} is not a plain numeric type")
    return tuple(int(s) for s in shape), dtype, fortran, f.tell()


def _read_entry(archive, info, shape, dtype, fortran, where):
    """The entry's array, read into one buffer of exactly the declared size."""
    out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = out.reshape(-1, order="A").view(np.uint8) if out.size else None
    try:
        with archive.open(info) as f:
            _npy_header(f, where)
            filled = 0
            while view is not None and filled < view.size:
                n = f.readinto(view[filled:])
                if not n:
                    break
                filled += n
            if (view is not None and filled < view.size) or f.read(1):
                raise ValueError("data do not match the declared shape")
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise ValueError(f"{where}: corrupt or truncated ({error})") from None
    return out


def _directory(path, archive):
    """{entry name without .npy: (ZipInfo, shape, dtype, fortran)} after the header checks."""
    entries, total = {}, 0
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else None
        group, _, rest = (name or "").partition("/")
        if name is None or (name != "meta.json" and (group not in GROUPS or not rest)):
            raise ValueError(f"{path}: unexpected entry {info.filename!r}")
        if name in entries:
            raise ValueError(f"{path}: entry {info.filename!r} appears twice")
        where = f"{path}: entry {name}"
        with archive.open(info) as f:
            shape, dtype, fortran, header = _npy_header(f, where)
        nbytes = math.prod(shape) * dtype.itemsize
        if header + nbytes != info.file_size:
            raise ValueError(f"{where}: header declares {dtype} {shape} ({nbytes} bytes) but "
                             f"the entry holds {info.file_size - header}")
        total += nbytes
        if total > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"{path}: entries add up to more than {MAX_CHECKPOINT_BYTES} "
                             "bytes (MINCONV_MAX_CHECKPOINT_BYTES)")
        entries[name] = (info, shape, dtype, fortran)
    return entries


def _read_meta(path, archive, entries):
    if "meta.json" not in entries:
        raise ValueError(f"{path}: not a minconv checkpoint (no meta.json entry)")
    info, shape, dtype, fortran = entries.pop("meta.json")
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
        raise ValueError(f"{path}: meta.json must be at most {MAX_META_BYTES} bytes of uint8, "
                         f"got {dtype} {shape}")
    raw = _read_entry(archive, info, shape, dtype, fortran, f"{path}: meta.json")
    try:
        meta = json.loads(raw.tobytes().decode(), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: corrupt meta.json ({error})") from None
    check_meta(meta, path)
    return meta


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def load_checkpoint(path, net=None, device=None):
    """Read a checkpoint; rebuild the net from its config unless ``net`` is given.

    Returns a :class:`Checkpoint`. A missing file is FileNotFoundError; anything
    else wrong (not a regular file, corrupt or truncated, unexpected or oversized
    entries, a malformed ``meta.json`` field, parameters that do not fit, values
    that are not finite) a ValueError naming the file.
    """
    from .. import models
    from ..nn import shapes_only
    path = os.fspath(path)
    with _open_regular(path) as handle:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise ValueError(f"{path}: not a readable minconv checkpoint (corrupt or "
                             f"truncated: {error})") from None
        with archive:
            entries = _directory(path, archive)
            meta = _read_meta(path, archive, entries)
            if net is None:
                config = meta["config"]
                if not config:
                    raise ValueError(f"{path}: the checkpoint has no model config; pass net=")
                try:
                    with shapes_only():  # the shapes the config implies, nothing allocated
                        net = models.build(config["model"], **config["kwargs"])
                except (TypeError, ValueError, OverflowError) as error:
                    raise ValueError(f"{path}: meta.json field config: {error}") from None
            expected = {name: (tuple(v.shape), v.dtype) for name, v in net.state_dict().items()}
            size = sum(math.prod(s) * np.dtype(d).itemsize for s, d in expected.values())
            if size > MAX_CHECKPOINT_BYTES:
                raise ValueError(f"{path}: meta.json field config: the model has {size} bytes "
                                 f"of parameters, over the cap of {MAX_CHECKPOINT_BYTES}")
            groups = {group: {} for group in GROUPS}
            for key, (info, shape, dtype, fortran) in entries.items():
                group, _, name = key.partition("/")
                where = f"{path}: entry {key}"
                if group in ("param", "velocity"):
                    if name not in expected:
                        raise ValueError(f"{path}: parameters do not fit the net: {key} is "
                                         f"not a parameter of {_model_name(net)}")
                    if shape != expected[name][0]:
                        raise ValueError(f"{path}: parameters do not fit the net: {key} has "
                                         f"shape {shape}, the net expects {expected[name][0]}")
                    if dtype.kind != "f":
                        raise ValueError(f"{where}: dtype {dtype}, expected floats")
                elif math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
                    raise ValueError(f"{where}: {dtype} {shape} is over {MAX_ARRAY_BYTES} bytes")
                value = _read_entry(archive, info, shape, dtype, fortran, where)
                if dtype.kind == "f" and not np.isfinite(value).all():
                    raise ValueError(f"{where}: holds NaN or infinity")
                groups[group][name] = value
    try:
        net.load_state_dict(groups["param"])
    except ValueError as error:
        raise ValueError(f"{path}: parameters do not fit the net: {error}") from None
    if device is not None:
        net.to(device)
    return Checkpoint(path=path, net=net, meta=meta, velocity=groups["velocity"],
                      arrays=groups["array"])


def _model_name(net):
    config = getattr(net, "config", None) or {}
    return config.get("model", "the net")


# ------------------------------------------------------------------ meta.json schema

def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _kind(check, text):
    check.text = text
    return check


NUMBER = _kind(_number, "a finite number")
COUNT = _kind(_count, "an integer >= 0")
TEXT = _kind(lambda v: isinstance(v, str), "a string")
OBJECT = _kind(lambda v: isinstance(v, dict), "an object")
LIST = _kind(lambda v: isinstance(v, list), "a list")
OPTIONAL_NUMBER = _kind(lambda v: v is None or _number(v), "null or a finite number")
OBJECT_OR_NULL = _kind(lambda v: v is None or isinstance(v, dict), "null or an object")

SCHEMA = {
    "format": TEXT, "version": COUNT, "config": OBJECT_OR_NULL, "epoch": COUNT,
    "best_val_error": OPTIONAL_NUMBER, "optimizer": OBJECT_OR_NULL,
    "schedule": OBJECT_OR_NULL, "rng": OBJECT, "history": LIST, "extra": OBJECT,
}
CONFIG = {"model": TEXT, "kwargs": OBJECT}
OPTIMIZER = {"lr": NUMBER, "momentum": NUMBER, "weight_decay": NUMBER, "lr_mult": OBJECT,
             "frozen": LIST, "renorm_radius": OPTIONAL_NUMBER, "steps": COUNT}
RNG = {"layers": OBJECT, "extra": OBJECT}


def _fields(path, where, value, schema):
    for key, check in schema.items():
        name = f"{where}{key}"
        if key not in value:
            raise ValueError(f"{path}: meta.json field {name} is missing")
        if not check(value[key]):
            raise ValueError(f"{path}: meta.json field {name} must be {check.text}, got "
                             f"{json.dumps(value[key])[:80]}")


def check_meta(meta, path="checkpoint"):
    """Raise ValueError naming the first field of ``meta`` that does not fit the schema."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta.json must be an object")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a minconv checkpoint (format {meta.get('format')!r})")
    _fields(path, "", meta, SCHEMA)
    if meta["version"] > VERSION:
        raise ValueError(f"{path}: checkpoint version {meta['version']} is newer than this "
                         f"minconv reads ({VERSION})")
    if meta["config"] is not None:
        _fields(path, "config.", meta["config"], CONFIG)
    optimizer = meta["optimizer"]
    if optimizer is not None:
        _fields(path, "optimizer.", optimizer, OPTIMIZER)
        if not all(isinstance(k, str) and _number(v) for k, v in optimizer["lr_mult"].items()):
            raise ValueError(f"{path}: meta.json field optimizer.lr_mult must map layer names "
                             "to finite numbers")
        if not all(isinstance(k, str) for k in optimizer["frozen"]):
            raise ValueError(f"{path}: meta.json field optimizer.frozen must list layer names")
    if meta["schedule"] is not None and not isinstance(meta["schedule"].get("kind"), str):
        raise ValueError(f"{path}: meta.json field schedule.kind must be a string")
    _fields(path, "rng.", meta["rng"], RNG)
    for group in ("layers", "extra"):
        if not all(isinstance(v, dict) for v in meta["rng"][group].values()):
            raise ValueError(f"{path}: meta.json field rng.{group} must map names to "
                             "generator states (objects)")
    if not all(isinstance(r, dict) for r in meta["history"]):
        raise ValueError(f"{path}: meta.json field history must be a list of objects")
    return meta
