/* Files for the tests of code that writes them (trace export, tuning cache,
 * planner): a fresh directory per test as a CMocka fixture, removed with all
 * it holds afterwards, and whole-file reads. */
#ifndef CONVOY_TESTS_TEMP_FILES_H
#define CONVOY_TESTS_TEMP_FILES_H

#include <stddef.h>

typedef struct temp_dir {
    char dir[256];  /* the directory */
    char path[320]; /* a file name in it, chosen at setup; not created */
} temp_dir;

/* Creates $TMPDIR/<prefix>XXXXXX (/tmp when TMPDIR is unset) and sets *state
 * to a malloc'd temp_dir whose path is file_name in it. Returns 0, or -1 when
 * the directory cannot be made (the CMocka setup convention). */
int temp_dir_setup(void **state, const char *prefix, const char *file_name);

/* CMocka teardown for temp_dir_setup: removes the directory's files and empty
 * subdirectories, then the directory, and frees the temp_dir. */
int temp_dir_teardown(void **state);

/* The whole file at path in malloc'd memory with a NUL appended; *size, when
 * size is not NULL, is its length without the NUL. NULL when it cannot be
 * read. Free it with free(). */
char *temp_read_file(const char *path, size_t *size);

#endif /* CONVOY_TESTS_TEMP_FILES_H */
