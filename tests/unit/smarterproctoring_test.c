/*
 * The SmarterProctoring adapter, driven with canned responses: config
 * validation (SIDs, auth, filters), the first request, how every form of a
 * "next" link is resolved or refused (the token must never leave
 * base_url's origin), malformed pages, the status map, and the seed's
 * example page (kept verbatim in tests/fixtures/smarterproctoring).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "provider.h"

#define SECRET "tok-SeCrEt-42"
#define AI "AI0123456789abcdef0123456789abcdef"
#define EN "EN00000000000000000000000000000000"
#define EX "EXffffffffffffffffffffffffffffffff"
#define BASE "http://h:8080/api"
#define PATH "/v1/installs/" AI "/enrollments/" EN "/exams/" EX "/sessions"

static const provider_ops_t *const sp = &provider_smarterproctoring;

static char *read_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/smarterproctoring/%s", getenv("SB_SOURCE_DIR"),
             name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

/* A config around one source object; NULL with errs filled when refused. */
static conf_t *parse(const char *source_json, sink_errors_t *errs)
{
    char text[16384];
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

#define SOURCE_WITH(base, sids)                                                                    \
    "{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"" base "\"," sids          \
    ",\"auth\":{\"token\":\"" SECRET "\"}"
#define SIDS(i, e, x)                                                                              \
    "\"install_sid\":\"" i "\",\"enrollment_sid\":\"" e "\",\"exam_sid\":\"" x "\""
#define BASIC SOURCE_WITH(BASE, SIDS(AI, EN, EX))

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
    (void)err;
    (void)errlen;
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

static int page(void *poll, const char *body, seen_t *seen, char *err, size_t errlen)
{
    http_response_t r = {.status = 200, .retry_after_s = -1};
    r.body = strdup(body);
    r.len = strlen(body);
    int rc = sp->handle_page(poll, &r, collect, seen, err, errlen);
    http_response_reset(&r);
    return rc;
}

/* ---- configuration ---- */

static const struct {
    const char *source; /* a whole source object */
    const char *want;   /* substring of one error; NULL: accepted */
} conf_rows[] = {
    {BASIC "}", NULL},
    {BASIC ",\"page_size\":1000,\"filters\":{\"status\":[\"Needs Proctor\",\"Processing\"],"
           "\"sortKeys\":[\"createdDate\"],\"sortOrder\":\"DESC\"}}",
     NULL},
    /* Wrong prefix, uppercase hex, wrong lengths, wrong type, missing. */
    {SOURCE_WITH(BASE, SIDS(AI, EN, "EN00000000000000000000000000000000")) "}",
     "sources[0].exam_sid: expected a string matching ^EX[a-f0-9]{32}$"},
    {SOURCE_WITH(BASE, SIDS("AI0123456789ABCDEF0123456789abcdef", EN, EX)) "}",
     "sources[0].install_sid: expected a string matching ^AI[a-f0-9]{32}$"},
    {SOURCE_WITH(BASE, SIDS(AI, "EN0000000000000000000000000000000", EX)) "}",
     "sources[0].enrollment_sid: expected a string matching ^EN[a-f0-9]{32}$"},
    {SOURCE_WITH(BASE, SIDS(AI, "EN000000000000000000000000000000000", EX)) "}",
     "sources[0].enrollment_sid: expected a string matching ^EN[a-f0-9]{32}$"},
    {SOURCE_WITH(BASE, SIDS(AI, EN, " EXffffffffffffffffffffffffffffffff")) "}",
     "sources[0].exam_sid: expected a string matching"},
    {SOURCE_WITH(BASE,
                 "\"install_sid\":7,\"enrollment_sid\":\"" EN "\",\"exam_sid\":\"" EX "\"") "}",
     "sources[0].install_sid"},
    {SOURCE_WITH(BASE, "\"install_sid\":\"" AI "\",\"exam_sid\":\"" EX "\"") "}",
     "sources[0].enrollment_sid: required"},
    /* auth */
    {"{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"" BASE
     "\"," SIDS(AI, EN, EX) "}",
     "sources[0].auth: required"},
    {"{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"" BASE
     "\"," SIDS(AI, EN, EX) ",\"auth\":{\"token\":\"" SECRET "\",\"api_key\":\"x\"}}",
     "sources[0].auth.api_key: unknown key"},
    {"{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"" BASE
     "\"," SIDS(AI, EN, EX) ",\"auth\":{\"token\":\"" SECRET "\\r\\nX-Evil: 1\"}}",
     "sources[0].auth.token: must not contain control characters"},
    {"{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"" BASE
     "\"," SIDS(AI, EN, EX) ",\"auth\":{\"token\":\"" SECRET "\\u007f\"}}",
     "sources[0].auth.token: must not contain control characters"},
    {"{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"" BASE
     "\"," SIDS(AI, EN, EX) ",\"auth\":{\"token\":\"\"}}",
     "sources[0].auth.token"},
    /* filters, page size, unknown keys */
    {BASIC ",\"filters\":{\"status\":[\"Active\"]}}",
     "sources[0].filters.status[0]: expected one of: Needs Proctor"},
    {BASIC ",\"filters\":{\"status\":[\"Closed\",\"Closed\"]}}",
     "sources[0].filters.status[1]: \"Closed\" is listed twice"},
    {BASIC ",\"filters\":{\"status\":[]}}", "sources[0].filters.status: expected an array"},
    {BASIC ",\"filters\":{\"status\":\"Closed\"}}", "sources[0].filters.status: expected an array"},
    {BASIC ",\"filters\":{\"sortKeys\":[\"editDate\"]}}",
     "sources[0].filters.sortKeys[0]: expected one of: createdDate"},
    {BASIC ",\"filters\":{\"sortOrder\":\"asc\"}}",
     "sources[0].filters.sortOrder: expected \"ASC\" or \"DESC\""},
    {BASIC ",\"filters\":{\"userId\":[\"x\"]}}", "sources[0].filters.userId: unknown key"},
    {BASIC ",\"filters\":[]}", "sources[0].filters: expected an object"},
    {BASIC ",\"page_size\":1001}", "sources[0].page_size"},
    {BASIC ",\"exam_id\":\"1\"}", "sources[0].exam_id: unknown key"},
};

START_TEST(config_rows)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = parse(conf_rows[_i].source, errs);
    if (conf_rows[_i].want == NULL) {
        ck_assert_msg(c != NULL, "row %d refused: %s", _i, errs->count ? errs->msg[0] : "?");
    } else {
        ck_assert_msg(c == NULL, "row %d accepted", _i);
        int found = 0;
        for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++) {
            found |= strstr(errs->msg[i], conf_rows[_i].want) != NULL;
            ck_assert_msg(strstr(errs->msg[i], "SeCrEt") == NULL, "secret in \"%s\"", errs->msg[i]);
        }
        if (!found) {
            for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++)
                fprintf(stderr, "row %d: %s\n", _i, errs->msg[i]);
        }
        ck_assert_msg(found, "row %d: no error contains \"%s\"", _i, conf_rows[_i].want);
    }
    conf_free(c);
    free(errs);
}
END_TEST

/* ---- requests ---- */

START_TEST(first_request_carries_paging_filters_and_token)
{
    conf_t *c = load(BASIC ",\"page_size\":250,\"filters\":{\"status\":[\"Needs Proctor\","
                           "\"Closed\"],\"sortKeys\":[\"createdDate\"],\"sortOrder\":\"DESC\"}}");
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];

    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE PATH "?offset=0&limit=250&includeActive=true"
                                        "&status=Needs%20Proctor&status=Closed"
                                        "&sortKeys=createdDate&sortOrder=DESC");
    ck_assert_uint_eq(req.nheaders, 2);
    ck_assert_str_eq(req.headers[0], "token: " SECRET);
    ck_assert_str_eq(req.headers[1], "Accept: application/json");
    ck_assert_str_eq(req.label, PATH);
    ck_assert_ptr_null(strstr(req.label, "SeCrEt"));
    ck_assert_ptr_null(strstr(req.url, "SeCrEt"));
    sp->poll_free(poll);
    conf_free(c);

    /* Defaults: limit 100, no filter, no sort; a trailing '/' is dropped. */
    c = load(SOURCE_WITH("http://h:8080/api/", SIDS(AI, EN, EX)) "}");
    poll = sp->poll_begin(&c->sources[0], 1700000000);
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE PATH "?offset=0&limit=100&includeActive=true");
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

/* ---- next links ---- */

#define CUR BASE PATH "?offset=0&limit=100&includeActive=true"
#define ORIGIN_ERR "refusing to send the token to another origin"

static const struct {
    const char *base; /* NULL: BASE */
    const char *next; /* the JSON value of "next"; NULL: the key is absent */
    const char *url;  /* the request that follows; NULL: the poll ends */
    const char *err;  /* substring of the page's error; NULL: accepted */
} next_rows[] = {
    /* Absolute on the same origin: followed as given (case and an explicit
     * default port do not change an origin; libcurl writes the scheme in
     * lower case). */
    {NULL, "\"http://h:8080/api/v1/s?offset=100&includeActive=true\"",
     "http://h:8080/api/v1/s?offset=100&includeActive=true", NULL},
    {NULL, "\"HTTP://H:8080/p?includeActive=true\"", "http://H:8080/p?includeActive=true", NULL},
    {"https://h/api", "\"https://h:443/p?includeActive=true\"",
     "https://h:443/p?includeActive=true", NULL},
    {"http://[::1]:9/api", "\"http://[::1]:9/p?includeActive=true\"",
     "http://[::1]:9/p?includeActive=true", NULL},
    /* Relative forms, resolved as RFC 3986 does. */
    {NULL, "\"/v1/s?offset=100&limit=100&includeActive=true\"",
     "http://h:8080/v1/s?offset=100&limit=100&includeActive=true", NULL},
    {NULL, "\"?offset=100&limit=100&includeActive=true\"",
     BASE PATH "?offset=100&limit=100&includeActive=true", NULL},
    {NULL, "\"sessions?offset=100&includeActive=true\"",
     BASE "/v1/installs/" AI "/enrollments/" EN "/exams/" EX
          "/sessions?offset=100&includeActive=true",
     NULL},
    /* A fragment never reaches the server. */
    {NULL, "\"?offset=1&includeActive=true#top\"", BASE PATH "?offset=1&includeActive=true", NULL},
    /* includeActive: added when dropped, refused when changed. */
    {NULL, "\"/v1/s?offset=100\"", "http://h:8080/v1/s?offset=100&includeActive=true", NULL},
    {NULL, "\"/v1/s\"", "http://h:8080/v1/s?includeActive=true", NULL},
    {NULL, "\"/v1/s?offset=100&includeActive=TRUE\"",
     "http://h:8080/v1/s?offset=100&includeActive=TRUE", NULL},
    {NULL, "\"/v1/s?offset=100&includeActive=false\"", NULL, "includeActive"},
    {NULL, "\"/v1/s?offset=100&includeActive\"", NULL, "includeActive"},
    /* The end of the list. */
    {NULL, "null", NULL, NULL},
    {NULL, NULL, NULL, NULL},
    {NULL, "\"\"", NULL, NULL},
    /* Another origin: refused, whatever the form. */
    {NULL, "\"http://evil:8080/v1/s?offset=9&q=private\"", NULL, "host differs"},
    {NULL, "\"http://h:9090/v1/s?offset=9&q=private\"", NULL, "port differs"},
    {NULL, "\"http://h/v1/s?offset=9&q=private\"", NULL, "port differs"},
    {NULL, "\"https://h:8080/v1/s?offset=9&q=private\"", NULL, "scheme differs"},
    {NULL, "\"//evil/v1/s?offset=9&q=private\"", NULL, "host differs"},
    {NULL, "\"http://h.evil:8080/v1/s\"", NULL, "host differs"},
    {NULL, "\"http://h:8080@evil/v1/s?q=private\"", NULL, "user information"},
    {NULL, "\"ftp://h:8080/v1/s?q=private\"", NULL, "scheme is not"},
    {NULL, "\"javascript:alert(1)\"", NULL, "scheme is not"},
    /* libcurl reads "http:/x" as the host x: refused all the same. */
    {NULL, "\"http:/x?u=http://h:8080/\"", NULL, "host differs"},
    {NULL, "\"//u@h:8080/v1/s?q=private\"", NULL, "user information"},
    {NULL, "\"http://:8080/v1/s\"", NULL, "no valid host"},
    {NULL, "\"http://h:99999/v1/s\"", NULL, "no valid host"},
    /* Not a URL. */
    {NULL, "\"/v1/a b\"", NULL, "not allowed in a URL at byte 5"},
    {NULL, "\"/v1/a\\r\\nX: y\"", NULL, "not allowed in a URL"},
    {NULL, "\"/v1/a\\\\b\"", NULL, "not allowed in a URL"},
    {NULL, "\"<string>\"", NULL, "not allowed in a URL"},
    {NULL, "5", NULL, "neither a string nor null"},
    {NULL, "{}", NULL, "neither a string nor null"},
    /* The URL just fetched: a paging loop. */
    {NULL, "\"" CUR "\"", NULL, "paging loop"},
    {NULL, "\"?offset=0&limit=100&includeActive=true\"", NULL, "paging loop"},
};

START_TEST(next_links)
{
    char src[1024];
    snprintf(src, sizeof(src),
             "{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"%s\"," SIDS(
                 AI, EN, EX) ",\"auth\":{\"token\":\"" SECRET "\"}}",
             next_rows[_i].base ? next_rows[_i].base : BASE);
    conf_t *c = load(src);
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[512] = "", body[1024];
    seen_t seen = {0};

    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    if (next_rows[_i].next)
        snprintf(body, sizeof(body),
                 "{\"results\":[{\"sid\":\"s1\",\"status\":\"Closed\"}],"
                 "\"next\":%s}",
                 next_rows[_i].next);
    else
        snprintf(body, sizeof(body), "{\"results\":[{\"sid\":\"s1\",\"status\":\"Closed\"}]}");
    int rc = page(poll, body, &seen, err, sizeof(err));
    if (next_rows[_i].err) {
        ck_assert_msg(rc == -1, "row %d: accepted", _i);
        ck_assert_msg(strstr(err, next_rows[_i].err) != NULL, "row %d: \"%s\" lacks \"%s\"", _i,
                      err, next_rows[_i].err);
        /* The refused link's query (and so any token-like parameter) is
         * never in the message. The record may have been handed over (the
         * scan meets it first); the failed page fails the poll, whose
         * cycle the engine drops with all it observed. */
        ck_assert_msg(strstr(err, "private") == NULL, "row %d: query in \"%s\"", _i, err);
    } else {
        ck_assert_msg(rc == 0, "row %d: refused: %s", _i, err);
        ck_assert_int_eq(seen.n, 1);
        rc = sp->next_request(poll, &req, err, sizeof(err));
        if (next_rows[_i].url == NULL) {
            ck_assert_msg(rc == 0, "row %d: the poll goes on to %s", _i, req.url);
        } else {
            ck_assert_int_eq(rc, 1);
            ck_assert_str_eq(req.url, next_rows[_i].url);
            ck_assert_str_eq(req.headers[0], "token: " SECRET);
            ck_assert_str_eq(req.label, PATH);
        }
    }
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(overlong_next_and_page_bound)
{
    conf_t *c = load(BASIC "}");
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    size_t n = PROVIDER_URL_MAX + 100;
    char *body = malloc(n + 64);

    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    int w = snprintf(body, n + 64, "{\"results\":[],\"next\":\"/");
    memset(body + w, 'a', n);
    strcpy(body + w + n, "\"}");
    ck_assert_int_eq(page(poll, body, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "longer than"));
    /* Short enough as given, too long once the origin is prepended. */
    memset(body + w, 'a', PROVIDER_URL_MAX - 2);
    strcpy(body + w + PROVIDER_URL_MAX - 2, "\"}");
    ck_assert_int_eq(page(poll, body, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "longer than"));
    free(body);
    sp->poll_free(poll);

    /* A provider whose next never ends is cut off at PROVIDER_MAX_PAGES. */
    poll = sp->poll_begin(&c->sources[0], 1700000000);
    int pages = 0, rc;
    char next[128];
    while ((rc = sp->next_request(poll, &req, err, sizeof(err))) == 1) {
        pages++;
        snprintf(next, sizeof(next), "{\"results\":[],\"next\":\"?offset=%d\"}", pages);
        ck_assert_int_eq(page(poll, next, &seen, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(pages, PROVIDER_MAX_PAGES);
    ck_assert_ptr_nonnull(strstr(err, "pages in one poll"));
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

/* ---- pages ---- */

static const struct {
    const char *body;
    const char *err;
} bad_pages[] = {
    {"{\"next\":null}", "\"results\" array"},
    {"{\"results\":{},\"next\":null}", "\"results\" array"},
    {"{\"results\":null,\"next\":null}", "\"results\" array"},
    {"[]", "\"results\" array"},
    {"{\"results\":[{\"status\":\"Closed\"}],\"next\":null}", "results[0]"},
    {"{\"results\":[{\"sid\":\"a\",\"status\":\"Closed\"},{\"sid\":\"b\"}],\"next\":null}",
     "results[1]"},
    {"{\"results\":[{\"sid\":7,\"status\":\"Closed\"}],\"next\":null}", "results[0]"},
    {"{\"results\":[{\"sid\":\"\",\"status\":\"Closed\"}],\"next\":null}", "results[0]"},
    {"{\"results\":[{\"sid\":\"a\",\"status\":null}],\"next\":null}", "results[0]"},
    {"{\"results\":[\"a\"],\"next\":null}", "results[0]"},
    {"{\"results\":[{\"sid\":\"a\",\"status\":\"Closed\"}],\"next\":", "malformed JSON"},
    {"{\"results\":[{\"sid\":\"a\xed\xa0\x80\",\"status\":\"Closed\"}],\"next\":null}",
     "invalid UTF-8 at byte 21 "},
    {"", "empty body"},
};

START_TEST(malformed_pages_fail)
{
    conf_t *c = load(BASIC "}");
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256] = "";
    seen_t seen = {0};
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, bad_pages[_i].body, &seen, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, bad_pages[_i].err) != NULL, "row %d: \"%s\" lacks \"%s\"", _i, err,
                  bad_pages[_i].err);
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(pages_in_the_simulator_shape)
{
    conf_t *c = load(BASIC ",\"page_size\":2}");
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};

    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll,
                          "{\"total\":3,\"first\":\"" PATH "?offset=0&limit=2&includeActive=true\","
                          "\"next\":\"" PATH "?offset=2&limit=2&includeActive=true\",\"prev\":null,"
                          "\"last\":\"" PATH "?offset=2&limit=2&includeActive=true\",\"count\":2,"
                          "\"offset\":0,\"results\":[{\"sid\":\"a\",\"status\":\"Needs Proctor\"},"
                          "{\"sid\":\"b\",\"status\":\"In Progress\",\"sessionType\":\"Live\"}]}",
                          &seen, err, sizeof(err)),
                     0);
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, "http://h:8080" PATH "?offset=2&limit=2&includeActive=true");
    ck_assert_int_eq(page(poll,
                          "{\"total\":3,\"next\":null,\"prev\":\"" PATH "?offset=0\",\"count\":1,"
                          "\"offset\":2,\"results\":[{\"sid\":\"c\",\"status\":\"Closed\"}]}",
                          &seen, err, sizeof(err)),
                     0);
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 3);
    ck_assert_str_eq(seen.ids[1], "b");
    ck_assert_str_eq(seen.statuses[1], "In Progress");
    ck_assert_str_eq(seen.statuses[2], "Closed");
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

/* A record reaches the diff as served; a next link that cannot be
 * followed fails the page ahead of a record's own reason, wherever in the
 * page it stands. */
START_TEST(records_as_received_and_the_link_first)
{
    static const char rec[] = "{ \"sid\" : \"a\\u0062\", \"status\":\"Closed\",\n"
                              "\"score\": 1.7976931348623157e308, \"at\":2147483648 }";
    conf_t *c = load(BASIC "}");
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256] = "", body[512];
    seen_t seen = {0};
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    snprintf(body, sizeof(body), "{\"results\":[%s],\"next\":null}", rec);
    ck_assert_msg(page(poll, body, &seen, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(seen.ids[0], "ab");
    ck_assert_str_eq(seen.first, rec);
    sp->poll_free(poll);

    poll = sp->poll_begin(&c->sources[0], 1700000000);
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll,
                          "{\"results\":[{\"status\":\"Closed\"}],\"next\":\"http://other/x\"}",
                          &seen, err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "another origin"));
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(seed_example_parses)
{
    conf_t *c = load(BASIC "}");
    void *poll = sp->poll_begin(&c->sources[0], 1700000000);
    provider_request_t req;
    char err[256];
    seen_t seen = {0};
    char *seed = read_fixture("sessions_seed.json");

    /* The seed's page as printed: its next is the placeholder "<string>",
     * not a URL, so the page is refused rather than followed. */
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page(poll, seed, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "next URL has a character not allowed"));
    /* Its record was met before the link; the failed page's cycle is
     * dropped by the engine with all it observed. */
    seen.n = 0;

    /* The same page as the last one of a list: its record comes through. */
    char *p = strstr(seed, "\"next\": \"<string>\"");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "\"next\": null      ", strlen("\"next\": null      "));
    ck_assert_int_eq(page(poll, seed, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_str_eq(seen.ids[0], "<string>");
    ck_assert_str_eq(seen.statuses[0], "<string>");
    ck_assert_int_eq(sp->next_request(poll, &req, err, sizeof(err)), 0);
    /* "<string>" is no status: it maps to nothing. */
    diff_state_t st;
    ck_assert_int_eq(diff_status_map_lookup(c->sources[0].status_map, "<string>", &st), -1);
    free(seed);
    sp->poll_free(poll);
    conf_free(c);
}
END_TEST

/* ---- statuses ---- */

static const struct {
    const char *raw;
    int state; /* -1: unmapped */
} status_rows[] = {
    {"Needs Proctor", DIFF_STATE_PENDING},
    {"Pending Approval", DIFF_STATE_PENDING},
    {"Scheduled", DIFF_STATE_PENDING},
    {"Active", DIFF_STATE_ACTIVE},
    {"In Progress", DIFF_STATE_ACTIVE},
    {"Incident", DIFF_STATE_ACTIVE},
    {"Processing", DIFF_STATE_COMPLETED},
    {"Closed", DIFF_STATE_COMPLETED},
    {"Approval Denied", DIFF_STATE_CANCELLED},
    {"closed", -1},
    {"Cancelled", -1},
    {"", -1},
};

START_TEST(default_status_map_matches_contract)
{
    conf_t *c = load(BASIC "}");
    diff_state_t st;
    int rc = diff_status_map_lookup(c->sources[0].status_map, status_rows[_i].raw, &st);
    if (status_rows[_i].state < 0) {
        ck_assert_msg(rc == -1, "\"%s\" is mapped", status_rows[_i].raw);
    } else {
        ck_assert_msg(rc == 0, "\"%s\" is not mapped", status_rows[_i].raw);
        ck_assert_int_eq(st, status_rows[_i].state);
    }
    conf_free(c);
}
END_TEST

START_TEST(status_map_overrides)
{
    conf_t *c =
        load(BASIC ",\"status_map\":{\"Incident\":\"cancelled\",\"Expired\":\"cancelled\"}}");
    diff_state_t st;
    ck_assert_int_eq(diff_status_map_lookup(c->sources[0].status_map, "Incident", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_CANCELLED);
    ck_assert_int_eq(diff_status_map_lookup(c->sources[0].status_map, "Expired", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_CANCELLED);
    ck_assert_int_eq(diff_status_map_lookup(c->sources[0].status_map, "Closed", &st), 0);
    ck_assert_int_eq(st, DIFF_STATE_COMPLETED);
    conf_free(c);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

int main(void)
{
    Suite *s = suite_create("smarterproctoring");
    TCase *tc = tcase_create("adapter");
    tcase_add_loop_test(tc, config_rows, 0, N(conf_rows));
    tcase_add_test(tc, first_request_carries_paging_filters_and_token);
    tcase_add_loop_test(tc, next_links, 0, N(next_rows));
    tcase_add_test(tc, overlong_next_and_page_bound);
    tcase_add_loop_test(tc, malformed_pages_fail, 0, N(bad_pages));
    tcase_add_test(tc, pages_in_the_simulator_shape);
    tcase_add_test(tc, seed_example_parses);
    tcase_add_test(tc, records_as_received_and_the_link_first);
    tcase_add_loop_test(tc, default_status_map_matches_contract, 0, N(status_rows));
    tcase_add_test(tc, status_map_overrides);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
