/* The CUDA kernels of the training ops (kernels/train_ops.h): bias + activation, the
 * activation gradient and the SGD step are elementwise, one element per logical thread in the
 * grid-stride loop of cuda/launch_config.h; the bias gradient and the loss are reductions,
 * one block per channel (respectively one block for the batch) whose threads each sum a
 * fixed share and then add the shares in a fixed tree in shared memory. No float atomics, so
 * every result is reproducible bit for bit. Every body is a __host__ __device__ function of
 * kernels/train_math.h, which tests/test_cuda_host.c runs over the kernels' whole grids on the
 * CPU. */
#include <cuda_runtime.h>

#include "kernels/train_math.h"
#include "cuda/launch_config.h"
#include "cuda/train_kernels.h"
#include "core/error_detail.h"

/* ---- kernels ------------------------------------------------------------------------------ */

/* data: (count, channels, inner), in place; bias: (channels) or NULL. */
static __global__ void bias_act_kernel(float *data, const float *__restrict__ bias,
                                       int64_t channels, int64_t inner, int act, int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        data[i] = convoy__bias_act_value(data, bias, channels, inner, act, i);
    }
}

/* grad_input may be grad_output: each element is read before it is written, by one thread. */
static __global__ void act_backward_kernel(const float *__restrict__ output,
                                           const float *grad_output, float *grad_input, int act,
                                           int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        grad_input[i] = convoy__act_grad_value(output, grad_output, act, i);
    }
}

/* grad: (count, channels, inner); grad_bias: (channels). Block b sums channels b, b + grid,
 * ...; its CONVOY__REDUCE_THREADS threads each take a share, then add them in a tree. */
static __global__ void bias_grad_kernel(const float *__restrict__ grad, int64_t count,
                                        int64_t channels, int64_t inner,
                                        float *__restrict__ grad_bias)
{
    __shared__ double partial[CONVOY__REDUCE_THREADS];
    const unsigned t = threadIdx.x;
    for (int64_t m = blockIdx.x; m < channels; m += gridDim.x) {
        partial[t] =
            convoy__bias_grad_share(grad, channels, inner, count, m, t, CONVOY__REDUCE_THREADS);
        __syncthreads();
        for (unsigned half = CONVOY__REDUCE_THREADS / 2; half > 0; half /= 2) {
            convoy__tree_level(partial, t, half);
            __syncthreads();
        }
        if (t == 0)
            grad_bias[m] = (float)partial[0];
        __syncthreads();
    }
}

/* One block: thread t takes rows t, t + CONVOY__REDUCE_THREADS, ..., writing their gradient
 * rows; the shares are added in a tree, and thread 0 writes the loss, the count and the
 * status the host reads back. */
static __global__ void softmax_xent_kernel(convoy__xent_args a, convoy__xent_status *status)
{
    __shared__ convoy__xent_share partial[CONVOY__REDUCE_THREADS];
    const unsigned t = threadIdx.x;
    partial[t] = convoy__xent_rows(&a, t, CONVOY__REDUCE_THREADS);
    __syncthreads();
    for (unsigned half = CONVOY__REDUCE_THREADS / 2; half > 0; half /= 2) {
        convoy__xent_tree_level(partial, t, half);
        __syncthreads();
    }
    if (t == 0) {
        convoy__xent_finish(&a, &partial[0]);
        status->bad_row = partial[0].bad_row;
        status->bad_value = partial[0].bad_row < a.rows ? a.labels[partial[0].bad_row] : 0.0f;
    }
}

/* param, velocity: in place; velocity NULL when momentum is 0. */
static __global__ void sgd_kernel(float *__restrict__ param, const float *__restrict__ grad,
                                  float *__restrict__ velocity, float lr, float momentum,
                                  float weight_decay, int64_t total)
{
    CONVOY__GRID_STRIDE_LOOP(i, total)
    {
        convoy__sgd_update(param, grad, velocity, lr, momentum, weight_decay, i);
    }
}

/* ---- launchers ---------------------------------------------------------------------------- */

static convoy_status bad_arguments(const char *launcher)
{
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "%s: NULL pointer, NULL stream or negative count", launcher);
}

extern "C" convoy_status convoy__launch_bias_act(float *data, const float *bias, int64_t count,
                                                 int64_t channels, int64_t inner, int act,
                                                 void *stream)
{
    if (!stream || count < 0 || channels < 0 || inner < 0)
        return bad_arguments("launch_bias_act");
    const int64_t total = count * channels * inner;
    if (total == 0)
        return CONVOY_OK;
    if (!data)
        return bad_arguments("launch_bias_act");
    CONVOY__LAUNCH_BEGIN();
    bias_act_kernel<<<convoy__blocks_for(total), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(
        data, bias, channels, inner, act, total);
    CONVOY__LAUNCH_CHECK("bias_act_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_act_backward(const float *output, const float *grad_output,
                                                     float *grad_input, int act, int64_t numel,
                                                     void *stream)
{
    if (!stream || numel < 0)
        return bad_arguments("launch_act_backward");
    if (numel == 0)
        return CONVOY_OK;
    if (!output || !grad_output || !grad_input)
        return bad_arguments("launch_act_backward");
    CONVOY__LAUNCH_BEGIN();
    act_backward_kernel<<<convoy__blocks_for(numel), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(
        output, grad_output, grad_input, act, numel);
    CONVOY__LAUNCH_CHECK("act_backward_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_bias_grad(const float *grad, int64_t count,
                                                  int64_t channels, int64_t inner, float *grad_bias,
                                                  void *stream)
{
    if (!stream || count < 0 || channels < 0 || inner < 0)
        return bad_arguments("launch_bias_grad");
    if (channels == 0)
        return CONVOY_OK;
    if (!grad_bias || (!grad && count * inner > 0))
        return bad_arguments("launch_bias_grad");
    CONVOY__LAUNCH_BEGIN();
    bias_grad_kernel<<<convoy__reduce_blocks_for(channels), CONVOY__REDUCE_THREADS, 0,
                       (cudaStream_t)stream>>>(grad, count, channels, inner, grad_bias);
    CONVOY__LAUNCH_CHECK("bias_grad_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_softmax_xent(const convoy__xent_args *args,
                                                     convoy__xent_status *status, void *stream)
{
    if (!args || !status || !stream || args->rows < 1 || args->classes < 1 || !args->logits ||
        !args->labels || !args->loss)
        return bad_arguments("launch_softmax_xent");
    CONVOY__LAUNCH_BEGIN();
    softmax_xent_kernel<<<1, CONVOY__REDUCE_THREADS, 0, (cudaStream_t)stream>>>(*args, status);
    CONVOY__LAUNCH_CHECK("softmax_xent_kernel");
    return CONVOY_OK;
}

extern "C" convoy_status convoy__launch_sgd(float *param, const float *grad, float *velocity,
                                            float lr, float momentum, float weight_decay,
                                            int64_t numel, void *stream)
{
    if (!stream || numel < 0)
        return bad_arguments("launch_sgd");
    if (numel == 0)
        return CONVOY_OK;
    if (!param || !grad || (momentum != 0.0f && !velocity))
        return bad_arguments("launch_sgd");
    CONVOY__LAUNCH_BEGIN();
    sgd_kernel<<<convoy__blocks_for(numel), CONVOY__THREADS, 0, (cudaStream_t)stream>>>(
        param, grad, velocity, lr, momentum, weight_decay, numel);
    CONVOY__LAUNCH_CHECK("sgd_kernel");
    return CONVOY_OK;
}
