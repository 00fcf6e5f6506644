convoy_add_test(test_trace SOURCES test_trace.c temp_files.c INTERNAL TIMEOUT 60 LABELS tsan)
