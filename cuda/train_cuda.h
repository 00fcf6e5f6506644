/* The CUDA backend's training ops (cuda/train_cuda.c), the table kernels/train_ops.h
 * defines. Needs no CUDA header. */
#ifndef CONVOY_CUDA_TRAIN_CUDA_H
#define CONVOY_CUDA_TRAIN_CUDA_H

#include "kernels/train_ops.h"

extern const convoy__train_ops convoy__cuda_train_ops;

#endif /* CONVOY_CUDA_TRAIN_CUDA_H */
