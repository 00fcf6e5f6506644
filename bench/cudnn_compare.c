/* cudnn_compare: convoy against the best cuDNN algorithm, per suite layer and
 * direction. Every cuDNN algorithm that cudnnFind*AlgorithmEx reports as
 * working is timed directly; convoy runs with CONVOY_ALGO time_once.
 *
 * Both sides are timed the same way: R calls back to back on one stream (for
 * convoy: R submits chained through the output tensor), then a synchronize;
 * seconds / R, median of 5 such batches. The target is convoy / best cuDNN
 * <= 1.05. Both use cuDNN's default math (TF32 tensor cores may be used on
 * Ampere and newer); NVIDIA_TF32_OVERRIDE=0 makes both strict FP32. Exits 77
 * when there is no usable GPU. Usage: cudnn_compare [suite.txt] [layer ...]. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "convoy.h"
#include "suite.h"

#define BATCHES 5
#define BATCH_TIME_S 0.02
#define MAX_REPEAT 200
#define WORKSPACE_BYTES ((size_t)1 << 30) /* convoy's default workspace limit */
#define TARGET_RATIO 1.05
#define MAX_ALGOS 16

static const char *const direction_names[3] = {"forward", "backward_data", "backward_filter"};

static const char *const fwd_algo_names[] = {
    "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
    "WINOGRAD",      "WINOGRAD_NONFUSED"};
static const char *const bwd_data_algo_names[] = {"ALGO_0",     "ALGO_1",   "FFT",
                                                  "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
static const char *const bwd_filter_algo_names[] = {
    "ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};

static void fail_exit(const char *what, const char *detail, const char *file, int line)
{
    fflush(stdout);
    fprintf(stderr, "cudnn_compare: %s failed: %s (%s:%d)\n", what, detail, file, line);
    exit(1);
}

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            fail_exit(#call, cudaGetErrorString(e_), __FILE__, __LINE__);                          \
    } while (0)

#define CUDNN_CHECK(call)                                                                          \
    do {                                                                                           \
        cudnnStatus_t e_ = (call);                                                                 \
        if (e_ != CUDNN_STATUS_SUCCESS)                                                            \
            fail_exit(#call, cudnnGetErrorString(e_), __FILE__, __LINE__);                         \
    } while (0)

#define CHECK(call)                                                                                \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK)                                                                       \
            fail_exit(#call, convoy_last_error_message(), __FILE__, __LINE__);                     \
    } while (0)

/* The cuDNN side of one layer: descriptors, device buffers, one stream. */
typedef struct cudnn_layer {
    cudnnHandle_t handle;
    cudaStream_t stream;
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv;
    float *x, *w, *y, *dx, *dw;
    void *workspace;
    size_t workspace_bytes;
} cudnn_layer;

/* One timed configuration: an algorithm and the math type cuDNN found it with. */
typedef struct candidate {
    int algo;
    cudnnMathType_t math;
    size_t memory;
} candidate;

static void packed_strides(int n, const int *dims, int *strides)
{
    strides[n - 1] = 1;
    for (int i = n - 2; i >= 0; --i)
        strides[i] = strides[i + 1] * dims[i + 1];
}

static void set_descriptors(cudnn_layer *c, const suite_layer *l, const int64_t *in,
                            const int64_t *fl, const int64_t *out)
{
    int n = l->nd + 2, di[5], df[5], dout[5], st[5], pad[3], stride[3], dil[3];
    for (int i = 0; i < n; ++i) {
        di[i] = (int)in[i];
        df[i] = (int)fl[i];
        dout[i] = (int)out[i];
    }
    for (int i = 0; i < l->nd; ++i) {
        pad[i] = (int)l->pad[i];
        stride[i] = (int)l->stride[i];
        dil[i] = (int)l->dilation[i];
    }
    packed_strides(n, di, st);
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(c->x_desc, CUDNN_DATA_FLOAT, n, di, st));
    packed_strides(n, dout, st);
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(c->y_desc, CUDNN_DATA_FLOAT, n, dout, st));
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(c->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, n, df));
    CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(c->conv, l->nd, pad, stride, dil,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionGroupCount(c->conv, (int)l->groups));
    CUDNN_CHECK(cudnnSetConvolutionMathType(c->conv, CUDNN_DEFAULT_MATH));
    int check[5];
    CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(c->conv, c->x_desc, c->w_desc, n, check));
    for (int i = 0; i < n; ++i) {
        if (check[i] != dout[i]) {
            fprintf(stderr, "cudnn_compare: %s: cuDNN output dim %d is %d, suite says %d\n",
                    l->name, i, check[i], dout[i]);
            exit(1);
        }
    }
}

static float *device_random(size_t count, uint64_t seed, float *host)
{
    float *d = NULL;
    suite_fill_random(host, count, seed);
    CUDA_CHECK(cudaMalloc((void **)&d, count * sizeof *d));
    CUDA_CHECK(cudaMemcpy(d, host, count * sizeof *d, cudaMemcpyHostToDevice));
    return d;
}

static cudnnStatus_t run_cudnn(cudnn_layer *c, int d, int algo)
{
    const float one = 1.0f, zero = 0.0f;
    if (d == CONVOY_CONV_FORWARD)
        return cudnnConvolutionForward(c->handle, &one, c->x_desc, c->x, c->w_desc, c->w, c->conv,
                                       (cudnnConvolutionFwdAlgo_t)algo, c->workspace,
                                       c->workspace_bytes, &zero, c->y_desc, c->y);
    if (d == CONVOY_CONV_BACKWARD_DATA)
        return cudnnConvolutionBackwardData(c->handle, &one, c->w_desc, c->w, c->y_desc, c->y,
                                            c->conv, (cudnnConvolutionBwdDataAlgo_t)algo,
                                            c->workspace, c->workspace_bytes, &zero, c->x_desc,
                                            c->dx);
    return cudnnConvolutionBackwardFilter(c->handle, &one, c->x_desc, c->x, c->y_desc, c->y,
                                          c->conv, (cudnnConvolutionBwdFilterAlgo_t)algo,
                                          c->workspace, c->workspace_bytes, &zero, c->w_desc,
                                          c->dw);
}

/* The algorithms cudnnFind*AlgorithmEx ran successfully within the workspace. */
static int find_candidates(cudnn_layer *c, int d, candidate *out)
{
    int returned = 0, count = 0;
    if (d == CONVOY_CONV_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[MAX_ALGOS];
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
            c->handle, c->x_desc, c->x, c->w_desc, c->w, c->conv, c->y_desc, c->y, MAX_ALGOS,
            &returned, perf, c->workspace, c->workspace_bytes));
        for (int i = 0; i < returned; ++i) {
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= c->workspace_bytes)
                out[count++] = (candidate){(int)perf[i].algo, perf[i].mathType, perf[i].memory};
        }
    } else if (d == CONVOY_CONV_BACKWARD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[MAX_ALGOS];
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
            c->handle, c->w_desc, c->w, c->y_desc, c->y, c->conv, c->x_desc, c->dx, MAX_ALGOS,
            &returned, perf, c->workspace, c->workspace_bytes));
        for (int i = 0; i < returned; ++i) {
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= c->workspace_bytes)
                out[count++] = (candidate){(int)perf[i].algo, perf[i].mathType, perf[i].memory};
        }
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX_ALGOS];
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
            c->handle, c->x_desc, c->x, c->y_desc, c->y, c->conv, c->w_desc, c->dw, MAX_ALGOS,
            &returned, perf, c->workspace, c->workspace_bytes));
        for (int i = 0; i < returned; ++i) {
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= c->workspace_bytes)
                out[count++] = (candidate){(int)perf[i].algo, perf[i].mathType, perf[i].memory};
        }
    }
    return count;
}

/* Seconds per call of one cuDNN algorithm: R back-to-back calls per batch,
 * median of BATCHES batches. Returns -1 when the algorithm fails to run. */
static double time_cudnn(cudnn_layer *c, int d, const candidate *cand)
{
    CUDNN_CHECK(cudnnSetConvolutionMathType(c->conv, cand->math));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    double t0 = suite_now();
    if (run_cudnn(c, d, cand->algo) != CUDNN_STATUS_SUCCESS)
        return -1.0;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    double once = suite_now() - t0;
    int repeat = once > 0 ? (int)(BATCH_TIME_S / once) : MAX_REPEAT;
    repeat = repeat < 3 ? 3 : repeat > MAX_REPEAT ? MAX_REPEAT : repeat;
    double times[BATCHES];
    for (int b = 0; b < BATCHES; ++b) {
        t0 = suite_now();
        for (int r = 0; r < repeat; ++r)
            CUDNN_CHECK(run_cudnn(c, d, cand->algo));
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        times[b] = (suite_now() - t0) / repeat;
    }
    return suite_median(times, BATCHES);
}

static void submit_convoy(convoy_runtime *rt, const convoy_conv_params *p, int d,
                          convoy_tensor *const t[5])
{
    if (d == CONVOY_CONV_FORWARD)
        CHECK(convoy_conv_forward(rt, p, t[0], t[1], t[2], NULL));
    else if (d == CONVOY_CONV_BACKWARD_DATA)
        CHECK(convoy_conv_backward_data(rt, p, t[1], t[2], t[3], NULL));
    else
        CHECK(convoy_conv_backward_filter(rt, p, t[0], t[2], t[4], NULL));
}

/* Seconds per convoy call, timed as time_cudnn times cuDNN. The first call
 * (which runs time_once's candidate timing) is not counted. */
static double time_convoy(convoy_runtime *rt, const convoy_conv_params *p, int d,
                          convoy_tensor *const t[5])
{
    submit_convoy(rt, p, d, t);
    CHECK(convoy_runtime_synchronize(rt));
    double t0 = suite_now();
    submit_convoy(rt, p, d, t);
    CHECK(convoy_runtime_synchronize(rt));
    double once = suite_now() - t0;
    int repeat = once > 0 ? (int)(BATCH_TIME_S / once) : MAX_REPEAT;
    repeat = repeat < 3 ? 3 : repeat > MAX_REPEAT ? MAX_REPEAT : repeat;
    double times[BATCHES];
    for (int b = 0; b < BATCHES; ++b) {
        t0 = suite_now();
        for (int r = 0; r < repeat; ++r)
            submit_convoy(rt, p, d, t);
        CHECK(convoy_runtime_synchronize(rt));
        times[b] = (suite_now() - t0) / repeat;
    }
    return suite_median(times, BATCHES);
}

static const char *algo_name(int d, int algo)
{
    if (d == CONVOY_CONV_FORWARD && algo >= 0 && algo < CUDNN_CONVOLUTION_FWD_ALGO_COUNT)
        return fwd_algo_names[algo];
    if (d == CONVOY_CONV_BACKWARD_DATA && algo >= 0 && algo < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT)
        return bwd_data_algo_names[algo];
    if (d == CONVOY_CONV_BACKWARD_FILTER && algo >= 0 &&
        algo < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT)
        return bwd_filter_algo_names[algo];
    return "?";
}

/* How the algorithm ran: plain (default math), on tensor cores, or FMA only. */
static const char *math_suffix(cudnnMathType_t math)
{
    switch (math) {
    case CUDNN_TENSOR_OP_MATH:
        return "+TC";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
        return "+TCconv";
    case CUDNN_FMA_MATH:
        return "+FMA";
    default:
        return "";
    }
}

/* Compares one layer in all three directions; returns the number of misses. */
static int compare_layer(convoy_runtime *rt, cudnn_layer *c, const suite_layer *l)
{
    int64_t in[5], fl[5], out[5];
    int nd2 = l->nd + 2;
    suite_dims(l, in, fl, out);
    set_descriptors(c, l, in, fl, out);
    size_t n_in = (size_t)suite_numel(nd2, in), n_fl = (size_t)suite_numel(nd2, fl);
    size_t n_out = (size_t)suite_numel(nd2, out);
    size_t most = n_in > n_out ? n_in : n_out;
    float *host = malloc((most > n_fl ? most : n_fl) * sizeof *host);
    if (!host)
        fail_exit("malloc", "out of host memory", __FILE__, __LINE__);

    /* Same data on both sides; seeds match the demo's. */
    convoy_tensor *t[5];
    const int64_t *dims[5] = {in, fl, out, in, fl};
    float **dev[5] = {&c->x, &c->w, &c->y, &c->dx, &c->dw};
    for (int k = 0; k < 5; ++k) {
        size_t count = (size_t)suite_numel(nd2, dims[k]);
        *dev[k] = device_random(count, (uint64_t)k + 1, host);
        CHECK(convoy_tensor_create(rt, nd2, dims[k], &t[k]));
        convoy_task *task = NULL;
        CHECK(convoy_upload(rt, t[k], host, count, &task));
        CHECK(convoy_task_wait(task));
        convoy_task_release(task);
    }
    convoy_conv_params p;
    CHECK(suite_params(l, &p));

    int misses = 0;
    for (int d = 0; d < 3; ++d) {
        candidate cands[MAX_ALGOS];
        CUDNN_CHECK(cudnnSetConvolutionMathType(c->conv, CUDNN_DEFAULT_MATH));
        int ncand = find_candidates(c, d, cands);
        double best = -1.0;
        int best_i = -1;
        for (int i = 0; i < ncand; ++i) {
            double sec = time_cudnn(c, d, &cands[i]);
            if (sec > 0 && (best < 0 || sec < best)) {
                best = sec;
                best_i = i;
            }
        }
        double mine = time_convoy(rt, &p, d, t);
        convoy_conv_plan_info info;
        CHECK(convoy_conv_explain(rt, &p, (convoy_conv_direction)d, in, fl, out, &info));
        char algo[48];
        snprintf(algo, sizeof algo, "%s%s", best_i >= 0 ? algo_name(d, cands[best_i].algo) : "-",
                 best_i >= 0 ? math_suffix(cands[best_i].math) : "");
        double ratio = best > 0 ? mine / best : 0.0;
        printf("%-18s %-15s %2d %-22s %9.3f  %-26.26s %9.3f %7.3f %s\n", l->name,
               direction_names[d], ncand, algo, best > 0 ? best * 1e3 : 0.0, info.algorithm,
               mine * 1e3, ratio,
               best <= 0               ? "no cuDNN algo"
               : ratio <= TARGET_RATIO ? "ok"
                                       : "MISS");
        fflush(stdout);
        misses += best > 0 && ratio > TARGET_RATIO;
    }
    CHECK(convoy_runtime_synchronize(rt));
    for (int k = 0; k < 5; ++k) {
        convoy_tensor_destroy(t[k]);
        CUDA_CHECK(cudaFree(*dev[k]));
        *dev[k] = NULL;
    }
    free(host);
    return misses;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "bench/conv_suite.txt";
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        printf("cudnn_compare: no usable CUDA device (%s); nothing to compare\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    suite s;
    char err[512];
    if (suite_load(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "cudnn_compare: %s\n", err);
        return 1;
    }

    convoy_options o;
    CHECK(convoy_options_init(&o));
    CHECK(convoy_options_from_env(&o)); /* CONVOY_TUNE_CACHE, CONVOY_EXCLUDE, ... */
    o.device = CONVOY_DEVICE_CUDA;
    o.algo = CONVOY_ALGO_TIME_ONCE;
    convoy_runtime *rt = NULL;
    convoy_status st = convoy_runtime_create(&o, &rt);
    if (st == CONVOY_ERR_NO_DEVICE) {
        printf("cudnn_compare: convoy sees no usable GPU: %s\n", convoy_last_error_message());
        return 77;
    }
    CHECK(st);
    printf("runtime: %s\n", convoy_runtime_describe(rt));

    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, o.device_index));
    CUDA_CHECK(cudaSetDevice(o.device_index));
    printf("cuDNN %zu on %s; ms per call, median of %d batches of back-to-back calls\n\n",
           cudnnGetVersion(), prop.name, BATCHES);

    cudnn_layer c;
    memset(&c, 0, sizeof c);
    CUDNN_CHECK(cudnnCreate(&c.handle));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
    CUDNN_CHECK(cudnnSetStream(c.handle, c.stream));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&c.x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&c.y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&c.w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c.conv));
    c.workspace_bytes = o.workspace_limit ? o.workspace_limit : WORKSPACE_BYTES;
    CUDA_CHECK(cudaMalloc(&c.workspace, c.workspace_bytes));

    printf("%-18s %-15s %2s %-22s %9s  %-26s %9s %7s %s\n", "layer", "direction", "n",
           "best cuDNN algo", "cuDNN ms", "convoy algorithm", "convoy ms", "ratio", "<= 1.05");
    int misses = 0;
    for (size_t i = 0; i < s.count; ++i) {
        int wanted = argc <= 2;
        for (int a = 2; a < argc; ++a)
            wanted = wanted || !strcmp(argv[a], s.layers[i].name);
        if (wanted)
            misses += compare_layer(rt, &c, &s.layers[i]);
    }
    printf("\n%d layer-directions over the 5%% margin\n", misses);

    CUDA_CHECK(cudaFree(c.workspace));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(c.conv));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(c.w_desc));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(c.y_desc));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(c.x_desc));
    CUDNN_CHECK(cudnnDestroy(c.handle));
    CUDA_CHECK(cudaStreamDestroy(c.stream));
    convoy_runtime_destroy(rt);
    suite_free(&s);
    return 0;
}
