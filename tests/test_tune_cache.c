/* The persistent tuning cache (runtime/tune_cache.c): round trips, missing,
 * stale and corrupt files (each ignored with one warning, then overwritten
 * cleanly), argument checks, concurrent writers in two processes and in
 * threads, an unwritable path that must not fail the caller, and paths that
 * are not regular files (a FIFO, a device node, a symbolic link), which are
 * left alone without blocking. */
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
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "convoy.h"
#include "runtime/tune_cache.h"
#include "temp_files.h"

#define ENV_A "cuda|NVIDIA H100|sm_90|driver 13000|cudnn 91900|convoy 0.1.0"
#define ENV_B "cuda|NVIDIA H100|sm_90|driver 13010|cudnn 91900|convoy 0.1.0"

/* Counts log lines by level and keeps the last warning. */
typedef struct log_capture {
    pthread_mutex_t lock;
    int warnings;
    int debug;
    char last_warning[1024];
} log_capture;

static void capture(void *user_data, convoy_log_level level, const char *message)
{
    log_capture *log = user_data;
    pthread_mutex_lock(&log->lock);
    if (level <= CONVOY_LOG_WARNING) {
        log->warnings++;
        snprintf(log->last_warning, sizeof log->last_warning, "%s", message);
    } else {
        log->debug++;
    }
    pthread_mutex_unlock(&log->lock);
}

static void capture_reset(log_capture *log)
{
    log->warnings = 0;
    log->debug = 0;
    log->last_warning[0] = '\0';
}

static int setup(void **state)
{
    return temp_dir_setup(state, "convoy_tune_", "tune.cache");
}

/* ---- file helpers ------------------------------------------------------- */

static void spit(const char *path, const char *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, size, fp), size);
    assert_int_equal(fclose(fp), 0);
}

/* The same checksum the cache uses, so the test can forge well-summed files
 * whose content is wrong. */
static uint64_t fnv1a(const char *data, size_t size)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < size; ++i)
        h = (h ^ (unsigned char)data[i]) * 1099511628211ull;
    return h;
}

static void write_summed(const char *path, const char *body)
{
    char text[2048];
    int n = snprintf(text, sizeof text, "%schecksum\t%016llx\n", body,
                     (unsigned long long)fnv1a(body, strlen(body)));
    spit(path, text, (size_t)n);
}

static int count_temp_files(const char *dir)
{
    int count = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return count;
}

static convoy__tune_cache *open_cache(const char *path, const char *env, log_capture *log)
{
    convoy__tune_cache *c = NULL;
    assert_int_equal(convoy__tune_cache_open(path, env, capture, log, &c), CONVOY_OK);
    assert_non_null(c);
    return c;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    temp_dir *f = *state;
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(convoy__tune_cache_store(c, "fwd 8x64x56x56 * 64x64x3x3", "gemm", 1.25),
                     CONVOY_OK);
    assert_int_equal(convoy__tune_cache_store(c, "bwd_data 1x3x7x7", "direct", 0.000123),
                     CONVOY_OK);
    assert_int_equal(
        convoy__tune_cache_store(c, "fwd 8x64x56x56 * 64x64x3x3", "cudnn:IMPLICIT_GEMM", 0.5),
        CONVOY_OK);
    assert_int_equal(convoy__tune_cache_store(c, "fwd 1x1", "1x1", 123456.75), CONVOY_OK);
    convoy__tune_cache_close(c);

    size_t size = 0;
    char *text = temp_read_file(f->path, &size);
    assert_non_null(text);
    const char *start = "convoy-tune-cache 1\nenvironment\t" ENV_A "\n";
    assert_true(size > strlen(start) && memcmp(text, start, strlen(start)) == 0);
    free(text);

    c = open_cache(f->path, ENV_A, &log);
    char choice[64];
    double ms = -1.0;
    assert_int_equal(
        convoy__tune_cache_lookup(c, "fwd 8x64x56x56 * 64x64x3x3", choice, sizeof choice, &ms), 1);
    assert_string_equal(choice, "cudnn:IMPLICIT_GEMM");
    assert_true(fabs(ms - 0.5) < 1e-9);
    assert_int_equal(convoy__tune_cache_lookup(c, "bwd_data 1x3x7x7", choice, sizeof choice, &ms),
                     1);
    assert_string_equal(choice, "direct");
    assert_true(fabs(ms - 0.000123) < 1e-9);
    assert_int_equal(convoy__tune_cache_lookup(c, "fwd 1x1", choice, sizeof choice, &ms), 1);
    assert_true(fabs(ms - 123456.75) < 1e-6);
    assert_int_equal(convoy__tune_cache_lookup(c, "fwd 2x2", choice, sizeof choice, &ms), 0);
    /* A choice that does not fit is "not found", never a truncated name. */
    assert_int_equal(convoy__tune_cache_lookup(c, "bwd_data 1x3x7x7", choice, 6, NULL), 0);
    assert_int_equal(convoy__tune_cache_lookup(c, "bwd_data 1x3x7x7", choice, 7, NULL), 1);
    ms = -1.0;
    assert_int_equal(convoy__tune_cache_lookup(c, "bwd_data 1x3x7x7", NULL, 0, &ms), 1);
    assert_true(fabs(ms - 0.000123) < 1e-9);
    assert_int_equal(convoy__tune_cache_lookup(c, "bwd_data 1x3x7x7", NULL, 8, &ms), 0);
    assert_int_equal(convoy__tune_cache_lookup(NULL, "x", choice, sizeof choice, &ms), 0);
    convoy__tune_cache_close(c);
    assert_int_equal(log.warnings, 0);
    assert_int_equal(count_temp_files(f->dir), 0);
}

static void test_missing_file(void **state)
{
    temp_dir *f = *state;
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(f->path, ENV_A, &log);
    char choice[64];
    assert_int_equal(convoy__tune_cache_lookup(c, "anything", choice, sizeof choice, NULL), 0);
    convoy__tune_cache_close(c);
    assert_int_equal(log.warnings, 0);
    assert_int_equal(access(f->path, F_OK), -1);
    convoy__tune_cache_close(NULL);
}

static void test_stale_environment(void **state)
{
    temp_dir *f = *state;
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(convoy__tune_cache_store(c, "old key", "gemm", 2.0), CONVOY_OK);
    convoy__tune_cache_close(c);

    c = open_cache(f->path, ENV_B, &log);
    assert_int_equal(log.warnings, 1);
    assert_non_null(strstr(log.last_warning, f->path));
    assert_non_null(strstr(log.last_warning, "ignored: written for a different environment"));
    assert_non_null(strstr(log.last_warning, "driver 13000"));
    assert_non_null(strstr(log.last_warning, "driver 13010"));
    char choice[64];
    assert_int_equal(convoy__tune_cache_lookup(c, "old key", choice, sizeof choice, NULL), 0);
    /* Storing replaces the stale file; its entries are not merged in. */
    assert_int_equal(convoy__tune_cache_store(c, "new key", "direct", 1.0), CONVOY_OK);
    convoy__tune_cache_close(c);

    capture_reset(&log);
    c = open_cache(f->path, ENV_B, &log);
    assert_int_equal(log.warnings, 0);
    assert_int_equal(convoy__tune_cache_lookup(c, "new key", choice, sizeof choice, NULL), 1);
    assert_int_equal(convoy__tune_cache_lookup(c, "old key", choice, sizeof choice, NULL), 0);
    convoy__tune_cache_close(c);

    /* A NULL log callback is silent, not a crash. */
    convoy__tune_cache *quiet = NULL;
    assert_int_equal(convoy__tune_cache_open(f->path, ENV_A, NULL, NULL, &quiet), CONVOY_OK);
    convoy__tune_cache_close(quiet);
}

/* Opens a damaged file: exactly one warning saying "corrupt", nothing
 * trusted; then one store rewrites it into a file that loads cleanly and
 * holds only the new entry. */
static void expect_corrupt_then_repaired(const temp_dir *f, const char *data, size_t size,
                                         const char *reason)
{
    spit(f->path, data, size);
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(f->path, ENV_A, &log);
    if (log.warnings != 1 || !strstr(log.last_warning, "ignored: corrupt") ||
        (reason && !strstr(log.last_warning, reason)))
        fail_msg("size %zu: expected one corrupt warning (%s), got %d: '%s'", size,
                 reason ? reason : "any reason", log.warnings, log.last_warning);
    char choice[64];
    assert_int_equal(convoy__tune_cache_lookup(c, "k1", choice, sizeof choice, NULL), 0);
    assert_int_equal(convoy__tune_cache_lookup(c, "k2", choice, sizeof choice, NULL), 0);
    assert_int_equal(convoy__tune_cache_store(c, "fresh", "gemm", 3.0), CONVOY_OK);
    convoy__tune_cache_close(c);
    assert_int_equal(log.warnings, 1);

    capture_reset(&log);
    c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(log.warnings, 0);
    assert_int_equal(convoy__tune_cache_lookup(c, "fresh", choice, sizeof choice, NULL), 1);
    assert_int_equal(convoy__tune_cache_lookup(c, "k1", choice, sizeof choice, NULL), 0);
    convoy__tune_cache_close(c);
}

static void test_corrupt_files(void **state)
{
    temp_dir *f = *state;
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(convoy__tune_cache_store(c, "k1", "gemm", 1.5), CONVOY_OK);
    assert_int_equal(convoy__tune_cache_store(c, "k2", "direct", 2.5), CONVOY_OK);
    convoy__tune_cache_close(c);
    size_t size = 0;
    char *good = temp_read_file(f->path, &size);
    assert_non_null(good);
    assert_true(size > 40);

    const char garbage[] = "\x7f"
                           "ELF\x02\x01\x01 this is not a cache\n\n\t\t\n";
    expect_corrupt_then_repaired(f, garbage, sizeof garbage - 1, "bad header");
    expect_corrupt_then_repaired(f, "", 0, "empty");

    /* Truncation at every byte offset, the empty file included. */
    for (size_t cut = 0; cut < size; ++cut)
        expect_corrupt_then_repaired(f, good, cut, NULL);

    /* One damaged byte anywhere. */
    char *copy = malloc(size);
    assert_non_null(copy);
    for (size_t at = 0; at < size; ++at) {
        memcpy(copy, good, size);
        copy[at] ^= 0x20;
        expect_corrupt_then_repaired(f, copy, size, NULL);
        memcpy(copy, good, size);
        copy[at] ^= 0x01;
        expect_corrupt_then_repaired(f, copy, size, NULL);
    }

    /* A well-formed checksum line with the wrong value. */
    memcpy(copy, good, size);
    char *sum = strstr(copy, "checksum\t");
    assert_non_null(sum);
    memcpy(sum + 9, "0123456789abcdef", 16);
    expect_corrupt_then_repaired(f, copy, size, "checksum mismatch");
    free(copy);
    free(good);

    /* Well-summed files whose lines are wrong: a bad writer, not damage. */
    const char *header = "convoy-tune-cache 1\nenvironment\t" ENV_A "\n";
    char body[1024];
    snprintf(body, sizeof body, "%sk1\tgemm\t1,5\n", header);
    write_summed(f->path, body);
    size_t n = 0;
    char *forged = temp_read_file(f->path, &n);
    expect_corrupt_then_repaired(f, forged, n, "bad number");
    free(forged);
    snprintf(body, sizeof body, "%sk1\tgemm\n", header);
    write_summed(f->path, body);
    forged = temp_read_file(f->path, &n);
    expect_corrupt_then_repaired(f, forged, n, "line 3");
    free(forged);
    snprintf(body, sizeof body, "%sk1\tgemm\t-1.0\n", header);
    write_summed(f->path, body);
    forged = temp_read_file(f->path, &n);
    expect_corrupt_then_repaired(f, forged, n, "bad number");
    free(forged);
    write_summed(f->path, "convoy-tune-cache 2\nenvironment\tx\n");
    forged = temp_read_file(f->path, &n);
    expect_corrupt_then_repaired(f, forged, n, "bad header");
    free(forged);

    /* A hand-written file that is well formed loads. */
    snprintf(body, sizeof body, "%sk1\tgemm\t1.5\nk2\tdirect\t7\n", header);
    write_summed(f->path, body);
    capture_reset(&log);
    c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(log.warnings, 0);
    double ms = 0.0;
    char choice[32];
    assert_int_equal(convoy__tune_cache_lookup(c, "k2", choice, sizeof choice, &ms), 1);
    assert_true(ms == 7.0);
    convoy__tune_cache_close(c);
    assert_int_equal(count_temp_files(f->dir), 0);
}

static void test_bad_arguments(void **state)
{
    temp_dir *f = *state;
    convoy__tune_cache *c = NULL;
    assert_int_equal(convoy__tune_cache_open(NULL, ENV_A, NULL, NULL, &c),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_open("", ENV_A, NULL, NULL, &c),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_open(f->path, ENV_A, NULL, NULL, NULL),
                     CONVOY_ERR_INVALID_ARGUMENT);
    assert_null(c);
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    c = open_cache(f->path, ENV_A, &log);
    const char *bad_keys[] = {"", "a\tb", "a\nb", "a\rb", "trailing\n", "bell\a"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; ++i) {
        assert_int_equal(convoy__tune_cache_store(c, bad_keys[i], "gemm", 1.0),
                         CONVOY_ERR_INVALID_ARGUMENT);
        assert_int_equal(convoy__tune_cache_store(c, "key", bad_keys[i], 1.0),
                         CONVOY_ERR_INVALID_ARGUMENT);
    }
    assert_non_null(strstr(convoy_last_error_message(), "tune cache store"));
    char long_key[CONVOY__TUNE_CACHE_MAX_KEY + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    assert_int_equal(convoy__tune_cache_store(c, long_key, "gemm", 1.0),
                     CONVOY_ERR_INVALID_ARGUMENT);
    long_key[CONVOY__TUNE_CACHE_MAX_KEY] = '\0';
    assert_int_equal(convoy__tune_cache_store(c, long_key, "gemm", 1.0), CONVOY_OK);
    assert_int_equal(convoy__tune_cache_store(NULL, "k", "gemm", 1.0), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_store(c, NULL, "gemm", 1.0), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_store(c, "k", NULL, 1.0), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_store(c, "k", "gemm", -1.0), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_store(c, "k", "gemm", NAN), CONVOY_ERR_INVALID_ARGUMENT);
    assert_int_equal(convoy__tune_cache_store(c, "k", "gemm", INFINITY),
                     CONVOY_ERR_INVALID_ARGUMENT);
    char choice[16];
    assert_int_equal(convoy__tune_cache_lookup(c, "a\tb", choice, sizeof choice, NULL), 0);
    assert_int_equal(convoy__tune_cache_lookup(c, "k", choice, sizeof choice, NULL), 0);
    convoy__tune_cache_close(c);

    /* Only the valid long key reached the file, and it loads back. */
    c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(convoy__tune_cache_lookup(c, long_key, choice, sizeof choice, NULL), 1);
    convoy__tune_cache_close(c);
    assert_int_equal(log.warnings, 0);
}

/* One child process: opens the shared path and stores its own keys. Returns
 * an exit code instead of asserting (CMocka cannot report from a child). */
static int child_writer(const char *path, int who, int count)
{
    convoy__tune_cache *c = NULL;
    if (convoy__tune_cache_open(path, ENV_A, NULL, NULL, &c) != CONVOY_OK)
        return 2;
    int code = 0;
    for (int i = 0; i < count && code == 0; ++i) {
        char key[64], choice[32];
        snprintf(key, sizeof key, "process %d key %d", who, i);
        snprintf(choice, sizeof choice, "impl-%d-%d", who, i % 7);
        if (convoy__tune_cache_store(c, key, choice, i * 0.25) != CONVOY_OK)
            code = 3;
    }
    convoy__tune_cache_close(c);
    return code;
}

static void expect_all_keys(const char *path, int writers, int count)
{
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(path, ENV_A, &log);
    assert_int_equal(log.warnings, 0);
    int missing = 0;
    for (int who = 0; who < writers; ++who) {
        for (int i = 0; i < count; ++i) {
            char key[64], choice[32], expected[32];
            double ms = -1.0;
            snprintf(key, sizeof key, "process %d key %d", who, i);
            snprintf(expected, sizeof expected, "impl-%d-%d", who, i % 7);
            if (!convoy__tune_cache_lookup(c, key, choice, sizeof choice, &ms) ||
                strcmp(choice, expected) != 0 || ms != i * 0.25)
                missing++;
        }
    }
    convoy__tune_cache_close(c);
    assert_int_equal(missing, 0);
}

static void test_two_processes(void **state)
{
    temp_dir *f = *state;
    pid_t children[2];
    for (int who = 0; who < 2; ++who) {
        children[who] = fork();
        assert_true(children[who] >= 0);
        if (children[who] == 0)
            _exit(child_writer(f->path, who, 200));
    }
    for (int who = 0; who < 2; ++who) {
        int status = 0;
        assert_int_equal(waitpid(children[who], &status, 0), children[who]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* The file parses (no warning), holds every entry of both writers, and
     * no temp file is left behind. */
    expect_all_keys(f->path, 2, 200);
    assert_int_equal(count_temp_files(f->dir), 0);
}

typedef struct thread_job {
    const char *path;
    convoy__tune_cache *cache;
    int who;
    int failures;
} thread_job;

static void *thread_writer(void *arg)
{
    thread_job *job = arg;
    for (int i = 0; i < 50; ++i) {
        char key[64], choice[32], back[32];
        snprintf(key, sizeof key, "process %d key %d", job->who, i);
        snprintf(choice, sizeof choice, "impl-%d-%d", job->who, i % 7);
        if (convoy__tune_cache_store(job->cache, key, choice, i * 0.25) != CONVOY_OK ||
            !convoy__tune_cache_lookup(job->cache, key, back, sizeof back, NULL))
            job->failures++;
    }
    return NULL;
}

/* Four threads over two cache objects of one process on the same path:
 * the mutex orders threads of one object, the lock file orders the objects. */
static void test_threads(void **state)
{
    temp_dir *f = *state;
    convoy__tune_cache *caches[2];
    for (int i = 0; i < 2; ++i)
        assert_int_equal(convoy__tune_cache_open(f->path, ENV_A, NULL, NULL, &caches[i]),
                         CONVOY_OK);
    pthread_t threads[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; ++i) {
        jobs[i] = (thread_job){f->path, caches[i % 2], i, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, thread_writer, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; ++i) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
    for (int i = 0; i < 2; ++i)
        convoy__tune_cache_close(caches[i]);
    expect_all_keys(f->path, 4, 50);
    assert_int_equal(count_temp_files(f->dir), 0);
}

static void test_unwritable_path(void **state)
{
    temp_dir *f = *state;
    char path[400];
    snprintf(path, sizeof path, "%s/no/such/directory/tune.cache", f->dir);
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(path, ENV_A, &log);
    assert_int_equal(log.warnings, 0);
    assert_int_equal(convoy__tune_cache_store(c, "k1", "gemm", 1.0), CONVOY_OK);
    assert_int_equal(log.warnings, 1);
    assert_non_null(strstr(log.last_warning, "not saved"));
    assert_non_null(strstr(log.last_warning, path));
    /* Later failures do not repeat the warning; the entry is still usable. */
    assert_int_equal(convoy__tune_cache_store(c, "k2", "direct", 2.0), CONVOY_OK);
    assert_int_equal(log.warnings, 1);
    char choice[16];
    assert_int_equal(convoy__tune_cache_lookup(c, "k1", choice, sizeof choice, NULL), 1);
    assert_int_equal(convoy__tune_cache_lookup(c, "k2", choice, sizeof choice, NULL), 1);
    convoy__tune_cache_close(c);

    /* A directory where the file should be: left alone with one warning at
     * open; stores succeed and keep their entries in memory. */
    char dir_path[400];
    snprintf(dir_path, sizeof dir_path, "%s/a_directory", f->dir);
    assert_int_equal(mkdir(dir_path, 0755), 0);
    capture_reset(&log);
    c = open_cache(dir_path, ENV_A, &log);
    assert_int_equal(log.warnings, 1);
    assert_non_null(strstr(log.last_warning, "a directory, not a regular file"));
    assert_int_equal(convoy__tune_cache_store(c, "k1", "gemm", 1.0), CONVOY_OK);
    assert_int_equal(log.warnings, 1);
    assert_int_equal(convoy__tune_cache_lookup(c, "k1", choice, sizeof choice, NULL), 1);
    convoy__tune_cache_close(c);
    assert_int_equal(count_temp_files(f->dir), 0);
}

/* ---- paths that are not regular files ------------------------------------- */

/* Opening a FIFO for reading blocks until a writer comes: a test that
 * would hang fails instead. */
static void on_alarm(int signal_number)
{
    static const char text[] = "test_tune_cache: timed out: an operation on a FIFO blocked\n";
    (void)signal_number;
    (void)!write(2, text, sizeof text - 1);
    _exit(1);
}

static void watchdog(unsigned seconds)
{
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

static mode_t type_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & S_IFMT;
}

/* Opens a cache at path, stores two entries and checks that the path was
 * neither read nor written: one warning at open naming what it is, the
 * entries usable in memory, no temp or lock file next to it. */
static void expect_left_alone(const char *dir, const char *path, const char *what)
{
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(path, ENV_A, &log);
    assert_int_equal(log.warnings, 1);
    assert_non_null(strstr(log.last_warning, path));
    assert_non_null(strstr(log.last_warning, what));
    assert_non_null(strstr(log.last_warning, "not a regular file"));
    assert_int_equal(convoy__tune_cache_store(c, "k1", "gemm", 1.0), CONVOY_OK);
    assert_int_equal(convoy__tune_cache_store(c, "k2", "direct", 2.0), CONVOY_OK);
    assert_int_equal(log.warnings, 1);
    char choice[16];
    assert_int_equal(convoy__tune_cache_lookup(c, "k2", choice, sizeof choice, NULL), 1);
    assert_string_equal(choice, "direct");
    convoy__tune_cache_close(c);
    if (dir)
        assert_int_equal(count_temp_files(dir), 0);
}

static void test_fifo_left_alone(void **state)
{
    temp_dir *f = *state;
    assert_int_equal(mkfifo(f->path, 0644), 0);
    watchdog(20);
    expect_left_alone(f->dir, f->path, "a FIFO");
    alarm(0);
    assert_int_equal(type_of(f->path), S_IFIFO);
    char lock_path[400];
    snprintf(lock_path, sizeof lock_path, "%s.lock", f->path);
    assert_int_not_equal(access(lock_path, F_OK), 0);
}

/* A symbolic link is not followed: the file it points to keeps its
 * entries, and the link stays a link. */
static void test_symlink_left_alone(void **state)
{
    temp_dir *f = *state;
    char target[400];
    snprintf(target, sizeof target, "%s/elsewhere", f->dir);
    write_summed(target, "convoy-tune-cache 1\nenvironment\t" ENV_A "\nk9\tgemm\t1.000000\n");
    size_t before_size = 0, after_size = 0;
    char *before = temp_read_file(target, &before_size);
    assert_non_null(before);
    assert_int_equal(symlink(target, f->path), 0);
    log_capture log = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
    convoy__tune_cache *c = open_cache(f->path, ENV_A, &log);
    assert_int_equal(convoy__tune_cache_lookup(c, "k9", NULL, 0, NULL), 0);
    convoy__tune_cache_close(c);
    expect_left_alone(f->dir, f->path, "a symbolic link");
    assert_int_equal(type_of(f->path), S_IFLNK);
    char *after = temp_read_file(target, &after_size);
    assert_non_null(after);
    assert_int_equal(after_size, before_size);
    assert_memory_equal(after, before, before_size);
    free(before);
    free(after);
}

/* Device nodes are never replaced. As root rename() could replace one, so
 * the test makes its own node (the null device's numbers) and, only then,
 * also checks /dev/null itself. */
static void test_device_node_left_alone(void **state)
{
    temp_dir *f = *state;
    watchdog(20);
    if (geteuid() == 0) {
        char node[400];
        snprintf(node, sizeof node, "%s/null", f->dir);
        assert_int_equal(mknod(node, S_IFCHR | 0666, makedev(1, 3)), 0);
        expect_left_alone(f->dir, node, "a character device");
        struct stat st;
        assert_int_equal(lstat(node, &st), 0);
        assert_true(S_ISCHR(st.st_mode));
        assert_true(st.st_rdev == makedev(1, 3));
    }
    struct stat before, after;
    assert_int_equal(lstat("/dev/null", &before), 0);
    assert_true(S_ISCHR(before.st_mode));
    expect_left_alone(NULL, "/dev/null", "a character device");
    assert_int_equal(lstat("/dev/null", &after), 0);
    assert_true(S_ISCHR(after.st_mode));
    assert_true(after.st_rdev == before.st_rdev);
    assert_true(after.st_ino == before.st_ino);
    assert_int_not_equal(access("/dev/null.lock", F_OK), 0);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_stale_environment, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_files, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_two_processes, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_path, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_fifo_left_alone, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_symlink_left_alone, setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(test_device_node_left_alone, setup, temp_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
