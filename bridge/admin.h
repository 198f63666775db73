/*
 * admin: the HTTP endpoint for orchestrators and Prometheus (CONTRACT §8),
 * served by libmicrohttpd on its own threads, on admin.listen:
 *
 *   GET /healthz  200 "ok" while the main loop's heartbeat is younger than
 *                 heartbeat_max_age_s, 503 otherwise. Depends on nothing
 *                 else (not Redis, not Kafka): a liveness probe must not
 *                 restart the process because a dependency is down.
 *   GET /readyz   200 "ready" when the ready callback says so, 503 with the
 *                 callback's reason otherwise.
 *   GET /metrics  the registry in the Prometheus text format, after the
 *                 collect callback refreshed what it wants to.
 *
 * HEAD is answered like GET (RFC 9110 asks it of every GET resource),
 * other methods get 405, requests with a body 413, other paths 404.
 * Connections are bounded in number, idle time and memory (which bounds
 * the request headers).
 */
#ifndef SB_ADMIN_H
#define SB_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics.h"

/* A main loop that has not turned for this long is considered stuck. */
#define ADMIN_DEFAULT_HEARTBEAT_MAX_AGE_S 30.0
/* Probes and a scraper or two: a few connections are plenty. */
#define ADMIN_DEFAULT_MAX_CONNECTIONS 32
/* Idle connections are closed after this. */
#define ADMIN_DEFAULT_CONNECTION_TIMEOUT_S 10
/* Room for the ready callback's reason. */
#define ADMIN_REASON_MAX 512

typedef struct admin admin_t;

/*
 * Readiness, called on a server thread for every GET /readyz, possibly on
 * two threads at once: it must be thread-safe and quick (answer from
 * state the main loop publishes, e.g. atomics; never do I/O such as a
 * Redis PING here). Returns true when ready; otherwise writes a short,
 * secret-free reason ("redis unreachable; sink bus not ready") into why.
 */
typedef bool (*admin_ready_fn)(void *opaque, char *why, size_t whylen);

/*
 * Called on a server thread before each GET /metrics is rendered, never
 * twice at once, to refresh gauges that are cheaper to read than to keep
 * up to date (queue depths). Same rules as admin_ready_fn: thread-safe,
 * quick, no I/O.
 */
typedef void (*admin_collect_fn)(void *opaque, metrics_t *m);

typedef struct admin_options {
    /* "host:port", "[ipv6]:port"; host may be a name; port 0 takes a free
     * port (admin_port() tells which). Borrowed. */
    const char *listen;
    /* Borrowed, must outlive the server; NULL: /metrics answers 404. */
    metrics_t *metrics;
    admin_ready_fn ready;          /* NULL: always ready */
    admin_collect_fn collect;      /* NULL: none */
    void *opaque;                  /* passed to both callbacks */
    double heartbeat_max_age_s;    /* 0: ADMIN_DEFAULT_HEARTBEAT_MAX_AGE_S */
    unsigned max_connections;      /* 0: ADMIN_DEFAULT_MAX_CONNECTIONS */
    unsigned connection_timeout_s; /* 0: ADMIN_DEFAULT_CONNECTION_TIMEOUT_S */
} admin_options_t;

/*
 * Listens and serves until admin_stop(). The heartbeat starts as fresh.
 * NULL with the reason in err when the address is invalid or cannot be
 * listened on ("127.0.0.1:9464: Address already in use").
 */
admin_t *admin_start(const admin_options_t *opt, char *err, size_t errlen);
/* Stops serving (waits for requests being answered) and frees. Accepts NULL. */
void admin_stop(admin_t *a);

/* Records that the main loop turned now. Any thread; lock-free. Accepts NULL. */
void admin_heartbeat(admin_t *a);

/* The port listened on (the one picked when the options said 0). */
unsigned admin_port(const admin_t *a);

#endif /* SB_ADMIN_H */
