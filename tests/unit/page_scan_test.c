/*
 * page_scan: the one-pass page scanner. Tables of documents that are JSON
 * (odd but valid: escapes, unicode, exponents, nesting, whitespace) and of
 * documents that are not, each with the byte offset its error must name;
 * what the records, ids, statuses and fields read as, against cJSON's
 * reading of the same bytes where the two must agree.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "page_scan.h"

/* A body with its length, so that a table row may hold a NUL. */
#define B(s) s, sizeof(s) - 1

static page_scan_spec_t *spec_of(const char *records, const char *id, const char *status,
                                 const char *alt, const char *f0, const char *f1)
{
    char err[256] = "";
    page_scan_spec_t *spec = page_scan_spec_new(
        &(page_scan_paths_t){
            .records = records, .id = id, .status = status, .alt_id = alt, .fields = {f0, f1}},
        err, sizeof(err));
    ck_assert_msg(spec != NULL, "%s", err);
    return spec;
}

static const struct doc_case {
    const char *body;
    size_t len;
    page_scan_rc_t rc;
    size_t at;       /* the error's offset */
    const char *err; /* a part of the message */
} doc_cases[] = {
    /* valid, odd or not */
    {B("{\"data\":[]}"), PAGE_SCAN_OK, 0, ""},
    {B(" \t\r\n{ \"data\" : [ ] , \"x\" : { } } \r\n\t "), PAGE_SCAN_OK, 0, ""},
    {B("\xef\xbb\xbf{\"data\":[]}"), PAGE_SCAN_OK, 0, ""},
    {B("{\"data\":[0,-0,1.5,-1.5e10,1E+2,1e-2,0.0e0,-0E-0,123456789012345678901234567890]}"),
     PAGE_SCAN_OK, 0, ""},
    {B("{\"data\":[{\"a\":[[{\"b\":{}},[]],{\"c\":[null,true,false]}]}]}"), PAGE_SCAN_OK, 0, ""},
    {B("{\"data\":[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\\uFFFF\"]}"),
     PAGE_SCAN_OK, 0, ""},
    {B("{\"data\":[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf\x7f\"]}"), PAGE_SCAN_OK, 0,
     ""},
    {B("{\"\":\"\",\"data\":[\"\",{}],\"\\u00e9\":1}"), PAGE_SCAN_OK, 0, ""},
    {B("{\"d\\u0061ta\":[]}"), PAGE_SCAN_OK, 0, ""},
    {B("{\"data\":[],\"data\":{}}"), PAGE_SCAN_OK, 0, ""},
    /* 63 characters: the longest number cJSON reads whole */
    {B("{\"data\":[-1234567890123456789012345678901234567890.1234567890e+123456789]}"),
     PAGE_SCAN_OK, 0, ""},
    /* not JSON */
    {B(""), PAGE_SCAN_E_EMPTY, 0, "empty body"},
    {B("   "), PAGE_SCAN_E_SYNTAX, 3, "malformed JSON at byte 3 of 3"},
    {B("{"), PAGE_SCAN_E_SYNTAX, 1, "malformed JSON at byte 1 of 1"},
    {B("{\"data\":[]"), PAGE_SCAN_E_SYNTAX, 10, "malformed JSON at byte 10 of 10"},
    {B("{\"data\":[],}"), PAGE_SCAN_E_SYNTAX, 11, "malformed JSON at byte 11 of 12"},
    {B("{\"data\":[1,]}"), PAGE_SCAN_E_SYNTAX, 11, "malformed JSON"},
    {B("{\"data\":[1 2]}"), PAGE_SCAN_E_SYNTAX, 11, "malformed JSON"},
    {B("{\"data\" []}"), PAGE_SCAN_E_SYNTAX, 8, "malformed JSON"},
    {B("{data:[]}"), PAGE_SCAN_E_SYNTAX, 1, "malformed JSON"},
    {B("{'data':[]}"), PAGE_SCAN_E_SYNTAX, 1, "malformed JSON"},
    {B("{\"data\":[tru]}"), PAGE_SCAN_E_SYNTAX, 9, "malformed JSON"},
    {B("{\"data\":[nul]}"), PAGE_SCAN_E_SYNTAX, 9, "malformed JSON"},
    {B("{\"data\":[truex]}"), PAGE_SCAN_E_SYNTAX, 13, "malformed JSON"},
    {B("{\"data\":[\"abc]}"), PAGE_SCAN_E_SYNTAX, 15, "malformed JSON"},
    {B("{\"data\":[]}x"), PAGE_SCAN_E_TRAILING, 11, "malformed JSON at byte 11 of 12"},
    {B("{\"data\":[]} {}"), PAGE_SCAN_E_TRAILING, 12, "data after the document"},
    /* numbers RFC 8259 does not write (cJSON read a prefix of some) */
    {B("{\"data\":[01]}"), PAGE_SCAN_E_NUMBER, 10, "malformed JSON at byte 10"},
    {B("{\"data\":[-01]}"), PAGE_SCAN_E_NUMBER, 11, "malformed JSON"},
    {B("{\"data\":[1.]}"), PAGE_SCAN_E_NUMBER, 11, "malformed JSON"},
    {B("{\"data\":[1.e5]}"), PAGE_SCAN_E_NUMBER, 11, "malformed JSON"},
    {B("{\"data\":[-.5]}"), PAGE_SCAN_E_NUMBER, 10, "malformed JSON"},
    {B("{\"data\":[1e]}"), PAGE_SCAN_E_NUMBER, 11, "malformed JSON"},
    {B("{\"data\":[1e+]}"), PAGE_SCAN_E_NUMBER, 12, "malformed JSON"},
    {B("{\"data\":[1.5.2]}"), PAGE_SCAN_E_NUMBER, 12, "malformed JSON"},
    {B("{\"data\":[1e5e5]}"), PAGE_SCAN_E_NUMBER, 12, "malformed JSON"},
    {B("{\"data\":[-]}"), PAGE_SCAN_E_NUMBER, 10, "malformed JSON"},
    {B("{\"data\":[+1]}"), PAGE_SCAN_E_SYNTAX, 9, "malformed JSON"},
    {B("{\"data\":[.5]}"), PAGE_SCAN_E_SYNTAX, 9, "malformed JSON"},
    {B("{\"data\":[0x10]}"), PAGE_SCAN_E_SYNTAX, 10, "malformed JSON"},
    {B("{\"data\":[-1234567890123456789012345678901234567890.1234567890e+1234567890]}"),
     PAGE_SCAN_E_NUMBER, 9, "longer than 63"},
    /* control characters: not whitespace, not string text */
    {B("\x01{\"data\":[]}"), PAGE_SCAN_E_CONTROL, 0, "malformed JSON at byte 0"},
    {B("{\"data\":[\x0b]}"), PAGE_SCAN_E_CONTROL, 9, "malformed JSON"},
    {B("{\"data\":[\"a\x01\"]}"), PAGE_SCAN_E_CONTROL, 11, "malformed JSON at byte 11"},
    {B("{\"data\":[\"a\x00x\"]}"), PAGE_SCAN_E_CONTROL, 11, "malformed JSON at byte 11"},
    {B("{\"data\":[\"a\tb\"]}"), PAGE_SCAN_E_CONTROL, 11, "malformed JSON"},
    {B("{\"data\":[]}\x00"), PAGE_SCAN_E_TRAILING, 11, "malformed JSON"},
    /* escapes */
    {B("{\"data\":[\"\\x\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON at byte 10"},
    {B("{\"data\":[\"\\U0041\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"\\u12\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"\\uZZZZ\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"\\u00G0\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"a\\"), PAGE_SCAN_E_SYNTAX, 12, "malformed JSON"},
    {B("{\"data\":[\"\\u0000\"]}"), PAGE_SCAN_E_NUL, 10, "\"\\u0000\" in a string at byte 10 of"},
    {B("{\"d\\u0000\":[]}"), PAGE_SCAN_E_NUL, 3, "\"\\u0000\" in a string at byte 3"},
    {B("{\"data\":[\"\\ud800\\u0000\"]}"), PAGE_SCAN_E_NUL, 16, "\"\\u0000\" in a string"},
    {B("{\"data\":[\"\\\\u0000\"]}"), PAGE_SCAN_OK, 0, ""},
    {B("{\"data\":[\"\\udcff\"]}"), PAGE_SCAN_E_ESCAPE, 10, "lone low surrogate"},
    {B("{\"data\":[\"\\ud800\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"\\ud800x\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"\\ud800\\u0041\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    {B("{\"data\":[\"\\ud800\\ud800\"]}"), PAGE_SCAN_E_ESCAPE, 10, "malformed JSON"},
    /* UTF-8 (RFC 3629): invalid, overlong, surrogate, past U+10FFFF, cut short */
    {B("{\"data\":[\"s-\xff\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8 at byte 12 of 16"},
    {B("{\"data\":[\"s-\x80\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8 at byte 12"},
    {B("{\"data\":[\"s-\xc1\xbf\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8 at byte 12"},
    {B("{\"data\":[\"s-\xe0\x9f\xbf\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8"},
    {B("{\"data\":[\"s-\xed\xa0\x80\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8"},
    {B("{\"data\":[\"s-\xf4\x90\x80\x80\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8"},
    {B("{\"data\":[\"s-\xf0\x8f\xbf\xbf\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8"},
    {B("{\"data\":[\"s-\xe2\x82"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8 at byte 12 of 14"},
    {B("{\"data\":[\"s-\xe2\x82\"]}"), PAGE_SCAN_E_UTF8, 12, "invalid UTF-8"},
    {B("{\xff\"data\":[]}"), PAGE_SCAN_E_UTF8, 1, "invalid UTF-8 at byte 1"},
    {B("{\"data\":[\xc3\xa9]}"), PAGE_SCAN_E_SYNTAX, 9, "malformed JSON at byte 9"},
    /* an error is the first one in the bytes */
    {B("{\"data\":[\"\\u0000\",\"\xff\"]}"), PAGE_SCAN_E_NUL, 10, "\\u0000"},
    {B("{\"data\":[\"\xff\",\"\\u0000\"]}"), PAGE_SCAN_E_UTF8, 10, "invalid UTF-8 at byte 10"},
    /* the records array: the first member of the name, an array */
    {B("{}"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("[]"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("{\"data\":{}}"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("{\"data\":null}"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("{\"data\":\"x\",\"data\":[]}"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("{\"x\":{\"data\":[]}}"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("{\"Data\":[]}"), PAGE_SCAN_E_RECORDS, 0, "page has no \"data\" array"},
    {B("{\"data\":{},\"data\":[]"), PAGE_SCAN_E_SYNTAX, 20, "malformed JSON"},
};

START_TEST(documents_validate)
{
    const struct doc_case *c = &doc_cases[_i];
    page_scan_spec_t *spec = spec_of("data", "id", "status", NULL, NULL, NULL);
    page_scan_result_t res = {0};
    char err[256] = "";
    page_scan_rc_t rc = page_scan(spec, c->body, c->len, NULL, NULL, &res, err, sizeof(err));
    ck_assert_msg(rc == c->rc, "row %d: rc %d, not %d (%s)", _i, rc, c->rc, err);
    if (rc != PAGE_SCAN_OK && rc != PAGE_SCAN_E_RECORDS && rc != PAGE_SCAN_E_EMPTY)
        ck_assert_msg(res.error_at == c->at, "row %d: at %zu, not %zu (%s)", _i, res.error_at,
                      c->at, err);
    ck_assert_msg(strstr(err, c->err) != NULL, "row %d: \"%s\" lacks \"%s\"", _i, err, c->err);
    /* What passes here, cJSON reads as well. */
    if (rc == PAGE_SCAN_OK) {
        cJSON *doc = cJSON_ParseWithLength(c->body, c->len);
        ck_assert_msg(doc != NULL, "row %d: cJSON refuses it", _i);
        cJSON_Delete(doc);
    }
    page_scan_spec_free(spec);
}
END_TEST

/* Nesting up to the bound passes, one level more fails at that bracket. */
START_TEST(depth_is_bounded)
{
    page_scan_spec_t *spec = spec_of("data", "id", NULL, NULL, NULL, NULL);
    for (int extra = 0; extra <= 1; extra++) {
        /* {"data": then [ ... ] with the object as level 1 */
        int levels = PAGE_SCAN_MAX_DEPTH - 1 + extra;
        char body[512];
        size_t n = (size_t)snprintf(body, sizeof(body), "{\"data\":");
        memset(body + n, '[', (size_t)levels);
        memset(body + n + (size_t)levels, ']', (size_t)levels);
        n += 2 * (size_t)levels;
        body[n++] = '}';
        page_scan_result_t res = {0};
        char err[256] = "";
        page_scan_rc_t rc = page_scan(spec, body, n, NULL, NULL, &res, err, sizeof(err));
        if (extra == 0) {
            ck_assert_msg(rc == PAGE_SCAN_OK, "%s", err);
        } else {
            ck_assert_int_eq(rc, PAGE_SCAN_E_DEPTH);
            ck_assert_uint_eq(res.error_at, 8 + PAGE_SCAN_MAX_DEPTH - 1);
            ck_assert_ptr_nonnull(strstr(err, "nested deeper than 64 levels at byte 71 of"));
        }
    }
    /* The same with objects: {"data":[{"a":{"a":...}}]} */
    for (int extra = 0; extra <= 1; extra++) {
        int objects = PAGE_SCAN_MAX_DEPTH - 2 + extra;
        char body[1024];
        size_t n = (size_t)snprintf(body, sizeof(body), "{\"data\":[");
        for (int i = 0; i < objects; i++)
            n += (size_t)snprintf(body + n, sizeof(body) - n, i + 1 < objects ? "{\"a\":" : "{");
        memset(body + n, '}', (size_t)objects);
        n += (size_t)objects;
        n += (size_t)snprintf(body + n, sizeof(body) - n, "]}");
        page_scan_result_t res = {0};
        char err[256] = "";
        page_scan_rc_t rc = page_scan(spec, body, n, NULL, NULL, &res, err, sizeof(err));
        ck_assert_msg(rc == (extra ? PAGE_SCAN_E_DEPTH : PAGE_SCAN_OK), "objects %d: %s", objects,
                      err);
    }
    /* A hostile page of a million brackets costs one bracket past the bound. */
    size_t big = 1000000;
    char *deep = malloc(big);
    memset(deep, '[', big);
    page_scan_result_t res = {0};
    char err[256] = "";
    ck_assert_int_eq(page_scan(spec, deep, big, NULL, NULL, &res, err, sizeof(err)),
                     PAGE_SCAN_E_DEPTH);
    ck_assert_ptr_nonnull(strstr(err, "nested deeper"));
    free(deep);
    page_scan_spec_free(spec);
}
END_TEST

/* What the callback saw, record by record. */
typedef struct seen {
    int n;
    page_scan_kind_t kind[8], id_kind[8];
    char span[8][256], id[8][300], status[8][80], alt[8][300];
    bool id_long[8], status_long[8];
    int fail_at; /* the record whose callback fails, or -1 */
} seen_t;

static int on_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    seen_t *s = opaque;
    ck_assert_uint_eq(rec->index, (size_t)s->n);
    ck_assert_int_lt(s->n, 8);
    int i = s->n++;
    s->kind[i] = rec->kind;
    s->id_kind[i] = rec->id.kind;
    snprintf(s->span[i], sizeof(s->span[i]), "%.*s", (int)rec->len, rec->span);
    snprintf(s->id[i], sizeof(s->id[i]), "%s", rec->id.text);
    snprintf(s->status[i], sizeof(s->status[i]), "%s", rec->status.text);
    snprintf(s->alt[i], sizeof(s->alt[i]), "%s", rec->alt_id.text);
    s->id_long[i] = rec->id.too_long;
    s->status_long[i] = rec->status.too_long;
    if (i == s->fail_at) {
        snprintf(err, errlen, "record %d refused", i);
        return -1;
    }
    return 0;
}

/* cJSON_Compare() looks members up by name, so that a record with a
 * duplicate name differs from itself: compare in order instead. */
static bool same_json(const cJSON *a, const cJSON *b)
{
    if ((a->type & 0xff) != (b->type & 0xff))
        return false;
    if ((a->string == NULL) != (b->string == NULL) || (a->string && strcmp(a->string, b->string)))
        return false;
    if (cJSON_IsString(a))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsNumber(a))
        return a->valuedouble == b->valuedouble;
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next) {
        if (!same_json(x, y))
            return false;
    }
    return x == NULL && y == NULL;
}

static const struct record_case {
    const char *body;
    int n;
    struct {
        page_scan_kind_t kind, id_kind;
        const char *span, *id, *status, *alt;
    } rec[3];
} record_cases[] = {
    {"{\"data\":[ {\"sessionId\":\"a\",\"attributes\":{\"status\":\"S\"}} ,\n{\"sessionId\":\"b\"}"
     " ]}",
     2,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_STRING,
       "{\"sessionId\":\"a\",\"attributes\":{\"status\":\"S\"}}", "a", "S", ""},
      {PAGE_SCAN_OBJECT, PAGE_SCAN_STRING, "{\"sessionId\":\"b\"}", "b", "", ""}}},
    /* duplicates: the first wins, at every step */
    {"{\"data\":[{\"sessionId\":\"a\",\"sessionId\":\"b\",\"attributes\":{\"status\":\"x\"},"
     "\"attributes\":{\"status\":\"y\"}}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_STRING, NULL, "a", "x", ""}}},
    {"{\"data\":[{\"attributes\":1,\"attributes\":{\"status\":\"y\",\"id\":\"z\"}}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_ABSENT, NULL, "", "", ""}}},
    {"{\"data\":[{\"attributes\":{\"status\":\"y\",\"status\":\"w\",\"id\":\"z\"}}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_ABSENT, NULL, "", "y", "z"}}},
    /* names compared decoded; values decoded */
    {"{\"data\":[{\"s\\u0065ssionId\":\"a\\\"b\\\\c\\/\\u00e9\\ud83d\\ude00\\n\","
     "\"\\u0061ttributes\":{\"st\\u0061tus\":\"\\u0049N\"}}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_STRING, NULL, "a\"b\\c/\xc3\xa9\xf0\x9f\x98\x80\n", "IN", ""}}},
    /* case matters; a nested sessionId is not the record's */
    {"{\"data\":[{\"SessionId\":\"a\",\"x\":{\"sessionId\":\"b\"},\"sessionid\":\"c\"}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_ABSENT, NULL, "", "", ""}}},
    /* ids of other kinds; elements that are not objects */
    {"{\"data\":[{\"sessionId\":42},{\"sessionId\":null},{\"sessionId\":[1]}]}",
     3,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_NUMBER, "{\"sessionId\":42}", "42", "", ""},
      {PAGE_SCAN_OBJECT, PAGE_SCAN_NULL, NULL, "", "", ""},
      {PAGE_SCAN_OBJECT, PAGE_SCAN_ARRAY, NULL, "", "", ""}}},
    {"{\"data\":[1,\"sessionId\",[{\"sessionId\":\"a\"}]]}",
     3,
     {{PAGE_SCAN_NUMBER, PAGE_SCAN_ABSENT, "1", "", "", ""},
      {PAGE_SCAN_STRING, PAGE_SCAN_ABSENT, "\"sessionId\"", "", "", ""},
      {PAGE_SCAN_ARRAY, PAGE_SCAN_ABSENT, "[{\"sessionId\":\"a\"}]", "", "", ""}}},
    {"{\"data\":[{\"sessionId\":true,\"attributes\":{\"status\":1.5e3}}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_BOOL, NULL, "true", "1.5e3", ""}}},
    /* the records array nested elsewhere in the page does not count */
    {"{\"meta\":{\"data\":[{}]},\"data\":[{\"sessionId\":\"x\"}],\"data\":[{},{}]}",
     1,
     {{PAGE_SCAN_OBJECT, PAGE_SCAN_STRING, NULL, "x", "", ""}}},
};

START_TEST(records_read_as_cjson_reads_them)
{
    const struct record_case *c = &record_cases[_i];
    page_scan_spec_t *spec =
        spec_of("data", "sessionId", "attributes.status", "attributes.id", NULL, NULL);
    page_scan_result_t res = {0};
    seen_t s = {.fail_at = -1};
    char err[256] = "";
    page_scan_rc_t rc =
        page_scan(spec, c->body, strlen(c->body), on_record, &s, &res, err, sizeof(err));
    ck_assert_msg(rc == PAGE_SCAN_OK, "row %d: %s", _i, err);
    ck_assert_int_eq(s.n, c->n);
    ck_assert_uint_eq(res.records, (size_t)c->n);
    cJSON *doc = cJSON_Parse(c->body);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    const cJSON *el = data->child;
    for (int i = 0; i < c->n; i++, el = el->next) {
        ck_assert_msg(s.kind[i] == c->rec[i].kind, "row %d rec %d kind %d", _i, i, s.kind[i]);
        ck_assert_msg(s.id_kind[i] == c->rec[i].id_kind, "row %d rec %d id kind %d", _i, i,
                      s.id_kind[i]);
        if (c->rec[i].span)
            ck_assert_str_eq(s.span[i], c->rec[i].span);
        ck_assert_str_eq(s.id[i], c->rec[i].id);
        ck_assert_str_eq(s.status[i], c->rec[i].status);
        ck_assert_str_eq(s.alt[i], c->rec[i].alt);
        /* the span is the record cJSON found */
        cJSON *span = cJSON_Parse(s.span[i]);
        ck_assert_msg(span && same_json(span, el), "row %d rec %d: span differs", _i, i);
        cJSON_Delete(span);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(el, "sessionId");
        if (cJSON_IsString(id))
            ck_assert_str_eq(s.id[i], id->valuestring);
    }
    cJSON_Delete(doc);
    page_scan_spec_free(spec);
}
END_TEST

/* Longer than the diff takes: flagged, never cut. */
START_TEST(long_ids_and_statuses_are_flagged)
{
    page_scan_spec_t *spec = spec_of("data", "id", "status", NULL, NULL, NULL);
    for (int over = 0; over <= 1; over++) {
        char id[DIFF_ID_MAX + 2], status[DIFF_STATUS_MAX + 2], body[1024];
        memset(id, 'i', sizeof(id));
        id[DIFF_ID_MAX + over] = '\0';
        memset(status, 's', sizeof(status));
        status[DIFF_STATUS_MAX + over] = '\0';
        snprintf(body, sizeof(body), "{\"data\":[{\"id\":\"%s\",\"status\":\"%s\"}]}", id, status);
        page_scan_result_t res = {0};
        seen_t s = {.fail_at = -1};
        char err[256] = "";
        ck_assert_int_eq(page_scan(spec, body, strlen(body), on_record, &s, &res, err, sizeof(err)),
                         PAGE_SCAN_OK);
        ck_assert_int_eq(s.id_long[0], over);
        ck_assert_int_eq(s.status_long[0], over);
        ck_assert_str_eq(s.id[0], over ? "" : id);
        ck_assert_str_eq(s.status[0], over ? "" : status);
    }
    /* decoded length counts: 64 escapes of one byte each fit */
    char body[1024] = "{\"data\":[{\"status\":\"";
    for (int i = 0; i < DIFF_STATUS_MAX; i++)
        strcat(body, "\\u0041");
    strcat(body, "\"}]}");
    page_scan_result_t res = {0};
    seen_t s = {.fail_at = -1};
    char err[256] = "";
    ck_assert_int_eq(page_scan(spec, body, strlen(body), on_record, &s, &res, err, sizeof(err)),
                     PAGE_SCAN_OK);
    ck_assert_int_eq(s.status_long[0], 0);
    ck_assert_uint_eq(strlen(s.status[0]), DIFF_STATUS_MAX);
    page_scan_spec_free(spec);
}
END_TEST

static const struct field_case {
    const char *body;
    page_scan_kind_t kind[2];
    const char *text[2];
    bool too_long[2];
} field_cases[] = {
    {"{\"data\":[],\"pagination\":{\"nextCursor\":\"abc\"},\"next\":null}",
     {PAGE_SCAN_STRING, PAGE_SCAN_NULL},
     {"abc", ""},
     {false, false}},
    {"{\"pagination\":{\"nextCursor\":null},\"data\":[]}",
     {PAGE_SCAN_NULL, PAGE_SCAN_ABSENT},
     {"", ""},
     {false, false}},
    {"{\"data\":[],\"pagination\":{},\"next\":-1.5E-3}",
     {PAGE_SCAN_ABSENT, PAGE_SCAN_NUMBER},
     {"", "-1.5E-3"},
     {false, false}},
    {"{\"data\":[],\"pagination\":\"x\",\"next\":false}",
     {PAGE_SCAN_ABSENT, PAGE_SCAN_BOOL},
     {"", "false"},
     {false, false}},
    {"{\"data\":[],\"pagination\":{\"nextCursor\":{\"a\":1}},\"next\":[1,2]}",
     {PAGE_SCAN_OBJECT, PAGE_SCAN_ARRAY},
     {"", ""},
     {false, false}},
    {"{\"data\":[],\"pagination\":{\"nextCursor\":\"first\",\"nextCursor\":\"second\"},"
     "\"pagination\":{\"nextCursor\":\"third\"},\"next\":\"n\",\"next\":\"m\"}",
     {PAGE_SCAN_STRING, PAGE_SCAN_STRING},
     {"first", "n"},
     {false, false}},
    {"{\"data\":[],\"pagination\":{\"nextCursor\":\"0123456789abcdef\"},"
     "\"next\":\"h\\u0074tps://x/\\u00e9\"}",
     {PAGE_SCAN_STRING, PAGE_SCAN_STRING},
     {"", "https://x/\xc3\xa9"},
     {true, false}},
    /* a field inside the records is not the document's */
    {"{\"data\":[{\"next\":\"x\"}]}",
     {PAGE_SCAN_ABSENT, PAGE_SCAN_ABSENT},
     {"", ""},
     {false, false}},
};

START_TEST(fields_read_as_cjson_reads_them)
{
    const struct field_case *c = &field_cases[_i];
    page_scan_spec_t *spec = spec_of("data", "id", NULL, NULL, "pagination.nextCursor", "next");
    char cursor[16], next[64];
    page_scan_result_t res = {
        .fields = {{.text = cursor, .cap = sizeof(cursor)}, {.text = next, .cap = sizeof(next)}}};
    char err[256] = "";
    ck_assert_msg(page_scan(spec, c->body, strlen(c->body), NULL, NULL, &res, err, sizeof(err)) ==
                      PAGE_SCAN_OK,
                  "row %d: %s", _i, err);
    for (int f = 0; f < 2; f++) {
        ck_assert_msg(res.fields[f].kind == c->kind[f], "row %d field %d: kind %d", _i, f,
                      res.fields[f].kind);
        ck_assert_str_eq(res.fields[f].text, c->text[f]);
        ck_assert_int_eq(res.fields[f].too_long, c->too_long[f]);
        if (c->kind[f] != PAGE_SCAN_ABSENT)
            ck_assert_ptr_nonnull(res.fields[f].raw);
    }
    ck_assert_int_eq(res.fields[2].kind, PAGE_SCAN_ABSENT);
    page_scan_spec_free(spec);
}
END_TEST

/* Paths of several steps, the body as the array, fields that are prefixes
 * of the records path. */
START_TEST(paths_of_several_steps)
{
    page_scan_spec_t *spec = spec_of("data.items", "a.b.c", "s", NULL, "data", "data.next");
    const char *body = "{\"data\":{\"next\":\"n2\",\"items\":[{\"a\":{\"b\":{\"c\":\"deep\"}},"
                       "\"s\":\"x\"}]}}";
    char next[8];
    page_scan_result_t res = {.fields = {{0}, {.text = next, .cap = sizeof(next)}}};
    seen_t s = {.fail_at = -1};
    char err[256] = "";
    ck_assert_msg(page_scan(spec, body, strlen(body), on_record, &s, &res, err, sizeof(err)) ==
                      PAGE_SCAN_OK,
                  "%s", err);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.id[0], "deep");
    ck_assert_int_eq(res.fields[0].kind, PAGE_SCAN_OBJECT);
    ck_assert_uint_eq(res.fields[0].raw_len, strlen(body) - 9);
    ck_assert_str_eq(next, "n2");
    ck_assert_int_eq(
        page_scan(spec, "{\"data\":{\"items\":{}}}", 21, NULL, NULL, &res, err, sizeof(err)),
        PAGE_SCAN_E_RECORDS);
    ck_assert_str_eq(err, "page has no \"data.items\" array");
    page_scan_spec_free(spec);

    spec = spec_of("", "id", "status", NULL, "x", NULL);
    body = " [{\"id\":1,\"status\":\"s\"}] ";
    s = (seen_t){.fail_at = -1};
    ck_assert_int_eq(page_scan(spec, body, strlen(body), on_record, &s, &res, err, sizeof(err)),
                     PAGE_SCAN_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.span[0], "{\"id\":1,\"status\":\"s\"}");
    ck_assert_int_eq(res.fields[0].kind, PAGE_SCAN_ABSENT);
    ck_assert_int_eq(page_scan(spec, "{\"x\":[]}", 8, NULL, NULL, &res, err, sizeof(err)),
                     PAGE_SCAN_E_RECORDS);
    ck_assert_str_eq(err, "page is not an array");
    page_scan_spec_free(spec);
}
END_TEST

/* A failing callback stops the callbacks; a malformation later in the page
 * still names itself. */
START_TEST(a_failing_record_fails_the_page)
{
    page_scan_spec_t *spec = spec_of("data", "id", NULL, NULL, NULL, NULL);
    const char *ok = "{\"data\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}]}";
    const char *bad = "{\"data\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}],}";
    page_scan_result_t res = {0};
    char err[256] = "";
    seen_t s = {.fail_at = 1};
    ck_assert_int_eq(page_scan(spec, ok, strlen(ok), on_record, &s, &res, err, sizeof(err)),
                     PAGE_SCAN_E_RECORD);
    ck_assert_str_eq(err, "record 1 refused");
    ck_assert_int_eq(s.n, 2);
    s = (seen_t){.fail_at = 1};
    ck_assert_int_eq(page_scan(spec, bad, strlen(bad), on_record, &s, &res, err, sizeof(err)),
                     PAGE_SCAN_E_SYNTAX);
    ck_assert_ptr_nonnull(strstr(err, "malformed JSON at byte 43"));
    page_scan_spec_free(spec);
}
END_TEST

static const struct spec_case {
    page_scan_paths_t paths;
    const char *err;
} bad_specs[] = {
    {{.records = NULL, .id = "id"}, "no records path"},
    {{.records = "a..b", .id = "id"}, "path \"a..b\""},
    {{.records = ".a", .id = "id"}, "path \".a\""},
    {{.records = "a.", .id = "id"}, "path \"a.\""},
    {{.records = "data", .id = ""}, "path \"\""},
    {{.records = "data", .id = "1.2.3.4.5.6.7.8.9"}, "at most 8"},
    {{.records = "data", .id = "id", .status = "id"}, "given twice"},
    {{.records = "data", .fields = {"next", "next"}}, "given twice"},
};

START_TEST(bad_paths_are_refused)
{
    char err[256] = "";
    ck_assert_ptr_null(page_scan_spec_new(&bad_specs[_i].paths, err, sizeof(err)));
    ck_assert_msg(strstr(err, bad_specs[_i].err), "row %d: %s", _i, err);
}
END_TEST

START_TEST(long_steps_are_refused)
{
    char name[PAGE_SCAN_NAME_MAX + 2], err[256] = "";
    memset(name, 'n', sizeof(name));
    name[PAGE_SCAN_NAME_MAX] = '\0';
    page_scan_spec_t *spec =
        page_scan_spec_new(&(page_scan_paths_t){.records = "data", .id = name}, err, sizeof(err));
    ck_assert_ptr_nonnull(spec);
    page_scan_spec_free(spec);
    name[PAGE_SCAN_NAME_MAX] = 'n';
    name[PAGE_SCAN_NAME_MAX + 1] = '\0';
    ck_assert_ptr_null(
        page_scan_spec_new(&(page_scan_paths_t){.records = "data", .id = name}, err, sizeof(err)));
}
END_TEST

static const struct id_case {
    const char *json; /* the id's value */
    int rc;
    const char *text;
} id_cases[] = {
    {"\"s-1\"", 0, "s-1"},
    {"\"\"", -1, ""},
    {"42", 0, "42"},
    {"-7", 0, "-7"},
    {"1e2", 0, "100"},
    {"1.0", 0, "1"},
    {"-0", 0, "0"},
    {"1.5", -1, ""},
    {"9007199254740992", 0, "9007199254740992"},
    {"9007199254740993", 0, "9007199254740992"},
    {"9007199254740994", -1, ""},
    {"1e300", -1, ""},
    {"null", -1, ""},
    {"true", -1, ""},
    {"{}", -1, ""},
};

/* The id of the one record of a page, copied out of the callback. */
typedef struct id_got {
    page_scan_value_t v;
    char text[DIFF_ID_MAX + 1];
} id_got_t;

static int on_id(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    id_got_t *got = opaque;
    got->v = rec->id;
    memcpy(got->text, rec->id_text, sizeof(got->text));
    return 0;
}

/* page_scan_id_text says what provider_id_text says of cJSON's value. */
START_TEST(ids_as_provider_id_text)
{
    const struct id_case *c = &id_cases[_i];
    page_scan_spec_t *spec = spec_of("data", "id", NULL, NULL, NULL, NULL);
    char body[256], out[DIFF_ID_MAX + 1] = "";
    snprintf(body, sizeof(body), "{\"data\":[{\"id\":%s}]}", c->json);
    id_got_t got;
    memset(&got, 0, sizeof(got));
    page_scan_result_t res = {0};
    char err[256] = "";
    ck_assert_int_eq(page_scan(spec, body, strlen(body), on_id, &got, &res, err, sizeof(err)),
                     PAGE_SCAN_OK);
    got.v.text = got.text;
    ck_assert_int_eq(page_scan_id_text(&got.v, out, sizeof(out)), c->rc);
    if (c->rc == 0)
        ck_assert_str_eq(out, c->text);
    page_scan_spec_free(spec);
}
END_TEST

/* A stored record is held to a page's rules, whatever its kind. */
static const struct {
    const char *text;
    page_scan_rc_t rc;
} check_cases[] = {
    {"{ \"id\" : \"a\", \"n\":[1, 2.5e3 ,null] }", PAGE_SCAN_OK},
    {"[1,{}]", PAGE_SCAN_OK},
    {"\"s\"", PAGE_SCAN_OK},
    {"{\"id\":\"a\"", PAGE_SCAN_E_SYNTAX},
    {"{\"id\":\"a\"} x", PAGE_SCAN_E_TRAILING},
    {"{\"id\":\"\xff\"}", PAGE_SCAN_E_UTF8},
    {"{\"id\":\"\\u0000\"}", PAGE_SCAN_E_NUL},
    {"not json", PAGE_SCAN_E_SYNTAX},
    {"", PAGE_SCAN_E_EMPTY},
};

START_TEST(values_check)
{
    char err[256] = "";
    const char *t = check_cases[_i].text;
    ck_assert_msg(page_scan_check(t, strlen(t), err, sizeof(err)) == check_cases[_i].rc, "%s: %s",
                  t, err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("page_scan");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, documents_validate, 0, sizeof(doc_cases) / sizeof(doc_cases[0]));
    tcase_add_test(tc, depth_is_bounded);
    tcase_add_loop_test(tc, records_read_as_cjson_reads_them, 0,
                        sizeof(record_cases) / sizeof(record_cases[0]));
    tcase_add_test(tc, long_ids_and_statuses_are_flagged);
    tcase_add_loop_test(tc, fields_read_as_cjson_reads_them, 0,
                        sizeof(field_cases) / sizeof(field_cases[0]));
    tcase_add_test(tc, paths_of_several_steps);
    tcase_add_test(tc, a_failing_record_fails_the_page);
    tcase_add_loop_test(tc, bad_paths_are_refused, 0, sizeof(bad_specs) / sizeof(bad_specs[0]));
    tcase_add_test(tc, long_steps_are_refused);
    tcase_add_loop_test(tc, ids_as_provider_id_text, 0, sizeof(id_cases) / sizeof(id_cases[0]));
    tcase_add_loop_test(tc, values_check, 0, sizeof(check_cases) / sizeof(check_cases[0]));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
