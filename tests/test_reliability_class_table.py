"""One class table per dataset: class names and numbering come from the training split and
are stored in the checkpoint; val/, evaluate and visualize map folder names through it, and
a class unknown to the net is an error that names it."""
import json
import os
import shutil

import numpy as np
import pytest

from minconv import cli, data, train
from minconv.data import DataError
from minconv.vis.datasets import load_data

from _reliability_data import TINY, write_image_folders


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def train_folder(root, out, capsys):
    status, _, err = run(["train", "--model", "zfnet-mini", "--data", str(root), "--epochs", "1",
                          "--batch-size", "4", "--out", str(out), "--no-progress"] + TINY, capsys)
    assert status == 0, err
    return train.load_checkpoint(os.path.join(out, "last.npz"))


def test_a_split_numbers_its_folders_through_the_given_table(tmp_path):
    write_image_folders(tmp_path, train=("a", "b", "c"), val=("b", "c"), count=2)
    os.makedirs(tmp_path / "val" / "empty_here")
    with pytest.raises(DataError, match=r"class folder 'empty_here' is not one of the 3 "
                                        r"classes the net was trained on \(a, b, c\)"):
        data.ImageFolder(tmp_path / "val", classes=["a", "b", "c"])
    os.rmdir(tmp_path / "val" / "empty_here")
    folder = data.ImageFolder(tmp_path / "val", classes=["a", "b", "c"])
    assert folder.labels.tolist() == [1, 1, 2, 2] and folder.classes == ["a", "b", "c"]
    assert data.ImageFolder(tmp_path / "val").labels.tolist() == [0, 0, 1, 1]  # its own table


def test_train_stores_the_table_and_validation_evaluate_visualize_use_it(tmp_path, capsys):
    root = write_image_folders(tmp_path / "d", train=("a", "b", "c"), val=("b", "c"), count=2)
    os.makedirs(tmp_path / "d" / "train" / "d_empty")  # empty in train: still class 2
    checkpoint = train_folder(root, tmp_path / "run", capsys)
    assert checkpoint.extra["data"]["class_names"] == ["a", "b", "c", "d_empty"]
    assert checkpoint.net.params["fc8.W"].shape[0] == 4
    vis = load_data(checkpoint, split="test")
    assert vis.labels.tolist() == [1, 1, 2, 2] and vis.class_names == ["a", "b", "c", "d_empty"]
    status, out, err = run(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.npz"),
                            "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["count"] == 4


def test_a_class_unknown_to_the_net_is_an_error_naming_it(tmp_path, capsys):
    root = write_image_folders(tmp_path / "d", train=("a", "b"), val=("a", "b"), count=2)
    train_folder(root, tmp_path / "run", capsys)
    shutil.copytree(tmp_path / "d" / "val" / "b", tmp_path / "d" / "val" / "zebra")
    status, _, err = run(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.npz")],
                         capsys)
    assert status == 1 and "class folder 'zebra' is not one of the 2 classes" in err
    status, _, err = run(["occlude", "--checkpoint", str(tmp_path / "run" / "last.npz"),
                          "--out", str(tmp_path / "o.png")], capsys)
    assert status == 1 and "'zebra'" in err
    # training refuses before the first epoch, too
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", root, "--epochs", "1",
                            "--batch-size", "4", "--out", str(tmp_path / "run2"),
                            "--no-progress"] + TINY, capsys)
    assert status == 1 and "'zebra'" in err and "epoch 1" not in out


def test_idx_validation_labels_past_the_training_classes_fail_before_training(tmp_path,
                                                                             capsys):
    from _reliability_data import write_idx
    root = write_idx(tmp_path / "idx", classes=4)
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", root, "--out",
                            str(tmp_path / "r"), "--epochs", "1", "--no-progress",
                            "--classes", "0,1,2", "--val-split", "0"] + TINY, capsys)
    assert status == 0, err  # --classes relabels both splits through one table
    root2 = tmp_path / "idx2"
    shutil.copytree(root, root2)
    from _reliability_data import idx_bytes
    import gzip
    with gzip.open(root2 / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.arange(64) % 2))  # training knows classes 0, 1 only
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", str(root2), "--out",
                            str(tmp_path / "r2"), "--epochs", "1", "--no-progress"] + TINY,
                           capsys)
    assert status == 1 and "validation labels" in err and "[0, 2)" in err
    assert "epoch 1" not in out


def test_idx_labels_the_net_does_not_know_are_named_by_evaluate_and_visualize(tmp_path,
                                                                            capsys):
    from _reliability_data import write_idx
    small = write_idx(tmp_path / "four", classes=4)
    status, _, err = run(["train", "--model", "zfnet-mini", "--data", small, "--out",
                          str(tmp_path / "r"), "--epochs", "1", "--batch-size", "32",
                          "--no-progress"] + TINY, capsys)
    assert status == 0, err
    wide = write_idx(tmp_path / "six", classes=6)
    last = str(tmp_path / "r" / "last.npz")
    status, _, err = run(["evaluate", "--checkpoint", last, "--data", wide], capsys)
    assert status == 1 and "labels must lie in [0, 4)" in err
    status, _, err = run(["occlude", "--checkpoint", last, "--data", wide, "--out",
                          str(tmp_path / "o.png")], capsys)
    assert status == 1 and "label 5 is not one of the 4 classes" in err
