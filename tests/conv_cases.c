/* Shared machinery of the convolution tests: seeded random data, the runtime
 * built from the options the command line gives, and running one convolution direction
 * through the public API (create, upload, conv, download, wait) to compare it
 * with the double-precision reference of conv_reference.c. */
#include "conv_cases.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const case_direction_names[3] = {"forward", "backward_data", "backward_filter"};

const char *const case_operand_names[3][3] = {{"input", "filters", "output"},
                                              {"grad_input", "filters", "grad_output"},
                                              {"input", "grad_filters", "grad_output"}};

/* Value written into a result tensor before a convolution: any element the
 * library fails to write shows up as this. */
#define CASE_SENTINEL (-777.0f)

/* ---- random data --------------------------------------------------------- */

void case_rng_seed(case_rng *rng, uint64_t seed)
{
    rng->state = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
}

/* splitmix64 */
uint64_t case_rng_next(case_rng *rng)
{
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int case_rng_int(case_rng *rng, int lo, int hi)
{
    return lo + (int)(case_rng_next(rng) % (uint64_t)(hi - lo + 1));
}

float case_rng_value(case_rng *rng)
{
    /* A magnitude in [1/64, 1] and a random sign. */
    double u = (double)(case_rng_next(rng) >> 11) / 9007199254740992.0;
    double magnitude = 1.0 / 64.0 + u * (1.0 - 1.0 / 64.0);
    return (float)((case_rng_next(rng) & 1) ? magnitude : -magnitude);
}

void case_fill(case_rng *rng, float *data, int64_t count)
{
    for (int64_t i = 0; i < count; ++i)
        data[i] = case_rng_value(rng);
}

static float *floats(int64_t count)
{
    float *p = malloc((size_t)(count > 0 ? count : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "no memory for %lld floats\n", (long long)count);
        abort();
    }
    return p;
}

float *case_random_floats(case_rng *rng, int64_t count)
{
    float *p = floats(count);
    case_fill(rng, p, count);
    return p;
}

float *case_nan_floats(int64_t count)
{
    float *p = floats(count);
    for (int64_t i = 0; i < count; ++i)
        p[i] = NAN;
    return p;
}

/* ---- runtime ------------------------------------------------------------- */

/* The options of this run: the defaults plus the command line's settings,
 * never the environment, so what the shell exports cannot change a test. */
static convoy_options run_options;
static int run_options_set;

static int parse_bytes(const char *text, size_t *out)
{
    char *end = NULL;
    if (*text < '0' || *text > '9')
        return 0;
    unsigned long long value = strtoull(text, &end, 10);
    unsigned long long scale = *end == 'K' ? 1ull << 10 : *end == 'M' ? 1ull << 20 : 1;
    if (scale != 1)
        ++end;
    if (*end != '\0')
        return 0;
    *out = (size_t)(value * scale);
    return 1;
}

static int configure(const char *program, int argc, char **argv)
{
    convoy_options *o = &run_options;
    if (convoy_options_init(o) != CONVOY_OK)
        return 0;
    /* The reference comparisons hold float32 accumulation to 1e-5; transform-based
     * algorithms (cuDNN's FFT and Winograd) round differently and are tested apart. */
    o->exact_only = 1;
    run_options_set = 1;
    for (int i = 1; i < argc; ++i) {
        const char *arg = argv[i];
        const char *value = strchr(arg, '=');
        int ok = value != NULL;
        if (ok && !strncmp(arg, "device=", 7)) {
            ok = !strcmp(value + 1, "cpu") || !strcmp(value + 1, "cuda");
            o->device = !strcmp(value + 1, "cuda") ? CONVOY_DEVICE_CUDA : CONVOY_DEVICE_CPU;
        } else if (ok && !strncmp(arg, "streams=", 8)) {
            o->streams = atoi(value + 1);
        } else if (ok && !strncmp(arg, "exclude=", 8)) {
            o->exclude = value + 1;
        } else if (ok && !strncmp(arg, "workspace_limit=", 16)) {
            ok = parse_bytes(value + 1, &o->workspace_limit);
        } else if (ok && !strncmp(arg, "exact_only=", 11)) {
            ok = !strcmp(value + 1, "0") || !strcmp(value + 1, "1");
            o->exact_only = value[1] == '1';
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr,
                    "%s: bad argument '%s'; expected device=cpu|cuda, streams=N, "
                    "exclude=NAMES, workspace_limit=N[K|M], exact_only=0|1\n",
                    program, arg);
            return 0;
        }
    }
    return 1;
}

void case_options(convoy_options *options)
{
    if (!run_options_set)
        (void)configure("case_options", 0, NULL);
    *options = run_options;
}

convoy_status case_runtime_create(convoy_runtime **rt)
{
    convoy_options options;
    case_options(&options);
    return convoy_runtime_create(&options, rt);
}

int case_setup(void **state)
{
    convoy_runtime *rt = NULL;
    convoy_status status = case_runtime_create(&rt);
    if (status != CONVOY_OK) {
        fprintf(stderr, "runtime_create failed: %s: %s\n", convoy_status_name(status),
                convoy_last_error_message());
        return -1;
    }
    *state = rt;
    return 0;
}

int case_teardown(void **state)
{
    convoy_runtime_destroy(*state);
    *state = NULL;
    return 0;
}

int case_device_check(const char *program, int argc, char **argv)
{
    if (!configure(program, argc, argv))
        return 1;
    convoy_runtime *rt = NULL;
    convoy_status status = case_runtime_create(&rt);
    if (status == CONVOY_ERR_NO_DEVICE) {
        printf("%s: skipped, no device: %s\n", program, convoy_last_error_message());
        return 77;
    }
    if (status != CONVOY_OK) {
        fprintf(stderr, "%s: cannot create a runtime: %s: %s\n", program,
                convoy_status_name(status), convoy_last_error_message());
        return 1;
    }
    printf("%s: %s\n", program, convoy_runtime_describe(rt));
    convoy_runtime_destroy(rt);
    return 0;
}

/* ---- cases --------------------------------------------------------------- */

static int dims_text(char *buffer, size_t size, const int64_t *dims, int rank)
{
    int used = 0;
    for (int j = 0; j < rank; ++j)
        used +=
            snprintf(buffer + used, size - (size_t)used, j ? "x%lld" : "%lld", (long long)dims[j]);
    return used;
}

static void describe(conv_case *c)
{
    static const char *const borders[4] = {"valid", "full", "half", "explicit"};
    const convoy_conv_params *p = &c->params;
    const int nd = p->spatial_dims;
    char in[64], filt[64], stride[32], dil[32], pads[64] = "";
    dims_text(in, sizeof in, c->in, nd + 2);
    dims_text(filt, sizeof filt, c->filt, p->unshared ? 6 : nd + 2);
    dims_text(stride, sizeof stride, p->stride, nd);
    dims_text(dil, sizeof dil, p->dilation, nd);
    if (p->border == CONVOY_BORDER_EXPLICIT) {
        int used = snprintf(pads, sizeof pads, "(");
        for (int a = 0; a < nd; ++a)
            used += snprintf(pads + used, sizeof pads - (size_t)used, "%s%lld,%lld", a ? " " : "",
                             (long long)p->pad_before[a], (long long)p->pad_after[a]);
        snprintf(pads + used, sizeof pads - (size_t)used, ")");
    }
    snprintf(c->label, sizeof c->label,
             "%dD input %s filters %s border %s%s stride %s dilation %s groups %lld flip %d%s", nd,
             in, filt, (unsigned)p->border < 4 ? borders[p->border] : "?", pads, stride, dil,
             (long long)p->groups, p->flip, p->unshared ? " unshared" : "");
}

convoy_conv_params case_params(int nd, convoy_border border, const int64_t *stride,
                               const int64_t *dilation)
{
    convoy_conv_params p;
    memset(&p, 0, sizeof p);
    if (convoy_conv_params_init(&p, nd) != CONVOY_OK) {
        /* Fill the documented defaults by hand so a broken init shows up
         * in the init test, not as noise everywhere else. */
        p.spatial_dims = nd;
        p.groups = 1;
        p.flip = 1;
        for (int a = 0; a < 3; ++a)
            p.stride[a] = p.dilation[a] = 1;
    }
    p.border = border;
    for (int a = 0; a < nd; ++a) {
        if (stride)
            p.stride[a] = stride[a];
        if (dilation)
            p.dilation[a] = dilation[a];
    }
    return p;
}

void case_set_pads(convoy_conv_params *p, const int64_t *pad_before, const int64_t *pad_after)
{
    p->border = CONVOY_BORDER_EXPLICIT;
    for (int a = 0; a < p->spatial_dims; ++a) {
        p->pad_before[a] = pad_before[a];
        p->pad_after[a] = pad_after ? pad_after[a] : pad_before[a];
    }
}

convoy_conv_params case_listed_params(const listed_case *l)
{
    int64_t stride[3], dilation[3];
    for (int a = 0; a < 3; ++a) {
        stride[a] = l->stride[a] ? l->stride[a] : 1;
        dilation[a] = l->dilation[a] ? l->dilation[a] : 1;
    }
    convoy_conv_params p = case_params(l->nd, l->border, stride, dilation);
    if (l->border == CONVOY_BORDER_EXPLICIT)
        case_set_pads(&p, l->pad_before, l->pad_after);
    p.groups = l->groups;
    return p;
}

int case_init(conv_case *c, const convoy_conv_params *params, const int64_t *input_dims,
              const int64_t *filter_dims)
{
    memset(c, 0, sizeof *c);
    c->params = *params;
    const int nd = params->spatial_dims;
    c->in_rank = c->out_rank = nd + 2;
    c->filt_rank = params->unshared ? 6 : nd + 2;
    memcpy(c->in, input_dims, (size_t)c->in_rank * sizeof *c->in);
    memcpy(c->filt, filter_dims, (size_t)c->filt_rank * sizeof *c->filt);
    describe(c);
    if (!ref_conv_geom(params, input_dims, filter_dims, &c->geom))
        return 0;
    ref_output_dims(&c->geom, c->out);
    return 1;
}

/* Checks convoy_conv_output_dims against the reference formula: the same dims
 * for a valid case, CONVOY_ERR_SHAPE exactly when an output extent is < 1. */
int case_check_output_dims(const conv_case *c, int valid)
{
    int64_t got[6] = {-1, -1, -1, -1, -1, -1};
    convoy_status status = convoy_conv_output_dims(&c->params, c->in, c->filt, got);
    if (!valid) {
        if (status == CONVOY_ERR_SHAPE)
            return 1;
        printf("  FAIL output_dims %s: expected CONVOY_ERR_SHAPE, got %s\n", c->label,
               convoy_status_name(status));
        return 0;
    }
    if (status != CONVOY_OK) {
        printf("  FAIL output_dims %s: %s: %s\n", c->label, convoy_status_name(status),
               convoy_last_error_message());
        return 0;
    }
    for (int j = 0; j < c->out_rank; ++j) {
        if (got[j] != c->out[j]) {
            printf("  FAIL output_dims %s: dim %d is %lld, expected %lld\n", c->label, j,
                   (long long)got[j], (long long)c->out[j]);
            return 0;
        }
    }
    return 1;
}

/* The dims of operand roles (a, b, result) of one direction. */
static void direction_dims(const conv_case *c, convoy_conv_direction dir, const int64_t **dims,
                           int *ranks)
{
    const int64_t *in = c->in, *filt = c->filt, *out = c->out;
    const int64_t *table[3][3] = {{in, filt, out}, {filt, out, in}, {in, out, filt}};
    const int rin = c->in_rank, rf = c->filt_rank, rout = c->out_rank;
    const int rank_table[3][3] = {{rin, rf, rout}, {rf, rout, rin}, {rin, rout, rf}};
    for (int j = 0; j < 3; ++j) {
        dims[j] = table[dir][j];
        ranks[j] = rank_table[dir][j];
    }
}

static int64_t numel(const int64_t *dims, int rank)
{
    int64_t n = 1;
    for (int j = 0; j < rank; ++j)
        n *= dims[j];
    return n;
}

void case_sizes(const conv_case *c, convoy_conv_direction dir, int64_t *na, int64_t *nb,
                int64_t *nresult)
{
    const int64_t *dims[3];
    int ranks[3];
    direction_dims(c, dir, dims, ranks);
    *na = numel(dims[0], ranks[0]);
    *nb = numel(dims[1], ranks[1]);
    *nresult = numel(dims[2], ranks[2]);
}

static convoy_status report(const conv_case *c, convoy_conv_direction dir, const char *step,
                            convoy_status status)
{
    if (status != CONVOY_OK)
        printf("  FAIL %s %s: %s returned %s: %s\n", case_direction_names[dir], c->label, step,
               convoy_status_name(status), convoy_last_error_message());
    return status;
}

convoy_status case_submit(convoy_runtime *rt, const convoy_conv_params *p,
                          convoy_conv_direction dir, convoy_tensor *x, convoy_tensor *w,
                          convoy_tensor *y, convoy_task **task)
{
    switch (dir) {
    case CONVOY_CONV_FORWARD:
        return convoy_conv_forward(rt, p, x, w, y, task);
    case CONVOY_CONV_BACKWARD_DATA:
        return convoy_conv_backward_data(rt, p, w, y, x, task);
    default:
        return convoy_conv_backward_filter(rt, p, x, y, w, task);
    }
}

convoy_status case_run(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir,
                       const float *a, const float *b, float *result)
{
    const int64_t *dims[3];
    int ranks[3];
    direction_dims(c, dir, dims, ranks);
    const int64_t na = numel(dims[0], ranks[0]), nb = numel(dims[1], ranks[1]);
    const int64_t nresult = numel(dims[2], ranks[2]);
    /* Where the forward roles sit among (a, b, result) of each direction. */
    static const int x_of[3] = {0, 2, 0}, w_of[3] = {1, 0, 2}, y_of[3] = {2, 1, 1};
    convoy_tensor *t[3] = {NULL, NULL, NULL};
    convoy_task *conv_task = NULL, *down_task = NULL;
    float *sentinel = malloc((size_t)(nresult > 0 ? nresult : 1) * sizeof *sentinel);
    convoy_status status = sentinel ? CONVOY_OK : CONVOY_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < nresult; ++i)
        sentinel[i] = CASE_SENTINEL;
    for (int j = 0; j < 3 && status == CONVOY_OK; ++j)
        status =
            report(c, dir, "tensor_create", convoy_tensor_create(rt, ranks[j], dims[j], &t[j]));
    if (status == CONVOY_OK)
        status = report(c, dir, "upload", convoy_upload(rt, t[0], a, (size_t)na, NULL));
    if (status == CONVOY_OK)
        status = report(c, dir, "upload", convoy_upload(rt, t[1], b, (size_t)nb, NULL));
    if (status == CONVOY_OK)
        status = report(c, dir, "upload", convoy_upload(rt, t[2], sentinel, (size_t)nresult, NULL));
    if (status == CONVOY_OK)
        status = report(
            c, dir, "conv submit",
            case_submit(rt, &c->params, dir, t[x_of[dir]], t[w_of[dir]], t[y_of[dir]], &conv_task));
    if (status == CONVOY_OK)
        status = report(c, dir, "download",
                        convoy_download(rt, t[2], result, (size_t)nresult, &down_task));
    if (status == CONVOY_OK)
        status = report(c, dir, "conv task", convoy_task_wait(conv_task));
    if (status == CONVOY_OK)
        status = report(c, dir, "download task", convoy_task_wait(down_task));
    convoy_task_release(conv_task);
    convoy_task_release(down_task);
    /* Nothing may still read the host buffers once this returns. */
    convoy_status sync = convoy_runtime_synchronize(rt);
    if (status == CONVOY_OK)
        status = report(c, dir, "runtime_synchronize", sync);
    for (int j = 0; j < 3; ++j)
        convoy_tensor_destroy(t[j]);
    free(sentinel);
    return status;
}

/* The reference result of one direction, same operand roles as case_run. */
static void reference(const conv_case *c, convoy_conv_direction dir, const float *a, const float *b,
                      double *result)
{
    switch (dir) {
    case CONVOY_CONV_FORWARD:
        ref_conv_forward(&c->geom, a, b, result);
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        ref_conv_backward_data(&c->geom, a, b, result);
        break;
    default:
        ref_conv_backward_filter(&c->geom, a, b, result);
        break;
    }
}

int case_compare(const char *label, const float *got, const double *ref, int64_t count, double rtol)
{
    double ref_inf = 0.0, worst = 0.0;
    for (int64_t i = 0; i < count; ++i)
        ref_inf = fmax(ref_inf, fabs(ref[i]));
    const double tol = rtol * fmax(1.0, ref_inf);
    int64_t bad = 0;
    for (int64_t i = 0; i < count; ++i) {
        const double err = fabs((double)got[i] - ref[i]);
        if (err <= tol) /* false for NaN */
            continue;
        if (bad < 5)
            printf("  mismatch %s: index %lld got %.9g ref %.9g (tol %.3g)\n", label, (long long)i,
                   (double)got[i], ref[i], tol);
        worst = isnan(err) ? err : fmax(worst, err);
        ++bad;
    }
    if (bad)
        printf("  FAIL %s: %lld of %lld elements off, worst error %.3g, ||ref||_inf %.3g\n", label,
               (long long)bad, (long long)count, worst, ref_inf);
    return bad == 0;
}

int case_check(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir, uint64_t seed)
{
    return case_check_tolerance(rt, c, dir, seed, 1e-5);
}

int case_check_tolerance(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir,
                         uint64_t seed, double rtol)
{
    int64_t na, nb, nr;
    case_sizes(c, dir, &na, &nb, &nr);
    float *a = malloc((size_t)(na > 0 ? na : 1) * sizeof *a);
    float *b = malloc((size_t)(nb > 0 ? nb : 1) * sizeof *b);
    float *got = malloc((size_t)(nr > 0 ? nr : 1) * sizeof *got);
    double *ref = malloc((size_t)(nr > 0 ? nr : 1) * sizeof *ref);
    int ok = 0;
    if (a && b && got && ref) {
        case_rng rng;
        case_rng_seed(&rng, seed);
        case_fill(&rng, a, na);
        case_fill(&rng, b, nb);
        if (case_run(rt, c, dir, a, b, got) == CONVOY_OK) {
            char label[560];
            snprintf(label, sizeof label, "%s %s", case_direction_names[dir], c->label);
            reference(c, dir, a, b, ref);
            ok = case_compare(label, got, ref, nr, rtol);
        }
    }
    free(a);
    free(b);
    free(got);
    free(ref);
    return ok;
}

const char *case_planned(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir,
                         convoy_conv_plan_info *info)
{
    memset(info, 0, sizeof *info);
    convoy_status status = convoy_conv_explain(rt, &c->params, dir, c->in, c->filt, c->out, info);
    if (status != CONVOY_OK) {
        printf("  explain %s %s: %s: %s\n", case_direction_names[dir], c->label,
               convoy_status_name(status), convoy_last_error_message());
        return "(failed)";
    }
    return info->implementation;
}

int case_run_planned(convoy_runtime *rt, const listed_case *list, int count, const char *expected,
                     double rtol, uint64_t seed)
{
    int failures = 0;
    for (int i = 0; i < count; ++i) {
        for (int flip = 0; flip <= 1; ++flip) {
            convoy_conv_params p = case_listed_params(&list[i]);
            p.flip = flip;
            conv_case c;
            if (!case_init(&c, &p, list[i].in, list[i].filt)) {
                printf("  BAD TEST CASE %s\n", c.label);
                ++failures;
                continue;
            }
            for (int dir = 0; dir < 3; ++dir) {
                convoy_conv_plan_info info;
                const char *impl = case_planned(rt, &c, (convoy_conv_direction)dir, &info);
                if (strcmp(impl, expected)) {
                    printf("  FAIL %s %s planned on %s, expected %s\n", case_direction_names[dir],
                           c.label, impl, expected);
                    ++failures;
                }
                failures += !case_check_tolerance(rt, &c, (convoy_conv_direction)dir,
                                                  seed + (uint64_t)(i * 8 + flip * 4 + dir), rtol);
            }
        }
    }
    printf("%d cases on %s, %d failures\n", count, expected, failures);
    return failures;
}

int case_check_bias_relu(convoy_runtime *rt, const conv_case *c, uint64_t seed, double rtol)
{
    const int rank = c->params.spatial_dims + 2;
    const int64_t nx = ref_input_numel(&c->geom), nw = ref_filter_numel(&c->geom);
    const int64_t ny = ref_output_numel(&c->geom), m = c->filt[0];
    const int64_t inner = m > 0 && ny > 0 ? ny / (c->out[0] * m) : 1;
    const int64_t bias_dims[1] = {m};
    float *x = malloc((size_t)(nx > 0 ? nx : 1) * sizeof *x);
    float *w = malloc((size_t)(nw > 0 ? nw : 1) * sizeof *w);
    float *b = malloc((size_t)(m > 0 ? m : 1) * sizeof *b);
    float *y = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *y);
    double *ref = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *ref);
    convoy_tensor *t[4] = {NULL, NULL, NULL, NULL};
    convoy_task *task = NULL;
    int ok = 0;
    if (!x || !w || !b || !y || !ref)
        goto done;
    case_rng rng;
    case_rng_seed(&rng, seed);
    case_fill(&rng, x, nx);
    case_fill(&rng, w, nw);
    case_fill(&rng, b, m);
    ref_conv_forward(&c->geom, x, w, ref);
    for (int64_t i = 0; i < ny; ++i) {
        const double v = ref[i] + (double)b[(i / inner) % m];
        ref[i] = v > 0.0 ? v : 0.0;
    }
    if (convoy_tensor_create(rt, rank, c->in, &t[0]) != CONVOY_OK ||
        convoy_tensor_create(rt, rank, c->filt, &t[1]) != CONVOY_OK ||
        convoy_tensor_create(rt, 1, bias_dims, &t[2]) != CONVOY_OK ||
        convoy_tensor_create(rt, rank, c->out, &t[3]) != CONVOY_OK ||
        convoy_upload(rt, t[0], x, (size_t)nx, NULL) != CONVOY_OK ||
        convoy_upload(rt, t[1], w, (size_t)nw, NULL) != CONVOY_OK ||
        convoy_upload(rt, t[2], b, (size_t)m, NULL) != CONVOY_OK ||
        convoy_conv_forward_bias_act(rt, &c->params, t[0], t[1], t[2], CONVOY_ACTIVATION_RELU, t[3],
                                     NULL) != CONVOY_OK ||
        convoy_download(rt, t[3], y, (size_t)ny, &task) != CONVOY_OK ||
        convoy_task_wait(task) != CONVOY_OK) {
        printf("  FAIL forward + bias + ReLU %s: %s\n", c->label, convoy_last_error_message());
        goto done;
    }
    char label[560];
    snprintf(label, sizeof label, "forward + bias + ReLU %s", c->label);
    ok = case_compare(label, y, ref, ny, rtol);
done:
    convoy_task_release(task);
    if (convoy_runtime_synchronize(rt) != CONVOY_OK)
        ok = 0;
    for (int j = 0; j < 4; ++j)
        convoy_tensor_destroy(t[j]);
    free(x);
    free(w);
    free(b);
    free(y);
    free(ref);
    return ok;
}

int case_check_all(convoy_runtime *rt, const conv_case *c, uint64_t seed)
{
    int failures = 0;
    for (int dir = 0; dir < 3; ++dir)
        failures += !case_check(rt, c, (convoy_conv_direction)dir, seed + (uint64_t)dir);
    return failures;
}

/* ---- error checks ---------------------------------------------------------- */

int case_failure_ok(const char *what, convoy_status got, convoy_status expected,
                    const char *const *words)
{
    const char *message = convoy_last_error_message();
    int ok = got == expected && message != NULL;
    for (int i = 0; ok && words[i]; ++i)
        ok = strstr(message, words[i]) != NULL;
    if (!ok) {
        printf("  FAIL %s: expected %s, got %s, message \"%s\"; expected words:", what,
               convoy_status_name(expected), convoy_status_name(got), message ? message : "(null)");
        for (int i = 0; words[i]; ++i)
            printf(" \"%s\"", words[i]);
        printf("\n");
    }
    return ok;
}

convoy_tensor *case_store_add(case_store *s, int ndim, const int64_t *dims)
{
    if (s->count >= CASE_MAX_STORED)
        return NULL;
    const int i = s->count;
    const int64_t n = numel(dims, ndim);
    float *host = malloc((size_t)(n > 0 ? n : 1) * sizeof *host);
    if (!host)
        return NULL;
    for (int64_t k = 0; k < n; ++k)
        host[k] = (float)(i * 1000 + k % 997) * 0.25f + 0.125f;
    convoy_tensor *t = NULL;
    if (convoy_tensor_create(s->rt, ndim, dims, &t) != CONVOY_OK ||
        convoy_upload(s->rt, t, host, (size_t)n, NULL) != CONVOY_OK) {
        printf("  cannot store a tensor: %s\n", convoy_last_error_message());
        convoy_tensor_destroy(t);
        if (convoy_runtime_synchronize(s->rt) != CONVOY_OK)
            printf("  runtime_synchronize failed: %s\n", convoy_last_error_message());
        free(host);
        return NULL;
    }
    s->tensors[i] = t;
    s->host[i] = host;
    s->numel[i] = n;
    s->count++;
    return t;
}

int case_store_unchanged(case_store *s)
{
    int ok = 1;
    for (int i = 0; i < s->count && ok; ++i) {
        const int64_t n = s->numel[i];
        float *got = malloc((size_t)(n > 0 ? n : 1) * sizeof *got);
        convoy_task *task = NULL;
        convoy_status status = got ? convoy_download(s->rt, s->tensors[i], got, (size_t)n, &task)
                                   : CONVOY_ERR_OUT_OF_MEMORY;
        if (status == CONVOY_OK)
            status = convoy_task_wait(task);
        convoy_task_release(task);
        if (status != CONVOY_OK) {
            printf("  FAIL download of stored tensor %d: %s: %s\n", i, convoy_status_name(status),
                   convoy_last_error_message());
            ok = 0;
        }
        for (int64_t k = 0; k < n && ok; ++k) {
            if (got[k] != s->host[i][k]) {
                printf("  FAIL stored tensor %d element %lld changed: %g, was %g\n", i,
                       (long long)k, (double)got[k], (double)s->host[i][k]);
                ok = 0;
            }
        }
        free(got);
    }
    return ok;
}

void case_store_free(case_store *s)
{
    /* The runtime goes first: the tensors are then detached handles, which
     * destroy only frees. */
    convoy_runtime_destroy(s->rt);
    s->rt = NULL;
    for (int i = 0; i < s->count; ++i) {
        convoy_tensor_destroy(s->tensors[i]);
        free(s->host[i]);
    }
    s->count = 0;
}
