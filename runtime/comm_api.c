/* Communicators and the collective tasks (convoy.h, convoy_mpi.h): all-reduce, all-reduce of
 * many tensors as one collective, and broadcast, submitted like any other task and run on
 * the scheduler's communication stream.
 *
 * Every collective begins with the agreement of comm/agreement.h: the ranks compare what
 * they submitted before any data moves. On the CPU the agreement and the data exchange both
 * happen in the task's body, on the communication stream's thread (or inline), through MPI.
 * On CUDA the body runs at enqueue and may only enqueue, so the agreement happens at submit,
 * on the submitting thread, and the body enqueues NCCL's collective, or fails with the
 * agreement's verdict; the communicator's lock keeps the order of agreements the order of
 * enqueues. Collectives of one communicator are ordered among themselves by a hazard record
 * of the communicator, written by each (order only: one failing does not fail the next).
 *
 * A collective whose body does not run (its input failed) still takes part in the agreement,
 * through the scheduler's skip callback, saying it cannot: the other ranks then fail at once
 * instead of waiting out the timeout. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/agreement.h"
#include "comm/bucket.h"
#include "comm/mpi_comm.h"
#include "runtime/runtime_int.h"
#include "core/error_detail.h"

#define MAX_TENSORS 4096
#define MAX_TIMEOUT_MS 86400000

struct convoy_comm {
    convoy_runtime *runtime; /* NULL once detached */
    convoy__mpi *mpi;
    convoy__collectives *device; /* NCCL on CUDA; NULL on the CPU, where MPI moves the data */
    int rank, size;
    int deterministic;
    /* CUDA: agree at submit. lock makes each agreement and the enqueue after it one step, so
     * collectives reach the stream in the order the ranks agreed on them. */
    int agree_at_submit;
    pthread_mutex_t lock;
    convoy__hazards hazards;  /* written by every collective: their order */
    convoy_comm *prev, *next; /* the runtime's list, under its tensors_lock */
};

/* ---- options ------------------------------------------------------------------------------ */

convoy_status convoy_comm_options_init(convoy_comm_options *options)
{
    if (!options)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "comm_options_init: options is NULL");
    memset(options, 0, sizeof *options);
    options->timeout_ms = CONVOY_COMM_DEFAULT_TIMEOUT_MS;
    return CONVOY_OK;
}

convoy_status convoy_comm_options_from_env(convoy_comm_options *options)
{
    static const char *name = "CONVOY_COMM_TIMEOUT_MS";
    if (!options)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "comm_options_from_env: options is NULL");
    const char *text = getenv(name);
    if (!text || !*text)
        return CONVOY_OK;
    int64_t value = 0;
    const char *p = text;
    for (; *p >= '0' && *p <= '9' && value <= MAX_TIMEOUT_MS; ++p)
        value = value * 10 + (*p - '0');
    if (*p != '\0' || value < 1 || value > MAX_TIMEOUT_MS)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "comm_options_from_env: %s is '%s', expected milliseconds as digits, "
                             "1..%d",
                             name, text, MAX_TIMEOUT_MS);
    options->timeout_ms = value;
    return CONVOY_OK;
}

/* ---- the communicator --------------------------------------------------------------------- */

void convoy__comm_describe(convoy__backend *backend, char *text, size_t size)
{
    char mpi[192], device[96];
    convoy__mpi_describe(mpi, sizeof mpi);
    convoy__backend_collectives_describe(backend, device, sizeof device);
    snprintf(text, size, "comm: %s%s%s", mpi, device[0] ? ", " : "", device);
}

/* Agrees on something comm_create did: every rank learns whether all of them could. */
static convoy_status agree_on_setup(convoy__mpi *mpi, convoy__collective_kind kind, int64_t op,
                                    int64_t root, convoy_status mine)
{
    convoy__comm_header h;
    memset(&h, 0, sizeof h);
    h.kind = kind;
    h.op = op;
    h.root = root;
    h.ok = mine == CONVOY_OK;
    if (mine != CONVOY_OK)
        snprintf(h.note, sizeof h.note, "%s", convoy__error_text());
    return convoy__mpi_agree(mpi, &h);
}

/* Every rank agrees on the device kind and version, and that each has its communication
 * stream; then on CUDA every rank joins NCCL and agrees that all did. A rank that failed
 * returns its own error; the others fail with the verdict naming it. */
static convoy_status open_parts(convoy_runtime *rt, convoy_comm *comm, int64_t timeout_ms)
{
    convoy__backend *be = rt->backend;
    convoy_status stream = convoy__scheduler_open_comm_stream(rt->scheduler);
    char own[1024];
    snprintf(own, sizeof own, "%s", convoy__error_text());
    convoy_status status = agree_on_setup(comm->mpi, CONVOY__COLLECTIVE_CREATE, be->ops->device,
                                          CONVOY_VERSION_NUMBER, stream);
    if (stream != CONVOY_OK) {
        convoy__error_set_text(own);
        return stream;
    }
    if (status != CONVOY_OK || be->ops->device == CONVOY_DEVICE_CPU)
        return status;
    convoy__collective_config config = {comm->rank, comm->size, timeout_ms, convoy__mpi_bcast_bytes,
                                        comm->mpi};
    convoy_status joined = convoy__backend_collectives_open(be, &config, &comm->device);
    snprintf(own, sizeof own, "%s", convoy__error_text());
    status = agree_on_setup(comm->mpi, CONVOY__COLLECTIVE_JOIN_DEVICE, 0, 0, joined);
    if (joined != CONVOY_OK) {
        convoy__error_set_text(own);
        return joined;
    }
    if (status != CONVOY_OK) {
        comm->device->ops->destroy(comm->device);
        comm->device = NULL;
    }
    return status;
}

/* Declared in include/convoy_mpi.h, which needs mpi.h; its signature has no MPI type, so
 * the definition builds with or without MPI (comm/mpi_comm.c then refuses). */
CONVOY_EXTERN convoy_status convoy_comm_create_mpi(convoy_runtime *rt, const void *mpi_comm,
                                                   size_t mpi_comm_size,
                                                   const convoy_comm_options *options,
                                                   convoy_comm **out)
{
    static const char *call = "comm_create";
    if (!rt || !mpi_comm || !out)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call,
                             !rt         ? "runtime"
                             : !mpi_comm ? "mpi_comm"
                                         : "out");
    convoy_comm_options o;
    convoy_status status;
    if (options) {
        o = *options;
    } else if ((status = convoy_comm_options_init(&o)) != CONVOY_OK ||
               (status = convoy_comm_options_from_env(&o)) != CONVOY_OK) {
        convoy__error_prefix(call);
        return status;
    }
    if (o.timeout_ms < 1 || o.timeout_ms > MAX_TIMEOUT_MS)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: timeout_ms is %" PRId64 ", expected 1..%d", call, o.timeout_ms,
                             MAX_TIMEOUT_MS);
    const int on_cpu = rt->backend->ops->device == CONVOY_DEVICE_CPU;
    const int inline_tasks = convoy__scheduler_stream_count(rt->scheduler) == 0;
    convoy__mpi_config config = {mpi_comm, mpi_comm_size, o.timeout_ms, on_cpu && !inline_tasks};
    convoy_comm *comm = calloc(1, sizeof *comm);
    if (!comm)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory", call);
    if ((status = convoy__mpi_create(&config, &comm->mpi)) != CONVOY_OK) {
        free(comm);
        return status;
    }
    comm->rank = convoy__mpi_rank(comm->mpi);
    comm->size = convoy__mpi_size(comm->mpi);
    comm->deterministic = rt->options.deterministic;
    comm->agree_at_submit = !on_cpu;
    pthread_mutex_init(&comm->lock, NULL);
    if ((status = open_parts(rt, comm, o.timeout_ms)) != CONVOY_OK) {
        char message[1024];
        snprintf(message, sizeof message, "%s", convoy__error_text());
        if (comm->device)
            comm->device->ops->destroy(comm->device);
        convoy__mpi_destroy(comm->mpi);
        pthread_mutex_destroy(&comm->lock);
        free(comm);
        convoy__error_set_text(message);
        convoy__error_prefix(call);
        return status;
    }
    comm->runtime = rt;
    pthread_mutex_lock(&rt->tensors_lock);
    comm->next = rt->comms;
    if (rt->comms)
        rt->comms->prev = comm;
    rt->comms = comm;
    pthread_mutex_unlock(&rt->tensors_lock);
    *out = comm;
    return CONVOY_OK;
}

void convoy__comm_detach(convoy_comm *comm)
{
    convoy_runtime *rt = comm->runtime;
    convoy__hazards_clear(rt->scheduler, &comm->hazards);
    if (comm->device)
        comm->device->ops->destroy(comm->device);
    comm->device = NULL;
    convoy__mpi_destroy(comm->mpi);
    comm->mpi = NULL;
    comm->runtime = NULL;
    comm->prev = comm->next = NULL;
}

convoy_comm *convoy__comm_next(const convoy_comm *comm)
{
    return comm->next;
}

static convoy_status nothing_to_run(void *payload, void *native_stream,
                                    convoy__stream *order_stream)
{
    (void)payload;
    (void)native_stream;
    (void)order_stream;
    return CONVOY_OK;
}

/* Blocks until every collective submitted on comm has completed. */
static void wait_for_collectives(convoy_runtime *rt, convoy_comm *comm)
{
    if (convoy__scheduler_clear_if_idle(rt->scheduler, &comm->hazards))
        return;
    /* A task after every collective of comm (it orders like a write), on their stream. */
    convoy__hazard_access access = {&comm->hazards, CONVOY__ACCESS_RELEASE};
    convoy__task_desc desc = {CONVOY__TASK_RELEASE,
                              CONVOY__QUEUE_COMM,
                              "release communicator",
                              nothing_to_run,
                              NULL,
                              NULL,
                              NULL,
                              0,
                              &access,
                              1,
                              0};
    convoy_task *barrier = NULL;
    if (convoy__scheduler_submit(rt->scheduler, &desc, &barrier) == CONVOY_OK) {
        convoy_status ignored = convoy_task_wait(barrier);
        (void)ignored; /* it runs nothing; it only marks the collectives done */
        convoy_task_release(barrier);
    } else {
        /* No memory for even that task, or a faulted device: wait for everything. */
        (void)convoy__scheduler_synchronize(rt->scheduler);
    }
}

void convoy_comm_destroy(convoy_comm *comm)
{
    if (!comm)
        return;
    convoy_runtime *rt = comm->runtime;
    if (rt) {
        pthread_mutex_lock(&rt->tensors_lock);
        if (comm->prev)
            comm->prev->next = comm->next;
        else
            rt->comms = comm->next;
        if (comm->next)
            comm->next->prev = comm->prev;
        pthread_mutex_unlock(&rt->tensors_lock);
        wait_for_collectives(rt, comm);
        convoy__comm_detach(comm);
    }
    pthread_mutex_destroy(&comm->lock);
    free(comm);
}

int convoy_comm_rank(const convoy_comm *comm)
{
    return comm ? comm->rank : -1;
}

int convoy_comm_size(const convoy_comm *comm)
{
    return comm ? comm->size : 0;
}

/* ---- the collective task ------------------------------------------------------------------ */

/* The payload is variable-sized: this header, then one segment per tensor. */
typedef struct comm_payload {
    convoy_comm *comm;
    convoy__collective_kind kind;
    convoy_reduce_op op;
    int root;
    convoy__comm_header header; /* what this rank submits; numbered at the agreement */
    int64_t total;              /* CPU: the packed buffer's elements */
    /* CUDA: the agreement made at submit, and its message. */
    convoy_status agreed;
    char agreed_text[CONVOY__COMM_VERDICT_SIZE + 128];
    size_t count;
} comm_payload;

static convoy__comm_segment *payload_segments(comm_payload *p)
{
    return (convoy__comm_segment *)(void *)(p + 1);
}

/* CUDA: enqueues the collective NCCL runs on the task's stream. */
static convoy_status enqueue_on_device(comm_payload *p, void *native_stream)
{
    convoy__collectives *device = p->comm->device;
    const convoy__comm_segment *segments = payload_segments(p);
    if (p->kind == CONVOY__COLLECTIVE_BROADCAST)
        return device->ops->broadcast(device, native_stream, segments[0].data,
                                      (size_t)segments[0].count, p->root);
    convoy__device_segment local[8] = {{NULL, 0}};
    convoy__device_segment *list =
        p->count <= 8 ? local : malloc(p->count * sizeof(convoy__device_segment));
    if (!list)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "out of host memory for %zu segments",
                             p->count);
    for (size_t i = 0; i < p->count; ++i)
        list[i] = (convoy__device_segment){segments[i].data, (size_t)segments[i].count};
    convoy_status status = device->ops->allreduce(device, native_stream, list, p->count, p->op);
    if (list != local)
        free(list);
    return status;
}

static convoy_status comm_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    (void)order_stream;
    comm_payload *p = payload;
    convoy_comm *comm = p->comm;
    if (comm->device) {
        if (p->agreed != CONVOY_OK)
            return convoy__error(p->agreed, "%s", p->agreed_text);
        return enqueue_on_device(p, native_stream);
    }
    convoy_status status = convoy__mpi_agree(comm->mpi, &p->header);
    if (status != CONVOY_OK)
        return status;
    if (p->kind == CONVOY__COLLECTIVE_BROADCAST)
        return convoy__mpi_broadcast(comm->mpi, payload_segments(p)[0].data,
                                     payload_segments(p)[0].count, p->root);
    return convoy__mpi_allreduce(comm->mpi, payload_segments(p), p->count, p->total, p->op,
                                 comm->deterministic);
}

/* The body will not run (an input failed). The other ranks still expect this rank: on the
 * CPU it tells them it cannot take part; on CUDA, where they agreed already and enqueue
 * their NCCL call, it enqueues its own so theirs complete, with whatever its tensor holds. */
static void comm_skip(void *payload, void *native_stream, const char *reason)
{
    comm_payload *p = payload;
    convoy_comm *comm = p->comm;
    if (comm->device) {
        if (p->agreed == CONVOY_OK)
            (void)enqueue_on_device(p, native_stream);
        return;
    }
    p->header.ok = 0;
    snprintf(p->header.note, sizeof p->header.note, "%s", reason ? reason : "its task failed");
    (void)convoy__mpi_agree(comm->mpi, &p->header);
}

static const char *op_label(convoy_reduce_op op)
{
    return op == CONVOY_REDUCE_AVERAGE ? "average" : "sum";
}

/* Checks the arguments every collective shares. */
static convoy_status check_collective(convoy_runtime *rt, convoy_comm *comm, const char *call)
{
    if (!rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: runtime is NULL", call);
    if (!comm)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: comm is NULL", call);
    if (!comm->runtime)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: comm is detached: its runtime was destroyed", call);
    if (comm->runtime != rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: comm belongs to another runtime",
                             call);
    return CONVOY_OK;
}

/* On CUDA: agrees now, so the body can enqueue NCCL's collective or fail in its place. */
static void agree_at_submit(convoy_runtime *rt, comm_payload *p, convoy_tensor *const *tensors)
{
    p->header.ok = 1;
    for (size_t i = 0; i < p->count && p->header.ok; ++i) {
        char why[CONVOY__COMM_NOTE_SIZE];
        if (convoy__scheduler_input_failed(rt->scheduler, &tensors[i]->hazards, why, sizeof why)) {
            p->header.ok = 0;
            snprintf(p->header.note, sizeof p->header.note, "its input %s: %s", tensors[i]->text,
                     why);
        }
    }
    p->agreed = convoy__mpi_agree(p->comm->mpi, &p->header);
    snprintf(p->agreed_text, sizeof p->agreed_text, "%s",
             p->agreed == CONVOY_OK ? "" : convoy__error_text());
}

static convoy_status submit_collective(convoy_runtime *rt, convoy_comm *comm,
                                       convoy__collective_kind kind, convoy_tensor *const *tensors,
                                       size_t count, convoy_reduce_op op, int root,
                                       const char *call, convoy_task **task)
{
    size_t size = sizeof(comm_payload) + count * sizeof(convoy__comm_segment);
    comm_payload *p = calloc(1, size);
    convoy__hazard_access *accesses = malloc((count + 1) * sizeof *accesses);
    int *ndims = malloc(count * sizeof *ndims);
    const int64_t **dims = malloc(count * sizeof *dims);
    int64_t *counts = malloc(count * sizeof *counts);
    int64_t *offsets = malloc(count * sizeof *offsets);
    convoy_status status = CONVOY_OK;
    if (!p || !accesses || !ndims || !dims || !counts || !offsets) {
        status = convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory", call);
        goto done;
    }
    p->comm = comm;
    p->kind = kind;
    p->op = op;
    p->root = root;
    p->count = count;
    for (size_t i = 0; i < count; ++i) {
        ndims[i] = tensors[i]->ndim;
        dims[i] = tensors[i]->dims;
        counts[i] = tensors[i]->numel;
        accesses[i] = (convoy__hazard_access){&tensors[i]->hazards, CONVOY_READ_WRITE};
    }
    accesses[count] = (convoy__hazard_access){&comm->hazards, CONVOY_WRITE};
    if (!convoy__bucket_layout(counts, count, CONVOY__BUCKET_ALIGN, offsets, &p->total)) {
        status = convoy__error(CONVOY_ERR_SHAPE, "%s: the %zu tensors' elements overflow int64",
                               call, count);
        goto done;
    }
    for (size_t i = 0; i < count; ++i)
        payload_segments(p)[i] =
            (convoy__comm_segment){convoy__tensor_data(tensors[i]), counts[i], offsets[i]};
    convoy__comm_header_describe_tensors(
        &p->header, kind, kind == CONVOY__COLLECTIVE_BROADCAST ? 0 : op, root, count, ndims, dims);
    p->header.ok = 1;
    char label[128];
    if (kind == CONVOY__COLLECTIVE_BROADCAST)
        snprintf(label, sizeof label, "broadcast %s from rank %d", tensors[0]->text, root);
    else if (kind == CONVOY__COLLECTIVE_ALLREDUCE)
        snprintf(label, sizeof label, "allreduce %s %s", tensors[0]->text, op_label(op));
    else
        snprintf(label, sizeof label, "allreduce_many %zu tensors %" PRId64 " elements %s", count,
                 p->header.elements, op_label(op));
    convoy__task_desc desc = {kind == CONVOY__COLLECTIVE_BROADCAST ? CONVOY__TASK_BROADCAST
                                                                   : CONVOY__TASK_ALLREDUCE,
                              CONVOY__QUEUE_COMM,
                              label,
                              comm_run,
                              NULL,
                              NULL,
                              p,
                              size,
                              accesses,
                              count + 1,
                              (size_t)p->header.elements * sizeof(float)};
    if (comm->agree_at_submit) {
        pthread_mutex_lock(&comm->lock);
        agree_at_submit(rt, p, tensors);
        status = convoy__scheduler_submit_skippable(rt->scheduler, &desc, comm_skip, task);
        pthread_mutex_unlock(&comm->lock);
    } else {
        status = convoy__scheduler_submit_skippable(rt->scheduler, &desc, comm_skip, task);
    }
done:
    free(offsets);
    free(counts);
    free(dims);
    free(ndims);
    free(accesses);
    free(p);
    return status;
}

static convoy_status check_op(convoy_reduce_op op, const char *call)
{
    if (op == CONVOY_REDUCE_SUM || op == CONVOY_REDUCE_AVERAGE)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "%s: op is %d, expected CONVOY_REDUCE_SUM or CONVOY_REDUCE_AVERAGE", call,
                         (int)op);
}

convoy_status convoy_allreduce(convoy_runtime *rt, convoy_comm *comm, convoy_tensor *tensor,
                               convoy_reduce_op op, convoy_task **task)
{
    static const char *call = "allreduce";
    convoy_status status;
    if ((status = check_collective(rt, comm, call)) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, tensor, call, "tensor")) != CONVOY_OK ||
        (status = check_op(op, call)) != CONVOY_OK)
        return status;
    return submit_collective(rt, comm, CONVOY__COLLECTIVE_ALLREDUCE, &tensor, 1, op, 0, call, task);
}

convoy_status convoy_allreduce_many(convoy_runtime *rt, convoy_comm *comm,
                                    convoy_tensor *const *tensors, size_t count,
                                    convoy_reduce_op op, convoy_task **task)
{
    static const char *call = "allreduce_many";
    convoy_status status;
    if ((status = check_collective(rt, comm, call)) != CONVOY_OK ||
        (status = check_op(op, call)) != CONVOY_OK)
        return status;
    if (!tensors)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: tensors is NULL", call);
    if (count < 1 || count > MAX_TENSORS)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: count is %zu, expected 1..%d", call,
                             count, MAX_TENSORS);
    for (size_t i = 0; i < count; ++i) {
        char which[32];
        snprintf(which, sizeof which, "tensors[%zu]", i);
        if ((status = convoy__check_tensor(rt, tensors[i], call, which)) != CONVOY_OK)
            return status;
        for (size_t j = 0; j < i; ++j) {
            if (tensors[j] == tensors[i])
                return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                     "%s: tensor %s is listed twice (tensors[%zu] and [%zu])", call,
                                     tensors[i]->text, j, i);
        }
    }
    return submit_collective(rt, comm, CONVOY__COLLECTIVE_ALLREDUCE_MANY, tensors, count, op, 0,
                             call, task);
}

convoy_status convoy_broadcast(convoy_runtime *rt, convoy_comm *comm, convoy_tensor *tensor,
                               int root, convoy_task **task)
{
    static const char *call = "broadcast";
    convoy_status status;
    if ((status = check_collective(rt, comm, call)) != CONVOY_OK ||
        (status = convoy__check_tensor(rt, tensor, call, "tensor")) != CONVOY_OK)
        return status;
    if (root < 0 || root >= comm->size)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: root is %d, expected 0..%d (the communicator has %d rank%s)",
                             call, root, comm->size - 1, comm->size, comm->size == 1 ? "" : "s");
    return submit_collective(rt, comm, CONVOY__COLLECTIVE_BROADCAST, &tensor, 1, CONVOY_REDUCE_SUM,
                             root, call, task);
}
