"""IDX files (MNIST, Fashion-MNIST), read within bounds before anything is allocated."""
import gzip
import math
import os
import stat
import zlib

import numpy as np

from .common import IDX_TYPES, DataError


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
