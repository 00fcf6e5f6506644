/* Helpers shared by every backend's algorithm descriptors (kernels/conv_algo.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/error_detail.h"
#include "kernels/conv_algo.h"

convoy__conv_candidate *convoy__candidate_add(convoy__candidate_list *list,
                                              const convoy__conv_algo *algo, const char *name,
                                              size_t workspace_fixed, size_t workspace_per_image,
                                              double cost)
{
    if (list->count >= CONVOY__MAX_CANDIDATES)
        return NULL;
    convoy__conv_candidate *c = &list->items[list->count++];
    memset(c, 0, sizeof *c);
    c->algo = algo;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->workspace_fixed = workspace_fixed;
    c->workspace_per_image = workspace_per_image;
    c->deterministic = 1;
    c->exact = 1;
    c->cost = cost;
    return c;
}

const convoy__conv_algo *convoy__conv_registry_find(const convoy__conv_registry *registry,
                                                    const char *name, size_t len)
{
    for (int i = 0; registry && i < registry->count; ++i) {
        const char *candidate = registry->algos[i]->name;
        if (strlen(candidate) == len && strncasecmp(candidate, name, len) == 0)
            return registry->algos[i];
    }
    return NULL;
}

float *convoy__conv_written_operand(const convoy__conv_geom *g, convoy_conv_direction direction,
                                    const convoy__conv_buffers *b, int64_t *numel)
{
    switch (direction) {
    case CONVOY_CONV_BACKWARD_DATA:
        *numel = convoy__geom_input_numel(g);
        return b->input;
    case CONVOY_CONV_BACKWARD_FILTER:
        *numel = convoy__geom_filter_numel(g);
        return b->filters;
    default:
        *numel = convoy__geom_output_numel(g);
        return b->output;
    }
}

const char *convoy__refusal_unless_pointwise(convoy__backend *be, const convoy__conv_geom *geom,
                                             convoy_conv_direction direction)
{
    (void)be;
    (void)direction;
    return convoy__geom_is_pointwise(geom)
               ? NULL
               : "needs a pointwise geometry (1x1 kernel, stride 1, no padding, shared filters)";
}

/* Far below BLAS speed on every device: the last resort. */
#define COST_LAST_RESORT 100.0

void convoy__candidates_last_resort(convoy__backend *be, const convoy__conv_algo *self,
                                    const convoy__conv_geom *geom, convoy_conv_direction direction,
                                    convoy__candidate_list *list)
{
    (void)be;
    (void)geom;
    (void)direction;
    (void)convoy__candidate_add(list, self, self->name, 0, 0, COST_LAST_RESORT);
}

void convoy__candidates_none(convoy__backend *be, const convoy__conv_algo *self,
                             const convoy__conv_geom *geom, convoy_conv_direction direction,
                             convoy__candidate_list *list)
{
    (void)be;
    (void)self;
    (void)geom;
    (void)direction;
    (void)list;
}

convoy_status convoy__run_refused(convoy__backend *be, void *native_stream,
                                  const convoy__conv_plan *plan,
                                  const convoy__conv_buffers *buffers, void *workspace)
{
    (void)be;
    (void)native_stream;
    (void)buffers;
    (void)workspace;
    return convoy__error(CONVOY_ERR_UNSUPPORTED, "%s convolution: not available in this build",
                         plan && plan->candidate.algo ? plan->candidate.algo->name : "an");
}
