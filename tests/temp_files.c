/* A temporary directory per test and whole-file reads, shared by the tests of
 * the trace export, the tuning cache and the planner. */
#include "temp_files.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int temp_dir_setup(void **state, const char *prefix, const char *file_name)
{
    temp_dir *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/%sXXXXXX", base && *base ? base : "/tmp", prefix);
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, file_name);
    *state = t;
    return 0;
}

int temp_dir_teardown(void **state)
{
    temp_dir *t = *state;
    DIR *d = opendir(t->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char p[600];
                snprintf(p, sizeof p, "%s/%s", t->dir, e->d_name);
                if (unlink(p) != 0)
                    rmdir(p);
            }
        }
        closedir(d);
    }
    rmdir(t->dir);
    free(t);
    *state = NULL;
    return 0;
}

char *temp_read_file(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    char *text = NULL;
    long length = -1;
    if (fseek(fp, 0, SEEK_END) == 0 && (length = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0)
        text = malloc((size_t)length + 1);
    if (text && fread(text, 1, (size_t)length, fp) != (size_t)length) {
        free(text);
        text = NULL;
    }
    fclose(fp);
    if (!text)
        return NULL;
    text[length] = '\0';
    if (size)
        *size = (size_t)length;
    return text;
}
