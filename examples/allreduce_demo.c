/* Data-parallel training of a tiny convolutional network with convoy's collectives.
 *
 * Every rank holds the whole model and takes its shard of every global batch. A step runs
 * forward (conv, ReLU, conv), a mean-squared-error loss, and backward (filter and data
 * gradients of the second layer, the ReLU's gradient, the first layer's filter gradient); each
 * filter gradient is all-reduced as soon as it is computed, on the communication stream,
 * while the earlier layer's backward still computes; then SGD updates the weights, the same
 * on every rank. Rank 0 makes the initial weights and broadcasts them. The loss, the
 * activations and the optimizer are custom tasks (host code: the demo runs on the CPU).
 *
 *   mpirun -np 2 build/examples/allreduce_demo --steps 20
 *
 * --shards S (one process) computes every global batch as S shards one after another and
 * adds their gradients in shard order, which is what S ranks do with the rank-order
 * reduction of deterministic mode (on by default): the losses are bit-identical to those of
 * mpirun -np S. --shards 1 is plain single-process training on the whole batch, equal to
 * float tolerance. Options: --steps N (20), --batch B (global batch, 12), --lr X (0.05),
 * --streams N (2), --deterministic 0|1 (1), --out FILE (the losses, one "step hexfloat" a
 * line), --compare FILE [--tolerance X] (check the losses against such a file: bit for bit,
 * or within X relative; exit 1 otherwise), --quiet. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convoy.h"
#include "convoy_mpi.h"

#define IMAGE 12 /* input H = W */
#define C1 8     /* first layer's filters, 3x3, half border: 12x12 out */
#define C2 4     /* second layer's filters, 3x3, valid: 10x10 out */
#define OUT 10

static int rank, size;

#define CHECK(call)                                                                                \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK) {                                                                     \
            fprintf(stderr, "rank %d: %s failed: %s: %s\n", rank, #call, convoy_status_name(s_),   \
                    convoy_last_error_message());                                                  \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

/* ---- data ------------------------------------------------------------------------------ */

static float hash_unit(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (float)(x >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

/* Sample g of the data set: a random image and a smooth target that depends on it. */
static void make_sample(int64_t g, float *x, float *t)
{
    float mean = 0.0f;
    for (int i = 0; i < IMAGE * IMAGE; ++i) {
        x[i] = hash_unit((uint64_t)g * 1000003u + (uint64_t)i);
        mean += x[i];
    }
    mean /= IMAGE * IMAGE;
    for (int c = 0; c < C2; ++c)
        for (int h = 0; h < OUT; ++h)
            for (int w = 0; w < OUT; ++w)
                t[(c * OUT + h) * OUT + w] =
                    0.5f * sinf(0.4f * (float)(h + c) + 0.3f * (float)w) + mean * (float)(c + 1);
}

/* ---- custom tasks ----------------------------------------------------------------------- */

typedef struct sizes {
    int64_t n;   /* elements of the tensors the task walks */
    float scale; /* mse: 2 / (global batch x outputs per sample); sgd: learning rate */
    int64_t n2;  /* sgd: elements of the second tensor pair */
    int first;   /* accumulate: the first shard copies */
} sizes;

static convoy_status relu(const convoy_task_context *c, void *user_data)
{
    const sizes *z = user_data;
    const float *in = c->data[0];
    float *out = c->data[1];
    for (int64_t i = 0; i < z->n; ++i)
        out[i] = in[i] > 0.0f ? in[i] : 0.0f;
    return CONVOY_OK;
}

/* dh = da where the pre-activation was positive. */
static convoy_status relu_backward(const convoy_task_context *c, void *user_data)
{
    const sizes *z = user_data;
    const float *da = c->data[0], *h = c->data[1];
    float *dh = c->data[2];
    for (int64_t i = 0; i < z->n; ++i)
        dh[i] = h[i] > 0.0f ? da[i] : 0.0f;
    return CONVOY_OK;
}

/* loss = sum (y - t)^2 / count over the global batch; dy = 2 (y - t) / count. The shard's part
 * of the loss: the ranks' parts sum to the global loss. */
static convoy_status mse(const convoy_task_context *c, void *user_data)
{
    const sizes *z = user_data;
    const float *y = c->data[0], *t = c->data[1];
    float *dy = c->data[2], *loss = c->data[3];
    float sum = 0.0f;
    for (int64_t i = 0; i < z->n; ++i) {
        float d = y[i] - t[i];
        sum += d * d;
        dy[i] = z->scale * d;
    }
    loss[0] = sum * z->scale * 0.5f;
    return CONVOY_OK;
}

/* acc = g for the first shard, acc + g after: the order of the rank-order reduction. */
static convoy_status accumulate(const convoy_task_context *c, void *user_data)
{
    const sizes *z = user_data;
    const float *g = c->data[0];
    float *acc = c->data[1];
    for (int64_t i = 0; i < z->n; ++i)
        acc[i] = z->first ? g[i] : acc[i] + g[i];
    return CONVOY_OK;
}

static convoy_status sgd(const convoy_task_context *c, void *user_data)
{
    const sizes *z = user_data;
    float *w1 = c->data[0], *w2 = c->data[2];
    const float *g1 = c->data[1], *g2 = c->data[3];
    for (int64_t i = 0; i < z->n; ++i)
        w1[i] -= z->scale * g1[i];
    for (int64_t i = 0; i < z->n2; ++i)
        w2[i] -= z->scale * g2[i];
    return CONVOY_OK;
}

/* ---- the model -------------------------------------------------------------------------- */

typedef struct model {
    convoy_runtime *rt;
    convoy_conv_params half, valid;
    int64_t batch; /* per shard */
    convoy_tensor *x, *t, *h1, *a1, *y, *dy, *da1, *dh1, *loss;
    convoy_tensor *w1, *w2, *g1, *g2;
    /* one process with shards: the accumulated gradients and loss */
    convoy_tensor *g1_sum, *g2_sum, *loss_sum;
    sizes relu_sizes, mse_sizes, w1_sizes, w2_sizes, loss_sizes, sgd_sizes;
} model;

static convoy_tensor *tensor(convoy_runtime *rt, int64_t a, int64_t b, int64_t c, int64_t d)
{
    const int64_t dims[4] = {a, b, c, d};
    convoy_tensor *t = NULL;
    CHECK(convoy_tensor_create(rt, 4, dims, &t));
    return t;
}

static void model_create(model *m, convoy_runtime *rt, int64_t batch, int64_t global_batch,
                         float lr)
{
    memset(m, 0, sizeof *m);
    m->rt = rt;
    m->batch = batch;
    CHECK(convoy_conv_params_init(&m->half, 2));
    m->half.border = CONVOY_BORDER_HALF;
    CHECK(convoy_conv_params_init(&m->valid, 2));
    m->x = tensor(rt, batch, 1, IMAGE, IMAGE);
    m->h1 = tensor(rt, batch, C1, IMAGE, IMAGE);
    m->a1 = tensor(rt, batch, C1, IMAGE, IMAGE);
    m->da1 = tensor(rt, batch, C1, IMAGE, IMAGE);
    m->dh1 = tensor(rt, batch, C1, IMAGE, IMAGE);
    m->y = tensor(rt, batch, C2, OUT, OUT);
    m->t = tensor(rt, batch, C2, OUT, OUT);
    m->dy = tensor(rt, batch, C2, OUT, OUT);
    m->w1 = tensor(rt, C1, 1, 3, 3);
    m->g1 = tensor(rt, C1, 1, 3, 3);
    m->g1_sum = tensor(rt, C1, 1, 3, 3);
    m->w2 = tensor(rt, C2, C1, 3, 3);
    m->g2 = tensor(rt, C2, C1, 3, 3);
    m->g2_sum = tensor(rt, C2, C1, 3, 3);
    m->loss = tensor(rt, 1, 1, 1, 1);
    m->loss_sum = tensor(rt, 1, 1, 1, 1);
    m->relu_sizes.n = batch * C1 * IMAGE * IMAGE;
    m->mse_sizes.n = batch * C2 * OUT * OUT;
    m->mse_sizes.scale = 2.0f / (float)(global_batch * C2 * OUT * OUT);
    m->w1_sizes.n = C1 * 9;
    m->w2_sizes.n = C2 * C1 * 9;
    m->loss_sizes.n = 1;
    m->sgd_sizes = (sizes){C1 * 9, lr, C2 * C1 * 9, 0};
}

static void model_destroy(model *m)
{
    convoy_tensor *all[] = {m->x,    m->t,  m->h1, m->a1, m->y,  m->dy,     m->da1,    m->dh1,
                            m->loss, m->w1, m->w2, m->g1, m->g2, m->g1_sum, m->g2_sum, m->loss_sum};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        convoy_tensor_destroy(all[i]);
}

static void submit(convoy_runtime *rt, convoy_task_fn fn, void *user_data, const char *name,
                   convoy_access *accesses, size_t count)
{
    CHECK(convoy_submit(rt, fn, user_data, accesses, count, name, NULL));
}

/* Forward and backward of one shard: the filter gradients g1, g2 and the loss part. With a
 * communicator, each gradient is all-reduced right after it is computed. */
static void forward_backward(model *m, convoy_comm *comm, const float *x, const float *t)
{
    convoy_runtime *rt = m->rt;
    CHECK(convoy_upload(rt, m->x, x, (size_t)(m->batch * IMAGE * IMAGE), NULL));
    CHECK(convoy_upload(rt, m->t, t, (size_t)(m->batch * C2 * OUT * OUT), NULL));
    CHECK(convoy_conv_forward(rt, &m->half, m->x, m->w1, m->h1, NULL));
    convoy_access relu_access[2] = {{m->h1, CONVOY_READ}, {m->a1, CONVOY_WRITE}};
    submit(rt, relu, &m->relu_sizes, "relu", relu_access, 2);
    CHECK(convoy_conv_forward(rt, &m->valid, m->a1, m->w2, m->y, NULL));
    convoy_access mse_access[4] = {
        {m->y, CONVOY_READ}, {m->t, CONVOY_READ}, {m->dy, CONVOY_WRITE}, {m->loss, CONVOY_WRITE}};
    submit(rt, mse, &m->mse_sizes, "mse", mse_access, 4);
    CHECK(convoy_conv_backward_filter(rt, &m->valid, m->a1, m->dy, m->g2, NULL));
    if (comm)
        CHECK(convoy_allreduce(rt, comm, m->g2, CONVOY_REDUCE_SUM, NULL));
    CHECK(convoy_conv_backward_data(rt, &m->valid, m->w2, m->dy, m->da1, NULL));
    convoy_access back_access[3] = {
        {m->da1, CONVOY_READ}, {m->h1, CONVOY_READ}, {m->dh1, CONVOY_WRITE}};
    submit(rt, relu_backward, &m->relu_sizes, "relu_backward", back_access, 3);
    CHECK(convoy_conv_backward_filter(rt, &m->half, m->x, m->dh1, m->g1, NULL));
    if (comm) {
        CHECK(convoy_allreduce(rt, comm, m->g1, CONVOY_REDUCE_SUM, NULL));
        CHECK(convoy_allreduce(rt, comm, m->loss, CONVOY_REDUCE_SUM, NULL));
    }
}

static void add_into(model *m, convoy_tensor *part, convoy_tensor *sum, sizes *z, int first)
{
    /* The task reads z when it runs; the first flag goes with the task, in a copy. */
    sizes *copy = first ? &z[1] : &z[2];
    *copy = z[0];
    copy->first = first;
    convoy_access access[2] = {{part, CONVOY_READ},
                               {sum, first ? CONVOY_WRITE : CONVOY_READ_WRITE}};
    submit(m->rt, accumulate, copy, "accumulate", access, 2);
}

static void update(model *m, convoy_tensor *g1, convoy_tensor *g2)
{
    convoy_access access[4] = {{m->w1, CONVOY_READ_WRITE},
                               {g1, CONVOY_READ},
                               {m->w2, CONVOY_READ_WRITE},
                               {g2, CONVOY_READ}};
    submit(m->rt, sgd, &m->sgd_sizes, "sgd", access, 4);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int steps = 20, streams = 2, deterministic = 1, shards = 1, quiet = 0;
    int64_t global_batch = 12;
    float lr = 0.05f;
    const char *out_path = NULL, *compare_path = NULL;
    double tolerance = 0.0;
    for (int i = 1; i < argc; ++i) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--steps") && next)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && next)
            global_batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--lr") && next)
            lr = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--streams") && next)
            streams = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--deterministic") && next)
            deterministic = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shards") && next)
            shards = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && next)
            out_path = argv[++i];
        else if (!strcmp(argv[i], "--compare") && next)
            compare_path = argv[++i];
        else if (!strcmp(argv[i], "--tolerance") && next)
            tolerance = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quiet"))
            quiet = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--steps N] [--batch B] [--lr X] [--streams N] "
                    "[--deterministic 0|1] [--shards S] [--out FILE] [--compare FILE "
                    "[--tolerance X]] [--quiet]\n",
                    argv[0]);
            return 2;
        }
    }
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1 && shards != 1) {
        if (rank == 0)
            fprintf(stderr, "--shards is for one process; with %d ranks each rank is a shard\n",
                    size);
        MPI_Finalize();
        return 2;
    }
    const int parts = size > 1 ? size : shards;
    if (steps < 1 || parts < 1 || global_batch < parts || global_batch % parts != 0) {
        if (rank == 0)
            fprintf(stderr, "the global batch (%lld) must be a multiple of the %d shards\n",
                    (long long)global_batch, parts);
        MPI_Finalize();
        return 2;
    }
    const int64_t batch = global_batch / parts;

    convoy_options o;
    CHECK(convoy_options_init(&o));
    CHECK(convoy_options_from_env(&o));
    o.device = CONVOY_DEVICE_CPU; /* the custom tasks are host code */
    o.streams = streams;
    o.blas_threads = 1; /* one thread per task: the ranks are the parallelism */
    o.deterministic = deterministic;
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(&o, &rt));
    convoy_comm *comm = NULL;
    CHECK(convoy_comm_create(rt, MPI_COMM_WORLD, NULL, &comm));
    if (rank == 0 && !quiet)
        printf("%s\n%d rank%s x %lld samples (global batch %lld), %d shard%s per process, "
               "deterministic %d\n",
               convoy_runtime_describe(rt), size, size == 1 ? "" : "s", (long long)batch,
               (long long)global_batch, size > 1 ? 1 : shards, shards == 1 ? "" : "s",
               deterministic);

    model m;
    model_create(&m, rt, batch, global_batch, lr);
    /* Rank 0's initial weights, broadcast to every rank. */
    float w1[C1 * 9], w2[C2 * C1 * 9];
    for (int i = 0; i < C1 * 9; ++i)
        w1[i] = rank == 0 ? 0.4f * hash_unit(7000 + (uint64_t)i) : 0.0f;
    for (int i = 0; i < C2 * C1 * 9; ++i)
        w2[i] = rank == 0 ? 0.2f * hash_unit(9000 + (uint64_t)i) : 0.0f;
    CHECK(convoy_upload(rt, m.w1, w1, C1 * 9, NULL));
    CHECK(convoy_upload(rt, m.w2, w2, C2 * C1 * 9, NULL));
    CHECK(convoy_broadcast(rt, comm, m.w1, 0, NULL));
    CHECK(convoy_broadcast(rt, comm, m.w2, 0, NULL));

    FILE *out = NULL;
    if (out_path && rank == 0 && !(out = fopen(out_path, "w"))) {
        fprintf(stderr, "cannot write %s\n", out_path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    float *reference = calloc((size_t)steps, sizeof *reference);
    int references = 0, mismatches = 0;
    if (compare_path && rank == 0) {
        FILE *f = fopen(compare_path, "r");
        int index;
        float value;
        while (f && references < steps && fscanf(f, "%d %a", &index, &value) == 2)
            if (index == references)
                reference[references++] = value;
        if (f)
            fclose(f);
        if (references < steps) {
            fprintf(stderr, "%s holds %d losses, %d steps run\n", compare_path, references, steps);
            mismatches++;
        }
    }
    float *x = malloc((size_t)batch * IMAGE * IMAGE * sizeof *x);
    float *t = malloc((size_t)batch * C2 * OUT * OUT * sizeof *t);
    sizes g1_sizes[3] = {m.w1_sizes}, g2_sizes[3] = {m.w2_sizes}, loss_sizes[3] = {m.loss_sizes};
    double total_ms = 0.0;
    for (int step = 0; step < steps; ++step) {
        double start = now_ms();
        float loss = 0.0f;
        for (int s = 0; s < (size > 1 ? 1 : shards); ++s) {
            /* This process's shard of the global batch: rank r (or shard s) takes r-th part. */
            const int64_t first = (int64_t)step * global_batch + (size > 1 ? rank : s) * batch;
            for (int64_t i = 0; i < batch; ++i)
                make_sample(first + i, x + i * IMAGE * IMAGE, t + i * C2 * OUT * OUT);
            forward_backward(&m, size > 1 ? comm : NULL, x, t);
            if (size == 1) {
                add_into(&m, m.g1, m.g1_sum, g1_sizes, s == 0);
                add_into(&m, m.g2, m.g2_sum, g2_sizes, s == 0);
                add_into(&m, m.loss, m.loss_sum, loss_sizes, s == 0);
            }
            /* x and t are refilled for the next shard: wait until the uploads read them. */
            CHECK(convoy_runtime_synchronize(rt));
        }
        if (size > 1)
            update(&m, m.g1, m.g2);
        else
            update(&m, m.g1_sum, m.g2_sum);
        convoy_task *done = NULL;
        CHECK(convoy_download(rt, size > 1 ? m.loss : m.loss_sum, &loss, 1, &done));
        CHECK(convoy_task_wait(done));
        convoy_task_release(done);
        double elapsed = now_ms() - start;
        if (step > 0)
            total_ms += elapsed; /* the first step also plans the convolutions */
        if (rank == 0 && !quiet)
            printf("step %3d  loss %.9f  (%a)  %.2f ms\n", step, loss, loss, elapsed);
        if (out)
            fprintf(out, "%d %a\n", step, loss);
        if (compare_path && rank == 0 && step < references) {
            const float want = reference[step];
            const int equal = tolerance > 0.0 ? fabs((double)loss - want) <= tolerance * fabs(want)
                                              : memcmp(&loss, &want, sizeof loss) == 0;
            if (!equal) {
                fprintf(stderr, "step %d: loss %a (%.9g), the reference has %a (%.9g)\n", step,
                        loss, loss, want, want);
                mismatches++;
            }
        }
    }
    if (compare_path && rank == 0)
        printf("%d of %d losses %s %s\n", steps - (mismatches < steps ? mismatches : steps), steps,
               tolerance > 0.0 ? "within tolerance of" : "bit-identical to", compare_path);
    if (rank == 0 && !quiet && steps > 1)
        printf("mean step time %.2f ms (steps 1..%d)\n", total_ms / (steps - 1), steps - 1);
    if (out)
        fclose(out);
    free(x);
    free(t);
    free(reference);
    CHECK(convoy_runtime_synchronize(rt));
    model_destroy(&m);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
    MPI_Finalize();
    return mismatches ? 1 : 0;
}
