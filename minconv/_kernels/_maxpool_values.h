/* Max pooling without switches (inference): the y of cpu_pool's maxpool_forward, in two
   separable passes over each output row of one (H, W) plane:

       m[pw + w] = max over the window's rows h of x[h, w]      w < W, a contiguous run
       y[ho, o]  = max over j < kw of m[o*sw + j]               m is -inf outside [pw, pw + W)

   A window holding NaN gives NaN, as with switches: MC_NANMAX keeps a NaN from either
   side. Each pass is a plain loop over contiguous (or, at stride 2, interleaved) floats,
   which compilers vectorise, compiled once for AVX-512 and once for AVX2 (the caller
   picks by the tiles' instruction set) and once for the baseline. With switches every
   tap is a masked, at stride 2 permuted, load followed by compares and blends of the
   values and the indices: SqueezeNet's 3x3/2 pool over 64x111x111 took 0.55 ms. */
#ifndef MINCONV_MAXPOOL_VALUES_H
#define MINCONV_MAXPOOL_VALUES_H

#include <math.h>
#include <stddef.h>

#include "_maxpool.h"

/* b where b is larger or NaN, else a: the maximum, NaN if either is NaN (one condition,
   no branch: the scalar tails of the loops would mispredict on every other value) */
#define MC_NANMAX(a, b) (((b) > (a)) | ((b) != (b)) ? (b) : (a))

/* The columns of the padded row m that the windows of an output row cover. */
static inline ptrdiff_t mc_values_row_span(ptrdiff_t W, int kw, int sw, int pw, ptrdiff_t Wo)
{
    const ptrdiff_t covered = (Wo - 1) * sw + kw, padded = pw + W;
    return covered > padded ? covered : padded;
}

#define MC_MAXPOOL_VALUES_PLANE(NAME, T, TARGET)                                              \
TARGET static void NAME(const T *x, T *y, T *m, ptrdiff_t H, ptrdiff_t W, int kh, int kw,     \
                        int sh, int sw, int ph, int pw, ptrdiff_t Ho, ptrdiff_t Wo)           \
{                                                                                             \
    const ptrdiff_t span = mc_values_row_span(W, kw, sw, pw, Wo);                             \
    T *row = m + pw;                                                                          \
    for (ptrdiff_t c = 0; c < pw; c++) m[c] = (T)-INFINITY;                                   \
    for (ptrdiff_t c = pw + W; c < span; c++) m[c] = (T)-INFINITY;                            \
    for (ptrdiff_t ho = 0; ho < Ho; ho++) {                                                   \
        ptrdiff_t hs, he;                                                                     \
        mc_window_rows(ho, kh, sh, ph, H, &hs, &he);                                          \
        const T *first = x + hs * W;                                                          \
        for (ptrdiff_t w = 0; w < W; w++) row[w] = first[w];                                  \
        for (ptrdiff_t h = hs + 1; h < he; h++) {                                             \
            const T *r = x + h * W;                                                           \
            for (ptrdiff_t w = 0; w < W; w++) row[w] = MC_NANMAX(row[w], r[w]);               \
        }                                                                                     \
        T *out = y + ho * Wo;                                                                 \
        if (sw == 2 && kw == 3) {   /* the common 3x3/2 window, unrolled */                   \
            for (ptrdiff_t o = 0; o < Wo; o++) {                                              \
                const T v = MC_NANMAX(m[2 * o], m[2 * o + 1]);                                \
                out[o] = MC_NANMAX(v, m[2 * o + 2]);                                          \
            }                                                                                 \
        } else if (sw == 2 && kw == 2) {                                                      \
            for (ptrdiff_t o = 0; o < Wo; o++) out[o] = MC_NANMAX(m[2 * o], m[2 * o + 1]);    \
        } else {                                                                              \
            for (ptrdiff_t o = 0; o < Wo; o++) {                                              \
                T v = m[o * sw];                                                              \
                for (int j = 1; j < kw; j++) v = MC_NANMAX(v, m[o * sw + j]);                 \
                out[o] = v;                                                                   \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

MC_MAXPOOL_VALUES_PLANE(mc_maxpool_values_plane_f, float, )
MC_MAXPOOL_VALUES_PLANE(mc_maxpool_values_plane_d, double, )
#if MC_POOL_SIMD
MC_MAXPOOL_VALUES_PLANE(mc_maxpool_values_plane_avx512, float, __attribute__((target("avx512f"))))
MC_MAXPOOL_VALUES_PLANE(mc_maxpool_values_plane_avx2, float, __attribute__((target("avx2"))))
#endif

/* One float32 plane with the instruction set of `level` (2: AVX-512, 1: AVX2, 0: none). */
static void mc_maxpool_values_plane(int level, const float *x, float *y, float *m,
                                    ptrdiff_t H, ptrdiff_t W, int kh, int kw, int sh, int sw,
                                    int ph, int pw, ptrdiff_t Ho, ptrdiff_t Wo)
{
#if MC_POOL_SIMD
    if (level >= 2) {
        mc_maxpool_values_plane_avx512(x, y, m, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
        return;
    }
    if (level == 1) {
        mc_maxpool_values_plane_avx2(x, y, m, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
        return;
    }
#endif
    mc_maxpool_values_plane_f(x, y, m, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
}

#endif
