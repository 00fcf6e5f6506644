/* Task handles: waiting, polling, and the reference counting that
 * frees a task once nothing can observe it any more. */
#include <stdlib.h>
#include <string.h>

#include "core/error_detail.h"
#include "scheduler/task_int.h"

static void task_free(convoy_task *task)
{
    if (task->event)
        task->backend->ops->event_destroy(task->backend, task->event);
    free(task->dependencies);
    free(task->message);
    free(task);
}

void convoy__task_unref(convoy_task *task)
{
    if (atomic_fetch_sub_explicit(&task->refs, 1, memory_order_acq_rel) == 1)
        task_free(task);
}

void convoy__task_set_failure(convoy_task *task, convoy_status status, const char *message)
{
    task->status = status;
    free(task->message);
    task->message = strdup(message && *message ? message : convoy_status_name(status));
}

convoy_status convoy_task_wait(convoy_task *task)
{
    if (!task)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "task_wait: task is NULL");
    if (task->event) {
        convoy_status sync = task->backend->ops->event_synchronize(task->backend, task->event);
        if (sync != CONVOY_OK && task->status == CONVOY_OK)
            convoy__task_set_failure(task, sync, convoy__error_text());
    }
    if (task->status != CONVOY_OK)
        convoy__error_set_text(task->message);
    return task->status;
}

int convoy_task_done(convoy_task *task)
{
    if (!task || !task->event)
        return 1;
    return task->backend->ops->event_query(task->backend, task->event, NULL);
}
