/* The training ops on the CPU (kernels/train_ops.h): loops over the per-element functions of
 * kernels/train_math.h, the same ones the CUDA kernels call. They run on the task's thread
 * (a stream's worker, or the submitting thread inline) and on that thread only: beside the
 * convolutions they are small, and a single thread makes every reduction a plain loop whose
 * order, and so whose bits, never depend on the number of streams or cores. */
#include <stdint.h>

#include "cpu/train_cpu.h"
#include "kernels/train_math.h"
#include "kernels/train_ops.h"

static convoy_status cpu_bias_act(convoy__backend *be, void *native_stream, float *data,
                                  const float *bias, int64_t count, int64_t channels, int64_t inner,
                                  convoy_activation act)
{
    (void)be;
    (void)native_stream;
    /* Image by image and channel by channel, so the channel needs no division per element. */
    for (int64_t n = 0; n < count; ++n) {
        for (int64_t m = 0; m < channels; ++m) {
            float *block = data + (n * channels + m) * inner;
            for (int64_t p = 0; p < inner; ++p)
                block[p] = convoy__bias_act(block[p], bias, m, (int)act);
        }
    }
    return CONVOY_OK;
}

static convoy_status cpu_act_backward(convoy__backend *be, void *native_stream,
                                      convoy_activation act, const float *output,
                                      const float *grad_output, float *grad_input, int64_t numel)
{
    (void)be;
    (void)native_stream;
    for (int64_t i = 0; i < numel; ++i)
        grad_input[i] = convoy__act_grad_value(output, grad_output, (int)act, i);
    return CONVOY_OK;
}

static convoy_status cpu_bias_backward(convoy__backend *be, void *native_stream, const float *grad,
                                       int64_t count, int64_t channels, int64_t inner,
                                       float *grad_bias)
{
    (void)be;
    (void)native_stream;
    for (int64_t m = 0; m < channels; ++m)
        grad_bias[m] = (float)convoy__bias_grad_share(grad, channels, inner, count, m, 0, 1);
    return CONVOY_OK;
}

static convoy_status cpu_softmax_xent(convoy__backend *be, void *native_stream,
                                      const convoy__xent_args *a, void *workspace)
{
    (void)be;
    (void)native_stream;
    (void)workspace;
    convoy__xent_share total = convoy__xent_rows(a, 0, 1);
    if (total.bad_row < a->rows)
        return convoy__bad_label(total.bad_row, a->labels[total.bad_row], a->classes);
    convoy__xent_finish(a, &total);
    return CONVOY_OK;
}

static convoy_status cpu_sgd(convoy__backend *be, void *native_stream,
                             const convoy_sgd_params *params, float *param, const float *grad,
                             float *velocity, int64_t numel)
{
    (void)be;
    (void)native_stream;
    for (int64_t i = 0; i < numel; ++i)
        convoy__sgd_update(param, grad, velocity, params->lr, params->momentum,
                           params->weight_decay, i);
    return CONVOY_OK;
}

const convoy__train_ops convoy__cpu_train_ops = {
    .bias_act = cpu_bias_act,
    .act_backward = cpu_act_backward,
    .bias_backward = cpu_bias_backward,
    .xent_workspace_bytes = 0,
    .softmax_xent = cpu_softmax_xent,
    .sgd = cpu_sgd,
};
