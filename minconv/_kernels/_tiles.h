/* One entry per product of the tiles, for cpu_tiles.pyx: `level` 2 runs the AVX-512
   tiles (_im2row_matmul.h, _direct_avx512.h), level 1 the AVX2+FMA ones
   (_im2row_matmul_avx2.h, _direct_avx2.h). mc_tiles_level() is the best level this
   CPU runs, 0 for none. The products return -1 when out of memory, else 0. */
#ifndef MINCONV_TILES_H
#define MINCONV_TILES_H

#include "_im2row_matmul.h"
#include "_im2row_matmul_avx2.h"

static int mc_tiles_level(void)
{
    return mc_fused_available() ? 2 : (mc_avx2_available() ? 1 : 0);
}

/* y[:, f_begin:f_end] (N*Ho*Wo, F) = im2row(xt) @ w[:, f_begin:f_end] (w: (kh*kw*C, F))
   + bias (F, or NULL); f_begin a multiple of 16 */
static int mc_tiles_im2row_matmul(int level, const float *xt, ptrdiff_t N, ptrdiff_t Hp,
        ptrdiff_t Wp, ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw,
        ptrdiff_t Ho, ptrdiff_t Wo, const float *w, ptrdiff_t F, ptrdiff_t f_begin,
        ptrdiff_t f_end, const float *bias, float *y)
{
    if (level == 2) {
        mc_im2row_matmul(xt, N, Hp, Wp, C, kh, kw, sh, sw, dh, dw, Ho, Wo, w, F, f_begin, f_end,
                         bias, y);
        return 0;
    }
    return mc_avx2_im2row_matmul(xt, N, Hp, Wp, C, kh, kw, sh, sw, dh, dw, Ho, Wo, w, F,
                                 f_begin, f_end, bias, y);
}

/* dwt (kh*kw*C, F) = im2row(xt)^T @ dy (N*Ho*Wo, F) */
static int mc_tiles_im2row_t_matmul(int level, const float *xt, ptrdiff_t N, ptrdiff_t Hp,
        ptrdiff_t Wp, ptrdiff_t C, int kh, int kw, int sh, int sw, int dh, int dw,
        ptrdiff_t Ho, ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt)
{
    return level == 2
        ? mc_im2row_t_matmul(xt, N, Hp, Wp, C, kh, kw, sh, sw, dh, dw, Ho, Wo, dy, F, dwt)
        : mc_avx2_im2row_t_matmul(xt, N, Hp, Wp, C, kh, kw, sh, sw, dh, dw, Ho, Wo, dy, F, dwt);
}

/* Filters of a direct tile at `level` that holds outputs of a row to a vector: the
   weights' blocks (ceil(F/b), C*kh*kw, b). */
static int mc_tiles_direct_filters(int level)
{
    return level == 2 ? 8 : 6;
}

/* Filters of a direct tile at `level` that holds filters to a vector
   (_direct_filters_avx2.h), 0 where there is none (AVX-512: not measured). */
static int mc_tiles_direct_filter_tiles(int level)
{
    return level == 1 ? 16 : 0;
}

/* rows [r0, r1) and filter blocks [b0, b1) of y (N, F, Ho, Wo): xq (N, C, Hp, row_len:
   padded, each row's column phases side by side) convolved with wb (ceil(F/b), C*kh*kw, b)
   on the tiles whose blocks have b filters (mc_tiles_direct_filters: outputs of a row to
   a vector; mc_tiles_direct_filter_tiles: filters to a vector), tap column j at cols[j];
   then max(y, 0) with relu. Row ho of map (n, f) is written at
   y + (n*F + f)*y_plane + (ho - y_row0)*Wo. The order that reads less: a block's rows
   before the next block's keeps its weights in L1 and reads the input rows once per block
   (48 -> 192 on 13x13); a row's blocks before the next row keeps its input rows in L1 and
   reads every block's weights once per output row (an RGB first layer; 16 -> 64 on 55x55
   in bands of 3 or 4 rows). The filters' tiles take a block's rows together. */
static void mc_tiles_conv2d_direct(int level, int b, const float *xq, ptrdiff_t N, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols,
        ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t Wo, const float *wb, ptrdiff_t F, ptrdiff_t b0,
        ptrdiff_t b1, const float *bias, int relu, float *y, ptrdiff_t y_plane, ptrdiff_t y_row0)
{
    void (*row)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, int, int,
                const ptrdiff_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                ptrdiff_t, const float *, int, float *, ptrdiff_t, ptrdiff_t) =
        level == 2 ? mc_direct_row : mc_avx2_direct_row;
    if (b == mc_tiles_direct_filter_tiles(level)) {
        for (ptrdiff_t block = b0; block < b1; block++)
            for (ptrdiff_t n = 0; n < N; n++)
                mc_avx2_direct_fv_rows(xq, C, Hp, row_len, kh, kw, sh, dh, cols, n, r0, r1, Wo,
                                       wb, F, block, bias, relu, y, y_plane, y_row0);
        return;
    }
    const ptrdiff_t weights = (b1 - b0) * C * kh * kw * b;
    const ptrdiff_t rows = N * C * ((r1 - r0) * sh + kh) * row_len;
    if ((b1 - b0) * rows < N * (r1 - r0) * weights) {
        for (ptrdiff_t block = b0; block < b1; block++)
            for (ptrdiff_t n = 0; n < N; n++)
                for (ptrdiff_t ho = r0; ho < r1; ho++)
                    row(xq, C, Hp, row_len, kh, kw, sh, dh, cols, n, ho, Wo, wb, F, block, bias,
                        relu, y, y_plane, y_row0);
    } else {
        for (ptrdiff_t n = 0; n < N; n++)
            for (ptrdiff_t ho = r0; ho < r1; ho++)
                for (ptrdiff_t block = b0; block < b1; block++)
                    row(xq, C, Hp, row_len, kh, kw, sh, dh, cols, n, ho, Wo, wb, F, block, bias,
                        relu, y, y_plane, y_row0);
    }
}

/* dwt (C*kh*kw, F): the weight gradient of mc_tiles_conv2d_direct for dy (N, F, Ho, Wo) */
static void mc_tiles_conv2d_direct_wgrad(int level, const float *xp, ptrdiff_t N, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t Wp, int kh, int kw, int sh, int dh, int dw, ptrdiff_t Ho,
        ptrdiff_t Wo, const float *dy, ptrdiff_t F, float *dwt)
{
    if (level == 2)
        mc_conv2d_direct_wgrad(xp, N, C, Hp, Wp, kh, kw, sh, dh, dw, Ho, Wo, dy, F, dwt);
    else
        mc_avx2_conv2d_direct_wgrad(xp, N, C, Hp, Wp, kh, kw, sh, dh, dw, Ho, Wo, dy, F, dwt);
}

#endif
