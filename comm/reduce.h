/* The arithmetic of the deterministic all-reduce, apart from MPI so the tests check it on
 * its own: which slice of a buffer each rank reduces, and the sum in rank order.
 *
 * Each rank r owns the slice [start_r, start_r + count_r) of the buffer: every rank sends it
 * its part of that slice (an all-to-all), r adds the parts in rank order, ((p0 + p1) + p2) +
 * ..., and every rank gathers the reduced slices (an all-gather). Each element is then the
 * same sum, in the same order, on every rank and in every run, and equals what one process
 * gets by accumulating the ranks' parts one after another. The data moved is that of a ring
 * all-reduce: 2 (N - 1) / N of the buffer per rank. */
#ifndef CONVOY_COMM_REDUCE_H
#define CONVOY_COMM_REDUCE_H

#include <stdint.h>
#include <string.h>

/* Rank r's slice of total elements over ranks ranks: the first total % ranks ranks get one
 * more element than the others. */
static inline void convoy__comm_slice(int64_t total, int ranks, int r, int64_t *start,
                                      int64_t *count)
{
    int64_t base = total / ranks, extra = total % ranks;
    *start = base * r + (r < extra ? r : extra);
    *count = base + (r < extra ? 1 : 0);
}

/* out[i] = ((parts[0][i] + parts[1][i]) + parts[2][i]) + ..., for i < count. parts are
 * stride elements apart, starting at parts0. out may be parts0 itself. */
static inline void convoy__comm_sum_in_rank_order(float *out, const float *parts0, int64_t stride,
                                                  int ranks, int64_t count)
{
    if (out != parts0)
        memmove(out, parts0, (size_t)count * sizeof *out);
    for (int r = 1; r < ranks; ++r) {
        const float *part = parts0 + stride * r;
        for (int64_t i = 0; i < count; ++i)
            out[i] += part[i];
    }
}

#endif /* CONVOY_COMM_REDUCE_H */
