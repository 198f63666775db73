/*
 * sim_quiz_jsonapi.c: the JSON:API quiz dialect of sb-provider-sim, as seed
 * 002 documents it (see sim.c for running the simulator):
 *
 *   GET    {prefix}/api/v3/quiz/sessions             the list, paged
 *   GET    {prefix}/api/v3/quiz/sessions/:id         one session
 *   PATCH  {prefix}/api/v3/quiz/sessions/:id/cancel  501, see below
 *   DELETE {prefix}/api/v3/quiz/sessions/:id         501, see below
 *
 * prefix defaults to "" (the seed's paths start at the host root). The seed
 * documents no authentication; the simulator wants the header
 * "Authorization: Bearer <--api-key>" (the bridge's auth.header and
 * auth.value are configurable), else a 401 JSON:API error document.
 *
 * List query: page[number] >= 1 (default 1), page[size] 1..1000 (default
 * 1000, the seed's default); sort = created_at or -created_at (the only
 * order the population has; anything else is a 400); count=true adds
 * meta.count; filter[status] (comma-separated raw statuses), filter[person_id]
 * and filter[id] filter; the seed's other filters (created_at, name,
 * expires_at, score, name__match) are a 400 "not simulated" rather than
 * silently ignored. fields[...] is accepted and ignored. Pages are offsets
 * into the list at the time of the request, as page[number] paging is:
 * a session deleted between two requests shifts the later pages by one.
 *
 * Records are JSON:API resources of type "quiz/sessions" with the seed's
 * attributes {id, person_id, created_at, name, status, expires_at, score}.
 * Raw statuses vary per session (deterministically, from its outcome byte)
 * to exercise every row of the bridge's default map:
 *   pending   -> "pending" | "created"
 *   active    -> "in_progress" | "started" | "active"
 *   completed -> "completed" | "submitted" | "finished"
 *   cancelled -> "cancelled" | "expired" | "canceled"
 * and a deleted session (state gone) is no longer listed.
 *
 * Dialects only read the population (sim.h), so the seed's PATCH .../cancel
 * and DELETE cannot change it here: they answer 501 and name the control
 * API's equivalents, POST /_sim/tick?cancelled=N (pending|active ->
 * cancelled), vanished=N (active -> gone) and purged=N (terminal -> gone).
 */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QUIZ_PATH "/api/v3/quiz/sessions"
/* The seed: page[size] defaults to 1000; it gives no maximum, we take it. */
#define QUIZ_DEFAULT_SIZE 1000
#define QUIZ_MAX_SIZE SIM_MAX_PAGE
/* Beyond any population the simulator can hold, and safe to multiply. */
#define QUIZ_MAX_PAGE_NUMBER 1000000000ULL
#define QUIZ_MAX_STATUS_FILTERS 16
#define QUIZ_MAX_ID_FILTERS 16
/* Sessions expire this long after creation (attributes.expires_at). */
#define QUIZ_EXPIRY_MS (2 * 3600 * 1000LL)

#define CONTENT_JSONAPI "application/vnd.api+json"

static const char *const pending_names[] = {"pending", "created"};
static const char *const active_names[] = {"in_progress", "started", "active"};
static const char *const completed_names[] = {"completed", "submitted", "finished"};
static const char *const cancelled_names[] = {"cancelled", "expired", "canceled"};
#define NAMES(a) (sizeof(a) / sizeof(a[0]))

static const char *const unsimulated_filters[] = {"filter[created_at]", "filter[name]",
                                                  "filter[expires_at]", "filter[score]",
                                                  "filter[name__match]"};

enum route_kind { ROUTE_LIST = 0, ROUTE_ITEM, ROUTE_CANCEL };
static const char *const route_names[] = {"list", "item", "cancel"};

struct params {
    uint64_t number;
    unsigned size;
    int desc;
    int count;
    const char *statuses[QUIZ_MAX_STATUS_FILTERS];
    size_t nstatuses;
    char status_buf[512];
    int by_person;
    uint64_t person;
    const char *ids[QUIZ_MAX_ID_FILTERS];
    size_t nids;
    char id_buf[QUIZ_MAX_ID_FILTERS * (SIM_UUID_LEN + 1) + 64];
};

/* The raw status a session shows: its state, varied by its outcome byte. */
static const char *raw_status(const struct sim_session *s)
{
    unsigned o = s->outcome;
    switch (s->state) {
    case SIM_PENDING:
        return pending_names[o % NAMES(pending_names)];
    case SIM_ACTIVE:
        return active_names[o % NAMES(active_names)];
    case SIM_COMPLETED:
        return completed_names[(o / 4) % NAMES(completed_names)];
    case SIM_CANCELLED:
        return cancelled_names[(o / 16) % NAMES(cancelled_names)];
    default:
        return NULL;
    }
}

/* "/:id" (the id being one path segment) and "/:id/cancel" below the list. */
static const char *quiz_route(const char *path)
{
    size_t n = strlen(QUIZ_PATH);
    const char *id, *slash;

    if (strncmp(path, QUIZ_PATH, n) != 0)
        return NULL;
    if (path[n] == '\0')
        return route_names[ROUTE_LIST];
    if (path[n] != '/' || path[n + 1] == '\0' || path[n + 1] == '/')
        return NULL;
    id = path + n + 1;
    slash = strchr(id, '/');
    if (!slash)
        return route_names[ROUTE_ITEM];
    return strcmp(slash, "/cancel") == 0 ? route_names[ROUTE_CANCEL] : NULL;
}

/* A JSON:API error document: {"errors":[{"status":"400","title":..,"detail":..}]}. */
__attribute__((format(printf, 4, 5))) static void
jsonapi_error(struct sim_response *res, int status, const char *title, const char *fmt, ...)
{
    char msg[384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sim_buf_free(&res->body);
    res->status = status;
    res->content_type = CONTENT_JSONAPI;
    sim_buf_printf(&res->body, "{\"errors\":[{\"status\":\"%d\",\"title\":", status);
    sim_buf_json_str(&res->body, title);
    sim_buf_puts(&res->body, ",\"detail\":");
    sim_buf_json_str(&res->body, msg);
    sim_buf_puts(&res->body, "}]}");
}

/* Splits a comma-separated value into at most max parts, copied into buf. */
static int split_list(const char *v, char *buf, size_t buflen, const char **out, size_t max,
                      size_t *n)
{
    char *save = NULL;

    if (strlen(v) >= buflen)
        return -1;
    memcpy(buf, v, strlen(v) + 1);
    *n = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == max)
            return -1;
        out[(*n)++] = t;
    }
    return *n ? 0 : -1;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        jsonapi_error(res, 400, "Bad Request", __VA_ARGS__);                                       \
        return -1;                                                                                 \
    } while (0)

/* Returns 0, or -1 after filling a 400 into res. */
static int parse_params(const struct sim_request *req, struct params *p, struct sim_response *res)
{
    int seen_number = 0, seen_size = 0, seen_sort = 0;

    memset(p, 0, sizeof(*p));
    p->number = 1;
    p->size = QUIZ_DEFAULT_SIZE;
    for (size_t i = 0; i < req->nparams; i++) {
        const char *k = req->params[i].key, *v = req->params[i].value;
        uint64_t n;

        if (strcmp(k, "page[number]") == 0) {
            if (seen_number++)
                FAIL("%s must be given once", k);
            if (sim_parse_u64(v, 1, QUIZ_MAX_PAGE_NUMBER, &p->number) < 0)
                FAIL("page[number] must be an integer from 1 to %llu",
                     (unsigned long long)QUIZ_MAX_PAGE_NUMBER);
        } else if (strcmp(k, "page[size]") == 0) {
            if (seen_size++)
                FAIL("%s must be given once", k);
            if (sim_parse_u64(v, 1, QUIZ_MAX_SIZE, &n) < 0)
                FAIL("page[size] must be an integer from 1 to %d", QUIZ_MAX_SIZE);
            p->size = (unsigned)n;
        } else if (strcmp(k, "sort") == 0) {
            if (seen_sort++)
                FAIL("%s must be given once", k);
            if (strcmp(v, "created_at") == 0)
                p->desc = 0;
            else if (strcmp(v, "-created_at") == 0)
                p->desc = 1;
            else
                FAIL("sort: the simulator only sorts by created_at or -created_at, not '%.64s'", v);
        } else if (strcmp(k, "count") == 0) {
            if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
                FAIL("count must be true or false");
            p->count = strcmp(v, "true") == 0;
        } else if (strcmp(k, "filter[status]") == 0) {
            if (p->nstatuses || split_list(v, p->status_buf, sizeof(p->status_buf), p->statuses,
                                           QUIZ_MAX_STATUS_FILTERS, &p->nstatuses) < 0)
                FAIL("filter[status] must be given once, as 1 to %d comma-separated statuses",
                     QUIZ_MAX_STATUS_FILTERS);
        } else if (strcmp(k, "filter[person_id]") == 0) {
            if (p->by_person++)
                FAIL("%s must be given once", k);
            if (sim_parse_u64(v, 1, UINT32_MAX, &p->person) < 0)
                FAIL("filter[person_id] must be a positive integer");
        } else if (strcmp(k, "filter[id]") == 0) {
            if (p->nids || split_list(v, p->id_buf, sizeof(p->id_buf), p->ids, QUIZ_MAX_ID_FILTERS,
                                      &p->nids) < 0)
                FAIL("filter[id] must be given once, as 1 to %d comma-separated ids",
                     QUIZ_MAX_ID_FILTERS);
        } else {
            for (size_t f = 0; f < NAMES(unsimulated_filters); f++)
                if (strcmp(k, unsimulated_filters[f]) == 0)
                    FAIL("%s is documented but not simulated", k);
            if (strncmp(k, "filter[", 7) == 0)
                FAIL("unknown filter %.64s", k);
            if (strncmp(k, "page[", 5) == 0)
                FAIL("unknown page parameter %.64s", k);
            /* fields[...] and anything else: ignored, as the real API would. */
        }
    }
    return 0;
}
#undef FAIL

static int match_session(const struct sim_pop *pop, const struct sim_session *s, void *opaque)
{
    const struct params *p = opaque;
    int ok;

    (void)pop;
    if (p->by_person && (uint64_t)s->user + 1 != p->person)
        return 0;
    if (p->nstatuses) {
        const char *raw = raw_status(s);
        ok = 0;
        for (size_t i = 0; i < p->nstatuses && !ok; i++)
            ok = raw && strcmp(raw, p->statuses[i]) == 0;
        if (!ok)
            return 0;
    }
    if (p->nids) {
        ok = 0;
        for (size_t i = 0; i < p->nids && !ok; i++)
            ok = strcasecmp(s->id, p->ids[i]) == 0;
        if (!ok)
            return 0;
    }
    return 1;
}

/* ---- records --------------------------------------------------------- */

static void write_resource(const struct sim_pop *pop, const struct sim_session *s,
                           struct sim_buf *b)
{
    const struct sim_test *t = sim_pop_test(pop, s->test);

    sim_buf_printf(b, "{\"type\":\"quiz/sessions\",\"id\":\"%s\",\"attributes\":{\"id\":\"%s\"",
                   s->id, s->id);
    sim_buf_printf(b, ",\"person_id\":%u,\"created_at\":", s->user + 1);
    sim_buf_json_time(b, s->key_ms);
    sim_buf_puts(b, ",\"name\":");
    sim_buf_json_str(b, t->name);
    sim_buf_puts(b, ",\"status\":");
    sim_buf_json_str(b, raw_status(s));
    sim_buf_puts(b, ",\"expires_at\":");
    sim_buf_json_time(b, s->key_ms + QUIZ_EXPIRY_MS);
    if (s->state == SIM_COMPLETED)
        sim_buf_printf(b, ",\"score\":%u", s->outcome % 101);
    else
        sim_buf_puts(b, ",\"score\":null");
    sim_buf_printf(b,
                   "},\"relationships\":{\"person\":{\"data\":{\"type\":\"people\","
                   "\"id\":\"%u\"}}}}",
                   s->user + 1);
}

/* ---- the handlers ---------------------------------------------------- */

static void handle_list(const struct sim_env *env, const struct sim_request *req,
                        struct sim_response *res)
{
    const struct sim_pop *pop = env->pop;
    struct sim_buf *b = &res->body;
    struct sim_query q;
    struct sim_page *pg;
    struct params *p;
    uint64_t skip;

    p = malloc(sizeof(*p));
    pg = malloc(sizeof(*pg));
    if (!p || !pg) {
        jsonapi_error(res, 500, "Internal Server Error", "out of memory");
        goto out;
    }
    if (parse_params(req, p, res) < 0)
        goto out;

    memset(&q, 0, sizeof(q));
    q.mask = SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) |
             SIM_MASK(SIM_CANCELLED);
    q.lo = 0;
    q.hi = sim_pop_size(pop);
    if (p->by_person || p->nstatuses || p->nids) {
        q.match = match_session;
        q.opaque = p;
    }
    q.from = SIM_FROM_OFFSET;
    skip = (p->number - 1) * p->size;
    q.limit = p->size;
    if (p->desc) {
        /* Newest first: the same offsets counted from the end. */
        q.offset = 0;
        q.limit = 1;
        sim_pop_query(pop, &q, pg);
        size_t total = pg->total;
        size_t end = skip < total ? total - (size_t)skip : 0;
        q.offset = end > p->size ? end - p->size : 0;
        q.limit = p->size;
        sim_pop_query(pop, &q, pg);
        pg->n = end - q.offset < pg->n ? end - q.offset : pg->n;
        for (size_t i = 0; i < pg->n / 2; i++) {
            size_t tmp = pg->pos[i];
            pg->pos[i] = pg->pos[pg->n - 1 - i];
            pg->pos[pg->n - 1 - i] = tmp;
        }
    } else {
        q.offset = skip < SIZE_MAX ? (size_t)skip : SIZE_MAX;
        sim_pop_query(pop, &q, pg);
    }

    res->status = 200;
    res->content_type = CONTENT_JSONAPI;
    sim_buf_puts(b, "{\"data\":[");
    for (size_t i = 0; i < pg->n; i++) {
        if (i)
            sim_buf_puts(b, ",");
        write_resource(pop, sim_pop_at(pop, pg->pos[i]), b);
    }
    sim_buf_puts(b, "],\"included\":[]");
    if (p->count)
        sim_buf_printf(b, ",\"meta\":{\"count\":%zu}", pg->total);
    sim_buf_puts(b, "}");
out:
    free(p);
    free(pg);
}

/* The listed session whose id is the path segment after the list, or NULL.
 * A linear scan: the simulator's populations are small enough for it. */
static const struct sim_session *find_session(const struct sim_pop *pop, const char *path)
{
    const char *id = path + strlen(QUIZ_PATH) + 1;
    size_t len = strcspn(id, "/");

    if (len != SIM_UUID_LEN)
        return NULL;
    for (size_t pos = 0; pos < sim_pop_size(pop); pos++) {
        const struct sim_session *s = sim_pop_at(pop, pos);
        if (s->state != SIM_GONE && strncasecmp(s->id, id, len) == 0)
            return s;
    }
    return NULL;
}

static void quiz_handle(const struct sim_env *env, const struct sim_request *req,
                        struct sim_response *res)
{
    const char *route = quiz_route(req->path);
    const char *auth = sim_request_header(req, "Authorization");
    const struct sim_session *s;

    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strcmp(auth + 7, env->api_key) != 0) {
        sim_response_header(res, "WWW-Authenticate", "Bearer");
        jsonapi_error(res, 401, "Unauthorized", "missing or invalid bearer token");
        return;
    }
    if (strcmp(route, route_names[ROUTE_LIST]) == 0) {
        if (strcmp(req->method, "GET") != 0) {
            /* POST (create) is documented; sessions are created by ticks. */
            sim_response_header(res, "Allow", "GET");
            jsonapi_error(res, 405, "Method Not Allowed",
                          "the simulator lists sessions; create them with POST "
                          "/_sim/tick?pending=N or started=N");
            return;
        }
        handle_list(env, req, res);
        return;
    }
    if (strcmp(route, route_names[ROUTE_ITEM]) == 0 && strcmp(req->method, "GET") == 0) {
        s = find_session(env->pop, req->path);
        if (!s) {
            jsonapi_error(res, 404, "Not Found", "no such quiz/sessions resource");
            return;
        }
        res->status = 200;
        res->content_type = CONTENT_JSONAPI;
        sim_buf_puts(&res->body, "{\"data\":");
        write_resource(env->pop, s, &res->body);
        sim_buf_puts(&res->body, "}");
        return;
    }
    if (strcmp(route, route_names[ROUTE_CANCEL]) == 0 && strcmp(req->method, "PATCH") == 0) {
        jsonapi_error(res, 501, "Not Implemented",
                      "dialects cannot change the population; use POST /_sim/tick?cancelled=N");
        return;
    }
    if (strcmp(route, route_names[ROUTE_ITEM]) == 0 && strcmp(req->method, "DELETE") == 0) {
        jsonapi_error(res, 501, "Not Implemented",
                      "dialects cannot change the population; use POST /_sim/tick?vanished=N "
                      "(active) or purged=N (completed, cancelled)");
        return;
    }
    if (strcmp(route, route_names[ROUTE_ITEM]) == 0 && strcmp(req->method, "PATCH") == 0) {
        jsonapi_error(res, 501, "Not Implemented",
                      "dialects cannot change the population; use POST /_sim/tick");
        return;
    }
    sim_response_header(res, "Allow",
                        strcmp(route, route_names[ROUTE_CANCEL]) == 0 ? "PATCH"
                                                                      : "GET, PATCH, DELETE");
    jsonapi_error(res, 405, "Method Not Allowed", "%s is not supported here", req->method);
}

const struct sim_dialect sim_dialect_quiz_jsonapi = {
    .name = "quiz_jsonapi",
    .description = "JSON:API quiz sessions (seed 002): one paged list of every state",
    .default_prefix = "",
    .states = SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) |
              SIM_MASK(SIM_CANCELLED) | SIM_MASK(SIM_GONE),
    .route = quiz_route,
    .handle = quiz_handle,
};
