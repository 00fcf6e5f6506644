/* FNV-1a, the one string hash of the library: plan-cache buckets and the
 * tune cache's checksum. Not for anything adversarial. */
#ifndef CONVOY_CORE_HASH_H
#define CONVOY_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CONVOY__FNV1A_OFFSET 14695981039346656037ull
#define CONVOY__FNV1A_PRIME 1099511628211ull

/* Continues hash h over size bytes of data; start from CONVOY__FNV1A_OFFSET. */
static inline uint64_t convoy__fnv1a_update(uint64_t h, const void *data, size_t size)
{
    const unsigned char *bytes = (const unsigned char *)data;
    for (size_t i = 0; i < size; ++i)
        h = (h ^ bytes[i]) * CONVOY__FNV1A_PRIME;
    return h;
}

static inline uint64_t convoy__fnv1a(const void *data, size_t size)
{
    return convoy__fnv1a_update(CONVOY__FNV1A_OFFSET, data, size);
}

#endif /* CONVOY_CORE_HASH_H */
