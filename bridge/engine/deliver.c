/*
 * engine, delivery: a cycle's events handed to every sink that routes them
 * in windows of tickets, each ticket's result (a refusal for good becomes a
 * dead letter the commit writes), and the timers of the sinks that keep
 * their own pace (outbox workers, sinks polled off the loop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Deliveries in flight per source. A first cycle with initial_snapshot=emit
 * can hold a whole population's events; handing them over in windows keeps
 * the sinks' queues (and our memory) bounded.
 */
#define ENGINE_DELIVERY_WINDOW 5000
/*
 * How often a sink that does not use the loop (no SINK_F_LOOP) is flushed
 * with a deadline already past, which serves it without waiting: while it
 * holds events, and while idle (where its flush() may notice a closed
 * connection or a moved file).
 */
#define ENGINE_POLL_BUSY_S 0.01
#define ENGINE_POLL_IDLE_S 0.1

/* ---- delivery ---- */

/* The result label of session_bridge_sink_deliveries_total. */
const char *deliver_result(sink_result_t r)
{
    switch (r) {
    case SINK_OK:
        return "ok";
    case SINK_ERR_RETRY:
        return "retry";
    case SINK_ERR_PERMANENT:
        return "dead_letter";
    case SINK_ERR_FATAL:
    case SINK_ERR_GONE:
        break;
    }
    return "failed";
}

/* Remembers an event a sink refused for good; the commit dead-letters it. */
static int dead_add(source_rt_t *s, const delivery_t *d, const char *errmsg)
{
    if (s->delivery.ndead == s->delivery.capdead) {
        size_t cap = s->delivery.capdead ? 2 * s->delivery.capdead : 16;
        dead_event_t *n = realloc(s->delivery.dead, cap * sizeof(*n));
        if (n == NULL)
            return -1;
        s->delivery.dead = n;
        s->delivery.capdead = cap;
    }
    dead_event_t *x = &s->delivery.dead[s->delivery.ndead++];
    diff_event_t ev;
    x->event = d->event;
    x->sink = d->ticket.opaque;
    snprintf(x->id, sizeof(x->id), "%s",
             diff_cycle_event(s->cy, d->event, &ev) == 0 ? ev.id : "unknown");
    snprintf(x->error, sizeof(x->error), "%s", errmsg ? errmsg : "refused for good");
    LOG_WARN("a sink refused an event for good; it goes to the dead letters",
             LF_S("source", s->conf->name), LF_S("sink", x->sink), LF_S("event_id", x->id),
             LF_S("error", x->error));
    return 0;
}

/* Whether sink k takes events of this type from s during the cycle; outbox
 * sinks get theirs from the commit. */
int deliver_routes_live(const engine_sink_t *sk, const source_rt_t *s, diff_event_type_t type)
{
    return sk->ob == NULL && conf_sink_routes(sk->conf, s->conf->name, type);
}

/* What a resolved delivery means for its cycle. */
static void delivery_settle(delivery_t *d, sink_result_t result, const char *errmsg)
{
    sink_ticket_t *t = &d->ticket;
    source_rt_t *s = d->src;
    metric_add(ENGINE_METRIC(s->e, sink_deliveries),
               LABELS((const char *)t->opaque, deliver_result(result)), 1);
    if (result == SINK_OK)
        return;
    if (result == SINK_ERR_PERMANENT && dead_add(s, d, errmsg) == 0)
        return;
    if (s->delivery.failed++ == 0) {
        snprintf(s->delivery.first_error, sizeof(s->delivery.first_error), "%s",
                 errmsg ? errmsg : "failed");
        snprintf(s->delivery.first_sink, sizeof(s->delivery.first_sink), "%s",
                 (const char *)t->opaque);
    }
    if (result == SINK_ERR_FATAL) {
        s->delivery.fatal = 1;
        s->e->fatal = 1;
        metric_set(ENGINE_METRIC(s->e, sink_fatal), LABELS((const char *)t->opaque), 1);
        engine_kick(s->e);
    }
}

/* Called by a sink on the loop's thread, exactly once per submitted event:
 * the slot is free again afterwards. */
static void on_delivered(sink_ticket_t *t, sink_result_t result, const char *errmsg)
{
    delivery_t *d = (delivery_t *)t;
    source_rt_t *s = d->src;
    s->delivery.pending--;
    d->sink->unresolved--;
    delivery_settle(d, result, errmsg);
    d->next = s->delivery.free_d;
    s->delivery.free_d = d;
    /* Delivery moves on by events: the source looks at its cycle once the
     * sink's callback returned (not inside it: submit() may be calling). */
    if (!s->delivery.check_armed) {
        s->delivery.check_armed = 1;
        engine_source_arm(s, 0);
    }
}

/*
 * Hands further events of the cycle to every sink that routes them, until
 * the window is full. After a failure nothing more is handed over: the
 * cycle will not commit, the next one delivers everything again.
 */
static void deliver_more(source_rt_t *s)
{
    engine_t *e = s->e;
    const conf_source_t *cs = s->conf;

    size_t name_len = strlen(cs->name);
    while (s->delivery.next_event < s->nevents && s->delivery.pending < ENGINE_DELIVERY_WINDOW &&
           !s->delivery.failed) {
        diff_event_t evbuf, *ev = &evbuf;
        char key[CONF_NAME_MAX + 1 + DIFF_ID_MAX + 1];
        size_t id_len;
        if (diff_cycle_event(s->cy, s->delivery.next_event++, ev) != 0 ||
            event_write(&s->delivery.evbuf, ev, cs->name, cs->provider->name, s->observed_at) !=
                0 ||
            (id_len = strlen(ev->session_id)) > DIFF_ID_MAX || name_len > CONF_NAME_MAX) {
            s->delivery.failed++;
            snprintf(s->delivery.first_error, sizeof(s->delivery.first_error),
                     "cannot encode an event (out of memory, or text that is not UTF-8)");
            break;
        }
        memcpy(key, cs->name, name_len);
        key[name_len] = '/';
        memcpy(key + name_len + 1, ev->session_id, id_len + 1);
        sink_event_t se = {.id = ev->id,
                           .type = diff_event_type_name(ev->type),
                           .kind = diff_event_type_short(ev->type),
                           .source = cs->name,
                           .session_id = ev->session_id,
                           .key = key,
                           .json = s->delivery.evbuf.text,
                           .json_len = s->delivery.evbuf.len};
        /* pending < ENGINE_DELIVERY_WINDOW left a slot for every sink */
        for (size_t k = 0; k < e->nsinks && s->delivery.free_d != NULL; k++) {
            engine_sink_t *sk = e->sinks[k];
            if (!deliver_routes_live(sk, s, ev->type))
                continue;
            delivery_t *d = s->delivery.free_d;
            s->delivery.free_d = d->next;
            d->ticket.done = on_delivered;
            d->ticket.opaque = sk->conf->name;
            d->ticket.retry_after_s = -1;
            d->src = s;
            d->sink = sk;
            d->event = s->delivery.next_event - 1;
            s->delivery.pending++;
            sk->unresolved++;
            sink_result_t r = sk->conf->type->submit(sk->ctx, &se, &d->ticket);
            if (r != SINK_OK) /* not taken: resolve it ourselves */
                on_delivered(&d->ticket, r, "the sink refused the event");
        }
    }
}

static void sinks_poke(engine_t *e);

/*
 * For a delivering source, when a ticket of it resolved (and when its
 * deliveries begin): hands over more, commits once every ticket resolved.
 */
void deliver_check(source_rt_t *s)
{
    deliver_more(s);
    sinks_poke(s->e);
    if (s->delivery.pending > 0 || (s->delivery.next_event < s->nevents && !s->delivery.failed))
        return;
    if (s->delivery.fatal) {
        LOG_ERROR("sink failed fatally; stopping", LF_S("source", s->conf->name),
                  LF_S("sink", s->delivery.first_sink), LF_S("error", s->delivery.first_error));
        engine_cycle_fail(s, NULL, NULL);
    } else if (s->delivery.failed) {
        LOG_WARN("events not acknowledged; nothing committed, the next cycle retries",
                 LF_S("source", s->conf->name), LF_S("sink", s->delivery.first_sink),
                 LF_I("failed", s->delivery.failed), LF_I("deliveries", s->delivery.nds),
                 LF_S("error", s->delivery.first_error));
        engine_cycle_fail(s, NULL, NULL);
    } else {
        commit_cycle(s);
    }
}

/* The PING before delivering answered: hands the cycle's events to the sinks. */
void deliver_on_ping(void *opaque, int rc, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;

    if (e->closing)
        return;
    if (rc != 0) {
        engine_cycle_fail(s, "redis unreachable; not delivering, nothing committed", err);
        return;
    }
    /* slots for one window, not for every delivery of the cycle: 40
     * bytes per event were 48 MiB in a first emit cycle of 1M sessions */
    size_t nslots = s->delivery.nds < ENGINE_DELIVERY_WINDOW + e->nsinks
                        ? s->delivery.nds
                        : ENGINE_DELIVERY_WINDOW + e->nsinks;
    s->delivery.ds = calloc(nslots, sizeof(delivery_t));
    if (s->delivery.ds == NULL) {
        engine_cycle_fail(s, "out of memory delivering events", "ENOMEM");
        return;
    }
    for (size_t i = nslots; i-- > 0;) {
        s->delivery.ds[i].next = s->delivery.free_d;
        s->delivery.free_d = &s->delivery.ds[i];
    }
    s->phase = PHASE_DELIVER;
    s->delivery.t_deliver = clock_mono_s();
    deliver_check(s);
}

/* An outbox worker's turn; it says when it wants the next one. */
void deliver_on_outbox_timer(void *opaque)
{
    engine_sink_t *sk = opaque;
    engine_t *e = sk->e;

    /* A sink a reload retires claims nothing more: what it claimed settles
     * before it stops, what it did not is its successor's. */
    if (e->closing || sk->retiring)
        return;
    loop_timer_arm(sk->outbox_timer, outbox_turn(sk->ob, e->halt_at != 0));
    sinks_poke(e);
    engine_kick(e); /* once: the worker may be idle now */
}

/* An attempt of the worker settled: the sink has room for another claim. */
void deliver_on_outbox_settled(void *opaque)
{
    engine_sink_t *sk = opaque;

    if (!sk->e->closing && !sk->retiring)
        loop_timer_arm(sk->outbox_timer, 0);
}

/* A sink that does not use the loop: flushed with a deadline already past, so without waiting. */
void deliver_on_sink_poll(void *opaque)
{
    engine_sink_t *sk = opaque;

    if (sk->e->closing)
        return; /* engine_free() flushes, exits, and serves the loop for the releases */
    size_t left = sk->conf->type->flush(sk->ctx, 0);
    loop_timer_arm(sk->poll_timer, left > 0 ? ENGINE_POLL_BUSY_S : ENGINE_POLL_IDLE_S);
}

/* Events were handed over: the sinks that are polled are polled soon. */
static void sinks_poke(engine_t *e)
{
    for (size_t k = 0; k < e->nsinks; k++) {
        engine_sink_t *sk = e->sinks[k];
        if (sk->poll_timer && (sk->unresolved > 0 || (sk->ob && outbox_in_flight(sk->ob) > 0)))
            loop_timer_arm(sk->poll_timer, 0);
    }
}
