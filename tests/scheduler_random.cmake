# Random task graphs on 0, 1, 2, 4 and 8 streams against a sequential model.
# CONVOY_TEST_RANDOM_SEEDS=N (default 40) runs more seeds for a soak.
convoy_add_test(test_scheduler_random SOURCES test_scheduler_random.c TIMEOUT 600 LABELS tsan)
