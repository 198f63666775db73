/*
 * store: the asynchronous connection, on the daemon's loop (store_attach()),
 * and every *_async call (see store.h).
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/*
 * One operation: a few commands pipelined on st->a, their replies
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
    AOP_BEAT,
    /* the reads and the outbox (their state: areq_t.u) */
    AOP_LOAD,   /* HGETALL meta, then HSCAN pages, one per round trip */
    AOP_LAST,   /* HMGET of last records */
    AOP_CLAIM,  /* the claim script */
    AOP_SETTLE, /* MULTI, the settles, EXEC */
    AOP_FLAG,   /* GET of the disabled flag */
    AOP_WRITE   /* one write whose reply only has to be no error */
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
    size_t exec_n;    /* AOP_BEAT: replies its EXEC holds */
    union {
        store_done_fn done;
        store_count_fn count;
        store_lease_fn lease;
        store_beat_fn beat;
        store_load_fn load;
        store_claims_fn claims;
        store_flag_fn flag;
    } fn;
    void *opaque;
    union {
        struct {
            diff_index_t *ix; /* borrowed until the callback */
            char meta[STORE_KEY_MAX], snap[STORE_KEY_MAX];
            char what[8 + STORE_KEY_MAX];
            char cursor[STORE_U64_DIGITS + 1]; /* of the next page */
            uint64_t next;                     /* 0: the scan is over */
            bool exists;
            uint64_t cycle;
        } load;
        struct {
            store_last_fn each;
            size_t n;
            char what[7 + STORE_KEY_MAX];
        } last;
        struct {
            store_claim_t *claims; /* owned until handed to the callback */
            size_t n;
        } claim;
        struct {
            bool disabled;
            char why[STORE_ERR_MAX];
        } flag;
    } u;
} areq_t;

/* No reply for this long while some are awaited: Redis is gone or stuck. */
static void awatch_arm(store_t *st)
{
    loop_timer_arm(st->awatch, st->ainflight ? st->timeout_ms / 1000.0 : -1);
}

static void on_awatch(void *opaque)
{
    store_t *st = opaque;
    char why[STORE_ERR_MAX];

    snprintf(why, sizeof why, "redis %s: timed out after %d ms", st->endpoint, st->timeout_ms);
    store_aconn_drop(&st->a, why);
}

/* Why a reply did not come: our reason for dropping, or hiredis's. */
static void areq_lost(areq_t *q, const redisAsyncContext *ac)
{
    store_t *st = q->st;

    if (st->a.fail[0])
        snprintf(q->err, sizeof q->err, "%s", st->a.fail);
    else
        snprintf(q->err, sizeof q->err, "redis %s: %s: %s", st->endpoint, q->what,
                 ac->err && ac->errstr[0] ? ac->errstr : "connection lost");
}

static void areq_unexpected(areq_t *q)
{
    q->failed = 1;
    snprintf(q->err, sizeof q->err, "redis %s: %s: unexpected reply", q->st->endpoint, q->what);
}

/* Reply k of a read or an outbox operation (areq_take()). */
static void areq_take_read(areq_t *q, unsigned k, const redisReply *r)
{
    store_t *st = q->st;
    int rc = 0;

    switch (q->op) {
    case AOP_LOAD:
        /* the meta first, then one HSCAN page per reply, each put into the index now */
        if (k == 0)
            rc = store_meta_reply(st, q->u.load.meta, r, &q->u.load.exists, &q->u.load.cycle,
                                  q->err, sizeof q->err);
        else
            rc = store_scan_page(st, q->u.load.snap, r, store_load_pair, q->u.load.ix,
                                 q->u.load.cursor, &q->u.load.next, q->err, sizeof q->err);
        break;
    case AOP_LAST:
        rc = store_last_reply(st, q->u.last.what, r, q->u.last.n, q->u.last.each, q->opaque, q->err,
                              sizeof q->err);
        break;
    case AOP_CLAIM:
        rc = store_read_claims(st, r, &q->u.claim.claims, &q->u.claim.n, q->err, sizeof q->err);
        break;
    case AOP_SETTLE:
        /* MULTI and every command answered +OK/+QUEUED (errors came as error
         * replies); EXEC's array says whether each one applied */
        if (k + 1 == q->sent) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != q->sent - 2)
                areq_unexpected(q);
            for (size_t i = 0; !q->failed && i < r->elements; i++) {
                const redisReply *e = r->element[i];

                /* Redis does not roll back: the others applied (WRONGTYPE) */
                if (e->type == REDIS_REPLY_ERROR) {
                    q->failed = 1;
                    snprintf(q->err, sizeof q->err, "redis %s: %s: %.*s", st->endpoint, q->what,
                             (int)e->len, e->str);
                }
            }
        }
        break;
    case AOP_FLAG:
        q->u.flag.disabled = r->type == REDIS_REPLY_STRING;
        if (q->u.flag.disabled)
            store_printable(r->str, r->len, q->u.flag.why, sizeof q->u.flag.why);
        else if (r->type != REDIS_REPLY_NIL)
            areq_unexpected(q);
        break;
    default: /* AOP_WRITE: an error reply was all that could go wrong */
        break;
    }
    if (rc != 0)
        q->failed = 1;
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
        /* ZSCORE, MULTI, ZADD, ZREMRANGEBYSCORE, [SET replica,] EXEC, ZCARD */
        if (k == 0) {
            /* The score is when the entry expires, in unix ms (hiredis NUL-terminates). */
            q->was_member = r->type == REDIS_REPLY_STRING && strtod(r->str, NULL) >= (double)q->t;
        } else if (k == q->exec_n + 2) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != q->exec_n)
                areq_unexpected(q);
            for (size_t i = 0; !q->failed && i < r->elements; i++) {
                if (r->element[i]->type == REDIS_REPLY_ERROR)
                    areq_unexpected(q);
            }
        } else if (k == q->exec_n + 3) {
            if (r->type != REDIS_REPLY_INTEGER || r->integer < 0)
                areq_unexpected(q);
            else
                q->value = r->integer;
        }
        break;
    case AOP_LOAD:
    case AOP_LAST:
    case AOP_CLAIM:
    case AOP_SETTLE:
    case AOP_FLAG:
    case AOP_WRITE:
        areq_take_read(q, k, r);
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
        if (q->failed && q->st->a.ctx != NULL)
            store_aconn_refused(&q->st->a, q->err);
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
    case AOP_LOAD:
        /* a scan that did not finish leaves nothing of itself */
        if (q->failed)
            diff_index_clear(q->u.load.ix);
        q->fn.load(q->opaque, q->failed ? -1 : 0, !q->failed && q->u.load.exists,
                   q->failed ? 0 : q->u.load.cycle, err);
        break;
    case AOP_CLAIM:
        if (q->failed) {
            store_claims_free(q->u.claim.claims, q->u.claim.n);
            q->u.claim.claims = NULL;
            q->u.claim.n = 0;
        }
        q->fn.claims(q->opaque, q->failed ? -1 : 0, q->u.claim.claims, q->u.claim.n, err);
        break;
    case AOP_FLAG:
        q->fn.flag(q->opaque, q->failed ? -1 : 0, !q->failed && q->u.flag.disabled,
                   !q->failed && q->u.flag.disabled ? q->u.flag.why : NULL, err);
        break;
    case AOP_LAST:
    case AOP_SETTLE:
    case AOP_WRITE:
        q->fn.done(q->opaque, q->failed ? -1 : 0, err);
        break;
    }
    free(q);
}

static bool areq_more(areq_t *q);

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
    if (st->a.ctx == ac)
        awatch_arm(st); /* a reply came: the connection is alive */
    if (--q->pending == 0 && !areq_more(q))
        areq_finish(q);
}

/* Queues one command of q on st->a. -1 when hiredis refused it (the connection is going). */
static int areq_send(areq_t *q, int argc, const char **argv, const size_t *argvlen)
{
    store_t *st = q->st;

    if (redisAsyncCommandArgv(st->a.ctx, on_areply, q, argc, argv, argvlen) != REDIS_OK)
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

/* A command of the handshake: sent like any, but not counted, as in the blocking connect. */
static int setup_send(void *opaque, int argc, const char **argv, const size_t *lens)
{
    areq_t *q = opaque;

    if (areq_send(q, argc, argv, lens) != 0)
        return -1;
    q->st->commands--;
    return 0;
}

/*
 * A connection for the next operation: the current one, or a new one
 * (non-blocking connect; AUTH and SELECT are queued ahead of the caller's
 * commands, so nothing waits for the handshake). While the last failed
 * connect's pause runs, fails at once with its reason.
 */
static int aconnect(store_t *st, char *err, size_t errlen)
{
    int rc = store_aconn_open(&st->a, err, errlen);
    areq_t *q;

    if (rc < 0) {
        st->errors++;
        return -1;
    }
    if (rc == 0 || (st->target.password == NULL && st->target.db == 0))
        return 0;
    q = calloc(1, sizeof *q);
    if (q == NULL) {
        store_aconn_drop(&st->a, "out of memory");
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    *q = (areq_t){.st = st, .op = AOP_SETUP, .what = "AUTH"};
    (void)store_aconn_setup(&st->a, setup_send, q);
    if (q->pending == 0)
        free(q);
    return 0;
}

int store_attach(store_t *st, loop_t *loop, char *err, size_t errlen)
{
    if (st->loop != NULL)
        return 0;
    st->awatch = loop_timer_new(loop, on_awatch, st);
    if (st->awatch == NULL || store_acommit_attach(st, loop) != 0) {
        loop_timer_free(st->awatch);
        st->awatch = NULL;
        store_set_err(err, errlen, "store: out of memory");
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
    store_aconn_drop(&st->a, why);
    store_acommit_detach(st);
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
        store_set_err(err, errlen, "store: out of memory");
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
        store_set_err(err, errlen, "redis %s: %s: %s", st->endpoint, q->what,
                      st->a.ctx && st->a.ctx->errstr[0] ? st->a.ctx->errstr : "connection lost");
        st->errors++;
        free(q);
        return -1;
    }
    store_aconn_drop(&st->a, "connection lost while sending");
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

    if (store_make_key(st, kind, sink, "", key, err, errlen) != 0 ||
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

    if (store_make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        (q = areq_new(st, AOP_RENEW, "lease script", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *argv[] = {"EVAL", store_renew_script, "1", lease, token, ttl, NULL};
    q->fn.lease = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

/* The beat of store_member_beat() in one round trip: its commands pipelined. */
int store_member_beat_async(store_t *st, const char *id, const store_replica_t *who, int64_t ttl_ms,
                            store_beat_fn fn, void *opaque, char *err, size_t errlen)
{
    char members[STORE_KEY_MAX], replica[STORE_KEY_MAX], until[24], now[24], ttl[24];
    char record[STORE_REPLICA_RECORD_MAX];
    uint64_t t = (uint64_t)clock_unix_ms();
    areq_t *q;
    int rc = 0;

    if (who != NULL && store_make_key(st, "replica", id, "", replica, err, errlen) != 0)
        return -1;
    if (who != NULL && store_replica_record(who, record) != 0) {
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    if ((q = areq_new(st, AOP_BEAT, "members", opaque, err, errlen)) == NULL)
        return -1;
    q->fn.beat = fn;
    q->t = t;
    q->exec_n = who != NULL ? 3 : 2;
    snprintf(members, sizeof members, "%s:members", st->prefix);
    snprintf(until, sizeof until, "%" PRIu64, t + (uint64_t)ttl_ms);
    snprintf(now, sizeof now, "(%" PRIu64, t);
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *c[][6] = {{"ZSCORE", members, id, NULL},
                          {"MULTI", NULL},
                          {"ZADD", members, until, id, NULL},
                          {"ZREMRANGEBYSCORE", members, "-inf", now, NULL},
                          {"SET", replica, record, "PX", ttl, NULL},
                          {"EXEC", NULL},
                          {"ZCARD", members, NULL}};
    for (size_t i = 0; rc == 0 && i < sizeof c / sizeof c[0]; i++) {
        if (i != 4 || who != NULL)
            rc = areq_sendv(q, c[i]);
    }
    return areq_sent(q, rc, err, errlen);
}

int store_poll_set_async(store_t *st, const char *source, const store_poll_t *p, store_done_fn fn,
                         void *opaque, char *err, size_t errlen)
{
    char key[STORE_KEY_MAX], at[24], events[24], pages[24];
    const char *error = p->ok || p->error == NULL ? "" : p->error;
    areq_t *q;

    if (store_make_key(st, "poll", source, "", key, err, errlen) != 0 ||
        (q = areq_new(st, AOP_WRITE, "HSET poll", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(at, sizeof at, "%" PRId64, p->at_ms);
    snprintf(events, sizeof events, "%zu", p->events);
    snprintf(pages, sizeof pages, "%zu", p->pages);
    const char *argv[] = {
        "HSET",   key,    "at",    at,    "outcome", p->ok ? "ok" : "failed",     "error", error,
        "events", events, "pages", pages, "replica", p->replica ? p->replica : ""};
    size_t lens[sizeof argv / sizeof argv[0]];
    for (size_t i = 0; i < sizeof argv / sizeof argv[0]; i++)
        lens[i] = strlen(argv[i]);
    lens[7] = strnlen(error, STORE_POLL_ERROR_MAX); /* bounded: cut, not refused */
    q->fn.done = fn;
    return areq_sent(q, areq_send(q, (int)(sizeof argv / sizeof argv[0]), argv, lens), err, errlen);
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

    if (store_make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        (q = areq_new(st, AOP_ACQUIRE, "SET lease", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *set[] = {"SET", lease, token, "NX", "PX", ttl, NULL},
               *renew[] = {"EVAL", store_renew_script, "1", lease, token, ttl, NULL};
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

    if (store_make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        (q = areq_new(st, AOP_RELEASE, "lease script", opaque, err, errlen)) == NULL)
        return -1;
    const char *argv[] = {"EVAL", store_release_script, "1", lease, token, "0", NULL};
    q->fn.done = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

/* ---- the reads and the outbox ---- */

/*
 * Sends the next HSCAN page of a load. Called from the reply callback of
 * the last one (areq_more()), or with the meta read to start.
 */
static int load_send_page(areq_t *q)
{
    char count[16];
    const char *argv[5] = {"HSCAN", q->u.load.snap, q->u.load.cursor, "COUNT", count};
    size_t argvlen[5] = {5, strlen(q->u.load.snap), strlen(q->u.load.cursor), 5, 0};

    argvlen[4] = (size_t)snprintf(count, sizeof count, "%d", STORE_LOAD_SCAN_COUNT);
    return areq_send(q, 5, argv, argvlen);
}

/*
 * Every reply q awaited came: whether it goes on with more commands (the
 * next page of a load) instead of finishing. A send that fails finishes it
 * as failed.
 */
static bool areq_more(areq_t *q)
{
    store_t *st = q->st;

    if (q->op != AOP_LOAD || q->failed || q->u.load.next == 0)
        return false;
    if (st->a.ctx != NULL && load_send_page(q) == 0)
        return true;
    q->failed = 1;
    snprintf(q->err, sizeof q->err, "redis %s: %s: connection lost", st->endpoint, q->what);
    if (st->a.ctx != NULL)
        store_aconn_drop(&st->a, q->err);
    return false;
}

int store_load_async(store_t *st, const char *source, diff_index_t *ix, store_load_fn fn,
                     void *opaque, char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];
    areq_t *q;
    int rc;

    diff_index_clear(ix);
    if (store_make_keys(st, source, snap, meta, err, errlen) != 0 ||
        (q = areq_new(st, AOP_LOAD, "HSCAN", opaque, err, errlen)) == NULL)
        return -1;
    q->fn.load = fn;
    q->u.load.ix = ix;
    memcpy(q->u.load.snap, snap, sizeof snap);
    memcpy(q->u.load.meta, meta, sizeof meta);
    snprintf(q->u.load.what, sizeof q->u.load.what, "HSCAN %s", snap);
    q->what = q->u.load.what;
    q->u.load.cursor[0] = '0';
    /*
     * The snapshot hash is scanned even without meta: the index must mirror
     * what is stored, since later commits only write deltas on top of it.
     * The meta and the first page share a round trip.
     */
    const char *hgetall[] = {"HGETALL", meta, NULL};
    rc = areq_sendv(q, hgetall);
    if (rc == 0)
        rc = load_send_page(q);
    return areq_sent(q, rc, err, errlen);
}

int store_last_get_async(store_t *st, const char *source, const char *const *ids, size_t n,
                         store_last_fn each, store_done_fn done, void *opaque, char *err,
                         size_t errlen)
{
    char rec[STORE_KEY_MAX];
    const char **argv;
    size_t *argvlen;
    areq_t *q;
    int rc;

    if (n == 0 || n > STORE_BATCH || ids == NULL || each == NULL) {
        store_set_err(err, errlen, "store: %zu last records asked for (1 to %d, with ids)", n,
                      STORE_BATCH);
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        if (ids[k] == NULL) {
            store_set_err(err, errlen, "store: last record %zu asked for without an id", k);
            return -1;
        }
    }
    if (store_make_key(st, "rec", source, "", rec, err, errlen) != 0)
        return -1;
    argv = calloc(2 + n, sizeof *argv);
    argvlen = calloc(2 + n, sizeof *argvlen);
    if (argv == NULL || argvlen == NULL ||
        (q = areq_new(st, AOP_LAST, "HMGET", opaque, err, errlen)) == NULL) {
        if (argv == NULL || argvlen == NULL)
            store_set_err(err, errlen, "store: out of memory");
        free(argv);
        free(argvlen);
        return -1;
    }
    q->fn.done = done;
    q->u.last.each = each;
    q->u.last.n = n;
    snprintf(q->u.last.what, sizeof q->u.last.what, "HMGET %s", rec);
    q->what = q->u.last.what;
    argv[0] = "HMGET";
    argvlen[0] = 5;
    argv[1] = rec;
    argvlen[1] = strlen(rec);
    for (size_t k = 0; k < n; k++) {
        argv[2 + k] = ids[k];
        argvlen[2 + k] = strlen(ids[k]);
    }
    /* hiredis formats the command now: the ids need not outlive the call */
    rc = areq_send(q, (int)(2 + n), argv, argvlen);
    free(argv);
    free(argvlen);
    return areq_sent(q, rc, err, errlen);
}

int store_outbox_claim_async(store_t *st, const char *sink, size_t max, int64_t lease_ms, bool any,
                             store_claims_fn fn, void *opaque, char *err, size_t errlen)
{
    char due[STORE_KEY_MAX], body[STORE_KEY_MAX], att[STORE_KEY_MAX];
    char now_s[STORE_U64_DIGITS + 1], max_s[16], until_s[STORE_U64_DIGITS + 1];
    uint64_t now = (uint64_t)clock_unix_ms();
    areq_t *q;

    if (max == 0 || max > STORE_CLAIM_MAX) {
        store_set_err(err, errlen, "store: %zu claims asked for (1 to %d)", max, STORE_CLAIM_MAX);
        return -1;
    }
    if (store_make_key(st, "ob", sink, ":due", due, err, errlen) != 0 ||
        store_make_key(st, "ob", sink, "", body, err, errlen) != 0 ||
        store_make_key(st, "ob", sink, ":att", att, err, errlen) != 0 ||
        (q = areq_new(st, AOP_CLAIM, "outbox claim", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(now_s, sizeof now_s, "%" PRIu64, now);
    snprintf(max_s, sizeof max_s, "%zu", max);
    snprintf(until_s, sizeof until_s, "%" PRIu64, now + (uint64_t)(lease_ms > 0 ? lease_ms : 0));
    const char *argv[] = {"EVAL",  store_claim_script, "3", due, body, att, now_s, max_s,
                          until_s, any ? "1" : "0",    NULL};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    q->fn.claims = fn;
    return areq_sent(q, areq_send(q, 10, argv, lens), err, errlen);
}

/*
 * The settles go out as one MULTI ... EXEC on the shared connection. Nothing
 * else can land inside it: the loop has one thread, and no callback runs
 * between these consecutive redisAsyncCommandArgv() calls (replies are only
 * read when control is back in the loop), so the transaction's commands are
 * contiguous in hiredis's output buffer and on the wire.
 */
int store_outbox_settle_async(store_t *st, const char *sink, const store_settle_t *ops, size_t n,
                              store_done_fn fn, void *opaque, char *err, size_t errlen)
{
    char due[STORE_KEY_MAX], body[STORE_KEY_MAX], att[STORE_KEY_MAX], dlq[STORE_KEY_MAX];
    areq_t *q;
    int rc;

    if (n == 0 || n > STORE_BATCH || ops == NULL) {
        store_set_err(err, errlen, "store: %zu settles (1 to %d)", n, STORE_BATCH);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].id == NULL || (ops[i].kind == STORE_SETTLE_DEAD && ops[i].record == NULL) ||
            ops[i].kind < STORE_SETTLE_DONE || ops[i].kind > STORE_SETTLE_DEAD) {
            store_set_err(err, errlen, "store: settle %zu has no id, record or kind", i);
            return -1;
        }
    }
    if (store_make_key(st, "ob", sink, ":due", due, err, errlen) != 0 ||
        store_make_key(st, "ob", sink, "", body, err, errlen) != 0 ||
        store_make_key(st, "ob", sink, ":att", att, err, errlen) != 0 ||
        store_make_key(st, "dlq", sink, "", dlq, err, errlen) != 0 ||
        (q = areq_new(st, AOP_SETTLE, "outbox settle", opaque, err, errlen)) == NULL)
        return -1;
    q->fn.done = fn;
    const char *multi[] = {"MULTI", NULL}, *exec[] = {"EXEC", NULL};
    rc = areq_sendv(q, multi);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *id = ops[i].id;
        char score[STORE_U64_DIGITS + 2];

        if (ops[i].kind == STORE_SETTLE_RETRY) {
            /* XX: an event removed meanwhile (delivered by another holder) stays removed. */
            snprintf(score, sizeof score, "%" PRId64, ops[i].due_ms);
            const char *zadd[] = {"ZADD", due, "XX", score, id, NULL};
            rc = areq_sendv(q, zadd);
            continue;
        }
        if (ops[i].kind == STORE_SETTLE_DEAD) {
            const char *hset[] = {"HSET", dlq, id, ops[i].record, NULL};
            rc = areq_sendv(q, hset);
        }
        /* delivered or dead: out of the outbox */
        const char *c[][4] = {
            {"HDEL", body, id, NULL}, {"ZREM", due, id, NULL}, {"HDEL", att, id, NULL}};
        for (size_t j = 0; rc == 0 && j < 3; j++)
            rc = areq_sendv(q, c[j]);
    }
    if (rc == 0)
        rc = areq_sendv(q, exec);
    return areq_sent(q, rc, err, errlen);
}

int store_sink_disabled_async(store_t *st, const char *sink, store_flag_fn fn, void *opaque,
                              char *err, size_t errlen)
{
    char off[STORE_KEY_MAX];
    areq_t *q;

    if (store_make_key(st, "ob", sink, ":off", off, err, errlen) != 0 ||
        (q = areq_new(st, AOP_FLAG, "GET", opaque, err, errlen)) == NULL)
        return -1;
    const char *argv[] = {"GET", off, NULL};
    q->fn.flag = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

int store_sink_set_disabled_async(store_t *st, const char *sink, const char *why, store_done_fn fn,
                                  void *opaque, char *err, size_t errlen)
{
    char off[STORE_KEY_MAX];
    areq_t *q;

    if (store_make_key(st, "ob", sink, ":off", off, err, errlen) != 0 ||
        (q = areq_new(st, AOP_WRITE, why ? "SET" : "DEL", opaque, err, errlen)) == NULL)
        return -1;
    const char *argv[] = {why ? "SET" : "DEL", off, why, NULL};
    q->fn.done = fn;
    return areq_sent(q, areq_sendv(q, argv), err, errlen);
}

int store_member_leave_async(store_t *st, const char *id, store_done_fn fn, void *opaque, char *err,
                             size_t errlen)
{
    char members[STORE_KEY_MAX], replica[STORE_KEY_MAX];
    areq_t *q;
    int rc;

    if (store_make_key(st, "replica", id, "", replica, err, errlen) != 0 ||
        (q = areq_new(st, AOP_WRITE, "members", opaque, err, errlen)) == NULL)
        return -1;
    snprintf(members, sizeof members, "%s:members", st->prefix);
    const char *zrem[] = {"ZREM", members, id, NULL}, *del[] = {"DEL", replica, NULL};
    q->fn.done = fn;
    /* its record too: status shows no replica that left */
    rc = areq_sendv(q, zrem);
    if (rc == 0)
        rc = areq_sendv(q, del);
    return areq_sent(q, rc, err, errlen);
}
