// Compiled as C++: the public headers must be usable from C++ as they are.
// Built, not run.
#include "convoy.h"
#include "convoy_cuda.h"

int convoy_header_cxx_probe();

int convoy_header_cxx_probe()
{
    convoy_options o = {};
    return static_cast<int>(sizeof o) + static_cast<int>(CONVOY_ERR_SHAPE);
}
