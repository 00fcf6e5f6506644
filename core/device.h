/* The backend interface: everything the scheduler, the memory pool and the
 * planner need from a device, as one function table.
 *
 * Two backends implement it: the host backend (cpu/), where a stream is a
 * worker thread with a FIFO queue and an event a flag with a condition
 * variable, and the CUDA backend (kernels/), where they are cudaStream_t and
 * cudaEvent_t. Nothing above this header names either backend; the single
 * place that registers them is runtime/backend_registry.c.
 *
 * Work is enqueued as a function plus argument. On the host backend the
 * stream's worker calls it in FIFO order (or the caller calls it inline for
 * the inline stream). On CUDA (ops->enqueue_runs_now == 1) it is called at
 * once, on the submitting thread, with the native stream, and it must only
 * enqueue device work. Either way the work function receives the native
 * stream handle (a cudaStream_t, or NULL on the host) to pass to copy and
 * convolution calls. */
#ifndef CONVOY_CORE_DEVICE_H
#define CONVOY_CORE_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"

typedef struct convoy__backend convoy__backend;
typedef struct convoy__stream convoy__stream;
typedef struct convoy__event convoy__event;
typedef struct convoy__backend_ops convoy__backend_ops;

/* A unit of stream work. native_stream is the stream's cudaStream_t on CUDA
 * and NULL on the host. */
typedef void (*convoy__work_fn)(void *arg, void *native_stream);

/* ---- convolution plans ------------------------------------------------- */

/* One way a backend can run a convolution. */
typedef struct convoy__conv_candidate {
    unsigned impl;              /* one CONVOY_IMPL_* bit */
    int algo;                   /* backend-specific (cuDNN algorithm enum), else 0 */
    char name[48];              /* "gemm", "1x1", "direct", "cudnn:IMPLICIT_PRECOMP_GEMM" */
    size_t workspace_fixed;     /* scratch bytes independent of the chunk */
    size_t workspace_per_image; /* scratch bytes per image of a chunk (GEMM paths) */
    int deterministic;          /* 1 when results are bit-reproducible */
    double cost;                /* heuristic rank: lower runs first (cost model or cuDNN order) */
} convoy__conv_candidate;

#define CONVOY__MAX_CANDIDATES 16

/* A chosen way to run one convolution; built by the planner, cached, and
 * handed to ops->conv_run. backend_data belongs to the backend
 * (ops->conv_prepare creates it, ops->conv_release frees it). */
typedef struct convoy__conv_plan {
    convoy__conv_geom geom;
    convoy_conv_direction direction;
    convoy__conv_candidate candidate;
    int64_t images_per_chunk; /* GEMM paths: images per im2col chunk, >= 1 when batch > 0 */
    size_t workspace_bytes;   /* what conv_run may use of the workspace pointer */
    void *backend_data;
} convoy__conv_plan;

/* ---- the function table ------------------------------------------------ */

struct convoy__backend_ops {
    const char *name;     /* "cpu" or "cuda" */
    convoy_device device; /* CONVOY_DEVICE_CPU or CONVOY_DEVICE_CUDA */
    int enqueue_runs_now; /* 1: work functions run at enqueue and only enqueue (CUDA) */

    /* Frees the backend after every stream, event and allocation is gone. */
    void (*destroy)(convoy__backend *be);

    /* One line for convoy_runtime_describe: device, library versions. */
    const char *(*describe)(convoy__backend *be);

    /* -- streams -- */
    /* name labels the stream for the profiler ("convoy compute 0"). */
    convoy_status (*stream_create)(convoy__backend *be, const char *name, convoy__stream **out);
    /* Waits for the stream's queued work, then frees it. */
    void (*stream_destroy)(convoy__backend *be, convoy__stream *stream);
    /* Runs fn(arg, native) after everything enqueued on stream before it. A
     * NULL stream means "inline": fn runs now on the calling thread. */
    convoy_status (*stream_enqueue)(convoy__backend *be, convoy__stream *stream, convoy__work_fn fn,
                                    void *arg);
    /* The native handle work on this stream receives (NULL on the host). */
    void *(*stream_native)(convoy__backend *be, convoy__stream *stream);
    /* Makes room for `entries` more stream_enqueue, stream_wait_event and
     * event_record calls on stream, so that they cannot fail for want of
     * host memory while the caller is the only one queuing on it (the
     * scheduler, under its lock): a task is then queued whole or not at
     * all. NULL when those calls never fail that way (CUDA). */
    convoy_status (*stream_reserve)(convoy__backend *be, convoy__stream *stream, size_t entries);

    /* -- events -- */
    convoy_status (*event_create)(convoy__backend *be, convoy__event **out);
    void (*event_destroy)(convoy__backend *be, convoy__event *event);
    /* The event completes when everything enqueued on stream so far has run.
     * A NULL stream completes it at once. An event is recorded at most once
     * between create and destroy by the scheduler; the pool may re-record. */
    convoy_status (*event_record)(convoy__backend *be, convoy__event *event,
                                  convoy__stream *stream);
    /* Work enqueued on stream after this waits until event completes. */
    convoy_status (*stream_wait_event)(convoy__backend *be, convoy__stream *stream,
                                       convoy__event *event);
    /* 1 when complete (or never recorded), 0 when not yet; never blocks. A
     * CUDA error surfaced by the query is returned through *error (may be NULL). */
    int (*event_query)(convoy__backend *be, convoy__event *event, convoy_status *error);
    /* Blocks until the event completes. */
    convoy_status (*event_synchronize)(convoy__backend *be, convoy__event *event);

    /* -- memory -- */
    /* Device memory (host memory, 64-byte aligned, on the CPU backend). Sets
     * the error message and returns CONVOY_ERR_OUT_OF_MEMORY on failure. */
    convoy_status (*mem_alloc)(convoy__backend *be, size_t bytes, void **out);
    void (*mem_free)(convoy__backend *be, void *ptr);
    /* Page-locked host memory for staging (plain host memory on the CPU). */
    convoy_status (*host_alloc)(convoy__backend *be, size_t bytes, void **out);
    void (*host_free)(convoy__backend *be, void *ptr);
    /* Copies in stream order; called from inside a work function with its
     * native stream. kind: 0 host->device, 1 device->host, 2 device->device. */
    convoy_status (*copy)(convoy__backend *be, void *native_stream, void *dst, const void *src,
                          size_t bytes, int kind);
    /* Runs fn(arg) on a host thread in stream order (cudaLaunchHostFunc on
     * CUDA; a direct call on the host backend, whose work already runs in
     * stream order). fn must not call the CUDA API. */
    convoy_status (*host_callback)(convoy__backend *be, void *native_stream, void (*fn)(void *),
                                   void *arg);
    /* Zeroes device memory in stream order (from inside a work function). */
    convoy_status (*zero)(convoy__backend *be, void *native_stream, void *dst, size_t bytes);
    /* Total device memory in bytes, 0 when unknown (host). */
    size_t (*memory_capacity)(convoy__backend *be);

    /* -- convolution --
     * conv_candidates, conv_prepare, conv_release and conv_time are called by
     * the planner under its own lock, from any submitting thread, outside the
     * scheduler's lock; conv_run is called from a work function. A backend
     * that shares library handles between them guards them itself. */
    /* Lists every candidate the backend has for this convolution, regardless
     * of exclusions (the planner filters). Writes at most max entries. */
    int (*conv_candidates)(convoy__backend *be, const convoy__conv_geom *geom,
                           convoy_conv_direction direction, convoy__conv_candidate *out, int max);
    /* Builds backend_data (descriptors) for a chosen plan; may be NULL. */
    convoy_status (*conv_prepare)(convoy__backend *be, convoy__conv_plan *plan);
    void (*conv_release)(convoy__backend *be, convoy__conv_plan *plan);
    /* Runs the plan in stream order (from inside a work function).
     * workspace has plan->workspace_bytes bytes (NULL when 0). */
    convoy_status (*conv_run)(convoy__backend *be, void *native_stream,
                              const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                              void *workspace);
    /* Milliseconds one run of the plan takes, measured on scratch buffers the
     * backend allocates itself; used by the time_* policies. */
    convoy_status (*conv_time)(convoy__backend *be, const convoy__conv_plan *plan, double *ms);
};

/* Every backend object starts with this header. */
struct convoy__backend {
    const convoy__backend_ops *ops;
};

#endif /* CONVOY_CORE_DEVICE_H */
