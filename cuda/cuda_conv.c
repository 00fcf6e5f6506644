/* The CUDA backend's registry of convolution algorithms (cudnn, 1x1, gemm, direct), the
 * direct algorithm itself, running a plan on a stream under the backend's lock, and timing a
 * plan on private scratch buffers. */
#include <stdio.h>
#include <string.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/cuda_check.h"
#include "kernels/conv_algo.h"
#include "cuda/kernels.h"
#include "core/error_detail.h"

/* ---- the direct algorithm ------------------------------------------------------------ */

static convoy_status direct_run(convoy__backend *be, void *native_stream,
                                const convoy__conv_plan *plan, const convoy__conv_buffers *b,
                                void *workspace)
{
    (void)be;
    (void)workspace;
    cudaStream_t stream = (cudaStream_t)native_stream;
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

static const convoy__conv_algo cuda_algo_direct = {
    .name = "direct",
    .refusal = NULL,
    .candidates = convoy__candidates_last_resort,
    .run = direct_run,
};

/* ---- the registry ---------------------------------------------------------------------- */

/* Adding a CUDA algorithm: its descriptor in a file of cuda/, and a row here. */
static const convoy__conv_algo *const cuda_algos[] = {
    &convoy__cuda_algo_cudnn,
    &convoy__cuda_algo_1x1,
    &convoy__cuda_algo_gemm,
    &cuda_algo_direct,
};

/* Enqueues the plan on stream. be->lock is held from before the algorithm binds a cuBLAS or
 * cuDNN handle to the stream until its last call is enqueued (see cuda_backend_int.h). */
static convoy_status run_on(convoy__cuda_backend *be, cudaStream_t stream,
                            const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                            void *workspace)
{
    pthread_mutex_lock(&be->lock);
    /* cuBLAS and cuDNN may read the thread's last CUDA error after their own launches; one
     * left by an earlier, already reported failure must not be mistaken for theirs. */
    (void)cudaGetLastError();
    convoy_status status =
        plan->candidate.algo->run(&be->base, (void *)stream, plan, buffers, workspace);
    pthread_mutex_unlock(&be->lock);
    return status;
}

static convoy_status cuda_conv_run(convoy__backend *base, void *native_stream,
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

static convoy_status cuda_conv_time(convoy__backend *base, const convoy__conv_plan *plan,
                                    double *ms);

const convoy__conv_registry convoy__cuda_conv_registry = {
    .algos = cuda_algos,
    .count = (int)(sizeof cuda_algos / sizeof cuda_algos[0]),
    .run = cuda_conv_run,
    .time = cuda_conv_time,
};

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
static convoy_status cuda_conv_time(convoy__backend *base, const convoy__conv_plan *plan,
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
