/* A 1x1 convolution of one image as register tiles, channels first:

       y[f, p] = bias[f] + sum over c < C of w[f, c] * x[c, p]  (+ z[f, p])   then max(y, 0) with relu

   for output channels f < F and the positions p in [p0, p1) of the image's (C, P) matrix x
   (rows ldx floats apart) into y (F, P, rows ldy apart); z, where given, is laid out as y
   and added before the ReLU (a residual connection). A tile holds ROWS output channels
   times NV vectors of neighbouring positions in registers; for each input channel c it
   loads the NV vectors of x's row c and broadcasts the ROWS weights w[f, c], so every
   output is summed over c in the same order, one fused multiply-add at a time, whichever
   tile it falls in. (OpenBLAS's kernels sum some rows of a product in another order than
   others: two identical filters then give outputs a few ulps apart, and a net whose
   logits are large and equal turns that into a different softmax.) The tiles sweep the
   positions for each block of ROWS channels: that block's weights stay in L1 while x
   streams from L2, one cache line per input channel for ROWS x NV multiply-adds.

   AVX-512 (ROWS <= 6, NV <= 4 vectors of 16: 24 accumulators) and AVX2+FMA (ROWS <= 6,
   NV <= 2 vectors of 8: 12), chosen at run time like the other tiles (_tiles.h);
   single-threaded: the caller gives each core its positions. */
#ifndef MINCONV_POINTWISE_H
#define MINCONV_POINTWISE_H

#include <string.h>

#include "_im2row_matmul.h"

#if MC_HAVE_FUSED

#define MC_PW_ROWS 6

/* ---------------------------------------------------------------- AVX-512 */

#define MC_PW512_TILE static inline __attribute__((always_inline, target("avx512f,fma")))

MC_PW512_TILE void mc_pw512_tile(const float *w, ptrdiff_t ldw, const float *x, ptrdiff_t ldx,
                                 ptrdiff_t C, const int ROWS, const int NV, const int FULL,
                                 int count, const float *bias, int relu, float *y,
                                 const float *z, ptrdiff_t ldy)
{
    __m512 acc[MC_PW_ROWS][4];
    const int tail = count - 16 * (NV - 1);
    const __mmask16 last = tail >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << tail) - 1);
    #pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++) {
        const __m512 b = bias ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = b;
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        const float *xc = x + c * ldx;
        __m512 xv[4];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            xv[v] = FULL || v < NV - 1 ? _mm512_loadu_ps(xc + 16 * v)
                                       : _mm512_maskz_loadu_ps(last, xc + 16 * v);
        #pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            const __m512 wv = _mm512_set1_ps(w[r * ldw + c]);
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    #pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++) {
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            /* FULL is the loads': a packed panel is padded */
            const int whole = v < NV - 1 || tail >= 16;
            const __m512 sum = !z ? acc[r][v] : _mm512_add_ps(acc[r][v],
                whole ? _mm512_loadu_ps(z + r * ldy + 16 * v)
                      : _mm512_maskz_loadu_ps(last, z + r * ldy + 16 * v));
            /* max_ps returns its second operand where either is NaN: NaN stays NaN */
            const __m512 out = relu ? _mm512_max_ps(zero, sum) : sum;
            if (whole)
                _mm512_storeu_ps(y + r * ldy + 16 * v, out);
            else
                _mm512_mask_storeu_ps(y + r * ldy + 16 * v, last, out);
        }
    }
}

#define MC_PW512_CASE(R) case R: { \
    if (full) mc_pw512_tile(w, ldw, x, ldx, C, R, NV, 1, count, bias, relu, y, z, ldy); \
    else mc_pw512_tile(w, ldw, x, ldx, C, R, NV, 0, count, bias, relu, y, z, ldy); } break;
#define MC_PW512_VECTORS(V) static __attribute__((target("avx512f,fma"))) void \
    mc_pw512_tile_##V(int rows, int full, const float *w, ptrdiff_t ldw, const float *x, \
                      ptrdiff_t ldx, ptrdiff_t C, int count, const float *bias, \
                      int relu, float *y, const float *z, ptrdiff_t ldy) { \
        const int NV = V; \
        switch (rows) { MC_PW512_CASE(1) MC_PW512_CASE(2) MC_PW512_CASE(3) MC_PW512_CASE(4) \
                        MC_PW512_CASE(5) MC_PW512_CASE(6) } }
MC_PW512_VECTORS(1)
MC_PW512_VECTORS(2)
MC_PW512_VECTORS(3)
MC_PW512_VECTORS(4)

/* Rows c of x (at x + c*ldx), columns p .. p + count - 1, into panel (C, 64), zeros past
   count. */
static __attribute__((target("avx512f"))) void mc_pw512_pack(const float *x, ptrdiff_t ldx,
                                                            ptrdiff_t C, int count, float *panel)
{
    for (ptrdiff_t c = 0; c < C; c++) {
        const float *src = x + c * ldx;
        float *dst = panel + c * 64;
        for (int v = 0; v < 4; v++) {
            const int left = count - 16 * v;
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF
                              : (__mmask16)(left > 0 ? (1u << left) - 1 : 0);
            _mm512_storeu_ps(dst + 16 * v, _mm512_maskz_loadu_ps(m, src + 16 * v));
        }
    }
}

static __attribute__((target("avx512f,fma"))) void mc_pointwise_avx512(
        const float *w, ptrdiff_t F, ptrdiff_t C, const float *x, ptrdiff_t ldx,
        ptrdiff_t p0, ptrdiff_t p1, const float *bias, int relu, float *y, const float *z,
        ptrdiff_t ldy, float *panel)
{
    for (ptrdiff_t p = p0; p < p1; p += 64) {
        const int count = (int)(p1 - p < 64 ? p1 - p : 64), vectors = (count + 15) / 16;
        const float *xs = x + p;
        ptrdiff_t lds = ldx;
        int full = count == 16 * vectors;
        if (panel) {   /* the strip's rows side by side: one stream, not C pages */
            mc_pw512_pack(x + p, ldx, C, count, panel);
            xs = panel, lds = 64, full = 1;
        }
        for (ptrdiff_t f = 0; f < F; f += MC_PW_ROWS) {
            const int rows = (int)(F - f < MC_PW_ROWS ? F - f : MC_PW_ROWS);
            const float *wf = w + f * C, *bf = bias ? bias + f : NULL;
            float *yf = y + f * ldy + p;
            const float *zf = z ? z + f * ldy + p : NULL;
            switch (vectors) {
            case 1: mc_pw512_tile_1(rows, full, wf, C, xs, lds, C, count, bf, relu, yf, zf, ldy); break;
            case 2: mc_pw512_tile_2(rows, full, wf, C, xs, lds, C, count, bf, relu, yf, zf, ldy); break;
            case 3: mc_pw512_tile_3(rows, full, wf, C, xs, lds, C, count, bf, relu, yf, zf, ldy); break;
            default: mc_pw512_tile_4(rows, full, wf, C, xs, lds, C, count, bf, relu, yf, zf, ldy);
            }
        }
    }
}

/* ---------------------------------------------------------------- AVX2 + FMA */

#define MC_PW2_TILE static inline __attribute__((always_inline, target("avx2,fma")))

MC_PW2_TILE void mc_pw2_tile(const float *w, ptrdiff_t ldw, const float *x, ptrdiff_t ldx,
                             ptrdiff_t C, const int ROWS, const int NV, const int FULL,
                             int count, const float *bias, int relu, float *y, const float *z,
                             ptrdiff_t ldy)
{
    __m256 acc[MC_PW_ROWS][2];
    const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(count - 8 * (NV - 1)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    #pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++) {
        const __m256 b = bias ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps();
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[r][v] = b;
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        const float *xc = x + c * ldx;
        __m256 xv[2];
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            xv[v] = FULL || v < NV - 1 ? _mm256_loadu_ps(xc + 8 * v)
                                       : _mm256_maskload_ps(xc + 8 * v, last);
        #pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            const __m256 wv = _mm256_broadcast_ss(w + r * ldw + c);
            #pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(wv, xv[v], acc[r][v]);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    #pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++) {
        #pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            /* FULL is the loads': a packed panel is padded */
            const int whole = v < NV - 1 || count >= 8 * NV;
            const __m256 sum = !z ? acc[r][v] : _mm256_add_ps(acc[r][v],
                whole ? _mm256_loadu_ps(z + r * ldy + 8 * v)
                      : _mm256_maskload_ps(z + r * ldy + 8 * v, last));
            /* max_ps returns its second operand where either is NaN: NaN stays NaN */
            const __m256 out = relu ? _mm256_max_ps(zero, sum) : sum;
            if (whole)
                _mm256_storeu_ps(y + r * ldy + 8 * v, out);
            else
                _mm256_maskstore_ps(y + r * ldy + 8 * v, last, out);
        }
    }
}

#define MC_PW2_CASE(R) case R: { \
    if (full) mc_pw2_tile(w, ldw, x, ldx, C, R, NV, 1, count, bias, relu, y, z, ldy); \
    else mc_pw2_tile(w, ldw, x, ldx, C, R, NV, 0, count, bias, relu, y, z, ldy); } break;
#define MC_PW2_VECTORS(V) static __attribute__((target("avx2,fma"))) void \
    mc_pw2_tile_##V(int rows, int full, const float *w, ptrdiff_t ldw, const float *x, \
                    ptrdiff_t ldx, ptrdiff_t C, int count, const float *bias, \
                    int relu, float *y, const float *z, ptrdiff_t ldy) { \
        const int NV = V; \
        switch (rows) { MC_PW2_CASE(1) MC_PW2_CASE(2) MC_PW2_CASE(3) MC_PW2_CASE(4) \
                        MC_PW2_CASE(5) MC_PW2_CASE(6) } }
MC_PW2_VECTORS(1)
MC_PW2_VECTORS(2)

/* Rows c of x (at x + c*ldx), columns p .. p + count - 1, into panel (C, 16), zeros past
   count. */
static __attribute__((target("avx2"))) void mc_pw2_pack(const float *x, ptrdiff_t ldx,
                                                       ptrdiff_t C, int count, float *panel)
{
    for (ptrdiff_t c = 0; c < C; c++) {
        const float *src = x + c * ldx;
        if (count == 16) {
            _mm256_storeu_ps(panel + c * 16, _mm256_loadu_ps(src));
            _mm256_storeu_ps(panel + c * 16 + 8, _mm256_loadu_ps(src + 8));
        } else {
            for (int j = 0; j < 16; j++) panel[c * 16 + j] = j < count ? src[j] : 0.0f;
        }
    }
}

static __attribute__((target("avx2,fma"))) void mc_pointwise_avx2(
        const float *w, ptrdiff_t F, ptrdiff_t C, const float *x, ptrdiff_t ldx,
        ptrdiff_t p0, ptrdiff_t p1, const float *bias, int relu, float *y, const float *z,
        ptrdiff_t ldy, float *panel)
{
    for (ptrdiff_t p = p0; p < p1; p += 16) {
        const int count = (int)(p1 - p < 16 ? p1 - p : 16), vectors = count > 8 ? 2 : 1;
        const float *xs = x + p;
        ptrdiff_t lds = ldx;
        int full = count == 8 * vectors;
        if (panel) {   /* the strip's rows side by side: one stream, not C pages */
            mc_pw2_pack(x + p, ldx, C, count, panel);
            xs = panel, lds = 16, full = 1;
        }
        for (ptrdiff_t f = 0; f < F; f += MC_PW_ROWS) {
            const int rows = (int)(F - f < MC_PW_ROWS ? F - f : MC_PW_ROWS);
            const float *wf = w + f * C, *bf = bias ? bias + f : NULL;
            float *yf = y + f * ldy + p;
            const float *zf = z ? z + f * ldy + p : NULL;
            if (vectors == 2)
                mc_pw2_tile_2(rows, full, wf, C, xs, lds, C, count, bf, relu, yf, zf, ldy);
            else
                mc_pw2_tile_1(rows, full, wf, C, xs, lds, C, count, bf, relu, yf, zf, ldy);
        }
    }
}

/* Output channels per panel from which the positions are packed (below, each block of
   ROWS channels reads x's rows where they lie: C rows a page or more apart per tile). */
#define MC_PW_PACK_MIN_FILTERS 13

/* Weights of more than this many bytes are swept in blocks of filters, over blocks of
   strips packed beforehand, both of about this size: the block of weights then stays in
   L2 while the strips pass. (Swept whole for every strip, SqueezeNet's last layer's
   2 MB of weights were read from L3 once per 16 positions.) */
#define MC_PW_BLOCK_BYTES ((ptrdiff_t)192 * 1024)

/* Whether weights of F x K floats are swept in blocks of filters over blocks of packed
   strips (mc_tiles_pointwise): larger than MC_PW_BLOCK_BYTES. */
static int mc_pointwise_blocked(ptrdiff_t F, ptrdiff_t K)
{
    return F >= MC_PW_PACK_MIN_FILTERS && F * K * (ptrdiff_t)sizeof(float) > MC_PW_BLOCK_BYTES;
}

/* The fewest positions a thread's piece of a product should hold at `level`: a strip's,
   or where weights of F x K floats are swept in blocks (mc_tiles_pointwise), the block of
   strips that each block of weights passes over (smaller pieces would read the weights
   again for fewer positions). */
static ptrdiff_t mc_pointwise_min_piece(int level, ptrdiff_t F, ptrdiff_t K)
{
    const ptrdiff_t width = level == 2 ? 64 : 16;
    if (!mc_pointwise_blocked(F, K))
        return width;
    const ptrdiff_t strips = MC_PW_BLOCK_BYTES / (K * width * (ptrdiff_t)sizeof(float));
    return (strips > 1 ? strips : 1) * width;
}

/* The tiles over one packed strip: panel (C, 64) at level 2, (C, 16) at level 1, its first
   count columns the positions of y's columns 0 .. count - 1. */
static void mc_pw_strip(int level, const float *w, ptrdiff_t F, ptrdiff_t C, const float *panel,
                        int count, const float *bias, int relu, float *y, const float *z,
                        ptrdiff_t ldy)
{
    if (level == 2)
        mc_pointwise_avx512(w, F, C, panel, 64, 0, count, bias, relu, y, z, ldy, NULL);
    else
        mc_pointwise_avx2(w, F, C, panel, 16, 0, count, bias, relu, y, z, ldy, NULL);
}

/* The positions [p0, p1) of one image at `level` (2: AVX-512, 1: AVX2). w (F, C)
   row-major; z NULL or laid out as y. Returns -1 when out of memory for the panels, else 0. */
static int mc_tiles_pointwise(int level, const float *w, ptrdiff_t F, ptrdiff_t C,
                              const float *x, ptrdiff_t ldx, ptrdiff_t p0, ptrdiff_t p1,
                              const float *bias, int relu, float *y, const float *z,
                              ptrdiff_t ldy)
{
    const ptrdiff_t width = level == 2 ? 64 : 16;
    float *panel = NULL;
    if (mc_pointwise_blocked(F, C)) {
        const ptrdiff_t strip_bytes = C * width * (ptrdiff_t)sizeof(float);
        const ptrdiff_t strips = MC_PW_BLOCK_BYTES / strip_bytes > 1 ? MC_PW_BLOCK_BYTES / strip_bytes : 1;
        ptrdiff_t filters = MC_PW_BLOCK_BYTES / (C * (ptrdiff_t)sizeof(float)) / MC_PW_ROWS * MC_PW_ROWS;
        if (filters < MC_PW_ROWS)
            filters = MC_PW_ROWS;
        panel = (float *)malloc(sizeof(float) * (size_t)(strips * C * width));
        if (panel == NULL)
            return -1;
        for (ptrdiff_t b0 = p0; b0 < p1; b0 += strips * width) {
            const ptrdiff_t b1 = p1 - b0 < strips * width ? p1 : b0 + strips * width;
            for (ptrdiff_t p = b0; p < b1; p += width) {
                const int count = (int)(b1 - p < width ? b1 - p : width);
                float *strip = panel + (p - b0) / width * C * width;
                if (level == 2)
                    mc_pw512_pack(x + p, ldx, C, count, strip);
                else
                    mc_pw2_pack(x + p, ldx, C, count, strip);
            }
            for (ptrdiff_t f0 = 0; f0 < F; f0 += filters) {
                const ptrdiff_t fn = F - f0 < filters ? F - f0 : filters;
                for (ptrdiff_t p = b0; p < b1; p += width)
                    mc_pw_strip(level, w + f0 * C, fn, C, panel + (p - b0) / width * C * width,
                                (int)(b1 - p < width ? b1 - p : width),
                                bias ? bias + f0 : NULL, relu, y + f0 * ldy + p,
                                z ? z + f0 * ldy + p : NULL, ldy);
            }
        }
        free(panel);
        return 0;
    }
    if (F >= MC_PW_PACK_MIN_FILTERS) {
        panel = (float *)malloc(sizeof(float) * (size_t)C * width);
        if (panel == NULL)
            return -1;
    }
    if (level == 2)
        mc_pointwise_avx512(w, F, C, x, ldx, p0, p1, bias, relu, y, z, ldy, panel);
    else
        mc_pointwise_avx2(w, F, C, x, ldx, p0, p1, bias, relu, y, z, ldy, panel);
    free(panel);
    return 0;
}

#else

static int mc_tiles_pointwise(int level, const float *w, ptrdiff_t F, ptrdiff_t C,
                              const float *x, ptrdiff_t ldx, ptrdiff_t p0, ptrdiff_t p1,
                              const float *bias, int relu, float *y, const float *z,
                              ptrdiff_t ldy) { return -1; }

#endif
#endif
