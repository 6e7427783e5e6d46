"""``minconv demo``: train ZFNet-mini on Fashion-MNIST for a few minutes, then write the report.

The run is short: ``epochs`` epochs of ``epoch_images`` training images each (a fresh
random draw from the 60,000 every epoch), the zfnet_mini recipe otherwise (SGD with
momentum, warm-up and cosine decay, random crops and flips). Without
``epoch_images``, a few timed steps measure this machine's speed and the epochs are
sized to fill ``minutes`` of training. A checkpoint is kept before training and
after every epoch, for the feature-evolution figure; then the whole report is
written for the last one.
"""
import os
import time

import numpy as np

from .datasets import FASHION_MNIST_CLASSES, Standardize


class _Draw:
    """An ArrayLoader over a new random draw of ``count`` training images each epoch."""

    def __init__(self, images, labels, count, seed, settings):
        from .. import data
        self.images, self.labels, self.count = images, labels, min(int(count), len(labels))
        self.rng = np.random.default_rng(seed)
        self.loader = data.ArrayLoader(images[:1], labels[:1], settings["batch_size"],
                                       shuffle=True, augment=True, pad=settings["pad"],
                                       seed=seed)
        self.loader.rng = self.rng
        self.batch_size = settings["batch_size"]

    def __len__(self):
        return -(-self.count // self.batch_size)

    def spec(self):
        return self.loader.spec()

    def __iter__(self):
        pick = np.sort(self.rng.choice(len(self.labels), self.count, replace=False))
        self.loader.images = self.images[pick][:, None]
        self.loader.labels = self.labels[pick]
        return iter(self.loader)


def _images_per_second(trainer, loader, schedule, warmup=2, batches=4):
    """Training speed from a few steps at the warm-up's first, small rate (real steps: they
    count as training); the first ``warmup``, which allocate the buffers, are not timed."""
    batches_iter = iter(loader)
    lr = schedule.lr(0.0)
    for _ in range(warmup):
        trainer.train_step(*next(batches_iter), lr=lr)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        x, y = next(batches_iter)
        trainer.train_step(x, y, lr=lr)
        seen += len(y)
    return seen / (time.perf_counter() - start)


def _epochs(n):
    return f"{n} epoch" + ("" if n == 1 else "s")


def demo(out, data_root=None, minutes=3.0, epochs=4, epoch_images=None, scan=10000, steps=150,
         seed=0, device="cpu", progress=True, log=print):
    """Train, keep snapshots, write ``out/report/index.html``; returns its path."""
    from .. import data, models, nn, train
    from ..train.recipes import recipe
    from .report import write_report
    data_root = data_root or data.FASHION_MNIST
    run = os.path.join(out, "run")
    os.makedirs(run, exist_ok=True)
    nn.set_seed(seed)
    settings = recipe("zfnet_mini")
    images, labels = data.load_idx(data_root, "train")
    test_images, test_labels = data.load_idx(data_root, "test")
    loader = _Draw(images, labels, epoch_images or 4096, seed, settings)
    val = data.ArrayLoader(test_images[:2000], test_labels[:2000], 500)
    net = models.zfnet_mini(num_classes=int(labels.max()) + 1,
                            **settings["model_kwargs"]).to(device)
    optimizer = train.SGD(net, lr=settings["lr"], momentum=settings["momentum"],
                          weight_decay=settings["weight_decay"])
    schedule = train.Cosine(settings["lr"], epochs=epochs, warmup=min(0.5, epochs / 2))
    spec = dict(loader.spec(), root=os.path.abspath(data_root), classes=None)
    trainer = train.Trainer(net, optimizer, loader, val, schedule, out_dir=run,
                            progress=progress, device=device,
                            extra={"data": spec, "settings": settings, "seed": seed,
                                   "model": "zfnet_mini", "val": "test[:2000]"})
    if epoch_images is None:
        rate = _images_per_second(trainer, loader, schedule)
        loader.count = int(min(len(labels), max(2048, rate * minutes * 60 / epochs)))
        log(f"demo: {rate:.0f} training images/s here: {_epochs(epochs)} of {loader.count} "
            f"images take about {epochs * loader.count / rate / 60:.1f} minutes")
    log(f"demo: training zfnet_mini ({net.num_params():,} parameters) for {_epochs(epochs)} of "
        f"{loader.count} Fashion-MNIST images")
    snapshots = [trainer.save(os.path.join(run, "epoch0.npz"))]
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        trainer.fit(epoch)
        snapshots.append(trainer.save(os.path.join(run, f"epoch{epoch}.npz")))
    last = trainer.history[-1]
    log(f"demo: trained in {(time.perf_counter() - start) / 60:.1f} min; top-1 error on 2000 "
        f"test images {last['val_top1_error']:.4f}; checkpoints in {run}")
    net.clear_cache()
    prep = Standardize(loader.loader.mean, loader.loader.std)
    return write_report(net, test_images[:, None], test_labels, os.path.join(out, "report"),
                        class_names=list(FASHION_MNIST_CLASSES), preprocess=prep, fill=0.0,
                        snapshots=snapshots, max_scan=scan, synthesis_steps=steps,
                        title="minconv demo: ZFNet-mini on Fashion-MNIST",
                        show_progress=progress, log=log)
