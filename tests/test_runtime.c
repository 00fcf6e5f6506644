/* Runtime creation, options and environment flags, device fallback and
 * description, the plan cache and convoy_conv_explain, and memory figures. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "convoy.h"

static const char *const flag_names[] = {
    "CONVOY_DEVICE",       "CONVOY_DEVICE_INDEX",    "CONVOY_STREAMS",    "CONVOY_BLAS_THREADS",
    "CONVOY_ALGO",         "CONVOY_EXCLUDE",         "CONVOY_REQUIRE",    "CONVOY_DETERMINISTIC",
    "CONVOY_MEMORY_LIMIT", "CONVOY_WORKSPACE_LIMIT", "CONVOY_TUNE_CACHE", "CONVOY_TRACE",
    "CONVOY_PROFILE",      "CONVOY_TEST_FAIL_ALLOC",
};

/* Every test starts from a clean environment. */
static int clear_environment(void **state)
{
    for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; ++i)
        unsetenv(flag_names[i]);
    return 0;
}

static void test_defaults(void **state)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    assert_int_equal(o.device, CONVOY_DEVICE_AUTO);
    assert_int_equal(o.streams, -1);
    assert_int_equal(o.algo, CONVOY_ALGO_HEURISTIC);
    assert_int_equal(o.exclude, 0);
    assert_int_equal(o.memory_limit, 0);
    assert_null(o.tune_cache);
    assert_int_equal(convoy_options_init(NULL), CONVOY_ERR_INVALID_ARGUMENT);
}

static void test_environment_overrides(void **state)
{
    setenv("CONVOY_DEVICE", "cpu", 1);
    setenv("CONVOY_STREAMS", "3", 1);
    setenv("CONVOY_ALGO", "time_on_shape_change", 1);
    setenv("CONVOY_EXCLUDE", "gemm, 1x1", 1);
    setenv("CONVOY_DETERMINISTIC", "1", 1);
    setenv("CONVOY_MEMORY_LIMIT", "64M", 1);
    setenv("CONVOY_WORKSPACE_LIMIT", "1024", 1);
    setenv("CONVOY_TEST_FAIL_ALLOC", "7", 1);
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    assert_int_equal(o.device, CONVOY_DEVICE_CPU);
    assert_int_equal(o.streams, 3);
    assert_int_equal(o.algo, CONVOY_ALGO_TIME_ON_SHAPE_CHANGE);
    assert_int_equal(o.exclude, CONVOY_IMPL_GEMM | CONVOY_IMPL_1X1);
    assert_int_equal(o.deterministic, 1);
    assert_int_equal(o.memory_limit, 64u << 20);
    assert_int_equal(o.workspace_limit, 1024);
    assert_int_equal(o.test_fail_alloc, 7);
}

static void test_malformed_environment(void **state)
{
    static const char *const cases[][2] = {
        {"CONVOY_STREAMS", "abc"},
        {"CONVOY_STREAMS", "-2"},
        {"CONVOY_DEVICE", "tpu"},
        {"CONVOY_ALGO", "fastest"},
        {"CONVOY_EXCLUDE", "gemm,winograd"},
        {"CONVOY_MEMORY_LIMIT", "12Q"},
        {"CONVOY_DETERMINISTIC", "maybe"},
        {"CONVOY_TEST_FAIL_ALLOC", "-1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        clear_environment(NULL);
        setenv(cases[i][0], cases[i][1], 1);
        convoy_options o;
        assert_int_equal(convoy_options_init(&o), CONVOY_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(convoy_last_error_message(), cases[i][0]));
        assert_non_null(strstr(convoy_last_error_message(), cases[i][1]));
        /* runtime_create(NULL) reads the same environment and refuses too. */
        convoy_runtime *rt = (convoy_runtime *)0x1;
        assert_int_equal(convoy_runtime_create(NULL, &rt), CONVOY_ERR_INVALID_ARGUMENT);
        assert_ptr_equal(rt, (convoy_runtime *)0x1);
    }
}

static void test_bad_options_fields(void **state)
{
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(NULL, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.streams = 1000;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "streams"));
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.exclude = 0x100;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = (convoy_device)7;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT);
    assert_null(rt);
}

/* On a machine with no usable GPU, AUTO falls back and says why, CUDA is
 * refused with the reason, and so is CONVOY_REQUIRE=cudnn. */
static void test_device_fallback(void **state)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    const char *describe = convoy_runtime_describe(rt);
    if (convoy_runtime_device(rt) == CONVOY_DEVICE_CUDA) {
        assert_non_null(strstr(describe, "cuda"));
        convoy_runtime_destroy(rt);
        skip();
    }
    assert_int_equal(convoy_runtime_device(rt), CONVOY_DEVICE_CPU);
    assert_true(strncmp(describe, "cpu: ", 5) == 0);
    assert_non_null(strstr(describe, "no CUDA"));
    assert_non_null(strstr(describe, "BLAS"));
    /* "oneDNN 2.6.3 (...)", or "built without oneDNN". */
    assert_non_null(strstr(describe, "oneDNN"));
    convoy_runtime_destroy(rt);

    o.device = CONVOY_DEVICE_CUDA;
    rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_ERR_NO_DEVICE);
    assert_null(rt);
    assert_non_null(strstr(convoy_last_error_message(), "CUDA"));

    o.device = CONVOY_DEVICE_AUTO;
    o.require = CONVOY_IMPL_CUDNN;
    assert_int_equal(convoy_runtime_create(&o, &rt) != CONVOY_OK, 1);
    assert_null(rt);
    assert_non_null(strstr(convoy_last_error_message(), "cudnn"));
}

static convoy_runtime *cpu_runtime(unsigned exclude, size_t workspace_limit)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.exclude = exclude;
    o.workspace_limit = workspace_limit;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    return rt;
}

/* 1 when the build has oneDNN: the description names its version ("oneDNN 2.6.3"). The CPU
 * heuristic then ranks onednn ahead of gemm for dense and grouped convolutions, and
 * options.exclude has no bit to take it out. */
static int has_onednn(const convoy_runtime *rt)
{
    const char *at = strstr(convoy_runtime_describe(rt), "oneDNN ");
    return at && at[7] >= '0' && at[7] <= '9';
}

static void test_explain_and_plan_cache(void **state)
{
    convoy_runtime *rt = cpu_runtime(0, 0);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    p.border = CONVOY_BORDER_HALF;
    const int64_t x[4] = {4, 8, 10, 10}, w[4] = {16, 8, 3, 3}, y[4] = {4, 16, 10, 10};
    convoy_conv_plan_info info;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info), CONVOY_OK);
    assert_int_equal(info.from_cache, 0);
    if (has_onednn(rt)) {
        /* One fixed block of workspace (at least the flipped filters), no image chunks. */
        assert_string_equal(info.implementation, "onednn");
        assert_int_equal(info.images_per_chunk, 0);
        assert_true(info.workspace_bytes >= (size_t)16 * 8 * 9 * sizeof(float));
    } else {
        assert_string_equal(info.implementation, "gemm");
        assert_int_equal(info.images_per_chunk, 4);
        assert_true(info.workspace_bytes >= (size_t)4 * 8 * 9 * 100 * sizeof(float));
    }
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info), CONVOY_OK);
    assert_int_equal(info.from_cache, 1);
    /* Another direction is another plan. */
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_BACKWARD_FILTER, x, w, y, &info),
                     CONVOY_OK);
    assert_int_equal(info.from_cache, 0);

    /* 1x1 convolutions take the single-GEMM path with no workspace, or oneDNN's. */
    const int64_t w1[4] = {16, 8, 1, 1};
    p.border = CONVOY_BORDER_VALID;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w1, y, &info), CONVOY_OK);
    if (has_onednn(rt)) {
        assert_string_equal(info.implementation, "onednn");
    } else {
        assert_string_equal(info.implementation, "1x1");
        assert_int_equal(info.workspace_bytes, 0);
    }

    /* Bad arguments. */
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w1, y, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_conv_explain(rt, &p, (convoy_conv_direction)5, x, w1, y, &info),
                     CONVOY_ERR_INVALID_ARGUMENT);
    const int64_t wrong[4] = {4, 16, 9, 10};
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w1, wrong, &info),
                     CONVOY_ERR_SHAPE);
    assert_non_null(strstr(convoy_last_error_message(), "output dim 2"));
    convoy_runtime_destroy(rt);
}

/* A tight workspace limit shrinks the chunk; below one image's buffer the
 * GEMM path drops out and the direct loops take over. With oneDNN in the
 * build, onednn's fixed block is the first to go. */
static void test_workspace_limit_shrinks_chunk(void **state)
{
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t x[4] = {8, 4, 12, 12}, w[4] = {8, 4, 3, 3}, y[4] = {8, 8, 10, 10};
    convoy_runtime *rt = cpu_runtime(0, 0);
    convoy_conv_plan_info full;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &full), CONVOY_OK);
    const int onednn = has_onednn(rt);
    convoy_runtime_destroy(rt);
    /* The GEMM path's workspace per image (docs/DESIGN.md 4): (C * kvol + M) * P floats. */
    const size_t per_image = (size_t)(4 * 9 + 8) * 100 * sizeof(float);
    convoy_conv_plan_info tight;
    if (onednn) {
        assert_string_equal(full.implementation, "onednn");
        assert_int_equal(full.images_per_chunk, 0);
        /* Just under onednn's block the GEMM path runs, in chunks when it must. */
        rt = cpu_runtime(0, full.workspace_bytes - 1);
        assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight),
                         CONVOY_OK);
        assert_string_equal(tight.implementation, "gemm");
        assert_true(tight.workspace_bytes < full.workspace_bytes);
        assert_int_equal(tight.workspace_bytes, per_image * (size_t)tight.images_per_chunk);
        convoy_runtime_destroy(rt);
    } else {
        assert_string_equal(full.implementation, "gemm");
        assert_int_equal(full.images_per_chunk, 8);
        assert_int_equal(full.workspace_bytes, per_image * 8);
    }
    if (!onednn || full.workspace_bytes > per_image * 3 + per_image / 2) {
        rt = cpu_runtime(0, per_image * 3 + per_image / 2);
        assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight),
                         CONVOY_OK);
        assert_string_equal(tight.implementation, "gemm");
        assert_int_equal(tight.images_per_chunk, 3);
        assert_true(tight.workspace_bytes <= per_image * 3 + per_image / 2);
        convoy_runtime_destroy(rt);
    }
    rt = cpu_runtime(0, 16);
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight), CONVOY_OK);
    assert_string_equal(tight.implementation, "direct");
    convoy_runtime_destroy(rt);
    /* With direct excluded too, the error gives the numbers. */
    rt = cpu_runtime(CONVOY_IMPL_DIRECT, 16);
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight),
                     CONVOY_ERR_UNSUPPORTED);
    assert_non_null(strstr(convoy_last_error_message(), "16"));
    assert_non_null(strstr(convoy_last_error_message(), "direct: excluded"));
    convoy_runtime_destroy(rt);
}

/* options.exclude has no bit for onednn, so the filters are unshared, which onednn refuses
 * (in a build without oneDNN it refuses everything): nothing is left and the message says
 * why for each algorithm. */
static void test_everything_excluded(void **state)
{
    convoy_runtime *rt = cpu_runtime(CONVOY_IMPL_ALL, 0);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    p.unshared = 1;
    const int64_t x[4] = {1, 1, 5, 5}, w[6] = {1, 3, 3, 1, 3, 3}, y[4] = {1, 1, 3, 3};
    convoy_conv_plan_info info;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info),
                     CONVOY_ERR_UNSUPPORTED);
    const char *message = convoy_last_error_message();
    assert_non_null(strstr(message, "conv_explain"));
    assert_non_null(strstr(message, "gemm: excluded"));
    assert_non_null(strstr(message, "direct: excluded"));
    assert_non_null(strstr(message, "1x1: needs a pointwise geometry"));
    assert_non_null(strstr(message, has_onednn(rt) ? "onednn: unshared filters"
                                                   : "onednn: convoy was built without oneDNN"));
    convoy_runtime_destroy(rt);
}

static void test_memory_stats(void **state)
{
    convoy_runtime *rt = cpu_runtime(0, 0);
    convoy_memory_statistics stats;
    assert_int_equal(convoy_memory_stats(rt, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_memory_stats(NULL, &stats), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_memory_trim(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    int64_t n = 1000;
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    assert_true(stats.bytes_in_use >= 4000);
    assert_true(stats.peak_bytes_in_use >= stats.bytes_in_use);
    convoy_tensor_destroy(t);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    assert_int_equal(stats.bytes_in_use, 0);
    assert_int_equal(convoy_memory_trim(rt), CONVOY_OK);
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    assert_int_equal(stats.bytes_cached, 0);
    convoy_runtime_destroy(rt);
}

static void test_status_names(void **state)
{
    assert_string_equal(convoy_status_name(CONVOY_OK), "CONVOY_OK");
    assert_string_equal(convoy_status_name(CONVOY_ERR_SHAPE), "CONVOY_ERR_SHAPE");
    assert_string_equal(convoy_status_name(CONVOY_ERR_TASK_FAILED), "CONVOY_ERR_TASK_FAILED");
    assert_string_equal(convoy_status_name((convoy_status)99), "CONVOY_STATUS_UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_environment),
        cmocka_unit_test_setup(test_environment_overrides, clear_environment),
        cmocka_unit_test_setup(test_malformed_environment, clear_environment),
        cmocka_unit_test_setup(test_bad_options_fields, clear_environment),
        cmocka_unit_test_setup(test_device_fallback, clear_environment),
        cmocka_unit_test_setup(test_explain_and_plan_cache, clear_environment),
        cmocka_unit_test_setup(test_workspace_limit_shrinks_chunk, clear_environment),
        cmocka_unit_test_setup(test_everything_excluded, clear_environment),
        cmocka_unit_test_setup(test_memory_stats, clear_environment),
        cmocka_unit_test_setup(test_status_names, clear_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
