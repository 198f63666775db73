/*
 * The engine's internal header, shared by the files of bridge/engine/ and
 * included nowhere else (engine.h is the public API): the state of the
 * engine and of each source, and the functions one job calls in another.
 * Everything else in those files is static.
 */
#ifndef SB_ENGINE_INTERNAL_H
#define SB_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "clock.h"
#include "engine.h"
#include "event.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "outbox.h"
#include "store.h"

/* Bytes of a sink error kept for a dead-letter record. */
#define ENGINE_DEAD_ERROR_MAX 160

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

/* The cycles of a source since its last summary (observe.c). */
typedef struct engine_summary {
    double since; /* monotonic s the period began */
    size_t cycles, failed, events;
    double last_cycle_s; /* the last cycle that polled, from its start to its end */
} engine_summary_t;

typedef enum phase {
    PHASE_IDLE = 0,
    PHASE_QUEUED,  /* a page request waits for a transfer slot */
    PHASE_FETCH,   /* a page request is in flight */
    PHASE_BACKOFF, /* waiting before retrying the page */
    PHASE_DELIVER, /* events handed to sinks, waiting for their tickets */
    PHASE_CHECK,   /* the PING before delivering is in flight */
    PHASE_LEASE,   /* asking Redis for the lease before a cycle */
    PHASE_LOAD,    /* the snapshot is read from Redis, or put back from memory (fetch.c) */
    PHASE_RECORDS, /* the last records of vanished sessions are being read */
    PHASE_COMMIT,  /* the cycle's transaction is on its way to Redis (commit.c) */
} phase_t;

typedef struct source_rt source_rt_t;

/*
 * A configuration the engine runs with (reload.c): the first one, the
 * caller's, and each reload's. Sources, sinks and the engine itself hold a
 * reference while they point into it; the last one frees a reload's
 * configuration (never the caller's). A sink keeps the configuration it was
 * started with for its whole life (its context may point into its table);
 * a source moves to the newest one when it is idle.
 */
typedef struct engine_conf {
    conf_t *conf;
    int owned; /* a reload's: conf_free() with the last reference */
    size_t refs;
    struct engine_conf *next; /* e->gens */
} engine_conf_t;

/* One outstanding delivery of one event to one sink. */
typedef struct delivery {
    sink_ticket_t ticket;
    source_rt_t *src;
    struct engine_sink *sink; /* the one the ticket was handed to */
    size_t event;             /* index into the cycle's events */
    struct delivery *next;    /* in the source's free list, while unused */
} delivery_t;

/* An event a sink refused for good: it goes to the dead letters at commit. */
typedef struct dead_event {
    size_t event;
    const char *sink; /* the sink's configured name */
    char id[DIFF_EVENT_ID_LEN];
    char error[ENGINE_DEAD_ERROR_MAX];
} dead_event_t;

typedef struct engine_sink {
    const conf_sink_t *conf; /* in gen */
    engine_conf_t *gen;
    int retiring; /* a reload changed or removed it: stopped once no cycle runs */
    void *ctx;
    size_t unresolved; /* tickets of cycles handed to it and not resolved yet */
    outbox_t *ob;      /* outbox sinks only: their delivery worker */
    engine_t *e;
    sink_timer_t *outbox_timer; /* outbox sinks: the worker's next turn */
    sink_timer_t *poll_timer;   /* sinks not on the loop: their next flush() */
} engine_sink_t;

struct source_rt {
    engine_t *e;
    const conf_source_t *conf; /* in gen */
    engine_conf_t *gen;
    /* What a reload asked of it, done once it is idle (reload.c). */
    struct {
        const conf_source_t *conf; /* its block in gen (NULL: nothing asked) */
        engine_conf_t *gen;
        int changed; /* a byte of its block changed */
        int removed; /* the reload removed it: released and freed */
    } next;
    diff_index_t *index;
    http_client_t *http;
    int loaded; /* index matches Redis as far as we know */
    /* index holds the snapshot committed at cycle, and no other replica held the lease since */
    int index_valid;
    int has_snapshot; /* Redis holds a snapshot of this source */
    uint64_t cycle;
    double next_due; /* monotonic seconds */
    phase_t phase;
    sink_timer_t *timer; /* next cycle, backoff, or a delivery check (by phase) */
    int wanted;          /* once: a cycle was asked for */
    int finished;        /* once: that cycle ended */
    int last_ok;
    int paused; /* the paused-until gauge is set */
    /* Why the cycle failed, for its P:poll:S (engine_cycle_fail()); "" otherwise. */
    char why[STORE_POLL_ERROR_MAX + 1];
    engine_cycle_stats_t stats;
    engine_summary_t summary;

    /* The source's lease (leases.c). */
    struct {
        int held;                     /* we hold the source's lease */
        int renewing;                 /* a renewal is in flight */
        int releasing;                /* a release is in flight */
        double renew_sent_at;         /* monotonic s it was sent at */
        double renew_at, valid_until; /* monotonic s */
        double wait_since;            /* once: first refused acquisition, 0 otherwise */
    } lease;

    /* The cycle in progress; all NULL/0 when idle. */
    diff_options_t opt;
    diff_cycle_t *cy;
    int64_t observed_ms;
    char observed_at[EVENT_TIME_LEN]; /* observed_ms as every event of the cycle says it */
    double t_start;
    uint64_t cmds0;
    size_t nevents;

    /* Its pages (fetch.c). */
    struct {
        void *poll;
        provider_request_t *req;
        http_response_t resp;
        int attempt;
        double retry_at;
        double pause_s; /* Retry-After of the response that failed the poll, -1 when none */
        source_rt_t *queue_next; /* PHASE_QUEUED: the next source waiting for a transfer slot */
        size_t vanished_from;    /* PHASE_RECORDS: the first vanished event of the window read */
        int vanished_oom;        /* a last record of that window could not be kept */
    } fetch;

    /* Its events handed to the sinks (deliver.c); the commit reads the dead letters. */
    struct {
        event_buf_t evbuf; /* the event being handed to the sinks */
        double t_deliver;
        size_t next_event;
        delivery_t *ds;
        size_t nds;         /* deliveries of the cycle, in all */
        delivery_t *free_d; /* slots of ds no ticket holds */
        size_t pending, failed;
        dead_event_t *dead;
        size_t ndead, capdead;
        int fatal;
        char first_error[256];
        char first_sink[CONF_NAME_MAX + 1];
        int check_armed; /* the timer is armed for a delivery check */
    } delivery;

    /* Its commit in flight (commit.c); NULL/0 otherwise. */
    struct {
        struct letters *letters; /* the outbox events and dead letters the store reads */
        int tries;               /* commits sent, repairs included */
        double t0;               /* monotonic s the first was sent at */
        store_fence_t refused;   /* the fence's answer a repair in flight tries to undo */
        char refused_why[256];
    } commit;
};

struct engine {
    const conf_t *conf;
    volatile sig_atomic_t *stop;
    store_t *store;
    loop_t *loop; /* owns every socket and timer of the engine and its sinks */
    http_multi_t *multi;
    engine_sink_t **sinks; /* each its own allocation: callbacks hold them */
    size_t nsinks, capsinks;
    /* sinks a reload stopped while their outbox still waits for Redis
     * (engine_retired_sweep() frees them) */
    engine_sink_t **retired;
    size_t nretired, capretired;
    source_rt_t **sources; /* likewise */
    size_t nsources, capsources;
    engine_conf_t *gen;  /* conf's; conf is the newest configuration */
    engine_conf_t *gens; /* every configuration still referenced */
    /* SIGHUP (reload.c) */
    struct {
        char *path;         /* run: the file a SIGHUP reloads; NULL (once): ignored */
        engine_conf_t *gen; /* the reload being applied, NULL when none */
        int sinks_wait;     /* sinks change: no cycle starts until every source is idle */
        int swap_now;       /* every source idle: run_loop() swaps the sinks, outside the loop */
        int again;          /* a SIGHUP came while one was applied */
        int requested;      /* engine_reload_request(): on_settle() starts it */
        char *summary;      /* what it adds, changes and removes, logged when applied */
    } reload;
    int fatal;
    int stop_asked;              /* SIGTERM or SIGINT arrived */
    int closing;                 /* engine_free() runs: timers and completions change nothing */
    double halt_at;              /* monotonic time the stop was first seen; 0 before */
    char token[STORE_TOKEN_LEN]; /* this replica: member id and lease token */
    char host[STORE_HOST_MAX + 1];
    store_replica_t who;  /* what its beats say it is, for `status` */
    size_t polls_writing; /* P:poll:S writes in flight: a stop waits for them */
    size_t live_replicas; /* as of the last member beat, ourselves included */
    double next_beat;
    int beating;         /* a member beat is in flight */
    double beat_sent_at; /* monotonic s */
    int beaten;          /* a member beat succeeded */
    double quiet_until;  /* monotonic s; before it, no lease that is not ours is taken */
    size_t leases_held;
    int once;
    FILE *dry_out; /* once --dry-run: where the events go instead of the sinks; NULL otherwise */
    double drain_until;  /* once: when the outbox drain gives up; 0 before */
    double summary_s;    /* between two summaries of a source (observe.c) */
    size_t exit_pending; /* engine_free(): releases sent, not answered yet */

    sink_timer_t *lease_timer; /* member beat and lease renewals */
    double lease_armed_at;     /* when it fires (monotonic s), INFINITY when disarmed */
    sink_timer_t *observe_timer, *halt_timer, *drain_timer;
    sink_timer_t *settle_timer;           /* soon: does the run end now? (engine_kick) */
    source_rt_t *queue_head, *queue_tail; /* PHASE_QUEUED, in order */

    engine_observer_t obs;
    int observed; /* engine_observe() was called */
    double next_gauges, next_redis_check;
    /* Readiness, published by the loop for engine_ready() on the admin's threads. */
    atomic_int checked;                   /* the first checks ran */
    atomic_int redis_up;                  /* the last PING was answered */
    int checking;                         /* a readiness PING is in flight */
    int redis_checked;                    /* a readiness PING was answered (or failed) */
    pthread_mutex_t ready_lock;           /* unready_sink */
    char unready_sink[CONF_NAME_MAX + 1]; /* a sink that is not ready, "" when none */
    atomic_int halting;                   /* a stop was asked */
};

/* ---- engine.c: scheduling, the stop, the loop ---- */

int engine_sink_start(engine_t *e, const conf_sink_t *cs, engine_conf_t *gen, char *err,
                      size_t errlen);
void engine_sink_stop(engine_sink_t *sk, int64_t deadline_ms);
int engine_sink_busy(const engine_sink_t *sk);
void engine_sink_free(engine_sink_t *sk);
void engine_retired_sweep(engine_t *e, int all);
engine_sink_t *engine_sink_find(const engine_t *e, const char *name);
source_rt_t *engine_source_add(engine_t *e, const conf_source_t *cs, engine_conf_t *gen, double t0);
int engine_source_http(source_rt_t *s);
void engine_source_free(source_rt_t *s);
void engine_sinks_arm(engine_t *e);

void engine_kick(engine_t *e);
void engine_source_arm(source_rt_t *s, double after_s);
void engine_cycle_end(source_rt_t *s, int ok);
void engine_cycle_fail(source_rt_t *s, const char *msg, const char *err);
void engine_dry_print(source_rt_t *s);
int engine_cycle_wanted(const source_rt_t *s);

/* ---- fetch.c ---- */

void fetch_retry(source_rt_t *s);
void fetch_cycle_start(source_rt_t *s);

/* ---- deliver.c ---- */

const char *deliver_result(sink_result_t r);
int deliver_routes_live(const engine_sink_t *sk, const source_rt_t *s, diff_event_type_t type);
void deliver_check(source_rt_t *s);
void deliver_on_ping(void *opaque, int rc, const char *err);
void deliver_on_outbox_timer(void *opaque);
void deliver_on_outbox_settled(void *opaque);
void deliver_on_sink_poll(void *opaque);

/* ---- commit.c ---- */

void commit_cycle(source_rt_t *s);
int commit_restore_outcome(source_rt_t *s, store_fence_t f, const char *err);
void commit_release(source_rt_t *s);

/* ---- leases.c ---- */

void lease_due(engine_t *e, double when);
void lease_taken_over(source_rt_t *s, const char *why);
int lease_retake_outcome(source_rt_t *s, store_lease_t r, const char *err, double now);
int lease_retake_async(source_rt_t *s, store_lease_fn fn, char *err, size_t errlen);
void lease_on_timer(void *opaque);
void leases_tick(engine_t *e, double now);
void lease_rebalance(source_rt_t *s);
void leases_release_all(engine_t *e);
int lease_ready(source_rt_t *s, double now);

/* ---- reload.c ---- */

engine_conf_t *engine_conf_adopt(engine_t *e, conf_t *conf, int owned);
engine_conf_t *engine_conf_ref(engine_conf_t *g);
void engine_conf_unref(engine_t *e, engine_conf_t *g);
void reload_on_signal(void *opaque);
void reload_settle(engine_t *e);
void reload_swap(engine_t *e);
void reload_free(engine_t *e);

/* ---- observe.c ---- */

void observe_sessions_gauge(source_rt_t *s);
void observe_lease_gauges(source_rt_t *s);
void observe_on_timer(void *opaque);
double observe_summary_period(void);
void observe_cycle_end(source_rt_t *s, int ok, double now);
void observe_unready_sink(engine_t *e, const char *name);
void observe_source_series(source_rt_t *s);
void observe_sink_series(engine_sink_t *sk);
void observe_poll_outcome(source_rt_t *s, int ok);

#endif
