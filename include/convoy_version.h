/* convoy version macros. Kept apart from convoy.h so build scripts can read
 * them without pulling in the whole API. */
#ifndef CONVOY_VERSION_H
#define CONVOY_VERSION_H

#define CONVOY_VERSION_MAJOR 0
#define CONVOY_VERSION_MINOR 1
#define CONVOY_VERSION_PATCH 0
#define CONVOY_VERSION_STRING "0.1.0"

/* One integer that orders releases: 0.1.0 -> 100. */
#define CONVOY_VERSION_NUMBER                                                                      \
    (CONVOY_VERSION_MAJOR * 10000 + CONVOY_VERSION_MINOR * 100 + CONVOY_VERSION_PATCH)

#endif /* CONVOY_VERSION_H */
