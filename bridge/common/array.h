/*
 * array: the one growth rule of the daemon's heap arrays and buffers, which
 * every module wrote by hand before (the diff's notes and slabs, the
 * configuration's buffers, the HTTP body, the metrics text). Doubling keeps
 * n appends at O(n) copies.
 *
 * Header only, and without I/O, so that diff/ may use it too (sb_diff sees
 * this folder's headers, and links none of its code).
 */
#ifndef SB_ARRAY_H
#define SB_ARRAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Room for at least need elements of elem bytes at v, which holds *cap of
 * them: the capacity doubles, from first when it is 0, until it holds need
 * (nothing happens when it already does). Returns the array, which may
 * have moved, with *cap updated; or NULL on ENOMEM or a size beyond
 * SIZE_MAX, with v and *cap as they were (v still owned by the caller).
 */
static inline void *array_grow(void *v, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return v;
    size_t n = *cap != 0 ? *cap : first != 0 ? first : 1;
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return NULL;
        n *= 2;
    }
    if (elem != 0 && n > SIZE_MAX / elem)
        return NULL;
    void *nv = realloc(v, n * elem);
    if (nv == NULL)
        return NULL;
    *cap = n;
    return nv;
}

#endif /* SB_ARRAY_H */
