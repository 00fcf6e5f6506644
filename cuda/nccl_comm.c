/* NCCL collectives on the CUDA backend (cuda/nccl_comm.h, core/collective.h): the
 * communicator is joined through a nonblocking ncclCommInitRankConfig polled against the
 * timeout, so a rank that never joins fails the others instead of hanging them; all-reduce
 * and broadcast are enqueued in place on the task's stream (the communication stream), with
 * the runtime's device current. Every NCCL call is checked; its error string and NCCL's last
 * error text make the message. Without NCCL in the build the functions refuse: "convoy was
 * built without NCCL". */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend_int.h"
#include "cuda/nccl_comm.h"
#include "core/error_detail.h"
#include "core/platform.h"

#ifdef CONVOY_HAVE_NCCL

#include <nccl.h>

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "convoy needs NCCL 2.14 or newer (nonblocking communicators, ncclAvg)"
#endif

typedef struct nccl_collectives {
    convoy__collectives base;
    convoy__cuda_backend *be;
    ncclComm_t comm;
    int64_t timeout_ms;
} nccl_collectives;

static convoy_status nccl_fail(ncclResult_t code, ncclComm_t comm, const char *call,
                               const char *file, int line)
{
    const char *last = ncclGetLastError(comm);
    return convoy__error(CONVOY_ERR_BACKEND, "%s failed: %s (%d)%s%s at %s:%d", call,
                         ncclGetErrorString(code), (int)code, last && *last ? ": " : "",
                         last ? last : "", file, line);
}

/* A nonblocking communicator's call may return ncclInProgress: it has finished once the
 * communicator's state leaves ncclInProgress, which is polled until the deadline. */
static convoy_status settle(ncclComm_t comm, ncclResult_t result, const char *call,
                            int64_t timeout_ms, const char *file, int line)
{
    const double deadline = convoy__now_us() + (double)timeout_ms * 1000.0;
    while (result == ncclInProgress && comm) {
        if (convoy__now_us() >= deadline)
            return convoy__error(CONVOY_ERR_BACKEND,
                                 "%s did not finish within %lld ms (a rank did not join or "
                                 "failed) at %s:%d",
                                 call, (long long)timeout_ms, file, line);
        sched_yield();
        ncclResult_t state = ncclSuccess;
        ncclResult_t query = ncclCommGetAsyncError(comm, &state);
        result = query != ncclSuccess ? query : state;
    }
    if (result != ncclSuccess)
        return nccl_fail(result, comm, call, file, line);
    return CONVOY_OK;
}

/* Makes the call first, then settles it: the call may set comm (ncclCommInitRankConfig). */
#define NCCL_SETTLE(status, call, comm, timeout_ms)                                                \
    do {                                                                                           \
        ncclResult_t convoy__nccl_result_ = (call);                                                \
        (status) = settle((comm), convoy__nccl_result_, #call, (timeout_ms), __FILE__, __LINE__);  \
    } while (0)

/* ---- mapping ---------------------------------------------------------------------------- */

convoy_status convoy__nccl_reduce_op(convoy_reduce_op op, int *nccl_op)
{
    switch (op) {
    case CONVOY_REDUCE_SUM:
        *nccl_op = (int)ncclSum;
        return CONVOY_OK;
    case CONVOY_REDUCE_AVERAGE:
        *nccl_op = (int)ncclAvg;
        return CONVOY_OK;
    }
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "nccl: reduce op %d has no NCCL reduction",
                         (int)op);
}

int convoy__nccl_element_type(void)
{
    return (int)ncclFloat32;
}

/* ---- the bootstrap's calls -------------------------------------------------------------- */

static convoy_status real_unique_id(void *context, unsigned char *id)
{
    (void)context;
    ncclUniqueId unique;
    ncclResult_t result = ncclGetUniqueId(&unique);
    if (result != ncclSuccess)
        return nccl_fail(result, NULL, "ncclGetUniqueId(&unique)", __FILE__, __LINE__);
    memcpy(id, unique.internal, CONVOY__NCCL_ID_BYTES);
    return CONVOY_OK;
}

static convoy_status real_join(void *context, const unsigned char *id, int size, int rank,
                               int64_t timeout_ms, void **out)
{
    convoy__cuda_backend *be = context;
    ncclUniqueId unique;
    memcpy(unique.internal, id, CONVOY__NCCL_ID_BYTES);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = NULL;
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(be, &scope);
    if (status == CONVOY_OK) {
        NCCL_SETTLE(status, ncclCommInitRankConfig(&comm, size, unique, rank, &config), comm,
                    timeout_ms);
        if (status != CONVOY_OK && comm)
            (void)ncclCommAbort(comm);
    }
    convoy__cuda_leave(&scope);
    if (status == CONVOY_OK)
        *out = comm;
    return status;
}

static const convoy__nccl_calls real_calls = {real_unique_id, real_join};

/* ---- the collectives -------------------------------------------------------------------- */

/* Several tensors go in one group, which NCCL runs as one launch; nothing is packed, so no
 * buffer is allocated and no copy made. */
static convoy_status nccl_allreduce(convoy__collectives *c, void *native_stream,
                                    const convoy__device_segment *segments, size_t count,
                                    convoy_reduce_op op)
{
    nccl_collectives *n = (nccl_collectives *)c;
    int reduction = 0;
    convoy_status status = convoy__nccl_reduce_op(op, &reduction);
    if (status != CONVOY_OK)
        return status;
    convoy__device_scope scope;
    if ((status = convoy__cuda_enter(n->be, &scope)) != CONVOY_OK) {
        convoy__cuda_leave(&scope);
        return status;
    }
    const int grouped = count > 1;
    if (grouped)
        NCCL_SETTLE(status, ncclGroupStart(), n->comm, n->timeout_ms);
    for (size_t i = 0; i < count && status == CONVOY_OK; ++i) {
        if (segments[i].count == 0)
            continue;
        NCCL_SETTLE(status,
                    ncclAllReduce(segments[i].data, segments[i].data, segments[i].count,
                                  ncclFloat32, (ncclRedOp_t)reduction, n->comm,
                                  (cudaStream_t)native_stream),
                    n->comm, n->timeout_ms);
    }
    if (grouped) {
        /* The group is closed whatever happened inside it; the first failure is kept. */
        convoy_status end;
        char message[1024];
        snprintf(message, sizeof message, "%s", convoy__error_text());
        NCCL_SETTLE(end, ncclGroupEnd(), n->comm, n->timeout_ms);
        if (status != CONVOY_OK)
            convoy__error_set_text(message);
        else
            status = end;
    }
    convoy__cuda_leave(&scope);
    return status;
}

static convoy_status nccl_broadcast(convoy__collectives *c, void *native_stream, float *data,
                                    size_t count, int root)
{
    nccl_collectives *n = (nccl_collectives *)c;
    if (count == 0)
        return CONVOY_OK;
    convoy__device_scope scope;
    convoy_status status = convoy__cuda_enter(n->be, &scope);
    if (status == CONVOY_OK)
        NCCL_SETTLE(status,
                    ncclBroadcast(data, data, count, ncclFloat32, root, n->comm,
                                  (cudaStream_t)native_stream),
                    n->comm, n->timeout_ms);
    convoy__cuda_leave(&scope);
    return status;
}

/* Finalize flushes what was issued, then destroy frees; a communicator that cannot finalize
 * within the timeout (a peer gone) is aborted instead. */
static void nccl_destroy(convoy__collectives *c)
{
    nccl_collectives *n = (nccl_collectives *)c;
    if (!n)
        return;
    convoy__device_scope scope;
    if (convoy__cuda_enter(n->be, &scope) == CONVOY_OK) {
        convoy_status status;
        NCCL_SETTLE(status, ncclCommFinalize(n->comm), n->comm, n->timeout_ms);
        if (status == CONVOY_OK)
            (void)ncclCommDestroy(n->comm);
        else
            (void)ncclCommAbort(n->comm);
        (void)cudaGetLastError();
    }
    convoy__cuda_leave(&scope);
    free(n);
}

static const convoy__collective_ops nccl_ops = {"nccl", nccl_allreduce, nccl_broadcast,
                                                nccl_destroy};

convoy_status convoy__cuda_collectives_open(convoy__backend *backend,
                                            const convoy__collective_config *config,
                                            convoy__collectives **out)
{
    nccl_collectives *n = calloc(1, sizeof *n);
    if (!n)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "nccl: out of host memory");
    n->base.ops = &nccl_ops;
    n->be = convoy__cuda_of(backend);
    n->timeout_ms = config->timeout_ms;
    void *comm = NULL;
    convoy_status status = convoy__nccl_bootstrap(&real_calls, n->be, config, &comm);
    if (status != CONVOY_OK) {
        free(n);
        return status;
    }
    n->comm = (ncclComm_t)comm;
    *out = &n->base;
    return CONVOY_OK;
}

void convoy__cuda_collectives_describe(char *text, size_t size)
{
    int version = 0;
    if (ncclGetVersion(&version) != ncclSuccess) {
        snprintf(text, size, "NCCL (version unknown)");
        return;
    }
    /* NCCL 2.9 and later encode major * 10000 + minor * 100 + patch. */
    snprintf(text, size, "NCCL %d.%d.%d", version / 10000, version / 100 % 100, version % 100);
}

#else /* no NCCL in this build */

convoy_status convoy__cuda_collectives_open(convoy__backend *backend,
                                            const convoy__collective_config *config,
                                            convoy__collectives **out)
{
    (void)backend;
    (void)config;
    (void)out;
    return convoy__error(CONVOY_ERR_UNSUPPORTED,
                         "comm_create: this runtime runs on CUDA, whose collectives need NCCL, "
                         "but convoy was built without NCCL (CMake found no nccl.h and libnccl "
                         "next to the CUDA toolkit, or CONVOY_ENABLE_NCCL=OFF)");
}

void convoy__cuda_collectives_describe(char *text, size_t size)
{
    snprintf(text, size, "NCCL: none (built without NCCL)");
}

#endif /* CONVOY_HAVE_NCCL */
