/*
 * The quiz_jsonapi adapter (seed 002), driven with canned responses: a page
 * written from the seed's output schema (tests/fixtures/quiz_jsonapi), the
 * page[number] paging rule (a short or empty page ends the list), the
 * requests it builds, the pages it must refuse, its configuration errors
 * and its default status map.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "provider.h"

#define SECRET "Bearer s3cr3t-t0ken"

static const provider_ops_t *const Q = &provider_quiz_jsonapi;

static char *read_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/quiz_jsonapi/%s", getenv("SB_SOURCE_DIR"),
             name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static conf_t *load(const char *source_json)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "{\"sources\":[%s],\"sinks\":[{\"name\":\"out\",\"type\":\"stdout\"}]}", source_json);
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = conf_parse(text, strlen(text), "test.json", errs);
    ck_assert_msg(c != NULL, "config refused: %s", errs->count ? errs->msg[0] : "?");
    free(errs);
    return c;
}

#define BASIC                                                                                      \
    "{\"name\":\"q\",\"provider\":\"quiz_jsonapi\",\"base_url\":\"http://h/\","                    \
    "\"auth\":{\"header\":\"Authorization\",\"value\":\"" SECRET "\"}"

typedef struct seen {
    char ids[64][64];
    char statuses[64][32];
    char types[64][32];
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
    /* The record handed to the diff is the resource object itself. */
    cJSON *doc = cJSON_ParseWithLength(rec, len);
    ck_assert_ptr_nonnull(doc);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    snprintf(s->types[s->n], sizeof(s->types[0]), "%s",
             cJSON_IsString(type) ? type->valuestring : "");
    cJSON_Delete(doc);
    if (s->n == 0 && len < sizeof(s->first))
        memcpy(s->first, rec, len);
    snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", id);
    snprintf(s->statuses[s->n], sizeof(s->statuses[0]), "%s", status);
    s->n++;
    return 0;
}

static int page(void *poll, const char *body, seen_t *seen, char *err, size_t errlen)
{
    http_response_t r = {.status = 200, .retry_after_s = -1};
    r.body = strdup(body);
    r.len = strlen(body);
    int rc = Q->handle_page(poll, &r, collect, seen, err, errlen);
    http_response_reset(&r);
    return rc;
}

/* A page of n resources with ids "<tag>-<i>", status in_progress. */
static char *make_page(int n, const char *tag)
{
    size_t cap = 64 + (size_t)n * 128;
    char *b = malloc(cap);
    size_t len = (size_t)snprintf(b, cap, "{\"data\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(b + len, cap - len,
                                "%s{\"type\":\"quiz/sessions\",\"id\":\"%s-%d\",\"attributes\":"
                                "{\"status\":\"in_progress\"}}",
                                i ? "," : "", tag, i);
    snprintf(b + len, cap - len, "],\"included\":[]}");
    return b;
}

START_TEST(fixture_page_parses)
{
    conf_t *c = load(BASIC ",\"page_size\":3}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    char *body = read_fixture("sessions_page.json");

    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, body, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 3);
    ck_assert_str_eq(seen.ids[0], "9f1c2e4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b");
    ck_assert_str_eq(seen.statuses[0], "in_progress");
    ck_assert_str_eq(seen.statuses[1], "submitted");
    ck_assert_str_eq(seen.statuses[2], "expired");
    ck_assert_str_eq(seen.types[2], "quiz/sessions");
    /* Three records of page[size]=3: a full page, so page 2 follows. */
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_ptr_nonnull(strstr(req.url, "page%5Bnumber%5D=2"));
    ck_assert_int_eq(page(poll, "{\"data\":[]}", &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 0);
    free(body);
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

/* Paging: records per canned page, and how many requests the poll makes. */
static const struct {
    int page_size;
    int pages[6]; /* records on each page answered; -1 ends the row */
    int requests; /* requests made before next_request() returns 0 */
} paging[] = {
    {3, {2, -1}, 1},          /* a short first page ends it */
    {3, {0, -1}, 1},          /* an empty first page ends it */
    {3, {3, 1, -1}, 2},       /* full, then short */
    {3, {3, 3, 0, -1}, 3},    /* an exact multiple: one extra empty page */
    {3, {3, 3, 3, 2, -1}, 4}, /* several full pages */
    {1, {1, 1, 1, 0, -1}, 4}, /* page[size]=1 */
    {2, {5, 1, -1}, 2},       /* more than asked: the server pages by its size */
};

START_TEST(paging_ends_on_short_or_empty_page)
{
    char src[512];
    snprintf(src, sizeof(src), BASIC ",\"page_size\":%d}", paging[_i].page_size);
    conf_t *c = load(src);
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256], want[64], tag[16];
    seen_t seen = {0};
    int requests = 0, records = 0;

    for (;;) {
        int r = Q->next_request(poll, &req, err, sizeof(err));
        ck_assert_int_ge(r, 0);
        if (r == 0)
            break;
        ck_assert_msg(requests < 6 && paging[_i].pages[requests] >= 0,
                      "row %d: request %d after the list ended", _i, requests + 1);
        snprintf(want, sizeof(want), "?page%%5Bnumber%%5D=%d&page%%5Bsize%%5D=%d", requests + 1,
                 paging[_i].page_size);
        ck_assert_msg(strstr(req.url, want) != NULL, "row %d: %s lacks %s", _i, req.url, want);
        snprintf(tag, sizeof(tag), "p%d", requests + 1);
        char *body = make_page(paging[_i].pages[requests], tag);
        ck_assert_int_eq(page(poll, body, &seen, err, sizeof(err)), 0);
        records += paging[_i].pages[requests];
        free(body);
        requests++;
    }
    ck_assert_int_eq(requests, paging[_i].requests);
    ck_assert_int_eq(seen.n, records);
    /* Done stays done. */
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 0);
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(requests_carry_paging_filters_sort_and_auth)
{
    conf_t *c = load(BASIC ",\"page_size\":25,\"sort\":\"-created_at,id\","
                           "\"filters\":{\"status\":\"in_progress\",\"person_id\":4217,"
                           "\"name__match\":\"Maths & Stats\",\"score\":87.5,\"id\":true}}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];

    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    /* The trailing '/' of base_url is dropped; the path is appended as-is. */
    ck_assert_str_eq(req.url, "http://h/api/v3/quiz/sessions?page%5Bnumber%5D=1"
                              "&page%5Bsize%5D=25&sort=-created_at%2Cid"
                              "&filter%5Bstatus%5D=in_progress&filter%5Bperson_id%5D=4217"
                              "&filter%5Bname__match%5D=Maths%20%26%20Stats"
                              "&filter%5Bscore%5D=87.5&filter%5Bid%5D=true");
    ck_assert_uint_eq(req.nheaders, 2);
    ck_assert_str_eq(req.headers[0], "Authorization: " SECRET);
    ck_assert_str_eq(req.headers[1], "Accept: application/vnd.api+json");
    ck_assert_str_eq(req.label, "/api/v3/quiz/sessions");
    ck_assert_ptr_null(strstr(req.url, "s3cr3t"));
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(defaults_custom_header_and_no_optional_params)
{
    conf_t *c = load("{\"name\":\"q\",\"provider\":\"quiz_jsonapi\",\"base_url\":"
                     "\"https://quiz.example/tenant\",\"auth\":{\"header\":\"X-Api-Key\","
                     "\"value\":\"k1\"}}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];

    ck_assert_int_eq(c->sources[0].page_size, 1000);
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, "https://quiz.example/tenant/api/v3/quiz/sessions"
                              "?page%5Bnumber%5D=1&page%5Bsize%5D=1000");
    ck_assert_str_eq(req.headers[0], "X-Api-Key: k1");
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

/* Ids: a string, a number's decimal text, or attributes.id as a fallback. */
static const struct {
    const char *record;
    const char *id;
} ids[] = {
    {"{\"type\":\"quiz/sessions\",\"id\":\"abc\",\"attributes\":{\"status\":\"pending\"}}", "abc"},
    {"{\"type\":\"quiz/sessions\",\"id\":42,\"attributes\":{\"status\":\"pending\"}}", "42"},
    {"{\"type\":\"quiz/sessions\",\"attributes\":{\"id\":\"from-attr\",\"status\":\"pending\"}}",
     "from-attr"},
    {"{\"type\":\"quiz/sessions\",\"id\":null,\"attributes\":{\"id\":7,\"status\":\"pending\"}}",
     "7"},
    {"{\"type\":\"quiz/sessions\",\"id\":\"top\",\"attributes\":{\"id\":\"attr\","
     "\"status\":\"pending\"}}",
     "top"},
    /* spacing and number spellings as served */
    {"{ \"type\": \"quiz/sessions\", \"id\" : 4436481160115170,\n\"attributes\":{\"status\":"
     "\"pending\",\"score\":1.5E3,\"t\":\"\\u00e9\"} }",
     "4436481160115170"},
};

START_TEST(session_id_forms)
{
    conf_t *c = load(BASIC "}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256], body[512];
    seen_t seen = {0};
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    snprintf(body, sizeof(body), "{\"data\":[%s]}", ids[_i].record);
    ck_assert_msg(page(poll, body, &seen, err, sizeof(err)) == 0, "row %d: %s", _i, err);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_str_eq(seen.ids[0], ids[_i].id);
    /* the resource as served, not a reprint */
    ck_assert_str_eq(seen.first, ids[_i].record);
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

/* Pages the adapter must refuse: each would otherwise end a poll early or
 * hand the diff a session without identity. */
static const struct {
    const char *body;
    const char *err;
} bad_pages[] = {
    {"{\"included\":[]}", "\"data\" array"},
    {"{\"data\":{\"type\":\"quiz/sessions\",\"id\":\"a\"}}", "\"data\" array"},
    {"{\"data\":null}", "\"data\" array"},
    {"{\"errors\":[{\"status\":\"500\"}]}", "\"data\" array"},
    {"[]", "\"data\" array"},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"attributes\":{\"status\":\"started\"}}]}",
     "data[0] lacks an \"id\""},
    {"{\"data\":[{\"type\":\"quiz/"
     "sessions\",\"id\":\"\",\"attributes\":{\"status\":\"started\"}}]}",
     "data[0] lacks an \"id\""},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":1.5,\"attributes\":{\"status\":\"started\"}}]}",
     "data[0] lacks an \"id\""},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":[\"a\"],\"attributes\":{\"status\":\"x\"}}]}",
     "data[0] lacks an \"id\""},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"a\",\"attributes\":{\"status\":\"started\"}},"
     "{\"type\":\"quiz/sessions\",\"id\":\"b\",\"attributes\":{}}]}",
     "data[1] lacks a string \"attributes.status\""},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"b\",\"attributes\":{\"status\":3}}]}",
     "data[0] lacks a string \"attributes.status\""},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"b\",\"status\":\"started\"}]}",
     "data[0] lacks a string \"attributes.status\""},
    {"{\"data\":[\"abc\"]}", "data[0] is not a resource object"},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"a\",\"attributes\":{\"status\":\"started\"",
     "malformed JSON"},
    {"<html><body>502 Bad Gateway</body></html>", "malformed JSON"},
    {"", "empty body"},
    /* not UTF-8 (RFC 8259 §8.1), and a NUL that would cut the id short */
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"b\xff\",\"attributes\":{\"status\":"
     "\"started\"}}]}",
     "invalid UTF-8 at byte 40 "},
    {"{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"b\\u0000x\",\"attributes\":{\"status\":"
     "\"started\"}}]}",
     "\"\\u0000\" in a string at byte 40 "},
};

START_TEST(malformed_pages_fail)
{
    conf_t *c = load(BASIC "}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, bad_pages[_i].body, &seen, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, bad_pages[_i].err) != NULL, "row %d: \"%s\" lacks \"%s\"", _i, err,
                  bad_pages[_i].err);
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(deep_nesting_and_page_bound_fail)
{
    conf_t *c = load(BASIC ",\"page_size\":1}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    char *deep = malloc(200002);
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    deep[200000] = '\0';
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, deep, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "nested deeper"));
    free(deep);

    /* A server that always answers a full page is cut off. */
    const char *full = "{\"data\":[{\"type\":\"quiz/sessions\",\"id\":\"same\","
                       "\"attributes\":{\"status\":\"started\"}}]}";
    for (int i = 0; i < PROVIDER_MAX_PAGES; i++) {
        if (i > 0)
            ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
        seen.n = 0;
        ck_assert_int_eq(page(poll, full, &seen, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "more than 20000 pages"));
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

/* Each row: a source object, and a fragment the error list must contain. */
#define SRC "{\"name\":\"q\",\"provider\":\"quiz_jsonapi\",\"base_url\":\"https://h\","
#define AUTH_OK "\"auth\":{\"header\":\"Authorization\",\"value\":\"" SECRET "\"}"
static const struct {
    const char *source;
    const char *want;
} bad_configs[] = {
    {SRC "\"page_size\":5}", "sources[0].auth: required"},
    {SRC "\"auth\":\"" SECRET "\"}", "sources[0].auth: required, expected an object"},
    {SRC "\"auth\":{\"value\":\"" SECRET "\"}}", "sources[0].auth.header: required"},
    {SRC "\"auth\":{\"header\":\"Authorization\"}}", "sources[0].auth.value: required"},
    {SRC "\"auth\":{\"header\":\"Authorization\",\"value\":\"\"}}",
     "sources[0].auth.value: expected a non-empty string"},
    {SRC "\"auth\":{\"header\":\"Authorization\",\"value\":7}}",
     "sources[0].auth.value: expected a non-empty string"},
    {SRC "\"auth\":{\"header\":\"X Api Key\",\"value\":\"" SECRET "\"}}",
     "sources[0].auth.header: expected an HTTP header name"},
    {SRC "\"auth\":{\"header\":\"X-Key:\",\"value\":\"" SECRET "\"}}",
     "sources[0].auth.header: expected an HTTP header name"},
    {SRC "\"auth\":{\"header\":\"X-K\\u00e9y\",\"value\":\"" SECRET "\"}}",
     "sources[0].auth.header: expected an HTTP header name"},
    {SRC "\"auth\":{\"header\":\"Authorization\",\"value\":\"" SECRET "\\r\\nX-Evil: 1\"}}",
     "sources[0].auth.value: must not contain control characters"},
    {SRC "\"auth\":{\"header\":\"Authorization\",\"value\":\"" SECRET "\",\"api_key\":\"k\"}}",
     "sources[0].auth.api_key: unknown key"},
    {SRC AUTH_OK ",\"filters\":{\"state\":\"active\"}}",
     "sources[0].filters.state: unknown filter"},
    {SRC AUTH_OK ",\"filters\":{\"status\":[\"a\",\"b\"]}}",
     "sources[0].filters.status: expected a non-empty string"},
    {SRC AUTH_OK ",\"filters\":{\"status\":null}}",
     "sources[0].filters.status: expected a non-empty string"},
    {SRC AUTH_OK ",\"filters\":{\"status\":\"\"}}",
     "sources[0].filters.status: expected a non-empty string"},
    {SRC AUTH_OK ",\"filters\":[\"status\"]}", "sources[0].filters: expected an object"},
    {SRC AUTH_OK ",\"page_size\":1001}", "sources[0].page_size"},
    {SRC AUTH_OK ",\"page_size\":0}", "sources[0].page_size"},
    {SRC AUTH_OK ",\"sort\":\"\"}", "sources[0].sort: expected a non-empty string"},
    {SRC AUTH_OK ",\"sort\":5}", "sources[0].sort: expected a non-empty string"},
    {SRC AUTH_OK ",\"sort\":\"name\\r\\nX-Evil: 1\"}",
     "sources[0].sort: must not contain control characters"},
    {SRC "\"auth\":{\"header\":\"Authorization\",\"value\":\"" SECRET "\\u007f\"}}",
     "sources[0].auth.value: must not contain control characters"},
    {SRC AUTH_OK ",\"filters\":{\"name\":\"a\\nb\"}}",
     "sources[0].filters.name: expected a non-empty string (at most 512 bytes, no control"},
    {SRC AUTH_OK ",\"filters\":{\"score\":1e999}}", "sources[0].filters.score"},
    {SRC AUTH_OK ",\"filter\":{\"status\":\"x\"}}", "sources[0].filter: unknown key"},
    {SRC AUTH_OK ",\"completed_lookback_s\":60}", "sources[0].completed_lookback_s: unknown key"},
};

START_TEST(bad_configs_name_path_and_expectation)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"sources\":[%s],\"sinks\":[{\"name\":\"out\",\"type\":\"stdout\"}]}",
             bad_configs[_i].source);
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = conf_parse(text, strlen(text), "t.json", errs);
    ck_assert_msg(c == NULL, "row %d was accepted", _i);
    int found = 0;
    for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++) {
        found |= strstr(errs->msg[i], bad_configs[_i].want) != NULL;
        ck_assert_msg(strstr(errs->msg[i], "s3cr3t") == NULL, "secret in \"%s\"", errs->msg[i]);
    }
    if (!found) {
        for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++)
            fprintf(stderr, "row %d: %s\n", _i, errs->msg[i]);
    }
    ck_assert_msg(found, "row %d: no message contains \"%s\"", _i, bad_configs[_i].want);
    free(errs);
}
END_TEST

START_TEST(every_seed_filter_is_accepted)
{
    conf_t *c = load(BASIC ",\"page_size\":1000,\"filters\":{\"id\":\"a\",\"person_id\":1,"
                           "\"created_at\":\"2024-03-11\",\"name\":\"n\",\"status\":\"s\","
                           "\"expires_at\":\"2024-03-12\",\"score\":0.1,\"name__match\":\"m\"}}");
    void *poll = Q->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    ck_assert_int_eq(Q->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_ptr_nonnull(strstr(req.url, "&filter%5Bcreated_at%5D=2024-03-11"));
    ck_assert_ptr_nonnull(strstr(req.url, "&filter%5Bscore%5D=0.1&"));
    ck_assert_ptr_nonnull(strstr(req.url, "&filter%5Bname__match%5D=m"));
    Q->poll_free(poll);
    conf_free(c);
}
END_TEST

/* CONTRACT §5, the quiz_jsonapi row, one raw status per row. */
static const struct {
    const char *raw;
    diff_state_t state;
} statuses[] = {
    {"pending", DIFF_STATE_PENDING},     {"created", DIFF_STATE_PENDING},
    {"started", DIFF_STATE_ACTIVE},      {"in_progress", DIFF_STATE_ACTIVE},
    {"active", DIFF_STATE_ACTIVE},       {"completed", DIFF_STATE_COMPLETED},
    {"finished", DIFF_STATE_COMPLETED},  {"submitted", DIFF_STATE_COMPLETED},
    {"cancelled", DIFF_STATE_CANCELLED}, {"canceled", DIFF_STATE_CANCELLED},
    {"expired", DIFF_STATE_CANCELLED},
};

START_TEST(default_status_map_matches_contract)
{
    conf_t *c = load(BASIC "}");
    diff_state_t st;
    ck_assert_int_eq(diff_status_map_lookup(c->sources[0].status_map, statuses[_i].raw, &st), 0);
    ck_assert_int_eq(st, statuses[_i].state);
    conf_free(c);
}
END_TEST

START_TEST(status_map_is_exact_and_overridable)
{
    conf_t *c =
        load(BASIC ",\"status_map\":{\"abandoned\":\"cancelled\",\"expired\":\"completed\"}}");
    const diff_status_map_t *m = c->sources[0].status_map;
    diff_state_t st;
    ck_assert_int_eq(diff_status_map_lookup(m, "abandoned", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_CANCELLED);
    ck_assert_int_eq(diff_status_map_lookup(m, "expired", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_COMPLETED);
    /* Raw statuses are matched exactly. */
    ck_assert_int_eq(diff_status_map_lookup(m, "IN_PROGRESS", &st), -1);
    ck_assert_int_eq(diff_status_map_lookup(m, "in progress", &st), -1);
    conf_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quiz_jsonapi");
    TCase *tc = tcase_create("adapter");
    tcase_add_test(tc, fixture_page_parses);
    tcase_add_loop_test(tc, paging_ends_on_short_or_empty_page, 0,
                        (int)(sizeof(paging) / sizeof(paging[0])));
    tcase_add_test(tc, requests_carry_paging_filters_sort_and_auth);
    tcase_add_test(tc, defaults_custom_header_and_no_optional_params);
    tcase_add_loop_test(tc, session_id_forms, 0, (int)(sizeof(ids) / sizeof(ids[0])));
    tcase_add_loop_test(tc, malformed_pages_fail, 0,
                        (int)(sizeof(bad_pages) / sizeof(bad_pages[0])));
    tcase_add_test(tc, deep_nesting_and_page_bound_fail);
    tcase_add_loop_test(tc, bad_configs_name_path_and_expectation, 0,
                        (int)(sizeof(bad_configs) / sizeof(bad_configs[0])));
    tcase_add_test(tc, every_seed_filter_is_accepted);
    tcase_add_loop_test(tc, default_status_map_matches_contract, 0,
                        (int)(sizeof(statuses) / sizeof(statuses[0])));
    tcase_add_test(tc, status_map_is_exact_and_overridable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
