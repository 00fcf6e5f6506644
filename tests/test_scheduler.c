/* The scheduler on the host backend: results independent of the stream
 * count, real overlap, long chains, failure propagation and poisoning,
 * concurrent submission, deferred tensor destruction, task handles, and a
 * convolution that fails before it runs (its workspace cannot be allocated)
 * keeping its place in the order. */
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

static convoy_runtime *make_runtime(int streams)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = streams;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    return rt;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static convoy_tensor *vector(convoy_runtime *rt, int64_t n)
{
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
    return t;
}

/* ---- custom task bodies ---- */

/* accesses[0] read, accesses[1] read-write: b = 0.5 * b + a (elementwise on
 * the shorter of the two). */
static convoy_status mix_fn(const convoy_task_context *ctx, void *user_data)
{
    int64_t n = convoy_tensor_dim(ctx->accesses[0].tensor, 0);
    int64_t m = convoy_tensor_dim(ctx->accesses[1].tensor, 0);
    int64_t len = n < m ? n : m;
    for (int64_t i = 0; i < len; ++i)
        ctx->data[1][i] = 0.5f * ctx->data[1][i] + ctx->data[0][i];
    return CONVOY_OK;
}

static convoy_status sleep_fn(const convoy_task_context *ctx, void *user_data)
{
    usleep((useconds_t)(intptr_t)user_data * 1000);
    return CONVOY_OK;
}

static convoy_status fail_fn(const convoy_task_context *ctx, void *user_data)
{
    return CONVOY_ERR_TASK_FAILED;
}

static convoy_status increment_fn(const convoy_task_context *ctx, void *user_data)
{
    ctx->data[0][0] += 1.0f;
    return CONVOY_OK;
}

static convoy_status count_fn(const convoy_task_context *ctx, void *user_data)
{
    __atomic_fetch_add((int *)user_data, 1, __ATOMIC_RELAXED);
    return CONVOY_OK;
}

/* ---- (a) random graphs: identical results for 0, 1, 2 and 4 streams ---- */

#define GRAPH_VECTORS 6
#define GRAPH_STEPS 300

static unsigned next_random(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    return (*state >> 8) & 0xffffff;
}

/* Runs one seeded graph and returns a checksum-free copy of every result. */
static void run_graph(int streams, unsigned seed, float *results /* GRAPH_VECTORS*64 + 96*2 */)
{
    convoy_runtime *rt = make_runtime(streams);
    convoy_tensor *v[GRAPH_VECTORS];
    for (int i = 0; i < GRAPH_VECTORS; ++i)
        v[i] = vector(rt, 32 + 8 * i);
    const int64_t xd[4] = {1, 2, 5, 5}, wd[4] = {3, 2, 3, 3}, yd[4] = {1, 3, 3, 3};
    convoy_tensor *x = NULL, *w = NULL, *y = NULL;
    assert_int_equal(convoy_tensor_create(rt, 4, xd, &x), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, 4, wd, &w), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, 4, yd, &y), CONVOY_OK);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);

    /* Host buffers must stay untouched until their transfers finish, so
     * every upload gets its own. */
    float *sources = malloc(GRAPH_STEPS * 80 * sizeof *sources);
    assert_non_null(sources);
    unsigned state = seed;
    for (int i = 0; i < GRAPH_STEPS * 80; ++i)
        sources[i] = (float)(next_random(&state) % 2001) / 1000.0f - 1.0f;
    for (int i = 0; i < GRAPH_VECTORS; ++i)
        assert_int_equal(convoy_upload(rt, v[i], sources + i * 80, (size_t)(32 + 8 * i), NULL),
                         CONVOY_OK);
    assert_int_equal(convoy_upload(rt, x, sources + 500, 50, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, w, sources + 600, 54, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, y, sources + 700, 27, NULL), CONVOY_OK);
    for (int step = 0; step < GRAPH_STEPS; ++step) {
        unsigned r = next_random(&state);
        int a = (int)(r % GRAPH_VECTORS), b = (int)((r / 7) % GRAPH_VECTORS);
        switch (r % 5) {
        case 0:
            assert_int_equal(
                convoy_upload(rt, v[a], sources + step * 80, (size_t)(32 + 8 * a), NULL),
                CONVOY_OK);
            break;
        case 1:
        case 2:
            if (a == b)
                b = (b + 1) % GRAPH_VECTORS;
            {
                convoy_access acc[2] = {{v[a], CONVOY_READ}, {v[b], CONVOY_READ_WRITE}};
                assert_int_equal(convoy_submit(rt, mix_fn, NULL, acc, 2, "mix", NULL), CONVOY_OK);
            }
            break;
        case 3: {
            /* Feed a vector into the conv input, convolve, feed the output back. */
            convoy_access in[2] = {{v[a], CONVOY_READ}, {x, CONVOY_READ_WRITE}};
            assert_int_equal(convoy_submit(rt, mix_fn, NULL, in, 2, "to_x", NULL), CONVOY_OK);
            assert_int_equal(convoy_conv_forward(rt, &p, x, w, y, NULL), CONVOY_OK);
            convoy_access out[2] = {{y, CONVOY_READ}, {v[b], CONVOY_READ_WRITE}};
            assert_int_equal(convoy_submit(rt, mix_fn, NULL, out, 2, "from_y", NULL), CONVOY_OK);
            break;
        }
        default: {
            convoy_access acc[2] = {{v[a], CONVOY_READ}, {w, CONVOY_READ_WRITE}};
            assert_int_equal(convoy_submit(rt, mix_fn, NULL, acc, 2, "to_w", NULL), CONVOY_OK);
            break;
        }
        }
    }
    for (int i = 0; i < GRAPH_VECTORS; ++i)
        assert_int_equal(convoy_download(rt, v[i], results + i * 80, (size_t)(32 + 8 * i), NULL),
                         CONVOY_OK);
    assert_int_equal(convoy_download(rt, y, results + GRAPH_VECTORS * 80, 27, NULL), CONVOY_OK);
    assert_int_equal(convoy_download(rt, w, results + GRAPH_VECTORS * 80 + 27, 54, NULL),
                     CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    for (int i = 0; i < GRAPH_VECTORS; ++i)
        convoy_tensor_destroy(v[i]);
    convoy_tensor_destroy(x);
    convoy_tensor_destroy(w);
    convoy_tensor_destroy(y);
    convoy_runtime_destroy(rt);
    free(sources);
}

static void test_random_graphs_match_across_stream_counts(void **state)
{
    const size_t count = GRAPH_VECTORS * 80 + 27 + 54;
    float *reference = calloc(count, sizeof(float));
    float *got = calloc(count, sizeof(float));
    for (unsigned seed = 1; seed <= 4; ++seed) {
        memset(reference, 0, count * sizeof(float));
        run_graph(0, seed, reference);
        const int stream_counts[3] = {1, 2, 4};
        for (int s = 0; s < 3; ++s) {
            memset(got, 0, count * sizeof(float));
            run_graph(stream_counts[s], seed, got);
            if (memcmp(reference, got, count * sizeof(float)) != 0) {
                for (size_t i = 0; i < count; ++i) {
                    if (reference[i] != got[i]) {
                        print_error("seed %u streams %d: element %zu is %g, inline gave %g\n", seed,
                                    stream_counts[s], i, got[i], reference[i]);
                        break;
                    }
                }
                fail();
            }
        }
    }
    free(reference);
    free(got);
}

/* ---- (b) overlap ---- */

static void test_independent_tasks_overlap(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *a = vector(rt, 4), *b = vector(rt, 4);
    convoy_access acc_a = {a, CONVOY_READ_WRITE}, acc_b = {b, CONVOY_READ_WRITE};
    double start = now_ms();
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)50, &acc_a, 1, "sleep a", NULL),
                     CONVOY_OK);
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)50, &acc_b, 1, "sleep b", NULL),
                     CONVOY_OK);
    double submitted = now_ms();
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    double elapsed = now_ms() - start;
    /* Submission returned at once, and the two sleeps ran side by side. */
    assert_true(submitted - start < 25.0);
    assert_true(elapsed >= 49.0);
    assert_true(elapsed < 90.0);
    convoy_tensor_destroy(a);
    convoy_tensor_destroy(b);
    convoy_runtime_destroy(rt);
}

/* Dependent tasks do not overlap: a write after a read waits. */
static void test_dependent_tasks_serialise(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *a = vector(rt, 4);
    convoy_access read = {a, CONVOY_READ}, write = {a, CONVOY_WRITE};
    double start = now_ms();
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)30, &read, 1, "r", NULL),
                     CONVOY_OK);
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)30, &write, 1, "w", NULL),
                     CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    assert_true(now_ms() - start >= 59.0);
    convoy_tensor_destroy(a);
    convoy_runtime_destroy(rt);
}

/* ---- (c) a long chain ---- */

static void test_long_chain_completes_and_frees(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *t = vector(rt, 1);
    float zero = 0.0f, result = -1.0f;
    assert_int_equal(convoy_upload(rt, t, &zero, 1, NULL), CONVOY_OK);
    convoy_access acc = {t, CONVOY_READ_WRITE};
    for (int i = 0; i < 100000; ++i)
        assert_int_equal(convoy_submit(rt, increment_fn, NULL, &acc, 1, "inc", NULL), CONVOY_OK);
    convoy_task *download = NULL;
    assert_int_equal(convoy_download(rt, t, &result, 1, &download), CONVOY_OK);
    assert_int_equal(convoy_task_wait(download), CONVOY_OK);
    convoy_task_release(download);
    assert_true(result == 100000.0f);
    convoy_tensor_destroy(t);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    convoy_memory_statistics stats;
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    assert_int_equal(stats.bytes_in_use, 0);
    convoy_runtime_destroy(rt);
}

/* ---- (d) failure propagation through a diamond ---- */

static void diamond(int streams)
{
    convoy_runtime *rt = make_runtime(streams);
    convoy_tensor *t1 = vector(rt, 8), *t2 = vector(rt, 8), *t3 = vector(rt, 8),
                  *t4 = vector(rt, 8), *other = vector(rt, 8);
    float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1}, out[8];
    for (int i = 0; i < 8; ++i)
        out[i] = 42.0f;
    assert_int_equal(convoy_upload(rt, t2, ones, 8, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, t3, ones, 8, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, t4, ones, 8, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, other, ones, 8, NULL), CONVOY_OK);
    convoy_task *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *dl = NULL;
    convoy_access wa = {t1, CONVOY_WRITE};
    assert_int_equal(convoy_submit(rt, fail_fn, NULL, &wa, 1, "top", &a), CONVOY_OK);
    convoy_access ab[2] = {{t1, CONVOY_READ}, {t2, CONVOY_READ_WRITE}};
    convoy_access ac[2] = {{t1, CONVOY_READ}, {t3, CONVOY_READ_WRITE}};
    assert_int_equal(convoy_submit(rt, mix_fn, NULL, ab, 2, "left", &b), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, mix_fn, NULL, ac, 2, "right", &c), CONVOY_OK);
    int ran = 0;
    convoy_access ad[3] = {{t2, CONVOY_READ}, {t3, CONVOY_READ}, {t4, CONVOY_WRITE}};
    assert_int_equal(convoy_submit(rt, count_fn, &ran, ad, 3, "bottom", &d), CONVOY_OK);
    /* An unrelated task is not affected. */
    convoy_access ae = {other, CONVOY_READ_WRITE};
    assert_int_equal(convoy_submit(rt, count_fn, &ran, &ae, 1, "unrelated", &e), CONVOY_OK);
    assert_int_equal(convoy_download(rt, t4, out, 8, &dl), CONVOY_OK);

    assert_int_equal(convoy_task_wait(a), CONVOY_ERR_TASK_FAILED);
    assert_non_null(strstr(convoy_last_error_message(), "top"));
    assert_int_equal(convoy_task_wait(b), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_non_null(strstr(convoy_last_error_message(), "top"));
    assert_int_equal(convoy_task_wait(c), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_int_equal(convoy_task_wait(d), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_int_equal(convoy_task_wait(e), CONVOY_OK);
    assert_int_equal(convoy_task_wait(dl), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_int_equal(ran, 1);
    assert_true(out[0] == 42.0f); /* a poisoned download writes nothing */
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_ERR_TASK_FAILED);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);

    /* A successful write clears the poison. */
    convoy_task *fix = NULL, *dl2 = NULL;
    assert_int_equal(convoy_upload(rt, t4, ones, 8, &fix), CONVOY_OK);
    assert_int_equal(convoy_download(rt, t4, out, 8, &dl2), CONVOY_OK);
    assert_int_equal(convoy_task_wait(dl2), CONVOY_OK);
    assert_true(out[0] == 1.0f);
    convoy_task *tasks[8] = {a, b, c, d, e, dl, fix, dl2};
    for (int i = 0; i < 8; ++i) {
        assert_int_equal(convoy_task_done(tasks[i]), 1);
        convoy_task_release(tasks[i]);
    }
    convoy_tensor_destroy(t1);
    convoy_tensor_destroy(t2);
    convoy_tensor_destroy(t3);
    convoy_tensor_destroy(t4);
    convoy_tensor_destroy(other);
    convoy_runtime_destroy(rt);
}

static void test_failure_propagates_through_diamond(void **state)
{
    diamond(0);
    diamond(1);
    diamond(3);
}

/* ---- (e) several submitting threads ---- */

typedef struct thread_job {
    convoy_runtime *rt;
    convoy_tensor *shared;
    float result;
    int chain;
} thread_job;

static void *submit_chain(void *arg)
{
    thread_job *job = arg;
    int64_t one = 1;
    convoy_tensor *mine = NULL;
    if (convoy_tensor_create(job->rt, 1, &one, &mine) != CONVOY_OK)
        return NULL;
    float zero = 0.0f;
    convoy_status s = convoy_upload(job->rt, mine, &zero, 1, NULL);
    convoy_access acc[2] = {{mine, CONVOY_READ_WRITE}, {job->shared, CONVOY_READ}};
    for (int i = 0; i < job->chain && s == CONVOY_OK; ++i)
        s = convoy_submit(job->rt, increment_fn, NULL, acc, 2, "inc", NULL);
    convoy_task *dl = NULL;
    if (s == CONVOY_OK)
        s = convoy_download(job->rt, mine, &job->result, 1, &dl);
    if (s == CONVOY_OK)
        s = convoy_task_wait(dl);
    convoy_task_release(dl);
    convoy_tensor_destroy(mine);
    return NULL;
}

static void test_concurrent_submission(void **state)
{
    const int stream_counts[2] = {0, 2};
    for (int sc = 0; sc < 2; ++sc) {
        convoy_runtime *rt = make_runtime(stream_counts[sc]);
        convoy_tensor *shared = vector(rt, 4);
        float data[4] = {1, 2, 3, 4};
        assert_int_equal(convoy_upload(rt, shared, data, 4, NULL), CONVOY_OK);
        pthread_t threads[4];
        thread_job jobs[4];
        for (int i = 0; i < 4; ++i) {
            jobs[i] = (thread_job){rt, shared, -1.0f, 2000 + i};
            assert_int_equal(pthread_create(&threads[i], NULL, submit_chain, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; ++i) {
            pthread_join(threads[i], NULL);
            assert_true(jobs[i].result == (float)(2000 + i));
        }
        convoy_tensor_destroy(shared);
        convoy_runtime_destroy(rt);
    }
}

/* ---- lifetimes ---- */

/* Destroying a tensor while a slow task still reads it defers the free. */
static void test_tensor_destroy_waits_for_users(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *src = vector(rt, 16), *dst = vector(rt, 16);
    float data[16], out[16];
    for (int i = 0; i < 16; ++i)
        data[i] = (float)i;
    assert_int_equal(convoy_upload(rt, src, data, 16, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, dst, data, 16, NULL), CONVOY_OK);
    convoy_access slow = {src, CONVOY_READ};
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)20, &slow, 1, "slow", NULL),
                     CONVOY_OK);
    convoy_access acc[2] = {{src, CONVOY_READ}, {dst, CONVOY_READ_WRITE}};
    assert_int_equal(convoy_submit(rt, mix_fn, NULL, acc, 2, "mix", NULL), CONVOY_OK);
    convoy_tensor_destroy(src); /* returns at once */
    convoy_task *dl = NULL;
    assert_int_equal(convoy_download(rt, dst, out, 16, &dl), CONVOY_OK);
    assert_int_equal(convoy_task_wait(dl), CONVOY_OK);
    convoy_task_release(dl);
    for (int i = 0; i < 16; ++i)
        assert_true(out[i] == 1.5f * (float)i);
    convoy_tensor_destroy(dst);
    convoy_runtime_destroy(rt);
}

/* A handle kept past convoy_runtime_destroy still answers wait and done. */
static void test_handle_outlives_runtime(void **state)
{
    convoy_runtime *rt = make_runtime(2);
    convoy_tensor *t = vector(rt, 4);
    convoy_access acc = {t, CONVOY_WRITE};
    convoy_task *ok = NULL, *bad = NULL;
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)5, &acc, 1, "s", &ok),
                     CONVOY_OK);
    assert_int_equal(convoy_submit(rt, fail_fn, NULL, &acc, 1, "f", &bad), CONVOY_OK);
    convoy_runtime_destroy(rt);
    assert_int_equal(convoy_task_done(ok), 1);
    assert_int_equal(convoy_task_wait(ok), CONVOY_OK);
    assert_int_equal(convoy_task_wait(bad), CONVOY_ERR_TASK_FAILED);
    convoy_task_release(ok);
    convoy_task_release(bad);
    /* So does the tensor handle, detached: destroy just frees it. */
    assert_int_equal(convoy_tensor_dim(t, 0), 4);
    convoy_tensor_destroy(t);
}

static void test_task_api_errors(void **state)
{
    assert_int_equal(convoy_task_wait(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "task_wait"));
    assert_int_equal(convoy_task_done(NULL), 1);
    convoy_task_release(NULL);
    convoy_runtime_destroy(NULL);
    assert_int_equal(convoy_runtime_synchronize(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    convoy_runtime *rt = make_runtime(1);
    convoy_tensor *t = vector(rt, 4);
    /* A task submitted with no name gets the default label and runs. */
    convoy_access acc = {t, CONVOY_WRITE};
    convoy_task *task = NULL;
    assert_int_equal(convoy_submit(rt, sleep_fn, (void *)(intptr_t)1, &acc, 1, NULL, &task),
                     CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
    convoy_tensor_destroy(t);
    convoy_runtime_destroy(rt);
}

static convoy_status odd_status_fn(const convoy_task_context *ctx, void *user_data)
{
    return (convoy_status)1234;
}

static void test_custom_task_odd_status(void **state)
{
    convoy_runtime *rt = make_runtime(0);
    convoy_task *task = NULL;
    assert_int_equal(convoy_submit(rt, odd_status_fn, NULL, NULL, 0, "odd", &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_ERR_TASK_FAILED);
    assert_non_null(strstr(convoy_last_error_message(), "1234"));
    convoy_task_release(task);
    convoy_runtime_destroy(rt);
}

/* ---- a task that fails before it runs keeps its place ---- */

/* A custom task that blocks until the test opens its gate, then checks that
 * what it reads did not change while it ran. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
    int active;    /* the gated reader is inside its body */
    int changed;   /* the reader saw its input change under it */
    int violation; /* a writer ran while the reader was active */
} gate;

static gate *gate_new(void)
{
    gate *g = calloc(1, sizeof *g);
    assert_non_null(g);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    return g;
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void gate_free(gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static convoy_status gated_reader_fn(const convoy_task_context *ctx, void *user_data)
{
    gate *g = user_data;
    int64_t n = convoy_tensor_dim(ctx->accesses[0].tensor, 0);
    for (int i = 1; i < convoy_tensor_ndim(ctx->accesses[0].tensor); ++i)
        n *= convoy_tensor_dim(ctx->accesses[0].tensor, i);
    float *before = malloc((size_t)n * sizeof *before);
    if (!before)
        return CONVOY_ERR_OUT_OF_MEMORY;
    memcpy(before, ctx->data[0], (size_t)n * sizeof *before);
    pthread_mutex_lock(&g->lock);
    g->active = 1;
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    g->active = 0;
    g->changed = memcmp(before, ctx->data[0], (size_t)n * sizeof *before) != 0;
    pthread_mutex_unlock(&g->lock);
    free(before);
    return CONVOY_OK;
}

static convoy_status checked_writer_fn(const convoy_task_context *ctx, void *user_data)
{
    gate *g = user_data;
    pthread_mutex_lock(&g->lock);
    g->violation |= g->active;
    pthread_mutex_unlock(&g->lock);
    ctx->data[0][0] = 7.0f;
    return CONVOY_OK;
}

/* Waits up to ms for the task to complete; returns whether it did. */
static int done_within(convoy_task *task, double ms)
{
    double start = now_ms();
    while (!convoy_task_done(task) && now_ms() - start < ms)
        usleep(1000);
    return convoy_task_done(task);
}

/* A convolution whose workspace cannot be allocated (the second backend
 * allocation: the first is the small-tensor segment, the second the
 * multi-megabyte im2col buffer) fails at submit time, before it runs. */
typedef struct early_failure {
    convoy_runtime *rt;
    convoy_tensor *x, *w, *y;
    convoy_conv_params p;
    float *x_host, *w_host, *y_host;
    size_t y_count;
} early_failure;

static void early_failure_setup(early_failure *e)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 2;
    o.exclude = "direct,1x1,onednn,winograd";
    o.test_fail_alloc = 2;
    assert_int_equal(convoy_runtime_create(&o, &e->rt), CONVOY_OK);
    const int64_t xd[4] = {1, 4, 128, 128}, wd[4] = {4, 4, 3, 3}, yd[4] = {1, 4, 126, 126};
    assert_int_equal(convoy_tensor_create(e->rt, 4, xd, &e->x), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(e->rt, 4, wd, &e->w), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(e->rt, 4, yd, &e->y), CONVOY_OK);
    assert_int_equal(convoy_conv_params_init(&e->p, 2), CONVOY_OK);
    e->y_count = 4 * 126 * 126;
    e->x_host = calloc(4 * 128 * 128, sizeof(float));
    e->w_host = calloc(4 * 4 * 3 * 3, sizeof(float));
    e->y_host = malloc(e->y_count * sizeof(float));
    assert_non_null(e->x_host);
    assert_non_null(e->w_host);
    assert_non_null(e->y_host);
    for (size_t i = 0; i < e->y_count; ++i)
        e->y_host[i] = (float)(i % 251);
    assert_int_equal(convoy_upload(e->rt, e->x, e->x_host, 4 * 128 * 128, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(e->rt, e->w, e->w_host, 4 * 4 * 3 * 3, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(e->rt, e->y, e->y_host, e->y_count, NULL), CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(e->rt), CONVOY_OK);
}

static void early_failure_teardown(early_failure *e)
{
    convoy_runtime_destroy(e->rt);
    convoy_tensor_destroy(e->x);
    convoy_tensor_destroy(e->w);
    convoy_tensor_destroy(e->y);
    free(e->x_host);
    free(e->w_host);
    free(e->y_host);
}

/* A later writer of the failed convolution's output still waits for the
 * readers before it. */
static void test_early_failure_keeps_write_after_read(void **state)
{
    early_failure e;
    early_failure_setup(&e);
    gate *g = gate_new();
    convoy_task *reader = NULL, *conv = NULL, *download = NULL, *writer = NULL;
    convoy_access read_y = {e.y, CONVOY_READ}, write_y = {e.y, CONVOY_WRITE};
    assert_int_equal(convoy_submit(e.rt, gated_reader_fn, g, &read_y, 1, "reader", &reader),
                     CONVOY_OK);
    assert_int_equal(convoy_conv_forward(e.rt, &e.p, e.x, e.w, e.y, &conv), CONVOY_OK);
    float *out = malloc(e.y_count * sizeof *out);
    assert_non_null(out);
    out[0] = -1.0f;
    assert_int_equal(convoy_download(e.rt, e.y, out, e.y_count, &download), CONVOY_OK);
    assert_int_equal(convoy_submit(e.rt, checked_writer_fn, g, &write_y, 1, "writer", &writer),
                     CONVOY_OK);
    /* The writer must not finish while the reader holds the gate. */
    assert_false(done_within(writer, 200.0));
    gate_open(g);
    assert_int_equal(convoy_task_wait(reader), CONVOY_OK);
    assert_int_equal(convoy_task_wait(conv), CONVOY_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(convoy_last_error_message(), "injected"));
    assert_int_equal(convoy_task_wait(download), CONVOY_ERR_DEPENDENCY_FAILED);
    assert_true(out[0] == -1.0f);
    assert_int_equal(convoy_task_wait(writer), CONVOY_OK);
    assert_false(g->violation);
    assert_false(g->changed);
    convoy_task *tasks[4] = {reader, conv, download, writer};
    for (int i = 0; i < 4; ++i)
        convoy_task_release(tasks[i]);
    free(out);
    early_failure_teardown(&e);
    gate_free(g);
}

/* Destroying the failed convolution's output does not hand its storage out
 * while an earlier reader still uses it. */
static void test_early_failure_keeps_storage_until_readers_finish(void **state)
{
    early_failure e;
    early_failure_setup(&e);
    gate *g = gate_new();
    convoy_task *reader = NULL, *conv = NULL;
    convoy_access read_y = {e.y, CONVOY_READ};
    assert_int_equal(convoy_submit(e.rt, gated_reader_fn, g, &read_y, 1, "reader", &reader),
                     CONVOY_OK);
    assert_int_equal(convoy_conv_forward(e.rt, &e.p, e.x, e.w, e.y, &conv), CONVOY_OK);
    convoy_memory_statistics before, after;
    assert_int_equal(convoy_memory_stats(e.rt, &before), CONVOY_OK);
    convoy_tensor_destroy(e.y);
    e.y = NULL;
    /* The storage stays in use while the reader runs. */
    double start = now_ms();
    do {
        usleep(1000);
        assert_int_equal(convoy_memory_stats(e.rt, &after), CONVOY_OK);
    } while (after.bytes_in_use == before.bytes_in_use && now_ms() - start < 200.0);
    assert_int_equal(after.bytes_in_use, before.bytes_in_use);
    /* A new tensor of the same size gets other storage: overwriting it
     * leaves what the reader sees alone. */
    const int64_t yd[4] = {1, 4, 126, 126};
    convoy_tensor *z = NULL;
    assert_int_equal(convoy_tensor_create(e.rt, 4, yd, &z), CONVOY_OK);
    float *zeros = calloc(e.y_count, sizeof *zeros);
    assert_non_null(zeros);
    convoy_task *upload = NULL;
    assert_int_equal(convoy_upload(e.rt, z, zeros, e.y_count, &upload), CONVOY_OK);
    assert_int_equal(convoy_task_wait(upload), CONVOY_OK);
    gate_open(g);
    assert_int_equal(convoy_task_wait(reader), CONVOY_OK);
    assert_int_equal(convoy_task_wait(conv), CONVOY_ERR_OUT_OF_MEMORY);
    assert_false(g->changed);
    convoy_task_release(reader);
    convoy_task_release(conv);
    convoy_task_release(upload);
    convoy_tensor_destroy(z);
    free(zeros);
    early_failure_teardown(&e);
    gate_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_graphs_match_across_stream_counts),
        cmocka_unit_test(test_independent_tasks_overlap),
        cmocka_unit_test(test_dependent_tasks_serialise),
        cmocka_unit_test(test_long_chain_completes_and_frees),
        cmocka_unit_test(test_failure_propagates_through_diamond),
        cmocka_unit_test(test_concurrent_submission),
        cmocka_unit_test(test_tensor_destroy_waits_for_users),
        cmocka_unit_test(test_handle_outlives_runtime),
        cmocka_unit_test(test_task_api_errors),
        cmocka_unit_test(test_custom_task_odd_status),
        cmocka_unit_test(test_early_failure_keeps_write_after_read),
        cmocka_unit_test(test_early_failure_keeps_storage_until_readers_finish),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
