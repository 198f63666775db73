/*
 * index: what diff_index_t is made of, for diff's own files (the cycle
 * reads and changes entries in place): the entries in the slab pool, the
 * table of them by id, and the interned raw statuses.
 */
#ifndef SB_DIFF_INDEX_H
#define SB_DIFF_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "diff.h"
#include "htab.h"
#include "internal.h"
#include "pool.h"

/* Stamp of an entry never observed (every cycle starts above it). */
#define STAMP_NEVER 0

/* Stored status index 0 is the empty status ("no status"), interned at
 * creation and not counted against DIFF_MAX_STATUSES. */
#define STATUS_NONE_IDX 0

/*
 * 16 bytes before the id and its NUL, in a pool chunk: a 36-char id takes
 * 56 bytes. The id's length is kept so that a lookup compares bytes only
 * (no strlen, no strcmp); the small fields are packed to make room for it.
 */
typedef struct entry {
    uint64_t fingerprint;
    uint32_t seen; /* stamp of the first observation in the latest cycle */
    uint32_t status_idx : 11;
    uint32_t state : 3;
    uint32_t misses : 7;
    uint32_t idlen_m1 : 8; /* id length - 1 (ids are 1..DIFF_ID_MAX bytes) */
    char id[];             /* NUL-terminated: events and changes hand it out as a string */
} entry_t;

_Static_assert(offsetof(entry_t, id) == ENTRY_HEADER, "ENTRY_HEADER is entry_t's header");
_Static_assert(DIFF_MAX_STATUSES < (1 << 11), "status_idx holds every status index");
_Static_assert(STATE_LAST < (1 << 3), "state holds every state");
_Static_assert(DIFF_MAX_GRACE < (1 << 7), "misses holds vanish_grace - 1");
_Static_assert(DIFF_ID_MAX <= (1 << 8), "idlen_m1 holds every id length");

static inline size_t entry_idlen(const entry_t *e)
{
    return (size_t)e->idlen_m1 + 1;
}

typedef struct status {
    uint16_t idx;
    bool reported; /* already returned as a new unknown status */
    uint8_t len;
    char raw[];
} status_t;

struct diff_index {
    htab_t tab;          /* pool references by id */
    pool_t pool;         /* the entries (and an open cycle's new ones) */
    size_t cycle_bytes;  /* pool bytes of the open cycle's new entries */
    htab_t stab;         /* status index + 1 by raw */
    status_t **statuses; /* by status_idx */
    size_t nstatuses;
    size_t statuses_cap;
    size_t status_bytes; /* heap_cost() of every status_t */
    size_t by_state[DIFF_STATE_COUNT];
    uint32_t next_stamp;
    bool cycle_open;
};

static inline entry_t *entry_at(const diff_index_t *ix, uint32_t ref)
{
    return (entry_t *)(void *)pool_ptr(&ix->pool, ref);
}

static inline bool entry_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    const entry_t *e = entry_at(ctx, ref);
    return entry_idlen(e) == n && memcmp(e->id, s, n) == 0;
}

static inline bool status_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    const status_t *st = ((const diff_index_t *)ctx)->statuses[ref - 1];
    return st->len == n && memcmp(st->raw, s, n) == 0;
}

static inline const char *status_raw(const diff_index_t *ix, uint16_t idx)
{
    return ix->statuses[idx]->raw;
}

/* Interns the len bytes of raw, returns its index or -1 (ENOMEM or
 * DIFF_MAX_STATUSES reached). */
int index_intern_status(diff_index_t *ix, const char *raw, size_t len);
/* Drops the statuses interned after the first `keep` (the ones an abandoned
 * cycle added: no entry refers to them, entries change only in apply), and
 * gives the tables back the sizes they had with `keep`. */
void index_statuses_truncate(diff_index_t *ix, size_t keep, size_t cap, size_t stab_cap);
/* A new entry for the id (idlen bytes, 1..DIFF_ID_MAX), never seen; its
 * reference or 0 on ENOMEM. */
uint32_t entry_new(diff_index_t *ix, const char *id, size_t idlen);
/* Gives entry ref's chunk back to the pool. */
void entry_free(diff_index_t *ix, uint32_t ref);
/* Pool bytes of entry ref. */
size_t entry_cost(const diff_index_t *ix, uint32_t ref);
/* What entry e stores, its status pointing into the index. */
void entry_record(const diff_index_t *ix, const entry_t *e, diff_record_t *out);
/*
 * After mass removals: copies the entries into a pool of their own size
 * and frees the old one, when the entries fill under 1/POOL_COMPACT_DEN of
 * it. Called between cycles only (entries move; the `seen` stamps they
 * lose mean nothing then). Keeps the old pool when memory runs out.
 */
void index_compact(diff_index_t *ix);

#endif /* SB_DIFF_INDEX_H */
