/*
 * connect_check: check --connect, one probe per target, all at once.
 */
#include "connect_check.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "redis_conn.h"

/* Redis answers a PING on a healthy network in milliseconds; the store waits as long. */
#define CONNECT_REDIS_TIMEOUT_MS 5000
/*
 * A sink with no timeout of its own (Kafka's metadata request) gets this
 * much; one with a timeout (the webhook's timeout_s) keeps the shorter.
 */
#define CONNECT_SINK_TIMEOUT_MS 10000
/*
 * Past every target's own bound, how long the threads still get to return
 * (a library that overruns its timeout, librdkafka tearing a producer
 * down) before they are reported as failed and left behind.
 */
#define CONNECT_GRACE_MS 3000
/* Requests in flight at once: more sources are probed in waves, as the engine's slots do. */
#define CONNECT_MAX_TRANSFERS 32
/* One line's message. */
#define CONNECT_MSG_MAX 512

typedef enum target_status {
    TARGET_OK = 0,
    TARGET_FAILED,
    TARGET_SKIPPED, /* nothing to try: a module type without probe() */
} target_status_t;

typedef struct target target_t;

/* One line of the report. */
struct target {
    char label[CONF_NAME_MAX + 16]; /* "redis", "sink NAME", "source NAME" */
    target_status_t status;
    char msg[CONNECT_MSG_MAX];
    bool done; /* under the report's lock for the threads' targets */
    /* A thread's work: fills status and msg. */
    void (*run)(target_t *t);
    const conf_t *conf;
    const conf_sink_t *sink;
    /* A source's request on the main loop. */
    const conf_source_t *source;
    http_client_t *http;
    void *poll;
    provider_request_t *req;
    http_response_t resp;
    size_t records;
};

typedef struct report {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a thread's target is done */
    target_t *targets;
    loop_t *loop;
} report_t;

typedef struct thread_arg {
    report_t *r;
    target_t *t;
} thread_arg_t;

/* ---- Redis and the sinks, each on a thread of its own ---- */

static void run_redis(target_t *t)
{
    redis_target_t rt;

    if (redis_url_parse(t->conf->redis_url, &rt, t->msg, sizeof(t->msg)) != 0) {
        t->status = TARGET_FAILED;
        return;
    }
    t->status = redis_probe(&rt, CONNECT_REDIS_TIMEOUT_MS, t->msg, sizeof(t->msg)) == 0
                    ? TARGET_OK
                    : TARGET_FAILED;
    redis_target_clear(&rt);
}

static void run_sink(target_t *t)
{
    const conf_sink_t *cs = t->sink;
    sink_host_t host = {
        .name = cs->name, .redis_url = t->conf->redis_url, .redis_prefix = t->conf->redis_prefix};

    if (cs->type->probe == NULL) {
        t->status = TARGET_SKIPPED;
        snprintf(t->msg, sizeof(t->msg), "the %s type has no probe: nothing tried", cs->type->name);
        return;
    }
    t->status = cs->type->probe(cs->cfg, &host, clock_mono_ms() + CONNECT_SINK_TIMEOUT_MS, t->msg,
                                sizeof(t->msg)) == 0
                    ? TARGET_OK
                    : TARGET_FAILED;
}

/* Thread: its own; touches its target only, then says so under the lock. */
static void *thread_main(void *opaque)
{
    thread_arg_t *a = opaque;

    a->t->run(a->t);
    pthread_mutex_lock(&a->r->lock);
    a->t->done = true;
    pthread_cond_signal(&a->r->changed);
    pthread_mutex_unlock(&a->r->lock);
    return NULL;
}

/* ---- the sources, on one event loop ---- */

/* Counts the records of page one; nothing is kept. */
static int count_record(void *opaque, const char *session_id, size_t id_len, const char *raw_status,
                        size_t status_len, const char *text, size_t len, char *err, size_t errlen)
{
    target_t *t = opaque;

    (void)session_id, (void)id_len, (void)raw_status, (void)status_len, (void)text, (void)len;
    (void)err, (void)errlen;
    t->records++;
    return 0;
}

static void source_fail(target_t *t, const char *why)
{
    t->status = TARGET_FAILED;
    snprintf(t->msg, sizeof(t->msg), "%s", why);
    t->done = true;
}

/* The request ended (loop thread). One attempt: a retry would hide what the operator asks about. */
static void on_page(void *opaque, int rc, const char *err)
{
    target_t *t = opaque;
    char herr[256];
    long status = t->resp.status;

    t->done = true;
    if (rc != 0) {
        t->status = TARGET_FAILED;
        snprintf(t->msg, sizeof(t->msg), "%s on page 1 (%s)", err ? err : "transfer failed",
                 t->req->label);
    } else if (status < 200 || status > 299) {
        t->status = TARGET_FAILED;
        snprintf(t->msg, sizeof(t->msg), "HTTP %ld on page 1 (%s)", status, t->req->label);
    } else if (t->source->provider->handle_page(t->poll, &t->resp, count_record, t, herr,
                                                sizeof(herr)) != 0) {
        t->status = TARGET_FAILED;
        snprintf(t->msg, sizeof(t->msg), "HTTP %ld, but page 1 is not usable: %s (%s)", status,
                 herr, t->req->label);
    } else {
        t->status = TARGET_OK;
        snprintf(t->msg, sizeof(t->msg), "HTTP %ld, %zu record%s on page 1 (%s)", status,
                 t->records, t->records == 1 ? "" : "s", t->req->label);
    }
}

/* Builds the source's first request and starts it; failures end the target at once. */
static void source_start(target_t *t, http_multi_t *m)
{
    const conf_source_t *cs = t->source;
    const char *hdrs[HTTP_MAX_REQUEST_HEADERS];
    char err[256];
    http_options_t ho = {.timeout_ms = cs->timeout_s * 1000L,
                         .connect_timeout_ms = cs->timeout_s * 1000L,
                         .max_body = HTTP_DEFAULT_MAX_BODY};

    t->resp.retry_after_s = -1;
    if (!(t->http = http_client_new(&ho, err, sizeof(err))) ||
        !(t->req = calloc(1, sizeof(*t->req))) ||
        !(t->poll = cs->provider->poll_begin(cs, (int64_t)time(NULL)))) {
        source_fail(t, t->http ? "out of memory" : err);
        return;
    }
    int more = cs->provider->next_request(t->poll, t->req, err, sizeof(err));
    if (more <= 0) {
        source_fail(t, more == 0 ? "the provider made no request" : err);
        return;
    }
    for (size_t i = 0; i < t->req->nheaders; i++)
        hdrs[i] = t->req->headers[i];
    if (http_start(m, t->http, t->req->url, hdrs, t->req->nheaders, &t->resp, on_page, t, err,
                   sizeof(err)) != 0)
        source_fail(t, err);
}

static void source_release(target_t *t)
{
    if (t->poll)
        t->source->provider->poll_free(t->poll);
    http_client_free(t->http);
    http_response_reset(&t->resp);
    free(t->req);
}

/*
 * Serves the sources' requests until each ended or its timeout passed
 * (libcurl enforces the timeout: a request always ends), at most
 * CONNECT_MAX_TRANSFERS at a time.
 */
static void run_sources(report_t *r, target_t *first, size_t n, int64_t deadline_ms)
{
    char err[256];
    http_multi_t *m = http_multi_new(loop_sink_api(r->loop), err, sizeof(err));
    size_t next = 0;

    if (m == NULL) {
        for (size_t i = 0; i < n; i++)
            source_fail(&first[i], err);
        return;
    }
    for (;;) {
        while (next < n && http_multi_active(m) < CONNECT_MAX_TRANSFERS)
            source_start(&first[next++], m);
        size_t open = 0;
        for (size_t i = 0; i < next; i++)
            open += !first[i].done;
        if ((open == 0 && next == n) || clock_mono_ms() >= deadline_ms)
            break;
        loop_run_for(r->loop, (int)(deadline_ms - clock_mono_ms()));
    }
    for (size_t i = 0; i < n; i++) {
        if (!first[i].done)
            source_fail(&first[i], "no answer within the source's timeout_s");
        /* The clients first: a transfer still attached to the multi goes with its client. */
        source_release(&first[i]);
    }
    http_multi_free(m);
}

/* ---- the report ---- */

static const char *status_word(target_status_t s)
{
    return s == TARGET_OK ? "ok" : s == TARGET_SKIPPED ? "skipped" : "FAILED";
}

/*
 * Waits for the threads of targets[0..nthreads) until each is done or
 * deadline_ms came. A thread still running is detached and marked late:
 * its target stays its own (only the flag is read here). Returns whether
 * any was left behind.
 */
static bool wait_threads(report_t *r, size_t nthreads, pthread_t *threads, bool *joinable,
                         bool *late, int64_t deadline_ms)
{
    struct timespec until = {.tv_sec = deadline_ms / 1000,
                             .tv_nsec = (deadline_ms % 1000) * 1000000};
    bool abandoned = false;

    pthread_mutex_lock(&r->lock);
    for (;;) {
        size_t open = 0;
        for (size_t i = 0; i < nthreads; i++)
            open += !r->targets[i].done;
        if (open == 0 || pthread_cond_timedwait(&r->changed, &r->lock, &until) != 0)
            break;
    }
    for (size_t i = 0; i < nthreads; i++) {
        late[i] = !r->targets[i].done;
        if (late[i]) {
            pthread_detach(threads[i]);
            joinable[i] = false;
            abandoned = true;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return abandoned;
}

/* One aligned line per target; 1 when any failed, 0 otherwise. */
static int print_report(const report_t *r, size_t n, const bool *late, size_t nthreads, int bound_s,
                        FILE *out)
{
    size_t width = 0;
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        size_t w = strlen(r->targets[i].label);
        width = w > width ? w : width;
    }
    for (size_t i = 0; i < n; i++) {
        const target_t *t = &r->targets[i];
        if (i < nthreads && late[i]) {
            fprintf(out, "%-*s  %-7s no answer within %d s\n", (int)width, t->label,
                    status_word(TARGET_FAILED), bound_s);
            rc = 1;
            continue;
        }
        fprintf(out, "%-*s  %-7s %s\n", (int)width, t->label, status_word(t->status), t->msg);
        if (t->status == TARGET_FAILED)
            rc = 1;
    }
    return rc;
}

int connect_check_run(const conf_t *conf, FILE *out)
{
    size_t nthreads = 1 + conf->nsinks, n = nthreads + conf->nsources;
    report_t r = {0};
    pthread_condattr_t ca;
    pthread_t *threads = calloc(nthreads, sizeof(pthread_t));
    thread_arg_t *args = calloc(nthreads, sizeof(thread_arg_t));
    bool *joinable = calloc(nthreads, sizeof(bool)), *late = calloc(nthreads, sizeof(bool));
    char err[256];
    int longest = CONNECT_SINK_TIMEOUT_MS > CONNECT_REDIS_TIMEOUT_MS ? CONNECT_SINK_TIMEOUT_MS
                                                                     : CONNECT_REDIS_TIMEOUT_MS;
    int rc;

    r.targets = calloc(n, sizeof(target_t));
    bool allocated = threads && args && joinable && late && r.targets;
    if (!allocated || !(r.loop = loop_new(err, sizeof(err)))) {
        fprintf(out, "check --connect: %s\n", allocated ? err : "out of memory");
        free(threads), free(args), free(joinable), free(late), free(r.targets);
        return 1;
    }
    pthread_mutex_init(&r.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.changed, &ca);
    pthread_condattr_destroy(&ca);

    snprintf(r.targets[0].label, sizeof(r.targets[0].label), "redis");
    r.targets[0].run = run_redis;
    for (size_t i = 0; i < conf->nsinks; i++) {
        target_t *t = &r.targets[1 + i];
        snprintf(t->label, sizeof(t->label), "sink %s", conf->sinks[i].name);
        t->sink = &conf->sinks[i];
        t->run = run_sink;
    }
    for (size_t i = 0; i < conf->nsources; i++) {
        target_t *t = &r.targets[nthreads + i];
        snprintf(t->label, sizeof(t->label), "source %s", conf->sources[i].name);
        t->source = &conf->sources[i];
        if (conf->sources[i].timeout_s * 1000 > longest)
            longest = conf->sources[i].timeout_s * 1000;
    }
    for (size_t i = 0; i < n; i++)
        r.targets[i].conf = conf;

    int64_t deadline = clock_mono_ms() + longest + CONNECT_GRACE_MS;
    for (size_t i = 0; i < nthreads; i++) {
        args[i] = (thread_arg_t){.r = &r, .t = &r.targets[i]};
        if (pthread_create(&threads[i], NULL, thread_main, &args[i]) == 0) {
            joinable[i] = true;
        } else {
            r.targets[i].status = TARGET_FAILED;
            snprintf(r.targets[i].msg, sizeof(r.targets[i].msg), "cannot start a thread");
            r.targets[i].done = true;
        }
    }
    run_sources(&r, &r.targets[nthreads], conf->nsources, deadline - CONNECT_GRACE_MS);

    bool abandoned = wait_threads(&r, nthreads, threads, joinable, late, deadline);
    rc = print_report(&r, n, late, nthreads, (longest + CONNECT_GRACE_MS) / 1000, out);
    fflush(out);
    for (size_t i = 0; i < nthreads; i++) {
        if (joinable[i])
            pthread_join(threads[i], NULL);
    }
    if (abandoned)
        return rc; /* the process exits next; a late thread still uses its target and the lock */
    pthread_cond_destroy(&r.changed);
    pthread_mutex_destroy(&r.lock);
    loop_free(r.loop);
    free(r.targets);
    free(late);
    free(joinable);
    free(args);
    free(threads);
    return rc;
}
