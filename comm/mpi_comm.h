/* The MPI side of a communicator: a duplicate of the program's MPI
 * communicator, the agreement every collective starts with (comm/agreement.h),
 * and the CPU's data exchanges, each bounded by the communicator's timeout.
 *
 * Nothing here blocks without a deadline: every MPI operation is
 * nonblocking and polled with MPI_Test until it completes or the deadline
 * passes, so a rank that died or never arrives fails the others instead of
 * hanging them. After a timeout the communicator is broken: an operation
 * may still be pending inside MPI (a collective request cannot be
 * cancelled), so its buffers and the MPI communicator are never freed, and
 * every later call fails at once naming the first failure. Errors on the
 * duplicate are returned, never fatal (MPI_ERRORS_RETURN); convoy never
 * calls MPI_Abort.
 *
 * One thread at a time: the communication stream's worker (CPU with
 * streams), or the submitting thread under the scheduler's lock (inline) or
 * the communicator's lock (CUDA). Without MPI in the build every function
 * that would need it fails with CONVOY_ERR_UNSUPPORTED, "convoy was built
 * without MPI". */
#ifndef CONVOY_COMM_MPI_COMM_H
#define CONVOY_COMM_MPI_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "comm/agreement.h"
#include "convoy.h"

typedef struct convoy__mpi convoy__mpi;

typedef struct convoy__mpi_config {
    const void *handle; /* the program's MPI_Comm, by address */
    size_t handle_size; /* sizeof its MPI_Comm, checked against the build's */
    int64_t timeout_ms;
    /* 1 when collectives will run on a thread of convoy's own while the program may call MPI
     * on its threads: MPI_THREAD_MULTIPLE is then required. */
    int needs_multiple;
} convoy__mpi_config;

/* One piece of a packed buffer: count floats at data go to offset in it. */
typedef struct convoy__comm_segment {
    float *data;
    int64_t count;
    int64_t offset;
} convoy__comm_segment;

/* "MPI: Open MPI v4.1.4 (MPI 3.1)", or "MPI: none (built without MPI)". Needs no MPI_Init. */
void convoy__mpi_describe(char *text, size_t size);

/* Checks MPI's state and thread level, duplicates the communicator (MPI_Comm_idup, within the
 * timeout) and sets errors to return. Collective over the program's communicator. */
convoy_status convoy__mpi_create(const convoy__mpi_config *config, convoy__mpi **out);

/* Frees the duplicate and the buffers, unless the communicator is broken (then both stay
 * with MPI) or MPI was already finalized. NULL: no-op. */
void convoy__mpi_destroy(convoy__mpi *m);

int convoy__mpi_rank(const convoy__mpi *m);
int convoy__mpi_size(const convoy__mpi *m);
int64_t convoy__mpi_timeout_ms(const convoy__mpi *m);

/* Agrees with the other ranks on the collective mine describes: numbers it (mine->sequence),
 * sends it to rank 0, and fails or proceeds on rank 0's verdict. Returns the verdict's status
 * with its text (prefixed by this rank) as the message; a timeout here, or a broken verdict,
 * breaks the communicator. CONVOY_ERR_BACKEND at once when already broken. */
convoy_status convoy__mpi_agree(convoy__mpi *m, convoy__comm_header *mine);

/* The data of an agreed all-reduce on the CPU: packs the segments into a buffer of total
 * floats (gaps zeroed), reduces it over the ranks (with deterministic, in rank order: each
 * rank sums one slice of the buffer over all ranks, 0 first, then the slices are gathered),
 * divides by the number of ranks for an average, and unpacks. Within the timeout, or the
 * communicator breaks. */
convoy_status convoy__mpi_allreduce(convoy__mpi *m, const convoy__comm_segment *segments,
                                    size_t count, int64_t total, convoy_reduce_op op,
                                    int deterministic);

/* The data of an agreed broadcast on the CPU: count floats at data from rank root. */
convoy_status convoy__mpi_broadcast(convoy__mpi *m, float *data, int64_t count, int root);

/* Broadcasts size bytes (a device communicator's unique id) from root within the timeout; a
 * convoy__bootstrap_bcast_fn with the convoy__mpi as context. */
convoy_status convoy__mpi_bcast_bytes(void *mpi, void *data, size_t size, int root);

#endif /* CONVOY_COMM_MPI_COMM_H */
