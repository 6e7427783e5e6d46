"""Layers and Sequential: naming, partial passes, the three backward rules, parameters."""
import numpy as np
import pytest

import minconv as mc
from conftest import away_from_zero, distinct

nn = mc.nn
F = mc.functional


def zf_like():
    return nn.Sequential(
        nn.Conv2D(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(3, 2, ceil_mode=True), nn.LRN(3),
        nn.Conv2D(4, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3))


# ---------------------------------------------------------------- naming and addressing

def test_automatic_names():
    net = zf_like()
    assert net.names == ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2",
                         "flatten1", "fc1", "relu3", "drop1", "fc2"]
    assert isinstance(net["pool2"], nn.MaxPool2D) and net["pool2"].name == "pool2"
    assert net[0] is net["conv1"] and net[-1] is net["fc2"]
    assert len(net) == 12


def test_explicit_names():
    net = nn.Sequential([("features", nn.Conv2D(1, 2, 3)), ("act", nn.ReLU()),
                         ("conv9", nn.Conv2D(2, 2, 1))])
    assert net.names == ["features", "act", "conv9"]
    assert set(net.params) == {"features.W", "features.b", "conv9.W", "conv9.b"}


def test_forward_until_includes_the_layer(rng):
    net = zf_like()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    conv1 = F.conv2d(x, net["conv1"].params["W"], net["conv1"].params["b"], padding=1)
    np.testing.assert_array_equal(net.forward(x, until="conv1"), conv1)
    pooled, _ = F.max_pool2d(np.maximum(conv1, 0), 3, 2, ceil_mode=True)
    np.testing.assert_array_equal(net.forward(x, until="pool1"), pooled)
    # the full pass equals running until the last layer, and record keeps what was asked
    full = net.forward(x, record=("relu2", "fc1"))
    assert set(net.outputs) == {"relu2", "fc1"} and net.outputs["fc1"].shape == (2, 6)
    np.testing.assert_array_equal(net.outputs["fc1"], net.forward(x, until="fc1"))
    np.testing.assert_array_equal(full, net.forward(x, until="fc2"))


def test_backward_start(rng):
    """backward(dy, start=name) sends dy, the gradient of that layer's output, to the input."""
    net = zf_like().astype(np.float64)
    x = rng.standard_normal((2, 3, 8, 8))
    top = net.forward(x, until="conv2")
    dy = rng.standard_normal(top.shape)
    dx = net.backward(dy, start="conv2")
    assert dx.shape == x.shape
    assert "conv2.W" in net.grads and "fc1.W" not in net.grads
    # the same as a net cut at conv2
    head = nn.Sequential([(n, net[n]) for n in net.names[:5]])
    head.forward(x)
    np.testing.assert_allclose(head.backward(dy), dx, rtol=1e-12)
    # and the same as a full pass whose upstream gradient enters at conv2: chain by hand
    d = dy
    for name in reversed(net.names[:5]):
        d = net[name].backward(d)
    np.testing.assert_allclose(d, dx, rtol=1e-12)


# ---------------------------------------------------------------- the three rules

@pytest.fixture
def relu_case(rng):
    x = away_from_zero((2, 3, 4, 5), rng)
    dy = away_from_zero(x.shape, rng)
    layer = nn.ReLU()
    layer.forward(x)
    return layer, x, dy


def test_relu_rule_grad(relu_case):
    layer, x, dy = relu_case
    np.testing.assert_array_equal(layer.backward(dy, rule="grad"), dy * (x > 0))


def test_relu_rule_deconv(relu_case):
    layer, x, dy = relu_case
    out = layer.backward(dy, rule="deconv")
    np.testing.assert_array_equal(out, np.maximum(dy, 0))
    # the input's sign is ignored: positive dy flows where x was negative
    assert np.any((x < 0) & (out > 0))


def test_relu_rule_guided(relu_case):
    layer, x, dy = relu_case
    out = layer.backward(dy, rule="guided")
    np.testing.assert_array_equal(out, np.maximum(dy, 0) * (x > 0))
    assert np.all(out >= 0) and np.all(out[x < 0] == 0)


def test_rules_differ(relu_case):
    layer, x, dy = relu_case
    g, d, gd = (layer.backward(dy, rule=r) for r in ("grad", "deconv", "guided"))
    assert not np.array_equal(g, d) and not np.array_equal(d, gd) and not np.array_equal(g, gd)


def test_inplace_relu_keeps_its_mask(rng):
    x = away_from_zero((2, 3, 4, 4), rng)
    expected = np.where(x > 0, 1.0, 0.0)
    layer = nn.ReLU(inplace=True)
    y = layer.forward(x)
    assert y is x
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), expected)


@pytest.mark.parametrize("rule", ["deconv", "guided"])
def test_lrn_passes_signal_through_under_visual_rules(rule, rng):
    layer = nn.LRN(5, alpha=1.0, beta=0.75, k=1.0)
    x = rng.standard_normal((2, 6, 3, 3))
    layer.forward(x)
    dy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(dy, rule=rule), dy)
    # under "grad" it is the true derivative, which is far from the identity here
    assert np.abs(layer.backward(dy, rule="grad") - dy).max() > 0.1


@pytest.mark.parametrize("rule", ["deconv", "guided"])
def test_visual_rules_leave_param_grads_alone(rule, rng):
    """Under deconv/guided, convolutions go down by C^T, pooling by the switches,
    and no parameter gradient is produced."""
    net = zf_like().astype(np.float64)
    x = rng.standard_normal((1, 3, 8, 8))
    y = net.forward(x, until="pool1")
    dy = np.abs(rng.standard_normal(y.shape))
    net.grads = {}
    out = net.backward(dy, rule=rule, start="pool1")
    assert net.grads == {}
    # by hand: unpool, relu rule, then C^T
    up = F.max_unpool2d(dy, net["pool1"].switches, (1, 4, 8, 8))
    pre = net["relu1"]._cache
    up = np.maximum(up, 0) * ((pre > 0) if rule == "guided" else 1)
    expected = F.conv_transpose2d(up, net["conv1"].params["W"], padding=1)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_maxpool_switches_property(rng):
    layer = nn.MaxPool2D(2)
    x = distinct((1, 2, 4, 4), rng)
    layer.forward(x)
    planes = x.reshape(1, 2, -1)
    winners = np.take_along_axis(planes, layer.switches.reshape(1, 2, -1), axis=2)
    np.testing.assert_array_equal(winners.reshape(1, 2, 2, 2), F.max_pool2d(x, 2)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_finds_its_switches_after_an_inference_pass(rng, dtype):
    # train=False pools without switches; switches and backward find them from x, the
    # same as a training pass records (ties included)
    x = np.round(rng.standard_normal((2, 3, 11, 11)) * 2).astype(dtype)
    dy = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    trained, inferred = nn.MaxPool2D(3, 2), nn.MaxPool2D(3, 2)
    y_train = trained.forward(x, train=True)
    y_infer = inferred.forward(x)
    np.testing.assert_array_equal(y_infer, y_train)
    assert inferred._cache[1] is None                     # nothing recorded yet
    np.testing.assert_array_equal(inferred.backward(dy), trained.backward(dy))
    np.testing.assert_array_equal(inferred.switches, trained.switches)
    assert inferred._cache[2] is None                     # found once; x let go
    with pytest.raises(ValueError, match="dy"):
        inferred.backward(dy[:, :2])


# ---------------------------------------------------------------- parameters

def test_params_and_grads_dotted_names(rng):
    net = zf_like()
    expected = {"conv1.W": (4, 3, 3, 3), "conv1.b": (4,), "conv2.W": (5, 4, 3, 3),
                "conv2.b": (5,), "fc1.W": (6, 20), "fc1.b": (6,), "fc2.W": (3, 6), "fc2.b": (3,)}
    assert {k: v.shape for k, v in net.params.items()} == expected
    assert net.num_params() == sum(int(np.prod(s)) for s in expected.values())
    assert net.params["conv1.W"] is net["conv1"].params["W"]  # live arrays, not copies
    net.forward(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), train=True)
    net.backward(np.ones((2, 3), np.float32))
    assert {k: v.shape for k, v in net.grads.items()} == expected


def test_load_state_dict_roundtrip(rng):
    a, b = zf_like(), zf_like()
    state = {k: rng.standard_normal(v.shape) for k, v in a.params.items()}  # float64 in
    a.load_state_dict(state)
    assert all(v.dtype == np.float32 for v in a.params.values())  # keeps the net's dtype
    b.load_state_dict(a.state_dict())
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
        assert a.params[key] is not b.params[key]


def test_load_state_dict_shape_error_leaves_params_unchanged(rng):
    net = zf_like()
    before = {k: v.copy() for k, v in net.params.items()}
    state = {k: np.full(v.shape, 7.0, np.float32) for k, v in net.params.items()}
    state["fc2.W"] = np.zeros((3, 7), np.float32)  # conv1.W etc. come first and are fine
    with pytest.raises(ValueError, match=r"fc2.W has shape \(3, 7\).*expects \(3, 6\)"):
        net.load_state_dict(state)
    for key, value in net.params.items():
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_names(rng):
    net = zf_like()
    state = dict(net.params)
    state["conv9.W"] = state.pop("conv1.W")
    with pytest.raises(ValueError, match=r"missing \['conv1.W'\], unexpected \['conv9.W'\]"):
        net.load_state_dict(state)


@pytest.fixture
def restore_seed():
    """Let a test reseed the global generator without changing what later tests draw."""
    saved = mc.nn.base._DEFAULT_RNG[0]
    yield
    mc.nn.base._DEFAULT_RNG[0] = saved


def test_default_init(restore_seed):
    nn.set_seed(0)
    conv, fc = nn.Conv2D(16, 32, 5), nn.Linear(400, 300)
    for layer in (conv, fc):
        W = layer.params["W"]
        assert W.dtype == np.float32
        assert abs(W.mean()) < 1e-3 and abs(W.std() - 0.01) < 1e-3  # N(0, 0.01^2)
        np.testing.assert_array_equal(layer.params["b"], 0)
    assert not nn.Conv2D(3, 4, 3, bias=False).params.keys() - {"W"}


def test_seeded_init_is_reproducible(restore_seed):
    nn.set_seed(42)
    a = nn.Conv2D(3, 4, 3).params["W"].copy()
    nn.set_seed(42)
    np.testing.assert_array_equal(nn.Conv2D(3, 4, 3).params["W"], a)


def test_astype_float64(rng):
    net = zf_like()
    x = rng.standard_normal((2, 3, 8, 8))
    y32 = net.forward(x.astype(np.float32))
    net.astype(np.float64)
    assert all(v.dtype == np.float64 for v in net.params.values())
    y64 = net.forward(x)
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y32, rtol=1e-3, atol=1e-6)
    net.backward(np.ones_like(y64))
    assert all(v.dtype == np.float64 for v in net.grads.values())


# ---------------------------------------------------------------- single layers

def test_dropout_train_and_eval(rng):
    layer = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = np.ones((200, 50), np.float32)
    y = layer.forward(x, train=True)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75)  # inverted dropout: E[y] = x
    np.testing.assert_array_equal(layer.backward(x), y)
    np.testing.assert_array_equal(layer.forward(x, train=False), x)
    np.testing.assert_array_equal(layer.backward(2 * x), 2 * x)


def test_flatten_shapes(rng):
    layer = nn.Flatten()
    x = rng.standard_normal((3, 2, 4, 5))
    y = layer.forward(x)
    assert y.shape == (3, 40)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    np.testing.assert_array_equal(layer.backward(y), x)


def test_softmax_cross_entropy_layer_value():
    loss = nn.SoftmaxCrossEntropy()
    z = np.array([[0.0, np.log(3.0)], [np.log(4.0), 0.0]])
    L = loss.forward(z, np.array([1, 1]))
    # p = [1/4, 3/4] and [4/5, 1/5]: L = -(log 3/4 + log 1/5)/2
    assert abs(L - (-(np.log(0.75) + np.log(0.2)) / 2)) < 1e-14
    np.testing.assert_allclose(loss.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(loss.backward(), [[0.125, -0.125], [0.4, -0.4]], atol=1e-15)



def test_backward_without_param_grads_leaves_grads_alone():
    rng = np.random.default_rng(3)
    net = mc.nn.Sequential(mc.nn.Conv2D(2, 3, 3, padding=1), mc.nn.ReLU(), mc.nn.Flatten(),
                           mc.nn.Linear(3 * 5 * 5, 4)).astype(np.float64)
    x = rng.standard_normal((2, 2, 5, 5))
    dz = rng.standard_normal((2, 4))
    net.forward(x)
    dx_full = net.backward(dz)
    grads = {k: v.copy() for k, v in net.grads.items()}
    net.forward(x + 1.0)  # different activations: fresh gradients would differ
    dx = net.backward(dz, param_grads=False)
    assert dx.shape == x.shape and not np.allclose(dx, dx_full)
    for key, value in grads.items():
        np.testing.assert_array_equal(net.grads[key], value)
    net.forward(x)
    np.testing.assert_allclose(net.backward(dz, param_grads=False), dx_full, rtol=1e-12)
    with pytest.raises(ValueError, match="stop layer"):
        net.backward(dz, start="conv1", stop="fc1")


def test_a_backward_pass_drops_the_last_gradients_before_computing_new_ones(monkeypatch):
    """A step never holds two copies of a layer's gradients (VGG-16's fc6: 411 MB each)."""
    layer = mc.nn.Linear(3, 2, rng=np.random.default_rng(0))
    x, dy = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    layer.forward(x)
    layer.backward(dy)
    first = layer.grads["W"]
    held = []
    real = mc.functional.linear_backward

    def spy(*args, **kwargs):
        held.append(dict(layer.grads))
        return real(*args, **kwargs)

    monkeypatch.setattr(mc.functional, "linear_backward", spy)
    layer.forward(x)
    layer.backward(dy)
    assert held == [{}] and set(layer.grads) == {"W", "b"}
    assert layer.grads["W"] is not first
    np.testing.assert_array_equal(layer.grads["W"], first)
    layer.forward(x)
    layer.backward(dy, rule="deconv")          # no parameter gradients: the last ones stay
    assert set(layer.grads) == {"W", "b"}


def test_a_convolution_without_bias_skips_the_bias_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    W = rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 8, 8))
    dx, dW, db = mc.functional.conv2d_backward(dy, x, W, padding=1)
    dx2, dW2, none = mc.functional.conv2d_backward(dy, x, W, padding=1, need_bias_grad=False)
    assert none is None
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(dx2, dx)
    layer = mc.nn.Conv2D(3, 4, 3, padding=1, bias=False, dtype="float64")
    layer.forward(x)
    layer.backward(dy)
    assert set(layer.grads) == {"W"}
