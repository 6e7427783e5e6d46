"""Image folders (one sub-folder per class) with Zeiler & Fergus's preprocessing."""
import os
import warnings

import numpy as np

from .common import IMAGE_EXTENSIONS, DataError


def display_name(name):
    """A class (folder) name as text that can be printed, drawn and written as UTF-8:
    bytes that are not UTF-8 (kept by ``os.listdir`` as surrogates) become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if isinstance(name, str) \
        else str(name)


# ------------------------------------------------------------------ in-memory batches



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
