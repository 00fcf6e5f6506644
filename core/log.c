/* Formatting log lines for the program's callback (core/log.h). */
#include <stdarg.h>
#include <stdio.h>

#include "core/log.h"

void convoy__log_to(const convoy__logger *logger, convoy_log_level level, const char *format, ...)
{
    if (!logger || !logger->fn)
        return;
    char message[4096];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    logger->fn(logger->user_data, level, message);
}
