/*
 * store: what `session-bridge status` reads of each source (see store.h),
 * on the blocking connection. Reads only: the same answer from any
 * replica, and nothing a running daemon could notice.
 *
 * Each value is read with a bound of its own: strings by GETRANGE (a lease
 * value, a replica's record), hashes by HMGET of the fields we write, so
 * that a key another writer filled does not make us read all of it.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Commands per source in the first round trip: meta, lease, its TTL, the last poll. */
#define STATUS_CMDS 4
/* And in the second: the records of the lease holder and of the last poll's writer. */
#define STATUS_WHO_CMDS 2

/* A decimal field of an HMGET reply, or 0 when absent or not one. */
static uint64_t field_u64(const redisReply *r)
{
    uint64_t v = 0;

    if (r == NULL || r->type != REDIS_REPLY_STRING || redis_parse_u64(r->str, r->len, &v) != 0)
        return 0;
    return v;
}

/* A string field of a reply, printable into out; "" when absent. */
static void field_text(const redisReply *r, char *out, size_t outlen)
{
    out[0] = '\0';
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        store_printable(r->str, r->len, out, outlen);
}

/* Parses a replica's record (GETRANGE reply) into *info; unknown when it is not one. */
static void replica_parse(const redisReply *r, store_replica_info_t *info)
{
    cJSON *o;
    const cJSON *host, *pid, *version, *started;

    memset(info, 0, sizeof *info);
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0 ||
        r->len >= STORE_REPLICA_RECORD_MAX)
        return;
    o = cJSON_ParseWithLength(r->str, r->len);
    host = cJSON_GetObjectItemCaseSensitive(o, "host");
    pid = cJSON_GetObjectItemCaseSensitive(o, "pid");
    version = cJSON_GetObjectItemCaseSensitive(o, "version");
    started = cJSON_GetObjectItemCaseSensitive(o, "started_at");
    if (cJSON_IsString(host) && cJSON_IsNumber(pid)) {
        info->known = true;
        store_printable(host->valuestring, strlen(host->valuestring), info->host,
                        sizeof info->host);
        info->pid = (long)pid->valuedouble;
        if (cJSON_IsString(version))
            store_printable(version->valuestring, strlen(version->valuestring), info->version,
                            sizeof info->version);
        if (cJSON_IsNumber(started))
            info->started_ms = (int64_t)started->valuedouble;
    }
    cJSON_Delete(o);
}

static int reply_kind(const redisReply *r, int type, size_t elements)
{
    return r != NULL && r->type == type && (type != REDIS_REPLY_ARRAY || r->elements == elements);
}

/* Queues the first round trip's commands for source name. */
static int queue_source(store_t *st, const char *name, char *err, size_t errlen)
{
    char meta[STORE_KEY_MAX], lease[STORE_KEY_MAX], poll[STORE_KEY_MAX], holder_end[16];

    if (store_make_key(st, "meta", name, "", meta, err, errlen) != 0 ||
        store_make_key(st, "lease", name, "", lease, err, errlen) != 0 ||
        store_make_key(st, "poll", name, "", poll, err, errlen) != 0)
        return -1;
    snprintf(holder_end, sizeof holder_end, "%d", STORE_HOLDER_MAX - 1);
    const char *c[STATUS_CMDS][10] = {
        {"HMGET", meta, "cycle", "committed_at", "sessions", NULL},
        {"GETRANGE", lease, "0", holder_end, NULL},
        {"PTTL", lease, NULL},
        {"HMGET", poll, "at", "outcome", "error", "events", "pages", "replica", NULL},
    };
    for (size_t i = 0; i < STATUS_CMDS; i++) {
        size_t lens[10];
        int argc = 0;
        for (; c[i][argc] != NULL; argc++)
            lens[argc] = strlen(c[i][argc]);
        if (store_append_command(st, argc, c[i], lens, c[i][0], err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Takes the replies of queue_source() into *out; -1 on a reply of the wrong shape. */
static int take_source(redisReply *const r[STATUS_CMDS], store_source_status_t *out)
{
    if (!reply_kind(r[0], REDIS_REPLY_ARRAY, 3) || !reply_kind(r[1], REDIS_REPLY_STRING, 0) ||
        !reply_kind(r[2], REDIS_REPLY_INTEGER, 0) || !reply_kind(r[3], REDIS_REPLY_ARRAY, 6))
        return -1;
    const redisReply *const *meta = (const redisReply *const *)r[0]->element;
    const redisReply *const *poll = (const redisReply *const *)r[3]->element;

    out->committed = meta[0]->type == REDIS_REPLY_STRING;
    out->cycle = field_u64(meta[0]);
    out->committed_ms = (int64_t)field_u64(meta[1]);
    out->sessions = (size_t)field_u64(meta[2]);
    field_text(r[1], out->holder, sizeof out->holder);
    /* PTTL: -2 no key, -1 no TTL (not one of ours) */
    out->lease_ttl_ms = out->holder[0] ? r[2]->integer : -1;
    out->polled = poll[1]->type == REDIS_REPLY_STRING;
    out->poll_ms = (int64_t)field_u64(poll[0]);
    out->poll_ok = poll[1]->type == REDIS_REPLY_STRING && poll[1]->len == 2 &&
                   memcmp(poll[1]->str, "ok", 2) == 0;
    field_text(poll[2], out->poll_error, sizeof out->poll_error);
    out->poll_events = (size_t)field_u64(poll[3]);
    out->poll_pages = (size_t)field_u64(poll[4]);
    field_text(poll[5], out->poll_replica, sizeof out->poll_replica);
    return 0;
}

/* Queues GETRANGE of replica id's record; an id that cannot be a key gets a PING. */
static int queue_replica(store_t *st, const char *id, char *err, size_t errlen)
{
    char key[STORE_KEY_MAX], end[16];
    const char *ping[1] = {"PING"};
    size_t ping_len[1] = {4};

    if (id[0] == '\0' || store_make_key(st, "replica", id, "", key, NULL, 0) != 0)
        return store_append_command(st, 1, ping, ping_len, "PING", err, errlen);
    snprintf(end, sizeof end, "%d", STORE_REPLICA_RECORD_MAX - 1);
    const char *argv[4] = {"GETRANGE", key, "0", end};
    size_t lens[4] = {8, strlen(key), 1, strlen(end)};
    return store_append_command(st, 4, argv, lens, "GETRANGE", err, errlen);
}

/* Reads k replies into r (NULL on a failure, the rest read to stay in step). */
static int read_replies(store_t *st, redisReply **r, size_t k, char *err, size_t errlen)
{
    int rc = 0;

    for (size_t i = 0; i < k; i++) {
        r[i] = st->ctx != NULL ? store_read_reply(st, "status", err, errlen) : NULL;
        if (r[i] == NULL)
            rc = -1; /* connection dropped: the remaining replies are gone too */
        else if (r[i]->type == REDIS_REPLY_ERROR) {
            if (rc == 0)
                store_set_err(err, errlen, "redis %s: status: %.*s", st->endpoint, (int)r[i]->len,
                              r[i]->str);
            st->errors++;
            rc = -1;
        }
    }
    return rc;
}

static void free_replies(redisReply **r, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        if (r[i] != NULL)
            freeReplyObject(r[i]);
        r[i] = NULL;
    }
}

int store_sources_status(store_t *st, const char *const *names, size_t n,
                         store_source_status_t *out, char *err, size_t errlen)
{
    redisReply **r;
    int rc = -1;

    if (n > STORE_BATCH) {
        store_set_err(err, errlen, "store: at most %d sources per status read", STORE_BATCH);
        return -1;
    }
    if (n == 0)
        return 0;
    r = calloc(n * STATUS_CMDS, sizeof *r);
    if (r == NULL) {
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    memset(out, 0, n * sizeof *out);
    /* Every name checked before any command is queued: a failure while
     * queueing is then an I/O error, which drops the connection and what
     * it had queued. */
    for (size_t i = 0; i < n; i++) {
        char key[STORE_KEY_MAX];
        if (store_make_key(st, "poll", names[i], "", key, err, errlen) != 0)
            goto out;
    }
    if (store_ensure_connected(st, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (queue_source(st, names[i], err, errlen) != 0)
            goto out;
    }
    if (read_replies(st, r, n * STATUS_CMDS, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (take_source(r + i * STATUS_CMDS, &out[i]) != 0) {
            store_set_err(err, errlen, "redis %s: status of source %s: unexpected reply",
                          st->endpoint, names[i]);
            goto out;
        }
    }
    free_replies(r, n * STATUS_CMDS);
    /* Who the holders and the last writers are: their records, by the ids just read. */
    for (size_t i = 0; i < n; i++) {
        if (queue_replica(st, out[i].holder, err, errlen) != 0 ||
            queue_replica(st, out[i].poll_replica, err, errlen) != 0)
            goto out;
    }
    if (read_replies(st, r, n * STATUS_WHO_CMDS, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        replica_parse(r[i * STATUS_WHO_CMDS], &out[i].holder_info);
        replica_parse(r[i * STATUS_WHO_CMDS + 1], &out[i].poll_replica_info);
    }
    rc = 0;
out:
    free_replies(r, n * STATUS_CMDS);
    free(r);
    return rc;
}

/*
 * The SCAN pattern of P:meta:*, with the glob characters a prefix may hold
 * (it only excludes spaces and control characters) escaped.
 */
static void meta_pattern(const store_t *st, char *out, size_t outlen)
{
    size_t o = 0;

    for (const char *p = st->prefix; *p && o + 2 < outlen; p++) {
        if (strchr("*?[]\\", *p))
            out[o++] = '\\';
        out[o++] = *p;
    }
    snprintf(out + o, outlen - o, ":meta:*");
}

int store_scan_sources(store_t *st, store_name_fn fn, void *opaque, char *err, size_t errlen)
{
    char cursor[STORE_U64_DIGITS + 1] = "0", count[16], pattern[2 * STORE_PREFIX_MAX + 8];
    size_t skip = strlen(st->prefix) + strlen(":meta:");

    meta_pattern(st, pattern, sizeof pattern);
    snprintf(count, sizeof count, "%d", STORE_BATCH);
    for (;;) {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", count};
        size_t lens[6];
        for (int i = 0; i < 6; i++)
            lens[i] = strlen(argv[i]);
        if (store_ensure_connected(st, err, errlen) != 0)
            return -1;
        redisReply *r = store_run_command(st, 6, argv, lens, "SCAN", err, errlen);
        uint64_t next;
        int stop = 0;

        if (r == NULL)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
            r->element[0]->len > STORE_U64_DIGITS ||
            redis_parse_u64(r->element[0]->str, r->element[0]->len, &next) != 0) {
            store_set_err(err, errlen, "redis %s: SCAN: unexpected reply", st->endpoint);
            freeReplyObject(r);
            return -1;
        }
        for (size_t i = 0; i < r->element[1]->elements && !stop; i++) {
            const redisReply *k = r->element[1]->element[i];
            char name[STORE_SOURCE_MAX + 1];
            size_t len;

            if (k->type != REDIS_REPLY_STRING || k->len <= skip || k->len - skip > STORE_SOURCE_MAX)
                continue;
            len = k->len - skip;
            memcpy(name, k->str + skip, len);
            name[len] = '\0';
            if (strlen(name) != len ||
                strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len)
                continue; /* not a name of ours */
            stop = fn(opaque, name);
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        freeReplyObject(r);
        if (next == 0 || stop)
            return 0;
    }
}
