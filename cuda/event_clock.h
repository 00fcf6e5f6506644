/* Placing CUDA timing events on the host clock, for the profiler's device
 * intervals (core/device.h, timer_*). cudaEventElapsedTime only gives the
 * time between two events, in float milliseconds. So the backend keeps an
 * anchor: a timing event recorded on an otherwise idle stream and waited
 * for, whose host time is taken as the middle of the host readings before
 * the record and after the wait (the stream reaches an idle record within
 * microseconds). A task's start is the anchor's host time plus the time from
 * the anchor to the task's start event; its end adds the time between its
 * own two events.
 *
 * A float of milliseconds keeps about 7 digits, so an offset of one second
 * is good to some 0.06 microseconds, and one of an hour only to a quarter of
 * a millisecond: a new anchor is taken when the current one is a second old
 * (at a task's start record, so an idle runtime takes none).
 *
 * The decisions live here, apart from the CUDA calls, so the host tests run
 * them: cuda/cuda_backend.c applies them. No CUDA header is needed. */
#ifndef CONVOY_CUDA_EVENT_CLOCK_H
#define CONVOY_CUDA_EVENT_CLOCK_H

/* The age at which an anchor is replaced. */
#define CONVOY__CUDA_ANCHOR_MAX_AGE_US 1e6

/* 1 when a task's start record needs a new anchor first: there is none, it
 * is a second old, or the clock went backwards (a NaN included). */
static inline int convoy__cuda_anchor_due(int have_anchor, double anchor_host_us, double now_us)
{
    double age = now_us - anchor_host_us;
    return !have_anchor || !(age >= 0.0 && age < CONVOY__CUDA_ANCHOR_MAX_AGE_US);
}

/* The host time of an anchor recorded just after before_us and seen
 * complete at after_us. */
static inline double convoy__cuda_anchor_host_us(double before_us, double after_us)
{
    return before_us + (after_us - before_us) / 2.0;
}

/* A task's interval on the host clock: its start event ms_to_start after
 * the anchor, its end event ms_span after its start (negative spans, which
 * timing jitter can give a task that did nothing, count as 0). */
static inline void convoy__cuda_event_interval(double anchor_host_us, float ms_to_start,
                                               float ms_span, double *start_us, double *end_us)
{
    *start_us = anchor_host_us + 1000.0 * (double)ms_to_start;
    *end_us = *start_us + (ms_span > 0.0f ? 1000.0 * (double)ms_span : 0.0);
}

#endif /* CONVOY_CUDA_EVENT_CLOCK_H */
