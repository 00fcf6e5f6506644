/* Out-of-memory paths through the public API: the N-th backend allocation
 * fails (CONVOY_TEST_FAIL_ALLOC) for every N a training-step pipeline makes,
 * and each run either succeeds or fails cleanly, with the failure carried
 * to the tasks that depend on it. Also: results do not depend on the
 * workspace limit, and the memory limit is respected. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"

/* Sixteen images, so that the workspace of either CPU algorithm the planner may pick (gemm's
 * column matrices, onednn's blocked copies and scratchpad) is over the pool's 1 MiB small-block
 * size: a backend allocation of its own, which can fail on its own. */
#define BATCH 16
#define X_DIMS                                                                                     \
    {                                                                                              \
        BATCH, 24, 24, 20                                                                          \
    }
#define W_DIMS                                                                                     \
    {                                                                                              \
        8, 12, 3, 3                                                                                \
    }
#define Y_DIMS                                                                                     \
    {                                                                                              \
        BATCH, 8, 24, 20                                                                           \
    }

typedef struct pipeline_result {
    int created;               /* every tensor was created */
    convoy_status statuses[5]; /* upload, fwd, bwd_data, bwd_filter, download */
    uint64_t backend_allocations;
    float output[BATCH * 8 * 24 * 20];
} pipeline_result;

static void fill(float *data, size_t count, unsigned seed)
{
    for (size_t i = 0; i < count; ++i) {
        seed = seed * 1664525u + 1013904223u;
        data[i] = (float)((seed >> 9) % 2001) / 1000.0f - 1.0f;
    }
}

/* The convolution of the pipeline: X_DIMS * W_DIMS, half padding, two groups. */
static convoy_conv_params pipeline_params(void)
{
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    p.border = CONVOY_BORDER_HALF;
    p.groups = 2;
    return p;
}

/* upload -> forward -> backward_data -> backward_filter -> download */
static void run_pipeline(long fail_at, int streams, size_t workspace_limit, pipeline_result *r)
{
    static float x_host[BATCH * 24 * 24 * 20], w_host[8 * 12 * 3 * 3], dw_host[8 * 12 * 3 * 3];
    fill(x_host, sizeof x_host / sizeof *x_host, 1);
    fill(w_host, sizeof w_host / sizeof *w_host, 2);
    memset(r, 0, sizeof *r);
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = streams;
    o.test_fail_alloc = fail_at;
    o.workspace_limit = workspace_limit;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    const convoy_conv_params p = pipeline_params();
    const int64_t xd[4] = X_DIMS, wd[4] = W_DIMS, yd[4] = Y_DIMS;
    convoy_tensor *x = NULL, *w = NULL, *y = NULL, *dx = NULL, *dw = NULL;
    convoy_status s;
    if ((s = convoy_tensor_create(rt, 4, xd, &x)) != CONVOY_OK ||
        (s = convoy_tensor_create(rt, 4, wd, &w)) != CONVOY_OK ||
        (s = convoy_tensor_create(rt, 4, yd, &y)) != CONVOY_OK ||
        (s = convoy_tensor_create(rt, 4, xd, &dx)) != CONVOY_OK ||
        (s = convoy_tensor_create(rt, 4, wd, &dw)) != CONVOY_OK) {
        assert_int_equal(s, CONVOY_ERR_OUT_OF_MEMORY);
        assert_non_null(strstr(convoy_last_error_message(), "tensor_create"));
        assert_non_null(strstr(convoy_last_error_message(), "bytes"));
    } else {
        r->created = 1;
        convoy_task *t[6] = {NULL};
        assert_int_equal(convoy_upload(rt, x, x_host, sizeof x_host / sizeof *x_host, &t[0]),
                         CONVOY_OK);
        assert_int_equal(convoy_upload(rt, w, w_host, sizeof w_host / sizeof *w_host, &t[5]),
                         CONVOY_OK);
        assert_int_equal(convoy_conv_forward(rt, &p, x, w, y, &t[1]), CONVOY_OK);
        assert_int_equal(convoy_conv_backward_data(rt, &p, w, y, dx, &t[2]), CONVOY_OK);
        assert_int_equal(convoy_conv_backward_filter(rt, &p, dx, y, dw, &t[3]), CONVOY_OK);
        assert_int_equal(convoy_download(rt, dw, dw_host, sizeof dw_host / sizeof *dw_host, &t[4]),
                         CONVOY_OK);
        for (int i = 0; i < 5; ++i)
            r->statuses[i] = convoy_task_wait(t[i]);
        assert_int_equal(convoy_task_wait(t[5]), CONVOY_OK);
        for (int i = 0; i < 6; ++i)
            convoy_task_release(t[i]);
        convoy_task *dl = NULL;
        assert_int_equal(
            convoy_download(rt, y, r->output, sizeof r->output / sizeof *r->output, &dl),
            CONVOY_OK);
        convoy_status last = convoy_task_wait(dl);
        assert_true(last == CONVOY_OK || last == CONVOY_ERR_DEPENDENCY_FAILED);
        convoy_task_release(dl);
    }
    convoy_memory_statistics stats;
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    r->backend_allocations = stats.backend_allocations;
    convoy_tensor_destroy(x);
    convoy_tensor_destroy(w);
    convoy_tensor_destroy(y);
    convoy_tensor_destroy(dx);
    convoy_tensor_destroy(dw);
    convoy_status drained = convoy_runtime_synchronize(rt);
    assert_true(drained == CONVOY_OK || drained == CONVOY_ERR_OUT_OF_MEMORY ||
                drained == CONVOY_ERR_DEPENDENCY_FAILED);
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    assert_int_equal(stats.bytes_in_use, 0);
    convoy_runtime_destroy(rt);
}

static void test_every_allocation_can_fail(void **state)
{
    const int stream_counts[2] = {0, 2};
    for (int sc = 0; sc < 2; ++sc) {
        pipeline_result clean;
        run_pipeline(0, stream_counts[sc], 0, &clean);
        assert_true(clean.created);
        for (int i = 0; i < 5; ++i)
            assert_int_equal(clean.statuses[i], CONVOY_OK);
        /* Small blocks share segments; the workspace is big enough to be a
         * backend allocation of its own. */
        assert_true(clean.backend_allocations >= 2);
        int failures_seen = 0;
        for (long n = 1; n <= (long)clean.backend_allocations + 1; ++n) {
            pipeline_result r;
            run_pipeline(n, stream_counts[sc], 0, &r);
            if (!r.created) {
                failures_seen++;
                continue;
            }
            /* Once a stage fails, every later stage reports the dependency. */
            int failed = 0;
            for (int i = 0; i < 5; ++i) {
                if (failed) {
                    assert_int_equal(r.statuses[i], CONVOY_ERR_DEPENDENCY_FAILED);
                } else if (r.statuses[i] != CONVOY_OK) {
                    assert_int_equal(r.statuses[i], CONVOY_ERR_OUT_OF_MEMORY);
                    failed = 1;
                    failures_seen++;
                }
            }
        }
        assert_true(failures_seen >= 1);
    }
}

static double relative_difference(const float *a, const float *b, size_t count)
{
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < count; ++i) {
        diff = fmax(diff, fabs((double)a[i] - (double)b[i]));
        norm = fmax(norm, fabs((double)b[i]));
    }
    return diff / (norm > 0.0 ? norm : 1.0);
}

/* From unlimited down to one image's Toeplitz buffer the results agree: the GEMM path works
 * in smaller chunks, or another algorithm runs. */
static void test_results_independent_of_workspace_limit(void **state)
{
    pipeline_result reference;
    run_pipeline(0, 0, 0, &reference);
    convoy_runtime *rt = NULL;
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    const convoy_conv_params p = pipeline_params();
    const int64_t xd[4] = X_DIMS, wd[4] = W_DIMS, yd[4] = Y_DIMS;
    convoy_conv_plan_info info;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, xd, wd, yd, &info),
                     CONVOY_OK);
    convoy_runtime_destroy(rt);
    /* The GEMM path's workspace per image (docs/DESIGN.md 4): (C * kvol + M) * P floats, the
     * column matrix and the pack rows. */
    const size_t per_image = (size_t)(24 * 9 + 8) * 24 * 20 * sizeof(float);
    if (!strcmp(info.implementation, "gemm"))
        assert_int_equal(info.workspace_bytes, per_image * (size_t)info.images_per_chunk);
    const size_t limits[4] = {per_image * 4, per_image * 3, per_image * 2 + 64, per_image + 64};
    for (int i = 0; i < 4; ++i) {
        pipeline_result r;
        run_pipeline(0, 1, limits[i], &r);
        for (int k = 0; k < 5; ++k)
            assert_int_equal(r.statuses[k], CONVOY_OK);
        assert_true(relative_difference(r.output, reference.output,
                                        sizeof r.output / sizeof *r.output) < 1e-6);
    }
}

/* The pool never holds more than memory_limit, and says so when asked. */
static void test_memory_limit(void **state)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.memory_limit = (size_t)8 << 20;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    convoy_tensor *t[8] = {NULL};
    int64_t n = (int64_t)1 << 20; /* 4 MiB each */
    int created = 0;
    for (int i = 0; i < 8; ++i) {
        convoy_status s = convoy_tensor_create(rt, 1, &n, &t[i]);
        if (s != CONVOY_OK) {
            assert_int_equal(s, CONVOY_ERR_OUT_OF_MEMORY);
            assert_non_null(strstr(convoy_last_error_message(), "limit"));
            break;
        }
        created++;
    }
    assert_true(created >= 1 && created < 3);
    convoy_memory_statistics stats;
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    assert_true(stats.peak_bytes_in_use <= o.memory_limit);
    assert_int_equal(stats.limit, o.memory_limit);
    for (int i = 0; i < 8; ++i)
        convoy_tensor_destroy(t[i]);
    convoy_runtime_destroy(rt);
}

/* One 1x1 forward convolution under time_once, 8x16x64x64 * 16x16x1x1 (input and output 2 MiB
 * each, large blocks of their own), with the memory limit given; returns the statistics and
 * the output. Candidates 1x1 and gemm are timed, each on scratch copies of the operands. */
static convoy_memory_statistics timed_conv(size_t memory_limit, int streams, float *out,
                                           size_t *tensor_bytes)
{
    enum { N = 8, C = 16, M = 16, HW = 64 * 64 };
    static float x_host[N * C * HW], w_host[M * C];
    fill(x_host, sizeof x_host / sizeof *x_host, 3);
    fill(w_host, sizeof w_host / sizeof *w_host, 4);
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = streams;
    o.algo = CONVOY_ALGO_TIME_ONCE;
    o.memory_limit = memory_limit;
    o.workspace_limit = (size_t)1 << 20;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t xd[4] = {N, C, 64, 64}, wd[4] = {M, C, 1, 1}, yd[4] = {N, M, 64, 64};
    convoy_tensor *x = NULL, *w = NULL, *y = NULL;
    assert_int_equal(convoy_tensor_create(rt, 4, xd, &x), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, 4, wd, &w), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, 4, yd, &y), CONVOY_OK);
    convoy_memory_statistics stats;
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    *tensor_bytes = stats.bytes_in_use;
    convoy_task *t[4] = {NULL};
    assert_int_equal(convoy_upload(rt, x, x_host, N * C * HW, &t[0]), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, w, w_host, M * C, &t[1]), CONVOY_OK);
    assert_int_equal(convoy_conv_forward(rt, &p, x, w, y, &t[2]), CONVOY_OK);
    assert_int_equal(convoy_download(rt, y, out, N * M * HW, &t[3]), CONVOY_OK);
    for (int i = 0; i < 4; ++i) {
        assert_int_equal(convoy_task_wait(t[i]), CONVOY_OK);
        convoy_task_release(t[i]);
    }
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    convoy_tensor_destroy(x);
    convoy_tensor_destroy(w);
    convoy_tensor_destroy(y);
    convoy_runtime_destroy(rt);
    /* y[n, m, p] = sum over c of w[m, c] x[n, c, p]: 1x1, so flipping changes nothing. */
    for (int n = 0; n < N; ++n)
        for (int m = 0; m < M; ++m)
            for (int i = 0; i < HW; i += 97) {
                double want = 0.0, scale = 0.0;
                for (int c = 0; c < C; ++c) {
                    want += (double)w_host[m * C + c] * x_host[(n * C + c) * HW + i];
                    scale += fabs((double)w_host[m * C + c] * x_host[(n * C + c) * HW + i]);
                }
                assert_true(fabs(out[(n * M + m) * HW + i] - want) <= 1e-5 * scale + 1e-6);
            }
    return stats;
}

/* time_once times candidates on scratch buffers from the pool, under the memory limit: with
 * no limit they show in the peak (a second copy of every operand), and with a limit that the
 * tensors fit but the scratch does not, timing is skipped (the heuristic choice runs) and the
 * peak stays within the limit. */
static void test_timing_scratch_within_limit(void **state)
{
    static float out[8 * 16 * 64 * 64];
    const int stream_counts[2] = {0, 2};
    for (int sc = 0; sc < 2; ++sc) {
        size_t tensors = 0;
        convoy_memory_statistics free_run = timed_conv(0, stream_counts[sc], out, &tensors);
        assert_true(tensors >= ((size_t)4 << 20));
        assert_true(free_run.peak_bytes_in_use >= 2 * tensors);

        const size_t limit = (size_t)6 << 20; /* x, y and the small segment holding w */
        convoy_memory_statistics tight = timed_conv(limit, stream_counts[sc], out, &tensors);
        assert_int_equal(tight.limit, limit);
        assert_true(tight.peak_bytes_in_use <= limit);
        assert_true(tight.peak_bytes_in_use < 2 * tensors);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_can_fail),
        cmocka_unit_test(test_results_independent_of_workspace_limit),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_timing_scratch_within_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
