# Convolution correctness, gradient identities and error paths. Each executable
# is written once and runs on every backend: CONVOY_DEVICE picks it (the CUDA
# runs exit 77, skipped, where there is no GPU); further CPU runs exercise the
# asynchronous host streams and each implementation on its own.

set(CONVOY_CONV_TEST_SOURCES conv_reference.c conv_cases.c)

# test_conv: the Aesara shape grids, groups, unshared, pads, empty tensors.
convoy_add_test(test_conv_cpu TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ENV CONVOY_DEVICE=cpu)
convoy_add_test(test_conv_cuda TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv cuda
  ENV CONVOY_DEVICE=cuda)
convoy_add_test(test_conv_cpu_streams TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv tsan
  ENV "CONVOY_DEVICE=cpu;CONVOY_STREAMS=2")
# CONVOY_EXCLUDE cannot name onednn yet (its bits cover cudnn, gemm, 1x1 and direct), so the
# direct and gemm runs below also run onednn wherever the planner ranks it first; once the
# exclusion takes algorithm names they exclude onednn too.
convoy_add_test(test_conv_cpu_direct TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=gemm,1x1")
convoy_add_test(test_conv_cpu_gemm TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=direct,1x1")
# A workspace limit under the im2col buffer of the larger cases' whole batch,
# so the GEMM path works in chunks of images (every single image still fits).
convoy_add_test(test_conv_cpu_gemm_chunked TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=direct,1x1;CONVOY_WORKSPACE_LIMIT=320K")
# oneDNN on its own: with gemm and 1x1 excluded, onednn runs every convolution it accepts and
# the direct loops the rest (unshared filters, empty tensors).
if(CONVOY_HAVE_ONEDNN)
  convoy_add_test(test_conv_cpu_onednn TARGET test_conv
    SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
    ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=gemm,1x1")
endif()
convoy_add_test(test_conv_cuda_gemm TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv cuda
  ENV "CONVOY_DEVICE=cuda;CONVOY_EXCLUDE=cudnn,1x1")

# test_conv_grads: adjoint identities, golden values, causal and separable.
convoy_add_test(test_conv_grads_cpu TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv
  ENV CONVOY_DEVICE=cpu)
convoy_add_test(test_conv_grads_cuda TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv cuda
  ENV CONVOY_DEVICE=cuda)
convoy_add_test(test_conv_grads_cpu_streams TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv tsan
  ENV "CONVOY_DEVICE=cpu;CONVOY_STREAMS=2")
convoy_add_test(test_conv_grads_cpu_direct TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv
  ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=gemm,1x1")

# With oneDNN in the build: its gradients on their own, and test_conv_onednn (the planner
# picks onednn for what it accepts, the description names it).
if(CONVOY_HAVE_ONEDNN)
  convoy_add_test(test_conv_grads_cpu_onednn TARGET test_conv_grads
    SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv
    ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=gemm,1x1")
  convoy_add_test(test_conv_onednn_cpu TARGET test_conv_onednn
    SOURCES test_conv_onednn.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
    ENV "CONVOY_DEVICE=cpu;CONVOY_EXCLUDE=gemm,1x1")
endif()

# test_conv_errors: every error path of the public API, status and message.
convoy_add_test(test_conv_errors_cpu TARGET test_conv_errors
  SOURCES test_conv_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
  ENV CONVOY_DEVICE=cpu)
convoy_add_test(test_conv_errors_cuda TARGET test_conv_errors
  SOURCES test_conv_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv cuda
  ENV CONVOY_DEVICE=cuda)
convoy_add_test(test_conv_errors_cpu_streams TARGET test_conv_errors
  SOURCES test_conv_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv tsan
  ENV "CONVOY_DEVICE=cpu;CONVOY_STREAMS=2")
