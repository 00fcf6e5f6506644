/* Scheduler internals shared between scheduler.c and task.c. */
#ifndef CONVOY_SCHEDULER_SCHEDULER_INT_H
#define CONVOY_SCHEDULER_SCHEDULER_INT_H

#include "scheduler/scheduler.h"

/* Unlinks a task from the list of tasks the program holds handles to. */
void convoy__scheduler_forget_handle(convoy__scheduler *scheduler, convoy_task *task);

#endif /* CONVOY_SCHEDULER_SCHEDULER_INT_H */
