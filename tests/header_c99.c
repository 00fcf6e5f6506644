/* Compiled as strict C99 (-pedantic): the public header must need nothing
 * newer and no CUDA header. Built, not run. */
#include "convoy.h"

int convoy_header_c99_probe(void);

int convoy_header_c99_probe(void)
{
    convoy_conv_params p;
    return (int)sizeof p + (int)CONVOY_OK;
}
