convoy_add_test(test_scheduler SOURCES test_scheduler.c TIMEOUT 300 LABELS tsan)
