/* Index math of im2col / col2im, shared by the CUDA kernels and the CPU code.
 *
 * Everything here is a pure inline function usable on the host and, under
 * nvcc, on the device, so the CPU tests check the exact formulas the GPU
 * kernels run. All arithmetic is int64: a column matrix can exceed 2^31
 * entries.
 *
 * The column matrix of one image has (C * k0*k1*k2) rows and (o0*o1*o2)
 * columns. Row r = ((c * k0 + t0) * k1 + t1) * k2 + t2 holds channel c and
 * kernel tap (t0, t1, t2); column j = (o0 * out1 + o1) * out2 + o2 holds output
 * position (o0, o1, o2). Group j's rows are the contiguous block
 * [j * C/g * kvol, (j+1) * C/g * kvol). The entry is the padded input
 * xp[c, o*s + tap*d] where tap = k-1-t when flipping and t otherwise, so
 * the GEMM with the filters as stored computes a true convolution. */
#ifndef CONVOY_KERNELS_CONV_INDEX_H
#define CONVOY_KERNELS_CONV_INDEX_H

#include <stdint.h>

#include "core/conv_geometry.h"

/* Kernel tap whose weight multiplies position t of the column matrix. */
CONVOY_HD static inline int64_t convoy__conv_tap(const convoy__conv_geom *g, int axis, int64_t t)
{
    return g->flip ? g->kernel[axis] - 1 - t : t;
}

/* Input coordinate (possibly in the padding: < 0 or >= in) read by output
 * position o through column tap t on one axis. */
CONVOY_HD static inline int64_t convoy__conv_input_coord(const convoy__conv_geom *g, int axis,
                                                         int64_t o, int64_t t)
{
    return o * g->stride[axis] - g->pad_before[axis] +
           convoy__conv_tap(g, axis, t) * g->dilation[axis];
}

/* Splits a column-matrix row into its channel (within the image, not the
 * group) and its three tap indices. */
CONVOY_HD static inline int64_t convoy__col_row_decode(const convoy__conv_geom *g, int64_t row,
                                                       int64_t t[3])
{
    t[2] = row % g->kernel[2];
    row /= g->kernel[2];
    t[1] = row % g->kernel[1];
    row /= g->kernel[1];
    t[0] = row % g->kernel[0];
    return row / g->kernel[0];
}

/* Splits a column index into the output position. */
CONVOY_HD static inline void convoy__col_column_decode(const convoy__conv_geom *g, int64_t column,
                                                       int64_t o[3])
{
    o[2] = column % g->out[2];
    column /= g->out[2];
    o[1] = column % g->out[1];
    o[0] = column / g->out[1];
}

/* Offset, within one image (C, in0, in1, in2), of the element that column
 * matrix entry (row, column) copies; -1 when the entry lies in the padding
 * (its value is then 0). */
CONVOY_HD static inline int64_t convoy__im2col_source(const convoy__conv_geom *g, int64_t row,
                                                      int64_t column)
{
    int64_t t[3], o[3];
    int64_t c = convoy__col_row_decode(g, row, t);
    convoy__col_column_decode(g, column, o);
    int64_t offset = c;
    for (int a = 0; a < 3; ++a) {
        int64_t p = convoy__conv_input_coord(g, a, o[a], t[a]);
        if (p < 0 || p >= g->in[a])
            return -1;
        offset = offset * g->in[a] + p;
    }
    return offset;
}

/* For col2im as a gather: the output coordinate on one axis whose window
 * reads input coordinate p through column tap t, or -1 when none does (p is
 * between strides, or the window would start outside the output). */
CONVOY_HD static inline int64_t convoy__col2im_output_coord(const convoy__conv_geom *g, int axis,
                                                            int64_t p, int64_t t)
{
    int64_t shifted = p + g->pad_before[axis] - convoy__conv_tap(g, axis, t) * g->dilation[axis];
    if (shifted < 0 || shifted % g->stride[axis] != 0)
        return -1;
    int64_t o = shifted / g->stride[axis];
    return o < g->out[axis] ? o : -1;
}

/* Sum, for input element (c, p0, p1, p2) of one image, of every column
 * matrix entry that im2col would have copied from it: the adjoint of im2col,
 * computed as a gather so it needs no atomics and is deterministic. col is
 * the image's whole column matrix, (C * kvol) x (o0 * o1 * o2), row-major
 * with leading dimension ld (>= o0*o1*o2). */
CONVOY_HD static inline float convoy__col2im_gather(const convoy__conv_geom *g, const float *col,
                                                    int64_t ld, int64_t c, const int64_t p[3])
{
    float sum = 0.0f;
    for (int64_t t0 = 0; t0 < g->kernel[0]; ++t0) {
        int64_t o0 = convoy__col2im_output_coord(g, 0, p[0], t0);
        if (o0 < 0)
            continue;
        for (int64_t t1 = 0; t1 < g->kernel[1]; ++t1) {
            int64_t o1 = convoy__col2im_output_coord(g, 1, p[1], t1);
            if (o1 < 0)
                continue;
            for (int64_t t2 = 0; t2 < g->kernel[2]; ++t2) {
                int64_t o2 = convoy__col2im_output_coord(g, 2, p[2], t2);
                if (o2 < 0)
                    continue;
                int64_t row = ((c * g->kernel[0] + t0) * g->kernel[1] + t1) * g->kernel[2] + t2;
                int64_t column = (o0 * g->out[1] + o1) * g->out[2] + o2;
                sum += col[row * ld + column];
            }
        }
    }
    return sum;
}

#endif /* CONVOY_KERNELS_CONV_INDEX_H */
