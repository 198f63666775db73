/*
 * store: one asynchronous connection on the daemon's loop (store_aconn_t),
 * as async.c's operations and acommit.c's commits each have one: the
 * non-blocking connect with its pause after a failure, hiredis's libevent
 * adapter, and the drop that fails every reply awaited on it.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#include <hiredis/adapters/libevent.h>

#include "clock.h"

static void on_connect(const redisAsyncContext *ac, int status)
{
    store_aconn_t *c = ac->data;

    if (status == REDIS_OK) {
        backoff_reset(&c->reconnect);
        return;
    }
    /* hiredis frees ac after this, failing what was queued on it */
    snprintf(c->connect_error, sizeof c->connect_error, "redis %s: connect: %s", c->st->endpoint,
             ac->errstr[0] ? ac->errstr : "failed");
    snprintf(c->fail, sizeof c->fail, "%s", c->connect_error);
    backoff_failed(&c->reconnect, clock_mono_s(), 0);
    if (c->ctx == ac)
        c->ctx = NULL;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    store_aconn_t *c = ac->data;
    (void)status;

    if (c->ctx == ac)
        c->ctx = NULL;
}

void store_aconn_init(store_aconn_t *c, store_t *st, const backoff_policy_t *pause)
{
    memset(c, 0, sizeof *c);
    c->st = st;
    c->reconnect = backoff_init(pause);
}

int store_aconn_open(store_aconn_t *c, char *err, size_t errlen)
{
    store_t *st = c->st;
    redisAsyncContext *ac;

    if (st->loop == NULL) {
        store_set_err(err, errlen, "store: not attached to a loop");
        return -1;
    }
    if (c->ctx != NULL)
        return 0;
    if (!backoff_ready(&c->reconnect, clock_mono_s())) {
        store_set_err(err, errlen, "%s", c->connect_error);
        return -1;
    }
    ac = redisAsyncConnect(st->target.host, st->target.port);
    if (ac == NULL || ac->err) {
        snprintf(c->connect_error, sizeof c->connect_error, "redis %s: connect: %s", st->endpoint,
                 ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        backoff_failed(&c->reconnect, clock_mono_s(), 0);
        store_set_err(err, errlen, "%s", c->connect_error);
        return -1;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, loop_event_base(st->loop)) != REDIS_OK) {
        redisAsyncFree(ac);
        store_set_err(err, errlen, "redis %s: cannot watch the connection", st->endpoint);
        return -1;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ctx = ac;
    c->fail[0] = '\0';
    return 1;
}

void store_aconn_refused(store_aconn_t *c, const char *why)
{
    snprintf(c->connect_error, sizeof c->connect_error, "%s", why);
    backoff_failed(&c->reconnect, clock_mono_s(), 0);
    store_aconn_drop(c, c->connect_error);
}

void store_aconn_drop(store_aconn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ctx;

    if (ac == NULL)
        return;
    if (why != c->fail)
        snprintf(c->fail, sizeof c->fail, "%s", why);
    c->ctx = NULL;
    redisAsyncFree(ac);
}

int store_aconn_setup(store_aconn_t *c, store_aconn_send_fn send, void *opaque)
{
    const store_t *st = c->st;
    int rc = 0;

    /* The password goes on the wire only, never into a message. */
    if (st->target.password != NULL) {
        const char *argv[3] = {"AUTH", st->target.user, st->target.password};
        size_t lens[3] = {4, st->target.user_len, st->target.password_len};
        int argc = st->target.user != NULL ? 3 : 2;
        if (argc == 2) {
            argv[1] = st->target.password;
            lens[1] = st->target.password_len;
        }
        rc = send(opaque, argc, argv, lens);
    }
    if (rc == 0 && st->target.db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)snprintf(db, sizeof db, "%d", st->target.db)};
        rc = send(opaque, 2, argv, lens);
    }
    return rc;
}
