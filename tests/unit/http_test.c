/*
 * The HTTP client against a real loopback server (libmicrohttpd) that
 * answers from a script: retries, Retry-After, bounds, keep-alive.
 */
#include <check.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "loop.h"

typedef struct step {
    unsigned status;
    const char *retry_after;
    size_t body_len; /* 0: a small JSON body */
} step_t;

static struct {
    const step_t *steps;
    size_t nsteps, next;
    int connections;
    char last_key[128];
} srv;

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    static int first_call_marker;
    /* Answering on the first call, before MHD knows the request has no
     * body, makes it close the connection: wait for the second call. */
    if (*con_cls == NULL) {
        *con_cls = &first_call_marker;
        return MHD_YES;
    }
    const step_t *s = srv.next < srv.nsteps ? &srv.steps[srv.next] : &srv.steps[srv.nsteps - 1];
    srv.next++;
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    snprintf(srv.last_key, sizeof(srv.last_key), "%s", key ? key : "");
    struct MHD_Response *r;
    if (s->body_len) {
        char *body = malloc(s->body_len);
        memset(body, 'x', s->body_len);
        r = MHD_create_response_from_buffer(s->body_len, body, MHD_RESPMEM_MUST_FREE);
    } else {
        static const char ok[] = "{\"ok\":true}";
        r = MHD_create_response_from_buffer(sizeof(ok) - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
    }
    if (s->retry_after)
        MHD_add_response_header(r, "Retry-After", s->retry_after);
    enum MHD_Result ret = MHD_queue_response(c, s->status, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        srv.connections++;
}

static struct MHD_Daemon *daemon_;
/* One multi handle per test, as the engine has one: it holds the
 * connection cache that keeps provider connections alive. */
static http_multi_t *multi;
static loop_t *loop;
static char base_url[64];

static void start(const step_t *steps, size_t n)
{
    memset(&srv, 0, sizeof(srv));
    srv.steps = steps;
    srv.nsteps = n;
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler, NULL,
                               MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
    ck_assert_ptr_nonnull(daemon_);
    char err[256];
    if (loop == NULL)
        loop = loop_new(err, sizeof(err));
    ck_assert_ptr_nonnull(loop);
    if (multi == NULL)
        multi = http_multi_new(loop_sink_api(loop), err, sizeof(err));
    ck_assert_ptr_nonnull(multi);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%u/x", info->port);
}

static void stop(void)
{
    MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    http_multi_free(multi);
    multi = NULL;
    loop_free(loop);
    loop = NULL;
}

static const http_retry_policy_t fast = {
    .max_attempts = 4,
    .backoff = {.base_s = 0.01, .factor = 2, .cap_s = 0.05, .jitter_min = 0.5, .jitter_max = 1},
    .max_retry_after_s = 5};

static http_client_t *client(size_t max_body)
{
    char err[256];
    http_options_t o = {.timeout_ms = 5000, .max_body = max_body};
    http_client_t *c = http_client_new(&o, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    return c;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct done {
    int called, rc;
    char err[256];
};

/* Called from the loop, run on the test's thread. */
static void on_done(void *opaque, int rc, const char *err)
{
    struct done *d = opaque;
    d->called++;
    d->rc = rc;
    snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
}

/*
 * The engine's way of fetching, in miniature: start a transfer on a multi
 * handle, run it, let http_retry_decide() say whether to retry and after
 * how long. Returns 0 on a 2xx response.
 */
static int fetch_retry(http_client_t *c, const http_retry_policy_t *p, const char *url,
                       const char *const *hdr, size_t nhdr, http_response_t *r, int *attempts,
                       char *err, size_t errlen)
{
    http_multi_t *m = multi;
    int rc = -1;
    for (int attempt = 1;; attempt++) {
        struct done d = {0};
        double delay = 0;
        ck_assert_int_eq(http_start(m, c, url, hdr, nhdr, r, on_done, &d, err, errlen), 0);
        while (!d.called)
            loop_run_for(loop, 100);
        snprintf(err, errlen, "%s", d.err);
        http_retry_t what = http_retry_decide(p, attempt, d.rc, r, &delay, err, errlen);
        if (attempts)
            *attempts = attempt;
        if (what == HTTP_RETRY_DONE)
            rc = 0;
        if (what != HTTP_RETRY_AGAIN)
            break;
        struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
    }
    return rc;
}

START_TEST(retries_5xx_then_succeeds_on_one_connection)
{
    static const step_t steps[] = {{503, NULL, 0}, {500, NULL, 0}, {200, NULL, 0}};
    start(steps, 3);
    http_client_t *c = client(0);
    http_response_t r = {.retry_after_s = -1};
    const char *hdr[] = {"x-api-key: k1"};
    char err[256];
    int attempts = 0;
    ck_assert_int_eq(fetch_retry(c, &fast, base_url, hdr, 1, &r, &attempts, err, sizeof(err)), 0);
    ck_assert_int_eq(attempts, 3);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"ok\":true}");
    ck_assert_str_eq(srv.last_key, "k1");
    /* Further requests reuse the kept-alive connection. */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(fetch_retry(c, &fast, base_url, hdr, 1, &r, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(srv.connections, 1);
    http_response_reset(&r);
    http_client_free(c);
    stop();
}
END_TEST

START_TEST(client_errors_are_not_retried)
{
    static const step_t steps[] = {{404, NULL, 0}, {200, NULL, 0}};
    start(steps, 2);
    http_client_t *c = client(0);
    http_response_t r = {.retry_after_s = -1};
    char err[256];
    int attempts = 0;
    ck_assert_int_eq(fetch_retry(c, &fast, base_url, NULL, 0, &r, &attempts, err, sizeof(err)), -1);
    ck_assert_int_eq(attempts, 1);
    ck_assert_ptr_nonnull(strstr(err, "404"));
    http_response_reset(&r);
    http_client_free(c);
    stop();
}
END_TEST

START_TEST(gives_up_after_max_attempts)
{
    static const step_t steps[] = {{502, NULL, 0}};
    start(steps, 1);
    http_client_t *c = client(0);
    http_response_t r = {.retry_after_s = -1};
    char err[256];
    int attempts = 0;
    ck_assert_int_eq(fetch_retry(c, &fast, base_url, NULL, 0, &r, &attempts, err, sizeof(err)), -1);
    ck_assert_int_eq(attempts, 4);
    ck_assert_uint_eq(srv.next, 4);
    http_response_reset(&r);
    http_client_free(c);
    stop();
}
END_TEST

START_TEST(retry_after_is_honoured_and_bounded)
{
    static const step_t steps[] = {{429, "1", 0}, {200, NULL, 0}};
    start(steps, 2);
    http_client_t *c = client(0);
    http_response_t r = {.retry_after_s = -1};
    char err[256];
    double t0 = now_s();
    ck_assert_int_eq(fetch_retry(c, &fast, base_url, NULL, 0, &r, NULL, err, sizeof(err)), 0);
    /* The policy's own backoff is 10 ms: only Retry-After explains 1 s. */
    ck_assert_double_ge(now_s() - t0, 0.95);
    stop();

    static const step_t too_long[] = {{503, "3600", 0}, {200, NULL, 0}};
    start(too_long, 2);
    int attempts = 0;
    ck_assert_int_eq(fetch_retry(c, &fast, base_url, NULL, 0, &r, &attempts, err, sizeof(err)), -1);
    ck_assert_int_eq(attempts, 1);
    ck_assert_ptr_nonnull(strstr(err, "Retry-After"));
    http_response_reset(&r);
    http_client_free(c);
    stop();
}
END_TEST

/* A response reads Retry-After by net_retry_after()'s rules, the webhook
 * sink's too: a fraction or "inf" is no delta-seconds, hence absent. */
START_TEST(retry_after_header_follows_the_shared_rules)
{
    static const struct {
        const char *line;
        double want;
    } cases[] = {
        {"Retry-After: 7\r\n", 7},
        {"retry-after:  120 \r\n", 120},
        {"Retry-After: 7.5\r\n", -1},
        {"Retry-After: inf\r\n", -1},
        {"Retry-After: 1e3\r\n", -1},
        {"Retry-After: soon\r\n", -1},
        {"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http_response_t r = {.retry_after_s = -1};
        http_response_add_header(&r, cases[i].line, strlen(cases[i].line));
        ck_assert_msg(r.retry_after_s == cases[i].want, "%s: %f", cases[i].line, r.retry_after_s);
        http_response_reset(&r);
    }
}
END_TEST

START_TEST(body_is_bounded)
{
    static const step_t steps[] = {{200, NULL, 100000}};
    start(steps, 1);
    http_client_t *c = client(4096);
    http_response_t r = {.retry_after_s = -1};
    char err[256];
    http_retry_policy_t one = fast;
    one.max_attempts = 1;
    ck_assert_int_eq(fetch_retry(c, &one, base_url, NULL, 0, &r, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "larger than 4096"));
    ck_assert_ptr_null(r.body);
    http_response_reset(&r);
    http_client_free(c);
    stop();
}
END_TEST

START_TEST(connection_refused_is_an_error)
{
    static const step_t unused[] = {{200, NULL, 0}};
    start(unused, 1); /* only for its multi handle: port 1 is the target */
    http_client_t *c = client(0);
    http_response_t r = {.retry_after_s = -1};
    char err[256];
    http_retry_policy_t once = fast;
    once.max_attempts = 2;
    int attempts = 0;
    /* Port 1 on loopback: nothing listens there. */
    ck_assert_int_eq(fetch_retry(c, &once, "http://127.0.0.1:1/x?secret=1", NULL, 0, &r, &attempts,
                                 err, sizeof(err)),
                     -1);
    ck_assert_int_eq(attempts, 2);
    ck_assert_ptr_null(strstr(err, "secret"));
    http_response_reset(&r);
    http_client_free(c);
    stop();
}
END_TEST

/* Backoff: exponential, capped, jittered in [d/2, d], raised to Retry-After. */
static const struct {
    int attempt;
    double retry_after, rnd, want;
} backoff[] = {
    {1, -1, 0.0, 0.25},  {1, -1, 0.999999, 0.5}, {2, -1, 0.0, 0.5},
    {3, -1, 0.0, 1.0},   {4, -1, 1.0, 4.0},      {10, -1, 1.0, 30.0},
    {30, -1, 0.0, 15.0}, {1, 7.0, 0.0, 7.0},     {6, 2.0, 1.0, 16.0},
};

START_TEST(backoff_table)
{
    double d = http_backoff_delay(&http_default_retry, backoff[_i].attempt, backoff[_i].retry_after,
                                  backoff[_i].rnd);
    ck_assert_double_eq_tol(d, backoff[_i].want, 1e-5);
}
END_TEST

START_TEST(retryable_statuses)
{
    ck_assert(http_status_retryable(429));
    ck_assert(http_status_retryable(500));
    ck_assert(http_status_retryable(503));
    ck_assert(!http_status_retryable(400));
    ck_assert(!http_status_retryable(401));
    ck_assert(!http_status_retryable(404));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, retries_5xx_then_succeeds_on_one_connection);
    tcase_add_test(tc, client_errors_are_not_retried);
    tcase_add_test(tc, gives_up_after_max_attempts);
    tcase_add_test(tc, retry_after_is_honoured_and_bounded);
    tcase_add_test(tc, retry_after_header_follows_the_shared_rules);
    tcase_add_test(tc, body_is_bounded);
    tcase_add_test(tc, connection_refused_is_an_error);
    tcase_add_loop_test(tc, backoff_table, 0, (int)(sizeof(backoff) / sizeof(backoff[0])));
    tcase_add_test(tc, retryable_statuses);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
