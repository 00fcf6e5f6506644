/* The direct convolution on the CPU: every element of the written operand is
 * the full CONV_SEMANTICS.md sum, accumulated in double. It is the library's
 * reference and last resort, so it favours being obviously right over speed
 * and needs no workspace.
 *
 * The per-element sums live in kernels/direct_index.h, the header the CUDA
 * direct kernels run too, so the CPU tests that check this file check the
 * GPU's direct arithmetic as well. Empty batches, channels or filters need no
 * special case: every written element receives an empty sum, 0. */
#include <stdint.h>

#include "cpu/conv_cpu.h"
#include "kernels/direct_index.h"

void convoy__cpu_conv_direct(const convoy__conv_geom *geom, convoy_conv_direction direction,
                             const convoy__conv_buffers *b)
{
    switch (direction) {
    case CONVOY_CONV_FORWARD: {
        const int64_t count = convoy__geom_output_numel(geom);
        for (int64_t i = 0; i < count; ++i)
            b->output[i] = (float)convoy__direct_forward_value(geom, b->input, b->filters, i);
        break;
    }
    case CONVOY_CONV_BACKWARD_DATA: {
        const int64_t count = convoy__geom_input_numel(geom);
        for (int64_t i = 0; i < count; ++i)
            b->input[i] = (float)convoy__direct_backward_data_value(geom, b->filters, b->output, i);
        break;
    }
    case CONVOY_CONV_BACKWARD_FILTER: {
        const int64_t count = convoy__geom_filter_numel(geom);
        for (int64_t i = 0; i < count; ++i)
            b->filters[i] =
                (float)convoy__direct_backward_filter_value(geom, b->input, b->output, i);
        break;
    }
    }
}

/* ---- the direct algorithm ------------------------------------------------------------- */

static convoy_status direct_run(convoy__backend *be, void *native_stream,
                                const convoy__conv_plan *plan, const convoy__conv_buffers *buffers,
                                void *workspace)
{
    (void)be;
    (void)native_stream;
    (void)workspace;
    convoy__cpu_conv_direct(&plan->geom, plan->direction, buffers);
    return CONVOY_OK;
}

const convoy__conv_algo convoy__cpu_algo_direct = {
    .name = "direct",
    .refusal = NULL,
    .candidates = convoy__candidates_last_resort,
    .run = direct_run,
};
