"""Checkpoints: one ``.npz`` file, written atomically, read without pickle.

Layout of the archive (every entry a plain array):

    meta.json          uint8 bytes of a JSON document: format, version, the model
                       config {"model": ..., "kwargs": {...}}, epoch, best validation
                       error, optimiser scalars, schedule state, the states of the
                       random generators (each Dropout layer's and the data loader's),
                       the training history and free-form ``extra`` settings
    param/<name>       parameters under dotted names, e.g. param/conv1.W
    velocity/<name>    the optimiser's momentum buffers
    array/<name>       other arrays (e.g. array/mean_image for ZF preprocessing)

The file is written to a temporary name beside the target, flushed to disk
and renamed over it, so a write that dies half-way never replaces the last
good checkpoint.
"""
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..backend import to_device

FORMAT, VERSION = "minconv-checkpoint", 1


def generator_states(net):
    """{layer name: bit-generator state} of every layer that draws random numbers (Dropout)."""
    return {name: layer.rng.bit_generator.state for name, layer in net.items()
            if isinstance(getattr(layer, "rng", None), np.random.Generator)}


def set_generator_states(net, states):
    for name, state in states.items():
        net[name].rng.bit_generator.state = state


def _host(a):
    return np.ascontiguousarray(to_device(a, "cpu"))


def save_checkpoint(path, net, optimizer=None, schedule=None, epoch=0, best_val_error=None,
                    generators=None, history=None, extra=None, arrays=None):
    """Write ``net`` and the training state to ``path`` atomically; returns ``path``.

    generators : {name: numpy Generator} saved beside the net's own (e.g. {"data": loader.rng})
    extra      : JSON-able settings to keep (data preprocessing, command-line arguments)
    arrays     : {name: array} stored as ``array/<name>``
    """
    path = os.fspath(path)
    meta = {"format": FORMAT, "version": VERSION, "config": getattr(net, "config", None),
            "epoch": int(epoch), "best_val_error": best_val_error,
            "optimizer": None, "schedule": None if schedule is None else schedule.state_dict(),
            "rng": {"layers": generator_states(net),
                    "extra": {k: g.bit_generator.state for k, g in (generators or {}).items()}},
            "history": list(history or []), "extra": dict(extra or {})}
    entries = {f"param/{k}": _host(v) for k, v in net.params.items()}
    if optimizer is not None:
        scalars, buffers = optimizer.state_dict()
        meta["optimizer"] = scalars
        entries.update({f"velocity/{k}": _host(v) for k, v in buffers.items()})
    entries.update({f"array/{k}": _host(v) for k, v in (arrays or {}).items()})
    entries["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
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
        """Put the saved optimiser, schedule and generator states back into live objects."""
        if optimizer is not None and self.meta["optimizer"] is not None:
            optimizer.load_state_dict(self.meta["optimizer"], self.velocity)
        if schedule is not None and self.meta["schedule"] is not None:
            schedule.load_state_dict(self.meta["schedule"])
        set_generator_states(self.net, self.meta["rng"]["layers"])
        saved = self.meta["rng"]["extra"]
        for name, generator in (generators or {}).items():
            if name not in saved:
                raise ValueError(f"{self.path}: no saved state for generator {name!r}")
            generator.bit_generator.state = saved[name]


def _read_all(path):
    """Every entry of the archive, read now (a truncated file fails here, not later)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable minconv checkpoint (corrupt or truncated: "
                         f"{error})") from None


def load_checkpoint(path, net=None, device=None):
    """Read a checkpoint; rebuild the net from its config unless ``net`` is given.

    Returns a :class:`Checkpoint`. A missing file is FileNotFoundError; a corrupt,
    truncated or incomplete one (missing keys, shapes that do not fit) a ValueError
    naming the file.
    """
    from .. import models
    path = os.fspath(path)
    entries = _read_all(path)
    if "meta.json" not in entries:
        raise ValueError(f"{path}: not a minconv checkpoint (no meta.json entry)")
    try:
        meta = json.loads(entries.pop("meta.json").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: corrupt meta.json ({error})") from None
    required = ("format", "version", "config", "epoch", "best_val_error", "optimizer",
                "schedule", "rng", "history", "extra")
    missing = [key for key in required if key not in meta]
    if meta.get("format") != FORMAT or missing:
        raise ValueError(f"{path}: not a minconv checkpoint (format {meta.get('format')!r}, "
                         f"missing keys {missing})")
    if meta["version"] > VERSION:
        raise ValueError(f"{path}: checkpoint version {meta['version']} is newer than this "
                         f"minconv reads ({VERSION})")
    groups = {"param": {}, "velocity": {}, "array": {}}
    for key, value in entries.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise ValueError(f"{path}: unexpected entry {key!r}")
        groups[group][name] = value
    if net is None:
        config = meta["config"]
        if not config or "model" not in config:
            raise ValueError(f"{path}: the checkpoint has no model config; pass net=")
        net = models.build(config["model"], **config.get("kwargs", {}))
    try:
        net.load_state_dict(groups["param"])
    except ValueError as error:
        raise ValueError(f"{path}: parameters do not fit the net: {error}") from None
    if device is not None:
        net.to(device)
    return Checkpoint(path=path, net=net, meta=meta, velocity=groups["velocity"],
                      arrays=groups["array"])
