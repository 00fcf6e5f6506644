/* The README's example, compiled and run by the build so it cannot rot: one
 * 3x3 convolution of a 1x1x5x5 image (upload, forward, download, wait). */
#include <stdio.h>

#include "convoy.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        convoy_status s_ = (call);                                                                 \
        if (s_ != CONVOY_OK) {                                                                     \
            fprintf(stderr, "%s: %s\n", convoy_status_name(s_), convoy_last_error_message());      \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void)
{
    convoy_runtime *rt = NULL;
    CHECK(convoy_runtime_create(NULL, &rt)); /* CUDA if usable, else the CPU */

    const int64_t in_dims[4] = {1, 1, 5, 5}; /* N, C, H, W */
    const int64_t w_dims[4] = {1, 1, 3, 3};  /* M, C, kH, kW */
    int64_t out_dims[4];
    convoy_conv_params p;
    CHECK(convoy_conv_params_init(&p, 2));
    p.border = CONVOY_BORDER_HALF; /* "same" output size */
    CHECK(convoy_conv_output_dims(&p, in_dims, w_dims, out_dims));

    convoy_tensor *x = NULL, *w = NULL, *y = NULL;
    CHECK(convoy_tensor_create(rt, 4, in_dims, &x));
    CHECK(convoy_tensor_create(rt, 4, w_dims, &w));
    CHECK(convoy_tensor_create(rt, 4, out_dims, &y));

    float image[25], ones[9], result[25];
    for (int i = 0; i < 25; ++i)
        image[i] = (float)i;
    for (int i = 0; i < 9; ++i)
        ones[i] = 1.0f;

    /* Each call returns at once; the runtime orders the tasks by the tensors
     * they read and write. Host buffers must stay valid until completion. */
    convoy_task *done = NULL;
    CHECK(convoy_upload(rt, x, image, 25, NULL));
    CHECK(convoy_upload(rt, w, ones, 9, NULL));
    CHECK(convoy_conv_forward(rt, &p, x, w, y, NULL));
    CHECK(convoy_download(rt, y, result, 25, &done));
    CHECK(convoy_task_wait(done)); /* a failure anywhere above shows up here */
    convoy_task_release(done);

    for (int r = 0; r < 5; ++r)
        printf("%5.0f %5.0f %5.0f %5.0f %5.0f\n", result[5 * r], result[5 * r + 1],
               result[5 * r + 2], result[5 * r + 3], result[5 * r + 4]);

    convoy_tensor_destroy(x);
    convoy_tensor_destroy(w);
    convoy_tensor_destroy(y);
    convoy_runtime_destroy(rt);
    return result[12] == 108.0f ? 0 : 1; /* centre: 6+7+8 + 11+12+13 + 16+17+18 */
}
