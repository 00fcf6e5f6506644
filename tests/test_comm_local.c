/* The parts of the collectives that need no second process, on any machine: the bucket layout
 * of convoy_allreduce_many, the slices and the rank-order sum of the deterministic
 * all-reduce, rank lists and rank 0's verdict over the ranks' headers (every kind of
 * disagreement, a missing rank, a rank that cannot take part); the scheduler's communication
 * stream (a task on it runs on a thread of its own, after its producers on the compute
 * streams, and shows as its own track) and the skip callback (called once, in the body's
 * place, with the failure, when a dependency failed); communicator options from the
 * environment; and convoy_comm_create refusing cleanly in a process without MPI running. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm/agreement.h"
#include "comm/bucket.h"
#include "comm/reduce.h"
#include "convoy.h"
#include "core/error_detail.h"
#include "runtime/runtime_int.h"
#include "scheduler/task_int.h"
#include "temp_files.h"

/* convoy_mpi.h declares it, but needs mpi.h, which a build without MPI lacks; the signature
 * has no MPI type. */
convoy_status convoy_comm_create_mpi(convoy_runtime *runtime, const void *mpi_comm,
                                     size_t mpi_comm_size, const convoy_comm_options *options,
                                     convoy_comm **out);

/* ---- bucket layout ----------------------------------------------------------------------- */

static void bucket_layout(void **state)
{
    (void)state;
    const int64_t counts[5] = {5, 0, 16, 1, 17};
    int64_t offsets[5], total = -1;
    assert_true(convoy__bucket_layout(counts, 5, 16, offsets, &total));
    const int64_t want[5] = {0, 16, 16, 32, 48};
    assert_memory_equal(offsets, want, sizeof want);
    assert_int_equal(total, 65);
    assert_true(convoy__bucket_layout(counts, 5, 1, offsets, &total));
    const int64_t packed[5] = {0, 5, 5, 21, 22};
    assert_memory_equal(offsets, packed, sizeof packed);
    assert_int_equal(total, 39);
    assert_true(convoy__bucket_layout(counts, 0, 16, offsets, &total));
    assert_int_equal(total, 0);
    const int64_t huge[2] = {INT64_MAX - 20, 30};
    assert_false(convoy__bucket_layout(huge, 2, 16, offsets, &total));
    const int64_t negative[1] = {-1};
    assert_false(convoy__bucket_layout(negative, 1, 16, offsets, &total));
}

/* ---- the deterministic reduction ---------------------------------------------------------- */

static void slices_cover_the_buffer(void **state)
{
    (void)state;
    const int64_t totals[6] = {0, 1, 7, 100, 101, 1 << 20};
    const int rank_counts[5] = {1, 2, 3, 7, 64};
    for (int t = 0; t < 6; ++t) {
        for (int k = 0; k < 5; ++k) {
            int64_t next = 0, smallest = INT64_MAX, largest = 0;
            for (int r = 0; r < rank_counts[k]; ++r) {
                int64_t start, count;
                convoy__comm_slice(totals[t], rank_counts[k], r, &start, &count);
                assert_int_equal(start, next);
                next = start + count;
                smallest = count < smallest ? count : smallest;
                largest = count > largest ? count : largest;
            }
            assert_int_equal(next, totals[t]);
            assert_true(largest - smallest <= 1);
        }
    }
}

static void sum_in_rank_order(void **state)
{
    (void)state;
    enum { RANKS = 5, COUNT = 1000 };
    float parts[RANKS * COUNT], out[COUNT], want[COUNT];
    uint32_t x = 12345;
    for (int i = 0; i < RANKS * COUNT; ++i) {
        x = x * 1664525u + 1013904223u;
        parts[i] = (float)(x >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    for (int i = 0; i < COUNT; ++i) {
        float v = parts[i];
        for (int r = 1; r < RANKS; ++r)
            v = v + parts[r * COUNT + i];
        want[i] = v;
    }
    convoy__comm_sum_in_rank_order(out, parts, COUNT, RANKS, COUNT);
    assert_memory_equal(out, want, sizeof want);
    convoy__comm_sum_in_rank_order(parts, parts, COUNT, RANKS, COUNT); /* in place */
    assert_memory_equal(parts, want, sizeof want);
}

/* ---- rank lists and the verdict ------------------------------------------------------------ */

static void rank_lists(void **state)
{
    (void)state;
    const int flags[10] = {0, 1, 0, 1, 1, 1, 0, 0, 0, 1};
    char text[64];
    assert_int_equal(convoy__comm_rank_list(flags, 1, 10, text, sizeof text), 5);
    assert_string_equal(text, "1, 3-5, 9");
    assert_int_equal(convoy__comm_rank_list(flags, 0, 10, text, sizeof text), 5);
    assert_string_equal(text, "0, 2, 6-8");
    assert_int_equal(convoy__comm_rank_list(flags, 1, 10, text, 12), 5);
    assert_string_equal(text, "1, 3-5, ...");
    assert_int_equal(convoy__comm_rank_list(flags, 1, 10, text, 6), 5);
    assert_string_equal(text, "...");
    int alternating[200];
    for (int i = 0; i < 200; ++i)
        alternating[i] = i % 2;
    assert_int_equal(convoy__comm_rank_list(alternating, 1, 200, text, sizeof text), 100);
    assert_true(strlen(text) < sizeof text);
    assert_non_null(strstr(text, ", ..."));
}

static void header(convoy__comm_header *h, convoy__collective_kind kind, int64_t op, int64_t root,
                   int ndim, const int64_t *dims)
{
    memset(h, 0, sizeof *h);
    const int64_t *list[1] = {dims};
    convoy__comm_header_describe_tensors(h, kind, op, root, 1, &ndim, list);
    h->sequence = 4;
    h->ok = 1;
}

static void verdict_agreement(void **state)
{
    (void)state;
    const int64_t a[2] = {8, 9}, b[2] = {8, 10}, c[1] = {72};
    convoy__comm_header h[3];
    int arrived[3] = {1, 1, 1};
    convoy__comm_verdict v;
    for (int r = 0; r < 3; ++r)
        header(&h[r], CONVOY__COLLECTIVE_ALLREDUCE, CONVOY_REDUCE_SUM, 0, 2, a);
    convoy__comm_decide(h, arrived, 3, 1500, &v);
    assert_int_equal(v.status, CONVOY_OK);
    assert_int_equal(v.broken, 0);
    assert_int_equal(v.sequence, 4);

    /* The same element count in another shape is still a shape disagreement. */
    header(&h[1], CONVOY__COLLECTIVE_ALLREDUCE, CONVOY_REDUCE_SUM, 0, 1, c);
    header(&h[2], CONVOY__COLLECTIVE_ALLREDUCE, CONVOY_REDUCE_SUM, 0, 2, b);
    convoy__comm_decide(h, arrived, 3, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_SHAPE);
    assert_int_equal(v.broken, 0);
    assert_string_equal(v.text, "the ranks disagree on collective #4: rank 0: allreduce (sum) of "
                                "8x9 (72 elements); rank 1: allreduce (sum) of 72 (72 elements); "
                                "rank 2: allreduce (sum) of 8x10 (80 elements)");

    header(&h[1], CONVOY__COLLECTIVE_ALLREDUCE, CONVOY_REDUCE_AVERAGE, 0, 2, a);
    header(&h[2], CONVOY__COLLECTIVE_ALLREDUCE, CONVOY_REDUCE_SUM, 0, 2, a);
    convoy__comm_decide(h, arrived, 3, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(v.text, "ranks 0, 2: allreduce (sum) of 8x9 (72 elements); rank 1: "
                                   "allreduce (average) of 8x9"));

    header(&h[1], CONVOY__COLLECTIVE_BROADCAST, 0, 2, 2, a);
    header(&h[2], CONVOY__COLLECTIVE_BROADCAST, 0, 1, 2, a);
    h[0] = h[2];
    convoy__comm_decide(h, arrived, 3, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(v.text, "rank 1: broadcast from rank 2 of 8x9"));
    assert_non_null(strstr(v.text, "ranks 0, 2: broadcast from rank 1 of 8x9"));
}

static void verdict_failures(void **state)
{
    (void)state;
    const int64_t a[3] = {2, 3, 4};
    convoy__comm_header h[4];
    int arrived[4] = {1, 1, 1, 1};
    convoy__comm_verdict v;
    for (int r = 0; r < 4; ++r)
        header(&h[r], CONVOY__COLLECTIVE_ALLREDUCE, CONVOY_REDUCE_SUM, 0, 3, a);

    /* A rank that cannot take part, with why; the communicator stays usable. */
    h[2].ok = 0;
    snprintf(h[2].note, sizeof h[2].note, "its input failed");
    convoy__comm_decide(h, arrived, 4, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_BACKEND);
    assert_int_equal(v.broken, 0);
    assert_string_equal(v.text, "allreduce (sum) of 2x3x4 (24 elements), collective #4: rank 2 "
                                "could not take part (its input failed)");

    /* Missing ranks come first and break the communicator. */
    arrived[1] = arrived[3] = 0;
    convoy__comm_decide(h, arrived, 4, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_BACKEND);
    assert_int_equal(v.broken, 1);
    assert_non_null(strstr(v.text, "ranks 1, 3 did not take part within 1500 ms"));
    assert_non_null(strstr(v.text, "unusable"));

    /* Ranks at different collectives: broken, each rank's number named. */
    arrived[1] = arrived[3] = 1;
    h[2].ok = 1;
    h[3].sequence = 3;
    convoy__comm_decide(h, arrived, 4, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_BACKEND);
    assert_int_equal(v.broken, 1);
    assert_non_null(strstr(v.text, "rank 3 at #3"));

    /* comm_create: a rank on another device kind. */
    convoy__comm_header c[2];
    memset(c, 0, sizeof c);
    for (int r = 0; r < 2; ++r) {
        c[r].kind = CONVOY__COLLECTIVE_CREATE;
        c[r].op = r == 0 ? CONVOY_DEVICE_CPU : CONVOY_DEVICE_CUDA;
        c[r].root = 100;
        c[r].ok = 1;
    }
    convoy__comm_decide(c, arrived, 2, 1500, &v);
    assert_int_equal(v.status, CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(v.text, "rank 0: comm_create on a CPU runtime with convoy 0.1.0; rank "
                                   "1: comm_create on a CUDA runtime with convoy 0.1.0"));
}

static void describing_many(void **state)
{
    (void)state;
    const int64_t d0[2] = {3, 4}, d1[1] = {5}, e1[1] = {6}, e0[2] = {2, 4};
    const int64_t *first[2] = {d0, d1}, *second[2] = {e0, e1};
    const int ndims[2] = {2, 1};
    convoy__comm_header a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    convoy__comm_header_describe_tensors(&a, CONVOY__COLLECTIVE_ALLREDUCE_MANY,
                                         CONVOY_REDUCE_AVERAGE, 0, 2, ndims, first);
    convoy__comm_header_describe_tensors(&b, CONVOY__COLLECTIVE_ALLREDUCE_MANY,
                                         CONVOY_REDUCE_AVERAGE, 0, 2, ndims, second);
    assert_int_equal(a.elements, 17);
    assert_int_equal(b.elements, 14);
    assert_true(a.shapes != b.shapes);
    char text[256];
    convoy__comm_header_text(&a, text, sizeof text);
    assert_non_null(strstr(text, "allreduce_many (average) of 2 tensors (17 elements, the first "
                                 "3x4, shape digest "));
}

/* ---- the communication stream and skipping ------------------------------------------------- */

typedef struct probe {
    pthread_t thread;
    int fail; /* slow_then fails */
    int ran;
    int skipped;
    char reason[512];
} probe;

static convoy_status record_thread(void *payload, void *native_stream, convoy__stream *order)
{
    (void)native_stream;
    (void)order;
    probe *p = *(probe **)payload;
    p->thread = pthread_self();
    p->ran++;
    return CONVOY_OK;
}

static void record_skip(void *payload, void *native_stream, const char *reason)
{
    (void)native_stream;
    probe *p = *(probe **)payload;
    p->skipped++;
    snprintf(p->reason, sizeof p->reason, "%s", reason ? reason : "");
}

static convoy_status slow_then(void *payload, void *native_stream, convoy__stream *order)
{
    probe *p = *(probe **)payload;
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    record_thread(payload, native_stream, order);
    return p->fail ? CONVOY_ERR_TASK_FAILED : CONVOY_OK;
}

static convoy_status submit_probe(convoy_runtime *rt, convoy__queue queue, convoy__task_run_fn run,
                                  probe *p, convoy_tensor *t, int mode, const char *label,
                                  convoy_task **task)
{
    convoy__hazard_access access = {&t->hazards, mode};
    convoy__task_desc desc = {
        CONVOY__TASK_ALLREDUCE, queue, label, run, NULL, NULL, &p, sizeof p, &access, 1, 0};
    return convoy__scheduler_submit_skippable(rt->scheduler, &desc, record_skip, task);
}

static convoy_runtime *runtime_with(int streams, const char *trace)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = streams;
    o.blas_threads = 1;
    o.trace_path = trace;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    return rt;
}

static int setup(void **state)
{
    return temp_dir_setup(state, "convoy_comm_local_", "trace.json");
}

static int teardown(void **state)
{
    return temp_dir_teardown(state);
}

static void comm_stream_runs_in_order(void **state)
{
    const char *trace = ((temp_dir *)*state)->path;
    convoy_runtime *rt = runtime_with(2, trace);
    assert_false(convoy__scheduler_has_comm_stream(rt->scheduler));
    assert_int_equal(convoy__scheduler_open_comm_stream(rt->scheduler), CONVOY_OK);
    assert_int_equal(convoy__scheduler_open_comm_stream(rt->scheduler), CONVOY_OK); /* once */
    assert_true(convoy__scheduler_has_comm_stream(rt->scheduler));
    const int64_t n = 4;
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
    probe producer = {0}, collective = {0};
    convoy_task *task = NULL;
    assert_int_equal(submit_probe(rt, CONVOY__QUEUE_COMPUTE, slow_then, &producer, t, CONVOY_WRITE,
                                  "producer", NULL),
                     CONVOY_OK);
    assert_int_equal(submit_probe(rt, CONVOY__QUEUE_COMM, record_thread, &collective, t,
                                  CONVOY_READ_WRITE, "collective", &task),
                     CONVOY_OK);
    assert_int_equal(convoy_task_wait(task), CONVOY_OK);
    convoy_task_release(task);
    assert_int_equal(producer.ran, 1);
    assert_int_equal(collective.ran, 1);
    assert_int_equal(collective.skipped, 0);
    assert_false(pthread_equal(producer.thread, collective.thread));
    assert_false(pthread_equal(collective.thread, pthread_self()));
    convoy_tensor_destroy(t);
    convoy_runtime_destroy(rt);
    char *text = temp_read_file(trace, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"convoy comm\""));
    assert_non_null(strstr(text, "\"cat\":\"allreduce\""));
    free(text);
}

static void skip_runs_in_the_body_place(void **state)
{
    (void)state;
    const int streams[2] = {2, 0};
    for (int k = 0; k < 2; ++k) {
        convoy_runtime *rt = runtime_with(streams[k], NULL);
        assert_int_equal(convoy__scheduler_open_comm_stream(rt->scheduler), CONVOY_OK);
        assert_int_equal(convoy__scheduler_has_comm_stream(rt->scheduler), streams[k] > 0);
        const int64_t n = 4;
        convoy_tensor *t = NULL;
        assert_int_equal(convoy_tensor_create(rt, 1, &n, &t), CONVOY_OK);
        probe producer = {.fail = 1}, collective = {0};
        convoy_task *failed = NULL, *task = NULL;
        assert_int_equal(submit_probe(rt, CONVOY__QUEUE_COMPUTE, slow_then, &producer, t,
                                      CONVOY_WRITE, "failing producer", &failed),
                         CONVOY_OK);
        assert_int_equal(submit_probe(rt, CONVOY__QUEUE_COMM, record_thread, &collective, t,
                                      CONVOY_READ_WRITE, "collective", &task),
                         CONVOY_OK);
        assert_int_equal(convoy_task_wait(task), CONVOY_ERR_DEPENDENCY_FAILED);
        assert_int_equal(collective.ran, 0);
        assert_int_equal(collective.skipped, 1);
        assert_non_null(strstr(collective.reason, "depends on 'failing producer'"));
        char why[256];
        assert_true(convoy__scheduler_input_failed(rt->scheduler, &t->hazards, why, sizeof why));
        assert_non_null(strstr(why, "'collective' failed with CONVOY_ERR_DEPENDENCY_FAILED"));
        convoy_task_release(task);
        assert_int_equal(convoy_task_wait(failed), CONVOY_ERR_TASK_FAILED);
        convoy_task_release(failed);
        assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_ERR_TASK_FAILED);
        /* Written again, the tensor is good: no failed input any more. */
        probe writer = {0};
        assert_int_equal(submit_probe(rt, CONVOY__QUEUE_COMPUTE, record_thread, &writer, t,
                                      CONVOY_WRITE, "writer", &task),
                         CONVOY_OK);
        assert_int_equal(convoy_task_wait(task), CONVOY_OK);
        convoy_task_release(task);
        assert_false(convoy__scheduler_input_failed(rt->scheduler, &t->hazards, why, sizeof why));
        convoy_tensor_destroy(t);
        convoy_runtime_destroy(rt);
    }
}

/* ---- options and a process without MPI ------------------------------------------------------ */

static void comm_options(void **state)
{
    (void)state;
    convoy_comm_options o;
    assert_int_equal(convoy_comm_options_init(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_comm_options_init(&o), CONVOY_OK);
    assert_int_equal(o.timeout_ms, CONVOY_COMM_DEFAULT_TIMEOUT_MS);
    const char *bad[5] = {"-5", "0", "99999999999", " 5", "5ms"};
    for (int i = 0; i < 5; ++i) {
        setenv("CONVOY_COMM_TIMEOUT_MS", bad[i], 1);
        assert_int_equal(convoy_comm_options_from_env(&o), CONVOY_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(convoy_last_error_message(), "CONVOY_COMM_TIMEOUT_MS"));
        assert_int_equal(o.timeout_ms, CONVOY_COMM_DEFAULT_TIMEOUT_MS);
    }
    setenv("CONVOY_COMM_TIMEOUT_MS", "", 1);
    assert_int_equal(convoy_comm_options_from_env(&o), CONVOY_OK);
    assert_int_equal(o.timeout_ms, CONVOY_COMM_DEFAULT_TIMEOUT_MS);
    setenv("CONVOY_COMM_TIMEOUT_MS", "86400000", 1);
    assert_int_equal(convoy_comm_options_from_env(&o), CONVOY_OK);
    assert_int_equal(o.timeout_ms, 86400000);
    unsetenv("CONVOY_COMM_TIMEOUT_MS");
    assert_int_equal(convoy_comm_options_from_env(NULL), CONVOY_ERR_INVALID_ARGUMENT);
}

/* This process never initialises MPI: convoy_comm_create refuses, saying why, with a build
 * without MPI as with one. */
static void create_without_mpi_running(void **state)
{
    (void)state;
    convoy_runtime *rt = runtime_with(0, NULL);
    const int without = strstr(convoy_runtime_describe(rt), "built without MPI") != NULL;
    assert_non_null(strstr(convoy_runtime_describe(rt), "comm: MPI: "));
    unsigned char handle[3] = {0}; /* no MPI has a 3-byte MPI_Comm */
    convoy_comm *comm = NULL;
    convoy_status status = convoy_comm_create_mpi(rt, handle, sizeof handle, NULL, &comm);
    if (without) {
        assert_int_equal(status, CONVOY_ERR_UNSUPPORTED);
        assert_non_null(strstr(convoy_last_error_message(), "built without MPI"));
    } else {
        assert_int_equal(status, CONVOY_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(convoy_last_error_message(), "MPI_Comm has 3 bytes"));
    }
    assert_null(comm);
    assert_int_equal(convoy_comm_create_mpi(NULL, handle, sizeof handle, NULL, &comm),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy_comm_create_mpi(rt, NULL, sizeof handle, NULL, &comm),
                     CONVOY_ERR_INVALID_ARGUMENT);
    convoy_comm_options o;
    assert_int_equal(convoy_comm_options_init(&o), CONVOY_OK);
    o.timeout_ms = -1;
    assert_int_equal(convoy_comm_create_mpi(rt, handle, sizeof handle, &o, &comm),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "timeout_ms is -1"));
    convoy_runtime_destroy(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bucket_layout),
        cmocka_unit_test(slices_cover_the_buffer),
        cmocka_unit_test(sum_in_rank_order),
        cmocka_unit_test(rank_lists),
        cmocka_unit_test(verdict_agreement),
        cmocka_unit_test(verdict_failures),
        cmocka_unit_test(describing_many),
        cmocka_unit_test_setup_teardown(comm_stream_runs_in_order, setup, teardown),
        cmocka_unit_test(skip_runs_in_the_body_place),
        cmocka_unit_test(comm_options),
        cmocka_unit_test(create_without_mpi_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
