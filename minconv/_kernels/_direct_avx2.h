/* The direct convolution of _direct_avx512.h in AVX2+FMA.

       y[n, f, ho, wo] = bias[f] + sum_{c,i,j} wb[f / 6, (c*kh + i)*kw + j, f % 6] * xq[n, c, ho*sh + i*dh, wo + cols[j]]

   channels first, 8 neighbouring outputs of a row to a vector; xq is the zero-padded
   input with each row split into its column phases (N, C, Hp, row), so that tap j of
   neighbouring outputs reads neighbouring floats at cols[j] (j*dw at width stride 1),
   wb the weights in blocks of a tile's 6 filters (ceil(F/6), C*kh*kw, 6), so that a tile
   reads its weights in order. Included by _im2row_matmul_avx2.h, which defines the
   helpers used here. */
#ifndef MINCONV_DIRECT_AVX2_H
#define MINCONV_DIRECT_AVX2_H

#define MC2_DIRECT_FILTERS 6   /* filters of a tile; with 2 vectors of positions, 12 accumulators */
#define MC2_WG_FILTERS 3       /* a weight-gradient tile: 3 filters x 4 taps, 12 accumulators */
#define MC2_WG_TAPS 4

/* FR filters x WV vectors of 8 positions of one output row, the second vector `second`
   (1..8) positions after the first: where a row is 9 to 15 wide the two overlap rather
   than end in a partial vector (masked loads and stores cost many cycles on some CPUs).
   A single vector holds `last` positions (1..8), read and written masked when partial.
   With KH and KW known (3x3, the common case) the taps' loops unroll. */
MC2_TILE void mc2_direct_tile(const float *x, ptrdiff_t plane, ptrdiff_t row_len, const int FR,
                              const int WV, const int KH, const int KW, const float *wk,
                              ptrdiff_t C, int dh, const ptrdiff_t *cols, const float *bias,
                              int relu, float *y, ptrdiff_t yplane, ptrdiff_t second, int last)
{
    __m256 acc[MC2_DIRECT_FILTERS][2];
    const __m256i mask = mc2_mask(last);
    const int partial = WV == 1 && last < 8;
    #pragma GCC unroll 8
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 2
        for (int v = 0; v < WV; v++) acc[f][v] = bias ? _mm256_set1_ps(bias[f]) : _mm256_setzero_ps();
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        #pragma GCC unroll 3
        for (int i = 0; i < KH; i++) {
            const float *row = x + c * plane + (ptrdiff_t)i * dh * row_len;
            #pragma GCC unroll 3
            for (int j = 0; j < KW; j++, wk += MC2_DIRECT_FILTERS) {
                __m256 xv[2];
                #pragma GCC unroll 2
                for (int v = 0; v < WV; v++) {
                    const float *p = row + cols[j] + second * v;
                    xv[v] = partial ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
                }
                #pragma GCC unroll 8
                for (int f = 0; f < FR; f++) {
                    const __m256 w = _mm256_broadcast_ss(wk + f);
                    #pragma GCC unroll 2
                    for (int v = 0; v < WV; v++) acc[f][v] = _mm256_fmadd_ps(w, xv[v], acc[f][v]);
                }
            }
        }
    }
    /* max_ps returns its second operand where either is NaN: NaN stays NaN */
    #pragma GCC unroll 8
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 2
        for (int v = 0; v < WV; v++)
            mc2_store_part(y + f * yplane + second * v, WV == 1 ? last : 8,
                           relu ? _mm256_max_ps(_mm256_setzero_ps(), acc[f][v]) : acc[f][v]);
    }
}

/* One step of the weight-gradient tile: positions wo..wo+7 of one row (n), the
   first `count` of them (masked loads when count < 8, so no other value enters). */
MC2_TILE void mc2_wgrad_step(__m256 acc[MC2_WG_FILTERS][MC2_WG_TAPS], const int FR, const int TJ,
                             const float *xrow, const float *drow, ptrdiff_t yplane, int dw,
                             int count)
{
    const __m256i mask = mc2_mask(count);
    __m256 dv[MC2_WG_FILTERS];
    #pragma GCC unroll 3
    for (int f = 0; f < FR; f++)
        dv[f] = count >= 8 ? _mm256_loadu_ps(drow + f * yplane) : _mm256_maskload_ps(drow + f * yplane, mask);
    #pragma GCC unroll 4
    for (int t = 0; t < TJ; t++) {
        const __m256 xv = count >= 8 ? _mm256_loadu_ps(xrow + t * dw)
                                     : _mm256_maskload_ps(xrow + t * dw, mask);
        #pragma GCC unroll 3
        for (int f = 0; f < FR; f++) acc[f][t] = _mm256_fmadd_ps(xv, dv[f], acc[f][t]);
    }
}

/* dwt[t, f] += sum over n, ho, wo of xp[n, c, ho*sh + i*dh, wo + (j0 + t)*dw] * dy[n, f, ho, wo]
   for FR filters and TJ taps j0.. of one (c, i), accumulated in vectors, summed at the end. */
MC2_TILE void mc2_direct_wgrad_tile(const float *x, ptrdiff_t N, ptrdiff_t image, ptrdiff_t Wp,
                                    int sh, int dw, const float *dy, ptrdiff_t dy_image,
                                    ptrdiff_t yplane, ptrdiff_t Ho, ptrdiff_t Wo, const int FR,
                                    const int TJ, float *dwt, ptrdiff_t ldw)
{
    __m256 acc[MC2_WG_FILTERS][MC2_WG_TAPS];
    #pragma GCC unroll 3
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 4
        for (int t = 0; t < TJ; t++) acc[f][t] = _mm256_setzero_ps();
    }
    for (ptrdiff_t n = 0; n < N; n++) {
        for (ptrdiff_t ho = 0; ho < Ho; ho++) {
            const float *xrow = x + n * image + ho * sh * Wp;
            const float *drow = dy + n * dy_image + ho * Wo;
            ptrdiff_t wo = 0;
            for (; wo + 8 <= Wo; wo += 8)
                mc2_wgrad_step(acc, FR, TJ, xrow + wo, drow + wo, yplane, dw, 8);
            if (wo < Wo)
                mc2_wgrad_step(acc, FR, TJ, xrow + wo, drow + wo, yplane, dw, (int)(Wo - wo));
        }
    }
    #pragma GCC unroll 3
    for (int f = 0; f < FR; f++) {
        #pragma GCC unroll 4
        for (int t = 0; t < TJ; t++) dwt[t * ldw + f] += mc2_sum(acc[f][t]);
    }
}

#define MC2_DIRECT_CASE(WV, FR, KH, KW) case FR: mc2_direct_tile(x, plane, row_len, FR, WV, KH, \
        KW, wk, C, dh, cols, bias, relu, y, yplane, second, last); break;
#define MC2_DIRECT_FILTERS_OF(WV, KH, KW) switch (filters) { \
        MC2_DIRECT_CASE(WV, 1, KH, KW) MC2_DIRECT_CASE(WV, 2, KH, KW) MC2_DIRECT_CASE(WV, 3, KH, KW) \
        MC2_DIRECT_CASE(WV, 4, KH, KW) MC2_DIRECT_CASE(WV, 5, KH, KW) MC2_DIRECT_CASE(WV, 6, KH, KW) }
#define MC2_DIRECT_VECTORS(WV) case WV: \
        if (kh == 3 && kw == 3) { MC2_DIRECT_FILTERS_OF(WV, 3, 3) } \
        else { MC2_DIRECT_FILTERS_OF(WV, kh, kw) } break;

static MC2_TARGET void mc2_direct_tile_of(int vectors, int filters, const float *x, ptrdiff_t plane,
        ptrdiff_t row_len, const float *wk, ptrdiff_t C, int kh, int kw, int dh,
        const ptrdiff_t *cols, const float *bias, int relu, float *y, ptrdiff_t yplane,
        ptrdiff_t second, int last)
{
    switch (vectors) { MC2_DIRECT_VECTORS(1) MC2_DIRECT_VECTORS(2) }
}

#define MC2_WG_CASE(FR, TJ) case TJ: mc2_direct_wgrad_tile(x, N, image, Wp, sh, dw, dy, \
        dy_image, yplane, Ho, Wo, FR, TJ, dwt, ldw); break;
#define MC2_WG_FILTERS_CASE(FR) case FR: switch (taps) { \
        MC2_WG_CASE(FR, 1) MC2_WG_CASE(FR, 2) MC2_WG_CASE(FR, 3) MC2_WG_CASE(FR, 4) } break;

static MC2_TARGET void mc2_direct_wgrad_tile_of(int filters, int taps, const float *x, ptrdiff_t N,
        ptrdiff_t image, ptrdiff_t Wp, int sh, int dw, const float *dy, ptrdiff_t dy_image,
        ptrdiff_t yplane, ptrdiff_t Ho, ptrdiff_t Wo, float *dwt, ptrdiff_t ldw)
{
    switch (filters) { MC2_WG_FILTERS_CASE(1) MC2_WG_FILTERS_CASE(2) MC2_WG_FILTERS_CASE(3) }
}

/* Row ho of image n of y (N, F, Ho, Wo), filter block `block`: the direct tiles over xq
   (N, C, Hp, row_len) and wb (ceil(F/6), C*kh*kw, 6), as mc_tiles_conv2d_direct lays them
   out. */
static MC2_TARGET void mc_avx2_direct_row(const float *xq, ptrdiff_t C, ptrdiff_t Hp,
        ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols, ptrdiff_t n,
        ptrdiff_t ho, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t block,
        const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0)
{
    const ptrdiff_t plane = Hp * row_len, f = block * MC2_DIRECT_FILTERS;
    const int filters = (int)(F - f < MC2_DIRECT_FILTERS ? F - f : MC2_DIRECT_FILTERS);
    const float *wk = wb + block * C * kh * kw * MC2_DIRECT_FILTERS;
    for (ptrdiff_t step = 0; step < Wo; step += 16) {
        /* a row's last tile ends at its end, over outputs already written if need be (below
           16 its two vectors overlap; past 16, one vector where at most 8 outputs are left:
           SqueezeNet's rows of 55 as 16 + 16 + 16 + 8, not 4 x 16): masked stores cost many
           cycles on some CPUs */
        const int single = step > 0 && Wo - step <= 8;
        const ptrdiff_t wo = single ? Wo - 8 : (Wo >= 16 && step + 16 > Wo ? Wo - 16 : step);
        const int vectors = Wo > 8 && !single ? 2 : 1;
        const ptrdiff_t second = Wo >= 16 ? 8 : Wo - 8;
        mc2_direct_tile_of(vectors, filters, xq + (n * C * Hp + ho * sh) * row_len + wo, plane,
                           row_len, wk, C, kh, kw, dh, cols, bias ? bias + f : NULL, relu,
                           y + (n * F + f) * y_plane + (ho - y_row0) * Wo + wo, y_plane, second,
                           (int)(Wo < 8 ? Wo : 8));
    }
}

/* dwt (C*kh*kw, F) = the weight gradient of the direct tiles for dy (N, F, Ho, Wo). */
static MC2_TARGET void mc_avx2_conv2d_direct_wgrad(const float *xp, ptrdiff_t N, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t Wp, int kh, int kw, int sh, int dh, int dw, ptrdiff_t Ho,
        ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt)
{
    const ptrdiff_t image = C * Hp * Wp, yplane = Ho * Wo;
    for (ptrdiff_t t = 0; t < C * kh * kw * F; t++)
        dwt[t] = 0.0f;
    /* filters outside: their dy planes are read again from cache for every tap row */
    for (ptrdiff_t f = 0; f < F; f += MC2_WG_FILTERS) {
        const int filters = (int)(F - f < MC2_WG_FILTERS ? F - f : MC2_WG_FILTERS);
        for (ptrdiff_t c = 0; c < C; c++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j += MC2_WG_TAPS) {
                    const int taps = kw - j < MC2_WG_TAPS ? kw - j : MC2_WG_TAPS;
                    const float *x = xp + (c * Hp + (ptrdiff_t)i * dh) * Wp + (ptrdiff_t)j * dw;
                    mc2_direct_wgrad_tile_of(filters, taps, x, N, image, Wp, sh, dw,
                                             dy + f * yplane, F * yplane, yplane, Ho, Wo,
                                             dwt + ((c * kh + i) * kw + j) * F + f, F);
                }
    }
}

#endif
