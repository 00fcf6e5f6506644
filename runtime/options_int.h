/* Internal helpers around convoy_options: validation, the test hook read at
 * runtime creation, the stderr logger, and looking names up in the
 * comma-separated lists of exclude / require. */
#ifndef CONVOY_RUNTIME_OPTIONS_INT_H
#define CONVOY_RUNTIME_OPTIONS_INT_H

#include <stddef.h>

#include "convoy.h"

#define CONVOY__MAX_STREAMS 64

/* CONVOY_ERR_INVALID_ARGUMENT naming the first out-of-range field or the
 * first unknown algorithm name of exclude / require. */
convoy_status convoy__options_check(const convoy_options *options);

/* The test hook: when options->test_fail_alloc is 0, reads
 * CONVOY_TEST_FAIL_ALLOC=N into it, whether or not the options came from
 * the environment. CONVOY_ERR_INVALID_ARGUMENT for a malformed value. */
convoy_status convoy__options_test_hook(convoy_options *options);

/* The logger CONVOY_LOG=stderr (or profile with no callback) installs:
 * "convoy <level>: <message>" on stderr. */
void convoy__log_stderr(void *user_data, convoy_log_level level, const char *message);

/* 1 when the comma-separated list (NULL: empty) names name, whole and
 * case-insensitively. */
int convoy__name_listed(const char *list, const char *name);

#endif /* CONVOY_RUNTIME_OPTIONS_INT_H */
