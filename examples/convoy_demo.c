/* convoy_demo: runs every layer of the convolution suite in all three
 * directions on the default device and prints, per row, the implementation
 * the runtime chose, the median time and the GFLOP/s.
 *
 * Usage: convoy_demo [suite.txt] [layer ...]. Each direction gets one warm-up
 * call (planning, pool fill) and then timed calls until 0.3 s have passed or 5
 * calls ran. A call slower than 1 s is timed once, and one slower than 4 s is
 * not repeated at all (its warm-up time is shown, marked '*'), which keeps the
 * whole suite within about two minutes on a 2-core CPU. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"
#include "suite.h"

#define MIN_TIME_S 0.3
#define MAX_RUNS 5
#define ONE_RUN_S 1.0
#define NO_REPEAT_S 4.0

static const char *const direction_names[3] = {"forward", "backward_data", "backward_filter"};

#define SUITE_PROGRAM "convoy_demo"
#define CHECK(call) SUITE_CHECK(call)

/* The tensors one layer needs: x (input), w (filters), y (output, also used as
 * grad_output), dx (grad_input), dw (grad_filters). */
typedef struct layer_tensors {
    convoy_tensor *x, *w, *y, *dx, *dw;
} layer_tensors;

static convoy_tensor *make_tensor(convoy_runtime *rt, int ndim, const int64_t *dims)
{
    convoy_tensor *t = NULL;
    CHECK(convoy_tensor_create(rt, ndim, dims, &t));
    return t;
}

static void upload_random(convoy_runtime *rt, convoy_tensor *t, int ndim, const int64_t *dims,
                          uint64_t seed)
{
    size_t count = (size_t)suite_numel(ndim, dims);
    float *host = malloc((count ? count : 1) * sizeof *host);
    if (!host) {
        fprintf(stderr, "convoy_demo: out of host memory (%zu floats)\n", count);
        exit(1);
    }
    suite_fill_random(host, count, seed);
    convoy_task *task = NULL;
    CHECK(convoy_upload(rt, t, host, count, &task));
    CHECK(convoy_task_wait(task));
    convoy_task_release(task);
    free(host);
}

static convoy_status submit(convoy_runtime *rt, const convoy_conv_params *p, int direction,
                            const layer_tensors *t, convoy_task **task)
{
    switch (direction) {
    case CONVOY_CONV_FORWARD:
        return convoy_conv_forward(rt, p, t->x, t->w, t->y, task);
    case CONVOY_CONV_BACKWARD_DATA:
        return convoy_conv_backward_data(rt, p, t->w, t->y, t->dx, task);
    default:
        return convoy_conv_backward_filter(rt, p, t->x, t->y, t->dw, task);
    }
}

/* One call, submit to completion, in seconds. */
static double run_once(convoy_runtime *rt, const convoy_conv_params *p, int direction,
                       const layer_tensors *t)
{
    convoy_task *task = NULL;
    double t0 = suite_now();
    CHECK(submit(rt, p, direction, t, &task));
    CHECK(convoy_task_wait(task));
    double elapsed = suite_now() - t0;
    convoy_task_release(task);
    return elapsed;
}

static void run_layer(convoy_runtime *rt, const suite_layer *l, size_t index, size_t count)
{
    int64_t in[5], fl[5], out[5];
    int nd2 = l->nd + 2;
    char a[64], b[64], c[64];
    suite_dims(l, in, fl, out);
    double flops = suite_flops(l);
    printf("[%2zu/%zu] %s: %s * %s -> %s, stride %lld, pad %lld, dilation %lld, groups %lld, "
           "%.2f GFLOP per call\n",
           index + 1, count, l->name, suite_dims_text(nd2, in, a, sizeof a),
           suite_dims_text(nd2, fl, b, sizeof b), suite_dims_text(nd2, out, c, sizeof c),
           (long long)l->stride[0], (long long)l->pad[0], (long long)l->dilation[0],
           (long long)l->groups, flops * 1e-9);
    fflush(stdout);

    convoy_conv_params p;
    CHECK(suite_params(l, &p));
    layer_tensors t;
    t.x = make_tensor(rt, nd2, in);
    t.w = make_tensor(rt, nd2, fl);
    t.y = make_tensor(rt, nd2, out);
    t.dx = make_tensor(rt, nd2, in);
    t.dw = make_tensor(rt, nd2, fl);
    upload_random(rt, t.x, nd2, in, 1);
    upload_random(rt, t.w, nd2, fl, 2);
    upload_random(rt, t.y, nd2, out, 3);

    for (int d = 0; d < 3; ++d) {
        convoy_conv_plan_info info;
        CHECK(convoy_conv_explain(rt, &p, (convoy_conv_direction)d, in, fl, out, &info));
        double warm = run_once(rt, &p, d, &t);
        double times[MAX_RUNS];
        int runs = 0;
        int max_runs = warm > NO_REPEAT_S ? 0 : warm > ONE_RUN_S ? 1 : MAX_RUNS;
        double spent = 0.0;
        while (runs < max_runs && (runs == 0 || spent < MIN_TIME_S)) {
            times[runs] = run_once(rt, &p, d, &t);
            spent += times[runs];
            ++runs;
        }
        double median = runs ? suite_median(times, (size_t)runs) : warm;
        printf("  %-18s %-16s %-8s %-24.24s %10.2f%s %9.1f %5d %10.1f\n", l->name,
               direction_names[d], info.implementation, info.algorithm, median * 1e3,
               runs ? " " : "*", flops / median * 1e-9, runs, warm * 1e3);
        fflush(stdout);
    }
    CHECK(convoy_runtime_synchronize(rt));
    convoy_tensor_destroy(t.x);
    convoy_tensor_destroy(t.w);
    convoy_tensor_destroy(t.y);
    convoy_tensor_destroy(t.dx);
    convoy_tensor_destroy(t.dw);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "bench/conv_suite.txt";
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: %s [suite.txt] [layer ...]\n", argv[0]);
        return 0;
    }
    suite s;
    char err[512];
    if (suite_load(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "convoy_demo: %s\n", err);
        return 1;
    }
    for (int i = 2; i < argc; ++i) {
        if (!suite_find(&s, argv[i])) {
            fprintf(stderr, "convoy_demo: no layer '%s' in %s\n", argv[i], path);
            return 1;
        }
    }

    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(NULL, &rt));
    printf("runtime: %s\n", convoy_runtime_describe(rt));
    printf("suite %s: %zu layers; ms is the median of up to %d calls after 1 warm-up call "
           "(* = warm-up only);\nfirst ms is the warm-up call (planning, tuning, pool fill)\n\n",
           path, s.count, MAX_RUNS);
    printf("  %-18s %-16s %-8s %-24s %11s %9s %5s %10s\n", "layer", "direction", "impl",
           "algorithm", "ms", "GFLOP/s", "runs", "first ms");
    fflush(stdout);

    double t0 = suite_now();
    size_t todo = argc > 2 ? (size_t)(argc - 2) : s.count;
    size_t done = 0;
    for (size_t i = 0; i < s.count; ++i) {
        int wanted = argc <= 2;
        for (int a = 2; a < argc; ++a)
            wanted = wanted || !strcmp(argv[a], s.layers[i].name);
        if (wanted)
            run_layer(rt, &s.layers[i], done++, todo);
    }
    printf("\n%zu layers x 3 directions in %.1f s\n", done, suite_now() - t0);
    convoy_runtime_destroy(rt);
    suite_free(&s);
    return 0;
}
