/* Size arithmetic on hostile dims: every element count, byte size and
 * workspace formula is checked, so huge dims are CONVOY_ERR_SHAPE naming the
 * tensor and never a wrapped size, and empty tensors never lead to pointer
 * arithmetic on NULL. Meant to run under UBSan (make test-sanitize), where
 * an unchecked product is a failure even when the result looks right. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "convoy.h"
#include "core/checked_math.h"
#include "cpu/conv_cpu.h"
#include "kernels/gemm_driver.h"

#define P31 ((int64_t)1 << 31)
#define P40 ((int64_t)1 << 40)
#define P62 ((int64_t)1 << 62)

static convoy_runtime *cpu_runtime(convoy_algo_policy policy)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.algo = policy;
    o.tune_cache = NULL;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    return rt;
}

/* explain must fail with CONVOY_ERR_SHAPE and a message naming the tensor. */
static void expect_shape_error(convoy_runtime *rt, const convoy_conv_params *p, const int64_t *x,
                               const int64_t *w, const int64_t *y, const char *tensor)
{
    for (int d = 0; d <= CONVOY_CONV_BACKWARD_FILTER; ++d) {
        convoy_conv_plan_info info;
        convoy_status s = convoy_conv_explain(rt, p, (convoy_conv_direction)d, x, w, y, &info);
        assert_int_equal(s, CONVOY_ERR_SHAPE);
        const char *message = convoy_last_error_message();
        assert_non_null(strstr(message, "conv_explain"));
        assert_non_null(strstr(message, tensor));
    }
}

static void test_checked_math(void **state)
{
    int64_t i = 0;
    size_t z = 0;
    assert_true(convoy__mul_i64(P31, P31, &i) && i == P62);
    assert_false(convoy__mul_i64(P62, 2, &i));
    assert_false(convoy__mul_i64(INT64_MIN, -1, &i));
    assert_true(convoy__add_i64(INT64_MAX - 1, 1, &i) && i == INT64_MAX);
    assert_false(convoy__add_i64(INT64_MAX, 1, &i));
    const int64_t late_zero[3] = {P62, 4, 0};
    assert_false(convoy__product_i64(late_zero, 3, &i));
    const int64_t early_zero[3] = {0, P62, 4};
    assert_true(convoy__product_i64(early_zero, 3, &i) && i == 0);
    assert_true(convoy__product_i64(NULL, 0, &i) && i == 1);
    assert_true(convoy__bytes_of(P31, 4, &z) && z == ((size_t)1 << 33));
    assert_false(convoy__bytes_of(P62, 4, &z));
    assert_false(convoy__bytes_of(-1, 4, &z));
    assert_int_equal(convoy__mul_size_saturating(SIZE_MAX / 2, 3), SIZE_MAX);
    assert_int_equal(convoy__add_size_saturating(SIZE_MAX, 1), SIZE_MAX);
    assert_int_equal(convoy__add_size_saturating(2, 3), 5);
}

/* A pointwise shape of 2^31 x 2^31 pixels: 2^62 floats, which int64 counts
 * but no size_t byte count holds. time_once would have timed it on scratch
 * buffers of that size. */
static void test_explain_rejects_unaddressable_tensors(void **state)
{
    convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_TIME_ONCE);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    const int64_t x[4] = {1, 1, P31, P31}, w[4] = {1, 1, 1, 1}, y[4] = {1, 1, P31, P31};
    expect_shape_error(rt, &p, x, w, y, "input");
    assert_non_null(strstr(convoy_last_error_message(), "bytes"));
    int64_t out[4];
    assert_int_equal(convoy_conv_output_dims(&p, x, w, out), CONVOY_ERR_SHAPE);
    assert_non_null(strstr(convoy_last_error_message(), "input"));

    /* Element counts beyond int64, one tensor at a time. */
    const int64_t xh[4] = {P31, 1, P31, P31}, yh[4] = {P31, 1, P31, P31};
    expect_shape_error(rt, &p, xh, w, yh, "input");
    assert_non_null(strstr(convoy_last_error_message(), "elements"));
    const int64_t xw[4] = {1, 1, 1, P40}, ww[4] = {P40, 1, 1, (int64_t)1 << 30};
    const int64_t yw[4] = {1, P40, 1, P40 - ((int64_t)1 << 30) + 1};
    expect_shape_error(rt, &p, xw, ww, yw, "filters");
    const int64_t xo[4] = {1, 1, P31, (int64_t)1 << 30}, wo[4] = {8, 1, 1, 1};
    const int64_t yo[4] = {1, 8, P31, (int64_t)1 << 30};
    expect_shape_error(rt, &p, xo, wo, yo, "output");
    assert_int_equal(convoy_conv_output_dims(&p, xo, wo, out), CONVOY_ERR_SHAPE);
    assert_non_null(strstr(convoy_last_error_message(), "output"));
    convoy_runtime_destroy(rt);
}

/* filter_channels * groups wrapped to 0 and matched a 0-channel input. */
static void test_channel_product_is_checked(void **state)
{
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    p.groups = 4;
    const int64_t x[4] = {1, 0, 5, 5}, w[4] = {4, P62, 3, 3};
    int64_t out[4];
    assert_int_equal(convoy_conv_output_dims(&p, x, w, out), CONVOY_ERR_SHAPE);
    assert_non_null(strstr(convoy_last_error_message(), "filters"));
    p.groups = 2;
    const int64_t w2[4] = {2, P62, 3, 3};
    assert_int_equal(convoy_conv_output_dims(&p, x, w2, out), CONVOY_ERR_SHAPE);
}

/* An empty batch or empty filters makes a tensor's element count 0, but the
 * geometry's own products (spatial volumes, im2col rows) must still fit:
 * every backend multiplies them. */
static void test_products_of_empty_tensors_are_checked(void **state)
{
    convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_HEURISTIC);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 3), CONVOY_OK);
    const int64_t x3[5] = {0, 0, P40, P40, P40}, w3[5] = {1, 0, 1, 1, 1};
    const int64_t y3[5] = {0, 1, P40, P40, P40};
    expect_shape_error(rt, &p, x3, w3, y3, "input");
    assert_int_equal(convoy_conv_params_init(&p, 2), CONVOY_OK);
    /* 2^40 channels times a 1 x 2^40 kernel: 2^80 im2col rows. */
    const int64_t x[4] = {0, P40, 1, P40}, w[4] = {0, P40, 1, P40}, y[4] = {0, 0, 1, 1};
    expect_shape_error(rt, &p, x, w, y, "filters");
    /* Legal empty tensors still plan. */
    const int64_t xe[4] = {0, 3, 8, 8}, we[4] = {4, 3, 3, 3}, ye[4] = {0, 4, 6, 6};
    convoy_conv_plan_info info;
    assert_int_equal(convoy_conv_explain(rt, &p, CONVOY_CONV_FORWARD, xe, we, ye, &info),
                     CONVOY_OK);
    /* An empty batch runs nothing and needs no workspace, even where the
     * GEMM formula for one image saturates (found by fuzz_conv_params:
     * explain reported SIZE_MAX bytes, which a submit then asked the pool
     * for). Unshared filters (M, oH, oW, C/g, kH, kW), none of them, in 2^31
     * groups of one channel: one image's column matrix would be 2^31 rows of
     * 2^31 positions. */
    p.unshared = 1;
    p.groups = P31;
    const int64_t xu[4] = {0, P31, P31, 1}, wu[6] = {0, P31, 1, 1, 1, 1};
    const int64_t yu[4] = {0, 0, P31, 1};
    for (int d = 0; d <= CONVOY_CONV_BACKWARD_FILTER; ++d) {
        assert_int_equal(convoy_conv_explain(rt, &p, (convoy_conv_direction)d, xu, wu, yu, &info),
                         CONVOY_OK);
        assert_int_equal(info.workspace_bytes, 0);
        assert_int_equal(info.images_per_chunk, 0);
    }
    convoy_runtime_destroy(rt);
}

/* The GEMM workspace formula and the CPU chunk hint saturate instead of
 * overflowing, whatever geometry they are handed. */
static void test_workspace_math_saturates(void **state)
{
    convoy__conv_geom g;
    memset(&g, 0, sizeof g);
    g.spatial_dims = 2;
    g.batch = 1;
    g.in_channels = P40;
    g.out_channels = 1;
    g.groups = 1;
    for (int a = 0; a < 3; ++a)
        g.in[a] = g.kernel[a] = g.out[a] = g.stride[a] = g.dilation[a] = 1;
    g.in[2] = g.kernel[2] = P40;
    for (int d = 0; d <= CONVOY_CONV_BACKWARD_FILTER; ++d) {
        assert_int_equal(convoy__gemm_workspace_per_image(&g, (convoy_conv_direction)d), SIZE_MAX);
        assert_int_equal(convoy__gemm_workspace_fixed(&g, (convoy_conv_direction)d), 0);
    }
    assert_int_equal(convoy__cpu_gemm_chunk_hint(&g), 1);
    g.unshared = 1;
    g.out[2] = P40;
    assert_int_equal(convoy__gemm_workspace_fixed(&g, CONVOY_CONV_FORWARD), SIZE_MAX);
    assert_int_equal(convoy__gemm_workspace_per_image(&g, CONVOY_CONV_FORWARD), 0);
}

/* An input with no elements on an axis, whose padding still gives outputs:
 * its storage is NULL, and no path may offset that pointer (UBSan: "applying
 * zero offset to null pointer"). The output and the filter gradient are
 * zeros. */
static void test_empty_input_never_offsets_null(void **state)
{
    convoy__conv_geom g;
    memset(&g, 0, sizeof g);
    g.spatial_dims = 2;
    g.batch = 2;
    g.in_channels = 3;
    g.out_channels = 2;
    g.groups = 1;
    g.flip = 1;
    for (int a = 0; a < 3; ++a)
        g.in[a] = g.kernel[a] = g.out[a] = g.stride[a] = g.dilation[a] = 1;
    g.in[1] = 0; /* no rows */
    g.in[2] = 4;
    g.kernel[1] = g.kernel[2] = 3;
    g.pad_before[1] = g.pad_after[1] = g.pad_before[2] = g.pad_after[2] = 2;
    g.out[1] = 2;
    g.out[2] = 6;
    float output[2 * 2 * 2 * 6], filters[2 * 3 * 3 * 3];
    for (size_t i = 0; i < sizeof filters / sizeof *filters; ++i)
        filters[i] = 1.0f;
    float workspace[4096];
    for (int d = 0; d <= CONVOY_CONV_BACKWARD_FILTER; ++d) {
        for (int path = 0; path < 2; ++path) {
            for (size_t i = 0; i < sizeof output / sizeof *output; ++i)
                output[i] = d == CONVOY_CONV_FORWARD ? 7.0f : 1.0f;
            float written_filters[2 * 3 * 3 * 3];
            memcpy(written_filters, filters, sizeof filters);
            if (d == CONVOY_CONV_BACKWARD_FILTER)
                memset(written_filters, 0x7f, sizeof written_filters);
            convoy__conv_buffers b = {NULL, written_filters, output, 0};
            if (path == 0) {
                assert_int_equal(convoy__gemm_conv(&convoy__cpu_gemm_ops, &g,
                                                   (convoy_conv_direction)d, &b, 2, workspace,
                                                   sizeof workspace),
                                 CONVOY_OK);
            } else {
                convoy__cpu_conv_direct(&g, (convoy_conv_direction)d, &b);
            }
            if (d == CONVOY_CONV_FORWARD) {
                for (size_t i = 0; i < sizeof output / sizeof *output; ++i)
                    assert_true(output[i] == 0.0f);
            } else if (d == CONVOY_CONV_BACKWARD_FILTER) {
                for (size_t i = 0; i < sizeof written_filters / sizeof *written_filters; ++i)
                    assert_true(written_filters[i] == 0.0f);
            }
        }
    }
}

/* A kernel 2^31 - 1 wide with full padding: valid, and planned, but not by oneDNN, whose
 * kernels index such extents in 32 bits (its primitive creation divided by zero on it). */
static void test_extents_beyond_onednn_are_refused(void **state)
{
    (void)state;
    convoy_runtime *rt = cpu_runtime(CONVOY_ALGO_HEURISTIC);
    convoy_conv_params p;
    assert_int_equal(convoy_conv_params_init(&p, 3), CONVOY_OK);
    p.border = CONVOY_BORDER_FULL;
    const int64_t x[5] = {8, 1, 1, 1, 1}, w[5] = {1, 1, 1, 1, INT32_MAX};
    int64_t y[5];
    assert_int_equal(convoy_conv_output_dims(&p, x, w, y), CONVOY_OK);
    for (int dir = 0; dir < 3; ++dir) {
        convoy_conv_plan_info info;
        assert_int_equal(convoy_conv_explain(rt, &p, (convoy_conv_direction)dir, x, w, y, &info),
                         CONVOY_OK);
        assert_string_not_equal(info.implementation, "onednn");
    }
    convoy_runtime_destroy(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checked_math),
        cmocka_unit_test(test_explain_rejects_unaddressable_tensors),
        cmocka_unit_test(test_channel_product_is_checked),
        cmocka_unit_test(test_products_of_empty_tensors_are_checked),
        cmocka_unit_test(test_workspace_math_saturates),
        cmocka_unit_test(test_empty_input_never_offsets_null),
        cmocka_unit_test(test_extents_beyond_onednn_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
