"""The CUDA twins of batch normalisation's kernels (:mod:`minconv._kernels.reference_norm`).

Same names, signatures and equations as the reference (NCHW, statistics per channel
over its M = N*H*W values). Each channel's sums are reductions, done in two stages
without atomics or shared memory, so that every sum has a fixed order:

1. ``P`` partial sums per channel, one thread each: thread k of channel c adds the
   channel's values m = k, k + P, k + 2P, ... (m = n*H*W + hw). Neighbouring threads
   read neighbouring addresses, so the loads coalesce; C*P threads fill the GPU even
   when there are few channels.
2. one thread per channel adds its P partials in order (and divides by M for a mean).

(A block-per-channel tree in shared memory would save the second launch; the two
stages keep every thread independent, which the emulated tests can run one thread at
a time.) The statistics take two passes, mean then squared deviations from it, as the
reference does; the elementwise passes (``y = x*scale + shift`` and ``dx``) run one
thread per element. Sums run in the array's own type.

CuPy is imported lazily, as in :mod:`minconv._kernels.cuda`.
"""
from . import cuda
from .cuda_module import launch

PARTIALS = 256   # partial sums per channel (stage 1), at most M

SOURCE = r"""
// thread t of the launch handles elements t, t + stride, t + 2*stride, ...
#define FOR_EACH(i, n) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

// Stage 1: thread k of channel c walks the channel's values m = k, k + P, k + 2P, ...;
// value m sits at x[(n*C + c)*HW + hw] with n = m / HW, hw = m % HW. Stepping m by P
// steps (n, hw) by (P / HW, P % HW) with a carry, so the loop needs no division.

// partial (C, P): partial[c*P + k] = sum of x over the values of thread k of channel c
template <typename T, typename I>
__global__ void bn_partial_sums(const T* x, T* partial, I N, I C, I HW, I P) {
    FOR_EACH(e, C * P) {
        T sum = T(0);
        const I k = e % P, c = e / P;              // e = c*P + k
        const I dn = P / HW, dhw = P % HW;
        for (I n = k / HW, hw = k % HW; n < N; ) {
            sum += x[(n * C + c) * HW + hw];
            n += dn;                               // m += P, as (n, hw) with a carry
            hw += dhw;
            if (hw >= HW) { hw -= HW; ++n; }
        }
        partial[e] = sum;
    }
}

// partial[c*P + k] = sum of (x - mean_c)^2 over the same values
template <typename T, typename I>
__global__ void bn_partial_sqdev(const T* x, const T* mean, T* partial, I N, I C, I HW, I P) {
    FOR_EACH(e, C * P) {
        T sum = T(0);
        const I k = e % P, c = e / P;
        const I dn = P / HW, dhw = P % HW;
        const T m = mean[c];
        for (I n = k / HW, hw = k % HW; n < N; ) {
            const T d = x[(n * C + c) * HW + hw] - m;
            sum += d * d;
            n += dn;
            hw += dhw;
            if (hw >= HW) { hw -= HW; ++n; }
        }
        partial[e] = sum;
    }
}

// the backward pass's two sums at once: sum dy and sum dy*(x - mean_c)
template <typename T, typename I>
__global__ void bn_partial_dsums(const T* dy, const T* x, const T* mean, T* partial_dy,
                                 T* partial_dyx, I N, I C, I HW, I P) {
    FOR_EACH(e, C * P) {
        T sdy = T(0), sdyx = T(0);
        const I k = e % P, c = e / P;
        const I dn = P / HW, dhw = P % HW;
        const T m = mean[c];
        for (I n = k / HW, hw = k % HW; n < N; ) {
            const I o = (n * C + c) * HW + hw;
            sdy += dy[o];
            sdyx += dy[o] * (x[o] - m);
            n += dn;
            hw += dhw;
            if (hw >= HW) { hw -= HW; ++n; }
        }
        partial_dy[e] = sdy;
        partial_dyx[e] = sdyx;
    }
}

// stage 2, one thread per channel: out[c] = (partial[c*P] + ... + partial[c*P + P-1]) / divisor
template <typename T, typename I>
__global__ void bn_finish(const T* partial, T* out, I C, I P, T divisor) {
    FOR_EACH(c, C) {
        T sum = T(0);
        for (I k = 0; k < P; ++k) sum += partial[c * P + k];
        out[c] = sum / divisor;
    }
}

// y = x * scale_c + shift_c, one thread per element; e = (n*C + c)*HW + hw
template <typename T, typename I>
__global__ void bn_apply(const T* x, const T* scale, const T* shift, T* y, I C, I HW, I total) {
    FOR_EACH(e, total) {
        const I c = (e / HW) % C;
        y[e] = x[e] * scale[c] + shift[c];
    }
}

// dx = a_c*dy + b_c*(x - mean_c) + k_c, one thread per element (coefficients in batchnorm_backward)
template <typename T, typename I>
__global__ void bn_dx(const T* dy, const T* x, const T* mean, const T* a, const T* b,
                      const T* k, T* dx, I C, I HW, I total) {
    FOR_EACH(e, total) {
        const I c = (e / HW) % C;
        dx[e] = a[c] * dy[e] + b[c] * (x[e] - mean[c]) + k[c];
    }
}
"""

KERNELS = ("bn_partial_sums", "bn_partial_sqdev", "bn_partial_dsums", "bn_finish",
           "bn_apply", "bn_dx")


def _launch(kernel, dtype, total, arrays, sizes, scalars=()):
    launch(SOURCE, KERNELS, kernel, dtype, total, arrays, sizes, scalars)


def _input(x, what, op):
    x = cuda._float_array(x, f"{op}: {what}")
    if x.ndim != 4:
        raise ValueError(f"{op}: {what} must be (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def _vector(v, x, what, op):
    """A per-channel vector as a contiguous (C,) array of x's dtype."""
    v = cuda._cupy().ascontiguousarray(v, dtype=x.dtype)
    if v.shape != (x.shape[1],):
        raise ValueError(f"{op}: {what} must have shape ({x.shape[1]},) for input "
                         f"{tuple(x.shape)}, got {tuple(v.shape)}")
    return v


def _partials(M):
    return max(1, min(PARTIALS, M))


def _channel_sums(kernel, arrays, x, outputs, divisor):
    """Stage 1 (``kernel`` into one (C, P) buffer per output) and stage 2 (into ``outputs``)."""
    cp = cuda._cupy()
    N, C, H, W = x.shape
    P = _partials(N * H * W)
    if N * H * W == 0:  # no values: every sum is 0 (and stage 1 would divide by H*W = 0)
        partials = [cp.zeros((C, P), dtype=x.dtype) for _ in outputs]
    else:
        partials = [cp.empty((C, P), dtype=x.dtype) for _ in outputs]
        _launch(kernel, x.dtype, C * P, tuple(arrays) + tuple(partials), (N, C, H * W, P))
    for partial, out in zip(partials, outputs):
        _launch("bn_finish", x.dtype, C, (partial, out), (C, P), (divisor,))


def batchnorm_stats(x):
    """(mean, var) over (N, H, W) per channel: x (N, C, H, W) -> two (C,) arrays (var biased)."""
    cp = cuda._cupy()
    x = _input(x, "input", "batchnorm_stats")
    N, C, H, W = x.shape
    M = N * H * W
    mean, var = cp.empty(C, dtype=x.dtype), cp.empty(C, dtype=x.dtype)
    _channel_sums("bn_partial_sums", (x,), x, (mean,), M)
    _channel_sums("bn_partial_sqdev", (x, mean), x, (var,), M)
    return mean, var


def batchnorm_apply(x, scale, shift, relu=False):
    """y = x * scale_c + shift_c: x (N, C, H, W), scale and shift (C,); with ``relu``,
    max(y, 0) (NaN stays NaN)."""
    cp = cuda._cupy()
    op = "batchnorm_apply"
    x = _input(x, "input", op)
    scale, shift = _vector(scale, x, "scale", op), _vector(shift, x, "shift", op)
    N, C, H, W = x.shape
    y = cp.empty_like(x)
    _launch("bn_apply", x.dtype, x.size, (x, scale, shift, y), (C, H * W, x.size))
    return cuda.relu_forward(y, out=y) if relu else y


def batchnorm_backward(dy, x, mean, invstd, gamma, train):
    """(dx, dgamma, dbeta) of y = gamma * (x - mean) * invstd + beta (see the reference).

    With s1 = sum(dy) and s2 = sum(dy * (x - mean)) per channel, dbeta = s1,
    dgamma = invstd * s2, and dx = a*dy + b*(x - mean) + k per channel, where
    a = gamma*invstd and, in training, b = -a*invstd*dgamma/M, k = -a*dbeta/M
    (in evaluation b = k = 0).
    """
    cp = cuda._cupy()
    op = "batchnorm_backward"
    x, dy = _input(x, "x", op), _input(dy, "dy", op)
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(f"{op}: dy {dy.dtype} {tuple(dy.shape)} does not match x "
                         f"{x.dtype} {tuple(x.shape)}")
    mean, invstd, gamma = (_vector(v, x, what, op) for v, what in
                           ((mean, "mean"), (invstd, "invstd"), (gamma, "gamma")))
    N, C, H, W = x.shape
    M = N * H * W
    dbeta, s2 = cp.empty(C, dtype=x.dtype), cp.empty(C, dtype=x.dtype)
    _channel_sums("bn_partial_dsums", (dy, x, mean), x, (dbeta, s2), 1)
    dgamma = s2 * invstd
    a = gamma * invstd
    if train:
        b, k = -a * invstd * dgamma / M, -a * dbeta / M
    else:
        b, k = cp.zeros(C, dtype=x.dtype), cp.zeros(C, dtype=x.dtype)
    dx = cp.empty_like(x)
    _launch("bn_dx", x.dtype, x.size, (dy, x, mean, a, b, k, dx), (C, H * W, x.size))
    return dx, dgamma, dbeta


__all__ = ["batchnorm_apply", "batchnorm_backward", "batchnorm_stats"]
