/*
 * engine: poll, diff, deliver, commit.
 *
 * The ordering is the delivery guarantee (CONTRACT §7): the delta of a
 * cycle reaches Redis only after every ticket of the cycle resolved with
 * SINK_OK, and the in-memory index advances only after that commit. Any
 * failure drops the cycle: the next one re-diffs against the last
 * committed snapshot and produces the same events with the same ids.
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "event.h"
#include "http.h"
#include "log.h"
#include "store.h"

/* How long one poll() of the sinks may block while waiting for acks. */
#define ENGINE_SINK_POLL_MS 50
/* Redis connect and command timeout. */
#define ENGINE_REDIS_TIMEOUT_MS 5000
/* Bound of the final flush of every sink at exit. */
#define ENGINE_FLUSH_MS 10000
/*
 * Deliveries in flight at once. A first cycle with initial_snapshot=emit
 * can hold a whole population's events; handing them over in windows keeps
 * the sinks' queues (and our memory) bounded.
 */
#define ENGINE_DELIVERY_WINDOW 5000
/* Fraction of an interval added as random jitter, so sources spread out. */
#define ENGINE_JITTER 0.1

typedef struct engine_sink {
    const conf_sink_t *conf;
    void *ctx;
} engine_sink_t;

typedef struct source_rt {
    const conf_source_t *conf;
    diff_index_t *index;
    http_client_t *http;
    int loaded;       /* index matches Redis as far as we know */
    int has_snapshot; /* Redis holds a snapshot of this source */
    uint64_t cycle;
    double next_due; /* monotonic seconds */
    int unknown_logged;
    engine_cycle_stats_t stats;
} source_rt_t;

struct engine {
    const conf_t *conf;
    volatile sig_atomic_t *stop;
    store_t *store;
    engine_sink_t *sinks;
    size_t nsinks;
    source_rt_t *sources;
    size_t nsources;
    int fatal;
};

/* One outstanding delivery of one event to one sink. */
typedef struct delivery {
    sink_ticket_t ticket;
    struct batch *batch;
} delivery_t;

typedef struct batch {
    size_t pending;
    size_t failed;
    int fatal;
    char first_error[256];
    char first_sink[CONF_NAME_MAX + 1];
} batch_t;

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double jitter01(void)
{
    uint32_t v = 0;
    RAND_bytes((unsigned char *)&v, sizeof(v));
    return (double)v / 4294967296.0;
}

/* ---- construction ---- */

engine_t *engine_new(const conf_t *conf, volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    engine_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->conf = conf;
    e->stop = stop;

    store_options_t so = {.url = conf->redis_url,
                          .prefix = conf->redis_prefix,
                          .timeout_ms = ENGINE_REDIS_TIMEOUT_MS};
    char serr[256];
    e->store = store_new(&so, serr, sizeof(serr));
    if (e->store == NULL) {
        snprintf(err, errlen, "redis: %s", serr);
        goto err;
    }

    e->sinks = calloc(conf->nsinks, sizeof(engine_sink_t));
    if (e->sinks == NULL)
        goto nomem;
    for (size_t i = 0; i < conf->nsinks; i++) {
        const conf_sink_t *cs = &conf->sinks[i];
        char kerr[256];
        e->sinks[i].conf = cs;
        e->sinks[i].ctx = cs->type->create(cs->json, cs->name, kerr, sizeof(kerr));
        if (e->sinks[i].ctx == NULL) {
            snprintf(err, errlen, "sink %s: %s", cs->name, kerr);
            goto err;
        }
        e->nsinks++;
    }

    e->sources = calloc(conf->nsources, sizeof(source_rt_t));
    if (e->sources == NULL)
        goto nomem;
    double t0 = now_mono();
    for (size_t i = 0; i < conf->nsources; i++) {
        source_rt_t *s = &e->sources[i];
        const conf_source_t *cs = &conf->sources[i];
        char herr[256];
        s->conf = cs;
        s->index = diff_index_new();
        http_options_t ho = {.timeout_ms = cs->timeout_s * 1000L,
                             .connect_timeout_ms = cs->timeout_s * 1000L,
                             .max_body = HTTP_DEFAULT_MAX_BODY};
        s->http = http_client_new(&ho, herr, sizeof(herr));
        e->nsources++;
        if (s->index == NULL || s->http == NULL)
            goto nomem;
        /* Spread the first cycles over a fraction of each interval. */
        s->next_due = t0 + cs->interval_s * ENGINE_JITTER * jitter01();
    }
    return e;
nomem:
    snprintf(err, errlen, "out of memory");
err:
    engine_free(e);
    return NULL;
}

void engine_free(engine_t *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nsinks; i++) {
        const sink_type_t *t = e->sinks[i].conf->type;
        if (t->flush(e->sinks[i].ctx, ENGINE_FLUSH_MS) != 0)
            LOG_WARN("sink still had undelivered events at exit; they were not committed and "
                     "will be delivered by the next run",
                     LF_S("sink", e->sinks[i].conf->name),
                     LF_I("pending", t->pending(e->sinks[i].ctx)));
        t->destroy(e->sinks[i].ctx);
    }
    free(e->sinks);
    for (size_t i = 0; i < e->nsources; i++) {
        diff_index_free(e->sources[i].index);
        http_client_free(e->sources[i].http);
    }
    free(e->sources);
    store_free(e->store);
    free(e);
}

/* ---- delivery ---- */

static void on_delivered(sink_ticket_t *t, sink_result_t result, const char *errmsg)
{
    delivery_t *d = (delivery_t *)t;
    batch_t *b = d->batch;
    const char *sink = t->opaque;
    b->pending--;
    if (result == SINK_OK)
        return;
    if (b->failed++ == 0) {
        snprintf(b->first_error, sizeof(b->first_error), "%s", errmsg ? errmsg : "failed");
        snprintf(b->first_sink, sizeof(b->first_sink), "%s", sink);
    }
    if (result == SINK_ERR_FATAL)
        b->fatal = 1;
}

/* Serves the sinks until at most target deliveries of b are pending. */
static void serve_sinks(engine_t *e, batch_t *b, size_t target)
{
    while (b->pending > target) {
        for (size_t k = 0; k < e->nsinks; k++) {
            const sink_type_t *t = e->sinks[k].conf->type;
            if (t->pending(e->sinks[k].ctx) > 0)
                t->poll(e->sinks[k].ctx, ENGINE_SINK_POLL_MS);
        }
    }
}

/*
 * Encodes and hands every event to every sink that routes it, then serves
 * the sinks until every ticket resolved. Sinks bound how long a ticket can
 * stay open (Kafka: message.timeout.ms), so this wait ends. Returns 0 when
 * every delivery succeeded.
 */
static int deliver(engine_t *e, source_rt_t *s, const diff_event_t *events, size_t n,
                   int64_t observed_ms)
{
    const conf_source_t *cs = s->conf;
    batch_t b = {0};
    size_t routes = 0, next = 0;
    int rc = -1;

    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < e->nsinks; k++)
            routes += conf_sink_routes(e->sinks[k].conf, cs->name, events[i].type);
    }
    if (routes == 0)
        return 0;
    delivery_t *ds = calloc(routes, sizeof(delivery_t));
    if (ds == NULL) {
        LOG_ERROR("out of memory delivering events", LF_S("source", cs->name));
        return -1;
    }

    for (size_t i = 0; i < n && !b.fatal; i++) {
        const diff_event_t *ev = &events[i];
        if (b.pending >= ENGINE_DELIVERY_WINDOW)
            serve_sinks(e, &b, ENGINE_DELIVERY_WINDOW / 2);
        size_t len = 0;
        char key[DIFF_ID_MAX + CONF_NAME_MAX + 2];
        char *json = event_encode(ev, cs->name, cs->provider->name, observed_ms, &len);
        if (json == NULL) {
            b.failed++;
            snprintf(b.first_error, sizeof(b.first_error), "out of memory encoding an event");
            break;
        }
        snprintf(key, sizeof(key), "%s/%s", cs->name, ev->session_id);
        sink_event_t se = {.id = ev->id,
                           .type = diff_event_type_name(ev->type),
                           .kind = diff_event_type_short(ev->type),
                           .source = cs->name,
                           .session_id = ev->session_id,
                           .key = key,
                           .json = json,
                           .json_len = len};
        for (size_t k = 0; k < e->nsinks; k++) {
            engine_sink_t *sk = &e->sinks[k];
            if (!conf_sink_routes(sk->conf, cs->name, ev->type))
                continue;
            delivery_t *d = &ds[next++];
            d->ticket.done = on_delivered;
            d->ticket.opaque = sk->conf->name;
            d->batch = &b;
            b.pending++;
            sink_result_t r = sk->conf->type->submit(sk->ctx, &se, &d->ticket);
            if (r != SINK_OK) /* not taken: resolve it ourselves */
                on_delivered(&d->ticket, r, "the sink refused the event");
        }
        free(json);
    }

    serve_sinks(e, &b, 0);
    if (b.fatal) {
        e->fatal = 1;
        LOG_ERROR("sink failed fatally; stopping", LF_S("source", cs->name),
                  LF_S("sink", b.first_sink), LF_S("error", b.first_error));
    } else if (b.failed > 0) {
        LOG_WARN("events not acknowledged; nothing committed, the next cycle retries",
                 LF_S("source", cs->name), LF_S("sink", b.first_sink), LF_I("failed", b.failed),
                 LF_I("deliveries", routes), LF_S("error", b.first_error));
    } else {
        rc = 0;
    }
    free(ds);
    return rc;
}

/* ---- one cycle ---- */

typedef struct observe_ctx {
    diff_cycle_t *cycle;
} observe_ctx_t;

static int on_record(void *opaque, const char *session_id, const char *raw_status,
                     const cJSON *record, char *err, size_t errlen)
{
    observe_ctx_t *o = opaque;
    return diff_cycle_observe(o->cycle, session_id, raw_status, record, err, errlen);
}

static int ensure_loaded(engine_t *e, source_rt_t *s)
{
    char err[256];
    bool exists = false;
    if (s->loaded)
        return 0;
    if (store_load(e->store, s->conf->name, s->index, &exists, &s->cycle, err, sizeof(err)) != 0) {
        LOG_ERROR("cannot load the snapshot; skipping this cycle", LF_S("source", s->conf->name),
                  LF_S("error", err));
        return -1;
    }
    s->has_snapshot = exists;
    s->loaded = 1;
    LOG_INFO("snapshot loaded", LF_S("source", s->conf->name), LF_B("exists", exists),
             LF_I("sessions", diff_index_size(s->index)), LF_I("cycle", (long long)s->cycle));
    return 0;
}

/* Fetches and feeds every page; 0 when the poll completed. */
static int poll_source(engine_t *e, source_rt_t *s, diff_cycle_t *cy, int64_t now_s)
{
    const conf_source_t *cs = s->conf;
    const provider_ops_t *p = cs->provider;
    observe_ctx_t oc = {.cycle = cy};
    http_response_t resp = {.retry_after_s = -1};
    provider_request_t *req = malloc(sizeof(*req));
    void *poll = p->poll_begin(cs, now_s);
    char err[512];
    int rc = -1;

    if (req == NULL || poll == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    for (;;) {
        int r = p->next_request(poll, req, err, sizeof(err));
        if (r == 0)
            break;
        if (r < 0)
            goto fail;
        const char *hdrs[HTTP_MAX_REQUEST_HEADERS];
        for (size_t i = 0; i < req->nheaders; i++)
            hdrs[i] = req->headers[i];
        int attempts = 0;
        char herr[256];
        if (http_get_retry(s->http, &http_default_retry, req->url, hdrs, req->nheaders, e->stop,
                           &resp, &attempts, herr, sizeof(herr)) != 0) {
            snprintf(err, sizeof(err), "%s: %s after %d attempt%s", req->label, herr, attempts,
                     attempts == 1 ? "" : "s");
            goto fail;
        }
        s->stats.pages++;
        char perr[256];
        if (p->handle_page(poll, &resp, on_record, &oc, perr, sizeof(perr)) != 0) {
            snprintf(err, sizeof(err), "%s page %zu: %s", req->label, s->stats.pages, perr);
            goto fail;
        }
        LOG_DEBUG("page", LF_S("source", cs->name), LF_S("endpoint", req->label),
                  LF_I("page", s->stats.pages), LF_I("bytes", resp.len));
    }
    rc = 0;
    goto out;
fail:
    LOG_WARN("poll failed; nothing emitted, nothing committed", LF_S("source", cs->name),
             LF_S("error", err), LF_I("pages", s->stats.pages));
out:
    http_response_reset(&resp);
    if (poll)
        p->poll_free(poll);
    free(req);
    return rc;
}

static void log_unknown_statuses(source_rt_t *s, diff_cycle_t *cy)
{
    const char *const *unknown;
    size_t n = diff_cycle_new_unknown_statuses(cy, &unknown);
    for (size_t i = 0; i < n; i++)
        LOG_WARN("unknown raw status: no transition; map it with status_map",
                 LF_S("source", s->conf->name), LF_S("status", unknown[i]));
}

static int source_cycle(engine_t *e, source_rt_t *s)
{
    const conf_source_t *cs = s->conf;
    engine_cycle_stats_t *st = &s->stats;
    uint64_t cmds0 = store_commands_sent(e->store);
    int rc = -1;

    memset(st, 0, sizeof(*st));
    if (ensure_loaded(e, s) != 0)
        return -1;

    diff_options_t opt = {.source = cs->name,
                          .vanish_grace = cs->vanish_grace,
                          .status_map = cs->status_map,
                          .baseline = !s->has_snapshot && !cs->initial_emit};
    diff_cycle_t *cy = diff_cycle_begin(s->index, &opt);
    if (cy == NULL) {
        LOG_ERROR("out of memory", LF_S("source", cs->name));
        return -1;
    }
    int64_t observed_ms = now_unix_ms();
    double t0 = now_mono();
    if (poll_source(e, s, cy, observed_ms / 1000) != 0)
        goto out;
    if (diff_cycle_finish(cy) != 0) {
        LOG_ERROR("out of memory finishing the diff", LF_S("source", cs->name));
        goto out;
    }
    st->poll_s = now_mono() - t0;
    st->observed = diff_cycle_observed(cy);
    log_unknown_statuses(s, cy);

    const diff_event_t *events;
    const diff_change_t *changes;
    st->events = diff_cycle_events(cy, &events);
    st->changes = diff_cycle_changes(cy, &changes);

    /* Delivering while Redis is away would only produce duplicates: the
     * commit after it would fail. One PING avoids the common case. */
    char err[256];
    if (st->events > 0 && store_ping(e->store, err, sizeof(err)) != 0) {
        LOG_WARN("redis unreachable; not delivering, nothing committed", LF_S("source", cs->name),
                 LF_S("error", err));
        goto out;
    }
    double t1 = now_mono();
    if (deliver(e, s, events, st->events, observed_ms) != 0)
        goto out;
    st->deliver_s = now_mono() - t1;

    /* The size after the cycle: what apply() will leave. */
    size_t after = diff_index_size(s->index);
    for (size_t i = 0; i < st->changes; i++) {
        diff_record_t old;
        int present = diff_index_get(s->index, changes[i].session_id, &old) == 0;
        if (changes[i].removed && present)
            after--;
        else if (!changes[i].removed && !present)
            after++;
    }
    double t2 = now_mono();
    if (store_commit(e->store, cs->name, changes, st->changes, after, &s->cycle, err,
                     sizeof(err)) != 0) {
        /* An EXEC whose reply was lost may have applied: re-read it. */
        s->loaded = 0;
        LOG_WARN("commit failed; events may be delivered again with the same ids",
                 LF_S("source", cs->name), LF_S("error", err));
        goto out;
    }
    st->commit_s = now_mono() - t2;
    diff_cycle_apply(cy);
    s->has_snapshot = 1;
    st->sessions = diff_index_size(s->index);
    st->redis_commands = store_commands_sent(e->store) - cmds0;
    LOG_INFO(opt.baseline ? "baseline recorded" : "cycle committed", LF_S("source", cs->name),
             LF_I("cycle", (long long)s->cycle), LF_I("pages", st->pages),
             LF_I("observed", st->observed), LF_I("events", st->events),
             LF_I("changes", st->changes), LF_I("sessions", st->sessions),
             LF_I("unknown_statuses", diff_cycle_unknown_count(cy)), LF_D("poll_s", st->poll_s),
             LF_D("deliver_s", st->deliver_s), LF_D("commit_s", st->commit_s),
             LF_I("redis_commands", (long long)st->redis_commands),
             LF_I("index_bytes", diff_index_memory(s->index)));
    rc = 0;
out:
    diff_cycle_free(cy);
    return rc;
}

/* ---- loops ---- */

int engine_run_once(engine_t *e, const char *source)
{
    int rc = 0;
    for (size_t i = 0; i < e->nsources && !e->fatal; i++) {
        if (source && strcmp(e->sources[i].conf->name, source) != 0)
            continue;
        if (source_cycle(e, &e->sources[i]) != 0)
            rc = -1;
    }
    return e->fatal ? -1 : rc;
}

int engine_run(engine_t *e)
{
    LOG_INFO("running", LF_I("sources", e->nsources), LF_I("sinks", e->nsinks));
    while (!(e->stop && *e->stop) && !e->fatal) {
        double now = now_mono(), soonest = now + 1.0;
        for (size_t i = 0; i < e->nsources && !(e->stop && *e->stop) && !e->fatal; i++) {
            source_rt_t *s = &e->sources[i];
            if (s->next_due <= now) {
                source_cycle(e, s);
                double iv = s->conf->interval_s;
                s->next_due = now_mono() + iv + iv * ENGINE_JITTER * (jitter01() - 0.5);
            }
            if (s->next_due < soonest)
                soonest = s->next_due;
        }
        /* Idle: keep the sinks' callbacks served while waiting. */
        while (!(e->stop && *e->stop) && now_mono() < soonest) {
            for (size_t k = 0; k < e->nsinks; k++)
                e->sinks[k].conf->type->poll(e->sinks[k].ctx, 0);
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    LOG_INFO(e->fatal ? "stopping after a fatal sink error" : "stopping");
    return e->fatal ? -1 : 0;
}

int engine_last_stats(const engine_t *e, const char *source, engine_cycle_stats_t *out)
{
    for (size_t i = 0; i < e->nsources; i++) {
        if (strcmp(e->sources[i].conf->name, source) == 0) {
            *out = e->sources[i].stats;
            return 0;
        }
    }
    return -1;
}

size_t engine_index_memory(const engine_t *e, const char *source)
{
    for (size_t i = 0; i < e->nsources; i++) {
        if (strcmp(e->sources[i].conf->name, source) == 0)
            return diff_index_memory(e->sources[i].index);
    }
    return 0;
}
