/* Launchers of the training-op kernels (cuda/train_kernels.cu). C linkage and no CUDA header,
 * as cuda/kernels.h: stream is the cudaStream_t to launch on (never NULL), and each returns
 * CONVOY_OK or, when the launch failed, the CUDA error as convoy_status with the message set.
 * Shapes were validated by the runtime. */
#ifndef CONVOY_CUDA_TRAIN_KERNELS_H
#define CONVOY_CUDA_TRAIN_KERNELS_H

#include <stdint.h>

#include "convoy.h"
#include "kernels/train_math.h"

#ifdef __cplusplus
extern "C" {
#endif

/* data (count, channels, inner) = act(data + bias[channel]), in place; bias may be NULL. */
convoy_status convoy__launch_bias_act(float *data, const float *bias, int64_t count,
                                      int64_t channels, int64_t inner, int act, void *stream);

/* grad_input = grad_output * act'(output) over numel elements; grad_input may be grad_output. */
convoy_status convoy__launch_act_backward(const float *output, const float *grad_output,
                                          float *grad_input, int act, int64_t numel, void *stream);

/* grad_bias (channels) = sums of grad (count, channels, inner) over count and inner: one block
 * per channel, a fixed tree, deterministic. */
convoy_status convoy__launch_bias_grad(const float *grad, int64_t count, int64_t channels,
                                       int64_t inner, float *grad_bias, void *stream);

/* The loss, gradient and count of args in one block, and in *status (device memory) the
 * first row whose label is not a class index (args->rows when none) and its value. */
convoy_status convoy__launch_softmax_xent(const convoy__xent_args *args,
                                          convoy__xent_status *status, void *stream);

/* One SGD step over numel parameters; velocity NULL when momentum is 0. */
convoy_status convoy__launch_sgd(float *param, const float *grad, float *velocity, float lr,
                                 float momentum, float weight_decay, int64_t numel, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_CUDA_TRAIN_KERNELS_H */
