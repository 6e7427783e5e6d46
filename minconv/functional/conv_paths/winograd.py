"""The Winograd path: a 3x3 convolution at stride 1 as 16 matrix products, F(2x2, 3x3).

Each 2x2 block of outputs comes from a 4x4 tile of the input; in the transformed
domain the sum over input channels is one product per element k of the 4x4
(:mod:`minconv._kernels.reference_winograd` has the matrices):

    U = winograd_weights(W)           (16, C, F)   G W[f, c] G^T
    V = winograd_tiles(x, padding)    (16, P, C)   B^T d B, P = N * ceil(Ho/2) * ceil(Wo/2)
    M[k] = V[k] @ U[k]                (16, P, F)   the cores share the 16 products
    y = winograd_output(M, ...)       (N, F, Ho, Wo)   A^T M_p A per tile, cropped, + b

4 outputs take 16 C multiply-adds instead of 36 C: 2.25x fewer, less the tiles
that overhang an odd map (a 7x7 map is covered by 16 tiles of 4 outputs: 1.72x).

The data gradient at stride 1 is itself a 3x3 convolution, of dy padded by 2 - p
with the filters flipped and their channel axes swapped (``transposed=True``), so
it runs the same products (locked weights, :mod:`..prepared`, are transformed once).
The weight gradient runs them backwards:

    dM = winograd_grad_tiles(dy)      (16, P, F)   A dY A^T for each tile's 2x2 block
    dU[k] = sum over chunks of V[k]^T @ dM[k]      (16, C, F)
    dW = winograd_weight_grad(dU)     (F, C, 3, 3) G^T dU G

Windows the path does not serve (not 3x3, stride or dilation above 1, padding above
2) run as :mod:`.per_image` does.
"""
from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from ..prepared import derived
from . import ConvPath, output_hw, per_image, rectified

# The batch goes through in chunks whose tiles and products (V and M) take about this
# much (within the workspace): at batch 8, 128->128 on 28x28 ran in 9.0 ms so, 11.9 ms in
# 16 MB chunks and 20.3 ms in the 8 MB chunks of the other paths (thinner products).
CHUNK_BYTES = 32 * 2 ** 20


def serves(W_shape, win):
    """True for 3x3 filters at stride 1 and dilation 1 with padding of at most 2 (so that
    dx, a convolution padded by 2 - p, is one too)."""
    return (tuple(W_shape[2:]) == (3, 3) and tuple(win.stride) == (1, 1)
            and tuple(win.dilation) == (1, 1) and max(win.padding) <= 2)


def _chunks(N, bytes_per_image, workspace):
    """Slices of the batch whose tiles and products take about :data:`CHUNK_BYTES`."""
    budget = min(CHUNK_BYTES, runtime.workspace_limit() if workspace is None else int(workspace))
    step = max(1, min(N, budget // max(1, bytes_per_image)))
    return [slice(n, min(n + step, N)) for n in range(0, N, step)]


def _scratch_pair(xp, dtype, K, P, C, F):
    """(16, P, C) and (16, P, F) arrays in this thread's scratch memory: every call reuses
    the same block instead of a fresh pair each time."""
    both = runtime.scratch(xp, dtype, (K * P * (C + F),))
    return both[:K * P * C].reshape(K, P, C), both[K * P * C:].reshape(K, P, F)


def _convolve(x, U, b, padding, out_hw, workspace):
    """The convolution of x (N, C_in, H, W) by transformed filters U (16, C_in, C_out),
    chunk by chunk of the batch: (N, C_out, *out_hw)."""
    xp, kernels = get_array_module(x), kernels_for(x)
    N, C = x.shape[:2]
    F = U.shape[2]
    Ho, Wo = out_hw
    tiles = ((Ho + 1) // 2) * ((Wo + 1) // 2)
    y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
    for part in _chunks(N, 16 * (C + F) * tiles * x.dtype.itemsize, workspace):
        V, M = _scratch_pair(xp, x.dtype, 16, (part.stop - part.start) * tiles, C, F)
        kernels.winograd_tiles(x[part], padding, out=V)                   # (16, P, C)

        def multiply(ks):
            xp.matmul(V[ks], U[ks], out=M[ks])                            # (P, C) @ (C, F)

        runtime.map_shares(multiply, 16, xp)
        y[part] = kernels.winograd_output(M, part.stop - part.start, Ho, Wo, b)
    return y


def forward(x, W, b, win, workspace=None, relu=False):
    if not serves(W.shape, win):
        return per_image.forward(x, W, b, win, workspace, relu)
    U = derived(W, "winograd", kernels_for(x).winograd_weights)           # (16, C, F)
    return rectified(_convolve(x, U, b, win.padding, output_hw(x.shape, W.shape, win),
                               workspace), relu)


def data_grad(dy, W, x_shape, win, workspace=None):
    if not serves(W.shape, win):
        return per_image.data_grad(dy, W, x_shape, win, workspace)
    U = derived(W, "winograd_transposed",                                 # (16, F, C)
                lambda W: kernels_for(dy).winograd_weights(W, transposed=True))
    flipped_padding = (2 - win.padding[0], 2 - win.padding[1])
    return _convolve(dy, U, None, flipped_padding, tuple(x_shape[2:]), workspace)


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    if not serves(W_shape, win):
        return per_image.weight_grad(dy, x, W_shape, win, workspace, with_bias)
    xp, kernels = get_array_module(x), kernels_for(x)
    N, F, Ho, Wo = dy.shape
    C = W_shape[1]
    dU = xp.empty((16, C, F), dtype=x.dtype)
    tiles = ((Ho + 1) // 2) * ((Wo + 1) // 2)
    for part in _chunks(N, 16 * (C + F) * tiles * x.dtype.itemsize, workspace):
        V, dM = _scratch_pair(xp, x.dtype, 16, (part.stop - part.start) * tiles, C, F)
        kernels.winograd_tiles(x[part], win.padding, out=V)               # (16, P, C)
        kernels.winograd_grad_tiles(dy[part], out=dM)                     # (16, P, F)

        def correlate(ks, first=part.start == 0):
            if first:                                                     # (C, P) @ (P, F)
                xp.matmul(V[ks].transpose(0, 2, 1), dM[ks], out=dU[ks])
            else:
                dU[ks] += xp.matmul(V[ks].transpose(0, 2, 1), dM[ks])

        runtime.map_shares(correlate, 16, xp)
    dW = kernels.winograd_weight_grad(dU)
    return dW, (dy.sum(axis=(0, 2, 3)) if with_bias else None)


PATH = ConvPath("winograd", forward, data_grad, weight_grad)
