/* A convolution at width stride 1 as shifted 1x1 products, channels first: each tap of
   the padded image, shifted, is one input channel of the 1x1 tiles of _pointwise.h, over
   strips of neighbouring output positions packed tap by tap (cpu_pointwise.pyx's
   conv2d_shifted). */
#ifndef MINCONV_SHIFTED_H
#define MINCONV_SHIFTED_H

#include "_pointwise.h"

#if MC_HAVE_FUSED

/* The runs of a strip of a convolution's output: positions p .. p + count - 1 of an
   image's flat (Ho*Wo) output, grouped by output row. Run s fills panel columns
   start[s] .. start[s] + length[s] - 1 from the padded image at source[s] = ho*row_step + wo
   onwards. Returns the number of runs (at most count). */
static int mc_strip_runs(ptrdiff_t p, int count, ptrdiff_t Wo, ptrdiff_t row_step, int *start,
                         int *length, ptrdiff_t *source)
{
    int runs = 0;
    for (int t = 0; t < count; runs++) {
        const ptrdiff_t ho = (p + t) / Wo, wo = (p + t) % Wo;
        const int left = count - t;
        start[runs] = t;
        length[runs] = Wo - wo < left ? (int)(Wo - wo) : left;
        source[runs] = ho * row_step + wo;
        t += length[runs];
    }
    return runs;
}

/* Panel (K, 16) of a strip: row k holds the taps k of its positions, xp[offsets[k] +
   source[s] + t] for each run s. Whole vectors are copied (masked stores are slow on some
   CPUs): a run's last vector may spill into the columns of the next run, which then
   overwrites them, or past count, whose outputs are never stored, or into the next row,
   written after it; so the panel holds 8 floats more than K rows, and xp must be
   readable 8 floats past its last run. */
static __attribute__((target("avx2"))) void mc_pw2_pack_runs(
        const float *xp, const ptrdiff_t *offsets, ptrdiff_t K, int runs, const int *start,
        const int *length, const ptrdiff_t *source, float *panel)
{
    for (ptrdiff_t k = 0; k < K; k++) {
        const float *src = xp + offsets[k];
        float *dst = panel + k * 16;
        for (int s = 0; s < runs; s++)
            for (int v = 0; v < length[s]; v += 8)
                _mm256_storeu_ps(dst + start[s] + v, _mm256_loadu_ps(src + source[s] + v));
    }
}

/* Panel (K, 64) of a strip, as mc_pw2_pack_runs. */
static __attribute__((target("avx512f"))) void mc_pw512_pack_runs(
        const float *xp, const ptrdiff_t *offsets, ptrdiff_t K, int runs, const int *start,
        const int *length, const ptrdiff_t *source, int count, float *panel)
{
    if (count < 64)
        memset(panel, 0, sizeof(float) * (size_t)K * 64);
    for (ptrdiff_t k = 0; k < K; k++) {
        const float *src = xp + offsets[k];
        float *dst = panel + k * 64;
        for (int s = 0; s < runs; s++) {
            for (int v = 0; v < length[s]; v += 16) {
                const int left = length[s] - v;
                const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                _mm512_mask_storeu_ps(dst + start[s] + v, m,
                                      _mm512_maskz_loadu_ps(m, src + source[s] + v));
            }
        }
    }
}

/* Output positions [p0, p1) of one image's flat (Ho*Wo) output of a convolution at width
   stride 1, as shifted 1x1 products: with xp the zero-padded image (C, Hp, Wp) and tap
   k = (c*kh + i)*kw + j at offsets[k] = c*Hp*Wp + i*dh*Wp + j*dw,

       y[f, ho*Wo + wo] = bias[f] + sum over k of w[f, k] * xp[ho*row_step + offsets[k] + wo]

   (row_step = sh*Wp). Each strip of 16 (AVX2) or 64 (AVX-512) neighbouring positions,
   crossing output rows where it must, is packed tap by tap into a panel and swept by the
   tiles of the 1x1 product, the image staying channels first. y (F, ldy) of the image.
   Returns -1 when out of memory, else 0. */
static int mc_tiles_shifted(int level, const float *w, ptrdiff_t F, ptrdiff_t K,
                            const float *xp, const ptrdiff_t *offsets, ptrdiff_t row_step,
                            ptrdiff_t Wo, ptrdiff_t p0, ptrdiff_t p1, const float *bias,
                            int relu, float *y, ptrdiff_t ldy)
{
    const int width = level == 2 ? 64 : 16;
    int start[64], length[64];
    ptrdiff_t source[64];
    float *panel = (float *)malloc(sizeof(float) * (size_t)(K * width + 8));
    if (panel == NULL)
        return -1;
    for (ptrdiff_t p = p0; p < p1; p += width) {
        const int count = (int)(p1 - p < width ? p1 - p : width);
        const int runs = mc_strip_runs(p, count, Wo, row_step, start, length, source);
        if (level == 2)
            mc_pw512_pack_runs(xp, offsets, K, runs, start, length, source, count, panel);
        else
            mc_pw2_pack_runs(xp, offsets, K, runs, start, length, source, panel);
        mc_pw_strip(level, w, F, K, panel, count, bias, relu, y + p, NULL, ldy);
    }
    free(panel);
    return 0;
}

#else

static int mc_tiles_shifted(int level, const float *w, ptrdiff_t F, ptrdiff_t K,
                            const float *xp, const ptrdiff_t *offsets, ptrdiff_t row_step,
                            ptrdiff_t Wo, ptrdiff_t p0, ptrdiff_t p1, const float *bias,
                            int relu, float *y, ptrdiff_t ldy) { return -1; }

#endif
#endif
