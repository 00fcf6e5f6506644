/* NVTX3 annotations in the "convoy" domain: task ranges (threads are named
 * through core/platform.h), so
 * Nsight Systems shows the schedule with no extra flags. When the library is
 * built without NVTX these are empty functions. Profiling never changes
 * behaviour: every function here ignores failures. */
#ifndef CONVOY_PROFILING_NVTX_H
#define CONVOY_PROFILING_NVTX_H

typedef struct convoy__prof_domain convoy__prof_domain;

/* NULL when NVTX is compiled out (the other calls accept NULL). */
convoy__prof_domain *convoy__prof_domain_create(const char *name);
void convoy__prof_domain_destroy(convoy__prof_domain *domain);

/* Opens / closes a range on the calling thread. */
void convoy__prof_range_push(convoy__prof_domain *domain, const char *label);
void convoy__prof_range_pop(convoy__prof_domain *domain);

#endif /* CONVOY_PROFILING_NVTX_H */
