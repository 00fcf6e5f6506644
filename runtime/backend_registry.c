/* The one place that knows which backends exist. A build without CUDA
 * compiles only the host backend; with CUDA, device AUTO tries the GPU and
 * falls back to the host with the reason kept for convoy_runtime_describe.
 * It also says which backend moves collective data itself: CUDA (NCCL);
 * on the host MPI moves it (runtime/comm_api.c). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cpu/host_backend.h"
#include "runtime/algorithm_names.h"
#include "runtime/options_int.h"
#include "runtime/runtime_int.h"
#include "core/error_detail.h"

#ifdef CONVOY_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

/* The host backend's BLAS threads: all cores for the synchronous path, the
 * cores divided between compute streams otherwise. */
static int host_blas_threads(const convoy_options *o)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int total = o->blas_threads > 0 ? o->blas_threads : (int)(cores > 0 ? cores : 1);
    int streams = o->streams > 0 ? o->streams : 1;
    int per_task = total / streams;
    return per_task > 0 ? per_task : 1;
}

static convoy_status open_host(const convoy_options *o, const char *note, convoy__backend **out)
{
    convoy__host_config config = {host_blas_threads(o), note};
    return convoy__host_backend_create(&config, out);
}

/* The registries of every backend of this build, for the names options may use. */
static const convoy__conv_registry *const registries[] = {
    &convoy__host_conv_registry,
#ifdef CONVOY_HAVE_CUDA
    &convoy__cuda_conv_registry,
#endif
};
#define REGISTRY_COUNT ((int)(sizeof registries / sizeof registries[0]))

/* Algorithms of backends this build leaves out. Options name them all the
 * same, so one configuration serves every build: excluding cudnn on a build
 * without CUDA is no error, and requiring it says this backend lacks it. */
static const char *const absent_names[] = {
#ifndef CONVOY_HAVE_CUDA
    "cudnn",
#endif
    NULL,
};

int convoy__algorithm_name_known(const char *name, size_t len)
{
    for (int r = 0; r < REGISTRY_COUNT; ++r) {
        if (convoy__conv_registry_find(registries[r], name, len))
            return 1;
    }
    for (int i = 0; absent_names[i]; ++i) {
        if (strlen(absent_names[i]) == len && strncasecmp(name, absent_names[i], len) == 0)
            return 1;
    }
    return 0;
}

static char all_names[256];
static pthread_once_t all_names_once = PTHREAD_ONCE_INIT;

/* Every name once, in registry order: "1x1,gemm,direct,cudnn". */
static void list_all_names(void)
{
    size_t used = 0;
    for (int r = 0; r < REGISTRY_COUNT; ++r) {
        for (int a = 0; a < registries[r]->count; ++a) {
            const char *name = registries[r]->algos[a]->name;
            int seen = 0;
            for (int q = 0; q < r; ++q)
                seen |= convoy__conv_registry_find(registries[q], name, strlen(name)) != NULL;
            if (seen || used + strlen(name) + 2 > sizeof all_names)
                continue;
            used += (size_t)snprintf(all_names + used, sizeof all_names - used, "%s%s",
                                     used ? "," : "", name);
        }
    }
    for (int i = 0; absent_names[i]; ++i) {
        if (used + strlen(absent_names[i]) + 2 <= sizeof all_names)
            used += (size_t)snprintf(all_names + used, sizeof all_names - used, "%s%s",
                                     used ? "," : "", absent_names[i]);
    }
}

const char *convoy__algorithm_names_all(void)
{
    pthread_once(&all_names_once, list_all_names);
    return all_names;
}

/* The next name of a comma-separated list, as options.c splits them. */
static const char *next_name(const char *p, size_t *len)
{
    while (*p == ',' || *p == ' ' || *p == '\t')
        ++p;
    if (!*p)
        return NULL;
    *len = strcspn(p, ", \t");
    return p;
}

/* The first name of require that the backend lacks or cannot use, with why;
 * NULL when it has them all. */
static const char *missing_required(const convoy_options *o, convoy__backend *be, size_t *len,
                                    const char **why)
{
    for (const char *p = o->require ? next_name(o->require, len) : NULL; p;
         p = next_name(p + *len, len)) {
        const convoy__conv_algo *algo = convoy__conv_registry_find(be->conv, p, *len);
        *why = !algo               ? "this backend has no such algorithm"
               : algo->unavailable ? algo->unavailable(be)
                                   : NULL;
        if (*why)
            return p;
    }
    return NULL;
}

/* Keeps the backend only when it has every required algorithm. */
static convoy_status check_required(const convoy_options *o, convoy__backend **be,
                                    const char *fallback_note)
{
    size_t len = 0;
    const char *why = NULL;
    const char *name = missing_required(o, *be, &len, &why);
    if (!name)
        return CONVOY_OK;
    convoy_status status = convoy__error(
        CONVOY_ERR_UNSUPPORTED, "runtime_create: require names %.*s, but on the %s backend %s%s%s",
        (int)len, name, (*be)->ops->name, why, fallback_note ? " " : "",
        fallback_note ? fallback_note : "");
    (*be)->ops->destroy(*be);
    *be = NULL;
    return status;
}

convoy_status convoy__backend_open(const convoy_options *o, convoy__backend **out, char *note,
                                   size_t note_size)
{
    note[0] = '\0';
    convoy_status status;
    if (o->device == CONVOY_DEVICE_CPU) {
        if ((status = open_host(o, NULL, out)) != CONVOY_OK)
            return status;
        return check_required(o, out, NULL);
    }
#ifdef CONVOY_HAVE_CUDA
    char why[256] = "";
    convoy__cuda_config config = {o->device_index, o->deterministic,
                                  !convoy__name_listed(o->exclude, "cudnn")};
    status = convoy__cuda_backend_create(&config, out, why, sizeof why);
    if (status == CONVOY_OK)
        return check_required(
            o, out, convoy__name_listed(o->exclude, "cudnn") ? "(exclude names cudnn too)" : NULL);
    if (o->device == CONVOY_DEVICE_CUDA)
        return convoy__error(status == CONVOY_ERR_NO_DEVICE ? CONVOY_ERR_NO_DEVICE : status,
                             "runtime_create: CUDA device %d is not usable: %s", o->device_index,
                             why);
    snprintf(note, note_size, "(no CUDA: %s)", why);
#else
    if (o->device == CONVOY_DEVICE_CUDA)
        return convoy__error(CONVOY_ERR_NO_DEVICE,
                             "runtime_create: CUDA was requested but this convoy was built "
                             "without the CUDA backend");
    snprintf(note, note_size, "(no CUDA: built without the CUDA backend)");
#endif
    if ((status = open_host(o, note, out)) != CONVOY_OK)
        return status;
    return check_required(o, out, note);
}

convoy_status convoy__backend_collectives_open(convoy__backend *be,
                                               const convoy__collective_config *config,
                                               convoy__collectives **out)
{
    *out = NULL;
    if (be->ops->device == CONVOY_DEVICE_CPU)
        return CONVOY_OK;
#ifdef CONVOY_HAVE_CUDA
    return convoy__cuda_collectives_open(be, config, out);
#else
    (void)config;
    return convoy__error(CONVOY_ERR_INTERNAL, "comm_create: no collectives for the %s backend",
                         be->ops->name);
#endif
}

void convoy__backend_collectives_describe(convoy__backend *be, char *text, size_t size)
{
    text[0] = '\0';
#ifdef CONVOY_HAVE_CUDA
    if (be->ops->device == CONVOY_DEVICE_CUDA)
        convoy__cuda_collectives_describe(text, size);
#else
    (void)be;
    (void)size;
#endif
}
