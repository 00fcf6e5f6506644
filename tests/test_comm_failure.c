/* A rank that fails mid-step must not hang the others: run by CTest under mpirun, one mode
 * per run (argv[1]), with a one-second timeout.
 *
 *   absent       the last rank never submits the step's all-reduce (it goes on to destroy its
 *                communicator and finalize MPI); every other rank fails with
 *                CONVOY_ERR_BACKEND naming it, after the timeout and within twice it, and the
 *                communicator then refuses further collectives at once
 *   coordinator  the same with rank 0, which coordinates the agreements, missing: the others
 *                fail naming rank 0
 *   exit         the last rank exits (_exit, no MPI_Finalize) in the middle of the step; the
 *                others fail as with absent (CTest runs this with Open MPI's recovery on, so
 *                mpirun does not kill them first)
 *   data         rank 1 agrees to the collective and then leaves its data exchange out (the
 *                test hook CONVOY_TEST_COMM_SKIP_DATA=1:3, as a rank dying right after
 *                agreeing would): rank 0 fails when the exchange does not finish in time
 *
 * Each surviving rank prints "PASS" and returns 0; any check that fails exits 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convoy.h"
#include "convoy_mpi.h"

#define TIMEOUT_MS 1000
#define SLACK_MS 5000 /* a loaded machine schedules late */

static int rank, size;

#define REQUIRE(condition, ...)                                                                    \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            fprintf(stderr, "rank %d: check failed at line %d: %s: ", rank, __LINE__, #condition); \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        REQUIRE(s_ == CONVOY_OK, "%s: %s", convoy_status_name(s_), convoy_last_error_message());   \
    } while (0)

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static convoy_status slow_step(const convoy_task_context *c, void *user_data)
{
    (void)c;
    (void)user_data;
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    return CONVOY_OK;
}

/* Submits an all-reduce of t, waits, and checks how it failed and how long that took. */
static void expect_failure(convoy_runtime *rt, convoy_comm *comm, convoy_tensor *t,
                           convoy_status status, const char *needle, double min_ms, double max_ms)
{
    double start = now_ms();
    convoy_task *task = NULL;
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, &task));
    convoy_status got = convoy_task_wait(task);
    double elapsed = now_ms() - start;
    const char *message = convoy_last_error_message();
    printf("rank %d: %s after %.0f ms: %s\n", rank, convoy_status_name(got), elapsed, message);
    fflush(stdout);
    REQUIRE(got == status, "%s", convoy_status_name(got));
    REQUIRE(strstr(message, needle), "the message lacks '%s'", needle);
    REQUIRE(elapsed >= min_ms && elapsed <= max_ms, "%.0f ms, expected %.0f..%.0f", elapsed, min_ms,
            max_ms);
    convoy_task_release(task);
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *mode = argc > 1 ? argv[1] : "";
    const int last = size - 1;

    convoy_options o;
    CHECK_OK(convoy_options_init(&o));
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 2;
    o.blas_threads = 1;
    convoy_runtime *rt = NULL;
    CHECK_OK(convoy_runtime_create(&o, &rt));
    convoy_comm_options co;
    CHECK_OK(convoy_comm_options_init(&co));
    co.timeout_ms = TIMEOUT_MS;
    convoy_comm *comm = NULL;
    CHECK_OK(convoy_comm_create(rt, MPI_COMM_WORLD, &co, &comm));

    const int64_t n = 256;
    float host[256];
    for (int i = 0; i < 256; ++i)
        host[i] = 1.0f;
    convoy_tensor *t = NULL;
    CHECK_OK(convoy_tensor_create(rt, 1, &n, &t));
    CHECK_OK(convoy_upload(rt, t, host, 256, NULL));
    /* A first step every rank takes (collective #2; comm_create's agreement was #1). */
    convoy_task *warm = NULL;
    CHECK_OK(convoy_allreduce(rt, comm, t, CONVOY_REDUCE_SUM, &warm));
    CHECK_OK(convoy_task_wait(warm));
    convoy_task_release(warm);

    convoy_access access = {t, CONVOY_READ_WRITE};
    CHECK_OK(convoy_submit(rt, slow_step, NULL, &access, 1, "backward", NULL));
    char needle[96];
    int survivor = 1;
    if (strcmp(mode, "absent") == 0 || strcmp(mode, "exit") == 0) {
        if (rank == last) {
            survivor = 0;
            if (strcmp(mode, "exit") == 0)
                _exit(0);
        } else {
            snprintf(needle, sizeof needle, "rank %d did not take part within %d ms", last,
                     TIMEOUT_MS);
            expect_failure(rt, comm, t, CONVOY_ERR_BACKEND, needle, TIMEOUT_MS * 0.9,
                           2 * TIMEOUT_MS + SLACK_MS);
        }
    } else if (strcmp(mode, "coordinator") == 0) {
        if (rank == 0) {
            survivor = 0;
        } else {
            expect_failure(rt, comm, t, CONVOY_ERR_BACKEND, "no answer from rank 0",
                           2 * TIMEOUT_MS * 0.9, 2 * TIMEOUT_MS + SLACK_MS);
        }
    } else if (strcmp(mode, "data") == 0) {
        if (rank == 1)
            expect_failure(rt, comm, t, CONVOY_ERR_BACKEND, "left out by the test hook", 0,
                           SLACK_MS);
        else
            expect_failure(rt, comm, t, CONVOY_ERR_BACKEND,
                           "did not finish within 1000 ms, after every rank had agreed",
                           TIMEOUT_MS * 0.9, TIMEOUT_MS + SLACK_MS);
    } else {
        REQUIRE(0, "unknown mode '%s'", mode);
    }
    if (survivor) {
        /* The communicator is unusable now: the next collective fails at once, naming why. */
        CHECK_OK(convoy_upload(rt, t, host, 256, NULL));
        expect_failure(rt, comm, t, CONVOY_ERR_BACKEND, "unusable since an earlier failure", 0,
                       SLACK_MS / 2);
    }
    convoy_tensor_destroy(t);
    convoy_comm_destroy(comm);
    convoy_runtime_destroy(rt);
    printf("rank %d: PASS (%s)\n", rank, survivor ? "failed cleanly" : "left the step");
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
