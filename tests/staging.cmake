# Staged transfers over a mock device with an asynchronous stream (memory/staging.c).
convoy_add_test(test_staging SOURCES test_staging.c INTERNAL TIMEOUT 120 LABELS tsan)
