/*
 * outbox_test: the outbox worker (bridge/outbox.c) against a real
 * redis-server and a sink that holds its attempts, as the webhook does
 * while an endpoint is slow: who owns an attempt, and what becomes of one
 * the sink abandons at exit (sink.h, sink_ticket_t).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "outbox.h"
#include "redis_server.h"
#include "sink.h"
#include "store.h"
#include "testlib.h"

#define ERRLEN 256
#define HELD_MAX 8
/* How long the test waits for the worker's asynchronous Redis calls. */
#define WAIT_MS 5000

static redis_server_t srv;

/* ---- a sink that holds every attempt until the test resolves it ---- */

typedef struct holder {
    sink_ticket_t *held[HELD_MAX];
    size_t n;
} holder_t;

static void *holder_init(const sink_config_t *cfg, const sink_host_t *host, char *err,
                         size_t errlen)
{
    holder_t *h = calloc(1, sizeof(*h));

    (void)cfg;
    (void)host;
    if (!h)
        snprintf(err, errlen, "out of memory");
    return h;
}

static sink_result_t holder_submit(void *ctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    holder_t *h = ctx;

    (void)ev;
    if (h->n == HELD_MAX)
        return SINK_ERR_RETRY;
    h->held[h->n++] = ticket;
    return SINK_OK;
}

static size_t holder_flush(void *ctx, int64_t deadline_ms)
{
    (void)deadline_ms;
    return ((holder_t *)ctx)->n;
}

/* As an outbox sink's exit() does: what is held is abandoned, never resolved. */
static void holder_exit(void *ctx)
{
    free(ctx);
}

static size_t holder_capacity(void *ctx)
{
    return HELD_MAX - ((holder_t *)ctx)->n;
}

static const sink_type_t holder_type = {
    .name = "holder",
    .flags = SINK_F_OUTBOX | SINK_F_LOOP,
    .desc = "holds attempts (a test sink)",
    .options = (const sink_option_t[]){{0}},
    .init = holder_init,
    .submit = holder_submit,
    .flush = holder_flush,
    .exit = holder_exit,
    .capacity = holder_capacity,
};

/* Resolves the i-th held attempt and forgets it. */
static void holder_resolve(holder_t *h, size_t i, sink_result_t r)
{
    sink_ticket_t *t = h->held[i];

    memmove(&h->held[i], &h->held[i + 1], (h->n - i - 1) * sizeof(h->held[0]));
    h->n--;
    sink_ticket_done(t, r, r == SINK_OK ? NULL : "test");
}

/* Turns the worker and serves the loop until done(h, ob) or WAIT_MS passed. */
static bool turn_until(outbox_t *ob, loop_t *l, holder_t *h,
                       bool (*done)(const holder_t *, outbox_t *))
{
    int64_t until = now_ms() + WAIT_MS;

    while (!done(h, ob) && now_ms() < until) {
        outbox_turn(ob, false);
        loop_run_for(l, 10);
    }
    return done(h, ob);
}

static bool holds_three(const holder_t *h, outbox_t *ob)
{
    (void)ob;
    return h->n == 3;
}

static bool settled(const holder_t *h, outbox_t *ob)
{
    (void)h;
    return !outbox_busy(ob);
}

/* ---- fixtures ---- */

static void setup(void)
{
    redis_server_setup(&srv, "outbox_test", false, NULL);
}

static void teardown(void)
{
    redis_server_teardown(&srv);
}

/* Puts event id of source/session into the outbox of sink "hook", due now. */
static void outbox_put(const char *id, const char *session)
{
    char json[512];

    snprintf(json, sizeof(json),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"type\":\"session.started\","
             "\"subject\":\"%s\",\"data\":{\"source\":\"century\"}}",
             id, session);
    redis_server_ok(srv.port, "HSET sb:ob:hook %s %s", id, json);
    redis_server_ok(srv.port, "ZADD sb:ob:hook:due 0 %s", id);
}

/*
 * Three claimed attempts: one delivered, one resolved out of order, one
 * still held when the sink exits. The abandoned one stays claimed in
 * Redis, and outbox_free() frees it: before it did, the attempt and its
 * claim leaked at every shutdown with a webhook request in flight
 * (LeakSanitizer names outbox.c's attempt_start()).
 */
START_TEST(test_abandoned_attempts_are_freed)
{
    char url[64], err[ERRLEN];
    sink_errors_t errs = {0};
    size_t n = 0;

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv.port);
    store_t *st = store_new(&(store_options_t){.url = url, .timeout_ms = 2000}, err, sizeof(err));
    ck_assert_msg(st != NULL, "%s", err);
    loop_t *l = loop_new(err, sizeof(err));
    ck_assert_msg(l != NULL && store_attach(st, l, err, sizeof(err)) == 0, "%s", err);
    cJSON *json = cJSON_Parse("{\"retry_schedule_s\": [0, 5], \"timeout_s\": 1}");
    sink_config_t *cfg = sink_config_parse(&holder_type, json, "", sink_common_keys, &errs);
    ck_assert_msg(cfg != NULL, "%s", errs.msg[0]);
    outbox_put("e1", "s-1");
    outbox_put("e2", "s-2");
    outbox_put("e3", "s-3");

    holder_t *h = holder_init(cfg, &(sink_host_t){.name = "hook"}, err, sizeof(err));
    outbox_options_t oo = {
        .sink = "hook", .type = &holder_type, .ctx = h, .conf = cfg, .store = st};
    outbox_t *ob = outbox_new(&oo, err, sizeof(err));
    ck_assert_msg(ob != NULL, "%s", err);
    ck_assert(turn_until(ob, l, h, holds_three));
    ck_assert_uint_eq(outbox_in_flight(ob), 3);

    holder_resolve(h, 1, SINK_OK);        /* from the middle of the worker's list */
    holder_resolve(h, 0, SINK_ERR_RETRY); /* due again in 5 s */
    ck_assert_uint_eq(outbox_in_flight(ob), 1);
    ck_assert_uint_eq(holder_type.flush(h, 0), 1);

    /* As engine_free() does: close, exit the sink (it abandons the third), send the settles. */
    outbox_close(ob);
    holder_type.exit(h);
    outbox_settle_now(ob);
    ck_assert(turn_until(ob, l, h, settled));
    store_detach(st);
    outbox_free(ob);
    loop_free(l);
    ck_assert_int_eq(store_outbox_count(st, "hook", &n, err, sizeof(err)), 0);
    ck_assert_uint_eq(n, 2); /* the retried one and the abandoned one, still claimed */
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:hook"), 2); /* delivered: gone */

    sink_config_free(cfg);
    cJSON_Delete(json);
    store_free(st);
}
END_TEST

static Suite *outbox_suite(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("worker");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_abandoned_attempts_are_freed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(outbox_suite());
}
