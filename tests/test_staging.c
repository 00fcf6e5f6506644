/* Tests of memory/staging.c over a mock device whose stream is asynchronous, like a CUDA
 * stream: copies and host callbacks are queued and run in order by the stream's own thread,
 * each copy slowly, in pieces. As it runs them the mock checks, with data that differs at
 * every byte, that
 *   - chunks go through the slots in turn (chunk k through slot k mod N);
 *   - a slot holds its chunk, entirely, when its copy to the device starts and still does
 *     when the copy ends (it was filled before and not refilled during);
 *   - a slot's previous download chunk was drained into user memory before the next copy
 *     into the slot starts;
 *   - the memcpy of the next chunk overlaps the copy of this one (the copy waits, bounded,
 *     to see the next slot filled, or the previous chunk drained, while it runs);
 *   - user memory is read only once the stream reached the transfer, and a download is
 *     complete in user memory when the stream passes it;
 * and the tests check pinned buffers (one direct copy, no staging), odd sizes, two and three
 * slots, transfers queued back to back in both directions, and failed enqueues. */
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
#include <time.h>

#include "memory/staging.h"
#include "core/error_detail.h"

#define MAX_SLOTS 4
#define MAX_TRANSFERS 64

/* ---- data ----------------------------------------------------------------------------------- */

/* Byte i of pattern seed: no period a chunk size could line up with. */
static unsigned char pattern(unsigned seed, size_t i)
{
    uint64_t x = ((uint64_t)seed << 40) ^ (uint64_t)i;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 29;
    return (unsigned char)(x >> 24);
}

static unsigned char *patterned(size_t bytes, unsigned seed)
{
    unsigned char *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    for (size_t i = 0; i < bytes; ++i)
        p[i] = pattern(seed, i);
    return p;
}

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- the mock device --------------------------------------------------------------------------
 */

/* One staged transfer as the test enqueued it, so the stream thread can tell which user bytes
 * each chunk carries. */
typedef struct transfer {
    int upload;
    uint64_t first; /* its first chunk number */
    uint64_t chunks;
    size_t bytes;
    unsigned char *user;           /* the program's buffer */
    const unsigned char *expected; /* what must arrive: the device data for a download */
    unsigned char *device;
    int unchecked; /* a failed transfer: its copies are counted but carry no checked data */
} transfer;

typedef struct op {
    int is_copy;
    void *dst;
    const void *src;
    size_t bytes;
    convoy__copy_kind kind;
    void (*fn)(void *);
    void *arg;
    struct op *next;
} op;

typedef struct mock {
    convoy__backend base;
    convoy__staging *staging; /* set before anything is enqueued */
    int slots;                /* N, as the staging was created */
    long pause_us;            /* between the four pieces of a copy */
    size_t chunk_bytes;       /* as the staging was created */

    /* the stream */
    pthread_t thread;
    pthread_mutex_t lock; /* guards the queue, the transfer table and the counters below */
    pthread_cond_t cv;
    op *head, *tail;
    int stop;
    long enqueued, completed;

    void *chunk[MAX_SLOTS]; /* host_alloc'd slots, in allocation order */
    int chunk_allocs, chunk_frees;
    transfer transfers[MAX_TRANSFERS];
    int transfer_count;
    uint64_t staged_copies;      /* copies to or from a slot so far: the chunk number */
    uint64_t hole_at, hole_size; /* chunk numbers a failed transfer used without a copy */

    /* enqueue failures on demand: the n-th copy / callback enqueue from now fails */
    long fail_copy_in, fail_callback_in;
    long copies, callbacks;

    /* pinned memory: one registered range */
    const unsigned char *pinned;
    size_t pinned_bytes;

    /* what the stream thread saw */
    atomic_int errors;
    char first_error[256];
    long overlapped, overlap_chances;
} mock;

static void report(mock *m, const char *format, ...)
{
    if (atomic_fetch_add(&m->errors, 1) == 0) {
        va_list args;
        va_start(args, format);
        vsnprintf(m->first_error, sizeof m->first_error, format, args);
        va_end(args);
    }
}

static int slot_index(const mock *m, const void *p)
{
    for (int i = 0; i < m->slots; ++i)
        if (m->chunk[i] == p)
            return i;
    return -1;
}

/* The transfer chunk k belongs to, and its offset there; NULL when none (yet). */
static const transfer *transfer_of(mock *m, uint64_t k, size_t *offset)
{
    pthread_mutex_lock(&m->lock);
    const transfer *found = NULL;
    for (int i = 0; i < m->transfer_count && !found; ++i) {
        const transfer *t = &m->transfers[i];
        if (k >= t->first && k < t->first + t->chunks) {
            found = t;
            *offset = (size_t)(k - t->first) * m->chunk_bytes;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return found;
}

/* Waits (bounded) until the staging thread has begun (started) or finished (done) every job
 * of a chunk <= k; 1 when it has. Reads the staging's progress under its lock, so what the
 * job wrote is visible afterwards. */
static int wait_for_job(mock *m, uint64_t k, int finished, long timeout_us)
{
    for (long waited = 0;; waited += 20) {
        uint64_t started = 0, done = 0;
        convoy__staging_progress(m->staging, &started, &done);
        if ((finished ? done : started) > k)
            return 1;
        if (waited >= timeout_us)
            return 0;
        pause_us(20);
    }
}

/* A DMA copy, in four pieces with pauses, checked around against the staging's progress. */
static void run_copy(mock *m, const op *o)
{
    int src_slot = slot_index(m, o->src), dst_slot = slot_index(m, o->dst);
    if (src_slot < 0 && dst_slot < 0) { /* a direct copy of a pinned buffer */
        memcpy(o->dst, o->src, o->bytes);
        return;
    }
    int upload = src_slot >= 0;
    uint64_t slots = (uint64_t)m->slots;
    pthread_mutex_lock(&m->lock);
    if (m->hole_size && m->staged_copies == m->hole_at) {
        m->staged_copies += m->hole_size;
        m->hole_size = 0;
    }
    uint64_t k = m->staged_copies++;
    pthread_mutex_unlock(&m->lock);
    int slot = upload ? src_slot : dst_slot;
    if ((uint64_t)slot != k % slots)
        report(m, "chunk %llu went through slot %d, not %llu", (unsigned long long)k, slot,
               (unsigned long long)(k % slots));
    size_t offset = 0;
    const transfer *t = transfer_of(m, k, &offset);
    if (!t)
        report(m, "chunk %llu belongs to no transfer", (unsigned long long)k);
    else if (t->upload != upload)
        report(m, "chunk %llu copied the wrong way", (unsigned long long)k);
    int checked = t && !t->unchecked;

    uint64_t started = 0, done = 0;
    convoy__staging_progress(m->staging, &started, &done);
    if (upload && checked) {
        if (done <= k)
            report(m, "chunk %llu: copy started before its slot was filled", (unsigned long long)k);
        else if (memcmp(o->src, t->user + offset, o->bytes) != 0)
            report(m, "chunk %llu: the slot does not hold the chunk", (unsigned long long)k);
    }
    if (!upload && k >= slots && done <= k - slots)
        report(m, "chunk %llu: copy into the slot before chunk %llu was drained",
               (unsigned long long)k, (unsigned long long)(k - slots));

    size_t quarter = (o->bytes + 3) / 4;
    for (size_t at = 0; at < o->bytes; at += quarter) {
        size_t n = o->bytes - at < quarter ? o->bytes - at : quarter;
        memcpy((char *)o->dst + at, (const char *)o->src + at, n);
        if (m->pause_us)
            pause_us(m->pause_us);
    }

    convoy__staging_progress(m->staging, &started, &done);
    if (upload && started > k + slots)
        report(m, "chunk %llu: the slot was refilled before its copy completed",
               (unsigned long long)k);
    if (!upload && started > k)
        report(m, "chunk %llu: drained before its copy completed", (unsigned long long)k);
    if (upload && checked && memcmp(o->dst, t->user + offset, o->bytes) != 0)
        report(m, "chunk %llu: the slot changed during its copy", (unsigned long long)k);
    /* Within a transfer, the next fill (upload) finishes, or the previous drain (download)
     * begins, while this copy runs. (The next transfer's fills wait until the stream reaches
     * it.) */
    uint64_t other = upload ? k + 1 : k - 1;
    size_t other_offset = 0;
    if (!checked || (!upload && k == 0) || transfer_of(m, other, &other_offset) != t)
        return;
    pthread_mutex_lock(&m->lock);
    m->overlap_chances++;
    pthread_mutex_unlock(&m->lock);
    if (wait_for_job(m, other, upload, 2000000)) {
        pthread_mutex_lock(&m->lock);
        m->overlapped++;
        pthread_mutex_unlock(&m->lock);
    }
}

static void *stream_main(void *arg)
{
    mock *m = arg;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (!m->head && !m->stop)
            pthread_cond_wait(&m->cv, &m->lock);
        if (!m->head)
            break;
        op *o = m->head;
        m->head = o->next;
        if (!m->head)
            m->tail = NULL;
        pthread_mutex_unlock(&m->lock);
        if (o->is_copy)
            run_copy(m, o);
        else
            o->fn(o->arg);
        free(o);
        pthread_mutex_lock(&m->lock);
        m->completed++;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

static void push(mock *m, op *o)
{
    pthread_mutex_lock(&m->lock);
    if (m->tail)
        m->tail->next = o;
    else
        m->head = o;
    m->tail = o;
    m->enqueued++;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->lock);
}

/* Waits until the stream ran everything enqueued. */
static void drain(mock *m)
{
    pthread_mutex_lock(&m->lock);
    while (m->completed != m->enqueued)
        pthread_cond_wait(&m->cv, &m->lock);
    pthread_mutex_unlock(&m->lock);
}

static mock *as_mock(convoy__backend *be)
{
    return (mock *)be;
}

static int take_failure(long *countdown)
{
    return *countdown > 0 && --*countdown == 0;
}

static convoy_status mock_copy(convoy__backend *be, void *native_stream, void *dst, const void *src,
                               size_t bytes, convoy__copy_kind kind)
{
    mock *m = as_mock(be);
    assert_ptr_equal(native_stream, m);
    m->copies++;
    if (take_failure(&m->fail_copy_in))
        return convoy__error(CONVOY_ERR_BACKEND, "mock: injected copy failure");
    op *o = calloc(1, sizeof *o);
    assert_non_null(o);
    *o = (op){1, dst, src, bytes, kind, NULL, NULL, NULL};
    push(m, o);
    return CONVOY_OK;
}

static convoy_status mock_host_callback(convoy__backend *be, void *native_stream,
                                        void (*fn)(void *), void *arg)
{
    mock *m = as_mock(be);
    assert_ptr_equal(native_stream, m);
    m->callbacks++;
    if (take_failure(&m->fail_callback_in))
        return convoy__error(CONVOY_ERR_BACKEND, "mock: injected callback failure");
    op *o = calloc(1, sizeof *o);
    assert_non_null(o);
    *o = (op){0, NULL, NULL, 0, CONVOY__COPY_HOST_TO_DEVICE, fn, arg, NULL};
    push(m, o);
    return CONVOY_OK;
}

static convoy_status mock_host_alloc(convoy__backend *be, size_t bytes, void **out)
{
    mock *m = as_mock(be);
    assert_true(m->chunk_allocs < MAX_SLOTS);
    void *p = malloc(bytes);
    assert_non_null(p);
    memset(p, 0xee, bytes);
    m->chunk[m->chunk_allocs++] = p;
    *out = p;
    return CONVOY_OK;
}

static void mock_host_free(convoy__backend *be, void *ptr)
{
    as_mock(be)->chunk_frees++;
    free(ptr);
}

static int mock_host_is_pinned(convoy__backend *be, const void *ptr, size_t bytes)
{
    const mock *m = as_mock(be);
    const unsigned char *p = ptr;
    return m->pinned && p >= m->pinned && bytes <= m->pinned_bytes &&
           (size_t)(p - m->pinned) <= m->pinned_bytes - bytes;
}

static const convoy__backend_ops mock_ops = {
    .name = "mock",
    .device = CONVOY_DEVICE_CPU,
    .host_alloc = mock_host_alloc,
    .host_free = mock_host_free,
    .copy = mock_copy,
    .host_callback = mock_host_callback,
    .host_is_pinned = mock_host_is_pinned,
};

static mock *mock_create(void)
{
    mock *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->base.ops = &mock_ops;
    m->pause_us = 100;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cv, NULL);
    assert_int_equal(pthread_create(&m->thread, NULL, stream_main, m), 0);
    return m;
}

/* Frees the transfers' buffers once the stream ran them all: later chunks need no record of
 * earlier ones. */
static void mock_forget(mock *m)
{
    drain(m);
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->transfer_count; ++i) {
        free(m->transfers[i].user);
        free((void *)m->transfers[i].expected);
        free(m->transfers[i].device);
    }
    m->transfer_count = 0;
    pthread_mutex_unlock(&m->lock);
}

/* Stops the stream and checks that nothing leaked and nothing went wrong. */
static void mock_destroy(mock *m)
{
    drain(m);
    pthread_mutex_lock(&m->lock);
    m->stop = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    if (atomic_load(&m->errors))
        fail_msg("%d problem(s) seen by the stream; the first: %s", atomic_load(&m->errors),
                 m->first_error);
    assert_int_equal(m->chunk_frees, m->chunk_allocs);
    mock_forget(m);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static convoy__staging *staging_for(mock *m, size_t chunk_bytes, int slots)
{
    m->slots = slots;
    m->chunk_bytes = chunk_bytes;
    convoy__staging *s = NULL;
    assert_int_equal(convoy__staging_create(&m->base, "test staging", chunk_bytes, slots, &s),
                     CONVOY_OK);
    assert_int_equal(m->chunk_allocs, slots);
    m->staging = s;
    return s;
}

/* ---- transfers ---------------------------------------------------------------------------- */

static uint64_t chunks_of(const mock *m, size_t bytes)
{
    return (bytes + m->chunk_bytes - 1) / m->chunk_bytes;
}

/* Records a staged transfer that starts at chunk *next and enqueues it. */
static transfer *add_transfer(mock *m, int upload, size_t bytes, unsigned seed, uint64_t *next)
{
    pthread_mutex_lock(&m->lock);
    assert_true(m->transfer_count < MAX_TRANSFERS);
    transfer *t = &m->transfers[m->transfer_count++];
    pthread_mutex_unlock(&m->lock);
    t->upload = upload;
    t->first = *next;
    t->chunks = chunks_of(m, bytes);
    t->bytes = bytes;
    t->user = upload ? patterned(bytes, seed) : calloc(1, bytes ? bytes : 1);
    t->expected = upload ? NULL : patterned(bytes, seed);
    t->device = upload ? calloc(1, bytes ? bytes : 1) : patterned(bytes, seed);
    assert_true(t->user && t->device);
    *next += t->chunks;
    return t;
}

static convoy_status enqueue(mock *m, convoy__staging *s, const transfer *t)
{
    return t->upload ? convoy__staging_upload(s, m, t->device, t->user, t->bytes)
                     : convoy__staging_download(s, m, t->user, t->device, t->bytes);
}

/* A callback queued after a transfer: by then, in stream order, it must be complete. */
typedef struct completion {
    mock *m;
    const transfer *t;
} completion;

static void check_complete(void *arg)
{
    completion *c = arg;
    const transfer *t = c->t;
    int ok = t->upload ? memcmp(t->device, t->user, t->bytes) == 0
                       : memcmp(t->user, t->expected, t->bytes) == 0;
    if (!ok)
        report(c->m, "a %s of %zu bytes was not complete when the stream passed it",
               t->upload ? "upload" : "download", t->bytes);
    free(c);
}

static void enqueue_completion_check(mock *m, const transfer *t)
{
    completion *c = malloc(sizeof *c);
    assert_non_null(c);
    *c = (completion){m, t};
    assert_int_equal(mock_host_callback(&m->base, m, check_complete, c), CONVOY_OK);
}

/* Round trips of odd sizes through N slots, each direction checked, rounds times; copies
 * pause pause_us between their pieces. */
static void round_trips(int slots, size_t chunk, long pause, int rounds)
{
    mock *m = mock_create();
    m->pause_us = pause;
    convoy__staging *s = staging_for(m, chunk, slots);
    const size_t sizes[] = {
        1, chunk - 1, chunk, chunk + 1, 2 * chunk + 3, 5 * chunk + 17, 3 * chunk, 9 * chunk + 1};
    uint64_t next = 0;
    for (size_t i = 0; i < rounds * sizeof sizes / sizeof sizes[0]; ++i) {
        for (int upload = 1; upload >= 0; --upload) {
            size_t bytes = sizes[i % (sizeof sizes / sizeof sizes[0])];
            const transfer *t = add_transfer(m, upload, bytes, (unsigned)(i * 2 + upload), &next);
            long callbacks = m->callbacks, copies = m->copies;
            assert_int_equal(enqueue(m, s, t), CONVOY_OK);
            /* a marker per chunk, and a closing one for a download */
            assert_int_equal(m->callbacks - callbacks, (long)t->chunks + !upload);
            assert_int_equal(m->copies - copies, (long)t->chunks);
            enqueue_completion_check(m, t);
            drain(m);
        }
        mock_forget(m);
    }
    assert_true(m->overlap_chances > 0);
    assert_int_equal(m->overlapped, m->overlap_chances);
    convoy__staging_destroy(s);
    mock_destroy(m);
}

static void test_round_trips_two_slots(void **state)
{
    (void)state;
    round_trips(2, 1001, 100, 1);
}

static void test_round_trips_three_slots(void **state)
{
    (void)state;
    round_trips(3, 1001, 100, 1);
}

/* Large chunks and copies without pauses: a drain takes as long as the next copy, so a copy
 * into a slot that did not wait for the slot's drain would be caught. */
static void test_round_trips_large_chunks(void **state)
{
    (void)state;
    round_trips(2, (size_t)256 << 10, 0, 4);
}

/* Many transfers in both directions queued before the stream runs any: chunk numbering,
 * slot turns and the drain-before-refill rule hold across transfer boundaries. */
static void test_back_to_back(void **state)
{
    (void)state;
    mock *m = mock_create();
    const size_t chunk = 512;
    convoy__staging *s = staging_for(m, chunk, 2);
    uint64_t next = 0;
    const size_t sizes[] = {3 * chunk + 5, 700, chunk, 1, 4 * chunk, 2 * chunk - 1};
    for (int round = 0; round < 2; ++round)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
            int upload = (int)((i + (size_t)round) % 2);
            const transfer *t = add_transfer(m, upload, sizes[i], (unsigned)(100 + i), &next);
            assert_int_equal(enqueue(m, s, t), CONVOY_OK);
            enqueue_completion_check(m, t);
        }
    drain(m);
    convoy__staging_destroy(s);
    mock_destroy(m);
}

/* User memory is read in stream order: an earlier task on the stream that writes the upload's
 * source (here a slow callback queued first) is seen by the upload, however long it takes. */
typedef struct producer {
    unsigned char *user;
    size_t bytes;
    unsigned seed;
} producer;

static void produce(void *arg)
{
    producer *p = arg;
    pause_us(20000);
    for (size_t i = 0; i < p->bytes; ++i)
        p->user[i] = pattern(p->seed, i);
}

static void test_reads_in_stream_order(void **state)
{
    (void)state;
    mock *m = mock_create();
    convoy__staging *s = staging_for(m, 256, 2);
    uint64_t next = 0;
    transfer *t = add_transfer(m, 1, 256 * 4 + 9, 7, &next);
    memset(t->user, 0, t->bytes); /* stale until the producer runs */
    producer p = {t->user, t->bytes, 7};
    assert_int_equal(mock_host_callback(&m->base, m, produce, &p), CONVOY_OK);
    assert_int_equal(enqueue(m, s, t), CONVOY_OK);
    drain(m);
    /* The producer wrote the same bytes the mock expects (seed 7). */
    unsigned char *want = patterned(t->bytes, 7);
    assert_memory_equal(t->device, want, t->bytes);
    free(want);
    convoy__staging_destroy(s);
    mock_destroy(m);
}

/* A page-locked buffer is copied directly: one copy from the user's own memory, no marker,
 * no chunk number used. One reaching past the pinned range is staged. */
static void test_pinned_buffers_skip_staging(void **state)
{
    (void)state;
    mock *m = mock_create();
    convoy__staging *s = staging_for(m, 100, 2);
    const size_t bytes = 1234;
    unsigned char *pinned = patterned(2 * bytes, 11);
    unsigned char *device = calloc(1, bytes), *back = calloc(1, bytes);
    assert_true(device && back);
    m->pinned = pinned;
    m->pinned_bytes = 2 * bytes;
    long copies = m->copies, callbacks = m->callbacks;
    assert_int_equal(convoy__staging_upload(s, m, device, pinned + 3, bytes), CONVOY_OK);
    assert_int_equal(convoy__staging_download(s, m, pinned + bytes, device, bytes), CONVOY_OK);
    assert_int_equal(m->copies - copies, 2);
    assert_int_equal(m->callbacks - callbacks, 0);
    drain(m);
    assert_int_equal(m->staged_copies, 0);
    unsigned char *want = patterned(2 * bytes, 11);
    assert_memory_equal(device, want + 3, bytes);
    assert_memory_equal(pinned + bytes, want + 3, bytes);
    /* Past the end of the pinned range: staged, chunk numbers from 0. */
    uint64_t next = 0;
    m->pinned_bytes = bytes;
    const transfer *t = add_transfer(m, 1, 3 * 100 + 1, 12, &next);
    assert_int_equal(mock_host_is_pinned(&m->base, t->user, t->bytes), 0);
    assert_int_equal(enqueue(m, s, t), CONVOY_OK);
    enqueue_completion_check(m, t);
    drain(m);
    assert_int_equal(m->staged_copies, 4);
    m->pinned = NULL;
    free(want);
    free(pinned);
    free(device);
    free(back);
    convoy__staging_destroy(s);
    mock_destroy(m);
}

/* A copy or marker that cannot be enqueued fails the transfer cleanly: the error comes back,
 * the stream runs what was enqueued without hanging, a failed download's user buffer is not
 * written once the call returned, and the transfers after it are right. Each case refuses the
 * at-th copy or marker enqueue of a four-chunk transfer (an upload enqueues marker, copy per
 * chunk; a download the same and a closing marker). */
static void test_failed_enqueues(void **state)
{
    (void)state;
    const size_t chunk = 300;
    for (int upload = 0; upload < 2; ++upload)
        for (int copy_fails = 0; copy_fails < 2; ++copy_fails)
            for (long at = 1; at <= 5; ++at) {
                mock *m = mock_create();
                convoy__staging *s = staging_for(m, chunk, 2);
                uint64_t next = 0;
                const transfer *good = add_transfer(m, upload, 2 * chunk + 1, 1, &next);
                assert_int_equal(enqueue(m, s, good), CONVOY_OK);
                enqueue_completion_check(m, good);

                int refused = copy_fails || upload ? at <= 4 : at <= 5;
                /* Copies that reach the stream, and chunk numbers used without one. */
                long copies = !refused ? 4 : copy_fails ? at - 1 : at <= 4 ? at - 1 : 4;
                transfer *bad = add_transfer(m, upload, 4 * chunk, 2, &next);
                if (!upload)
                    memset(bad->user, 0x11, bad->bytes);
                pthread_mutex_lock(&m->lock);
                bad->unchecked = refused;
                bad->chunks = (uint64_t)copies;
                m->hole_at = bad->first + (uint64_t)copies;
                m->hole_size = 4 - (uint64_t)copies;
                pthread_mutex_unlock(&m->lock);
                if (copy_fails)
                    m->fail_copy_in = at;
                else
                    m->fail_callback_in = at;
                convoy_status status = enqueue(m, s, bad);
                m->fail_copy_in = m->fail_callback_in = 0;
                assert_int_equal(status, refused ? CONVOY_ERR_BACKEND : CONVOY_OK);
                if (refused)
                    assert_non_null(strstr(convoy_last_error_message(), "injected"));
                else
                    enqueue_completion_check(m, bad);
                unsigned char *snapshot = malloc(bad->bytes);
                assert_non_null(snapshot);
                memcpy(snapshot, bad->user, bad->bytes);
                drain(m);
                if (refused && !upload)
                    assert_memory_equal(bad->user, snapshot, bad->bytes);
                free(snapshot);

                const transfer *after = add_transfer(m, !upload, 3 * chunk + 7, 4, &next);
                assert_int_equal(enqueue(m, s, after), CONVOY_OK);
                enqueue_completion_check(m, after);
                const transfer *again = add_transfer(m, upload, chunk + 2, 5, &next);
                assert_int_equal(enqueue(m, s, again), CONVOY_OK);
                enqueue_completion_check(m, again);
                drain(m);
                convoy__staging_destroy(s);
                mock_destroy(m);
            }
}

static void test_arguments(void **state)
{
    (void)state;
    mock *m = mock_create();
    convoy__staging *s = NULL;
    assert_int_equal(convoy__staging_create(&m->base, "t", 0, 2, &s), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_create(&m->base, "t", 64, 1, &s), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_create(NULL, "t", 64, 2, &s), CONVOY_ERR_INVALID_ARGUMENT);
    assert_null(s);
    s = staging_for(m, 64, 2);
    assert_int_equal(convoy__staging_chunk_bytes(s), 64);
    assert_int_equal(convoy__staging_chunk_count(s), 2);
    assert_int_equal(convoy__staging_chunk_count(NULL), 0);
    char byte = 0;
    long copies = m->copies, callbacks = m->callbacks;
    assert_int_equal(convoy__staging_upload(s, m, NULL, NULL, 0), CONVOY_OK);
    assert_int_equal(convoy__staging_download(s, m, NULL, NULL, 0), CONVOY_OK);
    assert_int_equal(m->copies, copies);
    assert_int_equal(m->callbacks, callbacks);
    assert_int_equal(convoy__staging_upload(s, m, NULL, &byte, 1), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_download(s, m, &byte, NULL, 1), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__staging_download(NULL, m, &byte, &byte, 1),
                     CONVOY_ERR_INVALID_ARGUMENT);
    convoy__staging_destroy(s);
    convoy__staging_destroy(NULL);
    mock_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_round_trips_two_slots),
        cmocka_unit_test(test_round_trips_three_slots),
        cmocka_unit_test(test_round_trips_large_chunks),
        cmocka_unit_test(test_back_to_back),
        cmocka_unit_test(test_reads_in_stream_order),
        cmocka_unit_test(test_pinned_buffers_skip_staging),
        cmocka_unit_test(test_failed_enqueues),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
