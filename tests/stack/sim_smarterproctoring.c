/*
 * sim_smarterproctoring.c: the SmarterProctoring dialect of sb-provider-sim,
 * as seed 004 documents it (see sim.c for running the simulator):
 *
 *   GET {prefix}/v1/installs/{installSid}/enrollments/{enrollmentSid}/exams/{examSid}/sessions
 *
 * prefix defaults to "" (the API is at the host root). Every SID matching
 * the seed's patterns (^AI|^EN|^EX then [a-f0-9]{32}) names the one
 * simulated population; a SID that does not is a 400. Header token must
 * equal --api-key (401).
 *
 * Query (unknown parameters are ignored, anything invalid is a 400):
 *   offset         0..2^31-1, default 0; empty ("for 1st query should pass
 *                  as empty", says the seed) means 0
 *   limit          0..1000, default 100 (the seed says only x >= 0; 0 gives
 *                  an empty page with no next)
 *   includeActive  true|false, default false
 *   status         repeatable, the seed's enum: Needs Proctor, Pending
 *                  Approval, Approval Denied, Scheduled, Incident, Closed,
 *                  Processing
 *   sortKeys       repeatable, createdDate only (the only order there is)
 *   sortOrder      ASC (default) | DESC, by createdDate then sid
 *
 * Our reading of the seed's two filters: the status enum lists every status
 * but the two that make a session "active" (Active, In Progress), and
 * includeActive is what adds those. So a session is listed when its status
 * is Active or In Progress and includeActive=true, or when its status is
 * another one and either no status filter is given or the filter names it.
 * (Incident, an active state for the bridge, is in the enum: it is listed
 * without includeActive.)
 *
 * Generic states map to raw statuses deterministically: pending -> Needs
 * Proctor | Pending Approval | Scheduled and active -> Active | In Progress |
 * Incident (by the session's outcome); completed -> Processing for the first
 * five minutes of simulated time after it ended, Closed after; cancelled ->
 * Approval Denied. Session sids are the population's UUIDs.
 *
 * The answer is {"total","first","next","prev","last","count","offset",
 * "results":[{"sid","status","sessionType","appointmentDate","createdDate",
 * "editDate"}]}. first/next/prev/last repeat the request's parameters with
 * another offset (includeActive only when the request had it) and are
 * RELATIVE links ("/v1/...?offset=..") built from the path below the
 * prefix: with a --prefix they lack it, so keep the default prefix. next is
 * null on the last page, prev on the first.
 *
 * Test hooks, chosen by the install SID's first hex digits (any other SID
 * gets relative links):
 *   AIffff0001...  absolute links on the simulator's own origin (from Host)
 *   AIffff0002...  query-only links ("?offset=..")
 *   AIffff0003PPPP...  absolute links on http://127.0.0.1:PPPP (PPPP: a port
 *                  in 4 hex digits), i.e. another origin the bridge must
 *                  refuse to follow
 *   AIffff0004...  relative links without includeActive
 */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Our own bounds: the seed gives none but x >= 0. */
#define SP_MAX_LIMIT SIM_MAX_PAGE
#define SP_DEFAULT_LIMIT 100
#define SP_MAX_OFFSET 2147483647ULL
/* Repeated status values kept; the enum has 7. */
#define SP_MAX_STATUSES 16
/* How long a completed session reads "Processing" before "Closed". */
#define SP_PROCESSING_MS (5 * 60 * 1000)
#define SP_SID_HEX 32

#define CONTENT_JSON "application/json; charset=utf-8"

static const char *const status_enum[] = {
    "Needs Proctor", "Pending Approval", "Approval Denied", "Scheduled",
    "Incident",      "Closed",           "Processing",      NULL};
static const char *const pending_statuses[] = {"Needs Proctor", "Pending Approval", "Scheduled"};
static const char *const active_statuses[] = {"Active", "In Progress", "Incident"};
static const char *const session_types[] = {"Live", "Automated", "Record and Review"};

enum link_style { LINK_RELATIVE = 0, LINK_ABSOLUTE, LINK_QUERY, LINK_FOREIGN, LINK_NO_ACTIVE };

struct params {
    size_t offset;
    unsigned limit;
    int has_include; /* includeActive was given */
    int include_active;
    const char *statuses[SP_MAX_STATUSES]; /* point into status_enum */
    size_t nstatuses;
    size_t nsort_keys;
    int has_order;
    int desc;
};

static const char *const segments[] = {"/v1/installs/", "/enrollments/", "/exams/", "/sessions"};

/* Splits path into its three SIDs (not yet validated). 0 or -1. */
static int split_path(const char *path, char sid[3][64])
{
    const char *p = path;
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(segments[i]);
        if (strncmp(p, segments[i], n) != 0)
            return -1;
        p += n;
        size_t len = strcspn(p, "/");
        if (len == 0 || len >= 64)
            return -1;
        memcpy(sid[i], p, len);
        sid[i][len] = '\0';
        p += len;
    }
    return strcmp(p, segments[3]) == 0 ? 0 : -1;
}

static const char *sp_route(const char *path)
{
    char sid[3][64];
    return split_path(path, sid) == 0 ? "sessions" : NULL;
}

static int valid_sid(const char *s, const char *prefix)
{
    if (strncmp(s, prefix, 2) != 0 || strlen(s) != 2 + SP_SID_HEX)
        return 0;
    for (size_t i = 2; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static enum link_style link_style(const char *install_sid, unsigned *port)
{
    const char *hex = install_sid + 2;
    if (strncmp(hex, "ffff000", 7) != 0)
        return LINK_RELATIVE;
    switch (hex[7]) {
    case '1':
        return LINK_ABSOLUTE;
    case '2':
        return LINK_QUERY;
    case '3': {
        char digits[5];
        memcpy(digits, hex + 8, 4);
        digits[4] = '\0';
        *port = (unsigned)strtoul(digits, NULL, 16);
        return *port ? LINK_FOREIGN : LINK_RELATIVE;
    }
    case '4':
        return LINK_NO_ACTIVE;
    default:
        return LINK_RELATIVE;
    }
}

/* A 400 with a formatted message of up to 255 bytes (sim_error_body()). */
__attribute__((format(printf, 2, 3))) static void bad_request(struct sim_response *res,
                                                              const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sim_error_body(res, 400, msg);
}

static const char *enum_value(const char *s)
{
    for (size_t i = 0; status_enum[i]; i++)
        if (strcmp(status_enum[i], s) == 0)
            return status_enum[i];
    return NULL;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        bad_request(res, __VA_ARGS__);                                                             \
        return -1;                                                                                 \
    } while (0)

/* Returns 0, or -1 after filling a 400 into res. */
static int parse_params(const struct sim_request *req, struct params *p, struct sim_response *res)
{
    int has_offset = 0, has_limit = 0;

    memset(p, 0, sizeof(*p));
    p->limit = SP_DEFAULT_LIMIT;
    for (size_t i = 0; i < req->nparams; i++) {
        const char *k = req->params[i].key, *v = req->params[i].value;
        uint64_t n;

        if (strcmp(k, "offset") == 0) {
            if (has_offset++)
                FAIL("offset must be given once");
            if (*v && sim_parse_u64(v, 0, SP_MAX_OFFSET, &n) < 0)
                FAIL("offset must be an integer >= 0");
            p->offset = *v ? (size_t)n : 0;
        } else if (strcmp(k, "limit") == 0) {
            if (has_limit++)
                FAIL("limit must be given once");
            if (sim_parse_u64(v, 0, SP_MAX_LIMIT, &n) < 0)
                FAIL("limit must be an integer from 0 to %d", SP_MAX_LIMIT);
            p->limit = (unsigned)n;
        } else if (strcmp(k, "includeActive") == 0) {
            if (p->has_include++)
                FAIL("includeActive must be given once");
            if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
                FAIL("includeActive must be true or false");
            p->include_active = strcmp(v, "true") == 0;
        } else if (strcmp(k, "status") == 0) {
            const char *e = enum_value(v);
            if (!e)
                FAIL("status must be one of Needs Proctor, Pending Approval, Approval Denied, "
                     "Scheduled, Incident, Closed, Processing");
            if (p->nstatuses == SP_MAX_STATUSES)
                FAIL("at most %d status values", SP_MAX_STATUSES);
            p->statuses[p->nstatuses++] = e;
        } else if (strcmp(k, "sortKeys") == 0) {
            if (strcmp(v, "createdDate") != 0)
                FAIL("sortKeys must be createdDate");
            p->nsort_keys++;
        } else if (strcmp(k, "sortOrder") == 0) {
            if (p->has_order++)
                FAIL("sortOrder must be given once");
            if (strcmp(v, "ASC") != 0 && strcmp(v, "DESC") != 0)
                FAIL("sortOrder must be ASC or DESC");
            p->desc = strcmp(v, "DESC") == 0;
        }
    }
    return 0;
}
#undef FAIL

/* ---- statuses and listing -------------------------------------------- */

static const char *raw_status(const struct sim_pop *pop, const struct sim_session *s)
{
    switch (s->state) {
    case SIM_PENDING:
        return pending_statuses[s->outcome % 3];
    case SIM_ACTIVE:
        return active_statuses[(s->outcome / 3) % 3];
    case SIM_COMPLETED:
        return sim_pop_now(pop) - s->end_ms < SP_PROCESSING_MS ? "Processing" : "Closed";
    case SIM_CANCELLED:
        return "Approval Denied";
    default:
        return NULL;
    }
}

#define LISTED_MASK                                                                                \
    (SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) |                      \
     SIM_MASK(SIM_CANCELLED))

static int listed(const struct sim_pop *pop, const struct sim_session *s, const struct params *p)
{
    const char *raw = raw_status(pop, s);
    if (!raw)
        return 0;
    if (strcmp(raw, "Active") == 0 || strcmp(raw, "In Progress") == 0)
        return p->include_active;
    if (!p->nstatuses)
        return 1;
    for (size_t i = 0; i < p->nstatuses; i++)
        if (strcmp(p->statuses[i], raw) == 0)
            return 1;
    return 0;
}

/* Positions of the page into pos (at most p->limit), the list's total in
 * *total. Without filters the index answers in O(limit log n); with them,
 * one scan of the population. */
static size_t list_page(const struct sim_pop *pop, const struct params *p, size_t *pos,
                        size_t *total)
{
    size_t n = 0;

    if (p->include_active && !p->nstatuses) {
        *total = sim_pop_count(pop, LISTED_MASK);
        for (size_t i = p->offset; i < *total && n < p->limit; i++) {
            size_t k = p->desc ? *total - 1 - i : i;
            pos[n++] = sim_pop_select(pop, LISTED_MASK, k);
        }
        return n;
    }
    size_t size = sim_pop_size(pop), rank = 0;
    for (size_t j = 0; j < size; j++) {
        size_t at = p->desc ? size - 1 - j : j;
        if (!listed(pop, sim_pop_at(pop, at), p))
            continue;
        if (rank >= p->offset && n < p->limit)
            pos[n++] = at;
        rank++;
    }
    *total = rank;
    return n;
}

/* ---- links ----------------------------------------------------------- */

static void url_encode(struct sim_buf *b, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
            strchr("-._~", *c))
            sim_buf_add(b, (const char *)c, 1);
        else
            sim_buf_printf(b, "%%%02X", *c);
    }
}

struct link_ctx {
    enum link_style style;
    unsigned port;
    const char *host; /* the request's Host header */
    const char *path;
    const struct params *p;
};

static void write_link(struct sim_buf *b, const struct link_ctx *l, size_t offset)
{
    struct sim_buf u;
    const struct params *p = l->p;

    sim_buf_init(&u);
    if (l->style == LINK_ABSOLUTE)
        sim_buf_printf(&u, "http://%s%s", l->host ? l->host : "127.0.0.1", l->path);
    else if (l->style == LINK_FOREIGN)
        sim_buf_printf(&u, "http://127.0.0.1:%u%s", l->port, l->path);
    else if (l->style != LINK_QUERY)
        sim_buf_puts(&u, l->path);
    sim_buf_printf(&u, "?offset=%zu&limit=%u", offset, p->limit);
    if (p->has_include && l->style != LINK_NO_ACTIVE)
        sim_buf_printf(&u, "&includeActive=%s", p->include_active ? "true" : "false");
    for (size_t i = 0; i < p->nstatuses; i++) {
        sim_buf_puts(&u, "&status=");
        url_encode(&u, p->statuses[i]);
    }
    for (size_t i = 0; i < p->nsort_keys; i++)
        sim_buf_puts(&u, "&sortKeys=createdDate");
    if (p->has_order)
        sim_buf_printf(&u, "&sortOrder=%s", p->desc ? "DESC" : "ASC");
    if (u.oom)
        b->oom = 1;
    else
        sim_buf_json_str(b, u.data);
    sim_buf_free(&u);
}

/* ---- the handler ----------------------------------------------------- */

static void write_record(const struct sim_pop *pop, const struct sim_session *s, struct sim_buf *b)
{
    int64_t edit = s->key_ms;
    if (s->start_ms > edit)
        edit = s->start_ms;
    if (s->end_ms > edit)
        edit = s->end_ms;
    sim_buf_printf(b, "{\"sid\":\"%s\",\"status\":", s->id);
    sim_buf_json_str(b, raw_status(pop, s));
    sim_buf_puts(b, ",\"sessionType\":");
    sim_buf_json_str(b, session_types[(s->outcome / 9) % 3]);
    sim_buf_puts(b, ",\"appointmentDate\":");
    sim_buf_json_time(b, s->key_ms + 30 * 60 * 1000);
    sim_buf_puts(b, ",\"createdDate\":");
    sim_buf_json_time(b, s->key_ms);
    sim_buf_puts(b, ",\"editDate\":");
    sim_buf_json_time(b, edit);
    sim_buf_puts(b, "}");
}

static void sp_handle(const struct sim_env *env, const struct sim_request *req,
                      struct sim_response *res)
{
    static const char *const prefixes[] = {"AI", "EN", "EX"};
    static const char *const names[] = {"installSid", "enrollmentSid", "examSid"};
    const struct sim_pop *pop = env->pop;
    const char *token = sim_request_header(req, "token");
    struct link_ctx l = {.style = LINK_RELATIVE, .path = req->path};
    struct params p;
    char sid[3][64];
    size_t *pos, total, n;
    struct sim_buf *b = &res->body;

    if (strcmp(req->method, "GET") != 0) {
        sim_response_header(res, "Allow", "GET");
        sim_error_body(res, 405, "only GET is supported");
        return;
    }
    if (!token || strcmp(token, env->api_key) != 0) {
        sim_error_body(res, 401, "Invalid token");
        return;
    }
    if (split_path(req->path, sid) < 0) {
        sim_error_body(res, 404, "no such endpoint");
        return;
    }
    for (int i = 0; i < 3; i++) {
        if (!valid_sid(sid[i], prefixes[i])) {
            bad_request(res, "%s must match ^%s[a-f0-9]{32}$", names[i], prefixes[i]);
            return;
        }
    }
    if (parse_params(req, &p, res) < 0)
        return;
    l.style = link_style(sid[0], &l.port);
    l.host = sim_request_header(req, "Host");
    l.p = &p;

    pos = malloc(sizeof(*pos) * (p.limit ? p.limit : 1));
    if (!pos) {
        sim_error_body(res, 500, "out of memory");
        return;
    }
    n = list_page(pop, &p, pos, &total);

    res->status = 200;
    res->content_type = CONTENT_JSON;
    sim_buf_printf(b, "{\"total\":%zu,\"first\":", total);
    write_link(b, &l, 0);
    sim_buf_puts(b, ",\"next\":");
    if (p.limit && p.offset + p.limit < total)
        write_link(b, &l, p.offset + p.limit);
    else
        sim_buf_puts(b, "null");
    sim_buf_puts(b, ",\"prev\":");
    if (p.offset > 0 && p.limit)
        write_link(b, &l, p.offset > p.limit ? p.offset - p.limit : 0);
    else
        sim_buf_puts(b, "null");
    sim_buf_puts(b, ",\"last\":");
    write_link(b, &l, total && p.limit ? (total - 1) / p.limit * p.limit : 0);
    sim_buf_printf(b, ",\"count\":%zu,\"offset\":%zu,\"results\":[", n, p.offset);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sim_buf_puts(b, ",");
        write_record(pop, sim_pop_at(pop, pos[i]), b);
    }
    sim_buf_puts(b, "]}");
    free(pos);
}

const struct sim_dialect sim_dialect_smarterproctoring = {
    .name = "smarterproctoring",
    .description = "SmarterProctoring (seed 004): enrollment exam sessions, offset paging",
    .default_prefix = "",
    .states = SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) |
              SIM_MASK(SIM_CANCELLED) | SIM_MASK(SIM_GONE),
    .route = sp_route,
    .handle = sp_handle,
};
