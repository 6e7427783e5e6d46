"""Bounded reads: checkpoint entries are read only if expected, each within a size bound
derived from the config it claims and a global cap, checked from the zip and .npy headers
before anything is inflated or allocated; every meta.json field is checked against a
schema, with errors naming the field; IDX headers are checked against the file size before
reading; special files (FIFOs, devices) are refused."""
import gzip
import io
import json
import os
import struct
import time
import zipfile

import numpy as np
import pytest

from minconv import data, models, train
from minconv.data import DataError
from minconv.train import checkpoint as ckpt

from _reliability_data import idx_bytes


def small_checkpoint(path):
    net = models.lenet5()
    opt = train.SGD(net, lr=0.1, momentum=0.9)
    for layer in net.layers:
        layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    opt.step()
    train.save_checkpoint(path, net, opt, epoch=1)
    return path


def entries_of(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def write_entries(path, entries, deflate=()):
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in entries.items():
            z.writestr(name, raw, compress_type=zipfile.ZIP_DEFLATED if name in deflate
                       else zipfile.ZIP_STORED)


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def with_meta(path, change):
    entries = entries_of(path)
    meta = json.loads(np.load(io.BytesIO(entries["meta.json.npy"])).tobytes())
    change(meta)
    entries["meta.json.npy"] = npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    write_entries(path, entries)


def test_an_extra_deflated_entry_is_refused_without_inflating_it(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    entries = entries_of(path)
    entries["bomb.npy"] = npy(np.zeros(50_000_000, np.uint8))  # 50 MB of zeros, ~50 kB deflated
    write_entries(path, entries, deflate=("bomb.npy",))
    assert os.path.getsize(path) < 1_000_000
    with pytest.raises(ValueError, match=r"c\.npz: unexpected entry 'bomb\.npy'"):
        train.load_checkpoint(path)


def test_an_expected_entry_bigger_than_the_config_implies_is_refused(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    entries = entries_of(path)
    entries["param/fc5.W.npy"] = npy(np.zeros((8000, 84), np.float32))
    write_entries(path, entries, deflate=("param/fc5.W.npy",))
    with pytest.raises(ValueError, match=r"param/fc5\.W has shape \(8000, 84\), the net "
                                         r"expects \(10, 84\)"):
        train.load_checkpoint(path)


def test_a_header_declaring_373_gib_is_refused_before_allocation(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    entries = entries_of(path)
    raw = npy(np.zeros(4, np.float32))
    huge = raw.replace(b"(4,)", b"(100000000000,)")  # 373 GiB of float32
    entries["array/mean_image.npy"] = huge
    write_entries(path, entries)
    with pytest.raises(ValueError, match=r"array/mean_image: header declares float32 "
                                         r"\(100000000000,\)"):
        train.load_checkpoint(path)


def test_a_config_asking_for_huge_layers_is_refused_without_allocating(tmp_path, monkeypatch):
    path = small_checkpoint(tmp_path / "c.npz")
    with_meta(path, lambda m: m.update(config={"model": "zfnet_mini",
                                               "kwargs": {"fc_width": 100000}}))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"c\.npz: (meta\.json field config|parameters do not "
                                         r"fit)"):
        train.load_checkpoint(path)
    assert time.perf_counter() - start < 30  # nothing of 100000 x 100000 was drawn
    monkeypatch.setattr(ckpt, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(ValueError, match=r"over the cap|more than 1000 bytes"):
        train.load_checkpoint(small_checkpoint(tmp_path / "d.npz"))


@pytest.mark.parametrize("field, value, pattern", [
    ("epoch", "3", r"field epoch must be an integer >= 0"),
    ("epoch", -1, r"field epoch must be an integer >= 0"),
    ("best_val_error", "x", r"field best_val_error must be null or a finite number"),
    ("config", [1], r"field config must be null or an object"),
    ("config", {"model": 3, "kwargs": {}}, r"field config\.model must be a string"),
    ("config", {"model": "lenet5"}, r"field config\.kwargs is missing"),
    ("config", {"model": "lenet5", "kwargs": {"num_classes": "x"}}, r"field config"),
    ("config", {"model": "nonet", "kwargs": {}}, r"field config"),
    ("optimizer", {"lr": 1}, r"field optimizer\.momentum is missing"),
    ("rng", {"layers": {}}, r"field rng\.extra is missing"),
    ("rng", {"layers": {"drop": 5}, "extra": {}}, r"field rng\.layers"),
    ("history", {}, r"field history must be a list"),
    ("history", [1], r"field history must be a list of objects"),
    ("extra", None, r"field extra must be an object"),
    ("schedule", {"kind": 4}, r"field schedule\.kind"),
    ("version", 99, r"version 99 is newer"),
])
def test_malformed_meta_fields_are_named(tmp_path, field, value, pattern):
    path = small_checkpoint(tmp_path / "c.npz")
    with_meta(path, lambda m: m.update({field: value}))
    with pytest.raises(ValueError, match=r"c\.npz: .*" + pattern):
        train.load_checkpoint(path)


def test_missing_meta_field_and_non_json_constants(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    with_meta(path, lambda m: m.pop("history"))
    with pytest.raises(ValueError, match=r"field history is missing"):
        train.load_checkpoint(path)
    entries = entries_of(path)
    entries["meta.json.npy"] = npy(np.frombuffer(b'{"format": NaN}', np.uint8))
    write_entries(path, entries)
    with pytest.raises(ValueError, match=r"corrupt meta\.json"):
        train.load_checkpoint(path)


def test_object_and_non_finite_entries_are_refused(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    entries = entries_of(path)
    W = np.load(io.BytesIO(entries["param/fc5.W.npy"]))
    W[0, 0] = np.nan
    entries["param/fc5.W.npy"] = npy(W)
    write_entries(path, entries)
    with pytest.raises(ValueError, match=r"param/fc5\.W: holds NaN or infinity"):
        train.load_checkpoint(path)
    entries["param/fc5.W.npy"] = npy(np.zeros((10, 84), np.float32)).replace(b"'<f4'", b"'|O'")
    write_entries(path, entries)
    with pytest.raises(ValueError, match=r"param/fc5\.W.*(not a plain numeric|bad \.npy)"):
        train.load_checkpoint(path)


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo\.npz: not a regular file"):
        train.load_checkpoint(fifo)  # would block forever if opened
    with pytest.raises(ValueError, match=r"not a regular file"):
        train.load_checkpoint(tmp_path)
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"zero\.npz: not a regular file"):
        train.load_checkpoint(tmp_path / "zero.npz")


# ------------------------------------------------------------------ IDX files

def test_idx_header_checked_against_the_file_size_before_reading(tmp_path):
    raw = idx_bytes(np.zeros((2, 4, 4), np.uint8))
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(raw[:12] + struct.pack(">I", 1 << 20) + raw[16:])
    with pytest.raises(DataError, match=r"a-idx3-ubyte: IDX header declares shape"):
        data.read_idx(path)


def test_gzip_idx_inflating_past_its_header_is_refused(tmp_path):
    path = tmp_path / "a-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:  # header says 16 bytes, the stream inflates to 64 MB
        f.write(idx_bytes(np.zeros(16, np.uint8)))
        f.write(bytes(64 << 20))
    assert os.path.getsize(path) < 200_000
    with pytest.raises(DataError, match=r"declares shape \(16,\).*holds more than 16"):
        data.read_idx(path)


def test_gzip_idx_declaring_more_than_it_can_hold_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "b-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([60000, 512, 512], ">u4").tobytes())
    with pytest.raises(DataError, match=r"over the limit|more than \d+ bytes of gzip"):
        data.read_idx(path)
    monkeypatch.setattr(data.idx, "MAX_IDX_BYTES", 100)  # where read_idx looks it up
    path = tmp_path / "c-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(200, np.uint8)))
    with pytest.raises(DataError, match=r"over the limit of 100 bytes"):
        data.read_idx(path)


def test_idx_special_files_are_refused(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not a regular file"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match=r"fifo: not a regular file"):
        data.read_idx(tmp_path / "fifo")


def test_image_folder_refuses_a_fifo(tmp_path):
    from PIL import Image
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "ok.png")
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    with pytest.raises(DataError, match=r"pipe\.jpg: not a regular file"):
        data.ImageFolder(tmp_path, size=8)
    with pytest.warns(RuntimeWarning, match="pipe.jpg"):
        folder = data.ImageFolder(tmp_path, size=8, skip_bad=True)
    assert len(folder) == 1
