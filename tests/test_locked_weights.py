"""Locked weights: read-only parameters whose derived layouts (the tiles' tap-major
weights, Winograd's transformed filters, the rows' channels-last matrix) are kept
between calls. On the same plans a locked net computes exactly what the unlocked one
does, forward and backward, in every family; the planner gives a locked wide 3x3
convolution Winograd's forward product (its transform kept), within float32's rounding
of the unlocked one; what is kept is derived once and dropped on unlock; writes to a
locked parameter raise, the optimizer refuses to update one, and new arrays
(load_state_dict, a write after unlocking) are never served from what was kept."""
import numpy as np
import pytest

import minconv as mc
from minconv.functional import conv_plan, prepared
from minconv.functional.conv_paths import fused_rows


def _image(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pass(net, x, rule):
    y = net.forward(x).copy()
    dx = net.backward(_image(y.shape, 1), rule=rule)
    grads = {k: v.copy() for k, v in net.grads.items()} if rule == "grad" else {}
    return y, dx.copy(), grads


@pytest.mark.parametrize("name, shape", [("resnet18", (2, 3, 64, 64)),
                                         ("vgg11", (2, 3, 64, 64)),
                                         ("googlenet", (2, 3, 64, 64)),
                                         ("densenet121", (1, 3, 64, 64)),
                                         ("zfnet_mini", (4, 1, 28, 28))])
def test_a_locked_family_computes_what_the_unlocked_one_does(name, shape, monkeypatch):
    # the same plans locked and unlocked: no Winograd forward product, and no direct tiles
    # that hold filters to a vector, for being locked
    monkeypatch.setattr(conv_plan, "WINOGRAD_KEPT_MIN_CHANNELS", 10 ** 9)
    monkeypatch.setattr(conv_plan, "FILTER_TILES_FROM", ())
    net = mc.models.build(name, **({"batch_norm": True} if name == "vgg11" else {}))
    x = _image(shape)
    for rule in ("grad", "deconv"):
        want = _pass(net, x, rule)
        net.lock_weights()
        try:
            assert all(not w.flags.writeable for w in net.params.values())
            got = [_pass(net, x, rule) for _ in range(2)]   # derived, then kept
        finally:
            net.unlock_weights()
        for y, dx, grads in got:
            np.testing.assert_array_equal(y, want[0])
            np.testing.assert_array_equal(dx, want[1])
            assert grads.keys() == want[2].keys()
            for key in grads:
                np.testing.assert_array_equal(grads[key], want[2][key])
    assert all(w.flags.writeable for w in net.params.values())


def test_locking_gives_a_wide_3x3_convolution_winograd_forward_product():
    conv = mc.nn.Conv2D(128, 128, 3, padding=1, rng=np.random.default_rng(0))
    thin = mc.nn.Conv2D(128, 32, 3, padding=1, rng=np.random.default_rng(1))
    x = _image((1, 128, 14, 14))
    want, want_thin = conv.forward(x), thin.forward(x)
    unlocked = conv.plan
    assert unlocked.forward != "winograd"
    conv.lock_weights()
    thin.lock_weights()
    y = conv.forward(x)                               # the lock re-plans the layer
    assert conv.plan.forward == "winograd" and "locked weights" in conv.plan.reason
    assert (conv.plan.data_grad, conv.plan.weight_grad) == (unlocked.data_grad,
                                                            unlocked.weight_grad)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # 32 filters: not Winograd's (with AVX2 the direct tiles that hold filters to a vector)
    np.testing.assert_allclose(thin.forward(x), want_thin, rtol=1e-4,
                               atol=1e-4 * np.abs(want_thin).max())
    assert thin.plan.forward != "winograd"
    tiles = getattr(mc._kernels.kernels_for(x), "direct_filter_tiles", lambda: 0)()
    assert (thin.plan.forward == "direct") == bool(tiles), thin.plan
    conv.unlock_weights()
    conv.forward(x)
    assert conv.plan.forward != "winograd"
    np.testing.assert_array_equal(conv.forward(x), want)


def _counting_reorders(monkeypatch):
    calls = []
    kernels = mc._kernels.kernels_for(np.zeros(1, np.float32))
    reorder = kernels.reversed_axes

    def counted(a):
        calls.append(a.shape)
        return reorder(a)

    monkeypatch.setattr(kernels, "reversed_axes", counted)
    return calls


def test_the_tiles_weights_are_reordered_once_while_locked(monkeypatch):
    conv = mc.nn.Conv2D(64, 96, 3, padding=1, plan="fused_rows", rng=np.random.default_rng(0))
    x = _image((1, 64, 12, 12))
    calls = _counting_reorders(monkeypatch)
    want = conv.forward(x)
    conv.forward(x)
    assert len(calls) == 2                            # unlocked: every call
    conv.lock_weights()
    for _ in range(3):
        np.testing.assert_array_equal(conv.forward(x), want)
    assert len(calls) == 3                            # locked: once
    w_rows = fused_rows.tap_major_weights(conv.params["W"], mc._kernels.kernels_for(x))
    assert not w_rows.flags.writeable                 # shared: nobody may write it
    conv.unlock_weights()
    conv.forward(x)
    assert len(calls) == 4                            # unlocked again: derived afresh


def test_winograd_filters_are_transformed_once_while_locked(monkeypatch):
    kernels = mc._kernels.kernels_for(np.zeros(1, np.float32))
    transform, calls = kernels.winograd_weights, []
    monkeypatch.setattr(kernels, "winograd_weights",
                        lambda W, **kw: calls.append(kw) or transform(W, **kw))
    conv = mc.nn.Conv2D(8, 8, 3, padding=1, plan="winograd", rng=np.random.default_rng(0))
    x = _image((2, 8, 10, 10))
    y = conv.forward(x)
    dx = conv.backward(_image(y.shape, 1))
    conv.lock_weights()
    for _ in range(2):
        np.testing.assert_array_equal(conv.forward(x), y)
        np.testing.assert_array_equal(conv.backward(_image(y.shape, 1)), dx)
    assert len(calls) == 2 + 2                        # forward and dx: twice unlocked, once locked


def test_a_locked_parameter_cannot_be_written_and_unlocking_serves_the_new_values():
    conv = mc.nn.Conv2D(16, 32, 3, padding=1, plan="fused_rows", rng=np.random.default_rng(0))
    x = _image((1, 16, 8, 8))
    conv.lock_weights()
    before = conv.forward(x)
    with pytest.raises(ValueError, match="read-only"):
        conv.params["W"][0] = 0.0
    conv.unlock_weights()
    conv.params["W"][0] = 0.0
    after = conv.forward(x)
    assert np.all(after[:, 0] == conv.params["b"][0]) and np.array_equal(after[:, 1:],
                                                                         before[:, 1:])
    conv.lock_weights()
    np.testing.assert_array_equal(conv.forward(x), after)


def test_a_parameter_made_writable_by_hand_is_not_served_from_what_was_kept():
    conv = mc.nn.Conv2D(16, 32, 3, padding=1, plan="fused_rows", rng=np.random.default_rng(0))
    x = _image((1, 16, 8, 8))
    conv.lock_weights()
    conv.forward(x)
    W = conv.params["W"]
    W.flags.writeable = True
    W *= 2.0
    assert not prepared.is_locked(W)
    np.testing.assert_allclose(conv.forward(x) - conv.params["b"][:, None, None],
                               2 * (mc.functional.conv2d(x, W / 2, padding=1)), rtol=1e-5,
                               atol=1e-6)


def test_load_state_dict_puts_new_unlocked_arrays_in_place():
    net = mc.models.build("zfnet_mini")
    x = _image((2, 1, 28, 28))
    other = mc.models.build("zfnet_mini", rng=np.random.default_rng(7))
    net.lock_weights()
    net.forward(x)
    net.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(net.forward(x), other.forward(x))
    assert all(w.flags.writeable for w in net.params.values())


def test_a_view_is_copied_before_it_is_locked():
    base = _image((32, 16, 3, 3))
    conv = mc.nn.Conv2D(16, 16, 3, padding=1, plan="fused_rows")
    conv.params["W"] = base[:16]                      # a view of a writable array
    x = _image((1, 16, 6, 6))
    conv.lock_weights()
    assert conv.params["W"].base is None and base.flags.writeable
    want = conv.forward(x)
    base[:16] = 0.0                                   # the net's copy is not touched
    np.testing.assert_array_equal(conv.forward(x), want)


def test_the_optimizer_refuses_locked_parameters_and_changes_nothing():
    net = mc.models.build("zfnet_mini")
    x, labels = _image((4, 1, 28, 28)), np.arange(4)
    loss = mc.nn.SoftmaxCrossEntropy()
    loss.forward(net.forward(x, train=True), labels)
    net.backward(loss.backward())
    before = {k: v.copy() for k, v in net.params.items()}
    optimizer = mc.train.SGD(net, lr=0.1)
    net.lock_weights()
    with pytest.raises(ValueError, match="read-only.*unlock_weights"):
        optimizer.step()
    for key, value in net.params.items():
        np.testing.assert_array_equal(value, before[key])
    net.unlock_weights()
    optimizer.step()
    assert not np.array_equal(net.params["conv1.W"], before["conv1.W"])


def test_lock_refuses_what_it_cannot_make_read_only():
    with pytest.raises(ValueError, match="owns its memory"):
        prepared.lock(np.zeros((4, 4), np.float32)[1:])
    with pytest.raises(ValueError, match="owns its memory"):
        prepared.lock([1.0, 2.0])


def test_what_was_kept_goes_with_the_array():
    W = prepared.lock(_image((8, 8, 3, 3)))
    prepared.derived(W, "twice", lambda a: 2 * a)
    count = prepared.kept_count()
    del W
    assert prepared.kept_count() == count - 1
