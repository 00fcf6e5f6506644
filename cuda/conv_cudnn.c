/* The "cudnn" algorithm of the CUDA backend, on cuDNN 9's legacy convolution API: one
 * candidate per algorithm cuDNN's heuristic (cudnnGetConvolution*Algorithm_v7) ranks and its
 * workspace query accepts, descriptors built once per plan, and cudnnConvolutionForward /
 * BackwardData / BackwardFilter with alpha 1, beta 0 on the caller's stream. A forward
 * convolution with a bias epilogue runs as cudnnConvolutionBiasActivationForward where cuDNN
 * allows it (run_fused below). Built without cuDNN, the algorithm refuses every convolution
 * and says why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/cuda_check.h"
#include "cuda/cudnn_desc.h"
#include "core/error_detail.h"

#ifdef CONVOY_HAVE_CUDNN

/* cuda/cudnn_desc.c names algorithms by these numeric values. */
_Static_assert(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM == 1 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED == 7 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT == 8,
               "cuDNN forward algorithm values changed");
_Static_assert(CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING == 3 &&
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED == 5 &&
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT == 6,
               "cuDNN backward-data algorithm values changed");
_Static_assert(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 == 3 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING == 6 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT == 7,
               "cuDNN backward-filter algorithm values changed");

/* Costs below the GEMM path's: cuDNN's own ranking, best first (cuda/cuda_conv.c places
 * the other algorithms around these). */
#define CUDNN_FIRST_COST 1.0

/* A plan's descriptors (plan->algo_data). Forward plans also describe the bias (1, M, 1, 1
 * [, 1]) and the two activations of the fused epilogue. */
typedef struct cudnn_plan {
    cudnnTensorDescriptor_t input, output;
    cudnnFilterDescriptor_t filters;
    cudnnConvolutionDescriptor_t conv;
    cudnnTensorDescriptor_t bias;
    cudnnActivationDescriptor_t relu, identity;
} cudnn_plan;

static void destroy_descriptors(cudnn_plan *p)
{
    if (p->identity)
        cudnnDestroyActivationDescriptor(p->identity);
    if (p->relu)
        cudnnDestroyActivationDescriptor(p->relu);
    if (p->bias)
        cudnnDestroyTensorDescriptor(p->bias);
    if (p->conv)
        cudnnDestroyConvolutionDescriptor(p->conv);
    if (p->filters)
        cudnnDestroyFilterDescriptor(p->filters);
    if (p->output)
        cudnnDestroyTensorDescriptor(p->output);
    if (p->input)
        cudnnDestroyTensorDescriptor(p->input);
    memset(p, 0, sizeof *p);
}

/* Fills p (zeroed by the caller) from d. Math is restricted to FMA: cuDNN's default would
 * allow TF32 tensor cores on Ampere and later, whose 10-bit mantissa inputs break float32
 * agreement with the CPU and GEMM paths. On failure p holds whatever was created; the caller
 * destroys it. */
static convoy_status build_descriptors(const convoy__cudnn_dims *d, cudnn_plan *p)
{
    CONVOY__CUDNN_TRY(cudnnCreateTensorDescriptor(&p->input));
    CONVOY__CUDNN_TRY(cudnnCreateTensorDescriptor(&p->output));
    CONVOY__CUDNN_TRY(cudnnCreateFilterDescriptor(&p->filters));
    CONVOY__CUDNN_TRY(cudnnCreateConvolutionDescriptor(&p->conv));
    CONVOY__CUDNN_TRY(cudnnSetTensorNdDescriptor(p->input, CUDNN_DATA_FLOAT, d->nb_dims, d->input,
                                                 d->input_strides));
    CONVOY__CUDNN_TRY(cudnnSetTensorNdDescriptor(p->output, CUDNN_DATA_FLOAT, d->nb_dims, d->output,
                                                 d->output_strides));
    CONVOY__CUDNN_TRY(cudnnSetFilterNdDescriptor(p->filters, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                 d->nb_dims, d->filter));
    CONVOY__CUDNN_TRY(cudnnSetConvolutionNdDescriptor(
        p->conv, d->nb_dims - 2, d->pad, d->stride, d->dilation,
        d->cross_correlation ? CUDNN_CROSS_CORRELATION : CUDNN_CONVOLUTION, CUDNN_DATA_FLOAT));
    CONVOY__CUDNN_TRY(cudnnSetConvolutionGroupCount(p->conv, d->groups));
    CONVOY__CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH));
    /* The geometry's output extents must be what cuDNN computes from these descriptors. */
    int out[5];
    CONVOY__CUDNN_TRY(
        cudnnGetConvolutionNdForwardOutputDim(p->conv, p->input, p->filters, d->nb_dims, out));
    for (int i = 0; i < d->nb_dims; ++i) {
        if (out[i] != d->output[i])
            return convoy__error(CONVOY_ERR_INTERNAL,
                                 "cuDNN: output dim %d is %d by cuDNN's formula but %d in the "
                                 "geometry",
                                 i, out[i], d->output[i]);
    }
    return CONVOY_OK;
}

/* The epilogue's descriptors of a forward plan: the bias as a (1, M, 1, 1 [, 1]) tensor
 * broadcast over the output, and ReLU and identity activations. */
static convoy_status build_epilogue_descriptors(const convoy__cudnn_dims *d, cudnn_plan *p)
{
    int dims[5] = {1, d->output[1], 1, 1, 1}, strides[5] = {d->output[1], 1, 1, 1, 1};
    CONVOY__CUDNN_TRY(cudnnCreateTensorDescriptor(&p->bias));
    CONVOY__CUDNN_TRY(
        cudnnSetTensorNdDescriptor(p->bias, CUDNN_DATA_FLOAT, d->nb_dims, dims, strides));
    CONVOY__CUDNN_TRY(cudnnCreateActivationDescriptor(&p->relu));
    CONVOY__CUDNN_TRY(
        cudnnSetActivationDescriptor(p->relu, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0));
    CONVOY__CUDNN_TRY(cudnnCreateActivationDescriptor(&p->identity));
    CONVOY__CUDNN_TRY(cudnnSetActivationDescriptor(p->identity, CUDNN_ACTIVATION_IDENTITY,
                                                   CUDNN_PROPAGATE_NAN, 0.0));
    return CONVOY_OK;
}

/* The plan's descriptors; with_epilogue adds the bias and activations (forward plans). */
static convoy_status descriptors_for(const convoy__conv_geom *geom, int with_epilogue,
                                     cudnn_plan *p)
{
    convoy__cudnn_dims d;
    const char *why = NULL;
    memset(p, 0, sizeof *p);
    if (!convoy__cudnn_expressible(geom, &d, &why))
        return convoy__error(CONVOY_ERR_UNSUPPORTED, "cuDNN: %s", why);
    convoy_status status = build_descriptors(&d, p);
    if (status == CONVOY_OK && with_epilogue)
        status = build_epilogue_descriptors(&d, p);
    if (status != CONVOY_OK)
        destroy_descriptors(p);
    return status;
}

/* Results reporting tensor-core math are skipped: they would round inputs to TF32 (see
 * build_descriptors). */
static int fma_math(cudnnMathType_t math)
{
    return math == CUDNN_DEFAULT_MATH || math == CUDNN_FMA_MATH;
}

static void add(const convoy__conv_algo *self, convoy__candidate_list *list,
                convoy_conv_direction direction, int algo, size_t workspace,
                int reported_deterministic)
{
    int rank = 0;
    for (int i = 0; i < list->count; ++i) {
        if (list->items[i].algo != self)
            continue;
        if (list->items[i].variant == algo)
            return; /* cuDNN lists an algorithm once per math type; keep its best rank */
        rank++;
    }
    char name[48];
    snprintf(name, sizeof name, "cudnn:%s", convoy__cudnn_algo_name(direction, algo));
    convoy__conv_candidate *c =
        convoy__candidate_add(list, self, name, workspace, 0, CUDNN_FIRST_COST + rank);
    if (!c)
        return;
    c->variant = algo;
    c->deterministic = reported_deterministic && !convoy__cudnn_algo_uses_atomics(direction, algo);
    c->exact = convoy__cudnn_algo_is_exact(direction, algo);
}

/* _v7 returns one entry per algorithm and math type, so the arrays are sized by cuDNN's own
 * MaxCount query (bounded here; an absurd count just lists the first entries). */
#define PERF_CAPACITY 64

static int capacity(int requested)
{
    return requested < 1 ? 1 : requested > PERF_CAPACITY ? PERF_CAPACITY : requested;
}

/* The heuristic ranking of one direction, each entry checked with its workspace query. */
static void list_forward(convoy__cuda_backend *be, const cudnn_plan *p,
                         const convoy__conv_algo *self, convoy__candidate_list *list)
{
    cudnnConvolutionFwdAlgoPerf_t perf[PERF_CAPACITY];
    int requested = 0, returned = 0;
    if (cudnnGetConvolutionForwardAlgorithmMaxCount(be->cudnn, &requested) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnGetConvolutionForwardAlgorithm_v7(be->cudnn, p->input, p->filters, p->conv, p->output,
                                               capacity(requested), &returned,
                                               perf) != CUDNN_STATUS_SUCCESS)
        return;
    for (int i = 0; i < returned; ++i) {
        size_t bytes = 0;
        if (perf[i].status != CUDNN_STATUS_SUCCESS || !fma_math(perf[i].mathType) ||
            cudnnGetConvolutionForwardWorkspaceSize(be->cudnn, p->input, p->filters, p->conv,
                                                    p->output, perf[i].algo,
                                                    &bytes) != CUDNN_STATUS_SUCCESS)
            continue;
        add(self, list, CONVOY_CONV_FORWARD, (int)perf[i].algo, bytes,
            perf[i].determinism == CUDNN_DETERMINISTIC);
    }
}

static void list_backward_data(convoy__cuda_backend *be, const cudnn_plan *p,
                               const convoy__conv_algo *self, convoy__candidate_list *list)
{
    cudnnConvolutionBwdDataAlgoPerf_t perf[PERF_CAPACITY];
    int requested = 0, returned = 0;
    if (cudnnGetConvolutionBackwardDataAlgorithmMaxCount(be->cudnn, &requested) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnGetConvolutionBackwardDataAlgorithm_v7(be->cudnn, p->filters, p->output, p->conv,
                                                    p->input, capacity(requested), &returned,
                                                    perf) != CUDNN_STATUS_SUCCESS)
        return;
    for (int i = 0; i < returned; ++i) {
        size_t bytes = 0;
        if (perf[i].status != CUDNN_STATUS_SUCCESS || !fma_math(perf[i].mathType) ||
            cudnnGetConvolutionBackwardDataWorkspaceSize(be->cudnn, p->filters, p->output, p->conv,
                                                         p->input, perf[i].algo,
                                                         &bytes) != CUDNN_STATUS_SUCCESS)
            continue;
        add(self, list, CONVOY_CONV_BACKWARD_DATA, (int)perf[i].algo, bytes,
            perf[i].determinism == CUDNN_DETERMINISTIC);
    }
}

static void list_backward_filter(convoy__cuda_backend *be, const cudnn_plan *p,
                                 const convoy__conv_algo *self, convoy__candidate_list *list)
{
    cudnnConvolutionBwdFilterAlgoPerf_t perf[PERF_CAPACITY];
    int requested = 0, returned = 0;
    if (cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(be->cudnn, &requested) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnGetConvolutionBackwardFilterAlgorithm_v7(be->cudnn, p->input, p->output, p->conv,
                                                      p->filters, capacity(requested), &returned,
                                                      perf) != CUDNN_STATUS_SUCCESS)
        return;
    for (int i = 0; i < returned; ++i) {
        size_t bytes = 0;
        if (perf[i].status != CUDNN_STATUS_SUCCESS || !fma_math(perf[i].mathType) ||
            cudnnGetConvolutionBackwardFilterWorkspaceSize(be->cudnn, p->input, p->output, p->conv,
                                                           p->filters, perf[i].algo,
                                                           &bytes) != CUDNN_STATUS_SUCCESS)
            continue;
        add(self, list, CONVOY_CONV_BACKWARD_FILTER, (int)perf[i].algo, bytes,
            perf[i].determinism == CUDNN_DETERMINISTIC);
    }
}

static const char *cudnn_unavailable(convoy__backend *base)
{
    return convoy__cuda_of(base)->has_cudnn
               ? NULL
               : "cuDNN is not in use on this device (not loadable, or excluded at creation)";
}

static const char *cudnn_refusal(convoy__backend *base, const convoy__conv_geom *geom,
                                 convoy_conv_direction direction)
{
    (void)direction;
    const char *why = cudnn_unavailable(base);
    if (why)
        return why;
    if (!convoy__cudnn_expressible(geom, NULL, &why))
        return why;
    return NULL;
}

static void cudnn_candidates(convoy__backend *base, const convoy__conv_algo *self,
                             const convoy__conv_geom *geom, convoy_conv_direction direction,
                             convoy__candidate_list *list)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    cudnn_plan p;
    convoy__device_scope scope;
    if (convoy__cuda_enter(be, &scope) != CONVOY_OK || descriptors_for(geom, 0, &p) != CONVOY_OK) {
        convoy__cuda_leave(&scope);
        return;
    }
    pthread_mutex_lock(&be->lock);
    switch (direction) {
    case CONVOY_CONV_FORWARD:
        list_forward(be, &p, self, list);
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        list_backward_data(be, &p, self, list);
        break;
    case CONVOY_CONV_BACKWARD_FILTER:
        list_backward_filter(be, &p, self, list);
        break;
    }
    pthread_mutex_unlock(&be->lock);
    destroy_descriptors(&p);
    convoy__cuda_leave(&scope);
}

static convoy_status cudnn_prepare(convoy__backend *base, convoy__conv_plan *plan)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    if (!be->has_cudnn)
        return convoy__error(CONVOY_ERR_UNSUPPORTED, "cuDNN is not in use by this backend");
    cudnn_plan *p = calloc(1, sizeof *p);
    if (!p)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "cuDNN: out of host memory for a plan");
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK)
        status = descriptors_for(&plan->geom, plan->direction == CONVOY_CONV_FORWARD, p);
    convoy__cuda_leave(&scope);
    if (status != CONVOY_OK) {
        free(p);
        return status;
    }
    plan->algo_data = p;
    return CONVOY_OK;
}

static void cudnn_release(convoy__backend *base, convoy__conv_plan *plan)
{
    (void)base;
    cudnn_plan *p = plan->algo_data;
    if (p) {
        destroy_descriptors(p);
        free(p);
    }
    plan->algo_data = NULL;
}

/* The backend's run holds be->lock around this, so binding the handle to the stream and the
 * call that uses it cannot interleave with another thread's. */
static convoy_status cudnn_run(convoy__backend *base, void *native_stream,
                               const convoy__conv_plan *plan, const convoy__conv_buffers *b,
                               void *workspace)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    const cudnn_plan *p = plan->algo_data;
    if (!p || !be->has_cudnn)
        return convoy__error(CONVOY_ERR_INTERNAL, "cuDNN: plan %s was not prepared",
                             plan->candidate.name);
    const float one = 1.0f, zero = 0.0f;
    size_t bytes = workspace ? plan->workspace_bytes : 0;
    CONVOY__CUDNN_TRY(cudnnSetStream(be->cudnn, (cudaStream_t)native_stream));
    switch (plan->direction) {
    case CONVOY_CONV_FORWARD:
        CONVOY__CUDNN_TRY(
            cudnnConvolutionForward(be->cudnn, &one, p->input, b->input, p->filters, b->filters,
                                    p->conv, (cudnnConvolutionFwdAlgo_t)plan->candidate.variant,
                                    workspace, bytes, &zero, p->output, b->output));
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        CONVOY__CUDNN_TRY(cudnnConvolutionBackwardData(
            be->cudnn, &one, p->filters, b->filters, p->output, b->output, p->conv,
            (cudnnConvolutionBwdDataAlgo_t)plan->candidate.variant, workspace, bytes, &zero,
            p->input, b->input));
        break;
    case CONVOY_CONV_BACKWARD_FILTER:
        CONVOY__CUDNN_TRY(cudnnConvolutionBackwardFilter(
            be->cudnn, &one, p->input, b->input, p->output, b->output, p->conv,
            (cudnnConvolutionBwdFilterAlgo_t)plan->candidate.variant, workspace, bytes, &zero,
            p->filters, b->filters));
        break;
    }
    return CONVOY_OK;
}

/* y = act(conv(x, w) + bias) in one call: cudnnConvolutionBiasActivationForward with alpha1
 * 1 and alpha2 0 (z is y, never read). cuDNN takes a bias always, and fuses ReLU only into
 * IMPLICIT_PRECOMP_GEMM (any algorithm with the identity), so other epilogues decline, as
 * does a configuration cuDNN reports as NOT_SUPPORTED or BAD_PARAM: it checks those before
 * launching anything, so nothing was written, and the runtime runs the plain convolution and
 * the epilogue pass instead. Runs under the backend's lock, as cudnn_run does. */
static convoy_status cudnn_run_fused(convoy__backend *base, void *native_stream,
                                     const convoy__conv_plan *plan, const convoy__conv_buffers *b,
                                     void *workspace, const convoy__conv_epilogue *epilogue)
{
    convoy__cuda_backend *be = convoy__cuda_of(base);
    const cudnn_plan *p = plan->algo_data;
    const int relu = epilogue->act == CONVOY_ACTIVATION_RELU;
    if (!p || !be->has_cudnn || plan->direction != CONVOY_CONV_FORWARD || !p->bias ||
        !epilogue->bias ||
        (relu && plan->candidate.variant != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM))
        return CONVOY_ERR_UNSUPPORTED;
    const float one = 1.0f, zero = 0.0f;
    size_t bytes = workspace ? plan->workspace_bytes : 0;
    CONVOY__CUDNN_TRY(cudnnSetStream(be->cudnn, (cudaStream_t)native_stream));
    cudnnStatus_t status = cudnnConvolutionBiasActivationForward(
        be->cudnn, &one, p->input, b->input, p->filters, b->filters, p->conv,
        (cudnnConvolutionFwdAlgo_t)plan->candidate.variant, workspace, bytes, &zero, p->output,
        b->output, p->bias, epilogue->bias, relu ? p->relu : p->identity, p->output, b->output);
    if (status == CUDNN_STATUS_NOT_SUPPORTED || status == CUDNN_STATUS_BAD_PARAM) {
        (void)cudaGetLastError();
        return CONVOY_ERR_UNSUPPORTED;
    }
    if (status != CUDNN_STATUS_SUCCESS)
        return convoy__cudnn_fail((int)status, "cudnnConvolutionBiasActivationForward", __FILE__,
                                  __LINE__);
    return CONVOY_OK;
}

const convoy__conv_algo convoy__cuda_algo_cudnn = {
    .name = "cudnn",
    .refusal = cudnn_refusal,
    .candidates = cudnn_candidates,
    .prepare = cudnn_prepare,
    .release = cudnn_release,
    .run = cudnn_run,
    .unavailable = cudnn_unavailable,
    .run_fused = cudnn_run_fused,
};

void convoy__cudnn_describe(const convoy__cuda_backend *be, char *text, size_t size)
{
    size_t v = cudnnGetVersion();
    /* cuDNN 9 encodes its version as major * 10000 + minor * 100 + patch. */
    snprintf(text, size, "cuDNN %zu.%zu.%zu%s", v / 10000, v % 10000 / 100, v % 100,
             be->has_cudnn ? "" : " (not in use)");
}

#else /* !CONVOY_HAVE_CUDNN */

static const char *cudnn_unavailable(convoy__backend *be)
{
    (void)be;
    return "convoy was built without cuDNN";
}

static const char *cudnn_refusal(convoy__backend *be, const convoy__conv_geom *geom,
                                 convoy_conv_direction direction)
{
    (void)geom;
    (void)direction;
    return cudnn_unavailable(be);
}

const convoy__conv_algo convoy__cuda_algo_cudnn = {
    .name = "cudnn",
    .refusal = cudnn_refusal,
    .candidates = convoy__candidates_none,
    .run = convoy__run_refused,
    .unavailable = cudnn_unavailable,
};

void convoy__cudnn_describe(const convoy__cuda_backend *be, char *text, size_t size)
{
    (void)be;
    snprintf(text, size, "no cuDNN (not built)");
}

#endif /* CONVOY_HAVE_CUDNN */
