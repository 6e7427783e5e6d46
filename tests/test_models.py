"""Model shapes and parameter counts against the paper's Figure 3, and summary()."""
import io

import numpy as np
import pytest

import minconv as mc
from minconv import models

# Figure 3: every map after conv, pool, LRN, and the fully connected sizes
ZFNET_SHAPES = {
    "conv1": (96, 110, 110), "relu1": (96, 110, 110), "pool1": (96, 55, 55),
    "norm1": (96, 55, 55), "conv2": (256, 26, 26), "pool2": (256, 13, 13),
    "norm2": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13),
    "conv5": (256, 13, 13), "pool5": (256, 6, 6), "flatten": (9216,), "fc6": (4096,),
    "drop6": (4096,), "fc7": (4096,), "fc8": (1000,),
}
ZFNET_PARAMS = {"conv1": 96 * 3 * 7 * 7 + 96, "conv2": 256 * 96 * 25 + 256,
                "conv3": 384 * 256 * 9 + 384, "conv4": 384 * 384 * 9 + 384,
                "conv5": 256 * 384 * 9 + 256, "fc6": 9216 * 4096 + 4096,
                "fc7": 4096 * 4096 + 4096, "fc8": 4096 * 1000 + 1000}
ALEXNET_SHAPES = {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
                  "pool2": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
                  "fc8": (1000,)}


def layer_params(net, name):
    return sum(v.size for v in net[name].params.values())


@pytest.fixture(scope="module")
def zfnet_outputs():
    mc.nn.set_seed(0)
    net = models.zfnet(inplace=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    net.forward(x, record=tuple(ZFNET_SHAPES))
    return net, {k: v.shape[1:] for k, v in net.outputs.items()}


def test_zfnet_feature_maps_are_figure_3(zfnet_outputs):
    _, shapes = zfnet_outputs
    assert shapes == ZFNET_SHAPES


def test_zfnet_parameter_counts(zfnet_outputs):
    net, _ = zfnet_outputs
    for name, count in ZFNET_PARAMS.items():
        assert layer_params(net, name) == count, name
    assert net.num_params() == sum(ZFNET_PARAMS.values()) == 62_357_608
    assert net["conv1"].params["W"].shape == (96, 3, 7, 7)
    assert net["conv1"].stride == (2, 2)


def test_zfnet_layer_names_and_paper_init(zfnet_outputs):
    net, _ = zfnet_outputs
    assert net.names == ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
                         "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
                         "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    W = net["fc6"].params["W"][:200]
    assert abs(float(W.std()) - 0.01) < 1e-4 and not net["fc6"].params["b"].any()
    assert net["drop6"].p == 0.5 and net["drop7"].p == 0.5


@pytest.fixture(scope="module")
def alexnet():
    return models.alexnet(num_classes=1000)


def test_alexnet_shapes_and_count(alexnet):
    net = alexnet
    rows = {r["name"]: r for r in models.summary(net, (3, 224, 224), file=None)}
    for name, shape in ALEXNET_SHAPES.items():
        assert rows[name]["output_shape"] == shape, name
    assert net["conv1"].params["W"].shape == (96, 3, 11, 11)
    assert net.num_params() == 62_378_344


def test_summary_matches_a_real_forward_pass(zfnet_outputs):
    net, shapes = zfnet_outputs
    out = io.StringIO()
    rows = models.summary(net, (3, 224, 224), file=out)
    by_name = {r["name"]: r for r in rows}
    for name, shape in shapes.items():
        assert by_name[name]["output_shape"] == shape
    assert by_name["total"]["params"] == 62_357_608
    assert by_name["conv1"]["macs"] == 110 * 110 * 96 * 3 * 7 * 7
    assert by_name["fc6"]["macs"] == 9216 * 4096
    text = out.getvalue()
    assert "conv1" in text and "62,357,608" in text and "110x110" in text


def test_summary_receptive_fields_by_hand(zfnet_outputs):
    net, _ = zfnet_outputs
    rows = {r["name"]: r for r in models.summary(net, (3, 224, 224), file=None)}
    # conv1 k7 s2 p1: 7 px, jump 2, unit 0's first pixel at -1 (in the padding)
    assert (rows["conv1"]["rf_size"], rows["conv1"]["rf_jump"], rows["conv1"]["rf_start"]) \
        == (7, 2, -1)
    # pool1 k3 s2 p0: 7 + 2*2 = 11, jump 4, start -1 - 0*2 = -1
    assert (rows["pool1"]["rf_size"], rows["pool1"]["rf_jump"], rows["pool1"]["rf_start"]) \
        == (11, 4, -1)
    # conv2 k5 s2 p0: 11 + 4*4 = 27, jump 8, start -1
    assert (rows["conv2"]["rf_size"], rows["conv2"]["rf_jump"], rows["conv2"]["rf_start"]) \
        == (27, 8, -1)
    assert rows["norm1"]["rf_size"] == 11  # LRN mixes channels, not positions
    assert rows["pool5"]["rf_size"] == 171 and rows["pool5"]["rf_jump"] == 32
    assert rows["fc6"]["rf_size"] is None


def test_zfnet_mini_structure_and_shapes():
    net = models.zfnet_mini()
    rows = {r["name"]: r for r in models.summary(net, (1, 28, 28), file=None)}
    assert rows["pool1"]["output_shape"][1:] == (14, 14)
    assert rows["pool2"]["output_shape"][1:] == (7, 7)
    assert rows["pool5"]["output_shape"][1:] == (3, 3)
    assert [n for n in net.names if n[:4] in ("conv", "norm", "pool")] == [
        "conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5"]
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert net.forward(x).shape == (2, 10)
    # He-normal: std sqrt(2 / fan_in)
    W = net["conv2"].params["W"]
    assert abs(float(W.std()) / np.sqrt(2 / W[0].size) - 1) < 0.05


def test_lenet5_count():
    net = models.lenet5()
    assert net.num_params() == 61_706
    assert net.forward(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)


@pytest.mark.parametrize("name", ["alexnet", "zfnet-mini", "lenet5"])
def test_config_rebuilds_the_same_net(name, alexnet):
    net = alexnet if name == "alexnet" else models.build(name, num_classes=7)
    again = models.build(net.config["model"], **net.config["kwargs"])
    assert again.names == net.names
    assert {k: v.shape for k, v in again.params.items()} == \
        {k: v.shape for k, v in net.params.items()}
    assert net.config["kwargs"]["num_classes"] == (1000 if name == "alexnet" else 7)


def test_unknown_model_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*zfnet"):
        models.build("vgg")
    with pytest.raises(ValueError, match="zfnet_mini.*bad arguments"):
        models.build("zfnet_mini", colour=True)
    with pytest.raises(ValueError, match="5 conv widths"):
        models.zfnet_mini(widths=(8, 8))


def test_transfer_parameters_skips_the_head():
    source = models.zfnet_mini(widths=(4, 4, 4, 4, 4), fc_width=8)
    target = models.zfnet_mini(widths=(4, 4, 4, 4, 4), fc_width=8)
    fresh = target["fc8"].params["W"].copy()
    copied = models.transfer_parameters(source, target, skip=("fc8",))
    assert "fc8" not in copied and "conv1" in copied and "fc7" in copied
    np.testing.assert_array_equal(target["conv3"].params["W"], source["conv3"].params["W"])
    np.testing.assert_array_equal(target["fc8"].params["W"], fresh)
