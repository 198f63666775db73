/*
 * connect_check: `session-bridge check --connect` (CONTRACT §2). Reaches
 * Redis, every sink and every source with the configuration's
 * credentials, changes nothing anywhere, and prints one line per target:
 *
 *   redis           ok      redis 7.0.15 at 127.0.0.1:6379
 *   sink bus        ok      3 brokers, topic sessions.started: 6 partitions, ...
 *   source century  FAILED  HTTP 401 on page 1 (GET /smart-ia/sessions/in-progress)
 *
 * Redis: PING and INFO server. A sink: its type's probe() (sink.h), which
 * delivers nothing. A source: the first request of a poll, through its
 * provider adapter, one attempt without retries, its page read and its
 * records counted, nothing diffed or stored. Every target runs at once
 * (sinks and Redis on threads of their own, the sources' requests on one
 * event loop), each within its own timeout, so the command takes about
 * the longest of them; one that overruns every bound is reported as
 * failed and left behind.
 */
#ifndef SB_CONNECT_CHECK_H
#define SB_CONNECT_CHECK_H

#include <stdio.h>

#include "config.h"

/*
 * Runs every probe of conf and prints the lines to out. Returns 0 when
 * every target answered, 1 when any failed (the exit code of `check
 * --connect`). Messages never hold a secret: the probes name endpoints by
 * host and port (no URL path, query or userinfo).
 */
int connect_check_run(const conf_t *conf, FILE *out);

#endif /* SB_CONNECT_CHECK_H */
