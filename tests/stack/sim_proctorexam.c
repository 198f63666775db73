/*
 * sim_proctorexam.c: the ProctorExam dialect of sb-provider-sim, as seed 003
 * documents it (see sim.c for running the simulator):
 *
 *   GET {prefix}/api/v3/exams/{exam_id}/index_students   (the seed's endpoint)
 *   GET {prefix}/api/v3/student_sessions?exam_id=N       (its successor)
 *
 * prefix defaults to "" (routes at the host root). Every request must carry
 * Authorization: Token token=<--api-key> and Accept:
 * application/vnd.procwise.v3, and a signed query: timestamp (unix ms,
 * within +-5 minutes of the real clock, whatever --clock-start says), nonce
 * (digits, never seen before by this process), signature (lowercase hex
 * HMAC-SHA256 keyed by --secret over every other parameter received, as
 * name=value with decoded values, sorted by name, joined by '?'). Failures
 * of any of these are a 403 with the seed's message and the reason; a
 * malformed parameter is a 400. page defaults to 1, limit to 300 (1..300);
 * status filters by one of the seed's eleven statuses; filter and sort must
 * be stringified JSON of the seed's shapes and are otherwise not applied.
 *
 * The answer is {"students":[...]} with X-Pagination-Page, -Page-Count,
 * -Item-Count and -Limit. Every exam id shows the same population (one
 * exam's students). Population states map to statuses: pending -> one of the
 * nine pending statuses (fixed per session, from its outcome), active ->
 * exam_started, completed -> exam_finished. ProctorExam has no cancelled
 * status: cancellations upstream are disappearances (state gone).
 *
 * Record ids are integers: the session UUID's first 13 random hex digits
 * (52 bits, skipping the version nibble), so a test maps the ground truth's
 * UUIDs to ids with int(h[:12] + h[13], 16), h the UUID without dashes.
 */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define CONTENT_JSON "application/json; charset=utf-8"
#define ACCEPT_V3 "application/vnd.procwise.v3"
#define INDEX_PREFIX "/api/v3/exams/"
#define INDEX_SUFFIX "/index_students"
#define SESSIONS_PATH "/api/v3/student_sessions"
/* The seed: "Default and maximum value is 300." */
#define PE_MAX_LIMIT 300
#define PE_MAX_PAGE 1000000000ULL
#define PE_MAX_EXAM_ID 999999999999999999ULL
/* Our own bound on the clock skew a timestamp may have. */
#define PE_SKEW_MS (5 * 60 * 1000)
/* The real API remembers nonces for 24 hours; the simulator remembers the
 * last this many (a 64-bit hash each), enough for any test or benchmark. */
#define PE_NONCE_MEMORY 65536
#define PE_NONCE_MAX_DIGITS 20
/* Longest string the simulator will sign. */
#define PE_SIGN_MAX 8192
#define PE_FORBIDDEN "You are not authorized to access this page."

static const char *const pending_statuses[] = {
    "registered",           "before_check_req_mail", "email_bounced",   "email_sent",
    "after_check_req_mail", "before_check_req",      "after_check_req", "in_setup",
    "exam_not_started",
};
#define NPENDING (sizeof(pending_statuses) / sizeof(pending_statuses[0]))

enum endpoint { EP_INDEX = 0, EP_SESSIONS };
static const char *const endpoint_names[] = {"index_students", "student_sessions"};

/* Seen nonces: a ring of hashes, scanned linearly (one request at a time,
 * under the simulator lock). */
static uint64_t nonce_ring[PE_NONCE_MEMORY];
static size_t nonce_count, nonce_next;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int nonce_seen(uint64_t h)
{
    for (size_t i = 0; i < nonce_count; i++)
        if (nonce_ring[i] == h)
            return 1;
    return 0;
}

static void nonce_remember(uint64_t h)
{
    nonce_ring[nonce_next] = h;
    nonce_next = (nonce_next + 1) % PE_NONCE_MEMORY;
    if (nonce_count < PE_NONCE_MEMORY)
        nonce_count++;
}

/* exam id from /api/v3/exams/{id}/index_students; 0 when not that shape. */
static uint64_t index_exam_id(const char *path)
{
    size_t np = strlen(INDEX_PREFIX), ns = strlen(INDEX_SUFFIX), len = strlen(path);
    char digits[24];
    uint64_t id;

    if (len <= np + ns || strncmp(path, INDEX_PREFIX, np) != 0 ||
        strcmp(path + len - ns, INDEX_SUFFIX) != 0 || len - np - ns >= sizeof(digits))
        return 0;
    memcpy(digits, path + np, len - np - ns);
    digits[len - np - ns] = '\0';
    if (sim_parse_u64(digits, 1, PE_MAX_EXAM_ID, &id) < 0)
        return 0;
    return id;
}

static const char *pe_route(const char *path)
{
    if (strcmp(path, SESSIONS_PATH) == 0)
        return endpoint_names[EP_SESSIONS];
    if (index_exam_id(path))
        return endpoint_names[EP_INDEX];
    return NULL;
}

__attribute__((format(printf, 3, 4))) static void fail(struct sim_response *res, int status,
                                                       const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sim_error_body(res, status, msg);
}

static const char *session_status(const struct sim_session *s)
{
    switch (s->state) {
    case SIM_ACTIVE:
        return "exam_started";
    case SIM_COMPLETED:
        return "exam_finished";
    default:
        return pending_statuses[s->outcome % NPENDING];
    }
}

/* 52 bits of the UUID: hex digits 0-11 and 13 (12 is the version). */
static uint64_t session_number(const struct sim_session *s)
{
    uint64_t v = 0;
    int taken = 0;
    for (const char *c = s->id; *c && taken < 13; c++) {
        int d;
        if (*c == '-')
            continue;
        if (c == s->id + 14) /* "xxxxxxxx-xxxx-Vxxx": the version nibble */
            continue;
        d = (*c >= '0' && *c <= '9') ? *c - '0' : (*c | 0x20) - 'a' + 10;
        v = (v << 4) | (uint64_t)d;
        taken++;
    }
    return v;
}

struct status_match {
    const char *status;
};

static int match_status(const struct sim_pop *p, const struct sim_session *s, void *opaque)
{
    const struct status_match *m = opaque;
    return strcmp(session_status(s), m->status) == 0;
}

static int param_cmp(const void *a, const void *b)
{
    const struct sim_param *x = *(const struct sim_param *const *)a;
    const struct sim_param *y = *(const struct sim_param *const *)b;
    int r = strcmp(x->key, y->key);
    return r ? r : strcmp(x->value, y->value);
}

/* 0 when signature is the HMAC of the other parameters, -1 otherwise. */
static int verify_signature(const struct sim_env *env, const struct sim_request *req,
                            const char *signature)
{
    const struct sim_param **sorted = calloc(req->nparams ? req->nparams : 1, sizeof(*sorted));
    struct sim_buf text;
    unsigned char mac[EVP_MAX_MD_SIZE], want[32];
    unsigned int maclen = 0;
    size_t n = 0;
    int rc = -1;

    if (sorted == NULL || strlen(signature) != 64)
        goto out;
    for (size_t i = 0; i < 32; i++) {
        unsigned hi, lo;
        char c1 = signature[2 * i], c2 = signature[2 * i + 1];
        if (!((c1 >= '0' && c1 <= '9') || (c1 >= 'a' && c1 <= 'f')) ||
            !((c2 >= '0' && c2 <= '9') || (c2 >= 'a' && c2 <= 'f')))
            goto out;
        hi = c1 <= '9' ? (unsigned)(c1 - '0') : (unsigned)(c1 - 'a' + 10);
        lo = c2 <= '9' ? (unsigned)(c2 - '0') : (unsigned)(c2 - 'a' + 10);
        want[i] = (unsigned char)(hi << 4 | lo);
    }
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].key, "signature") != 0)
            sorted[n++] = &req->params[i];
    qsort(sorted, n, sizeof(*sorted), param_cmp);
    sim_buf_init(&text);
    for (size_t i = 0; i < n; i++)
        sim_buf_printf(&text, "%s%s=%s", i ? "?" : "", sorted[i]->key, sorted[i]->value);
    if (!text.oom && text.len <= PE_SIGN_MAX &&
        HMAC(EVP_sha256(), env->secret, (int)strlen(env->secret),
             (const unsigned char *)(text.len ? text.data : ""), text.len, mac, &maclen) != NULL &&
        maclen == 32 && CRYPTO_memcmp(mac, want, 32) == 0)
        rc = 0;
    sim_buf_free(&text);
out:
    free(sorted);
    return rc;
}

struct params {
    uint64_t page, limit, exam_id;
    const char *timestamp, *nonce, *signature, *status;
};

#define ONCE(field)                                                                                \
    do {                                                                                           \
        if (p->field) {                                                                            \
            fail(res, 400, "%s must be given once", k);                                            \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* 0, or -1 after filling a 400 into res. */
static int parse_params(const struct sim_request *req, struct params *p, struct sim_response *res)
{
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < req->nparams; i++) {
        const char *k = req->params[i].key, *v = req->params[i].value;

        if (strcmp(k, "page") == 0) {
            ONCE(page);
            if (sim_parse_u64(v, 1, PE_MAX_PAGE, &p->page) < 0) {
                fail(res, 400, "page must be a positive integer");
                return -1;
            }
        } else if (strcmp(k, "limit") == 0) {
            ONCE(limit);
            if (sim_parse_u64(v, 1, PE_MAX_LIMIT, &p->limit) < 0) {
                fail(res, 400, "limit must be an integer from 1 to %d", PE_MAX_LIMIT);
                return -1;
            }
        } else if (strcmp(k, "exam_id") == 0) {
            ONCE(exam_id);
            if (sim_parse_u64(v, 1, PE_MAX_EXAM_ID, &p->exam_id) < 0) {
                fail(res, 400, "exam_id must be a positive integer");
                return -1;
            }
        } else if (strcmp(k, "timestamp") == 0) {
            ONCE(timestamp);
            p->timestamp = v;
        } else if (strcmp(k, "nonce") == 0) {
            ONCE(nonce);
            p->nonce = v;
        } else if (strcmp(k, "signature") == 0) {
            ONCE(signature);
            p->signature = v;
        } else if (strcmp(k, "status") == 0) {
            size_t j;
            ONCE(status);
            for (j = 0; j < NPENDING; j++)
                if (strcmp(v, pending_statuses[j]) == 0)
                    break;
            if (j == NPENDING && strcmp(v, "exam_started") != 0 &&
                strcmp(v, "exam_finished") != 0) {
                fail(res, 400, "status has to be one of the eleven documented statuses");
                return -1;
            }
            p->status = v;
        } else if (strcmp(k, "filter") == 0 || strcmp(k, "sort") == 0) {
            cJSON *doc = cJSON_Parse(v);
            int ok = strcmp(k, "filter") == 0 ? cJSON_IsObject(doc) : cJSON_IsArray(doc);
            cJSON_Delete(doc);
            if (!ok) {
                fail(res, 400, "%s must be stringified JSON (%s)", k,
                     strcmp(k, "filter") == 0 ? "an object" : "an array");
                return -1;
            }
        }
        /* Anything else is only signed. */
    }
    if (!p->timestamp || !p->nonce || !p->signature) {
        fail(res, 400, "timestamp, nonce and signature are required");
        return -1;
    }
    if (!p->page)
        p->page = 1;
    if (!p->limit)
        p->limit = PE_MAX_LIMIT;
    return 0;
}
#undef ONCE

static void write_record(const struct sim_pop *pop, const struct sim_session *s, uint64_t exam_id,
                         struct sim_buf *b)
{
    struct sim_user u;

    sim_pop_user(pop, s->user, &u);
    sim_buf_printf(b, "{\"id\":%llu,\"exam_id\":%llu,\"status\":\"%s\",\"student\":{\"id\":%u,",
                   (unsigned long long)session_number(s), (unsigned long long)exam_id,
                   session_status(s), s->user + 1);
    sim_buf_puts(b, "\"name\":");
    sim_buf_json_str(b, u.full);
    sim_buf_puts(b, ",\"email\":");
    sim_buf_json_str(b, u.email);
    sim_buf_puts(b, "},\"created_at\":");
    sim_buf_json_time(b, s->key_ms);
    sim_buf_puts(b, ",\"started_at\":");
    if (s->start_ms)
        sim_buf_json_time(b, s->start_ms);
    else
        sim_buf_puts(b, "null");
    sim_buf_puts(b, ",\"finished_at\":");
    if (s->state == SIM_COMPLETED)
        sim_buf_json_time(b, s->end_ms);
    else
        sim_buf_puts(b, "null");
    sim_buf_puts(b, "}");
}

static void pe_handle(const struct sim_env *env, const struct sim_request *req,
                      struct sim_response *res)
{
    enum endpoint ep = strcmp(req->path, SESSIONS_PATH) == 0 ? EP_SESSIONS : EP_INDEX;
    const char *auth = sim_request_header(req, "Authorization");
    const char *accept = sim_request_header(req, "Accept");
    char want_auth[512];
    struct params p;
    struct timespec now;
    int64_t now_ms;
    uint64_t ts, exam_id, h;
    struct sim_query q;
    struct sim_page *pg;
    struct status_match m;
    struct sim_buf *b = &res->body;

    if (strcmp(req->method, "GET") != 0) {
        sim_response_header(res, "Allow", "GET");
        sim_error_body(res, 405, "only GET is supported");
        return;
    }
    snprintf(want_auth, sizeof(want_auth), "Token token=%s", env->api_key);
    if (!auth || strcmp(auth, want_auth) != 0) {
        fail(res, 403, "%s (bad Authorization token)", PE_FORBIDDEN);
        return;
    }
    if (!accept || strstr(accept, ACCEPT_V3) == NULL) {
        fail(res, 406, "Accept must be %s", ACCEPT_V3);
        return;
    }
    if (parse_params(req, &p, res) < 0)
        return;
    exam_id = ep == EP_INDEX ? index_exam_id(req->path) : p.exam_id;
    if (!exam_id) {
        fail(res, 400, "exam_id is required");
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (sim_parse_u64(p.timestamp, 0, UINT64_C(253402300799999), &ts) < 0 ||
        (int64_t)ts < now_ms - PE_SKEW_MS || (int64_t)ts > now_ms + PE_SKEW_MS) {
        fail(res, 403, "%s (timestamp is not within 5 minutes of now, in milliseconds)",
             PE_FORBIDDEN);
        return;
    }
    if (verify_signature(env, req, p.signature) < 0) {
        fail(res, 403, "%s (signature mismatch)", PE_FORBIDDEN);
        return;
    }
    /* Only signed nonces are remembered: garbage cannot evict real ones. */
    if (!*p.nonce || strlen(p.nonce) > PE_NONCE_MAX_DIGITS ||
        strspn(p.nonce, "0123456789") != strlen(p.nonce)) {
        fail(res, 400, "nonce must be a number");
        return;
    }
    h = fnv1a(p.nonce);
    if (nonce_seen(h)) {
        fail(res, 403, "%s (nonce already used)", PE_FORBIDDEN);
        return;
    }
    nonce_remember(h);

    pg = malloc(sizeof(*pg));
    if (!pg) {
        sim_error_body(res, 500, "out of memory");
        return;
    }
    memset(&q, 0, sizeof(q));
    q.mask = SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED);
    if (p.status && strcmp(p.status, "exam_started") == 0) {
        q.mask = SIM_MASK(SIM_ACTIVE);
    } else if (p.status && strcmp(p.status, "exam_finished") == 0) {
        q.mask = SIM_MASK(SIM_COMPLETED);
    } else if (p.status) {
        q.mask = SIM_MASK(SIM_PENDING);
        m.status = p.status;
        q.match = match_status;
        q.opaque = &m;
    }
    q.lo = 0;
    q.hi = sim_pop_size(env->pop);
    q.from = SIM_FROM_OFFSET;
    q.offset = (size_t)((p.page - 1) * p.limit);
    q.limit = (size_t)p.limit;
    sim_pop_query(env->pop, &q, pg);

    res->status = 200;
    res->content_type = CONTENT_JSON;
    sim_response_header(res, "X-Pagination-Page", "%llu", (unsigned long long)p.page);
    sim_response_header(res, "X-Pagination-Page-Count", "%llu",
                        (unsigned long long)((pg->total + p.limit - 1) / p.limit));
    sim_response_header(res, "X-Pagination-Item-Count", "%zu", pg->total);
    sim_response_header(res, "X-Pagination-Limit", "%llu", (unsigned long long)p.limit);
    sim_buf_puts(b, "{\"students\":[");
    for (size_t i = 0; i < pg->n; i++) {
        if (i)
            sim_buf_puts(b, ",");
        write_record(env->pop, sim_pop_at(env->pop, pg->pos[i]), exam_id, b);
    }
    sim_buf_puts(b, "]}");
    free(pg);
}

const struct sim_dialect sim_dialect_proctorexam = {
    .name = "proctorexam",
    .description = "ProctorExam (seed 003): index_students and student_sessions, signed queries",
    .default_prefix = "",
    .states =
        SIM_MASK(SIM_PENDING) | SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_COMPLETED) | SIM_MASK(SIM_GONE),
    .route = pe_route,
    .handle = pe_handle,
};
