/* Internal helpers around convoy_options: validation, the test hook read at
 * runtime creation, the stderr logger, and the implementation names and
 * bits used by the planner and its messages. */
#ifndef CONVOY_RUNTIME_OPTIONS_INT_H
#define CONVOY_RUNTIME_OPTIONS_INT_H

#include <stddef.h>

#include "convoy.h"
#include "core/device.h"

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

/* The CONVOY_IMPL_* bits of a comma-separated list of algorithm names that
 * convoy__options_check accepted; names with no bit (an algorithm no
 * backend offers as one) add nothing. NULL or "" gives 0. */
unsigned convoy__impl_bits_from_names(const char *names);

/* "cudnn,gemm" for a set of CONVOY_IMPL_* bits ("none" when empty). */
void convoy__impl_names(unsigned bits, char *buffer, size_t size);

/* The name of one CONVOY_IMPL_* bit. */
const char *convoy__impl_name(unsigned bit);

#endif /* CONVOY_RUNTIME_OPTIONS_INT_H */
