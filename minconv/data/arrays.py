"""Images already in memory: class selection, label checks, and their loader."""

import numpy as np

from .common import FASHION_MNIST_STATS


def select(images, labels, classes=None, per_class=None, rng=None):
    """Keep the given classes (relabelled 0..K-1 in that order), at most ``per_class`` each.

    Returns (images, labels). With ``per_class``, the examples are drawn at random
    by ``rng`` (a seed or a Generator) and kept in their original order.
    """
    labels = np.asarray(labels)
    classes = list(range(int(labels.max()) + 1)) if classes is None else list(classes)
    rng = np.random.default_rng(rng)
    keep, new = [], np.full(labels.shape, -1, np.int64)
    for k, c in enumerate(classes):
        where = np.flatnonzero(labels == c)
        if per_class is not None:
            if len(where) < per_class:
                raise ValueError(f"select: class {c} has {len(where)} examples, "
                                 f"fewer than {per_class}")
            where = np.sort(rng.choice(where, per_class, replace=False))
        keep.append(where)
        new[where] = k
    keep = np.sort(np.concatenate(keep))
    return images[keep], new[keep]


def check_labels(labels, what, num_classes=None):
    """``labels`` as int64 (N,) after checking they are integers in [0, num_classes):
    a float label would be truncated and -1 would index the last class, silently."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{what}: labels must have shape (N,), got {labels.shape}")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "b" or labels.size == 0):
        raise ValueError(f"{what}: labels must be integer class indices, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            span = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise ValueError(f"{what}: labels must lie in {span}, got values in "
                             f"[{low}, {high}]")
    return labels




class ArrayLoader:
    """Mini-batches from uint8 images in memory, (N, H, W) or (N, C, H, W).

    x = (pixel / 255 - mean) / std as float32 (B, C, H, W). With ``augment``, each
    training image is zero-padded by ``pad`` pixels, cropped back to H x W at a
    random offset and flipped left-right with probability 1/2 (``flip``).
    ``views="flip"`` yields (B, 2, C, H, W): each image and its mirror, whose
    softmax outputs :func:`minconv.train.evaluate` averages.
    """

    def __init__(self, images, labels, batch_size=128, shuffle=False, augment=False, pad=2,
                 flip=True, mean=FASHION_MNIST_STATS[0], std=FASHION_MNIST_STATS[1], seed=0,
                 drop_last=False, views=None):
        images = np.asarray(images)
        self.images = images[:, None] if images.ndim == 3 else images  # (N, C, H, W)
        self.labels = check_labels(labels, "ArrayLoader")
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(f"ArrayLoader: expected images (N, [C,] H, W) and labels (N,), "
                             f"got {images.shape} and {self.labels.shape}")
        if views not in (None, "flip"):
            raise ValueError(f"ArrayLoader: views must be None or 'flip', got {views!r}")
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.pad, self.flip, self.drop_last, self.views = int(pad), flip, drop_last, views
        self.mean, self.std = float(mean), float(std)
        self.rng = np.random.default_rng(seed)

    @property
    def num_samples(self):
        return len(self.labels)

    def __len__(self):
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def spec(self):
        return {"kind": "array", "mean": self.mean, "std": self.std}

    def _normalise(self, pixels):
        scale = np.float32(1.0 / (255.0 * self.std))
        return pixels.astype(np.float32) * scale - np.float32(self.mean / self.std)

    def _augment(self, pixels):
        """Random pad-and-crop offsets and flips for a batch (B, C, H, W), one gather."""
        B, C, H, W = pixels.shape
        p = self.pad
        padded = np.pad(pixels, ((0, 0), (0, 0), (p, p), (p, p)))       # (B, C, H+2p, W+2p)
        dy = self.rng.integers(0, 2 * p + 1, B)
        dx = self.rng.integers(0, 2 * p + 1, B)
        mirror = self.rng.random(B) < 0.5 if self.flip else np.zeros(B, bool)
        rows = dy[:, None] + np.arange(H)                                 # (B, H)
        cols = np.where(mirror[:, None], W - 1 - np.arange(W), np.arange(W)) + dx[:, None]
        b = np.arange(B)[:, None, None, None]
        c = np.arange(C)[None, :, None, None]
        return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]

    def __iter__(self):
        n = self.num_samples
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = np.sort(order[start:start + self.batch_size])  # sorted: contiguous reads
            pixels = self.images[index]
            if self.augment:
                pixels = self._augment(pixels)
            x = self._normalise(pixels)
            if self.views == "flip":
                x = np.stack([x, x[..., ::-1]], axis=1)                    # (B, 2, C, H, W)
            yield x, self.labels[index]


# ------------------------------------------------------------------ image folders
