"""The gradient all-reduce of data-parallel training, in buckets, optionally overlapped.

:class:`GradientReducer` wraps the ``backward`` of every layer that has
parameters. When a layer has computed its gradients, they join the current
bucket (scaled by this rank's weight b_r/B, see :mod:`minconv.distributed`)
until it holds ``bucket_bytes`` or more. With ``overlap``, a full bucket starts a
non-blocking sum over the ranks at once (``Iallreduce``, moved on by a test after
every layer), so the last layers' gradients, the first to be ready, travel while
the earlier layers are still being differentiated. Without it, :meth:`finish`
sums the buckets one after the other with the blocking ``Allreduce``, under the
communicator's deadline: on one machine Open MPI's blocking algorithm is about
twice as fast as its non-blocking one (250 MB: 0.25 s against 0.5 s on two
cores), and a rank has no spare core to move a sum while it computes, so that is
the default on the CPU (``MINCONV_MPI_OVERLAP=1`` turns overlap on; worth it where
the network moves data by itself). :meth:`finish` writes the sums back into the
layers' gradient arrays, in place, before the optimiser reads them.

A gradient of a bucket's size or more is summed in its own array (no copy);
smaller ones are packed into a reused flat buffer. NumPy gradients go through
MPI; CuPy gradients through NCCL (``cupy.cuda.nccl``) on a stream of its own,
or, where NCCL cannot be set up, through MPI on host copies.

Buckets depend only on the order in which the layers finish, which is the same
on every rank. That order is kept after each step, so a rank whose share of a
short last batch is empty can still take part (:meth:`contribute_zeros`).
"""
import os
import time
import warnings

import numpy as np

from .backend import get_array_module


def param_layers(net, prefix=""):
    """[(dotted name, layer)] of the layers with parameters, at any depth of nesting."""
    found = []
    for name, layer in net.items():
        path = f"{prefix}{name}"
        if hasattr(layer, "items") and callable(layer.items):
            found += param_layers(layer, path + ".")
        elif layer.params:
            found.append((path, layer))
    return found


class _Bucket:
    """Gradients summed together: [(layer, key)], their flat buffer and the request."""

    def __init__(self, entries, buffer, request, in_place=False):
        self.entries, self.buffer, self.request = entries, buffer, request
        self.in_place = in_place


class GradientReducer:
    """Sum the weighted gradients of ``net`` over the ranks of ``comm`` (see the module doc).

    Per training step: ``begin(weight)``, the backward pass, then ``finish()``.
    """

    def __init__(self, comm, net, bucket_bytes, overlap=None):
        if overlap is None:
            overlap = os.environ.get("MINCONV_MPI_OVERLAP", "0") not in ("", "0")
        self.comm, self.bucket_bytes, self.overlap = comm, int(bucket_bytes), bool(overlap)
        self.layers = param_layers(net)
        if not self.layers:
            raise ValueError("GradientReducer: the net has no parameters")
        self.active, self.weight = False, 1.0
        self.order = None           # layer names in the order they finished, last step
        self._buffers, self._nccl = {}, None
        for name, layer in self.layers:
            self._hook(name, layer)

    # -- the hooks -------------------------------------------------------------------
    def _hook(self, name, layer):
        original = layer.backward

        def backward(*args, **kwargs):
            dx = original(*args, **kwargs)
            if self.active:
                self._arrived(name, layer)
            return dx

        layer.backward = backward  # an instance attribute: the class stays as it is

    def begin(self, weight):
        """A training step starts: its gradients will be scaled by ``weight`` = b_r / B."""
        self.active, self.weight = True, float(weight)
        self._current, self._bytes, self._pending, self._seen = [], 0, [], []
        self._closed = []           # full buckets not started yet (overlap off)

    def _arrived(self, name, layer):
        self._seen.append(name)
        for key, g in layer.grads.items():
            if self._current and (g.dtype != self._current[0][2].dtype
                                  or get_array_module(g) is not get_array_module(
                                      self._current[0][2])):
                self._close()
            self._current.append((layer, key, g))
            self._bytes += g.nbytes
            if self._bytes >= self.bucket_bytes:
                self._close()
        self._progress()

    def contribute_zeros(self):
        """Take part in this step with zero gradients (this rank has no images in it)."""
        if self.order is None:
            raise ValueError(f"rank {self.comm.rank} has no images in the first batch; use "
                             f"a batch size of at least the number of ranks ({self.comm.size})")
        by_name = dict(self.layers)
        for name in self.order:
            layer = by_name[name]
            xp = get_array_module(next(iter(layer.params.values())))
            layer.grads = {k: xp.zeros_like(w) for k, w in layer.params.items()}
            self._arrived(name, layer)

    def finish(self):
        """Wait for every bucket; the layers' ``grads`` then hold the weighted sums."""
        if not self.active:
            raise ValueError("GradientReducer.finish called without begin")
        if self._current:
            self._close()
        for entries in self._closed:  # without overlap, every bucket starts now
            self._launch(entries)
        for bucket in self._pending:
            self._complete(bucket)
        self.order, self.active, self._pending = self._seen, False, []

    # -- buckets ---------------------------------------------------------------------
    def _close(self):
        entries, self._current, self._bytes = self._current, [], 0
        if self.overlap:
            self._launch(entries)
        else:
            self._closed.append(entries)

    def _launch(self, entries):
        xp = get_array_module(entries[0][2])
        if xp is not np and self._nccl_ready():
            self._pending.append(self._launch_nccl(entries, xp))
            return
        g = entries[0][2]
        in_place = len(entries) == 1 and xp is np and g.flags.c_contiguous and g.flags.writeable
        if in_place:
            buffer = g.reshape(-1)                      # summed where it lies
            buffer *= g.dtype.type(self.weight)
        else:
            buffer = self._pack(entries, np)
        request = self.comm.comm.Iallreduce(self.comm.MPI.IN_PLACE, buffer,
                                            op=self.comm.MPI.SUM) if self.overlap else None
        self._pending.append(_Bucket(entries, buffer, request, in_place))

    def _pack(self, entries, xp):
        """The weighted gradients of ``entries`` in one flat buffer of module ``xp``
        (reused from step to step)."""
        sizes = [g.size for _, _, g in entries]
        dtype = entries[0][2].dtype
        # one buffer per bucket (two buckets may hold arrays of the same sizes)
        key = (xp.__name__, dtype.str) + tuple((id(layer), k, g.size) for layer, k, g in entries)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = xp.empty(sum(sizes), dtype=dtype)
        offset = 0
        w = dtype.type(self.weight)
        for (_, _, g), n in zip(entries, sizes):
            part = buffer[offset:offset + n]
            if xp is np and get_array_module(g) is not np:  # device gradients, host buffer
                part[...] = g.ravel().get()
                part *= w
            else:
                xp.multiply(g.reshape(-1), w, out=part)
            offset += n
        return buffer

    def _progress(self):
        """Let MPI move the buckets already started (it progresses inside its own calls)."""
        for bucket in self._pending:
            if bucket.request is not None and not isinstance(bucket.request, _NcclRequest):
                bucket.request.Test()

    def _complete(self, bucket):
        what = "the gradient all-reduce of " + ", ".join(
            f"{getattr(layer, 'name', '?')}.{key}" for layer, key, _ in bucket.entries[:3])
        if isinstance(bucket.request, _NcclRequest):
            bucket.request.wait(self.comm, what)
        elif bucket.request is None:  # blocking, under the watchdog's deadline
            MPI = self.comm.MPI
            self.comm.blocking(lambda: self.comm.comm.Allreduce(MPI.IN_PLACE, bucket.buffer,
                                                                op=MPI.SUM), what)
        else:
            self.comm._wait(bucket.request, what)
        if bucket.in_place:
            return
        offset = 0
        for layer, key, g in bucket.entries:
            n = g.size
            part = bucket.buffer[offset:offset + n]
            offset += n
            xg = get_array_module(g)
            if xg is get_array_module(part):
                g[...] = part.reshape(g.shape)
            else:  # host sums back onto the device
                g[...] = xg.asarray(part).reshape(g.shape)

    # -- NCCL --------------------------------------------------------------------------
    def _nccl_ready(self):
        """Set up NCCL once (collectively); False where it cannot be (then MPI on the host)."""
        if self._nccl is None:
            ok = np.array([1], np.int64)
            comm, error = None, None
            try:
                from cupy.cuda import nccl
                uid = np.zeros(128, np.int64)
                if self.comm.is_root:
                    uid[:] = nccl.get_unique_id()
                self.comm.bcast(uid, what="the NCCL id")
                comm = nccl.NcclCommunicator(self.comm.size, tuple(int(v) for v in uid),
                                             self.comm.rank)
            except Exception as failure:  # no NCCL in this CuPy, two ranks on one GPU, ...
                ok[0], error = 0, failure
            self.comm.allreduce(ok, "the NCCL set-up")
            if ok[0] < self.comm.size:
                if self.comm.is_root:
                    warnings.warn(f"NCCL unavailable ({error or 'on another rank'}): gradients "
                                  "are summed by MPI on host copies", RuntimeWarning)
                self._nccl = False
            else:
                import cupy
                self._nccl = (comm, nccl, cupy.cuda.Stream(non_blocking=True))
        return bool(self._nccl)

    def _launch_nccl(self, entries, cp):
        comm, nccl, stream = self._nccl
        buffer = self._pack(entries, cp)                  # on the compute stream
        ready = cp.cuda.Event()
        ready.record()
        stream.wait_event(ready)                           # NCCL starts once the pack is done
        kind = {np.dtype(np.float32): nccl.NCCL_FLOAT32,
                np.dtype(np.float64): nccl.NCCL_FLOAT64}[buffer.dtype]
        comm.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, kind, nccl.NCCL_SUM,
                       stream.ptr)
        return _Bucket(entries, buffer, _NcclRequest(stream))


class _NcclRequest:
    """An NCCL all-reduce in flight on ``stream``, waited for with the communicator's deadline."""

    def __init__(self, stream):
        self.stream = stream

    def wait(self, comm, what):
        deadline = time.monotonic() + comm.timeout
        while not self.stream.done:
            time.sleep(0.0002)
            if time.monotonic() > deadline:
                comm.abort(f"no answer from the other ranks after {comm.timeout:.0f} s in "
                           f"{what} (NCCL); stopping all ranks")
