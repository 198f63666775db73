/*
 * pool: the slabs diff's index entries live in (see below). Knows an
 * entry only by its size: its header (ENTRY_HEADER) and the longest id set
 * the size classes.
 */
#ifndef SB_DIFF_POOL_H
#define SB_DIFF_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "diff.h"

/*
 * Entries live in slabs of POOL_SLAB_BYTES carved into chunks of one size
 * class (multiples of POOL_UNIT), with a free list per class; a chunk is
 * named by a 32-bit reference (slab << POOL_UNIT_BITS | unit in the slab).
 * Why this and not one malloc per entry: glibc's 8-byte chunk header and
 * 16-byte granularity made a 36-char id's entry a 64-byte chunk, and the
 * table held 8-byte pointers; here it is a 56-byte chunk and a 4-byte
 * reference. Why size classes with free lists and not fixed headers and an
 * id arena: a provider's ids have one or a few lengths, so the sessions a
 * churn cycle forgets free exactly the chunks its new sessions take, and
 * the steady state neither grows nor needs compacting; the arena would
 * collect garbage at the churn rate and need copying (twice its size at
 * the moment of the copy) to get it back. The pool is compacted only after
 * mass removals (index_compact), with the table's shrink.
 */
#define POOL_UNIT 8
#define POOL_UNIT_BITS 11
/* 16 KiB: 2^11 units. Small enough that a small index is not held up by
 * mostly empty slabs, large enough that the slab array is ~0.05% of them;
 * 2^21 slabs (32 GiB) are addressable. */
#define POOL_SLAB_BYTES ((size_t)POOL_UNIT << POOL_UNIT_BITS)
#define POOL_MAX_SLABS ((size_t)1 << (32 - POOL_UNIT_BITS))
/* Compact after removals when chunks in use fill under 1/4 of the slabs. */
#define POOL_COMPACT_DEN 4

/* An entry's header before its id (entry_t, checked there). */
#define ENTRY_HEADER 16
/* Size classes: an entry with the longest id and its NUL is the last. */
#define POOL_CLASSES ((ENTRY_HEADER + DIFF_ID_MAX + 1 + POOL_UNIT - 1) / POOL_UNIT + 1)

typedef struct pool {
    char **slabs;
    size_t nslabs, slabs_cap;
    size_t used; /* bytes of the chunks handed out */
    /* per class: the first free chunk (0: none; a free chunk holds the
     * next one in its first 4 bytes), the next never-used chunk of the
     * class's newest slab and how many follow it there */
    uint32_t free[POOL_CLASSES];
    uint32_t bump[POOL_CLASSES];
    uint32_t left[POOL_CLASSES];
} pool_t;

static inline char *pool_ptr(const pool_t *p, uint32_t ref)
{
    return p->slabs[ref >> POOL_UNIT_BITS] +
           (size_t)(ref & ((1u << POOL_UNIT_BITS) - 1)) * POOL_UNIT;
}

/* Class of an entry with an id of idlen bytes: its size in units. */
static inline unsigned pool_class(size_t idlen)
{
    return (unsigned)((ENTRY_HEADER + idlen + 1 + POOL_UNIT - 1) / POOL_UNIT);
}

/* A chunk of class cls, or 0 on ENOMEM. */
uint32_t pool_alloc(pool_t *p, unsigned cls);
/* Gives chunk ref of class cls back to its class's free list. */
void pool_free(pool_t *p, uint32_t ref, unsigned cls);
/* Frees every slab and empties p. */
void pool_release(pool_t *p);
/* What the pool takes from malloc, as diff_index_memory() counts it. */
size_t pool_cost(const pool_t *p);
/*
 * Gives back the slabs made after the first nslabs (an abandoned cycle's:
 * every chunk in them is free by then, entries are made in a cycle only for
 * its new sessions) and the slab array's size at cap: the free lists drop
 * their chunks there, and a class whose newest slab goes stops bumping
 * (its previous slab was used up, or it would not have made one).
 */
void pool_truncate(pool_t *p, size_t nslabs, size_t cap);

#endif /* SB_DIFF_POOL_H */
