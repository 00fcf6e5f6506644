/* Creating the host (CPU) backend: worker-thread streams, host events and
 * aligned host memory, with convolutions run by cpu/conv_*.c. */
#ifndef CONVOY_CPU_HOST_BACKEND_H
#define CONVOY_CPU_HOST_BACKEND_H

#include "convoy.h"
#include "core/conv_geometry.h"
#include "core/device.h"
#include "kernels/conv_algo.h"

typedef struct convoy__host_config {
    int blas_threads; /* OpenBLAS threads for each task; 0 = leave OpenBLAS's default */
    const char *note; /* appended to describe(), e.g. why CUDA was not used; may be NULL */
} convoy__host_config;

/* The host backend's convolution algorithms (1x1, depthwise, winograd, onednn, gemm,
 * direct). */
extern const convoy__conv_registry convoy__host_conv_registry;

convoy_status convoy__host_backend_create(const convoy__host_config *config, convoy__backend **out);

/* The threads one task of a host backend computes with: OpenBLAS's count per task, which the
 * oneDNN convolutions use for OpenMP too. */
int convoy__host_backend_threads(convoy__backend *be);

/* The OpenMP threads one convolution runs on (oneDNN's and the depthwise stencils): the
 * backend's threads per task, or one when the convolution is too small to gain from more. */
int convoy__host_conv_threads(convoy__backend *be, const convoy__conv_geom *g);

#endif /* CONVOY_CPU_HOST_BACKEND_H */
