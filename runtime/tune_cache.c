/* The persistent tuning cache (CONVOY_TUNE_CACHE): a sorted in-memory table of
 * shape key -> winning candidate, loaded from and rewritten to a checksummed
 * text file. The format and the failure policy are described in tune_cache.h;
 * this file keeps the promise that a cache file never breaks a run and is
 * never trusted when it is stale or damaged. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* flock, and the GNU strerror_r that returns a string */
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/tune_cache.h"
#include "core/error_detail.h"
#include "core/hash.h"
#include "core/log.h"

#define MAGIC "convoy-tune-cache 1"
#define ENV_TAG "environment\t"
#define SUM_TAG "checksum\t"
#define MAX_FILE_BYTES ((size_t)64 << 20)
#define MAX_MS 1e9

typedef struct entry {
    char *key;
    char *choice;
    double ms;
} entry;

/* Sorted by key (strcmp), so lookups are binary searches and the file is
 * written in a stable order. */
typedef struct table {
    entry *items;
    size_t count;
    size_t capacity;
} table;

struct convoy__tune_cache {
    /* Guards entries and write_warned; held across the whole file rewrite so
     * that two threads of one process never interleave their writes. */
    pthread_mutex_t lock;
    char *path;
    char *lock_path;
    char *environment;
    convoy__logger logger;
    table entries;
    int write_warned;
    /* The path names something other than a regular file: it is never
     * read or written again, and entries live in memory only. */
    int left_alone;
};

/* Temp file names must be unique across every cache object of the process
 * (two objects may share a path), hence one process-wide counter. */
static atomic_ulong temp_counter;

/* ---- small helpers ------------------------------------------------------ */

/* What is at path, judged without following a final symbolic link and
 * without opening it (opening a FIFO blocks, opening a device may act):
 * 1 a regular file, 0 nothing there (or lstat failed: the open that follows
 * reports why), -1 anything else, with *what naming it. */
static int path_kind(const char *path, const char **what)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (S_ISREG(st.st_mode))
        return 1;
    *what = S_ISDIR(st.st_mode)    ? "a directory"
            : S_ISLNK(st.st_mode)  ? "a symbolic link"
            : S_ISFIFO(st.st_mode) ? "a FIFO"
            : S_ISCHR(st.st_mode)  ? "a character device"
            : S_ISBLK(st.st_mode)  ? "a block device"
            : S_ISSOCK(st.st_mode) ? "a socket"
                                   : "of an unknown type";
    return -1;
}

/* Keys and choices are non-empty, bounded and free of control characters:
 * tabs and newlines would break the line format. */
static int valid_field(const char *s, size_t max)
{
    size_t size = strlen(s);
    for (size_t i = 0; i < size; ++i) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    }
    return size > 0 && size <= max;
}

/* Writes ms as "<whole>.<6 digits>" with integer arithmetic: printf("%f")
 * would follow LC_NUMERIC and could write a decimal comma. */
static void format_ms(double ms, char *out, size_t size)
{
    unsigned long long ns = (unsigned long long)llround(ms * 1e6);
    snprintf(out, size, "%llu.%06llu", ns / 1000000ull, ns % 1000000ull);
}

/* Reads "digits[.digits]" (no sign, no exponent, no locale) up to MAX_MS. */
static int parse_ms(const char *s, double *out)
{
    double value = 0.0, scale = 1.0;
    int digits = 0, decimals = -1; /* -1: no point seen yet */
    for (; *s; ++s) {
        if (*s == '.' && decimals < 0 && digits > 0) {
            decimals = 0;
            continue;
        }
        if (*s < '0' || *s > '9' || ++digits > 16)
            return 0;
        value = value * 10.0 + (*s - '0');
        if (decimals >= 0) {
            decimals++;
            scale *= 10.0;
        }
    }
    if (digits == 0 || decimals == 0 || value / scale > MAX_MS)
        return 0;
    *out = value / scale;
    return 1;
}

/* ---- the in-memory table ---------------------------------------------- */

/* Index of key, or of where it would be inserted (then *found is 0). */
static size_t table_find(const table *t, const char *key, int *found)
{
    size_t lo = 0, hi = t->count;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(t->items[mid].key, key);
        if (cmp == 0) {
            *found = 1;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Inserts or replaces; returns 0, or -1 when memory fails (t unchanged). */
static int table_put(table *t, const char *key, const char *choice, double ms)
{
    int found;
    size_t at = table_find(t, key, &found);
    char *choice_copy = strdup(choice);
    if (!choice_copy)
        return -1;
    if (found) {
        free(t->items[at].choice);
        t->items[at].choice = choice_copy;
        t->items[at].ms = ms;
        return 0;
    }
    if (t->count == t->capacity) {
        size_t capacity = t->capacity ? t->capacity * 2 : 32;
        entry *items = realloc(t->items, capacity * sizeof *items);
        if (!items) {
            free(choice_copy);
            return -1;
        }
        t->items = items;
        t->capacity = capacity;
    }
    char *key_copy = strdup(key);
    if (!key_copy) {
        free(choice_copy);
        return -1;
    }
    memmove(t->items + at + 1, t->items + at, (t->count - at) * sizeof *t->items);
    t->items[at] = (entry){key_copy, choice_copy, ms};
    t->count++;
    return 0;
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->count; ++i) {
        free(t->items[i].key);
        free(t->items[i].choice);
    }
    free(t->items);
    *t = (table){NULL, 0, 0};
}

/* ---- reading and parsing ------------------------------------------------ */

/* Reads the whole file, NUL-terminated. Returns 0, or an errno value
 * (ENOENT: missing; EFBIG: over MAX_FILE_BYTES; EISDIR/EINVAL: not a
 * regular file). The caller checked the path's type; the flags keep a file
 * swapped in since from blocking the open (a FIFO) or being followed (a
 * symbolic link), and fstat checks again what was opened. */
static int read_file(const char *path, char **data, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return errno == ELOOP ? EINVAL : errno;
    struct stat st;
    char *buffer = NULL;
    size_t used = 0;
    int err = 0;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (!S_ISREG(st.st_mode))
        err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    else if ((uint64_t)st.st_size > MAX_FILE_BYTES)
        err = EFBIG;
    else if (!(buffer = malloc((size_t)st.st_size + 1)))
        err = ENOMEM;
    /* Writers replace the file by rename, never in place, so st_size holds;
     * a hand edit racing this read leaves it short and fails the checksum. */
    while (!err && used < (size_t)st.st_size) {
        ssize_t got = read(fd, buffer + used, (size_t)st.st_size - used);
        if (got > 0)
            used += (size_t)got;
        else if (got == 0)
            break;
        else if (errno != EINTR)
            err = errno;
    }
    close(fd);
    if (err) {
        free(buffer);
        return err;
    }
    buffer[used] = '\0';
    *data = buffer;
    *size = used;
    return 0;
}

/* Parses a whole file (NUL-terminated, split in place) into *out, which must
 * be empty. Returns 0, or -1 with *out empty and why saying what was wrong:
 * "corrupt (...)" or "written for a different environment (...)". */
static int parse(char *data, size_t size, const char *environment, table *out, char *why,
                 size_t why_size)
{
    const size_t magic_size = strlen(MAGIC), sum_size = strlen(SUM_TAG);
    const size_t env_size = strlen(ENV_TAG);
    /* The checksum line is the last one; everything before it is summed. */
    size_t last = size ? size - 1 : 0;
    while (last > 0 && data[last - 1] != '\n')
        --last;
    const char *problem = NULL;
    if (size == 0)
        problem = "empty file";
    else if (size <= magic_size || memcmp(data, MAGIC, magic_size) || data[magic_size] != '\n')
        problem = "bad header, not a convoy tune cache version 1 file";
    else if (data[size - 1] != '\n')
        problem = "truncated: no final newline";
    else if (size - 1 - last != sum_size + 16 || memcmp(data + last, SUM_TAG, sum_size))
        problem = "truncated: no checksum line at the end";
    else if (strspn(data + last + sum_size, "0123456789abcdef") != 16)
        problem = "bad checksum line";
    else if (strtoull(data + last + sum_size, NULL, 16) != convoy__fnv1a(data, last))
        problem = "checksum mismatch";
    if (problem) {
        snprintf(why, why_size, "corrupt (%s)", problem);
        return -1;
    }

    /* The lines between the header and the checksum: the environment, then
     * the entries. The checksum matched, so damage here means a bad writer. */
    data[last] = '\0';
    char *line = data + magic_size + 1;
    for (int number = 2; *line; ++number) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        double ms;
        if (!nl) {
            problem = "stray NUL byte";
        } else if (number == 2) {
            if (strncmp(line, ENV_TAG, env_size) != 0) {
                problem = "missing environment line";
            } else if (strcmp(line + env_size, environment) != 0) {
                snprintf(why, why_size,
                         "written for a different environment (file: \"%.300s\", this run: "
                         "\"%.300s\")",
                         line + env_size, environment);
                return -1;
            }
        } else if (!tab2) {
            problem = "expected key, choice and milliseconds separated by tabs";
        } else {
            *tab1 = *tab2 = '\0';
            if (!valid_field(line, CONVOY__TUNE_CACHE_MAX_KEY))
                problem = "bad key";
            else if (!valid_field(tab1 + 1, CONVOY__TUNE_CACHE_MAX_CHOICE))
                problem = "bad choice";
            else if (!parse_ms(tab2 + 1, &ms))
                problem = "bad number";
            else if (table_put(out, line, tab1 + 1, ms) != 0)
                problem = "out of memory";
        }
        if (problem) {
            table_free(out);
            snprintf(why, why_size, "corrupt (line %d: %s)", number, problem);
            return -1;
        }
        line = nl + 1;
    }
    return 0;
}

/* Reads and parses the file at the cache's path. Returns 1 with *out filled,
 * 0 when there is no file, -1 when it was ignored (then message says why),
 * -2 when the path names something other than a regular file, which must be
 * left alone (message says what it is). */
static int load(const convoy__tune_cache *c, table *out, char *message, size_t message_size)
{
    char *data = NULL, text[128], why[768];
    size_t size = 0;
    const char *what = NULL;
    if (path_kind(c->path, &what) < 0) {
        snprintf(message, message_size, "%s is %s, not a regular file", c->path, what);
        return -2;
    }
    int err = read_file(c->path, &data, &size);
    if (err == EINVAL || err == EISDIR) {
        snprintf(message, message_size, "%s is not a regular file", c->path);
        return -2;
    }
    if (err == ENOENT || err == ENOTDIR)
        return 0;
    if (err) {
        snprintf(message, message_size, "tune cache %s ignored: cannot be read (%s)", c->path,
                 err == EFBIG ? "larger than 64 MiB" : strerror_r(err, text, sizeof text));
        return -1;
    }
    int parsed = parse(data, size, c->environment, out, why, sizeof why);
    free(data);
    if (parsed != 0) {
        snprintf(message, message_size, "tune cache %s ignored: %s", c->path, why);
        return -1;
    }
    return 1;
}

/* ---- writing ------------------------------------------------------------ */

/* The whole file text, checksum included; NULL when memory fails. */
static char *serialize(const convoy__tune_cache *c, size_t *size)
{
    size_t capacity = strlen(MAGIC) + strlen(ENV_TAG) + strlen(c->environment) + 64;
    for (size_t i = 0; i < c->entries.count; ++i)
        capacity += strlen(c->entries.items[i].key) + strlen(c->entries.items[i].choice) + 32;
    char *text = malloc(capacity);
    if (!text)
        return NULL;
    size_t used = (size_t)snprintf(text, capacity, "%s\n%s%s\n", MAGIC, ENV_TAG, c->environment);
    for (size_t i = 0; i < c->entries.count; ++i) {
        char ms[32];
        format_ms(c->entries.items[i].ms, ms, sizeof ms);
        used += (size_t)snprintf(text + used, capacity - used, "%s\t%s\t%s\n",
                                 c->entries.items[i].key, c->entries.items[i].choice, ms);
    }
    used += (size_t)snprintf(text + used, capacity - used, "%s%016llx\n", SUM_TAG,
                             (unsigned long long)convoy__fnv1a(text, used));
    *size = used;
    return text;
}

static int write_all(int fd, const char *data, size_t size)
{
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Writes data to a temp file beside the cache, syncs it and renames it over
 * the cache, so readers see the old file or the new one, never a mix.
 * Returns 0, or -1 with why filled and no temp file left behind. */
static int replace_file(const convoy__tune_cache *c, const char *data, size_t size, char *why,
                        size_t why_size)
{
    size_t tmp_size = strlen(c->path) + 64;
    char *tmp = malloc(tmp_size);
    if (!tmp) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    snprintf(tmp, tmp_size, "%s.tmp.%ld.%lu", c->path, (long)getpid(),
             atomic_fetch_add(&temp_counter, 1));
    char text[128];
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(why, why_size, "cannot create %s (%s)", tmp, strerror_r(errno, text, sizeof text));
        free(tmp);
        return -1;
    }
    const char *step = NULL, *what = NULL;
    if (write_all(fd, data, size) != 0)
        step = "write";
    else if (fsync(fd) != 0)
        step = "fsync";
    int err = errno;
    if (close(fd) != 0 && !step) {
        step = "close";
        err = errno;
    }
    /* rename() would replace whatever is at the path, a device node or a
     * FIFO as much as a file: look once more right before it. */
    if (!step && path_kind(c->path, &what) < 0) {
        snprintf(why, why_size, "%s is %s, not a regular file; left alone", c->path, what);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (!step && rename(tmp, c->path) != 0) {
        step = "rename";
        err = errno;
    }
    if (step) {
        snprintf(why, why_size, "%s of %s failed (%s)", step, tmp,
                 strerror_r(err, text, sizeof text));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    /* Make the rename itself durable; a failure here loses at most the
     * newest entries after a crash, so it is not reported. */
    char *dir = strdup(c->path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir ? 1 : 0] = '\0';
        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return 0;
}

/* Merges the file's current entries (written by other processes since we
 * loaded) into memory, then rewrites it. Called with c->lock held. Entries
 * on disk win, except the one this store is recording. */
static int rewrite(convoy__tune_cache *c, const char *stored_key, char *why, size_t why_size)
{
    /* Other processes writing the same path take the same advisory lock, so
     * the read-merge-rename below is not raced. Without the lock file (for
     * example a read-only directory) the rename still keeps the file whole. */
    int lock_fd =
        open(c->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY, 0644);
    struct stat lock_st;
    if (lock_fd >= 0 && (fstat(lock_fd, &lock_st) != 0 || !S_ISREG(lock_st.st_mode))) {
        close(lock_fd); /* not a file of ours: do without the lock */
        lock_fd = -1;
    }
    if (lock_fd >= 0) {
        while (flock(lock_fd, LOCK_EX) != 0 && errno == EINTR)
            continue;
    }
    table disk = {NULL, 0, 0};
    char ignored[1024];
    int loaded = load(c, &disk, ignored, sizeof ignored);
    if (loaded == -2) {
        /* Something else took the file's place since open: keep off it. */
        c->left_alone = 1;
        snprintf(why, why_size, "%s; left alone", ignored);
        if (lock_fd >= 0)
            close(lock_fd);
        return -1;
    }
    if (loaded < 0)
        convoy__log_to(&c->logger, CONVOY_LOG_DEBUG, "%s; overwriting it", ignored);
    int merge_failed = 0;
    for (size_t i = 0; i < disk.count && !merge_failed; ++i) {
        entry *e = &disk.items[i];
        if (strcmp(e->key, stored_key) != 0)
            merge_failed = table_put(&c->entries, e->key, e->choice, e->ms);
    }
    table_free(&disk);
    int result = -1;
    size_t size = 0;
    char *text = merge_failed ? NULL : serialize(c, &size);
    if (!text)
        snprintf(why, why_size, "out of memory");
    else
        result = replace_file(c, text, size, why, why_size);
    free(text);
    if (lock_fd >= 0)
        close(lock_fd); /* releases the flock */
    return result;
}

/* ---- the API ------------------------------------------------------------- */

convoy_status convoy__tune_cache_open(const char *path, const char *environment, convoy_log_fn log,
                                      void *log_user_data, convoy__tune_cache **out)
{
    if (!out || !path || !*path)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "tune cache: %s",
                             !out ? "out is NULL" : "the path is empty");
    if (!environment)
        environment = "";
    convoy__tune_cache *c = calloc(1, sizeof *c);
    if (!c)
        goto fail_alloc;
    size_t path_size = strlen(path);
    c->path = strdup(path);
    c->lock_path = malloc(path_size + sizeof ".lock");
    c->environment = strdup(environment);
    if (!c->path || !c->lock_path || !c->environment)
        goto fail_strings;
    snprintf(c->lock_path, path_size + sizeof ".lock", "%s.lock", path);
    /* The environment is written on one line, so control characters (a
     * newline in a device name) become spaces, here and in every compare. */
    for (char *p = c->environment; *p; ++p) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    }
    c->logger.fn = log;
    c->logger.user_data = log_user_data;
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        goto fail_strings;

    char message[1024];
    int loaded = load(c, &c->entries, message, sizeof message);
    c->left_alone = loaded == -2;
    if (c->left_alone)
        convoy__log_to(&c->logger, CONVOY_LOG_WARNING,
                       "tune cache ignored: %s; it is neither read nor written, and tuned "
                       "choices are kept for this run only",
                       message);
    else if (loaded < 0)
        convoy__log_to(&c->logger, CONVOY_LOG_WARNING, "%s", message);
    else if (loaded > 0)
        convoy__log_to(&c->logger, CONVOY_LOG_DEBUG, "tune cache %s: loaded %zu entries", c->path,
                       c->entries.count);
    *out = c;
    return CONVOY_OK;

fail_strings:
    free(c->path);
    free(c->lock_path);
    free(c->environment);
    free(c);
fail_alloc:
    return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "tune cache: out of host memory opening %s",
                         path);
}

int convoy__tune_cache_lookup(convoy__tune_cache *c, const char *key, char *choice,
                              size_t choice_size, double *ms)
{
    if (!c || !key || (!choice && choice_size))
        return 0;
    pthread_mutex_lock(&c->lock);
    int found;
    size_t at = table_find(&c->entries, key, &found);
    const entry *e = found ? &c->entries.items[at] : NULL;
    if (e && choice && strlen(e->choice) >= choice_size)
        found = 0;
    if (found && choice)
        memcpy(choice, e->choice, strlen(e->choice) + 1);
    if (found && ms)
        *ms = e->ms;
    pthread_mutex_unlock(&c->lock);
    return found;
}

convoy_status convoy__tune_cache_store(convoy__tune_cache *c, const char *key, const char *choice,
                                       double ms)
{
    if (!c || !key || !choice)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "tune cache store: NULL argument");
    if (!valid_field(key, CONVOY__TUNE_CACHE_MAX_KEY))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "tune cache store: the key is empty, longer than %d bytes or holds a "
                             "control character (tab, newline)",
                             CONVOY__TUNE_CACHE_MAX_KEY);
    if (!valid_field(choice, CONVOY__TUNE_CACHE_MAX_CHOICE))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "tune cache store: the choice is empty, longer than %d bytes or "
                             "holds a control character (tab, newline)",
                             CONVOY__TUNE_CACHE_MAX_CHOICE);
    if (!(ms >= 0.0 && ms <= MAX_MS))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "tune cache store: time %g ms is not in [0, 1e9]", ms);

    pthread_mutex_lock(&c->lock);
    if (table_put(&c->entries, key, choice, ms) != 0) {
        pthread_mutex_unlock(&c->lock);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "tune cache store: out of host memory");
    }
    char why[1024];
    /* A path left alone was warned about at open and is never touched. */
    if (!c->left_alone && rewrite(c, key, why, sizeof why) != 0) {
        convoy__log_to(&c->logger, c->write_warned ? CONVOY_LOG_DEBUG : CONVOY_LOG_WARNING,
                       "tune cache %s not saved: %s; tuned choices are kept for this run only",
                       c->path, why);
        c->write_warned = 1;
    }
    pthread_mutex_unlock(&c->lock);
    return CONVOY_OK;
}

void convoy__tune_cache_close(convoy__tune_cache *c)
{
    if (!c)
        return;
    table_free(&c->entries);
    pthread_mutex_destroy(&c->lock);
    free(c->path);
    free(c->lock_path);
    free(c->environment);
    free(c);
}
