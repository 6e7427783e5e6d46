/* The direct convolution of _direct_avx2.h with output channels to a vector:

       y[n, f, ho, wo] = bias[f] + sum_{c,i,j} wb[f / 16, (c*kh + i)*kw + j, f % 16] * xq[n, c, ho*sh + i*dh, wo + cols[j]]

   A tile holds 2 vectors of 8 filters at up to 6 output positions of one map, taken in
   row-major order across its rows: 12 accumulators; each tap loads the 2 vectors of
   weights once and broadcasts each position's input value. The tiles of _direct_avx2.h
   put 8 outputs of a row in a vector, and on rows of 13 or 27 outputs compute 16 or 32
   (a fifth of their work thrown away); here no position is computed twice, at the price
   of storing each tile's 16 x 6 outputs one by one into the channels-first maps (small
   beside C*kh*kw >= 288 taps of 12 multiply-adds). xq and cols as for _direct_avx2.h;
   wb the weights in blocks of 16 filters (ceil(F/16), C*kh*kw, 16). Included by
   _im2row_matmul_avx2.h, which defines MC2_TILE and MC2_TARGET. */
#ifndef MINCONV_DIRECT_FILTERS_AVX2_H
#define MINCONV_DIRECT_FILTERS_AVX2_H

#define MC2_FV_FILTERS 16   /* filters of a tile: 2 vectors */
#define MC2_FV_POSITIONS 6  /* positions of a tile: 6 x 2 accumulators */

/* P positions (at x + at[p] + the tap's offset) x 16 filters, their first `filters` stored
   at y + f*yplane + p (P consecutive positions of each map). With KH and KW known (3x3,
   the common case) the taps' loops unroll. */
MC2_TILE void mc2_direct_fv_tile(const float *x, const ptrdiff_t *at, const int P,
                                 ptrdiff_t plane, ptrdiff_t row_len, const int KH, const int KW,
                                 const float *wk, ptrdiff_t C, int dh, const ptrdiff_t *cols,
                                 const float *bias16, int relu, float *y, ptrdiff_t yplane,
                                 int filters)
{
    __m256 acc[MC2_FV_POSITIONS][2];
    const float *xp[MC2_FV_POSITIONS];
    #pragma GCC unroll 6
    for (int p = 0; p < P; p++) {
        acc[p][0] = _mm256_loadu_ps(bias16);
        acc[p][1] = _mm256_loadu_ps(bias16 + 8);
        xp[p] = x + at[p];
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        #pragma GCC unroll 3
        for (int i = 0; i < KH; i++) {
            #pragma GCC unroll 3
            for (int j = 0; j < KW; j++, wk += MC2_FV_FILTERS) {
                const ptrdiff_t tap = c * plane + (ptrdiff_t)i * dh * row_len + cols[j];
                const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
                #pragma GCC unroll 6
                for (int p = 0; p < P; p++) {
                    const __m256 xb = _mm256_broadcast_ss(xp[p] + tap);
                    acc[p][0] = _mm256_fmadd_ps(xb, w0, acc[p][0]);
                    acc[p][1] = _mm256_fmadd_ps(xb, w1, acc[p][1]);
                }
            }
        }
    }
    float out[MC2_FV_POSITIONS][MC2_FV_FILTERS];
    /* max_ps returns its second operand where either is NaN: NaN stays NaN */
    #pragma GCC unroll 6
    for (int p = 0; p < P; p++) {
        const __m256 zero = _mm256_setzero_ps();
        _mm256_storeu_ps(out[p], relu ? _mm256_max_ps(zero, acc[p][0]) : acc[p][0]);
        _mm256_storeu_ps(out[p] + 8, relu ? _mm256_max_ps(zero, acc[p][1]) : acc[p][1]);
    }
    for (int f = 0; f < filters; f++) {
        #pragma GCC unroll 6
        for (int p = 0; p < P; p++) y[f * yplane + p] = out[p][f];
    }
}

#define MC2_FV_CASE(P, KH, KW) case P: mc2_direct_fv_tile(x, at, P, plane, row_len, KH, KW, wk, \
        C, dh, cols, bias16, relu, y, yplane, filters); break;
#define MC2_FV_POSITIONS_OF(KH, KW) switch (positions) { \
        MC2_FV_CASE(1, KH, KW) MC2_FV_CASE(2, KH, KW) MC2_FV_CASE(3, KH, KW) \
        MC2_FV_CASE(4, KH, KW) MC2_FV_CASE(5, KH, KW) MC2_FV_CASE(6, KH, KW) }

static MC2_TARGET void mc2_direct_fv_tile_of(int positions, const float *x, const ptrdiff_t *at,
        ptrdiff_t plane, ptrdiff_t row_len, int kh, int kw, const float *wk, ptrdiff_t C,
        int dh, const ptrdiff_t *cols, const float *bias16, int relu, float *y,
        ptrdiff_t yplane, int filters)
{
    if (kh == 3 && kw == 3) { MC2_FV_POSITIONS_OF(3, 3) }
    else { MC2_FV_POSITIONS_OF(kh, kw) }
}

/* Rows [r0, r1) of image n of y (N, F, Ho, Wo), filter block `block` of wb
   (ceil(F/16), C*kh*kw, 16): the tiles over the rows' positions in row-major order. Row
   ho of map (n, f) is written at y + (n*F + f)*y_plane + (ho - y_row0)*Wo. */
static MC2_TARGET void mc_avx2_direct_fv_rows(const float *xq, ptrdiff_t C, ptrdiff_t Hp,
        ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols, ptrdiff_t n,
        ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t block,
        const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0)
{
    const ptrdiff_t plane = Hp * row_len, f = block * MC2_FV_FILTERS;
    const int filters = (int)(F - f < MC2_FV_FILTERS ? F - f : MC2_FV_FILTERS);
    const float *wk = wb + block * C * kh * kw * MC2_FV_FILTERS;
    const float *x = xq + n * C * plane;
    float *ys = y + (n * F + f) * y_plane - y_row0 * Wo;
    float bias16[MC2_FV_FILTERS] = {0};
    for (int k = 0; k < filters && bias; k++) bias16[k] = bias[f + k];
    ptrdiff_t at[MC2_FV_POSITIONS], ho = r0, wo = 0;
    const ptrdiff_t end = r1 * Wo;
    for (ptrdiff_t q = r0 * Wo; q < end; q += MC2_FV_POSITIONS) {
        const int positions = (int)(end - q < MC2_FV_POSITIONS ? end - q : MC2_FV_POSITIONS);
        for (int p = 0; p < positions; p++) {
            at[p] = ho * sh * row_len + wo;
            if (++wo == Wo) {
                wo = 0;
                ho++;
            }
        }
        mc2_direct_fv_tile_of(positions, x, at, plane, row_len, kh, kw, wk, C, dh, cols, bias16,
                              relu, ys + q, y_plane, filters);
    }
}

#endif
