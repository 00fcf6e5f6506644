convoy_add_test(test_tune_cache SOURCES test_tune_cache.c INTERNAL TIMEOUT 60 LABELS tsan)
