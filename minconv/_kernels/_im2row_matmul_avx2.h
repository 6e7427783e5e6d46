/* The tiles of _im2row_matmul.h for CPUs with AVX2 and FMA but no AVX-512.

   The same four products, computed the same way (see _im2row_matmul.h for the
   equations): im2row's rows times w and rows^T times dy without forming the
   rows, and the channels-first convolution of few input channels and its
   weight gradient. What changes is the register file: 16 registers of 8
   floats instead of 32 of 16, so the tiles are smaller (6 positions x 16
   channels for the products, 6 filters x 16 positions for the direct tile),
   and there are no mask registers: a partial vector is read and written with
   maskload/maskstore. The operand the inner loop streams (w, or dy) is first
   copied into panels of 16 channels, each a contiguous (rows, 16) block padded
   with zeros: every inner-loop load is then a whole vector of the next cache
   line, where the columns of a (K, F) matrix would take one line from each
   row F floats apart (ZFNet's conv3 ran 1.6x slower so than on panels).

   Compiled for AVX2+FMA function by function, chosen at run time
   (mc_avx2_available); single-threaded like the AVX-512 tiles. */
#ifndef MINCONV_IM2ROW_MATMUL_AVX2_H
#define MINCONV_IM2ROW_MATMUL_AVX2_H

#include "_im2row_matmul.h"
#include <string.h>

#if MC_HAVE_FUSED

#define MC2_TARGET __attribute__((target("avx2,fma")))
#define MC2_TILE static inline __attribute__((always_inline, target("avx2,fma")))

/* Product tiles: rows x NV vectors of 8 channels, NV <= 2: 12 accumulators,
   2 loaded vectors and one broadcast of the 16 registers. */
#define MC2_MAX_ROWS 8
#define MC2_MAX_VECTORS 2
static int mc2_tile_rows(int vectors) { return vectors == 2 ? 6 : 8; }

static int mc_avx2_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* The first n lanes of a vector (all for n >= 8, none for n <= 0). */
MC2_TILE __m256i mc2_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

MC2_TILE __m256 mc2_load_part(const float *p, int n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mc2_mask(n));
}

MC2_TILE void mc2_store_part(float *p, int n, __m256 v) {
    if (n >= 8)
        _mm256_storeu_ps(p, v);
    else if (n > 0)
        _mm256_maskstore_ps(p, mc2_mask(n), v);
}

MC2_TILE float mc2_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y[r, :] = bias + sum over taps of xt[base[r] + i*row_step + j*tap_step + c] * w[tap, :]
   for ROWS positions and NV*8 channels; w's rows (ldw) hold whole vectors. */
MC2_TILE void mc2_matmul_tile(const float *xt, const ptrdiff_t *base, const int ROWS, const int NV,
                              const float *w, ptrdiff_t ldw, int kh, int kw, ptrdiff_t C,
                              ptrdiff_t row_step, ptrdiff_t tap_step, const float *bias,
                              float *y, ptrdiff_t ldy, int channels)
{
    __m256 acc[MC2_MAX_ROWS][MC2_MAX_VECTORS];
    #pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) {
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            acc[r][v] = bias ? mc2_load_part(bias + 8 * v, channels - 8 * v) : _mm256_setzero_ps();
    }
    const float *wk = w;
    for (int i = 0; i < kh; i++) {
        for (int j = 0; j < kw; j++) {
            const float *tap[MC2_MAX_ROWS];
            #pragma GCC unroll 8
            for (int r = 0; r < ROWS; r++) tap[r] = xt + base[r] + i * row_step + j * tap_step;
            for (ptrdiff_t c = 0; c < C; c++, wk += ldw) {
                __m256 wv[MC2_MAX_VECTORS];
                #pragma GCC unroll 2
                for (int v = 0; v < NV; v++) wv[v] = _mm256_loadu_ps(wk + 8 * v);
                #pragma GCC unroll 8
                for (int r = 0; r < ROWS; r++) {
                    const __m256 x = _mm256_broadcast_ss(tap[r] + c);
                    #pragma GCC unroll 2
                    for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(x, wv[v], acc[r][v]);
                }
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) {
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++) mc2_store_part(y + r * ldy + 8 * v, channels - 8 * v, acc[r][v]);
    }
}

/* dwt[t, :] += sum over the block's positions m of xt[pos[m] + tap_offset[t]] * dy[m, :]
   for TAPS taps and NV*8 channels; dy's rows (ldy) hold whole vectors. */
MC2_TILE void mc2_t_matmul_tile(const float *xt, const ptrdiff_t *tap_offset, const int TAPS,
                                const int NV, const ptrdiff_t *pos, ptrdiff_t positions,
                                const float *dy, ptrdiff_t ldy, float *dwt, ptrdiff_t ldw,
                                int channels)
{
    __m256 acc[MC2_MAX_ROWS][MC2_MAX_VECTORS];
    const float *tap[MC2_MAX_ROWS];
    #pragma GCC unroll 8
    for (int t = 0; t < TAPS; t++) {
        tap[t] = xt + tap_offset[t];
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[t][v] = mc2_load_part(dwt + t * ldw + 8 * v, channels - 8 * v);
    }
    for (ptrdiff_t m = 0; m < positions; m++) {
        const float *d = dy + m * ldy;
        const ptrdiff_t at = pos[m];
        __m256 dv[MC2_MAX_VECTORS];
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++) dv[v] = _mm256_loadu_ps(d + 8 * v);
        #pragma GCC unroll 8
        for (int t = 0; t < TAPS; t++) {
            const __m256 x = _mm256_broadcast_ss(tap[t] + at);
            #pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[t][v] = _mm256_fmadd_ps(x, dv[v], acc[t][v]);
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < TAPS; t++) {
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++) mc2_store_part(dwt + t * ldw + 8 * v, channels - 8 * v, acc[t][v]);
    }
}

#define MC2_MATMUL_CASE(NV, R) case R: mc2_matmul_tile(xt, base, R, NV, w, ldw, kh, kw, C, \
        row_step, tap_step, bias, y, ldy, channels); break;
#define MC2_MATMUL_VECTORS(NV) case NV: switch (rows) { \
        MC2_MATMUL_CASE(NV, 1) MC2_MATMUL_CASE(NV, 2) MC2_MATMUL_CASE(NV, 3) MC2_MATMUL_CASE(NV, 4) \
        MC2_MATMUL_CASE(NV, 5) MC2_MATMUL_CASE(NV, 6) MC2_MATMUL_CASE(NV, 7) MC2_MATMUL_CASE(NV, 8) } break;

static MC2_TARGET void mc2_matmul_tile_of(int vectors, int rows, const float *xt, const ptrdiff_t *base,
        const float *w, ptrdiff_t ldw, int kh, int kw, ptrdiff_t C, ptrdiff_t row_step,
        ptrdiff_t tap_step, const float *bias, float *y, ptrdiff_t ldy, int channels)
{
    switch (vectors) { MC2_MATMUL_VECTORS(1) MC2_MATMUL_VECTORS(2) }
}

#define MC2_T_MATMUL_CASE(NV, T) case T: mc2_t_matmul_tile(xt, tap_offset, T, NV, pos, positions, \
        dy, ldy, dwt, ldw, channels); break;
#define MC2_T_MATMUL_VECTORS(NV) case NV: switch (taps) { \
        MC2_T_MATMUL_CASE(NV, 1) MC2_T_MATMUL_CASE(NV, 2) MC2_T_MATMUL_CASE(NV, 3) MC2_T_MATMUL_CASE(NV, 4) \
        MC2_T_MATMUL_CASE(NV, 5) MC2_T_MATMUL_CASE(NV, 6) MC2_T_MATMUL_CASE(NV, 7) MC2_T_MATMUL_CASE(NV, 8) } break;

static MC2_TARGET void mc2_t_matmul_tile_of(int vectors, int taps, const float *xt,
        const ptrdiff_t *tap_offset, const ptrdiff_t *pos, ptrdiff_t positions, const float *dy,
        ptrdiff_t ldy, float *dwt, ptrdiff_t ldw, int channels)
{
    switch (vectors) { MC2_T_MATMUL_VECTORS(1) MC2_T_MATMUL_VECTORS(2) }
}

/* positions of a weight-gradient block: (1024, 16) of dy is 64 KB, in L2, and each
   dwt tile is loaded and stored 4x less often than with the AVX-512 tiles' 256 */
#define MC2_WGRAD_BLOCK 1024
#define MC2_PANEL 16   /* channels of a panel: the two vectors of the widest tile */

/* columns [f_begin, f_end) of a (rows, F) as panels: panel q holds columns f_begin + 16q ..
   + 15 as a contiguous (rows, 16) block at q*rows*16, zero past f_end. NULL when out of
   memory. */
static float *mc2_panels(const float *a, ptrdiff_t rows, ptrdiff_t F, ptrdiff_t f_begin,
                         ptrdiff_t f_end)
{
    const ptrdiff_t panels = (f_end - f_begin + MC2_PANEL - 1) / MC2_PANEL;
    float *p = (float *)malloc(sizeof(float) * (size_t)(panels * rows * MC2_PANEL + 1));
    if (p == NULL)
        return NULL;
    for (ptrdiff_t q = 0; q < panels; q++) {
        const ptrdiff_t f0 = f_begin + q * MC2_PANEL;
        const ptrdiff_t width = f_end - f0 < MC2_PANEL ? f_end - f0 : MC2_PANEL;
        float *block = p + q * rows * MC2_PANEL;
        for (ptrdiff_t r = 0; r < rows; r++) {
            memcpy(block + r * MC2_PANEL, a + r * F + f0, sizeof(float) * (size_t)width);
            memset(block + r * MC2_PANEL + width, 0, sizeof(float) * (size_t)(MC2_PANEL - width));
        }
    }
    return p;
}

/* y[:, f_begin:f_end] (N*Ho*Wo, F) = im2row(xt) @ w[:, f_begin:f_end] (w: (kh*kw*C, F))
   + bias (F, or NULL); f_begin a multiple of 16. Returns -1 when out of memory. */
static MC2_TARGET int mc_avx2_im2row_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *w, ptrdiff_t F, ptrdiff_t f_begin, ptrdiff_t f_end, const float *bias,
        float *y)
{
    const ptrdiff_t M = N * Ho * Wo, K = (ptrdiff_t)kh * kw * C;
    const ptrdiff_t row_step = (ptrdiff_t)dh * Wp * C, tap_step = (ptrdiff_t)dw * C;
    float *panels = mc2_panels(w, K, F, f_begin, f_end);
    if (panels == NULL)
        return -1;
    ptrdiff_t base[MC2_MAX_ROWS];
    /* panels outside, positions inside: one panel of weights stays in cache */
    for (ptrdiff_t f0 = f_begin; f0 < f_end; f0 += MC2_PANEL) {
        const int vectors = f_end - f0 > 8 ? 2 : 1, tile = mc2_tile_rows(vectors);
        const float *panel = panels + (f0 - f_begin) * K;
        for (ptrdiff_t m0 = 0; m0 < M; m0 += tile) {
            const int rows = (int)(M - m0 < tile ? M - m0 : tile);
            mc_position_offsets(m0, rows, Ho, Wo, Hp, Wp, C, sh, sw, base);
            mc2_matmul_tile_of(vectors, rows, xt, base, panel, MC2_PANEL, kh, kw, C, row_step,
                               tap_step, bias ? bias + f0 : NULL, y + m0 * F + f0, F,
                               (int)(f_end - f0));
        }
    }
    free(panels);
    return 0;
}

/* dwt (kh*kw*C, F) = im2row(xt)^T @ dy (N*Ho*Wo, F). Returns -1 when out of memory. */
static MC2_TARGET int mc_avx2_im2row_t_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp,
        ptrdiff_t Wp, ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho,
        ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt)
{
    const ptrdiff_t M = N * Ho * Wo, K = (ptrdiff_t)kh * kw * C;
    float *panels = mc2_panels(dy, M, F, 0, F);
    if (panels == NULL)
        return -1;
    ptrdiff_t *tap_offset = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) *
                                                (K + MC2_WGRAD_BLOCK + MC2_WGRAD_BLOCK / 2));
    if (tap_offset == NULL) {
        free(panels);
        return -1;
    }
    ptrdiff_t *pos = tap_offset + K;
    for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++)
            for (ptrdiff_t c = 0; c < C; c++)
                tap_offset[((ptrdiff_t)i * kw + j) * C + c] = ((ptrdiff_t)i * dh * Wp + (ptrdiff_t)j * dw) * C + c;
    for (ptrdiff_t t = 0; t < K * F; t++)
        dwt[t] = 0.0f;
    for (ptrdiff_t m0 = 0, positions; m0 < M; m0 += positions) {
        positions = mc_block_end(m0, M, MC2_WGRAD_BLOCK) - m0;
        mc_position_offsets(m0, positions, Ho, Wo, Hp, Wp, C, sh, sw, pos);
        for (ptrdiff_t f0 = 0; f0 < F; f0 += MC2_PANEL) {
            const int vectors = F - f0 > 8 ? 2 : 1, tile = mc2_tile_rows(vectors);
            const float *panel = panels + f0 * M + m0 * MC2_PANEL;
            for (ptrdiff_t t0 = 0; t0 < K; t0 += tile) {
                const int taps = (int)(K - t0 < tile ? K - t0 : tile);
                mc2_t_matmul_tile_of(vectors, taps, xt, tap_offset + t0, pos, positions,
                                     panel, MC2_PANEL, dwt + t0 * F + f0, F, (int)(F - f0));
            }
        }
    }
    free(tap_offset);
    free(panels);
    return 0;
}

#include "_direct_avx2.h"
#include "_direct_filters_avx2.h"

#else  /* no AVX2 path on this compiler or architecture */

static int mc_avx2_available(void) { return 0; }

static int mc_avx2_im2row_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *w, ptrdiff_t F, ptrdiff_t f_begin, ptrdiff_t f_end, const float *bias,
        float *y) { return -1; }

static int mc_avx2_im2row_t_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *dy, ptrdiff_t F, float *dwt) { return -1; }

static void mc_avx2_direct_row(const float *xq, ptrdiff_t C, ptrdiff_t Hp,
        ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols, ptrdiff_t n,
        ptrdiff_t ho, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t block,
        const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0) { }

static void mc_avx2_conv2d_direct_wgrad(const float *xp, ptrdiff_t N, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t Wp, int kh, int kw, int sh, int dh, int dw, ptrdiff_t Ho,
        ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt) { }

static void mc_avx2_direct_fv_rows(const float *xq, ptrdiff_t C, ptrdiff_t Hp,
        ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols, ptrdiff_t n,
        ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t block,
        const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0) { }

#endif  /* MC_HAVE_FUSED */
#endif
