/* task_overhead: the scheduler's cost per task, measured with 100,000 empty
 * custom tasks on a CPU runtime with two host streams (and on CUDA when a GPU
 * is usable): submit them all, then
 * convoy_runtime_synchronize, and divide the batch time by the task count.
 *
 * Three batches: independent tasks with no accesses, independent tasks each
 * writing its own tensor, and one chain of READ_WRITE tasks on one tensor.
 * Median of 5 runs after a warm-up. Targets: <= 0.5 us independent, <= 1.0 us
 * chained. Usage: task_overhead [task_count]. */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "convoy.h"
#include "suite.h"

#define DEFAULT_TASKS 100000
#define RUNS 5

enum { MODE_NO_ACCESS, MODE_OWN_TENSOR, MODE_CHAINED };

static atomic_long executed;

static convoy_status empty_task(const convoy_task_context *context, void *user_data)
{
    (void)context;
    (void)user_data;
    atomic_fetch_add_explicit(&executed, 1, memory_order_relaxed);
    return CONVOY_OK;
}

#define SUITE_PROGRAM "task_overhead"
#define CHECK(call) SUITE_CHECK(call)

/* One batch: submit count tasks, synchronize. Returns seconds. */
static double batch(convoy_runtime *rt, int mode, long count, convoy_tensor **tensors)
{
    atomic_store(&executed, 0);
    double t0 = suite_now();
    for (long i = 0; i < count; ++i) {
        convoy_access access;
        size_t n = 0;
        if (mode == MODE_OWN_TENSOR) {
            access.tensor = tensors[i];
            access.mode = CONVOY_WRITE;
            n = 1;
        } else if (mode == MODE_CHAINED) {
            access.tensor = tensors[0];
            access.mode = CONVOY_READ_WRITE;
            n = 1;
        }
        CHECK(convoy_submit(rt, empty_task, NULL, n ? &access : NULL, n, "empty", NULL));
    }
    CHECK(convoy_runtime_synchronize(rt));
    double elapsed = suite_now() - t0;
    long ran = atomic_load(&executed);
    if (ran != count) {
        fprintf(stderr, "task_overhead: %ld of %ld tasks ran before synchronize returned\n", ran,
                count);
        exit(1);
    }
    return elapsed;
}

/* Runs the three batches on one device and prints a row for each. */
static void measure(convoy_device device, long count, double target_none, double target_own,
                    double target_chained)
{
    convoy_options o;
    CHECK(convoy_options_init(&o));
    CHECK(convoy_options_from_env(&o)); /* CONVOY_TRACE, CONVOY_PROFILE, ... */
    o.device = device;
    if (device == CONVOY_DEVICE_CPU)
        o.streams = 2;
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(&o, &rt));
    printf("runtime: %s\n", convoy_runtime_describe(rt));
    printf("%ld empty custom tasks per batch, submit all then synchronize; median of %d\n\n", count,
           RUNS);

    convoy_tensor **tensors = malloc((size_t)count * sizeof *tensors);
    if (!tensors) {
        fprintf(stderr, "task_overhead: out of host memory\n");
        exit(1);
    }
    const int64_t one = 1;
    for (long i = 0; i < count; ++i)
        CHECK(convoy_tensor_create(rt, 1, &one, &tensors[i]));

    const struct {
        int mode;
        const char *label;
        double target_us;
    } cases[] = {
        {MODE_NO_ACCESS, "independent (no accesses)", target_none},
        {MODE_OWN_TENSOR, "independent (own tensor, WRITE)", target_own},
        {MODE_CHAINED, "chained (one tensor, READ_WRITE)", target_chained},
    };
    printf("%-34s %9s %13s %9s\n", "batch", "us/task", "min-max", "target");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        double times[RUNS];
        batch(rt, cases[c].mode, count, tensors);
        for (int r = 0; r < RUNS; ++r)
            times[r] = batch(rt, cases[c].mode, count, tensors);
        double us = suite_median(times, RUNS) / (double)count * 1e6;
        /* suite_median sorted times, so the spread is its ends. */
        printf("%-34s %9.3f %6.3f-%-6.3f %6s%.1f %5s\n", cases[c].label, us,
               times[0] / (double)count * 1e6, times[RUNS - 1] / (double)count * 1e6,
               "<= ", cases[c].target_us, us <= cases[c].target_us ? "ok" : "MISS");
        fflush(stdout);
    }

    for (long i = 0; i < count; ++i)
        convoy_tensor_destroy(tensors[i]);
    free(tensors);
    convoy_runtime_destroy(rt);
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? strtol(argv[1], NULL, 10) : DEFAULT_TASKS;
    if (count < 1) {
        fprintf(stderr, "usage: %s [task_count >= 1]\n", argv[0]);
        return 1;
    }
    measure(CONVOY_DEVICE_CPU, count, 0.5, 0.5, 1.0);
    /* On a GPU machine the same batches on the CUDA runtime (default
     * streams): the per-task submission target there is 5 us. */
    convoy_options probe;
    CHECK(convoy_options_init(&probe));
    probe.device = CONVOY_DEVICE_CUDA;
    convoy_runtime *cuda = NULL;
    if (convoy_runtime_create(&probe, &cuda) == CONVOY_OK) {
        convoy_runtime_destroy(cuda);
        printf("\n");
        measure(CONVOY_DEVICE_CUDA, count, 5.0, 5.0, 5.0);
    } else {
        printf("\nno CUDA runtime (%s): GPU figures not measured\n", convoy_last_error_message());
    }
    return 0;
}
