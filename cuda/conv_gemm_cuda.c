/* The GEMM (GpuCorrMM / GpuCorr3dMM) and 1x1 convolution paths on CUDA: the step sequence of
 * kernels/gemm_driver.c, with its primitives bound to cuBLAS (strided-batched SGEMM, 64-bit
 * sizes), the im2col / col2im / axis-swap kernels of cuda/kernels.cu and cudaMemsetAsync,
 * all enqueued on the caller's stream. Never synchronizes. */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/cuda_check.h"
#include "kernels/gemm_driver.h"
#include "cuda/kernels.h"
#include "kernels/conv_algo.h"
#include "core/error_detail.h"

typedef struct gemm_context {
    convoy__cuda_backend *be;
    cudaStream_t stream;
} gemm_context;

/* The handle was bound to this stream (and its workspace) before the driver started, and
 * be->lock is held throughout, so no other thread can re-point it in between. alpha and beta
 * live on the host (the default pointer mode), read before the call returns. */
static convoy_status gemm_step(void *context, const convoy__gemm *g)
{
    gemm_context *c = context;
    CONVOY__CUBLAS_TRY(cublasSgemmStridedBatched_64(
        c->be->cublas, g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
        g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g->m, g->n, g->k, &g->alpha, g->a, g->lda,
        g->stride_a, g->b, g->ldb, g->stride_b, &g->beta, g->c, g->ldc, g->stride_c, g->batch));
    return CONVOY_OK;
}

static convoy_status im2col_step(void *context, const convoy__conv_geom *geom, const float *images,
                                 int64_t count, float *col)
{
    gemm_context *c = context;
    return convoy__launch_im2col(geom, images, count, col, c->stream);
}

static convoy_status col2im_step(void *context, const convoy__conv_geom *geom, const float *col,
                                 int64_t count, float *images)
{
    gemm_context *c = context;
    return convoy__launch_col2im(geom, col, count, images, c->stream);
}

static convoy_status swap_step(void *context, const float *src, float *dst, int64_t a_count,
                               int64_t b_count, int64_t inner)
{
    gemm_context *c = context;
    return convoy__launch_swap_axes(src, dst, a_count, b_count, inner, c->stream);
}

static convoy_status zero_step(void *context, float *dst, int64_t count)
{
    gemm_context *c = context;
    CONVOY__CUDA_TRY(cudaMemsetAsync(dst, 0, (size_t)count * sizeof(float), c->stream));
    return CONVOY_OK;
}

/* Binds the cuBLAS handle to stream and fills the driver's primitive table for it. The backend's
 * run holds be->lock, so the handle stays bound to this stream until the driver is done. */
static convoy_status bind(convoy__backend *base, void *native_stream, gemm_context *context,
                          convoy__gemm_ops *ops)
{
    context->be = convoy__cuda_of(base);
    context->stream = (cudaStream_t)native_stream;
    convoy__gemm_ops bound = {context,   gemm_step, im2col_step, col2im_step, swap_step,
                              zero_step, 0};
    *ops = bound;
    return convoy__cuda_bind_blas(context->be, context->stream);
}

/* ---- the gemm and 1x1 algorithms ------------------------------------------------------ */

/* Heuristic costs (lower runs first); cuDNN's own ranking starts at 1.0 and counts up one per
 * algorithm (cuda/conv_cudnn.c). The 1x1 path, a bare strided-batched SGEMM, comes right after
 * cuDNN's first choice; im2col + GEMM after every cuDNN algorithm, since it moves the column
 * matrix through memory twice. The cuBLAS paths are reproducible only when each stream has its
 * own cuBLAS workspace, which the backend arranges in deterministic mode alone. */
#define COST_1X1 1.5
#define COST_GEMM 20.0

static void gemm_candidates(convoy__backend *base, const convoy__conv_algo *self,
                            const convoy__conv_geom *geom, convoy_conv_direction direction,
                            convoy__candidate_list *list)
{
    convoy__conv_candidate *c =
        convoy__candidate_add(list, self, self->name, convoy__gemm_workspace_fixed(geom, direction),
                              convoy__gemm_workspace_per_image(geom, direction), COST_GEMM);
    if (c)
        c->deterministic = convoy__cuda_of(base)->deterministic;
}

static convoy_status gemm_run(convoy__backend *base, void *native_stream,
                              const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                              void *workspace)
{
    gemm_context context;
    convoy__gemm_ops ops;
    convoy_status status = bind(base, native_stream, &context, &ops);
    if (status != CONVOY_OK)
        return status;
    return convoy__gemm_conv(&ops, &plan->geom, plan->direction, buffers, plan->images_per_chunk,
                             workspace, plan->workspace_bytes);
}

const convoy__conv_algo convoy__cuda_algo_gemm = {
    .name = "gemm",
    .refusal = NULL,
    .candidates = gemm_candidates,
    .run = gemm_run,
};

static void pointwise_candidates(convoy__backend *base, const convoy__conv_algo *self,
                                 const convoy__conv_geom *geom, convoy_conv_direction direction,
                                 convoy__candidate_list *list)
{
    (void)geom;
    (void)direction;
    convoy__conv_candidate *c = convoy__candidate_add(list, self, self->name, 0, 0, COST_1X1);
    if (c)
        c->deterministic = convoy__cuda_of(base)->deterministic;
}

static convoy_status pointwise_run(convoy__backend *base, void *native_stream,
                                   const convoy__conv_plan *plan,
                                   const convoy__conv_buffers *buffers, void *workspace)
{
    (void)workspace;
    gemm_context context;
    convoy__gemm_ops ops;
    convoy_status status = bind(base, native_stream, &context, &ops);
    if (status != CONVOY_OK)
        return status;
    return convoy__gemm_conv_1x1(&ops, &plan->geom, plan->direction, buffers);
}

const convoy__conv_algo convoy__cuda_algo_1x1 = {
    .name = "1x1",
    .refusal = convoy__refusal_unless_pointwise,
    .candidates = pointwise_candidates,
    .run = pointwise_run,
};
