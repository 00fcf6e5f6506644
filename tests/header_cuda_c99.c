/* Compiled as strict C99 with the CUDA headers on the include path: the
 * interop header needs only them. Built, not run. */
#include "convoy_cuda.h"

int convoy_header_cuda_c99_probe(const convoy_task_context *context);

int convoy_header_cuda_c99_probe(const convoy_task_context *context)
{
    cudaStream_t stream = convoy_cuda_task_stream(context);
    convoy_status (*data)(convoy_tensor *, float **) = convoy_cuda_tensor_data;
    return (stream != 0) + (data != 0);
}
