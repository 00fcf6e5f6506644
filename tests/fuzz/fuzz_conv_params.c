/* libFuzzer target: bytes become convolution parameters and operand dims
 * (any rank, spatial_dims, border, groups and flags, with values drawn from
 * small numbers, the edges of int32/int64 and raw bytes), which go to
 * convoy_conv_output_dims and then to convoy_conv_explain on a CPU runtime
 * with the heuristic policy. Every input must come back as a status: no
 * crash, no undefined behaviour, no leak. It also checks two promises:
 * output_dims gives extents >= 1, and a convolution output_dims accepts can
 * be planned in every direction (the direct loops need no workspace), with
 * a workspace under the limit and a chunk no larger than the batch. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "convoy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WORKSPACE_LIMIT ((size_t)64 << 20)

/* One runtime for the whole run: plans accumulate in its bounded cache. */
static convoy_runtime *runtime;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    convoy_options o;
    if (convoy_options_init(&o) != CONVOY_OK)
        abort();
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 0;
    o.blas_threads = 1;
    o.algo = CONVOY_ALGO_HEURISTIC;
    o.exclude = 0;
    o.require = 0;
    o.deterministic = 0;
    o.tune_cache = NULL;
    o.trace_path = NULL;
    o.profile = 0;
    o.test_fail_alloc = 0;
    o.memory_limit = 0;
    o.workspace_limit = WORKSPACE_LIMIT;
    if (convoy_runtime_create(&o, &runtime) != CONVOY_OK)
        abort();
    return 0;
}

typedef struct reader {
    const uint8_t *data;
    size_t size;
} reader;

static uint8_t take_byte(reader *r)
{
    if (r->size == 0)
        return 0;
    r->size--;
    return *r->data++;
}

/* A selector byte, then a value: small numbers most often, the edges of
 * the integer types, powers of two, or eight raw bytes. */
static int64_t take_value(reader *r)
{
    static const int64_t edges[] = {0,
                                    1,
                                    2,
                                    3,
                                    -1,
                                    -2,
                                    (int64_t)1 << 20,
                                    ((int64_t)1 << 31) - 1,
                                    (int64_t)1 << 31,
                                    (int64_t)1 << 32,
                                    (int64_t)1 << 40,
                                    ((int64_t)1 << 40) + 1,
                                    (int64_t)1 << 62,
                                    INT64_MAX,
                                    INT64_MIN,
                                    INT64_MAX / 2 + 1};
    uint8_t selector = take_byte(r);
    if (selector < 160)
        return selector % 9;
    if (selector < 224)
        return edges[selector % (sizeof edges / sizeof edges[0])];
    uint64_t raw = 0;
    for (int i = 0; i < 8; ++i)
        raw = raw << 8 | take_byte(r);
    return (int64_t)raw;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    convoy_conv_params p;
    uint8_t head = take_byte(&r);
    if (convoy_conv_params_init(&p, head & 1 ? 3 : 2) != CONVOY_OK)
        abort();
    /* Mostly valid parameters, sometimes anything. */
    if (head & 2)
        p.spatial_dims = (int)(take_byte(&r) % 6) - 1;
    p.border = (convoy_border)(take_byte(&r) % 6);
    if (p.border > CONVOY_BORDER_EXPLICIT && !(head & 4))
        p.border = CONVOY_BORDER_EXPLICIT;
    for (int a = 0; a < 3; ++a) {
        p.pad_before[a] = take_value(&r);
        p.pad_after[a] = take_value(&r);
        p.stride[a] = take_value(&r);
        p.dilation[a] = take_value(&r);
        if (!(head & 8)) {
            p.stride[a] = p.stride[a] < 1 ? 1 : p.stride[a];
            p.dilation[a] = p.dilation[a] < 1 ? 1 : p.dilation[a];
        }
    }
    p.groups = take_value(&r);
    if (!(head & 8) && p.groups < 1)
        p.groups = 1;
    p.flip = head & 16 ? (int)(take_byte(&r) % 3) : 1;
    p.unshared = head & 32 ? (int)(take_byte(&r) % 3) : 0;
    int64_t input[CONVOY_MAX_DIMS], filters[CONVOY_MAX_DIMS], output[CONVOY_MAX_DIMS];
    for (int i = 0; i < CONVOY_MAX_DIMS; ++i) {
        input[i] = take_value(&r);
        filters[i] = take_value(&r);
        output[i] = take_value(&r);
    }
    convoy_conv_direction direction = (convoy_conv_direction)(take_byte(&r) % 4);
    /* Most random dims disagree on the channels; this bit makes them agree
     * so that more inputs get past validation into the planner. */
    int64_t channels;
    if ((head & 64) && p.unshared >= 0 && p.unshared <= 1 &&
        !__builtin_mul_overflow(filters[p.unshared ? 3 : 1], p.groups, &channels))
        input[1] = channels;

    int64_t computed[CONVOY_MAX_DIMS];
    memset(computed, 0, sizeof computed);
    convoy_status status = convoy_conv_output_dims(&p, input, filters, computed);
    convoy_conv_plan_info info;
    if (status == CONVOY_OK) {
        for (int a = 0; a < p.spatial_dims; ++a) {
            if (computed[2 + a] < 1)
                __builtin_trap();
        }
        for (int d = 0; d <= CONVOY_CONV_BACKWARD_FILTER; ++d) {
            status = convoy_conv_explain(runtime, &p, (convoy_conv_direction)d, input, filters,
                                         computed, &info);
            if (status != CONVOY_OK || !info.implementation[0] ||
                info.workspace_bytes > WORKSPACE_LIMIT || info.images_per_chunk < 0 ||
                info.images_per_chunk > (computed[0] > 0 ? computed[0] : 0))
                __builtin_trap();
        }
    }
    /* The dims as given, in the direction given (3 is out of range). */
    status = convoy_conv_explain(runtime, &p, direction, input, filters, output, &info);
    if (status != CONVOY_OK && !convoy_last_error_message()[0])
        __builtin_trap(); /* every failure says why */
    return 0;
}
