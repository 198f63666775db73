/*
 * diff: snapshot and lifecycle logic. See diff.h for the contract.
 *
 * Layout, chosen for 100k sessions per source:
 * - the index is an open-addressing table (power of two, linear probing,
 *   backward-shift deletion, no tombstones) of pointers to one malloc'd
 *   entry per session holding the fixed 16-byte header and the id;
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
 * degrades quickly above that, and below it the slot array costs at most
 * 8 / (3/8) ~ 21 bytes per session. */
#define TAB_LOAD_NUM 3
#define TAB_LOAD_DEN 4
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

/* FNV-1a with a final avalanche: table indexes use the low bits, which plain
 * FNV-1a mixes poorly for short keys that differ only at the end. */
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static uint64_t hash_str(const char *s)
{
    return mix64(fnv_bytes(FNV_OFFSET, s, strlen(s)));
}

/* ---- pointer tables keyed by a string inside the pointee ---- */

typedef struct ptab {
    void **slots;
    size_t cap; /* 0 or a power of two */
    size_t count;
    size_t key_off; /* offset of the NUL-terminated key inside each pointee */
} ptab_t;

static const char *ptab_key(const ptab_t *t, const void *p)
{
    return (const char *)p + t->key_off;
}

/* Slot holding key, or SIZE_MAX. */
static size_t ptab_find(const ptab_t *t, const char *key, uint64_t h)
{
    if (t->cap == 0)
        return SIZE_MAX;
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        void *p = t->slots[i];
        if (p == NULL)
            return SIZE_MAX;
        if (strcmp(ptab_key(t, p), key) == 0)
            return i;
    }
}

static void *ptab_get(const ptab_t *t, const char *key, uint64_t h)
{
    size_t i = ptab_find(t, key, h);
    return i == SIZE_MAX ? NULL : t->slots[i];
}

static void ptab_place(void **slots, size_t cap, void *p, uint64_t h)
{
    size_t mask = cap - 1;
    size_t i = (size_t)h & mask;
    while (slots[i] != NULL)
        i = (i + 1) & mask;
    slots[i] = p;
}

static int ptab_resize(ptab_t *t, size_t cap)
{
    void **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        void *p = t->slots[i];
        if (p != NULL)
            ptab_place(slots, cap, p, hash_str(ptab_key(t, p)));
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static size_t ptab_cap_for(size_t count)
{
    size_t cap = TAB_MIN_CAP;
    while (count * TAB_LOAD_DEN > cap * TAB_LOAD_NUM) {
        if (cap > SIZE_MAX / 2)
            return 0;
        cap *= 2;
    }
    return cap;
}

/* Makes room for `count` entries in total, so that inserts up to it cannot
 * fail. 0 or -1. */
static int ptab_reserve(ptab_t *t, size_t count)
{
    size_t cap = ptab_cap_for(count);
    if (cap == 0)
        return -1;
    if (cap <= t->cap)
        return 0;
    return ptab_resize(t, cap);
}

/* The key must be absent and room reserved. */
static void ptab_insert(ptab_t *t, void *p, uint64_t h)
{
    ptab_place(t->slots, t->cap, p, h);
    t->count++;
}

/* Backward-shift deletion: later members of the probe run move up so that
 * lookups never need tombstones. */
static void ptab_remove_at(ptab_t *t, size_t slot)
{
    size_t mask = t->cap - 1;
    size_t i = slot;
    size_t j = slot;
    t->slots[i] = NULL;
    for (;;) {
        j = (j + 1) & mask;
        void *p = t->slots[j];
        if (p == NULL)
            break;
        size_t k = (size_t)hash_str(ptab_key(t, p)) & mask;
        /* p may stay if its home k lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        t->slots[i] = p;
        t->slots[j] = NULL;
        i = j;
    }
    t->count--;
}

/* Gives memory back after mass removals; keeps the table when that fails. */
static void ptab_maybe_shrink(ptab_t *t)
{
    if (t->cap <= TAB_MIN_CAP || t->count * TAB_SHRINK_DEN >= t->cap)
        return;
    size_t cap = ptab_cap_for(t->count);
    if (cap != 0 && cap < t->cap)
        (void)ptab_resize(t, cap);
}

static void ptab_release(ptab_t *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = 0;
    t->count = 0;
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
    char raw[];
} map_entry_t;

struct diff_status_map {
    ptab_t tab;
};

diff_status_map_t *diff_status_map_new(void)
{
    diff_status_map_t *map = calloc(1, sizeof(*map));
    if (map == NULL)
        return NULL;
    map->tab.key_off = offsetof(map_entry_t, raw);
    return map;
}

void diff_status_map_free(diff_status_map_t *map)
{
    if (map == NULL)
        return;
    for (size_t i = 0; i < map->tab.cap; i++)
        free(map->tab.slots[i]);
    ptab_release(&map->tab);
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
    uint64_t h = hash_str(raw);
    map_entry_t *me = ptab_get(&map->tab, raw, h);
    if (me != NULL) {
        me->state = (uint8_t)state;
        return 0;
    }
    if (ptab_reserve(&map->tab, map->tab.count + 1) != 0)
        return -1;
    me = malloc(sizeof(*me) + n + 1);
    if (me == NULL)
        return -1;
    me->state = (uint8_t)state;
    memcpy(me->raw, raw, n + 1);
    ptab_insert(&map->tab, me, h);
    return 0;
}

int diff_status_map_lookup(const diff_status_map_t *map, const char *raw, diff_state_t *out)
{
    if (map == NULL || raw == NULL)
        return -1;
    const map_entry_t *me = ptab_get(&map->tab, raw, hash_str(raw));
    if (me == NULL)
        return -1;
    if (out != NULL)
        *out = (diff_state_t)me->state;
    return 0;
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

/* 16 bytes before the id: a 36-char id makes a 53-byte request, one 64-byte
 * malloc chunk. */
typedef struct entry {
    uint64_t fingerprint;
    uint32_t seen; /* stamp of the first observation in the latest cycle */
    uint16_t status_idx;
    uint8_t state;
    uint8_t misses;
    char id[];
} entry_t;

typedef struct status {
    uint16_t idx;
    bool reported; /* already returned as a new unknown status */
    char raw[];
} status_t;

struct diff_index {
    ptab_t tab;          /* entry_t * by id */
    ptab_t stab;         /* status_t * by raw */
    status_t **statuses; /* by status_idx */
    size_t nstatuses;
    size_t statuses_cap;
    size_t entry_bytes;  /* heap_cost() of every entry */
    size_t status_bytes; /* heap_cost() of every status_t */
    size_t by_state[DIFF_STATE_COUNT];
    uint32_t next_stamp;
    bool cycle_open;
};

/* Interns raw, returns its index or -1 (ENOMEM or DIFF_MAX_STATUSES reached). */
static int intern_status(diff_index_t *ix, const char *raw, size_t len)
{
    uint64_t h = hash_str(raw);
    const status_t *st = ptab_get(&ix->stab, raw, h);
    if (st != NULL)
        return st->idx;
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
    if (ptab_reserve(&ix->stab, ix->stab.count + 1) != 0)
        return -1;
    status_t *ns = malloc(sizeof(*ns) + len + 1);
    if (ns == NULL)
        return -1;
    ns->idx = (uint16_t)ix->nstatuses;
    ns->reported = false;
    memcpy(ns->raw, raw, len + 1);
    ptab_insert(&ix->stab, ns, h);
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
        size_t slot = ptab_find(&ix->stab, st->raw, hash_str(st->raw));
        if (slot != SIZE_MAX)
            ptab_remove_at(&ix->stab, slot);
        ix->status_bytes -= heap_cost(sizeof(*st) + strlen(st->raw) + 1);
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
        (void)ptab_resize(&ix->stab, stab_cap);
}

diff_index_t *diff_index_new(void)
{
    diff_index_t *ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return NULL;
    ix->tab.key_off = offsetof(entry_t, id);
    ix->stab.key_off = offsetof(status_t, raw);
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
    for (size_t i = 0; i < ix->tab.cap; i++)
        free(ix->tab.slots[i]);
    ptab_release(&ix->tab);
    ix->entry_bytes = 0;
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
    ptab_release(&ix->stab);
    free(ix);
}

size_t diff_index_size(const diff_index_t *ix)
{
    return ix != NULL ? ix->tab.count : 0;
}

size_t diff_index_memory(const diff_index_t *ix)
{
    if (ix == NULL)
        return 0;
    return heap_cost(sizeof(*ix)) + heap_cost(ix->tab.cap * sizeof(void *)) + ix->entry_bytes +
           heap_cost(ix->stab.cap * sizeof(void *)) +
           heap_cost(ix->statuses_cap * sizeof(status_t *)) + ix->status_bytes;
}

void diff_index_states(const diff_index_t *ix, size_t counts[DIFF_STATE_COUNT])
{
    for (size_t i = 0; i < DIFF_STATE_COUNT; i++)
        counts[i] = ix != NULL ? ix->by_state[i] : 0;
}

static entry_t *entry_new(const char *id, size_t idlen)
{
    entry_t *e = malloc(sizeof(*e) + idlen + 1);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->seen = STAMP_NEVER;
    memcpy(e->id, id, idlen + 1);
    return e;
}

static size_t entry_cost(const entry_t *e)
{
    return heap_cost(sizeof(*e) + strlen(e->id) + 1);
}

int diff_index_put(diff_index_t *ix, const char *session_id, const diff_record_t *rec)
{
    /* an open cycle may drop the statuses interned after its begin, which
     * an entry put now could be using */
    if (ix == NULL || rec == NULL || (unsigned)rec->state > STATE_LAST || ix->cycle_open)
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

    uint64_t h = hash_str(session_id);
    entry_t *e = ptab_get(&ix->tab, session_id, h);
    if (e == NULL) {
        if (ptab_reserve(&ix->tab, ix->tab.count + 1) != 0)
            return -1;
        e = entry_new(session_id, idlen);
        if (e == NULL)
            return -1;
        ptab_insert(&ix->tab, e, h);
        ix->entry_bytes += entry_cost(e);
    } else {
        ix->by_state[e->state]--;
    }
    ix->by_state[rec->state]++;
    e->state = (uint8_t)rec->state;
    e->misses = rec->misses;
    e->fingerprint = rec->fingerprint;
    e->status_idx = (uint16_t)sidx;
    return 0;
}

static void entry_record(const diff_index_t *ix, const entry_t *e, diff_record_t *out)
{
    out->state = (diff_state_t)e->state;
    out->misses = e->misses;
    out->fingerprint = e->fingerprint;
    out->status = status_raw(ix, e->status_idx);
}

int diff_index_get(const diff_index_t *ix, const char *session_id, diff_record_t *out)
{
    if (ix == NULL || session_id == NULL)
        return -1;
    const entry_t *e = ptab_get(&ix->tab, session_id, hash_str(session_id));
    if (e == NULL)
        return -1;
    if (out != NULL)
        entry_record(ix, e, out);
    return 0;
}

int diff_index_foreach(const diff_index_t *ix, diff_index_fn fn, void *opaque)
{
    for (size_t i = 0; ix != NULL && i < ix->tab.cap; i++) {
        const entry_t *e = ix->tab.slots[i];
        diff_record_t rec;
        int rc;
        if (e == NULL)
            continue;
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
 * one array: 40 bytes, no allocation of its own. A stored session seen in
 * the cycle points at its note through its `seen` field (see NOTE_REF); a
 * new session's entry is built at its first sighting, found through the
 * cycle's table of new entries, and moved into the index by apply.
 */
typedef struct note {
    entry_t *entry;       /* the index's, or (NOTE_NEW) the cycle's until apply */
    uint64_t fingerprint; /* observed */
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
    ptab_t fresh; /* entry_t * of the sessions the index lacks, by id */
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
    cy->max_observed = max;
    cy->max_retained = max * DIFF_RETAINED_BYTES_PER_SESSION;
    cy->fresh.key_off = offsetof(entry_t, id);
    cy->records.cache_block = SIZE_MAX;
    for (size_t i = 0; i < sizeof(cy->state_cache); i++)
        cy->state_cache[i] = STATE_CACHE_UNSET;
    if (ix->next_stamp > UINT32_MAX - STAMP_RANGES * max - 1) {
        for (size_t i = 0; i < ix->tab.cap; i++) {
            entry_t *e = ix->tab.slots[i];
            if (e != NULL)
                e->seen = STAMP_NEVER;
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

/* A new note for e, which e points at from then on; NULL on ENOMEM. The
 * pointer is valid until the next note_add. */
static note_t *note_add(diff_cycle_t *cy, entry_t *e, uint32_t order, uint8_t flags)
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
    *n = (note_t){.entry = e, .order = order, .rec_block = RSTORE_NONE, .flags = flags};
    if (!(flags & NOTE_VANISHED))
        e->seen = cy->note_base + (uint32_t)cy->nnotes;
    cy->nnotes++;
    return n;
}

/* What is stored for the note's session before the cycle. */
static stored_t note_stored(const note_t *n)
{
    return (n->flags & NOTE_NEW) ? (stored_t){0} : stored_of(n->entry);
}

/* Stores an observation into n, keeping the record's text only when an
 * event of this cycle will carry it and the cycle's byte bound allows.
 * 0 or -1 with err. */
static int note_observe(diff_cycle_t *cy, note_t *n, unsigned obs, uint16_t sidx, uint64_t fp,
                        const char *text, size_t len, char *err, size_t errlen)
{
    stored_t s = note_stored(n);
    plan_t p;
    plan_observation(&s, obs, sidx, fp, cy->opt->baseline, &p);
    n->rec_block = RSTORE_NONE;
    n->rec_len = 0;
    if (p.nev > 0 && text != NULL) {
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

int diff_cycle_observe(diff_cycle_t *cy, const char *session_id, const char *raw_status,
                       const char *text, size_t len, char *err, size_t errlen)
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
    size_t idlen = bounded_len(session_id, DIFF_ID_MAX);
    if (idlen == 0) {
        set_err(err, errlen, "session id is empty or longer than %d bytes", DIFF_ID_MAX);
        return -1;
    }
    /* ids and statuses reach events, keys and logs: UTF-8 only (CONTRACT
     * §6); the offending bytes are not quoted back */
    size_t bad;
    if (diff_utf8_check(session_id, idlen, &bad) != 0) {
        set_err(err, errlen, "session id is not UTF-8 (byte %zu of the id)", bad);
        return -1;
    }
    size_t slen = bounded_len(raw_status, DIFF_STATUS_MAX);
    if (slen == 0) {
        set_err(err, errlen, "status of session \"%s\" is empty or longer than %d bytes",
                session_id, DIFF_STATUS_MAX);
        return -1;
    }
    if (diff_utf8_check(raw_status, slen, &bad) != 0) {
        set_err(err, errlen, "status of session \"%s\" is not UTF-8 (byte %zu of the status)",
                session_id, bad);
        return -1;
    }
    diff_index_t *ix = cy->ix;
    int sidx_i = intern_status(ix, raw_status, slen);
    if (sidx_i < 0) {
        if (ix->nstatuses > DIFF_MAX_STATUSES)
            set_err(err, errlen, "more than %d distinct raw statuses (new one: \"%s\")",
                    DIFF_MAX_STATUSES, raw_status);
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

    uint64_t h = hash_str(session_id);
    entry_t *e = ptab_get(&ix->tab, session_id, h);
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
        n = note_add(cy, e, stamp, 0);
    } else if (e != NULL) {
        /* duplicate of a stored session */
        n = note_of(cy, e);
        unsigned first = n != NULL ? n->obs : cycle_state_of(cy, e->status_idx);
        if (obs_rank(obs) <= obs_rank(first))
            return 0; /* ties keep the first */
        if (n == NULL)
            n = note_add(cy, e, e->seen, 0);
    } else if ((e = ptab_get(&cy->fresh, session_id, h)) != NULL) {
        /* duplicate of a new session */
        n = note_of(cy, e);
        if (obs_rank(obs) <= obs_rank(n->obs))
            return 0;
    } else {
        if (ptab_reserve(&cy->fresh, cy->fresh.count + 1) != 0 ||
            (e = entry_new(session_id, idlen)) == NULL)
            goto oom;
        n = note_add(cy, e, stamp, NOTE_NEW);
        if (n == NULL) {
            free(e);
            goto oom;
        }
        ptab_insert(&cy->fresh, e, h);
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
        entry_t *e = ix->tab.slots[i];
        if (e == NULL || e->seen >= cy->base)
            continue;
        if (note_add(cy, e, n++, NOTE_VANISHED) == NULL)
            return -1;
    }
    return 0;
}

/* What note n stores, as finish decided it (called before apply: it reads
 * the entry as it was). */
static void note_record(const diff_cycle_t *cy, const note_t *n, diff_record_t *rec)
{
    if (n->flags & NOTE_VANISHED) {
        entry_record(cy->ix, n->entry, rec);
        if (!(n->flags & NOTE_REMOVED))
            rec->misses++;
        return;
    }
    stored_t s = note_stored(n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    *rec = (diff_record_t){
        .state = (diff_state_t)p.state,
        .misses = p.misses,
        .fingerprint = p.fingerprint,
        .status = status_raw(cy->ix, p.status_idx),
    };
}

/* Decides the change and events of note i. */
static void cycle_settle(diff_cycle_t *cy, size_t i)
{
    note_t *n = &cy->notes[i];
    entry_t *e = n->entry;

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
        cycle_add_event(cy, i, &pe, DIFF_REASON_VANISHED);
        return;
    }

    stored_t s = note_stored(n);
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
        ptab_reserve(&cy->ix->tab, cy->ix->tab.count + cy->fresh.count) != 0)
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
    *ev = (diff_event_t){
        .type = (diff_event_type_t)ce->type,
        .reason = (diff_reason_t)ce->reason,
        .synthesized = ce->synthesized != 0,
        .session_id = n->entry->id,
        .state = (diff_state_t)(ce->states >> 4),
        .previous_state = (diff_state_t)(ce->states & 0xf),
        .status = vanished ? NULL : status_raw(ix, n->status_idx),
        .previous_status = (n->flags & NOTE_NEW) ? NULL : previous_status_of(ix, n->entry),
    };
    if (!vanished && n->rec_block != RSTORE_NONE) {
        ev->record = rstore_get(&cy->records, n->rec_block, n->rec_off);
        if (ev->record == NULL)
            return -1;
        ev->record_len = n->rec_len;
    }
    return event_id(cy->opt->source, ev->session_id, ev->type, ev->id);
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
    *out = (diff_change_t){.session_id = n->entry->id, .removed = (n->flags & NOTE_REMOVED) != 0};
    note_record(cy, n, &out->rec);
    return 0;
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
    size_t n = heap_cost(sizeof(*cy)) + heap_cost(cy->fresh.cap * sizeof(void *)) +
               heap_cost(cy->notes_cap * sizeof(note_t)) +
               heap_cost((cy->finished ? cy->nevents : 0) * sizeof(cevent_t)) +
               heap_cost((cy->finished ? cy->nnotes : 0) * sizeof(uint32_t)) +
               heap_cost(rs->blocks_cap * sizeof(rblock_t)) + heap_cost(rs->open_cap) +
               heap_cost(rs->scratch_cap) + heap_cost(rs->cache_cap) + (rs->held - rs->open_len);
    for (size_t i = 0; i < cy->nnotes && !cy->applied; i++) {
        if (cy->notes[i].flags & NOTE_NEW)
            n += entry_cost(cy->notes[i].entry);
    }
    return n;
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
        ptab_release(&ix->tab);
        ix->tab = cy->fresh;
        memset(&cy->fresh, 0, sizeof(cy->fresh));
    }
    for (size_t i = 0; i < cy->nnotes; i++) {
        note_t *n = &cy->notes[i];
        if (!(n->flags & NOTE_CHANGED))
            continue;
        entry_t *e = n->entry;
        if (n->flags & NOTE_REMOVED) {
            size_t slot = ptab_find(&ix->tab, e->id, hash_str(e->id));
            if (slot != SIZE_MAX)
                ptab_remove_at(&ix->tab, slot);
            ix->entry_bytes -= entry_cost(e);
            ix->by_state[e->state]--;
            free(e);
            n->entry = NULL;
            removed_any = true;
            continue;
        }
        diff_record_t rec;
        note_record(cy, n, &rec); /* before the entry changes */
        if (n->flags & NOTE_NEW) {
            /* the index owns it now: moved, not copied */
            n->flags &= (uint8_t)~NOTE_NEW;
            if (!adopt)
                ptab_insert(&ix->tab, e, hash_str(e->id));
            ix->entry_bytes += entry_cost(e);
        } else {
            ix->by_state[e->state]--;
        }
        ix->by_state[rec.state]++;
        e->state = (uint8_t)rec.state;
        e->misses = rec.misses;
        e->fingerprint = rec.fingerprint;
        e->status_idx = n->store_status_idx;
    }
    /* what only the events needed goes now, before the caller frees the cycle */
    ptab_release(&cy->fresh);
    rstore_release(&cy->records);
    if (removed_any)
        ptab_maybe_shrink(&ix->tab);
}

/* What an abandoned cycle did to the index: its "reported" marks on the
 * statuses that stay, and the statuses it interned. */
static void cycle_roll_back(diff_cycle_t *cy)
{
    diff_index_t *ix = cy->ix;
    for (size_t i = 0; i < cy->nnew_unknown; i++) {
        const char *raw = cy->new_unknown[i];
        status_t *st = ptab_get(&ix->stab, raw, hash_str(raw));
        if (st != NULL && st->idx < cy->nstatuses0)
            st->reported = false;
    }
    statuses_truncate(ix, cy->nstatuses0, cy->statuses_cap0, cy->stab_cap0);
}

void diff_cycle_free(diff_cycle_t *cy)
{
    if (cy == NULL)
        return;
    if (!cy->applied)
        cycle_roll_back(cy);
    for (size_t i = 0; i < cy->nnotes; i++) {
        if (cy->notes[i].flags & NOTE_NEW)
            free(cy->notes[i].entry);
    }
    free(cy->notes);
    ptab_release(&cy->fresh);
    rstore_release(&cy->records);
    free(cy->new_unknown);
    free(cy->events);
    free(cy->changed);
    cy->ix->cycle_open = false;
    free(cy);
}
