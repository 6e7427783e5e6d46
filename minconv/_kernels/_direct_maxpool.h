/* The direct tiles and the max pooling that follows them, band by band (inference).

   A first layer's output is the largest map of a net (SqueezeNet's 64x111x111, 3 MB at
   batch 1) and its max pooling reads it straight back. Here each band of pooled rows
   [q0, q1) is made from the rows [a, b) of the convolution its windows cover,

       a = max(0, q0*psh - pph),   b = min(Ho, (q1 - 1)*psh - pph + pkh),

   computed into a small buffer (cache-resident: buf_rows rows of every map) and pooled
   from there, so the full map is never written to memory. Rows where two bands' windows
   meet stay in the buffer for the next band. */
#ifndef MINCONV_DIRECT_MAXPOOL_H
#define MINCONV_DIRECT_MAXPOOL_H

#include <string.h>

#include "_tiles.h"
#include "_maxpool_values.h"

/* The convolution rows [a, b) that the windows of pooled rows [q0, q1) cover. */
static inline void mc_pooled_band_rows(ptrdiff_t q0, ptrdiff_t q1, int pkh, int psh, int pph,
                                       ptrdiff_t Ho, ptrdiff_t *a, ptrdiff_t *b)
{
    const ptrdiff_t first = q0 * psh - pph, end = (q1 - 1) * psh - pph + pkh;
    *a = first < 0 ? 0 : first;
    *b = end > Ho ? Ho : end;
}

/* Pooled rows [p0, p1) of one image: y (F, Hpo, Wpo) = maxpool(max(conv(xq), 0) or conv(xq))
   with the direct tiles' operands (mc_tiles_conv2d_direct, every filter block) for a conv output (F, Ho, Wo)
   and the pool's window (pkh, pkw), stride (psh, psw) and padding (pph, ppw). buf holds
   buf_rows rows of each of the F maps (buf_rows >= pkh), m one padded row of the pool. */
static void mc_tiles_conv2d_direct_maxpool(int level, const float *xq, ptrdiff_t C,
        ptrdiff_t Hp, ptrdiff_t row_len, int kh, int kw, int sh, int dh, const ptrdiff_t *cols,
        ptrdiff_t Ho, ptrdiff_t Wo, const float *wb, ptrdiff_t F, const float *bias, int relu,
        int pkh, int pkw, int psh, int psw, int pph, int ppw, ptrdiff_t p0, ptrdiff_t p1,
        ptrdiff_t Hpo, ptrdiff_t Wpo, float *buf, ptrdiff_t buf_rows, float *m, float *y)
{
    const ptrdiff_t buf_plane = buf_rows * Wo, block = mc_tiles_direct_filters(level);
    ptrdiff_t q0 = p0, held_a = 0, held_b = 0;   /* conv rows [held_a, held_b) are in buf */
    while (q0 < p1) {
        ptrdiff_t q1 = q0 + 1, a, b, a2, b2;
        mc_pooled_band_rows(q0, q1, pkh, psh, pph, Ho, &a, &b);
        while (q1 < p1) {   /* as many pooled rows as the buffer holds */
            mc_pooled_band_rows(q0, q1 + 1, pkh, psh, pph, Ho, &a2, &b2);
            if (b2 - a2 > buf_rows)
                break;
            q1++;
            b = b2;
        }
        /* the rows where this band's windows meet the last band's are kept, not redone */
        const ptrdiff_t kept = held_b > a && a >= held_a ? held_b - a : 0;
        if (kept > 0 && a > held_a)
            for (ptrdiff_t f = 0; f < F; f++)
                memmove(buf + f * buf_plane, buf + f * buf_plane + (a - held_a) * Wo,
                        (size_t)(kept * Wo) * sizeof(float));
        mc_tiles_conv2d_direct(level, block, xq, 1, C, Hp, row_len, kh, kw, sh, dh, cols,
                               a + kept, b, Wo, wb, F, 0, (F + block - 1) / block, bias, relu, buf,
                               buf_plane, a);
        for (ptrdiff_t f = 0; f < F; f++)
            mc_maxpool_values_plane(level, buf + f * buf_plane, a, y + f * Hpo * Wpo, m, Ho, Wo,
                                    pkh, pkw, psh, psw, pph, ppw, q0, q1, Wpo);
        held_a = a;
        held_b = b;
        q0 = q1;
    }
}

#endif
