/* Task records for CONVOY_TRACE (a Chrome trace JSON file that Perfetto and
 * chrome://tracing open) and for the summary that CONVOY_PROFILE=1 logs
 * (DESIGN.md section 6).
 *
 * The scheduler names one track per stream (convoy__trace_track) and reports
 * each task once it retired (convoy__trace_task): its slice on its stream's
 * track, the host interval that enqueued it where that is apart (CUDA), and
 * one flow arrow from each task it waited for. The runtime adds a counter of
 * the memory pool (convoy__trace_set_sampler). Nothing is kept per event:
 * records stream to a temp file as they come (convoy__trace_open), the file
 * is completed and renamed over the path at convoy__trace_close, and the
 * summary is folded in as records arrive, so a long run holds a fixed amount
 * of memory. Recording never changes behaviour: a record that cannot be
 * written is dropped silently, and the file reports the failure at close. */
#ifndef CONVOY_PROFILING_TRACE_H
#define CONVOY_PROFILING_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct convoy__trace convoy__trace;

/* What a task's time counts as in the summary's transfer line. */
typedef enum convoy__trace_role {
    CONVOY__TRACE_OTHER = 0,   /* neither (releases, untyped records) */
    CONVOY__TRACE_COMPUTE = 1, /* convolutions and custom tasks */
    CONVOY__TRACE_TRANSFER = 2 /* uploads and downloads */
} convoy__trace_role;

/* A slice another record points at: where a flow arrow starts. */
typedef struct convoy__trace_slice {
    int track;
    double start_us, end_us;
} convoy__trace_slice;

/* One kind's share of a critical path. */
typedef struct convoy__trace_part {
    const char *kind;
    double us;
} convoy__trace_part;

/* One finished task. Times are microseconds on one monotonic clock (the one
 * the trace was created with). Every string is copied or written at once. */
typedef struct convoy__trace_task {
    int track;             /* its stream's track (convoy__trace_track) */
    const char *kind;      /* category, "conv_fwd"; NULL: "task" */
    const char *name;      /* the full label; NULL: the kind */
    double start_us;       /* when its stream ran it */
    double end_us;         /* end_us < start_us counts as 0 long */
    const char *args_json; /* NULL, or a JSON object shown as its arguments */
    convoy__trace_role role;
    /* The host interval that enqueued it, as its own slice on enqueue_track
     * with a "launch" arrow to the task; enqueue_track 0: none. */
    int enqueue_track;
    double enqueue_start_us, enqueue_end_us;
    /* The tasks it waited for: one "dependency" arrow from each. */
    const convoy__trace_slice *inputs;
    int input_count;
    /* The longest dependency chain ending with this task: its time (the
     * durations along it), length, first task's label and time per kind.
     * path_us 0: not measured. */
    double path_us;
    int path_tasks;
    const char *path_from;
    const convoy__trace_part *path_parts;
    int path_part_count;
} convoy__trace_task;

/* Fills count values (keys[i] names value i) of a counter; called without
 * any trace lock held. Returns the number of values filled. */
typedef int (*convoy__trace_sampler)(void *user_data, const char **keys, double *values, int max);

/* Creates an empty trace whose file (when one is opened) shows times
 * relative to origin_us. Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL out,
 * CONVOY_ERR_OUT_OF_MEMORY. *out is set only on success. */
convoy_status convoy__trace_create(double origin_us, convoy__trace **out);

/* Frees the trace. A file still open is abandoned: its temp file is removed
 * and path is left as it was. NULL is a no-op. No other call on the trace
 * may be running. */
void convoy__trace_destroy(convoy__trace *trace);

/* Starts writing the trace to path: the records go to a temp file
 * "<path>.tmp.<pid>.<counter>" beside path as they come (through a 64 KiB
 * buffer), and convoy__trace_close completes it and renames it over path, so
 * path never holds half a trace. Only an absent path or a regular file is
 * ever replaced: anything else there (a FIFO, a device such as /dev/null, a
 * directory, a symbolic link) is left alone, never opened, and the call
 * fails; nothing it does blocks. Tracks named before the call are written
 * first. Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL argument, a path
 * that is not a regular file, a trace already writing a file, or when the
 * temp file cannot be created (the message names the path and the reason;
 * nothing is left behind); CONVOY_ERR_OUT_OF_MEMORY. Thread-safe. */
convoy_status convoy__trace_open(convoy__trace *trace, const char *path);

/* Completes the file convoy__trace_open started ({"traceEvents":[...]} with
 * "M" metadata naming the process and each track, "X" slices, "s"/"f" flow
 * pairs and "C" counters) and renames it over its path. Returns CONVOY_OK
 * also when no file was open; CONVOY_ERR_INVALID_ARGUMENT when writing
 * failed or the path stopped being absent or a regular file meanwhile (the
 * temp file is removed, path left alone, the message says why). Records
 * added afterwards only reach the summary. Thread-safe. */
convoy_status convoy__trace_close(convoy__trace *trace);

/* Returns the id (>= 1) of the track named track_name, creating it on first
 * use (and writing its name to an open file); the same name always gives
 * the same id. The id is the "tid" of the track's events in the file.
 * Returns 0 for a NULL argument or when memory fails; records on track 0 (or
 * any id this function did not return) still land in the file, on a track
 * called "untracked". Thread-safe. */
int convoy__trace_track(convoy__trace *trace, const char *track_name);

/* Records one finished task (see convoy__trace_task): writes its slices and
 * arrows to the open file and folds it into the summary. args_json that is
 * not a JSON object is kept as a string argument ("args"). Thread-safe; one
 * lock, no allocation but the summary's few. NULL trace or task: no-op. */
void convoy__trace_task_done(convoy__trace *trace, const convoy__trace_task *task);

/* The short form: a task of role CONVOY__TRACE_OTHER with no arrows and no
 * path. */
void convoy__trace_add(convoy__trace *trace, int track, const char *kind, const char *name,
                       double start_us, double end_us, const char *args_json);

/* Writes one "C" (counter) record: count values of the counter name at
 * ts_us, keys[i] naming values[i]. Thread-safe. */
void convoy__trace_counter(convoy__trace *trace, const char *name, double ts_us, int count,
                           const char *const *keys, const double *values);

/* Installs where convoy__trace_sample gets the values of the counter name
 * (at most 8); NULL fn removes it. Call before any sample. */
void convoy__trace_set_sampler(convoy__trace *trace, const char *name, convoy__trace_sampler fn,
                               void *user_data);

/* Asks the sampler for its values and writes a counter record at now_us when
 * they differ from the last one written. Calls the sampler without the
 * trace's lock, so the sampler may take locks that come before it. */
void convoy__trace_sample(convoy__trace *trace, double now_us);

/* Tells the summary that no record still to come starts before
 * watermark_us, so the transfer overlap before it is final and the
 * intervals it kept for it can go. The scheduler calls it as tasks retire;
 * the summary works the overlap out only once enough intervals wait, so a
 * call is usually cheap. A record that breaks the promise loses its part
 * before the watermark from the transfer line (nothing else). */
void convoy__trace_settle(convoy__trace *trace, double watermark_us);

/* Writes the summary into buffer[size], whole lines only (the text stops
 * after the last line that fits, possibly empty), always NUL-terminated
 * when size > 0; nothing happens when buffer is NULL or size is 0:
 *
 *     kind             count     total ms      mean us       max us
 *     conv_fwd             3        6.000     2000.000     3000.000
 *     (all)              ...
 *     stream           tasks     busy ms     busy
 *     convoy compute 0     3       6.000    60.0%
 *     run 10.000 ms from the first start to the last end
 *     transfers 1.000 ms, 50.0% hidden behind compute
 *     critical path 7.500 ms (75.0% of the run), 3 tasks from 'upload x':
 *       conv_fwd 6.000 ms, upload 1.500 ms
 *
 * Kinds and streams most time first; "(all)" only with several kinds;
 * durations are end - start (negative counts as 0). The transfer line
 * appears when transfers were recorded, the critical path line when paths
 * were; "no tasks recorded" when nothing was. Thread-safe. */
void convoy__trace_summary(convoy__trace *trace, char *buffer, size_t size);

/* Bytes the trace holds now (its own structures and the summary's), for
 * tests that check a long run stays bounded. */
size_t convoy__trace_footprint(convoy__trace *trace);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_PROFILING_TRACE_H */
