convoy_add_test(test_checked_sizes SOURCES test_checked_sizes.c INTERNAL TIMEOUT 60)
