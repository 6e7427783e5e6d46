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
    assert y.dtype == dtype and s.dtype == np.int32 and y.shape == y_ref.shape
    np.testing.assert_array_equal(to_host(y), y_ref)
    np.testing.assert_array_equal(to_host(s), s_ref)
    np.testing.assert_array_equal(
        to_host(cuda.maxpool_values(to_dev(x), kh, kw, stride, padding, ceil_mode)), y_ref)
    # backward / unpooling: overlapping windows that chose the same element add up
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    expected = reference.maxpool_backward(dy, s_ref, x_shape)
    dx = cuda.maxpool_backward(to_dev(dy), s, x_shape)
    assert dx.dtype == dtype and dx.shape == tuple(x_shape)
    _allclose(to_host(dx), expected, dtype, "maxpool_backward")
    # PyTorch's int64 indices unpool the same
    dx = cuda.maxpool_backward(to_dev(dy), to_dev(s_ref.astype(np.int64)), x_shape)
    _allclose(to_host(dx), expected, dtype, "maxpool_backward of int64 switches")


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


# ---------------------------------------------------------------- batch norm and average pooling

# x_shape: M = N*H*W values per channel below, at and above the partial sums' count
BN_CASES = [(2, 3, 4, 5), (3, 4, 7, 3), (2, 5, 1, 1), (1, 2, 9, 11), (4, 3, 10, 10),
            (1, 1, 2, 1)]

# x_shape, kernel, stride, padding, ceil_mode, count_include_pad
AVGPOOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), False, True),
    ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1), True, True),     # ceil_mode + padding counted
    ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1), True, False),    # ... or not
    ((1, 2, 10, 10), (3, 3), (2, 2), (0, 0), True, True),   # last window cut at the edge
    ((2, 2, 6, 9), (3, 2), (2, 3), (1, 1), False, False),   # non-square everything
    ((2, 2, 6, 9), (3, 2), (2, 3), (1, 1), False, True),
    ((1, 2, 5, 6), (3, 3), (2, 2), (1, 0), True, False),
    ((1, 1, 5, 5), (5, 5), (1, 1), (2, 2), False, False),   # every window mostly padding
    ((1, 2, 9, 9), (2, 2), (3, 3), (0, 0), True, True),     # stride > kernel: gaps
]

# x_shape, output size (Ho, Wo): smaller, larger, mixed, equal, one pixel
ADAPTIVE_CASES = [
    ((2, 3, 7, 9), (3, 4)),
    ((1, 2, 13, 13), (4, 4)),      # overlapping bins
    ((1, 2, 5, 5), (7, 8)),        # output larger than the input: pixels repeat
    ((1, 2, 3, 6), (5, 2)),
    ((2, 1, 6, 6), (6, 6)),
    ((1, 1, 1, 1), (3, 2)),
    ((1, 2, 2, 7), (7, 3)),        # torchvision VGG's 7x7 from a 2-pixel-high map
]


def _close_to_scale(actual, expected, dtype, what, scale=None):
    """Equal to rounding, relative to the largest entry (sums in another order), or to
    ``scale``, the size of the terms whose difference ``expected`` is."""
    if scale is None:
        scale = float(np.abs(expected).max(initial=0.0))
    scale = max(scale, 1e-30)
    err = float(np.abs(np.asarray(actual, np.float64) - expected).max(initial=0.0)) / scale
    limit = 1e-5 if dtype == np.float32 else 1e-12
    assert err <= limit, f"{what}: relative error {err:.2e} > {limit:.0e}"


def check_batchnorm(cuda_norm, to_dev, to_host, x_shape, dtype, rng):
    from minconv._kernels import reference_norm as ref
    x = (rng.standard_normal(x_shape) * 2 + 1.5).astype(dtype)
    mean_ref, var_ref = ref.batchnorm_stats(x)
    mean, var = cuda_norm.batchnorm_stats(to_dev(x))
    assert mean.dtype == dtype and var.dtype == dtype and mean.shape == (x_shape[1],)
    _close_to_scale(to_host(mean), mean_ref, dtype, "batchnorm mean")
    _close_to_scale(to_host(var), var_ref, dtype, "batchnorm var")
    C = x_shape[1]
    scale, shift = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    y = cuda_norm.batchnorm_apply(to_dev(x), to_dev(scale), to_dev(shift))
    assert y.dtype == dtype and y.shape == tuple(x_shape)
    _close_to_scale(to_host(y), ref.batchnorm_apply(x, scale, shift), dtype, "batchnorm_apply")
    y = cuda_norm.batchnorm_apply(to_dev(x), to_dev(scale), to_dev(shift), relu=True)
    _close_to_scale(to_host(y), np.maximum(ref.batchnorm_apply(x, scale, shift), 0), dtype,
                    "batchnorm_apply with relu")
    dy = rng.standard_normal(x_shape).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype)
    invstd = (1 / np.sqrt(var_ref + dtype(1e-5))).astype(dtype)
    for train in (True, False):
        expected = ref.batchnorm_backward(dy, x, mean_ref, invstd, gamma, train)
        got = cuda_norm.batchnorm_backward(to_dev(dy), to_dev(x), to_dev(mean_ref),
                                           to_dev(invstd), to_dev(gamma), train)
        # dx in training is a difference of terms of the size of gamma*invstd*dy (it
        # vanishes when M = 2): rounding is measured against those terms
        terms = float(np.abs(dy * (gamma * invstd).reshape(1, -1, 1, 1)).max())
        for g, e, name in zip(got, expected, ("dx", "dgamma", "dbeta")):
            assert g.dtype == dtype and g.shape == e.shape, name
            _close_to_scale(to_host(g), e, dtype, f"batchnorm_backward {name} train={train}",
                            terms if name == "dx" else None)


def check_avgpool(cuda_avgpool, to_dev, to_host, case, dtype, rng):
    from minconv._kernels import reference_avgpool as ref
    from minconv.geometry import pool_output_size
    x_shape, kernel, stride, padding, ceil_mode, include = case
    out = tuple(pool_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], ceil_mode)
                for a in (0, 1))
    x = rng.standard_normal(x_shape).astype(dtype)
    expected = ref.avgpool_forward(x, kernel, stride, padding, out, include)
    y = cuda_avgpool.avgpool_forward(to_dev(x), kernel, stride, padding, out, include)
    assert y.dtype == dtype and y.shape == expected.shape
    _allclose(to_host(y), expected, dtype, "avgpool_forward")
    dy = rng.standard_normal(expected.shape).astype(dtype)
    expected = ref.avgpool_backward(dy, x_shape, kernel, stride, padding, include)
    dx = cuda_avgpool.avgpool_backward(to_dev(dy), x_shape, kernel, stride, padding, include)
    assert dx.dtype == dtype and dx.shape == tuple(x_shape)
    _allclose(to_host(dx), expected, dtype, "avgpool_backward")


def check_adaptive_avgpool(cuda_avgpool, to_dev, to_host, case, dtype, rng):
    from minconv._kernels import reference_avgpool as ref
    x_shape, out = case
    x = rng.standard_normal(x_shape).astype(dtype)
    expected = ref.adaptive_avgpool_forward(x, out)
    y = cuda_avgpool.adaptive_avgpool_forward(to_dev(x), out)
    assert y.dtype == dtype and y.shape == expected.shape == tuple(x_shape[:2]) + tuple(out)
    _close_to_scale(to_host(y), expected, dtype, "adaptive_avgpool_forward")
    dy = rng.standard_normal(expected.shape).astype(dtype)
    expected = ref.adaptive_avgpool_backward(dy, x_shape)
    dx = cuda_avgpool.adaptive_avgpool_backward(to_dev(dy), x_shape)
    assert dx.dtype == dtype and dx.shape == tuple(x_shape)
    _close_to_scale(to_host(dx), expected, dtype, "adaptive_avgpool_backward")


def check_layer_ops(F, to_dev, close, dtype, rng):
    """minconv.functional's batch norm and (adaptive) average pooling on device arrays
    (``to_dev``) against the same on NumPy arrays; ``close(device_result, host_result,
    dtype, what)`` compares."""
    x = (rng.standard_normal((4, 5, 6, 7)) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta, rmean = (rng.standard_normal(5).astype(dtype) for _ in range(3))
    rvar = rng.random(5).astype(dtype) + 0.5
    grm, grv = to_dev(rmean.copy()), to_dev(rvar.copy())
    y, (mean, invstd) = F.batch_norm(x, gamma, beta, rmean, rvar, train=True)
    gy, (gmean, ginvstd) = F.batch_norm(to_dev(x), to_dev(gamma), to_dev(beta), grm, grv,
                                        train=True)
    close(gy, y, dtype, "batch_norm")
    close(grm, rmean, dtype, "running_mean")
    close(grv, rvar, dtype, "running_var")
    for train in (True, False):
        expected = F.batch_norm_backward(dy, x, gamma, mean, invstd, train)
        got = F.batch_norm_backward(to_dev(dy), to_dev(x), to_dev(gamma), gmean, ginvstd, train)
        for g, e, name in zip(got, expected, ("dx", "dgamma", "dbeta")):
            close(g, e, dtype, f"batch_norm_backward {name} (train={train})")
    # (kernel, stride, padding, ceil_mode, count_include_pad)
    for args in (((3, 3), 2, 1, True, False), ((2, 3), (2, 1), 0, False, True)):
        y = F.avg_pool2d(x, *args)
        close(F.avg_pool2d(to_dev(x), *args), y, dtype, f"avg_pool2d {args}")
        d = rng.standard_normal(y.shape).astype(dtype)
        close(F.avg_pool2d_backward(to_dev(d), x.shape, *args),
              F.avg_pool2d_backward(d, x.shape, *args), dtype, f"avg_pool2d_backward {args}")
    for size in ((3, 2), (9, 11), 1):
        y = F.adaptive_avg_pool2d(x, size)
        close(F.adaptive_avg_pool2d(to_dev(x), size), y, dtype, f"adaptive_avg_pool2d {size}")
        d = rng.standard_normal(y.shape).astype(dtype)
        close(F.adaptive_avg_pool2d_backward(to_dev(d), x.shape),
              F.adaptive_avg_pool2d_backward(d, x.shape), dtype,
              f"adaptive_avg_pool2d_backward {size}")
