/* Blocks of output positions, shared by the AVX-512 and AVX2 tiles. */
#ifndef MINCONV_BLOCKS_H
#define MINCONV_BLOCKS_H

#include <stddef.h>

/* Where the block of positions that starts at m0 ends: `block` positions on, or at M
   when less than half a block would be left after it. Each block sweeps all the
   weights (or the whole weight gradient) once, so a short last block costs a sweep for
   a handful of positions: on a core's share of ResNet's 512-channel layers at batch 8,
   196 positions made a block of 192 and one of 4. */
static inline ptrdiff_t mc_block_end(ptrdiff_t m0, ptrdiff_t M, ptrdiff_t block)
{
    return M - m0 < block + block / 2 ? M : m0 + block;
}

#endif
