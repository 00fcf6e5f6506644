convoy_add_test(test_scheduler_faults SOURCES test_scheduler_faults.c INTERNAL TIMEOUT 120 LABELS tsan)
