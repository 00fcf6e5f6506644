convoy_add_test(test_planner SOURCES test_planner.c INTERNAL TIMEOUT 60)
