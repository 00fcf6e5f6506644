/* Submission: hazard resolution, stream choice, event waits, enqueue and
 * completion tracking (DESIGN.md section 3). Everything a submit does happens
 * under one lock and without waiting for work, so submission order is the
 * order the lock is granted and the cost per task stays at a few hundred
 * nanoseconds. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiling/nvtx.h"
#include "profiling/trace.h"
#include "core/error_detail.h"
#include "core/platform.h"
#include "scheduler/scheduler.h"
#include "scheduler/task_int.h"
#include "scheduler/task_profile.h"

typedef struct stream_slot {
    convoy__stream *stream;
    convoy__queue queue;
    convoy_task *inflight_head, *inflight_tail; /* submitted, completion not yet seen */
    int inflight_count;
    uint64_t last_sequence; /* the newest task submitted to this stream */
    int track;              /* trace track id */
} stream_slot;

struct convoy__scheduler {
    convoy__backend *backend;
    /* lock guards the slots and their in-flight lists, every hazard record,
     * the handle list, next_sequence, and each task's stream, slot and
     * dependency array from submit until the task retires. Work never runs
     * while it is held, except inline tasks (compute_streams == 0), CUDA
     * enqueues, which only enqueue, and the bookkeeping of a task that
     * failed before it could be queued. It blocks on an event only on the
     * failure paths of enqueue, where a task's order can no longer be kept
     * on the device; no stream work ever takes it, so that cannot deadlock. */
    pthread_mutex_t lock;
    /* Compute streams first, then upload, then download, then (once opened)
     * the communication stream: slot_count grows by one when it opens, and
     * slots has room for it from the start. */
    stream_slot *slots;
    int slot_count;
    int compute_count;
    int inline_mode;
    int inline_track;  /* trace track of tasks run on the submitting thread */
    int enqueue_track; /* trace track of the host enqueues, where work runs at enqueue */
    uint64_t next_sequence;
    convoy_task *handles; /* tasks the program holds handles to */

    /* failure_lock guards first_failure, fault and both messages. It is
     * taken alone (by worker threads) or inside lock, never around it. */
    pthread_mutex_t failure_lock;
    convoy_status first_failure; /* since the last synchronize */
    char *first_failure_message;
    /* The first device fault an event query or wait reported. Sticky: it is
     * never reset, and every submit after it fails fast. Written once under
     * failure_lock; read without it for the fast check. */
    _Atomic convoy_status fault;
    char *fault_message;

    convoy__prof_domain *domain;
    convoy__trace *trace;
};

static const char *const kind_names[CONVOY__TASK_KIND_COUNT] = {
    "upload",       "download", "conv_fwd",          "conv_bwd_data", "conv_bwd_filter",
    "custom",       "release",  "conv_fwd_bias_act", "act_bwd",       "bias_bwd",
    "softmax_xent", "sgd",      "allreduce",         "broadcast",
};

const char *convoy__task_kind_name(convoy__task_kind kind)
{
    return (unsigned)kind < CONVOY__TASK_KIND_COUNT ? kind_names[kind] : "unknown";
}

int convoy__scheduler_stream_count(const convoy__scheduler *s)
{
    return s->compute_count;
}

/* ---- completion tracking ---------------------------------------------- */

static void note_failure(convoy__scheduler *s, convoy_task *task)
{
    pthread_mutex_lock(&s->failure_lock);
    if (s->first_failure == CONVOY_OK) {
        const char *message = convoy__task_message(task);
        s->first_failure = convoy__task_status(task);
        free(s->first_failure_message);
        s->first_failure_message = message ? strdup(message) : NULL;
    }
    pthread_mutex_unlock(&s->failure_lock);
}

/* ---- device faults ------------------------------------------------------ */

/* Keeps the first device fault for good: a device that faulted
 * asynchronously (a CUDA sticky error) runs nothing more, so every later
 * submit fails fast naming it. */
static void latch_fault(convoy__scheduler *s, convoy_status error, const char *text)
{
    pthread_mutex_lock(&s->failure_lock);
    if (atomic_load_explicit(&s->fault, memory_order_relaxed) == CONVOY_OK) {
        s->fault_message = strdup(text);
        atomic_store_explicit(&s->fault, error, memory_order_release);
    }
    pthread_mutex_unlock(&s->failure_lock);
}

/* A device fault reported by the completion event of task (the thread's
 * detail text describes it). It belongs to that task, which fails with it
 * unless it had failed already, so the tasks that read what it wrote and
 * have not run yet fail with CONVOY_ERR_DEPENDENCY_FAILED. */
static void device_fault(convoy__scheduler *s, convoy_task *task, convoy_status error)
{
    char text[1024];
    snprintf(text, sizeof text, "device fault seen by '%s': %s", task->label, convoy__error_text());
    if (convoy__task_set_failure(task, error, text))
        note_failure(s, task);
    latch_fault(s, error, text);
}

/* The error of a submit after a device fault: nothing was enqueued. */
static convoy_status refuse_after_fault(convoy__scheduler *s, const char *label)
{
    pthread_mutex_lock(&s->failure_lock);
    convoy_status status =
        convoy__error(CONVOY_ERR_BACKEND, "%s: not submitted: the device faulted earlier (%s)",
                      label, s->fault_message ? s->fault_message : "no detail");
    pthread_mutex_unlock(&s->failure_lock);
    return status;
}

/* Whether a task's completion event has fired, noting a device fault it
 * reports. Called with the lock held. */
static int task_complete(convoy__scheduler *s, convoy_task *task)
{
    convoy_status error = CONVOY_OK;
    if (!s->backend->ops->event_query(s->backend, task->event, &error))
        return 0;
    if (error != CONVOY_OK)
        device_fault(s, task, error);
    return 1;
}

/* Blocks until a task's completion event fires, noting a fault. Used only
 * where a task's order could not be kept on its stream. */
static void wait_on_host(convoy__scheduler *s, convoy_task *task)
{
    convoy_status error = s->backend->ops->event_synchronize(s->backend, task->event);
    if (error != CONVOY_OK)
        device_fault(s, task, error);
}

/* ---- retiring tasks ----------------------------------------------------- */

static void drop_dependencies(convoy_task *task)
{
    for (int i = 0; i < task->dependency_count; ++i)
        convoy__task_unref(task->dependencies[i].task);
    task->dependency_count = 0;
}

/* A finished task's times and chain become final and go to the trace. Its
 * dependencies are still referenced, so the trace draws their arrows. */
static void report(convoy__scheduler *s, convoy_task *task)
{
    convoy__profile_resolve(task);
    convoy__profile_report(s->trace, task, s->enqueue_track);
}

/* Pops the tasks whose completion events have fired off a stream's in-flight
 * list. The list is in stream order, so completion is in list order. A task
 * retires only here (or at destroy): its stream has then passed every wait it
 * queued, so the events those waits name may go. With a trace, a task also
 * waits until the tasks it depended on were resolved (they finished before
 * it, but may sit on a stream retired later), so its chain is complete.
 * Returns how many retired. */
static int retire_slot(convoy__scheduler *s, stream_slot *slot)
{
    int retired = 0;
    while (slot->inflight_head) {
        convoy_task *task = slot->inflight_head;
        if (!task_complete(s, task) || (s->trace && !convoy__profile_ready(task)))
            break;
        slot->inflight_head = task->inflight_next;
        if (!slot->inflight_head)
            slot->inflight_tail = NULL;
        slot->inflight_count--;
        if (s->trace)
            report(s, task);
        drop_dependencies(task);
        convoy__task_unref(task);
        retired++;
    }
    return retired;
}

/* After tasks were reported: no task still to come started before the
 * oldest unretired one was submitted (or before now, for those not yet
 * submitted), which settles the trace's overlap figures up to there; and
 * the pool's counter is sampled. */
static void note_retired(convoy__scheduler *s)
{
    double now = convoy__now_us(), watermark = now;
    for (int i = 0; i < s->slot_count; ++i) {
        const convoy_task *head = s->slots[i].inflight_head;
        if (head && head->profile && head->profile->submit_us < watermark)
            watermark = head->profile->submit_us;
    }
    convoy__trace_settle(s->trace, watermark);
    convoy__trace_sample(s->trace, now);
}

/* Retires what it can on every stream; with a trace it goes round again
 * while that frees a task another stream's head waited for. */
static void retire_all(convoy__scheduler *s)
{
    int retired = 0, progress;
    do {
        progress = 0;
        for (int i = 0; i < s->slot_count; ++i)
            progress += retire_slot(s, &s->slots[i]);
        retired += progress;
    } while (progress && s->trace);
    if (retired && s->trace)
        note_retired(s);
}

/* ---- running a task ----------------------------------------------------- */

static void fail_from_dependency(convoy_task *task, const convoy_task *dependency)
{
    char text[640];
    const char *message = convoy__task_message(dependency);
    snprintf(text, sizeof text, "%s: depends on '%s', which failed with %s: %.400s", task->label,
             dependency->label, convoy_status_name(convoy__task_status(dependency)),
             message ? message : "");
    (void)convoy__task_set_failure(task, CONVOY_ERR_DEPENDENCY_FAILED, text);
}

/* The stream work of every task: check that what it reads was written
 * successfully, run the body, record the outcome. A task that failed before
 * it was queued runs this too, for the bookkeeping, and skips its body. */
static void task_execute(void *arg, void *native_stream)
{
    convoy_task *task = arg;
    convoy__scheduler *s = task->scheduler;
    if (convoy__task_status(task) == CONVOY_OK) {
        for (int i = 0; i < task->dependency_count; ++i) {
            const convoy_task *dependency = task->dependencies[i].task;
            if (task->dependencies[i].carries_failure &&
                convoy__task_status(dependency) != CONVOY_OK) {
                fail_from_dependency(task, dependency);
                break;
            }
        }
    }
    convoy__profile_begin(task, native_stream);
    if (convoy__task_status(task) == CONVOY_OK) {
        convoy__prof_range_push(s->domain, task->label);
        convoy__stream *order_stream = s->backend->ops->enqueue_runs_now ? task->stream : NULL;
        convoy_status status = task->run(task->payload, native_stream, order_stream);
        convoy__prof_range_pop(s->domain);
        if (status != CONVOY_OK) {
            char text[1024];
            snprintf(text, sizeof text, "%s: %s", task->label, convoy__error_text());
            (void)convoy__task_set_failure(task, status, text);
        }
    } else if (task->skip && !task->off_stream) {
        /* In the body's place and in stream order, so what the skip tells
         * other processes comes where the body's messages would have. */
        task->skip(task->payload, native_stream, convoy__task_message(task));
    }
    convoy__profile_end(task, native_stream);
    if (convoy__task_status(task) != CONVOY_OK)
        note_failure(s, task);
    /* The dependencies stay referenced until the task retires. On the host
     * an inline task's completion event is its own; firing it last means a
     * waiter sees the status written above. */
    if (!s->backend->ops->enqueue_runs_now && !task->stream)
        s->backend->ops->event_record(s->backend, task->event, NULL);
}

/* ---- hazards ------------------------------------------------------------ */

static int add_dependency(convoy_task *task, convoy_task *dependency, int carries_failure)
{
    for (int i = 0; i < task->dependency_count && i < 64; ++i) {
        if (task->dependencies[i].task == dependency) {
            task->dependencies[i].carries_failure |= carries_failure;
            return 1;
        }
    }
    /* A finished dependency only matters if it failed (a device fault its
     * event reports counts) and its failure propagates; otherwise there is
     * nothing to wait for. */
    if (task_complete(task->scheduler, dependency) &&
        (!carries_failure || convoy__task_status(dependency) == CONVOY_OK)) {
        /* Not waited for, but maybe still the longest chain into task. */
        convoy__profile_fold(task, dependency);
        return 1;
    }
    if (task->dependency_count == task->dependency_capacity) {
        int capacity = task->dependency_capacity ? task->dependency_capacity * 2 : 4;
        convoy__dependency *grown = realloc(task->dependencies, (size_t)capacity * sizeof *grown);
        if (!grown)
            return 0;
        task->dependencies = grown;
        task->dependency_capacity = capacity;
    }
    atomic_fetch_add_explicit(&dependency->refs, 1, memory_order_relaxed);
    task->dependencies[task->dependency_count++] =
        (convoy__dependency){dependency, carries_failure};
    return 1;
}

/* Makes room for one more reader, dropping readers that have finished. */
static int reserve_reader(convoy__scheduler *s, convoy__hazards *h)
{
    if (h->reader_count < h->reader_capacity)
        return 1;
    int kept = 0;
    for (int i = 0; i < h->reader_count; ++i) {
        convoy_task *reader = h->readers[i];
        if (task_complete(s, reader))
            convoy__task_unref(reader);
        else
            h->readers[kept++] = reader;
    }
    h->reader_count = kept;
    if (kept < h->reader_capacity && kept < h->reader_capacity / 2 + 1)
        return 1;
    int capacity = h->reader_capacity ? h->reader_capacity * 2 : 4;
    convoy_task **grown = realloc(h->readers, (size_t)capacity * sizeof *grown);
    if (!grown)
        return kept < h->reader_capacity;
    h->readers = grown;
    h->reader_capacity = capacity;
    return 1;
}

void convoy__hazards_clear(convoy__scheduler *s, convoy__hazards *h)
{
    if (s)
        pthread_mutex_lock(&s->lock);
    if (h->last_writer)
        convoy__task_unref(h->last_writer);
    for (int i = 0; i < h->reader_count; ++i)
        convoy__task_unref(h->readers[i]);
    free(h->readers);
    memset(h, 0, sizeof *h);
    if (s)
        pthread_mutex_unlock(&s->lock);
}

int convoy__scheduler_clear_if_idle(convoy__scheduler *s, convoy__hazards *h)
{
    pthread_mutex_lock(&s->lock);
    int idle = !h->last_writer || task_complete(s, h->last_writer);
    for (int i = 0; i < h->reader_count && idle; ++i)
        idle = task_complete(s, h->readers[i]);
    pthread_mutex_unlock(&s->lock);
    if (idle)
        convoy__hazards_clear(s, h);
    return idle;
}

/* Collects the dependencies of every access; 0 when host memory ran out. */
static int collect_dependencies(convoy_task *task, const convoy__task_desc *desc)
{
    for (size_t i = 0; i < desc->access_count; ++i) {
        convoy__hazards *h = desc->accesses[i].hazards;
        int mode = desc->accesses[i].mode;
        int writes = mode & (CONVOY_WRITE | CONVOY__ACCESS_RELEASE);
        if (h->last_writer && !add_dependency(task, h->last_writer, (mode & CONVOY_READ) != 0))
            return 0;
        if (writes) {
            for (int r = 0; r < h->reader_count; ++r) {
                if (!add_dependency(task, h->readers[r], 0))
                    return 0;
            }
        } else if (!reserve_reader(task->scheduler, h)) {
            return 0;
        }
    }
    return 1;
}

/* Records the task in the hazard records, and as the content of what it
 * writes (task->sequence is set). Cannot fail: collect_dependencies reserved
 * the reader slots. */
static void update_hazards(convoy_task *task, const convoy__task_desc *desc)
{
    for (size_t i = 0; i < desc->access_count; ++i) {
        convoy__hazards *h = desc->accesses[i].hazards;
        int mode = desc->accesses[i].mode;
        if (mode & (CONVOY_WRITE | CONVOY__ACCESS_RELEASE)) {
            if (h->last_writer)
                convoy__task_unref(h->last_writer);
            for (int r = 0; r < h->reader_count; ++r)
                convoy__task_unref(h->readers[r]);
            h->reader_count = 0;
            h->last_writer = NULL;
            h->content = mode & CONVOY__ACCESS_RELEASE ? 0 : task->sequence;
            if (!(mode & CONVOY__ACCESS_RELEASE)) {
                atomic_fetch_add_explicit(&task->refs, 1, memory_order_relaxed);
                h->last_writer = task;
            }
        } else {
            atomic_fetch_add_explicit(&task->refs, 1, memory_order_relaxed);
            h->readers[h->reader_count++] = task;
        }
    }
}

/* ---- stream choice ------------------------------------------------------ */

/* Transfers go to their own streams. Compute goes to the stream of its
 * newest unfinished producer when nothing unrelated was queued there since,
 * so chains stay on one stream with no event waits; otherwise to the least
 * loaded compute stream. */
static int choose_slot(convoy__scheduler *s, const convoy_task *task, convoy__queue queue)
{
    if (queue == CONVOY__QUEUE_UPLOAD)
        return s->compute_count;
    if (queue == CONVOY__QUEUE_DOWNLOAD)
        return s->compute_count + 1;
    /* Collectives are submitted only once their communicator opened the
     * stream; a compute stream would still keep them in order. */
    if (queue == CONVOY__QUEUE_COMM && s->slot_count > s->compute_count + 2)
        return s->compute_count + 2;
    const convoy_task *producer = NULL;
    for (int i = 0; i < task->dependency_count; ++i) {
        const convoy_task *d = task->dependencies[i].task;
        if (d->slot >= 0 && d->slot < s->compute_count &&
            (!producer || d->sequence > producer->sequence))
            producer = d;
    }
    if (producer && s->slots[producer->slot].last_sequence == producer->sequence)
        return producer->slot;
    int best = 0;
    for (int i = 1; i < s->compute_count; ++i) {
        if (s->slots[i].inflight_count < s->slots[best].inflight_count)
            best = i;
    }
    return best;
}

/* ---- submit ------------------------------------------------------------- */

/* The trace track a task is shown on: its stream's, or the submitting
 * thread's when it will run there (inline, or completed at submit when its
 * stream had no room; that track is named on first use). */
static int profile_track(convoy__scheduler *s, const convoy_task *task)
{
    if (task->slot >= 0)
        return s->slots[task->slot].track;
    if (!s->inline_track)
        s->inline_track = convoy__trace_track(s->trace, "convoy inline");
    return s->inline_track;
}

static convoy_task *task_new(convoy__scheduler *s, const convoy__task_desc *desc,
                             convoy__task_skip_fn skip)
{
    convoy_task *task = malloc(sizeof *task + desc->payload_size);
    if (!task)
        return NULL;
    memset(task, 0, sizeof *task);
    if (s->backend->ops->event_create(s->backend, &task->event) != CONVOY_OK) {
        free(task);
        return NULL;
    }
    atomic_init(&task->refs, 1);
    task->backend = s->backend;
    task->scheduler = s;
    task->kind = desc->kind;
    task->slot = -1;
    task->run = desc->run;
    task->bytes = desc->bytes;
    if (s->trace)
        convoy__profile_attach(task);
    task->skip = skip;
    convoy__text_join(task->label, sizeof task->label,
                      desc->label ? desc->label : convoy__task_kind_name(desc->kind), NULL);
    if (desc->payload_size)
        memcpy(task->payload, desc->payload, desc->payload_size);
    return task;
}

/* A task that cannot keep its place on its stream fails before it runs:
 * only its body is skipped. */
static void fail_early(convoy_task *task, convoy_status status)
{
    char text[1024];
    snprintf(text, sizeof text, "%s: %s", task->label, convoy__error_text());
    (void)convoy__task_set_failure(task, status, text);
}

/* Makes room on the task's stream for its waits, its work and its completion
 * record, so that it is queued whole or not at all. */
static int reserve_queue(convoy__scheduler *s, convoy_task *task)
{
    const convoy__backend_ops *ops = s->backend->ops;
    if (!ops->stream_reserve)
        return 1;
    convoy_status status =
        ops->stream_reserve(s->backend, task->stream, (size_t)task->dependency_count + 2);
    if (status == CONVOY_OK)
        return 1;
    fail_early(task, status);
    return 0;
}

/* Puts the task on its stream: event waits for its dependencies on other
 * streams, its work, then its completion event. Whatever fails, the task
 * keeps its place in the order: it completes only after everything it had to
 * follow, failed if it could not run, so its dependants and the tasks
 * ordered after it see it like any other failure. */
static void enqueue(convoy__scheduler *s, convoy_task *task, const convoy__task_desc *desc)
{
    const convoy__backend_ops *ops = s->backend->ops;
    if (task->stream && !reserve_queue(s, task)) {
        /* Not even room to queue the task: nothing of it reaches the
         * stream. It completes here, once everything it follows has. */
        for (int i = 0; i < task->dependency_count; ++i)
            wait_on_host(s, task->dependencies[i].task);
        task->stream = NULL;
        task->slot = -1;
        task->off_stream = 1;
        task_execute(task, NULL);
        return;
    }
    if (desc->bind) {
        convoy_status status = desc->bind(task->payload, task->stream);
        if (status != CONVOY_OK)
            (void)convoy__task_set_failure(task, status, convoy__error_text());
    }
    for (int i = 0; i < task->dependency_count && task->stream; ++i) {
        convoy_task *d = task->dependencies[i].task;
        if (!d->stream || d->stream == task->stream)
            continue;
        convoy_status status = ops->stream_wait_event(s->backend, task->stream, d->event);
        if (status != CONVOY_OK) {
            /* The stream cannot be told to wait; wait here instead, so the
             * task still completes after d. */
            fail_early(task, status);
            wait_on_host(s, d);
        }
    }
    convoy_status status = ops->stream_enqueue(s->backend, task->stream, task_execute, task);
    if (status != CONVOY_OK) {
        /* Only the body is lost: the bookkeeping runs here, and the
         * completion event below still follows the waits. */
        fail_early(task, status);
        task->off_stream = 1;
        task_execute(task, NULL);
    }
    if (task->stream) {
        status = ops->event_record(s->backend, task->event, task->stream);
        if (status != CONVOY_OK) {
            /* The event reads as complete while the stream may still run
             * the task. Host queues had room reserved, so this is the device
             * failing: latch the fault so nothing more is submitted, and let
             * the event at least follow the dependencies. */
            device_fault(s, task, status);
            for (int i = 0; i < task->dependency_count; ++i)
                wait_on_host(s, task->dependencies[i].task);
        }
    }
    if (desc->unbind)
        desc->unbind(task->payload, task->stream);
}

convoy_status convoy__scheduler_submit(convoy__scheduler *s, const convoy__task_desc *desc,
                                       convoy_task **task_out)
{
    return convoy__scheduler_submit_skippable(s, desc, NULL, task_out);
}

convoy_status convoy__scheduler_submit_skippable(convoy__scheduler *s,
                                                 const convoy__task_desc *desc,
                                                 convoy__task_skip_fn skip, convoy_task **task_out)
{
    const char *label = desc->label ? desc->label : convoy__task_kind_name(desc->kind);
    if (atomic_load_explicit(&s->fault, memory_order_acquire) != CONVOY_OK)
        return refuse_after_fault(s, label);
    convoy_task *task = task_new(s, desc, skip);
    if (!task)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory for the task",
                             label);
    pthread_mutex_lock(&s->lock);
    retire_all(s);
    int collected = collect_dependencies(task, desc);
    /* Retiring and collecting query events: either may have seen a fault. */
    int faulted = atomic_load_explicit(&s->fault, memory_order_acquire) != CONVOY_OK;
    if (!collected || faulted) {
        drop_dependencies(task);
        pthread_mutex_unlock(&s->lock);
        convoy__task_unref(task);
        if (faulted)
            return refuse_after_fault(s, label);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory for dependencies",
                             label);
    }
    task->sequence = ++s->next_sequence;
    update_hazards(task, desc);
    if (!s->inline_mode) {
        task->slot = choose_slot(s, task, desc->queue);
        task->stream = s->slots[task->slot].stream;
    }
    if (task->profile)
        convoy__profile_submitted(task, profile_track(s, task));
    enqueue(s, task, desc);
    if (task->stream) {
        /* The stream's in-flight list keeps the task, and the task its
         * dependencies, until its completion event is seen, so the events
         * outlive every queue entry naming them. */
        stream_slot *slot = &s->slots[task->slot];
        slot->last_sequence = task->sequence;
        atomic_fetch_add_explicit(&task->refs, 1, memory_order_relaxed);
        task->inflight_next = NULL;
        if (slot->inflight_tail)
            slot->inflight_tail->inflight_next = task;
        else
            slot->inflight_head = task;
        slot->inflight_tail = task;
        slot->inflight_count++;
    } else {
        /* Ran inline (or completed here): nothing on a stream names its
         * dependencies. */
        if (s->trace) {
            report(s, task);
            note_retired(s);
        }
        drop_dependencies(task);
    }
    if (task_out) {
        atomic_fetch_add_explicit(&task->refs, 1, memory_order_relaxed);
        task->user_held = 1;
        task->user_next = s->handles;
        if (s->handles)
            s->handles->user_prev = task;
        s->handles = task;
        *task_out = task;
    }
    pthread_mutex_unlock(&s->lock);
    convoy__task_unref(task);
    return CONVOY_OK;
}

/* Unlinks a task from the list of tasks the program holds handles to. */
static void forget_handle(convoy__scheduler *s, convoy_task *task)
{
    pthread_mutex_lock(&s->lock);
    if (task->user_held) {
        if (task->user_prev)
            task->user_prev->user_next = task->user_next;
        else
            s->handles = task->user_next;
        if (task->user_next)
            task->user_next->user_prev = task->user_prev;
        task->user_held = 0;
    }
    pthread_mutex_unlock(&s->lock);
}

/* Drops the program's handle. It lives here rather than in task.c because it
 * unlinks the task from the scheduler's list, and task.c never calls into the
 * scheduler: the calls go one way, scheduler to task. */
void convoy_task_release(convoy_task *task)
{
    if (!task)
        return;
    if (task->scheduler)
        forget_handle(task->scheduler, task);
    convoy__task_unref(task);
}

convoy_status convoy__scheduler_synchronize(convoy__scheduler *s)
{
    const convoy__backend_ops *ops = s->backend->ops;
    convoy__event *markers[CONVOY__MAX_SLOTS];
    int marker_count = 0;
    convoy_status status = CONVOY_OK;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->slot_count; ++i) {
        convoy__event *event = NULL;
        if (ops->event_create(s->backend, &event) != CONVOY_OK) {
            status = CONVOY_ERR_OUT_OF_MEMORY;
            break;
        }
        markers[marker_count++] = event;
        if (ops->event_record(s->backend, event, s->slots[i].stream) != CONVOY_OK)
            status = CONVOY_ERR_BACKEND;
    }
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < marker_count; ++i) {
        convoy_status sync = ops->event_synchronize(s->backend, markers[i]);
        if (sync != CONVOY_OK && status == CONVOY_OK) {
            /* A wait that fails is the device failing (host waits cannot). */
            status = sync;
            latch_fault(s, sync, convoy__error_text());
        }
        ops->event_destroy(s->backend, markers[i]);
    }
    if (status != CONVOY_OK)
        return convoy__error(status, "runtime_synchronize: could not wait for the streams: %s",
                             convoy__error_text());
    pthread_mutex_lock(&s->lock);
    retire_all(s);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&s->failure_lock);
    status = s->first_failure;
    if (status != CONVOY_OK)
        convoy__error_set_text(s->first_failure_message);
    s->first_failure = CONVOY_OK;
    free(s->first_failure_message);
    s->first_failure_message = NULL;
    pthread_mutex_unlock(&s->failure_lock);
    return status;
}

static const char *slot_name(const convoy__scheduler *s, int i, char *buffer, size_t size)
{
    static const char *const others[3] = {"convoy upload", "convoy download", "convoy comm"};
    if (i < s->compute_count)
        snprintf(buffer, size, "convoy compute %d", i);
    else
        snprintf(buffer, size, "%s", others[i - s->compute_count]);
    return buffer;
}

convoy_status convoy__scheduler_open_comm_stream(convoy__scheduler *s)
{
    if (s->inline_mode)
        return CONVOY_OK;
    pthread_mutex_lock(&s->lock);
    convoy_status status = CONVOY_OK;
    int index = s->compute_count + 2;
    if (s->slot_count == index) {
        char name[48];
        slot_name(s, index, name, sizeof name);
        stream_slot *slot = &s->slots[index];
        memset(slot, 0, sizeof *slot);
        slot->queue = CONVOY__QUEUE_COMM;
        status = s->backend->ops->stream_create(s->backend, name, &slot->stream);
        if (status == CONVOY_OK) {
            if (s->trace)
                slot->track = convoy__trace_track(s->trace, name);
            s->slot_count = index + 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return status;
}

int convoy__scheduler_has_comm_stream(convoy__scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    int open = s->slot_count > s->compute_count + 2;
    pthread_mutex_unlock(&s->lock);
    return open;
}

int convoy__scheduler_input_failed(convoy__scheduler *s, convoy__hazards *h, char *why,
                                   size_t why_size)
{
    pthread_mutex_lock(&s->lock);
    const convoy_task *writer = h->last_writer;
    convoy_status status = writer ? convoy__task_status(writer) : CONVOY_OK;
    if (status != CONVOY_OK) {
        const char *message = convoy__task_message(writer);
        snprintf(why, why_size, "'%s' failed with %s: %s", writer->label,
                 convoy_status_name(status), message ? message : "");
    }
    pthread_mutex_unlock(&s->lock);
    return status != CONVOY_OK;
}

convoy_status convoy__scheduler_create(convoy__backend *backend,
                                       const convoy__scheduler_config *config,
                                       convoy__scheduler **out)
{
    if (config->compute_streams < 0 || config->compute_streams > CONVOY__MAX_SLOTS - 3)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: %d compute streams, expected 0..%d",
                             config->compute_streams, CONVOY__MAX_SLOTS - 3);
    convoy__scheduler *s = calloc(1, sizeof *s);
    if (!s)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "runtime_create: out of host memory");
    s->backend = backend;
    s->domain = config->domain;
    s->trace = config->trace;
    s->inline_mode = config->compute_streams == 0;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->failure_lock, NULL);
    if (s->trace && s->inline_mode)
        s->inline_track = convoy__trace_track(s->trace, "convoy inline");
    if (!s->inline_mode) {
        s->compute_count = config->compute_streams;
        s->slot_count = s->compute_count + 2;
        /* One more for the communication stream, opened on demand. */
        s->slots = calloc((size_t)s->slot_count + 1, sizeof *s->slots);
        if (!s->slots) {
            convoy__scheduler_destroy(s);
            return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "runtime_create: out of host memory");
        }
        for (int i = 0; i < s->slot_count; ++i) {
            char name[48];
            slot_name(s, i, name, sizeof name);
            s->slots[i].queue = i < s->compute_count    ? CONVOY__QUEUE_COMPUTE
                                : i == s->compute_count ? CONVOY__QUEUE_UPLOAD
                                                        : CONVOY__QUEUE_DOWNLOAD;
            if (s->trace)
                s->slots[i].track = convoy__trace_track(s->trace, name);
            convoy_status status = backend->ops->stream_create(backend, name, &s->slots[i].stream);
            if (status != CONVOY_OK) {
                convoy__scheduler_destroy(s);
                return status;
            }
        }
    }
    /* Where work runs at enqueue (CUDA), a task's slice shows when its
     * stream ran it, and the enqueue gets a track of its own. */
    if (s->trace && backend->ops->enqueue_runs_now)
        s->enqueue_track = convoy__trace_track(s->trace, "convoy enqueue (host)");
    *out = s;
    return CONVOY_OK;
}

void convoy__scheduler_destroy(convoy__scheduler *s)
{
    if (!s)
        return;
    int streams_ready = 1;
    for (int i = 0; i < s->slot_count; ++i)
        streams_ready &= s->slots[i].stream != NULL;
    if (streams_ready)
        (void)convoy__scheduler_synchronize(s);
    for (int i = 0; i < s->slot_count; ++i) {
        if (s->slots[i].stream)
            s->backend->ops->stream_destroy(s->backend, s->slots[i].stream);
    }
    /* Every stream has drained: retire whatever is left, then detach the
     * tasks the program still holds so they outlive the backend. */
    for (int i = 0; i < s->slot_count; ++i) {
        stream_slot *slot = &s->slots[i];
        while (slot->inflight_head) {
            convoy_task *task = slot->inflight_head;
            slot->inflight_head = task->inflight_next;
            if (s->trace)
                report(s, task);
            drop_dependencies(task);
            convoy__task_unref(task);
        }
    }
    for (convoy_task *task = s->handles; task; task = task->user_next) {
        convoy__profile_release(task);
        s->backend->ops->event_destroy(s->backend, task->event);
        task->event = NULL;
        task->scheduler = NULL;
        task->user_held = 0;
    }
    free(s->slots);
    free(s->first_failure_message);
    free(s->fault_message);
    pthread_mutex_destroy(&s->failure_lock);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
