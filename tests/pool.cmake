convoy_add_test(test_pool SOURCES test_pool.c INTERNAL TIMEOUT 120 LABELS tsan)
