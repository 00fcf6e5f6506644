/* The public convolution entry points: validate, plan, and submit a task
 * whose workspace is taken from the pool in the order of its stream. */
#include <stdio.h>
#include <string.h>

#include "runtime/conv_shape.h"
#include "runtime/runtime_int.h"
#include "core/error_detail.h"

typedef struct conv_payload {
    convoy__backend *backend;
    convoy__pool *pool;
    const convoy__conv_plan *plan;
    convoy__conv_buffers buffers;
    const convoy__hazards *filters; /* read for the filters' content when the task is queued */
    convoy__block *workspace;
    char label[96];
} conv_payload;

/* Runs as the task is queued, under the scheduler's lock and after its hazards were recorded:
 * the filters' content is then what this task will read (a write of the filters submitted
 * earlier gave it; one submitted later changes it only after this task has run). */
static convoy_status conv_bind(void *payload, convoy__stream *stream)
{
    conv_payload *p = payload;
    p->buffers.filters_content = p->filters->content;
    p->workspace = NULL;
    if (p->plan->workspace_bytes == 0)
        return CONVOY_OK;
    char what[128];
    snprintf(what, sizeof what, "the workspace of %s", p->label);
    return convoy__pool_alloc(p->pool, p->plan->workspace_bytes, stream, what, &p->workspace);
}

static void conv_unbind(void *payload, convoy__stream *stream)
{
    conv_payload *p = payload;
    convoy__pool_free(p->pool, p->workspace, stream);
}

static convoy_status conv_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    conv_payload *p = payload;
    return p->backend->conv->run(p->backend, native_stream, p->plan, &p->buffers,
                                 p->workspace ? p->workspace->ptr : NULL);
}

static const char *const call_names[3] = {"conv_forward", "conv_backward_data",
                                          "conv_backward_filter"};
static const char *const kind_labels[3] = {"conv_fwd", "conv_bwd_data", "conv_bwd_filter"};

/* The operands in forward roles: x input, w filters, y output. */
static convoy_status submit_conv(convoy_runtime *rt, const convoy_conv_params *params,
                                 convoy_conv_direction direction, convoy_tensor *x,
                                 convoy_tensor *w, convoy_tensor *y, convoy_task **task)
{
    const char *call = call_names[direction];
    static const char *const names[3][3] = {{"input", "filters", "output"},
                                            {"grad_input", "filters", "grad_output"},
                                            {"input", "grad_filters", "grad_output"}};
    const char *const *n = names[direction];
    if (!rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: runtime is NULL", call);
    convoy_status status = convoy__conv_check_params(call, params);
    if (status != CONVOY_OK)
        return status;
    if ((status = convoy__check_tensor(rt, x, call, n[0])) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, w, call, n[1])) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, y, call, n[2])) != CONVOY_OK)
        return status;
    const int written_index = direction == CONVOY_CONV_FORWARD         ? 2
                              : direction == CONVOY_CONV_BACKWARD_DATA ? 0
                                                                       : 1;
    convoy_tensor *operands[3] = {x, w, y};
    convoy_tensor *written = operands[written_index];
    for (int j = 0; j < 3; ++j) {
        if (j != written_index && operands[j] == written)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                 "%s: %s and %s are the same tensor; the result may not alias "
                                 "an operand",
                                 call, n[written_index], n[j]);
    }
    convoy__conv_operands op = {x->dims, x->ndim, w->dims,           w->ndim,
                                y->dims, y->ndim, {n[0], n[1], n[2]}};
    convoy__conv_geom geom;
    if ((status = convoy__conv_resolve(call, params, &op, &geom, NULL)) != CONVOY_OK)
        return status;
    const convoy__conv_plan *plan = NULL;
    if ((status = convoy__planner_plan(rt->planner, call, &geom, direction, &plan, NULL)) !=
        CONVOY_OK)
        return status;
    conv_payload payload = {
        rt->backend, rt->pool,
        plan,        {convoy__tensor_data(x), convoy__tensor_data(w), convoy__tensor_data(y), 0},
        &w->hazards, NULL,
        ""};
    snprintf(payload.label, sizeof payload.label, "%s %s * %s %s", kind_labels[direction], x->text,
             w->text, plan->candidate.name);
    convoy__hazard_access accesses[3] = {
        {&x->hazards, written == x ? CONVOY_WRITE : CONVOY_READ},
        {&w->hazards, written == w ? CONVOY_WRITE : CONVOY_READ},
        {&y->hazards, written == y ? CONVOY_WRITE : CONVOY_READ},
    };
    convoy__task_desc desc = {(convoy__task_kind)(CONVOY__TASK_CONV_FORWARD + (int)direction),
                              CONVOY__QUEUE_COMPUTE,
                              payload.label,
                              conv_run,
                              conv_bind,
                              conv_unbind,
                              &payload,
                              sizeof payload,
                              accesses,
                              3};
    return convoy__scheduler_submit(rt->scheduler, &desc, task);
}

convoy_status convoy_conv_forward(convoy_runtime *rt, const convoy_conv_params *params,
                                  convoy_tensor *input, convoy_tensor *filters,
                                  convoy_tensor *output, convoy_task **task)
{
    return submit_conv(rt, params, CONVOY_CONV_FORWARD, input, filters, output, task);
}

convoy_status convoy_conv_backward_data(convoy_runtime *rt, const convoy_conv_params *params,
                                        convoy_tensor *filters, convoy_tensor *grad_output,
                                        convoy_tensor *grad_input, convoy_task **task)
{
    return submit_conv(rt, params, CONVOY_CONV_BACKWARD_DATA, grad_input, filters, grad_output,
                       task);
}

convoy_status convoy_conv_backward_filter(convoy_runtime *rt, const convoy_conv_params *params,
                                          convoy_tensor *input, convoy_tensor *grad_output,
                                          convoy_tensor *grad_filters, convoy_task **task)
{
    return submit_conv(rt, params, CONVOY_CONV_BACKWARD_FILTER, input, grad_filters, grad_output,
                       task);
}

convoy_status convoy_conv_explain(convoy_runtime *rt, const convoy_conv_params *params,
                                  convoy_conv_direction direction, const int64_t *input_dims,
                                  const int64_t *filter_dims, const int64_t *output_dims,
                                  convoy_conv_plan_info *info)
{
    static const char *call = "conv_explain";
    if (!rt || !input_dims || !filter_dims || !output_dims || !info)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call,
                             !rt            ? "runtime"
                             : !input_dims  ? "input_dims"
                             : !filter_dims ? "filter_dims"
                             : !output_dims ? "output_dims"
                                            : "info");
    if ((int)direction < 0 || direction > CONVOY_CONV_BACKWARD_FILTER)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: direction is %d, expected 0..2",
                             call, (int)direction);
    convoy_status status = convoy__conv_check_params(call, params);
    if (status != CONVOY_OK)
        return status;
    const int rank = params->spatial_dims + 2;
    const int filter_rank = params->unshared ? 6 : rank;
    for (int j = 0; j < filter_rank; ++j) {
        if ((j < rank && (input_dims[j] < 0 || output_dims[j] < 0)) || filter_dims[j] < 0)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: dim %d is negative", call, j);
    }
    convoy__conv_operands op = {input_dims,
                                rank,
                                filter_dims,
                                filter_rank,
                                output_dims,
                                rank,
                                {"input", "filters", "output"}};
    convoy__conv_geom geom;
    if ((status = convoy__conv_resolve(call, params, &op, &geom, NULL)) != CONVOY_OK)
        return status;
    const convoy__conv_plan *plan = NULL;
    int from_cache = 0;
    if ((status = convoy__planner_plan(rt->planner, call, &geom, direction, &plan, &from_cache)) !=
        CONVOY_OK)
        return status;
    memset(info, 0, sizeof *info);
    snprintf(info->implementation, sizeof info->implementation, "%s", plan->candidate.algo->name);
    snprintf(info->algorithm, sizeof info->algorithm, "%s", plan->candidate.name);
    info->workspace_bytes = plan->workspace_bytes;
    /* Only algorithms that work in image chunks ask for workspace per image. */
    info->images_per_chunk = plan->candidate.workspace_per_image > 0 ? plan->images_per_chunk : 0;
    info->from_cache = from_cache;
    return CONVOY_OK;
}
