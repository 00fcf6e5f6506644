/* The CPU GEMM convolution (Aesara's CorrMM / Corr3dMM): im2col of a chunk of images, one
 * OpenBLAS sgemm per group, col2im for the input gradient; unshared filters use one sgemv or
 * sger per output position instead.
 *
 * Workspace layout (bytes = fixed + per_image * images_per_chunk, fixed is 0), for a chunk of
 * T images (T <= images_per_chunk, see effective_chunk) whose outputs have N_ = o0*o1*o2
 * positions each:
 *   col:  (C * kvol) x (T * N_) floats, row-major with ld = T * N_; image t owns columns
 *         [t * N_, (t + 1) * N_), so one GEMM per group covers the whole chunk;
 *   pack: M x (T * N_) floats right after col: the forward result before it is scattered to
 *         (N, M, out...) order, or the chunk's output gradient gathered into that shape.
 * So per_image = (C * kvol + M) * N_ * sizeof(float). Unshared filters work one image at a
 * time and need only col: per_image = C * kvol * N_ * sizeof(float). */
#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "cpu/conv_cpu.h"
#include "kernels/conv_index.h"
#include "core/error_detail.h"

/* The chunk actually used is trimmed so that its column matrix stays near this size: im2col
 * writes it and the GEMM reads it straight back, which costs little while the matrix stays in
 * the last-level cache. On a 2-core Zen 3 with 32 MiB L3, the 8x128x56x56 3x3 stride-2 layer
 * ran at 71%, 63% and 60% of sgemm peak with 1, 2 and 4 images per GEMM (3.5 MiB each), and
 * the 8x512x7x7 layer was the same with 4 to 16 MiB chunks. */
#define CACHE_FRIENDLY_COL_BYTES ((int64_t)4 << 20)

/* With at least this many output positions per image, one image already makes a GEMM wide
 * enough for OpenBLAS to run near its peak, so images are processed one at a time: the GEMM
 * writes straight into the output and no packing or scattering is needed. Narrow images (a
 * 7x7 output has 49 positions) gain much from sharing one GEMM. */
#define WIDE_IMAGE_COLUMNS 512

/* Sizes derived once from the geometry; names follow CONV_SEMANTICS.md section 10. */
typedef struct gemm_dims {
    int64_t batch, in_channels, out_channels, groups;
    int64_t group_out;  /* M_ = M / g */
    int64_t group_rows; /* K_ = C / g * kvol */
    int64_t rows;       /* C * kvol: rows of one image's column matrix */
    int64_t positions;  /* N_ = o0 * o1 * o2 */
    int64_t in_volume;  /* in0 * in1 * in2 */
} gemm_dims;

static gemm_dims dims_of(const convoy__conv_geom *g)
{
    gemm_dims d;
    d.batch = g->batch;
    d.in_channels = g->in_channels;
    d.out_channels = g->out_channels;
    d.groups = g->groups;
    d.group_out = g->out_channels / g->groups;
    d.group_rows = convoy__geom_col_rows(g);
    d.rows = g->in_channels * convoy__geom_kernel_spatial(g);
    d.positions = convoy__geom_out_spatial(g);
    d.in_volume = convoy__geom_in_spatial(g);
    return d;
}

size_t convoy__cpu_gemm_workspace_fixed(const convoy__conv_geom *geom,
                                        convoy_conv_direction direction)
{
    (void)geom;
    (void)direction;
    return 0;
}

size_t convoy__cpu_gemm_workspace_per_image(const convoy__conv_geom *geom,
                                            convoy_conv_direction direction)
{
    (void)direction;
    gemm_dims d = dims_of(geom);
    int64_t floats = d.rows * d.positions;
    if (!geom->unshared)
        floats += d.out_channels * d.positions;
    return (size_t)floats * sizeof(float);
}

/* The written operand of each direction, and its element count. */
static float *written_operand(const convoy__conv_geom *g, convoy_conv_direction direction,
                              const convoy__conv_buffers *b, int64_t *numel)
{
    switch (direction) {
    case CONVOY_CONV_BACKWARD_DATA:
        *numel = convoy__geom_input_numel(g);
        return b->input;
    case CONVOY_CONV_BACKWARD_FILTER:
        *numel = convoy__geom_filter_numel(g);
        return b->filters;
    default:
        *numel = convoy__geom_output_numel(g);
        return b->output;
    }
}

/* ---- shared filters -------------------------------------------------------- */

/* Copies the chunk's images [n0, n0 + t) between (N, M, N_) order and the M x (t * N_) pack
 * matrix, in the direction `to_pack` says. */
static void repack(const gemm_dims *d, float *tensor, float *pack, int64_t n0, int64_t t,
                   int to_pack)
{
    int64_t ld = t * d->positions;
    size_t bytes = (size_t)d->positions * sizeof(float);
    for (int64_t i = 0; i < t; ++i) {
        for (int64_t m = 0; m < d->out_channels; ++m) {
            float *image_row = tensor + ((n0 + i) * d->out_channels + m) * d->positions;
            float *pack_row = pack + m * ld + i * d->positions;
            if (to_pack)
                memcpy(pack_row, image_row, bytes);
            else
                memcpy(image_row, pack_row, bytes);
        }
    }
}

static void im2col_chunk(const convoy__conv_geom *g, const gemm_dims *d, const float *x, int64_t n0,
                         int64_t t, float *col)
{
    for (int64_t i = 0; i < t; ++i)
        convoy__cpu_im2col(g, x + (n0 + i) * d->in_channels * d->in_volume, col + i * d->positions,
                           t * d->positions);
}

/* Y_g (M_ x t*N_) = W_g (M_ x K_) @ col_g (K_ x t*N_). A single image's result already has
 * the output's layout, so it is written in place; a larger chunk goes through pack. */
static void forward_chunk(const convoy__conv_geom *g, const gemm_dims *d, const float *x,
                          const float *w, float *y, int64_t n0, int64_t t, float *col, float *pack)
{
    int64_t ld = t * d->positions;
    im2col_chunk(g, d, x, n0, t, col);
    float *dst = t == 1 ? y + n0 * d->out_channels * d->positions : pack;
    for (int64_t grp = 0; grp < d->groups; ++grp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d->group_out, (int)ld,
                    (int)d->group_rows, 1.0f, w + grp * d->group_out * d->group_rows,
                    (int)d->group_rows, col + grp * d->group_rows * ld, (int)ld, 0.0f,
                    dst + grp * d->group_out * ld, (int)ld);
    if (t > 1)
        repack(d, y, pack, n0, t, 0);
}

/* col_g (K_ x t*N_) = W_g^T @ dY_g (M_ x t*N_), then col2im image by image. */
static void backward_data_chunk(const convoy__conv_geom *g, const gemm_dims *d, const float *w,
                                float *dy, float *dx, int64_t n0, int64_t t, float *col,
                                float *pack)
{
    int64_t ld = t * d->positions;
    const float *src = dy + n0 * d->out_channels * d->positions;
    if (t > 1) {
        repack(d, dy, pack, n0, t, 1);
        src = pack;
    }
    for (int64_t grp = 0; grp < d->groups; ++grp)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d->group_rows, (int)ld,
                    (int)d->group_out, 1.0f, w + grp * d->group_out * d->group_rows,
                    (int)d->group_rows, src + grp * d->group_out * ld, (int)ld, 0.0f,
                    col + grp * d->group_rows * ld, (int)ld);
    for (int64_t i = 0; i < t; ++i)
        convoy__cpu_col2im(g, col + i * d->positions, ld,
                           dx + (n0 + i) * d->in_channels * d->in_volume);
}

/* dW_g (M_ x K_) (+)= dY_g (M_ x t*N_) @ col_g^T; `first` overwrites instead of adding. */
static void backward_filter_chunk(const convoy__conv_geom *g, const gemm_dims *d, const float *x,
                                  float *dy, float *dw, int64_t n0, int64_t t, int first,
                                  float *col, float *pack)
{
    int64_t ld = t * d->positions;
    im2col_chunk(g, d, x, n0, t, col);
    const float *src = dy + n0 * d->out_channels * d->positions;
    if (t > 1) {
        repack(d, dy, pack, n0, t, 1);
        src = pack;
    }
    for (int64_t grp = 0; grp < d->groups; ++grp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d->group_out, (int)d->group_rows,
                    (int)ld, 1.0f, src + grp * d->group_out * ld, (int)ld,
                    col + grp * d->group_rows * ld, (int)ld, first ? 0.0f : 1.0f,
                    dw + grp * d->group_out * d->group_rows, (int)d->group_rows);
}

/* Images per GEMM: at most what the caller's workspace holds, one when a single image is
 * already wide, else as many as keep the column matrix cache-sized (but at least one). */
static int64_t effective_chunk(const gemm_dims *d, int64_t images_per_chunk)
{
    int64_t t = images_per_chunk < d->batch ? images_per_chunk : d->batch;
    if (d->positions >= WIDE_IMAGE_COLUMNS)
        return 1;
    int64_t col_bytes = d->rows * d->positions * (int64_t)sizeof(float);
    int64_t fit = col_bytes > 0 ? CACHE_FRIENDLY_COL_BYTES / col_bytes : t;
    if (fit < 1)
        fit = 1;
    return t < fit ? t : fit;
}

static void run_shared(const convoy__conv_geom *g, convoy_conv_direction direction,
                       const convoy__conv_buffers *b, int64_t chunk, float *workspace)
{
    gemm_dims d = dims_of(g);
    float *col = workspace;
    float *pack = workspace + d.rows * d.positions * chunk;
    for (int64_t n0 = 0; n0 < d.batch; n0 += chunk) {
        int64_t t = d.batch - n0 < chunk ? d.batch - n0 : chunk;
        switch (direction) {
        case CONVOY_CONV_FORWARD:
            forward_chunk(g, &d, b->input, b->filters, b->output, n0, t, col, pack);
            break;
        case CONVOY_CONV_BACKWARD_DATA:
            backward_data_chunk(g, &d, b->filters, b->output, b->input, n0, t, col, pack);
            break;
        case CONVOY_CONV_BACKWARD_FILTER:
            backward_filter_chunk(g, &d, b->input, b->output, b->filters, n0, t, n0 == 0, col,
                                  pack);
            break;
        }
    }
}

/* ---- unshared filters ------------------------------------------------------ */

/* Unshared filters (M, o0, o1, o2, C/g, k0, k1, k2) hold, for output position o and group
 * grp, an M_ x K_ matrix starting at (grp * M_ * N_ + o) * K_ whose rows are N_ * K_ apart;
 * the matching column of col is column o of the group's K_ rows, whose entries are ld apart,
 * and the output channels of one position are N_ apart in (N, M, N_) order. */
static void run_unshared(const convoy__conv_geom *g, convoy_conv_direction direction,
                         const convoy__conv_buffers *b, float *col)
{
    gemm_dims d = dims_of(g);
    int64_t ld = d.positions;
    int lda = (int)(d.positions * d.group_rows);
    int64_t image_in = d.in_channels * d.in_volume;
    int64_t image_out = d.out_channels * d.positions;
    /* BLAS calls below that take beta = 0 get zeroed destinations anyway: whether a BLAS
     * multiplies stale NaNs by zero or overwrites them has varied between versions. */
    if (direction == CONVOY_CONV_FORWARD)
        memset(b->output, 0, (size_t)(d.batch * image_out) * sizeof(float));
    if (direction == CONVOY_CONV_BACKWARD_FILTER)
        memset(b->filters, 0, (size_t)convoy__geom_filter_numel(g) * sizeof(float));
    for (int64_t n = 0; n < d.batch; ++n) {
        if (direction == CONVOY_CONV_BACKWARD_DATA)
            memset(col, 0, (size_t)(d.rows * ld) * sizeof(float));
        else
            convoy__cpu_im2col(g, b->input + n * image_in, col, ld);
        for (int64_t grp = 0; grp < d.groups; ++grp) {
            /* The output (forward) or its gradient (the two backward directions). */
            float *out_grp = b->output + n * image_out + grp * d.group_out * d.positions;
            float *col_grp = col + grp * d.group_rows * ld;
            for (int64_t o = 0; o < d.positions; ++o) {
                float *w_o = b->filters + (grp * d.group_out * d.positions + o) * d.group_rows;
                if (direction == CONVOY_CONV_FORWARD)
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)d.group_out, (int)d.group_rows,
                                1.0f, w_o, lda, col_grp + o, (int)ld, 0.0f, out_grp + o,
                                (int)d.positions);
                else if (direction == CONVOY_CONV_BACKWARD_DATA)
                    cblas_sgemv(CblasRowMajor, CblasTrans, (int)d.group_out, (int)d.group_rows,
                                1.0f, w_o, lda, out_grp + o, (int)d.positions, 0.0f, col_grp + o,
                                (int)ld);
                else
                    cblas_sger(CblasRowMajor, (int)d.group_out, (int)d.group_rows, 1.0f,
                               out_grp + o, (int)d.positions, col_grp + o, (int)ld, w_o, lda);
            }
        }
        if (direction == CONVOY_CONV_BACKWARD_DATA)
            convoy__cpu_col2im(g, col, ld, b->input + n * image_in);
    }
}

/* ---- entry point ----------------------------------------------------------- */

/* cblas takes int sizes; every size, leading dimension and stride handed to it is bounded
 * by one of these, so checking them once up front covers every call. */
static convoy_status check_blas_sizes(const gemm_dims *d, int unshared, int64_t chunk)
{
    int64_t limits[] = {d->rows, d->group_rows, d->out_channels, d->positions * chunk,
                        unshared ? d->positions * d->group_rows : 0};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; ++i) {
        if (limits[i] > INT_MAX)
            return convoy__error(CONVOY_ERR_UNSUPPORTED,
                                 "gemm convolution: a matrix size of %lld exceeds the BLAS "
                                 "integer range",
                                 (long long)limits[i]);
    }
    return CONVOY_OK;
}

convoy_status convoy__cpu_conv_gemm(const convoy__conv_geom *geom, convoy_conv_direction direction,
                                    const convoy__conv_buffers *buffers, int64_t images_per_chunk,
                                    float *workspace)
{
    if (!geom || !buffers)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "gemm convolution: NULL argument");
    if (direction != CONVOY_CONV_FORWARD && direction != CONVOY_CONV_BACKWARD_DATA &&
        direction != CONVOY_CONV_BACKWARD_FILTER)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "gemm convolution: direction %d",
                             (int)direction);
    gemm_dims d = dims_of(geom);
    int64_t numel;
    float *written = written_operand(geom, direction, buffers, &numel);
    if (d.batch == 0 || d.in_channels == 0 || d.out_channels == 0) {
        /* Every sum is empty. Zero sizes are also where BLAS implementations disagree about
         * touching C, so no BLAS call is made at all. */
        if (numel > 0)
            memset(written, 0, (size_t)numel * sizeof(float));
        return CONVOY_OK;
    }
    if (images_per_chunk < 1)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "gemm convolution: images_per_chunk is %lld, must be >= 1",
                             (long long)images_per_chunk);
    if (!workspace)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "gemm convolution: NULL workspace");
    int64_t chunk = geom->unshared ? 1 : effective_chunk(&d, images_per_chunk);
    convoy_status status = check_blas_sizes(&d, geom->unshared, chunk);
    if (status != CONVOY_OK)
        return status;
    if (geom->unshared)
        run_unshared(geom, direction, buffers, workspace);
    else
        run_shared(geom, direction, buffers, chunk, workspace);
    return CONVOY_OK;
}
