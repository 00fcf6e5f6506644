/* Runtime options: the defaults and the CONVOY_* environment overrides read
 * by convoy_options_init(). A malformed variable is reported, never guessed
 * at, so a typo in a benchmark script does not silently change what runs. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "convoy.h"
#include "runtime/options_int.h"
#include "core/error_detail.h"

static const struct {
    const char *name;
    unsigned bit;
} impl_names[] = {
    {"cudnn", CONVOY_IMPL_CUDNN},
    {"gemm", CONVOY_IMPL_GEMM},
    {"1x1", CONVOY_IMPL_1X1},
    {"direct", CONVOY_IMPL_DIRECT},
};

void convoy__impl_names(unsigned bits, char *buffer, size_t size)
{
    size_t used = 0;
    buffer[0] = '\0';
    for (size_t i = 0; i < sizeof impl_names / sizeof impl_names[0]; ++i) {
        if (!(bits & impl_names[i].bit))
            continue;
        const char *name = impl_names[i].name;
        size_t need = strlen(name) + (used ? 1 : 0);
        if (used + need + 1 > size)
            break;
        if (used)
            buffer[used++] = ',';
        memcpy(buffer + used, name, strlen(name) + 1);
        used += strlen(name);
    }
    if (!used && size > 4)
        memcpy(buffer, "none", 5);
}

const char *convoy__impl_name(unsigned bit)
{
    for (size_t i = 0; i < sizeof impl_names / sizeof impl_names[0]; ++i) {
        if (impl_names[i].bit == bit)
            return impl_names[i].name;
    }
    return "unknown";
}

/* Parses "cudnn,gemm" into CONVOY_IMPL_* bits; -1 on an unknown name. */
static long parse_impl_list(const char *text)
{
    unsigned bits = 0;
    const char *p = text;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            ++p;
        if (!*p)
            break;
        size_t len = strcspn(p, ", \t");
        size_t i = 0;
        for (; i < sizeof impl_names / sizeof impl_names[0]; ++i) {
            if (strlen(impl_names[i].name) == len && strncasecmp(p, impl_names[i].name, len) == 0)
                break;
        }
        if (i == sizeof impl_names / sizeof impl_names[0])
            return -1;
        bits |= impl_names[i].bit;
        p += len;
    }
    return (long)bits;
}

static int parse_long(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || value < min || value > max)
        return 0;
    *out = value;
    return 1;
}

/* Byte counts accept a K, M or G suffix (powers of 1024). */
static int parse_bytes(const char *text, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || text[0] == '-')
        return 0;
    unsigned long long scale = 1;
    if (*end == 'k' || *end == 'K')
        scale = 1ull << 10;
    else if (*end == 'm' || *end == 'M')
        scale = 1ull << 20;
    else if (*end == 'g' || *end == 'G')
        scale = 1ull << 30;
    if (scale != 1)
        ++end;
    if ((*end == 'b' || *end == 'B') && end[1] == '\0')
        ++end;
    if (*end != '\0' || value > (unsigned long long)SIZE_MAX / scale)
        return 0;
    *out = (size_t)(value * scale);
    return 1;
}

static int parse_flag(const char *text, int *out)
{
    if (!strcmp(text, "1") || !strcasecmp(text, "on") || !strcasecmp(text, "yes") ||
        !strcasecmp(text, "true")) {
        *out = 1;
        return 1;
    }
    if (!strcmp(text, "0") || !strcasecmp(text, "off") || !strcasecmp(text, "no") ||
        !strcasecmp(text, "false") || text[0] == '\0') {
        *out = 0;
        return 1;
    }
    return 0;
}

static convoy_status bad_variable(const char *name, const char *value, const char *expected)
{
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "options_init: environment variable %s='%s' is not %s", name, value,
                         expected);
}

void convoy__options_defaults(convoy_options *o)
{
    memset(o, 0, sizeof *o);
    o->device = CONVOY_DEVICE_AUTO;
    o->device_index = 0;
    o->streams = -1;
    o->blas_threads = 0;
    o->algo = CONVOY_ALGO_HEURISTIC;
}

/* Applies one variable; returns CONVOY_OK or the first error. */
static convoy_status apply_environment(convoy_options *o)
{
    const char *v;
    long n;
    int flag;
    convoy_status first = CONVOY_OK;
#define CONVOY__KEEP_FIRST(call)                                                                   \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (first == CONVOY_OK)                                                                    \
            first = s_;                                                                            \
    } while (0)

    if ((v = getenv("CONVOY_DEVICE")) && *v) {
        if (!strcasecmp(v, "auto"))
            o->device = CONVOY_DEVICE_AUTO;
        else if (!strcasecmp(v, "cpu"))
            o->device = CONVOY_DEVICE_CPU;
        else if (!strcasecmp(v, "cuda") || !strcasecmp(v, "gpu"))
            o->device = CONVOY_DEVICE_CUDA;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_DEVICE", v, "auto, cpu or cuda"));
    }
    if ((v = getenv("CONVOY_DEVICE_INDEX")) && *v) {
        if (parse_long(v, 0, 1024, &n))
            o->device_index = (int)n;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_DEVICE_INDEX", v, "an integer 0..1024"));
    }
    if ((v = getenv("CONVOY_STREAMS")) && *v) {
        if (parse_long(v, 0, CONVOY__MAX_STREAMS, &n))
            o->streams = (int)n;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_STREAMS", v, "an integer 0..64"));
    }
    if ((v = getenv("CONVOY_BLAS_THREADS")) && *v) {
        if (parse_long(v, 0, 1024, &n))
            o->blas_threads = (int)n;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_BLAS_THREADS", v, "an integer 0..1024"));
    }
    if ((v = getenv("CONVOY_ALGO")) && *v) {
        if (!strcasecmp(v, "heuristic"))
            o->algo = CONVOY_ALGO_HEURISTIC;
        else if (!strcasecmp(v, "time_once"))
            o->algo = CONVOY_ALGO_TIME_ONCE;
        else if (!strcasecmp(v, "time_on_shape_change"))
            o->algo = CONVOY_ALGO_TIME_ON_SHAPE_CHANGE;
        else
            CONVOY__KEEP_FIRST(
                bad_variable("CONVOY_ALGO", v, "heuristic, time_once or time_on_shape_change"));
    }
    if ((v = getenv("CONVOY_EXCLUDE"))) {
        long bits = parse_impl_list(v);
        if (bits >= 0)
            o->exclude = (unsigned)bits;
        else
            CONVOY__KEEP_FIRST(
                bad_variable("CONVOY_EXCLUDE", v, "a comma list of cudnn, gemm, 1x1, direct"));
    }
    if ((v = getenv("CONVOY_REQUIRE"))) {
        long bits = parse_impl_list(v);
        if (bits >= 0)
            o->require = (unsigned)bits;
        else
            CONVOY__KEEP_FIRST(
                bad_variable("CONVOY_REQUIRE", v, "a comma list of cudnn, gemm, 1x1, direct"));
    }
    if ((v = getenv("CONVOY_DETERMINISTIC"))) {
        if (parse_flag(v, &flag))
            o->deterministic = flag;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_DETERMINISTIC", v, "0 or 1"));
    }
    if ((v = getenv("CONVOY_MEMORY_LIMIT")) && *v) {
        if (!parse_bytes(v, &o->memory_limit))
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_MEMORY_LIMIT", v, "a byte count"));
    }
    if ((v = getenv("CONVOY_WORKSPACE_LIMIT")) && *v) {
        if (!parse_bytes(v, &o->workspace_limit))
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_WORKSPACE_LIMIT", v, "a byte count"));
    }
    if ((v = getenv("CONVOY_TUNE_CACHE")) && *v)
        o->tune_cache = v;
    if ((v = getenv("CONVOY_TRACE")) && *v)
        o->trace_path = v;
    if ((v = getenv("CONVOY_PROFILE"))) {
        if (parse_flag(v, &flag))
            o->profile = flag;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_PROFILE", v, "0 or 1"));
    }
    if ((v = getenv("CONVOY_TEST_FAIL_ALLOC")) && *v) {
        if (parse_long(v, 0, 1L << 30, &n))
            o->test_fail_alloc = n;
        else
            CONVOY__KEEP_FIRST(bad_variable("CONVOY_TEST_FAIL_ALLOC", v, "a count >= 0"));
    }
#undef CONVOY__KEEP_FIRST
    return first;
}

convoy_status convoy_options_init(convoy_options *options)
{
    if (!options)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "options_init: options is NULL");
    convoy__options_defaults(options);
    return apply_environment(options);
}

convoy_status convoy__options_check(const convoy_options *o)
{
    if (o->device != CONVOY_DEVICE_AUTO && o->device != CONVOY_DEVICE_CPU &&
        o->device != CONVOY_DEVICE_CUDA)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.device is %d, expected 0..2", (int)o->device);
    if (o->device_index < 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.device_index is %d, expected >= 0",
                             o->device_index);
    if (o->streams < -1 || o->streams > CONVOY__MAX_STREAMS)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.streams is %d, expected -1..%d", o->streams,
                             CONVOY__MAX_STREAMS);
    if (o->blas_threads < 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.blas_threads is %d, expected >= 0",
                             o->blas_threads);
    if ((int)o->algo < 0 || o->algo > CONVOY_ALGO_TIME_ON_SHAPE_CHANGE)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.algo is %d, expected 0..2", (int)o->algo);
    if ((o->exclude | o->require) & ~CONVOY_IMPL_ALL)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.exclude/require has unknown bits 0x%x",
                             (o->exclude | o->require) & ~CONVOY_IMPL_ALL);
    if (o->test_fail_alloc < 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.test_fail_alloc is %ld, expected >= 0",
                             o->test_fail_alloc);
    return CONVOY_OK;
}
