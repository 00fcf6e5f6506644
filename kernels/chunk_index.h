/* Index math of the chunked GEMM path's data movement, shared by the CUDA kernels
 * (cuda/kernels.cu) and the host tests, which run these exact functions on the CPU: the
 * per-element bodies of the im2col, col2im, axis-swap and fill kernels.
 *
 * A chunk is T consecutive images of a batch. Its column matrix puts the T images' column
 * matrices side by side: (C * kvol) rows, T * P columns (P = o0*o1*o2 output positions), row
 * major with leading dimension T * P, image t owning columns [t * P, (t + 1) * P). One GEMM
 * per group then covers the whole chunk. Everything is int64, built on kernels/conv_index.h. */
#ifndef CONVOY_KERNELS_CHUNK_INDEX_H
#define CONVOY_KERNELS_CHUNK_INDEX_H

#include <stdint.h>

#include "kernels/conv_index.h"

/* Value of entry `index` (row-major over (C * kvol) x (count * P)) of the chunk column matrix
 * of count images starting at images, laid out (count, C, in0, in1, in2). */
CONVOY_HD static inline float convoy__im2col_chunk_value(const convoy__conv_geom *g,
                                                         const float *images, int64_t count,
                                                         int64_t index)
{
    int64_t positions = g->out[0] * g->out[1] * g->out[2];
    int64_t ld = count * positions;
    int64_t row = index / ld;
    int64_t rest = index - row * ld;
    int64_t t = rest / positions;
    int64_t column = rest - t * positions;
    int64_t source = convoy__im2col_source(g, row, column);
    if (source < 0)
        return 0.0f;
    int64_t image_numel = g->in_channels * g->in[0] * g->in[1] * g->in[2];
    return images[t * image_numel + source];
}

/* Value of element `index` of the chunk's images (count, C, in0, in1, in2) after col2im of
 * the chunk column matrix col (leading dimension count * P): the sum of every column entry
 * that im2col copies from that element. */
CONVOY_HD static inline float convoy__col2im_chunk_value(const convoy__conv_geom *g,
                                                         const float *col, int64_t count,
                                                         int64_t index)
{
    int64_t p[3];
    p[2] = index % g->in[2];
    index /= g->in[2];
    p[1] = index % g->in[1];
    index /= g->in[1];
    p[0] = index % g->in[0];
    index /= g->in[0];
    int64_t c = index % g->in_channels;
    int64_t t = index / g->in_channels;
    int64_t positions = g->out[0] * g->out[1] * g->out[2];
    return convoy__col2im_gather(g, col + t * positions, count * positions, c, p);
}

/* For dst (b_count, a_count, inner) = src (a_count, b_count, inner) with the first two axes
 * swapped: the offset in src of dst element `index`. Moves a chunk of output gradients
 * (T, M, P) into the GEMM's (M, T * P) layout and back. */
CONVOY_HD static inline int64_t convoy__swap_axes_source(int64_t index, int64_t a_count,
                                                         int64_t b_count, int64_t inner)
{
    int64_t i = index % inner;
    int64_t rest = index / inner;
    int64_t a = rest % a_count;
    int64_t b = rest / a_count;
    return (a * b_count + b) * inner + i;
}

/* Element `index` of the swapped dst: the swap kernel's per-element body. */
CONVOY_HD static inline float convoy__swap_axes_value(const float *src, int64_t index,
                                                      int64_t a_count, int64_t b_count,
                                                      int64_t inner)
{
    return src[convoy__swap_axes_source(index, a_count, b_count, inner)];
}

/* Element `index` of a filled buffer: the fill kernel's per-element body (timing scratch gets
 * defined contents). Every element gets the value; the index is the kernel's, unused. */
CONVOY_HD static inline float convoy__fill_value(float value, int64_t index)
{
    (void)index;
    return value;
}

#endif /* CONVOY_KERNELS_CHUNK_INDEX_H */
