convoy_add_test(test_planner SOURCES test_planner.c temp_files.c INTERNAL TIMEOUT 60)
