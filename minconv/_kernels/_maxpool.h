/* Max pooling of one float32 (H, W) plane with its switches, a vector of output
   columns at a time: the twins, for AVX-512 and for AVX2, of cpu_pool.pyx's scalar
   loop (the same rules, see there).

   For output row ho and a vector of output columns o, every tap (h, w = o*sw - pw + j)
   of the window is loaded for all lanes at once (a plain load at stride 1; at stride 2
   two loads and the even elements picked; a gather otherwise); taps outside the plane,
   and lanes past the row's end, read -inf, which never wins. Then, lane by lane,

       win   = v > best  or  v is NaN           (the first maximum, row-major; NaN wins)
       best  = win ? v : best
       where = win ? h*W + w : where

   The scalar loop pays a call and its bounds per tap and row of windows; on the small
   maps of GoogLeNet and SqueezeNet at batch 1 (rows of 7 to 56 outputs) that cost more
   than the comparisons. */
#ifndef MINCONV_MAXPOOL_H
#define MINCONV_MAXPOOL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* The input rows [hs, he) that output row ho's windows cover, clipped to the plane. */
static inline void mc_window_rows(ptrdiff_t ho, int kh, int sh, int ph, ptrdiff_t H,
                                  ptrdiff_t *hs, ptrdiff_t *he)
{
    const ptrdiff_t first = ho * sh - ph, end = first + kh;
    *hs = first < 0 ? 0 : first;
    *he = end > H ? H : end;
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define MC_POOL_SIMD 1
#include <immintrin.h>

__attribute__((target("avx512f")))
static void mc_maxpool_plane_avx512(const float *x, float *y, int32_t *switches,
                                    ptrdiff_t H, ptrdiff_t W, int kh, int kw, int sh, int sw,
                                    int ph, int pw, ptrdiff_t Ho, ptrdiff_t Wo)
{
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i zero = _mm512_setzero_si512(), width = _mm512_set1_epi32((int)W);
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                            16, 18, 20, 22, 24, 26, 28, 30);
    const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
    for (ptrdiff_t ho = 0; ho < Ho; ho++) {
        ptrdiff_t hs, he;
        mc_window_rows(ho, kh, sh, ph, H, &hs, &he);
        for (ptrdiff_t o0 = 0; o0 < Wo; o0 += 16) {
            const __mmask16 outputs = Wo - o0 >= 16 ? (__mmask16)0xFFFF
                                                    : (__mmask16)((1u << (Wo - o0)) - 1);
            /* each lane's window starts at column w0 = o*sw - pw */
            const __m512i w0 = _mm512_sub_epi32(
                _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)o0), lane),
                                   _mm512_set1_epi32(sw)),
                _mm512_set1_epi32(pw));
            __m512 best = minus_inf;
            __m512i where = _mm512_add_epi32(_mm512_set1_epi32((int)(hs * W)),
                                             _mm512_max_epi32(w0, zero));
            for (ptrdiff_t h = hs; h < he; h++) {
                const float *row = x + h * W;
                const __m512i row_start = _mm512_set1_epi32((int)(h * W));
                for (int j = 0; j < kw; j++) {
                    const __m512i w = _mm512_add_epi32(w0, _mm512_set1_epi32(j));
                    const __mmask16 inside = outputs & _mm512_cmpge_epi32_mask(w, zero)
                                             & _mm512_cmplt_epi32_mask(w, width);
                    __m512 v;
                    if (sw == 1) {
                        v = _mm512_mask_loadu_ps(minus_inf, inside, row + (o0 - pw + j));
                    } else if (sw == 2) {   /* columns c .. c+31, of which the even ones */
                        const ptrdiff_t c = 2 * o0 - pw + j;
                        const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32((int)c), lane);
                        const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(16));
                        const __m512 a = _mm512_maskz_loadu_ps(
                            _mm512_cmpge_epi32_mask(lo, zero) & _mm512_cmplt_epi32_mask(lo, width),
                            row + c);
                        const __m512 b = _mm512_maskz_loadu_ps(
                            _mm512_cmpge_epi32_mask(hi, zero) & _mm512_cmplt_epi32_mask(hi, width),
                            row + c + 16);
                        v = _mm512_mask_mov_ps(minus_inf, inside,
                                               _mm512_permutex2var_ps(a, evens, b));
                    } else {
                        v = _mm512_mask_i32gather_ps(minus_inf, inside, w, row, 4);
                    }
                    const __mmask16 win = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)
                                          | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                    best = _mm512_mask_mov_ps(best, win, v);
                    where = _mm512_mask_mov_epi32(where, win, _mm512_add_epi32(row_start, w));
                }
            }
            _mm512_mask_storeu_ps(y + ho * Wo + o0, outputs, best);
            _mm512_mask_storeu_epi32(switches + ho * Wo + o0, outputs, where);
        }
    }
}

/* The even lanes of a then b: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs in order. */
__attribute__((target("avx2")))
static inline __m256 mc_even_lanes(__m256 a, __m256 b)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
        _MM_SHUFFLE(3, 1, 2, 0)));
}

__attribute__((target("avx2")))
static void mc_maxpool_plane_avx2(const float *x, float *y, int32_t *switches,
                                  ptrdiff_t H, ptrdiff_t W, int kh, int kw, int sh, int sw,
                                  int ph, int pw, ptrdiff_t Ho, ptrdiff_t Wo)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i minus_one = _mm256_set1_epi32(-1), width = _mm256_set1_epi32((int)W);
    const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
    for (ptrdiff_t ho = 0; ho < Ho; ho++) {
        ptrdiff_t hs, he;
        mc_window_rows(ho, kh, sh, ph, H, &hs, &he);
        for (ptrdiff_t o0 = 0; o0 < Wo; o0 += 8) {
            const __m256i outputs = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(Wo - o0)), lane);
            const __m256i w0 = _mm256_sub_epi32(
                _mm256_mullo_epi32(_mm256_add_epi32(_mm256_set1_epi32((int)o0), lane),
                                   _mm256_set1_epi32(sw)),
                _mm256_set1_epi32(pw));
            __m256 best = minus_inf;
            __m256i where = _mm256_add_epi32(_mm256_set1_epi32((int)(hs * W)),
                                             _mm256_max_epi32(w0, _mm256_setzero_si256()));
            for (ptrdiff_t h = hs; h < he; h++) {
                const float *row = x + h * W;
                const __m256i row_start = _mm256_set1_epi32((int)(h * W));
                for (int j = 0; j < kw; j++) {
                    const __m256i w = _mm256_add_epi32(w0, _mm256_set1_epi32(j));
                    const __m256i inside = _mm256_and_si256(
                        outputs, _mm256_and_si256(_mm256_cmpgt_epi32(w, minus_one),
                                                  _mm256_cmpgt_epi32(width, w)));
                    /* the columns the loads touch, all inside the row: plain loads (AMD's
                       masked loads are slow) */
                    const ptrdiff_t c = sw * o0 - pw + j;
                    const int plain = o0 + 8 <= Wo && c >= 0 && c + (sw == 2 ? 16 : 8) <= W;
                    __m256 v;
                    if (sw == 1 && plain)
                        v = _mm256_loadu_ps(row + c);
                    else if (sw == 1)  /* masked-off lanes read 0: put -inf there */
                        v = _mm256_blendv_ps(minus_inf, _mm256_maskload_ps(row + c, inside),
                                             _mm256_castsi256_ps(inside));
                    else if (sw == 2 && plain)
                        v = mc_even_lanes(_mm256_loadu_ps(row + c), _mm256_loadu_ps(row + c + 8));
                    else if (sw == 2) {   /* columns c .. c+15, of which the even ones */
                        const __m256i lo = _mm256_add_epi32(_mm256_set1_epi32((int)c), lane);
                        const __m256i hi = _mm256_add_epi32(lo, _mm256_set1_epi32(8));
                        const __m256 a = _mm256_maskload_ps(row + c, _mm256_and_si256(
                            _mm256_cmpgt_epi32(lo, minus_one), _mm256_cmpgt_epi32(width, lo)));
                        const __m256 b = _mm256_maskload_ps(row + c + 8, _mm256_and_si256(
                            _mm256_cmpgt_epi32(hi, minus_one), _mm256_cmpgt_epi32(width, hi)));
                        v = _mm256_blendv_ps(minus_inf, mc_even_lanes(a, b),
                                             _mm256_castsi256_ps(inside));
                    } else {
                        v = _mm256_mask_i32gather_ps(minus_inf, row, w,
                                                     _mm256_castsi256_ps(inside), 4);
                    }
                    const __m256 win = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                                    _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                    best = _mm256_blendv_ps(best, v, win);
                    where = _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(where),
                        _mm256_castsi256_ps(_mm256_add_epi32(row_start, w)), win));
                }
            }
            if (o0 + 8 <= Wo) {   /* AMD's masked stores are slower still */
                _mm256_storeu_ps(y + ho * Wo + o0, best);
                _mm256_storeu_si256((__m256i *)(switches + ho * Wo + o0), where);
            } else {
                _mm256_maskstore_ps(y + ho * Wo + o0, outputs, best);
                _mm256_maskstore_epi32((int *)(switches + ho * Wo + o0), outputs, where);
            }
        }
    }
}

/* 2 with AVX-512F, 1 with AVX2, 0 otherwise: the best this CPU runs. */
static int mc_maxpool_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

#else
#define MC_POOL_SIMD 0
static int mc_maxpool_level(void) { return 0; }
#endif

/* One plane with the instruction set of `level` (2: AVX-512, 1: AVX2); returns 0 when
   that level is not compiled in, and the caller runs the scalar loop. */
static int mc_maxpool_plane(int level, const float *x, float *y, int32_t *switches,
                            ptrdiff_t H, ptrdiff_t W, int kh, int kw, int sh, int sw, int ph,
                            int pw, ptrdiff_t Ho, ptrdiff_t Wo)
{
#if MC_POOL_SIMD
    if (level >= 2) {
        mc_maxpool_plane_avx512(x, y, switches, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
        return 1;
    }
    if (level == 1) {
        mc_maxpool_plane_avx2(x, y, switches, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
        return 1;
    }
#endif
    return 0;
}

#endif
