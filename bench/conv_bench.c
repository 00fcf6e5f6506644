/* conv_bench: the machine's OpenBLAS sgemm rate at 2048^3, then convoy's rate
 * on every suite layer, and on the CPU the ratio of the two beside the
 * targets (dense 3x3 / 3x3x3 layers >= 70% of sgemm, the 1x1 layer >= 85%).
 *
 * Usage: conv_bench [options] [suite.txt] [layer ...]. Every figure is the
 * median of at least 5 calls after one warm-up call, or of exactly N calls
 * after W warm-ups with --runs=N --warmup=W. On a CPU runtime only the
 * forward direction is measured (the targets are set for it) unless
 * CONV_BENCH_DIRECTIONS=all asks for all three; on a CUDA runtime all three
 * directions are, and the CPU sgemm ratio is not shown.
 *
 * Machine-readable output (bench/compare_pytorch.py reads it):
 *   --csv    one CSV row per measurement instead of the table:
 *              sgemm,start,GFLOP/s,threads
 *              runtime,"description"
 *              conv,layer,direction,implementation,algorithm,ms,GFLOP/s,runs,workspace_bytes
 *              sgemm,end,GFLOP/s,drift_percent
 *   --serve  CSV, with requests read from standard input instead ("layer NAME"
 *            measures one layer; "open NAME", "time DIRECTION RUNS WARMUP",
 *            "call DIRECTION", "close" time calls of one layer; "sgemm" measures
 *            the baseline again; see serve()).
 *            One runtime serves every request, so a comparison script can
 *            interleave its own measurements with convoy's, call by call.
 *   --no-sgemm  skips the baseline. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "convoy.h"
#include "suite.h"

#define SGEMM_SIZE 2048
#define MIN_RUNS 5
#define MAX_RUNS 50
#define MIN_TIME_S 0.25

static const char *const direction_names[3] = {"forward", "backward_data", "backward_filter"};

#define SUITE_PROGRAM "conv_bench"
#define CHECK(call) SUITE_CHECK(call)

/* What the command line asked for. */
typedef struct bench_options {
    int csv;
    int serve;
    int sgemm;
    int runs;   /* 0: adaptive (at least MIN_RUNS, MIN_TIME_S) */
    int warmup; /* warm-up calls before the timed ones */
} bench_options;

static float *host_alloc(size_t count)
{
    float *p = malloc((count ? count : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "conv_bench: out of host memory (%zu floats)\n", count);
        exit(1);
    }
    return p;
}

/* Median GFLOP/s of cblas_sgemm C = A * B at n x n x n, after one warm-up. */
static double sgemm_gflops(int n)
{
    size_t count = (size_t)n * (size_t)n;
    float *a = host_alloc(count), *b = host_alloc(count), *c = host_alloc(count);
    suite_fill_random(a, count, 11);
    suite_fill_random(b, count, 12);
    double rates[MIN_RUNS];
    for (int r = -1; r < MIN_RUNS; ++r) {
        double t0 = suite_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double t = suite_now() - t0;
        if (r >= 0)
            rates[r] = 2.0 * (double)n * (double)n * (double)n / t * 1e-9;
    }
    free(a);
    free(b);
    free(c);
    /* OpenBLAS's threads spin for about 0.1 s after a GEMM before they sleep; measured meanwhile,
     * a convolution on other threads would share the cores with them. */
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    return suite_median(rates, MIN_RUNS);
}

static convoy_tensor *make_random(convoy_runtime *rt, int ndim, const int64_t *dims, uint64_t seed)
{
    convoy_tensor *t = NULL;
    CHECK(convoy_tensor_create(rt, ndim, dims, &t));
    size_t count = (size_t)suite_numel(ndim, dims);
    float *host = host_alloc(count);
    suite_fill_random(host, count, seed);
    convoy_task *task = NULL;
    CHECK(convoy_upload(rt, t, host, count, &task));
    CHECK(convoy_task_wait(task));
    convoy_task_release(task);
    free(host);
    return t;
}

/* One layer's parameters, dims and tensors: x (input), w (filters), y (output, also the
 * output gradient), dx (input gradient), dw (filter gradient). */
typedef struct layer_run {
    const suite_layer *layer;
    convoy_conv_params params;
    int64_t in[5], fl[5], out[5];
    convoy_tensor *t[5];
} layer_run;

static void layer_open(convoy_runtime *rt, const suite_layer *l, layer_run *run)
{
    int nd2 = l->nd + 2;
    run->layer = l;
    suite_dims(l, run->in, run->fl, run->out);
    CHECK(suite_params(l, &run->params));
    run->t[0] = make_random(rt, nd2, run->in, 1);
    run->t[1] = make_random(rt, nd2, run->fl, 2);
    run->t[2] = make_random(rt, nd2, run->out, 3);
    run->t[3] = make_random(rt, nd2, run->in, 4);
    run->t[4] = make_random(rt, nd2, run->fl, 5);
}

static void layer_close(convoy_runtime *rt, layer_run *run)
{
    CHECK(convoy_runtime_synchronize(rt));
    for (int k = 0; k < 5; ++k)
        convoy_tensor_destroy(run->t[k]);
    run->layer = NULL;
}

/* Seconds one call of direction d takes, submit to completion. */
static double time_call(convoy_runtime *rt, const layer_run *run, int d)
{
    convoy_tensor *const *t = run->t;
    const convoy_conv_params *p = &run->params;
    convoy_task *task = NULL;
    double t0 = suite_now();
    if (d == CONVOY_CONV_FORWARD)
        CHECK(convoy_conv_forward(rt, p, t[0], t[1], t[2], &task));
    else if (d == CONVOY_CONV_BACKWARD_DATA)
        CHECK(convoy_conv_backward_data(rt, p, t[1], t[2], t[3], &task));
    else
        CHECK(convoy_conv_backward_filter(rt, p, t[0], t[2], t[4], &task));
    CHECK(convoy_task_wait(task));
    double elapsed = suite_now() - t0;
    convoy_task_release(task);
    return elapsed;
}

/* Median seconds per call of one direction. */
static double time_direction(convoy_runtime *rt, const layer_run *run, int d,
                             const bench_options *o, int *runs_out)
{
    double times[MAX_RUNS];
    int runs = 0;
    double spent = 0.0;
    const int fixed = o->runs > 0;
    const int max_runs = fixed ? o->runs : MAX_RUNS;
    for (int r = -o->warmup; r < max_runs && (fixed || r < MIN_RUNS || spent < MIN_TIME_S); ++r) {
        double elapsed = time_call(rt, run, d);
        if (r >= 0) {
            times[runs++] = elapsed;
            spent += elapsed;
        }
    }
    *runs_out = runs;
    return suite_median(times, (size_t)runs);
}

/* Measures the asked directions of one layer and prints a row for each; returns the number of
 * targeted rows that missed their target (counted in *checked). */
static int bench_layer(convoy_runtime *rt, const suite_layer *l, int directions, int on_cpu,
                       double sgemm, const bench_options *o, int *checked)
{
    int misses = 0;
    layer_run run;
    layer_open(rt, l, &run);
    for (int d = 0; d < directions; ++d) {
        convoy_conv_plan_info info;
        CHECK(convoy_conv_explain(rt, &run.params, (convoy_conv_direction)d, run.in, run.fl,
                                  run.out, &info));
        int runs = 0;
        double sec = time_direction(rt, &run, d, o, &runs);
        double gflops = suite_flops(l) / sec * 1e-9;
        if (o->csv) {
            printf("conv,%s,%s,%s,%s,%.4f,%.2f,%d,%zu\n", l->name, direction_names[d],
                   info.implementation, info.algorithm, sec * 1e3, gflops, runs,
                   info.workspace_bytes);
            fflush(stdout);
            continue;
        }
        printf("%-18s %-15s %-7s %10.2f %9.1f %5d", l->name, direction_names[d],
               info.implementation, sec * 1e3, gflops, runs);
        int cls = suite_target_class(l);
        if (on_cpu && cls && sgemm > 0.0) {
            double want = cls == 1 ? 70.0 : 85.0;
            double got = 100.0 * gflops / sgemm;
            printf(" %7.1f%% %7s%% %s\n", got, cls == 1 ? ">=70" : ">=85",
                   got >= want ? "ok" : "MISS");
            misses += got < want;
            ++*checked;
        } else if (on_cpu && sgemm > 0.0) {
            printf(" %7.1f%% %8s\n", 100.0 * gflops / sgemm, "-");
        } else {
            printf("\n");
        }
        fflush(stdout);
    }
    layer_close(rt, &run);
    return misses;
}

/* A description as one CSV field: in quotes, quotes doubled. */
static void print_csv_text(const char *kind, const char *text)
{
    printf("%s,\"", kind);
    for (const char *c = text; *c; ++c)
        printf(*c == '"' ? "\"\"" : "%c", *c);
    printf("\"\n");
}

static int direction_index(const char *name)
{
    for (int d = 0; d < 3; ++d) {
        if (!strcmp(name, direction_names[d]))
            return d;
    }
    return -1;
}

/* --serve: answers the requests on standard input until it ends, each with its rows and a
 * line "end":
 *   layer NAME       every asked direction of the layer, as --csv measures them
 *   open NAME        makes the layer's tensors and plans its three directions (one row
 *                    "plan,layer,direction,implementation,algorithm,workspace_bytes" each)
 *   time DIRECTION RUNS WARMUP
 *                    WARMUP calls of the open layer, then RUNS timed ones, back to back:
 *                    "times,layer,direction,ms,ms,..."
 *   call DIRECTION   one call of the open layer: "call,layer,direction,ms"
 *   close            destroys the open layer's tensors
 *   sgemm            the baseline again: "sgemm,again,GFLOP/s,drift_percent"
 * open / time / close let a comparison interleave its own measurements with convoy's. */
static int serve(convoy_runtime *rt, const suite *s, int directions, int on_cpu, double sgemm,
                 const bench_options *o)
{
    char line[256];
    layer_run run = {.layer = NULL};
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char word[SUITE_NAME_MAX + 1] = "";
        int checked = 0, d, runs = 0, warmup = 0;
        if (!strcmp(line, "sgemm")) {
            double again = sgemm_gflops(SGEMM_SIZE);
            printf("sgemm,again,%.1f,%+.1f\n", again,
                   sgemm > 0.0 ? 100.0 * (again - sgemm) / sgemm : 0.0);
        } else if (sscanf(line, "layer %64s", word) == 1 && suite_find(s, word)) {
            (void)bench_layer(rt, suite_find(s, word), directions, on_cpu, sgemm, o, &checked);
        } else if (sscanf(line, "open %64s", word) == 1 && suite_find(s, word)) {
            if (run.layer)
                layer_close(rt, &run);
            layer_open(rt, suite_find(s, word), &run);
            for (d = 0; d < 3; ++d) {
                convoy_conv_plan_info info;
                CHECK(convoy_conv_explain(rt, &run.params, (convoy_conv_direction)d, run.in, run.fl,
                                          run.out, &info));
                printf("plan,%s,%s,%s,%s,%zu\n", word, direction_names[d], info.implementation,
                       info.algorithm, info.workspace_bytes);
            }
        } else if (sscanf(line, "time %64s %d %d", word, &runs, &warmup) == 3 && run.layer &&
                   (d = direction_index(word)) >= 0 && runs >= 1 && runs <= MAX_RUNS &&
                   warmup >= 0) {
            double times[MAX_RUNS];
            for (int r = -warmup; r < runs; ++r) {
                double elapsed = time_call(rt, &run, d);
                if (r >= 0)
                    times[r] = elapsed;
            }
            printf("times,%s,%s", run.layer->name, word);
            for (int r = 0; r < runs; ++r)
                printf(",%.4f", times[r] * 1e3);
            printf("\n");
        } else if (sscanf(line, "call %64s", word) == 1 && run.layer &&
                   (d = direction_index(word)) >= 0) {
            printf("call,%s,%s,%.4f\n", run.layer->name, word, time_call(rt, &run, d) * 1e3);
        } else if (!strcmp(line, "close")) {
            if (run.layer)
                layer_close(rt, &run);
        } else if (line[0] != '\0') {
            printf("error,\"cannot answer '%s': expected 'layer NAME', 'open NAME', "
                   "'time DIRECTION RUNS WARMUP' or 'call DIRECTION' after open, 'close' or "
                   "'sgemm'\"\n",
                   line);
        }
        printf("end\n");
        fflush(stdout);
    }
    if (run.layer)
        layer_close(rt, &run);
    return 0;
}

/* Parses one --option; returns 0 for an unknown or malformed one. */
static int parse_option(const char *arg, bench_options *o)
{
    if (!strcmp(arg, "--csv")) {
        o->csv = 1;
    } else if (!strcmp(arg, "--serve")) {
        o->serve = o->csv = 1;
    } else if (!strcmp(arg, "--no-sgemm")) {
        o->sgemm = 0;
    } else if (!strncmp(arg, "--runs=", 7)) {
        o->runs = atoi(arg + 7);
        return o->runs >= 1 && o->runs <= MAX_RUNS;
    } else if (!strncmp(arg, "--warmup=", 9)) {
        o->warmup = atoi(arg + 9);
        return o->warmup >= 0 && o->warmup <= 100 && (arg[9] >= '0' && arg[9] <= '9');
    } else {
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    bench_options o = {.csv = 0, .serve = 0, .sgemm = 1, .runs = 0, .warmup = 1};
    const char *positional[64];
    int count = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strncmp(argv[i], "--", 2)) {
            if (!parse_option(argv[i], &o)) {
                fprintf(stderr,
                        "conv_bench: bad option '%s'; expected --csv, --serve, --no-sgemm, "
                        "--runs=1..%d, --warmup=0..100\n",
                        argv[i], MAX_RUNS);
                return 1;
            }
        } else if (count < (int)(sizeof positional / sizeof positional[0])) {
            positional[count++] = argv[i];
        }
    }
    const char *path = count > 0 ? positional[0] : "bench/conv_suite.txt";
    suite s;
    char err[512];
    if (suite_load(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "conv_bench: %s\n", err);
        return 1;
    }
    for (int i = 1; i < count; ++i) {
        if (!suite_find(&s, positional[i])) {
            fprintf(stderr, "conv_bench: no layer '%s' in %s\n", positional[i], path);
            return 1;
        }
    }

    /* The baseline runs before the runtime exists, with OpenBLAS's own
     * default thread count, so the runtime's BLAS settings cannot shape it. */
    int blas_threads = openblas_get_num_threads();
    double sgemm = o.sgemm ? sgemm_gflops(SGEMM_SIZE) : 0.0;
    if (o.csv && o.sgemm)
        printf("sgemm,start,%.1f,%d\n", sgemm, blas_threads);
    else if (o.sgemm)
        printf("sgemm %dx%dx%d: %.1f GFLOP/s (%s, %d threads, median of %d)\n", SGEMM_SIZE,
               SGEMM_SIZE, SGEMM_SIZE, sgemm, openblas_get_config(), blas_threads, MIN_RUNS);

    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(NULL, &rt));
    int on_cpu = convoy_runtime_device(rt) == CONVOY_DEVICE_CPU;
    const char *which = getenv("CONV_BENCH_DIRECTIONS");
    int directions = !on_cpu || (which && !strcmp(which, "all")) ? 3 : 1;
    if (o.csv) {
        print_csv_text("runtime", convoy_runtime_describe(rt));
        printf("# kind,layer,direction,implementation,algorithm,ms,GFLOP/s,runs,workspace_bytes\n");
    } else {
        printf("runtime: %s\n", convoy_runtime_describe(rt));
        if (o.runs > 0)
            printf("%s; median of %d calls after %d warm-up%s\n\n",
                   on_cpu ? (directions == 3 ? "CPU: three directions, ratio to sgemm"
                                             : "CPU: forward only, ratio to sgemm")
                          : "GPU: three directions",
                   o.runs, o.warmup, o.warmup == 1 ? "" : "s");
        else
            printf("%s; median of >= %d calls after %d warm-up%s\n\n",
                   on_cpu ? (directions == 3 ? "CPU: three directions, ratio to sgemm"
                                             : "CPU: forward only, ratio to sgemm")
                          : "GPU: three directions",
                   MIN_RUNS, o.warmup, o.warmup == 1 ? "" : "s");
        printf("%-18s %-15s %-7s %10s %9s %5s %8s %8s %s\n", "layer", "direction", "impl", "ms",
               "GFLOP/s", "runs", "%sgemm", "target", "");
    }
    fflush(stdout);

    int misses = 0, checked = 0;
    if (o.serve) {
        serve(rt, &s, directions, on_cpu, sgemm, &o);
    } else {
        for (size_t i = 0; i < s.count; ++i) {
            const suite_layer *l = &s.layers[i];
            int wanted = count <= 1;
            for (int a = 1; a < count; ++a)
                wanted = wanted || !strcmp(positional[a], l->name);
            if (wanted)
                misses += bench_layer(rt, l, directions, on_cpu, sgemm, &o, &checked);
        }
    }
    if (on_cpu && o.sgemm && !o.serve) {
        /* A second baseline shows whether other work shared the cores meanwhile. */
        double again = sgemm_gflops(SGEMM_SIZE);
        double drift = 100.0 * (again - sgemm) / sgemm;
        if (o.csv) {
            printf("sgemm,end,%.1f,%+.1f\n", again, drift);
        } else {
            printf("\n%d of %d targeted layers meet their target (grouped, depthwise and 7x7 "
                   "layers have none)\n",
                   checked - misses, checked);
            printf("sgemm again at the end: %.1f GFLOP/s (%+.0f%%)%s\n", again, drift,
                   drift > 10.0 || drift < -10.0
                       ? ": the machine was busy, the ratios are unreliable"
                       : "");
        }
    }
    convoy_runtime_destroy(rt);
    suite_free(&s);
    return 0;
}
