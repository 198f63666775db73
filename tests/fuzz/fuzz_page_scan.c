/*
 * Fuzz target: the page scanner (bridge/page_scan.h), differential against
 * what it replaced: oracle_parse() below (the prescan, then cJSON) and
 * cJSON_GetObjectItemCaseSensitive() along the same paths. The input is
 * one page body, scanned under four specs (Century's, quiz_jsonapi's with
 * its second id place, the body as the records array, and the rest
 * provider's dotted paths three steps deep).
 *
 * For every input and spec:
 * - both accept, or both reject, or the scanner rejects for one of the
 *   reasons page_scan.h documents as stricter than cJSON, each checked
 *   here against the bytes: a control character, data after the document
 *   (cJSON accepts the bytes before it), "\u" without four hex digits, a
 *   number RFC 8259 does not write;
 * - on accept: as many records; each span parses with cJSON to the
 *   element cJSON found (compared in order, duplicates included); the
 *   element's kind, the id, status and alternative id (kind, decoded text,
 *   too_long exactly when cJSON's text does not fit), page_scan_id_text()
 *   against provider_id_text(), and the fields, equal;
 * - on reject: a message of the documented forms, and an offset within
 *   the body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "page_scan.h"
#include "provider.h"

/* A field's buffer: small, so that too_long is exercised. */
#define FIELD_CAP 16

typedef struct spec_case {
    page_scan_paths_t paths;
} spec_case_t;

static const spec_case_t specs[] = {
    {{.records = "data",
      .id = "sessionId",
      .status = "status",
      .fields = {"pagination.nextCursor", "next", "pagination"}}},
    {{.records = "data",
      .id = "id",
      .status = "attributes.status",
      .alt_id = "attributes.id",
      .fields = {"meta.page.next", "data"}}},
    {{.records = "", .id = "id", .status = "status", .fields = {"next"}}},
    /* The rest provider's: dotted paths on both sides, three steps deep. */
    {{.records = "data.items",
      .id = "a.b.id",
      .status = "attributes.state",
      .fields = {"meta.next_cursor", "links.next", "data.items.x"}}},
};
#define NSPECS (sizeof(specs) / sizeof(specs[0]))

static page_scan_kind_t kind_of(const cJSON *v)
{
    if (v == NULL)
        return PAGE_SCAN_ABSENT;
    switch (v->type & 0xff) {
    case cJSON_NULL:
        return PAGE_SCAN_NULL;
    case cJSON_False:
    case cJSON_True:
        return PAGE_SCAN_BOOL;
    case cJSON_Number:
        return PAGE_SCAN_NUMBER;
    case cJSON_String:
        return PAGE_SCAN_STRING;
    case cJSON_Array:
        return PAGE_SCAN_ARRAY;
    case cJSON_Object:
        return PAGE_SCAN_OBJECT;
    default:
        fuzz_fail("cJSON type %d", v->type);
    }
}

/* The value at a dotted path, as the adapters look it up. */
static const cJSON *lookup(const cJSON *v, const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    if (buf[0] == '\0')
        return v;
    for (char *s = buf, *dot; v; s = dot + 1) {
        dot = strchr(s, '.');
        if (dot)
            *dot = '\0';
        v = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, s) : NULL;
        if (dot == NULL)
            break;
    }
    return v;
}

/* cJSON_Compare() looks members up by name, so that an object with a
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
        return a->valuedouble == b->valuedouble ||
               (a->valuedouble != a->valuedouble && b->valuedouble != b->valuedouble);
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next) {
        if (!same_json(x, y))
            return false;
    }
    return x == NULL && y == NULL;
}

/* The scanner's value against cJSON's; cap is the size of its buffer. */
static void check_value(const char *what, const page_scan_value_t *v, const cJSON *ref)
{
    FUZZ_CHECK(v->kind == kind_of(ref), "%s: kind %d, cJSON's %d", what, v->kind, kind_of(ref));
    if (ref == NULL) {
        FUZZ_CHECK(v->raw == NULL, "%s: absent with bytes", what);
        return;
    }
    FUZZ_CHECK(v->raw != NULL && v->raw_len > 0, "%s: no bytes", what);
    if (cJSON_IsString(ref)) {
        size_t n = strlen(ref->valuestring);
        FUZZ_CHECK(v->len == n, "%s: length %zu, cJSON's %zu", what, v->len, n);
        if (v->cap > 0) {
            FUZZ_CHECK(v->too_long == (n >= v->cap), "%s: too_long %d for %zu bytes", what,
                       v->too_long, n);
            FUZZ_CHECK(strcmp(v->text, v->too_long ? "" : ref->valuestring) == 0,
                       "%s: \"%s\", cJSON's \"%s\"", what, v->text, ref->valuestring);
            FUZZ_CHECK(fuzz_utf8_valid(v->text, strlen(v->text)), "%s: not UTF-8", what);
        }
    }
    if (cJSON_IsNumber(ref) && v->cap > 0 && !v->too_long) {
        /* The text is the number as sent, which reads as cJSON's double. */
        double d = strtod(v->text, NULL);
        FUZZ_CHECK(d == ref->valuedouble || (d != d && ref->valuedouble != ref->valuedouble),
                   "%s: %s is not %.17g", what, v->text, ref->valuedouble);
    }
}

typedef struct walk {
    const page_scan_spec_t *spec;
    const spec_case_t *c;
    const cJSON *next; /* cJSON's element for the next record, when cJSON accepted */
    bool ref_ok;
    size_t seen;
} walk_t;

/* Compares each record with cJSON's element as the scan hands it over. */
static int on_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    walk_t *w = opaque;
    (void)err;
    (void)errlen;
    FUZZ_CHECK(rec->index == w->seen, "record %zu handed over as %zu", w->seen, rec->index);
    w->seen++;
    FUZZ_CHECK(rec->len > 0, "record %zu: empty span", rec->index);
    if (!w->ref_ok)
        return 0;
    const cJSON *el = w->next;
    FUZZ_CHECK(el != NULL, "record %zu: cJSON has no such element", rec->index);
    w->next = el->next;
    FUZZ_CHECK(rec->kind == kind_of(el), "record %zu: kind %d, cJSON's %d", rec->index, rec->kind,
               kind_of(el));
    cJSON *span = cJSON_ParseWithLength(rec->span, rec->len);
    FUZZ_CHECK(span != NULL && same_json(span, el), "record %zu: its span \"%.*s\" is not cJSON's",
               rec->index, (int)rec->len, rec->span);
    cJSON_Delete(span);
    const cJSON *obj = cJSON_IsObject(el) ? el : NULL;
    const page_scan_paths_t *p = &w->c->paths;
    check_value("id", &rec->id, p->id && obj ? lookup(obj, p->id) : NULL);
    check_value("status", &rec->status, p->status && obj ? lookup(obj, p->status) : NULL);
    check_value("alt_id", &rec->alt_id, p->alt_id && obj ? lookup(obj, p->alt_id) : NULL);
    char a[DIFF_ID_MAX + 1] = "", b[DIFF_ID_MAX + 1] = "";
    const cJSON *id = p->id && obj ? lookup(obj, p->id) : NULL;
    int ra = page_scan_id_text(&rec->id, a, sizeof(a));
    int rb = provider_id_text(id, b, sizeof(b));
    FUZZ_CHECK(ra == rb && strcmp(a, b) == 0, "id text: %d \"%s\", provider_id_text %d \"%s\"", ra,
               a, rb, b);
    return 0;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Whether the scanner may reject, with rc at offset at, what cJSON took. */
static bool stricter_on_purpose(page_scan_rc_t rc, const char *body, size_t len, size_t at)
{
    const unsigned char *u = (const unsigned char *)body;
    switch (rc) {
    case PAGE_SCAN_E_CONTROL:
        return at < len && u[at] < 0x20;
    case PAGE_SCAN_E_TRAILING: {
        /* cJSON reads the bytes before the trailing ones as the whole
         * document (then whitespace). */
        const char *end = NULL;
        cJSON *doc = cJSON_ParseWithLengthOpts(body, at, &end, 0);
        cJSON_Delete(doc);
        if (doc == NULL || end == NULL)
            return false;
        for (const char *p = end; p < body + at; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
                return false;
        }
        return true;
    }
    case PAGE_SCAN_E_ESCAPE:
        /* cJSON decodes "\u" and bad hex into a NUL. */
        if (at + 6 > len || u[at] != '\\' || u[at + 1] != 'u')
            return false;
        for (size_t i = 2; i < 6; i++) {
            if (!is_hex(u[at + i]))
                return true;
        }
        return false;
    case PAGE_SCAN_E_NUMBER:
        return true;
    default:
        return false;
    }
}

static void check_spec(const spec_case_t *c, const char *body, size_t len, const cJSON *doc)
{
    char err[512] = "";
    page_scan_spec_t *spec = page_scan_spec_new(&c->paths, err, sizeof(err));
    FUZZ_CHECK(spec != NULL, "spec: %s", err);
    const cJSON *arr = doc ? lookup(doc, c->paths.records) : NULL;
    bool ref_ok = cJSON_IsArray(arr);
    walk_t w = {spec, c, ref_ok ? arr->child : NULL, ref_ok, 0};
    char text[PAGE_SCAN_MAX_FIELDS][FIELD_CAP];
    page_scan_result_t res;
    memset(&res, 0, sizeof(res));
    for (int i = 0; i < PAGE_SCAN_MAX_FIELDS; i++) {
        res.fields[i].text = text[i];
        res.fields[i].cap = i == 2 ? 0 : FIELD_CAP; /* one field without text */
    }
    page_scan_rc_t rc = page_scan(spec, body, len, on_record, &w, &res, err, sizeof(err));
    if (rc == PAGE_SCAN_OK) {
        FUZZ_CHECK(ref_ok, "accepted what cJSON and the prescan refuse");
        FUZZ_CHECK(w.next == NULL, "cJSON has more elements than the %zu records", w.seen);
        FUZZ_CHECK(res.records == w.seen, "%zu records counted, %zu handed over", res.records,
                   w.seen);
        for (int i = 0; i < PAGE_SCAN_MAX_FIELDS && c->paths.fields[i]; i++)
            check_value(c->paths.fields[i], &res.fields[i], lookup(doc, c->paths.fields[i]));
    } else {
        FUZZ_CHECK(rc != PAGE_SCAN_E_RECORD, "no callback failed");
        FUZZ_CHECK(res.error_at <= len, "error at %zu of %zu", res.error_at, len);
        static const char *const forms[] = {"invalid UTF-8 at byte ",
                                            "\"\\u0000\" in a string at",
                                            "JSON nested deeper than",
                                            "malformed JSON at byte ",
                                            "page has no \"",
                                            "page is not an array",
                                            "empty body"};
        bool known = false;
        for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
            known = known || strncmp(err, forms[i], strlen(forms[i])) == 0;
        FUZZ_CHECK(known, "message \"%s\"", err);
        if (ref_ok)
            FUZZ_CHECK(stricter_on_purpose(rc, body, len, res.error_at),
                       "refused (%d: %s) what cJSON and the prescan accept", rc, err);
    }
    page_scan_spec_free(spec);
}

/*
 * The oracle: how the adapters read a page before page_scan, kept here
 * whole. What cJSON does not check, in one pass over the bytes before it
 * parses:
 * - nesting: cJSON recurses once per level, and a hostile page of a million
 *   '[' must not reach it;
 * - UTF-8 (RFC 8259 §8.1): cJSON copies bytes as they are, and ids,
 *   statuses and the records embedded in events must be text every
 *   consumer can decode. The whole page fails, not just the field: a
 *   record is published as received, and replacing bytes in it would
 *   publish what the provider never sent, unnoticed. (cJSON itself refuses
 *   the \u escapes of lone or mismatched surrogates.)
 * - "\u0000": cJSON decodes it into a NUL that ends the C string, so
 *   "s-\u0000x" would become the id "s-" and the record would lose data.
 * Returns 0, or -1 with err naming the byte offset.
 */
static int oracle_prescan(const char *s, size_t len, char *err, size_t errlen)
{
    const unsigned char *u = (const unsigned char *)s;
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = u[i];
        if (ch >= 0x80) {
            size_t n = diff_utf8_seq(u + i, len - i);
            if (n == 0) {
                snprintf(err, errlen, "invalid UTF-8 at byte %zu of %zu", i, len);
                return -1;
            }
            i += n - 1;
        } else if (in_str) {
            if (ch == '\\') {
                if (len - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
                    snprintf(err, errlen, "\"\\u0000\" in a string at byte %zu of %zu", i, len);
                    return -1;
                }
                i++;
            } else if (ch == '"') {
                in_str = 0;
            }
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > PAGE_SCAN_MAX_DEPTH) {
                snprintf(err, errlen, "JSON nested deeper than %d levels", PAGE_SCAN_MAX_DEPTH);
                return -1;
            }
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return 0;
}

static cJSON *oracle_parse(const http_response_t *resp, char *err, size_t errlen)
{
    if (resp->body == NULL || resp->len == 0) {
        snprintf(err, errlen, "empty body");
        return NULL;
    }
    if (oracle_prescan(resp->body, resp->len, err, errlen) != 0)
        return NULL;
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(resp->body, resp->len, &end, 0);
    size_t off = end ? (size_t)(end - resp->body) : 0;
    /* cJSON stops after the first value; what follows may only be
     * whitespace (RFC 8259 §2), or a second document or garbage would pass
     * unseen. */
    while (doc && off < resp->len && strchr(" \t\r\n", resp->body[off]) && resp->body[off])
        off++;
    if (doc == NULL || off != resp->len) {
        cJSON_Delete(doc);
        snprintf(err, errlen, "malformed JSON at byte %zu of %zu", off, resp->len);
        return NULL;
    }
    return doc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    http_response_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.body = (char *)data;
    resp.len = size;
    char err[512];
    cJSON *doc = oracle_parse(&resp, err, sizeof(err));
    for (size_t i = 0; i < NSPECS; i++)
        check_spec(&specs[i], body, size, doc);
    cJSON_Delete(doc);
    return 0;
}
