/* The pool's free-block cache: size classes, the per-class bins of idle and pending blocks, the
 * bitmap that finds the smallest idle small block that fits in two bit scans, splitting and
 * merging inside 2 MiB segments, and picking segments to hand back. Every function runs under the
 * pool's mutex and calls nothing but malloc. */
#include <stdlib.h>
#include <string.h>

#include "memory/pool_int.h"

#define SMALL_MAX CONVOY__POOL_SMALL_MAX
#define QUANTUM CONVOY__POOL_SMALL_QUANTUM

typedef convoy__pool_blk blk;
typedef convoy__pool_cache cache_t;

static size_t bin_index(size_t size)
{
    return size > SMALL_MAX ? CONVOY__POOL_SMALL_CLASSES : size / QUANTUM - 1;
}

static int is_small(const blk *b)
{
    return ((const convoy__pool_segment *)b->pub.segment)->small;
}

/* A cached large block serves a request when it wastes at most an eighth of it. */
static int large_fits(size_t have, size_t want)
{
    return have >= want && have - want <= want / 8;
}

static blk **list_of(cache_t *cache, blk *b)
{
    if (b->state == CONVOY__POOL_IDLE)
        return is_small(b) ? &cache->idle_bins[bin_index(b->pub.size)] : &cache->large_idle;
    return is_small(b) ? &cache->pending_bins[bin_index(b->pub.size)] : &cache->large_pending;
}

static void list_push(blk **head, blk *b)
{
    b->list_prev = NULL;
    b->list_next = *head;
    if (*head)
        (*head)->list_prev = b;
    *head = b;
}

static void list_unlink(blk **head, blk *b)
{
    if (b->list_prev)
        b->list_prev->list_next = b->list_next;
    else
        *head = b->list_next;
    if (b->list_next)
        b->list_next->list_prev = b->list_prev;
}

static void idle_link(cache_t *cache, blk *b)
{
    list_push(list_of(cache, b), b);
    if (is_small(b)) {
        size_t i = bin_index(b->pub.size);
        cache->map[i >> 6] |= (uint64_t)1 << (i & 63);
        cache->summary |= (uint64_t)1 << (i >> 6);
    }
}

static void idle_unlink(cache_t *cache, blk *b)
{
    blk **head = list_of(cache, b);
    list_unlink(head, b);
    if (is_small(b) && !*head) {
        size_t i = bin_index(b->pub.size);
        cache->map[i >> 6] &= ~((uint64_t)1 << (i & 63));
        if (!cache->map[i >> 6])
            cache->summary &= ~((uint64_t)1 << (i >> 6));
    }
}

/* The first idle small block in bin idx or above: bins are exact sizes, so it is the best fit. */
static blk *idle_find(cache_t *cache, size_t idx)
{
    size_t w = idx >> 6;
    uint64_t bits = cache->map[w] & (~(uint64_t)0 << (idx & 63));
    if (!bits) {
        uint64_t words = cache->summary & (~(uint64_t)0 << (w + 1));
        if (!words)
            return NULL;
        w = (size_t)__builtin_ctzll(words);
        bits = cache->map[w];
    }
    return cache->idle_bins[(w << 6) + (size_t)__builtin_ctzll(bits)];
}

static blk *record_get(cache_t *cache)
{
    blk *b = cache->spare;
    if (b) {
        cache->spare = b->list_next;
        return b;
    }
    return malloc(sizeof *b);
}

static void record_put(cache_t *cache, blk *b)
{
    b->list_next = cache->spare;
    cache->spare = b;
}

/* Cuts an idle small block (unlinked) down to size; the rest stays idle. The rest needs no
 * merging: idle blocks are always fully merged, so the block after b is not idle. Without a
 * record (host memory exhausted) the caller simply gets the whole block. */
static void split(cache_t *cache, blk *b, size_t size)
{
    if (b->pub.size - size < QUANTUM)
        return;
    blk *rest = record_get(cache);
    if (!rest)
        return;
    memset(rest, 0, sizeof *rest);
    rest->pub.ptr = (char *)b->pub.ptr + size;
    rest->pub.size = b->pub.size - size;
    rest->pub.segment = b->pub.segment;
    rest->state = CONVOY__POOL_IDLE;
    rest->addr_prev = b;
    rest->addr_next = b->addr_next;
    if (rest->addr_next)
        rest->addr_next->addr_prev = rest;
    b->addr_next = rest;
    b->pub.size = size;
    idle_link(cache, rest);
}

/* Only the later record of a merged pair is recycled, so a segment's first record stays valid. */
void convoy__pool_cache_make_idle(cache_t *cache, blk *b)
{
    b->state = CONVOY__POOL_IDLE;
    b->event = NULL;
    b->pub.stream = NULL;
    b->pub.ready = NULL;
    blk *next = b->addr_next;
    if (next && next->state == CONVOY__POOL_IDLE) {
        idle_unlink(cache, next);
        b->pub.size += next->pub.size;
        b->addr_next = next->addr_next;
        if (b->addr_next)
            b->addr_next->addr_prev = b;
        record_put(cache, next);
    }
    blk *prev = b->addr_prev;
    if (prev && prev->state == CONVOY__POOL_IDLE) {
        idle_unlink(cache, prev);
        prev->pub.size += b->pub.size;
        prev->addr_next = b->addr_next;
        if (prev->addr_next)
            prev->addr_next->addr_prev = prev;
        record_put(cache, b);
        b = prev;
    }
    idle_link(cache, b);
}

void convoy__pool_cache_pend(cache_t *cache, blk *b)
{
    list_push(list_of(cache, b), b);
    b->fifo_next = NULL;
    b->fifo_prev = cache->fifo_tail;
    if (cache->fifo_tail)
        cache->fifo_tail->fifo_next = b;
    else
        cache->fifo_head = b;
    cache->fifo_tail = b;
    cache->pending_bytes += b->pub.size;
}

void convoy__pool_cache_unpend(cache_t *cache, blk *b)
{
    list_unlink(list_of(cache, b), b);
    if (b->fifo_prev)
        b->fifo_prev->fifo_next = b->fifo_next;
    else
        cache->fifo_head = b->fifo_next;
    if (b->fifo_next)
        b->fifo_next->fifo_prev = b->fifo_prev;
    else
        cache->fifo_tail = b->fifo_prev;
    cache->pending_bytes -= b->pub.size;
}

blk *convoy__pool_cache_pending_class(cache_t *cache, size_t size)
{
    return size <= SMALL_MAX ? cache->pending_bins[bin_index(size)] : cache->large_pending;
}

int convoy__pool_cache_fits(size_t have, size_t want)
{
    return want <= SMALL_MAX ? have == want : large_fits(have, want);
}

blk *convoy__pool_cache_take_idle(cache_t *cache, size_t size)
{
    blk *b;
    if (size <= SMALL_MAX) {
        b = idle_find(cache, bin_index(size));
        if (b) {
            idle_unlink(cache, b);
            split(cache, b, size);
        }
        return b;
    }
    blk *best = NULL;
    for (b = cache->large_idle; b; b = b->list_next)
        if (large_fits(b->pub.size, size) && (!best || b->pub.size < best->pub.size))
            best = b;
    if (best)
        idle_unlink(cache, best);
    return best;
}

blk *convoy__pool_cache_install(cache_t *cache, convoy__pool_segment *seg, blk *first, void *ptr,
                                size_t size)
{
    seg->first = first;
    seg->next = NULL;
    seg->prev = cache->seg_tail;
    if (cache->seg_tail)
        cache->seg_tail->next = seg;
    else
        cache->seg_head = seg;
    cache->seg_tail = seg;
    memset(first, 0, sizeof *first);
    first->pub.ptr = ptr;
    first->pub.size = seg->size;
    first->pub.segment = seg;
    if (seg->small)
        split(cache, first, size);
    return first;
}

uint64_t convoy__pool_cache_release(cache_t *cache, size_t need, convoy__pool_segment **out,
                                    size_t *released)
{
    uint64_t count = 0;
    *released = 0;
    convoy__pool_segment *s = cache->seg_head;
    while (s && *released < need) {
        convoy__pool_segment *next = s->next;
        blk *b = s->first;
        if (b->state == CONVOY__POOL_IDLE && b->pub.size == s->size) {
            idle_unlink(cache, b);
            if (s->prev)
                s->prev->next = s->next;
            else
                cache->seg_head = s->next;
            if (s->next)
                s->next->prev = s->prev;
            else
                cache->seg_tail = s->prev;
            *released += s->size;
            count++;
            s->next = *out;
            *out = s;
        }
        s = next;
    }
    return count;
}

void convoy__pool_cache_free_records(cache_t *cache)
{
    for (convoy__pool_segment *s = cache->seg_head, *next; s; s = next) {
        next = s->next;
        for (blk *b = s->first, *after; b; b = after) {
            after = b->addr_next;
            free(b);
        }
        free(s);
    }
    for (blk *b = cache->spare, *next; b; b = next) {
        next = b->list_next;
        free(b);
    }
    memset(cache, 0, sizeof *cache);
}
