/* Validation of convolution parameters and the shape formulas of
 * CONV_SEMANTICS.md section 2. All size arithmetic is int64 with overflow
 * checks: a huge pad or dilation is an error, never a wrapped extent, and a
 * geometry is only handed on when every size derived from it (each
 * tensor's element count and bytes, and the products the geometry helpers
 * and backends form) fits. */
#include <stdio.h>
#include <string.h>

#include "runtime/conv_shape.h"
#include "core/checked_math.h"
#include "core/error_detail.h"

/* Extents, pads and dilations beyond this are rejected before any product
 * is formed, so the formulas below cannot overflow int64. */
#define CONVOY__MAX_EXTENT ((int64_t)1 << 40)

static const char *const axis_names[2][3] = {{"H", "W", ""}, {"D", "H", "W"}};

/* Called for every tensor created, so it formats digits by hand rather than
 * through snprintf. */
void convoy__dims_text(const int64_t *dims, int rank, char *buffer, size_t size)
{
    size_t used = 0;
    for (int i = 0; i < rank; ++i) {
        char digits[24];
        int count = 0;
        uint64_t value = dims[i] < 0 ? (uint64_t)(-(dims[i] + 1)) + 1 : (uint64_t)dims[i];
        do {
            digits[count++] = (char)('0' + value % 10);
            value /= 10;
        } while (value);
        if (dims[i] < 0)
            digits[count++] = '-';
        if (used + (size_t)count + (i ? 1u : 0u) + 1 > size)
            break;
        if (i)
            buffer[used++] = 'x';
        while (count)
            buffer[used++] = digits[--count];
    }
    if (size)
        buffer[used] = '\0';
}

convoy_status convoy__conv_check_params(const char *call, const convoy_conv_params *p)
{
    if (!p)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: params is NULL", call);
    if (p->spatial_dims != 2 && p->spatial_dims != 3)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: params.spatial_dims is %d, expected 2 or 3", call,
                             p->spatial_dims);
    if ((int)p->border < CONVOY_BORDER_VALID || p->border > CONVOY_BORDER_EXPLICIT)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: params.border is %d, expected 0..3 (valid, full, half, explicit)",
                             call, (int)p->border);
    for (int a = 0; a < p->spatial_dims; ++a) {
        if (p->stride[a] < 1 || p->stride[a] > CONVOY__MAX_EXTENT)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                 "%s: params.stride[%d] is %lld, expected >= 1", call, a,
                                 (long long)p->stride[a]);
        if (p->dilation[a] < 1 || p->dilation[a] > CONVOY__MAX_EXTENT)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                 "%s: params.dilation[%d] is %lld, expected >= 1", call, a,
                                 (long long)p->dilation[a]);
        if (p->border == CONVOY_BORDER_EXPLICIT) {
            if (p->pad_before[a] < 0 || p->pad_before[a] > CONVOY__MAX_EXTENT)
                return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                     "%s: params.pad_before[%d] is %lld, expected 0..2^40", call, a,
                                     (long long)p->pad_before[a]);
            if (p->pad_after[a] < 0 || p->pad_after[a] > CONVOY__MAX_EXTENT)
                return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                     "%s: params.pad_after[%d] is %lld, expected 0..2^40", call, a,
                                     (long long)p->pad_after[a]);
        }
    }
    if (p->groups < 1)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: params.groups is %lld, expected >= 1", call,
                             (long long)p->groups);
    if (p->flip != 0 && p->flip != 1)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: params.flip is %d, expected 0 or 1",
                             call, p->flip);
    if (p->unshared != 0 && p->unshared != 1)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: params.unshared is %d, expected 0 or 1", call, p->unshared);
    if (p->unshared && p->spatial_dims != 2)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: unshared convolution is 2D only, params.spatial_dims is %d", call,
                             p->spatial_dims);
    return CONVOY_OK;
}

static convoy_status check_rank(const char *call, const char *name, int rank, int expected,
                                const char *layout)
{
    if (rank == expected)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_SHAPE,
                         "%s: %s has rank %d but this convolution takes rank %d %s", call, name,
                         rank, expected, layout);
}

static convoy_status too_large(const char *call, const char *name, const int64_t *dims, int rank,
                               const char *what)
{
    char text[160];
    convoy__dims_text(dims, rank, text, sizeof text);
    return convoy__error(CONVOY_ERR_SHAPE, "%s: %s (%s) is too large: %s", call, name, text, what);
}

/* Each operand's element count fits int64 and its float bytes size_t. */
static convoy_status check_tensor_size(const char *call, const char *name, const int64_t *dims,
                                       int rank)
{
    int64_t count;
    size_t bytes;
    if (!convoy__product_i64(dims, rank, &count))
        return too_large(call, name, dims, rank, "its elements are more than int64 can count");
    if (!convoy__bytes_of(count, sizeof(float), &bytes))
        return too_large(call, name, dims, rank,
                         "its bytes are more than size_t can count (no memory can hold it)");
    return CONVOY_OK;
}

/* The tensors, and then the products the geometry helpers
 * (core/conv_geometry.h) and the backends form in their own order, which a
 * zero dim can hide from a tensor's element count: the spatial volumes, the
 * im2col rows (C/g * kvol per group, C * kvol per image) and each operand's
 * count as the helpers multiply it. */
static convoy_status check_sizes(const char *call, const convoy__conv_operands *op,
                                 const convoy__conv_geom *g)
{
    const char *in_name = op->names[0], *f_name = op->names[1], *out_name = op->names[2];
    convoy_status status;
    if ((status = check_tensor_size(call, in_name, op->input, op->input_rank)) != CONVOY_OK ||
        (status = check_tensor_size(call, f_name, op->filters, op->filter_rank)) != CONVOY_OK ||
        (status = check_tensor_size(call, out_name, op->output, op->output_rank)) != CONVOY_OK)
        return status;
    int64_t in_volume, out_volume, kernel_volume, count, rows;
    if (!convoy__product_i64(g->in, 3, &in_volume) ||
        !convoy__mul_i64(g->batch, g->in_channels, &count) ||
        !convoy__mul_i64(count, in_volume, &count))
        return too_large(call, in_name, op->input, op->input_rank,
                         "its spatial volume or element count overflows int64");
    if (!convoy__product_i64(g->out, 3, &out_volume) ||
        !convoy__mul_i64(g->batch, g->out_channels, &count) ||
        !convoy__mul_i64(count, out_volume, &count))
        return too_large(call, out_name, op->output, op->output_rank,
                         "its spatial volume or element count overflows int64");
    if (!convoy__product_i64(g->kernel, 3, &kernel_volume) ||
        !convoy__mul_i64(g->in_channels / g->groups, kernel_volume, &rows) ||
        !convoy__mul_i64(g->out_channels, rows, &count) ||
        (g->unshared && !convoy__mul_i64(count, out_volume, &count)) ||
        !convoy__mul_i64(g->in_channels, kernel_volume, &rows) ||
        !convoy__add_i64(rows, g->out_channels, &rows))
        return too_large(call, f_name, op->filters, op->filter_rank,
                         "its im2col rows (channels times kernel volume) overflow int64");
    return CONVOY_OK;
}

/* Python floor division for a possibly negative numerator. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

convoy_status convoy__conv_resolve(const char *call, const convoy_conv_params *p,
                                   const convoy__conv_operands *op, convoy__conv_geom *geom,
                                   int64_t *output_dims)
{
    convoy_status status = convoy__conv_check_params(call, p);
    if (status != CONVOY_OK)
        return status;
    const int nd = p->spatial_dims;
    const char *in_name = op->names[0], *f_name = op->names[1], *out_name = op->names[2];
    const char *const *axis = axis_names[nd - 2];
    const char *data_layout = nd == 2 ? "(N, C, H, W)" : "(N, C, D, H, W)";
    const char *filter_layout = p->unshared ? "(M, oH, oW, C/g, kH, kW)"
                                : nd == 2   ? "(M, C/g, kH, kW)"
                                            : "(M, C/g, kD, kH, kW)";
    if ((status = check_rank(call, in_name, op->input_rank, nd + 2, data_layout)) != CONVOY_OK ||
        (status = check_rank(call, f_name, op->filter_rank, p->unshared ? 6 : nd + 2,
                             filter_layout)) != CONVOY_OK)
        return status;
    if (op->output &&
        (status = check_rank(call, out_name, op->output_rank, nd + 2, data_layout)) != CONVOY_OK)
        return status;

    const int64_t *x = op->input, *w = op->filters;
    const int k0 = p->unshared ? 4 : 2; /* first kernel axis in the filter dims */
    const int64_t groups = p->groups;
    const int64_t channels = x[1], filter_channels = w[p->unshared ? 3 : 1], filters = w[0];
    int64_t grouped_channels;
    if (!convoy__mul_i64(filter_channels, groups, &grouped_channels))
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: %s dim %d has %lld channels per group, which times %lld groups "
                             "overflows int64",
                             call, f_name, p->unshared ? 3 : 1, (long long)filter_channels,
                             (long long)groups);
    if (channels != grouped_channels)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: %s has %lld channels but %s expect %lld x %lld group%s", call,
                             in_name, (long long)channels, f_name, (long long)filter_channels,
                             (long long)groups, groups == 1 ? "" : "s");
    if (filters % groups != 0)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: %s dim 0 has %lld filters, not divisible by %lld groups", call,
                             f_name, (long long)filters, (long long)groups);

    memset(geom, 0, sizeof *geom);
    geom->spatial_dims = nd;
    geom->batch = x[0];
    geom->in_channels = channels;
    geom->out_channels = filters;
    geom->groups = groups;
    geom->flip = p->flip;
    geom->unshared = p->unshared;
    for (int a = 0; a < 3; ++a) {
        geom->in[a] = geom->kernel[a] = geom->out[a] = 1;
        geom->stride[a] = geom->dilation[a] = 1;
    }
    int64_t out[5] = {x[0], filters, 0, 0, 0};
    for (int a = 0; a < nd; ++a) {
        const int g = a + 3 - nd; /* geometry axis: 2D uses axes 1 and 2 */
        const int64_t i = x[2 + a], k = w[k0 + a], s = p->stride[a], d = p->dilation[a];
        if (k < 1)
            return convoy__error(CONVOY_ERR_SHAPE,
                                 "%s: %s dim %d (kernel %s) is %lld, expected >= 1", call, f_name,
                                 k0 + a, axis[a], (long long)k);
        if (i > CONVOY__MAX_EXTENT || k > CONVOY__MAX_EXTENT)
            return convoy__error(CONVOY_ERR_SHAPE, "%s: %s extent on axis %s is too large", call,
                                 i > CONVOY__MAX_EXTENT ? in_name : f_name, axis[a]);
        if (k - 1 > 0 && d > CONVOY__MAX_EXTENT / (k - 1))
            return convoy__error(CONVOY_ERR_SHAPE,
                                 "%s: dilated kernel extent on axis %s overflows (k %lld, d %lld)",
                                 call, axis[a], (long long)k, (long long)d);
        const int64_t dk = (k - 1) * d + 1; /* <= 2^40 + 1 after the check above */
        int64_t pl = 0, pr = 0;
        switch (p->border) {
        case CONVOY_BORDER_VALID:
            break;
        case CONVOY_BORDER_FULL:
            pl = pr = dk - 1;
            break;
        case CONVOY_BORDER_HALF:
            pl = pr = dk / 2;
            break;
        case CONVOY_BORDER_EXPLICIT:
            pl = p->pad_before[a];
            pr = p->pad_after[a];
            break;
        }
        const int64_t o = floor_div(i + pl + pr - dk, s) + 1;
        if (o < 1)
            return convoy__error(
                CONVOY_ERR_SHAPE,
                "%s: %s extent %lld on axis %s gives output extent %lld (< 1) with kernel %lld, "
                "dilation %lld, stride %lld, padding %lld+%lld",
                call, in_name, (long long)i, axis[a], (long long)o, (long long)k, (long long)d,
                (long long)s, (long long)pl, (long long)pr);
        out[2 + a] = o;
        geom->in[g] = i;
        geom->kernel[g] = k;
        geom->out[g] = o;
        geom->pad_before[g] = pl;
        geom->pad_after[g] = pr;
        geom->stride[g] = s;
        geom->dilation[g] = d;
    }
    if (p->unshared && (w[1] != out[2] || w[2] != out[3]))
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: unshared %s regions are %lldx%lld (dims 1, 2) but the output is "
                             "%lldx%lld",
                             call, f_name, (long long)w[1], (long long)w[2], (long long)out[2],
                             (long long)out[3]);
    if (op->output) {
        static const char *const lead_names[2] = {"batch", "channels"};
        for (int j = 0; j < nd + 2; ++j) {
            if (op->output[j] == out[j])
                continue;
            char expected[96], got[96];
            convoy__dims_text(out, nd + 2, expected, sizeof expected);
            convoy__dims_text(op->output, nd + 2, got, sizeof got);
            return convoy__error(CONVOY_ERR_SHAPE,
                                 "%s: %s dim %d (%s) is %lld but %s and %s give %lld (expected "
                                 "%s, got %s)",
                                 call, out_name, j, j < 2 ? lead_names[j] : axis[j - 2],
                                 (long long)op->output[j], in_name, f_name, (long long)out[j],
                                 expected, got);
        }
    }
    const convoy__conv_operands checked = {
        x, op->input_rank, w, op->filter_rank, out, nd + 2, {in_name, f_name, out_name}};
    if ((status = check_sizes(call, &checked, geom)) != CONVOY_OK)
        return status;
    if (output_dims)
        memcpy(output_dims, out, (size_t)(nd + 2) * sizeof *out);
    return CONVOY_OK;
}

convoy_status convoy_conv_params_init(convoy_conv_params *p, int spatial_dims)
{
    if (!p)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "conv_params_init: params is NULL");
    if (spatial_dims != 2 && spatial_dims != 3)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "conv_params_init: spatial_dims is %d, expected 2 or 3", spatial_dims);
    memset(p, 0, sizeof *p);
    p->spatial_dims = spatial_dims;
    p->border = CONVOY_BORDER_VALID;
    for (int a = 0; a < 3; ++a)
        p->stride[a] = p->dilation[a] = 1;
    p->groups = 1;
    p->flip = 1;
    return CONVOY_OK;
}

convoy_status convoy_conv_output_dims(const convoy_conv_params *p, const int64_t *input_dims,
                                      const int64_t *filter_dims, int64_t *output_dims)
{
    static const char *call = "conv_output_dims";
    convoy_status status = convoy__conv_check_params(call, p);
    if (status != CONVOY_OK)
        return status;
    if (!input_dims || !filter_dims || !output_dims)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call,
                             !input_dims    ? "input_dims"
                             : !filter_dims ? "filter_dims"
                                            : "output_dims");
    const int nd = p->spatial_dims;
    const int filter_rank = p->unshared ? 6 : nd + 2;
    for (int j = 0; j < nd + 2; ++j) {
        if (input_dims[j] < 0)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: input dim %d is %lld (< 0)",
                                 call, j, (long long)input_dims[j]);
    }
    for (int j = 0; j < filter_rank; ++j) {
        if (filter_dims[j] < 0)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: filters dim %d is %lld (< 0)",
                                 call, j, (long long)filter_dims[j]);
    }
    convoy__conv_operands op = {
        input_dims, nd + 2, filter_dims, filter_rank, NULL, 0, {"input", "filters", "output"}};
    convoy__conv_geom geom;
    return convoy__conv_resolve(call, p, &op, &geom, output_dims);
}
