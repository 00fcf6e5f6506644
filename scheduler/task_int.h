/* The task object, shared by the scheduler's files. Programs only see the
 * opaque convoy_task. */
#ifndef CONVOY_SCHEDULER_TASK_INT_H
#define CONVOY_SCHEDULER_TASK_INT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/scheduler.h"

#define CONVOY__TASK_LABEL_SIZE 112

/* One dependency: the task waited for, and whether its failure propagates
 * (read-after-write) or it only orders (write-after-read, write-after-write). */
typedef struct convoy__dependency {
    convoy_task *task;
    int carries_failure;
} convoy__dependency;

/* A failure: its status and detail text, published together by one pointer
 * so that a reader never sees one without the other. */
typedef struct convoy__failure {
    convoy_status status;
    int allocated; /* 0 for the static records used when memory runs out */
    const char *message;
} convoy__failure;

struct convoy_task {
    /* References: the submit call while it runs, the program's handle, the
     * stream's in-flight list, hazard records naming the task, and the
     * dependency arrays of tasks that wait for it. */
    atomic_int refs;
    convoy__backend *backend;
    convoy__scheduler *scheduler; /* NULL once detached at runtime destroy */
    convoy__task_kind kind;
    int slot;               /* stream slot, -1 when run inline */
    convoy__stream *stream; /* NULL when run inline */
    convoy__event *event;   /* completion; NULL once detached */
    uint64_t sequence;      /* submission order */

    /* NULL while the task has not failed. Set at most once: the first
     * setter wins (compare-and-swap) and later ones are dropped. Setters are
     * the submitting thread (a failure before the task could run), the
     * executing thread (a failed dependency or body, before the completion
     * event fires), and after that event the scheduler's retire or any
     * waiter (a device fault the event reported). Read without a lock. */
    _Atomic(convoy__failure *) failure;
    size_t bytes; /* moved by a transfer, for the trace; 0 otherwise */
    /* Timing for the trace and summary; NULL when the runtime does not
     * profile (scheduler/task_profile.h says who writes what when). */
    struct convoy__task_profile *profile;

    convoy__task_run_fn run;
    convoy__task_skip_fn skip; /* may be NULL */
    int off_stream;            /* completed on the submitting thread, not on its stream */
    /* Written at submit under the scheduler's lock, read by the executing
     * thread, and released when the task retires from its stream, not when
     * it runs: until its completion event is seen, the stream may still hold
     * waits on the dependencies' events. */
    convoy__dependency *dependencies;
    int dependency_count;
    int dependency_capacity;

    int user_held; /* the program holds a handle */
    convoy_task *user_prev, *user_next;
    convoy_task *inflight_next;

    char label[CONVOY__TASK_LABEL_SIZE];
    alignas(max_align_t) unsigned char payload[];
};

void convoy__task_unref(convoy_task *task);

/* Records a failure (status and a copy of message; NULL or "" means the
 * status name) unless the task has one already. Returns 1 when this call
 * set it. Safe from any thread. */
int convoy__task_set_failure(convoy_task *task, convoy_status status, const char *message);

/* The task's status so far: CONVOY_OK until a failure was set. */
convoy_status convoy__task_status(const convoy_task *task);

/* The failure's detail text; NULL while the task has not failed. */
const char *convoy__task_message(const convoy_task *task);

#endif /* CONVOY_SCHEDULER_TASK_INT_H */
