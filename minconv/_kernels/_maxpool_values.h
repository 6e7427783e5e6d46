/* Max pooling without switches (inference): the y of cpu_pool's maxpool_forward, in two
   separable passes over each output row ho_begin <= ho < ho_end of one (H, W) plane whose
   rows from row0 on lie at x (row0 = 0: the whole plane; the direct tiles pool a band of
   rows they have just computed):

       m[pw + w] = max over the window's rows h of x[h, w]      w < W, a contiguous run
       y[ho, o]  = max over j < kw of m[o*sw + j]               m is -inf outside [pw, pw + W)

   A window holding NaN gives NaN, as with switches: MC_NANMAX keeps a NaN from either
   side. Each pass is a plain loop over contiguous (or, at stride 2, interleaved) floats
   (the baseline and float64), and in AVX2 intrinsics where the CPU has it, 8 outputs
   a step, the 2- and 3-wide windows at stride 2 from two shuffles. With switches every
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
TARGET static void NAME(const T *x, ptrdiff_t row0, T *y, T *m, ptrdiff_t H, ptrdiff_t W,     \
                        int kh, int kw, int sh, int sw, int ph, int pw, ptrdiff_t ho_begin,   \
                        ptrdiff_t ho_end, ptrdiff_t Wo)                                       \
{                                                                                             \
    const ptrdiff_t span = mc_values_row_span(W, kw, sw, pw, Wo);                             \
    T *row = m + pw;                                                                          \
    for (ptrdiff_t c = 0; c < pw; c++) m[c] = (T)-INFINITY;                                   \
    for (ptrdiff_t c = pw + W; c < span; c++) m[c] = (T)-INFINITY;                            \
    for (ptrdiff_t ho = ho_begin; ho < ho_end; ho++) {                                        \
        ptrdiff_t hs, he;                                                                     \
        mc_window_rows(ho, kh, sh, ph, H, &hs, &he);                                          \
        const T *first = x + (hs - row0) * W;                                                 \
        for (ptrdiff_t w = 0; w < W; w++) row[w] = first[w];                                 \
        for (ptrdiff_t h = hs + 1; h < he; h++) {                                             \
            const T *r = x + (h - row0) * W;                                                  \
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
/* The same two passes in AVX2 intrinsics (the plain loops above vectorise only at the
   compiler's whim: built as the extension is, position-independent, the 3x3/2 pool over
   64x111x111 ran 2.5x slower than the same loops in a program). */
#define MC_VP static inline __attribute__((always_inline, target("avx2")))

/* MC_NANMAX on 8 lanes: b where b > a or b is NaN, else a */
MC_VP __m256 mc_vp_nanmax(__m256 a, __m256 b)
{
    return _mm256_blendv_ps(_mm256_max_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}

/* m[2o], m[2o+2], ... for 8 outputs from (a, b) = m[2o .. 2o+15], or the odd ones; both in
   the order (0, 1, 4, 5, 2, 3, 6, 7), which mc_vp_in_order undoes */
MC_VP __m256 mc_vp_evens(__m256 a, __m256 b) { return _mm256_shuffle_ps(a, b, 0x88); }
MC_VP __m256 mc_vp_odds(__m256 a, __m256 b) { return _mm256_shuffle_ps(a, b, 0xDD); }
MC_VP __m256 mc_vp_in_order(__m256 v)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

/* v's running maximum with the window's rows 1.. at column `at` of each row (rows of
   more than 3: the common windows unrolled, the loop only past them) */
MC_VP __m256 mc_vp_column_max(const float *first, ptrdiff_t W, ptrdiff_t rows, ptrdiff_t at)
{
    __m256 v = _mm256_loadu_ps(first + at);
    if (rows >= 2)
        v = mc_vp_nanmax(v, _mm256_loadu_ps(first + W + at));
    if (rows >= 3)
        v = mc_vp_nanmax(v, _mm256_loadu_ps(first + 2 * W + at));
    for (ptrdiff_t h = 3; h < rows; h++)
        v = mc_vp_nanmax(v, _mm256_loadu_ps(first + h * W + at));
    return v;
}

__attribute__((target("avx2")))
static void mc_maxpool_values_plane_avx2(const float *x, ptrdiff_t row0, float *y, float *m,
                                         ptrdiff_t H, ptrdiff_t W, int kh, int kw, int sh,
                                         int sw, int ph, int pw, ptrdiff_t ho_begin,
                                         ptrdiff_t ho_end, ptrdiff_t Wo)
{
    const ptrdiff_t span = mc_values_row_span(W, kw, sw, pw, Wo);
    float *row = m + pw;
    for (ptrdiff_t c = 0; c < pw; c++) m[c] = -INFINITY;
    for (ptrdiff_t c = pw + W; c < span; c++) m[c] = -INFINITY;
    for (ptrdiff_t ho = ho_begin; ho < ho_end; ho++) {
        ptrdiff_t hs, he, w = 0;
        mc_window_rows(ho, kh, sh, ph, H, &hs, &he);
        const float *first = x + (hs - row0) * W;
        /* 8 columns a step, the last step ending at the row's end (over columns already
           done: the same maxima again) rather than a scalar tail */
        for (ptrdiff_t step = 0; W >= 8 && step < W; step += 8, w = W) {
            const ptrdiff_t at = step + 8 > W ? W - 8 : step;
            _mm256_storeu_ps(row + at, mc_vp_column_max(first, W, he - hs, at));
        }
        for (; w < W; w++) {
            float v = first[w];
            for (ptrdiff_t h = hs + 1; h < he; h++) v = MC_NANMAX(v, x[(h - row0) * W + w]);
            row[w] = v;
        }
        float *out = y + ho * Wo;
        ptrdiff_t o = 0;
        if (sw == 1) {   /* (GoogLeNet's 3x3/1 pools) 8 outputs a step, a load per tap */
            for (ptrdiff_t step = 0; Wo >= 8 && step < Wo; step += 8, o = Wo) {
                const ptrdiff_t at = step + 8 > Wo ? Wo - 8 : step;
                __m256 v = _mm256_loadu_ps(m + at);
                for (int j = 1; j < kw; j++)
                    v = mc_vp_nanmax(v, _mm256_loadu_ps(m + at + j));
                _mm256_storeu_ps(out + at, v);
            }
        } else if (sw == 2 && (kw == 3 || kw == 2)) {
            /* the common windows: 8 outputs a step from two shuffles, the last step ending
               at the row's end. It reads m up to m[2*Wo + 1], one float past the span at
               most, which no output takes (the callers' m has 16 to spare). */
            for (ptrdiff_t step = 0; Wo >= 8 && step < Wo; step += 8, o = Wo) {
                const ptrdiff_t first_out = step + 8 > Wo ? Wo - 8 : step;
                const float *at = m + 2 * first_out;
                const __m256 a = _mm256_loadu_ps(at), b = _mm256_loadu_ps(at + 8);
                __m256 v = mc_vp_nanmax(mc_vp_evens(a, b), mc_vp_odds(a, b));
                if (kw == 3)
                    v = mc_vp_nanmax(v, mc_vp_evens(_mm256_loadu_ps(at + 2),
                                                    _mm256_loadu_ps(at + 10)));
                _mm256_storeu_ps(out + first_out, mc_vp_in_order(v));
            }
        }
        for (; o < Wo; o++) {
            float v = m[o * sw];
            for (int j = 1; j < kw; j++) v = MC_NANMAX(v, m[o * sw + j]);
            out[o] = v;
        }
    }
}

/* y[p] = max over i < taps of x[p + i*step] for p < count, 8 a step: a window's taps along
   one axis, NaN kept, the taps in order */
__attribute__((target("avx2")))
static void mc_vp_window_max(const float *x, float *y, ptrdiff_t count, int taps,
                             ptrdiff_t step)
{
    ptrdiff_t p = 0;
    if (taps == 3) {   /* the 3x3 windows' taps unrolled */
        const float *x1 = x + step, *x2 = x + 2 * step;
        for (; p + 8 <= count; p += 8)
            _mm256_storeu_ps(y + p, mc_vp_nanmax(mc_vp_nanmax(_mm256_loadu_ps(x + p),
                                                              _mm256_loadu_ps(x1 + p)),
                                                 _mm256_loadu_ps(x2 + p)));
    }
    for (; p + 8 <= count; p += 8) {
        __m256 v = _mm256_loadu_ps(x + p);
        for (int i = 1; i < taps; i++)
            v = mc_vp_nanmax(v, _mm256_loadu_ps(x + p + i * step));
        _mm256_storeu_ps(y + p, v);
    }
    for (; p < count; p++) {
        float v = x[p];
        for (int i = 1; i < taps; i++) v = MC_NANMAX(v, x[p + i * step]);
        y[p] = v;
    }
}

/* A whole (H, W) plane pooled at stride 1 with "same" padding (2*ph = kh - 1, 2*pw = kw -
   1: GoogLeNet's 3x3/1 pools), y the plane's size: each pass runs over the plane as one
   flat array, 8 outputs a step, so a plane narrower than a vector (GoogLeNet's 6x6) is not
   cut into rows that each leave the vectors (rows of 8 or more take the row-wise pass,
   whose last vector of a row overlaps the one before it). The vertical pass into v (H*W
   floats): rows whose window lies inside the plane in one run, the ph rows at each edge
   with their windows cut. The horizontal pass over the flat v crosses from one row into
   the next at its first pw and last pw columns, which are then redone with their windows
   cut. The taps are visited in the row-wise pass's order (the same maxima, signed zeros
   included). */
__attribute__((target("avx2")))
static void mc_maxpool_values_same_avx2(const float *x, float *y, float *v, ptrdiff_t H,
                                        ptrdiff_t W, int kh, int kw)
{
    const int ph = (kh - 1) / 2, pw = (kw - 1) / 2;
    const ptrdiff_t inner0 = ph < H ? ph : H, inner1 = H - ph > inner0 ? H - ph : inner0;
    if (inner1 > inner0)   /* v[h] = max of x[h - ph .. h + ph] */
        mc_vp_window_max(x + (inner0 - ph) * W, v + inner0 * W, (inner1 - inner0) * W, kh, W);
    for (ptrdiff_t h = 0; h < H; h++) {
        if (h >= inner0 && h < inner1)
            continue;
        const ptrdiff_t hs = h - ph < 0 ? 0 : h - ph, he = h + ph + 1 > H ? H : h + ph + 1;
        mc_vp_window_max(x + hs * W, v + h * W, W, (int)(he - hs), W);
    }
    if (H * W > 2 * pw)   /* y[p] = max of v[p - pw .. p + pw], rows run together */
        mc_vp_window_max(v, y + pw, H * W - 2 * pw, kw, 1);
    const ptrdiff_t right = W - pw > pw ? W - pw : pw;   /* the columns from here are cut */
    for (ptrdiff_t h = 0; h < H && pw > 0; h++) {
        const float *row = v + h * W;
        for (ptrdiff_t o = 0; o < W; o = o + 1 == pw ? right : o + 1) {
            const ptrdiff_t ws = o - pw < 0 ? 0 : o - pw, we = o + pw + 1 > W ? W : o + pw + 1;
            float m = row[ws];
            for (ptrdiff_t j = ws + 1; j < we; j++) m = MC_NANMAX(m, row[j]);
            y[h * W + o] = m;
        }
    }
}
#endif

/* Output rows [ho_begin, ho_end) of one float32 plane (its rows from row0 at x) with the
   instruction set of `level` (1 or more: AVX2, 0: none). */
static void mc_maxpool_values_plane(int level, const float *x, ptrdiff_t row0, float *y,
                                    float *m, ptrdiff_t H, ptrdiff_t W, int kh, int kw, int sh,
                                    int sw, int ph, int pw, ptrdiff_t ho_begin,
                                    ptrdiff_t ho_end, ptrdiff_t Wo)
{
#if MC_POOL_SIMD
    if (level >= 1) {
        mc_maxpool_values_plane_avx2(x, row0, y, m, H, W, kh, kw, sh, sw, ph, pw, ho_begin,
                                     ho_end, Wo);
        return;
    }
#endif
    mc_maxpool_values_plane_f(x, row0, y, m, H, W, kh, kw, sh, sw, ph, pw, ho_begin, ho_end, Wo);
}

/* A whole plane at stride 1 with "same" padding (mc_maxpool_values_same_avx2) where AVX2
   runs (level 1 or more): returns 1 when it is done, 0 when the caller is to pool the
   plane row by row. v holds H*W floats. */
static int mc_maxpool_values_same(int level, const float *x, float *y, float *v, ptrdiff_t H,
                                  ptrdiff_t W, int kh, int kw)
{
#if MC_POOL_SIMD
    if (level >= 1) {
        mc_maxpool_values_same_avx2(x, y, v, H, W, kh, kw);
        return 1;
    }
#endif
    return 0;
}

#endif
