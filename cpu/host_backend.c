/* The host backend: the backend interface (core/device.h) on the CPU.
 * Streams are worker threads (cpu/host_stream.c), memory is aligned host
 * memory, convolutions run the direct, GEMM (im2col + OpenBLAS), 1x1,
 * depthwise, oneDNN and Winograd (oneDNN) code of cpu/conv_*.c, and the training ops
 * cpu/train_cpu.c. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/conv_cpu.h"
#include "cpu/host_backend.h"
#include "cpu/host_stream.h"
#include "cpu/train_cpu.h"
#include "core/error_detail.h"
#include "core/platform.h"

typedef struct host_backend {
    convoy__backend base;
    convoy__host_sync *sync;
    int threads; /* per task, for OpenBLAS and oneDNN */
    char description[512];
} host_backend;

static host_backend *as_host(convoy__backend *be)
{
    return (host_backend *)be;
}

static void host_destroy(convoy__backend *be)
{
    host_backend *h = as_host(be);
    convoy__host_sync_destroy(h->sync);
    free(h);
}

static const char *host_describe(convoy__backend *be)
{
    return as_host(be)->description;
}

static convoy_status host_stream_create(convoy__backend *be, const char *name, convoy__stream **out)
{
    return convoy__host_stream_create(as_host(be)->sync, name, out);
}

static void host_stream_destroy(convoy__backend *be, convoy__stream *stream)
{
    convoy__host_stream_destroy(stream);
}

static convoy_status host_stream_enqueue(convoy__backend *be, convoy__stream *stream,
                                         convoy__work_fn fn, void *arg)
{
    return convoy__host_stream_enqueue(stream, fn, arg);
}

static convoy_status host_stream_reserve(convoy__backend *be, convoy__stream *stream,
                                         size_t entries)
{
    return convoy__host_stream_reserve(stream, entries);
}

static convoy_status host_event_create(convoy__backend *be, convoy__event **out)
{
    return convoy__host_event_create(as_host(be)->sync, out);
}

static void host_event_destroy(convoy__backend *be, convoy__event *event)
{
    convoy__host_event_destroy(event);
}

static convoy_status host_event_record(convoy__backend *be, convoy__event *event,
                                       convoy__stream *stream)
{
    return convoy__host_event_record(event, stream);
}

static convoy_status host_stream_wait_event(convoy__backend *be, convoy__stream *stream,
                                            convoy__event *event)
{
    return convoy__host_stream_wait_event(stream, event);
}

static int host_event_query(convoy__backend *be, convoy__event *event, convoy_status *error)
{
    if (error)
        *error = CONVOY_OK;
    return convoy__host_event_query(event);
}

static convoy_status host_event_synchronize(convoy__backend *be, convoy__event *event)
{
    convoy__host_event_synchronize(event);
    return CONVOY_OK;
}

/* Host "device" memory is 256-byte aligned, as cudaMalloc's is, so the pool
 * carves blocks the same way on both backends. */
static convoy_status host_mem_alloc(convoy__backend *be, size_t bytes, void **out)
{
    size_t rounded = (bytes + 255) & ~(size_t)255;
    if (rounded < bytes)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host allocation of %zu bytes overflows",
                             bytes);
    void *p = aligned_alloc(256, rounded ? rounded : 256);
    if (!p)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host allocation of %zu bytes failed",
                             bytes);
    *out = p;
    return CONVOY_OK;
}

static void host_mem_free(convoy__backend *be, void *ptr)
{
    free(ptr);
}

static convoy_status host_copy(convoy__backend *be, void *native_stream, void *dst, const void *src,
                               size_t bytes, convoy__copy_kind kind)
{
    if (bytes)
        memcpy(dst, src, bytes);
    return CONVOY_OK;
}

/* Host work already runs in stream order, so the callback runs now. */
static convoy_status host_callback(convoy__backend *be, void *native_stream, void (*fn)(void *),
                                   void *arg)
{
    fn(arg);
    return CONVOY_OK;
}

static convoy_status host_zero(convoy__backend *be, void *native_stream, void *dst, size_t bytes)
{
    if (bytes)
        memset(dst, 0, bytes);
    return CONVOY_OK;
}

static size_t host_memory_capacity(convoy__backend *be)
{
    return 0;
}

/* Host "device" memory is host memory: staging is never skipped, so the CPU runs (and tests)
 * the same staged transfer path as a pageable buffer on CUDA. */
static int host_is_pinned(convoy__backend *be, const void *ptr, size_t bytes)
{
    return 0;
}

/* ---- task timers ----------------------------------------------------------- */

/* Host work runs in stream order on the stream's thread, so the moment a
 * record is made is the moment the stream reached it: a timer is two clock
 * readings. Written by the worker, read once the task's completion event
 * fired (which orders the two). */
struct convoy__timer {
    double at[2];
    int recorded; /* bit 0: start, bit 1: end */
};

static convoy_status host_timer_create(convoy__backend *be, convoy__timer **out)
{
    convoy__timer *timer = calloc(1, sizeof *timer);
    if (!timer)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host backend: out of host memory");
    *out = timer;
    return CONVOY_OK;
}

static void host_timer_destroy(convoy__backend *be, convoy__timer *timer)
{
    free(timer);
}

static convoy_status host_timer_record(convoy__backend *be, convoy__timer *timer, int end,
                                       void *native_stream)
{
    timer->at[end != 0] = convoy__now_us();
    timer->recorded |= end ? 2 : 1;
    return CONVOY_OK;
}

static convoy_status host_timer_elapsed(convoy__backend *be, convoy__timer *timer, double *start_us,
                                        double *end_us)
{
    if (timer->recorded != 3)
        return CONVOY_ERR_BACKEND;
    *start_us = timer->at[0];
    *end_us = timer->at[1];
    return CONVOY_OK;
}

/* ---- convolution algorithms ------------------------------------------------ */

/* Adding a CPU algorithm: its descriptor in a file of cpu/, and a row here. */
static const convoy__conv_algo *const host_algos[] = {
    &convoy__cpu_algo_1x1,    &convoy__cpu_algo_depthwise, &convoy__cpu_algo_winograd,
    &convoy__cpu_algo_onednn, &convoy__cpu_algo_gemm,      &convoy__cpu_algo_direct,
};

/* Host work already runs on the stream's worker thread (or inline), so a
 * plan just runs. */
static convoy_status host_conv_run(convoy__backend *be, void *native_stream,
                                   const convoy__conv_plan *plan,
                                   const convoy__conv_buffers *buffers, void *workspace)
{
    return plan->candidate.algo->run(be, native_stream, plan, buffers, workspace);
}

/* The algorithms that fuse an epilogue do it themselves; the others decline, and the runtime
 * runs the plan and then the epilogue pass. */
static convoy_status host_conv_run_fused(convoy__backend *be, void *native_stream,
                                         const convoy__conv_plan *plan,
                                         const convoy__conv_buffers *buffers, void *workspace,
                                         const convoy__conv_epilogue *epilogue)
{
    if (!plan->candidate.algo->run_fused)
        return CONVOY_ERR_UNSUPPORTED;
    return plan->candidate.algo->run_fused(be, native_stream, plan, buffers, workspace, epilogue);
}

/* A scratch buffer of count floats (at least one) from the backend's scratch allocator, the
 * runtime's pool: non-zero, deterministic data, since denormals or zeros could time
 * differently. what names it in an out-of-memory message. */
static convoy_status timing_buffer(convoy__backend *be, int64_t count, const char *what,
                                   const char *name, convoy__scratch *out)
{
    if (count < 0 || (uint64_t)count > SIZE_MAX / sizeof(float))
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s of %s: %lld floats cannot be addressed",
                             what, name, (long long)count);
    size_t n = (size_t)count;
    char label[96];
    snprintf(label, sizeof label, "%s of %s", what, name);
    convoy_status status = convoy__scratch_alloc(be, (n ? n : 1) * sizeof(float), label, out);
    if (status != CONVOY_OK)
        return status;
    float *p = out->ptr;
    for (size_t i = 0; i < n; ++i)
        p[i] = (float)((i * 7919u) % 1000u) * 1e-3f - 0.5f;
    return CONVOY_OK;
}

static convoy_status timing_workspace(convoy__backend *be, size_t bytes, const char *name,
                                      convoy__scratch *out)
{
    char label[96];
    snprintf(label, sizeof label, "timing workspace of %s", name);
    return convoy__scratch_alloc(be, bytes, label, out);
}

/* A timing: one run to warm caches, then the fastest of at least TIMED_RUNS_MIN
 * runs, more (up to TIMED_RUNS_MAX) while they add up to less than
 * TIMED_MS_ENOUGH. On the shared 2-vCPU machine of bench/RESULTS.md the best of
 * two let a burst of other work pick onednn:plain over onednn:blocked (three
 * times slower) for a 1.4 ms grouped layer: both of its timed runs took 32 ms. */
#define TIMED_RUNS_MIN 3
#define TIMED_RUNS_MAX 10
#define TIMED_MS_ENOUGH 50.0

/* Times the plan on scratch buffers of its own (see TIMED_RUNS_MIN), which
 * filters out a preemption on a busy machine. The
 * buffers (a copy of every operand, and the workspace) come from the pool
 * under the memory limit; when they do not fit the timing fails with
 * CONVOY_ERR_OUT_OF_MEMORY, and the planner leaves the candidate untimed. */
static convoy_status host_conv_time(convoy__backend *be, const convoy__conv_plan *plan, double *ms)
{
    const convoy__conv_geom *g = &plan->geom;
    const char *name = plan->candidate.name;
    convoy__scratch input = {0}, filters = {0}, output = {0}, workspace = {0};
    double best = 0.0;
    convoy_status status;
    if ((status = timing_buffer(be, convoy__geom_input_numel(g), "timing input", name, &input)) !=
            CONVOY_OK ||
        (status = timing_buffer(be, convoy__geom_filter_numel(g), "timing filters", name,
                                &filters)) != CONVOY_OK ||
        (status = timing_buffer(be, convoy__geom_output_numel(g), "timing output", name,
                                &output)) != CONVOY_OK)
        goto done;
    if (plan->workspace_bytes &&
        (status = timing_workspace(be, plan->workspace_bytes, name, &workspace)) != CONVOY_OK)
        goto done;
    double spent = 0.0;
    for (int run = 0; run <= TIMED_RUNS_MAX && status == CONVOY_OK; ++run) {
        if (run > TIMED_RUNS_MIN && spent >= TIMED_MS_ENOUGH)
            break;
        /* No content: the timing buffers change between candidates. */
        convoy__conv_buffers b = {input.ptr, filters.ptr, output.ptr, 0};
        double start = convoy__now_us();
        status = host_conv_run(be, NULL, plan, &b, workspace.ptr);
        double elapsed = (convoy__now_us() - start) * 1e-3;
        if (run == 0)
            continue;
        spent += elapsed;
        if (run == 1 || elapsed < best)
            best = elapsed;
    }
    if (status == CONVOY_OK)
        *ms = best;
done:
    convoy__scratch_free(be, &workspace);
    convoy__scratch_free(be, &output);
    convoy__scratch_free(be, &filters);
    convoy__scratch_free(be, &input);
    return status;
}

static const convoy__backend_ops host_ops = {
    .name = "cpu",
    .device = CONVOY_DEVICE_CPU,
    .enqueue_runs_now = 0,
    .destroy = host_destroy,
    .describe = host_describe,
    .stream_create = host_stream_create,
    .stream_destroy = host_stream_destroy,
    .stream_enqueue = host_stream_enqueue,
    .stream_reserve = host_stream_reserve,
    .event_create = host_event_create,
    .event_destroy = host_event_destroy,
    .event_record = host_event_record,
    .stream_wait_event = host_stream_wait_event,
    .event_query = host_event_query,
    .event_synchronize = host_event_synchronize,
    .mem_alloc = host_mem_alloc,
    .mem_free = host_mem_free,
    .host_alloc = host_mem_alloc,
    .host_free = host_mem_free,
    .copy = host_copy,
    .host_callback = host_callback,
    .zero = host_zero,
    .memory_capacity = host_memory_capacity,
    .host_is_pinned = host_is_pinned,
    .timer_create = host_timer_create,
    .timer_destroy = host_timer_destroy,
    .timer_record = host_timer_record,
    .timer_elapsed = host_timer_elapsed,
};

const convoy__conv_registry convoy__host_conv_registry = {
    .algos = host_algos,
    .count = (int)(sizeof host_algos / sizeof host_algos[0]),
    .run = host_conv_run,
    .time = host_conv_time,
    .run_fused = host_conv_run_fused,
};

convoy_status convoy__host_backend_create(const convoy__host_config *config, convoy__backend **out)
{
    host_backend *h = calloc(1, sizeof *h);
    if (!h)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host backend: out of host memory");
    convoy_status status = convoy__host_sync_create(&h->sync);
    if (status != CONVOY_OK) {
        free(h);
        return status;
    }
    h->base.ops = &host_ops;
    h->base.conv = &convoy__host_conv_registry;
    h->base.train = &convoy__cpu_train_ops;
    /* OpenBLAS's thread count is process-wide; the runtime divides the cores
     * between its streams so concurrent GEMMs do not oversubscribe. */
    if (config->blas_threads > 0)
        openblas_set_num_threads(config->blas_threads);
    const char *blas = openblas_get_config();
    char version[64] = "OpenBLAS";
    /* openblas_get_config() starts with "OpenBLAS 0.3.21 ..."; keep two words. */
    if (blas) {
        const char *space = strchr(blas, ' ');
        const char *end = space ? strchr(space + 1, ' ') : NULL;
        size_t len = end ? (size_t)(end - blas) : strlen(blas);
        snprintf(version, sizeof version, "%.*s", (int)len, blas);
    }
    int threads = openblas_get_num_threads();
    h->threads = threads > 0 ? threads : 1;
    /* oneDNN's OpenMP threads are set per call to the same count (cpu/onednn.c): the two
     * pools take turns, one task computing with one library at a time. */
    char onednn[128];
    convoy__cpu_onednn_describe(onednn, sizeof onednn, h->threads);
    snprintf(h->description, sizeof h->description, "cpu: %s, %d BLAS thread%s per task, %s%s%s",
             version, h->threads, h->threads == 1 ? "" : "s", onednn, config->note ? " " : "",
             config->note ? config->note : "");
    *out = &h->base;
    return CONVOY_OK;
}

int convoy__host_backend_threads(convoy__backend *be)
{
    return as_host(be)->threads;
}

/* Below this much work a convolution runs on one thread: on the 2-vCPU machine of
 * bench/RESULTS.md one thread was as fast as two up to a few tens of microseconds of work
 * (small_3x3_c32, 14 M multiply-adds: 0.12 against 0.10-0.14 ms), while waking an OpenMP team
 * on a busy machine cost up to a millisecond per call. OpenBLAS keeps small GEMMs on one thread
 * too. Work counts the multiply-adds and, for the memory-bound reorders, FLOAT_MOVED_MACS per
 * float of the tensors read and written: the 8x256x28x28 depthwise layer does only 14 M
 * multiply-adds but reorders 6.4 M floats, and ran at 21 GFLOP/s on one thread where PyTorch,
 * on two, reached 32 (2026-12-01). */
#define ONE_THREAD_WORK ((int64_t)16 << 20)
#define FLOAT_MOVED_MACS 16

int convoy__host_conv_threads(convoy__backend *be, const convoy__conv_geom *g)
{
    const int64_t limit = ONE_THREAD_WORK;
    int64_t macs = convoy__geom_output_numel(g);
    const int64_t per_output = convoy__geom_col_rows(g);
    macs = per_output > 0 && macs > limit / per_output ? limit : macs * per_output;
    int64_t floats =
        convoy__geom_input_numel(g) + convoy__geom_output_numel(g) + convoy__geom_filter_numel(g);
    floats = floats > limit / FLOAT_MOVED_MACS ? limit : floats * FLOAT_MOVED_MACS;
    return macs + floats < limit ? 1 : convoy__host_backend_threads(be);
}
