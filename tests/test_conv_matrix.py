"""The convolution as a matrix C, its transpose, im2col/col2im, chunking, golden values.

``conv2d(x, W) == C @ x`` and the backward pass ``dx == C^T dy`` is also the forward
pass of the transposed convolution: the deconvnet's filtering step is that product.
"""
import numpy as np
import pytest

import minconv as mc
from conftest import rel_error
from minconv.functional.conv_paths import chunks

F = mc.functional

# (C, H, W, F, kh, kw, stride, padding, dilation)
MATRIX_GRID = [
    (1, 4, 4, 1, 2, 2, 1, 0, 1),
    (2, 5, 6, 3, 3, 2, 2, 1, 1),
    (3, 7, 5, 2, 3, 3, (2, 1), (0, 2), (2, 1)),
    (2, 6, 6, 2, 4, 4, 2, 1, 1),
]


def _dense_by_definition(W, shape, stride, padding, dilation):
    """C built from the formula y[f,ho,wo] = sum W[f,c,i,j] x[c, ho*sh-ph+i*dh, wo*sw-pw+j*dw],
    with plain loops: an independent reference for conv_matrix."""
    (sh, sw), (ph, pw), (dh, dw) = (F._checks.pair(v, "") for v in (stride, padding, dilation))
    Fo, C, kh, kw = W.shape
    _, H, Wd = shape
    Ho = F.conv_output_size(H, kh, sh, ph, dh)
    Wo = F.conv_output_size(Wd, kw, sw, pw, dw)
    M = np.zeros((Fo, Ho, Wo, C, H, Wd))
    for f in range(Fo):
        for ho in range(Ho):
            for wo in range(Wo):
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            h, w = ho * sh - ph + i * dh, wo * sw - pw + j * dw
                            if 0 <= h < H and 0 <= w < Wd:
                                M[f, ho, wo, c, h, w] += W[f, c, i, j]
    return M.reshape(Fo * Ho * Wo, C * H * Wd)


@pytest.mark.parametrize("case", MATRIX_GRID)
def test_conv_is_multiplication_by_C(case, rng):
    C_, H, W_, Fo, kh, kw, s, p, d = case
    W = rng.standard_normal((Fo, C_, kh, kw))
    x = rng.standard_normal((1, C_, H, W_))
    C = F.conv_matrix(W, (C_, H, W_), s, p, d)
    np.testing.assert_allclose(C, _dense_by_definition(W, (C_, H, W_), s, p, d), atol=1e-12)
    y = F.conv2d(x, W, None, s, p, d)
    np.testing.assert_allclose(C @ x.ravel(), y.ravel(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", MATRIX_GRID)
def test_transpose_is_multiplication_by_C_transpose(case, rng):
    C_, H, W_, Fo, kh, kw, s, p, d = case
    W = rng.standard_normal((Fo, C_, kh, kw))
    C = F.conv_matrix(W, (1, C_, H, W_), s, p, d)
    y_shape = F.conv2d(np.zeros((1, C_, H, W_)), W, None, s, p, d).shape
    dy = rng.standard_normal(y_shape)
    x = rng.standard_normal((1, C_, H, W_))
    dx, _, _ = F.conv2d_backward(dy, x, W, s, p, d)
    np.testing.assert_allclose(C.T @ dy.ravel(), dx.ravel(), rtol=1e-10, atol=1e-12)
    # the same W, read as a transposed convolution's (C_in=F, C_out=C, kh, kw) weight;
    # output_padding restores the rows that the forward's floor division dropped
    (sh, sw), (ph, pw), (dh, dw) = (F._checks.pair(v, "") for v in (s, p, d))
    output_padding = ((H + 2 * ph - dh * (kh - 1) - 1) % sh, (W_ + 2 * pw - dw * (kw - 1) - 1) % sw)
    up = F.conv_transpose2d(dy, W, None, s, p, d, output_padding=output_padding)
    assert up.shape == x.shape
    np.testing.assert_allclose(C.T @ dy.ravel(), up.ravel(), rtol=1e-10, atol=1e-12)


def test_conv_matrix_input_shape_check():
    with pytest.raises(ValueError, match=r"conv_matrix.*\(4, 4, 2\).*\(3, 2, 2, 2\)"):
        F.conv_matrix(np.zeros((3, 2, 2, 2)), (4, 4, 2))  # channels last by mistake


@pytest.mark.parametrize("case", MATRIX_GRID)
@pytest.mark.parametrize("N", [1, 3])
def test_im2col_col2im_adjoint(case, N, rng, kernels):
    """<im2col(x), cols> == <x, col2im(cols)>: col2im is im2col's transpose."""
    C_, H, W_, _, kh, kw, s, p, d = case
    x = rng.standard_normal((N, C_, H, W_))
    cols = F.im2col(x, kh, kw, s, p, d)
    r = rng.standard_normal(cols.shape)
    back = F.col2im(r, x.shape, kh, kw, s, p, d)
    assert back.shape == x.shape
    lhs, rhs = np.vdot(cols, r), np.vdot(x, back)
    assert abs(lhs - rhs) <= 1e-10 * max(abs(lhs), 1.0)


def test_im2col_layout(kernels):
    """Row (c*kh + i)*kw + j is tap (i, j) of channel c; column (n*Ho + ho)*Wo + wo."""
    x = np.arange(2 * 2 * 3 * 4, dtype=np.float64).reshape(2, 2, 3, 4)
    cols = F.im2col(x, 2, 3, 1, 0, 1)                # Ho, Wo = 2, 2
    assert cols.shape == (2 * 2 * 3, 2 * 2 * 2)
    for c in range(2):
        for i in range(2):
            for j in range(3):
                for n in range(2):
                    for ho in range(2):
                        for wo in range(2):
                            assert cols[(c * 2 + i) * 3 + j, (n * 2 + ho) * 2 + wo] == \
                                x[n, c, ho + i, wo + j]


# ---------------------------------------------------------------- golden values by hand

def test_golden_conv2d_4x4(kernels):
    # x[i, j] = 4i + j,  W = [[1, 2], [3, 4]]
    # y[i, j] = x[i,j] + 2 x[i,j+1] + 3 x[i+1,j] + 4 x[i+1,j+1] = 40 i + 10 j + 34
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    W = np.array([[[[1, 2], [3, 4]]]], dtype=np.float32)
    expected = np.array([[34, 44, 54], [74, 84, 94], [114, 124, 134]], dtype=np.float32)
    np.testing.assert_array_equal(F.conv2d(x, W)[0, 0], expected)
    # with bias 1, stride 2, padding 1: windows start at -1 and 1
    #   y[0,0] = 4*x[0,0] = 0,       y[0,1] = 3*x[0,1] + 4*x[0,2] = 11
    #   y[1,0] = 2*x[1,0] + 4*x[2,0] = 40,  y[1,1] = x[1,1]+2x[1,2]+3x[2,1]+4x[2,2] = 5+12+27+40
    y = F.conv2d(x, W, np.array([1], np.float32), stride=2, padding=1)
    np.testing.assert_array_equal(y[0, 0, :2, :2], [[1, 12], [41, 85]])


def test_golden_conv_transpose_4x4(kernels):
    """Stride 2 with a 2x2 kernel: every input pixel stamps its own scaled copy of W."""
    x = np.array([[[[1, 2], [3, 4]]]], dtype=np.float32)
    W = np.array([[[[1, -1], [2, 0]]]], dtype=np.float32)
    expected = np.array([[1, -1, 2, -2],
                         [2, 0, 4, 0],
                         [3, -3, 4, -4],
                         [6, 0, 8, 0]], dtype=np.float32)
    np.testing.assert_array_equal(F.conv_transpose2d(x, W, stride=2)[0, 0], expected)
    # stride 1: the stamps overlap and add up, 3x3
    expected = np.array([[1, 1, -2], [5, 5, -4], [6, 8, 0]], dtype=np.float32)
    np.testing.assert_array_equal(F.conv_transpose2d(x, W)[0, 0], expected)


def test_golden_max_pool_and_unpool_4x4(kernels):
    x = np.array([[1, 5, 2, 0],
                  [3, 4, 8, 7],
                  [0, 9, 6, 6],
                  [2, 1, 6, 3]], dtype=np.float32).reshape(1, 1, 4, 4)
    y, switches = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[5, 8], [9, 6]])
    # flat indices h*4 + w; the 6-6-6 tie goes to the first in row-major order, (2, 2)
    np.testing.assert_array_equal(switches[0, 0], [[1, 6], [9, 10]])
    up = F.max_unpool2d(np.array([[[[10, 20], [30, 40]]]], np.float32), switches, x.shape)
    expected = np.zeros((4, 4), np.float32)
    expected[0, 1], expected[1, 2], expected[2, 1], expected[2, 2] = 10, 20, 30, 40
    np.testing.assert_array_equal(up[0, 0], expected)
    # overlapping 3x3/1 windows all choose the 9: unpooling sums what they send back
    y, switches = F.max_pool2d(x, 3, 1)
    np.testing.assert_array_equal(switches[0, 0], [[9, 9], [9, 9]])
    up = F.max_unpool2d(np.ones_like(y), switches, x.shape)
    assert up[0, 0, 2, 1] == 4 and up.sum() == 4


def test_golden_lrn(kernels):
    # one pixel, channels [1, 2, 3], size 3, alpha 3 (alpha/size = 1), beta 1, k 1:
    #   scale = 1 + [0+1+4, 1+4+9, 4+9+0] = [6, 15, 14]
    x = np.array([1, 2, 3], dtype=np.float64).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(F.lrn(x, 3, 3.0, 1.0, 1.0).ravel(), [1 / 6, 2 / 15, 3 / 14],
                               rtol=1e-14)
    # dx_0 for dy = [1, 0, 0]: d/dx0 of x0/scale0 = 1/6 - x0 * 2 x0 / 36 = 1/9
    #   (scale1 and scale2 depend on x0 too, but dy is zero there)
    dx = F.lrn_backward(np.array([1.0, 0, 0]).reshape(1, 3, 1, 1), x, 3, 3.0, 1.0, 1.0)
    # dx_1 = -y0/scale0 * 2 x1 = -(1/36) * 4 = -1/9, dx_2 = 0 (channel 2 is outside window(0))
    np.testing.assert_allclose(dx.ravel(), [1 / 9, -1 / 9, 0.0], atol=1e-15)


# ---------------------------------------------------------------- chunking

CHUNK_GRID = [
    (5, 3, 9, 8, 4, 3, 3, 1, 1, 1),
    (4, 2, 11, 10, 3, 5, 3, 2, 2, 1),
    (3, 2, 9, 9, 2, 3, 2, (1, 2), (1, 0), (2, 1)),
]


@pytest.mark.parametrize("plan", F.PLANS)
@pytest.mark.parametrize("case", CHUNK_GRID)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_equals_unchunked(case, dtype, plan, rng, kernels):
    N, C, H, W_, Fo, kh, kw, s, p, d = case
    x = rng.standard_normal((N, C, H, W_)).astype(dtype)
    W = rng.standard_normal((Fo, C, kh, kw)).astype(dtype)
    b, bt = rng.standard_normal(Fo).astype(dtype), rng.standard_normal(C).astype(dtype)
    y = F.conv2d(x, W, b, s, p, d)
    dy = rng.standard_normal(y.shape).astype(dtype)
    full = F.conv2d_backward(dy, x, W, s, p, d)
    up = F.conv_transpose2d(y, W, bt, s, p, d)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    per_image = x.itemsize * C * kh * kw * y.shape[2] * y.shape[3]
    assert len(chunks(slice(0, N), C * kh * kw, y.shape[2] * y.shape[3],
                      x.itemsize, 1)) == N  # workspace=1 really splits

    def check(**kw):
        kw["plan"] = plan
        assert rel_error(F.conv2d(x, W, b, s, p, d, **kw), y) <= tol
        for got, want in zip(F.conv2d_backward(dy, x, W, s, p, d, **kw), full):
            assert got.dtype == dtype and rel_error(got, want) <= tol
        assert rel_error(F.conv_transpose2d(y, W, bt, s, p, d, **kw), up) <= tol

    check(workspace=1)            # one image per chunk
    check(workspace=2 * per_image)  # two images per chunk, a ragged last chunk
    previous = F.set_workspace_limit(1)
    try:
        assert F.workspace_limit() == 1
        check()
    finally:
        F.set_workspace_limit(previous)
    assert F.workspace_limit() == previous


def test_workspace_reuse_across_shapes(rng, kernels):
    """The shared column buffer is reused between calls: a small conv after a big one
    (and the reverse) must not read stale columns."""
    a = rng.standard_normal((2, 3, 12, 12))
    Wa = rng.standard_normal((4, 3, 5, 5))
    c = rng.standard_normal((1, 2, 4, 4))
    Wc = rng.standard_normal((3, 2, 2, 2))
    first_c = F.conv2d(c, Wc)
    first_a = F.conv2d(a, Wa)
    np.testing.assert_array_equal(F.conv2d(c, Wc), first_c)
    np.testing.assert_array_equal(F.conv2d(a, Wa), first_a)
    Cc = F.conv_matrix(Wc, c.shape)
    np.testing.assert_allclose(Cc @ c.ravel(), first_c.ravel(), rtol=1e-12)


def test_set_workspace_limit_rejects_nonpositive():
    with pytest.raises(ValueError, match="set_workspace_limit"):
        F.set_workspace_limit(0)
