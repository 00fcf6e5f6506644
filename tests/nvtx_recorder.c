/* An NVTX injection library for tests: loaded by NVTX3 itself when
 * NVTX_INJECTION64_PATH names it (NVTX3's documented mechanism,
 * nvtx3/nvtxDetail/nvtxInit.h), it fills the callback slots of the core,
 * core2 (domains) and CUDA runtime modules and writes one line per call to
 * the file CONVOY_NVTX_RECORD names:
 *
 *     domain <name>                       nvtxDomainCreateA
 *     push <thread id> <domain> <message> nvtxDomainRangePushEx (domain "-":
 *                                         nvtxRangePushEx / nvtxRangePushA)
 *     pop <thread id> <domain>            nvtxDomainRangePop (or nvtxRangePop)
 *     thread <thread id> <name>           nvtxNameOsThreadA
 *     stream <pointer> <name>             nvtxNameCudaStreamA
 *
 * Thread ids are Linux thread ids, as convoy names its threads with. Each
 * line is written whole under a lock and flushed, so the test can read the
 * file while the process runs. */
#define NVTX_NO_IMPL /* the types and callback ids only: this is the tool side */
#include "nvtx3/nvToolsExt.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NAME_SIZE 128

struct nvtxDomainRegistration_st {
    char name[NAME_SIZE];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;

static void record(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pthread_mutex_lock(&lock);
    if (out) {
        vfprintf(out, format, args);
        fflush(out);
    }
    pthread_mutex_unlock(&lock);
    va_end(args);
}

static long thread_id(void)
{
    return (long)syscall(SYS_gettid);
}

static const char *message_of(const nvtxEventAttributes_t *attributes)
{
    if (!attributes || attributes->messageType != NVTX_MESSAGE_TYPE_ASCII ||
        !attributes->message.ascii)
        return "(not ascii)";
    return attributes->message.ascii;
}

static const char *domain_name(nvtxDomainHandle_t domain)
{
    return domain ? ((struct nvtxDomainRegistration_st *)domain)->name : "-";
}

/* ---- core2: domains ---------------------------------------------------------- */

static nvtxDomainHandle_t NVTX_API domain_create(const char *name)
{
    struct nvtxDomainRegistration_st *domain = calloc(1, sizeof *domain);
    if (!domain)
        return NULL;
    snprintf(domain->name, sizeof domain->name, "%s", name ? name : "");
    record("domain %s\n", domain->name);
    return domain;
}

/* A runtime destroys its domain last, after its threads have stopped, so
 * nothing pushes on it afterwards. */
static void NVTX_API domain_destroy(nvtxDomainHandle_t domain)
{
    record("domain_destroy %s\n", domain_name(domain));
    free(domain);
}

static int NVTX_API domain_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t *attributes)
{
    record("push %ld %s %s\n", thread_id(), domain_name(domain), message_of(attributes));
    return 0;
}

static int NVTX_API domain_pop(nvtxDomainHandle_t domain)
{
    record("pop %ld %s\n", thread_id(), domain_name(domain));
    return 0;
}

/* ---- core: global ranges and thread names --------------------------------------- */

static int NVTX_API global_push_ex(const nvtxEventAttributes_t *attributes)
{
    record("push %ld - %s\n", thread_id(), message_of(attributes));
    return 0;
}

static int NVTX_API global_push_a(const char *message)
{
    record("push %ld - %s\n", thread_id(), message ? message : "");
    return 0;
}

static int NVTX_API global_pop(void)
{
    record("pop %ld -\n", thread_id());
    return 0;
}

static void NVTX_API name_os_thread(uint32_t id, const char *name)
{
    record("thread %lu %s\n", (unsigned long)id, name ? name : "");
}

/* ---- the CUDA runtime module: stream names ------------------------------------- */

static void NVTX_API name_cuda_stream(void *stream, const char *name)
{
    record("stream %p %s\n", stream, name ? name : "");
}

/* ---- the entry point -------------------------------------------------------------- */

static int fill(const NvtxExportTableCallbacks *callbacks, NvtxCallbackModule module,
                unsigned int id, NvtxFunctionPointer fn)
{
    NvtxFunctionTable table = NULL;
    unsigned int size = 0;
    if (!callbacks->GetModuleFunctionTable(module, &table, &size) || !table || id >= size ||
        !table[id])
        return 0;
    *table[id] = fn;
    return 1;
}

#define SLOT(fn) ((NvtxFunctionPointer)(void (*)(void))(fn))

__attribute__((visibility("default"))) int NVTX_API
InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get_export_table);

int NVTX_API InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get_export_table)
{
    const char *path = getenv("CONVOY_NVTX_RECORD");
    if (!path || !get_export_table)
        return 0;
    const NvtxExportTableCallbacks *callbacks =
        (const NvtxExportTableCallbacks *)get_export_table(NVTX_ETID_CALLBACKS);
    if (!callbacks || callbacks->struct_size < sizeof *callbacks)
        return 0;
    pthread_mutex_lock(&lock);
    if (!out)
        out = fopen(path, "a");
    int opened = out != NULL;
    pthread_mutex_unlock(&lock);
    if (!opened)
        return 0;
    int ok = 1;
    ok &= fill(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainCreateA, SLOT(domain_create));
    ok &=
        fill(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainDestroy, SLOT(domain_destroy));
    ok &=
        fill(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRangePushEx, SLOT(domain_push));
    ok &= fill(callbacks, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRangePop, SLOT(domain_pop));
    ok &= fill(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePushEx, SLOT(global_push_ex));
    ok &= fill(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePushA, SLOT(global_push_a));
    ok &= fill(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePop, SLOT(global_pop));
    ok &= fill(callbacks, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_NameOsThreadA, SLOT(name_os_thread));
    ok &= fill(callbacks, NVTX_CB_MODULE_CUDART, NVTX_CBID_CUDART_NameCudaStreamA,
               SLOT(name_cuda_stream));
    record("injected %s\n", ok ? "all" : "some");
    return 1;
}
