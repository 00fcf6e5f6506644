# Convolution correctness, gradient identities and error paths. Each executable
# is written once and runs on every backend: its command line picks it
# (device=cpu|cuda; the CUDA runs exit 77, skipped, where there is no GPU) and
# sets the options of the run (streams=, exclude=, workspace_limit=), so the
# CONVOY_* variables of the shell play no part; further CPU runs exercise the
# asynchronous host streams and each implementation on its own.

# test_conv: the Aesara shape grids, groups, unshared, pads, empty tensors.
convoy_add_test(test_conv_cpu TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ARGS device=cpu)
convoy_add_test(test_conv_cuda TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv cuda
  ARGS device=cuda)
convoy_add_test(test_conv_cpu_streams TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv tsan
  ARGS device=cpu streams=2)
convoy_add_test(test_conv_cpu_direct TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ARGS device=cpu exclude=gemm,1x1,onednn,depthwise)
convoy_add_test(test_conv_cpu_gemm TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ARGS device=cpu exclude=direct,1x1,onednn,depthwise)
# A workspace limit under the im2col buffer of the larger cases' whole batch,
# so the GEMM path works in chunks of images (every single image still fits).
convoy_add_test(test_conv_cpu_gemm_chunked TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
  ARGS device=cpu exclude=direct,1x1,onednn,depthwise workspace_limit=320K)
# oneDNN on its own: with gemm and 1x1 excluded, onednn runs every convolution it accepts and
# the direct loops the rest (unshared filters, empty tensors).
if(CONVOY_HAVE_ONEDNN)
  convoy_add_test(test_conv_cpu_onednn TARGET test_conv
    SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv
    ARGS device=cpu exclude=gemm,1x1,depthwise)
endif()
convoy_add_test(test_conv_cuda_gemm TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 900 LABELS conv cuda
  ARGS device=cuda exclude=cudnn,1x1)

# test_conv_grads: adjoint identities, golden values, causal and separable.
convoy_add_test(test_conv_grads_cpu TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv
  ARGS device=cpu)
convoy_add_test(test_conv_grads_cuda TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv cuda
  ARGS device=cuda)
convoy_add_test(test_conv_grads_cpu_streams TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv tsan
  ARGS device=cpu streams=2)
convoy_add_test(test_conv_grads_cpu_direct TARGET test_conv_grads
  SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv
  ARGS device=cpu exclude=gemm,1x1,onednn,depthwise)

# With oneDNN in the build: its gradients on their own, and test_conv_onednn (the planner
# picks onednn for what it accepts, the description names it).
if(CONVOY_HAVE_ONEDNN)
  convoy_add_test(test_conv_grads_cpu_onednn TARGET test_conv_grads
    SOURCES test_conv_grads.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 600 LABELS conv
    ARGS device=cpu exclude=gemm,1x1,depthwise)
  convoy_add_test(test_conv_onednn_cpu TARGET test_conv_onednn
    SOURCES test_conv_onednn.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
    ARGS device=cpu exclude=gemm,1x1,depthwise)
  # The same on two host streams: plans (and their cached filters) shared between workers.
  convoy_add_test(test_conv_onednn_cpu_streams TARGET test_conv_onednn
    SOURCES test_conv_onednn.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
    ARGS device=cpu exclude=gemm,1x1,depthwise streams=2)
  # winograd, inexact: allowed (exact_only=0) and held to its own looser bound, with every
  # other fast algorithm excluded so the planner picks it where it applies.
  convoy_add_test(test_conv_winograd_cpu TARGET test_conv_winograd
    SOURCES test_conv_winograd.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
    ARGS device=cpu exact_only=0 exclude=onednn,gemm,1x1,depthwise)
endif()

# depthwise (AVX-512 stencils, no oneDNN needed): the grids and listed cases with every other
# fast algorithm excluded, so the single-channel and depthwise cases run on it and the rest on
# direct; and test_conv_depthwise (what it accepts, in every direction, its fused epilogue, its
# refusals and explain), also on two host streams.
convoy_add_test(test_conv_cpu_depthwise TARGET test_conv
  SOURCES test_conv.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
  ARGS device=cpu exclude=onednn,winograd,gemm,1x1)
convoy_add_test(test_conv_depthwise_cpu TARGET test_conv_depthwise
  SOURCES test_conv_depthwise.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
  ARGS device=cpu exclude=onednn,winograd,gemm,1x1)
convoy_add_test(test_conv_depthwise_cpu_streams TARGET test_conv_depthwise
  SOURCES test_conv_depthwise.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
  ARGS device=cpu exclude=onednn,winograd,gemm,1x1 streams=2)

# test_conv_errors: every error path of the public API, status and message.
convoy_add_test(test_conv_errors_cpu TARGET test_conv_errors
  SOURCES test_conv_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv
  ARGS device=cpu)
convoy_add_test(test_conv_errors_cuda TARGET test_conv_errors
  SOURCES test_conv_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv cuda
  ARGS device=cuda)
convoy_add_test(test_conv_errors_cpu_streams TARGET test_conv_errors
  SOURCES test_conv_errors.c ${CONVOY_CONV_TEST_SOURCES} TIMEOUT 300 LABELS conv tsan
  ARGS device=cpu streams=2)
