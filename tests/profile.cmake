# The scheduler's task timing, arrows and summary figures on a mock device
# clock (scripted timers under the host backend).
convoy_add_test(test_profile SOURCES test_profile.c temp_files.c INTERNAL TIMEOUT 60 LABELS tsan)
