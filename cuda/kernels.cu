/* The CUDA kernels of the backend: for the GEMM path chunked im2col and col2im (2D and 3D
 * alike, every geometry being normalised to three axes), the axis swap between (T, M, P) and
 * (M, T * P) and a fill; and the direct convolution, one kernel per direction, each thread
 * computing one written element in double (the reference and the last resort). Every
 * kernel's body is one store of a __host__ __device__ function of kernels/chunk_index.h or
 * direct_index.h, and the thread mapping is cuda/launch_config.h's grid-stride loop, also
 * built from such functions: tests/test_cuda_host.c runs each body over its kernel's whole
 * grid on the CPU. The geometry travels by value in the kernel parameters. */
#include <cuda_runtime.h>

#include "kernels/chunk_index.h"
#include "kernels/direct_index.h"
#include "cuda/kernels.h"
#include "cuda/launch_config.h"
#include "core/error_detail.h"

/* ---- kernels ------------------------------------------------------------ */

/* col: ((C * kvol) x (count * P)); images: (count, C, in0, in1, in2). */
static __global__ void im2col_chunk_kernel(convoy__conv_geom g, const float *__restrict__ images,
                                           int64_t count, float *__restrict__ col, int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        col[i] = convoy__im2col_chunk_value(&g, images, count, i);
    }
}

/* images: (count, C, in0, in1, in2); col: ((C * kvol) x (count * P)). */
static __global__ void col2im_chunk_kernel(convoy__conv_geom g, const float *__restrict__ col,
                                           int64_t count, float *__restrict__ images, int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        images[i] = convoy__col2im_chunk_value(&g, col, count, i);
    }
}

/* dst: (b_count, a_count, inner); src: (a_count, b_count, inner). */
static __global__ void swap_axes_kernel(const float *__restrict__ src, float *__restrict__ dst,
                                        int64_t a_count, int64_t b_count, int64_t inner,
                                        int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        dst[i] = convoy__swap_axes_value(src, i, a_count, b_count, inner);
    }
}

/* dst: (count). */
static __global__ void fill_kernel(float *__restrict__ dst, int64_t count, float value)
{
    CONVOY__GRID_STRIDE_LOOP(i, count)
    {
        dst[i] = convoy__fill_value(value, i);
    }
}

/* ---- direct convolution: one thread per written element ---------------------- */

/* output: (N, M, o0, o1, o2); input: (N, C, in0, in1, in2); filters: shared or unshared. */
static __global__ void conv_direct_forward_kernel(convoy__conv_geom g,
                                                  const float *__restrict__ input,
                                                  const float *__restrict__ filters,
                                                  float *__restrict__ output, int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        output[i] = (float)convoy__direct_forward_value(&g, input, filters, i);
    }
}

/* input: (N, C, in0, in1, in2), written; grad_output: (N, M, o0, o1, o2). */
static __global__ void conv_direct_backward_data_kernel(convoy__conv_geom g,
                                                        const float *__restrict__ filters,
                                                        const float *__restrict__ grad_output,
                                                        float *__restrict__ input, int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        input[i] = (float)convoy__direct_backward_data_value(&g, filters, grad_output, i);
    }
}

/* filters: (M, C/g, k...) or (M, o..., C/g, k...), written; one thread sums over the batch
 * and the output positions, so this is the slowest kernel here by far. */
static __global__ void conv_direct_backward_filter_kernel(convoy__conv_geom g,
                                                          const float *__restrict__ input,
                                                          const float *__restrict__ grad_output,
                                                          float *__restrict__ filters,
                                                          int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        filters[i] = (float)convoy__direct_backward_filter_value(&g, input, grad_output, i);
    }
}

/* ---- launchers ---------------------------------------------------------- */

static convoy_status bad_arguments(const char *launcher)
{
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "%s: NULL pointer, NULL stream or negative count", launcher);
}

extern "C" convoy_status convoy__launch_im2col(const convoy__conv_geom *geom, const float *images,
                                               int64_t count, float *col, void *stream)
{
    if (!geom || !images || !col || !stream || count < 0)
        return bad_arguments("launch_im2col");
    int64_t total = geom->in_channels * convoy__geom_kernel_spatial(geom) * count *
                    convoy__geom_out_spatial(geom);
    if (total == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    im2col_chunk_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(
        *geom, images, count, col, total);
    CONVOY__LAUNCH_CHECK("im2col_chunk_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_col2im(const convoy__conv_geom *geom, const float *col,
                                               int64_t count, float *images, void *stream)
{
    if (!geom || !images || !col || !stream || count < 0)
        return bad_arguments("launch_col2im");
    int64_t total = count * geom->in_channels * convoy__geom_in_spatial(geom);
    if (total == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    col2im_chunk_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(
        *geom, col, count, images, total);
    CONVOY__LAUNCH_CHECK("col2im_chunk_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_swap_axes(const float *src, float *dst, int64_t a_count,
                                                  int64_t b_count, int64_t inner, void *stream)
{
    if (!src || !dst || !stream || a_count < 0 || b_count < 0 || inner < 0)
        return bad_arguments("launch_swap_axes");
    int64_t total = a_count * b_count * inner;
    if (total == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    swap_axes_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(
        src, dst, a_count, b_count, inner, total);
    CONVOY__LAUNCH_CHECK("swap_axes_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_fill(float *dst, int64_t count, float value, void *stream)
{
    if (!dst || !stream || count < 0)
        return bad_arguments("launch_fill");
    if (count == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    fill_kernel<<<convoy__blocks_for(count), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(dst, count,
                                                                                         value);
    CONVOY__LAUNCH_CHECK("fill_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_conv_direct_forward(const convoy__conv_geom *geom,
                                                            const float *input,
                                                            const float *filters, float *output,
                                                            void *stream)
{
    if (!geom || !output || !stream)
        return bad_arguments("launch_conv_direct_forward");
    int64_t total = convoy__geom_output_numel(geom);
    if (total == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    conv_direct_forward_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0,
                                 (cudaStream_t)stream>>>(*geom, input, filters, output, total);
    CONVOY__LAUNCH_CHECK("conv_direct_forward_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_conv_direct_backward_data(const convoy__conv_geom *geom,
                                                                  const float *filters,
                                                                  const float *grad_output,
                                                                  float *input, void *stream)
{
    if (!geom || !input || !stream)
        return bad_arguments("launch_conv_direct_backward_data");
    int64_t total = convoy__geom_input_numel(geom);
    if (total == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    conv_direct_backward_data_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0,
                                       (cudaStream_t)stream>>>(*geom, filters, grad_output, input,
                                                               total);
    CONVOY__LAUNCH_CHECK("conv_direct_backward_data_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_conv_direct_backward_filter(const convoy__conv_geom *geom,
                                                                    const float *input,
                                                                    const float *grad_output,
                                                                    float *filters, void *stream)
{
    if (!geom || !filters || !stream)
        return bad_arguments("launch_conv_direct_backward_filter");
    int64_t total = convoy__geom_filter_numel(geom);
    if (total == 0)
        return CONVOY_OK;
    CONVOY__LAUNCH_BEGIN();
    conv_direct_backward_filter_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0,
                                         (cudaStream_t)stream>>>(*geom, input, grad_output, filters,
                                                                 total);
    CONVOY__LAUNCH_CHECK("conv_direct_backward_filter_kernel");
    return CONVOY_OK;
}
