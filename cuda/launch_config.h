/* Launch geometry shared by the elementwise CUDA kernels: one logical thread per element,
 * covered by a grid-stride loop so element counts beyond 2^31 (a large column matrix) still
 * work with a bounded grid. Included by .cu files, and by the host tests, which run the same
 * mapping over every kernel's grid (the loop macro itself is only expanded under nvcc). */
#ifndef CONVOY_CUDA_LAUNCH_CONFIG_H
#define CONVOY_CUDA_LAUNCH_CONFIG_H

#include <stdint.h>

#include "core/conv_geometry.h"
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

/* Threads per block of the reduction kernels (bias gradient, loss): a power of two, since
 * their shares are added in a tree of halving levels (kernels/train_math.h). */
#define CONVOY__REDUCE_THREADS 256

/* Blocks of a reduction over `groups` independent sums (channels), one block per sum up to the
 * grid limit; each block then strides over the sums a whole grid apart. */
static inline unsigned convoy__reduce_blocks_for(int64_t groups)
{
    return (unsigned)(groups < CONVOY__MAX_BLOCKS ? groups : CONVOY__MAX_BLOCKS);
}

/* The first element thread `thread` of block `block` handles, and the distance to its next
 * one (the whole grid): the grid-stride loop in functions the host tests run. */
CONVOY_HD static inline int64_t convoy__grid_first(unsigned block, unsigned threads_per_block,
                                                   unsigned thread)
{
    return (int64_t)block * threads_per_block + thread;
}

CONVOY_HD static inline int64_t convoy__grid_stride(unsigned threads_per_block, unsigned blocks)
{
    return (int64_t)threads_per_block * blocks;
}

/* The loop every elementwise kernel body sits in; i is the int64 element index. */
#define CONVOY__GRID_STRIDE_LOOP(i, count)                                                         \
    for (int64_t i = convoy__grid_first(blockIdx.x, blockDim.x, threadIdx.x); i < (count);         \
         i += convoy__grid_stride(blockDim.x, gridDim.x))

#endif /* CONVOY_CUDA_LAUNCH_CONFIG_H */
