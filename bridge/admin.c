/*
 * admin: the health, readiness and metrics endpoint (see admin.h).
 *
 * libmicrohttpd runs a pool of ADMIN_THREADS threads, so that a probe never
 * waits behind a large /metrics render. Renders are serialized by a mutex:
 * the collect callback then never runs twice at once, and two scrapers do
 * not render the registry twice in parallel on a machine whose cores belong
 * to the main loop. A thread that finds a render under way answers with the
 * previous text instead of waiting for the mutex, and a text younger than
 * ADMIN_METRICS_REUSE_MS is served again: a flood of scrapes cannot tie up the
 * threads that answer the probes.
 *
 * Connection limits and deadlines (admin.h says which) are ours, not
 * libmicrohttpd's: its limits refuse the newcomer, which is how idle
 * clients starve a probe, and its timeout is an idle timer that every byte
 * resets. So every connection has a slot in a registry (conns, under
 * conns_lock) from MHD's STARTED to its CLOSED notification, with the
 * phase it is in and that phase's deadline. The accept policy callback
 * makes room for a newcomer by shutting a victim's socket down, and the
 * reaper thread shuts down the sockets whose deadline passed; the worker
 * that owns the connection then reads EOF and closes it on its next turn.
 * shutdown() from another thread is safe because MHD closes the socket
 * only after the CLOSED notification, which needs conns_lock: a slot in
 * use always names an open socket.
 */
#include "admin.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "clock.h"
#include "log.h"

/* Server threads: one can answer probes while another renders /metrics. */
#define ADMIN_THREADS 2u
/* Longest admin.listen accepted: a DNS name, brackets, colon, port. */
#define LISTEN_MAX 300
/* "65535" and the NUL. */
#define PORT_MAX_CHARS 6
/* Memory per connection, which bounds the request line and headers too:
 * probes and scrapes send a few hundred bytes. */
#define CONNECTION_MEMORY (32u * 1024u)
/* One line of libmicrohttpd's own log. */
#define MHD_LOG_LINE_MAX 512

/* Registry slots per server thread, in pools (max_connections): a
 * whole pool of live connections, plus as many victims of eviction that
 * the thread has not closed yet (it closes them after the burst of accepts
 * it is in: a flood of newcomers evicts faster than that). MHD's own limit
 * is the number of slots, so that every connection it holds has one. */
#define POOLS_PER_THREAD 2u
/* Warnings any client can cause, one per connection (shed connections,
 * libmicrohttpd's messages about clients closing mid-request): one line of
 * each kind per interval at most, with the counts since the last one, so
 * that an attack does not flood the log. */
#define LOG_INTERVAL_MS 60000
/* No deadline at all: the reaper sleeps until woken. */
#define NO_DEADLINE INT64_MAX

#define TEXT_PLAIN "text/plain; charset=utf-8"
/* What Prometheus expects for the text format (exposition format 0.0.4). */
#define TEXT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* A client address, without the port: what the per-address limit counts. */
typedef struct ip_key {
    sa_family_t family; /* AF_INET (IPv4-mapped IPv6 too), AF_INET6, or 0 */
    uint8_t bytes[16];
} ip_key_t;

typedef enum conn_phase {
    /* for a request's headers, since accept */
    PHASE_REQUEST,
    /* for the next request's headers, since the previous response ended */
    PHASE_KEEPALIVE,
    /* answering: the headers are in, the response is not out yet */
    PHASE_RESPONSE,
} conn_phase_t;

/* Why connections are shed; the metric's "reason" label. */
typedef enum shed_reason {
    SHED_REQUEST_DEADLINE, /* the phases' deadlines, in conn_phase_t order */
    SHED_KEEPALIVE_IDLE,
    SHED_RESPONSE_DEADLINE,
    SHED_EVICTED, /* closed to make room for a newcomer */
    SHED_REFUSED, /* a newcomer hung up: no victim or no slot (should stay 0) */
    SHED_REASONS,
} shed_reason_t;

/* shed() takes a missed deadline's reason from the phase. */
_Static_assert((int)SHED_RESPONSE_DEADLINE == (int)PHASE_RESPONSE, "reasons follow the phases");

static const char *const shed_reason_names[SHED_REASONS] = {
    "request_deadline", "keepalive_idle", "response_deadline", "evicted", "refused"};

typedef struct conn {
    bool used;
    bool shut; /* shut down by us; MHD closes it on its worker's next turn */
    conn_phase_t phase;
    int fd;
    ip_key_t ip;
    int64_t since_ms;    /* CLOCK_MONOTONIC; start of the phase */
    int64_t deadline_ms; /* end of the phase */
} conn_t;

struct admin {
    struct MHD_Daemon *daemon;
    struct sockaddr_storage addr; /* what we listen on */
    char listen[LISTEN_MAX + 1];  /* as configured, for messages */
    unsigned port;
    metrics_t *metrics;
    admin_ready_fn ready;
    admin_collect_fn collect;
    void *opaque;
    int64_t heartbeat_max_age_ms;
    _Atomic int64_t heartbeat_ms; /* CLOCK_MONOTONIC */
    pthread_mutex_t scrape_lock;  /* held while rendering */

    /* The last /metrics text, under cache_lock (see serve_metrics). */
    pthread_mutex_t cache_lock;
    char *cache;
    size_t cache_len;
    int64_t cache_ms; /* CLOCK_MONOTONIC, when it was rendered */

    unsigned max_conns, max_conns_per_ip;
    int64_t phase_ms[PHASE_RESPONSE + 1]; /* each phase's deadline */
    metric_family_t *shed_metric;         /* NULL without a registry */

    /* Everything below is under conns_lock. */
    pthread_mutex_t conns_lock;
    pthread_cond_t reaper_wake; /* CLOCK_MONOTONIC */
    pthread_t reaper;
    bool reaper_started, stopping;
    int64_t reaper_due_ms; /* when the reaper wakes up by itself */
    conn_t *conns;
    size_t nconns;               /* slots: one for every connection MHD may hold */
    uint64_t shed[SHED_REASONS]; /* since the last warning */
    int64_t shed_logged_ms;

    _Atomic int64_t mhd_logged_ms; /* CLOCK_MONOTONIC; see on_mhd_log */
    _Atomic uint64_t mhd_left_out; /* messages since then */
};

/* Marks a request whose headers were seen (see on_request). */
static int headers_seen;

void admin_heartbeat(admin_t *a)
{
    if (a)
        atomic_store_explicit(&a->heartbeat_ms, clock_mono_ms(), memory_order_relaxed);
}

unsigned admin_port(const admin_t *a)
{
    return a ? a->port : 0;
}

/* ---- responses ---- */

/*
 * Queues a response. body is copied unless mode is MHD_RESPMEM_MUST_FREE,
 * in which case it is handed over (and freed here when MHD cannot take it).
 */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *content_type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO; /* MHD closes the connection */
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    /* Probes and scrapes must see the state of now, never a cached one. */
    if (ok == MHD_YES)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (ok == MHD_YES && status == MHD_HTTP_METHOD_NOT_ALLOWED)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, TEXT_PLAIN, (char *)text, strlen(text), MHD_RESPMEM_MUST_COPY);
}

/* ---- endpoints ---- */

static enum MHD_Result serve_healthz(admin_t *a, struct MHD_Connection *c)
{
    int64_t age_ms = clock_mono_ms() - atomic_load_explicit(&a->heartbeat_ms, memory_order_relaxed);
    if (age_ms <= a->heartbeat_max_age_ms)
        return reply_text(c, MHD_HTTP_OK, "ok\n");
    char text[128];
    snprintf(text, sizeof(text), "stale: the main loop last turned %.1f s ago (bound %.1f s)\n",
             (double)age_ms / 1000.0, (double)a->heartbeat_max_age_ms / 1000.0);
    return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, text);
}

static enum MHD_Result serve_readyz(admin_t *a, struct MHD_Connection *c)
{
    char why[ADMIN_REASON_MAX] = "";
    if (a->ready == NULL || a->ready(a->opaque, why, sizeof(why)))
        return reply_text(c, MHD_HTTP_OK, "ready\n");
    why[sizeof(why) - 1] = '\0'; /* whatever the callback wrote */
    char text[ADMIN_REASON_MAX + 16];
    snprintf(text, sizeof(text), "not ready: %s\n", why[0] ? why : "(no reason given)");
    return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, text);
}

/*
 * A copy of the last /metrics text, owned by the caller, when it is at most
 * max_age_ms old (any age when max_age_ms < 0); NULL when there is none or
 * memory ran out.
 */
static char *cached_metrics(admin_t *a, int64_t max_age_ms, size_t *len)
{
    char *copy = NULL;
    pthread_mutex_lock(&a->cache_lock);
    if (a->cache && (max_age_ms < 0 || clock_mono_ms() - a->cache_ms <= max_age_ms)) {
        copy = malloc(a->cache_len + 1);
        if (copy) {
            memcpy(copy, a->cache, a->cache_len + 1);
            *len = a->cache_len;
        }
    }
    pthread_mutex_unlock(&a->cache_lock);
    return copy;
}

/*
 * No server thread ever waits for another's render, since a probe queued
 * on that thread would wait with it: while one thread renders, the others
 * answer with the text it is replacing. Only the very first render is
 * waited for (there is nothing to answer with before it).
 */
static enum MHD_Result serve_metrics(admin_t *a, struct MHD_Connection *c)
{
    if (a->metrics == NULL)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
    size_t len = 0;
    char *text = cached_metrics(a, ADMIN_METRICS_REUSE_MS, &len);
    if (text == NULL && pthread_mutex_trylock(&a->scrape_lock) != 0) {
        text = cached_metrics(a, -1, &len);
        if (text == NULL)
            pthread_mutex_lock(&a->scrape_lock);
    } else if (text != NULL) {
        return reply(c, MHD_HTTP_OK, TEXT_METRICS, text, len, MHD_RESPMEM_MUST_FREE);
    }
    if (text == NULL) { /* we hold scrape_lock */
        if (a->collect)
            a->collect(a->opaque, a->metrics);
        size_t n = 0;
        char *fresh = metrics_render(a->metrics, &n);
        if (fresh) {
            pthread_mutex_lock(&a->cache_lock);
            free(a->cache);
            a->cache = fresh; /* the cache owns it now */
            a->cache_len = n;
            a->cache_ms = clock_mono_ms();
            pthread_mutex_unlock(&a->cache_lock);
            text = cached_metrics(a, -1, &len);
        }
        pthread_mutex_unlock(&a->scrape_lock);
    }
    if (text == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(c, MHD_HTTP_OK, TEXT_METRICS, text, len, MHD_RESPMEM_MUST_FREE);
}

/* ---- connections: limits, deadlines, eviction ---- */

/* The address of sa without its port; IPv4-mapped IPv6 counts as IPv4, so
 * that a dual-stack listener does not give one client two addresses. Other
 * families (none today) all share one key. */
static ip_key_t ip_key_of(const struct sockaddr *sa, socklen_t len)
{
    ip_key_t k = {0};
    if (sa == NULL)
        return k;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)(const void *)sa;
        k.family = AF_INET;
        memcpy(k.bytes, &v4->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            k.family = AF_INET;
            memcpy(k.bytes, &v6->sin6_addr.s6_addr[12], 4);
        } else {
            k.family = AF_INET6;
            memcpy(k.bytes, &v6->sin6_addr, 16);
        }
    }
    return k;
}

static bool ip_equal(const ip_key_t *x, const ip_key_t *y)
{
    return x->family == y->family && memcmp(x->bytes, y->bytes, sizeof(x->bytes)) == 0;
}

/* The slot of an MHD connection (NULL when it got none). */
static conn_t *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

/*
 * Under conns_lock. Makes the connection's worker see EOF (a victim whose
 * request is half read gets no answer: it was the one worth least) and
 * counts why. The slot stays in use until MHD's CLOSED notification.
 */
static void shed(conn_t *c, shed_reason_t why, uint64_t *counts)
{
    shutdown(c->fd, SHUT_RDWR);
    c->shut = true;
    counts[why]++;
}

/*
 * Counts what was shed (counts, one per reason) in the metric and logs it,
 * at most once per LOG_INTERVAL_MS with what accumulated since. Any
 * thread, without conns_lock.
 */
static void report_shed(admin_t *a, const uint64_t *counts)
{
    bool any = false;
    for (int r = 0; r < SHED_REASONS; r++) {
        if (counts[r] == 0)
            continue;
        any = true;
        metric_add(a->shed_metric, (const char *const[]){shed_reason_names[r]}, (double)counts[r]);
    }
    if (!any)
        return;
    uint64_t total[SHED_REASONS];
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&a->conns_lock);
    for (int r = 0; r < SHED_REASONS; r++)
        a->shed[r] += counts[r];
    bool log = now - a->shed_logged_ms >= LOG_INTERVAL_MS;
    if (log) {
        memcpy(total, a->shed, sizeof(total));
        memset(a->shed, 0, sizeof(a->shed));
        a->shed_logged_ms = now;
    }
    pthread_mutex_unlock(&a->conns_lock);
    if (log)
        LOG_WARN("admin connections shed to keep the probes answered",
                 LF_I("request_deadline", total[SHED_REQUEST_DEADLINE]),
                 LF_I("keepalive_idle", total[SHED_KEEPALIVE_IDLE]),
                 LF_I("response_deadline", total[SHED_RESPONSE_DEADLINE]),
                 LF_I("evicted", total[SHED_EVICTED]), LF_I("refused", total[SHED_REFUSED]),
                 LF_I("max_connections", a->max_conns),
                 LF_I("max_connections_per_ip", a->max_conns_per_ip));
}

/* Under conns_lock: makes the reaper wake up by deadline_ms at the latest. */
static void reaper_expect(admin_t *a, int64_t deadline_ms)
{
    if (deadline_ms < a->reaper_due_ms) {
        a->reaper_due_ms = deadline_ms;
        pthread_cond_signal(&a->reaper_wake);
    }
}

/*
 * Under conns_lock: the connection to close for a newcomer, among those of
 * ip (all when ip is NULL); NULL when there is none. Worth least is the one
 * that has waited longest for a request: idle, dribbling its headers, or
 * kept alive. One whose request already waits in its socket is spared while
 * another can go: it is a client that sent its request at once, whose
 * worker has not read it yet (a probe's, while that worker renders
 * /metrics). Responses in flight go last: only slow readers hold one long.
 */
static conn_t *pick_victim(admin_t *a, const ip_key_t *ip)
{
    conn_t *best = NULL;
    int best_rank = 0;
    for (size_t i = 0; i < a->nconns; i++) {
        conn_t *c = &a->conns[i];
        if (!c->used || c->shut || (ip && !ip_equal(&c->ip, ip)))
            continue;
        int rank = 2;
        if (c->phase != PHASE_RESPONSE) {
            int pending = 0;
            rank = ioctl(c->fd, FIONREAD, &pending) == 0 && pending > 0 ? 1 : 0;
        }
        if (best == NULL || rank < best_rank ||
            (rank == best_rank && c->since_ms < best->since_ms)) {
            best = c;
            best_rank = rank;
        }
    }
    return best;
}

/*
 * libmicrohttpd's accept policy, called on the server thread that accepted
 * the socket, before the connection exists. At a limit the newcomer takes
 * the place of a victim (pick_victim): one of its own address's at the
 * per-address limit, anyone's at the total one. So a probe is never refused
 * for others' connections, and an address cannot push out anyone else's
 * before the whole pool is full. Refused only when nothing can be evicted
 * (never, as long as the limits are above zero). Beyond the registry's
 * slots, MHD refuses before asking (see POOLS_PER_THREAD). Two threads
 * accepting at once may both see room: the pool can then exceed its limit
 * by one connection per thread, until the next newcomer evicts.
 */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    admin_t *a = cls;
    ip_key_t ip = ip_key_of(addr, addrlen);
    uint64_t counts[SHED_REASONS] = {0};
    bool ok = true;
    pthread_mutex_lock(&a->conns_lock);
    unsigned live = 0, same = 0;
    for (size_t i = 0; i < a->nconns; i++) {
        const conn_t *c = &a->conns[i];
        if (!c->used || c->shut)
            continue;
        live++;
        same += ip_equal(&c->ip, &ip);
    }
    bool ip_full = same >= a->max_conns_per_ip;
    if (ip_full || live >= a->max_conns) {
        conn_t *victim = pick_victim(a, ip_full ? &ip : NULL);
        if (victim)
            shed(victim, SHED_EVICTED, counts);
        else {
            counts[SHED_REFUSED]++;
            ok = false;
        }
    }
    pthread_mutex_unlock(&a->conns_lock);
    report_shed(a, counts);
    return ok ? MHD_YES : MHD_NO;
}

/*
 * libmicrohttpd's connection notifications, on the connection's server
 * thread: STARTED takes a slot (there is one for every connection MHD can
 * hold; should one be missing all the same, the connection is hung up at
 * once), CLOSED frees it, before MHD closes the socket.
 */
static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    admin_t *a = cls;
    conn_t *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (c) {
            pthread_mutex_lock(&a->conns_lock);
            c->used = false;
            pthread_mutex_unlock(&a->conns_lock);
        }
        return;
    }
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *addr =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (fd == NULL)
        return;
    const struct sockaddr *sa = addr ? addr->client_addr : NULL;
    socklen_t salen =
        sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    uint64_t counts[SHED_REASONS] = {0};
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&a->conns_lock);
    for (size_t i = 0; i < a->nconns && c == NULL; i++) {
        if (!a->conns[i].used)
            c = &a->conns[i];
    }
    if (c) {
        *c = (conn_t){.used = true,
                      .phase = PHASE_REQUEST,
                      .fd = fd->connect_fd,
                      .ip = ip_key_of(sa, salen),
                      .since_ms = now,
                      .deadline_ms = now + a->phase_ms[PHASE_REQUEST]};
        reaper_expect(a, c->deadline_ms);
    } else {
        shutdown(fd->connect_fd, SHUT_RDWR);
        counts[SHED_REFUSED]++;
    }
    *socket_context = c;
    pthread_mutex_unlock(&a->conns_lock);
    report_shed(a, counts);
}

/*
 * Moves mc into phase, whose deadline starts now; on mc's server thread.
 * Entering PHASE_RESPONSE, returns false when the request came after its
 * deadline (the reaper was about to shed it) or the connection was shed
 * meanwhile: it must not be answered.
 */
static bool enter_phase(admin_t *a, struct MHD_Connection *mc, conn_phase_t phase)
{
    conn_t *c = conn_of(mc);
    if (c == NULL)
        return true;
    uint64_t counts[SHED_REASONS] = {0};
    int64_t now = clock_mono_ms();
    bool ok = true;
    pthread_mutex_lock(&a->conns_lock);
    if (c->shut)
        ok = false;
    else if (phase == PHASE_RESPONSE && now > c->deadline_ms) {
        shed(c, (shed_reason_t)c->phase, counts);
        ok = false;
    } else {
        c->phase = phase;
        c->since_ms = now;
        c->deadline_ms = now + a->phase_ms[phase];
        reaper_expect(a, c->deadline_ms);
    }
    pthread_mutex_unlock(&a->conns_lock);
    report_shed(a, counts);
    return ok;
}

/* libmicrohttpd's end of a request (answered or not), on its server thread. */
static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)req_cls;
    (void)toe; /* a connection that is closing is freed by CLOSED */
    enter_phase(cls, mc, PHASE_KEEPALIVE);
}

/*
 * The reaper thread: sheds every connection whose phase outlived its
 * deadline, then sleeps until the next deadline (or until a connection
 * expects an earlier one, see reaper_expect).
 */
static void *reap(void *opaque)
{
    admin_t *a = opaque;
    pthread_mutex_lock(&a->conns_lock);
    while (!a->stopping) {
        uint64_t counts[SHED_REASONS] = {0};
        bool any = false;
        int64_t now = clock_mono_ms(), next = NO_DEADLINE;
        for (size_t i = 0; i < a->nconns; i++) {
            conn_t *c = &a->conns[i];
            if (!c->used || c->shut)
                continue;
            if (c->deadline_ms <= now) {
                shed(c, (shed_reason_t)c->phase, counts);
                any = true;
            } else if (c->deadline_ms < next)
                next = c->deadline_ms;
        }
        a->reaper_due_ms = next;
        if (any) {
            pthread_mutex_unlock(&a->conns_lock);
            report_shed(a, counts);
            pthread_mutex_lock(&a->conns_lock);
            continue; /* deadlines may have changed meanwhile */
        }
        if (next == NO_DEADLINE) {
            pthread_cond_wait(&a->reaper_wake, &a->conns_lock);
        } else {
            struct timespec due = {.tv_sec = (time_t)(next / 1000),
                                   .tv_nsec = (long)(next % 1000) * 1000000L};
            pthread_cond_timedwait(&a->reaper_wake, &a->conns_lock, &due);
        }
    }
    pthread_mutex_unlock(&a->conns_lock);
    return NULL;
}

static bool request_has_body(struct MHD_Connection *c)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return (cl && strcmp(cl, "0") != 0) ||
           MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

/*
 * Called by libmicrohttpd on a server thread: first once the headers are
 * in, then again once the (empty) body is. Errors about the request line
 * and headers are answered on the first call, which makes MHD close the
 * connection without reading a body; good requests are answered on the
 * second, which keeps the connection alive for the next scrape.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    admin_t *a = cls;
    if (*req_cls == NULL) {
        *req_cls = &headers_seen;
        if (!enter_phase(a, c, PHASE_RESPONSE))
            return MHD_NO; /* MHD closes the connection */
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        if (request_has_body(c))
            return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request bodies are not accepted\n");
        return MHD_YES;
    }
    /* A body the headers did not announce: not HTTP/1.1; hang up. */
    if (*upload_data_size != 0)
        return MHD_NO;
    if (strcmp(url, "/healthz") == 0)
        return serve_healthz(a, c);
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(a, c);
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(a, c);
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

/*
 * libmicrohttpd's own messages (accept failures, a client closing in the
 * middle of its request, ...), on its threads. A client can cause one per
 * connection: one is logged per LOG_INTERVAL_MS, with the number of those
 * left out since the last.
 */
/* fmt is one of libmicrohttpd's own printf formats. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    admin_t *a = cls;
    int64_t now = clock_mono_ms();
    int64_t last = atomic_load(&a->mhd_logged_ms);
    if (now - last < LOG_INTERVAL_MS ||
        !atomic_compare_exchange_strong(&a->mhd_logged_ms, &last, now)) {
        atomic_fetch_add(&a->mhd_left_out, 1);
        return;
    }
    char line[MHD_LOG_LINE_MAX];
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    LOG_WARN("admin server", LF_S("detail", line),
             LF_I("left_out", atomic_exchange(&a->mhd_left_out, 0)));
}

/* ---- start and stop ---- */

/*
 * Splits "host:port" or "[v6]:port" and resolves it into a->addr.
 * Returns 0, or -1 with a reason in err.
 */
static int resolve_listen(admin_t *a, const char *listen, bool *v6, char *err, size_t errlen)
{
    char host[LISTEN_MAX + 1];
    const char *colon = strrchr(listen, ':');
    const char *host_start = listen;
    size_t host_len = colon ? (size_t)(colon - listen) : 0;
    bool bracketed = listen[0] == '[';
    if (bracketed) {
        if (host_len < 2 || listen[host_len - 1] != ']')
            goto bad;
        host_start++;
        host_len -= 2;
    }
    if (colon == NULL || host_len == 0 || host_len > LISTEN_MAX)
        goto bad;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    const char *port = colon + 1;
    char *end;
    errno = 0;
    long n = strtol(port, &end, 10);
    if (*port < '0' || *port > '9' || *end != '\0' || errno != 0 || n > 65535 ||
        strlen(port) >= PORT_MAX_CHARS)
        goto bad;

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags =
                                 AI_PASSIVE | AI_NUMERICSERV | (bracketed ? AI_NUMERICHOST : 0)};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "admin.listen \"%s\": %s", listen, gai_strerror(rc));
        return -1;
    }
    memcpy(&a->addr, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, errlen, "admin.listen \"%.*s\": expected host:port or [ipv6]:port", LISTEN_MAX,
             listen);
    return -1;
}

static uint16_t listen_port(const admin_t *a)
{
    if (a->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)&a->addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)&a->addr)->sin_port);
}

/*
 * libmicrohttpd says only that it failed: bind a socket the same way to
 * learn why (usually "Address already in use"), for an error that names
 * the cause.
 */
static void explain_listen_failure(const admin_t *a, bool v6, char *err, size_t errlen)
{
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int saved = errno;
    if (fd >= 0) {
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        saved = bind(fd, (const struct sockaddr *)&a->addr, len) == 0 ? 0 : errno;
        close(fd);
    }
    if (saved != 0)
        snprintf(err, errlen, "admin.listen %s: %s", a->listen, strerror(saved));
    else
        snprintf(err, errlen, "admin.listen %s: the HTTP server could not start (see the log)",
                 a->listen);
}

/* An admin_t with its locks and condition ready, the rest zero; NULL when out of memory. */
static admin_t *admin_alloc(void)
{
    admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    pthread_condattr_t ca;
    if (pthread_mutex_init(&a->scrape_lock, NULL) != 0)
        goto no_scrape_lock;
    if (pthread_mutex_init(&a->cache_lock, NULL) != 0)
        goto no_cache_lock;
    if (pthread_mutex_init(&a->conns_lock, NULL) != 0)
        goto no_conns_lock;
    if (pthread_condattr_init(&ca) != 0)
        goto no_condattr;
    /* The deadlines are CLOCK_MONOTONIC: a clock step must not move them. */
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&a->reaper_wake, &ca) != 0)
        goto no_cond;
    pthread_condattr_destroy(&ca);
    return a;
no_cond:
    pthread_condattr_destroy(&ca);
no_condattr:
    pthread_mutex_destroy(&a->conns_lock);
no_conns_lock:
    pthread_mutex_destroy(&a->cache_lock);
no_cache_lock:
    pthread_mutex_destroy(&a->scrape_lock);
no_scrape_lock:
    free(a);
    return NULL;
}

static unsigned or_default(unsigned v, unsigned dflt)
{
    return v ? v : dflt;
}

/* The series of every reason exist from the start, at 0, for alert rules. */
static int register_shed_metric(admin_t *a, char *err, size_t errlen)
{
    if (a->metrics == NULL)
        return 0;
    a->shed_metric = metrics_counter(
        a->metrics, "session_bridge_admin_connections_shed_total",
        "Admin endpoint connections closed or refused so that probes stay answered, by reason.",
        (const char *const[]){"reason", NULL}, err, errlen);
    if (a->shed_metric == NULL)
        return -1;
    for (int r = 0; r < SHED_REASONS; r++)
        metric_add(a->shed_metric, (const char *const[]){shed_reason_names[r]}, 0);
    return 0;
}

admin_t *admin_start(const admin_options_t *opt, char *err, size_t errlen)
{
    if (opt == NULL || opt->listen == NULL || strlen(opt->listen) > LISTEN_MAX) {
        snprintf(err, errlen, "admin.listen: expected host:port");
        return NULL;
    }
    admin_t *a = admin_alloc();
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(a->listen, sizeof(a->listen), "%s", opt->listen);
    a->metrics = opt->metrics;
    a->ready = opt->ready;
    a->collect = opt->collect;
    a->opaque = opt->opaque;
    double max_age =
        opt->heartbeat_max_age_s > 0 ? opt->heartbeat_max_age_s : ADMIN_DEFAULT_HEARTBEAT_MAX_AGE_S;
    a->heartbeat_max_age_ms = (int64_t)(max_age * 1000.0);
    admin_heartbeat(a);
    a->max_conns = or_default(opt->max_connections, ADMIN_DEFAULT_MAX_CONNECTIONS);
    a->max_conns_per_ip =
        or_default(opt->max_connections_per_ip, ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP);
    a->phase_ms[PHASE_REQUEST] =
        or_default(opt->request_deadline_ms, ADMIN_DEFAULT_REQUEST_DEADLINE_MS);
    a->phase_ms[PHASE_KEEPALIVE] =
        or_default(opt->keepalive_idle_ms, ADMIN_DEFAULT_KEEPALIVE_IDLE_MS);
    a->phase_ms[PHASE_RESPONSE] =
        or_default(opt->response_deadline_ms, ADMIN_DEFAULT_RESPONSE_DEADLINE_MS);
    a->reaper_due_ms = NO_DEADLINE;
    a->shed_logged_ms = clock_mono_ms() - LOG_INTERVAL_MS; /* the first ones are logged */
    atomic_init(&a->mhd_logged_ms, a->shed_logged_ms);
    a->nconns = (size_t)a->max_conns * POOLS_PER_THREAD * ADMIN_THREADS;
    a->conns = calloc(a->nconns, sizeof(*a->conns));
    if (a->conns == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (register_shed_metric(a, err, errlen) != 0)
        goto fail;

    bool v6 = false;
    if (resolve_listen(a, opt->listen, &v6, err, errlen) != 0)
        goto fail;
    if (pthread_create(&a->reaper, NULL, reap, a) != 0) {
        snprintf(err, errlen, "admin: cannot start a thread");
        goto fail;
    }
    a->reaper_started = true;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0);
    /* MHD splits its limit between its threads and refuses beyond it, before
     * on_accept is asked: each thread gets POOLS_PER_THREAD pools of slots. */
    unsigned mhd_limit = (unsigned)a->nconns;
    /* MHD's own timeout is an idle timer (any byte resets it): ours are the
     * deadlines; this one, later than all of them, is only a backstop. */
    int64_t longest = a->phase_ms[PHASE_REQUEST];
    for (int p = PHASE_KEEPALIVE; p <= PHASE_RESPONSE; p++)
        longest = a->phase_ms[p] > longest ? a->phase_ms[p] : longest;
    unsigned backstop_s = (unsigned)(longest / 1000) + 2;
    /* The port argument only names the port in MHD's own messages. Not
     * MHD_OPTION_PER_IP_CONNECTION_LIMIT: it refuses the newcomer before the
     * accept policy is asked, so clients sharing a probe's address (a node's
     * address behind SNAT, loopback) could starve it. */
    /* clang-format off */
    a->daemon = MHD_start_daemon(flags, listen_port(a), on_accept, a, on_request, a,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a->addr,
                                 MHD_OPTION_THREAD_POOL_SIZE, ADMIN_THREADS,
                                 MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
                                 MHD_OPTION_CONNECTION_TIMEOUT, backstop_s,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
                                 MHD_OPTION_END);
    /* clang-format on */
    if (a->daemon == NULL) {
        explain_listen_failure(a, v6, err, errlen);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : 0;
    return a;
fail:
    admin_stop(a);
    return NULL;
}

void admin_stop(admin_t *a)
{
    if (a == NULL)
        return;
    /* First the server: its CLOSED notifications empty the registry. */
    if (a->daemon)
        MHD_stop_daemon(a->daemon);
    if (a->reaper_started) {
        pthread_mutex_lock(&a->conns_lock);
        a->stopping = true;
        pthread_cond_signal(&a->reaper_wake);
        pthread_mutex_unlock(&a->conns_lock);
        pthread_join(a->reaper, NULL);
    }
    pthread_cond_destroy(&a->reaper_wake);
    pthread_mutex_destroy(&a->conns_lock);
    pthread_mutex_destroy(&a->scrape_lock);
    pthread_mutex_destroy(&a->cache_lock);
    free(a->cache);
    free(a->conns);
    free(a);
}
