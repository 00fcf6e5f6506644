/* The CUDA backend: the backend interface (core/device.h) on one CUDA device. Streams
 * are non-blocking cudaStream_t (never the legacy default stream), events are cudaEvent_t
 * without timing (task timers have timing events of their own), memory comes from
 * cudaMalloc / cudaHostAlloc, and work functions run at enqueue time on the submitting
 * thread, where they only enqueue. Convolutions are in
 * cuda/cuda_conv.c. Creation fails cleanly, with the reason, on machines without a usable
 * driver or device, so the runtime can fall back to the CPU. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/cuda_check.h"
#include "cuda/event_clock.h"
#include "cuda/train_cuda.h"
#include "core/error_detail.h"
#include "core/platform.h"

#ifdef CONVOY_HAVE_NVTX
#include "nvtx3/nvToolsExtCudaRt.h"
#endif

/* What a convoy__event points at. `armed` is 0 until the event is recorded on a stream (and
 * again after a record on the NULL stream, which completes it at once), so queries and waits
 * on such an event need no CUDA call and never touch the legacy default stream. */
typedef struct cuda_event {
    cudaEvent_t native;
    atomic_int armed;
} cuda_event;

/* ---- the current device ------------------------------------------------------------------ */

static convoy_status get_device(void *context, int *device)
{
    (void)context;
    CONVOY__CUDA_TRY(cudaGetDevice(device));
    return CONVOY_OK;
}

static convoy_status set_device(void *context, int device)
{
    (void)context;
    CONVOY__CUDA_TRY(cudaSetDevice(device));
    return CONVOY_OK;
}

/* Giving the caller its device back is best effort: the entry point may be returning a
 * failure whose message must survive, and a device the program had current can be set
 * again. A failure is cleared so no later launch check mistakes it for its own. */
static void restore_device(void *context, int device)
{
    (void)context;
    if (cudaSetDevice(device) != cudaSuccess)
        (void)cudaGetLastError();
}

const convoy__device_calls convoy__cuda_device_calls = {get_device, set_device, restore_device,
                                                        NULL};

convoy_status convoy__cuda_enter(const convoy__cuda_backend *be, convoy__device_scope *scope)
{
    return convoy__device_scope_enter(&convoy__cuda_device_calls, be->device, scope);
}

void convoy__cuda_leave(const convoy__device_scope *scope)
{
    convoy__device_scope_leave(&convoy__cuda_device_calls, scope);
}

/* ---- the cuBLAS workspace of each stream --------------------------------------------------- */

static convoy__cuda_stream *find_stream(convoy__cuda_backend *be, cudaStream_t stream)
{
    convoy__cuda_stream *s = be->streams;
    while (s && s->native != stream)
        s = s->next;
    return s;
}

/* The allocation happens with be->lock released: that lock is the innermost one, and the
 * pool may hand cached memory back to CUDA, and cudaFree waits for the device. A stream's
 * work is enqueued by one thread at a time (under the scheduler's lock), so two threads do
 * not normally get here for one stream; if they do, the second buffer goes back. The private
 * stream has no record and gets none: nothing runs beside it on the handle. */
convoy_status convoy__cuda_provide_blas_workspace(convoy__cuda_backend *be, cudaStream_t stream)
{
    if (!be->deterministic)
        return CONVOY_OK;
    pthread_mutex_lock(&be->lock);
    convoy__cuda_stream *s = find_stream(be, stream);
    int needed = s && !s->blas_workspace.ptr;
    pthread_mutex_unlock(&be->lock);
    if (!needed)
        return CONVOY_OK;
    convoy__scratch workspace = {NULL, NULL};
    convoy_status status = convoy__scratch_alloc(&be->base, be->blas_workspace_bytes,
                                                 "cuBLAS workspace of a stream", &workspace);
    if (status != CONVOY_OK)
        return status;
    pthread_mutex_lock(&be->lock);
    if (!s->blas_workspace.ptr) {
        s->blas_workspace = workspace;
        workspace.ptr = NULL;
        workspace.handle = NULL;
    }
    pthread_mutex_unlock(&be->lock);
    convoy__scratch_free(&be->base, &workspace);
    return CONVOY_OK;
}

convoy_status convoy__cuda_bind_blas(convoy__cuda_backend *be, cudaStream_t stream)
{
    /* cublasSetStream also resets the handle to cuBLAS's own workspace pool, so a stream's
     * pinned workspace is set again after it on every use. */
    CONVOY__CUBLAS_TRY(cublasSetStream(be->cublas, stream));
    if (!be->deterministic)
        return CONVOY_OK;
    convoy__cuda_stream *s = find_stream(be, stream);
    if (!s)
        return CONVOY_OK; /* a private stream: nothing runs beside it on this handle */
    if (!s->blas_workspace.ptr)
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "cuda: no cuBLAS workspace was provided for a stream in "
                             "deterministic mode");
    CONVOY__CUBLAS_TRY(
        cublasSetWorkspace(be->cublas, s->blas_workspace.ptr, be->blas_workspace_bytes));
    return CONVOY_OK;
}

/* ---- task timers: the anchor ----------------------------------------------------------- */

struct convoy__cuda_anchor {
    cudaEvent_t event; /* with timing, complete */
    double host_us;    /* its time on the host clock */
    atomic_int refs;   /* the backend's while current, and each timer started against it */
};

/* Two timing events around a task's work on its stream, and the anchor that places them. */
struct convoy__timer {
    cudaEvent_t events[2]; /* start, end */
    convoy__cuda_anchor *anchor;
    int recorded; /* bit 0: start, bit 1: end */
};

static void anchor_release(convoy__cuda_anchor *anchor)
{
    if (anchor && atomic_fetch_sub_explicit(&anchor->refs, 1, memory_order_acq_rel) == 1) {
        (void)cudaEventDestroy(anchor->event);
        free(anchor);
    }
}

/* ---- lifetime and description ------------------------------------------------------------ */

static void cuda_destroy(convoy__backend *base)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!be)
        return;
    convoy__device_scope scope;
    (void)convoy__cuda_enter(be, &scope);
    /* Timers still alive (a program's detached task) keep their anchor. */
    anchor_release(be->anchor);
    be->anchor = NULL;
    if (be->timing_stream)
        (void)cudaStreamDestroy(be->timing_stream);
#ifdef CONVOY_HAVE_CUDNN
    if (be->cudnn)
        (void)cudnnDestroy(be->cudnn);
#endif
    if (be->cublas)
        (void)cublasDestroy(be->cublas);
    if (be->private_stream) {
        (void)cudaStreamSynchronize(be->private_stream);
        (void)cudaStreamDestroy(be->private_stream);
    }
    (void)cudaGetLastError();
    convoy__cuda_leave(&scope);
    pthread_mutex_destroy(&be->timing_lock);
    pthread_mutex_destroy(&be->lock);
    free(be);
}

static const char *cuda_describe(convoy__backend *base)
{
    return convoy__cuda_of(base)->description;
}

/* ---- streams ----------------------------------------------------------------------------- */

static convoy_status stream_create_here(convoy__cuda_backend *be, const char *name,
                                        convoy__stream **out)
{
    convoy__cuda_stream *s = calloc(1, sizeof *s);
    if (!s)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "cuda: out of host memory for a stream");
    convoy_status status =
        CONVOY__CUDA_CHECK(cudaStreamCreateWithFlags(&s->native, cudaStreamNonBlocking));
    if (status != CONVOY_OK) {
        free(s);
        return status;
    }
#ifdef CONVOY_HAVE_NVTX
    if (name)
        nvtxNameCudaStreamA(s->native, name);
#else
    (void)name;
#endif
    pthread_mutex_lock(&be->lock);
    s->next = be->streams;
    be->streams = s;
    pthread_mutex_unlock(&be->lock);
    *out = (convoy__stream *)s;
    return CONVOY_OK;
}

static convoy_status cuda_stream_create(convoy__backend *base, const char *name,
                                        convoy__stream **out)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = stream_create_here(be, name, out);
    convoy__cuda_leave(&scope);
    return status;
}

static void cuda_stream_destroy(convoy__backend *base, convoy__stream *stream)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__cuda_stream *s = (convoy__cuda_stream *)stream;
    if (!s)
        return;
    pthread_mutex_lock(&be->lock);
    convoy__cuda_stream **link = &be->streams;
    while (*link && *link != s)
        link = &(*link)->next;
    if (*link)
        *link = s->next;
    pthread_mutex_unlock(&be->lock);
    convoy__device_scope scope;
    (void)convoy__cuda_enter(be, &scope);
    /* The interface promises the stream's queued work is done when this returns; only then
     * may its cuBLAS workspace go back to the pool. */
    (void)cudaStreamSynchronize(s->native);
    (void)cudaStreamDestroy(s->native);
    (void)cudaGetLastError();
    convoy__scratch_free(&be->base, &s->blas_workspace);
    convoy__cuda_leave(&scope);
    free(s);
}

/* CUDA work functions only enqueue, so they run now, on this thread, with the stream's
 * handle. The NULL stream means "inline": the work goes to the private stream, which is
 * waited for, so it has finished when this returns as it would have on the host. */
static convoy_status cuda_stream_enqueue(convoy__backend *base, convoy__stream *stream,
                                         convoy__work_fn fn, void *arg)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK) {
        if (stream) {
            fn(arg, ((convoy__cuda_stream *)stream)->native);
        } else {
            fn(arg, be->private_stream);
            status = CONVOY__CUDA_CHECK(cudaStreamSynchronize(be->private_stream));
        }
    }
    convoy__cuda_leave(&scope);
    return status;
}

/* The stream work with a NULL native stream goes to, and whether it must be waited for. */
static cudaStream_t native_or_private(convoy__cuda_backend *be, void *native_stream)
{
    return native_stream ? (cudaStream_t)native_stream : be->private_stream;
}

static convoy_status finish_if_private(convoy__cuda_backend *be, void *native_stream)
{
    return native_stream ? CONVOY_OK
                         : CONVOY__CUDA_CHECK(cudaStreamSynchronize(be->private_stream));
}

/* ---- events ------------------------------------------------------------------------------- */

/* Blocking sync: a thread in convoy_task_wait (cudaEventSynchronize) sleeps until the event
 * fires instead of spinning a core. Queries, the scheduler's and the pool's only use
 * otherwise, do not change. */
static convoy_status cuda_event_create(convoy__backend *base, convoy__event **out)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    cuda_event *e = malloc(sizeof *e);
    if (!e)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "cuda: out of host memory for an event");
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(
            cudaEventCreateWithFlags(&e->native, cudaEventBlockingSync | cudaEventDisableTiming));
    convoy__cuda_leave(&scope);
    if (status != CONVOY_OK) {
        free(e);
        return status;
    }
    atomic_init(&e->armed, 0);
    *out = (convoy__event *)e;
    return CONVOY_OK;
}

static void cuda_event_destroy(convoy__backend *base, convoy__event *event)
{
    (void)base;
    cuda_event *e = (cuda_event *)event;
    if (!e)
        return;
    /* cudaEventDestroy may be called while the event is pending; CUDA releases it later. */
    (void)cudaEventDestroy(e->native);
    free(e);
}

static convoy_status cuda_event_record(convoy__backend *base, convoy__event *event,
                                       convoy__stream *stream)
{
    (void)base;
    cuda_event *e = (cuda_event *)event;
    if (!stream) {
        atomic_store_explicit(&e->armed, 0, memory_order_release);
        return CONVOY_OK;
    }
    CONVOY__CUDA_TRY(cudaEventRecord(e->native, ((convoy__cuda_stream *)stream)->native));
    atomic_store_explicit(&e->armed, 1, memory_order_release);
    return CONVOY_OK;
}

static convoy_status cuda_stream_wait_event(convoy__backend *base, convoy__stream *stream,
                                            convoy__event *event)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    cuda_event *e = (cuda_event *)event;
    if (!atomic_load_explicit(&e->armed, memory_order_acquire))
        return CONVOY_OK;
    cudaStream_t s = stream ? ((convoy__cuda_stream *)stream)->native : be->private_stream;
    CONVOY__CUDA_TRY(cudaStreamWaitEvent(s, e->native, 0));
    return CONVOY_OK;
}

static int cuda_event_query(convoy__backend *base, convoy__event *event, convoy_status *error)
{
    (void)base;
    cuda_event *e = (cuda_event *)event;
    if (error)
        *error = CONVOY_OK;
    if (!atomic_load_explicit(&e->armed, memory_order_acquire))
        return 1;
    cudaError_t result = cudaEventQuery(e->native);
    if (result == cudaSuccess)
        return 1;
    if (result == cudaErrorNotReady) {
        /* Not an error, but CUDA keeps it as the thread's last error; a later launch check
         * on this thread would otherwise report it. */
        (void)cudaGetLastError();
        return 0;
    }
    /* A failure of earlier asynchronous work: report it as complete, with the error, so no
     * one waits forever on an event a faulted context will never fire. */
    convoy_status status =
        convoy__cuda_fail((int)result, "cudaEventQuery(event)", __FILE__, __LINE__);
    if (error)
        *error = status;
    return 1;
}

static convoy_status cuda_event_synchronize(convoy__backend *base, convoy__event *event)
{
    (void)base;
    cuda_event *e = (cuda_event *)event;
    if (!atomic_load_explicit(&e->armed, memory_order_acquire))
        return CONVOY_OK;
    CONVOY__CUDA_TRY(cudaEventSynchronize(e->native));
    return CONVOY_OK;
}

/* ---- task timers (the operations) ------------------------------------------------------ */

/* Records an event on the timing stream and waits for it (microseconds: nothing else runs
 * there), then makes it the current anchor. Called with timing_lock held. */
static convoy_status new_anchor_here(convoy__cuda_backend *be)
{
    if (!be->timing_stream)
        CONVOY__CUDA_TRY(cudaStreamCreateWithFlags(&be->timing_stream, cudaStreamNonBlocking));
    convoy__cuda_anchor *anchor = malloc(sizeof *anchor);
    if (!anchor)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "cuda: out of host memory for a timer");
    convoy_status status =
        CONVOY__CUDA_CHECK(cudaEventCreateWithFlags(&anchor->event, cudaEventDefault));
    if (status != CONVOY_OK) {
        free(anchor);
        return status;
    }
    double before = convoy__now_us();
    status = CONVOY__CUDA_CHECK(cudaEventRecord(anchor->event, be->timing_stream));
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(cudaEventSynchronize(anchor->event));
    double after = convoy__now_us();
    if (status != CONVOY_OK) {
        (void)cudaEventDestroy(anchor->event);
        free(anchor);
        return status;
    }
    anchor->host_us = convoy__cuda_anchor_host_us(before, after);
    atomic_init(&anchor->refs, 1);
    anchor_release(be->anchor);
    be->anchor = anchor;
    return CONVOY_OK;
}

/* The anchor a start record is placed by, with a reference for the timer; a new one when
 * the current one is due (cuda/event_clock.h). If a new one cannot be had, the old one still
 * serves; NULL only when there is none at all. */
static convoy__cuda_anchor *take_anchor(convoy__cuda_backend *be)
{
    pthread_mutex_lock(&be->timing_lock);
    if (convoy__cuda_anchor_due(be->anchor != NULL, be->anchor ? be->anchor->host_us : 0.0,
                                convoy__now_us())) {
        convoy__device_scope scope;
        if (convoy__cuda_enter(be, &scope) != CONVOY_OK || new_anchor_here(be) != CONVOY_OK)
            (void)cudaGetLastError();
        convoy__cuda_leave(&scope);
    }
    convoy__cuda_anchor *anchor = be->anchor;
    if (anchor)
        atomic_fetch_add_explicit(&anchor->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&be->timing_lock);
    return anchor;
}

static convoy_status cuda_timer_create(convoy__backend *base, convoy__timer **out)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__timer *timer = calloc(1, sizeof *timer);
    if (!timer)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "cuda: out of host memory for a timer");
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    int created = 0;
    for (; created < 2 && status == CONVOY_OK; ++created)
        status =
            CONVOY__CUDA_CHECK(cudaEventCreateWithFlags(&timer->events[created], cudaEventDefault));
    if (status != CONVOY_OK) {
        /* The last attempt created nothing. */
        for (int i = 0; i + 1 < created; ++i)
            (void)cudaEventDestroy(timer->events[i]);
        (void)cudaGetLastError();
        convoy__cuda_leave(&scope);
        free(timer);
        return status;
    }
    convoy__cuda_leave(&scope);
    *out = timer;
    return CONVOY_OK;
}

static void cuda_timer_destroy(convoy__backend *base, convoy__timer *timer)
{
    (void)base;
    if (!timer)
        return;
    /* Like completion events, these may be destroyed while pending. */
    (void)cudaEventDestroy(timer->events[0]);
    (void)cudaEventDestroy(timer->events[1]);
    anchor_release(timer->anchor);
    free(timer);
}

/* Called inside a work function, on the stream its task runs on. Failures leave no error
 * behind: a later launch check on this thread must not report them. */
static convoy_status cuda_timer_record(convoy__backend *base, convoy__timer *timer, int end,
                                       void *native_stream)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!end) {
        convoy__cuda_anchor *anchor = take_anchor(be);
        if (!anchor)
            return CONVOY_ERR_BACKEND;
        anchor_release(timer->anchor);
        timer->anchor = anchor;
    }
    if (cudaEventRecord(timer->events[end != 0], native_or_private(be, native_stream)) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        return CONVOY_ERR_BACKEND;
    }
    timer->recorded |= end ? 2 : 1;
    return CONVOY_OK;
}

/* Called once the task's completion event fired, which follows both records on its stream.
 * A query that fails (an event not reached, a faulted context) leaves no error behind. */
static convoy_status cuda_timer_elapsed(convoy__backend *base, convoy__timer *timer,
                                        double *start_us, double *end_us)
{
    (void)base;
    float to_start = 0.0f, span = 0.0f;
    if (timer->recorded != 3 || !timer->anchor)
        return CONVOY_ERR_BACKEND;
    if (cudaEventElapsedTime(&to_start, timer->anchor->event, timer->events[0]) != cudaSuccess ||
        cudaEventElapsedTime(&span, timer->events[0], timer->events[1]) != cudaSuccess) {
        (void)cudaGetLastError();
        return CONVOY_ERR_BACKEND;
    }
    convoy__cuda_event_interval(timer->anchor->host_us, to_start, span, start_us, end_us);
    return CONVOY_OK;
}

/* ---- memory ------------------------------------------------------------------------------- */

static convoy_status cuda_mem_alloc(convoy__backend *base, size_t bytes, void **out)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__device_scope scope;
    void *p = NULL;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    convoy__cuda_leave(&scope);
    if (status != CONVOY_OK) {
        char what[96];
        snprintf(what, sizeof what, "device allocation of %zu bytes", bytes);
        convoy__error_prefix(what);
        return status;
    }
    *out = p;
    return CONVOY_OK;
}

static void cuda_mem_free(convoy__backend *base, void *ptr)
{
    if (!ptr)
        return;
    convoy__device_scope scope;
    (void)convoy__cuda_enter(convoy__cuda_of(base), &scope);
    (void)cudaFree(ptr);
    (void)cudaGetLastError();
    convoy__cuda_leave(&scope);
}

/* Portable, so the staging memory stays page-locked for every context in the process. */
static convoy_status cuda_host_alloc(convoy__backend *base, size_t bytes, void **out)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__device_scope scope;
    void *p = NULL;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable));
    convoy__cuda_leave(&scope);
    if (status != CONVOY_OK) {
        char what[96];
        snprintf(what, sizeof what, "page-locked host allocation of %zu bytes", bytes);
        convoy__error_prefix(what);
        return status;
    }
    *out = p;
    return CONVOY_OK;
}

static void cuda_host_free(convoy__backend *base, void *ptr)
{
    (void)base;
    if (!ptr)
        return;
    (void)cudaFreeHost(ptr);
    (void)cudaGetLastError();
}

static convoy_status cuda_copy(convoy__backend *base, void *native_stream, void *dst,
                               const void *src, size_t bytes, convoy__copy_kind kind)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    enum cudaMemcpyKind native_kind;
    switch (kind) {
    case CONVOY__COPY_HOST_TO_DEVICE:
        native_kind = cudaMemcpyHostToDevice;
        break;
    case CONVOY__COPY_DEVICE_TO_HOST:
        native_kind = cudaMemcpyDeviceToHost;
        break;
    case CONVOY__COPY_DEVICE_TO_DEVICE:
        native_kind = cudaMemcpyDeviceToDevice;
        break;
    default:
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda copy: kind %d", (int)kind);
    }
    if (bytes == 0)
        return CONVOY_OK;
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(
            cudaMemcpyAsync(dst, src, bytes, native_kind, native_or_private(be, native_stream)));
    if (status == CONVOY_OK)
        status = finish_if_private(be, native_stream);
    convoy__cuda_leave(&scope);
    return status;
}

static convoy_status cuda_host_callback(convoy__backend *base, void *native_stream,
                                        void (*fn)(void *), void *arg)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status =
            CONVOY__CUDA_CHECK(cudaLaunchHostFunc(native_or_private(be, native_stream), fn, arg));
    if (status == CONVOY_OK)
        status = finish_if_private(be, native_stream);
    convoy__cuda_leave(&scope);
    return status;
}

static convoy_status cuda_zero(convoy__backend *base, void *native_stream, void *dst, size_t bytes)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (bytes == 0)
        return CONVOY_OK;
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = CONVOY__CUDA_CHECK(
            cudaMemsetAsync(dst, 0, bytes, native_or_private(be, native_stream)));
    if (status == CONVOY_OK)
        status = finish_if_private(be, native_stream);
    convoy__cuda_leave(&scope);
    return status;
}

/* 0 ("unknown") when the query fails; the failure is cleared, not reported. */
static size_t cuda_memory_capacity(convoy__backend *base)
{
    size_t free_bytes = 0, total = 0;
    convoy__device_scope scope;
    if (convoy__cuda_enter(convoy__cuda_of(base), &scope) != CONVOY_OK ||
        cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
        (void)cudaGetLastError();
        total = 0;
    }
    convoy__cuda_leave(&scope);
    return total;
}

/* One end of a host buffer: page-locked (cudaHostAlloc, cudaMallocHost, cudaHostRegister) as
 * CUDA sees it. A pageable pointer is cudaMemoryTypeUnregistered with success on current
 * CUDA; any failure (an older runtime's cudaErrorInvalidValue for unregistered memory
 * included) only means "stage it", so it is cleared rather than reported: a sticky
 * last error here would fail the next kernel launch check. The query needs no current device
 * (unified addressing). */
static int pinned_byte(const void *p)
{
    struct cudaPointerAttributes attributes;
    memset(&attributes, 0, sizeof attributes);
    if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return attributes.type == cudaMemoryTypeHost;
}

/* Both ends are checked: a buffer is one allocation, so a pinned first and last byte mean the
 * whole of it was allocated or registered page-locked. */
static int cuda_host_is_pinned(convoy__backend *base, const void *ptr, size_t bytes)
{
    (void)base;
    if (!ptr || bytes == 0)
        return 0;
    return pinned_byte(ptr) && pinned_byte((const char *)ptr + bytes - 1);
}

static const convoy__backend_ops cuda_ops = {
    .name = "cuda",
    .device = CONVOY_DEVICE_CUDA,
    .enqueue_runs_now = 1,
    .destroy = cuda_destroy,
    .describe = cuda_describe,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_enqueue = cuda_stream_enqueue,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .stream_wait_event = cuda_stream_wait_event,
    .event_query = cuda_event_query,
    .event_synchronize = cuda_event_synchronize,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .copy = cuda_copy,
    .host_callback = cuda_host_callback,
    .zero = cuda_zero,
    .memory_capacity = cuda_memory_capacity,
    .host_is_pinned = cuda_host_is_pinned,
    .timer_create = cuda_timer_create,
    .timer_destroy = cuda_timer_destroy,
    .timer_record = cuda_timer_record,
    .timer_elapsed = cuda_timer_elapsed,
};

/* ---- creation ------------------------------------------------------------------------------ */

static void set_why(char *why, size_t why_size, const char *text)
{
    if (why && why_size)
        snprintf(why, why_size, "%s", text);
}

/* Checks that CUDA and the device are usable; on failure the CUDA error text becomes why. */
static convoy_status open_device(int index, struct cudaDeviceProp *prop, char *why, size_t why_size)
{
    char text[256];
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count == 0)
        e = cudaErrorNoDevice;
    if (e == cudaSuccess && (index < 0 || index >= count)) {
        snprintf(text, sizeof text, "device index %d is out of range: %d CUDA device%s", index,
                 count, count == 1 ? "" : "s");
        set_why(why, why_size, text);
        return convoy__error(CONVOY_ERR_NO_DEVICE, "cuda: %s", text);
    }
    /* cudaSetDevice initialises the device's primary context, so an unusable device
     * (exclusive-process mode taken, no memory, driver mismatch) shows up here. */
    if (e == cudaSuccess)
        e = cudaSetDevice(index);
    if (e == cudaSuccess)
        e = cudaGetDeviceProperties(prop, index);
    if (e != cudaSuccess) {
        snprintf(text, sizeof text, "%s", cudaGetErrorString(e));
        set_why(why, why_size, text);
        (void)cudaGetLastError();
        return convoy__error(CONVOY_ERR_NO_DEVICE, "cuda: device %d is not usable: %s (%s %d)",
                             index, text, cudaGetErrorName(e), (int)e);
    }
    return CONVOY_OK;
}

static void describe(convoy__cuda_backend *be, const struct cudaDeviceProp *prop)
{
    int driver = 0, runtime = 0, blas = 0;
    (void)cudaDriverGetVersion(&driver);
    (void)cudaRuntimeGetVersion(&runtime);
    (void)cublasGetVersion(be->cublas, &blas);
    char dnn[96];
    convoy__cudnn_describe(be, dnn, sizeof dnn);
    /* CUDA encodes versions as major * 1000 + minor * 10, cuBLAS as major * 10000 + minor *
     * 100 + patch. */
    snprintf(be->description, sizeof be->description,
             "cuda: %.200s (sm_%d%d, %zu MiB), driver %d.%d, runtime %d.%d, %s, cuBLAS %d.%d.%d",
             prop->name, prop->major, prop->minor, (size_t)(prop->totalGlobalMem >> 20),
             driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, dnn,
             blas / 10000, blas % 10000 / 100, blas % 100);
}

/* Undoes a partly built backend; tearing down must not replace the message that says what
 * failed, which also becomes why. */
static convoy_status abandon(convoy__cuda_backend *be, convoy_status status, char *why,
                             size_t why_size)
{
    char saved[512];
    snprintf(saved, sizeof saved, "%s", convoy__error_text());
    set_why(why, why_size, saved);
    cuda_destroy(&be->base);
    convoy__error_set_text(saved);
    return status;
}

static convoy_status create_here(const convoy__cuda_config *config, convoy__backend **out,
                                 char *why, size_t why_size)
{
    if (!config || !out) {
        set_why(why, why_size, "NULL config or out");
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda backend: NULL config or out");
    }
    struct cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    convoy_status status = open_device(config->device_index, &prop, why, why_size);
    if (status != CONVOY_OK)
        return status;
    convoy__cuda_backend *be = calloc(1, sizeof *be);
    if (!be) {
        set_why(why, why_size, "out of host memory");
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "cuda backend: out of host memory");
    }
    be->base.ops = &cuda_ops;
    be->base.conv = &convoy__cuda_conv_registry;
    be->base.train = &convoy__cuda_train_ops;
    be->device = config->device_index;
    be->deterministic = config->deterministic != 0;
    /* cuBLAS's documented workspace recommendation: 32 MiB on Hopper and later, 4 MiB before. */
    be->blas_workspace_bytes = (size_t)(prop.major >= 9 ? 32 : 4) << 20;
    if (pthread_mutex_init(&be->lock, NULL) != 0) {
        free(be);
        set_why(why, why_size, "cannot create a mutex");
        return convoy__error(CONVOY_ERR_INTERNAL, "cuda backend: pthread_mutex_init failed");
    }
    if (pthread_mutex_init(&be->timing_lock, NULL) != 0) {
        pthread_mutex_destroy(&be->lock);
        free(be);
        set_why(why, why_size, "cannot create a mutex");
        return convoy__error(CONVOY_ERR_INTERNAL, "cuda backend: pthread_mutex_init failed");
    }
    if ((status = CONVOY__CUDA_CHECK(
             cudaStreamCreateWithFlags(&be->private_stream, cudaStreamNonBlocking))) != CONVOY_OK ||
        (status = CONVOY__CUBLAS_CHECK(cublasCreate(&be->cublas))) != CONVOY_OK ||
        (status = CONVOY__CUBLAS_CHECK(cublasSetMathMode(be->cublas, CUBLAS_DEFAULT_MATH))) !=
            CONVOY_OK)
        return abandon(be, status, why, why_size);
#ifdef CONVOY_HAVE_CUDNN
    /* cuDNN is optional: when it cannot start, the GEMM and direct paths still run, and
     * describe() says it is not in use (CONVOY_REQUIRE=cudnn turns that into an error). */
    if (config->use_cudnn && cudnnCreate(&be->cudnn) == CUDNN_STATUS_SUCCESS)
        be->has_cudnn = 1;
    else
        be->cudnn = NULL;
#endif
    (void)cudaGetLastError();
    describe(be, &prop);
    *out = &be->base;
    return CONVOY_OK;
}

/* Creation makes the device current to initialise it (open_device); the creating thread gets
 * its own device back, as from every other entry point. A thread on which CUDA cannot even
 * report a device (no driver) has nothing to restore. */
convoy_status convoy__cuda_backend_create(const convoy__cuda_config *config, convoy__backend **out,
                                          char *why, size_t why_size)
{
    set_why(why, why_size, "");
    int caller = -1;
    if (cudaGetDevice(&caller) != cudaSuccess) {
        (void)cudaGetLastError();
        caller = -1;
    }
    convoy_status status = create_here(config, out, why, why_size);
    convoy__device_scope scope = {caller, caller >= 0};
    convoy__device_scope_leave(&convoy__cuda_device_calls, &scope);
    return status;
}

int convoy__cuda_backend_has_cudnn(convoy__backend *backend)
{
    return backend && backend->ops == &cuda_ops && convoy__cuda_of(backend)->has_cudnn;
}
