/*
 * store: the snapshot of every source, kept in Redis (see store.h).
 *
 * One blocking hiredis connection per store. Between calls no reply is ever
 * left unread, so the connection is either idle and in sync, or dropped: any
 * I/O error frees the context and the next call connects again (once; the
 * store never sleeps or loops on a server that is down, the caller's cycle
 * does that).
 *
 * The URL and the connect sequence (timeout, AUTH, SELECT) are redis_conn's,
 * shared with the redis_stream sink. The password is kept for AUTH on every
 * reconnect, is never formatted into a message, and is wiped when the store
 * is freed.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "redis_conn.h"

#define STORE_DEFAULT_PREFIX "sb"
/* Used when the options leave the timeout at 0. */
#define STORE_DEFAULT_TIMEOUT_MS 5000
/* Source names are [a-z0-9_-]{1,64} (CONTRACT §3). */
#define STORE_SOURCE_MAX 64
/* prefix ":snap:" source, and the NUL. */
#define STORE_KEY_MAX (STORE_PREFIX_MAX + 6 + STORE_SOURCE_MAX + 1)
/* The meta hash holds three fields; a much larger one was not written by us
 * and is not worth reading. */
#define STORE_META_FIELDS_MAX 64
/* A cycle, a cursor or a unix time in ms: at most 20 decimal digits. */
#define STORE_U64_DIGITS REDIS_U64_DIGITS
/* Bytes of a stored field quoted in an error (before escaping). */
#define STORE_ERR_FIELD_SHOWN 48
/* MULTI + EXEC around the delta. */
#define STORE_TX_WRAP 2
/* HSET key + STORE_BATCH field/value pairs: the widest command we send. */
#define STORE_ARGV_MAX (2 + 2 * STORE_BATCH)
/* One encoded record and its NUL. */
#define STORE_RECORD_SLOT (DIFF_RECORD_MAX + 1)

struct store {
    redis_target_t target;
    const char *endpoint; /* target.endpoint: host:port as errors show it */
    int timeout_ms;
    char prefix[STORE_PREFIX_MAX + 1];
    redisContext *ctx; /* NULL while disconnected */
    uint64_t commands; /* ours; the AUTH and SELECT of each connect are not counted */
    /* Scratch for one HSET/HDEL chunk, allocated once so that a commit does
     * not allocate per change. */
    const char **argv;
    size_t *argvlen;
    char *records; /* STORE_BATCH slots of STORE_RECORD_SLOT bytes */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/*
 * Formats bytes read from Redis for an error message: printable ASCII as is,
 * anything else as \xHH, cut after STORE_ERR_FIELD_SHOWN bytes. Stored ids
 * come from providers and may hold any byte.
 */
static void quote_bytes(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    size_t shown = len < STORE_ERR_FIELD_SHOWN ? len : STORE_ERR_FIELD_SHOWN;

    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[5];
        size_t tl;

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            tmp[0] = (char)c;
            tl = 1;
        } else {
            tl = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", c);
        }
        if (o + tl + 4 > outlen) /* room for "..." and the NUL */
            break;
        memcpy(out + o, tmp, tl);
        o += tl;
    }
    if (shown < len && o + 4 <= outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* ---- keys ---- */

static int set_prefix(store_t *st, const char *prefix, char *err, size_t errlen)
{
    size_t len = strnlen(prefix, STORE_PREFIX_MAX + 1);

    if (len == 0 || len > STORE_PREFIX_MAX) {
        set_err(err, errlen, "invalid redis prefix: must be 1..%d bytes", STORE_PREFIX_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)prefix[i];

        if (c <= 0x20 || c == 0x7f) {
            set_err(err, errlen, "invalid redis prefix: contains a space or control character");
            return -1;
        }
    }
    memcpy(st->prefix, prefix, len + 1);
    return 0;
}

/*
 * Builds P:snap:S and P:meta:S. The source name was validated by config, but
 * it ends up in keys, so its length and alphabet are checked again here.
 */
static int make_keys(const store_t *st, const char *source, char snap[STORE_KEY_MAX],
                     char meta[STORE_KEY_MAX], char *err, size_t errlen)
{
    size_t len;

    if (source == NULL) {
        set_err(err, errlen, "store: no source name");
        return -1;
    }
    len = strnlen(source, STORE_SOURCE_MAX + 1);
    if (len == 0 || len > STORE_SOURCE_MAX ||
        strspn(source, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len) {
        set_err(err, errlen, "store: invalid source name (expected [a-z0-9_-]{1,%d})",
                STORE_SOURCE_MAX);
        return -1;
    }
    snprintf(snap, STORE_KEY_MAX, "%s:snap:%s", st->prefix, source);
    snprintf(meta, STORE_KEY_MAX, "%s:meta:%s", st->prefix, source);
    return 0;
}

/* ---- connection ---- */

static void disconnect(store_t *st)
{
    if (st->ctx != NULL) {
        redisFree(st->ctx);
        st->ctx = NULL;
    }
}

/*
 * Says what went wrong on the connection and drops it. saved_errno is errno
 * right after the failing hiredis call (see redis_describe_error()).
 */
static void fail_connection(store_t *st, const char *what, int saved_errno, char *err,
                            size_t errlen)
{
    char why[160];

    redis_describe_error(st->ctx, saved_errno, st->timeout_ms, why, sizeof why);
    set_err(err, errlen, "redis %s: %s: %s", st->endpoint, what, why);
    disconnect(st);
}

/* Queues one command in the output buffer; nothing is sent until a reply is
 * read. On -1 the connection is dropped, which discards what was queued. */
static int append_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
                          const char *what, char *err, size_t errlen)
{
    if (redisAppendCommandArgv(st->ctx, argc, argv, argvlen) != REDIS_OK) {
        fail_connection(st, what, errno, err, errlen);
        return -1;
    }
    st->commands++;
    return 0;
}

/* The next reply, owned by the caller; NULL with the connection dropped on
 * an I/O error. Error replies are returned like any other. */
static redisReply *read_reply(store_t *st, const char *what, char *err, size_t errlen)
{
    void *reply = NULL;

    if (redisGetReply(st->ctx, &reply) != REDIS_OK || reply == NULL) {
        fail_connection(st, what, errno, err, errlen);
        if (reply != NULL)
            freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/*
 * Sends one command and returns its reply (owned by the caller). An error
 * reply is turned into -1 here: the connection stays usable.
 */
static redisReply *run_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
                               const char *what, char *err, size_t errlen)
{
    redisReply *r;

    if (append_command(st, argc, argv, argvlen, what, err, errlen) != 0)
        return NULL;
    r = read_reply(st, what, err, errlen);
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        set_err(err, errlen, "redis %s: %s: %.*s", st->endpoint, what, (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/*
 * Makes st->ctx a ready connection: one connect attempt at most. We never
 * leave a reply unread between calls, so an idle connection whose socket is
 * readable was closed by the server; noticing it before sending lets the
 * call reconnect instead of failing, without the doubt a resent EXEC would
 * carry.
 */
static int ensure_connected(store_t *st, char *err, size_t errlen)
{
    if (st->ctx != NULL && st->ctx->err == 0 && !redis_idle_closed(st->ctx))
        return 0;
    disconnect(st);
    st->ctx = redis_connect_target(&st->target, st->timeout_ms, err, errlen);
    return st->ctx != NULL ? 0 : -1;
}

/* ---- public ---- */

store_t *store_new(const store_options_t *opt, char *err, size_t errlen)
{
    store_t *st = NULL;

    if (opt == NULL) {
        set_err(err, errlen, "store: no options");
        goto err;
    }
    if (opt->timeout_ms < 0) {
        set_err(err, errlen, "store: negative timeout");
        goto err;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        set_err(err, errlen, "store: out of memory");
        goto err;
    }
    st->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : STORE_DEFAULT_TIMEOUT_MS;
    if (set_prefix(st, opt->prefix != NULL ? opt->prefix : STORE_DEFAULT_PREFIX, err, errlen) != 0)
        goto err;
    if (redis_url_parse(opt->url, &st->target, err, errlen) != 0)
        goto err;
    st->endpoint = st->target.endpoint;
    st->argv = calloc(STORE_ARGV_MAX, sizeof *st->argv);
    st->argvlen = calloc(STORE_ARGV_MAX, sizeof *st->argvlen);
    st->records = malloc((size_t)STORE_BATCH * STORE_RECORD_SLOT);
    if (st->argv == NULL || st->argvlen == NULL || st->records == NULL) {
        set_err(err, errlen, "store: out of memory");
        goto err;
    }
    /* A server that is down now is not an error: the first call reconnects
     * and reports it. */
    (void)ensure_connected(st, NULL, 0);
    return st;

err:
    store_free(st);
    return NULL;
}

void store_free(store_t *st)
{
    if (st == NULL)
        return;
    disconnect(st);
    redis_target_clear(&st->target);
    free(st->argv);
    free(st->argvlen);
    free(st->records);
    free(st);
}

int store_ping(store_t *st, char *err, size_t errlen)
{
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    redisReply *r;
    int rc = 0;

    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    r = run_command(st, 1, argv, argvlen, "PING", err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_STATUS || r->len != 4 || memcmp(r->str, "PONG", 4) != 0) {
        set_err(err, errlen, "redis %s: PING: unexpected reply", st->endpoint);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* Reads the meta hash: *exists and *cycle. */
static int load_meta(store_t *st, const char *meta, bool *exists, uint64_t *cycle, char *err,
                     size_t errlen)
{
    const char *argv[2] = {"HGETALL", meta};
    size_t argvlen[2] = {7, strlen(meta)};
    char what[8 + STORE_KEY_MAX];
    redisReply *r;
    bool have_cycle = false;
    int rc = -1;

    snprintf(what, sizeof what, "HGETALL %s", meta);
    r = run_command(st, 2, argv, argvlen, what, err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0 ||
        r->elements > 2 * STORE_META_FIELDS_MAX) {
        set_err(err, errlen, "redis %s: %s: not a snapshot meta hash", st->endpoint, meta);
        goto out;
    }
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, meta);
            goto out;
        }
        if (f->len == 5 && memcmp(f->str, "cycle", 5) == 0) {
            if (redis_parse_u64(v->str, v->len, cycle) != 0) {
                set_err(err, errlen, "redis %s: %s field \"cycle\": not a decimal cycle number",
                        st->endpoint, meta);
                goto out;
            }
            have_cycle = true;
        }
    }
    *exists = r->elements > 0;
    if (*exists && !have_cycle) {
        set_err(err, errlen, "redis %s: %s: no field \"cycle\"", st->endpoint, meta);
        goto out;
    }
    rc = 0;
out:
    freeReplyObject(r);
    return rc;
}

/* Checks and decodes one stored field/value pair into ix. */
static int load_pair(store_t *st, const char *snap, const redisReply *f, const redisReply *v,
                     diff_index_t *ix, char *err, size_t errlen)
{
    char status[DIFF_STATUS_MAX + 1];
    char shown[4 * STORE_ERR_FIELD_SHOWN + 4];
    diff_record_t rec;
    const char *why = NULL;

    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
        set_err(err, errlen, "redis %s: HSCAN %s: unexpected reply", st->endpoint, snap);
        return -1;
    }
    quote_bytes(f->str, f->len, shown, sizeof shown);
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
        set_err(err, errlen, "redis %s: %s field \"%s\": %s", st->endpoint, snap, shown, why);
        return -1;
    }
    return 0;
}

/*
 * HSCANs the snapshot hash into ix. HSCAN may return a field twice; putting
 * it again replaces it with the same value.
 */
static int load_snapshot(store_t *st, const char *snap, diff_index_t *ix, char *err, size_t errlen)
{
    char cursor[STORE_U64_DIGITS + 1] = "0";
    char count[16];
    const char *argv[5] = {"HSCAN", snap, cursor, "COUNT", count};
    size_t argvlen[5] = {5, strlen(snap), 1, 5, 0};

    char what[6 + STORE_KEY_MAX];

    snprintf(what, sizeof what, "HSCAN %s", snap);
    argvlen[4] = (size_t)snprintf(count, sizeof count, "%d", STORE_BATCH);
    for (;;) {
        redisReply *r = run_command(st, 5, argv, argvlen, what, err, errlen);
        const redisReply *cur, *items;
        uint64_t next;

        if (r == NULL)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
            r->element[1]->elements % 2 != 0 ||
            redis_parse_u64(r->element[0]->str, r->element[0]->len, &next) != 0) {
            set_err(err, errlen, "redis %s: HSCAN %s: unexpected reply", st->endpoint, snap);
            freeReplyObject(r);
            return -1;
        }
        cur = r->element[0];
        items = r->element[1];
        for (size_t i = 0; i < items->elements; i += 2) {
            if (load_pair(st, snap, items->element[i], items->element[i + 1], ix, err, errlen) !=
                0) {
                freeReplyObject(r);
                return -1;
            }
        }
        memcpy(cursor, cur->str, cur->len);
        argvlen[2] = cur->len;
        freeReplyObject(r);
        if (next == 0)
            return 0;
    }
}

int store_load(store_t *st, const char *source, diff_index_t *ix, bool *exists, uint64_t *cycle,
               char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];

    *exists = false;
    *cycle = 0;
    diff_index_clear(ix);
    if (make_keys(st, source, snap, meta, err, errlen) != 0)
        return -1;
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    /*
     * The snapshot hash is scanned even without meta: the index must mirror
     * what is stored, since later commits only write deltas on top of it.
     */
    if (load_meta(st, meta, exists, cycle, err, errlen) != 0 ||
        load_snapshot(st, snap, ix, err, errlen) != 0) {
        diff_index_clear(ix);
        *exists = false;
        *cycle = 0;
        return -1;
    }
    return 0;
}

/* Rejects a delta we could not write whole before anything is queued. */
static int check_changes(const diff_change_t *changes, size_t n, char *err, size_t errlen)
{
    char buf[STORE_RECORD_SLOT], status[DIFF_STATUS_MAX + 1];
    diff_record_t back;

    for (size_t i = 0; i < n; i++) {
        const diff_change_t *ch = &changes[i];
        size_t len;
        int enc;

        if (ch->session_id == NULL) {
            set_err(err, errlen, "store: change %zu has no session id", i);
            return -1;
        }
        len = strnlen(ch->session_id, DIFF_ID_MAX + 1);
        if (len == 0 || len > DIFF_ID_MAX) {
            set_err(err, errlen, "store: change %zu: session id empty or longer than %d bytes", i,
                    DIFF_ID_MAX);
            return -1;
        }
        if (ch->removed)
            continue;
        /* diff_record_encode() takes a NULL status for "". */
        if (ch->rec.status != NULL &&
            strnlen(ch->rec.status, DIFF_STATUS_MAX + 1) > DIFF_STATUS_MAX) {
            set_err(err, errlen, "store: change %zu: status longer than %d bytes", i,
                    DIFF_STATUS_MAX);
            return -1;
        }
        enc = diff_record_encode(&ch->rec, buf, sizeof buf);
        /* What store_load() would reject must not be written: it would make
         * the source unloadable until someone repairs the hash by hand. */
        if (enc < 0 || diff_record_decode(buf, (size_t)enc, &back, status, sizeof status) != 0) {
            set_err(err, errlen, "store: change %zu: record does not encode to a loadable value",
                    i);
            return -1;
        }
    }
    return 0;
}

/*
 * Queues HSET (upserts) or HDEL (removals) of every change of that kind, at
 * most STORE_BATCH fields per command. A delta names each session at most
 * once, so splitting it by kind keeps its meaning.
 */
static int append_chunks(store_t *st, const char *snap, const diff_change_t *changes, size_t n,
                         bool removed, char *err, size_t errlen)
{
    const int per_field = removed ? 1 : 2;
    int argc = 2;

    st->argv[0] = removed ? "HDEL" : "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = snap;
    st->argvlen[1] = strlen(snap);
    for (size_t i = 0; i < n; i++) {
        const diff_change_t *ch = &changes[i];

        if (ch->removed != removed)
            continue;
        st->argv[argc] = ch->session_id;
        st->argvlen[argc] = strlen(ch->session_id);
        if (!removed) {
            char *slot = st->records + (size_t)(argc - 2) / 2 * STORE_RECORD_SLOT;
            /* check_changes() encoded it once already: cannot fail here. */
            int len = diff_record_encode(&ch->rec, slot, STORE_RECORD_SLOT);

            st->argv[argc + 1] = slot;
            st->argvlen[argc + 1] = (size_t)len;
        }
        argc += per_field;
        if ((argc - 2) / per_field == STORE_BATCH) {
            if (append_command(st, argc, st->argv, st->argvlen, st->argv[0], err, errlen) != 0)
                return -1;
            argc = 2;
        }
    }
    if (argc > 2)
        return append_command(st, argc, st->argv, st->argvlen, st->argv[0], err, errlen);
    return 0;
}

static uint64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Reads the replies of a queued transaction of `sent` commands. Every reply
 * is read even after an error so that the connection stays in sync.
 */
static int read_transaction(store_t *st, size_t sent, const char *snap, char *err, size_t errlen)
{
    bool failed = false;

    for (size_t i = 0; i < sent; i++) {
        bool last = i + 1 == sent;
        redisReply *r = read_reply(st, "commit", err, errlen);

        if (r == NULL)
            return -1; /* connection dropped */
        if (r->type == REDIS_REPLY_ERROR) {
            if (!failed)
                set_err(err, errlen, "redis %s: commit %s: %.*s", st->endpoint, snap, (int)r->len,
                        r->str);
            failed = true;
        } else if (last && r->type == REDIS_REPLY_NIL) {
            set_err(err, errlen, "redis %s: commit %s: transaction aborted", st->endpoint, snap);
            failed = true;
        } else if (last && r->type == REDIS_REPLY_ARRAY && !failed) {
            /* Redis does not roll back: a command that failed inside EXEC
             * (WRONGTYPE) leaves the others applied. Reported as a failure;
             * the caller reloads before its next cycle. */
            if (r->elements != sent - STORE_TX_WRAP) {
                set_err(err, errlen, "redis %s: commit %s: EXEC returned %zu replies", st->endpoint,
                        snap, r->elements);
                failed = true;
            }
            for (size_t j = 0; j < r->elements && !failed; j++) {
                if (r->element[j]->type == REDIS_REPLY_ERROR) {
                    set_err(err, errlen, "redis %s: commit %s: %.*s", st->endpoint, snap,
                            (int)r->element[j]->len, r->element[j]->str);
                    failed = true;
                }
            }
        } else if (last && r->type != REDIS_REPLY_ARRAY && !failed) {
            set_err(err, errlen, "redis %s: commit %s: unexpected EXEC reply", st->endpoint, snap);
            failed = true;
        }
        freeReplyObject(r);
    }
    return failed ? -1 : 0;
}

int store_commit(store_t *st, const char *source, const diff_change_t *changes, size_t n,
                 size_t sessions_after, uint64_t *cycle, char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];
    char next_s[STORE_U64_DIGITS + 1], at_s[STORE_U64_DIGITS + 1], count_s[STORE_U64_DIGITS + 1];
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t multi_len[1] = {5}, exec_len[1] = {4};
    const char *meta_argv[8] = {"HSET",         NULL, "cycle",    next_s,
                                "committed_at", at_s, "sessions", count_s};
    size_t meta_len[8] = {4, 0, 5, 0, 12, 0, 8, 0};
    uint64_t before, next;

    if (make_keys(st, source, snap, meta, err, errlen) != 0)
        return -1;
    if (n > 0 && changes == NULL) {
        set_err(err, errlen, "store: %zu changes but no array", n);
        return -1;
    }
    if (*cycle == UINT64_MAX) {
        set_err(err, errlen, "store: cycle number exhausted");
        return -1;
    }
    if (check_changes(changes, n, err, errlen) != 0)
        return -1;
    if (ensure_connected(st, err, errlen) != 0)
        return -1;

    next = *cycle + 1;
    meta_argv[1] = meta;
    meta_len[1] = strlen(meta);
    meta_len[3] = (size_t)snprintf(next_s, sizeof next_s, "%" PRIu64, next);
    meta_len[5] = (size_t)snprintf(at_s, sizeof at_s, "%" PRIu64, unix_ms());
    meta_len[7] = (size_t)snprintf(count_s, sizeof count_s, "%zu", sessions_after);

    /* Everything is queued in hiredis's buffer and written by the first
     * read: one round trip for the whole transaction. */
    before = st->commands;
    if (append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0 ||
        append_chunks(st, snap, changes, n, false, err, errlen) != 0 ||
        append_chunks(st, snap, changes, n, true, err, errlen) != 0 ||
        append_command(st, 8, meta_argv, meta_len, "HSET", err, errlen) != 0 ||
        append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0)
        return -1;
    if (read_transaction(st, (size_t)(st->commands - before), snap, err, errlen) != 0)
        return -1;
    *cycle = next;
    return 0;
}

uint64_t store_commands_sent(const store_t *st)
{
    return st->commands;
}
