/* The products of im2row's rows, computed without forming the rows.

   For a padded channels-last image xt (N, Hp, Wp, C) the row of output position
   m = (n, ho, wo) holds the taps

       rows[m, (i*kw + j)*C + c] = xt[n, ho*sh + i*dh, wo*sw + j*dw, c]

   and the two products a convolution needs are

       y   = rows @ w        (M, F)   w  : (kh*kw*C, F)     forward, and dx with flipped w
       dwt = rows^T @ dy     (kh*kw*C, F)   dy : (M, F)     weight gradient

   im2row writes every tap out (kh*kw copies of each input value) and a GEMM
   reads them back. Here each product is a register tile instead: a few output
   positions times up to 64 output channels held in AVX-512 registers, the
   taps broadcast straight from xt, so the taps are read once from cache and
   never written. On zfnet_mini's 14x14 and 7x7 layers this runs at about the
   speed of the largest GEMMs, where im2row + GEMM reaches about two thirds.

   Float32 on x86-64 CPUs with AVX-512F, chosen at run time (mc_fused_available);
   _im2row_matmul_avx2.h holds the same tiles for AVX2+FMA, and cpu_tiles.pyx
   picks one of the two (or none: im2row and a GEMM). The functions are
   single-threaded: the caller splits the batch among the cores. */
#ifndef MINCONV_IM2ROW_MATMUL_H
#define MINCONV_IM2ROW_MATMUL_H

#include <stddef.h>
#include <stdlib.h>

#include "_blocks.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define MC_HAVE_FUSED 1
#include <immintrin.h>
#define MC_TARGET __attribute__((target("avx512f,fma")))
#define MC_TILE static inline __attribute__((always_inline, target("avx512f,fma")))
#else
#define MC_HAVE_FUSED 0
#endif

/* Register tiles: TILE_ROWS x NV vectors of 16 channels, NV <= 4. With the NV
   loaded vectors and one broadcast that leaves at most 29 of the 32 registers. */
#define MC_MAX_ROWS 8
#define MC_MAX_VECTORS 4
#define MC_WGRAD_BLOCK 256    /* positions whose dy rows stay in cache while dwt is swept */

static int mc_tile_rows(int vectors) { return vectors == 4 ? 6 : 8; }

/* How many of the remaining 16-channel vectors the next tile takes: 4, except
   that 6 splits as 3 + 3 (F = 96) so that no tile is left with a narrow remainder. */
static int mc_tile_vectors(int remaining) {
    return remaining == 6 ? 3 : (remaining >= 4 ? 4 : remaining);
}

#if MC_HAVE_FUSED

static int mc_fused_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}

/* The lanes of vector v that hold channels (F may not be a multiple of 16). */
MC_TILE __mmask16 mc_lanes(int channels_left) {
    return channels_left >= 16 ? (__mmask16)0xFFFF
                               : (__mmask16)((1u << (channels_left > 0 ? channels_left : 0)) - 1);
}

/* y[r, :] = (y[r, :] if accumulate, else bias) + sum over taps (i, j) and channels c < C of
   xt[base[r] + i*row_step + j*tap_step + c] * w[(i*kw + j)*w_tap_step + c*ldw, :]
   for ROWS positions (their offsets in xt: base) and NV*16 channels starting at w.
   FULL: all NV vectors hold channels, so the inner loop reads w without masks. */
MC_TILE void mc_matmul_tile_body(const float *xt, const ptrdiff_t *base, const int ROWS,
                                 const int NV, const int FULL, const float *w, ptrdiff_t ldw,
                                 ptrdiff_t w_tap_step, int kh, int kw, ptrdiff_t C,
                                 ptrdiff_t row_step, ptrdiff_t tap_step, const float *bias,
                                 int accumulate, float *y, ptrdiff_t ldy, int channels)
{
    __m512 acc[MC_MAX_ROWS][MC_MAX_VECTORS];
    __mmask16 lanes[MC_MAX_VECTORS];
    #pragma GCC unroll 4
    for (int v = 0; v < NV; v++) lanes[v] = mc_lanes(channels - 16 * v);
    #pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) {
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(lanes[v], y + r * ldy + 16 * v)
                      : bias ? _mm512_maskz_loadu_ps(lanes[v], bias + 16 * v) : _mm512_setzero_ps();
    }
    for (int i = 0; i < kh; i++) {
        for (int j = 0; j < kw; j++) {
            const float *wk = w + ((ptrdiff_t)i * kw + j) * w_tap_step;
            const float *tap[MC_MAX_ROWS];
            #pragma GCC unroll 8
            for (int r = 0; r < ROWS; r++) tap[r] = xt + base[r] + i * row_step + j * tap_step;
            for (ptrdiff_t c = 0; c < C; c++, wk += ldw) {
                __m512 wv[MC_MAX_VECTORS];
                #pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    wv[v] = FULL ? _mm512_loadu_ps(wk + 16 * v)
                                 : _mm512_maskz_loadu_ps(lanes[v], wk + 16 * v);
                #pragma GCC unroll 8
                for (int r = 0; r < ROWS; r++) {
                    const __m512 x = _mm512_set1_ps(tap[r][c]);
                    #pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(x, wv[v], acc[r][v]);
                }
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) {
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(y + r * ldy + 16 * v, lanes[v], acc[r][v]);
    }
}

MC_TILE void mc_matmul_tile(const float *xt, const ptrdiff_t *base, const int ROWS, const int NV,
                            const float *w, ptrdiff_t ldw, ptrdiff_t w_tap_step, int kh, int kw,
                            ptrdiff_t C, ptrdiff_t row_step, ptrdiff_t tap_step,
                            const float *bias, int accumulate, float *y, ptrdiff_t ldy,
                            int channels)
{
    if (channels >= 16 * NV)
        mc_matmul_tile_body(xt, base, ROWS, NV, 1, w, ldw, w_tap_step, kh, kw, C, row_step,
                            tap_step, bias, accumulate, y, ldy, channels);
    else
        mc_matmul_tile_body(xt, base, ROWS, NV, 0, w, ldw, w_tap_step, kh, kw, C, row_step,
                            tap_step, bias, accumulate, y, ldy, channels);
}

/* dwt[t, :] += sum over the block's positions m of xt[pos[m] + tap_offset[t]] * dy[m, :]
   for TAPS consecutive taps and NV*16 channels starting at dy and dwt; FULL as above. */
MC_TILE void mc_t_matmul_tile_body(const float *xt, const ptrdiff_t *tap_offset, const int TAPS,
                                   const int NV, const int FULL, const ptrdiff_t *pos,
                                   ptrdiff_t positions, const float *dy, ptrdiff_t ldy,
                                   float *dwt, ptrdiff_t ldw, int channels)
{
    __m512 acc[MC_MAX_ROWS][MC_MAX_VECTORS];
    __mmask16 lanes[MC_MAX_VECTORS];
    const float *tap[MC_MAX_ROWS];
    #pragma GCC unroll 4
    for (int v = 0; v < NV; v++) lanes[v] = mc_lanes(channels - 16 * v);
    #pragma GCC unroll 8
    for (int t = 0; t < TAPS; t++) {
        tap[t] = xt + tap_offset[t];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[t][v] = _mm512_maskz_loadu_ps(lanes[v], dwt + t * ldw + 16 * v);
    }
    for (ptrdiff_t m = 0; m < positions; m++) {
        const float *d = dy + m * ldy;
        const ptrdiff_t at = pos[m];
        __m512 dv[MC_MAX_VECTORS];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            dv[v] = FULL ? _mm512_loadu_ps(d + 16 * v) : _mm512_maskz_loadu_ps(lanes[v], d + 16 * v);
        #pragma GCC unroll 8
        for (int t = 0; t < TAPS; t++) {
            const __m512 x = _mm512_set1_ps(tap[t][at]);
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[t][v] = _mm512_fmadd_ps(x, dv[v], acc[t][v]);
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < TAPS; t++) {
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(dwt + t * ldw + 16 * v, lanes[v], acc[t][v]);
    }
}

MC_TILE void mc_t_matmul_tile(const float *xt, const ptrdiff_t *tap_offset, const int TAPS,
                              const int NV, const ptrdiff_t *pos, ptrdiff_t positions,
                              const float *dy, ptrdiff_t ldy, float *dwt, ptrdiff_t ldw,
                              int channels)
{
    if (channels >= 16 * NV)
        mc_t_matmul_tile_body(xt, tap_offset, TAPS, NV, 1, pos, positions, dy, ldy, dwt, ldw,
                              channels);
    else
        mc_t_matmul_tile_body(xt, tap_offset, TAPS, NV, 0, pos, positions, dy, ldy, dwt, ldw,
                              channels);
}

/* One function per (vectors, rows) pair, so that each tile is compiled with
   constant sizes: its accumulators then live in registers. */
#define MC_MATMUL_CASE(NV, R) case R: mc_matmul_tile(xt, base, R, NV, w, ldw, w_tap_step, kh, \
        kw, C, row_step, tap_step, bias, accumulate, y, ldy, channels); break;
#define MC_MATMUL_VECTORS(NV) case NV: switch (rows) { \
        MC_MATMUL_CASE(NV, 1) MC_MATMUL_CASE(NV, 2) MC_MATMUL_CASE(NV, 3) MC_MATMUL_CASE(NV, 4) \
        MC_MATMUL_CASE(NV, 5) MC_MATMUL_CASE(NV, 6) MC_MATMUL_CASE(NV, 7) MC_MATMUL_CASE(NV, 8) } break;

static MC_TARGET void mc_matmul_tile_of(int vectors, int rows, const float *xt, const ptrdiff_t *base,
        const float *w, ptrdiff_t ldw, ptrdiff_t w_tap_step, int kh, int kw, ptrdiff_t C,
        ptrdiff_t row_step, ptrdiff_t tap_step, const float *bias, int accumulate, float *y,
        ptrdiff_t ldy, int channels)
{
    switch (vectors) { MC_MATMUL_VECTORS(1) MC_MATMUL_VECTORS(2) MC_MATMUL_VECTORS(3) MC_MATMUL_VECTORS(4) }
}

#define MC_T_MATMUL_CASE(NV, T) case T: mc_t_matmul_tile(xt, tap_offset, T, NV, pos, positions, \
        dy, ldy, dwt, ldw, channels); break;
#define MC_T_MATMUL_VECTORS(NV) case NV: switch (taps) { \
        MC_T_MATMUL_CASE(NV, 1) MC_T_MATMUL_CASE(NV, 2) MC_T_MATMUL_CASE(NV, 3) MC_T_MATMUL_CASE(NV, 4) \
        MC_T_MATMUL_CASE(NV, 5) MC_T_MATMUL_CASE(NV, 6) MC_T_MATMUL_CASE(NV, 7) MC_T_MATMUL_CASE(NV, 8) } break;

static MC_TARGET void mc_t_matmul_tile_of(int vectors, int taps, const float *xt,
        const ptrdiff_t *tap_offset, const ptrdiff_t *pos, ptrdiff_t positions, const float *dy,
        ptrdiff_t ldy, float *dwt, ptrdiff_t ldw, int channels)
{
    switch (vectors) { MC_T_MATMUL_VECTORS(1) MC_T_MATMUL_VECTORS(2) MC_T_MATMUL_VECTORS(3) MC_T_MATMUL_VECTORS(4) }
}

/* Offsets in xt of the first taps of output positions m0 .. m0 + count - 1: one
   division for the first, then a step through (n, ho, wo), since a tile's few
   positions would otherwise cost three 64-bit divisions each. */
static void mc_position_offsets(ptrdiff_t m0, ptrdiff_t count, ptrdiff_t Ho, ptrdiff_t Wo,
                                ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t C, int sh, int sw,
                                ptrdiff_t *offsets)
{
    ptrdiff_t n = m0 / (Ho * Wo), ho = (m0 % (Ho * Wo)) / Wo, wo = m0 % Wo;
    for (ptrdiff_t r = 0; r < count; r++) {
        offsets[r] = ((n * Hp + ho * sh) * Wp + wo * sw) * C;
        if (++wo == Wo) {
            wo = 0;
            if (++ho == Ho) {
                ho = 0;
                n++;
            }
        }
    }
}

/* Input channels a chunk of the weights holds: its (kh*kw*chunk, 64) block of weights
   stays within MC_CHUNK_BYTES of the core's L2 while the positions of a block sweep
   it. Wider weights would be read from L3 once per tile of positions: ResNet's
   512-channel layers ran about 20% slower so. */
#define MC_CHUNK_BYTES (160 * 1024)
#define MC_POSITION_BLOCK 192   /* positions whose partial sums stay in L2 across chunks */

static ptrdiff_t mc_channel_chunk(int kh, int kw, ptrdiff_t C)
{
    ptrdiff_t chunk = MC_CHUNK_BYTES / ((ptrdiff_t)kh * kw * 64 * (ptrdiff_t)sizeof(float));
    chunk -= chunk % 16;
    if (chunk < 16)
        chunk = 16;
    return C <= chunk + chunk / 2 ? C : chunk;   /* no chunk left narrow */
}

/* y[:, f_begin:f_end] (N*Ho*Wo, F) = im2row(xt) @ w[:, f_begin:f_end] (w: (kh*kw*C, F))
   + bias (F, or NULL); f_begin a multiple of 16. */
static MC_TARGET void mc_im2row_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *w, ptrdiff_t F, ptrdiff_t f_begin, ptrdiff_t f_end, const float *bias,
        float *y)
{
    const ptrdiff_t M = N * Ho * Wo, chunk = mc_channel_chunk(kh, kw, C);
    const ptrdiff_t row_step = (ptrdiff_t)dh * Wp * C, tap_step = (ptrdiff_t)dw * C;
    const int vector_end = (int)((f_end + 15) / 16);
    ptrdiff_t base[MC_MAX_ROWS];
    /* channel blocks outside, then blocks of positions, then chunks of input channels:
       a chunk's weights stay in cache while the block's tiles sum over them */
    for (int v0 = (int)(f_begin / 16); v0 < vector_end; ) {
        const int vectors = mc_tile_vectors(vector_end - v0), tile = mc_tile_rows(vectors);
        const int channels = (int)(f_end - 16 * v0);
        for (ptrdiff_t b0 = 0, b1; b0 < M; b0 = b1) {
            b1 = mc_block_end(b0, M, MC_POSITION_BLOCK);
            for (ptrdiff_t c0 = 0; c0 < C; c0 += chunk) {
                const ptrdiff_t cc = C - c0 < chunk ? C - c0 : chunk;
                for (ptrdiff_t m0 = b0; m0 < b1; m0 += tile) {
                    const int rows = (int)(b1 - m0 < tile ? b1 - m0 : tile);
                    mc_position_offsets(m0, rows, Ho, Wo, Hp, Wp, C, sh, sw, base);
                    mc_matmul_tile_of(vectors, rows, xt + c0, base, w + c0 * F + 16 * v0, F,
                                      C * F, kh, kw, cc, row_step, tap_step,
                                      bias ? bias + 16 * v0 : NULL, c0 > 0, y + m0 * F + 16 * v0,
                                      F, channels);
                }
            }
        }
        v0 += vectors;
    }
}

/* dwt (kh*kw*C, F) = im2row(xt)^T @ dy (N*Ho*Wo, F). Returns -1 when out of memory. */
static MC_TARGET int mc_im2row_t_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *dy, ptrdiff_t F, float *dwt)
{
    const ptrdiff_t M = N * Ho * Wo, K = (ptrdiff_t)kh * kw * C;
    const int vector_count = (int)((F + 15) / 16);
    ptrdiff_t *tap_offset = (ptrdiff_t *)malloc(sizeof(ptrdiff_t) *
                                                (K + MC_WGRAD_BLOCK + MC_WGRAD_BLOCK / 2));
    if (tap_offset == NULL)
        return -1;
    ptrdiff_t *pos = tap_offset + K;
    for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++)
            for (ptrdiff_t c = 0; c < C; c++)
                tap_offset[((ptrdiff_t)i * kw + j) * C + c] = ((ptrdiff_t)i * dh * Wp + (ptrdiff_t)j * dw) * C + c;
    for (ptrdiff_t t = 0; t < K * F; t++)
        dwt[t] = 0.0f;
    for (ptrdiff_t m0 = 0, positions; m0 < M; m0 += positions) {
        positions = mc_block_end(m0, M, MC_WGRAD_BLOCK) - m0;
        mc_position_offsets(m0, positions, Ho, Wo, Hp, Wp, C, sh, sw, pos);
        for (int v0 = 0; v0 < vector_count; ) {
            const int vectors = mc_tile_vectors(vector_count - v0), tile = mc_tile_rows(vectors);
            for (ptrdiff_t t0 = 0; t0 < K; t0 += tile) {
                const int taps = (int)(K - t0 < tile ? K - t0 : tile);
                mc_t_matmul_tile_of(vectors, taps, xt, tap_offset + t0, pos, positions,
                                    dy + m0 * F + 16 * v0, F, dwt + t0 * F + 16 * v0, F,
                                    (int)(F - 16 * v0));
            }
            v0 += vectors;
        }
    }
    free(tap_offset);
    return 0;
}

#include "_direct_avx512.h"

#else  /* no AVX-512 path on this compiler or architecture */

static int mc_fused_available(void) { return 0; }

static void mc_im2row_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *w, ptrdiff_t F, ptrdiff_t f_begin, ptrdiff_t f_end, const float *bias,
        float *y) { }

static int mc_im2row_t_matmul(const float *xt, ptrdiff_t N, ptrdiff_t Hp, ptrdiff_t Wp,
        ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw, ptrdiff_t Ho, ptrdiff_t Wo,
        const float *dy, ptrdiff_t F, float *dwt) { return -1; }

static void mc_direct_row(const float *xq, ptrdiff_t C, ptrdiff_t Hp,
        ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols, ptrdiff_t n,
        ptrdiff_t ho, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t block,
        const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0) { }

static void mc_conv2d_direct_wgrad(const float *xp, ptrdiff_t N, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t Wp, int kh, int kw, int sh, int dh, int dw, ptrdiff_t Ho,
        ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt) { }

#endif
#endif
