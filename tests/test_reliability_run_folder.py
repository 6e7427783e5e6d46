"""A run folder is never clobbered: ``train --out`` onto an existing run refuses unless
--resume or --overwrite (which keeps the old run until the new one has a checkpoint), and
--out is checked writable before any data are read or any epoch is trained."""
import errno
import os
import tempfile

import pytest

from minconv import cli
from minconv.train import commands

from _reliability_data import TINY, write_idx


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def train_args(data, out, *extra):
    return ["train", "--model", "zfnet-mini", "--data", data, "--out", str(out), "--epochs",
            "1", "--batch-size", "32", "--no-progress", "--val-subset", "32"] + TINY + list(extra)


def snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in ("last.npz", "best.npz", "log.json")}


def test_a_second_train_onto_a_run_refuses_and_changes_nothing(tmp_path, capsys):
    data = write_idx(tmp_path / "idx")
    out = tmp_path / "runA"
    assert run(train_args(data, out), capsys)[0] == 0
    before = snapshot(out)
    status, stdout, err = run(train_args(data, out, "--lr", "1e-6"), capsys)
    assert status == 1 and "already holds a run" in err and "--overwrite" in err
    assert err.count("\n") == 1 and "Traceback" not in err and "epoch 1" not in stdout
    assert snapshot(out) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path, capsys,
                                                                       monkeypatch):
    data = write_idx(tmp_path / "idx")
    out = tmp_path / "runA"
    assert run(train_args(data, out), capsys)[0] == 0
    before = snapshot(out)

    # the new run dies before its first checkpoint: the old run is all there, unchanged
    def interrupted(self, epochs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(commands.Trainer, "fit", interrupted)
        assert run(train_args(data, out, "--overwrite"), capsys)[0] == 130
    assert snapshot(out) == before

    status, stdout, err = run(train_args(data, out, "--overwrite", "--lr", "1e-6"), capsys)
    assert status == 0, err
    after = snapshot(out)
    assert after["last.npz"] != before["last.npz"] and after["best.npz"] != before["best.npz"]


def test_resume_and_overwrite_together_refuse(tmp_path, capsys):
    data = write_idx(tmp_path / "idx")
    status, _, err = run(train_args(data, tmp_path / "r", "--resume", "--overwrite"), capsys)
    assert status == 1 and "contradict" in err


def test_out_below_a_regular_file_fails_before_any_training(tmp_path, capsys):
    data = write_idx(tmp_path / "idx")
    (tmp_path / "file").write_text("x")
    status, stdout, err = run(train_args(data, tmp_path / "file" / "run"), capsys)
    assert status == 1 and "Not a directory" in err and "file" in err
    assert err.count("\n") == 1 and "Traceback" not in err and "epoch" not in stdout
    status, stdout, err = run(train_args(data, tmp_path / "file"), capsys)
    assert status == 1 and "is not a folder" in err


def test_unwritable_or_full_out_fails_before_any_training(tmp_path, capsys, monkeypatch):
    data = write_idx(tmp_path / "idx")
    for code in (errno.EROFS, errno.ENOSPC, errno.EACCES):
        def refuse(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code))
        with monkeypatch.context() as m:
            m.setattr(tempfile, "TemporaryFile", refuse)
            status, stdout, err = run(train_args(data, tmp_path / "run"), capsys)
        assert status == 1 and os.strerror(code) in err, err
        assert err.count("\n") == 1 and "epoch" not in stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_fails_before_any_training(tmp_path, capsys):
    data = write_idx(tmp_path / "idx")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        status, stdout, err = run(train_args(data, out), capsys)
    finally:
        out.chmod(0o700)
    assert status == 1 and "Permission denied" in err and "epoch" not in stdout


def test_overwrite_replaces_the_old_runs_snapshots_too(tmp_path, capsys):
    data = write_idx(tmp_path / "idx")
    out = tmp_path / "runA"
    assert run(train_args(data, out, "--snapshot-every", "1"), capsys)[0] == 0
    assert os.listdir(out / "snapshots")
    os.remove(out / "last.npz"), os.remove(out / "best.npz"), os.remove(out / "log.json")
    os.remove(out / "log.csv"), os.remove(out / "curves.png")
    status, _, err = run(train_args(data, out), capsys)  # snapshots/ alone is a run too
    assert status == 1 and "already holds a run (snapshots)" in err
    assert run(train_args(data, out, "--overwrite"), capsys)[0] == 0
    assert not os.path.exists(out / "snapshots") and os.path.exists(out / "last.npz")
