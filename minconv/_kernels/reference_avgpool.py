"""The readable specification of average pooling's kernels (NCHW).

Output unit (i, j) averages the window of rows ``i*sh - ph ... i*sh - ph + kh - 1`` (and
columns alike). As in PyTorch, the window is first cut at the far edge of the padding
(``H + ph``); with ``count_include_pad`` the divisor is that window's size, padding
included, otherwise only the input pixels it covers are counted. Both rules are
products of one factor per axis, so the divisor is an outer product.
"""
from ..backend import get_array_module


def avgpool_divisors(n, n_out, k, s, p, count_include_pad):
    """Per-axis divisor factors, a list of ``n_out`` ints (see the module docstring)."""
    factors = []
    for i in range(n_out):
        start = i * s - p
        end = min(start + k, n + p)
        if not count_include_pad:
            start, end = max(start, 0), min(end, n)
        factors.append(end - start)
    return factors


def _taps(n, n_out, k, s, p):
    """Padded length that holds every window, and the slice of each tap offset."""
    padded = max(n + 2 * p, (n_out - 1) * s + k)
    return padded, [slice(t, t + s * (n_out - 1) + 1, s) for t in range(k)]


def _divisor(xp, dtype, H, W, Ho, Wo, kernel, stride, padding, count_include_pad):
    dh = avgpool_divisors(H, Ho, kernel[0], stride[0], padding[0], count_include_pad)
    dw = avgpool_divisors(W, Wo, kernel[1], stride[1], padding[1], count_include_pad)
    return xp.asarray(dh, dtype=dtype)[:, None] * xp.asarray(dw, dtype=dtype)[None, :]  # (Ho, Wo)


def avgpool_forward(x, kernel, stride, padding, out_size, count_include_pad):
    """y (N, C, Ho, Wo): the mean of each window of x (N, C, H, W); sizes are pairs."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (kh, kw), (Ho, Wo) = kernel, out_size
    Hp, rows = _taps(H, Ho, kh, stride[0], padding[0])
    Wp, cols = _taps(W, Wo, kw, stride[1], padding[1])
    padded = xp.zeros((N, C, Hp, Wp), dtype=x.dtype)
    padded[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W] = x
    y = xp.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for r in rows:
        for c in cols:
            y += padded[:, :, r, c]
    y /= _divisor(xp, x.dtype, H, W, Ho, Wo, kernel, stride, padding, count_include_pad)
    return y


def avgpool_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    """dx (x_shape): each dy spread evenly (by the forward divisor) over its window."""
    xp = get_array_module(dy)
    N, C, H, W = x_shape
    (kh, kw), (Ho, Wo) = kernel, dy.shape[2:]
    Hp, rows = _taps(H, Ho, kh, stride[0], padding[0])
    Wp, cols = _taps(W, Wo, kw, stride[1], padding[1])
    share = dy / _divisor(xp, dy.dtype, H, W, Ho, Wo, kernel, stride, padding, count_include_pad)
    padded = xp.zeros((N, C, Hp, Wp), dtype=dy.dtype)
    for r in rows:
        for c in cols:
            padded[:, :, r, c] += share
    return xp.ascontiguousarray(padded[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W])


def adaptive_bins(n, n_out):
    """PyTorch's adaptive bins along one axis: bin i covers [floor(i*n/n_out), ceil((i+1)*n/n_out)).

    Bins overlap when n is not a multiple of n_out, and repeat pixels when n_out > n.
    """
    return [((i * n) // n_out, -((-(i + 1) * n) // n_out)) for i in range(n_out)]


def adaptive_matrix(xp, dtype, n, n_out):
    """A (n_out, n) matrix whose row i averages bin i: adaptive pooling is separable,
    y = A_h @ x @ A_w^T for each (N, C) plane."""
    A = xp.zeros((n_out, n), dtype=dtype)
    for i, (start, end) in enumerate(adaptive_bins(n, n_out)):
        A[i, start:end] = 1.0 / (end - start)
    return A


def adaptive_avgpool_forward(x, out_size):
    """y (N, C, Ho, Wo) = A_h x A_w^T for each (N, C) plane of x (N, C, H, W)."""
    xp = get_array_module(x)
    (H, W), (Ho, Wo) = x.shape[2:], out_size
    Ah, Aw = adaptive_matrix(xp, x.dtype, H, Ho), adaptive_matrix(xp, x.dtype, W, Wo)
    return xp.matmul(Ah, xp.matmul(x, Aw.T))       # (Ho, H) @ (N, C, H, Wo)


def adaptive_avgpool_backward(dy, x_shape):
    """dx (x_shape) = A_h^T dy A_w: each dy spread evenly over its bin."""
    xp = get_array_module(dy)
    (H, W), (Ho, Wo) = x_shape[2:], dy.shape[2:]
    Ah, Aw = adaptive_matrix(xp, dy.dtype, H, Ho), adaptive_matrix(xp, dy.dtype, W, Wo)
    return xp.ascontiguousarray(xp.matmul(Ah.T, xp.matmul(dy, Aw)))   # (H, Ho) @ (N, C, Ho, W)


def plane_means(x):
    """The mean of each plane: x (N, C, *spatial) -> (N, C, 1, ..., 1),

        y[n, c] = sum over p of x[n, c, p] / P,   P the plane's size.

    Summed by ``einsum``, whose loop adds a plane with vector lanes: a 13x13 or 7x7 plane
    is too short an axis for ``mean``'s pairwise sum to pay its cost per row (1000 planes
    of 13x13 in a third of the time).
    """
    N, C = x.shape[:2]
    size = 1
    for n in x.shape[2:]:
        size *= n
    sums = get_array_module(x).einsum("ncp->nc", x.reshape(N, C, size))
    return (sums / x.dtype.type(size)).reshape((N, C) + (1,) * (x.ndim - 2))
