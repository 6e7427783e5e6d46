"""The CUDA twins of the reference kernels, as CuPy raw kernels.

Same names, signatures and results as :mod:`minconv._kernels.reference`
(layouts and tie rules are documented there). Every kernel runs one thread
per output element and writes only that element, so no two threads touch the
same memory, with one exception: unpooling (see :func:`maxpool_backward`).

- The CUDA source below is one module-level string of templates; it is
  compiled once per device on first use (``_module`` is memoised) for float
  and double, and for 32- or 64-bit index arithmetic (64-bit integer division
  is several times slower on a GPU, so it is used only for arrays of 2**31
  elements or more).
- Sums run in the array's own type: float32 arrays accumulate in float,
  float64 arrays in double.
- col2im is a gather (each pixel sums the column entries that hold it),
  not a scatter, so it needs no atomics and its sum order is fixed.

CuPy is imported lazily: this module imports without it, and calling a kernel
without it raises a RuntimeError that says how to install it.
"""
import functools

import numpy as np

from .. import backend
from . import reference
from ..geometry import kernel_geometry, pool_output_size

BLOCK = 256          # threads per block
MAX_GRID = 2 ** 16   # blocks per launch; the grid-stride loop covers the rest
_INT32_LIMIT = 2 ** 31 - 1 - BLOCK * MAX_GRID  # the loop's last step must not overflow

SOURCE = r"""
// Every kernel walks its elements with a grid-stride loop: thread t of the
// launch handles elements t, t + stride, t + 2*stride, ...
#define FOR_EACH(i, n) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

// -inf without math headers (NVRTC compiles this source without any)
template <typename T> __device__ T negative_infinity();
template <> __device__ float negative_infinity<float>() {
    return __int_as_float((int)0xff800000u);
}
template <> __device__ double negative_infinity<double>() {
    return __longlong_as_double((long long)0xfff0000000000000ull);
}

__device__ inline float power(float a, float b) { return powf(a, b); }
__device__ inline double power(double a, double b) { return pow(a, b); }

// atomicAdd on double is native from sm_60 on; older GPUs get the usual CAS loop
__device__ inline float add_to(float* address, float value) { return atomicAdd(address, value); }
__device__ inline double add_to(double* address, double value) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
    unsigned long long* word = (unsigned long long*)address;
    unsigned long long old = *word, seen;
    do {
        seen = old;
        old = atomicCAS(word, seen, __double_as_longlong(value + __longlong_as_double(seen)));
    } while (seen != old);
    return __longlong_as_double(old);
#else
    return atomicAdd(address, value);
#endif
}

// cols (C*kh*kw, N*Ho*Wo) from x (N, C, H, W); one thread per entry of cols.
template <typename T, typename I>
__global__ void im2col(const T* x, T* cols, I N, I C, I H, I W, I kh, I kw,
                       I sh, I sw, I ph, I pw, I dh, I dw, I Ho, I Wo) {
    const I NL = N * Ho * Wo;  // columns of cols
    FOR_EACH(e, C * kh * kw * NL) {
        // e = row*NL + col, row = (c*kh + i)*kw + j, col = (n*Ho + ho)*Wo + wo
        const I row = e / NL, col = e % NL;
        const I j = row % kw, i = (row / kw) % kh, c = row / (kw * kh);
        const I wo = col % Wo, ho = (col / Wo) % Ho, n = col / (Wo * Ho);
        const I h = ho * sh - ph + i * dh, w = wo * sw - pw + j * dw;
        cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
    }
}

// x (N, C, H, W) from cols (C*kh*kw, N*Ho*Wo), summing overlaps: one thread per
// pixel gathers every column entry that holds it. Tap (i, j) of the window at
// (ho, wo) reads pixel h = ho*sh - ph + i*dh, so for a given h and tap i the
// window row is ho = (h + ph - i*dh) / sh when that divides exactly and lies in
// [0, Ho); the same holds for columns. Taps go in (i, j) order, as in the reference.
template <typename T, typename I>
__global__ void col2im(const T* cols, T* x, I N, I C, I H, I W, I kh, I kw,
                       I sh, I sw, I ph, I pw, I dh, I dw, I Ho, I Wo) {
    const I NL = N * Ho * Wo;
    FOR_EACH(e, N * C * H * W) {
        // e = ((n*C + c)*H + h)*W + w
        const I w = e % W, h = (e / W) % H, c = (e / (W * H)) % C, n = e / (W * H * C);
        T sum = T(0);
        for (I i = 0; i < kh; ++i) {
            const I hs = h + ph - i * dh;  // ho*sh, when tap i of some window lands on h
            if (hs < 0) break;             // and it only decreases with i
            if (hs % sh != 0 || hs / sh >= Ho) continue;
            const I ho = hs / sh;
            for (I j = 0; j < kw; ++j) {
                const I ws = w + pw - j * dw;
                if (ws < 0) break;
                if (ws % sw != 0 || ws / sw >= Wo) continue;
                const I wo = ws / sw;
                sum += cols[((c * kh + i) * kw + j) * NL + (n * Ho + ho) * Wo + wo];
            }
        }
        x[e] = sum;
    }
}

// y, switches (N*C, Ho, Wo) from x (N*C, H, W); one thread per window. Pixels
// outside the plane are skipped, which is what -inf padding does under a strict
// '>', and covers ceil_mode windows that hang past the edge.
template <typename T, typename I>
__global__ void maxpool_forward(const T* x, T* y, int* switches, I planes, I H, I W,
                                I kh, I kw, I sh, I sw, I ph, I pw, I Ho, I Wo) {
    FOR_EACH(e, planes * Ho * Wo) {
        // e = (p*Ho + ho)*Wo + wo, p = n*C + c
        const I wo = e % Wo, ho = (e / Wo) % Ho, p = e / (Wo * Ho);
        const I hs = ho * sh - ph, ws = wo * sw - pw;
        const I h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;
        const I h1 = hs + kh < H ? hs + kh : H, w1 = ws + kw < W ? ws + kw : W;
        const T* plane = x + p * H * W;
        T best = negative_infinity<T>();
        int where = (int)(h0 * W + w0);  // the window's first pixel, as in the reference
        for (I h = h0; h < h1; ++h) {
            for (I w = w0; w < w1; ++w) {  // row-major order + strict '>': first of equals wins
                const T v = plane[h * W + w];
                if (v > best || v != v) { best = v; where = (int)(h * W + w); }  // NaN wins, as in PyTorch
            }
        }
        y[e] = best;
        switches[e] = where;
    }
}

// dx (N*C, H*W) += dy at the switches (dx zeroed by the caller); one thread per
// entry of dy. A scatter: see maxpool_backward in cuda.py for why not a gather.
template <typename T, typename I>
__global__ void maxpool_backward(const T* dy, const int* switches, T* dx,
                                 I planes, I L, I HW) {
    FOR_EACH(e, planes * L) {
        const int s = switches[e];
        if (s >= 0 && s < HW)  // the range is checked by max_unpool2d; never write outside
            add_to(&dx[(e / L) * HW + (I)s], dy[e]);
    }
}

// y, scale (N, C, H, W) from x; one thread per element, summing its channel
// window [c - size/2, c + (size-1)/2] directly: `size` loads of neighbouring
// channels (cached) instead of a running sum whose subtractions would cancel.
template <typename T, typename I>
__global__ void lrn_forward(const T* x, T* y, T* scale, I N, I C, I HW, I size,
                            T alpha_over_size, T beta, T k) {
    FOR_EACH(e, N * C * HW) {
        // e = (n*C + c)*HW + hw
        const I hw = e % HW, c = (e / HW) % C, n = e / (HW * C);
        const T* column = x + n * C * HW + hw;  // channel c' of this pixel is column[c'*HW]
        const I lo = c - size / 2 > 0 ? c - size / 2 : 0;
        const I hi = c + (size - 1) / 2 < C - 1 ? c + (size - 1) / 2 : C - 1;
        T sum = T(0);
        for (I q = lo; q <= hi; ++q) {
            const T v = column[q * HW];
            sum += v * v;
        }
        const T s = sum * alpha_over_size + k;
        scale[e] = s;
        y[e] = x[e] * power(s, -beta);
    }
}

// dx (N, C, H, W); one thread per element, summing dy*y/scale over the mirrored
// window [c - (size-1)/2, c + size/2] (the channels whose window holds c).
template <typename T, typename I>
__global__ void lrn_backward(const T* dy, const T* x, const T* y, const T* scale, T* dx,
                             I N, I C, I HW, I size, T beta, T coeff) {
    FOR_EACH(e, N * C * HW) {
        const I hw = e % HW, c = (e / HW) % C, n = e / (HW * C);
        const I base = n * C * HW + hw;
        const I lo = c - (size - 1) / 2 > 0 ? c - (size - 1) / 2 : 0;
        const I hi = c + size / 2 < C - 1 ? c + size / 2 : C - 1;
        T acc = T(0);
        for (I q = lo; q <= hi; ++q) {
            const I o = base + q * HW;
            acc += dy[o] * y[o] / scale[o];
        }
        dx[e] = dy[e] * power(scale[e], -beta) - coeff * x[e] * acc;
    }
}
"""

KERNELS = ("im2col", "col2im", "maxpool_forward", "maxpool_backward",
           "lrn_forward", "lrn_backward")
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_ITYPES = {np.int32: "int", np.int64: "long long"}


def _cupy():
    """The cupy module, or a RuntimeError that says what is missing."""
    if backend._cupy is None:
        raise RuntimeError("minconv's CUDA kernels need CuPy, which is not installed: "
                           "pip install -e '.[gpu]' (and an NVIDIA GPU with its driver)")
    return backend._cupy


def _name(kernel, ctype, itype):
    return f"{kernel}<{ctype}, {itype}>"


@functools.lru_cache(maxsize=None)
def _module(device_id):
    """The compiled module for one device: every kernel for float/double x int/long long."""
    names = [_name(k, c, i) for k in KERNELS for c in _CTYPES.values() for i in _ITYPES.values()]
    return _cupy().RawModule(code=SOURCE, name_expressions=names)


@functools.lru_cache(maxsize=None)
def _function(kernel, ctype, itype, device_id):
    return _module(device_id).get_function(_name(kernel, ctype, itype))


def _launch(kernel, dtype, total, arrays, sizes, scalars=()):
    """Run ``kernel`` over ``total`` elements.

    Arguments go in the order of the CUDA signature: ``arrays``, then the
    integer ``sizes`` (as int32 or int64, whichever holds every index), then the
    float ``scalars`` (in ``dtype``). Python numbers are converted explicitly:
    CuPy would pass a Python int as a 64-bit and a float as a double.
    """
    if total == 0:
        return
    cp = _cupy()
    largest = max([total] + [a.size for a in arrays])
    itype = np.int32 if largest <= _INT32_LIMIT else np.int64
    args = tuple(arrays) + tuple(itype(v) for v in sizes) + tuple(dtype.type(v) for v in scalars)
    grid = min((total + BLOCK - 1) // BLOCK, MAX_GRID)
    function = _function(kernel, _CTYPES[dtype], _ITYPES[itype], cp.cuda.Device().id)
    function((grid,), (BLOCK,), args)


def _float_array(a, what):
    """``a`` as a C-contiguous float32/float64 CuPy array (the kernels index it flat)."""
    cp = _cupy()
    a = cp.ascontiguousarray(a)
    if a.dtype not in _CTYPES:
        raise ValueError(f"{what} must be float32 or float64, got {a.dtype}")
    return a


def _conv_geometry(shape, kh, kw, stride, padding, dilation):
    """The sizes the unfold kernels take: (N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)."""
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = kernel_geometry(shape, int(kh), int(kw),
                                                                 stride, padding, dilation)
    return (N, C, H, W, int(kh), int(kw), sh, sw, ph, pw, dh, dw, Ho, Wo)


# ---------------------------------------------------------------- im2col / col2im

def im2col(x, kh, kw, stride, padding, dilation, out=None):
    """Unfold every receptive field of ``x`` into a column (see the reference).

    x    : (N, C, H, W) float32 or float64, on the GPU
    out  : optional (C*kh*kw, N*Ho*Wo) buffer to write into
    cols : (C*kh*kw, N*Ho*Wo), ``out`` when given
    """
    cp = _cupy()
    x = _float_array(x, "im2col: input")
    geometry = _conv_geometry(x.shape, int(kh), int(kw), stride, padding, dilation)
    N, C, _, _, kh, kw, _, _, _, _, _, _, Ho, Wo = geometry
    shape = (C * kh * kw, N * Ho * Wo)
    direct = (isinstance(out, cp.ndarray) and out.shape == shape and out.dtype == x.dtype
              and out.flags.c_contiguous)
    cols = out if direct else cp.empty(shape, dtype=x.dtype)  # every entry gets written
    _launch("im2col", x.dtype, cols.size, (x, cols), geometry)
    if out is not None and not direct:
        out[...] = cols
        return out
    return cols


def col2im(cols, x_shape, kh, kw, stride, padding, dilation):
    """Fold columns back onto the image, summing where receptive fields overlap.

    cols : (C*kh*kw, N*Ho*Wo) float32 or float64, the layout of :func:`im2col`
    x    : x_shape = (N, C, H, W), the dtype of ``cols``
    """
    cp = _cupy()
    cols = _float_array(cols, "col2im: cols")
    geometry = _conv_geometry(x_shape, int(kh), int(kw), stride, padding, dilation)
    N, C, H, W, kh, kw, _, _, _, _, _, _, Ho, Wo = geometry
    if cols.size != C * kh * kw * N * Ho * Wo:
        raise ValueError(f"col2im: cols has shape {tuple(cols.shape)}, expected "
                         f"{(C * kh * kw, N * Ho * Wo)} for x_shape {tuple(x_shape)}")
    x = cp.empty((N, C, H, W), dtype=cols.dtype)  # every pixel gets written
    _launch("col2im", cols.dtype, x.size, (cols, x), geometry)
    return x


# ---------------------------------------------------------------- max pooling

def maxpool_forward(x, kh, kw, stride, padding, ceil_mode):
    """Max pooling that records its switches (see the reference).

    x : (N, C, H, W) float32 or float64  ->  (y, switches), both (N, C, Ho, Wo),
    switches int32 flat indices ``h*W + w`` into each (H, W) plane.
    """
    cp = _cupy()
    x = _float_array(x, "maxpool_forward: input")
    N, C, H, W = x.shape
    kh, kw = int(kh), int(kw)
    (sh, sw), (ph, pw) = stride, padding
    Ho = pool_output_size(H, kh, sh, ph, ceil_mode)
    Wo = pool_output_size(W, kw, sw, pw, ceil_mode)
    if Ho < 1 or Wo < 1 or min(sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"maxpool_forward: no output for input {tuple(x.shape)} with kernel "
                         f"({kh}, {kw}), stride {stride}, padding {padding}")
    if H * W >= 2 ** 31:
        raise ValueError(f"maxpool_forward: planes of {H}x{W} are too large (the switches are "
                         "int32)")
    y = cp.empty((N, C, Ho, Wo), dtype=x.dtype)
    switches = cp.empty((N, C, Ho, Wo), dtype=cp.int32)
    _launch("maxpool_forward", x.dtype, y.size, (x, y, switches),
            (N * C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo))
    return y, switches


def maxpool_values(x, kh, kw, stride, padding, ceil_mode):
    """Max pooling without switches: the y of :func:`maxpool_forward`."""
    return maxpool_forward(x, kh, kw, stride, padding, ceil_mode)[0]


def maxpool_backward(dy, switches, x_shape):
    """Put each value back at its switch (unpooling); also max pooling's backward.

    dy, switches : (N, C, Ho, Wo)  ->  dx : x_shape = (N, C, H, W), the dtype of dy;
    where several windows chose the same element their values are summed.

    This one is a scatter with atomic adds, not a gather: a gather would need,
    for each input element, the windows that cover it, which depend on the
    kernel size, stride and padding, and this signature (the reference's,
    shared with unpooling in the deconvnet) carries only the switches. The
    atomics only meet where overlapping windows chose the same element (at
    most ceil(k/s)^2 of them, 4 for ZFNet's 3x3/2), so contention is low; the
    price is that such sums may add in a different order from run to run
    (differences at rounding level).
    """
    cp = _cupy()
    dy = _float_array(dy, "maxpool_backward: dy")
    N, C, H, W = (int(v) for v in x_shape)
    if dy.ndim != 4 or switches.shape != dy.shape or dy.shape[:2] != (N, C):
        raise ValueError(f"maxpool_backward: dy {tuple(dy.shape)} and switches "
                         f"{tuple(switches.shape)} do not match x_shape {tuple(x_shape)}")
    reference._check_switches(switches, H, W, x_shape)   # before narrowing: all < H*W
    switches = cp.ascontiguousarray(switches, dtype=cp.int32)
    dx = cp.zeros((N, C, H, W), dtype=dy.dtype)
    _launch("maxpool_backward", dy.dtype, dy.size, (dy, switches, dx),
            (N * C, dy.shape[2] * dy.shape[3], H * W))
    return dx


# ---------------------------------------------------------------- local response normalisation

def lrn_forward(x, size, alpha, beta, k):
    """Cross-channel LRN (Caffe/PyTorch convention, see the reference).

    x : (N, C, H, W)  ->  (y, scale), both (N, C, H, W),
    scale = k + alpha/size * (sum of x^2 over the channel window), y = x * scale^-beta.
    """
    cp = _cupy()
    x = _float_array(x, "lrn_forward: input")
    N, C, H, W = x.shape
    y = cp.empty_like(x)
    scale = cp.empty_like(x)
    _launch("lrn_forward", x.dtype, x.size, (x, y, scale), (N, C, H * W, int(size)),
            (alpha / size, beta, k))
    return y, scale


def lrn_backward(dy, x, y, scale, size, alpha, beta):
    """Gradient of :func:`lrn_forward` with respect to x (see the reference).

    dy, x, y, scale : (N, C, H, W)  ->  dx : (N, C, H, W)
    """
    cp = _cupy()
    dy, x, y, scale = (_float_array(a, "lrn_backward: " + what)
                       for a, what in ((dy, "dy"), (x, "x"), (y, "y"), (scale, "scale")))
    if not (dy.shape == x.shape == y.shape == scale.shape and
            dy.dtype == x.dtype == y.dtype == scale.dtype):
        raise ValueError(f"lrn_backward: dy {tuple(dy.shape)} {dy.dtype}, x {tuple(x.shape)} "
                         f"{x.dtype}, y {tuple(y.shape)}, scale {tuple(scale.shape)} must agree")
    N, C, H, W = x.shape
    dx = cp.empty_like(x)
    _launch("lrn_backward", x.dtype, x.size, (dy, x, y, scale, dx), (N, C, H * W, int(size)),
            (beta, 2.0 * alpha * beta / size))
    return dx


# ---------------------------------------------------------------- the ReLU's gradient

# CuPy's maximum is one kernel already: the reference serves
relu_forward = reference.relu_forward


@functools.lru_cache(maxsize=None)
def _relu_backward_kernel():
    # one fused pass instead of a comparison, a cast and a product; CuPy
    # compiles it once per dtype and caches it
    return _cupy().ElementwiseKernel(
        "T dy, T x", "T dx", "dx = x > T(0) ? dy : T(0)", "minconv_relu_backward")


def relu_backward(dy, x):
    """The ReLU's true gradient, fused into one kernel: dx = dy where x > 0, else 0
    (x its input or output), the reference's twin; the deconvnet's rules are in
    :func:`minconv.functional.relu_backward`."""
    dy, x = _float_array(dy, "relu_backward: dy"), _float_array(x, "relu_backward: x")
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(f"relu_backward: dy and x must share shape and dtype, got "
                         f"{dy.dtype} {dy.shape} and {x.dtype} {x.shape}")
    return _relu_backward_kernel()(dy, x)


# CuPy's own copy of a transposed array is coalesced: the reference serves
reversed_axes = reference.reversed_axes
padded_channels_last = reference.padded_channels_last
channels_first = reference.channels_first
