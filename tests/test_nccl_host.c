/* The NCCL side's host logic, on machines without a GPU: convoy's reduce operations and
 * element type in NCCL's terms, and the bootstrap of a device communicator run for several
 * ranks in one process with stand-ins for NCCL and for the MPI broadcast: only rank 0 makes
 * the unique id, every rank joins with exactly that id, its rank, the size and the timeout;
 * when rank 0 cannot make an id, every rank still takes part in the broadcast and fails with
 * rank 0's reason without joining; a failed broadcast or join is returned as it is. Built
 * when the CUDA backend is built with NCCL. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <nccl.h>

#include "convoy.h"
#include "core/error_detail.h"
#include "cuda/nccl_comm.h"

static void mapping(void **state)
{
    (void)state;
    int op = -1;
    assert_int_equal(convoy__nccl_reduce_op(CONVOY_REDUCE_SUM, &op), CONVOY_OK);
    assert_int_equal(op, (int)ncclSum);
    assert_int_equal(convoy__nccl_reduce_op(CONVOY_REDUCE_AVERAGE, &op), CONVOY_OK);
    assert_int_equal(op, (int)ncclAvg);
    assert_int_equal(convoy__nccl_reduce_op((convoy_reduce_op)9, &op), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "reduce op 9"));
    assert_int_equal(convoy__nccl_element_type(), (int)ncclFloat32);
    assert_int_equal(sizeof(ncclUniqueId), CONVOY__NCCL_ID_BYTES);
}

/* ---- a simulated world ------------------------------------------------------------------- */

#define RANKS 3

typedef struct world {
    /* what the stand-ins saw */
    char log[RANKS][128];
    int unique_ids;
    int joins;
    unsigned char joined_id[RANKS][CONVOY__NCCL_ID_BYTES];
    int joined_size[RANKS], joined_rank[RANKS];
    int64_t joined_timeout[RANKS];
    /* the broadcast: rank 0's message, handed to the others */
    unsigned char message[sizeof(convoy__nccl_bootstrap_message)];
    int message_set;
    int bcasts;
    /* faults */
    int fail_unique_id;
    int fail_bcast_on; /* rank, or -1 */
    int fail_join_on;  /* rank, or -1 */
    int current;       /* the rank whose bootstrap runs */
} world;

static void note(world *w, const char *step)
{
    size_t used = strlen(w->log[w->current]);
    snprintf(w->log[w->current] + used, sizeof w->log[0] - used, "%s%s", used ? "," : "", step);
}

static convoy_status fake_unique_id(void *context, unsigned char *id)
{
    world *w = context;
    note(w, "unique_id");
    w->unique_ids++;
    if (w->fail_unique_id)
        return convoy__error(CONVOY_ERR_BACKEND, "ncclGetUniqueId failed: no network");
    for (int i = 0; i < CONVOY__NCCL_ID_BYTES; ++i)
        id[i] = (unsigned char)(i * 7 + 3);
    return CONVOY_OK;
}

static convoy_status fake_join(void *context, const unsigned char *id, int size, int rank,
                               int64_t timeout_ms, void **comm)
{
    world *w = context;
    note(w, "join");
    w->joins++;
    memcpy(w->joined_id[rank], id, CONVOY__NCCL_ID_BYTES);
    w->joined_size[rank] = size;
    w->joined_rank[rank] = rank;
    w->joined_timeout[rank] = timeout_ms;
    if (w->fail_join_on == rank)
        return convoy__error(CONVOY_ERR_BACKEND, "ncclCommInitRankConfig did not finish");
    *comm = w;
    return CONVOY_OK;
}

/* Rank 0 runs first: its message is what the others receive. */
static convoy_status fake_bcast(void *context, void *data, size_t size, int root)
{
    world *w = context;
    assert_int_equal(root, 0);
    assert_int_equal(size, sizeof w->message);
    note(w, "bcast");
    w->bcasts++;
    if (w->fail_bcast_on == w->current)
        return convoy__error(CONVOY_ERR_BACKEND, "the broadcast did not finish within 50 ms");
    if (w->current == 0) {
        memcpy(w->message, data, size);
        w->message_set = 1;
    } else {
        assert_true(w->message_set);
        memcpy(data, w->message, size);
    }
    return CONVOY_OK;
}

static const convoy__nccl_calls fake_calls = {fake_unique_id, fake_join};

/* Runs every rank's bootstrap, rank 0 first; statuses and messages per rank. */
static void run_world(world *w, convoy_status *status, char message[RANKS][512])
{
    for (int r = 0; r < RANKS; ++r) {
        w->current = r;
        convoy__collective_config config = {r, RANKS, 1234, fake_bcast, w};
        void *comm = NULL;
        status[r] = convoy__nccl_bootstrap(&fake_calls, w, &config, &comm);
        snprintf(message[r], 512, "%s", status[r] == CONVOY_OK ? "" : convoy_last_error_message());
        assert_true((status[r] == CONVOY_OK) == (comm != NULL));
    }
}

static void fresh(world *w)
{
    memset(w, 0, sizeof *w);
    w->fail_bcast_on = -1;
    w->fail_join_on = -1;
}

static void bootstrap_sequence(void **state)
{
    (void)state;
    world w;
    fresh(&w);
    convoy_status status[RANKS];
    char message[RANKS][512];
    run_world(&w, status, message);
    assert_string_equal(w.log[0], "unique_id,bcast,join");
    for (int r = 1; r < RANKS; ++r)
        assert_string_equal(w.log[r], "bcast,join");
    assert_int_equal(w.unique_ids, 1);
    assert_int_equal(w.joins, RANKS);
    for (int r = 0; r < RANKS; ++r) {
        assert_int_equal(status[r], CONVOY_OK);
        assert_memory_equal(w.joined_id[r], w.joined_id[0], CONVOY__NCCL_ID_BYTES);
        assert_int_equal(w.joined_id[r][5], 5 * 7 + 3);
        assert_int_equal(w.joined_size[r], RANKS);
        assert_int_equal(w.joined_rank[r], r);
        assert_int_equal(w.joined_timeout[r], 1234);
    }
}

/* Rank 0 has no id: every rank still broadcasts, none joins, all fail with rank 0's reason. */
static void bootstrap_without_id(void **state)
{
    (void)state;
    world w;
    fresh(&w);
    w.fail_unique_id = 1;
    convoy_status status[RANKS];
    char message[RANKS][512];
    run_world(&w, status, message);
    assert_int_equal(w.bcasts, RANKS);
    assert_int_equal(w.joins, 0);
    for (int r = 0; r < RANKS; ++r) {
        char expected[128];
        snprintf(expected, sizeof expected,
                 "rank %d of %d: rank 0 could not make the NCCL unique id", r, RANKS);
        assert_int_equal(status[r], CONVOY_ERR_BACKEND);
        assert_non_null(strstr(message[r], expected));
        assert_non_null(strstr(message[r], "no network"));
    }
}

static void bootstrap_failures(void **state)
{
    (void)state;
    world w;
    fresh(&w);
    w.fail_bcast_on = 1;
    convoy_status status[RANKS];
    char message[RANKS][512];
    run_world(&w, status, message);
    assert_string_equal(w.log[1], "bcast");
    assert_int_equal(status[1], CONVOY_ERR_BACKEND);
    assert_non_null(strstr(message[1], "did not finish within 50 ms"));
    assert_int_equal(status[0], CONVOY_OK);
    assert_int_equal(status[2], CONVOY_OK);

    fresh(&w);
    w.fail_join_on = 2;
    run_world(&w, status, message);
    assert_int_equal(status[2], CONVOY_ERR_BACKEND);
    assert_non_null(strstr(message[2], "ncclCommInitRankConfig did not finish"));
    assert_int_equal(w.joins, RANKS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mapping),
        cmocka_unit_test(bootstrap_sequence),
        cmocka_unit_test(bootstrap_without_id),
        cmocka_unit_test(bootstrap_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
