/* Launchers of the CUDA kernels (cuda/kernels.cu): for the GEMM path chunked im2col and
 * col2im, the axis swap that moves output gradients into GEMM order and a fill; and the
 * direct convolution, one launcher per direction.
 * C linkage and no CUDA header, so the backend's C files can call them; stream is the
 * cudaStream_t to launch on (never NULL: the legacy default stream is not used). Each returns
 * CONVOY_OK or, when the launch failed, the CUDA error as convoy_status with the message set. */
#ifndef CONVOY_CUDA_KERNELS_H
#define CONVOY_CUDA_KERNELS_H

#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* col ((C * kvol) x (count * P), row-major, leading dimension count * P) = the column
 * matrices of the count images at images (count, C, in0, in1, in2), side by side
 * (kernels/chunk_index.h). One thread per column entry. */
convoy_status convoy__launch_im2col(const convoy__conv_geom *geom, const float *images,
                                    int64_t count, float *col, void *stream);

/* images (count, C, in0, in1, in2) = col2im of the chunk column matrix col, as a gather: one
 * thread per image element sums the entries im2col copied from it. Overwrites, needs no
 * zeroed output, uses no atomics, and is deterministic. */
convoy_status convoy__launch_col2im(const convoy__conv_geom *geom, const float *col, int64_t count,
                                    float *images, void *stream);

/* dst (b_count, a_count, inner) = src (a_count, b_count, inner) with the first two axes
 * swapped. src and dst must not overlap. */
convoy_status convoy__launch_swap_axes(const float *src, float *dst, int64_t a_count,
                                       int64_t b_count, int64_t inner, void *stream);

/* dst[i] = value for i in [0, count): scratch buffers for timing get defined contents. */
convoy_status convoy__launch_fill(float *dst, int64_t count, float value, void *stream);

/* ---- direct convolution ----------------------------------------------------------------- */

/* One thread per written element, each summing in double everything that element depends on
 * (kernels/direct_index.h): slow, but no workspace, every geometry (unshared filters
 * included), bit-reproducible. */

/* output (N, M, out...) = conv(input, filters); overwrites. */
convoy_status convoy__launch_conv_direct_forward(const convoy__conv_geom *geom, const float *input,
                                                 const float *filters, float *output, void *stream);

/* input (N, C, in...) = gradient w.r.t. the input, from filters and grad_output; overwrites. */
convoy_status convoy__launch_conv_direct_backward_data(const convoy__conv_geom *geom,
                                                       const float *filters,
                                                       const float *grad_output, float *input,
                                                       void *stream);

/* filters = gradient w.r.t. the filters, from input and grad_output; overwrites. */
convoy_status convoy__launch_conv_direct_backward_filter(const convoy__conv_geom *geom,
                                                         const float *input,
                                                         const float *grad_output, float *filters,
                                                         void *stream);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_CUDA_KERNELS_H */
