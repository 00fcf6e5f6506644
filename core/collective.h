/* Device collectives: what the runtime needs from a backend that moves
 * collective data itself (NCCL on CUDA), as one function table, like the
 * device operations of core/device.h. The CPU has none: MPI (comm/) moves
 * host memory directly, and runtime/comm_api.c calls it.
 *
 * The functions are called from a task's body at enqueue time, with the
 * task's native stream (a cudaStream_t), and only enqueue: the data has
 * moved when the stream reaches the task's completion event. The ranks have
 * already agreed, through MPI, on what the collective is (comm/), so a call
 * here never meets a rank that submitted something else. */
#ifndef CONVOY_CORE_COLLECTIVE_H
#define CONVOY_CORE_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"

typedef struct convoy__collectives convoy__collectives;

/* One tensor of a collective: count floats of device memory. */
typedef struct convoy__device_segment {
    float *data;
    size_t count;
} convoy__device_segment;

typedef struct convoy__collective_ops {
    const char *name; /* "nccl" */
    /* In-place all-reduce of every segment; several segments are one collective for the
     * library (one NCCL group: one launch), each reduced on its own. */
    convoy_status (*allreduce)(convoy__collectives *c, void *native_stream,
                               const convoy__device_segment *segments, size_t count,
                               convoy_reduce_op op);
    /* In-place broadcast of count floats at data from rank root. */
    convoy_status (*broadcast)(convoy__collectives *c, void *native_stream, float *data,
                               size_t count, int root);
    /* Releases the device communicator. The streams it enqueued on are done. */
    void (*destroy)(convoy__collectives *c);
} convoy__collective_ops;

/* Every device communicator starts with this header. */
struct convoy__collectives {
    const convoy__collective_ops *ops;
};

/* Broadcasts size bytes at data from rank root to every rank of the
 * bootstrap communicator (MPI), failing within the communicator's timeout
 * instead of hanging; how a device communicator shares its unique id.
 * context is the MPI side (comm/mpi_comm.h). */
typedef convoy_status (*convoy__bootstrap_bcast_fn)(void *context, void *data, size_t size,
                                                    int root);

/* How a device communicator is bootstrapped. */
typedef struct convoy__collective_config {
    int rank;
    int size;
    int64_t timeout_ms; /* for joining: a rank that never joins fails the others */
    convoy__bootstrap_bcast_fn bcast;
    void *bcast_context;
} convoy__collective_config;

#endif /* CONVOY_CORE_COLLECTIVE_H */
