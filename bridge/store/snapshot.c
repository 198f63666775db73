/*
 * store: the replies of the snapshot's load and of the last records (see
 * store.h); commit.c writes them.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* The meta hash holds three fields; a much larger one was not written by us
 * and is not worth reading. */
#define STORE_META_FIELDS_MAX 64

/* The HGETALL reply r of the meta hash: *exists and *cycle. */
int store_meta_reply(const store_t *st, const char *meta, const redisReply *r, bool *exists,
                     uint64_t *cycle, char *err, size_t errlen)
{
    bool have_cycle = false;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0 ||
        r->elements > 2 * STORE_META_FIELDS_MAX) {
        store_set_err(err, errlen, "redis %s: %s: not a snapshot meta hash", st->endpoint, meta);
        return -1;
    }
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            store_set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, meta);
            return -1;
        }
        if (f->len == 5 && memcmp(f->str, "cycle", 5) == 0) {
            if (redis_parse_u64(v->str, v->len, cycle) != 0) {
                store_set_err(err, errlen,
                              "redis %s: %s field \"cycle\": not a decimal cycle number",
                              st->endpoint, meta);
                return -1;
            }
            have_cycle = true;
        }
    }
    *exists = r->elements > 0;
    if (*exists && !have_cycle) {
        store_set_err(err, errlen, "redis %s: %s: no field \"cycle\"", st->endpoint, meta);
        return -1;
    }
    return 0;
}

/* Checks and decodes one stored field/value pair into the index (opaque). */
int store_load_pair(store_t *st, const char *snap, const redisReply *f, const redisReply *v,
                    void *opaque, char *err, size_t errlen)
{
    diff_index_t *ix = opaque;
    char status[DIFF_STATUS_MAX + 1];
    char shown[4 * STORE_ERR_FIELD_SHOWN + 4];
    diff_record_t rec;
    const char *why = NULL;

    store_quote_bytes(f->str, f->len, shown, sizeof shown);
    /* The index takes C strings: an id with a NUL was not written by us. */
    if (f->len == 0 || f->len > DIFF_ID_MAX || memchr(f->str, '\0', f->len) != NULL)
        why = "not a session id (empty, too long or holding a NUL)";
    else if (v->len > DIFF_RECORD_MAX)
        why = "value longer than a record";
    else if (diff_record_decode(v->str, v->len, &rec, status, sizeof status) != 0)
        why = "malformed record";
    else if (diff_index_put(ix, f->str, &rec) != 0)
        why = "cannot be indexed (out of memory?)";
    if (why != NULL) {
        store_set_err(err, errlen, "redis %s: %s field \"%s\": %s", st->endpoint, snap, shown, why);
        return -1;
    }
    return 0;
}

/* Hands the HMGET reply r of n last records to fn; -1 with err. */
int store_last_reply(const store_t *st, const char *what, const redisReply *r, size_t n,
                     store_last_fn fn, void *opaque, char *err, size_t errlen)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        store_set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, what);
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        const redisReply *v = r->element[k];
        bool have = v->type == REDIS_REPLY_STRING && v->len > 0 && v->len <= STORE_LAST_MAX;

        if (!have && v->type != REDIS_REPLY_NIL && v->type != REDIS_REPLY_STRING) {
            store_set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, what);
            return -1;
        }
        if (fn(opaque, k, have ? v->str : NULL, have ? v->len : 0) != 0) {
            store_set_err(err, errlen, "store: %s: the caller refused a record", what);
            return -1;
        }
    }
    return 0;
}
