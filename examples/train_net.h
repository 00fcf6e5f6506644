/* The network of train_fashion_mnist on a convoy runtime: its tensors, its initial weights,
 * one training step as a sequence of tasks, and evaluation. Uses only the public header.
 *
 * Parameters are (w1, b1, w2, b2, w3, b3, w4, b4): four convolutions, 3x3 1->16 (half
 * padding), 3x3 stride 2 16->32 (padding 1), 3x3 stride 2 32->64 (padding 1) and 7x7 64->10
 * (valid), all cross-correlations (flip 0) as in PyTorch, so weights carry over as they are. */
#ifndef CONVOY_EXAMPLES_TRAIN_NET_H
#define CONVOY_EXAMPLES_TRAIN_NET_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "fashion_mnist.h"

/* splitmix64: the initial weights and the batch order; the PyTorch reference has the same. */
typedef struct net_rng {
    uint64_t state;
} net_rng;

void net_rng_seed(net_rng *rng, uint64_t seed);
uint64_t net_rng_next(net_rng *rng);

#define NET_LAYERS 4
#define NET_PARAMS (2 * NET_LAYERS)

/* What an accumulation task adds: n elements; mode 0 copies the first shard's part, 1 adds a
 * later one, 2 adds the last and divides by pieces (as an average all-reduce does). */
typedef struct net_accumulate {
    int64_t n;
    int mode;
    float pieces;
} net_accumulate;

typedef struct train_net {
    convoy_runtime *rt;
    int64_t batch, batches; /* images per shard (the tensors' batch), steps per epoch */
    /* Data parallel: a step is a global batch of global_batch images, split into equal
     * contiguous shards of batch images. This process computes pieces of them one after another
     * (--shards), starting at shard first_piece (its rank), and with comm the ranks average
     * their gradients and losses. net_init sets one piece, shard 0, no communicator. */
    int64_t global_batch;
    int pieces, first_piece;
    convoy_comm *comm;
    /* pieces > 1: the shards' gradients and losses averaged in shard order. */
    convoy_tensor *grad_sum[NET_PARAMS], *loss_sum;
    net_accumulate accumulate[NET_PARAMS + 1][3];
    /* Host copies of the parameters and velocities: the initial weights, and the state when
     * the network moves to another runtime. */
    float *host_param[NET_PARAMS], *host_velocity[NET_PARAMS];
    convoy_tensor *param[NET_PARAMS], *grad[NET_PARAMS], *velocity[NET_PARAMS];
    /* Two input and label tensors in turn, each uploaded from its own host buffer. */
    convoy_tensor *x[2], *y[2];
    float *host_x[2], *host_y[2];
    convoy_task *uploads[2];
    /* Activations (after ReLU) of layers 1-3, logits, and their gradients. */
    convoy_tensor *act[NET_LAYERS - 1], *grad_act[NET_LAYERS - 1], *logits, *grad_logits;
    convoy_tensor *loss, *correct;
    /* This epoch's step losses, arriving by download; one task handle per step until seen. */
    float *step_loss;
    convoy_task **loss_task;
} train_net;

/* Host state for batch (images per step) and batches (steps per epoch), with He-initialised
 * weights (normal, deviation sqrt(2 / fan_in)) and zero biases drawn from seed. Exits with a
 * message when memory runs out. */
void net_init(train_net *net, int64_t batch, int64_t batches, uint64_t seed);

/* Writes the host parameters: "CVYW0001", a little-endian uint32 count, then per tensor a
 * uint32 rank, int64 dims and float32 values. 0, or -1 with a message in error. */
int net_export(const train_net *net, const char *path, char *error, size_t error_size);

/* Creates the tensors on rt and uploads the host parameters and velocities. */
convoy_status net_open(train_net *net, convoy_runtime *rt);

/* Destroys the tensors (the runtime stays) and frees the host state. */
void net_close(train_net *net);

/* Uploads this process's first shard of an epoch's first batch into input slot 0. */
convoy_status net_begin_epoch(train_net *net, const fmnist_split *train, const int64_t *order);

/* Submits step b of the epoch: for each of the process's shards of global batch b, the upload
 * of the next shard into the other input slot (when there is one), then forward, loss and
 * backward; with a communicator each layer's gradients are all-reduced (averaged) as soon as
 * they are computed, while the earlier layers' backward runs; with several pieces they are
 * averaged in shard order. Then SGD, and the download of the (averaged) loss into
 * step_loss[b]. Returns without waiting for any of it. */
convoy_status net_step(train_net *net, const fmnist_split *train, const int64_t *order, int64_t b,
                       const convoy_sgd_params *sgd);

/* 1 when step i's loss is in step_loss[i] (wait: block until it is); exits with the task's
 * error when the step failed. */
int net_step_done(train_net *net, int64_t i, int wait);

/* Carries the network to another runtime before step b of the epoch: waits for the old one,
 * downloads parameters and velocities, recreates everything on next, and uploads batch b. */
convoy_status net_move(train_net *net, convoy_runtime *next, const fmnist_split *train,
                       const int64_t *order, int64_t b);

/* Classifies the first count test images in batches; *correct gets how many were right. */
convoy_status net_evaluate(train_net *net, const fmnist_split *test, int64_t count,
                           int64_t *correct);

/* 54,666: the weights and biases of the four layers. */
int64_t net_parameter_count(void);

/* What --deterministic changes in the options: deterministic algorithms only, the heuristic
 * policy (timing could choose differently from run to run) and one BLAS / OpenMP thread per
 * task, because the number of threads a task gets depends on the number of streams, and the
 * CPU's filter-gradient reductions split their sums over those threads. */
void net_deterministic_options(convoy_options *options);

#endif /* CONVOY_EXAMPLES_TRAIN_NET_H */
