/* The trace (profiling/trace.h): records written to a temp file as they
 * arrive, completed and renamed over the path at close, and folded into the
 * summary. Nothing here may change how tasks run, so a record never fails
 * loudly: what cannot be written is dropped, and close reports a file that
 * could not be completed. */
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

#include "profiling/json_text.h"
#include "profiling/summary.h"
#include "profiling/trace.h"
#include "core/error_detail.h"

#define FILE_BUFFER_BYTES ((size_t)64 << 10)
#define SAMPLER_VALUES_MAX 8
#define SAMPLER_NAME_MAX 32

struct convoy__trace {
    /* One lock guards everything below. Records come from the scheduler as
     * tasks retire (under its lock), so the critical section only formats
     * into the stdio buffer and adds to the summary; the buffer reaches the
     * file every 64 KiB. */
    pthread_mutex_t lock;
    double origin_us;
    char **tracks; /* track id i + 1 is tracks[i] */
    size_t track_count;
    size_t track_capacity;
    convoy__summary *summary;
    uint64_t next_flow;

    /* The file being written; fp NULL when none. */
    FILE *fp;
    char *path;
    char *tmp;
    char *buffer;
    size_t records;
    int untracked_named;

    /* The counter convoy__trace_sample writes. */
    convoy__trace_sampler sampler;
    void *sampler_data;
    char sampler_name[SAMPLER_NAME_MAX];
    int last_count;
    double last_values[SAMPLER_VALUES_MAX];
};

convoy_status convoy__trace_create(double origin_us, convoy__trace **out)
{
    if (!out)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_create: out is NULL");
    convoy__trace *t = calloc(1, sizeof *t);
    if (!t)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "trace_create: out of host memory");
    t->summary = convoy__summary_create();
    if (!t->summary || pthread_mutex_init(&t->lock, NULL) != 0) {
        convoy__summary_destroy(t->summary);
        free(t);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "trace_create: out of host memory");
    }
    t->origin_us = isfinite(origin_us) ? origin_us : 0.0;
    t->last_count = -1;
    *out = t;
    return CONVOY_OK;
}

/* Closes and removes the temp file; called with the lock held or at destroy. */
static void abandon_file(convoy__trace *t)
{
    if (t->fp) {
        fclose(t->fp);
        unlink(t->tmp);
    }
    free(t->buffer);
    free(t->tmp);
    free(t->path);
    t->fp = NULL;
    t->buffer = t->tmp = t->path = NULL;
}

void convoy__trace_destroy(convoy__trace *t)
{
    if (!t)
        return;
    abandon_file(t);
    for (size_t i = 0; i < t->track_count; ++i)
        free(t->tracks[i]);
    free(t->tracks);
    convoy__summary_destroy(t->summary);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ---- records ---------------------------------------------------------------- */

/* Starts one record of the traceEvents array, with the comma before it. */
static void begin_record(convoy__trace *t)
{
    fputs(t->records ? ",\n{" : "{", t->fp);
    t->records++;
}

static void put_metadata(convoy__trace *t, const char *what, int tid, const char *key,
                         const char *text, int number)
{
    begin_record(t);
    fprintf(t->fp, "\"name\":\"%s\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"%s\":", what, tid,
            key);
    if (text)
        convoy__json_put_string(t->fp, text);
    else
        fprintf(t->fp, "%d", number);
    fputs("}}", t->fp);
}

static void put_track_names(convoy__trace *t, int id)
{
    put_metadata(t, "thread_name", id, "name", t->tracks[id - 1], 0);
    put_metadata(t, "thread_sort_index", id, "sort_index", NULL, id);
}

/* The tid of a track id: 0 for an id nobody handed out, which is named
 * "untracked" the first time it is used. Called with the lock held. */
static int tid_of(convoy__trace *t, int track)
{
    if (track >= 1 && (size_t)track <= t->track_count)
        return track;
    if (t->fp && !t->untracked_named) {
        put_metadata(t, "thread_name", 0, "name", "untracked", 0);
        t->untracked_named = 1;
    }
    return 0;
}

static void put_ts(convoy__trace *t, double us)
{
    fputs(",\"ts\":", t->fp);
    convoy__json_put_us(t->fp, us - t->origin_us);
}

static void put_slice(convoy__trace *t, int tid, const char *kind, const char *name, double start,
                      double end, const char *args)
{
    begin_record(t);
    fputs("\"name\":", t->fp);
    convoy__json_put_string(t->fp, name ? name : kind);
    fputs(",\"cat\":", t->fp);
    convoy__json_put_string(t->fp, kind);
    fprintf(t->fp, ",\"ph\":\"X\",\"pid\":1,\"tid\":%d", tid);
    put_ts(t, start);
    fputs(",\"dur\":", t->fp);
    convoy__json_put_us(t->fp, end - start);
    if (args && convoy__json_is_object(args)) {
        fprintf(t->fp, ",\"args\":%s", convoy__json_skip_space(args));
    } else if (args) {
        fputs(",\"args\":{\"args\":", t->fp);
        convoy__json_put_string(t->fp, args);
        fputc('}', t->fp);
    }
    fputc('}', t->fp);
}

/* A point inside [start, end] a nanosecond from one end, so the flow binds
 * to that slice and not to a neighbour that touches it. */
static double inside(double start, double end, int near_end)
{
    double d = end - start;
    double step = d > 0.002 ? 0.001 : (d > 0.0 ? d / 2 : 0.0);
    return near_end ? end - step : start + step;
}

/* One arrow: "s" bound to the slice it leaves, "f" (binding point
 * "enclosing") to the slice it enters. */
static void put_flow(convoy__trace *t, const char *name, int from_tid, double from_us, int to_tid,
                     double to_us)
{
    uint64_t id = ++t->next_flow;
    begin_record(t);
    fprintf(t->fp, "\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"s\",\"id\":%llu,\"pid\":1,\"tid\":%d",
            name, name, (unsigned long long)id, from_tid);
    put_ts(t, from_us);
    fputc('}', t->fp);
    begin_record(t);
    fprintf(t->fp,
            "\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"f\",\"bp\":\"e\",\"id\":%llu,\"pid\":1,"
            "\"tid\":%d",
            name, name, (unsigned long long)id, to_tid);
    put_ts(t, to_us);
    fputc('}', t->fp);
}

/* Called with the lock held and a file open. */
static void put_task(convoy__trace *t, const convoy__trace_task *task)
{
    const char *kind = task->kind ? task->kind : "task";
    int tid = tid_of(t, task->track);
    double start = task->start_us, end = task->end_us > start ? task->end_us : start;
    put_slice(t, tid, kind, task->name, start, end, task->args_json);
    if (task->enqueue_track) {
        int host = tid_of(t, task->enqueue_track);
        double host_end = task->enqueue_end_us > task->enqueue_start_us ? task->enqueue_end_us
                                                                        : task->enqueue_start_us;
        put_slice(t, host, "enqueue", task->name, task->enqueue_start_us, host_end, NULL);
        put_flow(t, "launch", host, inside(task->enqueue_start_us, host_end, 1), tid,
                 inside(start, end, 0));
    }
    for (int i = 0; i < task->input_count; ++i) {
        const convoy__trace_slice *from = &task->inputs[i];
        double from_end = from->end_us > from->start_us ? from->end_us : from->start_us;
        put_flow(t, "dependency", tid_of(t, from->track), inside(from->start_us, from_end, 1), tid,
                 inside(start, end, 0));
    }
}

void convoy__trace_task_done(convoy__trace *t, const convoy__trace_task *task)
{
    if (!t || !task)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->fp)
        put_task(t, task);
    int track = task->track >= 1 && (size_t)task->track <= t->track_count ? task->track : 0;
    (void)convoy__summary_add(t->summary, track, task);
    pthread_mutex_unlock(&t->lock);
}

void convoy__trace_add(convoy__trace *t, int track, const char *kind, const char *name,
                       double start_us, double end_us, const char *args_json)
{
    convoy__trace_task task = {0};
    task.track = track;
    task.kind = kind;
    task.name = name;
    task.start_us = start_us;
    task.end_us = end_us;
    task.args_json = args_json;
    convoy__trace_task_done(t, &task);
}

void convoy__trace_counter(convoy__trace *t, const char *name, double ts_us, int count,
                           const char *const *keys, const double *values)
{
    if (!t || !name || count <= 0)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->fp) {
        begin_record(t);
        fputs("\"name\":", t->fp);
        convoy__json_put_string(t->fp, name);
        fputs(",\"ph\":\"C\",\"pid\":1", t->fp);
        put_ts(t, ts_us);
        fputs(",\"args\":{", t->fp);
        for (int i = 0; i < count; ++i) {
            if (i)
                fputc(',', t->fp);
            convoy__json_put_string(t->fp, keys[i] ? keys[i] : "value");
            fputc(':', t->fp);
            convoy__json_put_number(t->fp, values[i]);
        }
        fputs("}}", t->fp);
    }
    pthread_mutex_unlock(&t->lock);
}

void convoy__trace_set_sampler(convoy__trace *t, const char *name, convoy__trace_sampler fn,
                               void *user_data)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->sampler = fn;
    t->sampler_data = user_data;
    snprintf(t->sampler_name, sizeof t->sampler_name, "%s", name ? name : "counter");
    t->last_count = -1;
    pthread_mutex_unlock(&t->lock);
}

void convoy__trace_sample(convoy__trace *t, double now_us)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    convoy__trace_sampler fn = t->fp ? t->sampler : NULL;
    void *data = t->sampler_data;
    pthread_mutex_unlock(&t->lock);
    if (!fn)
        return;
    const char *keys[SAMPLER_VALUES_MAX] = {NULL};
    double values[SAMPLER_VALUES_MAX] = {0.0};
    int count = fn(data, keys, values, SAMPLER_VALUES_MAX);
    if (count <= 0 || count > SAMPLER_VALUES_MAX)
        return;
    pthread_mutex_lock(&t->lock);
    int changed = count != t->last_count ||
                  memcmp(values, t->last_values, (size_t)count * sizeof *values) != 0;
    if (changed) {
        t->last_count = count;
        memcpy(t->last_values, values, (size_t)count * sizeof *values);
    }
    char name[SAMPLER_NAME_MAX];
    memcpy(name, t->sampler_name, sizeof name);
    pthread_mutex_unlock(&t->lock);
    /* Two samplers racing may write their records in either order; each is
     * a true reading at its own time. */
    if (changed)
        convoy__trace_counter(t, name, now_us, count, keys, values);
}

void convoy__trace_settle(convoy__trace *t, double watermark_us)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    convoy__summary_settle(t->summary, watermark_us);
    pthread_mutex_unlock(&t->lock);
}

int convoy__trace_track(convoy__trace *t, const char *track_name)
{
    if (!t || !track_name)
        return 0;
    pthread_mutex_lock(&t->lock);
    int id = 0;
    for (size_t i = 0; i < t->track_count && !id; ++i) {
        if (strcmp(t->tracks[i], track_name) == 0)
            id = (int)i + 1;
    }
    if (!id) {
        char *copy = strdup(track_name);
        if (copy && t->track_count == t->track_capacity) {
            size_t grown = t->track_capacity ? t->track_capacity * 2 : 8;
            char **tracks = realloc(t->tracks, grown * sizeof *tracks);
            if (tracks) {
                t->tracks = tracks;
                t->track_capacity = grown;
            }
        }
        if (copy && t->track_count < t->track_capacity) {
            t->tracks[t->track_count++] = copy;
            id = (int)t->track_count;
            if (t->fp)
                put_track_names(t, id);
        } else {
            free(copy);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return id;
}

/* ---- the file ----------------------------------------------------------------- */

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

convoy_status convoy__trace_open(convoy__trace *t, const char *path)
{
    if (!t || !path || !*path)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_open: %s",
                             !t ? "trace is NULL" : "the path is NULL or empty");
    const char *what = not_a_file(path);
    if (what)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "trace_open: %s is %s, not a regular file; no trace is written", path,
                             what);
    char reason[128];
    size_t tmp_size = strlen(path) + 64;
    char *tmp = malloc(tmp_size);
    char *copy = strdup(path);
    char *buffer = malloc(FILE_BUFFER_BYTES);
    if (!tmp || !copy || !buffer) {
        free(tmp);
        free(copy);
        free(buffer);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "trace_open: out of host memory");
    }
    snprintf(tmp, tmp_size, "%s.tmp.%ld.%lu", path, (long)getpid(),
             atomic_fetch_add(&temp_counter, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!fp) {
        convoy_status status = convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                             "trace_open: cannot create %s to write %s (%s)", tmp,
                                             path, strerror_r(errno, reason, sizeof reason));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        free(copy);
        free(buffer);
        return status;
    }
    setvbuf(fp, buffer, _IOFBF, FILE_BUFFER_BYTES);
    pthread_mutex_lock(&t->lock);
    if (t->fp) {
        pthread_mutex_unlock(&t->lock);
        fclose(fp);
        unlink(tmp);
        free(tmp);
        free(copy);
        free(buffer);
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_open: %s: a file is open already",
                             path);
    }
    t->fp = fp;
    t->tmp = tmp;
    t->path = copy;
    t->buffer = buffer;
    t->records = 0;
    t->untracked_named = 0;
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", fp);
    put_metadata(t, "process_name", 0, "name", "convoy", 0);
    for (size_t i = 0; i < t->track_count; ++i)
        put_track_names(t, (int)i + 1);
    pthread_mutex_unlock(&t->lock);
    return CONVOY_OK;
}

convoy_status convoy__trace_close(convoy__trace *t)
{
    if (!t)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_close: trace is NULL");
    pthread_mutex_lock(&t->lock);
    FILE *fp = t->fp;
    char *path = t->path, *tmp = t->tmp, *buffer = t->buffer;
    t->fp = NULL;
    t->path = t->tmp = t->buffer = NULL;
    pthread_mutex_unlock(&t->lock);
    if (!fp)
        return CONVOY_OK;
    char reason[128];
    fputs("\n]}\n", fp);
    errno = 0;
    int failed = ferror(fp) || fflush(fp) != 0;
    int err = errno;
    if (fclose(fp) != 0 && !failed) {
        failed = 1;
        err = errno;
    }
    free(buffer);
    convoy_status status = CONVOY_OK;
    const char *what = NULL;
    if (failed) {
        status = convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_close: writing %s failed (%s)",
                               tmp, err ? strerror_r(err, reason, sizeof reason) : "I/O error");
    } else if ((what = not_a_file(path)) != NULL) {
        /* Something took the path's place while the trace was written. */
        status =
            convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                          "trace_close: %s is %s, not a regular file; not written", path, what);
    } else if (rename(tmp, path) != 0) {
        status =
            convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "trace_close: cannot rename %s to %s (%s)",
                          tmp, path, strerror_r(errno, reason, sizeof reason));
    }
    if (status != CONVOY_OK)
        unlink(tmp);
    free(tmp);
    free(path);
    return status;
}

/* ---- the summary and the footprint ------------------------------------------- */

void convoy__trace_summary(convoy__trace *t, char *buffer, size_t size)
{
    if (!buffer || size == 0)
        return;
    buffer[0] = '\0';
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    convoy__summary_format(t->summary, (const char *const *)t->tracks, t->track_count, buffer,
                           size);
    pthread_mutex_unlock(&t->lock);
}

size_t convoy__trace_footprint(convoy__trace *t)
{
    if (!t)
        return 0;
    pthread_mutex_lock(&t->lock);
    size_t bytes = sizeof *t + t->track_capacity * sizeof *t->tracks +
                   convoy__summary_footprint(t->summary) + (t->buffer ? FILE_BUFFER_BYTES : 0);
    for (size_t i = 0; i < t->track_count; ++i)
        bytes += strlen(t->tracks[i]) + 1;
    pthread_mutex_unlock(&t->lock);
    return bytes;
}
