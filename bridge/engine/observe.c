/*
 * engine, observation: readiness (a PING and the sinks' ready(), published
 * for the admin's threads), the gauges refreshed on a timer, the metric
 * series every source and sink starts with, and each source's periodic
 * log summary (quiet cycles log at debug only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* How often the gauges read from the sinks (queue depth, ready) are refreshed. */
#define ENGINE_GAUGES_S 1.0
/*
 * How often Redis (a PING) and the sinks are checked for readiness and the
 * outbox and dead-letter sizes are read: a few small commands, well inside
 * a scrape interval.
 */
#define ENGINE_REDIS_CHECK_S 5.0
/*
 * A cycle that changes nothing (no event, no change to the snapshot,
 * nothing failed) logs at debug; instead, every source logs one info
 * summary of its cycles this often. Five minutes: at the default interval
 * of 30 s that is one line per source where there were ten, and
 * `kubectl logs --since=5m` still shows every source alive. Time rather
 * than a count of cycles, so that a source polled every second and one
 * polled hourly both report on the same scale (the hourly one at most
 * once a cycle).
 */
#define ENGINE_SUMMARY_S 300.0
/*
 * A test hook, not a setting (CONTRACT names no such variable, and it is in
 * neither --help nor the configuration): seconds between summaries, so
 * that an end-to-end test sees one within seconds. Unset in production.
 */
#define ENGINE_SUMMARY_HOOK_ENV "SB_TEST_HOOK_SUMMARY_S"

/*
 * The sessions gauge of s: its snapshot's counts while we hold its lease,
 * 0 otherwise, so that a sum over the replicas counts each session once.
 */
void observe_sessions_gauge(source_rt_t *s)
{
    size_t n[DIFF_STATE_COUNT] = {0};
    if (s->lease.held)
        diff_index_states(s->index, n);
    for (int st = DIFF_STATE_PENDING; st < DIFF_STATE_COUNT; st++)
        metric_set(ENGINE_METRIC(s->e, sessions),
                   LABELS(s->conf->name, diff_state_name((diff_state_t)st)), (double)n[st]);
}

/* Seconds between two summaries of a source: ENGINE_SUMMARY_S, or the test hook's. */
double observe_summary_period(void)
{
    const char *hook = getenv(ENGINE_SUMMARY_HOOK_ENV);
    double v = hook ? atof(hook) : 0;
    return v > 0 ? v : ENGINE_SUMMARY_S;
}

/*
 * Counts the cycle of s that ended for its summary, and logs the summary
 * when the period passed since the last one (once runs a single cycle and
 * logs it whole: no summary). Call before the cycle is released.
 */
void observe_cycle_end(source_rt_t *s, int ok, double now)
{
    engine_summary_t *sm = &s->summary;

    sm->cycles++;
    sm->failed += !ok;
    if (s->cy) /* not when the cycle ended before it polled (no lease, no snapshot) */
        sm->last_cycle_s = now - s->t_start;
    if (s->e->once || now - sm->since < s->e->summary_s)
        return;
    LOG_INFO("source summary", LF_S("source", s->conf->name), LF_I("cycles", sm->cycles),
             LF_I("failed", sm->failed), LF_I("events", sm->events),
             LF_I("sessions", diff_index_size(s->index)), LF_DUR("period_ms", now - sm->since),
             LF_DUR("last_cycle_ms", sm->last_cycle_s));
    *sm = (engine_summary_t){.since = now, .last_cycle_s = sm->last_cycle_s};
}

void observe_lease_gauges(source_rt_t *s)
{
    metric_set(ENGINE_METRIC(s->e, lease_owned), LABELS(s->conf->name), s->lease.held ? 1 : 0);
    observe_sessions_gauge(s);
}

/* ---- what the admin endpoint reads ---- */

/* A dead-letter or outbox count of one sink, for its gauge. */
typedef struct count_ask {
    engine_t *e;
    char sink[CONF_NAME_MAX + 1]; /* by name: a reload may remove it meanwhile */
    int outbox;                   /* outbox_depth, else dead_letters */
} count_ask_t;

static void on_count(void *opaque, int rc, size_t n, const char *err)
{
    count_ask_t *c = opaque;
    engine_t *e = c->e;
    (void)err;

    if (!e->closing && rc == 0 && engine_sink_find(e, c->sink) != NULL)
        metric_set(c->outbox ? ENGINE_METRIC(e, outbox_depth) : ENGINE_METRIC(e, dead_letters),
                   LABELS(c->sink), (double)n);
    free(c);
}

static void count_ask(engine_t *e, size_t k, int outbox)
{
    count_ask_t *c = malloc(sizeof(*c));
    const char *name = e->sinks[k]->conf->name;
    char err[256];

    if (c == NULL)
        return; /* the gauge keeps its last value */
    *c = (count_ask_t){.e = e, .outbox = outbox};
    snprintf(c->sink, sizeof(c->sink), "%s", name);
    if ((outbox ? store_outbox_count_async : store_dlq_count_async)(e->store, name, on_count, c,
                                                                    err, sizeof(err)) != 0)
        free(c);
}

/* The readiness PING answered: the sizes only Redis knows, when it is up. */
static void on_check_ping(void *opaque, int rc, const char *err)
{
    engine_t *e = opaque;
    int up = rc == 0;

    e->checking = 0;
    if (e->closing)
        return;
    if (!up && atomic_load(&e->redis_up))
        LOG_WARN("redis unreachable; reporting not ready", LF_S("error", err));
    else if (up && !atomic_load(&e->redis_up) && e->redis_checked)
        LOG_INFO("redis reachable again; reporting ready");
    atomic_store(&e->redis_up, up);
    e->redis_checked = 1;
    atomic_store(&e->checked, 1); /* the sinks were checked in the same tick */
    for (size_t k = 0; up && k < e->nsinks; k++) {
        count_ask(e, k, 0);
        if (e->sinks[k]->ob)
            count_ask(e, k, 1);
    }
}

/* A PING for readiness (one at a time: a slow Redis is not asked twice). */
static void redis_check(engine_t *e)
{
    char err[256];

    if (e->checking)
        return;
    if (store_ping_async(e->store, on_check_ping, e, err, sizeof(err)) == 0)
        e->checking = 1;
    else
        on_check_ping(e, -1, err);
}

/*
 * The sinks' readiness. At the pace of the Redis check: a sink's ready() may
 * probe (redis_stream opens a connection of its own while disconnected).
 */
static void sinks_check(engine_t *e)
{
    const char *unready = NULL;

    for (size_t k = 0; k < e->nsinks; k++) {
        int ready = sink_ready(e->sinks[k]->conf->type, e->sinks[k]->ctx);
        metric_set(ENGINE_METRIC(e, sink_ready), LABELS(e->sinks[k]->conf->name), ready ? 1 : 0);
        if (!ready && unready == NULL)
            unready = e->sinks[k]->conf->name;
    }
    observe_unready_sink(e, unready);
}

/* Publishes the name of a sink that is not ready (NULL: none) for engine_ready(). */
void observe_unready_sink(engine_t *e, const char *name)
{
    /* a copy: a reload frees the sinks' configurations, the admin's threads read it */
    pthread_mutex_lock(&e->ready_lock);
    snprintf(e->unready_sink, sizeof(e->unready_sink), "%s", name ? name : "");
    pthread_mutex_unlock(&e->ready_lock);
}

/*
 * The outbox worker's settled attempts as deliveries: the worker keeps the
 * totals (an outbox sink's deliveries are counted nowhere else), the
 * counters copy them.
 */
static void outbox_metrics(engine_t *e, engine_sink_t *sk)
{
    outbox_counts_t c;
    const char *name = sk->conf->name;

    outbox_get_counts(sk->ob, &c);
    metric_set(ENGINE_METRIC(e, sink_deliveries), LABELS(name, "ok"), (double)c.delivered);
    metric_set(ENGINE_METRIC(e, sink_deliveries), LABELS(name, "retry"), (double)c.retried);
    metric_set(ENGINE_METRIC(e, sink_deliveries), LABELS(name, "dead_letter"), (double)c.dead);
    metric_set(ENGINE_METRIC(e, sink_disabled), LABELS(name), outbox_disabled(sk->ob) ? 1 : 0);
}

/*
 * Every ENGINE_GAUGES_S (a loop timer): the heartbeat and the gauges read
 * from the sinks; every ENGINE_REDIS_CHECK_S the checks readiness is made
 * of. Runs on the loop's thread, where the sinks and the store
 * may be used.
 */
static void observe_tick(engine_t *e, double now)
{
    if (e->obs.heartbeat)
        e->obs.heartbeat(e->obs.opaque);
    if (e->nretired > 0)
        engine_retired_sweep(e, 0);
    if (!e->observed || now < e->next_gauges)
        return;
    e->next_gauges = now + ENGINE_GAUGES_S;
    metric_set(ENGINE_METRIC(e, heartbeat_timestamp), NULL, (double)clock_unix_ms() / 1000.0);
    for (size_t k = 0; k < e->nsinks; k++) {
        engine_sink_t *sk = e->sinks[k];
        /* What the core handed over and the sink has not resolved: the worker's attempts for
         * an outbox sink, the cycles' tickets for the others. */
        metric_set(ENGINE_METRIC(e, sink_queue_depth), LABELS(sk->conf->name),
                   (double)(sk->ob ? outbox_in_flight(sk->ob) : sk->unresolved));
        if (sk->ob)
            outbox_metrics(e, sk);
    }
    if (now >= e->next_redis_check) {
        e->next_redis_check = now + ENGINE_REDIS_CHECK_S;
        redis_check(e);
        sinks_check(e);
    }
    metric_set(ENGINE_METRIC(e, redis_errors), NULL, (double)store_errors(e->store));
    /* the first checks ran once Redis answered the first PING */
    if (e->redis_checked)
        atomic_store(&e->checked, 1);
}

void engine_observe(engine_t *e, const engine_observer_t *obs)
{
    e->obs = *obs;
    e->observed = 1;
    for (size_t i = 0; i < e->nsources; i++)
        observe_source_series(e->sources[i]);
    for (size_t k = 0; k < e->nsinks; k++)
        observe_sink_series(e->sinks[k]);
    metric_add(ENGINE_METRIC(e, redis_errors), NULL, 0);
    metric_add(ENGINE_METRIC(e, config_reloads), LABELS("ok"), 0);
    metric_add(ENGINE_METRIC(e, config_reloads), LABELS("invalid"), 0);
    metric_set(ENGINE_METRIC(e, config_reload_stamp), NULL, 0);
}

/* The series a source starts with (engine_observe(), and a source a reload added). */
void observe_source_series(source_rt_t *s)
{
    engine_t *e = s->e;
    const char *name = s->conf->name;

    metric_add(ENGINE_METRIC(e, polls), LABELS(name, "ok"), 0);
    metric_add(ENGINE_METRIC(e, polls), LABELS(name, "failed"), 0);
    for (int t = 0; t < DIFF_EV_COUNT; t++)
        metric_add(ENGINE_METRIC(e, events),
                   LABELS(name, diff_event_type_short((diff_event_type_t)t)), 0);
    metric_add(ENGINE_METRIC(e, unknown_statuses), LABELS(name), 0);
    metric_add(ENGINE_METRIC(e, lease_lost), LABELS(name), 0);
    metric_add(ENGINE_METRIC(e, redis_state_restored), LABELS(name), 0);
    metric_add(ENGINE_METRIC(e, vanished_no_record), LABELS(name), 0);
    metric_set(ENGINE_METRIC(e, paused_until), LABELS(name), 0);
    observe_lease_gauges(s);
}

/* The series a sink starts with (engine_observe(), and a sink a reload added). */
void observe_sink_series(engine_sink_t *sk)
{
    static const sink_result_t results[] = {SINK_OK, SINK_ERR_RETRY, SINK_ERR_PERMANENT,
                                            SINK_ERR_FATAL};
    engine_t *e = sk->e;
    const char *name = sk->conf->name;

    for (size_t r = 0; r < sizeof(results) / sizeof(results[0]); r++)
        metric_add(ENGINE_METRIC(e, sink_deliveries), LABELS(name, deliver_result(results[r])), 0);
    metric_set(ENGINE_METRIC(e, sink_fatal), LABELS(name), 0);
    metric_set(ENGINE_METRIC(e, dead_letters), LABELS(name), 0);
    if (sk->ob) {
        metric_set(ENGINE_METRIC(e, outbox_depth), LABELS(name), 0);
        metric_set(ENGINE_METRIC(e, sink_disabled), LABELS(name), 0);
    }
}

bool engine_ready(void *opaque, char *why, size_t whylen)
{
    engine_t *e = opaque;
    char sink[CONF_NAME_MAX + 1];
    size_t n = 0;

    pthread_mutex_lock(&e->ready_lock);
    memcpy(sink, e->unready_sink, sizeof(sink));
    pthread_mutex_unlock(&e->ready_lock);

    why[0] = '\0';
    if (atomic_load(&e->halting))
        n += (size_t)snprintf(why, whylen, "shutting down");
    else if (!atomic_load(&e->checked))
        n += (size_t)snprintf(why, whylen, "starting");
    if (atomic_load(&e->checked) && !atomic_load(&e->redis_up) && n < whylen)
        n += (size_t)snprintf(why + n, whylen - n, "%sredis unreachable", n ? "; " : "");
    if (sink[0] && n < whylen)
        n += (size_t)snprintf(why + n, whylen - n, "%ssink %s not ready", n ? "; " : "", sink);
    return n == 0;
}

void observe_on_timer(void *opaque)
{
    engine_t *e = opaque;

    if (e->closing)
        return;
    observe_tick(e, clock_mono_s());
    loop_timer_arm(e->observe_timer, ENGINE_GAUGES_S);
}

/* ---- what `status` reads ---- */

/* store_poll_set_async()'s answer: a status that did not reach Redis is only stale. */
static void on_poll_written(void *opaque, int rc, const char *err)
{
    engine_t *e = opaque;

    e->polls_writing--;
    if (rc != 0)
        LOG_DEBUG("cannot write the last poll's outcome", LF_S("error", err));
    if (!e->closing)
        engine_kick(e); /* a stop may have waited for it */
}

/*
 * At the end of every cycle of s, before its state is released: its
 * outcome into P:poll:S, without waiting for Redis. A failure's text is
 * the one the daemon logged (engine_cycle_fail()), or the first sink
 * error of the cycle. Only the lease holder writes it: a replica that
 * lost the lease meanwhile would overwrite the new holder's outcome, and
 * a run that takes no lease (a dry run) writes nothing to Redis.
 */
void observe_poll_outcome(source_rt_t *s, int ok)
{
    engine_t *e = s->e;
    char why[sizeof(s->why)], err[256];

    if (!s->lease.held) {
        s->why[0] = '\0';
        return;
    }
    if (ok)
        why[0] = '\0';
    else if (s->why[0])
        snprintf(why, sizeof(why), "%s", s->why);
    else if (s->delivery.first_error[0])
        snprintf(why, sizeof(why), "events not acknowledged; nothing committed: sink %s: %s",
                 s->delivery.first_sink, s->delivery.first_error);
    else
        snprintf(why, sizeof(why), "the cycle did not complete (the daemon's log says why)");
    s->why[0] = '\0';
    store_poll_t p = {.at_ms = clock_unix_ms(),
                      .ok = ok,
                      .error = why,
                      .events = s->stats.events,
                      .pages = s->stats.pages,
                      .replica = e->token};
    if (store_poll_set_async(e->store, s->conf->name, &p, on_poll_written, e, err, sizeof(err)) ==
        0)
        e->polls_writing++;
}
