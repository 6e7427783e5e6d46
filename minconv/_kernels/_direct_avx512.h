/* The direct convolution in AVX-512, beside the products of _im2row_matmul.h.

   With one to a few input channels (a first layer on grey or colour images)
   the taps of a position are too few for the product tiles; on small maps with a
   batch smaller than the cores the tiles' moves to channels last cost more than
   they save. There the convolution runs channels first, 16 neighbouring outputs
   of a row to a vector:

       y[n, f, ho, wo] = bias[f] + sum_{c,i,j} wb[f / 8, (c*kh + i)*kw + j, f % 8] * xq[n, c, ho*sh + i*dh, wo + cols[j]]

   xq is the zero-padded input with each row split into its column phases (N, C, Hp,
   row): at width stride sw, padded column u*sw + q lies at q*ceil(Wp/sw) + u, so tap j
   of neighbouring outputs reads neighbouring floats at cols[j] (j*dw at stride 1).
   wb holds the weights in blocks of a tile's 8 filters (ceil(F/8), C*kh*kw, 8), so that a
   tile reads its weights in order.
   Included by _im2row_matmul.h, which defines the helpers used here;
   _direct_avx2.h is its AVX2 twin. */
#ifndef MINCONV_DIRECT_AVX512_H
#define MINCONV_DIRECT_AVX512_H

#define MC_DIRECT_FILTERS 8   /* filters of a tile; with 2 vectors of positions, 16 accumulators */
#define MC_DIRECT_TAPS 6      /* taps of a weight-gradient tile: 4 filters x 6 taps */

/* FR filters x WV vectors of 16 positions of one output row. */
MC_TILE void mc_direct_tile(const float *x, ptrdiff_t plane, ptrdiff_t row_len, const int FR,
                            const int WV, const float *wk, ptrdiff_t C, int kh, int kw,
                            int dh, const ptrdiff_t *cols, const float *bias, int relu, float *y,
                            ptrdiff_t yplane, __mmask16 last)
{
    __m512 acc[MC_DIRECT_FILTERS][2];
    #pragma GCC unroll 8
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 2
        for (int v = 0; v < WV; v++) acc[f][v] = bias ? _mm512_set1_ps(bias[f]) : _mm512_setzero_ps();
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        for (int i = 0; i < kh; i++) {
            const float *row = x + c * plane + (ptrdiff_t)i * dh * row_len;
            for (int j = 0; j < kw; j++, wk += MC_DIRECT_FILTERS) {
                __m512 xv[2];
                #pragma GCC unroll 2
                for (int v = 0; v < WV; v++)
                    xv[v] = _mm512_maskz_loadu_ps(v == WV - 1 ? last : (__mmask16)0xFFFF,
                                                  row + cols[j] + 16 * v);
                #pragma GCC unroll 8
                for (int f = 0; f < FR; f++) {
                    const __m512 w = _mm512_set1_ps(wk[f]);
                    #pragma GCC unroll 2
                    for (int v = 0; v < WV; v++) acc[f][v] = _mm512_fmadd_ps(w, xv[v], acc[f][v]);
                }
            }
        }
    }
    /* max_ps returns its second operand where either is NaN: NaN stays NaN */
    #pragma GCC unroll 8
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 2
        for (int v = 0; v < WV; v++)
            _mm512_mask_storeu_ps(y + f * yplane + 16 * v, v == WV - 1 ? last : (__mmask16)0xFFFF,
                                  relu ? _mm512_max_ps(_mm512_setzero_ps(), acc[f][v]) : acc[f][v]);
    }
}

/* dwt[t, f] += sum over n, ho, wo of xp[n, c, ho*sh + i*dh, wo + (j0 + t)*dw] * dy[n, f, ho, wo]
   for FR filters and TJ taps j0.. of one (c, i), accumulated in vectors, summed at the end. */
MC_TILE void mc_direct_wgrad_tile(const float *x, ptrdiff_t N, ptrdiff_t image, ptrdiff_t Wp,
                                  int sh, int dw, const float *dy, ptrdiff_t dy_image,
                                  ptrdiff_t yplane, ptrdiff_t Ho, ptrdiff_t Wo, const int FR,
                                  const int TJ, float *dwt, ptrdiff_t ldw)
{
    __m512 acc[4][MC_DIRECT_TAPS];
    #pragma GCC unroll 4
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 6
        for (int t = 0; t < TJ; t++) acc[f][t] = _mm512_setzero_ps();
    }
    for (ptrdiff_t n = 0; n < N; n++) {
        for (ptrdiff_t ho = 0; ho < Ho; ho++) {
            const float *xrow = x + n * image + ho * sh * Wp;
            const float *drow = dy + n * dy_image + ho * Wo;
            for (ptrdiff_t wo = 0; wo < Wo; wo += 16) {
                const __mmask16 lanes = mc_lanes((int)(Wo - wo));
                __m512 dv[4];
                #pragma GCC unroll 4
                for (int f = 0; f < FR; f++) dv[f] = _mm512_maskz_loadu_ps(lanes, drow + f * yplane + wo);
                #pragma GCC unroll 6
                for (int t = 0; t < TJ; t++) {
                    const __m512 xv = _mm512_maskz_loadu_ps(lanes, xrow + wo + t * dw);
                    #pragma GCC unroll 4
                    for (int f = 0; f < FR; f++) acc[f][t] = _mm512_fmadd_ps(xv, dv[f], acc[f][t]);
                }
            }
        }
    }
    #pragma GCC unroll 4
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 6
        for (int t = 0; t < TJ; t++) dwt[t * ldw + f] += _mm512_reduce_add_ps(acc[f][t]);
    }
}

#define MC_DIRECT_CASE(WV, FR) case FR: mc_direct_tile(x, plane, row_len, FR, WV, wk, C, kh, kw, \
        dh, cols, bias, relu, y, yplane, last); break;
#define MC_DIRECT_VECTORS(WV) case WV: switch (filters) { \
        MC_DIRECT_CASE(WV, 1) MC_DIRECT_CASE(WV, 2) MC_DIRECT_CASE(WV, 3) MC_DIRECT_CASE(WV, 4) \
        MC_DIRECT_CASE(WV, 5) MC_DIRECT_CASE(WV, 6) MC_DIRECT_CASE(WV, 7) MC_DIRECT_CASE(WV, 8) } break;

static MC_TARGET void mc_direct_tile_of(int vectors, int filters, const float *x, ptrdiff_t plane,
        ptrdiff_t row_len, const float *wk, ptrdiff_t C, int kh, int kw, int dh,
        const ptrdiff_t *cols, const float *bias, int relu, float *y, ptrdiff_t yplane,
        __mmask16 last)
{
    switch (vectors) { MC_DIRECT_VECTORS(1) MC_DIRECT_VECTORS(2) }
}

#define MC_DIRECT_WG_CASE(FR, TJ) case TJ: mc_direct_wgrad_tile(x, N, image, Wp, sh, dw, dy, \
        dy_image, yplane, Ho, Wo, FR, TJ, dwt, ldw); break;
#define MC_DIRECT_WG_FILTERS(FR) case FR: switch (taps) { \
        MC_DIRECT_WG_CASE(FR, 1) MC_DIRECT_WG_CASE(FR, 2) MC_DIRECT_WG_CASE(FR, 3) \
        MC_DIRECT_WG_CASE(FR, 4) MC_DIRECT_WG_CASE(FR, 5) MC_DIRECT_WG_CASE(FR, 6) } break;

static MC_TARGET void mc_direct_wgrad_tile_of(int filters, int taps, const float *x, ptrdiff_t N,
        ptrdiff_t image, ptrdiff_t Wp, int sh, int dw, const float *dy, ptrdiff_t dy_image,
        ptrdiff_t yplane, ptrdiff_t Ho, ptrdiff_t Wo, float *dwt, ptrdiff_t ldw)
{
    switch (filters) { MC_DIRECT_WG_FILTERS(1) MC_DIRECT_WG_FILTERS(2) MC_DIRECT_WG_FILTERS(3) MC_DIRECT_WG_FILTERS(4) }
}

/* Row ho of image n of y (N, F, Ho, Wo), filter block `block`: the direct tiles over xq
   (N, C, Hp, row_len) and wb (ceil(F/8), C*kh*kw, 8), as mc_tiles_conv2d_direct lays them
   out. */
static MC_TARGET void mc_direct_row(const float *xq, ptrdiff_t C, ptrdiff_t Hp,
        ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols, ptrdiff_t n,
        ptrdiff_t ho, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t block,
        const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0)
{
    const ptrdiff_t plane = Hp * row_len, f = block * MC_DIRECT_FILTERS;
    const int filters = (int)(F - f < MC_DIRECT_FILTERS ? F - f : MC_DIRECT_FILTERS);
    const float *wk = wb + block * C * kh * kw * MC_DIRECT_FILTERS;
    for (ptrdiff_t wo = 0; wo < Wo; wo += 32) {
        const int vectors = Wo - wo > 16 ? 2 : 1;
        const __mmask16 last = mc_lanes((int)(Wo - wo - 16 * (vectors - 1)));
        mc_direct_tile_of(vectors, filters, xq + (n * C * Hp + ho * sh) * row_len + wo, plane,
                          row_len, wk, C, kh, kw, dh, cols, bias ? bias + f : NULL, relu,
                          y + (n * F + f) * y_plane + (ho - y_row0) * Wo + wo, y_plane, last);
    }
}

/* dwt (C*kh*kw, F) = the weight gradient of the direct tiles for dy (N, F, Ho, Wo). */
static MC_TARGET void mc_conv2d_direct_wgrad(const float *xp, ptrdiff_t N, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t Wp, int kh, int kw, int sh, int dh, int dw, ptrdiff_t Ho,
        ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt)
{
    const ptrdiff_t image = C * Hp * Wp, yplane = Ho * Wo;
    for (ptrdiff_t t = 0; t < C * kh * kw * F; t++)
        dwt[t] = 0.0f;
    /* filters outside: their dy planes are read again from cache for every tap row */
    for (ptrdiff_t f = 0; f < F; f += 4) {
        const int filters = (int)(F - f < 4 ? F - f : 4);
        for (ptrdiff_t c = 0; c < C; c++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j += MC_DIRECT_TAPS) {
                    const int taps = kw - j < MC_DIRECT_TAPS ? kw - j : MC_DIRECT_TAPS;
                    const float *x = xp + (c * Hp + (ptrdiff_t)i * dh) * Wp + (ptrdiff_t)j * dw;
                    mc_direct_wgrad_tile_of(filters, taps, x, N, image, Wp, sh, dw,
                                            dy + f * yplane, F * yplane, yplane, Ho, Wo,
                                            dwt + ((c * kh + i) * kw + j) * F + f, F);
                }
    }
}

#endif
