"""The paper's experiments: their pieces on hand-checked numbers, then each one end to end at
its --quick budget."""
import os

import numpy as np
import pytest

import minconv as mc
from minconv import experiments
from minconv.experiments import ablations, correspondence, first_layers, probes
from minconv.train.ensemble import evaluate_ensemble

FASHION = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------- correspondence

def test_mean_hamming_by_hand():
    signs = np.array([[1, -1, 0, 1], [1, 1, 0, 1], [-1, -1, 0, 0]])
    # pairs differ in 1, 2 and 3 of 4 positions
    assert correspondence.mean_hamming(signs) == pytest.approx((0.25 + 0.5 + 0.75) / 3)
    with pytest.raises(ValueError, match="N >= 2"):
        correspondence.mean_hamming(signs[:1])


def test_occlude_boxes():
    x = np.ones((2, 1, 5, 6))
    out = correspondence.occlude(x, [[0, 0, 2, 2], [3, 4, 2, 2]])
    assert out[0, 0, :2, :2].sum() == 0 and out[1, 0, 3:, 4:].sum() == 0
    assert out.sum() == x.sum() - 8 and x.sum() == 60        # the input is left alone
    with pytest.raises(ValueError, match=r"box \(top 4, left 0, height 2, width 2\) of image 0 "
                                         r"lies outside the 5x6 image"):
        correspondence.occlude(x, (4, 0, 2, 2))
    with pytest.raises(ValueError, match="outside"):
        correspondence.occlude(x, (0, -1, 2, 2))
    with pytest.raises(ValueError, match=r"\(2, 4\) array"):
        correspondence.occlude(x, np.zeros((3, 4)))


def test_correspondence_by_hand():
    """Features relu(x) of positive images: occluding the same box changes the same features
    (Delta 0); boxes at different places in each image differ in 2 x 4 of 16 signs."""
    conv = mc.nn.Conv2D(1, 1, 1)
    conv.params["W"][:] = 1
    conv.params["b"][:] = 0
    net = mc.nn.Sequential(conv, mc.nn.ReLU())
    x = np.random.default_rng(0).uniform(1, 2, (3, 1, 4, 4)).astype(np.float32)
    same = correspondence.correspondence(net, x, (0, 0, 2, 2), layers=["relu1"])
    assert same == {"relu1": 0.0}
    boxes = [[0, 0, 2, 2], [2, 2, 2, 2], [0, 2, 2, 2]]        # disjoint boxes
    assert correspondence.correspondence(net, x, boxes, ["relu1"])["relu1"] == 0.5


# ---------------------------------------------------------------- ablations

def test_ablation_variants_by_hand():
    small = dict(num_classes=3, size=12, widths=(2, 3, 4, 4, 2), fc_width=5)
    # conv 1*2*25+2, 2*3*25+3, 3*4*9+4, 4*4*9+4, 4*2*9+2; pool5 is 1x1x2; fc 2*5+5, 5*5+5, 5*3+3
    assert ablations.variant(**small).num_params() == 52 + 153 + 112 + 148 + 74 + 15 + 30 + 18
    no_fc = ablations.variant(drop_fc=True, **small)
    assert no_fc.num_params() == 52 + 153 + 112 + 148 + 74 + (2 * 3 + 3)
    no_conv = ablations.variant(drop_conv=True, **small)
    assert no_conv.num_params() == 52 + 153 + (3 * 2 * 9 + 2) + 15 + 30 + 18
    assert "conv3" not in no_conv.names and "fc6" not in no_fc.names
    both = ablations.variant(drop_conv=True, drop_fc=True, **small)
    assert both.names == ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
                          "conv5", "relu5", "pool5", "flatten", "fc8"]
    wide = ablations.variant(wide_conv=True, wide_fc=True, **small)
    assert wide["conv4"].params["W"].shape == (8, 8, 3, 3) and wide["fc7"].out_features == 10
    for net in (no_fc, no_conv, both, wide):
        assert net.forward(np.zeros((2, 1, 12, 12), np.float32)).shape == (2, 3)


# ---------------------------------------------------------------- first layers

def test_dead_filters_and_stride_power():
    W = np.ones((4, 1, 3, 3))
    W[3] *= 0.05
    assert first_layers.dead_filters(W).tolist() == [3]
    rng = np.random.default_rng(0)
    smooth = rng.standard_normal((5, 16, 16))
    grid = smooth + 4 * (np.arange(16) % 4 == 0)[None, :, None] * rng.standard_normal((5, 1, 1))
    assert first_layers.stride_power(grid)[4] > 2 > 1.2 > first_layers.stride_power(smooth)[4]
    with pytest.raises(ValueError, match="not a multiple of 4"):
        first_layers.stride_power(smooth[:, :14, :14])


@pytest.mark.parametrize("kind,side", [("alexnet", 112), ("zfnet", 112), ("zfnet", 64)])
def test_first_layer_nets(kind, side):
    net = first_layers.first_layer_net(kind, size=side)
    a = net.forward(np.zeros((1, 1, side, side), np.float32), until="relu1")
    assert a.shape[2] == {("alexnet", 112): 27, ("zfnet", 112): 54, ("zfnet", 64): 30}[
        (kind, side)]
    with pytest.raises(ValueError, match="kind must be"):
        first_layers.first_layer_net("vgg")


# ---------------------------------------------------------------- probes, ensembles

def test_linear_probe_separable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    z = (np.eye(3)[y] * 3 + 0.1 * rng.standard_normal((120, 3))).astype(np.float32)
    assert probes.linear_probe(z[:80], y[:80], z[80:], y[80:], epochs=20) == 1.0
    with pytest.raises(ValueError, match="same D"):
        probes.linear_probe(z, y, z[:, :2], y)


def _linear(W):
    fc = mc.nn.Linear(2, 2)
    fc.params["W"] = np.array(W, np.float32)
    fc.params["b"] = np.zeros(2, np.float32)
    return mc.nn.Sequential(mc.nn.Flatten(), fc)


def test_ensemble_by_hand():
    """Each net is right on one of two images; their averaged softmax on both."""
    x = np.array([[[[1, 0]]], [[[0, 1]]]], np.float32)
    y = np.array([0, 1])
    a, b = _linear([[1, 1], [0, .5]]), _linear([[.5, 0], [1, 3]])
    result = evaluate_ensemble([a, b], [(x, y)])
    assert [r["top1_error"] for r in result["single"]] == [0.5, 0.5]
    assert result["ensemble"]["top1_error"] == 0.0
    pa = np.exp([1, 0]) / np.exp([1, 0]).sum()
    pb = np.exp([.5, 1]) / np.exp([.5, 1]).sum()
    p1 = (pa[0] + pb[0]) / 2                                   # image 1, class 0
    p2 = (np.exp(.5) / (np.e + np.exp(.5)) + np.exp(3) / (1 + np.exp(3))) / 2
    assert result["ensemble"]["loss"] == pytest.approx(-(np.log(p1) + np.log(p2)) / 2, rel=1e-5)


# ---------------------------------------------------------------- end to end

needs_data = pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")


@needs_data
@pytest.mark.parametrize("name,header", [
    ("ablations", "| variant | parameters |"), ("correspondence", "relu5 same part"),
    ("probes", "linear probe test accuracy"), ("first_layers", "dead conv1 filters"),
    ("ensembles", "ensemble of 2")])
def test_experiment_quick(name, header, tmp_path, capsys):
    argv = [name, "--quick", "--data", FASHION]
    if name in ("first_layers", "ensembles"):
        argv += ["--out", str(tmp_path)]
    assert experiments.main(argv) == 0
    out = capsys.readouterr().out
    assert "dataset: Fashion-MNIST" in out and "seed 0" in out and header in out
    if name == "first_layers":
        assert os.path.exists(tmp_path / "first_layers.png")


def test_unknown_experiment():
    with pytest.raises(ValueError, match="unknown experiment 'table9'"):
        experiments.main(["table9"])
