/* The CPU convolution kernels on their own: im2col against its element-wise definition,
 * col2im against the gather form and as im2col's adjoint, and the direct, GEMM, 1x1 and oneDNN
 * paths in all three directions against the double-precision reference of conv_reference.c.
 * The oneDNN algorithms run through their descriptors on a host backend (candidates, prepare,
 * run on a NaN-filled workspace, release) wherever they accept the convolution: onednn held to
 * the exact algorithms' 1e-5, winograd (inexact) to WINOGRAD_TOLERANCE, with its worst error
 * over every case it ran printed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"
#include "cpu/conv_cpu.h"
#include "cpu/host_backend.h"
#include "kernels/conv_index.h"
#include "core/conv_geometry.h"
#include "conv_cases.h"
#include "conv_geom_case.h"

static int failures;
static int cases_run;

/* The bound on winograd's error, in units of max(1, ||ref||_inf), docs/DESIGN.md section 4. */
#define WINOGRAD_TOLERANCE 5e-5

/* ---- one case, every implementation -------------------------------------- */

/* The written operand against the reference, printing the first mismatches. */
static void compare(const char *what, const convoy__conv_geom *g, const float *got,
                    const double *ref, int64_t n)
{
    char label[640], text[512];
    geom_describe(g, text, sizeof text);
    snprintf(label, sizeof label, "%s on %s", what, text);
    failures += !case_compare(label, got, ref, n, 1e-5);
}

static convoy__backend *host;  /* for the oneDNN descriptors: their threads per task */
static int onednn_runs;        /* convolutions the oneDNN descriptor ran */
static int onednn_refusals;    /* and those it refused */
static const char *onednn_off; /* its refusal of a plain convolution: non-NULL without oneDNN */
static int winograd_runs;      /* convolutions the winograd descriptor ran */
static double winograd_worst;  /* its largest error, in units of max(1, ||ref||_inf) */

/* The candidate named name of an algorithm on oneDNN (onednn:blocked, onednn:plain, winograd)
 * through its descriptor, as the planner and the host backend drive it; CONVOY_ERR_UNSUPPORTED when
 * it does not offer that candidate. */
static convoy_status run_algo(const convoy__conv_algo *algo, const char *name,
                              const convoy__conv_geom *g, convoy_conv_direction dir,
                              const convoy__conv_buffers *b)
{
    convoy__candidate_list list = {.count = 0};
    algo->candidates(host, algo, g, dir, &list);
    int found = -1;
    for (int i = 0; i < list.count; ++i) {
        if (!strcmp(list.items[i].name, name))
            found = i;
    }
    if (found < 0)
        return CONVOY_ERR_UNSUPPORTED;
    assert_int_equal(list.items[found].workspace_per_image, 0);
    convoy__conv_plan plan = {.geom = *g,
                              .direction = dir,
                              .candidate = list.items[found],
                              .workspace_bytes = list.items[found].workspace_fixed};
    convoy_status st = algo->prepare(host, &plan);
    if (st != CONVOY_OK)
        return st;
    /* NaN-filled and aligned as the pool aligns its blocks (256 bytes). */
    float *ws = NULL;
    if (plan.workspace_bytes) {
        size_t bytes = (plan.workspace_bytes + 255) & ~(size_t)255;
        ws = aligned_alloc(256, bytes);
        assert_non_null(ws);
        for (size_t i = 0; i < bytes / sizeof(float); ++i)
            ws[i] = NAN;
    }
    st = algo->run(host, NULL, &plan, b, ws);
    algo->release(host, &plan);
    assert_null(plan.algo_data);
    free(ws);
    return st;
}

static convoy_status run_onednn(const char *name, const convoy__conv_geom *g,
                                convoy_conv_direction dir, const convoy__conv_buffers *b)
{
    ++onednn_runs;
    return run_algo(&convoy__cpu_algo_onednn, name, g, dir, b);
}

/* The largest |got - ref| over max(1, ||ref||_inf): the measure case_compare bounds. */
static double relative_error(const float *got, const double *ref, int64_t n)
{
    double ref_inf = 0.0, worst = 0.0;
    for (int64_t i = 0; i < n; ++i)
        ref_inf = fmax(ref_inf, fabs(ref[i]));
    for (int64_t i = 0; i < n; ++i) {
        double err = fabs((double)got[i] - ref[i]);
        worst = isnan(err) ? INFINITY : fmax(worst, err);
    }
    return worst / fmax(1.0, ref_inf);
}

/* The winograd algorithm wherever it offers a candidate: its error against the reference is
 * recorded and held to WINOGRAD_TOLERANCE. */
static void check_winograd(const convoy__conv_geom *g, convoy_conv_direction dir, const float *x,
                           const float *w, const float *dy, const double *ref)
{
    if (convoy__cpu_algo_winograd.refusal(host, g, dir))
        return;
    int64_t n_in = convoy__geom_input_numel(g), n_w = convoy__geom_filter_numel(g);
    int64_t n_out = convoy__geom_output_numel(g);
    float *bx = dir == CONVOY_CONV_BACKWARD_DATA ? case_nan_floats(n_in) : (float *)x;
    float *bw = dir == CONVOY_CONV_BACKWARD_FILTER ? case_nan_floats(n_w) : (float *)w;
    float *by = dir == CONVOY_CONV_FORWARD ? case_nan_floats(n_out) : (float *)dy;
    convoy__conv_buffers b = {bx, bw, by, 0};
    convoy_status st = run_algo(&convoy__cpu_algo_winograd, "winograd", g, dir, &b);
    if (st == CONVOY_OK) {
        const float *got = dir == CONVOY_CONV_FORWARD         ? by
                           : dir == CONVOY_CONV_BACKWARD_DATA ? bx
                                                              : bw;
        int64_t n = dir == CONVOY_CONV_FORWARD         ? n_out
                    : dir == CONVOY_CONV_BACKWARD_DATA ? n_in
                                                       : n_w;
        double err = relative_error(got, ref, n);
        ++winograd_runs;
        winograd_worst = fmax(winograd_worst, err);
        if (!(err <= WINOGRAD_TOLERANCE)) {
            char text[512];
            geom_describe(g, text, sizeof text);
            print_message("winograd %s on %s: error %.3g over the bound %.3g\n",
                          case_direction_names[dir], text, err, WINOGRAD_TOLERANCE);
            ++failures;
        }
    } else if (st != CONVOY_ERR_UNSUPPORTED) {
        print_message("winograd %s returned %s: %s\n", case_direction_names[dir],
                      convoy_status_name(st), convoy_last_error_message());
        ++failures;
    }
    if (bx != x)
        free(bx);
    if (bw != w)
        free(bw);
    if (by != dy)
        free(by);
}

static void check_one(const convoy__conv_geom *g, convoy_conv_direction dir, const char *impl,
                      int64_t chunk, const float *x, const float *w, const float *dy,
                      const double *ref)
{
    int64_t n_in = convoy__geom_input_numel(g), n_w = convoy__geom_filter_numel(g);
    int64_t n_out = convoy__geom_output_numel(g);
    float *bx = dir == CONVOY_CONV_BACKWARD_DATA ? case_nan_floats(n_in) : (float *)x;
    float *bw = dir == CONVOY_CONV_BACKWARD_FILTER ? case_nan_floats(n_w) : (float *)w;
    float *by = dir == CONVOY_CONV_FORWARD ? case_nan_floats(n_out) : (float *)dy;
    convoy__conv_buffers b = {bx, bw, by, 0};
    convoy_status st = CONVOY_OK;
    if (strcmp(impl, "direct") == 0) {
        convoy__cpu_conv_direct(g, dir, &b);
    } else if (strcmp(impl, "1x1") == 0) {
        st = convoy__gemm_conv_1x1(&convoy__cpu_gemm_ops, g, dir, &b);
    } else if (strncmp(impl, "onednn", 6) == 0) {
        st = run_onednn(impl, g, dir, &b);
    } else {
        size_t bytes = convoy__gemm_workspace_fixed(g, dir) +
                       convoy__gemm_workspace_per_image(g, dir) * (size_t)chunk;
        float *ws = case_nan_floats((int64_t)(bytes / sizeof(float)));
        st = convoy__gemm_conv(&convoy__cpu_gemm_ops, g, dir, &b, chunk, ws, bytes);
        free(ws);
    }
    char what[96];
    snprintf(what, sizeof what, "%s %s chunk %lld", impl, case_direction_names[dir],
             (long long)chunk);
    if (st != CONVOY_OK) {
        print_message("%s returned %s: %s\n", what, convoy_status_name(st),
                      convoy_last_error_message());
        ++failures;
    } else if (dir == CONVOY_CONV_FORWARD) {
        compare(what, g, by, ref, n_out);
    } else if (dir == CONVOY_CONV_BACKWARD_DATA) {
        compare(what, g, bx, ref, n_in);
    } else {
        compare(what, g, bw, ref, n_w);
    }
    if (bx != x)
        free(bx);
    if (bw != w)
        free(bw);
    if (by != dy)
        free(by);
}

/* im2col against convoy__im2col_source, col2im against convoy__col2im_gather, and the
 * adjoint identity <im2col(x), c> == <x, col2im(c)>, on image 0 with a padded ld. */
static void check_im2col(const convoy__conv_geom *g, const float *x, case_rng *rng)
{
    int64_t rows = g->in_channels * convoy__geom_kernel_spatial(g);
    int64_t cols = convoy__geom_out_spatial(g), ld = cols + 3;
    int64_t in_volume = convoy__geom_in_spatial(g), in_numel = g->in_channels * in_volume;
    float *col = case_nan_floats(rows * ld);
    float *c = case_random_floats(rng, rows * ld);
    float *image = case_nan_floats(in_numel);
    convoy__cpu_im2col(g, x, col, ld);
    int bad = 0;
    double lhs = 0.0, rhs = 0.0, magnitude = 0.0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < ld; ++j) {
            float got = col[r * ld + j];
            if (j >= cols) {
                bad += !isnan(got); /* columns past the matrix are not written */
                continue;
            }
            int64_t src = convoy__im2col_source(g, r, j);
            float want = src < 0 ? 0.0f : x[src];
            if (got != want && bad++ < 5)
                print_message("  im2col[%lld, %lld] got %g want %g\n", (long long)r, (long long)j,
                              (double)got, (double)want);
            lhs += (double)got * (double)c[r * ld + j];
            magnitude += fabs((double)got * (double)c[r * ld + j]);
        }
    convoy__cpu_col2im(g, c, ld, image);
    for (int64_t ch = 0; ch < g->in_channels; ++ch)
        for (int64_t p = 0; p < in_volume; ++p) {
            int64_t pc[3] = {p / (g->in[1] * g->in[2]), p / g->in[2] % g->in[1], p % g->in[2]};
            float want = convoy__col2im_gather(g, c, ld, ch, pc);
            float got = image[ch * in_volume + p];
            if (got != want && bad++ < 5)
                print_message("  col2im[%lld, %lld] got %g want %g\n", (long long)ch, (long long)p,
                              (double)got, (double)want);
            rhs += (double)x[ch * in_volume + p] * (double)got;
        }
    if (fabs(lhs - rhs) > 1e-5 * magnitude + 1e-9) {
        print_message("  adjoint: <im2col(x), c> = %.12g but <x, col2im(c)> = %.12g\n", lhs, rhs);
        ++bad;
    }
    if (bad) {
        char text[512];
        geom_describe(g, text, sizeof text);
        print_message("MISMATCH im2col/col2im on %s\n", text);
        ++failures;
    }
    free(col);
    free(c);
    free(image);
}

/* Runs every implementation that applies, in every direction, against the reference.
 * Returns 0, running nothing, when the forward output would have an extent < 1. */
static int run_case(const geom_case *cc)
{
    convoy__conv_geom g;
    if (!geom_case_geom(cc, &g))
        return 0;
    ++cases_run;
    case_rng rng;
    case_rng_seed(&rng, (uint64_t)(g.in[2] * 131 + g.out[1] * 17 + g.kernel[2]));
    float *x = case_random_floats(&rng, convoy__geom_input_numel(&g));
    float *w = case_random_floats(&rng, convoy__geom_filter_numel(&g));
    float *dy = case_random_floats(&rng, convoy__geom_output_numel(&g));
    if (g.batch > 0 && g.in_channels > 0)
        check_im2col(&g, x, &rng);
    int64_t chunks[4] = {1, 2, 3, g.batch};
    for (int d = 0; d < 3; ++d) {
        convoy_conv_direction dir = (convoy_conv_direction)d;
        double *ref = case_reference(&g, dir, x, w, dy);
        assert_non_null(ref);
        check_one(&g, dir, "direct", 0, x, w, dy, ref);
        for (int i = 0; i < 4; ++i) {
            int seen = i > 0 && chunks[i] > g.batch;
            for (int j = 0; j < i; ++j)
                seen |= chunks[j] == chunks[i];
            if (!seen)
                check_one(&g, dir, "gemm", chunks[i], x, w, dy, ref);
        }
        if (convoy__geom_is_pointwise(&g))
            check_one(&g, dir, "1x1", 0, x, w, dy, ref);
        if (!convoy__cpu_algo_onednn.refusal(host, &g, dir)) {
            check_one(&g, dir, "onednn:blocked", 0, x, w, dy, ref);
            check_one(&g, dir, "onednn:plain", 0, x, w, dy, ref);
        } else {
            onednn_refusals += 2;
        }
        check_winograd(&g, dir, x, w, dy, ref);
        free(ref);
    }
    free(x);
    free(w);
    free(dy);
    return 1;
}

/* ---- the grids ------------------------------------------------------------ */

/* Every shape with each of three strides and dilations and every border (VALID, FULL, HALF,
 * then each padding in pads, the same on both sides), flip on and off. Spatial triples hold
 * the shapes' nd entries. Returns the number of combinations run. */
static int run_grid(const geom_case *shapes, size_t shape_count, const int64_t strides[3][3],
                    const int64_t dilations[3][3], const int64_t (*pads)[3], int pad_count)
{
    int before = cases_run;
    for (size_t s = 0; s < shape_count; ++s)
        for (size_t st = 0; st < 3; ++st)
            for (size_t dl = 0; dl < 3; ++dl)
                for (int border = 0; border < 3 + pad_count; ++border)
                    for (int flip = 1; flip >= 0; --flip) {
                        geom_case cc = shapes[s];
                        cc.flip = flip;
                        memcpy(cc.stride, strides[st], sizeof strides[st]);
                        memcpy(cc.dilation, dilations[dl], sizeof dilations[dl]);
                        cc.border = border < 3 ? VALID + border : PADS;
                        if (border >= 3) {
                            memcpy(cc.pad_before, pads[border - 3], sizeof pads[border - 3]);
                            memcpy(cc.pad_after, pads[border - 3], sizeof pads[border - 3]);
                        }
                        run_case(&cc);
                    }
    return cases_run - before;
}

static void test_grid_2d(void **state)
{
    (void)state;
    /* nd, n, c, m, groups, in, k; run_grid sets the rest */
    static const geom_case shapes[] = {
        {2, 8, 1, 5, 1, {6, 6}, {2, 2}, {0}, {0}, VALID, {0}, {0}, 0, 0},
        {2, 8, 1, 4, 1, {8, 8}, {3, 3}, {0}, {0}, VALID, {0}, {0}, 0, 0},
        {2, 2, 1, 2, 1, {7, 7}, {3, 3}, {0}, {0}, VALID, {0}, {0}, 0, 0},
        {2, 6, 1, 1, 1, {10, 11}, {2, 3}, {0}, {0}, VALID, {0}, {0}, 0, 0},
        {2, 2, 1, 4, 1, {6, 5}, {1, 3}, {0}, {0}, VALID, {0}, {0}, 0, 0},
        {2, 1, 5, 4, 1, {9, 9}, {3, 2}, {0}, {0}, VALID, {0}, {0}, 0, 0},
    };
    static const int64_t strides[3][3] = {{1, 1}, {2, 2}, {2, 4}};
    static const int64_t dilations[3][3] = {{1, 1}, {1, 2}, {2, 1}};
    static const int64_t pads[][3] = {{0, 0}, {1, 1}, {5, 5}, {5, 2}};
    assert_int_equal(run_grid(shapes, 6, strides, dilations, pads, 4), 6 * 3 * 3 * 7 * 2);
    assert_int_equal(failures, 0);
}

static void test_grid_3d(void **state)
{
    (void)state;
    static const geom_case shapes[] = {
        {3, 2, 1, 2, 1, {5, 5, 5}, {2, 2, 2}, {0}, {0}, VALID, {0}, {0}, 0, 0},
        {3, 1, 2, 1, 1, {7, 5, 6}, {2, 1, 3}, {0}, {0}, VALID, {0}, {0}, 0, 0},
    };
    static const int64_t strides[3][3] = {{1, 1, 1}, {2, 2, 2}, {1, 2, 3}};
    static const int64_t dilations[3][3] = {{1, 1, 1}, {1, 2, 1}, {2, 1, 2}};
    static const int64_t pads[][3] = {{0, 0, 0}, {2, 2, 3}};
    assert_int_equal(run_grid(shapes, 2, strides, dilations, pads, 2), 2 * 3 * 3 * 5 * 2);
    assert_int_equal(failures, 0);
}

/* Cases that each exercise one option; see the comment on each line. */
static const geom_case option_cases[] = {
    /* groups = 2, 2D and 3D, with stride, dilation and borders */
    {2, 2, 4, 6, 2, {7, 6}, {3, 2}, {1, 2}, {2, 1}, HALF, {0}, {0}, 1, 0},
    {2, 3, 6, 4, 2, {8, 7}, {2, 3}, {2, 1}, {1, 1}, FULL, {0}, {0}, 0, 0},
    {3, 2, 4, 4, 2, {5, 4, 6}, {2, 3, 2}, {1, 2, 1}, {1, 1, 2}, HALF, {0}, {0}, 1, 0},
    /* depthwise: groups = C, with and without a channel multiplier */
    {2, 2, 3, 6, 3, {8, 8}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 0},
    {2, 3, 4, 4, 4, {9, 9}, {3, 3}, {2, 2}, {1, 1}, PADS, {1, 1}, {1, 1}, 1, 0},
    {3, 2, 3, 3, 3, {4, 5, 6}, {2, 2, 2}, {1, 1, 2}, {1, 2, 1}, FULL, {0}, {0}, 0, 0},
    /* unshared 2D: Aesara's TestUnsharedConv shape (groups, stride, full), and more */
    {2, 3, 4, 4, 2, {4, 4}, {4, 2}, {3, 2}, {1, 1}, FULL, {0}, {0}, 1, 1},
    {2, 2, 3, 2, 1, {6, 5}, {3, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1},
    {2, 2, 2, 4, 2, {7, 7}, {3, 3}, {2, 1}, {1, 2}, HALF, {0}, {0}, 0, 1},
    {2, 1, 2, 3, 1, {5, 6}, {2, 2}, {1, 2}, {1, 1}, PADS, {1, 2}, {2, 0}, 1, 1},
    /* asymmetric padding, 2D and 3D */
    {2, 2, 3, 2, 1, {7, 8}, {3, 2}, {1, 1}, {1, 1}, PADS, {1, 2}, {2, 1}, 1, 0},
    {2, 2, 2, 3, 1, {6, 9}, {2, 3}, {2, 3}, {2, 1}, PADS, {2, 0}, {1, 0}, 1, 0},
    {3, 2, 2, 2, 1, {5, 6, 4}, {2, 3, 2}, {1, 2, 1}, {1, 1, 2}, PADS, {1, 0, 2}, {0, 2, 1}, 1, 0},
    /* wide images (one image per GEMM, straight into the output), 2D and 3D */
    {2, 3, 3, 4, 1, {34, 34}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 0},
    {3, 3, 2, 3, 1, {8, 8, 9}, {3, 2, 3}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 1, 0},
    /* a 1.8 MB column matrix per image: the GEMM path trims a chunk of 3 to 2 + 1 */
    {2, 3, 128, 2, 2, {20, 20}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 0},
    /* pointwise: the 1x1 path (and gemm, direct) with groups and in 3D */
    {2, 3, 6, 4, 1, {5, 7}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
    {2, 2, 6, 4, 2, {4, 4}, {1, 1}, {1, 1}, {2, 3}, VALID, {0}, {0}, 0, 0},
    {2, 2, 4, 4, 4, {5, 5}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
    {3, 2, 4, 6, 1, {3, 4, 5}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, VALID, {0}, {0}, 1, 0},
    /* 1x1 kernels that are not pointwise: stride and padding */
    {2, 2, 3, 2, 1, {7, 7}, {1, 1}, {2, 2}, {1, 1}, PADS, {1, 0}, {0, 1}, 1, 0},
};

static void test_options(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof option_cases / sizeof option_cases[0]; ++i) {
        geom_case cc = option_cases[i];
        assert_true(run_case(&cc));
        cc.flip = !cc.flip;
        assert_true(run_case(&cc));
    }
    assert_int_equal(failures, 0);
}

/* Empty batch, channels or filters: the written operand is zero-filled (or empty). */
static void test_empty(void **state)
{
    (void)state;
    static const geom_case cases[] = {
        {2, 0, 1, 1, 1, {6, 6}, {2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
        {2, 1, 0, 1, 1, {6, 6}, {2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
        {2, 1, 1, 0, 1, {6, 6}, {2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
        {3, 0, 1, 1, 1, {4, 5, 6}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 1, 0},
        {3, 1, 0, 1, 1, {4, 5, 6}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, FULL, {0}, {0}, 1, 0},
        {3, 1, 1, 0, 1, {4, 5, 6}, {2, 2, 2}, {2, 1, 1}, {1, 1, 1}, VALID, {0}, {0}, 1, 0},
        {2, 0, 3, 2, 1, {4, 4}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
        {2, 2, 0, 2, 1, {4, 4}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
        {2, 2, 3, 0, 1, {4, 4}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0},
        {2, 0, 2, 2, 1, {5, 5}, {3, 3}, {1, 1}, {1, 1}, FULL, {0}, {0}, 1, 1},
        {2, 2, 2, 0, 1, {5, 5}, {3, 3}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        assert_true(run_case(&cases[i]));
    assert_int_equal(failures, 0);
}

/* The GEMM and 1x1 paths on the host primitives refuse what they cannot run instead of
 * crashing, and the CPU's chunk hint keeps a chunk's column matrix cache-sized. */
static void test_bad_arguments(void **state)
{
    (void)state;
    const geom_case cc = {2, 2, 2, 2, 1, {5, 5}, {3, 3}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0};
    convoy__conv_geom g;
    assert_true(geom_case_geom(&cc, &g));
    case_rng rng;
    case_rng_seed(&rng, 1);
    float *x = case_random_floats(&rng, convoy__geom_input_numel(&g));
    float *w = case_random_floats(&rng, convoy__geom_filter_numel(&g));
    float *y = case_nan_floats(convoy__geom_output_numel(&g));
    float ws[1];
    convoy__conv_buffers b = {x, w, y, 0};
    const convoy__gemm_ops *ops = &convoy__cpu_gemm_ops;
    assert_int_equal(convoy__gemm_conv(ops, &g, CONVOY_CONV_FORWARD, &b, 0, ws, sizeof ws),
                     CONVOY_ERR_INTERNAL);
    assert_non_null(strstr(convoy_last_error_message(), "cannot hold one image"));
    assert_int_equal(convoy__gemm_conv(ops, &g, CONVOY_CONV_FORWARD, &b, 1, NULL, 0),
                     CONVOY_ERR_INTERNAL);
    assert_int_equal(convoy__gemm_conv_1x1(ops, &g, CONVOY_CONV_FORWARD, &b), CONVOY_ERR_INTERNAL);
    assert_non_null(strstr(convoy_last_error_message(), "pointwise"));
    assert_int_equal(convoy__gemm_workspace_fixed(&g, CONVOY_CONV_FORWARD), 0);
    assert_int_equal(convoy__gemm_workspace_per_image(&g, CONVOY_CONV_FORWARD),
                     (2 * 9 + 2) * 9 * sizeof(float));
    /* 2 x 3 x 3 rows by 9 positions is 648 bytes of column matrix per image: 4 MiB hold
     * 6472 images. A wide output (>= 512 positions) goes one image at a time. */
    assert_int_equal(convoy__cpu_gemm_chunk_hint(&g), (4 << 20) / 648);
    convoy__conv_geom wide = g;
    wide.out[1] = wide.out[2] = 32;
    assert_int_equal(convoy__cpu_gemm_chunk_hint(&wide), 1);
    free(x);
    free(w);
    free(y);
}

/* The oneDNN descriptor ran every case it did not refuse (all but unshared and empty ones), or,
 * in a build without oneDNN, refused everything with the reason. */
static void test_onednn_coverage(void **state)
{
    (void)state;
    print_message("onednn ran %d convolutions and refused %d%s%s\n", onednn_runs, onednn_refusals,
                  onednn_off ? ": " : "", onednn_off ? onednn_off : "");
    assert_int_equal(onednn_runs + onednn_refusals, 2 * 3 * cases_run);
    if (onednn_off) {
        assert_string_equal(onednn_off, "convoy was built without oneDNN");
        assert_int_equal(onednn_runs, 0);
    } else {
        assert_true(onednn_refusals < onednn_runs / 10);
    }
    convoy__conv_geom g;
    if (!onednn_off) {
        /* Deterministic, as its candidates say: a filter gradient reduced over a batch by two
         * threads (42 M multiply-adds) comes out bit for bit the same twice, blocked or plain
         * (and through Winograd, where oneDNN has it). */
        const geom_case big = {2,      8,      32,   32,  1,   {24, 24}, {3, 3},
                               {1, 1}, {1, 1}, HALF, {0}, {0}, 1,        0};
        assert_true(geom_case_geom(&big, &g));
        case_rng rng;
        case_rng_seed(&rng, 7);
        float *x = case_random_floats(&rng, convoy__geom_input_numel(&g));
        float *dy = case_random_floats(&rng, convoy__geom_output_numel(&g));
        static const char *const names[3] = {"onednn:blocked", "onednn:plain", "winograd"};
        for (int n = 0; n < 3; ++n) {
            const convoy__conv_algo *algo =
                n < 2 ? &convoy__cpu_algo_onednn : &convoy__cpu_algo_winograd;
            float *dw[2];
            convoy_status st[2];
            for (int i = 0; i < 2; ++i) {
                dw[i] = case_nan_floats(convoy__geom_filter_numel(&g));
                convoy__conv_buffers b = {x, dw[i], dy, 0};
                st[i] = run_algo(algo, names[n], &g, CONVOY_CONV_BACKWARD_FILTER, &b);
            }
            assert_int_equal(st[0], st[1]);
            if (n < 2)
                assert_int_equal(st[0], CONVOY_OK);
            if (st[0] == CONVOY_OK)
                assert_memory_equal(dw[0], dw[1],
                                    (size_t)convoy__geom_filter_numel(&g) * sizeof(float));
            free(dw[0]);
            free(dw[1]);
        }
        free(x);
        free(dy);
    }
    const geom_case unshared = {2,      2,      2,     2,   1,   {5, 5}, {3, 3},
                                {1, 1}, {1, 1}, VALID, {0}, {0}, 1,      1};
    assert_true(geom_case_geom(&unshared, &g));
    assert_non_null(strstr(convoy__cpu_algo_onednn.refusal(host, &g, CONVOY_CONV_FORWARD),
                           onednn_off ? "oneDNN" : "unshared"));
}

/* winograd on the layer shapes it is for (oneDNN takes multiples of 16 channels): every
 * direction, flip on and off, with and without padding, against the reference; then its
 * coverage and worst error over every case of this file. */
static void test_winograd(void **state)
{
    (void)state;
    static const geom_case cases[] = {
        {2, 2, 16, 16, 1, {12, 12}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 0},
        {2, 3, 32, 16, 1, {9, 11}, {3, 3}, {1, 1}, {1, 1}, VALID, {0}, {0}, 0, 0},
        {2, 2, 64, 32, 1, {14, 14}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
        {2, 1, 128, 64, 1, {7, 7}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 0},
        {2, 2, 256, 32, 1, {8, 6}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
        {2, 4, 16, 48, 1, {28, 28}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 0},
        {2, 1, 512, 16, 1, {5, 5}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        geom_case cc = cases[i];
        assert_true(run_case(&cc));
        cc.flip = !cc.flip;
        assert_true(run_case(&cc));
    }
    print_message("winograd ran %d convolutions, worst error %.3g of max(1, ||ref||_inf) "
                  "(bound %.3g)\n",
                  winograd_runs, winograd_worst, WINOGRAD_TOLERANCE);
    assert_int_equal(failures, 0);
    /* With oneDNN on an AVX-512 machine it ran at least every case above. */
    char describe[128];
    convoy__cpu_onednn_describe(describe, sizeof describe, 2);
    if (!onednn_off && strstr(describe, "avx512"))
        assert_true(winograd_runs >= 7 * 2 * 3);
    /* Asymmetric padding is refused (oneDNN 2.6.3's Winograd backward data is wrong there), and
     * so is anything but a 2D 3x3 stride-1 ungrouped convolution. */
    const geom_case asymmetric = {2,      2,      16,   16,     1,      {10, 11}, {3, 3},
                                  {1, 1}, {1, 1}, PADS, {1, 1}, {0, 1}, 0,        0};
    const geom_case strided = {2,      2,      16,   16,  1,   {10, 11}, {3, 3},
                               {2, 2}, {1, 1}, HALF, {0}, {0}, 0,        0};
    convoy__conv_geom g;
    assert_true(geom_case_geom(&asymmetric, &g));
    const char *why = convoy__cpu_algo_winograd.refusal(host, &g, CONVOY_CONV_BACKWARD_DATA);
    assert_non_null(why);
    assert_non_null(strstr(why, onednn_off ? "oneDNN" : "same padding"));
    assert_true(geom_case_geom(&strided, &g));
    why = convoy__cpu_algo_winograd.refusal(host, &g, CONVOY_CONV_FORWARD);
    assert_non_null(why);
    assert_non_null(strstr(why, onednn_off ? "oneDNN" : "3x3 convolution with stride 1"));
}

/* The candidate the heuristic policy ranks first (the lowest cost over every algorithm of the
 * host registry that accepts the convolution), as the planner picks it. */
static const char *heuristic_choice(const convoy__conv_geom *g, convoy_conv_direction dir)
{
    static char name[64];
    convoy__candidate_list list = {.count = 0};
    const convoy__conv_registry *r = &convoy__host_conv_registry;
    for (int a = 0; a < r->count; ++a) {
        const convoy__conv_algo *algo = r->algos[a];
        if (!algo->refusal || !algo->refusal(host, g, dir))
            algo->candidates(host, algo, g, dir, &list);
    }
    int best = 0;
    for (int i = 1; i < list.count; ++i) {
        if (list.items[i].cost < list.items[best].cost)
            best = i;
    }
    snprintf(name, sizeof name, "%s", list.count ? list.items[best].name : "(none)");
    return name;
}

/* The heuristic costs pick, on the suite's layers, what bench/RESULTS.md measured fastest:
 * winograd for the wide 3x3 stride-1 layers with many positions, onednn:plain for pointwise
 * layers and for the data gradient into three channels, depthwise for the depthwise layer's
 * forward and data gradient, onednn:blocked for the rest. Without
 * oneDNN, or without its AVX-512 kernels, gemm and 1x1 as before. */
static void test_heuristic_choices(void **state)
{
    (void)state;
    typedef struct choice {
        geom_case shape;
        const char *expected[3]; /* forward, backward data, backward filter */
    } choice;
    static const choice suite[] = {
        {{2, 8, 3, 64, 1, {224, 224}, {7, 7}, {2, 2}, {1, 1}, PADS, {3, 3}, {3, 3}, 0, 0},
         {"onednn:blocked", "onednn:plain", "onednn:blocked"}},
        {{2, 8, 64, 64, 1, {56, 56}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"winograd", "winograd", "winograd"}},
        {{2, 8, 256, 256, 1, {14, 14}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"winograd", "winograd", "winograd"}},
        {{2, 8, 512, 512, 1, {7, 7}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "onednn:blocked"}},
        {{2, 8, 256, 64, 1, {56, 56}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 0, 0},
         {"onednn:plain", "onednn:plain", "onednn:plain"}},
        {{2, 8, 32, 32, 1, {14, 14}, {1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 0, 0},
         {"onednn:plain", "onednn:plain", "onednn:blocked"}},
        {{2, 8, 128, 128, 1, {56, 56}, {3, 3}, {2, 2}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "onednn:blocked"}},
        {{2, 8, 256, 256, 256, {28, 28}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"depthwise", "depthwise", "depthwise"}},
        {{2, 8, 32, 32, 1, {14, 14}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "onednn:blocked"}},
        {{3, 2, 64, 128, 1, {8, 56, 56}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "onednn:blocked"}},
        /* depthwise layers: 7x7 images, 5x5, dilated, 3D, and a 16-filter single-channel one */
        {{2, 8, 512, 512, 512, {7, 7}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "onednn:blocked"}},
        {{2, 8, 128, 128, 128, {28, 28}, {5, 5}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "depthwise"}},
        {{2, 8, 128, 128, 128, {28, 28}, {3, 3}, {1, 1}, {2, 2}, FULL, {0}, {0}, 0, 0},
         {"depthwise", "depthwise", "depthwise"}},
        {{3, 2, 64, 64, 64, {8, 28, 28}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 0, 0},
         {"depthwise", "depthwise", "depthwise"}},
        {{2, 128, 1, 16, 1, {28, 28}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"depthwise", "depthwise", "onednn:blocked"}},
        /* crossover layers: mid_3x3_c64 (Winograd), small_3x3x3_c8 (gemm for the filters) */
        {{2, 8, 64, 64, 1, {14, 14}, {3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 0, 0},
         {"winograd", "winograd", "winograd"}},
        {{3, 2, 8, 8, 1, {8, 14, 14}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 0, 0},
         {"onednn:blocked", "onednn:blocked", "gemm"}},
    };
    char describe[128];
    convoy__cpu_onednn_describe(describe, sizeof describe, 2);
    const int avx512 = !onednn_off && strstr(describe, "avx512") != NULL;
    for (size_t i = 0; i < sizeof suite / sizeof suite[0]; ++i) {
        convoy__conv_geom g;
        assert_true(geom_case_geom(&suite[i].shape, &g));
        for (int d = 0; d < 3; ++d) {
            const char *want = suite[i].expected[d];
            if (onednn_off)
                want = convoy__geom_is_pointwise(&g) ? "1x1" : "gemm";
            else if (!avx512 && (!strcmp(want, "winograd") || !strcmp(want, "depthwise")))
                want = "onednn:blocked";
            const char *got = heuristic_choice(&g, (convoy_conv_direction)d);
            if (strcmp(got, want)) {
                char text[512];
                geom_describe(&g, text, sizeof text);
                print_message("heuristic picks %s for %s on %s, expected %s\n", got,
                              case_direction_names[d], text, want);
                ++failures;
            }
        }
    }
    assert_int_equal(failures, 0);
}

static int make_host(void **state)
{
    (void)state;
    convoy__host_config config = {2, NULL};
    if (convoy__host_backend_create(&config, &host) != CONVOY_OK)
        return -1;
    const geom_case plain = {2, 1, 1, 1, 1, {3, 3}, {2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 0};
    convoy__conv_geom g;
    assert_true(geom_case_geom(&plain, &g));
    onednn_off = convoy__cpu_algo_onednn.refusal(host, &g, CONVOY_CONV_FORWARD);
    return 0;
}

static int destroy_host(void **state)
{
    (void)state;
    host->ops->destroy(host);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_2d),       cmocka_unit_test(test_grid_3d),
        cmocka_unit_test(test_options),       cmocka_unit_test(test_empty),
        cmocka_unit_test(test_bad_arguments), cmocka_unit_test(test_onednn_coverage),
        cmocka_unit_test(test_winograd),      cmocka_unit_test(test_heuristic_choices),
    };
    return cmocka_run_group_tests(tests, make_host, destroy_host);
}
