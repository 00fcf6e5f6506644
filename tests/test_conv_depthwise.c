/* The depthwise algorithm (AVX-512 stencils on the caller's NCHW tensors) through the public
 * API: the planner picks it for the convolutions it accepts (one input channel per group,
 * stride 1), 2D and 3D, one and several filters per channel, every border mode, dilation and
 * flip, in all three directions, and every result matches the double-precision reference; it
 * fuses a bias and ReLU into the forward convolution; it refuses strides and wider groups with
 * its reason; convoy_conv_explain names it with its workspace. Run with onednn, winograd, gemm
 * and 1x1 excluded, so that it is the fastest algorithm left. On a CPU without AVX-512 it
 * offers nothing: the tests then check that the direct loops run these layers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

#define CHECKED(call) assert_int_equal((call), CONVOY_OK)

/* 1 when the CPU has AVX-512F, so the algorithm runs here. */
static int depthwise_expected(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static void test_depthwise_runs_what_it_accepts(void **state)
{
    static const listed_case list[] = {
        /* the usual depthwise layer; rows of 1, 15, 16, 17 and 70 columns (vectors and blocks
         * of vectors, partial ones) */
        {2, {2, 8, 9, 17}, {8, 1, 3, 3}, 8, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {1, 3, 5, 70}, {3, 1, 3, 3}, 3, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 4, 6, 15}, {4, 1, 3, 3}, 4, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {1, 2, 7, 16}, {2, 1, 3, 3}, 2, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
        {2, {3, 2, 11, 1}, {2, 1, 3, 1}, 2, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        /* several filters per channel, a single-channel input layer, other kernels, dilation,
         * asymmetric and large padding */
        {2, {2, 3, 8, 9}, {6, 1, 3, 3}, 3, CONVOY_BORDER_HALF, {0}, {0}, {0}, {2, 2}},
        {2, {4, 1, 10, 10}, {5, 1, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {1, 4, 9, 20}, {4, 1, 5, 2}, 4, CONVOY_BORDER_EXPLICIT, {3, 0}, {0, 4}, {0}, {2, 3}},
        {2, {2, 2, 6, 6}, {4, 1, 7, 7}, 2, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
        /* 3D, and 3D with a one-plane kernel (the 3x3 path over several planes) */
        {3, {2, 3, 4, 5, 18}, {3, 1, 3, 3, 3}, 3, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {3, {1, 2, 3, 6, 20}, {4, 1, 1, 3, 3}, 2, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {3,
         {1, 2, 5, 4, 6},
         {4, 1, 2, 3, 2},
         2,
         CONVOY_BORDER_EXPLICIT,
         {1, 0, 2},
         {0, 2, 1},
         {0},
         {2, 1, 2}},
    };
    assert_int_equal(case_run_planned(*state, list, (int)(sizeof list / sizeof list[0]),
                                      depthwise_expected() ? "depthwise" : "direct", 1e-5, 11000),
                     0);
}

/* Strides, groups of several channels and unshared filters are not depthwise's: the direct
 * loops run them (the other fast algorithms are excluded). */
static void test_other_geometries_are_not_depthwise(void **state)
{
    static const listed_case list[] = {
        {2, {2, 4, 9, 9}, {4, 1, 3, 3}, 4, CONVOY_BORDER_HALF, {0}, {0}, {2, 2}, {0}},
        {2, {2, 4, 9, 9}, {4, 2, 3, 3}, 2, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {3, {1, 2, 5, 5, 5}, {2, 1, 3, 3, 3}, 2, CONVOY_BORDER_HALF, {0}, {0}, {1, 2, 1}, {0}},
    };
    assert_int_equal(
        case_run_planned(*state, list, (int)(sizeof list / sizeof list[0]), "direct", 1e-5, 12000),
        0);
    /* The planner quotes the reason. */
    convoy_conv_params p = case_listed_params(&list[0]);
    conv_case c;
    assert_true(case_init(&c, &p, list[0].in, list[0].filt));
    convoy_options o;
    case_options(&o);
    o.exclude = "onednn,winograd,gemm,1x1,direct";
    convoy_runtime *rt = NULL;
    CHECKED(convoy_runtime_create(&o, &rt));
    convoy_conv_plan_info info;
    assert_int_equal(
        convoy_conv_explain(rt, &c.params, CONVOY_CONV_FORWARD, c.in, c.filt, c.out, &info),
        CONVOY_ERR_UNSUPPORTED);
    assert_non_null(strstr(convoy_last_error_message(),
                           depthwise_expected() ? "depthwise: needs one input channel per group"
                                                : "depthwise: needs an x86-64 CPU with AVX-512F"));
    convoy_runtime_destroy(rt);
}

/* The workspace is one padded plane per thread, and explain says so. */
static void test_explain_names_it(void **state)
{
    if (!depthwise_expected())
        skip();
    const listed_case l = {
        2, {8, 64, 28, 28}, {64, 1, 3, 3}, 64, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}};
    convoy_conv_params p = case_listed_params(&l);
    conv_case c;
    assert_true(case_init(&c, &p, l.in, l.filt));
    convoy_conv_plan_info info;
    assert_string_equal(case_planned(*state, &c, CONVOY_CONV_BACKWARD_DATA, &info), "depthwise");
    assert_string_equal(info.algorithm, "depthwise");
    assert_int_equal(info.images_per_chunk, 0);
    /* At least one 30-row plane padded to 48 columns, at most one per core. */
    assert_true(info.workspace_bytes >= 30 * 48 * sizeof(float));
    assert_true(info.workspace_bytes <= 1024 * 30 * 48 * sizeof(float));
}

/* conv_forward_bias_act on depthwise: the bias and ReLU applied as each vector is stored. */
static void test_fused_bias_relu(void **state)
{
    convoy_runtime *rt = *state;
    const listed_case l = {2,   {2, 6, 7, 21}, {12, 1, 3, 3}, 6,  CONVOY_BORDER_HALF,
                           {0}, {0},           {0},           {0}};
    convoy_conv_params p = case_listed_params(&l);
    conv_case c;
    assert_true(case_init(&c, &p, l.in, l.filt));
    convoy_conv_plan_info info;
    assert_string_equal(case_planned(rt, &c, CONVOY_CONV_FORWARD, &info),
                        depthwise_expected() ? "depthwise" : "direct");
    assert_true(case_check_bias_relu(rt, &c, 13000, 1e-5));
}

int main(int argc, char **argv)
{
    int device = case_device_check("test_conv_depthwise", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_depthwise_runs_what_it_accepts, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_other_geometries_are_not_depthwise, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_explain_names_it, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_fused_bias_relu, case_setup, case_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
