/* Convolution parameter validation and shape math: turns public parameters
 * and tensor dims into a resolved geometry (core/conv_geometry.h), or
 * an error naming the call, the tensor, the dimension, and the expected and
 * actual values. */
#ifndef CONVOY_RUNTIME_CONV_SHAPE_H
#define CONVOY_RUNTIME_CONV_SHAPE_H

#include <stdint.h>

#include "convoy.h"
#include "core/conv_geometry.h"

/* The dims of the three operands in forward terms. For backward_data the
 * "input" is grad_input, for backward_filter the "filters" are grad_filters,
 * and for both backward directions the "output" is grad_output; names[]
 * gives the caller's names for error messages. */
typedef struct convoy__conv_operands {
    const int64_t *input;
    int input_rank;
    const int64_t *filters;
    int filter_rank;
    const int64_t *output; /* NULL: compute it (convoy_conv_output_dims) */
    int output_rank;
    const char *names[3]; /* input, filters, output */
} convoy__conv_operands;

/* CONVOY_ERR_INVALID_ARGUMENT when params are out of range. */
convoy_status convoy__conv_check_params(const char *call, const convoy_conv_params *params);

/* Validates shapes against params and fills geom; output_dims (may be NULL)
 * receives the forward output dims. CONVOY_ERR_SHAPE on any mismatch. */
convoy_status convoy__conv_resolve(const char *call, const convoy_conv_params *params,
                                   const convoy__conv_operands *operands, convoy__conv_geom *geom,
                                   int64_t *output_dims);

/* "8x64x56x56" into buffer. */
void convoy__dims_text(const int64_t *dims, int rank, char *buffer, size_t size);

#endif /* CONVOY_RUNTIME_CONV_SHAPE_H */
