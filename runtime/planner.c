/* The plan cache and algorithm selection. Candidates come from the algorithms
 * the backend registers (kernels/conv_algo.h); the planner removes the
 * excluded, the non-deterministic or inexact (when asked) and those whose
 * workspace cannot fit, then ranks the rest by the backend's
 * cost model (heuristic) or by timing them (time_once,
 * time_on_shape_change), and caches the winner under a key made of the
 * direction and the whole geometry. */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "memory/workspace.h"
#include "runtime/planner.h"
#include "runtime/tune_cache.h"
#include "core/error_detail.h"
#include "core/hash.h"

#define BUCKETS 256
#define KEY_SIZE 320

typedef struct plan_entry {
    char key[KEY_SIZE];
    convoy__conv_plan plan;
    struct plan_entry *next;
} plan_entry;

/* time_on_shape_change remembers, per convolution "site" (everything but
 * the batch and spatial extents), the shape it last planned. */
typedef struct site_entry {
    char site[KEY_SIZE];
    char key[KEY_SIZE];
    struct site_entry *next;
} site_entry;

struct convoy__planner {
    convoy__planner_config config;
    convoy__tune_cache *tune;
    /* lock guards the buckets, sites and stale plans; planning (and timing)
     * happens under it, so two threads never time the same shape twice. */
    pthread_mutex_t lock;
    plan_entry *buckets[BUCKETS];
    site_entry *sites;
    plan_entry *stale; /* replaced plans: tasks already submitted may still use them */
    char *exclude;     /* the planner's copy of config.exclude */
};

static const char *const direction_names[3] = {"fwd", "bwd_data", "bwd_filter"};

void convoy__plan_key(const convoy__conv_geom *g, convoy_conv_direction direction, char *buffer,
                      size_t size)
{
    snprintf(buffer, size,
             "%s n%lld c%lld m%lld g%lld i%lldx%lldx%lld k%lldx%lldx%lld o%lldx%lldx%lld "
             "pb%lldx%lldx%lld pa%lldx%lldx%lld s%lldx%lldx%lld d%lldx%lldx%lld f%d u%d",
             direction_names[direction], (long long)g->batch, (long long)g->in_channels,
             (long long)g->out_channels, (long long)g->groups, (long long)g->in[0],
             (long long)g->in[1], (long long)g->in[2], (long long)g->kernel[0],
             (long long)g->kernel[1], (long long)g->kernel[2], (long long)g->out[0],
             (long long)g->out[1], (long long)g->out[2], (long long)g->pad_before[0],
             (long long)g->pad_before[1], (long long)g->pad_before[2], (long long)g->pad_after[0],
             (long long)g->pad_after[1], (long long)g->pad_after[2], (long long)g->stride[0],
             (long long)g->stride[1], (long long)g->stride[2], (long long)g->dilation[0],
             (long long)g->dilation[1], (long long)g->dilation[2], g->flip, g->unshared);
}

static void site_key(const convoy__conv_geom *g, convoy_conv_direction direction, char *buffer,
                     size_t size)
{
    snprintf(buffer, size, "%s c%lld m%lld g%lld k%lldx%lldx%lld s%lldx%lldx%lld f%d u%d",
             direction_names[direction], (long long)g->in_channels, (long long)g->out_channels,
             (long long)g->groups, (long long)g->kernel[0], (long long)g->kernel[1],
             (long long)g->kernel[2], (long long)g->stride[0], (long long)g->stride[1],
             (long long)g->stride[2], g->flip, g->unshared);
}

static unsigned hash_text(const char *text)
{
    return (unsigned)(convoy__fnv1a(text, strlen(text)) % BUCKETS);
}

convoy_status convoy__planner_create(const convoy__planner_config *config, convoy__planner **out)
{
    convoy__planner *p = calloc(1, sizeof *p);
    if (!p)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "runtime_create: out of host memory");
    p->config = *config;
    p->config.tune_cache_path = NULL;
    p->config.environment = NULL;
    p->config.exclude = NULL;
    if (config->exclude && !(p->exclude = strdup(config->exclude))) {
        free(p);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "runtime_create: out of host memory");
    }
    p->config.exclude = p->exclude;
    pthread_mutex_init(&p->lock, NULL);
    if (config->tune_cache_path && config->policy != CONVOY_ALGO_HEURISTIC) {
        convoy_status status =
            convoy__tune_cache_open(config->tune_cache_path, config->environment, config->log,
                                    config->log_user_data, &p->tune);
        if (status != CONVOY_OK) {
            convoy__planner_destroy(p);
            return status;
        }
    }
    *out = p;
    return CONVOY_OK;
}

static void release_plan(convoy__planner *p, convoy__conv_plan *plan)
{
    if (plan->candidate.algo->release)
        plan->candidate.algo->release(p->config.backend, plan);
}

static void release_entries(convoy__planner *p, plan_entry *e)
{
    while (e) {
        plan_entry *next = e->next;
        release_plan(p, &e->plan);
        free(e);
        e = next;
    }
}

void convoy__planner_destroy(convoy__planner *p)
{
    if (!p)
        return;
    for (int b = 0; b < BUCKETS; ++b)
        release_entries(p, p->buckets[b]);
    release_entries(p, p->stale);
    while (p->sites) {
        site_entry *next = p->sites->next;
        free(p->sites);
        p->sites = next;
    }
    convoy__tune_cache_close(p->tune);
    pthread_mutex_destroy(&p->lock);
    free(p->exclude);
    free(p);
}

/* A candidate that survived filtering, with its chunk and workspace. */
typedef struct viable {
    convoy__conv_candidate candidate;
    int64_t chunk;
    size_t bytes;
} viable;

static void append(char *buffer, size_t size, const char *format, ...) CONVOY__PRINTF_LIKE(3, 4);

static void append(char *buffer, size_t size, const char *format, ...)
{
    size_t used = strlen(buffer);
    if (used + 1 >= size)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(buffer + used, size - used, format, args);
    va_end(args);
}

/* 1 when the comma-separated list names the candidate: by its algorithm
 * ("cudnn") or by its full name ("cudnn:FFT"). */
static int listed(const char *list, const convoy__conv_candidate *c)
{
    for (const char *p = list; p && *p;) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t");
        if (len == 0)
            break;
        if ((strlen(c->algo->name) == len && strncasecmp(p, c->algo->name, len) == 0) ||
            (strlen(c->name) == len && strncasecmp(p, c->name, len) == 0))
            return 1;
        p += len;
    }
    return 0;
}

/* The workspace one chunk size takes, and the chunk: the largest under the
 * limit, trimmed to the algorithm's hint. */
static convoy_status fit_workspace(const convoy__planner *p, const convoy__conv_candidate *c,
                                   const convoy__conv_geom *g, int64_t *chunk, size_t *bytes)
{
    convoy_status status =
        convoy__workspace_plan(c->workspace_fixed, c->workspace_per_image, g->batch,
                               p->config.workspace_limit, chunk, bytes);
    if (status != CONVOY_OK || c->chunk_hint <= 0 || *chunk <= c->chunk_hint)
        return status;
    *chunk = c->chunk_hint;
    *bytes = c->workspace_fixed + c->workspace_per_image * (size_t)*chunk;
    return CONVOY_OK;
}

/* Asks every algorithm of the backend for its candidates and keeps those the
 * options and the workspace limit allow; on failure writes why each
 * algorithm or candidate was refused. */
static int filter_candidates(convoy__planner *p, const convoy__conv_geom *g,
                             convoy_conv_direction direction, viable *out, char *why,
                             size_t why_size, int *only_workspace)
{
    convoy__backend *be = p->config.backend;
    const convoy__conv_registry *registry = be->conv;
    convoy__candidate_list all = {.count = 0};
    int count = 0, workspace_refusals = 0, other_refusals = 0;
    why[0] = '\0';
    for (int a = 0; a < registry->count; ++a) {
        const convoy__conv_algo *algo = registry->algos[a];
        const char *refusal = algo->refusal ? algo->refusal(be, g, direction) : NULL;
        if (refusal) {
            append(why, why_size, "%s: %s; ", algo->name, refusal);
            other_refusals++;
            continue;
        }
        int before = all.count;
        algo->candidates(be, algo, g, direction, &all);
        if (all.count == before) {
            append(why, why_size, "%s: offers nothing for this convolution on %s; ", algo->name,
                   be->ops->name);
            other_refusals++;
        }
    }
    for (int i = 0; i < all.count; ++i) {
        const convoy__conv_candidate *c = &all.items[i];
        if (listed(p->config.exclude, c)) {
            append(why, why_size, "%s: excluded by CONVOY_EXCLUDE; ", c->name);
            other_refusals++;
            continue;
        }
        if (p->config.deterministic && !c->deterministic) {
            append(why, why_size, "%s: not deterministic (CONVOY_DETERMINISTIC=1); ", c->name);
            other_refusals++;
            continue;
        }
        if (p->config.exact_only && !c->exact) {
            append(why, why_size, "%s: not exact (only exact algorithms allowed); ", c->name);
            other_refusals++;
            continue;
        }
        int64_t chunk = 0;
        size_t bytes = 0;
        if (fit_workspace(p, c, g, &chunk, &bytes) != CONVOY_OK) {
            append(why, why_size, "%s: %s; ", c->name, convoy__error_text());
            workspace_refusals++;
            continue;
        }
        out[count++] = (viable){*c, chunk, bytes};
    }
    *only_workspace = workspace_refusals > 0 && other_refusals == 0;
    return count;
}

/* Picks the fastest candidate by timing each; falls back to the cost order
 * for a candidate whose timing fails. The direct loops are the last resort,
 * not a contender: they are timed only when nothing else applies, since on
 * a real layer one run takes seconds and never wins. */
static int time_candidates(convoy__planner *p, const convoy__conv_geom *g,
                           convoy_conv_direction direction, const viable *v, int count,
                           double *best_ms)
{
    convoy__backend *be = p->config.backend;
    int best = -1;
    for (int i = 0; i < count; ++i) {
        const convoy__conv_algo *algo = v[i].candidate.algo;
        if (!strcmp(algo->name, "direct") && count > 1)
            continue;
        convoy__conv_plan trial = {.geom = *g,
                                   .direction = direction,
                                   .candidate = v[i].candidate,
                                   .images_per_chunk = v[i].chunk,
                                   .workspace_bytes = v[i].bytes};
        double ms = 0.0;
        if (algo->prepare && algo->prepare(be, &trial) != CONVOY_OK)
            continue;
        convoy_status status = be->conv->time(be, &trial, &ms);
        if (algo->release)
            algo->release(be, &trial);
        if (status == CONVOY_OK && (best < 0 || ms < *best_ms)) {
            best = i;
            *best_ms = ms;
        }
    }
    return best;
}

static int choose(convoy__planner *p, const char *key, const convoy__conv_geom *g,
                  convoy_conv_direction direction, const viable *v, int count)
{
    int best = 0;
    for (int i = 1; i < count; ++i) {
        if (v[i].candidate.cost < v[best].candidate.cost)
            best = i;
    }
    if (p->config.policy == CONVOY_ALGO_HEURISTIC || count == 1)
        return best;
    char cached[64];
    double ms = 0.0;
    if (p->tune && p->config.policy == CONVOY_ALGO_TIME_ONCE &&
        convoy__tune_cache_lookup(p->tune, key, cached, sizeof cached, &ms)) {
        for (int i = 0; i < count; ++i) {
            if (!strcmp(v[i].candidate.name, cached))
                return i;
        }
    }
    int timed = time_candidates(p, g, direction, v, count, &ms);
    if (timed < 0)
        return best;
    if (p->tune)
        (void)convoy__tune_cache_store(p->tune, key, v[timed].candidate.name, ms);
    return timed;
}

/* time_on_shape_change: a new shape at a site evicts the site's old plan so
 * returning to it is timed again. Evicted plans move to the stale list
 * because tasks already submitted may still point at them. */
static void note_site(convoy__planner *p, const convoy__conv_geom *g,
                      convoy_conv_direction direction, const char *key)
{
    char site[KEY_SIZE];
    site_key(g, direction, site, sizeof site);
    site_entry *s = p->sites;
    while (s && strcmp(s->site, site))
        s = s->next;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return;
        snprintf(s->site, sizeof s->site, "%s", site);
        s->next = p->sites;
        p->sites = s;
    } else if (strcmp(s->key, key)) {
        plan_entry **link = &p->buckets[hash_text(s->key)];
        while (*link && strcmp((*link)->key, s->key))
            link = &(*link)->next;
        if (*link) {
            plan_entry *old = *link;
            *link = old->next;
            old->next = p->stale;
            p->stale = old;
        }
    }
    snprintf(s->key, sizeof s->key, "%s", key);
}

convoy_status convoy__planner_plan(convoy__planner *p, const char *call, const convoy__conv_geom *g,
                                   convoy_conv_direction direction, const convoy__conv_plan **plan,
                                   int *from_cache)
{
    char key[KEY_SIZE];
    convoy__plan_key(g, direction, key, sizeof key);
    unsigned bucket = hash_text(key);
    pthread_mutex_lock(&p->lock);
    if (p->config.policy == CONVOY_ALGO_TIME_ON_SHAPE_CHANGE)
        note_site(p, g, direction, key);
    for (plan_entry *e = p->buckets[bucket]; e; e = e->next) {
        if (!strcmp(e->key, key)) {
            *plan = &e->plan;
            if (from_cache)
                *from_cache = 1;
            pthread_mutex_unlock(&p->lock);
            return CONVOY_OK;
        }
    }
    viable v[CONVOY__MAX_CANDIDATES];
    char why[1024];
    int only_workspace = 0;
    int count = filter_candidates(p, g, direction, v, why, sizeof why, &only_workspace);
    if (count == 0) {
        pthread_mutex_unlock(&p->lock);
        size_t len = strlen(why);
        if (len >= 2)
            why[len - 2] = '\0';
        return convoy__error(only_workspace ? CONVOY_ERR_OUT_OF_MEMORY : CONVOY_ERR_UNSUPPORTED,
                             "%s: no implementation can run %s on %s: %s", call, key,
                             p->config.backend->ops->name, why);
    }
    int chosen = choose(p, key, g, direction, v, count);
    plan_entry *e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&p->lock);
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory for a plan", call);
    }
    snprintf(e->key, sizeof e->key, "%s", key);
    e->plan.geom = *g;
    e->plan.direction = direction;
    e->plan.candidate = v[chosen].candidate;
    e->plan.images_per_chunk = v[chosen].chunk;
    e->plan.workspace_bytes = v[chosen].bytes;
    const convoy__conv_algo *algo = e->plan.candidate.algo;
    convoy_status status = algo->prepare ? algo->prepare(p->config.backend, &e->plan) : CONVOY_OK;
    if (status != CONVOY_OK) {
        pthread_mutex_unlock(&p->lock);
        free(e);
        convoy__error_prefix(call);
        return status;
    }
    e->next = p->buckets[bucket];
    p->buckets[bucket] = e;
    *plan = &e->plan;
    if (from_cache)
        *from_cache = 0;
    pthread_mutex_unlock(&p->lock);
    return CONVOY_OK;
}
