/* The convolution half of the CUDA backend's function table: the candidate list (cuDNN's
 * algorithms, then the 1x1, GEMM and direct paths), plan preparation, dispatch of a plan to
 * its implementation on a stream, and timing a plan on private scratch buffers. */
#include <stdio.h>
#include <string.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/cuda_check.h"
#include "kernels/gemm_driver.h"
#include "cuda/kernels.h"
#include "core/error_detail.h"

/* Heuristic costs (lower runs first). cuDNN's own ranking starts at 1.0 and counts up one
 * per algorithm (cuda/conv_cudnn.c). The 1x1 path, a bare strided-batched SGEMM, comes
 * right after cuDNN's first choice; im2col + GEMM after every cuDNN algorithm, since it moves
 * the column matrix through memory twice; the direct kernels are the last resort. */
#define COST_1X1 1.5
#define COST_GEMM 20.0
#define COST_DIRECT 100.0

static void add(convoy__conv_candidate *out, int max, int *count, unsigned impl, const char *name,
                size_t fixed, size_t per_image, int deterministic, double cost)
{
    if (*count >= max)
        return;
    convoy__conv_candidate *c = &out[(*count)++];
    memset(c, 0, sizeof *c);
    c->impl = impl;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->workspace_fixed = fixed;
    c->workspace_per_image = per_image;
    c->deterministic = deterministic;
    c->cost = cost;
}

/* The cuBLAS paths are reproducible only when each stream has its own cuBLAS workspace,
 * which the backend arranges in deterministic mode alone; the direct kernels always are. */
int convoy__cuda_conv_candidates(convoy__backend *base, const convoy__conv_geom *geom,
                                 convoy_conv_direction direction, convoy__conv_candidate *out,
                                 int max)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    int count = 0;
    if (!geom || !out || max <= 0)
        return 0;
    /* Listing must not fail and must not disturb the thread's error message: a cuDNN query
     * that fails only means fewer candidates. */
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", convoy__error_text());
    if (be->has_cudnn && convoy__cuda_use_device(be) == CONVOY_OK)
        convoy__cudnn_candidates(be, geom, direction, out, max, &count);
    if (convoy__geom_is_pointwise(geom))
        add(out, max, &count, CONVOY_IMPL_1X1, "1x1", 0, 0, be->deterministic, COST_1X1);
    add(out, max, &count, CONVOY_IMPL_GEMM, "gemm", convoy__gemm_workspace_fixed(geom, direction),
        convoy__gemm_workspace_per_image(geom, direction), be->deterministic, COST_GEMM);
    add(out, max, &count, CONVOY_IMPL_DIRECT, "direct", 0, 0, 1, COST_DIRECT);
    convoy__error_set_text(saved);
    return count;
}

convoy_status convoy__cuda_conv_prepare(convoy__backend *base, convoy__conv_plan *plan)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    plan->backend_data = NULL;
    switch (plan->candidate.impl) {
    case CONVOY_IMPL_CUDNN: {
        convoy_status status = convoy__cuda_use_device(be);
        return status != CONVOY_OK ? status : convoy__cudnn_prepare(be, plan);
    }
    case CONVOY_IMPL_1X1:
        if (!convoy__geom_is_pointwise(&plan->geom))
            return convoy__error(CONVOY_ERR_INTERNAL, "cuda: 1x1 plan for a non-pointwise "
                                                      "geometry");
        return CONVOY_OK;
    case CONVOY_IMPL_GEMM:
    case CONVOY_IMPL_DIRECT:
        return CONVOY_OK;
    default:
        return convoy__error(CONVOY_ERR_INTERNAL, "cuda: no implementation %s (impl 0x%x)",
                             plan->candidate.name, plan->candidate.impl);
    }
}

void convoy__cuda_conv_release(convoy__backend *base, convoy__conv_plan *plan)
{
    if (plan->candidate.impl == CONVOY_IMPL_CUDNN)
        convoy__cudnn_release(convoy__cuda_of(base), plan);
    plan->backend_data = NULL;
}

static convoy_status run_direct(cudaStream_t stream, const convoy__conv_plan *plan,
                                const convoy__conv_buffers *b)
{
    switch (plan->direction) {
    case CONVOY_CONV_FORWARD:
        return convoy__launch_conv_direct_forward(&plan->geom, b->input, b->filters, b->output,
                                                  stream);
    case CONVOY_CONV_BACKWARD_DATA:
        return convoy__launch_conv_direct_backward_data(&plan->geom, b->filters, b->output,
                                                        b->input, stream);
    case CONVOY_CONV_BACKWARD_FILTER:
        return convoy__launch_conv_direct_backward_filter(&plan->geom, b->input, b->output,
                                                          b->filters, stream);
    }
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda: direction %d", (int)plan->direction);
}

/* Enqueues the plan on stream. The cuBLAS and cuDNN paths hold be->lock from binding the
 * handle to the stream until their last call is enqueued. */
static convoy_status run_on(convoy__cuda_backend *be, cudaStream_t stream,
                            const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                            void *workspace)
{
    convoy_status status;
    if (plan->candidate.impl == CONVOY_IMPL_DIRECT)
        return run_direct(stream, plan, buffers);
    pthread_mutex_lock(&be->lock);
    /* cuBLAS and cuDNN may read the thread's last CUDA error after their own launches; one
     * left by an earlier, already reported failure must not be mistaken for theirs. */
    (void)cudaGetLastError();
    switch (plan->candidate.impl) {
    case CONVOY_IMPL_CUDNN:
        status = convoy__cudnn_run(be, stream, plan, buffers, workspace);
        break;
    case CONVOY_IMPL_GEMM:
        status = convoy__cuda_conv_gemm(be, stream, plan, buffers, workspace);
        break;
    case CONVOY_IMPL_1X1:
        status = convoy__cuda_conv_1x1(be, stream, plan, buffers);
        break;
    default:
        status = convoy__error(CONVOY_ERR_INTERNAL, "cuda: no implementation %s (impl 0x%x)",
                               plan->candidate.name, plan->candidate.impl);
        break;
    }
    pthread_mutex_unlock(&be->lock);
    return status;
}

convoy_status convoy__cuda_conv_run(convoy__backend *base, void *native_stream,
                                    const convoy__conv_plan *plan,
                                    const convoy__conv_buffers *buffers, void *workspace)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!plan || !buffers)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda conv_run: NULL plan or buffers");
    convoy_status status = convoy__cuda_use_device(be);
    if (status != CONVOY_OK)
        return status;
    /* The interface's NULL stream means "now": run on the private stream and wait for it. */
    cudaStream_t stream = native_stream ? (cudaStream_t)native_stream : be->private_stream;
    status = run_on(be, stream, plan, buffers, workspace);
    if (status == CONVOY_OK && !native_stream)
        status = CONVOY__CUDA_CHECK(cudaStreamSynchronize(stream));
    return status;
}

/* ---- timing ----------------------------------------------------------------------------- */

typedef struct scratch {
    convoy__conv_buffers buffers;
    void *workspace;
    cudaStream_t stream;
    cudaEvent_t start, stop;
} scratch;

static void scratch_free(scratch *s)
{
    /* Everything enqueued on the private stream must be finished before its memory goes. */
    if (s->stream)
        (void)cudaStreamSynchronize(s->stream);
    if (s->stop)
        (void)cudaEventDestroy(s->stop);
    if (s->start)
        (void)cudaEventDestroy(s->start);
    if (s->stream)
        (void)cudaStreamDestroy(s->stream);
    (void)cudaFree(s->workspace);
    (void)cudaFree(s->buffers.output);
    (void)cudaFree(s->buffers.filters);
    (void)cudaFree(s->buffers.input);
    /* Clean-up failures were not reported; keep them out of later launch checks. */
    (void)cudaGetLastError();
}

/* A float buffer of count elements (at least one, so the pointer is never NULL) filled with a
 * small constant on the timing stream, so no run reads uninitialised memory. */
static convoy_status scratch_buffer(cudaStream_t stream, int64_t count, float **out)
{
    size_t bytes = (size_t)(count > 0 ? count : 1) * sizeof(float);
    CONVOY__CUDA_TRY(cudaMalloc((void **)out, bytes));
    return convoy__launch_fill(*out, count, 0.01f, stream);
}

/* Times one run of the plan on scratch buffers of its own: a warm-up run (module loading,
 * cuBLAS and cuDNN first-use costs), then one run between two timing events on a private
 * non-blocking stream. Waiting on the stop event blocks only this thread, only for this
 * stream's work. */
convoy_status convoy__cuda_conv_time(convoy__backend *base, const convoy__conv_plan *plan,
                                     double *ms)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!plan || !ms)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda conv_time: NULL argument");
    convoy_status status = convoy__cuda_use_device(be);
    if (status != CONVOY_OK)
        return status;
    const convoy__conv_geom *g = &plan->geom;
    scratch s;
    memset(&s, 0, sizeof s);
    float elapsed = 0.0f;
    if ((status = CONVOY__CUDA_CHECK(
             cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventCreate(&s.start))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventCreate(&s.stop))) != CONVOY_OK ||
        (status = scratch_buffer(s.stream, convoy__geom_input_numel(g), &s.buffers.input)) !=
            CONVOY_OK ||
        (status = scratch_buffer(s.stream, convoy__geom_filter_numel(g), &s.buffers.filters)) !=
            CONVOY_OK ||
        (status = scratch_buffer(s.stream, convoy__geom_output_numel(g), &s.buffers.output)) !=
            CONVOY_OK)
        goto done;
    if (plan->workspace_bytes &&
        (status = CONVOY__CUDA_CHECK(cudaMalloc(&s.workspace, plan->workspace_bytes))) != CONVOY_OK)
        goto done;
    if ((status = run_on(be, s.stream, plan, &s.buffers, s.workspace)) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventRecord(s.start, s.stream))) != CONVOY_OK ||
        (status = run_on(be, s.stream, plan, &s.buffers, s.workspace)) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventRecord(s.stop, s.stream))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventSynchronize(s.stop))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventElapsedTime(&elapsed, s.start, s.stop))) != CONVOY_OK)
        goto done;
    *ms = (double)elapsed;
done:
    if (status != CONVOY_OK)
        convoy__error_prefix(plan->candidate.name);
    scratch_free(&s);
    return status;
}
