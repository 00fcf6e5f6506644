/* Overflow-checked size arithmetic. Every size the library derives from
 * dims a program passed (element counts, byte sizes, workspace formulas)
 * goes through these, or through a bound a check made with them, so a huge
 * dim is an error message and never a wrapped size or undefined behaviour.
 *
 * Each function returns 1 and stores the result when it is representable,
 * and returns 0 leaving *out untouched when it is not. Host code only (the
 * compiler's __builtin_*_overflow); the geometry helpers CUDA kernels run
 * rely on the runtime having checked the sizes with these first. */
#ifndef CONVOY_CORE_CHECKED_MATH_H
#define CONVOY_CORE_CHECKED_MATH_H

#include <stddef.h>
#include <stdint.h>

static inline int convoy__mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return 0;
    *out = r;
    return 1;
}

static inline int convoy__add_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return 0;
    *out = r;
    return 1;
}

static inline int convoy__mul_size(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return 0;
    *out = r;
    return 1;
}

static inline int convoy__add_size(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r))
        return 0;
    *out = r;
    return 1;
}

/* The product of count values, formed left to right (the order the library
 * multiplies dims in), every partial product checked: a zero late in the
 * list does not excuse an overflow before it. The empty product is 1. */
static inline int convoy__product_i64(const int64_t *values, int count, int64_t *out)
{
    int64_t r = 1;
    for (int i = 0; i < count; ++i) {
        if (!convoy__mul_i64(r, values[i], &r))
            return 0;
    }
    *out = r;
    return 1;
}

/* The bytes of count elements of size element_size each: 0 (not
 * representable) for a negative count or a total beyond size_t. */
static inline int convoy__bytes_of(int64_t count, size_t element_size, size_t *out)
{
    if (count < 0 || (uint64_t)count > SIZE_MAX)
        return 0;
    return convoy__mul_size((size_t)count, element_size, out);
}

/* a * b, or SIZE_MAX when that does not fit: for sizes compared against a
 * limit, where "more than anything" is the right answer. */
static inline size_t convoy__mul_size_saturating(size_t a, size_t b)
{
    size_t r;
    return convoy__mul_size(a, b, &r) ? r : SIZE_MAX;
}

static inline size_t convoy__add_size_saturating(size_t a, size_t b)
{
    size_t r;
    return convoy__add_size(a, b, &r) ? r : SIZE_MAX;
}

#endif /* CONVOY_CORE_CHECKED_MATH_H */
