/* The oneDNN convolutions through the public API: the runtime's description names oneDNN and
 * its version, the planner picks the onednn algorithm for every convolution it accepts (every
 * direction, flip on and off, groups, depthwise, dilation, stride, asymmetric pads, 2D and 3D)
 * and the direct loops for the ones it refuses (unshared filters, empty tensors), every
 * result matches the double-precision reference, and the filters a plan keeps reordered are
 * reordered again whenever anything writes them. Registered only in builds with oneDNN, and run
 * with gemm and 1x1 excluded (exclude=gemm,1x1 on its command line) so that onednn is the
 * fastest algorithm left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

static void test_describe_names_onednn(void **state)
{
    const char *describe = convoy_runtime_describe(*state);
    const char *at = strstr(describe, "oneDNN ");
    assert_non_null(at);
    /* "oneDNN 2.6.3 (avx512_core, 2 OpenMP threads per task)" */
    assert_true(at[7] >= '1' && at[7] <= '9');
    assert_non_null(strstr(describe, "OpenMP thread"));
    assert_null(strstr(describe, "without oneDNN"));
}

static void test_onednn_runs_what_it_accepts(void **state)
{
    static const listed_case list[] = {
        /* dense, the layer shapes of a small network */
        {2, {2, 16, 12, 12}, {24, 16, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {3, 5, 9, 8}, {7, 5, 3, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {2, 3, 11, 10}, {8, 3, 5, 5}, 1, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
        /* stride, dilation, both, and stride with a remainder on the input */
        {2, {2, 8, 13, 11}, {8, 8, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {2, 2}, {0}},
        {2, {2, 8, 13, 11}, {8, 8, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {2, 3}},
        {2, {1, 4, 14, 15}, {6, 4, 3, 2}, 1, CONVOY_BORDER_FULL, {0}, {0}, {3, 2}, {2, 2}},
        /* asymmetric padding, some larger than the kernel */
        {2, {2, 6, 9, 9}, {4, 6, 3, 3}, 1, CONVOY_BORDER_EXPLICIT, {2, 0}, {0, 3}, {0}, {0}},
        {2, {2, 6, 9, 9}, {4, 6, 2, 3}, 1, CONVOY_BORDER_EXPLICIT, {4, 1}, {0, 5}, {2, 1}, {1, 2}},
        /* groups, depthwise (with a channel multiplier), 1x1 kernels */
        {2, {2, 8, 10, 9}, {12, 2, 3, 3}, 4, CONVOY_BORDER_HALF, {0}, {0}, {1, 2}, {0}},
        {2, {2, 16, 10, 10}, {16, 1, 3, 3}, 16, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2,
         {2, 6, 9, 10},
         {12, 1, 3, 3},
         6,
         CONVOY_BORDER_EXPLICIT,
         {1, 2},
         {2, 0},
         {2, 1},
         {2, 1}},
        {2, {2, 12, 7, 7}, {8, 12, 1, 1}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {2, 12, 7, 7}, {9, 4, 1, 1}, 3, CONVOY_BORDER_EXPLICIT, {1, 0}, {0, 1}, {2, 2}, {0}},
        /* 3D: dense, strided and dilated, grouped, depthwise, asymmetric pads */
        {3, {2, 4, 6, 7, 5}, {6, 4, 3, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {3,
         {1, 3, 7, 6, 8},
         {4, 3, 2, 3, 2},
         1,
         CONVOY_BORDER_FULL,
         {0},
         {0},
         {2, 1, 3},
         {1, 2, 1}},
        {3,
         {2, 6, 5, 5, 6},
         {6, 2, 2, 2, 3},
         3,
         CONVOY_BORDER_VALID,
         {0},
         {0},
         {1, 1, 2},
         {2, 1, 1}},
        {3, {1, 4, 5, 6, 5}, {8, 1, 3, 3, 3}, 4, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {3,
         {2, 3, 5, 4, 6},
         {2, 3, 2, 3, 2},
         1,
         CONVOY_BORDER_EXPLICIT,
         {1, 0, 2},
         {0, 2, 1},
         {2, 1, 1},
         {1, 1, 2}},
    };
    assert_int_equal(
        case_run_planned(*state, list, (int)(sizeof list / sizeof list[0]), "onednn", 1e-5, 7000),
        0);
}

/* Empty tensors and unshared filters are not oneDNN's: the direct loops run them. */
static void test_refused_cases_fall_back(void **state)
{
    static const listed_case empty[] = {
        {2, {0, 2, 6, 6}, {3, 2, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 0, 6, 6}, {4, 0, 3, 3}, 2, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
        {3, {1, 1, 6, 6, 6}, {0, 1, 2, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
    };
    convoy_runtime *rt = *state;
    int failures =
        case_run_planned(rt, empty, (int)(sizeof empty / sizeof empty[0]), "direct", 1e-5, 7500);

    convoy_conv_params p = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
    p.unshared = 1;
    const int64_t in[4] = {2, 3, 5, 6}, filt[6] = {2, 4, 5, 3, 2, 2};
    conv_case c;
    assert_true(case_init(&c, &p, in, filt));
    for (int dir = 0; dir < 3; ++dir) {
        convoy_conv_plan_info info;
        const char *impl = case_planned(rt, &c, (convoy_conv_direction)dir, &info);
        if (strcmp(impl, "direct")) {
            printf("  FAIL unshared %s planned on %s\n", case_direction_names[dir], impl);
            ++failures;
        }
    }
    failures += case_check_all(rt, &c, 7600);
    assert_int_equal(failures, 0);
}

/* ---- the plan's copy of the reordered filters ---------------------------------------------- */

#define CHECKED(call) assert_int_equal((call), CONVOY_OK)

static convoy_tensor *tensor(convoy_runtime *rt, int rank, const int64_t *dims)
{
    convoy_tensor *t = NULL;
    CHECKED(convoy_tensor_create(rt, rank, dims, &t));
    return t;
}

static void upload(convoy_runtime *rt, convoy_tensor *t, const float *host, int64_t count)
{
    CHECKED(convoy_upload(rt, t, host, (size_t)count, NULL));
}

/* Downloads t and waits, so every task before has run. */
static void download(convoy_runtime *rt, convoy_tensor *t, float *host, int64_t count)
{
    convoy_task *task = NULL;
    CHECKED(convoy_download(rt, t, host, (size_t)count, &task));
    CHECKED(convoy_task_wait(task));
    convoy_task_release(task);
}

/* A custom task that writes the filters in place: 2 * the value, in stream order. */
static convoy_status double_in_place(const convoy_task_context *context, void *user_data)
{
    const int64_t *count = user_data;
    for (int64_t i = 0; i < *count; ++i)
        context->data[0][i] *= 2.0f;
    return CONVOY_OK;
}

/* onednn:blocked keeps large filters reordered while their tensor is not written again, and
 * reorders them afresh after anything writes them: an upload, a custom task, a filter
 * gradient computed into them. Every result against the reference, in both flip settings.
 * The kept copy is memory in use until the runtime goes. */
static void test_filters_rewritten_between_calls(void **state)
{
    convoy_runtime *rt = *state;
    /* 128x128x3x3 filters: 576 KiB, enough for the plan to keep them (CACHED_FILTER_BYTES). */
    const listed_case l = {
        2, {2, 128, 8, 8}, {128, 128, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}};
    for (int flip = 0; flip <= 1; ++flip) {
        convoy_conv_params p = case_listed_params(&l);
        p.flip = flip;
        conv_case c;
        assert_true(case_init(&c, &p, l.in, l.filt));
        convoy_conv_plan_info info;
        assert_string_equal(case_planned(rt, &c, CONVOY_CONV_FORWARD, &info), "onednn");
        assert_string_equal(info.algorithm, "onednn:blocked");
        assert_string_equal(case_planned(rt, &c, CONVOY_CONV_BACKWARD_DATA, &info), "onednn");
        int64_t nx = ref_input_numel(&c.geom), nw = ref_filter_numel(&c.geom);
        int64_t ny = ref_output_numel(&c.geom);
        float *x = malloc((size_t)nx * sizeof *x), *dx = malloc((size_t)nx * sizeof *dx);
        float *w = malloc((size_t)nw * sizeof *w), *w2 = malloc((size_t)nw * sizeof *w2);
        float *y = malloc((size_t)ny * sizeof *y), *dy = malloc((size_t)ny * sizeof *dy);
        double *ref = malloc((size_t)(nx > ny ? nx : ny) * sizeof *ref);
        assert_true(x && dx && w && w2 && y && dy && ref);
        case_rng rng;
        case_rng_seed(&rng, 8100 + (uint64_t)flip);
        case_fill(&rng, x, nx);
        case_fill(&rng, w, nw);
        case_fill(&rng, w2, nw);
        case_fill(&rng, dy, ny);
        convoy_tensor *tx = tensor(rt, 4, c.in), *tw = tensor(rt, 4, c.filt);
        convoy_tensor *ty = tensor(rt, 4, c.out), *tdy = tensor(rt, 4, c.out);
        convoy_tensor *tdx = tensor(rt, 4, c.in);
        upload(rt, tx, x, nx);
        upload(rt, tdy, dy, ny);
        int failures = 0;

        /* The same filters twice, then new ones uploaded into the same tensor. */
        upload(rt, tw, w, nw);
        ref_conv_forward(&c.geom, x, w, ref);
        for (int again = 0; again < 2; ++again) {
            CHECKED(convoy_conv_forward(rt, &c.params, tx, tw, ty, NULL));
            download(rt, ty, y, ny);
            failures += !case_compare("forward, filters uploaded", y, ref, ny, 1e-5);
        }
        upload(rt, tw, w2, nw);
        CHECKED(convoy_conv_forward(rt, &c.params, tx, tw, ty, NULL));
        download(rt, ty, y, ny);
        ref_conv_forward(&c.geom, x, w2, ref);
        failures += !case_compare("forward, new filters uploaded", y, ref, ny, 1e-5);

        /* A custom task writes them in place. */
        int64_t count = nw;
        convoy_access access = {tw, CONVOY_READ_WRITE};
        CHECKED(convoy_submit(rt, double_in_place, &count, &access, 1, "double", NULL));
        for (int64_t i = 0; i < nw; ++i)
            w2[i] *= 2.0f;
        CHECKED(convoy_conv_forward(rt, &c.params, tx, tw, ty, NULL));
        download(rt, ty, y, ny);
        ref_conv_forward(&c.geom, x, w2, ref);
        failures += !case_compare("forward, filters written by a custom task", y, ref, ny, 1e-5);
        CHECKED(convoy_conv_backward_data(rt, &c.params, tw, tdy, tdx, NULL));
        CHECKED(convoy_conv_backward_data(rt, &c.params, tw, tdy, tdx, NULL));
        download(rt, tdx, dx, nx);
        ref_conv_backward_data(&c.geom, w2, dy, ref);
        failures += !case_compare("backward data, the same filters", dx, ref, nx, 1e-5);

        /* A filter gradient computed into them, then read by the forward convolution. */
        CHECKED(convoy_conv_backward_filter(rt, &c.params, tx, tdy, tw, NULL));
        download(rt, tw, w2, nw);
        CHECKED(convoy_conv_forward(rt, &c.params, tx, tw, ty, NULL));
        download(rt, ty, y, ny);
        ref_conv_forward(&c.geom, x, w2, ref);
        failures += !case_compare("forward, filters from a filter gradient", y, ref, ny, 1e-5);
        CHECKED(convoy_conv_backward_data(rt, &c.params, tw, tdy, tdx, NULL));
        download(rt, tdx, dx, nx);
        ref_conv_backward_data(&c.geom, w2, dy, ref);
        failures +=
            !case_compare("backward data, filters from a filter gradient", dx, ref, nx, 1e-5);

        /* A training step: the fused bias + ReLU forward twice with the same filters (the
         * epilogue variant on the kept copy), an SGD step writes them, and the fused forward
         * then reads the stepped filters. */
        const int64_t bias_dims[1] = {c.filt[0]};
        convoy_tensor *tb = tensor(rt, 1, bias_dims), *tgw = tensor(rt, 4, c.filt);
        float *b = malloc((size_t)c.filt[0] * sizeof *b), *gw = malloc((size_t)nw * sizeof *gw);
        assert_true(b && gw);
        case_fill(&rng, b, c.filt[0]);
        case_fill(&rng, gw, nw);
        upload(rt, tb, b, c.filt[0]);
        upload(rt, tgw, gw, nw);
        convoy_sgd_params sgd;
        CHECKED(convoy_sgd_params_init(&sgd));
        sgd.lr = 0.5f;
        for (int step = 0; step < 2; ++step) {
            for (int again = 0; again < 2 - step; ++again) {
                CHECKED(convoy_conv_forward_bias_act(rt, &c.params, tx, tw, tb,
                                                     CONVOY_ACTIVATION_RELU, ty, NULL));
                download(rt, ty, y, ny);
                ref_conv_forward(&c.geom, x, w2, ref);
                for (int64_t i = 0; i < ny; ++i) {
                    double v = ref[i] + (double)b[(i / (ny / c.out[0] / c.filt[0])) % c.filt[0]];
                    ref[i] = v > 0.0 ? v : 0.0;
                }
                failures += !case_compare(step ? "bias + ReLU forward, filters after an SGD step"
                                               : "bias + ReLU forward, the same filters",
                                          y, ref, ny, 1e-5);
            }
            if (step == 1)
                break;
            CHECKED(convoy_sgd_step(rt, &sgd, tw, tgw, NULL, NULL));
            for (int64_t i = 0; i < nw; ++i)
                w2[i] -= sgd.lr * gw[i];
        }
        convoy_tensor_destroy(tb);
        convoy_tensor_destroy(tgw);
        free(b);
        free(gw);

        convoy_tensor_destroy(tx);
        convoy_tensor_destroy(tw);
        convoy_tensor_destroy(ty);
        convoy_tensor_destroy(tdy);
        convoy_tensor_destroy(tdx);
        CHECKED(convoy_runtime_synchronize(rt));
        convoy_memory_statistics stats;
        CHECKED(convoy_memory_stats(rt, &stats));
        assert_true(stats.bytes_in_use >= (size_t)nw * sizeof(float));
        free(x);
        free(dx);
        free(w);
        free(w2);
        free(y);
        free(dy);
        free(ref);
        assert_int_equal(failures, 0);
    }
}

/* The plan takes its workspace from the pool as one fixed block: no image chunks. */
static void test_workspace_is_fixed(void **state)
{
    const listed_case l = {
        2, {4, 16, 12, 12}, {16, 16, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}};
    convoy_conv_params p = case_listed_params(&l);
    conv_case c;
    assert_true(case_init(&c, &p, l.in, l.filt));
    convoy_conv_plan_info info;
    assert_string_equal(case_planned(*state, &c, CONVOY_CONV_FORWARD, &info), "onednn");
    assert_string_equal(info.algorithm, "onednn:blocked");
    assert_int_equal(info.images_per_chunk, 0);
    /* At least the flipped copy of the filters. */
    assert_true(info.workspace_bytes >= (size_t)16 * 16 * 9 * sizeof(float));
    assert_int_equal(
        convoy_conv_explain(*state, &p, CONVOY_CONV_FORWARD, c.in, c.filt, c.out, &info),
        CONVOY_OK);
    assert_int_equal(info.from_cache, 1);
}

int main(int argc, char **argv)
{
    int device = case_device_check("test_conv_onednn", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_describe_names_onednn, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_onednn_runs_what_it_accepts, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_refused_cases_fall_back, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_workspace_is_fixed, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_filters_rewritten_between_calls, case_setup,
                                        case_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
