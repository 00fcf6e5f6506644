convoy_add_test(test_planning SOURCES test_planning.c INTERNAL TIMEOUT 300 LABELS tsan)
