"""The families against torchvision: the same random weights and BatchNorm statistics
through a state dict, the same logits in evaluation; for resnet18 the same loss,
parameter gradients and running statistics after one training step; the deconvnet,
guided backprop and gradient projections through a residual stage equal autograd with
the matching ReLU backward.

Kept affordable on two cores: batch 1-2, every family at 64x64 and a few at 224x224
(resnet18, googlenet, densenet121 and vgg11_bn; vgg16/19 and resnet34/50 at 224 are
left out: the same layers, only slower). Parameter counts come from the summary tests.
"""
import numpy as np
import pytest

import minconv as mc
from minconv.nn.base import shapes_only

torch = pytest.importorskip("torch")
tv_models = pytest.importorskip("torchvision.models")


def randomise_bn(model, seed=0):
    """Random BatchNorm scales, shifts and running statistics (the defaults hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def torch_model(name, **kwargs):
    torch.manual_seed(0)
    ctor = {"vgg11_bn": tv_models.vgg11_bn, "vgg16_bn": tv_models.vgg16_bn}.get(name) or \
        getattr(tv_models, name)
    if name == "googlenet":
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", False)
    return randomise_bn(ctor(**kwargs)).eval()


def minconv_model(name, **kwargs):
    if name.endswith("_bn"):
        name, kwargs = name[:-3], dict(kwargs, batch_norm=True)
    with shapes_only():  # the weights come from torchvision: draw none
        return mc.models.build(name, **kwargs)


def loaded_pair(name, **kwargs):
    tm = torch_model(name, **kwargs)
    net = minconv_model(name, **kwargs)
    mc.io.from_torch_state_dict(net, tm.state_dict())
    return tm, net


def image(rng, n, side):
    return rng.standard_normal((n, 3, side, side)).astype(np.float32)


def assert_close(actual, expected, what, tol=2e-4):
    expected = expected.detach().numpy() if hasattr(expected, "detach") else expected
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-12)
    err = float(np.abs(actual.astype(np.float64) - expected).max()) / scale
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


FAMILIES_64 = ["vgg11", "vgg11_bn", "vgg16", "resnet18", "resnet34", "resnet50", "googlenet",
               "densenet121"]
FAMILIES_224 = ["resnet18", "googlenet", "densenet121", "vgg11_bn"]


@pytest.mark.parametrize("name", FAMILIES_64)
def test_logits_match_torchvision_at_64(name, rng):
    tm, net = loaded_pair(name)
    x = image(rng, 2, 64)   # VGG's adaptive pooling spreads 2x2 maps to 7x7 here
    with torch.no_grad():
        expected = tm(torch.from_numpy(x))
    assert_close(net.forward(x), expected, f"{name} logits at 64x64")


@pytest.mark.parametrize("name", FAMILIES_224)
def test_logits_match_torchvision_at_224(name, rng):
    tm, net = loaded_pair(name)
    x = image(rng, 1, 224)
    with torch.no_grad():
        expected = tm(torch.from_numpy(x))
    assert_close(net.forward(x), expected, f"{name} logits at 224x224")


def test_googlenet_transform_input_and_aux_heads(rng):
    tm = torch_model("googlenet", aux_logits=True, transform_input=True)
    net = mc.models.googlenet(aux_logits=True, transform_input=True)
    mc.io.from_torch_state_dict(net, tm.state_dict())
    x = image(rng, 1, 96)
    with torch.no_grad():
        expected = tm(torch.from_numpy(x))
        t = tm._transform_input(torch.from_numpy(x))
        for layer in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                      "inception3b", "maxpool3", "inception4a"):
            t = getattr(tm, layer)(t)
        aux1 = tm.aux1(t)
    assert_close(net.forward(x), expected, "googlenet logits with transform_input")
    assert_close(net.forward(x, until="aux1"), aux1, "googlenet aux1 logits")


def test_state_dict_round_trip_through_torch(rng):
    tm, net = loaded_pair("resnet18", num_classes=7)
    back = mc.io.to_torch_state_dict(net)
    expected = tm.state_dict()
    assert set(back) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
    fresh = torch_model("resnet18", num_classes=7)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


def test_state_dict_from_another_architecture_is_refused(rng):
    net = mc.models.resnet18(num_classes=10)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"fc.weight has shape \(1000, 512\) but fc.W is "
                                         r"\(10, 512\)"):
        mc.io.from_torch_state_dict(net, torch_model("resnet18").state_dict())
    with pytest.raises(ValueError, match=r"'layer1.2.conv1.weight' names no layer"):
        mc.io.from_torch_state_dict(mc.models.resnet18(), torch_model("resnet34").state_dict())
    sd = torch_model("resnet18", num_classes=10).state_dict()
    del sd["layer2.0.downsample.1.running_var"]
    with pytest.raises(ValueError, match=r"lacks layer2.0.downsample.1.running_var"):
        mc.io.from_torch_state_dict(net, sd)
    for key, value in net.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_resnet18_training_step_matches_torchvision(rng):
    """Loss, every parameter gradient and the running statistics after one step in
    training mode (BatchNorm on batch statistics)."""
    tm, net = loaded_pair("resnet18", num_classes=10)
    tm.train()
    x = image(rng, 2, 64)
    labels = np.array([3, 7])
    logits_t = tm(torch.from_numpy(x))
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(labels))
    loss_t.backward()
    criterion = mc.nn.SoftmaxCrossEntropy()
    loss = criterion.forward(net.forward(x, train=True), labels)
    net.backward(criterion.backward(), release=True)
    assert abs(loss - loss_t.item()) <= 1e-4 * abs(loss_t.item())
    expected = {mc.io.torch_state.torch_to_minconv_key(net, k): p.grad
                for k, p in tm.named_parameters()}
    grads = net.grads
    assert set(grads) == set(expected) == set(net.params)
    for key, g in expected.items():
        assert_close(grads[key], g, f"d{key}", tol=2e-3)
    buffers = mc.io.to_torch_state_dict(net)
    for key, value in tm.state_dict().items():
        if "running" in key:
            assert_close(buffers[key], value, key, tol=1e-4)


# ------------------------------------------------------------------ projections

def _relu_rule_hooks(model, rule):
    """Backward hooks that turn every ReLU of ``model`` into the rule's ReLU."""
    def hook(module, grad_input, grad_output):
        if rule == "deconv":
            return (torch.relu(grad_output[0]),)
        return (torch.relu(grad_input[0]),)   # guided: relu(dy * (x > 0))
    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
            if rule != "grad":
                handles.append(m.register_full_backward_hook(hook))
    return handles


@pytest.mark.parametrize("rule", ["deconv", "guided", "grad"])
def test_projections_through_a_residual_stage_match_autograd(rule, rng):
    tm, net = loaded_pair("resnet18")
    stem = torch.nn.Sequential(tm.conv1, tm.bn1, tm.relu, tm.maxpool, tm.layer1, tm.layer2)
    handles = _relu_rule_hooks(stem, rule)
    x = image(rng, 1, 64)
    xt = torch.from_numpy(x).requires_grad_(True)
    a = stem(xt)
    channel, (h, w) = 5, (3, 2)
    seed = torch.zeros_like(a)
    seed[0, channel, h, w] = a[0, channel, h, w].detach()
    a.backward(seed)
    for handle in handles:
        handle.remove()
    dn = mc.vis.DeconvNet(net)
    projection = dn.project(x, layer="layer2", channel=channel, position=(h, w), rule=rule)
    assert_close(projection, xt.grad, f"{rule} projection from layer2", tol=1e-4)
    # a dotted path inside the stage: the unit of the first block's second BatchNorm
    inner = torch.nn.Sequential(tm.conv1, tm.bn1, tm.relu, tm.maxpool, tm.layer1,
                                tm.layer2[0].conv1, tm.layer2[0].bn1, tm.layer2[0].relu,
                                tm.layer2[0].conv2, tm.layer2[0].bn2)
    handles = _relu_rule_hooks(inner, rule)
    xt.grad = None
    b = inner(xt)
    seed = torch.zeros_like(b)
    seed[0, 2, 1, 1] = b[0, 2, 1, 1].detach()
    b.backward(seed)
    for handle in handles:
        handle.remove()
    projection = dn.project(x, layer="layer2.0.bn2", channel=2, position=(1, 1), rule=rule)
    assert_close(projection, xt.grad, f"{rule} projection from layer2.0.bn2", tol=1e-4)


def test_the_seeds_small_nets(rng):
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    lenet = mc.models.lenet5_original()
    assert lenet.num_params() == 61_706
    assert [type(lenet[n]).__name__ for n in ("tanh1", "pool1", "conv3")] == \
        ["Tanh", "AvgPool2D", "Conv2D"]
    keras = mc.models.mnist_cnn()
    assert keras.num_params() == 1_199_882     # Keras's model.summary() for this net
    for net in (lenet, keras, mc.models.resnet_mini(), mc.models.vgg_mini()):
        assert net.forward(x).shape == (2, 10)
        assert mc.models.build(net.config["model"], **net.config["kwargs"]).num_params() == \
            net.num_params()
    with shapes_only():
        two = mc.models.alexnet(groups=2)
        wide = mc.models.zfnet(widths=mc.models.WIDE_WIDTHS)
    assert two.num_params() == 60_965_224 and two["conv2"].groups == 2
    assert [wide[f"conv{i}"].out_channels for i in (3, 4, 5)] == [512, 1024, 512]
    assert mc.models.summary(wide, (3, 224, 224), file=None)[-1]["output_shape"] == (1000,)
    with pytest.raises(ValueError, match="groups must be 1"):
        mc.models.alexnet(groups=3)
