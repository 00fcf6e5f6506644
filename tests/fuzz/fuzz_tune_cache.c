/* libFuzzer target: bytes become a tune-cache file (runtime/tune_cache.h),
 * which convoy__tune_cache_open loads; then a few lookups, sometimes a store
 * (which re-reads, merges and rewrites the file), and close. A cache file
 * must never crash, hang or leak, however damaged.
 *
 * The first byte steers the harness: bit 0 appends a valid checksum line and
 * bit 1 puts a valid header in front, so mutations reach the entry parser
 * behind the checksum (a random file almost never matches FNV-1a); bit 2
 * stores an entry afterwards. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hash.h"
#include "runtime/tune_cache.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ENVIRONMENT "fuzz environment"

static char path[64];
static char lock_path[80];

static void remove_files(void)
{
    unlink(path);
    unlink(lock_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(path, sizeof path, "/tmp/convoy_fuzz_tune_%ld.txt", (long)getpid());
    snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    atexit(remove_files);
    return 0;
}

static void write_file(const uint8_t *body, size_t size, int header, int checksum)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    uint64_t sum = CONVOY__FNV1A_OFFSET;
    if (header) {
        static const char text[] = "convoy-tune-cache 1\nenvironment\t" ENVIRONMENT "\n";
        fwrite(text, 1, sizeof text - 1, f);
        sum = convoy__fnv1a_update(sum, text, sizeof text - 1);
    }
    if (size)
        fwrite(body, 1, size, f);
    sum = convoy__fnv1a_update(sum, body, size);
    if (checksum)
        fprintf(f, "checksum\t%016llx\n", (unsigned long long)sum);
    if (fclose(f) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t flags = data[0];
    write_file(data + 1, size - 1, flags & 2, flags & 1);
    convoy__tune_cache *cache = NULL;
    if (convoy__tune_cache_open(path, ENVIRONMENT, NULL, NULL, &cache) != CONVOY_OK)
        abort();
    char choice[CONVOY__TUNE_CACHE_MAX_CHOICE + 1];
    double ms = 0.0;
    (void)convoy__tune_cache_lookup(cache, "fwd n1 c1", choice, sizeof choice, &ms);
    (void)convoy__tune_cache_lookup(cache, "a", choice, 2, NULL);
    /* The body's first line as a key, in case it names an entry. */
    char key[CONVOY__TUNE_CACHE_MAX_KEY + 1];
    size_t len = 0;
    while (len + 1 < size && len < CONVOY__TUNE_CACHE_MAX_KEY && data[1 + len] != '\t' &&
           data[1 + len] != '\n' && data[1 + len] != '\0')
        len++;
    memcpy(key, data + 1, len);
    key[len] = '\0';
    (void)convoy__tune_cache_lookup(cache, key, choice, sizeof choice, &ms);
    if (flags & 4)
        (void)convoy__tune_cache_store(cache, len ? key : "k", "gemm", 1.5);
    convoy__tune_cache_close(cache);
    return 0;
}
