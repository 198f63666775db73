/*
 * store: the snapshot of every source, kept in Redis.
 *
 * Layout, with P the configured prefix and S the source name:
 *   P:snap:S   hash  session id -> diff_record_encode() text
 *   P:meta:S   hash  cycle (decimal, increments per commit), committed_at
 *                    (unix ms), sessions (count after the commit)
 * A source "has a snapshot" when P:meta:S exists.
 *
 * A commit writes only the delta of a cycle (changed and removed sessions)
 * plus the meta hash in one MULTI/EXEC transaction, pipelined, with at most
 * STORE_BATCH fields per command: Redis work grows with churn, not with the
 * population. The connection is re-established transparently when Redis
 * went away; a call that fails reports -1 and changes nothing it knows of
 * (an EXEC whose reply was lost may or may not have applied; the caller
 * reloads the index before its next cycle).
 *
 * Not thread-safe: one store per thread.
 */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diff.h"

/* Fields per HSET/HDEL command and per HSCAN page. */
#define STORE_BATCH 1000
/* Longest key prefix accepted. */
#define STORE_PREFIX_MAX 64

typedef struct store store_t;

typedef struct store_options {
    const char *url;    /* redis://[:password@]host[:port][/db]; borrowed */
    const char *prefix; /* key prefix, default "sb"; borrowed */
    int timeout_ms;     /* connect and command timeout */
} store_options_t;

/*
 * Parses the URL and connects. NULL with a reason in err (never containing
 * the password) when the URL is invalid. A server that is down is not an
 * error here: the first command reconnects and reports it.
 */
store_t *store_new(const store_options_t *opt, char *err, size_t errlen);
void store_free(store_t *st);

/* PING; 0 when Redis answers. */
int store_ping(store_t *st, char *err, size_t errlen);

/*
 * Loads the snapshot of source into ix (which is cleared first) with HSCAN.
 * *exists tells whether the source has a snapshot; *cycle is its cycle
 * number (0 without one). 0 or -1 with err (ix is then cleared).
 */
int store_load(store_t *st, const char *source, diff_index_t *ix, bool *exists, uint64_t *cycle,
               char *err, size_t errlen);

/*
 * Commits one cycle's delta atomically and sets meta: cycle = *cycle + 1,
 * sessions = sessions_after. On 0, *cycle holds the new number. On -1
 * nothing is known to be written.
 */
int store_commit(store_t *st, const char *source, const diff_change_t *changes, size_t n,
                 size_t sessions_after, uint64_t *cycle, char *err, size_t errlen);

/* Commands sent to Redis since store_new(), for benchmarks and metrics. */
uint64_t store_commands_sent(const store_t *st);

#endif /* SB_STORE_H */
