convoy_add_test(test_tune_cache SOURCES test_tune_cache.c temp_files.c INTERNAL TIMEOUT 60 LABELS tsan)
