/* The scheduler's profiling on a mock device clock: the host backend with
 * its timers replaced by scripted ones, so a controlled schedule has known
 * device times. The trace must show those times (not the host's), resolved
 * once each task retired; the summary must give the exact per-kind, per-
 * stream, transfer and critical-path figures of the schedule; a timer that
 * fails falls back to the host interval; and where work runs at enqueue (as
 * on CUDA) the enqueue gets its own track, slice and "launch" arrow. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"
#include "core/device.h"
#include "core/platform.h"
#include "cpu/host_backend.h"
#include "profiling/nvtx.h"
#include "profiling/trace.h"
#include "scheduler/scheduler.h"
#include "temp_files.h"

#define SCRIPT_MAX 16

/* ---- the mock clock ------------------------------------------------------ */

typedef struct mock_timer {
    int index; /* creation order: tasks are created in submission order */
    int recorded;
} mock_timer;

typedef struct script_entry {
    double start, end; /* microseconds after base */
    int fail;
} script_entry;

static struct {
    pthread_mutex_t lock;
    double base;
    script_entry script[SCRIPT_MAX];
    int created;
    int early_reads; /* timer_elapsed before both records */
} mock = {.lock = PTHREAD_MUTEX_INITIALIZER};

static convoy_status mock_timer_create(convoy__backend *be, convoy__timer **out)
{
    mock_timer *timer = calloc(1, sizeof *timer);
    if (!timer)
        return CONVOY_ERR_OUT_OF_MEMORY;
    pthread_mutex_lock(&mock.lock);
    timer->index = mock.created++;
    pthread_mutex_unlock(&mock.lock);
    *out = (convoy__timer *)timer;
    return CONVOY_OK;
}

static void mock_timer_destroy(convoy__backend *be, convoy__timer *timer)
{
    free(timer);
}

static convoy_status mock_timer_record(convoy__backend *be, convoy__timer *timer, int end,
                                       void *native_stream)
{
    ((mock_timer *)timer)->recorded |= end ? 2 : 1;
    return CONVOY_OK;
}

static convoy_status mock_timer_elapsed(convoy__backend *be, convoy__timer *timer, double *start_us,
                                        double *end_us)
{
    const mock_timer *t = (const mock_timer *)timer;
    pthread_mutex_lock(&mock.lock);
    convoy_status status = CONVOY_OK;
    if (t->recorded != 3) {
        mock.early_reads++;
        status = CONVOY_ERR_BACKEND;
    } else if (t->index >= SCRIPT_MAX || mock.script[t->index].fail) {
        status = CONVOY_ERR_BACKEND;
    } else {
        *start_us = mock.base + mock.script[t->index].start;
        *end_us = mock.base + mock.script[t->index].end;
    }
    pthread_mutex_unlock(&mock.lock);
    return status;
}

/* Work that runs at enqueue, on the submitting thread, as on CUDA. */
static convoy_status run_now_enqueue(convoy__backend *be, convoy__stream *stream,
                                     convoy__work_fn fn, void *arg)
{
    fn(arg, NULL);
    return CONVOY_OK;
}

static convoy__backend_ops mock_ops;

/* NVTX initialises itself on its first call, and that initialisation is not
 * safe against concurrent first calls. The runtime makes its first call
 * (its domain) before it starts any thread; these tests start host streams
 * without a runtime, so they make one first. */
static int setup_nvtx(void **state)
{
    (void)state;
    convoy__prof_domain_destroy(convoy__prof_domain_create("convoy tests"));
    return 0;
}

/* A host backend whose timers (and, with run_now, enqueue) are the mock's. */
static convoy__backend *mock_backend(double base, const script_entry *script, int count,
                                     int run_now)
{
    convoy__host_config config = {1, NULL};
    convoy__backend *be = NULL;
    assert_int_equal(convoy__host_backend_create(&config, &be), CONVOY_OK);
    mock_ops = *be->ops;
    mock_ops.timer_create = mock_timer_create;
    mock_ops.timer_destroy = mock_timer_destroy;
    mock_ops.timer_record = mock_timer_record;
    mock_ops.timer_elapsed = mock_timer_elapsed;
    if (run_now) {
        mock_ops.enqueue_runs_now = 1;
        mock_ops.stream_enqueue = run_now_enqueue;
    }
    be->ops = &mock_ops;
    pthread_mutex_lock(&mock.lock);
    mock.base = base;
    memset(mock.script, 0, sizeof mock.script);
    memcpy(mock.script, script, (size_t)count * sizeof *script);
    mock.created = 0;
    mock.early_reads = 0;
    pthread_mutex_unlock(&mock.lock);
    return be;
}

/* ---- task bodies ----------------------------------------------------------- */

typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
} gate;

static gate the_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void gate_set(int open)
{
    pthread_mutex_lock(&the_gate.lock);
    the_gate.open = open;
    pthread_cond_broadcast(&the_gate.cond);
    pthread_mutex_unlock(&the_gate.lock);
}

/* The payload says whether the task waits for the gate. */
static convoy_status body(void *payload, void *native_stream, convoy__stream *order_stream)
{
    if (*(const int *)payload) {
        pthread_mutex_lock(&the_gate.lock);
        while (!the_gate.open)
            pthread_cond_wait(&the_gate.cond, &the_gate.lock);
        pthread_mutex_unlock(&the_gate.lock);
    }
    return CONVOY_OK;
}

static void submit(convoy__scheduler *s, convoy__task_kind kind, const char *label, int gated,
                   const convoy__hazard_access *accesses, size_t count, size_t bytes)
{
    convoy__queue queue = kind == CONVOY__TASK_UPLOAD     ? CONVOY__QUEUE_UPLOAD
                          : kind == CONVOY__TASK_DOWNLOAD ? CONVOY__QUEUE_DOWNLOAD
                                                          : CONVOY__QUEUE_COMPUTE;
    convoy__task_desc desc = {kind,   queue,        label,    body,  NULL, NULL,
                              &gated, sizeof gated, accesses, count, bytes};
    assert_int_equal(convoy__scheduler_submit(s, &desc, NULL), CONVOY_OK);
}

/* ---- reading the file -------------------------------------------------------- */

/* The "ts" of the slice whose line starts with prefix, or -1. */
static double slice_ts(const char *text, const char *prefix)
{
    const char *line = strstr(text, prefix);
    if (!line)
        return -1.0;
    const char *ts = strstr(line, "\"ts\":");
    return ts ? strtod(ts + 5, NULL) : -1.0;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static int setup(void **state)
{
    return temp_dir_setup(state, "convoy_profile_", "trace.json");
}

/* ---- a controlled schedule ------------------------------------------------------ */

/* Device times, microseconds after base (submission order):
 *
 *   upload x    [  0, 100]  upload stream
 *   upload w    [100, 150]  upload stream
 *   custom a    [100, 400]  reads x, writes y          compute 0
 *   custom b    [150, 250]  reads w, writes z          compute 1
 *   custom c    [400, 500]  reads y and z, writes y2   compute 1 (after b)
 *   download y2 [500, 600]  download stream
 *
 * a and b wait for a gate opened after every submit, so both are in flight
 * when the next is placed and the streams are as shown. The run spans 600
 * us; compute covers [100, 500], which hides 50 of the 250 us of transfers;
 * the longest chain is x, a, c, download: 600 us. */
static void test_controlled_schedule(void **state)
{
    temp_dir *f = *state;
    const script_entry script[6] = {{0, 100, 0},   {100, 150, 0}, {100, 400, 0},
                                    {150, 250, 0}, {400, 500, 0}, {500, 600, 0}};
    /* In the future, so no device time can be mistaken for a host one. */
    double base = convoy__now_us() + 10e6;
    convoy__backend *be = mock_backend(base, script, 6, 0);
    convoy__trace *trace = NULL;
    assert_int_equal(convoy__trace_create(base, &trace), CONVOY_OK);
    assert_int_equal(convoy__trace_open(trace, f->path), CONVOY_OK);
    convoy__scheduler_config config = {2, NULL, trace};
    convoy__scheduler *s = NULL;
    assert_int_equal(convoy__scheduler_create(be, &config, &s), CONVOY_OK);

    convoy__hazards x = {0}, w = {0}, y = {0}, z = {0}, y2 = {0};
    gate_set(0);
    convoy__hazard_access up_x[1] = {{&x, CONVOY_WRITE}}, up_w[1] = {{&w, CONVOY_WRITE}};
    convoy__hazard_access a[2] = {{&x, CONVOY_READ}, {&y, CONVOY_WRITE}};
    convoy__hazard_access b[2] = {{&w, CONVOY_READ}, {&z, CONVOY_WRITE}};
    convoy__hazard_access c[3] = {{&y, CONVOY_READ}, {&z, CONVOY_READ}, {&y2, CONVOY_WRITE}};
    convoy__hazard_access down[1] = {{&y2, CONVOY_READ}};
    submit(s, CONVOY__TASK_UPLOAD, "upload x", 0, up_x, 1, 4000);
    submit(s, CONVOY__TASK_UPLOAD, "upload w", 0, up_w, 1, 1000);
    submit(s, CONVOY__TASK_CUSTOM, "custom a", 1, a, 2, 0);
    submit(s, CONVOY__TASK_CUSTOM, "custom b", 1, b, 2, 0);
    submit(s, CONVOY__TASK_CUSTOM, "custom c", 0, c, 3, 0);
    submit(s, CONVOY__TASK_DOWNLOAD, "download y2", 0, down, 1, 2000);
    gate_set(1);
    assert_int_equal(convoy__scheduler_synchronize(s), CONVOY_OK);
    convoy__hazards *records[] = {&x, &w, &y, &z, &y2};
    for (int i = 0; i < 5; ++i)
        convoy__hazards_clear(s, records[i]);
    convoy__scheduler_destroy(s);
    assert_int_equal(convoy__trace_close(trace), CONVOY_OK);
    assert_int_equal(mock.early_reads, 0);

    char summary[4096];
    convoy__trace_summary(trace, summary, sizeof summary);
    print_message("%s", summary);
    const char *expected[] = {
        "\ncustom          3        0.500      166.667      300.000\n",
        "\nupload          2        0.150       75.000      100.000\n",
        "\ndownload        1        0.100      100.000      100.000\n",
        "\nconvoy compute 0        1        0.300    50.0%\n",
        "\nconvoy compute 1        2        0.200    33.3%\n",
        "\nconvoy upload           2        0.150    25.0%\n",
        "\nconvoy download         1        0.100    16.7%\n",
        "\nrun 0.600 ms from the first start to the last end\n",
        "\ntransfers 0.250 ms in 3 tasks, 20.0% hidden behind compute\n",
        "\ncritical path 0.600 ms (100.0% of the run), 4 tasks from 'upload x' to 'download "
        "y2': custom 0.400 ms, upload 0.100 ms, download 0.100 ms\n",
    };
    for (size_t i = 0; i < sizeof expected / sizeof *expected; ++i) {
        if (!strstr(summary, expected[i]))
            fail_msg("the summary lacks %s", expected[i] + 1);
    }

    char *text = temp_read_file(f->path, NULL);
    assert_non_null(text);
    /* The device times, relative to the origin (base). */
    assert_true(slice_ts(text, "{\"name\":\"upload x\"") == 0.0);
    assert_true(slice_ts(text, "{\"name\":\"custom a\"") == 100.0);
    assert_true(slice_ts(text, "{\"name\":\"custom c\"") == 400.0);
    assert_true(slice_ts(text, "{\"name\":\"download y2\"") == 500.0);
    assert_non_null(strstr(text, "\"name\":\"custom c\",\"cat\":\"custom\",\"ph\":\"X\",\"pid\":1,"
                                 "\"tid\":2,\"ts\":400.000,\"dur\":100.000"));
    /* 4000 bytes in 100 us: 0.04 GB/s. */
    assert_non_null(strstr(text, "\"bytes\":4000,\"GB/s\":0.040}"));
    /* a to c and b to c (c waited for both), c to the download; each arrow
     * leaves its producer just before it ends and enters c just after it
     * starts. */
    assert_true(count(text, "\"ph\":\"s\"") >= 3);
    assert_int_equal(count(text, "\"ph\":\"s\""), count(text, "\"ph\":\"f\""));
    assert_non_null(strstr(text, "\"ph\":\"s\",\"id\":"));
    assert_non_null(strstr(text, "\"tid\":1,\"ts\":399.999}"));
    assert_non_null(strstr(text, "\"tid\":2,\"ts\":249.999}"));
    assert_non_null(strstr(text, "\"tid\":2,\"ts\":400.001}"));
    /* No enqueue track where the host runs the work. */
    assert_null(strstr(text, "enqueue"));
    free(text);
    convoy__trace_destroy(trace);
    be->ops->destroy(be);
}

/* ---- work that runs at enqueue ------------------------------------------------ */

/* As on CUDA: each task's slice is its device interval, its enqueue is a
 * slice of its own on the host enqueue track with an arrow to it, and a
 * task whose timer fails shows its host interval instead. */
static void test_enqueue_track(void **state)
{
    temp_dir *f = *state;
    const script_entry script[3] = {{0, 50, 0}, {60, 100, 0}, {0, 0, 1}};
    double origin = convoy__now_us();
    convoy__backend *be = mock_backend(origin + 1e6, script, 3, 1);
    convoy__trace *trace = NULL;
    assert_int_equal(convoy__trace_create(origin, &trace), CONVOY_OK);
    assert_int_equal(convoy__trace_open(trace, f->path), CONVOY_OK);
    convoy__scheduler_config config = {2, NULL, trace};
    convoy__scheduler *s = NULL;
    assert_int_equal(convoy__scheduler_create(be, &config, &s), CONVOY_OK);
    convoy__hazards y = {0}, z = {0};
    convoy__hazard_access first[1] = {{&y, CONVOY_WRITE}};
    convoy__hazard_access second[2] = {{&y, CONVOY_READ}, {&z, CONVOY_WRITE}};
    submit(s, CONVOY__TASK_CUSTOM, "custom first", 0, first, 1, 0);
    submit(s, CONVOY__TASK_CUSTOM, "custom second", 0, second, 2, 0);
    submit(s, CONVOY__TASK_CUSTOM, "custom no timer", 0, NULL, 0, 0);
    assert_int_equal(convoy__scheduler_synchronize(s), CONVOY_OK);
    convoy__hazards_clear(s, &y);
    convoy__hazards_clear(s, &z);
    convoy__scheduler_destroy(s);
    assert_int_equal(convoy__trace_close(trace), CONVOY_OK);
    assert_int_equal(mock.early_reads, 0);

    char *text = temp_read_file(f->path, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"args\":{\"name\":\"convoy enqueue (host)\"}"));
    assert_int_equal(count(text, "\"cat\":\"enqueue\""), 3);
    assert_int_equal(count(text, "\"name\":\"launch\",\"cat\":\"launch\",\"ph\":\"s\""), 3);
    assert_int_equal(count(text, "\"name\":\"launch\",\"cat\":\"launch\",\"ph\":\"f\""), 3);
    assert_int_equal(count(text, "\"enqueue_us\":"), 3);
    assert_true(slice_ts(text, "{\"name\":\"custom first\",\"cat\":\"custom\"") == 1e6);
    assert_true(slice_ts(text, "{\"name\":\"custom second\",\"cat\":\"custom\"") == 1e6 + 60.0);
    double fallback = slice_ts(text, "{\"name\":\"custom no timer\",\"cat\":\"custom\"");
    assert_true(fallback >= 0.0 && fallback < 1e6);
    free(text);
    convoy__trace_destroy(trace);
    be->ops->destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_controlled_schedule, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_track, setup, temp_dir_teardown),
    };
    return cmocka_run_group_tests(tests, setup_nvtx, NULL);
}
