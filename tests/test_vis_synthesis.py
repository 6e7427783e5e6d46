"""Saliency, guided backpropagation and the images made by gradient steps."""
import numpy as np
import pytest

import minconv as mc
from minconv import functional as F
from minconv.vis import (DeconvNet, adversarial, class_model, deep_dream, guided_backprop,
                         invert_features, saliency, total_variation)

from conftest import distinct, numerical_gradient, rel_error

nn = mc.nn


def classifier(rng, dtype="float64", channels=2):
    return nn.Sequential(nn.Conv2D(channels, 4, 3, padding=1, init_std=0.5, rng=rng, dtype=dtype),
                         nn.ReLU(inplace=True), nn.MaxPool2D(2), nn.LRN(3),
                         nn.Conv2D(4, 6, 3, padding=1, init_std=0.4, rng=rng, dtype=dtype),
                         nn.ReLU(inplace=True), nn.MaxPool2D(2), nn.Flatten(),
                         nn.Linear(6 * 2 * 2, 5, init_std=0.5, rng=rng, dtype=dtype))


def test_saliency_is_the_largest_absolute_gradient_over_channels():
    rng = np.random.default_rng(0)
    net = classifier(rng)
    x = distinct((2, 2, 8, 8), rng)
    sal = saliency(net, x, target=[3, 1])
    assert sal.shape == (2, 8, 8)
    for n, k in enumerate([3, 1]):
        xn = x[n:n + 1].copy()
        g = numerical_gradient(lambda: net.forward(xn)[0, k], xn, 1.0)
        assert rel_error(sal[n], np.abs(g[0]).max(axis=0)) < 1e-6
    # default target: the predicted class
    predicted = net.forward(x).argmax(axis=1)
    np.testing.assert_allclose(saliency(net, x), saliency(net, x, predicted))


def test_guided_backprop_rectifies_and_gates():
    rng = np.random.default_rng(1)
    net = nn.Sequential(nn.Conv2D(1, 3, 3, init_std=0.6, rng=rng, dtype="float64"), nn.ReLU(),
                        nn.Flatten(), nn.Linear(3 * 4 * 4, 2, init_std=0.6, rng=rng,
                                                dtype="float64"))
    x = rng.standard_normal((1, 1, 6, 6))
    a = F.conv2d(x, net["conv1"].params["W"], net["conv1"].params["b"])
    dy = net["fc1"].params["W"][1].reshape(1, 3, 4, 4)             # d score_1 / d relu1
    want = F.conv_transpose2d(np.maximum(dy, 0) * (a > 0), net["conv1"].params["W"])
    assert rel_error(guided_backprop(net, x, target=1), want) < 1e-12
    want_deconv = F.conv_transpose2d(np.maximum(dy, 0), net["conv1"].params["W"])
    got = DeconvNet(net).project(x, "fc1", 1, rule="deconv", keep_value=False)
    assert rel_error(got, want_deconv) < 1e-12
    assert not np.allclose(want, want_deconv)


def test_total_variation_value_and_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 4, 5))
    r, g = total_variation(x, beta=2.0, eps=0.0)
    dx = np.diff(x, axis=3)
    dy = np.diff(x, axis=2)
    assert r == pytest.approx((dx ** 2).sum() + (dy ** 2).sum())
    for beta in (2.0, 1.5):
        _, g = total_variation(x, beta=beta)
        want = numerical_gradient(lambda: total_variation(x, beta=beta)[0], x, 1.0)
        assert rel_error(g, want) < 1e-6


def test_class_models_reach_their_class():
    rng = np.random.default_rng(3)
    net = classifier(rng, "float32")
    images = class_model(net, [0, 1, 2, 3, 4], (2, 8, 8), steps=60, lr=0.1, l2=1e-3)
    assert images.shape == (5, 2, 8, 8)
    assert net.forward(images).argmax(axis=1).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="class 7 is out of range"):
        class_model(net, 7, (2, 8, 8), steps=1)


def test_feature_inversion_matches_the_features():
    rng = np.random.default_rng(4)
    net = classifier(rng)
    x = rng.standard_normal((1, 2, 8, 8))
    target = net.forward(x, until="relu1").copy()

    def loss(z):
        a = net.forward(z, until="relu1")
        return ((a - target) ** 2).sum() / (target ** 2).sum()
    rec = invert_features(net, x, "relu1", steps=150, lr=0.05, l2=1e-5, tv=1e-4)
    start = invert_features(net, x, "relu1", steps=0)
    assert loss(start) > 0.5
    assert loss(rec) < 0.05


def test_deep_dream_amplifies_the_layer():
    rng = np.random.default_rng(5)
    net = classifier(rng, "float32")
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    energy = lambda z: float((net.forward(z, until="relu2") ** 2).sum())  # noqa: E731
    dreamed = deep_dream(net, x, "relu2", steps=10, lr=0.05)
    assert dreamed.shape == x.shape
    assert energy(dreamed) > 1.5 * energy(x)


def test_adversarial_example_changes_the_label_but_hardly_the_image():
    rng = np.random.default_rng(6)
    net = classifier(rng, "float32")
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    original = int(net.forward(x).argmax())
    target = (original + 2) % 5
    adv = adversarial(net, x, target, steps=300)
    assert adv.success and adv.label == target and adv.original_label == original
    assert int(net.forward(adv.image).argmax()) == target
    assert 0 < adv.max_change < 0.5 * float(np.abs(x).max())
    with pytest.raises(ValueError, match="target 9 is out of range"):
        adversarial(net, x, 9)
