/* What the training ops of every backend share beyond their math: the message of a bad
 * label, so the CPU and CUDA report it in the same words. */
#include <stdint.h>

#include "kernels/train_ops.h"
#include "core/error_detail.h"

convoy_status convoy__bad_label(int64_t row, float value, int64_t classes)
{
    return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                         "labels[%lld] is %g, expected a class index, an integer in [0, %lld)",
                         (long long)row, (double)value, (long long)classes);
}
