"""The visualisation subcommands end to end on a tiny ZFNet-mini checkpoint, and the report."""
import os
import re

import pytest

import minconv as mc
from minconv import data
from minconv.cli import main
from minconv.train import save_checkpoint

pytestmark = pytest.mark.skipif(not data.is_idx_dir(data.FASHION_MNIST),
                                reason="Fashion-MNIST is not installed")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    mc.nn.set_seed(0)
    net = mc.models.zfnet_mini(widths=(4, 6, 6, 6, 4), fc_width=16)
    path = tmp_path_factory.mktemp("run") / "tiny.npz"
    spec = {"kind": "array", "mean": data.FASHION_MNIST_STATS[0],
            "std": data.FASHION_MNIST_STATS[1], "root": data.FASHION_MNIST, "classes": None}
    save_checkpoint(path, net, epoch=1, extra={"data": spec})
    return str(path)


def test_occlude_project_invariance(checkpoint, tmp_path, capsys):
    out = tmp_path / "occ.png"
    assert main(["occlude", "--checkpoint", checkpoint, "--limit", "20", "--index", "3",
                 "--size", "10", "--stride", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "occluder positions" in text
    out = tmp_path / "proj.png"
    assert main(["project", "--checkpoint", checkpoint, "--limit", "20", "--layer", "conv2",
                 "--top", "3", "--rule", "guided", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and text.count("conv2 map") == 3 and "receptive field of conv2" in text
    out = tmp_path / "inv.png"
    assert main(["invariance", "--checkpoint", checkpoint, "--limit", "30", "--transform",
                 "rotate", "--steps", "0:90:45", "--indices", "0,1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "rotate: steps 0, 45, 90" in text


def test_cli_errors_are_one_line(checkpoint, tmp_path, capsys):
    assert main(["project", "--checkpoint", checkpoint, "--limit", "5", "--layer", "conv9",
                 "--out", str(tmp_path / "p.png")]) == 1
    err = capsys.readouterr().err
    assert "unknown layer 'conv9'" in err and "conv1" in err and "Traceback" not in err
    assert main(["occlude", "--checkpoint", checkpoint, "--limit", "5", "--size", "40",
                 "--out", str(tmp_path / "o.png")]) == 1
    assert "larger than the 28x28 image" in capsys.readouterr().err
    assert main(["project", "--checkpoint", checkpoint, "--limit", "5", "--layer", "conv2",
                 "--channel", "6", "--out", str(tmp_path / "p.png")]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["occlude", "--checkpoint", checkpoint, "--limit", "5", "--index", "5",
                 "--out", str(tmp_path / "o.png")]) == 1
    assert "--index 5 is out of range" in capsys.readouterr().err


def test_visualize_writes_a_self_contained_page(checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["visualize", "--checkpoint", checkpoint, "--limit", "60", "--images", "2",
                 "--maps", "2", "--steps", "3", "--layers", "conv1,pool2,fc7", "--no-progress",
                 "--snapshots", checkpoint, checkpoint, "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    page = (out / "index.html").read_text()
    for title in ("receptive fields", "First-layer filters", "Top-9", "Feature evolution",
                  "Occlusion", "Invariance", "guided backpropagation", "Class models",
                  "Feature inversion", "Deep Dream", "Adversarial"):
        assert title in page, title
    sources = re.findall(r"src='([^']+)'", page)
    assert len(sources) >= 10
    for src in sources:      # every image is a file next to the page: no server, no network
        assert "/" not in src and (out / src).exists()
    assert "http" not in page.replace("http-equiv", "")
    embedded = tmp_path / "embedded"
    assert main(["visualize", "--checkpoint", checkpoint, "--limit", "30", "--images", "1",
                 "--maps", "1", "--steps", "2", "--layers", "conv1", "--embed",
                 "--no-progress", "--out", str(embedded)]) == 0
    page = (embedded / "index.html").read_text()
    assert page.count("src='data:image/png;base64,") >= 8
    assert os.listdir(embedded) == ["index.html"]


def test_demo_trains_then_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--epoch-images", "256",
                 "--scan", "300", "--steps", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"open the report: {out / 'report' / 'index.html'}" in text
    assert (out / "run" / "epoch0.npz").exists() and (out / "run" / "epoch1.npz").exists()
    page = (out / "report" / "index.html").read_text()
    assert "Feature evolution" in page
    assert (out / "report" / "evolution.png").exists()
