/* Error paths of the public API: each failing call returns the documented
 * status, convoy_last_error_message() names the call and the offending
 * argument, and the call changed nothing (no task handle, no output written,
 * no out-pointer set). Runs on the backend the command line names
 * (device=cpu|cuda). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

#define EXPECT_ERROR(call, expected, ...)                                                          \
    assert_true(                                                                                   \
        case_failure_ok(#call, (call), (expected), (const char *const[]){__VA_ARGS__, NULL}))

/* ---- fixture: a runtime and tensors with known contents ----------------------- */

typedef struct fixture {
    case_store s;             /* the runtime and every tensor checked after a failure */
    convoy_tensor *x, *w, *y; /* 2D forward operands (2,3,6,6) * (4,3,3,3) -> (2,4,4,4) */
    convoy_conv_params p;
} fixture;

static convoy_tensor *track(fixture *f, int ndim, const int64_t *dims)
{
    convoy_tensor *t = case_store_add(&f->s, ndim, dims);
    assert_non_null(t);
    return t;
}

static void check_unchanged(fixture *f)
{
    assert_true(case_store_unchanged(&f->s));
}

static int fixture_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || case_runtime_create(&f->s.rt) != CONVOY_OK) {
        free(f);
        return -1;
    }
    static const int64_t x[4] = {2, 3, 6, 6}, w[4] = {4, 3, 3, 3}, y[4] = {2, 4, 4, 4};
    f->x = track(f, 4, x);
    f->w = track(f, 4, w);
    f->y = track(f, 4, y);
    f->p = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture *f = *state;
    case_store_free(&f->s);
    free(f);
    return 0;
}

static const char *const call_names[3] = {"conv_forward", "conv_backward_data",
                                          "conv_backward_filter"};

/* Submits one direction with operands in forward roles (input, filters,
 * output), expects the status and words (plus the call's name), no task
 * handle, and every tracked tensor unchanged. */
static void expect_conv(fixture *f, convoy_runtime *rt, const convoy_conv_params *p,
                        convoy_conv_direction dir, convoy_tensor *x, convoy_tensor *w,
                        convoy_tensor *y, convoy_status expected, const char *const *words)
{
    convoy_task *task = NULL;
    const convoy_status got = case_submit(rt, p, dir, x, w, y, &task);
    const char *all[8] = {call_names[dir]};
    for (int i = 0; words[i] && i < 6; ++i)
        all[i + 1] = words[i];
    assert_true(case_failure_ok(call_names[dir], got, expected, all));
    assert_null(task);
    assert_int_equal(convoy_runtime_synchronize(f->s.rt), CONVOY_OK);
    check_unchanged(f);
}

#define EXPECT_CONV(f, rt, p, dir, x, w, y, expected, ...)                                         \
    expect_conv(f, rt, p, dir, x, w, y, expected, (const char *const[]){__VA_ARGS__, NULL})

/* The same failure in all three directions. */
static void expect_conv_all(fixture *f, const convoy_conv_params *p, convoy_tensor *x,
                            convoy_tensor *w, convoy_tensor *y, convoy_status expected,
                            const char *word)
{
    for (int dir = 0; dir < 3; ++dir)
        EXPECT_CONV(f, f->s.rt, p, (convoy_conv_direction)dir, x, w, y, expected, word);
}

/* In every direction, each operand in turn replaced by bad[j]: the message
 * names that operand (and word, when not NULL). */
static void expect_each_operand(fixture *f, convoy_tensor *const bad[3], convoy_status expected,
                                const char *word)
{
    for (int dir = 0; dir < 3; ++dir) {
        for (int j = 0; j < 3; ++j) {
            convoy_tensor *ops[3] = {f->x, f->w, f->y};
            ops[j] = bad[j];
            EXPECT_CONV(f, f->s.rt, &f->p, (convoy_conv_direction)dir, ops[0], ops[1], ops[2],
                        expected, case_operand_names[dir][j], word);
        }
    }
}

/* ---- NULL arguments ------------------------------------------------------------ */

static void test_null_conv_arguments(void **state)
{
    fixture *f = *state;
    for (int dir = 0; dir < 3; ++dir) {
        const convoy_conv_direction d = (convoy_conv_direction)dir;
        EXPECT_CONV(f, NULL, &f->p, d, f->x, f->w, f->y, CONVOY_ERR_INVALID_ARGUMENT, "runtime");
        EXPECT_CONV(f, f->s.rt, NULL, d, f->x, f->w, f->y, CONVOY_ERR_INVALID_ARGUMENT, "params");
    }
    convoy_tensor *const none[3] = {NULL, NULL, NULL};
    expect_each_operand(f, none, CONVOY_ERR_INVALID_ARGUMENT, NULL);
    /* The task pointer may be NULL: the call still runs. */
    assert_int_equal(convoy_conv_forward(f->s.rt, &f->p, f->x, f->w, f->y, NULL), CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(f->s.rt), CONVOY_OK);
}

static void test_null_other_arguments(void **state)
{
    fixture *f = *state;
    EXPECT_ERROR(convoy_runtime_create(NULL, NULL), CONVOY_ERR_INVALID_ARGUMENT, "runtime_create");
    EXPECT_ERROR(convoy_options_init(NULL), CONVOY_ERR_INVALID_ARGUMENT, "options_init");
    EXPECT_ERROR(convoy_options_from_env(NULL), CONVOY_ERR_INVALID_ARGUMENT, "options_from_env",
                 "NULL");
    EXPECT_ERROR(convoy_conv_params_init(NULL, 2), CONVOY_ERR_INVALID_ARGUMENT, "params_init",
                 "params");
    EXPECT_ERROR(convoy_task_wait(NULL), CONVOY_ERR_INVALID_ARGUMENT, "task_wait");
    const int64_t dims[2] = {2, 3};
    convoy_tensor *t = NULL;
    EXPECT_ERROR(convoy_tensor_create(NULL, 2, dims, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "runtime");
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 2, NULL, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "dims");
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 2, dims, NULL), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "out");
    assert_null(t);
    float host[8] = {0};
    EXPECT_ERROR(convoy_upload(NULL, f->x, host, 8, NULL), CONVOY_ERR_INVALID_ARGUMENT, "upload",
                 "runtime");
    EXPECT_ERROR(convoy_upload(f->s.rt, NULL, host, 8, NULL), CONVOY_ERR_INVALID_ARGUMENT, "upload",
                 "NULL");
    EXPECT_ERROR(convoy_download(NULL, f->x, host, 8, NULL), CONVOY_ERR_INVALID_ARGUMENT,
                 "download", "runtime");
    EXPECT_ERROR(convoy_download(f->s.rt, NULL, host, 8, NULL), CONVOY_ERR_INVALID_ARGUMENT,
                 "download", "NULL");
    convoy_memory_statistics stats;
    EXPECT_ERROR(convoy_memory_stats(NULL, &stats), CONVOY_ERR_INVALID_ARGUMENT, "memory_stats");
    EXPECT_ERROR(convoy_memory_stats(f->s.rt, NULL), CONVOY_ERR_INVALID_ARGUMENT, "memory_stats");
    EXPECT_ERROR(convoy_memory_trim(NULL), CONVOY_ERR_INVALID_ARGUMENT, "memory_trim");
    /* NULL is a no-op for the destroy/release functions and counts as done. */
    convoy_runtime_destroy(NULL);
    convoy_tensor_destroy(NULL);
    convoy_task_release(NULL);
    assert_int_equal(convoy_task_done(NULL), 1);
    assert_int_equal(convoy_tensor_ndim(NULL), 0);
    check_unchanged(f);
}

/* ---- parameters ------------------------------------------------------------------ */

static void test_params_init_spatial_dims(void **state)
{
    (void)state;
    convoy_conv_params p;
    static const int bad[4] = {1, 4, 0, -2};
    for (int i = 0; i < 4; ++i)
        EXPECT_ERROR(convoy_conv_params_init(&p, bad[i]), CONVOY_ERR_INVALID_ARGUMENT,
                     "params_init", "spatial_dims");
}

static void test_bad_params(void **state)
{
    fixture *f = *state;
    convoy_conv_params bad[12];
    const char *words[12];
    int n = 0;
#define BAD(word, change)                                                                          \
    do {                                                                                           \
        convoy_conv_params *q = &bad[n];                                                           \
        *q = f->p;                                                                                 \
        change;                                                                                    \
        words[n++] = word;                                                                         \
    } while (0)
    BAD("stride", q->stride[0] = 0);
    BAD("stride", q->stride[1] = -1);
    BAD("dilation", q->dilation[1] = 0);
    BAD("dilation", q->dilation[0] = -3);
    BAD("groups", q->groups = 0);
    BAD("groups", q->groups = -2);
    BAD("pad", (q->border = CONVOY_BORDER_EXPLICIT, q->pad_before[0] = -1));
    BAD("pad", (q->border = CONVOY_BORDER_EXPLICIT, q->pad_after[1] = -3));
    BAD("border", q->border = (convoy_border)7);
    BAD("border", q->border = (convoy_border)-1);
    BAD("spatial_dims", q->spatial_dims = 4);
    BAD("spatial_dims", q->spatial_dims = 1);
#undef BAD
    /* Six entries each, in case a bad spatial_dims made the call read more. */
    const int64_t in[6] = {2, 3, 6, 6, 1, 1}, filt[6] = {4, 3, 3, 3, 1, 1};
    for (int i = 0; i < n; ++i) {
        const convoy_conv_params p = bad[i];
        expect_conv_all(f, &p, f->x, f->w, f->y, CONVOY_ERR_INVALID_ARGUMENT, words[i]);
        int64_t out[5] = {-9, -9, -9, -9, -9};
        EXPECT_ERROR(convoy_conv_output_dims(&p, in, filt, out), CONVOY_ERR_INVALID_ARGUMENT,
                     "output_dims", words[i]);
        for (int j = 0; j < 5; ++j)
            assert_int_equal(out[j], -9); /* written only on success */
    }
    /* Unshared filters are 2D only. */
    const int64_t x3[5] = {1, 1, 4, 4, 4}, w3[5] = {1, 1, 2, 2, 2}, y3[5] = {1, 1, 3, 3, 3};
    convoy_tensor *tx = track(f, 5, x3), *tw = track(f, 5, w3), *ty = track(f, 5, y3);
    convoy_conv_params p = case_params(3, CONVOY_BORDER_VALID, NULL, NULL);
    p.unshared = 1;
    expect_conv_all(f, &p, tx, tw, ty, CONVOY_ERR_INVALID_ARGUMENT, "unshared");
    int64_t out[5];
    EXPECT_ERROR(convoy_conv_output_dims(&p, x3, w3, out), CONVOY_ERR_INVALID_ARGUMENT,
                 "output_dims", "unshared");
}

/* ---- shapes ------------------------------------------------------------------------ */

static void test_rank_mismatch(void **state)
{
    fixture *f = *state;
    /* 4D tensors for a 3D convolution. */
    convoy_conv_params p3 = case_params(3, CONVOY_BORDER_VALID, NULL, NULL);
    expect_conv_all(f, &p3, f->x, f->w, f->y, CONVOY_ERR_SHAPE, "rank");
    /* One tensor of the wrong rank at a time, for a 2D convolution. */
    const int64_t x5[5] = {2, 3, 6, 6, 1}, w5[5] = {4, 3, 3, 3, 1}, y5[5] = {2, 4, 4, 4, 1};
    convoy_tensor *tx = track(f, 5, x5), *tw = track(f, 5, w5), *ty = track(f, 5, y5);
    convoy_tensor *const rank5[3] = {tx, tw, ty};
    expect_each_operand(f, rank5, CONVOY_ERR_SHAPE, "rank");
    /* Unshared wants 6D filters. */
    convoy_conv_params pu = f->p;
    pu.unshared = 1;
    expect_conv_all(f, &pu, f->x, f->w, f->y, CONVOY_ERR_SHAPE, "rank");
}

static void test_channel_mismatch(void **state)
{
    fixture *f = *state;
    /* input 6 channels, filters expect 3 x 1 group */
    const int64_t x6[4] = {2, 6, 6, 6};
    convoy_tensor *tx = track(f, 4, x6);
    for (int dir = 0; dir < 3; ++dir)
        EXPECT_CONV(f, f->s.rt, &f->p, (convoy_conv_direction)dir, tx, f->w, f->y, CONVOY_ERR_SHAPE,
                    "channels", dir == 1 ? "grad_input" : "input");
    /* groups 2: filters (4,3,...) expect 6 channels, the input has 3. */
    convoy_conv_params p = f->p;
    p.groups = 2;
    expect_conv_all(f, &p, f->x, f->w, f->y, CONVOY_ERR_SHAPE, "channels");
    int64_t out[4];
    const int64_t in[4] = {2, 6, 6, 6}, filt[4] = {4, 3, 3, 3};
    EXPECT_ERROR(convoy_conv_output_dims(&f->p, in, filt, out), CONVOY_ERR_SHAPE, "output_dims",
                 "channels");
}

static void test_groups_not_dividing_filters(void **state)
{
    fixture *f = *state;
    const int64_t x[4] = {2, 4, 6, 6}, w[4] = {3, 2, 3, 3}, y[4] = {2, 3, 4, 4};
    convoy_tensor *tx = track(f, 4, x), *tw = track(f, 4, w), *ty = track(f, 4, y);
    convoy_conv_params p = f->p;
    p.groups = 2;
    expect_conv_all(f, &p, tx, tw, ty, CONVOY_ERR_SHAPE, "group");
    int64_t out[4];
    EXPECT_ERROR(convoy_conv_output_dims(&p, x, w, out), CONVOY_ERR_SHAPE, "output_dims", "group");
}

/* Output dims that differ from the formula on each axis, 2D and 3D; for
 * backward_filter also grad_filters whose kernel size gives another output. */
static void test_output_dims_mismatch(void **state)
{
    fixture *f = *state;
    static const char *const out_names[3] = {"output", "grad_output", "grad_output"};
    for (int j = 0; j < 4; ++j) {
        int64_t bad[4] = {2, 4, 4, 4};
        bad[j] += 1;
        convoy_tensor *ty = track(f, 4, bad);
        for (int dir = 0; dir < 3; ++dir)
            EXPECT_CONV(f, f->s.rt, &f->p, (convoy_conv_direction)dir, f->x, f->w, ty,
                        CONVOY_ERR_SHAPE, out_names[dir], "dim");
    }
    const int64_t x3[5] = {1, 2, 5, 4, 6}, w3[5] = {3, 2, 2, 2, 3}, y3[5] = {1, 3, 4, 3, 4};
    convoy_tensor *tx = track(f, 5, x3), *tw = track(f, 5, w3);
    convoy_conv_params p3 = case_params(3, CONVOY_BORDER_VALID, NULL, NULL);
    for (int j = 0; j < 5; ++j) {
        int64_t bad[5];
        memcpy(bad, y3, sizeof bad);
        bad[j] = j == 0 ? 2 : bad[j] - 1;
        convoy_tensor *ty = track(f, 5, bad);
        for (int dir = 0; dir < 3; ++dir)
            EXPECT_CONV(f, f->s.rt, &p3, (convoy_conv_direction)dir, tx, tw, ty, CONVOY_ERR_SHAPE,
                        out_names[dir], "dim");
    }
    const int64_t w_bad[4] = {4, 3, 2, 3};
    convoy_tensor *tw_bad = track(f, 4, w_bad);
    EXPECT_CONV(f, f->s.rt, &f->p, CONVOY_CONV_BACKWARD_FILTER, f->x, tw_bad, f->y,
                CONVOY_ERR_SHAPE, "dim");
}

static void test_unshared_regions(void **state)
{
    fixture *f = *state;
    convoy_conv_params p = f->p;
    p.unshared = 1;
    const int64_t in[4] = {2, 3, 6, 6};
    for (int axis = 1; axis <= 2; ++axis) {
        int64_t w[6] = {4, 4, 4, 3, 3, 3}; /* the right regions are 4x4 */
        w[axis] = 5;
        convoy_tensor *tw = track(f, 6, w);
        expect_conv_all(f, &p, f->x, tw, f->y, CONVOY_ERR_SHAPE, "region");
        int64_t out[4];
        EXPECT_ERROR(convoy_conv_output_dims(&p, in, w, out), CONVOY_ERR_SHAPE, "output_dims",
                     "region");
    }
}

/* backward_data with stride 2: grad_input extents 9 and 10 both give a
 * 4-extent output with a 3-kernel; 8 and 11 do not. */
static void test_backward_data_impossible(void **state)
{
    fixture *f = *state;
    const int64_t stride[3] = {2, 2};
    convoy_conv_params p = case_params(2, CONVOY_BORDER_VALID, stride, NULL);
    static const int64_t extents[4][2] = {{8, 9}, {11, 9}, {9, 8}, {10, 11}};
    for (int i = 0; i < 4; ++i) {
        const int64_t dx[4] = {2, 3, extents[i][0], extents[i][1]};
        convoy_tensor *tdx = track(f, 4, dx);
        EXPECT_CONV(f, f->s.rt, &p, CONVOY_CONV_BACKWARD_DATA, tdx, f->w, f->y, CONVOY_ERR_SHAPE,
                    "grad_");
    }
}

/* ---- tensors of another runtime, aliasing ---------------------------------------- */

static void test_foreign_runtime(void **state)
{
    fixture *f = *state;
    convoy_runtime *other = NULL;
    assert_int_equal(case_runtime_create(&other), CONVOY_OK);
    const int64_t x[4] = {2, 3, 6, 6}, w[4] = {4, 3, 3, 3}, y[4] = {2, 4, 4, 4};
    convoy_tensor *ox = NULL, *ow = NULL, *oy = NULL;
    assert_int_equal(convoy_tensor_create(other, 4, x, &ox), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(other, 4, w, &ow), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(other, 4, y, &oy), CONVOY_OK);
    convoy_tensor *const foreign[3] = {ox, ow, oy};
    expect_each_operand(f, foreign, CONVOY_ERR_INVALID_ARGUMENT, "runtime");
    float *host = calloc(288, sizeof *host);
    assert_non_null(host);
    convoy_task *task = NULL;
    EXPECT_ERROR(convoy_upload(f->s.rt, ox, host, 216, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "upload", "runtime");
    EXPECT_ERROR(convoy_download(f->s.rt, oy, host, 128, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "download", "runtime");
    assert_null(task);
    free(host);
    convoy_tensor_destroy(ox);
    convoy_tensor_destroy(ow);
    convoy_tensor_destroy(oy);
    convoy_runtime_destroy(other);
    check_unchanged(f);
}

static void test_aliasing(void **state)
{
    fixture *f = *state;
    /* 1x1 filters keep the spatial size, so output and input dims agree. */
    const int64_t x[4] = {2, 2, 5, 5}, w[4] = {2, 2, 1, 1};
    convoy_tensor *tx = track(f, 4, x), *tw = track(f, 4, w);
    EXPECT_CONV(f, f->s.rt, &f->p, CONVOY_CONV_FORWARD, tx, tw, tx, CONVOY_ERR_INVALID_ARGUMENT,
                "input", "output");
    EXPECT_CONV(f, f->s.rt, &f->p, CONVOY_CONV_BACKWARD_DATA, tx, tw, tx,
                CONVOY_ERR_INVALID_ARGUMENT, "grad_input", "grad_output");
    /* input, grad_filters and grad_output all (2,2,1,1). */
    const int64_t s[4] = {2, 2, 1, 1};
    convoy_tensor *ts = track(f, 4, s), *ts2 = track(f, 4, s);
    EXPECT_CONV(f, f->s.rt, &f->p, CONVOY_CONV_BACKWARD_FILTER, ts, ts, ts2,
                CONVOY_ERR_INVALID_ARGUMENT, "grad_filters", "input");
    EXPECT_CONV(f, f->s.rt, &f->p, CONVOY_CONV_BACKWARD_FILTER, ts, ts2, ts2,
                CONVOY_ERR_INVALID_ARGUMENT, "grad_filters", "grad_output");
    EXPECT_CONV(f, f->s.rt, &f->p, CONVOY_CONV_FORWARD, ts, ts2, ts2, CONVOY_ERR_INVALID_ARGUMENT,
                "filters", "output");
}

/* ---- tensors and transfers ---------------------------------------------------------- */

static void test_tensor_create_errors(void **state)
{
    fixture *f = *state;
    const int64_t dims[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    convoy_tensor *t = NULL;
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 0, dims, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "ndim");
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 9, dims, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "ndim");
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, -1, dims, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "ndim");
    const int64_t negative[3] = {2, -3, 4};
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 3, negative, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "dims");
    const int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 2, huge, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "overflow");
    const int64_t huge3[3] = {(int64_t)1 << 31, (int64_t)1 << 31, (int64_t)1 << 2};
    EXPECT_ERROR(convoy_tensor_create(f->s.rt, 3, huge3, &t), CONVOY_ERR_INVALID_ARGUMENT,
                 "tensor_create", "overflow");
    assert_null(t);
    /* The extremes that are legal: rank 1 and 8, an empty tensor. */
    assert_int_equal(convoy_tensor_create(f->s.rt, 8, dims, &t), CONVOY_OK);
    assert_int_equal(convoy_tensor_ndim(t), 8);
    convoy_tensor_destroy(t);
    const int64_t empty[2] = {0, 5};
    t = NULL;
    assert_int_equal(convoy_tensor_create(f->s.rt, 2, empty, &t), CONVOY_OK);
    assert_int_equal(convoy_tensor_dim(t, 0), 0);
    convoy_tensor_destroy(t);
}

static void test_tensor_dim_bad_axis(void **state)
{
    fixture *f = *state;
    assert_int_equal(convoy_tensor_ndim(f->x), 4);
    assert_int_equal(convoy_tensor_dim(f->x, 0), 2);
    assert_int_equal(convoy_tensor_dim(f->x, 3), 6);
    assert_int_equal(convoy_tensor_dim(f->x, -1), -1);
    assert_int_equal(convoy_tensor_dim(f->x, 4), -1);
    assert_int_equal(convoy_tensor_dim(f->x, 100), -1);
    assert_int_equal(convoy_tensor_dim(NULL, 0), -1);
}

static void test_transfer_null_host(void **state)
{
    fixture *f = *state;
    convoy_task *task = NULL;
    EXPECT_ERROR(convoy_upload(f->s.rt, f->y, NULL, 128, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "upload", "host");
    EXPECT_ERROR(convoy_download(f->s.rt, f->y, NULL, 128, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "download", "host");
    assert_null(task);
    check_unchanged(f);
}

/* count is the host buffer's element count: any other value than the
 * tensor's is refused before anything is enqueued, with the tensor's dims,
 * the expected and the given count in the message. */
static void test_transfer_count_mismatch(void **state)
{
    fixture *f = *state;
    float *host = calloc(256, sizeof *host);
    assert_non_null(host);
    convoy_task *task = NULL;
    EXPECT_ERROR(convoy_upload(f->s.rt, f->x, host, 215, &task), CONVOY_ERR_SHAPE, "upload",
                 "dst 2x3x6x6", "expected 216", "got 215");
    EXPECT_ERROR(convoy_upload(f->s.rt, f->x, host, 217, &task), CONVOY_ERR_SHAPE, "upload",
                 "dst 2x3x6x6", "expected 216", "got 217");
    EXPECT_ERROR(convoy_upload(f->s.rt, f->y, host, 0, &task), CONVOY_ERR_SHAPE, "upload",
                 "dst 2x4x4x4", "expected 128", "got 0");
    EXPECT_ERROR(convoy_download(f->s.rt, f->y, host, 129, &task), CONVOY_ERR_SHAPE, "download",
                 "src 2x4x4x4", "expected 128", "got 129");
    EXPECT_ERROR(convoy_download(f->s.rt, f->w, host, 216, &task), CONVOY_ERR_SHAPE, "download",
                 "src 4x3x3x3", "expected 108", "got 216");
    EXPECT_ERROR(convoy_download(f->s.rt, f->w, NULL, 1, &task), CONVOY_ERR_SHAPE, "download",
                 "expected 108", "got 1");
    assert_null(task);
    assert_int_equal(convoy_runtime_synchronize(f->s.rt), CONVOY_OK);
    /* Nothing was downloaded either. */
    for (int i = 0; i < 256; ++i)
        assert_true(host[i] == 0.0f);
    free(host);
    check_unchanged(f);
    /* An empty tensor takes count 0, and then the pointer may be NULL. */
    const int64_t empty_dims[2] = {0, 4};
    convoy_tensor *empty = NULL;
    assert_int_equal(convoy_tensor_create(f->s.rt, 2, empty_dims, &empty), CONVOY_OK);
    assert_int_equal(convoy_upload(f->s.rt, empty, NULL, 0, &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
    task = NULL;
    float one = 0.0f;
    EXPECT_ERROR(convoy_download(f->s.rt, empty, &one, 1, &task), CONVOY_ERR_SHAPE, "download",
                 "src 0x4", "expected 0", "got 1");
    assert_null(task);
    convoy_tensor_destroy(empty);
}

/* ---- custom tasks ------------------------------------------------------------------ */

static convoy_status count_calls(const convoy_task_context *context, void *user_data)
{
    (void)context;
    ++*(int *)user_data;
    return CONVOY_OK;
}

static void test_submit_errors(void **state)
{
    fixture *f = *state;
    int calls = 0;
    convoy_task *task = NULL;
    convoy_access ok[1] = {{f->x, CONVOY_READ}};
    EXPECT_ERROR(convoy_submit(NULL, count_calls, &calls, ok, 1, "t", &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "submit", "runtime");
    EXPECT_ERROR(convoy_submit(f->s.rt, NULL, &calls, ok, 1, "t", &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "submit", "fn");
    EXPECT_ERROR(convoy_submit(f->s.rt, count_calls, &calls, NULL, 1, "t", &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "submit", "accesses");
    static const int bad_modes[3] = {0, 4, -1};
    for (int i = 0; i < 3; ++i) {
        convoy_access bad[2] = {{f->x, CONVOY_READ}, {f->y, (convoy_access_mode)bad_modes[i]}};
        EXPECT_ERROR(convoy_submit(f->s.rt, count_calls, &calls, bad, 2, "t", &task),
                     CONVOY_ERR_INVALID_ARGUMENT, "submit", "mode");
    }
    convoy_access twice[3] = {{f->x, CONVOY_READ}, {f->w, CONVOY_WRITE}, {f->x, CONVOY_WRITE}};
    EXPECT_ERROR(convoy_submit(f->s.rt, count_calls, &calls, twice, 3, "t", &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "submit", "twice");
    convoy_access null_tensor[1] = {{NULL, CONVOY_READ}};
    EXPECT_ERROR(convoy_submit(f->s.rt, count_calls, &calls, null_tensor, 1, "t", &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "submit", "NULL");
    assert_null(task);
    assert_int_equal(convoy_runtime_synchronize(f->s.rt), CONVOY_OK);
    assert_int_equal(calls, 0);
    check_unchanged(f);
    /* count 0 with NULL accesses is legal. */
    assert_int_equal(convoy_submit(f->s.rt, count_calls, &calls, NULL, 0, NULL, &task), CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
    assert_int_equal(calls, 1);
}

/* ---- implementations, status names, options ----------------------------------------- */

static void test_exclude_everything(void **state)
{
    fixture *f = *state;
    convoy_options options;
    case_options(&options);
    options.exclude = "cudnn,gemm,1x1,direct";
    /* The fixture's tracked tensors are checked in the fixture's runtime;
     * this one gets its own. */
    fixture g = {0};
    assert_int_equal(convoy_runtime_create(&options, &g.s.rt), CONVOY_OK);
    /* The bits of options.exclude cannot name onednn; unshared filters, which it refuses,
     * leave it out too. */
    convoy_conv_params p = f->p;
    p.unshared = 1;
    const int64_t x[4] = {2, 3, 6, 6}, w[6] = {4, 4, 4, 3, 3, 3}, y[4] = {2, 4, 4, 4};
    g.x = track(&g, 4, x);
    g.w = track(&g, 6, w);
    g.y = track(&g, 4, y);
    for (int dir = 0; dir < 3; ++dir) {
        EXPECT_CONV(&g, g.s.rt, &p, (convoy_conv_direction)dir, g.x, g.w, g.y,
                    CONVOY_ERR_UNSUPPORTED, "gemm", "direct", "1x1", "exclu", "onednn");
    }
    convoy_conv_plan_info info;
    EXPECT_ERROR(convoy_conv_explain(g.s.rt, &p, CONVOY_CONV_FORWARD, x, w, y, &info),
                 CONVOY_ERR_UNSUPPORTED, "conv_explain", "gemm");
    case_store_free(&g.s);
}

static void test_status_names(void **state)
{
    (void)state;
    /* Every code of the public list is named after its identifier. */
    static const struct {
        convoy_status status;
        const char *name;
    } names[] = {
#define STATUS_ENTRY(name, value, text) {name, #name},
        CONVOY_STATUS_LIST(STATUS_ENTRY)
#undef STATUS_ENTRY
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
        assert_string_equal(convoy_status_name(names[i].status), names[i].name);
    static const int outside[4] = {11, 99, -1, 1 << 20};
    for (int i = 0; i < 4; ++i)
        assert_string_equal(convoy_status_name((convoy_status)outside[i]), "CONVOY_STATUS_UNKNOWN");
}

/* Removes every CONVOY_* variable, so only what a test sets is seen. */
static void clear_convoy_environment(void)
{
    extern char **environ;
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; ++e) {
            if (!strncmp(*e, "CONVOY_", 7)) {
                char name[128];
                size_t len = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)len, *e);
                unsetenv(name);
                again = 1;
                break;
            }
        }
    }
}

/* With only name=value set, convoy_options_from_env refuses it; the message
 * names the variable and value and lists what is accepted. */
static void expect_bad_variable(const char *name, const char *value, const char *accepted)
{
    clear_convoy_environment();
    assert_int_equal(setenv(name, value, 1), 0);
    convoy_options options;
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
    convoy_status status = convoy_options_from_env(&options);
    unsetenv(name);
    EXPECT_ERROR(status, CONVOY_ERR_INVALID_ARGUMENT, "options_from_env", name, value, accepted);
    if (!strcmp(name, "CONVOY_STREAMS"))
        assert_int_equal(options.streams, -1); /* that field keeps its default */
}

static void test_options_malformed_environment(void **state)
{
    (void)state;
    expect_bad_variable("CONVOY_STREAMS", "abc", "0..64");
    expect_bad_variable("CONVOY_EXCLUDE", "gemm,bogus", "names from 1x1,");
    expect_bad_variable("CONVOY_ALGO", "fastest", "heuristic|time_once|time_on_shape_change");
    expect_bad_variable("CONVOY_MEMORY_LIMIT", " -5", "K, M or G");
    expect_bad_variable("CONVOY_LOG", "syslog", "stderr");
    convoy_options options;
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
}

static void test_runtime_create_bad_options(void **state)
{
    (void)state;
    convoy_options options;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
    options.device = (convoy_device)7;
    EXPECT_ERROR(convoy_runtime_create(&options, &rt), CONVOY_ERR_INVALID_ARGUMENT,
                 "runtime_create", "device");
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
    options.streams = -5;
    EXPECT_ERROR(convoy_runtime_create(&options, &rt), CONVOY_ERR_INVALID_ARGUMENT,
                 "runtime_create", "streams");
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
    options.algo = (convoy_algo_policy)9;
    EXPECT_ERROR(convoy_runtime_create(&options, &rt), CONVOY_ERR_INVALID_ARGUMENT,
                 "runtime_create", "algo");
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
    options.exclude = "gemm,fft";
    EXPECT_ERROR(convoy_runtime_create(&options, &rt), CONVOY_ERR_INVALID_ARGUMENT,
                 "runtime_create", "options.exclude", "'fft'", "names from 1x1,");
    assert_int_equal(convoy_options_init(&options), CONVOY_OK);
    options.require = "cudnn;gemm";
    EXPECT_ERROR(convoy_runtime_create(&options, &rt), CONVOY_ERR_INVALID_ARGUMENT,
                 "runtime_create", "options.require", "'cudnn;gemm'", "names from 1x1,");
    assert_null(rt);
}

static void test_explain_errors(void **state)
{
    fixture *f = *state;
    const int64_t x[4] = {2, 3, 6, 6}, w[4] = {4, 3, 3, 3}, y[4] = {2, 4, 4, 4};
    const int64_t y_bad[4] = {2, 4, 5, 4};
    convoy_conv_plan_info info;
    EXPECT_ERROR(convoy_conv_explain(f->s.rt, &f->p, CONVOY_CONV_FORWARD, x, w, y, NULL),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_explain", "info");
    EXPECT_ERROR(convoy_conv_explain(NULL, &f->p, CONVOY_CONV_FORWARD, x, w, y, &info),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_explain", "runtime");
    EXPECT_ERROR(convoy_conv_explain(f->s.rt, &f->p, (convoy_conv_direction)5, x, w, y, &info),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_explain", "direction");
    EXPECT_ERROR(convoy_conv_explain(f->s.rt, &f->p, CONVOY_CONV_BACKWARD_DATA, x, w, y_bad, &info),
                 CONVOY_ERR_SHAPE, "conv_explain", "output");
    EXPECT_ERROR(convoy_conv_explain(f->s.rt, NULL, CONVOY_CONV_FORWARD, x, w, y, &info),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_explain", "params");
    int64_t out[4];
    EXPECT_ERROR(convoy_conv_output_dims(&f->p, NULL, w, out), CONVOY_ERR_INVALID_ARGUMENT,
                 "output_dims", "input");
    EXPECT_ERROR(convoy_conv_output_dims(&f->p, x, w, NULL), CONVOY_ERR_INVALID_ARGUMENT,
                 "output_dims", "output");
    const int64_t x_neg[4] = {2, 3, -6, 6};
    EXPECT_ERROR(convoy_conv_output_dims(&f->p, x_neg, w, out), CONVOY_ERR_INVALID_ARGUMENT,
                 "output_dims", "input");
}

#define FIXTURE_TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(int argc, char **argv)
{
    int device = case_device_check("test_conv_errors", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_null_conv_arguments),
        FIXTURE_TEST(test_null_other_arguments),
        cmocka_unit_test(test_params_init_spatial_dims),
        FIXTURE_TEST(test_bad_params),
        FIXTURE_TEST(test_rank_mismatch),
        FIXTURE_TEST(test_channel_mismatch),
        FIXTURE_TEST(test_groups_not_dividing_filters),
        FIXTURE_TEST(test_output_dims_mismatch),
        FIXTURE_TEST(test_unshared_regions),
        FIXTURE_TEST(test_backward_data_impossible),
        FIXTURE_TEST(test_foreign_runtime),
        FIXTURE_TEST(test_aliasing),
        FIXTURE_TEST(test_tensor_create_errors),
        FIXTURE_TEST(test_tensor_dim_bad_axis),
        FIXTURE_TEST(test_transfer_null_host),
        FIXTURE_TEST(test_transfer_count_mismatch),
        FIXTURE_TEST(test_submit_errors),
        FIXTURE_TEST(test_exclude_everything),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_options_malformed_environment),
        cmocka_unit_test(test_runtime_create_bad_options),
        FIXTURE_TEST(test_explain_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
