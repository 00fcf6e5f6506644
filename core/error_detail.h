/* Recording a failure's detail text. Part of the backend interface so that
 * every layer (backends included) can leave a message without reaching up
 * into runtime/; implemented in runtime/status.c.
 *
 * The text lives in a thread-local buffer, read back by
 * convoy_last_error_message(). Tasks that fail on a worker thread copy it
 * into the task, and convoy_task_wait() puts it back on the waiting thread. */
#ifndef CONVOY_CORE_ERROR_DETAIL_H
#define CONVOY_CORE_ERROR_DETAIL_H

#include "convoy.h"

#if defined(__GNUC__)
#define CONVOY__PRINTF_LIKE(fmt_index, first_arg)                                                  \
    __attribute__((format(printf, fmt_index, first_arg)))
#else
#define CONVOY__PRINTF_LIKE(fmt_index, first_arg)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Formats the thread's detail message and returns status, so a failing
 * path reads `return convoy__error(CONVOY_ERR_SHAPE, "...", ...);`. */
convoy_status convoy__error(convoy_status status, const char *format, ...)
    CONVOY__PRINTF_LIKE(2, 3);

/* Puts "prefix: " in front of the current message (for example the call
 * name, added by the public entry point once the inner layer failed). */
void convoy__error_prefix(const char *prefix);

/* Replaces the thread's message with text (NULL or "" clears it). */
void convoy__error_set_text(const char *text);

/* The thread's current message (never NULL). */
const char *convoy__error_text(void);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_CORE_ERROR_DETAIL_H */
