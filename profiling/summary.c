/* The profile summary (profiling/summary.h), folded in as tasks arrive.
 *
 * Most figures are running sums. The one that is not is the transfer line:
 * the share of transfer time during which some compute task ran needs the
 * union of the compute intervals, and tasks arrive in the order they
 * retire, not the order they ran. So the compute and transfer intervals are
 * kept until the overlap before a watermark is final (no task still to come
 * starts before it, which the scheduler knows from its oldest unretired
 * task), and then swept once: the intervals wholly before the watermark go.
 * A sweep runs only when the kept intervals have doubled since the last one,
 * so its cost per task stays logarithmic, and what is kept stays near the
 * number of tasks in flight. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiling/summary.h"

#define KIND_COLUMN_MAX 40
#define TRACK_COLUMN_MAX 40
#define SETTLE_MIN 256
#define PATH_PARTS_MAX 16
#define PATH_LABEL_MAX 128
#define PATH_KIND_MAX 48
#define LINE_MAX_BYTES 1024

typedef struct interval {
    double start, end;
} interval;

typedef struct interval_list {
    interval *items;
    size_t count, capacity;
} interval_list;

typedef struct kind_stats {
    char *name;
    size_t count;
    double total_us, max_us;
} kind_stats;

typedef struct track_stats {
    size_t count;
    double busy_us;
} track_stats;

typedef struct path_part {
    char kind[PATH_KIND_MAX];
    double us;
} path_part;

struct convoy__summary {
    kind_stats *kinds; /* few, so searched linearly */
    size_t kind_count, kind_capacity;
    track_stats *tracks; /* index: track id */
    size_t track_capacity;
    int any;
    double first_start, last_end;

    /* The transfer line: every transfer's time counts at once; the hidden
     * part is final up to `settled`, and the intervals that may still
     * overlap something after it are kept. */
    interval_list compute, transfer;
    double settled;
    size_t settle_at;
    size_t transfers;
    double transfer_us, hidden_us;

    /* The longest chain reported so far. */
    double path_us;
    int path_tasks;
    char path_from[PATH_LABEL_MAX];
    char path_to[PATH_LABEL_MAX];
    path_part parts[PATH_PARTS_MAX];
    int part_count;
};

convoy__summary *convoy__summary_create(void)
{
    convoy__summary *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->settled = -INFINITY;
    s->settle_at = SETTLE_MIN;
    return s;
}

void convoy__summary_destroy(convoy__summary *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->kind_count; ++i)
        free(s->kinds[i].name);
    free(s->kinds);
    free(s->tracks);
    free(s->compute.items);
    free(s->transfer.items);
    free(s);
}

/* NaN and negatives count as 0; the cap keeps every row one line. */
static double duration(double start_us, double end_us)
{
    double us = end_us - start_us;
    return us > 0.0 ? (us < 1e12 ? us : 1e12) : 0.0;
}

static kind_stats *find_kind(convoy__summary *s, const char *name)
{
    for (size_t i = 0; i < s->kind_count; ++i) {
        if (strcmp(s->kinds[i].name, name) == 0)
            return &s->kinds[i];
    }
    if (s->kind_count == s->kind_capacity) {
        size_t grown = s->kind_capacity ? s->kind_capacity * 2 : 8;
        kind_stats *kinds = realloc(s->kinds, grown * sizeof *kinds);
        if (!kinds)
            return NULL;
        s->kinds = kinds;
        s->kind_capacity = grown;
    }
    char *copy = strdup(name);
    if (!copy)
        return NULL;
    s->kinds[s->kind_count] = (kind_stats){copy, 0, 0.0, 0.0};
    return &s->kinds[s->kind_count++];
}

static track_stats *find_track(convoy__summary *s, int track)
{
    size_t index = track > 0 ? (size_t)track : 0;
    if (index >= s->track_capacity) {
        size_t grown = s->track_capacity ? s->track_capacity : 8;
        while (grown <= index)
            grown *= 2;
        track_stats *tracks = realloc(s->tracks, grown * sizeof *tracks);
        if (!tracks)
            return NULL;
        memset(tracks + s->track_capacity, 0, (grown - s->track_capacity) * sizeof *tracks);
        s->tracks = tracks;
        s->track_capacity = grown;
    }
    return &s->tracks[index];
}

static int keep_interval(interval_list *list, double start, double end)
{
    if (list->count == list->capacity) {
        size_t grown = list->capacity ? list->capacity * 2 : 64;
        interval *items = realloc(list->items, grown * sizeof *items);
        if (!items)
            return 0;
        list->items = items;
        list->capacity = grown;
    }
    list->items[list->count++] = (interval){start, end};
    return 1;
}

static void keep_path(convoy__summary *s, const convoy__trace_task *task)
{
    s->path_us = task->path_us;
    s->path_tasks = task->path_tasks;
    snprintf(s->path_from, sizeof s->path_from, "%s",
             task->path_from ? task->path_from : (task->name ? task->name : ""));
    snprintf(s->path_to, sizeof s->path_to, "%s", task->name ? task->name : "");
    s->part_count = 0;
    for (int i = 0; i < task->path_part_count && s->part_count < PATH_PARTS_MAX; ++i) {
        path_part *part = &s->parts[s->part_count++];
        snprintf(part->kind, sizeof part->kind, "%s",
                 task->path_parts[i].kind ? task->path_parts[i].kind : "task");
        part->us = task->path_parts[i].us;
    }
}

int convoy__summary_add(convoy__summary *s, int track, const convoy__trace_task *task)
{
    int kept = 1;
    double us = duration(task->start_us, task->end_us);
    kind_stats *k = find_kind(s, task->kind ? task->kind : "task");
    if (k) {
        k->count++;
        k->total_us += us;
        k->max_us = us > k->max_us ? us : k->max_us;
    }
    track_stats *t = find_track(s, track);
    if (t) {
        t->count++;
        t->busy_us += us;
    }
    kept = k && t;
    if (isfinite(task->start_us)) {
        double end = task->start_us + us;
        if (!s->any || task->start_us < s->first_start)
            s->first_start = task->start_us;
        if (!s->any || end > s->last_end)
            s->last_end = end;
        s->any = 1;
        /* What lies before the settled point is final; only the rest may
         * still overlap tasks to come. */
        double start = task->start_us > s->settled ? task->start_us : s->settled;
        if (task->role == CONVOY__TRACE_TRANSFER) {
            s->transfers++;
            s->transfer_us += us;
            if (end > start)
                kept &= keep_interval(&s->transfer, start, end);
        } else if (task->role == CONVOY__TRACE_COMPUTE && end > start) {
            kept &= keep_interval(&s->compute, start, end);
        }
    }
    if (task->path_us > s->path_us)
        keep_path(s, task);
    return kept;
}

/* ---- transfer overlap ----------------------------------------------------- */

static int by_start(const void *a, const void *b)
{
    const interval *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Transfer time in (lo, hi] during which some compute interval ran. scratch
 * holds compute->count intervals. */
static double hidden_between(const interval_list *compute, const interval_list *transfer, double lo,
                             double hi, interval *scratch)
{
    size_t n = 0;
    for (size_t i = 0; i < compute->count; ++i) {
        double a = compute->items[i].start > lo ? compute->items[i].start : lo;
        double b = compute->items[i].end < hi ? compute->items[i].end : hi;
        if (b > a)
            scratch[n++] = (interval){a, b};
    }
    qsort(scratch, n, sizeof *scratch, by_start);
    size_t merged = 0;
    for (size_t i = 0; i < n; ++i) {
        if (merged && scratch[i].start <= scratch[merged - 1].end) {
            if (scratch[i].end > scratch[merged - 1].end)
                scratch[merged - 1].end = scratch[i].end;
        } else {
            scratch[merged++] = scratch[i];
        }
    }
    double hidden = 0.0;
    for (size_t i = 0; i < transfer->count; ++i) {
        double a = transfer->items[i].start > lo ? transfer->items[i].start : lo;
        double b = transfer->items[i].end < hi ? transfer->items[i].end : hi;
        if (b <= a)
            continue;
        /* The first merged interval that ends after a. */
        size_t low = 0, high = merged;
        while (low < high) {
            size_t mid = (low + high) / 2;
            if (scratch[mid].end <= a)
                low = mid + 1;
            else
                high = mid;
        }
        for (size_t j = low; j < merged && scratch[j].start < b; ++j) {
            double from = scratch[j].start > a ? scratch[j].start : a;
            double to = scratch[j].end < b ? scratch[j].end : b;
            hidden += to > from ? to - from : 0.0;
        }
    }
    return hidden;
}

static void drop_before(interval_list *list, double watermark)
{
    size_t kept = 0;
    for (size_t i = 0; i < list->count; ++i) {
        if (list->items[i].end > watermark)
            list->items[kept++] = list->items[i];
    }
    list->count = kept;
}

void convoy__summary_settle(convoy__summary *s, double watermark_us)
{
    if (!(watermark_us > s->settled) || s->compute.count + s->transfer.count < s->settle_at)
        return;
    interval *scratch = malloc((s->compute.count ? s->compute.count : 1) * sizeof *scratch);
    if (!scratch)
        return; /* try again at the next call; nothing is lost */
    s->hidden_us += hidden_between(&s->compute, &s->transfer, s->settled, watermark_us, scratch);
    free(scratch);
    drop_before(&s->compute, watermark_us);
    drop_before(&s->transfer, watermark_us);
    s->settled = watermark_us;
    size_t left = s->compute.count + s->transfer.count;
    s->settle_at = 2 * left > SETTLE_MIN ? 2 * left : SETTLE_MIN;
}

/* ---- the text ------------------------------------------------------------- */

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

static int column_width(const char *text, int width, int max)
{
    int n = (int)strlen(text);
    return n > width ? (n > max ? max : n) : width;
}

/* The per-kind table, most total time first. Returns 0 once a line did not
 * fit. */
static int format_kinds(const convoy__summary *s, char *buffer, size_t size, size_t *used)
{
    size_t kinds = s->kind_count;
    kind_stats *sorted = malloc(kinds * sizeof *sorted);
    if (!sorted)
        return 0;
    int width = 4;
    kind_stats all = {"(all)", 0, 0.0, 0.0};
    /* A handful of kinds, so insertion sort. */
    for (size_t i = 0; i < kinds; ++i) {
        kind_stats key = s->kinds[i];
        width = column_width(key.name, width, KIND_COLUMN_MAX);
        size_t j = i;
        for (; j > 0 && sorted[j - 1].total_us < key.total_us; --j)
            sorted[j] = sorted[j - 1];
        sorted[j] = key;
        all.count += key.count;
        all.total_us += key.total_us;
        all.max_us = key.max_us > all.max_us ? key.max_us : all.max_us;
    }
    char line[KIND_COLUMN_MAX + 128];
    snprintf(line, sizeof line, "%-*s %8s %12s %12s %12s\n", width, "kind", "count", "total ms",
             "mean us", "max us");
    int fits = append_line(buffer, size, used, line);
    for (size_t i = 0; i <= kinds && fits; ++i) {
        const kind_stats *k = i < kinds ? &sorted[i] : &all;
        if (i == kinds && kinds == 1)
            break;
        snprintf(line, sizeof line, "%-*.*s %8zu %12.3f %12.3f %12.3f\n", width, width, k->name,
                 k->count, k->total_us / 1000.0, k->count ? k->total_us / (double)k->count : 0.0,
                 k->max_us);
        fits = append_line(buffer, size, used, line);
    }
    free(sorted);
    return fits;
}

static const char *track_name(size_t id, const char *const *names, size_t count)
{
    return id >= 1 && id <= count && names[id - 1] ? names[id - 1] : "untracked";
}

/* Streams in track order (compute streams, then upload and download). */
static int format_tracks(const convoy__summary *s, const char *const *names, size_t count,
                         double span, char *buffer, size_t size, size_t *used)
{
    int width = 6;
    for (size_t i = 0; i < s->track_capacity; ++i) {
        if (s->tracks[i].count)
            width = column_width(track_name(i, names, count), width, TRACK_COLUMN_MAX);
    }
    char line[TRACK_COLUMN_MAX + 128];
    snprintf(line, sizeof line, "%-*s %8s %12s %8s\n", width, "stream", "tasks", "busy ms", "busy");
    int fits = append_line(buffer, size, used, line);
    for (size_t pass = 0; pass < 2; ++pass) {
        /* Named tracks first, then the untracked ones (id 0). */
        for (size_t i = pass ? 0 : 1; i < (pass ? 1 : s->track_capacity) && fits; ++i) {
            const track_stats *t = i < s->track_capacity ? &s->tracks[i] : NULL;
            if (!t || !t->count)
                continue;
            snprintf(line, sizeof line, "%-*.*s %8zu %12.3f %7.1f%%\n", width, width,
                     track_name(i, names, count), t->count, t->busy_us / 1000.0,
                     span > 0.0 ? 100.0 * t->busy_us / span : 0.0);
            fits = append_line(buffer, size, used, line);
        }
    }
    return fits;
}

static int by_us_descending(const void *a, const void *b)
{
    const path_part *x = a, *y = b;
    return x->us > y->us ? -1 : x->us < y->us;
}

static void put_text(char *line, size_t size, size_t *n, const char *format, double value,
                     const char *text)
{
    if (*n >= size)
        return;
    int written = text ? snprintf(line + *n, size - *n, format, text, value)
                       : snprintf(line + *n, size - *n, format, value);
    if (written > 0)
        *n += (size_t)written;
}

static int format_path(const convoy__summary *s, double span, char *buffer, size_t size,
                       size_t *used)
{
    path_part parts[PATH_PARTS_MAX];
    memcpy(parts, s->parts, (size_t)s->part_count * sizeof *parts);
    qsort(parts, (size_t)s->part_count, sizeof *parts, by_us_descending);
    char line[LINE_MAX_BYTES];
    int n = snprintf(line, sizeof line,
                     "critical path %.3f ms (%.1f%% of the run), %d task%s from '%s' to '%s'",
                     s->path_us / 1000.0, span > 0.0 ? 100.0 * s->path_us / span : 0.0,
                     s->path_tasks, s->path_tasks == 1 ? "" : "s", s->path_from, s->path_to);
    size_t length = n > 0 ? (size_t)n : 0;
    /* Room is kept for the newline whatever the parts need. */
    size_t room = sizeof line - 2;
    for (int i = 0; i < s->part_count; ++i) {
        put_text(line, room, &length, i ? ", %s %.3f ms" : ": %s %.3f ms", parts[i].us / 1000.0,
                 parts[i].kind);
    }
    if (length > room)
        length = room;
    line[length] = '\n';
    line[length + 1] = '\0';
    return append_line(buffer, size, used, line);
}

void convoy__summary_format(const convoy__summary *s, const char *const *track_names,
                            size_t track_count, char *buffer, size_t size)
{
    if (!buffer || size == 0)
        return;
    buffer[0] = '\0';
    size_t used = 0;
    if (!s || !s->kind_count) {
        append_line(buffer, size, &used, "no tasks recorded\n");
        return;
    }
    double span = s->any ? s->last_end - s->first_start : 0.0;
    if (!format_kinds(s, buffer, size, &used) ||
        !format_tracks(s, track_names, track_count, span, buffer, size, &used))
        return;
    char line[LINE_MAX_BYTES];
    snprintf(line, sizeof line, "run %.3f ms from the first start to the last end\n",
             span / 1000.0);
    if (!append_line(buffer, size, &used, line))
        return;
    if (s->transfers) {
        interval *scratch = malloc((s->compute.count ? s->compute.count : 1) * sizeof *scratch);
        if (scratch) {
            double hidden = s->hidden_us + hidden_between(&s->compute, &s->transfer, s->settled,
                                                          INFINITY, scratch);
            free(scratch);
            snprintf(line, sizeof line,
                     "transfers %.3f ms in %zu task%s, %.1f%% hidden behind "
                     "compute\n",
                     s->transfer_us / 1000.0, s->transfers, s->transfers == 1 ? "" : "s",
                     s->transfer_us > 0.0 ? 100.0 * hidden / s->transfer_us : 0.0);
        } else {
            snprintf(line, sizeof line, "transfers %.3f ms in %zu task%s\n",
                     s->transfer_us / 1000.0, s->transfers, s->transfers == 1 ? "" : "s");
        }
        if (!append_line(buffer, size, &used, line))
            return;
    }
    if (s->path_us > 0.0)
        (void)format_path(s, span, buffer, size, &used);
}

size_t convoy__summary_footprint(const convoy__summary *s)
{
    if (!s)
        return 0;
    size_t bytes = sizeof *s + s->kind_capacity * sizeof *s->kinds +
                   s->track_capacity * sizeof *s->tracks +
                   (s->compute.capacity + s->transfer.capacity) * sizeof(interval);
    for (size_t i = 0; i < s->kind_count; ++i)
        bytes += strlen(s->kinds[i].name) + 1;
    return bytes;
}
