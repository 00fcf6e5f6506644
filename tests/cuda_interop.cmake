# convoy_cuda.h through the public library: compiles with only the CUDA
# headers added, refuses device pointers on a CPU runtime; with a GPU, hands
# out real ones. Built whenever the CUDA backend is.
if(CONVOY_HAVE_CUDA)
  convoy_add_test(test_cuda_interop SOURCES test_cuda_interop.c TIMEOUT 60)
  target_link_libraries(test_cuda_interop PRIVATE CUDA::cudart)
endif()
