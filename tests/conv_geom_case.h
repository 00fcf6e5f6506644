/* Convolutions as rows of a literal table, for the tests that call the
 * library's internals (the CPU kernels, the CUDA backend's host paths): one
 * compact case struct, the library's convoy__conv_geom built from it, and the
 * double-precision reference of conv_reference.c run on such a geometry. */
#ifndef CONVOY_TESTS_CONV_GEOM_CASE_H
#define CONVOY_TESTS_CONV_GEOM_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "convoy.h"
#include "conv_reference.h"
#include "core/conv_geometry.h"

/* The border column of a row. PADS, the zero value, takes pad_before and
 * pad_after as written (CONVOY_BORDER_EXPLICIT; all zero is no padding); the
 * others resolve the pads as the border modes of CONV_SEMANTICS.md do. */
enum { PADS = 0, VALID, FULL, HALF };

/* One convolution. Spatial arrays hold nd entries (D, H, W order). Filters
 * are (m, c/groups, k...), or (m, out..., c/groups, k...) when unshared (2D
 * only). */
typedef struct geom_case {
    int nd;                  /* 2 or 3 */
    int64_t n, c, m, groups; /* batch, input channels, filters, groups */
    int64_t in[3], k[3];     /* input and kernel extents */
    int64_t stride[3], dilation[3];
    int border;                          /* PADS, VALID, FULL or HALF */
    int64_t pad_before[3], pad_after[3]; /* read when border is PADS */
    int flip, unshared;
} geom_case;

/* The reference's geometry of a case, resolved by conv_reference.c. 1 when
 * the convolution is well defined; 0 when the forward output would have an
 * extent < 1 or the shapes do not fit (channels, groups, unshared 3D). */
int geom_case_ref(const geom_case *c, ref_geom *r);

/* The library's geometry of a case: nd axes padded to three with a leading
 * neutral axis (extent, kernel, stride and dilation 1, no padding), as the
 * runtime builds it. Returns what geom_case_ref returns. */
int geom_case_geom(const geom_case *c, convoy__conv_geom *g);

/* The reference's geometry of a library geometry. 1 when the leading axis of
 * a 2D geometry is neutral and the reference, resolving the sizes on its own,
 * agrees with g on every output extent; else 0. */
int geom_ref(const convoy__conv_geom *g, ref_geom *r);

/* One line naming every size of g, for failure messages. */
void geom_describe(const convoy__conv_geom *g, char *text, size_t size);

/* The operand that dir writes, computed in double by the reference from the
 * two it reads (forward roles: x input, w filters, dy grad_output; the third
 * may be NULL). Returns a malloc'd array of that operand's element count (at
 * least one element), or NULL, with a message, when g is not a geometry the
 * reference agrees with or memory runs out. */
double *case_reference(const convoy__conv_geom *g, convoy_conv_direction dir, const float *x,
                       const float *w, const float *dy);

#endif /* CONVOY_TESTS_CONV_GEOM_CASE_H */
