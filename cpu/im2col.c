/* im2col and col2im for one image on the host, in the column-matrix layout that
 * kernels/conv_index.h defines. Both walk the matrix row by row and solve, once per row and
 * axis, which output positions read inside the image, so the inner loops are plain copies
 * (or adds) over contiguous columns with no bounds tests. im2col is on the GEMM path's
 * critical path, where it costs about a seventh of the GEMM time for a 3x3 layer. */
#include <stdint.h>
#include <string.h>

#include "cpu/conv_cpu.h"
#include "kernels/conv_index.h"

/* Where one kernel tap reads on one axis: input coordinate o * stride + offset for output
 * position o, valid for o in [lo, hi). */
typedef struct tap_span {
    int64_t offset;
    int64_t lo;
    int64_t hi;
} tap_span;

/* Solves 0 <= o * s + offset < in for o within [0, out). The bounds are computed with
 * non-negative numerators only, so C's truncating division is the floor/ceiling needed. */
static tap_span span_of_tap(const convoy__conv_geom *g, int axis, int64_t t)
{
    tap_span sp;
    int64_t s = g->stride[axis];
    int64_t out = g->out[axis];
    sp.offset = convoy__conv_tap(g, axis, t) * g->dilation[axis] - g->pad_before[axis];
    sp.lo = sp.offset < 0 ? (-sp.offset + s - 1) / s : 0;
    int64_t last = g->in[axis] - 1 - sp.offset;
    sp.hi = last < 0 ? 0 : last / s + 1;
    if (sp.lo > out)
        sp.lo = out;
    if (sp.hi > out)
        sp.hi = out;
    if (sp.hi < sp.lo)
        sp.hi = sp.lo;
    return sp;
}

/* Short runs are the norm (a 7x7 image has 7-float lines, padding is a float or two), and a
 * libc call per run would cost more than the work, so short runs are written inline. The
 * zeroing has no loop at all: compilers turn a loop of zero stores back into a memset call. */
#define SHORT_RUN 32

static inline void zero_floats(float *dst, int64_t count)
{
    if (count > 8) {
        memset(dst, 0, (size_t)count * sizeof(float));
    } else if (count >= 4) {
        /* Two four-float stores, overlapping when count < 8, cover the run. */
        static const float zeros[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(dst, zeros, sizeof zeros);
        memcpy(dst + count - 4, zeros, sizeof zeros);
    } else if (count > 0) {
        dst[0] = 0.0f;
        if (count > 1)
            dst[1] = 0.0f;
        if (count > 2)
            dst[2] = 0.0f;
    }
}

static inline void copy_floats(float *dst, const float *src, int64_t count)
{
    if (count > SHORT_RUN) {
        memcpy(dst, src, (size_t)count * sizeof(float));
        return;
    }
    int64_t i = 0;
    for (; i + 4 <= count; i += 4)
        memcpy(dst + i, src + i, 4 * sizeof(float));
    for (; i < count; ++i)
        dst[i] = src[i];
}

/* dst[i] += src[i]; written in blocks of four so that it vectorizes at -O2 as well. */
static inline void add_floats(float *dst, const float *src, int64_t count)
{
    int64_t i = 0;
    for (; i + 4 <= count; i += 4) {
        float a[4], b[4];
        memcpy(a, dst + i, sizeof a);
        memcpy(b, src + i, sizeof b);
        for (int k = 0; k < 4; ++k)
            a[k] += b[k];
        memcpy(dst + i, a, sizeof a);
    }
    for (; i < count; ++i)
        dst[i] += src[i];
}

/* One innermost run of a column-matrix row: positions [0, out2) along the last axis, reading
 * the input line src. */
static void fill_line(float *dst, const float *src, int64_t out2, int64_t s2, const tap_span *sp)
{
    zero_floats(dst, sp->lo);
    if (s2 == 1) {
        copy_floats(dst + sp->lo, src + sp->lo + sp->offset, sp->hi - sp->lo);
    } else if (s2 == 2) {
        /* A constant stride lets the compiler vectorize the gather with shuffles. */
        for (int64_t o = sp->lo; o < sp->hi; ++o)
            dst[o] = src[2 * o + sp->offset];
    } else {
        for (int64_t o = sp->lo; o < sp->hi; ++o)
            dst[o] = src[o * s2 + sp->offset];
    }
    zero_floats(dst + sp->hi, out2 - sp->hi);
}

/* The in-image lines [lo1, hi1) of one output plane when stride is 1 on the last two axes and
 * each output line is as long as an input line ("same" padding): destination and source then
 * advance together, so the whole block is one copy, after which the few padding columns it
 * filled with neighbouring lines' values are cleared. */
static void fill_plane_block(float *dst0, const float *src0, int64_t out2, const tap_span sp[3])
{
    int64_t begin = sp[1].lo * out2 + sp[2].lo;
    int64_t end = (sp[1].hi - 1) * out2 + sp[2].hi;
    int64_t shift = sp[1].offset * out2 + sp[2].offset;
    copy_floats(dst0 + begin, src0 + begin + shift, end - begin);
    for (int64_t o1 = sp[1].lo; o1 < sp[1].hi; ++o1) {
        float *line = dst0 + o1 * out2;
        if (o1 > sp[1].lo)
            zero_floats(line, sp[2].lo);
        if (o1 + 1 < sp[1].hi)
            zero_floats(line + sp[2].hi, out2 - sp[2].hi);
    }
}

/* Fills one column-matrix row (one channel, one tap triple) from that channel's volume. */
static void fill_row(const convoy__conv_geom *g, float *dst, const float *chan,
                     const tap_span sp[3])
{
    int64_t out1 = g->out[1], out2 = g->out[2];
    int64_t plane = out1 * out2;
    int contiguous = g->stride[1] == 1 && g->stride[2] == 1 && g->in[2] == out2;
    for (int64_t o0 = 0; o0 < g->out[0]; ++o0) {
        float *dst0 = dst + o0 * plane;
        if (o0 < sp[0].lo || o0 >= sp[0].hi || sp[1].hi == sp[1].lo || sp[2].hi == sp[2].lo) {
            zero_floats(dst0, plane);
            continue;
        }
        const float *src0 = chan + (o0 * g->stride[0] + sp[0].offset) * g->in[1] * g->in[2];
        /* Lines of the plane above and below the image are padding: clear them in two runs. */
        zero_floats(dst0, sp[1].lo * out2 + (contiguous ? sp[2].lo : 0));
        if (contiguous) {
            fill_plane_block(dst0, src0, out2, sp);
        } else {
            for (int64_t o1 = sp[1].lo; o1 < sp[1].hi; ++o1) {
                const float *line = src0 + (o1 * g->stride[1] + sp[1].offset) * g->in[2];
                fill_line(dst0 + o1 * out2, line, out2, g->stride[2], &sp[2]);
            }
        }
        int64_t tail = (sp[1].hi - 1) * out2 + (contiguous ? sp[2].hi : out2);
        zero_floats(dst0 + tail, plane - tail);
    }
}

void convoy__cpu_im2col(const convoy__conv_geom *g, const float *image, float *col, int64_t ld)
{
    int64_t in_volume = convoy__geom_in_spatial(g);
    int64_t row = 0;
    for (int64_t c = 0; c < g->in_channels; ++c) {
        /* One channel's kvol rows are written while its volume is still in cache. */
        const float *chan = image + c * in_volume;
        tap_span sp[3];
        for (int64_t t0 = 0; t0 < g->kernel[0]; ++t0) {
            sp[0] = span_of_tap(g, 0, t0);
            for (int64_t t1 = 0; t1 < g->kernel[1]; ++t1) {
                sp[1] = span_of_tap(g, 1, t1);
                for (int64_t t2 = 0; t2 < g->kernel[2]; ++t2, ++row) {
                    sp[2] = span_of_tap(g, 2, t2);
                    fill_row(g, col + row * ld, chan, sp);
                }
            }
        }
    }
}

/* Adds one column-matrix row back into the channel volume it was copied from. Only the
 * in-image spans are visited; the padding entries have no input element to go to. */
static void add_row(const convoy__conv_geom *g, float *chan, const float *src, const tap_span sp[3])
{
    int64_t out1 = g->out[1], out2 = g->out[2], s2 = g->stride[2];
    for (int64_t o0 = sp[0].lo; o0 < sp[0].hi; ++o0) {
        float *dst0 = chan + (o0 * g->stride[0] + sp[0].offset) * g->in[1] * g->in[2];
        const float *src0 = src + o0 * out1 * out2;
        for (int64_t o1 = sp[1].lo; o1 < sp[1].hi; ++o1) {
            float *line = dst0 + (o1 * g->stride[1] + sp[1].offset) * g->in[2];
            const float *from = src0 + o1 * out2;
            int64_t off2 = sp[2].offset;
            if (s2 == 1) {
                add_floats(line + sp[2].lo + off2, from + sp[2].lo, sp[2].hi - sp[2].lo);
            } else {
                for (int64_t o2 = sp[2].lo; o2 < sp[2].hi; ++o2)
                    line[o2 * s2 + off2] += from[o2];
            }
        }
    }
}

/* For any one image element the scatter adds its terms in increasing tap order, the order in
 * which convoy__col2im_gather sums them, so both give the same float result and the gather
 * stays the definition the tests compare against. */
void convoy__cpu_col2im(const convoy__conv_geom *g, const float *col, int64_t ld, float *image)
{
    int64_t in_volume = convoy__geom_in_spatial(g);
    zero_floats(image, g->in_channels * in_volume);
    int64_t row = 0;
    for (int64_t c = 0; c < g->in_channels; ++c) {
        float *chan = image + c * in_volume;
        tap_span sp[3];
        for (int64_t t0 = 0; t0 < g->kernel[0]; ++t0) {
            sp[0] = span_of_tap(g, 0, t0);
            for (int64_t t1 = 0; t1 < g->kernel[1]; ++t1) {
                sp[1] = span_of_tap(g, 1, t1);
                for (int64_t t2 = 0; t2 < g->kernel[2]; ++t2, ++row) {
                    sp[2] = span_of_tap(g, 2, t2);
                    add_row(g, chan, col + row * ld, sp);
                }
            }
        }
    }
}
