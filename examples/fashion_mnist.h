/* Reading Fashion-MNIST as Debian's dataset-fashion-mnist package installs it: four gzip'd IDX
 * files in one directory (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz and the same
 * with t10k- for the test split), read with zlib. Images become floats scaled to [0, 1] and
 * then standardised with the training set's pixel mean and deviation; labels become floats
 * holding the class index, as convoy_softmax_cross_entropy takes them. */
#ifndef CONVOY_EXAMPLES_FASHION_MNIST_H
#define CONVOY_EXAMPLES_FASHION_MNIST_H

#include <stddef.h>
#include <stdint.h>

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define FMNIST_SIDE 28
#define FMNIST_CLASSES 10
/* Pixel mean and standard deviation of the training images after / 255. */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

typedef struct fmnist_split {
    int64_t count;
    float *images; /* (count, 1, 28, 28): (p / 255 - FMNIST_MEAN) / FMNIST_STD */
    float *labels; /* (count): 0..9 */
} fmnist_split;

/* Reads the split named prefix ("train" or "t10k") from dir. Returns 0 on success, else -1
 * with a message naming the file and what is wrong with it in error ("cannot open ...: No
 * such file or directory", "... is not an IDX file of images: magic 0x..., expected
 * 0x00000803", "... is truncated: ..."). *out is set only on success; free it with
 * fmnist_free. */
int fmnist_load(const char *dir, const char *prefix, fmnist_split *out, char *error,
                size_t error_size);

void fmnist_free(fmnist_split *split);

#endif /* CONVOY_EXAMPLES_FASHION_MNIST_H */
