/* Algorithm names known to this build (runtime/algorithm_names.h). */
#include <string.h>
#include <strings.h>

#include "runtime/algorithm_names.h"

static const char *const names[] = {"cudnn", "gemm", "1x1", "direct", "onednn"};

int convoy__algorithm_name_known(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
            return 1;
    }
    return 0;
}

const char *convoy__algorithm_names_all(void)
{
    return "cudnn,gemm,1x1,direct,onednn";
}
