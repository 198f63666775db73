/*
 * store: the lease of every source and the membership of replicas, on the
 * blocking connection (see store.h); the asynchronous calls are async.c's.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/rand.h>

#include "clock.h"

int store_new_token(char token[STORE_TOKEN_LEN])
{
    unsigned char b[16];

    if (RAND_bytes(b, (int)sizeof(b)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(token + 2 * i, 3, "%02x", b[i]);
    return 0;
}

/*
 * Renews (PEXPIRE) or releases (DEL) the lease only while it holds our
 * token. The renewal answers -1 when nobody holds it, 0 when another
 * replica does.
 */
const char store_renew_script[] = "local v = redis.call('GET', KEYS[1])\n"
                                  "if v == ARGV[1] then\n"
                                  "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                  "end\n"
                                  "if v == false then return -1 end\n"
                                  "return 0\n";
const char store_release_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                    "  return redis.call('DEL', KEYS[1])\n"
                                    "end\n"
                                    "return 0\n";

/* Runs a lease script; *result receives its integer reply. */
static int lease_script(store_t *st, const char *script, const char *source, const char *token,
                        int64_t ttl_ms, long long *result, char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX], ttl[24];
    const char *argv[6] = {"EVAL", script, "1", lease, token, ttl};
    size_t argvlen[6];
    redisReply *r;
    int rc = 0;

    if (store_make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        store_ensure_connected(st, err, errlen) != 0)
        return -1;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    r = store_run_command(st, 6, argv, argvlen, "lease script", err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER) {
        store_set_err(err, errlen, "redis %s: lease script: unexpected reply", st->endpoint);
        rc = -1;
    } else {
        *result = r->integer;
    }
    freeReplyObject(r);
    return rc;
}

store_lease_t store_lease_renew(store_t *st, const char *source, const char *token, int64_t ttl_ms,
                                char *err, size_t errlen)
{
    long long ok = 0;

    if (lease_script(st, store_renew_script, source, token, ttl_ms, &ok, err, errlen) != 0)
        return STORE_LEASE_ERROR;
    return ok == 1 ? STORE_LEASE_HELD : ok < 0 ? STORE_LEASE_GONE : STORE_LEASE_OTHER;
}

store_lease_t store_lease_acquire(store_t *st, const char *source, const char *token,
                                  int64_t ttl_ms, char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX], ttl[24];
    const char *argv[6] = {"SET", lease, token, "NX", "PX", ttl};
    size_t argvlen[6];
    redisReply *r;
    store_lease_t got;

    if (store_make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        store_ensure_connected(st, err, errlen) != 0)
        return STORE_LEASE_ERROR;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    r = store_run_command(st, 6, argv, argvlen, "SET lease", err, errlen);
    if (r == NULL)
        return STORE_LEASE_ERROR;
    got = r->type == REDIS_REPLY_STATUS ? STORE_LEASE_HELD : STORE_LEASE_OTHER;
    freeReplyObject(r);
    /* Not set: it may be ours already (a renewal that looked failed). Gone
     * by now: it expired in between; the caller tries again later. */
    if (got == STORE_LEASE_OTHER)
        got = store_lease_renew(st, source, token, ttl_ms, err, errlen);
    return got == STORE_LEASE_GONE ? STORE_LEASE_OTHER : got;
}

int store_lease_release(store_t *st, const char *source, const char *token, char *err,
                        size_t errlen)
{
    long long n = 0;
    return lease_script(st, store_release_script, source, token, 0, &n, err, errlen);
}

/*
 * The text of P:replica:ID for who, into out (STORE_REPLICA_RECORD_MAX
 * bytes): its host and version cut to their bounds, so that it always
 * fits. 0, or -1 out of memory.
 */
int store_replica_record(const store_replica_t *who, char *out)
{
    char host[STORE_HOST_MAX + 1], version[STORE_VERSION_MAX + 1];
    cJSON *o = cJSON_CreateObject();
    int rc = -1;

    snprintf(host, sizeof host, "%s", who->host ? who->host : "");
    snprintf(version, sizeof version, "%s", who->version ? who->version : "");
    if (o != NULL && cJSON_AddStringToObject(o, "host", host) &&
        cJSON_AddNumberToObject(o, "pid", (double)who->pid) &&
        cJSON_AddStringToObject(o, "version", version) &&
        cJSON_AddNumberToObject(o, "started_at", (double)who->started_ms))
        rc = cJSON_PrintPreallocated(o, out, STORE_REPLICA_RECORD_MAX, 0) ? 0 : -1;
    cJSON_Delete(o);
    return rc;
}

int store_member_beat(store_t *st, const char *id, const store_replica_t *who, int64_t ttl_ms,
                      size_t *live, bool *was_member, char *err, size_t errlen)
{
    char members[STORE_KEY_MAX], replica[STORE_KEY_MAX], until[24], now[24], ttl[24];
    char record[STORE_REPLICA_RECORD_MAX];
    uint64_t t = (uint64_t)clock_unix_ms();
    const char *zscore[3] = {"ZSCORE", members, id};
    size_t zscore_len[3] = {6, 0, strlen(id)};
    redisReply *r;

    snprintf(members, sizeof members, "%s:members", st->prefix);
    zscore_len[1] = strlen(members);
    if (who != NULL && store_make_key(st, "replica", id, "", replica, err, errlen) != 0)
        return -1;
    if (who != NULL && store_replica_record(who, record) != 0) {
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    if (store_ensure_connected(st, err, errlen) != 0 ||
        (r = store_run_command(st, 3, zscore, zscore_len, "ZSCORE", err, errlen)) == NULL)
        return -1;
    /* The score is when the entry expires, in unix ms (hiredis NUL-terminates strings). */
    *was_member = r->type == REDIS_REPLY_STRING && strtod(r->str, NULL) >= (double)t;
    freeReplyObject(r);
    snprintf(until, sizeof until, "%" PRIu64, t + (uint64_t)ttl_ms);
    snprintf(now, sizeof now, "(%" PRIu64, t);
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *c1[] = {"ZADD", members, until, id, NULL},
               *c2[] = {"ZREMRANGEBYSCORE", members, "-inf", now, NULL},
               *c3[] = {"SET", replica, record, "PX", ttl, NULL};
    const char *const *cmds[] = {c1, c2, c3};
    if (store_run_transaction(st, cmds, who != NULL ? 3 : 2, "members", err, errlen) != 0)
        return -1;
    return store_run_count(st, "ZCARD", members, live, err, errlen);
}
