/*
 * sb-provider-sim: simulated provider "list sessions" APIs for end-to-end
 * tests and benchmarks of session-bridge.
 *
 * An HTTP server (libmicrohttpd) over a population of sessions that changes
 * only when the test says so ("ticks"), so a test knows exactly what
 * happened upstream and can compare the bridge's events with it. The API
 * shape is a dialect (sim_century.c, ...) over one generic population
 * (sim_pop.c): pending, active, completed, cancelled, gone.
 *
 * Run:
 *   sb-provider-sim --dialect century --api-key k --active 50 --completed 20 \
 *                   --seed 7 --port 0 --url-file /tmp/sim.url --truth /tmp/truth.jsonl &
 *   # /tmp/sim.url appears (atomically) once listening: http://127.0.0.1:PORT
 *   curl -H 'x-api-key: k' "$(cat /tmp/sim.url)/api/v1/smart-ia/sessions/in-progress?limit=10"
 *   curl -X POST "$(cat /tmp/sim.url)/_sim/tick?started=3&completed=2&vanished=1"
 *   curl "$(cat /tmp/sim.url)/_sim/state"
 * The bridge's base_url is then http://127.0.0.1:PORT/api/v1.
 *
 * Control API (outside the provider prefix, JSON answers):
 *   POST /_sim/tick?started=N&completed=N&vanished=N[&pending=N&activated=N
 *                  &cancelled=N&purged=N&transitions=0]
 *        one tick: new active sessions; active -> completed; active -> gone
 *        (and, for dialects that show them: new pending; pending -> active;
 *        pending|active -> cancelled; completed|cancelled -> gone). Sessions
 *        are picked with the seeded PRNG; counts are clamped to what exists.
 *        Answers the tick number, the applied counts and every transition.
 *   POST /_sim/fail?status=S&after=K&count=C&retry_after=R&body=B&path=P&delay_ms=D
 *        the next C provider requests (default 1) whose path contains P,
 *        after K more served normally, are answered with status S (default
 *        500; 0 closes the connection without an answer), a Retry-After: R
 *        header, and body B: json (an error object), malformed (the real
 *        page cut in half; status defaults to 200), html, empty. delay_ms
 *        sleeps first (it stalls the whole server: one thread).
 *   DELETE /_sim/fail   disarm.
 *   GET  /_sim/state    sessions per state, tick, clock, requests per path,
 *        the armed failure.
 *
 * Ground truth (--truth): one JSON line per transition, the initial
 * population being tick 0 (from "none"):
 *   {"tick":3,"session_id":"...","from":"active","to":"completed"}
 * written and flushed before the tick's HTTP answer is sent.
 *
 * Every request is served on one libmicrohttpd thread under one lock, so
 * ticks never interleave with a page. SIGTERM/SIGINT: exit 0.
 */
#include "sim.h"
#include "stack_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

/* Request bounds. MHD itself refuses request lines and headers beyond the
 * connection memory limit (414/431); the rest is checked here. */
#define MAX_CONN_MEMORY (32 * 1024)
#define MAX_PATH_LEN 1024
#define MAX_PARAMS 256      /* Century alone allows 3 x 30 repeated filters */
#define MAX_BODY_BYTES 4096 /* the control API takes no body */
#define MAX_CONNECTIONS 256
#define CONN_TIMEOUT_S 60
/* Per-path request counters; more distinct paths are counted as "other". */
#define MAX_COUNTED_PATHS 32
#define MAX_TICK_COUNT 1000000u
#define MAX_DELAY_MS 120000u
#define MAX_RETRY_AFTER 86400u
#define LOOP_WAKE_MS 500
#define DEFAULT_API_KEY "sim-api-key"

#define CONTENT_JSON "application/json; charset=utf-8"

static const struct sim_dialect *const dialects[] = {
    &sim_dialect_century,           &sim_dialect_quiz_jsonapi, &sim_dialect_proctorexam,
    &sim_dialect_smarterproctoring, &sim_dialect_rest,
};
#define NDIALECTS (sizeof(dialects) / sizeof(dialects[0]))

enum fail_body { BODY_JSON = 0, BODY_MALFORMED, BODY_HTML, BODY_EMPTY };
static const char *const fail_body_names[] = {"json", "malformed", "html", "empty"};

struct fail_rule {
    int armed;
    int status; /* 0: close the connection without an answer */
    uint64_t after;
    uint64_t remaining;
    int has_retry_after;
    uint64_t retry_after;
    enum fail_body body;
    char path[256]; /* substring of the request path; "" = any */
    uint64_t delay_ms;
};

struct path_count {
    char path[MAX_PATH_LEN + 1];
    uint64_t served;
    uint64_t injected;
};

struct sim {
    pthread_mutex_t lock;
    const struct sim_dialect *dialect;
    struct sim_pop *pop;
    struct sim_env env;
    const char *prefix;
    size_t prefix_len;
    struct fail_rule fail;
    struct path_count paths[MAX_COUNTED_PATHS];
    size_t npaths;
    uint64_t other_requests;   /* provider requests beyond MAX_COUNTED_PATHS */
    uint64_t unknown_requests; /* 404s */
    uint64_t provider_requests;
    uint64_t injected;
    int verbose;
};

/* What to do with a request once the lock is released. */
struct action {
    struct sim_response res;
    int close;         /* answer nothing, drop the connection */
    uint64_t delay_ms; /* before answering */
};

struct conn_state {
    size_t body_bytes;
};

struct params {
    struct sim_param p[MAX_PARAMS];
    size_t n;
    int overflow;
};

struct options {
    uint16_t port;
    const char *bind;
    const char *url_file;
    const char *pid_file;
    const char *dialect;
    const char *prefix;
    const char *api_key;
    const char *secret;
    uint32_t pending, active, completed;
    uint32_t users;
    uint64_t seed;
    const char *truth;
    int64_t clock_start_ms;
    int64_t tick_ms;
    int verbose;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    stop_requested = 1;
}

/* ---- responses ------------------------------------------------------- */

void sim_response_header(struct sim_response *r, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (r->nheaders == SIM_MAX_RESPONSE_HEADERS)
        return;
    snprintf(r->headers[r->nheaders].name, sizeof(r->headers[0].name), "%s", name);
    va_start(ap, fmt);
    vsnprintf(r->headers[r->nheaders].value, sizeof(r->headers[0].value), fmt, ap);
    va_end(ap);
    r->nheaders++;
}

const char *sim_request_header(const struct sim_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Status";
    }
}

void sim_error_body(struct sim_response *res, int status, const char *msg)
{
    res->status = status;
    res->content_type = CONTENT_JSON;
    sim_buf_free(&res->body);
    sim_buf_printf(&res->body, "{\"statusCode\":%d,\"error\":\"%s\",\"message\":", status,
                   reason_phrase(status));
    sim_buf_json_str(&res->body, msg);
    sim_buf_puts(&res->body, "}");
}

/* sim_error_body() with a formatted message of up to 511 bytes. */
__attribute__((format(printf, 3, 4))) static void json_error(struct sim_response *res, int status,
                                                             const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sim_error_body(res, status, msg);
}

/* ---- counters -------------------------------------------------------- */

static struct path_count *count_path(struct sim *sim, const char *path)
{
    for (size_t i = 0; i < sim->npaths; i++)
        if (strcmp(sim->paths[i].path, path) == 0)
            return &sim->paths[i];
    if (sim->npaths == MAX_COUNTED_PATHS)
        return NULL;
    snprintf(sim->paths[sim->npaths].path, sizeof(sim->paths[0].path), "%s", path);
    return &sim->paths[sim->npaths++];
}

static void write_counts(const struct sim *sim, struct sim_buf *b)
{
    sim_buf_puts(b, "{");
    for (unsigned s = SIM_PENDING; s < SIM_NSTATES; s++)
        sim_buf_printf(b, "%s\"%s\":%zu", s == SIM_PENDING ? "" : ",", sim_state_name(s),
                       sim_pop_count(sim->pop, SIM_MASK(s)));
    sim_buf_puts(b, "}");
}

/* ---- control API ----------------------------------------------------- */

static const struct {
    const char *name;
    size_t offset;
    enum sim_state to;
} tick_fields[] = {
    {"started", offsetof(struct sim_tick_spec, started), SIM_ACTIVE},
    {"pending", offsetof(struct sim_tick_spec, pending), SIM_PENDING},
    {"activated", offsetof(struct sim_tick_spec, activated), SIM_ACTIVE},
    {"completed", offsetof(struct sim_tick_spec, completed), SIM_COMPLETED},
    {"cancelled", offsetof(struct sim_tick_spec, cancelled), SIM_CANCELLED},
    {"vanished", offsetof(struct sim_tick_spec, vanished), SIM_GONE},
    {"purged", offsetof(struct sim_tick_spec, purged), SIM_GONE},
};
#define NTICK_FIELDS (sizeof(tick_fields) / sizeof(tick_fields[0]))

static void control_tick(struct sim *sim, const struct params *ps, struct sim_response *res)
{
    struct sim_tick_spec spec;
    struct sim_transition *tr;
    size_t ntr;
    int list = 1;
    char err[256];
    struct sim_buf *b = &res->body;

    memset(&spec, 0, sizeof(spec));
    for (size_t i = 0; i < ps->n; i++) {
        const char *k = ps->p[i].key, *v = ps->p[i].value;
        uint64_t n;
        size_t f;

        if (strcmp(k, "transitions") == 0) {
            if (sim_parse_u64(v, 0, 1, &n) < 0) {
                json_error(res, 400, "transitions must be 0 or 1");
                return;
            }
            list = (int)n;
            continue;
        }
        for (f = 0; f < NTICK_FIELDS; f++)
            if (strcmp(k, tick_fields[f].name) == 0)
                break;
        if (f == NTICK_FIELDS) {
            json_error(res, 400, "unknown tick parameter '%s'", k);
            return;
        }
        if (sim_parse_u64(v, 0, MAX_TICK_COUNT, &n) < 0) {
            json_error(res, 400, "%s must be an integer from 0 to %u", k, MAX_TICK_COUNT);
            return;
        }
        if (n && !(sim->dialect->states & SIM_MASK(tick_fields[f].to))) {
            json_error(res, 400, "dialect %s cannot show %s sessions (%s)", sim->dialect->name,
                       sim_state_name(tick_fields[f].to), k);
            return;
        }
        *(uint32_t *)((char *)&spec + tick_fields[f].offset) = (uint32_t)n;
    }
    if (sim_pop_tick(sim->pop, &spec, &tr, &ntr, err, sizeof(err)) < 0) {
        json_error(res, 409, "%s", err);
        return;
    }

    res->status = 200;
    res->content_type = CONTENT_JSON;
    sim_buf_printf(b, "{\"tick\":%llu,\"now\":", (unsigned long long)sim_pop_tick_no(sim->pop));
    sim_buf_json_time(b, sim_pop_now(sim->pop));
    sim_buf_puts(b, ",\"applied\":{");
    for (size_t f = 0; f < NTICK_FIELDS; f++)
        sim_buf_printf(b, "%s\"%s\":%u", f ? "," : "", tick_fields[f].name,
                       *(const uint32_t *)((const char *)&spec + tick_fields[f].offset));
    sim_buf_puts(b, "},\"sessions\":");
    write_counts(sim, b);
    if (list) {
        sim_buf_puts(b, ",\"transitions\":[");
        for (size_t i = 0; i < ntr; i++)
            sim_buf_printf(b, "%s{\"session_id\":\"%s\",\"from\":\"%s\",\"to\":\"%s\"}",
                           i ? "," : "", sim_pop_at(sim->pop, tr[i].pos)->id,
                           sim_state_name(tr[i].from), sim_state_name(tr[i].to));
        sim_buf_puts(b, "]");
    }
    sim_buf_puts(b, "}");
    free(tr);
    if (sim->verbose)
        fprintf(stderr, "sb-provider-sim: tick %llu: %zu transitions\n",
                (unsigned long long)sim_pop_tick_no(sim->pop), ntr);
}

static void write_fail(const struct fail_rule *f, struct sim_buf *b)
{
    if (!f->armed) {
        sim_buf_puts(b, "{\"armed\":false}");
        return;
    }
    sim_buf_printf(b,
                   "{\"armed\":true,\"status\":%d,\"after\":%llu,\"remaining\":%llu,"
                   "\"body\":\"%s\",\"delay_ms\":%llu,\"path\":",
                   f->status, (unsigned long long)f->after, (unsigned long long)f->remaining,
                   fail_body_names[f->body], (unsigned long long)f->delay_ms);
    sim_buf_json_str(b, f->path);
    if (f->has_retry_after)
        sim_buf_printf(b, ",\"retry_after\":%llu", (unsigned long long)f->retry_after);
    sim_buf_puts(b, "}");
}

static void control_fail(struct sim *sim, const char *method, const struct params *ps,
                         struct sim_response *res)
{
    struct fail_rule f;
    int has_status = 0;
    uint64_t n;

    memset(&f, 0, sizeof(f));
    f.remaining = 1;
    if (strcmp(method, "DELETE") == 0) {
        if (ps->n) {
            json_error(res, 400, "DELETE /_sim/fail takes no parameters");
            return;
        }
    } else {
        for (size_t i = 0; i < ps->n; i++) {
            const char *k = ps->p[i].key, *v = ps->p[i].value;

            if (strcmp(k, "status") == 0) {
                if (sim_parse_u64(v, 0, 599, &n) < 0 || (n && n < 100)) {
                    json_error(res, 400, "status must be 0 or 100..599");
                    return;
                }
                f.status = (int)n;
                has_status = 1;
            } else if (strcmp(k, "after") == 0) {
                if (sim_parse_u64(v, 0, UINT32_MAX, &f.after) < 0) {
                    json_error(res, 400, "after must be a non-negative integer");
                    return;
                }
            } else if (strcmp(k, "count") == 0) {
                if (sim_parse_u64(v, 0, UINT32_MAX, &f.remaining) < 0) {
                    json_error(res, 400, "count must be a non-negative integer");
                    return;
                }
            } else if (strcmp(k, "retry_after") == 0) {
                if (sim_parse_u64(v, 0, MAX_RETRY_AFTER, &f.retry_after) < 0) {
                    json_error(res, 400, "retry_after must be 0..%u seconds", MAX_RETRY_AFTER);
                    return;
                }
                f.has_retry_after = 1;
            } else if (strcmp(k, "delay_ms") == 0) {
                if (sim_parse_u64(v, 0, MAX_DELAY_MS, &f.delay_ms) < 0) {
                    json_error(res, 400, "delay_ms must be 0..%u", MAX_DELAY_MS);
                    return;
                }
            } else if (strcmp(k, "body") == 0) {
                size_t i2;
                for (i2 = 0; i2 < sizeof(fail_body_names) / sizeof(fail_body_names[0]); i2++)
                    if (strcmp(v, fail_body_names[i2]) == 0)
                        break;
                if (i2 == sizeof(fail_body_names) / sizeof(fail_body_names[0])) {
                    json_error(res, 400, "body must be json, malformed, html or empty");
                    return;
                }
                f.body = (enum fail_body)i2;
            } else if (strcmp(k, "path") == 0) {
                if (strlen(v) >= sizeof(f.path)) {
                    json_error(res, 400, "path is too long");
                    return;
                }
                snprintf(f.path, sizeof(f.path), "%s", v);
            } else {
                {
                    json_error(res, 400, "unknown fail parameter '%s'", k);
                    return;
                }
            }
        }
        if (!has_status)
            f.status = f.body == BODY_MALFORMED || f.delay_ms ? 200 : 500;
        f.armed = f.remaining > 0;
    }
    sim->fail = f;
    res->status = 200;
    res->content_type = CONTENT_JSON;
    write_fail(&sim->fail, &res->body);
}

static void control_state(struct sim *sim, struct sim_response *res)
{
    struct sim_buf *b = &res->body;

    res->status = 200;
    res->content_type = CONTENT_JSON;
    sim_buf_puts(b, "{\"dialect\":");
    sim_buf_json_str(b, sim->dialect->name);
    sim_buf_puts(b, ",\"prefix\":");
    sim_buf_json_str(b, sim->prefix);
    sim_buf_printf(b, ",\"tick\":%llu,\"now\":", (unsigned long long)sim_pop_tick_no(sim->pop));
    sim_buf_json_time(b, sim_pop_now(sim->pop));
    sim_buf_puts(b, ",\"sessions\":");
    write_counts(sim, b);
    sim_buf_printf(b,
                   ",\"known\":%zu,\"requests\":{\"total\":%llu,\"injected\":%llu,"
                   "\"not_found\":%llu,\"other_paths\":%llu,\"paths\":{",
                   sim_pop_size(sim->pop), (unsigned long long)sim->provider_requests,
                   (unsigned long long)sim->injected, (unsigned long long)sim->unknown_requests,
                   (unsigned long long)sim->other_requests);
    for (size_t i = 0; i < sim->npaths; i++) {
        sim_buf_puts(b, i ? "," : "");
        sim_buf_json_str(b, sim->paths[i].path);
        sim_buf_printf(b, ":{\"served\":%llu,\"injected\":%llu}",
                       (unsigned long long)sim->paths[i].served,
                       (unsigned long long)sim->paths[i].injected);
    }
    sim_buf_puts(b, "}},\"fail\":");
    write_fail(&sim->fail, b);
    sim_buf_puts(b, "}");
}

static void control(struct sim *sim, const char *method, const char *path, const struct params *ps,
                    struct sim_response *res)
{
    if (strcmp(path, "/_sim/tick") == 0) {
        if (strcmp(method, "POST") != 0) {
            sim_response_header(res, "Allow", "POST");
            {
                json_error(res, 405, "use POST /_sim/tick");
                return;
            }
        }
        {
            control_tick(sim, ps, res);
            return;
        }
    }
    if (strcmp(path, "/_sim/fail") == 0) {
        if (strcmp(method, "POST") != 0 && strcmp(method, "DELETE") != 0) {
            sim_response_header(res, "Allow", "POST, DELETE");
            {
                json_error(res, 405, "use POST or DELETE /_sim/fail");
                return;
            }
        }
        {
            control_fail(sim, method, ps, res);
            return;
        }
    }
    if (strcmp(path, "/_sim/state") == 0) {
        if (strcmp(method, "GET") != 0) {
            sim_response_header(res, "Allow", "GET");
            {
                json_error(res, 405, "use GET /_sim/state");
                return;
            }
        }
        {
            control_state(sim, res);
            return;
        }
    }
    json_error(res, 404,
               "control endpoints: POST /_sim/tick, POST|DELETE /_sim/fail, "
               "GET /_sim/state");
}

/* ---- provider requests ----------------------------------------------- */

static void provider(struct sim *sim, struct MHD_Connection *conn, const char *method,
                     const char *url, const char *sub, const struct params *ps, struct action *act)
{
    struct sim_request req = {
        .method = method, .path = sub, .params = ps->p, .nparams = ps->n, .conn = conn};
    struct path_count *pc = count_path(sim, url);
    struct fail_rule *f = &sim->fail;
    int inject = 0;

    sim->provider_requests++;
    if (pc)
        pc->served++;
    else
        sim->other_requests++;
    if (f->armed && (!f->path[0] || strstr(url, f->path))) {
        if (f->after) {
            f->after--;
        } else {
            inject = 1;
            f->armed = --f->remaining > 0;
            sim->injected++;
            if (pc)
                pc->injected++;
        }
    }
    if (!inject) {
        sim->dialect->handle(&sim->env, &req, &act->res);
        return;
    }

    act->delay_ms = f->delay_ms;
    if (f->status == 0) {
        act->close = 1;
        return;
    }
    if (f->has_retry_after)
        sim_response_header(&act->res, "Retry-After", "%llu", (unsigned long long)f->retry_after);
    switch (f->body) {
    case BODY_MALFORMED:
        sim->dialect->handle(&sim->env, &req, &act->res);
        act->res.status = f->status;
        /* Cut the page mid-way, like a connection dropped by a proxy. */
        act->res.body.len /= 2;
        if (act->res.body.data)
            act->res.body.data[act->res.body.len] = '\0';
        break;
    case BODY_HTML:
        act->res.status = f->status;
        act->res.content_type = "text/html";
        sim_buf_printf(&act->res.body,
                       "<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1>"
                       "</center></body></html>\n",
                       f->status, reason_phrase(f->status), f->status, reason_phrase(f->status));
        break;
    case BODY_EMPTY:
        act->res.status = f->status;
        act->res.content_type = CONTENT_JSON;
        break;
    default:
        if (f->status == 200)
            sim->dialect->handle(&sim->env, &req, &act->res);
        else
            json_error(&act->res, f->status, "injected by sb-provider-sim");
        break;
    }
}

/* ---- libmicrohttpd glue ---------------------------------------------- */

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct params *ps = cls;

    if (ps->n == MAX_PARAMS) {
        ps->overflow = 1;
        return MHD_NO;
    }
    ps->p[ps->n].key = key;
    ps->p[ps->n].value = value ? value : "";
    ps->n++;
    return MHD_YES;
}

static void dispatch(struct sim *sim, struct MHD_Connection *conn, const char *method,
                     const char *url, const struct params *ps, struct action *act)
{
    const char *sub;

    if (strncmp(url, "/_sim/", 6) == 0) {
        control(sim, method, url, ps, &act->res);
        return;
    }
    if (strncmp(url, sim->prefix, sim->prefix_len) == 0 &&
        (url[sim->prefix_len] == '/' || url[sim->prefix_len] == '\0')) {
        sub = url + sim->prefix_len;
        if (sim->dialect->route(sub)) {
            provider(sim, conn, method, url, sub, ps, act);
            return;
        }
    }
    sim->unknown_requests++;
    json_error(&act->res, 404, "no such endpoint: %s", url);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct sim_response *r)
{
    struct MHD_Response *mr;
    enum MHD_Result ok;

    if (r->body.oom) {
        sim_buf_free(&r->body);
        r->status = 500;
    }
    if (r->body.len) {
        mr = MHD_create_response_from_buffer(r->body.len, r->body.data, MHD_RESPMEM_MUST_FREE);
        if (mr)
            sim_buf_init(&r->body); /* the buffer belongs to MHD now */
    } else {
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!mr)
        return MHD_NO;
    if (r->content_type)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    for (size_t i = 0; i < r->nheaders; i++)
        MHD_add_response_header(mr, r->headers[i].name, r->headers[i].value);
    ok = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ok;
}

/* Called on the MHD thread, once per request chunk; see libmicrohttpd's
 * MHD_AccessHandlerCallback. The first call only sets up *con_cls. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct sim *sim = cls;
    struct conn_state *cs = *con_cls;
    struct params *ps;
    struct action act;
    enum MHD_Result ok;

    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return MHD_NO;
        *con_cls = cs;
        return MHD_YES;
    }
    if (*upload_data_size) {
        cs->body_bytes += *upload_data_size;
        *upload_data_size = 0;
        return MHD_YES;
    }

    memset(&act, 0, sizeof(act));
    sim_buf_init(&act.res.body);
    ps = calloc(1, sizeof(*ps));
    if (!ps)
        return MHD_NO;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_param, ps);
    if (cs->body_bytes > MAX_BODY_BYTES) {
        json_error(&act.res, 413, "request bodies are limited to %d bytes", MAX_BODY_BYTES);
    } else if (strlen(url) > MAX_PATH_LEN) {
        json_error(&act.res, 414, "paths are limited to %d bytes", MAX_PATH_LEN);
    } else if (ps->overflow) {
        json_error(&act.res, 400, "at most %d query parameters", MAX_PARAMS);
    } else {
        pthread_mutex_lock(&sim->lock);
        dispatch(sim, conn, method, url, ps, &act);
        pthread_mutex_unlock(&sim->lock);
    }
    if (sim->verbose)
        fprintf(stderr, "sb-provider-sim: %s %s (%zu params) -> %d%s\n", method, url, ps->n,
                act.close ? 0 : act.res.status, act.close ? " (closed)" : "");
    free(ps);

    if (act.delay_ms) {
        struct timespec ts = {(time_t)(act.delay_ms / 1000),
                              (long)(act.delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    ok = act.close ? MHD_NO : send_response(conn, &act.res);
    sim_buf_free(&act.res.body);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    free(*con_cls);
    *con_cls = NULL;
}

/* ---- startup --------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out, "Usage: sb-provider-sim [OPTIONS]\n"
                 "\n"
                 "Simulated provider \"list sessions\" APIs over a session population that\n"
                 "changes only on POST /_sim/tick, with ground truth and fault injection.\n"
                 "\n"
                 "Options:\n"
                 "  --dialect NAME     API shape (default century):\n");
    for (size_t i = 0; i < NDIALECTS; i++)
        fprintf(out, "                       %-10s %s, prefix %s\n", dialects[i]->name,
                dialects[i]->description, dialects[i]->default_prefix);
    fprintf(out,
            "  --prefix PATH      URL prefix of the provider API (default: the dialect's;\n"
            "                     \"\" for none). The bridge's base_url is URL+PREFIX.\n"
            "  --api-key KEY      credential requests must present (default %s)\n"
            "  --secret KEY       signing secret (proctorexam HMAC), default: the api key\n"
            "  --port N           TCP port, 0 for an ephemeral one (default 0)\n"
            "  --bind ADDR        IPv4 address to listen on (default 127.0.0.1)\n"
            "  --url-file PATH    write \"http://127.0.0.1:PORT\" to PATH, atomically,\n"
            "                     once listening\n"
            "  --pid-file PATH    write the process id to PATH\n"
            "  --active N         initial active sessions (default 0)\n"
            "  --completed N      initial completed sessions (default 0)\n"
            "  --pending N        initial pending sessions, for dialects that show them\n"
            "  --users N          size of the user pool sessions draw from (default 1000)\n"
            "  --seed N           PRNG seed; the same seed and ticks give the same\n"
            "                     sessions (default 1)\n"
            "  --truth PATH       ground truth: one JSON line per transition,\n"
            "                     "
            "{\"tick\":T,\"session_id\":\"..\",\"from\":\"none\",\"to\":\"active\"};\n"
            "                     truncated at start, flushed before each tick answers\n"
            "  --clock-start T    simulated clock (ISO 8601 or unix seconds) instead of\n"
            "                     wall time; advances --tick-seconds per tick\n"
            "  --tick-seconds N   simulated time per tick (default 60)\n"
            "  --verbose          log every request to stderr\n"
            "  --help             this text\n"
            "\n"
            "Control API (JSON):\n"
            "  POST /_sim/tick?started=N&completed=N&vanished=N\n"
            "       [&pending=N&activated=N&cancelled=N&purged=N&transitions=0]\n"
            "  POST /_sim/fail?status=S&after=K&count=C&retry_after=R\n"
            "       [&body=json|malformed|html|empty&path=SUBSTRING&delay_ms=D]\n"
            "       status 0 closes the connection without answering\n"
            "  DELETE /_sim/fail\n"
            "  GET  /_sim/state\n"
            "\n"
            "SIGTERM/SIGINT: exit 0.\n",
            DEFAULT_API_KEY);
}

static int parse_u32_opt(const char *name, const char *v, uint32_t max, uint32_t *out)
{
    uint64_t n;

    if (sim_parse_u64(v, 0, max, &n) < 0) {
        fprintf(stderr, "sb-provider-sim: --%s wants an integer from 0 to %u\n", name, max);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

/* Returns 0 to run, 1 when --help was printed, 2 on a usage error. */
static int parse_args(int argc, char **argv, struct options *o)
{
    enum {
        OPT_PORT = 1,
        OPT_BIND,
        OPT_URL_FILE,
        OPT_PID_FILE,
        OPT_DIALECT,
        OPT_PREFIX,
        OPT_API_KEY,
        OPT_SECRET,
        OPT_ACTIVE,
        OPT_COMPLETED,
        OPT_PENDING,
        OPT_USERS,
        OPT_SEED,
        OPT_TRUTH,
        OPT_CLOCK_START,
        OPT_TICK_SECONDS,
        OPT_VERBOSE,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"port", required_argument, NULL, OPT_PORT},
        {"bind", required_argument, NULL, OPT_BIND},
        {"url-file", required_argument, NULL, OPT_URL_FILE},
        {"pid-file", required_argument, NULL, OPT_PID_FILE},
        {"dialect", required_argument, NULL, OPT_DIALECT},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"api-key", required_argument, NULL, OPT_API_KEY},
        {"secret", required_argument, NULL, OPT_SECRET},
        {"active", required_argument, NULL, OPT_ACTIVE},
        {"completed", required_argument, NULL, OPT_COMPLETED},
        {"pending", required_argument, NULL, OPT_PENDING},
        {"users", required_argument, NULL, OPT_USERS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"truth", required_argument, NULL, OPT_TRUTH},
        {"clock-start", required_argument, NULL, OPT_CLOCK_START},
        {"tick-seconds", required_argument, NULL, OPT_TICK_SECONDS},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    uint32_t u;
    uint64_t n;
    int c;

    memset(o, 0, sizeof(*o));
    o->bind = "127.0.0.1";
    o->dialect = "century";
    o->api_key = DEFAULT_API_KEY;
    o->users = 1000;
    o->seed = 1;
    o->tick_ms = 60000;
    while ((c = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_PORT:
            if (parse_u32_opt("port", optarg, 65535, &u) < 0)
                return 2;
            o->port = (uint16_t)u;
            break;
        case OPT_BIND:
            o->bind = optarg;
            break;
        case OPT_URL_FILE:
            o->url_file = optarg;
            break;
        case OPT_PID_FILE:
            o->pid_file = optarg;
            break;
        case OPT_DIALECT:
            o->dialect = optarg;
            break;
        case OPT_PREFIX:
            o->prefix = optarg;
            break;
        case OPT_SECRET:
            o->secret = optarg;
            break;
        case OPT_API_KEY:
            o->api_key = optarg;
            break;
        case OPT_ACTIVE:
            if (parse_u32_opt("active", optarg, SIM_MAX_SESSIONS, &o->active) < 0)
                return 2;
            break;
        case OPT_COMPLETED:
            if (parse_u32_opt("completed", optarg, SIM_MAX_SESSIONS, &o->completed) < 0)
                return 2;
            break;
        case OPT_PENDING:
            if (parse_u32_opt("pending", optarg, SIM_MAX_SESSIONS, &o->pending) < 0)
                return 2;
            break;
        case OPT_USERS:
            if (parse_u32_opt("users", optarg, 10000000, &o->users) < 0 || o->users == 0) {
                fprintf(stderr, "sb-provider-sim: --users must be at least 1\n");
                return 2;
            }
            break;
        case OPT_SEED:
            if (sim_parse_u64(optarg, 0, UINT64_MAX, &o->seed) < 0) {
                fprintf(stderr, "sb-provider-sim: --seed wants a non-negative integer\n");
                return 2;
            }
            break;
        case OPT_TRUTH:
            o->truth = optarg;
            break;
        case OPT_CLOCK_START:
            if (sim_parse_time(optarg, &o->clock_start_ms) < 0 || o->clock_start_ms <= 0) {
                fprintf(stderr, "sb-provider-sim: --clock-start wants ISO 8601 or unix seconds\n");
                return 2;
            }
            break;
        case OPT_TICK_SECONDS:
            if (sim_parse_u64(optarg, 1, 365 * 86400, &n) < 0) {
                fprintf(stderr, "sb-provider-sim: --tick-seconds wants 1..31536000\n");
                return 2;
            }
            o->tick_ms = (int64_t)n * 1000;
            break;
        case 'v':
        case OPT_VERBOSE:
            o->verbose = 1;
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sb-provider-sim: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    struct sim sim;
    struct sim_pop_options po;
    struct sockaddr_in sa;
    struct MHD_Daemon *d = NULL;
    const union MHD_DaemonInfo *info;
    static const int sigs[] = {SIGTERM, SIGINT};
    sigset_t waitmask;
    char err[512], url[128];
    int rc = parse_args(argc, argv, &o), exit_code = 1;
    int wrote_url = 0, wrote_pid = 0;

    if (rc == 1)
        return 0;
    if (rc != 0)
        return 2;

    memset(&sim, 0, sizeof(sim));
    for (size_t i = 0; i < NDIALECTS; i++)
        if (strcmp(dialects[i]->name, o.dialect) == 0)
            sim.dialect = dialects[i];
    if (!sim.dialect) {
        fprintf(stderr, "sb-provider-sim: unknown dialect '%s'\n", o.dialect);
        return 2;
    }
    if (o.pending && !(sim.dialect->states & SIM_MASK(SIM_PENDING))) {
        fprintf(stderr, "sb-provider-sim: dialect %s cannot show pending sessions\n",
                sim.dialect->name);
        return 2;
    }
    sim.prefix = o.prefix ? o.prefix : sim.dialect->default_prefix;
    sim.prefix_len = strlen(sim.prefix);
    if (sim.prefix_len && (sim.prefix[0] != '/' || sim.prefix[sim.prefix_len - 1] == '/' ||
                           strncmp(sim.prefix, "/_sim", 5) == 0)) {
        fprintf(stderr, "sb-provider-sim: --prefix must start with '/', not end with one, "
                        "and not be /_sim\n");
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(o.port);
    if (inet_pton(AF_INET, o.bind, &sa.sin_addr) != 1) {
        fprintf(stderr, "sb-provider-sim: --bind wants an IPv4 address\n");
        return 2;
    }
    /* Before MHD_start_daemon(): its thread inherits the blocked mask. */
    if (stack_install_signals("sb-provider-sim", on_signal, sigs, sizeof(sigs) / sizeof(sigs[0]),
                              &waitmask) != 0)
        return 1;

    memset(&po, 0, sizeof(po));
    po.seed = o.seed;
    po.users = o.users;
    po.clock_start_ms = o.clock_start_ms;
    po.tick_ms = o.tick_ms;
    po.truth_path = o.truth;
    sim.pop = sim_pop_new(&po, err, sizeof(err));
    if (!sim.pop) {
        fprintf(stderr, "sb-provider-sim: %s\n", err);
        return 1;
    }
    if (sim_pop_seed(sim.pop, o.pending, o.active, o.completed, err, sizeof(err)) < 0) {
        fprintf(stderr, "sb-provider-sim: %s\n", err);
        goto out;
    }
    sim.env.pop = sim.pop;
    sim.env.api_key = o.api_key;
    sim.env.secret = o.secret ? o.secret : o.api_key;
    sim.verbose = o.verbose;
    pthread_mutex_init(&sim.lock, NULL);

    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, o.port,
                         NULL, NULL, on_request, &sim, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MAX_CONN_MEMORY,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "sb-provider-sim: cannot listen on %s:%u\n", o.bind, (unsigned)o.port);
        goto out;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(url, sizeof(url), "http://%s:%u",
             strcmp(o.bind, "0.0.0.0") == 0 ? "127.0.0.1" : o.bind,
             info ? (unsigned)info->port : (unsigned)o.port);
    if (o.pid_file) {
        if (stack_write_pid_file("sb-provider-sim", o.pid_file) != 0)
            goto out;
        wrote_pid = 1;
    }
    if (o.url_file) {
        if (stack_write_file("sb-provider-sim", o.url_file, url) != 0)
            goto out;
        wrote_url = 1;
    }
    fprintf(stderr,
            "sb-provider-sim: listening on %s dialect=%s prefix=%s seed=%llu "
            "pending=%u active=%u completed=%u\n",
            url, sim.dialect->name, sim.prefix, (unsigned long long)o.seed, o.pending, o.active,
            o.completed);

    while (!stop_requested) {
        if (stack_wait("sb-provider-sim", &waitmask, LOOP_WAKE_MS) != 0)
            goto out;
    }
    fprintf(stderr, "sb-provider-sim: stopping\n");
    exit_code = 0;

out:
    if (d)
        MHD_stop_daemon(d);
    if (wrote_url)
        unlink(o.url_file);
    if (wrote_pid)
        unlink(o.pid_file);
    sim_pop_free(sim.pop);
    return exit_code;
}
