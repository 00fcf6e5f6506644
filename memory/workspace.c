/* Workspace planning for the chunked convolution paths: the largest number of images per step
 * whose scratch fits under the workspace limit. Kept apart from the pool because it is pure
 * arithmetic the planner runs (and caches) before any memory is taken. */
#include <stdint.h>

#include "memory/workspace.h"
#include "core/error_detail.h"

convoy_status convoy__workspace_plan(size_t fixed, size_t per_image, int64_t batch, size_t limit,
                                     int64_t *images_per_chunk, size_t *bytes)
{
    if (!images_per_chunk || !bytes)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "workspace_plan: NULL output");
    if (batch < 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "workspace_plan: batch is %lld, must be >= 0", (long long)batch);
    if (batch == 0) {
        /* An empty batch runs nothing, so it needs no workspace and no limit
         * can make it fail (a saturated formula must not become a request). */
        *images_per_chunk = 0;
        *bytes = 0;
        return CONVOY_OK;
    }
    if (fixed > limit || per_image > limit - fixed) {
        /* The message saturates instead of wrapping when one image needs more than size_t. */
        size_t one = per_image > SIZE_MAX - fixed ? SIZE_MAX : fixed + per_image;
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "workspace for one image needs %s%zu bytes but the workspace limit "
                             "is %zu",
                             one == SIZE_MAX ? "more than " : "", one, limit);
    }
    /* (limit - fixed) / per_image images fit; no product is ever formed before it is known to
     * fit, so nothing can overflow. */
    uint64_t chunk = (uint64_t)batch;
    if (per_image > 0) {
        uint64_t fit = (uint64_t)((limit - fixed) / per_image);
        if (fit < chunk)
            chunk = fit;
    }
    *images_per_chunk = (int64_t)chunk;
    *bytes = fixed + per_image * (size_t)chunk;
    return CONVOY_OK;
}
