/* The bootstrap of a device communicator (cuda/nccl_comm.h): the order of its steps and what
 * each rank does when one fails, written against a table of the NCCL calls so that the host
 * tests check it with stand-ins. */
#include <stdio.h>
#include <string.h>

#include "cuda/nccl_comm.h"
#include "core/error_detail.h"

convoy_status convoy__nccl_bootstrap(const convoy__nccl_calls *calls, void *calls_context,
                                     const convoy__collective_config *config, void **comm)
{
    convoy__nccl_bootstrap_message message;
    memset(&message, 0, sizeof message);
    message.status = CONVOY_OK;
    if (config->rank == 0) {
        convoy_status status = calls->unique_id(calls_context, message.id);
        if (status != CONVOY_OK) {
            message.status = (int32_t)status;
            snprintf(message.text, sizeof message.text, "%s", convoy__error_text());
        }
    }
    /* Every rank takes part, rank 0 also when it has no id: the others learn why from the
     * message instead of waiting for an id that never comes. */
    convoy_status status = config->bcast(config->bcast_context, &message, sizeof message, 0);
    if (status != CONVOY_OK)
        return status;
    if (message.status != CONVOY_OK) {
        message.text[sizeof message.text - 1] = '\0';
        return convoy__error((convoy_status)message.status,
                             "rank %d of %d: rank 0 could not make the NCCL unique id: %s",
                             config->rank, config->size, message.text);
    }
    return calls->join(calls_context, message.id, config->size, config->rank, config->timeout_ms,
                       comm);
}
