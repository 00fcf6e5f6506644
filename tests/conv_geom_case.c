/* Literal convolution cases for the internal tests: the border and the sizes
 * are resolved by the reference of conv_reference.c (never by the library's
 * shape math), the library's geometry is filled from that, and the reference
 * runs on any geometry whose sizes it agrees with. */
#include "conv_geom_case.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const convoy_border borders[] = {CONVOY_BORDER_EXPLICIT, CONVOY_BORDER_VALID,
                                        CONVOY_BORDER_FULL, CONVOY_BORDER_HALF};

int geom_case_ref(const geom_case *c, ref_geom *r)
{
    const int nd = c->nd;
    if (nd < 2 || nd > 3 || c->groups < 1 || (unsigned)c->border > 3 || (c->unshared && nd != 2))
        return 0;
    convoy_conv_params p;
    memset(&p, 0, sizeof p);
    p.spatial_dims = nd;
    p.border = borders[c->border];
    p.groups = c->groups;
    p.flip = c->flip;
    int64_t x[5] = {c->n, c->c}, w[5] = {c->m, c->c / c->groups};
    for (int a = 0; a < nd; ++a) {
        x[2 + a] = c->in[a];
        w[2 + a] = c->k[a];
        p.stride[a] = c->stride[a];
        p.dilation[a] = c->dilation[a];
        p.pad_before[a] = c->pad_before[a];
        p.pad_after[a] = c->pad_after[a];
    }
    /* Unshared filters only add the output extents to the filter's shape,
     * which the shared resolution computes. */
    if (!ref_conv_geom(&p, x, w, r))
        return 0;
    r->unshared = c->unshared;
    return 1;
}

int geom_case_geom(const geom_case *c, convoy__conv_geom *g)
{
    ref_geom r;
    memset(g, 0, sizeof *g);
    if (!geom_case_ref(c, &r))
        return 0;
    g->spatial_dims = r.nd;
    g->batch = r.batch;
    g->in_channels = r.chans;
    g->out_channels = r.filters;
    g->groups = r.groups;
    g->flip = r.flip;
    g->unshared = r.unshared;
    const int lead = 3 - r.nd;
    for (int a = 0; a < 3; ++a) {
        g->in[a] = g->kernel[a] = g->out[a] = g->stride[a] = g->dilation[a] = 1;
        if (a < lead)
            continue;
        const int j = a - lead;
        g->in[a] = r.in[j];
        g->kernel[a] = r.k[j];
        g->out[a] = r.out[j];
        g->pad_before[a] = r.pl[j];
        g->pad_after[a] = r.pr[j];
        g->stride[a] = r.s[j];
        g->dilation[a] = r.d[j];
    }
    return 1;
}

int geom_ref(const convoy__conv_geom *g, ref_geom *r)
{
    const int nd = g->spatial_dims;
    if (nd < 2 || nd > 3)
        return 0;
    const int lead = 3 - nd;
    for (int a = 0; a < lead; ++a) {
        if (g->in[a] != 1 || g->kernel[a] != 1 || g->out[a] != 1 || g->stride[a] != 1 ||
            g->dilation[a] != 1 || g->pad_before[a] != 0 || g->pad_after[a] != 0)
            return 0;
    }
    geom_case c = {.nd = nd,
                   .n = g->batch,
                   .c = g->in_channels,
                   .m = g->out_channels,
                   .groups = g->groups,
                   .flip = g->flip,
                   .unshared = g->unshared,
                   .border = PADS};
    for (int j = 0; j < nd; ++j) {
        c.in[j] = g->in[lead + j];
        c.k[j] = g->kernel[lead + j];
        c.stride[j] = g->stride[lead + j];
        c.dilation[j] = g->dilation[lead + j];
        c.pad_before[j] = g->pad_before[lead + j];
        c.pad_after[j] = g->pad_after[lead + j];
    }
    if (c.groups < 1 || c.c % c.groups != 0 || !geom_case_ref(&c, r))
        return 0;
    for (int j = 0; j < nd; ++j) {
        if (r->out[j] != g->out[lead + j])
            return 0;
    }
    return 1;
}

void geom_describe(const convoy__conv_geom *g, char *text, size_t size)
{
    snprintf(text, size,
             "%dD N%lld C%lld M%lld g%lld in %lldx%lldx%lld k %lldx%lldx%lld "
             "out %lldx%lldx%lld s %lld,%lld,%lld d %lld,%lld,%lld "
             "pad (%lld,%lld,%lld)/(%lld,%lld,%lld) flip %d unshared %d",
             g->spatial_dims, (long long)g->batch, (long long)g->in_channels,
             (long long)g->out_channels, (long long)g->groups, (long long)g->in[0],
             (long long)g->in[1], (long long)g->in[2], (long long)g->kernel[0],
             (long long)g->kernel[1], (long long)g->kernel[2], (long long)g->out[0],
             (long long)g->out[1], (long long)g->out[2], (long long)g->stride[0],
             (long long)g->stride[1], (long long)g->stride[2], (long long)g->dilation[0],
             (long long)g->dilation[1], (long long)g->dilation[2], (long long)g->pad_before[0],
             (long long)g->pad_before[1], (long long)g->pad_before[2], (long long)g->pad_after[0],
             (long long)g->pad_after[1], (long long)g->pad_after[2], g->flip, g->unshared);
}

double *case_reference(const convoy__conv_geom *g, convoy_conv_direction dir, const float *x,
                       const float *w, const float *dy)
{
    ref_geom r;
    if (!geom_ref(g, &r)) {
        char text[512];
        geom_describe(g, text, sizeof text);
        printf("  the reference does not agree with the geometry %s\n", text);
        return NULL;
    }
    const int64_t count = dir == CONVOY_CONV_FORWARD         ? ref_output_numel(&r)
                          : dir == CONVOY_CONV_BACKWARD_DATA ? ref_input_numel(&r)
                                                             : ref_filter_numel(&r);
    double *result = malloc((size_t)(count > 0 ? count : 1) * sizeof *result);
    if (!result) {
        printf("  no memory for a reference of %lld elements\n", (long long)count);
        return NULL;
    }
    switch (dir) {
    case CONVOY_CONV_FORWARD:
        ref_conv_forward(&r, x, w, result);
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        ref_conv_backward_data(&r, w, dy, result);
        break;
    default:
        ref_conv_backward_filter(&r, x, dy, result);
        break;
    }
    return result;
}
