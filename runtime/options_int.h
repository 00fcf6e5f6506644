/* Internal helpers around convoy_options: defaults, validation and the
 * implementation names used by CONVOY_EXCLUDE and error messages. */
#ifndef CONVOY_RUNTIME_OPTIONS_INT_H
#define CONVOY_RUNTIME_OPTIONS_INT_H

#include <stddef.h>

#include "convoy.h"

#define CONVOY__MAX_STREAMS 64

void convoy__options_defaults(convoy_options *options);

/* CONVOY_ERR_INVALID_ARGUMENT naming the first out-of-range field. */
convoy_status convoy__options_check(const convoy_options *options);

/* "cudnn,gemm" for a set of CONVOY_IMPL_* bits ("none" when empty). */
void convoy__impl_names(unsigned bits, char *buffer, size_t size);

/* The name of one CONVOY_IMPL_* bit. */
const char *convoy__impl_name(unsigned bit);

#endif /* CONVOY_RUNTIME_OPTIONS_INT_H */
