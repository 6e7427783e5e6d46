"""Occlusion maps against one occluded image at a time; invariance transforms and curves."""
import numpy as np
import pytest

import minconv as mc
from minconv import functional as F
from minconv.vis import (invariance, occlusion, occlusion_figure, plot_invariance,
                         transform_images)

nn = mc.nn


def classifier(rng, dtype="float64"):
    net = nn.Sequential(nn.Conv2D(2, 4, 3, padding=1, init_std=0.5, rng=rng, dtype=dtype),
                        nn.ReLU(inplace=True), nn.MaxPool2D(2),
                        nn.Conv2D(4, 6, 3, padding=1, init_std=0.5, rng=rng, dtype=dtype),
                        nn.ReLU(inplace=True), nn.MaxPool2D(2), nn.Flatten(),
                        nn.Linear(6 * 3 * 3, 8, init_std=0.5, rng=rng, dtype=dtype),
                        nn.ReLU(), nn.Linear(8, 5, init_std=0.5, rng=rng, dtype=dtype))
    return net


def test_occlusion_map_equals_one_image_at_a_time():
    rng = np.random.default_rng(0)
    net = classifier(rng)
    image = rng.standard_normal((2, 12, 13))
    fill = np.array([0.25, -0.5])
    occ = occlusion(net, image, label=3, size=(4, 3), stride=(3, 2), fill=fill, layer="relu2",
                    batch_size=7)
    assert occ.tops.tolist() == [0, 3, 6] and occ.lefts.tolist() == [0, 2, 4, 6, 8, 10]
    base = net.forward(image[None], until="relu2")[0]
    assert occ.channel == int(base.reshape(6, -1).max(axis=1).argmax())
    for i, t in enumerate(occ.tops):
        for j, l in enumerate(occ.lefts):
            x = image.copy()
            x[:, t:t + 4, l:l + 3] = fill[:, None, None]
            feature = net.forward(x[None], until="relu2")[0, occ.channel].sum()
            p = F.softmax(net.forward(x[None]))[0]
            assert occ.feature[i, j] == pytest.approx(feature, rel=1e-10)
            assert occ.prob[i, j] == pytest.approx(p[3], rel=1e-10)
            assert occ.top_class[i, j] == p.argmax()
    assert occ.baseline["prob"] == pytest.approx(F.softmax(net.forward(image[None]))[0, 3])
    assert occ.projection.shape == image.shape


def test_occluding_a_region_without_signal_changes_nothing():
    rng = np.random.default_rng(1)
    net = classifier(rng, "float32")
    image = rng.standard_normal((2, 12, 12)).astype(np.float32)
    image[:, :5, :] = 0.0                      # the top five rows already hold the grey
    occ = occlusion(net, image, label=1, size=4, stride=1, fill=0.0)
    inside = occ.tops + 4 <= 5                 # squares entirely within those rows
    assert inside.sum() == 2
    np.testing.assert_allclose(occ.prob[inside], occ.baseline["prob"], rtol=1e-5)
    assert (occ.top_class[inside] == occ.baseline["top_class"]).all()
    assert not np.allclose(occ.prob[~inside], occ.baseline["prob"], rtol=1e-5)
    fig = occlusion_figure(image, occ, [f"class {k}" for k in range(5)])
    assert len(fig.axes) >= 5


def test_occlusion_errors():
    net = classifier(np.random.default_rng(2))
    image = np.zeros((2, 12, 12))
    with pytest.raises(ValueError, match="occluder 13x13 is larger than the 12x12 image"):
        occlusion(net, image, 0, size=13)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        occlusion(net, image, 0, size=3, stride=0)
    with pytest.raises(ValueError, match="valid names"):
        occlusion(net, image, 0, size=3, layer="conv9")
    with pytest.raises(ValueError, match="feature map 6 is out of range"):
        occlusion(net, image, 0, size=3, layer="conv2", channel=6)
    with pytest.raises(ValueError, match="label 5 is out of range"):
        occlusion(net, image, 5, size=3)


# ---------------------------------------------------------------------- invariance

def test_transforms_are_exact_where_they_should_be():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 9))
    moved = transform_images(x, "translate", [0, 2, -3], fill=7.0)   # (N, S, C, H, W)
    np.testing.assert_allclose(moved[:, 0], x)
    np.testing.assert_allclose(moved[:, 1, :, 2:], x[:, :, :-2])     # down by 2 rows
    assert (moved[:, 1, :, :2] == 7.0).all()
    np.testing.assert_allclose(moved[:, 2, :, :-3], x[:, :, 3:])     # up by 3 rows
    assert (moved[:, 2, :, -3:] == 7.0).all()
    turned = transform_images(x, "rotate", [90, 180, 360])
    np.testing.assert_allclose(turned[:, 0], np.rot90(x, 1, axes=(2, 3)), atol=1e-9)
    np.testing.assert_allclose(turned[:, 1], np.rot90(x, 2, axes=(2, 3)), atol=1e-9)
    np.testing.assert_allclose(turned[:, 2], x, atol=1e-9)
    scaled = transform_images(x, "scale", [1.0, 2.0])
    np.testing.assert_allclose(scaled[:, 0], x)
    np.testing.assert_allclose(scaled[:, 1, :, 4, 4], x[:, :, 4, 4])  # the centre stays
    np.testing.assert_allclose(scaled[:, 1, :, 2, 4], x[:, :, 3, 4])  # 2 from it came from 1


def test_transform_ranges_that_empty_the_image_are_errors():
    x = np.zeros((1, 1, 9, 9))
    with pytest.raises(ValueError, match="translate by 9 leaves nothing of the 9x9 image"):
        transform_images(x, "translate", [0, 9])
    with pytest.raises(ValueError, match="scale factors must be positive"):
        transform_images(x, "scale", [1, 0])
    with pytest.raises(ValueError, match="scale by 0.01 shrinks the 9x9 image below one pixel"):
        transform_images(x, "scale", [0.01])
    with pytest.raises(ValueError, match="unknown transform 'shear'"):
        transform_images(x, "shear", [1])
    with pytest.raises(ValueError, match="no steps"):
        transform_images(x, "rotate", [])


def test_invariance_distances_and_probabilities():
    rng = np.random.default_rng(4)
    net = classifier(rng)
    x = rng.standard_normal((3, 2, 12, 12))
    labels = np.array([0, 4, 2])
    r = invariance(net, x, labels, "translate", steps=[-2, 0, 3], batch_size=4)
    assert r.layers == ["relu1", "relu3"]          # first conv and penultimate fc, rectified
    assert r.distances["relu1"].shape == (3, 3) and r.prob.shape == (3, 3)
    np.testing.assert_allclose(r.distances["relu3"][:, 1], 0, atol=1e-12)
    p0 = F.softmax(net.forward(x))
    np.testing.assert_allclose(r.prob[:, 1], p0[np.arange(3), labels])
    moved = transform_images(x, "translate", [3])[:, 0]
    want = np.sqrt(((net.forward(moved, until="relu1") - net.forward(x, until="relu1"))
                    ** 2).reshape(3, -1).sum(axis=1))
    np.testing.assert_allclose(r.distances["relu1"][:, 2], want, rtol=1e-10)
    np.testing.assert_allclose(r.prob[:, 2], F.softmax(net.forward(moved))[np.arange(3), labels])
    r2 = invariance(net, x, labels, "rotate", layers=["conv2"])
    fig = plot_invariance([r, r2], class_names=list("abcde"))
    assert len(fig.axes) == 2 * 3
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        invariance(net, x, labels[:2])
    with pytest.raises(ValueError, match="valid names"):
        invariance(net, x, labels, layers=["fc9"])
