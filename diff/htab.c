/*
 * htab: see htab.h. Linear probing, backward-shift deletion (no
 * tombstones), any capacity rather than powers of two only.
 */
#include "htab.h"

#include <stdlib.h>
#include <string.h>

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

static bool ref_eq(const void *ctx, uint32_t ref, const char *s, size_t n)
{
    (void)s;
    (void)n;
    return ref == *(const uint32_t *)ctx;
}

size_t htab_find_ref(const htab_t *t, uint32_t tag, uint32_t ref)
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

int htab_resize(htab_t *t, size_t cap)
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

/* Grows by at least TAB_GROW_NUM/TAB_GROW_DEN, so that n inserts cost O(n)
 * moves. */
int htab_reserve(htab_t *t, size_t count)
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

void htab_insert(htab_t *t, uint32_t ref, uint32_t tag)
{
    htab_place(t->slots, t->cap, (hslot_t){.ref = ref, .tag = tag});
    t->count++;
}

/* Backward-shift deletion: later members of the probe run move up so that
 * lookups never need tombstones. */
void htab_remove_at(htab_t *t, size_t slot)
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

void htab_maybe_shrink(htab_t *t)
{
    if (t->cap <= TAB_MIN_CAP || t->count * TAB_SHRINK_DEN >= t->cap)
        return;
    size_t cap = htab_cap_for(t->count);
    if (cap != 0 && cap < t->cap)
        (void)htab_resize(t, cap);
}

void htab_release(htab_t *t)
{
    free(t->slots);
    memset(t, 0, sizeof(*t));
}
