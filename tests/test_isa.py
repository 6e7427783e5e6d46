"""The tiles of each instruction set against the NumPy reference, and the cap on it.

The compiled tiles (``_im2row_matmul.h`` for AVX-512, ``_im2row_matmul_avx2.h``
for AVX2+FMA) run where the CPU has them; ``cpu_tiles.set_isa_cap`` or
``MINCONV_ISA`` holds them to a lower set, so one machine tests every set it
has. Each set is checked over the product and direct-convolution grids with
tails in every dimension a tile splits: output channels that are not a whole
number of vectors (8 or 16 lanes), positions that are not a whole tile, rows
of outputs that end inside a vector, filters and taps that end inside a tile.
"""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from minconv._kernels import reference as ref

cpu_tiles = pytest.importorskip(
    "minconv._kernels.cpu_tiles",
    reason="the Cython kernels are not built (run `python setup.py build_ext --inplace`)")
cpu_direct = pytest.importorskip(
    "minconv._kernels.cpu_direct",
    reason="the Cython kernels are not built (run `python setup.py build_ext --inplace`)")


def _cpu_flags():
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return None


FLAGS = _cpu_flags()
HAS = {"avx512": FLAGS is not None and {"avx512f", "fma"} <= FLAGS,
       "avx2": FLAGS is not None and {"avx2", "fma"} <= FLAGS}


@pytest.fixture(params=["avx512", "avx2", "none"])
def isa(request):
    """Run the test with the tiles capped to one instruction set, then restore the cap."""
    name = request.param
    if name != "none" and not HAS[name]:
        pytest.skip(f"this CPU lacks {name} (or its flags are unreadable here): "
                    f"its tiles cannot run")
    previous = cpu_tiles.set_isa_cap(name)
    try:
        assert cpu_tiles.isa() == name
        yield name
    finally:
        cpu_tiles.set_isa_cap(previous)


def random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_close_to(got, want):
    """Equal up to float32 rounding of sums of many products, relative to the largest value."""
    assert got.dtype == np.float32 and got.shape == want.shape
    scale = max(np.abs(want).max(), 1.0)
    assert np.abs(got - want).max() <= 1e-5 * scale


# ---------------------------------------------------------------- products of the rows

# (x_shape, kh, kw, stride, padding, dilation); output positions 1 to 400, so the
# 6- and 8-position tiles and the 256-position weight-gradient blocks end ragged
PRODUCT_CASES = [
    ((2, 3, 7, 9), 3, 3, (1, 1), (0, 0), (1, 1)),
    ((2, 5, 8, 7), 3, 2, (2, 1), (1, 2), (1, 1)),      # non-square kernel and stride
    ((1, 2, 9, 11), 2, 3, (2, 2), (1, 1), (2, 1)),     # dilation
    ((1, 7, 5, 5), 5, 5, (1, 1), (0, 0), (1, 1)),      # one position
    ((2, 4, 6, 13), 3, 4, (3, 2), (2, 1), (1, 2)),
    ((4, 3, 20, 20), 3, 3, (1, 1), (1, 1), (1, 1)),    # 1600 positions: seven blocks
    ((1, 19, 7, 7), 3, 3, (1, 1), (1, 1), (1, 1)),     # zfnet_mini-like 7x7, odd C
]
# vectors of 8 (AVX2) and 16 (AVX-512) lanes: partial, whole, and several with a tail
CHANNELS = [1, 5, 8, 13, 16, 24, 40, 96, 130]


@pytest.mark.parametrize("F", CHANNELS)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_im2row_products_match_reference(isa, case, F):
    shape, kh, kw, stride, padding, dilation = case
    geometry = (kh, kw, stride, padding, dilation)
    x = random(shape, 0)
    w_rows = random((kh * kw * shape[1], F), 1)
    bias = random((F,), 2)
    assert cpu_tiles.fuses_im2row(np.float32, kh * kw * shape[1], F) == (isa != "none")
    assert cpu_tiles.fuses_im2row(np.float32, kh * kw * shape[1], F, "weight_grad") == \
        (isa != "none")
    y = cpu_tiles.im2row_matmul(x, w_rows, *geometry, bias=bias)
    assert_close_to(y, ref.im2row_matmul(x, w_rows, *geometry, bias=bias))
    assert_close_to(cpu_tiles.im2row_matmul(x, w_rows, *geometry),
                    ref.im2row_matmul(x, w_rows, *geometry))
    dy_rows = random(y.shape, 3)
    assert_close_to(cpu_tiles.im2row_t_matmul(x, dy_rows, *geometry),
                    ref.im2row_t_matmul(x, dy_rows, *geometry))


def test_im2row_products_leave_the_rest_of_out_alone(isa):
    """The partial vectors are written masked: nothing past F in a row, nothing past the end."""
    shape, kh, kw, stride, padding, dilation = PRODUCT_CASES[1]
    geometry = (kh, kw, stride, padding, dilation)
    x = random(shape, 0)
    w_rows = random((kh * kw * shape[1], 13), 1)
    wide = np.full((ref.im2row_matmul(x, w_rows, *geometry).shape[0], 20), 7.0, np.float32)
    out = wide[:, :13]                     # a strided view: written through a copy
    cpu_tiles.im2row_matmul(x, w_rows, *geometry, out=out)
    assert_close_to(out, ref.im2row_matmul(x, w_rows, *geometry))
    assert np.all(wide[:, 13:] == 7.0)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_fewer_images_than_threads_split_by_bands_of_rows(isa, case, threads, monkeypatch):
    """With fewer images than OpenMP threads the forward product runs each image's output
    rows in bands, one a thread (one to three bands an image, bands of one row, a single
    row left whole): the same sums as one thread's, in the same order."""
    from minconv._kernels import cpu
    shape, kh, kw, stride, padding, dilation = case
    geometry = (kh, kw, stride, padding, dilation)
    x = random(shape, 0)
    w_rows = random((kh * kw * shape[1], 40), 1)
    bias = random((40,), 2)
    monkeypatch.setattr(cpu_tiles, "BAND_MIN_MACS", 0)        # even these small products
    previous = cpu.kernel_threads()
    try:
        cpu.set_kernel_threads(threads)
        banded = cpu_tiles.im2row_matmul(x, w_rows, *geometry, bias=bias)
        cpu.set_kernel_threads(1)
        one_thread = cpu_tiles.im2row_matmul(x, w_rows, *geometry, bias=bias)
    finally:
        cpu.set_kernel_threads(previous)
    assert np.array_equal(banded, one_thread)
    assert_close_to(banded, ref.im2row_matmul(x, w_rows, *geometry, bias=bias))


# ---------------------------------------------------------------- few input channels

# (x_shape, F, (kh, kw), stride, padding, dilation): output rows 1 to 50 wide (tails
# of 8- and 16-wide vectors, one and two vectors a tile), filters that end inside
# the 6- and 8-filter tiles and the 3- and 4-filter weight-gradient tiles, kernels
# 1 to 7 taps wide (the 4- and 6-tap weight-gradient tiles), height strides,
# dilation; width stride 2 goes to the reference and is checked all the same
DIRECT_CASES = [
    ((3, 1, 28, 28), 32, (5, 5), (1, 1), (2, 2), (1, 1)),   # zfnet_mini conv1
    ((2, 3, 20, 37), 13, (3, 4), (2, 1), (1, 1), (1, 2)),
    ((2, 2, 9, 9), 9, (7, 7), (1, 1), (3, 3), (1, 1)),
    ((1, 4, 5, 50), 40, (3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 3, 6, 8), 7, (2, 5), (1, 1), (1, 0), (1, 1)),      # 4 outputs a row
    ((1, 2, 4, 24), 5, (1, 1), (1, 1), (0, 0), (1, 1)),     # 1x1: 24 = 16 + 8 outputs
    ((2, 1, 7, 20), 11, (3, 6), (3, 1), (1, 2), (2, 1)),    # 19 outputs a row
    ((1, 3, 9, 17), 25, (1, 7), (1, 1), (0, 3), (1, 1)),    # 17 outputs, 25 filters
    ((2, 3, 11, 10), 5, (4, 4), (1, 2), (1, 1), (1, 1)),    # width stride 2: the reference
]


@pytest.mark.parametrize("case", DIRECT_CASES, ids=str)
def test_direct_convolution_matches_reference(isa, case):
    shape, F, (kh, kw), stride, padding, dilation = case
    x = random(shape, 0)
    W = random((F, shape[1], kh, kw), 1)
    bias = random((F,), 2)
    y = cpu_direct.conv2d_direct(x, W, bias, stride, padding, dilation)
    assert_close_to(y, ref.conv2d_direct(x, W, bias, stride, padding, dilation))
    assert_close_to(cpu_direct.conv2d_direct(x, W, None, stride, padding, dilation),
                    ref.conv2d_direct(x, W, None, stride, padding, dilation))
    dy = random(y.shape, 3)
    assert_close_to(cpu_direct.conv2d_direct_weight_grad(dy, x, W.shape, stride, padding, dilation),
                    ref.conv2d_direct_weight_grad(dy, x, W.shape, stride, padding, dilation))


# ---------------------------------------------------------------- the cap

def test_the_predicates_answer_for_the_active_set(isa):
    assert cpu_tiles.fused_kernels(np.float32) == (isa != "none")
    assert not cpu_tiles.fused_kernels(np.float64)
    assert not cpu_tiles.fuses_im2row(np.float64, 864, 96)
    # zfnet_mini's conv4 (864 x 96 weights) fused; ZFNet's conv5 (3456 x 256) and ResNet's
    # 512 -> 512 (4608 x 512) only by the AVX-512 tiles, which sweep wide weights by
    # chunks; none past 4M floats
    for product in ("forward", "weight_grad"):
        assert cpu_tiles.fuses_im2row(np.float32, 864, 96, product) == (isa != "none")
        assert cpu_tiles.fuses_im2row(np.float32, 3456, 256, product) == (isa == "avx512")
        assert cpu_tiles.fuses_im2row(np.float32, 4608, 512, product) == (isa == "avx512")
        assert not cpu_tiles.fuses_im2row(np.float32, 9 * 1024, 1024, product)
    with pytest.raises(ValueError, match=r"fuses_im2row: product must be one of"):
        cpu_tiles.fuses_im2row(np.float32, 864, 96, "backward")


def assert_both_products_match_reference(x, w_rows, geometry):
    """The tiles' forward product and weight gradient equal the reference's."""
    y = cpu_tiles.im2row_matmul(x, w_rows, *geometry)
    assert_close_to(y, ref.im2row_matmul(x, w_rows, *geometry))
    dy_rows = random(y.shape, 3)
    assert_close_to(cpu_tiles.im2row_t_matmul(x, dy_rows, *geometry),
                    ref.im2row_t_matmul(x, dy_rows, *geometry))


def test_large_weights_match_reference(isa, monkeypatch):
    """ZFNet's conv5 on a 13x13 map, fused past the cache limit (as bench_kernels --tiles runs it)."""
    monkeypatch.setattr(cpu_tiles, "_FUSED_MAX_WEIGHTS",
                        dict.fromkeys(cpu_tiles._FUSED_MAX_WEIGHTS, 2 ** 62))
    x = random((1, 384, 13, 13), 0)
    w_rows = random((9 * 384, 256), 1) * 0.05
    geometry = (3, 3, (1, 1), (1, 1), (1, 1))
    assert_both_products_match_reference(x, w_rows, geometry)


@pytest.mark.parametrize("C, kh", [(150, 3), (40, 5)])
def test_weights_swept_by_chunks_of_channels_match_reference(isa, C, kh):
    """Past the chunk of input channels that fits a core's L2 (64 at 3x3, 16 at 5x5) the
    AVX-512 tiles add the chunks' sums into y: a ragged last chunk, a bias, and more
    positions than one block of 192."""
    x = random((2, C, 11, 11), 0)
    w_rows = random((kh * kh * C, 40), 1) * 0.1
    bias = random((40,), 2)
    geometry = (kh, kh, (1, 1), (kh // 2, kh // 2), (1, 1))
    assert_close_to(cpu_tiles.im2row_matmul(x, w_rows, *geometry, bias=bias),
                    ref.im2row_matmul(x, w_rows, *geometry, bias=bias))


@pytest.mark.parametrize("hw", [(11, 22), (16, 18), (10, 30), (2, 281), (16, 89), (28, 58)],
                         ids=str)
def test_a_short_last_block_of_positions_joins_the_one_before(isa, hw):
    """The blocks of positions (192 for the AVX-512 forward product, 256 and 1024 for the
    weight gradients) take a remainder of less than half a block into the last one: 242,
    288, 300, 562, 1424 and 1624 positions, each just under or over the line; both
    products equal the reference's."""
    x = random((1, 150) + hw, 0)
    w_rows = random((9 * 150, 24), 1) * 0.1
    geometry = (3, 3, (1, 1), (1, 1), (1, 1))
    assert_both_products_match_reference(x, w_rows, geometry)


# ---------------------------------------------------------------- max pooling's vectors

# (x_shape, kh, kw, stride, padding, ceil_mode): rows of outputs shorter than, equal to
# and longer than one vector (8 and 16 lanes) with a tail; padding and ceil windows on
# both edges; strides 1 and 2 (their own loads) and 3 (a gather).
POOL_CASES = [((1, 3, 7, 7), 3, 3, (1, 1), (1, 1), False),
              ((2, 2, 9, 40), 3, 3, (1, 1), (1, 1), False),
              ((1, 2, 16, 16), 2, 2, (1, 1), (0, 0), False),
              ((1, 3, 10, 35), 3, 3, (2, 2), (0, 0), True),
              ((1, 2, 13, 67), 3, 3, (2, 2), (1, 1), True),
              ((2, 2, 11, 34), 2, 3, (2, 2), (1, 0), False),
              ((1, 2, 9, 50), 4, 3, (3, 3), (2, 1), True),
              ((1, 2, 5, 17), 3, 1, (1, 1), (1, 0), True)]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool_vectors_match_reference(isa, case, ties):
    from minconv._kernels import cpu_pool
    shape, kh, kw, stride, padding, ceil_mode = case
    assert cpu_pool.simd_level() <= cpu_tiles.ISA_NAMES.index(isa)
    x = random(shape, 0)
    if ties:                       # plateaus, and -inf and NaN where windows meet them
        x = np.round(x)
        x.reshape(-1)[::7] = -np.inf
        x.reshape(-1)[5::23] = np.nan
    y, switches = cpu_pool.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)
    y_ref, switches_ref = ref.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)
    np.testing.assert_array_equal(switches, switches_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_the_cap_returns_the_previous_one_and_names_a_wrong_one():
    previous = cpu_tiles.set_isa_cap("none")
    try:
        assert cpu_tiles.isa() == "none"
        assert cpu_tiles.set_isa_cap("avx2") == "none"
        assert cpu_tiles.isa() == ("avx2" if HAS["avx2"] else "none")
        with pytest.raises(ValueError, match=r"set_isa_cap: expected one of .*'sse4'"):
            cpu_tiles.set_isa_cap("sse4")
        assert cpu_tiles.set_isa_cap("avx512") == "avx2"   # the wrong name changed nothing
    finally:
        cpu_tiles.set_isa_cap(previous)


def test_without_a_cap_the_best_set_of_the_cpu_runs():
    if FLAGS is None:
        pytest.skip("the CPU's flags are read from /proc/cpuinfo on x86-64 Linux")
    previous = cpu_tiles.set_isa_cap("avx512")
    try:
        want = "avx512" if HAS["avx512"] else ("avx2" if HAS["avx2"] else "none")
        assert cpu_tiles.isa() == want
    finally:
        cpu_tiles.set_isa_cap(previous)


def _isa_in_child(value):
    env = dict(os.environ, MINCONV_ISA=value)
    code = "from minconv._kernels import cpu_tiles; print(cpu_tiles.isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("name", ["avx2", "none"])
def test_the_environment_variable_caps_the_set_at_load(name):
    child = _isa_in_child(name)
    assert child.returncode == 0, child.stderr
    want = "avx2" if name == "avx2" and HAS["avx2"] else "none"
    assert child.stdout.strip() == want


def test_a_wrong_environment_value_is_named():
    child = _isa_in_child("avx1024")
    assert child.returncode != 0
    assert "MINCONV_ISA" in child.stderr and "avx1024" in child.stderr
