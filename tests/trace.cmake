convoy_add_test(test_trace SOURCES test_trace.c temp_files.c pipeline_case.c INTERNAL TIMEOUT 60 LABELS tsan)
