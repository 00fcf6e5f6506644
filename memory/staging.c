/* Pinned staging for transfers between ordinary host memory and the device: each copy is split
 * into chunks that pass through one page-locked buffer, with the host-side memcpy of every chunk
 * run as a host callback in stream order, so the work function only enqueues and the transfer
 * stays asynchronous to the submitting thread and to compute streams.
 *
 * Why reusing the one chunk is safe: the callback filling (or draining) the chunk, and the DMA
 * copy out of (or into) it, of chunk i+1 are enqueued after those of chunk i on the same stream,
 * and a stream runs host callbacks and copies strictly in order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memory/staging.h"
#include "core/error_detail.h"

struct convoy__staging {
    convoy__backend *backend;
    void *chunk; /* page-locked, chunk_bytes long */
    size_t chunk_bytes;
};

/* The arguments of one chunk's host-side memcpy. On CUDA the callback runs long after the work
 * function returned, so each chunk gets its own heap record, freed by the callback that uses it.
 * A ring of records inside the staging object would be cheaper but unsafe: a later transfer on
 * the same stream is enqueued (and would overwrite a ring slot) before earlier callbacks have
 * run, and the number of chunks in flight has no bound. One malloc per chunk is noise next to
 * copying the chunk itself. */
typedef struct chunk_copy {
    void *dst;
    const void *src;
    size_t bytes;
} chunk_copy;

static void run_chunk_copy(void *arg)
{
    chunk_copy *c = arg;
    memcpy(c->dst, c->src, c->bytes);
    free(c);
}

/* Enqueues memcpy(dst, src, bytes) as a host callback in stream order. */
static convoy_status enqueue_memcpy(convoy__staging *s, void *native_stream, void *dst,
                                    const void *src, size_t bytes, const char *what)
{
    chunk_copy *c = malloc(sizeof *c);
    if (!c)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "staging %s: out of host memory for a chunk record", what);
    c->dst = dst;
    c->src = src;
    c->bytes = bytes;
    convoy_status status =
        s->backend->ops->host_callback(s->backend, native_stream, run_chunk_copy, c);
    if (status != CONVOY_OK) {
        /* The callback was not enqueued, so nothing else will free the record. */
        free(c);
        convoy__error_prefix(what);
    }
    return status;
}

convoy_status convoy__staging_create(convoy__backend *backend, size_t chunk_bytes,
                                     convoy__staging **out)
{
    if (!backend || !backend->ops || !out || chunk_bytes == 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "staging_create: %s",
                             chunk_bytes == 0 ? "chunk_bytes is 0" : "NULL backend or out");
    convoy_status status = CONVOY_ERR_OUT_OF_MEMORY;
    convoy__staging *s = calloc(1, sizeof *s);
    if (!s) {
        convoy__error(status, "out of host memory");
        goto fail_struct;
    }
    status = backend->ops->host_alloc(backend, chunk_bytes, &s->chunk);
    if (status != CONVOY_OK)
        goto fail_chunk;
    s->backend = backend;
    s->chunk_bytes = chunk_bytes;
    *out = s;
    return CONVOY_OK;

fail_chunk:
    free(s);
fail_struct:
    convoy__error_prefix("staging_create");
    return status;
}

void convoy__staging_destroy(convoy__staging *staging)
{
    if (!staging)
        return;
    staging->backend->ops->host_free(staging->backend, staging->chunk);
    free(staging);
}

size_t convoy__staging_chunk_bytes(const convoy__staging *staging)
{
    return staging ? staging->chunk_bytes : 0;
}

static convoy_status check(const convoy__staging *staging, const void *dst, const void *src,
                           size_t bytes, const char *what)
{
    if (!staging || (bytes > 0 && (!dst || !src)))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "staging %s: NULL %s", what,
                             !staging ? "staging" : (!dst ? "destination" : "source"));
    return CONVOY_OK;
}

convoy_status convoy__staging_upload(convoy__staging *staging, void *native_stream,
                                     void *device_dst, const void *host_src, size_t bytes)
{
    convoy_status status = check(staging, device_dst, host_src, bytes, "upload");
    const convoy__backend_ops *ops = staging ? staging->backend->ops : NULL;
    for (size_t done = 0; status == CONVOY_OK && done < bytes;) {
        size_t n = bytes - done < staging->chunk_bytes ? bytes - done : staging->chunk_bytes;
        status = enqueue_memcpy(staging, native_stream, staging->chunk,
                                (const char *)host_src + done, n, "upload");
        if (status == CONVOY_OK) {
            status = ops->copy(staging->backend, native_stream, (char *)device_dst + done,
                               staging->chunk, n, CONVOY__COPY_HOST_TO_DEVICE);
            if (status != CONVOY_OK)
                convoy__error_prefix("upload");
        }
        done += n;
    }
    return status;
}

convoy_status convoy__staging_download(convoy__staging *staging, void *native_stream,
                                       void *host_dst, const void *device_src, size_t bytes)
{
    convoy_status status = check(staging, host_dst, device_src, bytes, "download");
    const convoy__backend_ops *ops = staging ? staging->backend->ops : NULL;
    for (size_t done = 0; status == CONVOY_OK && done < bytes;) {
        size_t n = bytes - done < staging->chunk_bytes ? bytes - done : staging->chunk_bytes;
        status = ops->copy(staging->backend, native_stream, staging->chunk,
                           (const char *)device_src + done, n, CONVOY__COPY_DEVICE_TO_HOST);
        if (status != CONVOY_OK)
            convoy__error_prefix("download");
        else
            status = enqueue_memcpy(staging, native_stream, (char *)host_dst + done, staging->chunk,
                                    n, "download");
        done += n;
    }
    return status;
}
