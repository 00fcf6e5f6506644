/* Optional CUDA interop for convoy. Include it after cuda_runtime.h when a
 * program wants to mix its own CUDA work with convoy's tasks.
 *
 * Custom tasks (convoy_submit) already receive the task's cudaStream_t and
 * device pointers through convoy_task_context; this header names those types
 * explicitly for CUDA programs. */
#ifndef CONVOY_CUDA_H
#define CONVOY_CUDA_H

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA stream a custom task must enqueue its work on. Only meaningful
 * when context->device is CONVOY_DEVICE_CUDA; NULL otherwise. */
static inline void *convoy_task_cuda_stream(const convoy_task_context *context)
{
    return context->device == CONVOY_DEVICE_CUDA ? context->stream : (void *)0;
}

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_CUDA_H */
