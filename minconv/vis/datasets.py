"""The images a visualisation looks at, with the preprocessing the net was trained with.

A checkpoint written by ``minconv train`` records its data (``extra["data"]``):
IDX files standardised as ``(p/255 - mean)/std``, or an image folder with the
per-pixel mean image subtracted from centre crops. :func:`load_data` rebuilds
that view of the test (or train) split: the images as stored (uint8, shown as
they are), a ``preprocess`` callable that turns a batch into the net's input,
class names, and the occluder's grey (the dataset mean in input space: 0 in
both cases).
"""
import os
from dataclasses import dataclass

import numpy as np

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass
class VisData:
    images: object        # (N, C, H, W) uint8, sliceable
    labels: np.ndarray    # (N,)
    preprocess: object    # batch of images -> float32 net input
    class_names: list
    fill: float
    split: str


class Standardize:
    """x = (p / 255 - mean) / std as float32, for a batch of uint8 pixels."""

    def __init__(self, mean, std):
        self.mean, self.std = float(mean), float(std)

    def __call__(self, pixels):
        scale = np.float32(1.0 / (255.0 * self.std))
        return np.asarray(pixels).astype(np.float32) * scale - np.float32(self.mean / self.std)


class SubtractMean:
    """x = p - mean_image (centre-cropped to the input size), as float32."""

    def __init__(self, mean_image, crop):
        S = mean_image.shape[-1]
        r = (S - crop) // 2
        self.mean = np.asarray(mean_image, np.float32)[:, r:r + crop, r:r + crop]

    def __call__(self, pixels):
        return np.asarray(pixels).astype(np.float32) - self.mean


class FolderImages:
    """The centre crops (N, 3, crop, crop) uint8 of an :class:`~minconv.data.ImageFolder`,
    decoded on demand: indexing by an int, a slice or an index array loads only those."""

    def __init__(self, folder, crop):
        self.folder, self.crop = folder, int(crop)

    def __len__(self):
        return len(self.folder)

    @property
    def shape(self):
        return (len(self), 3, self.crop, self.crop)

    @property
    def ndim(self):
        return 4

    def _one(self, i):
        image = self.folder.load(int(i))
        if image is None:  # a skipped bad file: a black image keeps the indices aligned
            return np.zeros((3, self.crop, self.crop), np.uint8)
        r = (image.shape[-1] - self.crop) // 2
        return image[:, r:r + self.crop, r:r + self.crop]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._one(key)
        index = range(len(self))[key] if isinstance(key, slice) else np.asarray(key).ravel()
        return np.stack([self._one(i) for i in index]) if len(index) else \
            np.zeros((0, 3, self.crop, self.crop), np.uint8)


def load_data(checkpoint, root=None, split="test", limit=None):
    """The images of ``split`` as the checkpoint's net sees them; see the module docstring."""
    from .. import data
    spec = checkpoint.extra.get("data", {}) if checkpoint is not None else {}
    root = root or spec.get("root") or data.FASHION_MNIST
    if data.is_idx_dir(root):
        images, labels = data.load_idx(root, split)
        if spec.get("classes"):
            images, labels = data.select(images, labels, spec["classes"])
        if limit:
            images, labels = images[:limit], labels[:limit]
        if isinstance(spec.get("num_classes"), int) and labels.size and \
                int(labels.max()) >= spec["num_classes"]:
            raise data.DataError(f"--data {root}: label {int(labels.max())} is not one of the "
                                 f"{spec['num_classes']} classes the net was trained on")
        mean, std = (spec.get("mean", data.FASHION_MNIST_STATS[0]),
                     spec.get("std", data.FASHION_MNIST_STATS[1]))
        fashion = "fashion" in os.path.abspath(root).lower()
        names = list(FASHION_MNIST_CLASSES) if fashion else [str(k) for k in range(10)]
        if spec.get("classes"):
            names = [names[c] for c in spec["classes"]]
        return VisData(images[:, None], labels, Standardize(mean, std), names, 0.0, split)
    sub = "train" if split == "train" else next(
        (d for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), None)
    if sub is None or not os.path.isdir(os.path.join(root, sub)):
        raise FileNotFoundError(f"--data {root}: expected IDX files or train/ and val/ (or "
                                "test/) image folders")
    mean_image = checkpoint.arrays.get("mean_image") if checkpoint is not None else None
    if mean_image is None:
        raise ValueError(f"{checkpoint.path if checkpoint else 'checkpoint'}: no mean image "
                         "recorded; image-folder data need the checkpoint of minconv train")
    crop = int(spec.get("crop", 224))
    # numbered through the net's class table (the training split's), never the split's own
    folder = data.ImageFolder(os.path.join(root, sub), size=spec.get("size", mean_image.shape[-1]),
                              skip_bad=True, classes=data.class_table(
                                  spec, root, checkpoint.path if checkpoint else "checkpoint"))
    if limit:
        folder.samples = folder.samples[:limit]
    return VisData(FolderImages(folder, crop), folder.labels, SubtractMean(mean_image, crop),
                   [data.display_name(c) for c in folder.classes], 0.0, split)


def parse_steps(text):
    """'start:stop:step' (stop included) or 'a,b,c' -> an array; None -> None."""
    if not text:
        return None
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step == 0:
                raise ValueError
            return np.arange(start, stop + step / 2, step)
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ValueError(f"--steps expects start:stop:step or a comma list, got {text!r}") \
            from None
