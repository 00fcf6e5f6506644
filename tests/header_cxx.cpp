// Compiled as C++: the public header must be usable from C++ as it is,
// without CUDA headers. Built, not run.
#include "convoy.h"

int convoy_header_cxx_probe();

int convoy_header_cxx_probe()
{
    convoy_options o = {};
    return static_cast<int>(sizeof o) + static_cast<int>(CONVOY_ERR_SHAPE);
}
