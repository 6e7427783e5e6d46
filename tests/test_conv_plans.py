"""Every named path of the convolution against an independent reference, through ``plan=``.

The reference here is written tap by tap from the definition (no im2col, no GEMM):

    y[n, f, ho, wo] = b[f] + sum_{c,i,j} W[f, c, i, j] * x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw]

over the grid of geometries (stride, padding, dilation, non-square, batch 1 and > 1,
groups and depthwise), in float32 and float64. The paths that run compiled tiles
(fused_rows, direct) are run under every instruction-set cap the CPU has; the others
skip with the reason.
"""
import numpy as np
import pytest

import minconv as mc
from conftest import rel_error
from minconv.functional import prepared
from minconv.geometry import conv_output_size, pair

F = mc.functional
runtime = mc.runtime

ISA_PATHS = ("fused_rows", "direct", "shifted")
PLAN_ISAS = [(plan, isa) for plan in F.PLANS
             for isa in (("avx512", "avx2", "none") if plan in ISA_PATHS else ("any",))]


@pytest.fixture
def isa_cap(request):
    """Cap the tiles at the instruction set of the test's id; skip where the CPU lacks it."""
    def cap(name):
        if name == "any":
            return
        try:
            runtime.configure(isa=name)
        except ValueError as error:     # kernels without a cap: only their own level runs
            if runtime.isa() != name:
                pytest.skip(str(error))
        if runtime.isa() != name:
            pytest.skip(f"this CPU (or build) has no {name} tiles (best: {runtime.isa()})")
    before = runtime.isa()
    yield cap
    if mc._kernels.CPU_BUILT and hasattr(mc._kernels.cpu, "set_isa_cap"):
        runtime.configure(isa=before)


def reference_conv(x, W, b, stride, padding, dilation, groups):
    """y by the definition, group by group and tap by tap (float64)."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "s"), pair(padding, "p"), pair(dilation, "d")
    N, C, H, Wd = x.shape
    Fo, Cg, kh, kw = W.shape
    Ho, Wo = conv_output_size(H, kh, sh, ph, dh), conv_output_size(Wd, kw, sw, pw, dw)
    x_pad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((N, Fo, Ho, Wo))
    Fg = Fo // groups
    for g in range(groups):
        xs, fs = x_pad[:, g * Cg:(g + 1) * Cg], slice(g * Fg, (g + 1) * Fg)
        for i in range(kh):
            for j in range(kw):
                window = xs[:, :, i * dh:i * dh + sh * (Ho - 1) + 1:sh,
                            j * dw:j * dw + sw * (Wo - 1) + 1:sw]                # (N, Cg, Ho, Wo)
                y[:, fs] += np.einsum("fc,nchw->nfhw", W[fs, :, i, j], window)
    return y + (0 if b is None else b[:, None, None])


def reference_grads(dy, x, W, stride, padding, dilation, groups):
    """(dx, dW, db) of :func:`reference_conv`, by the same loops (float64)."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "s"), pair(padding, "p"), pair(dilation, "d")
    N, C, H, Wd = x.shape
    Fo, Cg, kh, kw = W.shape
    Ho, Wo = dy.shape[2:]
    x_pad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dx_pad, dW = np.zeros_like(x_pad), np.zeros(W.shape)
    Fg = Fo // groups
    for g in range(groups):
        cs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw)
                dW[fs, :, i, j] = np.einsum("nfhw,nchw->fc", dy[:, fs], x_pad[:, cs, rows, cols])
                dx_pad[:, cs, rows, cols] += np.einsum("fc,nfhw->nchw", W[fs, :, i, j], dy[:, fs])
    return dx_pad[:, :, ph:ph + H, pw:pw + Wd], dW, dy.sum(axis=(0, 2, 3))


# (N, C, H, W, F, kh, kw, stride, padding, dilation, groups)
GRID = [
    (1, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1),
    (2, 3, 7, 6, 5, 3, 2, 2, 1, 1, 1),                  # non-square kernel and input, stride 2
    (2, 2, 8, 7, 3, 3, 3, 1, 2, 2, 1),                  # dilation, padding wider than k/2
    (3, 1, 9, 8, 2, 2, 3, (2, 1), (1, 0), (1, 2), 1),   # per-axis everything, one channel
    (2, 16, 6, 7, 20, 3, 3, 1, 1, 1, 1),                # many channels: the tiles proper
    (2, 4, 8, 8, 6, 3, 3, 1, 1, 1, 2),                  # groups=2
    (2, 4, 7, 9, 4, 3, 3, 2, 1, 1, 4),                  # depthwise, stride 2
    (2, 3, 6, 6, 6, 3, 3, 1, 2, 2, 3),                  # depthwise, channel multiplier 2
    (2, 2, 26, 25, 3, 3, 3, 1, 1, 1, 1),                # >= 512 positions (per-image maps)
    (2, 5, 8, 9, 6, 3, 3, 1, (2, 0), 1, 1),             # 3x3 stride 1, paddings 2 and 0
    (2, 6, 11, 12, 8, 1, 1, 1, 0, 1, 1),                # 1x1: pointwise, one GEMM per chunk
    (3, 6, 11, 12, 5, 1, 1, 2, 0, 1, 1),                # 1x1 stride 2: the kept positions
    (2, 8, 9, 7, 6, 1, 1, (1, 2), 0, 1, 2),             # 1x1, per-axis stride, groups=2
    (2, 4, 24, 23, 8, 1, 1, 1, 0, 1, 4),                # 1x1 depthwise-like, >= 100 positions
    (2, 5, 25, 26, 4, 1, 1, 2, 0, 1, 1),                # 1x1 stride 2, 169 positions per image
]
IDS = [f"N{c[0]}C{c[1]}F{c[4]}_{c[2]}x{c[3]}k{c[5]}x{c[6]}s{c[7]}p{c[8]}d{c[9]}g{c[10]}"
       for c in GRID]


@pytest.mark.parametrize("case", GRID, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("plan,isa", PLAN_ISAS, ids=[f"{p}-{i}" for p, i in PLAN_ISAS])
def test_every_plan_equals_the_reference(plan, isa, dtype, case, isa_cap, rng):
    isa_cap(isa)
    N, C, H, W_, Fo, kh, kw, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W_)).astype(dtype)
    W = rng.standard_normal((Fo, C // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    y = F.conv2d(x, W, b, s, p, d, g, plan=plan)
    assert y.dtype == dtype
    assert rel_error(y, reference_conv(x, W, b, s, p, d, g)) <= tol, "forward"
    dy = rng.standard_normal(y.shape).astype(dtype)
    want = reference_grads(dy, x, W, s, p, d, g)
    got = F.conv2d_backward(dy, x, W, s, p, d, g, plan=plan)
    for what, a, e in zip(("dx", "dW", "db"), got, want):
        assert a.dtype == dtype and rel_error(a, e) <= tol, what
    # C^T: the transposed convolution is the data gradient, on the same path
    up = F.conv_transpose2d(dy, W, None, s, p, d, g, plan=plan,
                            output_padding=_output_padding(x.shape, W.shape, s, p, d))
    assert rel_error(up, want[0]) <= tol, "conv_transpose2d"


def _output_padding(x_shape, W_shape, stride, padding, dilation):
    """The output_padding under which conv_transpose2d gives back x's (H, W)."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "s"), pair(padding, "p"), pair(dilation, "d")
    out = []
    for n, k, s_, p_, d_ in zip(x_shape[2:], W_shape[2:], (sh, sw), (ph, pw), (dh, dw)):
        m = conv_output_size(n, k, s_, p_, d_)
        out.append(n - ((m - 1) * s_ - 2 * p_ + d_ * (k - 1) + 1))
    return tuple(out)


@pytest.mark.parametrize("plan", F.PLANS)
def test_conv_transpose_backward_on_every_plan(plan, rng):
    x = rng.standard_normal((2, 4, 5, 6))
    W = rng.standard_normal((4, 3, 3, 3))
    y = F.conv_transpose2d(x, W, None, 2, 1, 1, 1, output_padding=1)
    dy = rng.standard_normal(y.shape)
    want = F.conv_transpose2d_backward(dy, x, W, 2, 1, 1, 1, output_padding=1, plan="columns")
    got = F.conv_transpose2d_backward(dy, x, W, 2, 1, 1, 1, output_padding=1, plan=plan)
    # dx of C^T is C dy, dW is the convolution's with the roles swapped
    assert rel_error(got[0], reference_conv(dy, W, None, 2, 1, 1, 1)) <= 1e-11
    for a, e in zip(got, want):
        assert rel_error(a, e) <= 1e-11


def test_conv2d_planned_returns_the_output_and_the_plan_it_ran(rng):
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    W = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y, plan = F.conv2d_planned(x, W, b, stride=2, padding=1)
    assert plan == F.choose_plan(x, W, stride=2, padding=1)
    np.testing.assert_array_equal(y, F.conv2d(x, W, b, stride=2, padding=1))
    forced = F.conv2d_planned(x, W, b, stride=2, padding=1, plan="columns")[1]
    assert str(forced) == "columns" and forced.reason == "forced"
    layer = mc.nn.Conv2D(4, 6, 3, stride=2, padding=1)
    layer.params["W"][...], layer.params["b"][...] = W, b
    np.testing.assert_array_equal(layer.forward(x), y)
    assert layer.plan == plan                            # what its backward pass reuses


# ---------------------------------------------------------------- the planner's choices

def test_default_plan_large_maps_take_one_gemm_per_image(rng):
    x = np.zeros((2, 8, 30, 30))                              # float64: no tiles
    plan = F.choose_plan(x, np.zeros((16, 8, 3, 3)), padding=1)
    assert (plan.forward, plan.data_grad, plan.weight_grad) == ("per_image",) * 3
    assert "512" in plan.reason and str(plan) == "per_image"


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
def test_default_plan_large_maps_fuse_small_weights(isa, isa_cap, monkeypatch):
    isa_cap(isa)
    monkeypatch.setattr(mc.runtime, "cpu_threads", lambda: 2)   # a batch of 2 fills the cores
    tiles = isa != "none"
    x = np.zeros((2, 64, 56, 56), np.float32)                 # ResNet's first stage
    plan = F.choose_plan(x, np.zeros((64, 64, 3, 3), np.float32), padding=1)
    assert str(plan) == ("fused_rows" if tiles else "per_image")
    strided = F.choose_plan(x, np.zeros((64, 64, 3, 3), np.float32), stride=2, padding=1)
    assert strided.data_grad == "per_image"
    conv2 = F.choose_plan(np.zeros((2, 96, 26, 26), np.float32),    # ZFNet's conv2: 614K
                          np.zeros((256, 96, 5, 5), np.float32), padding=2)
    assert str(conv2) == ("fused_rows" if isa == "avx512" else "per_image")
    wide = F.choose_plan(np.zeros((2, 512, 28, 28), np.float32),    # VGG's 512 -> 512: 2.4M
                         np.zeros((512, 512, 3, 3), np.float32), padding=1)
    assert str(wide) == "winograd"


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
def test_default_plan_fuses_wide_weights_forward_with_a_share_per_core(isa, isa_cap,
                                                                       monkeypatch):
    isa_cap(isa)
    monkeypatch.setattr(mc.runtime, "cpu_threads", lambda: 2)
    # the rules for the tiles, beneath Winograd's (which takes these 3x3 layers first)
    monkeypatch.setattr(mc.functional.conv_plan, "WINOGRAD_MIN_CHANNELS", 10 ** 9)
    W = np.zeros((512, 512, 3, 3), np.float32)                # ResNet's last stage
    batch = F.choose_plan(np.zeros((8, 512, 7, 7), np.float32), W, padding=1)
    chunked = isa == "avx512"                                 # only these sweep by chunks
    assert str(batch) == ("fused_rows" if chunked else "rows")
    # a batch smaller than the cores: the forward product (and dx at stride 1) splits
    # each image by bands of rows from 169 positions; else only small products take the
    # tiles, and the larger ones go to a GEMM that splits one product
    one = F.choose_plan(np.zeros((1, 512, 7, 7), np.float32), W, padding=1)
    assert str(one) == "per_image"
    # (on maps of at most 729 positions the forward product is then the shifted path's,
    # unless the rows' weights are narrow: at most 576 taps or 32 filters)
    small = F.choose_plan(np.zeros((1, 128, 14, 14), np.float32),
                          np.zeros((48, 128, 3, 3), np.float32), padding=1)
    assert (small.forward, small.data_grad, small.weight_grad) == (
        ("shifted", "fused_rows", "fused_rows") if isa != "none" else ("rows",) * 3)
    few_filters = F.choose_plan(np.zeros((1, 128, 14, 14), np.float32),
                                np.zeros((32, 128, 3, 3), np.float32), padding=1)
    assert few_filters.forward == ("fused_rows" if isa != "none" else "rows")
    large_map = F.choose_plan(np.zeros((1, 128, 112, 112), np.float32),
                              np.zeros((128, 128, 3, 3), np.float32), padding=1)
    banded = "fused_rows" if isa != "none" else "per_image"
    assert (large_map.forward, large_map.data_grad, large_map.weight_grad) == \
        (banded, banded, "per_image")
    at_169 = F.choose_plan(np.zeros((1, 64, 13, 13), np.float32),
                           np.zeros((192, 64, 3, 3), np.float32), padding=1)   # 576 taps
    assert (at_169.forward, at_169.weight_grad) == ("fused_rows" if isa != "none" else "rows",
                                                    "rows")
    wide_169 = F.choose_plan(np.zeros((1, 96, 13, 13), np.float32),
                             np.zeros((256, 96, 3, 3), np.float32), padding=1)  # 864 taps
    assert wide_169.forward == ("shifted" if isa != "none" else "rows")
    at_3025 = F.choose_plan(np.zeros((1, 16, 55, 55), np.float32),
                            np.zeros((48, 16, 3, 3), np.float32), padding=1)
    assert at_3025.forward == ("fused_rows" if isa != "none" else "per_image")
    # ... but an expanding layer (F >= 4C, at most 576 taps, rows of 8 or more) takes
    # the direct tiles: SqueezeNet's expands
    for C, F_, H, batch, direct in ((16, 64, 55, 1, True), (32, 128, 27, 1, True),
                                    (64, 256, 13, 1, True), (64, 255, 13, 1, False),
                                    (96, 384, 13, 1, False), (64, 256, 7, 1, False)):
        plan = F.choose_plan(np.zeros((batch, C, H, H), np.float32),
                             np.zeros((F_, C, 3, 3), np.float32), padding=1)
        assert (plan.forward == "direct") == (direct and isa != "none"), (C, F_, H, plan)
        assert plan.data_grad != "direct" and plan.weight_grad != "direct"
    batch_of_two = F.choose_plan(np.zeros((2, 64, 13, 13), np.float32),
                                 np.zeros((96, 64, 3, 3), np.float32), padding=1)
    assert batch_of_two.forward != "shifted"
    # a batch that fills the cores: expanding layers (F >= 2C, at least 64 filters, at
    # most 576 taps) shifted; with locked weights on the direct tiles, unless rows hold
    # fewer than 8 outputs
    for C, F_, H, path in ((16, 64, 13, "direct"), (64, 256, 13, "direct"),
                           (8, 64, 13, "direct"), (64, 128, 56, "direct"), (64, 64, 13, None),
                           (96, 192, 13, None), (16, 48, 13, None), (16, 64, 7, "shifted"),
                           (64, 256, 7, "shifted")):
        W = np.zeros((F_, C, 3, 3), np.float32)
        x = np.zeros((2, C, H, H), np.float32)
        unlocked = F.choose_plan(x, W, padding=1)
        prepared.lock(W)
        try:
            locked = F.choose_plan(x, W, padding=1)
        finally:
            prepared.unlock(W)
        for plan, want in ((unlocked, path and "shifted"), (locked, path)):
            if want is None or isa == "none":
                assert plan.forward not in ("direct", "shifted"), (C, F_, H, plan)
            else:
                assert plan.forward == want, (C, F_, H, plan)
            assert plan.data_grad != "direct" and plan.weight_grad != "direct"
    strided = F.choose_plan(np.zeros((1, 256, 28, 28), np.float32),   # many channels at a
                            np.zeros((256, 256, 3, 3), np.float32),   # stride: not shifted
                            stride=2, padding=1)
    assert strided.forward != "shifted"
    below = F.choose_plan(np.zeros((1, 256, 12, 12), np.float32),     # 144 positions
                          np.zeros((512, 256, 3, 3), np.float32), padding=1)
    assert below.forward == "per_image"
    two = F.choose_plan(np.zeros((2, 128, 112, 112), np.float32),
                        np.zeros((128, 128, 3, 3), np.float32), padding=1)
    assert two.weight_grad == ("fused_rows" if isa != "none" else "per_image")


@pytest.mark.parametrize("isa", ["avx512", "none"])
def test_default_plan_takes_winograd_for_wide_3x3_at_stride_1(isa, isa_cap):
    """All three products of 3x3 stride-1 convolutions with >= 192 channels in and out
    over >= 784 positions of the batch, of 512 x 512 layers from 392; never other
    windows, narrower layers, small maps at batch 1, float64 or a forced plan."""
    isa_cap(isa)
    W = np.zeros((256, 256, 3, 3), np.float32)
    plan = F.choose_plan(np.zeros((8, 256, 14, 14), np.float32), W, padding=1)
    assert str(plan) == "winograd" and "Winograd" in plan.reason
    assert str(F.choose_plan(np.zeros((1, 192, 28, 28), np.float32),    # 784 positions
                             np.zeros((192, 192, 3, 3), np.float32), padding=1)) == "winograd"
    last_stage = F.choose_plan(np.zeros((8, 512, 7, 7), np.float32),    # 392 positions
                               np.zeros((512, 512, 3, 3), np.float32), padding=1)
    assert str(last_stage) == "winograd"
    assert F.choose_plan(np.zeros((8, 256, 14, 14), np.float32), W, padding=2).forward == \
        "winograd"                                                  # dx then padded by 0
    for x, W_shape, kw in (((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1, stride=2)),
                           ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=2, dilation=2)),
                           ((8, 256, 14, 14), (256, 256, 5, 5), dict(padding=2)),
                           ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),      # thin
                           ((8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1)),
                           ((8, 96, 14, 14), (208, 96, 3, 3), dict(padding=1)),
                           ((8, 256, 7, 7), (256, 256, 3, 3), dict(padding=1)),     # 392
                           ((8, 128, 28, 28), (32, 128, 3, 3), dict(padding=1)),    # 32 filters
                           ((1, 512, 14, 14), (512, 512, 3, 3), dict(padding=1))):  # 196 positions
        plan = F.choose_plan(np.zeros(x, np.float32), np.zeros(W_shape, np.float32), **kw)
        assert "winograd" not in str(plan), (x, W_shape, kw, plan)
    assert "winograd" not in str(F.choose_plan(np.zeros((8, 256, 14, 14)),
                                               np.zeros((256, 256, 3, 3)), padding=1))
    with F.using_plan("rows"):
        assert str(F.choose_plan(np.zeros((8, 256, 14, 14), np.float32), W, padding=1)) == "rows"


def test_default_plan_small_maps_go_channels_last():
    x = np.zeros((2, 16, 7, 7))                               # float64: no tiles
    plan = F.choose_plan(x, np.zeros((32, 16, 3, 3)), padding=1)
    assert str(plan) == "rows"


def test_default_plan_small_maps_with_many_more_filters_than_positions_keep_the_weights():
    """Channels last would reorder all F*C*kh*kw weights for a product over at most half
    as many positions as filters (ResNet's 512 -> 512 at 7x7 for one image: 3.1 ms as rows,
    1.9 as per_image); per_image takes them as they lie."""
    W = np.zeros((512, 256, 3, 3))                            # float64: no tiles
    assert str(F.choose_plan(np.zeros((1, 256, 14, 14)), W, padding=1)) == "per_image"
    assert str(F.choose_plan(np.zeros((2, 256, 14, 14)), W, padding=1)) == "rows"
    assert str(F.choose_plan(np.zeros((5, 256, 14, 14)), W, stride=2, padding=1)) == "per_image"
    assert str(F.choose_plan(np.zeros((6, 256, 14, 14)), W, stride=2, padding=1)) == "rows"


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
def test_default_plan_follows_the_instruction_set(isa, isa_cap):
    isa_cap(isa)
    x = np.zeros((2, 16, 7, 7), np.float32)
    W = np.zeros((32, 16, 3, 3), np.float32)
    tiles = isa != "none"
    plan = F.choose_plan(x, W, padding=1)
    assert plan.forward == plan.weight_grad == ("fused_rows" if tiles else "rows")
    assert plan.data_grad == ("fused_rows" if tiles else "rows")        # stride 1: flipped
    assert F.choose_plan(x, W, stride=2, padding=1).data_grad == "rows"
    first = F.choose_plan(np.zeros((2, 3, 12, 12), np.float32), np.zeros((8, 3, 3, 3), np.float32))
    assert first.forward == first.weight_grad == ("direct" if tiles else "rows")


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
def test_default_plan_rgb_first_layers_at_stride_2(isa, isa_cap):
    """A first layer's large filters over RGB at stride > 1, with a batch that fills the
    cores: the forward product as shifted products of the column phases, the weight
    gradient on the tiles; 3x3 filters, one channel and float64 keep per_image. With a
    batch smaller than the cores the direct tiles take every few-channel forward product
    (on the column phases)."""
    isa_cap(isa)
    tiles = isa != "none"
    x = np.zeros((8, 3, 224, 224), np.float32)
    resnet = F.choose_plan(x, np.zeros((64, 3, 7, 7), np.float32), stride=2, padding=3)
    assert resnet.forward == ("shifted" if tiles else "per_image")
    assert resnet.data_grad == "per_image"
    assert resnet.weight_grad == ("fused_rows" if tiles else "per_image")
    alexnet = F.choose_plan(x, np.zeros((96, 3, 11, 11), np.float32), stride=4, padding=2)
    assert alexnet.forward == ("shifted" if tiles else "per_image")
    assert alexnet.weight_grad == ("fused_rows" if tiles else "per_image")
    alone = "direct" if runtime.cpu_threads() > 1 else "shifted"
    one = F.choose_plan(np.zeros((1, 3, 224, 224), np.float32),
                        np.zeros((64, 3, 7, 7), np.float32), stride=2, padding=3)
    assert (one.forward, one.data_grad, one.weight_grad) == (
        alone if tiles else "per_image", "per_image", "per_image")        # a core idle in dW
    squeeze = F.choose_plan(np.zeros((1, 3, 224, 224), np.float32),
                            np.zeros((64, 3, 3, 3), np.float32), stride=2)
    assert squeeze.forward == (alone if tiles and alone == "direct" else "per_image")
    for x, W_shape, stride in (((8, 3, 224, 224), (64, 3, 3, 3), 2),      # squeezenet's 3x3
                               ((8, 1, 112, 112), (96, 1, 7, 7), 2)):     # one channel
        plan = F.choose_plan(np.zeros(x, np.float32), np.zeros(W_shape, np.float32),
                             stride=stride, padding=1)
        assert str(plan) == "per_image", (x, W_shape, plan)
    assert str(F.choose_plan(np.zeros((8, 3, 224, 224)), np.zeros((64, 3, 7, 7)),
                             stride=2, padding=3)) == "per_image"


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
def test_default_plan_gives_batch_one_gemm_layers_the_filter_tiles(isa, isa_cap, monkeypatch):
    """With locked weights and a batch smaller than the cores, a float32 layer left to the
    GEMMs (weights too large for the fused tiles, no Winograd: ResNet's 3x3/2 of 256 and
    512 channels, ZFNet's 5x5/2), to the shifted products (GoogLeNet's 5x5 layers) or to
    the fused tiles (ResNet's 128 -> 128 3x3/2, DenseNet's 128 -> 32) takes its forward
    product on the direct tiles where they hold filters to a vector (AVX2); its gradients
    keep their paths. Unlocked weights, a group's slice, a batch that fills the cores,
    float64 and CPUs without those tiles keep their paths."""
    isa_cap(isa)
    from minconv.functional.conv_paths import direct
    cases = [((1, 256, 28, 28), (256, 256, 3, 3), dict(stride=2, padding=1)),
             ((1, 512, 14, 14), (512, 512, 3, 3), dict(stride=2, padding=1)),
             ((1, 96, 54, 54), (256, 96, 5, 5), dict(stride=2)),
             ((1, 32, 13, 13), (128, 32, 5, 5), dict(padding=2)),
             ((1, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1)),
             ((1, 128, 14, 14), (32, 128, 3, 3), dict(padding=1))]
    for x_shape, W_shape, kw in cases:
        x, W = np.zeros(x_shape, np.float32), np.zeros(W_shape, np.float32)
        unlocked = F.choose_plan(x, W, **kw)
        prepared.lock(W)
        try:
            plan = F.choose_plan(x, W, **kw)
            full = F.choose_plan(np.zeros((runtime.cpu_threads(),) + x_shape[1:], np.float32),
                                 W, **kw)
            with monkeypatch.context() as patch:
                patch.setattr(direct, "holds_filters", lambda *args: False)
                gemm = F.choose_plan(x, W, **kw)
        finally:
            prepared.unlock(W)
        wide = F.choose_plan(x.astype(np.float64), W.astype(np.float64), **kw)
        assert unlocked == gemm
        assert gemm.forward in (("rows", "per_image", "shifted", "fused_rows") if isa != "none"
                                else ("rows", "per_image"))
        assert wide.forward in ("rows", "per_image") and full.forward != "direct"
        if isa == "avx2":
            assert plan.forward == "direct" and "filters to a vector" in plan.reason, plan
            assert (plan.data_grad, plan.weight_grad) == (gemm.data_grad, gemm.weight_grad)
        else:
            assert plan == gemm
    W = np.zeros((384, 192, 3, 3), np.float32)
    prepared.lock(W)
    try:
        grouped = F.choose_plan(np.zeros((1, 384, 13, 13), np.float32), W, padding=1, groups=2)
    finally:
        prepared.unlock(W)
    assert grouped.forward == ("shifted" if isa != "none" else "rows")


def test_default_plan_one_by_one_filters_take_the_pointwise_gemm():
    for dtype in (np.float32, np.float64):
        for shape, stride in (((2, 64, 56, 56), 1), ((2, 512, 7, 7), 1), ((2, 256, 14, 14), 2)):
            x, W = np.zeros(shape, dtype), np.zeros((32, shape[1], 1, 1), dtype)
            assert str(F.choose_plan(x, W, stride=stride)) == "pointwise"
    x = np.zeros((2, 16, 7, 7), np.float32)
    assert str(F.choose_plan(x, np.zeros((8, 16, 1, 1), np.float32), padding=1)) != "pointwise"


@pytest.mark.parametrize("shape,stride", [((3, 6, 12, 11), 1), ((3, 6, 12, 11), 2),
                                          ((2, 4, 30, 28), 1), ((2, 4, 30, 28), 2)])
def test_pointwise_unfolds_nothing(shape, stride, rng, monkeypatch):
    kernels = mc._kernels.kernels_for(np.zeros(1))

    def refuse(*args, **kwargs):
        raise AssertionError("the pointwise path unfolded its input")
    for name in ("im2col", "col2im", "im2row", "row2im"):
        if hasattr(kernels, name):
            monkeypatch.setattr(kernels, name, refuse)
    x = rng.standard_normal(shape)
    W = rng.standard_normal((5, shape[1], 1, 1))
    y = F.conv2d(x, W, None, stride, plan="pointwise")
    assert rel_error(y, reference_conv(x, W, None, stride, 0, 1, 1)) <= 1e-12
    dy = rng.standard_normal(y.shape)
    got = F.conv2d_backward(dy, x, W, stride, plan="pointwise")
    for a, e in zip(got, reference_grads(dy, x, W, stride, 0, 1, 1)):
        assert rel_error(a, e) <= 1e-12


def test_a_grouped_convolution_plans_one_group(rng):
    # depthwise over 16 channels: each group has one input channel (the direct tiles' case)
    x = np.zeros((2, 16, 9, 9), np.float32)
    W = np.zeros((16, 1, 3, 3), np.float32)
    one = F.choose_plan(x[:, :1], W[:1])
    assert F.choose_plan(x, W, groups=16) == one


# ---------------------------------------------------------------- the public surface

def test_using_plan_forces_and_restores(rng):
    x = rng.standard_normal((2, 3, 30, 30))
    W = rng.standard_normal((4, 3, 3, 3))
    default = F.choose_plan(x, W)
    with F.using_plan("rows"):
        assert str(F.choose_plan(x, W)) == "rows"
        with F.using_plan("columns"):
            assert str(F.choose_plan(x, W)) == "columns"
        assert str(F.choose_plan(x, W)) == "rows"
        assert str(F.choose_plan(x, W, plan="direct")) == "direct"    # an explicit plan wins
    assert F.choose_plan(x, W) == default


def test_a_plan_object_mixes_paths(rng):
    x = rng.standard_normal((2, 3, 9, 9))
    W = rng.standard_normal((4, 3, 3, 3))
    mixed = F.Plan("direct", "rows", "per_image")
    assert str(mixed) == "direct/dx:rows/dW:per_image"
    dy = rng.standard_normal((2, 4, 7, 7))
    for a, e in zip(F.conv2d_backward(dy, x, W, plan=mixed), reference_grads(dy, x, W, 1, 0, 1, 1)):
        assert rel_error(a, e) <= 1e-11


def test_unknown_plans_are_refused(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    W = rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(ValueError, match="unknown convolution plan 'gemm'"):
        F.conv2d(x, W, plan="gemm")
    with pytest.raises(ValueError, match="unknown convolution plan"):
        with F.using_plan("fastest"):
            pass
    with pytest.raises(ValueError, match="Conv2D: unknown plan"):
        mc.nn.Conv2D(2, 2, 3, plan="gemm")


def test_a_layer_records_its_plan_and_backward_reuses_it(rng):
    layer = mc.nn.Conv2D(3, 4, 3, padding=1, dtype="float64")
    assert layer.plan is None
    x = rng.standard_normal((2, 3, 8, 8))
    y = layer.forward(x)
    assert layer.plan == F.choose_plan(x, layer.params["W"], padding=1)
    forced = mc.nn.Conv2D(3, 4, 3, padding=1, plan="columns", dtype="float64")
    forced.params = {k: v.copy() for k, v in layer.params.items()}
    assert rel_error(forced.forward(x), y) <= 1e-12 and str(forced.plan) == "columns"
    dy = rng.standard_normal(y.shape)
    with F.using_plan("direct"):          # the backward pass keeps the forward pass's plan
        dx = forced.backward(dy)
    assert str(forced.plan) == "columns"
    assert rel_error(dx, layer.backward(dy)) <= 1e-12
    transposed = mc.nn.ConvTranspose2D(4, 3, 3, stride=2, padding=1, output_padding=1,
                                       dtype="float64")
    transposed.forward(y)
    assert isinstance(transposed.plan, F.Plan)


def test_summary_shows_each_convolutions_plan():
    rows = {r["name"]: r for r in mc.models.summary(mc.models.zfnet_mini(), (1, 28, 28),
                                                    file=None)}
    assert rows["conv1"]["plan"] and rows["conv3"]["plan"]
    x = np.zeros((1, 64, 7, 7), np.float32)
    conv3 = mc.models.zfnet_mini()["conv3"]
    assert rows["conv3"]["plan"] == str(F.choose_plan(x, conv3.params["W"], padding=1))
    assert rows["relu1"]["plan"] is None


def test_a_layer_plans_again_for_another_input_or_a_forced_plan():
    # the layer reuses its plan while the input's shape and dtype (and the cores and
    # instruction set) stay the same, and asks the planner again when one changes
    layer = mc.nn.Conv2D(256, 256, 3, padding=1, init_std=0.0)
    batch8, batch1 = np.zeros((8, 256, 14, 14), np.float32), np.zeros((1, 256, 14, 14),
                                                                      np.float32)
    expected = {id(x): F.choose_plan(x, layer.params["W"], padding=1) for x in (batch8, batch1)}
    assert str(expected[id(batch8)]) != str(expected[id(batch1)])
    for x in (batch8, batch8, batch1, batch8):
        layer.forward(x)
        assert layer.plan == expected[id(x)]
    with F.using_plan("columns"):
        layer.forward(batch8)
        assert str(layer.plan) == "columns"
    layer.forward(batch8)
    assert layer.plan == expected[id(batch8)]


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
def test_default_plan_gives_locked_wide_3x3_layers_winograds_forward_product(isa, isa_cap):
    """With the weights locked (their transform kept) the forward product of a 3x3
    stride-1 convolution with >= 96 channels in and out runs as Winograd's at any batch
    and map; its gradients keep the unlocked plan's paths; thinner layers, other windows,
    float64, the direct tiles' layers and unlocked weights are left alone."""
    isa_cap(isa)

    def planned(x_shape, W_shape, locked, dtype=np.float32, **kw):
        x, W = np.zeros(x_shape, dtype), np.zeros(W_shape, dtype)
        if locked:
            prepared.lock(W)
        try:
            return F.choose_plan(x, W, **kw)
        finally:
            prepared.unlock(W)

    for x_shape, W_shape in (((1, 256, 14, 14), (256, 256, 3, 3)),
                             ((1, 512, 7, 7), (512, 512, 3, 3)),
                             ((8, 96, 14, 14), (208, 96, 3, 3)),
                             ((1, 128, 28, 28), (128, 128, 3, 3))):
        open_plan = planned(x_shape, W_shape, False, padding=1)
        plan = planned(x_shape, W_shape, True, padding=1)
        assert plan.forward == "winograd" and "locked weights" in plan.reason, plan
        assert (plan.data_grad, plan.weight_grad) == (open_plan.data_grad, open_plan.weight_grad)
        assert open_plan.forward != "winograd"
    for x_shape, W_shape, kw in (((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
                                 ((1, 128, 28, 28), (32, 128, 3, 3), dict(padding=1)),
                                 ((1, 256, 28, 28), (256, 256, 3, 3), dict(padding=1, stride=2)),
                                 ((1, 256, 14, 14), (256, 256, 5, 5), dict(padding=2)),
                                 ((1, 16, 55, 55), (64, 16, 3, 3), dict(padding=1))):
        assert planned(x_shape, W_shape, True, **kw).forward != "winograd", (x_shape, W_shape)
    assert planned((1, 256, 14, 14), (256, 256, 3, 3), True, np.float64,
                   padding=1).forward != "winograd"
    W = np.zeros((256, 256, 3, 3), np.float32)
    prepared.lock(W)
    try:
        assert F.choose_plan(np.zeros((1, 512, 14, 14), np.float32), W, padding=1,
                             groups=2).forward != "winograd"    # a group's slice: not kept
    finally:
        prepared.unlock(W)
