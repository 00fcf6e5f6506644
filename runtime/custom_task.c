/* Custom tasks: a program's own function placed in the dependency graph by
 * the tensors it declares, so loss, optimizer and data-loading steps order
 * themselves against convolutions and transfers like any other task. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime_int.h"
#include "core/error_detail.h"

/* Accesses a task may have before its payload moves to the heap. */
#define SMALL 8

/* The payload is variable-sized: the header, then count accesses, then count
 * data pointers, all copied into the task so nothing outlives it. */
typedef struct custom_payload {
    convoy_task_fn fn;
    void *user_data;
    convoy_device device;
    size_t count;
    char name[64];
} custom_payload;

static convoy_access *payload_accesses(custom_payload *p)
{
    return (convoy_access *)(void *)(p + 1);
}

static float **payload_data(custom_payload *p)
{
    return (float **)(void *)(payload_accesses(p) + p->count);
}

static int is_known_status(convoy_status status)
{
    switch (status) {
#define CONVOY_STATUS_KNOWN_CASE(name, value, text) case name:
        CONVOY_STATUS_LIST(CONVOY_STATUS_KNOWN_CASE)
#undef CONVOY_STATUS_KNOWN_CASE
        return 1;
    }
    return 0;
}

static convoy_status custom_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    custom_payload *p = payload;
    convoy_task_context context = {p->device, native_stream, p->count, payload_accesses(p),
                                   payload_data(p)};
    convoy__error_set_text(NULL);
    convoy_status status = p->fn(&context, p->user_data);
    if (status == CONVOY_OK)
        return CONVOY_OK;
    if (!is_known_status(status))
        return convoy__error(CONVOY_ERR_TASK_FAILED, "custom task '%s' returned %d", p->name,
                             (int)status);
    return convoy__error(status, "custom task '%s' returned %s", p->name,
                         convoy_status_name(status));
}

convoy_status convoy_submit(convoy_runtime *rt, convoy_task_fn fn, void *user_data,
                            const convoy_access *accesses, size_t count, const char *name,
                            convoy_task **task)
{
    static const char *call = "submit";
    if (!rt || !fn)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call,
                             !rt ? "runtime" : "fn");
    if (count > 0 && !accesses)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: accesses is NULL with count %zu",
                             call, count);
    if (count > 4096)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: count is %zu, expected <= 4096",
                             call, count);
    for (size_t i = 0; i < count; ++i) {
        char which[32];
        snprintf(which, sizeof which, "accesses[%zu].tensor", i);
        convoy_status status = convoy__check_tensor(rt, accesses[i].tensor, call, which);
        if (status != CONVOY_OK)
            return status;
        if (accesses[i].mode != CONVOY_READ && accesses[i].mode != CONVOY_WRITE &&
            accesses[i].mode != CONVOY_READ_WRITE)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                 "%s: accesses[%zu].mode is %d, expected CONVOY_READ, "
                                 "CONVOY_WRITE or CONVOY_READ_WRITE",
                                 call, i, (int)accesses[i].mode);
        for (size_t j = 0; j < i; ++j) {
            if (accesses[j].tensor == accesses[i].tensor)
                return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                     "%s: tensor %s is listed twice (accesses[%zu] and [%zu]); "
                                     "use CONVOY_READ_WRITE",
                                     call, accesses[i].tensor->text, j, i);
        }
    }
    /* Small tasks build their payload on the stack: submission is the hot
     * path of programs made of many tiny steps. */
    size_t size = sizeof(custom_payload) + count * (sizeof(convoy_access) + sizeof(float *));
    _Alignas(max_align_t) unsigned char
        local_payload[sizeof(custom_payload) + SMALL * (sizeof(convoy_access) + sizeof(float *))];
    convoy__hazard_access local_hazards[SMALL];
    custom_payload *p = count <= SMALL ? (custom_payload *)(void *)local_payload : malloc(size);
    convoy__hazard_access *hazards =
        count <= SMALL ? local_hazards : malloc(count * sizeof *hazards);
    if (!p || !hazards) {
        if (count > SMALL) {
            free(p);
            free(hazards);
        }
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory", call);
    }
    p->fn = fn;
    p->user_data = user_data;
    p->device = rt->backend->ops->device;
    p->count = count;
    convoy__text_join(p->name, sizeof p->name, name ? name : "custom", NULL);
    for (size_t i = 0; i < count; ++i) {
        payload_accesses(p)[i] = accesses[i];
        payload_data(p)[i] = convoy__tensor_data(accesses[i].tensor);
        hazards[i] = (convoy__hazard_access){&accesses[i].tensor->hazards, (int)accesses[i].mode};
    }
    char label[96];
    convoy__text_join(label, sizeof label, "custom ", p->name);
    convoy__task_desc desc = {CONVOY__TASK_CUSTOM,
                              CONVOY__QUEUE_COMPUTE,
                              label,
                              custom_run,
                              NULL,
                              NULL,
                              p,
                              size,
                              hazards,
                              count,
                              0};
    convoy_status status = convoy__scheduler_submit(rt->scheduler, &desc, task);
    if (count > SMALL) {
        free(hazards);
        free(p);
    }
    return status;
}
