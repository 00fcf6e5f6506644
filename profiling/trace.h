/* Task records for CONVOY_TRACE (a Chrome trace JSON file that Perfetto and
 * chrome://tracing open, one named track per stream) and for the per-kind
 * summary that CONVOY_PROFILE=1 logs (DESIGN.md section 6).
 *
 * The scheduler names one track per stream (convoy__trace_track) and adds one
 * completed event per task (convoy__trace_add) as tasks finish; the runtime
 * writes the file and the summary at destroy. Recording never changes
 * behaviour: an event that cannot be stored is dropped silently. */
#ifndef CONVOY_PROFILING_TRACE_H
#define CONVOY_PROFILING_TRACE_H

#include <stddef.h>

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct convoy__trace convoy__trace;

/* Creates an empty trace. Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL out,
 * CONVOY_ERR_OUT_OF_MEMORY. *out is set only on success. */
convoy_status convoy__trace_create(convoy__trace **out);

/* Frees the trace and everything recorded. NULL is a no-op. No other call on
 * the trace may be running. */
void convoy__trace_destroy(convoy__trace *trace);

/* Returns the id (>= 1) of the track named track_name, creating it on first
 * use; the same name always gives the same id. The id is the "tid" of the
 * track's events in the file. Returns 0 for a NULL argument or when memory
 * fails; events added with track 0 (or any id this function did not return)
 * still land in the file, on a track called "untracked". Thread-safe. */
int convoy__trace_track(convoy__trace *trace, const char *track_name);

/* Records one completed task on a track: kind is its category ("conv_fwd";
 * NULL: "task"), name the full label (NULL: the kind), start_us and end_us
 * its times in microseconds on any one monotonic clock (the file shows them
 * relative to the earliest start), and args_json NULL or the text of a JSON
 * object such as {"impl":"gemm","status":"CONVOY_OK"} shown as the event's
 * arguments. Text that is not a JSON object is kept as a string argument
 * ("args") so the file stays valid. Every string is copied. Thread-safe and
 * cheap: one lock, copies into chunked storage, no per-call realloc. Drops the
 * event silently when memory fails. NULL trace: no-op. */
void convoy__trace_add(convoy__trace *trace, int track, const char *kind, const char *name,
                       double start_us, double end_us, const char *args_json);

/* Writes every event recorded so far to path as Chrome trace JSON:
 * {"traceEvents":[...]} with one "X" (complete) event per task, pid 1, tid
 * the track id, and "M" metadata naming the process and each track
 * (thread_name, thread_sort_index) so each stream is one named track.
 * Strings are JSON-escaped, and invalid UTF-8 becomes U+FFFD. Numbers are
 * written without the C locale, so setlocale() cannot break the file.
 * The text goes to a temp file "<path>.tmp.<pid>.<counter>" beside path,
 * renamed over path once complete, so path never holds half a trace. Only
 * an absent path or a regular file is replaced: anything else there (a
 * FIFO, a device such as /dev/null, a directory, a symbolic link) is left
 * alone, never opened, and the call fails; nothing it does blocks.
 * Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL argument, a path that is
 * not a regular file, or when the file cannot be created, written or
 * renamed (the message names the path and the reason; no temp file is left
 * behind); CONVOY_ERR_OUT_OF_MEMORY. Thread-safe (adds wait). */
convoy_status convoy__trace_write(convoy__trace *trace, const char *path);

/* Writes a small aligned table into buffer[size], one line per kind, most
 * total time first:
 *
 *     kind             count     total ms      mean us       max us
 *     conv_fwd             3        6.000     2000.000     3000.000
 *
 * plus an "(all)" line when there are several kinds, or "no tasks recorded"
 * when there are none. Durations are end_us - start_us (negative counts as
 * 0). Only whole lines are written: when the buffer is too small the text
 * stops after the last line that fits (possibly empty). Always
 * NUL-terminated when size > 0; nothing happens when buffer is NULL or size
 * is 0. Thread-safe. */
void convoy__trace_summary(convoy__trace *trace, char *buffer, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_PROFILING_TRACE_H */
