/* The failure half of cuda/cuda_check.h: turns a CUDA runtime, cuBLAS or cuDNN status into
 * a convoy_status and a detail message naming the call, the library's own error text and
 * code, and where in convoy it was made. */
#include <stdio.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef CONVOY_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "cuda/cuda_check.h"
#include "core/error_detail.h"

/* Build systems pass absolute paths in __FILE__; the last two components ("kernels/x.c")
 * identify the place and keep the message short. */
static const char *short_path(const char *file)
{
    const char *last = strrchr(file, '/');
    if (!last)
        return file;
    const char *previous = last;
    while (previous > file && previous[-1] != '/')
        --previous;
    return previous;
}

convoy_status convoy__cuda_fail(int code, const char *call, const char *file, int line)
{
    cudaError_t error = (cudaError_t)code;
    /* A non-sticky error stays in the thread's last-error slot until read; this failure is
     * reported here, so clear it rather than let the next launch check report it again. */
    (void)cudaGetLastError();
    convoy_status status =
        error == cudaErrorMemoryAllocation ? CONVOY_ERR_OUT_OF_MEMORY : CONVOY_ERR_BACKEND;
    return convoy__error(status, "%s failed: %s (%s %d) at %s:%d", call, cudaGetErrorString(error),
                         cudaGetErrorName(error), code, short_path(file), line);
}

convoy_status convoy__cublas_fail(int code, const char *call, const char *file, int line)
{
    cublasStatus_t error = (cublasStatus_t)code;
    convoy_status status =
        error == CUBLAS_STATUS_ALLOC_FAILED ? CONVOY_ERR_OUT_OF_MEMORY : CONVOY_ERR_BACKEND;
    const char *text = cublasGetStatusString(error);
    return convoy__error(status, "%s failed: %s (cuBLAS status %d) at %s:%d", call,
                         text ? text : "unknown cuBLAS status", code, short_path(file), line);
}

convoy_status convoy__cudnn_fail(int code, const char *call, const char *file, int line)
{
#ifdef CONVOY_HAVE_CUDNN
    cudnnStatus_t error = (cudnnStatus_t)code;
    convoy_status status =
        error == CUDNN_STATUS_ALLOC_FAILED ? CONVOY_ERR_OUT_OF_MEMORY : CONVOY_ERR_BACKEND;
    const char *text = cudnnGetErrorString(error);
    /* cuDNN 9 keeps a longer explanation of the thread's last failure (which parameter it
     * rejected); it is worth more than the generic status text when present. */
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    return convoy__error(status, "%s failed: %s (cuDNN status %d)%s%s at %s:%d", call,
                         text ? text : "unknown cuDNN status", code, detail[0] ? ": " : "", detail,
                         short_path(file), line);
#else
    return convoy__error(CONVOY_ERR_BACKEND, "%s failed: cuDNN status %d at %s:%d", call, code,
                         short_path(file), line);
#endif
}
