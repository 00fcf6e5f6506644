/* The CPU convolution implementations: direct loops, im2col + OpenBLAS
 * sgemm, and the 1x1 single-GEMM path.
 *
 * Each function computes one direction on raw host buffers described by a
 * geometry (core/conv_geometry.h). The written operand is overwritten,
 * never accumulated into. Shapes were validated by the runtime; these
 * functions trust them. Empty tensors (N, C or M zero) zero-fill the written
 * operand. */
#ifndef CONVOY_CPU_CONV_CPU_H
#define CONVOY_CPU_CONV_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"

/* ---- direct: plain loops, accumulating in double; the reference ---- */

void convoy__cpu_conv_direct(const convoy__conv_geom *geom, convoy_conv_direction direction,
                             const convoy__conv_buffers *buffers);

/* ---- im2col / col2im for one image (all channels) ---- */

/* col: (C * kvol) x (o0*o1*o2), leading dimension ld. */
void convoy__cpu_im2col(const convoy__conv_geom *geom, const float *image, float *col, int64_t ld);

/* image (C, in0, in1, in2) = adjoint of im2col applied to col (overwrites). */
void convoy__cpu_col2im(const convoy__conv_geom *geom, const float *col, int64_t ld, float *image);

/* ---- GEMM path (CorrMM / Corr3dMM) ---- */

/* Workspace the GEMM path needs: fixed + per_image * images_per_chunk bytes. */
size_t convoy__cpu_gemm_workspace_fixed(const convoy__conv_geom *geom,
                                        convoy_conv_direction direction);
size_t convoy__cpu_gemm_workspace_per_image(const convoy__conv_geom *geom,
                                            convoy_conv_direction direction);

/* Runs the GEMM path with at most images_per_chunk images per im2col chunk
 * (it may put fewer in one GEMM when that is faster), using workspace (at
 * least fixed + per_image * images_per_chunk bytes; may be NULL when batch,
 * C or M is 0). Handles groups, unshared filters, flip, stride, dilation,
 * asymmetric padding. */
convoy_status convoy__cpu_conv_gemm(const convoy__conv_geom *geom, convoy_conv_direction direction,
                                    const convoy__conv_buffers *buffers, int64_t images_per_chunk,
                                    float *workspace);

/* ---- 1x1 path: convoy__geom_is_pointwise() geometries, no workspace ---- */

convoy_status convoy__cpu_conv_1x1(const convoy__conv_geom *geom, convoy_conv_direction direction,
                                   const convoy__conv_buffers *buffers);

#endif /* CONVOY_CPU_CONV_CPU_H */
