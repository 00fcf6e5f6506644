/* pool_bench: nanoseconds per allocate + free pair served from convoy's
 * caching pool, against malloc + free of the same size, for 256 B to 64 MiB.
 *
 * Two columns for the pool: the pool itself (convoy__pool_alloc / free on
 * the host backend, the figure the target is about) and the public path,
 * convoy_tensor_create + convoy_tensor_destroy of a 1-D tensor on a CPU
 * runtime with streams = 0, which adds the tensor object. Target: <= 100 ns
 * per cached pair. Median of 5 runs after a warm-up. Unlike the other
 * benchmarks this one links the internal archive, to reach the pool. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "convoy.h"
#include "cpu/host_backend.h"
#include "memory/pool.h"

static double suite_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double suite_median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 ? values[count / 2] : 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

#define RUNS 5
#define TARGET_NS 100.0

static void die(const char *what, convoy_status s)
{
    fflush(stdout);
    fprintf(stderr, "pool_bench: %s failed: %s: %s\n", what, convoy_status_name(s),
            convoy_last_error_message());
    exit(1);
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK)                                                                       \
            die(#call, s_);                                                                        \
    } while (0)

/* Stores every malloc result so the compiler cannot drop the malloc/free pair. */
static void *volatile sink;

static double time_pool(convoy_runtime *rt, int64_t elements, long iterations)
{
    double t0 = suite_now();
    for (long i = 0; i < iterations; ++i) {
        convoy_tensor *t = NULL;
        CHECK(convoy_tensor_create(rt, 1, &elements, &t));
        convoy_tensor_destroy(t);
    }
    return (suite_now() - t0) / (double)iterations * 1e9;
}

static double time_raw_pool(convoy__pool *pool, size_t bytes, long iterations)
{
    double t0 = suite_now();
    for (long i = 0; i < iterations; ++i) {
        convoy__block *block = NULL;
        CHECK(convoy__pool_alloc(pool, bytes, NULL, "bench", &block));
        convoy__pool_free(pool, block, NULL);
    }
    return (suite_now() - t0) / (double)iterations * 1e9;
}

static double time_malloc(size_t bytes, long iterations)
{
    double t0 = suite_now();
    for (long i = 0; i < iterations; ++i) {
        void *p = malloc(bytes);
        if (!p) {
            fprintf(stderr, "pool_bench: malloc(%zu) failed\n", bytes);
            exit(1);
        }
        sink = p;
        free(p);
    }
    return (suite_now() - t0) / (double)iterations * 1e9;
}

static const char *size_text(size_t bytes, char *buf, size_t size)
{
    if (bytes >= ((size_t)1 << 20))
        snprintf(buf, size, "%zu MiB", bytes >> 20);
    else if (bytes >= 1024)
        snprintf(buf, size, "%zu KiB", bytes >> 10);
    else
        snprintf(buf, size, "%zu B", bytes);
    return buf;
}

int main(void)
{
    convoy_options o;
    CHECK(convoy_options_init(&o));
    o.device = CONVOY_DEVICE_CPU;
    o.streams = 0;
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(&o, &rt));
    convoy__host_config host = {0, NULL};
    convoy__backend *backend = NULL;
    convoy__pool *pool = NULL;
    CHECK(convoy__host_backend_create(&host, &backend));
    CHECK(convoy__pool_create(backend, 0, 0, &pool));
    printf("runtime: %s\n", convoy_runtime_describe(rt));
    printf("ns per allocate+free pair on a cache hit, median of %d runs; 'pool' is the pool\n"
           "itself, 'tensor' is convoy_tensor_create + convoy_tensor_destroy (pool block +\n"
           "tensor object); the target applies to the pool\n\n",
           RUNS);
    printf("%-8s %10s %10s %10s %10s %10s %8s\n", "size", "pairs/run", "pool ns", "tensor ns",
           "malloc ns", "hit rate", "target");

    int misses = 0, sizes = 0;
    for (size_t bytes = 256; bytes <= ((size_t)64 << 20); bytes *= 4) {
        int64_t elements = (int64_t)(bytes / sizeof(float));
        long iterations = 200000;
        /* Warm-up: fills the cache with this size and sizes the loop so the
         * slower of the two takes about 50 ms per run. */
        double warm = time_pool(rt, elements, 1000);
        double warm_malloc = time_malloc(bytes, 1000);
        if (warm_malloc > warm)
            warm = warm_malloc;
        if (warm * (double)iterations > 5e7)
            iterations = (long)(5e7 / warm) + 1000;

        convoy_memory_statistics before, after;
        CHECK(convoy_memory_stats(rt, &before));
        double raw_ns[RUNS], pool_ns[RUNS], malloc_ns[RUNS];
        (void)time_raw_pool(pool, bytes, 1000);
        for (int r = 0; r < RUNS; ++r) {
            raw_ns[r] = time_raw_pool(pool, bytes, iterations);
            pool_ns[r] = time_pool(rt, elements, iterations);
            malloc_ns[r] = time_malloc(bytes, iterations);
        }
        CHECK(convoy_memory_stats(rt, &after));
        uint64_t requests = after.requests - before.requests;
        uint64_t hits = after.cache_hits - before.cache_hits;
        double raw = suite_median(raw_ns, RUNS);
        double tensor = suite_median(pool_ns, RUNS);
        double plain = suite_median(malloc_ns, RUNS);
        char sz[32];
        printf("%-8s %10ld %10.1f %10.1f %10.1f %9.1f%% %8s\n", size_text(bytes, sz, sizeof sz),
               iterations, raw, tensor, plain,
               requests ? 100.0 * (double)hits / (double)requests : 0.0,
               raw <= TARGET_NS ? "ok" : "MISS");
        misses += raw > TARGET_NS;
        ++sizes;
        fflush(stdout);
    }
    printf("\ntarget <= %.0f ns per cached pair: met at %d of %d sizes\n", TARGET_NS,
           sizes - misses, sizes);
    convoy__pool_destroy(pool);
    backend->ops->destroy(backend);
    convoy_runtime_destroy(rt);
    return 0;
}
