"""What tests/test_distributed.py runs, alone or under ``mpirun -n R``.

    python tests/_distributed_worker.py train OUT --dtype float64 --batch 10 --epochs 2
    mpirun -n 2 python tests/_distributed_worker.py train OUT ... [--resume] [--fault kill]
    mpirun -n 2 python tests/_distributed_worker.py scan OUT

``train`` fits a small zfnet_mini on generated 28x28 images with the Trainer (data-parallel
over the ranks of the launch) and rank 0 writes OUT/result.npz (parameters and per-epoch
losses) besides the run's checkpoints. ``--fault kill|raise|nan`` makes rank
``--fault-rank`` die, raise or see a NaN at step ``--fault-step`` of epoch ``--fault-epoch``.
``scan`` writes the top-9 of a few layers, an occlusion map and an invariance curve.
"""
import argparse
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minconv as mc  # noqa: E402
from minconv import data, distributed, models  # noqa: E402

N_TRAIN, SIZE, CLASSES = 45, 28, 10
WIDTHS, FC = (4, 6, 8, 8, 6), 16


def dataset(n=N_TRAIN, seed=0):
    """Images that are not noise alone: a class-dependent bright square on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    images = rng.integers(0, 120, (n, SIZE, SIZE)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + 2 * (k % 5), 2 + 8 * (k // 5)
        images[i, r:r + 6, c:c + 6] = 250
    return images, labels


class Loader(data.ArrayLoader):
    """ArrayLoader batches in the net's dtype, with an optional fault on one rank."""

    def __init__(self, *args, dtype=np.float32, fault=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dtype, self.fault, self.epoch = dtype, fault, 0

    def __iter__(self):
        self.epoch += 1
        for step, (x, y) in enumerate(super().__iter__()):
            x = x.astype(self.dtype)
            if self.fault and self.fault["epoch"] == self.epoch and \
                    self.fault["step"] == step:
                kind = self.fault["kind"]
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if kind == "raise":
                    raise RuntimeError("a fault injected on this rank")
                if kind == "hang":
                    time.sleep(3600)
                if kind == "nan":
                    x = x.copy()
                    x[...] = np.nan
            yield x, y


def small_graph():
    """A residual block and a dropout head as an ``nn.Graph``."""
    nn = mc.nn
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(1, 6, 3, padding=1))
    g.add("relu1", nn.ReLU())
    g.add("conv2", nn.Conv2D(6, 6, 3, padding=1))
    g.add("add", nn.Add(), inputs=["conv2", "relu1"])
    g.add("relu2", nn.ReLU())
    g.add("pool", nn.MaxPool2D(4, 4))
    g.add("flatten", nn.Flatten())
    g.add("drop", nn.Dropout(0.3))
    g.add("fc", nn.Linear(6 * 7 * 7, CLASSES))
    return g


def train(args):
    from minconv.train import SGD, Trainer
    comm = distributed.world()
    dtype = np.dtype(args.dtype)
    images, labels = dataset()
    fault = None
    if args.fault and comm.rank == args.fault_rank:
        fault = dict(kind=args.fault, epoch=args.fault_epoch, step=args.fault_step)
    mc.nn.set_seed(0)
    net = small_graph() if args.net == "graph" else \
        models.zfnet_mini(widths=WIDTHS, fc_width=FC, dropout=0.5)
    net.astype(dtype).to(args.device)
    if fault and fault["kind"] == "hang-backward":  # stuck after the batch's loss was summed
        first, original = net[net.names[0]], None

        def backward(*a, **k):
            if loader.epoch == fault["epoch"]:
                time.sleep(3600)
            return original(*a, **k)
        original, first.backward = first.backward, backward
    optimizer = SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = Loader(images, labels, args.batch, shuffle=True, augment=True, seed=1, dtype=dtype,
                    fault=fault)
    val_images, val_labels = dataset(20, seed=5)
    val = Loader(val_images, val_labels, 8, dtype=dtype)
    trainer = Trainer(net, optimizer, loader, val, progress=False, verbose=comm.is_root,
                      out_dir=args.out, comm=comm, device=args.device)
    if args.resume:
        trainer.resume(os.path.join(args.out, "last.npz"))
        loader.epoch = trainer.epoch
    trainer.fit(args.epochs)
    if comm.is_root:
        np.savez(os.path.join(args.out, "result.npz"),
                 losses=[h["train_loss"] for h in trainer.history],
                 errors=[h["train_error"] for h in trainer.history],
                 val_losses=[h["val_loss"] for h in trainer.history],
                 **{f"param/{k}": mc.to_device(v, "cpu") for k, v in net.params.items()})


def scan(args):
    from minconv.vis.invariance import invariance
    from minconv.vis.occlusion import occlusion
    from minconv.vis.topk import top_k
    comm = distributed.data_parallel()
    mc.nn.set_seed(3)
    net = models.zfnet_mini(widths=WIDTHS, fc_width=FC, dropout=0.0)
    images, labels = dataset(70, seed=2)
    # every image three or four times over the ranks' shares: top-k must break the ties
    # as one process does (the lower image index first)
    images, labels = images[np.arange(70) % 20], labels[np.arange(70) % 20]
    x = (images[:, None] / 255.0).astype(np.float32)
    result = {}
    for distinct in (True, False):
        best = top_k(net, x, ["conv1", "relu2", "fc6"], k=9, batch_size=16,
                     distinct_images=distinct, show_progress=False, comm=comm)
        for layer, r in best.items():
            for field in ("values", "images", "positions"):
                result[f"topk/{distinct}/{layer}/{field}"] = getattr(r, field)
    occ = occlusion(net, x[3], int(labels[3]), size=6, stride=3, fill=0.0, batch_size=7,
                    project=False, comm=comm)
    for field in ("feature", "prob", "top_class", "top_prob"):
        result[f"occlusion/{field}"] = getattr(occ, field)
    inv = invariance(net, x[:3], labels[:3], "rotate", steps=np.arange(0, 360, 45),
                     batch_size=5, comm=comm)
    result["invariance/prob"] = inv.prob
    for layer, d in inv.distances.items():
        result[f"invariance/{layer}"] = d
    if comm is None or comm.is_root:
        np.savez(os.path.join(args.out, "scan.npz"), **result)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("train", "scan"))
    p.add_argument("out")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--net", default="zfnet_mini", choices=("zfnet_mini", "graph"))
    p.add_argument("--fault", choices=("kill", "raise", "nan", "hang", "hang-backward"))
    p.add_argument("--fault-rank", type=int, default=1)
    p.add_argument("--fault-epoch", type=int, default=2)
    p.add_argument("--fault-step", type=int, default=2)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from minconv.train import TrainingDiverged
    try:
        train(args) if args.mode == "train" else scan(args)
    except TrainingDiverged as error:  # as the command line reports it
        sys.exit(distributed.report_error(f"worker: error: {error}", error))


if __name__ == "__main__":
    main()
