/*
 * What diff/'s own files share (not installed, not part of diff.h): the
 * last canonical state, bounded string lengths, error messages, and the
 * cost model of malloc that the memory figures count with.
 */
#ifndef SB_DIFF_INTERNAL_H
#define SB_DIFF_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "diff.h"

#define STATE_LAST DIFF_STATE_CANCELLED

/*
 * What glibc's malloc really takes for a request: an 8-byte chunk header,
 * 16-byte granularity and a 32-byte minimum chunk; requests above the mmap
 * threshold are whole pages. diff_index_memory() and diff_cycle_memory()
 * count with this so that the figures (index_bytes in the engine's logs,
 * the bytes a cycle held) are what the process pays, not what was asked
 * for. The slab pool did not make it dead: the slabs themselves, the slab
 * array, the tables, the interned statuses and the record store's blocks
 * are still malloc'd, one request each.
 */
#define MALLOC_HEADER 8
#define MALLOC_ALIGN 16
#define MALLOC_MIN_CHUNK 32
#define MALLOC_MMAP_THRESHOLD (128 * 1024)
#define MALLOC_PAGE 4096

static inline size_t heap_cost(size_t n)
{
    if (n == 0)
        return 0;
    if (n >= MALLOC_MMAP_THRESHOLD)
        return (n + MALLOC_HEADER + MALLOC_PAGE - 1) / MALLOC_PAGE * MALLOC_PAGE;
    size_t c = (n + MALLOC_HEADER + MALLOC_ALIGN - 1) & ~(size_t)(MALLOC_ALIGN - 1);
    return c < MALLOC_MIN_CHUNK ? MALLOC_MIN_CHUNK : c;
}

/* Length of s if it is 1..max bytes long, else 0. */
static inline size_t bounded_len(const char *s, size_t max)
{
    if (s == NULL)
        return 0;
    size_t n = strnlen(s, max + 1);
    return n > max ? 0 : n;
}

__attribute__((format(printf, 3, 4))) static inline void set_err(char *err, size_t errlen,
                                                                 const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* diff_event_id() that says whether it failed: 0, or -1 (a NULL argument,
 * an unknown type, ENOMEM for an absurdly long source). */
int event_id_compute(const char *source, const char *session_id, diff_event_type_t type,
                     char out[DIFF_EVENT_ID_LEN]);

#endif /* SB_DIFF_INTERNAL_H */
