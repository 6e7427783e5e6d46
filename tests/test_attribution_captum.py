"""minconv's attributions against Captum's on the same weights.

The twin is a torch.nn.Sequential built layer by layer from a minconv zfnet_mini (small
widths, random weights) with non-inplace ReLUs, as Captum's GuidedBackprop and
Deconvolution hook the ReLU modules. Under the guided and deconv rules minconv lets LRN pass
the signal through (the paper's deconvnet) while Captum differentiates it, so those two
rules are compared on the same net without its LRN layers.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import minconv as mc  # noqa: E402

RTOL = 2e-4  # float32 through a dozen layers, relative to the largest entry


def _twin(net):
    """A torch.nn.Sequential equal to the minconv Sequential ``net`` (eval mode, float32)."""
    nn = torch.nn
    modules = []
    for layer in net:
        kind = type(layer).__name__
        if kind == "Conv2D":
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          layer.stride, layer.padding)
            m.weight.data = torch.from_numpy(np.array(layer.params["W"]))
            m.bias.data = torch.from_numpy(np.array(layer.params["b"]))
        elif kind == "Linear":
            m = nn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.from_numpy(np.array(layer.params["W"]))
            m.bias.data = torch.from_numpy(np.array(layer.params["b"]))
        elif kind == "ReLU":
            m = nn.ReLU(inplace=False)
        elif kind == "MaxPool2D":
            m = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding,
                             ceil_mode=layer.ceil_mode)
        elif kind == "LRN":
            m = nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
        elif kind == "Dropout":
            m = nn.Dropout(layer.p)
        elif kind == "Flatten":
            m = nn.Flatten()
        else:
            raise AssertionError(f"no twin for {kind}")
        modules.append((layer.name, m))
    from collections import OrderedDict
    return nn.Sequential(OrderedDict(modules)).eval()


def _mini(lrn=True, seed=0):
    mc.nn.set_seed(seed)
    net = mc.models.zfnet_mini(num_classes=5, widths=(4, 6, 8, 8, 6), fc_width=12, size=16,
                               dropout=0.0)
    if not lrn:
        net = mc.nn.Sequential([(name, layer) for name, layer in net.items()
                                if type(layer).__name__ != "LRN"])
    rng = np.random.default_rng(seed + 1)
    for layer in net:   # biases too, so that no unit sits exactly at a ReLU's kink
        for key, value in layer.params.items():
            layer.params[key] = (value + 0.05 * rng.standard_normal(value.shape)).astype(
                np.float32)
    return net


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).standard_normal((3, 1, 16, 16)).astype(np.float32)


TARGET = np.array([0, 3, 1])


def _close(actual, expected, what, rtol=RTOL):
    expected = expected.detach().numpy() if hasattr(expected, "detach") else expected
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = np.abs(expected).max()
    assert scale > 0, f"{what}: Captum's attribution is identically zero"
    err = np.abs(actual - expected).max() / scale
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:.0e}"


def _input(x):
    return torch.from_numpy(x.copy()).requires_grad_(True)


@pytest.mark.parametrize("layer", ["conv2", "relu5", "pool2"])
def test_grad_cam(images, layer):
    net = _mini()
    twin = _twin(net)
    ours = mc.vis.grad_cam(net, images, layer, TARGET)
    theirs = captum_attr.LayerGradCam(twin, twin.get_submodule(layer)).attribute(
        _input(images), target=torch.from_numpy(TARGET), relu_attributions=True)
    _close(ours, theirs[:, 0], f"Grad-CAM at {layer}")
    raw = mc.vis.grad_cam(net, images, layer, TARGET, relu=False)
    theirs_raw = captum_attr.LayerGradCam(twin, twin.get_submodule(layer)).attribute(
        _input(images), target=torch.from_numpy(TARGET))
    _close(raw, theirs_raw[:, 0], f"Grad-CAM without ReLU at {layer}")
    assert (np.asarray(raw) < 0).any(), "the unrectified map should show negative evidence"


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_matches_interpolate(mode):
    a = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    for size in [(16, 16), (11, 20), (5, 7)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(a), size, mode=mode)
        _close(mc.vis.upsample(a, size, mode), ref, f"upsample {mode} to {size}", 1e-6)


def test_guided_grad_cam(images):
    net = _mini(lrn=False)
    twin = _twin(net)
    ours = mc.vis.guided_grad_cam(net, images, "conv4", TARGET)
    theirs = captum_attr.GuidedGradCam(twin, twin.conv4).attribute(
        _input(images), target=torch.from_numpy(TARGET))
    _close(ours, theirs, "Guided Grad-CAM")


@pytest.mark.parametrize("method,steps", [("gausslegendre", 20), ("riemann_trapezoid", 16),
                                          ("riemann_left", 8), ("riemann_middle", 8),
                                          ("riemann_right", 8)])
def test_integrated_gradients(images, method, steps):
    net = _mini()
    twin = _twin(net)
    baseline = np.full_like(images, 0.1)
    ours, delta = mc.vis.integrated_gradients(net, images, TARGET, baseline, n_steps=steps,
                                              method=method, batch_size=40, return_delta=True)
    theirs, their_delta = captum_attr.IntegratedGradients(twin).attribute(
        _input(images), torch.from_numpy(baseline), target=torch.from_numpy(TARGET),
        n_steps=steps, method=method, return_convergence_delta=True)
    _close(ours, theirs, f"IG {method}")
    assert np.allclose(delta, their_delta.detach().numpy(), atol=1e-3 * np.abs(
        theirs.detach().numpy()).sum() / len(images))


def test_saliency_guided_and_deconvolution(images):
    net = _mini(lrn=False)
    twin = _twin(net)
    t = torch.from_numpy(TARGET)
    _close(mc.vis.saliency(net, images, TARGET, reduce=None),
           captum_attr.Saliency(twin).attribute(_input(images), target=t), "saliency")
    _close(mc.vis.input_gradient(net, images, TARGET),
           captum_attr.Saliency(twin).attribute(_input(images), target=t, abs=False),
           "signed gradient")
    _close(mc.vis.guided_backprop(net, images, TARGET),
           captum_attr.GuidedBackprop(twin).attribute(_input(images), target=t),
           "guided backprop")
    _close(mc.vis.input_gradient(net, images, TARGET, rule="deconv"),
           captum_attr.Deconvolution(twin).attribute(_input(images), target=t),
           "deconvolution")
    _close(mc.vis.input_x_gradient(net, images, TARGET),
           captum_attr.InputXGradient(twin).attribute(_input(images), target=t),
           "input x gradient")


def test_saliency_reductions(images):
    net = _mini()
    g = np.abs(mc.vis.input_gradient(net, images, TARGET))
    assert np.array_equal(mc.vis.saliency(net, images, TARGET), g.max(axis=1))
    assert np.allclose(mc.vis.saliency(net, images, TARGET, reduce="mean"), g.mean(axis=1))
    with pytest.raises(ValueError, match="reduce"):
        mc.vis.saliency(net, images, TARGET, reduce="sum")


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_shares_captums_noise(images, kind):
    net = _mini()
    twin = _twin(net)
    S, stdev = 4, 0.3
    torch.manual_seed(7)
    noise = torch.normal(0, torch.full((len(images) * S,) + images.shape[1:], stdev))
    torch.manual_seed(7)  # Captum draws the same (N * S, C, H, W) block, image-major
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(twin)).attribute(
        _input(images), nt_type=kind, nt_samples=S, stdevs=stdev,
        target=torch.from_numpy(TARGET), abs=False)
    ours = mc.vis.smoothgrad(mc.vis.input_gradient, net, images, n_samples=S, kind=kind,
                             noise=noise.numpy().reshape((len(images), S) + images.shape[1:]),
                             target=TARGET, batch_size=5)
    _close(ours, theirs, kind)


class _TorchAdd(torch.nn.Module):
    def forward(self, a, b):
        return a + b


class _TorchBlock(torch.nn.Module):
    """relu(conv(x)) + x, the twin of the minconv residual Graph below."""

    def __init__(self, c):
        super().__init__()
        self.conv, self.relu, self.add = torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU(), \
            _TorchAdd()

    def forward(self, x):
        return self.add(self.relu(self.conv(x)), x)


def _residual(seed=0):
    """A Graph with a nested residual Graph ``block`` and its PyTorch twin."""
    rng = np.random.default_rng(seed)
    block = mc.nn.Graph()
    block.add("conv", mc.nn.Conv2D(4, 4, 3, padding=1))
    block.add("relu", mc.nn.ReLU())
    block.add("add", mc.nn.Add(), inputs=["relu", "input"])
    net = mc.nn.Graph()
    net.add("conv1", mc.nn.Conv2D(1, 4, 3, padding=1))
    net.add("relu1", mc.nn.ReLU())
    net.add("block", block)
    net.add("pool", mc.nn.MaxPool2D(2))
    net.add("flatten", mc.nn.Flatten())
    net.add("fc", mc.nn.Linear(64, 3))
    for key, value in net.params.items():
        net.load_state_dict({key: (0.4 * rng.standard_normal(value.shape)).astype(np.float32)},
                            strict=False)
    twin = torch.nn.Sequential()
    twin.add_module("conv1", torch.nn.Conv2d(1, 4, 3, padding=1))
    twin.add_module("relu1", torch.nn.ReLU())
    twin.add_module("block", _TorchBlock(4))
    twin.add_module("pool", torch.nn.MaxPool2d(2))
    twin.add_module("flatten", torch.nn.Flatten())
    twin.add_module("fc", torch.nn.Linear(64, 3))
    names = {"conv1.W": "conv1.weight", "conv1.b": "conv1.bias", "block.conv.W":
             "block.conv.weight", "block.conv.b": "block.conv.bias", "fc.W": "fc.weight",
             "fc.b": "fc.bias"}
    twin.load_state_dict({names[k]: torch.from_numpy(np.array(v)) for k, v in
                          net.params.items()})
    return net, twin.eval()


@pytest.mark.parametrize("layer", ["block", "block.conv", "relu1"])
def test_grad_cam_on_a_graph(layer):
    """A residual stage (a nested Graph) and a layer inside it are Grad-CAM layers."""
    net, twin = _residual()
    x = np.random.default_rng(4).standard_normal((3, 1, 8, 8)).astype(np.float32)
    t = np.array([2, 0, 1])
    ours = mc.vis.grad_cam(net, x, layer, t, relu=False)
    theirs = captum_attr.LayerGradCam(twin, twin.get_submodule(layer)).attribute(
        _input(x), target=torch.from_numpy(t))
    _close(ours, theirs[:, 0], f"Grad-CAM at {layer} of a Graph")
    ig = mc.vis.integrated_gradients(net, x, t, n_steps=10)
    theirs_ig = captum_attr.IntegratedGradients(twin).attribute(
        _input(x), target=torch.from_numpy(t), n_steps=10)
    _close(ig, theirs_ig, "IG on a Graph")
    _close(mc.vis.guided_backprop(net, x, t),
           captum_attr.GuidedBackprop(twin).attribute(_input(x), target=torch.from_numpy(t)),
           "guided backprop on a Graph")
