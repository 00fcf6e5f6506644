/* The device-operations interface: what the scheduler and the memory pool
 * need from a device (streams, events, memory, copies, host callbacks), as one
 * function table. A backend is this table plus its convolution algorithms
 * (kernels/conv_algo.h), which live apart: nothing here knows what a
 * convolution is.
 *
 * Two backends implement it: the host backend (cpu/), where a stream is a
 * worker thread with a FIFO queue and an event a flag with a condition
 * variable, and the CUDA backend (cuda/), where they are cudaStream_t and
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

typedef struct convoy__backend convoy__backend;
typedef struct convoy__stream convoy__stream;
typedef struct convoy__event convoy__event;
typedef struct convoy__timer convoy__timer;
typedef struct convoy__backend_ops convoy__backend_ops;
/* The backend's convolution algorithms (kernels/conv_algo.h). */
typedef struct convoy__conv_registry convoy__conv_registry;
/* The backend's training ops: bias + activation, gradients, loss, SGD (kernels/train_ops.h). */
typedef struct convoy__train_ops convoy__train_ops;

/* Directions of convoy__backend_ops.copy. */
typedef enum convoy__copy_kind {
    CONVOY__COPY_HOST_TO_DEVICE = 0,
    CONVOY__COPY_DEVICE_TO_HOST = 1,
    CONVOY__COPY_DEVICE_TO_DEVICE = 2
} convoy__copy_kind;

/* A unit of stream work. native_stream is the stream's cudaStream_t on CUDA
 * and NULL on the host. */
typedef void (*convoy__work_fn)(void *arg, void *native_stream);

/* ---- scratch memory ----------------------------------------------------- */

/* Device memory a backend needs for itself, outside any task: the buffers the
 * registry's time function measures a plan on (kernels/conv_algo.h) and the
 * per-stream cuBLAS workspace of deterministic mode. The runtime points every
 * backend's allocator at its pool (memory/pool.h, convoy__pool_scratch), so
 * these bytes count against memory_limit, show in convoy_memory_stats, and get
 * the pool's release-the-cache-and-retry before an out-of-memory failure.
 * The backend never learns about the pool: core/ stays below memory/.
 *
 * alloc grants at least bytes (> 0) of 256-byte aligned device memory, sets
 * *ptr and *handle (what free takes back), or returns
 * CONVOY_ERR_OUT_OF_MEMORY with the message saying what (a phrase such as
 * "timing input of gemm") could not be had. free returns it at once: the
 * device must be done with it (there is no stream-ordered free here). Both
 * are thread-safe; user_data is the pool. */
typedef struct convoy__scratch_allocator {
    convoy_status (*alloc)(void *user_data, size_t bytes, const char *what, void **ptr,
                           void **handle);
    void (*free)(void *user_data, void *handle);
    void *user_data;
} convoy__scratch_allocator;

/* One granted scratch buffer. */
typedef struct convoy__scratch {
    void *ptr;    /* NULL when nothing is held */
    void *handle; /* the allocator's; NULL when it came from ops->mem_alloc */
} convoy__scratch;

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
    /* Device memory (256-byte aligned host memory on the CPU backend). Sets
     * the error message and returns CONVOY_ERR_OUT_OF_MEMORY on failure. */
    convoy_status (*mem_alloc)(convoy__backend *be, size_t bytes, void **out);
    void (*mem_free)(convoy__backend *be, void *ptr);
    /* Page-locked host memory for staging (plain host memory on the CPU). */
    convoy_status (*host_alloc)(convoy__backend *be, size_t bytes, void **out);
    void (*host_free)(convoy__backend *be, void *ptr);
    /* Copies in stream order; called from inside a work function with its
     * native stream. */
    convoy_status (*copy)(convoy__backend *be, void *native_stream, void *dst, const void *src,
                          size_t bytes, convoy__copy_kind kind);
    /* Runs fn(arg) on a host thread in stream order (cudaLaunchHostFunc on
     * CUDA; a direct call on the host backend, whose work already runs in
     * stream order). fn must not call the CUDA API. */
    convoy_status (*host_callback)(convoy__backend *be, void *native_stream, void (*fn)(void *),
                                   void *arg);
    /* Zeroes device memory in stream order (from inside a work function). */
    convoy_status (*zero)(convoy__backend *be, void *native_stream, void *dst, size_t bytes);
    /* Total device memory in bytes, 0 when unknown (host). */
    size_t (*memory_capacity)(convoy__backend *be);
    /* 1 when every byte of [ptr, ptr + bytes) is page-locked host memory the
     * device can copy from or to directly, so a transfer needs no staging
     * (cudaPointerGetAttributes reports cudaMemoryTypeHost on CUDA); 0 for
     * ordinary pageable memory, for anything unknown, and always on the host
     * backend. Never fails and leaves no error behind. May be NULL (never
     * pinned). */
    int (*host_is_pinned)(convoy__backend *be, const void *ptr, size_t bytes);

    /* -- task timing (optional: all four NULL on a backend that cannot) -- */
    /* A timer marks when a stream reached two points, the start and the end
     * of one task's work, so the profiler shows when the device ran the task
     * rather than when the host enqueued it. On the host backend a record is
     * the host clock at that moment (the work runs then); on CUDA it is a
     * timing event (apart from the blocking completion events, which time
     * nothing). Created on the submitting thread, recorded by the scheduler
     * around the work, read once the task's completion event fired. */
    convoy_status (*timer_create)(convoy__backend *be, convoy__timer **out);
    void (*timer_destroy)(convoy__backend *be, convoy__timer *timer);
    /* From inside a work function, with its native stream: marks the point
     * the stream has reached as the start (end == 0) or the end (end == 1). */
    convoy_status (*timer_record)(convoy__backend *be, convoy__timer *timer, int end,
                                  void *native_stream);
    /* Once work enqueued after both records has completed: the two points in
     * microseconds on the clock of convoy__now_us (core/platform.h). Fails,
     * leaving no error behind for later device calls, when the times are not
     * available (a record failed or has not been reached). */
    convoy_status (*timer_elapsed)(convoy__backend *be, convoy__timer *timer, double *start_us,
                                   double *end_us);
};

/* Every backend object starts with this header: its device operations, its
 * convolution algorithms, its training ops, and where its own scratch memory comes from. */
struct convoy__backend {
    const convoy__backend_ops *ops;
    const convoy__conv_registry *conv;
    const convoy__train_ops *train;
    /* Set by the runtime right after its pool exists and cleared before the
     * pool goes; read without a lock in between. All zero (a backend used on
     * its own, as in tests): scratch comes straight from ops->mem_alloc, with
     * no limit. */
    convoy__scratch_allocator scratch;
};

/* Scratch memory through the backend's allocator (see above). *out is set
 * only on success. */
static inline convoy_status convoy__scratch_alloc(convoy__backend *be, size_t bytes,
                                                  const char *what, convoy__scratch *out)
{
    void *ptr = NULL, *handle = NULL;
    convoy_status status =
        be->scratch.alloc ? be->scratch.alloc(be->scratch.user_data, bytes, what, &ptr, &handle)
                          : be->ops->mem_alloc(be, bytes, &ptr);
    if (status == CONVOY_OK) {
        out->ptr = ptr;
        out->handle = handle;
    }
    return status;
}

/* Returns a scratch buffer (nothing when none is held) and clears *s. A buffer from an
 * allocator that has since been removed stays with its pool, which frees it when it goes. */
static inline void convoy__scratch_free(convoy__backend *be, convoy__scratch *s)
{
    if (s->handle) {
        if (be->scratch.free)
            be->scratch.free(be->scratch.user_data, s->handle);
    } else if (s->ptr) {
        be->ops->mem_free(be, s->ptr);
    }
    s->ptr = NULL;
    s->handle = NULL;
}

#endif /* CONVOY_CORE_DEVICE_H */
