/* The direct convolution: every output element of every direction computed by plain loops
 * over the CONV_SEMANTICS.md sums, accumulating in double. It is the library's reference and
 * its last resort, so it favours being obviously right over speed and needs no workspace. */
#include <stdint.h>

#include "cpu/conv_cpu.h"
#include "kernels/conv_index.h"

/* Sizes every loop below needs, derived once from the geometry. */
typedef struct direct_dims {
    int64_t batch, in_channels, out_channels;
    int64_t group_in;  /* C / g */
    int64_t group_out; /* M / g */
    int64_t in_volume, out_volume, kernel_volume;
} direct_dims;

static direct_dims dims_of(const convoy__conv_geom *g)
{
    direct_dims d;
    d.batch = g->batch;
    d.in_channels = g->in_channels;
    d.out_channels = g->out_channels;
    d.group_in = g->in_channels / g->groups;
    d.group_out = g->out_channels / g->groups;
    d.in_volume = convoy__geom_in_spatial(g);
    d.out_volume = convoy__geom_out_spatial(g);
    d.kernel_volume = convoy__geom_kernel_spatial(g);
    return d;
}

/* Offset of filter (m, ci, tap 0) for output position o: shared filters ignore o, unshared
 * ones keep one (C/g, k0, k1, k2) block per output position. */
static int64_t filter_base(const convoy__conv_geom *g, const direct_dims *d, int64_t m, int64_t o,
                           int64_t ci)
{
    int64_t block = g->unshared ? m * d->out_volume + o : m;
    return (block * d->group_in + ci) * d->kernel_volume;
}

/* Sum over one channel and every tap of input x weight for output position (o0, o1, o2).
 * chan is the channel's input volume, w the (k0, k1, k2) filter block that pairs with it. */
static double window_dot(const convoy__conv_geom *g, const float *chan, const float *w,
                         const int64_t o[3])
{
    double acc = 0.0;
    for (int64_t t0 = 0; t0 < g->kernel[0]; ++t0) {
        int64_t p0 = convoy__conv_input_coord(g, 0, o[0], t0);
        if (p0 < 0 || p0 >= g->in[0])
            continue;
        for (int64_t t1 = 0; t1 < g->kernel[1]; ++t1) {
            int64_t p1 = convoy__conv_input_coord(g, 1, o[1], t1);
            if (p1 < 0 || p1 >= g->in[1])
                continue;
            const float *line = chan + (p0 * g->in[1] + p1) * g->in[2];
            const float *taps = w + (t0 * g->kernel[1] + t1) * g->kernel[2];
            for (int64_t t2 = 0; t2 < g->kernel[2]; ++t2) {
                int64_t p2 = convoy__conv_input_coord(g, 2, o[2], t2);
                if (p2 < 0 || p2 >= g->in[2])
                    continue;
                acc += (double)line[p2] * (double)taps[t2];
            }
        }
    }
    return acc;
}

/* y[n, m, o] = sum over the group's channels and taps of xp[n, c, o*s + tap*d] * w[m, ci, t]. */
static void direct_forward(const convoy__conv_geom *g, const float *x, const float *w, float *y)
{
    direct_dims d = dims_of(g);
    for (int64_t n = 0; n < d.batch; ++n) {
        for (int64_t m = 0; m < d.out_channels; ++m) {
            int64_t grp = m / d.group_out;
            const float *x_grp = x + (n * d.in_channels + grp * d.group_in) * d.in_volume;
            float *y_nm = y + (n * d.out_channels + m) * d.out_volume;
            int64_t o[3], oi = 0;
            for (o[0] = 0; o[0] < g->out[0]; ++o[0]) {
                for (o[1] = 0; o[1] < g->out[1]; ++o[1]) {
                    for (o[2] = 0; o[2] < g->out[2]; ++o[2], ++oi) {
                        double acc = 0.0;
                        for (int64_t ci = 0; ci < d.group_in; ++ci)
                            acc += window_dot(g, x_grp + ci * d.in_volume,
                                              w + filter_base(g, &d, m, oi, ci), o);
                        y_nm[oi] = (float)acc;
                    }
                }
            }
        }
    }
}

/* dx[n, c, p] gathers, for every tap, the one output position (if any) whose window reads p
 * through that tap, then sums dy x w over the filters of c's group. A gather rather than a
 * scatter keeps each sum in one double accumulator. */
static void direct_backward_data(const convoy__conv_geom *g, const float *w, const float *dy,
                                 float *dx)
{
    direct_dims d = dims_of(g);
    for (int64_t n = 0; n < d.batch; ++n) {
        for (int64_t c = 0; c < d.in_channels; ++c) {
            int64_t grp = c / d.group_in, ci = c % d.group_in;
            const float *dy_grp = dy + (n * d.out_channels + grp * d.group_out) * d.out_volume;
            float *dx_nc = dx + (n * d.in_channels + c) * d.in_volume;
            int64_t p[3], pi = 0;
            for (p[0] = 0; p[0] < g->in[0]; ++p[0]) {
                for (p[1] = 0; p[1] < g->in[1]; ++p[1]) {
                    for (p[2] = 0; p[2] < g->in[2]; ++p[2], ++pi) {
                        double acc = 0.0;
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
                                    int64_t oi = (o0 * g->out[1] + o1) * g->out[2] + o2;
                                    int64_t t = (t0 * g->kernel[1] + t1) * g->kernel[2] + t2;
                                    for (int64_t mi = 0; mi < d.group_out; ++mi) {
                                        int64_t m = grp * d.group_out + mi;
                                        acc += (double)dy_grp[mi * d.out_volume + oi] *
                                               (double)w[filter_base(g, &d, m, oi, ci) + t];
                                    }
                                }
                            }
                        }
                        dx_nc[pi] = (float)acc;
                    }
                }
            }
        }
    }
}

/* One weight-gradient entry: the sum over images and output positions in [o_begin, o_end) of
 * dy[n, m, o] * xp[n, c, o*s + tap*d] for the fixed tap (t0, t1, t2). */
static double filter_entry(const convoy__conv_geom *g, const direct_dims *d, const float *x,
                           const float *dy, int64_t m, int64_t c, const int64_t t[3],
                           int64_t o_begin, int64_t o_end)
{
    double acc = 0.0;
    for (int64_t n = 0; n < d->batch; ++n) {
        const float *chan = x + (n * d->in_channels + c) * d->in_volume;
        const float *dy_nm = dy + (n * d->out_channels + m) * d->out_volume;
        for (int64_t oi = o_begin; oi < o_end; ++oi) {
            int64_t o[3];
            convoy__col_column_decode(g, oi, o);
            int64_t offset = 0, a;
            for (a = 0; a < 3; ++a) {
                int64_t p = convoy__conv_input_coord(g, a, o[a], t[a]);
                if (p < 0 || p >= g->in[a])
                    break;
                offset = offset * g->in[a] + p;
            }
            if (a == 3)
                acc += (double)dy_nm[oi] * (double)chan[offset];
        }
    }
    return acc;
}

/* dw[m, ci, t] (or dw[m, o, ci, t] unshared) sums dy x xp over the images and the output
 * positions the filter serves: all of them when shared, only o when unshared. Indexing dw by
 * the stored tap t and reading through convoy__conv_tap flips the result back when flip is
 * on, as CONV_SEMANTICS.md section 4 requires. */
static void direct_backward_filter(const convoy__conv_geom *g, const float *x, const float *dy,
                                   float *dw)
{
    direct_dims d = dims_of(g);
    int64_t positions = g->unshared ? d.out_volume : 1;
    for (int64_t m = 0; m < d.out_channels; ++m) {
        int64_t grp = m / d.group_out;
        for (int64_t oi = 0; oi < positions; ++oi) {
            int64_t o_begin = g->unshared ? oi : 0;
            int64_t o_end = g->unshared ? oi + 1 : d.out_volume;
            for (int64_t ci = 0; ci < d.group_in; ++ci) {
                float *dw_block = dw + filter_base(g, &d, m, oi, ci);
                int64_t t[3], ti = 0;
                for (t[0] = 0; t[0] < g->kernel[0]; ++t[0])
                    for (t[1] = 0; t[1] < g->kernel[1]; ++t[1])
                        for (t[2] = 0; t[2] < g->kernel[2]; ++t[2], ++ti)
                            dw_block[ti] = (float)filter_entry(
                                g, &d, x, dy, m, grp * d.group_in + ci, t, o_begin, o_end);
            }
        }
    }
}

/* Empty batches, channels or filters need no special case: every written element is still
 * visited and receives an empty sum, 0. */
void convoy__cpu_conv_direct(const convoy__conv_geom *geom, convoy_conv_direction direction,
                             const convoy__conv_buffers *buffers)
{
    switch (direction) {
    case CONVOY_CONV_FORWARD:
        direct_forward(geom, buffers->input, buffers->filters, buffers->output);
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        direct_backward_data(geom, buffers->filters, buffers->output, buffers->input);
        break;
    case CONVOY_CONV_BACKWARD_FILTER:
        direct_backward_filter(geom, buffers->input, buffers->output, buffers->filters);
        break;
    }
}
