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
import gzip
import math
import os
import stat
import warnings
import zlib

import numpy as np

# IDX type codes -> big-endian dtypes (http://yann.lecun.com/exdb/mnist/ file format)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp"}
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_STATS = (0.2860, 0.3530)  # pixel mean and std of the training images, in [0, 1]


class DataError(ValueError):
    """A data file that cannot be used; the message names the file."""


# ------------------------------------------------------------------ IDX files

MAX_IDX_BYTES = int(os.environ.get("MINCONV_MAX_IDX_BYTES", 1 << 30))  # Fashion-MNIST: 47 MB
MAX_DEFLATE_RATIO = 1100  # deflate cannot shrink data by more than ~1032:1


def open_regular(path, what="file"):
    """Open ``path`` for binary reading if it is a regular file; a directory, FIFO or
    device (``/dev/zero``, say, or a link to it) is a DataError: one would block a read
    forever, another never end."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: not a regular file (a directory, FIFO or device)")
    return open(path, "rb")


def read_idx(path):
    """Read an IDX file (gzipped or raw) into an array of its declared type and shape.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions d, then d big-endian uint32 sizes; the data follow. The header is
    read first and checked before any data are: the declared size must agree with
    the file (for gzip: be reachable from its compressed size) and stay within
    ``MAX_IDX_BYTES``; then exactly that many bytes are read, never more. A wrong
    magic number, a size that disagrees with the data, a broken gzip stream or a
    file that is not a regular file is a DataError naming the file.
    """
    path = os.fspath(path)
    with open_regular(path, "IDX file") as raw_file:
        size = os.fstat(raw_file.fileno()).st_size
        zipped = raw_file.read(2) == b"\x1f\x8b"
        raw_file.seek(0)
        f = gzip.GzipFile(fileobj=raw_file, mode="rb") if zipped else raw_file
        try:
            return _read_idx_stream(f, path, size, zipped)
        except (EOFError, OSError, zlib.error) as error:
            if not zipped:
                raise
            raise DataError(f"{path}: truncated or corrupt gzip data ({error})") from None


def _read_idx_stream(f, path, size, zipped):
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES \
            or magic[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic number {magic.hex() or 'missing'}; "
                        "expected 0000 then a type code 08/09/0b/0c/0d/0e and the rank)")
    ndim = magic[3]
    header = 4 + 4 * ndim
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: IDX header truncated ({4 + len(dims_raw)} bytes, needs "
                        f"{header})")
    dims = tuple(int(d) for d in np.frombuffer(dims_raw, ">u4"))
    dtype = np.dtype(IDX_TYPES[magic[2]])
    expected = math.prod(dims) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DataError(f"{path}: IDX header declares shape {dims} ({expected} bytes), over "
                        f"the limit of {MAX_IDX_BYTES} bytes (MINCONV_MAX_IDX_BYTES)")
    if zipped and header + expected > MAX_DEFLATE_RATIO * size + 4096:
        raise DataError(f"{path}: IDX header declares shape {dims} ({expected} bytes), more "
                        f"than {size} bytes of gzip data can hold")
    if not zipped and size - header != expected:
        raise DataError(f"{path}: IDX header declares shape {dims} ({expected} bytes of data) "
                        f"but the file holds {size - header} bytes")
    data = f.read(expected)
    if len(data) != expected or f.read(1):
        held = len(data) if len(data) != expected else "more than " + str(expected)
        raise DataError(f"{path}: IDX header declares shape {dims} ({expected} bytes of data) "
                        f"but the file holds {held} bytes")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_file(root, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.lexists(path):
            return path
    raise FileNotFoundError(f"{root}: no {stem}[.gz] (expected the MNIST/Fashion-MNIST files "
                            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)")


def load_idx(root, split="train"):
    """Images uint8 (N, H, W) and labels int64 (N,) of the 'train' or 'test' split in ``root``."""
    if split not in ("train", "test"):
        raise ValueError(f"load_idx: split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    image_path = _idx_file(root, f"{prefix}-images-idx3-ubyte")
    label_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{image_path}: expected images (N, H, W) and labels (N,), got "
                        f"{images.shape} and {labels.shape} ({label_path})")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{image_path} holds {images.shape[0]} images but {label_path} "
                        f"holds {labels.shape[0]} labels")
    return images, labels.astype(np.int64)


def is_idx_dir(root):
    """True when ``root`` holds MNIST-style IDX files."""
    try:
        _idx_file(root, "train-images-idx3-ubyte")
        return True
    except FileNotFoundError:
        return False


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


def display_name(name):
    """A class (folder) name as text that can be printed, drawn and written as UTF-8:
    bytes that are not UTF-8 (kept by ``os.listdir`` as surrogates) become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if isinstance(name, str) \
        else str(name)


# ------------------------------------------------------------------ in-memory batches

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

class ImageFolder:
    """``root/<class>/<image file>``: one sub-folder per class.

    ``classes`` is the class table: the class names in label order. By default it is
    this folder's sub-folders in sorted order (the training split's); a validation or
    test split passes the training split's table instead, so a class that is empty
    or missing here keeps its number, and a sub-folder the table does not know is a
    DataError naming it.

    Images are decoded one at a time by :meth:`load`; nothing is held in memory but
    the file list. Hidden files are ignored; any other non-image file, a file that is
    not a regular file (a FIFO, a device), or a file whose header Pillow cannot read
    is a DataError naming it (or, with ``skip_bad``, a warning, and the file is
    listed in ``skipped``).
    """

    def __init__(self, root, size=256, skip_bad=False, verify=True, classes=None):
        from PIL import Image
        self.root, self.size, self.skip_bad = os.fspath(root), int(size), skip_bad
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        found = sorted(d for d in os.listdir(self.root)
                       if os.path.isdir(os.path.join(self.root, d)) and d[0] != ".")
        if classes is None:
            self.classes = found
        else:
            self.classes = list(classes)
            known = set(self.classes)
            unknown = [d for d in found if d not in known]
            if unknown:
                raise DataError(f"{self.root}: class folder {display_name(unknown[0])!r} is not "
                                f"one of the {len(self.classes)} classes the net was trained "
                                f"on ({', '.join(display_name(c) for c in self.classes[:10])}"
                                f"{', ...' if len(self.classes) > 10 else ''})")
        if not self.classes:
            raise DataError(f"{self.root}: no class sub-folders (expected root/<class>/<image>)")
        self.samples, self.skipped, self._skipped_paths = [], [], set()
        present = set(found)
        for label, name in enumerate(self.classes):
            folder = os.path.join(self.root, name)
            if name not in present:
                continue  # a class of the table without images in this split
            for file in sorted(os.listdir(folder)):
                path = os.path.join(folder, file)
                if file[0] == "." or os.path.isdir(path):
                    continue
                if not os.path.isfile(path):
                    self._bad(path, "not a regular file (a FIFO, device or broken link)")
                    continue
                if os.path.splitext(file)[1].lower() not in IMAGE_EXTENSIONS:
                    self._bad(path, "not an image file (unknown extension)")
                    continue
                if verify:
                    try:
                        with Image.open(path) as image:
                            image.size  # the header only: cheap, catches non-images
                    except Exception as error:  # UnidentifiedImageError, OSError, ...
                        self._bad(path, f"cannot read image ({error})")
                        continue
                self.samples.append((path, label))
        if not self.samples:
            raise DataError(f"{self.root}: no readable images in {len(self.classes)} class "
                            "folders")

    def _bad(self, path, reason):
        if not self.skip_bad:
            raise DataError(f"{path}: {reason}")
        warnings.warn(f"skipping {path}: {reason}", RuntimeWarning, stacklevel=3)
        self.skipped.append((path, reason))
        self._skipped_paths.add(path)

    def __len__(self):
        return len(self.samples)

    @property
    def labels(self):
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def load(self, i):
        """Image i as uint8 (3, size, size): smaller side resized to ``size``, centre crop.

        A corrupt or truncated file is a DataError naming it; with ``skip_bad`` it
        is recorded in ``skipped`` and None is returned.
        """
        from PIL import Image
        path = self.samples[i][0]
        try:
            with Image.open(path) as image:
                image.draft("RGB", (self.size, self.size))  # JPEG: decode at >= 1/8 scale
                image = image.convert("RGB")
                w, h = image.size
                scale = self.size / min(w, h)
                w, h = max(self.size, round(w * scale)), max(self.size, round(h * scale))
                image = image.resize((w, h), Image.BILINEAR)
                left, top = (w - self.size) // 2, (h - self.size) // 2
                image = image.crop((left, top, left + self.size, top + self.size))
                return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)  # (3, S, S)
        except Exception as error:  # truncated data, bad codec stream, vanished file
            if path not in self._skipped_paths:  # warn once, not at every epoch
                self._bad(path, f"cannot decode image ({error})")
            return None


def class_table(spec, root, where="checkpoint"):
    """The class names in the net's numbering, from a checkpoint's data spec (``minconv
    train`` stores the training split's table there) or, for older checkpoints, the
    folders of ``root/train`` as training numbered them; None when neither is there."""
    names = spec.get("class_names")
    if names is None and os.path.isdir(os.path.join(root, "train")):
        names = ImageFolder(os.path.join(root, "train"), verify=False).classes
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{where}: extra.data.class_names must be a list of class names")
    return names


def compute_mean_image(folder, progress=False):
    """Per-pixel mean of every training image, float32 (3, size, size), in one streaming pass."""
    total = np.zeros((3, folder.size, folder.size), np.float64)
    count = 0
    indices = range(len(folder))
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="mean image", unit="img")
    for i in indices:
        image = folder.load(i)
        if image is not None:
            total += image
            count += 1
    if count == 0:
        raise DataError(f"{folder.root}: no image could be decoded")
    return (total / count).astype(np.float32)


def ten_crops(image, crop):
    """The 4 corner and the centre crops of (C, S, S), each also flipped: (10, C, crop, crop)."""
    S = image.shape[-1]
    starts = [(0, 0), (0, S - crop), (S - crop, 0), (S - crop, S - crop),
              ((S - crop) // 2, (S - crop) // 2)]
    crops = [image[:, r:r + crop, c:c + crop] for r, c in starts]
    return np.stack(crops + [c[..., ::-1] for c in crops])


class FolderLoader:
    """Batches from an :class:`ImageFolder` with ZF preprocessing (see the module docstring).

    ``train=True``: random ``crop`` x ``crop`` crops with random flips, (B, 3, crop, crop).
    Otherwise ``views`` = "ten" gives (B, 10, 3, crop, crop) and "center" (B, 3, crop, crop).
    Up to ``prefetch`` batches are decoded ahead in a background thread (Pillow decodes
    without holding the GIL), so reading overlaps the training step.
    """

    def __init__(self, folder, mean_image, batch_size=128, train=False, crop=224, views="ten",
                 seed=0, shuffle=None, prefetch=2):
        if views not in ("ten", "center"):
            raise ValueError(f"FolderLoader: views must be 'ten' or 'center', got {views!r}")
        self.folder, self.train, self.crop, self.views = folder, train, int(crop), views
        self.mean_image = np.asarray(mean_image, np.float32)
        if self.mean_image.shape != (3, folder.size, folder.size):
            raise ValueError(f"FolderLoader: mean image has shape {self.mean_image.shape}, "
                             f"expected {(3, folder.size, folder.size)}")
        self.batch_size = int(batch_size)
        self.shuffle = train if shuffle is None else shuffle
        self.prefetch = int(prefetch)
        self.rng = np.random.default_rng(seed)

    @property
    def num_samples(self):
        return len(self.folder)

    def __len__(self):
        return -(-len(self.folder) // self.batch_size)

    def spec(self):
        return {"kind": "folder", "size": self.folder.size, "crop": self.crop}

    def _view(self, image):
        x = image.astype(np.float32) - self.mean_image            # (3, S, S)
        S, c = x.shape[-1], self.crop
        if self.train:
            r, q = self.rng.integers(0, S - c + 1, 2)
            x = x[:, r:r + c, q:q + c]
            return x[..., ::-1] if self.rng.random() < 0.5 else x
        if self.views == "center":
            r = (S - c) // 2
            return x[:, r:r + c, r:r + c]
        return ten_crops(x, c)

    def __iter__(self):
        return prefetch(self._batches(), self.prefetch) if self.prefetch else self._batches()

    def _batches(self):
        n = len(self.folder)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            views, labels = [], []
            for i in order[start:start + self.batch_size]:
                image = self.folder.load(int(i))
                if image is None:  # skipped bad file (skip_bad=True)
                    continue
                views.append(self._view(image))
                labels.append(self.folder.samples[i][1])
            if views:
                yield np.ascontiguousarray(np.stack(views)), np.array(labels, np.int64)


def prefetch(batches, depth):
    """Iterate over ``batches`` produced ``depth`` ahead by a background thread.

    The producer's exceptions (a DataError, say) are raised in the consumer, at
    the batch where they happened. Stopping early stops the producer.
    """
    import queue
    import threading
    slots, done, stop = queue.Queue(maxsize=depth), object(), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer
            put(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
