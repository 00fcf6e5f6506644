/* The stream-ordered caching pool behind every tensor and workspace (memory/pool.h): the locked
 * interface, the events that let one stream's freed blocks reach another, growth through the
 * backend allocator under the memory limit with release-and-retry on failure, fault injection
 * and statistics. Size classes and the free-block cache are in pool_cache.c. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/pool.h"
#include "memory/pool_int.h"
#include "core/error_detail.h"

#define SMALL_MAX CONVOY__POOL_SMALL_MAX
#define ALIGNMENT ((size_t)256) /* what pool.h promises for block->ptr */

typedef convoy__pool_blk blk;
typedef convoy__pool_event event_node;
typedef convoy__pool_segment segment;

/* One mutex guards every field. Submitting threads (tensor creation, workspace binding under the
 * scheduler's lock) and stream workers (frees from inside work functions) take it, so it must be
 * a leaf lock: under it the pool calls only malloc and the non-blocking event functions (create,
 * record, query). Backend memory calls run with it released, because cudaFree synchronizes the
 * device, and a host callback that frees into the pool would then wait on this lock forever. For
 * the same reason the pool never blocks on an event: the stream that has to pass it may itself be
 * waiting for this lock. */
struct convoy__pool {
    pthread_mutex_t lock;
    convoy__backend *backend; /* backend and ops never change: read without the lock */
    const convoy__backend_ops *ops;
    size_t limit;
    long fail_alloc_at;
    long backend_requests; /* backend allocations begun, for fail_alloc_at */
    size_t pad;            /* extra bytes asked so blocks can be aligned (0 until needed) */

    size_t held;     /* bytes of live segments */
    size_t reserved; /* bytes of backend allocations in flight (lock released) */
    size_t in_use;   /* bytes of blocks handed out */
    size_t peak;
    uint64_t backend_allocations, backend_frees, cache_hits, requests;

    event_node *free_events;                 /* complete: ready to record */
    event_node *retired_head, *retired_tail; /* no block needs them; maybe still pending */
    convoy__pool_cache cache;
};

/* ---- events --------------------------------------------------------------- */

/* A complete event to record: a free one, the oldest retired one if it has completed, or a new
 * one. Only events seen complete are recorded again, because a host event still queued on one
 * stream would otherwise be completed early by that stale record. */
static event_node *event_get(convoy__pool *pool)
{
    event_node *e = pool->free_events;
    if (e) {
        pool->free_events = e->next;
        return e;
    }
    e = pool->retired_head;
    if (e && pool->ops->event_query(pool->backend, e->event, NULL)) {
        pool->retired_head = e->next;
        if (!pool->retired_head)
            pool->retired_tail = NULL;
        return e;
    }
    e = malloc(sizeof *e);
    if (!e)
        return NULL;
    if (pool->ops->event_create(pool->backend, &e->event) != CONVOY_OK) {
        free(e);
        return NULL;
    }
    return e;
}

static void event_done(convoy__pool *pool, event_node *e)
{
    e->next = pool->free_events;
    pool->free_events = e;
}

static void event_retire(convoy__pool *pool, event_node *e)
{
    e->next = NULL;
    if (pool->retired_tail)
        pool->retired_tail->next = e;
    else
        pool->retired_head = e;
    pool->retired_tail = e;
}

/* Records an event on stream, or returns NULL; a failed record leaves the event complete. */
static event_node *record_on(convoy__pool *pool, convoy__stream *stream)
{
    event_node *e = event_get(pool);
    if (e && pool->ops->event_record(pool->backend, e->event, stream) != CONVOY_OK) {
        event_done(pool, e);
        e = NULL;
    }
    return e;
}

/* Turns every pending block whose event has completed into an idle one. A block whose event could
 * not be recorded at free time gets one now: recorded later than needed, which is still safe. A
 * query that reports a device error counts as "not yet": the block stays reserved. */
static void settle_pending(convoy__pool *pool)
{
    blk *b = pool->cache.fifo_head;
    while (b) {
        blk *next = b->fifo_next; /* merging recycles only idle records, never a pending one */
        if (!b->event) {
            b->event = record_on(pool, b->pub.stream);
            b->pub.ready = b->event ? b->event->event : NULL;
        } else if (pool->ops->event_query(pool->backend, b->event->event, NULL)) {
            convoy__pool_cache_unpend(&pool->cache, b);
            event_done(pool, b->event);
            convoy__pool_cache_make_idle(&pool->cache, b);
        }
        b = next;
    }
}

/* Other streams' pending blocks of the class whose events are queried per request before fresh
 * memory is split: enough to find a block whose stream has moved on, few enough to keep a miss
 * cheap when many are still in flight (settle_pending() looks at all of them on a real miss). */
#define MAX_QUERIES 4

/* A pending block of the class that stream freed itself (its event is no longer needed but may
 * still be pending, so it is retired rather than reused), else one whose stream has passed it. */
static blk *take_pending(convoy__pool *pool, size_t size, convoy__stream *stream)
{
    blk *list = convoy__pool_cache_pending_class(&pool->cache, size), *b;
    for (b = list; stream && b; b = b->list_next)
        if (b->pub.stream == stream && convoy__pool_cache_fits(b->pub.size, size)) {
            convoy__pool_cache_unpend(&pool->cache, b);
            if (b->event)
                event_retire(pool, b->event);
            b->event = NULL;
            return b;
        }
    int queries = 0;
    for (b = list; b && queries < MAX_QUERIES; b = b->list_next) {
        if (!b->event || !convoy__pool_cache_fits(b->pub.size, size))
            continue;
        queries++;
        if (pool->ops->event_query(pool->backend, b->event->event, NULL)) {
            convoy__pool_cache_unpend(&pool->cache, b);
            event_done(pool, b->event);
            b->event = NULL;
            return b;
        }
    }
    return NULL;
}

/* The last resort before reporting out of memory: the smallest block, of any class, that stream
 * itself freed and that is big enough. Stream order makes it safe at once; the caller gets more
 * than it asked (all of it counts as in use) instead of a failure. Scans every pending block. */
static blk *take_own_larger(convoy__pool *pool, size_t size, convoy__stream *stream)
{
    blk *best = NULL;
    for (blk *b = pool->cache.fifo_head; b; b = b->fifo_next)
        if (b->pub.stream == stream && b->pub.size >= size &&
            (!best || b->pub.size < best->pub.size))
            best = b;
    if (best) {
        convoy__pool_cache_unpend(&pool->cache, best);
        if (best->event)
            event_retire(pool, best->event);
        best->event = NULL;
    }
    return best;
}

/* A cached block for stream: a pending block of its exact class first (that keeps same-size
 * reuse from fragmenting segments), then an idle one, split to size when small. */
static blk *take_cached(convoy__pool *pool, size_t size, convoy__stream *stream)
{
    blk *b = pool->cache.fifo_head ? take_pending(pool, size, stream) : NULL;
    return b ? b : convoy__pool_cache_take_idle(&pool->cache, size);
}

/* ---- growing ---------------------------------------------------------- */

/* Unlinks fully idle segments until need bytes are gone; free_segments() returns them to the
 * backend once the lock is released. */
static void release_idle(convoy__pool *pool, size_t need, segment **out)
{
    size_t released = 0;
    pool->backend_frees += convoy__pool_cache_release(&pool->cache, need, out, &released);
    pool->held -= released;
}

static void free_segments(convoy__pool *pool, segment *list)
{
    while (list) {
        segment *next = list->next;
        pool->ops->mem_free(pool->backend, list->base);
        free(list->first);
        free(list);
        list = next;
    }
}

/* Asks the backend for size usable bytes. A backend that aligns to less than 256 bytes (the host
 * backend gives 64) makes the pool pad this and every later segment; the padding is the
 * backend's overhead, like its own rounding, and is not counted against the limit. */
static convoy_status backend_alloc(convoy__pool *pool, size_t size, size_t *pad, void **base)
{
    if (size > SIZE_MAX - ALIGNMENT)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%zu bytes cannot be addressed", size);
    void *p = NULL;
    convoy_status status = pool->ops->mem_alloc(pool->backend, size + *pad, &p);
    if (status == CONVOY_OK && *pad == 0 && ((uintptr_t)p & (ALIGNMENT - 1))) {
        pool->ops->mem_free(pool->backend, p);
        *pad = ALIGNMENT;
        status = pool->ops->mem_alloc(pool->backend, size + *pad, &p);
    }
    if (status == CONVOY_OK)
        *base = p;
    return status;
}

static size_t room_left(const convoy__pool *pool)
{
    size_t taken = pool->held + pool->reserved;
    return pool->limit > taken ? pool->limit - taken : 0;
}

static convoy_status report(convoy__pool *pool, size_t size, size_t bytes, const char *what,
                            int over_limit, int injected, const char *backend_text)
{
    char limit_text[48] = "no limit";
    if (pool->limit)
        snprintf(limit_text, sizeof limit_text, "limit %zu", pool->limit);
    char why[320] = "";
    if (over_limit)
        snprintf(why, sizeof why, " (a new segment of %zu bytes would pass the limit)",
                 size <= SMALL_MAX ? CONVOY__POOL_SMALL_SEGMENT : size);
    else if (injected)
        snprintf(why, sizeof why, " (injected failure of backend allocation %ld)",
                 pool->fail_alloc_at);
    else if (backend_text[0])
        snprintf(why, sizeof why, " (%s)", backend_text);
    return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                         "out of memory allocating %zu bytes for %s: %zu bytes in use, %zu cached, "
                         "%s%s",
                         bytes, what, pool->in_use, pool->held - pool->in_use, limit_text, why);
}

/* A new segment holding a block of the rounded size. Called and returns with the lock held; drops
 * it around backend calls, with the bytes reserved against the limit meanwhile. */
static convoy_status grow(convoy__pool *pool, size_t size, size_t bytes, convoy__stream *stream,
                          const char *what, blk **out)
{
    int small = size <= SMALL_MAX, injected = 0, over_limit = 0;
    char backend_text[256] = "";
    segment *seg = malloc(sizeof *seg);
    blk *first = malloc(sizeof *first);
    if (!seg || !first) {
        free(seg);
        free(first);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "out of host memory for pool bookkeeping allocating %zu bytes for %s",
                             bytes, what);
    }
    for (int attempt = 0; attempt < 2 && !over_limit; ++attempt) {
        segment *to_free = NULL;
        size_t seg_size = small ? CONVOY__POOL_SMALL_SEGMENT : size;
        if (attempt == 1) {
            /* The backend is out of memory: hand back everything cached, then try once more. */
            settle_pending(pool);
            release_idle(pool, SIZE_MAX, &to_free);
        }
        if (pool->limit && seg_size > room_left(pool)) {
            settle_pending(pool);
            release_idle(pool, seg_size - room_left(pool), &to_free);
            size_t room = room_left(pool);
            /* Under a tight limit a small request gets a segment of what is left. */
            if (small && seg_size > room && room >= size)
                seg_size = room / CONVOY__POOL_SMALL_QUANTUM * CONVOY__POOL_SMALL_QUANTUM;
            over_limit = seg_size > room;
        }
        /* One backend allocation is an attempt plus its retry: an injected failure fails both,
         * so the caller sees the out-of-memory error the hook exists to exercise. */
        if (attempt == 0 && !over_limit)
            injected = ++pool->backend_requests == pool->fail_alloc_at;
        size_t pad = pool->pad;
        if (!over_limit)
            pool->reserved += seg_size;
        pthread_mutex_unlock(&pool->lock);
        free_segments(pool, to_free);
        void *base = NULL;
        convoy_status status = CONVOY_ERR_OUT_OF_MEMORY;
        if (!over_limit && !injected) {
            status = backend_alloc(pool, seg_size, &pad, &base);
            if (status != CONVOY_OK)
                snprintf(backend_text, sizeof backend_text, "%s", convoy__error_text());
        }
        pthread_mutex_lock(&pool->lock);
        if (over_limit)
            break;
        pool->reserved -= seg_size;
        if (status == CONVOY_OK) {
            if (pad > pool->pad)
                pool->pad = pad;
            seg->base = base;
            seg->size = seg_size;
            seg->small = small;
            void *ptr = (void *)(((uintptr_t)base + ALIGNMENT - 1) & ~(uintptr_t)(ALIGNMENT - 1));
            *out = convoy__pool_cache_install(&pool->cache, seg, first, ptr, size);
            pool->held += seg_size;
            pool->backend_allocations++;
            return CONVOY_OK;
        }
    }
    free(seg);
    free(first);
    if (stream && !injected && (*out = take_own_larger(pool, size, stream)) != NULL) {
        pool->cache_hits++;
        return CONVOY_OK;
    }
    return report(pool, size, bytes, what, over_limit, injected, backend_text);
}

/* ---- the interface -------------------------------------------------------- */

convoy_status convoy__pool_create(convoy__backend *backend, size_t limit, long fail_alloc_at,
                                  convoy__pool **out)
{
    if (!backend || !backend->ops || !out)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "pool_create: NULL %s",
                             !out ? "out" : "backend");
    convoy_status status = CONVOY_ERR_OUT_OF_MEMORY;
    convoy__pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        goto fail_pool;
    if (pthread_mutex_init(&pool->lock, NULL) != 0)
        goto fail_lock;
    pool->backend = backend;
    pool->ops = backend->ops;
    pool->limit = limit;
    pool->fail_alloc_at = fail_alloc_at > 0 ? fail_alloc_at : 0;
    *out = pool;
    return CONVOY_OK;

fail_lock:
    free(pool);
fail_pool:
    return convoy__error(status, "pool_create: out of host memory for the pool and its mutex");
}

static void destroy_events(convoy__pool *pool, event_node *e, int wait)
{
    while (e) {
        event_node *next = e->next;
        if (wait)
            (void)pool->ops->event_synchronize(pool->backend, e->event);
        pool->ops->event_destroy(pool->backend, e->event);
        free(e);
        e = next;
    }
}

/* Blocks still in use are freed with their segments: their handles die with the pool. */
void convoy__pool_destroy(convoy__pool *pool)
{
    if (!pool)
        return;
    /* The runtime drains its streams first, so these waits return at once; they keep a host
     * event that is still queued on a stream from being freed under it. */
    for (blk *b = pool->cache.fifo_head; b; b = b->fifo_next)
        if (b->event)
            event_retire(pool, b->event);
    destroy_events(pool, pool->retired_head, 1);
    destroy_events(pool, pool->free_events, 0);
    for (segment *s = pool->cache.seg_head; s; s = s->next)
        pool->ops->mem_free(pool->backend, s->base);
    convoy__pool_cache_free_records(&pool->cache);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

convoy_status convoy__pool_alloc(convoy__pool *pool, size_t bytes, convoy__stream *stream,
                                 const char *what, convoy__block **out)
{
    if (!pool || !out || bytes == 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "pool_alloc: %s",
                             bytes == 0 ? "zero bytes requested" : "NULL pool or out");
    if (!what)
        what = "an allocation";
    size_t quantum = bytes <= SMALL_MAX ? CONVOY__POOL_SMALL_QUANTUM : CONVOY__POOL_LARGE_QUANTUM;
    if (bytes > SIZE_MAX - quantum)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "out of memory allocating %zu bytes for %s: more than any device has",
                             bytes, what);
    size_t size = (bytes + quantum - 1) & ~(quantum - 1);

    pthread_mutex_lock(&pool->lock);
    pool->requests++;
    blk *b = take_cached(pool, size, stream);
    if (!b && pool->cache.fifo_head) {
        settle_pending(pool);
        b = take_cached(pool, size, stream);
    }
    convoy_status status = CONVOY_OK;
    if (b)
        pool->cache_hits++;
    else
        status = grow(pool, size, bytes, stream, what, &b);
    if (status == CONVOY_OK) {
        b->state = CONVOY__POOL_IN_USE;
        b->pub.requested = bytes;
        b->pub.stream = stream;
        b->pub.ready = NULL;
        pool->in_use += b->pub.size;
        if (pool->in_use > pool->peak)
            pool->peak = pool->in_use;
        *out = &b->pub;
    }
    pthread_mutex_unlock(&pool->lock);
    return status;
}

void convoy__pool_free(convoy__pool *pool, convoy__block *block, convoy__stream *stream)
{
    if (!pool || !block)
        return;
    blk *b = (blk *)block;
    pthread_mutex_lock(&pool->lock);
    if (b->state != CONVOY__POOL_IN_USE) { /* a double free: nothing sane to do but ignore it */
        pthread_mutex_unlock(&pool->lock);
        return;
    }
    pool->in_use -= b->pub.size;
    if (stream) {
        b->state = CONVOY__POOL_PENDING;
        b->pub.stream = stream;
        b->event = record_on(pool, stream);
        b->pub.ready = b->event ? b->event->event : NULL;
        convoy__pool_cache_pend(&pool->cache, b);
    } else {
        convoy__pool_cache_make_idle(&pool->cache, b);
    }
    pthread_mutex_unlock(&pool->lock);
}

void convoy__pool_stats(convoy__pool *pool, convoy_memory_statistics *stats)
{
    if (!pool || !stats)
        return;
    pthread_mutex_lock(&pool->lock);
    stats->bytes_in_use = pool->in_use;
    stats->bytes_cached = pool->held - pool->in_use;
    stats->peak_bytes_in_use = pool->peak;
    stats->limit = pool->limit;
    stats->backend_allocations = pool->backend_allocations;
    stats->backend_frees = pool->backend_frees;
    stats->cache_hits = pool->cache_hits;
    stats->requests = pool->requests;
    pthread_mutex_unlock(&pool->lock);
}

convoy_status convoy__pool_trim(convoy__pool *pool)
{
    if (!pool)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "pool_trim: NULL pool");
    segment *list = NULL;
    pthread_mutex_lock(&pool->lock);
    settle_pending(pool);
    release_idle(pool, SIZE_MAX, &list);
    pthread_mutex_unlock(&pool->lock);
    free_segments(pool, list);
    return CONVOY_OK;
}

static convoy_status scratch_alloc(void *user_data, size_t bytes, const char *what, void **ptr,
                                   void **handle)
{
    convoy__block *block = NULL;
    convoy_status status = convoy__pool_alloc(user_data, bytes, NULL, what, &block);
    if (status == CONVOY_OK) {
        *ptr = block->ptr;
        *handle = block;
    }
    return status;
}

static void scratch_free(void *user_data, void *handle)
{
    convoy__pool_free(user_data, handle, NULL);
}

convoy__scratch_allocator convoy__pool_scratch(convoy__pool *pool)
{
    convoy__scratch_allocator allocator = {scratch_alloc, scratch_free, pool};
    return allocator;
}

/* Idle memory counts as available (the pool releases it under the limit); blocks still pending
 * on a stream, and allocations in flight, do not. Fragmentation inside 2 MiB small segments can
 * make a single request of nearly this size fail all the same. */
size_t convoy__pool_available(convoy__pool *pool)
{
    if (!pool)
        return 0;
    size_t available = SIZE_MAX;
    pthread_mutex_lock(&pool->lock);
    if (pool->limit) {
        if (pool->cache.fifo_head)
            settle_pending(pool);
        size_t busy = pool->in_use + pool->cache.pending_bytes + pool->reserved;
        available = pool->limit > busy ? pool->limit - busy : 0;
    }
    pthread_mutex_unlock(&pool->lock);
    return available;
}
