/* Creating the CUDA backend, and its algorithm registry. The only header of
 * cuda/ that code outside it includes (runtime/backend_registry.c, when the
 * library was built with CUDA). Needs no CUDA header. */
#ifndef CONVOY_CUDA_CUDA_BACKEND_H
#define CONVOY_CUDA_CUDA_BACKEND_H

#include <stddef.h>

#include "convoy.h"
#include "core/collective.h"
#include "core/device.h"
#include "kernels/conv_algo.h"

typedef struct convoy__cuda_config {
    int device_index;  /* CUDA device ordinal */
    int deterministic; /* 1: list only deterministic algorithms as such */
    int use_cudnn;     /* 0: do not initialise cuDNN (excluded by the options) */
} convoy__cuda_config;

/* Creates the CUDA backend on config->device_index. When CUDA is not usable
 * (no driver, driver too old, no device, bad index) returns
 * CONVOY_ERR_NO_DEVICE and writes the reason (for example "CUDA driver version
 * is insufficient for CUDA runtime version") into why. Never aborts. */
convoy_status convoy__cuda_backend_create(const convoy__cuda_config *config, convoy__backend **out,
                                          char *why, size_t why_size);

/* 1 when cuDNN was initialised in this backend. */
int convoy__cuda_backend_has_cudnn(convoy__backend *backend);

/* Joins the NCCL communicator of a CUDA backend's runtime, bootstrapped through
 * config->bcast (cuda/nccl_comm.c): rank 0 makes the unique id, every rank joins within
 * config->timeout_ms. CONVOY_ERR_UNSUPPORTED when convoy was built without NCCL. */
convoy_status convoy__cuda_collectives_open(convoy__backend *backend,
                                            const convoy__collective_config *config,
                                            convoy__collectives **out);

/* "NCCL 2.28.9", or "NCCL: none (built without NCCL)". */
void convoy__cuda_collectives_describe(char *text, size_t size);

/* The CUDA backend's convolution algorithms (cudnn, 1x1, gemm, direct). */
extern const convoy__conv_registry convoy__cuda_conv_registry;

#endif /* CONVOY_CUDA_CUDA_BACKEND_H */
