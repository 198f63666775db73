/*
 * engine: the daemon's loop. For each source and cycle: poll every page,
 * diff against the snapshot, hand the events to every sink that routes
 * them, wait until every sink acknowledged every event, commit the delta
 * to Redis, and only then advance the in-memory snapshot.
 */
#ifndef SB_ENGINE_H
#define SB_ENGINE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct engine engine_t;

/* Figures of the last cycle of a source, for logs and benchmarks. */
typedef struct engine_cycle_stats {
    size_t pages;
    size_t observed;
    size_t events;
    size_t changes;
    size_t sessions; /* tracked after the cycle */
    double poll_s;   /* fetching and parsing every page */
    double deliver_s;
    double commit_s;
    uint64_t redis_commands; /* sent during the cycle, load included */
} engine_cycle_stats_t;

/*
 * Creates the store and every sink of conf (borrowed: it must outlive the
 * engine). stop is the flag the signal handlers set (may be NULL). NULL with
 * a reason in err.
 */
engine_t *engine_new(const conf_t *conf, volatile sig_atomic_t *stop, char *err, size_t errlen);
/* Flushes the sinks within their bound and frees everything. Accepts NULL. */
void engine_free(engine_t *e);

/*
 * One cycle of one source (NULL: each source in turn). Returns 0 when every
 * cycle committed, -1 when any failed (that source committed nothing).
 */
int engine_run_once(engine_t *e, const char *source);

/* Polls every source on its interval until *stop; returns 0, or -1 on a fatal sink error. */
int engine_run(engine_t *e);

/* The stats of the last cycle of the named source; -1 if unknown. */
int engine_last_stats(const engine_t *e, const char *source, engine_cycle_stats_t *out);
/* Heap bytes held by the snapshot index of the named source. */
size_t engine_index_memory(const engine_t *e, const char *source);

#endif /* SB_ENGINE_H */
