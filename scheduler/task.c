/* Task handles: waiting, polling, and the reference counting that
 * frees a task once nothing can observe it any more. */
#include <stdlib.h>
#include <string.h>

#include "core/error_detail.h"
#include "scheduler/task_int.h"
#include "scheduler/task_profile.h"

/* Failures recorded when there is no memory for the text: the status name
 * stands in for it. */
static convoy__failure static_failures[] = {
#define CONVOY_STATUS_FAILURE_ENTRY(name, value, text) [value] = {name, 0, #name},
    CONVOY_STATUS_LIST(CONVOY_STATUS_FAILURE_ENTRY)
#undef CONVOY_STATUS_FAILURE_ENTRY
};

static void task_free(convoy_task *task)
{
    if (task->event)
        task->backend->ops->event_destroy(task->backend, task->event);
    /* A detached task gave its profile back with its event. */
    convoy__profile_release(task);
    /* The scheduler drops the dependencies when the task retires; these are
     * only left when a task is freed without ever being submitted. */
    for (int i = 0; i < task->dependency_count; ++i)
        convoy__task_unref(task->dependencies[i].task);
    free(task->dependencies);
    convoy__failure *failure = atomic_load_explicit(&task->failure, memory_order_acquire);
    if (failure && failure->allocated)
        free(failure);
    free(task);
}

void convoy__task_unref(convoy_task *task)
{
    if (atomic_fetch_sub_explicit(&task->refs, 1, memory_order_acq_rel) == 1)
        task_free(task);
}

int convoy__task_set_failure(convoy_task *task, convoy_status status, const char *message)
{
    if (atomic_load_explicit(&task->failure, memory_order_acquire))
        return 0;
    if (!message || !*message)
        message = convoy_status_name(status);
    size_t size = strlen(message) + 1;
    convoy__failure *failure = malloc(sizeof *failure + size);
    if (failure) {
        char *text = (char *)(failure + 1);
        memcpy(text, message, size);
        *failure = (convoy__failure){status, 1, text};
    } else {
        size_t count = sizeof static_failures / sizeof *static_failures;
        failure = &static_failures[(size_t)status < count && status != CONVOY_OK
                                       ? (size_t)status
                                       : (size_t)CONVOY_ERR_INTERNAL];
    }
    convoy__failure *none = NULL;
    if (atomic_compare_exchange_strong_explicit(&task->failure, &none, failure,
                                                memory_order_acq_rel, memory_order_acquire))
        return 1;
    if (failure->allocated)
        free(failure);
    return 0;
}

convoy_status convoy__task_status(const convoy_task *task)
{
    const convoy__failure *failure =
        atomic_load_explicit(&((convoy_task *)task)->failure, memory_order_acquire);
    return failure ? failure->status : CONVOY_OK;
}

const char *convoy__task_message(const convoy_task *task)
{
    const convoy__failure *failure =
        atomic_load_explicit(&((convoy_task *)task)->failure, memory_order_acquire);
    return failure ? failure->message : NULL;
}

convoy_status convoy_task_wait(convoy_task *task)
{
    if (!task)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "task_wait: task is NULL");
    if (task->event) {
        convoy_status sync = task->backend->ops->event_synchronize(task->backend, task->event);
        if (sync != CONVOY_OK)
            (void)convoy__task_set_failure(task, sync, convoy__error_text());
    }
    const convoy__failure *failure = atomic_load_explicit(&task->failure, memory_order_acquire);
    if (!failure)
        return CONVOY_OK;
    convoy__error_set_text(failure->message);
    return failure->status;
}

int convoy_task_done(convoy_task *task)
{
    if (!task || !task->event)
        return 1;
    return task->backend->ops->event_query(task->backend, task->event, NULL);
}
