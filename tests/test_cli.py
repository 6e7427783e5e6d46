"""The minconv command end to end on tiny subsets: summary, train, resume, evaluate, errors."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minconv import cli, data

FASHION = data.FASHION_MNIST
has_fashion = pytest.mark.skipif(not data.is_idx_dir(FASHION), reason="no Fashion-MNIST here")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model-kwargs", '{"widths": [4, 6, 8, 8, 6], "fc_width": 16}']


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_summary_prints_figure_3(capsys):
    status, out, _ = run(["summary", "--model", "zfnet"], capsys)
    assert status == 0
    assert "96x110x110" in out and "256x6x6" in out and "9216" in out and "62,357,608" in out


def test_summary_of_mini_with_other_input(capsys):
    status, out, err = run(["summary", "--model", "zfnet-mini", "--input", "1,28,28"], capsys)
    assert status == 0 and "fc8" in out, err


@has_fashion
def test_train_resume_evaluate_end_to_end(tmp_path, capsys):
    out_dir = str(tmp_path / "run")
    base = ["train", "--model", "zfnet-mini", "--data", FASHION, "--out", out_dir,
            "--subset", "256", "--val-subset", "200", "--batch-size", "64", "--no-progress",
            "--schedule", "cosine", "--warmup", "0.5"] + TINY
    status, out, err = run(base + ["--epochs", "1"], capsys)
    assert status == 0, err
    assert "epoch 1 |" in out and "final: top-1 error" in out
    for name in ("last.npz", "best.npz", "log.csv", "log.json", "curves.png"):
        assert os.path.exists(os.path.join(out_dir, name)), name
    status, out, err = run(base + ["--epochs", "2", "--resume"], capsys)
    assert status == 0, err
    assert "resumed from" in out and "after epoch 1" in out and "epoch 2 |" in out
    log = json.load(open(os.path.join(out_dir, "log.json")))
    assert [r["epoch"] for r in log] == [1, 2]
    status, out, err = run(["evaluate", "--checkpoint", os.path.join(out_dir, "last.npz"),
                            "--limit", "300", "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["count"] == 300 and result["epoch"] == 2 and result["tta"] == "flip"
    assert 0.0 <= result["top1_error"] <= 1.0 and result["top5_error"] <= result["top1_error"]


@has_fashion
def test_transfer_flags(tmp_path, capsys):
    pre = str(tmp_path / "pre")
    common = ["--data", FASHION, "--epochs", "1", "--batch-size", "32", "--no-progress",
              "--val-subset", "100", "--model", "zfnet-mini"] + TINY
    assert run(["train", "--out", pre, "--classes", "0,1,2,3,4", "--subset", "128"] + common,
               capsys)[0] == 0
    status, out, err = run(["train", "--out", str(tmp_path / "new"), "--classes", "5,6,7,8,9",
                            "--per-class", "10", "--init-from", os.path.join(pre, "last.npz"),
                            "--freeze", "conv1,conv2,conv3,conv4,conv5,fc6,fc7"] + common,
                           capsys)
    assert status == 0, err
    assert "50 training images" in out and "fc8 drawn anew" in out


def write_image_folders(root):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for name in ("a", "b"):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.integers(0, 256, (36, 40, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_train_on_an_image_folder_with_a_bad_file(tmp_path, capsys):
    write_image_folders(tmp_path)
    (tmp_path / "train" / "a" / "readme.txt").write_text("hello")
    argv = ["train", "--model", "zfnet-mini", "--data", str(tmp_path), "--epochs", "1",
            "--batch-size", "4", "--out", str(tmp_path / "run"), "--no-progress"] + TINY
    status, _, err = run(argv, capsys)
    assert status == 1 and "readme.txt: not an image file" in err
    assert "Traceback" not in err
    with pytest.warns(RuntimeWarning, match="readme.txt"):
        status, out, err = run(argv + ["--skip-bad"], capsys)
    assert status == 0, err
    assert "skipped 1 unreadable files" in out
    status, out, err = run(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.npz"),
                            "--tta", "ten"], capsys)
    assert status == 0, err
    assert "on 4 test images, views: ten" in out


def test_bad_idx_file_is_a_one_line_error(tmp_path, capsys):
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            with gzip.open(tmp_path / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(b"\x00\x00\x08\x03" + bytes(40))  # header says 3-D, sizes garbage
    status, _, err = run(["train", "--model", "zfnet-mini", "--data", str(tmp_path), "--out",
                          str(tmp_path / "run"), "--no-progress"], capsys)
    assert status == 1
    assert "train-images-idx3-ubyte.gz: IDX header declares" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_missing_checkpoint_and_unknown_model(tmp_path, capsys):
    status, _, err = run(["evaluate", "--checkpoint", str(tmp_path / "none.npz")], capsys)
    assert status == 1 and "none.npz does not exist" in err
    status, _, err = run(["summary", "--model", "resnet"], capsys)
    assert status == 1 and "unknown model 'resnet'" in err


def test_console_script_is_declared_and_module_runs():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'minconv = "minconv.cli:main"' in text
    result = subprocess.run([sys.executable, "-m", "minconv.cli", "summary", "--model",
                             "lenet5"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "61,706" in result.stdout


def test_subcommand_registry_skips_missing_modules(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ["minconv.nothing_here"])
    parser, runners = cli.build_parser()
    assert {"train", "evaluate", "summary"} <= set(runners)


@has_fashion
@pytest.mark.parametrize("given,dropout", [({}, None), ({"dropout": 0.3}, 0.3)])
def test_train_builds_the_model_with_the_recipes_arguments(tmp_path, capsys, given, dropout):
    from minconv.train import load_checkpoint
    from minconv.train.recipes import recipe
    out_dir = str(tmp_path / "run")
    kwargs = dict({"widths": [4, 6, 8, 8, 6], "fc_width": 16}, **given)
    status, out, err = run(["train", "--model", "zfnet-mini", "--data", FASHION, "--out", out_dir,
                            "--subset", "64", "--val-subset", "50", "--batch-size", "64",
                            "--epochs", "1", "--no-progress", "--model-kwargs",
                            json.dumps(kwargs)], capsys)
    assert status == 0, err
    built = load_checkpoint(os.path.join(out_dir, "last.npz")).net.config["kwargs"]
    expected = recipe("zfnet_mini")["model_kwargs"]["dropout"] if dropout is None else dropout
    assert built["dropout"] == expected and built["widths"] == [4, 6, 8, 8, 6]
