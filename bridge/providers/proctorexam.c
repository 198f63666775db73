/*
 * proctorexam: the ProctorExam adapter (seed 003, CONTRACT §4).
 *
 * One poll lists the students of one exam, page by page:
 *
 *   GET {base_url}/api/v3/exams/{exam_id}/index_students      (the seed's, default)
 *   GET {base_url}/api/v3/student_sessions?exam_id={exam_id}  ("endpoint": "student_sessions")
 *
 * with the headers Authorization: Token token=<api_token> and
 * Accept: application/vnd.procwise.v3, and a signed query: page, limit,
 * timestamp (unix milliseconds), nonce, the optional filters (status, and
 * filter and sort as compact stringified JSON), then signature, the lowercase
 * hex HMAC-SHA256 keyed by secret_key of every other parameter sent, as
 * "name=value" with the values NOT encoded, sorted by name (byte order) and
 * joined by signature_join ("?" as the seed says). The URL itself carries
 * every value percent-encoded.
 *
 * Paging: the X-Pagination-* response headers decide (continue while
 * X-Pagination-Page < X-Pagination-Page-Count). When X-Pagination-Page-Count
 * is missing or not a bounded number, the adapter falls back to page size:
 * a full page (records == limit) asks for the next one, a short or empty
 * page ends the poll. That fallback costs one extra empty request when the
 * list is an exact multiple of the limit, and can never end a poll early
 * on a full page.
 *
 * The API pages by offset: a student who leaves the list (or whose status
 * changes under a status filter) while we page shifts the later records by
 * one, so one record may be missed in that poll. The diff's vanish_grace
 * (default 2 complete polls) absorbs such a miss; keep it at 2 or more.
 */
#include "config.h"
#include "provider.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* The seed: limit "Default and maximum value is 300." */
#define PE_MAX_LIMIT 300
/* Exam ids are integers; 18 digits keep them below 2^63. */
#define PE_EXAM_ID_MAX_DIGITS 18
/* As a JSON number, well below 2^53 so that the double holds it exactly. */
#define PE_EXAM_ID_NUMBER_MAX 1000000000000000LL
/* The seed only says "joined by '?'"; a separator is a few bytes at most. */
#define PE_JOIN_MAX 8
/* filter and sort, stringified: percent-encoding may triple them and the
 * URL helper encodes values of up to 2 KiB. */
#define PE_JSON_PARAM_MAX 600
/* Pagination headers are page and item counts: 9 digits is a billion. */
#define PE_HEADER_DIGITS_MAX 9
/* A record id longer than this is not an id. */
#define PE_ID_MAX 128
/* Parameters one request signs: page, limit, timestamp, nonce, exam_id,
 * status, filter, sort. */
#define PE_MAX_PARAMS 8
#define PE_SIG_HEX_LEN 64

static const char *const pe_keys[] = {"exam_id", "endpoint", "signature_join", NULL};
static const char *const auth_keys[] = {"api_token", "secret_key", NULL};
static const char *const filter_keys[] = {"status", "filter", "sort", NULL};

/* The seed's eleven statuses, in its order; also the status filter's domain. */
static const provider_status_t pe_statuses[] = {
    {"registered", DIFF_STATE_PENDING},           {"before_check_req_mail", DIFF_STATE_PENDING},
    {"email_bounced", DIFF_STATE_PENDING},        {"email_sent", DIFF_STATE_PENDING},
    {"after_check_req_mail", DIFF_STATE_PENDING}, {"before_check_req", DIFF_STATE_PENDING},
    {"after_check_req", DIFF_STATE_PENDING},      {"in_setup", DIFF_STATE_PENDING},
    {"exam_not_started", DIFF_STATE_PENDING},     {"exam_started", DIFF_STATE_ACTIVE},
    {"exam_finished", DIFF_STATE_COMPLETED},      {NULL, DIFF_STATE_NONE},
};

enum pe_endpoint { PE_INDEX_STUDENTS = 0, PE_STUDENT_SESSIONS };

typedef struct pe_conf {
    char exam_id[PE_EXAM_ID_MAX_DIGITS + 1]; /* normalised decimal */
    enum pe_endpoint endpoint;
    char join[PE_JOIN_MAX + 1];
    char *api_token;        /* secret */
    char *secret_key;       /* secret */
    const char *status;     /* points into pe_statuses; NULL: no filter */
    char *filter;           /* compact JSON text, or NULL */
    char *sort;             /* compact JSON text, or NULL */
    page_scan_spec_t *scan; /* the page's paths, split once */
} pe_conf_t;

/* ---- configuration ---- */

static void free_secret(char *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static void pe_free_config(void *p)
{
    pe_conf_t *c = p;
    if (c == NULL)
        return;
    free_secret(c->api_token);
    free_secret(c->secret_key);
    free(c->filter);
    free(c->sort);
    page_scan_spec_free(c->scan);
    free(c);
}

/* exam_id: a positive integer, as a JSON number or a string of digits. */
static void configure_exam_id(pe_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, "exam_id");
    unsigned long long id = 0;
    int ok = 0;

    sink_conf_path(sub, sizeof(sub), path, "exam_id");
    if (v == NULL) {
        sink_errors_add(errs, sub, "required, expected a positive integer (or exam_ids)");
        return;
    }
    if (cJSON_IsNumber(v)) {
        long long ll;
        ok = sink_exact_integer(v->valuedouble, 1, PE_EXAM_ID_NUMBER_MAX, &ll) == 0;
        id = ok ? (unsigned long long)ll : 0;
    } else if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        size_t n = strlen(s);
        if (n >= 1 && n <= PE_EXAM_ID_MAX_DIGITS && strspn(s, "0123456789") == n) {
            id = strtoull(s, NULL, 10);
            ok = id >= 1;
        }
    }
    if (!ok) {
        sink_errors_add(errs, sub, "expected a positive integer or a string of at most %d digits",
                        PE_EXAM_ID_MAX_DIGITS);
        return;
    }
    snprintf(c->exam_id, sizeof(c->exam_id), "%llu", id);
}

static void configure_auth(pe_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX];
    const char *token = NULL, *secret = NULL;
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(src, "auth");

    sink_conf_path(sub, sizeof(sub), path, "auth");
    if (!cJSON_IsObject(auth)) {
        sink_errors_add(errs, sub, "required, expected an object with api_token and secret_key");
        return;
    }
    sink_conf_check_keys(auth, sub, auth_keys, errs);
    /* The token goes into a header line, the key into every signature. */
    if (sink_conf_request_string(auth, sub, "api_token", true, NULL, &token, errs) == 0 && token)
        c->api_token = strdup(token);
    if (sink_conf_request_string(auth, sub, "secret_key", true, NULL, &secret, errs) == 0 && secret)
        c->secret_key = strdup(secret);
}

/* sort: [{"column": "asc"|"desc"}, ...], the seed's shape. */
static int valid_sort(const cJSON *v)
{
    if (!cJSON_IsArray(v) || v->child == NULL)
        return 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsObject(e) || e->child == NULL)
            return 0;
        for (const cJSON *m = e->child; m; m = m->next) {
            if (!cJSON_IsString(m) ||
                (strcmp(m->valuestring, "asc") != 0 && strcmp(m->valuestring, "desc") != 0))
                return 0;
        }
    }
    return 1;
}

/* filter: {"column": {"operator": value, ...}, ...}, the seed's shape. The
 * operator names are not checked: the seed's own example uses "operator". */
static int valid_filter(const cJSON *v)
{
    if (!cJSON_IsObject(v) || v->child == NULL)
        return 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsObject(e) || e->child == NULL)
            return 0;
    }
    return 1;
}

static char *stringify(const cJSON *v, const char *path, sink_errors_t *errs)
{
    char *text = cJSON_PrintUnformatted(v);
    if (text == NULL) {
        sink_errors_add(errs, path, "out of memory");
        return NULL;
    }
    if (strlen(text) > PE_JSON_PARAM_MAX) {
        sink_errors_add(errs, path, "longer than %d bytes once stringified", PE_JSON_PARAM_MAX);
        cJSON_free(text);
        return NULL;
    }
    char *out = strdup(text);
    cJSON_free(text);
    return out;
}

static void configure_filters(pe_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    char fpath[SINK_PATH_MAX], sub[SINK_PATH_MAX];
    const cJSON *filters = cJSON_GetObjectItemCaseSensitive(src, "filters");
    const char *status = NULL;

    if (filters == NULL)
        return;
    sink_conf_path(fpath, sizeof(fpath), path, "filters");
    if (!cJSON_IsObject(filters)) {
        sink_errors_add(errs, fpath, "expected an object with status, filter, sort");
        return;
    }
    sink_conf_check_keys(filters, fpath, filter_keys, errs);

    if (sink_conf_string(filters, fpath, "status", false, NULL, &status, errs) == 0 && status) {
        for (const provider_status_t *s = pe_statuses; s->raw; s++) {
            if (strcmp(s->raw, status) == 0)
                c->status = s->raw;
        }
        if (c->status == NULL)
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), fpath, "status"),
                            "expected one of registered, before_check_req_mail, email_bounced, "
                            "email_sent, after_check_req_mail, before_check_req, after_check_req, "
                            "in_setup, exam_not_started, exam_started, exam_finished");
    }

    const cJSON *filter = cJSON_GetObjectItemCaseSensitive(filters, "filter");
    if (filter) {
        sink_conf_path(sub, sizeof(sub), fpath, "filter");
        if (!valid_filter(filter))
            sink_errors_add(errs, sub,
                            "expected an object of column -> {operator: value}, e.g. "
                            "{\"column_name\": {\"eq\": \"value\"}}");
        else
            c->filter = stringify(filter, sub, errs);
    }
    const cJSON *sort = cJSON_GetObjectItemCaseSensitive(filters, "sort");
    if (sort) {
        sink_conf_path(sub, sizeof(sub), fpath, "sort");
        if (!valid_sort(sort))
            sink_errors_add(errs, sub,
                            "expected a non-empty array of {column: \"asc\"|\"desc\"} objects");
        else
            c->sort = stringify(sort, sub, errs);
    }
}

static void *pe_configure(const cJSON *src, const char *path, sink_errors_t *errs)
{
    pe_conf_t *c = calloc(1, sizeof(*c));
    char sub[SINK_PATH_MAX];
    const char *endpoint = NULL;
    size_t before = errs->count;

    if (c == NULL) {
        sink_errors_add(errs, path, "out of memory");
        return NULL;
    }
    configure_exam_id(c, src, path, errs);
    configure_auth(c, src, path, errs);
    if (sink_conf_string(src, path, "endpoint", false, "index_students", &endpoint, errs) == 0 &&
        endpoint) {
        if (strcmp(endpoint, "index_students") == 0)
            c->endpoint = PE_INDEX_STUDENTS;
        else if (strcmp(endpoint, "student_sessions") == 0)
            c->endpoint = PE_STUDENT_SESSIONS;
        else
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "endpoint"),
                            "expected \"index_students\" or \"student_sessions\"");
    }
    /* The separator may be any short string, even empty, so not
     * sink_conf_string() (which wants a non-empty one). */
    const cJSON *join = cJSON_GetObjectItemCaseSensitive(src, "signature_join");
    snprintf(c->join, sizeof(c->join), "?");
    if (join) {
        if (!cJSON_IsString(join) || strlen(join->valuestring) > PE_JOIN_MAX ||
            sink_has_control(join->valuestring))
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "signature_join"),
                            "expected a string of at most %d bytes without control characters",
                            PE_JOIN_MAX);
        else
            snprintf(c->join, sizeof(c->join), "%s", join->valuestring);
    }
    configure_filters(c, src, path, errs);
    c->scan = provider_scan_spec(
        &(page_scan_paths_t){.records = "students", .id = "id", .status = "status"}, path, errs);
    if (errs->count != before) {
        pe_free_config(c);
        return NULL;
    }
    if (c->api_token == NULL || c->secret_key == NULL) {
        sink_errors_add(errs, path, "out of memory");
        pe_free_config(c);
        return NULL;
    }
    return c;
}

/* ---- signing ---- */

typedef struct pe_param {
    const char *name;
    const char *value;
} pe_param_t;

static int param_cmp(const void *a, const void *b)
{
    const pe_param_t *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    return r ? r : strcmp(x->value, y->value);
}

/*
 * The seed's signature: params sorted by name (in place), each as
 * "name=value" with the value unencoded, joined by join, HMAC-SHA256 keyed
 * by secret, as 64 lowercase hex digits into hex. 0, or -1 when the string
 * to sign does not fit (it is bounded like the URL) or OpenSSL fails.
 */
static int pe_sign(const char *secret, const char *join, pe_param_t *params, size_t n,
                   char hex[PE_SIG_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    char text[PROVIDER_URL_MAX];
    size_t len = 0;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    qsort(params, n, sizeof(*params), param_cmp);
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(text + len, sizeof(text) - len, "%s%s=%s", i ? join : "", params[i].name,
                         params[i].value);
        if (w < 0 || (size_t)w >= sizeof(text) - len)
            return -1;
        len += (size_t)w;
    }
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)text, len, mac,
             &maclen) == NULL ||
        maclen != PE_SIG_HEX_LEN / 2)
        return -1;
    for (unsigned int i = 0; i < maclen; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[PE_SIG_HEX_LEN] = '\0';
    return 0;
}

/*
 * The nonce must be "unique between the api calls made in the previous 24
 * hours", across our restarts and across replicas sharing the token, which
 * rules out counters. 64 bits from the CSPRNG: even at 10 requests per
 * second for 24 hours (864,000 calls) the chance of any repeat is about
 * n^2 / 2^65 = 2e-8, and nothing about it survives or depends on a restart.
 */
static int pe_nonce(char *out, size_t n)
{
    unsigned char b[8];
    unsigned long long v = 0;
    if (RAND_bytes(b, (int)sizeof(b)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(b); i++)
        v = (v << 8) | b[i];
    snprintf(out, n, "%llu", v);
    return 0;
}

/* ---- one poll ---- */

typedef struct pe_poll {
    const conf_source_t *src;
    const pe_conf_t *conf;
    int page;  /* the page the next request asks for, from 1 */
    int done;  /* the last page was consumed */
    int limit; /* sent as limit */
} pe_poll_t;

static void *pe_poll_begin(const conf_source_t *src, int64_t now_s)
{
    pe_poll_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->src = src;
    p->conf = src->pconf;
    p->page = 1;
    p->limit = src->page_size;
    return p;
}

static void pe_poll_free(void *poll)
{
    pe_poll_t *p = poll;
    if (p == NULL)
        return;
    free(p);
}

static int pe_next_request(void *poll, provider_request_t *req, char *err, size_t errlen)
{
    pe_poll_t *p = poll;
    const pe_conf_t *c = p->conf;
    char page[16], limit[16], ts[24], nonce[24], sig[PE_SIG_HEX_LEN + 1], auth[HTTP_HEADER_MAX];
    pe_param_t params[PE_MAX_PARAMS];
    size_t n = 0;
    struct timespec now;
    int w;

    if (p->done)
        return 0;
    if (p->page > PROVIDER_MAX_PAGES) {
        snprintf(err, errlen, "more than %d pages in one poll", PROVIDER_MAX_PAGES);
        return -1;
    }
    memset(req, 0, sizeof(*req));
    if (c->endpoint == PE_INDEX_STUDENTS)
        snprintf(req->label, sizeof(req->label), "/api/v3/exams/%s/index_students", c->exam_id);
    else
        snprintf(req->label, sizeof(req->label), "/api/v3/student_sessions");
    w = snprintf(req->url, sizeof(req->url), "%s%s", p->src->base_url, req->label);
    if (w < 0 || (size_t)w >= sizeof(req->url))
        goto toolong;

    /* Fresh per request: the timestamp is checked against the server's
     * clock, and a nonce may never be used twice. */
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(ts, sizeof(ts), "%lld", (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    if (pe_nonce(nonce, sizeof(nonce)) != 0) {
        snprintf(err, errlen, "no random bytes for the nonce (RAND_bytes failed)");
        return -1;
    }
    snprintf(page, sizeof(page), "%d", p->page);
    snprintf(limit, sizeof(limit), "%d", p->limit);
    params[n++] = (pe_param_t){"page", page};
    params[n++] = (pe_param_t){"limit", limit};
    params[n++] = (pe_param_t){"timestamp", ts};
    params[n++] = (pe_param_t){"nonce", nonce};
    if (c->endpoint == PE_STUDENT_SESSIONS)
        params[n++] = (pe_param_t){"exam_id", c->exam_id};
    if (c->status)
        params[n++] = (pe_param_t){"status", c->status};
    if (c->filter)
        params[n++] = (pe_param_t){"filter", c->filter};
    if (c->sort)
        params[n++] = (pe_param_t){"sort", c->sort};

    /* Exactly what is signed is sent, in the signed (sorted) order. */
    if (pe_sign(c->secret_key, c->join, params, n, sig) != 0) {
        snprintf(err, errlen, "cannot sign the request (string to sign too long or HMAC failed)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (provider_url_add(req->url, sizeof(req->url), params[i].name, params[i].value) != 0)
            goto toolong;
    }
    if (provider_url_add(req->url, sizeof(req->url), "signature", sig) != 0)
        goto toolong;

    snprintf(auth, sizeof(auth), "Token token=%s", c->api_token);
    if (provider_add_header(req, "Authorization", auth) != 0 ||
        provider_add_header(req, "Accept", "application/vnd.procwise.v3") != 0) {
        OPENSSL_cleanse(auth, sizeof(auth));
        snprintf(err, errlen, "request header too long or holding a control character");
        return -1;
    }
    OPENSSL_cleanse(auth, sizeof(auth));
    return 1;
toolong:
    snprintf(err, errlen, "request URL longer than %d bytes", PROVIDER_URL_MAX);
    return -1;
}

/* A pagination header as a number in [0, 10^9); -1 when absent or garbage. */
static long header_number(const http_response_t *resp, const char *name)
{
    const char *v = http_response_header(resp, name);
    size_t n;
    if (v == NULL)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    n = strspn(v, "0123456789");
    if (n == 0 || n > PE_HEADER_DIGITS_MAX || v[n + strspn(v + n, " \t")] != '\0')
        return -1;
    return strtol(v, NULL, 10);
}

/* A student: its id an integer (as the seed's are) or a string. */
static int pe_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    const provider_emit_t *e = opaque;
    char id[PE_ID_MAX + 1];
    if (page_scan_id_text(&rec->id, id, sizeof(id)) != 0 || rec->status.kind != PAGE_SCAN_STRING ||
        rec->status.len == 0) {
        snprintf(err, errlen,
                 "students[%zu] lacks an \"id\" (integer or string) or a string \"status\"",
                 rec->index);
        return -1;
    }
    /* the id may be a number's text made here: measured, a few bytes */
    return e->fn(e->opaque, id, strlen(id), rec->status.text, rec->status.len, rec->span, rec->len,
                 err, errlen);
}

/* Records reach fn before the page is read to its end: a page that fails
 * (the scan, or the pagination headers after it) fails the poll, whose
 * cycle the engine drops with all it observed. */
static int pe_handle_page(void *poll, const http_response_t *resp, provider_record_fn fn,
                          void *opaque, char *err, size_t errlen)
{
    pe_poll_t *p = poll;
    page_scan_result_t res = {0};
    provider_emit_t e = {fn, opaque};
    if (page_scan(p->conf->scan, resp->body, resp->len, pe_record, &e, &res, err, errlen) !=
        PAGE_SCAN_OK)
        return -1;

    long count = header_number(resp, "X-Pagination-Page-Count");
    long at = header_number(resp, "X-Pagination-Page");
    if (count >= 0) {
        /* An answer for another page than asked would make us loop or skip. */
        if (at >= 0 && at != p->page) {
            snprintf(err, errlen, "X-Pagination-Page is %ld, page %d was asked for", at, p->page);
            return -1;
        }
        if (p->page < count && count > PROVIDER_MAX_PAGES) {
            snprintf(err, errlen, "X-Pagination-Page-Count %ld is over %d pages", count,
                     PROVIDER_MAX_PAGES);
            return -1;
        }
        p->done = p->page >= count;
    } else {
        /* No usable headers: only a full page can have a successor. */
        p->done = res.records < (size_t)p->limit;
    }
    if (!p->done)
        p->page++;
    return 0;
}

/*
 * Rebuilds the request of the page being retried with a fresh timestamp,
 * nonce and signature (the seed's requests are single-use). provider.h
 * asks 0 or -1 of it, where pe_next_request() answers 1 for a request.
 */
static int pe_refresh_request(void *poll, provider_request_t *req, char *err, size_t errlen)
{
    int r = pe_next_request(poll, req, err, errlen);
    if (r == 0)
        snprintf(err, errlen, "the poll ended while one of its pages was retried");
    return r == 1 ? 0 : -1;
}

const provider_ops_t provider_proctorexam = {
    .name = "proctorexam",
    .statuses = pe_statuses,
    .keys = pe_keys,
    .default_page_size = PE_MAX_LIMIT,
    .max_page_size = PE_MAX_LIMIT,
    .expand_key = "exam_ids",
    .expand_into = "exam_id",
    .configure = pe_configure,
    .free_config = pe_free_config,
    .poll_begin = pe_poll_begin,
    .next_request = pe_next_request,
    /* next_request builds the current page until handle_page moves on, so it
     * is also the way to re-sign a retry: a nonce may never be sent twice. */
    .refresh_request = pe_refresh_request,
    .handle_page = pe_handle_page,
    .poll_free = pe_poll_free,
};
