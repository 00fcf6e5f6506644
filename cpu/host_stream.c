/* Host streams: one worker thread per stream draining a FIFO of work items,
 * event records and event waits, so the CPU runs exactly the schedule a GPU
 * would. Host events: an atomic state plus one condition variable shared by
 * the backend, so recording and completing an event costs no system call
 * unless somebody is blocked waiting. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/host_stream.h"
#include "core/error_detail.h"
#include "core/platform.h"

enum { EVENT_COMPLETE = 0, EVENT_PENDING = 1 };
enum { ENTRY_WORK, ENTRY_RECORD, ENTRY_WAIT };

/* Entries the worker takes out of the queue per lock acquisition. */
#define BATCH 64

/* Polls of an empty queue before the worker sleeps. Tasks often arrive a
 * microsecond apart; sleeping on the condition variable between them would
 * cost a futex wake per task, which dominates small tasks. Every 32nd poll
 * yields the core, so spinning never starves the submitting thread on a
 * machine with fewer cores than threads. */
#define SPIN_POLLS 2048

struct convoy__host_sync {
    pthread_mutex_t lock;
    pthread_cond_t completed;
    atomic_int waiters; /* threads blocked in sync_wait; completion broadcasts only then */
};

struct convoy__event {
    convoy__host_sync *sync;
    atomic_int state;
};

typedef struct entry {
    int kind;
    convoy__work_fn fn;
    void *arg;
    convoy__event *event;
} entry;

struct convoy__stream {
    convoy__host_sync *sync;
    pthread_t thread;
    /* lock guards ring, head, count, sleeping and stopping. The worker never
     * holds it while running work, so a work item may enqueue onto any
     * stream, this one included. */
    pthread_mutex_t lock;
    pthread_cond_t nonempty;
    entry *ring;
    size_t capacity, head, count;
    int sleeping, stopping;
    atomic_size_t queued; /* count, readable without the lock for polling */
    char name[64];
};

convoy_status convoy__host_sync_create(convoy__host_sync **out)
{
    convoy__host_sync *sync = calloc(1, sizeof *sync);
    if (!sync)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host backend: out of host memory");
    pthread_mutex_init(&sync->lock, NULL);
    pthread_cond_init(&sync->completed, NULL);
    atomic_init(&sync->waiters, 0);
    *out = sync;
    return CONVOY_OK;
}

void convoy__host_sync_destroy(convoy__host_sync *sync)
{
    if (!sync)
        return;
    pthread_cond_destroy(&sync->completed);
    pthread_mutex_destroy(&sync->lock);
    free(sync);
}

static void event_complete(convoy__event *event)
{
    convoy__host_sync *sync = event->sync;
    atomic_store(&event->state, EVENT_COMPLETE);
    /* A waiter increments waiters before it re-checks the state under the
     * lock, so either it sees EVENT_COMPLETE or we see it waiting. */
    if (atomic_load(&sync->waiters) > 0) {
        pthread_mutex_lock(&sync->lock);
        pthread_cond_broadcast(&sync->completed);
        pthread_mutex_unlock(&sync->lock);
    }
}

void convoy__host_event_synchronize(convoy__event *event)
{
    if (atomic_load(&event->state) == EVENT_COMPLETE)
        return;
    convoy__host_sync *sync = event->sync;
    pthread_mutex_lock(&sync->lock);
    atomic_fetch_add(&sync->waiters, 1);
    while (atomic_load(&event->state) != EVENT_COMPLETE)
        pthread_cond_wait(&sync->completed, &sync->lock);
    atomic_fetch_sub(&sync->waiters, 1);
    pthread_mutex_unlock(&sync->lock);
}

convoy_status convoy__host_event_create(convoy__host_sync *sync, convoy__event **out)
{
    convoy__event *event = malloc(sizeof *event);
    if (!event)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host backend: out of host memory");
    event->sync = sync;
    atomic_init(&event->state, EVENT_COMPLETE);
    *out = event;
    return CONVOY_OK;
}

void convoy__host_event_destroy(convoy__event *event)
{
    free(event);
}

int convoy__host_event_query(convoy__event *event)
{
    return atomic_load(&event->state) == EVENT_COMPLETE;
}

/* Grows the ring so that `entries` more fit. Called with s->lock held. */
static convoy_status make_room(convoy__stream *s, size_t entries)
{
    if (s->capacity - s->count >= entries)
        return CONVOY_OK;
    size_t capacity = s->capacity ? s->capacity * 2 : 256;
    while (capacity - s->count < entries)
        capacity *= 2;
    entry *ring = malloc(capacity * sizeof *ring);
    if (!ring)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "host stream %s: out of host memory growing its queue", s->name);
    for (size_t i = 0; i < s->count; ++i)
        ring[i] = s->ring[(s->head + i) % s->capacity];
    free(s->ring);
    s->ring = ring;
    s->capacity = capacity;
    s->head = 0;
    return CONVOY_OK;
}

static convoy_status push(convoy__stream *s, entry e)
{
    pthread_mutex_lock(&s->lock);
    convoy_status status = make_room(s, 1);
    if (status != CONVOY_OK) {
        pthread_mutex_unlock(&s->lock);
        return status;
    }
    s->ring[(s->head + s->count) % s->capacity] = e;
    s->count++;
    atomic_store_explicit(&s->queued, s->count, memory_order_release);
    if (s->sleeping)
        pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->lock);
    return CONVOY_OK;
}

static void run_entry(const entry *e)
{
    switch (e->kind) {
    case ENTRY_WORK:
        e->fn(e->arg, NULL);
        break;
    case ENTRY_RECORD:
        event_complete(e->event);
        break;
    case ENTRY_WAIT:
        convoy__host_event_synchronize(e->event);
        break;
    }
}

static void *worker_main(void *arg)
{
    convoy__stream *s = arg;
    entry batch[BATCH];
    convoy__name_this_thread(s->name);
    for (;;) {
        for (int poll = 0; poll < SPIN_POLLS; ++poll) {
            if (atomic_load_explicit(&s->queued, memory_order_acquire) > 0)
                break;
            if (poll % 32 == 31)
                sched_yield();
        }
        pthread_mutex_lock(&s->lock);
        while (s->count == 0 && !s->stopping) {
            s->sleeping = 1;
            pthread_cond_wait(&s->nonempty, &s->lock);
            s->sleeping = 0;
        }
        if (s->count == 0) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        size_t n = s->count < BATCH ? s->count : BATCH;
        for (size_t i = 0; i < n; ++i)
            batch[i] = s->ring[(s->head + i) % s->capacity];
        s->head = (s->head + n) % s->capacity;
        s->count -= n;
        atomic_store_explicit(&s->queued, s->count, memory_order_release);
        pthread_mutex_unlock(&s->lock);
        for (size_t i = 0; i < n; ++i)
            run_entry(&batch[i]);
    }
}

convoy_status convoy__host_stream_create(convoy__host_sync *sync, const char *name,
                                         convoy__stream **out)
{
    convoy__stream *s = calloc(1, sizeof *s);
    if (!s)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "host backend: out of host memory");
    s->sync = sync;
    snprintf(s->name, sizeof s->name, "%s", name ? name : "convoy stream");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->nonempty, NULL);
    atomic_init(&s->queued, 0);
    int rc = pthread_create(&s->thread, NULL, worker_main, s);
    if (rc != 0) {
        pthread_cond_destroy(&s->nonempty);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return convoy__error(CONVOY_ERR_BACKEND, "host backend: pthread_create for %s failed: %s",
                             name ? name : "stream", strerror(rc));
    }
    *out = s;
    return CONVOY_OK;
}

void convoy__host_stream_destroy(convoy__stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->nonempty);
    pthread_mutex_destroy(&s->lock);
    free(s->ring);
    free(s);
}

convoy_status convoy__host_stream_reserve(convoy__stream *s, size_t entries)
{
    if (!s)
        return CONVOY_OK;
    pthread_mutex_lock(&s->lock);
    convoy_status status = make_room(s, entries);
    pthread_mutex_unlock(&s->lock);
    return status;
}

convoy_status convoy__host_stream_enqueue(convoy__stream *s, convoy__work_fn fn, void *arg)
{
    if (!s) {
        fn(arg, NULL);
        return CONVOY_OK;
    }
    return push(s, (entry){ENTRY_WORK, fn, arg, NULL});
}

convoy_status convoy__host_stream_wait_event(convoy__stream *s, convoy__event *event)
{
    if (!s) {
        convoy__host_event_synchronize(event);
        return CONVOY_OK;
    }
    if (convoy__host_event_query(event))
        return CONVOY_OK;
    return push(s, (entry){ENTRY_WAIT, NULL, NULL, event});
}

convoy_status convoy__host_event_record(convoy__event *event, convoy__stream *s)
{
    if (!s) {
        event_complete(event);
        return CONVOY_OK;
    }
    atomic_store(&event->state, EVENT_PENDING);
    convoy_status status = push(s, (entry){ENTRY_RECORD, NULL, NULL, event});
    if (status != CONVOY_OK)
        atomic_store(&event->state, EVENT_COMPLETE);
    return status;
}
