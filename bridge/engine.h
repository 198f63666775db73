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

#endif /* SB_ENGINE_H */
