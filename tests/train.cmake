# The training ops (conv + bias + activation, activation and bias gradients, softmax
# cross-entropy, SGD): values against double references, gradients against central
# differences, ordering on two streams (test_train); every error path with its status and
# message (test_train_errors). Written once, run on each backend as tests/conv.cmake does:
# device=cpu|cuda on the command line, the CUDA runs skip (77) without a GPU. The CPU also runs
# them on two host streams, and without oneDNN and depthwise, whose fused epilogues otherwise
# serve the forward convolutions, so the separate epilogue pass after gemm is covered too.
convoy_add_test(test_train_cpu TARGET test_train
  SOURCES test_train.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS train
  ARGS device=cpu)
convoy_add_test(test_train_cpu_streams TARGET test_train
  SOURCES test_train.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS train tsan
  ARGS device=cpu streams=2)
convoy_add_test(test_train_cpu_unfused TARGET test_train
  SOURCES test_train.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS train
  ARGS device=cpu exclude=onednn,depthwise)
convoy_add_test(test_train_cuda TARGET test_train
  SOURCES test_train.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS train cuda
  ARGS device=cuda)

convoy_add_test(test_train_errors_cpu TARGET test_train_errors
  SOURCES test_train_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 120 LABELS train
  ARGS device=cpu)
convoy_add_test(test_train_errors_cuda TARGET test_train_errors
  SOURCES test_train_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 120 LABELS train cuda
  ARGS device=cuda)

# The CUDA kernels' bodies over their whole grids, on the CPU, in every build (they need no
# GPU and no CUDA header).
convoy_add_test(test_train_kernels SOURCES test_train_kernels.c ${CONVOY_CONV_TEST_SOURCES}
  INTERNAL TIMEOUT 120 LABELS train)
