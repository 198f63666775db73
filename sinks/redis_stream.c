/*
 * sinks/redis_stream: appends every event to a Redis Stream with XADD.
 *
 * Entry fields: id (the event id), type (session.started ...), source,
 * subject (the provider session id) and event (the CloudEvent JSON). The
 * stream name may hold {source} and {type}; with maxlen > 0 every XADD
 * trims the stream approximately (MAXLEN ~), which costs Redis almost
 * nothing as it drops whole nodes only.
 *
 * A ticket resolves OK when Redis answered the XADD with an entry id, i.e.
 * the entry is in Redis's memory and as durable as that server is
 * configured to make it (appendonly, replication).
 *
 * One blocking hiredis connection, used as a pipeline: submit() appends
 * the XADD to hiredis's output buffer and queues the ticket; flush() writes
 * the buffer out and reads replies only when poll(2) says the socket is
 * ready, so it waits no longer than asked (a write of a large pipeline may
 * block up to the socket timeout). Replies come back in command order, so
 * the tickets form a FIFO. An error reply resolves its ticket RETRY; a lost
 * connection, or one on which Redis stopped answering for
 * RS_REPLY_TIMEOUT_MS, resolves every queued ticket RETRY (Redis may have
 * applied some: they come again with the same ids) and the next submit()
 * reconnects, at most once per RS_RECONNECT_MS while Redis stays away.
 *
 * On the bridge's loop the socket is watched instead of polled: readable
 * (replies, or the server closing an idle connection) while connected,
 * writable while the buffer holds unsent commands, and one timer gives
 * everything back RS_REPLY_TIMEOUT_MS after the last progress.
 *
 * Everything runs on the main loop thread, ready() included (its probe
 * connection is one of its own). probe() (check --connect) runs on a
 * thread of its own and PINGs with a connection of its own: no XADD.
 */
#include "clock.h"
#include "sink.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redis_conn.h"

#define RS_DEFAULT_MAXLEN 100000
/* A bound for the config check: far beyond what fits in memory. */
#define RS_MAXLEN_MAX 1000000000LL
/* Connect, AUTH and SELECT, and every later socket read or write. */
#define RS_CONNECT_TIMEOUT_MS 2000
/* ready()'s probe while disconnected: /readyz should answer quickly. */
#define RS_PROBE_TIMEOUT_MS 1000
/* After a failed connect, submits fail at once until this has passed. */
#define RS_RECONNECT_MS 1000
/* XADDs sent and not yet answered; past it submit() refuses (RETRY). */
#define RS_PENDING_MAX 10000
/*
 * XADDs awaiting replies and none has come for this long: the server is
 * hung (stopped, swapping, a blocked script). The connection is dropped and
 * the tickets given back rather than hold the source's cycle forever.
 */
#define RS_REPLY_TIMEOUT_MS 5000
/* exit(): grace time for outstanding replies. */
#define RS_EXIT_FLUSH_MS 5000
/* Longest source name the core accepts; {source} counts as this. */
#define RS_SOURCE_MAX 64
/* Longest event kind ("completed", "cancelled"); {type} counts as this. */
#define RS_KIND_MAX 9
/* Longest expanded stream name: a key, not a document. */
#define RS_KEY_MAX 512
/* XADD key MAXLEN ~ N * and five field/value pairs. */
#define RS_ARGV_MAX 16
#define RS_MSG_MAX 512

typedef struct rs_sink {
    char *name;
    char *stream;          /* template */
    char maxlen[24];       /* decimal; "" when not trimming */
    redis_target_t target; /* immutable after init() */
    redisContext *c;       /* NULL while disconnected */
    bool unsent;           /* commands in hiredis's buffer not yet written */
    int64_t connect_after_ms;
    bool down_logged;
    char connect_err[RS_MSG_MAX]; /* why the last connect failed */
    sink_ticket_t **fifo;         /* RS_PENDING_MAX slots, in command order */
    size_t head, count;
    int64_t progress_ms; /* the last reply, or when the fifo stopped being empty */
    int connected;
    const sink_loop_t *loop; /* NULL: the caller polls */
    sink_watch_t *watch;     /* of c's socket, while connected on the loop */
    sink_timer_t *stall;     /* on the loop: the reply timeout */
} rs_sink_t;

/* ---- configuration ---- */

/* The stream name template, short enough once expanded. */
static void check_stream(const cJSON *value, const char *path, sink_errors_t *errs)
{
    size_t len = 0;

    for (const char *p = value->valuestring; *p;) {
        if (strncmp(p, "{source}", 8) == 0) {
            len += RS_SOURCE_MAX;
            p += 8;
        } else if (strncmp(p, "{type}", 6) == 0) {
            len += RS_KIND_MAX;
            p += 6;
        } else {
            len++;
            p++;
        }
    }
    if (len > RS_KEY_MAX)
        sink_errors_add(errs, path,
                        "too long: a stream name has at most %d bytes, counting {source} as %d",
                        RS_KEY_MAX, RS_SOURCE_MAX);
}

/* Only the syntax: validation connects to nothing. The message never
 * quotes the URL, which may hold a password. */
static void check_url(const cJSON *value, const char *path, sink_errors_t *errs)
{
    char why[RS_MSG_MAX];
    redis_target_t t;

    if (redis_url_parse(value->valuestring, &t, why, sizeof(why)) != 0) {
        sink_errors_add(errs, path, "%s", why);
        return;
    }
    redis_target_clear(&t);
}

static const sink_option_t rs_options[] = {
    {.key = "stream",
     .type = SINK_OPT_STRING,
     .flags = SINK_OPT_REQUIRED,
     .check = check_stream,
     .desc = "the stream's key; may hold {source} and {type}"},
    {.key = "maxlen",
     .type = SINK_OPT_INT,
     .def = SINK_STR(RS_DEFAULT_MAXLEN),
     .min = 0,
     .max = RS_MAXLEN_MAX,
     .desc = "trim the stream to about this many entries (MAXLEN ~); 0: never trim"},
    {.key = "url",
     .type = SINK_OPT_STRING,
     .check = check_url,
     .desc = "the Redis server (redis:// or rediss://); default: the bridge's redis.url"},
    {0},
};

/* ---- tickets ---- */

static void fifo_push(rs_sink_t *ctx, sink_ticket_t *t)
{
    if (ctx->count == 0)
        ctx->progress_ms = clock_mono_ms();
    ctx->fifo[(ctx->head + ctx->count) % RS_PENDING_MAX] = t;
    ctx->count++;
}

static sink_ticket_t *fifo_pop(rs_sink_t *ctx)
{
    sink_ticket_t *t = ctx->fifo[ctx->head];

    ctx->head = (ctx->head + 1) % RS_PENDING_MAX;
    ctx->count--;
    return t;
}

/* ---- connection ---- */

/*
 * Drops the connection and gives every queued ticket back: RETRY, with
 * "redis <endpoint>: <what>: <why>".
 */
static void drop_connection(rs_sink_t *ctx, const char *what, const char *why)
{
    char msg[RS_MSG_MAX];
    size_t n = ctx->count;

    snprintf(msg, sizeof(msg), "redis %s: %s: %s", ctx->target.endpoint, what, why);
    if (ctx->loop) { /* before the socket is closed */
        ctx->loop->watch_free(ctx->watch);
        ctx->watch = NULL;
    }
    if (ctx->c)
        redisFree(ctx->c);
    ctx->c = NULL;
    ctx->unsent = false;
    ctx->connected = 0;
    if (n > 0)
        sink_log(SINK_LOG_WARN, ctx->name, "%s; %zu events given back", msg, n);
    else
        sink_log(SINK_LOG_INFO, ctx->name, "%s", msg);
    while (ctx->count > 0)
        sink_ticket_done(fifo_pop(ctx), SINK_ERR_RETRY, msg);
}

/* drop_connection() after a failed hiredis call; saved_errno is errno right after it. */
static void io_failed(rs_sink_t *ctx, const char *what, int saved_errno)
{
    char why[RS_MSG_MAX / 2];

    redis_describe_error(ctx->c, saved_errno, RS_CONNECT_TIMEOUT_MS, why, sizeof(why));
    drop_connection(ctx, what, why);
}

/*
 * Makes ctx->c a connection ready for XADD. An idle connection the server
 * closed is noticed here and replaced; a failed connect is not tried again
 * for RS_RECONNECT_MS, during which its message is returned at once.
 */
static int ensure_connected(rs_sink_t *ctx, char *msg, size_t size)
{
    int64_t now;

    if (ctx->c && ctx->count == 0 && redis_idle_closed(ctx->c))
        drop_connection(ctx, "idle connection", "closed by the server");
    if (ctx->c)
        return 0;
    now = clock_mono_ms();
    if (now < ctx->connect_after_ms) {
        snprintf(msg, size, "%s", ctx->connect_err);
        return -1;
    }
    ctx->c = redis_connect_target(&ctx->target, RS_CONNECT_TIMEOUT_MS, ctx->connect_err,
                                  sizeof(ctx->connect_err));
    if (!ctx->c) {
        ctx->connect_after_ms = now + RS_RECONNECT_MS;
        sink_log(ctx->down_logged ? SINK_LOG_DEBUG : SINK_LOG_WARN, ctx->name, "%s",
                 ctx->connect_err);
        ctx->down_logged = true;
        snprintf(msg, size, "%s", ctx->connect_err);
        return -1;
    }
    ctx->down_logged = false;
    ctx->connected = 1;
    sink_log(SINK_LOG_INFO, ctx->name, "connected to redis %s", ctx->target.endpoint);
    return 0;
}

/* ---- replies ---- */

static void resolve_head(rs_sink_t *ctx, const redisReply *r)
{
    sink_ticket_t *t = fifo_pop(ctx);
    char msg[RS_MSG_MAX];

    if (r->type == REDIS_REPLY_STRING) { /* the new entry's id */
        sink_ticket_done(t, SINK_OK, NULL);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR)
        snprintf(msg, sizeof(msg), "redis %s: XADD: %.*s", ctx->target.endpoint, (int)r->len,
                 r->str);
    else
        snprintf(msg, sizeof(msg), "redis %s: XADD: unexpected reply type %d", ctx->target.endpoint,
                 r->type);
    sink_log(SINK_LOG_WARN, ctx->name, "%s", msg);
    sink_ticket_done(t, SINK_ERR_RETRY, msg);
}

/* Resolves a ticket per reply already read. Returns how many. */
static size_t take_replies(rs_sink_t *ctx)
{
    size_t n = 0;

    while (ctx->c) {
        void *reply = NULL;

        if (redisGetReplyFromReader(ctx->c, &reply) != REDIS_OK) {
            io_failed(ctx, "read", errno);
            break;
        }
        if (!reply)
            break;
        if (ctx->count == 0) { /* cannot be ours: the stream is out of step */
            freeReplyObject(reply);
            drop_connection(ctx, "read", "a reply to no command: out of step");
            break;
        }
        resolve_head(ctx, reply);
        freeReplyObject(reply);
        n++;
    }
    if (n > 0)
        ctx->progress_ms = clock_mono_ms();
    return n;
}

/*
 * One round of I/O: waits up to wait_ms for the socket, reads and resolves
 * what came back, then writes out what it can. Returns the number of
 * tickets resolved by replies. May drop the connection.
 */
static size_t serve_once(rs_sink_t *ctx, int wait_ms)
{
    struct pollfd pfd = {.fd = ctx->c->fd, .events = POLLIN};
    size_t n = 0;

    if (ctx->unsent)
        pfd.events |= POLLOUT;
    if (poll(&pfd, 1, wait_ms) <= 0)
        return 0; /* timeout, or EINTR: the caller's loop decides */
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
        if (redisBufferRead(ctx->c) != REDIS_OK) {
            int saved = errno;

            n = take_replies(ctx); /* what arrived before the error */
            if (ctx->c)
                io_failed(ctx, "read", saved);
            return n;
        }
        n = take_replies(ctx);
    }
    if (ctx->c && ctx->unsent && (pfd.revents & POLLOUT)) {
        int done = 0;

        if (redisBufferWrite(ctx->c, &done) != REDIS_OK)
            io_failed(ctx, "write", errno);
        else
            ctx->unsent = !done;
    }
    return n;
}

/* How long serve_once() may wait before the reply timeout is due. */
static int wait_budget(const rs_sink_t *ctx, int64_t deadline)
{
    int64_t now = clock_mono_ms(), left = deadline - now;
    int64_t stall = ctx->progress_ms + RS_REPLY_TIMEOUT_MS - now;

    if (stall < left)
        left = stall;
    return left > 0 ? (int)left : 0;
}

/* Gives everything back when the replies stopped for RS_REPLY_TIMEOUT_MS. */
static void check_stalled(rs_sink_t *ctx)
{
    char why[64];

    if (!ctx->c || ctx->count == 0 || clock_mono_ms() - ctx->progress_ms < RS_REPLY_TIMEOUT_MS)
        return;
    snprintf(why, sizeof(why), "no reply within %d ms", RS_REPLY_TIMEOUT_MS);
    drop_connection(ctx, "XADD", why);
}

/* ---- on the loop ---- */

static void rs_on_io(void *opaque, int fd, unsigned events);

/* What the socket is watched for now: replies always, writability while commands wait. */
static void rs_rewatch(rs_sink_t *ctx)
{
    if (!ctx->loop || !ctx->c)
        return;
    if (!ctx->watch &&
        !(ctx->watch = ctx->loop->watch_new(ctx->loop->loop, ctx->c->fd, rs_on_io, ctx))) {
        drop_connection(ctx, "watch", "out of memory");
        return;
    }
    if (ctx->loop->watch_set(ctx->watch, SINK_IO_READ | (ctx->unsent ? SINK_IO_WRITE : 0)) != 0)
        drop_connection(ctx, "watch", "the event loop refused the socket");
    else
        ctx->loop->timer_arm(
            ctx->stall,
            ctx->count == 0
                ? -1.0
                : (double)(ctx->progress_ms + RS_REPLY_TIMEOUT_MS - clock_mono_ms()) / 1000.0);
}

/* The socket is ready (replies, room to write, or the server closed it). */
static void rs_on_io(void *opaque, int fd, unsigned events)
{
    rs_sink_t *ctx = opaque;
    (void)fd;
    (void)events;

    serve_once(ctx, 0);
    check_stalled(ctx);
    rs_rewatch(ctx);
}

static void rs_on_stall(void *opaque)
{
    rs_sink_t *ctx = opaque;

    check_stalled(ctx);
    rs_rewatch(ctx);
}

/* ---- the interface ---- */

typedef struct rs_args {
    int argc;
    const char *argv[RS_ARGV_MAX];
    size_t len[RS_ARGV_MAX];
} rs_args_t;

static void arg(rs_args_t *a, const char *s, size_t len)
{
    a->argv[a->argc] = s;
    a->len[a->argc++] = len;
}

static void field(rs_args_t *a, const char *name, const char *value)
{
    arg(a, name, strlen(name));
    arg(a, value, strlen(value));
}

/* Queues XADD <key> [MAXLEN ~ N] * id .. type .. source .. subject .. event .. */
static int append_xadd(rs_sink_t *ctx, const char *key, const sink_event_t *ev)
{
    rs_args_t a = {0};

    field(&a, "XADD", key);
    if (ctx->maxlen[0]) {
        field(&a, "MAXLEN", "~");
        arg(&a, ctx->maxlen, strlen(ctx->maxlen));
    }
    arg(&a, "*", 1);
    field(&a, "id", ev->id);
    field(&a, "type", ev->type);
    field(&a, "source", ev->source);
    field(&a, "subject", ev->session_id);
    arg(&a, "event", 5);
    arg(&a, ev->json, ev->json_len);
    return redisAppendCommandArgv(ctx->c, a.argc, a.argv, a.len) == REDIS_OK ? 0 : -1;
}

static sink_result_t rs_submit(void *vctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    rs_sink_t *ctx = vctx;
    char key[RS_KEY_MAX + 1], msg[RS_MSG_MAX];

    if (ctx->count == RS_PENDING_MAX)
        return SINK_ERR_RETRY; /* the caller resolves it; flush() makes room */
    if (sink_expand_name(key, sizeof(key), ctx->stream, ev->source, ev->kind) < 0) {
        sink_log(SINK_LOG_ERROR, ctx->name, "event %s: stream name too long for source %s", ev->id,
                 ev->source);
        return SINK_ERR_RETRY;
    }
    if (ensure_connected(ctx, msg, sizeof(msg)) != 0) {
        sink_ticket_done(ticket, SINK_ERR_RETRY, msg);
        return SINK_OK;
    }
    /* hiredis only fails to append when out of memory; nothing is queued then. */
    if (append_xadd(ctx, key, ev) != 0)
        return SINK_ERR_RETRY;
    fifo_push(ctx, ticket);
    ctx->unsent = true;
    rs_rewatch(ctx);
    return SINK_OK;
}

/*
 * Serves replies until every ticket resolved or the deadline came, and
 * gives everything back when Redis stopped answering. While idle it only
 * checks whether the server closed the connection, so that ready() tells
 * the truth.
 */
static size_t rs_flush(void *vctx, int64_t deadline_ms)
{
    rs_sink_t *ctx = vctx;

    if (ctx->c && ctx->count == 0) {
        if (redis_idle_closed(ctx->c))
            drop_connection(ctx, "idle connection", "closed by the server");
        return 0;
    }
    while (ctx->c && ctx->count > 0) {
        serve_once(ctx, wait_budget(ctx, deadline_ms));
        check_stalled(ctx);
        if (clock_mono_ms() >= deadline_ms)
            break;
    }
    return ctx->count;
}

/* Up, or a connection can be made now (a probe of its own: the delivery
 * connection may be in the middle of a pipeline). */
static int rs_ready(void *vctx)
{
    rs_sink_t *ctx = vctx;
    redisContext *probe;

    if (ctx->connected)
        return 1;
    probe = redis_connect_target(&ctx->target, RS_PROBE_TIMEOUT_MS, NULL, 0);
    if (!probe)
        return 0;
    redisFree(probe);
    return 1;
}

/* The sink's Redis (its url, else the bridge's) into *t; 0, or -1 with msg. */
static int target_of(const sink_config_t *cfg, const sink_host_t *host, redis_target_t *t,
                     char *msg, size_t msglen)
{
    const char *own_url = sink_config_get(cfg, "url")->s;
    const char *url = own_url ? own_url : host ? host->redis_url : NULL;
    char why[RS_MSG_MAX];

    if (!url) {
        snprintf(msg, msglen, "url: required when the bridge has no redis.url");
        return -1;
    }
    if (redis_url_parse(url, t, why, sizeof(why)) != 0) {
        snprintf(msg, msglen, "%s: %s", own_url ? "url" : "redis.url", why);
        return -1;
    }
    return 0;
}

/* A PING on a connection of its own, within RS_CONNECT_TIMEOUT_MS and the deadline. */
static int rs_probe(const sink_config_t *cfg, const sink_host_t *host, int64_t deadline_ms,
                    char *msg, size_t msglen)
{
    redis_target_t t = {0};
    int budget = sink_ms_left(deadline_ms), rc;

    if (target_of(cfg, host, &t, msg, msglen) != 0)
        return -1;
    rc = redis_probe(&t, budget < RS_CONNECT_TIMEOUT_MS ? budget : RS_CONNECT_TIMEOUT_MS, msg,
                     msglen);
    redis_target_clear(&t);
    return rc;
}

static void rs_exit(void *vctx)
{
    rs_sink_t *ctx = vctx;

    if (!ctx)
        return;
    if (ctx->count > 0 && rs_flush(ctx, sink_deadline_in(RS_EXIT_FLUSH_MS)) > 0)
        drop_connection(ctx, "shutdown", "no reply in time"); /* gives the rest back */
    if (ctx->loop) {
        ctx->loop->watch_free(ctx->watch);
        ctx->loop->timer_free(ctx->stall);
    }
    if (ctx->c)
        redisFree(ctx->c);
    redis_target_clear(&ctx->target);
    free(ctx->fifo);
    free(ctx->stream);
    free(ctx->name);
    free(ctx);
}

static void *rs_init(const sink_config_t *cfg, const sink_host_t *host, char *err, size_t errlen)
{
    long long maxlen = sink_config_get(cfg, "maxlen")->i;
    rs_sink_t *ctx = calloc(1, sizeof(*ctx));

    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (target_of(cfg, host, &ctx->target, err, errlen) != 0)
        goto fail;
    if (maxlen > 0)
        snprintf(ctx->maxlen, sizeof(ctx->maxlen), "%lld", maxlen);
    ctx->name = strdup(host && host->name ? host->name : "redis_stream");
    ctx->stream = strdup(sink_config_get(cfg, "stream")->s);
    ctx->fifo = calloc(RS_PENDING_MAX, sizeof(*ctx->fifo));
    if (!ctx->name || !ctx->stream || !ctx->fifo) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (host && host->loop) {
        if (!(ctx->stall = host->loop->timer_new(host->loop->loop, rs_on_stall, ctx))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        ctx->loop = host->loop;
    }
    /* No connection yet: init() must not block; the first submit() connects. */
    return ctx;

fail:
    rs_exit(ctx);
    return NULL;
}

const sink_type_t sink_redis_stream_type = {
    .name = "redis_stream",
    .flags = SINK_F_LOOP,
    .desc = "every event appended to a Redis Stream (XADD), trimmed approximately",
    .options = rs_options,
    .init = rs_init,
    .submit = rs_submit,
    .flush = rs_flush,
    .exit = rs_exit,
    .ready = rs_ready,
    .probe = rs_probe,
};
