/* The small training step of tests/pipeline_case.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_case.h"

#define TRY(call)                                                                                  \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK) {                                                                     \
            status = s_;                                                                           \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

static const int64_t x_dims[4] = {2, 16, 12, 12};
static const int64_t w_dims[4] = {16, 16, 3, 3};
static const int64_t y_dims[4] = {2, 16, 10, 10};

/* "2x16x12x12", as the runtime prints a tensor's dims. */
static void dims_text(const int64_t *dims, char *text, size_t size)
{
    snprintf(text, size, "%lldx%lldx%lldx%lld", (long long)dims[0], (long long)dims[1],
             (long long)dims[2], (long long)dims[3]);
}

static size_t numel(const int64_t *dims)
{
    return (size_t)(dims[0] * dims[1] * dims[2] * dims[3]);
}

/* The loss stand-in: grad_output = y / 100 (on the CPU; on CUDA it only
 * has to enqueue, so it does nothing). */
static convoy_status loss_fn(const convoy_task_context *ctx, void *user_data)
{
    (void)user_data;
    if (ctx->device != CONVOY_DEVICE_CPU)
        return CONVOY_OK;
    const float *y = ctx->data[0];
    float *gy = ctx->data[1];
    for (size_t i = 0; i < numel(y_dims); ++i)
        gy[i] = y[i] / 100.0f;
    return CONVOY_OK;
}

static convoy_status conv_label(convoy_runtime *rt, const convoy_conv_params *p,
                                convoy_conv_direction direction, const char *kind,
                                const int64_t *first, const int64_t *second, char *label)
{
    convoy_conv_plan_info info;
    convoy_status status = convoy_conv_explain(rt, p, direction, x_dims, w_dims, y_dims, &info);
    if (status != CONVOY_OK)
        return status;
    char a[64], b[64];
    dims_text(first, a, sizeof a);
    dims_text(second, b, sizeof b);
    snprintf(label, PIPELINE_LABEL_SIZE, "%s %s * %s %s", kind, a, b, info.algorithm);
    return CONVOY_OK;
}

static void add_label(pipeline_run *run, const char *label)
{
    snprintf(run->labels[run->task_count++], PIPELINE_LABEL_SIZE, "%s", label);
}

convoy_status pipeline_run_steps(convoy_runtime *rt, int steps, pipeline_run *run)
{
    convoy_status status = CONVOY_OK;
    convoy_tensor *x = NULL, *w = NULL, *y = NULL, *gy = NULL, *dx = NULL, *dw = NULL;
    float *host[6] = {NULL};
    memset(run, 0, sizeof *run);
    if (steps < 1 || steps > PIPELINE_STEPS_MAX)
        return CONVOY_ERR_INVALID_ARGUMENT;
    convoy_conv_params p;
    TRY(convoy_conv_params_init(&p, 2));
    char fwd[PIPELINE_LABEL_SIZE], bwd_data[PIPELINE_LABEL_SIZE], bwd_filter[PIPELINE_LABEL_SIZE];
    TRY(conv_label(rt, &p, CONVOY_CONV_FORWARD, "conv_fwd", x_dims, w_dims, fwd));
    TRY(conv_label(rt, &p, CONVOY_CONV_BACKWARD_DATA, "conv_bwd_data", x_dims, w_dims, bwd_data));
    TRY(conv_label(rt, &p, CONVOY_CONV_BACKWARD_FILTER, "conv_bwd_filter", x_dims, w_dims,
                   bwd_filter));
    TRY(convoy_tensor_create(rt, 4, x_dims, &x));
    TRY(convoy_tensor_create(rt, 4, w_dims, &w));
    TRY(convoy_tensor_create(rt, 4, y_dims, &y));
    TRY(convoy_tensor_create(rt, 4, y_dims, &gy));
    TRY(convoy_tensor_create(rt, 4, x_dims, &dx));
    TRY(convoy_tensor_create(rt, 4, w_dims, &dw));
    const int64_t *host_dims[6] = {x_dims, w_dims, x_dims, w_dims, x_dims, w_dims};
    for (int i = 0; i < 6; ++i) {
        host[i] = calloc(numel(host_dims[i]), sizeof(float));
        if (!host[i]) {
            status = CONVOY_ERR_OUT_OF_MEMORY;
            goto done;
        }
    }
    for (size_t i = 0; i < numel(x_dims); ++i)
        host[0][i] = (float)(i % 7) - 3.0f;
    for (size_t i = 0; i < numel(w_dims); ++i)
        host[1][i] = (float)(i % 5) * 0.25f - 0.5f;
    char x_text[64], w_text[64], label[PIPELINE_LABEL_SIZE];
    dims_text(x_dims, x_text, sizeof x_text);
    dims_text(w_dims, w_text, sizeof w_text);
    convoy_access loss_access[2] = {{y, CONVOY_READ}, {gy, CONVOY_WRITE}};
    for (int step = 0; step < steps; ++step) {
        /* Each step uploads its own batch and weights, as a data loader
         * and an optimiser on the host would. */
        TRY(convoy_upload(rt, x, host[2 * (step % 2)], numel(x_dims), NULL));
        snprintf(label, sizeof label, "upload %s", x_text);
        add_label(run, label);
        TRY(convoy_upload(rt, w, host[1 + 2 * (step % 2)], numel(w_dims), NULL));
        snprintf(label, sizeof label, "upload %s", w_text);
        add_label(run, label);
        TRY(convoy_conv_forward(rt, &p, x, w, y, NULL));
        add_label(run, fwd);
        TRY(convoy_submit(rt, loss_fn, NULL, loss_access, 2, "loss", NULL));
        add_label(run, "custom loss");
        TRY(convoy_conv_backward_data(rt, &p, w, gy, dx, NULL));
        add_label(run, bwd_data);
        TRY(convoy_conv_backward_filter(rt, &p, x, gy, dw, NULL));
        add_label(run, bwd_filter);
        TRY(convoy_download(rt, dx, host[4], numel(x_dims), NULL));
        snprintf(label, sizeof label, "download %s", x_text);
        add_label(run, label);
        TRY(convoy_download(rt, dw, host[5], numel(w_dims), NULL));
        snprintf(label, sizeof label, "download %s", w_text);
        add_label(run, label);
    }
    status = convoy_runtime_synchronize(rt);
done:
    /* Destroying a tensor still in use queues its release; waiting first
     * keeps the task list to the pipeline's own. */
    if (convoy_runtime_synchronize(rt) != CONVOY_OK && status == CONVOY_OK)
        status = CONVOY_ERR_INTERNAL; /* cannot happen: the first wait saw no failure */
    convoy_tensor_destroy(x);
    convoy_tensor_destroy(w);
    convoy_tensor_destroy(y);
    convoy_tensor_destroy(gy);
    convoy_tensor_destroy(dx);
    convoy_tensor_destroy(dw);
    for (int i = 0; i < 6; ++i)
        free(host[i]);
    return status;
}
