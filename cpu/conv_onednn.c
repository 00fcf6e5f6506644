/* The "onednn" algorithm, the CPU counterpart of cuDNN: which convolutions it takes, its two
 * candidates (onednn:blocked and onednn:plain) and their heuristic costs. The primitives, their
 * workspace, the filter cache, the fused epilogue and the threads are the shared oneDNN
 * machinery of cpu/onednn.c. */
#include <stddef.h>

#include "cpu/conv_cpu.h"

/* ---- the onednn algorithm -------------------------------------------------------------- */

static const char *onednn_refusal(convoy__backend *be, const convoy__conv_geom *g,
                                  convoy_conv_direction direction)
{
    (void)be;
    (void)direction;
    return convoy__onednn_refusal(g);
}

/* Heuristic ranks against 1x1 (1.0), gemm (2.0) and winograd (1.2 where it leads), from the
 * measurements in bench/RESULTS.md (2026-12-01, 2-vCPU AVX-512 machine, the fastest of 7 calls
 * at quiet moments).
 *
 * onednn:blocked ran every dense, strided, dilated, grouped and depthwise 3x3 and 3x3x3 layer
 * of the suite 2.0-9.5x faster than gemm in all three directions, small ones 1.4-12x, the 7x7
 * stride-2 stem 2.6x forward and 3.1x for the filters, and pointwise layers 1.5x faster than
 * 1x1. It loses backward data into few input channels (the 3-channel 7x7 stem 0.34x of
 * onednn:plain and 0.77x of gemm; 3-channel 3x3 layers 0.44-0.83x of plain), where oneDNN
 * writes the plain 3-channel gradient through a slower path.
 *
 * onednn:plain (oneDNN's im2col and AVX-512 sgemm on the caller's tensors, no reorders) leads
 * there: 2.9x blocked on the stem, 3.0x on stem_c3_3x3s2, 1.2x on small_3x3_c3. It also leads
 * on pointwise layers, where it is one sgemm per image and the blocked kernels' reorders cost
 * more than they save: the 8x256x56x56 -> 64 layer 1.67x blocked forward, 1.57x for the data
 * gradient and 1.12x for the filters, small_1x1_c32 2.0x and 1.3x, but only 0.44x for the filters
 * of a 14x14 image (a short reduction per image), so the filter gradient of a pointwise layer
 * goes plain only from POINTWISE_WIDE_IMAGE output positions per image. Elsewhere it ran 0.4-0.9x
 * blocked on dense layers (still ahead of gemm) and 0.1-0.4x on grouped ones (behind gemm).
 *
 * With its GEMMs on oneDNN's sgemm, gemm leads one shape: the filter gradient of a 3D
 * convolution with at most TINY_CHANNELS input and output channels, where the blocked kernels
 * pad the channels to 16 (small_3x3x3_c8: gemm 2.6x blocked, plain 1.0x). */
#define COST_PLAIN_FIRST 0.8
#define COST_AHEAD_OF_1X1 0.9
#define COST_AHEAD_OF_GEMM 1.5
#define COST_PLAIN_FEW_CHANNELS 1.8
#define COST_PLAIN_DENSE 1.9
#define COST_BEHIND_GEMM 2.5
#define COST_PLAIN_GROUPED 3.0
#define FEW_INPUT_CHANNELS 4
#define POINTWISE_WIDE_IMAGE 1024
#define TINY_CHANNELS 8

static double onednn_cost(const convoy__conv_geom *g, convoy_conv_direction direction,
                          convoy__onednn_method method)
{
    const int few_channels_gradient = direction == CONVOY_CONV_BACKWARD_DATA && g->groups == 1 &&
                                      g->in_channels <= FEW_INPUT_CHANNELS;
    const int tiny_3d_filter_gradient =
        direction == CONVOY_CONV_BACKWARD_FILTER && (g->in[0] > 1 || g->kernel[0] > 1) &&
        g->in_channels <= TINY_CHANNELS && g->out_channels <= TINY_CHANNELS;
    const int pointwise = convoy__geom_is_pointwise(g);
    if (method == CONVOY__ONEDNN_PLAIN) {
        if (few_channels_gradient)
            return COST_PLAIN_FEW_CHANNELS;
        if (pointwise && (direction != CONVOY_CONV_BACKWARD_FILTER ||
                          convoy__geom_out_spatial(g) >= POINTWISE_WIDE_IMAGE))
            return COST_PLAIN_FIRST;
        return g->groups == 1 && !tiny_3d_filter_gradient ? COST_PLAIN_DENSE : COST_PLAIN_GROUPED;
    }
    if (few_channels_gradient || tiny_3d_filter_gradient)
        return COST_BEHIND_GEMM;
    if (pointwise)
        return COST_AHEAD_OF_1X1;
    return COST_AHEAD_OF_GEMM;
}

/* Two candidates: "onednn:blocked", channel-blocked with reorders, and "onednn:plain", on the
 * caller's tensors as they are. oneDNN's f32 direct convolutions are exact in both; with a fixed
 * thread count (the runtime's per task) their reductions run in a fixed order, so results repeat
 * bit for bit. */
static void onednn_candidates(convoy__backend *be, const convoy__conv_algo *self,
                              const convoy__conv_geom *geom, convoy_conv_direction direction,
                              convoy__candidate_list *list)
{
    static const convoy__onednn_method methods[2] = {CONVOY__ONEDNN_DIRECT, CONVOY__ONEDNN_PLAIN};
    static const char *const names[2] = {"onednn:blocked", "onednn:plain"};
    for (int i = 0; i < 2; ++i) {
        size_t bytes = 0;
        if (!convoy__onednn_workspace(be, geom, direction, methods[i], &bytes))
            continue;
        convoy__conv_candidate *c = convoy__candidate_add(list, self, names[i], bytes, 0,
                                                          onednn_cost(geom, direction, methods[i]));
        if (c)
            c->variant = (int)methods[i];
    }
}

static convoy_status onednn_prepare(convoy__backend *be, convoy__conv_plan *plan)
{
    return convoy__onednn_prepare(be, plan, (convoy__onednn_method)plan->candidate.variant);
}

const convoy__conv_algo convoy__cpu_algo_onednn = {
    .name = "onednn",
    .refusal = onednn_refusal,
    .candidates = onednn_candidates,
    .prepare = onednn_prepare,
    .release = convoy__onednn_release,
    .run = convoy__onednn_run,
    .run_fused = convoy__onednn_run_fused,
};
