/* NCCL collectives for the CUDA backend: bootstrapping a communicator through the MPI side
 * (rank 0 makes the unique id, MPI broadcasts it, every rank joins), and the function table
 * of core/collective.h over it. The bootstrap's sequence is written against a table of the
 * NCCL calls it makes, so the host tests run it with stand-ins on machines without a GPU.
 * Needs no NCCL header. */
#ifndef CONVOY_CUDA_NCCL_COMM_H
#define CONVOY_CUDA_NCCL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/collective.h"

#define CONVOY__NCCL_ID_BYTES 128

/* The NCCL calls the bootstrap makes. context is the CUDA backend (or a test's). */
typedef struct convoy__nccl_calls {
    /* ncclGetUniqueId into id. */
    convoy_status (*unique_id)(void *context, unsigned char *id);
    /* Joins the communicator of id as rank of size, within timeout_ms (a rank that never joins
     * fails the others instead of hanging them); *comm is set only on success. */
    convoy_status (*join)(void *context, const unsigned char *id, int size, int rank,
                          int64_t timeout_ms, void **comm);
} convoy__nccl_calls;

/* What rank 0 broadcasts: its id, or why it has none, so a failure on rank 0 fails every
 * rank instead of leaving them waiting in the join. */
typedef struct convoy__nccl_bootstrap_message {
    int32_t status; /* convoy_status of rank 0's unique_id */
    int32_t reserved;
    unsigned char id[CONVOY__NCCL_ID_BYTES];
    char text[256]; /* rank 0's message when status is not CONVOY_OK */
} convoy__nccl_bootstrap_message;

/* The bootstrap: rank 0 calls unique_id, config->bcast sends the message from rank 0 to every
 * rank, and every rank joins with the id (none joins when rank 0 had no id). Returns what the
 * broadcast or the join returned, or rank 0's failure. Every rank takes part in the broadcast
 * whatever happened before it. */
convoy_status convoy__nccl_bootstrap(const convoy__nccl_calls *calls, void *calls_context,
                                     const convoy__collective_config *config, void **comm);

/* NCCL's reduction for op (ncclSum, ncclAvg) as an int; CONVOY_ERR_INVALID_ARGUMENT for an op
 * NCCL has no reduction for. Only with NCCL in the build. */
convoy_status convoy__nccl_reduce_op(convoy_reduce_op op, int *nccl_op);

/* NCCL's type for a convoy tensor's elements (float32: ncclFloat32) as an int. Only with NCCL
 * in the build. */
int convoy__nccl_element_type(void);

#endif /* CONVOY_CUDA_NCCL_COMM_H */
