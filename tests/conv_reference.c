/* A double-precision reference for forward, backward_data and backward_filter
 * convolutions, written straight from the formulas of CONV_SEMANTICS.md
 * (sections 2-7): loops over result elements and filter taps that read the
 * zero-padded input; no im2col, no shared code with the library. */
#include "conv_reference.h"

#include <string.h>

/* Python floor division (b > 0), so that a too-small input gives o <= 0. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

int ref_conv_geom(const convoy_conv_params *p, const int64_t *x, const int64_t *w, ref_geom *g)
{
    const int nd = p->spatial_dims;
    if (nd != 2 && nd != 3)
        return 0;
    if (p->unshared && nd != 2)
        return 0;
    memset(g, 0, sizeof *g);
    g->nd = nd;
    g->batch = x[0];
    g->chans = x[1];
    g->filters = w[0];
    g->groups = p->groups;
    g->flip = p->flip;
    g->unshared = p->unshared;
    const int64_t filter_chans = p->unshared ? w[3] : w[1];
    const int k0 = p->unshared ? 4 : 2;
    if (g->groups < 1 || g->chans != filter_chans * g->groups || g->filters % g->groups != 0)
        return 0;
    for (int a = 0; a < nd; ++a) {
        g->in[a] = x[2 + a];
        g->k[a] = w[k0 + a];
        g->s[a] = p->stride[a];
        g->d[a] = p->dilation[a];
        if (g->k[a] < 1 || g->s[a] < 1 || g->d[a] < 1)
            return 0;
        const int64_t dk = (g->k[a] - 1) * g->d[a] + 1;
        switch (p->border) {
        case CONVOY_BORDER_VALID:
            g->pl[a] = g->pr[a] = 0;
            break;
        case CONVOY_BORDER_FULL:
            g->pl[a] = g->pr[a] = dk - 1;
            break;
        case CONVOY_BORDER_HALF:
            g->pl[a] = g->pr[a] = dk / 2;
            break;
        case CONVOY_BORDER_EXPLICIT:
            g->pl[a] = p->pad_before[a];
            g->pr[a] = p->pad_after[a];
            break;
        default:
            return 0;
        }
        g->out[a] = floor_div(g->in[a] + g->pl[a] + g->pr[a] - dk, g->s[a]) + 1;
        if (g->out[a] < 1)
            return 0;
    }
    if (p->unshared && (w[1] != g->out[0] || w[2] != g->out[1]))
        return 0;
    return 1;
}

int ref_input_dims(const ref_geom *g, int64_t *dims)
{
    dims[0] = g->batch;
    dims[1] = g->chans;
    for (int a = 0; a < g->nd; ++a)
        dims[2 + a] = g->in[a];
    return g->nd + 2;
}

int ref_filter_dims(const ref_geom *g, int64_t *dims)
{
    const int64_t cg = g->chans / g->groups;
    if (g->unshared) {
        dims[0] = g->filters;
        dims[1] = g->out[0];
        dims[2] = g->out[1];
        dims[3] = cg;
        dims[4] = g->k[0];
        dims[5] = g->k[1];
        return 6;
    }
    dims[0] = g->filters;
    dims[1] = cg;
    for (int a = 0; a < g->nd; ++a)
        dims[2 + a] = g->k[a];
    return g->nd + 2;
}

int ref_output_dims(const ref_geom *g, int64_t *dims)
{
    dims[0] = g->batch;
    dims[1] = g->filters;
    for (int a = 0; a < g->nd; ++a)
        dims[2 + a] = g->out[a];
    return g->nd + 2;
}

static int64_t product(const int64_t *dims, int rank)
{
    int64_t n = 1;
    for (int j = 0; j < rank; ++j)
        n *= dims[j];
    return n;
}

int64_t ref_input_numel(const ref_geom *g)
{
    int64_t dims[6];
    return product(dims, ref_input_dims(g, dims));
}

int64_t ref_filter_numel(const ref_geom *g)
{
    int64_t dims[6];
    return product(dims, ref_filter_dims(g, dims));
}

int64_t ref_output_numel(const ref_geom *g)
{
    int64_t dims[6];
    return product(dims, ref_output_dims(g, dims));
}

/* ---- indexing ---------------------------------------------------------- */

/* Advances a multi-index over extents ext[0..nd-1] (last axis fastest);
 * returns 0 once it wrapped around to all zeros. */
static int next_index(int64_t *idx, const int64_t *ext, int nd)
{
    for (int a = nd - 1; a >= 0; --a) {
        if (++idx[a] < ext[a])
            return 1;
        idx[a] = 0;
    }
    return 0;
}

/* xp[n, c, q]: the input at padded position q, zero outside the real input. */
static double padded_input(const ref_geom *g, const float *x, int64_t n, int64_t c,
                           const int64_t *q)
{
    int64_t offset = n * g->chans + c;
    for (int a = 0; a < g->nd; ++a) {
        const int64_t r = q[a] - g->pl[a];
        if (r < 0 || r >= g->in[a])
            return 0.0;
        offset = offset * g->in[a] + r;
    }
    return (double)x[offset];
}

/* Offset of w[m, (o,) c', tap] where tap is a tap of the stored filter. */
static int64_t filter_offset(const ref_geom *g, int64_t m, const int64_t *o, int64_t cc,
                             const int64_t *tap)
{
    const int64_t cg = g->chans / g->groups;
    int64_t offset = m;
    if (g->unshared) {
        for (int a = 0; a < g->nd; ++a)
            offset = offset * g->out[a] + o[a];
    }
    offset = offset * cg + cc;
    for (int a = 0; a < g->nd; ++a)
        offset = offset * g->k[a] + tap[a];
    return offset;
}

/* The stored tap that plays the role of tap t in w': reversed when flip. */
static void stored_tap(const ref_geom *g, const int64_t *t, int64_t *tap)
{
    for (int a = 0; a < g->nd; ++a)
        tap[a] = g->flip ? g->k[a] - 1 - t[a] : t[a];
}

/* w'[m, (o,) c', t]. */
static double flipped_filter(const ref_geom *g, const float *w, int64_t m, const int64_t *o,
                             int64_t cc, const int64_t *t)
{
    int64_t tap[3];
    stored_tap(g, t, tap);
    return (double)w[filter_offset(g, m, o, cc, tap)];
}

static int64_t output_offset(const ref_geom *g, int64_t n, int64_t m, const int64_t *o)
{
    int64_t offset = n * g->filters + m;
    for (int a = 0; a < g->nd; ++a)
        offset = offset * g->out[a] + o[a];
    return offset;
}

static int64_t input_offset(const ref_geom *g, int64_t n, int64_t c, const int64_t *q)
{
    int64_t offset = n * g->chans + c;
    for (int a = 0; a < g->nd; ++a)
        offset = offset * g->in[a] + q[a];
    return offset;
}

/* ---- the three directions --------------------------------------------- */

void ref_conv_forward(const ref_geom *g, const float *x, const float *w, double *y)
{
    const int nd = g->nd;
    const int64_t cg = g->chans / g->groups, mg = g->filters / g->groups;
    for (int64_t n = 0; n < g->batch; ++n) {
        for (int64_t m = 0; m < g->filters; ++m) {
            const int64_t c0 = (m / mg) * cg;
            int64_t o[3] = {0, 0, 0};
            do {
                double acc = 0.0;
                for (int64_t cc = 0; cc < cg; ++cc) {
                    int64_t t[3] = {0, 0, 0};
                    do {
                        int64_t q[3];
                        for (int a = 0; a < nd; ++a)
                            q[a] = o[a] * g->s[a] + t[a] * g->d[a];
                        acc +=
                            padded_input(g, x, n, c0 + cc, q) * flipped_filter(g, w, m, o, cc, t);
                    } while (next_index(t, g->k, nd));
                }
                y[output_offset(g, n, m, o)] = acc;
            } while (next_index(o, g->out, nd));
        }
    }
}

void ref_conv_backward_data(const ref_geom *g, const float *w, const float *dy, double *dx)
{
    const int nd = g->nd;
    const int64_t cg = g->chans / g->groups, mg = g->filters / g->groups;
    /* An input with no elements on some axis has no gradient to write (the
     * loop below visits at least one position per axis). */
    for (int a = 0; a < nd; ++a) {
        if (g->in[a] == 0)
            return;
    }
    for (int64_t n = 0; n < g->batch; ++n) {
        for (int64_t c = 0; c < g->chans; ++c) {
            const int64_t group = c / cg, cc = c - group * cg;
            int64_t q[3] = {0, 0, 0};
            do {
                double acc = 0.0;
                for (int64_t m = group * mg; m < (group + 1) * mg; ++m) {
                    int64_t t[3] = {0, 0, 0};
                    do {
                        /* The output o with o*s + t*d - pl == q, if there is one. */
                        int64_t o[3];
                        int hit = 1;
                        for (int a = 0; a < nd && hit; ++a) {
                            const int64_t num = q[a] + g->pl[a] - t[a] * g->d[a];
                            if (num < 0 || num % g->s[a] != 0 || num / g->s[a] >= g->out[a])
                                hit = 0;
                            else
                                o[a] = num / g->s[a];
                        }
                        if (hit)
                            acc += (double)dy[output_offset(g, n, m, o)] *
                                   flipped_filter(g, w, m, o, cc, t);
                    } while (next_index(t, g->k, nd));
                }
                dx[input_offset(g, n, c, q)] = acc;
            } while (next_index(q, g->in, nd));
        }
    }
}

/* dw'[m, (region,) c', t] for one region (all outputs when shared). */
static double filter_gradient_tap(const ref_geom *g, const float *x, const float *dy, int64_t m,
                                  const int64_t *region, int64_t c, const int64_t *t)
{
    const int nd = g->nd;
    double acc = 0.0;
    for (int64_t n = 0; n < g->batch; ++n) {
        int64_t o[3] = {0, 0, 0};
        do {
            if (g->unshared && memcmp(o, region, (size_t)nd * sizeof *o) != 0)
                continue;
            int64_t q[3];
            for (int a = 0; a < nd; ++a)
                q[a] = o[a] * g->s[a] + t[a] * g->d[a];
            acc += (double)dy[output_offset(g, n, m, o)] * padded_input(g, x, n, c, q);
        } while (next_index(o, g->out, nd));
    }
    return acc;
}

void ref_conv_backward_filter(const ref_geom *g, const float *x, const float *dy, double *dw)
{
    const int nd = g->nd;
    const int64_t cg = g->chans / g->groups, mg = g->filters / g->groups;
    const int64_t one[3] = {1, 1, 1};
    for (int64_t m = 0; m < g->filters; ++m) {
        const int64_t c0 = (m / mg) * cg;
        int64_t region[3] = {0, 0, 0};
        do {
            for (int64_t cc = 0; cc < cg; ++cc) {
                int64_t t[3] = {0, 0, 0};
                do {
                    int64_t tap[3];
                    stored_tap(g, t, tap);
                    dw[filter_offset(g, m, region, cc, tap)] =
                        filter_gradient_tap(g, x, dy, m, region, c0 + cc, t);
                } while (next_index(t, g->k, nd));
            }
        } while (next_index(region, g->unshared ? g->out : one, nd));
    }
}
