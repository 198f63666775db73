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
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/rand.h>

#include "backoff.h"
#include "clock.h"
#include "redis_conn.h"

#define STORE_DEFAULT_PREFIX "sb"
/* Used when the options leave the timeout at 0. */
#define STORE_DEFAULT_TIMEOUT_MS 5000
/* Source names are [a-z0-9_-]{1,64} (CONTRACT §3). */
#define STORE_SOURCE_MAX 64
/* prefix ":snap:" source, or prefix ":ob:" sink ":due", and the NUL. */
#define STORE_KEY_MAX (STORE_PREFIX_MAX + 6 + STORE_SOURCE_MAX + 4 + 1)
/* The meta hash holds three fields; a much larger one was not written by us
 * and is not worth reading. */
#define STORE_META_FIELDS_MAX 64
/* A cycle, a cursor or a unix time in ms: at most 20 decimal digits. */
#define STORE_U64_DIGITS REDIS_U64_DIGITS
/* Bytes of a stored field quoted in an error (before escaping). */
#define STORE_ERR_FIELD_SHOWN 48
/* MULTI + EXEC around the delta. */
#define STORE_TX_WRAP 2
/*
 * Queued commands are written out once hiredis's buffer holds this much,
 * instead of all at the first read: a transaction of a million changes
 * formats to ~85 MiB, which the buffer would otherwise hold at once (and
 * grow to by doubling). Redis queues what arrives until EXEC either way.
 */
#define STORE_FLUSH_BYTES (1024 * 1024)
/*
 * The slowest rate at which Redis is expected to apply a queued transaction
 * and log it (AOF with appendfsync always writes the whole EXEC before it
 * answers): the EXEC reply of a large transaction is awaited for the
 * command timeout plus its bytes at this rate. A first emit cycle of a
 * million sessions with an outbox sink queues ~1.7 GiB, which Redis took
 * ~45 s to apply on the 2-core benchmark machine (38 MiB/s); at the plain
 * 5 s timeout the commit was reported failed although it applied. Slower
 * than this, Redis is in trouble and the commit counts as failed (it may
 * still apply: the caller reloads before its next cycle).
 */
#define STORE_EXEC_MIN_BYTES_PER_S (8u * 1024u * 1024u)
/* HSET key + STORE_BATCH field/value pairs: the widest command we send. */
#define STORE_ARGV_MAX (2 + 2 * STORE_BATCH)
/* One encoded record and its NUL. */
#define STORE_RECORD_SLOT (DIFF_RECORD_MAX + 1)
/*
 * After a failed connect, calls fail at once for this long instead of each
 * waiting for its own connect timeout: with a server that does not answer
 * (a partition), a loop making many calls would otherwise stall for a
 * timeout per call, long enough to fail a liveness probe.
 */
#define STORE_RECONNECT_PAUSE_S 1.0
static const backoff_policy_t store_reconnect = {
    .base_s = STORE_RECONNECT_PAUSE_S, .factor = 1, .jitter_min = 1, .jitter_max = 1};
/* Room for the reason of a failed connect. */
#define STORE_ERR_MAX 256

struct store {
    redis_target_t target;
    const char *endpoint; /* target.endpoint: host:port as errors show it */
    int timeout_ms;
    char prefix[STORE_PREFIX_MAX + 1];
    redisContext *ctx;     /* NULL while disconnected */
    uint64_t commands;     /* ours; the AUTH and SELECT of each connect are not counted */
    uint64_t bytes_queued; /* of those commands, as formatted for the wire */
    uint64_t errors;       /* connections lost or refused, error replies */
    backoff_t reconnect;   /* after failed connects; monotonic s */
    char connect_error[STORE_ERR_MAX]; /* its reason, repeated during the pause */
    /* Scratch for one HSET/HDEL chunk, allocated once so that a commit does
     * not allocate per change. */
    const char **argv;
    size_t *argvlen;
    char *records;           /* STORE_BATCH slots of STORE_RECORD_SLOT bytes */
    store_letter_t *letters; /* one window of letters (STORE_BATCH) */
    /* The last records of one HSET chunk, copied: a cycle hands each one
     * out only until it reads the next. */
    char *last_buf;
    size_t last_cap;
    /* The asynchronous connection on the daemon's loop (store_attach()). */
    loop_t *loop;              /* NULL until attached */
    redisAsyncContext *actx;   /* NULL while disconnected */
    sink_timer_t *awatch;      /* armed while replies are awaited */
    unsigned ainflight;        /* replies awaited on actx */
    backoff_t areconnect;      /* after failed async connects */
    char afail[STORE_ERR_MAX]; /* why actx is being dropped, for its pending replies */
    char aconnect_error[STORE_ERR_MAX];
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
 * Writes "<prefix>:<kind>:<name><suffix>" into key. Source and sink names
 * were validated by config, but they end up in keys, so their length and
 * alphabet are checked again here.
 */
static int make_key(const store_t *st, const char *kind, const char *name, const char *suffix,
                    char key[STORE_KEY_MAX], char *err, size_t errlen)
{
    /* Snapshots and leases are per source, outboxes and dead letters per sink. */
    const char *noun = strcmp(kind, "ob") == 0 || strcmp(kind, "dlq") == 0 ? "sink" : "source";
    size_t len;

    if (name == NULL) {
        set_err(err, errlen, "store: no %s name", noun);
        return -1;
    }
    len = strnlen(name, STORE_SOURCE_MAX + 1);
    if (len == 0 || len > STORE_SOURCE_MAX ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len) {
        set_err(err, errlen, "store: invalid %s name (expected [a-z0-9_-]{1,%d})", noun,
                STORE_SOURCE_MAX);
        return -1;
    }
    snprintf(key, STORE_KEY_MAX, "%s:%s:%s%s", st->prefix, kind, name, suffix);
    return 0;
}

/* Builds P:snap:S and P:meta:S. */
static int make_keys(const store_t *st, const char *source, char snap[STORE_KEY_MAX],
                     char meta[STORE_KEY_MAX], char *err, size_t errlen)
{
    if (make_key(st, "snap", source, "", snap, err, errlen) != 0)
        return -1;
    return make_key(st, "meta", source, "", meta, err, errlen);
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
    st->errors++;
    disconnect(st);
}

/* Queues one command in the output buffer; it is sent when a reply is read
 * or the buffer passes STORE_FLUSH_BYTES. On -1 the connection is dropped,
 * which discards what was queued (and Redis a MULTI it did not see end). */
static int append_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
                          const char *what, char *err, size_t errlen)
{
    size_t had = sdslen(st->ctx->obuf);

    if (redisAppendCommandArgv(st->ctx, argc, argv, argvlen) != REDIS_OK) {
        fail_connection(st, what, errno, err, errlen);
        return -1;
    }
    st->commands++;
    st->bytes_queued += sdslen(st->ctx->obuf) - had;
    int done = 0;
    while (sdslen(st->ctx->obuf) >= STORE_FLUSH_BYTES && !done) {
        if (redisBufferWrite(st->ctx, &done) != REDIS_OK) {
            fail_connection(st, what, errno, err, errlen);
            return -1;
        }
    }
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
        st->errors++;
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
    double now = clock_mono_s();
    if (!backoff_ready(&st->reconnect, now)) {
        set_err(err, errlen, "%s", st->connect_error);
        st->errors++;
        return -1;
    }
    st->ctx = redis_connect_target(&st->target, st->timeout_ms, st->connect_error,
                                   sizeof(st->connect_error));
    if (st->ctx == NULL) {
        st->errors++;
        backoff_failed(&st->reconnect, now, 0);
        set_err(err, errlen, "%s", st->connect_error);
        return -1;
    }
    backoff_reset(&st->reconnect);
    return 0;
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
    st->reconnect = backoff_init(&store_reconnect);
    st->areconnect = backoff_init(&store_reconnect);
    if (set_prefix(st, opt->prefix != NULL ? opt->prefix : STORE_DEFAULT_PREFIX, err, errlen) != 0)
        goto err;
    if (redis_url_parse(opt->url, &st->target, err, errlen) != 0)
        goto err;
    st->endpoint = st->target.endpoint;
    st->argv = calloc(STORE_ARGV_MAX, sizeof *st->argv);
    st->argvlen = calloc(STORE_ARGV_MAX, sizeof *st->argvlen);
    st->records = malloc((size_t)STORE_BATCH * STORE_RECORD_SLOT);
    st->letters = calloc(STORE_BATCH, sizeof *st->letters);
    if (st->argv == NULL || st->argvlen == NULL || st->records == NULL || st->letters == NULL) {
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
    store_detach(st);
    disconnect(st);
    redis_target_clear(&st->target);
    free(st->argv);
    free(st->argvlen);
    free(st->records);
    free(st->letters);
    free(st->last_buf);
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

/* Called per field/value pair of a scanned hash; 0 to go on. */
typedef int (*pair_fn)(store_t *st, const char *key, const redisReply *f, const redisReply *v,
                       void *opaque, char *err, size_t errlen);

/* Checks and decodes one stored field/value pair into the index (opaque). */
static int load_pair(store_t *st, const char *snap, const redisReply *f, const redisReply *v,
                     void *opaque, char *err, size_t errlen)
{
    diff_index_t *ix = opaque;
    char status[DIFF_STATUS_MAX + 1];
    char shown[4 * STORE_ERR_FIELD_SHOWN + 4];
    diff_record_t rec;
    const char *why = NULL;

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
 * HSCANs the hash key, calling fn per pair. HSCAN may return a field twice
 * (the callers are idempotent: putting it again replaces it).
 */
static int scan_hash(store_t *st, const char *key, pair_fn fn, void *opaque, char *err,
                     size_t errlen)
{
    char cursor[STORE_U64_DIGITS + 1] = "0";
    char count[16];
    const char *argv[5] = {"HSCAN", key, cursor, "COUNT", count};
    size_t argvlen[5] = {5, strlen(key), 1, 5, 0};

    char what[6 + STORE_KEY_MAX];

    snprintf(what, sizeof what, "HSCAN %s", key);
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
            set_err(err, errlen, "redis %s: HSCAN %s: unexpected reply", st->endpoint, key);
            freeReplyObject(r);
            return -1;
        }
        cur = r->element[0];
        items = r->element[1];
        for (size_t i = 0; i < items->elements; i += 2) {
            const redisReply *f = items->element[i], *v = items->element[i + 1];

            if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
                set_err(err, errlen, "redis %s: HSCAN %s: unexpected reply", st->endpoint, key);
                freeReplyObject(r);
                return -1;
            }
            if (fn(st, key, f, v, opaque, err, errlen) != 0) {
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
        scan_hash(st, snap, load_pair, ix, err, errlen) != 0) {
        diff_index_clear(ix);
        *exists = false;
        *cycle = 0;
        return -1;
    }
    return 0;
}

/* Change i of delta into *buf; NULL (with err) when the reader fails. */
static const diff_change_t *delta_at(const store_delta_t *d, size_t i, diff_change_t *buf,
                                     char *err, size_t errlen)
{
    if (d->get(d->opaque, i, buf) != 0) {
        set_err(err, errlen, "store: change %zu cannot be read", i);
        return NULL;
    }
    return buf;
}

/* Rejects a delta we could not write whole before anything is queued. */
static int check_changes(const store_delta_t *d, char *err, size_t errlen)
{
    char buf[STORE_RECORD_SLOT], status[DIFF_STATUS_MAX + 1];
    diff_record_t back;

    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);
        size_t len;
        int enc;

        if (ch == NULL)
            return -1;

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
        if (ch->last != DIFF_LAST_KEEP && ch->last != DIFF_LAST_SET && ch->last != DIFF_LAST_DROP) {
            set_err(err, errlen, "store: change %zu: unknown last record operation", i);
            return -1;
        }
        if (ch->removed)
            continue;
        if (ch->last == DIFF_LAST_SET && d->last == NULL && ch->last_text == NULL) {
            set_err(err, errlen, "store: change %zu: a last record to store but no text", i);
            return -1;
        }
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
static int append_chunks(store_t *st, const char *snap, const store_delta_t *d, bool removed,
                         char *err, size_t errlen)
{
    const int per_field = removed ? 1 : 2;
    int argc = 2;

    st->argv[0] = removed ? "HDEL" : "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = snap;
    st->argvlen[1] = strlen(snap);
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);

        if (ch == NULL)
            return -1;
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

/* The text of change i's last record; -1 with err when it cannot be read. */
static int last_at(const store_delta_t *d, size_t i, const diff_change_t *ch, const char **text,
                   size_t *len, char *err, size_t errlen)
{
    if (d->last == NULL) {
        *text = ch->last_text;
        *len = ch->last_len;
    } else if (d->last(d->opaque, i, text, len) != 0) {
        *text = NULL;
    }
    if (*text == NULL || *len == 0) {
        set_err(err, errlen, "store: the last record of change %zu cannot be read", i);
        return -1;
    }
    return 0;
}

/*
 * Queues HSET P:rec:S of the changes that set a last record, in chunks of
 * at most STORE_BATCH fields and about STORE_FLUSH_BYTES of text (copied
 * into st->last_buf, which a chunk is flushed before it grows), then HDEL
 * P:rec:S of those that drop one (removals included).
 */
static int append_last(store_t *st, const char *rec, const store_delta_t *d, char *err,
                       size_t errlen)
{
    size_t used = 0;
    int argc = 2;

    st->argv[0] = "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = rec;
    st->argvlen[1] = strlen(rec);
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);
        const char *text;
        size_t len;

        if (ch == NULL)
            return -1;
        if (ch->removed || ch->last != DIFF_LAST_SET)
            continue;
        if (last_at(d, i, ch, &text, &len, err, errlen) != 0)
            return -1;
        if (argc > 2 && (used + len > st->last_cap || (argc - 2) / 2 == STORE_BATCH)) {
            if (append_command(st, argc, st->argv, st->argvlen, "HSET", err, errlen) != 0)
                return -1;
            argc = 2;
            used = 0;
        }
        if (len > st->last_cap) {
            /* nothing points into the buffer now: the chunk was flushed */
            size_t cap = len > STORE_FLUSH_BYTES ? len : STORE_FLUSH_BYTES;
            char *v = realloc(st->last_buf, cap);

            if (v == NULL) {
                set_err(err, errlen, "store: out of memory");
                return -1;
            }
            st->last_buf = v;
            st->last_cap = cap;
        }
        memcpy(st->last_buf + used, text, len);
        st->argv[argc] = ch->session_id;
        st->argvlen[argc] = strlen(ch->session_id);
        st->argv[argc + 1] = st->last_buf + used;
        st->argvlen[argc + 1] = len;
        argc += 2;
        used += len;
    }
    if (argc > 2 && append_command(st, argc, st->argv, st->argvlen, "HSET", err, errlen) != 0)
        return -1;

    argc = 2;
    st->argv[0] = "HDEL";
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);

        if (ch == NULL)
            return -1;
        if (!ch->removed && ch->last != DIFF_LAST_DROP)
            continue;
        st->argv[argc] = ch->session_id;
        st->argvlen[argc++] = strlen(ch->session_id);
        if (argc - 2 == STORE_BATCH) {
            if (append_command(st, argc, st->argv, st->argvlen, "HDEL", err, errlen) != 0)
                return -1;
            argc = 2;
        }
    }
    if (argc > 2)
        return append_command(st, argc, st->argv, st->argvlen, "HDEL", err, errlen);
    return 0;
}

/* Sets the connection's timeout to ms (a failure leaves the one it had). */
static void set_timeout(store_t *st, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};

    (void)redisSetTimeout(st->ctx, tv);
}

/* read_transaction() without the longer wait. */
static int read_transaction_replies(store_t *st, size_t sent, const char *snap, char *err,
                                    size_t errlen)
{
    bool failed = false, aborted = false;

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
            failed = aborted = true;
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
    if (failed && !aborted)
        st->errors++;
    return aborted ? -2 : failed ? -1 : 0;
}

/*
 * Reads the replies of a queued transaction of `sent` commands, tx_bytes
 * in all, each awaited for the command timeout plus tx_bytes at
 * STORE_EXEC_MIN_BYTES_PER_S (Redis answers the commands sent last, and
 * EXEC, once it has read and queued the whole transaction, then applied
 * and logged it). Every reply is read even after an error so that the
 * connection stays in sync. Returns 0, -1, or -2 when EXEC aborted (a
 * WATCHed key changed).
 */
static int read_transaction(store_t *st, size_t sent, uint64_t tx_bytes, const char *snap,
                            char *err, size_t errlen)
{
    uint64_t extra_ms = tx_bytes * 1000 / STORE_EXEC_MIN_BYTES_PER_S;
    int rc;

    if (extra_ms > 0)
        set_timeout(st, (uint64_t)st->timeout_ms + extra_ms);
    rc = read_transaction_replies(st, sent, snap, err, errlen);
    if (extra_ms > 0 && st->ctx != NULL)
        set_timeout(st, (uint64_t)st->timeout_ms);
    return rc;
}

/* Rejects letters (window l of n, the first being letter `first`) that
 * would not make valid keys or fields. */
static int check_letters(const store_t *st, const store_letter_t *l, size_t n, size_t first,
                         char *err, size_t errlen)
{
    char key[STORE_KEY_MAX];

    for (size_t i = 0; i < n; i++) {
        if (make_key(st, "ob", l[i].sink, "", key, err, errlen) != 0)
            return -1;
        if (l[i].id == NULL || l[i].id[0] == '\0' || l[i].json == NULL) {
            set_err(err, errlen, "store: letter %zu has no id or no body", first + i);
            return -1;
        }
    }
    return 0;
}

/*
 * Queues one command per run of consecutive letters for the same sink (at
 * most STORE_BATCH each): "<cmd> <kind:sink:suffix> [value] id ..." where the
 * per-letter argument pair is (id, json) for HSET and (score, id) for ZADD.
 */
static int append_letters(store_t *st, const char *cmd, const char *kind, const char *suffix,
                          const store_letter_t *l, size_t n, const char *score, char *err,
                          size_t errlen)
{
    char key[STORE_KEY_MAX];
    size_t i = 0;

    while (i < n) {
        int argc = 2;
        const char *sink = l[i].sink;

        if (make_key(st, kind, sink, suffix, key, err, errlen) != 0)
            return -1;
        st->argv[0] = cmd;
        st->argvlen[0] = strlen(cmd);
        st->argv[1] = key;
        st->argvlen[1] = strlen(key);
        for (; i < n && strcmp(l[i].sink, sink) == 0 && argc < 2 + 2 * STORE_BATCH; i++) {
            if (score != NULL) {
                st->argv[argc] = score;
                st->argvlen[argc++] = strlen(score);
                st->argv[argc] = l[i].id;
                st->argvlen[argc++] = strlen(l[i].id);
            } else {
                st->argv[argc] = l[i].id;
                st->argvlen[argc++] = strlen(l[i].id);
                st->argv[argc] = l[i].json;
                st->argvlen[argc++] = l[i].len;
            }
        }
        if (append_command(st, argc, st->argv, st->argvlen, cmd, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/*
 * Queues the letters of ls window by window: a window is read into
 * st->letters, checked and queued (hiredis formats each command into its
 * buffer, written out past STORE_FLUSH_BYTES) before the next one is read,
 * so that only one window of texts exists at a time. Outbox letters (now
 * set: their due time) go to P:ob:K and P:ob:K:due, dead letters to P:dlq:K.
 */
static int append_letter_windows(store_t *st, const store_letters_t *ls, const char *now, char *err,
                                 size_t errlen)
{
    for (size_t from = 0; from < ls->n;) {
        size_t max = ls->n - from < STORE_BATCH ? ls->n - from : STORE_BATCH, got = 0;

        if (ls->get == NULL || ls->get(ls->opaque, from, st->letters, max, &got) != 0 || got == 0 ||
            got > max) {
            set_err(err, errlen, "store: letter %zu cannot be read", from);
            return -1;
        }
        if (check_letters(st, st->letters, got, from, err, errlen) != 0)
            return -1;
        if (now == NULL
                ? append_letters(st, "HSET", "dlq", "", st->letters, got, NULL, err, errlen) != 0
                : append_letters(st, "HSET", "ob", "", st->letters, got, NULL, err, errlen) != 0 ||
                      append_letters(st, "ZADD", "ob", ":due", st->letters, got, now, err,
                                     errlen) != 0)
            return -1;
        from += got;
    }
    return 0;
}

/* Queues the outbox events (due at once) and the dead letters of extra. */
static int append_extra(store_t *st, const store_extra_t *x, char *err, size_t errlen)
{
    char now[STORE_U64_DIGITS + 1];

    if (x == NULL)
        return 0;
    snprintf(now, sizeof now, "%" PRIu64, (uint64_t)clock_unix_ms());
    if (append_letter_windows(st, &x->outbox, now, err, errlen) != 0)
        return -1;
    return append_letter_windows(st, &x->dead, NULL, err, errlen);
}

static int letters_array_get(void *opaque, size_t from, store_letter_t *out, size_t max,
                             size_t *got)
{
    const store_letter_t *l = opaque;

    /* max <= n - from; the window stays valid for the whole commit: the
     * array is the caller's */
    memcpy(out, l + from, max * sizeof *out);
    *got = max;
    return 0;
}

store_letters_t store_letters_of(const store_letter_t *letters, size_t n)
{
    /* opaque is only read (letters_array_get) */
    return (store_letters_t){
        .n = letters != NULL ? n : 0, .get = letters_array_get, .opaque = (void *)letters};
}

/* Runs a command whose reply must be a status (+OK). */
static int expect_ok(store_t *st, int argc, const char **argv, const size_t *argvlen,
                     const char *what, char *err, size_t errlen)
{
    redisReply *r = run_command(st, argc, argv, argvlen, what, err, errlen);
    int rc = 0;

    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_STATUS) {
        set_err(err, errlen, "redis %s: %s: unexpected reply type %d", st->endpoint, what, r->type);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/*
 * WATCHes the lease and the meta hash of source and checks that the lease
 * holds token and that the snapshot is at cycle base (0: no snapshot): the
 * EXEC that follows then applies only if neither changed in between.
 * Anything but OK leaves nothing WATCHed.
 */
static store_fence_t watch_fence(store_t *st, const char *source, const char *token, uint64_t base,
                                 char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX], snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];
    const char *watch[3] = {"WATCH", lease, meta}, *get[2] = {"GET", lease},
               *hget[3] = {"HGET", meta, "cycle"}, *unwatch[1] = {"UNWATCH"};
    size_t watch_len[3] = {5, 0, 0}, get_len[2] = {3, 0}, hget_len[3] = {4, 0, 5},
           unwatch_len[1] = {7};
    redisReply *owner = NULL, *at = NULL;
    store_fence_t rc = STORE_FENCE_ERROR;
    uint64_t stored = 0;

    if (make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        make_keys(st, source, snap, meta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    watch_len[1] = get_len[1] = strlen(lease);
    watch_len[2] = hget_len[1] = strlen(meta);
    if (expect_ok(st, 3, watch, watch_len, "WATCH", err, errlen) != 0)
        return STORE_FENCE_ERROR;
    /* Both questions in one round trip. */
    if (append_command(st, 2, get, get_len, "GET lease", err, errlen) != 0 ||
        append_command(st, 3, hget, hget_len, "HGET meta", err, errlen) != 0 ||
        (owner = read_reply(st, "GET lease", err, errlen)) == NULL ||
        (at = read_reply(st, "HGET meta", err, errlen)) == NULL)
        goto out; /* the connection was dropped, and the WATCH with it */
    if (owner->type == REDIS_REPLY_ERROR || at->type == REDIS_REPLY_ERROR) {
        const redisReply *e = owner->type == REDIS_REPLY_ERROR ? owner : at;
        set_err(err, errlen, "redis %s: fence of %s: %.*s", st->endpoint, source, (int)e->len,
                e->str);
        st->errors++;
    } else if (owner->type == REDIS_REPLY_NIL) {
        set_err(err, errlen, "lease of %s: nobody holds it (expired, or lost by Redis)", source);
        rc = STORE_FENCE_LEASE_GONE;
    } else if (owner->type != REDIS_REPLY_STRING || owner->len != strlen(token) ||
               memcmp(owner->str, token, owner->len) != 0) {
        set_err(err, errlen, "lease of %s: another replica holds it", source);
        rc = STORE_FENCE_LEASE_OTHER;
    } else if (at->type == REDIS_REPLY_STRING && redis_parse_u64(at->str, at->len, &stored) != 0) {
        set_err(err, errlen, "redis %s: %s field \"cycle\": not a decimal cycle number",
                st->endpoint, meta);
    } else if (stored == base) {
        rc = STORE_FENCE_OK;
    } else if (stored == 0) {
        set_err(err, errlen, "snapshot of %s: not in Redis (expected cycle %" PRIu64 ")", source,
                base);
        rc = STORE_FENCE_BASE_MISSING;
    } else {
        set_err(err, errlen,
                "snapshot of %s: at cycle %" PRIu64 " in Redis, expected %s%" PRIu64 "", source,
                stored, base ? "cycle " : "none: ", base);
        rc = STORE_FENCE_BASE_MOVED;
    }
out:
    if (owner != NULL)
        freeReplyObject(owner);
    if (at != NULL)
        freeReplyObject(at);
    if (rc != STORE_FENCE_OK && st->ctx != NULL)
        (void)expect_ok(st, 1, unwatch, unwatch_len, "UNWATCH", NULL, 0);
    return rc;
}

/*
 * After an EXEC that a WATCHed key aborted: which of the two changed (the
 * fence read again, then released), ERROR when neither still differs.
 */
static store_fence_t aborted_why(store_t *st, const char *source, const char *token, uint64_t base,
                                 char *err, size_t errlen)
{
    const char *unwatch[1] = {"UNWATCH"};
    size_t unwatch_len[1] = {7};
    store_fence_t rc = watch_fence(st, source, token, base, err, errlen);

    if (rc == STORE_FENCE_OK) {
        (void)expect_ok(st, 1, unwatch, unwatch_len, "UNWATCH", NULL, 0);
        set_err(err, errlen, "redis %s: commit of %s: transaction aborted by a concurrent write",
                st->endpoint, source);
        return STORE_FENCE_ERROR;
    }
    return rc;
}

/* Queues HSET P:meta:S cycle, committed_at and sessions; the buffers hold the numbers. */
typedef struct meta_cmd {
    char cycle[STORE_U64_DIGITS + 1], at[STORE_U64_DIGITS + 1], count[STORE_U64_DIGITS + 1];
} meta_cmd_t;

static int append_meta(store_t *st, const char *meta, uint64_t cycle, size_t sessions,
                       meta_cmd_t *m, char *err, size_t errlen)
{
    const char *argv[8] = {"HSET",         meta,  "cycle",    m->cycle,
                           "committed_at", m->at, "sessions", m->count};
    size_t len[8] = {4, strlen(meta), 5, 0, 12, 0, 8, 0};

    len[3] = (size_t)snprintf(m->cycle, sizeof m->cycle, "%" PRIu64, cycle);
    len[5] = (size_t)snprintf(m->at, sizeof m->at, "%" PRIu64, (uint64_t)clock_unix_ms());
    len[7] = (size_t)snprintf(m->count, sizeof m->count, "%zu", sessions);
    return append_command(st, 8, argv, len, "HSET", err, errlen);
}

/*
 * After a transaction failed while it was being queued (a change that
 * could not be read, a command that did not fit): MULTI and part of it may
 * sit in the output buffer or be sent already (past STORE_FLUSH_BYTES),
 * and the next command would join it. Only a new connection is in sync.
 * A failed append_command() has dropped the connection already.
 */
static void drop_half_transaction(store_t *st)
{
    if (st->ctx != NULL) {
        st->errors++;
        disconnect(st);
    }
}

static store_fence_t commit(store_t *st, const char *source, const char *token,
                            const store_delta_t *delta, size_t sessions_after,
                            const store_extra_t *extra, uint64_t *cycle, char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX], rec[STORE_KEY_MAX];
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t multi_len[1] = {5}, exec_len[1] = {4};
    meta_cmd_t m;
    uint64_t before, bytes_before;
    store_fence_t f;
    int rc;

    if (make_keys(st, source, snap, meta, err, errlen) != 0 ||
        make_key(st, "rec", source, "", rec, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (*cycle == UINT64_MAX) {
        set_err(err, errlen, "store: cycle number exhausted");
        return STORE_FENCE_ERROR;
    }
    if (check_changes(delta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (ensure_connected(st, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (token != NULL &&
        (f = watch_fence(st, source, token, *cycle, err, errlen)) != STORE_FENCE_OK)
        return f;

    /* Everything is queued in hiredis's buffer (written out past
     * STORE_FLUSH_BYTES, the rest by the first read): one round trip for
     * the whole transaction. The letters are read and checked as they are
     * queued, window by window: one that fails drops the half transaction. */
    before = st->commands;
    bytes_before = st->bytes_queued;
    if (append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0 ||
        append_chunks(st, snap, delta, false, err, errlen) != 0 ||
        append_chunks(st, snap, delta, true, err, errlen) != 0 ||
        append_last(st, rec, delta, err, errlen) != 0 ||
        append_extra(st, extra, err, errlen) != 0 ||
        append_meta(st, meta, *cycle + 1, sessions_after, &m, err, errlen) != 0 ||
        append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0) {
        drop_half_transaction(st);
        return STORE_FENCE_ERROR;
    }
    rc = read_transaction(st, (size_t)(st->commands - before), st->bytes_queued - bytes_before,
                          snap, err, errlen);
    if (rc == -2 && token != NULL)
        return aborted_why(st, source, token, *cycle, err, errlen);
    if (rc != 0)
        return STORE_FENCE_ERROR;
    *cycle += 1;
    return STORE_FENCE_OK;
}

static int array_get(void *opaque, size_t i, diff_change_t *out)
{
    *out = ((const diff_change_t *)opaque)[i];
    return 0;
}

store_delta_t store_delta_of(const diff_change_t *changes, size_t n)
{
    /* opaque is only read (array_get); the changes carry their texts */
    return (store_delta_t){
        .n = changes != NULL ? n : 0, .get = array_get, .opaque = (void *)changes};
}

int store_last_get(store_t *st, const char *source, const char *const *ids, size_t n,
                   store_last_fn fn, void *opaque, char *err, size_t errlen)
{
    char rec[STORE_KEY_MAX];
    char what[7 + STORE_KEY_MAX];
    redisReply *r;
    int rc = 0;

    if (n == 0)
        return 0;
    if (n > STORE_BATCH || ids == NULL || fn == NULL) {
        set_err(err, errlen, "store: %zu last records asked for (at most %d, with ids)", n,
                STORE_BATCH);
        return -1;
    }
    if (make_key(st, "rec", source, "", rec, err, errlen) != 0)
        return -1;
    st->argv[0] = "HMGET";
    st->argvlen[0] = 5;
    st->argv[1] = rec;
    st->argvlen[1] = strlen(rec);
    for (size_t k = 0; k < n; k++) {
        if (ids[k] == NULL) {
            set_err(err, errlen, "store: last record %zu asked for without an id", k);
            return -1;
        }
        st->argv[2 + k] = ids[k];
        st->argvlen[2 + k] = strlen(ids[k]);
    }
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    snprintf(what, sizeof what, "HMGET %s", rec);
    r = run_command(st, (int)(2 + n), st->argv, st->argvlen, what, err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, what);
        freeReplyObject(r);
        return -1;
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        const redisReply *v = r->element[k];
        bool have = v->type == REDIS_REPLY_STRING && v->len > 0 && v->len <= STORE_LAST_MAX;

        if (!have && v->type != REDIS_REPLY_NIL && v->type != REDIS_REPLY_STRING) {
            set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, what);
            rc = -1;
        } else if (fn(opaque, k, have ? v->str : NULL, have ? v->len : 0) != 0) {
            set_err(err, errlen, "store: %s: the caller refused a record", what);
            rc = -1;
        }
    }
    freeReplyObject(r);
    return rc;
}

store_fence_t store_commit_fenced(store_t *st, const char *source, const char *token,
                                  const store_delta_t *delta, size_t sessions_after,
                                  const store_extra_t *extra, uint64_t *cycle, char *err,
                                  size_t errlen)
{
    if (token == NULL) {
        set_err(err, errlen, "store: a fenced commit needs a lease token");
        return STORE_FENCE_ERROR;
    }
    return commit(st, source, token, delta, sessions_after, extra, cycle, err, errlen);
}

/* Queues the sessions of an index as HSETs of at most STORE_BATCH fields. */
typedef struct restore_chunk {
    store_t *st;
    const char *snap;
    int argc;
    char *err;
    size_t errlen;
} restore_chunk_t;

static int restore_flush(restore_chunk_t *c)
{
    int rc = 0;

    if (c->argc > 2)
        rc = append_command(c->st, c->argc, c->st->argv, c->st->argvlen, "HSET", c->err, c->errlen);
    c->argc = 2;
    return rc;
}

static int restore_session(void *opaque, const char *session_id, const diff_record_t *rec)
{
    restore_chunk_t *c = opaque;
    store_t *st = c->st;
    /* The slots are reused per chunk: hiredis formats each command as it is appended. */
    char *slot = st->records + (size_t)(c->argc - 2) / 2 * STORE_RECORD_SLOT;
    int len = diff_record_encode(rec, slot, STORE_RECORD_SLOT);

    if (len < 0) {
        set_err(c->err, c->errlen, "store: a session of the index does not encode");
        return -1;
    }
    st->argv[0] = "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = c->snap;
    st->argvlen[1] = strlen(c->snap);
    st->argv[c->argc] = session_id;
    st->argvlen[c->argc] = strlen(session_id);
    st->argv[c->argc + 1] = slot;
    st->argvlen[c->argc + 1] = (size_t)len;
    c->argc += 2;
    if ((c->argc - 2) / 2 == STORE_BATCH)
        return restore_flush(c);
    return 0;
}

store_fence_t store_restore(store_t *st, const char *source, const char *token,
                            const diff_index_t *ix, uint64_t cycle, char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"}, *del[2] = {"DEL", snap};
    size_t multi_len[1] = {5}, exec_len[1] = {4}, del_len[2] = {3, 0};
    restore_chunk_t c = {.st = st, .snap = snap, .argc = 2, .err = err, .errlen = errlen};
    meta_cmd_t m;
    uint64_t before, bytes_before;
    store_fence_t f;
    int rc;

    if (make_keys(st, source, snap, meta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (token == NULL || ix == NULL || cycle == 0) {
        set_err(err, errlen, "store: a restore needs a lease token, an index and a cycle");
        return STORE_FENCE_ERROR;
    }
    del_len[1] = strlen(snap);
    if (ensure_connected(st, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    /* Base 0: it writes only where Redis holds no snapshot at all. */
    if ((f = watch_fence(st, source, token, 0, err, errlen)) != STORE_FENCE_OK)
        return f;
    before = st->commands;
    bytes_before = st->bytes_queued;
    if (append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0 ||
        append_command(st, 2, del, del_len, "DEL", err, errlen) != 0 ||
        diff_index_foreach(ix, restore_session, &c) != 0 || restore_flush(&c) != 0 ||
        append_meta(st, meta, cycle, diff_index_size(ix), &m, err, errlen) != 0 ||
        append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0) {
        drop_half_transaction(st);
        return STORE_FENCE_ERROR;
    }
    rc = read_transaction(st, (size_t)(st->commands - before), st->bytes_queued - bytes_before,
                          snap, err, errlen);
    if (rc == -2)
        return aborted_why(st, source, token, 0, err, errlen);
    return rc == 0 ? STORE_FENCE_OK : STORE_FENCE_ERROR;
}

/* ---- outbox ---- */

/*
 * Claims atomically, so that two bridges sharing an outbox never hand the
 * same event over twice at once. KEYS: due, bodies, attempts. ARGV: now,
 * max, lease_until, any. Returns id, attempt, body triples; an id without a
 * body (written by hand, or half-removed) is dropped.
 */
static const char claim_script[] =
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

/* Longest outbox claim batch: one reply holds them all. */
#define STORE_CLAIM_MAX 1000

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
static int read_claims(const store_t *st, const redisReply *r, store_claim_t **out, size_t *n,
                       char *err, size_t errlen)
{
    size_t count;
    store_claim_t *c;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 3 != 0) {
        set_err(err, errlen, "redis %s: outbox claim: unexpected reply", st->endpoint);
        return -1;
    }
    count = r->elements / 3;
    c = calloc(count ? count : 1, sizeof *c);
    if (c == NULL) {
        set_err(err, errlen, "store: out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        const redisReply *id = r->element[3 * i], *att = r->element[3 * i + 1],
                         *body = r->element[3 * i + 2];

        if (id->type != REDIS_REPLY_STRING || att->type != REDIS_REPLY_INTEGER ||
            body->type != REDIS_REPLY_STRING || att->integer < 1 || id->len > DIFF_ID_MAX) {
            store_claims_free(c, i);
            set_err(err, errlen, "redis %s: outbox claim: unexpected reply", st->endpoint);
            return -1;
        }
        c[i].id = dup_bytes(id->str, id->len);
        c[i].json = dup_bytes(body->str, body->len);
        c[i].len = body->len;
        c[i].attempt = att->integer > UINT_MAX ? UINT_MAX : (unsigned)att->integer;
        if (c[i].id == NULL || c[i].json == NULL) {
            store_claims_free(c, i + 1);
            set_err(err, errlen, "store: out of memory");
            return -1;
        }
    }
    *out = c;
    *n = count;
    return 0;
}

int store_outbox_claim(store_t *st, const char *sink, size_t max, int64_t lease_ms, bool any,
                       store_claim_t **out, size_t *n, char *err, size_t errlen)
{
    char due[STORE_KEY_MAX], body[STORE_KEY_MAX], att[STORE_KEY_MAX];
    char now_s[STORE_U64_DIGITS + 1], max_s[16], until_s[STORE_U64_DIGITS + 1];
    const char *argv[10] = {"EVAL", claim_script, "3",   due,     body,
                            att,    now_s,        max_s, until_s, any ? "1" : "0"};
    size_t argvlen[10];
    uint64_t now = (uint64_t)clock_unix_ms();
    redisReply *r;
    int rc;

    *out = NULL;
    *n = 0;
    if (make_key(st, "ob", sink, ":due", due, err, errlen) != 0 ||
        make_key(st, "ob", sink, "", body, err, errlen) != 0 ||
        make_key(st, "ob", sink, ":att", att, err, errlen) != 0)
        return -1;
    if (max == 0)
        return 0;
    if (max > STORE_CLAIM_MAX)
        max = STORE_CLAIM_MAX;
    snprintf(now_s, sizeof now_s, "%" PRIu64, now);
    snprintf(max_s, sizeof max_s, "%zu", max);
    snprintf(until_s, sizeof until_s, "%" PRIu64, now + (uint64_t)(lease_ms > 0 ? lease_ms : 0));
    for (int i = 0; i < 10; i++)
        argvlen[i] = strlen(argv[i]);
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    r = run_command(st, 10, argv, argvlen, "outbox claim", err, errlen);
    if (r == NULL)
        return -1;
    rc = read_claims(st, r, out, n, err, errlen);
    freeReplyObject(r);
    return rc;
}

/*
 * Runs the commands (each argv NULL-terminated) in one MULTI/EXEC and checks
 * every reply. what names the operation in errors.
 */
static int run_transaction(store_t *st, const char *const *const *cmds, size_t ncmds,
                           const char *what, char *err, size_t errlen)
{
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t multi_len[1] = {5}, exec_len[1] = {4};
    uint64_t before, bytes_before;

    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    before = st->commands;
    bytes_before = st->bytes_queued;
    if (append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < ncmds; i++) {
        size_t lens[8];
        int argc = 0;

        for (; cmds[i][argc] != NULL && argc < 8; argc++)
            lens[argc] = strlen(cmds[i][argc]);
        if (append_command(st, argc, (const char **)cmds[i], lens, what, err, errlen) != 0)
            return -1;
    }
    if (append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0)
        return -1;
    return read_transaction(st, (size_t)(st->commands - before), st->bytes_queued - bytes_before,
                            what, err, errlen);
}

int store_outbox_done(store_t *st, const char *sink, const char *id, char *err, size_t errlen)
{
    char due[STORE_KEY_MAX], body[STORE_KEY_MAX], att[STORE_KEY_MAX];

    if (make_key(st, "ob", sink, ":due", due, err, errlen) != 0 ||
        make_key(st, "ob", sink, "", body, err, errlen) != 0 ||
        make_key(st, "ob", sink, ":att", att, err, errlen) != 0)
        return -1;
    const char *c1[] = {"HDEL", body, id, NULL}, *c2[] = {"ZREM", due, id, NULL},
               *c3[] = {"HDEL", att, id, NULL};
    const char *const *cmds[] = {c1, c2, c3};
    return run_transaction(st, cmds, 3, "outbox done", err, errlen);
}

int store_outbox_retry(store_t *st, const char *sink, const char *id, int64_t due_ms, char *err,
                       size_t errlen)
{
    char due[STORE_KEY_MAX], score[STORE_U64_DIGITS + 2];
    /* XX: an event removed meanwhile (delivered by another holder) stays removed. */
    const char *argv[5] = {"ZADD", due, "XX", score, id};
    size_t argvlen[5];
    redisReply *r;

    if (make_key(st, "ob", sink, ":due", due, err, errlen) != 0)
        return -1;
    snprintf(score, sizeof score, "%" PRId64, due_ms);
    for (int i = 0; i < 5; i++)
        argvlen[i] = strlen(argv[i]);
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    r = run_command(st, 5, argv, argvlen, "outbox retry", err, errlen);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int store_outbox_dead(store_t *st, const char *sink, const char *id, const char *record, char *err,
                      size_t errlen)
{
    char due[STORE_KEY_MAX], body[STORE_KEY_MAX], att[STORE_KEY_MAX], dlq[STORE_KEY_MAX];

    if (make_key(st, "ob", sink, ":due", due, err, errlen) != 0 ||
        make_key(st, "ob", sink, "", body, err, errlen) != 0 ||
        make_key(st, "ob", sink, ":att", att, err, errlen) != 0 ||
        make_key(st, "dlq", sink, "", dlq, err, errlen) != 0)
        return -1;
    const char *c0[] = {"HSET", dlq, id, record, NULL}, *c1[] = {"HDEL", body, id, NULL},
               *c2[] = {"ZREM", due, id, NULL}, *c3[] = {"HDEL", att, id, NULL};
    const char *const *cmds[] = {c0, c1, c2, c3};
    return run_transaction(st, cmds, 4, "dead letter", err, errlen);
}

/* Runs a command whose reply is an integer (a count). */
static int run_count(store_t *st, const char *cmd, const char *key, size_t *n, char *err,
                     size_t errlen)
{
    const char *argv[2] = {cmd, key};
    size_t argvlen[2] = {strlen(cmd), strlen(key)};
    redisReply *r;
    int rc = 0;

    *n = 0;
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    r = run_command(st, 2, argv, argvlen, cmd, err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
        set_err(err, errlen, "redis %s: %s %s: unexpected reply", st->endpoint, cmd, key);
        rc = -1;
    } else {
        *n = (size_t)r->integer;
    }
    freeReplyObject(r);
    return rc;
}

int store_sink_disabled(store_t *st, const char *sink, bool *disabled, char *why, size_t whylen,
                        char *err, size_t errlen)
{
    char off[STORE_KEY_MAX];
    const char *argv[2] = {"GET", off};
    size_t argvlen[2] = {3, 0};
    redisReply *r;

    *disabled = false;
    if (make_key(st, "ob", sink, ":off", off, err, errlen) != 0)
        return -1;
    argvlen[1] = strlen(off);
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    r = run_command(st, 2, argv, argvlen, "GET", err, errlen);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_STRING) {
        *disabled = true;
        if (why != NULL && whylen > 0)
            quote_bytes(r->str, r->len, why, whylen);
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

    if (make_key(st, "ob", sink, ":off", off, err, errlen) != 0)
        return -1;
    for (int i = 0; i < (why ? 3 : 2); i++)
        argvlen[i] = strlen(argv[i]);
    if (ensure_connected(st, err, errlen) != 0)
        return -1;
    r = run_command(st, why ? 3 : 2, argv, argvlen, argv[0], err, errlen);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

/* ---- dead letters ---- */

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
        set_err(err, errlen, "redis %s: %s: a field is not an event id", st->endpoint, key);
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

    if (make_key(st, "dlq", sink, "", dlq, err, errlen) != 0 ||
        ensure_connected(st, err, errlen) != 0)
        return -1;
    return scan_hash(st, dlq, dlq_pair, &d, err, errlen);
}

int store_dlq_count(store_t *st, const char *sink, size_t *n, char *err, size_t errlen)
{
    char dlq[STORE_KEY_MAX];

    if (make_key(st, "dlq", sink, "", dlq, err, errlen) != 0)
        return -1;
    return run_count(st, "HLEN", dlq, n, err, errlen);
}

int store_outbox_count(store_t *st, const char *sink, size_t *n, char *err, size_t errlen)
{
    char body[STORE_KEY_MAX];

    if (make_key(st, "ob", sink, "", body, err, errlen) != 0)
        return -1;
    return run_count(st, "HLEN", body, n, err, errlen);
}

int store_dlq_delete(store_t *st, const char *sink, const char *id, char *err, size_t errlen)
{
    char dlq[STORE_KEY_MAX];
    const char *c1[] = {"HDEL", dlq, id, NULL};
    const char *const *cmds[] = {c1};

    if (make_key(st, "dlq", sink, "", dlq, err, errlen) != 0)
        return -1;
    return run_transaction(st, cmds, 1, "dlq delete", err, errlen);
}

int store_dlq_purge(store_t *st, const char *sink, size_t *n, char *err, size_t errlen)
{
    char dlq[STORE_KEY_MAX];
    const char *c1[] = {"DEL", dlq, NULL};
    const char *const *cmds[] = {c1};

    if (store_dlq_count(st, sink, n, err, errlen) != 0)
        return -1;
    make_key(st, "dlq", sink, "", dlq, NULL, 0);
    return run_transaction(st, cmds, 1, "dlq purge", err, errlen);
}

uint64_t store_commands_sent(const store_t *st)
{
    return st->commands;
}

uint64_t store_errors(const store_t *st)
{
    return st->errors;
}

/* ---- leases ---- */

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
static const char renew_script[] = "local v = redis.call('GET', KEYS[1])\n"
                                   "if v == ARGV[1] then\n"
                                   "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                   "end\n"
                                   "if v == false then return -1 end\n"
                                   "return 0\n";
static const char release_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
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

    if (make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        ensure_connected(st, err, errlen) != 0)
        return -1;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    r = run_command(st, 6, argv, argvlen, "lease script", err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER) {
        set_err(err, errlen, "redis %s: lease script: unexpected reply", st->endpoint);
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

    if (lease_script(st, renew_script, source, token, ttl_ms, &ok, err, errlen) != 0)
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

    if (make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        ensure_connected(st, err, errlen) != 0)
        return STORE_LEASE_ERROR;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    r = run_command(st, 6, argv, argvlen, "SET lease", err, errlen);
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
    return lease_script(st, release_script, source, token, 0, &n, err, errlen);
}

int store_member_beat(store_t *st, const char *id, int64_t ttl_ms, size_t *live, bool *was_member,
                      char *err, size_t errlen)
{
    char members[STORE_KEY_MAX], until[24], now[24];
    uint64_t t = (uint64_t)clock_unix_ms();
    const char *zscore[3] = {"ZSCORE", members, id};
    size_t zscore_len[3] = {6, 0, strlen(id)};
    redisReply *r;

    snprintf(members, sizeof members, "%s:members", st->prefix);
    zscore_len[1] = strlen(members);
    if (ensure_connected(st, err, errlen) != 0 ||
        (r = run_command(st, 3, zscore, zscore_len, "ZSCORE", err, errlen)) == NULL)
        return -1;
    /* The score is when the entry expires, in unix ms (hiredis NUL-terminates strings). */
    *was_member = r->type == REDIS_REPLY_STRING && strtod(r->str, NULL) >= (double)t;
    freeReplyObject(r);
    snprintf(until, sizeof until, "%" PRIu64, t + (uint64_t)ttl_ms);
    snprintf(now, sizeof now, "(%" PRIu64, t);
    const char *c1[] = {"ZADD", members, until, id, NULL},
               *c2[] = {"ZREMRANGEBYSCORE", members, "-inf", now, NULL};
    const char *const *cmds[] = {c1, c2};
    if (run_transaction(st, cmds, 2, "members", err, errlen) != 0)
        return -1;
    return run_count(st, "ZCARD", members, live, err, errlen);
}

int store_member_leave(store_t *st, const char *id, char *err, size_t errlen)
{
    char members[STORE_KEY_MAX];

    snprintf(members, sizeof members, "%s:members", st->prefix);
    const char *c1[] = {"ZREM", members, id, NULL};
    const char *const *cmds[] = {c1};
    return run_transaction(st, cmds, 1, "members", err, errlen);
}

/* ---- asynchronous operations (hiredis's async API on the daemon's loop) ---- */

/*
 * One operation: a few commands pipelined on st->actx, their replies
 * arriving in order. hiredis calls a command's callback exactly once: with
 * its reply, or with NULL when the connection is dropped (an I/O error, our
 * watchdog, store_detach()), so every operation finishes exactly once, when
 * its last reply (or NULL) arrived, and reports the first failure it saw.
 */
typedef enum aop {
    AOP_SETUP,
    AOP_PING,
    AOP_COUNT,
    AOP_RENEW,
    AOP_ACQUIRE,
    AOP_RELEASE,
    AOP_BEAT
} aop_t;

typedef struct areq {
    store_t *st;
    aop_t op;
    unsigned sent, pending; /* commands sent; replies still awaited */
    int failed;
    char err[STORE_ERR_MAX];
    const char *what; /* the command, for messages; static */
    uint64_t t;       /* AOP_BEAT: unix ms the beat was made at */
    long long value;  /* AOP_COUNT, AOP_RENEW, AOP_BEAT: the integer reply kept */
    bool was_member;  /* AOP_BEAT */
    bool set;         /* AOP_ACQUIRE: the SET NX took it */
    union {
        store_done_fn done;
        store_count_fn count;
        store_lease_fn lease;
        store_beat_fn beat;
    } fn;
    void *opaque;
} areq_t;

/* No reply for this long while some are awaited: Redis is gone or stuck. */
static void awatch_arm(store_t *st)
{
    loop_timer_arm(st->awatch, st->ainflight ? st->timeout_ms / 1000.0 : -1);
}

/* Drops actx: hiredis calls every pending callback with NULL, then ours. */
static void adrop(store_t *st, const char *why)
{
    redisAsyncContext *ac = st->actx;

    if (ac == NULL)
        return;
    snprintf(st->afail, sizeof st->afail, "%s", why);
    st->actx = NULL;
    redisAsyncFree(ac);
}

static void on_awatch(void *opaque)
{
    store_t *st = opaque;
    char why[STORE_ERR_MAX];

    snprintf(why, sizeof why, "redis %s: timed out after %d ms", st->endpoint, st->timeout_ms);
    adrop(st, why);
}

static void on_aconnect(const redisAsyncContext *ac, int status)
{
    store_t *st = ac->data;

    if (status == REDIS_OK) {
        backoff_reset(&st->areconnect);
        return;
    }
    /* hiredis frees ac after this, failing what was queued on it */
    snprintf(st->aconnect_error, sizeof st->aconnect_error, "redis %s: connect: %s", st->endpoint,
             ac->errstr[0] ? ac->errstr : "failed");
    snprintf(st->afail, sizeof st->afail, "%s", st->aconnect_error);
    backoff_failed(&st->areconnect, clock_mono_s(), 0);
    if (st->actx == ac)
        st->actx = NULL;
}

static void on_adisconnect(const redisAsyncContext *ac, int status)
{
    store_t *st = ac->data;
    (void)status;

    if (st->actx == ac)
        st->actx = NULL;
}

/* Why a reply did not come: our reason for dropping, or hiredis's. */
static void areq_lost(areq_t *q, const redisAsyncContext *ac)
{
    store_t *st = q->st;

    if (st->afail[0])
        snprintf(q->err, sizeof q->err, "%s", st->afail);
    else
        snprintf(q->err, sizeof q->err, "redis %s: %s: %s", st->endpoint, q->what,
                 ac->err && ac->errstr[0] ? ac->errstr : "connection lost");
}

static void areq_unexpected(areq_t *q)
{
    q->failed = 1;
    snprintf(q->err, sizeof q->err, "redis %s: %s: unexpected reply", q->st->endpoint, q->what);
}

/* Reply k of q (not an error reply): what it means to each operation. */
static void areq_take(areq_t *q, unsigned k, const redisReply *r)
{
    switch (q->op) {
    case AOP_SETUP:
        break;
    case AOP_PING:
        if (r->type != REDIS_REPLY_STATUS || r->len != 4 || memcmp(r->str, "PONG", 4) != 0)
            areq_unexpected(q);
        break;
    case AOP_ACQUIRE:
        /* SET NX: +OK when taken, nil when someone holds it; then the renewal script */
        if (k == 0)
            q->set = r->type == REDIS_REPLY_STATUS;
        else if (r->type != REDIS_REPLY_INTEGER)
            areq_unexpected(q);
        else
            q->value = r->integer;
        break;
    case AOP_COUNT:
    case AOP_RENEW:
    case AOP_RELEASE:
        if (r->type != REDIS_REPLY_INTEGER || (q->op == AOP_COUNT && r->integer < 0))
            areq_unexpected(q);
        else
            q->value = r->integer;
        break;
    case AOP_BEAT:
        /* ZSCORE, MULTI, ZADD, ZREMRANGEBYSCORE, EXEC, ZCARD */
        if (k == 0) {
            /* The score is when the entry expires, in unix ms (hiredis NUL-terminates). */
            q->was_member = r->type == REDIS_REPLY_STRING && strtod(r->str, NULL) >= (double)q->t;
        } else if (k == 4) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
                areq_unexpected(q);
            for (size_t i = 0; !q->failed && i < r->elements; i++) {
                if (r->element[i]->type == REDIS_REPLY_ERROR)
                    areq_unexpected(q);
            }
        } else if (k == 5) {
            if (r->type != REDIS_REPLY_INTEGER || r->integer < 0)
                areq_unexpected(q);
            else
                q->value = r->integer;
        }
        break;
    }
}

static void areq_finish(areq_t *q)
{
    const char *err = q->failed ? q->err : NULL;
    store_lease_t lease;

    /* The handshake is not counted: the operations queued behind it fail
     * (and count) with it. */
    if (q->failed && q->op != AOP_SETUP)
        q->st->errors++;
    switch (q->op) {
    case AOP_SETUP:
        /* A refused AUTH or SELECT: the commands queued behind it fail on
         * their own (NOAUTH); drop the connection so that the next
         * operation connects (and authenticates) again. */
        if (q->failed && q->st->actx != NULL) {
            snprintf(q->st->aconnect_error, sizeof q->st->aconnect_error, "%s", q->err);
            backoff_failed(&q->st->areconnect, clock_mono_s(), 0);
            adrop(q->st, q->err);
        }
        break;
    case AOP_PING:
    case AOP_RELEASE:
        q->fn.done(q->opaque, q->failed ? -1 : 0, err);
        break;
    case AOP_ACQUIRE:
        /* Not set but ours: a renewal that looked failed. Gone by the
         * script: it expired in between; the caller tries again later. */
        lease = q->failed                 ? STORE_LEASE_ERROR
                : q->set || q->value == 1 ? STORE_LEASE_HELD
                                          : STORE_LEASE_OTHER;
        q->fn.lease(q->opaque, lease, err);
        break;
    case AOP_COUNT:
        q->fn.count(q->opaque, q->failed ? -1 : 0, q->failed ? 0 : (size_t)q->value, err);
        break;
    case AOP_RENEW:
        lease = q->failed       ? STORE_LEASE_ERROR
                : q->value == 1 ? STORE_LEASE_HELD
                : q->value < 0  ? STORE_LEASE_GONE
                                : STORE_LEASE_OTHER;
        q->fn.lease(q->opaque, lease, err);
        break;
    case AOP_BEAT:
        q->fn.beat(q->opaque, q->failed ? -1 : 0, q->failed ? 0 : (size_t)q->value, q->was_member,
                   err);
        break;
    }
    free(q);
}

static void on_areply(redisAsyncContext *ac, void *reply, void *priv)
{
    areq_t *q = priv;
    store_t *st = q->st;
    const redisReply *r = reply;
    unsigned k = q->sent - q->pending;

    st->ainflight--;
    if (r == NULL) {
        if (!q->failed)
            areq_lost(q, ac);
        q->failed = 1;
    } else if (r->type == REDIS_REPLY_ERROR) {
        if (!q->failed)
            snprintf(q->err, sizeof q->err, "redis %s: %s: %.*s", st->endpoint, q->what,
                     (int)r->len, r->str);
        q->failed = 1;
    } else if (!q->failed) {
        areq_take(q, k, r);
    }
    if (st->actx == ac)
        awatch_arm(st); /* a reply came: the connection is alive */
    if (--q->pending == 0)
        areq_finish(q);
}

/* Queues one command of q on actx. -1 when hiredis refused it (the connection is going). */
static int areq_send(areq_t *q, int argc, const char **argv, const size_t *argvlen)
{
    store_t *st = q->st;

    if (redisAsyncCommandArgv(st->actx, on_areply, q, argc, argv, argvlen) != REDIS_OK)
        return -1;
    q->sent++;
    q->pending++;
    st->ainflight++;
    st->commands++;
    if (st->ainflight == 1)
        awatch_arm(st);
    return 0;
}

/* Sends a command given as a NULL-terminated list of strings. */
static int areq_sendv(areq_t *q, const char *const *argv)
{
    size_t lens[8];
    int argc = 0;

    for (; argv[argc] != NULL && argc < 8; argc++)
        lens[argc] = strlen(argv[argc]);
    return areq_send(q, argc, (const char **)argv, lens);
}

/*
 * A connection for the next operation: the current one, or a new one
 * (non-blocking connect; AUTH and SELECT are queued ahead of the caller's
 * commands, so nothing waits for the handshake). While the last failed
 * connect's pause runs, fails at once with its reason.
 */
static int aconnect(store_t *st, char *err, size_t errlen)
{
    redisAsyncContext *ac;

    if (st->loop == NULL) {
        set_err(err, errlen, "store: not attached to a loop");
        return -1;
    }
    if (st->actx != NULL)
        return 0;
    if (!backoff_ready(&st->areconnect, clock_mono_s())) {
        set_err(err, errlen, "%s", st->aconnect_error);
        st->errors++;
        return -1;
    }
    ac = redisAsyncConnect(st->target.host, st->target.port);
    if (ac == NULL || ac->err) {
        snprintf(st->aconnect_error, sizeof st->aconnect_error, "redis %s: connect: %s",
                 st->endpoint, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        backoff_failed(&st->areconnect, clock_mono_s(), 0);
        set_err(err, errlen, "%s", st->aconnect_error);
        st->errors++;
        return -1;
    }
    ac->data = st;
    if (redisLibeventAttach(ac, loop_event_base(st->loop)) != REDIS_OK) {
        redisAsyncFree(ac);
        set_err(err, errlen, "redis %s: cannot watch the connection", st->endpoint);
        st->errors++;
        return -1;
    }
    redisAsyncSetConnectCallback(ac, on_aconnect);
    redisAsyncSetDisconnectCallback(ac, on_adisconnect);
    st->actx = ac;
    st->afail[0] = '\0';
    if (st->target.password == NULL && st->target.db == 0)
        return 0;
    areq_t *q = calloc(1, sizeof *q);
    if (q == NULL) {
        adrop(st, "out of memory");
        set_err(err, errlen, "store: out of memory");
        return -1;
    }
    *q = (areq_t){.st = st, .op = AOP_SETUP, .what = "AUTH"};
    /* The password goes on the wire only, never into a message. */
    if (st->target.password != NULL) {
        const char *argv[3] = {"AUTH", st->target.user, st->target.password};
        size_t lens[3] = {4, st->target.user_len, st->target.password_len};
        int argc = st->target.user != NULL ? 3 : 2;
        if (argc == 2) {
            argv[1] = st->target.password;
            lens[1] = st->target.password_len;
        }
        if (areq_send(q, argc, argv, lens) == 0)
            st->commands--; /* the handshake is not counted, as in the blocking connect */
    }
    if (st->target.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", st->target.db);
        const char *argv[] = {"SELECT", db, NULL};
        if (areq_sendv(q, argv) == 0)
            st->commands--;
    }
    if (q->pending == 0)
        free(q);
    return 0;
}

int store_attach(store_t *st, loop_t *loop, char *err, size_t errlen)
{
    if (st->loop != NULL)
        return 0;
    st->awatch = loop_timer_new(loop, on_awatch, st);
    if (st->awatch == NULL) {
        set_err(err, errlen, "store: out of memory");
        return -1;
    }
    st->loop = loop;
    return 0;
}

void store_detach(store_t *st)
{
    char why[STORE_ERR_MAX];

    if (st == NULL || st->loop == NULL)
        return;
    snprintf(why, sizeof why, "redis %s: the store is closing", st->endpoint);
    adrop(st, why);
    loop_timer_free(st->awatch);
    st->awatch = NULL;
    st->loop = NULL;
}

/* A new operation of kind op, connected; NULL with err when it cannot start. */
static areq_t *areq_new(store_t *st, aop_t op, const char *what, void *opaque, char *err,
                        size_t errlen)
{
    areq_t *q;

    if (aconnect(st, err, errlen) != 0)
        return NULL;
    q = calloc(1, sizeof *q);
    if (q == NULL) {
        set_err(err, errlen, "store: out of memory");
        return NULL;
    }
    *q = (areq_t){.st = st, .op = op, .what = what, .opaque = opaque};
    return q;
}

/*
 * Ends the sending of q: 0 when its callback will come, -1 with err when
 * nothing was sent (q freed, no callback). A failure after some commands
 * went out drops the connection, whose NULL replies finish q.
 */
static int areq_sent(areq_t *q, int rc, char *err, size_t errlen)
{
    store_t *st = q->st;

    if (rc == 0)
        return 0;
    if (q->pending == 0) {
        set_err(err, errlen, "redis %s: %s: %s", st->endpoint, q->what,
                st->actx && st->actx->errstr[0] ? st->actx->errstr : "connection lost");
        st->errors++;
        free(q);
        return -1;
    }
    adrop(st, "connection lost while sending");
    return 0;
}

int store_ping_async(store_t *st, store_done_fn fn, void *opaque, char *err, size_t errlen)
{
    areq_t *q = areq_new(st, AOP_PING, "PING", opaque, err, errlen);
    const char *argv[] = {"PING", NULL};

    if (q == NULL)
        return -1;
    q->fn.done = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

static int count_async(store_t *st, const char *kind, const char *sink, store_count_fn fn,
                       void *opaque, char *err, size_t errlen)
{
    char key[STORE_KEY_MAX];
    areq_t *q;

    if (make_key(st, kind, sink, "", key, err, errlen) != 0 ||
        (q = areq_new(st, AOP_COUNT, "HLEN", opaque, err, errlen)) == NULL)
        return -1;
    const char *argv[] = {"HLEN", key, NULL};
    q->fn.count = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

int store_dlq_count_async(store_t *st, const char *sink, store_count_fn fn, void *opaque, char *err,
                          size_t errlen)
{
    return count_async(st, "dlq", sink, fn, opaque, err, errlen);
}

int store_outbox_count_async(store_t *st, const char *sink, store_count_fn fn, void *opaque,
                             char *err, size_t errlen)
{
    return count_async(st, "ob", sink, fn, opaque, err, errlen);
}

int store_lease_renew_async(store_t *st, const char *source, const char *token, int64_t ttl_ms,
                            store_lease_fn fn, void *opaque, char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX], ttl[24];
    areq_t *q;

    if (make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        (q = areq_new(st, AOP_RENEW, "lease script", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *argv[] = {"EVAL", renew_script, "1", lease, token, ttl, NULL};
    q->fn.lease = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

/* The beat of store_member_beat() in one round trip: its commands pipelined. */
int store_member_beat_async(store_t *st, const char *id, int64_t ttl_ms, store_beat_fn fn,
                            void *opaque, char *err, size_t errlen)
{
    char members[STORE_KEY_MAX], until[24], now[24];
    uint64_t t = (uint64_t)clock_unix_ms();
    areq_t *q = areq_new(st, AOP_BEAT, "members", opaque, err, errlen);
    int rc = 0;

    if (q == NULL)
        return -1;
    q->fn.beat = fn;
    q->t = t;
    snprintf(members, sizeof members, "%s:members", st->prefix);
    snprintf(until, sizeof until, "%" PRIu64, t + (uint64_t)ttl_ms);
    snprintf(now, sizeof now, "(%" PRIu64, t);
    const char *c[][5] = {{"ZSCORE", members, id, NULL},
                          {"MULTI", NULL},
                          {"ZADD", members, until, id, NULL},
                          {"ZREMRANGEBYSCORE", members, "-inf", now, NULL},
                          {"EXEC", NULL},
                          {"ZCARD", members, NULL}};
    for (size_t i = 0; rc == 0 && i < sizeof c / sizeof c[0]; i++)
        rc = areq_sendv(q, c[i]);
    return areq_sent(q, rc, err, errlen);
}

/*
 * store_lease_acquire() in one round trip: SET NX and the renewal script
 * pipelined (the script extends a lease the SET just took, harmlessly,
 * and tells whether one it did not take is ours already).
 */
int store_lease_acquire_async(store_t *st, const char *source, const char *token, int64_t ttl_ms,
                              store_lease_fn fn, void *opaque, char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX], ttl[24];
    areq_t *q;
    int rc;

    if (make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        (q = areq_new(st, AOP_ACQUIRE, "SET lease", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *set[] = {"SET", lease, token, "NX", "PX", ttl, NULL},
               *renew[] = {"EVAL", renew_script, "1", lease, token, ttl, NULL};
    q->fn.lease = fn;
    rc = areq_sendv(q, set);
    if (rc == 0)
        rc = areq_sendv(q, renew);
    return areq_sent(q, rc, err, errlen);
}

int store_lease_release_async(store_t *st, const char *source, const char *token, store_done_fn fn,
                              void *opaque, char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX];
    areq_t *q;

    if (make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        (q = areq_new(st, AOP_RELEASE, "lease script", opaque, err, errlen)) == NULL)
        return -1;
    const char *argv[] = {"EVAL", release_script, "1", lease, token, "0", NULL};
    q->fn.done = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}
