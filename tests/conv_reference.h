/* An independent double-precision reference for the three convolution
 * directions of CONV_SEMANTICS.md (sections 2-7). It shares no code with the
 * library: it resolves the border mode itself and evaluates the formulas of
 * the document directly, one output element at a time. */
#ifndef CONVOY_TESTS_CONV_REFERENCE_H
#define CONVOY_TESTS_CONV_REFERENCE_H

#include <stdint.h>

#include "convoy.h"

/* One convolution with every size resolved; spatial arrays use nd entries. */
typedef struct ref_geom {
    int nd;          /* 2 or 3 spatial axes */
    int64_t batch;   /* N */
    int64_t chans;   /* C, input channels */
    int64_t filters; /* M, output channels */
    int64_t groups;  /* g */
    int64_t in[3];   /* input extents */
    int64_t k[3];    /* kernel extents */
    int64_t out[3];  /* output extents */
    int64_t pl[3];   /* padding before */
    int64_t pr[3];   /* padding after */
    int64_t s[3];    /* stride */
    int64_t d[3];    /* dilation */
    int flip;
    int unshared;
} ref_geom;

/* Resolves params with the forward-convolution input dims (nd + 2 values)
 * and filter dims (nd + 2, or 6 when unshared). Returns 1 and fills *geom
 * when the convolution is well defined; 0 when the shapes do not fit
 * (channel or group mismatch, a kernel extent < 1, an output extent < 1,
 * unshared regions that are not the output size). */
int ref_conv_geom(const convoy_conv_params *params, const int64_t *input_dims,
                  const int64_t *filter_dims, ref_geom *geom);

/* The dims of the three operands: nd + 2 values for input and output,
 * nd + 2 (or 6 when unshared) for the filters. Return the rank. */
int ref_input_dims(const ref_geom *geom, int64_t *dims);
int ref_filter_dims(const ref_geom *geom, int64_t *dims);
int ref_output_dims(const ref_geom *geom, int64_t *dims);

/* Element counts of the three operands. */
int64_t ref_input_numel(const ref_geom *geom);
int64_t ref_filter_numel(const ref_geom *geom);
int64_t ref_output_numel(const ref_geom *geom);

/* y = conv(x, w): y[n, m, o] = sum_{c in group(m), t} xp[n, c, o*s + t*d] * w'[m, c', t]. */
void ref_conv_forward(const ref_geom *geom, const float *x, const float *w, double *y);

/* dx[n, c, q] = sum over m in the group of c, taps t and outputs o with
 * o*s + t*d - pl == q of dy[n, m, o] * w'[m, c', t]. */
void ref_conv_backward_data(const ref_geom *geom, const float *w, const float *dy, double *dx);

/* dw'[m, c', t] = sum_{n, o} dy[n, m, o] * xp[n, c0(m) + c', o*s + t*d], stored
 * flipped back when flip is on. */
void ref_conv_backward_filter(const ref_geom *geom, const float *x, const float *dy, double *dw);

#endif /* CONVOY_TESTS_CONV_REFERENCE_H */
