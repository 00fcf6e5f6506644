/* The winograd algorithm (oneDNN's F(4x4, 3x3) Winograd convolutions) through the public API:
 * the planner picks it for the 2D 3x3 stride-1 convolutions it accepts, in every direction and
 * both flip settings, and the results stay within WINOGRAD_TOLERANCE of the double-precision
 * reference, looser than the 1e-5 every exact algorithm is held to; it never runs anything
 * else; CONVOY_EXACT_ONLY (options.exact_only) and CONVOY_EXCLUDE=winograd remove it;
 * convoy_conv_explain names it with its workspace; and a fused bias + ReLU stays in bound. Run with
 * exact_only=0 and onednn, gemm and 1x1 excluded on its command line, so that winograd is the
 * fastest algorithm left. On a machine without AVX-512 oneDNN has no Winograd kernel: the algorithm
 * then offers nothing, and the tests check that the planner falls back to the direct loops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

/* The bound on winograd's error, in units of max(1, ||ref||_inf): 15 times the worst error
 * tests/test_conv_kernels.c measured (3.3e-6, also on the suite's 3x3 layers), 5 times the
 * tolerance of the exact algorithms (docs/DESIGN.md, section 4). */
#define WINOGRAD_TOLERANCE 5e-5

/* 1 when oneDNN runs AVX-512 kernels here, so its Winograd kernels exist. */
static int winograd_expected(convoy_runtime *rt)
{
    const char *describe = convoy_runtime_describe(rt);
    return strstr(describe, "oneDNN ") && strstr(describe, "avx512") &&
           !strstr(describe, "without oneDNN");
}

static void test_winograd_runs_3x3_stride_1(void **state)
{
    static const listed_case list[] = {
        /* channels oneDNN blocks by 16, and odd ones; padded and not; non-square images */
        {2, {2, 16, 12, 12}, {16, 16, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {3, 32, 9, 11}, {16, 32, 3, 3}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {2, 64, 14, 14}, {32, 64, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {1, 128, 7, 7}, {64, 128, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 3, 10, 9}, {5, 3, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 16, 8, 9}, {16, 16, 3, 3}, 1, CONVOY_BORDER_EXPLICIT, {0, 1}, {0, 1}, {0}, {0}},
    };
    convoy_runtime *rt = *state;
    const char *expected = winograd_expected(rt) ? "winograd" : "direct";
    assert_int_equal(case_run_planned(rt, list, (int)(sizeof list / sizeof list[0]), expected,
                                      WINOGRAD_TOLERANCE, 9000),
                     0);
}

/* Strides, dilation, groups, other kernels, 3D and asymmetric padding (oneDNN 2.6.3's Winograd
 * backward data gets it wrong) are not winograd's: the direct loops run them (onednn, gemm and
 * 1x1 are excluded), exactly. */
static void test_other_geometries_are_not_winograd(void **state)
{
    static const listed_case list[] = {
        {2, {2, 16, 12, 12}, {16, 16, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {2, 2}, {0}},
        {2, {2, 16, 12, 12}, {16, 16, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {2, 2}},
        {2, {2, 16, 12, 12}, {16, 4, 3, 3}, 4, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 16, 12, 12}, {16, 16, 5, 5}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 16, 12, 12}, {16, 16, 1, 3}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {3, {1, 16, 4, 6, 6}, {16, 16, 3, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 16, 8, 9}, {16, 16, 3, 3}, 1, CONVOY_BORDER_EXPLICIT, {1, 0}, {0, 1}, {0}, {0}},
        {2, {2, 16, 8, 9}, {16, 16, 3, 3}, 1, CONVOY_BORDER_EXPLICIT, {1, 1}, {1, 0}, {0}, {0}},
    };
    assert_int_equal(
        case_run_planned(*state, list, (int)(sizeof list / sizeof list[0]), "direct", 1e-5, 9500),
        0);
}

/* A runtime with the options of this run, changed by exact_only and exclude. */
static convoy_runtime *runtime_with(int exact_only, const char *exclude)
{
    convoy_options o;
    case_options(&o);
    o.exact_only = exact_only;
    o.exclude = exclude;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    return rt;
}

/* CONVOY_EXACT_ONLY and CONVOY_EXCLUDE=winograd take it out; explain names it and its
 * workspace otherwise. */
static void test_exact_only_and_exclude_remove_it(void **state)
{
    const listed_case l = {
        2, {2, 32, 14, 14}, {32, 32, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}};
    convoy_conv_params p = case_listed_params(&l);
    conv_case c;
    assert_true(case_init(&c, &p, l.in, l.filt));
    convoy_conv_plan_info info;
    if (winograd_expected(*state)) {
        assert_string_equal(case_planned(*state, &c, CONVOY_CONV_FORWARD, &info), "winograd");
        assert_string_equal(info.algorithm, "winograd");
        assert_int_equal(info.images_per_chunk, 0);
        /* At least the flipped copy of the filters and the blocked input. */
        assert_true(info.workspace_bytes >= (size_t)(32 * 32 * 9 + 2 * 32 * 14 * 14) * 4);
    }
    convoy_runtime *exact = runtime_with(1, "onednn,gemm,1x1");
    for (int dir = 0; dir < 3; ++dir)
        assert_string_equal(case_planned(exact, &c, (convoy_conv_direction)dir, &info), "direct");
    convoy_runtime_destroy(exact);
    convoy_runtime *excluded = runtime_with(0, "onednn,gemm,1x1,winograd");
    for (int dir = 0; dir < 3; ++dir)
        assert_string_equal(case_planned(excluded, &c, (convoy_conv_direction)dir, &info),
                            "direct");
    convoy_runtime_destroy(excluded);

    /* With everything else excluded, exact_only leaves nothing, and the message says why
     * winograd does not count. */
    convoy_runtime *none = runtime_with(1, "onednn,gemm,1x1,direct");
    convoy_status status =
        convoy_conv_explain(none, &c.params, CONVOY_CONV_FORWARD, c.in, c.filt, c.out, &info);
    assert_int_equal(status, CONVOY_ERR_UNSUPPORTED);
    if (winograd_expected(*state))
        assert_non_null(strstr(convoy_last_error_message(), "winograd: not exact"));
    convoy_runtime_destroy(none);
}

/* conv_forward_bias_act on winograd: the bias and ReLU fused into oneDNN's Winograd primitive
 * (a variant of the plan), within winograd's bound of the reference. */
static void test_fused_bias_relu(void **state)
{
    convoy_runtime *rt = *state;
    const listed_case l = {
        2, {2, 32, 14, 14}, {32, 32, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}};
    convoy_conv_params p = case_listed_params(&l);
    conv_case c;
    assert_true(case_init(&c, &p, l.in, l.filt));
    convoy_conv_plan_info info;
    assert_string_equal(case_planned(rt, &c, CONVOY_CONV_FORWARD, &info),
                        winograd_expected(rt) ? "winograd" : "direct");
    assert_true(case_check_bias_relu(rt, &c, 9700, WINOGRAD_TOLERANCE));
}

int main(int argc, char **argv)
{
    int device = case_device_check("test_conv_winograd", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_winograd_runs_3x3_stride_1, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_other_geometries_are_not_winograd, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_exact_only_and_exclude_remove_it, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_fused_bias_relu, case_setup, case_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
