/* Error paths of the training ops: every failing submit returns the documented status, the
 * message names the call, the tensor, the dim and the expected and actual values, and the
 * call changed nothing (no task handle set, no tensor written). Runs on the backend the
 * command line names (device=cpu|cuda). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conv_cases.h"

#define EXPECT_ERROR(call, expected, ...)                                                          \
    assert_true(                                                                                   \
        case_failure_ok(#call, (call), (expected), (const char *const[]){__VA_ARGS__, NULL}))

/* A task handle a failed submit must leave alone. */
static convoy_task *const untouched = (convoy_task *)(uintptr_t)0x1234;

/* ---- fixture: a runtime and tensors with known contents ----------------------------------- */

typedef struct fixture {
    case_store s;
    convoy_runtime *other; /* a second runtime, for foreign tensors */
    convoy_tensor *foreign;
    /* conv: x (2,3,6,6) * w (4,3,3,3) -> y (2,4,4,4); b (4) */
    convoy_tensor *x, *w, *y, *b, *b5, *b2d;
    /* activations: y2 and g2 like y; odd3 (2,4,4) and odd (2,4,4,5) */
    convoy_tensor *y2, *g2, *odd3, *odd;
    /* loss: logits (4,10), logits4 (4,10,1,1), wide (4,10,2,1), labels (4), labels3 (3),
     * loss (1), loss2 (2), glogits (4,10), correct (1) */
    convoy_tensor *logits, *logits4, *wide, *labels, *labels3, *loss, *loss2, *glogits, *correct;
    convoy_tensor *empty_logits; /* (0,10) */
    convoy_conv_params p;
} fixture;

static convoy_tensor *track(fixture *f, int ndim, const int64_t *dims)
{
    convoy_tensor *t = case_store_add(&f->s, ndim, dims);
    assert_non_null(t);
    return t;
}

/* Tensors whose contents are not checked (the store holds 16). */
static convoy_tensor *plain(fixture *f, int ndim, const int64_t *dims)
{
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(f->s.rt, ndim, dims, &t), CONVOY_OK);
    return t;
}

static int fixture_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || case_runtime_create(&f->s.rt) != CONVOY_OK || case_runtime_create(&f->other)) {
        free(f);
        return -1;
    }
    static const int64_t x[4] = {2, 3, 6, 6}, w[4] = {4, 3, 3, 3}, y[4] = {2, 4, 4, 4};
    static const int64_t four[1] = {4}, five[1] = {5}, b2d[2] = {1, 4}, odd3[3] = {2, 4, 4};
    static const int64_t odd[4] = {2, 4, 4, 5}, logits[2] = {4, 10}, logits4[4] = {4, 10, 1, 1};
    static const int64_t wide[4] = {4, 10, 2, 1}, three[1] = {3}, one[1] = {1}, two[1] = {2};
    static const int64_t empty[2] = {0, 10};
    f->x = track(f, 4, x);
    f->w = track(f, 4, w);
    f->y = track(f, 4, y);
    f->b = track(f, 1, four);
    f->y2 = track(f, 4, y);
    f->g2 = track(f, 4, y);
    f->logits = track(f, 2, logits);
    f->labels = track(f, 1, four);
    f->loss = track(f, 1, one);
    f->glogits = track(f, 2, logits);
    f->correct = track(f, 1, one);
    f->b5 = plain(f, 1, five);
    f->b2d = plain(f, 2, b2d);
    f->odd3 = plain(f, 3, odd3);
    f->odd = plain(f, 4, odd);
    f->logits4 = plain(f, 4, logits4);
    f->wide = plain(f, 4, wide);
    f->labels3 = plain(f, 1, three);
    f->loss2 = plain(f, 1, two);
    f->empty_logits = plain(f, 2, empty);
    assert_int_equal(convoy_tensor_create(f->other, 1, four, &f->foreign), CONVOY_OK);
    f->p = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture *f = *state;
    convoy_tensor *extra[] = {f->b5,   f->b2d,     f->odd3,  f->odd,         f->logits4,
                              f->wide, f->labels3, f->loss2, f->empty_logits};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; ++i)
        convoy_tensor_destroy(extra[i]);
    convoy_tensor_destroy(f->foreign);
    convoy_runtime_destroy(f->other);
    case_store_free(&f->s);
    free(f);
    return 0;
}

/* Every tracked tensor still holds its pattern: no failed call wrote anything. */
static void check_unchanged(fixture *f)
{
    assert_true(case_store_unchanged(&f->s));
}

/* ---- conv_forward_bias_act ---------------------------------------------------------------- */

static void test_conv_bias_act_errors(void **state)
{
    fixture *f = *state;
    convoy_runtime *rt = f->s.rt;
    convoy_task *task = untouched;
    const convoy_activation relu = CONVOY_ACTIVATION_RELU;
    EXPECT_ERROR(convoy_conv_forward_bias_act(NULL, &f->p, f->x, f->w, f->b, relu, f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_forward_bias_act", "runtime is NULL");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, NULL, f->x, f->w, f->b, relu, f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_forward_bias_act", "params is NULL");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, NULL, f->w, f->b, relu, f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_forward_bias_act", "input is NULL");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->x, f->w, f->b, (convoy_activation)7,
                                              f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_forward_bias_act", "act is 7",
                 "CONVOY_ACTIVATION_RELU");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->x, f->w, f->b5, relu, f->y, &task),
                 CONVOY_ERR_SHAPE, "conv_forward_bias_act", "bias dim 0 is 5, expected 4",
                 "output channel");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->x, f->w, f->b2d, relu, f->y, &task),
                 CONVOY_ERR_SHAPE, "conv_forward_bias_act", "bias (1x4) has rank 2",
                 "expected rank 1");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->x, f->w, f->y, relu, f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_forward_bias_act", "bias and output");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->x, f->w, f->foreign, relu, f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "conv_forward_bias_act", "bias", "another runtime");
    /* The convolution's own checks, under this call's name. */
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->x, f->w, f->b, relu, f->odd, &task),
                 CONVOY_ERR_SHAPE, "conv_forward_bias_act", "output");
    EXPECT_ERROR(convoy_conv_forward_bias_act(rt, &f->p, f->y, f->w, f->b, relu, f->y2, &task),
                 CONVOY_ERR_SHAPE, "conv_forward_bias_act", "input");
    assert_ptr_equal(task, untouched);
    check_unchanged(f);
}

/* ---- activation_backward ------------------------------------------------------------------ */

static void test_activation_backward_errors(void **state)
{
    fixture *f = *state;
    convoy_runtime *rt = f->s.rt;
    convoy_task *task = untouched;
    const convoy_activation relu = CONVOY_ACTIVATION_RELU;
    EXPECT_ERROR(convoy_activation_backward(NULL, relu, f->y, f->y2, f->g2, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "runtime is NULL");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, NULL, f->y2, f->g2, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "output is NULL");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, f->y, NULL, f->g2, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "grad_output is NULL");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, f->y, f->y2, NULL, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "grad_input is NULL");
    EXPECT_ERROR(convoy_activation_backward(rt, (convoy_activation)-1, f->y, f->y2, f->g2, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "act is -1");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, f->y, f->y2, f->y, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward",
                 "grad_input and output are the same tensor");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, f->y, f->odd3, f->g2, &task),
                 CONVOY_ERR_SHAPE, "activation_backward", "grad_output (2x4x4) has rank 3",
                 "expected rank 4 as output (2x4x4x4)");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, f->y, f->y2, f->odd, &task), CONVOY_ERR_SHAPE,
                 "activation_backward", "grad_input dim 3 is 5, expected 4");
    EXPECT_ERROR(convoy_activation_backward(rt, relu, f->foreign, f->y2, f->g2, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "output", "another runtime");
    assert_ptr_equal(task, untouched);
    check_unchanged(f);
}

/* ---- bias_backward ------------------------------------------------------------------------ */

static void test_bias_backward_errors(void **state)
{
    fixture *f = *state;
    convoy_runtime *rt = f->s.rt;
    convoy_task *task = untouched;
    EXPECT_ERROR(convoy_bias_backward(NULL, f->y, f->b, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "bias_backward", "runtime is NULL");
    EXPECT_ERROR(convoy_bias_backward(rt, NULL, f->b, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "bias_backward", "grad is NULL");
    EXPECT_ERROR(convoy_bias_backward(rt, f->y, NULL, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "bias_backward", "grad_bias is NULL");
    EXPECT_ERROR(convoy_bias_backward(rt, f->y, f->y, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "bias_backward", "grad_bias and grad are the same tensor");
    EXPECT_ERROR(convoy_bias_backward(rt, f->b5, f->b, &task), CONVOY_ERR_SHAPE, "bias_backward",
                 "grad (5) has rank 1", "expected rank 2 or more");
    EXPECT_ERROR(convoy_bias_backward(rt, f->y, f->b5, &task), CONVOY_ERR_SHAPE, "bias_backward",
                 "grad_bias dim 0 is 5, expected 4", "grad's dim 1");
    EXPECT_ERROR(convoy_bias_backward(rt, f->y, f->b2d, &task), CONVOY_ERR_SHAPE, "bias_backward",
                 "grad_bias (1x4) has rank 2, expected rank 1");
    EXPECT_ERROR(convoy_bias_backward(rt, f->y, f->foreign, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "bias_backward", "grad_bias", "another runtime");
    assert_ptr_equal(task, untouched);
    check_unchanged(f);
}

/* ---- softmax_cross_entropy ------------------------------------------------------------------ */

static void test_softmax_cross_entropy_errors(void **state)
{
    fixture *f = *state;
    convoy_runtime *rt = f->s.rt;
    convoy_task *task = untouched;
    convoy_tensor *x = f->logits, *l = f->labels, *loss = f->loss, *g = f->glogits;
    convoy_tensor *c = f->correct;
    EXPECT_ERROR(convoy_softmax_cross_entropy(NULL, x, l, loss, g, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy", "runtime is NULL");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, NULL, l, loss, g, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy", "logits is NULL");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, NULL, loss, g, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy", "labels is NULL");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, NULL, g, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy", "loss is NULL");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, loss, f->foreign, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy", "grad_logits",
                 "another runtime");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, loss, loss, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy",
                 "grad_logits and loss are the same tensor");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, loss, x, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy",
                 "grad_logits and logits are the same tensor");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, l, g, NULL, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy",
                 "loss and labels are the same tensor");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, loss, g, loss, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy",
                 "correct and loss are the same tensor");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, x, loss, g, c, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "softmax_cross_entropy",
                 "labels and logits are the same tensor");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, f->odd3, l, loss, NULL, NULL, &task),
                 CONVOY_ERR_SHAPE, "softmax_cross_entropy", "logits (2x4x4) has rank 3", "(N, K)");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, f->wide, l, loss, NULL, NULL, &task),
                 CONVOY_ERR_SHAPE, "softmax_cross_entropy", "logits dim 2 is 2, expected 1");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, f->empty_logits, l, loss, NULL, NULL, &task),
                 CONVOY_ERR_SHAPE, "softmax_cross_entropy", "logits dim 0 is 0", "at least 1 row");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, f->labels3, loss, g, c, &task),
                 CONVOY_ERR_SHAPE, "softmax_cross_entropy", "labels dim 0 is 3, expected 4");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, f->b2d, loss, g, c, &task), CONVOY_ERR_SHAPE,
                 "softmax_cross_entropy", "labels (1x4) has rank 2, expected rank 1");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, f->loss2, g, c, &task), CONVOY_ERR_SHAPE,
                 "softmax_cross_entropy", "loss dim 0 is 2, expected 1");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, loss, f->logits4, c, &task),
                 CONVOY_ERR_SHAPE, "softmax_cross_entropy",
                 "grad_logits (4x10x1x1) has rank 4, expected rank 2 as logits (4x10)");
    EXPECT_ERROR(convoy_softmax_cross_entropy(rt, x, l, loss, g, f->loss2, &task), CONVOY_ERR_SHAPE,
                 "softmax_cross_entropy", "correct dim 0 is 2, expected 1");
    assert_ptr_equal(task, untouched);
    check_unchanged(f);
}

/* ---- sgd_step --------------------------------------------------------------------------- */

static void test_sgd_errors(void **state)
{
    fixture *f = *state;
    convoy_runtime *rt = f->s.rt;
    convoy_task *task = untouched;
    const convoy_sgd_params ok = {0.1f, 0.9f, 1e-4f};
    EXPECT_ERROR(convoy_sgd_params_init(NULL), CONVOY_ERR_INVALID_ARGUMENT, "sgd_params_init",
                 "params is NULL");
    EXPECT_ERROR(convoy_sgd_step(NULL, &ok, f->y, f->y2, f->g2, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "runtime is NULL");
    EXPECT_ERROR(convoy_sgd_step(rt, NULL, f->y, f->y2, f->g2, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "params is NULL");
    const convoy_sgd_params bad[] = {
        {-0.1f, 0.9f, 0.0f}, {NAN, 0.9f, 0.0f}, {0.1f, -1.0f, 0.0f}, {0.1f, 0.9f, INFINITY}};
    const char *const field[] = {"params.lr is -0.1", "params.lr is nan", "params.momentum is -1",
                                 "params.weight_decay is inf"};
    for (int i = 0; i < 4; ++i)
        EXPECT_ERROR(convoy_sgd_step(rt, &bad[i], f->y, f->y2, f->g2, &task),
                     CONVOY_ERR_INVALID_ARGUMENT, "sgd_step", field[i], "finite value >= 0");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, f->y2, NULL, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "velocity is NULL", "momentum is 0.9");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, NULL, f->y2, f->g2, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "param is NULL");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, NULL, f->g2, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "grad is NULL");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, f->y, f->g2, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "param and grad are the same tensor");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, f->y2, f->y, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "velocity and param are the same tensor");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, f->y2, f->y2, &task), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "velocity and grad are the same tensor");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, f->odd, f->g2, &task), CONVOY_ERR_SHAPE, "sgd_step",
                 "grad dim 3 is 5, expected 4 as param (2x4x4x4)");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->y, f->y2, f->odd3, &task), CONVOY_ERR_SHAPE,
                 "sgd_step", "velocity (2x4x4) has rank 3, expected rank 4");
    EXPECT_ERROR(convoy_sgd_step(rt, &ok, f->foreign, f->y2, f->g2, &task),
                 CONVOY_ERR_INVALID_ARGUMENT, "sgd_step", "param", "another runtime");
    assert_ptr_equal(task, untouched);
    check_unchanged(f);
}

/* A tensor of a destroyed runtime is refused by every training op. */
static void test_detached_tensor(void **state)
{
    (void)state;
    convoy_runtime *a = NULL, *b = NULL;
    assert_int_equal(case_runtime_create(&a), CONVOY_OK);
    assert_int_equal(case_runtime_create(&b), CONVOY_OK);
    const int64_t dims[2] = {2, 3};
    convoy_tensor *gone = NULL, *t = NULL, *u = NULL;
    assert_int_equal(convoy_tensor_create(a, 2, dims, &gone), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(b, 2, dims, &t), CONVOY_OK);
    assert_int_equal(convoy_tensor_create(b, 2, dims, &u), CONVOY_OK);
    convoy_runtime_destroy(a);
    EXPECT_ERROR(convoy_activation_backward(b, CONVOY_ACTIVATION_RELU, gone, t, u, NULL),
                 CONVOY_ERR_INVALID_ARGUMENT, "activation_backward", "output", "detached");
    const convoy_sgd_params p = {0.1f, 0.0f, 0.0f};
    EXPECT_ERROR(convoy_sgd_step(b, &p, t, gone, NULL, NULL), CONVOY_ERR_INVALID_ARGUMENT,
                 "sgd_step", "grad", "detached");
    convoy_tensor_destroy(gone);
    convoy_tensor_destroy(t);
    convoy_tensor_destroy(u);
    convoy_runtime_destroy(b);
}

#define FIXTURE_TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(int argc, char **argv)
{
    int device = case_device_check("test_train_errors", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_conv_bias_act_errors), FIXTURE_TEST(test_activation_backward_errors),
        FIXTURE_TEST(test_bias_backward_errors), FIXTURE_TEST(test_softmax_cross_entropy_errors),
        FIXTURE_TEST(test_sgd_errors),           cmocka_unit_test(test_detached_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
