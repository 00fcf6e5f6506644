/* thread_pools: what one convolution's threads do to the next one's. Two suite layers, A and
 * B, run in turn: A then B back to back, and A then B each after 30 ms of idling, and the
 * medians of each are printed with the algorithm the runtime chose. With A on the gemm
 * algorithm and B on a oneDNN one, this shows whether the threads A computed with still hold
 * the cores when B starts (OpenBLAS's threads spin for about 0.1 s after a GEMM).
 *
 * Usage: thread_pools [suite.txt] [layer_A direction_A layer_B direction_B]; the default is the
 * stem's data gradient (r50_conv1_7x7s2 backward_data) then r50_res2_3x3 forward. The
 * CONVOY_* variables choose the algorithms: CONVOY_EXCLUDE=onednn:plain puts the stem's data
 * gradient on gemm. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convoy.h"
#include "suite.h"

#define RUNS 21
#define WARMUP 2
#define IDLE_NS (30 * 1000 * 1000)

#define SUITE_PROGRAM "thread_pools"
#define CHECK(call) SUITE_CHECK(call)

static const char *const direction_names[3] = {"forward", "backward_data", "backward_filter"};

typedef struct layer_run {
    const suite_layer *layer;
    int direction;
    convoy_conv_params params;
    int64_t in[5], fl[5], out[5];
    convoy_tensor *t[3]; /* input, filters, output in forward roles */
    char algorithm[64];
} layer_run;

static convoy_tensor *make(convoy_runtime *rt, int rank, const int64_t *dims, uint64_t seed)
{
    convoy_tensor *t = NULL;
    CHECK(convoy_tensor_create(rt, rank, dims, &t));
    size_t count = (size_t)suite_numel(rank, dims);
    float *host = malloc((count ? count : 1) * sizeof *host);
    if (!host) {
        fprintf(stderr, "thread_pools: out of host memory\n");
        exit(1);
    }
    suite_fill_random(host, count, seed);
    convoy_task *task = NULL;
    CHECK(convoy_upload(rt, t, host, count, &task));
    CHECK(convoy_task_wait(task));
    convoy_task_release(task);
    free(host);
    return t;
}

static void open_layer(convoy_runtime *rt, const suite *s, const char *name, const char *dir,
                       layer_run *run)
{
    run->layer = suite_find(s, name);
    run->direction = -1;
    for (int d = 0; d < 3; ++d) {
        if (!strcmp(dir, direction_names[d]))
            run->direction = d;
    }
    if (!run->layer || run->direction < 0) {
        fprintf(stderr, "thread_pools: no layer '%s' or direction '%s'\n", name, dir);
        exit(1);
    }
    suite_dims(run->layer, run->in, run->fl, run->out);
    CHECK(suite_params(run->layer, &run->params));
    int rank = run->layer->nd + 2;
    run->t[0] = make(rt, rank, run->in, 1);
    run->t[1] = make(rt, rank, run->fl, 2);
    run->t[2] = make(rt, rank, run->out, 3);
    convoy_conv_plan_info info;
    CHECK(convoy_conv_explain(rt, &run->params, (convoy_conv_direction)run->direction, run->in,
                              run->fl, run->out, &info));
    snprintf(run->algorithm, sizeof run->algorithm, "%s", info.algorithm);
}

static double call(convoy_runtime *rt, const layer_run *run)
{
    convoy_task *task = NULL;
    convoy_tensor *const *t = run->t;
    double t0 = suite_now();
    if (run->direction == 0)
        CHECK(convoy_conv_forward(rt, &run->params, t[0], t[1], t[2], &task));
    else if (run->direction == 1)
        CHECK(convoy_conv_backward_data(rt, &run->params, t[1], t[2], t[0], &task));
    else
        CHECK(convoy_conv_backward_filter(rt, &run->params, t[0], t[2], t[1], &task));
    CHECK(convoy_task_wait(task));
    convoy_task_release(task);
    return suite_now() - t0;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "bench/conv_suite.txt";
    const char *a_name = argc > 5 ? argv[2] : "r50_conv1_7x7s2";
    const char *a_dir = argc > 5 ? argv[3] : "backward_data";
    const char *b_name = argc > 5 ? argv[4] : "r50_res2_3x3";
    const char *b_dir = argc > 5 ? argv[5] : "forward";
    suite s;
    char err[512];
    if (suite_load(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "thread_pools: %s\n", err);
        return 1;
    }
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(NULL, &rt));
    printf("runtime: %s\n", convoy_runtime_describe(rt));
    layer_run a, b;
    open_layer(rt, &s, a_name, a_dir, &a);
    open_layer(rt, &s, b_name, b_dir, &b);
    /* times[idle][0]: A, times[idle][1]: B */
    double times[2][2][RUNS];
    const struct timespec idle = {0, IDLE_NS};
    for (int r = -WARMUP; r < RUNS; ++r) {
        for (int idling = 0; idling < 2; ++idling) {
            if (idling)
                nanosleep(&idle, NULL);
            double ta = call(rt, &a);
            if (idling)
                nanosleep(&idle, NULL);
            double tb = call(rt, &b);
            if (r >= 0) {
                times[idling][0][r] = ta;
                times[idling][1][r] = tb;
            }
        }
    }
    printf("median of %d, ms      back to back   after %d ms idle\n", RUNS, IDLE_NS / 1000000);
    const layer_run *runs[2] = {&a, &b};
    for (int k = 0; k < 2; ++k) {
        printf("%c %s %s (%s): %10.2f %14.2f\n", 'A' + k, runs[k]->layer->name,
               direction_names[runs[k]->direction], runs[k]->algorithm,
               suite_median(times[0][k], RUNS) * 1e3, suite_median(times[1][k], RUNS) * 1e3);
    }
    for (int k = 0; k < 3; ++k) {
        convoy_tensor_destroy(a.t[k]);
        convoy_tensor_destroy(b.t[k]);
    }
    convoy_runtime_destroy(rt);
    suite_free(&s);
    return 0;
}
