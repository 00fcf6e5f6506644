/* Shared helpers of the convolution tests: a seeded random generator, the
 * runtime every test creates from the command line's options (device=cpu,
 * ...), one
 * case = params + shapes, running one direction through the public API
 * (create, upload, conv, download, wait) and comparing with the reference. */
#ifndef CONVOY_TESTS_CONV_CASES_H
#define CONVOY_TESTS_CONV_CASES_H

#include <stdint.h>

#include "convoy.h"
#include "conv_reference.h"

/* ---- random data --------------------------------------------------------- */

typedef struct case_rng {
    uint64_t state;
} case_rng;

void case_rng_seed(case_rng *rng, uint64_t seed);
uint64_t case_rng_next(case_rng *rng);
/* Uniform integer in [lo, hi]. */
int case_rng_int(case_rng *rng, int lo, int hi);
/* Uniform in [-1, 1] with |v| >= 1/64: never zero. */
float case_rng_value(case_rng *rng);
void case_fill(case_rng *rng, float *data, int64_t count);

/* malloc'd arrays of count floats (at least one element, so that an empty
 * operand still has an address): random values, or NaN, which shows any
 * element a kernel reads before writing or never writes. The program stops
 * with a message when memory runs out. Free them with free(). */
float *case_random_floats(case_rng *rng, int64_t count);
float *case_nan_floats(int64_t count);

/* ---- runtime ------------------------------------------------------------- */

/* The options of this run: convoy_options_init's defaults plus what the
 * command line set (case_device_check parses it). The environment plays no
 * part. String fields point into argv. */
void case_options(convoy_options *options);

/* Creates a runtime from case_options. */
convoy_status case_runtime_create(convoy_runtime **rt);

/* CMocka setup/teardown: *state is the convoy_runtime *. */
int case_setup(void **state);
int case_teardown(void **state);

/* Called first in main with its arguments: device=cpu|cuda, streams=N,
 * exclude=NAMES, workspace_limit=N[K|M] and exact_only=0|1 (default 1: the reference
 * comparisons hold exact algorithms to 1e-5) set the run's options. Returns 77
 * when the requested device is absent (CTest skip), 1 for a bad argument or
 * when a runtime cannot be created for another reason, else 0. */
int case_device_check(const char *program, int argc, char **argv);

/* ---- cases --------------------------------------------------------------- */

typedef struct conv_case {
    convoy_conv_params params;
    ref_geom geom;
    int64_t in[6], filt[6], out[6]; /* forward-role dims */
    int in_rank, filt_rank, out_rank;
    char label[512];
} conv_case;

/* Fills *c for params and forward input/filter dims; 1 when the convolution
 * is valid (per the reference), 0 when its output would be empty or the
 * shapes do not fit. */
int case_init(conv_case *c, const convoy_conv_params *params, const int64_t *input_dims,
              const int64_t *filter_dims);

/* Params with defaults for nd spatial dims and the given stride/dilation
 * (arrays of nd values, NULL for 1). */
convoy_conv_params case_params(int nd, convoy_border border, const int64_t *stride,
                               const int64_t *dilation);

/* A convolution written as a table row: zero stride/dilation entries mean 1. */
typedef struct listed_case {
    int nd;
    int64_t in[5];
    int64_t filt[5];
    int64_t groups;
    convoy_border border;
    int64_t pad_before[3], pad_after[3]; /* EXPLICIT only */
    int64_t stride[3], dilation[3];
} listed_case;

/* The params of a table row (flip on, shared filters). */
convoy_conv_params case_listed_params(const listed_case *l);

/* Sets an explicit symmetric (pad_after NULL) or asymmetric padding. */
void case_set_pads(convoy_conv_params *p, const int64_t *pad_before, const int64_t *pad_after);

/* Runs one direction through the public API. Forward: a = input, b = filters,
 * result = output; backward_data: a = filters, b = grad_output, result =
 * grad_input (of dims c->in); backward_filter: a = input, b = grad_output,
 * result = grad_filters. The result tensor is filled with a sentinel before
 * the convolution so unwritten elements show. Returns the first failing
 * status (submit or task) and prints it with the case label. */
convoy_status case_run(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir,
                       const float *a, const float *b, float *result);

/* convoy_conv_output_dims against the reference: the same dims when valid,
 * CONVOY_ERR_SHAPE exactly when not. 1 when it agrees; prints otherwise. */
int case_check_output_dims(const conv_case *c, int valid);

/* Element counts of the operands of one direction: its two inputs and result. */
void case_sizes(const conv_case *c, convoy_conv_direction dir, int64_t *na, int64_t *nb,
                int64_t *nresult);

/* max |got - ref| <= rtol * max(1, ||ref||_inf); prints the first mismatches
 * (index, got, ref) with the label on failure. Returns 1 when it passes. */
int case_compare(const char *label, const float *got, const double *ref, int64_t count,
                 double rtol);

/* Random data in, library vs reference for one direction; 1 when it passes. */
int case_check(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir, uint64_t seed);

/* The same with rtol in place of case_check's 1e-5 (inexact algorithms: Winograd). */
int case_check_tolerance(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir,
                         uint64_t seed, double rtol);

/* The algorithm the planner chose for one direction of c (convoy_conv_explain, its report in
 * *info), or "(failed)" with the error printed. */
const char *case_planned(convoy_runtime *rt, const conv_case *c, convoy_conv_direction dir,
                         convoy_conv_plan_info *info);

/* Each listed case in both flip settings and all three directions: planned on `expected`
 * and within rtol of the reference. Prints a summary; returns the number of failures. */
int case_run_planned(convoy_runtime *rt, const listed_case *list, int count, const char *expected,
                     double rtol, uint64_t seed);

/* convoy_conv_forward_bias_act with a random bias and ReLU on c, against the reference plus
 * bias through a ReLU, within rtol. 1 when it matches. */
int case_check_bias_relu(convoy_runtime *rt, const conv_case *c, uint64_t seed, double rtol);

/* All three directions; returns the number of failing directions. */
int case_check_all(convoy_runtime *rt, const conv_case *c, uint64_t seed);

extern const char *const case_direction_names[3];

/* The public names of the operands of each direction, in forward roles
 * (input, filters, output): what error messages call them. */
extern const char *const case_operand_names[3][3];

/* Submits one direction with operands in forward roles (x input, w filters,
 * y output), whichever of them that direction writes. */
convoy_status case_submit(convoy_runtime *rt, const convoy_conv_params *p,
                          convoy_conv_direction dir, convoy_tensor *x, convoy_tensor *w,
                          convoy_tensor *y, convoy_task **task);

/* ---- error checks ---------------------------------------------------------- */

/* 1 when got == expected and convoy_last_error_message() contains every word
 * of the NULL-terminated list; else prints what differs and returns 0. */
int case_failure_ok(const char *what, convoy_status got, convoy_status expected,
                    const char *const *words);

#define CASE_MAX_STORED 16

/* A runtime plus tensors uploaded with a recognisable pattern, to show that
 * a failed call wrote nothing. */
typedef struct case_store {
    convoy_runtime *rt;
    int count;
    convoy_tensor *tensors[CASE_MAX_STORED];
    float *host[CASE_MAX_STORED];
    int64_t numel[CASE_MAX_STORED];
} case_store;

/* Creates a tensor in s->rt and uploads the pattern; NULL on failure. */
convoy_tensor *case_store_add(case_store *s, int ndim, const int64_t *dims);

/* 1 when every stored tensor still holds its pattern; prints the first change. */
int case_store_unchanged(case_store *s);

/* Destroys the runtime (which waits for the uploads), then the tensor
 * handles it detached and the host copies. */
void case_store_free(case_store *s);

#endif /* CONVOY_TESTS_CONV_CASES_H */
