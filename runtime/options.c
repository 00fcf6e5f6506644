/* Runtime options: the defaults (convoy_options_init), the CONVOY_*
 * environment overrides (convoy_options_from_env), the checks
 * convoy_runtime_create makes on a filled-in struct, and the one place where
 * algorithm names become the planner's implementation bits.
 *
 * A malformed variable is reported, never guessed at, so a typo in a
 * benchmark script does not silently change what runs. Numbers are digits
 * only: strtol/strtoull would accept leading blanks and a sign, and
 * strtoull turns " -5" into 2^64 - 5. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "convoy.h"
#include "runtime/algorithm_names.h"
#include "runtime/options_int.h"
#include "core/error_detail.h"

/* ---- algorithm names ----------------------------------------------------------- */

/* The next name of a comma-separated list: skips separators and blanks,
 * sets *len, returns NULL at the end. */
static const char *next_name(const char *p, size_t *len)
{
    while (*p == ',' || *p == ' ' || *p == '\t')
        ++p;
    if (!*p)
        return NULL;
    *len = strcspn(p, ", \t");
    return p;
}

int convoy__name_listed(const char *list, const char *name)
{
    size_t len = 0;
    for (const char *p = list ? next_name(list, &len) : NULL; p; p = next_name(p + len, &len)) {
        if (strlen(name) == len && strncasecmp(p, name, len) == 0)
            return 1;
    }
    return 0;
}

/* The first name of the list that no backend of this build knows, or NULL
 * when every name is known; *len gets its length. A candidate ("cudnn:FFT",
 * "onednn:plain") counts as known when its algorithm (before the colon) is:
 * which candidates exist depends on the convolution. */
static const char *unknown_name(const char *names, size_t *len)
{
    for (const char *p = names ? next_name(names, len) : NULL; p; p = next_name(p + *len, len)) {
        const char *colon = memchr(p, ':', *len);
        size_t algorithm = colon ? (size_t)(colon - p) : *len;
        if (!convoy__algorithm_name_known(p, algorithm))
            return p;
    }
    return NULL;
}

/* ---- parsing ------------------------------------------------------------------ */

/* Digits only, at least one, value <= max. */
static int parse_count(const char *text, unsigned long long max, unsigned long long *out)
{
    unsigned long long value = 0;
    const char *p = text;
    if (*p < '0' || *p > '9')
        return 0;
    for (; *p >= '0' && *p <= '9'; ++p) {
        unsigned digit = (unsigned)(*p - '0');
        if (value > (max - digit) / 10)
            return 0;
        value = value * 10 + digit;
    }
    if (*p != '\0')
        return 0;
    *out = value;
    return 1;
}

static int parse_int(const char *text, int max, int *out)
{
    unsigned long long value;
    if (!parse_count(text, (unsigned long long)max, &value))
        return 0;
    *out = (int)value;
    return 1;
}

/* Digits with an optional K, M or G suffix (powers of 1024). */
static int parse_bytes(const char *text, size_t *out)
{
    size_t len = strlen(text);
    unsigned long long scale = 1;
    switch (len ? text[len - 1] : '\0') {
    case 'k':
    case 'K':
        scale = 1ull << 10;
        break;
    case 'm':
    case 'M':
        scale = 1ull << 20;
        break;
    case 'g':
    case 'G':
        scale = 1ull << 30;
        break;
    }
    char digits[32];
    size_t n = scale == 1 ? len : len - 1;
    if (n >= sizeof digits)
        return 0;
    memcpy(digits, text, n);
    digits[n] = '\0';
    unsigned long long value;
    if (!parse_count(digits, (unsigned long long)SIZE_MAX / scale, &value))
        return 0;
    *out = (size_t)(value * scale);
    return 1;
}

#define BYTES_SPELLING "digits with an optional K, M or G suffix (powers of 1024)"

/* ---- the environment ------------------------------------------------------------ */

/* Walks the variables in field order and keeps the first failure: its
 * status and its message are the ones returned, whatever fails later. */
typedef struct env_reader {
    const char *call;
    convoy_status first;
} env_reader;

/* The variable's value, or NULL when it is unset or empty. */
static const char *variable(const char *name)
{
    const char *value = getenv(name);
    return value && *value ? value : NULL;
}

static void bad_variable(env_reader *r, const char *name, const char *value, const char *expected)
{
    if (r->first != CONVOY_OK)
        return;
    r->first =
        convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: environment variable %s='%s' is not %s",
                      r->call, name, value, expected);
}

static void read_int(env_reader *r, const char *name, int max, int *field)
{
    const char *v = variable(name);
    if (v && !parse_int(v, max, field)) {
        char expected[64];
        snprintf(expected, sizeof expected, "an integer 0..%d (digits only)", max);
        bad_variable(r, name, v, expected);
    }
}

static void read_bytes(env_reader *r, const char *name, size_t *field)
{
    const char *v = variable(name);
    if (v && !parse_bytes(v, field))
        bad_variable(r, name, v, "a byte count: " BYTES_SPELLING);
}

static void read_flag(env_reader *r, const char *name, int *field)
{
    const char *v = variable(name);
    if (!v)
        return;
    if (!strcmp(v, "0") || !strcmp(v, "1"))
        *field = v[0] == '1';
    else
        bad_variable(r, name, v, "0|1");
}

static void read_names(env_reader *r, const char *name, const char **field)
{
    const char *v = variable(name);
    if (!v)
        return;
    size_t len = 0;
    const char *unknown = unknown_name(v, &len);
    if (!unknown) {
        *field = v;
        return;
    }
    if (r->first != CONVOY_OK)
        return;
    r->first = convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: environment variable %s='%s' names the unknown algorithm "
                             "'%.*s'; expected comma-separated names from %s",
                             r->call, name, v, (int)len, unknown, convoy__algorithm_names_all());
}

void convoy__log_stderr(void *user_data, convoy_log_level level, const char *message)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[4096];
    int n = snprintf(line, sizeof line, "convoy %s: %s\n", names[level & 3], message);
    if (n > 0)
        fwrite(line, 1, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, stderr);
}

convoy_status convoy_options_from_env(convoy_options *o)
{
    if (!o)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "options_from_env: options is NULL");
    env_reader r = {"options_from_env", CONVOY_OK};
    const char *v;
    if ((v = variable("CONVOY_DEVICE"))) {
        if (!strcmp(v, "auto"))
            o->device = CONVOY_DEVICE_AUTO;
        else if (!strcmp(v, "cpu"))
            o->device = CONVOY_DEVICE_CPU;
        else if (!strcmp(v, "cuda"))
            o->device = CONVOY_DEVICE_CUDA;
        else
            bad_variable(&r, "CONVOY_DEVICE", v, "auto|cpu|cuda");
    }
    read_int(&r, "CONVOY_DEVICE_INDEX", 1024, &o->device_index);
    read_int(&r, "CONVOY_STREAMS", CONVOY__MAX_STREAMS, &o->streams);
    read_int(&r, "CONVOY_BLAS_THREADS", 1024, &o->blas_threads);
    if ((v = variable("CONVOY_ALGO"))) {
        if (!strcmp(v, "heuristic"))
            o->algo = CONVOY_ALGO_HEURISTIC;
        else if (!strcmp(v, "time_once"))
            o->algo = CONVOY_ALGO_TIME_ONCE;
        else if (!strcmp(v, "time_on_shape_change"))
            o->algo = CONVOY_ALGO_TIME_ON_SHAPE_CHANGE;
        else
            bad_variable(&r, "CONVOY_ALGO", v, "heuristic|time_once|time_on_shape_change");
    }
    read_names(&r, "CONVOY_EXCLUDE", &o->exclude);
    read_names(&r, "CONVOY_REQUIRE", &o->require);
    read_flag(&r, "CONVOY_DETERMINISTIC", &o->deterministic);
    read_flag(&r, "CONVOY_EXACT_ONLY", &o->exact_only);
    read_bytes(&r, "CONVOY_MEMORY_LIMIT", &o->memory_limit);
    read_bytes(&r, "CONVOY_WORKSPACE_LIMIT", &o->workspace_limit);
    if ((v = variable("CONVOY_TUNE_CACHE")))
        o->tune_cache = v;
    if ((v = variable("CONVOY_TRACE")))
        o->trace_path = v;
    read_flag(&r, "CONVOY_PROFILE", &o->profile);
    if ((v = variable("CONVOY_LOG"))) {
        if (!strcmp(v, "stderr")) {
            if (!o->log_fn)
                o->log_fn = convoy__log_stderr;
        } else {
            bad_variable(&r, "CONVOY_LOG", v, "stderr (empty or unset: no log)");
        }
    }
    return r.first;
}

convoy_status convoy__options_test_hook(convoy_options *o)
{
    if (o->test_fail_alloc != 0)
        return CONVOY_OK;
    const char *v = variable("CONVOY_TEST_FAIL_ALLOC");
    unsigned long long n;
    if (!v)
        return CONVOY_OK;
    if (!parse_count(v, 1ull << 30, &n))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: environment variable CONVOY_TEST_FAIL_ALLOC='%s' "
                             "(a test hook) is not a count 0..%llu (digits only)",
                             v, 1ull << 30);
    o->test_fail_alloc = (long)n;
    return CONVOY_OK;
}

/* ---- defaults and checks ------------------------------------------------------- */

convoy_status convoy_options_init(convoy_options *options)
{
    if (!options)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "options_init: options is NULL");
    memset(options, 0, sizeof *options);
    options->device = CONVOY_DEVICE_AUTO;
    options->device_index = 0;
    options->streams = -1;
    options->blas_threads = 0;
    options->algo = CONVOY_ALGO_HEURISTIC;
    return CONVOY_OK;
}

static convoy_status check_names(const char *field, const char *names)
{
    size_t len = 0;
    const char *unknown = unknown_name(names, &len);
    if (!unknown)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "runtime_create: options.%s ('%s') names the unknown algorithm '%.*s'; "
                         "expected comma-separated names from %s",
                         field, names, (int)len, unknown, convoy__algorithm_names_all());
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
    convoy_status status;
    if ((status = check_names("exclude", o->exclude)) != CONVOY_OK ||
        (status = check_names("require", o->require)) != CONVOY_OK)
        return status;
    if (o->test_fail_alloc < 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "runtime_create: options.test_fail_alloc is %ld, expected >= 0",
                             o->test_fail_alloc);
    return CONVOY_OK;
}
