"""minconv.geometry: output sizes, padding rules, argument checks and receptive fields,
the one definition every part uses."""
import numpy as np
import pytest

import minconv as mc
from minconv import geometry
from minconv.vis import receptive_fields

F = mc.functional


@pytest.mark.parametrize("args,size", [
    ((224, 7, 2, 1), 110),        # ZFNet conv1
    ((55, 5, 2, 0), 26),          # ZFNet conv2
    ((13, 3, 1, 1), 13),
    ((9, 3, 1, 2, 2), 9),         # dilated
])
def test_conv_output_size(args, size):
    assert geometry.conv_output_size(*args) == size


@pytest.mark.parametrize("args,size", [
    ((110, 3, 2, 0, True), 55),   # ZFNet's 110 -> 55 needs ceil_mode
    ((110, 3, 2, 0, False), 54),
    ((26, 3, 2, 0, True), 13),
    ((5, 2, 2, 1, True), 3),      # the last window would start in the padding: dropped
])
def test_pool_output_size(args, size):
    assert geometry.pool_output_size(*args) == size


def test_transposed_size_inverts_the_convolution():
    for n in range(5, 20):
        for k, s, p, d in [(3, 1, 1, 1), (5, 2, 2, 1), (3, 2, 0, 2), (4, 2, 1, 1)]:
            m = geometry.conv_output_size(n, k, s, p, d)
            back = geometry.conv_transpose_output_size(m, k, s, p, d)
            assert 0 <= n - back < s


def test_the_functional_names_are_geometrys():
    assert F.conv_output_size is geometry.conv_output_size
    assert F.pool_output_size is geometry.pool_output_size
    assert F.conv_transpose_output_size is geometry.conv_transpose_output_size


# ---------------------------------------------------------------- padding rules

@pytest.mark.parametrize("k,d", [(3, 1), (5, 1), (3, 2), ((3, 5), (2, 1))])
def test_same_padding_keeps_the_size_and_matches_torch(k, d, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    kh, kw = geometry.pair(k, "k")
    W = rng.standard_normal((4, 3, kh, kw)).astype(np.float32)
    y = F.conv2d(x, W, None, 1, "same", d)
    assert y.shape[2:] == x.shape[2:]
    yt = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(W), None, 1, "same", d)
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-4, atol=1e-4)
    assert geometry.resolve_padding("valid", k) == (0, 0)
    assert mc.nn.Conv2D(3, 4, k, padding="same", dilation=d).padding == \
        geometry.resolve_padding("same", k, 1, d)


@pytest.mark.parametrize("padding,kwargs,match", [
    ("same", dict(stride=2), "needs stride 1"),
    ("same", dict(kernel_size=4), "uneven padding"),
    ("full", {}, "'valid' or 'same'"),
    (-1, {}, "padding must be >= 0"),
    ((1, 2, 3), {}, "padding must be an int or a pair"),
])
def test_bad_padding_is_refused(padding, kwargs, match):
    args = dict(kernel_size=3, stride=1, dilation=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        geometry.resolve_padding(padding, args["kernel_size"], args["stride"], args["dilation"])


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("groups,match", [
    (3, "groups=3 must divide"),
    (0, "groups must be a positive int"),
    (1.5, "groups must be a positive int"),
])
def test_bad_groups_are_refused(groups, match, rng):
    x = rng.standard_normal((1, 4, 5, 5))
    W = rng.standard_normal((4, 2, 3, 3))
    with pytest.raises(ValueError, match=match):
        F.conv2d(x, W, groups=groups)
    with pytest.raises(ValueError, match=match):
        mc.nn.Conv2D(4, 4, 3, groups=groups)


def test_transposed_convolutions_take_numeric_padding(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    with pytest.raises(ValueError, match="conv_transpose2d: padding must be an int or a pair"):
        F.conv_transpose2d(x, rng.standard_normal((2, 2, 3, 3)), padding="same")
    with pytest.raises(ValueError, match="ConvTranspose2D: padding must be an int or a pair"):
        mc.nn.ConvTranspose2D(2, 2, 3, padding="same")


def test_grouped_weights_must_match_the_channels(rng):
    x = rng.standard_normal((1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"input has 4 channels.*groups=2 expects 6"):
        F.conv2d(x, rng.standard_normal((4, 3, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="conv_transpose2d"):
        F.conv_transpose2d(x, rng.standard_normal((4, 2, 3, 3)), groups=3)


def test_kernel_larger_than_the_padded_input_is_refused(rng):
    with pytest.raises(ValueError, match=r"kernel 5x5 .* larger than the padded input 4x4"):
        F.conv2d(rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 5, 5)))


# ---------------------------------------------------------------- receptive fields

def test_receptive_field_step_by_hand():
    field = (1, 1, 0)
    field = geometry.receptive_field_step(field, 7, 2, 1)       # ZFNet conv1
    assert field == (7, 2, -1)
    field = geometry.receptive_field_step(field, 3, 2, 0)       # pool1
    assert field == (11, 4, -1)
    assert geometry.receptive_field_step((1, 1, 0), 3, 1, 2, dilation=2) == (5, 1, -2)


@pytest.mark.parametrize("model,shape", [("zfnet_mini", (1, 28, 28)), ("zfnet", (3, 224, 224)),
                                         ("resnet18", (3, 64, 64))])
def test_summary_and_the_report_print_the_same_fields(model, shape):
    # the report's table is built from vis.receptive_fields (size[0], jump[0], start[0])
    net = getattr(mc.models, model)(num_classes=10)
    rows = {r["name"]: r for r in mc.models.summary(net, shape, file=None)}
    fields = receptive_fields(net, shape)
    compared = 0
    for name, f in fields.items():
        if name not in rows or f.size is None or rows[name]["rf_size"] is None:
            continue
        assert (rows[name]["rf_size"], rows[name]["rf_jump"], rows[name]["rf_start"]) == \
            (f.size[0], f.jump[0], f.start[0]), name
        compared += 1
    assert compared >= 5
