/*
 * The rest provider (CONTRACT §4.1), driven with canned responses: config
 * validation with a JSON path per problem (secrets never quoted), the
 * requests each auth and paging scheme builds, how each scheme pages and
 * ends, next URLs resolved or refused (another origin, user information),
 * and the RFC 8288 Link parser.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "provider.h"
#include "testlib.h"

#define SECRET "tok-SeCrEt-42"
#define BASE "http://h:8080/api"
#define N(a) (sizeof(a) / sizeof((a)[0]))

static const provider_ops_t *const rest = &provider_rest;

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
    ck_assert_msg(c != NULL, "config refused: %s", errs_dump(errs));
    free(errs);
    return c;
}

/* A source: the head, then its auth, records/paging and extra keys. */
#define HEAD "{\"name\":\"r\",\"provider\":\"rest\",\"base_url\":\"" BASE "\","
#define MAP ",\"status_map\":{\"on\":\"active\",\"done\":\"completed\",\"gone\":\"cancelled\"}"
#define BEARER "\"auth\":{\"type\":\"bearer\",\"token\":\"" SECRET "\"}"
#define PATHS                                                                                      \
    "\"path\":\"/v2/attempts\",\"records\":\"data.items\",\"id\":\"id\",\"status\":\"a.state\""
#define CURSOR                                                                                     \
    "\"pagination\":{\"type\":\"cursor\",\"param\":\"cursor\",\"next\":\"meta.next\","             \
    "\"size_param\":\"limit\"}"
#define SRC(auth, paging, extra) HEAD auth "," PATHS "," paging MAP extra "}"
#define GOOD SRC(BEARER, CURSOR, "")

typedef struct seen {
    char ids[64][64];
    char statuses[64][32];
    int n;
} seen_t;

static int collect(void *opaque, const char *id, size_t id_len, const char *status,
                   size_t status_len, const char *rec, size_t len, char *err, size_t errlen)
{
    seen_t *s = opaque;
    /* the lengths handed over are the decoded id's and status's */
    ck_assert_uint_eq(id_len, strlen(id));
    ck_assert_uint_eq(status_len, strlen(status));
    (void)err;
    (void)errlen;
    (void)rec;
    (void)len;
    ck_assert_int_lt(s->n, 64);
    snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", id);
    snprintf(s->statuses[s->n], sizeof(s->statuses[0]), "%s", status);
    s->n++;
    return 0;
}

/* Hands body (and a Link header, when link is not NULL) to handle_page. */
static int page_with(void *poll, const char *body, const char *link, seen_t *seen, char *err,
                     size_t errlen)
{
    http_response_t r = {.status = 200, .retry_after_s = -1};
    r.body = strdup(body);
    r.len = strlen(body);
    if (link) {
        char line[2 * HTTP_HEADER_MAX];
        snprintf(line, sizeof(line), "Link: %s\r\n", link);
        http_response_add_header(&r, line, strlen(line));
    }
    int rc = rest->handle_page(poll, &r, collect, seen, err, errlen);
    http_response_reset(&r);
    return rc;
}

/* ---- configuration ---- */

static const struct {
    const char *source;
    const char *want; /* substring of one error; NULL: accepted */
} conf_rows[] = {
    {GOOD, NULL},
    {SRC("\"auth\":{\"type\":\"none\"}", "\"pagination\":{\"type\":\"none\"}", ""), NULL},
    {SRC("\"auth\":{\"type\":\"basic\",\"username\":\"u\",\"password\":\"" SECRET "\"}",
         "\"pagination\":{\"type\":\"offset\",\"param\":\"offset\",\"size_param\":\"limit\"}",
         ",\"query\":{\"state\":\"all\",\"n\":3,\"b\":true},\"headers\":{\"Accept\":\"x/y\"}"),
     NULL},
    {SRC("\"auth\":{\"type\":\"header\",\"header\":\"X-Key\",\"value\":\"" SECRET "\"}",
         "\"pagination\":{\"type\":\"page\",\"param\":\"p\",\"size_param\":\"n\",\"start\":0}", ""),
     NULL},
    {SRC("\"auth\":{\"type\":\"query\",\"param\":\"key\",\"value\":\"" SECRET "\"}",
         "\"pagination\":{\"type\":\"link_header\"}", ""),
     NULL},
    {HEAD BEARER ",\"path\":[\"/a\",\"/b\"],\"records\":\"\",\"id\":\"id\",\"status\":\"s\","
                 "\"pagination\":{\"type\":\"next_url\",\"next\":\"next\"}" MAP "}",
     "sources[0].pagination.next: records is \"\" (the body is the array)"},
    /* status_map is required, filters are not ours. */
    {HEAD BEARER "," PATHS "," CURSOR "}", "sources[0].status_map: required by the rest provider"},
    {SRC(BEARER, CURSOR, ",\"filters\":{}"),
     "sources[0].filters: the rest provider sends its parameters from \"query\""},
    /* path */
    {HEAD BEARER ",\"records\":\"d\",\"id\":\"id\",\"status\":\"s\"," CURSOR MAP "}",
     "sources[0].path: required"},
    {HEAD BEARER ",\"path\":\"/a?b=1\",\"records\":\"d\",\"id\":\"id\",\"status\":\"s\"," CURSOR MAP
                 "}",
     "sources[0].path: expected \"/...\""},
    {HEAD BEARER ",\"path\":[\"/a\",7],\"records\":\"d\",\"id\":\"id\",\"status\":\"s\"," CURSOR MAP
                 "}",
     "sources[0].path[1]: expected \"/...\""},
    {HEAD BEARER ",\"path\":[],\"records\":\"d\",\"id\":\"id\",\"status\":\"s\"," CURSOR MAP "}",
     "sources[0].path: expected"},
    /* auth */
    {HEAD PATHS "," CURSOR MAP "}", "sources[0].auth: required"},
    {SRC("\"auth\":{\"type\":\"oauth\"}", CURSOR, ""), "sources[0].auth.type: expected one of"},
    {SRC("\"auth\":{\"type\":\"bearer\",\"token\":\"" SECRET "\",\"value\":\"x\"}", CURSOR, ""),
     "sources[0].auth.value: unknown key"},
    {SRC("\"auth\":{\"type\":\"bearer\",\"token\":\"" SECRET "\\r\\nX: 1\"}", CURSOR, ""),
     "sources[0].auth.token: must not contain control characters"},
    {SRC("\"auth\":{\"type\":\"basic\",\"username\":\"a:b\",\"password\":\"" SECRET "\"}", CURSOR,
         ""),
     "sources[0].auth.username: expected no ':'"},
    {SRC("\"auth\":{\"type\":\"basic\",\"username\":\"a\"}", CURSOR, ""),
     "sources[0].auth.password: required"},
    {SRC("\"auth\":{\"type\":\"header\",\"header\":\"X Key\",\"value\":\"" SECRET "\"}", CURSOR,
         ""),
     "sources[0].auth.header: expected an HTTP header name"},
    {SRC("\"auth\":{\"type\":\"query\",\"value\":\"" SECRET "\"}", CURSOR, ""),
     "sources[0].auth.param: required"},
    /* query and headers */
    {SRC(BEARER, CURSOR, ",\"query\":{\"q\":{}}"), "sources[0].query.q: expected a non-empty"},
    {SRC(BEARER, CURSOR, ",\"query\":{\"cursor\":\"x\"}"),
     "sources[0].query.cursor: pagination or auth sends this parameter already"},
    {SRC(BEARER, CURSOR, ",\"query\":[]"), "sources[0].query: expected an object"},
    {SRC(BEARER, CURSOR, ",\"headers\":{\"authorization\":\"x\"}"),
     "sources[0].headers.authorization: header given twice"},
    {SRC(BEARER, CURSOR, ",\"headers\":{\"A\":\"1\\n\"}"),
     "sources[0].headers.A: must not contain control characters"},
    {SRC(BEARER, CURSOR, ",\"headers\":{\"a b\":\"1\"}"),
     "sources[0].headers.a b: expected an HTTP header name"},
    {SRC(BEARER, CURSOR,
         ",\"headers\":{\"a\":\"1\",\"b\":\"1\",\"c\":\"1\",\"d\":\"1\",\"e\":\"1\",\"f\":\"1\","
         "\"g\":\"1\",\"h\":\"1\"}"),
     "sources[0].headers: expected an object of at most 7"},
    /* paths of the page */
    {HEAD BEARER ",\"path\":\"/a\",\"records\":\"d..x\",\"id\":\"id\",\"status\":\"s\"," CURSOR MAP
                 "}",
     "sources[0].records: path \"d..x\""},
    {HEAD BEARER ",\"path\":\"/a\",\"records\":\"d\",\"id\":\"\",\"status\":\"s\"," CURSOR MAP "}",
     "sources[0].id: expected a dotted path"},
    {HEAD BEARER ",\"path\":\"/a\",\"records\":\"d\",\"id\":\"s\",\"status\":\"s\"," CURSOR MAP "}",
     "sources[0].status: must differ from id"},
    {HEAD BEARER ",\"path\":\"/a\",\"records\":\"d\",\"id\":\"a.b.c.d.e.f.g.h.i\",\"status\":\"s\","
                 "" CURSOR MAP "}",
     "sources[0].id: path \"a.b.c.d.e.f.g.h.i\""},
    {HEAD BEARER ",\"path\":\"/a\",\"id\":\"id\",\"status\":\"s\"," CURSOR MAP "}",
     "sources[0].records: required"},
    /* pagination */
    {HEAD BEARER "," PATHS MAP "}", "sources[0].pagination: required"},
    {SRC(BEARER, "\"pagination\":{\"type\":\"scroll\"}", ""),
     "sources[0].pagination.type: expected one of cursor"},
    {SRC(BEARER, "\"pagination\":{\"type\":\"cursor\",\"param\":\"c\"}", ""),
     "sources[0].pagination.next: required"},
    {SRC(BEARER, "\"pagination\":{\"type\":\"offset\",\"param\":\"o\"}", ""),
     "sources[0].pagination.size_param: required"},
    {SRC(BEARER, "\"pagination\":{\"type\":\"page\",\"param\":\"p\",\"size_param\":\"p\"}", ""),
     "sources[0].pagination.size_param: must differ from param"},
    {SRC(BEARER,
         "\"pagination\":{\"type\":\"page\",\"param\":\"p\",\"size_param\":\"n\",\"start\":-1}",
         ""),
     "sources[0].pagination.start"},
    {SRC(BEARER, "\"pagination\":{\"type\":\"none\",\"next\":\"x\"}", ""),
     "sources[0].pagination.next: unknown key"},
    {SRC(BEARER, CURSOR, ",\"page_size\":1001"), "sources[0].page_size"},
    {SRC(BEARER, CURSOR, ",\"sort\":\"x\""), "sources[0].sort: unknown key"},
};

START_TEST(config_rows)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = parse(conf_rows[_i].source, errs);
    if (conf_rows[_i].want == NULL) {
        ck_assert_msg(c != NULL, "row %d refused: %s", _i, errs_dump(errs));
    } else {
        ck_assert_msg(c == NULL, "row %d accepted", _i);
        ck_assert_msg(errs_contain(errs, conf_rows[_i].want), "row %d: no \"%s\" in %s", _i,
                      conf_rows[_i].want, errs_dump(errs));
        ck_assert_msg(!errs_contain(errs, "SeCrEt"), "secret in %s", errs_dump(errs));
    }
    conf_free(c);
    free(errs);
}
END_TEST

/* ---- requests and paging ---- */

static const struct {
    const char *auth;
    const char *url;    /* the first request */
    const char *header; /* the last header, NULL: none beyond Accept */
} auth_rows[] = {
    {BEARER, BASE "/v2/attempts?state=all&limit=5", "Authorization: Bearer " SECRET},
    /* base64("u:tok-SeCrEt-42") */
    {"\"auth\":{\"type\":\"basic\",\"username\":\"u\",\"password\":\"" SECRET "\"}",
     BASE "/v2/attempts?state=all&limit=5", "Authorization: Basic dTp0b2stU2VDckV0LTQy"},
    {"\"auth\":{\"type\":\"header\",\"header\":\"X-Key\",\"value\":\"" SECRET "\"}",
     BASE "/v2/attempts?state=all&limit=5", "X-Key: " SECRET},
    {"\"auth\":{\"type\":\"query\",\"param\":\"api key\",\"value\":\"" SECRET "\"}",
     BASE "/v2/attempts?state=all&limit=5&api%20key=" SECRET, NULL},
    {"\"auth\":{\"type\":\"none\"}", BASE "/v2/attempts?state=all&limit=5", NULL},
};

START_TEST(auth_schemes)
{
    char full[4096], err[256];
    snprintf(full, sizeof(full), "%s%s%s", HEAD, auth_rows[_i].auth,
             "," PATHS "," CURSOR MAP ",\"page_size\":5,\"query\":{\"state\":\"all\"},"
             "\"headers\":{\"Accept\":\"application/json\"}}");
    conf_t *c = load(full);
    void *poll = rest->poll_begin(&c->sources[0], 0);
    provider_request_t req;
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, auth_rows[_i].url);
    ck_assert_str_eq(req.headers[0], "Accept: application/json");
    if (auth_rows[_i].header) {
        ck_assert_uint_eq(req.nheaders, 2);
        ck_assert_str_eq(req.headers[1], auth_rows[_i].header);
    } else {
        ck_assert_uint_eq(req.nheaders, 1);
    }
    ck_assert_str_eq(req.label, "/v2/attempts");
    rest->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(cursor_pages_until_null_and_refuses_a_loop)
{
    conf_t *c = load(SRC(BEARER, CURSOR, ",\"page_size\":2"));
    void *poll = rest->poll_begin(&c->sources[0], 0);
    provider_request_t req;
    seen_t seen = {0};
    char err[256];

    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/v2/attempts?limit=2");
    ck_assert_int_eq(page_with(poll,
                               "{\"data\":{\"items\":[{\"id\":1,\"a\":{\"state\":\"on\"}},"
                               "{\"id\":\"b\",\"a\":{\"state\":7}}]},\"meta\":{\"next\":\"c/2+\"}}",
                               NULL, &seen, err, sizeof(err)),
                     0);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_str_eq(seen.ids[0], "1");
    ck_assert_str_eq(seen.statuses[0], "on");
    ck_assert_str_eq(seen.statuses[1], "7");
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/v2/attempts?limit=2&cursor=c%2F2%2B");
    /* The same cursor again: a loop, not a page. */
    ck_assert_int_eq(page_with(poll, "{\"data\":{\"items\":[]},\"meta\":{\"next\":\"c/2+\"}}", NULL,
                               &seen, err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "paging loop"));
    rest->poll_free(poll);

    poll = rest->poll_begin(&c->sources[0], 0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page_with(poll, "{\"data\":{\"items\":[]},\"meta\":{\"next\":null}}", NULL,
                               &seen, err, sizeof(err)),
                     0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 0);
    rest->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(offset_and_page_end_on_a_short_page_and_paths_follow_each_other)
{
    conf_t *c =
        load(HEAD BEARER ",\"path\":[\"/a\",\"/b\"],\"records\":\"\",\"id\":\"x.id\","
                         "\"status\":\"x.st\",\"page_size\":2,\"pagination\":{\"type\":"
                         "\"page\",\"param\":\"p\",\"size_param\":\"n\",\"start\":0}" MAP "}");
    void *poll = rest->poll_begin(&c->sources[0], 0);
    provider_request_t req;
    seen_t seen = {0};
    char err[256];
    const char *full =
        "[{\"x\":{\"id\":\"1\",\"st\":\"on\"}},{\"x\":{\"id\":\"2\",\"st\":\"on\"}}]";
    const char *shrt = "[{\"x\":{\"id\":\"3\",\"st\":\"done\"}}]";

    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/a?n=2&p=0");
    ck_assert_int_eq(page_with(poll, full, NULL, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/a?n=2&p=1");
    ck_assert_int_eq(page_with(poll, shrt, NULL, &seen, err, sizeof(err)), 0);
    /* The second list, from its first page. */
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/b?n=2&p=0");
    ck_assert_str_eq(req.label, "/b");
    ck_assert_int_eq(page_with(poll, "[]", NULL, &seen, err, sizeof(err)), 0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 0);
    ck_assert_int_eq(seen.n, 3);
    /* A record without its id fails the page, naming the path. */
    rest->poll_free(poll);
    poll = rest->poll_begin(&c->sources[0], 0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(page_with(poll, "[{\"x\":{\"st\":\"on\"}}]", NULL, &seen, err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "record 0 lacks an id at \"x.id\""));
    ck_assert_int_eq(page_with(poll, "{\"x\":1}", NULL, &seen, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "page is not an array"));
    rest->poll_free(poll);
    conf_free(c);

    c = load(SRC(BEARER,
                 "\"pagination\":{\"type\":\"offset\",\"param\":\"o\",\"size_param\":\"n\"}",
                 ",\"page_size\":2"));
    poll = rest->poll_begin(&c->sources[0], 0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/v2/attempts?n=2&o=0");
    ck_assert_int_eq(page_with(poll,
                               "{\"data\":{\"items\":[{\"id\":1,\"a\":{\"state\":\"on\"}},"
                               "{\"id\":2,\"a\":{\"state\":\"on\"}}]}}",
                               NULL, &seen, err, sizeof(err)),
                     0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/v2/attempts?n=2&o=2");
    rest->poll_free(poll);
    conf_free(c);
}
END_TEST

/* next_url and link_header: where the next request goes, or why not. */
static const struct {
    const char *next; /* the link as the page gives it */
    const char *want; /* the next request; NULL: refused */
    const char *err;  /* substring of the refusal */
} next_rows[] = {
    {"/api/v2/attempts?page=2", BASE "/v2/attempts?page=2", NULL},
    {"?page=2", BASE "/v2/attempts?page=2", NULL},
    {"attempts?page=2#frag", BASE "/v2/attempts?page=2", NULL},
    {"../v3/x", "http://h:8080/api/v3/x", NULL},
    {"http://H:8080/api/x", "http://H:8080/api/x", NULL}, /* hosts compare case-insensitively */
    {"http://h:8081/api/x", NULL, "next URL is on another origin (http://h:8081"},
    {"https://h:8080/api/x", NULL, "another origin"},
    {"//evil.example/x?token=1", NULL, "another origin (http://evil.example:80"},
    {"http://u:p@h:8080/api/x", NULL, "user information"},
    {"ftp://h:8080/x", NULL, "not an http(s) URL"},
    {"/^pi/x", NULL, "a character not allowed in a URL at byte 1"}, /* found by fuzz_rest */
    {"/a b", NULL, "a character not allowed in a URL at byte 2"},
    {"/api/v2/attempts?limit=2", NULL, "paging loop"},
};

START_TEST(next_urls)
{
    conf_t *c = load(SRC(BEARER,
                         "\"pagination\":{\"type\":\"next_url\",\"next\":\"n\","
                         "\"size_param\":\"limit\"}",
                         ",\"page_size\":2"));
    conf_t *l =
        load(SRC(BEARER, "\"pagination\":{\"type\":\"link_header\",\"size_param\":\"limit\"}",
                 ",\"page_size\":2"));
    for (int k = 0; k < 2; k++) {
        conf_t *conf = k ? l : c;
        void *poll = rest->poll_begin(&conf->sources[0], 0);
        provider_request_t req;
        seen_t seen = {0};
        char body[1024], link[1024], err[256];
        ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
        snprintf(body, sizeof(body), "{\"data\":{\"items\":[]},\"n\":\"%s\"}", next_rows[_i].next);
        snprintf(link, sizeof(link), "<%s>; rel=\"next\"", next_rows[_i].next);
        int rc = page_with(poll, k ? "{\"data\":{\"items\":[]}}" : body, k ? link : NULL, &seen,
                           err, sizeof(err));
        if (next_rows[_i].want) {
            ck_assert_msg(rc == 0, "row %d: %s", _i, err);
            ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
            ck_assert_str_eq(req.url, next_rows[_i].want);
            ck_assert_str_eq(req.headers[0], "Authorization: Bearer " SECRET);
        } else {
            ck_assert_int_eq(rc, -1);
            ck_assert_msg(strstr(err, next_rows[_i].err), "row %d: %s", _i, err);
            ck_assert_ptr_null(strstr(err, "token=1"));
        }
        rest->poll_free(poll);
    }
    conf_free(c);
    conf_free(l);
}
END_TEST

START_TEST(an_overlong_link_header_fails_the_page)
{
    conf_t *c = load(SRC(BEARER, "\"pagination\":{\"type\":\"link_header\"}", ""));
    void *poll = rest->poll_begin(&c->sources[0], 0);
    provider_request_t req;
    seen_t seen = {0};
    char link[HTTP_HEADER_MAX + 64], err[256];
    size_t n = (size_t)snprintf(link, sizeof(link), "<1>; rel=prev, ");
    while (n < HTTP_HEADER_MAX)
        link[n++] = ' ';
    snprintf(link + n, sizeof(link) - n, ", <2>; rel=next");
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    /* Dropped, it would have ended the poll here as if this were the last page. */
    ck_assert_int_eq(page_with(poll, "{\"data\":{\"items\":[]}}", link, &seen, err, sizeof(err)),
                     -1);
    ck_assert_str_eq(err, "Link header longer than 1023 bytes");
    rest->poll_free(poll);
    conf_free(c);
}
END_TEST

START_TEST(query_auth_rides_on_followed_urls_once)
{
    conf_t *c = load(SRC("\"auth\":{\"type\":\"query\",\"param\":\"key\",\"value\":\"" SECRET "\"}",
                         "\"pagination\":{\"type\":\"next_url\",\"next\":\"n\"}", ""));
    void *poll = rest->poll_begin(&c->sources[0], 0);
    provider_request_t req;
    seen_t seen = {0};
    char err[256];
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_int_eq(
        page_with(poll, "{\"data\":{\"items\":[]},\"n\":\"?p=2\"}", NULL, &seen, err, sizeof(err)),
        0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/v2/attempts?p=2&key=" SECRET);
    ck_assert_int_eq(page_with(poll, "{\"data\":{\"items\":[]},\"n\":\"?p=3&key=" SECRET "\"}",
                               NULL, &seen, err, sizeof(err)),
                     0);
    ck_assert_int_eq(rest->next_request(poll, &req, err, sizeof(err)), 1);
    ck_assert_str_eq(req.url, BASE "/v2/attempts?p=3&key=" SECRET);
    rest->poll_free(poll);
    conf_free(c);
}
END_TEST

/* ---- the Link parser ---- */

static const struct {
    const char *value;
    int rc;
    const char *want;
} link_rows[] = {
    {"<https://a/x?p=2>; rel=\"next\"", 1, "https://a/x?p=2"},
    {"<https://a/x?p=2>; rel=next", 1, "https://a/x?p=2"},
    {"<1>; rel=\"first\", <2>; rel=\"next\", <9>; rel=\"last\"", 1, "2"},
    {"<1>; rel=\"prev\",<2>;rel=\"NEXT\"", 1, "2"},
    {"<2>; rel=\"nofollow next\"", 1, "2"},
    {"<2>; rel=\"next-page\"", 0, NULL},
    {"<1>; title=\"a, b; rel=next\"; rel=\"prev\", <2>; rel=\"next\"", 1, "2"},
    {"<a,b>; rel=\"next\"", 1, "a,b"},
    {"<1>; rel=\"prev\"; rel=\"next\"", 0, NULL}, /* a second rel is ignored */
    {"<1>; anchor=\"#x\"; rel=\"next\", <2>; rel=next", 1, "2"},
    {"garbage, <2>; rel=next", 1, "2"},
    {"<1; rel=next", 0, NULL},
    {"<1>; rel=\"next", 0, NULL},
    {"<1> rel=next, <2>; rel=next", 1, "2"},
    {"<1>; =x, <2>; rel=next", 1, "2"},
    {"", 0, NULL},
    {",,, ,", 0, NULL},
    {"<1>; rel", 0, NULL},
    {"<1>; rel=next;, <2>; rel=last", 1, "1"},
    {"<1>; rel=prev;", 0, NULL},
    {"<1>; rel=\"\\\"next\"", 0, NULL},
};

START_TEST(link_parser)
{
    char out[64];
    int rc = provider_link_next(link_rows[_i].value, out, sizeof(out));
    ck_assert_msg(rc == link_rows[_i].rc, "row %d: %d", _i, rc);
    if (rc == 1)
        ck_assert_str_eq(out, link_rows[_i].want);
}
END_TEST

START_TEST(link_parser_bounds)
{
    char value[4096], out[16];
    snprintf(value, sizeof(value), "<0123456789abcdef>; rel=next");
    ck_assert_int_eq(provider_link_next(value, out, sizeof(out)), -1);
    /* Past PROVIDER_LINK_MAX links, the rest are not looked at. */
    size_t len = 0;
    for (int i = 0; i < PROVIDER_LINK_MAX; i++)
        len += (size_t)snprintf(value + len, sizeof(value) - len, "<%d>; rel=prev, ", i);
    snprintf(value + len, sizeof(value) - len, "<n>; rel=next");
    ck_assert_int_eq(provider_link_next(value, out, sizeof(out)), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rest");
    TCase *tc = tcase_create("rest");
    tcase_add_loop_test(tc, config_rows, 0, N(conf_rows));
    tcase_add_loop_test(tc, auth_schemes, 0, N(auth_rows));
    tcase_add_test(tc, cursor_pages_until_null_and_refuses_a_loop);
    tcase_add_test(tc, offset_and_page_end_on_a_short_page_and_paths_follow_each_other);
    tcase_add_loop_test(tc, next_urls, 0, N(next_rows));
    tcase_add_test(tc, query_auth_rides_on_followed_urls_once);
    tcase_add_test(tc, an_overlong_link_header_fails_the_page);
    tcase_add_loop_test(tc, link_parser, 0, N(link_rows));
    tcase_add_test(tc, link_parser_bounds);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
