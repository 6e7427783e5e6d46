"""The CUDA twins of average pooling's kernels (:mod:`minconv._kernels.reference_avgpool`).

Same names, signatures and window rules as the reference: fixed windows with
``ceil_mode`` and ``count_include_pad`` (the divisor is one factor per axis), and
PyTorch's adaptive bins, row bin i = [floor(i*H/Ho), ceil((i+1)*H/Ho)), outputs larger
than the input included.

One thread per output element. Each forward thread sums its window and divides;
each backward thread owns one input pixel and gathers the share of every window that
covers it, so no two threads write the same element and no atomics are needed. Sums
run in the array's own type.

CuPy is imported lazily, as in :mod:`minconv._kernels.cuda`.
"""
from . import cuda
from .cuda_module import launch

SOURCE = r"""
// thread t of the launch handles elements t, t + stride, t + 2*stride, ...
#define FOR_EACH(i, n) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

// Window i along an axis of n pixels covers i*s - p ... i*s - p + k - 1, cut at the far
// edge of the padding (n + p); its divisor factor counts the padding in it or not.
template <typename I>
__device__ inline I window_factor(I i, I n, I k, I s, I p, I include_pad) {
    I start = i * s - p, end = start + k < n + p ? start + k : n + p;
    if (!include_pad) {
        start = start > 0 ? start : 0;
        end = end < n ? end : n;
    }
    return end - start;
}

// y (planes, Ho, Wo) from x (planes, H, W), planes = N*C; one thread per output
template <typename T, typename I>
__global__ void avgpool_forward(const T* x, T* y, I planes, I H, I W, I kh, I kw, I sh, I sw,
                                I ph, I pw, I Ho, I Wo, I include_pad) {
    FOR_EACH(e, planes * Ho * Wo) {
        // e = (p*Ho + i)*Wo + j
        const I j = e % Wo, i = (e / Wo) % Ho, p = e / (Wo * Ho);
        const I hs = i * sh - ph, ws = j * sw - pw;  // the window's first row and column
        const I h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;
        const I h1 = hs + kh < H ? hs + kh : H, w1 = ws + kw < W ? ws + kw : W;
        const T* plane = x + p * H * W;
        T sum = T(0);
        for (I h = h0; h < h1; ++h)
            for (I w = w0; w < w1; ++w) sum += plane[h * W + w];
        y[e] = sum / T(window_factor(i, H, kh, sh, ph, include_pad) *
                       window_factor(j, W, kw, sw, pw, include_pad));
    }
}

// dx (planes, H, W); one thread per pixel gathers dy / divisor of every window that
// covers it. Window i covers row h when i*sh - ph <= h <= i*sh - ph + kh - 1, i.e.
// ceil((h + ph - kh + 1) / sh) <= i <= floor((h + ph) / sh), kept within [0, Ho).
template <typename T, typename I>
__global__ void avgpool_backward(const T* dy, T* dx, I planes, I H, I W, I kh, I kw, I sh, I sw,
                                 I ph, I pw, I Ho, I Wo, I include_pad) {
    FOR_EACH(e, planes * H * W) {
        // e = (p*H + h)*W + w
        const I w = e % W, h = (e / W) % H, p = e / (W * H);
        const I ah = h + ph - kh + 1, aw = w + pw - kw + 1;
        const I i0 = ah > 0 ? (ah + sh - 1) / sh : 0, j0 = aw > 0 ? (aw + sw - 1) / sw : 0;
        const I i1 = (h + ph) / sh < Ho - 1 ? (h + ph) / sh : Ho - 1;
        const I j1 = (w + pw) / sw < Wo - 1 ? (w + pw) / sw : Wo - 1;
        const T* grad = dy + p * Ho * Wo;
        T sum = T(0);
        for (I i = i0; i <= i1; ++i) {
            const I fh = window_factor(i, H, kh, sh, ph, include_pad);
            for (I j = j0; j <= j1; ++j)
                sum += grad[i * Wo + j] / T(fh * window_factor(j, W, kw, sw, pw, include_pad));
        }
        dx[e] = sum;
    }
}

// PyTorch's adaptive bins: bin i of m over an axis of n covers bin_start(i, n, m) ...
// bin_end(i, n, m) - 1, that is floor(i*n/m) ... ceil((i+1)*n/m) - 1.
template <typename I>
__device__ inline I bin_start(I i, I n, I m) { return i * n / m; }

template <typename I>
__device__ inline I bin_end(I i, I n, I m) { return ((i + 1) * n + m - 1) / m; }

// y (planes, Ho, Wo) from x (planes, H, W); one thread per output averages its bin
template <typename T, typename I>
__global__ void adaptive_avgpool_forward(const T* x, T* y, I planes, I H, I W, I Ho, I Wo) {
    FOR_EACH(e, planes * Ho * Wo) {
        // e = (p*Ho + i)*Wo + j
        const I j = e % Wo, i = (e / Wo) % Ho, p = e / (Wo * Ho);
        const I h0 = bin_start(i, H, Ho), h1 = bin_end(i, H, Ho);
        const I w0 = bin_start(j, W, Wo), w1 = bin_end(j, W, Wo);
        const T* plane = x + p * H * W;
        T sum = T(0);
        for (I h = h0; h < h1; ++h)
            for (I w = w0; w < w1; ++w) sum += plane[h * W + w];
        y[e] = sum / T((h1 - h0) * (w1 - w0));
    }
}

// dx (planes, H, W); one thread per pixel gathers dy / bin size of every bin holding
// it. Bin i holds row h when floor(i*H/Ho) <= h < ceil((i+1)*H/Ho), i.e. when
// floor(h*Ho/H) <= i < ceil((h+1)*Ho/H): the bins of the transposed map.
template <typename T, typename I>
__global__ void adaptive_avgpool_backward(const T* dy, T* dx, I planes, I H, I W, I Ho, I Wo) {
    FOR_EACH(e, planes * H * W) {
        // e = (p*H + h)*W + w
        const I w = e % W, h = (e / W) % H, p = e / (W * H);
        const I i0 = bin_start(h, Ho, H), i1 = bin_end(h, Ho, H);
        const I j0 = bin_start(w, Wo, W), j1 = bin_end(w, Wo, W);
        const T* grad = dy + p * Ho * Wo;
        T sum = T(0);
        for (I i = i0; i < i1; ++i) {
            const I bh = bin_end(i, H, Ho) - bin_start(i, H, Ho);  // rows in bin i
            for (I j = j0; j < j1; ++j) {
                const I bw = bin_end(j, W, Wo) - bin_start(j, W, Wo);
                sum += grad[i * Wo + j] / T(bh * bw);
            }
        }
        dx[e] = sum;
    }
}
"""

KERNELS = ("avgpool_forward", "avgpool_backward", "adaptive_avgpool_forward",
           "adaptive_avgpool_backward")


def _launch(kernel, dtype, total, arrays, sizes):
    launch(SOURCE, KERNELS, kernel, dtype, total, arrays, sizes)


def _planes(a, what, op):
    a = cuda._float_array(a, f"{op}: {what}")
    if a.ndim != 4:
        raise ValueError(f"{op}: {what} must be (N, C, H, W), got shape {tuple(a.shape)}")
    return a


def _window_sizes(op, x_shape, out_size, kernel, stride, padding, count_include_pad):
    """The kernels' integer arguments after the arrays, checked."""
    N, C, H, W = (int(v) for v in x_shape)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = (int(v) for v in out_size)
    if min(kh, kw, sh, sw, Ho, Wo) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{op}: no output for input {tuple(x_shape)} with kernel {kernel}, "
                         f"stride {stride}, padding {padding}, output {tuple(out_size)}")
    return (N * C, H, W, int(kh), int(kw), int(sh), int(sw), int(ph), int(pw), Ho, Wo,
            int(bool(count_include_pad)))


def avgpool_forward(x, kernel, stride, padding, out_size, count_include_pad):
    """y (N, C, Ho, Wo): the mean of each window of x (N, C, H, W); sizes are pairs."""
    cp = cuda._cupy()
    x = _planes(x, "input", "avgpool_forward")
    sizes = _window_sizes("avgpool_forward", x.shape, out_size, kernel, stride, padding,
                          count_include_pad)
    y = cp.empty(tuple(x.shape[:2]) + tuple(int(v) for v in out_size), dtype=x.dtype)
    _launch("avgpool_forward", x.dtype, y.size, (x, y), sizes)
    return y


def avgpool_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    """dx (x_shape): each dy spread evenly (by the forward divisor) over its window."""
    cp = cuda._cupy()
    op = "avgpool_backward"
    dy = _planes(dy, "dy", op)
    if tuple(dy.shape[:2]) != tuple(x_shape[:2]):
        raise ValueError(f"{op}: dy {tuple(dy.shape)} does not match x_shape {tuple(x_shape)}")
    sizes = _window_sizes(op, x_shape, dy.shape[2:], kernel, stride, padding, count_include_pad)
    dx = cp.empty(tuple(int(v) for v in x_shape), dtype=dy.dtype)
    _launch("avgpool_backward", dy.dtype, dx.size, (dy, dx), sizes)
    return dx


def adaptive_avgpool_forward(x, out_size):
    """y (N, C, Ho, Wo): the mean of each of PyTorch's adaptive bins of x (N, C, H, W)."""
    cp = cuda._cupy()
    x = _planes(x, "input", "adaptive_avgpool_forward")
    N, C, H, W = x.shape
    Ho, Wo = (int(v) for v in out_size)
    if min(Ho, Wo) < 1:
        raise ValueError(f"adaptive_avgpool_forward: output size must be >= 1, got {out_size}")
    y = cp.empty((N, C, Ho, Wo), dtype=x.dtype)
    _launch("adaptive_avgpool_forward", x.dtype, y.size, (x, y), (N * C, H, W, Ho, Wo))
    return y


def adaptive_avgpool_backward(dy, x_shape):
    """dx (x_shape): each dy spread evenly over its bin."""
    cp = cuda._cupy()
    op = "adaptive_avgpool_backward"
    dy = _planes(dy, "dy", op)
    N, C, H, W = (int(v) for v in x_shape)
    if tuple(dy.shape[:2]) != (N, C):
        raise ValueError(f"{op}: dy {tuple(dy.shape)} does not match x_shape {tuple(x_shape)}")
    Ho, Wo = dy.shape[2:]
    dx = cp.empty((N, C, H, W), dtype=dy.dtype)
    _launch("adaptive_avgpool_backward", dy.dtype, dx.size, (dy, dx), (N * C, H, W, Ho, Wo))
    return dx


__all__ = ["adaptive_avgpool_backward", "adaptive_avgpool_forward", "avgpool_backward",
           "avgpool_forward"]
