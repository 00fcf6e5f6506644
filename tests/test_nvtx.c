/* NVTX, proven: tests/nvtx_recorder.c is injected through NVTX3's own
 * mechanism (NVTX_INJECTION64_PATH, set by CTest) and records every NVTX call
 * to a file; a small training pipeline runs on two host streams (or on
 * CUDA), and the file must show the "convoy" domain, one range per task
 * named by kind, shapes and algorithm, pushes and pops balanced on every
 * thread, every thread that ran a task named, and on CUDA every stream
 * named. Usage: test_nvtx device=cpu|cuda (cuda exits 77 without a GPU). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convoy.h"
#include "pipeline_case.h"

#define LINES_MAX 4096
#define THREADS_MAX 64

static convoy_device device = CONVOY_DEVICE_CPU;
static char record_path[256];

typedef struct line {
    char what[16];
    long id;         /* thread id (push, pop, thread) */
    char domain[64]; /* push, pop */
    char text[160];  /* message (push), name (domain, thread, stream) */
} line;

typedef struct record_log {
    line lines[LINES_MAX];
    int count;
} record_log;

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* The lines written since offset. */
static void read_log(long offset, record_log *log)
{
    FILE *fp = fopen(record_path, "r");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, offset, SEEK_SET), 0);
    char text[512];
    log->count = 0;
    while (fgets(text, sizeof text, fp) && log->count < LINES_MAX) {
        text[strcspn(text, "\n")] = '\0';
        line *l = &log->lines[log->count++];
        memset(l, 0, sizeof *l);
        int used = 0;
        if (sscanf(text, "%15s %n", l->what, &used) != 1)
            continue;
        const char *rest = text + used;
        if (!strcmp(l->what, "push") || !strcmp(l->what, "pop")) {
            int more = 0;
            assert_true(sscanf(rest, "%ld %63s %n", &l->id, l->domain, &more) >= 2);
            snprintf(l->text, sizeof l->text, "%s", more ? rest + more : "");
        } else if (!strcmp(l->what, "thread")) {
            int more = 0;
            assert_int_equal(sscanf(rest, "%ld %n", &l->id, &more), 1);
            snprintf(l->text, sizeof l->text, "%s", rest + more);
        } else if (!strcmp(l->what, "stream")) {
            const char *space = strchr(rest, ' ');
            snprintf(l->text, sizeof l->text, "%s", space ? space + 1 : "");
        } else {
            snprintf(l->text, sizeof l->text, "%s", rest);
        }
    }
    fclose(fp);
}

static int has_line(const record_log *log, const char *what, const char *text)
{
    for (int i = 0; i < log->count; ++i) {
        if (!strcmp(log->lines[i].what, what) && !strcmp(log->lines[i].text, text))
            return 1;
    }
    return 0;
}

static const char *thread_name(const record_log *log, long id)
{
    const char *name = NULL; /* the last name given wins */
    for (int i = 0; i < log->count; ++i) {
        if (!strcmp(log->lines[i].what, "thread") && log->lines[i].id == id)
            name = log->lines[i].text;
    }
    return name;
}

static convoy_runtime *make_runtime(int streams)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = device;
    o.streams = streams;
    convoy_runtime *rt = NULL;
    convoy_status status = convoy_runtime_create(&o, &rt);
    assert_int_equal(status, CONVOY_OK);
    return rt;
}

static void test_pipeline_ranges(void **state)
{
    (void)state;
    long offset = file_size(record_path);
    convoy_runtime *rt = make_runtime(device == CONVOY_DEVICE_CPU ? 2 : 4);
    pipeline_run run;
    assert_int_equal(pipeline_run_steps(rt, 2, &run), CONVOY_OK);
    convoy_runtime_destroy(rt); /* joins the workers: every pop is written */

    static record_log log;
    read_log(offset, &log);
    assert_true(has_line(&log, "domain", "convoy"));

    /* One range per task, named as the task: the multiset of messages in the
     * convoy domain equals the multiset of labels. */
    int matched[PIPELINE_TASKS_PER_STEP * PIPELINE_STEPS_MAX] = {0};
    int ranges = 0;
    for (int i = 0; i < log.count; ++i) {
        const line *l = &log.lines[i];
        if (strcmp(l->what, "push") != 0)
            continue;
        assert_string_equal(l->domain, "convoy"); /* nothing outside the domain */
        ranges++;
        int found = 0;
        for (int t = 0; t < run.task_count && !found; ++t) {
            if (!matched[t] && !strcmp(run.labels[t], l->text))
                matched[t] = found = 1;
        }
        if (!found)
            fail_msg("a range nobody expected: '%s'", l->text);
    }
    assert_int_equal(ranges, run.task_count);

    /* Balanced on every thread: depth never below 0, 0 at the end; and every
     * thread that opened a range is named. */
    long ids[THREADS_MAX];
    int depth[THREADS_MAX], threads = 0;
    for (int i = 0; i < log.count; ++i) {
        const line *l = &log.lines[i];
        int push = !strcmp(l->what, "push");
        if (!push && strcmp(l->what, "pop") != 0)
            continue;
        assert_string_equal(l->domain, "convoy");
        int t = 0;
        while (t < threads && ids[t] != l->id)
            t++;
        if (t == threads) {
            assert_true(threads < THREADS_MAX);
            ids[threads] = l->id;
            depth[threads++] = 0;
        }
        depth[t] += push ? 1 : -1;
        assert_true(depth[t] >= 0);
    }
    for (int t = 0; t < threads; ++t) {
        assert_int_equal(depth[t], 0);
        const char *name = thread_name(&log, ids[t]);
        if (device == CONVOY_DEVICE_CPU) {
            /* Host streams run their tasks on their own, named, threads. */
            assert_non_null(name);
            assert_true(strncmp(name, "convoy ", 7) == 0);
        }
    }
    if (device == CONVOY_DEVICE_CPU) {
        assert_true(threads >= 3); /* the upload, download and compute workers */
        const char *workers[] = {"convoy compute 0",      "convoy compute 1",
                                 "convoy upload",         "convoy download",
                                 "convoy upload staging", "convoy download staging"};
        for (size_t i = 0; i < sizeof workers / sizeof *workers; ++i) {
            if (!has_line(&log, "thread", workers[i]))
                fail_msg("no thread named '%s'", workers[i]);
        }
    } else {
        const char *streams[] = {"convoy compute 0", "convoy compute 1", "convoy compute 2",
                                 "convoy compute 3", "convoy upload",    "convoy download"};
        for (size_t i = 0; i < sizeof streams / sizeof *streams; ++i) {
            if (!has_line(&log, "stream", streams[i]))
                fail_msg("no CUDA stream named '%s'", streams[i]);
        }
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "device=cuda"))
            device = CONVOY_DEVICE_CUDA;
        else if (strcmp(argv[i], "device=cpu") != 0) {
            fprintf(stderr, "usage: test_nvtx device=cpu|cuda\n");
            return 2;
        }
    }
    /* The recorder reads this when NVTX first loads it, at the first NVTX
     * call: the first runtime's domain. */
    const char *tmp = getenv("TMPDIR");
    snprintf(record_path, sizeof record_path, "%s/convoy_nvtx_%ld.txt", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    unlink(record_path);
    setenv("CONVOY_NVTX_RECORD", record_path, 1);
    if (device == CONVOY_DEVICE_CUDA) {
        convoy_options o;
        convoy_runtime *probe = NULL;
        if (convoy_options_init(&o) != CONVOY_OK)
            return 1;
        o.device = CONVOY_DEVICE_CUDA;
        convoy_status status = convoy_runtime_create(&o, &probe);
        convoy_runtime_destroy(probe);
        if (status == CONVOY_ERR_NO_DEVICE) {
            printf("test_nvtx: skipped, no usable CUDA device (%s)\n", convoy_last_error_message());
            return 77;
        }
    }
    if (!getenv("NVTX_INJECTION64_PATH")) {
        fprintf(stderr, "test_nvtx: NVTX_INJECTION64_PATH must name the recorder library\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline_ranges),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed == 0)
        unlink(record_path);
    return failed;
}
