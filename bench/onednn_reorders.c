/* onednn_reorders: where the time of convoy's onednn:blocked algorithm goes, layer by layer:
 * the reorders of the operands between the caller's plain NCHW / NCDHW tensors and the layouts
 * oneDNN prefers, against the convolution itself. It builds the same oneDNN primitives the
 * algorithm builds (cpu/onednn.c: format_tag_any, the direct algorithm, a user
 * scratchpad) straight on oneDNN, and times each step of a call on its own.
 *
 * Usage: onednn_reorders [suite.txt] [layer ...]. OMP_NUM_THREADS (or all cores) sets the
 * threads. Every figure is the median of 7 calls after 2 warm-ups. The columns are the
 * milliseconds of the reorders of the operands the direction reads (input / filters / output
 * gradient, as the direction has them), of the convolution, and of the reorder of the operand
 * it writes, and the share of the reorders in the call. */
#define _POSIX_C_SOURCE 200809L

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "suite.h"

#define RUNS 7
#define WARMUP 2

static const char *const direction_names[3] = {"forward", "backward_data", "backward_filter"};

static void check(dnnl_status_t s, const char *what)
{
    if (s != dnnl_success) {
        fprintf(stderr, "onednn_reorders: %s failed (status %d)\n", what, (int)s);
        exit(1);
    }
}

#define TRY(call) check((call), #call)

/* src, weights, dst of a convolution in oneDNN's terms (or their gradients). */
enum { SRC, WEI, DST };

typedef struct step {
    dnnl_primitive_t primitive;
    dnnl_memory_t from, to, scratch;
} step;

static double run_step(const step *s, dnnl_stream_t stream)
{
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, s->from}, {DNNL_ARG_TO, s->to}};
    int n = 2;
    if (s->scratch)
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, s->scratch};
    double t0 = suite_now();
    TRY(dnnl_primitive_execute(s->primitive, stream, n, args));
    TRY(dnnl_stream_wait(stream));
    return suite_now() - t0;
}

static dnnl_memory_t scratchpad(const_dnnl_primitive_desc_t pd, dnnl_engine_t engine)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (!md || dnnl_memory_desc_get_size(md) == 0)
        return NULL;
    dnnl_memory_t m = NULL;
    TRY(dnnl_memory_create(&m, md, engine, DNNL_MEMORY_ALLOCATE));
    return m;
}

static void measure(const suite_layer *l, int d, dnnl_engine_t engine, dnnl_stream_t stream)
{
    int64_t in[5], fl[5], out[5];
    suite_dims(l, in, fl, out);
    const int nd = l->nd, rank = nd + 2;
    dnnl_dims_t dims[3], strides, dilates, pads;
    int ranks[3] = {rank, rank, rank};
    for (int j = 0; j < rank; ++j) {
        dims[SRC][j] = in[j];
        dims[DST][j] = out[j];
    }
    int w = 0;
    if (l->groups > 1)
        dims[WEI][w++] = l->groups;
    dims[WEI][w++] = l->k / l->groups;
    dims[WEI][w++] = l->c / l->groups;
    for (int j = 0; j < nd; ++j) {
        dims[WEI][w + j] = l->kernel[j];
        strides[j] = l->stride[j];
        dilates[j] = l->dilation[j] - 1;
        pads[j] = l->pad[j];
    }
    ranks[WEI] = w + nd;
    static const dnnl_format_tag_t plain[7] = {0, 0, 0, 0, dnnl_abcd, dnnl_abcde, dnnl_abcdef};
    dnnl_memory_desc_t user[3], any[3];
    for (int i = 0; i < 3; ++i) {
        TRY(dnnl_memory_desc_init_by_tag(&user[i], ranks[i], dims[i], dnnl_f32, plain[ranks[i]]));
        TRY(dnnl_memory_desc_init_by_tag(&any[i], ranks[i], dims[i], dnnl_f32,
                                         dnnl_format_tag_any));
    }
    dnnl_primitive_attr_t attr;
    TRY(dnnl_primitive_attr_create(&attr));
    TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    dnnl_convolution_desc_t forward, desc;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    TRY(dnnl_dilated_convolution_forward_desc_init(&forward, dnnl_forward_training,
                                                   dnnl_convolution_direct, &any[SRC], &any[WEI],
                                                   NULL, &any[DST], strides, dilates, pads, pads));
    if (d == 0) {
        desc = forward;
    } else {
        TRY(dnnl_primitive_desc_create(&hint, &forward, NULL, engine, NULL));
        if (d == 1)
            TRY(dnnl_dilated_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct,
                                                                 &any[SRC], &any[WEI], &any[DST],
                                                                 strides, dilates, pads, pads));
        else
            TRY(dnnl_dilated_convolution_backward_weights_desc_init(
                &desc, dnnl_convolution_direct, &any[SRC], &any[WEI], NULL, &any[DST], strides,
                dilates, pads, pads));
    }
    TRY(dnnl_primitive_desc_create(&pd, &desc, attr, engine, hint));
    static const int args[3][3] = {
        {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
        {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},
        {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST},
    };
    static const int written[3] = {DST, SRC, WEI};
    dnnl_memory_t user_mem[3], inner_mem[3];
    step reorders[3] = {{NULL, NULL, NULL, NULL}};
    for (int i = 0; i < 3; ++i) {
        const dnnl_memory_desc_t *inner =
            dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[d][i]);
        TRY(dnnl_memory_create(&user_mem[i], &user[i], engine, DNNL_MEMORY_ALLOCATE));
        float *data = NULL;
        TRY(dnnl_memory_get_data_handle(user_mem[i], (void **)&data));
        suite_fill_random(data, dnnl_memory_desc_get_size(&user[i]) / sizeof(float),
                          (uint64_t)i + 1);
        inner_mem[i] = user_mem[i];
        if (dnnl_memory_desc_equal(inner, &user[i]))
            continue;
        TRY(dnnl_memory_create(&inner_mem[i], inner, engine, DNNL_MEMORY_ALLOCATE));
        dnnl_primitive_desc_t rpd;
        int out = i == written[d];
        TRY(dnnl_reorder_primitive_desc_create(&rpd, out ? inner : &user[i], engine,
                                               out ? &user[i] : inner, engine, attr));
        TRY(dnnl_primitive_create(&reorders[i].primitive, rpd));
        reorders[i].from = out ? inner_mem[i] : user_mem[i];
        reorders[i].to = out ? user_mem[i] : inner_mem[i];
        reorders[i].scratch = scratchpad(rpd, engine);
        dnnl_primitive_desc_destroy(rpd);
    }
    dnnl_primitive_t conv;
    TRY(dnnl_primitive_create(&conv, pd));
    dnnl_memory_t conv_scratch = scratchpad(pd, engine);
    dnnl_exec_arg_t conv_args[4];
    int nargs = 3;
    for (int i = 0; i < 3; ++i)
        conv_args[i] = (dnnl_exec_arg_t){args[d][i], inner_mem[i]};
    if (conv_scratch)
        conv_args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, conv_scratch};

    double times[5][RUNS]; /* reorders of SRC, WEI, DST, the convolution, the whole call */
    for (int r = -WARMUP; r < RUNS; ++r) {
        double t[5] = {0, 0, 0, 0, 0};
        double start = suite_now();
        for (int i = 0; i < 3; ++i) {
            if (reorders[i].primitive && i != written[d])
                t[i] = run_step(&reorders[i], stream);
        }
        double t0 = suite_now();
        TRY(dnnl_primitive_execute(conv, stream, nargs, conv_args));
        TRY(dnnl_stream_wait(stream));
        t[3] = suite_now() - t0;
        if (reorders[written[d]].primitive)
            t[written[d]] = run_step(&reorders[written[d]], stream);
        t[4] = suite_now() - start;
        for (int k = 0; r >= 0 && k < 5; ++k)
            times[k][r] = t[k];
    }
    double med[5];
    for (int k = 0; k < 5; ++k)
        med[k] = suite_median(times[k], RUNS) * 1e3;
    const char *impl = NULL;
    TRY(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    double reorder = med[0] + med[1] + med[2];
    printf("%-18s %-15s %-22s %8.2f %8.2f %8.2f %9.2f %8.2f %6.0f%%\n", l->name, direction_names[d],
           impl, med[0], med[1], med[2], med[3], med[4], 100.0 * reorder / (reorder + med[3]));
    fflush(stdout);

    for (int i = 0; i < 3; ++i) {
        if (reorders[i].primitive)
            dnnl_primitive_destroy(reorders[i].primitive);
        if (reorders[i].scratch)
            dnnl_memory_destroy(reorders[i].scratch);
        if (inner_mem[i] != user_mem[i])
            dnnl_memory_destroy(inner_mem[i]);
        dnnl_memory_destroy(user_mem[i]);
    }
    if (conv_scratch)
        dnnl_memory_destroy(conv_scratch);
    dnnl_primitive_destroy(conv);
    dnnl_primitive_desc_destroy(pd);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    dnnl_primitive_attr_destroy(attr);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "bench/conv_suite.txt";
    suite s;
    char err[512];
    if (suite_load(path, &s, err, sizeof err) != 0) {
        fprintf(stderr, "onednn_reorders: %s\n", err);
        return 1;
    }
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    TRY(dnnl_engine_create(&engine, dnnl_cpu, 0));
    TRY(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    const dnnl_version_t *v = dnnl_version();
    printf("oneDNN %d.%d.%d, %d OpenMP threads; ms, median of %d calls after %d warm-ups; the "
           "reorders of src / weights / dst (or their gradients) and the convolution\n\n",
           v->major, v->minor, v->patch, omp_get_max_threads(), RUNS, WARMUP);
    printf("%-18s %-15s %-22s %8s %8s %8s %9s %8s %7s\n", "layer", "direction", "oneDNN", "src",
           "weights", "dst", "conv", "call", "reorder");
    for (size_t i = 0; i < s.count; ++i) {
        int wanted = argc <= 2;
        for (int a = 2; a < argc; ++a)
            wanted = wanted || !strcmp(argv[a], s.layers[i].name);
        for (int d = 0; wanted && d < 3; ++d)
            measure(&s.layers[i], d, engine, stream);
    }
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    suite_free(&s);
    return 0;
}
