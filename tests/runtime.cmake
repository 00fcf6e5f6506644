convoy_add_test(test_runtime SOURCES test_runtime.c TIMEOUT 120 LABELS tsan)
