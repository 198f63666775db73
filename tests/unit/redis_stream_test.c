/*
 * redis_stream_test: the redis_stream sink against real redis-server
 * processes (redis_server.h): config validation (table), entries read back
 * with XRANGE, {source}/{type} expansion, MAXLEN trimming, the pending
 * bound, error replies, AUTH and SELECT, and a server killed and restarted
 * under the sink.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "redis_server.h"
#include "loop.h"
#include "sink.h"
#include "testlib.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define ERRLEN 512
/* The password of every URL in the tests: no message may contain it. */
#define SECRET "s3cr3t"
/* The sink's bound on XADDs awaiting their reply (redis_stream.c). */
#define PENDING_MAX 10000
/* Entries in one stream node (redis.conf stream-node-max-entries): with
 * MAXLEN ~ N, Redis only drops whole nodes, so up to this many more stay. */
#define STREAM_NODE_ENTRIES 100
/* Safety net for waits on the sink; no test expects to come near it. */
#define WAIT_MS 10000

static const sink_type_t *const T = &sink_redis_stream_type;
static redis_server_t srv;

static void quiet(void)
{
    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
}

/* ---- sinks, entries ---- */

/*
 * A sink with the given keys (a JSON fragment); redis_url is what the
 * bridge would pass as its own Redis (may be NULL).
 */
static void *stream_sink_new(const char *keys, const char *redis_url)
{
    char json[512], err[ERRLEN] = "";
    sink_host_t host = {.name = "stream", .redis_url = redis_url, .redis_prefix = "sb"};
    cJSON *conf;
    void *ctx;

    snprintf(json, sizeof(json), "{\"name\":\"stream\",\"type\":\"redis_stream\",%s}", keys);
    conf = parse_json(json);
    ctx = sink_init(T, conf, &host, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "create %s: %s", json, err);
    cJSON_Delete(conf);
    return ctx;
}

/* A sink on srv writing to stream (a template) with maxlen. */
static void *sink_on(int port, const char *stream, long long maxlen)
{
    char keys[256], url[64];

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    snprintf(keys, sizeof(keys), "\"stream\":\"%s\",\"maxlen\":%lld", stream, maxlen);
    return stream_sink_new(keys, url);
}

static sink_result_t submit(void *ctx, test_event_t *ev, test_ticket_t *t)
{
    ticket_init(t);
    return T->submit(ctx, &ev->ev, &t->t);
}

static void submit_ok(void *ctx, test_event_t *ev, test_ticket_t *t)
{
    ck_assert_int_eq(submit(ctx, ev, t), SINK_OK);
}

static void assert_resolved(const test_ticket_t *t, sink_result_t want)
{
    ck_assert_int_eq(t->calls, 1);
    ck_assert_msg(t->result == want, "result %d, want %d: %s", t->result, want, t->err);
}

static void flush_ok(void *ctx)
{
    ck_assert_uint_eq(T->flush(ctx, sink_deadline_in(WAIT_MS)), 0);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
}

/* XRANGE key - + in db; the caller frees the reply. */
static redisReply *xrange(int port, int db, const char *key)
{
    redisContext *c = redis_server_connect(port);
    redisReply *r;

    ck_assert_ptr_nonnull(c);
    if (db != 0)
        freeReplyObject(redisCommand(c, "SELECT %d", db));
    r = redisCommand(c, "XRANGE %s - +", key);
    redisFree(c);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static void assert_field(const redisReply *fields, size_t i, const char *name, const char *value)
{
    ck_assert_str_eq(fields->element[2 * i]->str, name);
    ck_assert_str_eq(fields->element[2 * i + 1]->str, value);
}

/* One XRANGE entry: [id, [id, .., type, .., source, .., subject, .., event, ..]]. */
static void assert_entry(const redisReply *entry, const test_event_t *ev)
{
    const redisReply *fields;

    ck_assert_uint_eq(entry->elements, 2);
    fields = entry->element[1];
    ck_assert_uint_eq(fields->elements, 10);
    assert_field(fields, 0, "id", ev->id);
    assert_field(fields, 1, "type", ev->type);
    assert_field(fields, 2, "source", ev->ev.source);
    assert_field(fields, 3, "subject", ev->ev.session_id);
    assert_field(fields, 4, "event", ev->json);
}

/* Exactly the events ev[idx[0]], ev[idx[1]] .. are in key, in that order. */
static void assert_stream(int port, int db, const char *key, const test_event_t *ev, const int *idx,
                          size_t n)
{
    redisReply *r = xrange(port, db, key);

    ck_assert_msg(r->elements == n, "%s: %zu entries, want %zu", key, r->elements, n);
    for (size_t i = 0; i < n; i++)
        assert_entry(r->element[i], &ev[idx[i]]);
    freeReplyObject(r);
}

static void assert_no_secret(const char *msg)
{
    ck_assert_msg(strstr(msg, SECRET) == NULL, "the password leaked into: %s", msg);
}

/* ---- validation (table, no server) ---- */

static const struct validate_case {
    const char *json;
    const char *expect[3]; /* exact messages, in order; none: valid */
} validate_cases[] = {
    {"{\"name\":\"s\",\"type\":\"redis_stream\",\"events\":[\"started\"],\"sources\":[\"a\"],"
     "\"stream\":\"sessions:{source}:{type}\"}",
     {NULL}},
    {"{\"stream\":\"sessions\",\"maxlen\":0,\"url\":\"redis://alice:" SECRET "@10.0.0.1:6380/2\"}",
     {NULL}},
    {"{\"stream\":\"s\",\"maxlen\":1000000000}", {NULL}},
    {"{}", {"sinks[3].stream: required, expected a non-empty string"}},
    {"{\"stream\":\"\"}", {"sinks[3].stream: expected a non-empty string"}},
    {"{\"stream\":[\"a\"]}", {"sinks[3].stream: expected a non-empty string"}},
    {"{\"stream\":\"s\",\"maxlen\":-1}",
     {"sinks[3].maxlen: expected an integer between 0 and 1000000000, got -1"}},
    {"{\"stream\":\"s\",\"maxlen\":\"100\"}",
     {"sinks[3].maxlen: expected an integer between 0 and 1000000000"}},
    {"{\"stream\":\"s\",\"url\":\"http://127.0.0.1\"}",
     {"sinks[3].url: invalid redis URL: the scheme must be redis://"}},
    {"{\"stream\":\"s\",\"url\":\"redis://:" SECRET "@h:99999\"}",
     {"sinks[3].url: invalid redis URL: the port must be 1..65535"}},
    {"{\"stream\":\"s\",\"url\":\"redis://:" SECRET "@@:x\"}",
     {"sinks[3].url: invalid redis URL: no host"}},
    {"{\"stream\":\"s\",\"url\":\"rediss://:" SECRET "@h\"}",
     {"sinks[3].url: invalid redis URL: TLS (rediss://) is not supported"}},
    {"{\"stream\":\"s\",\"url\":\"\"}", {"sinks[3].url: expected a non-empty string"}},
    {"\"s\"", {"sinks[3]: expected an object"}},
    /* Everything wrong at once is reported at once, in document order. */
    {"{\"steam\":\"s\",\"maxlen\":1.5,\"url\":\"redis://\"}",
     {"sinks[3].steam: unknown key (did you mean \"stream\"?)",
      "sinks[3].stream: required, expected a non-empty string",
      "sinks[3].maxlen: expected an integer between 0 and 1000000000"}},
};

START_TEST(test_validate)
{
    const struct validate_case *c = &validate_cases[_i];

    assert_validate(T, c->json, "sinks[3]", c->expect, N(c->expect), SECRET, _i);
}
END_TEST

/* {source} counts as the longest source name (64): the expanded name must fit. */
START_TEST(test_stream_name_too_long)
{
    char json[1024];
    sink_errors_t errs = {0};
    cJSON *j;
    int n = snprintf(json, sizeof(json), "{\"stream\":\"{source}:");

    memset(json + n, 'x', 450);
    snprintf(json + n + 450, sizeof(json) - (size_t)n - 450, "\"}");
    j = parse_json(json);
    ck_assert_int_eq(sink_validate(T, j, "sinks[3]", &errs), -1);
    ck_assert_msg(errs_contain(&errs, "sinks[3].stream: too long"), "%s", errs_dump(&errs));
    cJSON_Delete(j);
}
END_TEST

/* init() connects to nothing, so a server that is down is no error there;
 * a missing or bad URL is, and the message says which key. */
START_TEST(test_create)
{
    char err[ERRLEN] = "", url[64];
    cJSON *conf = parse_json("{\"stream\":\"s\"}");
    cJSON *with_url = parse_json("{\"stream\":\"s\",\"url\":\"redis://h:0\"}");
    sink_host_t host = {.name = "stream"};
    void *ctx;

    ck_assert_ptr_null(sink_init(T, conf, &host, err, sizeof(err)));
    ck_assert_str_eq(err, "url: required when the bridge has no redis.url");
    host.redis_url = "redis://:" SECRET "@h:0";
    ck_assert_ptr_null(sink_init(T, conf, &host, err, sizeof(err)));
    ck_assert_str_eq(err, "redis.url: invalid redis URL: the port must be 1..65535");
    ck_assert_ptr_null(sink_init(T, with_url, &host, err, sizeof(err)));
    ck_assert_str_eq(err, "url: invalid redis URL: the port must be 1..65535");

    snprintf(url, sizeof(url), "redis://:" SECRET "@127.0.0.1:%d", redis_server_free_port());
    host.redis_url = url;
    ctx = sink_init(T, conf, &host, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "%s", err);
    ck_assert_int_eq(T->ready(ctx), 0);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
    ck_assert_uint_eq(T->flush(ctx, sink_deadline_in(0)), 0);
    T->exit(ctx);
    T->exit(NULL);
    cJSON_Delete(conf);
    cJSON_Delete(with_url);
}
END_TEST

/* A server that is down: every submit resolves RETRY at once, naming the
 * endpoint and never the password. */
START_TEST(test_server_down)
{
    char url[96], endpoint[32];
    int port = redis_server_free_port();
    test_event_t ev;
    test_ticket_t t;
    void *ctx;

    snprintf(url, sizeof(url), "redis://:" SECRET "@127.0.0.1:%d", port);
    snprintf(endpoint, sizeof(endpoint), "redis 127.0.0.1:%d", port);
    ctx = stream_sink_new("\"stream\":\"s\"", url);
    event_init(&ev, "century", "s-1", "started", 0);
    for (int i = 0; i < 3; i++) {
        submit_ok(ctx, &ev, &t);
        assert_resolved(&t, SINK_ERR_RETRY);
        ck_assert_msg(strstr(t.err, endpoint) && strstr(t.err, "refused"), "%s", t.err);
        assert_no_secret(t.err);
    }
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
    ck_assert_int_eq(T->ready(ctx), 0);
    T->exit(ctx);
}
END_TEST

/* ---- one shared server ---- */

static void basic_setup(void)
{
    quiet();
    redis_server_setup(&srv, "redis_stream_test", false, NULL);
}

static void basic_teardown(void)
{
    redis_server_teardown(&srv);
}

/*
 * Events of two sources and three kinds go to "ev:{source}:{type}": each
 * stream holds exactly its events, in submit order, with every field.
 */
START_TEST(test_round_trip)
{
    enum { EVENTS = 30 };
    static const char *const sources[] = {"century", "quiz"};
    static const char *const kinds[] = {"started", "completed", "cancelled"};
    test_event_t ev[EVENTS];
    test_ticket_t t[EVENTS];
    void *ctx = sink_on(srv.port, "ev:{source}:{type}", 0);

    for (int i = 0; i < EVENTS; i++) {
        char session[16];

        snprintf(session, sizeof(session), "s-%d", i / 3);
        event_init(&ev[i], sources[i % 2], session, kinds[i % 3], i);
        submit_ok(ctx, &ev[i], &t[i]);
    }
    ck_assert_int_eq(t[EVENTS - 1].calls, 0); /* replies are read in flush() */
    ck_assert(flush_until_resolved(T, ctx, t, EVENTS, WAIT_MS));
    for (int i = 0; i < EVENTS; i++)
        assert_resolved(&t[i], SINK_OK);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
    ck_assert_int_eq(T->ready(ctx), 1);

    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < 3; k++) {
            char key[64];
            int idx[EVENTS];
            size_t n = 0;

            for (int i = 0; i < EVENTS; i++) {
                if (i % 2 == s && i % 3 == k)
                    idx[n++] = i;
            }
            snprintf(key, sizeof(key), "ev:%s:%s", sources[s], kinds[k]);
            assert_stream(srv.port, 0, key, ev, idx, n);
        }
    }
    T->exit(ctx);
}
END_TEST

/*
 * maxlen N: XADD .. MAXLEN ~ N keeps the stream between N and N plus one
 * node's worth of entries (approximate trimming drops whole nodes), and the
 * newest entry is the last event; maxlen 0 trims nothing.
 */
/*
 * On the bridge's loop nothing polls: the watch of the socket writes the
 * pipeline out, reads the replies and resolves the tickets.
 */
START_TEST(test_on_the_loop)
{
    enum { EVENTS = 5 };
    char json[512], err[ERRLEN] = "";
    test_event_t ev[EVENTS];
    test_ticket_t t[EVENTS];
    loop_t *loop = loop_new(err, sizeof(err));
    void *ctx;

    ck_assert_msg(loop != NULL, "%s", err);
    snprintf(json, sizeof(json),
             "{\"name\":\"stream\",\"type\":\"redis_stream\",\"stream\":\"loop:ev\","
             "\"url\":\"redis://127.0.0.1:%d\"}",
             srv.port);
    ctx = sink_on_loop(T, "stream", json, loop_sink_api(loop));
    for (int i = 0; i < EVENTS; i++) {
        event_init(&ev[i], "century", "s-1", "started", i);
        submit_ok(ctx, &ev[i], &t[i]);
    }
    sink_done_on_loop(T, ctx, loop_sink_api(loop), t, EVENTS, WAIT_MS);
    loop_free(loop);
}
END_TEST

START_TEST(test_maxlen)
{
    enum { EVENTS = 1000, MAXLEN = 50 };
    static test_event_t ev[EVENTS];
    static test_ticket_t t[EVENTS];
    void *trimmed = sink_on(srv.port, "trimmed", MAXLEN);
    void *full = sink_on(srv.port, "full", 0);
    long long len;
    redisReply *r;

    for (int i = 0; i < EVENTS; i++) {
        test_ticket_t other;

        event_init(&ev[i], "century", "s-1", "started", i);
        submit_ok(trimmed, &ev[i], &t[i]);
        submit_ok(full, &ev[i], &other);
        flush_ok(full);
        assert_resolved(&other, SINK_OK);
    }
    flush_ok(trimmed);
    for (int i = 0; i < EVENTS; i++)
        assert_resolved(&t[i], SINK_OK);

    len = redis_server_int(srv.port, "XLEN trimmed");
    ck_assert_int_ge(len, MAXLEN);
    ck_assert_int_le(len, MAXLEN + STREAM_NODE_ENTRIES);
    ck_assert_int_eq(redis_server_int(srv.port, "XLEN full"), EVENTS);
    r = xrange(srv.port, 0, "trimmed");
    assert_entry(r->element[r->elements - 1], &ev[EVENTS - 1]);
    freeReplyObject(r);
    T->exit(trimmed);
    T->exit(full);
}
END_TEST

/*
 * Up to PENDING_MAX XADDs may await their replies; the next submit is
 * refused (RETRY, ticket untouched) until flush() made room.
 */
START_TEST(test_pending_bound)
{
    static test_ticket_t t[PENDING_MAX + 1];
    test_event_t ev;
    void *ctx = sink_on(srv.port, "bounded", 0);

    event_init(&ev, "century", "s-1", "started", 0);
    for (int i = 0; i < PENDING_MAX; i++)
        submit_ok(ctx, &ev, &t[i]);
    ck_assert_int_eq(t[PENDING_MAX - 1].calls, 0);
    ck_assert_int_eq(submit(ctx, &ev, &t[PENDING_MAX]), SINK_ERR_RETRY);
    ck_assert_int_eq(t[PENDING_MAX].calls, 0);
    flush_ok(ctx);
    for (int i = 0; i < PENDING_MAX; i++)
        assert_resolved(&t[i], SINK_OK);
    submit_ok(ctx, &ev, &t[PENDING_MAX]);
    flush_ok(ctx);
    assert_resolved(&t[PENDING_MAX], SINK_OK);
    ck_assert_int_eq(redis_server_int(srv.port, "XLEN bounded"), PENDING_MAX + 1);
    T->exit(ctx);
}
END_TEST

/*
 * An error reply (the key holds a string) resolves only its own ticket
 * RETRY, with Redis's message; the pipeline around it goes on.
 */
START_TEST(test_error_reply)
{
    test_event_t ev[3];
    test_ticket_t t[3];
    void *ctx = sink_on(srv.port, "ev:{source}", 0);
    const int ok[] = {0, 2};

    redis_server_ok(srv.port, "SET ev:quiz not-a-stream");
    event_init(&ev[0], "century", "s-1", "started", 0);
    event_init(&ev[1], "quiz", "s-2", "started", 1);
    event_init(&ev[2], "century", "s-1", "completed", 2);
    for (int i = 0; i < 3; i++)
        submit_ok(ctx, &ev[i], &t[i]);
    flush_ok(ctx);
    assert_resolved(&t[0], SINK_OK);
    assert_resolved(&t[1], SINK_ERR_RETRY);
    ck_assert_msg(strstr(t[1].err, "XADD") && strstr(t[1].err, "WRONGTYPE"), "%s", t[1].err);
    assert_resolved(&t[2], SINK_OK);
    ck_assert_int_eq(T->ready(ctx), 1);
    assert_stream(srv.port, 0, "ev:century", ev, ok, 2);
    T->exit(ctx);
}
END_TEST

/* The bridge's own Redis (host->redis_url) is the default, database included. */
START_TEST(test_default_url_and_db)
{
    char url[64];
    test_event_t ev;
    test_ticket_t t;
    void *ctx;
    const int first[] = {0};

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", srv.port);
    ctx = stream_sink_new("\"stream\":\"in-db-2\"", url);
    event_init(&ev, "century", "s-1", "started", 0);
    submit_ok(ctx, &ev, &t);
    flush_ok(ctx);
    assert_resolved(&t, SINK_OK);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS in-db-2"), 0);
    assert_stream(srv.port, 2, "in-db-2", &ev, first, 1);
    T->exit(ctx);
}
END_TEST

/* A connection the server closed while idle is replaced without a RETRY. */
START_TEST(test_idle_connection_closed_by_server)
{
    test_event_t ev;
    test_ticket_t t;
    void *ctx = sink_on(srv.port, "idle", 0);

    event_init(&ev, "century", "s-1", "started", 0);
    for (int round = 0; round < 3; round++) {
        submit_ok(ctx, &ev, &t);
        flush_ok(ctx);
        assert_resolved(&t, SINK_OK);
        ck_assert_int_ge(redis_server_int(srv.port, "CLIENT KILL TYPE normal SKIPME yes"), 1);
        sleep_ms(50);
        if (round == 1)
            T->flush(ctx, sink_deadline_in(0)); /* notices it here rather than in submit() */
    }
    ck_assert_int_eq(redis_server_int(srv.port, "XLEN idle"), 3);
    T->exit(ctx);
}
END_TEST

/* ---- authentication ---- */

static const char *const auth_args[] = {"--requirepass", SECRET, NULL};

static void auth_setup(void)
{
    quiet();
    redis_server_setup(&srv, "redis_stream_test", false, auth_args);
}

START_TEST(test_auth)
{
    char url[96];
    test_event_t ev;
    test_ticket_t t;
    void *ctx;

    event_init(&ev, "century", "s-1", "started", 0);
    snprintf(url, sizeof(url), "redis://:" SECRET "@127.0.0.1:%d", srv.port);
    ctx = stream_sink_new("\"stream\":\"authed\"", url);
    submit_ok(ctx, &ev, &t);
    flush_ok(ctx);
    assert_resolved(&t, SINK_OK);
    T->exit(ctx);

    snprintf(url, sizeof(url), "redis://:" SECRET "-wrong@127.0.0.1:%d", srv.port);
    ctx = stream_sink_new("\"stream\":\"authed\"", url);
    submit_ok(ctx, &ev, &t);
    assert_resolved(&t, SINK_ERR_RETRY);
    ck_assert_msg(strstr(t.err, "AUTH") != NULL, "%s", t.err);
    assert_no_secret(t.err);
    ck_assert_int_eq(T->ready(ctx), 0);
    T->exit(ctx);
}
END_TEST

/* ---- a server killed and restarted ---- */

/* The runner owns the directory; each test starts its own server in it. */
static void restart_dir_setup(void)
{
    quiet();
    redis_server_prepare(&srv, "redis_stream_test");
}

static void restart_setup(void)
{
    redis_server_start_fresh(&srv, true);
}

static void restart_teardown(void)
{
    redis_server_kill(&srv);
}

/*
 * Killed with XADDs awaiting replies: each of those tickets resolves RETRY
 * (the entries may or may not be in Redis: at-least-once), nothing stays
 * pending, and while the server is down submits fail at once. Restarted:
 * delivery resumes on a new connection, and what was acknowledged before
 * is still there.
 */
START_TEST(test_killed_and_restarted)
{
    enum { BEFORE = 5, DURING = 5 };
    test_event_t ev[BEFORE + DURING + 1];
    test_ticket_t t[BEFORE + DURING + 1];
    char endpoint[32];
    void *ctx = sink_on(srv.port, "outage", 0);
    int64_t deadline;
    int delivered = 0;
    redisReply *r;

    snprintf(endpoint, sizeof(endpoint), "redis 127.0.0.1:%d", srv.port);
    for (int i = 0; i < N(ev); i++)
        event_init(&ev[i], "century", "s-1", "started", i);
    for (int i = 0; i < BEFORE; i++)
        submit_ok(ctx, &ev[i], &t[i]);
    flush_ok(ctx);

    for (int i = BEFORE; i < BEFORE + DURING; i++)
        submit_ok(ctx, &ev[i], &t[i]);
    redis_server_kill(&srv);
    ck_assert(flush_until_resolved(T, ctx, &t[BEFORE], DURING, WAIT_MS));
    for (int i = BEFORE; i < BEFORE + DURING; i++) {
        assert_resolved(&t[i], SINK_ERR_RETRY);
        ck_assert_msg(strstr(t[i].err, endpoint) != NULL, "%s", t[i].err);
    }
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
    ck_assert_int_eq(T->ready(ctx), 0);
    submit_ok(ctx, &ev[BEFORE], &t[BEFORE]);
    assert_resolved(&t[BEFORE], SINK_ERR_RETRY);
    ck_assert_msg(strstr(t[BEFORE].err, "refused") != NULL, "%s", t[BEFORE].err);

    redis_server_start(&srv); /* same port and directory: the AOF is replayed */
    ck_assert_int_eq(T->ready(ctx), 1);
    /* Submits fail at once for a second after a failed connect; then the
     * next one connects. */
    deadline = now_ms() + WAIT_MS;
    for (int i = BEFORE; i < N(ev) && now_ms() < deadline;) {
        submit_ok(ctx, &ev[i], &t[i]);
        flush_ok(ctx);
        if (t[i].result == SINK_OK) {
            delivered++;
            i++;
        } else {
            sleep_ms(100);
        }
    }
    ck_assert_int_eq(delivered, DURING + 1);
    r = xrange(srv.port, 0, "outage");
    ck_assert_uint_ge(r->elements, BEFORE + DURING + 1);
    for (int i = 0; i < BEFORE; i++)
        assert_entry(r->element[i], &ev[i]);
    assert_entry(r->element[r->elements - 1], &ev[N(ev) - 1]);
    freeReplyObject(r);
    T->exit(ctx);
}
END_TEST

/*
 * A server that stops answering (SIGSTOP: the connection stays open) would
 * hold the cycle forever: after RS_REPLY_TIMEOUT_MS without a reply the
 * pending tickets resolve RETRY, and delivery resumes once it is back.
 */
START_TEST(test_hung_server)
{
    test_event_t ev[2];
    test_ticket_t t[2];
    void *ctx = sink_on(srv.port, "hung", 0);

    event_init(&ev[0], "century", "s-1", "started", 0);
    event_init(&ev[1], "century", "s-1", "completed", 1);
    submit_ok(ctx, &ev[0], &t[0]);
    flush_ok(ctx);
    assert_resolved(&t[0], SINK_OK);

    kill(srv.pid, SIGSTOP);
    submit_ok(ctx, &ev[1], &t[1]);
    ck_assert_uint_eq(T->flush(ctx, sink_deadline_in(WAIT_MS)), 0); /* resolved, if not delivered */
    kill(srv.pid, SIGCONT);
    assert_resolved(&t[1], SINK_ERR_RETRY);
    ck_assert_msg(strstr(t[1].err, "no reply within") != NULL, "%s", t[1].err);

    submit_ok(ctx, &ev[1], &t[1]);
    flush_ok(ctx);
    assert_resolved(&t[1], SINK_OK);
    ck_assert_int_ge(redis_server_int(srv.port, "XLEN hung"), 2);
    T->exit(ctx);
}
END_TEST

/* check --connect's probe against port, through the bridge's redis.url. */
static int probe_port(int port, char *msg, size_t size)
{
    char url[64];
    cJSON *conf = parse_json("{\"name\":\"stream\",\"type\":\"redis_stream\",\"stream\":\"s\"}");
    int rc;

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    rc = sink_probe(T, conf, &(sink_host_t){.name = "stream", .redis_url = url},
                    sink_deadline_in(5000), msg, size);
    cJSON_Delete(conf);
    return rc;
}

/* The probe PINGs and reads the version, and writes nothing; a server that is down fails it. */
START_TEST(test_probe)
{
    char msg[ERRLEN], want[64];
    int down = redis_server_free_port();

    ck_assert_int_eq(probe_port(srv.port, msg, sizeof(msg)), 0);
    snprintf(want, sizeof(want), " at 127.0.0.1:%d", srv.port);
    ck_assert_msg(strncmp(msg, "redis ", 6) == 0 && strstr(msg, want), "%s", msg);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS s"), 0);
    ck_assert_int_eq(probe_port(down, msg, sizeof(msg)), -1);
    snprintf(want, sizeof(want), "redis 127.0.0.1:%d: connect: ", down);
    ck_assert_msg(strstr(msg, want) == msg, "%s", msg);
}
END_TEST

static Suite *redis_stream_suite(void)
{
    Suite *s = suite_create("redis_stream");
    TCase *tc;

    tc = tcase_create("config");
    tcase_add_checked_fixture(tc, quiet, NULL);
    tcase_add_loop_test(tc, test_validate, 0, N(validate_cases));
    tcase_add_test(tc, test_stream_name_too_long);
    tcase_add_test(tc, test_create);
    tcase_add_test(tc, test_server_down);
    suite_add_tcase(s, tc);

    tc = tcase_create("redis");
    tcase_add_unchecked_fixture(tc, basic_setup, basic_teardown);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_on_the_loop);
    tcase_add_test(tc, test_maxlen);
    tcase_add_test(tc, test_pending_bound);
    tcase_add_test(tc, test_error_reply);
    tcase_add_test(tc, test_default_url_and_db);
    tcase_add_test(tc, test_idle_connection_closed_by_server);
    tcase_add_test(tc, test_probe);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_add_unchecked_fixture(tc, auth_setup, basic_teardown);
    tcase_add_test(tc, test_auth);
    suite_add_tcase(s, tc);

    /* These kill their server: each test starts its own, in the test process. */
    tc = tcase_create("restart");
    tcase_add_unchecked_fixture(tc, restart_dir_setup, basic_teardown);
    tcase_add_checked_fixture(tc, restart_setup, restart_teardown);
    tcase_add_test(tc, test_killed_and_restarted);
    tcase_add_test(tc, test_hung_server);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(redis_stream_suite());
}
