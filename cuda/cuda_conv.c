/* The CUDA backend's registry of convolution algorithms (cudnn, 1x1, gemm, direct), the
 * direct algorithm itself, running a plan on a stream under the backend's lock, and timing a
 * plan on scratch buffers from the backend's scratch allocator (the runtime's pool). Both
 * registry entries give the calling thread its current device back. */
#include <stdint.h>
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

/* The algorithms that bind the cuBLAS handle, and so need a stream's own workspace in
 * deterministic mode. */
static int uses_cublas(const convoy__conv_plan *plan)
{
    return plan->candidate.algo == &convoy__cuda_algo_gemm ||
           plan->candidate.algo == &convoy__cuda_algo_1x1;
}

static convoy_status cuda_conv_run(convoy__backend *base, void *native_stream,
                                   const convoy__conv_plan *plan,
                                   const convoy__conv_buffers *buffers, void *workspace)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!plan || !buffers)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda conv_run: NULL plan or buffers");
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    /* The interface's NULL stream means "now": run on the private stream and wait for it. */
    cudaStream_t stream = native_stream ? (cudaStream_t)native_stream : be->private_stream;
    if (status == CONVOY_OK && uses_cublas(plan))
        status = convoy__cuda_provide_blas_workspace(be, stream);
    if (status == CONVOY_OK)
        status = run_on(be, stream, plan, buffers, workspace);
    if (status == CONVOY_OK && !native_stream)
        status = CONVOY__CUDA_CHECK(cudaStreamSynchronize(stream));
    convoy__cuda_leave(&scope);
    return status;
}

/* A forward plan with an epilogue its algorithm fuses (cudnn:
 * cudnnConvolutionBiasActivationForward), entered and locked as cuda_conv_run does;
 * CONVOY_ERR_UNSUPPORTED, with nothing enqueued, when the algorithm declines. No algorithm that
 * fuses uses cuBLAS. */
static convoy_status cuda_conv_run_fused(convoy__backend *base, void *native_stream,
                                         const convoy__conv_plan *plan,
                                         const convoy__conv_buffers *buffers, void *workspace,
                                         const convoy__conv_epilogue *epilogue)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!plan || !buffers || !epilogue)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "cuda conv_run_fused: NULL plan, buffers or epilogue");
    if (!plan->candidate.algo->run_fused)
        return CONVOY_ERR_UNSUPPORTED;
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    cudaStream_t stream = native_stream ? (cudaStream_t)native_stream : be->private_stream;
    if (status == CONVOY_OK) {
        pthread_mutex_lock(&be->lock);
        (void)cudaGetLastError();
        status = plan->candidate.algo->run_fused(&be->base, (void *)stream, plan, buffers,
                                                 workspace, epilogue);
        pthread_mutex_unlock(&be->lock);
    }
    if (status == CONVOY_OK && !native_stream)
        status = CONVOY__CUDA_CHECK(cudaStreamSynchronize(stream));
    convoy__cuda_leave(&scope);
    return status;
}

static convoy_status cuda_conv_time(convoy__backend *base, const convoy__conv_plan *plan,
                                    double *ms);

const convoy__conv_registry convoy__cuda_conv_registry = {
    .algos = cuda_algos,
    .count = (int)(sizeof cuda_algos / sizeof cuda_algos[0]),
    .run = cuda_conv_run,
    .time = cuda_conv_time,
    .run_fused = cuda_conv_run_fused,
};

/* ---- timing ----------------------------------------------------------------------------- */

typedef struct scratch {
    convoy__scratch input, filters, output, workspace;
    cudaStream_t stream;
    cudaEvent_t start, stop;
} scratch;

static void scratch_free(convoy__cuda_backend *be, scratch *s)
{
    /* Everything enqueued on the private stream must be finished before its memory goes back
     * to the pool, whose free is immediate. */
    if (s->stream)
        (void)cudaStreamSynchronize(s->stream);
    if (s->stop)
        (void)cudaEventDestroy(s->stop);
    if (s->start)
        (void)cudaEventDestroy(s->start);
    if (s->stream)
        (void)cudaStreamDestroy(s->stream);
    /* Clean-up failures were not reported; keep them out of later launch checks. */
    (void)cudaGetLastError();
    convoy__scratch_free(&be->base, &s->workspace);
    convoy__scratch_free(&be->base, &s->output);
    convoy__scratch_free(&be->base, &s->filters);
    convoy__scratch_free(&be->base, &s->input);
}

/* A float buffer of count elements (at least one, so the pointer is never NULL) from the
 * scratch allocator, filled with a small constant on the timing stream, so no run reads
 * uninitialised memory. what labels it in an out-of-memory message. */
static convoy_status scratch_buffer(convoy__cuda_backend *be, cudaStream_t stream, int64_t count,
                                    const char *what, convoy__scratch *out)
{
    if (count < 0 || (uint64_t)count > SIZE_MAX / sizeof(float))
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: %lld floats cannot be addressed", what,
                             (long long)count);
    size_t bytes = (size_t)(count > 0 ? count : 1) * sizeof(float);
    convoy_status status = convoy__scratch_alloc(&be->base, bytes, what, out);
    if (status != CONVOY_OK)
        return status;
    return convoy__launch_fill(out->ptr, count, 0.01f, stream);
}

static convoy_status time_here(convoy__cuda_backend *be, const convoy__conv_plan *plan, scratch *s,
                               float *elapsed)
{
    const convoy__conv_geom *g = &plan->geom;
    convoy_status status;
    if ((status = CONVOY__CUDA_CHECK(
             cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventCreate(&s->start))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventCreateWithFlags(&s->stop, cudaEventBlockingSync))) !=
            CONVOY_OK ||
        (status = scratch_buffer(be, s->stream, convoy__geom_input_numel(g), "timing input",
                                 &s->input)) != CONVOY_OK ||
        (status = scratch_buffer(be, s->stream, convoy__geom_filter_numel(g), "timing filters",
                                 &s->filters)) != CONVOY_OK ||
        (status = scratch_buffer(be, s->stream, convoy__geom_output_numel(g), "timing output",
                                 &s->output)) != CONVOY_OK)
        return status;
    if (plan->workspace_bytes &&
        (status = convoy__scratch_alloc(&be->base, plan->workspace_bytes, "timing workspace",
                                        &s->workspace)) != CONVOY_OK)
        return status;
    convoy__conv_buffers buffers = {s->input.ptr, s->filters.ptr, s->output.ptr, 0};
    if ((status = run_on(be, s->stream, plan, &buffers, s->workspace.ptr)) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventRecord(s->start, s->stream))) != CONVOY_OK ||
        (status = run_on(be, s->stream, plan, &buffers, s->workspace.ptr)) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventRecord(s->stop, s->stream))) != CONVOY_OK ||
        (status = CONVOY__CUDA_CHECK(cudaEventSynchronize(s->stop))) != CONVOY_OK)
        return status;
    return CONVOY__CUDA_CHECK(cudaEventElapsedTime(elapsed, s->start, s->stop));
}

/* Times one run of the plan on scratch buffers of its own (a copy of every operand and the
 * workspace, from the runtime's pool under its memory limit): a warm-up run (module loading,
 * cuBLAS and cuDNN first-use costs), then one run between two timing events on a private
 * non-blocking stream. The private stream has no cuBLAS workspace of its own, which only
 * deterministic mode would ask for, and nothing runs beside it on the handle while be->lock
 * is held. Waiting on the stop event blocks (sleeps) only this thread, only for this
 * stream's work. When the buffers do not fit, the status is CONVOY_ERR_OUT_OF_MEMORY and
 * the planner leaves the candidate untimed. */
static convoy_status cuda_conv_time(convoy__backend *base, const convoy__conv_plan *plan,
                                    double *ms)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!plan || !ms)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "cuda conv_time: NULL argument");
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status != CONVOY_OK)
        return status;
    scratch s;
    memset(&s, 0, sizeof s);
    float elapsed = 0.0f;
    status = time_here(be, plan, &s, &elapsed);
    if (status == CONVOY_OK)
        *ms = (double)elapsed;
    else
        convoy__error_prefix(plan->candidate.name);
    scratch_free(be, &s);
    convoy__cuda_leave(&scope);
    return status;
}
