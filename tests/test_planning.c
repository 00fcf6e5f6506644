/* Planning through the runtime, with real tasks on the CPU backend: sites
 * and the bounded plan cache under submits, and the lifetime of a plan
 * evicted while its tasks still wait. Uses internals (the planner's
 * counts). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"
#include "runtime/runtime_int.h"

static convoy_runtime *cpu_runtime(convoy_algo_policy policy, int streams, size_t memory_limit)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
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

static void upload(convoy_runtime *rt, convoy_tensor *t, const float *data)
{
    convoy_task *task = NULL;
    assert_int_equal(convoy_upload(rt, t, data, &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
}

static void download(convoy_runtime *rt, convoy_tensor *t, float *data)
{
    convoy_task *task = NULL;
    assert_int_equal(convoy_download(rt, t, data, &task), CONVOY_OK);
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
    convoy_runtime_destroy(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alternating_layers_plan_once),
        cmocka_unit_test(test_distinct_batches_keep_the_cache_bounded),
        cmocka_unit_test(test_evicted_plan_outlives_its_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
