/* allreduce_bench: the all-reduce bandwidth of convoy's collectives against MPI_Allreduce on
 * the same communicator, from 4 KiB to 128 MiB of floats, on CPU runtimes:
 *
 *   mpirun -np 2 build/bench/allreduce_bench [max_MiB]
 *
 * For each size: the median time of 7 runs (after a warm-up) of MPI_Allreduce in place, of
 * MPI_Iallreduce in place waited for at once (the nonblocking algorithm convoy polls), of
 * convoy_allreduce (agreement, copy into the communicator's buffer, MPI_Iallreduce polled,
 * copy back) and of convoy_allreduce in deterministic mode (rank-order sum: all-to-all of the
 * slices, sum, all-gather), each as the algorithm bandwidth (bytes / time) and the bus
 * bandwidth (2 (N - 1) / N x bytes / time, what each rank's link carries in a ring), the
 * figures docs/DATA_PARALLEL.md quotes. Rank 0 prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convoy.h"
#include "convoy_mpi.h"

#define RUNS 7

static int rank, size;

#define CHECK(call)                                                                                \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK) {                                                                     \
            fprintf(stderr, "rank %d: %s: %s: %s\n", rank, #call, convoy_status_name(s_),          \
                    convoy_last_error_message());                                                  \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median over RUNS of the slowest rank's time. */
static double median(double *times)
{
    for (int i = 0; i < RUNS; ++i) {
        double slowest = 0.0;
        MPI_Allreduce(&times[i], &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        times[i] = slowest;
    }
    qsort(times, RUNS, sizeof *times, compare_doubles);
    return times[RUNS / 2];
}

static double time_mpi(float *data, int64_t n)
{
    double times[RUNS];
    MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (int i = 0; i < RUNS; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        double start = now_s();
        MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        times[i] = now_s() - start;
    }
    return median(times);
}

/* The nonblocking collective convoy uses, waited for at once: what MPI's nonblocking
 * algorithms cost, apart from convoy. */
static double time_mpi_nonblocking(float *data, int64_t n)
{
    double times[RUNS];
    for (int i = -1; i < RUNS; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        double start = now_s();
        MPI_Request request;
        MPI_Iallreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request);
        MPI_Wait(&request, MPI_STATUS_IGNORE);
        if (i >= 0)
            times[i] = now_s() - start;
    }
    return median(times);
}

static double time_convoy(convoy_runtime *rt, convoy_comm *comm, convoy_tensor *t)
{
    double times[RUNS];
    for (int i = -1; i < RUNS; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        double start = now_s();
        convoy_task *task = NULL;
        CHECK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, &task));
        CHECK(convoy_task_wait(task));
        convoy_task_release(task);
        if (i >= 0)
            times[i] = now_s() - start;
    }
    return median(times);
}

static convoy_runtime *runtime(int deterministic)
{
    convoy_options o;
    CHECK(convoy_options_init(&o));
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 1;
    o.blas_threads = 1;
    o.deterministic = deterministic;
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(&o, &rt));
    return rt;
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int64_t max_bytes = (int64_t)(argc > 1 ? atoi(argv[1]) : 128) << 20;
    convoy_runtime *plain = runtime(0), *ordered = runtime(1);
    convoy_comm *plain_comm = NULL, *ordered_comm = NULL;
    CHECK(convoy_comm_create(plain, MPI_COMM_WORLD, NULL, &plain_comm));
    CHECK(convoy_comm_create(ordered, MPI_COMM_WORLD, NULL, &ordered_comm));
    if (rank == 0) {
        printf("%d ranks; %s\n", size, convoy_runtime_describe(plain));
        printf("%10s  %22s  %22s  %22s  %22s\n", "bytes", "MPI_Allreduce", "MPI_Iallreduce",
               "convoy_allreduce", "convoy, rank order");
        printf("%10s  %10s %11s  %10s %11s  %10s %11s  %10s %11s\n", "", "ms", "busBW GB/s", "ms",
               "busBW GB/s", "ms", "busBW GB/s", "ms", "busBW GB/s");
    }
    const double bus = 2.0 * (size - 1) / size;
    for (int64_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
        int64_t n = bytes / (int64_t)sizeof(float);
        float *host = malloc((size_t)bytes);
        for (int64_t i = 0; i < n; ++i)
            host[i] = (float)(i % 7);
        double t_mpi = time_mpi(host, n);
        double t_nonblocking = time_mpi_nonblocking(host, n);
        convoy_tensor *a = NULL, *b = NULL;
        CHECK(convoy_tensor_create(plain, 1, &n, &a));
        CHECK(convoy_tensor_create(ordered, 1, &n, &b));
        CHECK(convoy_upload(plain, a, host, (size_t)n, NULL));
        CHECK(convoy_upload(ordered, b, host, (size_t)n, NULL));
        CHECK(convoy_runtime_synchronize(plain));
        CHECK(convoy_runtime_synchronize(ordered));
        double t_plain = time_convoy(plain, plain_comm, a);
        double t_ordered = time_convoy(ordered, ordered_comm, b);
        if (rank == 0)
            printf("%10lld  %10.3f %11.2f  %10.3f %11.2f  %10.3f %11.2f  %10.3f %11.2f\n",
                   (long long)bytes, t_mpi * 1e3, bus * (double)bytes / t_mpi * 1e-9,
                   t_nonblocking * 1e3, bus * (double)bytes / t_nonblocking * 1e-9, t_plain * 1e3,
                   bus * (double)bytes / t_plain * 1e-9, t_ordered * 1e3,
                   bus * (double)bytes / t_ordered * 1e-9);
        convoy_tensor_destroy(a);
        convoy_tensor_destroy(b);
        free(host);
    }
    convoy_comm_destroy(plain_comm);
    convoy_comm_destroy(ordered_comm);
    convoy_runtime_destroy(plain);
    convoy_runtime_destroy(ordered);
    MPI_Finalize();
    return 0;
}
