/* The convolution layer suite (bench/conv_suite.txt) as C structs, plus the
 * few timing and data helpers that the demo and every benchmark share.
 *
 * A suite line is: name nd N C spatial_in K kernel stride pad dilation groups,
 * where the five extents are "x"-separated with nd values each ("56x56",
 * "3x3x3"). '#' starts a comment; blank lines are ignored. Padding is
 * symmetric (pad on both sides of each axis). */
#ifndef CONVOY_EXAMPLES_SUITE_H
#define CONVOY_EXAMPLES_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"

#define SUITE_NAME_MAX 64

typedef struct suite_layer {
    char name[SUITE_NAME_MAX];
    int nd;         /* spatial dims: 2 or 3 */
    int64_t n;      /* batch */
    int64_t c;      /* input channels */
    int64_t k;      /* output channels (filters) */
    int64_t groups; /* divides c and k */
    int64_t in[3];  /* input spatial extents (first nd used) */
    int64_t kernel[3];
    int64_t stride[3];
    int64_t pad[3]; /* applied before and after */
    int64_t dilation[3];
    int line; /* line number in the suite file */
} suite_layer;

typedef struct suite {
    suite_layer *layers;
    size_t count;
} suite;

/* Parses one line. Returns 1 and fills *out for a layer, 0 for a blank or
 * comment-only line, -1 for a malformed line (err then holds
 * "line N: what is wrong"). */
int suite_parse_line(const char *text, int line_no, suite_layer *out, char *err, size_t err_size);

/* Reads a whole suite file. Returns 0 on success (free with suite_free), -1
 * with err set ("path:line N: ...") on an I/O error, a malformed line, a
 * duplicate name or an empty suite. */
int suite_load(const char *path, suite *out, char *err, size_t err_size);

void suite_free(suite *s);

/* The layer named name, or NULL. */
const suite_layer *suite_find(const suite *s, const char *name);

/* Forward dims of the layer (nd + 2 values each): input N,C,spatial; filters
 * K,C/groups,kernel; output N,K,out. */
void suite_dims(const suite_layer *l, int64_t input[5], int64_t filters[5], int64_t output[5]);

/* convoy parameters for the layer: explicit symmetric padding, stride,
 * dilation, groups, and cross-correlation (flip = 0) as DNN frameworks use.
 * Returns convoy_conv_params_init's status. */
convoy_status suite_params(const suite_layer *l, convoy_conv_params *p);

/* 2 * N * K * (C/groups) * prod(kernel) * prod(out): the flop count used for
 * every direction. */
double suite_flops(const suite_layer *l);

/* Number of elements of a dims array. */
int64_t suite_numel(int ndim, const int64_t *dims);

/* "8x64x56x56" into buf. */
const char *suite_dims_text(int ndim, const int64_t *dims, char *buf, size_t size);

/* 1 for a dense 3x3 (or 3x3x3) layer, 2 for the 1x1 layer, 0 otherwise: the
 * classes the CPU performance targets are set for. */
int suite_target_class(const suite_layer *l);

/* ---- shared helpers --------------------------------------------------- */

/* Monotonic wall clock in seconds. */
double suite_now(void);

/* Prints "<program>: <what> failed: <status>: <detail>" to stderr and exits 1:
 * these are programs, so a failed call ends them. */
void suite_die(const char *program, const char *what, convoy_status status);

/* Runs a convoy call and ends the program through suite_die if it fails;
 * SUITE_PROGRAM must name the program. */
#define SUITE_CHECK(call)                                                                          \
    do {                                                                                           \
        convoy_status suite_s_ = (call);                                                           \
        if (suite_s_ != CONVOY_OK)                                                                 \
            suite_die(SUITE_PROGRAM, #call, suite_s_);                                             \
    } while (0)

/* Median of count values (sorts them in place). 0 for count 0. */
double suite_median(double *values, size_t count);

/* Fills data with uniform values in [-1, 1) from a fixed-seed generator. */
void suite_fill_random(float *data, size_t count, uint64_t seed);

#endif /* CONVOY_EXAMPLES_SUITE_H */
