/*
 * index: a source's stored sessions (see index.h for what it is made of,
 * diff.h for the contract).
 */
#include "index.h"

#include <stdlib.h>
#include <string.h>

int index_intern_status(diff_index_t *ix, const char *raw, size_t len)
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

void index_statuses_truncate(diff_index_t *ix, size_t keep, size_t cap, size_t stab_cap)
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
    if (index_intern_status(ix, "", 0) != STATUS_NONE_IDX)
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

uint32_t entry_new(diff_index_t *ix, const char *id, size_t idlen)
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

void entry_free(diff_index_t *ix, uint32_t ref)
{
    pool_free(&ix->pool, ref, pool_class(entry_idlen(entry_at(ix, ref))));
}

size_t entry_cost(const diff_index_t *ix, uint32_t ref)
{
    return (size_t)pool_class(entry_idlen(entry_at(ix, ref))) * POOL_UNIT;
}

void index_compact(diff_index_t *ix)
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
    int sidx = index_intern_status(ix, status, slen);
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

void entry_record(const diff_index_t *ix, const entry_t *e, diff_record_t *out)
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

int diff_index_foreach_from(const diff_index_t *ix, size_t *pos, diff_index_fn fn, void *opaque)
{
    for (size_t i = *pos; ix != NULL && i < ix->tab.cap; i++) {
        uint32_t ref = ix->tab.slots[i].ref;
        diff_record_t rec;
        int rc;
        if (ref == 0)
            continue;
        const entry_t *e = entry_at(ix, ref);
        entry_record(ix, e, &rec);
        if ((rc = fn(opaque, e->id, &rec)) != 0) {
            *pos = i + 1;
            return rc;
        }
    }
    *pos = ix != NULL ? ix->tab.cap : 0;
    return 0;
}

int diff_index_foreach(const diff_index_t *ix, diff_index_fn fn, void *opaque)
{
    size_t pos = 0;
    return diff_index_foreach_from(ix, &pos, fn, opaque);
}
