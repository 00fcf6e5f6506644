/* The scheduler: turns submissions into stream work with implicit
 * dependencies (DESIGN.md section 3).
 *
 * Each tensor carries a convoy__hazards record: its last writer and the
 * readers since. A submit resolves read-after-write, write-after-read and
 * write-after-write hazards against those records, picks a stream, inserts
 * event waits for dependencies living on other streams, enqueues the task and
 * records its completion event, all under one lock and without waiting for
 * any work. Only read-after-write dependencies carry failure: a task whose
 * input was written by a failed task completes with
 * CONVOY_ERR_DEPENDENCY_FAILED without running, and so poisons what it
 * writes in turn until a successful write replaces it. A task that fails
 * while being queued still completes in its place in the order; a device
 * fault reported by an event fails the task whose event reported it and
 * every later submit (DESIGN.md section 3, failure). */
#ifndef CONVOY_SCHEDULER_SCHEDULER_H
#define CONVOY_SCHEDULER_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/device.h"

typedef struct convoy__scheduler convoy__scheduler;
typedef struct convoy__prof_domain convoy__prof_domain;
typedef struct convoy__trace convoy__trace;

/* Per-tensor hazard state; lives inside the tensor, guarded by the
 * scheduler's lock. Zero-initialised is the empty state.
 *
 * content names what the tensor holds: the sequence number of the last task
 * submitted that writes it (unique within the scheduler, so no other tensor
 * and no other write ever has it), 0 before the first. A task that reads the
 * tensor reads that content, since it runs after that writer and before the
 * next; a backend may keep something derived from an operand (oneDNN's
 * reordered filters) for as long as the operand's content stays the same. */
typedef struct convoy__hazards {
    convoy_task *last_writer;
    convoy_task **readers;
    int reader_count;
    int reader_capacity;
    uint64_t content;
} convoy__hazards;

typedef enum convoy__task_kind {
    CONVOY__TASK_UPLOAD,
    CONVOY__TASK_DOWNLOAD,
    CONVOY__TASK_CONV_FORWARD,
    CONVOY__TASK_CONV_BACKWARD_DATA,
    CONVOY__TASK_CONV_BACKWARD_FILTER,
    CONVOY__TASK_CUSTOM,
    CONVOY__TASK_RELEASE,
    CONVOY__TASK_CONV_FORWARD_BIAS_ACT,
    CONVOY__TASK_ACTIVATION_BACKWARD,
    CONVOY__TASK_BIAS_BACKWARD,
    CONVOY__TASK_SOFTMAX_CROSS_ENTROPY,
    CONVOY__TASK_SGD_STEP,
    CONVOY__TASK_ALLREDUCE,
    CONVOY__TASK_BROADCAST,
    CONVOY__TASK_KIND_COUNT
} convoy__task_kind;

/* Which stream class runs a task. COMM is the communication stream, which
 * exists once convoy__scheduler_open_comm_stream made it: collectives run
 * there one after another, in submission order, beside the compute. */
typedef enum convoy__queue {
    CONVOY__QUEUE_COMPUTE,
    CONVOY__QUEUE_UPLOAD,
    CONVOY__QUEUE_DOWNLOAD,
    CONVOY__QUEUE_COMM
} convoy__queue;

/* Access modes: CONVOY_READ / CONVOY_WRITE / CONVOY_READ_WRITE, plus RELEASE
 * for the internal task that frees a destroyed tensor: it orders like a
 * write, then leaves the hazard record empty. */
#define CONVOY__ACCESS_RELEASE 8

/* Compute streams plus the upload, download and communication streams. */
#define CONVOY__MAX_SLOTS 67

typedef struct convoy__hazard_access {
    convoy__hazards *hazards;
    int mode;
} convoy__hazard_access;

/* The body of a task. On the host it runs on the stream's worker (or inline)
 * when its dependencies are done; on CUDA it runs at submit and enqueues.
 * native_stream is the backend's stream handle. order_stream is the stream to
 * free stream-ordered memory on: the task's stream when the body runs at
 * enqueue (CUDA), NULL when it runs in stream order (host). */
typedef convoy_status (*convoy__task_run_fn)(void *payload, void *native_stream,
                                             convoy__stream *order_stream);

/* Called once the task's stream has been chosen and before the work is
 * enqueued, under the scheduler's lock: takes stream-ordered resources
 * (workspace). A failure is not a submit error: the task is enqueued and
 * fails with that status, poisoning what it writes. */
typedef convoy_status (*convoy__task_bind_fn)(void *payload, convoy__stream *stream);

/* Called right after the work was enqueued, under the lock: returns
 * stream-ordered resources (workspace) to the pool on that stream. */
typedef void (*convoy__task_unbind_fn)(void *payload, convoy__stream *stream);

/* Called in the body's place, in stream order, when the body does not run
 * because the task failed first (a dependency failed, or bind did); reason
 * is the task's failure message. A collective uses it to tell the other
 * processes that this one cannot take part, so they fail at once instead of
 * waiting for it. It cannot change the task's status. Not called when the
 * task completes off its stream (the paths where it could not be queued). */
typedef void (*convoy__task_skip_fn)(void *payload, void *native_stream, const char *reason);

typedef struct convoy__task_desc {
    convoy__task_kind kind;
    convoy__queue queue;
    const char *label; /* copied; shown in NVTX and traces */
    convoy__task_run_fn run;
    convoy__task_bind_fn bind;     /* may be NULL */
    convoy__task_unbind_fn unbind; /* may be NULL */
    const void *payload;           /* copied into the task */
    size_t payload_size;
    const convoy__hazard_access *accesses;
    size_t access_count;
    size_t bytes; /* bytes a transfer moves, shown in the trace; 0 otherwise */
} convoy__task_desc;

typedef struct convoy__scheduler_config {
    int compute_streams;         /* 0: run every task inline at submit */
    convoy__prof_domain *domain; /* NVTX domain, may be NULL */
    convoy__trace *trace;        /* task records for trace/summary, may be NULL */
} convoy__scheduler_config;

convoy_status convoy__scheduler_create(convoy__backend *backend,
                                       const convoy__scheduler_config *config,
                                       convoy__scheduler **out);

/* Waits for all work, then destroys the streams. Tasks the program still
 * holds handles to are detached: they stay valid for wait and release. */
void convoy__scheduler_destroy(convoy__scheduler *scheduler);

/* Submits one task. task_out may be NULL. Fails only for host memory
 * exhaustion (CONVOY_ERR_OUT_OF_MEMORY) or, once a device fault was seen,
 * with CONVOY_ERR_BACKEND naming it; nothing is enqueued then. A task that
 * cannot be queued whole (no workspace, a refused wait or enqueue) is not a
 * submit error: it completes failed, in its place in the order. */
convoy_status convoy__scheduler_submit(convoy__scheduler *scheduler, const convoy__task_desc *desc,
                                       convoy_task **task_out);

/* convoy__scheduler_submit for a task whose skip (may be NULL) runs in its body's place
 * when the body does not run. */
convoy_status convoy__scheduler_submit_skippable(convoy__scheduler *scheduler,
                                                 const convoy__task_desc *desc,
                                                 convoy__task_skip_fn skip, convoy_task **task_out);

/* Waits for every submitted task; returns the first failure since the last
 * call (with its message), or CONVOY_OK. */
convoy_status convoy__scheduler_synchronize(convoy__scheduler *scheduler);

/* When every task named in the hazard record has completed, drops the
 * references and returns 1: the tensor may be freed at once. Returns 0 when
 * some task may still use it. */
int convoy__scheduler_clear_if_idle(convoy__scheduler *scheduler, convoy__hazards *hazards);

/* Drops a hazard record's task references (tensor teardown at destroy). */
void convoy__hazards_clear(convoy__scheduler *scheduler, convoy__hazards *hazards);

/* Creates the communication stream ("convoy comm") unless it exists or the
 * scheduler runs every task inline (then collectives run inline too). Safe
 * from any thread; the first caller creates it. */
convoy_status convoy__scheduler_open_comm_stream(convoy__scheduler *scheduler);

/* 1 when the communication stream exists (always 0 inline). */
int convoy__scheduler_has_comm_stream(convoy__scheduler *scheduler);

/* When the task that last wrote the hazard record has already failed,
 * writes "'label' failed with STATUS: message" into why and returns 1;
 * returns 0 otherwise (no writer, still running, or succeeded). For work
 * that must decide at submit whether its input is good (CUDA collectives,
 * which agree with the other processes before they are enqueued). */
int convoy__scheduler_input_failed(convoy__scheduler *scheduler, convoy__hazards *hazards,
                                   char *why, size_t why_size);

/* Streams and their count, for the description line. */
int convoy__scheduler_stream_count(const convoy__scheduler *scheduler);

const char *convoy__task_kind_name(convoy__task_kind kind);

/* Writes a then b into dst, truncated to size. Labels are built on every
 * submit, where snprintf's format parsing would be a large share of the
 * cost of a small task. */
static inline void convoy__text_join(char *dst, size_t size, const char *a, const char *b)
{
    size_t used = 0;
    for (const char *parts[2] = {a, b}, **p = parts; p < parts + 2; ++p) {
        for (const char *c = *p; c && *c && used + 1 < size; ++c)
            dst[used++] = *c;
    }
    if (size)
        dst[used] = '\0';
}

#endif /* CONVOY_SCHEDULER_SCHEDULER_H */
