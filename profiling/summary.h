/* The profile summary, folded in one task at a time (DESIGN.md section 6):
 * per kind count, total, mean and max; per track (stream) tasks and busy
 * time; the run's span; how much transfer time compute hid; and the longest
 * dependency chain. Nothing is kept per task except the transfer and
 * compute intervals whose overlap is not final yet (see
 * convoy__summary_settle). Not thread-safe: the trace calls it under its
 * lock. */
#ifndef CONVOY_PROFILING_SUMMARY_H
#define CONVOY_PROFILING_SUMMARY_H

#include <stddef.h>

#include "profiling/trace.h"

typedef struct convoy__summary convoy__summary;

/* NULL when memory fails. */
convoy__summary *convoy__summary_create(void);
void convoy__summary_destroy(convoy__summary *summary);

/* Folds one task in; track is its track id (0: untracked). Returns 0 when
 * memory failed and part of it was dropped. */
int convoy__summary_add(convoy__summary *summary, int track, const convoy__trace_task *task);

/* No task still to come starts before watermark_us (see
 * convoy__trace_settle). */
void convoy__summary_settle(convoy__summary *summary, double watermark_us);

/* The text of convoy__trace_summary; track_names[i] names track i + 1. */
void convoy__summary_format(const convoy__summary *summary, const char *const *track_names,
                            size_t track_count, char *buffer, size_t size);

/* Bytes held, the structure included. */
size_t convoy__summary_footprint(const convoy__summary *summary);

#endif /* CONVOY_PROFILING_SUMMARY_H */
