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

    /* Written by the executing thread before the completion event fires;
     * read by others only after observing that event. */
    convoy_status status;
    char *message; /* detail of a failure, malloc'd */
    double start_us, end_us;

    convoy__task_run_fn run;
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

/* Stores a failure's status and the thread's current detail text. */
void convoy__task_set_failure(convoy_task *task, convoy_status status, const char *message);

#endif /* CONVOY_SCHEDULER_TASK_INT_H */
