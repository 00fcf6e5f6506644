/* The plan cache and algorithm selection. Candidates come from the algorithms
 * the backend registers (kernels/conv_algo.h); the planner removes the
 * excluded, the non-deterministic or inexact (when asked) and those whose
 * workspace cannot fit under the workspace limit and what the pool can grant,
 * then ranks the rest by the backend's cost model (heuristic) or by timing
 * them (time_once, time_on_shape_change), and caches the winner under a key
 * made of the direction and the whole geometry.
 *
 * The cache is a hash table plus a least-recently-used list bounded by
 * CONVOY__PLAN_CACHE_SIZE. Entries are reference-counted (planner.h says who
 * holds what). An evicted entry moves to the retired list and is freed when
 * its last reference goes, or, when tasks using it had not all been seen
 * complete then, by a later sweep: one runs whenever a plan is built. */
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

#define BUCKETS 1024 /* a power of two near the cache size */
#define KEY_SIZE 320

typedef struct plan_entry {
    convoy__conv_plan plan;
    convoy__conv_plan fallback; /* fallback.candidate.algo NULL: none */
    convoy__hazards users;      /* tasks using the plan; the scheduler's lock guards it */
    int refs;                   /* the cache's, plus one per plan() not yet released */
    int cached;
    /* The workspace ceiling it was planned under; memory_bound when the pool's
     * availability, not the workspace limit, shaped the choice. Such a plan is
     * made again once the pool can grant what the workspace limit alone
     * allowed (wanted), or at least twice its ceiling. */
    size_t ceiling;
    size_t wanted;
    int memory_bound;
    unsigned key_hash, site_hash;
    struct plan_entry *key_next, *site_next; /* hash chains of the cache */
    /* The cache's LRU list while cached, the retired list once evicted. */
    struct plan_entry *newer, *older;
    char key[KEY_SIZE];
    char site[KEY_SIZE]; /* "" unless the policy is time_on_shape_change */
} plan_entry;

struct convoy__planner {
    convoy__planner_config config;
    convoy__tune_cache *tune;
    /* lock guards everything below and every entry's count and links;
     * planning (and timing) happens under it, so two threads never time the
     * same shape twice. Freeing an evicted entry asks the scheduler whether
     * its users completed, taking the scheduler's lock inside this one, so
     * nothing may call the planner with the scheduler's lock held (the
     * convolution's bind does not: its fallback was prepared here). */
    pthread_mutex_t lock;
    plan_entry *by_key[BUCKETS];
    plan_entry *by_site[BUCKETS]; /* time_on_shape_change: one cached entry per site */
    plan_entry *newest, *oldest;  /* the cache, most recently used first */
    plan_entry *retired;          /* evicted, waiting for a zero count and idle users */
    size_t cached, alive, built;
    char *exclude; /* the planner's copy of config.exclude */
};

static const char *const direction_names[3] = {"fwd", "bwd_data", "bwd_filter"};

/* The key text; with_batch 0 leaves the batch out (the site). */
static void key_text(const convoy__conv_geom *g, convoy_conv_direction direction, int with_batch,
                     char *buffer, size_t size)
{
    char batch[32] = "";
    if (with_batch)
        snprintf(batch, sizeof batch, " n%lld", (long long)g->batch);
    snprintf(buffer, size,
             "%s%s c%lld m%lld g%lld i%lldx%lldx%lld k%lldx%lldx%lld o%lldx%lldx%lld "
             "pb%lldx%lldx%lld pa%lldx%lldx%lld s%lldx%lldx%lld d%lldx%lldx%lld f%d u%d",
             direction_names[direction], batch, (long long)g->in_channels,
             (long long)g->out_channels, (long long)g->groups, (long long)g->in[0],
             (long long)g->in[1], (long long)g->in[2], (long long)g->kernel[0],
             (long long)g->kernel[1], (long long)g->kernel[2], (long long)g->out[0],
             (long long)g->out[1], (long long)g->out[2], (long long)g->pad_before[0],
             (long long)g->pad_before[1], (long long)g->pad_before[2], (long long)g->pad_after[0],
             (long long)g->pad_after[1], (long long)g->pad_after[2], (long long)g->stride[0],
             (long long)g->stride[1], (long long)g->stride[2], (long long)g->dilation[0],
             (long long)g->dilation[1], (long long)g->dilation[2], g->flip, g->unshared);
}

void convoy__plan_key(const convoy__conv_geom *g, convoy_conv_direction direction, char *buffer,
                      size_t size)
{
    key_text(g, direction, 1, buffer, size);
}

void convoy__plan_site(const convoy__conv_geom *g, convoy_conv_direction direction, char *buffer,
                       size_t size)
{
    key_text(g, direction, 0, buffer, size);
}

static unsigned hash_text(const char *text)
{
    return (unsigned)(convoy__fnv1a(text, strlen(text)) % BUCKETS);
}

static plan_entry *entry_of(const convoy__conv_plan *plan)
{
    return (plan_entry *)(void *)((char *)(uintptr_t)plan - offsetof(plan_entry, plan));
}

const convoy__conv_plan *convoy__planner_fallback(const convoy__conv_plan *plan)
{
    plan_entry *e = entry_of(plan);
    return e->fallback.candidate.algo ? &e->fallback : NULL;
}

convoy__hazards *convoy__planner_users(const convoy__conv_plan *plan)
{
    return &entry_of(plan)->users;
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

/* ---- entries' lifetime ------------------------------------------------- */

static void free_entry(convoy__planner *p, plan_entry *e)
{
    convoy__backend *be = p->config.backend;
    if (e->plan.candidate.algo->release)
        e->plan.candidate.algo->release(be, &e->plan);
    if (e->fallback.candidate.algo && e->fallback.candidate.algo->release)
        e->fallback.candidate.algo->release(be, &e->fallback);
    /* Drops the references to tasks already complete (at destroy: to every
     * task, all of which have completed). */
    convoy__hazards_clear(NULL, &e->users);
    p->alive--;
    free(e);
}

/* 1 when no task submitted with the entry can still run; the users record
 * is then emptied. */
static int users_idle(convoy__planner *p, plan_entry *e)
{
    return !p->config.scheduler || convoy__scheduler_clear_if_idle(p->config.scheduler, &e->users);
}

static void retired_unlink(convoy__planner *p, plan_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        p->retired = e->older;
    if (e->older)
        e->older->newer = e->newer;
}

/* Frees a retired entry once nothing holds it and its tasks completed. */
static void try_free(convoy__planner *p, plan_entry *e)
{
    if (e->refs > 0 || !users_idle(p, e))
        return;
    retired_unlink(p, e);
    free_entry(p, e);
}

static void drop(convoy__planner *p, plan_entry *e)
{
    if (--e->refs == 0 && !e->cached)
        try_free(p, e);
}

/* Frees the retired entries nothing needs any more. */
static void sweep(convoy__planner *p)
{
    plan_entry *e = p->retired;
    while (e) {
        plan_entry *next = e->older;
        try_free(p, e);
        e = next;
    }
}

/* ---- the cache ------------------------------------------------------------ */

static void unlink_key(convoy__planner *p, plan_entry *e)
{
    plan_entry **link = &p->by_key[e->key_hash];
    while (*link != e)
        link = &(*link)->key_next;
    *link = e->key_next;
}

static void unlink_site(convoy__planner *p, plan_entry *e)
{
    plan_entry **link = &p->by_site[e->site_hash];
    while (*link != e)
        link = &(*link)->site_next;
    *link = e->site_next;
}

static void lru_unlink(convoy__planner *p, plan_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        p->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        p->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(convoy__planner *p, plan_entry *e)
{
    e->newer = NULL;
    e->older = p->newest;
    if (p->newest)
        p->newest->newer = e;
    else
        p->oldest = e;
    p->newest = e;
}

static int by_site(const convoy__planner *p)
{
    return p->config.policy == CONVOY_ALGO_TIME_ON_SHAPE_CHANGE;
}

/* Takes e out of the cache and drops the cache's reference. */
static void evict(convoy__planner *p, plan_entry *e)
{
    unlink_key(p, e);
    if (by_site(p))
        unlink_site(p, e);
    lru_unlink(p, e);
    e->cached = 0;
    p->cached--;
    e->older = p->retired;
    if (p->retired)
        p->retired->newer = e;
    p->retired = e;
    drop(p, e);
}

/* Caches e (which holds the cache's reference), evicting the least recently
 * used entry when the cache is full. */
static void insert(convoy__planner *p, plan_entry *e)
{
    if (p->cached >= CONVOY__PLAN_CACHE_SIZE && p->oldest)
        evict(p, p->oldest);
    e->key_next = p->by_key[e->key_hash];
    p->by_key[e->key_hash] = e;
    if (by_site(p)) {
        e->site_next = p->by_site[e->site_hash];
        p->by_site[e->site_hash] = e;
    }
    lru_push(p, e);
    e->cached = 1;
    p->cached++;
}

static plan_entry *find(const convoy__planner *p, const char *key, unsigned hash)
{
    for (plan_entry *e = p->by_key[hash]; e; e = e->key_next) {
        if (!strcmp(e->key, key))
            return e;
    }
    return NULL;
}

static plan_entry *find_site(const convoy__planner *p, const char *site, unsigned hash)
{
    for (plan_entry *e = p->by_site[hash]; e; e = e->site_next) {
        if (!strcmp(e->site, site))
            return e;
    }
    return NULL;
}

void convoy__planner_destroy(convoy__planner *p)
{
    if (!p)
        return;
    /* No task can run any more and the scheduler may be gone: free every
     * cached and retired entry without asking it. References still held die
     * with the planner. */
    while (p->newest) {
        plan_entry *e = p->newest;
        p->newest = e->older;
        free_entry(p, e);
    }
    while (p->retired) {
        plan_entry *e = p->retired;
        p->retired = e->older;
        free_entry(p, e);
    }
    convoy__tune_cache_close(p->tune);
    pthread_mutex_destroy(&p->lock);
    free(p->exclude);
    free(p);
}

void convoy__planner_release(convoy__planner *p, const convoy__conv_plan *plan)
{
    if (!plan)
        return;
    pthread_mutex_lock(&p->lock);
    drop(p, entry_of(plan));
    pthread_mutex_unlock(&p->lock);
}

void convoy__planner_get_counts(convoy__planner *p, convoy__planner_counts *counts)
{
    pthread_mutex_lock(&p->lock);
    counts->cached = p->cached;
    counts->alive = p->alive;
    counts->built = p->built;
    pthread_mutex_unlock(&p->lock);
}

/* ---- selection ------------------------------------------------------------ */

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

/* The most workspace a plan may take now: the workspace limit, the memory
 * the pool can still grant under memory_limit, and what the device has left
 * beyond the pool's blocks in use when the backend knows its capacity. */
static size_t workspace_ceiling(const convoy__planner *p)
{
    size_t ceiling = p->config.workspace_limit;
    convoy__pool *pool = p->config.pool;
    if (!pool)
        return ceiling;
    size_t grantable = convoy__pool_available(pool);
    if (grantable < ceiling)
        ceiling = grantable;
    convoy__backend *be = p->config.backend;
    size_t capacity = be->ops->memory_capacity ? be->ops->memory_capacity(be) : 0;
    if (capacity > 0) {
        convoy_memory_statistics stats;
        convoy__pool_stats(pool, &stats);
        size_t room = capacity > stats.bytes_in_use ? capacity - stats.bytes_in_use : 0;
        if (room < ceiling)
            ceiling = room;
    }
    return ceiling;
}

/* The workspace one chunk size takes, and the chunk: the largest under
 * limit, trimmed to the algorithm's hint. */
static convoy_status fit_workspace(const convoy__conv_candidate *c, const convoy__conv_geom *g,
                                   size_t limit, int64_t *chunk, size_t *bytes)
{
    convoy_status status = convoy__workspace_plan(c->workspace_fixed, c->workspace_per_image,
                                                  g->batch, limit, chunk, bytes);
    if (status != CONVOY_OK || c->chunk_hint <= 0 || *chunk <= c->chunk_hint)
        return status;
    *chunk = c->chunk_hint;
    *bytes = c->workspace_fixed + c->workspace_per_image * (size_t)*chunk;
    return CONVOY_OK;
}

/* What filter_candidates learned besides the survivors. */
typedef struct filter_notes {
    int only_workspace; /* every refusal was for workspace */
    int memory_bound;   /* the ceiling, not the workspace limit, refused or shrank one */
    size_t wanted;      /* the most workspace a candidate takes under the limit alone */
} filter_notes;

/* Asks every algorithm of the backend for its candidates and keeps those the
 * options and the workspace ceiling allow; on failure writes why each
 * algorithm or candidate was refused. */
static int filter_candidates(convoy__planner *p, const convoy__conv_geom *g,
                             convoy_conv_direction direction, size_t ceiling, viable *out,
                             char *why, size_t why_size, filter_notes *notes)
{
    convoy__backend *be = p->config.backend;
    const convoy__conv_registry *registry = be->conv;
    convoy__candidate_list all = {.count = 0};
    int count = 0, workspace_refusals = 0, other_refusals = 0;
    why[0] = '\0';
    notes->memory_bound = 0;
    notes->wanted = 0;
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
        int64_t chunk = 0, unbound_chunk = 0;
        size_t bytes = 0, unbound_bytes = 0;
        convoy_status fit = fit_workspace(c, g, ceiling, &chunk, &bytes);
        if (ceiling < p->config.workspace_limit) {
            char text[256];
            snprintf(text, sizeof text, "%s", convoy__error_text());
            convoy_status unbound =
                fit_workspace(c, g, p->config.workspace_limit, &unbound_chunk, &unbound_bytes);
            if (unbound != fit || (fit == CONVOY_OK && unbound_chunk != chunk))
                notes->memory_bound = 1;
            if (unbound == CONVOY_OK && unbound_bytes > notes->wanted)
                notes->wanted = unbound_bytes;
            convoy__error_set_text(text);
        }
        if (fit != CONVOY_OK) {
            append(why, why_size, "%s: %s; ", c->name, convoy__error_text());
            workspace_refusals++;
            continue;
        }
        out[count++] = (viable){*c, chunk, bytes};
    }
    notes->only_workspace = workspace_refusals > 0 && other_refusals == 0;
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

/* The workspace of one image (nothing for an empty batch), saturating. */
static size_t one_image_bytes(const convoy__conv_candidate *c, int64_t batch)
{
    size_t per_image = batch > 0 ? c->workspace_per_image : 0;
    return per_image > SIZE_MAX - c->workspace_fixed ? SIZE_MAX : c->workspace_fixed + per_image;
}

/* The candidate a task switches to when the pool cannot grant the chosen
 * one's workspace for even one image: the one needing least (the cheapest
 * among equals), if that is less than the chosen one needs; -1 when none. */
static int pick_fallback(const viable *v, int count, int chosen, int64_t batch)
{
    size_t need = one_image_bytes(&v[chosen].candidate, batch), best_need = 0;
    int best = -1;
    for (int i = 0; i < count; ++i) {
        size_t n = one_image_bytes(&v[i].candidate, batch);
        if (i == chosen || n >= need)
            continue;
        if (best < 0 || n < best_need ||
            (n == best_need && v[i].candidate.cost < v[best].candidate.cost)) {
            best = i;
            best_need = n;
        }
    }
    return best;
}

static void plan_of(convoy__conv_plan *plan, const convoy__conv_geom *g,
                    convoy_conv_direction direction, const viable *v)
{
    memset(plan, 0, sizeof *plan);
    plan->geom = *g;
    plan->direction = direction;
    plan->candidate = v->candidate;
    plan->images_per_chunk = v->chunk;
    plan->workspace_bytes = v->bytes;
}

/* Builds a new entry (one reference, for the cache) or fails with the
 * reasons. Called with the lock held. */
static convoy_status build(convoy__planner *p, const char *call, const char *key, const char *site,
                           const convoy__conv_geom *g, convoy_conv_direction direction,
                           plan_entry **out)
{
    viable v[CONVOY__MAX_CANDIDATES];
    char why[1024];
    filter_notes notes;
    size_t ceiling = workspace_ceiling(p);
    int count = filter_candidates(p, g, direction, ceiling, v, why, sizeof why, &notes);
    if (count == 0) {
        size_t len = strlen(why);
        if (len >= 2)
            why[len - 2] = '\0';
        char pool_note[160] = "";
        if (notes.memory_bound)
            snprintf(pool_note, sizeof pool_note,
                     " (the memory pool can grant %zu bytes now, under a workspace limit of %zu)",
                     ceiling, p->config.workspace_limit);
        return convoy__error(notes.only_workspace ? CONVOY_ERR_OUT_OF_MEMORY
                                                  : CONVOY_ERR_UNSUPPORTED,
                             "%s: no implementation can run %s on %s: %s%s", call, key,
                             p->config.backend->ops->name, why, pool_note);
    }
    int chosen = choose(p, key, g, direction, v, count);
    plan_entry *e = calloc(1, sizeof *e);
    if (!e)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory for a plan", call);
    snprintf(e->key, sizeof e->key, "%s", key);
    snprintf(e->site, sizeof e->site, "%s", site);
    e->key_hash = hash_text(key);
    e->site_hash = hash_text(site);
    e->ceiling = ceiling;
    e->memory_bound = notes.memory_bound;
    e->wanted = notes.wanted;
    e->refs = 1;
    convoy__backend *be = p->config.backend;
    plan_of(&e->plan, g, direction, &v[chosen]);
    const convoy__conv_algo *algo = e->plan.candidate.algo;
    convoy_status status = algo->prepare ? algo->prepare(be, &e->plan) : CONVOY_OK;
    if (status != CONVOY_OK) {
        free(e);
        convoy__error_prefix(call);
        return status;
    }
    int fallback = pick_fallback(v, count, chosen, g->batch);
    if (fallback >= 0) {
        plan_of(&e->fallback, g, direction, &v[fallback]);
        algo = e->fallback.candidate.algo;
        /* Without its fallback a plan still runs whenever the pool can grant
         * its workspace; a failure here is not the caller's failure. */
        if (algo->prepare && algo->prepare(be, &e->fallback) != CONVOY_OK)
            memset(&e->fallback, 0, sizeof e->fallback);
    }
    p->alive++;
    p->built++;
    *out = e;
    return CONVOY_OK;
}

/* Replanning steps below this are not worth a new plan (and new timings). */
#define REPLAN_STEP ((size_t)1 << 20)

/* 1 when a plan the pool's memory held back should be made again: the pool
 * can now grant what the workspace limit alone allowed, or at least twice
 * what it could when planned. A tight moment costs speed only while it lasts,
 * and a plan is remade at most about log2(limit / 1 MiB) times. */
static int memory_returned(const convoy__planner *p, const plan_entry *e)
{
    size_t now = workspace_ceiling(p);
    size_t floor = e->ceiling > REPLAN_STEP ? e->ceiling : REPLAN_STEP;
    return now > e->ceiling && (now >= e->wanted || now / 2 >= floor);
}

convoy_status convoy__planner_plan(convoy__planner *p, const char *call, const convoy__conv_geom *g,
                                   convoy_conv_direction direction, const convoy__conv_plan **plan,
                                   int *from_cache)
{
    /* The key is formatted on every submit; the site only where it is used. */
    char key[KEY_SIZE], site[KEY_SIZE] = "";
    convoy__plan_key(g, direction, key, sizeof key);
    if (by_site(p))
        convoy__plan_site(g, direction, site, sizeof site);
    pthread_mutex_lock(&p->lock);
    plan_entry *e;
    if (by_site(p)) {
        /* time_on_shape_change: a new shape at a site (a new batch size for
         * the layer) replaces the site's plan, so it is timed again. */
        e = find_site(p, site, hash_text(site));
        if (e && strcmp(e->key, key)) {
            evict(p, e);
            e = NULL;
        }
    } else {
        e = find(p, key, hash_text(key));
    }
    if (e && e->memory_bound && memory_returned(p, e)) {
        evict(p, e);
        e = NULL;
    }
    if (e) {
        lru_unlink(p, e);
        lru_push(p, e);
        e->refs++;
        *plan = &e->plan;
        if (from_cache)
            *from_cache = 1;
        pthread_mutex_unlock(&p->lock);
        return CONVOY_OK;
    }
    sweep(p);
    convoy_status status = build(p, call, key, site, g, direction, &e);
    if (status != CONVOY_OK) {
        pthread_mutex_unlock(&p->lock);
        return status;
    }
    insert(p, e);
    e->refs++;
    *plan = &e->plan;
    if (from_cache)
        *from_cache = 0;
    pthread_mutex_unlock(&p->lock);
    return CONVOY_OK;
}
