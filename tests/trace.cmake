convoy_add_test(test_trace SOURCES test_trace.c INTERNAL TIMEOUT 60 LABELS tsan)
