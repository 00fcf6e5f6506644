# Collectives across processes (convoy_mpi.h), built when MPI is. Each test starts its ranks
# on this machine through CMake's MPIEXEC_EXECUTABLE, in CONVOY_MPI_ENVIRONMENT (the top
# CMakeLists.txt: shared memory and loopback only, as root, oversubscribed). Each run takes
# seconds; TIMEOUT bounds it and PROCESSORS tells `ctest -j` how many cores it takes.
if(CONVOY_HAVE_MPI)
  # convoy_add_mpi_test(NAME TARGET target RANKS n [TIMEOUT s] [ARGS a...] [ENV k=v...])
  function(convoy_add_mpi_test name)
    cmake_parse_arguments(T "" "TARGET;RANKS;TIMEOUT" "ARGS;ENV" ${ARGN})
    if(NOT T_TIMEOUT)
      set(T_TIMEOUT 60)
    endif()
    add_test(NAME ${name}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${T_RANKS} ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:${T_TARGET}> ${MPIEXEC_POSTFLAGS} ${T_ARGS})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77
                         PROCESSORS ${T_RANKS} LABELS mpi
                         ENVIRONMENT "${CONVOY_MPI_ENVIRONMENT};${T_ENV}")
  endfunction()

  foreach(target test_comm test_comm_failure)
    add_executable(${target} ${target}.c)
    target_compile_definitions(${target} PRIVATE _GNU_SOURCE)
    target_link_libraries(${target} PRIVATE convoy MPI::MPI_C PkgConfig::CMOCKA m)
    target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR})
  endforeach()

  convoy_add_mpi_test(test_comm_2ranks TARGET test_comm RANKS 2)
  convoy_add_mpi_test(test_comm_3ranks TARGET test_comm RANKS 3)
  convoy_add_mpi_test(test_comm_serialized TARGET test_comm RANKS 2 ARGS serialized)
  if(CONVOY_HAVE_CUDA)
    convoy_add_mpi_test(test_comm_cuda_2ranks TARGET test_comm RANKS 2 ARGS cuda)
  endif()
  # A rank that never reaches a collective, rank 0 (the coordinator) missing, a rank that
  # exits mid-step (Open MPI's recovery keeps the job alive for the others), and a rank that
  # leaves the data exchange after agreeing (the test hook): the others fail cleanly within
  # the timeout.
  convoy_add_mpi_test(test_comm_absent_2ranks TARGET test_comm_failure RANKS 2 ARGS absent)
  convoy_add_mpi_test(test_comm_absent_3ranks TARGET test_comm_failure RANKS 3 ARGS absent)
  convoy_add_mpi_test(test_comm_coordinator_absent TARGET test_comm_failure RANKS 3
                      ARGS coordinator)
  convoy_add_mpi_test(test_comm_rank_exits TARGET test_comm_failure RANKS 2 ARGS exit
                      ENV OMPI_MCA_orte_enable_recovery=1)
  convoy_add_mpi_test(test_comm_data_timeout TARGET test_comm_failure RANKS 2 ARGS data
                      ENV CONVOY_TEST_COMM_SKIP_DATA=1:3)
endif()

# What needs no second process, in every build: bucket layout, the deterministic reduction's
# arithmetic, the verdict, the communication stream and the skip callback, options, and
# comm_create refusing without MPI running.
convoy_add_test(test_comm_local SOURCES test_comm_local.c temp_files.c INTERNAL TIMEOUT 60
                LABELS tsan)

# The NCCL side's host logic (reduce operations and element type, the bootstrap's sequence
# and failures, with stand-ins for NCCL and MPI), built whenever the CUDA backend uses NCCL.
if(CONVOY_HAVE_NCCL)
  convoy_add_test(test_nccl_host SOURCES test_nccl_host.c INTERNAL TIMEOUT 60)
  target_include_directories(test_nccl_host PRIVATE ${NCCL_INCLUDE_DIR})
endif()
