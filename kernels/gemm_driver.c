/* The GEMM and 1x1 convolution paths of every backend as a sequence of primitive steps
 * (im2col, col2im, axis swap, zero, strided-batched GEMM); see kernels/gemm_driver.h for why
 * the steps go through a table. Every GEMM is reasoned about in row-major terms, the way
 * CONV_SEMANTICS.md section 10 writes them, and converted to cuBLAS's column-major form in
 * one place.
 *
 * Names: P output positions per image, g groups, Mg = M / g, Cg = C / g, Kg = Cg * kvol (rows
 * of one group's column matrix), R = C * kvol (rows of one image's), T images per chunk. */
#include <stdint.h>

#include "kernels/conv_algo.h"
#include "kernels/gemm_driver.h"
#include "core/checked_math.h"
#include "core/error_detail.h"

convoy__gemm convoy__gemm_to_column_major(const convoy__gemm *r)
{
    convoy__gemm c = *r;
    c.trans_a = r->trans_b;
    c.trans_b = r->trans_a;
    c.m = r->n;
    c.n = r->m;
    c.a = r->b;
    c.lda = r->ldb;
    c.stride_a = r->stride_b;
    c.b = r->a;
    c.ldb = r->lda;
    c.stride_b = r->stride_a;
    return c;
}

static int64_t at_least_one(int64_t v)
{
    return v > 1 ? v : 1;
}

convoy_status convoy__gemm_check(const convoy__gemm *g, const char *what)
{
    const char *bad = NULL;
    if (g->m < 0 || g->n < 0 || g->k < 0)
        bad = "negative size";
    else if (g->batch < 1)
        bad = "batch < 1";
    else if (g->stride_a < 0 || g->stride_b < 0 || g->stride_c < 0)
        bad = "negative stride";
    else if (g->lda < at_least_one(g->trans_a ? g->k : g->m))
        bad = "lda below the rows of A";
    else if (g->ldb < at_least_one(g->trans_b ? g->n : g->k))
        bad = "ldb below the rows of B";
    else if (g->ldc < at_least_one(g->m))
        bad = "ldc below the rows of C";
    if (!bad)
        return CONVOY_OK;
    return convoy__error(CONVOY_ERR_INTERNAL,
                         "gemm path: %s: invalid cuBLAS arguments (%s): op %c%c m %lld n %lld "
                         "k %lld lda %lld ldb %lld ldc %lld batch %lld",
                         what, bad, g->trans_a ? 'T' : 'N', g->trans_b ? 'T' : 'N', (long long)g->m,
                         (long long)g->n, (long long)g->k, (long long)g->lda, (long long)g->ldb,
                         (long long)g->ldc, (long long)g->batch);
}

/* A row-major GEMM with alpha 1, batched: C_i (m x n, ldc) = op(A_i) (m x k) op(B_i) (k x n)
 * + beta C_i, with X_i = X + i * sX and each trans flag saying the operand is stored
 * transposed (then lda / ldb are those of the stored matrix). */
static convoy__gemm row_major(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float beta,
                              const float *a, int64_t lda, int64_t stride_a, const float *b,
                              int64_t ldb, int64_t stride_b, float *c, int64_t ldc,
                              int64_t stride_c, int64_t batch)
{
    convoy__gemm g;
    g.trans_a = trans_a;
    g.trans_b = trans_b;
    g.m = m;
    g.n = n;
    g.k = k;
    g.alpha = 1.0f;
    g.beta = beta;
    g.a = a;
    g.lda = lda;
    g.stride_a = stride_a;
    g.b = b;
    g.ldb = ldb;
    g.stride_b = stride_b;
    g.c = c;
    g.ldc = ldc;
    g.stride_c = stride_c;
    g.batch = batch;
    return g;
}

static convoy_status run_gemm(const convoy__gemm_ops *ops, const convoy__gemm *row_major,
                              const char *what)
{
    convoy__gemm call = convoy__gemm_to_column_major(row_major);
    convoy_status status = convoy__gemm_check(&call, what);
    if (status != CONVOY_OK)
        return status;
    return ops->gemm(ops->context, &call);
}

typedef struct dims {
    int64_t batch, channels, filters, groups;
    int64_t cg, mg, kg, rows, positions, in_volume;
} dims;

static dims dims_of(const convoy__conv_geom *g)
{
    dims d;
    d.batch = g->batch;
    d.channels = g->in_channels;
    d.filters = g->out_channels;
    d.groups = g->groups;
    d.cg = g->in_channels / g->groups;
    d.mg = g->out_channels / g->groups;
    d.kg = convoy__geom_col_rows(g);
    d.rows = g->in_channels * convoy__geom_kernel_spatial(g);
    d.positions = convoy__geom_out_spatial(g);
    d.in_volume = convoy__geom_in_spatial(g);
    return d;
}

/* The workspace formulas run on every plan, for geometries the planner has
 * not chosen yet, so they use checked arithmetic and saturate at SIZE_MAX: an
 * absurd geometry asks for more than any limit instead of wrapping to a
 * small size. */

/* R = C * kvol, the rows of one image's column matrix; -1 when it overflows. */
static int64_t image_rows(const convoy__conv_geom *g)
{
    int64_t kvol, rows;
    if (!convoy__product_i64(g->kernel, 3, &kvol) || !convoy__mul_i64(g->in_channels, kvol, &rows))
        return -1;
    return rows;
}

/* a * b * sizeof(float) for a, b >= 0, saturating; a < 0 (overflowed) saturates too. */
static size_t float_bytes(int64_t a, int64_t b)
{
    if (a < 0 || b < 0)
        return SIZE_MAX;
    int64_t count;
    size_t bytes;
    if (!convoy__mul_i64(a, b, &count) || !convoy__bytes_of(count, sizeof(float), &bytes))
        return SIZE_MAX;
    return bytes;
}

static int64_t positions_of(const convoy__conv_geom *g)
{
    int64_t positions;
    return convoy__product_i64(g->out, 3, &positions) ? positions : -1;
}

/* With no batch, channels or filters every sum is empty: the path only zero-fills the written
 * operand and needs no workspace at all. */
static int all_sums_empty(const convoy__conv_geom *geom)
{
    return geom->batch == 0 || geom->in_channels == 0 || geom->out_channels == 0;
}

size_t convoy__gemm_workspace_fixed(const convoy__conv_geom *geom, convoy_conv_direction direction)
{
    (void)direction;
    if (all_sums_empty(geom))
        return 0;
    return geom->unshared ? float_bytes(image_rows(geom), positions_of(geom)) : 0;
}

size_t convoy__gemm_workspace_per_image(const convoy__conv_geom *geom,
                                        convoy_conv_direction direction)
{
    (void)direction;
    if (geom->unshared || all_sums_empty(geom))
        return 0;
    int64_t rows = image_rows(geom);
    if (rows < 0 || !convoy__add_i64(rows, geom->out_channels, &rows))
        return SIZE_MAX;
    return float_bytes(rows, positions_of(geom));
}

/* ---- shared filters ------------------------------------------------------- */

/* Forward, per group, batched over the chunk's images t:
 *   Y[n0+t, group] (Mg x P) = W_group (Mg x Kg) @ col_group[:, t*P .. t*P+P) (Kg x P)
 * with W broadcast (stride 0) and each image's columns P apart in col. When a batched GEMM
 * is only a loop (ops->batch_is_loop) and the chunk has several images, one wide GEMM per
 * group writes the chunk into pack (M x T*P) instead, and an axis swap scatters it to
 * (N, M, P) order: narrow images (a 7x7 output has 49 positions) then share one GEMM. */
static convoy_status forward_chunk(const convoy__gemm_ops *ops, const dims *d, const float *w,
                                   float *y, int64_t n0, int64_t t, const float *col, float *pack)
{
    int64_t ld = t * d->positions;
    int wide = ops->batch_is_loop && t > 1;
    float *dst = wide ? pack : y + n0 * d->filters * d->positions;
    for (int64_t grp = 0; grp < d->groups; ++grp) {
        const float *w_grp = w + grp * d->mg * d->kg;
        const float *col_grp = col + grp * d->kg * ld;
        convoy__gemm r =
            wide ? row_major(0, 0, d->mg, ld, d->kg, 0.0f, w_grp, d->kg, 0, col_grp, ld, 0,
                             dst + grp * d->mg * ld, ld, 0, 1)
                 : row_major(0, 0, d->mg, d->positions, d->kg, 0.0f, w_grp, d->kg, 0, col_grp, ld,
                             d->positions, dst + grp * d->mg * d->positions, d->positions,
                             d->filters * d->positions, t);
        convoy_status status = run_gemm(ops, &r, "forward");
        if (status != CONVOY_OK)
            return status;
    }
    if (!wide)
        return CONVOY_OK;
    return ops->swap_axes(ops->context, pack, y + n0 * d->filters * d->positions, d->filters, t,
                          d->positions);
}

/* Backward data, per group, batched over the chunk's images t:
 *   col_group[:, t*P .. t*P+P) (Kg x P) = W_group^T (Kg x Mg) @ dY[n0+t, group] (Mg x P),
 * or, when batches are loops, one wide GEMM per group over dY gathered into pack (M x T*P). */
static convoy_status backward_data_chunk(const convoy__gemm_ops *ops, const dims *d, const float *w,
                                         const float *dy, int64_t n0, int64_t t, float *col,
                                         float *pack)
{
    int64_t ld = t * d->positions;
    int wide = ops->batch_is_loop && t > 1;
    const float *src = dy + n0 * d->filters * d->positions;
    if (wide) {
        convoy_status status = ops->swap_axes(ops->context, src, pack, t, d->filters, d->positions);
        if (status != CONVOY_OK)
            return status;
        src = pack;
    }
    for (int64_t grp = 0; grp < d->groups; ++grp) {
        const float *w_grp = w + grp * d->mg * d->kg;
        float *col_grp = col + grp * d->kg * ld;
        convoy__gemm r = wide ? row_major(1, 0, d->kg, ld, d->mg, 0.0f, w_grp, d->kg, 0,
                                          src + grp * d->mg * ld, ld, 0, col_grp, ld, 0, 1)
                              : row_major(1, 0, d->kg, d->positions, d->mg, 0.0f, w_grp, d->kg, 0,
                                          src + grp * d->mg * d->positions, d->positions,
                                          d->filters * d->positions, col_grp, ld, d->positions, t);
        convoy_status status = run_gemm(ops, &r, "backward_data");
        if (status != CONVOY_OK)
            return status;
    }
    return CONVOY_OK;
}

/* Backward filter, one call batched over the groups:
 *   dW_group (Mg x Kg) (+)= dY_group (Mg x T*P) @ col_group^T (T*P x Kg)
 * where dY of the chunk is first gathered into (M, T * P) order (a single image already has
 * it), so the reduction over the chunk's images happens inside one GEMM. */
static convoy_status backward_filter_chunk(const convoy__gemm_ops *ops, const dims *d,
                                           const float *dy, float *dw, int64_t n0, int64_t t,
                                           const float *col, float *pack)
{
    int64_t ld = t * d->positions;
    const float *src = dy + n0 * d->filters * d->positions;
    if (t > 1) {
        convoy_status status = ops->swap_axes(ops->context, src, pack, t, d->filters, d->positions);
        if (status != CONVOY_OK)
            return status;
        src = pack;
    }
    convoy__gemm r = row_major(0, 1, d->mg, d->kg, ld, n0 == 0 ? 0.0f : 1.0f, src, ld, d->mg * ld,
                               col, ld, d->kg * ld, dw, d->kg, d->mg * d->kg, d->groups);
    return run_gemm(ops, &r, "backward_filter");
}

static convoy_status run_shared(const convoy__gemm_ops *ops, const convoy__conv_geom *g,
                                convoy_conv_direction direction, const convoy__conv_buffers *b,
                                int64_t chunk, float *workspace)
{
    dims d = dims_of(g);
    float *col = workspace;
    float *pack = workspace + d.rows * d.positions * chunk;
    int64_t image_in = d.channels * d.in_volume;
    convoy_status status = CONVOY_OK;
    for (int64_t n0 = 0; n0 < d.batch && status == CONVOY_OK; n0 += chunk) {
        int64_t t = d.batch - n0 < chunk ? d.batch - n0 : chunk;
        switch (direction) {
        case CONVOY_CONV_FORWARD:
            status = ops->im2col(ops->context, g, b->input + n0 * image_in, t, col);
            if (status == CONVOY_OK)
                status = forward_chunk(ops, &d, b->filters, b->output, n0, t, col, pack);
            break;
        case CONVOY_CONV_BACKWARD_DATA:
            status = backward_data_chunk(ops, &d, b->filters, b->output, n0, t, col, pack);
            if (status == CONVOY_OK)
                status = ops->col2im(ops->context, g, col, t, b->input + n0 * image_in);
            break;
        case CONVOY_CONV_BACKWARD_FILTER:
            status = ops->im2col(ops->context, g, b->input + n0 * image_in, t, col);
            if (status == CONVOY_OK)
                status = backward_filter_chunk(ops, &d, b->output, b->filters, n0, t, col, pack);
            break;
        }
    }
    return status;
}

/* ---- unshared filters ----------------------------------------------------- */

/* Unshared filters (M, P, Cg, kvol) give output position o of group grp its own Mg x Kg
 * matrix W_o at (grp * Mg * P + o) * Kg, rows P * Kg apart. Per image and group, one call
 * batched over the P positions (stride Kg in W, 1 in col and in the tensors):
 *   forward          y_o (Mg x 1)    = W_o (Mg x Kg) @ col_o (Kg x 1)
 *   backward_data    col_o (Kg x 1)  = W_o^T (Kg x Mg) @ dy_o (Mg x 1)
 *   backward_filter  dW_o (Mg x Kg) (+)= dy_o (Mg x 1) @ col_o^T (1 x Kg)
 * where col_o is column o of the image's column matrix (entries P apart) and y_o, dy_o are
 * the Mg channels of position o (entries P apart). */
static convoy_status unshared_group(const convoy__gemm_ops *ops, const dims *d,
                                    convoy_conv_direction direction, const convoy__conv_buffers *b,
                                    int64_t n, int64_t grp, float *col)
{
    int64_t p = d->positions;
    float *w = b->filters + grp * d->mg * p * d->kg;
    float *y = b->output + (n * d->filters + grp * d->mg) * p;
    float *c = col + grp * d->kg * p;
    convoy__gemm r;
    switch (direction) {
    case CONVOY_CONV_FORWARD:
        r = row_major(0, 0, d->mg, 1, d->kg, 0.0f, w, p * d->kg, d->kg, c, p, 1, y, p, 1, p);
        return run_gemm(ops, &r, "unshared forward");
    case CONVOY_CONV_BACKWARD_DATA:
        r = row_major(1, 0, d->kg, 1, d->mg, 0.0f, w, p * d->kg, d->kg, y, p, 1, c, p, 1, p);
        return run_gemm(ops, &r, "unshared backward_data");
    default:
        r = row_major(0, 1, d->mg, d->kg, 1, n == 0 ? 0.0f : 1.0f, y, p, 1, c, p, 1, w, p * d->kg,
                      d->kg, p);
        return run_gemm(ops, &r, "unshared backward_filter");
    }
}

static convoy_status run_unshared(const convoy__gemm_ops *ops, const convoy__conv_geom *g,
                                  convoy_conv_direction direction, const convoy__conv_buffers *b,
                                  float *col)
{
    dims d = dims_of(g);
    int64_t image_in = d.channels * d.in_volume;
    convoy_status status = CONVOY_OK;
    for (int64_t n = 0; n < d.batch && status == CONVOY_OK; ++n) {
        if (direction != CONVOY_CONV_BACKWARD_DATA)
            status = ops->im2col(ops->context, g, b->input + n * image_in, 1, col);
        for (int64_t grp = 0; grp < d.groups && status == CONVOY_OK; ++grp)
            status = unshared_group(ops, &d, direction, b, n, grp, col);
        if (status == CONVOY_OK && direction == CONVOY_CONV_BACKWARD_DATA)
            status = ops->col2im(ops->context, g, col, 1, b->input + n * image_in);
    }
    return status;
}

/* ---- entry points --------------------------------------------------------- */

/* Common argument checks; *empty is set when every sum is empty and the written operand was
 * zero-filled instead (N, C or M zero, or an input with no elements on some axis, whose
 * taps all read padding), so the caller has nothing left to do. An empty operand's storage
 * may be NULL, so the paths below, which offset the operands, never see one. */
static convoy_status prologue(const convoy__gemm_ops *ops, const convoy__conv_geom *g,
                              convoy_conv_direction direction, const convoy__conv_buffers *b,
                              const char *path, int *empty)
{
    *empty = 0;
    if (!ops || !g || !b)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: NULL argument", path);
    if (direction != CONVOY_CONV_FORWARD && direction != CONVOY_CONV_BACKWARD_DATA &&
        direction != CONVOY_CONV_BACKWARD_FILTER)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: direction %d", path, (int)direction);
    if (g->batch == 0 || g->in_channels == 0 || g->out_channels == 0 ||
        convoy__geom_in_spatial(g) == 0) {
        int64_t numel;
        float *written = convoy__conv_written_operand(g, direction, b, &numel);
        *empty = 1;
        return numel > 0 ? ops->zero(ops->context, written, numel) : CONVOY_OK;
    }
    return CONVOY_OK;
}

convoy_status convoy__gemm_conv(const convoy__gemm_ops *ops, const convoy__conv_geom *geom,
                                convoy_conv_direction direction,
                                const convoy__conv_buffers *buffers, int64_t images_per_chunk,
                                void *workspace, size_t workspace_bytes)
{
    int empty;
    convoy_status status = prologue(ops, geom, direction, buffers, "gemm path", &empty);
    if (status != CONVOY_OK || empty)
        return status;
    size_t fixed = convoy__gemm_workspace_fixed(geom, direction);
    size_t per_image = convoy__gemm_workspace_per_image(geom, direction);
    int64_t chunk = images_per_chunk < geom->batch ? images_per_chunk : geom->batch;
    if (per_image > 0 && workspace_bytes >= fixed &&
        (uint64_t)chunk > (workspace_bytes - fixed) / per_image)
        chunk = (int64_t)((workspace_bytes - fixed) / per_image);
    if (chunk < 1 || !workspace || workspace_bytes < fixed + per_image)
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "gemm path: workspace of %zu bytes and %lld images per chunk "
                             "cannot hold one image (needs %zu bytes)",
                             workspace ? workspace_bytes : 0, (long long)images_per_chunk,
                             fixed + per_image);
    if (geom->unshared)
        return run_unshared(ops, geom, direction, buffers, workspace);
    return run_shared(ops, geom, direction, buffers, chunk, workspace);
}

/* Pointwise convolutions read each input position once per filter, so an image's
 * (C, positions) block already is its column matrix (S = positions = in0*in1*in2):
 *   forward          Y[n, grp] (Mg x S)  = W_grp (Mg x Cg) @ X[n, grp] (Cg x S)   batched over n
 *   backward_data    X[n, grp] (Cg x S)  = W_grp^T @ Y[n, grp]                    batched over n
 *   backward_filter  dW_grp (Mg x Cg)   += Y[n, grp] @ X[n, grp]^T   per n, batched over grp */
convoy_status convoy__gemm_conv_1x1(const convoy__gemm_ops *ops, const convoy__conv_geom *geom,
                                    convoy_conv_direction direction, const convoy__conv_buffers *b)
{
    int empty;
    convoy_status status = prologue(ops, geom, direction, b, "1x1 path", &empty);
    if (status != CONVOY_OK || empty)
        return status;
    if (!convoy__geom_is_pointwise(geom))
        return convoy__error(CONVOY_ERR_INTERNAL, "1x1 path: the geometry is not pointwise");
    dims d = dims_of(geom);
    int64_t s = d.in_volume;
    convoy__gemm r;
    if (direction == CONVOY_CONV_BACKWARD_FILTER) {
        for (int64_t n = 0; n < d.batch && status == CONVOY_OK; ++n) {
            r = row_major(0, 1, d.mg, d.cg, s, n == 0 ? 0.0f : 1.0f, b->output + n * d.filters * s,
                          s, d.mg * s, b->input + n * d.channels * s, s, d.cg * s, b->filters, d.cg,
                          d.mg * d.cg, d.groups);
            status = run_gemm(ops, &r, "1x1 backward_filter");
        }
        return status;
    }
    for (int64_t grp = 0; grp < d.groups && status == CONVOY_OK; ++grp) {
        float *w = b->filters + grp * d.mg * d.cg;
        float *x = b->input + grp * d.cg * s;
        float *y = b->output + grp * d.mg * s;
        if (direction == CONVOY_CONV_FORWARD)
            r = row_major(0, 0, d.mg, s, d.cg, 0.0f, w, d.cg, 0, x, s, d.channels * s, y, s,
                          d.filters * s, d.batch);
        else
            r = row_major(1, 0, d.cg, s, d.mg, 0.0f, w, d.cg, 0, y, s, d.filters * s, x, s,
                          d.channels * s, d.batch);
        status = run_gemm(ops, &r,
                          direction == CONVOY_CONV_FORWARD ? "1x1 forward" : "1x1 backward_data");
    }
    return status;
}
