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
 * member beat and the lease renewals, takes and releases are asynchronous
 * store calls on this loop (hiredis's async API): their round trips hold
 * nobody. The snapshot load, the commit, the outbox (issue 12 moves them
 * next, in that order), the last records of vanished sessions and the
 * lapsed-lease retake still block the loop for theirs; so do the releases
 * at exit, after the loop ended.
 */
#include "engine.h"

#include <malloc.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "event.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "outbox.h"
#include "page_scan.h"
#include "store.h"

/* Redis connect and command timeout. */
#define ENGINE_REDIS_TIMEOUT_MS 5000
/* Bound of the final flush of every sink at exit when no stop was asked (once). */
#define ENGINE_FLUSH_MS 10000
/*
 * Of the shutdown grace, the part kept for flushing the sinks after the
 * cycles in flight were given the rest to finish (at most, in seconds).
 */
#define ENGINE_FLUSH_RESERVE_S 5.0
/*
 * Deliveries in flight per source. A first cycle with initial_snapshot=emit
 * can hold a whole population's events; handing them over in windows keeps
 * the sinks' queues (and our memory) bounded.
 */
#define ENGINE_DELIVERY_WINDOW 5000
/*
 * Bytes of text one window of a commit's outbox events or dead letters may
 * hold (store_letters_t): the store queues a window and writes it out
 * before the next is encoded, so that the outbox events of a first emit
 * cycle (~1.5 KiB each, a million of them) are never all in memory. 1 MiB
 * matches the store's STORE_FLUSH_BYTES; a window also holds at most
 * STORE_BATCH letters.
 */
#define ENGINE_LETTER_WINDOW_BYTES (1024u * 1024u)
/* Heap a finished cycle must have held for its release to hand the free
 * pages back to the kernel (malloc_trim walks the whole heap: not worth it
 * for the usual small churn cycle). */
#define ENGINE_TRIM_AFTER_BYTES (16u * 1024u * 1024u)
/*
 * How often a sink that does not use the loop (no SINK_F_LOOP: a module
 * written for poll()) is polled: while it holds events, and while idle
 * (where its poll() may notice a closed connection or a moved file).
 */
#define ENGINE_POLL_BUSY_S 0.01
#define ENGINE_POLL_IDLE_S 0.1
/*
 * Lease renewals due within this much of each other are sent together:
 * with thousands of leases taken at scattered times, the lease timer
 * wakes about once a second instead of once per lease. Renewing up to a
 * second early only moves the expiry a second later.
 */
#define ENGINE_LEASE_SLACK_S 1.0
/* once: how often a lease another replica holds is asked for again. */
#define ENGINE_LEASE_WAIT_S 0.25
/*
 * Page transfers in flight at once, over all sources. Per-exam sources
 * usually share one provider host: a thousand simultaneous requests to it
 * would be neither polite nor faster. Sources beyond it queue in order.
 */
#define ENGINE_MAX_TRANSFERS 32
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
 * Commits of one cycle: the first, and one more after each repair a fence
 * asks for (the lease taken again, then the snapshot restored).
 */
#define ENGINE_COMMIT_TRIES 3
/*
 * `once` waits for the outboxes to hand over what its cycles committed, at
 * most this long after the last cycle ended; what is left stays in the
 * outbox for the next run.
 */
#define ENGINE_ONCE_DRAIN_S 60.0
/* Bytes of a sink error kept for a dead-letter record. */
#define ENGINE_DEAD_ERROR_MAX 160
/* How often the gauges read from the sinks (queue depth, ready) are refreshed. */
#define ENGINE_GAUGES_S 1.0
/*
 * How often Redis (a PING) and the sinks are checked for readiness and the
 * outbox and dead-letter sizes are read: a few small commands, well inside
 * a scrape interval.
 */
#define ENGINE_REDIS_CHECK_S 5.0

/* A family of the observer's metrics, NULL without metrics (the metric_*() calls accept NULL). */
#define ENGINE_METRIC(e, family) ((e)->obs.metrics ? (e)->obs.metrics->family : NULL)
#define LABELS(...) ((const char *const[]){__VA_ARGS__})

/* Figures of the last cycle of a source, logged when it commits. */
typedef struct engine_cycle_stats {
    size_t pages;
    size_t observed;
    size_t events;
    size_t changes;
    size_t sessions; /* tracked after the cycle */
    double poll_s;   /* fetching and parsing every page */
    double deliver_s;
    double commit_s;
    uint64_t redis_commands;   /* sent during the cycle, load included */
    size_t vanished_no_record; /* vanished events Redis held no valid last record for */
} engine_cycle_stats_t;

typedef enum phase {
    PHASE_IDLE = 0,
    PHASE_QUEUED,  /* a page request waits for a transfer slot */
    PHASE_FETCH,   /* a page request is in flight */
    PHASE_BACKOFF, /* waiting before retrying the page */
    PHASE_DELIVER, /* events handed to sinks, waiting for their tickets */
    PHASE_CHECK,   /* the PING before delivering is in flight */
    PHASE_LEASE,   /* asking Redis for the lease before a cycle */
} phase_t;

typedef struct source_rt source_rt_t;

/* One outstanding delivery of one event to one sink. */
typedef struct delivery {
    sink_ticket_t ticket;
    source_rt_t *src;
    size_t event;          /* index into the cycle's events */
    struct delivery *next; /* in the source's free list, while unused */
} delivery_t;

/* An event a sink refused for good: it goes to the dead letters at commit. */
typedef struct dead_event {
    size_t event;
    const char *sink; /* the sink's configured name */
    char id[DIFF_EVENT_ID_LEN];
    char error[ENGINE_DEAD_ERROR_MAX];
} dead_event_t;

typedef struct engine_sink {
    const conf_sink_t *conf;
    void *ctx;
    outbox_t *ob; /* outbox sinks only: their delivery worker */
    engine_t *e;
    sink_timer_t *outbox_timer; /* outbox sinks: the worker's next turn */
    sink_timer_t *poll_timer;   /* sinks not on the loop: their next poll() */
} engine_sink_t;

struct source_rt {
    engine_t *e;
    const conf_source_t *conf;
    diff_index_t *index;
    http_client_t *http;
    int loaded; /* index matches Redis as far as we know */
    /* index holds the snapshot committed at cycle, and no other replica held the lease since */
    int index_valid;
    int leased;                               /* we hold the source's lease */
    int renewing;                             /* a renewal is in flight */
    int releasing;                            /* a release is in flight */
    double renew_sent_at;                     /* monotonic s it was sent at */
    double lease_renew_at, lease_valid_until; /* monotonic s */
    double lease_wait_since;                  /* once: first refused acquisition, 0 otherwise */
    int has_snapshot;                         /* Redis holds a snapshot of this source */
    uint64_t cycle;
    double next_due; /* monotonic seconds */
    phase_t phase;
    sink_timer_t *timer;     /* next cycle, backoff, or a delivery check (by phase) */
    int check_armed;         /* the timer is armed for a delivery check */
    source_rt_t *queue_next; /* PHASE_QUEUED: the next source waiting for a transfer slot */
    int wanted;              /* once: a cycle was asked for */
    int finished;            /* once: that cycle ended */
    int last_ok;
    int paused; /* the paused-until gauge is set */
    engine_cycle_stats_t stats;

    /* The cycle in progress; all NULL/0 when idle. */
    diff_options_t opt;
    diff_cycle_t *cy;
    void *poll;
    provider_request_t *req;
    http_response_t resp;
    int attempt;
    double retry_at;
    double pause_s; /* Retry-After of the response that failed the poll, -1 when none */
    int64_t observed_ms;
    char observed_at[EVENT_TIME_LEN]; /* observed_ms as every event of the cycle says it */
    event_buf_t evbuf;                /* the event being handed to the sinks */
    double t_start, t_deliver;
    uint64_t cmds0;
    size_t nevents, next_event;
    delivery_t *ds;
    size_t nds;         /* deliveries of the cycle, in all */
    delivery_t *free_d; /* slots of ds no ticket holds */
    size_t pending, failed;
    dead_event_t *dead;
    size_t ndead, capdead;
    int fatal;
    char first_error[256];
    char first_sink[CONF_NAME_MAX + 1];
};

struct engine {
    const conf_t *conf;
    volatile sig_atomic_t *stop;
    store_t *store;
    loop_t *loop; /* owns every socket and timer of the engine and its sinks */
    http_multi_t *multi;
    engine_sink_t *sinks;
    size_t nsinks;
    source_rt_t *sources;
    size_t nsources;
    int fatal;
    int stop_asked;              /* SIGTERM or SIGINT arrived */
    int closing;                 /* engine_free() runs: timers and completions change nothing */
    double halt_at;              /* monotonic time the stop was first seen; 0 before */
    char token[STORE_TOKEN_LEN]; /* this replica: member id and lease token */
    size_t live_replicas;        /* as of the last member beat, ourselves included */
    double next_beat;
    int beating;         /* a member beat is in flight */
    double beat_sent_at; /* monotonic s */
    int beaten;          /* a member beat succeeded */
    double quiet_until;  /* monotonic s; before it, no lease that is not ours is taken */
    size_t leases_held;
    int once;
    double drain_until; /* once: when the outbox drain gives up; 0 before */

    sink_timer_t *lease_timer; /* member beat and lease renewals */
    double lease_armed_at;     /* when it fires (monotonic s), INFINITY when disarmed */
    sink_timer_t *observe_timer, *halt_timer, *drain_timer;
    sink_timer_t *settle_timer;           /* soon: does the run end now? (engine_kick) */
    source_rt_t *queue_head, *queue_tail; /* PHASE_QUEUED, in order */

    engine_observer_t obs;
    int observed; /* engine_observe() was called */
    double next_gauges, next_redis_check;
    /* Readiness, published by the loop for engine_ready() on the admin's threads. */
    atomic_int checked;      /* the first checks ran */
    atomic_int redis_up;     /* the last PING was answered */
    int checking;            /* a readiness PING is in flight */
    int redis_checked;       /* a readiness PING was answered (or failed) */
    atomic_int unready_sink; /* index of a sink that is not ready, -1 when none */
    atomic_int halting;      /* a stop was asked */
};

static int stopping(const engine_t *e)
{
    return e->fatal || e->stop_asked || (e->stop && *e->stop);
}

/*
 * Something happened that may end the run (a cycle ended, an outbox
 * settled, a fatal error, a signal): on_settle() looks once the current
 * callback returned, however many such things happen in one turn.
 */
static void engine_kick(engine_t *e)
{
    if (!loop_timer_armed(e->settle_timer))
        loop_timer_arm(e->settle_timer, 0);
}

static void source_arm(source_rt_t *s, double after_s)
{
    loop_timer_arm(s->timer, after_s > 0 ? after_s : 0);
}

/* The lease timer fires by when (monotonic s), or sooner as it was. */
static void lease_due(engine_t *e, double when)
{
    if (when >= e->lease_armed_at)
        return;
    e->lease_armed_at = when;
    loop_timer_arm(e->lease_timer, when - clock_mono_s() > 0 ? when - clock_mono_s() : 0);
}

/* ---- leases (one replica polls a source at a time) ---- */

static int64_t lease_ttl_ms(const engine_t *e)
{
    return (int64_t)e->conf->lease_ttl_s * 1000;
}

/* The most sources this replica takes: an even share among the live replicas. */
static size_t fair_share(const engine_t *e)
{
    size_t live = e->live_replicas ? e->live_replicas : 1;
    return (e->nsources + live - 1) / live;
}

/*
 * The sessions gauge of s: its snapshot's counts while we hold its lease,
 * 0 otherwise, so that a sum over the replicas counts each session once.
 */
static void sessions_gauge(source_rt_t *s)
{
    size_t n[DIFF_STATE_COUNT] = {0};
    if (s->leased)
        diff_index_states(s->index, n);
    for (int st = DIFF_STATE_PENDING; st < DIFF_STATE_COUNT; st++)
        metric_set(ENGINE_METRIC(s->e, sessions),
                   LABELS(s->conf->name, diff_state_name((diff_state_t)st)), (double)n[st]);
}

static void lease_gauges(source_rt_t *s)
{
    metric_set(ENGINE_METRIC(s->e, lease_owned), LABELS(s->conf->name), s->leased ? 1 : 0);
    sessions_gauge(s);
}

static void lease_lost(source_rt_t *s, const char *why)
{
    if (!s->leased)
        return;
    s->leased = 0;
    s->loaded = 0; /* the next holder commits: re-read the snapshot when ours again */
    s->e->leases_held--;
    lease_gauges(s);
    metric_add(ENGINE_METRIC(s->e, lease_lost), LABELS(s->conf->name), 1);
    LOG_WARN("lease lost; another replica polls this source now", LF_S("source", s->conf->name),
             LF_S("why", why));
}

/*
 * Another replica holds the lease of s: it may commit, so our index may
 * fall behind the snapshot and must never be restored over a Redis that
 * lost it (ensure_loaded() reads the snapshot instead). A lease that only
 * lapsed (Redis unreachable, or restarted empty) leaves the index ours.
 */
static void lease_taken_over(source_rt_t *s, const char *why)
{
    s->index_valid = 0;
    lease_lost(s, why);
}

/*
 * The lease of s is ours (taken, or taken again): another replica may have
 * committed since we last read the snapshot, so the next cycle checks it.
 */
static void lease_taken(source_rt_t *s, double now)
{
    double ttl = s->e->conf->lease_ttl_s;

    if (!s->leased) {
        s->leased = 1;
        s->e->leases_held++;
        lease_gauges(s);
    }
    s->loaded = 0;
    s->lease_renew_at = now + ttl / 3;
    s->lease_valid_until = now + ttl;
    s->lease_wait_since = 0;
    lease_due(s->e, s->lease_renew_at);
}

/* SET NX of the lease of s; err receives the reason of an error. */
static store_lease_t lease_set(source_rt_t *s, char *err, size_t errlen)
{
    engine_t *e = s->e;
    return store_lease_acquire(e->store, s->conf->name, e->token, lease_ttl_ms(e), err, errlen);
}

/*
 * Nobody holds the lease of s although this replica did: it expired while
 * we could not renew it, or Redis lost it (flushed, restarted empty). Takes
 * it again unless another replica was faster. Whether the snapshot
 * survived is for the commit's fence and ensure_loaded() to find out. 1
 * when the lease is ours again, 0 when another replica's, -1 on a Redis
 * error.
 */
static int lease_retake(source_rt_t *s, double now)
{
    char err[256];

    switch (lease_set(s, err, sizeof(err))) {
    case STORE_LEASE_HELD:
        lease_taken(s, now);
        LOG_WARN("lease gone from redis (nobody held it); taken again",
                 LF_S("source", s->conf->name), LF_I("ttl_s", s->e->conf->lease_ttl_s));
        return 1;
    case STORE_LEASE_OTHER:
    case STORE_LEASE_GONE:
        lease_taken_over(s, "taken by another replica after it lapsed");
        return 0;
    case STORE_LEASE_ERROR:
        break;
    }
    LOG_WARN("cannot take the lapsed lease again", LF_S("source", s->conf->name),
             LF_S("error", err));
    return -1;
}

/* The next time the lease timer must fire: the beat, or the first renewal due. */
static void leases_rearm(engine_t *e)
{
    double next = e->next_beat;

    /* a renewal in flight re-arms the timer when its answer comes */
    for (size_t i = 0; i < e->nsources; i++) {
        const source_rt_t *s = &e->sources[i];
        if (s->leased && !s->renewing && s->lease_renew_at < next)
            next = s->lease_renew_at;
    }
    lease_due(e, next);
}

/* store_member_beat_async()'s answer. */
static void on_beat(void *opaque, int rc, size_t live, bool was_member, const char *err)
{
    engine_t *e = opaque;
    double ttl = e->conf->lease_ttl_s;
    (void)err;

    e->beating = 0;
    if (e->closing || rc != 0)
        return;
    e->live_replicas = live;
    if (e->beaten && !was_member) {
        /* Every replica's leases and beats vanished with it: the live
         * count is too low until they beat again, and the sources they
         * held are theirs to take back, with the snapshots only they
         * have in memory. */
        e->quiet_until = e->beat_sent_at + ttl;
        LOG_WARN("this replica's membership vanished from redis (it lost its data, or "
                 "this replica was cut off past the lease TTL); taking no source it does "
                 "not hold for one lease TTL",
                 LF_I("ttl_s", ttl));
    }
    e->beaten = 1;
}

/*
 * store_lease_renew_async()'s answer for s. The lease counts from when the
 * renewal was sent: Redis extended it at some moment after that.
 */
static void on_renewed(void *opaque, store_lease_t r, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    double ttl = e->conf->lease_ttl_s, sent = s->renew_sent_at, now;
    (void)err;

    s->renewing = 0;
    if (e->closing || !s->leased)
        return;
    now = clock_mono_s();
    switch (r) {
    case STORE_LEASE_HELD:
        s->lease_renew_at = sent + ttl / 3;
        s->lease_valid_until = sent + ttl;
        break;
    case STORE_LEASE_OTHER:
        lease_taken_over(s, "taken by another replica (this one was paused or cut off)");
        break;
    case STORE_LEASE_GONE:
    case STORE_LEASE_ERROR:
        /* Gone: take it again; a Redis error either way counts as a failed renewal. */
        if (r == STORE_LEASE_GONE && lease_retake(s, now) >= 0)
            break;
        if (now >= s->lease_valid_until)
            lease_lost(s, "not renewed within its TTL");
        else
            s->lease_renew_at = now + 1;
        break;
    }
    leases_rearm(e);
}

/*
 * Beats the replica's membership and renews the leases that are due (or
 * due within ENGINE_LEASE_SLACK_S), without waiting for Redis: each answer
 * comes back through on_beat() or on_renewed(). Re-arms the lease timer
 * for the next.
 */
static void leases_tick(engine_t *e, double now)
{
    double ttl = e->conf->lease_ttl_s;
    char err[256];

    if (now >= e->next_beat && !e->beating) {
        e->next_beat = now + ttl / 3;
        e->beat_sent_at = now;
        e->beating = store_member_beat_async(e->store, e->token, lease_ttl_ms(e), on_beat, e, err,
                                             sizeof(err)) == 0;
    }
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = &e->sources[i];
        if (!s->leased || s->renewing || now + ENGINE_LEASE_SLACK_S < s->lease_renew_at)
            continue;
        s->renew_sent_at = now;
        if (store_lease_renew_async(e->store, s->conf->name, e->token, lease_ttl_ms(e), on_renewed,
                                    s, err, sizeof(err)) == 0) {
            s->renewing = 1;
            /* asked again if no answer came by then (the store times out first) */
            s->lease_renew_at = now + 1;
            continue;
        }
        if (now >= s->lease_valid_until)
            lease_lost(s, "not renewed within its TTL");
        else
            s->lease_renew_at = now + 1;
    }
    leases_rearm(e);
}

static void on_lease_timer(void *opaque)
{
    engine_t *e = opaque;

    e->lease_armed_at = INFINITY;
    if (!e->closing)
        leases_tick(e, clock_mono_s());
}

/* store_lease_release_async()'s answer: a release that failed keeps the lease. */
static void on_released(void *opaque, int rc, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    (void)err;

    s->releasing = 0;
    if (e->closing || rc != 0 || !s->leased)
        return;
    s->leased = 0;
    s->loaded = 0;
    s->index_valid = 0; /* the next holder commits */
    e->leases_held--;
    lease_gauges(s);
    LOG_INFO("lease released to balance the replicas", LF_S("source", s->conf->name),
             LF_I("replicas", e->live_replicas), LF_I("held", e->leases_held));
}

/* After a cycle: gives the lease back when this replica holds more than its share. */
static void lease_rebalance(source_rt_t *s)
{
    engine_t *e = s->e;
    char err[256];

    if (e->once || !s->leased || s->releasing || e->leases_held <= fair_share(e))
        return;
    s->releasing = store_lease_release_async(e->store, s->conf->name, e->token, on_released, s, err,
                                             sizeof(err)) == 0;
}

static void leases_release_all(engine_t *e)
{
    char err[256];

    for (size_t i = 0; i < e->nsources; i++) {
        if (e->sources[i].leased && store_lease_release(e->store, e->sources[i].conf->name,
                                                        e->token, err, sizeof(err)) != 0)
            LOG_WARN("cannot release the lease; it expires by itself",
                     LF_S("source", e->sources[i].conf->name), LF_S("error", err));
        e->sources[i].leased = 0;
    }
    e->leases_held = 0;
    (void)store_member_leave(e->store, e->token, err, sizeof(err));
}

/* ---- construction ---- */

static void on_source_timer(void *opaque);
static void on_observe_timer(void *opaque);
static void on_halt_deadline(void *opaque);
static void on_settle(void *opaque);
static void on_stop_signal(void *opaque);
static void on_outbox_timer(void *opaque);
static void on_outbox_settled(void *opaque);
static void on_sink_poll(void *opaque);

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
    e->live_replicas = 1;
    e->lease_armed_at = INFINITY;
    if ((e->lease_timer = loop_timer_new(e->loop, on_lease_timer, e)) == NULL ||
        (e->observe_timer = loop_timer_new(e->loop, on_observe_timer, e)) == NULL ||
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
    atomic_init(&e->checked, 0);
    atomic_init(&e->redis_up, 0);
    atomic_init(&e->unready_sink, -1);
    atomic_init(&e->halting, 0);

    e->sinks = calloc(conf->nsinks, sizeof(engine_sink_t));
    if (e->sinks == NULL)
        goto nomem;
    for (size_t i = 0; i < conf->nsinks; i++) {
        const conf_sink_t *cs = &conf->sinks[i];
        char kerr[256];
        engine_sink_t *sk = &e->sinks[i];
        sk->conf = cs;
        sk->e = e;
        sink_host_t host = {.name = cs->name,
                            .redis_url = conf->redis_url,
                            .redis_prefix = conf->redis_prefix,
                            .loop = loop_sink_api(e->loop)};
        sk->ctx = cs->type->create(cs->cfg, &host, kerr, sizeof(kerr));
        e->nsinks++;
        if (sk->ctx == NULL) {
            snprintf(err, errlen, "sink %s: %s", cs->name, kerr);
            goto err;
        }
        if (!(cs->type->flags & SINK_F_LOOP) &&
            (sk->poll_timer = loop_timer_new(e->loop, on_sink_poll, sk)) == NULL)
            goto nomem;
        if (cs->type->flags & SINK_F_OUTBOX) {
            outbox_options_t oo = {.sink = cs->name,
                                   .type = cs->type,
                                   .ctx = sk->ctx,
                                   .conf = cs->cfg,
                                   .store = e->store,
                                   .settled = on_outbox_settled,
                                   .opaque = sk};
            sk->ob = outbox_new(&oo, kerr, sizeof(kerr));
            if (sk->ob == NULL) {
                snprintf(err, errlen, "sink %s: %s", cs->name, kerr);
                goto err;
            }
            if ((sk->outbox_timer = loop_timer_new(e->loop, on_outbox_timer, sk)) == NULL)
                goto nomem;
        }
    }

    e->sources = calloc(conf->nsources, sizeof(source_rt_t));
    if (e->sources == NULL)
        goto nomem;
    double t0 = clock_mono_s();
    for (size_t i = 0; i < conf->nsources; i++) {
        source_rt_t *s = &e->sources[i];
        const conf_source_t *cs = &conf->sources[i];
        char herr[256];
        s->e = e;
        s->conf = cs;
        s->resp.retry_after_s = -1;
        s->pause_s = -1;
        s->index = diff_index_new();
        http_options_t ho = {.timeout_ms = cs->timeout_s * 1000L,
                             .connect_timeout_ms = cs->timeout_s * 1000L,
                             .max_body = HTTP_DEFAULT_MAX_BODY};
        s->http = http_client_new(&ho, herr, sizeof(herr));
        s->timer = loop_timer_new(e->loop, on_source_timer, s);
        e->nsources++;
        if (s->index == NULL || s->http == NULL || s->timer == NULL)
            goto nomem;
        /* Spread the first cycles over a fraction of each interval. */
        s->next_due = t0 + cs->interval_s * ENGINE_JITTER * http_uniform01();
    }
    return e;
nomem:
    snprintf(err, errlen, "out of memory");
err:
    engine_free(e);
    return NULL;
}

static void cycle_release(source_rt_t *s)
{
    if (s->poll)
        s->conf->provider->poll_free(s->poll);
    s->poll = NULL;
    size_t held = diff_cycle_memory(s->cy);
    diff_cycle_free(s->cy);
    s->cy = NULL;
    free(s->req);
    s->req = NULL;
    http_response_reset(&s->resp);
    free(s->ds);
    s->ds = NULL;
    event_buf_free(&s->evbuf);
    /* A large cycle's memory sits in malloc's free lists between the
     * index's entries, where glibc does not give it back by itself: the
     * first emit cycle of a large source would otherwise set the
     * process's RSS for good. */
    if (held >= ENGINE_TRIM_AFTER_BYTES)
        malloc_trim(0);
    free(s->dead);
    s->dead = NULL;
    s->ndead = s->capdead = 0;
    s->free_d = NULL;
    s->nevents = s->next_event = s->nds = 0;
    s->pending = s->failed = 0;
    s->fatal = 0;
    s->first_error[0] = s->first_sink[0] = '\0';
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

void engine_free(engine_t *e)
{
    if (e == NULL)
        return;
    /* The flushes below may run the loop: nothing may start or commit then. */
    e->closing = 1;
    /* Fails the asynchronous store calls in flight now, while the sources
     * their callbacks name still exist (closing: they change nothing). */
    store_detach(e->store);
    int flush_ms = flush_budget_ms(e);
    for (size_t i = 0; i < e->nsinks; i++) {
        const sink_type_t *t = e->sinks[i].conf->type;
        if (e->sinks[i].ctx == NULL)
            continue;
        /* Outbox attempts settle through the store: both still exist here. */
        if (t->flush(e->sinks[i].ctx, flush_ms) != 0)
            LOG_WARN(e->sinks[i].ob ? "sink still had attempts in flight at exit; those events "
                                      "stay in the outbox and are retried after their claim "
                                      "expires"
                                    : "sink still had undelivered events at exit; they were not "
                                      "committed and will be delivered by the next run",
                     LF_S("sink", e->sinks[i].conf->name),
                     LF_I("pending", sink_pending(t, e->sinks[i].ctx)));
        t->destroy(e->sinks[i].ctx);
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        outbox_free(e->sinks[i].ob);
        loop_timer_free(e->sinks[i].outbox_timer);
        loop_timer_free(e->sinks[i].poll_timer);
    }
    free(e->sinks);
    if (e->store)
        leases_release_all(e);
    for (size_t i = 0; i < e->nsources; i++) {
        /* Sinks are gone: no ticket of a cycle can still be resolved. */
        http_client_free(e->sources[i].http);
        cycle_release(&e->sources[i]);
        diff_index_free(e->sources[i].index);
        loop_timer_free(e->sources[i].timer);
    }
    free(e->sources);
    http_multi_free(e->multi);
    loop_timer_free(e->lease_timer);
    loop_timer_free(e->observe_timer);
    loop_timer_free(e->halt_timer);
    loop_timer_free(e->drain_timer);
    loop_timer_free(e->settle_timer);
    loop_free(e->loop);
    store_free(e->store);
    free(e);
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
    double asked = s->pause_s;
    double pause = asked < ENGINE_MAX_PAUSE_S ? asked : ENGINE_MAX_PAUSE_S;
    char until[EVENT_TIME_LEN];

    s->pause_s = -1;
    /* once polls a single time; an interval that waits longer anyway needs no pause */
    if (s->e->once || now + pause <= s->next_due)
        return;
    s->next_due = now + pause;
    int64_t until_ms = clock_unix_ms() + (int64_t)(pause * 1000);
    event_format_time(until_ms, until);
    s->paused = 1;
    metric_set(ENGINE_METRIC(s->e, paused_until), LABELS(s->conf->name), (double)until_ms / 1000.0);
    LOG_WARN("provider asked for a pause (Retry-After); source paused",
             LF_S("source", s->conf->name), LF_D("delay_s", pause), LF_S("until", until),
             LF_D("retry_after_s", asked), LF_B("capped", asked > ENGINE_MAX_PAUSE_S),
             LF_D("max_pause_s", ENGINE_MAX_PAUSE_S));
}

static void cycle_end(source_rt_t *s, int ok)
{
    double iv = s->conf->interval_s, now = clock_mono_s();
    cycle_release(s);
    s->phase = PHASE_IDLE;
    s->finished = 1;
    s->last_ok = ok;
    metric_add(ENGINE_METRIC(s->e, polls), LABELS(s->conf->name, ok ? "ok" : "failed"), 1);
    s->next_due = now + iv + iv * ENGINE_JITTER * (http_uniform01() - 0.5);
    if (s->pause_s >= 0)
        pause_apply(s, now);
    lease_rebalance(s);
    s->check_armed = 0;
    if (s->e->once)
        loop_timer_arm(s->timer, -1); /* once polls a single time */
    else
        source_arm(s, s->next_due - now);
    engine_kick(s->e);
}

/* Ends the cycle without committing; logs msg with err when msg is set. */
static void cycle_fail(source_rt_t *s, const char *msg, const char *err)
{
    if (msg)
        LOG_WARN(msg, LF_S("source", s->conf->name), LF_S("error", err),
                 LF_I("pages", s->stats.pages));
    cycle_end(s, 0);
}

/*
 * Puts the snapshot of s back into Redis from memory, where Redis has none
 * although this replica holds the lease and the snapshot it committed (or
 * loaded) last: Redis lost its data (FLUSHALL, restarted without
 * persistence, failed over to an empty replica). Without it the next cycle
 * would take the empty Redis for a first poll: a baseline that swallows
 * every change since, or, with initial_snapshot emit, every session sent
 * again. Returns 1 when restored, 0 when Redis holds a snapshot (someone
 * else's, or ours after all: load it), -1 when refused or failed.
 */
static int snapshot_restore(source_rt_t *s)
{
    engine_t *e = s->e;
    char err[256];

    switch (
        store_restore(e->store, s->conf->name, e->token, s->index, s->cycle, err, sizeof(err))) {
    case STORE_FENCE_OK:
        metric_add(ENGINE_METRIC(e, redis_state_restored), LABELS(s->conf->name), 1);
        LOG_WARN("redis lost the snapshot of this source; restored it from memory (outbox events "
                 "and dead letters redis held are not restored)",
                 LF_S("source", s->conf->name), LF_I("cycle", (long long)s->cycle),
                 LF_I("sessions", diff_index_size(s->index)));
        return 1;
    case STORE_FENCE_BASE_MOVED:
        return 0;
    case STORE_FENCE_LEASE_OTHER:
        lease_taken_over(s, err);
        break;
    case STORE_FENCE_LEASE_GONE:
        s->lease_renew_at = 0; /* the next tick takes it again */
        lease_due(e, 0);
        break;
    case STORE_FENCE_BASE_MISSING:
    case STORE_FENCE_ERROR:
        break;
    }
    LOG_WARN("redis lost the snapshot of this source and it cannot be restored now",
             LF_S("source", s->conf->name), LF_S("error", err));
    return -1;
}

static int ensure_loaded(engine_t *e, source_rt_t *s)
{
    char err[256];
    bool exists = false;
    if (s->loaded)
        return 0;
    if (s->index_valid && s->has_snapshot) {
        int r = snapshot_restore(s);
        if (r != 0) {
            s->loaded = r > 0;
            return r > 0 ? 0 : -1;
        }
    }
    s->index_valid = 0; /* store_load() clears the index first */
    if (store_load(e->store, s->conf->name, s->index, &exists, &s->cycle, err, sizeof(err)) != 0) {
        LOG_ERROR("cannot load the snapshot; skipping this cycle", LF_S("source", s->conf->name),
                  LF_S("error", err));
        return -1;
    }
    s->has_snapshot = exists;
    s->index_valid = 1;
    s->loaded = 1;
    sessions_gauge(s);
    LOG_INFO("snapshot loaded", LF_S("source", s->conf->name), LF_B("exists", exists),
             LF_I("sessions", diff_index_size(s->index)), LF_I("cycle", (long long)s->cycle));
    return 0;
}

/*
 * A fenced commit found that Redis forgot what this replica holds: the
 * lease (nobody holds it) or the snapshot the delta builds on. Takes the
 * lease again, or puts the snapshot back from memory, so that the commit
 * can be tried once more: 0 then, -1 when the fence's answer stands.
 */
static int commit_repair(source_rt_t *s, store_fence_t f)
{
    if (f == STORE_FENCE_LEASE_GONE)
        return lease_retake(s, clock_mono_s()) == 1 ? 0 : -1;
    if (f == STORE_FENCE_BASE_MISSING && s->index_valid && s->has_snapshot)
        return snapshot_restore(s) == 1 ? 0 : -1;
    return -1;
}

/* The CloudEvent text of event i of the cycle (malloc'd, owned by the
 * caller), *ev filled; NULL on ENOMEM or text that is not UTF-8. */
static char *cycle_event_json(source_rt_t *s, size_t i, diff_event_t *ev, size_t *len)
{
    if (diff_cycle_event(s->cy, i, ev) != 0)
        return NULL;
    return event_encode(ev, s->conf->name, s->conf->provider->name, s->observed_ms, len);
}

/*
 * What a commit writes besides the delta, read by the store window by
 * window (store_letters_t): the events of outbox sinks, sink by sink (so
 * that the store batches each sink's run), and the events sinks refused for
 * good as dead-letter records. A window's texts are encoded when the store
 * asks for it and freed when it asks for the next one.
 */
typedef struct letters {
    source_rt_t *s;
    store_letters_t outbox, dead;
    /* the next outbox letter: its index, and the sink and event it is */
    size_t next, sink, event;
    char **texts; /* the window's texts, owned */
    size_t ntexts;
    char (*ids)[DIFF_EVENT_ID_LEN]; /* the outbox window's event ids */
} letters_t;

static void letters_window_free(letters_t *l)
{
    for (size_t i = 0; i < l->ntexts; i++)
        free(l->texts[i]);
    l->ntexts = 0;
}

static void letters_free(letters_t *l)
{
    if (l->texts != NULL)
        letters_window_free(l);
    free(l->texts);
    free(l->ids);
}

/* Moves the outbox cursor to the next (sink, event) the sink routes, at or
 * after the current one; sink == nsinks when there is none. */
static void letters_seek(letters_t *l)
{
    engine_t *e = l->s->e;

    for (; l->sink < e->nsinks; l->sink++, l->event = 0) {
        const engine_sink_t *sk = &e->sinks[l->sink];
        for (; sk->ob && l->event < l->s->nevents; l->event++) {
            if (conf_sink_routes(sk->conf, l->s->conf->name,
                                 diff_cycle_event_type(l->s->cy, l->event)))
                return;
        }
    }
}

static int outbox_letters_get(void *opaque, size_t from, store_letter_t *out, size_t max,
                              size_t *got)
{
    letters_t *l = opaque;
    source_rt_t *s = l->s;
    size_t bytes = 0;

    letters_window_free(l);
    if (from < l->next) { /* the commit is tried again: from the start */
        l->next = l->sink = l->event = 0;
        letters_seek(l);
    }
    for (; l->next < from; l->next++, l->event++)
        letters_seek(l);
    *got = 0;
    while (*got < max && bytes < ENGINE_LETTER_WINDOW_BYTES) {
        diff_event_t ev;
        size_t len = 0;
        char *json;

        letters_seek(l);
        if (l->sink == s->e->nsinks || (json = cycle_event_json(s, l->event, &ev, &len)) == NULL)
            return -1; /* fewer letters than counted, or ENOMEM */
        l->texts[l->ntexts++] = json;
        memcpy(l->ids[*got], ev.id, DIFF_EVENT_ID_LEN);
        out[*got] = (store_letter_t){
            .sink = s->e->sinks[l->sink].conf->name, .id = l->ids[*got], .json = json, .len = len};
        (*got)++;
        bytes += len;
        l->next++;
        l->event++;
    }
    return 0;
}

static int dead_letters_get(void *opaque, size_t from, store_letter_t *out, size_t max, size_t *got)
{
    letters_t *l = opaque;
    source_rt_t *s = l->s;
    size_t bytes = 0;

    letters_window_free(l);
    for (*got = 0; *got < max && bytes < ENGINE_LETTER_WINDOW_BYTES; (*got)++) {
        const dead_event_t *d = &s->dead[from + *got];
        diff_event_t ev;
        size_t len = 0;
        char *json = cycle_event_json(s, d->event, &ev, &len);
        char *rec = json ? outbox_dead_record(d->sink, d->id, 1, d->error, json, len) : NULL;

        free(json);
        if (rec == NULL)
            return -1;
        l->texts[l->ntexts++] = rec;
        out[*got] = (store_letter_t){.sink = d->sink, .id = d->id, .json = rec, .len = strlen(rec)};
        bytes += out[*got].len;
    }
    return 0;
}

/* Counts the letters of the commit and sets up their readers. -1: out of memory. */
static int letters_init(source_rt_t *s, letters_t *l)
{
    engine_t *e = s->e;
    size_t nout = 0;

    memset(l, 0, sizeof(*l));
    l->s = s;
    for (size_t k = 0; k < e->nsinks; k++) {
        for (size_t i = 0; e->sinks[k].ob && i < s->nevents; i++)
            nout +=
                conf_sink_routes(e->sinks[k].conf, s->conf->name, diff_cycle_event_type(s->cy, i));
    }
    l->outbox = (store_letters_t){.n = nout, .get = outbox_letters_get, .opaque = l};
    l->dead = (store_letters_t){.n = s->ndead, .get = dead_letters_get, .opaque = l};
    if (nout == 0 && s->ndead == 0)
        return 0;
    l->texts = calloc(STORE_BATCH, sizeof(*l->texts));
    l->ids = calloc(STORE_BATCH, sizeof(*l->ids));
    if (l->texts == NULL || l->ids == NULL)
        return -1;
    letters_seek(l);
    return 0;
}

static void commit_metrics(source_rt_t *s)
{
    engine_t *e = s->e;
    size_t by_type[DIFF_EV_COUNT] = {0};

    if (e->obs.metrics == NULL)
        return;
    for (size_t i = 0; i < s->nevents; i++)
        by_type[diff_cycle_event_type(s->cy, i)]++;
    for (int t = 0; t < DIFF_EV_COUNT; t++) {
        if (by_type[t] > 0)
            metric_add(e->obs.metrics->events,
                       LABELS(s->conf->name, diff_event_type_short((diff_event_type_t)t)),
                       (double)by_type[t]);
    }
    metric_add(e->obs.metrics->unknown_statuses, LABELS(s->conf->name),
               (double)diff_cycle_unknown_count(s->cy));
    metric_add(e->obs.metrics->vanished_no_record, LABELS(s->conf->name),
               (double)s->stats.vanished_no_record);
    metric_set(e->obs.metrics->last_success_timestamp, LABELS(s->conf->name),
               (double)clock_unix_ms() / 1000.0);
    sessions_gauge(s);
}

/* store_delta_t's readers of a cycle's changes and their last records. */
static int cycle_change(void *opaque, size_t i, diff_change_t *out)
{
    return diff_cycle_change(opaque, i, out);
}

static int cycle_change_last(void *opaque, size_t i, const char **text, size_t *len)
{
    return diff_cycle_change_last(opaque, i, text, len);
}

static void cycle_commit(source_rt_t *s)
{
    engine_t *e = s->e;
    engine_cycle_stats_t *st = &s->stats;
    letters_t l;
    char err[256];

    /* t_deliver is set when sinks took events during the cycle, not when
     * every event went to an outbox */
    st->deliver_s = s->nds ? clock_mono_s() - s->t_deliver : 0;
    st->changes = diff_cycle_nchanges(s->cy);
    /* the changes are read from the cycle one by one, not copied out */
    store_delta_t delta = {
        .n = st->changes, .get = cycle_change, .last = cycle_change_last, .opaque = s->cy};
    size_t after = diff_cycle_sessions_after(s->cy);
    if (letters_init(s, &l) != 0) {
        letters_free(&l);
        cycle_fail(s, "cannot commit", "out of memory");
        return;
    }
    store_extra_t extra = {.outbox = l.outbox, .dead = l.dead};
    double t0 = clock_mono_s();
    store_fence_t f = STORE_FENCE_ERROR;
    for (int i = 0; i < ENGINE_COMMIT_TRIES; i++) {
        f = store_commit_fenced(e->store, s->conf->name, e->token, &delta, after, &extra, &s->cycle,
                                err, sizeof(err));
        if (f == STORE_FENCE_OK || commit_repair(s, f) != 0)
            break;
    }
    letters_free(&l);
    switch (f) {
    case STORE_FENCE_OK:
        break;
    case STORE_FENCE_LEASE_OTHER:
        lease_taken_over(s, err);
        cycle_fail(s, "commit refused: another replica holds the lease; it delivers these events",
                   err);
        return;
    case STORE_FENCE_LEASE_GONE:
        cycle_fail(s, "commit refused: nobody holds the lease and it could not be taken again",
                   err);
        return;
    case STORE_FENCE_BASE_MISSING:
    case STORE_FENCE_BASE_MOVED:
        s->loaded = 0;
        cycle_fail(s,
                   "commit refused: the snapshot in redis is not the one this cycle was diffed "
                   "against; the next cycle diffs again",
                   err);
        return;
    case STORE_FENCE_ERROR:
        /* An EXEC whose reply was lost may have applied: re-read it. */
        s->loaded = 0;
        cycle_fail(s, "commit failed; events may be delivered again with the same ids", err);
        return;
    }
    for (size_t k = 0; k < e->nsinks && extra.outbox.n > 0; k++) {
        if (e->sinks[k].ob) {
            outbox_nudge(e->sinks[k].ob);
            loop_timer_arm(e->sinks[k].outbox_timer, 0);
        }
    }
    st->commit_s = clock_mono_s() - t0;
    diff_cycle_apply(s->cy);
    s->has_snapshot = 1;
    /* The fence saw our base in Redis: whatever made us doubt it, the index matches. */
    s->index_valid = s->loaded = 1;
    st->sessions = diff_index_size(s->index);
    commit_metrics(s);
    st->redis_commands = store_commands_sent(e->store) - s->cmds0;
    LOG_INFO(s->opt.baseline ? "baseline recorded" : "cycle committed",
             LF_S("source", s->conf->name), LF_I("cycle", (long long)s->cycle),
             LF_I("pages", st->pages), LF_I("observed", st->observed), LF_I("events", st->events),
             LF_I("changes", st->changes), LF_I("sessions", st->sessions),
             LF_I("outbox", extra.outbox.n), LF_I("dead_letters", extra.dead.n),
             LF_I("unknown_statuses", diff_cycle_unknown_count(s->cy)),
             LF_I("vanished_without_record", st->vanished_no_record), LF_D("poll_s", st->poll_s),
             LF_D("deliver_s", st->deliver_s), LF_D("commit_s", st->commit_s),
             LF_I("redis_commands", (long long)st->redis_commands),
             LF_I("index_bytes", diff_index_memory(s->index)));
    cycle_end(s, 1);
}

/* ---- delivery ---- */

/* The result label of session_bridge_sink_deliveries_total. */
static const char *delivery_result(sink_result_t r)
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
    if (s->ndead == s->capdead) {
        size_t cap = s->capdead ? 2 * s->capdead : 16;
        dead_event_t *n = realloc(s->dead, cap * sizeof(*n));
        if (n == NULL)
            return -1;
        s->dead = n;
        s->capdead = cap;
    }
    dead_event_t *x = &s->dead[s->ndead++];
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
static int routes_live(const engine_sink_t *sk, const source_rt_t *s, diff_event_type_t type)
{
    return sk->ob == NULL && conf_sink_routes(sk->conf, s->conf->name, type);
}

/* What a resolved delivery means for its cycle. */
static void delivery_settle(delivery_t *d, sink_result_t result, const char *errmsg)
{
    sink_ticket_t *t = &d->ticket;
    source_rt_t *s = d->src;
    metric_add(ENGINE_METRIC(s->e, sink_deliveries),
               LABELS((const char *)t->opaque, delivery_result(result)), 1);
    if (result == SINK_OK)
        return;
    if (result == SINK_ERR_PERMANENT && dead_add(s, d, errmsg) == 0)
        return;
    if (s->failed++ == 0) {
        snprintf(s->first_error, sizeof(s->first_error), "%s", errmsg ? errmsg : "failed");
        snprintf(s->first_sink, sizeof(s->first_sink), "%s", (const char *)t->opaque);
    }
    if (result == SINK_ERR_FATAL) {
        s->fatal = 1;
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
    s->pending--;
    delivery_settle(d, result, errmsg);
    d->next = s->free_d;
    s->free_d = d;
    /* Delivery moves on by events: the source looks at its cycle once the
     * sink's callback returned (not inside it: submit() may be calling). */
    if (!s->check_armed) {
        s->check_armed = 1;
        source_arm(s, 0);
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
    while (s->next_event < s->nevents && s->pending < ENGINE_DELIVERY_WINDOW && !s->failed) {
        diff_event_t evbuf, *ev = &evbuf;
        char key[CONF_NAME_MAX + 1 + DIFF_ID_MAX + 1];
        size_t id_len;
        if (diff_cycle_event(s->cy, s->next_event++, ev) != 0 ||
            event_write(&s->evbuf, ev, cs->name, cs->provider->name, s->observed_at) != 0 ||
            (id_len = strlen(ev->session_id)) > DIFF_ID_MAX || name_len > CONF_NAME_MAX) {
            s->failed++;
            snprintf(s->first_error, sizeof(s->first_error),
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
                           .json = s->evbuf.text,
                           .json_len = s->evbuf.len};
        /* pending < ENGINE_DELIVERY_WINDOW left a slot for every sink */
        for (size_t k = 0; k < e->nsinks && s->free_d != NULL; k++) {
            engine_sink_t *sk = &e->sinks[k];
            if (!routes_live(sk, s, ev->type))
                continue;
            delivery_t *d = s->free_d;
            s->free_d = d->next;
            d->ticket.done = on_delivered;
            d->ticket.opaque = sk->conf->name;
            d->ticket.retry_after_s = -1;
            d->src = s;
            d->event = s->next_event - 1;
            s->pending++;
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
static void deliver_check(source_rt_t *s)
{
    deliver_more(s);
    sinks_poke(s->e);
    if (s->pending > 0 || (s->next_event < s->nevents && !s->failed))
        return;
    if (s->fatal) {
        LOG_ERROR("sink failed fatally; stopping", LF_S("source", s->conf->name),
                  LF_S("sink", s->first_sink), LF_S("error", s->first_error));
        cycle_fail(s, NULL, NULL);
    } else if (s->failed) {
        LOG_WARN("events not acknowledged; nothing committed, the next cycle retries",
                 LF_S("source", s->conf->name), LF_S("sink", s->first_sink),
                 LF_I("failed", s->failed), LF_I("deliveries", s->nds),
                 LF_S("error", s->first_error));
        cycle_fail(s, NULL, NULL);
    } else {
        cycle_commit(s);
    }
}

static void log_unknown_statuses(source_rt_t *s)
{
    const char *const *unknown;
    size_t n = diff_cycle_new_unknown_statuses(s->cy, &unknown);
    for (size_t i = 0; i < n; i++)
        LOG_WARN("unknown raw status: no transition; map it with status_map",
                 LF_S("source", s->conf->name), LF_S("status", unknown[i]));
}

/* store_last_get()'s callback: one vanished event's last record, k from the window's first. */
typedef struct last_window {
    source_rt_t *s;
    size_t first;
    int oom;
} last_window_t;

static int on_last(void *opaque, size_t k, const char *text, size_t len)
{
    last_window_t *w = opaque;
    source_rt_t *s = w->s;
    char why[128]; /* not logged: one line per event is what this avoids */

    /* Redis holds what we wrote, but it is read as input: a value that is
     * not a JSON record would make an event that is not JSON (or, not
     * UTF-8, fail its encoding every cycle again). */
    if (text != NULL && page_scan_check(text, len, why, sizeof(why)) == PAGE_SCAN_OK) {
        switch (diff_cycle_vanished_keep(s->cy, w->first + k, text, len)) {
        case DIFF_KEEP_OK:
            return 0;
        case DIFF_KEEP_FULL:
            break;
        case DIFF_KEEP_ERROR:
            w->oom = 1;
            return -1;
        }
    }
    s->stats.vanished_no_record++; /* counted, not logged per event */
    return 0;
}

/*
 * Completes the vanished events of a finished cycle with the last records
 * Redis keeps of their sessions, STORE_BATCH at a time, before any event
 * is read. A session Redis has no record of (stored before records were
 * kept, or lost with Redis's data) keeps a null session. 0, or -1 with err.
 */
static int vanished_records_load(source_rt_t *s, char *err, size_t errlen)
{
    const char *ids[STORE_BATCH];
    size_t nv = diff_cycle_nvanished(s->cy);

    for (size_t from = 0; from < nv; from += STORE_BATCH) {
        size_t n = nv - from < STORE_BATCH ? nv - from : STORE_BATCH;
        last_window_t w = {.s = s, .first = from};

        for (size_t k = 0; k < n; k++)
            ids[k] = diff_cycle_vanished_id(s->cy, from + k);
        if (store_last_get(s->e->store, s->conf->name, ids, n, on_last, &w, err, errlen) != 0) {
            if (w.oom)
                snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

static void on_delivery_ping(void *opaque, int rc, const char *err);

/* Every page was read: diff, then deliver or commit. */
static void poll_complete(source_rt_t *s)
{
    engine_t *e = s->e;
    engine_cycle_stats_t *st = &s->stats;
    char err[256];

    if (diff_cycle_finish(s->cy) != 0) {
        cycle_fail(s, "out of memory finishing the diff", "ENOMEM");
        return;
    }
    st->poll_s = clock_mono_s() - s->t_start;
    metric_observe(ENGINE_METRIC(e, poll_duration), LABELS(s->conf->name), st->poll_s);
    st->observed = diff_cycle_observed(s->cy);
    log_unknown_statuses(s);
    if (vanished_records_load(s, err, sizeof(err)) != 0) {
        cycle_fail(s,
                   "cannot read the last records of vanished sessions; nothing emitted, "
                   "nothing committed",
                   err);
        return;
    }
    s->nevents = st->events = diff_cycle_nevents(s->cy);
    for (size_t i = 0; i < s->nevents; i++) {
        for (size_t k = 0; k < e->nsinks; k++)
            s->nds += routes_live(&e->sinks[k], s, diff_cycle_event_type(s->cy, i));
    }
    if (s->nds == 0) {
        cycle_commit(s);
        return;
    }
    /* Delivering while Redis is away would only produce duplicates: the
     * commit after it would fail. One PING avoids the common case; the
     * source waits for its answer in PHASE_CHECK, the loop does not. */
    s->phase = PHASE_CHECK;
    if (store_ping_async(e->store, on_delivery_ping, s, err, sizeof(err)) != 0)
        cycle_fail(s, "redis unreachable; not delivering, nothing committed", err);
}

/* The PING before delivering answered: hands the cycle's events to the sinks. */
static void on_delivery_ping(void *opaque, int rc, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;

    if (e->closing)
        return;
    if (rc != 0) {
        cycle_fail(s, "redis unreachable; not delivering, nothing committed", err);
        return;
    }
    /* slots for one window, not for every delivery of the cycle: 40
     * bytes per event were 48 MiB in a first emit cycle of 1M sessions */
    size_t nslots =
        s->nds < ENGINE_DELIVERY_WINDOW + e->nsinks ? s->nds : ENGINE_DELIVERY_WINDOW + e->nsinks;
    s->ds = calloc(nslots, sizeof(delivery_t));
    if (s->ds == NULL) {
        cycle_fail(s, "out of memory delivering events", "ENOMEM");
        return;
    }
    for (size_t i = nslots; i-- > 0;) {
        s->ds[i].next = s->free_d;
        s->free_d = &s->ds[i];
    }
    s->phase = PHASE_DELIVER;
    s->t_deliver = clock_mono_s();
    deliver_check(s);
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
        s->queue_next = NULL;
        if (e->queue_tail)
            e->queue_tail->queue_next = s;
        else
            e->queue_head = s;
        e->queue_tail = s;
        return;
    }
    for (size_t i = 0; i < s->req->nheaders; i++)
        hdrs[i] = s->req->headers[i];
    if (http_start(s->e->multi, s->http, s->req->url, hdrs, s->req->nheaders, &s->resp,
                   on_http_done, s, err, sizeof(err)) != 0) {
        cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    }
    s->phase = PHASE_FETCH;
}

/* Retries the current page, rebuilt first when the provider's requests are single-use. */
static void fetch_retry(source_rt_t *s)
{
    const provider_ops_t *p = s->conf->provider;
    char err[512] = "";
    if (p->refresh_request && p->refresh_request(s->poll, s->req, err, sizeof(err)) != 0) {
        cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    }
    fetch_start(s);
}

/* Asks the adapter for the next page, or closes the poll. */
static void fetch_next(source_rt_t *s)
{
    char err[512];
    int r = s->conf->provider->next_request(s->poll, s->req, err, sizeof(err));
    if (r < 0) {
        cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
    } else if (r == 0) {
        poll_complete(s);
    } else {
        s->attempt = 1;
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
        e->queue_head = s->queue_next;
        if (e->queue_head == NULL)
            e->queue_tail = NULL;
        s->queue_next = NULL;
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
        if (rc == 0 && s->resp.status > 0)
            snprintf(code, sizeof(code), "%ld", s->resp.status);
        metric_add(s->e->obs.metrics->http_requests, LABELS(s->conf->name, code), 1);
    }
    switch (http_retry_decide(&http_default_retry, s->attempt, rc, &s->resp, &delay, herr,
                              sizeof(herr))) {
    case HTTP_RETRY_AGAIN:
        LOG_DEBUG("retrying a page", LF_S("source", s->conf->name), LF_S("endpoint", s->req->label),
                  LF_S("error", herr), LF_I("attempt", s->attempt), LF_D("delay_s", delay));
        s->attempt++;
        s->retry_at = clock_mono_s() + delay;
        s->phase = PHASE_BACKOFF;
        source_arm(s, s->e->halt_at ? 0 : delay); /* a stop fails it at once */
        return;
    case HTTP_RETRY_FAIL:
        /* A provider that asks for a pause gets it beyond this poll (cycle_end) */
        if (rc == 0 && http_status_retryable(s->resp.status) && s->resp.retry_after_s >= 0)
            s->pause_s = s->resp.retry_after_s;
        snprintf(err, sizeof(err), "%s: %s after %d attempt%s", s->req->label, herr, s->attempt,
                 s->attempt == 1 ? "" : "s");
        cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    case HTTP_RETRY_DONE:
        break;
    }
    s->stats.pages++;
    if (p->handle_page(s->poll, &s->resp, on_record, s, herr, sizeof(herr)) != 0) {
        snprintf(err, sizeof(err), "%s page %zu: %s", s->req->label, s->stats.pages, herr);
        cycle_fail(s, "poll failed; nothing emitted, nothing committed", err);
        return;
    }
    LOG_DEBUG("page", LF_S("source", s->conf->name), LF_S("endpoint", s->req->label),
              LF_I("page", s->stats.pages), LF_I("bytes", s->resp.len));
    http_response_reset(&s->resp);
    fetch_next(s);
}

static void cycle_start(source_rt_t *s)
{
    engine_t *e = s->e;
    const conf_source_t *cs = s->conf;

    memset(&s->stats, 0, sizeof(s->stats));
    s->cmds0 = store_commands_sent(e->store);
    s->finished = 0;
    if (s->paused) {
        s->paused = 0;
        metric_set(ENGINE_METRIC(e, paused_until), LABELS(cs->name), 0);
    }
    if (ensure_loaded(e, s) != 0) {
        cycle_end(s, 0);
        return;
    }
    s->opt = (diff_options_t){.source = cs->name,
                              .vanish_grace = cs->vanish_grace,
                              .status_map = cs->status_map,
                              .baseline = !s->has_snapshot && !cs->initial_emit,
                              .max_sessions = cs->max_sessions};
    s->observed_ms = clock_unix_ms();
    event_format_time(s->observed_ms, s->observed_at);
    s->t_start = clock_mono_s();
    s->cy = diff_cycle_begin(s->index, &s->opt);
    s->poll = cs->provider->poll_begin(cs, s->observed_ms / 1000);
    s->req = malloc(sizeof(*s->req));
    if (s->cy == NULL || s->poll == NULL || s->req == NULL) {
        cycle_fail(s, "cannot start a cycle", "out of memory");
        return;
    }
    fetch_next(s);
}

/* ---- what the admin endpoint reads ---- */

/* A dead-letter or outbox count of one sink, for its gauge. */
typedef struct count_ask {
    engine_t *e;
    size_t k;   /* the sink */
    int outbox; /* outbox_depth, else dead_letters */
} count_ask_t;

static void on_count(void *opaque, int rc, size_t n, const char *err)
{
    count_ask_t *c = opaque;
    engine_t *e = c->e;
    (void)err;

    if (!e->closing && rc == 0)
        metric_set(c->outbox ? ENGINE_METRIC(e, outbox_depth) : ENGINE_METRIC(e, dead_letters),
                   LABELS(e->sinks[c->k].conf->name), (double)n);
    free(c);
}

static void count_ask(engine_t *e, size_t k, int outbox)
{
    count_ask_t *c = malloc(sizeof(*c));
    const char *name = e->sinks[k].conf->name;
    char err[256];

    if (c == NULL)
        return; /* the gauge keeps its last value */
    *c = (count_ask_t){.e = e, .k = k, .outbox = outbox};
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
        if (e->sinks[k].ob)
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
    int unready = -1;

    for (size_t k = 0; k < e->nsinks; k++) {
        int ready = sink_ready(e->sinks[k].conf->type, e->sinks[k].ctx);
        metric_set(ENGINE_METRIC(e, sink_ready), LABELS(e->sinks[k].conf->name), ready ? 1 : 0);
        if (!ready && unready < 0)
            unready = (int)k;
    }
    atomic_store(&e->unready_sink, unready);
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
    if (!e->observed || now < e->next_gauges)
        return;
    e->next_gauges = now + ENGINE_GAUGES_S;
    metric_set(ENGINE_METRIC(e, heartbeat_timestamp), NULL, (double)clock_unix_ms() / 1000.0);
    for (size_t k = 0; k < e->nsinks; k++) {
        engine_sink_t *sk = &e->sinks[k];
        metric_set(ENGINE_METRIC(e, sink_queue_depth), LABELS(sk->conf->name),
                   (double)sink_pending(sk->conf->type, sk->ctx));
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
    static const sink_result_t results[] = {SINK_OK, SINK_ERR_RETRY, SINK_ERR_PERMANENT,
                                            SINK_ERR_FATAL};

    e->obs = *obs;
    e->observed = 1;
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = &e->sources[i];
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
        lease_gauges(s);
    }
    for (size_t k = 0; k < e->nsinks; k++) {
        const char *name = e->sinks[k].conf->name;
        for (size_t r = 0; r < sizeof(results) / sizeof(results[0]); r++)
            metric_add(ENGINE_METRIC(e, sink_deliveries), LABELS(name, delivery_result(results[r])),
                       0);
        metric_set(ENGINE_METRIC(e, sink_fatal), LABELS(name), 0);
        metric_set(ENGINE_METRIC(e, dead_letters), LABELS(name), 0);
        if (e->sinks[k].ob) {
            metric_set(ENGINE_METRIC(e, outbox_depth), LABELS(name), 0);
            metric_set(ENGINE_METRIC(e, sink_disabled), LABELS(name), 0);
        }
    }
    metric_add(ENGINE_METRIC(e, redis_errors), NULL, 0);
}

bool engine_ready(void *opaque, char *why, size_t whylen)
{
    engine_t *e = opaque;
    int sink = atomic_load(&e->unready_sink);
    size_t n = 0;

    why[0] = '\0';
    if (atomic_load(&e->halting))
        n += (size_t)snprintf(why, whylen, "shutting down");
    else if (!atomic_load(&e->checked))
        n += (size_t)snprintf(why, whylen, "starting");
    if (atomic_load(&e->checked) && !atomic_load(&e->redis_up) && n < whylen)
        n += (size_t)snprintf(why + n, whylen - n, "%sredis unreachable", n ? "; " : "");
    /* conf names are set before the server starts and never change */
    if (sink >= 0 && n < whylen)
        n += (size_t)snprintf(why + n, whylen - n, "%ssink %s not ready", n ? "; " : "",
                              e->sinks[sink].conf->name);
    return n == 0;
}

/* ---- the loop ---- */

/*
 * Whether s may start its cycle: its lease is ours, or could be taken now
 * (in run mode only up to this replica's fair share). Otherwise another
 * replica polls it; run mode tries again within half a TTL (so that a dead
 * holder's sources are taken over within the TTL), once mode waits up to a
 * TTL for it and then gives the source up as failed.
 */
/* Another replica holds the lease of s (or this one has its share): when to ask again. */
static void lease_wait(source_rt_t *s, double now)
{
    engine_t *e = s->e;
    double ttl = e->conf->lease_ttl_s;

    if (!e->once) {
        double retry = ttl / 2 < s->conf->interval_s ? ttl / 2 : s->conf->interval_s;
        s->next_due = now + retry * (0.75 + 0.5 * http_uniform01());
        source_arm(s, s->next_due - now);
        return;
    }
    if (s->lease_wait_since == 0) {
        s->lease_wait_since = now;
        LOG_INFO("another replica holds the lease; waiting for it", LF_S("source", s->conf->name),
                 LF_I("up_to_s", ttl + 1));
    } else if (now - s->lease_wait_since > ttl + 1) {
        LOG_ERROR("another replica kept the lease; nothing polled", LF_S("source", s->conf->name));
        s->lease_wait_since = 0;
        s->finished = 1;
        s->last_ok = 0;
        engine_kick(e);
        return;
    }
    source_arm(s, ENGINE_LEASE_WAIT_S);
}

/* Whether the timer of an idle s starts a cycle now. */
static int cycle_wanted(const source_rt_t *s)
{
    const engine_t *e = s->e;
    return e->halt_at == 0 && (!e->once || (s->wanted && !s->finished));
}

/* store_lease_acquire_async()'s answer: the cycle starts, waits, or fails. */
static void on_lease_asked(void *opaque, store_lease_t r, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    double now = clock_mono_s();

    if (e->closing)
        return;
    s->phase = PHASE_IDLE;
    switch (r) {
    case STORE_LEASE_HELD:
        lease_taken(s, now);
        LOG_INFO("lease acquired", LF_S("source", s->conf->name),
                 LF_I("ttl_s", e->conf->lease_ttl_s));
        if (cycle_wanted(s))
            cycle_start(s);
        else
            engine_kick(e); /* a stop came meanwhile */
        return;
    case STORE_LEASE_OTHER:
    case STORE_LEASE_GONE:
        lease_wait(s, now);
        engine_kick(e);
        return;
    case STORE_LEASE_ERROR:
        break;
    }
    LOG_ERROR("cannot take the lease; skipping this cycle", LF_S("source", s->conf->name),
              LF_S("error", err));
    cycle_end(s, 0);
}

/*
 * 1 when s holds its lease and may start a cycle; 0 when not now: the
 * timer of s is re-armed, or Redis is asked for the lease (PHASE_LEASE)
 * and on_lease_asked() goes on.
 */
static int lease_ready(source_rt_t *s, double now)
{
    engine_t *e = s->e;
    char err[256];

    if (s->releasing) {
        source_arm(s, ENGINE_LEASE_WAIT_S);
        return 0;
    }
    if (s->leased)
        return 1;
    if (!e->once && (e->leases_held >= fair_share(e) || now < e->quiet_until)) {
        lease_wait(s, now);
        return 0;
    }
    s->phase = PHASE_LEASE;
    if (store_lease_acquire_async(e->store, s->conf->name, e->token, lease_ttl_ms(e),
                                  on_lease_asked, s, err, sizeof(err)) != 0)
        on_lease_asked(s, STORE_LEASE_ERROR, err);
    return 0;
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
        if (cycle_wanted(s) && lease_ready(s, clock_mono_s()))
            cycle_start(s);
        break;
    case PHASE_BACKOFF:
        if (e->halt_at)
            cycle_fail(s, "poll failed; nothing emitted, nothing committed",
                       "interrupted by shutdown");
        else
            fetch_retry(s);
        break;
    case PHASE_DELIVER:
        s->check_armed = 0;
        deliver_check(s);
        break;
    case PHASE_QUEUED: /* moved on by queue_drain() */
    case PHASE_FETCH:  /* moved on by on_http_done() */
    case PHASE_CHECK:  /* moved on by on_delivery_ping() */
    case PHASE_LEASE:  /* moved on by on_lease_asked() */
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
        if (e->sources[i].phase != PHASE_IDLE)
            LOG_WARN("shutdown grace exceeded: cycle abandoned, nothing committed",
                     LF_S("source", e->sources[i].conf->name),
                     LF_S("phase", e->sources[i].phase == PHASE_DELIVER ? "deliver" : "poll"));
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
                 LF_I("grace_s", e->conf->shutdown_grace_s));
    loop_timer_arm(e->halt_timer, cycles_deadline(e) - e->halt_at);
    for (size_t i = 0; i < e->nsources; i++) {
        if (e->sources[i].phase == PHASE_BACKOFF)
            source_arm(&e->sources[i], 0); /* fails at once rather than retry */
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
        const outbox_t *ob = e->sinks[k].ob;
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
    if (!e->once && e->halt_at == 0)
        return;
    for (size_t i = 0; i < e->nsources; i++) {
        const source_rt_t *s = &e->sources[i];
        if (s->phase != PHASE_IDLE || (e->once && e->halt_at == 0 && s->wanted && !s->finished))
            return;
    }
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

/* An outbox worker's turn; it says when it wants the next one. */
static void on_outbox_timer(void *opaque)
{
    engine_sink_t *sk = opaque;
    engine_t *e = sk->e;

    if (e->closing)
        return;
    loop_timer_arm(sk->outbox_timer, outbox_turn(sk->ob, e->halt_at != 0));
    sinks_poke(e);
    engine_kick(e); /* once: the worker may be idle now */
}

/* An attempt of the worker settled: the sink has room for another claim. */
static void on_outbox_settled(void *opaque)
{
    engine_sink_t *sk = opaque;

    if (!sk->e->closing)
        loop_timer_arm(sk->outbox_timer, 0);
}

/* A sink that does not use the loop: polled without waiting. */
static void on_sink_poll(void *opaque)
{
    engine_sink_t *sk = opaque;
    const sink_type_t *t = sk->conf->type;

    t->poll(sk->ctx, 0);
    loop_timer_arm(sk->poll_timer,
                   sink_pending(t, sk->ctx) > 0 ? ENGINE_POLL_BUSY_S : ENGINE_POLL_IDLE_S);
}

/* Events were handed over: the sinks that are polled are polled soon. */
static void sinks_poke(engine_t *e)
{
    for (size_t k = 0; k < e->nsinks; k++) {
        engine_sink_t *sk = &e->sinks[k];
        if (sk->poll_timer && sink_pending(sk->conf->type, sk->ctx) > 0)
            loop_timer_arm(sk->poll_timer, 0);
    }
}

static void on_observe_timer(void *opaque)
{
    engine_t *e = opaque;

    if (e->closing)
        return;
    observe_tick(e, clock_mono_s());
    loop_timer_arm(e->observe_timer, ENGINE_GAUGES_S);
}

/*
 * Arms what the run starts with and serves the loop until on_settle() or
 * the shutdown deadline stops it.
 */
static void run_loop(engine_t *e, int once)
{
    double now = clock_mono_s();

    e->once = once;
    /* The member beat first: the fair share of the first cycles depends on it. */
    leases_tick(e, now);
    if (e->observed)
        on_observe_timer(e);
    for (size_t k = 0; k < e->nsinks; k++) {
        if (e->sinks[k].outbox_timer)
            loop_timer_arm(e->sinks[k].outbox_timer, 0);
        if (e->sinks[k].poll_timer)
            loop_timer_arm(e->sinks[k].poll_timer, 0);
    }
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = &e->sources[i];
        if (!once)
            source_arm(s, s->next_due - now);
        else if (s->wanted)
            source_arm(s, 0);
    }
    engine_kick(e); /* a stop asked before the run, or nothing wanted */
    if (loop_run(e->loop) != 0) {
        LOG_ERROR("the event loop failed; stopping");
        e->fatal = 1;
    }
}

int engine_run_once(engine_t *e, const char *source)
{
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = &e->sources[i];
        s->wanted = source == NULL || strcmp(s->conf->name, source) == 0;
        s->finished = 0;
        s->last_ok = 0;
    }
    run_loop(e, 1);
    int rc = e->fatal ? -1 : 0;
    for (size_t i = 0; i < e->nsources; i++) {
        if (e->sources[i].wanted && !e->sources[i].last_ok)
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
