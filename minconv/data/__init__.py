"""Datasets and mini-batches: IDX files (MNIST, Fashion-MNIST) and image folders.

Two loaders make the batches a :class:`minconv.train.Trainer` consumes; both
iterate as ``for x, y in loader`` with ``x`` float32 ``(B, C, H, W)`` (or
``(B, V, C, H, W)`` when evaluating V views of each image) and ``y`` int64
``(B,)``, shuffle and augment with their own generator ``loader.rng`` (saved in
checkpoints), and report their preprocessing in ``loader.spec()``.

- :class:`ArrayLoader`: images already in memory (IDX data). ``x = (p/255 - mean)/std``;
  training batches may be padded and randomly cropped back, and flipped.
- :class:`FolderLoader`: Zeiler & Fergus's preprocessing, one image file at a time.
  Each image is resized so its smaller side is 256, centre-cropped to 256x256, and
  the per-pixel mean image of the training set is subtracted (pixels stay in
  [-128, 128] or so, as in the paper); training takes random 224x224 crops with
  horizontal flips, evaluation the 10 crops (4 corners + centre, each flipped too).

Bad data raises :class:`DataError` (a ValueError) naming the file; with
``skip_bad=True`` a bad image is skipped with a warning and counted in
``folder.skipped`` instead.
"""
from .arrays import ArrayLoader, check_labels, select
from .common import FASHION_MNIST, FASHION_MNIST_STATS, IDX_TYPES, IMAGE_EXTENSIONS, DataError
from .folders import (FolderLoader, ImageFolder, class_table, compute_mean_image, display_name,
                      prefetch, ten_crops)
from .idx import MAX_DEFLATE_RATIO, MAX_IDX_BYTES, is_idx_dir, load_idx, open_regular, read_idx

__all__ = ["ArrayLoader", "DataError", "FASHION_MNIST", "FASHION_MNIST_STATS", "FolderLoader",
           "IDX_TYPES", "IMAGE_EXTENSIONS", "ImageFolder", "MAX_DEFLATE_RATIO", "MAX_IDX_BYTES",
           "check_labels", "class_table", "compute_mean_image", "display_name", "is_idx_dir",
           "load_idx", "open_regular", "prefetch", "read_idx", "select", "ten_crops"]
