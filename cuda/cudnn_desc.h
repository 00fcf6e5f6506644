/* What cuDNN's legacy convolution API can express, decided from a geometry alone, and the
 * descriptor values it needs. Pure host code with no cuDNN header, so the host tests check
 * it on machines without cuDNN or a GPU; cuda/conv_cudnn.c turns the values into
 * descriptors. */
#ifndef CONVOY_CUDA_CUDNN_DESC_H
#define CONVOY_CUDA_CUDNN_DESC_H

#include "convoy.h"
#include "core/conv_geometry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The values of cuDNN's tensor, filter and convolution descriptors for one geometry, NCHW
 * (NCDHW) float, fully packed. A geometry whose leading spatial axis is neutral (every 2D
 * convolution) uses 4-D descriptors, anything else 5-D. */
typedef struct convoy__cudnn_dims {
    int nb_dims; /* 4 or 5 */
    int input[5], filter[5], output[5];
    int input_strides[5], output_strides[5];
    int pad[3], stride[3], dilation[3]; /* nb_dims - 2 entries used */
    int groups;
    int cross_correlation; /* 1: CUDNN_CROSS_CORRELATION (flip off), 0: CONVOLUTION */
} convoy__cudnn_dims;

/* 1, with *dims filled, when cuDNN can run the geometry; 0 with *why set (static text) when
 * it cannot: unshared filters, asymmetric padding (pad_before != pad_after), an empty batch,
 * channel or filter count, a size or tensor beyond cuDNN's 32-bit indexing, or an output size
 * cuDNN's formula would not reproduce. dims and why may be NULL. */
int convoy__cudnn_expressible(const convoy__conv_geom *geom, convoy__cudnn_dims *dims,
                              const char **why);

/* cuDNN's algorithm name without its enum prefix ("IMPLICIT_PRECOMP_GEMM", "ALGO_1",
 * "FFT_TILING") for an algorithm value of the given direction; "UNKNOWN" outside the enum. */
const char *convoy__cudnn_algo_name(convoy_conv_direction direction, int algo);

/* 1 for the algorithms that accumulate with atomics and so are never bit-reproducible
 * (backward_data ALGO_0, backward_filter ALGO_0 and ALGO_3; CONV_SEMANTICS.md 12.2), whatever
 * cuDNN's own report says. */
int convoy__cudnn_algo_uses_atomics(convoy_conv_direction direction, int algo);

/* 0 for the transform-based algorithms (FFT, FFT_TILING, WINOGRAD, WINOGRAD_NONFUSED), whose
 * rounding differs from a direct sum by more than float32 accumulation does, and for values
 * outside the enum; 1 otherwise. The planner leaves inexact ones out when asked to. */
int convoy__cudnn_algo_is_exact(convoy_conv_direction direction, int algo);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_CUDA_CUDNN_DESC_H */
