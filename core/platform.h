/* The few operating-system services every layer uses: a monotonic clock and
 * names for the library's own threads. */
#ifndef CONVOY_CORE_PLATFORM_H
#define CONVOY_CORE_PLATFORM_H

/* Monotonic clock in microseconds, for task timing and traces. */
double convoy__now_us(void);

/* Names the calling OS thread for debuggers (15 characters kept) and, when
 * the library is built with NVTX, for Nsight (the whole name). Names are a
 * process-wide annotation with no domain, so this lives below profiling/:
 * the host backend's worker threads name themselves through it. */
void convoy__name_this_thread(const char *name);

#endif /* CONVOY_CORE_PLATFORM_H */
