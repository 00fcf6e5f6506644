/* Uploads and downloads: tasks on the upload and download streams that move
 * data between the program's host memory and a tensor through the pinned
 * staging chunks, so large transfers overlap with compute. */
#include <stdint.h>
#include <stdio.h>

#include "runtime/runtime_int.h"
#include "core/error_detail.h"

typedef struct transfer_payload {
    convoy__staging *staging;
    void *device;
    void *host;
    size_t bytes;
    int upload;
} transfer_payload;

static convoy_status transfer_run(void *payload, void *native_stream, convoy__stream *order_stream)
{
    transfer_payload *p = payload;
    if (p->bytes == 0)
        return CONVOY_OK;
    if (p->upload)
        return convoy__staging_upload(p->staging, native_stream, p->device, p->host, p->bytes);
    return convoy__staging_download(p->staging, native_stream, p->host, p->device, p->bytes);
}

static convoy_status submit_transfer(convoy_runtime *rt, convoy_tensor *t, void *host, size_t count,
                                     int upload, convoy_task **task)
{
    const char *call = upload ? "upload" : "download";
    const char *name = upload ? "dst" : "src";
    if (!rt)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: runtime is NULL", call);
    convoy_status status = convoy__check_tensor(rt, t, call, name);
    if (status != CONVOY_OK)
        return status;
    if (count != (size_t)t->numel)
        return convoy__error(CONVOY_ERR_SHAPE,
                             "%s: count does not match %s %s: expected %lld elements, got %zu",
                             call, name, t->text, (long long)t->numel, count);
    if (!host && t->bytes > 0)
        return convoy__error(CONVOY_ERR_INVALID_ARGUMENT, "%s: host pointer is NULL for %s", call,
                             t->text);
    transfer_payload payload = {upload ? rt->upload_staging : rt->download_staging,
                                convoy__tensor_data(t), host, t->bytes, upload};
    convoy__hazard_access access = {&t->hazards, upload ? CONVOY_WRITE : CONVOY_READ};
    char label[128];
    snprintf(label, sizeof label, "%s %s", call, t->text);
    convoy__task_desc desc = {upload ? CONVOY__TASK_UPLOAD : CONVOY__TASK_DOWNLOAD,
                              upload ? CONVOY__QUEUE_UPLOAD : CONVOY__QUEUE_DOWNLOAD,
                              label,
                              transfer_run,
                              NULL,
                              NULL,
                              &payload,
                              sizeof payload,
                              &access,
                              1,
                              t->bytes};
    return convoy__scheduler_submit(rt->scheduler, &desc, task);
}

convoy_status convoy_upload(convoy_runtime *rt, convoy_tensor *dst, const void *host_src,
                            size_t count, convoy_task **task)
{
    /* The payload's host pointer is only read for an upload. */
    return submit_transfer(rt, dst, (void *)(uintptr_t)host_src, count, 1, task);
}

convoy_status convoy_download(convoy_runtime *rt, convoy_tensor *src, void *host_dst, size_t count,
                              convoy_task **task)
{
    return submit_transfer(rt, src, host_dst, count, 0, task);
}
