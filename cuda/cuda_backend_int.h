/* The CUDA backend's internal state, shared by the files of cuda/ that implement it:
 * cuda_backend.c (device, streams, events, memory), cuda_conv.c (the algorithm registry,
 * running and timing plans), conv_gemm_cuda.c (cuBLAS paths) and conv_cudnn.c (cuDNN paths).
 * Needs the CUDA headers, so only cuda/ includes it.
 *
 * Locking. The scheduler enqueues (and so runs plans) under its own lock, but the planner
 * asks for candidates, prepares and times plans under a different one, from whatever
 * thread submits, and a runtime may be used from many threads. The cuBLAS and cuDNN handles
 * keep the stream they were last given, so "set the stream, then call" must not interleave
 * between threads: every use of a handle happens under `lock`, which also guards the stream
 * list. It is always the innermost lock and is never held while waiting for the device. */
#ifndef CONVOY_CUDA_CUDA_BACKEND_INT_H
#define CONVOY_CUDA_CUDA_BACKEND_INT_H

#include <pthread.h>
#include <stddef.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef CONVOY_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "cuda/cuda_backend.h"
#include "cuda/device_scope.h"
#include "kernels/conv_algo.h"

/* A timing event with a known host time (cuda/event_clock.h); defined in cuda_backend.c. */
typedef struct convoy__cuda_anchor convoy__cuda_anchor;

/* What a convoy__stream points at on CUDA. */
typedef struct convoy__cuda_stream {
    cudaStream_t native;
    /* cuBLAS workspace of this stream (deterministic mode), from the scratch allocator on the
     * first cuBLAS plan the stream runs; written under be->lock, freed at stream destroy. */
    convoy__scratch blas_workspace;
    struct convoy__cuda_stream *next;
} convoy__cuda_stream;

typedef struct convoy__cuda_backend {
    convoy__backend base;
    int device;
    int deterministic; /* pin one cuBLAS workspace per stream (see cuda_bind_blas) */
    size_t blas_workspace_bytes;
    cudaStream_t private_stream; /* for the interface's NULL ("run now") stream */
    pthread_mutex_t lock;        /* guards the handles and the stream list; see above */
    cublasHandle_t cublas;
    convoy__cuda_stream *streams;
#ifdef CONVOY_HAVE_CUDNN
    cudnnHandle_t cudnn;
#endif
    int has_cudnn;
    /* Task timers. timing_lock guards timing_stream (created on the first anchor, used for
     * nothing else) and anchor (the current one). It is held while a new anchor's event is
     * waited for, on that otherwise idle stream, about once a second; no other lock is taken
     * under it. */
    pthread_mutex_t timing_lock;
    cudaStream_t timing_stream;
    convoy__cuda_anchor *anchor;
    char description[640];
} convoy__cuda_backend;

static inline convoy__cuda_backend *convoy__cuda_of(convoy__backend *be)
{
    return (convoy__cuda_backend *)be;
}

/* Makes the backend's device current on the calling thread, saving the caller's in scope;
 * convoy__cuda_leave gives it back. Every entry point the runtime calls on the program's
 * threads (the device operations and the algorithm registry) brackets its CUDA calls with
 * the pair, because the current device is per thread and belongs to the program
 * (cuda/device_scope.h has the rules). On failure nothing is left to undo, and leave may
 * still be called. */
convoy_status convoy__cuda_enter(const convoy__cuda_backend *be, convoy__device_scope *scope);
void convoy__cuda_leave(const convoy__device_scope *scope);

/* In deterministic mode, makes sure the stream has its own cuBLAS workspace, taken from the
 * scratch allocator (the runtime's pool) on first use; does nothing otherwise or for a
 * stream the backend did not create. Called before be->lock is taken: the pool may release
 * memory, and cudaFree waits for the device. */
convoy_status convoy__cuda_provide_blas_workspace(convoy__cuda_backend *be, cudaStream_t stream);

/* Points the cuBLAS handle at stream, and in deterministic mode at that stream's own
 * workspace (convoy__cuda_provide_blas_workspace provided it): cuBLAS only promises
 * bit-reproducible results across concurrent streams when each stream has its own workspace.
 * Caller holds be->lock. */
convoy_status convoy__cuda_bind_blas(convoy__cuda_backend *be, cudaStream_t stream);

/* ---- convolution algorithms ------------------------------------------------------------ */

/* The algorithms of the files other than cuda_conv.c, which lists them. */
extern const convoy__conv_algo convoy__cuda_algo_cudnn; /* conv_cudnn.c */
extern const convoy__conv_algo convoy__cuda_algo_gemm;  /* conv_gemm_cuda.c */
extern const convoy__conv_algo convoy__cuda_algo_1x1;   /* conv_gemm_cuda.c */

/* "cuDNN 9.19.0" into text, or why it is not in use. */
void convoy__cudnn_describe(const convoy__cuda_backend *be, char *text, size_t size);

#endif /* CONVOY_CUDA_CUDA_BACKEND_INT_H */
