/* The per-element math of the training ops, shared by every backend: the CPU implementation
 * (cpu/train_cpu.c) loops over these functions, the CUDA kernels (cuda/train_kernels.cu) are
 * one call of them per element or per row inside a grid-stride loop, and tests/test_cuda_host.c
 * runs the kernels' bodies over their whole grids on the CPU. So the two backends compute each
 * element with the same expression.
 *
 *   bias + activation   y = act(x + bias[m]) over an (N, M, P) tensor
 *   activation gradient dx = dy * act'(y), from the activated output y
 *   bias gradient       db[m] = sum over n and p of dy[n, m, p] (a reduction: the functions
 *                       below give one thread's share in a fixed order)
 *   softmax + cross-entropy, one row at a time: the row's loss, its argmax, and the row of
 *                       (softmax - onehot) / N
 *   SGD step            PyTorch's torch.optim.SGD (dampening 0, no Nesterov)
 *
 * Reductions accumulate in double, in an order fixed by the index alone, never by timing, so
 * every result is reproducible bit for bit on a given backend. */
#ifndef CONVOY_KERNELS_TRAIN_MATH_H
#define CONVOY_KERNELS_TRAIN_MATH_H

#include <math.h>
#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"

/* ---- bias + activation ---------------------------------------------------------------- */

CONVOY_HD static inline float convoy__activate(float value, int act)
{
    /* NaN stays NaN, as in PyTorch's relu: only a comparison that holds replaces it. */
    return act == CONVOY_ACTIVATION_RELU && value <= 0.0f ? 0.0f : value;
}

/* One element: act(value + bias), or act(value) without a bias. */
CONVOY_HD static inline float convoy__bias_act(float value, const float *bias, int64_t channel,
                                               int act)
{
    return convoy__activate(bias ? value + bias[channel] : value, act);
}

/* Element `index` of an (N, M, inner) tensor after adding its channel's bias (bias may be
 * NULL: none) and applying act: the body of the CUDA kernel. */
CONVOY_HD static inline float convoy__bias_act_value(const float *data, const float *bias,
                                                     int64_t channels, int64_t inner, int act,
                                                     int64_t index)
{
    return convoy__bias_act(data[index], bias, (index / inner) % channels, act);
}

/* ---- activation gradient ---------------------------------------------------------------- */

/* The gradient w.r.t. the activation's input at one element, from the activated output y
 * and the gradient dy w.r.t. that output. ReLU passes dy where y > 0: the subgradient 0 at
 * the kink, as PyTorch's threshold_backward takes it. */
CONVOY_HD static inline float convoy__act_grad_value(const float *output, const float *grad_output,
                                                     int act, int64_t index)
{
    if (act == CONVOY_ACTIVATION_RELU)
        return output[index] > 0.0f ? grad_output[index] : 0.0f;
    return grad_output[index];
}

/* ---- bias gradient ---------------------------------------------------------------------- */

/* One thread's share of db[channel] for an (N, M, inner) gradient: the sum, in double and in
 * increasing order, of the entries j = first, first + stride, ... of the channel's N * inner
 * entries taken image by image. The CUDA kernel runs one block per channel with `stride`
 * threads and adds the shares in a fixed tree; the CPU takes first 0 and stride 1. */
CONVOY_HD static inline double convoy__bias_grad_share(const float *grad, int64_t channels,
                                                       int64_t inner, int64_t count,
                                                       int64_t channel, int64_t first,
                                                       int64_t stride)
{
    double sum = 0.0;
    if (inner <= 0)
        return sum;
    /* (n, p) of entry j, advanced by the stride without a division per entry. */
    int64_t n = first / inner, p = first - n * inner;
    const int64_t step_n = stride / inner, step_p = stride - step_n * inner;
    while (n < count) {
        sum += (double)grad[(n * channels + channel) * inner + p];
        n += step_n;
        p += step_p;
        if (p >= inner) {
            p -= inner;
            ++n;
        }
    }
    return sum;
}

/* ---- softmax cross-entropy --------------------------------------------------------------- */

/* Softmax cross-entropy of (rows, classes) logits against labels (rows). */
typedef struct convoy__xent_args {
    const float *logits; /* (rows, classes) */
    const float *labels; /* (rows): class indices held as floats */
    int64_t rows, classes;
    float *loss;        /* (1): the mean loss */
    float *grad_logits; /* (rows, classes): (softmax - onehot) / rows; NULL: not computed */
    float *correct;     /* (1): rows whose first largest logit is the label's; NULL: not counted */
} convoy__xent_args;

/* What one row of logits contributes. */
typedef struct convoy__xent_row_result {
    double loss; /* -log softmax(row)[label] */
    int correct; /* 1 when the first largest logit is the label's */
    int valid;   /* 0 when the label is not an integer in [0, classes): nothing else is set */
} convoy__xent_row_result;

/* 1 when label holds a class index: an integer in [0, classes). NaN fails every comparison. */
CONVOY_HD static inline int convoy__label_valid(float label, int64_t classes)
{
    return label >= 0.0f && (double)label < (double)classes && label == floorf(label);
}

/* The row `row` of (rows, classes) logits with the class in labels[row]: its loss and whether
 * it is classified right, and (when grad is not NULL) its gradient row, (softmax - onehot) *
 * scale with scale = 1 / rows for a mean loss. Softmax in double, shifted by the row's
 * maximum. */
CONVOY_HD static inline convoy__xent_row_result convoy__xent_row(const float *logits,
                                                                 const float *labels,
                                                                 int64_t classes, int64_t row,
                                                                 double scale, float *grad)
{
    convoy__xent_row_result r = {0.0, 0, 0};
    const float label = labels[row];
    if (!convoy__label_valid(label, classes))
        return r;
    const int64_t target = (int64_t)label;
    const float *x = logits + row * classes;
    int64_t best = 0;
    for (int64_t k = 1; k < classes; ++k) {
        if (x[k] > x[best])
            best = k;
    }
    const double shift = (double)x[best];
    double sum = 0.0;
    for (int64_t k = 0; k < classes; ++k)
        sum += exp((double)x[k] - shift);
    const double log_sum = log(sum);
    r.loss = log_sum + shift - (double)x[target];
    r.correct = best == target;
    r.valid = 1;
    if (grad) {
        float *g = grad + row * classes;
        for (int64_t k = 0; k < classes; ++k) {
            double p = exp((double)x[k] - shift - log_sum);
            g[k] = (float)((p - (k == target ? 1.0 : 0.0)) * scale);
        }
    }
    return r;
}

/* The rows a thread (or the whole CPU) handled: their summed loss and correct count, and the
 * first row whose label is not a class index (rows when there is none). */
typedef struct convoy__xent_share {
    double loss;
    int64_t correct;
    int64_t bad_row;
} convoy__xent_share;

/* Rows first, first + stride, ... of the batch, in increasing order; each row's gradient is
 * written as it goes. The CUDA kernel runs one block whose threads take first = their index
 * and stride = the block size, then combine their shares in a fixed tree; the CPU takes
 * first 0 and stride 1. */
CONVOY_HD static inline convoy__xent_share convoy__xent_rows(const convoy__xent_args *a,
                                                             int64_t first, int64_t stride)
{
    convoy__xent_share s = {0.0, 0, a->rows};
    const double scale = 1.0 / (double)a->rows;
    for (int64_t row = first; row < a->rows; row += stride) {
        convoy__xent_row_result r =
            convoy__xent_row(a->logits, a->labels, a->classes, row, scale, a->grad_logits);
        if (!r.valid) {
            if (row < s.bad_row)
                s.bad_row = row;
            continue;
        }
        s.loss += r.loss;
        s.correct += r.correct;
    }
    return s;
}

/* into = into + from: sums add, the first bad row is the smaller. */
CONVOY_HD static inline void convoy__xent_combine(convoy__xent_share *into,
                                                  const convoy__xent_share *from)
{
    into->loss += from->loss;
    into->correct += from->correct;
    if (from->bad_row < into->bad_row)
        into->bad_row = from->bad_row;
}

/* What the CUDA kernel leaves in the task's workspace for the host to read back: the first
 * bad row (rows when none) and its label. */
typedef struct convoy__xent_status {
    int64_t bad_row;
    float bad_value;
} convoy__xent_status;

/* The outputs of a batch from its combined share: the mean loss and the count. */
CONVOY_HD static inline void convoy__xent_finish(const convoy__xent_args *a,
                                                 const convoy__xent_share *total)
{
    a->loss[0] = (float)(total->loss * (1.0 / (double)a->rows));
    if (a->correct)
        a->correct[0] = (float)total->correct;
}

/* ---- fixed-order tree reductions ---------------------------------------------------------- */

/* One level of a block's tree: thread t < half adds the partial of thread t + half. A block
 * of a power-of-two size runs half = size / 2, size / 4, ..., 1 with a barrier after each, so
 * the order of the additions depends on nothing but the block size. */
CONVOY_HD static inline void convoy__tree_level(double *partial, unsigned thread, unsigned half)
{
    if (thread < half)
        partial[thread] += partial[thread + half];
}

CONVOY_HD static inline void convoy__xent_tree_level(convoy__xent_share *partial, unsigned thread,
                                                     unsigned half)
{
    if (thread < half)
        convoy__xent_combine(&partial[thread], &partial[thread + half]);
}

/* ---- SGD --------------------------------------------------------------------------------- */

/* One parameter of torch.optim.SGD's step (dampening 0, no Nesterov), in float as PyTorch
 * computes it: d = grad + weight_decay * param; with momentum, v = momentum * v + d and d = v;
 * param -= lr * d. velocity is not touched when momentum is 0. */
CONVOY_HD static inline void convoy__sgd_update(float *param, const float *grad, float *velocity,
                                                float lr, float momentum, float weight_decay,
                                                int64_t index)
{
    float d = grad[index];
    if (weight_decay != 0.0f)
        d += weight_decay * param[index];
    if (momentum != 0.0f) {
        const float v = momentum * velocity[index] + d;
        velocity[index] = v;
        d = v;
    }
    param[index] -= lr * d;
}

#endif /* CONVOY_KERNELS_TRAIN_MATH_H */
