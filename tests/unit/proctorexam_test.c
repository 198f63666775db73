/*
 * The ProctorExam adapter, driven with canned responses: the signed query
 * checked against an independent HMAC (the openssl command line, fed a
 * string to sign this test rebuilds from the URL itself), nonces and
 * timestamps, paging by the X-Pagination-* headers and without them, the
 * pages it must refuse, configuration errors and the default status map.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "provider.h"

#define SECRET "pe-secret-Key/with+odd=chars"
#define TOKEN "pe-api-token-123"

static char *read_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/proctorexam/%s", getenv("SB_SOURCE_DIR"), name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static conf_t *parse(const char *source_json, sink_errors_t *errs)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "{\"sources\":[%s],\"sinks\":[{\"name\":\"out\",\"type\":\"stdout\"}]}", source_json);
    return conf_parse(text, strlen(text), "test.json", errs);
}

static conf_t *load(const char *source_json)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = parse(source_json, errs);
    ck_assert_msg(c != NULL, "config refused: %s", errs->count ? errs->msg[0] : "?");
    free(errs);
    return c;
}

#define SRC(extra)                                                                                 \
    "{\"name\":\"pe\",\"provider\":\"proctorexam\",\"base_url\":\"https://pe.example/\","          \
    "\"auth\":{\"api_token\":\"" TOKEN "\",\"secret_key\":\"" SECRET "\"}" extra "}"
#define BASIC SRC(",\"exam_id\":4711")

/* ---- reading the URL back, independently of the adapter ---- */

typedef struct query {
    char names[16][32];
    char values[16][1024];
    int n;
} query_t;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < outlen; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
}

static void parse_query(const char *url, query_t *q)
{
    const char *p = strchr(url, '?');
    memset(q, 0, sizeof(*q));
    ck_assert_ptr_nonnull(p);
    p++;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        ck_assert_ptr_nonnull(eq);
        ck_assert_int_lt(q->n, 16);
        decode(p, (size_t)(eq - p), q->names[q->n], sizeof(q->names[0]));
        decode(eq + 1, len - (size_t)(eq - p) - 1, q->values[q->n], sizeof(q->values[0]));
        q->n++;
        p += len + (amp ? 1 : 0);
    }
}

static const char *query_get(const query_t *q, const char *name)
{
    for (int i = 0; i < q->n; i++)
        if (strcmp(q->names[i], name) == 0)
            return q->values[i];
    return NULL;
}

/* The string to sign, rebuilt from what the URL carries: every parameter
 * but signature, decoded, "name=value", sorted by name, joined by join. */
static void string_to_sign(const query_t *q, const char *join, char *out, size_t outlen)
{
    int order[16], n = 0;
    for (int i = 0; i < q->n; i++)
        if (strcmp(q->names[i], "signature") != 0)
            order[n++] = i;
    for (int i = 1; i < n; i++) /* insertion sort: a dozen names at most */
        for (int j = i; j > 0 && strcmp(q->names[order[j - 1]], q->names[order[j]]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t len = strlen(out);
        snprintf(out + len, outlen - len, "%s%s=%s", i ? join : "", q->names[order[i]],
                 q->values[order[i]]);
    }
}

/* HMAC-SHA256 by the openssl command line: the known answer. */
static void openssl_hmac(const char *text, const char *key, char hex[65])
{
    char line[512];
    setenv("PE_T_TEXT", text, 1);
    setenv("PE_T_KEY", key, 1);
    FILE *f = popen("printf '%s' \"$PE_T_TEXT\" | openssl dgst -sha256 -hmac \"$PE_T_KEY\"", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    ck_assert_int_eq(pclose(f), 0);
    const char *eq = strstr(line, "= ");
    ck_assert_msg(eq != NULL, "unexpected openssl output: %s", line);
    snprintf(hex, 65, "%.64s", eq + 2);
    ck_assert_int_eq(strlen(hex), 64);
}

static void first_request(const char *source_json, provider_request_t *req, query_t *q)
{
    conf_t *c = load(source_json);
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    char err[256];
    ck_assert_int_eq(provider_proctorexam.next_request(poll, req, err, sizeof(err)), 1);
    parse_query(req->url, q);
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}

static void assert_signed(const query_t *q, const char *join)
{
    char text[8192], want[65];
    const char *sig = query_get(q, "signature");
    ck_assert_ptr_nonnull(sig);
    string_to_sign(q, join, text, sizeof(text));
    openssl_hmac(text, SECRET, want);
    ck_assert_msg(strcmp(sig, want) == 0, "signature %s, openssl says %s for \"%s\"", sig, want,
                  text);
}

/* ---- requests ---- */

START_TEST(signature_known_answer)
{
    provider_request_t req;
    query_t q;
    first_request(SRC(",\"exam_id\":\"4711\",\"page_size\":50,\"filters\":{"
                      "\"status\":\"exam_started\","
                      "\"filter\":{\"started_at\":{\"gte\":\"2024-03-01 00:00\"},"
                      "\"name\":{\"in\":[\"a&b\",\"c d\"]}},"
                      "\"sort\":[{\"started_at\":\"desc\"},{\"id\":\"asc\"}]}"),
                  &req, &q);
    ck_assert_ptr_nonnull(strstr(req.url, "https://pe.example/api/v3/exams/4711/index_students?"));
    /* Every parameter sent, and nothing else, is signed; signature is last. */
    ck_assert_int_eq(q.n, 8);
    ck_assert_str_eq(q.names[q.n - 1], "signature");
    static const char *const names[] = {"filter", "limit",  "nonce",    "page",
                                        "sort",   "status", "timestamp"};
    for (size_t i = 0; i < 7; i++)
        ck_assert_msg(query_get(&q, names[i]) != NULL, "%s not sent", names[i]);
    ck_assert_str_eq(query_get(&q, "page"), "1");
    ck_assert_str_eq(query_get(&q, "limit"), "50");
    ck_assert_str_eq(query_get(&q, "status"), "exam_started");
    ck_assert_str_eq(query_get(&q, "filter"),
                     "{\"started_at\":{\"gte\":\"2024-03-01 00:00\"},\"name\":{\"in\":[\"a&b\","
                     "\"c d\"]}}");
    ck_assert_str_eq(query_get(&q, "sort"), "[{\"started_at\":\"desc\"},{\"id\":\"asc\"}]");
    /* Values are percent-encoded in the URL (and signed decoded). */
    ck_assert_ptr_nonnull(strstr(req.url, "a%26b"));
    ck_assert_ptr_null(strstr(req.url, "\""));
    ck_assert_ptr_null(strstr(req.url, " "));
    assert_signed(&q, "?");
    /* The signature is lowercase hex. */
    const char *sig = query_get(&q, "signature");
    ck_assert_int_eq(strspn(sig, "0123456789abcdef"), 64);
}
END_TEST

START_TEST(signature_join_changes_the_string)
{
    provider_request_t req;
    query_t q;
    char text[8192], with_default[65];
    first_request(SRC(",\"exam_id\":4711,\"signature_join\":\"&\""), &req, &q);
    assert_signed(&q, "&");
    string_to_sign(&q, "?", text, sizeof(text));
    openssl_hmac(text, SECRET, with_default);
    ck_assert_str_ne(query_get(&q, "signature"), with_default);
}
END_TEST

START_TEST(student_sessions_endpoint)
{
    provider_request_t req;
    query_t q;
    first_request(SRC(",\"exam_id\":\"0042\",\"endpoint\":\"student_sessions\""), &req, &q);
    ck_assert_ptr_nonnull(strstr(req.url, "https://pe.example/api/v3/student_sessions?"));
    ck_assert_str_eq(query_get(&q, "exam_id"), "42");
    ck_assert_str_eq(query_get(&q, "limit"), "300");
    ck_assert_str_eq(req.label, "/api/v3/student_sessions");
    assert_signed(&q, "?");
}
END_TEST

START_TEST(headers_label_timestamp)
{
    provider_request_t req;
    query_t q;
    struct timespec before, after;
    clock_gettime(CLOCK_REALTIME, &before);
    first_request(BASIC, &req, &q);
    clock_gettime(CLOCK_REALTIME, &after);
    ck_assert_int_eq(req.nheaders, 2);
    ck_assert_str_eq(req.headers[0], "Authorization: Token token=" TOKEN);
    ck_assert_str_eq(req.headers[1], "Accept: application/vnd.procwise.v3");
    ck_assert_str_eq(req.label, "/api/v3/exams/4711/index_students");
    ck_assert_ptr_null(strstr(req.url, TOKEN));
    ck_assert_ptr_null(strstr(req.url, "secret"));
    /* No exam_id parameter on the seed's endpoint: it is in the path. */
    ck_assert_ptr_null(query_get(&q, "exam_id"));
    ck_assert_ptr_null(query_get(&q, "status"));
    const char *ts = query_get(&q, "timestamp");
    ck_assert_int_eq(strlen(ts), 13);
    ck_assert_int_eq(strspn(ts, "0123456789"), 13);
    long long ms = atoll(ts);
    ck_assert_int_ge(ms, (long long)before.tv_sec * 1000 + before.tv_nsec / 1000000);
    ck_assert_int_le(ms, (long long)after.tv_sec * 1000 + after.tv_nsec / 1000000);
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(nonces_are_unique)
{
    enum { N = 10000 };
    conf_t *c = load(BASIC);
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t *req = malloc(sizeof(*req));
    char err[256], **nonces = calloc(N, sizeof(char *));
    query_t q;
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(provider_proctorexam.next_request(poll, req, err, sizeof(err)), 1);
        parse_query(req->url, &q);
        const char *nonce = query_get(&q, "nonce");
        ck_assert_ptr_nonnull(nonce);
        ck_assert_int_ge(strlen(nonce), 1);
        ck_assert_int_le(strlen(nonce), 20);
        ck_assert_int_eq(strspn(nonce, "0123456789"), strlen(nonce));
        nonces[i] = strdup(nonce);
    }
    ck_assert_str_ne(nonces[0], nonces[1]);
    qsort(nonces, N, sizeof(char *), cmp_str);
    for (int i = 1; i < N; i++)
        ck_assert_msg(strcmp(nonces[i - 1], nonces[i]) != 0, "nonce %s repeated", nonces[i]);
    for (int i = 0; i < N; i++)
        free(nonces[i]);
    free(nonces);
    free(req);
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(seed_example_shapes_are_stringified)
{
    provider_request_t req;
    query_t q;
    first_request(SRC(",\"exam_id\":4711,\"filters\":{"
                      "\"filter\":{\"column_name\": {\"operator\": \"value\"}},"
                      "\"sort\":[{\"column_name\": \"asc\"}, {\"column_name\": \"desc\"}]}"),
                  &req, &q);
    ck_assert_str_eq(query_get(&q, "filter"), "{\"column_name\":{\"operator\":\"value\"}}");
    ck_assert_str_eq(query_get(&q, "sort"),
                     "[{\"column_name\":\"asc\"},{\"column_name\":\"desc\"}]");
    assert_signed(&q, "?");
}
END_TEST

/* ---- pages ---- */

typedef struct seen {
    char ids[64][64];
    char statuses[64][32];
    char first[512]; /* the first record's text, when it fits */
    int n;
} seen_t;

static int collect(void *opaque, const char *id, size_t id_len, const char *status,
                   size_t status_len, const char *rec, size_t len, char *err, size_t errlen)
{
    seen_t *s = opaque;
    /* the lengths handed over are the decoded id's and status's */
    if (id_len <= DIFF_ID_MAX)
        ck_assert_uint_eq(id_len, strlen(id));
    if (status_len <= DIFF_STATUS_MAX)
        ck_assert_uint_eq(status_len, strlen(status));
    ck_assert_int_lt(s->n, 64);
    ck_assert_ptr_nonnull(rec);
    ck_assert_uint_gt(len, 1);
    snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", id);
    snprintf(s->statuses[s->n], sizeof(s->statuses[0]), "%s", status);
    if (s->n == 0 && len < sizeof(s->first))
        memcpy(s->first, rec, len);
    s->n++;
    return 0;
}

/* headers: "Name: value" lines, NULL-terminated. */
static int page(void *poll, const char *body, const char *const *headers, seen_t *seen, char *err,
                size_t errlen)
{
    http_response_t r = {.status = 200, .retry_after_s = -1};
    r.body = strdup(body);
    r.len = strlen(body);
    r.headers = calloc(HTTP_MAX_HEADERS, sizeof(http_header_t));
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *colon = strchr(headers[i], ':');
        snprintf(r.headers[i].name, sizeof(r.headers[i].name), "%.*s", (int)(colon - headers[i]),
                 headers[i]);
        snprintf(r.headers[i].value, sizeof(r.headers[i].value), "%s", colon + 2);
        r.nheaders++;
    }
    int rc = provider_proctorexam.handle_page(poll, &r, collect, seen, err, errlen);
    http_response_reset(&r);
    return rc;
}

/* A page of n records. */
static char *students(int n)
{
    static char buf[8192];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "{\"students\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s{\"id\":%d,\"status\":\"%s\"}",
                                i ? "," : "", 1000 + i, i % 2 ? "exam_started" : "registered");
    snprintf(buf + len, sizeof(buf) - len, "]}");
    return buf;
}

/* page_size 3. Each row: records on the page, its headers, and whether a
 * next request follows. */
static const struct {
    int records;
    const char *headers[5];
    int more;
} paging[] = {
    /* The headers decide when they are there. */
    {3,
     {"X-Pagination-Page: 1", "X-Pagination-Page-Count: 4", "X-Pagination-Item-Count: 11",
      "X-Pagination-Limit: 3", NULL},
     1},
    {2,
     {"X-Pagination-Page: 1", "X-Pagination-Page-Count: 1", "X-Pagination-Item-Count: 2",
      "X-Pagination-Limit: 3", NULL},
     0},
    /* A full last page: the count says it is the last. */
    {3, {"X-Pagination-Page: 1", "X-Pagination-Page-Count: 1", NULL}, 0},
    /* An empty list. */
    {0, {"X-Pagination-Page: 1", "X-Pagination-Page-Count: 0", NULL}, 0},
    /* A short page the headers say is not the last: trust them. */
    {1, {"x-pagination-page: 1", "x-pagination-page-count: 2", NULL}, 1},
    /* No headers: a full page asks for more, a short or empty one ends. */
    {3, {NULL}, 1},
    {2, {NULL}, 0},
    {0, {NULL}, 0},
    /* Garbage counts are no headers. */
    {3, {"X-Pagination-Page-Count: lots", NULL}, 1},
    {2, {"X-Pagination-Page-Count: 1e3", NULL}, 0},
    {3, {"X-Pagination-Page-Count: -1", NULL}, 1},
    {2, {"X-Pagination-Page-Count: 99999999999", NULL}, 0},
    {3, {"X-Pagination-Page-Count: ", NULL}, 1},
};

START_TEST(paging_table)
{
    conf_t *c = load(SRC(",\"exam_id\":1,\"page_size\":3"));
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t req;
    query_t q;
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(
        page(poll, students(paging[_i].records), paging[_i].headers, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, paging[_i].records);
    int r = provider_proctorexam.next_request(poll, &req, err, sizeof(err));
    ck_assert_msg(r == paging[_i].more, "row %d: next_request %d", _i, r);
    if (r == 1) {
        parse_query(req.url, &q);
        ck_assert_str_eq(query_get(&q, "page"), "2");
        assert_signed(&q, "?");
    }
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(pages_until_the_count)
{
    conf_t *c = load(SRC(",\"exam_id\":1,\"page_size\":2"));
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t req;
    char err[256], h1[64], h2[64];
    seen_t seen = {0};
    query_t q;
    for (int pg = 1; pg <= 3; pg++) {
        ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 1);
        parse_query(req.url, &q);
        ck_assert_int_eq(atoi(query_get(&q, "page")), pg);
        snprintf(h1, sizeof(h1), "X-Pagination-Page: %d", pg);
        snprintf(h2, sizeof(h2), "X-Pagination-Page-Count: 3");
        const char *hs[] = {h1, h2, NULL};
        ck_assert_int_eq(page(poll, students(pg < 3 ? 2 : 1), hs, &seen, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 5);
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(fixture_page_parses)
{
    conf_t *c = load(BASIC);
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    char *body = read_fixture("index_students_page.json");
    const char *hs[] = {"X-Pagination-Page: 1", "X-Pagination-Page-Count: 1",
                        "X-Pagination-Item-Count: 4", "X-Pagination-Limit: 300", NULL};
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, body, hs, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 4);
    ck_assert_str_eq(seen.ids[0], "918273");
    ck_assert_str_eq(seen.statuses[0], "exam_finished");
    ck_assert_str_eq(seen.ids[2], "918275"); /* a string id is kept as it is */
    ck_assert_str_eq(seen.statuses[3], "email_bounced");
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 0);
    free(body);
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

/* An integer id past 2^31 becomes its decimal text; the record reaches the
 * diff as served, spacing and number spellings kept. */
START_TEST(records_arrive_as_received)
{
    static const char rec[] = "{ \"id\" : 4436481160115170, \"status\":\"registered\",\n"
                              "\"score\": -2.5e-3, \"n\":\"\\u00e9\\/\" }";
    conf_t *c = load(BASIC);
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t req;
    char err[256] = "", body[512];
    seen_t seen = {0};
    snprintf(body, sizeof(body), "{\"students\":[ %s ]}", rec);
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_msg(page(poll, body, NULL, &seen, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_str_eq(seen.ids[0], "4436481160115170");
    ck_assert_str_eq(seen.first, rec);
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

static const struct {
    const char *body;
    const char *header; /* NULL: none */
    const char *err;
} bad_pages[] = {
    {"{}", NULL, "\"students\" array"},
    {"{\"students\":{}}", NULL, "\"students\" array"},
    {"[]", NULL, "\"students\" array"},
    {"{\"students\":[{\"status\":\"exam_started\"}]}", NULL, "students[0]"},
    {"{\"students\":[{\"id\":1,\"status\":\"registered\"},{\"id\":2}]}", NULL, "students[1]"},
    {"{\"students\":[{\"id\":1.5,\"status\":\"registered\"}]}", NULL, "students[0]"},
    {"{\"students\":[{\"id\":\"\",\"status\":\"registered\"}]}", NULL, "students[0]"},
    {"{\"students\":[{\"id\":true,\"status\":\"registered\"}]}", NULL, "students[0]"},
    {"{\"students\":[{\"id\":1,\"status\":7}]}", NULL, "students[0]"},
    {"{\"students\":[{\"id\":1,\"status\":\"registered\"}]", NULL, "malformed JSON"},
    {"{\"students\":[{\"id\":1,\"status\":\"registered\xc0\xaf\"}]}", NULL,
     "invalid UTF-8 at byte 41 "},
    {"", NULL, "empty body"},
    {"{\"students\":[]}", "X-Pagination-Page: 2", "page 1 was asked for"},
};

START_TEST(malformed_pages_fail)
{
    conf_t *c = load(BASIC);
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t req;
    char err[256] = "";
    seen_t seen = {0};
    const char *hs[] = {bad_pages[_i].header, "X-Pagination-Page-Count: 3", NULL};
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(
        page(poll, bad_pages[_i].body, bad_pages[_i].header ? hs : NULL, &seen, err, sizeof(err)),
        -1);
    ck_assert_msg(strstr(err, bad_pages[_i].err) != NULL, "row %d: \"%s\" lacks \"%s\"", _i, err,
                  bad_pages[_i].err);
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(page_count_is_bounded)
{
    conf_t *c = load(SRC(",\"exam_id\":1,\"page_size\":1"));
    void *poll = provider_proctorexam.poll_begin(&c->sources[0], time(NULL));
    provider_request_t req;
    char err[256] = "";
    seen_t seen = {0};
    const char *hs[] = {"X-Pagination-Page-Count: 999999999", NULL};
    ck_assert_int_eq(provider_proctorexam.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, students(1), hs, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "pages"));
    provider_proctorexam.poll_free(poll);
    conf_free(c);
}
END_TEST

/* ---- configuration ---- */

#define AUTH "\"auth\":{\"api_token\":\"" TOKEN "\",\"secret_key\":\"" SECRET "\"}"
#define HEAD "{\"name\":\"pe\",\"provider\":\"proctorexam\",\"base_url\":\"https://pe.example\","

static const struct {
    const char *src;
    const char *err;
} bad_configs[] = {
    {HEAD AUTH "}", "sources[0].exam_id: required"},
    {HEAD AUTH ",\"exam_id\":0}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":-3}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":1.5}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":\"12a\"}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":\"\"}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":\"0000\"}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":\"1234567890123456789\"}", "sources[0].exam_id"},
    {HEAD AUTH ",\"exam_id\":true}", "sources[0].exam_id"},
    {HEAD AUTH ",\"exam_id\":1,\"endpoint\":\"students\"}",
     "sources[0].endpoint: expected \"index_students\" or \"student_sessions\""},
    {HEAD AUTH ",\"exam_id\":1,\"page_size\":301}", "sources[0].page_size"},
    {HEAD AUTH ",\"exam_id\":1,\"page_size\":0}", "sources[0].page_size"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"status\":\"finished\"}}",
     "sources[0].filters.status: expected one of registered"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"status\":5}}", "sources[0].filters.status"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"filter\":[1]}}",
     "sources[0].filters.filter: expected an object"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"filter\":\"{\\\"a\\\":{}}\"}}",
     "sources[0].filters.filter: expected an object"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"filter\":{\"col\":\"x\"}}}",
     "sources[0].filters.filter"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"sort\":{\"col\":\"asc\"}}}",
     "sources[0].filters.sort: expected a non-empty array"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"sort\":[{\"col\":\"up\"}]}}",
     "sources[0].filters.sort"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":{\"page\":2}}", "sources[0].filters.page: unknown key"},
    {HEAD AUTH ",\"exam_id\":1,\"filters\":[]}", "sources[0].filters: expected an object"},
    {HEAD AUTH ",\"exam_id\":1,\"signature_join\":\"123456789\"}",
     "sources[0].signature_join: expected a string of at most 8 bytes"},
    {HEAD AUTH ",\"exam_id\":1,\"signature_join\":1}", "sources[0].signature_join"},
    {HEAD AUTH ",\"exam_id\":1,\"secret_key\":\"x\"}", "sources[0].secret_key: unknown key"},
    {HEAD "\"exam_id\":1}", "sources[0].auth: required"},
    {HEAD "\"exam_id\":1,\"auth\":{\"api_token\":\"" TOKEN "\"}}",
     "sources[0].auth.secret_key: required"},
    {HEAD "\"exam_id\":1,\"auth\":{\"secret_key\":\"" SECRET "\"}}",
     "sources[0].auth.api_token: required"},
    {HEAD "\"exam_id\":1,\"auth\":{\"api_token\":\"\",\"secret_key\":\"" SECRET "\"}}",
     "sources[0].auth.api_token"},
    {HEAD "\"exam_id\":1,\"auth\":{\"api_token\":\"t\",\"secret_key\":\"" SECRET
          "\",\"api_key\":\"x\"}}",
     "sources[0].auth.api_key: unknown key"},
    {HEAD "\"exam_id\":1,\"auth\":{\"api_token\":\"a\\nb\",\"secret_key\":\"" SECRET "\"}}",
     "sources[0].auth.api_token: must not contain control characters"},
    /* Every control character, not only line breaks; and the key and the
     * separator too, which go into the signed string. */
    {HEAD "\"exam_id\":1,\"auth\":{\"api_token\":\"a\\tb\",\"secret_key\":\"" SECRET "\"}}",
     "sources[0].auth.api_token: must not contain control characters"},
    {HEAD "\"exam_id\":1,\"auth\":{\"api_token\":\"" TOKEN "\",\"secret_key\":\"" SECRET
          "\\r\\n\"}}",
     "sources[0].auth.secret_key: must not contain control characters"},
    {HEAD AUTH ",\"exam_id\":1,\"signature_join\":\"\\n\"}",
     "sources[0].signature_join: expected a string of at most 8 bytes without control"},
    /* Numbers beyond long long are refused before any conversion. */
    {HEAD AUTH ",\"exam_id\":1e49}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":1e999}", "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_id\":18446744073709551616}",
     "sources[0].exam_id: expected a positive integer"},
    {HEAD AUTH ",\"exam_ids\":[1e49]}", "sources[0].exam_ids[0]: expected a positive integer"},
    {HEAD AUTH ",\"exam_ids\":[-1e999]}", "sources[0].exam_ids[0]: expected a positive integer"},
};

START_TEST(config_errors)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = parse(bad_configs[_i].src, errs);
    ck_assert_msg(c == NULL, "row %d accepted", _i);
    int found = 0;
    for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++) {
        found |= strstr(errs->msg[i], bad_configs[_i].err) != NULL;
        /* Secrets never appear in messages. */
        ck_assert_ptr_null(strstr(errs->msg[i], SECRET));
        ck_assert_ptr_null(strstr(errs->msg[i], TOKEN));
    }
    ck_assert_msg(found, "row %d: no \"%s\" in \"%s\"", _i, bad_configs[_i].err,
                  errs->count ? errs->msg[0] : "(no error)");
    free(errs);
}
END_TEST

START_TEST(good_configs)
{
    static const char *const ok[] = {
        SRC(",\"exam_id\":1"),
        SRC(",\"exam_id\":\"123456789012345678\""),
        SRC(",\"exam_id\":7,\"endpoint\":\"index_students\",\"page_size\":300"),
        SRC(",\"exam_id\":7,\"signature_join\":\"\""),
        SRC(",\"exam_id\":7,\"filters\":{\"status\":\"exam_not_started\"}"),
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        conf_free(load(ok[i]));
}
END_TEST

START_TEST(default_status_map_matches_contract)
{
    static const struct {
        const char *raw;
        diff_state_t state;
    } rows[] = {
        {"registered", DIFF_STATE_PENDING},           {"before_check_req_mail", DIFF_STATE_PENDING},
        {"email_bounced", DIFF_STATE_PENDING},        {"email_sent", DIFF_STATE_PENDING},
        {"after_check_req_mail", DIFF_STATE_PENDING}, {"before_check_req", DIFF_STATE_PENDING},
        {"after_check_req", DIFF_STATE_PENDING},      {"in_setup", DIFF_STATE_PENDING},
        {"exam_not_started", DIFF_STATE_PENDING},     {"exam_started", DIFF_STATE_ACTIVE},
        {"exam_finished", DIFF_STATE_COMPLETED},
    };
    conf_t *c = load(SRC(",\"exam_id\":1,\"status_map\":{\"email_bounced\":\"cancelled\"}"));
    conf_t *d = load(BASIC);
    diff_state_t st;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        ck_assert_msg(diff_status_map_lookup(d->sources[0].status_map, rows[i].raw, &st) == 0,
                      "%s unmapped", rows[i].raw);
        ck_assert_msg(st == rows[i].state, "%s -> %d", rows[i].raw, st);
    }
    ck_assert_int_eq(diff_status_map_lookup(d->sources[0].status_map, "cancelled", &st), -1);
    ck_assert_int_eq(diff_status_map_lookup(d->sources[0].status_map, "EXAM_STARTED", &st), -1);
    /* status_map overrides a default. */
    ck_assert_int_eq(diff_status_map_lookup(c->sources[0].status_map, "email_bounced", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_CANCELLED);
    conf_free(c);
    conf_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("proctorexam");
    TCase *tc = tcase_create("adapter");
    tcase_add_test(tc, signature_known_answer);
    tcase_add_test(tc, signature_join_changes_the_string);
    tcase_add_test(tc, student_sessions_endpoint);
    tcase_add_test(tc, headers_label_timestamp);
    tcase_add_test(tc, nonces_are_unique);
    tcase_add_test(tc, seed_example_shapes_are_stringified);
    tcase_add_loop_test(tc, paging_table, 0, (int)(sizeof(paging) / sizeof(paging[0])));
    tcase_add_test(tc, pages_until_the_count);
    tcase_add_test(tc, fixture_page_parses);
    tcase_add_test(tc, records_arrive_as_received);
    tcase_add_loop_test(tc, malformed_pages_fail, 0,
                        (int)(sizeof(bad_pages) / sizeof(bad_pages[0])));
    tcase_add_test(tc, page_count_is_bounded);
    tcase_add_loop_test(tc, config_errors, 0, (int)(sizeof(bad_configs) / sizeof(bad_configs[0])));
    tcase_add_test(tc, good_configs);
    tcase_add_test(tc, default_status_map_matches_contract);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
