/*
 * status: `session-bridge status -c FILE [--json] [--source NAME]`, what
 * each source is doing, read from Redis alone (CONTRACT §2), so that any
 * replica, or a laptop with the same configuration, gives the same answer,
 * while the daemon runs. It writes nothing.
 *
 * Per source (every configured one, and those Redis holds a snapshot of
 * that the configuration no longer names, up to STATUS_MAX_UNCONFIGURED):
 * the last commit (cycle, time, age), the sessions tracked, the lease
 * holder (the replica's host and pid from its record, its token otherwise)
 * and the lease's TTL left, and the last poll's outcome as the daemon wrote
 * it (store.h: P:poll:S). Per sink: its dead letters, and for outbox sinks
 * the outbox's depth and the disabled flag with its reason.
 *
 * A table by default; with --json, one JSON object (README: "What is each
 * source doing: status" documents its shape).
 */
#ifndef SB_STATUS_H
#define SB_STATUS_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/*
 * Sources found in Redis but not in the configuration that are shown, at
 * most: leftovers of removed sources are worth seeing, but a prefix shared
 * by mistake with something else must not make status read without end.
 */
#define STATUS_MAX_UNCONFIGURED 1000

typedef struct status_options {
    const char *source; /* only this source (and the sinks that route it); NULL: all */
    bool json;
} status_options_t;

typedef enum status_result {
    STATUS_OK = 0,
    STATUS_REDIS_FAILED,   /* err says why: Redis unreachable or refusing */
    STATUS_NO_SUCH_SOURCE, /* --source names a source neither configured nor in Redis */
} status_result_t;

/* Prints the status of conf's sources and sinks to out; err (no secret) on failure. */
status_result_t status_run(const conf_t *conf, const status_options_t *opt, FILE *out, char *err,
                           size_t errlen);

#endif /* SB_STATUS_H */
