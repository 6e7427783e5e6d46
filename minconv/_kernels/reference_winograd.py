"""The readable specification of the Winograd kernels: F(2x2, 3x3) (Lavin & Gray, 2016).

A 3x3 convolution at stride 1 makes each 2x2 block of outputs from a 4x4 tile of the
padded input d (tiles overlap by 2). With

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

the block is   Y = A^T [ sum_c (G g_fc G^T) * (B^T d_c B) ] A   (* elementwise, 4x4),

so the sum over channels becomes 16 matrix products, one per element k of the 4x4:

    U[k] (C, F)   the filters,          U[k][c, f] = (G W[f, c] G^T)[k]
    V[k] (P, C)   the input tiles,      V[k][p, c] = (B^T d_{p,c} B)[k]
    M[k] = V[k] @ U[k]   (P, F)         then each tile's 2x2 block is A^T M_p A.

16 products of C multiply-adds make 4 outputs where the direct sum needs 9 * 4: 2.25x
fewer, paid for by the transforms (additions only) and a little float rounding.

The weight gradient runs the same products backwards: with Y = A^T M A, dM = A dY A^T
for each tile's 2x2 block of dy (zero where it overhangs the map); with U = G g G^T,

    dU[k] = V[k]^T @ dM[k]   (C, F)         dW[f, c] = G^T dU_{c,f} G   (3x3).
Tile p = (n*th + i)*tw + j covers outputs (2i..2i+1, 2j..2j+1) of image n; th, tw =
ceil(Ho/2), ceil(Wo/2), and a block reaching past (Ho, Wo) is cropped.

These run on NumPy and CuPy arrays alike; the Cython twins are in ``cpu_winograd``.
"""
from ..backend import get_array_module
from .reference import _written_into


def winograd_tile_counts(Ho, Wo):
    """(th, tw): the 2x2 output blocks that cover an Ho x Wo map."""
    return (Ho + 1) // 2, (Wo + 1) // 2


def winograd_weights(W, transposed=False):
    """U (16, C, F) from W (F, C, 3, 3): U[k][c, f] = (G W[f, c] G^T)[k].

    ``transposed`` gives the filters of C^T as a convolution instead: W flipped in
    space with its two channel axes swapped, W'[c, f] = W[f, c, ::-1, ::-1], as
    U' (16, F, C) (the data gradient at stride 1 convolves dy with them).
    """
    if transposed:
        W = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    g = W.transpose(1, 0, 2, 3)                                       # (C, F, 3, 3)
    half = W.dtype.type(0.5)
    rows = (g[..., 0, :], (g[..., 0, :] + g[..., 1, :] + g[..., 2, :]) * half,
            (g[..., 0, :] - g[..., 1, :] + g[..., 2, :]) * half, g[..., 2, :])   # G g
    xp = get_array_module(W)
    return xp.stack([u for r in rows                                  # (G g) G^T
                     for u in (r[..., 0], (r[..., 0] + r[..., 1] + r[..., 2]) * half,
                               (r[..., 0] - r[..., 1] + r[..., 2]) * half, r[..., 2])])


def winograd_tiles(x, padding, out=None):
    """V (16, P, C) from x (N, C, H, W) padded by ``padding`` (ph, pw): V[k][p, c] =
    (B^T d B)[k] for the 4x4 tile d of channel c under output block p; into ``out``
    when given."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    ph, pw = padding
    th, tw = winograd_tile_counts(H + 2 * ph - 2, W + 2 * pw - 2)
    padded = xp.zeros((N, C, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)  # every tile inside
    padded[:, :, ph:ph + H, pw:pw + W] = x
    d = [[padded[:, :, a:a + 2 * th:2, b:b + 2 * tw:2] for b in range(4)]
         for a in range(4)]                                           # d[a][b]: (N, C, th, tw)
    t = [(d[0][b] - d[2][b], d[1][b] + d[2][b], d[2][b] - d[1][b], d[1][b] - d[3][b])
         for b in range(4)]                                           # B^T d, by column
    V = xp.stack([v for r in range(4)                                 # (B^T d) B
                  for v in (t[0][r] - t[2][r], t[1][r] + t[2][r], t[2][r] - t[1][r],
                            t[1][r] - t[3][r])])                      # (16, N, C, th, tw)
    return _written_into(V.transpose(0, 1, 3, 4, 2).reshape(16, N * th * tw, C), out)


def winograd_output(M, N, Ho, Wo, bias=None):
    """y (N, F, Ho, Wo) from the products M (16, P, F): each tile's block A^T M_p A,
    cropped to the map, plus ``bias`` (F,)."""
    xp = get_array_module(M)
    th, tw = winograd_tile_counts(Ho, Wo)
    F = M.shape[2]
    m = M.reshape(4, 4, N, th, tw, F)
    t = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])                      # A^T m: (4, N, th, tw, F)
    y = xp.empty((N, th, 2, tw, 2, F), dtype=M.dtype)
    for a in range(2):
        y[:, :, a, :, 0] = t[a][0] + t[a][1] + t[a][2]                # (A^T m) A
        y[:, :, a, :, 1] = t[a][1] - t[a][2] - t[a][3]
    y = y.reshape(N, 2 * th, 2 * tw, F)[:, :Ho, :Wo]
    if bias is not None:
        y = y + bias
    return xp.ascontiguousarray(y.transpose(0, 3, 1, 2))


def winograd_grad_tiles(dy, out=None):
    """dM (16, P, F) from dy (N, F, Ho, Wo): dM[k][p, f] = (A dY A^T)[k] for the 2x2 block
    dY of tile p (zero past the map's edge); into ``out`` when given."""
    xp = get_array_module(dy)
    N, F, Ho, Wo = dy.shape
    th, tw = winograd_tile_counts(Ho, Wo)
    padded = xp.zeros((N, F, 2 * th, 2 * tw), dtype=dy.dtype)
    padded[:, :, :Ho, :Wo] = dy
    g = [[padded[:, :, a::2, b::2] for b in range(2)] for a in range(2)]  # (N, F, th, tw)
    t = [(g[0][b], g[0][b] + g[1][b], g[0][b] - g[1][b], -g[1][b]) for b in range(2)]  # A dY
    dM = xp.stack([v for r in range(4)                                # (A dY) A^T
                   for v in (t[0][r], t[0][r] + t[1][r], t[0][r] - t[1][r], -t[1][r])])
    return _written_into(dM.transpose(0, 1, 3, 4, 2).reshape(16, N * th * tw, F), out)


def winograd_weight_grad(dU):
    """dW (F, C, 3, 3) from dU (16, C, F): dW[f, c] = G^T dU_{c,f} G."""
    xp = get_array_module(dU)
    u = dU.reshape(4, 4, *dU.shape[1:])                               # u[row][col]: (C, F)
    half = dU.dtype.type(0.5)
    rows = (u[0] + (u[1] + u[2]) * half, (u[1] - u[2]) * half,
            (u[1] + u[2]) * half + u[3])                              # G^T u: rows of 4
    taps = xp.stack([v for r in rows                                  # (G^T u) G
                     for v in (r[0] + (r[1] + r[2]) * half, (r[1] - r[2]) * half,
                               (r[1] + r[2]) * half + r[3])])         # (9, C, F)
    return xp.ascontiguousarray(taps.transpose(2, 1, 0).reshape(dU.shape[2], dU.shape[1], 3, 3))
