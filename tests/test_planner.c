/* Algorithm selection without a GPU: the planner against a mock backend
 * whose candidates, costs, determinism and timings the test controls. Covers
 * the plan-cache key, heuristic ranking, exclusion, determinism, workspace
 * limits, time_once with the persistent tune cache, time_on_shape_change
 * and its sites, the bounded cache, plan references and fallbacks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/pool.h"
#include "runtime/planner.h"
#include "temp_files.h"

typedef struct mock_backend {
    convoy__backend base;
    int time_calls;
    int prepare_calls;
    int release_calls;
    double times[4]; /* ms each candidate takes */
    size_t capacity; /* device memory it reports; 0 = unknown */
} mock_backend;

static const char *mock_describe(convoy__backend *be)
{
    return "mock device";
}

/* Four algorithms: a cuDNN-like one whose one candidate is fast but
 * non-deterministic with a big workspace, a GEMM one with per-image
 * workspace, a 1x1 one for pointwise geometries only, and direct. */
typedef struct mock_spec {
    const char *candidate;
    size_t fixed, per_image;
    int deterministic;
    int exact;
    int64_t chunk_hint;
    double cost;
    int time_index;
} mock_spec;

/* cudnn:FAST is also inexact (a transform algorithm); gemm gains nothing past 5 images. */
static const mock_spec specs[4] = {
    {"cudnn:FAST", 4096, 0, 0, 0, 0, 1.0, 0},
    {"gemm", 0, 1000, 1, 1, 5, 2.0, 1},
    {"1x1", 0, 0, 1, 1, 0, 0.5, 2},
    {"direct", 0, 0, 1, 1, 0, 100.0, 3},
};

static const mock_spec *spec_of(const convoy__conv_algo *algo)
{
    for (int i = 0; i < 4; ++i) {
        if (!strncmp(specs[i].candidate, algo->name, strlen(algo->name)))
            return &specs[i];
    }
    return NULL;
}

static const char *pointwise_only(convoy__backend *be, const convoy__conv_geom *g,
                                  convoy_conv_direction direction)
{
    return convoy__geom_is_pointwise(g) ? NULL : "needs a pointwise geometry";
}

static void mock_candidates(convoy__backend *be, const convoy__conv_algo *self,
                            const convoy__conv_geom *g, convoy_conv_direction direction,
                            convoy__candidate_list *list)
{
    const mock_spec *s = spec_of(self);
    convoy__conv_candidate *c =
        convoy__candidate_add(list, self, s->candidate, s->fixed, s->per_image, s->cost);
    c->deterministic = s->deterministic;
    c->exact = s->exact;
    c->chunk_hint = s->chunk_hint;
    c->variant = 7;
}

static convoy_status mock_prepare(convoy__backend *be, convoy__conv_plan *plan)
{
    ((mock_backend *)be)->prepare_calls++;
    return CONVOY_OK;
}

static void mock_release(convoy__backend *be, convoy__conv_plan *plan)
{
    ((mock_backend *)be)->release_calls++;
}

static convoy_status mock_run(convoy__backend *be, void *native_stream,
                              const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                              void *workspace)
{
    return CONVOY_OK;
}

static convoy_status mock_time(convoy__backend *be, const convoy__conv_plan *plan, double *ms)
{
    mock_backend *m = (mock_backend *)be;
    m->time_calls++;
    *ms = m->times[spec_of(plan->candidate.algo)->time_index];
    return CONVOY_OK;
}

static const convoy__conv_algo mock_cudnn = {
    "cudnn", NULL, mock_candidates, mock_prepare, mock_release, mock_run, NULL, NULL};
static const convoy__conv_algo mock_gemm = {
    "gemm", NULL, mock_candidates, mock_prepare, mock_release, mock_run, NULL, NULL};
static const convoy__conv_algo mock_1x1 = {
    "1x1", pointwise_only, mock_candidates, mock_prepare, mock_release, mock_run, NULL, NULL};
static const convoy__conv_algo mock_direct = {
    "direct", NULL, mock_candidates, mock_prepare, mock_release, mock_run, NULL, NULL};
static const convoy__conv_algo *const mock_algos[] = {&mock_cudnn, &mock_gemm, &mock_1x1,
                                                      &mock_direct};

static convoy_status mock_mem_alloc(convoy__backend *be, size_t bytes, void **out)
{
    *out = aligned_alloc(256, (bytes + 255) / 256 * 256);
    return *out ? CONVOY_OK : CONVOY_ERR_OUT_OF_MEMORY;
}

static void mock_mem_free(convoy__backend *be, void *ptr)
{
    free(ptr);
}

static size_t mock_capacity(convoy__backend *be)
{
    return ((mock_backend *)be)->capacity;
}

static const convoy__backend_ops mock_ops = {
    .name = "mock",
    .device = CONVOY_DEVICE_CPU,
    .describe = mock_describe,
    .mem_alloc = mock_mem_alloc,
    .mem_free = mock_mem_free,
    .memory_capacity = mock_capacity,
};

static const convoy__conv_registry mock_registry = {mock_algos, 4, mock_run, mock_time, NULL};

static void geometry(convoy__conv_geom *g, int64_t batch, int64_t size, int64_t kernel)
{
    memset(g, 0, sizeof *g);
    g->spatial_dims = 2;
    g->batch = batch;
    g->in_channels = 4;
    g->out_channels = 8;
    g->groups = 1;
    g->flip = 1;
    for (int a = 0; a < 3; ++a) {
        g->in[a] = a ? size : 1;
        g->kernel[a] = a ? kernel : 1;
        g->out[a] = a ? size - kernel + 1 : 1;
        g->stride[a] = g->dilation[a] = 1;
    }
}

static convoy__planner *make_planner_exact(mock_backend *m, const char *exclude, int deterministic,
                                           int exact_only, convoy_algo_policy policy, size_t limit,
                                           const char *cache, const char *environment)
{
    m->base.ops = &mock_ops;
    m->base.conv = &mock_registry;
    convoy__planner_config config = {.backend = &m->base,
                                     .exclude = exclude,
                                     .deterministic = deterministic,
                                     .exact_only = exact_only,
                                     .policy = policy,
                                     .workspace_limit = limit,
                                     .tune_cache_path = cache,
                                     .environment = environment};
    convoy__planner *p = NULL;
    assert_int_equal(convoy__planner_create(&config, &p), CONVOY_OK);
    return p;
}

static convoy__planner *make_planner(mock_backend *m, const char *exclude, int deterministic,
                                     convoy_algo_policy policy, size_t limit, const char *cache,
                                     const char *environment)
{
    return make_planner_exact(m, exclude, deterministic, 0, policy, limit, cache, environment);
}

/* Names leave out a whole algorithm or one candidate; exact_only drops inexact candidates;
 * a chunk hint caps the images per chunk below what the workspace limit allows, and the
 * workspace taken is only what that chunk uses; a refusal is quoted. */
static void test_names_exactness_and_chunk_hint(void **state)
{
    convoy__conv_geom g;
    geometry(&g, 16, 10, 3);
    const convoy__conv_plan *plan = NULL;

    mock_backend a = {0};
    convoy__planner *p =
        make_planner(&a, "cudnn:FAST", 0, CONVOY_ALGO_HEURISTIC, 1 << 20, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "gemm");
    assert_string_equal(plan->candidate.algo->name, "gemm");
    assert_int_equal(plan->images_per_chunk, 5);
    assert_int_equal(plan->workspace_bytes, 5000);
    convoy__planner_destroy(p);

    mock_backend b = {0};
    p = make_planner_exact(&b, NULL, 0, 1, CONVOY_ALGO_HEURISTIC, 1 << 20, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "gemm");
    convoy__planner_destroy(p);

    mock_backend c = {0};
    p = make_planner_exact(&c, "GEMM,direct", 0, 1, CONVOY_ALGO_HEURISTIC, 1 << 20, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "conv_forward", &g, CONVOY_CONV_FORWARD, &plan, NULL),
                     CONVOY_ERR_UNSUPPORTED);
    const char *message = convoy_last_error_message();
    assert_non_null(strstr(message, "cudnn:FAST: not exact"));
    assert_non_null(strstr(message, "gemm: excluded"));
    assert_non_null(strstr(message, "1x1: needs a pointwise geometry"));
    convoy__planner_destroy(p);
}

static void test_plan_key_covers_every_field(void **state)
{
    convoy__conv_geom base, g;
    geometry(&base, 2, 10, 3);
    char a[400], b[400];
    convoy__plan_key(&base, CONVOY_CONV_FORWARD, a, sizeof a);
    convoy__plan_key(&base, CONVOY_CONV_FORWARD, b, sizeof b);
    assert_string_equal(a, b);
    convoy__plan_key(&base, CONVOY_CONV_BACKWARD_DATA, b, sizeof b);
    assert_string_not_equal(a, b);
    int64_t *fields[] = {&g.batch,        &g.in_channels, &g.out_channels, &g.groups,
                         &g.in[1],        &g.kernel[2],   &g.out[0],       &g.pad_before[1],
                         &g.pad_after[2], &g.stride[1],   &g.dilation[2]};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; ++i) {
        g = base;
        *fields[i] += 1;
        convoy__plan_key(&g, CONVOY_CONV_FORWARD, b, sizeof b);
        assert_string_not_equal(a, b);
    }
    g = base;
    g.flip = 0;
    convoy__plan_key(&g, CONVOY_CONV_FORWARD, b, sizeof b);
    assert_string_not_equal(a, b);
    g = base;
    g.unshared = 1;
    convoy__plan_key(&g, CONVOY_CONV_FORWARD, b, sizeof b);
    assert_string_not_equal(a, b);
}

static void test_heuristic_exclusion_determinism_workspace(void **state)
{
    convoy__conv_geom g;
    geometry(&g, 4, 10, 3);
    const convoy__conv_plan *plan = NULL;
    int cached = -1;

    mock_backend m = {0};
    convoy__planner *p = make_planner(&m, NULL, 0, CONVOY_ALGO_HEURISTIC, 1 << 20, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, &cached),
                     CONVOY_OK);
    assert_string_equal(plan->candidate.name, "cudnn:FAST");
    assert_int_equal(plan->workspace_bytes, 4096);
    assert_int_equal(cached, 0);
    const convoy__conv_plan *again = NULL;
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &again, &cached),
                     CONVOY_OK);
    assert_ptr_equal(plan, again);
    assert_int_equal(cached, 1);
    /* The plan and its fallback, the candidate needing least workspace. */
    const convoy__conv_plan *fallback = convoy__planner_fallback(plan);
    assert_non_null(fallback);
    assert_string_equal(fallback->candidate.name, "direct");
    assert_int_equal(fallback->workspace_bytes, 0);
    assert_int_equal(m.prepare_calls, 2);
    assert_int_equal(m.time_calls, 0);
    convoy__planner_release(p, plan);
    convoy__planner_release(p, again);
    convoy__planner_destroy(p);
    assert_int_equal(m.release_calls, 2);

    /* Determinism drops the fast candidate; a tight limit shrinks the chunk. */
    mock_backend d = {0};
    p = make_planner(&d, NULL, 1, CONVOY_ALGO_HEURISTIC, 2500, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "gemm");
    assert_int_equal(plan->images_per_chunk, 2);
    assert_int_equal(plan->workspace_bytes, 2000);
    assert_string_equal(convoy__planner_fallback(plan)->candidate.name, "direct");
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);

    /* Pointwise geometries take the 1x1 path. */
    convoy__conv_geom pointwise;
    geometry(&pointwise, 4, 10, 1);
    mock_backend q = {0};
    p = make_planner(&q, "cudnn", 0, CONVOY_ALGO_HEURISTIC, 1 << 20, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "t", &pointwise, CONVOY_CONV_FORWARD, &plan, NULL),
                     CONVOY_OK);
    assert_string_equal(plan->candidate.name, "1x1");
    /* Nothing needs less than no workspace: no fallback. */
    assert_null(convoy__planner_fallback(plan));
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);

    /* Only direct left and excluded: unsupported, with every reason. */
    mock_backend x = {0};
    p = make_planner(&x, "cudnn,direct", 0, CONVOY_ALGO_HEURISTIC, 500, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "conv_forward", &g, CONVOY_CONV_FORWARD, &plan, NULL),
                     CONVOY_ERR_UNSUPPORTED);
    const char *message = convoy_last_error_message();
    assert_non_null(strstr(message, "conv_forward"));
    assert_non_null(strstr(message, "cudnn:FAST: excluded"));
    assert_non_null(strstr(message, "direct: excluded"));
    assert_non_null(strstr(message, "gemm: "));
    assert_non_null(strstr(message, "500"));
    convoy__planner_destroy(p);
}

static int tune_file_setup(void **state)
{
    return temp_dir_setup(state, "convoy_planner_", "planner.tune");
}

static void test_time_once_uses_and_fills_the_tune_cache(void **state)
{
    const char *path = ((temp_dir *)*state)->path;
    convoy__conv_geom g;
    geometry(&g, 4, 10, 3);
    const convoy__conv_plan *plan = NULL;

    mock_backend m = {.times = {5.0, 2.0, 9.0, 50.0}};
    convoy__planner *p = make_planner(&m, NULL, 0, CONVOY_ALGO_TIME_ONCE, 1 << 20, path, "env A");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "gemm"); /* fastest, not cheapest by cost */
    /* direct, the last resort, is not timed while anything else applies. */
    assert_int_equal(m.time_calls, 2);
    convoy__planner_release(p, plan);
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_int_equal(m.time_calls, 2);
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);

    /* A second process with the same environment trusts the file. */
    mock_backend n = {.times = {1.0, 2.0, 9.0, 50.0}};
    p = make_planner(&n, NULL, 0, CONVOY_ALGO_TIME_ONCE, 1 << 20, path, "env A");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "gemm");
    assert_int_equal(n.time_calls, 0);
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);

    /* Another environment (new driver, new library) times again. */
    mock_backend o = {.times = {1.0, 2.0, 9.0, 50.0}};
    p = make_planner(&o, NULL, 0, CONVOY_ALGO_TIME_ONCE, 1 << 20, path, "env B");
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "cudnn:FAST");
    assert_int_equal(o.time_calls, 2);
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);
}

/* The shape of a site changes with the batch size: the new batch is timed,
 * and so is the old one when it comes back. A plan evicted meanwhile stays
 * valid while a reference to it is held. */
static void test_time_on_shape_change_retimes(void **state)
{
    convoy__conv_geom a, b;
    geometry(&a, 4, 10, 3);
    geometry(&b, 8, 10, 3);
    const convoy__conv_plan *plan = NULL, *first = NULL;
    mock_backend m = {.times = {5.0, 2.0, 9.0, 50.0}};
    convoy__planner *p =
        make_planner(&m, NULL, 0, CONVOY_ALGO_TIME_ON_SHAPE_CHANGE, 1 << 20, NULL, "e");
    assert_int_equal(convoy__planner_plan(p, "t", &a, CONVOY_CONV_FORWARD, &first, NULL),
                     CONVOY_OK);
    assert_int_equal(convoy__planner_plan(p, "t", &a, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_ptr_equal(plan, first);
    convoy__planner_release(p, plan);
    assert_int_equal(m.time_calls, 2);
    assert_int_equal(convoy__planner_plan(p, "t", &b, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    convoy__planner_release(p, plan);
    assert_int_equal(m.time_calls, 4);
    /* Back to the first batch: timed again; the evicted plan is still held. */
    m.times[0] = 0.5;
    assert_int_equal(convoy__planner_plan(p, "t", &a, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_int_equal(m.time_calls, 6);
    assert_string_equal(plan->candidate.name, "cudnn:FAST");
    assert_string_equal(first->candidate.name, "gemm");
    convoy__planner_counts counts;
    convoy__planner_get_counts(p, &counts);
    assert_int_equal(counts.cached, 1);
    assert_int_equal(counts.alive, 2);
    /* Dropping the last reference frees the evicted plan at once. */
    int released = m.release_calls;
    convoy__planner_release(p, first);
    convoy__planner_get_counts(p, &counts);
    assert_int_equal(counts.alive, 1);
    assert_int_equal(m.release_calls, released + 2); /* the plan and its fallback */
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);
    assert_int_equal(m.release_calls, m.prepare_calls);
}

/* Two layers that share channels, kernel and stride but not their extents
 * are two sites: alternating them times each once and keeps two plans. */
static void test_two_layers_are_two_sites(void **state)
{
    convoy__conv_geom a, b;
    geometry(&a, 4, 10, 3);
    geometry(&b, 4, 12, 3);
    convoy__conv_geom pads = a, dilated = a;
    pads.pad_before[1] = pads.pad_after[1] = 1;
    pads.out[1] += 2;
    dilated.dilation[2] = 2;
    dilated.out[2] -= 2;
    char site_a[400], site_b[400];
    convoy__plan_site(&a, CONVOY_CONV_FORWARD, site_a, sizeof site_a);
    const convoy__conv_geom *others[3] = {&b, &pads, &dilated};
    for (int i = 0; i < 3; ++i) {
        convoy__plan_site(others[i], CONVOY_CONV_FORWARD, site_b, sizeof site_b);
        assert_string_not_equal(site_a, site_b);
    }
    convoy__conv_geom batch = a;
    batch.batch = 64;
    convoy__plan_site(&batch, CONVOY_CONV_FORWARD, site_b, sizeof site_b);
    assert_string_equal(site_a, site_b);

    mock_backend m = {.times = {5.0, 2.0, 9.0, 50.0}};
    convoy__planner *p =
        make_planner(&m, NULL, 0, CONVOY_ALGO_TIME_ON_SHAPE_CHANGE, 1 << 20, NULL, "e");
    for (int i = 0; i < 10000; ++i) {
        const convoy__conv_plan *plan = NULL;
        assert_int_equal(
            convoy__planner_plan(p, "t", i % 2 ? &b : &a, CONVOY_CONV_FORWARD, &plan, NULL),
            CONVOY_OK);
        convoy__planner_release(p, plan);
    }
    /* Two plans built and timed once each (two timed candidates per plan). */
    assert_int_equal(m.time_calls, 2 * 2);
    convoy__planner_counts counts;
    convoy__planner_get_counts(p, &counts);
    assert_int_equal(counts.built, 2);
    assert_int_equal(counts.cached, 2);
    assert_int_equal(counts.alive, 2);
    assert_int_equal(m.prepare_calls - m.release_calls, 2 * 2);
    convoy__planner_destroy(p);
    assert_int_equal(m.release_calls, m.prepare_calls);
}

/* The cache keeps at most CONVOY__PLAN_CACHE_SIZE plans, dropping the least
 * recently used; a plan used all along survives. */
static void test_plan_cache_is_bounded(void **state)
{
    mock_backend m = {0};
    convoy__planner *p = make_planner(&m, NULL, 0, CONVOY_ALGO_HEURISTIC, 1 << 30, NULL, "e");
    convoy__conv_geom hot, g;
    geometry(&hot, 1, 10, 3);
    const convoy__conv_plan *hot_plan = NULL, *plan = NULL;
    int cached_flag = -1;
    for (int64_t batch = 2; batch < 20002; ++batch) {
        geometry(&g, batch, 10, 3);
        assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL),
                         CONVOY_OK);
        convoy__planner_release(p, plan);
        assert_int_equal(
            convoy__planner_plan(p, "t", &hot, CONVOY_CONV_FORWARD, &hot_plan, &cached_flag),
            CONVOY_OK);
        assert_int_equal(cached_flag, batch > 2);
        convoy__planner_release(p, hot_plan);
    }
    convoy__planner_counts counts;
    convoy__planner_get_counts(p, &counts);
    assert_int_equal(counts.cached, CONVOY__PLAN_CACHE_SIZE);
    assert_int_equal(counts.alive, CONVOY__PLAN_CACHE_SIZE);
    /* Each plan prepared itself and its fallback; the evicted ones are gone. */
    assert_int_equal(m.prepare_calls - m.release_calls, 2 * CONVOY__PLAN_CACHE_SIZE);
    /* The oldest batch sizes were evicted: planning them again is a miss. */
    geometry(&g, 2, 10, 3);
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, &cached_flag),
                     CONVOY_OK);
    assert_int_equal(cached_flag, 0);
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);
    assert_int_equal(m.release_calls, m.prepare_calls);
}

/* Workspaces fit what the device has left beside the pool's blocks in use,
 * not just the workspace limit; once memory comes back the plan is made
 * again with the chunk the limit alone allows. */
static void test_workspace_fits_what_the_device_has_left(void **state)
{
    mock_backend m = {0};
    m.base.ops = &mock_ops;
    m.base.conv = &mock_registry;
    convoy__pool *pool = NULL;
    assert_int_equal(convoy__pool_create(&m.base, 0, 0, &pool), CONVOY_OK);
    convoy__block *tensors = NULL;
    assert_int_equal(convoy__pool_alloc(pool, (size_t)4 << 20, NULL, "tensors", &tensors),
                     CONVOY_OK);
    convoy_memory_statistics stats;
    convoy__pool_stats(pool, &stats);
    m.capacity = stats.bytes_in_use + 2500; /* room for two images of gemm */
    convoy__planner_config config = {.backend = &m.base,
                                     .pool = pool,
                                     .exclude = "cudnn",
                                     .policy = CONVOY_ALGO_HEURISTIC,
                                     .workspace_limit = 1 << 20};
    convoy__planner *p = NULL;
    assert_int_equal(convoy__planner_create(&config, &p), CONVOY_OK);
    convoy__conv_geom g;
    geometry(&g, 4, 10, 3);
    const convoy__conv_plan *plan = NULL;
    int cached = -1;
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, &cached),
                     CONVOY_OK);
    assert_string_equal(plan->candidate.name, "gemm");
    assert_int_equal(plan->images_per_chunk, 2);
    assert_int_equal(plan->workspace_bytes, 2000);
    convoy__planner_release(p, plan);
    /* Less than one image left: the zero-workspace candidate. */
    m.capacity = stats.bytes_in_use + 500;
    geometry(&g, 5, 10, 3);
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, NULL), CONVOY_OK);
    assert_string_equal(plan->candidate.name, "direct");
    convoy__planner_release(p, plan);
    /* The tensors are gone: both plans are made again, whole. */
    convoy__pool_free(pool, tensors, NULL);
    geometry(&g, 4, 10, 3);
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, &cached),
                     CONVOY_OK);
    assert_int_equal(cached, 0);
    assert_int_equal(plan->images_per_chunk, 4);
    convoy__planner_release(p, plan);
    geometry(&g, 5, 10, 3);
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, &cached),
                     CONVOY_OK);
    assert_int_equal(cached, 0);
    assert_string_equal(plan->candidate.name, "gemm");
    convoy__planner_release(p, plan);
    /* And stay made. */
    assert_int_equal(convoy__planner_plan(p, "t", &g, CONVOY_CONV_FORWARD, &plan, &cached),
                     CONVOY_OK);
    assert_int_equal(cached, 1);
    convoy__planner_release(p, plan);
    convoy__planner_destroy(p);
    convoy__pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_key_covers_every_field),
        cmocka_unit_test(test_heuristic_exclusion_determinism_workspace),
        cmocka_unit_test(test_names_exactness_and_chunk_hint),
        cmocka_unit_test_setup_teardown(test_time_once_uses_and_fills_the_tune_cache,
                                        tune_file_setup, temp_dir_teardown),
        cmocka_unit_test(test_time_on_shape_change_retimes),
        cmocka_unit_test(test_two_layers_are_two_sites),
        cmocka_unit_test(test_plan_cache_is_bounded),
        cmocka_unit_test(test_workspace_fits_what_the_device_has_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
