/*
 * store: fenced commits and restores on the daemon's loop (see store.h),
 * on a connection of their own: WATCH holds per connection, and between
 * MULTI and EXEC every command of the connection joins the transaction,
 * so none of the other asynchronous calls may share it.
 *
 * One commit runs at a time; the others wait in order (st->chead). A
 * commit goes through:
 *   fence  WATCH meta, GET lease, HGET meta cycle, pipelined; the
 *          reply of HGET judges the fence (UNWATCH when it refuses);
 *   tx     MULTI and the windows of store_tx_t: window k+1 is queued when
 *          Redis answered QUEUED to the last command of window k, at most
 *          STORE_TX_WINDOWS_IN_FLIGHT unanswered, so that our memory holds
 *          a few windows whatever the size of the delta; then EXEC, awaited
 *          for the command timeout plus its bytes at
 *          STORE_EXEC_MIN_BYTES_PER_S;
 *   why    an EXEC the WATCH aborted: GET and HGET again, to say why.
 * hiredis calls every callback exactly once (with NULL when the connection
 * is dropped), so a commit lives until its last reply came; its own
 * callback is called after that, from st->ckick, never from inside
 * hiredis or the call that queued it.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/sds.h>

/*
 * Windows of a transaction sent and not yet answered QUEUED. One would
 * wait a round trip per window (~100 KiB of records or ~1 MiB of letters);
 * four keep the connection busy behind 1 ms of latency while our output
 * buffer holds at most about four windows, a few MiB.
 */
#define STORE_TX_WINDOWS_IN_FLIGHT 4

typedef enum ac_state {
    AC_WAITING = 0, /* behind the commit running */
    AC_FENCE,
    AC_TX,
    AC_WHY,
    AC_DONE, /* result known; finished once no reply is awaited */
} ac_state_t;

typedef struct acommit {
    store_t *st;
    struct acommit *next;
    store_tx_t tx;
    store_fence_fn fn;
    void *opaque;
    ac_state_t state;
    unsigned pending;                           /* replies awaited */
    unsigned fence_k;                           /* replies of the fence (or why) read so far */
    size_t replied;                             /* replies of the transaction (from MULTI) */
    size_t win_end[STORE_TX_WINDOWS_IN_FLIGHT]; /* tx->commands at the end of each window */
    unsigned whead, nwin;
    bool exec_sent;
    bool queue_failed; /* a command was refused while queued: EXEC aborts */
    store_fence_read_t fr;
    store_fence_t result;
    char err[STORE_ERR_MAX];
} acommit_t;

/* No reply for the timeout (EXEC: plus its bytes' time) while some are awaited. */
static void cwatch_arm(store_t *st)
{
    const acommit_t *c = st->chead;
    double s = st->timeout_ms / 1000.0;

    if (c != NULL && c->exec_sent)
        s += (double)c->tx.bytes / STORE_EXEC_MIN_BYTES_PER_S;
    loop_timer_arm(st->cwatch, st->cinflight ? s : -1);
}

static void on_cwatch(void *opaque)
{
    store_t *st = opaque;
    char why[STORE_ERR_MAX];

    snprintf(why, sizeof why, "redis %s: commit: timed out after %d ms%s", st->endpoint,
             st->timeout_ms,
             st->chead && st->chead->exec_sent ? " and the transaction's bytes at the slowest rate"
                                               : "");
    store_aconn_drop(&st->c, why);
}

/* A reply of AUTH or SELECT: refused, the connection is dropped (the commit behind fails). */
static void on_csetup(redisAsyncContext *ac, void *reply, void *priv)
{
    store_t *st = priv;
    const redisReply *r = reply;

    char why[STORE_ERR_MAX];

    st->cinflight--;
    if (r != NULL && r->type == REDIS_REPLY_ERROR && st->c.ctx == ac) {
        snprintf(why, sizeof why, "redis %s: %.*s", st->endpoint, (int)r->len, r->str);
        store_aconn_refused(&st->c, why);
    } else if (st->c.ctx == ac) {
        cwatch_arm(st);
    }
}

static int csetup_send(void *opaque, int argc, const char **argv, const size_t *lens)
{
    store_t *st = opaque;

    if (redisAsyncCommandArgv(st->c.ctx, on_csetup, st, argc, argv, lens) != REDIS_OK)
        return -1;
    if (st->cinflight++ == 0)
        cwatch_arm(st);
    return 0;
}

/* The commit connection: the current one, or a new one with AUTH and SELECT queued ahead. */
static int cconnect(store_t *st, char *err, size_t errlen)
{
    int rc = store_aconn_open(&st->c, err, errlen);

    if (rc == 1)
        (void)store_aconn_setup(&st->c, csetup_send, st);
    return rc < 0 ? -1 : 0;
}

/* The result of c is known: it finishes once its last reply came. */
static void cfinish(acommit_t *c, store_fence_t f, const char *err)
{
    if (c->state == AC_DONE)
        return;
    c->state = AC_DONE;
    c->result = f;
    if (f == STORE_FENCE_OK)
        c->err[0] = '\0';
    else if (err != NULL && err != c->err)
        snprintf(c->err, sizeof c->err, "%s", err);
    if (f == STORE_FENCE_ERROR)
        c->st->errors++;
}

/* Why a reply of c did not come: our reason for dropping, or hiredis's. */
static void clost(acommit_t *c, const redisAsyncContext *ac)
{
    store_t *st = c->st;
    char why[STORE_ERR_MAX];

    if (st->c.fail[0])
        snprintf(why, sizeof why, "%s", st->c.fail);
    else
        snprintf(why, sizeof why, "redis %s: commit %s: %s", st->endpoint, c->tx.snap,
                 ac->err && ac->errstr[0] ? ac->errstr : "connection lost");
    if (c->exec_sent && c->state == AC_TX)
        snprintf(c->err, sizeof c->err, "%.*s (EXEC sent: it may have applied)",
                 (int)(sizeof c->err - 32), why);
    else
        snprintf(c->err, sizeof c->err, "%s", why);
    cfinish(c, STORE_FENCE_ERROR, c->err);
}

/* Every reply of c starts here; false when there is nothing more to do with it. */
static bool creply(acommit_t *c, redisAsyncContext *ac, const redisReply *r)
{
    store_t *st = c->st;

    st->cinflight--;
    c->pending--;
    if (st->c.ctx == ac)
        cwatch_arm(st); /* a reply came: the connection is alive */
    if (r == NULL && c->state != AC_DONE)
        clost(c, ac);
    if (c->state == AC_DONE) {
        if (c->pending == 0)
            loop_timer_arm(st->ckick, 0);
        return false;
    }
    return true;
}

static int csend(acommit_t *c, redisCallbackFn *fn, int argc, const char **argv, const size_t *lens)
{
    store_t *st = c->st;

    if (st->c.ctx == NULL || redisAsyncCommandArgv(st->c.ctx, fn, c, argc, argv, lens) != REDIS_OK)
        return -1;
    c->pending++;
    st->commands++;
    if (st->cinflight++ == 0)
        cwatch_arm(st);
    return 0;
}

/* A failure while c's commands go out: what was sent cannot be trusted to end well. */
static void cfail_sending(acommit_t *c, const char *why)
{
    store_t *st = c->st;

    cfinish(c, STORE_FENCE_ERROR, why);
    /* Redis discards the MULTI of a connection that closes; the NULL
     * replies of what is pending finish c */
    store_aconn_drop(&st->c, why);
    if (c->pending == 0)
        loop_timer_arm(st->ckick, 0);
}

static void on_unwatch(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)creply(priv, ac, reply);
}

static void pump(acommit_t *c);

/* WATCH, GET lease, HGET meta cycle; and the same GET and HGET after an aborted EXEC. */
static void on_fence(redisAsyncContext *ac, void *reply, void *priv)
{
    acommit_t *c = priv;
    store_t *st = c->st;
    const redisReply *r = reply;
    unsigned k = c->fence_k++;
    const char *unwatch[1] = {"UNWATCH"};
    size_t unwatch_len[1] = {7};
    char err[STORE_ERR_MAX];
    store_fence_t f;

    if (!creply(c, ac, r))
        return;
    if (c->state == AC_FENCE && k == 0) {
        if (r->type != REDIS_REPLY_STATUS) {
            snprintf(err, sizeof err, "redis %s: WATCH: %.*s", st->endpoint,
                     r->type == REDIS_REPLY_ERROR ? (int)r->len : 16,
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            cfail_sending(c, err); /* GET and HGET are answered NULL */
        }
        return;
    }
    /* 1, 2 for the fence; 0, 1 for why */
    bool owner = k == (c->state == AC_FENCE ? 1u : 0u);
    store_fence_read_take(&c->fr, owner, r);
    if (owner)
        return;
    if (c->state == AC_WHY) {
        f = store_fence_aborted(st, &c->tx, &c->fr, err, sizeof err);
        cfinish(c, f, err);
    } else if ((f = store_fence_judge(st, &c->tx, &c->fr, err, sizeof err)) == STORE_FENCE_OK) {
        c->state = AC_TX;
        pump(c);
        return;
    } else {
        cfinish(c, f, err);
        /* nothing may stay WATCHed for the next commit */
        (void)csend(c, on_unwatch, 1, unwatch, unwatch_len);
    }
    if (c->pending == 0)
        loop_timer_arm(st->ckick, 0);
}

/* The +OK of MULTI and the +QUEUED of the transaction's commands. */
static void on_queued(redisAsyncContext *ac, void *reply, void *priv)
{
    acommit_t *c = priv;
    const redisReply *r = reply;

    if (!creply(c, ac, r))
        return;
    c->replied++;
    if (r->type == REDIS_REPLY_ERROR && !c->queue_failed) {
        /* Redis aborts the EXEC: keep the first reason */
        snprintf(c->err, sizeof c->err, "redis %s: commit %s: %.*s", c->st->endpoint, c->tx.snap,
                 (int)r->len, r->str);
        c->queue_failed = true;
    }
    while (c->nwin > 0 && c->replied >= c->win_end[c->whead]) {
        c->whead = (c->whead + 1) % STORE_TX_WINDOWS_IN_FLIGHT;
        c->nwin--;
    }
    pump(c);
}

static void on_exec(redisAsyncContext *ac, void *reply, void *priv)
{
    acommit_t *c = priv;
    store_t *st = c->st;
    const redisReply *r = reply;
    const char *get[2] = {"GET", c->tx.lease}, *hget[3] = {"HGET", c->tx.meta, "cycle"};
    size_t get_len[2] = {3, strlen(c->tx.lease)}, hget_len[3] = {4, strlen(c->tx.meta), 5};
    char err[STORE_ERR_MAX];
    int rc;

    if (!creply(c, ac, r))
        return;
    rc = store_tx_exec_reply(st, r, c->tx.commands, c->tx.snap, err, sizeof err);
    if (c->queue_failed) {
        cfinish(c, STORE_FENCE_ERROR, c->err);
    } else if (rc == -2) {
        /* what moved: asked again (nothing is WATCHed now) */
        c->state = AC_WHY;
        c->fence_k = 0;
        memset(&c->fr, 0, sizeof c->fr);
        if (csend(c, on_fence, 2, get, get_len) != 0 || csend(c, on_fence, 3, hget, hget_len) != 0)
            cfail_sending(c, "redis: connection lost after an aborted commit");
        return;
    } else {
        cfinish(c, rc == 0 ? STORE_FENCE_OK : STORE_FENCE_ERROR, err);
    }
    if (c->pending == 0)
        loop_timer_arm(st->ckick, 0);
}

static int tx_send(void *opaque, int argc, const char **argv, const size_t *argvlen,
                   const char *what, char *err, size_t errlen)
{
    acommit_t *c = opaque;
    store_t *st = c->st;
    size_t had = st->c.ctx != NULL ? sdslen(st->c.ctx->c.obuf) : 0;
    bool exec = c->tx.stage == TX_EXEC;

    if (csend(c, exec ? on_exec : on_queued, argc, argv, argvlen) != 0) {
        store_set_err(err, errlen, "redis %s: %s: connection lost while sending", st->endpoint,
                      what);
        return -1;
    }
    c->tx.bytes += sdslen(st->c.ctx->c.obuf) - had;
    if (exec) {
        c->exec_sent = true;
        cwatch_arm(st); /* EXEC is awaited longer */
    }
    return 0;
}

/* Queues windows while fewer than STORE_TX_WINDOWS_IN_FLIGHT await their QUEUED. */
static void pump(acommit_t *c)
{
    char err[STORE_ERR_MAX];

    while (c->state == AC_TX && c->tx.stage != TX_DONE && c->nwin < STORE_TX_WINDOWS_IN_FLIGHT) {
        size_t before = c->tx.commands;

        if (store_tx_window(&c->tx, err, sizeof err) != 0) {
            cfail_sending(c, err);
            return;
        }
        if (c->tx.commands > before) {
            c->win_end[(c->whead + c->nwin) % STORE_TX_WINDOWS_IN_FLIGHT] = c->tx.commands;
            c->nwin++;
        }
    }
}

/* Starts the commit at the head: connects and sends the fence. */
static void cstart(acommit_t *c)
{
    store_t *st = c->st;
    const char *watch[2] = {"WATCH", c->tx.meta}, *get[2] = {"GET", c->tx.lease},
               *hget[3] = {"HGET", c->tx.meta, "cycle"};
    size_t watch_len[2] = {5, strlen(c->tx.meta)}, get_len[2] = {3, strlen(c->tx.lease)},
           hget_len[3] = {4, watch_len[1], 5};
    char err[STORE_ERR_MAX];

    c->state = AC_FENCE;
    c->tx.send = tx_send;
    c->tx.send_opaque = c;
    if (cconnect(st, err, sizeof err) != 0) {
        cfinish(c, STORE_FENCE_ERROR, err);
        return;
    }
    if (csend(c, on_fence, 2, watch, watch_len) != 0 || csend(c, on_fence, 2, get, get_len) != 0 ||
        csend(c, on_fence, 3, hget, hget_len) != 0) {
        snprintf(err, sizeof err, "redis %s: WATCH: connection lost while sending", st->endpoint);
        cfail_sending(c, err);
    }
}

/* Hands the finished commits their answers, in order, and starts the next. */
static void on_ckick(void *opaque)
{
    store_t *st = opaque;
    acommit_t *c;

    while ((c = st->chead) != NULL) {
        if (c->state == AC_WAITING) {
            cstart(c);
            continue;
        }
        if (c->state != AC_DONE || c->pending > 0)
            return;
        st->chead = c->next;
        if (st->chead == NULL)
            st->ctail = NULL;
        store_tx_free(&c->tx);
        c->fn(c->opaque, c->result, c->result == STORE_FENCE_OK ? c->tx.cycle : c->tx.base,
              c->result == STORE_FENCE_OK ? NULL : c->err);
        free(c);
    }
}

int store_acommit_attach(store_t *st, loop_t *loop)
{
    st->cwatch = loop_timer_new(loop, on_cwatch, st);
    st->ckick = loop_timer_new(loop, on_ckick, st);
    if (st->cwatch == NULL || st->ckick == NULL) {
        loop_timer_free(st->cwatch);
        loop_timer_free(st->ckick);
        st->cwatch = st->ckick = NULL;
        return -1;
    }
    return 0;
}

/* Fails the commit running and every one waiting (their callbacks now), and the connection. */
void store_acommit_detach(store_t *st)
{
    char why[STORE_ERR_MAX];
    acommit_t *c;

    snprintf(why, sizeof why, "redis %s: the store is closing", st->endpoint);
    store_aconn_drop(&st->c, why);
    while ((c = st->chead) != NULL) {
        /* the drop answered every reply it awaited */
        cfinish(c, STORE_FENCE_ERROR, why);
        st->chead = c->next;
        store_tx_free(&c->tx);
        c->fn(c->opaque, STORE_FENCE_ERROR, c->tx.base, c->err);
        free(c);
    }
    st->ctail = NULL;
    loop_timer_free(st->cwatch);
    loop_timer_free(st->ckick);
    st->cwatch = st->ckick = NULL;
}

static int enqueue(store_t *st, const char *source, const char *token, uint64_t base,
                   uint64_t cycle, size_t sessions, const store_delta_t *delta,
                   const store_extra_t *extra, const diff_index_t *ix, store_fence_fn fn,
                   void *opaque, char *err, size_t errlen)
{
    acommit_t *c;

    if (st->loop == NULL) {
        store_set_err(err, errlen, "store: not attached to a loop");
        return -1;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    if (store_tx_init(&c->tx, st, source, token, base, cycle, sessions, delta, extra, ix, err,
                      errlen) != 0) {
        free(c);
        return -1;
    }
    c->st = st;
    c->fn = fn;
    c->opaque = opaque;
    if (st->ctail != NULL)
        st->ctail->next = c;
    else
        st->chead = c;
    st->ctail = c;
    loop_timer_arm(st->ckick, 0);
    return 0;
}

int store_commit_fenced_async(store_t *st, const char *source, const char *token,
                              const store_delta_t *delta, size_t sessions_after,
                              const store_extra_t *extra, uint64_t cycle, store_fence_fn fn,
                              void *opaque, char *err, size_t errlen)
{
    if (cycle == UINT64_MAX) {
        store_set_err(err, errlen, "store: cycle number exhausted");
        return -1;
    }
    return enqueue(st, source, token, cycle, cycle + 1, sessions_after, delta, extra, NULL, fn,
                   opaque, err, errlen);
}

int store_restore_async(store_t *st, const char *source, const char *token, const diff_index_t *ix,
                        uint64_t cycle, store_fence_fn fn, void *opaque, char *err, size_t errlen)
{
    if (ix == NULL || cycle == 0) {
        store_set_err(err, errlen, "store: a restore needs a lease token, an index and a cycle");
        return -1;
    }
    /* Base 0: it writes only where Redis holds no snapshot at all. */
    return enqueue(st, source, token, 0, cycle, diff_index_size(ix), NULL, NULL, ix, fn, opaque,
                   err, errlen);
}
