/* Monotonic time and thread names (core/platform.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/platform.h"

#ifdef CONVOY_HAVE_NVTX
#include "nvtx3/nvToolsExt.h"
#endif

double convoy__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

void convoy__name_this_thread(const char *name)
{
    char short_name[16];
    snprintf(short_name, sizeof short_name, "%s", name);
    pthread_setname_np(pthread_self(), short_name);
#ifdef CONVOY_HAVE_NVTX
    nvtxNameOsThreadA((uint32_t)syscall(SYS_gettid), name);
#endif
}
