"""The readable specification: every kernel of minconv in plain array code.

Each function here has a fast twin of the same name and signature in the
Cython module (``_cpu``) and the CuPy module (``cuda``); the tests check the
twins against these. The code is written against an array module ``xp``
(NumPy or CuPy), so the same specification also runs on a GPU.

Conventions (see docs/architecture.md): layout NCHW; every size argument is a pair
``(rows, cols)``, e.g. ``stride=(sh, sw)``.

Output sizes, padding rules and argument checks are :mod:`minconv.geometry`'s,
shared by every twin.
"""
from ..backend import get_array_module
from ..geometry import conv_output_size, pool_output_size  # noqa: F401 (the kernels' sizes)


# ---------------------------------------------------------------- im2col / col2im

def _output_size(H, W, kh, kw, stride, padding, dilation):
    """(Ho, Wo): the output positions of a kh x kw window over an H x W image."""
    return (conv_output_size(H, kh, stride[0], padding[0], dilation[0]),
            conv_output_size(W, kw, stride[1], padding[1], dilation[1]))


def _written_into(result, out):
    """``out`` holding ``result`` when one was given, else ``result``."""
    if out is None:
        return result
    out[...] = result
    return out


def _window_slices(offset, stride, count):
    """The slice that picks, for every output position, the tap at ``offset``."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def im2col(x, kh, kw, stride, padding, dilation, out=None):
    """Unfold every receptive field of ``x`` into a column.

    x    : (N, C, H, W)
    cols : (C*kh*kw, N*Ho*Wo), row ``(c*kh + i)*kw + j`` holds tap (i, j) of
           channel c, column ``(n*Ho + ho)*Wo + wo`` is one output position.

    Then a convolution is one matrix multiply, ``W.reshape(F, -1) @ cols``.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = _output_size(H, W, kh, kw, stride, padding, dilation)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((C, kh, kw, N, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        rows = _window_slices(i * dh, sh, Ho)
        for j in range(kw):
            columns = _window_slices(j * dw, sw, Wo)
            cols[:, i, j] = x_pad[:, :, rows, columns].transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
    cols = cols.reshape(C * kh * kw, N * Ho * Wo)
    return _written_into(cols, out)


def col2im(cols, x_shape, kh, kw, stride, padding, dilation):
    """Fold columns back onto the image, summing where receptive fields overlap.

    cols : (C*kh*kw, N*Ho*Wo), the layout of :func:`im2col`
    x    : (N, C, H, W)

    col2im is the transpose of im2col: ``<im2col(x), cols> == <x, col2im(cols)>``.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = _output_size(H, W, kh, kw, stride, padding, dilation)
    cols = cols.reshape(C, kh, kw, N, Ho, Wo)
    x_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        rows = _window_slices(i * dh, sh, Ho)
        for j in range(kw):
            columns = _window_slices(j * dw, sw, Wo)
            x_pad[:, :, rows, columns] += cols[:, i, j].transpose(1, 0, 2, 3)  # (N, C, Ho, Wo)
    return x_pad[:, :, ph:ph + H, pw:pw + W]


def im2row(x, kh, kw, stride, padding, dilation, out=None):
    """im2col with channels last: every receptive field becomes a row.

    x    : (N, C, H, W)
    rows : (N*Ho*Wo, kh*kw*C), row ``(n*Ho + ho)*Wo + wo`` is one output position,
           column ``(i*kw + j)*C + c`` holds tap (i, j) of channel c.

    The same numbers as ``im2col(x).T`` with the columns in another order; then
    a convolution is ``rows @ W.transpose(0, 2, 3, 1).reshape(F, -1).T``. In the
    padded channels-last image the taps (i, 0..kw-1) of a position are one
    contiguous run of kw*C values, which makes this layout the cheaper one to
    unfold and fold on small maps (see the Cython twin).
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = _output_size(H, W, kh, kw, stride, padding, dilation)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).transpose(0, 2, 3, 1)  # NHWC
    rows = xp.empty((N, Ho, Wo, kh, kw, C), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows[:, :, :, i, j] = x_pad[:, _window_slices(i * dh, sh, Ho),
                                        _window_slices(j * dw, sw, Wo)]     # (N, Ho, Wo, C)
    rows = rows.reshape(N * Ho * Wo, kh * kw * C)
    return _written_into(rows, out)


def row2im(rows, x_shape, kh, kw, stride, padding, dilation):
    """Fold rows back onto the image, summing where receptive fields overlap.

    rows : (N*Ho*Wo, kh*kw*C), the layout of :func:`im2row`
    x    : (N, C, H, W)

    The transpose of im2row: ``<im2row(x), rows> == <x, row2im(rows)>``.
    """
    xp = get_array_module(rows)
    N, C, H, W = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = _output_size(H, W, kh, kw, stride, padding, dilation)
    rows = rows.reshape(N, Ho, Wo, kh, kw, C)
    x_pad = xp.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=rows.dtype)           # NHWC
    for i in range(kh):
        for j in range(kw):
            x_pad[:, _window_slices(i * dh, sh, Ho),
                  _window_slices(j * dw, sw, Wo)] += rows[:, :, :, i, j]
    return x_pad[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2)


def im2row_matmul(x, w_rows, kh, kw, stride, padding, dilation, bias=None, out=None):
    """A convolution with its output channels last: ``im2row(x) @ w_rows + bias``.

    x      : (N, C, H, W)
    w_rows : (kh*kw*C, F), row ``(i*kw + j)*C + c`` the weights of tap (i, j) of channel c
    bias   : (F,) or None
    y      : (N*Ho*Wo, F),

        y[(n, ho, wo), f] = bias[f] + sum_{i,j,c} x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw] * w_rows[(i*kw + j)*C + c, f]

    The compiled twin computes this without forming the rows.
    """
    y = im2row(x, kh, kw, stride, padding, dilation) @ w_rows
    if bias is not None:
        y += bias
    return _written_into(y, out)


def im2row_t_matmul(x, dy_rows, kh, kw, stride, padding, dilation, out=None):
    """A convolution's weight gradient, channels last: ``im2row(x).T @ dy_rows``.

    x       : (N, C, H, W)
    dy_rows : (N*Ho*Wo, F), one row per output position
    dw_rows : (kh*kw*C, F), the layout of :func:`im2row_matmul`'s ``w_rows``
    """
    return _written_into(im2row(x, kh, kw, stride, padding, dilation).T @ dy_rows, out)


def conv2d_direct(x, W, bias, stride, padding, dilation, out=None, relu=False, blocks=None):
    """A convolution summed tap by tap, channels first: for every tap (i, j)

        y[n, f, ho, wo] += sum_c W[f, c, i, j] * x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw]

    x : (N, C, H, W), W : (F, C, kh, kw), bias : (F,) or None  ->  y : (N, F, Ho, Wo);
    max(y, 0) with ``relu``. The compiled twin serves inputs of few channels (first
    layers), where the rows of im2row are too short to multiply well, and small maps
    with a batch smaller than the cores. ``blocks`` (the twin's weight layout) is unused:
    the reference reads W as it lies.
    """
    xp = get_array_module(x)
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = _output_size(H, Wd, kh, kw, stride, padding, dilation)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = xp.zeros((N, F, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x_pad[:, :, _window_slices(i * dh, sh, Ho), _window_slices(j * dw, sw, Wo)]
            y += xp.einsum("fc,nchw->nfhw", W[:, :, i, j], window)
    if bias is not None:
        y += bias[:, None, None]
    if relu:
        xp.maximum(y, 0, out=y)
    return _written_into(y, out)


def conv2d_direct_weight_grad(dy, x, W_shape, stride, padding, dilation):
    """The weight gradient of :func:`conv2d_direct`, tap by tap:

        dW[f, c, i, j] = sum_{n,ho,wo} dy[n, f, ho, wo] * x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw]

    dy : (N, F, Ho, Wo), x : (N, C, H, W)  ->  dW : W_shape = (F, C, kh, kw).
    """
    xp = get_array_module(x)
    F, C, kh, kw = W_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = dy.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dW = xp.empty(W_shape, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x_pad[:, :, _window_slices(i * dh, sh, Ho), _window_slices(j * dw, sw, Wo)]
            dW[:, :, i, j] = xp.einsum("nfhw,nchw->fc", dy, window)
    return dW


# ---------------------------------------------------------------- max pooling

def maxpool_forward(x, kh, kw, stride, padding, ceil_mode):
    """Max pooling that records its switches.

    x        : (N, C, H, W)
    y        : (N, C, Ho, Wo), the largest value in each window
    switches : (N, C, Ho, Wo) int32, the flat index ``h*W + w`` of the winner
               within its (H, W) plane; ties go to the first element in
               row-major window order. Padding never wins (it is -inf); a NaN
               always does (the window's value is NaN, as in PyTorch).
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    if H * W >= 2 ** 31:
        raise ValueError(f"maxpool_forward: planes of {H}x{W} are too large (the switches "
                         "are int32)")
    (sh, sw), (ph, pw) = stride, padding
    Ho = pool_output_size(H, kh, sh, ph, ceil_mode)
    Wo = pool_output_size(W, kw, sw, pw, ceil_mode)
    # ceil_mode windows may hang past the right edge: pad enough to hold them
    pad_bottom = max(ph, (Ho - 1) * sh + kh - H - ph)
    pad_right = max(pw, (Wo - 1) * sw + kw - W - pw)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, pad_bottom), (pw, pad_right)),
                   constant_values=-xp.inf)
    ho = xp.arange(Ho).reshape(Ho, 1)
    wo = xp.arange(Wo).reshape(1, Wo)
    y = xp.full((N, C, Ho, Wo), -xp.inf, dtype=x.dtype)
    # start at each window's first pixel, so a window of all -inf still points
    # inside itself (as PyTorch's does)
    first = xp.maximum(ho * sh - ph, 0) * W + xp.maximum(wo * sw - pw, 0)
    switches = xp.broadcast_to(first, (N, C, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            tap = x_pad[:, :, _window_slices(i, sh, Ho), _window_slices(j, sw, Wo)]
            # strictly greater: an earlier tap keeps a tie; a NaN always wins (PyTorch's
            # rule), so a window holding NaN gives NaN with its switch at the last NaN
            wins = (tap > y) | xp.isnan(tap)
            y = xp.where(wins, tap, y)
            flat = (ho * sh - ph + i) * W + (wo * sw - pw + j)  # (Ho, Wo) index in the plane
            switches = xp.where(wins, flat, switches)
    return y, switches.astype(xp.int32)


def maxpool_values(x, kh, kw, stride, padding, ceil_mode):
    """Max pooling without switches (inference): the y of :func:`maxpool_forward`."""
    return maxpool_forward(x, kh, kw, stride, padding, ceil_mode)[0]


def _check_switches(switches, H, W, x_shape):
    """Every switch must index its (H, W) plane."""
    bad = int(((switches < 0) | (switches >= H * W)).sum()) if switches.size else 0
    if bad:
        raise ValueError(f"maxpool_backward: switches must lie in [0, {H * W}) for planes of "
                         f"{H}x{W} (x_shape {tuple(x_shape)}); {bad} do not")


def maxpool_backward(dy, switches, x_shape):
    """Put each value back at its switch (unpooling); also max pooling's backward.

    dy, switches : (N, C, Ho, Wo)
    dx           : x_shape = (N, C, H, W), zero except at the switches, where
                   the values of all windows that chose that element are summed.
    """
    xp = get_array_module(dy)
    N, C, H, W = x_shape
    _check_switches(switches, H, W, x_shape)
    plane = xp.arange(N * C).reshape(N, C, 1, 1) * (H * W)  # where each (n, c) plane starts
    flat = (plane + switches).ravel()
    dx = xp.bincount(flat, weights=dy.ravel(), minlength=N * C * H * W)
    return dx.astype(dy.dtype, copy=False).reshape(x_shape)


# ---------------------------------------------------------------- local response normalisation

def _channel_window_sum(a, before, after):
    """s[:, c] = sum of a[:, c - before : c + after + 1] over channels, zero outside."""
    xp = get_array_module(a)
    C = a.shape[1]
    padded = xp.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))
    s = xp.zeros_like(a)
    for offset in range(before + after + 1):
        s += padded[:, offset:offset + C]
    return s


def lrn_forward(x, size, alpha, beta, k):
    """Cross-channel local response normalisation (Caffe/PyTorch convention).

    x, y, scale : (N, C, H, W)

        scale_c = k + alpha/size * sum_{c' in window(c)} x_c'^2
        y_c     = x_c * scale_c^(-beta)

    window(c) = [c - size//2, c + (size-1)//2], channels outside are zero.
    Returns ``(y, scale)``; the backward pass reuses ``scale``.
    """
    scale = _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    scale *= alpha / size
    scale += k
    y = x * scale ** -beta
    return y, scale


def lrn_backward(dy, x, y, scale, size, alpha, beta):
    """Gradient of :func:`lrn_forward` with respect to x.

        dx_i = dy_i * scale_i^(-beta)
               - 2*alpha*beta/size * x_i * sum_{j : i in window(j)} dy_j * y_j / scale_j

    ``i in window(j)`` is the mirrored window ``[i - (size-1)//2, i + size//2]``.
    """
    ratio = dy * y / scale
    back = _channel_window_sum(ratio, (size - 1) // 2, size // 2)
    return dy * scale ** -beta - (2.0 * alpha * beta / size) * x * back


# ---------------------------------------------------------------- the ReLU and its gradient

def relu_forward(x, out=None):
    """max(x, 0), elementwise (NaN stays NaN); ``out=x`` makes it in place."""
    xp = get_array_module(x)
    return xp.maximum(x, x.dtype.type(0), out=out)


def relu_backward(dy, x):
    """The ReLU's true gradient: dx = dy where x > 0, else 0 (x its input or output)."""
    xp = get_array_module(dy)
    return xp.where(x > 0, dy, xp.zeros((), dtype=dy.dtype))


# ---------------------------------------------------------------- layouts

def reversed_axes(a):
    """``a.T`` as a new C-contiguous array (2-D: (A, C) -> (C, A); 3-D: (A, B, C) -> (C, B, A))."""
    xp = get_array_module(a)
    if a.ndim not in (2, 3):
        raise ValueError(f"reversed_axes: expected a 2-D or 3-D array, got {a.shape}")
    return xp.ascontiguousarray(a.T)


def padded_channels_last(x, ph, pw):
    """x (N, C, H, W) -> (N, H + 2*ph, W + 2*pw, C), zero in the padding: the image im2row
    and the tiles read, one run of C values a position."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xt = xp.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    xt[:, ph:ph + H, pw:pw + W] = x.transpose(0, 2, 3, 1)
    return xt


def channels_first(yt, out=None, relu=False):
    """yt (N, H, W, C) -> (N, C, H, W), C-contiguous; into ``out`` when given; with
    ``relu``, max(v, 0) of each value (NaN stays NaN)."""
    xp = get_array_module(yt)
    if out is None:
        out = xp.ascontiguousarray(yt.transpose(0, 3, 1, 2))
    else:
        out[...] = yt.transpose(0, 3, 1, 2)
    return relu_forward(out, out=out) if relu else out


def concatenate(xs, axis):
    """The inputs joined along ``axis``: y[..., offset_i + j, ...] = xs[i][..., j, ...] with
    offset_i the sizes of the inputs before i (their shapes differ only along ``axis``)."""
    return get_array_module(xs[0]).concatenate(xs, axis=axis)
