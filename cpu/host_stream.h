/* Host streams and events: the CPU backend's equivalent of cudaStream_t and
 * cudaEvent_t. A stream is a worker thread draining a FIFO queue; an event is
 * a flag that completes when its queue position is reached. */
#ifndef CONVOY_CPU_HOST_STREAM_H
#define CONVOY_CPU_HOST_STREAM_H

#include "convoy.h"
#include "core/device.h"

/* Streams and events of one backend share a completion condition variable,
 * so blocking waits need no per-event kernel object. */
typedef struct convoy__host_sync convoy__host_sync;

convoy_status convoy__host_sync_create(convoy__host_sync **out);
void convoy__host_sync_destroy(convoy__host_sync *sync);

convoy_status convoy__host_stream_create(convoy__host_sync *sync, const char *name,
                                         convoy__stream **out);
void convoy__host_stream_destroy(convoy__stream *stream);
convoy_status convoy__host_stream_enqueue(convoy__stream *stream, convoy__work_fn fn, void *arg);
/* Makes room for `entries` more entries, so that many pushes cannot fail. */
convoy_status convoy__host_stream_reserve(convoy__stream *stream, size_t entries);
convoy_status convoy__host_stream_wait_event(convoy__stream *stream, convoy__event *event);

convoy_status convoy__host_event_create(convoy__host_sync *sync, convoy__event **out);
void convoy__host_event_destroy(convoy__event *event);
/* stream NULL: completes at once. */
convoy_status convoy__host_event_record(convoy__event *event, convoy__stream *stream);
int convoy__host_event_query(convoy__event *event);
void convoy__host_event_synchronize(convoy__event *event);

#endif /* CONVOY_CPU_HOST_STREAM_H */
