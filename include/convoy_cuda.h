/* Optional CUDA interop for convoy: the CUDA types behind a custom task's
 * context and a tensor's device storage. Needs the CUDA runtime headers
 * (this header includes cuda_runtime_api.h); convoy.h itself never does.
 *
 * Custom tasks (convoy_submit) on a CUDA runtime are called at enqueue time
 * with the task's stream and device pointers and must only enqueue work on
 * that stream; convoy_cuda_task_stream gives the stream with its type. A
 * CUDA program that runs its own kernels on convoy's tensors outside a
 * custom task gets their device pointers from convoy_cuda_tensor_data. */
#ifndef CONVOY_CUDA_H
#define CONVOY_CUDA_H

#include <cuda_runtime_api.h>

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA stream a custom task must enqueue its work on. NULL (which is
 * not a stream to use) when context is NULL or context->device is not
 * CONVOY_DEVICE_CUDA. Valid only during the task function's call. */
static inline cudaStream_t convoy_cuda_task_stream(const convoy_task_context *context)
{
    return context && context->device == CONVOY_DEVICE_CUDA ? (cudaStream_t)context->stream
                                                            : (cudaStream_t)0;
}

/* Sets *device_ptr to the tensor's device storage (numel floats, row-major;
 * NULL for an empty tensor). The pointer stays valid until the tensor is
 * destroyed. convoy orders only its own tasks: work the program enqueues on
 * it must be ordered by hand (inside a custom task that declares the tensor,
 * or after convoy_runtime_synchronize with nothing pending on the tensor).
 * Returns CONVOY_ERR_INVALID_ARGUMENT (NULL tensor or device_ptr, a tensor
 * detached by convoy_runtime_destroy) or CONVOY_ERR_NO_DEVICE (the tensor's
 * runtime runs on the CPU); *device_ptr is set only on success.
 * Synchronous, thread-safe. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_cuda_tensor_data(convoy_tensor *tensor,
                                                                     float **device_ptr);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_CUDA_H */
