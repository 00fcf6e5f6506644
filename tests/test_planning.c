/* Planning through the runtime, with real tasks on the CPU backend: sites
 * and the bounded plan cache under submits, the lifetime of a plan evicted
 * while its tasks still wait, and workspaces that fit what the pool can
 * grant, with the fallback at submit when it cannot (a tight memory limit
 * costs speed, never the result). Uses internals (the planner's counts, the
 * pool's availability). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"
#include "runtime/runtime_int.h"

/* A CPU runtime whose candidates are gemm, 1x1 and direct: onednn, whose
 * workspace is one fixed block, is left out, so the chunking and fallback
 * these tests are about are those of the GEMM path. */
static convoy_runtime *cpu_runtime(convoy_algo_policy policy, int streams, size_t memory_limit)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.exclude = "onednn";
    o.blas_threads = 1; /* planning, not speed; and OpenBLAS threads escape ThreadSanitizer */
    o.algo = policy;
    o.streams = streams;
    o.memory_limit = memory_limit;
    o.tune_cache = NULL;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    return rt;
}

static convoy_tensor *tensor(convoy_runtime *rt, int64_t n, int64_t c, int64_t h, int64_t w)
{
    const int64_t dims[4] = {n, c, h, w};
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 4, dims, &t), CONVOY_OK);
    return t;
}

static void fill(float *data, size_t count, unsigned seed)
{
    for (size_t i = 0; i < count; ++i) {
        seed = seed * 1664525u + 1013904223u;
        data[i] = (float)((seed >> 9) % 2001) / 1000.0f - 1.0f;
    }
}

static size_t numel(const convoy_tensor *t)
{
    size_t n = 1;
    for (int a = 0; a < convoy_tensor_ndim(t); ++a)
        n *= (size_t)convoy_tensor_dim(t, a);
    return n;
}

static void upload(convoy_runtime *rt, convoy_tensor *t, const float *data)
{
    convoy_task *task = NULL;
    assert_int_equal(convoy_upload(rt, t, data, numel(t), &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
}

static void download(convoy_runtime *rt, convoy_tensor *t, float *data)
{
    convoy_task *task = NULL;
    assert_int_equal(convoy_download(rt, t, data, numel(t), &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
}

static convoy__planner_counts counts_of(convoy_runtime *rt)
{
    convoy__planner_counts counts;
    convoy__planner_get_counts(rt->planner, &counts);
    return counts;
}

/* ---- sites and the bounded cache ------------------------------------------- */

/* Two layers sharing channels, kernel and stride but not their extents,
 * alternated 10,000 times under time_on_shape_change: each is planned (and
 * timed) once, and no plan piles up. */
static void test_alternating_layers_plan_once(void **state)
{
    for (int streams = 0; streams <= 2; streams += 2) {
        convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_TIME_ON_SHAPE_CHANGE, streams, 0);
        convoy_conv_params p;
        assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
        convoy_tensor *xa = tensor(rt, 1, 2, 6, 6), *ya = tensor(rt, 1, 2, 4, 4);
        convoy_tensor *xb = tensor(rt, 1, 2, 8, 8), *yb = tensor(rt, 1, 2, 6, 6);
        convoy_tensor *w = tensor(rt, 2, 2, 3, 3);
        float data[128];
        fill(data, 128, 3);
        upload(rt, xa, data);
        upload(rt, xb, data);
        upload(rt, w, data);
        for (int i = 0; i < 10000; ++i) {
            if (i % 2)
                assert_int_equal(convoy_conv_forward(rt, &p, xb, w, yb, NULL), CONVOY_OK);
            else
                assert_int_equal(convoy_conv_forward(rt, &p, xa, w, ya, NULL), CONVOY_OK);
            if (i % 1000 == 999) {
                convoy__planner_counts counts = counts_of(rt);
                assert_int_equal(counts.built, 2);
                assert_int_equal(counts.cached, 2);
                assert_int_equal(counts.alive, 2);
            }
        }
        assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
        convoy_runtime_destroy(rt);
        convoy_tensor *held[] = {xa, ya, xb, yb, w};
        for (size_t i = 0; i < sizeof held / sizeof held[0]; ++i)
            convoy_tensor_destroy(held[i]); /* detached: frees the handle */
    }
}

/* 20,000 distinct batch sizes keep the cache at its bound. */
static void test_distinct_batches_keep_the_cache_bounded(void **state)
{
    convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_HEURISTIC, 0, 0);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    convoy_conv_plan_info info;
    for (int64_t n = 1; n <= 20000; ++n) {
        const int64_t x[4] = {n, 2, 5, 5}, w[4] = {3, 2, 3, 3}, y[4] = {n, 3, 3, 3};
        assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info),
                         CONVOY_OK);
        assert_int_equal(info.from_cache, 0);
        if (n % 1000 == 0) {
            convoy__planner_counts counts = counts_of(rt);
            size_t expected = n < CONVOY__PLAN_CACHE_SIZE ? (size_t)n : CONVOY__PLAN_CACHE_SIZE;
            assert_int_equal(counts.cached, expected);
            assert_int_equal(counts.alive, expected);
        }
    }
    convoy_runtime_destroy(rt);
}

/* ---- a plan evicted while its task waits ------------------------------------ */

static atomic_int gate_open;

static convoy_status wait_for_gate(const convoy_task_context *context, void *user_data)
{
    while (!atomic_load(&gate_open))
        sched_yield();
    return CONVOY_OK;
}

/* The task still uses its plan after time_on_shape_change replaced it at the
 * site: the plan lives until the task completed, and a later plan frees it. */
static void test_evicted_plan_outlives_its_task(void **state)
{
    convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_TIME_ON_SHAPE_CHANGE, 1, 0);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    convoy_tensor *x = tensor(rt, 2, 2, 6, 6), *w = tensor(rt, 2, 2, 3, 3);
    convoy_tensor *y = tensor(rt, 2, 2, 4, 4);
    float xs[144], ws[36], ys[64], reference[64];
    fill(xs, 144, 5);
    fill(ws, 36, 6);
    upload(rt, x, xs);
    upload(rt, w, ws);
    assert_int_equal(convoy_conv_forward(rt, &p, x, w, y, NULL), CONVOY_OK);
    download(rt, y, reference);

    atomic_store(&gate_open, 0);
    convoy_access access = {x, CONVOY_READ_WRITE};
    assert_int_equal(convoy_submit(rt, wait_for_gate, NULL, &access, 1, "gate", NULL), CONVOY_OK);
    convoy_task *conv = NULL;
    assert_int_equal(convoy_conv_forward(rt, &p, x, w, y, &conv), CONVOY_OK);
    /* Another batch size at the same site evicts the waiting task's plan. */
    convoy_conv_plan_info info;
    const int64_t x3[4] = {3, 2, 6, 6}, w3[4] = {2, 2, 3, 3}, y3[4] = {3, 2, 4, 4};
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x3, w3, y3, &info),
                     CONVOY_OK);
    convoy__planner_counts counts = counts_of(rt);
    assert_int_equal(counts.cached, 1);
    assert_int_equal(counts.alive, 2);
    atomic_store(&gate_open, 1);
    assert_int_equal(convoy_task_wait(conv), CONVOY_OK);
    convoy_task_release(conv);
    download(rt, y, ys);
    assert_memory_equal(ys, reference, sizeof ys);
    /* The next plan built sweeps the evicted one away. */
    const int64_t x4[4] = {4, 2, 6, 6}, y4[4] = {4, 2, 4, 4};
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x4, w3, y4, &info),
                     CONVOY_OK);
    counts = counts_of(rt);
    assert_int_equal(counts.cached, 1);
    assert_int_equal(counts.alive, 1);
    convoy_tensor_destroy(x);
    convoy_tensor_destroy(w);
    convoy_tensor_destroy(y);
    convoy_runtime_destroy(rt);
}

/* ---- workspaces within what the pool can grant ------------------------------- */

/* A narrow layer (10x10 outputs), so the GEMM path works on several images
 * per chunk: 8 images, (8 * 9 + 8) * 100 floats of workspace per image. */
#define N 8
#define C 8
#define M 8
#define IN 12
#define OUT 10
#define PER_IMAGE ((size_t)(C * 9 + M) * OUT * OUT * sizeof(float))
#define X_COUNT (N * C * IN * IN)
#define W_COUNT (M * C * 9)
#define Y_COUNT (N * M * OUT * OUT)

typedef struct layer_results {
    float y[Y_COUNT];  /* forward */
    float dx[X_COUNT]; /* backward_data of y */
    float dw[W_COUNT]; /* backward_filter of x and y */
} layer_results;

typedef struct layer {
    convoy_tensor *x, *w, *y, *dx, *dw;
} layer;

static layer make_layer(convoy_runtime *rt)
{
    static float xs[X_COUNT], ws[W_COUNT];
    fill(xs, X_COUNT, 11);
    fill(ws, W_COUNT, 12);
    layer l = {tensor(rt, N, C, IN, IN), tensor(rt, M, C, 3, 3), tensor(rt, N, M, OUT, OUT),
               tensor(rt, N, C, IN, IN), tensor(rt, M, C, 3, 3)};
    upload(rt, l.x, xs);
    upload(rt, l.w, ws);
    return l;
}

static void destroy_layer(layer *l)
{
    convoy_tensor_destroy(l->x);
    convoy_tensor_destroy(l->w);
    convoy_tensor_destroy(l->y);
    convoy_tensor_destroy(l->dx);
    convoy_tensor_destroy(l->dw);
}

/* Runs the three directions; each must succeed. */
static void run_layer(convoy_runtime *rt, const layer *l, layer_results *r)
{
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    convoy_task *t[3] = {NULL};
    assert_int_equal(convoy_conv_forward(rt, &p, l->x, l->w, l->y, &t[0]), CONVOY_OK);
    assert_int_equal(convoy_conv_backward_data(rt, &p, l->w, l->y, l->dx, &t[1]), CONVOY_OK);
    assert_int_equal(convoy_conv_backward_filter(rt, &p, l->x, l->y, l->dw, &t[2]), CONVOY_OK);
    for (int i = 0; i < 3; ++i) {
        assert_int_equal(convoy_task_wait(t[i]), CONVOY_OK);
        convoy_task_release(t[i]);
    }
    download(rt, l->y, r->y);
    download(rt, l->dx, r->dx);
    download(rt, l->dw, r->dw);
}

static void assert_close(const float *got, const float *want, size_t count)
{
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < count; ++i) {
        diff = fmax(diff, fabs((double)got[i] - (double)want[i]));
        norm = fmax(norm, fabs((double)want[i]));
    }
    assert_true(diff <= 1e-5 * (norm > 0.0 ? norm : 1.0));
}

static void assert_same_results(const layer_results *got, const layer_results *want)
{
    assert_close(got->y, want->y, Y_COUNT);
    assert_close(got->dx, want->dx, X_COUNT);
    assert_close(got->dw, want->dw, W_COUNT);
}

static void reference_results(layer_results *r)
{
    convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_HEURISTIC, 0, 0);
    layer l = make_layer(rt);
    run_layer(rt, &l, r);
    destroy_layer(&l);
    convoy_runtime_destroy(rt);
}

/* Fills the pool with small tensors until it can grant less than bytes;
 * returns how many it made. */
static int fill_pool(convoy_runtime *rt, size_t bytes, convoy_tensor **fillers, int max)
{
    int count = 0;
    const int64_t floats = 2048; /* 8 KiB each */
    while (convoy__pool_available(rt->pool) >= bytes) {
        assert_true(count < max);
        assert_int_equal(convoy_tensor_create(rt, 1, &floats, &fillers[count]), CONVOY_OK);
        count++;
    }
    return count;
}

static void explain_forward(convoy_runtime *rt, convoy_conv_plan_info *info)
{
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t x[4] = {N, C, IN, IN}, w[4] = {M, C, 3, 3}, y[4] = {N, M, OUT, OUT};
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, info), CONVOY_OK);
}

#define MEMORY_LIMIT ((size_t)4 << 20)
#define MAX_FILLERS 1024

/* The memory limit leaves room for the tensors but not for the workspace of
 * the whole batch: planned with the pool's tensors in view, the GEMM path
 * takes fewer images per chunk; with less than one image left, the
 * zero-workspace direct loops. */
static void test_plans_fit_what_the_pool_can_grant(void **state)
{
    static layer_results reference, got;
    reference_results(&reference);
    for (int streams = 0; streams <= 2; streams += 2) {
        convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_HEURISTIC, streams, MEMORY_LIMIT);
        convoy_conv_plan_info info;
        explain_forward(rt, &info);
        assert_string_equal(info.implementation, "gemm");
        assert_int_equal(info.images_per_chunk, N);
        assert_true(info.workspace_bytes >= N * PER_IMAGE);
        convoy_runtime_destroy(rt);

        rt = cpu_runtime(CONVOY_ALGO_HEURISTIC, streams, MEMORY_LIMIT);
        layer l = make_layer(rt);
        convoy_tensor *fillers[MAX_FILLERS];
        int count = fill_pool(rt, PER_IMAGE * 7 / 2, fillers, MAX_FILLERS);
        size_t available = convoy__pool_available(rt->pool);
        explain_forward(rt, &info);
        assert_string_equal(info.implementation, "gemm");
        assert_true(info.images_per_chunk >= 1 && info.images_per_chunk < N);
        assert_true(info.workspace_bytes <= available);
        run_layer(rt, &l, &got);
        assert_same_results(&got, &reference);
        for (int i = 0; i < count; ++i)
            convoy_tensor_destroy(fillers[i]);
        destroy_layer(&l);
        convoy_runtime_destroy(rt);

        rt = cpu_runtime(CONVOY_ALGO_HEURISTIC, streams, MEMORY_LIMIT);
        l = make_layer(rt);
        count = fill_pool(rt, PER_IMAGE / 2, fillers, MAX_FILLERS);
        explain_forward(rt, &info);
        assert_string_equal(info.implementation, "direct");
        assert_int_equal(info.workspace_bytes, 0);
        run_layer(rt, &l, &got);
        assert_same_results(&got, &reference);
        for (int i = 0; i < count; ++i)
            convoy_tensor_destroy(fillers[i]);
        destroy_layer(&l);
        convoy_runtime_destroy(rt);
    }
}

/* Plans made while memory was free, then the pool fills with tensors: at
 * submit the tasks take fewer images per chunk, or the plan's
 * zero-workspace fallback, instead of failing with out-of-memory. */
static void test_submit_falls_back_when_the_pool_is_full(void **state)
{
    static layer_results reference, got;
    reference_results(&reference);
    const size_t room[2] = {PER_IMAGE * 7 / 2, PER_IMAGE / 2};
    for (int streams = 0; streams <= 2; streams += 2) {
        for (int r = 0; r < 2; ++r) {
            convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_HEURISTIC, streams, MEMORY_LIMIT);
            layer l = make_layer(rt);
            run_layer(rt, &l, &got); /* plans every direction with the pool empty */
            assert_same_results(&got, &reference);
            convoy_conv_plan_info info;
            explain_forward(rt, &info);
            assert_int_equal(info.from_cache, 1);
            assert_int_equal(info.images_per_chunk, N);
            convoy_tensor *fillers[MAX_FILLERS];
            int count = fill_pool(rt, room[r], fillers, MAX_FILLERS);
            memset(&got, 0, sizeof got);
            run_layer(rt, &l, &got);
            assert_same_results(&got, &reference);
            /* The plans themselves did not change. */
            explain_forward(rt, &info);
            assert_int_equal(info.from_cache, 1);
            assert_int_equal(info.images_per_chunk, N);
            for (int i = 0; i < count; ++i)
                convoy_tensor_destroy(fillers[i]);
            destroy_layer(&l);
            assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
            convoy_memory_statistics stats;
            assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
            assert_int_equal(stats.bytes_in_use, 0);
            convoy_runtime_destroy(rt);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alternating_layers_plan_once),
        cmocka_unit_test(test_distinct_batches_keep_the_cache_bounded),
        cmocka_unit_test(test_evicted_plan_outlives_its_task),
        cmocka_unit_test(test_plans_fit_what_the_pool_can_grant),
        cmocka_unit_test(test_submit_falls_back_when_the_pool_is_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
