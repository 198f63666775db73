/*
 * admin_test: the admin server on a loopback port, driven by libcurl:
 * every endpoint, stale heartbeats, readiness reasons, wrong methods and
 * paths, bodies, listen errors; and with raw sockets from several loopback
 * addresses (127.0.0.0/8 is all loopback on Linux), the connection limits,
 * deadlines and evictions that keep the probes answered.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "metrics.h"

#define ERRLEN 256
/* Safety nets only: nothing here should come close. */
#define CURL_TIMEOUT_MS 10000L
#define IDLE_CLOSE_WAIT_MS 10000
/* A victim is shut down as the newcomer is accepted and closed on its
 * worker's next turn: microseconds, with a margin for a loaded machine. */
#define EVICTION_WAIT_MS 1000
/* Between connections whose order matters: the server's clock counts
 * milliseconds. */
#define ORDER_GAP_MS 20
/* connect() returns once the kernel has the connection; the server counts
 * it once a thread accepted it, a little later (ASan: milliseconds). Well
 * below the request deadline, which would close them all. */
#define SETTLE_MS 300
/* A /metrics of 12 MiB (the series times their label's length): far more
 * than the kernel takes into a socket's buffers (4 MiB at most by default). */
#define BIG_SERIES 100000
#define BIG_LABEL_CHARS 100

/* Bytes received, kept up to its size (enough for every reply here). */
typedef struct text {
    char s[8192];
    size_t len;
} text_t;

typedef struct reply {
    long status;
    text_t body;
    text_t headers;
} reply_t;

/* libcurl's write and header callback, on the test's thread. */
static size_t on_data(char *p, size_t size, size_t n, void *opaque)
{
    text_t *t = opaque;
    size_t room = sizeof(t->s) - 1 - t->len;
    size_t take = size * n < room ? size * n : room;
    memcpy(t->s + t->len, p, take);
    t->len += take;
    t->s[t->len] = '\0';
    return size * n;
}

/* One request to host:port from the address from (NULL: any); body (may
 * be NULL) is sent as the request body. */
static reply_t request_from(const char *from, const char *host, unsigned port, const char *method,
                            const char *path, const char *body)
{
    reply_t r = {0};
    char url[256];
    snprintf(url, sizeof(url), "http://%s:%u%s", host, port, path);
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, CURL_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
    if (from)
        curl_easy_setopt(c, CURLOPT_INTERFACE, from);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    return r;
}

static reply_t request(const char *host, unsigned port, const char *method, const char *path,
                       const char *body)
{
    return request_from(NULL, host, port, method, path, body);
}

static reply_t get(const admin_t *a, const char *path)
{
    return request("127.0.0.1", admin_port(a), "GET", path, NULL);
}

static admin_t *start(admin_options_t o)
{
    char err[ERRLEN] = "";
    if (o.listen == NULL)
        o.listen = "127.0.0.1:0";
    admin_t *a = admin_start(&o, err, sizeof(err));
    ck_assert_msg(a != NULL, "admin_start: %s", err);
    ck_assert_uint_ne(admin_port(a), 0);
    return a;
}

static void assert_reply(const reply_t *r, long status, const char *body)
{
    ck_assert_int_eq(r->status, status);
    ck_assert_str_eq(r->body.s, body);
}

static void assert_header(const reply_t *r, const char *line)
{
    ck_assert_msg(strstr(r->headers.s, line), "no \"%s\" in:\n%s", line, r->headers.s);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

START_TEST(healthz_ok_while_heartbeat_fresh)
{
    admin_t *a = start((admin_options_t){0});
    admin_heartbeat(a);
    reply_t r = get(a, "/healthz");
    assert_reply(&r, 200, "ok\n");
    assert_header(&r, "Content-Type: text/plain; charset=utf-8\r\n");
    /* The query string is not part of the path. */
    r = get(a, "/healthz?verbose=1");
    assert_reply(&r, 200, "ok\n");
    admin_stop(a);
}
END_TEST

START_TEST(healthz_503_when_heartbeat_stale)
{
    /* The bound is 1 s: long enough that a GET right after a heartbeat is
     * certainly within it, short enough to wait out. */
    admin_t *a = start((admin_options_t){.heartbeat_max_age_s = 1});
    sleep_ms(1100);
    reply_t r = get(a, "/healthz");
    ck_assert_int_eq(r.status, 503);
    ck_assert_msg(strncmp(r.body.s, "stale: the main loop last turned ", 33) == 0, "%s", r.body.s);
    ck_assert_ptr_nonnull(strstr(r.body.s, "(bound 1.0 s)\n"));
    admin_heartbeat(a);
    r = get(a, "/healthz");
    assert_reply(&r, 200, "ok\n");
    admin_stop(a);
}
END_TEST

static atomic_bool ready_flag;

/* Called on a server thread. */
static bool ready_cb(void *opaque, char *why, size_t whylen)
{
    if (atomic_load(&ready_flag))
        return true;
    snprintf(why, whylen, "redis unreachable; sink bus not ready");
    return false;
}

START_TEST(readyz_follows_the_callback)
{
    atomic_store(&ready_flag, false);
    admin_t *a = start((admin_options_t){.ready = ready_cb, .opaque = &ready_flag});
    reply_t r = get(a, "/readyz");
    assert_reply(&r, 503, "not ready: redis unreachable; sink bus not ready\n");
    atomic_store(&ready_flag, true);
    r = get(a, "/readyz");
    assert_reply(&r, 200, "ready\n");
    /* Liveness does not depend on readiness. */
    atomic_store(&ready_flag, false);
    r = get(a, "/healthz");
    assert_reply(&r, 200, "ok\n");
    admin_stop(a);
}
END_TEST

START_TEST(readyz_without_callback_is_ready)
{
    admin_t *a = start((admin_options_t){0});
    reply_t r = get(a, "/readyz");
    assert_reply(&r, 200, "ready\n");
    admin_stop(a);
}
END_TEST

typedef struct collector {
    metric_family_t *scrapes;
    int calls;
} collector_t;

/* Called on a server thread, never twice at once. */
static void collect_cb(void *opaque, metrics_t *m)
{
    collector_t *c = opaque;
    c->calls++;
    metric_set(c->scrapes, NULL, c->calls);
}

START_TEST(metrics_rendered_after_collect)
{
    char err[ERRLEN];
    metrics_t *m = metrics_new();
    collector_t col = {.scrapes = metrics_gauge(m, "x_scrapes", "Scrapes.", NULL, err, ERRLEN)};
    ck_assert_ptr_nonnull(col.scrapes);
    admin_t *a = start((admin_options_t){.metrics = m, .collect = collect_cb, .opaque = &col});
    reply_t r = get(a, "/metrics");
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strncmp(r.body.s,
                          "# HELP x_scrapes Scrapes.\n# TYPE x_scrapes gauge\nx_scrapes 1\n",
                          58) == 0,
                  "%s", r.body.s);
    /* the admin server's own family, every reason from the start */
    ck_assert_ptr_nonnull(
        strstr(r.body.s, "session_bridge_admin_connections_shed_total{reason=\"evicted\"} 0\n"));
    assert_header(&r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
    /* within the reuse window: the same text, no second collect */
    r = get(a, "/metrics");
    ck_assert_ptr_nonnull(strstr(r.body.s, "x_scrapes 1\n"));
    ck_assert_int_eq(col.calls, 1);
    sleep_ms(ADMIN_METRICS_REUSE_MS + 100);
    r = get(a, "/metrics");
    ck_assert_ptr_nonnull(strstr(r.body.s, "x_scrapes 2\n"));
    admin_stop(a);
    metrics_free(m);
}
END_TEST

/* A collect callback as slow as a render of a very large registry. */
#define SLOW_COLLECT_MS 300
/* Scrapers of the flood, each asking for /metrics again and again. */
#define FLOOD_SCRAPERS 6
#define FLOOD_MS 3000

static void slow_collect_cb(void *opaque, metrics_t *m)
{
    sleep_ms(SLOW_COLLECT_MS);
    collect_cb(opaque, m);
}

typedef struct flood {
    char from[16]; /* an address of its own: the per-address limit is not under test */
    unsigned port;
    int64_t until_ms;
    int scrapes;
} flood_t;

static void *scrape_until(void *opaque)
{
    flood_t *f = opaque;
    while (now_ms() < f->until_ms) {
        reply_t r = request_from(f->from, "127.0.0.1", f->port, "GET", "/metrics", NULL);
        ck_assert_int_eq(r.status, 200);
        f->scrapes++;
    }
    return NULL;
}

/* Before, a scrape waited for the render mutex on a server thread, so with
 * a few scrapers both threads were stuck behind renders and so were the
 * probes queued on them. Now a render holds one thread at most, for one
 * render, twice a second. */
START_TEST(metrics_flood_does_not_hold_probes)
{
    char err[ERRLEN];
    metrics_t *m = metrics_new();
    collector_t col = {.scrapes = metrics_gauge(m, "x_scrapes", "Scrapes.", NULL, err, ERRLEN)};
    admin_t *a = start((admin_options_t){.metrics = m, .collect = slow_collect_cb, .opaque = &col});
    ck_assert_int_eq(get(a, "/metrics").status, 200);

    flood_t fl[FLOOD_SCRAPERS];
    pthread_t th[FLOOD_SCRAPERS];
    for (int i = 0; i < FLOOD_SCRAPERS; i++) {
        fl[i] = (flood_t){.port = admin_port(a), .until_ms = now_ms() + FLOOD_MS};
        snprintf(fl[i].from, sizeof(fl[i].from), "127.0.0.%d", i + 2);
        ck_assert_int_eq(pthread_create(&th[i], NULL, scrape_until, &fl[i]), 0);
    }
    sleep_ms(200);
    int64_t worst = 0;
    for (int i = 0; i < 10; i++) {
        int64_t t0 = now_ms();
        assert_reply((reply_t[]){get(a, "/healthz")}, 200, "ok\n");
        if (now_ms() - t0 > worst)
            worst = now_ms() - t0;
        sleep_ms(200);
    }
    int scrapes = 0;
    for (int i = 0; i < FLOOD_SCRAPERS; i++) {
        pthread_join(th[i], NULL);
        scrapes += fl[i].scrapes;
    }
    /* one render's time at most, with room for a loaded machine */
    ck_assert_msg(worst < SLOW_COLLECT_MS + 200, "a probe waited %lld ms", (long long)worst);
    /* the scrapers were answered from the reused text, not one render each */
    ck_assert_int_gt(scrapes, 4 * col.calls);
    admin_stop(a);
    metrics_free(m);
}
END_TEST

START_TEST(metrics_404_without_registry)
{
    admin_t *a = start((admin_options_t){0});
    reply_t r = get(a, "/metrics");
    ck_assert_int_eq(r.status, 404);
    admin_stop(a);
}
END_TEST

START_TEST(unknown_paths_404)
{
    admin_t *a = start((admin_options_t){0});
    static const char *const paths[] = {"/", "/nope", "/metrics/", "/healthz/x", "/HEALTHZ"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        reply_t r = get(a, paths[i]);
        ck_assert_msg(r.status == 404, "%s: %ld", paths[i], r.status);
    }
    admin_stop(a);
}
END_TEST

START_TEST(other_methods_405)
{
    admin_t *a = start((admin_options_t){0});
    static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        reply_t r = request("127.0.0.1", admin_port(a), methods[i], "/healthz", NULL);
        ck_assert_msg(r.status == 405, "%s: %ld", methods[i], r.status);
        assert_header(&r, "Allow: GET, HEAD\r\n");
    }
    reply_t r = request("127.0.0.1", admin_port(a), "POST", "/metrics", "x=1");
    ck_assert_int_eq(r.status, 405);
    admin_stop(a);
}
END_TEST

START_TEST(head_like_get)
{
    admin_t *a = start((admin_options_t){0});
    reply_t r = request("127.0.0.1", admin_port(a), "HEAD", "/healthz", NULL);
    assert_reply(&r, 200, "");
    admin_stop(a);
}
END_TEST

START_TEST(request_body_413)
{
    admin_t *a = start((admin_options_t){0});
    reply_t r = request("127.0.0.1", admin_port(a), "GET", "/healthz", "a body");
    ck_assert_int_eq(r.status, 413);
    admin_stop(a);
}
END_TEST

/* A socket connected from the loopback address from to the server. */
static int connect_from(const admin_t *a, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    ck_assert_int_eq(inet_pton(AF_INET, from, &src.sin_addr), 1);
    ck_assert_msg(bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0, "bind %s", from);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port(a))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* True when the server closed fd within ms (EOF or a reset; these sockets
 * never get an answer, so anything readable is the close). */
static bool closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return false;
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

static void send_text(int fd, const char *text)
{
    ck_assert_int_eq(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* A connection that never sends a byte is closed (at the request deadline). */
START_TEST(idle_connection_closed)
{
    admin_t *a = start((admin_options_t){0});
    int fd = connect_from(a, "127.0.0.1");
    ck_assert(closed_within(fd, IDLE_CLOSE_WAIT_MS));
    close(fd);
    admin_stop(a);
}
END_TEST

/* The request deadline runs from accept to the last header line: a client
 * sending a header line every 200 ms (which resets any idle timer) is
 * closed at the deadline all the same, without an answer. */
START_TEST(request_deadline_counts_from_accept)
{
    admin_t *a = start((admin_options_t){0});
    int64_t t0 = now_ms();
    int fd = connect_from(a, "127.0.0.1");
    send_text(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    bool closed = false;
    while (!closed && now_ms() - t0 < ADMIN_DEFAULT_REQUEST_DEADLINE_MS + 1500) {
        closed = closed_within(fd, 200);
        if (!closed)
            send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL); /* may fail once closed */
    }
    int64_t took = now_ms() - t0;
    ck_assert_msg(closed, "still open after %lld ms", (long long)took);
    ck_assert_msg(took >= ADMIN_DEFAULT_REQUEST_DEADLINE_MS - 100, "closed after %lld ms",
                  (long long)took);
    close(fd);
    admin_stop(a);
}
END_TEST

/* Back-to-back requests reuse the connection (scrapers keep it alive);
 * idle longer than the keep-alive timeout, it is closed. */
START_TEST(keepalive_reused_then_closed)
{
    admin_t *a = start((admin_options_t){.keepalive_idle_ms = 500});
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/healthz", admin_port(a));
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, CURL_TIMEOUT_MS);
    text_t body = {0};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    long connects = -1;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
        ck_assert_int_eq(connects, i == 0 ? 1 : 0);
    }
    curl_easy_cleanup(c);

    int fd = connect_from(a, "127.0.0.1");
    send_text(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, CURL_TIMEOUT_MS), 1);
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
    int64_t t0 = now_ms();
    ck_assert(closed_within(fd, IDLE_CLOSE_WAIT_MS));
    int64_t took = now_ms() - t0;
    ck_assert_msg(took >= 400 && took < 2000, "closed %lld ms after the response", (long long)took);
    close(fd);
    admin_stop(a);
}
END_TEST

static double shed_count(metrics_t *m, const char *reason)
{
    size_t len = 0;
    char *text = metrics_render(m, &len);
    ck_assert_ptr_nonnull(text);
    char key[128];
    snprintf(key, sizeof(key), "session_bridge_admin_connections_shed_total{reason=\"%s\"} ",
             reason);
    const char *at = strstr(text, key);
    ck_assert_msg(at != NULL, "no %s in:\n%s", key, text);
    double v = strtod(at + strlen(key), NULL);
    free(text);
    return v;
}

/* A reader that does not read is cut off at the response deadline: what
 * of a large /metrics the kernel buffers still arrives, not the rest. */
START_TEST(slow_reader_cut_off_at_the_response_deadline)
{
    char err[ERRLEN];
    metrics_t *m = metrics_new();
    metric_family_t *big =
        metrics_gauge(m, "x_big", "Many series.", (const char *const[]){"k", NULL}, err, ERRLEN);
    ck_assert_ptr_nonnull(big);
    for (int i = 0; i < BIG_SERIES; i++) {
        char k[BIG_LABEL_CHARS + 1];
        snprintf(k, sizeof(k), "%0*d", BIG_LABEL_CHARS, i);
        ck_assert_int_eq(metric_set(big, (const char *const[]){k}, i), 0);
    }
    size_t full = 0;
    free(metrics_render(m, &full));
    admin_t *a = start((admin_options_t){.metrics = m, .response_deadline_ms = 500});
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    int small = 4096; /* before connect: it sets the window offered */
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port(a))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    send_text(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    sleep_ms(1500);
    size_t got = 0;
    char buf[65536];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, IDLE_CLOSE_WAIT_MS) == 1) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    ck_assert_msg(got < full,
                  "the whole response (%zu of %zu bytes) reached a reader that did "
                  "not read for 1.5 s",
                  got, full);
    ck_assert(shed_count(m, "response_deadline") == 1);
    close(fd);
    admin_stop(a);
    metrics_free(m);
}
END_TEST

/* One address at its limit pushes out its own oldest connection, never
 * another address's, and its probe gets in. */
START_TEST(per_ip_limit_evicts_the_address_own_oldest)
{
    metrics_t *m = metrics_new();
    admin_t *a = start((admin_options_t){.metrics = m});
    int mine[ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP], other[2];
    /* apart enough that their ages differ (the server counts milliseconds,
     * and its two threads may take connections in any order) */
    for (int i = 0; i < ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP; i++) {
        mine[i] = connect_from(a, "127.0.0.2");
        sleep_ms(ORDER_GAP_MS);
    }
    for (int i = 0; i < 2; i++)
        other[i] = connect_from(a, "127.0.0.3");
    int extra = connect_from(a, "127.0.0.2");
    ck_assert_msg(closed_within(mine[0], EVICTION_WAIT_MS), "the oldest of 127.0.0.2 is open");
    sleep_ms(SETTLE_MS);
    reply_t r = request_from("127.0.0.2", "127.0.0.1", admin_port(a), "GET", "/healthz", NULL);
    assert_reply(&r, 200, "ok\n");
    ck_assert_msg(closed_within(mine[1], EVICTION_WAIT_MS), "the second of 127.0.0.2 is open");
    for (int i = 2; i < ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP; i++)
        ck_assert_msg(!closed_within(mine[i], 0), "127.0.0.2 #%d closed", i);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(!closed_within(other[i], 0), "127.0.0.3 #%d closed", i);
    ck_assert(!closed_within(extra, 0));
    ck_assert(shed_count(m, "evicted") >= 2);
    ck_assert(shed_count(m, "refused") == 0);
    for (int i = 0; i < ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP; i++)
        close(mine[i]);
    close(other[0]);
    close(other[1]);
    close(extra);
    admin_stop(a);
    metrics_free(m);
}
END_TEST

/* With the pool full of idle connections from many addresses, a probe
 * from yet another one is answered, and the oldest idle one makes room. */
START_TEST(full_pool_evicts_the_oldest_waiting)
{
    enum { ADDRESSES = ADMIN_DEFAULT_MAX_CONNECTIONS / ADMIN_DEFAULT_MAX_CONNECTIONS_PER_IP };
    int fds[ADMIN_DEFAULT_MAX_CONNECTIONS];
    admin_t *a = start((admin_options_t){0});
    for (int i = 0; i < ADMIN_DEFAULT_MAX_CONNECTIONS; i++) {
        char from[32];
        snprintf(from, sizeof(from), "127.0.1.%d", 1 + i % ADDRESSES);
        fds[i] = connect_from(a, from);
        if (i == 0)
            sleep_ms(ORDER_GAP_MS); /* the oldest by far */
    }
    sleep_ms(SETTLE_MS);
    int64_t t0 = now_ms();
    reply_t r = get(a, "/healthz");
    assert_reply(&r, 200, "ok\n");
    ck_assert_int_lt(now_ms() - t0, 1000);
    ck_assert_msg(closed_within(fds[0], EVICTION_WAIT_MS), "the oldest is open");
    for (int i = 1; i < ADMIN_DEFAULT_MAX_CONNECTIONS; i++)
        ck_assert_msg(!closed_within(fds[i], 0), "#%d closed", i);
    for (int i = 0; i < ADMIN_DEFAULT_MAX_CONNECTIONS; i++)
        close(fds[i]);
    admin_stop(a);
}
END_TEST

/* A limit smaller than libmicrohttpd's threads still serves. */
START_TEST(tiny_connection_limit_still_serves)
{
    admin_t *a = start((admin_options_t){.max_connections = 1});
    reply_t r = get(a, "/healthz");
    assert_reply(&r, 200, "ok\n");
    admin_stop(a);
}
END_TEST

START_TEST(address_in_use_is_a_clear_error)
{
    admin_t *a = start((admin_options_t){0});
    char listen[64], err[ERRLEN] = "", want[96];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", admin_port(a));
    admin_options_t o = {.listen = listen};
    ck_assert_ptr_null(admin_start(&o, err, sizeof(err)));
    snprintf(want, sizeof(want), "admin.listen %s: Address already in use", listen);
    ck_assert_str_eq(err, want);
    admin_stop(a);
}
END_TEST

static const char *const bad_listens[] = {
    "127.0.0.1",    "127.0.0.1:", ":9464",   "127.0.0.1:65536", "127.0.0.1:-1",
    "127.0.0.1:8x", "[::1:9464",  "[]:9464", "::1:9464x",       "127.0.0.1:0000009464",
};

START_TEST(invalid_addresses_rejected)
{
    char err[ERRLEN] = "";
    admin_options_t o = {.listen = bad_listens[_i]};
    ck_assert_ptr_null(admin_start(&o, err, sizeof(err)));
    ck_assert_msg(strstr(err, "expected host:port"), "%s: %s", bad_listens[_i], err);
    ck_assert_ptr_nonnull(strstr(err, bad_listens[_i]));
}
END_TEST

START_TEST(ipv6_loopback)
{
    char err[ERRLEN] = "";
    admin_options_t o = {.listen = "[::1]:0"};
    admin_t *a = admin_start(&o, err, sizeof(err));
    if (a == NULL && (strstr(err, "not supported") || strstr(err, "assign requested"))) {
        fprintf(stderr, "ipv6_loopback: skipped, no IPv6 here (%s)\n", err);
        return;
    }
    ck_assert_msg(a != NULL, "%s", err);
    reply_t r = request("[::1]", admin_port(a), "GET", "/healthz", NULL);
    assert_reply(&r, 200, "ok\n");
    admin_stop(a);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("admin");
    TCase *tc = tcase_create("endpoints");
    tcase_add_test(tc, healthz_ok_while_heartbeat_fresh);
    tcase_add_test(tc, healthz_503_when_heartbeat_stale);
    tcase_add_test(tc, readyz_follows_the_callback);
    tcase_add_test(tc, readyz_without_callback_is_ready);
    tcase_add_test(tc, metrics_rendered_after_collect);
    tcase_add_test(tc, metrics_404_without_registry);
    tcase_add_test(tc, metrics_flood_does_not_hold_probes);
    suite_add_tcase(s, tc);

    tc = tcase_create("http");
    tcase_add_test(tc, unknown_paths_404);
    tcase_add_test(tc, other_methods_405);
    tcase_add_test(tc, head_like_get);
    tcase_add_test(tc, request_body_413);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, idle_connection_closed);
    tcase_add_test(tc, request_deadline_counts_from_accept);
    tcase_add_test(tc, keepalive_reused_then_closed);
    tcase_add_test(tc, slow_reader_cut_off_at_the_response_deadline);
    tcase_add_test(tc, per_ip_limit_evicts_the_address_own_oldest);
    tcase_add_test(tc, full_pool_evicts_the_oldest_waiting);
    suite_add_tcase(s, tc);

    tc = tcase_create("listen");
    tcase_add_test(tc, tiny_connection_limit_still_serves);
    tcase_add_test(tc, address_in_use_is_a_clear_error);
    tcase_add_loop_test(tc, invalid_addresses_rejected, 0,
                        sizeof(bad_listens) / sizeof(bad_listens[0]));
    tcase_add_test(tc, ipv6_loopback);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
