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

static convoy__gemm_ops ops_for(gemm_context *context)
{
    convoy__gemm_ops ops = {context, gemm_step, im2col_step, col2im_step, swap_step, zero_step};
    return ops;
}

convoy_status convoy__cuda_conv_gemm(convoy__cuda_backend *be, cudaStream_t stream,
                                     const convoy__conv_plan *plan,
                                     const convoy__conv_buffers *buffers, void *workspace)
{
    convoy_status status = convoy__cuda_bind_blas(be, stream);
    if (status != CONVOY_OK)
        return status;
    gemm_context context = {be, stream};
    convoy__gemm_ops ops = ops_for(&context);
    return convoy__gemm_conv(&ops, &plan->geom, plan->direction, buffers, plan->images_per_chunk,
                             workspace, plan->workspace_bytes);
}

convoy_status convoy__cuda_conv_1x1(convoy__cuda_backend *be, cudaStream_t stream,
                                    const convoy__conv_plan *plan,
                                    const convoy__conv_buffers *buffers)
{
    convoy_status status = convoy__cuda_bind_blas(be, stream);
    if (status != CONVOY_OK)
        return status;
    gemm_context context = {be, stream};
    convoy__gemm_ops ops = ops_for(&context);
    return convoy__gemm_conv_1x1(&ops, &plan->geom, plan->direction, buffers);
}
