/* The scheduler's failure paths on the host backend with faults injected
 * under it: a task whose event wait or enqueue fails keeps its place in the
 * order and keeps its dependencies alive while its stream still waits on
 * them; concurrent waiters record a task's failure exactly once; and a fault
 * reported by an event query (as a CUDA device fault would be) fails the
 * dependants that have not run yet and every later submit. The injector
 * wraps the host backend's function table, so the real worker threads run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convoy.h"
#include "core/device.h"
#include "core/error_detail.h"
#include "runtime/runtime_int.h"
#include "scheduler/task_int.h"

/* ---- the fault injector -------------------------------------------------- */

#define GRAVEYARD_SIZE 4096

/* The host backend's table is one static object, so the wrapped copy is
 * built once and never changes: worker threads of a runtime a failed test
 * left behind may still read it. */
static const convoy__backend_ops *real_ops;
static convoy__backend_ops wrapped_ops;

typedef struct injector {
    pthread_mutex_t lock; /* guards everything below */
    convoy__backend *backend;
    convoy__event *fault_event; /* reports a device fault once complete */
    char fail_enqueue[64];      /* label of the task whose enqueue fails */
    int fail_waits;             /* the next this many stream waits fail */
    int fail_reserves;          /* the next this many stream reservations fail */
    int fail_records;           /* the next this many event records on a stream fail */
    convoy__event *graveyard[GRAVEYARD_SIZE]; /* destroyed events, freed at uninstall */
    int buried;
    int late_waits; /* stream waits that reached a destroyed event */
} injector;

static injector inj = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int is_buried(const convoy__event *event)
{
    for (int i = 0; i < inj.buried; ++i) {
        if (inj.graveyard[i] == event)
            return 1;
    }
    return 0;
}

/* Destroyed events are kept (not freed) so that a stream reaching a wait on
 * one is seen, not a use after free. */
static void inj_event_destroy(convoy__backend *be, convoy__event *event)
{
    pthread_mutex_lock(&inj.lock);
    if (inj.buried < GRAVEYARD_SIZE) {
        inj.graveyard[inj.buried++] = event;
        event = NULL;
    }
    pthread_mutex_unlock(&inj.lock);
    if (event)
        real_ops->event_destroy(be, event);
}

static int inj_event_query(convoy__backend *be, convoy__event *event, convoy_status *error)
{
    int done = real_ops->event_query(be, event, error);
    pthread_mutex_lock(&inj.lock);
    int fault = done && event == inj.fault_event;
    pthread_mutex_unlock(&inj.lock);
    if (fault && error)
        *error = convoy__error(CONVOY_ERR_BACKEND, "injected device fault (event query)");
    return done;
}

static convoy_status inj_event_synchronize(convoy__backend *be, convoy__event *event)
{
    convoy_status status = real_ops->event_synchronize(be, event);
    pthread_mutex_lock(&inj.lock);
    int fault = event == inj.fault_event;
    pthread_mutex_unlock(&inj.lock);
    if (fault)
        return convoy__error(CONVOY_ERR_BACKEND, "injected device fault (event synchronize)");
    return status;
}

/* A stream wait is a work item that checks the event is still alive when
 * the stream reaches it, then waits for it. */
static void checked_wait(void *arg, void *native_stream)
{
    convoy__event *event = arg;
    pthread_mutex_lock(&inj.lock);
    int late = is_buried(event);
    inj.late_waits += late;
    convoy__backend *be = inj.backend;
    pthread_mutex_unlock(&inj.lock);
    if (!late)
        (void)real_ops->event_synchronize(be, event);
}

static convoy_status inj_stream_wait_event(convoy__backend *be, convoy__stream *stream,
                                           convoy__event *event)
{
    pthread_mutex_lock(&inj.lock);
    int fail = inj.fail_waits > 0;
    inj.fail_waits -= fail;
    pthread_mutex_unlock(&inj.lock);
    if (fail)
        return convoy__error(CONVOY_ERR_BACKEND, "injected stream wait failure");
    if (!stream)
        return real_ops->stream_wait_event(be, stream, event);
    return real_ops->stream_enqueue(be, stream, checked_wait, event);
}

static convoy_status inj_stream_enqueue(convoy__backend *be, convoy__stream *stream,
                                        convoy__work_fn fn, void *arg)
{
    const convoy_task *task = arg;
    pthread_mutex_lock(&inj.lock);
    int fail = inj.fail_enqueue[0] && strcmp(task->label, inj.fail_enqueue) == 0;
    pthread_mutex_unlock(&inj.lock);
    if (fail)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "injected enqueue failure");
    return real_ops->stream_enqueue(be, stream, fn, arg);
}

static convoy_status inj_stream_reserve(convoy__backend *be, convoy__stream *stream, size_t entries)
{
    pthread_mutex_lock(&inj.lock);
    int fail = inj.fail_reserves > 0;
    inj.fail_reserves -= fail;
    pthread_mutex_unlock(&inj.lock);
    if (fail)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "injected queue reservation failure");
    return real_ops->stream_reserve(be, stream, entries);
}

static convoy_status inj_event_record(convoy__backend *be, convoy__event *event,
                                      convoy__stream *stream)
{
    pthread_mutex_lock(&inj.lock);
    int fail = stream && inj.fail_records > 0;
    inj.fail_records -= fail;
    pthread_mutex_unlock(&inj.lock);
    if (fail)
        return convoy__error(CONVOY_ERR_BACKEND, "injected event record failure");
    return real_ops->event_record(be, event, stream);
}

static void install(convoy_runtime *rt)
{
    if (!real_ops) {
        real_ops = rt->backend->ops;
        wrapped_ops = *real_ops;
        wrapped_ops.event_destroy = inj_event_destroy;
        wrapped_ops.event_query = inj_event_query;
        wrapped_ops.event_synchronize = inj_event_synchronize;
        wrapped_ops.stream_wait_event = inj_stream_wait_event;
        wrapped_ops.stream_enqueue = inj_stream_enqueue;
        wrapped_ops.stream_reserve = inj_stream_reserve;
        wrapped_ops.event_record = inj_event_record;
    }
    assert_ptr_equal(rt->backend->ops, real_ops);
    pthread_mutex_lock(&inj.lock);
    inj.backend = rt->backend;
    inj.fault_event = NULL;
    inj.fail_enqueue[0] = '\0';
    inj.fail_waits = 0;
    inj.fail_reserves = 0;
    inj.fail_records = 0;
    inj.buried = 0;
    inj.late_waits = 0;
    pthread_mutex_unlock(&inj.lock);
    /* No task exists yet, so no worker reads the pointer while it changes. */
    rt->backend->ops = &wrapped_ops;
}

/* After the runtime is gone: frees the kept events (host events need no
 * backend to be freed). */
static void uninstall(void)
{
    pthread_mutex_lock(&inj.lock);
    for (int i = 0; i < inj.buried; ++i)
        real_ops->event_destroy(NULL, inj.graveyard[i]);
    inj.buried = 0;
    pthread_mutex_unlock(&inj.lock);
}

static convoy_runtime *make_runtime(int streams)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = streams;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    install(rt);
    return rt;
}

/* The tensors vector() made, destroyed by finish() once their runtime is gone
 * (a handle held past the runtime is detached: destroying it then only frees
 * the handle). */
static convoy_tensor *made[64];
static int made_count;

static convoy_tensor *vector(convoy_runtime *rt, int64_t n)
{
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
    assert_true(made_count < (int)(sizeof made / sizeof made[0]));
    made[made_count++] = t;
    return t;
}

/* Destroys a tensor vector() made before its runtime goes. */
static void destroy_now(convoy_tensor *t)
{
    for (int i = 0; i < made_count; ++i) {
        if (made[i] == t)
            made[i] = made[--made_count];
    }
    convoy_tensor_destroy(t);
}

static void finish(convoy_runtime *rt)
{
    convoy_runtime_destroy(rt);
    while (made_count > 0)
        convoy_tensor_destroy(made[--made_count]);
}

/* ---- task bodies --------------------------------------------------------- */

typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
} gate;

/* Gates live on the heap: a failed assertion leaves the test function while
 * workers may still wait on them. */
static gate *gate_new(void)
{
    gate *g = calloc(1, sizeof *g);
    assert_non_null(g);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    return g;
}

static void gate_free(gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static convoy_status gate_fn(const convoy_task_context *ctx, void *user_data)
{
    gate *g = user_data;
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    for (size_t i = 0; i < ctx->count; ++i) {
        if (ctx->accesses[i].mode & CONVOY_WRITE)
            ctx->data[i][0] = 1.0f;
    }
    return CONVOY_OK;
}

static convoy_status touch_fn(const convoy_task_context *ctx, void *user_data)
{
    for (size_t i = 0; i < ctx->count; ++i) {
        if (ctx->accesses[i].mode & CONVOY_WRITE)
            ctx->data[i][0] += 1.0f;
    }
    return CONVOY_OK;
}

typedef struct delayed_open {
    gate *gate;
    int ms;
} delayed_open;

static void *open_later(void *arg)
{
    delayed_open *d = arg;
    usleep((useconds_t)d->ms * 1000);
    gate_open(d->gate);
    return NULL;
}

/* ---- a task that fails before it runs ------------------------------------ */

/* The enqueue of T fails after T's stream was told to wait for S: S must
 * stay alive until that stream has passed the wait, and T completes in its
 * place, failed, poisoning what it writes. */
static void test_dependencies_outlive_queued_waits(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *q = vector(rt, 4), *x = vector(rt, 4), *y = vector(rt, 4), *u = vector(rt, 4);
    gate *g1 = gate_new(), *g2 = gate_new();
    convoy_access wq = {q, CONVOY_WRITE}, wy = {y, CONVOY_WRITE}, wx = {x, CONVOY_WRITE};
    convoy_task *s = NULL, *t = NULL, *dl = NULL;
    /* Stream 0: Q (held), then D. Stream 1: S (held). */
    assert_int_equal(convoy_submit(rt, gate_fn, g1, &wq, 1, "Q", NULL), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, gate_fn, g2, &wy, 1, "S", &s), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &wx, 1, "D", NULL), CONVOY_OK);
    /* T follows D on stream 0 and waits there for S; its enqueue fails. */
    pthread_mutex_lock(&inj.lock);
    snprintf(inj.fail_enqueue, sizeof inj.fail_enqueue, "custom T");
    pthread_mutex_unlock(&inj.lock);
    convoy_access rw[2] = {{x, CONVOY_READ_WRITE}, {y, CONVOY_READ_WRITE}};
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, rw, 2, "T", &t), CONVOY_OK);
    pthread_mutex_lock(&inj.lock);
    inj.fail_enqueue[0] = '\0';
    pthread_mutex_unlock(&inj.lock);
    /* S finishes and nothing but T names it any more. */
    gate_open(g2);
    assert_int_equal(convoy_task_wait(s), CONVOY_OK);
    convoy_task_release(s);
    convoy_access wu = {u, CONVOY_WRITE};
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &wu, 1, "U", NULL), CONVOY_OK);
    /* Stream 0 moves on to T's wait for S. */
    gate_open(g1);
    float out[4] = {-1.0f, -1.0f, -1.0f, -1.0f};
    assert_int_equal(convoy_download(rt, x, out, 4, &dl), CONVOY_OK);
    assert_int_equal(convoy_task_wait(t), CONVOY_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(convoy_last_error_message(), "injected enqueue failure"));
    assert_int_equal(convoy_task_wait(dl), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_true(out[0] == -1.0f);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_ERR_OUT_OF_MEMORY);
    pthread_mutex_lock(&inj.lock);
    int late = inj.late_waits;
    pthread_mutex_unlock(&inj.lock);
    assert_int_equal(late, 0);
    convoy_task_release(t);
    convoy_task_release(dl);
    finish(rt);
    gate_free(g1);
    gate_free(g2);
    uninstall();
}

/* T's stream cannot be told to wait for S: T still completes only after S
 * did, fails with the wait's error, and what reads T's output fails with
 * CONVOY_ERR_DEPENDENCY_FAILED. */
static void test_failed_wait_keeps_order(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *y = vector(rt, 4), *p = vector(rt, 4);
    gate *gs = gate_new(), *gp = gate_new();
    convoy_access wy = {y, CONVOY_WRITE}, wp = {p, CONVOY_WRITE};
    convoy_task *s = NULL, *t = NULL, *l = NULL;
    assert_int_equal(convoy_submit(rt, gate_fn, gs, &wy, 1, "S", &s), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, gate_fn, gp, &wp, 1, "P", NULL), CONVOY_OK);
    pthread_mutex_lock(&inj.lock);
    inj.fail_waits = 1;
    pthread_mutex_unlock(&inj.lock);
    /* S opens a while after T's submit began. */
    delayed_open *later = calloc(1, sizeof *later);
    assert_non_null(later);
    *later = (delayed_open){gs, 100};
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_later, later), 0);
    convoy_access tr[2] = {{y, CONVOY_READ}, {p, CONVOY_READ_WRITE}};
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, tr, 2, "T", &t), CONVOY_OK);
    /* Whenever T reads as done, S is done. */
    int t_done = convoy_task_done(t), s_done = convoy_task_done(s);
    assert_true(!t_done || s_done);
    convoy_access lp = {p, CONVOY_READ_WRITE};
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &lp, 1, "L", &l), CONVOY_OK);
    gate_open(gp);
    pthread_join(opener, NULL);
    assert_int_equal(convoy_task_wait(s), CONVOY_OK);
    assert_int_equal(convoy_task_wait(t), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "injected stream wait failure"));
    assert_int_equal(convoy_task_wait(l), CONVOY_ERR_DEPENDENCY_FAILED);
    convoy_task_release(s);
    convoy_task_release(t);
    convoy_task_release(l);
    finish(rt);
    gate_free(gs);
    gate_free(gp);
    free(later);
    uninstall();
}

/* No room can be made on T's stream: nothing of T is queued, T completes
 * failed on the submitting thread once S has, and a later write recovers. */
static void test_failed_reservation_keeps_order(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *y = vector(rt, 4);
    gate *gs = gate_new();
    convoy_access wy = {y, CONVOY_WRITE}, rwy = {y, CONVOY_READ_WRITE};
    convoy_task *s = NULL, *t = NULL, *dl = NULL, *up = NULL, *dl2 = NULL;
    assert_int_equal(convoy_submit(rt, gate_fn, gs, &wy, 1, "S", &s), CONVOY_OK);
    pthread_mutex_lock(&inj.lock);
    inj.fail_reserves = 1;
    pthread_mutex_unlock(&inj.lock);
    delayed_open *later = calloc(1, sizeof *later);
    assert_non_null(later);
    *later = (delayed_open){gs, 100};
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_later, later), 0);
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &rwy, 1, "T", &t), CONVOY_OK);
    assert_int_equal(convoy_task_done(t), 1);
    assert_int_equal(convoy_task_done(s), 1);
    float out[4] = {-1.0f, -1.0f, -1.0f, -1.0f}, in[4] = {5.0f, 5.0f, 5.0f, 5.0f};
    assert_int_equal(convoy_download(rt, y, out, 4, &dl), CONVOY_OK);
    assert_int_equal(convoy_task_wait(t), CONVOY_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(convoy_last_error_message(), "injected queue reservation failure"));
    assert_int_equal(convoy_task_wait(dl), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_true(out[0] == -1.0f);
    assert_int_equal(convoy_upload(rt, y, in, 4, &up), CONVOY_OK);
    assert_int_equal(convoy_download(rt, y, out, 4, &dl2), CONVOY_OK);
    assert_int_equal(convoy_task_wait(dl2), CONVOY_OK);
    assert_true(out[0] == 5.0f);
    pthread_join(opener, NULL);
    convoy_task *tasks[5] = {s, t, dl, up, dl2};
    for (int i = 0; i < 5; ++i)
        convoy_task_release(tasks[i]);
    finish(rt);
    uninstall();
    gate_free(gs);
    free(later);
}

/* T's completion event cannot be recorded: on a device that is the device
 * failing, so T fails with it, the fault is latched, and T's event (which
 * reads as complete) at least follows T's dependencies. */
static void test_failed_record_is_a_fault(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *y = vector(rt, 4), *z = vector(rt, 4);
    gate *gs = gate_new();
    convoy_access wy = {y, CONVOY_WRITE}, ry = {y, CONVOY_READ}, wz = {z, CONVOY_WRITE};
    convoy_task *s = NULL, *t = NULL;
    assert_int_equal(convoy_submit(rt, gate_fn, gs, &wy, 1, "S", &s), CONVOY_OK);
    pthread_mutex_lock(&inj.lock);
    inj.fail_records = 1;
    pthread_mutex_unlock(&inj.lock);
    delayed_open *later = calloc(1, sizeof *later);
    assert_non_null(later);
    *later = (delayed_open){gs, 100};
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_later, later), 0);
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &ry, 1, "T", &t), CONVOY_OK);
    assert_int_equal(convoy_task_done(s), 1);
    assert_int_equal(convoy_task_wait(t), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "injected event record failure"));
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &wz, 1, "U", NULL), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "custom T"));
    pthread_join(opener, NULL);
    convoy_task_release(s);
    convoy_task_release(t);
    finish(rt);
    uninstall();
    gate_free(gs);
    free(later);
}

/* ---- one failure per task, however many threads see it ------------------- */

typedef struct waiter {
    convoy_task *task;
    convoy_status status;
    char message[256];
} waiter;

static void *wait_for_task(void *arg)
{
    waiter *w = arg;
    w->status = convoy_task_wait(w->task);
    snprintf(w->message, sizeof w->message, "%s", convoy_last_error_message());
    return NULL;
}

static void test_concurrent_waiters_share_one_failure(void **state)
{
    for (int round = 0; round < 20; ++round) {
        convoy_runtime *rt = make_runtime(2);
        convoy_tensor *y = vector(rt, 4), *other = vector(rt, 4);
        gate *g = gate_new();
        convoy_access wy = {y, CONVOY_WRITE};
        convoy_task *s = NULL;
        assert_int_equal(convoy_submit(rt, gate_fn, g, &wy, 1, "S", &s), CONVOY_OK);
        pthread_mutex_lock(&inj.lock);
        inj.fault_event = s->event;
        pthread_mutex_unlock(&inj.lock);
        enum { WAITERS = 4 };
        waiter waiters[WAITERS];
        pthread_t threads[WAITERS];
        for (int i = 0; i < WAITERS; ++i) {
            waiters[i] = (waiter){s, CONVOY_OK, ""};
            assert_int_equal(pthread_create(&threads[i], NULL, wait_for_task, &waiters[i]), 0);
        }
        gate_open(g);
        /* Submits retire S and see its fault while the waiters see it too. */
        convoy_access acc = {other, CONVOY_READ_WRITE};
        for (int i = 0; i < 200; ++i) {
            if (convoy_submit(rt, touch_fn, NULL, &acc, 1, "poke", NULL) != CONVOY_OK)
                break;
            if (i % 8 == 7)
                usleep(200);
        }
        for (int i = 0; i < WAITERS; ++i)
            pthread_join(threads[i], NULL);
        convoy_status first = convoy_task_wait(s);
        char message[256];
        snprintf(message, sizeof message, "%s", convoy_last_error_message());
        assert_int_equal(first, CONVOY_ERR_BACKEND);
        assert_non_null(strstr(message, "injected device fault"));
        for (int i = 0; i < WAITERS; ++i) {
            assert_int_equal(waiters[i].status, first);
            assert_string_equal(waiters[i].message, message);
        }
        convoy_task_release(s);
        finish(rt);
        gate_free(g);
        uninstall();
    }
}

/* ---- device faults seen by an event query -------------------------------- */

static void test_async_fault_fails_dependants(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *x = vector(rt, 4), *g = vector(rt, 4), *z = vector(rt, 4);
    gate *g1 = gate_new(), *g2 = gate_new();
    convoy_access wx = {x, CONVOY_WRITE}, wg = {g, CONVOY_WRITE}, wz = {z, CONVOY_WRITE};
    convoy_task *a = NULL, *b = NULL, *d = NULL, *e = NULL;
    /* A on stream 0 and S on stream 1 are held; B follows S and waits for A. */
    assert_int_equal(convoy_submit(rt, gate_fn, g1, &wx, 1, "A", &a), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, gate_fn, g2, &wg, 1, "S", NULL), CONVOY_OK);
    convoy_access rb[2] = {{x, CONVOY_READ}, {g, CONVOY_READ_WRITE}};
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, rb, 2, "B", &b), CONVOY_OK);
    float out[4] = {-1.0f, -1.0f, -1.0f, -1.0f};
    assert_int_equal(convoy_download(rt, g, out, 4, &d), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &wz, 1, "E", &e), CONVOY_OK);

    /* A completes, and its event then reports a device fault. */
    pthread_mutex_lock(&inj.lock);
    inj.fault_event = a->event;
    pthread_mutex_unlock(&inj.lock);
    gate_open(g1);
    while (!convoy_task_done(a))
        usleep(1000);

    /* The next submit sees the fault: it fails fast, naming it. */
    convoy_access rz = {z, CONVOY_READ};
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &rz, 1, "C", NULL), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "injected device fault"));
    assert_non_null(strstr(convoy_last_error_message(), "custom A"));
    assert_int_equal(convoy_task_wait(a), CONVOY_ERR_BACKEND);

    /* B had not run yet: it fails as a dependant, and so does the download
     * of what it writes, which leaves the host buffer alone. */
    gate_open(g2);
    assert_int_equal(convoy_task_wait(b), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_non_null(strstr(convoy_last_error_message(), "custom A"));
    assert_int_equal(convoy_task_wait(d), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_true(out[0] == -1.0f);
    assert_int_equal(convoy_task_wait(e), CONVOY_OK);

    /* Every later submit fails fast and names the first fault, even after a
     * synchronize and after a second fault. */
    assert_int_not_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    pthread_mutex_lock(&inj.lock);
    inj.fault_event = e->event;
    pthread_mutex_unlock(&inj.lock);
    float host[4] = {0};
    assert_int_equal(convoy_upload(rt, z, host, 4, NULL), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "custom A"));
    assert_int_equal(convoy_download(rt, z, host, 4, NULL), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "custom A"));
    /* Destroying a tensor still works. */
    destroy_now(x);
    convoy_task *tasks[4] = {a, b, d, e};
    for (int i = 0; i < 4; ++i)
        convoy_task_release(tasks[i]);
    finish(rt);
    gate_free(g1);
    gate_free(g2);
    uninstall();
}

/* The faulted producer finished and left its stream's list before the fault
 * shows; a reader submitted afterwards finds it through the tensor and must
 * not take it for complete. */
static void test_fault_found_through_hazards(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *x = vector(rt, 4), *z = vector(rt, 4);
    convoy_access wx = {x, CONVOY_WRITE}, wz = {z, CONVOY_WRITE};
    convoy_task *a = NULL;
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &wx, 1, "A", &a), CONVOY_OK);
    assert_int_equal(convoy_task_wait(a), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &wz, 1, "retire", NULL), CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    pthread_mutex_lock(&inj.lock);
    inj.fault_event = a->event;
    pthread_mutex_unlock(&inj.lock);
    convoy_access rx = {x, CONVOY_READ};
    convoy_task *b = NULL;
    assert_int_equal(convoy_submit(rt, touch_fn, NULL, &rx, 1, "B", &b), CONVOY_ERR_BACKEND);
    assert_null(b);
    assert_non_null(strstr(convoy_last_error_message(), "injected device fault"));
    convoy_task_release(a);
    finish(rt);
    uninstall();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dependencies_outlive_queued_waits),
        cmocka_unit_test(test_failed_wait_keeps_order),
        cmocka_unit_test(test_failed_reservation_keeps_order),
        cmocka_unit_test(test_failed_record_is_a_fault),
        cmocka_unit_test(test_concurrent_waiters_share_one_failure),
        cmocka_unit_test(test_async_fault_fails_dependants),
        cmocka_unit_test(test_fault_found_through_hazards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
