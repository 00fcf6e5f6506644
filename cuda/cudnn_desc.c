/* Deciding from a geometry whether cuDNN's legacy convolution API can run it, and with which
 * descriptor values; cuDNN's algorithm names, its atomics-using algorithms and its transform-based
 * (inexact) ones. No cuDNN header: the algorithm tables are indexed by the enums' numeric values,
 * which cuda/conv_cudnn.c checks against cudnn.h at compile time. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cuda/cudnn_desc.h"

static const char *const forward_names[] = {
    "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
    "WINOGRAD",      "WINOGRAD_NONFUSED",
};
static const char *const backward_data_names[] = {
    "ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED",
};
static const char *const backward_filter_names[] = {
    "ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING",
};

const char *convoy__cudnn_algo_name(convoy_conv_direction direction, int algo)
{
    const char *const *names = forward_names;
    int count = (int)(sizeof forward_names / sizeof forward_names[0]);
    if (direction == CONVOY_CONV_BACKWARD_DATA) {
        names = backward_data_names;
        count = (int)(sizeof backward_data_names / sizeof backward_data_names[0]);
    } else if (direction == CONVOY_CONV_BACKWARD_FILTER) {
        names = backward_filter_names;
        count = (int)(sizeof backward_filter_names / sizeof backward_filter_names[0]);
    }
    return algo >= 0 && algo < count ? names[algo] : "UNKNOWN";
}

int convoy__cudnn_algo_uses_atomics(convoy_conv_direction direction, int algo)
{
    if (direction == CONVOY_CONV_BACKWARD_DATA)
        return algo == 0;
    if (direction == CONVOY_CONV_BACKWARD_FILTER)
        return algo == 0 || algo == 3;
    return 0;
}

int convoy__cudnn_algo_is_exact(convoy_conv_direction direction, int algo)
{
    const char *name = convoy__cudnn_algo_name(direction, algo);
    return !strstr(name, "FFT") && !strstr(name, "WINOGRAD") && strcmp(name, "UNKNOWN") != 0;
}

static int fits_int(int64_t v)
{
    return v >= 1 && v <= INT_MAX;
}

/* Packed NCHW strides of a tensor with nb dims; 0 when an element offset could pass INT_MAX
 * (cuDNN's legacy descriptors take int strides). */
static int packed(const int *dims, int nb, int *strides)
{
    int64_t stride = 1;
    for (int i = nb - 1; i >= 0; --i) {
        strides[i] = (int)stride;
        stride *= dims[i];
        if (stride > INT_MAX)
            return 0;
    }
    return 1;
}

static int refuse(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return 0;
}

int convoy__cudnn_expressible(const convoy__conv_geom *g, convoy__cudnn_dims *dims,
                              const char **why)
{
    convoy__cudnn_dims d;
    if (!g)
        return refuse(why, "no geometry");
    if (g->unshared)
        return refuse(why, "cuDNN has no unshared (locally connected) convolution");
    for (int a = 0; a < 3; ++a) {
        if (g->pad_before[a] != g->pad_after[a])
            return refuse(why, "cuDNN takes one padding per axis (asymmetric padding)");
    }
    if (g->batch < 1 || g->in_channels < 1 || g->out_channels < 1)
        return refuse(why, "empty batch, channels or filters");
    if (g->groups < 1 || g->in_channels % g->groups || g->out_channels % g->groups)
        return refuse(why, "groups do not divide the channels");
    /* A neutral leading axis (always so in 2D) is dropped: 4-D descriptors reach cuDNN's
     * 2-D algorithms, which are more numerous than its 3-D ones. */
    int first = (g->in[0] == 1 && g->kernel[0] == 1 && g->out[0] == 1 && g->pad_before[0] == 0 &&
                 g->stride[0] == 1 && g->dilation[0] == 1)
                    ? 1
                    : 0;
    d.nb_dims = 2 + 3 - first;
    int64_t sizes[] = {g->batch, g->in_channels, g->out_channels, g->in_channels / g->groups,
                       g->groups};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        if (!fits_int(sizes[i]))
            return refuse(why, "a size exceeds cuDNN's 32-bit range");
    }
    d.input[0] = d.output[0] = (int)g->batch;
    d.input[1] = (int)g->in_channels;
    d.output[1] = d.filter[0] = (int)g->out_channels;
    d.filter[1] = (int)(g->in_channels / g->groups);
    d.groups = (int)g->groups;
    d.cross_correlation = !g->flip;
    for (int a = first; a < 3; ++a) {
        int j = a - first;
        if (!fits_int(g->in[a]) || !fits_int(g->kernel[a]) || !fits_int(g->out[a]) ||
            !fits_int(g->stride[a]) || !fits_int(g->dilation[a]) || g->pad_before[a] < 0 ||
            g->pad_before[a] > INT_MAX)
            return refuse(why, "a size exceeds cuDNN's 32-bit range");
        /* cuDNN derives the output size as 1 + (in + 2 pad - dk) / stride with symmetric
         * padding; a geometry that disagrees (it should not) is not handed over. */
        int64_t dk = (g->kernel[a] - 1) * g->dilation[a] + 1;
        int64_t span = g->in[a] + 2 * g->pad_before[a] - dk;
        if (span < 0 || span / g->stride[a] + 1 != g->out[a])
            return refuse(why, "the output size differs from cuDNN's formula");
        d.input[2 + j] = (int)g->in[a];
        d.filter[2 + j] = (int)g->kernel[a];
        d.output[2 + j] = (int)g->out[a];
        d.pad[j] = (int)g->pad_before[a];
        d.stride[j] = (int)g->stride[a];
        d.dilation[j] = (int)g->dilation[a];
    }
    int filter_strides[5];
    if (!packed(d.input, d.nb_dims, d.input_strides) ||
        !packed(d.output, d.nb_dims, d.output_strides) ||
        !packed(d.filter, d.nb_dims, filter_strides))
        return refuse(why, "a tensor has more elements than cuDNN's 32-bit indexing allows");
    if (dims)
        *dims = d;
    if (why)
        *why = NULL;
    return 1;
}
