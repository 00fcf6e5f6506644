/* Correctness of the three convolution directions against the double-precision
 * reference on the shape grids of Aesara's tests (2D and 3D, every border,
 * stride and dilation), groups, unshared filters, asymmetric pads, flip off,
 * empty tensors, conv2d_transpose output sizes and the shape formula. Runs on
 * whichever backend CONVOY_DEVICE selects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

typedef struct border_spec {
    convoy_border border;
    int64_t pad[3]; /* EXPLICIT: symmetric pad per axis */
} border_spec;

static const int64_t pairs2d[6][2][4] = {
    {{8, 1, 6, 6}, {5, 1, 2, 2}},   {{8, 1, 8, 8}, {4, 1, 3, 3}}, {{2, 1, 7, 7}, {2, 1, 3, 3}},
    {{6, 1, 10, 11}, {1, 1, 2, 3}}, {{2, 1, 6, 5}, {4, 1, 1, 3}}, {{1, 5, 9, 9}, {4, 5, 3, 2}},
};
static const int64_t strides2d[3][3] = {{1, 1}, {2, 2}, {2, 4}};
static const int64_t dilations2d[3][3] = {{1, 1}, {1, 2}, {2, 1}};
static const border_spec borders2d[7] = {
    {CONVOY_BORDER_VALID, {0}},       {CONVOY_BORDER_HALF, {0}},
    {CONVOY_BORDER_FULL, {0}},        {CONVOY_BORDER_EXPLICIT, {0, 0}},
    {CONVOY_BORDER_EXPLICIT, {1, 1}}, {CONVOY_BORDER_EXPLICIT, {5, 5}},
    {CONVOY_BORDER_EXPLICIT, {5, 2}},
};

static const int64_t pairs3d[2][2][5] = {
    {{2, 1, 5, 5, 5}, {2, 1, 2, 2, 2}},
    {{1, 2, 7, 5, 6}, {1, 2, 2, 1, 3}},
};
static const int64_t strides3d[3][3] = {{1, 1, 1}, {2, 2, 2}, {1, 2, 3}};
static const int64_t dilations3d[3][3] = {{1, 1, 1}, {1, 2, 1}, {2, 1, 2}};
static const border_spec borders3d[5] = {
    {CONVOY_BORDER_VALID, {0}},          {CONVOY_BORDER_HALF, {0}},
    {CONVOY_BORDER_FULL, {0}},           {CONVOY_BORDER_EXPLICIT, {0, 0, 0}},
    {CONVOY_BORDER_EXPLICIT, {2, 2, 3}},
};

/* ---- grids ----------------------------------------------------------------- */

typedef struct grid {
    int nd;
    const int64_t *pairs; /* npairs x 2 x (nd + 2) */
    int npairs;
    const int64_t (*strides)[3];
    int nstrides;
    const int64_t (*dilations)[3];
    int ndilations;
    const border_spec *borders;
    int nborders;
} grid;

static const grid grid2d = {2, &pairs2d[0][0][0], 6, strides2d, 3, dilations2d, 3, borders2d, 7};
static const grid grid3d = {3, &pairs3d[0][0][0], 2, strides3d, 3, dilations3d, 3, borders3d, 5};

/* Runs every combination of the grid in one direction (flip on and off);
 * fails the test if any case fails. */
static void run_grid(convoy_runtime *rt, const grid *gr, convoy_conv_direction dir)
{
    const int rank = gr->nd + 2;
    int cases = 0, skipped = 0, failures = 0;
    for (int pi = 0; pi < gr->npairs; ++pi) {
        const int64_t *in = gr->pairs + (size_t)pi * 2 * (size_t)rank, *filt = in + rank;
        for (int si = 0; si < gr->nstrides; ++si) {
            for (int di = 0; di < gr->ndilations; ++di) {
                for (int bi = 0; bi < gr->nborders; ++bi) {
                    for (int flip = 1; flip >= 0; --flip) {
                        convoy_conv_params p = case_params(gr->nd, gr->borders[bi].border,
                                                           gr->strides[si], gr->dilations[di]);
                        if (p.border == CONVOY_BORDER_EXPLICIT)
                            case_set_pads(&p, gr->borders[bi].pad, NULL);
                        p.flip = flip;
                        conv_case c;
                        const int valid = case_init(&c, &p, in, filt);
                        if (dir == CONVOY_CONV_FORWARD)
                            failures += !case_check_output_dims(&c, valid);
                        if (!valid) {
                            ++skipped;
                            continue;
                        }
                        ++cases;
                        const uint64_t seed = (uint64_t)(((pi * 8 + si) * 8 + di) * 8 + bi) * 2;
                        failures += !case_check(rt, &c, dir, seed + (uint64_t)flip);
                    }
                }
            }
        }
    }
    printf("%dD grid %s: %d cases, %d skipped (output extent < 1), %d failures\n", gr->nd,
           case_direction_names[dir], cases, skipped, failures);
    assert_int_equal(failures, 0);
}

static void test_grid2d_forward(void **state)
{
    run_grid(*state, &grid2d, CONVOY_CONV_FORWARD);
}

static void test_grid2d_backward_data(void **state)
{
    run_grid(*state, &grid2d, CONVOY_CONV_BACKWARD_DATA);
}

static void test_grid2d_backward_filter(void **state)
{
    run_grid(*state, &grid2d, CONVOY_CONV_BACKWARD_FILTER);
}

static void test_grid3d_forward(void **state)
{
    run_grid(*state, &grid3d, CONVOY_CONV_FORWARD);
}

static void test_grid3d_backward_data(void **state)
{
    run_grid(*state, &grid3d, CONVOY_CONV_BACKWARD_DATA);
}

static void test_grid3d_backward_filter(void **state)
{
    run_grid(*state, &grid3d, CONVOY_CONV_BACKWARD_FILTER);
}

/* ---- hand-picked cases ------------------------------------------------------ */

/* Every case in both flip settings and all three directions. */
static void run_listed(convoy_runtime *rt, const listed_case *list, int count, uint64_t seed)
{
    int failures = 0;
    for (int i = 0; i < count; ++i) {
        const listed_case *l = &list[i];
        for (int flip = 0; flip <= 1; ++flip) {
            convoy_conv_params p = case_listed_params(l);
            p.flip = flip;
            conv_case c;
            if (!case_init(&c, &p, l->in, l->filt)) {
                printf("  BAD TEST CASE %s\n", c.label);
                ++failures;
                continue;
            }
            failures += !case_check_output_dims(&c, 1);
            failures += case_check_all(rt, &c, seed + (uint64_t)(i * 8 + flip * 4));
        }
    }
    printf("%d listed cases, %d failures\n", count, failures);
    assert_int_equal(failures, 0);
}

static void test_groups(void **state)
{
    static const listed_case list[] = {
        {2, {2, 4, 6, 5}, {6, 2, 3, 2}, 2, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {2, 4, 6, 5}, {6, 2, 3, 2}, 2, CONVOY_BORDER_FULL, {0}, {0}, {2, 1}, {1, 2}},
        {2, {2, 6, 7, 7}, {3, 2, 3, 3}, 3, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {1, 6, 5, 6}, {9, 2, 2, 3}, 3, CONVOY_BORDER_HALF, {0}, {0}, {2, 1}, {1, 2}},
        {2, {1, 6, 5, 6}, {9, 2, 2, 3}, 3, CONVOY_BORDER_EXPLICIT, {1, 2}, {1, 2}, {1, 2}, {2, 1}},
        /* depthwise: g = C, one and two filters per channel */
        {2, {2, 4, 6, 6}, {4, 1, 3, 3}, 4, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {2, {2, 3, 7, 6}, {6, 1, 3, 2}, 3, CONVOY_BORDER_FULL, {0}, {0}, {2, 2}, {0}},
        {2, {1, 5, 8, 8}, {5, 1, 2, 2}, 5, CONVOY_BORDER_VALID, {0}, {0}, {1, 1}, {2, 3}},
        {3, {1, 4, 4, 5, 3}, {4, 2, 2, 2, 2}, 2, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {3,
         {1, 6, 5, 4, 4},
         {6, 2, 1, 2, 3},
         3,
         CONVOY_BORDER_EXPLICIT,
         {1, 0, 2},
         {1, 0, 2},
         {1, 2, 1},
         {0}},
        {3, {2, 3, 4, 4, 4}, {3, 1, 3, 3, 3}, 3, CONVOY_BORDER_HALF, {0}, {0}, {0}, {0}},
        {3,
         {1, 2, 5, 4, 5},
         {4, 1, 2, 2, 2},
         2,
         CONVOY_BORDER_FULL,
         {0},
         {0},
         {2, 1, 2},
         {1, 2, 1}},
    };
    run_listed(*state, list, (int)(sizeof list / sizeof list[0]), 1000);
}

static void test_asymmetric_pads(void **state)
{
    static const listed_case list[] = {
        {2, {2, 3, 6, 5}, {4, 3, 3, 2}, 1, CONVOY_BORDER_EXPLICIT, {2, 0}, {0, 3}, {0}, {0}},
        {2, {2, 3, 6, 5}, {4, 3, 3, 2}, 1, CONVOY_BORDER_EXPLICIT, {2, 0}, {0, 3}, {2, 1}, {1, 2}},
        {2, {1, 2, 5, 7}, {2, 2, 2, 3}, 1, CONVOY_BORDER_EXPLICIT, {0, 4}, {3, 1}, {3, 2}, {2, 1}},
        {2, {2, 4, 6, 6}, {4, 2, 3, 3}, 2, CONVOY_BORDER_EXPLICIT, {1, 2}, {2, 1}, {1, 2}, {0}},
        {3,
         {1, 2, 5, 4, 6},
         {3, 2, 2, 3, 2},
         1,
         CONVOY_BORDER_EXPLICIT,
         {1, 0, 2},
         {0, 2, 1},
         {0},
         {0}},
        {3,
         {2, 2, 5, 4, 6},
         {2, 1, 2, 2, 2},
         2,
         CONVOY_BORDER_EXPLICIT,
         {2, 1, 0},
         {0, 1, 3},
         {1, 2, 1},
         {2, 1, 1}},
    };
    run_listed(*state, list, (int)(sizeof list / sizeof list[0]), 2000);
}

/* 1x1 filters (the single-GEMM fast path) and 1x1 with stride or padding. */
static void test_pointwise(void **state)
{
    static const listed_case list[] = {
        {2, {2, 3, 5, 4}, {4, 3, 1, 1}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {2, 4, 5, 5}, {6, 2, 1, 1}, 2, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {3, 2, 4, 6}, {3, 2, 1, 1}, 1, CONVOY_BORDER_VALID, {0}, {0}, {2, 3}, {0}},
        {2, {1, 2, 4, 3}, {2, 2, 1, 1}, 1, CONVOY_BORDER_EXPLICIT, {1, 0}, {0, 2}, {0}, {0}},
        {3, {2, 4, 3, 4, 2}, {6, 4, 1, 1, 1}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {3, {1, 6, 2, 3, 4}, {3, 2, 1, 1, 1}, 3, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
    };
    run_listed(*state, list, (int)(sizeof list / sizeof list[0]), 3000);
}

/* A few larger shapes, so the GEMM paths block, split work between BLAS
 * threads and (under a workspace limit) chunk the batch. */
static void test_larger(void **state)
{
    static const listed_case list[] = {
        {2, {4, 16, 20, 20}, {12, 8, 3, 3}, 2, CONVOY_BORDER_HALF, {0}, {0}, {2, 2}, {0}},
        {2, {3, 24, 13, 11}, {32, 24, 3, 2}, 1, CONVOY_BORDER_FULL, {0}, {0}, {1, 1}, {2, 1}},
        {2, {2, 12, 17, 15}, {12, 1, 5, 5}, 12, CONVOY_BORDER_EXPLICIT, {2, 1}, {3, 0}, {0}, {0}},
        {3, {2, 6, 5, 6, 6}, {4, 3, 2, 3, 3}, 2, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
    };
    run_listed(*state, list, (int)(sizeof list / sizeof list[0]), 3500);
}

/* Unshared 2D filters: the regions are the forward output size, taken from
 * the reference for the equivalent shared convolution. */
static void test_unshared(void **state)
{
    typedef struct unshared_case {
        int64_t in[4];
        int64_t m, kh, kw, groups;
        convoy_border border;
        int64_t pad_before[2], pad_after[2], stride[2], dilation[2];
    } unshared_case;
    static const unshared_case list[] = {
        {{3, 4, 4, 4}, 4, 4, 2, 2, CONVOY_BORDER_FULL, {0}, {0}, {3, 2}, {1, 1}},
        {{2, 3, 5, 6}, 2, 2, 3, 1, CONVOY_BORDER_VALID, {0}, {0}, {1, 1}, {1, 1}},
        {{1, 2, 6, 5}, 3, 2, 3, 1, CONVOY_BORDER_HALF, {0}, {0}, {1, 1}, {1, 2}},
        {{2, 2, 5, 4}, 4, 2, 3, 2, CONVOY_BORDER_EXPLICIT, {2, 1}, {0, 3}, {2, 1}, {1, 1}},
        {{2, 6, 5, 5}, 3, 3, 2, 3, CONVOY_BORDER_EXPLICIT, {1, 1}, {1, 1}, {2, 2}, {2, 1}},
    };
    convoy_runtime *rt = *state;
    int failures = 0;
    for (int i = 0; i < (int)(sizeof list / sizeof list[0]); ++i) {
        const unshared_case *u = &list[i];
        for (int flip = 0; flip <= 1; ++flip) {
            convoy_conv_params p = case_params(2, u->border, u->stride, u->dilation);
            if (u->border == CONVOY_BORDER_EXPLICIT)
                case_set_pads(&p, u->pad_before, u->pad_after);
            p.groups = u->groups;
            p.flip = flip;
            const int64_t shared[4] = {u->m, u->in[1] / u->groups, u->kh, u->kw};
            ref_geom g;
            assert_true(ref_conv_geom(&p, u->in, shared, &g));
            const int64_t filt[6] = {u->m, g.out[0], g.out[1], shared[1], u->kh, u->kw};
            p.unshared = 1;
            conv_case c;
            assert_true(case_init(&c, &p, u->in, filt));
            failures += !case_check_output_dims(&c, 1);
            failures += case_check_all(rt, &c, 4000 + (uint64_t)(i * 8 + flip * 4));
            /* Regions one off on either axis do not fit the output. */
            int64_t off[6];
            memcpy(off, filt, sizeof off);
            for (int axis = 1; axis <= 2; ++axis) {
                off[axis] = filt[axis] + 1;
                int64_t out[4];
                if (convoy_conv_output_dims(&p, u->in, off, out) != CONVOY_ERR_SHAPE) {
                    printf("  FAIL %s: regions dim %d = %lld accepted\n", c.label, axis,
                           (long long)off[axis]);
                    ++failures;
                }
                off[axis] = filt[axis];
            }
        }
    }
    assert_int_equal(failures, 0);
}

/* Empty batch, channels or filters, or an input with no elements on an axis
 * that padding still gives outputs: the formula shape, zeros or empty, in
 * every direction, 2D and 3D. */
static void test_empty(void **state)
{
    static const listed_case list[] = {
        {2, {0, 1, 6, 6}, {1, 1, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {1, 0, 6, 6}, {1, 0, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {1, 1, 6, 6}, {0, 1, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {0, 2, 6, 6}, {3, 2, 3, 3}, 1, CONVOY_BORDER_HALF, {0}, {0}, {2, 2}, {0}},
        {2, {2, 0, 6, 6}, {4, 0, 3, 3}, 2, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
        {3, {0, 1, 6, 6, 6}, {1, 1, 2, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {3, {1, 0, 6, 6, 6}, {1, 0, 2, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {3, {1, 1, 6, 6, 6}, {0, 1, 2, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {2, 3, 0, 5}, {2, 3, 3, 3}, 1, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
        {2, {3, 2, 4, 0}, {4, 1, 2, 3}, 2, CONVOY_BORDER_FULL, {0}, {0}, {2, 1}, {1, 2}},
        {2, {2, 3, 0, 0}, {2, 3, 2, 2}, 1, CONVOY_BORDER_EXPLICIT, {1, 2}, {1, 1}, {0}, {0}},
        {3, {2, 2, 3, 0, 4}, {3, 2, 2, 3, 2}, 1, CONVOY_BORDER_FULL, {0}, {0}, {0}, {0}},
    };
    run_listed(*state, list, (int)(sizeof list / sizeof list[0]), 5000);
}

/* ---- conv2d_transpose sizes -------------------------------------------------- */

/* backward_data with a stride: every i = (o-1)*s + dk - pl - pr + a with
 * 0 <= a < s is accepted and matches the reference (the remainder gets 0);
 * a = s and a = -1 on any axis are CONVOY_ERR_SHAPE. */
static int check_transpose(convoy_runtime *rt, const convoy_conv_params *p, const int64_t *filt,
                           const int64_t *grad_out, uint64_t seed)
{
    const int nd = p->spatial_dims, rank = nd + 2;
    int64_t base[5] = {grad_out[0], filt[1] * p->groups, 0, 0, 0};
    for (int a = 0; a < nd; ++a) {
        const int64_t dk = (filt[2 + a] - 1) * p->dilation[a] + 1;
        const int64_t pl = p->border == CONVOY_BORDER_FULL       ? dk - 1
                           : p->border == CONVOY_BORDER_HALF     ? dk / 2
                           : p->border == CONVOY_BORDER_EXPLICIT ? p->pad_before[a]
                                                                 : 0;
        const int64_t pr = p->border == CONVOY_BORDER_EXPLICIT ? p->pad_after[a] : pl;
        base[2 + a] = (grad_out[2 + a] - 1) * p->stride[a] + dk - pl - pr;
    }
    int failures = 0, accepted = 0, rejected = 0;
    int64_t extra[3] = {-1, -1, -1}; /* the a of each axis, odometer from -1 to s */
    for (;;) {
        int64_t gin[5];
        memcpy(gin, base, sizeof gin);
        int admissible = 1;
        for (int a = 0; a < nd; ++a) {
            gin[2 + a] += extra[a];
            admissible &= extra[a] >= 0 && extra[a] < p->stride[a];
        }
        conv_case c;
        if (admissible) {
            if (!case_init(&c, p, gin, filt)) {
                printf("  BAD TEST CASE %s\n", c.label);
                return 1;
            }
            for (int j = 0; j < rank; ++j)
                assert_int_equal(c.out[j], grad_out[j]);
            failures += !case_check(rt, &c, CONVOY_CONV_BACKWARD_DATA, seed++);
            ++accepted;
        } else {
            convoy_tensor *tf = NULL, *tdy = NULL, *tdx = NULL;
            assert_int_equal(convoy_tensor_create(rt, rank, filt, &tf), CONVOY_OK);
            assert_int_equal(convoy_tensor_create(rt, rank, grad_out, &tdy), CONVOY_OK);
            assert_int_equal(convoy_tensor_create(rt, rank, gin, &tdx), CONVOY_OK);
            convoy_status status = convoy_conv_backward_data(rt, p, tf, tdy, tdx, NULL);
            if (status != CONVOY_ERR_SHAPE) {
                case_init(&c, p, gin, filt);
                printf("  FAIL backward_data with grad_input dims of %s: expected "
                       "CONVOY_ERR_SHAPE, got %s\n",
                       c.label, convoy_status_name(status));
                ++failures;
            }
            assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
            convoy_tensor_destroy(tf);
            convoy_tensor_destroy(tdy);
            convoy_tensor_destroy(tdx);
            ++rejected;
        }
        int a = nd - 1;
        while (a >= 0 && ++extra[a] > p->stride[a])
            extra[a--] = -1;
        if (a < 0)
            break;
    }
    printf("transpose sizes: %d accepted, %d rejected, %d failures\n", accepted, rejected,
           failures);
    return failures;
}

static void test_transpose_sizes(void **state)
{
    convoy_runtime *rt = *state;
    int failures = 0;
    const int64_t filt2[4] = {2, 3, 3, 3}, dy2[4] = {2, 2, 4, 3};
    const int64_t s2[3] = {3, 2}, d2[3] = {1, 2};
    convoy_conv_params p = case_params(2, CONVOY_BORDER_VALID, s2, NULL);
    failures += check_transpose(rt, &p, filt2, dy2, 6000);
    p = case_params(2, CONVOY_BORDER_VALID, s2, d2);
    const int64_t before[3] = {1, 0}, after[3] = {2, 1};
    case_set_pads(&p, before, after);
    p.flip = 0;
    failures += check_transpose(rt, &p, filt2, dy2, 6100);
    p = case_params(2, CONVOY_BORDER_HALF, s2, NULL);
    failures += check_transpose(rt, &p, filt2, dy2, 6200);
    const int64_t filt_g[4] = {4, 1, 2, 3}, dy_g[4] = {1, 4, 3, 3};
    p = case_params(2, CONVOY_BORDER_FULL, s2, d2);
    p.groups = 2;
    failures += check_transpose(rt, &p, filt_g, dy_g, 6300);
    const int64_t filt3[5] = {2, 1, 2, 3, 2}, dy3[5] = {1, 2, 3, 2, 3};
    const int64_t s3[3] = {2, 1, 3};
    p = case_params(3, CONVOY_BORDER_VALID, s3, NULL);
    failures += check_transpose(rt, &p, filt3, dy3, 6400);
    assert_int_equal(failures, 0);
}

/* ---- shape formula ------------------------------------------------------------ */

/* The worked examples of CONV_SEMANTICS section 2. */
static void test_output_dims_examples(void **state)
{
    (void)state;
    static const int64_t expected2[4][4] = {
        {3, 4, 4, 2}, {3, 4, 12, 5}, {3, 4, 20, 7}, {3, 4, 6, 4}};
    static const int64_t expected3[4][5] = {
        {3, 4, 4, 2, 4}, {3, 4, 12, 5, 8}, {3, 4, 20, 7, 10}, {3, 4, 6, 4, 10}};
    static const convoy_border modes[4] = {CONVOY_BORDER_VALID, CONVOY_BORDER_HALF,
                                           CONVOY_BORDER_FULL, CONVOY_BORDER_EXPLICIT};
    const int64_t in2[4] = {3, 2, 12, 9}, k2[4] = {4, 2, 5, 6};
    const int64_t in3[5] = {3, 2, 12, 9, 7}, k3[5] = {4, 2, 5, 6, 4};
    const int64_t stride[3] = {1, 2, 1}, dilation[3] = {2, 1, 1}, pads[3] = {1, 2, 3};
    for (int m = 0; m < 4; ++m) {
        int64_t got[5] = {0};
        convoy_conv_params p = case_params(2, modes[m], stride, dilation);
        if (modes[m] == CONVOY_BORDER_EXPLICIT)
            case_set_pads(&p, pads, NULL);
        assert_int_equal(convoy_conv_output_dims(&p, in2, k2, got), CONVOY_OK);
        for (int j = 0; j < 4; ++j)
            assert_int_equal(got[j], expected2[m][j]);
        p = case_params(3, modes[m], stride, dilation);
        if (modes[m] == CONVOY_BORDER_EXPLICIT)
            case_set_pads(&p, pads, NULL);
        assert_int_equal(convoy_conv_output_dims(&p, in3, k3, got), CONVOY_OK);
        for (int j = 0; j < 5; ++j)
            assert_int_equal(got[j], expected3[m][j]);
    }
    /* Output extent independent of groups; empty leading dims are legal. */
    convoy_conv_params p = case_params(2, CONVOY_BORDER_HALF, NULL, NULL);
    p.groups = 2;
    const int64_t in_g[4] = {0, 4, 7, 6}, k_g[4] = {6, 2, 3, 2};
    int64_t got[4] = {0};
    assert_int_equal(convoy_conv_output_dims(&p, in_g, k_g, got), CONVOY_OK);
    assert_int_equal(got[0], 0);
    assert_int_equal(got[1], 6);
    assert_int_equal(got[2], 7);
    assert_int_equal(got[3], 7);
}

/* Inputs too small for the kernel: an output extent < 1 (Python floor
 * division, so -1/2 is -1, not 0) is CONVOY_ERR_SHAPE from output_dims and
 * from every direction's submit; padding that makes room is accepted. */
static void test_output_too_small(void **state)
{
    convoy_runtime *rt = *state;
    static const listed_case list[] = {
        {2, {1, 1, 2, 2}, {1, 1, 3, 3}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {0}},
        {2, {1, 1, 5, 5}, {1, 1, 3, 3}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {3, 3}},
        {2, {1, 1, 2, 6}, {1, 1, 3, 3}, 1, CONVOY_BORDER_VALID, {0}, {0}, {2, 1}, {0}},
        {2, {1, 1, 6, 1}, {1, 1, 2, 3}, 1, CONVOY_BORDER_EXPLICIT, {0, 1}, {0, 0}, {1, 3}, {0}},
        {3, {1, 1, 4, 4, 1}, {1, 1, 2, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {1, 1, 2}, {0}},
        {3, {1, 1, 3, 4, 4}, {1, 1, 2, 2, 2}, 1, CONVOY_BORDER_VALID, {0}, {0}, {0}, {3, 1, 1}},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; ++i) {
        const listed_case *l = &list[i];
        const convoy_conv_params p = case_listed_params(l);
        conv_case c;
        assert_false(case_init(&c, &p, l->in, l->filt));
        assert_true(case_check_output_dims(&c, 0));
        const int rank = l->nd + 2;
        const int64_t ones[5] = {1, 1, 1, 1, 1};
        convoy_tensor *x = NULL, *w = NULL, *y = NULL;
        assert_int_equal(convoy_tensor_create(rt, rank, l->in, &x), CONVOY_OK);
        assert_int_equal(convoy_tensor_create(rt, rank, l->filt, &w), CONVOY_OK);
        assert_int_equal(convoy_tensor_create(rt, rank, ones, &y), CONVOY_OK);
        assert_int_equal(convoy_conv_forward(rt, &p, x, w, y, NULL), CONVOY_ERR_SHAPE);
        assert_int_equal(convoy_conv_backward_data(rt, &p, w, y, x, NULL), CONVOY_ERR_SHAPE);
        assert_int_equal(convoy_conv_backward_filter(rt, &p, x, y, w, NULL), CONVOY_ERR_SHAPE);
        convoy_tensor_destroy(x);
        convoy_tensor_destroy(w);
        convoy_tensor_destroy(y);
    }
    /* Enough padding: one output row and column. */
    const int64_t in[4] = {1, 1, 2, 2}, filt[4] = {1, 1, 3, 3}, before[3] = {1, 0},
                  after[3] = {0, 1};
    convoy_conv_params p = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
    case_set_pads(&p, before, after);
    conv_case c;
    assert_true(case_init(&c, &p, in, filt));
    assert_int_equal(c.out[2], 1);
    assert_int_equal(c.out[3], 1);
    assert_true(case_check_output_dims(&c, 1));
    assert_int_equal(case_check_all(rt, &c, 6500), 0);
}

/* 1 when name is one of the comma-separated names of list. */
static int listed(const char *list, const char *name)
{
    const size_t len = strlen(name);
    for (const char *p = list; p && *p; p += strcspn(p, ",")) {
        p += *p == ',';
        if (!strncmp(p, name, len) && (p[len] == ',' || p[len] == '\0'))
            return 1;
    }
    return 0;
}

/* The runs registered with exclude= check what they claim: the plan of
 * every direction avoids the excluded implementations. */
static void test_plans_respect_exclude(void **state)
{
    convoy_runtime *rt = *state;
    convoy_options options;
    case_options(&options);
    static const char *const impl_names[6] = {"cudnn",  "gemm",   "1x1",
                                              "direct", "onednn", "winograd"};
    const int64_t in[2][4] = {{2, 3, 6, 6}, {2, 3, 6, 6}},
                  filt[2][4] = {{4, 3, 3, 3}, {4, 3, 1, 1}};
    for (int shape = 0; shape < 2; ++shape) {
        convoy_conv_params p = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
        int64_t out[4];
        assert_int_equal(convoy_conv_output_dims(&p, in[shape], filt[shape], out), CONVOY_OK);
        for (int dir = 0; dir < 3; ++dir) {
            convoy_conv_plan_info info;
            memset(&info, 0, sizeof info);
            convoy_status status = convoy_conv_explain(rt, &p, (convoy_conv_direction)dir,
                                                       in[shape], filt[shape], out, &info);
            if (status != CONVOY_OK)
                printf("  explain failed: %s\n", convoy_last_error_message());
            assert_int_equal(status, CONVOY_OK);
            printf("  %s %s: %s (%s)\n", shape ? "1x1" : "3x3", case_direction_names[dir],
                   info.implementation, info.algorithm);
            int known = 0;
            for (int b = 0; b < 6; ++b) {
                if (!strcmp(info.implementation, impl_names[b])) {
                    known = 1;
                    assert_false(listed(options.exclude, impl_names[b]));
                }
            }
            assert_true(known);
        }
    }
}

/* The defaults of convoy_conv_params_init are Aesara's. */
static void test_params_defaults(void **state)
{
    (void)state;
    for (int nd = 2; nd <= 3; ++nd) {
        convoy_conv_params p;
        memset(&p, 0x5a, sizeof p);
        assert_int_equal(convoy_conv_params_init(&p, nd), CONVOY_OK);
        assert_int_equal(p.spatial_dims, nd);
        assert_int_equal(p.border, CONVOY_BORDER_VALID);
        for (int a = 0; a < nd; ++a) {
            assert_int_equal(p.stride[a], 1);
            assert_int_equal(p.dilation[a], 1);
        }
        assert_int_equal(p.groups, 1);
        assert_int_equal(p.flip, 1);
        assert_int_equal(p.unshared, 0);
    }
}

int main(int argc, char **argv)
{
    int device = case_device_check("test_conv", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_defaults),
        cmocka_unit_test(test_output_dims_examples),
        cmocka_unit_test_setup_teardown(test_grid2d_forward, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_grid2d_backward_data, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_grid2d_backward_filter, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_grid3d_forward, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_grid3d_backward_data, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_grid3d_backward_filter, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_groups, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_asymmetric_pads, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_pointwise, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_larger, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_unshared, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_empty, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_transpose_sizes, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_output_too_small, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_plans_respect_exclude, case_setup, case_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
