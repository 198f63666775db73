/*
 * engine: the daemon's loop. For each source and cycle: poll every page,
 * diff against the snapshot, hand the events to every sink that routes
 * them, wait until every sink acknowledged every event, commit the delta
 * to Redis, and only then advance the in-memory snapshot.
 */
#ifndef SB_ENGINE_H
#define SB_ENGINE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bridge_metrics.h"
#include "config.h"

typedef struct engine engine_t;

/*
 * Creates the store and every sink of conf (borrowed: it must outlive the
 * engine). stop is the flag the signal handlers set (may be NULL). NULL with
 * a reason in err.
 */
engine_t *engine_new(const conf_t *conf, volatile sig_atomic_t *stop, char *err, size_t errlen);
/*
 * An engine for `once --dry-run`: the store and the sources of conf, no
 * sink. Its cycles load the snapshot, poll and diff as usual, write the
 * events that some sink of conf routes to out (borrowed, one CloudEvent per
 * line, the bytes a sink would get) and end there: nothing is delivered,
 * committed, leased or beaten, so nothing is written to Redis. Run it with
 * engine_run_once(). NULL with a reason in err.
 */
engine_t *engine_new_dry_run(const conf_t *conf, volatile sig_atomic_t *stop, FILE *out, char *err,
                             size_t errlen);
/* Flushes the sinks within their bound and frees everything. Accepts NULL. */
void engine_free(engine_t *e);

/*
 * One cycle of one source (NULL: each source in turn). Returns 0 when every
 * cycle committed, -1 when any failed (that source committed nothing).
 */
int engine_run_once(engine_t *e, const char *source);

/*
 * run: a SIGHUP re-reads path (copied), the file the configuration came
 * from, and applies what changed without a restart (CONTRACT §2; how, in
 * bridge/engine/reload.c). Call before engine_run(). Without it (once, a
 * dry run) a SIGHUP is logged and changes nothing. 0, or -1 on ENOMEM.
 */
int engine_reload_on_hup(engine_t *e, const char *path);
/* Asks for a reload as a SIGHUP does: for one that came before the engine watched for them. */
void engine_reload_request(engine_t *e);

/* Polls every source on its interval until *stop; returns 0, or -1 on a fatal sink error. */
int engine_run(engine_t *e);

/*
 * What the engine tells the admin endpoint. metrics: the families it keeps
 * up to date (borrowed: it must outlive the engine); NULL for none.
 * heartbeat: called with opaque on the loop's thread every second, from a
 * loop timer (the liveness signal: it stops when the loop is stuck); NULL
 * for none.
 */
typedef struct engine_observer {
    bridge_metrics_t *metrics;
    void (*heartbeat)(void *opaque);
    void *opaque;
} engine_observer_t;

/*
 * Installs the observer (copied) before engine_run(); sets every series the
 * alert rules read to its starting value (0 for counters, gauges as known),
 * so that a rule sees a series from the first scrape on. Also turns on the
 * readiness checks engine_ready() answers from.
 */
void engine_observe(engine_t *e, const engine_observer_t *obs);

/*
 * Readiness as an admin_ready_fn (opaque: the engine): Redis answered the
 * last PING, every sink is ready, and no stop was asked. Reads only what the
 * loop published in atomics: safe on any thread, never blocks. On false,
 * why receives a reason without secrets ("redis unreachable").
 */
bool engine_ready(void *opaque, char *why, size_t whylen);

#endif /* SB_ENGINE_H */
