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
 *                 collect callback refreshed what it wants to; a render
 *                 younger than ADMIN_METRICS_REUSE_MS, or the last one
 *                 while another is under way, is served again.
 *
 * HEAD is answered like GET (RFC 9110 asks it of every GET resource),
 * other methods get 405, requests with a body 413, other paths 404.
 *
 * No client, slow or idle, and no number of them, can keep a probe from
 * being answered (CONTRACT §8: a liveness probe that fails restarts the
 * pod). Like nginx and Envoy, the server does not trust per-byte idle
 * timers, which a client resets by sending a byte now and then:
 *   - a deadline for the whole request headers, from accept (or from the
 *     end of the previous response on a kept-alive connection) to the
 *     last header line; a connection that misses it is closed;
 *   - a deadline for each response, against clients that read slowly;
 *   - a limit on the connections of one client address, and one on all;
 *   - at either limit, the newcomer is accepted and the connection that
 *     is worth least is closed instead: the oldest one still waiting for
 *     its request (idle, dribbling, or kept alive), sparing one whose
 *     request is already waiting to be read; then the oldest response in
 *     flight. A probe always gets in, and an address can only ever push
 *     out its own connections until the whole pool is full.
 * Connections closed for these reasons are counted in
 * session_bridge_admin_connections_shed_total{reason} and logged at most
 * once a minute. Connection memory bounds the request line and headers.
 */
#ifndef SB_ADMIN_H
#define SB_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics.h"

/* A main loop that has not turned for this long is considered stuck. */
#define ADMIN_DEFAULT_HEARTBEAT_MAX_AGE_S 30.0
/* Probes and a scraper or two need a few connections: the limit only
 * bounds the sockets and memory (32 KiB each) an attack can
 * make the process hold. */
#define ADMIN_DEFAULT_MAX_CONNECTIONS 64
/* A kubelet (liveness, readiness, startup probes) and a node-local scraper
 * share one address and need at most four at once; twice that leaves room
 * for clients behind one NAT address. */
#define ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP 8
/* From accept to the last header line. A probe sends its few hundred bytes
 * in one packet, and gives up after its own timeout (1 s by default in
 * Kubernetes): a client not done in 2 s is no probe. */
#define ADMIN_DEFAULT_REQUEST_DEADLINE_MS 2000
/* From the end of a response to the next request's last header line, on a
 * kept-alive connection (Apache's KeepAliveTimeout): back-to-back requests
 * reuse the connection, an idle scraper reconnects. */
#define ADMIN_DEFAULT_KEEPALIVE_IDLE_MS 5000
/* From the request headers until the last byte of the response is handed
 * to the kernel (what it buffered still arrives afterwards): a /metrics
 * of a few MiB takes milliseconds, and Prometheus gives up after its
 * scrape_timeout (10 s by default) anyway. */
#define ADMIN_DEFAULT_RESPONSE_DEADLINE_MS 30000
/*
 * A /metrics text younger than this is served again instead of rendered
 * anew. Prometheus scrapes every 15 s or more, so nobody sees the
 * difference; a flood of scrapes then costs two renders a second instead of
 * keeping busy the server threads that also answer the probes.
 */
#define ADMIN_METRICS_REUSE_MS 500
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
 * Called on a server thread before each /metrics render, never
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
    admin_ready_fn ready;       /* NULL: always ready */
    admin_collect_fn collect;   /* NULL: none */
    void *opaque;               /* passed to both callbacks */
    double heartbeat_max_age_s; /* 0: ADMIN_DEFAULT_HEARTBEAT_MAX_AGE_S */
    /* 0 takes the ADMIN_DEFAULT_ of the same name (tests use small ones). */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned request_deadline_ms;
    unsigned keepalive_idle_ms;
    unsigned response_deadline_ms;
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
