/* The bodies of the training-op CUDA kernels (cuda/train_kernels.cu) run on the CPU over their
 * kernels' whole grids, as the launchers size them, against the CPU implementation
 * (cpu/train_cpu.c) and a double-precision reference. The elementwise kernels walk the
 * grid-stride loop of cuda/launch_config.h and must visit every element once and agree with the
 * CPU bit for bit (the same functions of kernels/train_math.h); the reductions are emulated
 * block by block, thread share by thread share, then level by level of their tree, and must
 * agree with the CPU to rounding and with themselves bit for bit. Needs no GPU and no CUDA
 * header, so it runs in every build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"
#include "cpu/train_cpu.h"
#include "cuda/launch_config.h"
#include "kernels/train_math.h"
#include "kernels/train_ops.h"
#include "conv_cases.h"

/* Every element index thread `thread_` of block `block_` reaches in the grid-stride loop. */
#define FOR_EACH_GRID_INDEX(i, total, blocks)                                                      \
    for (unsigned block_ = 0; block_ < (blocks); ++block_)                                         \
        for (unsigned thread_ = 0; thread_ < CONVOY__THREADS; ++thread_)                           \
            for (int64_t i = convoy__grid_first(block_, CONVOY__THREADS, thread_); i < (total);    \
                 i += convoy__grid_stride(CONVOY__THREADS, (blocks)))

static float *random_floats(uint64_t seed, int64_t count)
{
    case_rng rng;
    case_rng_seed(&rng, seed);
    return case_random_floats(&rng, count);
}

static float *copy_of(const float *src, int64_t count)
{
    float *p = malloc((size_t)(count > 0 ? count : 1) * sizeof *p);
    assert_non_null(p);
    memcpy(p, src, (size_t)count * sizeof *p);
    return p;
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

/* (count, channels, inner) shapes, the last ones larger than one grid-stride pass of a small
 * grid would cover. */
static const int64_t shapes[][3] = {{3, 5, 7}, {1, 1, 1}, {2, 16, 784}, {4, 3, 1}, {0, 3, 4}};
#define SHAPE_COUNT (sizeof shapes / sizeof shapes[0])

static void test_bias_act_body(void **state)
{
    (void)state;
    for (size_t s = 0; s < SHAPE_COUNT; ++s) {
        const int64_t count = shapes[s][0], channels = shapes[s][1], inner = shapes[s][2];
        const int64_t total = count * channels * inner;
        float *data = random_floats(s + 1, total), *bias = random_floats(s + 100, channels);
        for (int with_bias = 0; with_bias < 2; ++with_bias) {
            for (int act = 0; act < 2; ++act) {
                const float *b = with_bias ? bias : NULL;
                float *gpu = copy_of(data, total), *cpu = copy_of(data, total);
                unsigned char *visits = visit_counts(total);
                FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
                {
                    gpu[i] = convoy__bias_act_value(gpu, b, channels, inner, act, i);
                    visits[i]++;
                }
                assert_each_once(visits, total, "bias_act_kernel");
                assert_int_equal(convoy__cpu_train_ops.bias_act(NULL, NULL, cpu, b, count, channels,
                                                                inner, (convoy_activation)act),
                                 CONVOY_OK);
                assert_memory_equal(gpu, cpu, (size_t)total * sizeof(float));
                for (int64_t i = 0; i < total; ++i) {
                    float v = data[i] + (b ? b[(i / inner) % channels] : 0.0f);
                    assert_true(cpu[i] == (act && v <= 0.0f ? 0.0f : v));
                }
                free(gpu);
                free(cpu);
            }
        }
        free(data);
        free(bias);
    }
}

static void test_act_backward_and_sgd_bodies(void **state)
{
    (void)state;
    const int64_t total = 3 * CONVOY__THREADS * 5 + 13;
    float *y = random_floats(1, total), *dy = random_floats(2, total);
    for (int64_t i = 0; i < total; ++i)
        y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    for (int act = 0; act < 2; ++act) {
        float *gpu = copy_of(dy, total), *cpu = copy_of(dy, total);
        unsigned char *visits = visit_counts(total);
        /* In place, as the kernel allows: each element read, then written, by one thread. */
        FOR_EACH_GRID_INDEX(i, total, convoy__blocks_for(total))
        {
            gpu[i] = convoy__act_grad_value(y, gpu, act, i);
            visits[i]++;
        }
        assert_each_once(visits, total, "act_backward_kernel");
        assert_int_equal(convoy__cpu_train_ops.act_backward(NULL, NULL, (convoy_activation)act, y,
                                                            cpu, cpu, total),
                         CONVOY_OK);
        assert_memory_equal(gpu, cpu, (size_t)total * sizeof(float));
        free(gpu);
        free(cpu);
    }
    /* SGD with and without momentum and weight decay, over a grid that must stride. */
    const convoy_sgd_params params[3] = {
        {0.1f, 0.0f, 0.0f}, {0.05f, 0.9f, 5e-4f}, {0.2f, 0.5f, 0.0f}};
    for (int k = 0; k < 3; ++k) {
        const convoy_sgd_params *p = &params[k];
        float *param = random_floats(10 + (uint64_t)k, total), *grad = random_floats(20, total);
        float *velocity = random_floats(30, total);
        float *gp = copy_of(param, total), *gv = copy_of(velocity, total);
        float *cp = copy_of(param, total), *cv = copy_of(velocity, total);
        const unsigned blocks = 3;
        unsigned char *visits = visit_counts(total);
        FOR_EACH_GRID_INDEX(i, total, blocks)
        {
            convoy__sgd_update(gp, grad, p->momentum != 0.0f ? gv : NULL, p->lr, p->momentum,
                               p->weight_decay, i);
            visits[i]++;
        }
        assert_each_once(visits, total, "sgd_kernel");
        assert_int_equal(convoy__cpu_train_ops.sgd(NULL, NULL, p, cp, grad,
                                                   p->momentum != 0.0f ? cv : NULL, total),
                         CONVOY_OK);
        assert_memory_equal(gp, cp, (size_t)total * sizeof(float));
        assert_memory_equal(gv, cv, (size_t)total * sizeof(float));
        if (p->momentum == 0.0f)
            assert_memory_equal(gv, velocity, (size_t)total * sizeof(float));
        free(param);
        free(grad);
        free(velocity);
        free(gp);
        free(gv);
        free(cp);
        free(cv);
    }
    free(y);
    free(dy);
}

/* bias_grad_kernel on the CPU: convoy__reduce_blocks_for(channels) blocks of
 * CONVOY__REDUCE_THREADS threads, block b taking channels b, b + blocks, ...; each thread's
 * share, then the tree. */
static void emulate_bias_grad(const float *grad, int64_t count, int64_t channels, int64_t inner,
                              unsigned blocks, float *grad_bias)
{
    double partial[CONVOY__REDUCE_THREADS];
    for (unsigned b = 0; b < blocks; ++b) {
        for (int64_t m = b; m < channels; m += blocks) {
            for (unsigned t = 0; t < CONVOY__REDUCE_THREADS; ++t)
                partial[t] = convoy__bias_grad_share(grad, channels, inner, count, m, t,
                                                     CONVOY__REDUCE_THREADS);
            for (unsigned half = CONVOY__REDUCE_THREADS / 2; half > 0; half /= 2)
                for (unsigned t = 0; t < CONVOY__REDUCE_THREADS; ++t)
                    convoy__tree_level(partial, t, half);
            grad_bias[m] = (float)partial[0];
        }
    }
}

static void test_bias_grad_reduction(void **state)
{
    (void)state;
    for (size_t s = 0; s < SHAPE_COUNT; ++s) {
        const int64_t count = shapes[s][0], channels = shapes[s][1], inner = shapes[s][2];
        const int64_t total = count * channels * inner;
        float *grad = random_floats(40 + s, total);
        float *gpu = case_nan_floats(channels), *again = case_nan_floats(channels);
        float *cpu = case_nan_floats(channels);
        emulate_bias_grad(grad, count, channels, inner, convoy__reduce_blocks_for(channels), gpu);
        /* Fewer blocks than channels: each block strides over several. */
        emulate_bias_grad(grad, count, channels, inner, 2, again);
        assert_memory_equal(gpu, again, (size_t)channels * sizeof(float));
        assert_int_equal(
            convoy__cpu_train_ops.bias_backward(NULL, NULL, grad, count, channels, inner, cpu),
            CONVOY_OK);
        for (int64_t m = 0; m < channels; ++m) {
            double want = 0.0;
            for (int64_t n = 0; n < count; ++n)
                for (int64_t p = 0; p < inner; ++p)
                    want += grad[(n * channels + m) * inner + p];
            assert_true(fabs(gpu[m] - want) <= 1e-6 * fmax(1.0, fabs(want)));
            assert_true(fabs(cpu[m] - want) <= 1e-6 * fmax(1.0, fabs(want)));
        }
        free(grad);
        free(gpu);
        free(again);
        free(cpu);
    }
}

/* softmax_xent_kernel on the CPU: one block, each thread's rows, the tree, thread 0's finish. */
static convoy__xent_share emulate_xent(const convoy__xent_args *a)
{
    static convoy__xent_share partial[CONVOY__REDUCE_THREADS];
    for (unsigned t = 0; t < CONVOY__REDUCE_THREADS; ++t)
        partial[t] = convoy__xent_rows(a, t, CONVOY__REDUCE_THREADS);
    for (unsigned half = CONVOY__REDUCE_THREADS / 2; half > 0; half /= 2)
        for (unsigned t = 0; t < CONVOY__REDUCE_THREADS; ++t)
            convoy__xent_tree_level(partial, t, half);
    if (partial[0].bad_row == a->rows)
        convoy__xent_finish(a, &partial[0]);
    return partial[0];
}

static void test_softmax_xent_reduction(void **state)
{
    (void)state;
    const int64_t sizes[][2] = {{1, 10}, {37, 10}, {600, 7}, {5, 1}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
        const int64_t rows = sizes[s][0], classes = sizes[s][1], n = rows * classes;
        float *logits = random_floats(50 + s, n);
        for (int64_t i = 0; i < n; ++i)
            logits[i] *= 4.0f;
        float *labels = malloc((size_t)rows * sizeof *labels);
        assert_non_null(labels);
        case_rng rng;
        case_rng_seed(&rng, 60 + s);
        for (int64_t i = 0; i < rows; ++i)
            labels[i] = (float)case_rng_int(&rng, 0, (int)classes - 1);
        float gpu_loss = NAN, gpu_correct = NAN, cpu_loss = NAN, cpu_correct = NAN;
        float *gpu_grad = case_nan_floats(n), *cpu_grad = case_nan_floats(n);
        convoy__xent_args g = {logits, labels, rows, classes, &gpu_loss, gpu_grad, &gpu_correct};
        convoy__xent_args c = {logits, labels, rows, classes, &cpu_loss, cpu_grad, &cpu_correct};
        convoy__xent_share total = emulate_xent(&g);
        assert_int_equal(total.bad_row, rows);
        assert_int_equal(convoy__cpu_train_ops.softmax_xent(NULL, NULL, &c, NULL), CONVOY_OK);
        /* Rows are computed alike; only the order of the loss sum differs. */
        assert_memory_equal(gpu_grad, cpu_grad, (size_t)n * sizeof(float));
        assert_true(gpu_correct == cpu_correct);
        assert_true(fabsf(gpu_loss - cpu_loss) <= 1e-6f * fmaxf(1.0f, fabsf(cpu_loss)));
        /* Two bad labels: the status names the first row, as the CPU's message does. */
        if (rows >= 3) {
            labels[rows - 1] = -2.0f;
            labels[2] = (float)classes;
            total = emulate_xent(&g);
            assert_int_equal(total.bad_row, 2);
            assert_int_equal(convoy__cpu_train_ops.softmax_xent(NULL, NULL, &c, NULL),
                             CONVOY_ERR_INVALID_ARGUMENT);
            assert_non_null(strstr(convoy_last_error_message(), "labels[2]"));
        }
        free(logits);
        free(labels);
        free(gpu_grad);
        free(cpu_grad);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bias_act_body),
        cmocka_unit_test(test_act_backward_and_sgd_bodies),
        cmocka_unit_test(test_bias_grad_reduction),
        cmocka_unit_test(test_softmax_xent_reduction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
