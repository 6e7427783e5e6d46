"""Every visualisation on graph nets with dotted layer names (resnet_mini, googlenet-like
branches), summaries of the families, and the HTML report on a ResNet."""
import numpy as np
import pytest

import minconv as mc
from minconv.nn.base import shapes_only


def small_resnet():
    mc.nn.set_seed(3)
    net = mc.models.resnet_mini(widths=(8, 12, 16), stem_width=6)
    for key, value in net.buffers.items():  # non-trivial running statistics
        value[...] = (np.random.default_rng(1).uniform(0.5, 1.5, value.shape)
                      if key.endswith("var") else 0.1 * np.random.default_rng(2).standard_normal(
                          value.shape))
    return net


@pytest.fixture
def images(rng):
    return rng.standard_normal((12, 1, 28, 28)).astype(np.float32)


def test_summary_totals_match_torchvision():
    expected = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                "vgg11": 132_863_336, "vgg16": 138_357_544, "vgg19": 143_667_240,
                "googlenet": 6_624_904, "densenet121": 7_978_856}
    for name, count in expected.items():
        with shapes_only():
            net = mc.models.build(name)
        rows = mc.models.summary(net, (3, 224, 224), file=None)
        assert rows[-1]["params"] == count, name
        assert rows[-1]["output_shape"] == (1000,)
    with shapes_only():
        rows = {r["name"]: r for r in mc.models.summary(mc.models.resnet18(), (3, 224, 224),
                                                        file=None)}
    assert rows["total"]["macs"] == 1_814_073_344          # torchvision's 1.81 GFLOPS
    assert rows["layer1.0.add"]["output_shape"] == (64, 56, 56)
    # the residual sum sees the larger of its two paths' fields
    assert rows["layer1.0.add"]["rf_size"] == rows["layer1.0.bn2"]["rf_size"] == 27
    assert rows["layer4.1.relu2"]["rf_size"] == 435
    with shapes_only():
        g = {r["name"]: r for r in mc.models.summary(mc.models.googlenet(), (3, 224, 224),
                                                     file=None)}
    assert g["inception3a.cat"]["output_shape"] == (256, 28, 28)
    assert g["inception3a.cat"]["rf_size"] == max(
        g[f"inception3a.branch{i}.{'1.' if i > 1 else ''}relu"]["rf_size"] for i in (1, 2, 3, 4))


def test_deconvnet_topk_and_receptive_fields_on_a_resnet(images):
    net = small_resnet()
    dn = mc.vis.DeconvNet(net)
    for rule in ("deconv", "guided", "grad"):
        p = dn.project(images[:2], "layer2.0.relu2", channel=3, rule=rule)
        assert p.shape == (2, 1, 28, 28) and np.abs(p).max() > 0
    fields = mc.vis.receptive_fields(net, (1, 28, 28))
    assert fields["layer2.0.relu2"].size == fields["layer2.0.add"].size
    assert mc.vis.receptive_field(net, "layer2", (1, 28, 28)).size == \
        fields["layer2.0.relu2"].size
    result = mc.vis.top_k(net, images, ["layer1", "layer2.0.conv1"], k=3, batch_size=5,
                          show_progress=False)
    # the scan's best unit is the unit's activation recomputed directly
    r = result["layer1"]
    a = net.forward(images, until="layer1")
    n, (h, w) = r.images[2, 0], r.positions[2, 0]
    assert np.isclose(r.values[2, 0], a[n, 2, h, w])
    assert np.isclose(r.values[2, 0], a[:, 2].max())
    patches = mc.vis.top_k_patches(net, images, result["layer1"])
    assert len(patches) == 8 and patches[0][0].shape[-2:] == fields["layer1.0.relu2"].size


def test_occlusion_invariance_saliency_on_a_resnet(images, rng):
    net = small_resnet()
    occ = mc.vis.occlusion(net, images[0], size=8, stride=6)
    assert occ.layer == "layer3"    # the maps before global average pooling
    inv = mc.vis.invariance(net, images[:3], np.array([0, 1, 2]), "translate",
                            steps=[-2, 0, 2])
    assert set(inv.layers) == {"relu", "layer3"}
    s = mc.vis.saliency(net, images[:2])
    g = mc.vis.guided_backprop(net, images[:2])
    assert s.shape == (2, 28, 28) and g.shape == (2, 1, 28, 28)


def test_report_on_a_resnet(images, tmp_path):
    net = small_resnet()
    index = mc.vis.write_report(net, images, np.arange(12) % 10, str(tmp_path),
                                n_images=2)
    html = open(index if str(index).endswith(".html") else tmp_path / "index.html").read()
    assert "layer3" in html and "layer1.0.conv1" in html


def test_feature_evolution_and_filters_on_a_resnet(images):
    first, later = small_resnet(), small_resnet()
    for value in later.params.values():
        value *= 1.5
    evo = mc.vis.feature_evolution([first, later], images, ["layer2", "layer1.0.conv2"], maps=3,
                                   labels=["a", "b"])
    assert len(evo["layer2"].crops) == 2 and len(evo["layer2"].crops[0]) == 3
    assert mc.vis.first_filters(first).shape == (6, 1, 3, 3)
