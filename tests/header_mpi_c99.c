/* Compiled as strict C99 (-pedantic) with only the MPI headers added: convoy_mpi.h needs
 * nothing else. Built, not run. */
#include "convoy_mpi.h"

int convoy_header_mpi_c99_probe(convoy_runtime *runtime, convoy_comm **out);

int convoy_header_mpi_c99_probe(convoy_runtime *runtime, convoy_comm **out)
{
    return (int)convoy_comm_create(runtime, MPI_COMM_WORLD, NULL, out);
}
