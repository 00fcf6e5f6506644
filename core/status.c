/* Status names and descriptions, and the thread-local detail message behind
 * convoy_last_error_message(). Every failing path in the library formats its
 * message here, through convoy__error(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "convoy.h"
#include "core/error_detail.h"

#define CONVOY__ERROR_TEXT_CAPACITY 1024

static _Thread_local char error_text[CONVOY__ERROR_TEXT_CAPACITY];

const char *convoy_status_name(convoy_status status)
{
    switch (status) {
#define CONVOY_STATUS_NAME_CASE(name, value, text)                                                 \
    case name:                                                                                     \
        return #name;
        CONVOY_STATUS_LIST(CONVOY_STATUS_NAME_CASE)
#undef CONVOY_STATUS_NAME_CASE
    }
    return "CONVOY_STATUS_UNKNOWN";
}

const char *convoy_status_description(convoy_status status)
{
    switch (status) {
#define CONVOY_STATUS_TEXT_CASE(name, value, text)                                                 \
    case name:                                                                                     \
        return text;
        CONVOY_STATUS_LIST(CONVOY_STATUS_TEXT_CASE)
#undef CONVOY_STATUS_TEXT_CASE
    }
    return "unknown status";
}

const char *convoy_last_error_message(void)
{
    return error_text;
}

convoy_status convoy__error(convoy_status status, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(error_text, sizeof error_text, format, args);
    va_end(args);
    return status;
}

void convoy__error_prefix(const char *prefix)
{
    char previous[CONVOY__ERROR_TEXT_CAPACITY];
    memcpy(previous, error_text, sizeof previous);
    snprintf(error_text, sizeof error_text, "%s: %s", prefix, previous);
}

void convoy__error_set_text(const char *text)
{
    if (!text) {
        error_text[0] = '\0';
        return;
    }
    snprintf(error_text, sizeof error_text, "%s", text);
}

const char *convoy__error_text(void)
{
    return error_text;
}
