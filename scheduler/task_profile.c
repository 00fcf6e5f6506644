/* Task timing, dependency chains and trace records (scheduler/task_profile.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/task_profile.h"
#include "core/platform.h"

/* Dependencies described on the stack; more take one allocation. */
#define INPUTS_ON_STACK 16

void convoy__profile_attach(convoy_task *task)
{
    convoy__task_profile *p = calloc(1, sizeof *p);
    if (!p)
        return;
    const convoy__backend_ops *ops = task->backend->ops;
    if (ops->timer_create && ops->timer_create(task->backend, &p->timer) != CONVOY_OK)
        p->timer = NULL; /* the host interval stands in */
    task->profile = p;
}

void convoy__profile_release(convoy_task *task)
{
    convoy__task_profile *p = task->profile;
    if (!p)
        return;
    if (p->timer)
        task->backend->ops->timer_destroy(task->backend, p->timer);
    free(p);
    task->profile = NULL;
}

void convoy__profile_submitted(convoy_task *task, int track)
{
    if (!task->profile)
        return;
    task->profile->submit_us = convoy__now_us();
    task->profile->track = track;
}

/* The host clock is read before the start record and after the end record,
 * so the device interval lies inside the host one wherever the host runs
 * the work itself. */
void convoy__profile_begin(convoy_task *task, void *native_stream)
{
    convoy__task_profile *p = task->profile;
    if (!p)
        return;
    p->host_start_us = convoy__now_us();
    if (p->timer &&
        task->backend->ops->timer_record(task->backend, p->timer, 0, native_stream) != CONVOY_OK)
        p->timer_failed = 1;
}

void convoy__profile_end(convoy_task *task, void *native_stream)
{
    convoy__task_profile *p = task->profile;
    if (!p)
        return;
    if (p->timer && !p->timer_failed &&
        task->backend->ops->timer_record(task->backend, p->timer, 1, native_stream) != CONVOY_OK)
        p->timer_failed = 1;
    p->host_end_us = convoy__now_us();
}

int convoy__profile_ready(const convoy_task *task)
{
    for (int i = 0; i < task->dependency_count; ++i) {
        const convoy__task_profile *d = task->dependencies[i].task->profile;
        if (d && !d->resolved)
            return 0;
    }
    return 1;
}

/* Takes the chain ending at `from` as the one to extend when it is longer. */
static void consider_chain(convoy__task_profile *p, const convoy__task_profile *from)
{
    if (!from || !from->resolved || from->path_tasks == 0 ||
        (p->path_tasks && from->path_us <= p->path_us))
        return;
    p->path_us = from->path_us;
    p->path_tasks = from->path_tasks;
    memcpy(p->path_kind_us, from->path_kind_us, sizeof p->path_kind_us);
    memcpy(p->path_from, from->path_from, sizeof p->path_from);
}

void convoy__profile_resolve(convoy_task *task)
{
    convoy__task_profile *p = task->profile;
    if (!p || p->resolved)
        return;
    double start = p->host_start_us, end = p->host_end_us, device_start, device_end;
    const convoy__backend_ops *ops = task->backend->ops;
    if (p->timer && !p->timer_failed &&
        ops->timer_elapsed(task->backend, p->timer, &device_start, &device_end) == CONVOY_OK &&
        isfinite(device_start) && isfinite(device_end)) {
        /* A stream cannot start work before the host enqueued it: what lies
         * earlier is the error of mapping a device clock onto the host's. */
        start = device_start > p->host_start_us ? device_start : p->host_start_us;
        end = device_end > start ? device_end : start;
    }
    p->start_us = start;
    p->end_us = end > start ? end : start;
    for (int i = 0; i < task->dependency_count; ++i)
        consider_chain(p, task->dependencies[i].task->profile);
    if (p->path_tasks == 0) {
        p->path_us = 0.0;
        memset(p->path_kind_us, 0, sizeof p->path_kind_us);
        memcpy(p->path_from, task->label, sizeof p->path_from);
    }
    double us = p->end_us - p->start_us;
    p->path_us += us;
    p->path_tasks++;
    if ((unsigned)task->kind < CONVOY__TASK_KIND_COUNT)
        p->path_kind_us[task->kind] += us;
    p->resolved = 1;
}

void convoy__profile_fold(convoy_task *task, convoy_task *dependency)
{
    convoy__task_profile *p = task->profile, *d = dependency->profile;
    if (!p || !d)
        return;
    /* It finished, but may not have retired yet. */
    if (!d->resolved && convoy__profile_ready(dependency))
        convoy__profile_resolve(dependency);
    consider_chain(p, d);
}

/* ---- the trace record ------------------------------------------------------ */

/* A number with three decimals, by integer arithmetic: the arguments are
 * JSON, which a locale's decimal comma would break. */
static int put_fixed(char *text, size_t size, const char *key, double value)
{
    long long milli = isfinite(value) && value > 0.0 ? llround(value * 1000.0) : 0;
    return snprintf(text, size, ",\"%s\":%lld.%03lld", key, milli / 1000, milli % 1000);
}

static convoy__trace_role role_of(convoy__task_kind kind)
{
    switch (kind) {
    case CONVOY__TASK_UPLOAD:
    case CONVOY__TASK_DOWNLOAD:
        return CONVOY__TRACE_TRANSFER;
    case CONVOY__TASK_CONV_FORWARD:
    case CONVOY__TASK_CONV_BACKWARD_DATA:
    case CONVOY__TASK_CONV_BACKWARD_FILTER:
    case CONVOY__TASK_CUSTOM:
    case CONVOY__TASK_CONV_FORWARD_BIAS_ACT:
    case CONVOY__TASK_ACTIVATION_BACKWARD:
    case CONVOY__TASK_BIAS_BACKWARD:
    case CONVOY__TASK_SOFTMAX_CROSS_ENTROPY:
    case CONVOY__TASK_SGD_STEP:
        return CONVOY__TRACE_COMPUTE;
    case CONVOY__TASK_RELEASE:
    case CONVOY__TASK_ALLREDUCE:
    case CONVOY__TASK_BROADCAST:
    case CONVOY__TASK_KIND_COUNT:
        return CONVOY__TRACE_OTHER;
    }
    return CONVOY__TRACE_OTHER;
}

void convoy__profile_report(convoy__trace *trace, const convoy_task *task, int enqueue_track)
{
    const convoy__task_profile *p = task->profile;
    if (!trace || !p)
        return;
    convoy__trace_slice local[INPUTS_ON_STACK];
    convoy__trace_slice *inputs = local;
    if (task->dependency_count > INPUTS_ON_STACK) {
        inputs = malloc((size_t)task->dependency_count * sizeof *inputs);
        if (!inputs)
            inputs = local; /* the first arrows only */
    }
    int limit = inputs == local ? INPUTS_ON_STACK : task->dependency_count, input_count = 0;
    for (int i = 0; i < task->dependency_count && input_count < limit; ++i) {
        const convoy__task_profile *d = task->dependencies[i].task->profile;
        if (d && d->resolved)
            inputs[input_count++] = (convoy__trace_slice){d->track, d->start_us, d->end_us};
    }
    convoy__trace_part parts[CONVOY__TASK_KIND_COUNT];
    int part_count = 0;
    for (int k = 0; k < CONVOY__TASK_KIND_COUNT; ++k) {
        if (p->path_kind_us[k] > 0.0)
            parts[part_count++] = (convoy__trace_part){convoy__task_kind_name((convoy__task_kind)k),
                                                       p->path_kind_us[k]};
    }

    char args[256];
    double us = p->end_us - p->start_us;
    int n = snprintf(args, sizeof args, "{\"status\":\"%s\",\"sequence\":%llu,\"dependencies\":%d",
                     convoy_status_name(convoy__task_status(task)),
                     (unsigned long long)task->sequence, input_count);
    if (role_of(task->kind) == CONVOY__TRACE_TRANSFER && n > 0 && (size_t)n < sizeof args) {
        n += snprintf(args + n, sizeof args - (size_t)n, ",\"bytes\":%zu", task->bytes);
        /* Bytes per microsecond are megabytes per second. */
        if (us > 0.0 && (size_t)n < sizeof args)
            n += put_fixed(args + n, sizeof args - (size_t)n, "GB/s",
                           (double)task->bytes / us / 1000.0);
    }
    if (enqueue_track && n > 0 && (size_t)n < sizeof args)
        n += put_fixed(args + n, sizeof args - (size_t)n, "enqueue_us",
                       p->host_end_us - p->host_start_us);
    if (n > 0 && (size_t)n + 2 <= sizeof args)
        memcpy(args + n, "}", 2);

    convoy__trace_task record = {0};
    record.track = p->track;
    record.kind = convoy__task_kind_name(task->kind);
    record.name = task->label;
    record.start_us = p->start_us;
    record.end_us = p->end_us;
    record.args_json = args;
    record.role = role_of(task->kind);
    if (enqueue_track) {
        record.enqueue_track = enqueue_track;
        record.enqueue_start_us = p->host_start_us;
        record.enqueue_end_us = p->host_end_us;
    }
    record.inputs = inputs;
    record.input_count = input_count;
    record.path_us = p->path_us;
    record.path_tasks = p->path_tasks;
    record.path_from = p->path_from;
    record.path_parts = parts;
    record.path_part_count = part_count;
    convoy__trace_task_done(trace, &record);
    if (inputs != local)
        free(inputs);
}
