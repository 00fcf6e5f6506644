/* The training ops on CUDA (kernels/train_ops.h): each entry launches its kernel of
 * cuda/train_kernels.cu on the task's stream. Like every entry point the runtime calls, each
 * makes the backend's device current and gives the caller's back (cuda/device_scope.h); a
 * NULL stream means "now": the private stream, waited for.
 *
 * Softmax cross-entropy must fail its task when a label is not a class index, and on CUDA the
 * labels are only known once the stream has run the kernel. The scheduler takes a task's
 * status when its body returns, so this entry copies the kernel's status word back and waits
 * for its stream before returning: the one training op whose submit waits for the device
 * (docs/DESIGN.md section 7). The wait sleeps in the driver, and nothing the stream waits
 * for needs a lock the submitting thread holds. */
#include <stdint.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/cuda_check.h"
#include "cuda/train_cuda.h"
#include "cuda/train_kernels.h"
#include "kernels/train_ops.h"
#include "core/error_detail.h"

/* Enters the device scope and resolves the stream. */
static convoy_status enter(convoy__backend *base, void *native_stream, convoy__device_scope *scope,
                           cudaStream_t *stream)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    *stream = native_stream ? (cudaStream_t)native_stream : be->private_stream;
    return convoy__cuda_enter(be, scope);
}

/* Waits for the private stream when the work ran "now", then leaves the scope. */
static convoy_status leave(convoy__backend *base, void *native_stream,
                           const convoy__device_scope *scope, convoy_status status)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (status == CONVOY_OK && !native_stream)
        status = CONVOY__CUDA_CHECK(cudaStreamSynchronize(be->private_stream));
    convoy__cuda_leave(scope);
    return status;
}

static convoy_status cuda_bias_act(convoy__backend *be, void *native_stream, float *data,
                                   const float *bias, int64_t count, int64_t channels,
                                   int64_t inner, convoy_activation act)
{
    convoy__device_scope scope;
    cudaStream_t stream;
    convoy_status status = enter(be, native_stream, &scope, &stream);
    if (status == CONVOY_OK)
        status = convoy__launch_bias_act(data, bias, count, channels, inner, (int)act, stream);
    return leave(be, native_stream, &scope, status);
}

static convoy_status cuda_act_backward(convoy__backend *be, void *native_stream,
                                       convoy_activation act, const float *output,
                                       const float *grad_output, float *grad_input, int64_t numel)
{
    convoy__device_scope scope;
    cudaStream_t stream;
    convoy_status status = enter(be, native_stream, &scope, &stream);
    if (status == CONVOY_OK)
        status =
            convoy__launch_act_backward(output, grad_output, grad_input, (int)act, numel, stream);
    return leave(be, native_stream, &scope, status);
}

static convoy_status cuda_bias_backward(convoy__backend *be, void *native_stream, const float *grad,
                                        int64_t count, int64_t channels, int64_t inner,
                                        float *grad_bias)
{
    convoy__device_scope scope;
    cudaStream_t stream;
    convoy_status status = enter(be, native_stream, &scope, &stream);
    if (status == CONVOY_OK)
        status = convoy__launch_bias_grad(grad, count, channels, inner, grad_bias, stream);
    return leave(be, native_stream, &scope, status);
}

static convoy_status cuda_softmax_xent(convoy__backend *be, void *native_stream,
                                       const convoy__xent_args *args, void *workspace)
{
    if (!workspace)
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "softmax_cross_entropy: no workspace for the status word");
    convoy__device_scope scope;
    cudaStream_t stream;
    convoy__xent_status result = {0, 0.0f};
    convoy_status status = enter(be, native_stream, &scope, &stream);
    if (status == CONVOY_OK)
        status = convoy__launch_softmax_xent(args, (convoy__xent_status *)workspace, stream);
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(
            cudaMemcpyAsync(&result, workspace, sizeof result, cudaMemcpyDeviceToHost, stream));
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(cudaStreamSynchronize(stream));
    convoy__cuda_leave(&scope);
    if (status == CONVOY_OK && result.bad_row < args->rows)
        return convoy__bad_label(result.bad_row, result.bad_value, args->classes);
    return status;
}

static convoy_status cuda_sgd(convoy__backend *be, void *native_stream,
                              const convoy_sgd_params *params, float *param, const float *grad,
                              float *velocity, int64_t numel)
{
    convoy__device_scope scope;
    cudaStream_t stream;
    convoy_status status = enter(be, native_stream, &scope, &stream);
    if (status == CONVOY_OK)
        status = convoy__launch_sgd(param, grad, velocity, params->lr, params->momentum,
                                    params->weight_decay, numel, stream);
    return leave(be, native_stream, &scope, status);
}

const convoy__train_ops convoy__cuda_train_ops = {
    .bias_act = cuda_bias_act,
    .act_backward = cuda_act_backward,
    .bias_backward = cuda_bias_backward,
    /* The status word, in a block of its own. */
    .xent_workspace_bytes = 256,
    .softmax_xent = cuda_softmax_xent,
    .sgd = cuda_sgd,
};
