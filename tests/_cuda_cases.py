"""Kernel cases shared by the CUDA tests: on a GPU (test_gpu.py), emulated (test_cuda_emulated.py).

Each ``check_*`` runs one kernel of a CUDA module (``cuda``) on inputs moved
there by ``to_dev``, brings the result back with ``to_host`` and compares it
with the NumPy reference run on the host copy. Selections (im2col, max
pooling's values and switches) must match exactly; sums match to rounding
(the GPU may fuse multiply-adds, and unpooling adds with atomics in any order).
"""
import numpy as np

from minconv._kernels import reference

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}

# x_shape, (kh, kw), stride, padding, dilation
CONV_CASES = [
    ((2, 3, 7, 7), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 3, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1)),     # stride 2 + padding
    ((1, 2, 10, 7), (3, 2), (2, 1), (1, 0), (1, 1)),    # non-square everything
    ((2, 2, 11, 9), (3, 3), (1, 2), (2, 1), (2, 3)),    # dilation
    ((1, 3, 12, 12), (7, 7), (2, 2), (1, 1), (1, 1)),   # ZFNet conv1's geometry, scaled down
    ((2, 4, 11, 11), (5, 5), (2, 2), (0, 0), (1, 1)),   # ZFNet conv2's (windows skip the edge)
    ((1, 2, 5, 6), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((1, 1, 4, 4), (4, 4), (3, 3), (2, 2), (1, 1)),     # stride > kernel span: gaps
]

# x_shape, (kh, kw), stride, padding, ceil_mode
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), False),
    ((2, 3, 11, 11), (3, 3), (2, 2), (0, 0), True),     # ZFNet's overlapping ceil-mode pooling
    ((1, 2, 26, 26), (3, 3), (2, 2), (0, 0), True),     # 26 -> 13
    ((1, 2, 10, 10), (3, 3), (2, 2), (0, 0), True),     # last window hangs past the edge
    ((2, 2, 7, 9), (3, 2), (2, 3), (1, 1), False),      # non-square, padding
    ((1, 2, 6, 7), (3, 3), (2, 2), (1, 1), True),       # padding + ceil_mode
    ((1, 1, 5, 5), (5, 5), (1, 1), (2, 2), False),
]

# x_shape, size
LRN_CASES = [((2, 7, 3, 4), 5), ((1, 4, 5, 5), 3), ((2, 3, 2, 2), 5), ((1, 6, 3, 3), 4),
             ((1, 5, 2, 3), 1)]
LRN_PARAMS = dict(alpha=1e-2, beta=0.75, k=2.0)  # alpha large enough for the scale to matter


def case_id(case):
    return "-".join("x".join(str(v) for v in c) if isinstance(c, tuple) else str(c)
                    for c in case)


def _allclose(actual, expected, dtype, what):
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL[dtype])


def check_im2col(cuda, to_dev, to_host, case, dtype, rng):
    x_shape, (kh, kw), stride, padding, dilation = case
    x = rng.standard_normal(x_shape).astype(dtype)
    expected = reference.im2col(x, kh, kw, stride, padding, dilation)
    cols = cuda.im2col(to_dev(x), kh, kw, stride, padding, dilation)
    assert cols.dtype == dtype and cols.shape == expected.shape
    np.testing.assert_array_equal(to_host(cols), expected)
    # the workspace path of functional.conv: write into a given buffer
    out = to_dev(np.full(expected.shape, np.nan, dtype=dtype))
    assert cuda.im2col(to_dev(x), kh, kw, stride, padding, dilation, out=out) is out
    np.testing.assert_array_equal(to_host(out), expected)
    # a non-contiguous input
    wide = np.zeros(x_shape[:3] + (2 * x_shape[3],), dtype=dtype)
    wide[..., ::2] = x
    strided = to_dev(wide)[..., ::2]
    np.testing.assert_array_equal(to_host(cuda.im2col(strided, kh, kw, stride, padding,
                                                      dilation)), expected)


def check_col2im(cuda, to_dev, to_host, case, dtype, rng):
    x_shape, (kh, kw), stride, padding, dilation = case
    shape = reference.im2col(np.zeros(x_shape, dtype), kh, kw, stride, padding, dilation).shape
    cols = rng.standard_normal(shape).astype(dtype)
    expected = reference.col2im(cols, x_shape, kh, kw, stride, padding, dilation)
    x = cuda.col2im(to_dev(cols), x_shape, kh, kw, stride, padding, dilation)
    assert x.dtype == dtype and x.shape == tuple(x_shape)
    _allclose(to_host(x), expected, dtype, "col2im")
    # col2im is im2col's transpose: <im2col(x), cols> == <x, col2im(cols)>
    probe = rng.standard_normal(x_shape).astype(dtype)
    left = np.vdot(to_host(cuda.im2col(to_dev(probe), kh, kw, stride, padding, dilation)), cols)
    right = np.vdot(probe, to_host(x))
    np.testing.assert_allclose(left, right, rtol=1e-4 if dtype == np.float32 else 1e-10)


def pool_input(x_shape, dtype, rng, ties):
    """Distinct values, or (``ties``) values from {0, 1, 2} with a few -inf: many equal maxima."""
    if not ties:
        return rng.permutation(np.prod(x_shape)).reshape(x_shape).astype(dtype)
    x = rng.integers(0, 3, size=x_shape).astype(dtype)
    x[rng.random(x_shape) < 0.1] = -np.inf
    x[0, 0] = -np.inf  # a whole plane of -inf: the switch stays at the window's first pixel
    return x


def check_maxpool(cuda, to_dev, to_host, case, dtype, rng, ties):
    x_shape, (kh, kw), stride, padding, ceil_mode = case
    x = pool_input(x_shape, dtype, rng, ties)
    y_ref, s_ref = reference.maxpool_forward(x, kh, kw, stride, padding, ceil_mode)
    y, s = cuda.maxpool_forward(to_dev(x), kh, kw, stride, padding, ceil_mode)
    assert y.dtype == dtype and s.dtype == np.int64 and y.shape == y_ref.shape
    np.testing.assert_array_equal(to_host(y), y_ref)
    np.testing.assert_array_equal(to_host(s), s_ref)
    # backward / unpooling: overlapping windows that chose the same element add up
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    expected = reference.maxpool_backward(dy, s_ref, x_shape)
    dx = cuda.maxpool_backward(to_dev(dy), s, x_shape)
    assert dx.dtype == dtype and dx.shape == tuple(x_shape)
    _allclose(to_host(dx), expected, dtype, "maxpool_backward")


def check_lrn(cuda, to_dev, to_host, case, dtype, rng):
    x_shape, size = case
    p = LRN_PARAMS
    x = rng.standard_normal(x_shape).astype(dtype) * 3
    y_ref, scale_ref = reference.lrn_forward(x, size, p["alpha"], p["beta"], p["k"])
    y, scale = cuda.lrn_forward(to_dev(x), size, p["alpha"], p["beta"], p["k"])
    assert y.dtype == dtype and scale.dtype == dtype
    _allclose(to_host(scale), scale_ref, dtype, "lrn scale")
    _allclose(to_host(y), y_ref, dtype, "lrn y")
    dy = rng.standard_normal(x_shape).astype(dtype)
    expected = reference.lrn_backward(dy, x, y_ref, scale_ref, size, p["alpha"], p["beta"])
    dx = cuda.lrn_backward(to_dev(dy), to_dev(x), y, scale, size, p["alpha"], p["beta"])
    assert dx.dtype == dtype
    _allclose(to_host(dx), expected, dtype, "lrn_backward")
