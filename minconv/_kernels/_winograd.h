/* The Winograd F(2x2, 3x3) transforms for cpu_winograd.pyx (float and double), on
   channels-last data so that the inner loop of each runs along contiguous channels
   with no branch in it (the compiler vectorises it):

     mc_wg_tiles    V[k, p, c] = (B^T d B)[k],  d the 4x4 tile of p in the padded
                    channels-last image xt (N, Hp, Wp, C); rows or columns past its
                    edge read from a row of zeros
     mc_wg_output   yt[n, 2i + a, 2j + b, f] = (A^T M_p A)[a, b] + bias[f]; outputs
                    past the map's edge go to the calling thread's scratch row
     mc_wg_weights  U[k] = (G g G^T)[k] for one row of filters g (the filters of one
                    input channel, or for C^T the flipped ones of one output
                    channel), read straight from W (F, C, 3, 3): MC_WG_LANES
                    filters at a time, their taps gathered into a small block
                    that the transform then reads lane by lane
     mc_wg_grad_tiles   dM[k, p, f] = (A dY A^T)[k], dY the 2x2 block of tile p in dy
                    channels last (N, Ho, Wo, F); past the map's edge, zeros
     mc_wg_weight_grad  the nine tap planes (G^T dU G)[i, j] from the 16 planes of dU

   Each takes one range of tiles (or of plane elements), so the callers share them
   among threads. See reference_winograd.py for the matrices. */
#ifndef MINCONV_WINOGRAD_H
#define MINCONV_WINOGRAD_H

#include <stddef.h>

#define MC_WG_LANES 16   /* filters transformed at once (one 64-byte row of float32) */

/* The pixels of tile p's size x size block (4x4 input tile or 2x2 output block, whose
   top-left pixel is (2i, 2j) of image n) in an N x H x W map: at[size*a + b] is the
   index (n*H + h)*W + w of pixel (2i + a, 2j + b), or -1 past the map's edge. */
static inline void mc_wg_block(ptrdiff_t p, ptrdiff_t th, ptrdiff_t tw, ptrdiff_t H,
                               ptrdiff_t W, int size, ptrdiff_t *at)
{
    const ptrdiff_t n = p / (th * tw), i = (p / tw) % th, j = p % tw;
    for (int a = 0; a < size; a++)
        for (int b = 0; b < size; b++) {
            const ptrdiff_t h = 2 * i + a, w = 2 * j + b;
            at[size * a + b] = (h < H && w < W) ? (n * H + h) * W + w : -1;
        }
}

#define MC_WG_KERNELS(T, S)                                                               \
static void mc_wg_tiles_##S(const T *xt, const T *zeros, ptrdiff_t Hp, ptrdiff_t Wp,      \
        ptrdiff_t C, ptrdiff_t th, ptrdiff_t tw, ptrdiff_t P, ptrdiff_t p_start,          \
        ptrdiff_t p_stop, T *V)                                                           \
{                                                                                         \
    const ptrdiff_t K = P * C;               /* from V[k, p, :] to V[k + 1, p, :] */      \
    for (ptrdiff_t p = p_start; p < p_stop; p++) {                                        \
        ptrdiff_t at[16];                                                                 \
        const T *d[16];                                                                   \
        mc_wg_block(p, th, tw, Hp, Wp, 4, at);                                            \
        for (int q = 0; q < 16; q++)                                                      \
            d[q] = at[q] < 0 ? zeros : xt + at[q] * C;                                    \
        const T *restrict d0 = d[0], *restrict d1 = d[1], *restrict d2 = d[2];            \
        const T *restrict d3 = d[3], *restrict d4 = d[4], *restrict d5 = d[5];            \
        const T *restrict d6 = d[6], *restrict d7 = d[7], *restrict d8 = d[8];            \
        const T *restrict d9 = d[9], *restrict d10 = d[10], *restrict d11 = d[11];        \
        const T *restrict d12 = d[12], *restrict d13 = d[13], *restrict d14 = d[14];      \
        const T *restrict d15 = d[15];                                                    \
        T *restrict v = V + p * C;                                                        \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t c = 0; c < C; c++) {                                               \
            /* B^T d: rows r0..r3 of the tile, column b = 0..3 */                         \
            const T r00 = d0[c] - d8[c], r01 = d1[c] - d9[c];                             \
            const T r02 = d2[c] - d10[c], r03 = d3[c] - d11[c];                           \
            const T r10 = d4[c] + d8[c], r11 = d5[c] + d9[c];                             \
            const T r12 = d6[c] + d10[c], r13 = d7[c] + d11[c];                           \
            const T r20 = d8[c] - d4[c], r21 = d9[c] - d5[c];                             \
            const T r22 = d10[c] - d6[c], r23 = d11[c] - d7[c];                           \
            const T r30 = d4[c] - d12[c], r31 = d5[c] - d13[c];                           \
            const T r32 = d6[c] - d14[c], r33 = d7[c] - d15[c];                           \
            /* (B^T d) B, row by row */                                                   \
            v[0 * K + c] = r00 - r02;  v[1 * K + c] = r01 + r02;                          \
            v[2 * K + c] = r02 - r01;  v[3 * K + c] = r01 - r03;                          \
            v[4 * K + c] = r10 - r12;  v[5 * K + c] = r11 + r12;                          \
            v[6 * K + c] = r12 - r11;  v[7 * K + c] = r11 - r13;                          \
            v[8 * K + c] = r20 - r22;  v[9 * K + c] = r21 + r22;                          \
            v[10 * K + c] = r22 - r21; v[11 * K + c] = r21 - r23;                         \
            v[12 * K + c] = r30 - r32; v[13 * K + c] = r31 + r32;                         \
            v[14 * K + c] = r32 - r31; v[15 * K + c] = r31 - r33;                         \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
static void mc_wg_output_##S(const T *M, const T *bias, T *sink, ptrdiff_t Ho,            \
        ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t th, ptrdiff_t tw, ptrdiff_t P,               \
        ptrdiff_t p_start, ptrdiff_t p_stop, T *yt)                                       \
{                                                                                         \
    const ptrdiff_t K = P * F;               /* from M[k, p, :] to M[k + 1, p, :] */      \
    for (ptrdiff_t p = p_start; p < p_stop; p++) {                                        \
        ptrdiff_t at[4];                                                                  \
        T *y[4];                                                                          \
        mc_wg_block(p, th, tw, Ho, Wo, 2, at);                                            \
        for (int q = 0; q < 4; q++)                                                       \
            y[q] = at[q] < 0 ? sink : yt + at[q] * F;                                     \
        const T *restrict m = M + p * F, *restrict b = bias;                              \
        T *restrict y00 = y[0], *restrict y01 = y[1];                                     \
        T *restrict y10 = y[2], *restrict y11 = y[3];                                     \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t f = 0; f < F; f++) {                                               \
            /* A^T m, column by column: rows t0 and t1 */                                 \
            const T t00 = m[0 * K + f] + m[4 * K + f] + m[8 * K + f];                     \
            const T t01 = m[1 * K + f] + m[5 * K + f] + m[9 * K + f];                     \
            const T t02 = m[2 * K + f] + m[6 * K + f] + m[10 * K + f];                    \
            const T t03 = m[3 * K + f] + m[7 * K + f] + m[11 * K + f];                    \
            const T t10 = m[4 * K + f] - m[8 * K + f] - m[12 * K + f];                    \
            const T t11 = m[5 * K + f] - m[9 * K + f] - m[13 * K + f];                    \
            const T t12 = m[6 * K + f] - m[10 * K + f] - m[14 * K + f];                   \
            const T t13 = m[7 * K + f] - m[11 * K + f] - m[15 * K + f];                   \
            /* (A^T m) A */                                                               \
            y00[f] = t00 + t01 + t02 + b[f];                                              \
            y01[f] = t01 - t02 - t03 + b[f];                                              \
            y10[f] = t10 + t11 + t12 + b[f];                                              \
            y11[f] = t11 - t12 - t13 + b[f];                                              \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
static void mc_wg_weights_##S(const T *W, ptrdiff_t lane_step, int flipped,                \
        ptrdiff_t lanes, ptrdiff_t plane, T *U)                                           \
{                                                                                         \
    /* one row of filters: lane j's nine taps at W + j * lane_step (flipped: backwards), \
       its 16 values at U[k * plane + j] */                                               \
    const T h = (T)0.5;                                                                   \
    T g[9][MC_WG_LANES];                                                                  \
    for (ptrdiff_t j0 = 0; j0 < lanes; j0 += MC_WG_LANES) {                               \
        const ptrdiff_t n = lanes - j0 < MC_WG_LANES ? lanes - j0 : MC_WG_LANES;          \
        for (ptrdiff_t j = 0; j < n; j++)        /* the lanes' taps, tap by tap */        \
            for (int t = 0; t < 9; t++)                                                   \
                g[t][j] = W[(j0 + j) * lane_step + (flipped ? 8 - t : t)];                \
        T *restrict u = U + j0;                                                           \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            /* G g: rows 0..3, columns 0..2 (g's row i holds taps 3i..3i+2) */            \
            const T a0 = g[0][j], a1 = g[1][j], a2 = g[2][j];                             \
            const T b0 = (g[0][j] + g[3][j] + g[6][j]) * h;                               \
            const T b1 = (g[1][j] + g[4][j] + g[7][j]) * h;                               \
            const T b2 = (g[2][j] + g[5][j] + g[8][j]) * h;                               \
            const T c0 = (g[0][j] - g[3][j] + g[6][j]) * h;                               \
            const T c1 = (g[1][j] - g[4][j] + g[7][j]) * h;                               \
            const T c2 = (g[2][j] - g[5][j] + g[8][j]) * h;                               \
            const T e0 = g[6][j], e1 = g[7][j], e2 = g[8][j];                             \
            /* (G g) G^T, row by row */                                                   \
            u[0 * plane + j] = a0;  u[1 * plane + j] = (a0 + a1 + a2) * h;                \
            u[2 * plane + j] = (a0 - a1 + a2) * h;  u[3 * plane + j] = a2;                \
            u[4 * plane + j] = b0;  u[5 * plane + j] = (b0 + b1 + b2) * h;                \
            u[6 * plane + j] = (b0 - b1 + b2) * h;  u[7 * plane + j] = b2;                \
            u[8 * plane + j] = c0;  u[9 * plane + j] = (c0 + c1 + c2) * h;                \
            u[10 * plane + j] = (c0 - c1 + c2) * h; u[11 * plane + j] = c2;               \
            u[12 * plane + j] = e0; u[13 * plane + j] = (e0 + e1 + e2) * h;               \
            u[14 * plane + j] = (e0 - e1 + e2) * h; u[15 * plane + j] = e2;               \
        }                                                                                 \
    }                                                                                     \
}

#define MC_WG_GRAD_KERNELS(T, S)                                                          \
static void mc_wg_grad_tiles_##S(const T *dyt, const T *zeros, ptrdiff_t Ho, ptrdiff_t Wo, \
        ptrdiff_t F, ptrdiff_t th, ptrdiff_t tw, ptrdiff_t P, ptrdiff_t p_start,          \
        ptrdiff_t p_stop, T *dM)                                                          \
{                                                                                         \
    const ptrdiff_t K = P * F;               /* from dM[k, p, :] to dM[k + 1, p, :] */    \
    for (ptrdiff_t p = p_start; p < p_stop; p++) {                                        \
        ptrdiff_t at[4];                                                                  \
        const T *g[4];                                                                    \
        mc_wg_block(p, th, tw, Ho, Wo, 2, at);                                            \
        for (int q = 0; q < 4; q++)                                                       \
            g[q] = at[q] < 0 ? zeros : dyt + at[q] * F;                                   \
        const T *restrict g00 = g[0], *restrict g01 = g[1];                               \
        const T *restrict g10 = g[2], *restrict g11 = g[3];                               \
        T *restrict m = dM + p * F;                                                       \
        _Pragma("omp simd")                                                               \
        for (ptrdiff_t f = 0; f < F; f++) {                                               \
            /* A dY: rows 0..3, columns 0..1 */                                           \
            const T a0 = g00[f], a1 = g01[f];                                             \
            const T b0 = g00[f] + g10[f], b1 = g01[f] + g11[f];                           \
            const T c0 = g00[f] - g10[f], c1 = g01[f] - g11[f];                           \
            const T e0 = -g10[f], e1 = -g11[f];                                           \
            /* (A dY) A^T, row by row */                                                  \
            m[0 * K + f] = a0;  m[1 * K + f] = a0 + a1;                                   \
            m[2 * K + f] = a0 - a1;  m[3 * K + f] = -a1;                                  \
            m[4 * K + f] = b0;  m[5 * K + f] = b0 + b1;                                   \
            m[6 * K + f] = b0 - b1;  m[7 * K + f] = -b1;                                  \
            m[8 * K + f] = c0;  m[9 * K + f] = c0 + c1;                                   \
            m[10 * K + f] = c0 - c1; m[11 * K + f] = -c1;                                 \
            m[12 * K + f] = e0; m[13 * K + f] = e0 + e1;                                  \
            m[14 * K + f] = e0 - e1; m[15 * K + f] = -e1;                                 \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
static void mc_wg_weight_grad_##S(const T *dU, ptrdiff_t plane, ptrdiff_t start,           \
        ptrdiff_t stop, T *taps)                                                          \
{                                                                                         \
    /* taps[3i + j] = (G^T dU G)[i, j], plane by plane */                                 \
    const T h = (T)0.5;                                                                   \
    const T *restrict u = dU;                                                             \
    T *restrict o = taps;                                                                 \
    _Pragma("omp simd")                                                                   \
    for (ptrdiff_t e = start; e < stop; e++) {                                            \
        T s[3][4];                           /* G^T u: rows 0..2, columns 0..3 */         \
        for (int c = 0; c < 4; c++) {                                                     \
            const T u0 = u[c * plane + e], u1 = u[(4 + c) * plane + e];                   \
            const T u2 = u[(8 + c) * plane + e], u3 = u[(12 + c) * plane + e];            \
            s[0][c] = u0 + (u1 + u2) * h;                                                 \
            s[1][c] = (u1 - u2) * h;                                                      \
            s[2][c] = (u1 + u2) * h + u3;                                                 \
        }                                                                                 \
        for (int i = 0; i < 3; i++) {        /* (G^T u) G */                              \
            o[(3 * i + 0) * plane + e] = s[i][0] + (s[i][1] + s[i][2]) * h;               \
            o[(3 * i + 1) * plane + e] = (s[i][1] - s[i][2]) * h;                         \
            o[(3 * i + 2) * plane + e] = (s[i][1] + s[i][2]) * h + s[i][3];               \
        }                                                                                 \
    }                                                                                     \
}

MC_WG_KERNELS(float, f32)
MC_WG_KERNELS(double, f64)
MC_WG_GRAD_KERNELS(float, f32)
MC_WG_GRAD_KERNELS(double, f64)

#endif
