/*
 * diff: snapshot and lifecycle logic. See diff.h for the contract.
 *
 * Layout, chosen for 100k sessions per source:
 * - the index is an open-addressing table (linear probing, backward-shift
 *   deletion, no tombstones) of 8-byte slots: a 32-bit reference to the
 *   session's entry and 32 bits of the XXH3-64 hash of its id, compared
 *   before the id's bytes. Entries (a 16-byte header, the id and its NUL)
 *   are chunks of slabs in 8-byte size classes with free lists (pool_t),
 *   not one malloc each. A lookup hashes the id once, with its length as
 *   the page scanner found it;
 * - raw statuses are interned per index, so an entry stores a 16-bit index
 *   instead of a string;
 * - "seen in this cycle" is a stamp written into the entry: every cycle
 *   reserves a range of a per-index counter at its begin, and an
 *   observation takes the next value. The stamp doubles as the first
 *   observation order, or names the session's note in the cycle, and an
 *   abandoned cycle's stamps are simply older than the next cycle's, so no
 *   cleanup is needed;
 * - a cycle notes only sessions that change (new, different fields, misses
 *   to reset, vanishing), in one array of 40-byte notes, so a poll that
 *   changes nothing allocates nothing per session; a new session's entry is
 *   built once, at its first sighting, and moved into the index by apply;
 * - the records events carry wait as zstd-compressed text (rstore_t), and
 *   events are 8-byte references to notes: a first cycle that emits for
 *   every session holds ~130 bytes per session beside the index, not a
 *   parsed copy of each record.
 */
#include "diff.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>
#include <xxhash.h>
#include <zstd.h>

/* ---- small helpers ---- */

/* Smallest table; tables never shrink below it. */
#define TAB_MIN_CAP 16
/* Tables grow before more than 3/4 of their slots are used: linear probing
 * degrades quickly above that. They grow by 3/2, so that their load stays
 * between 1/2 and 3/4: 8-byte slots cost 11..16 bytes per session. */
#define TAB_LOAD_NUM 3
#define TAB_LOAD_DEN 4
#define TAB_GROW_NUM 3
#define TAB_GROW_DEN 2
/* After removals a table shrinks when fewer than 1/8 of its slots are used. */
#define TAB_SHRINK_DEN 8

/*
 * What glibc's malloc really takes for a request: an 8-byte chunk header,
 * 16-byte granularity and a 32-byte minimum chunk; requests above the mmap
 * threshold are whole pages. diff_index_memory() counts with this so that
 * the figure is what the process pays, not what was asked for.
 */
#define MALLOC_HEADER 8
#define MALLOC_ALIGN 16
#define MALLOC_MIN_CHUNK 32
#define MALLOC_MMAP_THRESHOLD (128 * 1024)
#define MALLOC_PAGE 4096

/* Stamp of an entry never observed (every cycle starts above it). */
#define STAMP_NEVER 0

/* Stack buffer for the event id input; longer inputs are hashed from the heap. */
#define EVENT_ID_STACK_BUF 512

/* Stored status index 0 is the empty status ("no status"), interned at
 * creation and not counted against DIFF_MAX_STATUSES. */
#define STATUS_NONE_IDX 0

/* Observed state of an unknown raw status: below every canonical state. */
#define OBS_UNKNOWN 0xff

static size_t heap_cost(size_t n)
{
    if (n == 0)
        return 0;
    if (n >= MALLOC_MMAP_THRESHOLD)
        return (n + MALLOC_HEADER + MALLOC_PAGE - 1) / MALLOC_PAGE * MALLOC_PAGE;
    size_t c = (n + MALLOC_HEADER + MALLOC_ALIGN - 1) & ~(size_t)(MALLOC_ALIGN - 1);
    return c < MALLOC_MIN_CHUNK ? MALLOC_MIN_CHUNK : c;
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- UTF-8 ---- */

size_t diff_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* U+D800..U+DFFF are surrogates, not characters */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* a continuation byte, 0xc0/0xc1 (overlong) or 0xf5.. */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    return len;
}

/* High bit of every byte of a word: a word without any is ASCII. */
#define UTF8_HIGH_BITS UINT64_C(0x8080808080808080)

int diff_utf8_check(const char *s, size_t n, size_t *bad)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        /* records and events are mostly ASCII: eight bytes at a time */
        uint64_t w;
        if (n - i >= sizeof(w)) {
            memcpy(&w, u + i, sizeof(w));
            if ((w & UTF8_HIGH_BITS) == 0) {
                i += sizeof(w);
                continue;
            }
        }
        size_t len = diff_utf8_seq(u + i, n - i);
        if (len == 0) {
            if (bad != NULL)
                *bad = i;
            return -1;
        }
        i += len;
    }
    return 0;
}

/*
 * Hash of a key's bytes, computed once per lookup: XXH3-64 (the
 * fingerprint's hash, so no second hash function to keep). A table keeps 32
 * of its bits per slot as a tag, which both places the key (its home slot,
 * see htab_home) and filters candidates: the key's bytes are compared only
 * when the tag matches, which for a different key happens with probability
 * 2^-32 per slot visited.
 */
static uint32_t key_tag(const char *s, size_t n)
{
    return (uint32_t)XXH3_64bits(s, n);
}

/* ---- open-addressing tables of 32-bit references ---- */

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
static size_t htab_home(uint32_t tag, size_t cap)
{
    return (size_t)(((uint64_t)tag * (uint64_t)cap) >> 32);
}

/* Slot holding key (n bytes, tag), or SIZE_MAX. */
static size_t htab_find(const htab_t *t, uint32_t tag, const char *key, size_t n, htab_eq_fn eq,
                        const void *ctx)
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
static uint32_t htab_get(const htab_t *t, uint32_t tag, const char *key, size_t n, htab_eq_fn eq,
                         const void *ctx)
{
    size_t i = htab_find(t, tag, key, n, eq, ctx);
    return i == SIZE_MAX ? 0 : t->slots[i].ref;
}

static bool ref_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    (void)s;
    (void)n;
    return ref == *(const uint32_t *)ctx;
}

/* Slot of member ref (its tag given), or SIZE_MAX: references are unique,
 * so they stand for the key. */
static size_t htab_find_ref(const htab_t *t, uint32_t tag, uint32_t ref)
{
    return htab_find(t, tag, NULL, 0, ref_eq, &ref);
}

static void htab_place(hslot_t *slots, size_t cap, hslot_t m)
{
    size_t i = htab_home(m.tag, cap);
    while (slots[i].ref != 0) {
        if (++i == cap)
            i = 0;
    }
    slots[i] = m;
}

static int htab_resize(htab_t *t, size_t cap)
{
    hslot_t *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].ref != 0)
            htab_place(slots, cap, t->slots[i]);
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* Smallest capacity that holds count members under the load bound. */
static size_t htab_cap_for(size_t count)
{
    if (count > SIZE_MAX / TAB_LOAD_DEN)
        return 0;
    size_t cap = (count * TAB_LOAD_DEN + TAB_LOAD_NUM - 1) / TAB_LOAD_NUM;
    return cap < TAB_MIN_CAP ? TAB_MIN_CAP : cap;
}

/* Makes room for `count` members in total, so that inserts up to it cannot
 * fail. Grows by at least TAB_GROW_NUM/TAB_GROW_DEN, so that n inserts cost
 * O(n) moves. 0 or -1. */
static int htab_reserve(htab_t *t, size_t count)
{
    size_t need = htab_cap_for(count);
    /* a slot count beyond 2^32 would outgrow htab_home's range */
    if (need == 0 || need > UINT32_MAX || count >= UINT32_MAX)
        return -1;
    if (need <= t->cap)
        return 0;
    size_t grown = t->cap / TAB_GROW_DEN * TAB_GROW_NUM;
    return htab_resize(t, grown > need && grown <= UINT32_MAX ? grown : need);
}

/* The key must be absent and room reserved. */
static void htab_insert(htab_t *t, uint32_t ref, uint32_t tag)
{
    htab_place(t->slots, t->cap, (hslot_t){.ref = ref, .tag = tag});
    t->count++;
}

/* Backward-shift deletion: later members of the probe run move up so that
 * lookups never need tombstones. */
static void htab_remove_at(htab_t *t, size_t slot)
{
    size_t i = slot, j = slot;
    t->slots[i].ref = 0;
    for (;;) {
        if (++j == t->cap)
            j = 0;
        hslot_t m = t->slots[j];
        if (m.ref == 0)
            break;
        size_t k = htab_home(m.tag, t->cap);
        /* m may stay if its home k lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        t->slots[i] = m;
        t->slots[j].ref = 0;
        i = j;
    }
    t->count--;
}

/* Gives memory back after mass removals; keeps the table when that fails. */
static void htab_maybe_shrink(htab_t *t)
{
    if (t->cap <= TAB_MIN_CAP || t->count * TAB_SHRINK_DEN >= t->cap)
        return;
    size_t cap = htab_cap_for(t->count);
    if (cap != 0 && cap < t->cap)
        (void)htab_resize(t, cap);
}

static void htab_release(htab_t *t)
{
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* ---- the pool of index entries ---- */

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
 * mass removals (pool_compact), with the table's shrink.
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

static char *pool_ptr(const pool_t *p, uint32_t ref)
{
    return p->slabs[ref >> POOL_UNIT_BITS] +
           (size_t)(ref & ((1u << POOL_UNIT_BITS) - 1)) * POOL_UNIT;
}

/* Class of an entry with an id of idlen bytes: its size in units. */
static unsigned pool_class(size_t idlen)
{
    return (unsigned)((ENTRY_HEADER + idlen + 1 + POOL_UNIT - 1) / POOL_UNIT);
}

/* A chunk of class cls, or 0 on ENOMEM. */
static uint32_t pool_alloc(pool_t *p, unsigned cls)
{
    uint32_t ref = p->free[cls];
    if (ref != 0) {
        memcpy(&p->free[cls], pool_ptr(p, ref), sizeof(uint32_t));
    } else {
        if (p->left[cls] == 0) {
            if (p->nslabs == POOL_MAX_SLABS)
                return 0;
            if (p->nslabs == p->slabs_cap) {
                size_t cap = p->slabs_cap == 0 ? 16 : p->slabs_cap * 2;
                char **v = realloc(p->slabs, cap * sizeof(*v));
                if (v == NULL)
                    return 0;
                p->slabs = v;
                p->slabs_cap = cap;
            }
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

static void pool_free(pool_t *p, uint32_t ref, unsigned cls)
{
    memcpy(pool_ptr(p, ref), &p->free[cls], sizeof(uint32_t));
    p->free[cls] = ref;
    p->used -= (size_t)cls * POOL_UNIT;
}

static void pool_release(pool_t *p)
{
    for (size_t i = 0; i < p->nslabs; i++)
        free(p->slabs[i]);
    free(p->slabs);
    memset(p, 0, sizeof(*p));
}

/* What the pool takes from malloc, as diff_index_memory() counts it. */
static size_t pool_cost(const pool_t *p)
{
    return p->nslabs * heap_cost(POOL_SLAB_BYTES) + heap_cost(p->slabs_cap * sizeof(char *));
}

/*
 * Gives back the slabs made after the first nslabs (an abandoned cycle's:
 * every chunk in them is free by then, entries are made in a cycle only for
 * its new sessions) and the slab array's size at cap: the free lists drop
 * their chunks there, and a class whose newest slab goes stops bumping
 * (its previous slab was used up, or it would not have made one).
 */
static void pool_truncate(pool_t *p, size_t nslabs, size_t cap)
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

/* ---- names ---- */

static const char *const state_names[] = {
    [DIFF_STATE_NONE] = NULL,
    [DIFF_STATE_PENDING] = "pending",
    [DIFF_STATE_ACTIVE] = "active",
    [DIFF_STATE_COMPLETED] = "completed",
    [DIFF_STATE_CANCELLED] = "cancelled",
};
#define STATE_LAST DIFF_STATE_CANCELLED

static const char *const event_names[DIFF_EV_COUNT] = {
    [DIFF_EV_STARTED] = "session.started",
    [DIFF_EV_COMPLETED] = "session.completed",
    [DIFF_EV_CANCELLED] = "session.cancelled",
};

static const char *const event_short[DIFF_EV_COUNT] = {
    [DIFF_EV_STARTED] = "started",
    [DIFF_EV_COMPLETED] = "completed",
    [DIFF_EV_CANCELLED] = "cancelled",
};

static const char *const reason_names[] = {
    [DIFF_REASON_STATUS_CHANGE] = "status_change",
    [DIFF_REASON_FIRST_SEEN] = "first_seen",
    [DIFF_REASON_VANISHED] = "vanished",
};

const char *diff_state_name(diff_state_t state)
{
    if ((unsigned)state > STATE_LAST)
        return NULL;
    return state_names[state];
}

int diff_state_parse(const char *name, diff_state_t *out)
{
    if (name == NULL)
        return -1;
    for (unsigned s = DIFF_STATE_PENDING; s <= STATE_LAST; s++) {
        if (strcmp(name, state_names[s]) == 0) {
            if (out != NULL)
                *out = (diff_state_t)s;
            return 0;
        }
    }
    return -1;
}

const char *diff_event_type_name(diff_event_type_t type)
{
    return (unsigned)type < DIFF_EV_COUNT ? event_names[type] : NULL;
}

const char *diff_event_type_short(diff_event_type_t type)
{
    return (unsigned)type < DIFF_EV_COUNT ? event_short[type] : NULL;
}

const char *diff_reason_name(diff_reason_t reason)
{
    return (unsigned)reason <= DIFF_REASON_VANISHED ? reason_names[reason] : NULL;
}

/* ---- event id ---- */

static int event_id(const char *source, const char *session_id, diff_event_type_t type,
                    char out[DIFF_EVENT_ID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    const char *tname = diff_event_type_name(type);
    if (source == NULL || session_id == NULL || tname == NULL)
        return -1;
    size_t ls = strlen(source), li = strlen(session_id), lt = strlen(tname);
    size_t n = ls + 1 + li + 1 + lt;
    char stackbuf[EVENT_ID_STACK_BUF];
    char *buf = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
    if (buf == NULL)
        return -1;
    memcpy(buf, source, ls);
    buf[ls] = '\n';
    memcpy(buf + ls + 1, session_id, li);
    buf[ls + 1 + li] = '\n';
    memcpy(buf + ls + 2 + li, tname, lt);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)buf, n, md);
    if (buf != stackbuf)
        free(buf);
    for (size_t i = 0; i < (DIFF_EVENT_ID_LEN - 1) / 2; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[DIFF_EVENT_ID_LEN - 1] = '\0';
    return 0;
}

/* On failure (only ENOMEM for an absurdly long source) the id is empty, which
 * no consumer can mistake for a real one. */
void diff_event_id(const char *source, const char *session_id, diff_event_type_t type,
                   char out[DIFF_EVENT_ID_LEN])
{
    if (event_id(source, session_id, type, out) != 0)
        out[0] = '\0';
}

/* ---- status maps ---- */

typedef struct map_entry {
    uint8_t state;
    uint8_t len;
    char raw[];
} map_entry_t;

/* Mappings in an array, found through a table of references (index + 1). */
struct diff_status_map {
    htab_t tab;
    map_entry_t **v;
    size_t n, cap;
};

static bool map_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    const map_entry_t *me = ((const diff_status_map_t *)ctx)->v[ref - 1];
    return me->len == n && memcmp(me->raw, s, n) == 0;
}

diff_status_map_t *diff_status_map_new(void)
{
    return calloc(1, sizeof(diff_status_map_t));
}

void diff_status_map_free(diff_status_map_t *map)
{
    if (map == NULL)
        return;
    for (size_t i = 0; i < map->n; i++)
        free(map->v[i]);
    free(map->v);
    htab_release(&map->tab);
    free(map);
}

/* Length of s if it is 1..max bytes long, else 0. */
static size_t bounded_len(const char *s, size_t max)
{
    if (s == NULL)
        return 0;
    size_t n = strnlen(s, max + 1);
    return n > max ? 0 : n;
}

int diff_status_map_set(diff_status_map_t *map, const char *raw, diff_state_t state)
{
    if (map == NULL || state <= DIFF_STATE_NONE || state > STATE_LAST)
        return -1;
    size_t n = bounded_len(raw, DIFF_STATUS_MAX);
    if (n == 0)
        return -1;
    uint32_t tag = key_tag(raw, n);
    uint32_t ref = htab_get(&map->tab, tag, raw, n, map_eq, map);
    if (ref != 0) {
        map->v[ref - 1]->state = (uint8_t)state;
        return 0;
    }
    if (htab_reserve(&map->tab, map->tab.count + 1) != 0)
        return -1;
    if (map->n == map->cap) {
        size_t cap = map->cap == 0 ? 16 : map->cap * 2;
        map_entry_t **v = realloc(map->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        map->v = v;
        map->cap = cap;
    }
    map_entry_t *me = malloc(sizeof(*me) + n + 1);
    if (me == NULL)
        return -1;
    me->state = (uint8_t)state;
    me->len = (uint8_t)n;
    memcpy(me->raw, raw, n + 1);
    map->v[map->n++] = me;
    htab_insert(&map->tab, (uint32_t)map->n, tag);
    return 0;
}

/* Looks up the n bytes of raw (not NUL-terminated). */
static int status_map_find(const diff_status_map_t *map, const char *raw, size_t n,
                           diff_state_t *out)
{
    uint32_t ref = htab_get(&map->tab, key_tag(raw, n), raw, n, map_eq, map);
    if (ref == 0)
        return -1;
    if (out != NULL)
        *out = (diff_state_t)map->v[ref - 1]->state;
    return 0;
}

int diff_status_map_lookup(const diff_status_map_t *map, const char *raw, diff_state_t *out)
{
    if (map == NULL || raw == NULL)
        return -1;
    return status_map_find(map, raw, strlen(raw), out);
}

/* ---- stored records ---- */

int diff_record_encode(const diff_record_t *rec, char *buf, size_t buflen)
{
    if (rec == NULL || buf == NULL || (unsigned)rec->state > STATE_LAST)
        return -1;
    const char *status = rec->status != NULL ? rec->status : "";
    if (strnlen(status, DIFF_STATUS_MAX + 1) > DIFF_STATUS_MAX)
        return -1;
    int n = snprintf(buf, buflen, "%u:%u:%016llx:%s", (unsigned)rec->state, (unsigned)rec->misses,
                     (unsigned long long)rec->fingerprint, status);
    if (n < 0 || (size_t)n >= buflen)
        return -1;
    return n;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Digits of DIFF_MAX_GRACE: a longer misses field is malformed, not large. */
#define MISSES_MAX_DIGITS 3
#define FP_HEX_DIGITS 16

int diff_record_decode(const char *text, size_t len, diff_record_t *rec, char *status_buf,
                       size_t status_buflen)
{
    if (text == NULL || rec == NULL || status_buf == NULL)
        return -1;
    const char *p = text, *end = text + len;

    if (end - p < 2 || p[0] < '0' || p[0] > '0' + STATE_LAST || p[1] != ':')
        return -1;
    diff_state_t state = (diff_state_t)(p[0] - '0');
    p += 2;

    unsigned misses = 0;
    size_t digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++digits > MISSES_MAX_DIGITS)
            return -1;
        misses = misses * 10 + (unsigned)(*p - '0');
        p++;
    }
    if (digits == 0 || misses > DIFF_MAX_GRACE || p >= end || *p != ':')
        return -1;
    p++;

    if (end - p < FP_HEX_DIGITS + 1 || p[FP_HEX_DIGITS] != ':')
        return -1;
    uint64_t fp = 0;
    for (int i = 0; i < FP_HEX_DIGITS; i++) {
        int v = hex_value(p[i]);
        if (v < 0)
            return -1;
        fp = fp << 4 | (uint64_t)v;
    }
    p += FP_HEX_DIGITS + 1;

    /* The status is the tail: it may itself contain ':'. */
    size_t slen = (size_t)(end - p);
    if (slen > DIFF_STATUS_MAX || slen + 1 > status_buflen || memchr(p, '\0', slen) != NULL)
        return -1;
    memcpy(status_buf, p, slen);
    status_buf[slen] = '\0';

    rec->state = state;
    rec->misses = (uint8_t)misses;
    rec->fingerprint = fp;
    rec->status = status_buf;
    return 0;
}

/* ---- fingerprint ---- */

/*
 * XXH3-64 over the record's bytes as received: ~20x faster than the walk
 * of the parsed tree it replaces (39 ns against 790 ns for a 524-byte
 * Century record), and it needs no tree. A record whose provider only
 * reformats it (spaces, key order) now counts as changed: that rewrites its
 * stored field and publishes nothing.
 */
uint64_t diff_fingerprint(const char *text, size_t len)
{
    return XXH3_64bits(text != NULL ? text : "", text != NULL ? len : 0);
}

/* ---- the index ---- */

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

static size_t entry_idlen(const entry_t *e)
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

static entry_t *entry_at(const diff_index_t *ix, uint32_t ref)
{
    return (entry_t *)(void *)pool_ptr(&ix->pool, ref);
}

static bool entry_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    const entry_t *e = entry_at(ctx, ref);
    return entry_idlen(e) == n && memcmp(e->id, s, n) == 0;
}

static bool status_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    const status_t *st = ((const diff_index_t *)ctx)->statuses[ref - 1];
    return st->len == n && memcmp(st->raw, s, n) == 0;
}

/* Interns the len bytes of raw, returns its index or -1 (ENOMEM or
 * DIFF_MAX_STATUSES reached). */
static int intern_status(diff_index_t *ix, const char *raw, size_t len)
{
    uint32_t tag = key_tag(raw, len);
    uint32_t ref = htab_get(&ix->stab, tag, raw, len, status_eq, ix);
    if (ref != 0)
        return (int)ref - 1;
    /* index 0 is the empty status and does not count */
    if (ix->nstatuses > DIFF_MAX_STATUSES)
        return -1;
    if (ix->nstatuses == ix->statuses_cap) {
        size_t cap = ix->statuses_cap == 0 ? 8 : ix->statuses_cap * 2;
        if (cap > DIFF_MAX_STATUSES + 1)
            cap = DIFF_MAX_STATUSES + 1;
        status_t **v = realloc(ix->statuses, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        ix->statuses = v;
        ix->statuses_cap = cap;
    }
    if (htab_reserve(&ix->stab, ix->stab.count + 1) != 0)
        return -1;
    status_t *ns = malloc(sizeof(*ns) + len + 1);
    if (ns == NULL)
        return -1;
    ns->idx = (uint16_t)ix->nstatuses;
    ns->reported = false;
    ns->len = (uint8_t)len;
    memcpy(ns->raw, raw, len);
    ns->raw[len] = '\0';
    htab_insert(&ix->stab, (uint32_t)ns->idx + 1, tag);
    ix->statuses[ix->nstatuses++] = ns;
    ix->status_bytes += heap_cost(sizeof(*ns) + len + 1);
    return ns->idx;
}

static const char *status_raw(const diff_index_t *ix, uint16_t idx)
{
    return ix->statuses[idx]->raw;
}

/* Drops the statuses interned after the first `keep` (the ones an abandoned
 * cycle added: no entry refers to them, entries change only in apply), and
 * gives the tables back the sizes they had with `keep`. */
static void statuses_truncate(diff_index_t *ix, size_t keep, size_t cap, size_t stab_cap)
{
    while (ix->nstatuses > keep) {
        status_t *st = ix->statuses[--ix->nstatuses];
        size_t slot = htab_find_ref(&ix->stab, key_tag(st->raw, st->len), (uint32_t)st->idx + 1);
        if (slot != SIZE_MAX)
            htab_remove_at(&ix->stab, slot);
        ix->status_bytes -= heap_cost(sizeof(*st) + st->len + 1);
        free(st);
    }
    /* both only shrink, and a failure keeps the larger table */
    if (ix->statuses_cap > cap && cap > 0) {
        status_t **v = realloc(ix->statuses, cap * sizeof(*v));
        if (v != NULL) {
            ix->statuses = v;
            ix->statuses_cap = cap;
        }
    }
    if (ix->stab.cap > stab_cap)
        (void)htab_resize(&ix->stab, stab_cap);
}

diff_index_t *diff_index_new(void)
{
    diff_index_t *ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return NULL;
    ix->next_stamp = STAMP_NEVER + 1;
    if (intern_status(ix, "", 0) != STATUS_NONE_IDX)
        goto err;
    return ix;
err:
    diff_index_free(ix);
    return NULL;
}

void diff_index_clear(diff_index_t *ix)
{
    if (ix == NULL)
        return;
    htab_release(&ix->tab);
    pool_release(&ix->pool);
    memset(ix->by_state, 0, sizeof(ix->by_state));
}

void diff_index_free(diff_index_t *ix)
{
    if (ix == NULL)
        return;
    diff_index_clear(ix);
    for (size_t i = 0; i < ix->nstatuses; i++)
        free(ix->statuses[i]);
    free(ix->statuses);
    htab_release(&ix->stab);
    free(ix);
}

size_t diff_index_size(const diff_index_t *ix)
{
    return ix != NULL ? ix->tab.count : 0;
}

/* Free pool chunks count here: the index holds them (for its next new
 * sessions). An open cycle's new entries are the cycle's (diff_cycle_memory). */
size_t diff_index_memory(const diff_index_t *ix)
{
    if (ix == NULL)
        return 0;
    return heap_cost(sizeof(*ix)) + heap_cost(ix->tab.cap * sizeof(hslot_t)) +
           pool_cost(&ix->pool) - ix->cycle_bytes + heap_cost(ix->stab.cap * sizeof(hslot_t)) +
           heap_cost(ix->statuses_cap * sizeof(status_t *)) + ix->status_bytes;
}

void diff_index_states(const diff_index_t *ix, size_t counts[DIFF_STATE_COUNT])
{
    for (size_t i = 0; i < DIFF_STATE_COUNT; i++)
        counts[i] = ix != NULL ? ix->by_state[i] : 0;
}

/* A new entry for the id (idlen bytes, 1..DIFF_ID_MAX), never seen; its
 * reference or 0 on ENOMEM. */
static uint32_t entry_new(diff_index_t *ix, const char *id, size_t idlen)
{
    uint32_t ref = pool_alloc(&ix->pool, pool_class(idlen));
    if (ref == 0)
        return 0;
    entry_t *e = entry_at(ix, ref);
    memset(e, 0, sizeof(*e));
    e->seen = STAMP_NEVER;
    e->idlen_m1 = (uint32_t)(idlen - 1);
    memcpy(e->id, id, idlen);
    e->id[idlen] = '\0';
    return ref;
}

static void entry_free(diff_index_t *ix, uint32_t ref)
{
    pool_free(&ix->pool, ref, pool_class(entry_idlen(entry_at(ix, ref))));
}

/* Pool bytes of entry ref. */
static size_t entry_cost(const diff_index_t *ix, uint32_t ref)
{
    return (size_t)pool_class(entry_idlen(entry_at(ix, ref))) * POOL_UNIT;
}

/*
 * After mass removals: copies the entries into a pool of their own size
 * and frees the old one, when the entries fill under 1/POOL_COMPACT_DEN of
 * it. Called between cycles only (entries move; the `seen` stamps they
 * lose mean nothing then). Keeps the old pool when memory runs out.
 */
static void pool_compact(diff_index_t *ix)
{
    pool_t *old = &ix->pool;
    if (old->nslabs <= 1 || old->used * POOL_COMPACT_DEN >= old->nslabs * POOL_SLAB_BYTES)
        return;
    pool_t np = {0};
    /* the new references wait in the old entries' `seen`, so that a
     * failure halfway leaves every slot as it was */
    size_t i;
    for (i = 0; i < ix->tab.cap; i++) {
        uint32_t ref = ix->tab.slots[i].ref;
        if (ref == 0)
            continue;
        entry_t *e = entry_at(ix, ref);
        size_t cls = pool_class(entry_idlen(e));
        uint32_t nref = pool_alloc(&np, (unsigned)cls);
        if (nref == 0)
            break;
        char *to = pool_ptr(&np, nref);
        memcpy(to, e, cls * POOL_UNIT);
        ((entry_t *)(void *)to)->seen = STAMP_NEVER;
        e->seen = nref;
    }
    if (i < ix->tab.cap) {
        for (size_t j = 0; j < i; j++) {
            if (ix->tab.slots[j].ref != 0)
                entry_at(ix, ix->tab.slots[j].ref)->seen = STAMP_NEVER;
        }
        pool_release(&np);
        return;
    }
    for (i = 0; i < ix->tab.cap; i++) {
        hslot_t *s = &ix->tab.slots[i];
        if (s->ref != 0)
            s->ref = entry_at(ix, s->ref)->seen;
    }
    pool_release(old);
    ix->pool = np;
}

int diff_index_put(diff_index_t *ix, const char *session_id, const diff_record_t *rec)
{
    /* an open cycle may drop the statuses interned after its begin, which
     * an entry put now could be using */
    if (ix == NULL || rec == NULL || (unsigned)rec->state > STATE_LAST || ix->cycle_open ||
        rec->misses > DIFF_MAX_GRACE)
        return -1;
    size_t idlen = bounded_len(session_id, DIFF_ID_MAX);
    if (idlen == 0)
        return -1;
    const char *status = rec->status != NULL ? rec->status : "";
    size_t slen = strnlen(status, DIFF_STATUS_MAX + 1);
    if (slen > DIFF_STATUS_MAX)
        return -1;
    int sidx = intern_status(ix, status, slen);
    if (sidx < 0)
        return -1;

    uint32_t tag = key_tag(session_id, idlen);
    uint32_t ref = htab_get(&ix->tab, tag, session_id, idlen, entry_eq, ix);
    entry_t *e;
    if (ref == 0) {
        if (htab_reserve(&ix->tab, ix->tab.count + 1) != 0)
            return -1;
        ref = entry_new(ix, session_id, idlen);
        if (ref == 0)
            return -1;
        htab_insert(&ix->tab, ref, tag);
        e = entry_at(ix, ref);
    } else {
        e = entry_at(ix, ref);
        ix->by_state[e->state]--;
    }
    ix->by_state[rec->state]++;
    e->state = (uint32_t)rec->state;
    e->misses = rec->misses;
    e->fingerprint = rec->fingerprint;
    e->status_idx = (uint32_t)sidx;
    return 0;
}

static void entry_record(const diff_index_t *ix, const entry_t *e, diff_record_t *out)
{
    out->state = (diff_state_t)e->state;
    out->misses = (uint8_t)e->misses;
    out->fingerprint = e->fingerprint;
    out->status = status_raw(ix, (uint16_t)e->status_idx);
}

int diff_index_get(const diff_index_t *ix, const char *session_id, diff_record_t *out)
{
    if (ix == NULL || session_id == NULL)
        return -1;
    size_t n = strlen(session_id);
    uint32_t ref = htab_get(&ix->tab, key_tag(session_id, n), session_id, n, entry_eq, ix);
    if (ref == 0)
        return -1;
    if (out != NULL)
        entry_record(ix, entry_at(ix, ref), out);
    return 0;
}

int diff_index_foreach(const diff_index_t *ix, diff_index_fn fn, void *opaque)
{
    for (size_t i = 0; ix != NULL && i < ix->tab.cap; i++) {
        uint32_t ref = ix->tab.slots[i].ref;
        diff_record_t rec;
        int rc;
        if (ref == 0)
            continue;
        const entry_t *e = entry_at(ix, ref);
        entry_record(ix, e, &rec);
        if ((rc = fn(opaque, e->id, &rec)) != 0)
            return rc;
    }
    return 0;
}

/* ---- lifecycle rules ---- */

static bool state_terminal(unsigned s)
{
    return s == DIFF_STATE_COMPLETED || s == DIFF_STATE_CANCELLED;
}

/* How advanced an observation is, for duplicates: the two terminal states
 * tie, and an unknown status is below everything. */
static unsigned obs_rank(unsigned obs)
{
    switch (obs) {
    case DIFF_STATE_PENDING:
        return 1;
    case DIFF_STATE_ACTIVE:
        return 2;
    case DIFF_STATE_COMPLETED:
    case DIFF_STATE_CANCELLED:
        return 3;
    default:
        return 0;
    }
}

/* What is stored for a session before the cycle (absent: present false). */
typedef struct stored {
    bool present;
    uint8_t state;
    uint8_t misses;
    uint16_t status_idx;
    uint64_t fingerprint;
} stored_t;

typedef struct planned_event {
    uint8_t type;
    uint8_t state;
    uint8_t previous_state;
    bool synthesized;
} planned_event_t;

/* The outcome of one observation against what is stored. */
typedef struct plan {
    uint8_t state;
    uint8_t misses;
    uint16_t status_idx;
    uint64_t fingerprint;
    unsigned nev;
    planned_event_t ev[2];
} plan_t;

static void plan_event(plan_t *p, diff_event_type_t type, unsigned state, unsigned prev, bool synth)
{
    p->ev[p->nev++] = (planned_event_t){
        .type = (uint8_t)type,
        .state = (uint8_t)state,
        .previous_state = (uint8_t)prev,
        .synthesized = synth,
    };
}

static void plan_observation(const stored_t *s, unsigned obs, uint16_t obs_status, uint64_t obs_fp,
                             bool baseline, plan_t *p)
{
    memset(p, 0, sizeof(*p));
    unsigned cur = s->present ? s->state : DIFF_STATE_NONE;
    p->misses = 0; /* seen */
    if (obs == OBS_UNKNOWN) {
        /* A sighting only. A session known in no state keeps its latest raw
         * status so that the first event can report it; a known one keeps
         * the status its state came from. */
        p->state = (uint8_t)cur;
        if (cur == DIFF_STATE_NONE) {
            p->status_idx = obs_status;
            p->fingerprint = obs_fp;
        } else {
            p->status_idx = s->status_idx;
            p->fingerprint = s->fingerprint;
        }
        return;
    }
    p->state = (uint8_t)cur;
    p->status_idx = obs_status;
    p->fingerprint = obs_fp;
    if (state_terminal(cur) || obs <= cur)
        return; /* forward only; terminal is final */
    p->state = (uint8_t)obs;
    if (baseline)
        return;
    switch (obs) {
    case DIFF_STATE_ACTIVE:
        plan_event(p, DIFF_EV_STARTED, DIFF_STATE_ACTIVE, cur, false);
        break;
    case DIFF_STATE_COMPLETED:
        /* consumers always see started before completed */
        if (cur < DIFF_STATE_ACTIVE) {
            plan_event(p, DIFF_EV_STARTED, DIFF_STATE_ACTIVE, cur, true);
            plan_event(p, DIFF_EV_COMPLETED, DIFF_STATE_COMPLETED, DIFF_STATE_ACTIVE, false);
        } else {
            plan_event(p, DIFF_EV_COMPLETED, DIFF_STATE_COMPLETED, cur, false);
        }
        break;
    case DIFF_STATE_CANCELLED:
        /* cancelled before it ever became active: no started */
        plan_event(p, DIFF_EV_CANCELLED, DIFF_STATE_CANCELLED, cur, false);
        break;
    default: /* pending has no event */
        break;
    }
}

static bool plan_changes(const stored_t *s, const plan_t *p)
{
    return !s->present || p->state != s->state || p->misses != s->misses ||
           p->status_idx != s->status_idx || p->fingerprint != s->fingerprint;
}

/* The states a session can vanish from (with an event): the store keeps
 * their sessions' last records. */
static bool state_vanishable(unsigned s)
{
    return s == DIFF_STATE_PENDING || s == DIFF_STATE_ACTIVE;
}

/* Whether the outcome p of an observation replaces the session's stored
 * last record: a session that can vanish whose record is new to the store. */
static bool plan_sets_last(const stored_t *s, const plan_t *p)
{
    return state_vanishable(p->state) &&
           (!s->present || !state_vanishable(s->state) || s->fingerprint != p->fingerprint);
}

static stored_t stored_of(const entry_t *e)
{
    stored_t s = {0};
    if (e != NULL) {
        s.present = true;
        s.state = e->state;
        s.misses = e->misses;
        s.status_idx = e->status_idx;
        s.fingerprint = e->fingerprint;
    }
    return s;
}

/* Stored raw status as an event reports it: NULL when there is none. */
static const char *previous_status_of(const diff_index_t *ix, const entry_t *e)
{
    if (e == NULL || e->status_idx == STATUS_NONE_IDX)
        return NULL;
    return status_raw(ix, e->status_idx);
}

/* ---- records retained for events ---- */

/*
 * The records an event will carry wait as text appended to blocks of
 * RSTORE_BLOCK bytes; a full block is compressed with zstd and the raw
 * buffer reused. Century-shaped records compress ~8x at level 1 in blocks
 * this large (smaller blocks lose the repetition between records), and
 * level 1 compresses at several hundred MB/s, a small fraction of a
 * record's parse. Reading a record decompresses its whole block into one
 * cache: events are read in publication order, which is the order the
 * records were appended in except for the rare duplicate, so each block is
 * decoded about once per pass.
 */
#define RSTORE_BLOCK (256 * 1024)
#define RSTORE_LEVEL 1
/* Block number of a note that retains no record. */
#define RSTORE_NONE UINT32_MAX

typedef struct rblock {
    unsigned char *z; /* compressed bytes */
    uint32_t zlen;
    uint32_t rawlen;
} rblock_t;

typedef struct rstore {
    rblock_t *blocks;
    size_t nblocks, blocks_cap;
    char *open; /* the block being filled: number nblocks */
    size_t open_len, open_cap;
    unsigned char *scratch; /* compression output, ZSTD_compressBound(open_cap) */
    size_t scratch_cap;
    char *cache; /* the block decoded last */
    size_t cache_cap;
    size_t cache_block; /* SIZE_MAX: none */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    size_t held; /* heap_cost() of the compressed blocks, plus the open block's bytes */
    size_t raw;  /* bytes appended, for the figures */
} rstore_t;

static void rstore_release(rstore_t *rs)
{
    for (size_t i = 0; i < rs->nblocks; i++)
        free(rs->blocks[i].z);
    free(rs->blocks);
    free(rs->open);
    free(rs->scratch);
    free(rs->cache);
    ZSTD_freeCCtx(rs->cctx);
    ZSTD_freeDCtx(rs->dctx);
    memset(rs, 0, sizeof(*rs));
    rs->cache_block = SIZE_MAX;
}

/* Compresses the open block into a block of its own. 0 or -1 (ENOMEM). */
static int rstore_close_block(rstore_t *rs)
{
    if (rs->open_len == 0)
        return 0;
    if (rs->nblocks == rs->blocks_cap) {
        size_t cap = rs->blocks_cap == 0 ? 16 : rs->blocks_cap * 2;
        rblock_t *v = realloc(rs->blocks, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        rs->blocks = v;
        rs->blocks_cap = cap;
    }
    size_t bound = ZSTD_compressBound(rs->open_len);
    if (bound > rs->scratch_cap) {
        unsigned char *v = realloc(rs->scratch, bound);
        if (v == NULL)
            return -1;
        rs->scratch = v;
        rs->scratch_cap = bound;
    }
    if (rs->cctx == NULL && (rs->cctx = ZSTD_createCCtx()) == NULL)
        return -1;
    size_t zlen = ZSTD_compressCCtx(rs->cctx, rs->scratch, rs->scratch_cap, rs->open, rs->open_len,
                                    RSTORE_LEVEL);
    if (ZSTD_isError(zlen))
        return -1;
    unsigned char *z = malloc(zlen);
    if (z == NULL)
        return -1;
    memcpy(z, rs->scratch, zlen);
    rs->blocks[rs->nblocks++] =
        (rblock_t){.z = z, .zlen = (uint32_t)zlen, .rawlen = (uint32_t)rs->open_len};
    rs->held = rs->held - rs->open_len + heap_cost(zlen);
    rs->open_len = 0;
    return 0;
}

/*
 * Appends len bytes of text when what the store holds stays within max
 * (the open block is compressed first when that makes room). 0, -1 on
 * ENOMEM, -2 when over max.
 */
static int rstore_append(rstore_t *rs, const char *text, size_t len, size_t max, uint32_t *block,
                         uint32_t *off)
{
    if (len > UINT32_MAX / 2)
        return -2;
    if (rs->open_len > 0 && (rs->open_len + len > rs->open_cap || rs->held + len > max)) {
        if (rstore_close_block(rs) != 0)
            return -1;
    }
    if (rs->held + len > max)
        return -2;
    if (len > rs->open_cap) {
        /* a record larger than a block is a block of its own */
        size_t cap = len > RSTORE_BLOCK ? len : RSTORE_BLOCK;
        char *v = realloc(rs->open, cap);
        if (v == NULL)
            return -1;
        rs->open = v;
        rs->open_cap = cap;
    }
    if (rs->nblocks > UINT32_MAX - 1)
        return -1;
    *block = (uint32_t)rs->nblocks;
    *off = (uint32_t)rs->open_len;
    memcpy(rs->open + rs->open_len, text, len);
    rs->open_len += len;
    rs->held += len;
    rs->raw += len;
    return 0;
}

/* The text appended at (block, off): valid until the next call. NULL on
 * ENOMEM or a block that does not decode. */
static const char *rstore_get(rstore_t *rs, uint32_t block, uint32_t off)
{
    if (block == rs->nblocks)
        return rs->open + off;
    if (block > rs->nblocks)
        return NULL;
    const rblock_t *b = &rs->blocks[block];
    if (rs->cache_block != block) {
        if (b->rawlen > rs->cache_cap) {
            char *v = realloc(rs->cache, b->rawlen);
            if (v == NULL)
                return NULL;
            rs->cache = v;
            rs->cache_cap = b->rawlen;
        }
        if (rs->dctx == NULL && (rs->dctx = ZSTD_createDCtx()) == NULL)
            return NULL;
        rs->cache_block = SIZE_MAX;
        size_t n = ZSTD_decompressDCtx(rs->dctx, rs->cache, rs->cache_cap, b->z, b->zlen);
        if (ZSTD_isError(n) || n != b->rawlen)
            return NULL;
        rs->cache_block = block;
    }
    return rs->cache + off;
}

/* ---- one cycle ---- */

/*
 * Per-cycle note of a session that changes (or might, for duplicates), in
 * one array: 40 bytes (34 used: the entry is a 4-byte pool reference),
 * no allocation of its own. A stored session seen in
 * the cycle points at its note through its `seen` field (see NOTE_REF); a
 * new session's entry is built at its first sighting, found through the
 * cycle's table of new entries, and moved into the index by apply.
 */
typedef struct note {
    uint64_t fingerprint; /* observed */
    uint32_t entry;       /* pool reference: the index's, or (NOTE_NEW) the cycle's until apply */
    uint32_t order;       /* first observation stamp; vanished: their sequence */
    uint32_t rec_block;   /* retained record, RSTORE_NONE when none */
    uint32_t rec_off;
    uint32_t rec_len;
    uint16_t status_idx;       /* observed */
    uint16_t store_status_idx; /* what finish decided to store */
    uint8_t obs;               /* observed state or OBS_UNKNOWN */
    uint8_t flags;
} note_t;

#define NOTE_NEW 0x01      /* the entry is the cycle's: a session the index lacks */
#define NOTE_VANISHED 0x02 /* a stored session the cycle did not see */
#define NOTE_CHANGED 0x04
#define NOTE_REMOVED 0x08

/*
 * An event in 8 bytes: what it reports besides its note is four small
 * numbers. The strings are the note's and the index's, the id is computed
 * when the event is read.
 */
typedef struct cevent {
    uint32_t note;
    uint8_t type;
    uint8_t reason;
    uint8_t synthesized;
    uint8_t states; /* state << 4 | previous_state */
} cevent_t;

/*
 * Stamps of one cycle: [base, base + max_observed) are observations, and
 * [note_base, note_base + max_observed) name a note (the value is note_base
 * plus its index). Either way a value >= base marks an entry seen in the
 * cycle. A cycle reserves both ranges at begin.
 */
#define STAMP_RANGES 2
/* Largest max_sessions the stamp ranges allow (kept well below 2^32). */
#define CYCLE_MAX_OBSERVED (UINT32_MAX / 8)

#define STATE_CACHE_UNSET (-2)
#define STATE_CACHE_UNKNOWN (-1)

struct diff_cycle {
    diff_index_t *ix;
    const diff_options_t *opt;
    uint32_t base;      /* stamps >= base were written by this cycle */
    uint32_t note_base; /* stamps >= note_base name a note */
    /* the index's statuses at begin (later ones are this cycle's), and the
     * sizes of their tables */
    size_t nstatuses0, statuses_cap0, stab_cap0;
    size_t max_observed;
    size_t max_retained; /* bound of records.held */
    bool finished;
    bool settled; /* finish succeeded: the changes are complete */
    bool applied;
    htab_t fresh; /* pool references of the sessions the index lacks, by id */
    /* the pool's slab count and array size at begin, to give back what an
     * abandoned cycle made */
    size_t nslabs0, slabs_cap0;
    note_t *notes;
    size_t nnotes, notes_cap;
    rstore_t records;
    size_t observed;
    size_t unknown_count;
    const char **new_unknown;
    size_t nnew_unknown;
    size_t new_unknown_cap;
    cevent_t *events;
    size_t nevents;
    size_t nvanished;  /* the last events: the vanished ones */
    bool events_read;  /* diff_cycle_event() was called: no record may be added */
    uint32_t *changed; /* the notes of the changes, in order */
    size_t nchanges;
    size_t sessions_after; /* the index's size after apply */
    /* status_idx -> state, computed once per cycle (the map is fixed for
     * its duration) */
    int8_t state_cache[DIFF_MAX_STATUSES + 1];
};

diff_cycle_t *diff_cycle_begin(diff_index_t *ix, const diff_options_t *opt)
{
    if (ix == NULL || opt == NULL || opt->source == NULL || opt->vanish_grace < 1 ||
        opt->vanish_grace > DIFF_MAX_GRACE || ix->cycle_open)
        return NULL;
    size_t max = opt->max_sessions != 0 ? opt->max_sessions : DIFF_DEFAULT_MAX_SESSIONS;
    if (max > CYCLE_MAX_OBSERVED)
        return NULL;
    diff_cycle_t *cy = calloc(1, sizeof(*cy));
    if (cy == NULL)
        return NULL;
    cy->ix = ix;
    cy->opt = opt;
    cy->nstatuses0 = ix->nstatuses;
    cy->statuses_cap0 = ix->statuses_cap;
    cy->stab_cap0 = ix->stab.cap;
    cy->nslabs0 = ix->pool.nslabs;
    cy->slabs_cap0 = ix->pool.slabs_cap;
    cy->max_observed = max;
    cy->max_retained = max * DIFF_RETAINED_BYTES_PER_SESSION;
    cy->records.cache_block = SIZE_MAX;
    for (size_t i = 0; i < sizeof(cy->state_cache); i++)
        cy->state_cache[i] = STATE_CACHE_UNSET;
    if (ix->next_stamp > UINT32_MAX - STAMP_RANGES * max - 1) {
        for (size_t i = 0; i < ix->tab.cap; i++) {
            if (ix->tab.slots[i].ref != 0)
                entry_at(ix, ix->tab.slots[i].ref)->seen = STAMP_NEVER;
        }
        ix->next_stamp = STAMP_NEVER + 1;
    }
    cy->base = ix->next_stamp;
    cy->note_base = cy->base + (uint32_t)max;
    /* an abandoned cycle's stamps stay older than the next cycle's */
    ix->next_stamp = cy->note_base + (uint32_t)max;
    ix->cycle_open = true;
    return cy;
}

static unsigned cycle_state_of(diff_cycle_t *cy, uint16_t sidx)
{
    int8_t v = cy->state_cache[sidx];
    if (v == STATE_CACHE_UNSET) {
        diff_state_t st;
        const char *raw = status_raw(cy->ix, sidx);
        v = (raw[0] != '\0' && diff_status_map_lookup(cy->opt->status_map, raw, &st) == 0)
                ? (int8_t)st
                : STATE_CACHE_UNKNOWN;
        cy->state_cache[sidx] = v;
    }
    return v == STATE_CACHE_UNKNOWN ? OBS_UNKNOWN : (unsigned)v;
}

/* The note e points at in this cycle, or NULL. */
static note_t *note_of(const diff_cycle_t *cy, const entry_t *e)
{
    if (e->seen < cy->note_base)
        return NULL;
    return &cy->notes[e->seen - cy->note_base];
}

/* The entry of note n. */
static entry_t *note_entry(const diff_cycle_t *cy, const note_t *n)
{
    return entry_at(cy->ix, n->entry);
}

/* A new note for entry ref, which the entry points at from then on; NULL
 * on ENOMEM. The pointer is valid until the next note_add. */
static note_t *note_add(diff_cycle_t *cy, uint32_t ref, uint32_t order, uint8_t flags)
{
    if (cy->nnotes == cy->notes_cap) {
        size_t cap = cy->notes_cap == 0 ? 64 : cy->notes_cap * 2;
        note_t *v = realloc(cy->notes, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        cy->notes = v;
        cy->notes_cap = cap;
    }
    note_t *n = &cy->notes[cy->nnotes];
    *n = (note_t){.entry = ref, .order = order, .rec_block = RSTORE_NONE, .flags = flags};
    if (!(flags & NOTE_VANISHED))
        entry_at(cy->ix, ref)->seen = cy->note_base + (uint32_t)cy->nnotes;
    cy->nnotes++;
    return n;
}

/* What is stored for the note's session before the cycle. */
static stored_t note_stored(const diff_cycle_t *cy, const note_t *n)
{
    return (n->flags & NOTE_NEW) ? (stored_t){0} : stored_of(note_entry(cy, n));
}

/* Stores an observation into n, keeping the record's text only when an
 * event of this cycle will carry it or the store is to write it as the
 * session's last record, and the cycle's byte bound allows. 0 or -1 with
 * err. */
static int note_observe(diff_cycle_t *cy, note_t *n, unsigned obs, uint16_t sidx, uint64_t fp,
                        const char *text, size_t len, char *err, size_t errlen)
{
    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, obs, sidx, fp, cy->opt->baseline, &p);
    n->rec_block = RSTORE_NONE;
    n->rec_len = 0;
    if ((p.nev > 0 || plan_sets_last(&s, &p)) && text != NULL) {
        /* a replaced record's bytes stay in their block and keep counting */
        int rc =
            rstore_append(&cy->records, text, len, cy->max_retained, &n->rec_block, &n->rec_off);
        if (rc == -2) {
            set_err(err, errlen,
                    "the records of this poll's events take more than %zu bytes compressed (%d "
                    "per record of max_sessions %zu; raise max_sessions to allow more)",
                    cy->max_retained, DIFF_RETAINED_BYTES_PER_SESSION, cy->max_observed);
            return -1;
        }
        if (rc != 0) {
            n->rec_block = RSTORE_NONE;
            set_err(err, errlen, "%s", "out of memory");
            return -1;
        }
        n->rec_len = (uint32_t)len;
    }
    n->obs = (uint8_t)obs;
    n->status_idx = sidx;
    n->fingerprint = fp;
    return 0;
}

static int cycle_note_unknown(diff_cycle_t *cy, uint16_t sidx)
{
    cy->unknown_count++;
    status_t *st = cy->ix->statuses[sidx];
    if (st->reported)
        return 0;
    if (cy->nnew_unknown == cy->new_unknown_cap) {
        size_t cap = cy->new_unknown_cap == 0 ? 8 : cy->new_unknown_cap * 2;
        const char **v = realloc(cy->new_unknown, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        cy->new_unknown = v;
        cy->new_unknown_cap = cap;
    }
    /* at first sight, so that the cycle lists it once; an abandoned cycle
     * takes it back (diff_cycle_free) */
    st->reported = true;
    cy->new_unknown[cy->nnew_unknown++] = st->raw;
    return 0;
}

/* Why the n bytes of s cannot be an id or a status, or NULL; *bad is then
 * the offset of the first byte that is not UTF-8, or of the first NUL. */
static const char *text_problem(const char *s, size_t n, size_t *bad)
{
    const char *nul = memchr(s, '\0', n);
    if (diff_utf8_check(s, nul != NULL ? (size_t)(nul - s) : n, bad) != 0)
        return "is not UTF-8";
    if (nul != NULL) {
        *bad = (size_t)(nul - s);
        return "holds a NUL";
    }
    return NULL;
}

int diff_cycle_observe(diff_cycle_t *cy, const char *session_id, size_t id_len,
                       const char *raw_status, size_t status_len, const char *text, size_t len,
                       char *err, size_t errlen)
{
    if (cy == NULL) {
        set_err(err, errlen, "%s", "no cycle");
        return -1;
    }
    if (cy->finished) {
        set_err(err, errlen, "%s", "cycle already finished");
        return -1;
    }
    if (cy->observed >= cy->max_observed) {
        set_err(err, errlen,
                "more than %zu records in one poll (max_sessions; raise it if the population "
                "is that large)",
                cy->max_observed);
        return -1;
    }
    if (session_id == NULL || id_len == 0 || id_len > DIFF_ID_MAX) {
        set_err(err, errlen, "session id is empty or longer than %d bytes", DIFF_ID_MAX);
        return -1;
    }
    /* ids and statuses reach events, keys and logs: UTF-8 only (CONTRACT
     * §6), and C strings there (no NUL); the offending bytes are not quoted
     * back */
    size_t bad;
    const char *why = text_problem(session_id, id_len, &bad);
    if (why != NULL) {
        set_err(err, errlen, "session id %s (byte %zu of the id)", why, bad);
        return -1;
    }
    int idp = (int)id_len; /* for "%.*s": id_len <= DIFF_ID_MAX */
    if (raw_status == NULL || status_len == 0 || status_len > DIFF_STATUS_MAX) {
        set_err(err, errlen, "status of session \"%.*s\" is empty or longer than %d bytes", idp,
                session_id, DIFF_STATUS_MAX);
        return -1;
    }
    if ((why = text_problem(raw_status, status_len, &bad)) != NULL) {
        set_err(err, errlen, "status of session \"%.*s\" %s (byte %zu of the status)", idp,
                session_id, why, bad);
        return -1;
    }
    diff_index_t *ix = cy->ix;
    int sidx_i = intern_status(ix, raw_status, status_len);
    if (sidx_i < 0) {
        if (ix->nstatuses > DIFF_MAX_STATUSES)
            set_err(err, errlen, "more than %d distinct raw statuses (new one: \"%.*s\")",
                    DIFF_MAX_STATUSES, (int)status_len, raw_status);
        else
            set_err(err, errlen, "%s", "out of memory");
        return -1;
    }
    uint16_t sidx = (uint16_t)sidx_i;
    unsigned obs = cycle_state_of(cy, sidx);
    if (obs == OBS_UNKNOWN && cycle_note_unknown(cy, sidx) != 0) {
        set_err(err, errlen, "%s", "out of memory");
        return -1;
    }
    uint64_t fp = diff_fingerprint(text, len);
    uint32_t stamp = cy->base + (uint32_t)cy->observed;
    cy->observed++;

    uint32_t tag = key_tag(session_id, id_len);
    uint32_t ref = htab_get(&ix->tab, tag, session_id, id_len, entry_eq, ix);
    entry_t *e = ref != 0 ? entry_at(ix, ref) : NULL;
    note_t *n = NULL;
    if (e != NULL && e->seen < cy->base) {
        /* first sighting of a stored session in this cycle */
        e->seen = stamp;
        stored_t s = stored_of(e);
        plan_t p;
        plan_observation(&s, obs, sidx, fp, cy->opt->baseline, &p);
        /* Nothing to note when nothing changes. Requiring the same raw
         * status also lets a later duplicate recover this observation's
         * state from the stored status alone. */
        if (!plan_changes(&s, &p) && p.nev == 0 && sidx == e->status_idx)
            return 0;
        n = note_add(cy, ref, stamp, 0);
    } else if (e != NULL) {
        /* duplicate of a stored session */
        n = note_of(cy, e);
        unsigned first = n != NULL ? n->obs : cycle_state_of(cy, (uint16_t)e->status_idx);
        if (obs_rank(obs) <= obs_rank(first))
            return 0; /* ties keep the first */
        if (n == NULL)
            n = note_add(cy, ref, e->seen, 0);
    } else if ((ref = htab_get(&cy->fresh, tag, session_id, id_len, entry_eq, ix)) != 0) {
        /* duplicate of a new session */
        n = note_of(cy, entry_at(ix, ref));
        if (obs_rank(obs) <= obs_rank(n->obs))
            return 0;
    } else {
        if (htab_reserve(&cy->fresh, cy->fresh.count + 1) != 0 ||
            (ref = entry_new(ix, session_id, id_len)) == 0)
            goto oom;
        n = note_add(cy, ref, stamp, NOTE_NEW);
        if (n == NULL) {
            entry_free(ix, ref);
            goto oom;
        }
        ix->cycle_bytes += entry_cost(ix, ref);
        htab_insert(&cy->fresh, ref, tag);
    }
    if (n == NULL)
        goto oom;
    return note_observe(cy, n, obs, sidx, fp, text, len, err, errlen);
oom:
    set_err(err, errlen, "%s", "out of memory");
    return -1;
}

static int note_cmp(const void *a, const void *b)
{
    const note_t *x = a, *y = b;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void cycle_add_event(diff_cycle_t *cy, size_t note, const planned_event_t *pe,
                            diff_reason_t reason)
{
    cy->events[cy->nevents++] = (cevent_t){
        .note = (uint32_t)note,
        .type = pe->type,
        .reason = (uint8_t)reason,
        .synthesized = pe->synthesized,
        .states = (uint8_t)(pe->state << 4 | pe->previous_state),
    };
}

/* Notes every stored session this cycle did not see. */
static int cycle_note_vanished(diff_cycle_t *cy)
{
    diff_index_t *ix = cy->ix;
    uint32_t n = 0;
    for (size_t i = 0; i < ix->tab.cap; i++) {
        uint32_t ref = ix->tab.slots[i].ref;
        if (ref == 0 || entry_at(ix, ref)->seen >= cy->base)
            continue;
        if (note_add(cy, ref, n++, NOTE_VANISHED) == NULL)
            return -1;
    }
    return 0;
}

/* What note n stores, as finish decided it (called before apply: it reads
 * the entry as it was). */
static void note_record(const diff_cycle_t *cy, const note_t *n, diff_record_t *rec)
{
    if (n->flags & NOTE_VANISHED) {
        entry_record(cy->ix, note_entry(cy, n), rec);
        if (!(n->flags & NOTE_REMOVED))
            rec->misses++;
        return;
    }
    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    *rec = (diff_record_t){
        .state = (diff_state_t)p.state,
        .misses = p.misses,
        .fingerprint = p.fingerprint,
        .status = status_raw(cy->ix, p.status_idx),
    };
}

/* What the change of note n does to the session's last record (called
 * before apply: it reads the entry as it was). */
static diff_last_t note_last(const diff_cycle_t *cy, const note_t *n)
{
    if (n->flags & NOTE_VANISHED)
        return (n->flags & NOTE_REMOVED) ? DIFF_LAST_DROP : DIFF_LAST_KEEP;
    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    if (plan_sets_last(&s, &p))
        /* an observation without a record leaves none to carry */
        return n->rec_block != RSTORE_NONE ? DIFF_LAST_SET : DIFF_LAST_DROP;
    if (s.present && state_vanishable(s.state) && !state_vanishable(p.state))
        return DIFF_LAST_DROP; /* it ended: a terminal session cannot vanish */
    return DIFF_LAST_KEEP;
}

/* Decides the change and events of note i. */
static void cycle_settle(diff_cycle_t *cy, size_t i)
{
    note_t *n = &cy->notes[i];
    const entry_t *e = note_entry(cy, n);

    if (n->flags & NOTE_VANISHED) {
        unsigned misses = (unsigned)e->misses + 1;
        n->flags |= NOTE_CHANGED;
        n->store_status_idx = e->status_idx;
        if (misses < cy->opt->vanish_grace)
            return;
        n->flags |= NOTE_REMOVED;
        /* terminal and never-known sessions are forgotten silently */
        if (cy->opt->baseline || (e->state != DIFF_STATE_PENDING && e->state != DIFF_STATE_ACTIVE))
            return;
        planned_event_t pe = {
            .type = DIFF_EV_CANCELLED,
            .state = DIFF_STATE_CANCELLED,
            .previous_state = e->state,
            .synthesized = false,
        };
        /* vanished notes follow the observed ones: their events come last */
        cycle_add_event(cy, i, &pe, DIFF_REASON_VANISHED);
        cy->nvanished++;
        return;
    }

    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    if (plan_changes(&s, &p))
        n->flags |= NOTE_CHANGED;
    n->store_status_idx = p.status_idx;
    diff_reason_t reason =
        s.state == DIFF_STATE_NONE ? DIFF_REASON_FIRST_SEEN : DIFF_REASON_STATUS_CHANGE;
    for (unsigned k = 0; k < p.nev; k++)
        cycle_add_event(cy, i, &p.ev[k], reason);
}

int diff_cycle_finish(diff_cycle_t *cy)
{
    if (cy == NULL || cy->finished)
        return -1;
    cy->finished = true;
    /* observations in first-sighting order; the vanished follow in theirs */
    if (cy->nnotes > 1)
        qsort(cy->notes, cy->nnotes, sizeof(*cy->notes), note_cmp);
    if (cycle_note_vanished(cy) != 0)
        return -1;
    if (cy->nnotes > 0) {
        /* at most two events per session */
        cy->events = malloc(cy->nnotes * 2 * sizeof(*cy->events));
        /* 4 bytes per change: the change itself is derived when read */
        cy->changed = malloc(cy->nnotes * sizeof(*cy->changed));
        if (cy->events == NULL || cy->changed == NULL)
            return -1;
    }
    cy->sessions_after = cy->ix->tab.count;
    for (size_t i = 0; i < cy->nnotes; i++) {
        cycle_settle(cy, i);
        const note_t *n = &cy->notes[i];
        if (!(n->flags & NOTE_CHANGED))
            continue;
        cy->changed[cy->nchanges++] = (uint32_t)i;
        if (n->flags & NOTE_REMOVED)
            cy->sessions_after--;
        else if (n->flags & NOTE_NEW)
            cy->sessions_after++;
    }
    /* the events took 8 bytes for each of two per note: keep what they use */
    if (cy->nevents > 0 && cy->nevents < cy->nnotes * 2) {
        cevent_t *v = realloc(cy->events, cy->nevents * sizeof(*v));
        if (v != NULL)
            cy->events = v;
    }
    /* Room for the new sessions now, so that apply cannot fail; a larger
     * table does not change what the index holds. An empty index takes
     * the cycle's table of new sessions as its own instead (a first
     * cycle: no second table of the whole population beside it). */
    if (cy->ix->tab.count > 0 &&
        htab_reserve(&cy->ix->tab, cy->ix->tab.count + cy->fresh.count) != 0)
        return -1;
    cy->settled = true;
    return 0;
}

size_t diff_cycle_nevents(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->nevents : 0;
}

diff_event_type_t diff_cycle_event_type(const diff_cycle_t *cy, size_t i)
{
    return (diff_event_type_t)cy->events[i].type;
}

int diff_cycle_event(diff_cycle_t *cy, size_t i, diff_event_t *ev)
{
    if (cy == NULL || i >= cy->nevents || cy->applied)
        return -1;
    const cevent_t *ce = &cy->events[i];
    const note_t *n = &cy->notes[ce->note];
    const diff_index_t *ix = cy->ix;
    bool vanished = ce->reason == DIFF_REASON_VANISHED;
    cy->events_read = true;
    *ev = (diff_event_t){
        .type = (diff_event_type_t)ce->type,
        .reason = (diff_reason_t)ce->reason,
        .synthesized = ce->synthesized != 0,
        .session_id = note_entry(cy, n)->id,
        .state = (diff_state_t)(ce->states >> 4),
        .previous_state = (diff_state_t)(ce->states & 0xf),
        .status = vanished ? NULL : status_raw(ix, n->status_idx),
        .previous_status = (n->flags & NOTE_NEW) ? NULL : previous_status_of(ix, note_entry(cy, n)),
    };
    if (n->rec_block != RSTORE_NONE) {
        ev->record = rstore_get(&cy->records, n->rec_block, n->rec_off);
        if (ev->record == NULL)
            return -1;
        ev->record_len = n->rec_len;
    }
    return event_id(cy->opt->source, ev->session_id, ev->type, ev->id);
}

size_t diff_cycle_nvanished(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->nvanished : 0;
}

/* The note of the k-th vanished event, NULL out of range. */
static note_t *vanished_note(const diff_cycle_t *cy, size_t k)
{
    if (cy == NULL || k >= cy->nvanished || cy->applied)
        return NULL;
    return &cy->notes[cy->events[cy->nevents - cy->nvanished + k].note];
}

const char *diff_cycle_vanished_id(const diff_cycle_t *cy, size_t k)
{
    const note_t *n = vanished_note(cy, k);
    return n != NULL ? note_entry(cy, n)->id : NULL;
}

diff_keep_t diff_cycle_vanished_keep(diff_cycle_t *cy, size_t k, const char *text, size_t len)
{
    note_t *n = vanished_note(cy, k);
    /* appending after a read could close the block a returned record is in */
    if (n == NULL || text == NULL || cy->events_read)
        return DIFF_KEEP_ERROR;
    uint32_t block, off;
    int rc = rstore_append(&cy->records, text, len, cy->max_retained, &block, &off);
    if (rc == -2)
        return DIFF_KEEP_FULL;
    if (rc != 0)
        return DIFF_KEEP_ERROR;
    n->rec_block = block;
    n->rec_off = off;
    n->rec_len = (uint32_t)len;
    return DIFF_KEEP_OK;
}

size_t diff_cycle_nchanges(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->nchanges : 0;
}

int diff_cycle_change(const diff_cycle_t *cy, size_t i, diff_change_t *out)
{
    if (cy == NULL || i >= cy->nchanges || cy->applied)
        return -1;
    const note_t *n = &cy->notes[cy->changed[i]];
    *out = (diff_change_t){.session_id = note_entry(cy, n)->id,
                           .removed = (n->flags & NOTE_REMOVED) != 0,
                           .last = note_last(cy, n)};
    note_record(cy, n, &out->rec);
    return 0;
}

int diff_cycle_change_last(diff_cycle_t *cy, size_t i, const char **text, size_t *len)
{
    if (cy == NULL || i >= cy->nchanges || cy->applied)
        return -1;
    const note_t *n = &cy->notes[cy->changed[i]];
    if (note_last(cy, n) != DIFF_LAST_SET)
        return -1;
    *text = rstore_get(&cy->records, n->rec_block, n->rec_off);
    *len = n->rec_len;
    return *text != NULL ? 0 : -1;
}

size_t diff_cycle_sessions_after(const diff_cycle_t *cy)
{
    return cy != NULL && cy->settled ? cy->sessions_after : diff_index_size(cy ? cy->ix : NULL);
}

size_t diff_cycle_observed(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->observed : 0;
}

size_t diff_cycle_memory(const diff_cycle_t *cy)
{
    if (cy == NULL)
        return 0;
    const rstore_t *rs = &cy->records;
    size_t n = heap_cost(sizeof(*cy)) + heap_cost(cy->fresh.cap * sizeof(hslot_t)) +
               heap_cost(cy->notes_cap * sizeof(note_t)) +
               heap_cost((cy->finished ? cy->nevents : 0) * sizeof(cevent_t)) +
               heap_cost((cy->finished ? cy->nnotes : 0) * sizeof(uint32_t)) +
               heap_cost(rs->blocks_cap * sizeof(rblock_t)) + heap_cost(rs->open_cap) +
               heap_cost(rs->scratch_cap) + heap_cost(rs->cache_cap) + (rs->held - rs->open_len);
    /* the new sessions' entries, in the index's pool until apply gives them to it */
    return n + (cy->applied ? 0 : cy->ix->cycle_bytes);
}

size_t diff_cycle_retained(const diff_cycle_t *cy, size_t *raw)
{
    if (raw != NULL)
        *raw = cy != NULL ? cy->records.raw : 0;
    return cy != NULL ? cy->records.held : 0;
}

size_t diff_cycle_new_unknown_statuses(const diff_cycle_t *cy, const char *const **statuses)
{
    if (statuses != NULL)
        *statuses = cy != NULL ? cy->new_unknown : NULL;
    return cy != NULL ? cy->nnew_unknown : 0;
}

size_t diff_cycle_unknown_count(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->unknown_count : 0;
}

void diff_cycle_apply(diff_cycle_t *cy)
{
    if (cy == NULL || !cy->settled || cy->applied)
        return;
    cy->applied = true;
    diff_index_t *ix = cy->ix;
    bool removed_any = false, adopt = ix->tab.count == 0;
    if (adopt) {
        /* every new session is in the cycle's table, and nothing else */
        htab_release(&ix->tab);
        ix->tab = cy->fresh;
        memset(&cy->fresh, 0, sizeof(cy->fresh));
    }
    ix->cycle_bytes = 0; /* the new entries are the index's now */
    for (size_t i = 0; i < cy->nnotes; i++) {
        note_t *n = &cy->notes[i];
        if (!(n->flags & NOTE_CHANGED))
            continue;
        entry_t *e = note_entry(cy, n);
        if (n->flags & NOTE_REMOVED) {
            size_t slot = htab_find_ref(&ix->tab, key_tag(e->id, entry_idlen(e)), n->entry);
            if (slot != SIZE_MAX)
                htab_remove_at(&ix->tab, slot);
            ix->by_state[e->state]--;
            entry_free(ix, n->entry);
            n->entry = 0;
            removed_any = true;
            continue;
        }
        diff_record_t rec;
        note_record(cy, n, &rec); /* before the entry changes */
        if (n->flags & NOTE_NEW) {
            /* the index owns it now: moved, not copied */
            n->flags &= (uint8_t)~NOTE_NEW;
            if (!adopt)
                htab_insert(&ix->tab, n->entry, key_tag(e->id, entry_idlen(e)));
        } else {
            ix->by_state[e->state]--;
        }
        ix->by_state[rec.state]++;
        e->state = (uint32_t)rec.state;
        e->misses = rec.misses;
        e->fingerprint = rec.fingerprint;
        e->status_idx = n->store_status_idx;
    }
    /* what only the events needed goes now, before the caller frees the cycle */
    htab_release(&cy->fresh);
    rstore_release(&cy->records);
    if (removed_any) {
        pool_compact(ix);
        htab_maybe_shrink(&ix->tab);
    }
}

/* What an abandoned cycle did to the index: its "reported" marks on the
 * statuses that stay, the statuses it interned, and the entries it made
 * for new sessions (their chunks, and the slabs made for them). */
static void cycle_roll_back(diff_cycle_t *cy)
{
    diff_index_t *ix = cy->ix;
    for (size_t i = 0; i < cy->nnew_unknown; i++) {
        const char *raw = cy->new_unknown[i];
        size_t n = strlen(raw);
        uint32_t ref = htab_get(&ix->stab, key_tag(raw, n), raw, n, status_eq, ix);
        if (ref != 0 && ref - 1 < cy->nstatuses0)
            ix->statuses[ref - 1]->reported = false;
    }
    statuses_truncate(ix, cy->nstatuses0, cy->statuses_cap0, cy->stab_cap0);
    for (size_t i = 0; i < cy->nnotes; i++) {
        if (cy->notes[i].flags & NOTE_NEW)
            entry_free(ix, cy->notes[i].entry);
    }
    ix->cycle_bytes = 0;
    pool_truncate(&ix->pool, cy->nslabs0, cy->slabs_cap0);
}

void diff_cycle_free(diff_cycle_t *cy)
{
    if (cy == NULL)
        return;
    if (!cy->applied)
        cycle_roll_back(cy);
    free(cy->notes);
    htab_release(&cy->fresh);
    rstore_release(&cy->records);
    free(cy->new_unknown);
    free(cy->events);
    free(cy->changed);
    cy->ix->cycle_open = false;
    free(cy);
}
