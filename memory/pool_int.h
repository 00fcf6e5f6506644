/* Internals of the memory pool shared by memory/pool.c (events, growth, the locked interface) and
 * memory/pool_cache.c (size classes and the free-block cache). Nothing outside memory/ includes
 * this; everything here runs under the pool's mutex.
 *
 * Size classes: a request up to 1 MiB is rounded up to a multiple of 512 B and carved from a
 * shared 2 MiB segment; a larger one is rounded up to a multiple of 2 MiB and gets a segment of
 * its own (the scheme of PyTorch's CUDA caching allocator, without its 20 MiB middle class:
 * convolution tensors and workspaces above 1 MiB are few and repeat their sizes every step).
 *
 * A free block is either PENDING (freed on a stream with an event recorded behind its last use;
 * that stream may take it back at once, anyone else only once the event completed) or IDLE (no
 * stream can still touch it). Only idle blocks are merged with neighbours or split, so an event
 * never has to cover two blocks. */
#ifndef CONVOY_MEMORY_POOL_INT_H
#define CONVOY_MEMORY_POOL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "memory/pool.h"

#define CONVOY__POOL_SMALL_MAX ((size_t)1 << 20) /* requests up to this share segments */
#define CONVOY__POOL_SMALL_QUANTUM ((size_t)512) /* small sizes are multiples of this */
#define CONVOY__POOL_SMALL_SEGMENT ((size_t)2 << 20)
#define CONVOY__POOL_LARGE_QUANTUM ((size_t)2 << 20) /* large sizes are multiples of this */
/* One bin per small size (512 B .. 1 MiB) plus one for idle runs longer than 1 MiB. */
#define CONVOY__POOL_SMALL_CLASSES (CONVOY__POOL_SMALL_MAX / CONVOY__POOL_SMALL_QUANTUM)
#define CONVOY__POOL_BINS (CONVOY__POOL_SMALL_CLASSES + 1)
#define CONVOY__POOL_MAP_WORDS ((CONVOY__POOL_BINS + 63) / 64)

enum { CONVOY__POOL_IN_USE, CONVOY__POOL_PENDING, CONVOY__POOL_IDLE };

/* An event the pool owns, linked on its free list or its retired FIFO. */
typedef struct convoy__pool_event {
    convoy__event *event;
    struct convoy__pool_event *next;
} convoy__pool_event;

typedef struct convoy__pool_blk convoy__pool_blk;
typedef struct convoy__pool_segment convoy__pool_segment;

struct convoy__pool_blk {
    convoy__block pub; /* first member: callers hold &pub; pub.segment is the segment */
    convoy__pool_blk *addr_prev, *addr_next; /* neighbours inside a small segment */
    convoy__pool_blk *list_prev, *list_next; /* its bin or large list, or the spare list */
    convoy__pool_blk *fifo_prev, *fifo_next; /* pending blocks in the order they were freed */
    convoy__pool_event *event; /* pending only; NULL when recording failed (retried later) */
    int state;
};

struct convoy__pool_segment {
    convoy__pool_segment *prev, *next; /* oldest first: released oldest first */
    void *base;                        /* what the backend returned */
    size_t size;                       /* bytes counted against the limit */
    int small;
    convoy__pool_blk *first; /* the block at the lowest address; this record is never recycled */
};

typedef struct convoy__pool_cache {
    convoy__pool_segment *seg_head, *seg_tail;
    convoy__pool_blk *spare; /* unused block records: steady-state splitting needs no malloc */
    convoy__pool_blk *fifo_head, *fifo_tail;
    convoy__pool_blk *large_idle, *large_pending;
    size_t pending_bytes;
    uint64_t summary;                     /* bit w: map[w] != 0 */
    uint64_t map[CONVOY__POOL_MAP_WORDS]; /* bit i: idle_bins[i] is not empty */
    convoy__pool_blk *idle_bins[CONVOY__POOL_BINS];
    convoy__pool_blk *pending_bins[CONVOY__POOL_BINS];
} convoy__pool_cache;

/* Marks b idle (no stream, no event) and merges it with idle neighbours. */
void convoy__pool_cache_make_idle(convoy__pool_cache *cache, convoy__pool_blk *b);

/* Files b (state PENDING) under its size class and at the end of the free-order FIFO. */
void convoy__pool_cache_pend(convoy__pool_cache *cache, convoy__pool_blk *b);
void convoy__pool_cache_unpend(convoy__pool_cache *cache, convoy__pool_blk *b);

/* The pending blocks that can serve the rounded size are on the list this returns (through
 * list_next), each checked with convoy__pool_cache_fits(): small bins hold one exact size, large
 * blocks share one list. */
convoy__pool_blk *convoy__pool_cache_pending_class(convoy__pool_cache *cache, size_t size);
int convoy__pool_cache_fits(size_t have, size_t want);

/* Unlinks and returns an idle block for the rounded size (split down to it when small), or NULL. */
convoy__pool_blk *convoy__pool_cache_take_idle(convoy__pool_cache *cache, size_t size);

/* Links a new segment whose first record covers all of it, and returns that record cut down to
 * size; the rest of a small segment becomes idle. */
convoy__pool_blk *convoy__pool_cache_install(convoy__pool_cache *cache, convoy__pool_segment *seg,
                                             convoy__pool_blk *first, void *ptr, size_t size);

/* Unlinks fully idle segments, oldest first, until need bytes are gone, and chains them on *out
 * (through next). Returns how many; *released gets their bytes. */
uint64_t convoy__pool_cache_release(convoy__pool_cache *cache, size_t need,
                                    convoy__pool_segment **out, size_t *released);

/* Frees every block record and segment struct (the backend memory is the caller's). */
void convoy__pool_cache_free_records(convoy__pool_cache *cache);

#endif /* CONVOY_MEMORY_POOL_INT_H */
