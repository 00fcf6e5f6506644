# NVTX, proven through NVTX3's injection mechanism: the recorder library is
# what NVTX_INJECTION64_PATH names, and the test checks what it recorded.
# Built only when the library marks its tasks with NVTX (CONVOY_HAVE_NVTX).
if(CONVOY_HAVE_NVTX)
  add_library(convoy_nvtx_recorder MODULE nvtx_recorder.c)
  target_include_directories(convoy_nvtx_recorder PRIVATE ${NVTX3_INCLUDE_DIR})
  target_link_libraries(convoy_nvtx_recorder PRIVATE Threads::Threads)
  set_target_properties(convoy_nvtx_recorder PROPERTIES C_VISIBILITY_PRESET hidden)
  convoy_add_test(test_nvtx_cpu TARGET test_nvtx SOURCES test_nvtx.c pipeline_case.c TIMEOUT 120
    LABELS tsan ARGS device=cpu ENV NVTX_INJECTION64_PATH=$<TARGET_FILE:convoy_nvtx_recorder>)
  convoy_add_test(test_nvtx_cuda TARGET test_nvtx SOURCES test_nvtx.c pipeline_case.c TIMEOUT 120
    LABELS cuda ARGS device=cuda ENV NVTX_INJECTION64_PATH=$<TARGET_FILE:convoy_nvtx_recorder>)
  add_dependencies(test_nvtx convoy_nvtx_recorder)
endif()
