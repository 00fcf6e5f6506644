/* What the ranks agree on before each collective, and the verdict on it.
 *
 * Before any data moves, every rank describes the collective it is about to
 * run in a fixed-size header (its kind, reduce operation, root, sequence
 * number, the tensors' element count and dims, and whether it can take part
 * at all). Rank 0 collects the headers and decides; every rank fails or
 * proceeds on that one verdict, so the ranks never disagree about whether a
 * collective happened. The decision is a pure function of the headers that
 * arrived, kept apart from MPI (comm/mpi_comm.c) so it is tested on its own.
 *
 * Headers travel as bytes between processes of one build (the ranks check
 * convoy's version when the communicator is made), so the struct is sent
 * as it is. */
#ifndef CONVOY_COMM_AGREEMENT_H
#define CONVOY_COMM_AGREEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"

#define CONVOY__COMM_MAX_DIMS 8
#define CONVOY__COMM_NOTE_SIZE 320
#define CONVOY__COMM_VERDICT_SIZE 1024

typedef enum convoy__collective_kind {
    CONVOY__COLLECTIVE_CREATE = 1,      /* comm_create: device kind and version */
    CONVOY__COLLECTIVE_JOIN_DEVICE = 2, /* comm_create: every rank joined NCCL */
    CONVOY__COLLECTIVE_ALLREDUCE = 3,
    CONVOY__COLLECTIVE_ALLREDUCE_MANY = 4,
    CONVOY__COLLECTIVE_BROADCAST = 5
} convoy__collective_kind;

typedef struct convoy__comm_header {
    int64_t sequence; /* the communicator's count of agreements, from 1 */
    int64_t kind;     /* convoy__collective_kind */
    int64_t op;       /* convoy_reduce_op; CREATE: the convoy_device */
    int64_t root;     /* BROADCAST: the root; CREATE: CONVOY_VERSION_NUMBER-like; else 0 */
    int64_t tensors;  /* how many tensors */
    int64_t elements; /* their total element count */
    uint64_t shapes;  /* FNV-1a over every tensor's rank and dims */
    int64_t ndim;     /* the first tensor's rank and dims */
    int64_t dims[CONVOY__COMM_MAX_DIMS];
    int64_t ok;                        /* 0: this rank cannot take part; note says why */
    char note[CONVOY__COMM_NOTE_SIZE]; /* NUL-terminated */
} convoy__comm_header;

typedef struct convoy__comm_verdict {
    int64_t sequence;
    int32_t status; /* convoy_status: CONVOY_OK, or how every rank fails */
    int32_t broken; /* 1: the communicator is unusable from now on */
    char text[CONVOY__COMM_VERDICT_SIZE];
} convoy__comm_verdict;

/* Fills the description fields of a header (not sequence, ok or note) for a
 * collective over count tensors with the given ranks (ndims) and dims. */
void convoy__comm_header_describe_tensors(convoy__comm_header *h, convoy__collective_kind kind,
                                          int64_t op, int64_t root, size_t count, const int *ndims,
                                          const int64_t *const *dims);

/* "allreduce (sum) of 8x4x3x3 (288 elements)", "broadcast from rank 1 of 10
 * (10 elements)", "allreduce_many (average) of 3 tensors (1234 elements,
 * the first 8x4x3x3, shape digest 1a2b3c4d)". */
void convoy__comm_header_text(const convoy__comm_header *h, char *text, size_t size);

/* Rank 0's decision. headers[r] is valid where arrived[r]; headers[0] is
 * rank 0's own (always arrived). In order of precedence:
 *  - a rank missing: CONVOY_ERR_BACKEND, broken, naming the missing ranks;
 *  - sequence numbers differ: CONVOY_ERR_BACKEND, broken (the ranks lost
 *    step with each other), naming each rank's number;
 *  - a rank that cannot take part: CONVOY_ERR_BACKEND, not broken, naming
 *    it and its note;
 *  - descriptions differ: CONVOY_ERR_SHAPE when only the tensors' dims or
 *    element counts differ, CONVOY_ERR_INVALID_ARGUMENT when the kind, the
 *    operation, the root or the number of tensors do; not broken; naming
 *    each group of ranks with what it submitted;
 *  - else CONVOY_OK.
 * timeout_ms only appears in the text. */
void convoy__comm_decide(const convoy__comm_header *headers, const int *arrived, int size,
                         int64_t timeout_ms, convoy__comm_verdict *verdict);

/* Writes the ranks r with flags[r] != 0 (or == 0 when want is 0), as
 * "1, 3-5, 9", truncated with "..." to size. Returns how many there are. */
int convoy__comm_rank_list(const int *flags, int want, int size, char *text, size_t text_size);

#endif /* CONVOY_COMM_AGREEMENT_H */
