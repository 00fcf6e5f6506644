/* Log lines through the program's callback (convoy_options.log_fn). The
 * library never prints by itself: with no callback a line goes nowhere. */
#ifndef CONVOY_CORE_LOG_H
#define CONVOY_CORE_LOG_H

#include "convoy.h"
#include "core/error_detail.h"

/* A callback and its user data, as the options carry them. */
typedef struct convoy__logger {
    convoy_log_fn fn;
    void *user_data;
} convoy__logger;

/* Formats one line and hands it to logger->fn; a NULL logger or fn drops it.
 * Lines longer than 4 KiB are cut. */
void convoy__log_to(const convoy__logger *logger, convoy_log_level level, const char *format, ...)
    CONVOY__PRINTF_LIKE(3, 4);

#endif /* CONVOY_CORE_LOG_H */
