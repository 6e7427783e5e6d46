"""The Cython kernels against the NumPy reference (the readable specification).

im2col and the pooling switches must match exactly; sums (col2im, unpooling,
LRN) may round differently, so they are compared with a tolerance fit for the dtype.
"""
import os
import platform
import sys

import numpy as np
import pytest

from conftest import tiles_at
from minconv._kernels import reference as ref

REASON = "the Cython kernels are not built (run `pip install -e .` or " \
         "`python setup.py build_ext --inplace`)"
cpu_conv = pytest.importorskip("minconv._kernels.cpu_conv", reason=REASON)
cpu_tiles = pytest.importorskip("minconv._kernels.cpu_tiles", reason=REASON)
cpu_direct = pytest.importorskip("minconv._kernels.cpu_direct", reason=REASON)
cpu_pool = pytest.importorskip("minconv._kernels.cpu_pool", reason=REASON)
cpu_avgpool = pytest.importorskip("minconv._kernels.cpu_avgpool", reason=REASON)
cpu_lrn = pytest.importorskip("minconv._kernels.cpu_lrn", reason=REASON)
cpu_pointwise = pytest.importorskip("minconv._kernels.cpu_pointwise", reason=REASON)
cpu_layout = pytest.importorskip("minconv._kernels.cpu_layout", reason=REASON)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


def random(shape, dtype, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many windows hold equal maxima
        return rng.integers(0, 4, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def non_contiguous(x):
    """The same values as ``x`` in a strided view (every other column of a wider array)."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    wide[..., ::2] = x
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


# ---------------------------------------------------------------- im2col / col2im

# (x_shape, kh, kw, stride, padding, dilation)
CONV_CASES = [
    ((2, 3, 7, 9), 3, 3, (1, 1), (0, 0), (1, 1)),
    ((2, 3, 8, 7), 3, 2, (2, 1), (1, 2), (1, 1)),     # non-square kernel and stride
    ((1, 2, 9, 11), 2, 3, (2, 2), (1, 1), (2, 1)),    # dilation
    ((3, 2, 10, 10), 5, 5, (2, 2), (0, 0), (1, 1)),
    ((2, 3, 11, 10), 4, 4, (2, 2), (1, 1), (1, 1)),   # even kernel: paired taps with ragged edges
    ((2, 2, 12, 12), 3, 3, (2, 2), (2, 2), (1, 1)),
    ((2, 4, 6, 13), 3, 4, (3, 2), (2, 1), (1, 2)),
    ((1, 2, 9, 9), 3, 3, (3, 3), (1, 1), (2, 2)),
    ((1, 1, 5, 5), 5, 5, (1, 1), (0, 0), (1, 1)),     # kernel as large as the input
    ((2, 2, 4, 5), 3, 3, (1, 1), (3, 3), (1, 1)),     # padding wider than a tap row reaches
    ((1, 3, 224, 224), 7, 7, (2, 2), (1, 1), (1, 1)),  # ZFNet conv1: 224 -> 110
    ((1, 96, 55, 55), 5, 5, (2, 2), (0, 0), (1, 1)),   # ZFNet conv2: 55 -> 26
    ((1, 256, 13, 13), 3, 3, (1, 1), (1, 1), (1, 1)),  # ZFNet conv3
]


# each unfolding with its fold (the transpose): columns (im2col) and channels-last rows (im2row)
UNFOLDINGS = [("im2col", "col2im"), ("im2row", "row2im")]


@pytest.mark.parametrize("unfold,fold", UNFOLDINGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_unfold_and_fold_match_reference(case, dtype, unfold, fold):
    shape, kh, kw, stride, padding, dilation = case
    x = random(shape, dtype)
    unfolded = getattr(cpu_conv, unfold)(x, kh, kw, stride, padding, dilation)
    assert unfolded.dtype == dtype and unfolded.flags.c_contiguous
    np.testing.assert_array_equal(unfolded,
                                  getattr(ref, unfold)(x, kh, kw, stride, padding, dilation))

    c = random(unfolded.shape, dtype, seed=1)
    dx = getattr(cpu_conv, fold)(c, shape, kh, kw, stride, padding, dilation)
    assert dx.dtype == dtype and dx.shape == shape and dx.flags.c_contiguous
    np.testing.assert_allclose(dx, getattr(ref, fold)(c, shape, kh, kw, stride, padding, dilation),
                               **TOL[dtype])


@pytest.mark.parametrize("unfold,fold", UNFOLDINGS)
@pytest.mark.parametrize("case", CONV_CASES[:10], ids=str)
def test_fold_is_the_adjoint_of_unfold(case, unfold, fold):
    shape, kh, kw, stride, padding, dilation = case
    x = random(shape, np.float64)
    unfolded = getattr(cpu_conv, unfold)(x, kh, kw, stride, padding, dilation)
    c = random(unfolded.shape, np.float64, seed=1)
    back = getattr(cpu_conv, fold)(c, shape, kh, kw, stride, padding, dilation)
    np.testing.assert_allclose(np.vdot(unfolded, c), np.vdot(x, back), rtol=1e-12)


@pytest.mark.parametrize("unfold", ["im2col", "im2row"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unfold_writes_into_out(dtype, unfold):
    shape, kh, kw, stride, padding, dilation = CONV_CASES[1]
    x = random(shape, dtype)
    expected = getattr(ref, unfold)(x, kh, kw, stride, padding, dilation)
    run = getattr(cpu_conv, unfold)
    buf = np.full(expected.shape, np.nan, dtype=dtype)
    assert run(non_contiguous(x), kh, kw, stride, padding, dilation, out=buf) is buf
    np.testing.assert_array_equal(buf, expected)
    strided = np.full((expected.shape[0], 2 * expected.shape[1]), np.nan, dtype=dtype)[:, ::2]
    assert run(x, kh, kw, stride, padding, dilation, out=strided) is strided
    np.testing.assert_array_equal(strided, expected)


@pytest.mark.parametrize("unfold,fold", UNFOLDINGS)
def test_unfold_and_fold_name_a_wrong_shape(unfold, fold):
    shape, kh, kw, stride, padding, dilation = CONV_CASES[1]
    x = random(shape, np.float32)
    unfolded = getattr(cpu_conv, unfold)(x, kh, kw, stride, padding, dilation)
    with pytest.raises(ValueError, match=rf"{unfold}: out has shape"):
        getattr(cpu_conv, unfold)(x, kh, kw, stride, padding, dilation, out=unfolded[:-1])
    with pytest.raises(ValueError, match=rf"{fold}: \w+ has shape"):
        getattr(cpu_conv, fold)(unfolded[:-1], shape, kh, kw, stride, padding, dilation)


@pytest.mark.parametrize("case", CONV_CASES[:10], ids=str)
def test_im2row_holds_the_columns_of_im2col_channels_last(case):
    shape, kh, kw, stride, padding, dilation = case
    x = random(shape, np.float64)
    cols = ref.im2col(x, kh, kw, stride, padding, dilation)        # (C*kh*kw, N*L), (c, i, j)
    rows = ref.im2row(x, kh, kw, stride, padding, dilation)        # (N*L, kh*kw*C), (i, j, c)
    C = shape[1]
    reordered = cols.reshape(C, kh, kw, -1).transpose(3, 1, 2, 0).reshape(rows.shape)
    np.testing.assert_array_equal(rows, reordered)


# ---------------------------------------------------------------- products of the rows

# the AVX-512 tiles hold 16 channels a vector, up to 4 vectors a tile: partial
# vectors (1, 10, 17), whole ones (16, 64), 96 as 3 + 3 vectors and 130 as 4 + 4 + 1
CHANNELS = [1, 10, 16, 17, 64, 96, 130]
# the weight gradient sweeps positions in blocks of 256: 4 * 20 * 20 crosses six
PRODUCT_CASES = CONV_CASES[:10] + [CONV_CASES[12], ((4, 3, 20, 20), 3, 3, (1, 1), (1, 1), (1, 1))]


def assert_close_to(got, want, dtype):
    """Equal up to the rounding of sums of many products: relative to the largest value."""
    assert got.dtype == dtype and got.shape == want.shape
    scale = max(np.abs(want).max(), 1.0)
    assert np.abs(got - want).max() <= scale * (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("F", CHANNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_im2row_products_match_reference(case, dtype, F):
    shape, kh, kw, stride, padding, dilation = case
    x = random(shape, dtype)
    w_rows = random((kh * kw * shape[1], F), dtype, seed=1)
    bias = random((F,), dtype, seed=2)
    geometry = (kh, kw, stride, padding, dilation)
    y = cpu_tiles.im2row_matmul(x, w_rows, *geometry, bias=bias)
    assert_close_to(y, ref.im2row_matmul(x, w_rows, *geometry, bias=bias), dtype)
    assert_close_to(cpu_tiles.im2row_matmul(x, w_rows, *geometry),
                    ref.im2row_matmul(x, w_rows, *geometry), dtype)

    dy_rows = random(y.shape, dtype, seed=3)
    assert_close_to(cpu_tiles.im2row_t_matmul(x, dy_rows, *geometry),
                    ref.im2row_t_matmul(x, dy_rows, *geometry), dtype)


def test_im2row_products_are_fused_where_the_cpu_has_avx512_or_avx2():
    flags = open("/proc/cpuinfo").read() if sys.platform == "linux" else ""
    if platform.machine() != "x86_64" or not flags:
        pytest.skip("the fused products are for x86-64; their absence is checked on Linux")
    has_tiles = " fma" in flags and (" avx512f" in flags or " avx2" in flags)
    if os.environ.get("MINCONV_ISA", "").strip().lower() == "none":
        has_tiles = False                          # capped (tests/test_isa.py checks the cap)
    assert cpu_tiles.fused_kernels(np.float32) == has_tiles
    assert not cpu_tiles.fused_kernels(np.float64)
    # zfnet_mini's conv4 (864 x 96 weights) fused; 1024 -> 1024 3x3 (9216 x 1024) not
    # (tests/test_isa.py checks each instruction set's limits)
    assert cpu_tiles.fuses_im2row(np.float32, 864, 96) == has_tiles
    assert not cpu_tiles.fuses_im2row(np.float32, 9216, 1024, "weight_grad")
    assert not cpu_tiles.fuses_im2row(np.float64, 864, 96)


# (input shape, F): a batch of one large enough for the threads to share it, by output
# channels (13x13, F = 48 and 40: shares of 32 and 16 or 8) or by bands of rows (40x40);
# and one too small to share
SHARED_CASES = [((1, 40, 13, 13), 48), ((1, 40, 13, 13), 40), ((1, 8, 40, 40), 48),
                ((1, 3, 13, 13), 64)]


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("case", SHARED_CASES, ids=str)
def test_im2row_products_shared_by_the_threads_match_reference(case, isa):
    shape, F = case
    x = random(shape, np.float32)
    w_rows = random((9 * shape[1], F), np.float32, seed=1)
    bias = random((F,), np.float32, seed=2)
    with tiles_at(isa):
        y = np.full((shape[2] * shape[3], F), np.nan, np.float32)
        cpu_tiles.im2row_matmul(x, w_rows, 3, 3, (1, 1), (1, 1), (1, 1), bias=bias, out=y)
    assert_close_to(y, ref.im2row_matmul(x, w_rows, 3, 3, (1, 1), (1, 1), (1, 1), bias=bias),
                    np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2row_products_write_into_out(dtype):
    shape, kh, kw, stride, padding, dilation = CONV_CASES[1]
    geometry = (kh, kw, stride, padding, dilation)
    x = random(shape, dtype)
    w_rows = random((kh * kw * shape[1], 20), dtype, seed=1)
    want = ref.im2row_matmul(x, w_rows, *geometry)
    out = np.full(want.shape, np.nan, dtype=dtype)
    assert cpu_tiles.im2row_matmul(non_contiguous(x), w_rows, *geometry, out=out) is out
    assert_close_to(out, want, dtype)
    dy_rows = random(want.shape, dtype, seed=3)
    out = np.full(w_rows.shape, np.nan, dtype=dtype)
    assert cpu_tiles.im2row_t_matmul(x, dy_rows, *geometry, out=out) is out
    assert_close_to(out, ref.im2row_t_matmul(x, dy_rows, *geometry), dtype)


def test_im2row_products_name_wrong_operands():
    shape, kh, kw, stride, padding, dilation = CONV_CASES[1]
    geometry = (kh, kw, stride, padding, dilation)
    x = random(shape, np.float32)
    w_rows = random((kh * kw * shape[1], 8), np.float32)
    with pytest.raises(ValueError, match=r"im2row_matmul: w_rows must be a float32 matrix with 18"):
        cpu_tiles.im2row_matmul(x, w_rows[:-1], *geometry)
    with pytest.raises(ValueError, match=r"im2row_matmul: w_rows must be a float32"):
        cpu_tiles.im2row_matmul(x, w_rows.astype(np.float64), *geometry)
    with pytest.raises(ValueError, match=r"im2row_matmul: bias must be float32 \(8,\)"):
        cpu_tiles.im2row_matmul(x, w_rows, *geometry, bias=np.zeros(7, np.float32))
    y = cpu_tiles.im2row_matmul(x, w_rows, *geometry)
    with pytest.raises(ValueError, match=r"im2row_t_matmul: dy_rows must be a float32 matrix"):
        cpu_tiles.im2row_t_matmul(x, y[:-1], *geometry)


# (x_shape, F, k, stride, padding, dilation): outputs one vector wide, two, and more
# than two; filters a partial tile; height stride, dilation; a width stride of 2 (the
# tiles read the input's column phases; the weight gradient's tiles leave it to the
# reference)
DIRECT_CASES = [
    ((3, 1, 28, 28), 32, 5, (1, 1), (2, 2), (1, 1)),      # zfnet_mini conv1
    ((2, 3, 20, 37), 13, 3, (2, 1), (1, 1), (1, 2)),
    ((2, 2, 9, 9), 9, 7, (1, 1), (3, 3), (1, 1)),
    ((1, 4, 5, 50), 40, 3, (1, 1), (0, 0), (1, 1)),
    ((2, 3, 11, 10), 5, 4, (1, 2), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES, ids=str)
def test_direct_convolution_matches_reference(case, dtype):
    shape, F, k, stride, padding, dilation = case
    x = random(shape, dtype)
    W = random((F, shape[1], k, k), dtype, seed=1)
    bias = random((F,), dtype, seed=2)
    y = cpu_direct.conv2d_direct(x, W, bias, stride, padding, dilation)
    assert_close_to(y, ref.conv2d_direct(x, W, bias, stride, padding, dilation), dtype)
    assert_close_to(cpu_direct.conv2d_direct(x, W, None, stride, padding, dilation),
                    ref.conv2d_direct(x, W, None, stride, padding, dilation), dtype)
    dy = random(y.shape, dtype, seed=3)
    assert_close_to(cpu_direct.conv2d_direct_weight_grad(dy, x, W.shape, stride, padding, dilation),
                    ref.conv2d_direct_weight_grad(dy, x, W.shape, stride, padding, dilation),
                    dtype)


# (x_shape, F, kh, kw, stride, padding, dilation) at batch 1 and 3: with enough
# multiply-adds the threads share bands of rows at batch 1; width strides 2-4 over the
# column phases, rows of 111 and 53 outputs (a last tile that overlaps the one before
# it), rows narrower than one tile
DIRECT_STRIDED_CASES = [((3, 224, 224), 64, 3, 3, (2, 2), (0, 0), (1, 1)),   # SqueezeNet's
                        ((3, 40, 45), 10, 7, 7, (2, 2), (3, 3), (1, 1)),     # ResNet's
                        ((3, 219, 219), 24, 11, 11, (4, 4), (2, 2), (1, 1)),  # AlexNet's
                        ((2, 30, 31), 7, 3, 5, (1, 3), (1, 2), (1, 2)),
                        ((1, 9, 12), 3, 3, 3, (2, 2), (1, 1), (1, 1))]


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("case", DIRECT_STRIDED_CASES, ids=str)
@pytest.mark.parametrize("batch", [1, 3])
def test_direct_tiles_at_width_strides_match_reference(case, batch, isa):
    image, F, kh, kw, stride, padding, dilation = case
    rng = np.random.default_rng(F)
    x = rng.standard_normal((batch,) + image).astype(np.float32)
    x[-1, 0, image[1] // 2, image[2] // 2] = np.nan          # the fused ReLU keeps NaN
    W = rng.standard_normal((F, image[0], kh, kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    with tiles_at(isa):
        y = cpu_direct.conv2d_direct(x, W, b, stride, padding, dilation)
        rectified = cpu_direct.conv2d_direct(x, W, b, stride, padding, dilation, relu=True)
    expected = ref.conv2d_direct(x.astype(np.float64), W.astype(np.float64),
                                 b.astype(np.float64), stride, padding, dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(rectified, np.maximum(y, 0))


# (x_shape, F, kh, kw, padding) with many input channels (expanding layers at batch 1):
# 3x3 (the unrolled tiles) and 5x5, rows of 13 (two vectors that overlap), 27 and 55 (a
# last tile that overlaps the one before), 7 (one masked vector); 13 rows against 32 or 43
# filter blocks (the threads share the blocks), 55 rows against 11 (they share the rows);
# filters not a multiple of a tile's
DIRECT_WIDE_CASES = [((48, 13, 13), 192, 3, 3, (1, 1)),      # SqueezeNet's fire7 expand
                     ((64, 13, 13), 256, 3, 3, (1, 1)),
                     ((32, 27, 27), 128, 3, 3, (1, 1)),
                     ((16, 55, 55), 64, 3, 3, (1, 1)),
                     ((16, 14, 14), 50, 5, 5, (2, 2)),
                     ((24, 7, 9), 100, 3, 3, (1, 0))]


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("case", DIRECT_WIDE_CASES, ids=str)
@pytest.mark.parametrize("batch", [1, 3])
def test_direct_tiles_over_many_channels_match_reference(case, batch, isa):
    image, F, kh, kw, padding = case
    rng = np.random.default_rng(F)
    x = rng.standard_normal((batch,) + image).astype(np.float32)
    x[0, 1, image[1] // 2, 0] = np.nan                       # the fused ReLU keeps NaN
    W = rng.standard_normal((F, image[0], kh, kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    with tiles_at(isa):
        blocks = cpu_direct.direct_filter_blocks(W)
        y = cpu_direct.conv2d_direct(x, W, b, (1, 1), padding, (1, 1))
        kept = cpu_direct.conv2d_direct(x, W, b, (1, 1), padding, (1, 1), blocks=blocks)
        rectified = cpu_direct.conv2d_direct(x, W, b, (1, 1), padding, (1, 1), relu=True,
                                             blocks=blocks)
    expected = ref.conv2d_direct(x.astype(np.float64), W.astype(np.float64),
                                 b.astype(np.float64), (1, 1), padding, (1, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-3)
    assert np.isnan(y[0]).any() and not np.isnan(y[1:]).any()   # no NaN crosses images
    np.testing.assert_array_equal(kept, y)
    np.testing.assert_array_equal(rectified, np.maximum(y, 0))


# (x_shape, F, kh, kw, stride, padding, dilation) for the tiles that hold 16 filters to two
# vectors: rows of 13 (a map's 169 positions: 28 tiles of 6 and one of 1), 27 and 11 (tiles
# that cross rows), filters not a multiple of 16 (a last block of 8 and of 1), height and
# width strides (the width's column phases), a dilation, 5x5 (the taps' loops not unrolled)
FILTER_TILE_CASES = [((64, 13, 13), 256, 3, 3, (1, 1), (1, 1), (1, 1)),
                     ((32, 27, 27), 40, 3, 3, (1, 1), (1, 1), (1, 1)),
                     ((33, 11, 14), 17, 3, 3, (2, 2), (1, 1), (1, 1)),
                     ((40, 12, 15), 24, 3, 3, (1, 2), (2, 0), (2, 2)),
                     ((12, 10, 9), 16, 5, 5, (1, 1), (2, 2), (1, 1))]


@pytest.mark.parametrize("case", FILTER_TILE_CASES, ids=str)
@pytest.mark.parametrize("batch", [1, 3])
def test_filter_tiles_give_the_row_tiles_outputs_bit_for_bit(case, batch):
    """Both kinds of direct tile sum bias, then each channel's taps in order: the same
    outputs bit for bit, with a bias or none, a fused ReLU (NaN kept) and the jobs of a
    batch of one; and the reference's within float32 rounding."""
    image, F, kh, kw, stride, padding, dilation = case
    rng = np.random.default_rng(F)
    x = rng.standard_normal((batch,) + image).astype(np.float32)
    x[0, 1, image[1] // 2, 4] = np.nan                       # a column every case reads
    W = rng.standard_normal((F, image[0], kh, kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    with tiles_at("avx2"):
        rows, filters = (cpu_direct.direct_filter_blocks(W, k) for k in (6, 16))
        for bias, relu in ((b, False), (None, True)):
            y = cpu_direct.conv2d_direct(x, W, bias, stride, padding, dilation, relu=relu,
                                         blocks=filters)
            want = cpu_direct.conv2d_direct(x, W, bias, stride, padding, dilation, relu=relu,
                                            blocks=rows)
            np.testing.assert_array_equal(y, want)
    expected = ref.conv2d_direct(x.astype(np.float64), W.astype(np.float64), None, stride,
                                 padding, dilation)
    np.testing.assert_allclose(y, np.maximum(expected, 0), rtol=1e-4, atol=1e-3)
    assert np.isnan(y[0]).any() and not np.isnan(y[1:]).any()


def test_direct_tiles_take_filters_to_a_vector_where_rows_waste_more():
    """direct_block_filters: 16 filters to two vectors (AVX2) where a layer of >= 288 taps
    keeps more of their work than of the row tiles' (rows of 13, 27, 28, 55); the row
    tiles' 6 for few taps, rows that fill the vectors, or filters that fill few of 16."""
    with tiles_at("avx2"):
        pick = lambda C, F, H, k=3: cpu_direct.direct_block_filters(    # noqa: E731
            (1, C, H, H), (F, C, k, k), (1, 1), (k // 2, k // 2), (1, 1))
        assert [pick(64, 256, 13), pick(48, 192, 13), pick(32, 128, 27), pick(64, 128, 28),
                pick(32, 64, 55)] == [16] * 5
        assert cpu_direct.FILTER_TILES_MIN_TAPS == 288
        assert pick(16, 64, 55) == 6                                      # 144 taps
        assert pick(11, 64, 13, 5) == 6 and pick(12, 64, 13, 5) == 16    # 275 and 300 taps
        assert pick(64, 64, 64) == 6 and pick(64, 256, 32) == 6           # rows of 2 x 8k
        assert pick(64, 20, 13) == 6 and pick(64, 24, 13) == 6            # 20/32 and 24/32
        assert pick(64, 28, 13) == 16                                     # 28/32 > 13/16
    with tiles_at("avx512"):
        assert cpu_direct.direct_block_filters((1, 64, 13, 13), (256, 64, 3, 3), (1, 1),
                                               (1, 1), (1, 1)) == 8


def test_filter_tiles_blocks_and_the_kinds_each_product_takes():
    """direct_filter_blocks(W, 16): blocks of 16 filters tap by tap (zeros past F); a kind
    of tile this CPU lacks, and the filter tiles' blocks given to the pooled product (row
    tiles only), are errors that name what they got."""
    W = random((20, 4, 3, 3), np.float32)
    with tiles_at("avx2"):
        blocks = cpu_direct.direct_filter_blocks(W, 16)
        assert blocks.shape == (2, 36, 16)
        flat = blocks.transpose(0, 2, 1).reshape(-1, 36)
        np.testing.assert_array_equal(flat[:20], W.reshape(20, 36))
        assert not flat[20:].any()
        with pytest.raises(ValueError, match=r"direct_filter_blocks: no tiles of 7 filters here "
                                             r"\(isa 'avx2': 6, 16\)"):
            cpu_direct.direct_filter_blocks(W, 7)
        x = random((1, 4, 12, 12), np.float32)
        with pytest.raises(ValueError, match=r"conv2d_direct_maxpool: filter blocks must be "
                                             r"C-contiguous float32 \(4, 36, 6\) "
                                             r"\(direct_filter_blocks of W \(20, 4, 3, 3\)\), "
                                             r"got float32 \(2, 36, 16\)"):
            cpu_direct.conv2d_direct_maxpool(x, W, None, (1, 1), (1, 1), (1, 1), True, (2, 2),
                                             (2, 2), (0, 0), (6, 6), blocks=blocks)


def test_direct_tiles_give_the_same_outputs_however_the_jobs_are_cut(monkeypatch):
    """At batch 1 the threads take jobs of a filter block over a band of rows (many
    channels) or of every block over a band (few channels over a large map): each output
    is summed alike whatever the cut (bit for bit with one band or many)."""
    if not cpu_tiles.fused_kernels(np.float32):
        pytest.skip("no tiles on this CPU")
    rng = np.random.default_rng(3)
    for x_shape, W_shape in (((1, 8, 40, 37), (20, 8, 3, 3)), ((1, 40, 13, 15), (26, 40, 3, 3))):
        x = rng.standard_normal(x_shape).astype(np.float32)
        W = rng.standard_normal(W_shape).astype(np.float32)
        outputs = []
        for jobs in (1, 8, 200):
            monkeypatch.setattr(cpu_direct, "JOBS_PER_THREAD", jobs)
            monkeypatch.setattr(cpu_direct, "BANDS_PER_THREAD", jobs)
            outputs.append(cpu_direct.conv2d_direct(x, W, None, (1, 1), (1, 1), (1, 1)))
        for y in outputs[1:]:
            np.testing.assert_array_equal(y, outputs[0])
        np.testing.assert_allclose(outputs[0], ref.conv2d_direct(x.astype(np.float64), W, None,
                                                                 (1, 1), (1, 1), (1, 1)),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_direct_filter_blocks_hold_each_tiles_filters_tap_by_tap(isa):
    """blocks[k, t, i] = W[k*b + i] at tap t (zeros past F), b a tile's filters."""
    W = random((13, 2, 3, 3), np.float32)
    with tiles_at(isa):
        blocks = cpu_direct.direct_filter_blocks(W)
    b = {"avx512": 8, "avx2": 6}[isa]
    assert blocks.shape == (-(-13 // b), 18, b)
    flat = blocks.transpose(0, 2, 1).reshape(-1, 18)
    np.testing.assert_array_equal(flat[:13], W.reshape(13, 18))
    assert not flat[13:].any()


def test_direct_convolution_names_wrong_filter_blocks():
    x = random((1, 8, 9, 9), np.float32)
    W = random((20, 8, 3, 3), np.float32)
    blocks = cpu_direct.direct_filter_blocks(W)
    for bad in (blocks[:-1], blocks.astype(np.float64), blocks[:, ::2], "blocks"):
        with pytest.raises(ValueError, match=r"conv2d_direct: filter blocks must be C-contiguous "
                                             r"float32 \(\d+, 72, \d\)"):
            cpu_direct.conv2d_direct(x, W, None, (1, 1), (1, 1), (1, 1), blocks=bad)
    with pytest.raises(ValueError, match=r"direct_filter_blocks: expected float32 weights"):
        cpu_direct.direct_filter_blocks(W.astype(np.float64))


@pytest.mark.parametrize("shape, shared", [((2, 3, 5, 11), False), ((1, 40, 17, 14), True)],
                         ids=["one thread", "planes shared out"])
def test_phased_padded_splits_the_padded_columns_by_phase(shape, shared):
    """xq[n, c, h, q, u] = x_pad[n, c, h, u*sw + q], zero past the padded width, whether
    one thread writes it or the threads share its planes out."""
    N, C, H, Wd = shape
    assert (N * C * H * Wd >= cpu_layout.PHASED_THREADS_FROM) == shared
    x = random(shape, np.float32)
    for ph, pw, sw in ((0, 0, 1), (1, 2, 1), (0, 0, 2), (1, 3, 2), (2, 1, 3), (0, 2, 4)):
        buffer = np.full(cpu_layout.phased_buffer(shape, ph, pw, sw).size, np.nan, np.float32)
        buffer[-16:] = 0
        xq = cpu_layout.phased_padded(x, ph, pw, sw, out=buffer)
        Wq = -(-(Wd + 2 * pw) // sw)
        padded = np.zeros((N, C, H + 2 * ph, Wq * sw), np.float32)
        padded[:, :, ph:ph + H, pw:pw + Wd] = x
        assert xq.shape == (N, C, H + 2 * ph, sw, Wq)
        np.testing.assert_array_equal(
            xq, padded.reshape(N, C, H + 2 * ph, Wq, sw).transpose(0, 1, 2, 4, 3))


def test_direct_convolution_is_the_im2col_convolution():
    shape, F, k, stride, padding, dilation = DIRECT_CASES[1]
    x = random(shape, np.float64)
    W = random((F, shape[1], k, k), np.float64, seed=1)
    cols = ref.im2col(x, k, k, stride, padding, dilation)
    y = ref.conv2d_direct(x, W, None, stride, padding, dilation)
    want = (W.reshape(F, -1) @ cols).reshape(F, shape[0], *y.shape[2:]).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    dy = random(y.shape, np.float64, seed=3)
    dy_cols = dy.transpose(1, 0, 2, 3).reshape(F, -1)
    np.testing.assert_allclose(
        ref.conv2d_direct_weight_grad(dy, x, W.shape, stride, padding, dilation),
        (dy_cols @ cols.T).reshape(W.shape), rtol=1e-12, atol=1e-12)


def test_direct_convolution_names_wrong_operands():
    shape, F, k, stride, padding, dilation = DIRECT_CASES[0]
    x = random(shape, np.float32)
    W = random((F, shape[1], k, k), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_direct: input \(3, 1, 28, 28\) does not match"):
        cpu_direct.conv2d_direct(x, W[:, :0], None, stride, padding, dilation)
    with pytest.raises(ValueError, match=r"conv2d_direct: weight and bias must be float32"):
        cpu_direct.conv2d_direct(x, W.astype(np.float64), None, stride, padding, dilation)
    with pytest.raises(ValueError, match=r"conv2d_direct_weight_grad: dy must be float32"):
        cpu_direct.conv2d_direct_weight_grad(np.zeros((3, F, 27, 28), np.float32), x, W.shape,
                                           stride, padding, dilation)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_kernels_accept_non_contiguous_input(dtype):
    shape, kh, kw, stride, padding, dilation = CONV_CASES[4]
    x = random(shape, dtype)
    np.testing.assert_array_equal(
        cpu_conv.im2col(non_contiguous(x), kh, kw, stride, padding, dilation),
        ref.im2col(x, kh, kw, stride, padding, dilation))
    c = random(ref.im2col(x, kh, kw, stride, padding, dilation).shape, dtype, seed=1)
    c_view = np.asfortranarray(c)
    np.testing.assert_allclose(cpu_conv.col2im(c_view, shape, kh, kw, stride, padding, dilation),
                               ref.col2im(c, shape, kh, kw, stride, padding, dilation),
                               **TOL[dtype])


def test_conv_kernels_reject_impossible_geometry():
    x = random((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="no output"):
        cpu_conv.im2col(x, 5, 5, (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="float32 or float64"):
        cpu_conv.im2col(x.astype(np.int32), 3, 3, (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="out has shape"):
        cpu_conv.im2col(x, 3, 3, (1, 1), (0, 0), (1, 1), out=np.empty((9, 5), np.float32))
    with pytest.raises(ValueError, match="expected"):
        cpu_conv.col2im(np.zeros((9, 5), np.float32), (1, 1, 4, 4), 3, 3,
                        (1, 1), (0, 0), (1, 1))


# ---------------------------------------------------------------- max pooling

# (x_shape, kh, kw, stride, padding, ceil_mode)
POOL_CASES = [
    ((2, 3, 9, 9), 3, 3, (2, 2), (0, 0), True),
    ((2, 3, 10, 10), 3, 3, (2, 2), (0, 0), True),     # ceil adds a window hanging past the edge
    ((2, 3, 10, 10), 3, 3, (2, 2), (0, 0), False),
    ((1, 2, 11, 8), 3, 3, (2, 2), (1, 1), True),
    ((2, 2, 7, 9), 2, 3, (1, 2), (1, 0), False),      # non-square kernel, stride and input
    ((2, 2, 8, 8), 2, 2, (2, 2), (0, 0), False),
    ((1, 3, 6, 7), 3, 2, (3, 1), (1, 1), True),
    ((1, 2, 9, 10), 4, 3, (3, 3), (2, 1), True),
    ((1, 1, 3, 600), 2, 3, (1, 2), (1, 1), True),     # rows wider than one block of outputs
    ((1, 3, 14, 30), 3, 3, (1, 1), (1, 1), False),   # GoogLeNet's 3x3/1: vectors of outputs
    ((2, 4, 13, 13), 3, 3, (1, 1), (1, 1), False),   # ... its 13x13 and 6x6 planes, each one
    ((1, 5, 6, 6), 3, 3, (1, 1), (1, 1), True),      # flat array ("same" padding)
    ((1, 2, 7, 9), 5, 3, (1, 1), (2, 1), False),
    ((1, 2, 2, 3), 5, 5, (1, 1), (2, 2), True),      # a plane smaller than the window
    ((1, 2, 5, 21), 2, 5, (1, 1), (0, 2), True),      # a wider window at stride 1
    ((1, 96, 110, 110), 3, 3, (2, 2), (0, 0), True),  # ZFNet pool1: 110 -> 55
    ((1, 256, 26, 26), 3, 3, (2, 2), (0, 0), True),   # ZFNet pool2: 26 -> 13
    ((1, 256, 13, 13), 3, 3, (2, 2), (0, 0), True),   # ZFNet pool5: 13 -> 6
    ((1, 3, 6, 27), 2, 2, (2, 2), (0, 0), True),      # 14 outputs a row: two vectors overlap
    ((1, 2, 5, 40), 3, 3, (2, 2), (1, 1), False),     # 20: the last vector overlaps
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool_matches_reference(case, dtype, ties):
    shape, kh, kw, stride, padding, ceil_mode = case
    x = random(shape, dtype, ties=ties)
    y, switches = cpu_pool.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)
    y_ref, switches_ref = ref.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)
    assert y.dtype == dtype and switches.dtype == np.int32 and switches_ref.dtype == np.int32
    np.testing.assert_array_equal(switches, switches_ref)
    np.testing.assert_array_equal(y, y_ref)

    dy = random(y.shape, dtype, seed=1)
    expected = ref.maxpool_backward(dy, switches, shape)
    np.testing.assert_allclose(cpu_pool.maxpool_backward(dy, switches, shape), expected,
                               **TOL[dtype])
    # PyTorch's int64 indices (and any other integers) unpool the same
    for wide in (np.int64, np.uint16):
        np.testing.assert_allclose(cpu_pool.maxpool_backward(dy, switches.astype(wide), shape),
                                   expected, **TOL[dtype])


@pytest.mark.parametrize("isa", ["avx512", "avx2", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool_values_are_the_values_of_maxpool_with_switches(case, dtype, isa):
    # the separable pass without switches, at every instruction set, NaN windows included
    from minconv._kernels import cpu_tiles
    shape, kh, kw, stride, padding, ceil_mode = case
    x = random(shape, dtype, ties=True)
    x.reshape(-1)[:: max(7, x.size // 5)] = np.nan
    before = cpu_tiles.isa()
    cpu_tiles.set_isa_cap(isa)
    try:
        y = cpu_pool.maxpool_values(x, kh, kw, stride, padding, ceil_mode)
    finally:
        cpu_tiles.set_isa_cap(before)
    y_ref = ref.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)[0]
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(ref.maxpool_values(x, kh, kw, stride, padding, ceil_mode),
                                  y_ref)
    np.testing.assert_array_equal(cpu_pool.maxpool_values(non_contiguous(x), kh, kw, stride,
                                                          padding, ceil_mode), y_ref)


@pytest.mark.parametrize("name", ["maxpool_values", "maxpool_forward"])
def test_maxpool_kernels_name_what_they_cannot_take(name):
    pool = getattr(cpu_pool, name)
    with pytest.raises(ValueError, match=f"{name}.*float32/float64"):
        pool(np.zeros((1, 1, 4, 4), np.int32), 2, 2, (2, 2), (0, 0), False)
    with pytest.raises(ValueError, match=f"{name}: no output"):
        pool(np.zeros((1, 1, 4, 4), np.float32), 2, 2, (0, 2), (0, 0), False)   # stride 0
    with pytest.raises(ValueError, match=f"{name}: no output"):
        pool(np.zeros((1, 1, 4, 4), np.float32), 6, 2, (1, 1), (0, 0), False)   # too large


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_accepts_non_contiguous_input(dtype):
    shape, kh, kw, stride, padding, ceil_mode = POOL_CASES[3]
    x = random(shape, dtype, ties=True)
    y, switches = cpu_pool.maxpool_forward(non_contiguous(x), kh, kw, stride, padding, ceil_mode)
    y_ref, switches_ref = ref.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)
    np.testing.assert_array_equal(switches, switches_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = random(y.shape, dtype, seed=1)
    dx = cpu_pool.maxpool_backward(non_contiguous(dy), non_contiguous(switches), shape)
    np.testing.assert_allclose(dx, ref.maxpool_backward(dy, switches, shape), **TOL[dtype])


def test_maxpool_switch_of_an_all_minus_inf_window_stays_inside_it():
    x = np.full((1, 1, 5, 5), -np.inf, dtype=np.float32)
    _, switches = cpu_pool.maxpool_forward(x, 3, 3, (2, 2), (1, 1), True)
    _, switches_ref = ref.maxpool_forward(x, 3, 3, (2, 2), (1, 1), True)
    np.testing.assert_array_equal(switches, switches_ref)
    np.testing.assert_array_equal(switches[0, 0], [[0, 1, 3], [5, 6, 8], [15, 16, 18]])


# (x_shape, kernel, stride, padding, ceil_mode): windows cut by the padding's far edge,
# ceil-mode windows running past it, overlapping windows, DenseNet's 2x2/2
AVGPOOL_CASES = [
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1), True),
    ((2, 3, 9, 7), (3, 2), (3, 2), (1, 1), True),
    ((1, 2, 5, 5), (5, 5), (1, 1), (2, 2), False),
    ((3, 4, 8, 8), (2, 2), (2, 2), (0, 0), False),      # 2x2/2 inside: its own loop
    ((1, 3, 7, 9), (2, 2), (2, 2), (0, 0), False),      # ... the last row and column left
    ((1, 3, 7, 9), (2, 2), (2, 2), (0, 0), True),       # ... past the edge: the tables
    ((2, 64, 28, 28), (3, 3), (1, 1), (1, 1), False),   # on both cores
]


@pytest.mark.parametrize("case", AVGPOOL_CASES)
@pytest.mark.parametrize("include", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_avgpool_matches_reference(case, include, dtype):
    from minconv._kernels import reference_avgpool
    from minconv.functional.pool import pool_geometry
    x_shape, kernel, stride, padding, ceil_mode = case
    x = non_contiguous(random(x_shape, dtype))
    kernel, stride, padding, out = pool_geometry("avg", x_shape, kernel, stride, padding,
                                                 ceil_mode)
    y = cpu_avgpool.avgpool_forward(x, kernel, stride, padding, out, include)
    np.testing.assert_array_equal(
        y, reference_avgpool.avgpool_forward(x, kernel, stride, padding, out, include))
    dy = non_contiguous(random(y.shape, dtype, seed=1))
    np.testing.assert_allclose(
        cpu_avgpool.avgpool_backward(dy, x_shape, kernel, stride, padding, include),
        reference_avgpool.avgpool_backward(dy, x_shape, kernel, stride, padding, include),
        **TOL[dtype])


# SqueezeNet's last maps (on both cores), ResNet's, a 1-D and a 3-D map, a plane of one
PLANE_MEANS_SHAPES = [(1, 1000, 13, 13), (2, 2048, 7, 7), (2, 3, 7), (2, 3, 4, 5, 6),
                      (3, 5, 1, 1)]


@pytest.mark.parametrize("shape", PLANE_MEANS_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_plane_means_match_reference(shape, dtype):
    from minconv._kernels import reference_avgpool
    x = random(shape, dtype) + 3
    y = cpu_avgpool.plane_means(x)
    assert y.shape == shape[:2] + (1,) * (len(shape) - 2) and y.dtype == dtype
    np.testing.assert_allclose(y, reference_avgpool.plane_means(x), **TOL[dtype])
    exact = x.astype(np.float64).mean(axis=tuple(range(2, len(shape))), keepdims=True)
    np.testing.assert_allclose(y, exact, rtol=1e-6 if dtype == np.float32 else 1e-14)
    # each plane is its own sum: one changed value moves its plane's mean alone
    x2 = x.copy()
    x2[-1, -1].flat[-1] += 64
    moved = cpu_avgpool.plane_means(x2) != y
    assert moved[-1, -1].all() and moved.sum() == 1


def test_plane_means_take_strided_and_empty_input():
    x = random((2, 6, 5, 5), np.float32)
    np.testing.assert_array_equal(cpu_avgpool.plane_means(non_contiguous(x)),
                                  cpu_avgpool.plane_means(x))
    np.testing.assert_array_equal(cpu_avgpool.plane_means(x[:, ::2]),
                                  cpu_avgpool.plane_means(x)[:, ::2])
    assert cpu_avgpool.plane_means(np.zeros((0, 4, 3, 3), np.float32)).shape == (0, 4, 1, 1)
    assert np.isnan(cpu_avgpool.plane_means(np.zeros((1, 2, 0, 3), np.float64))).all()


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.float32), np.zeros((1, 2, 3, 3), np.int32),
                                 [[[1.0]]]])
def test_plane_means_name_what_they_cannot_take(bad):
    with pytest.raises(ValueError, match="plane_means"):
        cpu_avgpool.plane_means(bad)


@pytest.mark.parametrize("kernels", [cpu_pool, ref], ids=["cython", "reference"])
def test_maxpool_backward_rejects_switches_outside_the_plane(kernels):
    dy = np.ones((1, 1, 2, 2), np.float32)
    switches = np.array([[[[0, 1], [2, 9]]]])
    with pytest.raises(ValueError, match=r"switches must lie in \[0, 9\) for planes of 3x3.*1 do"):
        kernels.maxpool_backward(dy, switches, (1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"2 do not"):
        kernels.maxpool_backward(dy, switches * 5, (1, 1, 3, 3))


# ---------------------------------------------------------------- the ReLU's gradient

cpu_activation = pytest.importorskip("minconv._kernels.cpu_activation", reason=REASON)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5, 40000)], ids=str)
def test_relu_backward_matches_reference(shape, dtype):
    # more elements than one thread's block, and x exactly zero in places
    x = np.round(random(shape, dtype), 1)
    dy = random(shape, dtype, seed=1)
    dy.flat[:3] = np.nan                 # where x <= 0 the gradient is 0, not dy * 0
    dx = cpu_activation.relu_backward(dy, x)
    want = ref.relu_backward(dy, x)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_array_equal(dx, want)
    np.testing.assert_array_equal(want, np.where(x > 0, dy, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5, 40000)], ids=str)
def test_relu_forward_matches_reference(shape, dtype):
    x = np.round(random(shape, dtype), 1)      # exact zeros in places
    x.flat[:4] = [np.nan, -np.inf, np.inf, -0.0][:x.size]
    want = ref.relu_forward(x)
    y = cpu_activation.relu_forward(x)
    assert y.dtype == dtype and y.shape == shape and y is not x
    np.testing.assert_array_equal(y, want)                 # NaN where x is NaN
    np.testing.assert_array_equal(want, np.maximum(x, 0))
    inplace = x.copy()
    assert cpu_activation.relu_forward(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
    if x.ndim > 1:
        np.testing.assert_array_equal(cpu_activation.relu_forward(non_contiguous(x)),
                                      np.maximum(non_contiguous(x), 0))


def test_relu_forward_names_what_it_cannot_take():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"relu_forward: x must be .* got int64 \(3,\)"):
        cpu_activation.relu_forward(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"relu_forward: out must be .* float32 array of "
                                         r"shape \(2, 3\), got float32 \(3, 2\)"):
        cpu_activation.relu_forward(x, out=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"relu_forward: out must be .* got float64"):
        cpu_activation.relu_forward(x, out=np.zeros((2, 3)))


def test_relu_backward_names_mismatched_operands():
    with pytest.raises(ValueError, match=r"relu_backward: .* float32 \(2, 3\) and float32 \(3, 2\)"):
        cpu_activation.relu_backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"relu_backward: .* int64"):
        cpu_activation.relu_backward(np.zeros(3, np.int64), np.zeros(3, np.int64))


# ---------------------------------------------------------------- layouts

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 13), (300, 7), (1, 1, 1), (7, 5, 3),
                                   (64, 40, 9), (9, 33, 70), (130, 3, 1)], ids=str)
def test_reversed_axes_matches_reference(shape, dtype):
    # sizes off the 4x4 blocks and the 16-row bands, and as many elements as two threads split
    a = random(shape, dtype)
    got = cpu_layout.reversed_axes(a)
    assert got.dtype == dtype and got.shape == shape[::-1] and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref.reversed_axes(a))
    np.testing.assert_array_equal(got, a.T)
    if shape[-1] > 1:
        np.testing.assert_array_equal(cpu_layout.reversed_axes(non_contiguous(a)), a.T)


def test_reversed_axes_is_exact_where_the_cores_share_the_work():
    a = random((512, 256, 9), np.float32)     # 1.2M elements: the cores split them
    np.testing.assert_array_equal(cpu_layout.reversed_axes(a), a.T)
    a = random((9, 256, 512), np.float32)     # the split along the other outer axis
    np.testing.assert_array_equal(cpu_layout.reversed_axes(a), a.T)


def test_reversed_axes_names_what_it_cannot_take():
    with pytest.raises(ValueError, match=r"reversed_axes: .* got int64 \(3, 2\)"):
        cpu_layout.reversed_axes(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"reversed_axes: .* got float32 \(2, 2, 2, 2\)"):
        cpu_layout.reversed_axes(np.zeros((2, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"reversed_axes: expected a 2-D or 3-D array"):
        ref.reversed_axes(np.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,pads", [((1, 1, 1, 1), (0, 0)), ((2, 3, 5, 7), (1, 2)),
                                        ((1, 17, 9, 13), (3, 0)), ((3, 70, 6, 33), (0, 1)),
                                        ((2, 64, 72, 75), (1, 1)), ((1, 5, 4, 4), (2, 2))],
                         ids=str)
def test_padded_channels_last_matches_reference(shape, pads, dtype):
    # channels and widths off the 4x4 blocks and the 16-wide tiles; zeros only in the
    # padding (a mutation that leaves a border unwritten reads np.empty's garbage); the
    # (2, 64, 72, 75) case is large enough for the cores to share the rows
    x = random(shape, dtype) + 3
    got = cpu_layout.padded_channels_last(x, *pads)
    N, C, H, W = shape
    ph, pw = pads
    assert got.shape == (N, H + 2 * ph, W + 2 * pw, C) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref.padded_channels_last(x, *pads))
    np.testing.assert_array_equal(got[:, ph:ph + H, pw:pw + W], x.transpose(0, 2, 3, 1))
    assert np.count_nonzero(got) == x.size
    if W > 1:
        np.testing.assert_array_equal(cpu_layout.padded_channels_last(non_contiguous(x), *pads),
                                      got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 7, 3), (1, 9, 13, 17), (3, 6, 33, 70),
                                   (1, 56, 56, 128), (2, 7, 7, 700), (5, 28, 28, 64)], ids=str)
def test_channels_first_matches_reference(shape, dtype):
    # one image split by positions (56x56x128) and by channels (7x7x700) among the cores,
    # and images shared among them (5 of 28x28x64)
    yt = random(shape, dtype)
    want = yt.transpose(0, 3, 1, 2)
    got = cpu_layout.channels_first(yt)
    assert got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, ref.channels_first(yt))
    batch = np.full((shape[0] + 2,) + want.shape[1:], 7, dtype)
    written = cpu_layout.channels_first(yt, out=batch[1:-1])
    assert np.shares_memory(written, batch) and written.shape == want.shape
    np.testing.assert_array_equal(batch[1:-1], want)
    assert (batch[0] == 7).all() and (batch[-1] == 7).all()


def test_channels_last_layouts_name_what_they_cannot_take():
    with pytest.raises(ValueError, match=r"padded_channels_last: x must be a 4-D .* got float32 \(2, 3\)"):
        cpu_layout.padded_channels_last(np.zeros((2, 3), np.float32), 1, 1)
    with pytest.raises(ValueError, match=r"padded_channels_last: padding must be >= 0"):
        cpu_layout.padded_channels_last(np.zeros((1, 2, 3, 3), np.float32), -1, 0)
    with pytest.raises(ValueError, match=r"channels_first: yt must be a 4-D .* got int64"):
        cpu_layout.channels_first(np.zeros((1, 2, 3, 4), np.int64))
    with pytest.raises(ValueError, match=r"channels_first: out must be a C-contiguous float32 "
                                         r"array of shape \(1, 4, 2, 3\), got float32 \(1, 4, 3, 2\)"):
        cpu_layout.channels_first(np.zeros((1, 2, 3, 4), np.float32),
                                  out=np.zeros((1, 4, 3, 2), np.float32))


# ---------------------------------------------------------------- LRN

# (x_shape, size, alpha, beta, k); alpha is large enough for the sum to matter
LRN_CASES = [
    ((2, 7, 5, 6), 5, 1e-2, 0.75, 2.0),
    ((1, 3, 4, 4), 5, 1e-2, 0.75, 1.0),    # window wider than the channels
    ((2, 8, 3, 3), 4, 1e-2, 0.6, 2.0),     # even size: the window leans back; general beta
    ((1, 6, 40, 40), 3, 1e-2, 0.5, 1.0),   # spatial chunks with a ragged last one
    ((2, 5, 2, 3), 1, 1e-1, 1.0, 1.0),
    ((1, 96, 55, 55), 5, 1e-4, 0.75, 2.0),  # ZFNet norm1
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LRN_CASES, ids=str)
def test_lrn_matches_reference(case, dtype):
    shape, size, alpha, beta, k = case
    x = 10 * random(shape, dtype)
    y, scale = cpu_lrn.lrn_forward(x, size, alpha, beta, k)
    y_ref, scale_ref = ref.lrn_forward(x, size, alpha, beta, k)
    assert y.dtype == dtype and scale.dtype == dtype
    np.testing.assert_allclose(scale, scale_ref, **TOL[dtype])
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])

    dy = random(shape, dtype, seed=1)
    dx = cpu_lrn.lrn_backward(dy, x, y, scale, size, alpha, beta)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.lrn_backward(dy, x, y_ref, scale_ref, size, alpha, beta),
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_lrn_accepts_non_contiguous_input(dtype):
    shape, size, alpha, beta, k = LRN_CASES[0]
    x = 10 * random(shape, dtype)
    y, scale = cpu_lrn.lrn_forward(non_contiguous(x), size, alpha, beta, k)
    y_ref, scale_ref = ref.lrn_forward(x, size, alpha, beta, k)
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    dy = random(shape, dtype, seed=1)
    dx = cpu_lrn.lrn_backward(non_contiguous(dy), non_contiguous(x), non_contiguous(y),
                              non_contiguous(scale), size, alpha, beta)
    np.testing.assert_allclose(dx, ref.lrn_backward(dy, x, y_ref, scale_ref, size, alpha, beta),
                               **TOL[dtype])


def test_lrn_backward_rejects_mismatched_arrays():
    x = random((1, 4, 3, 3), np.float32)
    y, scale = cpu_lrn.lrn_forward(x, 5, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match="differ"):
        cpu_lrn.lrn_backward(x[:, :3], x, y, scale, 5, 1e-4, 0.75)


# ---------------------------------------------------------------- 1x1 convolutions

@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("N,F,C,P", [(1, 64, 16, 3025), (8, 16, 64, 729), (3, 7, 5, 37),
                                     (1, 1000, 512, 169), (2, 13, 300, 17), (5, 6, 1, 1),
                                     (1, 20, 3100, 40)])                  # blocks of one strip
@pytest.mark.parametrize("relu", [False, True])
def test_pointwise_tiles_match_the_product_and_sum_alike_filters_alike(N, F, C, P, relu, isa):
    rng = np.random.default_rng(N * F + P)
    w = rng.standard_normal((F, C)).astype(np.float32)
    x = rng.standard_normal((N, C, P + 3)).astype(np.float32)[:, :, 2:P + 2]   # rows apart
    bias = rng.standard_normal(F).astype(np.float32)
    w[-1], bias[-1] = w[0], bias[0]          # one filter twice: the same outputs, bit for bit
    whole = np.full((N, F + 1, P + 5), 7.0, np.float32)
    out = whole[:, 1:, 3:P + 3]
    x[0, 0, 0] = np.nan
    with tiles_at(isa):
        got = cpu_pointwise.pointwise_matmul(w, x, out, bias, relu)
    expected = np.einsum("fc,ncp->nfp", w.astype(np.float64), x) + bias[:, None]
    if relu:
        expected = np.where(expected < 0, 0, expected)   # NaN stays NaN
    assert got is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.sqrt(C))
    np.testing.assert_array_equal(out[:, -1], out[:, 0])
    assert np.isnan(out[0, :, 0]).all()
    out[...] = 7.0
    assert (whole == 7.0).all()                           # nothing written outside out


@pytest.mark.parametrize("N,F,C,P", [(3, 40, 64, 1000), (1, 1000, 512, 169), (2, 64, 16, 729),
                                     (1, 256, 1024, 196), (1, 45, 1200, 49)])
def test_pointwise_tiles_give_the_same_outputs_however_the_work_is_cut(N, F, C, P, monkeypatch):
    """The threads take pieces of the N*P positions (pieces cross images, and weights swept
    in blocks keep pieces of a block of strips), or, for one image whose weights are swept
    in blocks, shares of the output channels: each output is summed alike whatever the
    cut, so the outputs (with a residual added) are the same bit for bit with one piece or
    share a thread or many."""
    if not cpu_tiles.fused_kernels(np.float32):
        pytest.skip("no tiles on this CPU")
    rng = np.random.default_rng(F)
    w = rng.standard_normal((F, C)).astype(np.float32)
    x = rng.standard_normal((N, C, P)).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    residual = rng.standard_normal((N, F, P)).astype(np.float32)
    outputs = []
    for pieces, shares in ((1, 0), (3, 0), (8, 0), (64, 0), (8, 1), (8, 2), (8, 5)):
        monkeypatch.setattr(cpu_pointwise, "PIECES_PER_THREAD", pieces)
        monkeypatch.setattr(cpu_pointwise, "FILTER_SHARES_PER_THREAD", shares)
        outputs.append(cpu_pointwise.pointwise_matmul(w, x, np.empty((N, F, P), np.float32),
                                                      bias, True, addend=residual))
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    expected = np.maximum(np.einsum("fc,ncp->nfp", w.astype(np.float64), x) + bias[:, None]
                          + residual, 0)
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-5, atol=1e-5 * np.sqrt(C))


def test_pointwise_tiles_name_what_they_cannot_take():
    if not cpu_tiles.fused_kernels(np.float32):
        pytest.skip("no tiles on this CPU")
    w, x = np.ones((4, 3), np.float32), np.ones((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match="x must be a 3-D float32"):
        cpu_pointwise.pointwise_matmul(w, x.astype(np.float64), np.empty((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"does not give out \(2, 5, 5\)"):
        cpu_pointwise.pointwise_matmul(w, x, np.empty((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="bias must be float32"):
        cpu_pointwise.pointwise_matmul(w, x, np.empty((2, 4, 5), np.float32), np.ones(3, np.float32))
    before = cpu_tiles.set_isa_cap("none")
    try:
        with pytest.raises(ValueError, match="tiles do not run"):
            cpu_pointwise.pointwise_matmul(w, x, np.empty((2, 4, 5), np.float32))
    finally:
        cpu_tiles.set_isa_cap(before)


# (x_shape, F, kh, kw, stride, padding, dilation)
SHIFTED_CASES = [((1, 16, 55, 55), 64, 3, 3, (1, 1), (1, 1), (1, 1)),
                 ((2, 5, 9, 11), 7, 3, 3, (1, 1), (0, 0), (1, 1)),
                 ((1, 6, 10, 12), 13, 3, 2, (2, 1), (1, 0), (2, 1)),
                 ((3, 8, 7, 7), 20, 5, 5, (1, 1), (2, 2), (1, 1)),
                 ((1, 64, 13, 13), 256, 3, 3, (1, 1), (1, 1), (1, 1)),
                 ((1, 3, 35, 35), 64, 3, 3, (2, 2), (0, 0), (1, 1)),      # SqueezeNet's first
                 ((2, 3, 30, 33), 16, 7, 7, (2, 2), (3, 3), (1, 1)),      # ResNet's, odd width
                 ((1, 3, 39, 39), 8, 11, 11, (4, 4), (2, 2), (1, 1)),     # AlexNet's
                 ((1, 4, 12, 17), 5, 3, 3, (1, 3), (1, 2), (1, 2))]       # dilated, stride 3


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("case", SHIFTED_CASES, ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_shifted_convolution_matches_reference(case, relu, isa):
    x_shape, F, kh, kw, stride, padding, dilation = case
    rng = np.random.default_rng(F)
    x = rng.standard_normal(x_shape).astype(np.float32)
    W = rng.standard_normal((F, x_shape[1], kh, kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    W[-1], b[-1] = W[0], b[0]              # one filter twice: the same outputs, bit for bit
    with tiles_at(isa):
        y = cpu_pointwise.conv2d_shifted(x, W, b, stride, padding, dilation, relu)
    expected = ref.conv2d_direct(x.astype(np.float64), W.astype(np.float64),
                                 b.astype(np.float64), stride, padding, dilation)
    if relu:
        expected = np.maximum(expected, 0)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(y[:, -1], y[:, 0])


def test_shifted_convolution_names_what_it_cannot_take():
    if not cpu_tiles.fused_kernels(np.float32):
        pytest.skip("no tiles on this CPU")
    x, W = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="does not match the weight shape"):
        cpu_pointwise.conv2d_shifted(x, np.ones((3, 4, 3, 3), np.float32), None, 1, 0, 1)
    with pytest.raises(ValueError, match="weight and bias must be float32"):
        cpu_pointwise.conv2d_shifted(x, W.astype(np.float64), None, (1, 1), (0, 0), (1, 1))


# ---------------------------------------------------------------- concatenation

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes,axis", [
    ([(1, 64, 55, 55), (1, 64, 55, 55)], 1),        # a batch of one: the rows cut in pieces
    ([(8, 16, 27, 27), (8, 48, 27, 27), (8, 1, 27, 27)], 1),
    ([(3, 2, 40, 70), (3, 2, 40, 1200)], 3),
    ([(2, 3, 4, 5), (2, 3, 4, 5)], 0),
    ([(2, 3, 4, 5), (2, 1, 4, 5)], 1),               # small: NumPy's own
])
def test_concatenate_matches_reference(shapes, axis, dtype):
    xs = [random(shape, dtype, seed=i) for i, shape in enumerate(shapes)]
    xs[0] = non_contiguous(xs[0])
    got = cpu_layout.concatenate(xs, axis)
    np.testing.assert_array_equal(got, ref.concatenate(xs, axis))
    assert got.flags.c_contiguous and got.dtype == dtype


# ---------------------------------------------------------------- twins with one signature

def test_every_twin_has_the_references_signature():
    import inspect

    from minconv._kernels import NAMES, cpu_activation, cpu_winograd, cuda, reference_winograd
    modules = [cuda, cpu_conv, cpu_pool, cpu_lrn, cpu_activation, cpu_layout, cpu_winograd]
    compared = set()
    for name in NAMES:
        spec = ref if hasattr(ref, name) else reference_winograd
        if not hasattr(spec, name):
            continue
        want = inspect.signature(getattr(spec, name))
        for module in modules:
            if hasattr(module, name):
                got = inspect.signature(getattr(module, name))
                assert list(got.parameters) == list(want.parameters), (module.__name__, name)
                compared.add((module.__name__, name))
    assert ("minconv._kernels.cuda", "relu_backward") in compared
    assert ("minconv._kernels.cuda", "im2col") in compared
    assert ("minconv._kernels.cpu_layout", "reversed_axes") in compared
    assert ("minconv._kernels.cpu_layout", "channels_first") in compared
    assert ("minconv._kernels.cpu_layout", "concatenate") in compared
    assert ("minconv._kernels.cpu_pool", "maxpool_values") in compared
    assert ("minconv._kernels.cuda", "maxpool_values") in compared
    assert ("minconv._kernels.cuda", "padded_channels_last") in compared
    assert ("minconv._kernels.cpu_winograd", "winograd_output") in compared
