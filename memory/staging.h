/* Pinned host staging for transfers from ordinary (pageable) host memory: one page-locked chunk
 * per staging object, through which uploads and downloads are copied chunk by chunk so the DMA
 * engine only ever touches pinned memory and the copies stay asynchronous.
 *
 * A staging object belongs to one stream (the runtime keeps one for its upload stream and one for
 * its download stream): its single chunk is reused by every copy, and only the stream order of
 * that one stream makes the reuse safe. */
#ifndef CONVOY_MEMORY_STAGING_H
#define CONVOY_MEMORY_STAGING_H

#include <stddef.h>

#include "convoy.h"
#include "core/device.h"

typedef struct convoy__staging convoy__staging;

/* Allocates one chunk of chunk_bytes (> 0) with ops->host_alloc. Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL backend or out, chunk_bytes 0) or CONVOY_ERR_OUT_OF_MEMORY.
 * *out is set only on success. */
convoy_status convoy__staging_create(convoy__backend *backend, size_t chunk_bytes,
                                     convoy__staging **out);

/* Frees the chunk. Every transfer enqueued through it must have completed. NULL: no-op. */
void convoy__staging_destroy(convoy__staging *staging);

/* Size of the chunk, 0 for NULL. */
size_t convoy__staging_chunk_bytes(const convoy__staging *staging);

/* Called from inside a work function running on the staging's stream, with that work function's
 * native stream: enqueues, chunk by chunk and in stream order, a host callback copying the user's
 * bytes into the chunk and a copy from the chunk to device_dst. host_src must stay valid until
 * the stream has run the last callback. bytes 0 enqueues nothing. Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL staging or pointer with bytes > 0),
 * CONVOY_ERR_OUT_OF_MEMORY (no host memory for a chunk record) or the backend's error from
 * host_callback or copy; chunks enqueued before a failure still run. */
convoy_status convoy__staging_upload(convoy__staging *staging, void *native_stream,
                                     void *device_dst, const void *host_src, size_t bytes);

/* The reverse: per chunk, a copy from device_src into the chunk and then a host callback copying
 * the chunk into host_dst. host_dst is written only by those callbacks, in stream order.
 * Errors as convoy__staging_upload. */
convoy_status convoy__staging_download(convoy__staging *staging, void *native_stream,
                                       void *host_dst, const void *device_src, size_t bytes);

#endif /* CONVOY_MEMORY_STAGING_H */
