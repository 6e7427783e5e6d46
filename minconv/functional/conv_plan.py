"""The planner: which named path computes each of a convolution's three products.

    plan = choose_plan(x, W, stride, padding, dilation, groups)   # a Plan
    y = conv2d(x, W, plan=plan); conv2d_backward(dy, x, W, plan=plan)
    with using_plan("columns"): ...                                 # force one path

A :class:`Plan` names a path (:mod:`.conv_paths`) for the forward product, the
data gradient (C^T) and the weight gradient. The default choice, from the
shapes, the device, the dtype and what the compiled tiles serve on this CPU:

    CPU, 1x1 filters, no padding      pointwise (a GEMM per image, nothing unfolded)
    GPU (CuPy)                        columns; per_image on maps of >= 512 positions
    CPU, maps of >= 512 positions     per_image; fused_rows as below when the weights fit the
                                      tiles and there are more than 4 input channels
    CPU, smaller maps                 rows (per_image with at least twice as many filters as
                                      positions); fused_rows for each product whose weights
                                      the tiles take (float32 with AVX2/AVX-512; with a
                                      batch smaller than the cores the forward product
                                      from 169 positions, else only small products),
                                      the data gradient only at stride 1
    CPU, batch smaller than the       shifted for the forward product where the above
    cores, <= 729 positions, tiles    gave fused_rows or rows (not 1x1, width stride 1);
                                      direct for an expanding layer (F >= 4C, <= 576 taps, any map)
    CPU, batch filling the cores,     shifted for an expanding layer's forward product (F >=
    tiles                             2C, >= 64 filters, <= 576 taps); direct with locked
                                      weights where the direct tiles run
    CPU, batch smaller than the       direct for the forward product where the above gave
    cores, AVX2, locked weights       rows, per_image, shifted or fused_rows and the tiles
                                      that hold filters to a vector take the shapes
    CPU, <= 4 input channels,         direct for the forward product and the weight
    width stride 1, tiles available   gradient (at a larger stride, the forward product
                                      with a batch smaller than the cores)
    CPU float32, 3x3 at stride 1,     winograd for all three products (512 x 512 weights:
    >= 192 channels in and out,       from 392 positions)
    >= 784 positions in the batch

The measurements behind each threshold are in docs/architecture.md. A plan
forced by name (``plan="rows"``) uses that path for all three products; a
grouped convolution runs the plan on every group's channel slices.
"""
import contextlib
import contextvars
from dataclasses import dataclass

import numpy as np

from .. import runtime
from .._kernels import kernels_for
from ..backend import get_array_module
from .conv_paths import (Window, direct, fused_rows, output_hw, per_image, pointwise, rows,
                         shifted, winograd)
from .prepared import is_locked

PLANS = ("columns", "per_image", "rows", "fused_rows", "direct", "pointwise", "winograd",
         "shifted")

# Maps of at least this many positions take one GEMM per image.
PER_IMAGE_MIN_POSITIONS = 512
# On such maps the fused tiles take over from per_image for weights of at most this
# many values (ResNet's and VGG's first stages, ZFNet's conv2): 5-20% faster there at
# batch 8; on VGG's 512 -> 512 on 28x28 (2.4M) they ran level with per_image.
LARGE_MAP_FUSED_WEIGHTS = 2 ** 20
# A first layer's filters of at least this many taps over 2-4 channels (RGB) at a stride
# the direct tiles do not take: their weight gradient runs on the fused tiles, the
# forward product as per_image. At batch 8: ResNet's 7x7/2 3->64 dW 12.6 ms against
# 19.0, ZFNet's 7x7/2 3->96 19.3 against 23.4 (84.6 against 94.0 at batch 32), AlexNet's
# 11x11/4 9.9 against 14.8; 3x3 (SqueezeNet's 3->64) 9.2 against 6.7 and one channel
# (1->96 7x7/2 at batch 128) 40.6 against 33.8 were slower. Their forward product runs as
# shifted 1x1 products of the input's column phases: against per_image, timed in pairs
# (AMD EPYC, AVX2), ResNet's 0.86 of the time at batch 1 and 0.84 at batch 8, AlexNet's
# 0.86 and 0.79, ZFNet's 0.83 and 0.93; SqueezeNet's 3x3 was 0.94 and 1.24.
FEW_CHANNELS_FUSED_TAPS = 49
# The tiles run one share of the batch per core; with a batch smaller than the cores
# the forward product splits each image by bands of output rows instead. The bands
# pay where they hold enough positions: at batch 1 on two cores, from a 13x13 map
# (against the best of per_image and rows: 64->64 on 224x224 21.0 against 29.3 ms,
# 128->128 on 112x112 19.3 against 24.1, 256->256 on 14x14 1.48 against 1.93, 96->208
# 0.52 against 0.77, 64->256 on 13x13 0.49 against 0.61; 512->512 on 14x14 level, 6.27
# against 6.26). On 7x7 maps they lost (256->512 1.22 against 1.09, 512->512 3.0
# against 2.3).
BANDED_MIN_POSITIONS = 169
# Other products at such a batch, and the weight gradient (whose shares are images),
# take the tiles only up to this many multiply-adds: at batch 1, 128->128 on 112x112
# forward on one core took 41.6 ms against 24.0 as per_image on two; 128->32 on 14x14
# forward 0.22 ms against 0.37.
ONE_CORE_FUSED_MACS = 2 ** 24
# Inputs of at most this many channels (first layers) convolve tap by tap: at width
# stride 1 always, at larger strides (on the input's column phases) with a batch smaller
# than the cores, where the threads share bands of rows. Timed in pairs at batch 1 (AMD
# EPYC, AVX2), the other paths took 1.02-1.17x (shifted) and 1.5-2.0x (per_image) the
# direct tiles' time on SqueezeNet's 3x3/2, ResNet's 7x7/2, AlexNet's 11x11/4 and ZFNet's
# 7x7/2; at batch 8 shifted ran these in 0.78-1.03 of it.
DIRECT_MAX_CHANNELS = 4
# 3x3 convolutions at stride 1 with at least this many input and output channels, over
# at least this many output positions in the batch, run as Winograd's F(2x2, 3x3): at
# batch 8, forward / dx / dW in 0.61-0.80 of the tiles' time on 192->192 at 28x28,
# 256->256 at 14x14 to 512->512 at 28x28. Below them the weights' transform (per call)
# or thin products cost more than the 2.25x fewer multiply-adds save: 128->128 at 28x28
# ran level alone (9.3 against 9.5 ms forward) but 12.3 against 9.8 in ResNet-18's step,
# 64 channels 1.5x slower, DenseNet's 32 filters 1.4x.
WINOGRAD_MIN_CHANNELS = 192
WINOGRAD_MIN_POSITIONS = 784
# Layers of at least this many weights (filters x channels: 512 -> 512) from half as
# many positions: ResNet's 512 -> 512 at 7x7, batch 8, their backward pass 23.5 against
# 26.3 ms; with the filters' transform at 2.1 ms (from 2.8) the forward pass too:
# ResNet-18 at batch 8, forward 172 against 176 ms, step 509 against 518 (ResNet-50's
# step 1340 against 1375). 256 -> 256 and 192 -> 384 at 7x7 ran 15-20% slower.
WINOGRAD_WIDE_WEIGHTS = 512 * 512
# Where the filters' transform is kept (locked weights: inference, visualisation), the
# forward product runs as Winograd's from this many channels in and out, at any batch and
# map: at batch 1 (AMD EPYC, AVX2) in 0.55 of shifted's time for 256 -> 256 on 14x14,
# 0.65 of fused_rows' for 128 -> 128 on 28x28, 0.42-0.78 on 7x7 (GoogLeNet's 160 -> 320,
# ResNet's 512 -> 512), 0.44 of per_image's for VGG's 512 -> 512 on 14x14; at batch 8
# 0.51-0.61 for GoogLeNet's 3x3 layers on 14x14. 96 -> 128 on 28x28 and 128 -> 128 on
# 56x56 ran level (0.92-1.02); fewer channels lost (64 -> 64 on 56x56 1.01-1.43,
# DenseNet's 128 -> 32 1.25-2.1, SqueezeNet's expands at batch 1 1.09-2.2).
WINOGRAD_KEPT_MIN_CHANNELS = 96

# With a batch smaller than the cores, maps of at most this many positions take their
# forward product as shifted 1x1 products (channels first) where the planner would take
# the tiles' rows: at batch 1 (AMD EPYC, AVX2) 48 -> 192 and 64 -> 256 3x3 on 13x13 in
# 0.84-0.88 of fused_rows' time, 256 -> 256 on 14x14 0.73-0.76 of rows', 112 -> 224 on
# 14x14 0.92-0.97, DenseNet's 128 -> 32 on 7x7 0.89; 32 -> 128 on 27x27 level. Larger
# maps lost (128 -> 128 on 28x28 1.14-1.32, DenseNet's 128 -> 32 on 56x56 1.3), as did
# 128 -> 32 on 14x14 (1.05-1.11).
SHIFTED_MAX_POSITIONS = 729
# ... unless the tiles' rows take the product with weights of at most this many taps (a
# panel of 16 filters then stays in L1) or at most this many filters: on such maps the
# threads share the rows' output channels (cpu_tiles), and in whole passes at batch 1 the
# rows ran SqueezeNet's 3x3 layers on 27x27 and 13x13 (288-576 taps) in 0.97 of the pass
# against shifted products, DenseNet's 128 -> 32 in 0.92; ResNet-50's (2304 taps and
# more) took 1.11, GoogLeNet's (864-1728) 1.06.
SMALL_MAP_FUSED_MAX_TAPS = 576
SMALL_MAP_FUSED_MAX_FILTERS = 32
# With a batch that fills the cores, an expanding layer (F >= 2C, at least this many
# filters, at most this many taps) takes its forward product as shifted 1x1 products:
# the rows' moves to channels last and back cost most where the output has the most
# channels. At batch 8 (AMD EPYC, AVX2), whole passes timed in pairs: SqueezeNet's eight
# 3x3 expands in 0.92-0.97 of the pass, GoogLeNet's 64 -> 192 on 56x56 0.97; with ResNet's
# 64 -> 64 (F = C) too, ResNet-50 took 1.03.
EXPANDING_SHIFTED_MIN_FILTERS = 64
EXPANDING_SHIFTED_MAX_TAPS = 576
# ... and with locked weights (their blocks kept), where the direct tiles run (rows of at
# least 8 outputs), on them instead: one image a core, channels first, nothing unfolded.
# Alone, the two alternating (AMD EPYC, AVX2), in 0.84-0.95 of the shifted products' time
# at batch 8 (SqueezeNet's expands, GoogLeNet's 32 -> 128 on 14x14; 24 -> 64 level), 0.98
# on GoogLeNet's 64 -> 192 on 56x56, 0.95 on VGG's 64 -> 128 on 112x112; at batch 1 on one
# core 0.87-0.88 on SqueezeNet's. Unlocked, the blocks made on every call cost more than
# that on maps of 13x13 and 14x14 (1.15-1.29).
# With a batch smaller than the cores, an expanding layer (F >= this many times C, at most
# EXPANDING_SHIFTED_MAX_TAPS taps) at width stride 1 on rows of at least 8 outputs takes its
# forward product on the direct tiles: channels first, no moves to channels last and back,
# the threads sharing the filter blocks or the rows. Whole passes at batch 1 timed in pairs
# (AMD EPYC, AVX2): SqueezeNet's eight 3x3 expands (F = 4C) in 0.95-0.99 of the pass;
# GoogLeNet's 64 -> 192 3x3 and 16 -> 32, 16 -> 48 5x5 (F = 2-3C) took 1.02-1.03,
# DenseNet's 128 -> 32 and ResNet's F = C 1.05-1.09.
EXPANDING_DIRECT_MIN_RATIO = 4
# With locked weights (their blocks kept) and a batch smaller than the cores, a layer that
# the rules above leave to one of these paths, and not to Winograd, runs its forward product
# on the direct tiles where they hold filters to a vector. Alone at batch 1, prepared calls
# alternating (AMD EPYC, AVX2): ResNet's 256 -> 256 3x3/2 on 28x28 in 0.87 of the GEMM's
# time, 512 -> 512 on 14x14 0.84, ZFNet's 96 -> 256 5x5/2 on 54x54 0.78; GoogLeNet's 5x5
# layers 0.54-0.88 of the shifted products' time; against the fused tiles, DenseNet's
# 128 -> 32 3x3 0.88-0.95 on 56x56, 14x14 and 7x7 (1.08 on 28x28), ResNet's 64 -> 64 on
# 56x56 0.91, GoogLeNet's 64 -> 192 0.89. Whole passes, each step alone: resnet50 0.967,
# zfnet512 0.988, inception_v1 0.949 and 0.974, densenet121 0.941, vgg19 0.987. (A group's
# slice of the weights is not kept: deriving its blocks on every call made AlexNet's pass
# 1.035.)
FILTER_TILES_FROM = ("rows", "per_image", "shifted", "fused_rows")

_forced = contextvars.ContextVar("minconv_conv_plan", default=None)


@dataclass(frozen=True)
class Plan:
    """The paths of a convolution's forward product, data gradient and weight gradient,
    and why they were chosen."""
    forward: str
    data_grad: str
    weight_grad: str
    reason: str = ""

    def __str__(self):
        if self.forward == self.data_grad == self.weight_grad:
            return self.forward
        return f"{self.forward}/dx:{self.data_grad}/dW:{self.weight_grad}"


_PATHS = {}  # name -> ConvPath, filled on first use (the columns path lives in .conv)


def path(name):
    """The :class:`~.conv_paths.ConvPath` named ``name``."""
    found = _PATHS.get(name)
    if found is not None:
        return found
    if name not in PLANS:
        raise ValueError(f"unknown convolution plan {name!r}: expected one of {PLANS}")
    from .conv import COLUMNS  # the readable path lives with the math
    _PATHS.update({"columns": COLUMNS, "per_image": per_image.PATH, "rows": rows.PATH,
                   "fused_rows": fused_rows.PATH, "direct": direct.PATH,
                   "pointwise": pointwise.PATH, "winograd": winograd.PATH,
                   "shifted": shifted.PATH})
    return _PATHS[name]


@contextlib.contextmanager
def using_plan(plan):
    """Within the block, every convolution on this thread (and its context) uses ``plan``
    (a name of :data:`PLANS` or a :class:`Plan`) unless a call passes its own."""
    _check(plan)
    token = _forced.set(plan)
    try:
        yield
    finally:
        _forced.reset(token)


def _check(plan):
    if isinstance(plan, Plan):
        if plan not in _CHECKED:  # a layer hands its plan back on every pass
            for name in (plan.forward, plan.data_grad, plan.weight_grad):
                path(name)
            _CHECKED.add(plan)
    elif plan not in PLANS:
        raise ValueError(f"unknown convolution plan {plan!r}: expected one of {PLANS} "
                         "or a Plan")


_CHECKED = set()  # the Plans whose three names have been checked


def _fuses(kernels, dtype, taps, channels, batch, positions, product="forward"):
    """Whether the tiles take this product: its (taps, channels) weights within their cap,
    and, where ``batch`` is smaller than the cores, a forward product over enough of the
    batch's ``positions`` for bands of rows, or few enough multiply-adds."""
    fuses = getattr(kernels, "fuses_im2row", None)
    if fuses is None or not fuses(dtype, taps, channels, product):
        return False
    if batch >= runtime.cpu_threads() or positions * taps * channels <= ONE_CORE_FUSED_MACS:
        return True
    return product == "forward" and positions >= BANDED_MIN_POSITIONS


def _fuses_flipped(kernels, dtype, W_shape, win, batch, positions):
    """Whether the data gradient runs on the tiles, as a convolution of dy with the
    flipped filters: stride 1, and their (kh*kw*F, C) weights fit the tiles."""
    F, C, kh, kw = W_shape
    return (fused_rows.flipped_padding(W_shape, win) is not None
            and _fuses(kernels, dtype, kh * kw * F, C, batch, positions))


def default_plan(xp, kernels, dtype, x_shape, W_shape, win, weights_kept=False):
    """The planner's choice for one group: x_shape (N, C, H, W), W_shape (F, C, kh, kw);
    ``weights_kept``: the weights are locked, so what a path derives from them is kept."""
    F, C, kh, kw = W_shape
    Ho, Wo = output_hw(x_shape, W_shape, win)
    L = Ho * Wo
    N = x_shape[0]
    # the data gradient's positions are the input's (a stride-1 convolution of dy)
    batch, flipped = (N, N * L), (N, N * x_shape[2] * x_shape[3])
    if xp is np and pointwise.serves(W_shape, win):
        return Plan("pointwise", "pointwise", "pointwise",
                    "1x1 filters, no padding: W (F, C) @ x (C, H*W), nothing unfolded")
    if L >= PER_IMAGE_MIN_POSITIONS:
        fwd = dgrad = wgrad = "per_image"
        reason = f"{Ho}x{Wo} map >= {PER_IMAGE_MIN_POSITIONS} positions: one GEMM per image"
        if (xp is np and C > DIRECT_MAX_CHANNELS and C * kh * kw * F <= LARGE_MAP_FUSED_WEIGHTS
                and _fuses(kernels, dtype, C * kh * kw, F, *batch)):
            fwd = "fused_rows"
            reason += "; weights fit the tiles: fused, the columns never formed"
            if _fuses(kernels, dtype, C * kh * kw, F, *batch, "weight_grad"):
                wgrad = "fused_rows"
                reason += "; and their gradient's"
            if _fuses_flipped(kernels, dtype, W_shape, win, *flipped):
                dgrad = "fused_rows"
                reason += "; dx as a flipped convolution"
        elif (xp is np and 2 <= C <= DIRECT_MAX_CHANNELS and win.stride[1] > 1
              and kh * kw >= FEW_CHANNELS_FUSED_TAPS):
            reason += "; an RGB layer's large filters at stride > 1"
            if shifted.serves_shape(kernels, dtype, W_shape, win):
                fwd = "shifted"
                reason += ": y as shifted 1x1 products of its column phases"
            if _fuses(kernels, dtype, C * kh * kw, F, *batch, "weight_grad"):
                wgrad = "fused_rows"
                reason += "; dW on the tiles"
    elif xp is not np:
        fwd = dgrad = wgrad = "columns"
        reason = "GPU: one GEMM per chunk"
    else:
        fwd = dgrad = wgrad = "rows"
        reason = f"{Ho}x{Wo} map on the CPU: channels last"
        if F >= 2 * N * L:
            fwd = dgrad = wgrad = "per_image"
            reason = (f"{Ho}x{Wo} map, {F} filters for {N * L} positions: the weights as "
                      "they lie, not reordered for channels last")
        if _fuses(kernels, dtype, C * kh * kw, F, *batch):
            fwd = "fused_rows"
            reason += "; weights fit the tiles"
        if _fuses(kernels, dtype, C * kh * kw, F, *batch, "weight_grad"):
            wgrad = "fused_rows"
            reason += "; and their gradient's"
        if _fuses_flipped(kernels, dtype, W_shape, win, *flipped):
            dgrad = "fused_rows"
            reason += "; dx as a flipped convolution"
    fused = getattr(kernels, "fused_kernels", None)
    direct_tiles = fused is not None and fused(dtype)   # the direct tiles run this dtype here
    if (xp is np and N < runtime.cpu_threads() and fwd in ("fused_rows", "rows")
            and L <= SHIFTED_MAX_POSITIONS and C > DIRECT_MAX_CHANNELS and win.stride[1] == 1
            and not (fwd == "fused_rows" and (C * kh * kw <= SMALL_MAP_FUSED_MAX_TAPS
                                              or F <= SMALL_MAP_FUSED_MAX_FILTERS))
            and shifted.serves_shape(kernels, dtype, W_shape, win)):
        fwd = "shifted"
        reason += "; a batch smaller than the cores on a small map: shifted 1x1 products"
    if (xp is np and N >= runtime.cpu_threads() and fwd == "fused_rows" and win.stride[1] == 1
            and C > DIRECT_MAX_CHANNELS and C * kh * kw <= EXPANDING_SHIFTED_MAX_TAPS
            and F >= max(EXPANDING_SHIFTED_MIN_FILTERS, 2 * C)):
        if weights_kept and Wo >= 8 and direct_tiles:
            fwd = "direct"
            reason += ("; an expanding layer (F >= 2C), locked weights: direct tiles, no "
                       "channels-last moves")
        elif shifted.serves_shape(kernels, dtype, W_shape, win):
            fwd = "shifted"
            reason += ("; an expanding layer (F >= 2C): shifted 1x1 products, no "
                       "channels-last moves")
    if (xp is np and N < runtime.cpu_threads() and fwd in ("fused_rows", "rows", "shifted")
            and C > DIRECT_MAX_CHANNELS and F >= EXPANDING_DIRECT_MIN_RATIO * C
            and C * kh * kw <= EXPANDING_SHIFTED_MAX_TAPS and win.stride[1] == 1 and Wo >= 8
            and direct_tiles):
        fwd = "direct"
        reason += "; an expanding layer with a batch smaller than the cores: direct tiles"
    positions = WINOGRAD_MIN_POSITIONS // (2 if C * F >= WINOGRAD_WIDE_WEIGHTS else 1)
    if (xp is np and dtype == np.float32 and winograd.serves(W_shape, win)
            and min(C, F) >= WINOGRAD_MIN_CHANNELS and N * L >= positions):
        fwd = dgrad = wgrad = "winograd"
        reason += "; 3x3 at stride 1: Winograd F(2x2, 3x3)"
    if (xp is np and dtype == np.float32 and weights_kept and fwd not in ("winograd", "direct")
            and winograd.serves(W_shape, win) and min(C, F) >= WINOGRAD_KEPT_MIN_CHANNELS):
        fwd = "winograd"
        reason += "; locked weights, their transform kept: the forward product as Winograd's"
    if (xp is np and weights_kept and N < runtime.cpu_threads()
            and fwd in FILTER_TILES_FROM and C > DIRECT_MAX_CHANNELS
            and direct.holds_filters(kernels, dtype, x_shape, W_shape, win)):
        fwd = "direct"
        reason += ("; locked weights, a batch smaller than the cores: direct tiles, filters "
                   "to a vector")
    if xp is np and C <= DIRECT_MAX_CHANNELS and direct_tiles:
        if win.stride[1] == 1:
            fwd = wgrad = "direct"
            reason += f"; {C} input channel(s): direct tiles"
        elif N < runtime.cpu_threads():
            fwd = "direct"
            reason += (f"; {C} input channel(s), a batch smaller than the cores: direct tiles "
                       "on the column phases")
    return Plan(fwd, dgrad, wgrad, reason)


def forced_plan():
    """The plan forced by :func:`using_plan` here, or None."""
    return _forced.get()


def resolve(plan, x, x_shape, W_shape, win, weights_kept=False):
    """The :class:`Plan` to run: ``plan`` itself, a name of :data:`PLANS` for all three
    products, or (None) the one forced by :func:`using_plan`, else the default
    (``weights_kept`` as for :func:`default_plan`)."""
    if plan is None:
        plan = _forced.get()
    if plan is None:
        return default_plan(get_array_module(x), kernels_for(x), x.dtype, x_shape, W_shape, win,
                            weights_kept)
    _check(plan)
    if isinstance(plan, Plan):
        return plan
    return Plan(plan, plan, plan, "forced")


def choose_plan(x, W, stride=1, padding=0, dilation=1, groups=1, plan=None):
    """The :class:`Plan` that ``conv2d(x, W, ...)`` (and its backward) would run.

    x : (N, C, H, W) array, W : (F, C/groups, kh, kw) array.
    """
    from .conv import _prepare
    groups, win, group_x_shape = _prepare("conv2d", x, W, stride, padding, dilation, groups)
    return resolve(plan, x, group_x_shape, (W.shape[0] // groups,) + tuple(W.shape[1:]), win,
                   derives_once(W, groups))


def derives_once(W, groups=1):
    """Whether what the paths derive from W is kept: W is locked (:mod:`.prepared`) and
    taken whole (a group's slice of it is derived afresh on every call)."""
    return groups == 1 and is_locked(W)


__all__ = ["PLANS", "Plan", "choose_plan", "default_plan", "path", "resolve", "using_plan",
           "derives_once", "Window"]
