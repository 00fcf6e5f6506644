/* Workspace planning: how many images of a batch one convolution step may process at once so
 * that its scratch (a fixed part plus a per-image part, e.g. the im2col Toeplitz buffer of one
 * image) fits under a byte limit. A tight limit costs speed (smaller chunks), never correctness. */
#ifndef CONVOY_MEMORY_WORKSPACE_H
#define CONVOY_MEMORY_WORKSPACE_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"

/* Picks the largest images_per_chunk in 1..batch with fixed + per_image * chunk <= limit
 * (computed without overflow; limit is taken literally, pass SIZE_MAX for none) and the bytes
 * that chunk needs. batch 0 gives chunk 0 and 0 bytes whatever the limit and the formula,
 * since nothing will run (every algorithm returns before touching its workspace). Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL output, negative batch) or CONVOY_ERR_OUT_OF_MEMORY when even
 * one image does not fit ("workspace for one image needs X bytes but the workspace limit is Y").
 * Outputs are written only on success. */
convoy_status convoy__workspace_plan(size_t fixed, size_t per_image, int64_t batch, size_t limit,
                                     int64_t *images_per_chunk, size_t *bytes);

#endif /* CONVOY_MEMORY_WORKSPACE_H */
