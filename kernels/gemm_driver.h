/* The GEMM convolution paths of the CUDA backend (Aesara's GpuCorrMM / GpuCorr3dMM, and the
 * 1x1 path), written against a small table of primitives instead of CUDA itself.
 *
 * cuda/conv_gemm_cuda.c supplies the primitives as cuBLAS calls and kernel launches on a
 * stream; the host tests supply CPU versions of the same primitives (built on the same index
 * headers) and so run this exact sequence of steps, with every GEMM's column-major arguments
 * checked against cuBLAS's rules, on a machine without a GPU. Needs no CUDA header. */
#ifndef CONVOY_KERNELS_GEMM_DRIVER_H
#define CONVOY_KERNELS_GEMM_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One strided-batched single-precision GEMM: for i in [0, batch),
 *   C_i = alpha * op(A_i) op(B_i) + beta * C_i,  X_i = X + i * stride_x,
 * op(A) m x k, op(B) k x n, C m x n. The same struct describes the call in row-major terms
 * (how the convolution is reasoned about) and in column-major terms (what cuBLAS takes);
 * convoy__gemm_to_column_major converts the first into the second. trans_*: 1 = transpose. */
typedef struct convoy__gemm {
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const float *a;
    int64_t lda, stride_a;
    const float *b;
    int64_t ldb, stride_b;
    float *c;
    int64_t ldc, stride_c;
    int64_t batch;
} convoy__gemm;

/* A row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: the same memory read
 * column-major holds each matrix's transpose. So the operands swap places, m and n swap, and
 * each operand keeps its own transpose flag and leading dimension. */
convoy__gemm convoy__gemm_to_column_major(const convoy__gemm *row_major);

/* CONVOY_OK when a column-major call satisfies cuBLAS's argument rules (sizes >= 0, batch
 * >= 1, lda >= max(1, rows of A as stored), the same for B and C); otherwise
 * CONVOY_ERR_INTERNAL with the offending argument. what names the call in the message. */
convoy_status convoy__gemm_check(const convoy__gemm *column_major, const char *what);

/* The primitives the paths are written in. Each enqueues (or, on the host, performs) one
 * step and returns its status; context is passed back unchanged. */
typedef struct convoy__gemm_ops {
    void *context;
    /* A column-major call, already checked with convoy__gemm_check. */
    convoy_status (*gemm)(void *context, const convoy__gemm *column_major);
    /* col ((C * kvol) x (count * P), row-major) = chunk column matrix of the count images at
     * images (count, C, in...); see kernels/chunk_index.h. */
    convoy_status (*im2col)(void *context, const convoy__conv_geom *geom, const float *images,
                            int64_t count, float *col);
    /* images (count, C, in...) = col2im of the chunk column matrix col (overwrites). */
    convoy_status (*col2im)(void *context, const convoy__conv_geom *geom, const float *col,
                            int64_t count, float *images);
    /* dst (b_count, a_count, inner) = src (a_count, b_count, inner), first two axes swapped. */
    convoy_status (*swap_axes)(void *context, const float *src, float *dst, int64_t a_count,
                               int64_t b_count, int64_t inner);
    /* dst[0 .. count) = 0. */
    convoy_status (*zero)(void *context, float *dst, int64_t count);
    /* 1 when a batched GEMM is only a loop of single GEMMs (OpenBLAS): the driver then runs a
     * chunk of several images as one wide GEMM through the pack buffer. 0 when one batched
     * call is as fast as a wide GEMM (cuBLAS). */
    int batch_is_loop;
} convoy__gemm_ops;

/* Workspace of the GEMM path, the one formula of every backend: fixed + per_image *
 * images_per_chunk bytes. Shared filters need per image of the chunk its column matrix
 * (C * kvol rows) and its M output rows in (M, T * P) order (the pack buffer: the chunk's
 * output gradient for backward_filter, and when batches are loops the wide GEMM's result or
 * operand), so per_image = (C * kvol + M) * P floats and fixed = 0. Unshared filters work one
 * image at a time and need one image's column matrix whatever the chunk: fixed = C * kvol * P
 * floats, per_image = 0. Checked arithmetic: saturates at SIZE_MAX instead of wrapping,
 * whatever the geometry. */
size_t convoy__gemm_workspace_fixed(const convoy__conv_geom *geom, convoy_conv_direction direction);
size_t convoy__gemm_workspace_per_image(const convoy__conv_geom *geom,
                                        convoy_conv_direction direction);

/* Runs the GEMM path: im2col of images_per_chunk images at a time, cuBLAS per group,
 * col2im for backward_data, backward_filter accumulating over chunks (beta 0, then 1),
 * unshared filters as per-position batched GEMMs. workspace holds workspace_bytes bytes; a
 * workspace smaller than the chunk asks for shrinks the chunk. Empty tensors (N, C or M
 * zero, or an input with no elements on an axis) zero-fill the written operand and never
 * offset an operand pointer, which is NULL for an empty tensor. */
convoy_status convoy__gemm_conv(const convoy__gemm_ops *ops, const convoy__conv_geom *geom,
                                convoy_conv_direction direction,
                                const convoy__conv_buffers *buffers, int64_t images_per_chunk,
                                void *workspace, size_t workspace_bytes);

/* The 1x1 path for convoy__geom_is_pointwise() geometries: GEMMs on the tensors themselves,
 * batched over the images, no workspace. */
convoy_status convoy__gemm_conv_1x1(const convoy__gemm_ops *ops, const convoy__conv_geom *geom,
                                    convoy_conv_direction direction,
                                    const convoy__conv_buffers *buffers);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_KERNELS_GEMM_DRIVER_H */
