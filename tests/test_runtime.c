/* Runtime creation, options and environment flags (and the allocation
 * failure test hook), device fallback and description, the plan cache and
 * convoy_conv_explain, memory figures, status names and descriptions, and
 * tensor handles that outlive their runtime. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"

static const char *const flag_names[] = {
    "CONVOY_DEVICE",
    "CONVOY_DEVICE_INDEX",
    "CONVOY_STREAMS",
    "CONVOY_BLAS_THREADS",
    "CONVOY_ALGO",
    "CONVOY_EXCLUDE",
    "CONVOY_REQUIRE",
    "CONVOY_DETERMINISTIC",
    "CONVOY_EXACT_ONLY",
    "CONVOY_MEMORY_LIMIT",
    "CONVOY_WORKSPACE_LIMIT",
    "CONVOY_TUNE_CACHE",
    "CONVOY_TRACE",
    "CONVOY_PROFILE",
    "CONVOY_LOG",
    "CONVOY_TEST_FAIL_ALLOC",
};

/* Every test starts from a clean environment. */
static int clear_environment(void **state)
{
    for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; ++i)
        unsetenv(flag_names[i]);
    return 0;
}

/* Asserts the status and that the message holds every word (NULL-ended),
 * printing the message when it does not. */
static void expect_error_words(const char *what, convoy_status got, convoy_status expected,
                               const char *const *words)
{
    const char *message = convoy_last_error_message();
    int ok = got == expected;
    for (int i = 0; ok && words[i]; ++i)
        ok = strstr(message, words[i]) != NULL;
    if (!ok) {
        print_message("%s: expected %s, got %s, message \"%s\"\n", what,
                      convoy_status_name(expected), convoy_status_name(got), message);
        for (int i = 0; words[i]; ++i)
            print_message("  expected word \"%s\"\n", words[i]);
    }
    assert_true(ok);
}

#define EXPECT_ERROR(call, expected, ...)                                                          \
    expect_error_words(#call, (call), (expected), (const char *const[]){__VA_ARGS__, NULL})

static void assert_defaults(const convoy_options *o)
{
    assert_int_equal(o->device, CONVOY_DEVICE_AUTO);
    assert_int_equal(o->device_index, 0);
    assert_int_equal(o->streams, -1);
    assert_int_equal(o->blas_threads, 0);
    assert_int_equal(o->algo, CONVOY_ALGO_HEURISTIC);
    assert_null(o->exclude);
    assert_null(o->require);
    assert_int_equal(o->deterministic, 0);
    assert_int_equal(o->memory_limit, 0);
    assert_int_equal(o->workspace_limit, 0);
    assert_null(o->tune_cache);
    assert_null(o->trace_path);
    assert_int_equal(o->profile, 0);
    assert_int_equal(o->test_fail_alloc, 0);
    assert_null(o->log_fn);
    assert_null(o->log_user_data);
}

/* convoy_options_init gives the defaults whatever the environment says. */
static void test_defaults_ignore_environment(void **state)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    assert_defaults(&o);
    setenv("CONVOY_DEVICE", "cuda", 1);
    setenv("CONVOY_STREAMS", "3", 1);
    setenv("CONVOY_EXCLUDE", "gemm", 1);
    setenv("CONVOY_MEMORY_LIMIT", "bogus", 1);
    setenv("CONVOY_LOG", "stderr", 1);
    setenv("CONVOY_TEST_FAIL_ALLOC", "7", 1);
    memset(&o, 0x5a, sizeof o);
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    assert_defaults(&o);
    EXPECT_ERROR(convoy_options_init(NULL), CONVOY_ERR_INVALID_ARGUMENT, "options_init", "NULL");
    EXPECT_ERROR(convoy_options_from_env(NULL), CONVOY_ERR_INVALID_ARGUMENT, "options_from_env",
                 "NULL");
}

static void test_environment_overrides(void **state)
{
    setenv("CONVOY_DEVICE", "cpu", 1);
    setenv("CONVOY_DEVICE_INDEX", "2", 1);
    setenv("CONVOY_STREAMS", "3", 1);
    setenv("CONVOY_BLAS_THREADS", "4", 1);
    setenv("CONVOY_ALGO", "time_on_shape_change", 1);
    setenv("CONVOY_EXCLUDE", "gemm, 1x1", 1);
    setenv("CONVOY_REQUIRE", "direct", 1);
    setenv("CONVOY_DETERMINISTIC", "1", 1);
    setenv("CONVOY_EXACT_ONLY", "1", 1);
    setenv("CONVOY_MEMORY_LIMIT", "64M", 1);
    setenv("CONVOY_WORKSPACE_LIMIT", "1024", 1);
    setenv("CONVOY_TUNE_CACHE", "/tmp/tune", 1);
    setenv("CONVOY_TRACE", "/tmp/trace.json", 1);
    setenv("CONVOY_PROFILE", "0", 1);
    setenv("CONVOY_LOG", "stderr", 1);
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    assert_int_equal(convoy_options_from_env(&o), CONVOY_OK);
    assert_int_equal(o.device, CONVOY_DEVICE_CPU);
    assert_int_equal(o.device_index, 2);
    assert_int_equal(o.streams, 3);
    assert_int_equal(o.blas_threads, 4);
    assert_int_equal(o.algo, CONVOY_ALGO_TIME_ON_SHAPE_CHANGE);
    assert_string_equal(o.exclude, "gemm, 1x1");
    assert_string_equal(o.require, "direct");
    assert_int_equal(o.deterministic, 1);
    assert_int_equal(o.exact_only, 1);
    assert_int_equal(o.memory_limit, 64u << 20);
    assert_int_equal(o.workspace_limit, 1024);
    assert_string_equal(o.tune_cache, "/tmp/tune");
    assert_string_equal(o.trace_path, "/tmp/trace.json");
    assert_int_equal(o.profile, 0);
    assert_non_null(o.log_fn);
    /* The test hook is not an option: runtime_create reads it. */
    assert_int_equal(o.test_fail_alloc, 0);

    /* Each suffix, either case. */
    static const struct {
        const char *text;
        size_t bytes;
    } sizes[] = {{"0", 0},         {"7", 7},         {"3k", 3u << 10},
                 {"3K", 3u << 10}, {"5m", 5u << 20}, {"2G", (size_t)2 << 30},
                 {"0012", 12}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        setenv("CONVOY_WORKSPACE_LIMIT", sizes[i].text, 1);
        assert_int_equal(convoy_options_from_env(&o), CONVOY_OK);
        assert_int_equal(o.workspace_limit, sizes[i].bytes);
    }
}

/* from_env changes only the fields whose variables are set and not empty,
 * and keeps a log callback the program installed. */
static void dummy_log(void *user_data, convoy_log_level level, const char *message)
{
    (void)user_data;
    (void)level;
    (void)message;
}

static void test_environment_on_top(void **state)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.streams = 5;
    o.exclude = "direct";
    o.log_fn = dummy_log;
    setenv("CONVOY_ALGO", "time_once", 1);
    setenv("CONVOY_STREAMS", "", 1);
    setenv("CONVOY_EXCLUDE", "", 1);
    setenv("CONVOY_LOG", "stderr", 1);
    assert_int_equal(convoy_options_from_env(&o), CONVOY_OK);
    assert_int_equal(o.algo, CONVOY_ALGO_TIME_ONCE);
    assert_int_equal(o.streams, 5);
    assert_string_equal(o.exclude, "direct");
    assert_ptr_equal(o.log_fn, dummy_log);
    /* Nothing set: nothing changes. */
    clear_environment(NULL);
    convoy_options before = o;
    assert_int_equal(convoy_options_from_env(&o), CONVOY_OK);
    assert_memory_equal(&before, &o, sizeof o);
}

static void test_malformed_environment(void **state)
{
    /* variable, value, the accepted spelling the message must list */
    static const char *const cases[][3] = {
        {"CONVOY_DEVICE", "tpu", "auto|cpu|cuda"},
        {"CONVOY_DEVICE", "gpu", "auto|cpu|cuda"},
        {"CONVOY_DEVICE", "CPU", "auto|cpu|cuda"},
        {"CONVOY_DEVICE_INDEX", "1025", "0..1024"},
        {"CONVOY_DEVICE_INDEX", "-1", "0..1024"},
        {"CONVOY_STREAMS", "abc", "0..64"},
        {"CONVOY_STREAMS", "-2", "0..64"},
        {"CONVOY_STREAMS", "65", "0..64"},
        {"CONVOY_STREAMS", " 3", "digits only"},
        {"CONVOY_STREAMS", "+3", "digits only"},
        {"CONVOY_STREAMS", "3 ", "digits only"},
        {"CONVOY_STREAMS", "99999999999999999999", "0..64"},
        {"CONVOY_BLAS_THREADS", "0x4", "0..1024"},
        {"CONVOY_ALGO", "fastest", "heuristic|time_once|time_on_shape_change"},
        {"CONVOY_EXCLUDE", "gemm,fft", "names from 1x1,"},
        {"CONVOY_EXCLUDE", "gemm,fft:plain", "names from 1x1,"},
        {"CONVOY_REQUIRE", "bogus", "names from 1x1,"},
        {"CONVOY_DETERMINISTIC", "maybe", "0|1"},
        {"CONVOY_DETERMINISTIC", "yes", "0|1"},
        {"CONVOY_EXACT_ONLY", "2", "0|1"},
        {"CONVOY_MEMORY_LIMIT", "12Q", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", " -5", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "-5", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "+5", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", " 5", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "5 ", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "5MB", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "M", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "18446744073709551616", "K, M or G"},
        {"CONVOY_MEMORY_LIMIT", "17179869184G", "K, M or G"},
        {"CONVOY_WORKSPACE_LIMIT", "1.5M", "K, M or G"},
        {"CONVOY_PROFILE", "2", "0|1"},
        {"CONVOY_LOG", "file", "stderr"},
        {"CONVOY_LOG", "STDERR", "stderr"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        clear_environment(NULL);
        setenv(cases[i][0], cases[i][1], 1);
        convoy_options o, defaults;
        assert_int_equal(convoy_options_init(&o), CONVOY_OK);
        assert_int_equal(convoy_options_init(&defaults), CONVOY_OK);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", cases[i][1]);
        EXPECT_ERROR(convoy_options_from_env(&o), CONVOY_ERR_INVALID_ARGUMENT, "options_from_env",
                     cases[i][0], quoted, cases[i][2]);
        /* The malformed variable's field keeps its value. */
        assert_memory_equal(&o, &defaults, sizeof o);
        /* runtime_create(NULL) reads the same environment and refuses too. */
        convoy_runtime *rt = (convoy_runtime *)0x1;
        EXPECT_ERROR(convoy_runtime_create(NULL, &rt), CONVOY_ERR_INVALID_ARGUMENT,
                     "runtime_create", cases[i][0], quoted, cases[i][2]);
        assert_ptr_equal(rt, (convoy_runtime *)0x1);
    }
}

/* With several malformed variables the status and the message both
 * describe the first one (in field order); the well-formed ones apply. */
static void test_first_failure_reported(void **state)
{
    setenv("CONVOY_STREAMS", "abc", 1);
    setenv("CONVOY_ALGO", "time_once", 1);
    setenv("CONVOY_MEMORY_LIMIT", " -5", 1);
    setenv("CONVOY_LOG", "file", 1);
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    EXPECT_ERROR(convoy_options_from_env(&o), CONVOY_ERR_INVALID_ARGUMENT, "CONVOY_STREAMS",
                 "'abc'", "0..64");
    assert_null(strstr(convoy_last_error_message(), "CONVOY_MEMORY_LIMIT"));
    assert_null(strstr(convoy_last_error_message(), "CONVOY_LOG"));
    assert_int_equal(o.algo, CONVOY_ALGO_TIME_ONCE);
    assert_int_equal(o.streams, -1);
    assert_int_equal(o.memory_limit, 0);
    assert_null(o.log_fn);

    unsetenv("CONVOY_STREAMS");
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    EXPECT_ERROR(convoy_options_from_env(&o), CONVOY_ERR_INVALID_ARGUMENT, "CONVOY_MEMORY_LIMIT",
                 "' -5'");
    assert_null(strstr(convoy_last_error_message(), "CONVOY_LOG"));
}

static void test_bad_options_fields(void **state)
{
    convoy_runtime *rt = NULL;
    EXPECT_ERROR(convoy_runtime_create(NULL, NULL), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                 "out");
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.streams = 1000;
    EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                 "options.streams", "1000", "-1..64");
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = (convoy_device)7;
    EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                 "options.device", "7");
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.exclude = "gemm,fft";
    EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                 "options.exclude", "'fft'", "names from 1x1,");
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.require = " tpu";
    EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                 "options.require", "'tpu'", "names from 1x1,");
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.test_fail_alloc = -3;
    EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                 "options.test_fail_alloc", "-3");
    assert_null(rt);
    /* Empty lists, blanks, repeats, any case and candidates of known algorithms are fine. */
    static const char *const fine[] = {"",          ",",          " gemm , direct ",
                                       "GEMM,gemm", "1x1,,cudnn", "onednn:plain,gemm"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; ++i) {
        assert_int_equal(convoy_options_init(&o), CONVOY_OK);
        o.device = CONVOY_DEVICE_CPU;
        o.exclude = fine[i];
        assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
        convoy_runtime_destroy(rt);
        rt = NULL;
    }
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
    o.require = "cudnn";
    assert_int_equal(convoy_runtime_create(&o, &rt) != CONVOY_OK, 1);
    assert_null(rt);
    assert_non_null(strstr(convoy_last_error_message(), "cudnn"));
    o.device = CONVOY_DEVICE_CPU;
    EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_UNSUPPORTED, "runtime_create",
                 "require names cudnn", "cpu backend");
    assert_null(rt);
    /* Requiring what the backend has is no error, whatever the case of the name. */
    o.require = "GEMM,direct";
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    convoy_runtime_destroy(rt);
    rt = NULL;
}

static convoy_runtime *cpu_runtime(const char *exclude, size_t workspace_limit)
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
    convoy_runtime *rt = cpu_runtime(NULL, 0);
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

/* A tight workspace limit shrinks the GEMM path's chunk; below one image's
 * buffer the GEMM path drops out and the direct loops take over (onednn and
 * winograd, whose blocks are fixed, are left out here). */
static void test_workspace_limit_shrinks_chunk(void **state)
{
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t x[4] = {8, 4, 12, 12}, w[4] = {8, 4, 3, 3}, y[4] = {8, 8, 10, 10};
    convoy_runtime *rt = cpu_runtime("onednn,winograd", 0);
    convoy_conv_plan_info full;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &full), CONVOY_OK);
    convoy_runtime_destroy(rt);
    assert_int_equal(full.images_per_chunk, 8);
    size_t per_image = full.workspace_bytes / 8;
    rt = cpu_runtime("onednn,winograd", per_image * 3 + per_image / 2);
    convoy_conv_plan_info tight;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight), CONVOY_OK);
    assert_string_equal(tight.implementation, "gemm");
    assert_true(tight.images_per_chunk >= 1 && tight.images_per_chunk < 8);
    assert_true(tight.workspace_bytes <= per_image * 3 + per_image / 2);
    convoy_runtime_destroy(rt);
    rt = cpu_runtime(NULL, 16);
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight), CONVOY_OK);
    assert_string_equal(tight.implementation, "direct");
    convoy_runtime_destroy(rt);
    /* With direct excluded too, the error gives the numbers. */
    rt = cpu_runtime("direct", 16);
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &tight),
                     CONVOY_ERR_UNSUPPORTED);
    assert_non_null(strstr(convoy_last_error_message(), "16"));
    assert_non_null(strstr(convoy_last_error_message(), "direct: excluded"));
    convoy_runtime_destroy(rt);
}

/* Nothing is left and the message says why for each algorithm: excluded, or
 * refused (1x1; onednn and winograd in a build without oneDNN). */
static void test_everything_excluded(void **state)
{
    convoy_runtime *rt = cpu_runtime("cudnn,gemm,1x1,direct,onednn,winograd,depthwise", 0);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t x[4] = {1, 1, 5, 5}, w[4] = {1, 1, 3, 3}, y[4] = {1, 1, 3, 3};
    convoy_conv_plan_info info;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info),
                     CONVOY_ERR_UNSUPPORTED);
    const char *message = convoy_last_error_message();
    assert_non_null(strstr(message, "conv_explain"));
    assert_non_null(strstr(message, "gemm: excluded"));
    assert_non_null(strstr(message, "direct: excluded"));
    assert_non_null(strstr(message, "1x1: needs a pointwise geometry"));
    assert_non_null(strstr(message, has_onednn(rt) ? "onednn:blocked: excluded"
                                                   : "onednn: convoy was built without oneDNN"));
    assert_non_null(strstr(message, "winograd: "));
    assert_non_null(strstr(message, "depthwise: "));
    convoy_runtime_destroy(rt);
}

/* With no filters (or no channels, or no batch) every sum is empty: the written operand is
 * zero-filled and no workspace is planned for it, whatever the tensors' size. */
static void test_empty_sums_plan_no_workspace(void **state)
{
    convoy_runtime *rt = cpu_runtime(NULL, 0);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    p.border = CONVOY_BORDER_HALF;
    const int64_t x[4] = {8, 64, 56, 56}, w[4] = {0, 64, 3, 3}, y[4] = {8, 0, 56, 56};
    for (int dir = 0; dir < 3; ++dir) {
        convoy_conv_plan_info info;
        assert_int_equal(convoy_conv_explain(rt, &p, (convoy_conv_direction)dir, x, w, y, &info),
                         CONVOY_OK);
        assert_int_equal(info.workspace_bytes, 0);
    }
    convoy_runtime_destroy(rt);
}

static void test_memory_stats(void **state)
{
    convoy_runtime *rt = cpu_runtime(NULL, 0);
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

static void test_status_descriptions(void **state)
{
    static const struct {
        convoy_status status;
        const char *text;
    } texts[] = {
#define STATUS_TEXT_ENTRY(name, value, text) {name, text},
        CONVOY_STATUS_LIST(STATUS_TEXT_ENTRY)
#undef STATUS_TEXT_ENTRY
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; ++i)
        assert_string_equal(convoy_status_description(texts[i].status), texts[i].text);
    assert_string_equal(convoy_status_description(CONVOY_ERR_SHAPE),
                        "tensor shapes do not fit the request");
    assert_string_equal(convoy_status_description(CONVOY_OK), "success");
    static const int outside[4] = {11, 99, -1, 1 << 20};
    for (int i = 0; i < 4; ++i)
        assert_string_equal(convoy_status_description((convoy_status)outside[i]), "unknown status");
}

/* Backend allocations a CPU runtime with one tensor of n floats has made. */
static uint64_t allocations_for_one_tensor(int64_t n)
{
    convoy_runtime *rt = cpu_runtime(NULL, 0);
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
    convoy_memory_statistics stats;
    assert_int_equal(convoy_memory_stats(rt, &stats), CONVOY_OK);
    convoy_tensor_destroy(t);
    convoy_runtime_destroy(rt);
    return stats.backend_allocations;
}

/* CONVOY_TEST_FAIL_ALLOC is a test hook that runtime_create reads even from
 * options that never saw the environment; the options field wins. */
static void test_fail_alloc_hook(void **state)
{
    const int64_t n = 1 << 20;
    const uint64_t count = allocations_for_one_tensor(n);
    assert_true(count >= 1);
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)count);
    setenv("CONVOY_TEST_FAIL_ALLOC", text, 1);
    convoy_runtime *rt = cpu_runtime(NULL, 0);
    convoy_tensor *t = NULL;
    EXPECT_ERROR(convoy_tensor_create(rt, 1, &n, &t), CONVOY_ERR_OUT_OF_MEMORY, "tensor_create",
                 "injected failure");
    assert_null(t);
    convoy_runtime_destroy(rt);

    /* A non-zero field takes precedence over the variable. */
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.test_fail_alloc = 1000;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
    convoy_tensor_destroy(t);
    convoy_runtime_destroy(rt);

    static const char *const bad[] = {"-1", " 2", "2x", "+2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        setenv("CONVOY_TEST_FAIL_ALLOC", bad[i], 1);
        assert_int_equal(convoy_options_init(&o), CONVOY_OK);
        rt = NULL;
        EXPECT_ERROR(convoy_runtime_create(&o, &rt), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create",
                     "CONVOY_TEST_FAIL_ALLOC", "test hook", "digits only");
        assert_null(rt);
    }
}

/* runtime_create copies exclude / require: the program's buffer may change
 * or go away afterwards. */
static void test_option_strings_copied(void **state)
{
    char names[32] = "direct";
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.exclude = names;
    o.workspace_limit = 16;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    memset(names, 0, sizeof names);
    assert_non_null(strstr(convoy_runtime_describe(rt), "exclude direct"));
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t x[4] = {8, 4, 12, 12}, w[4] = {8, 4, 3, 3}, y[4] = {8, 8, 10, 10};
    convoy_conv_plan_info info;
    EXPECT_ERROR(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info),
                 CONVOY_ERR_UNSUPPORTED, "direct: excluded");
    convoy_runtime_destroy(rt);
}

static convoy_status write_ones(const convoy_task_context *context, void *user_data)
{
    (void)user_data;
    for (int64_t i = 0; i < 12; ++i)
        context->data[0][i] = 1.0f;
    return CONVOY_OK;
}

/* Tensor handles the program still holds when the runtime goes are
 * detached: their dims stay readable, other calls refuse them, and destroy
 * frees them. Under AddressSanitizer this also shows nothing is touched
 * after the runtime is gone and nothing leaks. */
static void test_tensor_outlives_runtime(void **state)
{
    const int stream_counts[2] = {0, 2};
    for (int sc = 0; sc < 2; ++sc) {
        convoy_options o;
        assert_int_equal(convoy_options_init(&o), CONVOY_OK);
        o.device = CONVOY_DEVICE_CPU;
        o.streams = stream_counts[sc];
        convoy_runtime *rt = NULL;
        assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
        const int64_t dims[3] = {2, 3, 2}, empty_dims[2] = {4, 0};
        convoy_tensor *t = NULL, *empty = NULL, *busy = NULL;
        assert_int_equal(convoy_tensor_create(rt, 3, dims, &t), CONVOY_OK);
        assert_int_equal(convoy_tensor_create(rt, 2, empty_dims, &empty), CONVOY_OK);
        assert_int_equal(convoy_tensor_create(rt, 3, dims, &busy), CONVOY_OK);
        /* Work still pending on busy when destroy starts (with streams). */
        convoy_access access = {busy, CONVOY_WRITE};
        convoy_task *task = NULL;
        assert_int_equal(convoy_submit(rt, write_ones, NULL, &access, 1, "ones", &task), CONVOY_OK);
        convoy_runtime_destroy(rt);

        assert_int_equal(convoy_task_wait(task), CONVOY_OK);
        convoy_task_release(task);
        assert_int_equal(convoy_tensor_ndim(t), 3);
        assert_int_equal(convoy_tensor_dim(t, 0), 2);
        assert_int_equal(convoy_tensor_dim(t, 2), 2);
        assert_int_equal(convoy_tensor_dim(t, 3), -1);
        assert_int_equal(convoy_tensor_ndim(empty), 2);
        assert_int_equal(convoy_tensor_dim(empty, 1), 0);

        /* Another runtime refuses the detached handle by name. */
        rt = cpu_runtime(NULL, 0);
        float host[12] = {0};
        task = NULL;
        EXPECT_ERROR(convoy_upload(rt, t, host, 12, &task), CONVOY_ERR_INVALID_ARGUMENT, "upload",
                     "dst", "2x3x2", "detached");
        EXPECT_ERROR(convoy_download(rt, busy, host, 12, &task), CONVOY_ERR_INVALID_ARGUMENT,
                     "download", "src", "detached");
        convoy_access stale = {t, CONVOY_READ};
        EXPECT_ERROR(convoy_submit(rt, write_ones, NULL, &stale, 1, "stale", &task),
                     CONVOY_ERR_INVALID_ARGUMENT, "submit", "detached");
        assert_null(task);
        convoy_runtime_destroy(rt);

        convoy_tensor_destroy(t);
        convoy_tensor_destroy(empty);
        convoy_tensor_destroy(busy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults_ignore_environment, clear_environment),
        cmocka_unit_test_setup(test_environment_overrides, clear_environment),
        cmocka_unit_test_setup(test_environment_on_top, clear_environment),
        cmocka_unit_test_setup(test_malformed_environment, clear_environment),
        cmocka_unit_test_setup(test_first_failure_reported, clear_environment),
        cmocka_unit_test_setup(test_bad_options_fields, clear_environment),
        cmocka_unit_test_setup(test_device_fallback, clear_environment),
        cmocka_unit_test_setup(test_explain_and_plan_cache, clear_environment),
        cmocka_unit_test_setup(test_workspace_limit_shrinks_chunk, clear_environment),
        cmocka_unit_test_setup(test_everything_excluded, clear_environment),
        cmocka_unit_test_setup(test_empty_sums_plan_no_workspace, clear_environment),
        cmocka_unit_test_setup(test_memory_stats, clear_environment),
        cmocka_unit_test_setup(test_status_names, clear_environment),
        cmocka_unit_test_setup(test_status_descriptions, clear_environment),
        cmocka_unit_test_setup(test_fail_alloc_hook, clear_environment),
        cmocka_unit_test_setup(test_option_strings_copied, clear_environment),
        cmocka_unit_test_setup(test_tensor_outlives_runtime, clear_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
