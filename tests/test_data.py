"""Data: IDX files, in-memory batches, image folders and ZF preprocessing, bad data."""
import gzip
import os
import struct
import warnings

import numpy as np
import pytest

from minconv import data
from minconv.data import DataError

PIL = pytest.importorskip("PIL.Image")
FASHION = data.FASHION_MNIST
has_fashion = pytest.mark.skipif(not data.is_idx_dir(FASHION), reason="no Fashion-MNIST here")


def write_idx(path, array, code=0x08, compress=True):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(data.IDX_TYPES[code]).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)
    return path


def make_idx_dir(root, n=20, labels_n=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, labels_n or n).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return images, labels


# ------------------------------------------------------------------ IDX

@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("code", [0x08, 0x0C, 0x0D])
def test_read_idx_round_trip(tmp_path, compress, code):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5)
    if code == 0x08:
        array = np.abs(array)
    path = write_idx(tmp_path / "a.idx", array, code, compress)
    out = data.read_idx(path)
    assert out.shape == (2, 3, 5) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_idx_wrong_magic_names_the_file(tmp_path):
    path = tmp_path / "bad-magic-idx3-ubyte"
    path.write_bytes(b"\x08\x03\x00\x00" + bytes(100))
    with pytest.raises(DataError, match="bad-magic-idx3-ubyte.*magic"):
        data.read_idx(path)


def test_idx_size_mismatch_names_the_file(tmp_path):
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28) + bytes(28 * 28 * 9))
    with pytest.raises(DataError, match=r"short\.gz.*\(10, 28, 28\).*7056 bytes"):
        data.read_idx(path)


def test_idx_truncated_gzip_names_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    full = write_idx(tmp_path / "full.gz", noise)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.gz.*truncated or corrupt gzip"):
        data.read_idx(cut)


def test_load_idx_counts_must_agree(tmp_path):
    make_idx_dir(tmp_path, n=20, labels_n=19)
    with pytest.raises(DataError, match="20 images.*19 labels"):
        data.load_idx(tmp_path, "train")


def test_load_idx_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_idx(tmp_path, "train")


@has_fashion
def test_fashion_mnist_loads():
    images, labels = data.load_idx(FASHION, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))


def test_select_relabels_and_samples():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 5)
    images = np.arange(50)
    x, y = data.select(images, labels, classes=[5, 7], per_class=3, rng=0)
    assert len(x) == 6 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert set(labels[x][y == 0]) == {5} and set(labels[x][y == 1]) == {7}


# ------------------------------------------------------------------ in-memory batches

def test_array_loader_normalises_and_batches():
    images = np.full((10, 28, 28), 255, np.uint8)
    loader = data.ArrayLoader(images, np.arange(10), batch_size=4, mean=0.5, std=0.25)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x, 2.0, rtol=1e-6)  # (1 - 0.5) / 0.25
    np.testing.assert_array_equal(y, [0, 1, 2, 3])


def test_array_loader_augmentation_is_a_shifted_flipped_copy():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (64, 28, 28)).astype(np.uint8)
    loader = data.ArrayLoader(images, np.arange(64), batch_size=64, augment=True, pad=2,
                              mean=0.0, std=1.0 / 255, seed=3)
    x, y = next(iter(loader))
    flipped = 0
    for image, label in zip(x[:, 0], y):
        padded = np.pad(images[label].astype(np.float32), 2)
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)
                 if np.array_equal(image, (padded[:, ::-1] if f else padded)
                                   [dy:dy + 28, (4 - dx if f else dx):(4 - dx if f else dx) + 28])]
        assert found, "each augmented image is a crop of the padded (maybe mirrored) original"
        flipped += found[0][2]
    assert 10 < flipped < 54


def test_array_loader_shuffles_reproducibly_and_flip_views():
    images = np.arange(8 * 4).reshape(8, 1, 2, 2).astype(np.uint8)
    a = data.ArrayLoader(images, np.arange(8), 8, shuffle=True, seed=5, mean=0, std=1 / 255)
    b = data.ArrayLoader(images, np.arange(8), 8, shuffle=True, seed=5, mean=0, std=1 / 255)
    np.testing.assert_array_equal(next(iter(a))[1], next(iter(b))[1])
    views = data.ArrayLoader(images, np.arange(8), 8, views="flip", mean=0, std=1 / 255)
    x, _ = next(iter(views))
    assert x.shape == (8, 2, 1, 2, 2)
    np.testing.assert_array_equal(x[:, 1], x[:, 0, ..., ::-1])


# ------------------------------------------------------------------ image folders

def make_folder(root, per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for k, name in enumerate(("cat", "dog")):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size[::-1] + (3,)).astype(np.uint8)
            ext = ".png" if i % 2 else ".jpg"
            PIL.fromarray(pixels).save(root / name / f"{i}{ext}")
    return root


def test_image_folder_loads_zf_preprocessed(tmp_path):
    folder = data.ImageFolder(make_folder(tmp_path), size=32)
    assert folder.classes == ["cat", "dog"] and len(folder) == 6
    assert folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    image = folder.load(0)
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8


def test_resize_smaller_side_then_centre_crop(tmp_path):
    os.makedirs(tmp_path / "a")
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, 20:40] = 255  # a white vertical band in the middle third
    PIL.fromarray(pixels).save(tmp_path / "a" / "wide.png")
    image = data.ImageFolder(tmp_path, size=16).load(0)  # 20x60 -> 16x48 -> centre 16x16
    assert image.shape == (3, 16, 16)
    assert image[:, :, 2:14].min() > 200  # the centre crop is inside the band


def test_non_image_file_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.txt.*not an image"):
        data.ImageFolder(tmp_path)
    with pytest.warns(RuntimeWarning, match="notes.txt"):
        folder = data.ImageFolder(tmp_path, skip_bad=True)
    assert len(folder) == 6 and len(folder.skipped) == 1


def test_corrupt_image_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "cat" / "garbage.jpg").write_bytes(os.urandom(500))
    with pytest.raises(DataError, match=r"garbage\.jpg.*cannot read image"):
        data.ImageFolder(tmp_path)


def test_truncated_image_is_named_at_load(tmp_path):
    make_folder(tmp_path, size=(120, 90))
    path = tmp_path / "cat" / "0.jpg"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) * 3 // 5])
    folder = data.ImageFolder(tmp_path, size=32)  # the header is fine
    index = [p for p, _ in folder.samples].index(str(path))
    with pytest.raises(DataError, match=r"0\.jpg.*cannot decode"):
        folder.load(index)
    tolerant = data.ImageFolder(tmp_path, size=32, skip_bad=True)
    with pytest.warns(RuntimeWarning, match="0.jpg"):
        assert tolerant.load(index) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only one warning per file
        assert tolerant.load(index) is None
    assert len(tolerant.skipped) == 1


def test_mean_image_and_folder_loader(tmp_path):
    folder = data.ImageFolder(make_folder(tmp_path), size=32)
    mean = data.compute_mean_image(folder)
    stacked = np.stack([folder.load(i) for i in range(len(folder))]).astype(np.float64)
    np.testing.assert_allclose(mean, stacked.mean(axis=0), rtol=1e-5)
    train = data.FolderLoader(folder, mean, batch_size=4, train=True, crop=28, seed=0)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 28, 28) and x.dtype == np.float32 and y.shape == (4,)
    ten = data.FolderLoader(folder, mean, batch_size=4, crop=28, views="ten")
    x, y = next(iter(ten))
    assert x.shape == (4, 10, 3, 28, 28)
    centred = stacked[0].astype(np.float32) - mean
    np.testing.assert_allclose(x[0, 0], centred[:, :28, :28], atol=1e-5)        # top-left
    np.testing.assert_allclose(x[0, 3], centred[:, 4:, 4:], atol=1e-5)          # bottom-right
    np.testing.assert_allclose(x[0, 4], centred[:, 2:30, 2:30], atol=1e-5)      # centre
    np.testing.assert_allclose(x[0, 9], x[0, 4][..., ::-1], atol=0)             # its mirror
    assert sum(len(y) for _, y in ten) == 6


def test_ten_crops_positions():
    image = np.arange(6 * 6).reshape(1, 6, 6)
    crops = data.ten_crops(image, 4)
    assert crops.shape == (10, 1, 4, 4)
    assert [c[0, 0, 0] for c in crops[:5]] == [0, 2, 12, 14, 7]
    np.testing.assert_array_equal(crops[5:], crops[:5][..., ::-1])


def test_folder_loader_reports_a_bad_file_from_its_reader_thread(tmp_path):
    make_folder(tmp_path, per_class=6, size=(120, 90))
    path = tmp_path / "dog" / "4.jpg"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) * 3 // 5])
    folder = data.ImageFolder(tmp_path, size=32)
    loader = data.FolderLoader(folder, np.zeros((3, 32, 32), np.float32), batch_size=2,
                               crop=28, views="center", prefetch=2)
    seen = []
    with pytest.raises(DataError, match=r"dog/4\.jpg"):
        for x, y in loader:
            seen.append(len(y))
    assert seen == [2, 2, 2, 2, 2]  # the five batches before the bad one
    early = iter(loader)
    next(early)
    early.close()  # stopping early ends the reader thread
