/* pipeline_bench: how much the runtime overlaps transfers with compute. 16
 * batches of upload -> forward (r50_res3_3x3) -> download are submitted back
 * to back, once on a runtime with one compute stream and once with the
 * default number of streams, and the total times are compared.
 *
 * On a GPU the target is default / streams=1 < 0.60. On the CPU the default is
 * streams = 0 (every task inline), so the ratio there is about 1 and only
 * checks that the schedule costs nothing. The outputs of both runs must
 * agree. Usage: pipeline_bench [suite.txt] [layer]. CONVOY_STREAMS, when
 * set, replaces the default of the second run. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "convoy.h"
#include "suite.h"

#define BATCHES 16
#define RUNS 3
#define TARGET_RATIO 0.60

#define SUITE_PROGRAM "pipeline_bench"
#define CHECK(call) SUITE_CHECK(call)

static float *host_alloc(size_t count)
{
    float *p = malloc(count * sizeof *p);
    if (!p) {
        fprintf(stderr, "pipeline_bench: out of host memory (%zu floats)\n", count);
        exit(1);
    }
    return p;
}

/* Runs the pipeline RUNS times after a warm-up on a runtime with the given
 * streams setting (-2: the default, or CONVOY_STREAMS). Returns the median
 * seconds per pipeline; outputs land in out[]. */
static double run_config(int streams, const suite_layer *l, float *const *in, const float *w_host,
                         float *const *out)
{
    convoy_options o;
    CHECK(convoy_options_init(&o));
    CHECK(convoy_options_from_env(&o));
    if (streams != -2)
        o.streams = streams;
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(&o, &rt));
    printf("streams=%d%s: %s\n", o.streams, o.streams == -1 ? " (device default)" : "",
           convoy_runtime_describe(rt));

    int64_t in_dims[5], w_dims[5], out_dims[5];
    int nd2 = l->nd + 2;
    suite_dims(l, in_dims, w_dims, out_dims);
    const size_t in_count = (size_t)suite_numel(nd2, in_dims);
    const size_t w_count = (size_t)suite_numel(nd2, w_dims);
    const size_t out_count = (size_t)suite_numel(nd2, out_dims);
    convoy_conv_params p;
    CHECK(suite_params(l, &p));
    convoy_tensor *w = NULL, *x[BATCHES], *y[BATCHES];
    CHECK(convoy_tensor_create(rt, nd2, w_dims, &w));
    CHECK(convoy_upload(rt, w, w_host, w_count, NULL));
    for (int b = 0; b < BATCHES; ++b) {
        CHECK(convoy_tensor_create(rt, nd2, in_dims, &x[b]));
        CHECK(convoy_tensor_create(rt, nd2, out_dims, &y[b]));
    }
    CHECK(convoy_runtime_synchronize(rt));

    double times[RUNS];
    for (int r = -1; r < RUNS; ++r) {
        double t0 = suite_now();
        for (int b = 0; b < BATCHES; ++b) {
            CHECK(convoy_upload(rt, x[b], in[b], in_count, NULL));
            CHECK(convoy_conv_forward(rt, &p, x[b], w, y[b], NULL));
            CHECK(convoy_download(rt, y[b], out[b], out_count, NULL));
        }
        CHECK(convoy_runtime_synchronize(rt));
        if (r >= 0)
            times[r] = suite_now() - t0;
    }
    for (int b = 0; b < BATCHES; ++b) {
        convoy_tensor_destroy(x[b]);
        convoy_tensor_destroy(y[b]);
    }
    convoy_tensor_destroy(w);
    convoy_runtime_destroy(rt);
    return suite_median(times, RUNS);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "bench/conv_suite.txt";
    const char *name = argc > 2 ? argv[2] : "r50_res3_3x3";
    suite s;
    char err[512];
    if (suite_load(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "pipeline_bench: %s\n", err);
        return 1;
    }
    const suite_layer *l = suite_find(&s, name);
    if (!l) {
        fprintf(stderr, "pipeline_bench: no layer '%s' in %s\n", name, path);
        return 1;
    }
    int64_t in_dims[5], w_dims[5], out_dims[5];
    suite_dims(l, in_dims, w_dims, out_dims);
    size_t in_count = (size_t)suite_numel(l->nd + 2, in_dims);
    size_t w_count = (size_t)suite_numel(l->nd + 2, w_dims);
    size_t out_count = (size_t)suite_numel(l->nd + 2, out_dims);

    float *w_host = host_alloc(w_count);
    float *in[BATCHES], *out1[BATCHES], *out2[BATCHES];
    suite_fill_random(w_host, w_count, 99);
    for (int b = 0; b < BATCHES; ++b) {
        in[b] = host_alloc(in_count);
        out1[b] = host_alloc(out_count);
        out2[b] = host_alloc(out_count);
        suite_fill_random(in[b], in_count, 100 + (uint64_t)b);
    }
    printf("%d batches of upload -> forward %s -> download, median of %d after a warm-up\n",
           BATCHES, l->name, RUNS);

    double serial = run_config(1, l, in, w_host, out1);
    double overlapped = run_config(-2, l, in, w_host, out2);

    double max_err = 0.0, max_ref = 0.0;
    for (int b = 0; b < BATCHES; ++b) {
        for (size_t i = 0; i < out_count; ++i) {
            double e = fabs((double)out1[b][i] - (double)out2[b][i]);
            max_err = e > max_err ? e : max_err;
            double r = fabs((double)out1[b][i]);
            max_ref = r > max_ref ? r : max_ref;
        }
    }
    double ratio = overlapped / serial;
    double gflop = suite_flops(l) * BATCHES * 1e-9;
    printf("\n%-22s %10s %10s\n", "", "total ms", "GFLOP/s");
    printf("%-22s %10.1f %10.1f\n", "streams=1", serial * 1e3, gflop / serial);
    printf("%-22s %10.1f %10.1f\n", "default streams", overlapped * 1e3, gflop / overlapped);
    printf("ratio default / streams=1: %.3f (target on GPU < %.2f)\n", ratio, TARGET_RATIO);
    printf("outputs of the two runs: max |difference| %.3g (max |value| %.3g)\n", max_err, max_ref);

    int bad = max_err > 1e-4 * (max_ref > 1.0 ? max_ref : 1.0);
    for (int b = 0; b < BATCHES; ++b) {
        free(in[b]);
        free(out1[b]);
        free(out2[b]);
    }
    free(w_host);
    suite_free(&s);
    if (bad) {
        fprintf(stderr, "pipeline_bench: the two schedules produced different outputs\n");
        return 1;
    }
    return 0;
}
