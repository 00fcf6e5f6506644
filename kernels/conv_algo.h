/* Convolution algorithms as descriptors, and the registry a backend offers.
 *
 * An algorithm is a name ("gemm", "1x1", "direct", "cudnn", ...), a test of
 * which convolutions it can run (with a reason the planner can quote when it
 * cannot), the candidates it offers for one (most offer one; cuDNN one per
 * cuDNN algorithm), each with its workspace, determinism, exactness and a
 * heuristic cost, and the functions that prepare, run and release a plan.
 * Each backend lists its algorithms in a registry (cpu/host_backend.c,
 * cuda/cuda_conv.c); the planner, CONVOY_EXCLUDE / CONVOY_REQUIRE,
 * convoy_conv_explain, the tune cache and the time_* policies all work by
 * name. Adding an algorithm is one file with its descriptor and one row in
 * its backend's table.
 *
 * Which lock each entry runs under: refusal, candidates, prepare, release
 * and the registry's time run under the planner's lock, from any submitting
 * thread, outside the scheduler's lock; the registry's run is called from a
 * stream's work function. A backend that shares library handles between
 * them guards the handles itself. */
#ifndef CONVOY_KERNELS_CONV_ALGO_H
#define CONVOY_KERNELS_CONV_ALGO_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"
#include "core/device.h"

typedef struct convoy__conv_algo convoy__conv_algo;

/* The epilogue of a forward convolution, output = act(output + bias[m]), for the algorithms
 * that can fuse it (run_fused below). */
typedef struct convoy__conv_epilogue {
    const float *bias; /* (M); NULL: none */
    convoy_activation act;
} convoy__conv_epilogue;

/* One way to run one convolution. */
typedef struct convoy__conv_candidate {
    const convoy__conv_algo *algo;
    int variant;            /* algorithm-specific (a cuDNN algorithm enum), else 0 */
    char name[48];          /* "gemm", "cudnn:IMPLICIT_PRECOMP_GEMM": what the tune cache keeps */
    size_t workspace_fixed; /* scratch bytes independent of the chunk */
    size_t workspace_per_image; /* scratch bytes per image of a chunk (GEMM paths) */
    int64_t chunk_hint;         /* images per chunk past which the algorithm gains nothing
                                   (it keeps the column matrix cache-sized); 0 = no hint */
    int deterministic;          /* 1 when results are bit-reproducible */
    int exact;                  /* 0 for transform-based algorithms (Winograd, FFT) */
    double cost;                /* heuristic rank: lower runs first */
} convoy__conv_candidate;

#define CONVOY__MAX_CANDIDATES 24

/* The candidates the planner gathers for one convolution. */
typedef struct convoy__candidate_list {
    convoy__conv_candidate items[CONVOY__MAX_CANDIDATES];
    int count;
} convoy__candidate_list;

/* A chosen way to run one convolution; built by the planner, cached, and
 * handed to the registry's run. algo_data belongs to the algorithm (its
 * prepare creates it, its release frees it). */
typedef struct convoy__conv_plan {
    convoy__conv_geom geom;
    convoy_conv_direction direction;
    convoy__conv_candidate candidate;
    int64_t images_per_chunk; /* GEMM paths: images per im2col chunk, >= 1 when batch > 0 */
    size_t workspace_bytes;   /* what run may use of the workspace pointer */
    void *algo_data;
} convoy__conv_plan;

struct convoy__conv_algo {
    const char *name; /* lower case, no commas or spaces: "gemm" */
    /* NULL when the algorithm can run this convolution on this backend, else
     * why not, as a phrase the planner quotes ("needs a pointwise geometry:
     * 1x1 kernel, stride 1, no padding, shared filters"). Static storage. */
    const char *(*refusal)(convoy__backend *be, const convoy__conv_geom *geom,
                           convoy_conv_direction direction);
    /* Adds the algorithm's candidates (convoy__candidate_add) for a
     * convolution refusal accepted. Must not fail: an algorithm whose
     * library query fails just adds fewer. */
    void (*candidates)(convoy__backend *be, const convoy__conv_algo *self,
                       const convoy__conv_geom *geom, convoy_conv_direction direction,
                       convoy__candidate_list *list);
    /* Builds plan->algo_data (descriptors, primitives); NULL when there is
     * nothing to build. */
    convoy_status (*prepare)(convoy__backend *be, convoy__conv_plan *plan);
    /* Frees what prepare built; NULL when prepare is. */
    void (*release)(convoy__backend *be, convoy__conv_plan *plan);
    /* Runs the plan in stream order on native_stream (the backend's run
     * wraps it). workspace has plan->workspace_bytes bytes (NULL when 0). */
    convoy_status (*run)(convoy__backend *be, void *native_stream, const convoy__conv_plan *plan,
                         const convoy__conv_buffers *buffers, void *workspace);
    /* NULL when the algorithm is usable on this device at all, else why not
     * ("cuDNN is not in use ..."); checked by CONVOY_REQUIRE. NULL pointer:
     * always usable. */
    const char *(*unavailable)(convoy__backend *be);
    /* Optional, forward plans only: runs the plan as run does with the epilogue applied
     * inside the algorithm (oneDNN's bias and post-ops), or returns CONVOY_ERR_UNSUPPORTED
     * having written nothing when this plan cannot fuse it; the runtime then calls run and a
     * separate pass of the backend's train ops in the same task. NULL: never fuses. Any
     * variant of the primitive it builds for an epilogue belongs to the plan (algo_data), so
     * the plan cache, keyed by the geometry, holds one per epilogue used. */
    convoy_status (*run_fused)(convoy__backend *be, void *native_stream,
                               const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                               void *workspace, const convoy__conv_epilogue *epilogue);
};

/* A backend's algorithms, and the two things about running them that depend
 * on the device rather than the algorithm. */
struct convoy__conv_registry {
    const convoy__conv_algo *const *algos;
    int count;
    /* Runs a plan from a work function: makes the device current (and
     * restores the caller's on return), picks the stream (NULL native_stream
     * means "now": run and wait), then calls plan->candidate.algo->run. */
    convoy_status (*run)(convoy__backend *be, void *native_stream, const convoy__conv_plan *plan,
                         const convoy__conv_buffers *buffers, void *workspace);
    /* Milliseconds one run of a prepared plan takes, measured on scratch
     * buffers (a copy of every operand, and the plan's workspace) that the
     * backend takes from its scratch allocator (core/device.h), that is from
     * the runtime's pool under memory_limit; used by the time_* policies.
     * When they do not fit it returns CONVOY_ERR_OUT_OF_MEMORY having held
     * nothing past the limit, and the planner leaves that candidate untimed:
     * with no candidate timed it keeps the heuristic order. Timing is skipped
     * under memory pressure, never the convolution. Makes the backend's
     * device current for itself and restores the caller's. */
    convoy_status (*time)(convoy__backend *be, const convoy__conv_plan *plan, double *ms);
    /* As run, through the algorithm's run_fused: CONVOY_ERR_UNSUPPORTED, with nothing
     * written, when the plan's algorithm does not fuse the epilogue. NULL: no algorithm of
     * this backend fuses one. */
    convoy_status (*run_fused)(convoy__backend *be, void *native_stream,
                               const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                               void *workspace, const convoy__conv_epilogue *epilogue);
};

/* Appends a candidate of algo with the given name, workspace and cost,
 * deterministic and exact (clear the flags on the result when not); returns
 * it, or NULL when the list is full. */
convoy__conv_candidate *convoy__candidate_add(convoy__candidate_list *list,
                                              const convoy__conv_algo *algo, const char *name,
                                              size_t workspace_fixed, size_t workspace_per_image,
                                              double cost);

/* The algorithm of the registry named by the first len characters of name
 * (case-insensitive), or NULL. */
const convoy__conv_algo *convoy__conv_registry_find(const convoy__conv_registry *registry,
                                                    const char *name, size_t len);

/* The refusal of algorithms that run only pointwise geometries (1x1 kernel, stride 1, no
 * padding, shared filters): NULL for those, the reason otherwise. */
const char *convoy__refusal_unless_pointwise(convoy__backend *be, const convoy__conv_geom *geom,
                                             convoy_conv_direction direction);

/* The candidates of a direct (reference) algorithm on any backend: one, no workspace,
 * deterministic, ranked after everything else (cost 100). */
void convoy__candidates_last_resort(convoy__backend *be, const convoy__conv_algo *self,
                                    const convoy__conv_geom *geom, convoy_conv_direction direction,
                                    convoy__candidate_list *list);

/* The candidates and run of an algorithm compiled without its library, whose refusal turns
 * every convolution away: the planner never calls them, so they offer nothing and fail with
 * CONVOY_ERR_UNSUPPORTED naming the algorithm. */
void convoy__candidates_none(convoy__backend *be, const convoy__conv_algo *self,
                             const convoy__conv_geom *geom, convoy_conv_direction direction,
                             convoy__candidate_list *list);
convoy_status convoy__run_refused(convoy__backend *be, void *native_stream,
                                  const convoy__conv_plan *plan,
                                  const convoy__conv_buffers *buffers, void *workspace);

/* The operand a direction writes (forward: output, backward_data: input,
 * backward_filter: filters), and its element count. */
float *convoy__conv_written_operand(const convoy__conv_geom *geom, convoy_conv_direction direction,
                                    const convoy__conv_buffers *buffers, int64_t *numel);

#endif /* CONVOY_KERNELS_CONV_ALGO_H */
