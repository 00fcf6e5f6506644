/* The public convolution entry points: validate, plan, and submit a task
 * whose workspace is taken from the pool in the order of its stream. When
 * the pool cannot grant the workspace the plan asks for, the task runs with
 * fewer images per chunk, down to one, and then with the plan's fallback
 * (an algorithm that needs less, often none): a tight memory limit costs
 * speed, never the result. A forward convolution may carry an epilogue (bias
 * and activation, convoy_conv_forward_bias_act): the algorithm fuses it when
 * it can (kernels/conv_algo.h, run_fused), and otherwise the same task runs
 * it as a pass of the backend's train ops over the output. */
#include <stdio.h>
#include <string.h>

#include "kernels/train_ops.h"
#include "runtime/conv_shape.h"
#include "runtime/runtime_int.h"
#include "core/error_detail.h"

typedef struct conv_payload {
    convoy__backend *backend;
    convoy__pool *pool;
    /* The plan and its fallback belong to the planner; the task is one of
     * the plan's users (convoy__planner_users), which keeps both alive until
     * the task completes. */
    const convoy__conv_plan *plan;
    const convoy__conv_plan *fallback;
    /* What bind settled on: the plan or its fallback, with as many images
     * per chunk as the workspace it got holds. */
    const convoy__conv_plan *chosen;
    int64_t images_per_chunk;
    size_t workspace_bytes;
    convoy__conv_buffers buffers;
    const convoy__hazards *filters; /* read for the filters' content when the task is queued */
    convoy__block *workspace;
    int has_epilogue;
    convoy__conv_epilogue epilogue;
    char label[96];
} conv_payload;

/* Takes the workspace plan asks for; when the pool is out of memory, the
 * same algorithm's workspace for fewer images per chunk: as many as the pool
 * says it can grant, then halving down to one image (fragmentation can make
 * a grant fail all the same). Records what it took in the payload. */
static convoy_status take_workspace(conv_payload *p, const convoy__conv_plan *plan,
                                    convoy__stream *stream, const char *what)
{
    p->chosen = plan;
    p->images_per_chunk = plan->images_per_chunk;
    p->workspace_bytes = plan->workspace_bytes;
    if (plan->workspace_bytes == 0)
        return CONVOY_OK;
    convoy_status status =
        convoy__pool_alloc(p->pool, plan->workspace_bytes, stream, what, &p->workspace);
    const size_t fixed = plan->candidate.workspace_fixed;
    const size_t per_image = plan->candidate.workspace_per_image;
    if (status != CONVOY_ERR_OUT_OF_MEMORY || per_image == 0 || plan->images_per_chunk <= 1)
        return status;
    size_t available = convoy__pool_available(p->pool);
    int64_t chunk = plan->images_per_chunk - 1;
    if (available > fixed && (available - fixed) / per_image < (uint64_t)chunk)
        chunk = (int64_t)((available - fixed) / per_image);
    if (chunk < 1)
        chunk = 1;
    for (;;) {
        /* Fewer images than planned: no larger than the planned bytes. */
        size_t bytes = fixed + per_image * (size_t)chunk;
        status = convoy__pool_alloc(p->pool, bytes, stream, what, &p->workspace);
        if (status == CONVOY_OK) {
            p->images_per_chunk = chunk;
            p->workspace_bytes = bytes;
            return CONVOY_OK;
        }
        if (status != CONVOY_ERR_OUT_OF_MEMORY || chunk == 1)
            return status;
        chunk /= 2;
    }
}

/* Runs as the task is queued, under the scheduler's lock and after its
 * hazards were recorded, so it never calls the planner (the fallback was
 * prepared with the plan). The filters' content is then what this task will
 * read: a write of the filters submitted earlier gave it, and one submitted
 * later changes it only after this task has run. */
static convoy_status conv_bind(void *payload, convoy__stream *stream)
{
    conv_payload *p = payload;
    p->buffers.filters_content = p->filters->content;
    p->workspace = NULL;
    p->chosen = p->plan;
    p->images_per_chunk = p->plan->images_per_chunk;
    p->workspace_bytes = p->plan->workspace_bytes;
    if (p->plan->workspace_bytes == 0)
        return CONVOY_OK;
    char what[128];
    snprintf(what, sizeof what, "the workspace of %s", p->label);
    convoy_status status = take_workspace(p, p->plan, stream, what);
    if (status != CONVOY_ERR_OUT_OF_MEMORY || !p->fallback)
        return status;
    return take_workspace(p, p->fallback, stream, what);
}

static void conv_unbind(void *payload, convoy__stream *stream)
{
    conv_payload *p = payload;
    convoy__pool_free(p->pool, p->workspace, stream);
}

static convoy_status conv_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    conv_payload *p = payload;
    const convoy__conv_plan *plan = p->chosen;
    convoy__conv_plan fewer;
    if (p->images_per_chunk != plan->images_per_chunk) {
        fewer = *plan;
        fewer.images_per_chunk = p->images_per_chunk;
        fewer.workspace_bytes = p->workspace_bytes;
        plan = &fewer;
    }
    convoy__backend *be = p->backend;
    void *workspace = p->workspace ? p->workspace->ptr : NULL;
    if (!p->has_epilogue)
        return be->conv->run(be, native_stream, plan, &p->buffers, workspace);
    if (be->conv->run_fused) {
        convoy_status status =
            be->conv->run_fused(be, native_stream, plan, &p->buffers, workspace, &p->epilogue);
        if (status != CONVOY_ERR_UNSUPPORTED)
            return status;
    }
    convoy_status status = be->conv->run(be, native_stream, plan, &p->buffers, workspace);
    if (status != CONVOY_OK)
        return status;
    const convoy__conv_geom *g = &plan->geom;
    return be->train->bias_act(be, native_stream, p->buffers.output, p->epilogue.bias, g->batch,
                               g->out_channels, convoy__geom_out_spatial(g), p->epilogue.act);
}

static const char *const call_names[3] = {"conv_forward", "conv_backward_data",
                                          "conv_backward_filter"};
static const char *const kind_labels[3] = {"conv_fwd", "conv_bwd_data", "conv_bwd_filter"};

/* A forward convolution's epilogue: none, or a bias (may be NULL) and an activation. */
typedef struct epilogue_request {
    int present;
    convoy_tensor *bias;
    convoy_activation act;
} epilogue_request;

/* The bias must be 1-D with one value per output channel, and not the output itself. */
static convoy_status check_epilogue(convoy_runtime *rt, const char *call, const epilogue_request *e,
                                    const convoy_tensor *y)
{
    if ((int)e->act != CONVOY_ACTIVATION_NONE && e->act != CONVOY_ACTIVATION_RELU)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: act is %d, expected CONVOY_ACTIVATION_NONE (0) or "
                             "CONVOY_ACTIVATION_RELU (1)",
                             call, (int)e->act);
    if (!e->bias)
        return CONVOY_OK;
    convoy_status status = convoy__check_tensor(rt, e->bias, call, "bias");
    if (status != CONVOY_OK)
        return status;
    if (e->bias == y)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: bias and output are the same tensor; the result may not alias "
                             "an operand",
                             call);
    return CONVOY_OK;
}

static convoy_status check_bias_shape(const char *call, const convoy_tensor *bias,
                                      const convoy__conv_geom *geom)
{
    if (bias->ndim != 1)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: bias (%s) has rank %d, expected rank 1 (M) with M = %lld, the "
                             "filters' dim 0",
                             call, bias->text, bias->ndim, (long long)geom->out_channels);
    if (bias->dims[0] != geom->out_channels)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: bias dim 0 is %lld, expected %lld: one value per output "
                             "channel (filters' dim 0)",
                             call, (long long)bias->dims[0], (long long)geom->out_channels);
    return CONVOY_OK;
}

/* The operands in forward roles: x input, w filters, y output. */
static convoy_status submit_conv(convoy_runtime *rt, const convoy_conv_params *params,
                                 convoy_conv_direction direction, convoy_tensor *x,
                                 convoy_tensor *w, convoy_tensor *y, const epilogue_request *e,
                                 convoy_task **task)
{
    const char *call = e->present ? "conv_forward_bias_act" : call_names[direction];
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
    if (e->present && (status = check_epilogue(rt, call, e, y)) != CONVOY_OK)
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
    if (e->present && e->bias && (status = check_bias_shape(call, e->bias, &geom)) != CONVOY_OK)
        return status;
    const convoy__conv_plan *plan = NULL;
    if ((status = convoy__planner_plan(rt->planner, call, &geom, direction, &plan, NULL)) !=
        CONVOY_OK)
        return status;
    conv_payload payload = {
        .backend = rt->backend,
        .pool = rt->pool,
        .plan = plan,
        .fallback = convoy__planner_fallback(plan),
        .chosen = plan,
        .images_per_chunk = plan->images_per_chunk,
        .workspace_bytes = plan->workspace_bytes,
        .buffers = {convoy__tensor_data(x), convoy__tensor_data(w), convoy__tensor_data(y), 0},
        .filters = &w->hazards,
        .has_epilogue = e->present && (e->bias || e->act != CONVOY_ACTIVATION_NONE),
        .epilogue = {NULL, CONVOY_ACTIVATION_NONE}};
    convoy__task_kind kind = (convoy__task_kind)(CONVOY__TASK_CONV_FORWARD + (int)direction);
    const char *kind_label = kind_labels[direction];
    if (e->present) {
        payload.epilogue.bias = e->bias ? convoy__tensor_data(e->bias) : NULL;
        payload.epilogue.act = e->act;
        kind = CONVOY__TASK_CONV_FORWARD_BIAS_ACT;
        kind_label = e->act == CONVOY_ACTIVATION_RELU
                         ? (e->bias ? "conv_fwd_bias_relu" : "conv_fwd_relu")
                         : (e->bias ? "conv_fwd_bias" : "conv_fwd");
    }
    snprintf(payload.label, sizeof payload.label, "%s %s * %s %s", kind_label, x->text, w->text,
             plan->candidate.name);
    /* The plan-users access makes the task one of the plan's users: it orders
     * the task after nothing, and keeps the plan alive until it completes. A
     * bias that is also the input or the filters is read once. */
    convoy__hazard_access accesses[5] = {
        {&x->hazards, written == x ? CONVOY_WRITE : CONVOY_READ},
        {&w->hazards, written == w ? CONVOY_WRITE : CONVOY_READ},
        {&y->hazards, written == y ? CONVOY_WRITE : CONVOY_READ},
        {convoy__planner_users(plan), CONVOY_READ},
        {NULL, CONVOY_READ},
    };
    size_t access_count = 4;
    if (e->present && e->bias && e->bias != x && e->bias != w)
        accesses[access_count++].hazards = &e->bias->hazards;
    convoy__task_desc desc = {
        kind,     CONVOY__QUEUE_COMPUTE, payload.label, conv_run,     conv_bind, conv_unbind,
        &payload, sizeof payload,        accesses,      access_count, 0};
    status = convoy__scheduler_submit(rt->scheduler, &desc, task);
    convoy__planner_release(rt->planner, plan);
    return status;
}

convoy_status convoy_conv_forward(convoy_runtime *rt, const convoy_conv_params *params,
                                  convoy_tensor *input, convoy_tensor *filters,
                                  convoy_tensor *output, convoy_task **task)
{
    const epilogue_request none = {0, NULL, CONVOY_ACTIVATION_NONE};
    return submit_conv(rt, params, CONVOY_CONV_FORWARD, input, filters, output, &none, task);
}

convoy_status convoy_conv_forward_bias_act(convoy_runtime *rt, const convoy_conv_params *params,
                                           convoy_tensor *input, convoy_tensor *filters,
                                           convoy_tensor *bias, convoy_activation act,
                                           convoy_tensor *output, convoy_task **task)
{
    const epilogue_request e = {1, bias, act};
    return submit_conv(rt, params, CONVOY_CONV_FORWARD, input, filters, output, &e, task);
}

convoy_status convoy_conv_backward_data(convoy_runtime *rt, const convoy_conv_params *params,
                                        convoy_tensor *filters, convoy_tensor *grad_output,
                                        convoy_tensor *grad_input, convoy_task **task)
{
    const epilogue_request none = {0, NULL, CONVOY_ACTIVATION_NONE};
    return submit_conv(rt, params, CONVOY_CONV_BACKWARD_DATA, grad_input, filters, grad_output,
                       &none, task);
}

convoy_status convoy_conv_backward_filter(convoy_runtime *rt, const convoy_conv_params *params,
                                          convoy_tensor *input, convoy_tensor *grad_output,
                                          convoy_tensor *grad_filters, convoy_task **task)
{
    const epilogue_request none = {0, NULL, CONVOY_ACTIVATION_NONE};
    return submit_conv(rt, params, CONVOY_CONV_BACKWARD_FILTER, input, grad_filters, grad_output,
                       &none, task);
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
    convoy__planner_release(rt->planner, plan);
    return CONVOY_OK;
}
