"""Activation maximisation, Gaussian blur, nearest neighbours, heat maps, the random-subset
top-9, training snapshots and the ``attribute`` command."""
import os

import numpy as np
import pytest

import minconv as mc
from minconv.vis.blur import gaussian_kernel


def _mini(seed=0):
    mc.nn.set_seed(seed)
    net = mc.models.zfnet_mini(num_classes=4, widths=(3, 4, 4, 4, 3), fc_width=8, size=12,
                               dropout=0.0)
    rng = np.random.default_rng(seed)
    for layer in net:
        for key, value in layer.params.items():
            layer.params[key] = (value + 0.05 * rng.standard_normal(value.shape)).astype(
                value.dtype)
    return net


def test_gaussian_blur():
    g = gaussian_kernel(1.0)
    assert len(g) == 7 and np.isclose(g.sum(), 1) and g[3] == g.max()
    x = np.zeros((1, 1, 9, 9))
    x[0, 0, 4, 4] = 1
    y = mc.vis.gaussian_blur(x, 1.0)
    assert np.allclose(y[0, 0], np.pad(np.outer(g, g), 1))     # the 7x7 kernel, centred
    flat = np.full((2, 3, 5, 6), 0.7)
    assert np.allclose(mc.vis.gaussian_blur(flat, 2.0), 0.7)    # border replicated
    with pytest.raises(ValueError, match="sigma must be positive"):
        mc.vis.gaussian_blur(x, 0)


@pytest.mark.parametrize("layer,position", [("relu3", None), ("conv5", "map"), ("fc7", None)])
def test_maximise_raises_the_unit(layer, position):
    net = _mini()
    start = np.random.default_rng(0).standard_normal((2, 1, 12, 12)) * 0.1
    before = mc.vis.unit_activation(net, start, layer, [0, 1], position)
    x = mc.vis.maximise(net, layer, [0, 1], (1, 12, 12), position, steps=30, init=start,
                        tv=1e-3, blur_every=5)
    after = mc.vis.unit_activation(net, x, layer, [0, 1], position)
    assert x.shape == (2, 1, 12, 12) and np.all(after > before + 0.1)


def test_maximise_errors():
    net = _mini()
    with pytest.raises(ValueError, match="channel 9 is out of range for layer 'relu3'"):
        mc.vis.maximise(net, "relu3", 9, (1, 12, 12), steps=1)
    with pytest.raises(ValueError, match="outside layer 'relu3'"):
        mc.vis.maximise(net, "relu3", 0, (1, 12, 12), position=(9, 0), steps=1)
    with pytest.raises(ValueError, match="fully connected"):
        mc.vis.maximise(net, "fc7", 0, (1, 12, 12), position=(0, 0), steps=1)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        mc.vis.maximise(net, "fc7", 0, (1, 12, 12), steps=0)


def test_class_model_blur_runs():
    net = _mini()
    x = mc.vis.class_model(net, [1], (1, 12, 12), steps=4, blur_every=2)
    assert x.shape == (1, 1, 12, 12) and np.isfinite(x).all()


def test_nearest_neighbours_by_hand():
    """With the features of a 1x1 identity conv, neighbours are nearest in pixels."""
    conv = mc.nn.Conv2D(1, 1, 1)
    conv.params["W"][:] = 1
    conv.params["b"][:] = 0
    net = mc.nn.Sequential(conv, mc.nn.Flatten())
    base = np.zeros((5, 1, 2, 2), np.float32)
    base[:, 0, 0, 0] = [0, 1, 3, 6, 10]
    idx, dist = mc.vis.nearest_neighbours(net, base[[1]], base, k=2, layer="flatten1",
                                          exclude=[1])
    assert idx.tolist() == [[0, 2]] and np.allclose(dist, [[1, 2]])
    idx, _ = mc.vis.nearest_neighbours(net, base[[3]], base, k=3, layer="flatten1")
    assert idx.tolist() == [[3, 2, 4]]
    sheet = mc.vis.neighbours_sheet(base[[3]], base, idx)
    assert sheet.size[0] > sheet.size[1]
    with pytest.raises(ValueError, match="metric must be"):
        mc.vis.nearest_neighbours(net, base, base, layer="flatten1", metric="manhattan")
    with pytest.raises(ValueError, match="k = 9 for 5 images"):
        mc.vis.nearest_neighbours(net, base, base, k=9, layer="flatten1")


def test_heatmap_and_overlay():
    a = np.array([[-1.0, 0.0], [0.5, 1.0]])
    rgb = mc.vis.heatmap(a)
    assert rgb.shape == (3, 2, 2) and rgb.dtype == np.uint8
    assert rgb[:, 0, 1].min() >= 250                              # zero is white (bwr)
    assert rgb[0, 1, 1] == 255 and rgb[2, 1, 1] < 5 and rgb[2, 0, 0] == 255
    img = np.arange(4.0).reshape(1, 2, 2)
    out = mc.vis.overlay(img, np.zeros((2, 2)))
    assert np.array_equal(out[0], [[0, 85], [170, 255]])          # no map: the grey image
    with pytest.raises(ValueError, match="differ in size"):
        mc.vis.overlay(img, np.zeros((3, 3)))


def test_choose_maps():
    res = mc.vis.TopK("conv1", np.array([[3.0], [0.0], [5.0], [1.0], [2.0]]),
                      np.zeros((5, 1), np.int64), np.zeros((5, 1, 2), np.int64))
    assert mc.vis.choose_maps(res, 2).tolist() == [2, 0]
    r = mc.vis.choose_maps(res, 3, "random", seed=1)
    assert len(r) == 3 and 1 not in r and list(r) == sorted(r)   # map 1 never fired
    assert r.tolist() == mc.vis.choose_maps(res, 3, "random", seed=1).tolist()
    with pytest.raises(ValueError, match="how must be"):
        mc.vis.choose_maps(res, 2, "weakest")


FASHION = "/usr/share/datasets/fashion-mnist"
needs_data = pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-epoch zfnet_mini run with snapshots after each epoch."""
    if not os.path.isdir(FASHION):
        pytest.skip("Fashion-MNIST not installed")
    from minconv.cli import main
    out = tmp_path_factory.mktemp("run") / "fm"
    assert main(["train", "--model", "zfnet-mini", "--data", FASHION, "--out", str(out),
                 "--epochs", "2", "--per-class", "6", "--val-subset", "40", "--no-progress",
                 "--snapshot-every", "1", "--model-kwargs",
                 '{"widths": [4, 6, 8, 8, 6], "fc_width": 16}']) == 0
    return out


def test_snapshots_kept(run):
    snaps = mc.vis.run_snapshots(str(run / "last.npz"))
    assert [os.path.basename(s) for s in snaps] == ["epoch001.npz", "epoch002.npz"]
    assert mc.train.load_checkpoint(snaps[0]).epoch == 1
    assert not [f for f in os.listdir(run / "snapshots") if f.startswith(".")]  # no temp files


@pytest.mark.parametrize("method,extra", [
    ("gradcam", ["--layer", "relu5"]), ("ig", ["--steps", "4", "--integration", "riemann_left"]),
    ("saliency", ["--smooth", "3", "--nt-type", "vargrad"]), ("guided-gradcam",
                                                              ["--layer", "conv4"])])
def test_attribute_command(run, tmp_path, method, extra, capsys):
    from minconv.cli import main
    out = tmp_path / f"{method}.png"
    arr = tmp_path / f"{method}.npy"
    assert main(["attribute", "--method", method, "--checkpoint", str(run / "last.npz"),
                 "--index", "0", "3", "--out", str(out), "--save-array", str(arr)] + extra) == 0
    assert out.exists() and np.load(arr).shape[0] == 2
    assert "explained class" in capsys.readouterr().out


def test_attribute_command_errors(run, tmp_path, capsys):
    from minconv.cli import main
    assert main(["attribute", "--method", "gradcam", "--checkpoint", str(run / "last.npz"),
                 "--out", str(tmp_path / "x.png")]) == 1
    assert "needs --layer" in capsys.readouterr().err
    assert main(["attribute", "--method", "gradcam", "--layer", "fc7", "--checkpoint",
                 str(run / "last.npz"), "--out", str(tmp_path / "x.png")]) == 1
    assert "spatial layer" in capsys.readouterr().err


def test_evaluate_ensemble_command(run, capsys):
    from minconv.cli import main
    last = str(run / "last.npz")
    first = str(run / "snapshots" / "epoch001.npz")
    assert main(["evaluate", "--checkpoint", first, last, "--limit", "30"]) == 0
    out = capsys.readouterr().out
    assert "| ensemble of 2 (mean softmax) |" in out and out.count("epoch") >= 1
