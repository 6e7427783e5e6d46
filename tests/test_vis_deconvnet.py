"""DeconvNet.project against the same computation by hand, PyTorch hooks and finite
differences; batching; the arguments it refuses."""
import numpy as np
import pytest

import minconv as mc
from minconv import functional as F
from minconv.vis import DeconvNet

from conftest import distinct, numerical_gradient, rel_error

nn = mc.nn


def small_net(dtype="float64", rng=None):
    """conv(pad, stride 2) - relu - pool 3/2 ceil - LRN - conv - relu - pool 2 - fc:
    every kind of layer the deconvnet has to invert, at ZFNet-like settings."""
    rng = rng or np.random.default_rng(0)
    net = nn.Sequential(
        nn.Conv2D(2, 5, 3, stride=2, padding=1, init_std=0.4, rng=rng, dtype=dtype),
        nn.ReLU(), nn.MaxPool2D(3, 2, ceil_mode=True), nn.LRN(3, alpha=0.1, beta=0.75, k=1.0),
        nn.Conv2D(5, 6, (3, 2), padding=(1, 0), init_std=0.4, rng=rng, dtype=dtype),
        nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
        nn.Linear(6 * 2 * 1, 4, init_std=0.4, rng=rng, dtype=dtype))
    for layer in net:  # non-zero biases: the way down must ignore them
        if "b" in layer.params:
            layer.params["b"][:] = rng.uniform(-0.1, 0.1, layer.params["b"].shape)
    return net


def by_hand(net, x, layer, channel, position, rule):
    """The deconvnet step by step with the functional ops: forward with switches, a
    one-hot map keeping the activation's value, then unpool, rectify, C^T."""
    c1, r1, p1, n1, c2, r2, p2, fl, fc = net.layers
    a1 = F.conv2d(x, c1.params["W"], c1.params["b"], c1.stride, c1.padding)
    h1 = F.relu(a1)
    q1, s1 = F.max_pool2d(h1, 3, 2, ceil_mode=True)
    m1 = F.lrn(q1, 3, 0.1, 0.75, 1.0)
    a2 = F.conv2d(m1, c2.params["W"], c2.params["b"], c2.stride, c2.padding)
    h2 = F.relu(a2)
    q2, s2 = F.max_pool2d(h2, 2)
    outs = {"conv1": a1, "relu1": h1, "pool1": q1, "norm1": m1, "conv2": a2, "relu2": h2,
            "pool2": q2}
    if layer == "fc1":
        out = F.linear(q2.reshape(len(x), -1), fc.params["W"], fc.params["b"])
        seed = np.zeros_like(out)
        seed[:, channel] = out[:, channel]
        d = (seed @ fc.params["W"]).reshape(q2.shape)
        order = ["pool2", "relu2", "conv2", "norm1", "pool1", "relu1", "conv1"]
    else:
        a = outs[layer]
        d = np.zeros_like(a)
        h, w = position if position is not None else np.unravel_index(
            a[0, channel].argmax(), a.shape[2:])
        d[0, channel, h, w] = a[0, channel, h, w]
        names = ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2"]
        order = names[:names.index(layer) + 1][::-1]
    for name in order:
        if name == "pool2":
            d = F.max_unpool2d(d, s2, h2.shape)
        elif name == "pool1":
            d = F.max_unpool2d(d, s1, h1.shape)
        elif name in ("relu1", "relu2"):
            pre = a1 if name == "relu1" else a2
            d = F.relu(d) * (pre > 0) if rule == "guided" else F.relu(d)
        elif name == "conv2":
            d = F.conv_transpose2d(d, c2.params["W"], None, c2.stride, c2.padding)
        elif name == "conv1":
            d = F.conv_transpose2d(d, c1.params["W"], None, c1.stride, c1.padding)
        # norm1: the signal passes through
    return d


@pytest.mark.parametrize("rule", ["deconv", "guided"])
@pytest.mark.parametrize("layer, position", [("conv1", None), ("pool1", (2, 1)), ("norm1", None),
                                             ("relu2", None), ("pool2", (1, 0)),
                                             ("fc1", None)])
def test_project_equals_hand_computation(layer, position, rule):
    rng = np.random.default_rng(1)
    net = small_net()
    x = distinct((1, 2, 15, 13), rng)
    channel = 2
    got = DeconvNet(net).project(x, layer, channel, position, rule=rule)
    want = by_hand(net, x, layer, channel, position, rule)
    assert got.shape == x.shape
    assert np.abs(want).max() > 0
    assert rel_error(got, want) < 1e-12


def test_project_deconv_matches_pytorch_hooks():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    net = small_net()
    x = distinct((3, 2, 15, 13), rng)
    c1, _, _, _, c2, _, _, _, fc = net.layers
    t = torch.nn

    def relu_star(module, grad_in, grad_out):      # the deconvnet's rectification
        return (torch.relu(grad_out[0]),)

    def pass_through(module, grad_in, grad_out):   # LRN is not inverted
        return (grad_out[0],)

    conv1 = t.Conv2d(2, 5, 3, stride=2, padding=1).double()
    conv2 = t.Conv2d(5, 6, (3, 2), padding=(1, 0)).double()
    linear = t.Linear(12, 4).double()
    for mod, layer in ((conv1, c1), (conv2, c2), (linear, fc)):
        mod.weight.data = torch.tensor(layer.params["W"])
        mod.bias.data = torch.tensor(layer.params["b"])
    relus = [t.ReLU(), t.ReLU()]
    lrn = t.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=1.0)
    for r in relus:
        r.register_full_backward_hook(relu_star)
    lrn.register_full_backward_hook(pass_through)
    body = t.Sequential(conv1, relus[0], t.MaxPool2d(3, 2, ceil_mode=True), lrn, conv2,
                        relus[1], t.MaxPool2d(2))
    tx = torch.tensor(x, requires_grad=True)
    a = body(tx)                                               # pool2 output
    seed = torch.zeros_like(a)
    flat = a.detach().reshape(3, 6, -1)[:, 4].argmax(dim=1)
    for n in range(3):
        h, w = divmod(int(flat[n]), a.shape[3])
        seed[n, 4, h, w] = a[n, 4, h, w].detach()
    a.backward(seed)
    got = DeconvNet(net).project(x, "pool2", 4)
    assert rel_error(got, tx.grad.numpy()) < 1e-12
    # from an fc unit
    tx.grad = None
    out = linear(body(tx).reshape(3, -1))
    seed = torch.zeros_like(out)
    seed[:, 1] = out[:, 1].detach()
    out.backward(seed)
    assert rel_error(DeconvNet(net).project(x, "fc1", 1), tx.grad.numpy()) < 1e-12


def test_grad_rule_is_the_finite_difference_gradient():
    rng = np.random.default_rng(3)
    net = small_net()
    x = distinct((1, 2, 15, 13), rng)
    layer = "relu2"
    a = net.forward(x, until=layer)[0]
    channel = int(a.reshape(len(a), -1).max(axis=1).argmax())
    a = a[channel]
    position = np.unravel_index(a.argmax(), a.shape)

    def unit():
        return net.forward(x, until=layer)[0, channel][position]
    value = unit()
    assert value > 0.05  # a unit on the linear side of its ReLU
    got = DeconvNet(net).project(x, layer, channel, position, rule="grad", keep_value=False)
    want = numerical_gradient(unit, x, 1.0)
    assert np.abs(want).max() > 0
    assert rel_error(got, want) < 1e-6
    # the paper's seed keeps the activation's value: the same direction, scaled by it
    kept = DeconvNet(net).project(x, layer, channel, position, rule="grad")
    assert rel_error(kept, value * want) < 1e-6


def test_grad_rule_leaves_parameter_gradients_alone():
    net = small_net()
    x = distinct((1, 2, 15, 13), np.random.default_rng(4))
    DeconvNet(net).project(x, "fc1", 0, rule="grad")
    assert net.grads == {}


def test_batched_pairs_equal_one_at_a_time():
    rng = np.random.default_rng(5)
    net = small_net("float32")
    x = distinct((3, 2, 15, 13), rng, dtype=np.float32)
    dn = DeconvNet(net, batch_size=2)  # chunks that do not divide the rows
    channels = [0, 3, 5]
    together, values, positions = dn.project(x, "conv2", channels, return_units=True)
    for n, c in enumerate(channels):
        alone = dn.project(x[n:n + 1], "conv2", c)
        np.testing.assert_allclose(together[n:n + 1], alone, rtol=1e-5, atol=1e-7)
        a = net.forward(x[n:n + 1], until="conv2")[0, c]
        assert values[n] == pytest.approx(float(a.max()), rel=1e-6)
        assert tuple(positions[n]) == np.unravel_index(a.argmax(), a.shape)
    # one image, many channels: the image is repeated
    many = dn.project(x[:1], "conv2", [0, 3, 5])
    np.testing.assert_allclose(many[0], together[0], rtol=1e-5, atol=1e-7)


def test_whole_map_is_the_sum_of_its_units():
    net = small_net()
    x = distinct((1, 2, 15, 13), np.random.default_rng(6))
    dn = DeconvNet(net)
    a = net.forward(x, until="pool1")[0, 3]
    total = sum(dn.project(x, "pool1", 3, (h, w), rule="grad")
                for h in range(a.shape[0]) for w in range(a.shape[1]))
    assert rel_error(dn.project(x, "pool1", 3, "map", rule="grad"), total) < 1e-12


def test_bad_arguments_are_clear_errors():
    net = small_net()
    dn = DeconvNet(net)
    x = np.zeros((2, 2, 15, 13))
    with pytest.raises(ValueError, match="conv5.*valid names.*conv1.*pool2.*fc1"):
        dn.project(x, "conv5", 0)
    with pytest.raises(ValueError, match="feature map index 6 is out of range.*conv2.*6 "
                                         "channels"):
        dn.project(x, "conv2", 6)
    with pytest.raises(ValueError, match="unit index 4 is out of range.*fc1"):
        dn.project(x, "fc1", [0, 4])
    with pytest.raises(ValueError, match="position out of range"):
        dn.project(x, "conv2", 0, (9, 0))
    with pytest.raises(ValueError, match="fully connected"):
        dn.project(x, "fc1", 0, (0, 0))
    with pytest.raises(ValueError, match="3 channels for 2 images"):
        dn.project(x, "conv2", [0, 1, 2])
    with pytest.raises(ValueError, match="backward rule"):
        dn.project(x, "conv2", 0, rule="relu")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dn.project(x[0], "conv2", 0)
