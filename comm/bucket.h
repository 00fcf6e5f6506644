/* The layout of a bucket: several tensors packed into one buffer for one collective
 * (convoy_allreduce_many on the CPU). Each tensor starts at a multiple of align elements
 * (64 bytes for floats: whole cache lines, so packing and unpacking never share a line
 * between tensors), the gaps are zero, and the total is what the collective moves. Pure
 * arithmetic, checked against overflow, so the tests check it on its own. */
#ifndef CONVOY_COMM_BUCKET_H
#define CONVOY_COMM_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#include "core/checked_math.h"

#define CONVOY__BUCKET_ALIGN 16 /* floats: 64 bytes */

/* Sets offsets[i] for count tensors of counts[i] elements, and *total, the elements of the
 * bucket: the end of the last tensor (no padding after it). Returns 0 when a size
 * overflows int64 (nothing useful is then written), 1 otherwise. align >= 1. */
static inline int convoy__bucket_layout(const int64_t *counts, size_t count, int64_t align,
                                        int64_t *offsets, int64_t *total)
{
    int64_t at = 0;
    for (size_t i = 0; i < count; ++i) {
        int64_t rounded;
        if (!convoy__add_i64(at, align - 1, &rounded))
            return 0;
        at = rounded / align * align;
        offsets[i] = at;
        if (counts[i] < 0 || !convoy__add_i64(at, counts[i], &at))
            return 0;
    }
    *total = at;
    return 1;
}

#endif /* CONVOY_COMM_BUCKET_H */
