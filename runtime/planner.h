/* Convolution planning (DESIGN.md section 4): for each direction, geometry
 * and device, choose an implementation, its workspace and, for the GEMM
 * paths, the images per im2col chunk; cache the result.
 *
 * Plans are reference-counted. The cache holds one reference to each plan it
 * keeps; convoy__planner_plan() hands the caller another, which it drops with
 * convoy__planner_release(). A convolution task does not hold a count: it
 * lists the plan's users record among its accesses (convoy__planner_users),
 * so the plan also outlives every task submitted with it, whether that task
 * ran, failed or was skipped. A plan the cache evicted is freed once its
 * count is zero and its users have completed. */
#ifndef CONVOY_RUNTIME_PLANNER_H
#define CONVOY_RUNTIME_PLANNER_H

#include <stddef.h>

#include "convoy.h"
#include "core/device.h"
#include "kernels/conv_algo.h"
#include "memory/pool.h"
#include "scheduler/scheduler.h"

/* The most plans the cache keeps. Past it the least recently used plan is
 * evicted; programs rarely have more than a few hundred distinct
 * convolutions, so only a workload of ever-new shapes (a new batch size
 * every step) reaches it. */
#define CONVOY__PLAN_CACHE_SIZE 1024

typedef struct convoy__planner convoy__planner;

typedef struct convoy__planner_config {
    convoy__backend *backend;
    /* What workspaces come from: plans fit under what it can grant now as
     * well as under workspace_limit. NULL: workspace_limit alone. */
    convoy__pool *pool;
    /* The scheduler whose tasks use the plans; an evicted plan is freed once
     * they completed. NULL when no task ever uses a plan (tests). */
    convoy__scheduler *scheduler;
    const char *exclude; /* comma-separated algorithm or candidate names to leave out; copied */
    int deterministic;   /* keep only deterministic candidates */
    int exact_only;      /* keep only exact candidates (no Winograd, no FFT) */
    convoy_algo_policy policy;
    size_t workspace_limit;      /* bytes one convolution's scratch may take */
    const char *tune_cache_path; /* NULL: no persistent cache */
    const char *environment;     /* what invalidates tuned choices */
    convoy_log_fn log;
    void *log_user_data;
} convoy__planner_config;

convoy_status convoy__planner_create(const convoy__planner_config *config, convoy__planner **out);

/* Frees every plan, evicted ones still waiting for their users included.
 * Call it once no task can run any more (after the scheduler is drained). */
void convoy__planner_destroy(convoy__planner *planner);

/* Returns the plan for a convolution, building and caching it on first use,
 * with a reference the caller drops with convoy__planner_release(); the plan
 * stays valid until then. call names the public entry point for error
 * messages. Errors: CONVOY_ERR_UNSUPPORTED when every candidate is excluded
 * or unable (the message lists each candidate and why),
 * CONVOY_ERR_OUT_OF_MEMORY when only the workspace limit or the memory the
 * pool can grant stands in the way (with the numbers). Thread-safe; may
 * take the scheduler's lock, so it must not be called under it. */
convoy_status convoy__planner_plan(convoy__planner *planner, const char *call,
                                   const convoy__conv_geom *geom, convoy_conv_direction direction,
                                   const convoy__conv_plan **plan, int *from_cache);

/* Drops a reference convoy__planner_plan() returned. NULL plan: no-op. Must
 * not be called under the scheduler's lock. */
void convoy__planner_release(convoy__planner *planner, const convoy__conv_plan *plan);

/* The plan to switch to when the pool cannot grant plan's workspace even for
 * one image: another candidate that needs less (often none), prepared with
 * the plan; NULL when there is none. Valid as long as plan. */
const convoy__conv_plan *convoy__planner_fallback(const convoy__conv_plan *plan);

/* The record of the tasks that use plan: a convolution task lists it as a
 * read access, which orders it after nothing and keeps the plan alive until
 * the task completes. Guarded by the scheduler's lock like a tensor's. */
convoy__hazards *convoy__planner_users(const convoy__conv_plan *plan);

/* For tests: what the planner holds and has done. */
typedef struct convoy__planner_counts {
    size_t cached; /* plans in the cache */
    size_t alive;  /* plans not freed: cached, or evicted but still referenced or used by a task
                      not yet seen complete */
    size_t built;  /* plans built (and, under the time_* policies, timed) since create */
} convoy__planner_counts;

void convoy__planner_get_counts(convoy__planner *planner, convoy__planner_counts *counts);

/* The cache key of a convolution: direction and every field of the
 * geometry, as text ("fwd n8 c64 m64 g1 i1x56x56 k1x3x3 ..."). */
void convoy__plan_key(const convoy__conv_geom *geom, convoy_conv_direction direction, char *buffer,
                      size_t size);

/* The site of a convolution for time_on_shape_change: the plan key without
 * the batch size ("fwd c64 m64 g1 i1x56x56 k1x3x3 ..."). A layer is one site
 * whatever its batch; two layers differ in some other field (channels,
 * extents, kernel, padding, stride, dilation, flip, sharing) and so are two
 * sites. */
void convoy__plan_site(const convoy__conv_geom *geom, convoy_conv_direction direction, char *buffer,
                       size_t size);

#endif /* CONVOY_RUNTIME_PLANNER_H */
