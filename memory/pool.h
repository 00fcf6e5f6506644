/* The stream-ordered caching memory pool: one per runtime, over the backend
 * allocator. Every tensor's storage and every task's scratch comes from it.
 *
 * Sizes are rounded to classes and freed blocks are cached. A block carries
 * the stream that last used it: a later request on that same stream may take
 * it at once (stream order protects it), a request on another stream only
 * once an event recorded at free time shows the first stream is past it. A
 * failed backend allocation releases the cache and retries once before
 * reporting CONVOY_ERR_OUT_OF_MEMORY with the bytes requested, in use and
 * cached. The pool is thread-safe. */
#ifndef CONVOY_MEMORY_POOL_H
#define CONVOY_MEMORY_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/device.h"

typedef struct convoy__pool convoy__pool;

/* A granted allocation. ptr has at least the requested bytes, 256-byte
 * aligned. The other fields belong to the pool. */
typedef struct convoy__block convoy__block;
struct convoy__block {
    void *ptr;
    size_t size;            /* the rounded size actually reserved */
    size_t requested;       /* what the caller asked for */
    convoy__stream *stream; /* last stream that used it (NULL: host order) */
    convoy__event *ready;   /* recorded on stream at free; NULL when none needed */
    void *segment;          /* pool bookkeeping */
};

/* limit: most bytes the pool may hold from the backend (in use + cached),
 * 0 = none. fail_alloc_at: when > 0, the fail_alloc_at-th backend
 * allocation fails (fault injection for tests); an injected failure also
 * fails that allocation's retry, so the caller sees the out-of-memory path. */
convoy_status convoy__pool_create(convoy__backend *backend, size_t limit, long fail_alloc_at,
                                  convoy__pool **out);

/* Returns every segment to the backend, blocks still in use included (their
 * handles die with the pool), and frees the pool. */
void convoy__pool_destroy(convoy__pool *pool);

/* Grants bytes (> 0) to work that will run on stream (NULL: no stream,
 * host order). what names the requester for the error message ("tensor
 * 8x64x56x56", "workspace of conv_fwd"). As a last resort before failing, a
 * request on stream S may take a larger block S itself freed, whole: stream
 * order makes that safe. */
convoy_status convoy__pool_alloc(convoy__pool *pool, size_t bytes, convoy__stream *stream,
                                 const char *what, convoy__block **out);

/* Returns a block. When stream is not NULL the block stays reserved for
 * other streams until the work enqueued on stream so far has run (the pool
 * records an event); stream itself may reuse it at once. NULL block: no-op. */
void convoy__pool_free(convoy__pool *pool, convoy__block *block, convoy__stream *stream);

void convoy__pool_stats(convoy__pool *pool, convoy_memory_statistics *stats);

/* Returns every cached block whose stream has passed it to the backend. */
convoy_status convoy__pool_trim(convoy__pool *pool);

/* The backend scratch allocator (core/device.h) over this pool: alloc is
 * convoy__pool_alloc with no stream (host order), so the bytes count against
 * the limit and a failure first settles pending blocks, releases the cache
 * and retries; free is convoy__pool_free with no stream, for memory the
 * device is done with. The runtime installs it as backend->scratch. */
convoy__scratch_allocator convoy__pool_scratch(convoy__pool *pool);

/* Bytes the pool could still grant under its limit: limit minus in use
 * minus blocks still pending on a stream (SIZE_MAX: no limit).
 * Fragmentation can make a request of nearly that size fail. */
size_t convoy__pool_available(convoy__pool *pool);

#endif /* CONVOY_MEMORY_POOL_H */
