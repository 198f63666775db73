/*
 * sim_century.c: the Century Smart IA dialect of sb-provider-sim, as the
 * seeds 000 and 001 document it (see sim.c for running the simulator):
 *
 *   GET {prefix}/smart-ia/sessions/in-progress   active sessions, IN_PROGRESS
 *   GET {prefix}/smart-ia/sessions/completed     completed sessions, COMPLETED
 *
 * prefix defaults to /api/v1. Header x-api-key must equal --api-key (401).
 * Query: limit 1..100 (default 100); cursor (pagination.nextCursor or
 * previousCursor of an earlier page) or offset, not both;
 * startDate[gt|gte|lt|lte] as ISO 8601 or unix seconds (gt with gte, or lt
 * with lte, is a 400); userId, testId (UUIDs) and subject repeatable up to 30
 * times each; sort[field]=startDate and sort[direction]=asc only. Anything
 * invalid is a 400 with a JSON error; unknown parameters are ignored.
 *
 * Lists are ordered by startDate then sessionId. Cursors are base64 of a
 * small JSON keyset ({"list":..,"dir":"after","key":[ms,"id"],"limit":N}),
 * so sessions that start, complete or vanish between two pages neither
 * repeat nor skip the others. Century has no pending or cancelled session:
 * cancellations upstream are disappearances (state gone).
 */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

/* From the seeds: limit is 1..100 and defaults to 100; each of userId,
 * testId and subject takes at most 30 values. */
#define CENTURY_MAX_LIMIT 100
#define CENTURY_MAX_IDS 30
/* Our own cursors are < 200 characters; anything much longer is not ours. */
#define CENTURY_MAX_CURSOR 512
/* offset is an int32 in the seed. */
#define CENTURY_MAX_OFFSET 2147483647ULL

#define CONTENT_JSON "application/json; charset=utf-8"

enum list_kind { LIST_IN_PROGRESS = 0, LIST_COMPLETED };
static const char *const list_names[] = {"in-progress", "completed"};

/* Keyset directions: the page starts after / from the key, or ends before /
 * up to it. */
enum cursor_dir { DIR_AFTER = 0, DIR_FROM, DIR_BEFORE, DIR_UPTO };
static const char *const dir_names[] = {"after", "from", "before", "upto"};

enum id_filter { F_USER = 0, F_TEST, F_SUBJECT, F_COUNT };
static const char *const filter_names[F_COUNT] = {"userId", "testId", "subject"};

enum bound { B_GT = 0, B_GTE, B_LT, B_LTE, B_COUNT };
static const char *const bound_names[B_COUNT] = {"startDate[gt]", "startDate[gte]", "startDate[lt]",
                                                 "startDate[lte]"};

static const char *const levels[] = {"Entry 1",    "Entry 2",     "Entry 3",
                                     "L1 - Lower", "L1 - Middle", "L1 - Upper",
                                     "L2 - Lower", "L2 - Middle", "L2 - Upper"};

struct cursor {
    enum cursor_dir dir;
    int64_t ms;
    char id[SIM_UUID_LEN + 1];
    unsigned limit;
};

struct params {
    int has_limit;
    unsigned limit;
    int has_offset;
    size_t offset;
    int has_cursor;
    struct cursor cursor;
    int has_bound[B_COUNT];
    int64_t bound[B_COUNT];
    const char *ids[F_COUNT][CENTURY_MAX_IDS];
    size_t nids[F_COUNT];
};

/* Filters the index cannot answer, resolved to the user and test indexes
 * they select so that matching a session is two lookups. */
struct match_ctx {
    int by_user;
    unsigned char *users; /* bitmap over the user pool */
    unsigned tests;       /* bitmask over the test table */
    int by_test;
};

static const char *century_route(const char *path)
{
    if (strcmp(path, "/smart-ia/sessions/in-progress") == 0)
        return list_names[LIST_IN_PROGRESS];
    if (strcmp(path, "/smart-ia/sessions/completed") == 0)
        return list_names[LIST_COMPLETED];
    return NULL;
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

/* ---- cursors --------------------------------------------------------- */

static void cursor_encode(enum list_kind list, enum cursor_dir dir, int64_t ms, const char *id,
                          unsigned limit, struct sim_buf *out)
{
    char json[256], b64[4 * (sizeof(json) / 3 + 1) + 1];
    int n = snprintf(json, sizeof(json),
                     "{\"list\":\"%s\",\"dir\":\"%s\",\"key\":[%lld,\"%s\"],"
                     "\"limit\":%u}",
                     list_names[list], dir_names[dir], (long long)ms, id, limit);

    sim_b64_encode((const unsigned char *)json, (size_t)n, b64);
    sim_buf_json_str(out, b64);
}

static int cursor_decode(const char *text, enum list_kind list, struct cursor *c)
{
    unsigned char raw[CENTURY_MAX_CURSOR];
    size_t len;
    cJSON *root, *item, *key0, *key1;
    int ok = 0;

    if (strlen(text) > CENTURY_MAX_CURSOR || sim_b64_decode(text, raw, sizeof(raw) - 1, &len) < 0)
        return -1;
    root = cJSON_ParseWithLength((const char *)raw, len);
    if (!root)
        return -1;
    item = cJSON_GetObjectItemCaseSensitive(root, "list");
    if (!cJSON_IsString(item) || strcmp(item->valuestring, list_names[list]) != 0)
        goto out;
    item = cJSON_GetObjectItemCaseSensitive(root, "dir");
    if (!cJSON_IsString(item))
        goto out;
    for (c->dir = DIR_AFTER; c->dir <= DIR_UPTO; c->dir++)
        if (strcmp(item->valuestring, dir_names[c->dir]) == 0)
            break;
    if (c->dir > DIR_UPTO)
        goto out;
    item = cJSON_GetObjectItemCaseSensitive(root, "key");
    key0 = cJSON_GetArrayItem(item, 0);
    key1 = cJSON_GetArrayItem(item, 1);
    if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2 || !cJSON_IsNumber(key0) ||
        !cJSON_IsString(key1) || !sim_is_uuid(key1->valuestring) || key0->valuedouble < 0 ||
        key0->valuedouble > 253402300799999.0)
        goto out;
    c->ms = (int64_t)key0->valuedouble;
    memcpy(c->id, key1->valuestring, SIM_UUID_LEN + 1);
    item = cJSON_GetObjectItemCaseSensitive(root, "limit");
    if (!cJSON_IsNumber(item) || item->valuedouble < 1 || item->valuedouble > CENTURY_MAX_LIMIT)
        goto out;
    c->limit = (unsigned)item->valuedouble;
    ok = 1;
out:
    cJSON_Delete(root);
    return ok ? 0 : -1;
}

/* ---- parameters ------------------------------------------------------ */

#define FAIL(fmt, arg)                                                                             \
    do {                                                                                           \
        bad_request(res, fmt, arg);                                                                \
        return -1;                                                                                 \
    } while (0)

/* Returns 0, or -1 after filling a 400 into res. */
static int parse_params(const struct sim_request *req, enum list_kind list, struct params *p,
                        struct sim_response *res)
{
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < req->nparams; i++) {
        const char *k = req->params[i].key, *v = req->params[i].value;
        int b, f;

        if (strcmp(k, "limit") == 0) {
            uint64_t n;
            if (p->has_limit++)
                FAIL("%s must be given once", k);
            if (sim_parse_u64(v, 1, CENTURY_MAX_LIMIT, &n) < 0)
                FAIL("limit must be an integer from 1 to %s", "100");
            p->limit = (unsigned)n;
            continue;
        }
        if (strcmp(k, "offset") == 0) {
            uint64_t n;
            if (p->has_offset++)
                FAIL("%s must be given once", k);
            if (sim_parse_u64(v, 0, CENTURY_MAX_OFFSET, &n) < 0)
                FAIL("%s must be a non-negative integer", k);
            p->offset = (size_t)n;
            continue;
        }
        if (strcmp(k, "cursor") == 0) {
            if (p->has_cursor)
                FAIL("%s must be given once", k);
            if (!*v) /* cursor= stands for "no cursor", as null would */
                continue;
            if (cursor_decode(v, list, &p->cursor) < 0)
                FAIL("invalid %s", k);
            p->has_cursor = 1;
            continue;
        }
        for (b = 0; b < B_COUNT; b++)
            if (strcmp(k, bound_names[b]) == 0)
                break;
        if (b < B_COUNT) {
            if (p->has_bound[b]++)
                FAIL("%s must be given once", k);
            if (sim_parse_time(v, &p->bound[b]) < 0)
                FAIL("%s must be an ISO 8601 date or a unix timestamp", k);
            continue;
        }
        if (strncmp(k, "startDate", 9) == 0)
            FAIL("unsupported startDate operator in %s", k);
        for (f = 0; f < F_COUNT; f++)
            if (strcmp(k, filter_names[f]) == 0)
                break;
        if (f < F_COUNT) {
            if (p->nids[f] == CENTURY_MAX_IDS)
                FAIL("%s must contain at most 30 elements", k);
            if (f == F_SUBJECT ? !*v : !sim_is_uuid(v))
                FAIL(f == F_SUBJECT ? "%s must not be empty" : "%s must be a UUID", k);
            p->ids[f][p->nids[f]++] = v;
            continue;
        }
        if (strcmp(k, "sort[field]") == 0 && strcmp(v, "startDate") != 0)
            FAIL("%s: the simulator only sorts by startDate", k);
        if (strcmp(k, "sort[direction]") == 0 && strcmp(v, "asc") != 0)
            FAIL("%s: the simulator only sorts ascending", k);
        /* Anything else is ignored, as the real API would. */
    }
    if (p->has_bound[B_GT] && p->has_bound[B_GTE])
        FAIL("%s", "startDate[gt] and startDate[gte] cannot be used together");
    if (p->has_bound[B_LT] && p->has_bound[B_LTE])
        FAIL("%s", "startDate[lt] and startDate[lte] cannot be used together");
    if (p->has_offset && p->has_cursor)
        FAIL("%s", "offset cannot be used with cursor");
    if (!p->has_limit)
        p->limit = p->has_cursor ? p->cursor.limit : CENTURY_MAX_LIMIT;
    return 0;
}
#undef FAIL

static int match_session(const struct sim_pop *pop, const struct sim_session *s, void *opaque)
{
    const struct match_ctx *m = opaque;

    if (m->by_user && !(m->users[s->user / 8] & (1u << (s->user % 8))))
        return 0;
    if (m->by_test && !(m->tests & (1u << s->test)))
        return 0;
    return 1;
}

/* Resolves userId, testId and subject to pool indexes; O(users) when
 * filtering by user. -1 on memory exhaustion. */
static int match_prepare(const struct sim_pop *pop, const struct params *p, struct match_ctx *m)
{
    memset(m, 0, sizeof(*m));
    if (p->nids[F_USER]) {
        uint32_t users = sim_pop_users(pop);
        m->by_user = 1;
        m->users = calloc(users / 8 + 1, 1);
        if (!m->users)
            return -1;
        for (uint32_t u = 0; u < users; u++) {
            struct sim_user info;
            sim_pop_user(pop, u, &info);
            for (size_t i = 0; i < p->nids[F_USER]; i++)
                if (strcasecmp(info.id, p->ids[F_USER][i]) == 0)
                    m->users[u / 8] |= (unsigned char)(1u << (u % 8));
        }
    }
    if (p->nids[F_TEST] || p->nids[F_SUBJECT]) {
        unsigned all = 0;
        m->by_test = 1;
        for (unsigned t = 0; t < sim_pop_tests(pop); t++) {
            const struct sim_test *test = sim_pop_test(pop, t);
            int ok_test = !p->nids[F_TEST], ok_subject = !p->nids[F_SUBJECT];
            for (size_t i = 0; i < p->nids[F_TEST]; i++)
                ok_test |= strcasecmp(test->id, p->ids[F_TEST][i]) == 0;
            for (size_t i = 0; i < p->nids[F_SUBJECT]; i++)
                ok_subject |= strcmp(test->subject, p->ids[F_SUBJECT][i]) == 0;
            if (ok_test && ok_subject)
                all |= 1u << t;
        }
        m->tests = all;
    }
    return 0;
}

/* ---- records --------------------------------------------------------- */

static void write_record(const struct sim_pop *pop, const struct sim_session *s, struct sim_buf *b)
{
    const struct sim_test *t = sim_pop_test(pop, s->test);
    struct sim_user u;
    int done = s->state == SIM_COMPLETED;

    sim_pop_user(pop, s->user, &u);
    sim_buf_puts(b, "{\"test\":{\"name\":");
    sim_buf_json_str(b, t->name);
    sim_buf_printf(b, ",\"testId\":\"%s\",\"subject\":", t->id);
    sim_buf_json_str(b, t->subject);
    sim_buf_printf(b, ",\"testVersionId\":\"%s\"},\"user\":{\"emails\":[", t->version_id);
    sim_buf_json_str(b, u.email);
    sim_buf_printf(b, "],\"gender\":\"%s\",\"userId\":\"%s\",\"fullName\":", u.gender, u.id);
    sim_buf_json_str(b, u.full);
    sim_buf_puts(b, ",\"lastName\":");
    sim_buf_json_str(b, u.last);
    sim_buf_puts(b, ",\"username\":");
    sim_buf_json_str(b, u.username);
    sim_buf_puts(b, ",\"firstName\":");
    sim_buf_json_str(b, u.first);
    sim_buf_printf(b, ",\"dateOfBirth\":\"%s\"", u.birth_date);
    if (u.external_id[0]) {
        sim_buf_puts(b, ",\"externalId\":");
        sim_buf_json_str(b, u.external_id);
    }
    sim_buf_puts(b, "},");
    if (done) {
        char dur[32];
        sim_format_duration(s->end_ms - s->start_ms, dur, sizeof(dur));
        sim_buf_puts(b, "\"result\":{\"level\":");
        sim_buf_json_str(b, levels[s->outcome % (sizeof(levels) / sizeof(levels[0]))]);
        sim_buf_printf(b, ",\"duration\":\"%s\",\"createdDate\":", dur);
        sim_buf_json_time(b, s->end_ms);
        sim_buf_puts(b, "},\"status\":\"COMPLETED\",\"endDate\":");
        sim_buf_json_time(b, s->end_ms);
        sim_buf_puts(b, ",");
    } else {
        sim_buf_puts(b, "\"status\":\"IN_PROGRESS\",");
    }
    sim_buf_printf(b, "\"sessionId\":\"%s\",\"startDate\":", s->id);
    sim_buf_json_time(b, s->start_ms);
    sim_buf_puts(b, "}");
}

/* ---- the handler ----------------------------------------------------- */

/* One of a page's two cursors (next or previous), or null when the list has
 * nothing more on that side. A page with items is keyed on its edge item,
 * edge_dir facing away from the page; an empty page has no edge, so the key
 * is the one of the cursor that asked for it, turned by the caller (key_dir)
 * to face that side. */
static void write_cursor(enum list_kind list, const struct params *p, int more,
                         const struct sim_session *edge, enum cursor_dir edge_dir,
                         enum cursor_dir key_dir, struct sim_buf *b)
{
    if (more && edge)
        cursor_encode(list, edge_dir, edge->key_ms, edge->id, p->limit, b);
    else if (more && p->has_cursor)
        cursor_encode(list, key_dir, p->cursor.ms, p->cursor.id, p->limit, b);
    else
        sim_buf_puts(b, "null");
}

static void century_handle(const struct sim_env *env, const struct sim_request *req,
                           struct sim_response *res)
{
    enum list_kind list = strcmp(century_route(req->path), list_names[LIST_COMPLETED]) == 0
                              ? LIST_COMPLETED
                              : LIST_IN_PROGRESS;
    const struct sim_pop *pop = env->pop;
    const char *key = sim_request_header(req, "x-api-key");
    struct sim_query q;
    struct match_ctx m;
    struct params p;
    struct sim_page *pg;
    struct sim_buf *b = &res->body;

    if (strcmp(req->method, "GET") != 0) {
        sim_response_header(res, "Allow", "GET");
        sim_error_body(res, 405, "only GET is supported");
        return;
    }
    if (!key || strcmp(key, env->api_key) != 0) {
        sim_error_body(res, 401, "Invalid authentication credentials");
        return;
    }
    if (parse_params(req, list, &p, res) < 0)
        return;
    pg = malloc(sizeof(*pg));
    if (!pg || match_prepare(pop, &p, &m) < 0) {
        free(pg);
        sim_error_body(res, 500, "out of memory");
        return;
    }

    memset(&q, 0, sizeof(q));
    q.mask = SIM_MASK(list == LIST_COMPLETED ? SIM_COMPLETED : SIM_ACTIVE);
    q.lo = 0;
    q.hi = sim_pop_size(pop);
    /* Century sessions are created active, so startDate is the index key. */
    if (p.has_bound[B_GT])
        q.lo = sim_pop_bound(pop, p.bound[B_GT] + 1, NULL, 0);
    if (p.has_bound[B_GTE])
        q.lo = sim_pop_bound(pop, p.bound[B_GTE], NULL, 0);
    if (p.has_bound[B_LT])
        q.hi = sim_pop_bound(pop, p.bound[B_LT], NULL, 0);
    if (p.has_bound[B_LTE])
        q.hi = sim_pop_bound(pop, p.bound[B_LTE] + 1, NULL, 0);
    if (m.by_user || m.by_test) {
        q.match = match_session;
        q.opaque = &m;
    }
    q.limit = p.limit;
    if (p.has_cursor) {
        int after = p.cursor.dir == DIR_AFTER || p.cursor.dir == DIR_FROM;
        int strict = p.cursor.dir == DIR_AFTER || p.cursor.dir == DIR_UPTO;
        q.from = after ? SIM_FROM_AFTER : SIM_FROM_BEFORE;
        q.anchor = sim_pop_bound(pop, p.cursor.ms, p.cursor.id, strict);
    } else {
        q.from = SIM_FROM_OFFSET;
        q.offset = p.offset;
    }
    sim_pop_query(pop, &q, pg);
    free(m.users);

    res->status = 200;
    res->content_type = CONTENT_JSON;
    sim_buf_puts(b, "{\"data\":[");
    for (size_t i = 0; i < pg->n; i++) {
        if (i)
            sim_buf_puts(b, ",");
        write_record(pop, sim_pop_at(pop, pg->pos[i]), b);
    }
    sim_buf_printf(b, "],\"pagination\":{\"limit\":%u,\"total\":%zu,\"offset\":%zu,\"nextCursor\":",
                   p.limit, pg->total, pg->offset);
    /* After the last item; an empty page before the key: what follows
     * starts at the key. */
    write_cursor(list, &p, pg->has_next, pg->n ? sim_pop_at(pop, pg->pos[pg->n - 1]) : NULL,
                 DIR_AFTER, p.cursor.dir == DIR_UPTO ? DIR_AFTER : DIR_FROM, b);
    sim_buf_puts(b, ",\"previousCursor\":");
    /* Before the first item; an empty page after the key: what precedes
     * ends at the key. */
    write_cursor(list, &p, pg->has_prev, pg->n ? sim_pop_at(pop, pg->pos[0]) : NULL, DIR_BEFORE,
                 p.cursor.dir == DIR_FROM ? DIR_BEFORE : DIR_UPTO, b);
    sim_buf_puts(b, "}}");
    free(pg);
}

const struct sim_dialect sim_dialect_century = {
    .name = "century",
    .description = "Century Smart IA (seeds 000, 001): in-progress and completed session lists",
    .default_prefix = "/api/v1",
    .states = SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) | SIM_MASK(SIM_GONE),
    .route = century_route,
    .handle = century_handle,
};
