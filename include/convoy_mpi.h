/* convoy MPI interop: a convoy communicator from an MPI communicator.
 *
 * The optional companion of convoy.h for data-parallel programs, which are
 * MPI programs already: it includes <mpi.h> (compile with mpicc, or with
 * the include path of the same MPI that convoy was built against). The
 * collectives themselves (convoy_allreduce, convoy_allreduce_many,
 * convoy_broadcast) are in convoy.h, which needs no MPI header.
 *
 * A convoy built without MPI still has every function: convoy_comm_create
 * then returns CONVOY_ERR_UNSUPPORTED with "convoy was built without MPI",
 * and convoy_runtime_describe says "comm: none (built without MPI)".
 */
#ifndef CONVOY_MPI_H
#define CONVOY_MPI_H

#include <mpi.h>

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What convoy_comm_create calls: the MPI communicator passed by address,
 * with its size, so that the library's ABI does not depend on how an MPI
 * implementation defines MPI_Comm (a pointer in Open MPI, an int in
 * MPICH). Call convoy_comm_create instead. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_comm_create_mpi(convoy_runtime *runtime, const void *mpi_comm, size_t mpi_comm_size,
                       const convoy_comm_options *options, convoy_comm **out);

/* Makes a communicator of the runtime over the processes of mpi_comm.
 * Collective: every rank of mpi_comm must call it, with its own runtime.
 * MPI must be initialised (convoy never calls MPI_Init); convoy duplicates
 * mpi_comm (MPI_Comm_idup), so its messages never mix with the program's,
 * and the program may free mpi_comm afterwards. options may be NULL: the
 * defaults with CONVOY_COMM_TIMEOUT_MS applied.
 *
 * Threads: on a CPU runtime with streams (options.streams >= 1) the
 * collectives run on the communication stream's own thread while the
 * program's threads may call MPI too, so MPI must provide
 * MPI_THREAD_MULTIPLE (initialise it with MPI_Init_thread); otherwise
 * (streams = 0, or a CUDA runtime, where NCCL moves the data) convoy calls
 * MPI only on the thread that calls convoy, as the program would, and any
 * thread level does. On CUDA, NCCL is bootstrapped through mpi_comm: rank
 * 0 makes the NCCL id, MPI broadcasts it, every rank joins with
 * ncclCommInitRank on the runtime's device.
 *
 * Every rank checks that all ranks agree on the device kind (CPU or CUDA)
 * and convoy's version; a rank that does not arrive within the timeout
 * fails the call on every other rank instead of hanging it.
 *
 * Returns CONVOY_ERR_INVALID_ARGUMENT (NULL runtime or out, an MPI_Comm of
 * another size than the one convoy was built with, MPI not initialised or
 * already finalised, MPI_COMM_NULL, a malformed CONVOY_COMM_TIMEOUT_MS or a
 * timeout outside 1..86400000 ms), CONVOY_ERR_UNSUPPORTED (built without
 * MPI; a thread level below MPI_THREAD_MULTIPLE where it is needed; a CUDA
 * runtime without NCCL; ranks on different device kinds), CONVOY_ERR_BACKEND
 * (an MPI or NCCL call failed, or a rank did not take part in time; the
 * message names them), CONVOY_ERR_OUT_OF_MEMORY. *out is set only on
 * success; release it with convoy_comm_destroy before MPI_Finalize.
 * Blocking. */
static inline convoy_status convoy_comm_create(convoy_runtime *runtime, MPI_Comm mpi_comm,
                                               const convoy_comm_options *options,
                                               convoy_comm **out)
{
    return convoy_comm_create_mpi(runtime, &mpi_comm, sizeof mpi_comm, options, out);
}

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_MPI_H */
