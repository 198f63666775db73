/*
 * store: the blocking connection, key names and command helpers that every
 * synchronous call of the store goes through (see store.h).
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
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include <hiredis/sds.h>

#include "clock.h"

#define STORE_DEFAULT_PREFIX "sb"
/* Used when the options leave the timeout at 0. */
#define STORE_DEFAULT_TIMEOUT_MS 5000

/* HSET key + STORE_BATCH field/value pairs: the widest command we send. */
#define STORE_ARGV_MAX (2 + 2 * STORE_BATCH)

/*
 * After a failed connect, calls fail at once for this long instead of each
 * waiting for its own connect timeout: with a server that does not answer
 * (a partition), a loop making many calls would otherwise stall for a
 * timeout per call, long enough to fail a liveness probe.
 */
#define STORE_RECONNECT_PAUSE_S 1.0
static const backoff_policy_t store_reconnect = {
    .base_s = STORE_RECONNECT_PAUSE_S, .factor = 1, .jitter_min = 1, .jitter_max = 1};

void store_set_err(char *err, size_t errlen, const char *fmt, ...)
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
void store_quote_bytes(const char *s, size_t len, char *out, size_t outlen)
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

/*
 * len bytes of s as printable ASCII into out, cut to what fits, the
 * others as \xHH. Unlike store_quote_bytes() (an excerpt for an error
 * message), a whole value read to be shown: a host name, a reason.
 */
void store_printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 5 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
    }
    out[o] = '\0';
}

/* ---- keys ---- */

static int set_prefix(store_t *st, const char *prefix, char *err, size_t errlen)
{
    size_t len = strnlen(prefix, STORE_PREFIX_MAX + 1);

    if (len == 0 || len > STORE_PREFIX_MAX) {
        store_set_err(err, errlen, "invalid redis prefix: must be 1..%d bytes", STORE_PREFIX_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)prefix[i];

        if (c <= 0x20 || c == 0x7f) {
            store_set_err(err, errlen,
                          "invalid redis prefix: contains a space or control character");
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
int store_make_key(const store_t *st, const char *kind, const char *name, const char *suffix,
                   char key[STORE_KEY_MAX], char *err, size_t errlen)
{
    /* Snapshots and leases are per source, outboxes and dead letters per sink. */
    const char *noun = strcmp(kind, "ob") == 0 || strcmp(kind, "dlq") == 0 ? "sink"
                       : strcmp(kind, "replica") == 0                      ? "replica id"
                                                                           : "source";
    size_t len;

    if (name == NULL) {
        store_set_err(err, errlen, "store: no %s name", noun);
        return -1;
    }
    len = strnlen(name, STORE_SOURCE_MAX + 1);
    if (len == 0 || len > STORE_SOURCE_MAX ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len) {
        store_set_err(err, errlen, "store: invalid %s name (expected [a-z0-9_-]{1,%d})", noun,
                      STORE_SOURCE_MAX);
        return -1;
    }
    snprintf(key, STORE_KEY_MAX, "%s:%s:%s%s", st->prefix, kind, name, suffix);
    return 0;
}

/* Builds P:snap:S and P:meta:S. */
int store_make_keys(const store_t *st, const char *source, char snap[STORE_KEY_MAX],
                    char meta[STORE_KEY_MAX], char *err, size_t errlen)
{
    if (store_make_key(st, "snap", source, "", snap, err, errlen) != 0)
        return -1;
    return store_make_key(st, "meta", source, "", meta, err, errlen);
}

/* ---- connection ---- */

void store_disconnect(store_t *st)
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
    store_set_err(err, errlen, "redis %s: %s: %s", st->endpoint, what, why);
    st->errors++;
    store_disconnect(st);
}

/* Queues one command in the output buffer; it is sent when a reply is read
 * or the buffer passes STORE_FLUSH_BYTES. On -1 the connection is dropped,
 * which discards what was queued (and Redis a MULTI it did not see end). */
int store_append_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
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
redisReply *store_read_reply(store_t *st, const char *what, char *err, size_t errlen)
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
redisReply *store_run_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
                              const char *what, char *err, size_t errlen)
{
    redisReply *r;

    if (store_append_command(st, argc, argv, argvlen, what, err, errlen) != 0)
        return NULL;
    r = store_read_reply(st, what, err, errlen);
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        store_set_err(err, errlen, "redis %s: %s: %.*s", st->endpoint, what, (int)r->len, r->str);
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
int store_ensure_connected(store_t *st, char *err, size_t errlen)
{
    if (st->ctx != NULL && st->ctx->err == 0 && !redis_idle_closed(st->ctx))
        return 0;
    store_disconnect(st);
    double now = clock_mono_s();
    if (!backoff_ready(&st->reconnect, now)) {
        store_set_err(err, errlen, "%s", st->connect_error);
        st->errors++;
        return -1;
    }
    st->ctx = redis_connect_target(&st->target, st->timeout_ms, st->connect_error,
                                   sizeof(st->connect_error));
    if (st->ctx == NULL) {
        st->errors++;
        backoff_failed(&st->reconnect, now, 0);
        store_set_err(err, errlen, "%s", st->connect_error);
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
        store_set_err(err, errlen, "store: no options");
        goto err;
    }
    if (opt->timeout_ms < 0) {
        store_set_err(err, errlen, "store: negative timeout");
        goto err;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        store_set_err(err, errlen, "store: out of memory");
        goto err;
    }
    st->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : STORE_DEFAULT_TIMEOUT_MS;
    st->reconnect = backoff_init(&store_reconnect);
    store_aconn_init(&st->a, st, &store_reconnect);
    store_aconn_init(&st->c, st, &store_reconnect);
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
        store_set_err(err, errlen, "store: out of memory");
        goto err;
    }
    /* A server that is down now is not an error: the first call reconnects
     * and reports it. */
    (void)store_ensure_connected(st, NULL, 0);
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
    store_disconnect(st);
    redis_target_clear(&st->target);
    free(st->argv);
    free(st->argvlen);
    free(st->records);
    free(st->letters);
    free(st);
}

int store_ping(store_t *st, char *err, size_t errlen)
{
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    redisReply *r;
    int rc = 0;

    if (store_ensure_connected(st, err, errlen) != 0)
        return -1;
    r = store_run_command(st, 1, argv, argvlen, "PING", err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_STATUS || r->len != 4 || memcmp(r->str, "PONG", 4) != 0) {
        store_set_err(err, errlen, "redis %s: PING: unexpected reply", st->endpoint);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/*
 * Checks one HSCAN reply r of the hash key and calls fn per pair; the next
 * cursor goes to cursor (its text, NUL-terminated) and *next (0 when the
 * scan is over). 0, or -1 with err.
 */
int store_scan_page(store_t *st, const char *key, const redisReply *r, store_pair_fn fn,
                    void *opaque, char cursor[STORE_U64_DIGITS + 1], uint64_t *next, char *err,
                    size_t errlen)
{
    const redisReply *cur, *items;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
        r->element[1]->elements % 2 != 0 ||
        redis_parse_u64(r->element[0]->str, r->element[0]->len, next) != 0) {
        store_set_err(err, errlen, "redis %s: HSCAN %s: unexpected reply", st->endpoint, key);
        return -1;
    }
    cur = r->element[0];
    items = r->element[1];
    for (size_t i = 0; i < items->elements; i += 2) {
        const redisReply *f = items->element[i], *v = items->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            store_set_err(err, errlen, "redis %s: HSCAN %s: unexpected reply", st->endpoint, key);
            return -1;
        }
        if (fn(st, key, f, v, opaque, err, errlen) != 0)
            return -1;
    }
    /* redis_parse_u64() took it: at most STORE_U64_DIGITS digits */
    memcpy(cursor, cur->str, cur->len);
    cursor[cur->len] = '\0';
    return 0;
}

/*
 * HSCANs the hash key, calling fn per pair. HSCAN may return a field twice
 * (the callers are idempotent: putting it again replaces it).
 */
int store_scan_hash(store_t *st, const char *key, store_pair_fn fn, void *opaque, char *err,
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
        redisReply *r = store_run_command(st, 5, argv, argvlen, what, err, errlen);
        uint64_t next;
        int rc;

        if (r == NULL)
            return -1;
        rc = store_scan_page(st, key, r, fn, opaque, cursor, &next, err, errlen);
        freeReplyObject(r);
        if (rc != 0)
            return -1;
        if (next == 0)
            return 0;
        argvlen[2] = strlen(cursor);
    }
}

/* Sets the connection's timeout to ms (a failure leaves the one it had). */
static void set_timeout(store_t *st, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};

    (void)redisSetTimeout(st->ctx, tv);
}

/*
 * The EXEC reply r of a transaction of `sent` commands: 0, -1 with err, or
 * -2 when a WATCHed key aborted it. Redis does not roll back: a command
 * that failed inside EXEC (WRONGTYPE) leaves the others applied; it is
 * reported as a failure, and the caller reloads before its next cycle.
 */
int store_tx_exec_reply(const store_t *st, const redisReply *r, size_t sent, const char *what,
                        char *err, size_t errlen)
{
    if (r->type == REDIS_REPLY_NIL) {
        store_set_err(err, errlen, "redis %s: commit %s: transaction aborted", st->endpoint, what);
        return -2;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        store_set_err(err, errlen, "redis %s: commit %s: %.*s", st->endpoint, what, (int)r->len,
                      r->str);
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        store_set_err(err, errlen, "redis %s: commit %s: unexpected EXEC reply", st->endpoint,
                      what);
        return -1;
    }
    if (r->elements != sent - STORE_TX_WRAP) {
        store_set_err(err, errlen, "redis %s: commit %s: EXEC returned %zu replies", st->endpoint,
                      what, r->elements);
        return -1;
    }
    for (size_t j = 0; j < r->elements; j++) {
        if (r->element[j]->type == REDIS_REPLY_ERROR) {
            store_set_err(err, errlen, "redis %s: commit %s: %.*s", st->endpoint, what,
                          (int)r->element[j]->len, r->element[j]->str);
            return -1;
        }
    }
    return 0;
}

/* store_read_transaction() without the longer wait. */
static int read_transaction_replies(store_t *st, size_t sent, const char *snap, char *err,
                                    size_t errlen)
{
    bool failed = false, aborted = false;

    for (size_t i = 0; i < sent; i++) {
        redisReply *r = store_read_reply(st, "commit", err, errlen);

        if (r == NULL)
            return -1; /* connection dropped */
        if (i + 1 == sent && !failed) {
            int rc = store_tx_exec_reply(st, r, sent, snap, err, errlen);
            failed = rc != 0;
            aborted = rc == -2;
        } else if (r->type == REDIS_REPLY_ERROR && !failed) {
            store_set_err(err, errlen, "redis %s: commit %s: %.*s", st->endpoint, snap, (int)r->len,
                          r->str);
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
int store_read_transaction(store_t *st, size_t sent, uint64_t tx_bytes, const char *snap, char *err,
                           size_t errlen)
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

/*
 * Runs the commands (each argv NULL-terminated) in one MULTI/EXEC and checks
 * every reply. what names the operation in errors.
 */
int store_run_transaction(store_t *st, const char *const *const *cmds, size_t ncmds,
                          const char *what, char *err, size_t errlen)
{
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t multi_len[1] = {5}, exec_len[1] = {4};
    uint64_t before, bytes_before;

    if (store_ensure_connected(st, err, errlen) != 0)
        return -1;
    before = st->commands;
    bytes_before = st->bytes_queued;
    if (store_append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < ncmds; i++) {
        size_t lens[8];
        int argc = 0;

        for (; cmds[i][argc] != NULL && argc < 8; argc++)
            lens[argc] = strlen(cmds[i][argc]);
        if (store_append_command(st, argc, (const char **)cmds[i], lens, what, err, errlen) != 0)
            return -1;
    }
    if (store_append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0)
        return -1;
    return store_read_transaction(st, (size_t)(st->commands - before),
                                  st->bytes_queued - bytes_before, what, err, errlen);
}

/* Runs a command whose reply is an integer (a count). */
int store_run_count(store_t *st, const char *cmd, const char *key, size_t *n, char *err,
                    size_t errlen)
{
    const char *argv[2] = {cmd, key};
    size_t argvlen[2] = {strlen(cmd), strlen(key)};
    redisReply *r;
    int rc = 0;

    *n = 0;
    if (store_ensure_connected(st, err, errlen) != 0)
        return -1;
    r = store_run_command(st, 2, argv, argvlen, cmd, err, errlen);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
        store_set_err(err, errlen, "redis %s: %s %s: unexpected reply", st->endpoint, cmd, key);
        rc = -1;
    } else {
        *n = (size_t)r->integer;
    }
    freeReplyObject(r);
    return rc;
}

uint64_t store_commands_sent(const store_t *st)
{
    return st->commands;
}

uint64_t store_errors(const store_t *st)
{
    return st->errors;
}
