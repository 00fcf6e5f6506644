/* NVTX3 ranges for convoy's tasks. NVTX3 is header-only and does nothing until a
 * tool (Nsight) injects itself, so the calls are cheap when nobody profiles. */
#include <stdlib.h>

#include "profiling/nvtx.h"

#ifdef CONVOY_HAVE_NVTX
#include "nvtx3/nvToolsExt.h"
#endif

struct convoy__prof_domain {
#ifdef CONVOY_HAVE_NVTX
    nvtxDomainHandle_t handle;
#else
    int unused;
#endif
};

convoy__prof_domain *convoy__prof_domain_create(const char *name)
{
#ifdef CONVOY_HAVE_NVTX
    convoy__prof_domain *domain = malloc(sizeof *domain);
    if (!domain)
        return NULL;
    domain->handle = nvtxDomainCreateA(name);
    return domain;
#else
    (void)name;
    return NULL;
#endif
}

void convoy__prof_domain_destroy(convoy__prof_domain *domain)
{
    if (!domain)
        return;
#ifdef CONVOY_HAVE_NVTX
    nvtxDomainDestroy(domain->handle);
#endif
    free(domain);
}

void convoy__prof_range_push(convoy__prof_domain *domain, const char *label)
{
#ifdef CONVOY_HAVE_NVTX
    if (!domain)
        return;
    nvtxEventAttributes_t attributes = {0};
    attributes.version = NVTX_VERSION;
    attributes.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    attributes.messageType = NVTX_MESSAGE_TYPE_ASCII;
    attributes.message.ascii = label;
    nvtxDomainRangePushEx(domain->handle, &attributes);
#else
    (void)domain;
    (void)label;
#endif
}

void convoy__prof_range_pop(convoy__prof_domain *domain)
{
#ifdef CONVOY_HAVE_NVTX
    if (domain)
        nvtxDomainRangePop(domain->handle);
#else
    (void)domain;
#endif
}
