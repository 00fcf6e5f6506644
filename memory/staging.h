/* Transfers between the program's host memory and the device, in stream order.
 *
 * A buffer the backend reports page-locked (ops->host_is_pinned) is copied directly: one
 * asynchronous copy, no staging. Anything else, ordinary pageable memory, passes chunk by
 * chunk through two or more page-locked chunks used in turn, so the DMA engine only ever
 * touches pinned memory and the copies stay asynchronous to the submitting thread. The host
 * side memcpy of each chunk runs on the staging object's own thread, not on the stream: the
 * memcpy into (or out of) one chunk overlaps the DMA of the other, and the backend's host
 * callback thread (CUDA has one for every stream) only carries short markers that say how far
 * the stream got and wait for the staging thread where the stream must not run ahead of it.
 *
 * A staging object belongs to one stream (the runtime keeps one for its upload stream and one
 * for its download stream): its calls are that stream's work and never run concurrently, and
 * the stream's order is what orders the chunks' reuse. */
#ifndef CONVOY_MEMORY_STAGING_H
#define CONVOY_MEMORY_STAGING_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/device.h"

typedef struct convoy__staging convoy__staging;

/* Allocates chunk_count (>= 2) chunks of chunk_bytes (> 0) with ops->host_alloc and starts
 * the staging thread, named name ("convoy upload staging"; may be NULL). Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL backend or out, chunk_bytes 0, chunk_count < 2),
 * CONVOY_ERR_OUT_OF_MEMORY, or CONVOY_ERR_BACKEND when no thread can be started. *out is set
 * only on success. */
convoy_status convoy__staging_create(convoy__backend *backend, const char *name, size_t chunk_bytes,
                                     int chunk_count, convoy__staging **out);

/* Stops the thread and frees the chunks. Every transfer enqueued through it must have
 * completed. NULL: no-op. */
void convoy__staging_destroy(convoy__staging *staging);

/* Size and number of the chunks, 0 for NULL. */
size_t convoy__staging_chunk_bytes(const convoy__staging *staging);
int convoy__staging_chunk_count(const convoy__staging *staging);

/* How far the staging thread has got, in chunk numbers: every memcpy job of a chunk below
 * *started has begun (or was dropped after a failure), every one below *done has finished
 * (UINT64_MAX: none is pending). Thread-safe; for tests and diagnostics. */
void convoy__staging_progress(convoy__staging *staging, uint64_t *started, uint64_t *done);

/* Called from inside a work function running on the staging's stream, with that work
 * function's native stream: copies bytes from host_src to device_dst in stream order. Pinned
 * host_src: one copy. Otherwise, per chunk k (k = 0, 1, ... over the object's life, chunk
 * slot k mod chunk_count): a host callback marking that the stream reached chunk k and
 * waiting until the staging thread has filled the slot, then the copy from the slot to the
 * device. The thread fills a slot only once the stream has reached the transfer (host_src is
 * read in stream order, after the task's dependencies) and the slot's previous copy has
 * completed. host_src must stay valid and unchanged until the stream has passed the transfer.
 * bytes 0 enqueues nothing. Returns CONVOY_ERR_INVALID_ARGUMENT (NULL staging or pointer with
 * bytes > 0), CONVOY_ERR_OUT_OF_MEMORY (no host memory for the chunk records) or the
 * backend's error from host_callback or copy. After a failure nothing of this transfer
 * touches host_src any more once this returns; what was enqueued still runs (so the stream
 * is never left waiting) and may copy stale chunk contents, which the failed task's status
 * covers. */
convoy_status convoy__staging_upload(convoy__staging *staging, void *native_stream,
                                     void *device_dst, const void *host_src, size_t bytes);

/* The reverse. Pinned host_dst: one copy. Otherwise, per chunk, a host callback that marks
 * the chunks before it as landed and waits until the slot's previous contents were drained,
 * then the copy from the device into the slot; the staging thread drains each landed slot
 * into host_dst while the next chunk's DMA runs; a last host callback waits until all of them
 * were drained, so host_dst is complete when the stream passes the transfer. Errors as
 * convoy__staging_upload; after a failure nothing of this transfer writes host_dst once this
 * returns. */
convoy_status convoy__staging_download(convoy__staging *staging, void *native_stream,
                                       void *host_dst, const void *device_src, size_t bytes);

#endif /* CONVOY_MEMORY_STAGING_H */
