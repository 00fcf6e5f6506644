/* The one place that knows which backends exist. A build without CUDA
 * compiles only the host backend; with CUDA, device AUTO tries the GPU and
 * falls back to the host with the reason kept for convoy_runtime_describe. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cpu/host_backend.h"
#include "runtime/options_int.h"
#include "runtime/runtime_int.h"
#include "core/error_detail.h"

#ifdef CONVOY_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

/* The host backend's BLAS threads: all cores for the synchronous path, the
 * cores divided between compute streams otherwise. */
static int host_blas_threads(const convoy_options *o)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int total = o->blas_threads > 0 ? o->blas_threads : (int)(cores > 0 ? cores : 1);
    int streams = o->streams > 0 ? o->streams : 1;
    int per_task = total / streams;
    return per_task > 0 ? per_task : 1;
}

static convoy_status open_host(const convoy_options *o, const char *note, convoy__backend **out)
{
    convoy__host_config config = {host_blas_threads(o), note};
    return convoy__host_backend_create(&config, out);
}

convoy_status convoy__backend_open(const convoy_options *o, convoy__backend **out, char *note,
                                   size_t note_size)
{
    note[0] = '\0';
    const unsigned require = convoy__impl_bits_from_names(o->require);
    if (o->device == CONVOY_DEVICE_CPU) {
        if (require & CONVOY_IMPL_CUDNN)
            return convoy__error(CONVOY_ERR_UNSUPPORTED,
                                 "runtime_create: require has cudnn but the device is the CPU");
        return open_host(o, NULL, out);
    }
#ifdef CONVOY_HAVE_CUDA
    const unsigned exclude = convoy__impl_bits_from_names(o->exclude);
    char why[256] = "";
    convoy__cuda_config config = {o->device_index, o->deterministic,
                                  !(exclude & CONVOY_IMPL_CUDNN)};
    convoy_status status = convoy__cuda_backend_create(&config, out, why, sizeof why);
    if (status == CONVOY_OK) {
        if ((require & CONVOY_IMPL_CUDNN) && !convoy__cuda_backend_has_cudnn(*out)) {
            (*out)->ops->destroy(*out);
            *out = NULL;
            return convoy__error(CONVOY_ERR_UNSUPPORTED,
                                 "runtime_create: require has cudnn but cuDNN is not usable%s",
                                 (exclude & CONVOY_IMPL_CUDNN) ? " (exclude has cudnn too)" : "");
        }
        return CONVOY_OK;
    }
    if (o->device == CONVOY_DEVICE_CUDA || (require & CONVOY_IMPL_CUDNN))
        return convoy__error(status == CONVOY_ERR_NO_DEVICE ? CONVOY_ERR_NO_DEVICE : status,
                             "runtime_create: CUDA device %d is not usable: %s%s", o->device_index,
                             why, (require & CONVOY_IMPL_CUDNN) ? " (require has cudnn)" : "");
    snprintf(note, note_size, "(no CUDA: %s)", why);
#else
    if (o->device == CONVOY_DEVICE_CUDA || (require & CONVOY_IMPL_CUDNN))
        return convoy__error(CONVOY_ERR_NO_DEVICE,
                             "runtime_create: CUDA was requested%s but this convoy was built "
                             "without the CUDA backend",
                             (require & CONVOY_IMPL_CUDNN) ? " (require has cudnn)" : "");
    snprintf(note, note_size, "(no CUDA: built without the CUDA backend)");
#endif
    return open_host(o, note, out);
}
