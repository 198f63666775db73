/*
 * store: the outbox of every sink that has one: the claim script and its
 * reply (the claims and settles themselves are asynchronous calls of the
 * worker, in async.c), its depth, and the flag that disables the sink (see
 * store.h). The engine-side worker that drives it is bridge/outbox.c.
 */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Claims atomically, so that two bridges sharing an outbox never hand the
 * same event over twice at once. KEYS: due, bodies, attempts. ARGV: now,
 * max, lease_until, any. Returns id, attempt, body triples; an id without a
 * body (written by hand, or half-removed) is dropped.
 */
const char store_claim_script[] =
    "local ids\n"
    "if ARGV[4] == '1' then\n"
    "  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)\n"
    "else\n"
    "  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "end\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local body = redis.call('HGET', KEYS[2], id)\n"
    "  if body then\n"
    "    redis.call('ZADD', KEYS[1], ARGV[3], id)\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = redis.call('HINCRBY', KEYS[3], id, 1)\n"
    "    out[#out + 1] = body\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "    redis.call('HDEL', KEYS[3], id)\n"
    "  end\n"
    "end\n"
    "return out\n";

void store_claims_free(store_claim_t *claims, size_t n)
{
    if (claims == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(claims[i].id);
        free(claims[i].json);
    }
    free(claims);
}

static char *dup_bytes(const char *s, size_t len)
{
    char *d = malloc(len + 1);

    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

/* Turns the claim script's reply into claims; -1 on a reply we did not write. */
int store_read_claims(const store_t *st, const redisReply *r, store_claim_t **out, size_t *n,
                      char *err, size_t errlen)
{
    size_t count;
    store_claim_t *c;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 3 != 0) {
        store_set_err(err, errlen, "redis %s: outbox claim: unexpected reply", st->endpoint);
        return -1;
    }
    count = r->elements / 3;
    c = calloc(count ? count : 1, sizeof *c);
    if (c == NULL) {
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        const redisReply *id = r->element[3 * i], *att = r->element[3 * i + 1],
                         *body = r->element[3 * i + 2];

        if (id->type != REDIS_REPLY_STRING || att->type != REDIS_REPLY_INTEGER ||
            body->type != REDIS_REPLY_STRING || att->integer < 1 || id->len > DIFF_ID_MAX) {
            store_claims_free(c, i);
            store_set_err(err, errlen, "redis %s: outbox claim: unexpected reply", st->endpoint);
            return -1;
        }
        c[i].id = dup_bytes(id->str, id->len);
        c[i].json = dup_bytes(body->str, body->len);
        c[i].len = body->len;
        c[i].attempt = att->integer > UINT_MAX ? UINT_MAX : (unsigned)att->integer;
        if (c[i].id == NULL || c[i].json == NULL) {
            store_claims_free(c, i + 1);
            store_set_err(err, errlen, "store: out of memory");
            return -1;
        }
    }
    *out = c;
    *n = count;
    return 0;
}

int store_sink_disabled(store_t *st, const char *sink, bool *disabled, char *why, size_t whylen,
                        char *err, size_t errlen)
{
    char off[STORE_KEY_MAX];
    const char *argv[2] = {"GET", off};
    size_t argvlen[2] = {3, 0};
    redisReply *r;

    *disabled = false;
    if (store_make_key(st, "ob", sink, ":off", off, err, errlen) != 0)
        return -1;
    argvlen[1] = strlen(off);
    if (store_ensure_connected(st, err, errlen) != 0)
        return -1;
    r = store_run_command(st, 2, argv, argvlen, "GET", err, errlen);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_STRING) {
        *disabled = true;
        if (why != NULL && whylen > 0)
            store_printable(r->str, r->len, why, whylen);
    }
    freeReplyObject(r);
    return 0;
}

int store_sink_set_disabled(store_t *st, const char *sink, const char *why, char *err,
                            size_t errlen)
{
    char off[STORE_KEY_MAX];
    const char *argv[3] = {why ? "SET" : "DEL", off, why};
    size_t argvlen[3];
    redisReply *r;

    if (store_make_key(st, "ob", sink, ":off", off, err, errlen) != 0)
        return -1;
    for (int i = 0; i < (why ? 3 : 2); i++)
        argvlen[i] = strlen(argv[i]);
    if (store_ensure_connected(st, err, errlen) != 0)
        return -1;
    r = store_run_command(st, why ? 3 : 2, argv, argvlen, argv[0], err, errlen);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int store_outbox_count(store_t *st, const char *sink, size_t *n, char *err, size_t errlen)
{
    char body[STORE_KEY_MAX];

    if (store_make_key(st, "ob", sink, "", body, err, errlen) != 0)
        return -1;
    return store_run_count(st, "HLEN", body, n, err, errlen);
}
