/* The CPU convolution kernels on their own: im2col against its element-wise definition,
 * col2im against the gather form and as im2col's adjoint, and the direct, GEMM, 1x1 and oneDNN
 * paths in all three directions against a double-precision reference written here from the
 * CONV_SEMANTICS.md formulas (padded input, explicitly flipped filters, scatter for dx). The
 * oneDNN path runs through its algorithm descriptor on a host backend (candidates, prepare, run
 * on a NaN-filled workspace, release) wherever it accepts the convolution. */
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

enum { VALID = -1, HALF = -2, FULL = -3, EXPLICIT = 0 };

/* One convolution as a test names it: Aesara-style shapes plus options. Spatial arrays hold
 * nd entries; border is VALID, HALF, FULL or EXPLICIT (then pad_before / pad_after). */
typedef struct conv_case {
    int nd;
    int64_t input[5];   /* N, C, spatial... */
    int64_t filters[5]; /* M, C/g, k... */
    int64_t stride[3], dilation[3];
    int border;
    int64_t pad_before[3], pad_after[3];
    int64_t groups;
    int flip, unshared;
} conv_case;

static const char *const direction_names[] = {"forward", "backward_data", "backward_filter"};

/* ---- geometry and data -------------------------------------------------- */

/* Normalises a case to three spatial axes (a leading neutral axis for 2D). Returns 0 when the
 * forward output would have an extent < 1, so the caller skips the combination. */
static int make_geom(const conv_case *cc, convoy__conv_geom *g)
{
    memset(g, 0, sizeof *g);
    g->spatial_dims = cc->nd;
    g->batch = cc->input[0];
    g->in_channels = cc->input[1];
    g->out_channels = cc->filters[0];
    g->groups = cc->groups;
    g->flip = cc->flip;
    g->unshared = cc->unshared;
    int lead = 3 - cc->nd;
    for (int a = 0; a < 3; ++a) {
        g->in[a] = g->kernel[a] = g->stride[a] = g->dilation[a] = g->out[a] = 1;
        if (a < lead)
            continue;
        int j = a - lead;
        g->in[a] = cc->input[2 + j];
        g->kernel[a] = cc->filters[2 + j];
        g->stride[a] = cc->stride[j];
        g->dilation[a] = cc->dilation[j];
        int64_t dk = (g->kernel[a] - 1) * g->dilation[a] + 1;
        if (cc->border == VALID) {
            g->pad_before[a] = g->pad_after[a] = 0;
        } else if (cc->border == FULL) {
            g->pad_before[a] = g->pad_after[a] = dk - 1;
        } else if (cc->border == HALF) {
            g->pad_before[a] = g->pad_after[a] = dk / 2;
        } else {
            g->pad_before[a] = cc->pad_before[j];
            g->pad_after[a] = cc->pad_after[j];
        }
        int64_t span = g->in[a] + g->pad_before[a] + g->pad_after[a] - dk;
        if (span < 0)
            return 0;
        g->out[a] = span / g->stride[a] + 1;
    }
    return 1;
}

static void describe(const convoy__conv_geom *g, char *text, size_t size)
{
    snprintf(text, size,
             "N%lld C%lld M%lld g%lld in %lldx%lldx%lld k %lldx%lldx%lld s %lld,%lld,%lld "
             "d %lld,%lld,%lld pad (%lld,%lld,%lld)/(%lld,%lld,%lld) flip %d unshared %d",
             (long long)g->batch, (long long)g->in_channels, (long long)g->out_channels,
             (long long)g->groups, (long long)g->in[0], (long long)g->in[1], (long long)g->in[2],
             (long long)g->kernel[0], (long long)g->kernel[1], (long long)g->kernel[2],
             (long long)g->stride[0], (long long)g->stride[1], (long long)g->stride[2],
             (long long)g->dilation[0], (long long)g->dilation[1], (long long)g->dilation[2],
             (long long)g->pad_before[0], (long long)g->pad_before[1], (long long)g->pad_before[2],
             (long long)g->pad_after[0], (long long)g->pad_after[1], (long long)g->pad_after[2],
             g->flip, g->unshared);
}

static uint64_t rng_state;

/* Uniform in [-1, 1] and never exactly 0, so a missed term always shows. */
static float random_value(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    float v = (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    return v == 0.0f ? 0.5f : v;
}

static float *random_floats(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; ++i)
        p[i] = random_value();
    return p;
}

/* Written operands start as NaN: a path that accumulates into them or skips an element shows. */
static float *nan_floats(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; ++i)
        p[i] = NAN;
    return p;
}

/* ---- the double-precision reference ------------------------------------- */

/* Offsets in the reference's own arrays: padded input (N, C, P0, P1, P2) with P = in + pl + pr,
 * and filters (M, [o,] C/g, k...) with the tap index last. */
typedef struct ref_layout {
    int64_t padded[3], padded_volume, out_volume, kvol, group_in, group_out;
} ref_layout;

static ref_layout layout_of(const convoy__conv_geom *g)
{
    ref_layout r;
    r.padded_volume = 1;
    for (int a = 0; a < 3; ++a) {
        r.padded[a] = g->in[a] + g->pad_before[a] + g->pad_after[a];
        r.padded_volume *= r.padded[a];
    }
    r.out_volume = g->out[0] * g->out[1] * g->out[2];
    r.kvol = g->kernel[0] * g->kernel[1] * g->kernel[2];
    r.group_in = g->groups ? g->in_channels / g->groups : 0;
    r.group_out = g->groups ? g->out_channels / g->groups : 0;
    return r;
}

/* Index of tap t reversed on every spatial axis. */
static int64_t reversed_tap(const convoy__conv_geom *g, int64_t t)
{
    int64_t t2 = t % g->kernel[2], t1 = t / g->kernel[2] % g->kernel[1];
    int64_t t0 = t / g->kernel[2] / g->kernel[1];
    return ((g->kernel[0] - 1 - t0) * g->kernel[1] + (g->kernel[1] - 1 - t1)) * g->kernel[2] +
           (g->kernel[2] - 1 - t2);
}

/* Padded-input offset read by output position o through (unflipped) tap t: o*s + t*d. */
static int64_t padded_offset(const convoy__conv_geom *g, const ref_layout *r, int64_t o, int64_t t)
{
    int64_t oc[3] = {o / (g->out[1] * g->out[2]), o / g->out[2] % g->out[1], o % g->out[2]};
    int64_t tc[3] = {t / (g->kernel[1] * g->kernel[2]), t / g->kernel[2] % g->kernel[1],
                     t % g->kernel[2]};
    int64_t off = 0;
    for (int a = 0; a < 3; ++a)
        off = off * r->padded[a] + oc[a] * g->stride[a] + tc[a] * g->dilation[a];
    return off;
}

/* Filter offset of (m, o, ci, t); o only matters for unshared filters. */
static int64_t filter_offset(const convoy__conv_geom *g, const ref_layout *r, int64_t m, int64_t o,
                             int64_t ci, int64_t t)
{
    int64_t block = g->unshared ? m * r->out_volume + o : m;
    return (block * r->group_in + ci) * r->kvol + t;
}

/* Computes the written operand of `direction` in double from the other two (x, w, dy). */
static double *reference(const convoy__conv_geom *g, convoy_conv_direction direction,
                         const float *x, const float *w, const float *dy)
{
    ref_layout r = layout_of(g);
    int64_t in_volume = g->in[0] * g->in[1] * g->in[2];
    int64_t n_x = g->batch * g->in_channels, n_w = convoy__geom_filter_numel(g);
    double *xp = calloc((size_t)(n_x * r.padded_volume + 1), sizeof(double));
    double *wf = calloc((size_t)(n_w + 1), sizeof(double)); /* w' of CONV_SEMANTICS.md 3 */
    double *result =
        calloc((size_t)(convoy__geom_output_numel(g) + convoy__geom_input_numel(g) + n_w + 1),
               sizeof(double));
    assert_true(xp && wf && result);
    if (direction != CONVOY_CONV_BACKWARD_DATA) {
        for (int64_t nc = 0; nc < n_x; ++nc)
            for (int64_t p = 0; p < in_volume; ++p) {
                int64_t p0 = p / (g->in[1] * g->in[2]), p1 = p / g->in[2] % g->in[1];
                int64_t p2 = p % g->in[2];
                int64_t q =
                    ((p0 + g->pad_before[0]) * r.padded[1] + p1 + g->pad_before[1]) * r.padded[2] +
                    p2 + g->pad_before[2];
                xp[nc * r.padded_volume + q] = x[nc * in_volume + p];
            }
    }
    if (direction != CONVOY_CONV_BACKWARD_FILTER)
        for (int64_t i = 0; i < n_w; ++i)
            wf[i] = w[g->flip ? i - i % r.kvol + reversed_tap(g, i % r.kvol) : i];
    double *dxp = direction == CONVOY_CONV_BACKWARD_DATA ? xp : NULL;
    double *dwf = direction == CONVOY_CONV_BACKWARD_FILTER ? wf : NULL;
    for (int64_t n = 0; n < g->batch; ++n)
        for (int64_t m = 0; m < g->out_channels; ++m) {
            int64_t grp = m / r.group_out;
            for (int64_t o = 0; o < r.out_volume; ++o) {
                int64_t yi = (n * g->out_channels + m) * r.out_volume + o;
                double acc = 0.0;
                for (int64_t ci = 0; ci < r.group_in; ++ci) {
                    int64_t plane = (n * g->in_channels + grp * r.group_in + ci) * r.padded_volume;
                    for (int64_t t = 0; t < r.kvol; ++t) {
                        int64_t xi = plane + padded_offset(g, &r, o, t);
                        int64_t wi = filter_offset(g, &r, m, o, ci, t);
                        if (direction == CONVOY_CONV_FORWARD)
                            acc += xp[xi] * wf[wi];
                        else if (dxp)
                            dxp[xi] += (double)dy[yi] * wf[wi];
                        else
                            dwf[wi] += (double)dy[yi] * xp[xi];
                    }
                }
                if (direction == CONVOY_CONV_FORWARD)
                    result[yi] = acc;
            }
        }
    if (dxp) /* crop the padding away */
        for (int64_t nc = 0; nc < n_x; ++nc)
            for (int64_t p = 0; p < in_volume; ++p) {
                int64_t p0 = p / (g->in[1] * g->in[2]), p1 = p / g->in[2] % g->in[1];
                int64_t p2 = p % g->in[2];
                int64_t q =
                    ((p0 + g->pad_before[0]) * r.padded[1] + p1 + g->pad_before[1]) * r.padded[2] +
                    p2 + g->pad_before[2];
                result[nc * in_volume + p] = dxp[nc * r.padded_volume + q];
            }
    if (dwf) /* the gradient of w' flipped back to w's order */
        for (int64_t i = 0; i < n_w; ++i)
            result[i] = dwf[g->flip ? i - i % r.kvol + reversed_tap(g, i % r.kvol) : i];
    free(xp);
    free(wf);
    return result;
}

/* ---- comparison ---------------------------------------------------------- */

static int failures;
static int cases_run; /* combinations not skipped for an empty output */

/* |got - ref| <= 1e-5 * (rms(ref) + |ref|) + 1e-6, printing the first mismatches. */
static void compare(const char *what, const convoy__conv_geom *g, const float *got,
                    const double *ref, int64_t n)
{
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i)
        sq += ref[i] * ref[i];
    double rms = n > 0 ? sqrt(sq / (double)n) : 0.0;
    int shown = 0;
    for (int64_t i = 0; i < n; ++i) {
        double err = fabs((double)got[i] - ref[i]);
        if (err <= 1e-5 * (rms + fabs(ref[i])) + 1e-6)
            continue; /* a NaN fails this test and lands below */
        if (shown == 0) {
            char text[512];
            describe(g, text, sizeof text);
            print_message("MISMATCH %s on %s\n", what, text);
        }
        if (shown < 5)
            print_message("  [%lld] got %.9g want %.9g\n", (long long)i, (double)got[i], ref[i]);
        ++shown;
    }
    if (shown) {
        print_message("  %d of %lld elements differ\n", shown, (long long)n);
        ++failures;
    }
}

/* ---- one case, every implementation -------------------------------------- */

static convoy__backend *host;  /* for the oneDNN descriptor: its threads per task */
static int onednn_runs;        /* convolutions the oneDNN descriptor ran */
static int onednn_refusals;    /* and those it refused */
static const char *onednn_off; /* its refusal of a plain convolution: non-NULL without oneDNN */

/* The onednn algorithm through its descriptor, as the planner and the host backend drive it. */
static convoy_status run_onednn(const convoy__conv_geom *g, convoy_conv_direction dir,
                                const convoy__conv_buffers *b)
{
    const convoy__conv_algo *algo = &convoy__cpu_algo_onednn;
    convoy__candidate_list list = {.count = 0};
    algo->candidates(host, algo, g, dir, &list);
    if (list.count != 1)
        return CONVOY_ERR_UNSUPPORTED;
    assert_int_equal(list.items[0].workspace_per_image, 0);
    convoy__conv_plan plan = {.geom = *g,
                              .direction = dir,
                              .candidate = list.items[0],
                              .workspace_bytes = list.items[0].workspace_fixed};
    convoy_status st = algo->prepare(host, &plan);
    if (st != CONVOY_OK)
        return st;
    float *ws =
        plan.workspace_bytes ? nan_floats((int64_t)(plan.workspace_bytes / sizeof(float))) : NULL;
    st = algo->run(host, NULL, &plan, b, ws);
    algo->release(host, &plan);
    assert_null(plan.algo_data);
    free(ws);
    ++onednn_runs;
    return st;
}

static void check_one(const convoy__conv_geom *g, convoy_conv_direction dir, const char *impl,
                      int64_t chunk, const float *x, const float *w, const float *dy,
                      const double *ref)
{
    int64_t n_in = convoy__geom_input_numel(g), n_w = convoy__geom_filter_numel(g);
    int64_t n_out = convoy__geom_output_numel(g);
    float *bx = dir == CONVOY_CONV_BACKWARD_DATA ? nan_floats(n_in) : (float *)x;
    float *bw = dir == CONVOY_CONV_BACKWARD_FILTER ? nan_floats(n_w) : (float *)w;
    float *by = dir == CONVOY_CONV_FORWARD ? nan_floats(n_out) : (float *)dy;
    convoy__conv_buffers b = {bx, bw, by};
    convoy_status st = CONVOY_OK;
    if (strcmp(impl, "direct") == 0) {
        convoy__cpu_conv_direct(g, dir, &b);
    } else if (strcmp(impl, "1x1") == 0) {
        st = convoy__gemm_conv_1x1(&convoy__cpu_gemm_ops, g, dir, &b);
    } else if (strcmp(impl, "onednn") == 0) {
        st = run_onednn(g, dir, &b);
    } else {
        size_t bytes = convoy__gemm_workspace_fixed(g, dir) +
                       convoy__gemm_workspace_per_image(g, dir) * (size_t)chunk;
        float *ws = nan_floats((int64_t)(bytes / sizeof(float)));
        st = convoy__gemm_conv(&convoy__cpu_gemm_ops, g, dir, &b, chunk, ws, bytes);
        free(ws);
    }
    char what[96];
    snprintf(what, sizeof what, "%s %s chunk %lld", impl, direction_names[dir], (long long)chunk);
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
static void check_im2col(const convoy__conv_geom *g, const float *x)
{
    int64_t rows = g->in_channels * convoy__geom_kernel_spatial(g);
    int64_t cols = convoy__geom_out_spatial(g), ld = cols + 3;
    int64_t in_volume = convoy__geom_in_spatial(g), in_numel = g->in_channels * in_volume;
    float *col = nan_floats(rows * ld);
    float *c = random_floats(rows * ld);
    float *image = nan_floats(in_numel);
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
        describe(g, text, sizeof text);
        print_message("MISMATCH im2col/col2im on %s\n", text);
        ++failures;
    }
    free(col);
    free(c);
    free(image);
}

/* Runs every implementation that applies, in every direction, against the reference. */
static void run_case(const conv_case *cc)
{
    convoy__conv_geom g;
    if (!make_geom(cc, &g))
        return;
    ++cases_run;
    rng_state = 0x9e3779b97f4a7c15ull ^ (uint64_t)(g.in[2] * 131 + g.out[1] * 17 + g.kernel[2]);
    float *x = random_floats(convoy__geom_input_numel(&g));
    float *w = random_floats(convoy__geom_filter_numel(&g));
    float *dy = random_floats(convoy__geom_output_numel(&g));
    if (g.batch > 0 && g.in_channels > 0)
        check_im2col(&g, x);
    int64_t chunks[4] = {1, 2, 3, g.batch};
    for (int d = 0; d < 3; ++d) {
        convoy_conv_direction dir = (convoy_conv_direction)d;
        double *ref = reference(&g, dir, x, w, dy);
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
        if (!convoy__cpu_algo_onednn.refusal(host, &g, dir))
            check_one(&g, dir, "onednn", 0, x, w, dy, ref);
        else
            ++onednn_refusals;
        free(ref);
    }
    free(x);
    free(w);
    free(dy);
}

/* ---- the grids ------------------------------------------------------------ */

static void test_grid_2d(void **state)
{
    (void)state;
    int before = cases_run;
    static const int64_t shapes[][2][4] = {
        {{8, 1, 6, 6}, {5, 1, 2, 2}},   {{8, 1, 8, 8}, {4, 1, 3, 3}}, {{2, 1, 7, 7}, {2, 1, 3, 3}},
        {{6, 1, 10, 11}, {1, 1, 2, 3}}, {{2, 1, 6, 5}, {4, 1, 1, 3}}, {{1, 5, 9, 9}, {4, 5, 3, 2}},
    };
    static const int64_t strides[][2] = {{1, 1}, {2, 2}, {2, 4}};
    static const int64_t dilations[][2] = {{1, 1}, {1, 2}, {2, 1}};
    static const int64_t pads[][2] = {{0, 0}, {1, 1}, {5, 5}, {5, 2}};
    for (size_t s = 0; s < 6; ++s)
        for (size_t st = 0; st < 3; ++st)
            for (size_t dl = 0; dl < 3; ++dl)
                for (int border = -3; border < 4; ++border)
                    for (int flip = 1; flip >= 0; --flip) {
                        conv_case cc = {.nd = 2, .groups = 1, .flip = flip};
                        memcpy(cc.input, shapes[s][0], sizeof shapes[s][0]);
                        memcpy(cc.filters, shapes[s][1], sizeof shapes[s][1]);
                        memcpy(cc.stride, strides[st], sizeof strides[st]);
                        memcpy(cc.dilation, dilations[dl], sizeof dilations[dl]);
                        cc.border = border < 0 ? border : EXPLICIT;
                        if (border >= 0) {
                            memcpy(cc.pad_before, pads[border], sizeof pads[border]);
                            memcpy(cc.pad_after, pads[border], sizeof pads[border]);
                        }
                        run_case(&cc);
                    }
    assert_int_equal(cases_run - before, 6 * 3 * 3 * 7 * 2);
    assert_int_equal(failures, 0);
}

static void test_grid_3d(void **state)
{
    (void)state;
    int before = cases_run;
    static const int64_t shapes[][2][5] = {
        {{2, 1, 5, 5, 5}, {2, 1, 2, 2, 2}},
        {{1, 2, 7, 5, 6}, {1, 2, 2, 1, 3}},
    };
    static const int64_t strides[][3] = {{1, 1, 1}, {2, 2, 2}, {1, 2, 3}};
    static const int64_t dilations[][3] = {{1, 1, 1}, {1, 2, 1}, {2, 1, 2}};
    static const int64_t pads[][3] = {{0, 0, 0}, {2, 2, 3}};
    for (size_t s = 0; s < 2; ++s)
        for (size_t st = 0; st < 3; ++st)
            for (size_t dl = 0; dl < 3; ++dl)
                for (int border = -3; border < 2; ++border)
                    for (int flip = 1; flip >= 0; --flip) {
                        conv_case cc = {.nd = 3, .groups = 1, .flip = flip};
                        memcpy(cc.input, shapes[s][0], sizeof shapes[s][0]);
                        memcpy(cc.filters, shapes[s][1], sizeof shapes[s][1]);
                        memcpy(cc.stride, strides[st], sizeof strides[st]);
                        memcpy(cc.dilation, dilations[dl], sizeof dilations[dl]);
                        cc.border = border < 0 ? border : EXPLICIT;
                        if (border >= 0) {
                            memcpy(cc.pad_before, pads[border], sizeof pads[border]);
                            memcpy(cc.pad_after, pads[border], sizeof pads[border]);
                        }
                        run_case(&cc);
                    }
    assert_int_equal(cases_run - before, 2 * 3 * 3 * 5 * 2);
    assert_int_equal(failures, 0);
}

/* Cases that each exercise one option; see the comment on each line. */
static const conv_case option_cases[] = {
    /* groups = 2, 2D and 3D, with stride, dilation and borders */
    {2, {2, 4, 7, 6}, {6, 2, 3, 2}, {1, 2}, {2, 1}, HALF, {0}, {0}, 2, 1, 0},
    {2, {3, 6, 8, 7}, {4, 3, 2, 3}, {2, 1}, {1, 1}, FULL, {0}, {0}, 2, 0, 0},
    {3, {2, 4, 5, 4, 6}, {4, 2, 2, 3, 2}, {1, 2, 1}, {1, 1, 2}, HALF, {0}, {0}, 2, 1, 0},
    /* depthwise: groups = C, with and without a channel multiplier */
    {2, {2, 3, 8, 8}, {6, 1, 3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 3, 1, 0},
    {2, {3, 4, 9, 9}, {4, 1, 3, 3}, {2, 2}, {1, 1}, EXPLICIT, {1, 1}, {1, 1}, 4, 1, 0},
    {3, {2, 3, 4, 5, 6}, {3, 1, 2, 2, 2}, {1, 1, 2}, {1, 2, 1}, FULL, {0}, {0}, 3, 0, 0},
    /* unshared 2D: Aesara's TestUnsharedConv shape (groups, stride, full), and more */
    {2, {3, 4, 4, 4}, {4, 2, 4, 2}, {3, 2}, {1, 1}, FULL, {0}, {0}, 2, 1, 1},
    {2, {2, 3, 6, 5}, {2, 3, 3, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 1},
    {2, {2, 2, 7, 7}, {4, 1, 3, 3}, {2, 1}, {1, 2}, HALF, {0}, {0}, 2, 0, 1},
    {2, {1, 2, 5, 6}, {3, 2, 2, 2}, {1, 2}, {1, 1}, EXPLICIT, {1, 2}, {2, 0}, 1, 1, 1},
    /* asymmetric padding, 2D and 3D */
    {2, {2, 3, 7, 8}, {2, 3, 3, 2}, {1, 1}, {1, 1}, EXPLICIT, {1, 2}, {2, 1}, 1, 1, 0},
    {2, {2, 2, 6, 9}, {3, 2, 2, 3}, {2, 3}, {2, 1}, EXPLICIT, {2, 0}, {1, 0}, 1, 1, 0},
    {3,
     {2, 2, 5, 6, 4},
     {2, 2, 2, 3, 2},
     {1, 2, 1},
     {1, 1, 2},
     EXPLICIT,
     {1, 0, 2},
     {0, 2, 1},
     1,
     1,
     0},
    /* wide images (one image per GEMM, straight into the output), 2D and 3D */
    {2, {3, 3, 34, 34}, {4, 3, 3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 1, 0},
    {3, {3, 2, 8, 8, 9}, {3, 2, 3, 2, 3}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 1, 1, 0},
    /* a 1.8 MB column matrix per image: the GEMM path trims a chunk of 3 to 2 + 1 */
    {2, {3, 128, 20, 20}, {2, 64, 3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 2, 1, 0},
    /* pointwise: the 1x1 path (and gemm, direct) with groups and in 3D */
    {2, {3, 6, 5, 7}, {4, 6, 1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
    {2, {2, 6, 4, 4}, {4, 3, 1, 1}, {1, 1}, {2, 3}, VALID, {0}, {0}, 2, 0, 0},
    {2, {2, 4, 5, 5}, {4, 1, 1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 4, 1, 0},
    {3, {2, 4, 3, 4, 5}, {6, 4, 1, 1, 1}, {1, 1, 1}, {1, 1, 1}, VALID, {0}, {0}, 1, 1, 0},
    /* 1x1 kernels that are not pointwise: stride and padding */
    {2, {2, 3, 7, 7}, {2, 3, 1, 1}, {2, 2}, {1, 1}, EXPLICIT, {1, 0}, {0, 1}, 1, 1, 0},
};

static void test_options(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof option_cases / sizeof option_cases[0]; ++i) {
        conv_case cc = option_cases[i];
        run_case(&cc);
        cc.flip = !cc.flip;
        run_case(&cc);
    }
    assert_int_equal(failures, 0);
}

/* Empty batch, channels or filters: the written operand is zero-filled (or empty). */
static void test_empty(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {2, {0, 1, 6, 6}, {1, 1, 2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {2, {1, 0, 6, 6}, {1, 0, 2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {2, {1, 1, 6, 6}, {0, 1, 2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {3, {0, 1, 4, 5, 6}, {1, 1, 2, 2, 2}, {1, 1, 1}, {1, 1, 1}, HALF, {0}, {0}, 1, 1, 0},
        {3, {1, 0, 4, 5, 6}, {1, 0, 2, 2, 2}, {1, 1, 1}, {1, 1, 1}, FULL, {0}, {0}, 1, 1, 0},
        {3, {1, 1, 4, 5, 6}, {0, 1, 2, 2, 2}, {2, 1, 1}, {1, 1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {2, {0, 3, 4, 4}, {2, 3, 1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {2, {2, 0, 4, 4}, {2, 0, 1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {2, {2, 3, 4, 4}, {0, 3, 1, 1}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0},
        {2, {0, 2, 5, 5}, {2, 2, 3, 3}, {1, 1}, {1, 1}, FULL, {0}, {0}, 1, 1, 1},
        {2, {2, 2, 5, 5}, {0, 2, 3, 3}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        run_case(&cases[i]);
    assert_int_equal(failures, 0);
}

/* The GEMM and 1x1 paths on the host primitives refuse what they cannot run instead of
 * crashing, and the CPU's chunk hint keeps a chunk's column matrix cache-sized. */
static void test_bad_arguments(void **state)
{
    (void)state;
    conv_case cc = {2, {2, 2, 5, 5}, {2, 2, 3, 3}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 0};
    convoy__conv_geom g;
    assert_true(make_geom(&cc, &g));
    float *x = random_floats(convoy__geom_input_numel(&g));
    float *w = random_floats(convoy__geom_filter_numel(&g));
    float *y = nan_floats(convoy__geom_output_numel(&g));
    float ws[1];
    convoy__conv_buffers b = {x, w, y};
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
    assert_int_equal(onednn_runs + onednn_refusals, 3 * cases_run);
    if (onednn_off) {
        assert_string_equal(onednn_off, "convoy was built without oneDNN");
        assert_int_equal(onednn_runs, 0);
    } else {
        assert_true(onednn_refusals < onednn_runs / 10);
    }
    convoy__conv_geom g;
    if (!onednn_off) {
        /* Deterministic, as its candidate says: a filter gradient reduced over a batch by two
         * threads (42 M multiply-adds) comes out bit for bit the same twice. */
        const conv_case big = {
            2, {8, 32, 24, 24}, {32, 32, 3, 3}, {1, 1}, {1, 1}, HALF, {0}, {0}, 1, 1, 0};
        assert_true(make_geom(&big, &g));
        float *x = random_floats(convoy__geom_input_numel(&g));
        float *dy = random_floats(convoy__geom_output_numel(&g));
        float *dw[2];
        for (int i = 0; i < 2; ++i) {
            dw[i] = nan_floats(convoy__geom_filter_numel(&g));
            convoy__conv_buffers b = {x, dw[i], dy};
            assert_int_equal(run_onednn(&g, CONVOY_CONV_BACKWARD_FILTER, &b), CONVOY_OK);
        }
        assert_memory_equal(dw[0], dw[1], (size_t)convoy__geom_filter_numel(&g) * sizeof(float));
        free(x);
        free(dy);
        free(dw[0]);
        free(dw[1]);
    }
    const conv_case unshared = {
        2, {2, 2, 5, 5}, {2, 2, 3, 3}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1, 1};
    assert_true(make_geom(&unshared, &g));
    assert_non_null(strstr(convoy__cpu_algo_onednn.refusal(host, &g, CONVOY_CONV_FORWARD),
                           onednn_off ? "oneDNN" : "unshared"));
}

static int make_host(void **state)
{
    (void)state;
    convoy__host_config config = {2, NULL};
    if (convoy__host_backend_create(&config, &host) != CONVOY_OK)
        return -1;
    const conv_case plain = {2, {1, 1, 3, 3}, {1, 1, 2, 2}, {1, 1}, {1, 1}, VALID, {0}, {0}, 1, 1,
                             0};
    convoy__conv_geom g;
    make_geom(&plain, &g);
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
    };
    return cmocka_run_group_tests(tests, make_host, destroy_host);
}
