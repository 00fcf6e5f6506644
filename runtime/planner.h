/* Convolution planning (DESIGN.md section 4): for each direction, geometry
 * and device, choose an implementation, its workspace and, for the GEMM
 * paths, the images per im2col chunk; cache the result. */
#ifndef CONVOY_RUNTIME_PLANNER_H
#define CONVOY_RUNTIME_PLANNER_H

#include <stddef.h>

#include "convoy.h"
#include "core/device.h"
#include "kernels/conv_algo.h"

typedef struct convoy__planner convoy__planner;

typedef struct convoy__planner_config {
    convoy__backend *backend;
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
void convoy__planner_destroy(convoy__planner *planner);

/* Returns the plan for a convolution, building and caching it on first use.
 * The plan stays valid until the planner is destroyed. call names the
 * public entry point for error messages. Errors: CONVOY_ERR_UNSUPPORTED when
 * every candidate is excluded or unable (the message lists each candidate
 * and why), CONVOY_ERR_OUT_OF_MEMORY when only the workspace limit stands in
 * the way (with the numbers). */
convoy_status convoy__planner_plan(convoy__planner *planner, const char *call,
                                   const convoy__conv_geom *geom, convoy_conv_direction direction,
                                   const convoy__conv_plan **plan, int *from_cache);

/* The cache key of a convolution: direction and every field of the
 * geometry, as text ("fwd n8 c64 m64 g1 i1x56x56 k1x3x3 ..."). */
void convoy__plan_key(const convoy__conv_geom *geom, convoy_conv_direction direction, char *buffer,
                      size_t size);

#endif /* CONVOY_RUNTIME_PLANNER_H */
