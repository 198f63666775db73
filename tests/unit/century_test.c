/*
 * The Century Smart IA adapter, driven with canned responses: the seeds'
 * example pages (kept verbatim in tests/fixtures/century), paging through
 * both lists, the requests it builds, and the pages it must refuse.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "provider.h"
#include "testlib.h"

static char *read_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/century/%s", getenv("SB_SOURCE_DIR"), name);
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
    "{\"name\":\"c\",\"provider\":\"century_smart_ia\",\"base_url\":\"http://h/api/v1/\","         \
    "\"auth\":{\"api_key\":\"secret-key\"}"

typedef struct seen {
    char ids[64][64];
    char statuses[64][32];
    /* The first records' text as handed over (shorter than 512 bytes). */
    char texts[8][512];
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
    if (s->n < 8 && len < sizeof(s->texts[0]))
        memcpy(s->texts[s->n], rec, len);
    s->n++;
    return 0;
}

static http_response_t response(const char *body)
{
    http_response_t r = {.status = 200, .retry_after_s = -1};
    r.body = strdup(body);
    r.len = strlen(body);
    return r;
}

static int page(void *poll, const char *body, seen_t *seen, char *err, size_t errlen)
{
    http_response_t r = response(body);
    int rc = provider_century.handle_page(poll, &r, collect, seen, err, errlen);
    http_response_reset(&r);
    return rc;
}

START_TEST(seed_examples_parse)
{
    conf_t *c = load(BASIC "}");
    void *poll = provider_century.poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    char *in_progress = read_fixture("in_progress_seed.json");
    char *completed = read_fixture("completed_seed.json");

    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, in_progress, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_str_eq(seen.ids[0], "d93ba3c3-2482-4b0d-8b99-42a20e68e11e");
    ck_assert_str_eq(seen.statuses[0], "IN_PROGRESS");
    /* The seed's page has a nextCursor: the next request carries it. */
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_ptr_nonnull(strstr(req.url, "/smart-ia/sessions/in-progress?"));
    ck_assert_ptr_nonnull(strstr(
        req.url, "cursor=eyJsaW1pdCI6MSxiZWZvcmU6IiIsc29ydDpbWyJlbmREYXRlIiwiZGVzYyJdXX0%3D"));
    ck_assert_int_eq(
        page(poll, "{\"data\":[],\"pagination\":{\"nextCursor\":null}}", &seen, err, sizeof(err)),
        0);
    /* Then the completed list, whose seed example parses too. */
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_ptr_nonnull(strstr(req.url, "/smart-ia/sessions/completed?"));
    ck_assert_int_eq(page(poll, completed, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_str_eq(seen.statuses[1], "COMPLETED");
    free(in_progress);
    free(completed);
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(requests_carry_limit_key_filters_and_lookback)
{
    conf_t *c = load(BASIC ",\"page_size\":25,\"completed_lookback_s\":86400,"
                           "\"filters\":{\"subject\":[\"English\",\"Maths & Stats\"],"
                           "\"userId\":[\"68f06c66-702a-4c26-b8c5-b6dc4f81f25d\"],"
                           "\"startDate\":{\"lt\":\"2030-01-01T00:00:00Z\"}}}");
    void *poll = provider_century.poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};

    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    /* The trailing '/' of base_url is dropped; paths are appended as-is. */
    ck_assert_ptr_nonnull(
        strstr(req.url, "http://h/api/v1/smart-ia/sessions/in-progress?limit=25"));
    ck_assert_ptr_nonnull(strstr(req.url, "&subject=English&subject=Maths%20%26%20Stats"));
    ck_assert_ptr_nonnull(strstr(req.url, "&userId=68f06c66-702a-4c26-b8c5-b6dc4f81f25d"));
    ck_assert_ptr_nonnull(strstr(req.url, "startDate%5Blt%5D=2030-01-01T00%3A00%3A00Z"));
    /* No lookback bound on the in-progress list. */
    ck_assert_ptr_null(strstr(req.url, "startDate%5Bgt%5D"));
    ck_assert_ptr_null(strstr(req.url, "cursor="));
    ck_assert_str_eq(req.headers[0], "x-api-key: secret-key");
    ck_assert_str_eq(req.label, "/smart-ia/sessions/in-progress");
    ck_assert_ptr_null(strstr(req.label, "secret"));
    ck_assert_int_eq(
        page(poll, "{\"data\":[],\"pagination\":{\"nextCursor\":null}}", &seen, err, sizeof(err)),
        0);
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    /* 1700000000 - 86400 = 2023-11-13T22:13:20Z */
    ck_assert_ptr_nonnull(strstr(req.url, "startDate%5Bgt%5D=2023-11-13T22%3A13%3A20.000Z"));
    ck_assert_int_eq(
        page(poll, "{\"data\":[],\"pagination\":{\"nextCursor\":null}}", &seen, err, sizeof(err)),
        0);
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 0);
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(user_lower_bound_later_than_lookback_wins)
{
    conf_t *c = load(BASIC ",\"completed_lookback_s\":86400,"
                           "\"filters\":{\"startDate\":{\"gte\":1699990000}}}");
    void *poll = provider_century.poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(
        page(poll, "{\"data\":[],\"pagination\":{\"nextCursor\":null}}", &seen, err, sizeof(err)),
        0);
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_ptr_nonnull(strstr(req.url, "startDate%5Bgte%5D=1699990000"));
    /* gt and gte are exclusive: the lookback is not sent beside it. */
    ck_assert_ptr_null(strstr(req.url, "startDate%5Bgt%5D"));
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

/* Pages the adapter must refuse: each would otherwise end a poll early. */
static const struct {
    const char *body;
    const char *err;
} bad_pages[] = {
    {"{\"data\":[]}", "pagination.nextCursor"},
    {"{\"data\":[],\"pagination\":{}}", "pagination.nextCursor"},
    {"{\"data\":[],\"pagination\":{\"nextCursor\":5}}", "pagination.nextCursor"},
    {"{\"pagination\":{\"nextCursor\":null}}", "\"data\" array"},
    {"{\"data\":{},\"pagination\":{\"nextCursor\":null}}", "\"data\" array"},
    {"{\"data\":[{\"status\":\"IN_PROGRESS\"}],\"pagination\":{\"nextCursor\":null}}", "data[0]"},
    {"{\"data\":[{\"sessionId\":7,\"status\":\"IN_PROGRESS\"}],\"pagination\":{\"nextCursor\":"
     "null}}",
     "data[0]"},
    {"{\"data\":[{\"sessionId\":\"a\",\"status\":\"IN_PROGRESS\"}],\"pagination\":",
     "malformed JSON"},
    {"", "empty body"},
    /* not UTF-8 (RFC 8259 §8.1): in the id, in any other field, overlong,
     * an encoded surrogate, past U+10FFFF, cut short */
    {"{\"data\":[{\"sessionId\":\"s-\xff\",\"status\":\"IN_PROGRESS\"}],\"pagination\":{"
     "\"nextCursor\":null}}",
     "invalid UTF-8 at byte 25 of 86"},
    {"{\"data\":[{\"sessionId\":\"s\",\"name\":\"Ren\xe9\",\"status\":\"IN_PROGRESS\"}],"
     "\"pagination\":{\"nextCursor\":null}}",
     "invalid UTF-8 at byte 37 "},
    {"{\"data\":[{\"sessionId\":\"s-\xc1\xbf\",\"status\":\"IN_PROGRESS\"}],\"pagination\":{"
     "\"nextCursor\":null}}",
     "invalid UTF-8 at byte 25 "},
    {"{\"data\":[{\"sessionId\":\"s-\xed\xbf\xbf\",\"status\":\"IN_PROGRESS\"}],"
     "\"pagination\":{\"nextCursor\":null}}",
     "invalid UTF-8 at byte 25 "},
    {"{\"data\":[{\"sessionId\":\"s-\xf4\x90\x80\x80\",\"status\":\"IN_PROGRESS\"}],"
     "\"pagination\":{\"nextCursor\":null}}",
     "invalid UTF-8 at byte 25 "},
    {"{\"data\":[{\"sessionId\":\"s-\",\"status\":\"IN_PROGRESS\xe2\x82",
     "invalid UTF-8 at byte 48 "},
    /* escapes: a NUL would cut the id to "s-"; lone surrogates are not text */
    {"{\"data\":[{\"sessionId\":\"s-\\u0000x\",\"status\":\"IN_PROGRESS\"}],\"pagination\":{"
     "\"nextCursor\":null}}",
     "\"\\u0000\" in a string at byte 25 "},
    {"{\"data\":[{\"sessionId\":\"s-\\udcff\",\"status\":\"IN_PROGRESS\"}],\"pagination\":{"
     "\"nextCursor\":null}}",
     "malformed JSON"},
    {"{\"data\":[{\"sessionId\":\"s-\\ud800\\u0041\",\"status\":\"IN_PROGRESS\"}],"
     "\"pagination\":{\"nextCursor\":null}}",
     "malformed JSON"},
};

/* A poll of the basic source, its first request asked for: the next page
 * handled is the first of the in-progress list. */
static void *first_page_poll(conf_t *c)
{
    provider_request_t req;
    char err[256] = "";
    void *poll = provider_century.poll_begin(&c->sources[0], 1700000000);
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    return poll;
}

START_TEST(malformed_pages_fail)
{
    conf_t *c = load(BASIC "}");
    void *poll = first_page_poll(c);
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_int_eq(page(poll, bad_pages[_i].body, &seen, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, bad_pages[_i].err) != NULL, "row %d: \"%s\" lacks \"%s\"", _i, err,
                  bad_pages[_i].err);
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

/* UTF-8, raw or escaped (a surrogate pair included), reaches the diff as
 * sent. */
START_TEST(utf8_ids_pass)
{
    conf_t *c = load(BASIC "}");
    void *poll = first_page_poll(c);
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_msg(page(poll,
                       "{\"data\":[{\"sessionId\":\"s-\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                       "\"status\":\"IN_PROGRESS\"},{\"sessionId\":\"e-\\u00e9\\ud83d\\ude00\","
                       "\"status\":\"IN_PROGRESS\",\"note\":\"a\\\\u0000\"}],"
                       "\"pagination\":{\"nextCursor\":null}}",
                       &seen, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_str_eq(seen.ids[0], "s-\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    ck_assert_str_eq(seen.ids[1], "e-\xc3\xa9\xf0\x9f\x98\x80");
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

/* A record reaches the diff as the bytes served: spacing, escapes, number
 * spellings (an exponent, the largest double, an integer past 2^31) and
 * member order kept, nothing reprinted. */
START_TEST(records_arrive_as_received)
{
    static const char *const recs[] = {
        "{ \"sessionId\" : \"s-\\u0031\", \"status\":\"IN_PROGRESS\",\n\t\"n\": "
        "1.7976931348623157e308 }",
        "{\"status\":\"COMPLETED\",\"sessionId\":\"s-2\",\"x\":[1E+2,-0.5e-3,{\"y\":null}],"
        "\"big\":4436481160115170,\"t\":\"\\/\\\"\\u00e9\\ud83d\\ude00\"}",
    };
    char body[1024];
    snprintf(body, sizeof(body), "{\"data\":[ %s ,\r\n%s],\"pagination\":{\"nextCursor\":null}}",
             recs[0], recs[1]);
    conf_t *c = load(BASIC "}");
    void *poll = first_page_poll(c);
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_msg(page(poll, body, &seen, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_str_eq(seen.ids[0], "s-1");
    ck_assert_str_eq(seen.texts[0], recs[0]);
    ck_assert_str_eq(seen.texts[1], recs[1]);
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

/* Records are handed over before the page is read to its end; a page
 * missing its pagination still fails with that reason, ahead of a record's
 * own, as it did when the page was parsed whole first. */
START_TEST(page_reasons_come_before_record_reasons)
{
    conf_t *c = load(BASIC "}");
    void *poll = first_page_poll(c);
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_int_eq(
        page(poll, "{\"data\":[{\"sessionId\":1,\"status\":\"X\"}]}", &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "pagination.nextCursor"));
    ck_assert_int_eq(page(poll,
                          "{\"data\":[{\"sessionId\":\"a\",\"status\":\"X\"},{\"status\":\"X\"}],"
                          "\"pagination\":{\"nextCursor\":null}}",
                          &seen, err, sizeof(err)),
                     -1);
    ck_assert_str_eq(err, "data[1] lacks a string \"sessionId\" or \"status\"");
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(deep_nesting_and_cursor_loops_fail)
{
    conf_t *c = load(BASIC "}");
    void *poll = provider_century.poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    char *deep = malloc(200002);
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    deep[200000] = '\0';
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, deep, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "nested deeper"));
    free(deep);

    const char *p1 = "{\"data\":[],\"pagination\":{\"nextCursor\":\"abc\"}}";
    ck_assert_int_eq(page(poll, p1, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(provider_century.next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, p1, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "paging loop"));
    provider_century.poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(default_status_map_matches_contract)
{
    conf_t *c = load(BASIC ",\"status_map\":{\"ABANDONED\":\"cancelled\"}}");
    diff_state_t st;
    const diff_status_map_t *m = c->sources[0].status_map;
    ck_assert_int_eq(diff_status_map_lookup(m, "IN_PROGRESS", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_ACTIVE);
    ck_assert_int_eq(diff_status_map_lookup(m, "COMPLETED", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_COMPLETED);
    ck_assert_int_eq(diff_status_map_lookup(m, "ABANDONED", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_CANCELLED);
    ck_assert_int_eq(diff_status_map_lookup(m, "in_progress", &st), -1);
    conf_free(c);
}
END_TEST

/* ---- configuration ---- */

#define SRC "{\"name\":\"c\",\"provider\":\"century_smart_ia\",\"base_url\":\"http://h/api/v1\","
#define KEY_OK "\"auth\":{\"api_key\":\"s3cr3t-key\"}"
#define DATE(v) SRC KEY_OK ",\"filters\":{\"startDate\":{\"gt\":" v "}}}"
#define DATE_WANT "sources[0].filters.startDate.gt: expected a unix timestamp"

/*
 * Values refused at config time: control characters in what goes into the
 * request (the key is a header line, subjects are query values), and dates
 * that are no timestamp. The numbers past long long (1e49, 2^63, 1e999,
 * which cJSON reads as an infinity) were converted to long long before
 * they were checked: undefined behaviour, which UBSan reports.
 */
static const struct {
    const char *source;
    const char *want;
} bad_configs[] = {
    {SRC "\"auth\":{\"api_key\":\"k\\r\\nX-Injected: yes\"}}",
     "sources[0].auth.api_key: must not contain control characters"},
    {SRC "\"auth\":{\"api_key\":\"s3cr3t\\tkey\"}}",
     "sources[0].auth.api_key: must not contain control characters"},
    {SRC "\"auth\":{\"api_key\":\"s3cr3t\\u007f\"}}",
     "sources[0].auth.api_key: must not contain control characters"},
    {SRC KEY_OK ",\"filters\":{\"subject\":[\"maths\",\"a\\nb\"]}}",
     "sources[0].filters.subject[1]: expected a non-empty string without control characters"},
    {DATE("1e49"), DATE_WANT},
    {DATE("-1e49"), DATE_WANT},
    {DATE("1e999"), DATE_WANT},
    {DATE("-1e999"), DATE_WANT},
    {DATE("9223372036854775808"), DATE_WANT},
    {DATE("9223372036854775807"), DATE_WANT},
    {DATE("253402300800"), DATE_WANT},
    {DATE("1.5"), DATE_WANT},
    {DATE("-1"), DATE_WANT},
    {DATE("\"99999999999999999999\""), DATE_WANT},
    {DATE("\"253402300800\""), DATE_WANT},
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
    ck_assert_msg(errs_contain(errs, bad_configs[_i].want), "row %d: no \"%s\" in: %s", _i,
                  bad_configs[_i].want, errs_dump(errs));
    ck_assert_msg(!errs_contain(errs, "s3cr3t") && !errs_contain(errs, "X-Injected"),
                  "row %d: a value is quoted: %s", _i, errs_dump(errs));
    free(errs);
}
END_TEST

/* The bounds themselves, as numbers and as digit strings, are accepted. */
START_TEST(date_bounds_are_accepted)
{
    static const char *const ok[] = {"0", "253402300799", "1689379200", "\"253402300799\"",
                                     "1.689e9"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char src[512];
        snprintf(src, sizeof(src), DATE("%s"), ok[i]);
        conf_t *c = load(src);
        conf_free(c);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("century");
    TCase *tc = tcase_create("adapter");
    tcase_add_test(tc, seed_examples_parse);
    tcase_add_test(tc, requests_carry_limit_key_filters_and_lookback);
    tcase_add_test(tc, user_lower_bound_later_than_lookback_wins);
    tcase_add_loop_test(tc, malformed_pages_fail, 0,
                        (int)(sizeof(bad_pages) / sizeof(bad_pages[0])));
    tcase_add_test(tc, deep_nesting_and_cursor_loops_fail);
    tcase_add_test(tc, utf8_ids_pass);
    tcase_add_test(tc, default_status_map_matches_contract);
    tcase_add_loop_test(tc, bad_configs_name_path_and_expectation, 0,
                        (int)(sizeof(bad_configs) / sizeof(bad_configs[0])));
    tcase_add_test(tc, date_bounds_are_accepted);
    tcase_add_test(tc, records_arrive_as_received);
    tcase_add_test(tc, page_reasons_come_before_record_reasons);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
