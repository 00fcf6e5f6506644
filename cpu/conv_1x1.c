/* The pointwise convolution (1x1x1 kernel, stride 1, no padding, shared filters) as plain
 * OpenBLAS sgemm calls on the tensors in place. Such a convolution reads every input
 * position exactly once per filter, so each image's (C, positions) block already is the
 * column matrix and neither im2col nor a workspace is needed. */
#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "cpu/conv_cpu.h"
#include "core/error_detail.h"

/* Per image n and group grp, with S positions, C_ = C / g and M_ = M / g:
 *   forward          Y[n, grp] (M_ x S)  = W_grp (M_ x C_) @ X[n, grp] (C_ x S)
 *   backward_data    dX[n, grp] (C_ x S) = W_grp^T @ dY[n, grp] (M_ x S)
 *   backward_filter  dW_grp (M_ x C_)   += dY[n, grp] @ X[n, grp]^T, overwriting at n = 0
 * Filters (M, C_, 1, 1, 1) are exactly the row-major M x C_ matrix, group grp's rows first
 * at grp * M_. Flip changes nothing with a single tap. */
static void run_pointwise(const convoy__conv_geom *g, convoy_conv_direction direction,
                          const convoy__conv_buffers *b)
{
    int64_t c_in = g->in_channels, c_out = g->out_channels;
    int64_t c_grp = c_in / g->groups, m_grp = c_out / g->groups;
    int64_t s = convoy__geom_in_spatial(g);
    for (int64_t n = 0; n < g->batch; ++n) {
        for (int64_t grp = 0; grp < g->groups; ++grp) {
            float *x = b->input + (n * c_in + grp * c_grp) * s;
            float *y = b->output + (n * c_out + grp * m_grp) * s;
            float *w = b->filters + grp * m_grp * c_grp;
            switch (direction) {
            case CONVOY_CONV_FORWARD:
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m_grp, (int)s,
                            (int)c_grp, 1.0f, w, (int)c_grp, x, (int)s, 0.0f, y, (int)s);
                break;
            case CONVOY_CONV_BACKWARD_DATA:
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c_grp, (int)s, (int)m_grp,
                            1.0f, w, (int)c_grp, y, (int)s, 0.0f, x, (int)s);
                break;
            case CONVOY_CONV_BACKWARD_FILTER:
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m_grp, (int)c_grp, (int)s,
                            1.0f, y, (int)s, x, (int)s, n == 0 ? 0.0f : 1.0f, w, (int)c_grp);
                break;
            }
        }
    }
}

convoy_status convoy__cpu_conv_1x1(const convoy__conv_geom *geom, convoy_conv_direction direction,
                                   const convoy__conv_buffers *buffers)
{
    if (!geom || !buffers)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "1x1 convolution: NULL argument");
    if (!convoy__geom_is_pointwise(geom))
        return convoy__error(
            CONVOY_ERR_INVALID_ARGUMENT,
            "1x1 convolution: the geometry is not pointwise (kernel %lldx%lldx%lld, "
            "stride or padding not neutral, or unshared filters)",
            (long long)geom->kernel[0], (long long)geom->kernel[1], (long long)geom->kernel[2]);
    for (int a = 0; a < 3; ++a) {
        if (geom->out[a] != geom->in[a])
            return convoy__error(CONVOY_ERR_INTERNAL,
                                 "1x1 convolution: output extent %lld differs from input extent "
                                 "%lld on spatial axis %d",
                                 (long long)geom->out[a], (long long)geom->in[a], a);
    }
    int64_t numel;
    float *written;
    switch (direction) {
    case CONVOY_CONV_FORWARD:
        numel = convoy__geom_output_numel(geom);
        written = buffers->output;
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        numel = convoy__geom_input_numel(geom);
        written = buffers->input;
        break;
    case CONVOY_CONV_BACKWARD_FILTER:
        numel = convoy__geom_filter_numel(geom);
        written = buffers->filters;
        break;
    default:
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "1x1 convolution: direction %d",
                             (int)direction);
    }
    if (geom->batch == 0 || geom->in_channels == 0 || geom->out_channels == 0) {
        /* Every sum is empty; BLAS is not asked to handle zero sizes. */
        if (numel > 0)
            memset(written, 0, (size_t)numel * sizeof(float));
        return CONVOY_OK;
    }
    int64_t sizes[] = {geom->in_channels, geom->out_channels, convoy__geom_in_spatial(geom)};
    for (int i = 0; i < 3; ++i) {
        if (sizes[i] > INT_MAX)
            return convoy__error(CONVOY_ERR_UNSUPPORTED,
                                 "1x1 convolution: a matrix size of %lld exceeds the BLAS "
                                 "integer range",
                                 (long long)sizes[i]);
    }
    run_pointwise(geom, direction, buffers);
    return CONVOY_OK;
}
