/*
 * htab: diff's open-addressing tables of 32-bit references, tagged with
 * 32 bits of the XXH3 hash of their keys: the index's sessions, its
 * interned statuses, a cycle's new sessions and the status maps each live
 * in one. The lookups are inline because their equality callback is a
 * constant at every call site, which the compiler then inlines too: a
 * lookup per record is the diff's hot path.
 */
#ifndef SB_DIFF_HTAB_H
#define SB_DIFF_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

/*
 * Hash of a key's bytes, computed once per lookup: XXH3-64 (the
 * fingerprint's hash, so no second hash function to keep). A table keeps 32
 * of its bits per slot as a tag, which both places the key (its home slot,
 * see htab_home) and filters candidates: the key's bytes are compared only
 * when the tag matches, which for a different key happens with probability
 * 2^-32 per slot visited.
 */
static inline uint32_t key_tag(const char *s, size_t n)
{
    return (uint32_t)XXH3_64bits(s, n);
}

/*
 * A slot is 8 bytes: the reference of its member (0: empty) and the tag of
 * the member's key. The table owns no member: whoever fills it says what a
 * reference means (an entry of the index's pool, a status, a map entry)
 * and compares keys through htab_eq_fn. Because a member's home slot is a
 * function of its tag alone, growing, shrinking and deleting never touch
 * the members or hash a key again.
 */
typedef struct hslot {
    uint32_t ref;
    uint32_t tag;
} hslot_t;

typedef struct htab {
    hslot_t *slots;
    size_t cap; /* 0 or >= TAB_MIN_CAP; any value, not only powers of two */
    size_t count;
} htab_t;

/* True when member ref has the key s (n bytes); called on a tag match only. */
typedef bool (*htab_eq_fn)(const void *ctx, uint32_t ref, const char *s, size_t n);

/* Home slot of a tag: Lemire's multiply-shift range reduction, which spreads
 * the tag over any capacity, so that tables may grow by 3/2 (a table at 1M
 * sessions then averages ~5/8 load instead of ~1/2 with doublings). */
static inline size_t htab_home(uint32_t tag, size_t cap)
{
    return (size_t)(((uint64_t)tag * (uint64_t)cap) >> 32);
}

/* Slot holding key (n bytes, tag), or SIZE_MAX. */
static inline size_t htab_find(const htab_t *t, uint32_t tag, const char *key, size_t n,
                               htab_eq_fn eq, const void *ctx)
{
    if (t->cap == 0)
        return SIZE_MAX;
    for (size_t i = htab_home(tag, t->cap);;) {
        const hslot_t *s = &t->slots[i];
        if (s->ref == 0)
            return SIZE_MAX;
        if (s->tag == tag && eq(ctx, s->ref, key, n))
            return i;
        if (++i == t->cap)
            i = 0;
    }
}

/* Reference of the member with key, or 0. */
static inline uint32_t htab_get(const htab_t *t, uint32_t tag, const char *key, size_t n,
                                htab_eq_fn eq, const void *ctx)
{
    size_t i = htab_find(t, tag, key, n, eq, ctx);
    return i == SIZE_MAX ? 0 : t->slots[i].ref;
}

/* Slot of member ref (its tag given), or SIZE_MAX: references are unique,
 * so they stand for the key. */
size_t htab_find_ref(const htab_t *t, uint32_t tag, uint32_t ref);
/* Rebuilds t with cap slots (enough for its members). 0, or -1 on ENOMEM
 * with t unchanged. */
int htab_resize(htab_t *t, size_t cap);
/* Makes room for `count` members in total, so that inserts up to it cannot
 * fail. 0 or -1. */
int htab_reserve(htab_t *t, size_t count);
/* Adds member ref with its key's tag: the key must be absent and room
 * reserved. */
void htab_insert(htab_t *t, uint32_t ref, uint32_t tag);
/* Empties slot, moving later members of its probe run up. */
void htab_remove_at(htab_t *t, size_t slot);
/* Gives memory back after mass removals; keeps the table when that fails. */
void htab_maybe_shrink(htab_t *t);
/* Frees the slots and empties t (the members are not the table's). */
void htab_release(htab_t *t);

#endif /* SB_DIFF_HTAB_H */
