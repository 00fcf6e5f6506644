/* Fashion-MNIST from gzip'd IDX files (examples/fashion_mnist.h). An IDX file is a big-endian
 * header (a magic number whose last byte is the rank, then one 32-bit extent per axis) and
 * the unsigned bytes of the array. zlib's gzread reads a gzip file, or a plain one as it is,
 * so a file of the wrong kind shows as a bad magic number and a cut one as a short read with
 * zlib's reason. */
#include "fashion_mnist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#define IMAGES_MAGIC 0x00000803u /* unsigned bytes, rank 3 */
#define LABELS_MAGIC 0x00000801u /* unsigned bytes, rank 1 */

static uint32_t big_endian(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads exactly size bytes; on a short read says how many came and why. */
static int read_exactly(gzFile f, const char *path, void *buffer, size_t size, const char *what,
                        char *error, size_t error_size)
{
    size_t done = 0;
    while (done < size) {
        unsigned chunk = size - done > (1u << 30) ? 1u << 30 : (unsigned)(size - done);
        int got = gzread(f, (char *)buffer + done, chunk);
        if (got <= 0) {
            int code = Z_OK;
            const char *reason = gzerror(f, &code);
            /* zlib puts the path in front of its reason; the message already has it. */
            const size_t path_length = strlen(path);
            if (code != Z_OK && !strncmp(reason, path, path_length) && reason[path_length] == ':')
                reason += path_length + (reason[path_length + 1] == ' ' ? 2 : 1);
            snprintf(error, error_size,
                     "%s is truncated or corrupt: %zu bytes of %s expected, %zu read%s%s%s", path,
                     size, what, done, code != Z_OK ? " (zlib: " : "", code != Z_OK ? reason : "",
                     code != Z_OK ? ")" : "");
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

/* The bytes of one IDX file: magic, then rank extents, then the data. */
static unsigned char *read_idx(const char *path, uint32_t magic, int rank, uint32_t *dims,
                               size_t *bytes, char *error, size_t error_size)
{
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(error, error_size, "cannot open %s: %s", path,
                 errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    unsigned char header[16];
    unsigned char *data = NULL;
    const size_t header_size = 4 + 4 * (size_t)rank;
    if (read_exactly(f, path, header, header_size, "the IDX header", error, error_size) != 0)
        goto fail;
    if (big_endian(header) != magic) {
        snprintf(error, error_size, "%s is not an IDX file of %s: magic 0x%08x, expected 0x%08x",
                 path, rank == 3 ? "images" : "labels", big_endian(header), magic);
        goto fail;
    }
    size_t size = 1;
    for (int i = 0; i < rank; ++i) {
        dims[i] = big_endian(header + 4 + 4 * i);
        size *= dims[i];
    }
    if (rank == 3 && (dims[1] != FMNIST_SIDE || dims[2] != FMNIST_SIDE)) {
        snprintf(error, error_size, "%s holds %ux%u images, expected %dx%d", path, dims[1], dims[2],
                 FMNIST_SIDE, FMNIST_SIDE);
        goto fail;
    }
    data = malloc(size ? size : 1);
    if (!data) {
        snprintf(error, error_size, "%s: out of memory for %zu bytes", path, size);
        goto fail;
    }
    if (read_exactly(f, path, data, size, rank == 3 ? "the images" : "the labels", error,
                     error_size) != 0)
        goto fail;
    gzclose(f);
    *bytes = size;
    return data;
fail:
    free(data);
    gzclose(f);
    return NULL;
}

int fmnist_load(const char *dir, const char *prefix, fmnist_split *out, char *error,
                size_t error_size)
{
    char images_path[4096], labels_path[4096];
    snprintf(images_path, sizeof images_path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(labels_path, sizeof labels_path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    uint32_t image_dims[3] = {0, 0, 0}, label_dims[1] = {0};
    size_t image_bytes = 0, label_bytes = 0;
    unsigned char *pixels =
        read_idx(images_path, IMAGES_MAGIC, 3, image_dims, &image_bytes, error, error_size);
    if (!pixels)
        return -1;
    unsigned char *classes =
        read_idx(labels_path, LABELS_MAGIC, 1, label_dims, &label_bytes, error, error_size);
    if (!classes) {
        free(pixels);
        return -1;
    }
    int status = -1;
    const int64_t count = image_dims[0];
    float *images = NULL, *labels = NULL;
    if (label_dims[0] != image_dims[0]) {
        snprintf(error, error_size, "%s has %u labels but %s has %u images", labels_path,
                 label_dims[0], images_path, image_dims[0]);
        goto done;
    }
    for (int64_t i = 0; i < count; ++i) {
        if (classes[i] >= FMNIST_CLASSES) {
            snprintf(error, error_size, "%s: label %lld is %u, expected 0..%d", labels_path,
                     (long long)i, classes[i], FMNIST_CLASSES - 1);
            goto done;
        }
    }
    images = malloc((image_bytes ? image_bytes : 1) * sizeof *images);
    labels = malloc((size_t)(count ? count : 1) * sizeof *labels);
    if (!images || !labels) {
        snprintf(error, error_size, "out of memory for the %s split", prefix);
        goto done;
    }
    /* float32 arithmetic, one rounding per step, as the PyTorch reference does it. */
    for (size_t i = 0; i < image_bytes; ++i) {
        float scaled = (float)pixels[i] / 255.0f;
        images[i] = (scaled - FMNIST_MEAN) / FMNIST_STD;
    }
    for (int64_t i = 0; i < count; ++i)
        labels[i] = (float)classes[i];
    out->count = count;
    out->images = images;
    out->labels = labels;
    images = labels = NULL;
    status = 0;
done:
    free(images);
    free(labels);
    free(pixels);
    free(classes);
    return status;
}

void fmnist_free(fmnist_split *split)
{
    if (!split)
        return;
    free(split->images);
    free(split->labels);
    split->images = split->labels = NULL;
    split->count = 0;
}
