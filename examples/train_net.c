/* The network of train_fashion_mnist on a convoy runtime (examples/train_net.h): tensors,
 * He initialisation, one training step as tasks, evaluation. Every call here only submits;
 * the runtime orders the tasks by the tensors they read and write. */
#include "train_net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the layers ------------------------------------------------------------------------- */

typedef struct layer_spec {
    int64_t in_channels, out_channels, kernel, stride, pad, in_side, out_side;
    convoy_activation act;
} layer_spec;

static const layer_spec layers[NET_LAYERS] = {
    {1, 16, 3, 1, 1, 28, 28, CONVOY_ACTIVATION_RELU},
    {16, 32, 3, 2, 1, 28, 14, CONVOY_ACTIVATION_RELU},
    {32, 64, 3, 2, 1, 14, 7, CONVOY_ACTIVATION_RELU},
    {64, 10, 7, 1, 0, 7, 1, CONVOY_ACTIVATION_NONE},
};

static convoy_conv_params layer_params(int l)
{
    convoy_conv_params p;
    if (convoy_conv_params_init(&p, 2) != CONVOY_OK)
        abort(); /* spatial_dims 2 is valid: cannot fail */
    p.flip = 0;
    p.border = CONVOY_BORDER_EXPLICIT;
    for (int a = 0; a < 2; ++a) {
        p.stride[a] = layers[l].stride;
        p.pad_before[a] = p.pad_after[a] = layers[l].pad;
    }
    return p;
}

/* Parameter i: the weights (M, C, k, k) of layer i / 2 when i is even, its bias (M) when odd. */
static int param_dims(int i, int64_t *dims)
{
    const layer_spec *l = &layers[i / 2];
    if (i % 2)
        return dims[0] = l->out_channels, 1;
    dims[0] = l->out_channels;
    dims[1] = l->in_channels;
    dims[2] = dims[3] = l->kernel;
    return 4;
}

static int64_t param_numel(int i)
{
    int64_t dims[4];
    const int rank = param_dims(i, dims);
    int64_t n = 1;
    for (int d = 0; d < rank; ++d)
        n *= dims[d];
    return n;
}

int64_t net_parameter_count(void)
{
    int64_t total = 0;
    for (int i = 0; i < NET_PARAMS; ++i)
        total += param_numel(i);
    return total;
}

/* ---- host state ------------------------------------------------------------------------- */

void net_rng_seed(net_rng *rng, uint64_t seed)
{
    rng->state = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
}

uint64_t net_rng_next(net_rng *rng)
{
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A standard normal by Box-Muller from two uniforms in (0, 1]. */
static double normal(net_rng *rng)
{
    const double u1 = (double)((net_rng_next(rng) >> 11) + 1) / 9007199254740992.0;
    const double u2 = (double)((net_rng_next(rng) >> 11) + 1) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void *alloc_or_exit(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "train_fashion_mnist: out of host memory\n");
        exit(1);
    }
    return p;
}

void net_init(train_net *net, int64_t batch, int64_t batches, uint64_t seed)
{
    memset(net, 0, sizeof *net);
    net->batch = batch;
    net->batches = batches;
    net->global_batch = batch;
    net->pieces = 1;
    net_rng rng;
    net_rng_seed(&rng, seed);
    for (int i = 0; i < NET_PARAMS; ++i) {
        const int64_t n = param_numel(i);
        net->host_param[i] = alloc_or_exit((size_t)n, sizeof(float));
        net->host_velocity[i] = alloc_or_exit((size_t)n, sizeof(float));
        if (i % 2)
            continue; /* biases start at zero */
        const layer_spec *l = &layers[i / 2];
        const double deviation = sqrt(2.0 / (double)(l->in_channels * l->kernel * l->kernel));
        for (int64_t j = 0; j < n; ++j)
            net->host_param[i][j] = (float)(deviation * normal(&rng));
    }
    for (int s = 0; s < 2; ++s) {
        net->host_x[s] = alloc_or_exit((size_t)batch * FMNIST_SIDE * FMNIST_SIDE, sizeof(float));
        net->host_y[s] = alloc_or_exit((size_t)batch, sizeof(float));
    }
    net->step_loss = alloc_or_exit((size_t)batches, sizeof(float));
    net->loss_task = alloc_or_exit((size_t)batches, sizeof(convoy_task *));
}

int net_export(const train_net *net, const char *path, char *error, size_t error_size)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(error, error_size, "cannot write %s", path);
        return -1;
    }
    /* Little-endian, as every machine convoy runs on stores them. */
    const uint32_t count = NET_PARAMS;
    int ok = fwrite("CVYW0001", 1, 8, f) == 8 && fwrite(&count, 4, 1, f) == 1;
    for (int i = 0; i < NET_PARAMS && ok; ++i) {
        int64_t dims[4];
        const uint32_t rank = (uint32_t)param_dims(i, dims);
        ok = fwrite(&rank, 4, 1, f) == 1 && fwrite(dims, 8, rank, f) == rank &&
             fwrite(net->host_param[i], 4, (size_t)param_numel(i), f) == (size_t)param_numel(i);
    }
    if (fclose(f) != 0 || !ok) {
        snprintf(error, error_size, "cannot write %s", path);
        return -1;
    }
    return 0;
}

/* ---- tensors ---------------------------------------------------------------------------- */

static convoy_status make(convoy_runtime *rt, int rank, const int64_t *dims, convoy_tensor **t)
{
    return convoy_tensor_create(rt, rank, dims, t);
}

/* The activation of layer l (after it) for n images. */
static int act_dims(int l, int64_t n, int64_t *dims)
{
    dims[0] = n;
    dims[1] = layers[l].out_channels;
    dims[2] = dims[3] = layers[l].out_side;
    return 4;
}

convoy_status net_open(train_net *net, convoy_runtime *rt)
{
    net->rt = rt;
    convoy_status s = CONVOY_OK;
    const int64_t input[4] = {net->batch, 1, FMNIST_SIDE, FMNIST_SIDE}, labels[1] = {net->batch};
    const int64_t one[1] = {1};
    for (int i = 0; i < NET_PARAMS && s == CONVOY_OK; ++i) {
        int64_t dims[4];
        const int rank = param_dims(i, dims);
        const size_t n = (size_t)param_numel(i);
        if ((s = make(rt, rank, dims, &net->param[i])) != CONVOY_OK ||
            (s = make(rt, rank, dims, &net->grad[i])) != CONVOY_OK ||
            (s = make(rt, rank, dims, &net->velocity[i])) != CONVOY_OK ||
            (s = convoy_upload(rt, net->param[i], net->host_param[i], n, NULL)) != CONVOY_OK ||
            (s = convoy_upload(rt, net->velocity[i], net->host_velocity[i], n, NULL)) != CONVOY_OK)
            return s;
    }
    for (int slot = 0; slot < 2 && s == CONVOY_OK; ++slot) {
        if ((s = make(rt, 4, input, &net->x[slot])) != CONVOY_OK ||
            (s = make(rt, 1, labels, &net->y[slot])) != CONVOY_OK)
            return s;
    }
    for (int l = 0; l < NET_LAYERS - 1; ++l) {
        int64_t dims[4];
        act_dims(l, net->batch, dims);
        if ((s = make(rt, 4, dims, &net->act[l])) != CONVOY_OK ||
            (s = make(rt, 4, dims, &net->grad_act[l])) != CONVOY_OK)
            return s;
    }
    int64_t dims[4];
    act_dims(NET_LAYERS - 1, net->batch, dims);
    if ((s = make(rt, 4, dims, &net->logits)) != CONVOY_OK ||
        (s = make(rt, 4, dims, &net->grad_logits)) != CONVOY_OK ||
        (s = make(rt, 1, one, &net->loss)) != CONVOY_OK ||
        (s = make(rt, 1, one, &net->correct)) != CONVOY_OK)
        return s;
    for (int i = 0; i <= NET_PARAMS && net->pieces > 1; ++i) {
        int64_t pdims[4] = {1};
        const int rank = i < NET_PARAMS ? param_dims(i, pdims) : 1;
        if ((s = make(rt, rank, pdims, i < NET_PARAMS ? &net->grad_sum[i] : &net->loss_sum)) !=
            CONVOY_OK)
            return s;
        for (int mode = 0; mode < 3; ++mode)
            net->accumulate[i][mode] =
                (net_accumulate){i < NET_PARAMS ? param_numel(i) : 1, mode, (float)net->pieces};
    }
    /* The parameters' uploads read the host copies until they complete. */
    return convoy_runtime_synchronize(rt);
}

static void destroy_tensors(train_net *net)
{
    convoy_tensor **all[] = {net->param, net->grad, net->velocity, net->grad_sum};
    for (int k = 0; k < 4; ++k)
        for (int i = 0; i < NET_PARAMS; ++i) {
            convoy_tensor_destroy(all[k][i]);
            all[k][i] = NULL;
        }
    for (int s = 0; s < 2; ++s) {
        convoy_task_release(net->uploads[s]);
        convoy_tensor_destroy(net->x[s]);
        convoy_tensor_destroy(net->y[s]);
        net->uploads[s] = NULL;
        net->x[s] = net->y[s] = NULL;
    }
    for (int l = 0; l < NET_LAYERS - 1; ++l) {
        convoy_tensor_destroy(net->act[l]);
        convoy_tensor_destroy(net->grad_act[l]);
        net->act[l] = net->grad_act[l] = NULL;
    }
    convoy_tensor *rest[] = {net->logits, net->grad_logits, net->loss, net->correct, net->loss_sum};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; ++i)
        convoy_tensor_destroy(rest[i]);
    net->logits = net->grad_logits = net->loss = net->correct = net->loss_sum = NULL;
}

void net_close(train_net *net)
{
    for (int64_t i = 0; i < net->batches; ++i)
        convoy_task_release(net->loss_task[i]);
    destroy_tensors(net);
    for (int i = 0; i < NET_PARAMS; ++i) {
        free(net->host_param[i]);
        free(net->host_velocity[i]);
    }
    for (int s = 0; s < 2; ++s) {
        free(net->host_x[s]);
        free(net->host_y[s]);
    }
    free(net->step_loss);
    free(net->loss_task);
}

/* ---- steps ------------------------------------------------------------------------------ */

/* Gathers upload u of the epoch (this process's shard u % pieces of global batch u / pieces)
 * into host slot u % 2 and uploads it into input slot u % 2. The host buffers are rewritten
 * only once their previous upload has read them. */
static convoy_status upload_batch(train_net *net, const fmnist_split *train, const int64_t *order,
                                  int64_t u)
{
    const int slot = (int)(u % 2);
    const int64_t first =
        (u / net->pieces) * net->global_batch + (net->first_piece + u % net->pieces) * net->batch;
    const size_t image = FMNIST_SIDE * FMNIST_SIDE;
    convoy_status s = CONVOY_OK;
    if (net->uploads[slot]) {
        s = convoy_task_wait(net->uploads[slot]);
        convoy_task_release(net->uploads[slot]);
        net->uploads[slot] = NULL;
        if (s != CONVOY_OK)
            return s;
    }
    for (int64_t i = 0; i < net->batch; ++i) {
        const int64_t k = order[first + i];
        memcpy(net->host_x[slot] + i * image, train->images + k * image, image * sizeof(float));
        net->host_y[slot][i] = train->labels[k];
    }
    /* The label upload comes second, so its completion means both buffers were read. */
    if ((s = convoy_upload(net->rt, net->x[slot], net->host_x[slot], (size_t)net->batch * image,
                           NULL)) != CONVOY_OK)
        return s;
    return convoy_upload(net->rt, net->y[slot], net->host_y[slot], (size_t)net->batch,
                         &net->uploads[slot]);
}

convoy_status net_begin_epoch(train_net *net, const fmnist_split *train, const int64_t *order)
{
    for (int64_t i = 0; i < net->batches; ++i) {
        convoy_task_release(net->loss_task[i]);
        net->loss_task[i] = NULL;
    }
    return upload_batch(net, train, order, 0);
}

/* Forward through the four layers for the input x into the activations act[] and logits. */
static convoy_status forward(convoy_runtime *rt, convoy_tensor *const *param, convoy_tensor *x,
                             convoy_tensor *const *act, convoy_tensor *logits)
{
    convoy_status s = CONVOY_OK;
    for (int l = 0; l < NET_LAYERS && s == CONVOY_OK; ++l) {
        const convoy_conv_params p = layer_params(l);
        convoy_tensor *in = l ? act[l - 1] : x, *out = l < NET_LAYERS - 1 ? act[l] : logits;
        s = convoy_conv_forward_bias_act(rt, &p, in, param[2 * l], param[2 * l + 1], layers[l].act,
                                         out, NULL);
    }
    return s;
}

/* sum = part (mode 0), sum + part (1), or (sum + part) / pieces (2): one process's
 * accumulation of its shards in the order, and with the division, of the average all-reduce
 * in deterministic mode. Host code: the CPU only. */
static convoy_status accumulate_task(const convoy_task_context *c, void *user_data)
{
    const net_accumulate *z = user_data;
    if (c->device != CONVOY_DEVICE_CPU)
        return CONVOY_ERR_UNSUPPORTED;
    const float *part = c->data[0];
    float *sum = c->data[1];
    for (int64_t i = 0; i < z->n; ++i) {
        if (z->mode == 0) {
            sum[i] = part[i];
        } else {
            sum[i] += part[i];
            if (z->mode == 2)
                sum[i] = sum[i] / z->pieces;
        }
    }
    return CONVOY_OK;
}

/* Adds part into sum for parameter i (NET_PARAMS: the loss) of shard piece. */
static convoy_status accumulate(train_net *net, int i, int piece, convoy_tensor *part,
                                convoy_tensor *sum)
{
    const int mode = piece == 0 ? 0 : piece == net->pieces - 1 ? 2 : 1;
    const convoy_access access[2] = {{part, CONVOY_READ},
                                     {sum, mode ? CONVOY_READ_WRITE : CONVOY_WRITE}};
    return convoy_submit(net->rt, accumulate_task, &net->accumulate[i][mode], access, 2,
                         "accumulate", NULL);
}

/* Forward, loss and backward of upload u into grad[] and loss; with a communicator each
 * layer's gradients (and the loss, with the first) are averaged across the ranks as soon as
 * they are computed; with pieces, added into grad_sum[] and loss_sum. */
static convoy_status shard_step(train_net *net, const fmnist_split *train, const int64_t *order,
                                int64_t u)
{
    convoy_runtime *rt = net->rt;
    const int slot = (int)(u % 2);
    const int piece = (int)(u % net->pieces);
    convoy_status s = CONVOY_OK;
    /* The next shard first: its upload runs beside this one's compute. */
    if (u + 1 < net->batches * net->pieces &&
        (s = upload_batch(net, train, order, u + 1)) != CONVOY_OK)
        return s;
    if ((s = forward(rt, net->param, net->x[slot], net->act, net->logits)) != CONVOY_OK ||
        (s = convoy_softmax_cross_entropy(rt, net->logits, net->y[slot], net->loss,
                                          net->grad_logits, NULL, NULL)) != CONVOY_OK)
        return s;
    if (net->pieces > 1 &&
        (s = accumulate(net, NET_PARAMS, piece, net->loss, net->loss_sum)) != CONVOY_OK)
        return s;
    /* Backward, from the classifier down: filter and bias gradients of each layer, then the
     * gradient of its input through the previous layer's ReLU (in place). */
    for (int l = NET_LAYERS - 1; l >= 0 && s == CONVOY_OK; --l) {
        const convoy_conv_params p = layer_params(l);
        convoy_tensor *in = l ? net->act[l - 1] : net->x[slot];
        convoy_tensor *grad_out = l < NET_LAYERS - 1 ? net->grad_act[l] : net->grad_logits;
        if ((s = convoy_conv_backward_filter(rt, &p, in, grad_out, net->grad[2 * l], NULL)) !=
                CONVOY_OK ||
            (s = convoy_bias_backward(rt, grad_out, net->grad[2 * l + 1], NULL)) != CONVOY_OK)
            return s;
        if (net->comm) {
            /* One bucket per layer, on the communication stream beside the rest of backward. */
            convoy_tensor *bucket[3] = {net->grad[2 * l], net->grad[2 * l + 1], net->loss};
            if ((s = convoy_allreduce_many(rt, net->comm, bucket, l == NET_LAYERS - 1 ? 3 : 2,
                                           CONVOY_REDUCE_AVERAGE, NULL)) != CONVOY_OK)
                return s;
        }
        for (int i = 2 * l; i < 2 * l + 2 && net->pieces > 1 && s == CONVOY_OK; ++i)
            s = accumulate(net, i, piece, net->grad[i], net->grad_sum[i]);
        if (s != CONVOY_OK || l == 0)
            break;
        if ((s = convoy_conv_backward_data(rt, &p, net->param[2 * l], grad_out,
                                           net->grad_act[l - 1], NULL)) != CONVOY_OK)
            return s;
        s = convoy_activation_backward(rt, layers[l - 1].act, net->act[l - 1], net->grad_act[l - 1],
                                       net->grad_act[l - 1], NULL);
    }
    return s;
}

convoy_status net_step(train_net *net, const fmnist_split *train, const int64_t *order, int64_t b,
                       const convoy_sgd_params *sgd)
{
    convoy_status s = CONVOY_OK;
    for (int piece = 0; piece < net->pieces && s == CONVOY_OK; ++piece)
        s = shard_step(net, train, order, b * net->pieces + piece);
    const int summed = net->pieces > 1;
    if (s == CONVOY_OK)
        s = convoy_download(net->rt, summed ? net->loss_sum : net->loss, &net->step_loss[b], 1,
                            &net->loss_task[b]);
    for (int i = 0; i < NET_PARAMS && s == CONVOY_OK; ++i)
        s = convoy_sgd_step(net->rt, sgd, net->param[i], summed ? net->grad_sum[i] : net->grad[i],
                            net->velocity[i], NULL);
    return s;
}

int net_step_done(train_net *net, int64_t i, int wait)
{
    convoy_task *task = net->loss_task[i];
    if (!task)
        return 1;
    if (!wait && !convoy_task_done(task))
        return 0;
    convoy_status s = convoy_task_wait(task);
    if (s != CONVOY_OK) {
        fprintf(stderr, "train_fashion_mnist: step %lld failed: %s: %s\n", (long long)i,
                convoy_status_name(s), convoy_last_error_message());
        exit(3);
    }
    convoy_task_release(task);
    net->loss_task[i] = NULL;
    return 1;
}

convoy_status net_move(train_net *net, convoy_runtime *next, const fmnist_split *train,
                       const int64_t *order, int64_t b)
{
    convoy_status s = convoy_runtime_synchronize(net->rt);
    for (int i = 0; i < NET_PARAMS && s == CONVOY_OK; ++i) {
        const size_t n = (size_t)param_numel(i);
        if ((s = convoy_download(net->rt, net->param[i], net->host_param[i], n, NULL)) !=
                CONVOY_OK ||
            (s = convoy_download(net->rt, net->velocity[i], net->host_velocity[i], n, NULL)) !=
                CONVOY_OK)
            return s;
    }
    if (s == CONVOY_OK)
        s = convoy_runtime_synchronize(net->rt);
    if (s != CONVOY_OK)
        return s;
    /* Steps already submitted have completed; their loss handles stay valid (detached). */
    destroy_tensors(net);
    if ((s = net_open(net, next)) != CONVOY_OK)
        return s;
    return upload_batch(net, train, order, b * net->pieces);
}

/* ---- evaluation --------------------------------------------------------------------------- */

#define EVAL_BATCH 1000

/* Classifies images [first, first + n) of the test split on tensors for n images. */
static convoy_status evaluate_chunk(train_net *net, const fmnist_split *test, int64_t first,
                                    int64_t n, float *correct, convoy_task **task)
{
    convoy_runtime *rt = net->rt;
    const int64_t input[4] = {n, 1, FMNIST_SIDE, FMNIST_SIDE}, labels[1] = {n}, one[1] = {1};
    convoy_tensor *x = NULL, *y = NULL, *act[NET_LAYERS - 1] = {NULL}, *logits = NULL;
    convoy_tensor *loss = NULL, *count = NULL;
    const size_t image = FMNIST_SIDE * FMNIST_SIDE;
    convoy_status s;
    int64_t dims[4];
    if ((s = make(rt, 4, input, &x)) == CONVOY_OK && (s = make(rt, 1, labels, &y)) == CONVOY_OK &&
        (s = make(rt, 1, one, &loss)) == CONVOY_OK && (s = make(rt, 1, one, &count)) == CONVOY_OK)
        for (int l = 0; l < NET_LAYERS && s == CONVOY_OK; ++l) {
            act_dims(l, n, dims);
            s = make(rt, 4, dims, l < NET_LAYERS - 1 ? &act[l] : &logits);
        }
    /* The test split is contiguous: uploaded straight from it, no gathering. */
    if (s == CONVOY_OK)
        s = convoy_upload(rt, x, test->images + first * (int64_t)image, (size_t)n * image, NULL);
    if (s == CONVOY_OK)
        s = convoy_upload(rt, y, test->labels + first, (size_t)n, NULL);
    if (s == CONVOY_OK)
        s = forward(rt, net->param, x, act, logits);
    if (s == CONVOY_OK)
        s = convoy_softmax_cross_entropy(rt, logits, y, loss, NULL, count, NULL);
    if (s == CONVOY_OK)
        s = convoy_download(rt, count, correct, 1, task);
    /* Destroying a tensor is ordered after the tasks using it: nothing waits here. */
    convoy_tensor *all[] = {x, y, loss, count, act[0], act[1], act[2], logits};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        convoy_tensor_destroy(all[i]);
    return s;
}

convoy_status net_evaluate(train_net *net, const fmnist_split *test, int64_t count,
                           int64_t *correct)
{
    const int64_t chunks = (count + EVAL_BATCH - 1) / EVAL_BATCH;
    float *counts = alloc_or_exit((size_t)chunks, sizeof(float));
    convoy_task **tasks = alloc_or_exit((size_t)chunks, sizeof(convoy_task *));
    convoy_status s = CONVOY_OK;
    for (int64_t c = 0; c < chunks && s == CONVOY_OK; ++c) {
        const int64_t first = c * EVAL_BATCH;
        const int64_t n = count - first < EVAL_BATCH ? count - first : EVAL_BATCH;
        s = evaluate_chunk(net, test, first, n, &counts[c], &tasks[c]);
    }
    int64_t total = 0;
    for (int64_t c = 0; c < chunks; ++c) {
        if (!tasks[c])
            continue;
        convoy_status w = convoy_task_wait(tasks[c]);
        if (s == CONVOY_OK)
            s = w;
        convoy_task_release(tasks[c]);
        total += (int64_t)counts[c];
    }
    *correct = total;
    free(counts);
    free(tasks);
    return s;
}

void net_deterministic_options(convoy_options *o)
{
    o->deterministic = 1;
    o->algo = CONVOY_ALGO_HEURISTIC;
    o->blas_threads = 1;
}
