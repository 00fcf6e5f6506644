/* The runtime object: creation (options, backend, pool, scheduler, planner,
 * staging, profiling), description, synchronisation and teardown. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiling/nvtx.h"
#include "profiling/trace.h"
#include "runtime/options_int.h"
#include "runtime/runtime_int.h"
#include "core/error_detail.h"
#include "core/log.h"
#include "core/platform.h"

/* Transfers from ordinary host memory move through pinned chunks this big, this many per
 * direction, used in turn: the memcpy of one overlaps the DMA of the other. */
#define CONVOY__STAGING_CHUNK ((size_t)4 << 20)
#define CONVOY__STAGING_CHUNKS 2

/* Default scratch per convolution when neither a workspace nor a memory
 * limit is given. */
#define CONVOY__DEFAULT_WORKSPACE ((size_t)1 << 30)

static char *copy_text(const char *text)
{
    return text ? strdup(text) : NULL;
}

static void runtime_free(convoy_runtime *rt)
{
    convoy__scheduler_destroy(rt->scheduler);
    convoy__planner_destroy(rt->planner);
    convoy__staging_destroy(rt->upload_staging);
    convoy__staging_destroy(rt->download_staging);
    /* The backend outlives the pool by a few lines; it must not reach a freed pool. */
    if (rt->backend)
        memset(&rt->backend->scratch, 0, sizeof rt->backend->scratch);
    convoy__pool_destroy(rt->pool);
    convoy__trace_destroy(rt->trace);
    convoy__prof_domain_destroy(rt->domain);
    if (rt->backend)
        rt->backend->ops->destroy(rt->backend);
    pthread_mutex_destroy(&rt->tensors_lock);
    free(rt->tune_cache_path);
    free(rt->trace_path);
    free(rt->exclude_names);
    free(rt->require_names);
    free(rt);
}

/* The trace's counter of the memory pool, read as tasks retire. */
static int sample_pool(void *user_data, const char **keys, double *values, int max)
{
    convoy_memory_statistics stats;
    if (max < 2)
        return 0;
    convoy__pool_stats(user_data, &stats);
    keys[0] = "in_use";
    values[0] = (double)stats.bytes_in_use;
    keys[1] = "cached";
    values[1] = (double)stats.bytes_cached;
    return 2;
}

/* Starts the trace, and its file when CONVOY_TRACE names one. A file that
 * cannot be written is no reason to fail: the runtime runs, the summary
 * still works, and a warning says why there will be no file. */
static convoy_status start_trace(convoy_runtime *rt)
{
    convoy_status status = convoy__trace_create(convoy__now_us(), &rt->trace);
    if (status != CONVOY_OK || !rt->trace_path)
        return status;
    if (convoy__trace_open(rt->trace, rt->trace_path) != CONVOY_OK) {
        convoy__logger logger = {rt->options.log_fn, rt->options.log_user_data};
        convoy__log_to(&logger, CONVOY_LOG_WARNING, "%s", convoy__error_text());
    }
    return CONVOY_OK;
}

static const char *policy_name(convoy_algo_policy policy)
{
    switch (policy) {
    case CONVOY_ALGO_TIME_ONCE:
        return "time_once";
    case CONVOY_ALGO_TIME_ON_SHAPE_CHANGE:
        return "time_on_shape_change";
    default:
        return "heuristic";
    }
}

static convoy_status create_parts(convoy_runtime *rt)
{
    convoy_options *o = &rt->options;
    char note[300];
    convoy_status status = convoy__backend_open(o, &rt->backend, note, sizeof note);
    if (status != CONVOY_OK)
        return status;
    convoy__backend *be = rt->backend;
    int streams = o->streams >= 0 ? o->streams : (be->ops->device == CONVOY_DEVICE_CUDA ? 4 : 0);
    /* CUDA work is always asynchronous: it needs at least one stream. */
    if (be->ops->device == CONVOY_DEVICE_CUDA && streams == 0)
        streams = 1;
    o->streams = streams;
    if ((o->trace_path || o->profile) && (status = start_trace(rt)) != CONVOY_OK)
        return status;
    rt->domain = convoy__prof_domain_create("convoy");
    if ((status = convoy__pool_create(be, o->memory_limit, o->test_fail_alloc, &rt->pool)) !=
        CONVOY_OK)
        return status;
    /* The backend's own scratch (timing buffers, cuBLAS workspaces) comes from the pool too,
     * under the same limit. */
    be->scratch = convoy__pool_scratch(rt->pool);
    convoy__trace_set_sampler(rt->trace, "pool bytes", sample_pool, rt->pool);
    rt->workspace_limit = o->workspace_limit ? o->workspace_limit
                          : o->memory_limit  ? o->memory_limit / 4
                                             : CONVOY__DEFAULT_WORKSPACE;
    if ((status = convoy__staging_create(be, "convoy upload staging", CONVOY__STAGING_CHUNK,
                                         CONVOY__STAGING_CHUNKS, &rt->upload_staging)) !=
            CONVOY_OK ||
        (status = convoy__staging_create(be, "convoy download staging", CONVOY__STAGING_CHUNK,
                                         CONVOY__STAGING_CHUNKS, &rt->download_staging)) !=
            CONVOY_OK)
        return status;
    convoy__scheduler_config sched = {streams, rt->domain, rt->trace};
    if ((status = convoy__scheduler_create(be, &sched, &rt->scheduler)) != CONVOY_OK)
        return status;
    char environment[512];
    snprintf(environment, sizeof environment, "%s | convoy %s", be->ops->describe(be),
             CONVOY_VERSION_STRING);
    convoy__planner_config plan = {.backend = be,
                                   .pool = rt->pool,
                                   .scheduler = rt->scheduler,
                                   .exclude = o->exclude,
                                   .deterministic = o->deterministic,
                                   .exact_only = o->exact_only,
                                   .policy = o->algo,
                                   .workspace_limit = rt->workspace_limit,
                                   .tune_cache_path = rt->tune_cache_path,
                                   .environment = environment,
                                   .log = o->log_fn,
                                   .log_user_data = o->log_user_data};
    if ((status = convoy__planner_create(&plan, &rt->planner)) != CONVOY_OK)
        return status;
    char comm[256];
    convoy__comm_describe(be, comm, sizeof comm);
    snprintf(rt->description, sizeof rt->description,
             "%s; %d compute stream%s%s; algo %s; exclude %s; %s; convoy %s", be->ops->describe(be),
             streams, streams == 1 ? "" : "s", streams == 0 ? " (inline)" : "",
             policy_name(o->algo), o->exclude && *o->exclude ? o->exclude : "none", comm,
             CONVOY_VERSION_STRING);
    return CONVOY_OK;
}

convoy_status convoy_runtime_create(const convoy_options *options, convoy_runtime **out)
{
    if (!out)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "runtime_create: out is NULL");
    convoy_options o;
    convoy_status status;
    if (options) {
        o = *options;
    } else if ((status = convoy_options_init(&o)) != CONVOY_OK ||
               (status = convoy_options_from_env(&o)) != CONVOY_OK) {
        convoy__error_prefix("runtime_create");
        return status;
    }
    if ((status = convoy__options_check(&o)) != CONVOY_OK ||
        (status = convoy__options_test_hook(&o)) != CONVOY_OK)
        return status;
    convoy_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "runtime_create: out of host memory");
    pthread_mutex_init(&rt->tensors_lock, NULL);
    rt->options = o;
    rt->tune_cache_path = copy_text(o.tune_cache);
    rt->trace_path = copy_text(o.trace_path);
    rt->exclude_names = copy_text(o.exclude);
    rt->require_names = copy_text(o.require);
    rt->options.tune_cache = rt->tune_cache_path;
    rt->options.trace_path = rt->trace_path;
    rt->options.exclude = rt->exclude_names;
    rt->options.require = rt->require_names;
    /* A profile summary with nowhere to go goes to stderr: the program asked
     * for it. */
    if (!rt->options.log_fn && o.profile)
        rt->options.log_fn = convoy__log_stderr;
    if ((o.tune_cache && !rt->tune_cache_path) || (o.trace_path && !rt->trace_path) ||
        (o.exclude && !rt->exclude_names) || (o.require && !rt->require_names)) {
        runtime_free(rt);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "runtime_create: out of host memory");
    }
    if ((status = create_parts(rt)) != CONVOY_OK) {
        char message[1024];
        snprintf(message, sizeof message, "%s", convoy__error_text());
        runtime_free(rt);
        convoy__error_set_text(message);
        return status;
    }
    *out = rt;
    return CONVOY_OK;
}

static void report_profile(convoy_runtime *rt)
{
    if (!rt->trace)
        return;
    convoy__logger logger = {rt->options.log_fn, rt->options.log_user_data};
    if (convoy__trace_close(rt->trace) != CONVOY_OK)
        convoy__log_to(&logger, CONVOY_LOG_WARNING, "%s", convoy__error_text());
    if (rt->options.profile) {
        char summary[8192];
        convoy__trace_summary(rt->trace, summary, sizeof summary);
        convoy__log_to(&logger, CONVOY_LOG_INFO, "task summary (%s)\n%s", rt->description, summary);
    }
}

void convoy_runtime_destroy(convoy_runtime *rt)
{
    if (!rt)
        return;
    (void)convoy__scheduler_synchronize(rt->scheduler);
    /* Tensors the program did not destroy: their tasks are done, so their
     * storage can go straight back to the pool. The handles stay with the
     * program, detached, until it destroys them. */
    pthread_mutex_lock(&rt->tensors_lock);
    convoy_tensor *t = rt->tensors;
    rt->tensors = NULL;
    pthread_mutex_unlock(&rt->tensors_lock);
    while (t) {
        convoy_tensor *next = t->next;
        convoy__tensor_detach(t);
        t = next;
    }
    /* Communicators the program did not destroy: their collectives are done too, so their
     * MPI and device parts go now (MPI is still initialised: the program finalizes it after
     * destroying what uses it). */
    pthread_mutex_lock(&rt->tensors_lock);
    convoy_comm *comm = rt->comms;
    rt->comms = NULL;
    pthread_mutex_unlock(&rt->tensors_lock);
    while (comm) {
        convoy_comm *next = convoy__comm_next(comm);
        convoy__comm_detach(comm);
        comm = next;
    }
    convoy__scheduler_destroy(rt->scheduler);
    rt->scheduler = NULL;
    report_profile(rt);
    runtime_free(rt);
}

convoy_status convoy_runtime_synchronize(convoy_runtime *rt)
{
    if (!rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "runtime_synchronize: runtime is NULL");
    return convoy__scheduler_synchronize(rt->scheduler);
}

convoy_device convoy_runtime_device(const convoy_runtime *rt)
{
    return rt ? rt->backend->ops->device : CONVOY_DEVICE_CPU;
}

const char *convoy_runtime_describe(const convoy_runtime *rt)
{
    return rt ? rt->description : "";
}

convoy_status convoy_memory_stats(convoy_runtime *rt, convoy_memory_statistics *stats)
{
    if (!rt || !stats)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "memory_stats: %s is NULL",
                             rt ? "stats" : "runtime");
    convoy__pool_stats(rt->pool, stats);
    return CONVOY_OK;
}

convoy_status convoy_memory_trim(convoy_runtime *rt)
{
    if (!rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "memory_trim: runtime is NULL");
    return convoy__pool_trim(rt->pool);
}
