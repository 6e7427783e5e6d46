"""Attribution methods on their own: completeness, quadrature, noise, hand-checked Grad-CAM,
and the errors bad arguments give."""
import numpy as np
import pytest

import minconv as mc


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


@pytest.fixture
def x():
    return np.random.default_rng(1).standard_normal((2, 1, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients_complete(x, method):
    """sum IG = S(x) - S(baseline), closer with more steps."""
    net = _mini().astype(np.float64)
    x = x.astype(np.float64)
    gaps = []
    for steps in (4, 64):
        attr, delta = mc.vis.integrated_gradients(net, x, target=[1, 2], n_steps=steps,
                                                  method=method, return_delta=True)
        logits = net.forward(x)
        span = np.abs(logits[[0, 1], [1, 2]] - net.forward(np.zeros_like(x))[[0, 1], [1, 2]])
        gaps.append(np.abs(delta) / span)
    assert np.all(gaps[1] < 2e-2), gaps
    assert gaps[1].max() <= gaps[0].max()


def test_quadrature_rules():
    for method in ("riemann_left", "riemann_right", "riemann_middle", "gausslegendre"):
        a, w = mc.vis.quadrature(7, method)
        assert np.isclose(w.sum(), 1.0) and a.min() >= 0 and a.max() <= 1
        assert np.isclose((w * a ** 2).sum(), 1 / 3, atol=0.08), method   # int_0^1 a^2 da
    # Captum's trapezoid: n points on [0, 1] but weights 1/n, so they sum to (n - 1) / n
    assert np.isclose(mc.vis.quadrature(7, "riemann_trapezoid")[1].sum(), 6 / 7)
    a, w = mc.vis.quadrature(3, "gausslegendre")           # exact up to degree 5
    assert np.isclose((w * a ** 5).sum(), 1 / 6)
    assert np.allclose(mc.vis.quadrature(4, "riemann_left")[0], [0, .25, .5, .75])
    assert np.allclose(mc.vis.quadrature(4, "riemann_trapezoid")[1], [.125, .25, .25, .125])


def test_bad_arguments(x):
    net = _mini()
    with pytest.raises(ValueError, match="n_steps must be at least 2"):
        mc.vis.integrated_gradients(net, x, n_steps=0, method="riemann_left")
    with pytest.raises(ValueError, match="n_steps must be at least 1"):
        mc.vis.integrated_gradients(net, x, n_steps=0)
    with pytest.raises(ValueError, match="method must be one of"):
        mc.vis.integrated_gradients(net, x, method="simpson")
    with pytest.raises(ValueError, match="baseline of shape"):
        mc.vis.integrated_gradients(net, x, baseline=np.zeros((3, 12, 12)))
    with pytest.raises(ValueError, match=r"fc7.*spatial layer"):
        mc.vis.grad_cam(net, x, "fc7")
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        mc.vis.grad_cam(net, x, "conv9")
    with pytest.raises(ValueError, match="target 7 is out of range for 4 classes"):
        mc.vis.grad_cam(net, x, "conv5", target=7)
    with pytest.raises(ValueError, match="noise must have shape"):
        mc.vis.smoothgrad(mc.vis.saliency, net, x, n_samples=2, noise=np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="kind must be"):
        mc.vis.smoothgrad(mc.vis.saliency, net, x, kind="median")
    with pytest.raises(ValueError, match="mode must be"):
        mc.vis.upsample(np.zeros((1, 1, 2, 2)), (4, 4), "cubic")


def test_grad_cam_by_hand():
    """A net whose last layer is a linear map of a 1x2x2x2 conv output: alpha_k is the mean
    of that map's weights, so the CAM is known in closed form."""
    conv = mc.nn.Conv2D(1, 2, 1, bias=False)
    conv.params["W"] = np.array([[[[1.0]]], [[[-2.0]]]])
    fc = mc.nn.Linear(8, 1, init_std=0)
    fc.params["W"] = np.array([[1.0, 1.0, 3.0, 3.0, 0.5, 0.5, 0.5, 0.5]])
    net = mc.nn.Sequential([("conv", conv), ("flatten", mc.nn.Flatten()), ("fc", fc)])
    net.astype(np.float64)
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    # A_0 = x, A_1 = -2x; alpha_0 = mean(1,1,3,3) = 2, alpha_1 = 0.5
    expected = 2 * x[0, 0] + 0.5 * (-2 * x[0, 0])                   # = x
    assert np.allclose(mc.vis.grad_cam(net, x, "conv", target=0, relu=False), expected)
    assert np.allclose(mc.vis.grad_cam(net, -x, "conv", target=0), 0)  # all negative: relu


def test_smoothgrad_seeded_and_zero_noise(x):
    net = _mini()
    a = mc.vis.smoothgrad(mc.vis.saliency, net, x, n_samples=3, seed=5)
    b = mc.vis.smoothgrad(mc.vis.saliency, net, x, n_samples=3, seed=5)
    c = mc.vis.smoothgrad(mc.vis.saliency, net, x, n_samples=3, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    quiet = mc.vis.smoothgrad(mc.vis.saliency, net, x, n_samples=2, stdev=0.0, kind="vargrad")
    assert np.allclose(quiet, 0, atol=1e-6)
    cam = mc.vis.smoothgrad(mc.vis.grad_cam, net, x, n_samples=2, layer="conv5")
    assert cam.shape == (2, 3, 3)


def test_guided_grad_cam_is_the_product(x):
    net = _mini()
    t = np.array([0, 1])
    cam = mc.vis.grad_cam(net, x, "relu2", t, upsample_to=(12, 12))
    expected = mc.vis.guided_backprop(net, x, t) * cam[:, None]
    assert np.allclose(mc.vis.guided_grad_cam(net, x, "relu2", t), expected)
