/* The resolved description of one convolution, shared by the runtime, the
 * planner and every backend.
 *
 * Every convolution is normalised to three spatial axes: a 2D convolution is a
 * 3D one whose leading spatial axis has extent 1, kernel 1, stride 1,
 * dilation 1 and no padding. One set of index formulas then serves 2D and 3D
 * on every backend. Axis order is (0, 1, 2) = (D, H, W) with W fastest. */
#ifndef CONVOY_CORE_CONV_GEOMETRY_H
#define CONVOY_CORE_CONV_GEOMETRY_H

#include <stdint.h>

#include "convoy.h"

/* The helpers below also run in CUDA kernels. */
#ifdef __CUDACC__
#define CONVOY_HD __host__ __device__
#else
#define CONVOY_HD
#endif

typedef struct convoy__conv_geom {
    int spatial_dims;      /* 2 or 3, as the caller asked; informational */
    int64_t batch;         /* N */
    int64_t in_channels;   /* C */
    int64_t out_channels;  /* M */
    int64_t groups;        /* g; C % g == 0 and M % g == 0 */
    int64_t in[3];         /* input spatial extents */
    int64_t kernel[3];     /* kernel spatial extents */
    int64_t out[3];        /* output spatial extents */
    int64_t pad_before[3]; /* resolved padding, border mode already applied */
    int64_t pad_after[3];
    int64_t stride[3];
    int64_t dilation[3];
    int flip;     /* 1: convolution (kernel reversed), 0: correlation */
    int unshared; /* 1: filters (M, o0, o1, o2, C/g, k0, k1, k2) */
} convoy__conv_geom;

/* The three operands of a convolution. Which one is written depends on the
 * direction: forward writes output, backward_data writes input, backward_filter
 * writes filters. Layouts:
 *   input   (N, C, in0, in1, in2)
 *   filters (M, C/g, k0, k1, k2), or unshared (M, out0, out1, out2, C/g, k0, k1, k2)
 *   output  (N, M, out0, out1, out2) */
typedef struct convoy__conv_buffers {
    float *input;
    float *filters;
    float *output;
    /* What the filters hold when the convolution reads them: a number that changes whenever
     * they may change (the scheduler's content of the tensor), 0 when unknown (timing
     * buffers, tests). An algorithm may keep something derived from the filters, such as
     * their reordered copy, for as long as this stays the same nonzero number. */
    uint64_t filters_content;
} convoy__conv_buffers;

/* Sizes derived from a geometry; all products are known to fit in int64
 * because the runtime checked them when it built the geometry. */
CONVOY_HD static inline int64_t convoy__geom_in_spatial(const convoy__conv_geom *g)
{
    return g->in[0] * g->in[1] * g->in[2];
}

CONVOY_HD static inline int64_t convoy__geom_out_spatial(const convoy__conv_geom *g)
{
    return g->out[0] * g->out[1] * g->out[2];
}

CONVOY_HD static inline int64_t convoy__geom_kernel_spatial(const convoy__conv_geom *g)
{
    return g->kernel[0] * g->kernel[1] * g->kernel[2];
}

/* Rows of one group's im2col matrix: (C/g) * k0 * k1 * k2. */
CONVOY_HD static inline int64_t convoy__geom_col_rows(const convoy__conv_geom *g)
{
    return (g->in_channels / g->groups) * convoy__geom_kernel_spatial(g);
}

CONVOY_HD static inline int64_t convoy__geom_input_numel(const convoy__conv_geom *g)
{
    return g->batch * g->in_channels * convoy__geom_in_spatial(g);
}

CONVOY_HD static inline int64_t convoy__geom_output_numel(const convoy__conv_geom *g)
{
    return g->batch * g->out_channels * convoy__geom_out_spatial(g);
}

CONVOY_HD static inline int64_t convoy__geom_filter_numel(const convoy__conv_geom *g)
{
    int64_t shared = g->out_channels * convoy__geom_col_rows(g);
    return g->unshared ? shared * convoy__geom_out_spatial(g) : shared;
}

/* 1 for a convolution that needs no im2col: 1x1x1 kernel, stride 1, no
 * padding, shared filters. */
CONVOY_HD static inline int convoy__geom_is_pointwise(const convoy__conv_geom *g)
{
    for (int a = 0; a < 3; ++a) {
        if (g->kernel[a] != 1 || g->stride[a] != 1 || g->pad_before[a] != 0 || g->pad_after[a] != 0)
            return 0;
    }
    return !g->unshared;
}

#endif /* CONVOY_CORE_CONV_GEOMETRY_H */
