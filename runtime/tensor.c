/* Tensors: dense float32 storage from the runtime's pool plus the hazard
 * record the scheduler orders tasks by. Destroying a tensor is itself a task
 * ordered after every task already using it, so storage returns to the pool
 * exactly when the device is done with it and the call never blocks.
 *
 * A tensor the program still holds when its runtime is destroyed is
 * detached (runtime NULL, no storage): the handle stays valid for its dims
 * and for convoy_tensor_destroy, which then only frees it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/conv_shape.h"
#include "runtime/runtime_int.h"
#include "core/checked_math.h"
#include "core/error_detail.h"

convoy_status convoy__check_tensor(const convoy_runtime *rt, const convoy_tensor *t,
                                   const char *call, const char *name)
{
    if (!t)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call, name);
    if (!t->runtime)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: %s (%s) is detached: its runtime was destroyed", call, name,
                             t->text);
    if (t->runtime != rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s (%s) belongs to another runtime",
                             call, name, t->text);
    return CONVOY_OK;
}

convoy_status convoy_tensor_create(convoy_runtime *rt, int ndim, const int64_t *dims,
                                   convoy_tensor **out)
{
    static const char *call = "tensor_create";
    if (!rt || !dims || !out)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call,
                             !rt     ? "runtime"
                             : !dims ? "dims"
                                     : "out");
    if (ndim < 1 || ndim > CONVOY_MAX_DIMS)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: ndim is %d, expected 1..%d", call,
                             ndim, CONVOY_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; ++i) {
        if (dims[i] < 0)
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: dims[%d] is %lld (< 0)", call, i,
                                 (long long)dims[i]);
        if (!convoy__mul_i64(numel, dims[i], &numel))
            return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                                 "%s: the element count overflows int64 at dims[%d] = %lld", call,
                                 i, (long long)dims[i]);
    }
    size_t bytes;
    if (!convoy__bytes_of(numel, sizeof(float), &bytes))
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: %lld floats do not fit in the address space", call,
                             (long long)numel);
    convoy_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return convoy__error(CONVOY_ERR_OUT_OF_MEMORY, "%s: out of host memory", call);
    t->runtime = rt;
    t->ndim = ndim;
    memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->numel = numel;
    t->bytes = bytes;
    convoy__dims_text(dims, ndim, t->text, sizeof t->text);
    if (bytes > 0) {
        char what[128];
        convoy__text_join(what, sizeof what, "tensor ", t->text);
        convoy_status status = convoy__pool_alloc(rt->pool, bytes, NULL, what, &t->storage);
        if (status != CONVOY_OK) {
            free(t);
            convoy__error_prefix(call);
            return status;
        }
    }
    pthread_mutex_lock(&rt->tensors_lock);
    t->next = rt->tensors;
    if (rt->tensors)
        rt->tensors->prev = t;
    rt->tensors = t;
    pthread_mutex_unlock(&rt->tensors_lock);
    *out = t;
    return CONVOY_OK;
}

static void unlink_and_free(convoy_tensor *t, convoy__stream *order_stream)
{
    convoy_runtime *rt = t->runtime;
    pthread_mutex_lock(&rt->tensors_lock);
    if (t->prev)
        t->prev->next = t->next;
    else
        rt->tensors = t->next;
    if (t->next)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&rt->tensors_lock);
    convoy__pool_free(rt->pool, t->storage, order_stream);
    free(t->hazards.readers);
    free(t);
}

typedef struct release_payload {
    convoy_tensor *tensor;
} release_payload;

/* Runs after every task that used the tensor. On CUDA it runs at enqueue,
 * so the storage goes back to the pool in the order of its stream. */
static convoy_status release_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    unlink_and_free(((release_payload *)payload)->tensor, order_stream);
    return CONVOY_OK;
}

void convoy__tensor_detach(convoy_tensor *t)
{
    convoy_runtime *rt = t->runtime;
    convoy__hazards_clear(rt->scheduler, &t->hazards);
    convoy__pool_free(rt->pool, t->storage, NULL);
    t->storage = NULL;
    t->runtime = NULL;
    t->prev = t->next = NULL;
}

void convoy_tensor_destroy(convoy_tensor *t)
{
    if (!t)
        return;
    convoy_runtime *rt = t->runtime;
    if (!rt) {
        free(t);
        return;
    }
    /* No task still uses the tensor: free it now, no release task needed. */
    if (convoy__scheduler_clear_if_idle(rt->scheduler, &t->hazards)) {
        unlink_and_free(t, NULL);
        return;
    }
    release_payload payload = {t};
    convoy__hazard_access access = {&t->hazards, CONVOY__ACCESS_RELEASE};
    char label[128];
    convoy__text_join(label, sizeof label, "release ", t->text);
    convoy__task_desc desc = {CONVOY__TASK_RELEASE,
                              CONVOY__QUEUE_COMPUTE,
                              label,
                              release_run,
                              NULL,
                              NULL,
                              &payload,
                              sizeof payload,
                              &access,
                              1,
                              0};
    if (convoy__scheduler_submit(rt->scheduler, &desc, NULL) != CONVOY_OK) {
        /* No memory for even the release task: wait for everything instead,
         * after which nothing uses the tensor. */
        (void)convoy__scheduler_synchronize(rt->scheduler);
        convoy__hazards_clear(rt->scheduler, &t->hazards);
        unlink_and_free(t, NULL);
    }
}

int convoy_tensor_ndim(const convoy_tensor *t)
{
    return t ? t->ndim : 0;
}

int64_t convoy_tensor_dim(const convoy_tensor *t, int axis)
{
    if (!t || axis < 0 || axis >= t->ndim)
        return -1;
    return t->dims[axis];
}

/* Declared in include/convoy_cuda.h, which needs the CUDA headers; its
 * signature has no CUDA type, so the definition builds everywhere and a CPU
 * runtime answers CONVOY_ERR_NO_DEVICE. */
CONVOY_EXTERN convoy_status convoy_cuda_tensor_data(convoy_tensor *t, float **device_ptr)
{
    static const char *call = "cuda_tensor_data";
    if (!device_ptr)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: device_ptr is NULL", call);
    if (!t)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: tensor is NULL", call);
    convoy_runtime *rt = t->runtime;
    if (!rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT,
                             "%s: tensor (%s) is detached: its runtime was destroyed", call,
                             t->text);
    if (rt->backend->ops->device != CONVOY_DEVICE_CUDA)
        return convoy__error(CONVOY_ERR_NO_DEVICE,
                             "%s: tensor (%s) lives on the %s runtime, not on a CUDA device", call,
                             t->text, rt->backend->ops->name);
    *device_ptr = convoy__tensor_data(t);
    return CONVOY_OK;
}
