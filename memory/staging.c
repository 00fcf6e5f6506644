/* Staged transfers (memory/staging.h): pinned host buffers are copied directly; pageable ones
 * pass through a ring of page-locked chunks, with every host-side memcpy run by the staging
 * object's own thread and the stream's DMA copies kept in step with it by small host-callback
 * markers.
 *
 * Chunks are numbered k = 0, 1, 2, ... over the object's life, in stream order, and chunk k
 * uses slot k mod N. Each staged chunk is a memcpy job for the thread (a fill, user memory
 * into the slot, for an upload; a drain, the slot into user memory, for a download) plus, on
 * the stream, a marker and a DMA copy:
 *
 *   upload chunk k:    [marker k: reached k; wait for jobs <= k]      [copy slot -> device]
 *   download chunk k:  [marker k: reached k; wait for jobs <= k - N]  [copy device -> slot]
 *   end of a download: [marker: copies <= last done; wait for jobs <= last]
 *
 * A marker for chunk k runs when the stream has finished everything before it, so every copy
 * of a chunk before k has completed: that is `passed`. The thread runs jobs strictly in chunk
 * order, and a job only once it is safe:
 *   fill j   once the stream reached j's transfer (its first marker ran: user memory is read
 *            in stream order, after the task's dependencies), and once chunk j - N, the
 *            slot's previous user, has had its copy complete (j < passed + N); a drain of
 *            j - N came earlier in chunk order, so it is done too;
 *   drain j  once copy j has completed into the slot (j < passed).
 * Markers wait only for jobs whose conditions their own run makes true (marker k sets passed
 * and reached to k), so they never wait on the stream behind them: a marker blocks the
 * backend's callback thread for at most the memcpy of the chunks before it. With two slots
 * the fill of chunk k + 1 (or the drain of k - 1) runs on the thread while chunk k's DMA
 * runs, and a slot is never refilled before its previous copy completed nor overwritten
 * before it was drained. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/staging.h"
#include "core/error_detail.h"
#include "core/platform.h"

/* One memcpy for the thread. Jobs are queued in chunk order; the thread frees them. */
typedef struct job {
    uint64_t seq;   /* the chunk */
    uint64_t first; /* the first chunk of its transfer */
    int drain;      /* 0: fill (user -> slot), 1: drain (slot -> user) */
    void *dst;
    const void *src;
    size_t bytes;
    struct job *next;
} job;

struct convoy__staging {
    convoy__backend *backend;
    size_t chunk_bytes;
    int chunk_count;
    void **chunks; /* chunk_count page-locked slots */
    char name[64];

    /* lock guards everything below; `changed` is broadcast whenever passed, reached, the
     * queue or the running job change. The lock is a leaf: under it there are only list
     * operations, never a backend call or a memcpy. */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t thread;
    int stop;
    uint64_t next_seq; /* the next chunk number to hand out */
    uint64_t passed;   /* every copy of a chunk < passed has completed */
    uint64_t reached;  /* the stream has reached chunk reached - 1 (0: none yet) */
    job *head, *tail;  /* queued jobs, in chunk order */
    int running;       /* the thread is copying chunk running_seq (its job is unlinked) */
    uint64_t running_seq;
    uint64_t started; /* every job of a chunk < started has begun (or was dropped) */
};

/* The lowest chunk whose job is not done yet (UINT64_MAX: none). Caller holds the lock. */
static uint64_t lowest_pending(const convoy__staging *s)
{
    if (s->running)
        return s->running_seq;
    return s->head ? s->head->seq : UINT64_MAX;
}

/* Caller holds the lock. */
static int job_ready(const convoy__staging *s, const job *j)
{
    if (j->drain)
        return j->seq < s->passed;
    return j->first < s->reached && j->seq < s->passed + (uint64_t)s->chunk_count;
}

static void *thread_main(void *arg)
{
    convoy__staging *s = arg;
    convoy__name_this_thread(s->name);
    pthread_mutex_lock(&s->lock);
    while (!s->stop) {
        job *j = s->head;
        if (!j || !job_ready(s, j)) {
            pthread_cond_wait(&s->changed, &s->lock);
            continue;
        }
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        s->running = 1;
        s->running_seq = j->seq;
        s->started = j->seq + 1;
        pthread_mutex_unlock(&s->lock);
        memcpy(j->dst, j->src, j->bytes);
        free(j);
        pthread_mutex_lock(&s->lock);
        s->running = 0;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- markers: the host callbacks on the stream --------------------------------------------- */

/* On CUDA a marker runs long after the work function returned, so each gets its own heap
 * record, freed by the marker itself. */
typedef struct marker {
    convoy__staging *staging;
    uint64_t passed;     /* every copy of a chunk < passed has completed when it runs */
    uint64_t reached;    /* ... and the stream has reached chunk reached - 1 */
    uint64_t wait_below; /* it returns once every job of a chunk < wait_below is done */
} marker;

static void run_marker(void *arg)
{
    marker *m = arg;
    convoy__staging *s = m->staging;
    pthread_mutex_lock(&s->lock);
    if (m->passed > s->passed)
        s->passed = m->passed;
    if (m->reached > s->reached)
        s->reached = m->reached;
    pthread_cond_broadcast(&s->changed);
    while (lowest_pending(s) < m->wait_below)
        pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    free(m);
}

static convoy_status enqueue_marker(convoy__staging *s, void *native_stream, uint64_t passed,
                                    uint64_t reached, uint64_t wait_below, const char *what)
{
    marker *m = malloc(sizeof *m);
    if (!m)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "staging %s: out of host memory for a chunk marker", what);
    *m = (marker){s, passed, reached, wait_below};
    convoy_status status = s->backend->ops->host_callback(s->backend, native_stream, run_marker, m);
    if (status != CONVOY_OK) {
        /* The callback was not enqueued, so nothing else will free the record. */
        free(m);
        convoy__error_prefix(what);
    }
    return status;
}

/* ---- jobs ------------------------------------------------------------------------------------ */

static size_t chunk_size(const convoy__staging *s, size_t bytes, size_t done)
{
    return bytes - done < s->chunk_bytes ? bytes - done : s->chunk_bytes;
}

static void *slot_of(const convoy__staging *s, uint64_t seq)
{
    return s->chunks[seq % (uint64_t)s->chunk_count];
}

/* Queues one job per chunk of a transfer of bytes (> 0) and returns the first chunk's
 * number. For a fill, user is the source; for a drain, the destination. Either every job is
 * queued or, without host memory for the records, none is. */
static convoy_status post_jobs(convoy__staging *s, int drain, void *user, size_t bytes,
                               const char *what, uint64_t *first)
{
    job *list = NULL, **link = &list;
    for (size_t done = 0; done < bytes; done += s->chunk_bytes) {
        job *j = calloc(1, sizeof *j);
        if (!j) {
            while (list) {
                job *next = list->next;
                free(list);
                list = next;
            }
            return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                                 "staging %s: out of host memory for chunk records", what);
        }
        j->drain = drain;
        j->bytes = chunk_size(s, bytes, done);
        *link = j;
        link = &j->next;
    }
    pthread_mutex_lock(&s->lock);
    *first = s->next_seq;
    size_t done = 0;
    job *last = NULL;
    for (job *j = list; j; j = j->next) {
        j->seq = s->next_seq++;
        j->first = *first;
        void *slot = slot_of(s, j->seq);
        j->dst = drain ? (char *)user + done : slot;
        j->src = drain ? (const void *)slot : (const char *)user + done;
        done += j->bytes;
        last = j;
    }
    if (s->tail)
        s->tail->next = list;
    else
        s->head = list;
    s->tail = last;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return CONVOY_OK;
}

/* After a failed enqueue: drops the transfer's jobs the thread has not started and waits for
 * one it is running, so no memcpy touches the user's memory once the caller returns. Markers
 * already enqueued that wait for dropped jobs are released. */
static void cancel_jobs(convoy__staging *s, uint64_t first)
{
    pthread_mutex_lock(&s->lock);
    job **link = &s->head, *last = NULL;
    while (*link) {
        job *j = *link;
        if (j->seq >= first) {
            *link = j->next;
            free(j);
        } else {
            last = j;
            link = &j->next;
        }
    }
    s->tail = last;
    while (s->running && s->running_seq >= first)
        pthread_cond_wait(&s->changed, &s->lock);
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* ---- the interface --------------------------------------------------------------------------- */

static void free_chunks(convoy__staging *s)
{
    for (int i = 0; i < s->chunk_count; ++i)
        if (s->chunks[i])
            s->backend->ops->host_free(s->backend, s->chunks[i]);
    free(s->chunks);
}

convoy_status convoy__staging_create(convoy__backend *backend, const char *name, size_t chunk_bytes,
                                     int chunk_count, convoy__staging **out)
{
    if (!backend || !backend->ops || !out || chunk_bytes == 0 || chunk_count < 2)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "staging_create: %s",
                             chunk_bytes == 0  ? "chunk_bytes is 0"
                             : chunk_count < 2 ? "fewer than two chunks"
                                               : "NULL backend or out");
    convoy_status status = CONVOY_ERR_OUT_OF_MEMORY;
    convoy__staging *s = calloc(1, sizeof *s);
    if (!s) {
        convoy__error(status, "out of host memory");
        goto fail_struct;
    }
    s->backend = backend;
    s->chunk_bytes = chunk_bytes;
    s->chunk_count = chunk_count;
    snprintf(s->name, sizeof s->name, "%s", name ? name : "convoy staging");
    s->chunks = calloc((size_t)chunk_count, sizeof *s->chunks);
    if (!s->chunks) {
        convoy__error(status, "out of host memory");
        goto fail_chunks;
    }
    for (int i = 0; i < chunk_count; ++i)
        if ((status = backend->ops->host_alloc(backend, chunk_bytes, &s->chunks[i])) != CONVOY_OK)
            goto fail_chunks;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        status = convoy__error(CONVOY_ERR_BACKEND, "cannot create a mutex");
        goto fail_chunks;
    }
    if (pthread_cond_init(&s->changed, NULL) != 0) {
        status = convoy__error(CONVOY_ERR_BACKEND, "cannot create a condition variable");
        goto fail_cond;
    }
    int rc = pthread_create(&s->thread, NULL, thread_main, s);
    if (rc != 0) {
        status = convoy__error(CONVOY_ERR_BACKEND, "pthread_create for %s failed: %s", s->name,
                               strerror(rc));
        goto fail_thread;
    }
    *out = s;
    return CONVOY_OK;

fail_thread:
    pthread_cond_destroy(&s->changed);
fail_cond:
    pthread_mutex_destroy(&s->lock);
fail_chunks:
    if (s->chunks)
        free_chunks(s);
    free(s);
fail_struct:
    convoy__error_prefix("staging_create");
    return status;
}

void convoy__staging_destroy(convoy__staging *staging)
{
    if (!staging)
        return;
    pthread_mutex_lock(&staging->lock);
    staging->stop = 1;
    pthread_cond_broadcast(&staging->changed);
    pthread_mutex_unlock(&staging->lock);
    pthread_join(staging->thread, NULL);
    /* Every transfer completed, so the queue is empty; a leftover would only be a job of a
     * transfer whose stream never ran. */
    while (staging->head) {
        job *next = staging->head->next;
        free(staging->head);
        staging->head = next;
    }
    pthread_cond_destroy(&staging->changed);
    pthread_mutex_destroy(&staging->lock);
    free_chunks(staging);
    free(staging);
}

size_t convoy__staging_chunk_bytes(const convoy__staging *staging)
{
    return staging ? staging->chunk_bytes : 0;
}

int convoy__staging_chunk_count(const convoy__staging *staging)
{
    return staging ? staging->chunk_count : 0;
}

void convoy__staging_progress(convoy__staging *staging, uint64_t *started, uint64_t *done)
{
    pthread_mutex_lock(&staging->lock);
    *started = staging->started;
    *done = lowest_pending(staging);
    pthread_mutex_unlock(&staging->lock);
}

static convoy_status check(const convoy__staging *staging, const void *dst, const void *src,
                           size_t bytes, const char *what)
{
    if (!staging || (bytes > 0 && (!dst || !src)))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "staging %s: NULL %s", what,
                             !staging ? "staging" : (!dst ? "destination" : "source"));
    return CONVOY_OK;
}

/* A page-locked host buffer needs no staging: one copy in stream order. */
static int pinned(const convoy__staging *s, const void *host, size_t bytes)
{
    const convoy__backend_ops *ops = s->backend->ops;
    return ops->host_is_pinned && ops->host_is_pinned(s->backend, host, bytes);
}

static convoy_status direct_copy(convoy__staging *s, void *native_stream, void *dst,
                                 const void *src, size_t bytes, convoy__copy_kind kind,
                                 const char *what)
{
    convoy_status status = s->backend->ops->copy(s->backend, native_stream, dst, src, bytes, kind);
    if (status != CONVOY_OK)
        convoy__error_prefix(what);
    return status;
}

convoy_status convoy__staging_upload(convoy__staging *staging, void *native_stream,
                                     void *device_dst, const void *host_src, size_t bytes)
{
    convoy_status status = check(staging, device_dst, host_src, bytes, "upload");
    if (status != CONVOY_OK || bytes == 0)
        return status;
    if (pinned(staging, host_src, bytes))
        return direct_copy(staging, native_stream, device_dst, host_src, bytes,
                           CONVOY__COPY_HOST_TO_DEVICE, "upload");
    uint64_t first = 0;
    status = post_jobs(staging, 0, (void *)(uintptr_t)host_src, bytes, "upload", &first);
    uint64_t seq = first;
    for (size_t done = 0; status == CONVOY_OK && done < bytes; done += staging->chunk_bytes) {
        status = enqueue_marker(staging, native_stream, seq, seq + 1, seq + 1, "upload");
        if (status == CONVOY_OK)
            status = direct_copy(staging, native_stream, (char *)device_dst + done,
                                 slot_of(staging, seq), chunk_size(staging, bytes, done),
                                 CONVOY__COPY_HOST_TO_DEVICE, "upload");
        seq++;
    }
    if (status != CONVOY_OK && seq != first)
        cancel_jobs(staging, first);
    return status;
}

convoy_status convoy__staging_download(convoy__staging *staging, void *native_stream,
                                       void *host_dst, const void *device_src, size_t bytes)
{
    convoy_status status = check(staging, host_dst, device_src, bytes, "download");
    if (status != CONVOY_OK || bytes == 0)
        return status;
    if (pinned(staging, host_dst, bytes))
        return direct_copy(staging, native_stream, host_dst, device_src, bytes,
                           CONVOY__COPY_DEVICE_TO_HOST, "download");
    uint64_t first = 0, slots = (uint64_t)staging->chunk_count;
    status = post_jobs(staging, 1, host_dst, bytes, "download", &first);
    uint64_t seq = first;
    for (size_t done = 0; status == CONVOY_OK && done < bytes; done += staging->chunk_bytes) {
        /* Before the copy into the slot: its previous contents (chunk seq - N) are drained. */
        uint64_t wait_below = seq + 1 > slots ? seq + 1 - slots : 0;
        status = enqueue_marker(staging, native_stream, seq, seq + 1, wait_below, "download");
        if (status == CONVOY_OK)
            status = direct_copy(staging, native_stream, slot_of(staging, seq),
                                 (const char *)device_src + done, chunk_size(staging, bytes, done),
                                 CONVOY__COPY_DEVICE_TO_HOST, "download");
        seq++;
    }
    /* The last chunk landed; the transfer is complete once every drain is. */
    if (status == CONVOY_OK)
        status = enqueue_marker(staging, native_stream, seq, seq, seq, "download");
    if (status != CONVOY_OK && seq != first)
        cancel_jobs(staging, first);
    return status;
}
