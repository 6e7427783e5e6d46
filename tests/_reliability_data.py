"""Small generated data sets for the reliability tests: IDX folders and image folders."""
import gzip
import os

import numpy as np

TINY = ["--model-kwargs", '{"widths": [4, 6, 8, 8, 6], "fc_width": 16}']


def idx_bytes(array):
    """The IDX encoding of a uint8 array: magic 0000 08 <rank>, big-endian sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def write_idx(root, n_train=64, n_test=32, classes=4, seed=0):
    """A Fashion-MNIST-shaped IDX folder (28x28 uint8, labels 0..classes-1), gzipped."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        images[:, :4, :4] = (labels * 60)[:, None, None]  # a learnable corner
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            with gzip.open(os.path.join(root, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
                f.write(idx_bytes(array))
    return str(root)


def write_image_folders(root, train=("a", "b", "c"), val=("a", "b", "c"), count=3, size=36,
                        seed=0):
    """root/train/<class>/*.png and root/val/<class>/*.png; each class a distinct colour."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, names in (("train", train), ("val", val)):
        for name in names:
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size + 4, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
    return str(root)
