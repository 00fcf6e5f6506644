/* The host backend's training ops (cpu/train_cpu.c), the table kernels/train_ops.h defines. */
#ifndef CONVOY_CPU_TRAIN_CPU_H
#define CONVOY_CPU_TRAIN_CPU_H

#include "kernels/train_ops.h"

extern const convoy__train_ops convoy__cpu_train_ops;

#endif /* CONVOY_CPU_TRAIN_CPU_H */
