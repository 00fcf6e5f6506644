/* convoy: an asynchronous convolution runtime for C programs.
 *
 * A program creates a runtime, creates tensors in it and submits tasks:
 * uploads, convolutions (forward, gradient w.r.t. the input, gradient w.r.t.
 * the filters; 2D and 3D), downloads and its own custom steps. Every submit
 * returns at once with an optional task handle; the runtime orders tasks by
 * the tensors they read and write, so the result of any sequence of submits
 * equals running the tasks one at a time in submission order.
 *
 * Conventions that hold for every function below:
 *  - Every fallible call returns convoy_status (CONVOY_OK == 0). On failure
 *    convoy_last_error_message() gives this thread's detail text, and the call
 *    changed nothing: no task was enqueued, no output was touched.
 *  - Outputs come last. Objects are opaque. Destroy/release functions accept
 *    NULL.
 *  - All functions are safe to call from any thread. Submission order between
 *    threads is the order in which the runtime's lock is granted.
 *  - The library never prints, exits or aborts.
 *  - Once the device has reported an asynchronous fault (a kernel or copy
 *    that failed after its submit returned), every later submit of that
 *    runtime returns CONVOY_ERR_BACKEND naming the first fault, and the
 *    tasks that depended on the faulted one fail with
 *    CONVOY_ERR_DEPENDENCY_FAILED. Destroy the runtime to recover.
 *
 * This header compiles as C99 and as C++ and needs no CUDA or MPI header.
 * CUDA interop (streams, device pointers) is in convoy_cuda.h; making a
 * communicator from an MPI communicator is in convoy_mpi.h.
 */
#ifndef CONVOY_H
#define CONVOY_H

#include <stddef.h>
#include <stdint.h>

#include "convoy_version.h"

#if defined(_WIN32) && defined(CONVOY_BUILDING_LIBRARY)
#define CONVOY_EXTERN __declspec(dllexport)
#elif defined(_WIN32) && !defined(CONVOY_STATIC)
#define CONVOY_EXTERN __declspec(dllimport)
#elif defined(__GNUC__)
#define CONVOY_EXTERN __attribute__((visibility("default")))
#else
#define CONVOY_EXTERN
#endif

#if defined(__GNUC__)
#define CONVOY_NODISCARD __attribute__((warn_unused_result))
#else
#define CONVOY_NODISCARD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------ */

/* One list makes both the enum and convoy_status_name(). */
#define CONVOY_STATUS_LIST(X)                                                                      \
    X(CONVOY_OK, 0, "success")                                                                     \
    X(CONVOY_ERR_INVALID_ARGUMENT, 1, "a NULL or out-of-range argument")                           \
    X(CONVOY_ERR_SHAPE, 2, "tensor shapes do not fit the request")                                 \
    X(CONVOY_ERR_UNSUPPORTED, 3, "no enabled implementation supports the request")                 \
    X(CONVOY_ERR_OUT_OF_MEMORY, 4, "an allocation failed")                                         \
    X(CONVOY_ERR_NO_DEVICE, 5, "the requested device is not usable")                               \
    X(CONVOY_ERR_BACKEND, 6, "a CUDA, cuBLAS, cuDNN, BLAS, MPI or NCCL call failed")               \
    X(CONVOY_ERR_DEPENDENCY_FAILED, 7, "a task this one depends on failed")                        \
    X(CONVOY_ERR_BUSY, 8, "the object is still in use")                                            \
    X(CONVOY_ERR_INTERNAL, 9, "an internal invariant failed")                                      \
    X(CONVOY_ERR_TASK_FAILED, 10, "a custom task reported failure")

typedef enum convoy_status {
#define CONVOY_STATUS_ENUM_ENTRY(name, value, text) name = value,
    CONVOY_STATUS_LIST(CONVOY_STATUS_ENUM_ENTRY)
#undef CONVOY_STATUS_ENUM_ENTRY
} convoy_status;

/* The code's name ("CONVOY_ERR_SHAPE"); "CONVOY_STATUS_UNKNOWN" for values
 * outside the enum. Never NULL, static storage. */
CONVOY_EXTERN const char *convoy_status_name(convoy_status status);

/* What the code means, from CONVOY_STATUS_LIST ("tensor shapes do not fit the
 * request"); "unknown status" for values outside the enum. Never NULL,
 * static storage. */
CONVOY_EXTERN const char *convoy_status_description(convoy_status status);

/* The detail text of the most recent failed call made by this thread, for
 * example "conv_forward: input has 6 channels but filters expect 3 x 1
 * group". Names the call, the tensor, the dimension, and the expected and
 * actual values; for a backend failure the CUDA/cuDNN/cuBLAS call, its error
 * string and file:line. Empty string when nothing failed yet. Valid until the
 * thread's next convoy call; never NULL. */
CONVOY_EXTERN const char *convoy_last_error_message(void);

/* ---- options and runtime --------------------------------------------- */

typedef struct convoy_runtime convoy_runtime;
typedef struct convoy_tensor convoy_tensor;
typedef struct convoy_task convoy_task;

typedef enum convoy_device {
    CONVOY_DEVICE_AUTO = 0, /* CUDA when a usable GPU is present, else the CPU */
    CONVOY_DEVICE_CPU = 1,
    CONVOY_DEVICE_CUDA = 2
} convoy_device;

typedef enum convoy_algo_policy {
    CONVOY_ALGO_HEURISTIC = 0,           /* cuDNN's ranking or a cost model; no timing */
    CONVOY_ALGO_TIME_ONCE = 1,           /* time all candidates at a shape's first use */
    CONVOY_ALGO_TIME_ON_SHAPE_CHANGE = 2 /* time again whenever the shape key is new */
} convoy_algo_policy;

typedef enum convoy_log_level {
    CONVOY_LOG_ERROR = 0,
    CONVOY_LOG_WARNING = 1,
    CONVOY_LOG_INFO = 2,
    CONVOY_LOG_DEBUG = 3
} convoy_log_level;

/* Receives the runtime's log lines (a stale tune cache ignored, the profile
 * summary). Called from any runtime thread; must not call back into convoy. */
typedef void (*convoy_log_fn)(void *user_data, convoy_log_level level, const char *message);

/* Runtime configuration. Always start from convoy_options_init() so fields
 * added later get their defaults. Each field names the environment variable
 * convoy_options_from_env() reads for it. */
typedef struct convoy_options {
    convoy_device device;    /* CONVOY_DEVICE=auto|cpu|cuda (default auto) */
    int device_index;        /* CONVOY_DEVICE_INDEX=0..1024 (default 0) */
    int streams;             /* CONVOY_STREAMS=0..64: compute streams; -1 = the device's
                                default (CPU: 0, run every task inline at submit; CUDA: 4) */
    int blas_threads;        /* CONVOY_BLAS_THREADS=0..1024: threads the CPU backend computes
                                with in total (oneDNN's OpenMP threads; OpenBLAS's in a build
                                without oneDNN), divided between the compute streams;
                                0 = all cores */
    convoy_algo_policy algo; /* CONVOY_ALGO=heuristic|time_once|time_on_shape_change */
    const char *exclude;     /* CONVOY_EXCLUDE: comma-separated algorithm names the planner
                                leaves out ("gemm,1x1"); NULL or "" = none */
    const char *require;     /* CONVOY_REQUIRE: comma-separated algorithm names that must be
                                usable ("cudnn": runtime_create fails without cuDNN instead
                                of falling back); NULL or "" = none */
    int deterministic;       /* CONVOY_DETERMINISTIC=0|1: only deterministic algorithms */
    int exact_only;          /* CONVOY_EXACT_ONLY=0|1: only exact algorithms, no transform-based
                                ones (Winograd, FFT) whose rounding differs from a direct sum */
    size_t memory_limit;     /* CONVOY_MEMORY_LIMIT bytes (K/M/G suffix), 0 = no limit */
    size_t workspace_limit;  /* CONVOY_WORKSPACE_LIMIT bytes per convolution, 0 = a quarter
                                of memory_limit, or 1 GiB when that is unlimited; plans also
                                fit what the pool can still grant, and a submit that finds
                                the pool full takes a smaller chunk or a leaner algorithm */
    const char *tune_cache;  /* CONVOY_TUNE_CACHE: path of the persistent tuning file */
    const char *trace_path;  /* CONVOY_TRACE: write a Chrome trace (JSON) at destroy */
    int profile;             /* CONVOY_PROFILE=0|1: log a per-kind summary at destroy */
    long test_fail_alloc;    /* testing only: the N-th backend allocation fails; 0 = off.
                                When 0, convoy_runtime_create reads the test hook
                                CONVOY_TEST_FAIL_ALLOC=N from the environment instead,
                                whatever else the options say. */
    convoy_log_fn log_fn;    /* NULL: silent, unless profile (then stderr); CONVOY_LOG=stderr
                                makes convoy_options_from_env install a stderr logger */
    void *log_user_data;
} convoy_options;

/* Fills *options with the defaults: device AUTO, device_index 0, streams -1,
 * blas_threads 0, algo HEURISTIC, no exclude/require, no limits, no tune
 * cache, trace or profile, no log callback. Reads no environment variable.
 * Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL options. Synchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_options_init(convoy_options *options);

/* Applies the CONVOY_* environment variables on top of *options (call
 * convoy_options_init first). A variable that is unset or empty leaves its
 * field as it was. Accepted values:
 *   CONVOY_DEVICE          auto|cpu|cuda
 *   CONVOY_ALGO            heuristic|time_once|time_on_shape_change
 *   CONVOY_DETERMINISTIC, CONVOY_EXACT_ONLY, CONVOY_PROFILE   0|1
 *   CONVOY_DEVICE_INDEX, CONVOY_BLAS_THREADS   digits, 0..1024
 *   CONVOY_STREAMS         digits, 0..64
 *   CONVOY_MEMORY_LIMIT, CONVOY_WORKSPACE_LIMIT   digits with an optional
 *                          K, M or G suffix (powers of 1024)
 *   CONVOY_EXCLUDE, CONVOY_REQUIRE   comma-separated algorithm names
 *   CONVOY_TUNE_CACHE, CONVOY_TRACE  a path
 *   CONVOY_LOG             stderr: log_fn, when NULL, becomes a logger that
 *                          writes each line to stderr
 * Numbers take no sign, blank or trailing text. The string fields point into
 * the environment: they stay valid until it changes, and
 * convoy_runtime_create copies them. A malformed variable is
 * CONVOY_ERR_INVALID_ARGUMENT; the message names the first malformed variable
 * (in the order of the fields of convoy_options), its value and every
 * accepted spelling, and that field keeps its previous value (the
 * well-formed variables are applied). Returns
 * CONVOY_ERR_INVALID_ARGUMENT for a NULL options. Not thread-safe against
 * setenv/putenv in other threads. Synchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_options_from_env(convoy_options *options);

/* Creates a runtime. options may be NULL: the defaults with the environment
 * applied (convoy_options_init, then convoy_options_from_env). String fields
 * are copied. With device AUTO the runtime falls back to the CPU when CUDA is
 * not usable and says why in convoy_runtime_describe().
 * Returns: CONVOY_ERR_INVALID_ARGUMENT (NULL out, out-of-range field, an
 * unknown algorithm name in exclude/require, a malformed CONVOY_* variable
 * when options is NULL, a malformed CONVOY_TEST_FAIL_ALLOC),
 * CONVOY_ERR_NO_DEVICE (device CUDA but none is usable; the reason is in the
 * message), CONVOY_ERR_UNSUPPORTED (require names an implementation that is
 * missing), CONVOY_ERR_OUT_OF_MEMORY, CONVOY_ERR_BACKEND. *out is set only on
 * success; destroy it with convoy_runtime_destroy(). */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_runtime_create(const convoy_options *options,
                                                                   convoy_runtime **out);

/* Waits for every submitted task, then frees the runtime, its tasks'
 * internal state, its memory and the storage of every tensor. Handles the
 * program still holds are detached, not freed: a task handle not yet
 * released stays valid for convoy_task_wait / convoy_task_done /
 * convoy_task_release, and a tensor handle not yet destroyed stays valid for
 * convoy_tensor_ndim / convoy_tensor_dim / convoy_tensor_destroy (which then
 * only frees the handle); every other call refuses a detached tensor with
 * CONVOY_ERR_INVALID_ARGUMENT. Each such handle still needs its release or
 * destroy call. NULL is a no-op. */
CONVOY_EXTERN void convoy_runtime_destroy(convoy_runtime *runtime);

/* Blocks until every task submitted so far has completed. Returns CONVOY_OK,
 * or the status of the first of those tasks that failed since the previous
 * synchronize (the failure itself was already recorded by its task). */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_runtime_synchronize(convoy_runtime *runtime);

/* The device this runtime runs on (CPU or CUDA, never AUTO). */
CONVOY_EXTERN convoy_device convoy_runtime_device(const convoy_runtime *runtime);

/* One line: backend, device name, library versions, streams, and why it fell
 * back to the CPU when it did. Owned by the runtime; valid until destroy. */
CONVOY_EXTERN const char *convoy_runtime_describe(const convoy_runtime *runtime);

/* ---- tensors ----------------------------------------------------------- */

#define CONVOY_MAX_DIMS 8

/* Creates a dense float32 row-major tensor (N,C,H,W / N,C,D,H,W / unshared
 * filters M,oH,oW,C,kH,kW) stored on the runtime's device. Contents are
 * undefined until written. dims[i] >= 0; a zero dim makes an empty tensor.
 * Returns CONVOY_ERR_INVALID_ARGUMENT (NULL, ndim outside 1..8, negative dim,
 * element count overflowing), CONVOY_ERR_OUT_OF_MEMORY. Synchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_tensor_create(convoy_runtime *runtime, int ndim,
                                                                  const int64_t *dims,
                                                                  convoy_tensor **out);

/* Releases the tensor. Its storage returns to the pool once the tasks already
 * submitted that use it have finished; the call itself does not block. The
 * tensor must not be named in a submit after this. On a tensor detached by
 * convoy_runtime_destroy it frees the handle. NULL is a no-op. */
CONVOY_EXTERN void convoy_tensor_destroy(convoy_tensor *tensor);

/* Rank of the tensor; 0 for NULL. Works on a detached tensor too. */
CONVOY_EXTERN int convoy_tensor_ndim(const convoy_tensor *tensor);

/* Extent of one axis; -1 for NULL or an axis outside 0..ndim-1. Works on a
 * detached tensor too. */
CONVOY_EXTERN int64_t convoy_tensor_dim(const convoy_tensor *tensor, int axis);

/* ---- tasks ------------------------------------------------------------- */

/* Every submit takes `convoy_task **task`, which may be NULL when the caller
 * does not want a handle. A submit that returns an error enqueued nothing and
 * sets no handle. A handle must be released exactly once. */

/* Blocks until the task completes and returns its final status: CONVOY_OK, the
 * error it failed with, or CONVOY_ERR_DEPENDENCY_FAILED when a task it read
 * from failed. CONVOY_ERR_INVALID_ARGUMENT for NULL. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_task_wait(convoy_task *task);

/* 1 when the task has completed (successfully or not), 0 while it is pending.
 * Never blocks. NULL counts as completed. */
CONVOY_EXTERN int convoy_task_done(convoy_task *task);

/* Drops the caller's handle. The task still runs to completion. NULL: no-op. */
CONVOY_EXTERN void convoy_task_release(convoy_task *task);

/* ---- transfers --------------------------------------------------------- */

/* Copies the count floats at host_src into dst; count is the host buffer's
 * element count and must equal numel(dst). Asynchronous: host_src must stay
 * valid and unmodified until the task completes. Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL runtime/tensor, NULL host_src for a
 * non-empty tensor, a tensor of another runtime or a detached one),
 * CONVOY_ERR_SHAPE (count is not numel(dst); the message gives the tensor's
 * dims, the expected and the given count) or CONVOY_ERR_OUT_OF_MEMORY. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_upload(convoy_runtime *runtime,
                                                           convoy_tensor *dst, const void *host_src,
                                                           size_t count, convoy_task **task);

/* Copies src into the count floats at host_dst; count is the host buffer's
 * element count and must equal numel(src). Asynchronous: host_dst must stay
 * valid and untouched until the task completes. If the task that last wrote
 * src failed, this task fails with CONVOY_ERR_DEPENDENCY_FAILED and host_dst
 * is not written. Errors as convoy_upload. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_download(convoy_runtime *runtime,
                                                             convoy_tensor *src, void *host_dst,
                                                             size_t count, convoy_task **task);

/* ---- convolution ------------------------------------------------------- */

typedef enum convoy_border {
    CONVOY_BORDER_VALID = 0,   /* no padding */
    CONVOY_BORDER_FULL = 1,    /* pad dk-1 on both sides, dk = (k-1)*dilation+1 */
    CONVOY_BORDER_HALF = 2,    /* pad dk/2 on both sides */
    CONVOY_BORDER_EXPLICIT = 3 /* pad_before / pad_after, may be asymmetric */
} convoy_border;

/* What a convolution computes; see CONV_SEMANTICS.md (Aesara's conv ops). */
typedef struct convoy_conv_params {
    int spatial_dims;      /* 2 or 3 */
    convoy_border border;  /* default VALID */
    int64_t pad_before[3]; /* EXPLICIT only; >= 0 */
    int64_t pad_after[3];  /* EXPLICIT only; >= 0 */
    int64_t stride[3];     /* >= 1, default 1 */
    int64_t dilation[3];   /* >= 1, default 1 */
    int64_t groups;        /* >= 1, divides C and M; default 1 */
    int flip;              /* 1: true convolution (default), 0: cross-correlation */
    int unshared;          /* 1: per-output-position filters (2D only), default 0 */
} convoy_conv_params;

/* Sets Aesara's defaults: valid border, stride 1, dilation 1, groups 1, flip
 * on, shared filters. CONVOY_ERR_INVALID_ARGUMENT for NULL or spatial_dims not
 * 2 or 3. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_conv_params_init(convoy_conv_params *params,
                                                                     int spatial_dims);

/* Forward output dims (spatial_dims + 2 values) for the given input dims
 * (spatial_dims + 2) and filter dims (spatial_dims + 2, or 6 when unshared):
 * o = floor((i + pl + pr - dk) / s) + 1 per axis. Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL, bad params) or CONVOY_ERR_SHAPE (channels
 * or groups do not match, an output extent < 1, unshared regions that are not
 * the output size, an operand whose element count, bytes or the sizes the
 * backends derive from it would overflow). output_dims is written only on
 * success. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_conv_output_dims(const convoy_conv_params *params, const int64_t *input_dims,
                        const int64_t *filter_dims, int64_t *output_dims);

/* output = conv(input, filters). input (N,C,spatial...), filters (M,C/g,k...)
 * or unshared (M,oH,oW,C/g,kH,kW), output (N,M,o...), all of the runtime.
 * Asynchronous. Returns CONVOY_ERR_INVALID_ARGUMENT (NULL, bad params, a
 * tensor of another runtime, output aliasing an operand), CONVOY_ERR_SHAPE
 * (ranks or extents that do not fit, with the tensor and dim named; sizes that
 * would overflow), CONVOY_ERR_UNSUPPORTED (every implementation that could run it is
 * excluded), CONVOY_ERR_OUT_OF_MEMORY. Empty batch/channel/filter tensors are
 * legal (the output is empty or zero-filled). */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_conv_forward(convoy_runtime *runtime, const convoy_conv_params *params, convoy_tensor *input,
                    convoy_tensor *filters, convoy_tensor *output, convoy_task **task);

/* grad_input = gradient of conv w.r.t. its input, given grad_output; also
 * conv2d_transpose. The dims of grad_input pick among the input sizes a
 * strided forward could have come from and must reproduce grad_output's dims
 * through the forward formula (CONVOY_ERR_SHAPE otherwise). Input positions no
 * window covers get 0. Other errors as convoy_conv_forward. Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_conv_backward_data(
    convoy_runtime *runtime, const convoy_conv_params *params, convoy_tensor *filters,
    convoy_tensor *grad_output, convoy_tensor *grad_input, convoy_task **task);

/* grad_filters = gradient of conv w.r.t. the filters (flipped back when flip
 * is on), given input and grad_output. grad_filters' dims give the kernel
 * size. Errors as convoy_conv_forward. Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_conv_backward_filter(
    convoy_runtime *runtime, const convoy_conv_params *params, convoy_tensor *input,
    convoy_tensor *grad_output, convoy_tensor *grad_filters, convoy_task **task);

typedef enum convoy_conv_direction {
    CONVOY_CONV_FORWARD = 0,
    CONVOY_CONV_BACKWARD_DATA = 1,
    CONVOY_CONV_BACKWARD_FILTER = 2
} convoy_conv_direction;

/* The plan the runtime would use for one convolution. */
typedef struct convoy_conv_plan_info {
    char implementation[16];  /* the algorithm: "cudnn", "onednn", "winograd", "depthwise",
                                 "gemm", "1x1" or "direct" */
    char algorithm[64];       /* the candidate: "cudnn:FFT", "onednn:plain", or the
                                 implementation again */
    size_t workspace_bytes;   /* scratch the convolution takes from the pool */
    int64_t images_per_chunk; /* GEMM path: images per im2col chunk; else 0 */
    int from_cache;           /* 1 when the plan was already in the plan cache */
} convoy_conv_plan_info;

/* Plans a convolution without running it and reports the plan. The dims are
 * those of the forward convolution whatever the direction: input
 * (spatial_dims + 2 values), filters (spatial_dims + 2, or 6 when unshared),
 * output (spatial_dims + 2). Validation and errors are those of the matching
 * submit call. The plan is cached as a submit would cache it. Synchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_conv_explain(
    convoy_runtime *runtime, const convoy_conv_params *params, convoy_conv_direction direction,
    const int64_t *input_dims, const int64_t *filter_dims, const int64_t *output_dims,
    convoy_conv_plan_info *info);

/* ---- training ops ------------------------------------------------------ */

/* What a training loop needs besides convolutions, as ordinary tasks: submitted like every
 * other task, ordered by the tensors they read and write, run on the runtime's streams, shown
 * in traces and NVTX under their own names (conv_fwd_bias_act, act_bwd, bias_bwd,
 * softmax_xent, sgd). Each is asynchronous: the call validates and returns, and the task
 * reads and writes the tensors in submission order. A tensor may be destroyed as soon as the
 * submit returns (its storage stays until the task has run); nothing else is kept. Every
 * call returns CONVOY_ERR_INVALID_ARGUMENT for a NULL runtime or a NULL required tensor, a
 * tensor of another runtime or a detached one, an out-of-range enum or parameter, or an
 * output that aliases an operand it may not; CONVOY_ERR_SHAPE (naming the call, the tensor,
 * the dim, the expected and the actual value) when shapes do not fit; and
 * CONVOY_ERR_OUT_OF_MEMORY or CONVOY_ERR_BACKEND (a device fault seen earlier) like any
 * submit. On error nothing was enqueued. The ops' own sums (bias gradient, loss, count) run
 * in a fixed order on each backend, so the same inputs give the same bits whatever the
 * streams; the convolution inside convoy_conv_forward_bias_act is as reproducible as the
 * algorithm the planner picks (CONVOY_DETERMINISTIC). */

typedef enum convoy_activation {
    CONVOY_ACTIVATION_NONE = 0, /* identity */
    CONVOY_ACTIVATION_RELU = 1  /* max(x, 0); its gradient is taken as 0 at 0 */
} convoy_activation;

/* output = act(conv(input, filters) + bias[m]): convoy_conv_forward followed by a per-channel
 * bias and an activation, in one task. bias is a 1-D tensor of M = filters' dim 0 elements,
 * or NULL for none. Where the algorithm allows it the epilogue is fused into the convolution
 * (oneDNN applies bias and ReLU inside its primitive; cuDNN's fused call takes a bias, and
 * ReLU under its IMPLICIT_PRECOMP_GEMM algorithm); otherwise the same task runs it as a pass
 * over the output right after the convolution. The plan, and so the algorithm, is the one
 * convoy_conv_forward would use for the same shapes. Parameters, shapes and errors as
 * convoy_conv_forward, plus: CONVOY_ERR_INVALID_ARGUMENT for act outside the enum or a bias
 * that is the output tensor; CONVOY_ERR_SHAPE for a bias whose rank is not 1 or whose
 * length is not M. Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_conv_forward_bias_act(convoy_runtime *runtime, const convoy_conv_params *params,
                             convoy_tensor *input, convoy_tensor *filters, convoy_tensor *bias,
                             convoy_activation act, convoy_tensor *output, convoy_task **task);

/* grad_input = grad_output * act'(x), where output = act(x) is the activated forward output
 * (for ReLU: grad_output where output > 0, else 0). The three tensors have the same dims (any
 * rank). grad_input may be grad_output (computed in place) but not output. Returns
 * CONVOY_ERR_INVALID_ARGUMENT (act outside the enum, grad_input == output, or the general
 * cases above), CONVOY_ERR_SHAPE (ranks or dims that differ, naming the first).
 * Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_activation_backward(
    convoy_runtime *runtime, convoy_activation act, convoy_tensor *output,
    convoy_tensor *grad_output, convoy_tensor *grad_input, convoy_task **task);

/* grad_bias[m] = sum of grad[n, m, ...] over the batch and every spatial position: the
 * gradient of a per-channel bias. grad has rank >= 2, (N, M, ...); grad_bias is 1-D of M
 * elements (overwritten). An empty batch gives zeros. Returns CONVOY_ERR_INVALID_ARGUMENT
 * (grad_bias == grad, or the general cases), CONVOY_ERR_SHAPE. Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_bias_backward(convoy_runtime *runtime,
                                                                  convoy_tensor *grad,
                                                                  convoy_tensor *grad_bias,
                                                                  convoy_task **task);

/* Softmax cross-entropy of a batch, with its gradient and accuracy, in one task.
 *   logits       (N, K), or (N, K, 1, 1) / (N, K, 1, 1, 1) as a classifier convolution
 *                writes it; N >= 1 rows, K >= 1 classes
 *   labels       (N): the class of each row as a float holding an integer in [0, K)
 *   loss         (1): written with the mean over the rows of -log softmax(row)[label]
 *   grad_logits  same dims as logits, or NULL: written with (softmax - onehot(label)) / N,
 *                the gradient of the mean loss
 *   correct      (1), or NULL: written with the number of rows whose largest logit (the
 *                first, on ties) is the label's, as a float
 * Softmax is computed in double with the row maximum subtracted, so large logits do not
 * overflow. The outputs must be distinct tensors, none of them logits or labels. A label
 * that is not an integer in [0, K) makes the task fail (not the submit) with
 * CONVOY_ERR_INVALID_ARGUMENT naming the first such row and its value; its outputs are then
 * poisoned like any failed task's. On CUDA the check reads the result back, so this submit
 * waits until its stream has computed it. Submit errors: CONVOY_ERR_INVALID_ARGUMENT (NULL
 * logits, labels or loss, aliasing, the general cases), CONVOY_ERR_SHAPE. Asynchronous on
 * the CPU. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_softmax_cross_entropy(
    convoy_runtime *runtime, convoy_tensor *logits, convoy_tensor *labels, convoy_tensor *loss,
    convoy_tensor *grad_logits, convoy_tensor *correct, convoy_task **task);

/* Hyperparameters of convoy_sgd_step; start from convoy_sgd_params_init, or write all three
 * fields ({lr, momentum, weight_decay}). */
typedef struct convoy_sgd_params {
    float lr;           /* learning rate, finite, >= 0 */
    float momentum;     /* finite, >= 0; 0: plain SGD, no velocity */
    float weight_decay; /* L2 penalty added to the gradient, finite, >= 0 */
} convoy_sgd_params;

/* Sets lr 0.01, momentum 0, weight_decay 0. CONVOY_ERR_INVALID_ARGUMENT for NULL. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_sgd_params_init(convoy_sgd_params *params);

/* One step of torch.optim.SGD (dampening 0, no Nesterov) on param, in place:
 *   d = grad + weight_decay * param
 *   velocity = momentum * velocity + d; d = velocity     (only when momentum != 0)
 *   param = param - lr * d
 * param, grad and velocity have the same dims. velocity is required when momentum != 0 and
 * must start at zero (its first step then stores grad + weight_decay * param, as PyTorch's
 * momentum buffer does); with momentum 0 it may be NULL and is not touched. The tensors must
 * be distinct. Returns CONVOY_ERR_INVALID_ARGUMENT (NULL params, a negative or non-finite
 * hyperparameter, a missing velocity, aliasing, the general cases), CONVOY_ERR_SHAPE.
 * Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_sgd_step(convoy_runtime *runtime, const convoy_sgd_params *params, convoy_tensor *param,
                convoy_tensor *grad, convoy_tensor *velocity, convoy_task **task);

/* ---- custom tasks ------------------------------------------------------ */

typedef enum convoy_access_mode {
    CONVOY_READ = 1,
    CONVOY_WRITE = 2,
    CONVOY_READ_WRITE = 3
} convoy_access_mode;

typedef struct convoy_access {
    convoy_tensor *tensor;
    convoy_access_mode mode;
} convoy_access;

/* What a custom task function receives. */
typedef struct convoy_task_context {
    convoy_device device; /* where data[] points: host (CPU) or device (CUDA) */
    void *stream;         /* CUDA: the task's cudaStream_t (typed by convoy_cuda_task_stream
                             in convoy_cuda.h); CPU: NULL */
    size_t count;         /* number of accesses */
    const convoy_access *accesses;
    float *const *data; /* data[i] is the storage of accesses[i].tensor */
} convoy_task_context;

/* A custom task's body. On the CPU it runs in stream order on a runtime
 * thread (or inline at submit when streams == 0) and may use the host
 * pointers directly. On CUDA it is called at enqueue time, with the task's
 * stream and device pointers, and must only enqueue work on that stream.
 * Return CONVOY_OK, or an error status: the task then fails with it and every
 * task reading what it writes fails with CONVOY_ERR_DEPENDENCY_FAILED. It must
 * not call convoy functions of the same runtime. */
typedef convoy_status (*convoy_task_fn)(const convoy_task_context *context, void *user_data);

/* Submits fn as a task that reads and/or writes the given tensors; it is
 * ordered after the tasks that wrote what it reads and after the readers and
 * writers of what it writes. count may be 0 (accesses then may be NULL).
 * name (may be NULL: "custom") labels the task in profiles and is copied.
 * Returns CONVOY_ERR_INVALID_ARGUMENT (NULL fn or runtime, a NULL or foreign
 * tensor, a bad mode, a tensor listed twice), CONVOY_ERR_OUT_OF_MEMORY.
 * Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_submit(convoy_runtime *runtime,
                                                           convoy_task_fn fn, void *user_data,
                                                           const convoy_access *accesses,
                                                           size_t count, const char *name,
                                                           convoy_task **task);

/* ---- collectives across processes ------------------------------------- */

/* Data-parallel training runs one process (rank) per device; after each
 * backward pass the ranks sum their gradients. A communicator joins the
 * runtimes of a group of processes; convoy_comm_create, in convoy_mpi.h,
 * makes one from an MPI communicator the program owns (convoy never calls
 * MPI_Init or MPI_Finalize). All-reduce and broadcast are tasks like any
 * other: submitted at once, ordered by the tensor they read and write
 * (CONVOY_READ_WRITE), and run on a communication stream of their own, so a
 * layer's gradient is exchanged while the earlier layers' backward passes
 * still compute. On the CPU the communication stream is a thread that calls
 * MPI; on CUDA the collectives are NCCL's, on a CUDA stream of their own.
 *
 * Every rank must submit the same collectives in the same order, each with
 * a tensor of the same dims. Before moving data, the ranks exchange a small
 * header (what the collective is, its sequence number, the tensor's dims):
 * when they disagree, every rank's task fails with CONVOY_ERR_SHAPE (dims or
 * element counts differ) or CONVOY_ERR_INVALID_ARGUMENT (the kind, the
 * operation or the root differ), naming each rank and what it submitted,
 * and the communicator stays usable. When a rank does not take part within
 * the timeout (it failed, exited, or is stuck), or the data exchange does
 * not finish within it, every rank that did take part fails the task with
 * CONVOY_ERR_BACKEND naming the missing rank(s) within at most twice the
 * timeout, and the communicator is unusable from then on (every later
 * collective on it fails at once, naming the first failure); destroy it.
 * When a rank's own input failed (its task would fail with
 * CONVOY_ERR_DEPENDENCY_FAILED), it still tells the others, which fail with
 * CONVOY_ERR_BACKEND naming it. convoy never aborts the MPI job. */

typedef struct convoy_comm convoy_comm;

typedef enum convoy_reduce_op {
    CONVOY_REDUCE_SUM = 0,    /* every rank gets the elementwise sum */
    CONVOY_REDUCE_AVERAGE = 1 /* the sum divided by the number of ranks */
} convoy_reduce_op;

#define CONVOY_COMM_DEFAULT_TIMEOUT_MS 5000

/* Communicator settings. Start from convoy_comm_options_init(). */
typedef struct convoy_comm_options {
    int64_t timeout_ms; /* CONVOY_COMM_TIMEOUT_MS=1..86400000 (default 5000): how long a rank
                           waits for the others to reach a collective, and then for its data
                           to move, before failing it */
} convoy_comm_options;

/* Fills *options with the defaults (timeout CONVOY_COMM_DEFAULT_TIMEOUT_MS).
 * Reads no environment variable. CONVOY_ERR_INVALID_ARGUMENT for NULL. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_comm_options_init(convoy_comm_options *options);

/* Applies CONVOY_COMM_TIMEOUT_MS (digits, 1..86400000) on top of *options;
 * unset or empty leaves the field as it was. A malformed value is
 * CONVOY_ERR_INVALID_ARGUMENT naming it, and the field is left unchanged.
 * CONVOY_ERR_INVALID_ARGUMENT for NULL. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_comm_options_from_env(convoy_comm_options *options);

/* Waits for the collectives already submitted on comm, then releases it and
 * its MPI communicator (a duplicate convoy made of the program's; one left
 * unusable by a timeout is not freed, since a peer may never answer). Call
 * it before MPI_Finalize and before destroying the runtime; a communicator
 * whose runtime was destroyed first was released then, and this only frees
 * the handle. Blocking; NULL is a no-op. */
CONVOY_EXTERN void convoy_comm_destroy(convoy_comm *comm);

/* This process's rank in the communicator (0..size-1); -1 for NULL. */
CONVOY_EXTERN int convoy_comm_rank(const convoy_comm *comm);

/* The number of ranks; 0 for NULL. */
CONVOY_EXTERN int convoy_comm_size(const convoy_comm *comm);

/* Replaces tensor, on every rank, by the elementwise sum (or average) of the
 * tensor over all ranks. A task reading and writing tensor (ordered after
 * its producers, before its later readers), run on the communication
 * stream. With the runtime's deterministic option (CONVOY_DETERMINISTIC=1)
 * the CPU sums in rank order, ((r0 + r1) + r2) + ..., so results are
 * bit-identical across runs and equal a single process adding the ranks'
 * parts in that order; otherwise MPI's or NCCL's own order. Returns
 * CONVOY_ERR_INVALID_ARGUMENT (NULL runtime, comm or tensor, a comm or
 * tensor of another runtime or detached, an unknown op),
 * CONVOY_ERR_OUT_OF_MEMORY. The task fails as described above when the
 * ranks disagree or one does not take part. Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_allreduce(convoy_runtime *runtime,
                                                              convoy_comm *comm,
                                                              convoy_tensor *tensor,
                                                              convoy_reduce_op op,
                                                              convoy_task **task);

/* All-reduces count tensors (1..4096, each listed once) as one collective:
 * they are packed into one buffer, reduced, and unpacked, so many small
 * gradients cost one exchange instead of count. The result equals count
 * convoy_allreduce calls, up to the order of the floating-point sums. The
 * ranks must list tensors of the same dims in the same order. Errors as
 * convoy_allreduce, plus CONVOY_ERR_INVALID_ARGUMENT for count outside
 * 1..4096, a NULL tensors or a tensor listed twice. Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status
convoy_allreduce_many(convoy_runtime *runtime, convoy_comm *comm, convoy_tensor *const *tensors,
                      size_t count, convoy_reduce_op op, convoy_task **task);

/* Copies tensor from rank root into tensor on every other rank (initial
 * weights, for example). A task reading and writing tensor, on the
 * communication stream. Returns CONVOY_ERR_INVALID_ARGUMENT (NULL or foreign
 * arguments, root outside 0..size-1), CONVOY_ERR_OUT_OF_MEMORY.
 * Asynchronous. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_broadcast(convoy_runtime *runtime,
                                                              convoy_comm *comm,
                                                              convoy_tensor *tensor, int root,
                                                              convoy_task **task);

/* ---- memory ------------------------------------------------------------ */

typedef struct convoy_memory_statistics {
    size_t bytes_in_use;          /* handed out to tensors and live workspaces */
    size_t bytes_cached;          /* held by the pool, free for reuse */
    size_t peak_bytes_in_use;     /* highest bytes_in_use since create */
    size_t limit;                 /* memory_limit; 0 = none */
    uint64_t backend_allocations; /* calls to the device allocator that succeeded */
    uint64_t backend_frees;       /* blocks returned to the device allocator */
    uint64_t cache_hits;          /* requests served from the cache */
    uint64_t requests;            /* all allocation requests */
} convoy_memory_statistics;

/* Fills *stats with the runtime's pool figures at this moment (tasks still
 * running may change them). CONVOY_ERR_INVALID_ARGUMENT for NULL. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_memory_stats(convoy_runtime *runtime,
                                                                 convoy_memory_statistics *stats);

/* Returns every cached block that no pending task can still use to the
 * device allocator. Synchronous. CONVOY_ERR_INVALID_ARGUMENT for NULL. */
CONVOY_EXTERN CONVOY_NODISCARD convoy_status convoy_memory_trim(convoy_runtime *runtime);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_H */
