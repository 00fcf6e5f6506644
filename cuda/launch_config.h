/* Launch geometry shared by the elementwise CUDA kernels: one logical thread per element,
 * covered by a grid-stride loop so element counts beyond 2^31 (a large column matrix) still
 * work with a bounded grid. Only included by .cu files. */
#ifndef CONVOY_CUDA_LAUNCH_CONFIG_H
#define CONVOY_CUDA_LAUNCH_CONFIG_H

#include <stdint.h>

#include "cuda/cuda_check.h"

/* Threads per block for every elementwise kernel. */
#define CONVOY__THREADS 256

/* At most this many blocks per launch (well under the 2^31 - 1 limit of gridDim.x); each
 * thread then loops over the elements a stride of the whole grid apart. */
#define CONVOY__MAX_BLOCKS ((int64_t)1 << 20)

static inline unsigned convoy__blocks_for(int64_t count)
{
    int64_t blocks = CONVOY_CEIL_DIV(count, (int64_t)CONVOY__THREADS);
    return (unsigned)(blocks < CONVOY__MAX_BLOCKS ? blocks : CONVOY__MAX_BLOCKS);
}

/* The loop every elementwise kernel body sits in; i is the int64 element index. */
#define CONVOY__GRID_STRIDE_LOOP(i, count)                                                         \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (count);                  \
         i += (int64_t)blockDim.x * gridDim.x)

#endif /* CONVOY_CUDA_LAUNCH_CONFIG_H */
