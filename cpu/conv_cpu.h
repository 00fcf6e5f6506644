/* The CPU convolution algorithms and the host primitives they are built from.
 *
 * Algorithms (kernels/conv_algo.h descriptors, listed in cpu/host_backend.c):
 *   gemm    im2col + OpenBLAS sgemm through the one GEMM driver (cpu/conv_gemm.c)
 *   1x1     pointwise convolutions as GEMMs on the tensors (cpu/conv_gemm.c)
 *   direct  plain loops accumulating in double; the reference (cpu/conv_direct.c)
 *   onednn  oneDNN's convolution primitives, when convoy is built with oneDNN (cpu/conv_onednn.c)
 *   winograd oneDNN's Winograd F(4x4, 3x3) convolutions for 2D 3x3 stride-1 layers; inexact
 *           (cpu/conv_winograd.c, on the machinery of cpu/onednn.c)
 *   depthwise AVX-512 stencils for one input channel per group and stride 1, on the caller's
 *           tensors without reorders (cpu/conv_depthwise.c)
 *
 * Each computes one direction on raw host buffers described by a geometry
 * (core/conv_geometry.h) and overwrites the written operand. Shapes were
 * validated by the runtime; these trust them. Empty tensors (N, C or M zero)
 * zero-fill the written operand. */
#ifndef CONVOY_CPU_CONV_CPU_H
#define CONVOY_CPU_CONV_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"
#include "kernels/conv_algo.h"
#include "kernels/gemm_driver.h"

extern const convoy__conv_algo convoy__cpu_algo_gemm;
extern const convoy__conv_algo convoy__cpu_algo_1x1;
extern const convoy__conv_algo convoy__cpu_algo_direct;
extern const convoy__conv_algo convoy__cpu_algo_onednn;
extern const convoy__conv_algo convoy__cpu_algo_winograd;
extern const convoy__conv_algo convoy__cpu_algo_depthwise;

/* "oneDNN 2.6.3 (avx512_core, 2 OpenMP threads per task)", or "built without oneDNN": the
 * oneDNN part of the host backend's description. */
void convoy__cpu_onednn_describe(char *buffer, size_t size, int threads);

/* ---- oneDNN's convolutions, shared by onednn and winograd (cpu/onednn.c) ---- */

/* Which oneDNN convolution algorithm a plan asks for. */
typedef enum convoy__onednn_method {
    CONVOY__ONEDNN_DIRECT,   /* dnnl_convolution_direct, operands in the layouts oneDNN prefers
                                (channel-blocked), reordered from and to the caller's: exact */
    CONVOY__ONEDNN_PLAIN,    /* dnnl_convolution_direct on the caller's plain tensors, no
                                reorders (oneDNN then runs im2col + its own sgemm): exact */
    CONVOY__ONEDNN_WINOGRAD, /* dnnl_convolution_winograd: F(4x4, 3x3), inexact */
} convoy__onednn_method;

/* NULL when oneDNN may be asked for this convolution, else why not (unshared filters, empty
 * tensors, a build without oneDNN). Static storage. */
const char *convoy__onednn_refusal(const convoy__conv_geom *geom);

/* 1, with the plan's fixed workspace in *bytes, when oneDNN has a primitive of this method for
 * the convolution on this machine; 0 when it has none. */
int convoy__onednn_workspace(convoy__backend *be, const convoy__conv_geom *geom,
                             convoy_conv_direction direction, convoy__onednn_method method,
                             size_t *bytes);

/* The prepare, release and run of an algorithm descriptor on oneDNN: prepare builds the
 * primitive of the method and its reorders into plan->algo_data. */
convoy_status convoy__onednn_prepare(convoy__backend *be, convoy__conv_plan *plan,
                                     convoy__onednn_method method);
void convoy__onednn_release(convoy__backend *be, convoy__conv_plan *plan);

/* Every GEMM of g on oneDNN's sgemm (AVX-512 where the machine has it), on threads OpenMP
 * threads of the calling thread (0: its current count), which oneDNN's convolutions use too;
 * CONVOY_ERR_UNSUPPORTED, with no message, in a build without oneDNN. */
convoy_status convoy__onednn_sgemm(const convoy__gemm *column_major, int threads);
convoy_status convoy__onednn_run(convoy__backend *be, void *native_stream,
                                 const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                                 void *workspace);
/* The descriptor's run_fused on oneDNN: a forward plan's bias and/or ReLU fused into its
 * primitive (a variant built on first use); CONVOY_ERR_UNSUPPORTED, with no message, where
 * oneDNN cannot fuse it on the plan's layouts or workspace. */
convoy_status convoy__onednn_run_fused(convoy__backend *be, void *native_stream,
                                       const convoy__conv_plan *plan,
                                       const convoy__conv_buffers *buffers, void *workspace,
                                       const convoy__conv_epilogue *epilogue);

/* The driver's primitives on the host: OpenBLAS and plain loops. */
extern const convoy__gemm_ops convoy__cpu_gemm_ops;

/* Images per GEMM chunk past which the CPU gains nothing (the planner's hint). */
int64_t convoy__cpu_gemm_chunk_hint(const convoy__conv_geom *geom);

/* ---- direct: plain loops, accumulating in double; the reference ---- */

void convoy__cpu_conv_direct(const convoy__conv_geom *geom, convoy_conv_direction direction,
                             const convoy__conv_buffers *buffers);

/* ---- im2col / col2im for one image (all channels) ---- */

/* col: (C * kvol) x (o0*o1*o2), leading dimension ld. */
void convoy__cpu_im2col(const convoy__conv_geom *geom, const float *image, float *col, int64_t ld);

/* image (C, in0, in1, in2) = adjoint of im2col applied to col (overwrites). */
void convoy__cpu_col2im(const convoy__conv_geom *geom, const float *col, int64_t ld, float *image);

#endif /* CONVOY_CPU_CONV_CPU_H */
