/* The public training ops besides the fused convolution (which is in conv_api.c): activation
 * gradient, bias gradient, softmax cross-entropy and the SGD step. Each validates its
 * tensors at submit, with messages naming the call, the tensor, the dim, and the expected and
 * actual values, then submits one task whose body calls the backend's train ops
 * (kernels/train_ops.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime/runtime_int.h"
#include "kernels/train_ops.h"
#include "core/error_detail.h"

/* ---- validation ------------------------------------------------------------------------ */

static convoy_status null_runtime(const char *call)
{
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: runtime is NULL", call);
}

static convoy_status check_act(const char *call, convoy_activation act)
{
    if ((int)act == CONVOY_ACTIVATION_NONE || act == CONVOY_ACTIVATION_RELU)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "%s: act is %d, expected CONVOY_ACTIVATION_NONE (0) or "
                         "CONVOY_ACTIVATION_RELU (1)",
                         call, (int)act);
}

static convoy_status aliased(const char *call, const char *a, const char *b)
{
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "%s: %s and %s are the same tensor; they must be distinct", call, a, b);
}

/* t must have the dims of the reference tensor ref: the same rank and every extent. */
static convoy_status check_same_dims(const char *call, const char *name, const convoy_tensor *t,
                                     const char *ref_name, const convoy_tensor *ref)
{
    if (t->ndim != ref->ndim)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: %s (%s) has rank %d, expected rank %d as %s (%s)", call, name,
                             t->text, t->ndim, ref->ndim, ref_name, ref->text);
    for (int d = 0; d < t->ndim; ++d) {
        if (t->dims[d] != ref->dims[d])
            return convoy__error(
                CONVOY_ERR_SHAPE, "%s: %s dim %d is %lld, expected %lld as %s (%s)", call, name, d,
                (long long)t->dims[d], (long long)ref->dims[d], ref_name, ref->text);
    }
    return CONVOY_OK;
}

/* A 1-D tensor of `length` elements. what says where the length comes from. */
static convoy_status check_vector(const char *call, const char *name, const convoy_tensor *t,
                                  int64_t length, const char *what)
{
    if (t->ndim != 1)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: %s (%s) has rank %d, expected rank 1 (%lld: %s)", call, name,
                             t->text, t->ndim, (long long)length, what);
    if (t->dims[0] != length)
        return convoy__error(CONVOY_ERR_SHAPE, "%s: %s dim 0 is %lld, expected %lld (%s)", call,
                             name, (long long)t->dims[0], (long long)length, what);
    return CONVOY_OK;
}

static convoy_status submit(convoy_runtime *rt, convoy__task_kind kind, const char *label,
                            convoy__task_run_fn run, convoy__task_bind_fn bind,
                            convoy__task_unbind_fn unbind, const void *payload, size_t size,
                            const convoy__hazard_access *accesses, size_t count, convoy_task **task)
{
    convoy__task_desc desc = {
        kind, CONVOY__QUEUE_COMPUTE, label, run, bind, unbind, payload, size, accesses, count, 0};
    return convoy__scheduler_submit(rt->scheduler, &desc, task);
}

/* ---- activation gradient ------------------------------------------------------------------ */

typedef struct act_payload {
    convoy__backend *backend;
    convoy_activation act;
    const float *output;
    const float *grad_output;
    float *grad_input;
    int64_t numel;
} act_payload;

static convoy_status act_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    act_payload *p = payload;
    if (p->numel == 0)
        return CONVOY_OK;
    return p->backend->train->act_backward(p->backend, native_stream, p->act, p->output,
                                           p->grad_output, p->grad_input, p->numel);
}

convoy_status convoy_activation_backward(convoy_runtime *rt, convoy_activation act,
                                         convoy_tensor *output, convoy_tensor *grad_output,
                                         convoy_tensor *grad_input, convoy_task **task)
{
    static const char *call = "activation_backward";
    if (!rt)
        return null_runtime(call);
    convoy_status status;
    if ((status = check_act(call, act)) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, output, call, "output")) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, grad_output, call, "grad_output")) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, grad_input, call, "grad_input")) != CONVOY_OK)
        return status;
    if (grad_input == output)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: grad_input and output are the same tensor; grad_input may be "
                             "grad_output (in place) but not output",
                             call);
    if ((status = check_same_dims(call, "grad_output", grad_output, "output", output)) !=
            CONVOY_OK ||
        (status = check_same_dims(call, "grad_input", grad_input, "output", output)) != CONVOY_OK)
        return status;
    act_payload payload = {rt->backend,
                           act,
                           convoy__tensor_data(output),
                           convoy__tensor_data(grad_output),
                           convoy__tensor_data(grad_input),
                           output->numel};
    const int in_place = grad_input == grad_output;
    convoy__hazard_access accesses[3] = {
        {&output->hazards, CONVOY_READ},
        {&grad_output->hazards, in_place ? CONVOY_READ_WRITE : CONVOY_READ},
        {&grad_input->hazards, CONVOY_WRITE},
    };
    char label[96];
    snprintf(label, sizeof label, "act_bwd %s %s", act == CONVOY_ACTIVATION_RELU ? "relu" : "none",
             output->text);
    return submit(rt, CONVOY__TASK_ACTIVATION_BACKWARD, label, act_run, NULL, NULL, &payload,
                  sizeof payload, accesses, in_place ? 2 : 3, task);
}

/* ---- bias gradient --------------------------------------------------------------------- */

typedef struct bias_payload {
    convoy__backend *backend;
    const float *grad;
    int64_t count, channels, inner;
    float *grad_bias;
} bias_payload;

static convoy_status bias_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    bias_payload *p = payload;
    if (p->channels == 0)
        return CONVOY_OK;
    return p->backend->train->bias_backward(p->backend, native_stream, p->grad, p->count,
                                            p->channels, p->inner, p->grad_bias);
}

convoy_status convoy_bias_backward(convoy_runtime *rt, convoy_tensor *grad,
                                   convoy_tensor *grad_bias, convoy_task **task)
{
    static const char *call = "bias_backward";
    if (!rt)
        return null_runtime(call);
    convoy_status status;
    if ((status = convoy__check_tensor(rt, grad, call, "grad")) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, grad_bias, call, "grad_bias")) != CONVOY_OK)
        return status;
    if (grad == grad_bias)
        return aliased(call, "grad_bias", "grad");
    if (grad->ndim < 2)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: grad (%s) has rank %d, expected rank 2 or more (N, M, ...)", call,
                             grad->text, grad->ndim);
    if ((status = check_vector(call, "grad_bias", grad_bias, grad->dims[1],
                               "one value per channel, grad's dim 1")) != CONVOY_OK)
        return status;
    int64_t inner = 1;
    for (int d = 2; d < grad->ndim; ++d)
        inner *= grad->dims[d];
    bias_payload payload = {rt->backend,   convoy__tensor_data(grad),
                            grad->dims[0], grad->dims[1],
                            inner,         convoy__tensor_data(grad_bias)};
    convoy__hazard_access accesses[2] = {{&grad->hazards, CONVOY_READ},
                                         {&grad_bias->hazards, CONVOY_WRITE}};
    char label[96];
    snprintf(label, sizeof label, "bias_bwd %s", grad->text);
    return submit(rt, CONVOY__TASK_BIAS_BACKWARD, label, bias_run, NULL, NULL, &payload,
                  sizeof payload, accesses, 2, task);
}

/* ---- softmax cross-entropy --------------------------------------------------------------- */

typedef struct xent_payload {
    convoy__backend *backend;
    convoy__pool *pool;
    convoy__xent_args args;
    convoy__block *workspace;
} xent_payload;

static convoy_status xent_bind(void *payload, convoy__stream *stream)
{
    xent_payload *p = payload;
    p->workspace = NULL;
    size_t bytes = p->backend->train->xent_workspace_bytes;
    if (bytes == 0)
        return CONVOY_OK;
    return convoy__pool_alloc(p->pool, bytes, stream, "the workspace of softmax_cross_entropy",
                              &p->workspace);
}

static void xent_unbind(void *payload, convoy__stream *stream)
{
    xent_payload *p = payload;
    convoy__pool_free(p->pool, p->workspace, stream);
}

static convoy_status xent_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    xent_payload *p = payload;
    return p->backend->train->softmax_xent(p->backend, native_stream, &p->args,
                                           p->workspace ? p->workspace->ptr : NULL);
}

/* logits: (N, K), or (N, K, 1, ...) with every further dim 1. */
static convoy_status check_logits(const char *call, const convoy_tensor *logits)
{
    if (logits->ndim != 2 && logits->ndim != 4 && logits->ndim != 5)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: logits (%s) has rank %d, expected (N, K), (N, K, 1, 1) or (N, "
                             "K, 1, 1, 1)",
                             call, logits->text, logits->ndim);
    for (int d = 2; d < logits->ndim; ++d) {
        if (logits->dims[d] != 1)
            return convoy__error(CONVOY_ERR_SHAPE,
                                 "%s: logits dim %d is %lld, expected 1: only (N, K) scores per "
                                 "row, with 1x1 spatial extents from a classifier convolution",
                                 call, d, (long long)logits->dims[d]);
    }
    if (logits->dims[0] < 1)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: logits dim 0 is %lld, expected at least 1 row: the mean of no "
                             "losses is undefined",
                             call, (long long)logits->dims[0]);
    if (logits->dims[1] < 1)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: logits dim 1 is %lld, expected at least 1 class", call,
                             (long long)logits->dims[1]);
    return CONVOY_OK;
}

convoy_status convoy_softmax_cross_entropy(convoy_runtime *rt, convoy_tensor *logits,
                                           convoy_tensor *labels, convoy_tensor *loss,
                                           convoy_tensor *grad_logits, convoy_tensor *correct,
                                           convoy_task **task)
{
    static const char *call = "softmax_cross_entropy";
    if (!rt)
        return null_runtime(call);
    convoy_status status;
    if ((status = convoy__check_tensor(rt, logits, call, "logits")) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, labels, call, "labels")) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, loss, call, "loss")) != CONVOY_OK ||
        (grad_logits &&
         (status = convoy__check_tensor(rt, grad_logits, call, "grad_logits")) != CONVOY_OK) ||
        (correct && (status = convoy__check_tensor(rt, correct, call, "correct")) != CONVOY_OK))
        return status;
    /* Every tensor once: the three outputs apart from each other and from the two inputs. */
    convoy_tensor *const all[5] = {logits, labels, loss, grad_logits, correct};
    static const char *const names[5] = {"logits", "labels", "loss", "grad_logits", "correct"};
    for (int i = 2; i < 5; ++i) {
        for (int j = 0; j < i && all[i]; ++j) {
            if (all[i] == all[j])
                return aliased(call, names[i], names[j]);
        }
    }
    if (labels == logits)
        return aliased(call, "labels", "logits");
    if ((status = check_logits(call, logits)) != CONVOY_OK ||
        (status = check_vector(call, "labels", labels, logits->dims[0],
                               "one class index per row of logits")) != CONVOY_OK ||
        (status = check_vector(call, "loss", loss, 1, "the mean loss")) != CONVOY_OK ||
        (grad_logits && (status = check_same_dims(call, "grad_logits", grad_logits, "logits",
                                                  logits)) != CONVOY_OK) ||
        (correct && (status = check_vector(call, "correct", correct, 1,
                                           "the count of rows classified right")) != CONVOY_OK))
        return status;
    xent_payload payload = {rt->backend,
                            rt->pool,
                            {convoy__tensor_data(logits), convoy__tensor_data(labels),
                             logits->dims[0], logits->dims[1], convoy__tensor_data(loss),
                             grad_logits ? convoy__tensor_data(grad_logits) : NULL,
                             correct ? convoy__tensor_data(correct) : NULL},
                            NULL};
    convoy__hazard_access accesses[5];
    size_t count = 0;
    accesses[count++] = (convoy__hazard_access){&logits->hazards, CONVOY_READ};
    accesses[count++] = (convoy__hazard_access){&labels->hazards, CONVOY_READ};
    accesses[count++] = (convoy__hazard_access){&loss->hazards, CONVOY_WRITE};
    if (grad_logits)
        accesses[count++] = (convoy__hazard_access){&grad_logits->hazards, CONVOY_WRITE};
    if (correct)
        accesses[count++] = (convoy__hazard_access){&correct->hazards, CONVOY_WRITE};
    char label[96];
    snprintf(label, sizeof label, "softmax_xent %s", logits->text);
    return submit(rt, CONVOY__TASK_SOFTMAX_CROSS_ENTROPY, label, xent_run, xent_bind, xent_unbind,
                  &payload, sizeof payload, accesses, count, task);
}

/* ---- SGD ------------------------------------------------------------------------------- */

typedef struct sgd_payload {
    convoy__backend *backend;
    convoy_sgd_params params;
    float *param;
    const float *grad;
    float *velocity;
    int64_t numel;
} sgd_payload;

static convoy_status sgd_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    sgd_payload *p = payload;
    if (p->numel == 0)
        return CONVOY_OK;
    return p->backend->train->sgd(p->backend, native_stream, &p->params, p->param, p->grad,
                                  p->velocity, p->numel);
}

convoy_status convoy_sgd_params_init(convoy_sgd_params *params)
{
    if (!params)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "sgd_params_init: params is NULL");
    params->lr = 0.01f;
    params->momentum = 0.0f;
    params->weight_decay = 0.0f;
    return CONVOY_OK;
}

static convoy_status check_hyperparameter(const char *call, const char *name, float value)
{
    if (isfinite(value) && value >= 0.0f)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "%s: params.%s is %g, expected a finite value >= 0", call, name,
                         (double)value);
}

convoy_status convoy_sgd_step(convoy_runtime *rt, const convoy_sgd_params *params,
                              convoy_tensor *param, convoy_tensor *grad, convoy_tensor *velocity,
                              convoy_task **task)
{
    static const char *call = "sgd_step";
    if (!rt)
        return null_runtime(call);
    if (!params)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: params is NULL", call);
    convoy_status status;
    if ((status = check_hyperparameter(call, "lr", params->lr)) != CONVOY_OK ||
        (status = check_hyperparameter(call, "momentum", params->momentum)) != CONVOY_OK ||
        (status = check_hyperparameter(call, "weight_decay", params->weight_decay)) != CONVOY_OK)
        return status;
    const int momentum = params->momentum != 0.0f;
    if (momentum && !velocity)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: velocity is NULL but params.momentum is %g; a momentum step "
                             "needs a velocity tensor (zeros before the first step)",
                             call, (double)params->momentum);
    if ((status = convoy__check_tensor(rt, param, call, "param")) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, grad, call, "grad")) != CONVOY_OK ||
        (momentum && (status = convoy__check_tensor(rt, velocity, call, "velocity")) != CONVOY_OK))
        return status;
    if (param == grad)
        return aliased(call, "param", "grad");
    if (momentum && (velocity == param || velocity == grad))
        return aliased(call, "velocity", velocity == param ? "param" : "grad");
    if ((status = check_same_dims(call, "grad", grad, "param", param)) != CONVOY_OK ||
        (momentum &&
         (status = check_same_dims(call, "velocity", velocity, "param", param)) != CONVOY_OK))
        return status;
    sgd_payload payload = {rt->backend,
                           *params,
                           convoy__tensor_data(param),
                           convoy__tensor_data(grad),
                           momentum ? convoy__tensor_data(velocity) : NULL,
                           param->numel};
    convoy__hazard_access accesses[3] = {
        {&param->hazards, CONVOY_READ_WRITE},
        {&grad->hazards, CONVOY_READ},
        {momentum ? &velocity->hazards : NULL, CONVOY_READ_WRITE},
    };
    char label[96];
    snprintf(label, sizeof label, "sgd %s", param->text);
    return submit(rt, CONVOY__TASK_SGD_STEP, label, sgd_run, NULL, NULL, &payload, sizeof payload,
                  accesses, momentum ? 3 : 2, task);
}
