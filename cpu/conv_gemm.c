/* The CPU GEMM convolutions (Aesara's CorrMM / Corr3dMM, and the 1x1 path): the one GEMM
 * driver of kernels/gemm_driver.c with its primitives bound to oneDNN's sgemm (OpenBLAS in a
 * build without oneDNN) and host loops.
 *
 * Neither sgemm has a strided-batched form, so a batched call is a loop of GEMM calls and
 * the driver is told so (batch_is_loop): it then runs a chunk of narrow images as one wide GEMM
 * through its pack buffer. How many images a chunk holds is the planner's choice, bounded by
 * the workspace limit and by this file's cache hint (chunk_hint below). */
#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "core/checked_math.h"
#include "core/error_detail.h"
#include "cpu/conv_cpu.h"
#include "cpu/host_backend.h"
#include "kernels/gemm_driver.h"

/* The column matrix of a chunk is written by im2col and read straight back by the GEMM, which
 * costs little while it stays in the last-level cache, so the planner is told to keep it near
 * this size. On a 2-core Zen 3 with 32 MiB L3, the 8x128x56x56 3x3 stride-2 layer ran at 71%,
 * 63% and 60% of sgemm peak with 1, 2 and 4 images per GEMM (3.5 MiB each), and the 8x512x7x7
 * layer was the same with 4 to 16 MiB chunks. */
#define CACHE_FRIENDLY_COL_BYTES ((int64_t)4 << 20)

/* With at least this many output positions per image, one image already makes a GEMM wide
 * enough for OpenBLAS to run near its peak, so images go one at a time: the GEMM writes straight
 * into the output and nothing is packed. Narrow images (a 7x7 output has 49 positions) gain
 * much from sharing one GEMM. */
#define WIDE_IMAGE_COLUMNS 512

/* ---- primitives ----------------------------------------------------------------------- */

static int fits_int(int64_t v)
{
    return v >= 0 && v <= INT_MAX;
}

/* The GEMMs of one run: the threads it computes with (the host backend's per task; NULL
 * context: OpenMP's current count). */
typedef struct host_gemm_context {
    int threads;
} host_gemm_context;

/* With oneDNN, oneDNN's sgemm on the OpenMP threads its convolutions use: OpenBLAS's own
 * threads spin for about 0.1 s after a GEMM (its THREAD_TIMEOUT), and a oneDNN convolution
 * started meanwhile waited for the core they held: on the 2-vCPU machine of bench/RESULTS.md a
 * 2.5 ms Winograd layer took 39 ms right after a gemm convolution on OpenBLAS, and as long
 * 30 ms later. One pool of threads for all the compute keeps the cores shared once, and
 * oneDNN's sgemm has AVX-512 kernels. Without oneDNN: one cblas_sgemm per batch entry, in
 * column-major terms exactly as the driver hands them. */
static convoy_status host_gemm(void *context, const convoy__gemm *g)
{
    const host_gemm_context *run = context;
    convoy_status status = convoy__onednn_sgemm(g, run ? run->threads : 0);
    if (status != CONVOY_ERR_UNSUPPORTED)
        return status;
    if (!fits_int(g->m) || !fits_int(g->n) || !fits_int(g->k) || !fits_int(g->lda) ||
        !fits_int(g->ldb) || !fits_int(g->ldc))
        return convoy__error(CONVOY_ERR_UNSUPPORTED,
                             "gemm convolution: a matrix of %lld x %lld x %lld (leading "
                             "dimensions %lld, %lld, %lld) exceeds the BLAS integer range",
                             (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->lda,
                             (long long)g->ldb, (long long)g->ldc);
    for (int64_t i = 0; i < g->batch; ++i)
        cblas_sgemm(CblasColMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, (int)g->m, (int)g->n, (int)g->k,
                    g->alpha, g->a + i * g->stride_a, (int)g->lda, g->b + i * g->stride_b,
                    (int)g->ldb, g->beta, g->c + i * g->stride_c, (int)g->ldc);
    return CONVOY_OK;
}

/* Image i of the chunk owns columns [i * P, (i + 1) * P) of the chunk's column matrix. */
static convoy_status host_im2col(void *context, const convoy__conv_geom *g, const float *images,
                                 int64_t count, float *col)
{
    (void)context;
    int64_t positions = convoy__geom_out_spatial(g);
    int64_t image = g->in_channels * convoy__geom_in_spatial(g);
    for (int64_t i = 0; i < count; ++i)
        convoy__cpu_im2col(g, images + i * image, col + i * positions, count * positions);
    return CONVOY_OK;
}

static convoy_status host_col2im(void *context, const convoy__conv_geom *g, const float *col,
                                 int64_t count, float *images)
{
    (void)context;
    int64_t positions = convoy__geom_out_spatial(g);
    int64_t image = g->in_channels * convoy__geom_in_spatial(g);
    for (int64_t i = 0; i < count; ++i)
        convoy__cpu_col2im(g, col + i * positions, count * positions, images + i * image);
    return CONVOY_OK;
}

static convoy_status host_swap_axes(void *context, const float *src, float *dst, int64_t a_count,
                                    int64_t b_count, int64_t inner)
{
    (void)context;
    size_t bytes = (size_t)inner * sizeof(float);
    for (int64_t a = 0; a < a_count; ++a) {
        for (int64_t b = 0; b < b_count; ++b)
            memcpy(dst + (b * a_count + a) * inner, src + (a * b_count + b) * inner, bytes);
    }
    return CONVOY_OK;
}

static convoy_status host_zero(void *context, float *dst, int64_t count)
{
    (void)context;
    if (count > 0)
        memset(dst, 0, (size_t)count * sizeof(float));
    return CONVOY_OK;
}

const convoy__gemm_ops convoy__cpu_gemm_ops = {
    .context = NULL,
    .gemm = host_gemm,
    .im2col = host_im2col,
    .col2im = host_col2im,
    .swap_axes = host_swap_axes,
    .zero = host_zero,
    .batch_is_loop = 1,
};

/* ---- the gemm algorithm --------------------------------------------------------------- */

/* Images per chunk past which the CPU gains nothing: one when a single image is already wide,
 * else as many as keep the chunk's column matrix cache-sized (at least one). */
int64_t convoy__cpu_gemm_chunk_hint(const convoy__conv_geom *g)
{
    int64_t positions, kvol, rows, bytes;
    if (g->unshared || !convoy__product_i64(g->out, 3, &positions) ||
        positions >= WIDE_IMAGE_COLUMNS)
        return 1;
    if (!convoy__product_i64(g->kernel, 3, &kvol) ||
        !convoy__mul_i64(g->in_channels, kvol, &rows) ||
        !convoy__mul_i64(rows, positions, &bytes) ||
        !convoy__mul_i64(bytes, (int64_t)sizeof(float), &bytes) || bytes <= 0)
        return 1;
    int64_t fit = CACHE_FRIENDLY_COL_BYTES / bytes;
    return fit < 1 ? 1 : fit;
}

static void gemm_candidates(convoy__backend *be, const convoy__conv_algo *self,
                            const convoy__conv_geom *geom, convoy_conv_direction direction,
                            convoy__candidate_list *list)
{
    (void)be;
    convoy__conv_candidate *c =
        convoy__candidate_add(list, self, self->name, convoy__gemm_workspace_fixed(geom, direction),
                              convoy__gemm_workspace_per_image(geom, direction), 2.0);
    if (c)
        c->chunk_hint = convoy__cpu_gemm_chunk_hint(geom);
}

static convoy_status gemm_run(convoy__backend *be, void *native_stream,
                              const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                              void *workspace)
{
    (void)native_stream;
    host_gemm_context run = {convoy__host_backend_threads(be)};
    convoy__gemm_ops ops = convoy__cpu_gemm_ops;
    ops.context = &run;
    return convoy__gemm_conv(&ops, &plan->geom, plan->direction, buffers, plan->images_per_chunk,
                             workspace, plan->workspace_bytes);
}

const convoy__conv_algo convoy__cpu_algo_gemm = {
    .name = "gemm",
    .refusal = NULL,
    .candidates = gemm_candidates,
    .run = gemm_run,
};

/* ---- the 1x1 algorithm ---------------------------------------------------------------- */

/* A bare GEMM per image and group, on the tensors themselves: ranked ahead of gemm. */
static void pointwise_candidates(convoy__backend *be, const convoy__conv_algo *self,
                                 const convoy__conv_geom *geom, convoy_conv_direction direction,
                                 convoy__candidate_list *list)
{
    (void)be;
    (void)geom;
    (void)direction;
    (void)convoy__candidate_add(list, self, self->name, 0, 0, 1.0);
}

static convoy_status pointwise_run(convoy__backend *be, void *native_stream,
                                   const convoy__conv_plan *plan,
                                   const convoy__conv_buffers *buffers, void *workspace)
{
    (void)native_stream;
    (void)workspace;
    host_gemm_context run = {convoy__host_backend_threads(be)};
    convoy__gemm_ops ops = convoy__cpu_gemm_ops;
    ops.context = &run;
    return convoy__gemm_conv_1x1(&ops, &plan->geom, plan->direction, buffers);
}

const convoy__conv_algo convoy__cpu_algo_1x1 = {
    .name = "1x1",
    .refusal = convoy__refusal_unless_pointwise,
    .candidates = pointwise_candidates,
    .run = pointwise_run,
};
