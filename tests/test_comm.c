/* Collectives across processes, run by CTest under mpirun with 2 and 3 ranks on this machine
 * (shared memory): all-reduce (sum, average; exact on integer-valued data, bit for bit in
 * rank order in deterministic mode), all-reduce of many tensors packed into one collective,
 * broadcast from every root, collectives between compute tasks, inline runtimes; ranks that
 * disagree on the shape or the operation (every rank fails, naming each rank and what it
 * submitted, and the communicator stays usable); a rank whose input failed (the others fail at
 * once, naming it); the last layer's all-reduce overlapping the earlier layers' backward in
 * the Chrome trace; argument errors and a runtime destroyed before its communicator.
 *
 * "serialized" on the command line runs instead the thread-level checks with MPI initialised
 * at MPI_THREAD_SERIALIZED; "cuda" runs the tests that are not about the CPU on CUDA
 * runtimes (NCCL), one GPU per rank of a node, and exits 77 (skipped) on every rank when a
 * rank has no usable GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convoy.h"
#include "convoy_mpi.h"

#define TIMEOUT_MS 20000

static int world_rank, world_size;
static convoy_device device = CONVOY_DEVICE_CPU;
static int device_index;

/* Tests of the CPU's own behaviour (inline runtimes, rank-order sums, custom tasks that touch
 * host memory, timing in the trace) skip on CUDA. */
#define CPU_ONLY()                                                                                 \
    do {                                                                                           \
        if (device != CONVOY_DEVICE_CPU)                                                           \
            skip();                                                                                \
    } while (0)

#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK)                                                                       \
            fail_msg("rank %d: %s: %s: %s", world_rank, #call, convoy_status_name(s_),             \
                     convoy_last_error_message());                                                 \
    } while (0)

static convoy_runtime *make_runtime(int streams, int deterministic, const char *trace_path)
{
    convoy_options o;
    CHECK_OK(convoy_options_init(&o));
    o.device = device;
    o.device_index = device_index;
    o.streams = streams;
    o.blas_threads = 1;
    o.deterministic = deterministic;
    o.trace_path = trace_path;
    convoy_runtime *rt = NULL;
    CHECK_OK(convoy_runtime_create(&o, &rt));
    return rt;
}

static convoy_comm *make_comm(convoy_runtime *rt, int64_t timeout_ms)
{
    convoy_comm_options o;
    CHECK_OK(convoy_comm_options_init(&o));
    o.timeout_ms = timeout_ms;
    convoy_comm *comm = NULL;
    CHECK_OK(convoy_comm_create(rt, MPI_COMM_WORLD, &o, &comm));
    assert_int_equal(convoy_comm_rank(comm), world_rank);
    assert_int_equal(convoy_comm_size(comm), world_size);
    return comm;
}

static convoy_tensor *make_tensor(convoy_runtime *rt, int ndim, const int64_t *dims)
{
    convoy_tensor *t = NULL;
    CHECK_OK(convoy_tensor_create(rt, ndim, dims, &t));
    return t;
}

static int64_t numel(int ndim, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i)
        n *= dims[i];
    return n;
}

/* A small LCG, so every rank can regenerate every other rank's data. */
static uint32_t next_random(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

/* Multiples of 1/8 in [-1000, 1000]: sums over a few ranks are exact in float, in any order. */
static void fill_exact(float *data, int64_t n, uint32_t seed)
{
    uint32_t state = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; ++i)
        data[i] = (float)((int)(next_random(&state) % 16001u) - 8000) * 0.125f;
}

/* Arbitrary floats in [-1, 1]: sums depend on their order. */
static void fill_general(float *data, int64_t n, uint32_t seed)
{
    uint32_t state = seed * 2246822519u + 777u;
    for (int64_t i = 0; i < n; ++i)
        data[i] = (float)(next_random(&state) % 2000001u) / 1000000.0f - 1.0f;
}

static void upload(convoy_runtime *rt, convoy_tensor *t, const float *data, int64_t n)
{
    CHECK_OK(convoy_upload(rt, t, data, (size_t)n, NULL));
}

static void download_wait(convoy_runtime *rt, convoy_tensor *t, float *data, int64_t n)
{
    convoy_task *task = NULL;
    CHECK_OK(convoy_download(rt, t, data, (size_t)n, &task));
    CHECK_OK(convoy_task_wait(task));
    convoy_task_release(task);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* ---- results ------------------------------------------------------------------------------ */

static void check_allreduce_exact(convoy_reduce_op op, int streams)
{
    convoy_runtime *rt = make_runtime(streams, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t dims[3] = {3, 5, 7}, big[1] = {100003};
    const int64_t *shapes[2] = {dims, big};
    const int ranks[2] = {3, 1};
    for (int s = 0; s < 2; ++s) {
        int64_t n = numel(ranks[s], shapes[s]);
        float *mine = malloc((size_t)n * sizeof *mine), *got = malloc((size_t)n * sizeof *got);
        float *part = malloc((size_t)n * sizeof *part), *want = calloc((size_t)n, sizeof *want);
        for (int r = 0; r < world_size; ++r) {
            fill_exact(part, n, (uint32_t)(100 * s + r));
            for (int64_t i = 0; i < n; ++i)
                want[i] += part[i];
        }
        if (op == CONVOY_REDUCE_AVERAGE) {
            for (int64_t i = 0; i < n; ++i)
                want[i] /= (float)world_size;
        }
        fill_exact(mine, n, (uint32_t)(100 * s + world_rank));
        convoy_tensor *t = make_tensor(rt, ranks[s], shapes[s]);
        upload(rt, t, mine, n);
        CHECK_OK(convoy_allreduce(rt, comm, t, op, NULL));
        download_wait(rt, t, got, n);
        /* NCCL averages by scaling each part first: close to, not exactly, sum / ranks. */
        const float tolerance =
            device == CONVOY_DEVICE_CUDA && op == CONVOY_REDUCE_AVERAGE ? 1e-6f : 0.0f;
        for (int64_t i = 0; i < n; ++i) {
            if (fabsf(got[i] - want[i]) > tolerance * (1.0f + fabsf(want[i])))
                fail_msg("rank %d: element %lld is %.9g, expected %.9g", world_rank, (long long)i,
                         got[i], want[i]);
        }
        convoy_tensor_destroy(t);
        free(mine);
        free(got);
        free(part);
        free(want);
    }
    CHECK_OK(convoy_runtime_synchronize(rt));
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

static void allreduce_sum(void **state)
{
    (void)state;
    check_allreduce_exact(CONVOY_REDUCE_SUM, 2);
}

static void allreduce_average(void **state)
{
    (void)state;
    check_allreduce_exact(CONVOY_REDUCE_AVERAGE, 2);
}

/* streams = 0: the collective runs at submit, on this thread. */
static void allreduce_inline(void **state)
{
    (void)state;
    CPU_ONLY();
    check_allreduce_exact(CONVOY_REDUCE_SUM, 0);
}

/* In deterministic mode every element is ((r0 + r1) + r2) ... exactly, on every rank, even for
 * data whose sum depends on the order; a count the ranks do not divide included. */
static void allreduce_deterministic(void **state)
{
    (void)state;
    CPU_ONLY();
    convoy_runtime *rt = make_runtime(2, 1, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t counts[3] = {1, 1001, 65537};
    for (int s = 0; s < 3; ++s) {
        int64_t n = counts[s];
        float *got = malloc((size_t)n * sizeof *got), *want = malloc((size_t)n * sizeof *want);
        float *part = malloc((size_t)n * sizeof *part);
        for (int r = 0; r < world_size; ++r) {
            fill_general(r == 0 ? want : part, n, (uint32_t)(1000 * s + r));
            for (int64_t i = 0; i < n && r > 0; ++i)
                want[i] += part[i];
        }
        fill_general(part, n, (uint32_t)(1000 * s + world_rank));
        convoy_tensor *t = make_tensor(rt, 1, &n);
        for (int round = 0; round < 2; ++round) {
            upload(rt, t, part, n);
            CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, NULL));
            download_wait(rt, t, got, n);
            assert_memory_equal(got, want, (size_t)n * sizeof *got);
        }
        convoy_tensor_destroy(t);
        free(got);
        free(want);
        free(part);
    }
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

/* Several tensors, one collective: each comes back as if reduced on its own. */
static void allreduce_many(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t d0[4] = {4, 3, 3, 3}, d1[1] = {4}, d2[2] = {0, 5}, d3[2] = {17, 33};
    const int64_t *shapes[4] = {d0, d1, d2, d3};
    const int ndims[4] = {4, 1, 2, 2};
    convoy_tensor *tensors[4];
    float *data[4], *want[4];
    for (int k = 0; k < 4; ++k) {
        int64_t n = numel(ndims[k], shapes[k]);
        tensors[k] = make_tensor(rt, ndims[k], shapes[k]);
        data[k] = malloc((size_t)(n ? n : 1) * sizeof(float));
        want[k] = calloc((size_t)(n ? n : 1), sizeof(float));
        for (int r = 0; r < world_size; ++r) {
            fill_exact(data[k], n, (uint32_t)(50 * k + r));
            for (int64_t i = 0; i < n; ++i)
                want[k][i] += data[k][i];
        }
        fill_exact(data[k], n, (uint32_t)(50 * k + world_rank));
        upload(rt, tensors[k], data[k], n);
    }
    convoy_task *task = NULL;
    CHECK_OK(convoy_allreduce_many(rt, comm, tensors, 4, CONVOY_REDUCE_SUM, &task));
    CHECK_OK(convoy_task_wait(task));
    convoy_task_release(task);
    for (int k = 0; k < 4; ++k) {
        int64_t n = numel(ndims[k], shapes[k]);
        download_wait(rt, tensors[k], data[k], n);
        assert_memory_equal(data[k], want[k], (size_t)n * sizeof(float));
        convoy_tensor_destroy(tensors[k]);
        free(data[k]);
        free(want[k]);
    }
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

static void broadcast_every_root(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t dims[2] = {31, 17};
    const int64_t n = numel(2, dims);
    float *mine = malloc((size_t)n * sizeof *mine), *got = malloc((size_t)n * sizeof *got);
    float *want = malloc((size_t)n * sizeof *want);
    convoy_tensor *t = make_tensor(rt, 2, dims);
    for (int root = 0; root < world_size; ++root) {
        fill_general(mine, n, (uint32_t)(7 * root + 3 + 1000 * world_rank));
        fill_general(want, n, (uint32_t)(7 * root + 3 + 1000 * root));
        upload(rt, t, mine, n);
        CHECK_OK(convoy_broadcast(rt, comm, t, root, NULL));
        download_wait(rt, t, got, n);
        assert_memory_equal(got, want, (size_t)n * sizeof *got);
    }
    convoy_tensor_destroy(t);
    free(mine);
    free(got);
    free(want);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

/* ---- collectives between compute tasks ---------------------------------------------------- */

static convoy_status scale_by_rank_plus_one(const convoy_task_context *c, void *user_data)
{
    int64_t n = (int64_t)(intptr_t)user_data;
    for (int64_t i = 0; i < n; ++i)
        c->data[0][i] *= (float)(world_rank + 1);
    return CONVOY_OK;
}

static convoy_status add_one(const convoy_task_context *c, void *user_data)
{
    int64_t n = (int64_t)(intptr_t)user_data;
    for (int64_t i = 0; i < n; ++i)
        c->data[0][i] += 1.0f;
    return CONVOY_OK;
}

/* upload, compute, all-reduce, compute, download: each step sees the one before it. */
static void chained_with_compute(void **state)
{
    (void)state;
    CPU_ONLY();
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t n = 1000;
    float *host = malloc((size_t)n * sizeof *host);
    for (int64_t i = 0; i < n; ++i)
        host[i] = (float)i;
    convoy_tensor *t = make_tensor(rt, 1, &n);
    upload(rt, t, host, n);
    convoy_access access = {t, CONVOY_READ_WRITE};
    CHECK_OK(
        convoy_submit(rt, scale_by_rank_plus_one, (void *)(intptr_t)n, &access, 1, "scale", NULL));
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, NULL));
    CHECK_OK(convoy_submit(rt, add_one, (void *)(intptr_t)n, &access, 1, "add one", NULL));
    download_wait(rt, t, host, n);
    const float factor = (float)(world_size * (world_size + 1) / 2);
    for (int64_t i = 0; i < n; ++i)
        assert_true(host[i] == (float)i * factor + 1.0f);
    convoy_tensor_destroy(t);
    free(host);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

/* ---- disagreement ------------------------------------------------------------------------- */

static void expect_failure(convoy_task *task, convoy_status status, const char *const *needles)
{
    convoy_status got = convoy_task_wait(task);
    const char *message = convoy_last_error_message();
    print_message("rank %d: %s: %s\n", world_rank, convoy_status_name(got), message);
    if (got != status)
        fail_msg("rank %d: status %s, expected %s: %s", world_rank, convoy_status_name(got),
                 convoy_status_name(status), message);
    for (int i = 0; needles[i]; ++i) {
        if (!strstr(message, needles[i]))
            fail_msg("rank %d: message lacks '%s': %s", world_rank, needles[i], message);
    }
    convoy_task_release(task);
}

/* An all-reduce still works on the communicator (after a failure that must not break it). */
static void expect_usable(convoy_runtime *rt, convoy_comm *comm)
{
    const int64_t n = 3;
    float one[3] = {1, 1, 1}, got[3];
    convoy_tensor *t = make_tensor(rt, 1, &n);
    upload(rt, t, one, n);
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, NULL));
    download_wait(rt, t, got, n);
    for (int i = 0; i < 3; ++i)
        assert_true(got[i] == (float)world_size);
    convoy_tensor_destroy(t);
}

/* The last rank's tensor has one more column: every rank fails with CONVOY_ERR_SHAPE naming
 * each rank and its dims, and the communicator stays usable. */
static void shape_mismatch(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int last = world_size - 1;
    const int64_t dims[2] = {2, world_rank == last ? 4 : 3};
    float data[8] = {0};
    convoy_tensor *t = make_tensor(rt, 2, dims);
    upload(rt, t, data, numel(2, dims));
    convoy_task *task = NULL;
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, &task));
    char last_text[64], others[64], rank_text[32];
    snprintf(last_text, sizeof last_text, "rank %d: allreduce (sum) of 2x4 (8 elements)", last);
    snprintf(others, sizeof others, "%s: allreduce (sum) of 2x3 (6 elements)",
             world_size == 2   ? "rank 0"
             : world_size == 3 ? "ranks 0-1"
                               : "ranks 0-");
    snprintf(rank_text, sizeof rank_text, "rank %d of %d", world_rank, world_size);
    const char *needles[] = {"disagree", last_text, others, rank_text, NULL};
    expect_failure(task, CONVOY_ERR_SHAPE, needles);
    /* The tensor's failed writer poisons it; a new upload replaces it. */
    convoy_tensor_destroy(t);
    expect_usable(rt, comm);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

/* Rank 1 averages where the others sum: CONVOY_ERR_INVALID_ARGUMENT. */
static void op_mismatch(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t n = 5;
    float data[5] = {0};
    convoy_tensor *t = make_tensor(rt, 1, &n);
    upload(rt, t, data, n);
    convoy_task *task = NULL;
    CHECK_OK(convoy_allreduce(rt, comm, t,
                              world_rank == 1 ? CONVOY_REDUCE_AVERAGE : CONVOY_REDUCE_SUM, &task));
    const char *needles[] = {"rank 1: allreduce (average) of 5", "allreduce (sum) of 5", NULL};
    expect_failure(task, CONVOY_ERR_INVALID_ARGUMENT, needles);
    convoy_tensor_destroy(t);
    expect_usable(rt, comm);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

static convoy_status fail_on_purpose(const convoy_task_context *c, void *user_data)
{
    (void)c;
    (void)user_data;
    return CONVOY_ERR_TASK_FAILED;
}

/* On the last rank the gradient's producer fails: that rank's all-reduce fails with
 * CONVOY_ERR_DEPENDENCY_FAILED and still tells the others, which fail at once (long before
 * the timeout) naming it; the communicator stays usable. */
static void failed_input(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int last = world_size - 1;
    const int64_t n = 64;
    float data[64] = {0};
    convoy_tensor *t = make_tensor(rt, 1, &n);
    upload(rt, t, data, n);
    if (world_rank == last) {
        convoy_access access = {t, CONVOY_WRITE};
        CHECK_OK(convoy_submit(rt, fail_on_purpose, NULL, &access, 1, "gradient", NULL));
    }
    double start = now_ms();
    convoy_task *task = NULL;
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, &task));
    char could_not[64];
    snprintf(could_not, sizeof could_not, "rank %d could not take part", last);
    if (world_rank == last) {
        const char *needles[] = {"custom gradient", NULL};
        expect_failure(task, CONVOY_ERR_DEPENDENCY_FAILED, needles);
    } else {
        const char *needles[] = {could_not, "custom gradient", NULL};
        expect_failure(task, CONVOY_ERR_BACKEND, needles);
    }
    assert_true(now_ms() - start < TIMEOUT_MS / 2);
    convoy_tensor_destroy(t);
    expect_usable(rt, comm);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

/* ---- overlap in the trace ------------------------------------------------------------------ */

typedef struct trace_event {
    double ts, dur;
    int tid;
} trace_event;

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    return text;
}

/* The first complete event whose name starts with prefix and contains part. */
static int find_event(const char *json, const char *prefix, const char *part, trace_event *out)
{
    char key[256];
    snprintf(key, sizeof key, "\"name\":\"%s", prefix);
    for (const char *p = strstr(json, key); p; p = strstr(p + 1, key)) {
        const char *end = strchr(p + strlen(key), '"');
        const char *close = strchr(p, '}');
        if (!end || !close)
            return 0;
        size_t name_len = (size_t)(end - p);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(name_len < 255 ? name_len : 255), p);
        const char *ph = strstr(p, "\"ph\":\"X\"");
        if (!strstr(name, part) || !ph || ph > close)
            continue;
        out->tid = atoi(strstr(p, "\"tid\":") + 6);
        out->ts = atof(strstr(p, "\"ts\":") + 5);
        out->dur = atof(strstr(p, "\"dur\":") + 6);
        return 1;
    }
    return 0;
}

/* The "tid" of the track named name. */
static int track_of(const char *json, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\"args\":{\"name\":\"%s\"}", name);
    const char *p = strstr(json, key);
    if (!p)
        return -1;
    while (p > json && strncmp(p, "\"tid\":", 6) != 0)
        --p;
    return atoi(p + 6);
}

/* The backward pass of three convolution layers, last layer first, with each filter gradient
 * all-reduced as soon as it is computed: the last layer's all-reduce runs on the
 * communication stream while the first layer's backward still computes. One compute stream,
 * so the backward runs in submission order and the overlap is the communication stream's. */
static void overlap_in_trace(void **state)
{
    (void)state;
    CPU_ONLY(); /* CUDA traces show enqueue times; Nsight Systems shows the streams */
    char dir[] = "/tmp/convoy_comm_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/trace.json", dir);
    convoy_runtime *rt = make_runtime(1, 0, path);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    convoy_conv_params p;
    CHECK_OK(convoy_conv_params_init(&p, 2));
    p.border = CONVOY_BORDER_HALF;
    const int64_t x0d[4] = {16, 8, 64, 64}, x1d[4] = {16, 32, 64, 64}, yd[4] = {16, 4, 64, 64};
    const int64_t w1d[4] = {32, 8, 3, 3}, w2d[4] = {32, 32, 3, 3}, w3d[4] = {4, 32, 3, 3};
    convoy_tensor *x0 = make_tensor(rt, 4, x0d), *x1 = make_tensor(rt, 4, x1d);
    convoy_tensor *x2 = make_tensor(rt, 4, x1d), *dy = make_tensor(rt, 4, yd);
    convoy_tensor *dx2 = make_tensor(rt, 4, x1d), *dx1 = make_tensor(rt, 4, x1d);
    convoy_tensor *w2 = make_tensor(rt, 4, w2d), *w3 = make_tensor(rt, 4, w3d);
    convoy_tensor *g1 = make_tensor(rt, 4, w1d), *g2 = make_tensor(rt, 4, w2d);
    convoy_tensor *g3 = make_tensor(rt, 4, w3d);
    convoy_tensor *inputs[7] = {x0, x1, x2, dy, w2, w3, NULL};
    for (int i = 0; inputs[i]; ++i) {
        int64_t n = 1;
        for (int d = 0; d < 4; ++d)
            n *= convoy_tensor_dim(inputs[i], d);
        float *host = malloc((size_t)n * sizeof *host);
        fill_general(host, n, (uint32_t)(i + 10 * world_rank));
        upload(rt, inputs[i], host, n);
        CHECK_OK(convoy_runtime_synchronize(rt));
        free(host);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_OK(convoy_conv_backward_filter(rt, &p, x2, dy, g3, NULL));
    CHECK_OK(convoy_allreduce(rt, comm, g3, CONVOY_REDUCE_SUM, NULL));
    CHECK_OK(convoy_conv_backward_data(rt, &p, w3, dy, dx2, NULL));
    CHECK_OK(convoy_conv_backward_filter(rt, &p, x1, dx2, g2, NULL));
    CHECK_OK(convoy_allreduce(rt, comm, g2, CONVOY_REDUCE_SUM, NULL));
    CHECK_OK(convoy_conv_backward_data(rt, &p, w2, dx2, dx1, NULL));
    CHECK_OK(convoy_conv_backward_filter(rt, &p, x0, dx1, g1, NULL));
    CHECK_OK(convoy_allreduce(rt, comm, g1, CONVOY_REDUCE_SUM, NULL));
    CHECK_OK(convoy_runtime_synchronize(rt));
    convoy_tensor *all[11] = {x0, x1, x2, dy, dx2, dx1, w2, w3, g1, g2, g3};
    for (int i = 0; i < 11; ++i)
        convoy_tensor_destroy(all[i]);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt); /* writes the trace */

    char *json = read_file(path);
    trace_event last_allreduce, first_backward;
    assert_true(find_event(json, "allreduce 4x32x3x3", "sum", &last_allreduce));
    assert_true(find_event(json, "conv_bwd_filter 16x8x64x64", "32x8x3x3", &first_backward));
    assert_int_equal(last_allreduce.tid, track_of(json, "convoy comm"));
    print_message("rank %d: all-reduce of the last layer %.0f..%.0f us, first layer's "
                  "backward_filter %.0f..%.0f us\n",
                  world_rank, last_allreduce.ts, last_allreduce.ts + last_allreduce.dur,
                  first_backward.ts, first_backward.ts + first_backward.dur);
    /* It began while the earlier layers' backward still had the first layer's filter gradient
     * to compute, and so before that ended: the exchange overlaps compute. When it also ended
     * first depends on the other rank's progress, so that is only reported. */
    assert_true(last_allreduce.ts < first_backward.ts);
    assert_true(last_allreduce.ts < first_backward.ts + first_backward.dur);
    free(json);
    unlink(path);
    rmdir(dir);
}

/* ---- arguments ----------------------------------------------------------------------------- */

static void argument_errors(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL), *other = make_runtime(0, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t n = 4;
    convoy_tensor *t = make_tensor(rt, 1, &n), *foreign = make_tensor(other, 1, &n);
    convoy_tensor *pair[2] = {t, t};
    assert_int_equal(convoy_allreduce(NULL, comm, t, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_allreduce(rt, NULL, t, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_allreduce(rt, comm, NULL, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_allreduce(rt, comm, foreign, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_allreduce(other, comm, foreign, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "another runtime"));
    assert_int_equal(convoy_allreduce(rt, comm, t, (convoy_reduce_op)7, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "op is 7"));
    assert_int_equal(convoy_allreduce_many(rt, comm, pair, 2, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "listed twice"));
    assert_int_equal(convoy_allreduce_many(rt, comm, pair, 0, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_allreduce_many(rt, comm, NULL, 1, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_broadcast(rt, comm, t, -1, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_broadcast(rt, comm, t, world_size, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "root is"));

    convoy_comm *none = NULL;
    MPI_Comm world = MPI_COMM_WORLD;
    assert_int_equal(convoy_comm_create(NULL, MPI_COMM_WORLD, NULL, &none),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_comm_create(rt, MPI_COMM_WORLD, NULL, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_comm_create_mpi(rt, &world, sizeof world + 1, NULL, &none),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "MPI_Comm has"));
    assert_int_equal(convoy_comm_create(rt, MPI_COMM_NULL, NULL, &none),
                     CONVOY_ERR_INVALID_ARGUMENT);
    convoy_comm_options o;
    CHECK_OK(convoy_comm_options_init(&o));
    assert_int_equal(o.timeout_ms, CONVOY_COMM_DEFAULT_TIMEOUT_MS);
    o.timeout_ms = 0;
    assert_int_equal(convoy_comm_create(rt, MPI_COMM_WORLD, &o, &none),
                     CONVOY_ERR_INVALID_ARGUMENT);
    setenv("CONVOY_COMM_TIMEOUT_MS", "12x", 1);
    assert_int_equal(convoy_comm_options_from_env(&o), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "CONVOY_COMM_TIMEOUT_MS is '12x'"));
    setenv("CONVOY_COMM_TIMEOUT_MS", "1234", 1);
    CHECK_OK(convoy_comm_options_from_env(&o));
    assert_int_equal(o.timeout_ms, 1234);
    unsetenv("CONVOY_COMM_TIMEOUT_MS");
    assert_null(none);
    assert_int_equal(convoy_comm_rank(NULL), -1);
    assert_int_equal(convoy_comm_size(NULL), 0);
    convoy_comm_destroy(NULL);
    assert_non_null(strstr(convoy_runtime_describe(rt), "comm: MPI: "));

    convoy_tensor_destroy(t);
    convoy_tensor_destroy(foreign);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(other);
    convoy_runtime_destroy(rt);
}

/* A runtime destroyed before its communicator releases it; the handle is then detached. */
static void runtime_destroyed_first(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = make_comm(rt, TIMEOUT_MS);
    const int64_t n = 8;
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    convoy_tensor *t = make_tensor(rt, 1, &n);
    upload(rt, t, data, n);
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, NULL));
    convoy_runtime_destroy(rt); /* waits for the all-reduce first */
    convoy_runtime *again = make_runtime(0, 0, NULL);
    convoy_tensor *u = make_tensor(again, 1, &n);
    assert_int_equal(convoy_allreduce(again, comm, u, CONVOY_REDUCE_SUM, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "detached"));
    convoy_comm_destroy(comm);
    convoy_tensor_destroy(t);
    convoy_tensor_destroy(u);
    convoy_runtime_destroy(again);
}

/* ---- thread level --------------------------------------------------------------------------- */

/* With MPI_THREAD_SERIALIZED, a CPU runtime with streams cannot call MPI from its own thread:
 * comm_create says so; an inline runtime works. */
static void serialized_thread_level(void **state)
{
    (void)state;
    convoy_runtime *rt = make_runtime(2, 0, NULL);
    convoy_comm *comm = NULL;
    assert_int_equal(convoy_comm_create(rt, MPI_COMM_WORLD, NULL, &comm), CONVOY_ERR_UNSUPPORTED);
    assert_non_null(strstr(convoy_last_error_message(), "MPI_THREAD_SERIALIZED"));
    assert_non_null(strstr(convoy_last_error_message(), "MPI_THREAD_MULTIPLE"));
    assert_null(comm);
    convoy_runtime_destroy(rt);
    rt = make_runtime(0, 0, NULL);
    comm = make_comm(rt, TIMEOUT_MS);
    expect_usable(rt, comm);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
}

/* CUDA: one GPU per rank of a node. Every rank skips when one has no usable GPU. */
static int cuda_usable(void)
{
    MPI_Comm node;
    int local_rank = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    device = CONVOY_DEVICE_CUDA;
    device_index = local_rank;
    convoy_options o;
    convoy_runtime *rt = NULL;
    int usable = convoy_options_init(&o) == CONVOY_OK;
    o.device = device;
    o.device_index = device_index;
    if (usable && convoy_runtime_create(&o, &rt) != CONVOY_OK) {
        printf("rank %d: no usable GPU %d: %s\n", world_rank, device_index,
               convoy_last_error_message());
        usable = 0;
    }
    convoy_runtime_destroy(rt);
    int all = 0;
    MPI_Allreduce(&usable, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all;
}

int main(int argc, char **argv)
{
    const int serialized = argc > 1 && strcmp(argv[1], "serialized") == 0;
    const int cuda = argc > 1 && strcmp(argv[1], "cuda") == 0;
    int provided = 0;
    MPI_Init_thread(&argc, &argv, serialized ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE,
                    &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (cuda && !cuda_usable()) {
        MPI_Finalize();
        return 77;
    }
    int failed;
    if (serialized) {
        const struct CMUnitTest tests[] = {cmocka_unit_test(serialized_thread_level)};
        failed = cmocka_run_group_tests(tests, NULL, NULL);
    } else {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(allreduce_sum),
            cmocka_unit_test(allreduce_average),
            cmocka_unit_test(allreduce_inline),
            cmocka_unit_test(allreduce_deterministic),
            cmocka_unit_test(allreduce_many),
            cmocka_unit_test(broadcast_every_root),
            cmocka_unit_test(chained_with_compute),
            cmocka_unit_test(shape_mismatch),
            cmocka_unit_test(op_mismatch),
            cmocka_unit_test(failed_input),
            cmocka_unit_test(overlap_in_trace),
            cmocka_unit_test(argument_errors),
            cmocka_unit_test(runtime_destroyed_first),
        };
        failed = cmocka_run_group_tests(tests, NULL, NULL);
    }
    MPI_Finalize();
    return failed ? 1 : 0;
}
