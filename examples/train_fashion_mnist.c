/* train_fashion_mnist: trains a small all-convolutional network on Fashion-MNIST with convoy's
 * training ops, every step a sequence of tasks the runtime orders by the tensors they touch.
 *
 *   3x3 conv, 16 channels, ReLU       (N, 1, 28, 28)  -> (N, 16, 28, 28)
 *   3x3 conv stride 2, 32, ReLU                        -> (N, 32, 14, 14)
 *   3x3 conv stride 2, 64, ReLU                        -> (N, 64, 7, 7)
 *   7x7 valid conv, 10 classes (the classifier)        -> (N, 10, 1, 1)
 *   softmax cross-entropy; SGD with momentum and weight decay, the learning rate decayed
 *   linearly to 0 over the run; He-initialised weights and zero biases from a fixed seed.
 *
 * A step is: four convoy_conv_forward_bias_act, convoy_softmax_cross_entropy, then per layer
 * the filter gradient, convoy_bias_backward, the input gradient and convoy_activation_backward,
 * and eight convoy_sgd_step. With streams, the upload of batch k + 1 into the second of two
 * input tensors runs on the upload stream while batch k computes. Each step's loss is
 * downloaded without waiting; the progress line shows the losses that have arrived.
 *
 * The runtime reads the CONVOY_* variables (convoy_options_from_env); command-line flags win.
 * With CONVOY_TRACE set, the first few steps run on a runtime of their own that writes the
 * Chrome trace when it is destroyed, and training continues on an untraced one.
 * Run with --help for the flags. Uses only the public header (and convoy_mpi.h with MPI).
 *
 * Built with TRAIN_WITH_MPI (train_fashion_mnist_mpi), it trains data-parallel under mpirun:
 * every rank takes its contiguous shard of every global batch of --batch images (the same
 * shuffled order everywhere), computes forward and backward on it, averages each layer's
 * gradients across the ranks as soon as they are computed (one convoy_allreduce_many per
 * layer, beside the earlier layers' backward), and applies the same SGD step. Rank 0's initial
 * weights are broadcast; all ranks evaluate, rank 0 prints and writes the loss log. --shards N
 * computes each global batch as N shards one after another in one process and averages their
 * gradients in shard order, which is what N ranks do in deterministic mode: the losses are
 * bit-identical to those of mpirun -np N with --deterministic. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convoy.h"
#include "fashion_mnist.h"
#ifdef TRAIN_WITH_MPI
#include "convoy_mpi.h"
#endif
#include "train_net.h"

typedef struct args {
    const char *data;
    int epochs, batch, streams, deterministic, quiet, trace_steps, shards;
    long limit, test_limit;
    double lr, momentum, weight_decay;
    unsigned long long seed;
    const char *export_weights, *loss_log;
} args;

/* Two compute streams by default: the upload of the next batch overlaps this one's compute,
 * independent tasks of a step (a layer's filter and input gradients, the SGD steps) run side
 * by side, and each task computes on one core, which on a 2-core machine shared with other
 * work ran about twice as fast as tasks whose OpenMP teams wait for a busy core
 * (bench/RESULTS.md). One thread per task is also what --deterministic uses, so a default run
 * gives the bits of a deterministic one. */
static void usage(FILE *out)
{
    fprintf(out,
            "usage: train_fashion_mnist [options]\n"
            "  --data DIR            the gzip'd IDX files (default " FMNIST_DEFAULT_DIR ")\n"
            "  --epochs N            passes over the training images (default 3)\n"
            "  --batch N             images per step (default 128)\n"
            "  --lr X                initial learning rate, decayed linearly to 0 (default 0.05)\n"
            "  --momentum X          SGD momentum (default 0.9)\n"
            "  --weight-decay X      L2 penalty (default 0.0005)\n"
            "  --streams N           compute streams (default: CONVOY_STREAMS, else 2)\n"
            "  --seed N              initial weights and batch order (default 1)\n"
            "  --deterministic       bit-identical losses whatever the streams (see README)\n"
            "  --limit N             train on the first N images only\n"
            "  --test-limit N        evaluate on the first N test images only\n"
            "  --export-weights FILE write the initial weights (for the PyTorch reference)\n"
            "  --loss-log FILE       write every step's loss and each epoch's figures\n"
            "  --trace-steps N       steps traced when CONVOY_TRACE is set (default 8)\n"
            "  --shards N            each batch as N shards whose gradients are averaged in\n"
            "                        order, as N ranks under mpirun do (CPU; default 1)\n"
            "  --quiet               no progress lines\n");
}

static int parse_number(const char *flag, const char *text, double lo, double hi, double *out)
{
    char *end = NULL;
    double v = text ? strtod(text, &end) : 0.0;
    if (!text || end == text || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "train_fashion_mnist: %s needs a number in [%g, %g], got '%s'\n", flag, lo,
                hi, text ? text : "");
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_args(int argc, char **argv, args *a)
{
    *a = (args){FMNIST_DEFAULT_DIR, 3, 128, -1, 0, 0, 8, 1, 0, 0, 0.05, 0.9, 5e-4, 1, NULL, NULL};
    for (int i = 1; i < argc; ++i) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x = 0.0;
        int ok = 1, takes_value = 1;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(f, "--deterministic")) {
            a->deterministic = 1;
            takes_value = 0;
        } else if (!strcmp(f, "--quiet")) {
            a->quiet = 1;
            takes_value = 0;
        } else if (!strcmp(f, "--data") || !strcmp(f, "--export-weights") ||
                   !strcmp(f, "--loss-log")) {
            ok = v != NULL;
            if (ok)
                *(!strcmp(f, "--data")             ? &a->data
                  : !strcmp(f, "--export-weights") ? &a->export_weights
                                                   : &a->loss_log) = v;
            else
                fprintf(stderr, "train_fashion_mnist: %s needs a value\n", f);
        } else if (!strcmp(f, "--epochs") && (ok = parse_number(f, v, 1, 1000, &x))) {
            a->epochs = (int)x;
        } else if (!strcmp(f, "--batch") && (ok = parse_number(f, v, 1, 60000, &x))) {
            a->batch = (int)x;
        } else if (!strcmp(f, "--streams") && (ok = parse_number(f, v, 0, 64, &x))) {
            a->streams = (int)x;
        } else if (!strcmp(f, "--seed") && (ok = parse_number(f, v, 0, 4294967295.0, &x))) {
            a->seed = (unsigned long long)x;
        } else if (!strcmp(f, "--limit") && (ok = parse_number(f, v, 1, 60000, &x))) {
            a->limit = (long)x;
        } else if (!strcmp(f, "--test-limit") && (ok = parse_number(f, v, 1, 10000, &x))) {
            a->test_limit = (long)x;
        } else if (!strcmp(f, "--shards") && (ok = parse_number(f, v, 1, 64, &x))) {
            a->shards = (int)x;
        } else if (!strcmp(f, "--trace-steps") && (ok = parse_number(f, v, 1, 1000, &x))) {
            a->trace_steps = (int)x;
        } else if (!strcmp(f, "--lr") && (ok = parse_number(f, v, 0, 10, &x))) {
            a->lr = x;
        } else if (!strcmp(f, "--momentum") && (ok = parse_number(f, v, 0, 1, &x))) {
            a->momentum = x;
        } else if (!strcmp(f, "--weight-decay") && (ok = parse_number(f, v, 0, 1, &x))) {
            a->weight_decay = x;
        } else if (ok) {
            fprintf(stderr, "train_fashion_mnist: unknown option '%s'\n", f);
            ok = 0;
        }
        if (!ok) {
            usage(stderr);
            return 0;
        }
        i += takes_value;
    }
    return 1;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- the batch order, shared with the PyTorch reference --------------------------------- */

/* Fisher-Yates over 0..count-1 with the net's generator, from the identity at every epoch. */
static void shuffle(net_rng *rng, int64_t *order, int64_t count)
{
    for (int64_t i = 0; i < count; ++i)
        order[i] = i;
    for (int64_t i = count - 1; i > 0; --i) {
        int64_t j = (int64_t)(net_rng_next(rng) % (uint64_t)(i + 1));
        int64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ---- progress ------------------------------------------------------------------------- */

typedef struct progress {
    int tty, quiet;
    int epoch, epochs;
    int64_t batches, batch;
    int64_t arrived; /* steps of this epoch whose loss is on the host */
    double loss_sum, start, last_print;
    int quarter; /* plain-line mode: quarters printed so far */
} progress;

static void progress_line(progress *p, int final)
{
    const double elapsed = now_s() - p->start;
    const double rate = elapsed > 0 ? (double)(p->arrived * p->batch) / elapsed : 0.0;
    const double running = p->arrived ? p->loss_sum / (double)p->arrived : 0.0;
    if (p->tty) {
        printf("\repoch %d/%d: %lld/%lld batches, %6.0f images/s, running loss %.4f%s", p->epoch,
               p->epochs, (long long)p->arrived, (long long)p->batches, rate, running,
               final ? "\n" : "");
    } else {
        printf("epoch %d/%d: %lld/%lld batches, %.0f images/s, running loss %.4f\n", p->epoch,
               p->epochs, (long long)p->arrived, (long long)p->batches, rate, running);
    }
    fflush(stdout);
}

/* Called after each step's submit: takes in the losses of the submitted steps that have
 * arrived, in step order (wait: all of them), and refreshes the line (a terminal: four times a
 * second; otherwise at each quarter of the epoch). */
static void progress_poll(progress *p, train_net *net, int64_t submitted, int wait)
{
    while (p->arrived < submitted && net_step_done(net, p->arrived, wait)) {
        p->loss_sum += net->step_loss[p->arrived];
        p->arrived++;
    }
    if (p->quiet || p->arrived == 0)
        return;
    if (p->tty && now_s() - p->last_print >= 0.25) {
        progress_line(p, 0);
        p->last_print = now_s();
    } else if (!p->tty && p->arrived * 4 >= (p->quarter + 1) * p->batches && p->quarter < 3) {
        while (p->arrived * 4 >= (p->quarter + 1) * p->batches && p->quarter < 3)
            p->quarter++;
        progress_line(p, 0);
    }
}

/* ---- the program -------------------------------------------------------------------------- */

/* A runtime from the environment and the flags; *streams gets its compute stream count. */
static convoy_status open_runtime(const args *a, int traced, convoy_runtime **rt, int *streams)
{
    convoy_options o;
    convoy_status status = convoy_options_init(&o);
    if (status == CONVOY_OK)
        status = convoy_options_from_env(&o);
    if (status != CONVOY_OK)
        return status;
    if (a->streams >= 0)
        o.streams = a->streams;
    else if (o.streams < 0)
        o.streams = 2; /* see the comment above usage() */
    if (!traced)
        o.trace_path = NULL;
    if (a->deterministic)
        net_deterministic_options(&o);
    *streams = o.streams;
    return convoy_runtime_create(&o, rt);
}

static void fail(const char *what, convoy_status status)
{
    fprintf(stderr, "train_fashion_mnist: %s: %s: %s\n", what, convoy_status_name(status),
            convoy_last_error_message());
#ifdef TRAIN_WITH_MPI
    MPI_Abort(MPI_COMM_WORLD, 3);
#endif
    exit(3);
}

/* The program as rank rank of ranks (1 without MPI); returns the exit code. */
static int train(int argc, char **argv, int rank, int ranks)
{
    args a;
    if (!parse_args(argc, argv, &a))
        return 2;
    if (a.batch % (a.shards * ranks) != 0 || (a.shards > 1 && ranks > 1)) {
        if (rank == 0)
            fprintf(
                stderr,
                "train_fashion_mnist: --batch %d must split into equal shards over %d rank%s and "
                "--shards %d (--shards is for one process)\n",
                a.batch, ranks, ranks == 1 ? "" : "s", a.shards);
        return 2;
    }
    /* Every rank trains and evaluates; rank 0 alone prints and writes the loss log. */
    if (rank != 0) {
        a.quiet = 1;
        a.loss_log = a.export_weights = NULL;
        if (!freopen("/dev/null", "w", stdout))
            return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    fmnist_split train, test;
    char error[4608];
    if (fmnist_load(a.data, "train", &train, error, sizeof error) != 0 ||
        fmnist_load(a.data, "t10k", &test, error, sizeof error) != 0) {
        fprintf(stderr, "train_fashion_mnist: %s\n", error);
        fprintf(stderr, "train_fashion_mnist: install Debian's dataset-fashion-mnist "
                        "(scripts/install-deps.sh does) or pass --data DIR\n");
        return 1;
    }
    const int64_t train_count = a.limit > 0 && a.limit < train.count ? a.limit : train.count;
    const int64_t test_count =
        a.test_limit > 0 && a.test_limit < test.count ? a.test_limit : test.count;
    const int64_t batches = train_count / a.batch;
    if (batches < 1) {
        fprintf(stderr, "train_fashion_mnist: --batch %d is more than the %lld training images\n",
                a.batch, (long long)train_count);
        return 2;
    }
    const char *trace = getenv("CONVOY_TRACE");
    const int traced = trace && *trace && ranks == 1; /* a communicator stays on its runtime */

    train_net net;
    net_init(&net, a.batch / (a.shards * ranks), batches, a.seed);
    net.global_batch = a.batch;
    net.pieces = a.shards;
    net.first_piece = rank;
    if (a.export_weights && net_export(&net, a.export_weights, error, sizeof error) != 0) {
        fprintf(stderr, "train_fashion_mnist: %s\n", error);
        return 1;
    }
    FILE *log = NULL;
    if (a.loss_log && !(log = fopen(a.loss_log, "w"))) {
        fprintf(stderr, "train_fashion_mnist: cannot write %s\n", a.loss_log);
        return 1;
    }
    convoy_runtime *rt = NULL;
    int streams = 0;
    convoy_status status = open_runtime(&a, traced, &rt, &streams);
    if (status != CONVOY_OK)
        fail("runtime_create", status);
    if ((status = net_open(&net, rt)) != CONVOY_OK)
        fail("creating the network's tensors", status);
#ifdef TRAIN_WITH_MPI
    if (ranks > 1) {
        convoy_comm_options comm_options;
        if ((status = convoy_comm_options_init(&comm_options)) != CONVOY_OK ||
            (status = convoy_comm_options_from_env(&comm_options)) != CONVOY_OK ||
            (status = convoy_comm_create(rt, MPI_COMM_WORLD, &comm_options, &net.comm)) !=
                CONVOY_OK)
            fail("creating the communicator", status);
        /* The same seed gives the same weights everywhere; rank 0's are broadcast all the same. */
        for (int i = 0; i < NET_PARAMS; ++i)
            if ((status = convoy_broadcast(rt, net.comm, net.param[i], 0, NULL)) != CONVOY_OK)
                fail("broadcasting the initial weights", status);
    }
#endif

    printf("convoy: %s\n", convoy_runtime_describe(rt));
    printf("data: %s: %lld training images (%lld used), %lld test images\n", a.data,
           (long long)train.count, (long long)train_count, (long long)test_count);
    printf("network: 3x3 conv 1->16 ReLU, 3x3/2 conv 16->32 ReLU, 3x3/2 conv 32->64 ReLU, 7x7 "
           "conv 64->10; %lld parameters, He init, seed %llu\n",
           (long long)net_parameter_count(), a.seed);
    printf("training: %d epoch%s of %lld batches of %d, SGD lr %g decayed linearly to 0, "
           "momentum %g, weight decay %g%s\n",
           a.epochs, a.epochs == 1 ? "" : "s", (long long)batches, a.batch, a.lr, a.momentum,
           a.weight_decay, a.deterministic ? ", deterministic mode" : "");
    if (ranks > 1 || a.shards > 1)
        printf("data parallel: each batch of %d in %d shards of %lld (%s), gradients averaged "
               "%s\n",
               a.batch, a.shards * ranks, (long long)net.batch,
               ranks > 1 ? "one per rank" : "one after another in this process",
               ranks > 1 ? "by all-reduce, one bucket per layer" : "in shard order");
    if (streams > 0)
        printf("streams: %d compute stream%s; the upload of batch k+1 overlaps the computation "
               "of batch k (two input tensors in turn)\n",
               streams, streams == 1 ? "" : "s");
    else
        printf("streams: none, every task runs inline at submit (no overlap of uploads)\n");
    if (traced)
        printf("trace: the first %d steps run on a runtime of their own, which writes a Chrome "
               "trace to %s\n",
               a.trace_steps, trace);

    int64_t *order = malloc((size_t)train_count * sizeof *order);
    if (!order) {
        fprintf(stderr, "train_fashion_mnist: out of memory\n");
        return 1;
    }
    net_rng shuffle_rng;
    net_rng_seed(&shuffle_rng, a.seed + 1);
    const int64_t total_steps = (int64_t)a.epochs * batches;
    double train_seconds = 0.0;
    double accuracy = 0.0;
    int64_t step = 0;
    for (int epoch = 1; epoch <= a.epochs; ++epoch) {
        shuffle(&shuffle_rng, order, train_count);
        progress p = {isatty(STDOUT_FILENO),
                      a.quiet,
                      epoch,
                      a.epochs,
                      batches,
                      a.batch,
                      0,
                      0.0,
                      now_s(),
                      0.0,
                      0};
        p.last_print = p.start;
        if ((status = net_begin_epoch(&net, &train, order)) != CONVOY_OK)
            fail("uploading the first batch", status);
        for (int64_t b = 0; b < batches; ++b, ++step) {
            if (traced && step == a.trace_steps) {
                /* The traced runtime writes its trace at destroy; the rest runs untraced. */
                convoy_runtime *next = NULL;
                if ((status = open_runtime(&a, 0, &next, &streams)) != CONVOY_OK ||
                    (status = net_move(&net, next, &train, order, b)) != CONVOY_OK)
                    fail("moving to an untraced runtime", status);
                convoy_runtime_destroy(rt);
                rt = next;
                printf("%strace: %s written (%d steps)\n", p.tty && !a.quiet ? "\n" : "", trace,
                       a.trace_steps);
            }
            const float lr =
                (float)a.lr * (float)((double)(total_steps - step) / (double)total_steps);
            const convoy_sgd_params sgd = {lr, (float)a.momentum, (float)a.weight_decay};
            if ((status = net_step(&net, &train, order, b, &sgd)) != CONVOY_OK)
                fail("submitting a step", status);
            progress_poll(&p, &net, b + 1, 0);
        }
        if ((status = convoy_runtime_synchronize(rt)) != CONVOY_OK)
            fail("training", status);
        const double seconds = now_s() - p.start;
        progress_poll(&p, &net, batches, 1);
        if (!a.quiet && p.tty)
            progress_line(&p, 1);
        train_seconds += seconds;
        const double eval_start = now_s();
        int64_t correct = 0;
        if ((status = net_evaluate(&net, &test, test_count, &correct)) != CONVOY_OK)
            fail("evaluating", status);
        accuracy = (double)correct / (double)test_count;
        const double train_loss = p.loss_sum / (double)batches;
        printf("epoch %d/%d: train loss %.4f, test accuracy %.2f%% (%lld/%lld), %.1f s "
               "(%.0f images/s), evaluation %.1f s\n",
               epoch, a.epochs, train_loss, 100.0 * accuracy, (long long)correct,
               (long long)test_count, seconds, (double)(batches * a.batch) / seconds,
               now_s() - eval_start);
        if (log) {
            for (int64_t i = 0; i < batches; ++i)
                fprintf(log, "step %lld %.9g\n", (long long)(step - batches + i),
                        (double)net.step_loss[i]);
            fprintf(log,
                    "epoch %d train_loss %.9g test_accuracy %.6f seconds %.3f "
                    "images_per_second %.1f\n",
                    epoch, train_loss, accuracy, seconds, (double)(batches * a.batch) / seconds);
        }
    }
    printf("final: test accuracy %.2f%% after %d epoch%s; %.1f s of training, %.0f images/s\n",
           100.0 * accuracy, a.epochs, a.epochs == 1 ? "" : "s", train_seconds,
           (double)(total_steps * a.batch) / train_seconds);
    if (log)
        fclose(log);
    convoy_comm_destroy(net.comm);
    net.comm = NULL;
    net_close(&net);
    convoy_runtime_destroy(rt);
    free(order);
    fmnist_free(&train);
    fmnist_free(&test);
    return 0;
}

int main(int argc, char **argv)
{
#ifdef TRAIN_WITH_MPI
    int provided = 0, rank = 0, ranks = 1;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "train_fashion_mnist: MPI_Init_thread failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    const int code = train(argc, argv, rank, ranks);
    MPI_Finalize();
    return code;
#else
    return train(argc, argv, 0, 1);
#endif
}
