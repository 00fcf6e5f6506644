/* The runtime and tensor objects, shared by the files of runtime/. */
#ifndef CONVOY_RUNTIME_RUNTIME_INT_H
#define CONVOY_RUNTIME_RUNTIME_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "core/collective.h"
#include "memory/pool.h"
#include "memory/staging.h"
#include "runtime/planner.h"
#include "core/device.h"
#include "scheduler/scheduler.h"

typedef struct convoy__prof_domain convoy__prof_domain;
typedef struct convoy__trace convoy__trace;

struct convoy_runtime {
    convoy_options options; /* string fields point at the copies below */
    char *tune_cache_path;
    char *trace_path;
    char *exclude_names;
    char *require_names;
    convoy__backend *backend;
    convoy__pool *pool;
    convoy__scheduler *scheduler;
    convoy__planner *planner;
    convoy__staging *upload_staging;   /* used only by the upload stream's work */
    convoy__staging *download_staging; /* used only by the download stream's work */
    convoy__prof_domain *domain;
    convoy__trace *trace;
    size_t workspace_limit;
    char description[1024];

    /* tensors_lock guards the list of live tensors and the list of live
     * communicators, both walked at destroy. */
    pthread_mutex_t tensors_lock;
    convoy_tensor *tensors;
    convoy_comm *comms;
};

struct convoy_tensor {
    convoy_runtime *runtime;
    int ndim;
    int64_t dims[CONVOY_MAX_DIMS];
    int64_t numel;
    size_t bytes;
    convoy__block *storage;  /* NULL for an empty tensor */
    convoy__hazards hazards; /* guarded by the scheduler's lock */
    convoy_tensor *prev, *next;
    char text[96]; /* "8x64x56x56", for labels and messages */
};

static inline float *convoy__tensor_data(const convoy_tensor *t)
{
    return t->storage ? (float *)t->storage->ptr : NULL;
}

/* Checks that a tensor argument is non-NULL, not detached and belongs to
 * the runtime. */
convoy_status convoy__check_tensor(const convoy_runtime *rt, const convoy_tensor *t,
                                   const char *call, const char *name);

/* At runtime destroy, with every task done: drops the tensor's hazard
 * references, returns its storage and detaches the handle (runtime NULL).
 * The caller has already unlinked it from the runtime's list. */
void convoy__tensor_detach(convoy_tensor *t);

/* Creates the backend the options ask for (runtime/backend_registry.c). note
 * receives why CUDA was not used when the CPU was chosen, or "". */
convoy_status convoy__backend_open(const convoy_options *options, convoy__backend **out, char *note,
                                   size_t note_size);

/* The backend's own collectives for a communicator of the runtime: NULL on
 * the host (MPI moves host memory), NCCL on CUDA (runtime/backend_registry.c). */
convoy_status convoy__backend_collectives_open(convoy__backend *backend,
                                               const convoy__collective_config *config,
                                               convoy__collectives **out);

/* What moves collective data on this backend besides MPI ("NCCL 2.28.9"), or "". */
void convoy__backend_collectives_describe(convoy__backend *backend, char *text, size_t size);

/* At runtime destroy, with every task done: releases the communicator's MPI
 * and device parts and detaches the handle (runtime/comm_api.c). The caller
 * has already unlinked it from the runtime's list. */
void convoy__comm_detach(convoy_comm *comm);

/* The next communicator of the runtime's list. */
convoy_comm *convoy__comm_next(const convoy_comm *comm);

/* The libraries the communicators of this build use, for the description
 * line: "comm: MPI: Open MPI v4.1.4 (MPI 3.1), NCCL 2.28.9". */
void convoy__comm_describe(convoy__backend *backend, char *text, size_t size);

#endif /* CONVOY_RUNTIME_RUNTIME_INT_H */
