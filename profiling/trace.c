/* Completed-task records kept in chunked storage, written out as a Chrome
 * trace (JSON "X" events, one named track per stream) and folded into the
 * per-kind summary table. Nothing here may change how tasks run, so adding an
 * event never fails loudly: it is dropped when memory runs out. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* the GNU strerror_r that returns a string */
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profiling/trace.h"
#include "core/error_detail.h"

#define EVENTS_PER_CHUNK 1024
#define TEXT_BLOCK_BYTES ((size_t)64 << 10)
#define JSON_MAX_DEPTH 32
#define KIND_COLUMN_MAX 40

typedef struct event {
    double start_us;
    double end_us;
    const char *name; /* in the text blocks; NULL: use the kind */
    const char *args; /* in the text blocks; NULL: none */
    int track;
    int kind; /* index into kinds */
} event;

/* Events live in fixed-size chunks so adding never moves earlier events. */
typedef struct event_chunk {
    struct event_chunk *next;
    size_t count;
    event items[EVENTS_PER_CHUNK];
} event_chunk;

/* Strings are bump-allocated from blocks freed all at once at destroy. */
typedef struct text_block {
    struct text_block *next;
    size_t used;
    size_t capacity;
    char data[];
} text_block;

struct convoy__trace {
    /* One lock guards everything below. Adds come from every stream's
     * completion path, so the critical section only copies and appends. */
    pthread_mutex_t lock;
    event_chunk *first;
    event_chunk *last;
    text_block *text; /* the block being filled; ->next are older ones */
    char **kinds;     /* interned kind names; few, so searched linearly */
    size_t kind_count;
    size_t kind_capacity;
    char **tracks; /* track id i + 1 is tracks[i] */
    size_t track_count;
    size_t track_capacity;
};

/* ---- storage -------------------------------------------------------------- */

static char *store_text(convoy__trace *t, const char *s)
{
    size_t size = strlen(s) + 1;
    if (!t->text || t->text->capacity - t->text->used < size) {
        size_t capacity = size > TEXT_BLOCK_BYTES ? size : TEXT_BLOCK_BYTES;
        text_block *block = malloc(sizeof *block + capacity);
        if (!block)
            return NULL;
        block->next = t->text;
        block->used = 0;
        block->capacity = capacity;
        t->text = block;
    }
    char *copy = t->text->data + t->text->used;
    memcpy(copy, s, size);
    t->text->used += size;
    return copy;
}

/* Appends name to a growable list of strings; returns its index or -1. */
static int list_add(convoy__trace *t, char ***list, size_t *count, size_t *capacity,
                    const char *name)
{
    if (*count == *capacity) {
        size_t grown = *capacity ? *capacity * 2 : 16;
        char **items = realloc(*list, grown * sizeof *items);
        if (!items)
            return -1;
        *list = items;
        *capacity = grown;
    }
    char *copy = store_text(t, name);
    if (!copy)
        return -1;
    (*list)[*count] = copy;
    return (int)(*count)++;
}

static int list_find(char **list, size_t count, const char *name)
{
    for (size_t i = 0; i < count; ++i) {
        if (strcmp(list[i], name) == 0)
            return (int)i;
    }
    return -1;
}

convoy_status convoy__trace_create(convoy__trace **out)
{
    if (!out)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_create: out is NULL");
    convoy__trace *t = calloc(1, sizeof *t);
    if (!t)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "trace_create: out of host memory");
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "trace_create: cannot create a mutex");
    }
    *out = t;
    return CONVOY_OK;
}

void convoy__trace_destroy(convoy__trace *t)
{
    if (!t)
        return;
    while (t->first) {
        event_chunk *next = t->first->next;
        free(t->first);
        t->first = next;
    }
    while (t->text) {
        text_block *next = t->text->next;
        free(t->text);
        t->text = next;
    }
    free(t->kinds);
    free(t->tracks);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

int convoy__trace_track(convoy__trace *t, const char *track_name)
{
    if (!t || !track_name)
        return 0;
    pthread_mutex_lock(&t->lock);
    int index = list_find(t->tracks, t->track_count, track_name);
    if (index < 0)
        index = list_add(t, &t->tracks, &t->track_count, &t->track_capacity, track_name);
    pthread_mutex_unlock(&t->lock);
    return index + 1;
}

void convoy__trace_add(convoy__trace *t, int track, const char *kind, const char *name,
                       double start_us, double end_us, const char *args_json)
{
    if (!t)
        return;
    if (!kind)
        kind = "task";
    pthread_mutex_lock(&t->lock);
    int kind_index = list_find(t->kinds, t->kind_count, kind);
    if (kind_index < 0)
        kind_index = list_add(t, &t->kinds, &t->kind_count, &t->kind_capacity, kind);
    const char *name_copy = name ? store_text(t, name) : NULL;
    const char *args_copy = args_json ? store_text(t, args_json) : NULL;
    if (kind_index < 0 || (name && !name_copy) || (args_json && !args_copy))
        goto drop;
    if (!t->last || t->last->count == EVENTS_PER_CHUNK) {
        event_chunk *chunk = malloc(sizeof *chunk);
        if (!chunk)
            goto drop;
        chunk->next = NULL;
        chunk->count = 0;
        if (t->last)
            t->last->next = chunk;
        else
            t->first = chunk;
        t->last = chunk;
    }
    t->last->items[t->last->count++] =
        (event){start_us, end_us, name_copy, args_copy, track, kind_index};
drop:
    /* Text copied for a dropped event stays in its block until destroy. */
    pthread_mutex_unlock(&t->lock);
}

/* ---- JSON ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p, or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static int utf8_length(const unsigned char *p)
{
    unsigned code, min;
    int n;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0)
        n = 2, code = p[0] & 0x1fu, min = 0x80;
    else if ((p[0] & 0xf0) == 0xe0)
        n = 3, code = p[0] & 0x0fu, min = 0x800;
    else if ((p[0] & 0xf8) == 0xf0)
        n = 4, code = p[0] & 0x07u, min = 0x10000;
    else
        return 0;
    for (int i = 1; i < n; ++i) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the terminator */
            return 0;
        code = (code << 6) | (p[i] & 0x3fu);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        return 0;
    return n;
}

static void put_string(FILE *fp, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', fp);
    while (*p) {
        int n = utf8_length(p);
        if (*p == '"' || *p == '\\') {
            fputc('\\', fp);
            fputc(*p, fp);
        } else if (*p == '\n') {
            fputs("\\n", fp);
        } else if (*p == '\t') {
            fputs("\\t", fp);
        } else if (*p == '\r') {
            fputs("\\r", fp);
        } else if (*p < 0x20) {
            fprintf(fp, "\\u%04x", *p);
        } else if (n == 0) {
            fputs("\\ufffd", fp);
        } else {
            fwrite(p, 1, (size_t)n, fp);
            p += n;
            continue;
        }
        p++;
    }
    fputc('"', fp);
}

/* A microsecond figure with three decimals, by integer arithmetic so that
 * LC_NUMERIC cannot turn the point into a comma and break the JSON. */
static void put_us(FILE *fp, double us)
{
    if (!(us > 0.0))
        us = 0.0;
    if (us > 1e12)
        us = 1e12;
    long long ns = llround(us * 1000.0);
    fprintf(fp, "%lld.%03lld", ns / 1000, ns % 1000);
}

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    for (++p; *p != '"';) {
        const unsigned char ch = (unsigned char)*p;
        if (ch == '\\') {
            if (p[1] == 'u') {
                for (int i = 2; i < 6; ++i) {
                    if (!p[i] || !strchr("0123456789abcdefABCDEF", p[i]))
                        return NULL;
                }
                p += 6;
            } else if (p[1] && strchr("\"\\/bfnrt", p[1])) {
                p += 2;
            } else {
                return NULL;
            }
        } else {
            int n = ch < 0x20 ? 0 : utf8_length((const unsigned char *)p);
            if (n == 0)
                return NULL;
            p += n;
        }
    }
    return p + 1;
}

static const char *json_digits(const char *p)
{
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

static const char *json_number(const char *p)
{
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (!(p = json_digits(p)))
        return NULL;
    if (*p == '.' && !(p = json_digits(p + 1)))
        return NULL;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        p = json_digits(p);
    }
    return p;
}

/* Returns the end of the JSON value at p, or NULL when it is not one. */
static const char *json_value(const char *p, int depth)
{
    p = skip_space(p);
    if (*p == '"')
        return json_string(p);
    if (*p == '{' || *p == '[') {
        const char close = *p == '{' ? '}' : ']';
        if (depth == JSON_MAX_DEPTH)
            return NULL;
        p = skip_space(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if (*p != '"' || !(p = json_string(p)))
                    return NULL;
                p = skip_space(p);
                if (*p++ != ':')
                    return NULL;
            }
            if (!(p = json_value(p, depth + 1)))
                return NULL;
            p = skip_space(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
            p = skip_space(p);
        }
    }
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4))
        return p + 4;
    if (!strncmp(p, "false", 5))
        return p + 5;
    return json_number(p);
}

static int is_json_object(const char *s)
{
    s = skip_space(s);
    if (*s != '{')
        return 0;
    s = json_value(s, 0);
    return s && *skip_space(s) == '\0';
}

/* ---- the Chrome trace file ---------------------------------------------- */

/* Starts one record of the traceEvents array, with the comma before it. */
static void begin_record(FILE *fp, size_t *records)
{
    fputs(*records ? ",\n{" : "{", fp);
    ++*records;
}

static void put_metadata(FILE *fp, size_t *records, const char *what, int tid, const char *key,
                         const char *text, int number)
{
    begin_record(fp, records);
    fprintf(fp, "\"name\":\"%s\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"%s\":", what, tid,
            key);
    if (text)
        put_string(fp, text);
    else
        fprintf(fp, "%d", number);
    fputs("}}", fp);
}

/* Called with t->lock held. */
static void put_trace(const convoy__trace *t, FILE *fp)
{
    double origin = 0.0;
    int untracked = 0, first = 1;
    size_t records = 0;
    for (const event_chunk *c = t->first; c; c = c->next) {
        for (size_t i = 0; i < c->count; ++i) {
            const event *e = &c->items[i];
            if ((first || e->start_us < origin) && isfinite(e->start_us))
                origin = e->start_us, first = 0;
            untracked |= e->track < 1 || (size_t)e->track > t->track_count;
        }
    }
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", fp);
    put_metadata(fp, &records, "process_name", 0, "name", "convoy", 0);
    for (size_t i = 0; i < t->track_count; ++i) {
        put_metadata(fp, &records, "thread_name", (int)i + 1, "name", t->tracks[i], 0);
        put_metadata(fp, &records, "thread_sort_index", (int)i + 1, "sort_index", NULL, (int)i + 1);
    }
    if (untracked)
        put_metadata(fp, &records, "thread_name", 0, "name", "untracked", 0);
    for (const event_chunk *c = t->first; c; c = c->next) {
        for (size_t i = 0; i < c->count; ++i) {
            const event *e = &c->items[i];
            const char *kind = t->kinds[e->kind];
            int tid = e->track < 1 || (size_t)e->track > t->track_count ? 0 : e->track;
            begin_record(fp, &records);
            fputs("\"name\":", fp);
            put_string(fp, e->name ? e->name : kind);
            fputs(",\"cat\":", fp);
            put_string(fp, kind);
            fprintf(fp, ",\"ph\":\"X\",\"pid\":1,\"tid\":%d,\"ts\":", tid);
            put_us(fp, e->start_us - origin);
            fputs(",\"dur\":", fp);
            put_us(fp, e->end_us - e->start_us);
            if (e->args && is_json_object(e->args)) {
                fprintf(fp, ",\"args\":%s", skip_space(e->args));
            } else if (e->args) {
                fputs(",\"args\":{\"args\":", fp);
                put_string(fp, e->args);
                fputc('}', fp);
            }
            fputc('}', fp);
        }
    }
    fputs("\n]}\n", fp);
}

/* Temp file names must be unique across every trace of the process (two
 * runtimes may write the same path), hence one process-wide counter. */
static atomic_ulong temp_counter;

/* NULL when path is absent or a regular file (the only things a trace may
 * replace), else what is there. lstat, so a symbolic link is not followed,
 * and nothing is opened: opening a FIFO blocks. */
static const char *not_a_file(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode))
        return NULL;
    return S_ISDIR(st.st_mode)    ? "a directory"
           : S_ISLNK(st.st_mode)  ? "a symbolic link"
           : S_ISFIFO(st.st_mode) ? "a FIFO"
           : S_ISCHR(st.st_mode)  ? "a character device"
           : S_ISBLK(st.st_mode)  ? "a block device"
           : S_ISSOCK(st.st_mode) ? "a socket"
                                  : "not a regular file";
}

/* The trace goes to a new temp file beside path, which is then renamed over
 * it: a reader never sees half a trace, and only a regular file (or
 * nothing) at path is ever replaced. */
convoy_status convoy__trace_write(convoy__trace *t, const char *path)
{
    if (!t || !path || !*path)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_write: %s",
                             !t ? "trace is NULL" : "the path is NULL or empty");
    const char *what = not_a_file(path);
    if (what)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "trace_write: %s is %s, not a regular file; not written", path, what);
    char reason[128];
    size_t tmp_size = strlen(path) + 64;
    char *tmp = malloc(tmp_size);
    if (!tmp)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "trace_write: out of host memory");
    snprintf(tmp, tmp_size, "%s.tmp.%ld.%lu", path, (long)getpid(),
             atomic_fetch_add(&temp_counter, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!fp) {
        convoy_status status = convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                             "trace_write: cannot create %s to write %s (%s)", tmp,
                                             path, strerror_r(errno, reason, sizeof reason));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return status;
    }
    /* A large buffer, on the heap because this may run on a small stack. */
    char *buffer = malloc(1 << 16);
    if (buffer)
        setvbuf(fp, buffer, _IOFBF, 1 << 16);
    pthread_mutex_lock(&t->lock);
    errno = 0;
    put_trace(t, fp);
    pthread_mutex_unlock(&t->lock);
    int failed = ferror(fp) || fflush(fp) != 0;
    int err = errno;
    if (fclose(fp) != 0 && !failed) {
        failed = 1;
        err = errno;
    }
    free(buffer);
    convoy_status status = CONVOY_OK;
    if (failed) {
        status = convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_write: writing %s failed (%s)",
                               tmp, err ? strerror_r(err, reason, sizeof reason) : "I/O error");
    } else if ((what = not_a_file(path)) != NULL) {
        /* Something took the path's place while the trace was written. */
        status =
            convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                          "trace_write: %s is %s, not a regular file; not written", path, what);
    } else if (rename(tmp, path) != 0) {
        status =
            convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_write: cannot rename %s to %s (%s)",
                          tmp, path, strerror_r(errno, reason, sizeof reason));
    }
    if (status != CONVOY_OK)
        unlink(tmp);
    free(tmp);
    return status;
}

/* ---- the summary ---------------------------------------------------------- */

typedef struct kind_total {
    const char *kind;
    size_t count;
    double total_us;
    double max_us;
} kind_total;

/* Appends line when it fits whole (with the terminator); returns 0 when not. */
static int append_line(char *buffer, size_t size, size_t *used, const char *line)
{
    size_t n = strlen(line);
    if (size - *used <= n)
        return 0;
    memcpy(buffer + *used, line, n + 1);
    *used += n;
    return 1;
}

void convoy__trace_summary(convoy__trace *t, char *buffer, size_t size)
{
    if (!buffer || size == 0)
        return;
    buffer[0] = '\0';
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    size_t kinds = t->kind_count;
    kind_total *totals = kinds ? calloc(kinds, sizeof *totals) : NULL;
    int width = 4;
    for (size_t k = 0; k < kinds && totals; ++k) {
        totals[k].kind = t->kinds[k];
        int n = (int)strlen(t->kinds[k]);
        width = n > width ? (n > KIND_COLUMN_MAX ? KIND_COLUMN_MAX : n) : width;
    }
    for (const event_chunk *c = t->first; c && totals; c = c->next) {
        for (size_t i = 0; i < c->count; ++i) {
            double us = c->items[i].end_us - c->items[i].start_us;
            kind_total *k = &totals[c->items[i].kind];
            /* NaN and negatives count as 0; the cap keeps every row one line. */
            us = us > 0.0 ? (us < 1e12 ? us : 1e12) : 0.0;
            k->count++;
            k->total_us += us;
            k->max_us = us > k->max_us ? us : k->max_us;
        }
    }
    pthread_mutex_unlock(&t->lock);
    if (!kinds || !totals) {
        append_line(buffer, size, &(size_t){0}, kinds ? "" : "no tasks recorded\n");
        free(totals);
        return;
    }
    /* Most total time first: a handful of kinds, so insertion sort. */
    kind_total all = {"(all)", 0, 0.0, 0.0};
    for (size_t i = 0; i < kinds; ++i) {
        kind_total key = totals[i];
        size_t j = i;
        for (; j > 0 && totals[j - 1].total_us < key.total_us; --j)
            totals[j] = totals[j - 1];
        totals[j] = key;
        all.count += key.count;
        all.total_us += key.total_us;
        all.max_us = key.max_us > all.max_us ? key.max_us : all.max_us;
    }
    char line[KIND_COLUMN_MAX + 128];
    size_t used = 0;
    snprintf(line, sizeof line, "%-*s %8s %12s %12s %12s\n", width, "kind", "count", "total ms",
             "mean us", "max us");
    int fits = append_line(buffer, size, &used, line);
    for (size_t i = 0; i <= kinds && fits; ++i) {
        const kind_total *k = i < kinds ? &totals[i] : &all;
        if (i == kinds && kinds == 1)
            break;
        snprintf(line, sizeof line, "%-*.*s %8zu %12.3f %12.3f %12.3f\n", width, width, k->kind,
                 k->count, k->total_us / 1000.0, k->count ? k->total_us / (double)k->count : 0.0,
                 k->max_us);
        fits = append_line(buffer, size, &used, line);
    }
    free(totals);
}
