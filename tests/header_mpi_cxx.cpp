// Compiled as C++ with only the MPI headers added: convoy_mpi.h needs nothing else and its
// declarations have C linkage. Built, not run.
#include "convoy_mpi.h"

int convoy_header_mpi_cxx_probe(convoy_runtime *runtime, convoy_comm **out);

int convoy_header_mpi_cxx_probe(convoy_runtime *runtime, convoy_comm **out)
{
    return static_cast<int>(convoy_comm_create(runtime, MPI_COMM_WORLD, nullptr, out));
}
