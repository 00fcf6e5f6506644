# The public header compiles as strict C99 and as C++, without CUDA headers;
# convoy_cuda.h compiles the same ways with only the CUDA headers added, and
# convoy_mpi.h with only the MPI headers added.
# These are build checks: a header that needs more fails the build.
add_library(convoy_header_c99 OBJECT header_c99.c)
set_target_properties(convoy_header_c99 PROPERTIES C_STANDARD 99 C_EXTENSIONS OFF)
target_compile_options(convoy_header_c99 PRIVATE -pedantic-errors)
target_include_directories(convoy_header_c99 PRIVATE ${PROJECT_SOURCE_DIR}/include)
if(CONVOY_HAVE_CUDA)
  add_library(convoy_header_cuda_c99 OBJECT header_cuda_c99.c)
  set_target_properties(convoy_header_cuda_c99 PROPERTIES C_STANDARD 99 C_EXTENSIONS OFF)
  target_compile_options(convoy_header_cuda_c99 PRIVATE -pedantic-errors)
  target_include_directories(convoy_header_cuda_c99 PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_include_directories(convoy_header_cuda_c99 SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
endif()
if(CONVOY_HAVE_MPI)
  add_library(convoy_header_mpi_c99 OBJECT header_mpi_c99.c)
  set_target_properties(convoy_header_mpi_c99 PROPERTIES C_STANDARD 99 C_EXTENSIONS OFF)
  target_compile_options(convoy_header_mpi_c99 PRIVATE -pedantic-errors)
  target_include_directories(convoy_header_mpi_c99 PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_include_directories(convoy_header_mpi_c99 SYSTEM PRIVATE ${MPI_C_INCLUDE_DIRS})
endif()

include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  add_library(convoy_header_cxx OBJECT header_cxx.cpp)
  target_compile_options(convoy_header_cxx PRIVATE -Wall -Wextra -pedantic-errors
                         $<$<BOOL:${CONVOY_WERROR}>:-Werror>)
  target_include_directories(convoy_header_cxx PRIVATE ${PROJECT_SOURCE_DIR}/include)
  if(CONVOY_HAVE_CUDA)
    add_library(convoy_header_cuda_cxx OBJECT header_cuda_cxx.cpp)
    target_compile_options(convoy_header_cuda_cxx PRIVATE -Wall -Wextra -pedantic-errors
                           $<$<BOOL:${CONVOY_WERROR}>:-Werror>)
    target_include_directories(convoy_header_cuda_cxx PRIVATE ${PROJECT_SOURCE_DIR}/include)
    target_include_directories(convoy_header_cuda_cxx SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  endif()
  if(CONVOY_HAVE_MPI)
    # The C header of MPI only: C++ programs use it too (Open MPI's C++ bindings are gone).
    add_library(convoy_header_mpi_cxx OBJECT header_mpi_cxx.cpp)
    target_compile_definitions(convoy_header_mpi_cxx PRIVATE OMPI_SKIP_MPICXX MPICH_SKIP_MPICXX)
    target_compile_options(convoy_header_mpi_cxx PRIVATE -Wall -Wextra -pedantic-errors
                           $<$<BOOL:${CONVOY_WERROR}>:-Werror>)
    target_include_directories(convoy_header_mpi_cxx PRIVATE ${PROJECT_SOURCE_DIR}/include)
    target_include_directories(convoy_header_mpi_cxx SYSTEM PRIVATE ${MPI_C_INCLUDE_DIRS})
  endif()
endif()
