"""The training loop of the paper: mini-batch SGD, annealing, checkpoints, logs.

One step on a batch (x, y):

    z = net(x)                        forward with dropout on
    L = -1/B sum_b log softmax(z_b)[y_b]
    dz = dL/dz, backward through the net down to the lowest trainable layer
    SGD update (and the conv filters' RMS renormalisation)

After each epoch the validation set is evaluated, the schedule hears its
top-1 error, a row goes to ``log.csv``/``log.json``, the curves are drawn to
``curves.png``, and the checkpoint ``last.npz`` is written (and copied to
``best.npz`` when the validation error is the lowest so far). Only finite states
are saved: a NaN or infinite loss at any step, parameters that are no longer
finite after the epoch's last update, or non-finite validation metrics stop
training with :class:`TrainingDiverged` before anything is written; its message
names the file that holds the last good state of this run (or says there is none).
"""
import csv
import json
import math
import os
import shutil
import time

from .. import runtime
from ..backend import get_array_module, to_device
from ..data import DataError
from ..nn import SoftmaxCrossEntropy
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import evaluate
from .schedule import Constant


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Trainer:
    """Train ``net`` with ``optimizer`` on batches of ``train_loader``.

    ``snapshot_every = K`` (an attribute) also keeps the checkpoint of every K-th epoch as
    ``out_dir/snapshots/epochNNN.npz``, for the feature-evolution figure.

    net          : a Sequential (e.g. from :mod:`minconv.models`)
    optimizer    : :class:`minconv.train.SGD` over the same net
    train_loader : iterable of (x (B, C, H, W) float32, y (B,) int64) with ``.rng`` and ``len``
    val_loader   : evaluated after every epoch (None: no validation)
    schedule     : learning-rate schedule (default: constant at ``optimizer.lr``)
    out_dir      : where checkpoints, logs and the plot go (None: nowhere)
    progress     : show a tqdm bar per epoch; verbose: print one line per epoch
    extra/arrays : settings and arrays kept in every checkpoint (data preprocessing, ...)
    comm         : a :mod:`minconv.distributed` communicator: train data-parallel over its
                   ranks with the same global batches (only rank 0 writes and prints)
    """

    def __init__(self, net, optimizer, train_loader, val_loader=None, schedule=None,
                 out_dir=None, progress=True, verbose=True, device=None, extra=None,
                 arrays=None, comm=None):
        self.net, self.optimizer = net, optimizer
        self.comm = comm if comm is not None and comm.size > 1 else None
        if self.comm is not None:  # each rank keeps its rows of every batch; rank 0's start
            train_loader = self.comm.shard_loader(train_loader)
            val_loader = self.comm.shard_loader(val_loader)
            self.reducer = self.comm.gradient_reducer(net)
            self.comm.broadcast_parameters(net, optimizer)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.schedule = schedule or Constant(optimizer.lr)
        self.out_dir, self.progress, self.verbose = out_dir, progress, verbose
        self.device = device or net.device or "cpu"
        if self.device == "cpu":
            runtime.configure(malloc="keep")  # every step allocates the same activations again
        self.extra, self.arrays = dict(extra or {}), dict(arrays or {})
        self.loss = SoftmaxCrossEntropy()
        self.epoch = 0                # epochs completed
        self.history = []
        self.best_val_error = None
        self.snapshot_every = None    # keep snapshots/epochNNN.npz every K epochs
        self.last_good = None         # the file holding this run's last good state
        self.replaces = []            # an old run's files, removed at this run's first write

    # -- one step -----------------------------------------------------------------
    def train_step(self, x, y, lr=None):
        """One SGD step on the batch (x, y); returns (loss, number of correct predictions)."""
        if lr is not None:
            self.optimizer.lr = lr
        x, y = to_device(x, self.device), to_device(y, self.device)
        if self.comm is not None and len(y) == 0:
            return self._empty_step()
        logits = self.net.forward(x, train=True)
        loss = self.loss.forward(logits, y)
        xp = get_array_module(logits)
        correct = int((xp.argmax(logits, axis=1) == y).sum())
        if self.comm is not None:  # the global batch's loss: a NaN on any rank stops them all
            loss, correct, total = self.comm.batch_totals(loss, correct, len(y))
            self.reducer.begin(len(y) / total)
        if not math.isfinite(loss):
            self.net.clear_cache()
            raise TrainingDiverged(f"loss is {loss}")
        lowest = self.optimizer.lowest_trainable_layer()
        if lowest is not None:
            # down to the lowest trainable layer only, freeing each layer's activations
            # as soon as it is done (ZFNet's peak memory is reached on the way down)
            self.net.backward(self.loss.backward(), stop=self.net.names[lowest], release=True)
        self.net.clear_cache()  # the activations go before the update allocates anything
        self.loss.clear_cache()
        if lowest is not None:
            if self.comm is not None:
                self.reducer.finish()  # the gradients summed over the ranks, weighted
            self.optimizer.step()
        return loss, correct

    def _empty_step(self):
        """Data-parallel: this rank has no rows of a short last batch; it adds zeros."""
        loss, correct, _ = self.comm.batch_totals(0.0, 0, 0)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss}")
        if self.optimizer.lowest_trainable_layer() is not None:
            self.reducer.begin(0.0)
            self.reducer.contribute_zeros()
            self.reducer.finish()
            self.optimizer.step()
        return loss, correct

    # -- one epoch ----------------------------------------------------------------
    def train_epoch(self, epochs=None):
        """Run one epoch over the training loader; returns its statistics."""
        epoch = self.epoch
        batches = len(self.train_loader)
        bar = None
        if self.progress:
            from tqdm import tqdm
            total = f"/{epochs}" if epochs else ""
            bar = tqdm(total=batches, desc=f"epoch {epoch + 1}{total}", unit="batch",
                       leave=True, dynamic_ncols=True)
        loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
        lr = self.optimizer.lr
        try:
            for step, (x, y) in enumerate(self.train_loader):
                lr = self.schedule.lr(epoch + step / batches)
                try:
                    loss, right = self.train_step(x, y, lr)
                except TrainingDiverged as error:
                    raise self._diverged(f"epoch {epoch + 1}, step {step + 1}/{batches}: "
                                         f"{error} (learning rate {lr:.3g})") from None
                count = len(y) if self.comm is None else self.comm.last_count
                loss_sum += loss * count
                correct += right
                seen += count
                if bar is not None:
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                    lr=f"{lr:.3g}", img_s=f"{rate:.0f}", refresh=False)
                    bar.update(1)
        except DataError as error:
            raise DataError(f"epoch {epoch + 1}: {error}") from None
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
        if seen == 0:
            raise ValueError("the training loader produced no batches")
        return {"train_loss": loss_sum / seen, "train_error": 1.0 - correct / seen, "lr": lr,
                "train_seconds": elapsed, "images_per_second": seen / elapsed}

    # -- the whole run ----------------------------------------------------------
    def fit(self, epochs):
        """Train until ``epochs`` epochs are done in all (a resumed run continues the count)."""
        while self.epoch < epochs:
            record = {"epoch": self.epoch + 1}
            record.update(self.train_epoch(epochs))
            self._check_finite_parameters()
            if self.val_loader is not None:
                start = time.perf_counter()
                val = evaluate(self.net, self.val_loader, device=self.device)
                if self.comm is not None:
                    val = self.comm.merge_evaluation(val)
                record.update(val_loss=val["loss"], val_top1_error=val["top1_error"],
                              val_top5_error=val["top5_error"],
                              eval_seconds=time.perf_counter() - start)
                bad = [k for k in ("loss", "top1_error", "top5_error")
                       if not math.isfinite(val[k])]
                if bad:
                    raise self._diverged(f"epoch {self.epoch + 1}: validation {bad[0]} is "
                                         f"{val[bad[0]]} after the epoch's last update")
            current = record.get("val_top1_error", record["train_error"])
            record["lr_lowered"] = bool(self.schedule.end_epoch(self.epoch, current))
            record["renormalized_filters"] = self.optimizer.renormalized
            skipped = self._skipped()
            if skipped:
                record["skipped_files"] = skipped
            improved = self.best_val_error is None or current < self.best_val_error
            if improved:
                self.best_val_error = current
            self.epoch += 1
            self.history.append(record)
            if self.comm is not None and not self.comm.is_root:
                continue  # rank 0 writes and prints for all
            if self.out_dir:
                self._write(improved)
            if self.verbose:
                print(self.describe(record), flush=True)
        return self.history

    @staticmethod
    def describe(record):
        parts = [f"epoch {record['epoch']}", f"train loss {record['train_loss']:.4f}",
                 f"train err {record['train_error']:.4f}"]
        if "val_top1_error" in record:
            parts += [f"val loss {record['val_loss']:.4f}",
                      f"val top-1 err {record['val_top1_error']:.4f}",
                      f"top-5 err {record['val_top5_error']:.4f}"]
        parts += [f"lr {record['lr']:.3g}", f"{record['images_per_second']:.0f} img/s"]
        if record.get("skipped_files"):
            parts.append(f"skipped {record['skipped_files']} bad files")
        return " | ".join(parts)

    def _skipped(self):
        total = 0
        for loader in (self.train_loader, self.val_loader):
            folder = getattr(loader, "folder", None)
            total += len(getattr(folder, "skipped", ()))
        return total

    # -- divergence -------------------------------------------------------------
    def _check_finite_parameters(self):
        """A TrainingDiverged when the last update left a parameter NaN or infinite."""
        for name, value in self.net.params.items():
            xp = get_array_module(value)
            if not bool(xp.isfinite(value).all()):
                raise self._diverged(f"epoch {self.epoch + 1}: parameter {name} is no longer "
                                     "finite after the epoch's last update")

    def _diverged(self, what):
        if self.last_good is not None and os.path.exists(self.last_good):
            kept = f"; the last good state is in {self.last_good} (epoch {self.epoch})"
        else:
            kept = "; no checkpoint of this run was written"
        return TrainingDiverged(f"training diverged at {what}{kept}. Lower the learning rate "
                                "or check the data.")

    # -- files ------------------------------------------------------------------
    def _last_path(self):
        return os.path.join(self.out_dir, "last.npz") if self.out_dir else None

    def save(self, path):
        """Write a checkpoint of the current state to ``path``."""
        return save_checkpoint(path, self.net, self.optimizer, self.schedule, epoch=self.epoch,
                               best_val_error=self.best_val_error,
                               generators={"data": self.train_loader.rng},
                               history=self.history, extra=self.extra, arrays=self.arrays)

    def resume(self, path):
        """Continue from a checkpoint: parameters, optimiser, schedule, random states, history."""
        if self.comm is not None:  # rank 0 reads it; every rank restores the same bytes
            checkpoint = self.comm.load_checkpoint(path, net=self.net)
        else:
            checkpoint = load_checkpoint(path, net=self.net)
        checkpoint.restore(self.optimizer, self.schedule, {"data": self.train_loader.rng})
        self.epoch = checkpoint.epoch
        self.history = list(checkpoint.history)
        self.best_val_error = checkpoint.best_val_error
        self.last_good = os.fspath(path)
        return checkpoint

    def _write(self, improved):
        os.makedirs(self.out_dir, exist_ok=True)
        last = self.save(self._last_path())
        self.last_good = last
        for old in self.replaces:  # the replaced run goes once this one has a checkpoint
            if old != last and os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old)
            elif old != last and os.path.lexists(old):
                os.remove(old)
        self.replaces = []
        if improved:  # copy, then rename: best.npz is never half-written either
            best = os.path.join(self.out_dir, "best.npz")
            tmp = os.path.join(self.out_dir, f".best.npz.tmp{os.getpid()}")
            shutil.copyfile(last, tmp)
            os.replace(tmp, best)
        if self.snapshot_every and self.epoch % self.snapshot_every == 0:
            self._snapshot(last)
        write_logs(self.history, self.out_dir)

    def _snapshot(self, last):
        """Keep this epoch's checkpoint as ``snapshots/epochNNN.npz`` (copy, then rename)."""
        folder = os.path.join(self.out_dir, "snapshots")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"epoch{self.epoch:03d}.npz")
        tmp = os.path.join(folder, f".epoch{self.epoch:03d}.npz.tmp{os.getpid()}")
        shutil.copyfile(last, tmp)
        os.replace(tmp, path)
        return path


def write_logs(history, out_dir):
    """log.json (all records), log.csv (one row per epoch) and curves.png."""
    with open(os.path.join(out_dir, "log.json"), "w") as f:
        json.dump(history, f, indent=1)
    keys = []
    for record in history:
        keys += [k for k in record if k not in keys]
    with open(os.path.join(out_dir, "log.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, os.path.join(out_dir, "curves.png"))


def plot_curves(history, path):
    """Loss and top-1 error per epoch, training and validation, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter
    epochs = [r["epoch"] for r in history]
    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    for axis, (key, title) in zip(figure.subplots(1, 2),
                                  (("loss", "loss"), ("error", "top-1 error"))):
        axis.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        val_key = "val_loss" if key == "loss" else "val_top1_error"
        if all(val_key in r for r in history):
            axis.plot(epochs, [r[val_key] for r in history], "s-", label="validation")
        if key == "error":
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axis.yaxis.set_minor_formatter(PercentFormatter(1.0, decimals=0))
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
