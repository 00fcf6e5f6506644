/* The persistent tuning cache behind CONVOY_TUNE_CACHE=path (DESIGN.md
 * section 4): the winning implementation per convolution shape key, kept in a
 * small text file so later processes skip the timing.
 *
 * File format (UTF-8 text, one record per line, fields separated by one tab):
 *
 *     convoy-tune-cache 1
 *     environment\t<the environment string>
 *     <key>\t<choice>\t<milliseconds, digits '.' digits>
 *     ...                      (one line per entry, sorted by key)
 *     checksum\t<16 lowercase hex digits>
 *
 * The checksum is FNV-1a 64 over every byte before the checksum line, so a
 * truncated or damaged file is detected and ignored. Numbers are written and
 * read without the C locale's help, so a program's setlocale() cannot change
 * the format.
 *
 * A cache never breaks a run: a missing file is an empty cache; a file that
 * is stale (another environment) or corrupt is ignored entirely with one
 * CONVOY_LOG_WARNING line; a file that cannot be written costs a warning and
 * nothing else. Only a regular file (or nothing) at the path is read or
 * replaced: anything else there (a directory, a FIFO, a device node such as
 * /dev/null, a socket, a symbolic link) is left alone, never opened, read
 * or written; the cache then lives in memory for the run, with one warning
 * at open. Opens never block. All functions are thread-safe. Several processes may share
 * one path: writers serialize on an advisory lock file "<path>.lock" (kept
 * next to the cache; removing it is harmless), re-read and merge the current
 * file, and replace it with an atomic rename, so the file is never torn and
 * no process drops another's entries. */
#ifndef CONVOY_RUNTIME_TUNE_CACHE_H
#define CONVOY_RUNTIME_TUNE_CACHE_H

#include <stddef.h>

#include "convoy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct convoy__tune_cache convoy__tune_cache;

/* Longest key and choice accepted, in bytes, without the terminator. */
#define CONVOY__TUNE_CACHE_MAX_KEY 1024
#define CONVOY__TUNE_CACHE_MAX_CHOICE 256

/* Opens the cache stored at path and loads it when the file exists and was
 * written for the same environment. environment names everything that
 * invalidates tuned choices (device name, compute capability, driver, cuDNN
 * and convoy versions); NULL counts as "", and control characters in it are
 * replaced by spaces (the file keeps it on one line). log (may be NULL) gets
 * the warning when an existing file is ignored, with log_user_data.
 * Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL or empty path or a NULL out,
 * CONVOY_ERR_OUT_OF_MEMORY. A missing, unreadable, stale or corrupt file, or
 * a path that is not a regular file, is not an error. *out is set only on success; close it with
 * convoy__tune_cache_close(). Synchronous (reads the file). */
convoy_status convoy__tune_cache_open(const char *path, const char *environment, convoy_log_fn log,
                                      void *log_user_data, convoy__tune_cache **out);

/* Looks key up. Returns 1 and copies the choice (NUL-terminated) into
 * choice[choice_size] and the timing into *ms when found; choice may be NULL
 * with choice_size 0, and ms may be NULL. Returns 0 when the key is absent,
 * when an argument is NULL, or when the choice does not fit in choice_size
 * (a truncated name would name another candidate). Thread-safe. */
int convoy__tune_cache_lookup(convoy__tune_cache *cache, const char *key, char *choice,
                              size_t choice_size, double *ms);

/* Records choice (taking ms milliseconds) for key, in memory and in the file.
 * The file is rewritten atomically: under the lock file, the current file is
 * re-read and its entries merged (those on disk win, except for key), a temp
 * file "<path>.tmp.<pid>.<counter>" is written in the same directory, synced
 * and renamed over path. Returns CONVOY_ERR_INVALID_ARGUMENT for a NULL
 * argument, an empty key or choice, one longer than the maxima above or
 * holding a tab, newline or other control character, or ms negative, not
 * finite or over 1e9; CONVOY_ERR_OUT_OF_MEMORY when memory fails. A path
 * left alone at open (not a regular file) keeps the entry in memory only,
 * with no further log line. When the file cannot be written (no such
 * directory, no permission, disk full, not a regular file any more) the
 * entry is still kept in memory, a warning is logged (once per cache object;
 * later failures log at CONVOY_LOG_DEBUG) and the call returns CONVOY_OK: a
 * cache must never break a run. Thread-safe; blocks on file I/O. */
convoy_status convoy__tune_cache_store(convoy__tune_cache *cache, const char *key,
                                       const char *choice, double ms);

/* Frees the cache. Everything stored is already on disk. NULL is a no-op. */
void convoy__tune_cache_close(convoy__tune_cache *cache);

#ifdef __cplusplus
}
#endif

#endif /* CONVOY_RUNTIME_TUNE_CACHE_H */
