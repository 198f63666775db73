/*
 * engine: poll, diff, deliver, commit, for every source at once.
 *
 * The ordering is the delivery guarantee (CONTRACT §7): the delta of a
 * cycle reaches Redis only after every ticket of the cycle resolved with
 * SINK_OK, and the in-memory index advances only after that commit. Any
 * failure drops the cycle: the next one re-diffs against the last
 * committed snapshot and produces the same events with the same ids.
 *
 * Concurrency without threads: each source is a small state machine
 * (idle -> fetching a page <-> backing off -> delivering -> idle) moved on
 * by events of the one loop (loop.h): its own timer (the next cycle, a
 * retry's backoff, a check of its deliveries once a ticket resolved), the
 * end of its page transfer (libcurl's multi handle on the loop), and the
 * sinks' completions. Engine-wide timers beat the leases, refresh the
 * metrics and end a stop or a `once` drain. Nothing wakes up on a fixed
 * short period: an idle daemon sleeps until its next timer. A slow or
 * failing source only holds its own machine.
 *
 * The PINGs (readiness, and before delivering), the readiness counts, the
 * member beat, the lease renewals, takes, retakes and releases (those at
 * exit included), the snapshot load, the last records of vanished
 * sessions, the outbox workers' claims and settles, and the commit (on a
 * connection of its own, PHASE_COMMIT until Redis answered) are
 * asynchronous store calls on this loop (hiredis's async API): their round
 * trips hold nobody.
 *
 * The jobs live in one file each, sharing internal.h: this one builds and
 * frees the engine, schedules the cycles and runs the loop until a stop or
 * the end of a `once`; fetch.c polls a cycle's pages, deliver.c hands its
 * events to the sinks, commit.c writes it to Redis, leases.c decides which
 * replica polls a source, observe.c serves readiness and the gauges.
 */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array.h"
#include "internal.h"

/* Redis connect and command timeout. */
#define ENGINE_REDIS_TIMEOUT_MS 5000
/* Bound of the final flush of every sink at exit when no stop was asked (once). */
#define ENGINE_FLUSH_MS 10000
/*
 * At exit, how long the loop keeps serving the releases of the leases and
 * the outboxes' last settles after the sinks were flushed: a reply later
 * than the store's own timeout does not come (the store drops the
 * connection then); within what is left of the shutdown grace.
 */
#define ENGINE_EXIT_REDIS_MS ENGINE_REDIS_TIMEOUT_MS
/*
 * Of the shutdown grace, the part kept for flushing the sinks after the
 * cycles in flight were given the rest to finish (at most, in seconds).
 */
#define ENGINE_FLUSH_RESERVE_S 5.0
/* Heap a finished cycle must have held for its release to hand the free
 * pages back to the kernel (malloc_trim walks the whole heap: not worth it
 * for the usual small churn cycle). */
#define ENGINE_TRIM_AFTER_BYTES (16u * 1024u * 1024u)
/* Fraction of an interval added as random jitter, so sources spread out. */
#define ENGINE_JITTER 0.1
/*
 * Longest pause a provider's Retry-After imposes on a source after a poll
 * failed on it. Rate limits and maintenance windows ask for seconds to
 * minutes; an answer of more than an hour is more likely a broken or
 * hostile header than a plan, and honouring a day would silence the source
 * for a day on one response. Asking again once an hour costs one request.
 */
#define ENGINE_MAX_PAUSE_S 3600.0
/*
 * `once` waits for the outboxes to hand over what its cycles committed, at
 * most this long after the last cycle ended; what is left stays in the
 * outbox for the next run.
 */
#define ENGINE_ONCE_DRAIN_S 60.0

static int stopping(const engine_t *e)
{
    return e->fatal || e->stop_asked || (e->stop && *e->stop);
}

/*
 * Something happened that may end the run (a cycle ended, an outbox
 * settled, a fatal error, a signal): on_settle() looks once the current
 * callback returned, however many such things happen in one turn.
 */
void engine_kick(engine_t *e)
{
    if (!loop_timer_armed(e->settle_timer))
        loop_timer_arm(e->settle_timer, 0);
}

void engine_source_arm(source_rt_t *s, double after_s)
{
    loop_timer_arm(s->timer, after_s > 0 ? after_s : 0);
}

/* ---- construction ---- */

static void on_source_timer(void *opaque);
static void on_halt_deadline(void *opaque);
static void on_settle(void *opaque);
static void on_stop_signal(void *opaque);

/*
 * Starts the sink cs of gen (which the sink then holds a reference to: its
 * context may point into cs) and appends it to e's sinks. 0, or -1 with the
 * reason in err (the sink is not added).
 */
int engine_sink_start(engine_t *e, const conf_sink_t *cs, engine_conf_t *gen, char *err,
                      size_t errlen)
{
    char kerr[256];
    engine_sink_t *sk = calloc(1, sizeof(*sk));
    engine_sink_t **grown = array_grow(e->sinks, &e->capsinks, e->nsinks + 1, sizeof(*e->sinks), 4);

    if (sk == NULL || grown == NULL) {
        free(sk);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->sinks = grown;
    sk->conf = cs;
    sk->e = e;
    sink_host_t host = {.name = cs->name,
                        .redis_url = e->conf->redis_url,
                        .redis_prefix = e->conf->redis_prefix,
                        .loop = loop_sink_api(e->loop)};
    sk->ctx = cs->type->init(cs->cfg, &host, kerr, sizeof(kerr));
    if (sk->ctx == NULL) {
        snprintf(err, errlen, "sink %s: %s", cs->name, kerr);
        goto fail;
    }
    if (!(cs->type->flags & SINK_F_LOOP) &&
        (sk->poll_timer = loop_timer_new(e->loop, deliver_on_sink_poll, sk)) == NULL)
        goto nomem;
    if (cs->type->flags & SINK_F_OUTBOX) {
        outbox_options_t oo = {.sink = cs->name,
                               .type = cs->type,
                               .ctx = sk->ctx,
                               .conf = cs->cfg,
                               .store = e->store,
                               .settled = deliver_on_outbox_settled,
                               .opaque = sk};
        sk->ob = outbox_new(&oo, kerr, sizeof(kerr));
        if (sk->ob == NULL) {
            snprintf(err, errlen, "sink %s: %s", cs->name, kerr);
            goto fail;
        }
        if ((sk->outbox_timer = loop_timer_new(e->loop, deliver_on_outbox_timer, sk)) == NULL)
            goto nomem;
    }
    sk->gen = engine_conf_ref(gen);
    e->sinks[e->nsinks++] = sk;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    engine_sink_stop(sk, 0);
    engine_sink_free(sk);
    return -1;
}

/*
 * Stops sk: its outbox claims nothing more, the sink flushes until
 * deadline_ms (sink_now_ms()'s clock; 0: serves what is ready, no wait) and
 * exits (its context freed), then the outbox sends what settled
 * (through the store, which still exists). sk itself stays: its outbox's
 * answers may still be in flight and name it (engine_sink_free() once
 * engine_sink_busy() says none is). The caller has taken it out of e's
 * sinks, and no ticket of a cycle is on it. Accepts a sink whose start failed.
 */
void engine_sink_stop(engine_sink_t *sk, int64_t deadline_ms)
{
    const sink_type_t *t = sk->conf->type;

    if (sk->ob)
        outbox_close(sk->ob);
    if (sk->ctx) {
        size_t left = t->flush(sk->ctx, deadline_ms);
        if (left > 0)
            LOG_WARN(sk->ob ? "sink still had attempts in flight when it stopped; those events "
                              "stay in the outbox and are retried after their claim expires"
                            : "sink still had undelivered events when it stopped; they were not "
                              "committed and will be delivered again",
                     LF_S("sink", sk->conf->name), LF_I("pending", left));
        t->exit(sk->ctx);
        sk->ctx = NULL;
    }
    if (sk->ob)
        outbox_settle_now(sk->ob);
    loop_timer_free(sk->outbox_timer);
    sk->outbox_timer = NULL;
    loop_timer_free(sk->poll_timer);
    sk->poll_timer = NULL;
}

/* 1 while sk's outbox waits for Redis's answers (which name sk). */
int engine_sink_busy(const engine_sink_t *sk)
{
    return sk->ob != NULL && outbox_busy(sk->ob);
}

/* Frees a stopped sk with its reference to its configuration. */
void engine_sink_free(engine_sink_t *sk)
{
    outbox_free(sk->ob);
    engine_conf_unref(sk->e, sk->gen);
    free(sk);
}

/*
 * Frees the sinks a reload stopped whose outbox answers have come (all of
 * them when the store is detached: no answer can come any more).
 */
void engine_retired_sweep(engine_t *e, int all)
{
    size_t kept = 0;

    for (size_t k = 0; k < e->nretired; k++) {
        if (all || !engine_sink_busy(e->retired[k]))
            engine_sink_free(e->retired[k]);
        else
            e->retired[kept++] = e->retired[k];
    }
    e->nretired = kept;
}

/*
 * Adds a source of cs (from gen, referenced while the source points into
 * it), idle, its first cycle due within a fraction of its interval after
 * t0. NULL when out of memory.
 */
source_rt_t *engine_source_add(engine_t *e, const conf_source_t *cs, engine_conf_t *gen, double t0)
{
    source_rt_t *s = calloc(1, sizeof(*s));
    source_rt_t **grown =
        array_grow(e->sources, &e->capsources, e->nsources + 1, sizeof(*e->sources), 16);

    if (s == NULL || grown == NULL) {
        free(s);
        return NULL;
    }
    e->sources = grown;
    s->e = e;
    s->conf = cs;
    s->gen = engine_conf_ref(gen);
    s->fetch.resp.retry_after_s = -1;
    s->fetch.pause_s = -1;
    s->index = diff_index_new();
    s->timer = loop_timer_new(e->loop, on_source_timer, s);
    e->sources[e->nsources++] = s;
    if (s->index == NULL || s->timer == NULL || engine_source_http(s) != 0)
        return NULL; /* engine_free() frees what there is */
    /* Spread the first cycles over a fraction of each interval. */
    s->next_due = t0 + cs->interval_s * ENGINE_JITTER * http_uniform01();
    s->summary.since = t0;
    return s;
}

/* (Re)builds the HTTP client of s from its configuration's timeout. 0, or -1 on ENOMEM. */
int engine_source_http(source_rt_t *s)
{
    char herr[256];
    http_options_t ho = {.timeout_ms = s->conf->timeout_s * 1000L,
                         .connect_timeout_ms = s->conf->timeout_s * 1000L,
                         .max_body = HTTP_DEFAULT_MAX_BODY};
    http_client_t *h = http_client_new(&ho, herr, sizeof(herr));

    if (h == NULL)
        return -1;
    http_client_free(s->http);
    s->http = h;
    return 0;
}

static void cycle_release(source_rt_t *s);

/* Frees an idle s (or one whose cycle the closing engine abandons); the caller took it out of e's
 * sources. */
void engine_source_free(source_rt_t *s)
{
    http_client_free(s->http);
    cycle_release(s);
    diff_index_free(s->index);
    loop_timer_free(s->timer);
    engine_conf_unref(s->e, s->gen);
    engine_conf_unref(s->e, s->next.gen);
    free(s);
}

/* engine_new(), or engine_new_dry_run() when dry_out is set: then without sinks. */
static engine_t *engine_build(const conf_t *conf, volatile sig_atomic_t *stop, FILE *dry_out,
                              char *err, size_t errlen)
{
    engine_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->conf = conf;
    e->stop = stop;
    e->summary_s = observe_summary_period();
    e->dry_out = dry_out;
    pthread_mutex_init(&e->ready_lock, NULL);

    store_options_t so = {.url = conf->redis_url,
                          .prefix = conf->redis_prefix,
                          .timeout_ms = ENGINE_REDIS_TIMEOUT_MS};
    char serr[256];
    e->store = store_new(&so, serr, sizeof(serr));
    if (e->store == NULL) {
        snprintf(err, errlen, "redis: %s", serr);
        goto err;
    }
    e->loop = loop_new(err, errlen);
    if (e->loop == NULL || store_attach(e->store, e->loop, err, errlen) != 0)
        goto err;
    e->multi = http_multi_new(loop_sink_api(e->loop), err, errlen);
    if (e->multi == NULL)
        goto err;
    if (store_new_token(e->token) != 0) {
        snprintf(err, errlen, "no random bytes for the replica token");
        goto err;
    }
    if (gethostname(e->host, sizeof(e->host)) != 0)
        snprintf(e->host, sizeof(e->host), "unknown");
    e->host[sizeof(e->host) - 1] = '\0'; /* POSIX leaves a cut name unterminated */
    e->who = (store_replica_t){.host = e->host,
                               .version = SB_VERSION,
                               .pid = (long)getpid(),
                               .started_ms = clock_unix_ms()};
    e->live_replicas = 1;
    e->lease_armed_at = INFINITY;
    if ((e->lease_timer = loop_timer_new(e->loop, lease_on_timer, e)) == NULL ||
        (e->observe_timer = loop_timer_new(e->loop, observe_on_timer, e)) == NULL ||
        (e->halt_timer = loop_timer_new(e->loop, on_halt_deadline, e)) == NULL ||
        (e->drain_timer = loop_timer_new(e->loop, on_settle, e)) == NULL ||
        (e->settle_timer = loop_timer_new(e->loop, on_settle, e)) == NULL)
        goto nomem;
    /* A stop wakes the loop at once, however long it would have slept. */
    if (loop_on_signal(e->loop, SIGTERM, on_stop_signal, e) != 0 ||
        loop_on_signal(e->loop, SIGINT, on_stop_signal, e) != 0) {
        snprintf(err, errlen, "cannot watch SIGTERM and SIGINT on the event loop");
        goto err;
    }
    /* Watched in every mode: a SIGHUP must never end the process (129). */
    if (loop_on_signal(e->loop, SIGHUP, reload_on_signal, e) != 0) {
        snprintf(err, errlen, "cannot watch SIGHUP on the event loop");
        goto err;
    }
    atomic_init(&e->checked, 0);
    atomic_init(&e->redis_up, 0);
    atomic_init(&e->halting, 0);

    /* The first configuration is the caller's; later ones, the reloads' (reload.c). */
    if ((e->gen = engine_conf_ref(engine_conf_adopt(e, (conf_t *)conf, 0))) == NULL)
        goto nomem;
    for (size_t i = 0; dry_out == NULL && i < conf->nsinks; i++) {
        if (engine_sink_start(e, &conf->sinks[i], e->gen, err, errlen) != 0)
            goto err;
    }
    double t0 = clock_mono_s();
    for (size_t i = 0; i < conf->nsources; i++) {
        if (engine_source_add(e, &conf->sources[i], e->gen, t0) == NULL)
            goto nomem;
    }
    return e;
nomem:
    snprintf(err, errlen, "out of memory");
err:
    engine_free(e);
    return NULL;
}

engine_t *engine_new(const conf_t *conf, volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    return engine_build(conf, stop, NULL, err, errlen);
}

engine_t *engine_new_dry_run(const conf_t *conf, volatile sig_atomic_t *stop, FILE *out, char *err,
                             size_t errlen)
{
    return engine_build(conf, stop, out, err, errlen);
}

static void cycle_release(source_rt_t *s)
{
    if (s->fetch.poll)
        s->conf->provider->poll_free(s->fetch.poll);
    s->fetch.poll = NULL;
    size_t held = diff_cycle_memory(s->cy);
    diff_cycle_free(s->cy);
    s->cy = NULL;
    free(s->fetch.req);
    s->fetch.req = NULL;
    http_response_reset(&s->fetch.resp);
    free(s->delivery.ds);
    s->delivery.ds = NULL;
    event_buf_free(&s->delivery.evbuf);
    /* A large cycle's memory sits in malloc's free lists between the
     * index's entries, where glibc does not give it back by itself: the
     * first emit cycle of a large source would otherwise set the
     * process's RSS for good. */
    if (held >= ENGINE_TRIM_AFTER_BYTES)
        malloc_trim(0);
    commit_release(s);
    free(s->delivery.dead);
    s->delivery.dead = NULL;
    s->delivery.ndead = s->delivery.capdead = 0;
    s->delivery.free_d = NULL;
    s->nevents = s->delivery.next_event = s->delivery.nds = 0;
    s->delivery.pending = s->delivery.failed = 0;
    s->delivery.fatal = 0;
    s->delivery.first_error[0] = s->delivery.first_sink[0] = '\0';
}

/*
 * How long the final flush may take: what is left of the shutdown grace
 * after a stop was asked, ENGINE_FLUSH_MS otherwise.
 */
static int flush_budget_ms(const engine_t *e)
{
    if (e->halt_at == 0)
        return ENGINE_FLUSH_MS;
    double left = e->halt_at + e->conf->shutdown_grace_s - clock_mono_s() - 0.5;
    return left > 0.1 ? (int)(left * 1000) : 100;
}

/* Whether the exit still waits for Redis: releases, or an outbox's settles. */
static int exit_waits(const engine_t *e)
{
    if (e->exit_pending > 0)
        return 1;
    for (size_t i = 0; i < e->nsinks; i++) {
        if (engine_sink_busy(e->sinks[i]))
            return 1;
    }
    for (size_t i = 0; i < e->nretired; i++) {
        if (engine_sink_busy(e->retired[i]))
            return 1;
    }
    return 0;
}

void engine_free(engine_t *e)
{
    if (e == NULL)
        return;
    /* The flushes below may run the loop: nothing may start or commit then
     * (the store's answers that come meanwhile change nothing either). */
    e->closing = 1;
    /* One deadline for all: the shutdown grace is the whole exit's, not each sink's. */
    int64_t deadline = sink_deadline_in(flush_budget_ms(e));
    for (size_t i = 0; i < e->nsinks; i++)
        engine_sink_stop(e->sinks[i], deadline);
    if (e->store && e->loop) {
        if (e->dry_out == NULL) /* a dry run took nothing */
            leases_release_all(e);
        double until = clock_mono_s() + ENGINE_EXIT_REDIS_MS / 1000.0;
        double grace = flush_budget_ms(e) / 1000.0 + clock_mono_s();
        if (e->halt_at && grace < until)
            until = grace;
        while (exit_waits(e) && clock_mono_s() < until)
            loop_run_for(e->loop, 50);
    }
    /* Fails the asynchronous store calls still in flight, while the
     * sources and workers their callbacks name still exist. */
    store_detach(e->store);
    for (size_t i = 0; i < e->nsinks; i++)
        engine_sink_free(e->sinks[i]);
    free(e->sinks);
    engine_retired_sweep(e, 1);
    free(e->retired);
    /* Sinks are gone: no ticket of a cycle can still be resolved. */
    for (size_t i = 0; i < e->nsources; i++)
        engine_source_free(e->sources[i]);
    free(e->sources);
    engine_conf_unref(e, e->gen);
    reload_free(e);
    http_multi_free(e->multi);
    loop_timer_free(e->lease_timer);
    loop_timer_free(e->observe_timer);
    loop_timer_free(e->halt_timer);
    loop_timer_free(e->drain_timer);
    loop_timer_free(e->settle_timer);
    loop_free(e->loop);
    store_free(e->store);
    pthread_mutex_destroy(&e->ready_lock);
    free(e);
}

engine_sink_t *engine_sink_find(const engine_t *e, const char *name)
{
    for (size_t k = 0; k < e->nsinks; k++) {
        if (strcmp(e->sinks[k]->conf->name, name) == 0)
            return e->sinks[k];
    }
    return NULL;
}

/* ---- the end of a cycle ---- */

/*
 * The poll failed on a response that asked for a pause (Retry-After on a
 * 429 or a 5xx, either form): the next cycle waits for it, up to
 * ENGINE_MAX_PAUSE_S, instead of coming after the interval alone. The gauge
 * and a warning say until when.
 */
static void pause_apply(source_rt_t *s, double now)
{
    double asked = s->fetch.pause_s;
    double pause = asked < ENGINE_MAX_PAUSE_S ? asked : ENGINE_MAX_PAUSE_S;
    char until[EVENT_TIME_LEN];

    s->fetch.pause_s = -1;
    /* once polls a single time; an interval that waits longer anyway needs no pause */
    if (s->e->once || now + pause <= s->next_due)
        return;
    s->next_due = now + pause;
    int64_t until_ms = clock_unix_ms() + (int64_t)(pause * 1000);
    event_format_time(until_ms, until);
    s->paused = 1;
    metric_set(ENGINE_METRIC(s->e, paused_until), LABELS(s->conf->name), (double)until_ms / 1000.0);
    LOG_WARN("provider asked for a pause (Retry-After); source paused",
             LF_S("source", s->conf->name), LF_DUR("delay_ms", pause), LF_S("until", until),
             LF_DUR("retry_after_ms", asked), LF_B("capped", asked > ENGINE_MAX_PAUSE_S),
             LF_DUR("max_pause_ms", ENGINE_MAX_PAUSE_S));
}

void engine_cycle_end(source_rt_t *s, int ok)
{
    double iv = s->conf->interval_s, now = clock_mono_s();
    observe_cycle_end(s, ok, now);
    observe_poll_outcome(s, ok);
    cycle_release(s);
    s->phase = PHASE_IDLE;
    s->finished = 1;
    s->last_ok = ok;
    metric_add(ENGINE_METRIC(s->e, polls), LABELS(s->conf->name, ok ? "ok" : "failed"), 1);
    s->next_due = now + iv + iv * ENGINE_JITTER * (http_uniform01() - 0.5);
    if (s->fetch.pause_s >= 0)
        pause_apply(s, now);
    lease_rebalance(s);
    s->delivery.check_armed = 0;
    if (s->e->once)
        loop_timer_arm(s->timer, -1); /* once polls a single time */
    else
        engine_source_arm(s, s->next_due - now);
    engine_kick(s->e);
}

/* Ends the cycle without committing; logs msg with err when msg is set. */
void engine_cycle_fail(source_rt_t *s, const char *msg, const char *err)
{
    if (msg) {
        LOG_WARN(msg, LF_S("source", s->conf->name), LF_S("error", err),
                 LF_I("pages", s->stats.pages));
        /* what was logged, so no secret: the operator's `status` shows it */
        snprintf(s->why, sizeof(s->why), "%s: %s", msg, err ? err : "");
    }
    engine_cycle_end(s, 0);
}

/*
 * once --dry-run, in place of delivery and commit: writes each event of the
 * finished poll that some sink routes to e->dry_out, encoded as deliver.c
 * encodes it for a sink, and ends the cycle as if it committed (the index
 * does not advance: the engine is freed after this one cycle).
 */
void engine_dry_print(source_rt_t *s)
{
    const engine_t *e = s->e;
    const conf_source_t *cs = s->conf;
    size_t printed = 0;

    for (size_t i = 0; i < s->nevents; i++) {
        diff_event_t ev;
        int routed = 0;
        if (diff_cycle_event(s->cy, i, &ev) != 0 ||
            event_write(&s->delivery.evbuf, &ev, cs->name, cs->provider->name, s->observed_at) !=
                0) {
            engine_cycle_fail(s, "dry run: cannot encode an event",
                              "out of memory, or text that is not UTF-8");
            return;
        }
        for (size_t k = 0; k < e->conf->nsinks && !routed; k++)
            routed = conf_sink_routes(&e->conf->sinks[k], cs->name, ev.type);
        if (!routed)
            continue;
        fwrite(s->delivery.evbuf.text, 1, s->delivery.evbuf.len, e->dry_out);
        fputc('\n', e->dry_out);
        printed++;
    }
    fflush(e->dry_out);
    LOG_INFO("dry run: events printed; nothing delivered, nothing committed",
             LF_S("source", cs->name), LF_I("pages", s->stats.pages),
             LF_I("observed", s->stats.observed), LF_I("events", s->nevents),
             LF_I("printed", printed), LF_B("baseline", s->opt.baseline));
    engine_cycle_end(s, 1);
}

/* ---- the loop ---- */

/* Whether the timer of an idle s starts a cycle now. */
int engine_cycle_wanted(const source_rt_t *s)
{
    const engine_t *e = s->e;
    return e->halt_at == 0 && !e->reload.sinks_wait && !s->next.removed &&
           (!e->once || (s->wanted && !s->finished));
}

/* The timer of s: what it means depends on the phase it is in. */
static void on_source_timer(void *opaque)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;

    if (e->closing)
        return;
    switch (s->phase) {
    case PHASE_IDLE:
        if (engine_cycle_wanted(s) && lease_ready(s, clock_mono_s()))
            fetch_cycle_start(s);
        break;
    case PHASE_BACKOFF:
        if (e->halt_at)
            engine_cycle_fail(s, "poll failed; nothing emitted, nothing committed",
                              "interrupted by shutdown");
        else
            fetch_retry(s);
        break;
    case PHASE_DELIVER:
        s->delivery.check_armed = 0;
        deliver_check(s);
        break;
    case PHASE_QUEUED:  /* moved on by queue_drain() */
    case PHASE_FETCH:   /* moved on by on_http_done() */
    case PHASE_CHECK:   /* moved on by deliver_on_ping() */
    case PHASE_LEASE:   /* moved on by on_lease_asked() */
    case PHASE_LOAD:    /* moved on by on_loaded() or on_restored() */
    case PHASE_RECORDS: /* moved on by on_records() */
    case PHASE_COMMIT:  /* moved on by the commit's answer (commit.c) */
        break;
    }
}

/* Past this, cycles still in flight at a stop are abandoned (uncommitted). */
static double cycles_deadline(const engine_t *e)
{
    double grace = e->conf->shutdown_grace_s;
    double reserve = grace / 4 < ENGINE_FLUSH_RESERVE_S ? grace / 4 : ENGINE_FLUSH_RESERVE_S;
    return e->halt_at + grace - reserve;
}

/*
 * The grace ran out: says which cycles did not finish. They commit nothing
 * (their state is released by engine_free(), after the sinks resolved their
 * tickets) and the next run delivers their events again with the same ids.
 */
static void on_halt_deadline(void *opaque)
{
    engine_t *e = opaque;

    for (size_t i = 0; i < e->nsources; i++) {
        phase_t p = e->sources[i]->phase;
        if (p == PHASE_COMMIT)
            /* its EXEC may be on the way: whether it applied, the next run's load says */
            LOG_WARN("shutdown grace exceeded: commit abandoned in flight; the next run loads "
                     "whatever redis holds",
                     LF_S("source", e->sources[i]->conf->name));
        else if (p != PHASE_IDLE)
            LOG_WARN("shutdown grace exceeded: cycle abandoned, nothing committed",
                     LF_S("source", e->sources[i]->conf->name),
                     LF_S("phase", p == PHASE_DELIVER ? "deliver" : "poll"));
    }
    loop_stop(e->loop);
}

/* A stop was seen (signal or fatal sink error): no new cycle, no new claim. */
static void halt_begin(engine_t *e)
{
    e->halt_at = clock_mono_s();
    atomic_store(&e->halting, 1);
    if (!e->fatal)
        LOG_INFO("stop requested: finishing the cycles in flight",
                 LF_DUR("grace_ms", e->conf->shutdown_grace_s));
    loop_timer_arm(e->halt_timer, cycles_deadline(e) - e->halt_at);
    for (size_t i = 0; i < e->nsources; i++) {
        if (e->sources[i]->phase == PHASE_BACKOFF)
            engine_source_arm(e->sources[i], 0); /* fails at once rather than retry */
    }
}

/* SIGTERM or SIGINT, on the loop's thread. */
static void on_stop_signal(void *opaque)
{
    engine_t *e = opaque;

    e->stop_asked = 1;
    if (e->stop)
        *e->stop = 1;
    engine_kick(e);
}

/*
 * Whether every outbox worker is done for `once`: nothing in flight, and
 * nothing left due (or a stop asked for no more claims).
 */
static int outboxes_idle(const engine_t *e)
{
    for (size_t k = 0; k < e->nsinks; k++) {
        const outbox_t *ob = e->sinks[k]->ob;
        if (ob && (outbox_in_flight(ob) > 0 || (!outbox_idle(ob) && e->halt_at == 0)))
            return 0;
    }
    return 1;
}

/*
 * Ends the run when the work asked for is done: in once mode the cycle of
 * every wanted source, then the outbox deliveries it committed (up to
 * ENGINE_ONCE_DRAIN_S); in run mode once a stop was requested and every
 * cycle in flight ended.
 */
static void on_settle(void *opaque)
{
    engine_t *e = opaque;
    double now = clock_mono_s();

    if (e->closing)
        return;
    if (stopping(e) && e->halt_at == 0)
        halt_begin(e);
    if (e->reload.requested && e->halt_at == 0) {
        e->reload.requested = 0;
        reload_on_signal(e);
    }
    if (e->reload.gen && e->halt_at == 0)
        reload_settle(e);
    if (!e->once && e->halt_at == 0)
        return;
    for (size_t i = 0; i < e->nsources; i++) {
        const source_rt_t *s = e->sources[i];
        if (s->phase != PHASE_IDLE || (e->once && e->halt_at == 0 && s->wanted && !s->finished))
            return;
    }
    /* The last cycles' P:poll:S go out before the store closes (each
     * answers or times out, and kicks) */
    if (e->polls_writing > 0)
        return;
    if (e->halt_at) {
        loop_stop(e->loop);
        return;
    }
    if (e->drain_until == 0) {
        e->drain_until = now + ENGINE_ONCE_DRAIN_S;
        loop_timer_arm(e->drain_timer, ENGINE_ONCE_DRAIN_S);
    }
    if (outboxes_idle(e) || now >= e->drain_until)
        loop_stop(e->loop);
}

/*
 * Arms what the run starts with and serves the loop until on_settle() or
 * the shutdown deadline stops it.
 */
static void run_loop(engine_t *e, int once)
{
    double now = clock_mono_s();

    e->once = once;
    /* The member beat first: the fair share of the first cycles depends on it.
     * A dry run writes nothing to Redis, the beat included. */
    if (e->dry_out == NULL)
        leases_tick(e, now);
    if (e->observed)
        observe_on_timer(e);
    engine_sinks_arm(e);
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = e->sources[i];
        if (!once)
            engine_source_arm(s, s->next_due - now);
        else if (s->wanted)
            engine_source_arm(s, 0);
    }
    engine_kick(e); /* a stop asked before the run, or nothing wanted */
    for (;;) {
        if (loop_run(e->loop) != 0) {
            LOG_ERROR("the event loop failed; stopping");
            e->fatal = 1;
            return;
        }
        /* A reload's sinks are stopped and started here, outside any
         * callback of the loop: their flush may have to run it. */
        if (!e->reload.swap_now || e->halt_at)
            return;
        reload_swap(e);
        engine_kick(e); /* a stop that came during the flushes: on_settle() sees it */
    }
}

/* The first turn of every sink's own timers: at the start, and for the sinks a reload started. */
void engine_sinks_arm(engine_t *e)
{
    for (size_t k = 0; k < e->nsinks; k++) {
        if (e->sinks[k]->outbox_timer && !loop_timer_armed(e->sinks[k]->outbox_timer))
            loop_timer_arm(e->sinks[k]->outbox_timer, 0);
        if (e->sinks[k]->poll_timer && !loop_timer_armed(e->sinks[k]->poll_timer))
            loop_timer_arm(e->sinks[k]->poll_timer, 0);
    }
}

int engine_run_once(engine_t *e, const char *source)
{
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = e->sources[i];
        s->wanted = source == NULL || strcmp(s->conf->name, source) == 0;
        s->finished = 0;
        s->last_ok = 0;
    }
    run_loop(e, 1);
    int rc = e->fatal ? -1 : 0;
    for (size_t i = 0; i < e->nsources; i++) {
        if (e->sources[i]->wanted && !e->sources[i]->last_ok)
            rc = -1;
    }
    return rc;
}

int engine_run(engine_t *e)
{
    LOG_INFO("running", LF_I("sources", e->nsources), LF_I("sinks", e->nsinks));
    run_loop(e, 0);
    LOG_INFO(e->fatal ? "stopping after a fatal sink error" : "stopping");
    return e->fatal ? -1 : 0;
}
