/* The MPI side of a communicator (comm/mpi_comm.h): duplicating the program's communicator,
 * the agreement before each collective with rank 0 as coordinator, and the CPU's data
 * exchanges, every one nonblocking and polled against a deadline.
 *
 * The agreement is point to point, so that a timeout can name who is missing: each rank
 * sends its header to rank 0 and waits for rank 0's verdict; rank 0 waits up to the timeout
 * for every header, decides (comm/agreement.c), and answers every rank that arrived. A rank
 * thus knows the outcome within the timeout (rank 0) or twice it (the others, which also
 * wait while rank 0 waits). A collective request can be neither cancelled nor freed while
 * active, so a data exchange that times out stays in MPI: the buffer it uses and the MPI
 * communicator are then kept for good (the communicator is broken), which is why the data
 * moves through a buffer of the communicator's own and never through a tensor's storage.
 *
 * Progress in MPI happens inside MPI_Test, so the waits poll: tightly at first, then, while
 * waiting for other ranks to arrive, with short sleeps that leave the cores to the compute
 * streams. Once every rank agreed, the data phase only yields between polls. */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/mpi_comm.h"
#include "comm/reduce.h"
#include "core/error_detail.h"
#include "core/platform.h"

#ifdef CONVOY_HAVE_MPI

#include <mpi.h>

#define TAG_HEADER 0x4376
#define TAG_VERDICT 0x4377

/* Floats per MPI call: MPI counts are int. A power of two, so a slice boundary never depends
 * on anything but the buffer's size and the number of ranks. */
#define PIECE ((int64_t)1 << 26)

struct convoy__mpi {
    MPI_Comm comm; /* our duplicate of the program's communicator */
    int rank, size;
    int64_t timeout_ms;
    int64_t sequence; /* agreements so far */
    int broken;
    char broken_text[CONVOY__COMM_VERDICT_SIZE + 64];

    convoy__comm_header own;      /* this rank's header (in flight to rank 0) */
    convoy__comm_verdict verdict; /* received from rank 0, or sent by it */
    /* rank 0: one header, arrival flag and request per rank, and Testsome's indices */
    convoy__comm_header *headers;
    int *arrived;
    MPI_Request *requests;
    int *indices;
    /* the deterministic reduction's counts and displacements */
    int *slice_counts, *slice_starts, *part_counts, *part_starts;

    float *buffer; /* the packed data of a collective */
    int64_t buffer_capacity;
    float *parts; /* deterministic: every rank's part of this rank's slice */
    int64_t parts_capacity;

    /* Test hook CONVOY_TEST_COMM_SKIP_DATA=rank:sequence: that rank agrees to that collective
     * and then leaves out its data exchange, as a rank that dies right after agreeing would. */
    int skip_rank;
    int64_t skip_sequence;

    convoy__mpi *next_abandoned;
};

/* Communicators given up with an operation maybe still pending inside MPI (a timeout broke
 * them, or their MPI_Comm_idup never completed): MPI may still write into their buffers, so
 * they are never freed. They stay here, reachable, until the process ends; like MPI's own
 * state, this list is per process. */
static pthread_mutex_t abandoned_lock = PTHREAD_MUTEX_INITIALIZER;
static convoy__mpi *abandoned;

static void abandon(convoy__mpi *m)
{
    pthread_mutex_lock(&abandoned_lock);
    m->next_abandoned = abandoned;
    abandoned = m;
    pthread_mutex_unlock(&abandoned_lock);
}

/* ---- errors and waiting ------------------------------------------------------------------ */

static const char *level_name(int level)
{
    switch (level) {
    case MPI_THREAD_SINGLE:
        return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
        return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
        return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
        return "MPI_THREAD_MULTIPLE";
    }
    return "an unknown thread level";
}

/* Breaks the communicator for good with the thread's current message as the reason. */
static convoy_status break_with(convoy__mpi *m, convoy_status status)
{
    if (!m->broken) {
        m->broken = 1;
        snprintf(m->broken_text, sizeof m->broken_text, "%s", convoy__error_text());
    }
    return status;
}

static convoy_status mpi_failed(convoy__mpi *m, int code, const char *call)
{
    char text[MPI_MAX_ERROR_STRING + 1];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", code);
    text[length < MPI_MAX_ERROR_STRING ? length : MPI_MAX_ERROR_STRING] = '\0';
    convoy__error(CONVOY_ERR_BACKEND,
                  "rank %d of %d: %s failed: %s (%d); the communicator is unusable from now on",
                  m ? m->rank : -1, m ? m->size : 0, call, text, code);
    return m ? break_with(m, CONVOY_ERR_BACKEND) : CONVOY_ERR_BACKEND;
}

/* Between two polls: a few tight ones, then yields; while waiting for other ranks to arrive
 * (patient), short sleeps, since they may still be computing. */
static void pause_between_polls(int *polls, int patient)
{
    ++*polls;
    if (*polls < 256)
        return;
    if (!patient || *polls < 4096) {
        sched_yield();
        return;
    }
    struct timespec pause = {0, 100000};
    nanosleep(&pause, NULL);
}

typedef enum poll_result { POLL_DONE, POLL_TIMEOUT, POLL_ERROR } poll_result;

/* Polls a request until it completes or the deadline (convoy__now_us's clock) passes. */
static poll_result poll_request(MPI_Request *request, double deadline, int patient, int *code)
{
    int polls = 0;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            *code = rc;
            return POLL_ERROR;
        }
        if (done)
            return POLL_DONE;
        if (convoy__now_us() >= deadline)
            return POLL_TIMEOUT;
        pause_between_polls(&polls, patient);
    }
}

static double deadline_after(int64_t ms)
{
    return convoy__now_us() + (double)ms * 1000.0;
}

/* Withdraws a receive that did not complete: cancelled, or completed meanwhile. */
static void withdraw_receive(MPI_Request *request, int *received)
{
    MPI_Status status;
    int cancelled = 0;
    *received = 0;
    if (*request == MPI_REQUEST_NULL)
        return;
    if (MPI_Cancel(request) != MPI_SUCCESS || MPI_Wait(request, &status) != MPI_SUCCESS) {
        /* Nothing more can be done with it; MPI keeps it. */
        *request = MPI_REQUEST_NULL;
        return;
    }
    MPI_Test_cancelled(&status, &cancelled);
    *received = !cancelled;
}

/* A send that did not complete is left to MPI; its buffer belongs to the communicator, which
 * keeps it (a timeout breaks the communicator). */
static void abandon_send(MPI_Request *request)
{
    if (*request != MPI_REQUEST_NULL)
        (void)MPI_Request_free(request);
}

/* ---- creation ---------------------------------------------------------------------------- */

void convoy__mpi_describe(char *text, size_t size)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING + 1];
    int length = 0;
    if (MPI_Get_library_version(version, &length) != MPI_SUCCESS)
        length = 0;
    version[length < MPI_MAX_LIBRARY_VERSION_STRING ? length : MPI_MAX_LIBRARY_VERSION_STRING] =
        '\0';
    /* "Open MPI v4.1.4, package: ..., repo rev: ...": the first clause names it. */
    version[strcspn(version, ",\n")] = '\0';
    snprintf(text, size, "MPI: %s (MPI %d.%d)", length ? version : "unknown library", MPI_VERSION,
             MPI_SUBVERSION);
}

static void read_test_hook(convoy__mpi *m)
{
    m->skip_rank = -1;
    const char *hook = getenv("CONVOY_TEST_COMM_SKIP_DATA");
    int rank = -1;
    long long sequence = 0;
    char tail = 0;
    if (hook && sscanf(hook, "%d:%lld%c", &rank, &sequence, &tail) == 2) {
        m->skip_rank = rank;
        m->skip_sequence = sequence;
    }
}

static int allocate_arrays(convoy__mpi *m)
{
    size_t n = (size_t)m->size;
    m->headers = calloc(n, sizeof *m->headers);
    m->arrived = calloc(n, sizeof *m->arrived);
    m->requests = calloc(n, sizeof *m->requests);
    m->indices = calloc(n, sizeof *m->indices);
    m->slice_counts = calloc(n, sizeof *m->slice_counts);
    m->slice_starts = calloc(n, sizeof *m->slice_starts);
    m->part_counts = calloc(n, sizeof *m->part_counts);
    m->part_starts = calloc(n, sizeof *m->part_starts);
    return m->headers && m->arrived && m->requests && m->indices && m->slice_counts &&
           m->slice_starts && m->part_counts && m->part_starts;
}

static void free_arrays(convoy__mpi *m)
{
    free(m->headers);
    free(m->arrived);
    free(m->requests);
    free(m->indices);
    free(m->slice_counts);
    free(m->slice_starts);
    free(m->part_counts);
    free(m->part_starts);
    free(m->buffer);
    free(m->parts);
}

convoy_status convoy__mpi_create(const convoy__mpi_config *config, convoy__mpi **out)
{
    static const char *call = "comm_create";
    char library[160];
    convoy__mpi_describe(library, sizeof library);
    if (config->handle_size != sizeof(MPI_Comm))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: the program's MPI_Comm has %zu bytes, but convoy was built with "
                             "%s, whose MPI_Comm has %zu: build the program with the same MPI",
                             call, config->handle_size, library, sizeof(MPI_Comm));
    int initialized = 0, finalized = 0;
    if (MPI_Initialized(&initialized) != MPI_SUCCESS || MPI_Finalized(&finalized) != MPI_SUCCESS ||
        !initialized || finalized)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: MPI is %s; the program initialises MPI (MPI_Init_thread) before "
                             "making a communicator and finalizes it after destroying it (convoy "
                             "never calls MPI_Init or MPI_Finalize)",
                             call, finalized ? "already finalized" : "not initialised");
    MPI_Comm program;
    memcpy(&program, config->handle, sizeof program);
    if (program == MPI_COMM_NULL)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: the MPI communicator is MPI_COMM_NULL", call);
    int provided = MPI_THREAD_SINGLE;
    if (MPI_Query_thread(&provided) != MPI_SUCCESS)
        provided = MPI_THREAD_SINGLE;
    if (config->needs_multiple && provided < MPI_THREAD_MULTIPLE)
        return convoy__error(
            CONVOY_ERR_UNSUPPORTED,
            "%s: MPI provides %s, but this runtime runs collectives on its communication "
            "stream's thread while the program's threads may call MPI too, which needs "
            "MPI_THREAD_MULTIPLE: initialise MPI with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, "
            "...), or run the runtime with streams = 0 (CONVOY_STREAMS=0), where collectives run "
            "on the submitting thread",
            call, level_name(provided));
    convoy__mpi *m = calloc(1, sizeof *m);
    if (!m)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory", call);
    m->timeout_ms = config->timeout_ms;
    read_test_hook(m);
    MPI_Request request = MPI_REQUEST_NULL;
    int code = MPI_Comm_idup(program, &m->comm, &request);
    poll_result result = code == MPI_SUCCESS
                             ? poll_request(&request, deadline_after(m->timeout_ms), 1, &code)
                             : POLL_ERROR;
    if (result == POLL_TIMEOUT) {
        /* The duplicate may still complete inside MPI, into m: m stays allocated. */
        abandon(m);
        return convoy__error(CONVOY_ERR_BACKEND,
                             "%s: not every rank of the MPI communicator called comm_create "
                             "within %" PRId64 " ms (MPI_Comm_idup did not complete)",
                             call, m->timeout_ms);
    }
    if (result == POLL_ERROR) {
        free(m);
        return mpi_failed(NULL, code, "MPI_Comm_idup");
    }
    if ((code = MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS ||
        (code = MPI_Comm_rank(m->comm, &m->rank)) != MPI_SUCCESS ||
        (code = MPI_Comm_size(m->comm, &m->size)) != MPI_SUCCESS) {
        convoy_status status = mpi_failed(NULL, code, "setting up the duplicate communicator");
        (void)MPI_Comm_free(&m->comm);
        free(m);
        return status;
    }
    if (!allocate_arrays(m)) {
        free_arrays(m);
        (void)MPI_Comm_free(&m->comm);
        free(m);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory", call);
    }
    *out = m;
    return CONVOY_OK;
}

void convoy__mpi_destroy(convoy__mpi *m)
{
    if (!m)
        return;
    if (m->broken) {
        abandon(m); /* its requests may still use its buffers */
        return;
    }
    int finalized = 1;
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized)
        (void)MPI_Comm_free(&m->comm);
    free_arrays(m);
    free(m);
}

int convoy__mpi_rank(const convoy__mpi *m)
{
    return m->rank;
}

int convoy__mpi_size(const convoy__mpi *m)
{
    return m->size;
}

int64_t convoy__mpi_timeout_ms(const convoy__mpi *m)
{
    return m->timeout_ms;
}

static convoy_status refuse_if_broken(convoy__mpi *m)
{
    if (!m->broken)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_BACKEND,
                         "rank %d of %d: the communicator is unusable since an earlier failure: %s",
                         m->rank, m->size, m->broken_text);
}

/* ---- the agreement ----------------------------------------------------------------------- */

/* Rank 0: collects every header within the timeout, decides, and answers each rank that
 * arrived. */
static convoy_status agree_as_root(convoy__mpi *m)
{
    m->headers[0] = m->own;
    m->arrived[0] = 1;
    m->requests[0] = MPI_REQUEST_NULL;
    int code = MPI_SUCCESS;
    for (int r = 1; r < m->size; ++r) {
        m->arrived[r] = 0;
        m->requests[r] = MPI_REQUEST_NULL;
        if ((code = MPI_Irecv(&m->headers[r], (int)sizeof m->headers[r], MPI_BYTE, r, TAG_HEADER,
                              m->comm, &m->requests[r])) != MPI_SUCCESS)
            return mpi_failed(m, code, "MPI_Irecv of a header");
    }
    const double deadline = deadline_after(m->timeout_ms);
    int pending = m->size - 1, polls = 0;
    while (pending > 0) {
        int completed = 0;
        if ((code = MPI_Testsome(m->size, m->requests, &completed, m->indices,
                                 MPI_STATUSES_IGNORE)) != MPI_SUCCESS)
            return mpi_failed(m, code, "MPI_Testsome over the headers");
        if (completed == MPI_UNDEFINED)
            break;
        for (int i = 0; i < completed; ++i) {
            convoy__comm_header *h = &m->headers[m->indices[i]];
            h->note[sizeof h->note - 1] = '\0'; /* the text is quoted in the verdict */
            m->arrived[m->indices[i]] = 1;
        }
        pending -= completed;
        if (pending > 0 && convoy__now_us() >= deadline)
            break;
        if (completed == 0)
            pause_between_polls(&polls, 1);
    }
    for (int r = 1; r < m->size && pending > 0; ++r) {
        if (!m->arrived[r]) {
            withdraw_receive(&m->requests[r], &m->arrived[r]);
            m->headers[r].note[sizeof m->headers[r].note - 1] = '\0';
        }
    }
    convoy__comm_decide(m->headers, m->arrived, m->size, m->timeout_ms, &m->verdict);
    for (int r = 1; r < m->size; ++r) {
        m->requests[r] = MPI_REQUEST_NULL;
        if (m->arrived[r] &&
            (code = MPI_Isend(&m->verdict, (int)sizeof m->verdict, MPI_BYTE, r, TAG_VERDICT,
                              m->comm, &m->requests[r])) != MPI_SUCCESS)
            return mpi_failed(m, code, "MPI_Isend of the verdict");
    }
    /* Verdicts are small and sent eagerly; a rank that died after arriving may leave one. */
    const double send_deadline = deadline_after(m->timeout_ms);
    for (int r = 1; r < m->size; ++r) {
        if (m->requests[r] == MPI_REQUEST_NULL)
            continue;
        poll_result result = poll_request(&m->requests[r], send_deadline, 0, &code);
        if (result == POLL_ERROR)
            return mpi_failed(m, code, "sending the verdict");
        if (result == POLL_TIMEOUT)
            abandon_send(&m->requests[r]);
    }
    return CONVOY_OK;
}

/* Every other rank: sends its header to rank 0 and waits for the verdict. */
static convoy_status agree_as_member(convoy__mpi *m, const char *what)
{
    MPI_Request send = MPI_REQUEST_NULL, receive = MPI_REQUEST_NULL;
    int code;
    if ((code = MPI_Irecv(&m->verdict, (int)sizeof m->verdict, MPI_BYTE, 0, TAG_VERDICT, m->comm,
                          &receive)) != MPI_SUCCESS)
        return mpi_failed(m, code, "MPI_Irecv of the verdict");
    if ((code = MPI_Isend(&m->own, (int)sizeof m->own, MPI_BYTE, 0, TAG_HEADER, m->comm, &send)) !=
        MPI_SUCCESS) {
        int received;
        withdraw_receive(&receive, &received);
        return mpi_failed(m, code, "MPI_Isend of the header");
    }
    /* Rank 0 waits up to the timeout from its own arrival, which may come up to a timeout
     * after this rank's. */
    const double deadline = deadline_after(2 * m->timeout_ms);
    poll_result result = poll_request(&receive, deadline, 1, &code);
    if (result == POLL_DONE)
        result = poll_request(&send, deadline, 0, &code);
    if (result == POLL_ERROR)
        return mpi_failed(m, code, "waiting for the verdict");
    if (result == POLL_TIMEOUT) {
        int received = 0;
        withdraw_receive(&receive, &received);
        abandon_send(&send);
        if (!received) {
            convoy__error(CONVOY_ERR_BACKEND,
                          "rank %d of %d: %s, collective #%" PRId64
                          ": no answer from rank 0, which coordinates every collective, within "
                          "%" PRId64 " ms (rank 0 failed, exited, or is stuck before this "
                          "collective); the communicator is unusable from now on",
                          m->rank, m->size, what, m->own.sequence, 2 * m->timeout_ms);
            return break_with(m, CONVOY_ERR_BACKEND);
        }
    }
    if (m->verdict.sequence != m->own.sequence) {
        convoy__error(CONVOY_ERR_BACKEND,
                      "rank %d of %d: %s: rank 0 answered collective #%" PRId64
                      " to this rank's #%" PRId64 "; the communicator is unusable from now on",
                      m->rank, m->size, what, m->verdict.sequence, m->own.sequence);
        return break_with(m, CONVOY_ERR_BACKEND);
    }
    return CONVOY_OK;
}

convoy_status convoy__mpi_agree(convoy__mpi *m, convoy__comm_header *mine)
{
    convoy_status status = refuse_if_broken(m);
    if (status != CONVOY_OK)
        return status;
    mine->sequence = ++m->sequence;
    mine->note[sizeof mine->note - 1] = '\0';
    m->own = *mine;
    char what[320];
    convoy__comm_header_text(mine, what, sizeof what);
    if (m->size == 1) {
        int arrived = 1;
        convoy__comm_decide(&m->own, &arrived, 1, m->timeout_ms, &m->verdict);
    } else if ((status = m->rank == 0 ? agree_as_root(m) : agree_as_member(m, what)) != CONVOY_OK) {
        return status;
    }
    const convoy__comm_verdict *v = &m->verdict;
    if (v->status == CONVOY_OK)
        return CONVOY_OK;
    convoy__error((convoy_status)v->status, "rank %d of %d: %.*s", m->rank, m->size,
                  (int)sizeof v->text, v->text);
    return v->broken ? break_with(m, (convoy_status)v->status) : (convoy_status)v->status;
}

/* ---- the data ---------------------------------------------------------------------------- */

static convoy_status reserve_floats(float **buffer, int64_t *capacity, int64_t count)
{
    if (count <= *capacity)
        return CONVOY_OK;
    float *grown = malloc((size_t)count * sizeof *grown);
    if (!grown)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY,
                             "out of host memory for a collective's buffer of %" PRId64 " floats",
                             count);
    free(*buffer);
    *buffer = grown;
    *capacity = count;
    return CONVOY_OK;
}

/* Waits for a collective request of the data phase; a timeout breaks the communicator. */
static convoy_status finish_data(convoy__mpi *m, int code, MPI_Request *request, const char *call)
{
    if (code == MPI_SUCCESS) {
        poll_result result = poll_request(request, deadline_after(m->timeout_ms), 0, &code);
        if (result == POLL_DONE)
            return CONVOY_OK;
        if (result == POLL_TIMEOUT) {
            char what[320];
            convoy__comm_header_text(&m->own, what, sizeof what);
            convoy__error(CONVOY_ERR_BACKEND,
                          "rank %d of %d: %s, collective #%" PRId64 ": %s did not finish within "
                          "%" PRId64 " ms, after every rank had agreed to it (a rank failed "
                          "during the exchange); the communicator is unusable from now on",
                          m->rank, m->size, what, m->own.sequence, call, m->timeout_ms);
            return break_with(m, CONVOY_ERR_BACKEND);
        }
    }
    return mpi_failed(m, code, call);
}

/* The test hook: this rank agreed, and now leaves the exchange out. */
static convoy_status skipped_by_hook(convoy__mpi *m)
{
    if (m->skip_rank != m->rank || m->skip_sequence != m->own.sequence)
        return CONVOY_OK;
    char what[320];
    convoy__comm_header_text(&m->own, what, sizeof what);
    convoy__error(CONVOY_ERR_BACKEND,
                  "rank %d of %d: %s, collective #%" PRId64
                  ": left out by the test hook CONVOY_TEST_COMM_SKIP_DATA",
                  m->rank, m->size, what, m->own.sequence);
    return break_with(m, CONVOY_ERR_BACKEND);
}

/* Sums one piece over the ranks in rank order: all-to-all of the slices, the sum, then an
 * all-gather of the reduced slices (comm/reduce.h). */
static convoy_status reduce_piece_in_rank_order(convoy__mpi *m, float *piece, int64_t count)
{
    int64_t mine_start = 0, mine_count = 0;
    for (int r = 0; r < m->size; ++r) {
        int64_t start, n;
        convoy__comm_slice(count, m->size, r, &start, &n);
        m->slice_starts[r] = (int)start;
        m->slice_counts[r] = (int)n;
        if (r == m->rank) {
            mine_start = start;
            mine_count = n;
        }
    }
    for (int r = 0; r < m->size; ++r) {
        m->part_counts[r] = (int)mine_count;
        m->part_starts[r] = (int)(mine_count * r);
    }
    convoy_status status = reserve_floats(&m->parts, &m->parts_capacity,
                                          mine_count * m->size > 0 ? mine_count * m->size : 1);
    if (status != CONVOY_OK)
        return status;
    MPI_Request request = MPI_REQUEST_NULL;
    int code = MPI_Ialltoallv(piece, m->slice_counts, m->slice_starts, MPI_FLOAT, m->parts,
                              m->part_counts, m->part_starts, MPI_FLOAT, m->comm, &request);
    if ((status = finish_data(m, code, &request, "MPI_Ialltoallv of the slices")) != CONVOY_OK)
        return status;
    convoy__comm_sum_in_rank_order(piece + mine_start, m->parts, mine_count, m->size, mine_count);
    code = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, piece, m->slice_counts,
                           m->slice_starts, MPI_FLOAT, m->comm, &request);
    return finish_data(m, code, &request, "MPI_Iallgatherv of the reduced slices");
}

convoy_status convoy__mpi_allreduce(convoy__mpi *m, const convoy__comm_segment *segments,
                                    size_t count, int64_t total, convoy_reduce_op op,
                                    int deterministic)
{
    convoy_status status = refuse_if_broken(m);
    if (status != CONVOY_OK || (status = skipped_by_hook(m)) != CONVOY_OK || total == 0)
        return status;
    if ((status = reserve_floats(&m->buffer, &m->buffer_capacity, total)) != CONVOY_OK)
        return status;
    int64_t filled = 0;
    for (size_t i = 0; i < count; ++i) {
        const convoy__comm_segment *s = &segments[i];
        memset(m->buffer + filled, 0, (size_t)(s->offset - filled) * sizeof(float));
        if (s->count > 0) /* an empty tensor has no storage */
            memcpy(m->buffer + s->offset, s->data, (size_t)s->count * sizeof(float));
        filled = s->offset + s->count;
    }
    memset(m->buffer + filled, 0, (size_t)(total - filled) * sizeof(float));
    for (int64_t at = 0; at < total && m->size > 1; at += PIECE) {
        int64_t n = total - at < PIECE ? total - at : PIECE;
        if (deterministic) {
            status = reduce_piece_in_rank_order(m, m->buffer + at, n);
        } else {
            MPI_Request request = MPI_REQUEST_NULL;
            int code = MPI_Iallreduce(MPI_IN_PLACE, m->buffer + at, (int)n, MPI_FLOAT, MPI_SUM,
                                      m->comm, &request);
            status = finish_data(m, code, &request, "MPI_Iallreduce");
        }
        if (status != CONVOY_OK)
            return status;
    }
    const float ranks = (float)m->size;
    for (size_t i = 0; i < count; ++i) {
        const convoy__comm_segment *s = &segments[i];
        const float *reduced = m->buffer + s->offset;
        if (s->count == 0)
            continue;
        if (op == CONVOY_REDUCE_AVERAGE) {
            for (int64_t k = 0; k < s->count; ++k)
                s->data[k] = reduced[k] / ranks;
        } else {
            memcpy(s->data, reduced, (size_t)s->count * sizeof(float));
        }
    }
    return CONVOY_OK;
}

convoy_status convoy__mpi_broadcast(convoy__mpi *m, float *data, int64_t count, int root)
{
    convoy_status status = refuse_if_broken(m);
    if (status != CONVOY_OK || (status = skipped_by_hook(m)) != CONVOY_OK || count == 0 ||
        m->size == 1)
        return status;
    if ((status = reserve_floats(&m->buffer, &m->buffer_capacity, count)) != CONVOY_OK)
        return status;
    if (m->rank == root)
        memcpy(m->buffer, data, (size_t)count * sizeof(float));
    for (int64_t at = 0; at < count; at += PIECE) {
        int64_t n = count - at < PIECE ? count - at : PIECE;
        MPI_Request request = MPI_REQUEST_NULL;
        int code = MPI_Ibcast(m->buffer + at, (int)n, MPI_FLOAT, root, m->comm, &request);
        if ((status = finish_data(m, code, &request, "MPI_Ibcast")) != CONVOY_OK)
            return status;
    }
    if (m->rank != root)
        memcpy(data, m->buffer, (size_t)count * sizeof(float));
    return CONVOY_OK;
}

convoy_status convoy__mpi_bcast_bytes(void *context, void *data, size_t size, int root)
{
    convoy__mpi *m = context;
    convoy_status status = refuse_if_broken(m);
    if (status != CONVOY_OK || m->size == 1)
        return status;
    if (size > (size_t)1 << 20)
        return convoy__error(CONVOY_ERR_INTERNAL, "bootstrap broadcast of %zu bytes", size);
    MPI_Request request = MPI_REQUEST_NULL;
    int code = MPI_Ibcast(data, (int)size, MPI_BYTE, root, m->comm, &request);
    if (code != MPI_SUCCESS)
        return mpi_failed(m, code, "MPI_Ibcast of the device communicator's id");
    poll_result result = poll_request(&request, deadline_after(m->timeout_ms), 1, &code);
    if (result == POLL_ERROR)
        return mpi_failed(m, code, "MPI_Ibcast of the device communicator's id");
    if (result == POLL_TIMEOUT) {
        convoy__error(CONVOY_ERR_BACKEND,
                      "rank %d of %d: the broadcast of the device communicator's id from rank "
                      "%d did not finish within %" PRId64 " ms; the communicator is unusable",
                      m->rank, m->size, root, m->timeout_ms);
        return break_with(m, CONVOY_ERR_BACKEND);
    }
    return CONVOY_OK;
}

#else /* no MPI in this build */

struct convoy__mpi {
    int unused;
};

static convoy_status without_mpi(void)
{
    return convoy__error(CONVOY_ERR_UNSUPPORTED,
                         "comm_create: convoy was built without MPI (CMake found no MPI, or "
                         "CONVOY_ENABLE_MPI=OFF); install an MPI (libopenmpi-dev) and rebuild");
}

void convoy__mpi_describe(char *text, size_t size)
{
    snprintf(text, size, "MPI: none (built without MPI)");
}

convoy_status convoy__mpi_create(const convoy__mpi_config *config, convoy__mpi **out)
{
    (void)config;
    (void)out;
    return without_mpi();
}

void convoy__mpi_destroy(convoy__mpi *m)
{
    (void)m;
}

int convoy__mpi_rank(const convoy__mpi *m)
{
    (void)m;
    return 0;
}

int convoy__mpi_size(const convoy__mpi *m)
{
    (void)m;
    return 1;
}

int64_t convoy__mpi_timeout_ms(const convoy__mpi *m)
{
    (void)m;
    return 0;
}

convoy_status convoy__mpi_agree(convoy__mpi *m, convoy__comm_header *mine)
{
    (void)m;
    (void)mine;
    return without_mpi();
}

convoy_status convoy__mpi_allreduce(convoy__mpi *m, const convoy__comm_segment *segments,
                                    size_t count, int64_t total, convoy_reduce_op op,
                                    int deterministic)
{
    (void)m;
    (void)segments;
    (void)count;
    (void)total;
    (void)op;
    (void)deterministic;
    return without_mpi();
}

convoy_status convoy__mpi_broadcast(convoy__mpi *m, float *data, int64_t count, int root)
{
    (void)m;
    (void)data;
    (void)count;
    (void)root;
    return without_mpi();
}

convoy_status convoy__mpi_bcast_bytes(void *mpi, void *data, size_t size, int root)
{
    (void)mpi;
    (void)data;
    (void)size;
    (void)root;
    return without_mpi();
}

#endif /* CONVOY_HAVE_MPI */
