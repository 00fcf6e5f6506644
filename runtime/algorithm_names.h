/* The names of every convolution algorithm any backend of this build
 * registers, for validating CONVOY_EXCLUDE / CONVOY_REQUIRE and the options'
 * exclude / require lists before a backend exists. */
#ifndef CONVOY_RUNTIME_ALGORITHM_NAMES_H
#define CONVOY_RUNTIME_ALGORITHM_NAMES_H

#include <stddef.h>

/* 1 when the first len characters of name (case-insensitive) name an
 * algorithm of some backend of this build. */
int convoy__algorithm_name_known(const char *name, size_t len);

/* Every accepted name, comma-separated ("cudnn,gemm,1x1,direct,onednn"), for error
 * messages. Static storage. */
const char *convoy__algorithm_names_all(void);

#endif /* CONVOY_RUNTIME_ALGORITHM_NAMES_H */
