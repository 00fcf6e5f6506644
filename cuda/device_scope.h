/* Making the backend's device current for the length of one entry point and giving the caller
 * back its own afterwards. The current CUDA device is per host thread and belongs to the
 * program: a runtime on device 1, called from a thread that works on device 0, must leave
 * that thread on device 0.
 *
 * The decisions live here, apart from the CUDA calls, so host tests can run them against
 * recorded get/set functions: cuda/cuda_backend.c binds them to cudaGetDevice and
 * cudaSetDevice (convoy__cuda_enter / convoy__cuda_leave). No CUDA header is needed.
 *
 *   enter: read the current device; when it is not the wanted one, switch and remember to
 *          switch back. A failed read or switch is returned and leaves nothing to undo.
 *   leave: switch back only if enter switched. Scopes nest: an inner enter finds the wanted
 *          device already current, so it neither switches nor restores.
 *
 * A thread that never chose a device reads as device 0 (CUDA's default), so that is what it
 * gets back. */
#ifndef CONVOY_CUDA_DEVICE_SCOPE_H
#define CONVOY_CUDA_DEVICE_SCOPE_H

#include "convoy.h"

/* How to read and set the calling thread's current device. get and set return CONVOY_OK or
 * the mapped failure (with the message set); restore is set without any error reporting, for
 * leave, which must not replace the message of a failure the entry point is returning. */
typedef struct convoy__device_calls {
    convoy_status (*get)(void *context, int *device);
    convoy_status (*set)(void *context, int device);
    void (*restore)(void *context, int device);
    void *context;
} convoy__device_calls;

/* What enter found, for leave. */
typedef struct convoy__device_scope {
    int saved;    /* the caller's device, -1 when it could not be read */
    int switched; /* 1 when enter changed the current device */
} convoy__device_scope;

static inline convoy_status convoy__device_scope_enter(const convoy__device_calls *calls,
                                                       int wanted, convoy__device_scope *scope)
{
    scope->saved = -1;
    scope->switched = 0;
    int current = -1;
    convoy_status status = calls->get(calls->context, &current);
    if (status != CONVOY_OK)
        return status;
    scope->saved = current;
    if (current == wanted)
        return CONVOY_OK;
    status = calls->set(calls->context, wanted);
    if (status != CONVOY_OK)
        return status;
    scope->switched = 1;
    return CONVOY_OK;
}

/* The binding to cudaGetDevice / cudaSetDevice (cuda/cuda_backend.c). */
extern const convoy__device_calls convoy__cuda_device_calls;

static inline void convoy__device_scope_leave(const convoy__device_calls *calls,
                                              const convoy__device_scope *scope)
{
    if (scope->switched)
        calls->restore(calls->context, scope->saved);
}

#endif /* CONVOY_CUDA_DEVICE_SCOPE_H */
