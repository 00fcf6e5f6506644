/* The scheduler's side of profiling (DESIGN.md section 6): when a task ran
 * on its stream, the host interval that ran or enqueued its body, and the
 * longest dependency chain ending with it; reported to the trace once the
 * task retires.
 *
 * Who writes what. attach (task_new, before the task is shared) allocates
 * the record and the backend's timer. submitted (under the scheduler's
 * lock) stamps the submit time and the stream's track. begin and end run
 * with the body, on whichever thread executes it: they read the host clock
 * and record the timer on the task's stream. Everything else runs under the
 * scheduler's lock once the task's completion event fired (which orders it
 * after begin and end): resolve reads the timer (a device's clock where the
 * backend has one, the host's otherwise) and extends the chain of the
 * dependency whose chain is longest; fold does the same at submit for a
 * dependency that had finished already, which the scheduler does not
 * record; report hands the task to the trace with one arrow from each
 * recorded dependency. A task is resolved only after its dependencies
 * (ready), so chains are complete. */
#ifndef CONVOY_SCHEDULER_TASK_PROFILE_H
#define CONVOY_SCHEDULER_TASK_PROFILE_H

#include "profiling/trace.h"
#include "scheduler/task_int.h"

typedef struct convoy__task_profile {
    convoy__timer *timer; /* NULL when the backend has none */
    int timer_failed;     /* a record failed: the host interval stands in */
    int track;            /* the trace track of the stream (or thread) that ran it */
    double submit_us;     /* when it was submitted */
    /* The body on a host thread: the stream's worker on the CPU, the
     * enqueue on the submitting thread on CUDA. */
    double host_start_us, host_end_us;
    int resolved; /* the fields below are final */
    double start_us, end_us;
    /* Before resolve: the longest chain among the finished dependencies
     * folded in at submit (0 tasks: none). After: the chain ending here. */
    double path_us;
    int path_tasks;
    double path_kind_us[CONVOY__TASK_KIND_COUNT];
    char path_from[CONVOY__TASK_LABEL_SIZE];
} convoy__task_profile;

/* Gives the task a profile record and, when the backend has timers, a timer.
 * Leaves task->profile NULL when memory fails: the task then runs
 * unprofiled, its trace record missing, nothing else changed. */
void convoy__profile_attach(convoy_task *task);

/* Frees the record and the timer (the backend must still exist). */
void convoy__profile_release(convoy_task *task);

/* At submit, under the scheduler's lock. */
void convoy__profile_submitted(convoy_task *task, int track);

/* Around the body (also when it is skipped), with the native stream. */
void convoy__profile_begin(convoy_task *task, void *native_stream);
void convoy__profile_end(convoy_task *task, void *native_stream);

/* dependency finished before task was submitted: its chain may still be
 * the longest one into task. */
void convoy__profile_fold(convoy_task *task, convoy_task *dependency);

/* 1 when every recorded dependency is resolved (or unprofiled). */
int convoy__profile_ready(const convoy_task *task);

/* Makes the times and the chain final; a no-op when they are. A dependency
 * not resolved yet (only when forced, at teardown) is left out. */
void convoy__profile_resolve(convoy_task *task);

/* Hands the resolved task to the trace: its slice, its arrows, its host
 * enqueue slice on enqueue_track when that is not 0. */
void convoy__profile_report(convoy__trace *trace, const convoy_task *task, int enqueue_track);

#endif /* CONVOY_SCHEDULER_TASK_PROFILE_H */
