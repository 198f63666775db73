/*
 * admin: the health, readiness and metrics endpoint (see admin.h).
 *
 * libmicrohttpd runs a pool of ADMIN_THREADS threads, so that a probe never
 * waits behind a large /metrics render. Scrapes are serialized by a mutex:
 * the collect callback then never runs twice at once, and two scrapers do
 * not render the registry twice in parallel on a machine whose cores belong
 * to the main loop.
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

#define TEXT_PLAIN "text/plain; charset=utf-8"
/* What Prometheus expects for the text format (exposition format 0.0.4). */
#define TEXT_METRICS "text/plain; version=0.0.4; charset=utf-8"

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
    pthread_mutex_t scrape_lock;
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

static enum MHD_Result serve_metrics(admin_t *a, struct MHD_Connection *c)
{
    if (a->metrics == NULL)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
    size_t len = 0;
    pthread_mutex_lock(&a->scrape_lock);
    if (a->collect)
        a->collect(a->opaque, a->metrics);
    char *text = metrics_render(a->metrics, &len);
    pthread_mutex_unlock(&a->scrape_lock);
    if (text == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(c, MHD_HTTP_OK, TEXT_METRICS, text, len, MHD_RESPMEM_MUST_FREE);
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

/* libmicrohttpd's own messages (accept failures and the like), on its threads. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[MHD_LOG_LINE_MAX];
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    LOG_WARN("admin server", LF_S("detail", line));
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

admin_t *admin_start(const admin_options_t *opt, char *err, size_t errlen)
{
    if (opt == NULL || opt->listen == NULL || strlen(opt->listen) > LISTEN_MAX) {
        snprintf(err, errlen, "admin.listen: expected host:port");
        return NULL;
    }
    admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL || pthread_mutex_init(&a->scrape_lock, NULL) != 0) {
        free(a);
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

    bool v6 = false;
    if (resolve_listen(a, opt->listen, &v6, err, errlen) != 0)
        goto fail;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0);
    unsigned max_conn = opt->max_connections ? opt->max_connections : ADMIN_DEFAULT_MAX_CONNECTIONS;
    /* libmicrohttpd splits the limit between its threads: each needs one. */
    if (max_conn < ADMIN_THREADS)
        max_conn = ADMIN_THREADS;
    unsigned timeout =
        opt->connection_timeout_s ? opt->connection_timeout_s : ADMIN_DEFAULT_CONNECTION_TIMEOUT_S;
    /* The port argument only names the port in MHD's own messages. */
    /* clang-format off */
    a->daemon = MHD_start_daemon(flags, listen_port(a), NULL, NULL, on_request, a,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a->addr,
                                 MHD_OPTION_THREAD_POOL_SIZE, ADMIN_THREADS,
                                 MHD_OPTION_CONNECTION_LIMIT, max_conn,
                                 MHD_OPTION_CONNECTION_TIMEOUT, timeout,
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
    if (a->daemon)
        MHD_stop_daemon(a->daemon);
    pthread_mutex_destroy(&a->scrape_lock);
    free(a);
}
