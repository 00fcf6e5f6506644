# The CUDA backend's host-side logic (creation without a GPU, error mapping, cuDNN
# expressibility, the caller's-device rules, every kernel body over its grid, the GEMM /
# 1x1 / direct paths emulated step by step on the CPU).
# Runs on machines without a GPU; built whenever the CUDA backend is.
if(CONVOY_HAVE_CUDA)
  convoy_add_test(test_cuda_host SOURCES test_cuda_host.c ${CONVOY_GEOM_TEST_SOURCES} INTERNAL TIMEOUT 120)
endif()
