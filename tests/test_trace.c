/* Chrome trace export and the per-kind summary (profiling/trace.c): events
 * from several threads and tracks written as valid JSON (checked by a small
 * strict parser here and by Python's json module when python3 exists), with
 * escaping, track metadata, the summary's numbers and its truncation; and a
 * trace path that is not a regular file (a FIFO, /dev/null, a symbolic
 * link), which is left alone without blocking, directly and through
 * CONVOY_TRACE at runtime destroy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convoy.h"
#include "profiling/trace.h"
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

/* ---- tests ------------------------------------------------------------ */

static void test_null_and_empty(void **state)
{
    temp_dir *f = *state;
    assert_int_equal(convoy__trace_create(NULL), CONVOY_ERR_INVALID_ARGUMENT);
    convoy__trace_destroy(NULL);
    assert_int_equal(convoy__trace_track(NULL, "x"), 0);
    convoy__trace_add(NULL, 1, "k", "n", 0.0, 1.0, NULL);
    assert_int_equal(convoy__trace_write(NULL, f->path), CONVOY_ERR_INVALID_ARGUMENT);
    char buffer[64] = "unchanged";
    convoy__trace_summary(NULL, buffer, sizeof buffer);
    assert_string_equal(buffer, "");

    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(&t), CONVOY_OK);
    assert_int_equal(convoy__trace_track(t, NULL), 0);
    assert_int_equal(convoy__trace_write(t, NULL), CONVOY_ERR_INVALID_ARGUMENT);
    convoy__trace_summary(t, buffer, sizeof buffer);
    assert_string_equal(buffer, "no tasks recorded\n");
    convoy__trace_summary(t, NULL, 10);
    convoy__trace_summary(t, buffer, 0);

    /* An empty trace is still a valid file with the process name. */
    assert_int_equal(convoy__trace_write(t, f->path), CONVOY_OK);
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
    assert_int_equal(convoy__trace_create(&t), CONVOY_OK);
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

    assert_int_equal(convoy__trace_write(t, f->path), CONVOY_OK);
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
    /* Times are relative to the earliest start and carry three decimals. */
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
    assert_int_equal(convoy__trace_create(&t), CONVOY_OK);
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

    /* Header first, then kinds by total time, aligned in one column width. */
    assert_true(strncmp(summary, "kind ", 5) == 0);
    const char *fwd = strstr(summary, "\nconv_fwd");
    const char *upload = strstr(summary, "\nupload");
    const char *custom = strstr(summary, "\ncustom");
    assert_true(fwd && upload && custom && fwd < upload && upload < custom);
    size_t first_line = (size_t)(strchr(summary, '\n') - summary);
    for (const char *line = summary; *line; line = strchr(line, '\n') + 1)
        assert_int_equal((size_t)(strchr(line, '\n') - line), first_line);

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
    assert_int_equal(convoy__trace_create(&one), CONVOY_OK);
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
    assert_int_equal(convoy__trace_create(&t), CONVOY_OK);
    convoy__trace_add(t, convoy__trace_track(t, "s"), "conv_fwd", "x", 0.0, 1.0, NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/no/such/dir/trace.json", f->dir);
    assert_int_equal(convoy__trace_write(t, path), CONVOY_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(convoy_last_error_message(), path));
    assert_non_null(strstr(convoy_last_error_message(), "trace_write"));
    /* A directory is not a file either. */
    assert_int_equal(convoy__trace_write(t, f->dir), CONVOY_ERR_INVALID_ARGUMENT);
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

static convoy__trace *one_event_trace(void)
{
    convoy__trace *t = NULL;
    assert_int_equal(convoy__trace_create(&t), CONVOY_OK);
    convoy__trace_add(t, convoy__trace_track(t, "s"), "conv_fwd", "x", 0.0, 1.0, NULL);
    return t;
}

static void test_fifo_left_alone(void **state)
{
    temp_dir *f = *state;
    assert_int_equal(mkfifo(f->path, 0644), 0);
    convoy__trace *t = one_event_trace();
    watchdog(20);
    assert_int_equal(convoy__trace_write(t, f->path), CONVOY_ERR_INVALID_ARGUMENT);
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
    assert_int_equal(convoy__trace_write(t, "/dev/null"), CONVOY_ERR_INVALID_ARGUMENT);
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
    assert_int_equal(convoy__trace_write(t, f->path), CONVOY_ERR_INVALID_ARGUMENT);
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
    assert_int_equal(convoy__trace_write(t, f->path), CONVOY_OK);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
