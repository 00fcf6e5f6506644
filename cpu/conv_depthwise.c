/* Depthwise convolutions on the CPU, computed on the caller's tensors as they are: the
 * "depthwise" algorithm.
 *
 * A convolution is depthwise here when every group reads one input channel (C / g == 1; the
 * usual depthwise layer has g = C, and a single-channel input layer is one too), with any
 * number of filters per channel (M / g), stride 1 on every axis, any dilation, padding and
 * flip, 2D or 3D. Each plane of the written operand is then a small stencil over one plane of
 * a read operand:
 *   forward          y[n][m][o] = sum over taps t of w[m][t] * x[n][m / (M/g)][o + off(t)]
 *   backward data    dx[n][c][i] = sum over the c's filters m and taps t of
 *                                  w[m][t] * dy[n][m][i - off(t)]
 *   backward filter  dw[m][t] = sum over n and o of dy[n][m][o] * x[n][c][o + off(t)]
 * with off(t) = k * dilation - pad_before per axis and zero outside the plane (the flip
 * reverses the taps). Backward data is the forward stencil with the offsets negated, over the
 * output gradient. oneDNN runs these layers on channel-blocked copies (nChw16c), and its
 * reorders to and from the caller's plain layout cost more than the convolution itself
 * (bench/RESULTS.md: 54-68% of the call on the suite's depthwise layer); here the only copy is
 * of one plane at a time into a zero-bordered buffer that stays in the L1/L2 cache.
 *
 * That buffer (one per thread, from the plan's workspace) holds the plane read with its
 * padding as zeros, each row padded to a multiple of 16 floats plus the widest tap offset, so
 * every tap of every output vector is a plain 16-float load inside it, with no border cases.
 * Output rows are AVX-512 vectors of 16 columns, the last one stored under a mask. Forward and
 * backward data keep a block of up to 8 vectors (several rows, up to 64 columns each) in
 * registers across all the taps, so that enough independent FMAs are in flight; backward
 * filter keeps one accumulator per tap across the batch (3x3 kernels: nine registers). 3x3
 * kernels with dilation 1, the common case, load each input row once for the three output (or
 * gradient) rows that read it and make its three shifts by lane rotation. Sums
 * run in float, each written element by one thread in a fixed order, so results repeat bit
 * for bit. Planes (filters for backward filter) are shared between the backend's threads per
 * task with OpenMP, the threads oneDNN runs on; small convolutions run on one
 * (convoy__host_conv_threads).
 *
 * The algorithm needs an x86-64 CPU with AVX-512F, checked at run time; elsewhere it refuses,
 * and onednn, gemm or direct run these layers. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/checked_math.h"
#include "core/error_detail.h"
#include "cpu/conv_cpu.h"
#include "cpu/host_backend.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DEPTHWISE_AVX512 1
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 16
/* Taps per axis the stencils hold offsets for, and in all (a flipped filter is reversed into
 * a buffer of MAX_TAPS floats on the stack). */
#define MAX_TAPS_PER_AXIS 32
#define MAX_TAPS 1024
/* The largest padded plane one thread works in: bigger planes go to other algorithms. */
#define MAX_PADDED_FLOATS ((int64_t)1 << 26)
/* Each thread's padded plane starts on a cache line. */
#define ALIGNMENT 64

/* Shares the iterations of the loop that follows between `threads` OpenMP threads (a variable
 * of that name in scope); without OpenMP the loop runs on the calling thread. */
#ifdef _OPENMP
#define PARALLEL_FOR_THREADS _Pragma("omp parallel for num_threads(threads) schedule(static)")
#else
#define PARALLEL_FOR_THREADS
#endif

/* Which thread of the loop's team runs the current iteration: its padded plane's index. */
static int thread_slot(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* One stencil: out (extents e) = sum over taps of weight * the read plane (extents i) shifted
 * by the tap's offsets, zero outside it. The read plane is copied into a padded buffer
 * (extents p, the last the row pitch) whose element 0 is at coordinate origin of the plane;
 * tap (k0, k1, k2) reads the buffer at (o0 + rel[0][k0], o1 + rel[1][k1], o2 + rel[2][k2]) for
 * output position o, and has weight weights[(k0 * K1 + k1) * K2 + k2]. */
typedef struct stencil {
    int64_t e[3], i[3], p[3];
    int64_t origin[3];
    int64_t k[3];
    int64_t rel[3][MAX_TAPS_PER_AXIS];
} stencil;

static int is_depthwise(const convoy__conv_geom *g)
{
    if (g->unshared || g->groups < 1 || g->in_channels != g->groups)
        return 0;
    for (int a = 0; a < 3; ++a) {
        if (g->stride[a] != 1)
            return 0;
    }
    return 1;
}

/* The stencil of the forward direction and of backward filter (forward 1: the output or its
 * gradient written or read over the input), or of backward data (forward 0: the input
 * gradient over the output gradient, offsets negated). 0 when the padded plane is larger than
 * MAX_PADDED_FLOATS or its size overflows. */
static int make_stencil(const convoy__conv_geom *g, int forward, stencil *s)
{
    int64_t floats = 1;
    for (int a = 0; a < 3; ++a) {
        const int64_t k = g->kernel[a], d = g->dilation[a], reach = (k - 1) * d;
        s->e[a] = forward ? g->out[a] : g->in[a];
        s->i[a] = forward ? g->in[a] : g->out[a];
        s->k[a] = k;
        /* Offsets k * d - pad forward, pad - k * d backward; the buffer starts at the smallest. */
        s->origin[a] = forward ? -g->pad_before[a] : g->pad_before[a] - reach;
        for (int64_t t = 0; t < k; ++t)
            s->rel[a][t] = forward ? t * d : (k - 1 - t) * d;
        int64_t extent;
        if (a < 2) {
            if (!convoy__add_i64(s->e[a], reach, &extent))
                return 0;
        } else {
            /* Whole vectors per row, and room for the widest tap past the last one. */
            int64_t vectors = (s->e[2] + LANES - 1) / LANES;
            if (!convoy__add_i64(vectors * LANES, reach, &extent) ||
                !convoy__add_i64(extent, LANES - 1, &extent))
                return 0;
            extent -= extent % LANES;
        }
        s->p[a] = extent;
        if (!convoy__mul_i64(floats, extent, &floats) || floats > MAX_PADDED_FLOATS)
            return 0;
    }
    return 1;
}

/* Bytes of one thread's padded plane, a multiple of ALIGNMENT. */
static size_t slice_bytes(const stencil *s)
{
    size_t bytes = (size_t)(s->p[0] * s->p[1] * s->p[2]) * sizeof(float);
    return (bytes + ALIGNMENT - 1) & ~(size_t)(ALIGNMENT - 1);
}

static const char *depthwise_refusal(convoy__backend *be, const convoy__conv_geom *g,
                                     convoy_conv_direction direction)
{
    (void)be;
    (void)direction;
#ifdef DEPTHWISE_AVX512
    const int avx512 = __builtin_cpu_supports("avx512f");
#else
    const int avx512 = 0;
#endif
    if (!avx512)
        return "needs an x86-64 CPU with AVX-512F";
    if (!is_depthwise(g))
        return "needs one input channel per group (C / groups == 1), stride 1 and shared "
               "filters";
    if (g->kernel[0] > MAX_TAPS_PER_AXIS || g->kernel[1] > MAX_TAPS_PER_AXIS ||
        g->kernel[2] > MAX_TAPS_PER_AXIS || convoy__geom_kernel_spatial(g) > MAX_TAPS)
        return "needs at most 32 taps per axis and 1024 in all";
    stencil s;
    if (!make_stencil(g, 1, &s) || !make_stencil(g, 0, &s))
        return "needs a padded plane of at most 2^26 floats";
    return NULL;
}

#ifdef DEPTHWISE_AVX512

/* Copies a plane (extents s->i) into the padded buffer, zeros where it has no element. Each
 * row is zeroed, then the plane's columns that fall inside it are copied with unmasked
 * unaligned vectors, the last one overlapping the one before (a masked load per vector measured
 * slower, bench/RESULTS.md); rows narrower than a vector are copied element by element. */
__attribute__((target("avx512f"))) static void pad_plane(const stencil *s, const float *plane,
                                                         float *buffer)
{
    const int64_t vectors = s->p[2] / LANES;
    /* Plane columns [lo, hi) land in buffer columns [lo - origin, hi - origin). */
    const int64_t lo = s->origin[2] > 0 ? s->origin[2] : 0;
    const int64_t end = s->origin[2] + s->p[2];
    const int64_t hi = s->i[2] < end ? s->i[2] : end;
    for (int64_t z = 0; z < s->p[0]; ++z) {
        const int64_t iz = s->origin[0] + z;
        for (int64_t y = 0; y < s->p[1]; ++y) {
            const int64_t iy = s->origin[1] + y;
            float *row = buffer + (z * s->p[1] + y) * s->p[2];
            for (int64_t v = 0; v < vectors; ++v)
                _mm512_store_ps(row + v * LANES, _mm512_setzero_ps());
            if (iz < 0 || iz >= s->i[0] || iy < 0 || iy >= s->i[1] || hi <= lo)
                continue;
            const float *src = plane + (iz * s->i[1] + iy) * s->i[2];
            float *dst = row - s->origin[2];
            if (hi - lo < LANES) {
                for (int64_t x = lo; x < hi; ++x)
                    dst[x] = src[x];
                continue;
            }
            int64_t x = lo;
            for (; x + LANES <= hi; x += LANES)
                _mm512_storeu_ps(dst + x, _mm512_loadu_ps(src + x));
            if (x < hi)
                _mm512_storeu_ps(dst + hi - LANES, _mm512_loadu_ps(src + hi - LANES));
        }
    }
}

/* Rows x vectors of 16 columns whose accumulators stay in registers: 8 in all. */
#define BLOCK_ACCUMULATORS 8

/* Stores a block of RB x NV accumulators at row y, column x0 of plane z of the output: plus
 * what is there when accumulate, + bias, ReLU when relu; the vector past a row's end under a
 * mask. */
__attribute__((target("avx512f"), always_inline)) static inline void
store_block(const stencil *s, const int RB, const int NV, int64_t z, int64_t y, int64_t x0,
            float *out, const __m512 *acc, int accumulate, __m512 bias, int relu)
{
    for (int r = 0; r < RB; ++r) {
        float *o = out + (z * s->e[1] + y + r) * s->e[2] + x0;
        for (int v = 0; v < NV; ++v) {
            const int64_t left = s->e[2] - x0 - v * LANES;
            const __mmask16 store =
                left >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
            __m512 a = acc[r * NV + v];
            if (accumulate)
                a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(store, o + v * LANES));
            a = _mm512_add_ps(a, bias);
            if (relu)
                a = _mm512_max_ps(a, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(o + v * LANES, store, a);
        }
    }
}

/* A block of RB rows from row y and NV vectors from column x0 of plane z of the output:
 * out = the stencil of the padded buffer (plus out when accumulate), + bias, ReLU when relu.
 * RB, NV, K1 and K2 are constants at the call sites, so the loops over them unroll and the
 * accumulators stay in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
stencil_block(const stencil *s, const int RB, const int NV, const int64_t K1, const int64_t K2,
              int64_t z, int64_t y, int64_t x0, float *out, const float *buffer,
              const float *weights, int accumulate, float bias, int relu)
{
    __m512 acc[BLOCK_ACCUMULATORS];
    for (int a = 0; a < RB * NV; ++a)
        acc[a] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < s->k[0]; ++k0) {
        const float *plane = buffer + (z + s->rel[0][k0]) * s->p[1] * s->p[2];
        for (int64_t k1 = 0; k1 < K1; ++k1) {
            const float *rows = plane + (y + s->rel[1][k1]) * s->p[2] + x0;
            const float *w = weights + (k0 * K1 + k1) * K2;
            for (int64_t k2 = 0; k2 < K2; ++k2) {
                const __m512 wv = _mm512_set1_ps(w[k2]);
                const float *src = rows + s->rel[2][k2];
                for (int r = 0; r < RB; ++r) {
                    for (int v = 0; v < NV; ++v)
                        acc[r * NV + v] = _mm512_fmadd_ps(
                            _mm512_loadu_ps(src + r * s->p[2] + v * LANES), wv, acc[r * NV + v]);
                }
            }
        }
    }
    store_block(s, RB, NV, z, y, x0, out, acc, accumulate, _mm512_set1_ps(bias), relu);
}

/* Every row of one output plane for the vectors from x0, NV of them: blocks of RB rows, then
 * single rows. */
__attribute__((target("avx512f"), always_inline)) static inline void
stencil_columns(const stencil *s, const int RB, const int NV, const int64_t K1, const int64_t K2,
                int64_t x0, float *out, const float *buffer, const float *weights, int accumulate,
                float bias, int relu)
{
    for (int64_t z = 0; z < s->e[0]; ++z) {
        int64_t y = 0;
        for (; y + RB <= s->e[1]; y += RB)
            stencil_block(s, RB, NV, K1, K2, z, y, x0, out, buffer, weights, accumulate, bias,
                          relu);
        for (; y < s->e[1]; ++y)
            stencil_block(s, 1, NV, K1, K2, z, y, x0, out, buffer, weights, accumulate, bias, relu);
    }
}

/* The columns of a plane in blocks of NV vectors, RB rows at a time (RB * NV accumulators). */
#define STENCIL_COLUMNS(RB, NV, K1, K2)                                                            \
    stencil_columns(s, RB, NV, K1, K2, x0, out, buffer, weights, accumulate, bias, relu)

__attribute__((target("avx512f"), always_inline)) static inline void
stencil_kernel(const stencil *s, const int64_t K1, const int64_t K2, float *out,
               const float *buffer, const float *weights, int accumulate, float bias, int relu)
{
    const int64_t vectors = (s->e[2] + LANES - 1) / LANES;
    int64_t v0 = 0;
    for (; v0 + 4 <= vectors; v0 += 4) {
        const int64_t x0 = v0 * LANES;
        STENCIL_COLUMNS(2, 4, K1, K2);
    }
    const int64_t x0 = v0 * LANES;
    switch (vectors - v0) {
    case 3:
        STENCIL_COLUMNS(2, 3, K1, K2);
        break;
    case 2:
        STENCIL_COLUMNS(4, 2, K1, K2);
        break;
    case 1:
        STENCIL_COLUMNS(8, 1, K1, K2);
        break;
    default:
        break;
    }
}

/* ---- 3x3 taps, dilation 1: each input row loaded once ------------------------------------
 *
 * The common depthwise kernel gets a path of its own. Its taps along a row read the same row at
 * shifts 0, 1 and 2: two aligned loads and two lane rotations (valignd) give all three, and
 * each input row feeds the three output rows that read it, so a block of output rows loads
 * every input row it needs once instead of nine unaligned loads per output vector. */

/* The 16 floats from column 1, and from column 2, of the 32 in (lo, hi). The rotation count
 * must be a constant where the intrinsic is written, so each has its own function. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 from_column_1(__m512 lo,
                                                                                     __m512 hi)
{
    return _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), 1));
}

__attribute__((target("avx512f"), always_inline)) static inline __m512 from_column_2(__m512 lo,
                                                                                     __m512 hi)
{
    return _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), 2));
}

/* 1 when the stencil's taps are 3x3 (one plane deep) with dilation 1, the rows offsets 0, 1, 2. */
static int is_3x3_unit(const stencil *s)
{
    if (s->k[0] != 1 || s->k[1] != 3 || s->k[2] != 3)
        return 0;
    for (int a = 1; a < 3; ++a) {
        for (int t = 0; t < 3; ++t) {
            if (s->rel[a][t] != (s->rel[a][0] == 0 ? t : 2 - t))
                return 0;
        }
    }
    return s->rel[0][0] == 0;
}

/* A block of RB output rows from row y and NV vectors from column x0 of plane z; w[r][j] is
 * the weight of the tap that reads the input row dr below an output row, at column shift j. */
__attribute__((target("avx512f"), always_inline)) static inline void
block_3x3(const stencil *s, const int RB, const int NV, int64_t z, int64_t y, int64_t x0,
          float *out, const float *buffer, const __m512 w[3][3], int accumulate, __m512 bias,
          int relu)
{
    __m512 acc[BLOCK_ACCUMULATORS];
    for (int a = 0; a < RB * NV; ++a)
        acc[a] = _mm512_setzero_ps();
    const float *rows = buffer + (z * s->p[1] + y) * s->p[2] + x0;
    for (int r = 0; r < RB + 2; ++r) {
        const float *in = rows + r * s->p[2];
        __m512 v[3];
        for (int i = 0; i <= NV; ++i)
            v[i] = _mm512_load_ps(in + i * LANES);
        for (int i = 0; i < NV; ++i) {
            const __m512 taps[3] = {v[i], from_column_1(v[i], v[i + 1]),
                                    from_column_2(v[i], v[i + 1])};
            /* Input row y + r is row r - dr of the block read at row offset dr. */
            for (int dr = 0; dr < 3; ++dr) {
                const int o = r - dr;
                if (o < 0 || o >= RB)
                    continue;
                for (int j = 0; j < 3; ++j)
                    acc[o * NV + i] = _mm512_fmadd_ps(taps[j], w[dr][j], acc[o * NV + i]);
            }
        }
    }
    store_block(s, RB, NV, z, y, x0, out, acc, accumulate, bias, relu);
}

/* One plane of a 3x3 dilation-1 stencil (is_3x3_unit): pairs of vectors, then a single one,
 * four rows at a time, then the rows left one by one. */
__attribute__((target("avx512f"))) static void
stencil_plane_3x3(const stencil *s, float *out, const float *buffer, const float *weights,
                  int accumulate, float bias, int relu)
{
    __m512 w[3][3];
    for (int k1 = 0; k1 < 3; ++k1) {
        for (int k2 = 0; k2 < 3; ++k2)
            w[s->rel[1][k1]][s->rel[2][k2]] = _mm512_set1_ps(weights[k1 * 3 + k2]);
    }
    const __m512 bias_v = _mm512_set1_ps(bias);
    const int64_t vectors = (s->e[2] + LANES - 1) / LANES;
    for (int64_t z = 0; z < s->e[0]; ++z) {
        for (int64_t v0 = 0; v0 < vectors; v0 += 2) {
            const int64_t x0 = v0 * LANES;
            int64_t y = 0;
            if (v0 + 2 <= vectors) {
                for (; y + 4 <= s->e[1]; y += 4)
                    block_3x3(s, 4, 2, z, y, x0, out, buffer, w, accumulate, bias_v, relu);
                for (; y < s->e[1]; ++y)
                    block_3x3(s, 1, 2, z, y, x0, out, buffer, w, accumulate, bias_v, relu);
            } else {
                for (; y + 4 <= s->e[1]; y += 4)
                    block_3x3(s, 4, 1, z, y, x0, out, buffer, w, accumulate, bias_v, relu);
                for (; y < s->e[1]; ++y)
                    block_3x3(s, 1, 1, z, y, x0, out, buffer, w, accumulate, bias_v, relu);
            }
        }
    }
}

/* acc[dr][j] += the products of RB gradient rows from row y with the padded input at row
 * offset dr and shift j, over the vector at column x0: each input row loaded once for the
 * gradient rows that read it, its three shifts by rotation. */
__attribute__((target("avx512f"), always_inline)) static inline void
rows_3x3(const stencil *s, const int RB, int64_t z, int64_t y, int64_t x0, const float *gradient,
         const float *buffer, __m512 acc[3][3])
{
    const int64_t left = s->e[2] - x0;
    const __mmask16 lanes = left >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
    __m512 gv[4];
    for (int o = 0; o < RB; ++o)
        gv[o] = _mm512_maskz_loadu_ps(lanes, gradient + (z * s->e[1] + y + o) * s->e[2] + x0);
    const float *rows = buffer + (z * s->p[1] + y) * s->p[2] + x0;
    for (int r = 0; r < RB + 2; ++r) {
        const __m512 lo = _mm512_load_ps(rows + r * s->p[2]);
        const __m512 hi = _mm512_load_ps(rows + r * s->p[2] + LANES);
        const __m512 taps[3] = {lo, from_column_1(lo, hi), from_column_2(lo, hi)};
        for (int dr = 0; dr < 3; ++dr) {
            const int o = r - dr;
            if (o < 0 || o >= RB)
                continue;
            for (int j = 0; j < 3; ++j)
                acc[dr][j] = _mm512_fmadd_ps(taps[j], gv[o], acc[dr][j]);
        }
    }
}

/* acc[dr][j] += the products of the gradient plane with the padded input at row offset dr and
 * shift j, for a 3x3 dilation-1 stencil (is_3x3_unit), four gradient rows at a time. */
__attribute__((target("avx512f"))) static void
tap_products_3x3(const stencil *s, const float *gradient, const float *buffer, __m512 acc[3][3])
{
    for (int64_t z = 0; z < s->e[0]; ++z) {
        for (int64_t x0 = 0; x0 < s->e[2]; x0 += LANES) {
            int64_t y = 0;
            for (; y + 4 <= s->e[1]; y += 4)
                rows_3x3(s, 4, z, y, x0, gradient, buffer, acc);
            for (; y < s->e[1]; ++y)
                rows_3x3(s, 1, z, y, x0, gradient, buffer, acc);
        }
    }
}

/* out = the stencil of the padded buffer (plus out when accumulate), + bias, ReLU when relu:
 * one plane. 3x3 taps per plane row unrolled, any other kernel looped. */
__attribute__((target("avx512f"))) static void stencil_plane(const stencil *s, float *out,
                                                             const float *buffer,
                                                             const float *weights, int accumulate,
                                                             float bias, int relu)
{
    if (is_3x3_unit(s))
        stencil_plane_3x3(s, out, buffer, weights, accumulate, bias, relu);
    else if (s->k[1] == 3 && s->k[2] == 3)
        stencil_kernel(s, 3, 3, out, buffer, weights, accumulate, bias, relu);
    else
        stencil_kernel(s, s->k[1], s->k[2], out, buffer, weights, accumulate, bias, relu);
}

/* acc[(k1 - k1_first) * K2 + k2] += the products of gradient[o] with the padded input at
 * o + the offsets of taps (k0, k1, k2) for k1 in [k1_first, k1_first + K1), over one plane.
 * K1 and K2 are constants at the call sites: the accumulators stay in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
tap_products(const stencil *s, const int64_t K1, const int64_t K2, int64_t k0, int64_t k1_first,
             const float *gradient, const float *buffer, __m512 *acc)
{
    for (int64_t z = 0; z < s->e[0]; ++z) {
        const float *plane = buffer + (z + s->rel[0][k0]) * s->p[1] * s->p[2];
        for (int64_t y = 0; y < s->e[1]; ++y) {
            const float *g = gradient + (z * s->e[1] + y) * s->e[2];
            for (int64_t x0 = 0; x0 < s->e[2]; x0 += LANES) {
                const int64_t left = s->e[2] - x0;
                const __mmask16 lanes =
                    left >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
                const __m512 gv = _mm512_maskz_loadu_ps(lanes, g + x0);
                for (int64_t k1 = 0; k1 < K1; ++k1) {
                    const float *row = plane + (y + s->rel[1][k1_first + k1]) * s->p[2] + x0;
                    for (int64_t k2 = 0; k2 < K2; ++k2)
                        acc[k1 * K2 + k2] = _mm512_fmadd_ps(_mm512_loadu_ps(row + s->rel[2][k2]),
                                                            gv, acc[k1 * K2 + k2]);
                }
            }
        }
    }
}

/* The filter gradient of filter m, every tap summed over the batch, each image's input plane
 * padded into buffer first. */
__attribute__((target("avx512f"))) static void filter_gradient(const convoy__conv_geom *g,
                                                               const stencil *s,
                                                               const convoy__conv_buffers *b,
                                                               int64_t m, float *buffer)
{
    const int64_t c = m / (g->out_channels / g->groups);
    const int64_t in_plane = convoy__geom_in_spatial(g), out_plane = convoy__geom_out_spatial(g);
    const int64_t kvol = convoy__geom_kernel_spatial(g);
    float *dw = b->filters + m * kvol;
    if (is_3x3_unit(s)) {
        __m512 acc[3][3];
        for (int dr = 0; dr < 3; ++dr) {
            for (int j = 0; j < 3; ++j)
                acc[dr][j] = _mm512_setzero_ps();
        }
        for (int64_t n = 0; n < g->batch; ++n) {
            pad_plane(s, b->input + (n * g->in_channels + c) * in_plane, buffer);
            tap_products_3x3(s, b->output + (n * g->out_channels + m) * out_plane, buffer, acc);
        }
        for (int64_t tap = 0; tap < 9; ++tap) {
            const __m512 sum = acc[s->rel[1][tap / 3]][s->rel[2][tap % 3]];
            dw[g->flip ? 8 - tap : tap] = _mm512_reduce_add_ps(sum);
        }
        return;
    }
    const int three_by_three = s->k[0] == 1 && s->k[1] == 3 && s->k[2] == 3;
    /* 3x3: all nine taps at once; otherwise one tap row (k0, k1) per pass over the batch. */
    const int64_t passes = three_by_three ? 1 : s->k[0] * s->k[1];
    for (int64_t pass = 0; pass < passes; ++pass) {
        const int64_t k0 = three_by_three ? 0 : pass / s->k[1];
        const int64_t k1 = three_by_three ? 0 : pass % s->k[1];
        __m512 acc[MAX_TAPS_PER_AXIS > 9 ? MAX_TAPS_PER_AXIS : 9];
        const int64_t count = three_by_three ? 9 : s->k[2];
        for (int64_t t = 0; t < count; ++t)
            acc[t] = _mm512_setzero_ps();
        for (int64_t n = 0; n < g->batch; ++n) {
            pad_plane(s, b->input + (n * g->in_channels + c) * in_plane, buffer);
            const float *gradient = b->output + (n * g->out_channels + m) * out_plane;
            if (three_by_three)
                tap_products(s, 3, 3, 0, 0, gradient, buffer, acc);
            else
                tap_products(s, 1, s->k[2], k0, k1, gradient, buffer, acc);
        }
        for (int64_t t = 0; t < count; ++t) {
            const int64_t tap = (k0 * s->k[1] + k1) * s->k[2] + t;
            dw[g->flip ? kvol - 1 - tap : tap] = _mm512_reduce_add_ps(acc[t]);
        }
    }
}

/* The weights of filter m in tap order: the filters' own, or reversed into `reversed` when
 * the convolution flips them. */
static const float *taps_of(const convoy__conv_geom *g, const float *filters, int64_t m,
                            float *reversed)
{
    const int64_t kvol = convoy__geom_kernel_spatial(g);
    const float *w = filters + m * kvol;
    if (!g->flip)
        return w;
    for (int64_t t = 0; t < kvol; ++t)
        reversed[t] = w[kvol - 1 - t];
    return reversed;
}

static void run_forward(const convoy__conv_geom *g, const convoy__conv_buffers *b,
                        const convoy__conv_epilogue *epilogue, char *workspace, size_t slice,
                        int threads)
{
    stencil s;
    make_stencil(g, 1, &s);
    const int64_t per_channel = g->out_channels / g->groups;
    const int64_t in_plane = convoy__geom_in_spatial(g), out_plane = convoy__geom_out_spatial(g);
    const int64_t images = g->batch * g->in_channels;
    const int relu = epilogue && epilogue->act == CONVOY_ACTIVATION_RELU;
    PARALLEL_FOR_THREADS
    for (int64_t p = 0; p < images; ++p) {
        float *buffer = (float *)(workspace + slice * (size_t)thread_slot());
        pad_plane(&s, b->input + p * in_plane, buffer);
        const int64_t n = p / g->in_channels, c = p % g->in_channels;
        for (int64_t j = 0; j < per_channel; ++j) {
            const int64_t m = c * per_channel + j;
            float reversed[MAX_TAPS];
            const float *w = taps_of(g, b->filters, m, reversed);
            const float bias = epilogue && epilogue->bias ? epilogue->bias[m] : 0.0f;
            stencil_plane(&s, b->output + (n * g->out_channels + m) * out_plane, buffer, w, 0, bias,
                          relu);
        }
    }
}

static void run_backward_data(const convoy__conv_geom *g, const convoy__conv_buffers *b,
                              char *workspace, size_t slice, int threads)
{
    stencil s;
    make_stencil(g, 0, &s);
    const int64_t per_channel = g->out_channels / g->groups;
    const int64_t in_plane = convoy__geom_in_spatial(g), out_plane = convoy__geom_out_spatial(g);
    const int64_t images = g->batch * g->in_channels;
    PARALLEL_FOR_THREADS
    for (int64_t p = 0; p < images; ++p) {
        float *buffer = (float *)(workspace + slice * (size_t)thread_slot());
        float *dx = b->input + p * in_plane;
        const int64_t n = p / g->in_channels, c = p % g->in_channels;
        for (int64_t j = 0; j < per_channel; ++j) {
            const int64_t m = c * per_channel + j;
            float reversed[MAX_TAPS];
            const float *w = taps_of(g, b->filters, m, reversed);
            pad_plane(&s, b->output + (n * g->out_channels + m) * out_plane, buffer);
            stencil_plane(&s, dx, buffer, w, j > 0, 0.0f, 0);
        }
    }
}

static void run_backward_filter(const convoy__conv_geom *g, const convoy__conv_buffers *b,
                                char *workspace, size_t slice, int threads)
{
    stencil s;
    make_stencil(g, 1, &s);
    PARALLEL_FOR_THREADS
    for (int64_t m = 0; m < g->out_channels; ++m)
        filter_gradient(g, &s, b, m, (float *)(workspace + slice * (size_t)thread_slot()));
}

/* 1 when no sum has a term (no images or no filters): the written operand is empty or zero. */
static int is_empty(const convoy__conv_geom *g)
{
    return g->batch == 0 || g->out_channels == 0;
}

/* The plan's workspace: one padded plane per thread; none for an empty convolution. */
static size_t workspace_for(const convoy__conv_geom *g, convoy_conv_direction direction,
                            int threads)
{
    if (is_empty(g))
        return 0;
    stencil s;
    make_stencil(g, direction != CONVOY_CONV_BACKWARD_DATA, &s);
    return slice_bytes(&s) * (size_t)threads;
}

static convoy_status depthwise_run_epilogue(convoy__backend *be, const convoy__conv_plan *plan,
                                            const convoy__conv_buffers *buffers, void *workspace,
                                            const convoy__conv_epilogue *epilogue)
{
    const convoy__conv_geom *g = &plan->geom;
    if (is_empty(g)) {
        /* An empty tensor may have no storage at all: only a nonempty one is zeroed. */
        const int64_t count =
            plan->direction == CONVOY_CONV_BACKWARD_DATA     ? convoy__geom_input_numel(g)
            : plan->direction == CONVOY_CONV_BACKWARD_FILTER ? convoy__geom_filter_numel(g)
                                                             : 0;
        float *written =
            plan->direction == CONVOY_CONV_BACKWARD_DATA ? buffers->input : buffers->filters;
        if (count > 0)
            memset(written, 0, (size_t)count * sizeof(float));
        return CONVOY_OK;
    }
    const int threads = convoy__host_conv_threads(be, g);
    const size_t need = workspace_for(g, plan->direction, threads);
    if (!workspace || plan->workspace_bytes < need || (uintptr_t)workspace % ALIGNMENT)
        return convoy__error(CONVOY_ERR_INTERNAL,
                             "depthwise convolution: run with %zu bytes of workspace at %p, "
                             "needs %zu, %d-byte aligned",
                             plan->workspace_bytes, workspace, need, ALIGNMENT);
    const size_t slice = need / (size_t)threads;
    switch (plan->direction) {
    case CONVOY_CONV_FORWARD:
        run_forward(g, buffers, epilogue, workspace, slice, threads);
        break;
    case CONVOY_CONV_BACKWARD_DATA:
        run_backward_data(g, buffers, workspace, slice, threads);
        break;
    case CONVOY_CONV_BACKWARD_FILTER:
        run_backward_filter(g, buffers, workspace, slice, threads);
        break;
    }
    return CONVOY_OK;
}

#else /* !DEPTHWISE_AVX512: the refusal turns every convolution away */

static size_t workspace_for(const convoy__conv_geom *g, convoy_conv_direction direction,
                            int threads)
{
    (void)g;
    (void)direction;
    (void)threads;
    return 0;
}

static convoy_status depthwise_run_epilogue(convoy__backend *be, const convoy__conv_plan *plan,
                                            const convoy__conv_buffers *buffers, void *workspace,
                                            const convoy__conv_epilogue *epilogue)
{
    (void)be;
    (void)plan;
    (void)buffers;
    (void)workspace;
    (void)epilogue;
    return convoy__error(CONVOY_ERR_UNSUPPORTED,
                         "depthwise convolution: needs an x86-64 CPU with AVX-512F");
}

#endif /* DEPTHWISE_AVX512 */

/* ---- the depthwise algorithm ----------------------------------------------------------- */

/* Heuristic ranks against onednn:blocked (1.5) and gemm (2.0), from the measurements in
 * bench/RESULTS.md (2026-12-01, 2 threads, depthwise against onednn:blocked, medians of 3
 * rounds): 3x3 dilation-1 layers 1.0-1.35x forward and for the data gradient (56x56 and 28x28
 * images, 32-256 channels; the single-channel 28x28 input layer of the training example 1.3x
 * forward) and 0.9-1.25x for the filter gradient with one filter per channel, 0.6x with 16
 * (each filter pads its input planes again); dilated and 3D kernels 1.1-24x in every direction
 * (oneDNN's depthwise kernels cover neither, and its fallbacks are slow); other 2D kernels
 * (5x5) 0.6-0.8x forward and for the data gradient, 6x for the filter gradient; rows narrower
 * than a vector (7x7 images) 0.3x everywhere, most of each vector idle. */
#define COST_AHEAD_OF_ONEDNN 1.3
#define COST_BEHIND_ONEDNN 1.7

static double depthwise_cost(const convoy__conv_geom *g, convoy_conv_direction direction)
{
    if (g->out[2] < LANES || g->in[2] < LANES)
        return COST_BEHIND_ONEDNN;
    int dilated = 0;
    for (int a = 0; a < 3; ++a)
        dilated |= g->dilation[a] > 1;
    if (dilated || g->kernel[0] > 1)
        return COST_AHEAD_OF_ONEDNN;
    const int unit_3x3 = g->kernel[1] == 3 && g->kernel[2] == 3;
    if (direction == CONVOY_CONV_BACKWARD_FILTER)
        return !unit_3x3 || g->out_channels == g->groups ? COST_AHEAD_OF_ONEDNN
                                                         : COST_BEHIND_ONEDNN;
    return unit_3x3 ? COST_AHEAD_OF_ONEDNN : COST_BEHIND_ONEDNN;
}

static void depthwise_candidates(convoy__backend *be, const convoy__conv_algo *self,
                                 const convoy__conv_geom *geom, convoy_conv_direction direction,
                                 convoy__candidate_list *list)
{
    const size_t bytes = workspace_for(geom, direction, convoy__host_conv_threads(be, geom));
    convoy__candidate_add(list, self, self->name, bytes, 0, depthwise_cost(geom, direction));
}

static convoy_status depthwise_run(convoy__backend *be, void *native_stream,
                                   const convoy__conv_plan *plan,
                                   const convoy__conv_buffers *buffers, void *workspace)
{
    (void)native_stream;
    return depthwise_run_epilogue(be, plan, buffers, workspace, NULL);
}

/* The bias and ReLU are applied to each vector of outputs as it is stored. */
static convoy_status depthwise_run_fused(convoy__backend *be, void *native_stream,
                                         const convoy__conv_plan *plan,
                                         const convoy__conv_buffers *buffers, void *workspace,
                                         const convoy__conv_epilogue *epilogue)
{
    (void)native_stream;
    if (plan->direction != CONVOY_CONV_FORWARD)
        return CONVOY_ERR_UNSUPPORTED;
    return depthwise_run_epilogue(be, plan, buffers, workspace, epilogue);
}

const convoy__conv_algo convoy__cpu_algo_depthwise = {
    .name = "depthwise",
    .refusal = depthwise_refusal,
    .candidates = depthwise_candidates,
    .run = depthwise_run,
    .run_fused = depthwise_run_fused,
};
