/*
 * status maps: raw provider status -> canonical state, one per source
 * (the provider's defaults with the source's status_map over them).
 */
#include "diff.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "htab.h"
#include "internal.h"

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
    map_entry_t **v = array_grow(map->v, &map->cap, map->n + 1, sizeof(*v), 16);
    if (v == NULL)
        return -1;
    map->v = v;
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
