/* pool: see pool.h. */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "internal.h"

uint32_t pool_alloc(pool_t *p, unsigned cls)
{
    uint32_t ref = p->free[cls];
    if (ref != 0) {
        memcpy(&p->free[cls], pool_ptr(p, ref), sizeof(uint32_t));
    } else {
        if (p->left[cls] == 0) {
            if (p->nslabs == POOL_MAX_SLABS)
                return 0;
            char **v = array_grow(p->slabs, &p->slabs_cap, p->nslabs + 1, sizeof(*v), 16);
            if (v == NULL)
                return 0;
            p->slabs = v;
            char *slab = malloc(POOL_SLAB_BYTES);
            if (slab == NULL)
                return 0;
            /* reference 0 means "none": slab 0 skips its first unit */
            uint32_t first = p->nslabs == 0 ? 1 : 0;
            p->bump[cls] = (uint32_t)p->nslabs << POOL_UNIT_BITS | first;
            p->left[cls] = (uint32_t)(((1u << POOL_UNIT_BITS) - first) / cls);
            p->slabs[p->nslabs++] = slab;
        }
        ref = p->bump[cls];
        p->bump[cls] += cls;
        p->left[cls]--;
    }
    p->used += (size_t)cls * POOL_UNIT;
    return ref;
}

void pool_free(pool_t *p, uint32_t ref, unsigned cls)
{
    memcpy(pool_ptr(p, ref), &p->free[cls], sizeof(uint32_t));
    p->free[cls] = ref;
    p->used -= (size_t)cls * POOL_UNIT;
}

void pool_release(pool_t *p)
{
    for (size_t i = 0; i < p->nslabs; i++)
        free(p->slabs[i]);
    free(p->slabs);
    memset(p, 0, sizeof(*p));
}

size_t pool_cost(const pool_t *p)
{
    return p->nslabs * heap_cost(POOL_SLAB_BYTES) + heap_cost(p->slabs_cap * sizeof(char *));
}

void pool_truncate(pool_t *p, size_t nslabs, size_t cap)
{
    if (p->nslabs <= nslabs)
        return;
    uint32_t limit = (uint32_t)nslabs << POOL_UNIT_BITS;
    for (unsigned c = 1; c < POOL_CLASSES; c++) {
        uint32_t prev = 0, cur = p->free[c];
        while (cur != 0) {
            uint32_t next;
            memcpy(&next, pool_ptr(p, cur), sizeof(next));
            if (cur < limit)
                prev = cur;
            else if (prev == 0)
                p->free[c] = next;
            else
                memcpy(pool_ptr(p, prev), &next, sizeof(next));
            cur = next;
        }
        if (p->bump[c] >= limit)
            p->left[c] = 0;
    }
    while (p->nslabs > nslabs)
        free(p->slabs[--p->nslabs]);
    if (p->slabs_cap > cap && cap > 0) {
        char **v = realloc(p->slabs, cap * sizeof(*v));
        if (v != NULL) {
            p->slabs = v;
            p->slabs_cap = cap;
        }
    } else if (cap == 0) {
        free(p->slabs);
        p->slabs = NULL;
        p->slabs_cap = 0;
    }
}
