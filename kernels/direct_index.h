/* The direct convolution, one written element at a time, shared by the CUDA "direct" kernels
 * (cuda/kernels.cu), the CPU direct implementation (cpu/conv_direct.c) and the host tests.
 *
 * Each function returns, in double, the full sum behind one element of the written operand,
 * so a kernel needs one thread per element, no atomics and no workspace, and the result does
 * not depend on scheduling. Shared filters are (M, C/g, k0, k1, k2); unshared ones are
 * (M, o0, o1, o2, C/g, k0, k1, k2). Taps and padding follow kernels/conv_index.h, so flip,
 * stride, dilation, asymmetric padding and groups mean here what they mean for im2col. */
#ifndef CONVOY_KERNELS_DIRECT_INDEX_H
#define CONVOY_KERNELS_DIRECT_INDEX_H

#include <stdint.h>

#include "kernels/conv_index.h"

/* Offset of filter tap (c', t0, t1, t2) of output channel m (at output position o_flat for
 * unshared filters); cg = C/g. */
CONVOY_HD static inline int64_t convoy__direct_filter_offset(const convoy__conv_geom *g, int64_t m,
                                                             int64_t o_flat, int64_t c, int64_t t0,
                                                             int64_t t1, int64_t t2)
{
    int64_t cg = g->in_channels / g->groups;
    int64_t base =
        g->unshared ? (m * (g->out[0] * g->out[1] * g->out[2]) + o_flat) * cg + c : m * cg + c;
    return ((base * g->kernel[0] + t0) * g->kernel[1] + t1) * g->kernel[2] + t2;
}

/* output[index], index over (N, M, o0, o1, o2). */
CONVOY_HD static inline double convoy__direct_forward_value(const convoy__conv_geom *g,
                                                            const float *input,
                                                            const float *filters, int64_t index)
{
    int64_t positions = g->out[0] * g->out[1] * g->out[2];
    int64_t o_flat = index % positions;
    int64_t m = (index / positions) % g->out_channels;
    int64_t n = index / positions / g->out_channels;
    int64_t o[3];
    convoy__col_column_decode(g, o_flat, o);
    int64_t cg = g->in_channels / g->groups;
    int64_t c0 = m / (g->out_channels / g->groups) * cg;
    int64_t in_volume = g->in[0] * g->in[1] * g->in[2];
    if (in_volume == 0)
        return 0.0; /* every tap reads padding; input may be NULL */
    double sum = 0.0;
    for (int64_t c = 0; c < cg; ++c) {
        const float *x = input + (n * g->in_channels + c0 + c) * in_volume;
        for (int64_t t0 = 0; t0 < g->kernel[0]; ++t0) {
            int64_t p0 = convoy__conv_input_coord(g, 0, o[0], t0);
            if (p0 < 0 || p0 >= g->in[0])
                continue;
            for (int64_t t1 = 0; t1 < g->kernel[1]; ++t1) {
                int64_t p1 = convoy__conv_input_coord(g, 1, o[1], t1);
                if (p1 < 0 || p1 >= g->in[1])
                    continue;
                for (int64_t t2 = 0; t2 < g->kernel[2]; ++t2) {
                    int64_t p2 = convoy__conv_input_coord(g, 2, o[2], t2);
                    if (p2 < 0 || p2 >= g->in[2])
                        continue;
                    sum +=
                        (double)x[(p0 * g->in[1] + p1) * g->in[2] + p2] *
                        (double)filters[convoy__direct_filter_offset(g, m, o_flat, c, t0, t1, t2)];
                }
            }
        }
    }
    return sum;
}

/* input[index] of backward_data, index over (N, C, in0, in1, in2): every (output position,
 * tap) pair whose window reads this element, over the output channels of its group. */
CONVOY_HD static inline double convoy__direct_backward_data_value(const convoy__conv_geom *g,
                                                                  const float *filters,
                                                                  const float *grad_output,
                                                                  int64_t index)
{
    int64_t p[3];
    p[2] = index % g->in[2];
    index /= g->in[2];
    p[1] = index % g->in[1];
    index /= g->in[1];
    p[0] = index % g->in[0];
    index /= g->in[0];
    int64_t c_full = index % g->in_channels;
    int64_t n = index / g->in_channels;
    int64_t cg = g->in_channels / g->groups;
    int64_t mg = g->out_channels / g->groups;
    int64_t group = c_full / cg;
    int64_t c = c_full - group * cg;
    int64_t positions = g->out[0] * g->out[1] * g->out[2];
    double sum = 0.0;
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
                int64_t o_flat = (o0 * g->out[1] + o1) * g->out[2] + o2;
                for (int64_t m = group * mg; m < (group + 1) * mg; ++m) {
                    sum +=
                        (double)grad_output[(n * g->out_channels + m) * positions + o_flat] *
                        (double)filters[convoy__direct_filter_offset(g, m, o_flat, c, t0, t1, t2)];
                }
            }
        }
    }
    return sum;
}

/* filters[index] of backward_filter, index over the filter layout: the sum over the batch
 * and over the output positions (just the filter's own position when unshared) of the
 * output gradient times the input the tap reads there. */
CONVOY_HD static inline double convoy__direct_backward_filter_value(const convoy__conv_geom *g,
                                                                    const float *input,
                                                                    const float *grad_output,
                                                                    int64_t index)
{
    int64_t t[3];
    t[2] = index % g->kernel[2];
    index /= g->kernel[2];
    t[1] = index % g->kernel[1];
    index /= g->kernel[1];
    t[0] = index % g->kernel[0];
    index /= g->kernel[0];
    int64_t cg = g->in_channels / g->groups;
    int64_t c = index % cg;
    index /= cg;
    int64_t positions = g->out[0] * g->out[1] * g->out[2];
    int64_t first = 0, last = positions;
    if (g->unshared) {
        first = index % positions;
        last = first + 1;
        index /= positions;
    }
    int64_t m = index;
    int64_t c_full = m / (g->out_channels / g->groups) * cg + c;
    int64_t in_volume = g->in[0] * g->in[1] * g->in[2];
    if (in_volume == 0)
        return 0.0; /* every tap reads padding; input may be NULL */
    double sum = 0.0;
    for (int64_t n = 0; n < g->batch; ++n) {
        const float *x = input + (n * g->in_channels + c_full) * in_volume;
        const float *dy = grad_output + (n * g->out_channels + m) * positions;
        for (int64_t o_flat = first; o_flat < last; ++o_flat) {
            int64_t o[3];
            convoy__col_column_decode(g, o_flat, o);
            int64_t offset = 0;
            int inside = 1;
            for (int a = 0; a < 3 && inside; ++a) {
                int64_t q = convoy__conv_input_coord(g, a, o[a], t[a]);
                inside = q >= 0 && q < g->in[a];
                offset = offset * g->in[a] + q;
            }
            if (inside)
                sum += (double)dy[o_flat] * (double)x[offset];
        }
    }
    return sum;
}

#endif /* CONVOY_KERNELS_DIRECT_INDEX_H */
