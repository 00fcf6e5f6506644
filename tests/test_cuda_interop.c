/* The CUDA interop header (convoy_cuda.h) through the public library: its
 * CUDA types compile, a CPU runtime refuses device pointers with
 * CONVOY_ERR_NO_DEVICE, bad arguments are refused by name, and a custom
 * task on the CPU gets no stream. With a usable GPU, a tensor's device
 * pointer holds what was uploaded and a custom task gets a real stream.
 * Built whenever the CUDA backend is. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <cuda_runtime_api.h>

#include "convoy_cuda.h"

static void expect_error(convoy_status got, convoy_status expected, const char *const *words)
{
    const char *message = convoy_last_error_message();
    int ok = got == expected;
    for (int i = 0; ok && words[i]; ++i)
        ok = strstr(message, words[i]) != NULL;
    if (!ok)
        print_message("expected %s, got %s, message \"%s\"\n", convoy_status_name(expected),
                      convoy_status_name(got), message);
    assert_true(ok);
}

#define EXPECT_ERROR(call, expected, ...)                                                          \
    expect_error((call), (expected), (const char *const[]){__VA_ARGS__, NULL})

static convoy_runtime *runtime_on(convoy_device device)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = device;
    convoy_runtime *rt = NULL;
    convoy_status status = convoy_runtime_create(&o, &rt);
    if (device == CONVOY_DEVICE_CUDA && status == CONVOY_ERR_NO_DEVICE)
        return NULL;
    assert_int_equal(status, CONVOY_OK);
    return rt;
}

typedef struct seen {
    int calls;
    cudaStream_t stream;
    convoy_device device;
} seen;

static convoy_status record_stream(const convoy_task_context *context, void *user_data)
{
    seen *s = user_data;
    s->calls++;
    s->stream = convoy_cuda_task_stream(context);
    s->device = context->device;
    return CONVOY_OK;
}

static void test_cpu_runtime_refuses(void **state)
{
    (void)state;
    convoy_runtime *rt = runtime_on(CONVOY_DEVICE_CPU);
    const int64_t dims[2] = {2, 3};
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 2, dims, &t), CONVOY_OK);
    float *ptr = (float *)&ptr;
    EXPECT_ERROR(convoy_cuda_tensor_data(t, &ptr), CONVOY_ERR_NO_DEVICE, "cuda_tensor_data", "2x3",
                 "cpu", "not on a CUDA device");
    assert_ptr_equal(ptr, (float *)&ptr);
    EXPECT_ERROR(convoy_cuda_tensor_data(NULL, &ptr), CONVOY_ERR_INVALID_ARGUMENT,
                 "cuda_tensor_data", "tensor is NULL");
    EXPECT_ERROR(convoy_cuda_tensor_data(t, NULL), CONVOY_ERR_INVALID_ARGUMENT, "cuda_tensor_data",
                 "device_ptr is NULL");

    /* A custom task on the CPU has no CUDA stream. */
    assert_null(convoy_cuda_task_stream(NULL));
    seen s = {0, (cudaStream_t)&s, CONVOY_DEVICE_AUTO};
    convoy_access access = {t, CONVOY_WRITE};
    assert_int_equal(convoy_submit(rt, record_stream, &s, &access, 1, "stream", NULL), CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.device, CONVOY_DEVICE_CPU);
    assert_null(s.stream);

    /* A detached tensor is refused as such. */
    convoy_runtime_destroy(rt);
    EXPECT_ERROR(convoy_cuda_tensor_data(t, &ptr), CONVOY_ERR_INVALID_ARGUMENT, "cuda_tensor_data",
                 "2x3", "detached");
    assert_ptr_equal(ptr, (float *)&ptr);
    convoy_tensor_destroy(t);
}

static void test_cuda_runtime_gives_device_memory(void **state)
{
    (void)state;
    convoy_runtime *rt = runtime_on(CONVOY_DEVICE_CUDA);
    if (!rt)
        skip();
    const int64_t dims[1] = {64};
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, dims, &t), CONVOY_OK);
    float host[64], back[64];
    for (int i = 0; i < 64; ++i)
        host[i] = (float)i * 0.5f;
    assert_int_equal(convoy_upload(rt, t, host, 64, NULL), CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    float *ptr = NULL;
    assert_int_equal(convoy_cuda_tensor_data(t, &ptr), CONVOY_OK);
    assert_non_null(ptr);
    assert_int_equal(cudaMemcpy(back, ptr, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(back, host, sizeof host);

    seen s = {0, NULL, CONVOY_DEVICE_AUTO};
    convoy_access access = {t, CONVOY_READ};
    assert_int_equal(convoy_submit(rt, record_stream, &s, &access, 1, "stream", NULL), CONVOY_OK);
    assert_int_equal(convoy_runtime_synchronize(rt), CONVOY_OK);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.device, CONVOY_DEVICE_CUDA);
    assert_non_null(s.stream);
    convoy_tensor_destroy(t);
    convoy_runtime_destroy(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_runtime_refuses),
        cmocka_unit_test(test_cuda_runtime_gives_device_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
