/*
 * store: the dead letters of every sink: scan, count, delete, purge (see
 * store.h). The `dlq` command built on them is bridge/dlq.c.
 */
#include "internal.h"

#include <string.h>

typedef struct dlq_scan {
    store_dlq_fn fn;
    void *opaque;
} dlq_scan_t;

static int dlq_pair(store_t *st, const char *key, const redisReply *f, const redisReply *v,
                    void *opaque, char *err, size_t errlen)
{
    dlq_scan_t *d = opaque;
    char id[DIFF_ID_MAX + 1];

    if (f->len == 0 || f->len > DIFF_ID_MAX || memchr(f->str, '\0', f->len) != NULL) {
        store_set_err(err, errlen, "redis %s: %s: a field is not an event id", st->endpoint, key);
        return -1;
    }
    memcpy(id, f->str, f->len);
    id[f->len] = '\0';
    return d->fn(d->opaque, id, v->str, v->len);
}

int store_dlq_scan(store_t *st, const char *sink, store_dlq_fn fn, void *opaque, char *err,
                   size_t errlen)
{
    char dlq[STORE_KEY_MAX];
    dlq_scan_t d = {fn, opaque};

    if (store_make_key(st, "dlq", sink, "", dlq, err, errlen) != 0 ||
        store_ensure_connected(st, err, errlen) != 0)
        return -1;
    return store_scan_hash(st, dlq, dlq_pair, &d, err, errlen);
}

int store_dlq_count(store_t *st, const char *sink, size_t *n, char *err, size_t errlen)
{
    char dlq[STORE_KEY_MAX];

    if (store_make_key(st, "dlq", sink, "", dlq, err, errlen) != 0)
        return -1;
    return store_run_count(st, "HLEN", dlq, n, err, errlen);
}

int store_dlq_delete(store_t *st, const char *sink, const char *id, char *err, size_t errlen)
{
    char dlq[STORE_KEY_MAX];
    const char *c1[] = {"HDEL", dlq, id, NULL};
    const char *const *cmds[] = {c1};

    if (store_make_key(st, "dlq", sink, "", dlq, err, errlen) != 0)
        return -1;
    return store_run_transaction(st, cmds, 1, "dlq delete", err, errlen);
}

int store_dlq_purge(store_t *st, const char *sink, size_t *n, char *err, size_t errlen)
{
    char dlq[STORE_KEY_MAX];
    const char *c1[] = {"DEL", dlq, NULL};
    const char *const *cmds[] = {c1};

    if (store_dlq_count(st, sink, n, err, errlen) != 0)
        return -1;
    store_make_key(st, "dlq", sink, "", dlq, NULL, 0);
    return store_run_transaction(st, cmds, 1, "dlq purge", err, errlen);
}
