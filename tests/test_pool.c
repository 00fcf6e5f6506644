/* Tests of memory/: the stream-ordered caching pool, pinned staging and workspace planning. They
 * run over a mock backend whose memory is malloc and whose streams and events are plain structs:
 * an event completes only when the test says its stream has moved on, so stream-ordered reuse can
 * be checked exactly, and the mock can fail backend allocations on demand. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/pool.h"
#include "memory/staging.h"
#include "memory/workspace.h"
#include "core/error_detail.h"

#define MIB ((size_t)1 << 20)
#define MAX_EVENTS 4096

/* ---- the mock backend -------------------------------------------------- */

struct convoy__stream {
    int id;
};

struct convoy__event {
    atomic_int complete;
    convoy__stream *_Atomic stream; /* where it was last recorded */
};

typedef struct mock_backend {
    convoy__backend base; /* first: the pool sees a convoy__backend */
    atomic_long alloc_calls, allocs, frees, fail_next;
    atomic_long events_created, events_destroyed, host_allocs, host_frees;
    atomic_long copies, callbacks, copy_kind_mask;
    void *_Atomic last_native; /* the native stream the last copy or callback got */
    atomic_int aligned;        /* 1: mem_alloc returns 256-byte aligned memory */
    pthread_mutex_t lock;      /* guards events[] */
    convoy__event *events[MAX_EVENTS];
    int event_count;
} mock_backend;

static mock_backend *as_mock(convoy__backend *be)
{
    return (mock_backend *)be;
}

static convoy_status mock_event_create(convoy__backend *be, convoy__event **out)
{
    mock_backend *m = as_mock(be);
    convoy__event *e = calloc(1, sizeof *e);
    if (!e)
        return CONVOY_ERR_OUT_OF_MEMORY;
    atomic_store(&e->complete, 1);
    pthread_mutex_lock(&m->lock);
    if (m->event_count == MAX_EVENTS) {
        pthread_mutex_unlock(&m->lock);
        free(e);
        return CONVOY_ERR_OUT_OF_MEMORY;
    }
    m->events[m->event_count++] = e;
    pthread_mutex_unlock(&m->lock);
    atomic_fetch_add(&m->events_created, 1);
    *out = e;
    return CONVOY_OK;
}

static void mock_event_destroy(convoy__backend *be, convoy__event *event)
{
    mock_backend *m = as_mock(be);
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->event_count; ++i)
        if (m->events[i] == event) {
            m->events[i] = m->events[--m->event_count];
            break;
        }
    pthread_mutex_unlock(&m->lock);
    atomic_fetch_add(&m->events_destroyed, 1);
    free(event);
}

static convoy_status mock_event_record(convoy__backend *be, convoy__event *event,
                                       convoy__stream *stream)
{
    (void)be;
    atomic_store(&event->stream, stream);
    atomic_store(&event->complete, stream == NULL);
    return CONVOY_OK;
}

static int mock_event_query(convoy__backend *be, convoy__event *event, convoy_status *error)
{
    (void)be;
    if (error)
        *error = CONVOY_OK;
    return atomic_load(&event->complete);
}

/* Waiting means the stream drained: the event completes. */
static convoy_status mock_event_synchronize(convoy__backend *be, convoy__event *event)
{
    (void)be;
    atomic_store(&event->complete, 1);
    return CONVOY_OK;
}

static convoy_status mock_mem_alloc(convoy__backend *be, size_t bytes, void **out)
{
    mock_backend *m = as_mock(be);
    atomic_fetch_add(&m->alloc_calls, 1);
    long fail = atomic_load(&m->fail_next);
    while (fail > 0 && !atomic_compare_exchange_weak(&m->fail_next, &fail, fail - 1))
        ;
    void *p = NULL;
    if (fail <= 0)
        p = atomic_load(&m->aligned) ? aligned_alloc(256, (bytes + 255) & ~(size_t)255)
                                     : malloc(bytes);
    if (!p)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "mock device: no memory for %zu bytes",
                             bytes);
    atomic_fetch_add(&m->allocs, 1);
    *out = p;
    return CONVOY_OK;
}

static void mock_mem_free(convoy__backend *be, void *ptr)
{
    atomic_fetch_add(&as_mock(be)->frees, 1);
    free(ptr);
}

static convoy_status mock_host_alloc(convoy__backend *be, size_t bytes, void **out)
{
    void *p = malloc(bytes);
    if (!p)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "mock host: no memory");
    atomic_fetch_add(&as_mock(be)->host_allocs, 1);
    *out = p;
    return CONVOY_OK;
}

static void mock_host_free(convoy__backend *be, void *ptr)
{
    atomic_fetch_add(&as_mock(be)->host_frees, 1);
    free(ptr);
}

static convoy_status mock_copy(convoy__backend *be, void *native_stream, void *dst, const void *src,
                               size_t bytes, convoy__copy_kind kind)
{
    mock_backend *m = as_mock(be);
    atomic_fetch_add(&m->copies, 1);
    atomic_fetch_or(&m->copy_kind_mask, 1L << kind);
    atomic_store(&m->last_native, native_stream);
    memcpy(dst, src, bytes);
    return CONVOY_OK;
}

static convoy_status mock_host_callback(convoy__backend *be, void *native_stream,
                                        void (*fn)(void *), void *arg)
{
    atomic_fetch_add(&as_mock(be)->callbacks, 1);
    atomic_store(&as_mock(be)->last_native, native_stream);
    fn(arg);
    return CONVOY_OK;
}

static const convoy__backend_ops mock_ops = {
    .name = "mock",
    .device = CONVOY_DEVICE_CPU,
    .event_create = mock_event_create,
    .event_destroy = mock_event_destroy,
    .event_record = mock_event_record,
    .event_query = mock_event_query,
    .event_synchronize = mock_event_synchronize,
    .mem_alloc = mock_mem_alloc,
    .mem_free = mock_mem_free,
    .host_alloc = mock_host_alloc,
    .host_free = mock_host_free,
    .copy = mock_copy,
    .host_callback = mock_host_callback,
};

/* The stream has run everything enqueued so far: its events complete. */
static void complete_stream(mock_backend *m, convoy__stream *stream)
{
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->event_count; ++i)
        if (atomic_load(&m->events[i]->stream) == stream)
            atomic_store(&m->events[i]->complete, 1);
    pthread_mutex_unlock(&m->lock);
}

static convoy__stream stream_a = {1}, stream_b = {2};

static int setup(void **state)
{
    mock_backend *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    m->base.ops = &mock_ops;
    pthread_mutex_init(&m->lock, NULL);
    *state = m;
    return 0;
}

/* Every test ends with everything returned to the mock. */
static int teardown(void **state)
{
    mock_backend *m = *state;
    int leaked = atomic_load(&m->allocs) != atomic_load(&m->frees) ||
                 atomic_load(&m->events_created) != atomic_load(&m->events_destroyed) ||
                 atomic_load(&m->host_allocs) != atomic_load(&m->host_frees);
    pthread_mutex_destroy(&m->lock);
    free(m);
    return leaked ? -1 : 0;
}

static convoy__pool *make_pool(mock_backend *m, size_t limit, long fail_alloc_at)
{
    convoy__pool *pool = NULL;
    assert_int_equal(convoy__pool_create(&m->base, limit, fail_alloc_at, &pool), CONVOY_OK);
    assert_non_null(pool);
    return pool;
}

static convoy__block *take(convoy__pool *pool, size_t bytes, convoy__stream *stream)
{
    convoy__block *b = NULL;
    assert_int_equal(convoy__pool_alloc(pool, bytes, stream, "test block", &b), CONVOY_OK);
    assert_non_null(b);
    assert_true(b->size >= bytes);
    assert_int_equal(b->requested, bytes);
    assert_int_equal((uintptr_t)b->ptr % 256, 0);
    memset(b->ptr, 0xab, bytes); /* the sanitizers see any overlap or overrun */
    return b;
}

static convoy_memory_statistics stats_of(convoy__pool *pool)
{
    convoy_memory_statistics s;
    memset(&s, 0xff, sizeof s);
    convoy__pool_stats(pool, &s);
    return s;
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("\"%s\" does not contain \"%s\"", text, part);
}

/* ---- caching and size classes -------------------------------------------- */

static void test_cache_hit(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 0, 0);
    convoy__block *a = take(pool, 1000, NULL);
    void *ptr = a->ptr;
    assert_int_equal(a->size, 1024); /* rounded to 512 B */
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.bytes_in_use, 1024);
    assert_int_equal(s.bytes_cached, 2 * MIB - 1024); /* the rest of its 2 MiB segment */
    assert_int_equal(s.backend_allocations, 1);
    assert_int_equal(s.cache_hits, 0);
    convoy__pool_free(pool, a, NULL);
    a = take(pool, 900, NULL);
    assert_ptr_equal(a->ptr, ptr);
    s = stats_of(pool);
    assert_int_equal(s.requests, 2);
    assert_int_equal(s.cache_hits, 1);
    assert_int_equal(s.backend_allocations, 1);
    /* More small blocks are packed into the same segment. */
    convoy__block *b = take(pool, 100 * 1024, NULL), *c = take(pool, MIB, NULL);
    assert_int_equal(stats_of(pool).backend_allocations, 1);
    /* A large request is rounded to 2 MiB and gets a segment of its own. */
    convoy__block *d = take(pool, 3 * MIB + 1, NULL);
    assert_int_equal(d->size, 4 * MIB);
    s = stats_of(pool);
    assert_int_equal(s.backend_allocations, 2);
    assert_int_equal(s.bytes_in_use, 1024 + 100 * 1024 + MIB + 4 * MIB);
    convoy__pool_free(pool, d, NULL);
    d = take(pool, 4 * MIB, NULL); /* same class: the cached segment */
    assert_int_equal(stats_of(pool).backend_allocations, 2);
    convoy__pool_free(pool, a, NULL);
    convoy__pool_free(pool, b, NULL);
    convoy__pool_free(pool, c, NULL);
    convoy__pool_free(pool, d, NULL);
    convoy__pool_free(pool, NULL, NULL);
    s = stats_of(pool);
    assert_int_equal(s.bytes_in_use, 0);
    assert_int_equal(s.bytes_cached, 6 * MIB);
    assert_int_equal(s.peak_bytes_in_use, 1024 + 100 * 1024 + MIB + 4 * MIB);
    convoy__pool_destroy(pool);
    assert_int_equal(atomic_load(&m->frees), atomic_load(&m->allocs));
}

static void test_invalid_arguments(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 0, 0);
    convoy__block *b = NULL;
    assert_int_equal(convoy__pool_alloc(pool, 0, NULL, "x", &b), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__pool_alloc(NULL, 8, NULL, "x", &b), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__pool_alloc(pool, 8, NULL, "x", NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_null(b);
    assert_int_equal(convoy__pool_alloc(pool, SIZE_MAX, NULL, "huge", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_contains(convoy__error_text(), "huge");
    assert_int_equal(convoy__pool_create(NULL, 0, 0, &pool), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__pool_trim(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    convoy__pool_destroy(NULL);
    convoy__pool_destroy(pool);
}

/* ---- stream-ordered reuse ------------------------------------------------- */

static void check_stream_reuse(mock_backend *m, size_t bytes)
{
    convoy__pool *pool = make_pool(m, 0, 0);
    convoy__block *x = take(pool, bytes, &stream_a);
    void *ptr = x->ptr;
    convoy__pool_free(pool, x, &stream_a);
    assert_non_null(x->ready); /* an event guards it from other streams */

    x = take(pool, bytes, &stream_a); /* same stream: at once */
    assert_ptr_equal(x->ptr, ptr);
    assert_ptr_equal(x->stream, &stream_a);
    convoy__pool_free(pool, x, &stream_a);

    convoy__block *on_b = take(pool, bytes, &stream_b); /* A has not passed it yet */
    convoy__block *on_host = take(pool, bytes, NULL);
    assert_ptr_not_equal(on_b->ptr, ptr);
    assert_ptr_not_equal(on_host->ptr, ptr);

    complete_stream(m, &stream_a);
    convoy__block *later = take(pool, bytes, &stream_b); /* now it may */
    assert_ptr_equal(later->ptr, ptr);
    assert_ptr_equal(later->stream, &stream_b);

    convoy__pool_free(pool, later, &stream_b);
    convoy__pool_free(pool, on_b, &stream_b);
    convoy__pool_free(pool, on_host, NULL);

    /* The steady state records events but creates none. */
    long created = atomic_load(&m->events_created);
    for (int i = 0; i < 100; ++i) {
        convoy__block *y = take(pool, bytes, &stream_a);
        convoy__pool_free(pool, y, &stream_a);
        complete_stream(m, &stream_a);
    }
    assert_true(atomic_load(&m->events_created) - created <= 1);
    complete_stream(m, &stream_b);
    assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.bytes_in_use, 0);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.backend_frees, s.backend_allocations);
    convoy__pool_destroy(pool);
}

static void test_stream_reuse_small(void **state)
{
    check_stream_reuse(*state, 4096);
}

static void test_stream_reuse_large(void **state)
{
    check_stream_reuse(*state, 5 * MIB);
}

/* ---- the limit and backend failures --------------------------------------- */

static void test_limit(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 8 * MIB, 0);
    assert_int_equal(convoy__pool_available(pool), 8 * MIB);
    convoy__block *a = take(pool, 3 * MIB, NULL), *b = take(pool, 4 * MIB, NULL);
    assert_int_equal(convoy__pool_available(pool), 0);

    convoy__block *c = NULL;
    assert_int_equal(convoy__pool_alloc(pool, MIB, NULL, "tensor 1x1x512x512", &c),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_null(c);
    const char *msg = convoy__error_text();
    assert_contains(msg, "out of memory allocating 1048576 bytes for tensor 1x1x512x512");
    assert_contains(msg, "8388608 bytes in use");
    assert_contains(msg, "0 cached");
    assert_contains(msg, "limit 8388608");

    /* Once the user frees, the cached segment is released to make room. */
    convoy__pool_free(pool, b, NULL);
    assert_int_equal(stats_of(pool).bytes_cached, 4 * MIB);
    c = take(pool, MIB, NULL);
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.backend_frees, 1);
    assert_int_equal(s.bytes_in_use, 4 * MIB + MIB);
    assert_int_equal(s.bytes_cached, MIB); /* the rest of c's 2 MiB segment */

    assert_int_equal(convoy__pool_alloc(pool, 6 * MIB, &stream_a, "workspace", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_contains(convoy__error_text(), "6291456 bytes for workspace");
    convoy__pool_free(pool, a, &stream_a); /* pending on A: not releasable yet */
    assert_int_equal(convoy__pool_alloc(pool, 6 * MIB, NULL, "workspace", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    complete_stream(m, &stream_a);
    b = take(pool, 6 * MIB, NULL);
    s = stats_of(pool);
    assert_true(s.peak_bytes_in_use <= 8 * MIB);
    assert_true(s.bytes_in_use + s.bytes_cached <= 8 * MIB);
    assert_int_equal(s.bytes_in_use, 6 * MIB + MIB);
    convoy__pool_free(pool, b, NULL);
    convoy__pool_free(pool, c, NULL);
    assert_int_equal(convoy__pool_available(pool), 8 * MIB);
    convoy__pool_destroy(pool);

    /* Under a limit below one segment, small requests get a segment of what is left. */
    pool = make_pool(m, MIB + 1000, 0);
    a = take(pool, 1000, NULL);
    b = take(pool, 5000, NULL);
    assert_int_equal(stats_of(pool).backend_allocations, 1);
    assert_int_equal(stats_of(pool).bytes_cached, MIB + 512 - 1024 - 5120);
    assert_int_equal(convoy__pool_alloc(pool, MIB, NULL, "x", &c), CONVOY_ERR_OUT_OF_MEMORY);
    convoy__pool_free(pool, a, NULL);
    convoy__pool_free(pool, b, NULL);
    c = take(pool, MIB, NULL);
    convoy__pool_free(pool, c, NULL);
    assert_true(stats_of(pool).peak_bytes_in_use <= MIB + 1000);
    convoy__pool_destroy(pool);
}

/* At the limit, a stream may take back a larger block it freed itself rather than fail; another
 * stream may not while the event is pending. */
static void test_limit_own_stream_fallback(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 8 * MIB, 0);
    convoy__block *a = take(pool, 8 * MIB, &stream_a), *b = NULL;
    void *ptr = a->ptr;
    convoy__pool_free(pool, a, &stream_a);
    assert_int_equal(convoy__pool_available(pool), 0); /* pending on A */
    assert_int_equal(convoy__pool_alloc(pool, 3 * MIB, &stream_b, "on B", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_int_equal(convoy__pool_alloc(pool, 3 * MIB, NULL, "on the host", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_contains(convoy__error_text(), "0 bytes in use, 8388608 cached, limit 8388608");
    a = take(pool, 3 * MIB, &stream_a);
    assert_ptr_equal(a->ptr, ptr);
    assert_int_equal(a->size, 8 * MIB);
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.bytes_in_use, 8 * MIB);
    assert_int_equal(s.requests, 4); /* two of them failed */
    assert_int_equal(s.cache_hits, 1);
    assert_int_equal(s.backend_allocations, 1);
    convoy__pool_free(pool, a, &stream_a);
    complete_stream(m, &stream_a);
    b = take(pool, 3 * MIB, &stream_b); /* released and replaced by a 4 MiB segment */
    assert_int_equal(b->size, 4 * MIB);
    assert_int_equal(stats_of(pool).backend_frees, 1);
    convoy__pool_free(pool, b, NULL);
    convoy__pool_destroy(pool);
}

static void test_backend_failure_retries(void **state)
{
    mock_backend *m = *state;
    atomic_store(&m->aligned, 1); /* no alignment probe among the counted calls */
    convoy__pool *pool = make_pool(m, 0, 0);
    convoy__block *a = take(pool, 4 * MIB, NULL), *b = take(pool, 512, NULL);
    convoy__pool_free(pool, a, NULL);
    convoy__pool_free(pool, b, NULL);
    assert_int_equal(stats_of(pool).bytes_cached, 6 * MIB);

    /* One failure: the cache goes back to the backend and the retry succeeds. */
    atomic_store(&m->fail_next, 1);
    long calls = atomic_load(&m->alloc_calls);
    a = take(pool, 8 * MIB, NULL);
    assert_int_equal(atomic_load(&m->alloc_calls) - calls, 2);
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.backend_frees, 2);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.bytes_in_use, 8 * MIB);

    /* Two failures: a clean out-of-memory error with the numbers and the backend's reason. */
    atomic_store(&m->fail_next, 2);
    b = NULL;
    assert_int_equal(convoy__pool_alloc(pool, 123456, &stream_a, "im2col buffer", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_null(b);
    const char *msg = convoy__error_text();
    assert_contains(msg, "out of memory allocating 123456 bytes for im2col buffer");
    assert_contains(msg, "8388608 bytes in use, 0 cached, no limit");
    assert_contains(msg, "mock device");
    s = stats_of(pool);
    assert_int_equal(s.requests, 4);
    assert_int_equal(s.bytes_in_use, 8 * MIB);
    convoy__pool_free(pool, a, NULL);
    assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
    assert_int_equal(stats_of(pool).bytes_cached, 0);
    convoy__pool_destroy(pool);
}

/* A fixed mix of sizes and streams; returns how many requests failed, all cleanly. */
static int run_sequence(mock_backend *m, convoy__pool *pool)
{
    static const size_t sizes[] = {100,     5000,  3 * MIB, 700 * 1024, 64 * MIB, 512,
                                   MIB + 1, 70000, 2 * MIB, 300,        9 * MIB,  MIB};
    enum { N = sizeof sizes / sizeof sizes[0] };
    convoy__block *blocks[2 * N] = {0};
    convoy__stream *streams[] = {NULL, &stream_a, &stream_b};
    int failures = 0;
    for (int round = 0; round < 2; ++round)
        for (int i = 0; i < N; ++i) {
            convoy__stream *s = streams[(i + round) % 3];
            convoy__block **slot = &blocks[round * N + i];
            convoy_status status = convoy__pool_alloc(pool, sizes[i], s, "sequence", slot);
            if (status != CONVOY_OK) {
                assert_int_equal(status, CONVOY_ERR_OUT_OF_MEMORY);
                assert_null(*slot);
                assert_contains(convoy__error_text(), "injected failure");
                failures++;
            } else if (i % 3 == 2) { /* give some back early, on their streams */
                convoy__pool_free(pool, *slot, s);
                *slot = NULL;
            }
        }
    for (int i = 0; i < 2 * N; ++i)
        if (blocks[i])
            convoy__pool_free(pool, blocks[i], blocks[i]->stream);
    complete_stream(m, &stream_a);
    complete_stream(m, &stream_b);
    return failures;
}

static void test_fail_alloc_at_walk(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 0, 0);
    assert_int_equal(run_sequence(m, pool), 0);
    long backend_allocations = (long)stats_of(pool).backend_allocations;
    convoy__pool_destroy(pool);
    assert_true(backend_allocations > 5);

    for (long n = 1; n <= backend_allocations + 2; ++n) {
        pool = make_pool(m, 0, n);
        int failures = run_sequence(m, pool);
        assert_int_equal(failures, n <= backend_allocations ? 1 : 0);
        convoy_memory_statistics s = stats_of(pool);
        assert_int_equal(s.bytes_in_use, 0);
        assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
        s = stats_of(pool);
        assert_int_equal(s.bytes_cached, 0);
        assert_int_equal(s.backend_frees, s.backend_allocations);
        convoy__pool_destroy(pool);
        assert_int_equal(atomic_load(&m->frees), atomic_load(&m->allocs));
    }
}

/* ---- the backend's scratch allocator ---------------------------------------- */

/* A backend's own scratch (timing buffers, library workspaces) through convoy__pool_scratch:
 * counted as in use, refused past the limit with the requester named, and served from a
 * released cache when only that makes room. Without the allocator it falls back to the
 * backend's mem_alloc, outside any accounting. */
static void test_scratch_allocator(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 8 * MIB, 0);
    m->base.scratch = convoy__pool_scratch(pool);
    convoy__scratch a = {NULL, NULL}, b = {NULL, NULL};
    assert_int_equal(convoy__scratch_alloc(&m->base, 3 * MIB, "timing input", &a), CONVOY_OK);
    assert_non_null(a.ptr);
    assert_non_null(a.handle);
    assert_int_equal((uintptr_t)a.ptr % 256, 0);
    memset(a.ptr, 0x5a, 3 * MIB);
    convoy_memory_statistics st = stats_of(pool);
    assert_int_equal(st.bytes_in_use, 4 * MIB); /* the large class rounds to 2 MiB */
    assert_int_equal(st.requests, 1);

    /* 4 MiB in use + 6 MiB > 8 MiB: refused, nothing held, the requester named. */
    b.ptr = &b;
    assert_int_equal(convoy__scratch_alloc(&m->base, 6 * MIB, "timing output of gemm", &b),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_ptr_equal(b.ptr, &b); /* untouched */
    assert_contains(convoy_last_error_message(), "timing output of gemm");
    assert_contains(convoy_last_error_message(), "limit 8388608");
    st = stats_of(pool);
    assert_int_equal(st.bytes_in_use, 4 * MIB);
    assert_true(st.peak_bytes_in_use <= 8 * MIB);

    /* Freed, the 4 MiB stay cached; 6 MiB fit only once the pool hands the cache back. */
    convoy__scratch_free(&m->base, &a);
    assert_null(a.ptr);
    assert_null(a.handle);
    st = stats_of(pool);
    assert_int_equal(st.bytes_in_use, 0);
    assert_int_equal(st.bytes_cached, 4 * MIB);
    assert_int_equal(convoy__scratch_alloc(&m->base, 6 * MIB, "timing output of gemm", &b),
                     CONVOY_OK);
    memset(b.ptr, 0xa5, 6 * MIB);
    st = stats_of(pool);
    assert_int_equal(st.backend_frees, 1);
    assert_int_equal(st.bytes_in_use, 6 * MIB);
    assert_true(st.peak_bytes_in_use <= 8 * MIB);
    convoy__scratch_free(&m->base, &b);
    convoy__scratch_free(&m->base, &b); /* nothing held: a no-op */

    /* No allocator installed: straight to the backend, the pool sees nothing. */
    memset(&m->base.scratch, 0, sizeof m->base.scratch);
    long allocs = atomic_load(&m->allocs);
    assert_int_equal(convoy__scratch_alloc(&m->base, 100, "loose", &a), CONVOY_OK);
    assert_null(a.handle);
    assert_int_equal(atomic_load(&m->allocs), allocs + 1);
    assert_int_equal(stats_of(pool).requests, 3);
    convoy__scratch_free(&m->base, &a);
    assert_int_equal(atomic_load(&m->frees), atomic_load(&m->allocs) - 1); /* pool's 6 MiB */
    convoy__pool_destroy(pool);
}

/* ---- trim and statistics ---------------------------------------------------- */

static void test_trim(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 0, 0);
    convoy__block *a = take(pool, 4 * MIB, NULL), *b = take(pool, 2000, NULL);
    convoy__block *c = take(pool, 3000, NULL), *d = take(pool, 10 * MIB, &stream_a);
    convoy__pool_free(pool, a, NULL);
    convoy__pool_free(pool, b, NULL);
    convoy__pool_free(pool, d, &stream_a);
    assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.backend_frees, 1); /* only a: c keeps its segment, d is pending */
    assert_int_equal(s.bytes_cached, 10 * MIB + 2 * MIB - 3072);
    complete_stream(m, &stream_a);
    convoy__pool_free(pool, c, NULL);
    long frees = atomic_load(&m->frees);
    assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
    s = stats_of(pool);
    assert_int_equal(s.backend_frees, 3);
    assert_int_equal(atomic_load(&m->frees) - frees, 2);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.bytes_in_use, 0);
    /* The pool still works after a trim. */
    a = take(pool, 100, &stream_b);
    convoy__pool_free(pool, a, &stream_b);
    convoy__pool_destroy(pool); /* with a pending block and event left */
}

static void test_stats_add_up(void **state)
{
    mock_backend *m = *state;
    convoy__pool *pool = make_pool(m, 0, 0);
    convoy__block *live[64] = {0};
    convoy__stream *streams[] = {NULL, &stream_a, &stream_b};
    unsigned seed = 12345;
    uint64_t requests = 0;
    for (int i = 0; i < 2000; ++i) {
        seed = seed * 1103515245u + 12345u;
        int slot = (int)((seed >> 8) % 64);
        convoy__stream *s = streams[(seed >> 20) % 3];
        if (live[slot]) {
            convoy__pool_free(pool, live[slot], s);
        } else {
            size_t bytes =
                (seed >> 4) % 8 == 0 ? 1 + (seed >> 6) % (6 * MIB) : 1 + (seed >> 6) % (64 * 1024);
            live[slot] = take(pool, bytes, s);
            requests++;
            continue;
        }
        live[slot] = NULL;
        if (i % 50 == 0) {
            complete_stream(m, &stream_a);
            complete_stream(m, &stream_b);
        }
        size_t in_use = 0;
        for (int k = 0; k < 64; ++k)
            in_use += live[k] ? live[k]->size : 0;
        convoy_memory_statistics st = stats_of(pool);
        assert_int_equal(st.bytes_in_use, in_use);
        assert_int_equal(st.requests, requests);
        assert_int_equal(st.requests, st.cache_hits + st.backend_allocations);
        assert_true(st.peak_bytes_in_use >= st.bytes_in_use);
        assert_int_equal(atomic_load(&m->allocs) - atomic_load(&m->frees),
                         (long)(st.backend_allocations - st.backend_frees));
    }
    for (int k = 0; k < 64; ++k)
        convoy__pool_free(pool, live[k], NULL);
    complete_stream(m, &stream_a);
    complete_stream(m, &stream_b);
    assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
    convoy_memory_statistics st = stats_of(pool);
    assert_int_equal(st.bytes_in_use + st.bytes_cached, 0);
    assert_true(st.cache_hits > st.requests / 2);
    convoy__pool_destroy(pool);
}

/* The pool's one mutex under several submitting and freeing threads (run under -fsanitize=thread).
 */
typedef struct worker_arg {
    mock_backend *m;
    convoy__pool *pool;
    convoy__stream stream;
    unsigned seed;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    convoy__block *live[8] = {0};
    for (int i = 0; i < 3000; ++i) {
        w->seed = w->seed * 1103515245u + 12345u;
        int slot = (int)((w->seed >> 8) % 8);
        convoy__stream *s = (w->seed >> 12) % 4 ? &w->stream : NULL;
        if (live[slot]) {
            convoy__pool_free(w->pool, live[slot], s);
            live[slot] = NULL;
        } else {
            size_t bytes = (w->seed >> 16) % 8 == 0 ? 3 * MIB : 1 + (w->seed >> 4) % 20000;
            if (convoy__pool_alloc(w->pool, bytes, s, "thread", &live[slot]) != CONVOY_OK)
                return "alloc failed";
            memset(live[slot]->ptr, i & 0xff, bytes);
        }
        if (i % 64 == 0)
            complete_stream(w->m, &w->stream);
    }
    for (int k = 0; k < 8; ++k)
        convoy__pool_free(w->pool, live[k], &w->stream);
    return NULL;
}

static void test_threads(void **state)
{
    mock_backend *m = *state;
    atomic_store(&m->aligned, 1);
    convoy__pool *pool = make_pool(m, 0, 0);
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    worker_arg args[THREADS];
    for (int i = 0; i < THREADS; ++i) {
        args[i] = (worker_arg){m, pool, {10 + i}, 77u * (unsigned)i + 1u};
        assert_int_equal(pthread_create(&threads[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; ++i) {
        void *result = NULL;
        pthread_join(threads[i], &result);
        assert_null(result);
    }
    for (int i = 0; i < THREADS; ++i)
        complete_stream(m, &args[i].stream);
    assert_int_equal(convoy__pool_trim(pool), CONVOY_OK);
    convoy_memory_statistics s = stats_of(pool);
    assert_int_equal(s.bytes_in_use, 0);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.requests, s.cache_hits + s.backend_allocations);
    convoy__pool_destroy(pool);
}

/* ---- workspace planning ---------------------------------------------------- */

static void test_workspace_plan(void **state)
{
    (void)state;
    int64_t chunk = -1;
    size_t bytes = 1;
    assert_int_equal(convoy__workspace_plan(100, 10, 8, 1000, &chunk, &bytes), CONVOY_OK);
    assert_int_equal(chunk, 8);
    assert_int_equal(bytes, 180);
    assert_int_equal(convoy__workspace_plan(100, 10, 1000, 1000, &chunk, &bytes), CONVOY_OK);
    assert_int_equal(chunk, 90);
    assert_int_equal(bytes, 1000);
    assert_int_equal(convoy__workspace_plan(100, 10, 1000, 109, &chunk, &bytes),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_contains(convoy__error_text(),
                    "workspace for one image needs 110 bytes but the workspace limit is 109");
    assert_int_equal(convoy__workspace_plan(100, 10, 1000, 110, &chunk, &bytes), CONVOY_OK);
    assert_int_equal(chunk, 1);
    assert_int_equal(bytes, 110);
    /* batch 0: nothing runs, no workspace whatever the limit and the formula */
    assert_int_equal(convoy__workspace_plan(500, 10, 0, 100, &chunk, &bytes), CONVOY_OK);
    assert_int_equal(chunk, 0);
    assert_int_equal(bytes, 0);
    assert_int_equal(convoy__workspace_plan(SIZE_MAX, SIZE_MAX, 0, 100, &chunk, &bytes), CONVOY_OK);
    assert_int_equal(bytes, 0);
    /* no per-image part: the whole batch */
    assert_int_equal(convoy__workspace_plan(64, 0, INT64_MAX, 64, &chunk, &bytes), CONVOY_OK);
    assert_int_equal(chunk, INT64_MAX);
    assert_int_equal(bytes, 64);
    assert_int_equal(convoy__workspace_plan(65, 0, 4, 64, &chunk, &bytes),
                     CONVOY_ERR_OUT_OF_MEMORY);
    /* overflow: products that would wrap are never formed */
    assert_int_equal(convoy__workspace_plan(0, SIZE_MAX / 2, INT64_MAX, SIZE_MAX, &chunk, &bytes),
                     CONVOY_OK);
    assert_int_equal(chunk, 2);
    assert_int_equal(bytes, SIZE_MAX - 1);
    assert_int_equal(convoy__workspace_plan(SIZE_MAX, 1, 3, SIZE_MAX, &chunk, &bytes),
                     CONVOY_ERR_OUT_OF_MEMORY);
    assert_contains(convoy__error_text(), "more than");
    assert_int_equal(convoy__workspace_plan(SIZE_MAX - 1, 1, 3, SIZE_MAX, &chunk, &bytes),
                     CONVOY_OK);
    assert_int_equal(chunk, 1);
    assert_int_equal(
        convoy__workspace_plan(0, (size_t)1 << 40, (int64_t)1 << 40, SIZE_MAX, &chunk, &bytes),
        CONVOY_OK);
    assert_int_equal(chunk, ((int64_t)1 << 24) - 1); /* SIZE_MAX / 2^40 */
    /* bad arguments leave the outputs alone */
    chunk = 7;
    assert_int_equal(convoy__workspace_plan(0, 1, -1, 10, &chunk, &bytes),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(chunk, 7);
    assert_int_equal(convoy__workspace_plan(0, 1, 1, 10, NULL, &bytes),
                     CONVOY_ERR_INVALID_ARGUMENT);
}

/* ---- staging ---------------------------------------------------------------- */

static void round_trip(mock_backend *m, convoy__staging *staging, size_t bytes)
{
    unsigned char *src = malloc(bytes + 1), *device = malloc(bytes + 1), *back = malloc(bytes + 1);
    assert_true(src && device && back);
    for (size_t i = 0; i < bytes; ++i)
        src[i] = (unsigned char)(i * 7 + 3);
    memset(device, 0, bytes);
    memset(back, 0, bytes);
    long copies = atomic_load(&m->copies), callbacks = atomic_load(&m->callbacks);
    size_t chunk = convoy__staging_chunk_bytes(staging);
    long chunks = (long)((bytes + chunk - 1) / chunk);
    void *native = &chunk; /* any pointer: it must reach every copy and callback */
    atomic_store(&m->copy_kind_mask, 0);
    assert_int_equal(convoy__staging_upload(staging, native, device, src, bytes), CONVOY_OK);
    assert_memory_equal(device, src, bytes);
    assert_int_equal(atomic_load(&m->copy_kind_mask), 1 << 0); /* host to device only */
    assert_ptr_equal(atomic_load(&m->last_native), native);
    atomic_store(&m->copy_kind_mask, 0);
    atomic_store(&m->last_native, NULL);
    assert_int_equal(convoy__staging_download(staging, native, back, device, bytes), CONVOY_OK);
    assert_memory_equal(back, src, bytes);
    assert_int_equal(atomic_load(&m->copy_kind_mask), 1 << 1); /* device to host only */
    assert_ptr_equal(atomic_load(&m->last_native), native);
    assert_int_equal(atomic_load(&m->copies) - copies, 2 * chunks);
    /* one marker per chunk each way, and the download's closing one */
    assert_int_equal(atomic_load(&m->callbacks) - callbacks, 2 * chunks + 1);
    free(src);
    free(device);
    free(back);
}

static void test_staging(void **state)
{
    mock_backend *m = *state;
    convoy__staging *staging = NULL;
    assert_int_equal(convoy__staging_create(&m->base, "t", 0, 2, &staging),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_create(&m->base, "t", 1000, 1, &staging),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_create(&m->base, "t", 1000, 2, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_null(staging);
    assert_int_equal(convoy__staging_create(&m->base, "t", 1000, 2, &staging), CONVOY_OK);
    assert_int_equal(convoy__staging_chunk_bytes(staging), 1000);
    assert_int_equal(convoy__staging_chunk_count(staging), 2);
    round_trip(m, staging, 4567); /* 4 whole chunks and a partial one */
    round_trip(m, staging, 3000); /* an exact multiple */
    round_trip(m, staging, 999);
    round_trip(m, staging, 1);
    long copies = atomic_load(&m->copies);
    char byte = 0;
    assert_int_equal(convoy__staging_upload(staging, NULL, NULL, NULL, 0), CONVOY_OK);
    assert_int_equal(atomic_load(&m->copies), copies);
    assert_int_equal(convoy__staging_upload(staging, NULL, NULL, &byte, 1),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_download(NULL, NULL, &byte, &byte, 1),
                     CONVOY_ERR_INVALID_ARGUMENT);
    convoy__staging_destroy(staging);
    convoy__staging_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cache_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_reuse_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_reuse_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_own_stream_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_failure_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_alloc_at_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scratch_allocator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_add_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test(test_workspace_plan),
        cmocka_unit_test_setup_teardown(test_staging, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
