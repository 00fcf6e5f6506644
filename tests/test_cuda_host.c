/* The CUDA backend's host-side parts, on any machine: creation fails cleanly without a usable
 * GPU (and describes itself and lists candidates with one), the error mapping of the check
 * macros, what cuDNN can express, how entry points save and restore the caller's current
 * device, every kernel's __host__ __device__ body run over the kernel's whole grid against
 * the host implementation, and the GEMM, 1x1 and direct paths run step for step on the CPU:
 * the driver of kernels/gemm_driver.c with host versions of its primitives, built on the
 * same index headers the CUDA kernels use, and a GEMM emulator that checks every call's
 * column-major arguments and memory ranges, against the double-precision reference of
 * conv_reference.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "convoy.h"
#include "kernels/chunk_index.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/cudnn_desc.h"
#include "cuda/device_scope.h"
#include "cuda/event_clock.h"
#include "cuda/launch_config.h"
#include "cpu/conv_cpu.h"
#include "kernels/direct_index.h"
#include "kernels/conv_algo.h"
#include "kernels/gemm_driver.h"
#include "core/conv_geometry.h"
#include "conv_cases.h"
#include "conv_geom_case.h"

/* ---- geometry ---------------------------------------------------------------------------- */

static convoy__conv_geom geom_of(const geom_case *c)
{
    convoy__conv_geom g;
    assert_true(geom_case_geom(c, &g));
    return g;
}

/* ---- host primitives and a checking GEMM emulator ---------------------------------------- */

/* The buffers a run may touch; every GEMM operand range must lie inside one of them. */
typedef struct region {
    const float *base;
    int64_t count;
} region;

typedef struct host_ctx {
    region regions[4];
    int calls;
} host_ctx;

static void assert_inside(const host_ctx *h, const float *first, int64_t span)
{
    for (int i = 0; i < 4; ++i) {
        const region *r = &h->regions[i];
        if (r->base && first >= r->base && first + span <= r->base + r->count)
            return;
    }
    fail_msg("a GEMM operand (%lld elements) lies outside every buffer", (long long)span);
}

/* Elements spanned by a column-major rows x cols matrix with leading dimension ld. */
static int64_t span_of(int64_t rows, int64_t cols, int64_t ld)
{
    return rows == 0 || cols == 0 ? 0 : (cols - 1) * ld + rows;
}

/* cuBLAS's column-major strided-batched SGEMM, as documented: beta == 0 never reads C. */
static convoy_status host_gemm(void *context, const convoy__gemm *g)
{
    host_ctx *h = context;
    assert_int_equal(convoy__gemm_check(g, "test"), CONVOY_OK);
    h->calls++;
    for (int64_t i = 0; i < g->batch; ++i) {
        const float *a = g->a + i * g->stride_a, *b = g->b + i * g->stride_b;
        float *c = g->c + i * g->stride_c;
        assert_inside(h, a, span_of(g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda));
        assert_inside(h, b, span_of(g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb));
        assert_inside(h, c, span_of(g->m, g->n, g->ldc));
        for (int64_t col = 0; col < g->n; ++col)
            for (int64_t row = 0; row < g->m; ++row) {
                double sum = 0.0;
                for (int64_t p = 0; p < g->k; ++p) {
                    float av = g->trans_a ? a[p + row * g->lda] : a[row + p * g->lda];
                    float bv = g->trans_b ? b[col + p * g->ldb] : b[p + col * g->ldb];
                    sum += (double)av * bv;
                }
                float *dst = &c[row + col * g->ldc];
                *dst = g->beta == 0.0f ? (float)(g->alpha * sum)
                                       : (float)(g->alpha * sum + g->beta * *dst);
            }
    }
    return CONVOY_OK;
}

static convoy_status host_im2col(void *context, const convoy__conv_geom *g, const float *images,
                                 int64_t count, float *col)
{
    (void)context;
    int64_t total =
        g->in_channels * convoy__geom_kernel_spatial(g) * count * convoy__geom_out_spatial(g);
    for (int64_t i = 0; i < total; ++i)
        col[i] = convoy__im2col_chunk_value(g, images, count, i);
    return CONVOY_OK;
}

static convoy_status host_col2im(void *context, const convoy__conv_geom *g, const float *col,
                                 int64_t count, float *images)
{
    (void)context;
    int64_t total = count * g->in_channels * convoy__geom_in_spatial(g);
    for (int64_t i = 0; i < total; ++i)
        images[i] = convoy__col2im_chunk_value(g, col, count, i);
    return CONVOY_OK;
}

static convoy_status host_swap(void *context, const float *src, float *dst, int64_t a_count,
                               int64_t b_count, int64_t inner)
{
    (void)context;
    for (int64_t i = 0; i < a_count * b_count * inner; ++i)
        dst[i] = src[convoy__swap_axes_source(i, a_count, b_count, inner)];
    return CONVOY_OK;
}

static convoy_status host_zero(void *context, float *dst, int64_t count)
{
    (void)context;
    memset(dst, 0, (size_t)count * sizeof(float));
    return CONVOY_OK;
}

/* ---- one path, one direction, against the reference ------------------------------------- */

enum path { PATH_GEMM, PATH_1X1, PATH_DIRECT };

static void check_path(const convoy__conv_geom *g, convoy_conv_direction dir, enum path path,
                       int64_t chunk)
{
    int64_t nx = convoy__geom_input_numel(g), nw = convoy__geom_filter_numel(g);
    int64_t ny = convoy__geom_output_numel(g);
    case_rng rng;
    case_rng_seed(&rng, (uint64_t)((nx * 31 + nw) * 7 + ny) * 3 + (uint64_t)dir);
    float *x =
        dir == CONVOY_CONV_BACKWARD_DATA ? case_nan_floats(nx) : case_random_floats(&rng, nx);
    float *w =
        dir == CONVOY_CONV_BACKWARD_FILTER ? case_nan_floats(nw) : case_random_floats(&rng, nw);
    float *y = dir == CONVOY_CONV_FORWARD ? case_nan_floats(ny) : case_random_floats(&rng, ny);
    float *written = dir == CONVOY_CONV_FORWARD ? y : dir == CONVOY_CONV_BACKWARD_DATA ? x : w;
    int64_t count = dir == CONVOY_CONV_FORWARD ? ny : dir == CONVOY_CONV_BACKWARD_DATA ? nx : nw;
    double *want = case_reference(g, dir, x, w, y);
    assert_non_null(want);

    convoy__conv_buffers b = {x, w, y, 0};
    host_ctx h = {{{x, nx}, {w, nw}, {y, ny}, {NULL, 0}}, 0};
    convoy__gemm_ops ops = {&h, host_gemm, host_im2col, host_col2im, host_swap, host_zero, 0};
    size_t bytes = 0;
    float *ws = NULL;
    if (path == PATH_GEMM) {
        bytes = convoy__gemm_workspace_fixed(g, dir) +
                convoy__gemm_workspace_per_image(g, dir) * (size_t)chunk;
        ws = case_nan_floats((int64_t)(bytes / sizeof(float)));
        h.regions[3] = (region){ws, (int64_t)(bytes / sizeof(float))};
        assert_int_equal(convoy__gemm_conv(&ops, g, dir, &b, chunk, ws, bytes), CONVOY_OK);
    } else if (path == PATH_1X1) {
        assert_int_equal(convoy__gemm_conv_1x1(&ops, g, dir, &b), CONVOY_OK);
    } else {
        for (int64_t i = 0; i < count; ++i)
            written[i] =
                (float)(dir == CONVOY_CONV_FORWARD ? convoy__direct_forward_value(g, x, w, i)
                        : dir == CONVOY_CONV_BACKWARD_DATA
                            ? convoy__direct_backward_data_value(g, w, y, i)
                            : convoy__direct_backward_filter_value(g, x, y, i));
    }
    static const char *const paths[] = {"gemm", "1x1", "direct"};
    char label[640], text[512];
    geom_describe(g, text, sizeof text);
    snprintf(label, sizeof label, "%s %s chunk %lld on %s", paths[path], case_direction_names[dir],
             (long long)chunk, text);
    assert_true(case_compare(label, written, want, count, 1e-5));
    free(ws);
    free(want);
    free(x);
    free(w);
    free(y);
}

static const geom_case cases[] = {
    /* nd n  c  m  g  in      k       stride  dilation border pad before/after flip unshared */
    {2, 3, 2, 4, 1, {6, 5}, {3, 2}, {1, 1}, {1, 1}, PADS, {0, 0}, {0, 0}, 1, 0},
    {2, 4, 4, 6, 2, {7, 6}, {3, 3}, {2, 1}, {1, 2}, PADS, {1, 2}, {2, 0}, 0, 0},
    {2, 2, 3, 2, 1, {5, 5}, {2, 3}, {1, 2}, {2, 1}, PADS, {3, 1}, {3, 1}, 1, 0},
    {2, 2, 4, 4, 2, {4, 4}, {3, 2}, {3, 2}, {1, 1}, PADS, {2, 1}, {2, 1}, 1, 1},
    {2, 3, 2, 3, 1, {5, 4}, {2, 2}, {1, 1}, {1, 1}, PADS, {1, 0}, {0, 1}, 0, 1},
    {3, 3, 2, 4, 2, {4, 5, 3}, {2, 3, 2}, {1, 2, 1}, {2, 1, 1}, PADS, {1, 1, 0}, {1, 1, 0}, 1, 0},
    {3, 2, 3, 3, 3, {3, 4, 5}, {3, 1, 2}, {2, 1, 2}, {1, 1, 1}, PADS, {2, 0, 1}, {2, 0, 1}, 0, 0},
    /* strides that leave input rows no window covers (they must come back as 0) */
    {2, 2, 2, 2, 1, {8, 7}, {2, 2}, {3, 3}, {1, 1}, PADS, {0, 0}, {0, 0}, 1, 0},
};

/* ---- tests ------------------------------------------------------------------------------- */

static void test_gemm_mapping(void **state)
{
    (void)state;
    /* Row-major C (3 x 4) = op(A) op(B) with k = 5, padded leading dims, batch 2, for every
     * transpose combination, through the column-major emulator. */
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
            int64_t m = 3, n = 4, k = 5;
            int64_t lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
            int64_t sa = (ta ? k : m) * lda + 1, sb = (tb ? n : k) * ldb, sc = m * ldc + 2;
            case_rng rng;
            case_rng_seed(&rng, (uint64_t)(ta * 2 + tb));
            float *a = case_random_floats(&rng, 2 * sa), *b = case_random_floats(&rng, 2 * sb);
            float *c = case_random_floats(&rng, 2 * sc);
            float *before = malloc((size_t)(2 * sc) * sizeof(float));
            assert_non_null(before);
            memcpy(before, c, (size_t)(2 * sc) * sizeof(float));
            convoy__gemm r = {ta, tb, m, n, k, 1.5f, 0.5f, a, lda, sa, b, ldb, sb, c, ldc, sc, 2};
            host_ctx h = {{{a, 2 * sa}, {b, 2 * sb}, {c, 2 * sc}, {NULL, 0}}, 0};
            convoy__gemm col = convoy__gemm_to_column_major(&r);
            assert_int_equal(col.m, n);
            assert_int_equal(col.n, m);
            assert_true(col.a == b && col.b == a && col.trans_a == tb && col.trans_b == ta);
            assert_int_equal(host_gemm(&h, &col), CONVOY_OK);
            for (int64_t i = 0; i < 2; ++i)
                for (int64_t row = 0; row < m; ++row)
                    for (int64_t j = 0; j < n; ++j) {
                        double sum = 0.0;
                        for (int64_t p = 0; p < k; ++p)
                            sum += (double)(ta ? a[i * sa + p * lda + row]
                                               : a[i * sa + row * lda + p]) *
                                   (tb ? b[i * sb + j * ldb + p] : b[i * sb + p * ldb + j]);
                        double want = 1.5 * sum + 0.5 * before[i * sc + row * ldc + j];
                        assert_true(fabs(c[i * sc + row * ldc + j] - want) < 1e-4);
                    }
            free(before);
            free(a);
            free(b);
            free(c);
        }
}

static void test_gemm_check(void **state)
{
    (void)state;
    float dummy = 0.0f;
    convoy__gemm ok = {0, 1, 4, 3, 2, 1.0f, 0.0f, &dummy, 4, 0, &dummy, 3, 0, &dummy, 4, 0, 1};
    assert_int_equal(convoy__gemm_check(&ok, "ok"), CONVOY_OK);
    convoy__gemm bad = ok;
    bad.lda = 3; /* A is m x k = 4 x 2 untransposed: needs lda >= 4 */
    assert_int_equal(convoy__gemm_check(&bad, "bad lda"), CONVOY_ERR_INTERNAL);
    assert_non_null(strstr(convoy_last_error_message(), "lda"));
    bad = ok;
    bad.ldb = 2; /* B is stored n x k = 3 x 2 when transposed: needs ldb >= 3 */
    assert_int_equal(convoy__gemm_check(&bad, "bad ldb"), CONVOY_ERR_INTERNAL);
    bad = ok;
    bad.ldc = 1;
    assert_int_equal(convoy__gemm_check(&bad, "bad ldc"), CONVOY_ERR_INTERNAL);
    bad = ok;
    bad.batch = 0;
    assert_int_equal(convoy__gemm_check(&bad, "bad batch"), CONVOY_ERR_INTERNAL);
}

static void test_paths_all_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        convoy__conv_geom g = geom_of(&cases[i]);
        for (int dir = 0; dir < 3; ++dir) {
            check_path(&g, (convoy_conv_direction)dir, PATH_DIRECT, 0);
            int64_t chunks[] = {1, 2, g.batch};
            for (int c = 0; c < 3; ++c)
                check_path(&g, (convoy_conv_direction)dir, PATH_GEMM, chunks[c]);
        }
    }
}

static void test_pointwise(void **state)
{
    (void)state;
    static const geom_case t[] = {
        {2, 3, 4, 6, 2, {3, 5}, {1, 1}, {1, 1}, {2, 3}, PADS, {0}, {0}, 1, 0},
        {3, 2, 3, 2, 1, {2, 3, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, PADS, {0}, {0}, 0, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; ++i) {
        convoy__conv_geom g = geom_of(&t[i]);
        assert_true(convoy__geom_is_pointwise(&g));
        for (int dir = 0; dir < 3; ++dir) {
            check_path(&g, (convoy_conv_direction)dir, PATH_1X1, 0);
            check_path(&g, (convoy_conv_direction)dir, PATH_GEMM, 2);
        }
    }
}

/* N, C or M zero: every path zero-fills the written operand and issues no GEMM. */
static void test_empty(void **state)
{
    (void)state;
    static const geom_case t[] = {
        {2, 0, 2, 2, 1, {4, 4}, {2, 2}, {1, 1}, {1, 1}, PADS, {0}, {0}, 1, 0},
        {2, 2, 0, 2, 1, {4, 4}, {2, 2}, {1, 1}, {1, 1}, PADS, {0}, {0}, 1, 0},
        {3, 2, 2, 0, 1, {2, 3, 3}, {1, 2, 2}, {1, 1, 1}, {1, 1, 1}, PADS, {0}, {0}, 1, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; ++i) {
        convoy__conv_geom g = geom_of(&t[i]);
        for (int dir = 0; dir < 3; ++dir) {
            check_path(&g, (convoy_conv_direction)dir, PATH_GEMM, 1);
            check_path(&g, (convoy_conv_direction)dir, PATH_DIRECT, 0);
        }
    }
}

static void test_workspace_model(void **state)
{
    (void)state;
    convoy__conv_geom g = geom_of(&cases[1]); /* C 4, k 3x3, P = out0*out1*out2 */
    size_t p = (size_t)convoy__geom_out_spatial(&g), rows = 4 * 9;
    assert_int_equal(convoy__gemm_workspace_fixed(&g, CONVOY_CONV_FORWARD), 0);
    /* One formula for every direction and backend: the column matrix plus M pack rows. */
    assert_int_equal(convoy__gemm_workspace_per_image(&g, CONVOY_CONV_FORWARD), (rows + 6) * p * 4);
    assert_int_equal(convoy__gemm_workspace_per_image(&g, CONVOY_CONV_BACKWARD_DATA),
                     (rows + 6) * p * 4);
    assert_int_equal(convoy__gemm_workspace_per_image(&g, CONVOY_CONV_BACKWARD_FILTER),
                     (rows + 6) * p * 4);
    convoy__conv_geom u = geom_of(&cases[3]); /* unshared: one image's column matrix, fixed */
    assert_int_equal(convoy__gemm_workspace_per_image(&u, CONVOY_CONV_FORWARD), 0);
    assert_int_equal(convoy__gemm_workspace_fixed(&u, CONVOY_CONV_FORWARD),
                     (size_t)(4 * 6 * convoy__geom_out_spatial(&u)) * 4);

    /* A workspace for two images shrinks a requested chunk of four; less than one fails. */
    float dummy[4] = {0};
    convoy__conv_buffers b = {dummy, dummy, dummy, 0};
    host_ctx h = {{{NULL, 0}}, 0};
    convoy__gemm_ops ops = {&h, host_gemm, host_im2col, host_col2im, host_swap, host_zero, 0};
    size_t one = convoy__gemm_workspace_per_image(&g, CONVOY_CONV_FORWARD);
    assert_int_equal(convoy__gemm_conv(&ops, &g, CONVOY_CONV_FORWARD, &b, 4, dummy, one - 4),
                     CONVOY_ERR_INTERNAL);
    assert_int_equal(convoy__gemm_conv(&ops, &g, CONVOY_CONV_FORWARD, &b, 0, dummy, one),
                     CONVOY_ERR_INTERNAL);
    assert_int_equal(convoy__gemm_conv(&ops, &g, 7, &b, 1, dummy, one),
                     CONVOY_ERR_INVALID_ARGUMENT);
}

static void test_chunk_shrinks_to_workspace(void **state)
{
    (void)state;
    convoy__conv_geom g = geom_of(&cases[0]);
    int64_t nx = convoy__geom_input_numel(&g), nw = convoy__geom_filter_numel(&g);
    int64_t ny = convoy__geom_output_numel(&g);
    case_rng rng;
    case_rng_seed(&rng, 5);
    float *x = case_random_floats(&rng, nx), *w = case_random_floats(&rng, nw);
    float *y = case_nan_floats(ny);
    size_t two = 2 * convoy__gemm_workspace_per_image(&g, CONVOY_CONV_FORWARD);
    float *ws = case_nan_floats((int64_t)(two / 4));
    host_ctx h = {{{x, nx}, {w, nw}, {y, ny}, {ws, (int64_t)(two / 4)}}, 0};
    convoy__gemm_ops ops = {&h, host_gemm, host_im2col, host_col2im, host_swap, host_zero, 0};
    convoy__conv_buffers b = {x, w, y, 0};
    assert_int_equal(convoy__gemm_conv(&ops, &g, CONVOY_CONV_FORWARD, &b, 3, ws, two), CONVOY_OK);
    double *want = case_reference(&g, CONVOY_CONV_FORWARD, x, w, y);
    assert_non_null(want);
    assert_true(case_compare("gemm forward, chunk 3 shrunk to 2", y, want, ny, 1e-5));
    free(want);
    free(ws);
    free(x);
    free(w);
    free(y);
}

static void test_cudnn_expressible(void **state)
{
    (void)state;
    convoy__cudnn_dims d;
    const char *why = NULL;
    convoy__conv_geom g = geom_of(&cases[2]); /* 2D, symmetric pads 3/1, stride, dilation */
    assert_int_equal(convoy__cudnn_expressible(&g, &d, &why), 1);
    assert_null(why);
    assert_int_equal(d.nb_dims, 4);
    int in[4] = {2, 3, 5, 5}, filt[4] = {2, 3, 2, 3};
    int out[4] = {2, 2, (int)g.out[1], (int)g.out[2]};
    assert_memory_equal(d.input, in, sizeof in);
    assert_memory_equal(d.filter, filt, sizeof filt);
    assert_memory_equal(d.output, out, sizeof out);
    int istr[4] = {75, 25, 5, 1};
    assert_memory_equal(d.input_strides, istr, sizeof istr);
    assert_int_equal(d.output_strides[0], 2 * g.out[1] * g.out[2]);
    assert_int_equal(d.pad[0], 3);
    assert_int_equal(d.pad[1], 1);
    assert_int_equal(d.stride[1], 2);
    assert_int_equal(d.dilation[0], 2);
    assert_int_equal(d.groups, 1);
    assert_int_equal(d.cross_correlation, 0); /* flip on: CUDNN_CONVOLUTION */

    g = geom_of(&cases[5]); /* 3D, groups 2, correlation off -> flip on */
    assert_int_equal(convoy__cudnn_expressible(&g, &d, NULL), 1);
    assert_int_equal(d.nb_dims, 5);
    assert_int_equal(d.filter[1], 1);
    assert_int_equal(d.groups, 2);
    assert_int_equal(d.pad[0], 1);
    assert_int_equal(d.dilation[0], 2);
    g = geom_of(&cases[6]);
    assert_int_equal(convoy__cudnn_expressible(&g, &d, NULL), 1);
    assert_int_equal(d.cross_correlation, 1);
    assert_int_equal(d.groups, 3);

    g = geom_of(&cases[1]); /* asymmetric padding */
    assert_int_equal(convoy__cudnn_expressible(&g, &d, &why), 0);
    assert_non_null(strstr(why, "asymmetric"));
    g = geom_of(&cases[3]); /* unshared */
    assert_int_equal(convoy__cudnn_expressible(&g, &d, &why), 0);
    assert_non_null(strstr(why, "unshared"));
    g = geom_of(&cases[0]);
    g.batch = 0;
    assert_int_equal(convoy__cudnn_expressible(&g, NULL, &why), 0);
    g = geom_of(&cases[0]);
    g.in[1] = (int64_t)1 << 33; /* beyond int */
    g.out[1] = g.in[1] - 2;
    assert_int_equal(convoy__cudnn_expressible(&g, NULL, &why), 0);
    g = geom_of(&cases[0]);
    g.out[2] += 1; /* an output size cuDNN would not compute */
    assert_int_equal(convoy__cudnn_expressible(&g, NULL, &why), 0);
}

static void test_cudnn_names(void **state)
{
    (void)state;
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_FORWARD, 1), "IMPLICIT_PRECOMP_GEMM");
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_FORWARD, 7), "WINOGRAD_NONFUSED");
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_FORWARD, 8), "UNKNOWN");
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_BACKWARD_DATA, 3), "FFT_TILING");
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_BACKWARD_FILTER, 3), "ALGO_3");
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_BACKWARD_FILTER, 6), "FFT_TILING");
    assert_string_equal(convoy__cudnn_algo_name(CONVOY_CONV_BACKWARD_FILTER, -1), "UNKNOWN");
    assert_true(convoy__cudnn_algo_uses_atomics(CONVOY_CONV_BACKWARD_DATA, 0));
    assert_false(convoy__cudnn_algo_uses_atomics(CONVOY_CONV_BACKWARD_DATA, 1));
    assert_true(convoy__cudnn_algo_uses_atomics(CONVOY_CONV_BACKWARD_FILTER, 0));
    assert_true(convoy__cudnn_algo_uses_atomics(CONVOY_CONV_BACKWARD_FILTER, 3));
    assert_false(convoy__cudnn_algo_uses_atomics(CONVOY_CONV_BACKWARD_FILTER, 1));
    assert_false(convoy__cudnn_algo_uses_atomics(CONVOY_CONV_FORWARD, 0));
    /* Transform-based algorithms are inexact; so is anything outside the enum. */
    assert_true(convoy__cudnn_algo_is_exact(CONVOY_CONV_FORWARD, 1));
    assert_false(convoy__cudnn_algo_is_exact(CONVOY_CONV_FORWARD, 4));
    assert_false(convoy__cudnn_algo_is_exact(CONVOY_CONV_FORWARD, 6));
    assert_false(convoy__cudnn_algo_is_exact(CONVOY_CONV_FORWARD, 7));
    assert_false(convoy__cudnn_algo_is_exact(CONVOY_CONV_BACKWARD_DATA, 3));
    assert_true(convoy__cudnn_algo_is_exact(CONVOY_CONV_BACKWARD_FILTER, 3));
    assert_false(convoy__cudnn_algo_is_exact(CONVOY_CONV_BACKWARD_FILTER, 6));
    assert_false(convoy__cudnn_algo_is_exact(CONVOY_CONV_BACKWARD_FILTER, 9));
}

static convoy_status try_cuda(cudaError_t e)
{
    CONVOY__CUDA_TRY(e);
    return CONVOY_OK;
}

static void test_error_mapping(void **state)
{
    (void)state;
    assert_int_equal(CONVOY__CUDA_CHECK(cudaSuccess), CONVOY_OK);
    assert_int_equal(CONVOY__CUDA_CHECK(cudaErrorMemoryAllocation), CONVOY_ERR_OUT_OF_MEMORY);
    const char *msg = convoy_last_error_message();
    assert_non_null(strstr(msg, "cudaErrorMemoryAllocation failed: "));
    assert_non_null(strstr(msg, "test_cuda_host.c:"));
    assert_int_equal(try_cuda(cudaErrorInvalidValue), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "(cudaErrorInvalidValue 1)"));
    assert_int_equal(try_cuda(cudaSuccess), CONVOY_OK);
    assert_int_equal(CONVOY__CUBLAS_CHECK(CUBLAS_STATUS_ALLOC_FAILED), CONVOY_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(convoy_last_error_message(), "cuBLAS status 3"));
    assert_int_equal(CONVOY__CUBLAS_CHECK(CUBLAS_STATUS_EXECUTION_FAILED), CONVOY_ERR_BACKEND);
    assert_int_equal(CONVOY__CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS), CONVOY_OK);
    assert_int_equal(convoy__cudnn_fail(2000, "cudnnThing()", "a/b/c.c", 7), CONVOY_ERR_BACKEND);
    assert_non_null(strstr(convoy_last_error_message(), "cudnnThing() failed"));
    assert_non_null(strstr(convoy_last_error_message(), "at b/c.c:7"));
    assert_int_equal(CONVOY_CEIL_DIV(257, 256), 2);
    assert_int_equal(CONVOY_CEIL_DIV(256, 256), 1);
}

/* ---- kernel bodies over their whole grids ------------------------------------------------ */

/* Runs a kernel's launch on the CPU: blocks x CONVOY__THREADS threads, each walking the
 * grid-stride loop of cuda/launch_config.h, every element index it reaches counted in
 * visits (which must end at exactly one each). */
#define FOR_EACH_GRID_INDEX(i, total, blocks)                                                      \
    for (unsigned block_ = 0; block_ < (blocks); ++block_)                                         \
        for (unsigned thread_ = 0; thread_ < CONVOY__THREADS; ++thread_)                           \
            for (int64_t i = convoy__grid_first(block_, CONVOY__THREADS, thread_); i < (total);    \
                 i += convoy__grid_stride(CONVOY__THREADS, (blocks)))

/* Random data (never zero) or NaN, from one seeded generator for the body checks. */
static float *floats(int64_t n, int random)
{
    static case_rng rng;
    static int seeded;
    if (!seeded) {
        case_rng_seed(&rng, 0x9e3779b97f4a7c15ull);
        seeded = 1;
    }
    return random ? case_random_floats(&rng, n) : case_nan_floats(n);
}

static unsigned char *visit_counts(int64_t total)
{
    unsigned char *v = calloc((size_t)(total > 0 ? total : 1), 1);
    assert_non_null(v);
    return v;
}

static void assert_each_once(unsigned char *visits, int64_t total, const char *kernel)
{
    for (int64_t i = 0; i < total; ++i)
        if (visits[i] != 1)
            fail_msg("%s: element %lld visited %d times", kernel, (long long)i, visits[i]);
    free(visits);
}

/* im2col and col2im bodies for a chunk of count images against the CPU's im2col / col2im of
 * each image (cpu/im2col.c, whose col2im sums in the same gather order: equal bit for bit). */
static void check_im2col_bodies(const convoy__conv_geom *g, int64_t count)
{
    int64_t rows = g->in_channels * convoy__geom_kernel_spatial(g);
    int64_t positions = convoy__geom_out_spatial(g), ld = count * positions;
    int64_t image_numel = g->in_channels * convoy__geom_in_spatial(g);
    float *images = floats(count * image_numel, 1);
    float *col = floats(rows * ld, 0), *want = floats(rows * ld, 0);
    int64_t total = rows * ld;
    unsigned char *visits = visit_counts(total);
    FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
    {
        col[i] = convoy__im2col_chunk_value(g, images, count, i);
        visits[i]++;
    }
    assert_each_once(visits, total, "im2col_chunk_kernel");
    for (int64_t t = 0; t < count; ++t)
        convoy__cpu_im2col(g, images + t * image_numel, want + t * positions, ld);
    assert_memory_equal(col, want, (size_t)total * sizeof(float));

    float *c = floats(rows * ld, 1);
    float *back = floats(count * image_numel, 0), *back_want = floats(count * image_numel, 0);
    total = count * image_numel;
    visits = visit_counts(total);
    FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
    {
        back[i] = convoy__col2im_chunk_value(g, c, count, i);
        visits[i]++;
    }
    assert_each_once(visits, total, "col2im_chunk_kernel");
    for (int64_t t = 0; t < count; ++t)
        convoy__cpu_col2im(g, c + t * positions, ld, back_want + t * image_numel);
    assert_memory_equal(back, back_want, (size_t)total * sizeof(float));
    free(images);
    free(col);
    free(want);
    free(c);
    free(back);
    free(back_want);
}

/* The three direct bodies over the written operand's grid, against the reference here and
 * the CPU direct path (cpu/conv_direct.c: the same sums, so equal bit for bit). */
static void check_direct_bodies(const convoy__conv_geom *g)
{
    int64_t nx = convoy__geom_input_numel(g), nw = convoy__geom_filter_numel(g);
    int64_t ny = convoy__geom_output_numel(g);
    for (int dir = 0; dir < 3; ++dir) {
        float *x = floats(nx, dir != CONVOY_CONV_BACKWARD_DATA);
        float *w = floats(nw, dir != CONVOY_CONV_BACKWARD_FILTER);
        float *y = floats(ny, dir != CONVOY_CONV_FORWARD);
        int64_t total = dir == CONVOY_CONV_FORWARD         ? ny
                        : dir == CONVOY_CONV_BACKWARD_DATA ? nx
                                                           : nw;
        float *got = floats(total, 0);
        unsigned char *visits = visit_counts(total);
        FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
        {
            got[i] = (float)(dir == CONVOY_CONV_FORWARD ? convoy__direct_forward_value(g, x, w, i)
                             : dir == CONVOY_CONV_BACKWARD_DATA
                                 ? convoy__direct_backward_data_value(g, w, y, i)
                                 : convoy__direct_backward_filter_value(g, x, y, i));
            visits[i]++;
        }
        assert_each_once(visits, total, "conv_direct kernel");
        double *want = case_reference(g, (convoy_conv_direction)dir, x, w, y);
        assert_non_null(want);
        for (int64_t i = 0; i < total; ++i)
            if (!(fabs((double)got[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i])))
                fail_msg("direct dir %d: element %lld is %g, want %g", dir, (long long)i,
                         (double)got[i], want[i]);
        convoy__conv_buffers b = {x, w, y, 0};
        convoy__cpu_conv_direct(g, (convoy_conv_direction)dir, &b);
        const float *host = dir == CONVOY_CONV_FORWARD         ? y
                            : dir == CONVOY_CONV_BACKWARD_DATA ? x
                                                               : w;
        assert_memory_equal(got, host, (size_t)total * sizeof(float));
        free(want);
        free(got);
        free(x);
        free(w);
        free(y);
    }
}

/* Every kernel of cuda/kernels.cu is one store of a __host__ __device__ body, inside the
 * grid-stride loop of cuda/launch_config.h; here each body runs over its kernel's whole grid,
 * as the launcher sizes it, for every test geometry and a chunk of one and of all images, and
 * is compared with the host implementation. A small grid that must stride is checked too. */
static void test_kernel_bodies_on_full_grids(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        convoy__conv_geom g = geom_of(&cases[i]);
        check_im2col_bodies(&g, 1);
        check_im2col_bodies(&g, g.batch);
        check_direct_bodies(&g);
    }
    /* swap_axes (T, M, P) -> (M, T, P) and back, and fill. */
    const int64_t shapes[][3] = {{3, 5, 7}, {1, 4, 1}, {6, 1, 9}, {2, 3, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        int64_t a = shapes[s][0], b = shapes[s][1], inner = shapes[s][2], total = a * b * inner;
        float *src = floats(total, 1), *dst = floats(total, 0), *again = floats(total, 0);
        unsigned char *visits = visit_counts(total);
        FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
        {
            dst[i] = convoy__swap_axes_value(src, i, a, b, inner);
            visits[i]++;
        }
        assert_each_once(visits, total, "swap_axes_kernel");
        for (int64_t ai = 0; ai < a; ++ai)
            for (int64_t bi = 0; bi < b; ++bi)
                for (int64_t k = 0; k < inner; ++k)
                    assert_true(dst[(bi * a + ai) * inner + k] == src[(ai * b + bi) * inner + k]);
        FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
        again[i] = convoy__swap_axes_value(dst, i, b, a, inner);
        assert_memory_equal(again, src, (size_t)total * sizeof(float));
        visits = visit_counts(total);
        FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
        {
            dst[i] = convoy__fill_value(0.01f, i);
            visits[i]++;
        }
        assert_each_once(visits, total, "fill_kernel");
        for (int64_t i = 0; i < total; ++i)
            assert_true(dst[i] == 0.01f);
        free(src);
        free(dst);
        free(again);
    }
    /* Fewer threads than elements: each walks the grid-stride loop several times. */
    const int64_t total = 10 * CONVOY__THREADS + 17;
    unsigned char *visits = visit_counts(total);
    FOR_EACH_GRID_INDEX(i, total, 3u)
    visits[i]++;
    assert_each_once(visits, total, "a three-block grid");
    assert_int_equal(convoy__blocks_for(total), 11);
    assert_int_equal(convoy__blocks_for((int64_t)1 << 40), (unsigned)CONVOY__MAX_BLOCKS);
}

/* ---- the caller's current device ------------------------------------------------------- */

/* A thread's current device as the CUDA runtime would keep it, with a log of the calls. */
typedef struct fake_thread {
    int current;
    int fail_get, fail_set; /* the next get / set fails */
    int gets, sets, restores;
    int log[16]; /* devices set or restored, in order */
    int logged;
} fake_thread;

static convoy_status fake_get(void *context, int *device)
{
    fake_thread *t = context;
    t->gets++;
    if (t->fail_get) {
        t->fail_get = 0;
        return CONVOY_ERR_BACKEND;
    }
    *device = t->current;
    return CONVOY_OK;
}

static convoy_status fake_set(void *context, int device)
{
    fake_thread *t = context;
    t->sets++;
    if (t->fail_set) {
        t->fail_set = 0;
        return CONVOY_ERR_BACKEND;
    }
    t->current = device;
    assert_true(t->logged < 16);
    t->log[t->logged++] = device;
    return CONVOY_OK;
}

static void fake_restore(void *context, int device)
{
    fake_thread *t = context;
    t->restores++;
    t->current = device;
    assert_true(t->logged < 16);
    t->log[t->logged++] = device;
}

/* Every entry point brackets its work with enter / leave: the caller gets its own device
 * back; nothing is switched (or restored) when the wanted device is already current, so a
 * single-GPU program never pays for a cudaSetDevice; scopes nest; a failed read or switch
 * leaves nothing to undo. */
static void test_device_scope(void **state)
{
    (void)state;
    fake_thread t;
    memset(&t, 0, sizeof t);
    convoy__device_calls calls = {fake_get, fake_set, fake_restore, &t};
    convoy__device_scope outer, inner;

    /* The caller is on 0, the backend on 1: switch, then back. */
    assert_int_equal(convoy__device_scope_enter(&calls, 1, &outer), CONVOY_OK);
    assert_int_equal(t.current, 1);
    assert_int_equal(outer.saved, 0);
    assert_int_equal(outer.switched, 1);
    /* A nested entry (a copy from inside a work function) finds 1 current. */
    assert_int_equal(convoy__device_scope_enter(&calls, 1, &inner), CONVOY_OK);
    assert_int_equal(inner.switched, 0);
    convoy__device_scope_leave(&calls, &inner);
    assert_int_equal(t.current, 1);
    convoy__device_scope_leave(&calls, &outer);
    assert_int_equal(t.current, 0);
    assert_int_equal(t.sets, 1);
    assert_int_equal(t.restores, 1);
    assert_int_equal(t.logged, 2);
    assert_int_equal(t.log[0], 1);
    assert_int_equal(t.log[1], 0);

    /* Already on the backend's device: no set, no restore. */
    memset(&t, 0, sizeof t);
    t.current = 2;
    assert_int_equal(convoy__device_scope_enter(&calls, 2, &outer), CONVOY_OK);
    convoy__device_scope_leave(&calls, &outer);
    assert_int_equal(t.gets, 1);
    assert_int_equal(t.sets + t.restores, 0);
    assert_int_equal(t.current, 2);

    /* The read fails: the error comes back, nothing was switched, leave does nothing. */
    memset(&t, 0, sizeof t);
    t.current = 3;
    t.fail_get = 1;
    assert_int_equal(convoy__device_scope_enter(&calls, 1, &outer), CONVOY_ERR_BACKEND);
    assert_int_equal(outer.switched, 0);
    convoy__device_scope_leave(&calls, &outer);
    assert_int_equal(t.current, 3);
    assert_int_equal(t.sets + t.restores, 0);

    /* The switch fails: the caller is still on its device, leave does nothing. */
    t.fail_set = 1;
    assert_int_equal(convoy__device_scope_enter(&calls, 1, &outer), CONVOY_ERR_BACKEND);
    assert_int_equal(outer.switched, 0);
    assert_int_equal(outer.saved, 3);
    convoy__device_scope_leave(&calls, &outer);
    assert_int_equal(t.current, 3);
    assert_int_equal(t.restores, 0);

    /* Two runtimes on devices 1 and 2 used in turn from a thread on 0: each call leaves the
     * thread on 0, whatever ran before it. */
    memset(&t, 0, sizeof t);
    for (int call = 0; call < 4; ++call) {
        assert_int_equal(convoy__device_scope_enter(&calls, 1 + call % 2, &outer), CONVOY_OK);
        assert_int_equal(t.current, 1 + call % 2);
        convoy__device_scope_leave(&calls, &outer);
        assert_int_equal(t.current, 0);
    }
    assert_int_equal(t.sets, 4);
    assert_int_equal(t.restores, 4);
}

/* With no GPU the real binding fails to read a device and so switches nothing; with one, a
 * scope on the current device is free and leaves it current. */
static void test_cuda_device_calls(void **state)
{
    (void)state;
    int before = -1;
    cudaError_t e = cudaGetDevice(&before);
    (void)cudaGetLastError();
    convoy__device_scope scope;
    int wanted = e == cudaSuccess ? before : 0;
    convoy_status status = convoy__device_scope_enter(&convoy__cuda_device_calls, wanted, &scope);
    if (e != cudaSuccess) {
        assert_int_not_equal(status, CONVOY_OK);
        assert_int_equal(scope.switched, 0);
        assert_non_null(strstr(convoy_last_error_message(), "cudaGetDevice"));
    } else {
        assert_int_equal(status, CONVOY_OK);
        assert_int_equal(scope.switched, 0);
    }
    convoy__device_scope_leave(&convoy__cuda_device_calls, &scope);
    if (e == cudaSuccess) {
        int after = -1;
        assert_int_equal(cudaGetDevice(&after), cudaSuccess);
        assert_int_equal(after, before);
        assert_int_equal(cudaGetLastError(), cudaSuccess);
    }
    (void)cudaGetLastError();
}

static void check_candidates(convoy__backend *be)
{
    const geom_case pw = {2, 2, 4, 4, 1, {8, 8}, {1, 1}, {1, 1}, {1, 1}, PADS, {0}, {0}, 1, 0};
    const geom_case *list[] = {&cases[0], &cases[1], &cases[3], &pw};
    for (size_t i = 0; i < sizeof list / sizeof list[0]; ++i) {
        convoy__conv_geom g = geom_of(list[i]);
        for (int dir = 0; dir < 3; ++dir) {
            convoy__candidate_list list = {.count = 0};
            for (int a = 0; a < be->conv->count; ++a) {
                const convoy__conv_algo *algo = be->conv->algos[a];
                if (!algo->refusal || !algo->refusal(be, &g, (convoy_conv_direction)dir))
                    algo->candidates(be, algo, &g, (convoy_conv_direction)dir, &list);
            }
            int gemm = 0, direct = 0, one = 0, dnn = 0;
            for (int j = 0; j < list.count; ++j) {
                const convoy__conv_candidate *c = &list.items[j];
                gemm += !strcmp(c->algo->name, "gemm");
                direct += !strcmp(c->algo->name, "direct") && c->deterministic;
                one += !strcmp(c->algo->name, "1x1");
                dnn += !strcmp(c->algo->name, "cudnn");
                if (!strcmp(c->algo->name, "cudnn")) {
                    assert_int_equal(strncmp(c->name, "cudnn:", 6), 0);
                    assert_int_equal(c->exact, convoy__cudnn_algo_is_exact(
                                                   (convoy_conv_direction)dir, c->variant));
                }
            }
            assert_int_equal(gemm, 1);
            assert_int_equal(direct, 1);
            assert_int_equal(one, convoy__geom_is_pointwise(&g));
            if (!convoy__cudnn_expressible(&g, NULL, NULL) || !convoy__cuda_backend_has_cudnn(be))
                assert_int_equal(dnn, 0);
        }
    }
}

/* Without a GPU (this test's usual home) creation must fail with CONVOY_ERR_NO_DEVICE and
 * the driver's reason; with one it must describe itself and offer candidates. */
static void test_create(void **state)
{
    (void)state;
    convoy__cuda_config config = {0, 0, 1};
    convoy__backend *be = NULL;
    char why[256] = "unchanged";
    convoy_status status = convoy__cuda_backend_create(&config, &be, why, sizeof why);
    if (status != CONVOY_OK) {
        assert_int_equal(status, CONVOY_ERR_NO_DEVICE);
        assert_null(be);
        assert_true(why[0] != '\0' && strcmp(why, "unchanged") != 0);
        assert_true(convoy_last_error_message()[0] != '\0');
        printf("no usable GPU here: %s\n", why);
        return;
    }
    const char *text = be->ops->describe(be);
    printf("%s\n", text);
    assert_int_equal(strncmp(text, "cuda: ", 6), 0);
    assert_non_null(strstr(text, "cuBLAS"));
    assert_int_equal(be->ops->device, CONVOY_DEVICE_CUDA);
    assert_int_equal(be->ops->enqueue_runs_now, 1);
    assert_true(be->ops->memory_capacity(be) > 0);
    check_candidates(be);
    be->ops->destroy(be);
}

static void test_bad_device_index(void **state)
{
    (void)state;
    int indices[] = {9999, -1};
    for (int i = 0; i < 2; ++i) {
        convoy__cuda_config config = {indices[i], 0, 1};
        convoy__backend *be = NULL;
        char why[256] = "";
        assert_int_equal(convoy__cuda_backend_create(&config, &be, why, sizeof why),
                         CONVOY_ERR_NO_DEVICE);
        assert_null(be);
        assert_true(why[0] != '\0');
    }
    convoy__backend *be = NULL;
    char why[64];
    assert_int_equal(convoy__cuda_backend_create(NULL, &be, why, sizeof why),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__cuda_backend_has_cudnn(NULL), 0);
}

/* Task timers place CUDA timing events on the host clock through an anchor: a new anchor when
 * there is none, when it is a second old, or when the clock reads earlier than it; the
 * anchor's host time is the middle of the readings around its record and wait; a task's
 * start is the anchor plus the milliseconds to its start event, its end adds its own span
 * (never negative). */
static void test_event_clock(void **state)
{
    (void)state;
    assert_true(convoy__cuda_anchor_due(0, 0.0, 5.0));
    assert_false(convoy__cuda_anchor_due(1, 1000.0, 1000.0));
    assert_false(convoy__cuda_anchor_due(1, 1000.0, 1000.0 + 999999.0));
    assert_true(convoy__cuda_anchor_due(1, 1000.0, 1000.0 + 1e6));
    assert_true(convoy__cuda_anchor_due(1, 1000.0, 999.0));
    assert_true(convoy__cuda_anchor_due(1, 1000.0, NAN));
    assert_true(convoy__cuda_anchor_host_us(100.0, 110.0) == 105.0);

    double start = 0.0, end = 0.0;
    convoy__cuda_event_interval(5e6, 0.25f, 1.5f, &start, &end);
    assert_true(start == 5e6 + 250.0 && end == 5e6 + 1750.0);
    convoy__cuda_event_interval(5e6, 0.0f, -0.001f, &start, &end);
    assert_true(start == 5e6 && end == 5e6);
    /* A second after the anchor, a float of milliseconds still places an event to well under
     * a microsecond. */
    convoy__cuda_event_interval(0.0, 999.9991f, 0.0f, &start, &end);
    assert_true(fabs(start - 999999.1) < 0.1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_mapping),
        cmocka_unit_test(test_gemm_check),
        cmocka_unit_test(test_paths_all_cases),
        cmocka_unit_test(test_pointwise),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_kernel_bodies_on_full_grids),
        cmocka_unit_test(test_workspace_model),
        cmocka_unit_test(test_chunk_shrinks_to_workspace),
        cmocka_unit_test(test_cudnn_expressible),
        cmocka_unit_test(test_cudnn_names),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_device_scope),
        cmocka_unit_test(test_cuda_device_calls),
        cmocka_unit_test(test_event_clock),
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_bad_device_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
