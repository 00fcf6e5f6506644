/* Parser for the convolution layer suite (bench/conv_suite.txt) and the shape,
 * flop, timing and random-data helpers shared by the demo and the benchmarks.
 * Malformed lines are reported with their line number, never skipped. */
#define _POSIX_C_SOURCE 200809L

#include "suite.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SUITE_FIELDS 11

static int fail(char *err, size_t err_size, int line_no, const char *fmt, ...)
{
    if (err && err_size) {
        int used = snprintf(err, err_size, "line %d: ", line_no);
        if (used < 0 || (size_t)used >= err_size)
            return -1;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + used, err_size - (size_t)used, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A decimal integer in [min, max] that spans the whole token. */
static int parse_int(const char *tok, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(tok, &end, 10);
    if (errno || end == tok || *end != '\0' || v < min || v > max)
        return 0;
    *out = (int64_t)v;
    return 1;
}

/* "56x56" with exactly nd values, each in [min, max]. */
static int parse_extents(const char *tok, int nd, int64_t min, int64_t max, int64_t out[3])
{
    char buf[64];
    if (strlen(tok) >= sizeof buf)
        return 0;
    strcpy(buf, tok);
    int count = 0;
    char *save = NULL;
    for (char *part = strtok_r(buf, "x", &save); part; part = strtok_r(NULL, "x", &save)) {
        if (count == nd || !parse_int(part, min, max, &out[count]))
            return 0;
        ++count;
    }
    /* strtok_r skips empty parts, so "3xx3" and "x3x3" must be rejected here. */
    if (strstr(tok, "xx") || tok[0] == 'x' || tok[strlen(tok) - 1] == 'x')
        return 0;
    return count == nd;
}

int suite_parse_line(const char *text, int line_no, suite_layer *out, char *err, size_t err_size)
{
    char buf[512];
    size_t len = strcspn(text, "#\r\n");
    if (len >= sizeof buf)
        return fail(err, err_size, line_no, "line longer than %zu characters", sizeof buf - 1);
    memcpy(buf, text, len);
    buf[len] = '\0';

    char *tok[SUITE_FIELDS + 1];
    int ntok = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (ntok == SUITE_FIELDS + 1)
            break;
        tok[ntok++] = t;
    }
    if (ntok == 0)
        return 0;
    if (ntok != SUITE_FIELDS)
        return fail(err, err_size, line_no,
                    "expected %d fields (name nd N C spatial_in K kernel stride pad dilation "
                    "groups), got %s%d",
                    SUITE_FIELDS, ntok > SUITE_FIELDS ? "more than " : "",
                    ntok > SUITE_FIELDS ? SUITE_FIELDS : ntok);

    suite_layer l;
    memset(&l, 0, sizeof l);
    l.line = line_no;
    if (strlen(tok[0]) >= SUITE_NAME_MAX)
        return fail(err, err_size, line_no, "name '%s' is longer than %d characters", tok[0],
                    SUITE_NAME_MAX - 1);
    strcpy(l.name, tok[0]);

    int64_t nd = 0;
    if (!parse_int(tok[1], 2, 3, &nd))
        return fail(err, err_size, line_no, "nd '%s' is not 2 or 3", tok[1]);
    l.nd = (int)nd;
    const int64_t big = (int64_t)1 << 30;
    if (!parse_int(tok[2], 1, big, &l.n))
        return fail(err, err_size, line_no, "N '%s' is not a positive integer", tok[2]);
    if (!parse_int(tok[3], 1, big, &l.c))
        return fail(err, err_size, line_no, "C '%s' is not a positive integer", tok[3]);
    if (!parse_extents(tok[4], l.nd, 1, big, l.in))
        return fail(err, err_size, line_no, "spatial_in '%s' is not %d positive extents", tok[4],
                    l.nd);
    if (!parse_int(tok[5], 1, big, &l.k))
        return fail(err, err_size, line_no, "K '%s' is not a positive integer", tok[5]);
    if (!parse_extents(tok[6], l.nd, 1, big, l.kernel))
        return fail(err, err_size, line_no, "kernel '%s' is not %d positive extents", tok[6], l.nd);
    if (!parse_extents(tok[7], l.nd, 1, big, l.stride))
        return fail(err, err_size, line_no, "stride '%s' is not %d positive extents", tok[7], l.nd);
    if (!parse_extents(tok[8], l.nd, 0, big, l.pad))
        return fail(err, err_size, line_no, "pad '%s' is not %d extents >= 0", tok[8], l.nd);
    if (!parse_extents(tok[9], l.nd, 1, big, l.dilation))
        return fail(err, err_size, line_no, "dilation '%s' is not %d positive extents", tok[9],
                    l.nd);
    if (!parse_int(tok[10], 1, big, &l.groups))
        return fail(err, err_size, line_no, "groups '%s' is not a positive integer", tok[10]);
    if (l.c % l.groups || l.k % l.groups)
        return fail(err, err_size, line_no, "groups %lld does not divide C %lld and K %lld",
                    (long long)l.groups, (long long)l.c, (long long)l.k);
    for (int i = 0; i < l.nd; ++i) {
        int64_t dk = (l.kernel[i] - 1) * l.dilation[i] + 1;
        if (l.in[i] + 2 * l.pad[i] < dk)
            return fail(err, err_size, line_no,
                        "axis %d: padded input %lld is smaller than the dilated kernel %lld", i,
                        (long long)(l.in[i] + 2 * l.pad[i]), (long long)dk);
    }
    *out = l;
    return 1;
}

int suite_load(const char *path, suite *out, char *err, size_t err_size)
{
    out->layers = NULL;
    out->count = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    suite s = {NULL, 0};
    size_t cap = 0;
    char line[1024];
    char detail[256];
    int line_no = 0;
    while (fgets(line, sizeof line, f)) {
        ++line_no;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, err_size, "%s:%d: line too long", path, line_no);
            goto fail;
        }
        suite_layer l;
        int r = suite_parse_line(line, line_no, &l, detail, sizeof detail);
        if (r < 0) {
            snprintf(err, err_size, "%s:%s", path, detail);
            goto fail;
        }
        if (r == 0)
            continue;
        if (suite_find(&s, l.name)) {
            snprintf(err, err_size, "%s:line %d: layer name '%s' repeats line %d", path, line_no,
                     l.name, suite_find(&s, l.name)->line);
            goto fail;
        }
        if (s.count == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            suite_layer *grown = realloc(s.layers, ncap * sizeof *grown);
            if (!grown) {
                snprintf(err, err_size, "%s: out of memory", path);
                goto fail;
            }
            s.layers = grown;
            cap = ncap;
        }
        s.layers[s.count++] = l;
    }
    if (ferror(f)) {
        snprintf(err, err_size, "%s: read error", path);
        goto fail;
    }
    if (s.count == 0) {
        snprintf(err, err_size, "%s: no layers", path);
        goto fail;
    }
    fclose(f);
    *out = s;
    return 0;
fail:
    fclose(f);
    free(s.layers);
    return -1;
}

void suite_free(suite *s)
{
    if (!s)
        return;
    free(s->layers);
    s->layers = NULL;
    s->count = 0;
}

const suite_layer *suite_find(const suite *s, const char *name)
{
    for (size_t i = 0; i < s->count; ++i) {
        if (!strcmp(s->layers[i].name, name))
            return &s->layers[i];
    }
    return NULL;
}

void suite_dims(const suite_layer *l, int64_t input[5], int64_t filters[5], int64_t output[5])
{
    input[0] = l->n;
    input[1] = l->c;
    filters[0] = l->k;
    filters[1] = l->c / l->groups;
    output[0] = l->n;
    output[1] = l->k;
    for (int i = 0; i < l->nd; ++i) {
        int64_t dk = (l->kernel[i] - 1) * l->dilation[i] + 1;
        input[2 + i] = l->in[i];
        filters[2 + i] = l->kernel[i];
        output[2 + i] = (l->in[i] + 2 * l->pad[i] - dk) / l->stride[i] + 1;
    }
}

convoy_status suite_params(const suite_layer *l, convoy_conv_params *p)
{
    convoy_status s = convoy_conv_params_init(p, l->nd);
    if (s != CONVOY_OK)
        return s;
    p->border = CONVOY_BORDER_EXPLICIT;
    for (int i = 0; i < l->nd; ++i) {
        p->pad_before[i] = l->pad[i];
        p->pad_after[i] = l->pad[i];
        p->stride[i] = l->stride[i];
        p->dilation[i] = l->dilation[i];
    }
    p->groups = l->groups;
    p->flip = 0;
    return CONVOY_OK;
}

double suite_flops(const suite_layer *l)
{
    int64_t input[5], filters[5], output[5];
    suite_dims(l, input, filters, output);
    double flops = 2.0 * (double)l->n * (double)l->k * (double)(l->c / l->groups);
    for (int i = 0; i < l->nd; ++i)
        flops *= (double)l->kernel[i] * (double)output[2 + i];
    return flops;
}

int64_t suite_numel(int ndim, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i)
        n *= dims[i];
    return n;
}

const char *suite_dims_text(int ndim, const int64_t *dims, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < size; ++i) {
        int n = snprintf(buf + used, size - used, "%s%lld", i ? "x" : "", (long long)dims[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

int suite_target_class(const suite_layer *l)
{
    if (l->groups != 1)
        return 0;
    int all3 = 1, all1 = 1;
    for (int i = 0; i < l->nd; ++i) {
        all3 = all3 && l->kernel[i] == 3;
        all1 = all1 && l->kernel[i] == 1 && l->stride[i] == 1 && l->pad[i] == 0;
    }
    return all3 ? 1 : all1 ? 2 : 0;
}

/* ---- shared helpers --------------------------------------------------- */

void suite_die(const char *program, const char *what, convoy_status status)
{
    fflush(stdout);
    fprintf(stderr, "%s: %s failed: %s: %s\n", program, what, convoy_status_name(status),
            convoy_last_error_message());
    exit(1);
}

double suite_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double suite_median(double *values, size_t count)
{
    if (count == 0)
        return 0.0;
    qsort(values, count, sizeof *values, compare_double);
    if (count % 2)
        return values[count / 2];
    return 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

void suite_fill_random(float *data, size_t count, uint64_t seed)
{
    /* splitmix64: a fixed, portable stream, so every run uploads the same data. */
    uint64_t x = seed;
    for (size_t i = 0; i < count; ++i) {
        x += 0x9e3779b97f4a7c15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        data[i] = (float)((double)(z >> 40) * (2.0 / 16777216.0) - 1.0);
    }
}
