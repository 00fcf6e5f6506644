/* oneDNN's Winograd convolutions on the CPU: the "winograd" algorithm.
 *
 * oneDNN 2.6 computes 2D 3x3 stride-1 f32 convolutions on AVX-512 machines with the Winograd
 * transform F(4x4, 3x3) (its jit_wino_4x3 kernels), forward and both gradients: 6x6 input
 * tiles, 16 multiplications per output pixel where the direct method needs 36 (2.25x fewer).
 * The transforms round differently from a direct sum, so the algorithm is inexact: it is left
 * out with CONVOY_EXACT_ONLY=1, and CONVOY_EXCLUDE=winograd removes it. Its error against the
 * double-precision reference is measured in tests/test_conv_kernels.c and bounded in
 * tests/test_conv_winograd.c (docs/DESIGN.md, section 4).
 *
 * Everything but the choice of algorithm is the shared oneDNN machinery's (cpu/onednn.c): the
 * primitives built by prepare, the reorders between the caller's plain tensors and oneDNN's
 * layouts, the workspace, the filter flip, the fused bias and ReLU, and the OpenMP threads. oneDNN
 * decides which convolutions it has a Winograd kernel for (channels, padding, the machine's ISA);
 * where it has none, the algorithm offers no candidate. */
#include <stddef.h>

#include "cpu/conv_cpu.h"

/* The one geometry oneDNN's Winograd kernels take: 2D, a 3x3 kernel, stride 1, no dilation, no
 * groups (and at most one padded row or column per side, which oneDNN checks itself). A 3D
 * geometry whose leading axis is neutral (extent 1, no padding) is 2D. Padding must be the same
 * on both sides of each axis: with one padded row on one side only, oneDNN 2.6.3's Winograd
 * backward data returns a wrong gradient (every element off, tests/test_conv_kernels.c found
 * it), so asymmetric padding goes to the other algorithms in every direction. */
static const char *winograd_refusal(convoy__backend *be, const convoy__conv_geom *g,
                                    convoy_conv_direction direction)
{
    (void)be;
    (void)direction;
    const char *why = convoy__onednn_refusal(g);
    if (why)
        return why;
    const int planar = g->in[0] == 1 && g->kernel[0] == 1 && g->out[0] == 1 &&
                       g->pad_before[0] == 0 && g->pad_after[0] == 0;
    if (!planar || g->kernel[1] != 3 || g->kernel[2] != 3 || g->stride[1] != 1 ||
        g->stride[2] != 1 || g->dilation[1] != 1 || g->dilation[2] != 1 || g->groups != 1)
        return "needs a 2D 3x3 convolution with stride 1, no dilation and no groups";
    if (g->pad_before[1] != g->pad_after[1] || g->pad_before[2] != g->pad_after[2])
        return "needs the same padding on both sides of each axis";
    return NULL;
}

/* Heuristic rank, against onednn:blocked (1.5) and gemm (2.0). F(4x4, 3x3) does 2.25x fewer
 * multiplications than the direct method but transforms every 6x6 input tile (work per tile in
 * proportion to the input channels), every output tile (the output channels) and, per call,
 * the filters (input x output channels, shared by all the tiles): it wins when both channel
 * counts and the number of tiles are large. Measured against onednn:blocked (bench/RESULTS.md,
 * 2026-12-01, medians of 7 calls back to back at quiet moments, forward / data / filters),
 * with batch x output positions (the tiles, times 16) and the smaller channel count:
 *   r50_res2  25088 x 64:  1.95 2.0 2.05    mid_3x3_c32   6272 x 32: 1.48 1.52 1.69
 *   r50_res3   6272 x 128: 1.71 1.71 2.06   mid_3x3_c64   1568 x 64: 1.20 1.28 1.04
 *   r50_res4   1568 x 256: 1.47 1.40 1.46   small_3x3_c32 1568 x 32: 0.91 0.89 0.86
 *   r50_res5    392 x 512: 0.77 0.70 0.88   small_3x3_c16 2048 x 16: 0.70 0.70 0.67
 *   small_3x3_c3 8192 x 3: 0.29 0.82 0.27   tiny_3x3_c8    400 x 8:  0.38 0.51 0.59
 * So it leads from MANY_TILES positions with WIDE channels, or from SOME_TILES with VERY_WIDE
 * ones, in all three directions, and ranks behind onednn elsewhere. */
#define COST_AHEAD_OF_ONEDNN 1.2
#define COST_BEHIND_ONEDNN 1.7
#define MANY_TILES 4096
#define SOME_TILES 1024
#define WIDE 32
#define VERY_WIDE 64

static double winograd_cost(const convoy__conv_geom *g, convoy_conv_direction direction)
{
    (void)direction;
    const int64_t positions = g->batch * convoy__geom_out_spatial(g);
    const int64_t channels = g->in_channels < g->out_channels ? g->in_channels : g->out_channels;
    if ((positions >= MANY_TILES && channels >= WIDE) ||
        (positions >= SOME_TILES && channels >= VERY_WIDE))
        return COST_AHEAD_OF_ONEDNN;
    return COST_BEHIND_ONEDNN;
}

static void winograd_candidates(convoy__backend *be, const convoy__conv_algo *self,
                                const convoy__conv_geom *geom, convoy_conv_direction direction,
                                convoy__candidate_list *list)
{
    size_t bytes = 0;
    if (!convoy__onednn_workspace(be, geom, direction, CONVOY__ONEDNN_WINOGRAD, &bytes))
        return;
    convoy__conv_candidate *c =
        convoy__candidate_add(list, self, self->name, bytes, 0, winograd_cost(geom, direction));
    if (c)
        c->exact = 0;
}

static convoy_status winograd_prepare(convoy__backend *be, convoy__conv_plan *plan)
{
    return convoy__onednn_prepare(be, plan, CONVOY__ONEDNN_WINOGRAD);
}

const convoy__conv_algo convoy__cpu_algo_winograd = {
    .name = "winograd",
    .refusal = winograd_refusal,
    .candidates = winograd_candidates,
    .prepare = winograd_prepare,
    .release = convoy__onednn_release,
    .run = convoy__onednn_run,
    .run_fused = convoy__onednn_run_fused,
};
