/* The Chrome trace and the summary (profiling/trace.c, summary.c): events
 * from several threads and tracks streamed as valid JSON (checked by a small
 * strict parser here and by Python's json module when python3 exists), with
 * escaping, track metadata, the summary's numbers and its truncation; flow
 * arrows that pair up inside their slices, and counters; the transfer
 * overlap against a brute force while the trace drops what it settled; a
 * long run whose records reach the disk as they come while the trace's
 * memory stays put; and a trace path that is not a regular file (a FIFO,
 * /dev/null, a symbolic link), which is left alone without blocking,
 * directly and through CONVOY_TRACE. And a training step through the
 * runtime on two host streams (CONVOY_TRACE and CONVOY_PROFILE): a slice per
 * task named as the task, arrows between streams, the pool counter, every
 * summary line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convoy.h"
#include "profiling/trace.h"
#include "pipeline_case.h"
#include "temp_files.h"

#define THREADS 4
#define EVENTS_PER_THREAD 2500

static int setup(void **state)
{
    return temp_dir_setup(state, "convoy_trace_", "trace.json");
}

/* ---- a strict JSON syntax checker (RFC 8259, ASCII escapes, UTF-8) ---- */

typedef struct cursor {
    const unsigned char *p;
    int depth;
} cursor;

static int check_value(cursor *c);

static void spaces(cursor *c)
{
    while (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')
        c->p++;
}

static int check_utf8(cursor *c)
{
    unsigned char b = *c->p;
    int extra = b >= 0xf0 && b <= 0xf4 ? 3 : b >= 0xe0 ? 2 : b >= 0xc2 && b < 0xe0 ? 1 : -1;
    if (b >= 0xf5 || extra < 0)
        return 0;
    c->p++;
    for (int i = 0; i < extra; ++i, c->p++) {
        if ((*c->p & 0xc0) != 0x80)
            return 0;
    }
    return 1;
}

static int check_string(cursor *c)
{
    if (*c->p++ != '"')
        return 0;
    while (*c->p != '"') {
        if (*c->p < 0x20)
            return 0; /* raw control characters (and the end of text) */
        if (*c->p == '\\') {
            c->p++;
            if (*c->p == 'u') {
                for (int i = 1; i <= 4; ++i) {
                    if (!c->p[i] || !strchr("0123456789abcdefABCDEF", c->p[i]))
                        return 0;
                }
                c->p += 5;
            } else if (*c->p && strchr("\"\\/bfnrt", *c->p)) {
                c->p++;
            } else {
                return 0;
            }
        } else if (*c->p >= 0x80) {
            if (!check_utf8(c))
                return 0;
        } else {
            c->p++;
        }
    }
    c->p++;
    return 1;
}

static int check_number(cursor *c)
{
    const unsigned char *start = c->p;
    if (*c->p == '-')
        c->p++;
    if (*c->p == '0') {
        c->p++;
    } else if (*c->p >= '1' && *c->p <= '9') {
        while (*c->p >= '0' && *c->p <= '9')
            c->p++;
    } else {
        return 0;
    }
    if (*c->p == '.') {
        c->p++;
        if (*c->p < '0' || *c->p > '9')
            return 0;
        while (*c->p >= '0' && *c->p <= '9')
            c->p++;
    }
    if (*c->p == 'e' || *c->p == 'E') {
        c->p++;
        if (*c->p == '+' || *c->p == '-')
            c->p++;
        if (*c->p < '0' || *c->p > '9')
            return 0;
        while (*c->p >= '0' && *c->p <= '9')
            c->p++;
    }
    return c->p > start;
}

static int check_container(cursor *c, char close)
{
    if (++c->depth > 64)
        return 0;
    c->p++;
    spaces(c);
    if (*c->p == close) {
        c->p++;
        c->depth--;
        return 1;
    }
    for (;;) {
        spaces(c);
        if (close == '}') {
            if (!check_string(c))
                return 0;
            spaces(c);
            if (*c->p++ != ':')
                return 0;
        }
        if (!check_value(c))
            return 0;
        spaces(c);
        if (*c->p == close) {
            c->p++;
            c->depth--;
            return 1;
        }
        if (*c->p++ != ',')
            return 0;
    }
}

static int check_value(cursor *c)
{
    spaces(c);
    switch (*c->p) {
    case '{':
        return check_container(c, '}');
    case '[':
        return check_container(c, ']');
    case '"':
        return check_string(c);
    case 't':
        return strncmp((const char *)c->p, "true", 4) == 0 && (c->p += 4);
    case 'f':
        return strncmp((const char *)c->p, "false", 5) == 0 && (c->p += 5);
    case 'n':
        return strncmp((const char *)c->p, "null", 4) == 0 && (c->p += 4);
    default:
        return check_number(c);
    }
}

static int json_valid(const char *text)
{
    cursor c = {(const unsigned char *)text, 0};
    if (!check_value(&c))
        return 0;
    spaces(&c);
    return *c.p == '\0';
}

static void test_checker_itself(void **state)
{
    (void)state;
    assert_true(json_valid("{\"a\":[1,-2.5e3,true,false,null,\"x\\u00e9\\n\"],\"b\":{}}"));
    assert_true(json_valid(" [ ] "));
    assert_false(json_valid("{\"a\":1,}"));
    assert_false(json_valid("{\"a\" 1}"));
    assert_false(json_valid("[1 2]"));
    assert_false(json_valid("\"tab\tinside\""));
    assert_false(json_valid("\"bad \\x escape\""));
    assert_false(json_valid("\"\xff\""));
    assert_false(json_valid("[01]"));
    assert_false(json_valid("[1.]"));
    assert_false(json_valid("{} {}"));
}

/* ---- helpers ---------------------------------------------------------- */

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Python's parser as a second opinion; 0 when python3 is not installed. */
static int python_accepts(const char *path, int *available)
{
    *available = system("python3 -c 'import json' >/dev/null 2>&1") == 0;
    if (!*available)
        return 0;
    char command[600];
    snprintf(command, sizeof command,
             "python3 -c \"import json,sys; json.load(open(sys.argv[1], encoding='utf-8'))\" "
             "'%s'",
             path);
    return system(command) == 0;
}

/* Entries of dir other than . and .. */
static int entries_in(const char *dir)
{
    int count = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return count;
}

/* ---- tests ------------------------------------------------------------ */

static void test_null_and_empty(void **state)
{
    temp_dir *f = *state;
    assert_int_equal(convoy__trace_create(0.0, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    convoy__trace_destroy(NULL);
    assert_int_equal(convoy__trace_track(NULL, "x"), 0);
    convoy__trace_add(NULL, 1, "k", "n", 0.0, 1.0, NULL);
    convoy__trace_task_done(NULL, NULL);
    convoy__trace_counter(NULL, "c", 0.0, 0, NULL, NULL);
    convoy__trace_sample(NULL, 0.0);
    convoy__trace_settle(NULL, 0.0);
    assert_int_equal(convoy__trace_open(NULL, f->path), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__trace_close(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    char buffer[64] = "unchanged";
    convoy__trace_summary(NULL, buffer, sizeof buffer);
    assert_string_equal(buffer, "");

    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    assert_int_equal(convoy__trace_track(t, NULL), 0);
    convoy__trace_task_done(t, NULL);
    assert_int_equal(convoy__trace_open(t, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__trace_open(t, ""), CONVOY_ERR_INVALID_ARGUMENT);
    /* Nothing open: closing is nothing to do. */
    assert_int_equal(convoy__trace_close(t), CONVOY_OK);
    convoy__trace_summary(t, buffer, sizeof buffer);
    assert_string_equal(buffer, "no tasks recorded\n");
    convoy__trace_summary(t, NULL, 10);
    convoy__trace_summary(t, buffer, 0);

    /* An empty trace is still a valid file with the process name; one file
     * at a time. */
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_OK);
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "open already"));
    assert_int_equal(entries_in(f->dir), 1); /* the temp file, not yet the path */
    assert_int_equal(convoy__trace_close(t), CONVOY_OK);
    char *text = temp_read_file(f->path, NULL);
    assert_non_null(text);
    assert_true(json_valid(text));
    assert_int_equal(count(text, "\"ph\":\"X\""), 0);
    assert_non_null(strstr(text, "\"traceEvents\""));
    assert_non_null(strstr(text, "process_name"));
    free(text);
    convoy__trace_destroy(t);
}

typedef struct worker {
    convoy__trace *trace;
    int index;
    int own_track;
} worker;

static const char *const kinds[] = {"conv_fwd", "conv_bwd_data", "upload", "custom"};
static const char weird_name[] = "weird \"quoted\" back\\slash \"ph\":\"X\" \x01 tab\t nl\n "
                                 "bad utf8 \xff\xc3 ok \xc3\xa9";

static void *add_events(void *arg)
{
    worker *w = arg;
    char name[96];
    w->own_track = convoy__trace_track(w->trace, w->index % 2 ? "stream 1" : "stream 0");
    int shared = convoy__trace_track(w->trace, "upload stream");
    for (int i = 0; i < EVENTS_PER_THREAD; ++i) {
        const char *kind = kinds[i % 4];
        snprintf(name, sizeof name, "%s thread %d #%d", kind, w->index, i);
        double start = 1000.0 * w->index + i;
        const char *args = NULL;
        if (i % 3 == 1)
            args = "{\"impl\":\"gemm\",\"status\":\"CONVOY_OK\",\"n\":[1,2.5]}";
        else if (i % 3 == 2)
            args = "{not json";
        convoy__trace_add(w->trace, i % 4 == 2 ? shared : w->own_track, kind,
                          i == 7 ? weird_name : name, start, start + 0.5 + (i % 10), args);
    }
    return NULL;
}

static void test_write_from_threads(void **state)
{
    temp_dir *f = *state;
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_OK);
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int i = 0; i < THREADS; ++i) {
        workers[i] = (worker){t, i, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, add_events, &workers[i]), 0);
    }
    for (int i = 0; i < THREADS; ++i)
        pthread_join(threads[i], NULL);
    /* Same name, same id, whichever thread asked first. */
    assert_int_equal(workers[0].own_track, workers[2].own_track);
    assert_int_equal(workers[1].own_track, workers[3].own_track);
    assert_int_not_equal(workers[0].own_track, workers[1].own_track);
    assert_int_equal(convoy__trace_track(t, "stream 0"), workers[0].own_track);
    assert_true(workers[0].own_track >= 1);
    /* An id nobody handed out still lands in the file. */
    convoy__trace_add(t, 99, NULL, NULL, 5.0, 6.0, NULL);

    assert_int_equal(convoy__trace_close(t), CONVOY_OK);
    char *text = temp_read_file(f->path, NULL);
    assert_non_null(text);
    assert_true(json_valid(text));
    int available = 0;
    int accepted = python_accepts(f->path, &available);
    if (available)
        assert_true(accepted);
    else
        print_message("python3 not found: skipping the second JSON check\n");

    assert_int_equal(count(text, "\"ph\":\"X\""), THREADS * EVENTS_PER_THREAD + 1);
    /* One thread_name per track, plus "untracked" for the stray id. */
    assert_int_equal(count(text, "\"thread_name\""), 4);
    assert_non_null(strstr(text, "\"name\":\"stream 0\""));
    assert_non_null(strstr(text, "\"name\":\"stream 1\""));
    assert_non_null(strstr(text, "\"name\":\"upload stream\""));
    assert_non_null(strstr(text, "\"name\":\"untracked\""));
    assert_int_equal(count(text, "\"thread_sort_index\""), 3);
    /* The weird name, escaped, from each of the four threads. */
    assert_int_equal(count(text, "\"weird \\\"quoted\\\" back\\\\slash \\\"ph\\\":\\\"X\\\" "
                                 "\\u0001 tab\\t nl\\n bad utf8 \\ufffd\\ufffd ok \xc3\xa9\""),
                     THREADS);
    /* Valid args are embedded, invalid ones wrapped as a string. */
    assert_non_null(strstr(text, "\"args\":{\"impl\":\"gemm\",\"status\":\"CONVOY_OK\""));
    assert_non_null(strstr(text, "\"args\":{\"args\":\"{not json\"}"));
    assert_non_null(strstr(text, "\"cat\":\"conv_bwd_data\""));
    /* Times are relative to the trace's origin and carry three decimals. */
    assert_non_null(strstr(text, "\"ts\":0.000,\"dur\":0.500"));
    char expected[200];
    snprintf(expected, sizeof expected,
             "\"name\":\"upload thread 3 #2\",\"cat\":\"upload\",\"ph\":\"X\",\"pid\":1,"
             "\"tid\":%d,\"ts\":3002.000,\"dur\":2.500",
             convoy__trace_track(t, "upload stream"));
    assert_non_null(strstr(text, expected));
    free(text);

    char summary[1024];
    convoy__trace_summary(t, summary, sizeof summary);
    assert_non_null(strstr(summary, "conv_fwd"));
    assert_non_null(strstr(summary, "(all)"));
    convoy__trace_destroy(t);
}

/* Parses the summary row of one kind. */
static int summary_row(const char *summary, const char *kind, int *n, double *total_ms,
                       double *mean_us, double *max_us)
{
    const char *line = summary;
    while (*line) {
        char name[64];
        if (sscanf(line, "%63s %d %lf %lf %lf", name, n, total_ms, mean_us, max_us) == 5 &&
            strcmp(name, kind) == 0)
            return 1;
        const char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    return 0;
}

static void test_summary_numbers(void **state)
{
    (void)state;
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    int track = convoy__trace_track(t, "stream 0");
    convoy__trace_add(t, track, "conv_fwd", "a", 0.0, 1000.0, NULL);
    convoy__trace_add(t, track, "conv_fwd", "b", 5000.0, 7000.0, NULL);
    convoy__trace_add(t, track, "conv_fwd", "c", 10000.0, 13000.0, NULL);
    convoy__trace_add(t, track, "upload", "u", 0.0, 500.0, NULL);
    convoy__trace_add(t, track, "upload", "v", 100.0, 600.0, NULL);
    convoy__trace_add(t, track, "download_with_a_long_kind_name", "d", 0.0, 250.0, NULL);
    convoy__trace_add(t, track, "custom", "backwards clock", 10.0, 5.0, NULL);

    char summary[1024];
    convoy__trace_summary(t, summary, sizeof summary);
    int n;
    double total, mean, max;
    assert_true(summary_row(summary, "conv_fwd", &n, &total, &mean, &max));
    assert_int_equal(n, 3);
    assert_true(total == 6.0 && mean == 2000.0 && max == 3000.0);
    assert_true(summary_row(summary, "upload", &n, &total, &mean, &max));
    assert_int_equal(n, 2);
    assert_true(total == 1.0 && mean == 500.0 && max == 500.0);
    assert_true(summary_row(summary, "download_with_a_long_kind_name", &n, &total, &mean, &max));
    assert_true(n == 1 && total == 0.25 && max == 250.0);
    assert_true(summary_row(summary, "custom", &n, &total, &mean, &max));
    assert_true(n == 1 && total == 0.0 && max == 0.0);
    assert_true(summary_row(summary, "(all)", &n, &total, &mean, &max));
    assert_true(n == 7 && total == 7.25 && max == 3000.0);

    /* Header first, then kinds by total time, aligned in one column width:
     * the header, four kinds and "(all)". */
    assert_true(strncmp(summary, "kind ", 5) == 0);
    const char *fwd = strstr(summary, "\nconv_fwd");
    const char *upload = strstr(summary, "\nupload");
    const char *custom = strstr(summary, "\ncustom");
    assert_true(fwd && upload && custom && fwd < upload && upload < custom);
    size_t first_line = (size_t)(strchr(summary, '\n') - summary);
    const char *line = summary;
    for (int i = 0; i < 6; ++i, line = strchr(line, '\n') + 1)
        assert_int_equal((size_t)(strchr(line, '\n') - line), first_line);
    /* Then the streams, the run's span (0 to 13000 us), and nothing about
     * transfers or paths: these records carry neither. */
    assert_true(strncmp(line, "stream ", 7) == 0);
    const char *stream = strstr(summary, "\nstream 0 ");
    assert_non_null(stream);
    double busy_ms, busy_percent;
    assert_int_equal(sscanf(stream + 10, "%d %lf %lf%%", &n, &busy_ms, &busy_percent), 3);
    assert_true(n == 7 && busy_ms == 7.25 && busy_percent == 55.8);
    assert_non_null(strstr(summary, "\nrun 13.000 ms from the first start to the last end\n"));
    assert_null(strstr(summary, "transfers"));
    assert_null(strstr(summary, "critical path"));

    /* Any buffer size: terminated, within bounds, whole lines only. */
    size_t full = strlen(summary);
    for (size_t size = 1; size <= full + 1; ++size) {
        char *small = malloc(size + 8);
        assert_non_null(small);
        memset(small, '#', size + 8);
        convoy__trace_summary(t, small, size);
        size_t len = strlen(small);
        assert_true(len < size);
        assert_memory_equal(small, summary, len);
        assert_true(len == 0 || small[len - 1] == '\n');
        for (size_t i = size; i < size + 8; ++i)
            assert_int_equal(small[i], '#');
        if (size == full + 1)
            assert_string_equal(small, summary);
        free(small);
    }

    /* A single kind has no "(all)" row. */
    convoy__trace *one = NULL;
    assert_int_equal(convoy__trace_create(0.0, &one), CONVOY_OK);
    convoy__trace_add(one, 0, "conv_fwd", NULL, 0.0, 2.0, NULL);
    convoy__trace_summary(one, summary, sizeof summary);
    assert_null(strstr(summary, "(all)"));
    assert_true(summary_row(summary, "conv_fwd", &n, &total, &mean, &max));
    assert_true(n == 1 && total == 0.002 && max == 2.0);
    convoy__trace_destroy(one);
    convoy__trace_destroy(t);
}

static void test_unwritable_path(void **state)
{
    temp_dir *f = *state;
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    convoy__trace_add(t, convoy__trace_track(t, "s"), "conv_fwd", "x", 0.0, 1.0, NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/no/such/dir/trace.json", f->dir);
    assert_int_equal(convoy__trace_open(t, path), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), path));
    assert_non_null(strstr(convoy_last_error_message(), "trace_open"));
    /* A directory is not a file either. */
    assert_int_equal(convoy__trace_open(t, f->dir), CONVOY_ERR_INVALID_ARGUMENT);
    /* Neither left anything behind. */
    assert_int_equal(entries_in(f->dir), 0);
    convoy__trace_destroy(t);
}

/* ---- paths that are not regular files ------------------------------------- */

/* Opening a FIFO for writing blocks until a reader comes: a test that would
 * hang fails instead. */
static void on_alarm(int signal_number)
{
    static const char text[] = "test_trace: timed out: an operation on a FIFO blocked\n";
    (void)signal_number;
    (void)!write(2, text, sizeof text - 1);
    _exit(1);
}

static void watchdog(unsigned seconds)
{
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

static convoy__trace *one_event_trace(void)
{
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    convoy__trace_add(t, convoy__trace_track(t, "s"), "conv_fwd", "x", 0.0, 1.0, NULL);
    return t;
}

/* Writes one event to path: open, add, close. */
static convoy_status write_one_event(convoy__trace *t, const char *path)
{
    convoy_status status = convoy__trace_open(t, path);
    if (status != CONVOY_OK)
        return status;
    convoy__trace_add(t, convoy__trace_track(t, "s"), "conv_fwd", "x", 0.0, 1.0, NULL);
    return convoy__trace_close(t);
}

static void test_fifo_left_alone(void **state)
{
    temp_dir *f = *state;
    assert_int_equal(mkfifo(f->path, 0644), 0);
    convoy__trace *t = one_event_trace();
    watchdog(20);
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_ERR_INVALID_ARGUMENT);
    alarm(0);
    assert_non_null(strstr(convoy_last_error_message(), f->path));
    assert_non_null(strstr(convoy_last_error_message(), "a FIFO"));
    struct stat st;
    assert_int_equal(lstat(f->path, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_int_equal(entries_in(f->dir), 1);
    convoy__trace_destroy(t);
}

static void test_device_and_symlink_left_alone(void **state)
{
    temp_dir *f = *state;
    convoy__trace *t = one_event_trace();
    struct stat before, after;
    assert_int_equal(lstat("/dev/null", &before), 0);
    assert_int_equal(convoy__trace_open(t, "/dev/null"), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "a character device"));
    assert_int_equal(lstat("/dev/null", &after), 0);
    assert_true(S_ISCHR(after.st_mode));
    assert_true(after.st_rdev == before.st_rdev && after.st_ino == before.st_ino);

    /* A link is not followed, nor replaced. */
    char target[400];
    snprintf(target, sizeof target, "%s/target.json", f->dir);
    FILE *fp = fopen(target, "w");
    assert_non_null(fp);
    fputs("old", fp);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(symlink(target, f->path), 0);
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), "a symbolic link"));
    assert_int_equal(lstat(f->path, &after), 0);
    assert_true(S_ISLNK(after.st_mode));
    char *text = temp_read_file(target, NULL);
    assert_string_equal(text, "old");
    free(text);
    assert_int_equal(entries_in(f->dir), 2);
    unlink(target);

    /* A regular file is replaced whole. */
    unlink(f->path);
    fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs("old", fp);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(write_one_event(t, f->path), CONVOY_OK);
    text = temp_read_file(f->path, NULL);
    assert_true(json_valid(text));
    free(text);
    assert_int_equal(entries_in(f->dir), 1);
    convoy__trace_destroy(t);
}

typedef struct warnings {
    pthread_mutex_t lock;
    int count;
    char last[1024];
} warnings;

static void keep_warning(void *user_data, convoy_log_level level, const char *message)
{
    warnings *w = user_data;
    if (level > CONVOY_LOG_WARNING)
        return;
    pthread_mutex_lock(&w->lock);
    w->count++;
    snprintf(w->last, sizeof w->last, "%s", message);
    pthread_mutex_unlock(&w->lock);
}

static convoy_status nothing_fn(const convoy_task_context *ctx, void *user_data)
{
    return CONVOY_OK;
}

/* CONVOY_TRACE naming a FIFO: the runtime still runs and is destroyed
 * promptly; the trace is not written and a warning says why. */
static void test_runtime_trace_to_fifo(void **state)
{
    temp_dir *f = *state;
    assert_int_equal(mkfifo(f->path, 0644), 0);
    warnings w = {PTHREAD_MUTEX_INITIALIZER, 0, ""};
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 1;
    o.trace_path = f->path;
    o.log_fn = keep_warning;
    o.log_user_data = &w;
    watchdog(20);
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    assert_int_equal(convoy_submit(rt, nothing_fn, NULL, NULL, 0, "nothing", NULL), CONVOY_OK);
    convoy_runtime_destroy(rt);
    alarm(0);
    assert_int_equal(w.count, 1);
    assert_non_null(strstr(w.last, f->path));
    assert_non_null(strstr(w.last, "not a regular file"));
    struct stat st;
    assert_int_equal(lstat(f->path, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_int_equal(entries_in(f->dir), 1);
}

/* ---- records, arrows and counters ------------------------------------------ */

/* One record of a trace file, which has one per line. */
typedef struct record {
    char ph;
    int tid;
    double ts, dur;
    unsigned long long id;
    char name[128];
    char cat[32];
    const char *line;
} record;

/* The text right after key on [line, end), or NULL. */
static const char *field(const char *line, const char *end, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = line; p + n <= end; ++p) {
        if (!memcmp(p, key, n))
            return p + n;
    }
    return NULL;
}

static void copy_string(const char *p, const char *end, char *out, size_t size)
{
    size_t i = 0;
    while (p < end && *p != '"' && i + 1 < size) {
        if (*p == '\\' && p + 1 < end)
            p++;
        out[i++] = *p++;
    }
    out[i] = '\0';
}

static record *parse_records(const char *text, size_t *count)
{
    size_t capacity = 1024, n = 0;
    record *r = malloc(capacity * sizeof *r);
    assert_non_null(r);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        const char *p = field(line, end, "\"ph\":\"");
        if (p) {
            if (n == capacity) {
                capacity *= 2;
                r = realloc(r, capacity * sizeof *r);
                assert_non_null(r);
            }
            record *x = &r[n++];
            memset(x, 0, sizeof *x);
            x->ph = *p;
            x->line = line;
            if ((p = field(line, end, "\"tid\":")))
                x->tid = atoi(p);
            if ((p = field(line, end, "\"ts\":")))
                x->ts = strtod(p, NULL);
            if ((p = field(line, end, "\"dur\":")))
                x->dur = strtod(p, NULL);
            if ((p = field(line, end, "\"id\":")))
                x->id = strtoull(p, NULL, 10);
            if ((p = field(line, end, "\"name\":\"")))
                copy_string(p, end, x->name, sizeof x->name);
            if ((p = field(line, end, "\"cat\":\"")))
                copy_string(p, end, x->cat, sizeof x->cat);
        }
        line = *end ? end + 1 : end;
    }
    *count = n;
    return r;
}

static size_t count_phase(const record *r, size_t n, char ph)
{
    size_t k = 0;
    for (size_t i = 0; i < n; ++i)
        k += r[i].ph == ph;
    return k;
}

/* Whether some "X" slice on tid holds ts (the file rounds to nanoseconds). */
static int inside_slice(const record *r, size_t n, int tid, double ts)
{
    for (size_t i = 0; i < n; ++i) {
        if (r[i].ph == 'X' && r[i].tid == tid && r[i].ts <= ts + 0.0005 &&
            ts <= r[i].ts + r[i].dur + 0.0005)
            return 1;
    }
    return 0;
}

/* Every arrow called name has one "s" and one "f" (binding point
 * "enclosing"), each inside a slice on its own track. Returns the pairs;
 * *crossing counts those between two tracks. */
static int check_flows(const record *r, size_t n, const char *name, int *crossing)
{
    int pairs = 0;
    *crossing = 0;
    for (size_t i = 0; i < n; ++i) {
        if ((r[i].ph != 's' && r[i].ph != 'f') || strcmp(r[i].name, name) != 0)
            continue;
        const record *start = NULL, *finish = NULL;
        for (size_t j = 0; j < n; ++j) {
            if ((r[j].ph != 's' && r[j].ph != 'f') || r[j].id != r[i].id)
                continue;
            const record **slot = r[j].ph == 's' ? &start : &finish;
            assert_null(*slot); /* one of each per id */
            *slot = &r[j];
        }
        assert_non_null(start);
        assert_non_null(finish);
        assert_string_equal(start->cat, finish->cat);
        assert_non_null(strstr(finish->line, "\"bp\":\"e\""));
        assert_true(inside_slice(r, n, start->tid, start->ts));
        assert_true(inside_slice(r, n, finish->tid, finish->ts));
        assert_true(start->ts <= finish->ts);
        if (r[i].ph == 's') {
            pairs++;
            *crossing += start->tid != finish->tid;
        }
    }
    return pairs;
}

static void check_both_parsers(const char *path, const char *text)
{
    assert_true(json_valid(text));
    int available = 0;
    int accepted = python_accepts(path, &available);
    if (available)
        assert_true(accepted);
}

static int fake_pool(void *user_data, const char **keys, double *values, int max)
{
    assert_true(max >= 2);
    keys[0] = "in_use";
    values[0] = *(const double *)user_data;
    keys[1] = "cached";
    values[1] = 7.0;
    return 2;
}

static void test_flows_and_counters(void **state)
{
    temp_dir *f = *state;
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(1000.0, &t), CONVOY_OK);
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_OK);
    int a = convoy__trace_track(t, "stream a"), b = convoy__trace_track(t, "stream b");
    int host = convoy__trace_track(t, "host");
    double in_use = 100.0;
    convoy__trace_set_sampler(t, "pool bytes", fake_pool, &in_use);

    convoy__trace_task p = {0};
    p.track = a;
    p.kind = "upload";
    p.name = "P";
    p.start_us = 1010.0;
    p.end_us = 1020.0;
    p.role = CONVOY__TRACE_TRANSFER;
    p.path_us = 10.0;
    p.path_tasks = 1;
    convoy__trace_task_done(t, &p);
    convoy__trace_slice from_p = {a, 1010.0, 1020.0};
    convoy__trace_task q = {0};
    q.track = b;
    q.kind = "conv_fwd";
    q.name = "Q";
    q.start_us = 1025.0;
    q.end_us = 1040.0;
    q.args_json = "{\"k\":1}";
    q.role = CONVOY__TRACE_COMPUTE;
    q.inputs = &from_p;
    q.input_count = 1;
    convoy__trace_task_done(t, &q);
    convoy__trace_slice from_pq[2] = {{a, 1010.0, 1020.0}, {b, 1025.0, 1040.0}};
    convoy__trace_part parts[2] = {{"conv_fwd", 25.0}, {"upload", 10.0}};
    convoy__trace_task r = {0};
    r.track = a;
    r.kind = "conv_fwd";
    r.name = "R";
    r.start_us = 1040.0;
    r.end_us = 1050.0;
    r.role = CONVOY__TRACE_COMPUTE;
    r.enqueue_track = host;
    r.enqueue_start_us = 1030.0;
    r.enqueue_end_us = 1031.0;
    r.inputs = from_pq;
    r.input_count = 2;
    r.path_us = 35.0;
    r.path_tasks = 3;
    r.path_from = "P";
    r.path_parts = parts;
    r.path_part_count = 2;
    convoy__trace_task_done(t, &r);

    /* A counter record only when the values change. */
    convoy__trace_sample(t, 1050.0);
    convoy__trace_sample(t, 1060.0);
    in_use = 200.0;
    convoy__trace_sample(t, 1070.0);
    const char *keys[1] = {"x"};
    const double values[1] = {2.5};
    convoy__trace_counter(t, "other", 1080.0, 1, keys, values);
    assert_int_equal(convoy__trace_close(t), CONVOY_OK);

    char *text = temp_read_file(f->path, NULL);
    assert_non_null(text);
    check_both_parsers(f->path, text);
    size_t n = 0;
    record *records = parse_records(text, &n);
    assert_int_equal(count_phase(records, n, 'X'), 4); /* P, Q, R and R's enqueue */
    assert_non_null(strstr(text, "\"name\":\"R\",\"cat\":\"enqueue\""));
    int crossing = 0;
    assert_int_equal(check_flows(records, n, "dependency", &crossing), 3);
    assert_int_equal(crossing, 2); /* P to Q and Q to R; P to R stays on a */
    assert_int_equal(check_flows(records, n, "launch", &crossing), 1);
    assert_int_equal(crossing, 1);
    assert_int_equal(count_phase(records, n, 'C'), 3);
    assert_non_null(strstr(text, "\"ts\":50.000,\"args\":{\"in_use\":100,\"cached\":7}}"));
    assert_non_null(strstr(text, "\"ts\":70.000,\"args\":{\"in_use\":200,\"cached\":7}}"));
    assert_non_null(strstr(text, "\"name\":\"other\",\"ph\":\"C\",\"pid\":1,\"ts\":80.000,"
                                 "\"args\":{\"x\":2.500}}"));
    /* Times are relative to the origin. */
    assert_non_null(strstr(text, "\"name\":\"P\",\"cat\":\"upload\",\"ph\":\"X\",\"pid\":1,"));
    assert_true(records[0].ph == 'M');
    free(records);
    free(text);

    char summary[2048];
    convoy__trace_summary(t, summary, sizeof summary);
    assert_non_null(strstr(summary, "\nrun 0.040 ms from the first start to the last end\n"));
    assert_non_null(
        strstr(summary, "\ntransfers 0.010 ms in 1 task, 0.0% hidden behind compute\n"));
    assert_non_null(strstr(summary, "\ncritical path 0.035 ms (87.5% of the run), 3 tasks from "
                                    "'P' to 'R': conv_fwd 0.025 ms, upload 0.010 ms\n"));
    convoy__trace_destroy(t);
}

/* ---- the transfer line against a brute force --------------------------------- */

typedef struct span {
    double start, end;
    int transfer;
} span;

static int span_by_start(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static unsigned next_random(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 8) & 0xffffff;
}

/* The hidden share the slow way: the union of the compute spans, then each
 * transfer's overlap with it. */
static double hidden_percent(span *spans, size_t n)
{
    span *merged = malloc(n * sizeof *merged);
    assert_non_null(merged);
    size_t m = 0;
    qsort(spans, n, sizeof *spans, span_by_start);
    for (size_t i = 0; i < n; ++i) {
        if (spans[i].transfer)
            continue;
        if (m && spans[i].start <= merged[m - 1].end) {
            if (spans[i].end > merged[m - 1].end)
                merged[m - 1].end = spans[i].end;
        } else {
            merged[m++] = spans[i];
        }
    }
    double total = 0.0, hidden = 0.0;
    for (size_t i = 0; i < n; ++i) {
        if (!spans[i].transfer)
            continue;
        total += spans[i].end - spans[i].start;
        for (size_t j = 0; j < m; ++j) {
            double a = spans[i].start > merged[j].start ? spans[i].start : merged[j].start;
            double b = spans[i].end < merged[j].end ? spans[i].end : merged[j].end;
            hidden += b > a ? b - a : 0.0;
        }
    }
    free(merged);
    return 100.0 * hidden / total;
}

static double summary_hidden_percent(convoy__trace *t)
{
    char summary[4096];
    convoy__trace_summary(t, summary, sizeof summary);
    const char *line = strstr(summary, "\ntransfers ");
    assert_non_null(line);
    double ms, percent;
    size_t tasks;
    assert_int_equal(
        sscanf(line, "\ntransfers %lf ms in %zu tasks, %lf%% hidden", &ms, &tasks, &percent), 3);
    return percent;
}

/* Tasks arrive out of order within batches, and after each batch the trace
 * is told where the next one starts: the figure matches the brute force,
 * and the trace keeps only a few hundred intervals for it. */
static void test_transfer_overlap(void **state)
{
    (void)state;
    enum { N = 6000, BATCH = 48 };
    span *spans = malloc(N * sizeof *spans);
    assert_non_null(spans);
    unsigned seed = 12345;
    for (size_t i = 0; i < N; ++i) {
        double start = 10.0 * (double)i + (double)(next_random(&seed) % 50);
        double length = 1.0 + (double)(next_random(&seed) % 20);
        spans[i] = (span){start, start + length, next_random(&seed) % 5 < 2};
    }
    qsort(spans, N, sizeof *spans, span_by_start);
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    int track = convoy__trace_track(t, "s");
    for (size_t first = 0; first < N; first += BATCH) {
        size_t count = N - first < BATCH ? N - first : BATCH;
        for (size_t k = 0; k < count; ++k) {
            /* A fixed shuffle of the batch. */
            const span *x = &spans[first + (k * 29) % count];
            convoy__trace_task task = {0};
            task.track = track;
            task.kind = x->transfer ? "upload" : "conv_fwd";
            task.start_us = x->start;
            task.end_us = x->end;
            task.role = x->transfer ? CONVOY__TRACE_TRANSFER : CONVOY__TRACE_COMPUTE;
            convoy__trace_task_done(t, &task);
        }
        if (first + count < N)
            convoy__trace_settle(t, spans[first + count].start);
    }
    double expected = hidden_percent(spans, N);
    double got = summary_hidden_percent(t);
    print_message("hidden: %.3f%% expected, %.3f%% reported\n", expected, got);
    assert_true(expected > 20.0 && expected < 95.0); /* a case where it matters */
    assert_true(fabs(got - expected) < 0.051);
    assert_true(convoy__trace_footprint(t) < 40000); /* N intervals would be 96000 bytes */
    convoy__trace_destroy(t);
    free(spans);
}

/* ---- a long run ------------------------------------------------------------- */

/* Lines holding needle (each record is one line). Linear: a sanitizer's
 * strstr measures its whole haystack on every call. */
static int count_per_line(const char *text, const char *needle)
{
    int n = 0;
    size_t length = strlen(needle);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t size = end ? (size_t)(end - line) : strlen(line);
        n += memmem(line, size, needle, length) != NULL;
        line += size + (end != NULL);
    }
    return n;
}

static long temp_file_size(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    long size = -1;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".tmp.")) {
            char path[600];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) == 0)
                size = (long)st.st_size;
        }
    }
    closedir(d);
    return size;
}

/* 150000 tasks: the records reach the disk as they come (the temp file
 * grows while the run goes on), the trace's memory stays where it was after
 * the first 2000, and the file is whole at the end. */
static void test_long_run_bounded(void **state)
{
    temp_dir *f = *state;
    enum { N = 150000 };
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(0.0, &t), CONVOY_OK);
    assert_int_equal(convoy__trace_open(t, f->path), CONVOY_OK);
    int tracks[3] = {convoy__trace_track(t, "convoy compute 0"),
                     convoy__trace_track(t, "convoy compute 1"),
                     convoy__trace_track(t, "convoy upload")};
    size_t early = 0;
    convoy__trace_slice previous = {0, 0.0, 0.0};
    convoy__trace_part part = {"conv_fwd", 0.0};
    for (int i = 0; i < N; ++i) {
        convoy__trace_task task = {0};
        task.track = tracks[i % 3];
        task.kind = i % 3 == 2 ? "upload" : "conv_fwd";
        task.name = i % 3 == 2 ? "upload 8x64x56x56" : "conv_fwd 8x64x56x56 * 64x64x3x3 gemm";
        task.start_us = 10.0 * i;
        task.end_us = 10.0 * i + 25.0;
        task.args_json = "{\"status\":\"CONVOY_OK\"}";
        task.role = i % 3 == 2 ? CONVOY__TRACE_TRANSFER : CONVOY__TRACE_COMPUTE;
        task.inputs = &previous;
        task.input_count = i > 0;
        part.us = 25.0 * (i + 1);
        task.path_us = part.us;
        task.path_tasks = i + 1;
        task.path_from = "upload 8x64x56x56";
        task.path_parts = &part;
        task.path_part_count = 1;
        convoy__trace_task_done(t, &task);
        previous = (convoy__trace_slice){task.track, task.start_us, task.end_us};
        if (i % 100 == 99)
            convoy__trace_settle(t, 10.0 * (i + 1));
        if (i == 2000)
            early = convoy__trace_footprint(t);
        if (i == N / 2)
            assert_true(temp_file_size(f->dir) > 8L << 20);
    }
    size_t late = convoy__trace_footprint(t);
    assert_true(late <= early + 4096);
    assert_int_equal(convoy__trace_close(t), CONVOY_OK);
    size_t size = 0;
    char *text = temp_read_file(f->path, &size);
    assert_non_null(text);
    assert_true(json_valid(text));
    assert_int_equal(count_per_line(text, "\"ph\":\"X\""), N);
    assert_int_equal(count_per_line(text, "\"ph\":\"s\""), N - 1);
    free(text);
    char summary[4096];
    convoy__trace_summary(t, summary, sizeof summary);
    assert_non_null(strstr(summary, "critical path 3750.000 ms"));
    convoy__trace_destroy(t);
}

/* ---- through the runtime -------------------------------------------------------- */

typedef struct log_lines {
    pthread_mutex_t lock;
    char text[16384];
} log_lines;

static void keep_info(void *user_data, convoy_log_level level, const char *message)
{
    log_lines *l = user_data;
    pthread_mutex_lock(&l->lock);
    size_t used = strlen(l->text);
    snprintf(l->text + used, sizeof l->text - used, "%s\n", message);
    pthread_mutex_unlock(&l->lock);
}

/* CONVOY_TRACE and CONVOY_PROFILE on two host streams: one slice per task,
 * named as the task; arrows that pair up, some between streams; the pool's
 * counter; sizes and bandwidth on the transfers; every part of the summary. */
static void test_runtime_trace(void **state)
{
    temp_dir *f = *state;
    static log_lines lines = {PTHREAD_MUTEX_INITIALIZER, ""};
    lines.text[0] = '\0';
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 2;
    o.trace_path = f->path;
    o.profile = 1;
    o.log_fn = keep_info;
    o.log_user_data = &lines;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    static pipeline_run run;
    assert_int_equal(pipeline_run_steps(rt, 2, &run), CONVOY_OK);
    convoy_runtime_destroy(rt);

    char *text = temp_read_file(f->path, NULL);
    assert_non_null(text);
    check_both_parsers(f->path, text);
    size_t n = 0;
    record *records = parse_records(text, &n);
    assert_int_equal(count_phase(records, n, 'X'), run.task_count);
    int matched[PIPELINE_TASKS_PER_STEP * PIPELINE_STEPS_MAX] = {0};
    for (size_t i = 0; i < n; ++i) {
        if (records[i].ph != 'X')
            continue;
        int found = 0;
        for (int k = 0; k < run.task_count && !found; ++k) {
            if (!matched[k] && !strcmp(run.labels[k], records[i].name))
                matched[k] = found = 1;
        }
        if (!found)
            fail_msg("a slice nobody expected: '%s'", records[i].name);
    }
    int crossing = 0;
    assert_true(check_flows(records, n, "dependency", &crossing) >= 1);
    assert_true(crossing >= 1);
    assert_true(count_phase(records, n, 'C') >= 1);
    assert_non_null(strstr(text, "\"name\":\"pool bytes\",\"ph\":\"C\""));
    /* x is 2x16x12x12 floats. */
    assert_non_null(strstr(text, "\"bytes\":18432,\"GB/s\":"));
    free(records);
    free(text);

    assert_non_null(strstr(lines.text, "task summary"));
    assert_non_null(strstr(lines.text, "\nconvoy compute 0 "));
    assert_non_null(strstr(lines.text, "\nconvoy upload "));
    assert_non_null(strstr(lines.text, "\nrun "));
    assert_non_null(strstr(lines.text, "% hidden behind compute\n"));
    assert_non_null(strstr(lines.text, "\ncritical path "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_itself),
        cmocka_unit_test_setup_teardown(test_null_and_empty, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_write_from_threads, setup, temp_dir_teardown),
        cmocka_unit_test(test_summary_numbers),
        cmocka_unit_test_setup_teardown(test_unwritable_path, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_fifo_left_alone, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_device_and_symlink_left_alone, setup,
                                        temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_runtime_trace_to_fifo, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_flows_and_counters, setup, temp_dir_teardown),
        cmocka_unit_test(test_transfer_overlap),
        cmocka_unit_test_setup_teardown(test_long_run_bounded, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_runtime_trace, setup, temp_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
