/* The agreement before each collective: describing a collective in a header,
 * and rank 0's verdict over every rank's header (comm/agreement.h). No MPI
 * here: comm/mpi_comm.c moves the headers and verdicts. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "comm/agreement.h"
#include "core/hash.h"

/* ---- describing a collective ------------------------------------------------------------ */

void convoy__comm_header_describe_tensors(convoy__comm_header *h, convoy__collective_kind kind,
                                          int64_t op, int64_t root, size_t count, const int *ndims,
                                          const int64_t *const *dims)
{
    h->kind = kind;
    h->op = op;
    h->root = root;
    h->tensors = (int64_t)count;
    h->elements = 0;
    h->shapes = CONVOY__FNV1A_OFFSET;
    h->ndim = 0;
    memset(h->dims, 0, sizeof h->dims);
    for (size_t t = 0; t < count; ++t) {
        int64_t elements = 1;
        int64_t rank = ndims[t];
        h->shapes = convoy__fnv1a_update(h->shapes, &rank, sizeof rank);
        for (int d = 0; d < ndims[t]; ++d) {
            elements *= dims[t][d];
            h->shapes = convoy__fnv1a_update(h->shapes, &dims[t][d], sizeof dims[t][d]);
        }
        h->elements += elements;
        if (t == 0) {
            h->ndim = ndims[0] < CONVOY__COMM_MAX_DIMS ? ndims[0] : CONVOY__COMM_MAX_DIMS;
            for (int d = 0; d < h->ndim; ++d)
                h->dims[d] = dims[0][d];
        }
    }
}

static void dims_text(const convoy__comm_header *h, char *text, size_t size)
{
    size_t used = 0;
    text[0] = '\0';
    for (int64_t d = 0; d < h->ndim && d < CONVOY__COMM_MAX_DIMS && used < size; ++d)
        used += (size_t)snprintf(text + used, size - used, "%s%" PRId64, d ? "x" : "", h->dims[d]);
    if (h->ndim == 0)
        snprintf(text, size, "(no dims)");
}

static const char *op_name(int64_t op)
{
    return op == CONVOY_REDUCE_SUM ? "sum" : op == CONVOY_REDUCE_AVERAGE ? "average" : "unknown op";
}

static const char *device_name(int64_t device)
{
    return device == CONVOY_DEVICE_CPU ? "CPU" : device == CONVOY_DEVICE_CUDA ? "CUDA" : "unknown";
}

void convoy__comm_header_text(const convoy__comm_header *h, char *text, size_t size)
{
    char dims[160];
    dims_text(h, dims, sizeof dims);
    switch ((convoy__collective_kind)h->kind) {
    case CONVOY__COLLECTIVE_CREATE:
        snprintf(text, size,
                 "comm_create on a %s runtime with convoy %" PRId64 ".%" PRId64 ".%" PRId64,
                 device_name(h->op), h->root / 10000, h->root / 100 % 100, h->root % 100);
        return;
    case CONVOY__COLLECTIVE_JOIN_DEVICE:
        snprintf(text, size, "comm_create joining the device communicator");
        return;
    case CONVOY__COLLECTIVE_ALLREDUCE:
        snprintf(text, size, "allreduce (%s) of %s (%" PRId64 " elements)", op_name(h->op), dims,
                 h->elements);
        return;
    case CONVOY__COLLECTIVE_ALLREDUCE_MANY:
        snprintf(text, size,
                 "allreduce_many (%s) of %" PRId64 " tensors (%" PRId64
                 " elements, the first %s, shape digest %08x)",
                 op_name(h->op), h->tensors, h->elements, dims,
                 (unsigned)(h->shapes & 0xffffffffu));
        return;
    case CONVOY__COLLECTIVE_BROADCAST:
        snprintf(text, size, "broadcast from rank %" PRId64 " of %s (%" PRId64 " elements)",
                 h->root, dims, h->elements);
        return;
    }
    snprintf(text, size, "an unknown collective (kind %" PRId64 ")", h->kind);
}

/* ---- rank lists ------------------------------------------------------------------------- */

int convoy__comm_rank_list(const int *flags, int want, int size, char *text, size_t text_size)
{
    size_t used = 0;
    int count = 0, truncated = 0;
    if (text_size)
        text[0] = '\0';
    for (int r = 0; r < size; ++r) {
        if ((flags[r] != 0) != (want != 0))
            continue;
        int last = r;
        while (last + 1 < size && (flags[last + 1] != 0) == (want != 0))
            ++last;
        count += last - r + 1;
        char item[40];
        if (last == r)
            snprintf(item, sizeof item, "%s%d", used ? ", " : "", r);
        else
            snprintf(item, sizeof item, "%s%d-%d", used ? ", " : "", r, last);
        /* Each item leaves room for ", ..." and the terminator after it. */
        size_t n = strlen(item);
        if (!truncated && used + n + 6 <= text_size) {
            memcpy(text + used, item, n + 1);
            used += n;
        } else if (!truncated) {
            truncated = 1;
            const char *more = used ? ", ..." : "...";
            if (used + strlen(more) + 1 <= text_size)
                memcpy(text + used, more, strlen(more) + 1);
        }
        r = last;
    }
    return count;
}

/* ---- the verdict ------------------------------------------------------------------------ */

/* Whether two headers describe the same collective (sequence, ok and note aside). */
static int same_collective(const convoy__comm_header *a, const convoy__comm_header *b)
{
    if (a->kind != b->kind || a->op != b->op || a->root != b->root || a->tensors != b->tensors ||
        a->elements != b->elements || a->shapes != b->shapes || a->ndim != b->ndim)
        return 0;
    return memcmp(a->dims, b->dims, sizeof a->dims) == 0;
}

/* Whether they differ in what is asked (kind, operation, root, how many tensors) rather than
 * only in the tensors' shapes. */
static int differ_in_request(const convoy__comm_header *a, const convoy__comm_header *b)
{
    return a->kind != b->kind || a->op != b->op || a->root != b->root || a->tensors != b->tensors;
}

/* Appends formatted text, keeping the terminator; silently truncates. */
static void append(char *text, size_t size, size_t *used, const char *item)
{
    size_t n = strlen(item);
    if (*used + 1 >= size)
        return;
    if (n > size - 1 - *used)
        n = size - 1 - *used;
    memcpy(text + *used, item, n);
    *used += n;
    text[*used] = '\0';
}

/* "ranks 0, 2: <what>; rank 1: <what>", one group per distinct collective. */
static void list_groups(const convoy__comm_header *headers, int size, char *text, size_t text_size,
                        size_t *used, int *request_differs)
{
    int listed_groups = 0;
    *request_differs = 0;
    for (int r = 0; r < size; ++r) {
        int first_of_group = 1;
        for (int q = 0; q < r && first_of_group; ++q)
            first_of_group = !same_collective(&headers[q], &headers[r]);
        if (!first_of_group)
            continue;
        if (differ_in_request(&headers[0], &headers[r]))
            *request_differs = 1;
        int members[4096];
        int n = size < 4096 ? size : 4096;
        for (int q = 0; q < n; ++q)
            members[q] = q >= r && same_collective(&headers[q], &headers[r]);
        char ranks[160], what[320], item[512];
        int count = convoy__comm_rank_list(members, 1, n, ranks, sizeof ranks);
        convoy__comm_header_text(&headers[r], what, sizeof what);
        snprintf(item, sizeof item, "%s%s %s: %s", listed_groups ? "; " : "",
                 count == 1 ? "rank" : "ranks", ranks, what);
        append(text, text_size, used, item);
        ++listed_groups;
    }
}

void convoy__comm_decide(const convoy__comm_header *headers, const int *arrived, int size,
                         int64_t timeout_ms, convoy__comm_verdict *verdict)
{
    char what[320], ranks[160], item[768];
    memset(verdict, 0, sizeof *verdict);
    verdict->sequence = headers[0].sequence;
    verdict->status = CONVOY_OK;
    convoy__comm_header_text(&headers[0], what, sizeof what);
    char *text = verdict->text;
    size_t text_size = sizeof verdict->text, used = 0;

    int missing = convoy__comm_rank_list(arrived, 0, size, ranks, sizeof ranks);
    if (missing > 0) {
        verdict->status = CONVOY_ERR_BACKEND;
        verdict->broken = 1;
        snprintf(text, text_size,
                 "%s, collective #%" PRId64 ": %s %s did not take part within %" PRId64
                 " ms (failed, exited, or stuck before it); the communicator is unusable from "
                 "now on",
                 what, headers[0].sequence, missing == 1 ? "rank" : "ranks", ranks, timeout_ms);
        return;
    }

    int sequences_differ = 0;
    for (int r = 1; r < size; ++r)
        sequences_differ |= headers[r].sequence != headers[0].sequence;
    if (sequences_differ) {
        verdict->status = CONVOY_ERR_BACKEND;
        verdict->broken = 1;
        snprintf(item, sizeof item,
                 "%s: the ranks are at different collectives, after an earlier failure (", what);
        append(text, text_size, &used, item);
        for (int r = 0; r < size; ++r) {
            snprintf(item, sizeof item, "%srank %d at #%" PRId64, r ? ", " : "", r,
                     headers[r].sequence);
            append(text, text_size, &used, item);
        }
        append(text, text_size, &used, "); the communicator is unusable from now on");
        return;
    }

    int unable = 0;
    for (int r = 0; r < size; ++r)
        unable += headers[r].ok == 0;
    if (unable > 0) {
        verdict->status = CONVOY_ERR_BACKEND;
        snprintf(item, sizeof item, "%s, collective #%" PRId64 ": ", what, headers[0].sequence);
        append(text, text_size, &used, item);
        int listed = 0;
        for (int r = 0; r < size; ++r) {
            if (headers[r].ok)
                continue;
            char note[CONVOY__COMM_NOTE_SIZE];
            snprintf(note, sizeof note, "%s", headers[r].note);
            snprintf(item, sizeof item, "%srank %d could not take part (%s)", listed ? "; " : "", r,
                     note[0] ? note : "no reason given");
            append(text, text_size, &used, item);
            ++listed;
        }
        return;
    }

    int agree = 1;
    for (int r = 1; r < size; ++r)
        agree &= same_collective(&headers[0], &headers[r]);
    if (agree)
        return;
    snprintf(item, sizeof item, "the ranks disagree on collective #%" PRId64 ": ",
             headers[0].sequence);
    append(text, text_size, &used, item);
    int request_differs = 0;
    list_groups(headers, size, text, text_size, &used, &request_differs);
    verdict->status = request_differs ? CONVOY_ERR_INVALID_ARGUMENT : CONVOY_ERR_SHAPE;
}
