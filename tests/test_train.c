/* The training ops through the public API, on the backend the command line names
 * (device=cpu|cuda, streams=N, exclude=NAMES): each op against a double-precision reference on
 * seeded random data (never zeros), the loss gradient w.r.t. the logits and the parameter
 * gradients of a tiny conv + bias + ReLU + cross-entropy network against central differences
 * of the loss the library computes, a bad label failing its task, and the ops ordered by the
 * tensors they touch on two streams. */
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

/* ---- helpers ----------------------------------------------------------------------------- */

static int64_t numel_of(int rank, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < rank; ++i)
        n *= dims[i];
    return n;
}

static void check(convoy_status status, const char *what)
{
    if (status != CONVOY_OK)
        fail_msg("%s: %s: %s", what, convoy_status_name(status), convoy_last_error_message());
}

static void upload(convoy_runtime *rt, convoy_tensor *t, const float *data);

/* A tensor of the runtime, uploaded from data (and waited for) when data is not NULL. */
static convoy_tensor *tensor(convoy_runtime *rt, int rank, const int64_t *dims, const float *data)
{
    convoy_tensor *t = NULL;
    check(convoy_tensor_create(rt, rank, dims, &t), "tensor_create");
    if (data)
        upload(rt, t, data);
    return t;
}

/* Uploads data into t and waits, so the caller may change or free data at once. */
static void upload(convoy_runtime *rt, convoy_tensor *t, const float *data)
{
    int64_t dims[CONVOY_MAX_DIMS];
    for (int i = 0; i < convoy_tensor_ndim(t); ++i)
        dims[i] = convoy_tensor_dim(t, i);
    convoy_task *task = NULL;
    check(convoy_upload(rt, t, data, (size_t)numel_of(convoy_tensor_ndim(t), dims), &task),
          "upload");
    check(convoy_task_wait(task), "upload wait");
    convoy_task_release(task);
}

/* Downloads t into out and waits: every task before it has run. */
static void fetch(convoy_runtime *rt, convoy_tensor *t, float *out)
{
    int64_t dims[CONVOY_MAX_DIMS];
    for (int i = 0; i < convoy_tensor_ndim(t); ++i)
        dims[i] = convoy_tensor_dim(t, i);
    convoy_task *task = NULL;
    check(convoy_download(rt, t, out, (size_t)numel_of(convoy_tensor_ndim(t), dims), &task),
          "download");
    check(convoy_task_wait(task), "download wait");
    convoy_task_release(task);
}

static float *random_floats(uint64_t seed, int64_t count, float scale)
{
    case_rng rng;
    case_rng_seed(&rng, seed);
    float *p = case_random_floats(&rng, count);
    for (int64_t i = 0; i < count; ++i)
        p[i] *= scale;
    return p;
}

static double *doubles(int64_t count)
{
    double *p = calloc((size_t)(count > 0 ? count : 1), sizeof *p);
    assert_non_null(p);
    return p;
}

/* ---- conv + bias + activation ------------------------------------------------------------ */

typedef struct epilogue_case {
    int nd;
    int64_t in[5], filt[5];
    int64_t groups, stride, pad;
    int flip;
} epilogue_case;

static void check_bias_act(convoy_runtime *rt, const epilogue_case *e, int with_bias,
                           convoy_activation act, uint64_t seed)
{
    convoy_conv_params p = case_params(e->nd, CONVOY_BORDER_EXPLICIT, NULL, NULL);
    for (int a = 0; a < e->nd; ++a) {
        p.stride[a] = e->stride;
        p.pad_before[a] = p.pad_after[a] = e->pad;
    }
    p.groups = e->groups;
    p.flip = e->flip;
    conv_case c;
    assert_true(case_init(&c, &p, e->in, e->filt));
    const int rank = e->nd + 2;
    const int64_t nx = numel_of(rank, c.in), nw = numel_of(rank, c.filt);
    const int64_t ny = numel_of(rank, c.out), m = c.filt[0], inner = ny / (c.out[0] * m);
    float *x = random_floats(seed, nx, 1.0f), *w = random_floats(seed + 1, nw, 1.0f);
    float *b = random_floats(seed + 2, m, 2.0f), *got = case_nan_floats(ny);
    double *want = doubles(ny);
    ref_conv_forward(&c.geom, x, w, want);
    for (int64_t i = 0; i < ny; ++i) {
        double v = want[i] + (with_bias ? (double)b[(i / inner) % m] : 0.0);
        want[i] = act == CONVOY_ACTIVATION_RELU && v <= 0.0 ? 0.0 : v;
    }
    const int64_t bias_dims[1] = {m};
    convoy_tensor *tx = tensor(rt, rank, c.in, x), *tw = tensor(rt, rank, c.filt, w);
    convoy_tensor *tb = tensor(rt, 1, bias_dims, b), *ty = tensor(rt, rank, c.out, got);
    check(convoy_conv_forward_bias_act(rt, &p, tx, tw, with_bias ? tb : NULL, act, ty, NULL),
          "conv_forward_bias_act");
    fetch(rt, ty, got);
    char label[640];
    snprintf(label, sizeof label, "%s bias %d act %d", c.label, with_bias, (int)act);
    assert_true(case_compare(label, got, want, ny, 1e-5));
    if (!with_bias && act == CONVOY_ACTIVATION_NONE) {
        /* No epilogue at all is convoy_conv_forward, bit for bit. */
        float *plain = case_nan_floats(ny);
        check(convoy_conv_forward(rt, &p, tx, tw, ty, NULL), "conv_forward");
        fetch(rt, ty, plain);
        assert_memory_equal(plain, got, (size_t)ny * sizeof(float));
        free(plain);
    }
    convoy_tensor_destroy(tx);
    convoy_tensor_destroy(tw);
    convoy_tensor_destroy(tb);
    convoy_tensor_destroy(ty);
    free(x);
    free(w);
    free(b);
    free(got);
    free(want);
}

static void test_conv_bias_act(void **state)
{
    convoy_runtime *rt = *state;
    static const epilogue_case cases[] = {
        {2, {2, 3, 7, 6}, {4, 3, 3, 3}, 1, 1, 1, 0},
        {2, {3, 4, 9, 9}, {6, 2, 3, 3}, 2, 2, 1, 1},
        {2, {2, 1, 28, 28}, {16, 1, 3, 3}, 1, 1, 1, 0},
        {2, {2, 16, 7, 7}, {10, 16, 7, 7}, 1, 1, 0, 0},
        {3, {2, 2, 4, 5, 5}, {3, 2, 3, 3, 3}, 1, 1, 1, 1},
    };
    uint64_t seed = 100;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        for (int bias = 0; bias < 2; ++bias) {
            check_bias_act(rt, &cases[i], bias, CONVOY_ACTIVATION_RELU, seed++);
            check_bias_act(rt, &cases[i], bias, CONVOY_ACTIVATION_NONE, seed++);
        }
    }
}

/* ---- activation gradient ----------------------------------------------------------------- */

static void test_activation_backward(void **state)
{
    convoy_runtime *rt = *state;
    const int64_t dims[4] = {3, 4, 5, 6};
    const int64_t n = numel_of(4, dims);
    float *y = random_floats(7, n, 1.0f), *dy = random_floats(8, n, 1.0f);
    for (int64_t i = 0; i < n; ++i)
        y[i] = y[i] > 0.0f ? y[i] : 0.0f; /* an activated output: about half zeros */
    float *got = case_nan_floats(n);
    convoy_tensor *ty = tensor(rt, 4, dims, y), *tdy = tensor(rt, 4, dims, dy);
    convoy_tensor *tdx = tensor(rt, 4, dims, NULL);
    for (int act = 0; act < 2; ++act) {
        check(convoy_activation_backward(rt, (convoy_activation)act, ty, tdy, tdx, NULL),
              "activation_backward");
        fetch(rt, tdx, got);
        for (int64_t i = 0; i < n; ++i) {
            float want = act == CONVOY_ACTIVATION_RELU && !(y[i] > 0.0f) ? 0.0f : dy[i];
            if (got[i] != want)
                fail_msg("act %d element %lld: %g, expected %g", act, (long long)i, (double)got[i],
                         (double)want);
        }
    }
    /* In place: grad_input is grad_output. */
    check(convoy_activation_backward(rt, CONVOY_ACTIVATION_RELU, ty, tdy, tdy, NULL),
          "activation_backward in place");
    fetch(rt, tdy, got);
    for (int64_t i = 0; i < n; ++i)
        assert_true(got[i] == (y[i] > 0.0f ? dy[i] : 0.0f));
    convoy_tensor_destroy(ty);
    convoy_tensor_destroy(tdy);
    convoy_tensor_destroy(tdx);
    free(y);
    free(dy);
    free(got);
}

/* ---- bias gradient ----------------------------------------------------------------------- */

static void check_bias_backward(convoy_runtime *rt, int rank, const int64_t *dims, uint64_t seed)
{
    const int64_t n = numel_of(rank, dims), m = dims[1];
    const int64_t inner = m ? n / (dims[0] * m) : 0;
    float *g = random_floats(seed, n, 1.0f), *got = case_nan_floats(m);
    double *want = doubles(m);
    for (int64_t i = 0; i < n; ++i)
        want[(i / inner) % m] += g[i];
    const int64_t bias_dims[1] = {m};
    convoy_tensor *tg = tensor(rt, rank, dims, g), *tb = tensor(rt, 1, bias_dims, NULL);
    check(convoy_bias_backward(rt, tg, tb, NULL), "bias_backward");
    fetch(rt, tb, got);
    assert_true(case_compare("bias_backward", got, want, m, 1e-6));
    convoy_tensor_destroy(tg);
    convoy_tensor_destroy(tb);
    free(g);
    free(got);
    free(want);
}

static void test_bias_backward(void **state)
{
    convoy_runtime *rt = *state;
    const int64_t d4[4] = {3, 5, 4, 6}, d2[2] = {9, 7}, d5[5] = {2, 3, 2, 3, 4};
    const int64_t big[4] = {8, 16, 28, 28}, empty[4] = {0, 4, 3, 3};
    check_bias_backward(rt, 4, d4, 21);
    check_bias_backward(rt, 2, d2, 22);
    check_bias_backward(rt, 5, d5, 23);
    check_bias_backward(rt, 4, big, 24);
    /* An empty batch sums nothing: zeros. */
    const int64_t four[1] = {4};
    float got[4] = {1, 2, 3, 4};
    convoy_tensor *tg = tensor(rt, 4, empty, NULL), *tb = tensor(rt, 1, four, got);
    check(convoy_bias_backward(rt, tg, tb, NULL), "bias_backward of an empty batch");
    fetch(rt, tb, got);
    for (int i = 0; i < 4; ++i)
        assert_true(got[i] == 0.0f);
    convoy_tensor_destroy(tg);
    convoy_tensor_destroy(tb);
}

/* ---- softmax cross-entropy --------------------------------------------------------------- */

typedef struct xent_reference {
    double loss;
    int64_t correct;
    double *grad; /* (rows, classes) */
} xent_reference;

static xent_reference xent_ref(const float *logits, const float *labels, int64_t rows,
                               int64_t classes)
{
    xent_reference r = {0.0, 0, doubles(rows * classes)};
    for (int64_t i = 0; i < rows; ++i) {
        const float *x = logits + i * classes;
        int64_t best = 0;
        double max = x[0];
        for (int64_t k = 1; k < classes; ++k) {
            if (x[k] > x[best])
                best = k;
            max = fmax(max, x[k]);
        }
        double sum = 0.0;
        for (int64_t k = 0; k < classes; ++k)
            sum += exp((double)x[k] - max);
        const int64_t label = (int64_t)labels[i];
        r.loss += log(sum) + max - x[label];
        r.correct += best == label;
        for (int64_t k = 0; k < classes; ++k)
            r.grad[i * classes + k] =
                (exp((double)x[k] - max) / sum - (k == label ? 1.0 : 0.0)) / (double)rows;
    }
    r.loss /= (double)rows;
    return r;
}

static float *random_labels(uint64_t seed, int64_t rows, int64_t classes)
{
    case_rng rng;
    case_rng_seed(&rng, seed);
    float *labels = malloc((size_t)rows * sizeof *labels);
    assert_non_null(labels);
    for (int64_t i = 0; i < rows; ++i)
        labels[i] = (float)case_rng_int(&rng, 0, (int)classes - 1);
    return labels;
}

static void check_xent(convoy_runtime *rt, int rank, int64_t rows, int64_t classes, int outputs,
                       uint64_t seed)
{
    int64_t dims[5] = {rows, classes, 1, 1, 1};
    const int64_t n = rows * classes;
    float *logits = random_floats(seed, n, 6.0f), *labels = random_labels(seed + 1, rows, classes);
    /* A few rows whose logits are huge: softmax must not overflow. */
    for (int64_t k = 0; k < classes && rows > 2; ++k)
        logits[2 * classes + k] += 500.0f;
    xent_reference want = xent_ref(logits, labels, rows, classes);
    const int64_t one[1] = {1}, label_dims[1] = {rows};
    convoy_tensor *tx = tensor(rt, rank, dims, logits), *tl = tensor(rt, 1, label_dims, labels);
    convoy_tensor *tloss = tensor(rt, 1, one, NULL), *tc = tensor(rt, 1, one, NULL);
    convoy_tensor *tg = tensor(rt, rank, dims, NULL);
    check(convoy_softmax_cross_entropy(rt, tx, tl, tloss, outputs ? tg : NULL, outputs ? tc : NULL,
                                       NULL),
          "softmax_cross_entropy");
    float loss = NAN, correct = NAN, *grad = case_nan_floats(n);
    fetch(rt, tloss, &loss);
    double want_loss[1] = {want.loss};
    assert_true(case_compare("loss", &loss, want_loss, 1, 1e-6));
    if (outputs) {
        fetch(rt, tc, &correct);
        assert_true(correct == (float)want.correct);
        fetch(rt, tg, grad);
        assert_true(case_compare("grad_logits", grad, want.grad, n, 1e-6));
    }
    convoy_tensor_destroy(tx);
    convoy_tensor_destroy(tl);
    convoy_tensor_destroy(tloss);
    convoy_tensor_destroy(tc);
    convoy_tensor_destroy(tg);
    free(logits);
    free(labels);
    free(grad);
    free(want.grad);
}

static void test_softmax_cross_entropy(void **state)
{
    convoy_runtime *rt = *state;
    check_xent(rt, 2, 37, 10, 1, 31);
    check_xent(rt, 4, 300, 10, 1, 32); /* more rows than a CUDA block has threads */
    check_xent(rt, 5, 5, 3, 1, 33);
    check_xent(rt, 2, 1, 1, 1, 34); /* one class: loss 0 */
    check_xent(rt, 2, 16, 7, 0, 35);
}

/* d loss / d logits by central differences of the loss the library computes. */
static void test_cross_entropy_gradient_fd(void **state)
{
    convoy_runtime *rt = *state;
    const int64_t rows = 4, classes = 5, n = rows * classes;
    const int64_t dims[2] = {rows, classes}, one[1] = {1}, label_dims[1] = {rows};
    float *logits = random_floats(41, n, 2.0f), *labels = random_labels(42, rows, classes);
    float *grad = case_nan_floats(n);
    convoy_tensor *tx = tensor(rt, 2, dims, logits), *tl = tensor(rt, 1, label_dims, labels);
    convoy_tensor *tloss = tensor(rt, 1, one, NULL), *tg = tensor(rt, 2, dims, NULL);
    check(convoy_softmax_cross_entropy(rt, tx, tl, tloss, tg, NULL, NULL), "softmax_xent");
    fetch(rt, tg, grad);
    const float h = 1e-2f;
    for (int64_t i = 0; i < n; ++i) {
        float loss[2];
        for (int side = 0; side < 2; ++side) {
            const float saved = logits[i];
            logits[i] = saved + (side ? -h : h);
            upload(rt, tx, logits);
            check(convoy_softmax_cross_entropy(rt, tx, tl, tloss, NULL, NULL, NULL),
                  "softmax_xent");
            fetch(rt, tloss, &loss[side]);
            logits[i] = saved;
        }
        const double fd = ((double)loss[0] - (double)loss[1]) / (2.0 * h);
        if (fabs(fd - grad[i]) > 1e-4 + 1e-3 * fabs(fd))
            fail_msg("logit %lld: gradient %g, central difference %g", (long long)i,
                     (double)grad[i], fd);
    }
    convoy_tensor_destroy(tx);
    convoy_tensor_destroy(tl);
    convoy_tensor_destroy(tloss);
    convoy_tensor_destroy(tg);
    free(logits);
    free(labels);
    free(grad);
}

/* A label that is not a class index fails the task (not the submit), naming the row and the
 * value; what the task would have written is poisoned until written again. */
static void test_bad_label_fails_task(void **state)
{
    convoy_runtime *rt = *state;
    const int64_t dims[2] = {4, 10}, one[1] = {1}, label_dims[1] = {4};
    float *logits = random_floats(51, 40, 1.0f);
    convoy_tensor *tx = tensor(rt, 2, dims, logits), *tl = tensor(rt, 1, label_dims, NULL);
    convoy_tensor *tloss = tensor(rt, 1, one, NULL), *tg = tensor(rt, 2, dims, NULL);
    static const struct {
        float labels[4];
        const char *words[3];
    } bad[] = {
        {{0, 10.5f, 2, -1}, {"labels[1] is 10.5", "[0, 10)", NULL}},
        {{3, 2, 1, 10}, {"labels[3] is 10", "integer", NULL}},
        {{-1, 2, 3, 4}, {"labels[0] is -1", NULL, NULL}},
        {{0, 1, 2.25f, 3}, {"labels[2] is 2.25", NULL, NULL}},
        {{0, NAN, 2, 3}, {"labels[1] is nan", NULL, NULL}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        upload(rt, tl, bad[i].labels);
        convoy_task *task = NULL, *after = NULL;
        check(convoy_softmax_cross_entropy(rt, tx, tl, tloss, tg, NULL, &task), "submit");
        convoy_status status = convoy_task_wait(task);
        const char *words[4] = {"softmax_xent", bad[i].words[0], bad[i].words[1], NULL};
        assert_true(case_failure_ok("bad label", status, CONVOY_ERR_INVALID_ARGUMENT, words));
        convoy_task_release(task);
        float loss = 0.0f;
        check(convoy_download(rt, tloss, &loss, 1, &after), "download");
        assert_int_equal(convoy_task_wait(after), CONVOY_ERR_DEPENDENCY_FAILED);
        convoy_task_release(after);
        /* The failure is reported once more, by the synchronize after it. */
        assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_ERR_INVALID_ARGUMENT);
    }
    /* Good labels write the outputs again. */
    const float good[4] = {0, 9, 3, 5};
    upload(rt, tl, good);
    check(convoy_softmax_cross_entropy(rt, tx, tl, tloss, tg, NULL, NULL), "softmax_xent");
    float loss = NAN;
    fetch(rt, tloss, &loss);
    assert_true(isfinite(loss) && loss > 0.0f);
    convoy_tensor_destroy(tx);
    convoy_tensor_destroy(tl);
    convoy_tensor_destroy(tloss);
    convoy_tensor_destroy(tg);
    free(logits);
}

/* ---- SGD --------------------------------------------------------------------------------- */

static void check_sgd(convoy_runtime *rt, float lr, float momentum, float weight_decay,
                      uint64_t seed)
{
    const int64_t dims[3] = {5, 7, 3}, n = 105;
    float *param = random_floats(seed, n, 1.0f), *velocity = calloc(n, sizeof(float));
    double *want = doubles(n), *v = doubles(n);
    assert_non_null(velocity);
    for (int64_t i = 0; i < n; ++i)
        want[i] = param[i];
    convoy_tensor *tp = tensor(rt, 3, dims, param), *tv = tensor(rt, 3, dims, velocity);
    convoy_tensor *tg = tensor(rt, 3, dims, NULL);
    const convoy_sgd_params params = {lr, momentum, weight_decay};
    for (int step = 0; step < 4; ++step) {
        float *grad = random_floats(seed + 10 + (uint64_t)step, n, 1.0f);
        upload(rt, tg, grad);
        check(convoy_sgd_step(rt, &params, tp, tg, momentum != 0.0f ? tv : NULL, NULL), "sgd");
        /* Upload the next gradient only after the step read this one: fetch waits. */
        fetch(rt, tp, param);
        for (int64_t i = 0; i < n; ++i) {
            double d = (double)grad[i] + (double)weight_decay * want[i];
            if (momentum != 0.0f) {
                v[i] = (double)momentum * v[i] + d;
                d = v[i];
            }
            want[i] -= (double)lr * d;
        }
        free(grad);
        char label[64];
        snprintf(label, sizeof label, "sgd step %d", step);
        assert_true(case_compare(label, param, want, n, 1e-5));
    }
    if (momentum != 0.0f) {
        fetch(rt, tv, velocity);
        assert_true(case_compare("velocity", velocity, v, n, 1e-5));
    }
    convoy_tensor_destroy(tp);
    convoy_tensor_destroy(tv);
    convoy_tensor_destroy(tg);
    free(param);
    free(velocity);
    free(want);
    free(v);
}

static void test_sgd(void **state)
{
    convoy_runtime *rt = *state;
    check_sgd(rt, 0.1f, 0.0f, 0.0f, 61);
    check_sgd(rt, 0.05f, 0.9f, 0.0f, 62);
    check_sgd(rt, 0.05f, 0.9f, 5e-4f, 63);
    check_sgd(rt, 0.2f, 0.0f, 1e-2f, 64);
    convoy_sgd_params p = {-1, -1, -1};
    check(convoy_sgd_params_init(&p), "sgd_params_init");
    assert_true(p.lr == 0.01f && p.momentum == 0.0f && p.weight_decay == 0.0f);
}

/* ---- a tiny network's parameter gradients against central differences -------------------- */

/* x (2, 2, 6, 6) -> conv 3x3 half, 3 channels, bias, ReLU -> a1 (2, 3, 6, 6) -> conv 6x6
 * valid, 4 classes, bias -> logits (2, 4, 1, 1) -> softmax cross-entropy with labels. */
typedef struct tiny_net {
    convoy_runtime *rt;
    convoy_conv_params p1, p2;
    convoy_tensor *x, *labels, *a1, *logits, *loss, *grad_logits, *grad_a1;
    convoy_tensor *param[4], *grad[4]; /* w1, b1, w2, b2 */
    float *host[4];
    int64_t count[4];
} tiny_net;

static float tiny_loss(tiny_net *t, float *a1)
{
    check(convoy_conv_forward_bias_act(t->rt, &t->p1, t->x, t->param[0], t->param[1],
                                       CONVOY_ACTIVATION_RELU, t->a1, NULL),
          "layer 1");
    check(convoy_conv_forward_bias_act(t->rt, &t->p2, t->a1, t->param[2], t->param[3],
                                       CONVOY_ACTIVATION_NONE, t->logits, NULL),
          "layer 2");
    check(convoy_softmax_cross_entropy(t->rt, t->logits, t->labels, t->loss, t->grad_logits, NULL,
                                       NULL),
          "loss");
    float loss = NAN;
    fetch(t->rt, t->loss, &loss);
    fetch(t->rt, t->a1, a1);
    return loss;
}

static void tiny_backward(tiny_net *t)
{
    convoy_runtime *rt = t->rt;
    check(convoy_conv_backward_filter(rt, &t->p2, t->a1, t->grad_logits, t->grad[2], NULL), "gw2");
    check(convoy_bias_backward(rt, t->grad_logits, t->grad[3], NULL), "gb2");
    check(convoy_conv_backward_data(rt, &t->p2, t->param[2], t->grad_logits, t->grad_a1, NULL),
          "ga1");
    check(
        convoy_activation_backward(rt, CONVOY_ACTIVATION_RELU, t->a1, t->grad_a1, t->grad_a1, NULL),
        "relu");
    check(convoy_conv_backward_filter(rt, &t->p1, t->x, t->grad_a1, t->grad[0], NULL), "gw1");
    check(convoy_bias_backward(rt, t->grad_a1, t->grad[1], NULL), "gb1");
}

static void test_network_gradients_fd(void **state)
{
    convoy_runtime *rt = *state;
    tiny_net t;
    memset(&t, 0, sizeof t);
    t.rt = rt;
    t.p1 = case_params(2, CONVOY_BORDER_HALF, NULL, NULL);
    t.p1.flip = 0;
    t.p2 = case_params(2, CONVOY_BORDER_VALID, NULL, NULL);
    const int64_t xd[4] = {2, 2, 6, 6}, ad[4] = {2, 3, 6, 6}, ld[4] = {2, 4, 1, 1};
    const int64_t one[1] = {1}, two[1] = {2};
    const int64_t pd[4][4] = {{3, 2, 3, 3}, {3}, {4, 3, 6, 6}, {4}};
    const int prank[4] = {4, 1, 4, 1};
    const float labels[2] = {1, 3};
    float *x = random_floats(71, 144, 1.0f);
    t.x = tensor(rt, 4, xd, x);
    t.labels = tensor(rt, 1, two, labels);
    t.a1 = tensor(rt, 4, ad, NULL);
    t.grad_a1 = tensor(rt, 4, ad, NULL);
    t.logits = tensor(rt, 4, ld, NULL);
    t.grad_logits = tensor(rt, 4, ld, NULL);
    t.loss = tensor(rt, 1, one, NULL);
    const float scale[4] = {0.5f, 0.2f, 0.3f, 0.2f};
    for (int i = 0; i < 4; ++i) {
        t.count[i] = numel_of(prank[i], pd[i]);
        t.host[i] = random_floats(72 + (uint64_t)i, t.count[i], scale[i]);
        t.param[i] = tensor(rt, prank[i], pd[i], t.host[i]);
        t.grad[i] = tensor(rt, prank[i], pd[i], NULL);
    }
    const int64_t na = numel_of(4, ad);
    float *a_base = case_nan_floats(na), *a_side = case_nan_floats(na);
    (void)tiny_loss(&t, a_base);
    tiny_backward(&t);
    const float h = 2e-3f;
    int compared = 0, skipped = 0;
    for (int i = 0; i < 4; ++i) {
        float *grad = case_nan_floats(t.count[i]);
        fetch(rt, t.grad[i], grad);
        for (int64_t j = 0; j < t.count[i]; ++j) {
            float loss[2];
            int kink = 0;
            for (int side = 0; side < 2; ++side) {
                const float saved = t.host[i][j];
                t.host[i][j] = saved + (side ? -h : h);
                upload(rt, t.param[i], t.host[i]);
                loss[side] = tiny_loss(&t, a_side);
                t.host[i][j] = saved;
                for (int64_t k = 0; k < na; ++k)
                    kink |= (a_side[k] > 0.0f) != (a_base[k] > 0.0f);
            }
            upload(rt, t.param[i], t.host[i]);
            if (kink) {
                /* A pre-activation crossed zero: the loss is not smooth over the step. */
                ++skipped;
                continue;
            }
            ++compared;
            const double fd = ((double)loss[0] - (double)loss[1]) / (2.0 * h);
            if (fabs(fd - grad[j]) > 3e-4 + 2e-2 * fabs(fd))
                fail_msg("parameter %d element %lld: gradient %g, central difference %g", i,
                         (long long)j, (double)grad[j], fd);
        }
        free(grad);
    }
    printf("  network gradients: %d compared with central differences, %d skipped at a kink\n",
           compared, skipped);
    assert_true(skipped * 10 < compared);
    for (int i = 0; i < 4; ++i) {
        convoy_tensor_destroy(t.param[i]);
        convoy_tensor_destroy(t.grad[i]);
        free(t.host[i]);
    }
    convoy_tensor_destroy(t.x);
    convoy_tensor_destroy(t.labels);
    convoy_tensor_destroy(t.a1);
    convoy_tensor_destroy(t.grad_a1);
    convoy_tensor_destroy(t.logits);
    convoy_tensor_destroy(t.grad_logits);
    convoy_tensor_destroy(t.loss);
    free(x);
    free(a_base);
    free(a_side);
}

/* ---- ordering on two streams ------------------------------------------------------------- */

/* Steps that only come out right in submission order, on a runtime with two compute streams:
 * each step uploads a gradient into one of two alternating tensors (write after the read two
 * steps before), masks it in place by a ReLU gradient (read-modify-write), folds it into a
 * bias gradient, and takes an SGD step with momentum (read after write). */
static void test_ordering_two_streams(void **state)
{
    (void)state;
    convoy_options o;
    case_options(&o);
    o.streams = 2;
    convoy_runtime *rt = NULL;
    check(convoy_runtime_create(&o, &rt), "runtime_create with 2 streams");
    enum { STEPS = 12 };
    const int64_t dims[4] = {2, 3, 4, 4}, n = 96, bdims[1] = {3};
    float *mask = random_floats(81, n, 1.0f), *param = random_floats(82, n, 1.0f);
    float *zeros = calloc(n, sizeof(float)), *grads[STEPS];
    assert_non_null(zeros);
    for (int s = 0; s < STEPS; ++s)
        grads[s] = random_floats(83 + (uint64_t)s, n, 1.0f);
    convoy_tensor *tmask = tensor(rt, 4, dims, mask), *tp = tensor(rt, 4, dims, param);
    convoy_tensor *tv = tensor(rt, 4, dims, zeros), *tb = tensor(rt, 1, bdims, NULL);
    convoy_tensor *tg[2] = {tensor(rt, 4, dims, NULL), tensor(rt, 4, dims, NULL)};
    const convoy_sgd_params params = {0.05f, 0.9f, 1e-3f};
    for (int s = 0; s < STEPS; ++s) {
        convoy_tensor *g = tg[s % 2];
        check(convoy_upload(rt, g, grads[s], (size_t)n, NULL), "upload");
        check(convoy_activation_backward(rt, CONVOY_ACTIVATION_RELU, tmask, g, g, NULL), "mask");
        check(convoy_bias_backward(rt, g, tb, NULL), "bias");
        check(convoy_sgd_step(rt, &params, tp, g, tv, NULL), "sgd");
    }
    float *got = case_nan_floats(n), bias[3];
    fetch(rt, tp, got);
    fetch(rt, tb, bias);
    /* The same steps one at a time on the host. */
    double *want = doubles(n), *v = doubles(n), want_bias[3] = {0, 0, 0};
    for (int64_t i = 0; i < n; ++i)
        want[i] = param[i];
    for (int s = 0; s < STEPS; ++s) {
        for (int c = 0; c < 3; ++c)
            want_bias[c] = 0.0;
        for (int64_t i = 0; i < n; ++i) {
            const double g = mask[i] > 0.0f ? grads[s][i] : 0.0;
            want_bias[(i / 16) % 3] += g;
            v[i] = 0.9 * v[i] + g + 1e-3 * want[i];
            want[i] -= 0.05 * v[i];
        }
    }
    assert_true(case_compare("param after the steps", got, want, n, 1e-5));
    assert_true(case_compare("last bias gradient", bias, want_bias, 3, 1e-6));
    convoy_runtime_destroy(rt);
    convoy_tensor_destroy(tmask);
    convoy_tensor_destroy(tp);
    convoy_tensor_destroy(tv);
    convoy_tensor_destroy(tb);
    convoy_tensor_destroy(tg[0]);
    convoy_tensor_destroy(tg[1]);
    for (int s = 0; s < STEPS; ++s)
        free(grads[s]);
    free(mask);
    free(param);
    free(zeros);
    free(got);
    free(want);
    free(v);
}

#define RUNTIME_TEST(fn) cmocka_unit_test_setup_teardown(fn, case_setup, case_teardown)

int main(int argc, char **argv)
{
    int device = case_device_check("test_train", argc, argv);
    if (device != 0)
        return device;
    const struct CMUnitTest tests[] = {
        RUNTIME_TEST(test_conv_bias_act),
        RUNTIME_TEST(test_activation_backward),
        RUNTIME_TEST(test_bias_backward),
        RUNTIME_TEST(test_softmax_cross_entropy),
        RUNTIME_TEST(test_cross_entropy_gradient_fd),
        RUNTIME_TEST(test_bad_label_fails_task),
        RUNTIME_TEST(test_sgd),
        RUNTIME_TEST(test_network_gradients_fd),
        cmocka_unit_test(test_ordering_two_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
