/* oneDNN's convolutions on the CPU: the machinery the "onednn" (cpu/conv_onednn.c) and
 * "winograd" (cpu/conv_winograd.c) algorithms share, and the sgemm the GEMM driver runs on.
 *
 * prepare builds, for one geometry, direction and method, a oneDNN convolution primitive and
 * keeps it with its CPU engine in plan->algo_data. Methods (convoy__onednn_method): direct with
 * the operands in the layouts oneDNN prefers (format_tag any: usually channel-blocked, nChw16c
 * on AVX-512) and the reorders between those and the caller's plain row-major tensors (nchw /
 * ncdhw, oihw / goihw / oidhw / goidhw), the onednn:blocked candidate; direct on the caller's
 * plain tensors, no reorders (onednn:plain); Winograd, blocked like the first. run wraps the
 * given buffers in oneDNN memory objects, reorders the operands it reads, executes the
 * convolution and reorders the operand it writes back, on a oneDNN stream of that engine.
 *
 * Workspace: oneDNN runs with a user scratchpad, so everything a run needs beyond the caller's
 * tensors comes from the plan's workspace, which the planner takes from the pool: the
 * scratchpad (the largest of the convolution's and the reorders'; they run one after another),
 * one buffer per operand whose preferred layout is not the plain one, and for flipped forward
 * and backward-data convolutions a flipped copy of the filters. The candidate reports the sum
 * as its fixed workspace (nothing per image); run carves the pointer into those buffers. Large
 * reordered filters also stay in a buffer of the plan between runs (see onednn_plan).
 *
 * Flip: oneDNN only correlates. Reversing every spatial axis of a row-major (k0, k1, k2) block
 * is reversing the block's flat order, so a flip is a reversal of each run of k0*k1*k2 floats.
 * Forward and backward data read the filters, so they correlate with a reversed copy written to
 * the workspace before the filters' reorder (the caller's filters are never modified).
 * Backward weights computes the correlation's gradient, which is the convolution's gradient
 * with its taps reversed, so the result is reversed in place in the caller's tensor after the
 * last reorder. Both cost one pass over the filters, small beside the convolution.
 *
 * Threads: oneDNN in Debian runs its parallel regions on OpenMP, whose thread count is a
 * per-thread setting (the nthreads ICV) that worker threads and the program's threads do not
 * share, and which oneDNN also reads when it builds a primitive (its blocking and the
 * scratchpad size depend on it). So every entry below that builds or runs a primitive, and the
 * sgemm the GEMM driver runs on (convoy__onednn_sgemm), sets the calling thread's OpenMP count
 * to the plan's threads and restores the caller's setting afterwards: the host backend's
 * threads per task (all cores inline, the cores divided between streams otherwise), or one for
 * a small convolution. With the GEMMs on oneDNN too, one pool of threads does all of a task's
 * compute: OpenBLAS's threads spin for about 0.1 s after a GEMM and slowed a oneDNN
 * convolution started meanwhile fifteenfold (bench/RESULTS.md). On an oversubscribed machine a
 * team that went to sleep can take milliseconds to wake.
 *
 * Epilogue: a forward convolution with a bias and/or a ReLU (convoy_conv_forward_bias_act) runs
 * as one primitive with oneDNN's bias operand and an eltwise ReLU post-op, applied to each
 * output block while it is in registers. That primitive differs from the plain one, so it is a
 * variant kept in the plan beside it, one per epilogue, built on the epilogue's first use (under
 * the plan's own lock: two streams may run one plan). It is described on the plan's own operand
 * layouts, so the plan's reorders, filter cache and workspace serve it unchanged; when oneDNN
 * cannot build it that way, or its scratchpad would not fit the plan's, the variant is marked
 * unavailable and run_fused declines (the runtime then runs the plain plan and a separate
 * epilogue pass).
 *
 * Built without oneDNN (CONVOY_ENABLE_ONEDNN=OFF, or the library not found) the entry points
 * are stubs: the descriptors stay registered and refuse every convolution, and the GEMM driver
 * runs on OpenBLAS. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked_math.h"
#include "core/error_detail.h"
#include "cpu/conv_cpu.h"
#include "cpu/host_backend.h"

#ifdef CONVOY_HAVE_ONEDNN

#include <omp.h>
#include <pthread.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

/* Buffers carved from the workspace start on a cache line, and so must the workspace. */
#define ALIGNMENT 64

/* ---- errors and threads --------------------------------------------------------------- */

static convoy_status dnnl_failure(const char *function, dnnl_status_t s)
{
    return convoy__error(s == dnnl_out_of_memory ? CONVOY_ERR_OUT_OF_MEMORY : CONVOY_ERR_BACKEND,
                         "onednn convolution: %s failed: %s (status %d)", function,
                         dnnl_status2str(s), (int)s);
}

/* Calls a dnnl_* function; on failure records which one and jumps to the function's cleanup
 * label with status set. */
#define ONEDNN_TRY(function, args)                                                                 \
    do {                                                                                           \
        dnnl_status_t s_ = function args;                                                          \
        if (s_ != dnnl_success) {                                                                  \
            status = dnnl_failure(#function, s_);                                                  \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* The calling thread's OpenMP thread count, set for the length of one oneDNN call sequence. */
typedef struct omp_scope {
    int saved;
} omp_scope;

static omp_scope omp_enter(int threads)
{
    omp_scope scope = {omp_get_max_threads()};
    if (threads > 0 && threads != scope.saved)
        omp_set_num_threads(threads);
    return scope;
}

static void omp_leave(omp_scope scope)
{
    if (omp_get_max_threads() != scope.saved)
        omp_set_num_threads(scope.saved);
}

/* ---- the plan ------------------------------------------------------------------------- */

/* One operand of the convolution: the caller's plain tensor, the layout the primitive wants,
 * and the reorder between them (caller to primitive for what the convolution reads, primitive
 * to caller for what it writes); no reorder when the two layouts are the same. */
typedef struct operand {
    int arg; /* DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, ... */
    int written;
    dnnl_memory_desc_t user;
    dnnl_memory_desc_t inner;
    int reordered;
    dnnl_primitive_desc_t reorder_pd;
    dnnl_primitive_t reorder;
    size_t offset; /* of the inner buffer in the workspace, when reordered */
} operand;

enum { OP_SRC, OP_WEIGHTS, OP_DST, OP_COUNT };

/* A forward primitive with an epilogue fused in, on the plan's operand layouts. */
typedef struct fused_variant {
    int state; /* 0: not tried yet; 1: built; -1: oneDNN cannot build it on the plan's terms */
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t primitive;
} fused_variant;

typedef struct onednn_plan {
    convoy__onednn_method method;
    dnnl_engine_t engine;
    dnnl_primitive_desc_t forward_hint; /* backward directions: the forward pd oneDNN needs */
    dnnl_primitive_desc_t conv_pd;
    dnnl_primitive_t conv;
    operand ops[OP_COUNT]; /* src, weights, dst in the primitive's terms (or their diffs) */
    size_t scratch_bytes;  /* at offset 0 */
    size_t flipped_offset; /* the reversed filters (forward / backward data with flip) */
    int flip_filters;      /* 1: reverse the filters into the workspace before the convolution */
    int flip_result;       /* 1: reverse the computed filter gradient in place */
    size_t workspace_bytes;
    int threads;
    /* The filters in the primitive's layout, kept from one run to the next while the caller's
     * filters keep their content (convoy__conv_buffers.filters_content), so that a chain of
     * convolutions with the same filters (inference, or the same shape used again) reorders
     * them once. Forward and backward data, when the filters are reordered and their copy
     * takes at least CACHED_FILTER_BYTES. The copy counts as memory in use (memory statistics)
     * until the runtime, which owns the plan, is destroyed. A run takes the
     * cache with a trylock: one that finds it busy (the same plan running on another stream)
     * reorders into its workspace as before. The buffer comes from the backend's scratch
     * allocator (the pool, under memory_limit) at the first run that can use it; when it
     * cannot be had, the plan stops asking. */
    int cache_filters;
    pthread_mutex_t cache_lock; /* guards the three below */
    uint64_t cached_content;    /* 0: the cache holds nothing valid */
    int cache_refused;
    convoy__scratch cache;
    /* Forward plans with primitives: the epilogue variants, [has bias][ReLU] ([0][0] is the
     * plain primitive above and stays unused), built on first use under fused_lock. */
    int has_fused_lock;
    pthread_mutex_t fused_lock;
    fused_variant fused[2][2];
} onednn_plan;

/* Filters whose reordered copy is at least this big stay reordered between runs (the plan's
 * cache); smaller ones reorder in tens of microseconds, less than the cache would be worth in
 * memory held past the tasks that use it. */
#define CACHED_FILTER_BYTES ((size_t)512 << 10)

static size_t round_up(size_t bytes)
{
    return (bytes + ALIGNMENT - 1) & ~(size_t)(ALIGNMENT - 1);
}

/* 1 when the geometry's leading spatial axis is the neutral one of a 2D convolution, so the
 * primitive can be the 2D one. */
static int is_2d(const convoy__conv_geom *g)
{
    return g->in[0] == 1 && g->kernel[0] == 1 && g->out[0] == 1 && g->pad_before[0] == 0 &&
           g->pad_after[0] == 0;
}

static dnnl_format_tag_t plain_tag(int ndims)
{
    return ndims == 4 ? dnnl_abcd : ndims == 5 ? dnnl_abcde : dnnl_abcdef;
}

/* The dims of the three tensors and the spatial parameters, in oneDNN's terms. */
typedef struct shapes {
    int spatial, data_ndims, weights_ndims;
    dnnl_dims_t src, weights, dst;
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} shapes;

static void make_shapes(const convoy__conv_geom *g, shapes *s)
{
    memset(s, 0, sizeof *s);
    const int first = is_2d(g) ? 1 : 0;
    s->spatial = 3 - first;
    s->data_ndims = s->spatial + 2;
    s->src[0] = s->dst[0] = g->batch;
    s->src[1] = g->in_channels;
    s->dst[1] = g->out_channels;
    int w = 0;
    if (g->groups > 1)
        s->weights[w++] = g->groups;
    s->weights[w++] = g->out_channels / g->groups;
    s->weights[w++] = g->in_channels / g->groups;
    s->weights_ndims = w + s->spatial;
    for (int a = first; a < 3; ++a) {
        const int i = a - first;
        s->src[2 + i] = g->in[a];
        s->dst[2 + i] = g->out[a];
        s->weights[w + i] = g->kernel[a];
        s->strides[i] = g->stride[a];
        s->dilates[i] = g->dilation[a] - 1; /* oneDNN counts the zeros between taps */
        s->pad_l[i] = g->pad_before[a];
        s->pad_r[i] = g->pad_after[a];
    }
}

static void plan_free(onednn_plan *p)
{
    if (!p)
        return;
    if (p->cache_filters)
        pthread_mutex_destroy(&p->cache_lock);
    for (int b = 0; b < 2; ++b) {
        for (int r = 0; r < 2; ++r) {
            if (p->fused[b][r].primitive)
                dnnl_primitive_destroy(p->fused[b][r].primitive);
            if (p->fused[b][r].pd)
                dnnl_primitive_desc_destroy(p->fused[b][r].pd);
        }
    }
    if (p->has_fused_lock)
        pthread_mutex_destroy(&p->fused_lock);
    for (int i = 0; i < OP_COUNT; ++i) {
        if (p->ops[i].reorder)
            dnnl_primitive_destroy(p->ops[i].reorder);
        if (p->ops[i].reorder_pd)
            dnnl_primitive_desc_destroy(p->ops[i].reorder_pd);
    }
    if (p->conv)
        dnnl_primitive_destroy(p->conv);
    if (p->conv_pd)
        dnnl_primitive_desc_destroy(p->conv_pd);
    if (p->forward_hint)
        dnnl_primitive_desc_destroy(p->forward_hint);
    if (p->engine)
        dnnl_engine_destroy(p->engine);
    free(p);
}

static dnnl_alg_kind_t method_alg(convoy__onednn_method method)
{
    return method == CONVOY__ONEDNN_WINOGRAD ? dnnl_convolution_winograd : dnnl_convolution_direct;
}

/* The primitive descriptor of a forward plan's epilogue variant: the plan's convolution with
 * oneDNN's bias operand (has_bias) and an eltwise ReLU post-op (relu), described on the plan's
 * own operand layouts (p->ops[].inner) so the plan's reorders and workspace carving serve it.
 * Runs with the calling thread's OpenMP count set to the plan's. */
static convoy_status fused_pd_create(const onednn_plan *p, const convoy__conv_geom *g, int has_bias,
                                     int relu, dnnl_primitive_desc_t *out)
{
    convoy_status status = CONVOY_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    omp_scope scope = omp_enter(p->threads);
    shapes s;
    make_shapes(g, &s);
    ONEDNN_TRY(dnnl_primitive_attr_create, (&attr));
    ONEDNN_TRY(dnnl_primitive_attr_set_scratchpad_mode, (attr, dnnl_scratchpad_mode_user));
    if (relu) {
        ONEDNN_TRY(dnnl_post_ops_create, (&post_ops));
        ONEDNN_TRY(dnnl_post_ops_append_eltwise, (post_ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
        ONEDNN_TRY(dnnl_primitive_attr_set_post_ops, (attr, post_ops));
    }
    dnnl_memory_desc_t bias_md;
    const dnnl_dims_t bias_dims = {g->out_channels};
    if (has_bias)
        ONEDNN_TRY(dnnl_memory_desc_init_by_tag, (&bias_md, 1, bias_dims, dnnl_f32, dnnl_a));
    dnnl_convolution_desc_t desc;
    ONEDNN_TRY(dnnl_dilated_convolution_forward_desc_init,
               (&desc, dnnl_forward_training, method_alg(p->method), &p->ops[OP_SRC].inner,
                &p->ops[OP_WEIGHTS].inner, has_bias ? &bias_md : NULL, &p->ops[OP_DST].inner,
                s.strides, s.dilates, s.pad_l, s.pad_r));
    ONEDNN_TRY(dnnl_primitive_desc_create, (out, &desc, attr, p->engine, NULL));
cleanup:
    if (post_ops)
        dnnl_post_ops_destroy(post_ops);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    omp_leave(scope);
    return status;
}

/* Builds the primitive descriptors (and, with primitives set, the primitives) of a plan and
 * lays out its workspace. Runs with the calling thread's OpenMP count set to threads, since
 * oneDNN sizes its blocking and scratchpad by it. */
static convoy_status plan_build(const convoy__conv_geom *g, convoy_conv_direction direction,
                                convoy__onednn_method method, int threads, int primitives,
                                onednn_plan **out)
{
    convoy_status status = CONVOY_OK;
    dnnl_primitive_attr_t attr = NULL;
    omp_scope scope = omp_enter(threads);
    onednn_plan *p = calloc(1, sizeof *p);
    if (!p) {
        status = convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "onednn convolution: out of host memory");
        goto cleanup;
    }
    p->threads = threads;
    p->method = method;
    const dnnl_alg_kind_t alg = method_alg(method);
    shapes s;
    make_shapes(g, &s);

    ONEDNN_TRY(dnnl_engine_create, (&p->engine, dnnl_cpu, 0));
    ONEDNN_TRY(dnnl_primitive_attr_create, (&attr));
    ONEDNN_TRY(dnnl_primitive_attr_set_scratchpad_mode, (attr, dnnl_scratchpad_mode_user));

    /* The caller's layouts, and "any" for what the primitive may choose (the caller's own for
     * the plain method). */
    dnnl_memory_desc_t user[OP_COUNT], any[OP_COUNT];
    const dnnl_dim_t *dims[OP_COUNT] = {s.src, s.weights, s.dst};
    const int ndims[OP_COUNT] = {s.data_ndims, s.weights_ndims, s.data_ndims};
    for (int i = 0; i < OP_COUNT; ++i) {
        ONEDNN_TRY(dnnl_memory_desc_init_by_tag,
                   (&user[i], ndims[i], dims[i], dnnl_f32, plain_tag(ndims[i])));
        ONEDNN_TRY(dnnl_memory_desc_init_by_tag,
                   (&any[i], ndims[i], dims[i], dnnl_f32,
                    method == CONVOY__ONEDNN_PLAIN ? plain_tag(ndims[i]) : dnnl_format_tag_any));
    }

    /* The backward primitives are described against a forward one (never run). */
    dnnl_convolution_desc_t forward, desc;
    ONEDNN_TRY(dnnl_dilated_convolution_forward_desc_init,
               (&forward, dnnl_forward_training, alg, &any[OP_SRC], &any[OP_WEIGHTS], NULL,
                &any[OP_DST], s.strides, s.dilates, s.pad_l, s.pad_r));
    if (direction == CONVOY_CONV_FORWARD) {
        desc = forward;
    } else {
        ONEDNN_TRY(dnnl_primitive_desc_create, (&p->forward_hint, &forward, NULL, p->engine, NULL));
        if (direction == CONVOY_CONV_BACKWARD_DATA)
            ONEDNN_TRY(dnnl_dilated_convolution_backward_data_desc_init,
                       (&desc, alg, &any[OP_SRC], &any[OP_WEIGHTS], &any[OP_DST], s.strides,
                        s.dilates, s.pad_l, s.pad_r));
        else
            ONEDNN_TRY(dnnl_dilated_convolution_backward_weights_desc_init,
                       (&desc, alg, &any[OP_SRC], &any[OP_WEIGHTS], NULL, &any[OP_DST], s.strides,
                        s.dilates, s.pad_l, s.pad_r));
    }
    ONEDNN_TRY(dnnl_primitive_desc_create, (&p->conv_pd, &desc, attr, p->engine, p->forward_hint));

    /* Which operand the direction writes, and how each is named to the primitive. */
    static const int args[3][OP_COUNT] = {
        {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
        {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},
        {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST},
    };
    static const int written[3] = {OP_DST, OP_SRC, OP_WEIGHTS};
    const dnnl_memory_desc_t *scratch =
        dnnl_primitive_desc_query_md(p->conv_pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = scratch ? dnnl_memory_desc_get_size(scratch) : 0;
    size_t inner_bytes[OP_COUNT] = {0};
    for (int i = 0; i < OP_COUNT; ++i) {
        operand *o = &p->ops[i];
        o->arg = args[direction][i];
        o->written = written[direction] == i;
        o->user = user[i];
        const dnnl_memory_desc_t *inner =
            dnnl_primitive_desc_query_md(p->conv_pd, dnnl_query_exec_arg_md, o->arg);
        if (!inner) {
            status = convoy__error(CONVOY_ERR_BACKEND,
                                   "onednn convolution: dnnl_primitive_desc_query_md found no "
                                   "memory descriptor for argument %d",
                                   o->arg);
            goto cleanup;
        }
        o->inner = *inner;
        o->reordered = !dnnl_memory_desc_equal(&o->user, &o->inner);
        if (!o->reordered)
            continue;
        inner_bytes[i] = round_up(dnnl_memory_desc_get_size(&o->inner));
        if (o->written)
            ONEDNN_TRY(dnnl_reorder_primitive_desc_create,
                       (&o->reorder_pd, &o->inner, p->engine, &o->user, p->engine, attr));
        else
            ONEDNN_TRY(dnnl_reorder_primitive_desc_create,
                       (&o->reorder_pd, &o->user, p->engine, &o->inner, p->engine, attr));
        scratch = dnnl_primitive_desc_query_md(o->reorder_pd, dnnl_query_scratchpad_md, 0);
        size_t reorder_scratch = scratch ? dnnl_memory_desc_get_size(scratch) : 0;
        if (reorder_scratch > p->scratch_bytes)
            p->scratch_bytes = reorder_scratch;
    }
    /* Room for the scratchpad of the bias + ReLU variant too (oneDNN pads the bias to its
     * channel blocks there), so that run_fused finds it in the plan's workspace. A variant
     * oneDNN cannot describe adds nothing: run_fused then declines. */
    if (direction == CONVOY_CONV_FORWARD) {
        dnnl_primitive_desc_t fused = NULL;
        if (fused_pd_create(p, g, 1, 1, &fused) == CONVOY_OK) {
            scratch = dnnl_primitive_desc_query_md(fused, dnnl_query_scratchpad_md, 0);
            size_t fused_scratch = scratch ? dnnl_memory_desc_get_size(scratch) : 0;
            if (fused_scratch > p->scratch_bytes)
                p->scratch_bytes = fused_scratch;
            dnnl_primitive_desc_destroy(fused);
        } else {
            convoy__error_set_text(NULL);
        }
    }
    /* The workspace: the scratchpad, the blocked operands, the flipped filters. */
    size_t offset = round_up(p->scratch_bytes);
    for (int i = 0; i < OP_COUNT; ++i) {
        if (!p->ops[i].reordered)
            continue;
        p->ops[i].offset = offset;
        offset += inner_bytes[i];
    }
    if (g->flip && direction != CONVOY_CONV_BACKWARD_FILTER) {
        p->flip_filters = 1;
        p->flipped_offset = offset;
        offset += round_up(dnnl_memory_desc_get_size(&p->ops[OP_WEIGHTS].user));
    }
    p->flip_result = g->flip && direction == CONVOY_CONV_BACKWARD_FILTER;
    p->workspace_bytes = offset;
    if (primitives && !p->ops[OP_WEIGHTS].written && p->ops[OP_WEIGHTS].reordered &&
        inner_bytes[OP_WEIGHTS] >= CACHED_FILTER_BYTES) {
        pthread_mutex_init(&p->cache_lock, NULL);
        p->cache_filters = 1;
    }

    if (primitives && direction == CONVOY_CONV_FORWARD) {
        pthread_mutex_init(&p->fused_lock, NULL);
        p->has_fused_lock = 1;
    }

    if (primitives) {
        ONEDNN_TRY(dnnl_primitive_create, (&p->conv, p->conv_pd));
        for (int i = 0; i < OP_COUNT; ++i) {
            if (p->ops[i].reordered)
                ONEDNN_TRY(dnnl_primitive_create, (&p->ops[i].reorder, p->ops[i].reorder_pd));
        }
    }

cleanup:
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    omp_leave(scope);
    if (status != CONVOY_OK) {
        plan_free(p);
        return status;
    }
    *out = p;
    return CONVOY_OK;
}

/* Reverses each run of kvol floats: every spatial axis of each (k0, k1, k2) block. */
static void reverse_taps(const float *src, float *dst, int64_t blocks, int64_t kvol)
{
    for (int64_t b = 0; b < blocks; ++b) {
        const float *s = src + b * kvol;
        float *d = dst + b * kvol;
        if (s == d) {
            for (int64_t i = 0, j = kvol - 1; i < j; ++i, --j) {
                float t = d[i];
                d[i] = d[j];
                d[j] = t;
            }
        } else {
            for (int64_t i = 0; i < kvol; ++i)
                d[i] = s[kvol - 1 - i];
        }
    }
}

/* ---- the shared entry points ----------------------------------------------------------- */

/* oneDNN's dims are 64-bit, but its kernels compute some offsets in 32 bits: a kernel 2^31 - 1
 * wide with full padding made primitive creation divide by zero. So every operand's element
 * count, and every axis's padded input and dilated kernel, must stay below 2^31. */
static int within_onednn_range(const convoy__conv_geom *g)
{
    const int64_t limit = INT32_MAX;
    int64_t counts[3] = {convoy__geom_input_numel(g), convoy__geom_filter_numel(g),
                         convoy__geom_output_numel(g)};
    for (int i = 0; i < 3; ++i) {
        if (counts[i] < 0 || counts[i] > limit)
            return 0;
    }
    for (int a = 0; a < 3; ++a) {
        int64_t padded = g->in[a], dilated = 0;
        if (!convoy__add_i64(padded, g->pad_before[a], &padded) ||
            !convoy__add_i64(padded, g->pad_after[a], &padded) ||
            !convoy__mul_i64(g->kernel[a] - 1, g->dilation[a], &dilated) || padded > limit ||
            dilated >= limit)
            return 0;
    }
    return 1;
}

const char *convoy__onednn_refusal(const convoy__conv_geom *g)
{
    if (g->unshared)
        return "unshared filters are not a oneDNN primitive";
    if (g->batch == 0 || g->in_channels == 0 || g->out_channels == 0)
        return "empty tensors have nothing for oneDNN to compute (the other algorithms "
               "zero-fill them)";
    if (!within_onednn_range(g))
        return "a tensor or a padded or dilated extent beyond 2^31 - 1, past what oneDNN's "
               "kernels index safely";
    return NULL;
}

int convoy__onednn_workspace(convoy__backend *be, const convoy__conv_geom *g,
                             convoy_conv_direction direction, convoy__onednn_method method,
                             size_t *bytes)
{
    onednn_plan *p = NULL;
    /* A oneDNN that cannot describe this convolution offers nothing; the planner says so. */
    if (plan_build(g, direction, method, convoy__host_conv_threads(be, g), 0, &p) != CONVOY_OK)
        return 0;
    *bytes = p->workspace_bytes;
    plan_free(p);
    return 1;
}

convoy_status convoy__onednn_prepare(convoy__backend *be, convoy__conv_plan *plan,
                                     convoy__onednn_method method)
{
    onednn_plan *p = NULL;
    convoy_status status = plan_build(&plan->geom, plan->direction, method,
                                      convoy__host_conv_threads(be, &plan->geom), 1, &p);
    if (status != CONVOY_OK)
        return status;
    if (p->workspace_bytes > plan->workspace_bytes) {
        size_t need = p->workspace_bytes;
        plan_free(p);
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "onednn convolution: the primitive needs %zu bytes of workspace but "
                             "the plan holds %zu",
                             need, plan->workspace_bytes);
    }
    plan->algo_data = p;
    return CONVOY_OK;
}

void convoy__onednn_release(convoy__backend *be, convoy__conv_plan *plan)
{
    onednn_plan *p = plan->algo_data;
    if (p)
        convoy__scratch_free(be, &p->cache);
    plan_free(p);
    plan->algo_data = NULL;
}

/* Takes the plan's filter cache for one run with these filters: returns the buffer to reorder
 * them into (NULL when the cache is not to be used: unknown content, busy, or no memory for
 * it), with *hit set when it already holds them. The caller gives the lock back with
 * cache_leave. */
static float *cache_enter(convoy__backend *be, onednn_plan *p, uint64_t content, int *hit)
{
    *hit = 0;
    if (!p->cache_filters || !content || pthread_mutex_trylock(&p->cache_lock) != 0)
        return NULL;
    if (p->cache_refused) {
        pthread_mutex_unlock(&p->cache_lock);
        return NULL;
    }
    if (!p->cache.ptr) {
        /* A refusal is not an error of the convolution, which reorders into its workspace
         * instead: the thread's last error message stays what it was. */
        char message[512];
        snprintf(message, sizeof message, "%s", convoy__error_text());
        size_t bytes = dnnl_memory_desc_get_size(&p->ops[OP_WEIGHTS].inner);
        if (convoy__scratch_alloc(be, bytes, "the reordered filters of a onednn plan", &p->cache) !=
            CONVOY_OK) {
            convoy__error_set_text(message);
            p->cache_refused = 1;
            pthread_mutex_unlock(&p->cache_lock);
            return NULL;
        }
    }
    *hit = p->cached_content == content;
    if (!*hit)
        p->cached_content = 0; /* until the reorder into it has succeeded */
    return p->cache.ptr;
}

static void cache_leave(onednn_plan *p, float *cache)
{
    if (cache)
        pthread_mutex_unlock(&p->cache_lock);
}

/* Executes one primitive of pd with its arguments, and its scratchpad (if it has one) at the
 * start of the workspace: the primitives run one after another, so they share those bytes. */
static convoy_status execute(dnnl_primitive_t primitive, const_dnnl_primitive_desc_t pd,
                             dnnl_engine_t engine, dnnl_stream_t stream, dnnl_exec_arg_t *args,
                             int nargs, void *workspace)
{
    convoy_status status = CONVOY_OK;
    dnnl_memory_t scratch = NULL;
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (md && dnnl_memory_desc_get_size(md) > 0) {
        ONEDNN_TRY(dnnl_memory_create, (&scratch, md, engine, workspace));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, scratch};
    }
    ONEDNN_TRY(dnnl_primitive_execute, (primitive, stream, nargs, args));
cleanup:
    if (scratch)
        dnnl_memory_destroy(scratch);
    return status;
}

/* Runs a plan with the convolution primitive conv of descriptor conv_pd: the plan's own, or an
 * epilogue variant on the same layouts, which then also reads bias (NULL: none). */
static convoy_status run_with(convoy__backend *be, const convoy__conv_plan *plan,
                              const convoy__conv_buffers *buffers, void *workspace,
                              dnnl_primitive_t conv, const_dnnl_primitive_desc_t conv_pd,
                              const float *bias)
{
    onednn_plan *p = plan->algo_data;
    const convoy__conv_geom *g = &plan->geom;
    if (!p || (p->workspace_bytes && (!workspace || plan->workspace_bytes < p->workspace_bytes)))
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "onednn convolution: run without a prepared plan or its %zu bytes "
                             "of workspace",
                             p ? p->workspace_bytes : (size_t)0);
    /* oneDNN's kernels may use aligned vector loads on the scratchpad and the blocked operands,
     * which start at multiples of ALIGNMENT from here (the pool aligns blocks to 256 bytes). */
    if ((uintptr_t)workspace % ALIGNMENT)
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "onednn convolution: the workspace at %p is not %d-byte aligned",
                             workspace, ALIGNMENT);
    char *ws = workspace;
    const int64_t blocks = g->out_channels * (g->in_channels / g->groups);
    const int64_t kvol = convoy__geom_kernel_spatial(g);
    int cache_hit = 0;
    float *cache = cache_enter(be, p, buffers->filters_content, &cache_hit);
    float *filters = buffers->filters;
    if (p->flip_filters && !cache_hit) {
        float *flipped = (float *)(ws + p->flipped_offset);
        reverse_taps(filters, flipped, blocks, kvol);
        filters = flipped;
    }
    float *user_data[OP_COUNT] = {buffers->input, filters, buffers->output};
    char *inner_data[OP_COUNT];
    for (int i = 0; i < OP_COUNT; ++i)
        inner_data[i] = i == OP_WEIGHTS && cache ? (char *)cache : ws + p->ops[i].offset;

    convoy_status status = CONVOY_OK;
    omp_scope scope = omp_enter(p->threads);
    dnnl_stream_t stream = NULL;
    dnnl_memory_t user[OP_COUNT] = {NULL}, inner[OP_COUNT] = {NULL}, bias_memory = NULL;
    ONEDNN_TRY(dnnl_stream_create, (&stream, p->engine, dnnl_stream_default_flags));
    for (int i = 0; i < OP_COUNT; ++i) {
        const operand *o = &p->ops[i];
        ONEDNN_TRY(dnnl_memory_create, (&user[i], &o->user, p->engine, user_data[i]));
        if (o->reordered)
            ONEDNN_TRY(dnnl_memory_create, (&inner[i], &o->inner, p->engine, inner_data[i]));
    }
    if (bias) {
        const dnnl_memory_desc_t *md =
            dnnl_primitive_desc_query_md(conv_pd, dnnl_query_exec_arg_md, DNNL_ARG_BIAS);
        /* oneDNN reads the bias; its memory object only takes a non-const pointer. */
        ONEDNN_TRY(dnnl_memory_create, (&bias_memory, md, p->engine, (void *)(uintptr_t)bias));
    }
    /* Reorders in (not the filters when the cache holds them), the convolution, the reorder
     * out. */
    for (int i = 0; i < OP_COUNT; ++i) {
        const operand *o = &p->ops[i];
        if (!o->reordered || o->written || (i == OP_WEIGHTS && cache_hit))
            continue;
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, user[i]}, {DNNL_ARG_TO, inner[i]}};
        status = execute(o->reorder, o->reorder_pd, p->engine, stream, args, 2, ws);
        if (status != CONVOY_OK)
            goto cleanup;
        if (i == OP_WEIGHTS && cache)
            p->cached_content = buffers->filters_content;
    }
    dnnl_exec_arg_t args[OP_COUNT + 2];
    int nargs = 0;
    for (int i = 0; i < OP_COUNT; ++i)
        args[nargs++] = (dnnl_exec_arg_t){p->ops[i].arg, p->ops[i].reordered ? inner[i] : user[i]};
    if (bias_memory)
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias_memory};
    status = execute(conv, conv_pd, p->engine, stream, args, nargs, ws);
    if (status != CONVOY_OK)
        goto cleanup;
    for (int i = 0; i < OP_COUNT; ++i) {
        const operand *o = &p->ops[i];
        if (!o->reordered || !o->written)
            continue;
        dnnl_exec_arg_t back[3] = {{DNNL_ARG_FROM, inner[i]}, {DNNL_ARG_TO, user[i]}};
        status = execute(o->reorder, o->reorder_pd, p->engine, stream, back, 2, ws);
        if (status != CONVOY_OK)
            goto cleanup;
    }
    ONEDNN_TRY(dnnl_stream_wait, (stream));
    if (p->flip_result)
        reverse_taps(buffers->filters, buffers->filters, blocks, kvol);

cleanup:
    cache_leave(p, cache);
    for (int i = 0; i < OP_COUNT; ++i) {
        if (user[i])
            dnnl_memory_destroy(user[i]);
        if (inner[i])
            dnnl_memory_destroy(inner[i]);
    }
    if (bias_memory)
        dnnl_memory_destroy(bias_memory);
    if (stream)
        dnnl_stream_destroy(stream);
    omp_leave(scope);
    return status;
}

convoy_status convoy__onednn_run(convoy__backend *be, void *native_stream,
                                 const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                                 void *workspace)
{
    (void)native_stream;
    const onednn_plan *p = plan->algo_data;
    return run_with(be, plan, buffers, workspace, p ? p->conv : NULL, p ? p->conv_pd : NULL, NULL);
}

/* ---- fused epilogues -------------------------------------------------------------------- */

/* Builds the epilogue variant of a forward plan (see fused_pd_create): CONVOY_ERR_UNSUPPORTED
 * when oneDNN picks other layouts for it or needs more scratchpad than the plan holds; a
 * oneDNN error otherwise. */
static convoy_status fused_build(onednn_plan *p, const convoy__conv_geom *g, int has_bias, int relu,
                                 fused_variant *v)
{
    convoy_status status = fused_pd_create(p, g, has_bias, relu, &v->pd);
    if (status != CONVOY_OK)
        return status;
    omp_scope scope = omp_enter(p->threads);
    const dnnl_memory_desc_t *scratch =
        dnnl_primitive_desc_query_md(v->pd, dnnl_query_scratchpad_md, 0);
    if ((scratch ? dnnl_memory_desc_get_size(scratch) : 0) > p->scratch_bytes) {
        status = CONVOY_ERR_UNSUPPORTED;
        goto cleanup;
    }
    for (int i = 0; i < OP_COUNT; ++i) {
        const dnnl_memory_desc_t *md =
            dnnl_primitive_desc_query_md(v->pd, dnnl_query_exec_arg_md, p->ops[i].arg);
        if (!md || !dnnl_memory_desc_equal(md, &p->ops[i].inner)) {
            status = CONVOY_ERR_UNSUPPORTED;
            goto cleanup;
        }
    }
    ONEDNN_TRY(dnnl_primitive_create, (&v->primitive, v->pd));
cleanup:
    omp_leave(scope);
    return status;
}

convoy_status convoy__onednn_run_fused(convoy__backend *be, void *native_stream,
                                       const convoy__conv_plan *plan,
                                       const convoy__conv_buffers *buffers, void *workspace,
                                       const convoy__conv_epilogue *epilogue)
{
    onednn_plan *p = plan->algo_data;
    if (!p || !p->has_fused_lock)
        return CONVOY_ERR_UNSUPPORTED;
    const int has_bias = epilogue->bias != NULL;
    const int relu = epilogue->act == CONVOY_ACTIVATION_RELU;
    if (!has_bias && !relu)
        return convoy__onednn_run(be, native_stream, plan, buffers, workspace);
    fused_variant *v = &p->fused[has_bias][relu];
    pthread_mutex_lock(&p->fused_lock);
    if (v->state == 0) {
        /* A variant that cannot be built is not an error of this task: the runtime runs the
         * plain primitive and the epilogue pass instead, now and for every later run. */
        v->state = fused_build(p, &plan->geom, has_bias, relu, v) == CONVOY_OK ? 1 : -1;
        if (v->state < 0)
            convoy__error_set_text(NULL);
    }
    const int state = v->state;
    pthread_mutex_unlock(&p->fused_lock);
    if (state < 0)
        return CONVOY_ERR_UNSUPPORTED;
    return run_with(be, plan, buffers, workspace, v->primitive, v->pd, epilogue->bias);
}

/* ---- sgemm ------------------------------------------------------------------------------ */

convoy_status convoy__onednn_sgemm(const convoy__gemm *g, int threads)
{
    convoy_status status = CONVOY_OK;
    omp_scope scope = omp_enter(threads);
    /* dnnl_sgemm is row-major: the column-major C = op(A) op(B) is the row-major
     * C^T = op(B)^T op(A)^T, the same memory with the operands swapped. */
    for (int64_t i = 0; i < g->batch; ++i) {
        dnnl_status_t s =
            dnnl_sgemm(g->trans_b ? 'T' : 'N', g->trans_a ? 'T' : 'N', g->n, g->m, g->k, g->alpha,
                       g->b + i * g->stride_b, g->ldb, g->a + i * g->stride_a, g->lda, g->beta,
                       g->c + i * g->stride_c, g->ldc);
        if (s != dnnl_success) {
            status = dnnl_failure("dnnl_sgemm", s);
            break;
        }
    }
    omp_leave(scope);
    return status;
}

/* ---- the description ------------------------------------------------------------------- */

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41:
        return "sse41";
    case dnnl_cpu_isa_avx:
        return "avx";
    case dnnl_cpu_isa_avx2:
        return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
        return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core:
        return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
        return "avx512_core_amx";
    default:
        return "any ISA";
    }
}

void convoy__cpu_onednn_describe(char *buffer, size_t size, int threads)
{
    const dnnl_version_t *v = dnnl_version();
    snprintf(buffer, size, "oneDNN %d.%d.%d (%s, %d OpenMP thread%s per task)", v->major, v->minor,
             v->patch, isa_name(dnnl_get_effective_cpu_isa()), threads, threads == 1 ? "" : "s");
}

#else /* !CONVOY_HAVE_ONEDNN */

const char *convoy__onednn_refusal(const convoy__conv_geom *g)
{
    (void)g;
    return "convoy was built without oneDNN";
}

/* Never called: the refusal turns every convolution away. */
int convoy__onednn_workspace(convoy__backend *be, const convoy__conv_geom *g,
                             convoy_conv_direction direction, convoy__onednn_method method,
                             size_t *bytes)
{
    (void)be;
    (void)g;
    (void)direction;
    (void)method;
    *bytes = 0;
    return 0;
}

convoy_status convoy__onednn_prepare(convoy__backend *be, convoy__conv_plan *plan,
                                     convoy__onednn_method method)
{
    (void)be;
    (void)plan;
    (void)method;
    return convoy__error(CONVOY_ERR_UNSUPPORTED, "onednn convolution: convoy was built without "
                                                 "oneDNN");
}

void convoy__onednn_release(convoy__backend *be, convoy__conv_plan *plan)
{
    (void)be;
    plan->algo_data = NULL;
}

convoy_status convoy__onednn_run(convoy__backend *be, void *native_stream,
                                 const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                                 void *workspace)
{
    (void)be;
    (void)native_stream;
    (void)plan;
    (void)buffers;
    (void)workspace;
    return convoy__error(CONVOY_ERR_UNSUPPORTED, "onednn convolution: convoy was built without "
                                                 "oneDNN");
}

convoy_status convoy__onednn_run_fused(convoy__backend *be, void *native_stream,
                                       const convoy__conv_plan *plan,
                                       const convoy__conv_buffers *buffers, void *workspace,
                                       const convoy__conv_epilogue *epilogue)
{
    (void)be;
    (void)native_stream;
    (void)plan;
    (void)buffers;
    (void)workspace;
    (void)epilogue;
    return CONVOY_ERR_UNSUPPORTED;
}

/* No oneDNN: the caller runs its GEMMs on OpenBLAS. */
convoy_status convoy__onednn_sgemm(const convoy__gemm *g, int threads)
{
    (void)g;
    (void)threads;
    return CONVOY_ERR_UNSUPPORTED;
}

void convoy__cpu_onednn_describe(char *buffer, size_t size, int threads)
{
    (void)threads;
    snprintf(buffer, size, "built without oneDNN");
}

#endif /* CONVOY_HAVE_ONEDNN */
