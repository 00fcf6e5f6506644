/* The training ops a backend offers, as one small function table (the counterpart of the
 * convolution registry of kernels/conv_algo.h for the ops that have one implementation per
 * backend): bias + activation, the activation's gradient, the bias gradient, softmax
 * cross-entropy and the SGD step. cpu/train_cpu.c and cuda/train_cuda.c each define one;
 * the backend object points at it (core/device.h, convoy__backend.train), and
 * runtime/train_api.c calls it from the tasks' run functions, so nothing above the backends
 * names a device.
 *
 * Every entry runs in stream order on native_stream, from a work function (NULL native_stream
 * means "now": run and wait), on buffers the runtime validated: shapes are trusted here. The
 * per-element math is kernels/train_math.h on both backends. Reductions (bias gradient, loss,
 * correct count) are deterministic: fixed-order sums, never atomics on floats. */
#ifndef CONVOY_KERNELS_TRAIN_OPS_H
#define CONVOY_KERNELS_TRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/device.h"
#include "kernels/train_math.h"

struct convoy__train_ops {
    /* data (count, channels, inner) = act(data + bias[channel]), in place; bias NULL: none. */
    convoy_status (*bias_act)(convoy__backend *be, void *native_stream, float *data,
                              const float *bias, int64_t count, int64_t channels, int64_t inner,
                              convoy_activation act);
    /* grad_input = grad_output * act'(output), elementwise over numel entries; grad_input
     * may be grad_output (in place). */
    convoy_status (*act_backward)(convoy__backend *be, void *native_stream, convoy_activation act,
                                  const float *output, const float *grad_output, float *grad_input,
                                  int64_t numel);
    /* grad_bias (channels) = sums of grad (count, channels, inner) over count and inner. */
    convoy_status (*bias_backward)(convoy__backend *be, void *native_stream, const float *grad,
                                   int64_t count, int64_t channels, int64_t inner,
                                   float *grad_bias);
    /* Bytes of device workspace softmax_xent needs beyond its operands (0: none). */
    size_t xent_workspace_bytes;
    /* Loss, gradient and count of one batch. A label that is not an integer in [0, classes)
     * fails with CONVOY_ERR_INVALID_ARGUMENT naming the first such row and its value; the
     * outputs are then unspecified (the task fails, so they are poisoned). workspace holds
     * xent_workspace_bytes bytes (NULL when 0). */
    convoy_status (*softmax_xent)(convoy__backend *be, void *native_stream,
                                  const convoy__xent_args *args, void *workspace);
    /* One SGD step over numel parameters, in place; velocity is NULL when momentum is 0. */
    convoy_status (*sgd)(convoy__backend *be, void *native_stream, const convoy_sgd_params *params,
                         float *param, const float *grad, float *velocity, int64_t numel);
};

/* The message of a bad label, the same on every backend: "labels[3] is 10.5, expected a class
 * index, an integer in [0, 10)". Returns CONVOY_ERR_INVALID_ARGUMENT. */
convoy_status convoy__bad_label(int64_t row, float value, int64_t classes);

#endif /* CONVOY_KERNELS_TRAIN_OPS_H */
