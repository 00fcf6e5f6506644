/* Translating CUDA runtime, cuBLAS and cuDNN failures into convoy_status (STYLE R4).
 *
 * Every call into those libraries goes through one macro of this family. On failure it leaves
 * "<call text> failed: <library error string> (<code>) at file:line" as the thread's detail
 * message (convoy__error) and yields the mapped status: an allocation failure
 * (cudaErrorMemoryAllocation, CUBLAS_STATUS_ALLOC_FAILED, CUDNN_STATUS_ALLOC_FAILED) is
 * CONVOY_ERR_OUT_OF_MEMORY, anything else CONVOY_ERR_BACKEND.
 *
 * This header itself needs no CUDA header: the macros name cudaSuccess and friends only when
 * they are expanded, in files that include the library headers they wrap, and the formatting
 * functions take the numeric code. So host tests can call the formatting functions directly.
 *
 *   CONVOY__CUDA_TRY(call)       return the mapped status from the enclosing function on failure
 *   CONVOY__CUDA_CHECK(call)     evaluate to the mapped status (CONVOY_OK on success), for
 *                                cleanup ladders: if ((st = CONVOY__CUDA_CHECK(x)) != CONVOY_OK)
 *   CONVOY__CUBLAS_TRY / _CHECK  the same for cublasStatus_t
 *   CONVOY__CUDNN_TRY / _CHECK   the same for cudnnStatus_t
 *   CONVOY__LAUNCH_BEGIN()       before a kernel launch: clears a stale, non-sticky last error
 *   CONVOY__LAUNCH_CHECK(name)   after a kernel launch: cudaGetLastError, returning on failure */
#ifndef CONVOY_CUDA_CUDA_CHECK_H
#define CONVOY_CUDA_CUDA_CHECK_H

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Format the detail message for a failed call and return the mapped status. code is the
 * library's status value; call is the call's source text. The CUDA variant also clears the
 * thread's last-error slot when the error is not sticky, so a later launch check does not
 * report a failure that was already returned here. */
convoy_status convoy__cuda_fail(int code, const char *call, const char *file, int line);
convoy_status convoy__cublas_fail(int code, const char *call, const char *file, int line);
convoy_status convoy__cudnn_fail(int code, const char *call, const char *file, int line);

#ifdef __cplusplus
}
#endif

#define CONVOY__CUDA_CHECK(call)                                                                   \
    convoy__cuda_check_value((int)(call), (int)cudaSuccess, #call, __FILE__, __LINE__)

#define CONVOY__CUDA_TRY(call)                                                                     \
    do {                                                                                           \
        cudaError_t convoy__cuda_status_ = (call);                                                 \
        if (convoy__cuda_status_ != cudaSuccess)                                                   \
            return convoy__cuda_fail((int)convoy__cuda_status_, #call, __FILE__, __LINE__);        \
    } while (0)

#define CONVOY__CUBLAS_CHECK(call)                                                                 \
    convoy__cublas_check_value((int)(call), (int)CUBLAS_STATUS_SUCCESS, #call, __FILE__, __LINE__)

#define CONVOY__CUBLAS_TRY(call)                                                                   \
    do {                                                                                           \
        cublasStatus_t convoy__cublas_status_ = (call);                                            \
        if (convoy__cublas_status_ != CUBLAS_STATUS_SUCCESS)                                       \
            return convoy__cublas_fail((int)convoy__cublas_status_, #call, __FILE__, __LINE__);    \
    } while (0)

#define CONVOY__CUDNN_CHECK(call)                                                                  \
    convoy__cudnn_check_value((int)(call), (int)CUDNN_STATUS_SUCCESS, #call, __FILE__, __LINE__)

#define CONVOY__CUDNN_TRY(call)                                                                    \
    do {                                                                                           \
        cudnnStatus_t convoy__cudnn_status_ = (call);                                              \
        if (convoy__cudnn_status_ != CUDNN_STATUS_SUCCESS)                                         \
            return convoy__cudnn_fail((int)convoy__cudnn_status_, #call, __FILE__, __LINE__);      \
    } while (0)

/* A query that returned cudaErrorNotReady, or an allocation the pool recovered from, leaves
 * its code in the thread's last-error slot; without this a later launch check would report
 * it as the launch's own failure. Sticky errors (a faulted context) survive the clear and are
 * reported by the check after the launch. */
#define CONVOY__LAUNCH_BEGIN() ((void)cudaGetLastError())

#define CONVOY__LAUNCH_CHECK(kernel_name)                                                          \
    do {                                                                                           \
        cudaError_t convoy__launch_status_ = cudaGetLastError();                                   \
        if (convoy__launch_status_ != cudaSuccess)                                                 \
            return convoy__cuda_fail((int)convoy__launch_status_, "launch of " kernel_name,        \
                                     __FILE__, __LINE__);                                          \
    } while (0)

static inline convoy_status convoy__cuda_check_value(int code, int success, const char *call,
                                                     const char *file, int line)
{
    return code == success ? CONVOY_OK : convoy__cuda_fail(code, call, file, line);
}

static inline convoy_status convoy__cublas_check_value(int code, int success, const char *call,
                                                       const char *file, int line)
{
    return code == success ? CONVOY_OK : convoy__cublas_fail(code, call, file, line);
}

static inline convoy_status convoy__cudnn_check_value(int code, int success, const char *call,
                                                      const char *file, int line)
{
    return code == success ? CONVOY_OK : convoy__cudnn_fail(code, call, file, line);
}

/* Blocks needed to cover count items with per_block items per block. */
#define CONVOY_CEIL_DIV(count, per_block) (((count) + (per_block)-1) / (per_block))

#endif /* CONVOY_CUDA_CUDA_CHECK_H */
