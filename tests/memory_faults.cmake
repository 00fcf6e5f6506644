convoy_add_test(test_memory_faults SOURCES test_memory_faults.c TIMEOUT 300 LABELS tsan)
