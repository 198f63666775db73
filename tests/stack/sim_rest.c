/*
 * sim_rest.c: a generic REST dialect of sb-provider-sim, one per paging
 * scheme of the bridge's `rest` provider (CONTRACT §4.1), chosen by the
 * request path, so that one simulator serves every scheme and auth:
 *
 *   GET {prefix}/{scheme}/{auth}/sessions
 *
 * prefix defaults to "" (the API at the host root): next links are built
 * from the path below the prefix, so keep the default.
 *
 * auth (the credential is --api-key):
 *   bearer  Authorization: Bearer <key>
 *   basic   Authorization: Basic base64("sim:<key>")
 *   header  X-Api-Key: <key>
 *   query   ?api_key=<key>
 *   none    nothing
 * A missing or wrong credential is a 401.
 *
 * scheme, the page's shape and how it pages (limit 1..1000, default 10;
 * sessions in creation order):
 *   cursor       ?cursor=&limit=  {"data":{"items":[..]},"meta":{"next_cursor":"c<offset>"|null}}
 *   offset       ?offset=&limit=  {"results":[..],"total":N}
 *   page         ?page=&per_page= [..] (the body is the array; page from 1)
 *   next_url     ?page=&limit=    {"items":[..],"links":{"next":"<relative URL>"|null}}
 *   link         ?page=&limit=    {"items":[..]}, Link: first, prev, next and last links in
 *                                 one header (next among them, with a quoted title holding
 *                                 a comma and a multi-valued rel), next relative
 *   none                          {"sessions":[..]}, every session, no paging
 *   next_url_foreign, link_foreign  as next_url and link, but the next URL is absolute on
 *                                 http://127.0.0.1:1 (another origin the bridge must refuse)
 *
 * A record: {"id":"<uuid>","attributes":{"state":"<raw>","test":"..."},
 * "created_at":"..."}, the raw state being waiting (pending), inprogress
 * (active), finished (completed) or abandoned (cancelled).
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REST_MAX_LIMIT SIM_MAX_PAGE
#define REST_DEFAULT_LIMIT 10
#define REST_MAX_OFFSET 2147483647ULL
#define CONTENT_JSON "application/json; charset=utf-8"

#define LISTED_MASK                                                                                \
    (SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) |                      \
     SIM_MASK(SIM_CANCELLED))

enum scheme {
    S_CURSOR,
    S_OFFSET,
    S_PAGE,
    S_NEXT_URL,
    S_LINK,
    S_NONE,
    S_NEXT_URL_FOREIGN,
    S_LINK_FOREIGN,
    S_COUNT
};
static const char *const scheme_names[S_COUNT] = {
    "cursor", "offset", "page", "next_url", "link", "none", "next_url_foreign", "link_foreign"};
static const char *const auth_names[] = {"bearer", "basic", "header", "query", "none", NULL};

/* Splits "/{scheme}/{auth}/sessions"; 0 or -1. */
static int split_path(const char *path, int *scheme, int *auth)
{
    char a[32], b[32];
    const char *p = path;
    size_t n;
    if (*p++ != '/' || (n = strcspn(p, "/")) == 0 || n >= sizeof(a))
        return -1;
    memcpy(a, p, n);
    a[n] = '\0';
    p += n;
    if (*p++ != '/' || (n = strcspn(p, "/")) == 0 || n >= sizeof(b))
        return -1;
    memcpy(b, p, n);
    b[n] = '\0';
    p += n;
    if (strcmp(p, "/sessions") != 0)
        return -1;
    *scheme = *auth = -1;
    for (int i = 0; i < S_COUNT; i++)
        if (strcmp(scheme_names[i], a) == 0)
            *scheme = i;
    for (int i = 0; auth_names[i]; i++)
        if (strcmp(auth_names[i], b) == 0)
            *auth = i;
    return *scheme >= 0 && *auth >= 0 ? 0 : -1;
}

static const char *rest_route(const char *path)
{
    int s, a;
    return split_path(path, &s, &a) == 0 ? "sessions" : NULL;
}

static const char *param(const struct sim_request *req, const char *key)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].key, key) == 0)
            return req->params[i].value;
    return NULL;
}

static int authorized(const struct sim_env *env, const struct sim_request *req, int auth)
{
    char want[512];
    const char *got;
    switch (auth) {
    case 0:
        snprintf(want, sizeof(want), "Bearer %s", env->api_key);
        got = sim_request_header(req, "Authorization");
        break;
    case 1: {
        char plain[256];
        int n = snprintf(plain, sizeof(plain), "sim:%s", env->api_key);
        memcpy(want, "Basic ", 6);
        sim_b64_encode((const unsigned char *)plain, (size_t)n, want + 6);
        got = sim_request_header(req, "Authorization");
        break;
    }
    case 2:
        snprintf(want, sizeof(want), "%s", env->api_key);
        got = sim_request_header(req, "X-Api-Key");
        break;
    case 3:
        snprintf(want, sizeof(want), "%s", env->api_key);
        got = param(req, "api_key");
        break;
    default:
        return 1;
    }
    return got && strcmp(got, want) == 0;
}

static const char *raw_state(const struct sim_session *s)
{
    switch (s->state) {
    case SIM_PENDING:
        return "waiting";
    case SIM_ACTIVE:
        return "inprogress";
    case SIM_COMPLETED:
        return "finished";
    default:
        return "abandoned";
    }
}

static void write_record(const struct sim_pop *pop, const struct sim_session *s, struct sim_buf *b)
{
    sim_buf_printf(b, "{\"id\":\"%s\",\"attributes\":{\"state\":\"%s\",\"test\":", s->id,
                   raw_state(s));
    sim_buf_json_str(b, sim_pop_test(pop, s->test)->name);
    sim_buf_puts(b, "},\"created_at\":");
    sim_buf_json_time(b, s->key_ms);
    sim_buf_puts(b, "}");
}

static void write_items(const struct sim_pop *pop, size_t from, size_t n, struct sim_buf *b)
{
    sim_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sim_buf_puts(b, ",");
        write_record(pop, sim_pop_at(pop, sim_pop_select(pop, LISTED_MASK, from + i)), b);
    }
    sim_buf_puts(b, "]");
}

/* A page-numbered link to this endpoint: relative, or absolute on another
 * origin; with the auth query parameter when the request had it. */
static void page_url(char *out, size_t n, const struct sim_request *req, int foreign, size_t page,
                     unsigned limit)
{
    const char *key = param(req, "api_key");
    snprintf(out, n, "%s%s?page=%zu&limit=%u%s%s", foreign ? "http://127.0.0.1:1" : "", req->path,
             page, limit, key ? "&api_key=" : "", key ? key : "");
}

static void rest_handle(const struct sim_env *env, const struct sim_request *req,
                        struct sim_response *res)
{
    const struct sim_pop *pop = env->pop;
    struct sim_buf *b = &res->body;
    int scheme, auth;
    uint64_t v;
    size_t total = sim_pop_count(pop, LISTED_MASK), from = 0;
    unsigned limit = REST_DEFAULT_LIMIT;
    const char *s;
    char url[512];

    if (strcmp(req->method, "GET") != 0) {
        sim_response_header(res, "Allow", "GET");
        sim_error_body(res, 405, "only GET is supported");
        return;
    }
    if (split_path(req->path, &scheme, &auth) < 0) {
        sim_error_body(res, 404, "no such endpoint");
        return;
    }
    if (!authorized(env, req, auth)) {
        sim_error_body(res, 401, "bad or missing credentials");
        return;
    }
    s = param(req, scheme == S_PAGE ? "per_page" : "limit");
    if (s && sim_parse_u64(s, 1, REST_MAX_LIMIT, &v) < 0) {
        sim_error_body(res, 400, "the page size must be 1..1000");
        return;
    }
    if (s)
        limit = (unsigned)v;
    size_t page = 1;
    switch (scheme) {
    case S_CURSOR:
        s = param(req, "cursor");
        if (s && (s[0] != 'c' || sim_parse_u64(s + 1, 0, REST_MAX_OFFSET, &v) < 0)) {
            sim_error_body(res, 400, "not a cursor of ours");
            return;
        }
        from = s ? (size_t)v : 0;
        break;
    case S_OFFSET:
        s = param(req, "offset");
        if (s && sim_parse_u64(s, 0, REST_MAX_OFFSET, &v) < 0) {
            sim_error_body(res, 400, "offset must be an integer >= 0");
            return;
        }
        from = s ? (size_t)v : 0;
        break;
    case S_NONE:
        limit = total > 0 ? (unsigned)total : 1;
        break;
    default:
        s = param(req, "page");
        if (s && sim_parse_u64(s, 1, REST_MAX_OFFSET, &v) < 0) {
            sim_error_body(res, 400, "page must be an integer >= 1");
            return;
        }
        page = s ? (size_t)v : 1;
        from = (page - 1) * limit;
        break;
    }
    size_t n = from < total ? total - from : 0;
    if (n > limit && scheme != S_NONE)
        n = limit;
    int more = from + n < total;

    res->status = 200;
    res->content_type = CONTENT_JSON;
    switch (scheme) {
    case S_CURSOR:
        sim_buf_puts(b, "{\"data\":{\"items\":");
        write_items(pop, from, n, b);
        if (more)
            sim_buf_printf(b, "},\"meta\":{\"next_cursor\":\"c%zu\"}}", from + n);
        else
            sim_buf_puts(b, "},\"meta\":{\"next_cursor\":null}}");
        break;
    case S_OFFSET:
        sim_buf_puts(b, "{\"results\":");
        write_items(pop, from, n, b);
        sim_buf_printf(b, ",\"total\":%zu}", total);
        break;
    case S_PAGE:
        write_items(pop, from, n, b);
        break;
    case S_NONE:
        sim_buf_puts(b, "{\"sessions\":");
        write_items(pop, 0, n, b);
        sim_buf_puts(b, "}");
        break;
    case S_NEXT_URL:
    case S_NEXT_URL_FOREIGN:
        sim_buf_puts(b, "{\"items\":");
        write_items(pop, from, n, b);
        sim_buf_puts(b, ",\"links\":{\"next\":");
        if (more) {
            page_url(url, sizeof(url), req, scheme == S_NEXT_URL_FOREIGN, page + 1, limit);
            sim_buf_json_str(b, url);
        } else {
            sim_buf_puts(b, "null");
        }
        sim_buf_puts(b, "}}");
        break;
    default: { /* the Link schemes */
        char first[256], next[256], last[256];
        size_t pages = total ? (total + limit - 1) / limit : 1;
        sim_buf_puts(b, "{\"items\":");
        write_items(pop, from, n, b);
        sim_buf_puts(b, "}");
        page_url(first, sizeof(first), req, 0, 1, limit);
        page_url(last, sizeof(last), req, 0, pages, limit);
        page_url(next, sizeof(next), req, scheme == S_LINK_FOREIGN, page + 1, limit);
        /* next in the middle, a title holding a comma and a ';', and a rel
         * with two values: what a naive split on ',' or ';' gets wrong. */
        if (more)
            sim_response_header(res, "Link",
                                "<%s>; rel=\"first\", <%s>; title=\"more, please; now\"; "
                                "rel=\"next nofollow\", <%s>; rel=last",
                                first, next, last);
        else
            sim_response_header(res, "Link", "<%s>; rel=\"first\", <%s>; rel=\"last\"", first,
                                last);
        break;
    }
    }
}

const struct sim_dialect sim_dialect_rest = {
    .name = "rest",
    .description = "generic REST, one paging scheme per path (/{scheme}/{auth}/sessions)",
    .default_prefix = "",
    .states = SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) |
              SIM_MASK(SIM_CANCELLED) | SIM_MASK(SIM_GONE),
    .route = rest_route,
    .handle = rest_handle,
};
