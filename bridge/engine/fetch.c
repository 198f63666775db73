/*
 * engine, fetching: a cycle's start (the snapshot loaded, or put back from
 * memory into a Redis that lost it, and the diff begun), its pages one
 * request at a time within the transfer slots, their retries and backoff,
 * and the end of the poll (the diff finished, the last records of vanished
 * sessions read) that hands the cycle to delivery or commit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "page_scan.h"

/* ---- the end of the poll ---- */

/*
 * Page transfers in flight at once, over all sources. Per-exam sources
 * usually share one provider host: a thousand simultaneous requests to it
 * would be neither polite nor faster. Sources beyond it queue in order.
 */
#define ENGINE_MAX_TRANSFERS 32

static void log_unknown_statuses(source_rt_t *s)
{
    const char *const *unknown;
    size_t n = diff_cycle_new_unknown_statuses(s->cy, &unknown);
    for (size_t i = 0; i < n; i++)
        LOG_WARN("unknown raw status: no transition; map it with status_map",
                 LF_S("source", s->conf->name), LF_S("status", unknown[i]));
}

/* store_last_get_async()'s callback: one vanished event's last record, k from the window's first.
 */
static int on_last(void *opaque, size_t k, const char *text, size_t len)
{
    source_rt_t *s = opaque;
    char why[128]; /* not logged: one line per event is what this avoids */

    /* Redis holds what we wrote, but it is read as input: a value that is
     * not a JSON record would make an event that is not JSON (or, not
     * UTF-8, fail its encoding every cycle again). */
    if (text != NULL && page_scan_check(text, len, why, sizeof(why)) == PAGE_SCAN_OK) {
        switch (diff_cycle_vanished_keep(s->cy, s->fetch.vanished_from + k, text, len)) {
        case DIFF_KEEP_OK:
            return 0;
        case DIFF_KEEP_FULL:
            break;
        case DIFF_KEEP_ERROR:
            s->fetch.vanished_oom = 1;
            return -1;
        }
    }
    s->stats.vanished_no_record++; /* counted, not logged per event */
    return 0;
}

static void records_fail(source_rt_t *s, const char *err)
{
    engine_cycle_fail(s,
                      "cannot read the last records of vanished sessions; nothing emitted, "
                      "nothing committed",
                      err);
}

static void poll_deliver(source_rt_t *s);
static void on_records(void *opaque, int rc, const char *err);

/*
 * Completes the vanished events of a finished cycle with the last records
 * Redis keeps of their sessions, STORE_BATCH at a time (the next window
 * asked for from the answer of the last), before any event is read. A
 * session Redis has no record of (stored before records were kept, or
 * lost with Redis's data) keeps a null session.
 */
static void records_next(source_rt_t *s)
{
    const char *ids[STORE_BATCH];
    size_t nv = diff_cycle_nvanished(s->cy), from = s->fetch.vanished_from;
    size_t n = nv - from < STORE_BATCH ? nv - from : STORE_BATCH;
    char err[256];

    if (from >= nv) {
        poll_deliver(s);
        return;
    }
    for (size_t k = 0; k < n; k++)
        ids[k] = diff_cycle_vanished_id(s->cy, from + k);
    s->phase = PHASE_RECORDS;
    if (store_last_get_async(s->e->store, s->conf->name, ids, n, on_last, on_records, s, err,
                             sizeof(err)) != 0)
        records_fail(s, err);
}

/* A window of last records was read (or not). */
static void on_records(void *opaque, int rc, const char *err)
{
    source_rt_t *s = opaque;
    size_t nv;

    if (s->e->closing)
        return;
    if (rc != 0) {
        records_fail(s, s->fetch.vanished_oom ? "out of memory" : err);
        return;
    }
    nv = diff_cycle_nvanished(s->cy);
    s->fetch.vanished_from +=
        nv - s->fetch.vanished_from < STORE_BATCH ? nv - s->fetch.vanished_from : STORE_BATCH;
    records_next(s);
}

/* Every page was read: diff, then read the last records of vanished sessions. */
static void poll_complete(source_rt_t *s)
{
    engine_t *e = s->e;
    engine_cycle_stats_t *st = &s->stats;

    if (diff_cycle_finish(s->cy) != 0) {
        engine_cycle_fail(s, "out of memory finishing the diff", "ENOMEM");
        return;
    }
    st->poll_s = clock_mono_s() - s->t_start;
    metric_observe(ENGINE_METRIC(e, poll_duration), LABELS(s->conf->name), st->poll_s);
    st->observed = diff_cycle_observed(s->cy);
    log_unknown_statuses(s);
    s->fetch.vanished_from = 0;
    s->fetch.vanished_oom = 0;
    records_next(s);
}

/* The events are complete: deliver, or commit. */
static void poll_deliver(source_rt_t *s)
{
    engine_t *e = s->e;
    engine_cycle_stats_t *st = &s->stats;
    char err[256];

    s->nevents = st->events = diff_cycle_nevents(s->cy);
    if (e->dry_out) {
        engine_dry_print(s);
        return;
    }
    for (size_t i = 0; i < s->nevents; i++) {
        for (size_t k = 0; k < e->nsinks; k++)
            s->delivery.nds += deliver_routes_live(e->sinks[k], s, diff_cycle_event_type(s->cy, i));
    }
    if (s->delivery.nds == 0) {
        commit_cycle(s);
        return;
    }
    /* Delivering while Redis is away would only produce duplicates: the
     * commit after it would fail. One PING avoids the common case; the
     * source waits for its answer in PHASE_CHECK, the loop does not. */
    s->phase = PHASE_CHECK;
    if (store_ping_async(e->store, deliver_on_ping, s, err, sizeof(err)) != 0)
        engine_cycle_fail(s, "redis unreachable; not delivering, nothing committed", err);
}

/* ---- fetching ---- */

static void on_http_done(void *opaque, int rc, const char *terr);

static void fetch_start(source_rt_t *s)
{
    const char *hdrs[HTTP_MAX_REQUEST_HEADERS];
    char err[256];
    engine_t *e = s->e;
    if (http_multi_active(e->multi) >= ENGINE_MAX_TRANSFERS) {
        /* a transfer that ends starts the first of the queue (queue_drain) */
        s->phase = PHASE_QUEUED;
        s->fetch.queue_next = NULL;
        if (e->queue_tail)
            e->queue_tail->fetch.queue_next = s;
        else
            e->queue_head = s;
        e->queue_tail = s;
        return;
    }
    for (size_t i = 0; i < s->fetch.req->nheaders; i++)
        hdrs[i] = s->fetch.req->headers[i];
    if (http_start(s->e->multi, s->http, s->fetch.req->url, hdrs, s->fetch.req->nheaders,
                   &s->fetch.resp, on_http_done, s, err, sizeof(err)) != 0) {
        engine_cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    }
    s->phase = PHASE_FETCH;
}

/* Retries the current page, rebuilt first when the provider's requests are single-use. */
void fetch_retry(source_rt_t *s)
{
    const provider_ops_t *p = s->conf->provider;
    char err[512] = "";
    if (p->refresh_request &&
        p->refresh_request(s->fetch.poll, s->fetch.req, err, sizeof(err)) != 0) {
        engine_cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    }
    fetch_start(s);
}

/* Asks the adapter for the next page, or closes the poll. */
static void fetch_next(source_rt_t *s)
{
    char err[512];
    int r = s->conf->provider->next_request(s->fetch.poll, s->fetch.req, err, sizeof(err));
    if (r < 0) {
        engine_cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
    } else if (r == 0) {
        poll_complete(s);
    } else {
        s->fetch.attempt = 1;
        fetch_start(s);
    }
}

static int on_record(void *opaque, const char *session_id, size_t id_len, const char *raw_status,
                     size_t status_len, const char *text, size_t len, char *err, size_t errlen)
{
    source_rt_t *s = opaque;
    return diff_cycle_observe(s->cy, session_id, id_len, raw_status, status_len, text, len, err,
                              errlen);
}

/* Starts the queued page requests the transfer slots have room for. */
static void queue_drain(engine_t *e)
{
    while (e->queue_head && http_multi_active(e->multi) < ENGINE_MAX_TRANSFERS) {
        source_rt_t *s = e->queue_head;
        e->queue_head = s->fetch.queue_next;
        if (e->queue_head == NULL)
            e->queue_tail = NULL;
        s->fetch.queue_next = NULL;
        fetch_start(s);
    }
}

static void page_done(source_rt_t *s, int rc, const char *terr);

/* A page transfer ended (called from the loop, on its thread): its slot is free. */
static void on_http_done(void *opaque, int rc, const char *terr)
{
    source_rt_t *s = opaque;

    if (s->e->closing)
        return; /* abandoned: engine_free() releases the cycle */
    page_done(s, rc, terr);
    queue_drain(s->e);
}

static void page_done(source_rt_t *s, int rc, const char *terr)
{
    const provider_ops_t *p = s->conf->provider;
    char err[512], herr[256];
    double delay = 0;

    snprintf(herr, sizeof(herr), "%s", terr ? terr : "");
    if (s->e->obs.metrics) {
        char code[16] = "error";
        if (rc == 0 && s->fetch.resp.status > 0)
            snprintf(code, sizeof(code), "%ld", s->fetch.resp.status);
        metric_add(s->e->obs.metrics->http_requests, LABELS(s->conf->name, code), 1);
    }
    switch (http_retry_decide(&http_default_retry, s->fetch.attempt, rc, &s->fetch.resp, &delay,
                              herr, sizeof(herr))) {
    case HTTP_RETRY_AGAIN:
        LOG_DEBUG("retrying a page", LF_S("source", s->conf->name),
                  LF_S("endpoint", s->fetch.req->label), LF_S("error", herr),
                  LF_I("attempt", s->fetch.attempt), LF_DUR("delay_ms", delay));
        s->fetch.attempt++;
        s->fetch.retry_at = clock_mono_s() + delay;
        s->phase = PHASE_BACKOFF;
        engine_source_arm(s, s->e->halt_at ? 0 : delay); /* a stop fails it at once */
        return;
    case HTTP_RETRY_FAIL:
        /* A provider that asks for a pause gets it beyond this poll (engine_cycle_end) */
        if (rc == 0 && http_status_retryable(s->fetch.resp.status) &&
            s->fetch.resp.retry_after_s >= 0)
            s->fetch.pause_s = s->fetch.resp.retry_after_s;
        snprintf(err, sizeof(err), "%s: %s after %d attempt%s", s->fetch.req->label, herr,
                 s->fetch.attempt, s->fetch.attempt == 1 ? "" : "s");
        engine_cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    case HTTP_RETRY_DONE:
        break;
    }
    s->stats.pages++;
    if (p->handle_page(s->fetch.poll, &s->fetch.resp, on_record, s, herr, sizeof(herr)) != 0) {
        snprintf(err, sizeof(err), "%s page %zu: %s", s->fetch.req->label, s->stats.pages, herr);
        engine_cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    }
    LOG_DEBUG("page", LF_S("source", s->conf->name), LF_S("endpoint", s->fetch.req->label),
              LF_I("page", s->stats.pages), LF_I("bytes", s->fetch.resp.len));
    http_response_reset(&s->fetch.resp);
    fetch_next(s);
}

/* The index matches Redis: the diff begins, and the first page is asked for. */
static void cycle_begin(source_rt_t *s)
{
    const conf_source_t *cs = s->conf;

    s->opt = (diff_options_t){.source = cs->name,
                              .vanish_grace = cs->vanish_grace,
                              .status_map = cs->status_map,
                              .baseline = !s->has_snapshot && !cs->initial_emit,
                              .max_sessions = cs->max_sessions};
    s->observed_ms = clock_unix_ms();
    event_format_time(s->observed_ms, s->observed_at);
    s->t_start = clock_mono_s();
    s->cy = diff_cycle_begin(s->index, &s->opt);
    s->fetch.poll = cs->provider->poll_begin(cs, s->observed_ms / 1000);
    s->fetch.req = malloc(sizeof(*s->fetch.req));
    if (s->cy == NULL || s->fetch.poll == NULL || s->fetch.req == NULL) {
        engine_cycle_fail(s, "cannot start a cycle", "out of memory");
        return;
    }
    fetch_next(s);
}

static void load_failed(source_rt_t *s, const char *err)
{
    LOG_ERROR("cannot load the snapshot; skipping this cycle", LF_S("source", s->conf->name),
              LF_S("error", err));
    engine_cycle_end(s, 0);
}

/*
 * store_load_async()'s answer: the index holds the snapshot (valid only
 * now that the scan finished), and the cycle begins.
 */
static void on_loaded(void *opaque, int rc, bool exists, uint64_t cycle, const char *err)
{
    source_rt_t *s = opaque;

    if (s->e->closing)
        return;
    if (rc != 0) {
        load_failed(s, err);
        return;
    }
    if (!s->lease.held && s->e->dry_out == NULL) {
        /* lost meanwhile: the next holder commits, and we read again when ours
         * (a dry run holds none: it reads whatever was committed last) */
        diff_index_clear(s->index);
        engine_cycle_end(s, 0);
        return;
    }
    s->has_snapshot = exists;
    s->cycle = cycle;
    s->index_valid = 1;
    s->loaded = 1;
    observe_sessions_gauge(s);
    LOG_INFO("snapshot loaded", LF_S("source", s->conf->name), LF_B("exists", exists),
             LF_I("sessions", diff_index_size(s->index)), LF_I("cycle", (long long)s->cycle));
    if (s->e->halt_at) {
        engine_cycle_end(s, 0); /* a stop came meanwhile: no poll */
        return;
    }
    cycle_begin(s);
}

/* Reads the snapshot of s from Redis into the index; on_loaded() goes on. */
static void snapshot_load(source_rt_t *s)
{
    char err[256];

    /* the store holds the index until on_loaded(); it is no one's to trust meanwhile */
    s->index_valid = 0;
    s->cycle = 0;
    s->phase = PHASE_LOAD;
    if (store_load_async(s->e->store, s->conf->name, s->index, on_loaded, s, err, sizeof(err)) != 0)
        load_failed(s, err);
}

/*
 * store_restore_async()'s answer before a cycle: the index is in Redis
 * again and the cycle begins, or Redis holds a snapshot after all (read
 * it), or the cycle is skipped (commit_restore_outcome() logged why).
 */
static void on_restored(void *opaque, store_fence_t f, uint64_t cycle, const char *err)
{
    source_rt_t *s = opaque;
    (void)cycle;

    if (s->e->closing)
        return;
    switch (commit_restore_outcome(s, f, err)) {
    case 1:
        if (!s->lease.held || s->e->halt_at) {
            engine_cycle_end(s, 0); /* lost since the fence passed, or a stop came: no poll */
            return;
        }
        s->loaded = 1;
        cycle_begin(s);
        return;
    case 0:
        snapshot_load(s);
        return;
    default:
        engine_cycle_end(s, 0);
        return;
    }
}

/*
 * Before a cycle: the index of s matches Redis, or is read from it, or
 * (Redis lost what this holder committed or loaded last) is put back into
 * it from memory, without waiting on the loop: PHASE_LOAD until the
 * store's answer.
 */
void fetch_cycle_start(source_rt_t *s)
{
    engine_t *e = s->e;
    const conf_source_t *cs = s->conf;
    char err[256];

    memset(&s->stats, 0, sizeof(s->stats));
    s->cmds0 = store_commands_sent(e->store);
    s->finished = 0;
    if (s->paused) {
        s->paused = 0;
        metric_set(ENGINE_METRIC(e, paused_until), LABELS(cs->name), 0);
    }
    if (s->loaded) {
        cycle_begin(s);
        return;
    }
    if (!s->index_valid || !s->has_snapshot) {
        snapshot_load(s);
        return;
    }
    /* the index must not change until on_restored() */
    s->phase = PHASE_LOAD;
    if (store_restore_async(e->store, cs->name, e->token, s->index, s->cycle, on_restored, s, err,
                            sizeof(err)) != 0)
        on_restored(s, STORE_FENCE_ERROR, 0, err);
}
