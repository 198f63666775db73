/*
 * provider: the registry of adapters and what they share.
 */
#include "provider.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "page_scan.h"

const provider_ops_t *const provider_all[] = {&provider_century, &provider_quiz_jsonapi,
                                              &provider_proctorexam, &provider_smarterproctoring,
                                              NULL};

const provider_ops_t *provider_find(const char *name)
{
    for (size_t i = 0; provider_all[i]; i++) {
        if (strcmp(provider_all[i]->name, name) == 0)
            return provider_all[i];
    }
    return NULL;
}

diff_status_map_t *provider_status_map(const provider_ops_t *p, const cJSON *overrides)
{
    diff_status_map_t *m = diff_status_map_new();
    if (m == NULL)
        return NULL;
    for (const provider_status_t *s = p->statuses; s && s->raw; s++) {
        if (diff_status_map_set(m, s->raw, s->state) != 0)
            goto fail;
    }
    for (const cJSON *e = overrides ? overrides->child : NULL; e; e = e->next) {
        diff_state_t st;
        if (!cJSON_IsString(e) || diff_state_parse(e->valuestring, &st) != 0 ||
            diff_status_map_set(m, e->string, st) != 0)
            goto fail;
    }
    return m;
fail:
    diff_status_map_free(m);
    return NULL;
}

int provider_url_add(char *url, size_t urlsize, const char *name, const char *value)
{
    char enc_name[256], enc_value[2048];
    if (http_url_encode(name, enc_name, sizeof(enc_name)) != 0 ||
        http_url_encode(value, enc_value, sizeof(enc_value)) != 0)
        return -1;
    size_t len = strlen(url);
    int n = snprintf(url + len, urlsize - len, "%c%s=%s", strchr(url, '?') ? '&' : '?', enc_name,
                     enc_value);
    if (n < 0 || (size_t)n >= urlsize - len) {
        url[len] = '\0';
        return -1;
    }
    return 0;
}

/*
 * What cJSON does not check, in one pass over the bytes before it parses:
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
static int json_prescan(const char *s, size_t len, char *err, size_t errlen)
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

cJSON *provider_parse_json(const http_response_t *resp, char *err, size_t errlen)
{
    if (resp->body == NULL || resp->len == 0) {
        snprintf(err, errlen, "empty body");
        return NULL;
    }
    if (json_prescan(resp->body, resp->len, err, errlen) != 0)
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

int provider_is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && strchr(extra, c) == NULL)
            return 0;
    }
    return 1;
}

int provider_add_header(provider_request_t *req, const char *name, const char *value)
{
    if (req->nheaders >= HTTP_MAX_REQUEST_HEADERS || !provider_is_token(name) ||
        sink_has_control(value))
        return -1;
    int n = snprintf(req->headers[req->nheaders], sizeof(req->headers[0]), "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof(req->headers[0]))
        return -1;
    req->nheaders++;
    return 0;
}

cJSON *provider_page_array(const http_response_t *resp, const char *key, const cJSON **array,
                           char *err, size_t errlen)
{
    cJSON *doc = provider_parse_json(resp, err, errlen);
    if (doc == NULL)
        return NULL;
    *array = cJSON_GetObjectItemCaseSensitive(doc, key);
    if (!cJSON_IsArray(*array)) {
        snprintf(err, errlen, "page has no \"%s\" array", key);
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

page_scan_spec_t *provider_scan_spec(const page_scan_paths_t *paths, const char *path,
                                     sink_errors_t *errs)
{
    char err[256];
    page_scan_spec_t *spec = page_scan_spec_new(paths, err, sizeof(err));
    if (spec == NULL)
        sink_errors_add(errs, path, "%s", err);
    return spec;
}

int provider_exact_integer(double d, long long *out)
{
    return sink_exact_integer(d, -PROVIDER_EXACT_INT_MAX, PROVIDER_EXACT_INT_MAX, out) == 0;
}

int provider_id_text(const cJSON *v, char *out, size_t n)
{
    long long ll;
    if (cJSON_IsNumber(v) && provider_exact_integer(v->valuedouble, &ll)) {
        snprintf(out, n, "%lld", ll);
        return 0;
    }
    if (cJSON_IsString(v) && v->valuestring[0] != '\0' && strlen(v->valuestring) < n) {
        snprintf(out, n, "%s", v->valuestring);
        return 0;
    }
    return -1;
}

/* ---- INTERIM record text (see provider.h) ---- */

/* The first size tried for a record's text; it grows by doubling. */
#define PROVIDER_TEXT_FIRST 4096
/* cJSON_PrintPreallocated() may need a few bytes beyond the text. */
#define PROVIDER_TEXT_SLACK 5

/* Integers above this are not exact in a double: cJSON parsed them lossily. */
#define PROVIDER_MAX_EXACT_INT 9007199254740992.0 /* 2^53 */

static int big_integer(const cJSON *n)
{
    double d = n->valuedouble;
    return cJSON_IsNumber(n) && fabs(d) > INT_MAX && fabs(d) <= PROVIDER_MAX_EXACT_INT &&
           d == floor(d);
}

/*
 * cJSON prints an integer beyond int's range as "%1.15g"
 * (4436481160115170 becomes 4.43648116011517e+15): no longer the record as
 * received. Such numbers are exact in a double up to 2^53, so a record that
 * holds any is copied with them as raw integer text.
 */
static int has_big_integer(const cJSON *n)
{
    if (big_integer(n))
        return 1;
    for (const cJSON *c = n->child; c; c = c->next) {
        if (has_big_integer(c))
            return 1;
    }
    return 0;
}

static cJSON *copy_exact(const cJSON *n)
{
    if (big_integer(n)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.0f", n->valuedouble);
        return cJSON_CreateRaw(buf);
    }
    if (!cJSON_IsArray(n) && !cJSON_IsObject(n))
        return cJSON_Duplicate(n, 0);
    cJSON *copy = cJSON_IsArray(n) ? cJSON_CreateArray() : cJSON_CreateObject();
    for (const cJSON *c = n->child; copy && c; c = c->next) {
        cJSON *item = copy_exact(c);
        if (item == NULL) {
            cJSON_Delete(copy);
            return NULL;
        }
        if (cJSON_IsArray(n))
            cJSON_AddItemToArray(copy, item);
        else
            cJSON_AddItemToObject(copy, c->string, item);
    }
    return copy;
}

int provider_record_text(provider_text_t *t, const cJSON *record, const char **text, size_t *len,
                         char *err, size_t errlen)
{
    cJSON *exact = NULL;
    const cJSON *print = record;
    if (has_big_integer(record)) {
        if ((exact = copy_exact(record)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        print = exact;
    }
    for (;;) {
        if (t->cap > PROVIDER_TEXT_SLACK &&
            cJSON_PrintPreallocated((cJSON *)print, t->buf, (int)(t->cap - PROVIDER_TEXT_SLACK),
                                    0)) {
            break;
        }
        size_t cap = t->cap != 0 ? 2 * t->cap : PROVIDER_TEXT_FIRST;
        char *buf = cap <= PROVIDER_RECORD_TEXT_MAX ? realloc(t->buf, cap) : NULL;
        if (buf == NULL) {
            cJSON_Delete(exact);
            snprintf(err, errlen, "a record's text takes more than %u bytes, or out of memory",
                     PROVIDER_RECORD_TEXT_MAX);
            return -1;
        }
        t->buf = buf;
        t->cap = cap;
    }
    cJSON_Delete(exact);
    *text = t->buf;
    *len = strlen(t->buf);
    return 0;
}

void provider_text_free(provider_text_t *t)
{
    free(t->buf);
    t->buf = NULL;
    t->cap = 0;
}
