/* Gradient identities and golden values: <fwd(x,w), y> = <x, bwd_data(w,y)> =
 * <w, bwd_filter(x,y)> on seeded random shapes, the conv2d_transpose golden
 * numbers of CONV_SEMANTICS section 8, causal convolution (section 9) and the
 * depthwise-separable composition (section 6). Runs on the CONVOY_DEVICE backend. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

static float *alloc_floats(int64_t count)
{
    float *p = malloc((size_t)(count > 0 ? count : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

static double *alloc_doubles(int64_t count)
{
    double *p = malloc((size_t)(count > 0 ? count : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

static double dot(const float *a, const float *b, int64_t count)
{
    double sum = 0.0;
    for (int64_t i = 0; i < count; ++i)
        sum += (double)a[i] * (double)b[i];
    return sum;
}

static double norm2(const float *a, int64_t count)
{
    return sqrt(dot(a, a, count));
}

/* ---- adjoint identities ------------------------------------------------------ */

/* A random valid convolution: nd 2 or 3, strides, dilations, any border with
 * asymmetric explicit pads, groups, flip, unshared (2D). The input extent is
 * built from a chosen output extent plus a remainder below the stride. */
static void random_case(case_rng *rng, conv_case *c)
{
    for (;;) {
        const int nd = case_rng_int(rng, 2, 3);
        const int unshared = nd == 2 && case_rng_int(rng, 0, 3) == 0;
        int64_t stride[3], dilation[3], before[3], after[3];
        for (int a = 0; a < nd; ++a) {
            stride[a] = case_rng_int(rng, 1, 3);
            dilation[a] = case_rng_int(rng, 1, 2);
            before[a] = case_rng_int(rng, 0, 2);
            after[a] = case_rng_int(rng, 0, 2);
        }
        const convoy_border border = (convoy_border)case_rng_int(rng, 0, 3);
        convoy_conv_params p = case_params(nd, border, stride, dilation);
        if (border == CONVOY_BORDER_EXPLICIT)
            case_set_pads(&p, before, after);
        p.groups = case_rng_int(rng, 1, 3);
        p.flip = case_rng_int(rng, 0, 1);
        const int64_t cg = case_rng_int(rng, 1, 2), m = p.groups * case_rng_int(rng, 1, 2);
        int64_t in[5] = {case_rng_int(rng, 1, 3), p.groups * cg, 0, 0, 0};
        int64_t filt[6] = {m, cg, 0, 0, 0, 0};
        int ok = 1;
        for (int a = 0; a < nd; ++a) {
            const int64_t k = case_rng_int(rng, 1, nd == 2 ? 4 : 3), s = stride[a];
            const int64_t dk = (k - 1) * dilation[a] + 1;
            const int64_t pl = border == CONVOY_BORDER_FULL       ? dk - 1
                               : border == CONVOY_BORDER_HALF     ? dk / 2
                               : border == CONVOY_BORDER_EXPLICIT ? before[a]
                                                                  : 0;
            const int64_t pr = border == CONVOY_BORDER_EXPLICIT ? after[a] : pl;
            const int64_t o = case_rng_int(rng, 1, 4);
            in[2 + a] = (o - 1) * s + dk - pl - pr + case_rng_int(rng, 0, (int)s - 1);
            filt[2 + a] = k;
            ok &= in[2 + a] >= 1;
        }
        if (!ok)
            continue;
        if (unshared) {
            ref_geom g;
            if (!ref_conv_geom(&p, in, filt, &g))
                continue;
            const int64_t shared[6] = {m, g.out[0], g.out[1], cg, filt[2], filt[3]};
            memcpy(filt, shared, sizeof filt);
            p.unshared = 1;
        }
        if (case_init(c, &p, in, filt))
            return;
    }
}

static void test_adjoint_identities(void **state)
{
    convoy_runtime *rt = *state;
    case_rng rng;
    case_rng_seed(&rng, 20240917);
    int failures = 0;
    for (int it = 0; it < 24; ++it) {
        conv_case c;
        random_case(&rng, &c);
        const int64_t nx = ref_input_numel(&c.geom), nw = ref_filter_numel(&c.geom),
                      ny = ref_output_numel(&c.geom);
        float *x = alloc_floats(nx), *w = alloc_floats(nw), *y = alloc_floats(ny);
        float *fy = alloc_floats(ny), *dx = alloc_floats(nx), *dw = alloc_floats(nw);
        double *ref = alloc_doubles(nx + nw + ny);
        case_fill(&rng, x, nx);
        case_fill(&rng, w, nw);
        case_fill(&rng, y, ny);
        int ok = case_run(rt, &c, CONVOY_CONV_FORWARD, x, w, fy) == CONVOY_OK &&
                 case_run(rt, &c, CONVOY_CONV_BACKWARD_DATA, w, y, dx) == CONVOY_OK &&
                 case_run(rt, &c, CONVOY_CONV_BACKWARD_FILTER, x, y, dw) == CONVOY_OK;
        if (ok) {
            const double d1 = dot(fy, y, ny), d2 = dot(x, dx, nx), d3 = dot(w, dw, nw);
            const double scale =
                fmax(fmax(norm2(fy, ny) * norm2(y, ny), norm2(x, nx) * norm2(dx, nx)),
                     fmax(norm2(w, nw) * norm2(dw, nw), 1.0));
            if (fabs(d1 - d2) > 1e-5 * scale || fabs(d1 - d3) > 1e-5 * scale) {
                printf("  FAIL adjoint %s: <fwd(x,w),y> %.9g <x,bwd_data(w,y)> %.9g "
                       "<w,bwd_filter(x,y)> %.9g (scale %.3g)\n",
                       c.label, d1, d2, d3, scale);
                ok = 0;
            }
            /* Each result also against the reference. */
            ref_conv_forward(&c.geom, x, w, ref);
            ok &= case_compare("adjoint forward", fy, ref, ny, 1e-5);
            ref_conv_backward_data(&c.geom, w, y, ref);
            ok &= case_compare("adjoint backward_data", dx, ref, nx, 1e-5);
            ref_conv_backward_filter(&c.geom, x, y, ref);
            ok &= case_compare("adjoint backward_filter", dw, ref, nw, 1e-5);
            if (!ok)
                printf("  (case %d: %s)\n", it, c.label);
        }
        failures += !ok;
        free(x);
        free(w);
        free(y);
        free(fy);
        free(dx);
        free(dw);
        free(ref);
    }
    assert_int_equal(failures, 0);
}

/* ---- conv2d_transpose golden values (section 8) ------------------------------ */

static void test_transpose_golden(void **state)
{
    convoy_runtime *rt = *state;
    const int64_t stride[3] = {2, 2};
    convoy_conv_params p = case_params(2, CONVOY_BORDER_VALID, stride, NULL);
    const int64_t grad_input[4] = {2, 1, 10, 10}, filters[4] = {2, 1, 4, 4};
    conv_case c;
    assert_true(case_init(&c, &p, grad_input, filters));
    assert_int_equal(c.out[0], 2);
    assert_int_equal(c.out[1], 2);
    assert_int_equal(c.out[2], 4);
    assert_int_equal(c.out[3], 4);
    float w[32], dy[64], dx[200];
    double ref[200];
    for (int i = 0; i < 32; ++i)
        w[i] = 1.0f;
    for (int i = 0; i < 64; ++i)
        dy[i] = 1.0f;
    assert_int_equal(case_run(rt, &c, CONVOY_CONV_BACKWARD_DATA, w, dy, dx), CONVOY_OK);
    static const double edge[10] = {2, 2, 4, 4, 4, 4, 4, 4, 2, 2};
    static const double middle[10] = {4, 4, 8, 8, 8, 8, 8, 8, 4, 4};
    for (int n = 0; n < 2; ++n) {
        for (int r = 0; r < 10; ++r) {
            const double *row = (r < 2 || r > 7) ? edge : middle;
            for (int col = 0; col < 10; ++col)
                ref[n * 100 + r * 10 + col] = row[col];
        }
    }
    assert_true(case_compare("conv2d_transpose golden", dx, ref, 200, 1e-6));
    /* The reference agrees with the golden numbers too. */
    double mine[200];
    ref_conv_backward_data(&c.geom, w, dy, mine);
    for (int i = 0; i < 200; ++i)
        assert_true(mine[i] == ref[i]);
}

/* ---- causal convolution (section 9) ------------------------------------------ */

/* causal_conv1d as a 2D convolution with a trailing size-1 axis and left
 * padding d*(K-1) only. */
static convoy_conv_params causal_params(int64_t k, int64_t s, int64_t d)
{
    const int64_t stride[3] = {s, 1}, dilation[3] = {d, 1};
    const int64_t before[3] = {d * (k - 1), 0}, after[3] = {0, 0};
    convoy_conv_params p = case_params(2, CONVOY_BORDER_EXPLICIT, stride, dilation);
    case_set_pads(&p, before, after);
    return p;
}

static void test_causal_conv(void **state)
{
    convoy_runtime *rt = *state;
    static const int64_t settings[4][3] = {{3, 1, 2}, {4, 1, 1}, {3, 2, 2}, {2, 3, 3}};
    for (int i = 0; i < 4; ++i) {
        const int64_t k = settings[i][0], s = settings[i][1], d = settings[i][2], t = 11;
        convoy_conv_params p = causal_params(k, s, d);
        const int64_t in[4] = {2, 3, t, 1}, filt[4] = {2, 3, k, 1};
        conv_case c;
        assert_true(case_init(&c, &p, in, filt));
        int64_t out[4];
        assert_int_equal(convoy_conv_output_dims(&p, in, filt, out), CONVOY_OK);
        assert_int_equal(out[2], (t - 1) / s + 1);
        assert_int_equal(out[3], 1);
        assert_int_equal(case_check_all(rt, &c, 7000 + (uint64_t)i * 4), 0);
    }
    /* Dependence: with an impulse at tau, y[t] != 0 exactly for
     * t - tau in {0, d, ..., d*(K-1)}: inputs t-d*(K-1) .. t, t included. */
    for (int i = 0; i < 2; ++i) {
        const int64_t k = settings[i][0], d = settings[i][2], t = 12;
        convoy_conv_params p = causal_params(k, 1, d);
        const int64_t in[4] = {1, 1, t, 1}, filt[4] = {1, 1, k, 1};
        conv_case c;
        assert_true(case_init(&c, &p, in, filt));
        case_rng rng;
        case_rng_seed(&rng, 7100 + (uint64_t)i);
        float w[8], x[12], y[12];
        case_fill(&rng, w, k);
        for (int64_t tau = 0; tau < t; ++tau) {
            for (int64_t j = 0; j < t; ++j)
                x[j] = j == tau ? 1.0f : 0.0f;
            assert_int_equal(case_run(rt, &c, CONVOY_CONV_FORWARD, x, w, y), CONVOY_OK);
            for (int64_t j = 0; j < t; ++j) {
                const int64_t lag = j - tau;
                const int depends = lag >= 0 && lag <= d * (k - 1) && lag % d == 0;
                if ((y[j] != 0.0f) != depends)
                    printf("  FAIL causal K=%lld d=%lld: impulse at %lld, y[%lld] = %g\n",
                           (long long)k, (long long)d, (long long)tau, (long long)j, (double)y[j]);
                assert_int_equal(y[j] != 0.0f, depends);
            }
        }
    }
}

/* ---- separable convolution (section 6) --------------------------------------- */

/* Depthwise (g = C, border/stride/dilation) then a valid 1x1 convolution,
 * chained on the device, against the reference composed the same way. */
static void check_separable(convoy_runtime *rt, const convoy_conv_params *depth_params,
                            const int64_t *in, int64_t multiplier, int64_t m, uint64_t seed)
{
    const int nd = depth_params->spatial_dims, rank = nd + 2;
    int64_t dfilt[5] = {in[1] * multiplier, 1, 3, 2, 2};
    conv_case depth, point;
    assert_true(case_init(&depth, depth_params, in, dfilt));
    const int64_t pfilt[5] = {m, in[1] * multiplier, 1, 1, 1};
    convoy_conv_params pp = case_params(nd, CONVOY_BORDER_VALID, NULL, NULL);
    assert_true(case_init(&point, &pp, depth.out, pfilt));
    const int64_t nx = ref_input_numel(&depth.geom), nd_w = ref_filter_numel(&depth.geom);
    const int64_t nmid = ref_output_numel(&depth.geom), np_w = ref_filter_numel(&point.geom);
    const int64_t ny = ref_output_numel(&point.geom);
    float *x = alloc_floats(nx), *dw = alloc_floats(nd_w), *pw = alloc_floats(np_w);
    float *mid = alloc_floats(nmid), *y = alloc_floats(ny);
    double *ref_mid = alloc_doubles(nmid), *ref = alloc_doubles(ny);
    case_rng rng;
    case_rng_seed(&rng, seed);
    case_fill(&rng, x, nx);
    case_fill(&rng, dw, nd_w);
    case_fill(&rng, pw, np_w);

    convoy_tensor *tx = NULL, *tdw = NULL, *tpw = NULL, *tmid = NULL, *ty = NULL;
    assert_int_equal(convoy_tensor_create(rt, rank, depth.in, &tx), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, rank, depth.filt, &tdw), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, rank, point.filt, &tpw), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, rank, depth.out, &tmid), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(rt, rank, point.out, &ty), CONVOY_OK);
    convoy_task *task = NULL;
    assert_int_equal(convoy_upload(rt, tx, x, (size_t)nx, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, tdw, dw, (size_t)nd_w, NULL), CONVOY_OK);
    assert_int_equal(convoy_upload(rt, tpw, pw, (size_t)np_w, NULL), CONVOY_OK);
    assert_int_equal(convoy_conv_forward(rt, &depth.params, tx, tdw, tmid, NULL), CONVOY_OK);
    assert_int_equal(convoy_conv_forward(rt, &point.params, tmid, tpw, ty, NULL), CONVOY_OK);
    assert_int_equal(convoy_download(rt, ty, y, (size_t)ny, &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);

    ref_conv_forward(&depth.geom, x, dw, ref_mid);
    for (int64_t i = 0; i < nmid; ++i)
        mid[i] = (float)ref_mid[i];
    ref_conv_forward(&point.geom, mid, pw, ref);
    char label[1100];
    snprintf(label, sizeof label, "separable: depthwise %s then 1x1 %s", depth.label, point.label);
    assert_true(case_compare(label, y, ref, ny, 1e-5));

    convoy_tensor_destroy(tx);
    convoy_tensor_destroy(tdw);
    convoy_tensor_destroy(tpw);
    convoy_tensor_destroy(tmid);
    convoy_tensor_destroy(ty);
    free(x);
    free(dw);
    free(pw);
    free(mid);
    free(y);
    free(ref_mid);
    free(ref);
}

static void test_separable(void **state)
{
    convoy_runtime *rt = *state;
    const int64_t in2[4] = {2, 3, 7, 6}, s2[3] = {2, 1}, d2[3] = {1, 2};
    convoy_conv_params p = case_params(2, CONVOY_BORDER_HALF, s2, d2);
    p.groups = 3;
    check_separable(rt, &p, in2, 2, 4, 8000);
    p = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
    p.groups = 3;
    check_separable(rt, &p, in2, 1, 5, 8001);
    p = case_params(2, CONVOY_BORDER_FULL, NULL, NULL);
    p.groups = 3;
    check_separable(rt, &p, in2, 1, 2, 8002);
    const int64_t in3[5] = {1, 2, 4, 5, 4};
    p = case_params(3, CONVOY_BORDER_FULL, NULL, NULL);
    p.groups = 2;
    check_separable(rt, &p, in3, 2, 3, 8003);
    const int64_t s3[3] = {1, 2, 1};
    p = case_params(3, CONVOY_BORDER_VALID, s3, NULL);
    p.groups = 2;
    check_separable(rt, &p, in3, 1, 2, 8004);
}

int main(int argc, char **argv)
{
    int device = case_device_check("test_conv_grads", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_adjoint_identities, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_transpose_golden, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_causal_conv, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_separable, case_setup, case_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
