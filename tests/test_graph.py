"""mc.nn.Graph: gradient checks through fan-out, concatenation and a residual block with
BatchNorm in training mode; nesting with Sequential and dotted paths; the three rules;
state dicts; freed caches; bad graphs."""
import numpy as np
import pytest

import minconv as mc
from conftest import assert_grad_close, numerical_gradient

nn = mc.nn


def _float64(net, rng, std=0.4):
    net.astype(np.float64)
    for key, value in net.params.items():
        value[...] = std * rng.standard_normal(value.shape)
    return net


def gradcheck_net(net, x, rng, train=False, reset=None, params=True):
    """dx and every parameter gradient of a container against centred differences."""
    def f():
        if reset is not None:
            reset()
        return net.forward(x, train=train)
    y = f()
    dy = rng.standard_normal(y.shape)
    dx = net.backward(dy)
    grads = {k: v.copy() for k, v in net.grads.items()}
    assert_grad_close(dx, numerical_gradient(f, x, dy), what="dx")
    if params:
        assert set(grads) == set(net.params)
        for key, value in net.params.items():
            assert_grad_close(grads[key], numerical_gradient(f, value, dy), what=f"d{key}")


def fanout_graph():
    """input -> conv -> (a: relu, b: conv) ; cat(a, b, input) ; conv ; add(., conv)."""
    g = nn.Graph()
    g.add("conv", nn.Conv2D(2, 3, 3, padding=1))
    g.add("a", nn.Tanh(), inputs="conv")
    g.add("b", nn.Conv2D(3, 2, 1), inputs=["conv"])
    g.add("cat", nn.Concat(), inputs=["a", "b", "input"])
    g.add("mix", nn.Conv2D(7, 3, 3, padding=1))
    g.add("sum", nn.Add(), inputs=["mix", "conv", "a"])
    return g


def test_graph_fanout_and_concat_gradcheck(rng):
    g = _float64(fanout_graph(), rng)
    gradcheck_net(g, rng.standard_normal((2, 2, 5, 5)), rng)


def basic_block(c_in, c_out, stride):
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(c_in, c_out, 3, stride=stride, padding=1, bias=False))
    g.add("bn1", nn.BatchNorm2D(c_out))
    g.add("relu1", nn.ReLU())
    g.add("conv2", nn.Conv2D(c_out, c_out, 3, padding=1, bias=False))
    g.add("bn2", nn.BatchNorm2D(c_out))
    skip = "input"
    if stride != 1 or c_in != c_out:
        g.add("downsample", nn.Sequential([("0", nn.Conv2D(c_in, c_out, 1, stride=stride,
                                                           bias=False)),
                                           ("1", nn.BatchNorm2D(c_out))]), inputs="input")
        skip = "downsample"
    g.add("add", nn.Add(), inputs=["bn2", skip])
    g.add("relu2", nn.ReLU())
    return g


@pytest.mark.parametrize("stride, c_in", [(1, 3), (2, 2)])
def test_residual_block_with_batchnorm_in_training_gradcheck(stride, c_in, rng):
    block = _float64(basic_block(c_in, 3, stride), rng)
    saved = {k: v.copy() for k, v in block.buffers.items()}

    def reset():
        block.load_state_dict(saved, strict=False)
    x = rng.standard_normal((3, c_in, 6, 6))
    gradcheck_net(block, x, rng, train=True, reset=reset)


def test_nested_graph_in_sequential_gradcheck_and_paths(rng):
    net = nn.Sequential([("stem", nn.Conv2D(2, 3, 3, padding=1)),
                         ("layer1", nn.Sequential([("0", basic_block(3, 3, 1)),
                                                   ("1", basic_block(3, 4, 2))])),
                         ("pool", nn.AdaptiveAvgPool2D(1)), ("flatten", nn.Flatten()),
                         ("fc", nn.Linear(4, 3))])
    _float64(net, rng)
    for key, value in net.buffers.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("var") else \
            0.1 * rng.standard_normal(value.shape)
    x = rng.standard_normal((2, 2, 6, 6))
    gradcheck_net(net, x, rng)  # evaluation mode: running statistics
    # dotted paths: addressing, until, start, record
    assert net["layer1.1.downsample.0"] is net["layer1"]["1"]["downsample"]["0"]
    assert "layer1.0.bn1.running_var" in net.state_dict()
    a = net.forward(x, until="layer1.1.relu1", record=["layer1.0", "layer1.1.conv1"])
    assert a.shape == (2, 4, 3, 3)
    assert set(net.outputs) >= {"layer1.0", "layer1.1.conv1"}
    # the gradient of one unit of a deep layer, against finite differences
    dy = np.zeros_like(a)
    dy[1, 2, 1, 1] = 1.0
    dx = net.backward(dy, start="layer1.1.relu1")
    num = numerical_gradient(lambda: net.forward(x, until="layer1.1.relu1"), x, dy)
    assert_grad_close(dx, num, what="dx from layer1.1.relu1")
    assert [n for n, _ in net.named_layers()][:3] == ["stem", "layer1.0.conv1", "layer1.0.bn1"]


def test_backward_stop_gives_only_parameter_gradients(rng):
    g = _float64(fanout_graph(), rng)
    x = rng.standard_normal((1, 2, 5, 5))
    y = g.forward(x)
    dy = rng.standard_normal(y.shape)
    g.backward(dy)
    full = {k: v.copy() for k, v in g.grads.items()}
    g.forward(x)
    assert g.backward(dy, stop="conv", release=True) is None
    for key, value in g.grads.items():
        np.testing.assert_allclose(value, full[key])
    with pytest.raises(ValueError, match="before forward"):  # release freed every cache
        g["mix"].backward(dy)


def test_deconv_rule_by_hand(rng):
    """Under deconv only the ReLU changes: BN goes down by its scale, Add copies, average
    pooling spreads, the convolution by its transpose; fan-out sums."""
    g = nn.Graph()
    g.add("conv", nn.Conv2D(2, 3, 3, padding=1))
    g.add("bn", nn.BatchNorm2D(3))
    g.add("relu", nn.ReLU())
    g.add("pool", nn.AvgPool2D(2))
    g.add("skip", nn.AvgPool2D(2), inputs="conv")
    g.add("add", nn.Add(), inputs=["pool", "skip"])
    _float64(g, rng)
    g["bn"].buffers["running_var"][...] = [0.5, 2.0, 1.5]
    x = rng.standard_normal((1, 2, 4, 4))
    y = g.forward(x)
    dy = rng.standard_normal(y.shape)
    F = mc.functional
    spread = F.avg_pool2d_backward(dy, (1, 3, 4, 4), 2)
    scale = g["bn"].params["gamma"] / np.sqrt(g["bn"].buffers["running_var"] + 1e-5)
    for rule, relu in (("deconv", lambda d: np.maximum(d, 0)),
                       ("guided", lambda d: np.maximum(d, 0) * (g["relu"]._cache > 0))):
        d_conv = relu(spread) * scale.reshape(1, -1, 1, 1) + spread
        expected, _, _ = F.conv2d_backward(d_conv, x, g["conv"].params["W"], padding=1)
        np.testing.assert_allclose(g.backward(dy, rule=rule), expected, rtol=1e-10)
    assert not np.allclose(g.backward(dy, rule="grad"), g.backward(dy, rule="deconv"))


def test_inplace_relu_does_not_corrupt_a_shared_input(rng):
    g = nn.Graph()
    g.add("conv", nn.Conv2D(1, 2, 3, padding=1))
    g.add("relu", nn.ReLU(inplace=True))
    g.add("add", nn.Add(), inputs=["relu", "conv"])
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    c = g["conv"].forward(x)
    np.testing.assert_allclose(g.forward(x), np.maximum(c, 0) + c, rtol=1e-6)


def test_forward_frees_outputs_nobody_reads(rng):
    g = fanout_graph()
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = g.forward(x, until="b")  # only conv and b run
    assert y.shape == (1, 2, 5, 5)
    assert g["mix"]._cache is None


def test_forward_follows_nodes_added_after_a_pass(rng):
    """A pass's schedule (order, reader counts) is worked out once per head; adding a
    node or moving the output must make the next pass follow the new graph."""
    g = nn.Graph()
    g.add("conv", nn.Conv2D(1, 2, 3, padding=1))
    g.add("relu", nn.ReLU())
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    c = g["conv"].forward(x)
    np.testing.assert_allclose(g.forward(x), np.maximum(c, 0), rtol=1e-6)
    np.testing.assert_allclose(g.forward(x, until="conv"), c, rtol=1e-6)
    g.add("add", nn.Add(), inputs=["relu", "conv"])   # conv is now read twice
    np.testing.assert_allclose(g.forward(x), np.maximum(c, 0) + c, rtol=1e-6)
    g.output = "conv"
    np.testing.assert_allclose(g.forward(x), c, rtol=1e-6)


def test_state_dict_round_trip_and_other_architecture(rng):
    a, b = basic_block(3, 3, 1), basic_block(3, 3, 1)
    for value in a.state_dict().values():
        value[...] = rng.standard_normal(value.shape)
    b.load_state_dict(a.state_dict())
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value)
    other = basic_block(3, 4, 2)
    before = {k: v.copy() for k, v in b.state_dict().items()}
    with pytest.raises(ValueError, match="unexpected.*downsample"):
        b.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match=r"conv1.W has shape \(4, 3, 3, 3\)"):
        b.load_state_dict(other.state_dict(), strict=False)
    for key, value in b.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(value, before[key])


def test_bad_graphs(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    g = nn.Graph()
    g.add("a", nn.ReLU(), inputs="c")
    g.add("b", nn.ReLU(), inputs="a")
    g.add("c", nn.ReLU(), inputs="b")
    with pytest.raises(ValueError, match="a, b, c form a cycle"):
        g.forward(x)
    g = nn.Graph()
    g.add("a", nn.ReLU())
    g.add("b", nn.Add(), inputs=["a", "nope"])
    with pytest.raises(ValueError, match="'b' takes input 'nope', which is not a node"):
        g.forward(x)
    g = nn.Graph()
    g.add("wide", nn.Conv2D(2, 3, 1))
    g.add("narrow", nn.Conv2D(2, 5, 1), inputs="input")
    g.add("sum", nn.Add(), inputs=["wide", "narrow"])
    with pytest.raises(ValueError, match=r"'sum'.*'wide' gives \(1, 3, 4, 4\).*'narrow' gives "
                                         r"\(1, 5, 4, 4\)"):
        g.forward(x)
    g.add("cat", nn.Concat(), inputs=["wide", "input"])
    g.output = "cat"
    g["wide"].stride = (2, 2)
    with pytest.raises(ValueError, match=r"'wide' gives \(1, 3, 2, 2\).*'input' gives "
                                         r"\(1, 2, 4, 4\)"):
        g.forward(x)
    with pytest.raises(ValueError, match="takes one input"):
        nn.Graph().add("r", nn.ReLU(), inputs=["input", "input"])
    with pytest.raises(ValueError, match="exists already"):
        nn.Graph().add("r", nn.ReLU()).add("r", nn.ReLU())
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        fanout_graph().forward(x, until="nope")
    with pytest.raises(ValueError, match="unknown layer 'conv.W'"):
        fanout_graph()["conv.W"]


def test_inputs_inside_nested_nodes_gradcheck(rng):
    """DESIGN.md's form: a node reads a layer inside another node ("block.bn2"); its
    gradient joins that node's backward pass at that layer."""
    g = nn.Graph()
    g.add("conv1", nn.Conv2D(2, 3, 3, padding=1))
    g.add("block", nn.Sequential([("conv", nn.Conv2D(3, 3, 3, padding=1)),
                                  ("bn2", nn.BatchNorm2D(3)), ("relu", nn.ReLU(inplace=True)),
                                  ("conv3", nn.Conv2D(3, 3, 1))]))
    g.add("skip", nn.Add(), inputs=["block.bn2", "conv1"])
    g.add("tail", nn.Tanh())
    g.add("out", nn.Concat(), inputs=["tail", "block"])
    _float64(g, rng)
    x = rng.standard_normal((2, 2, 4, 4))
    gradcheck_net(g, x, rng)
    # the recorded inner output is the BatchNorm's, not rectified by the in-place ReLU after it
    g.forward(x)
    assert (g.outputs.get("block.bn2", g["block"].outputs["bn2"]) < 0).any()
    from minconv.nn.fields import layer_fields
    fields = layer_fields(g, (2, 4, 4))
    assert fields["skip"]["inputs"] == ["block.bn2", "conv1"]
    assert fields["out"]["shape"] == (6, 4, 4)
    with pytest.raises(ValueError, match="takes input 'block.nope'"):
        h = nn.Graph()
        h.add("block", nn.Sequential([("a", nn.ReLU())]))
        h.add("r", nn.ReLU(), inputs="block.nope")
        h.forward(x)


def test_graph_trains_with_the_optimiser_and_frozen_layers(rng):
    from minconv.train.optim import SGD
    g = fanout_graph()
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    opt = SGD(g, lr=0.1, frozen=["conv"])
    assert g.index("conv") == 0 and opt.lowest_trainable_layer() == g.names.index("b")
    before = {k: v.copy() for k, v in g.params.items()}
    y = g.forward(x, train=True)
    g.backward(np.ones_like(y), stop=g.names[opt.lowest_trainable_layer()], release=True)
    opt.step()
    assert np.array_equal(g.params["conv.W"], before["conv.W"])
    assert not np.array_equal(g.params["mix.W"], before["mix.W"])
