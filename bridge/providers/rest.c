/*
 * rest: any "list sessions" API by configuration (CONTRACT §4.1).
 *
 * A source names the request (base_url + path, a query, headers, one of
 * five auth schemes), where a page keeps its records and where a record
 * keeps its id and status (dotted paths, read by the page scanner in the
 * one pass every built-in adapter uses), and how pages follow each other:
 * a cursor or a next URL read from the body, an offset or a page number
 * we count, an RFC 8288 Link header, or no paging at all. There is no
 * default status map for a platform we know nothing about, so status_map
 * is required.
 *
 * path may also be a list: several lists polled in turn as one snapshot
 * (Century keeps in-progress and completed sessions apart); each list
 * pages on its own, from its first page.
 *
 * Next URLs (next_url, link_header) are resolved against the URL just
 * fetched and followed only on base_url's origin (provider_follow_url):
 * the credentials go with every request. The query and the size parameter
 * are what we send on the requests we build; a followed URL is sent as
 * the provider wrote it, plus the auth query parameter when auth.type is
 * query and the URL lacks it.
 *
 * Secrets (auth.value, auth.token, auth.password, and the header value
 * built from them) live in the request's headers or its query only: never
 * in a message, a log line or the request label (the path). Retries,
 * Retry-After, page and body bounds are the engine's, as for every adapter.
 */
#include "config.h"
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>

/* No platform default: 100 is the commonest API default; 1000 records of
 * a rich shape stay far below HTTP_DEFAULT_MAX_BODY. */
#define REST_DEFAULT_PAGE_SIZE 100
#define REST_MAX_PAGE_SIZE 1000
/* Lists one source polls in turn (path as a list). */
#define REST_MAX_PATHS 8
/* Configured query parameters; a query string of that many fits a URL. */
#define REST_MAX_QUERY 32
/* Configured names (query parameters, header names) and values: a URL
 * must still fit PROVIDER_URL_MAX once they are percent-encoded. */
#define REST_NAME_MAX 64
#define REST_VALUE_MAX 512
#define REST_PATH_MAX 1024
/* A cursor read from a page goes back into the URL, encoded up to three
 * times its size; longer than this is not a cursor. */
#define REST_CURSOR_MAX 2048
/* Largest page number or start we count to. */
#define REST_MAX_START 1000000

typedef enum rest_paging {
    REST_PAGE_NONE = 0,
    REST_PAGE_CURSOR,
    REST_PAGE_OFFSET,
    REST_PAGE_NUMBER,
    REST_PAGE_NEXT_URL,
    REST_PAGE_LINK,
} rest_paging_t;

static const struct {
    const char *name;
    rest_paging_t type;
    /* Keys of pagination besides type; which are required. */
    const char *const keys[4];
    bool need_param, need_next, need_size;
} pagings[] = {
    {"none", REST_PAGE_NONE, {"size_param"}, false, false, false},
    {"cursor", REST_PAGE_CURSOR, {"param", "next", "size_param"}, true, true, false},
    {"offset", REST_PAGE_OFFSET, {"param", "size_param"}, true, false, true},
    {"page", REST_PAGE_NUMBER, {"param", "size_param", "start"}, true, false, true},
    {"next_url", REST_PAGE_NEXT_URL, {"next", "size_param"}, false, true, false},
    {"link_header", REST_PAGE_LINK, {"size_param"}, false, false, false},
};
#define NPAGINGS (sizeof(pagings) / sizeof(pagings[0]))

typedef enum rest_auth {
    REST_AUTH_NONE = 0,
    REST_AUTH_HEADER, /* header: value, bearer and basic too, once built */
    REST_AUTH_QUERY,
} rest_auth_t;

static const char *const rest_keys[] = {"path", "query",  "headers",    "records",
                                        "id",   "status", "pagination", NULL};

/* No defaults: status_map says it all. */
static const provider_status_t rest_statuses[] = {{NULL, DIFF_STATE_NONE}};

typedef struct rest_pair {
    char *name;
    char *value;
} rest_pair_t;

typedef struct rest_conf {
    char *paths[REST_MAX_PATHS];
    size_t npaths;
    rest_pair_t query[REST_MAX_QUERY];
    size_t nquery;
    rest_pair_t headers[HTTP_MAX_REQUEST_HEADERS];
    size_t nheaders;
    rest_auth_t auth;
    rest_pair_t auth_pair; /* the header or query parameter; value: secret */
    rest_paging_t paging;
    char *param;      /* cursor, offset or page parameter */
    char *size_param; /* NULL: page_size is not sent */
    long long start;  /* first page number */
    /* The configured paths, for messages. */
    char *records, *id, *status;
    page_scan_spec_t *scan; /* fields[0]: pagination.next */
} rest_conf_t;

/* ---- configuration ---- */

static void free_secret(char *s)
{
    if (s) {
        /* Not a guarantee against the optimiser, but the usual courtesy. */
        memset(s, 0, strlen(s));
        free(s);
    }
}

static void rest_free_config(void *p)
{
    rest_conf_t *c = p;
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->npaths; i++)
        free(c->paths[i]);
    for (size_t i = 0; i < c->nquery; i++) {
        free(c->query[i].name);
        free(c->query[i].value);
    }
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].name);
        /* A configured header may hold a key too. */
        free_secret(c->headers[i].value);
    }
    free(c->auth_pair.name);
    free_secret(c->auth_pair.value);
    free(c->param);
    free(c->size_param);
    free(c->records);
    free(c->id);
    free(c->status);
    page_scan_spec_free(c->scan);
    free(c);
}

static char *dup_or_oom(const char *s, const char *path, sink_errors_t *errs)
{
    char *d = strdup(s);
    if (d == NULL)
        sink_errors_add(errs, path, "out of memory");
    return d;
}

/* RFC 3986 pchar and '/': what a configured path may hold as it is. */
static int path_ok(const char *s)
{
    if (s[0] != '/' || strlen(s) > REST_PATH_MAX)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int alnum =
            (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
        if (!alnum && strchr("-._~!$&'()*+,;=:@/%", *p) == NULL)
            return 0;
    }
    return 1;
}

static void configure_path(rest_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], epath[SINK_PATH_MAX];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, "path");
    const char *what = "expected \"/...\" (RFC 3986 path characters, no query: that is \"query\"), "
                       "at most 1024 bytes, or a list of 1 to 8 of them";
    sink_conf_path(sub, sizeof(sub), path, "path");
    if (v == NULL) {
        sink_errors_add(errs, sub, "required, %s", what);
        return;
    }
    const cJSON *one = cJSON_IsArray(v) ? v->child : v;
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (n < 1 || n > REST_MAX_PATHS) {
        sink_errors_add(errs, sub, "%s", what);
        return;
    }
    for (size_t i = 0; one; one = cJSON_IsArray(v) ? one->next : NULL, i++) {
        if (cJSON_IsArray(v))
            sink_conf_path_index(epath, sizeof(epath), sub, i);
        else
            snprintf(epath, sizeof(epath), "%s", sub);
        if (!cJSON_IsString(one) || !path_ok(one->valuestring)) {
            sink_errors_add(errs, epath, "%s", what);
            continue;
        }
        if ((c->paths[c->npaths] = dup_or_oom(one->valuestring, epath, errs)) != NULL)
            c->npaths++;
    }
}

/* A query parameter or header name: a name of 1..REST_NAME_MAX bytes that
 * is a token (headers) or has no control character (query). */
static int name_ok(const char *s, bool header)
{
    size_t n = strlen(s);
    return n > 0 && n <= REST_NAME_MAX && (header ? provider_is_token(s) : !sink_has_control(s));
}

static void configure_query(rest_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(src, "query");
    if (q == NULL)
        return;
    sink_conf_path(sub, sizeof(sub), path, "query");
    if (!cJSON_IsObject(q) || cJSON_GetArraySize(q) > REST_MAX_QUERY) {
        sink_errors_add(errs, sub, "expected an object of at most %d parameter -> value",
                        REST_MAX_QUERY);
        return;
    }
    for (const cJSON *e = q->child; e; e = e->next) {
        char buf[REST_VALUE_MAX + 1];
        sink_conf_path(vpath, sizeof(vpath), sub, e->string);
        if (!name_ok(e->string, false)) {
            sink_errors_add(errs, vpath,
                            "parameter names are 1..%d bytes without control characters",
                            REST_NAME_MAX);
            continue;
        }
        if (provider_value_text(e, REST_VALUE_MAX, buf, sizeof(buf)) != 0) {
            sink_errors_add(errs, vpath,
                            "expected a non-empty string (at most %d bytes, no control "
                            "characters), a number or a boolean",
                            REST_VALUE_MAX);
            continue;
        }
        rest_pair_t *p = &c->query[c->nquery];
        p->name = dup_or_oom(e->string, vpath, errs);
        p->value = dup_or_oom(buf, vpath, errs);
        c->nquery++;
    }
}

/* 1 when the header name is taken already (by auth or another header). */
static int header_taken(const rest_conf_t *c, const char *name)
{
    if (c->auth == REST_AUTH_HEADER && c->auth_pair.name &&
        strcasecmp(c->auth_pair.name, name) == 0)
        return 1;
    for (size_t i = 0; i < c->nheaders; i++) {
        if (strcasecmp(c->headers[i].name, name) == 0)
            return 1;
    }
    return 0;
}

static void configure_headers(rest_conf_t *c, const cJSON *src, const char *path,
                              sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(src, "headers");
    size_t room = HTTP_MAX_REQUEST_HEADERS - (c->auth == REST_AUTH_HEADER ? 1 : 0);
    if (h == NULL)
        return;
    sink_conf_path(sub, sizeof(sub), path, "headers");
    if (!cJSON_IsObject(h) || (size_t)cJSON_GetArraySize(h) > room) {
        sink_errors_add(errs, sub, "expected an object of at most %zu header name -> value", room);
        return;
    }
    for (const cJSON *e = h->child; e; e = e->next) {
        const char *value = NULL;
        sink_conf_path(vpath, sizeof(vpath), sub, e->string);
        if (!name_ok(e->string, true)) {
            sink_errors_add(errs, vpath,
                            "expected an HTTP header name (RFC 7230 token: letters, digits and "
                            "!#$%%&'*+-.^_`|~), at most %d bytes",
                            REST_NAME_MAX);
            continue;
        }
        if (header_taken(c, e->string)) {
            sink_errors_add(errs, vpath, "header given twice (auth sets it, or another key)");
            continue;
        }
        /* A header may carry a key: the messages describe it, never quote it. */
        if (sink_conf_request_string(h, sub, e->string, true, NULL, &value, errs) != 0 ||
            value == NULL)
            continue;
        if (strlen(e->string) + 2 + strlen(value) >= HTTP_HEADER_MAX) {
            sink_errors_add(errs, vpath, "\"Name: value\" must fit %d bytes", HTTP_HEADER_MAX - 1);
            continue;
        }
        rest_pair_t *p = &c->headers[c->nheaders];
        p->name = dup_or_oom(e->string, vpath, errs);
        p->value = dup_or_oom(value, vpath, errs);
        c->nheaders++;
    }
}

/* "Basic " + base64("user:password") (RFC 7617), or NULL on ENOMEM. */
static char *basic_value(const char *user, const char *password)
{
    size_t n = strlen(user) + 1 + strlen(password);
    unsigned char *plain = malloc(n + 1);
    char *out = malloc(6 + 4 * ((n + 2) / 3) + 1);
    if (plain == NULL || out == NULL) {
        free(plain);
        free(out);
        return NULL;
    }
    snprintf((char *)plain, n + 1, "%s:%s", user, password);
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, plain, (int)n);
    memset(plain, 0, n);
    free(plain);
    return out;
}

static void configure_auth(rest_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    static const char *const header_keys[] = {"type", "header", "value", NULL};
    static const char *const bearer_keys[] = {"type", "token", NULL};
    static const char *const basic_keys[] = {"type", "username", "password", NULL};
    static const char *const query_keys[] = {"type", "param", "value", NULL};
    static const char *const none_keys[] = {"type", NULL};
    char sub[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(src, "auth");
    const char *type = NULL, *a = NULL, *b = NULL;
    /* The value goes into one "Name: value" line. */
    const size_t secret_max = HTTP_HEADER_MAX - 1 - 2 - REST_NAME_MAX - 7;

    sink_conf_path(sub, sizeof(sub), path, "auth");
    if (!cJSON_IsObject(auth)) {
        sink_errors_add(errs, sub,
                        "required, expected an object with type (header, bearer, basic, query "
                        "or none)");
        return;
    }
    if (sink_conf_string(auth, sub, "type", true, NULL, &type, errs) != 0 || type == NULL)
        return;
    const char *const *keys = strcmp(type, "header") == 0   ? header_keys
                              : strcmp(type, "bearer") == 0 ? bearer_keys
                              : strcmp(type, "basic") == 0  ? basic_keys
                              : strcmp(type, "query") == 0  ? query_keys
                              : strcmp(type, "none") == 0   ? none_keys
                                                            : NULL;
    if (keys == NULL) {
        sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, "type"),
                        "expected one of header, bearer, basic, query, none");
        return;
    }
    sink_conf_check_keys(auth, sub, keys, errs);
    if (keys == none_keys)
        return;
    size_t before = errs->count;
    /* a: the header or parameter name, or basic's user name (it is sent,
     * so no control character); b: the secret, never quoted. */
    if (keys == basic_keys)
        sink_conf_request_string(auth, sub, "username", true, NULL, &a, errs);
    else if (keys != bearer_keys)
        sink_conf_string(auth, sub, keys[1], true, NULL, &a, errs);
    const char *secret_key = keys == bearer_keys ? keys[1] : keys[2];
    sink_conf_request_string(auth, sub, secret_key, true, NULL, &b, errs);
    if (errs->count != before || b == NULL)
        return;
    sink_conf_path(vpath, sizeof(vpath), sub, secret_key);
    if (strlen(b) > (keys == query_keys ? (size_t)REST_VALUE_MAX : secret_max)) {
        sink_errors_add(errs, vpath, "longer than %zu bytes",
                        keys == query_keys ? (size_t)REST_VALUE_MAX : secret_max);
        return;
    }
    if (keys == header_keys || keys == query_keys) {
        sink_conf_path(vpath, sizeof(vpath), sub, keys[1]);
        if (!name_ok(a, keys == header_keys)) {
            sink_errors_add(errs, vpath,
                            keys == header_keys
                                ? "expected an HTTP header name (RFC 7230 token), at most %d bytes"
                                : "expected a parameter name without control characters, at "
                                  "most %d bytes",
                            REST_NAME_MAX);
            return;
        }
        c->auth = keys == header_keys ? REST_AUTH_HEADER : REST_AUTH_QUERY;
        c->auth_pair.name = dup_or_oom(a, vpath, errs);
        c->auth_pair.value = dup_or_oom(b, vpath, errs);
        return;
    }
    c->auth = REST_AUTH_HEADER;
    c->auth_pair.name = dup_or_oom("Authorization", sub, errs);
    if (keys == bearer_keys) {
        size_t n = strlen(b) + 8;
        if ((c->auth_pair.value = malloc(n)) != NULL)
            snprintf(c->auth_pair.value, n, "Bearer %s", b);
    } else {
        /* RFC 7617: the user-id cannot hold a colon. */
        if (strchr(a, ':') || strlen(a) + strlen(b) > secret_max * 3 / 4 - 1) {
            sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, "username"),
                            "expected no ':' and, with the password, at most %zu bytes",
                            secret_max * 3 / 4 - 1);
            return;
        }
        c->auth_pair.value = basic_value(a, b);
    }
    if (c->auth_pair.value == NULL)
        sink_errors_add(errs, sub, "out of memory");
}

/* A dotted path at key of obj (path is obj's): required, checked as the
 * scanner takes it; "" only where empty_ok. Returns a copy or NULL. */
static char *configure_scan_path(const cJSON *obj, const char *path, const char *key, bool empty_ok,
                                 sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], err[256];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    sink_conf_path(sub, sizeof(sub), path, key);
    if (!cJSON_IsString(v) || (!empty_ok && v->valuestring[0] == '\0')) {
        sink_errors_add(errs, sub, "%sexpected a dotted path (\"a.b.c\")%s", v ? "" : "required, ",
                        empty_ok ? ", or \"\" for a body that is the array itself" : "");
        return NULL;
    }
    if (v->valuestring[0] != '\0' && page_scan_path_check(v->valuestring, err, sizeof(err)) != 0) {
        sink_errors_add(errs, sub, "%s", err);
        return NULL;
    }
    return dup_or_oom(v->valuestring, sub, errs);
}

static char *configure_param(const cJSON *pg, const char *sub, const char *key, bool required,
                             sink_errors_t *errs)
{
    char vpath[SINK_PATH_MAX];
    const char *v = NULL;
    if (sink_conf_string(pg, sub, key, required, NULL, &v, errs) != 0 || v == NULL)
        return NULL;
    if (!name_ok(v, false)) {
        sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, key),
                        "expected a parameter name without control characters, at most %d bytes",
                        REST_NAME_MAX);
        return NULL;
    }
    return dup_or_oom(v, sub, errs);
}

/* Returns pagination.next, a copy, or NULL. */
static char *configure_pagination(rest_conf_t *c, const cJSON *src, const char *path,
                                  sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    const cJSON *pg = cJSON_GetObjectItemCaseSensitive(src, "pagination");
    const char *type = NULL;
    char *next = NULL;
    sink_conf_path(sub, sizeof(sub), path, "pagination");
    if (!cJSON_IsObject(pg)) {
        sink_errors_add(errs, sub,
                        "required, expected an object with type (cursor, offset, page, next_url, "
                        "link_header or none)");
        return NULL;
    }
    if (sink_conf_string(pg, sub, "type", true, NULL, &type, errs) != 0 || type == NULL)
        return NULL;
    size_t k = 0;
    while (k < NPAGINGS && strcmp(pagings[k].name, type) != 0)
        k++;
    if (k == NPAGINGS) {
        sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, "type"),
                        "expected one of cursor, offset, page, next_url, link_header, none");
        return NULL;
    }
    const char *allowed[6] = {"type"};
    for (size_t i = 0; i < 4 && pagings[k].keys[i]; i++)
        allowed[1 + i] = pagings[k].keys[i];
    sink_conf_check_keys(pg, sub, allowed, errs);
    c->paging = pagings[k].type;
    if (pagings[k].need_param)
        c->param = configure_param(pg, sub, "param", true, errs);
    /* offset and page end on a short page: only sound when the server was
     * told the size we count with. */
    c->size_param = configure_param(pg, sub, "size_param", pagings[k].need_size, errs);
    if (c->param && c->size_param && strcmp(c->param, c->size_param) == 0)
        sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, "size_param"),
                        "must differ from param");
    if (pagings[k].need_next) {
        next = configure_scan_path(pg, sub, "next", false, errs);
        if (next && c->records && c->records[0] == '\0')
            sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, "next"),
                            "records is \"\" (the body is the array): there is no body field to "
                            "read the next page from");
    }
    long long start = 1;
    if (c->paging == REST_PAGE_NUMBER &&
        sink_conf_int(pg, sub, "start", false, 1, 0, REST_MAX_START, &start, errs) == 0)
        c->start = start;
    return next;
}

/* A parameter we send must not be one the query or auth also sends. */
static void check_param_clash(const rest_conf_t *c, const char *path, sink_errors_t *errs)
{
    const char *ours[] = {c->param, c->size_param,
                          c->auth == REST_AUTH_QUERY ? c->auth_pair.name : NULL};
    char sub[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    sink_conf_path(sub, sizeof(sub), path, "query");
    for (size_t i = 0; i < c->nquery; i++) {
        for (size_t j = 0; j < sizeof(ours) / sizeof(ours[0]); j++) {
            if (ours[j] && c->query[i].name && strcmp(ours[j], c->query[i].name) == 0) {
                sink_errors_add(errs, sink_conf_path(vpath, sizeof(vpath), sub, c->query[i].name),
                                "pagination or auth sends this parameter already");
            }
        }
    }
}

static void *rest_configure(const cJSON *src, const char *path, sink_errors_t *errs)
{
    rest_conf_t *c = calloc(1, sizeof(*c));
    size_t before = errs->count;
    char sub[SINK_PATH_MAX];

    if (c == NULL) {
        sink_errors_add(errs, path, "out of memory");
        return NULL;
    }
    if (cJSON_GetObjectItemCaseSensitive(src, "filters"))
        sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "filters"),
                        "the rest provider sends its parameters from \"query\"");
    const cJSON *smap = cJSON_GetObjectItemCaseSensitive(src, "status_map");
    if (!cJSON_IsObject(smap) || smap->child == NULL)
        sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "status_map"),
                        "required by the rest provider (no platform default), expected an "
                        "object of raw status -> pending|active|completed|cancelled");
    configure_path(c, src, path, errs);
    configure_auth(c, src, path, errs);
    configure_query(c, src, path, errs);
    configure_headers(c, src, path, errs);
    c->records = configure_scan_path(src, path, "records", true, errs);
    c->id = configure_scan_path(src, path, "id", false, errs);
    c->status = configure_scan_path(src, path, "status", false, errs);
    if (c->id && c->status && strcmp(c->id, c->status) == 0)
        sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "status"),
                        "must differ from id");
    char *next = configure_pagination(c, src, path, errs);
    check_param_clash(c, path, errs);
    if (errs->count == before)
        c->scan = provider_scan_spec(
            &(page_scan_paths_t){
                .records = c->records, .id = c->id, .status = c->status, .fields = {next}},
            path, errs);
    free(next);
    if (errs->count != before) {
        rest_free_config(c);
        return NULL;
    }
    return c;
}

/* ---- one poll ---- */

typedef struct rest_poll {
    const conf_source_t *src;
    const rest_conf_t *conf;
    size_t path; /* the list being paged */
    int pages;   /* requests made, all lists */
    int done;
    long long offset, page;
    char cursor[REST_CURSOR_MAX + 1]; /* "" on a list's first page */
    int have_next;                    /* url holds the next request */
    char url[PROVIDER_URL_MAX];
    char fetched[PROVIDER_URL_MAX]; /* the last request made */
} rest_poll_t;

static void list_begin(rest_poll_t *p)
{
    p->offset = 0;
    p->page = p->conf->start;
    p->cursor[0] = '\0';
    p->have_next = 0;
}

static void *rest_poll_begin(const conf_source_t *src, int64_t now_s)
{
    rest_poll_t *p = calloc(1, sizeof(*p));
    (void)now_s;
    if (p == NULL)
        return NULL;
    p->src = src;
    p->conf = src->pconf;
    list_begin(p);
    return p;
}

static void rest_poll_free(void *poll)
{
    rest_poll_t *p = poll;
    if (p == NULL)
        return;
    /* The URLs may hold the auth query parameter. */
    memset(p->url, 0, sizeof(p->url));
    memset(p->fetched, 0, sizeof(p->fetched));
    free(p);
}

/* The request we build: a list's path, its query and where paging is. */
static int build_url(const rest_poll_t *p, char *url, size_t n)
{
    const rest_conf_t *c = p->conf;
    char num[32];
    int w = snprintf(url, n, "%s%s", p->src->base_url, c->paths[p->path]);
    if (w < 0 || (size_t)w >= n)
        return -1;
    for (size_t i = 0; i < c->nquery; i++) {
        if (provider_url_add(url, n, c->query[i].name, c->query[i].value) != 0)
            return -1;
    }
    snprintf(num, sizeof(num), "%d", p->src->page_size);
    if (c->size_param && provider_url_add(url, n, c->size_param, num) != 0)
        return -1;
    switch (c->paging) {
    case REST_PAGE_CURSOR:
        if (p->cursor[0] && provider_url_add(url, n, c->param, p->cursor) != 0)
            return -1;
        break;
    case REST_PAGE_OFFSET:
    case REST_PAGE_NUMBER:
        snprintf(num, sizeof(num), "%lld", c->paging == REST_PAGE_OFFSET ? p->offset : p->page);
        if (provider_url_add(url, n, c->param, num) != 0)
            return -1;
        break;
    default:
        break;
    }
    return 0;
}

/* 1 when the query of url sets the parameter name (as we encode it). */
static int url_has_param(const char *url, const char *name)
{
    char *enc = curl_easy_escape(NULL, name, 0);
    int found = 0;
    if (enc == NULL)
        return 0;
    size_t len = strlen(enc);
    for (const char *s = strchr(url, '?'); s && *s && !found; s = strchr(s, '&')) {
        s++;
        found = strncmp(s, enc, len) == 0 && (s[len] == '=' || s[len] == '&' || s[len] == '\0');
    }
    curl_free(enc);
    return found;
}

static int rest_next_request(void *poll, provider_request_t *req, char *err, size_t errlen)
{
    rest_poll_t *p = poll;
    const rest_conf_t *c = p->conf;

    if (p->done)
        return 0;
    if (p->pages >= PROVIDER_MAX_PAGES) {
        snprintf(err, errlen, "more than %d pages in one poll", PROVIDER_MAX_PAGES);
        return -1;
    }
    memset(req, 0, sizeof(*req));
    snprintf(req->label, sizeof(req->label), "%s", c->paths[p->path]);
    if (p->have_next)
        memcpy(req->url, p->url, sizeof(req->url));
    else if (build_url(p, req->url, sizeof(req->url)) != 0)
        goto toolong;
    if (c->auth == REST_AUTH_QUERY && !url_has_param(req->url, c->auth_pair.name) &&
        provider_url_add(req->url, sizeof(req->url), c->auth_pair.name, c->auth_pair.value) != 0)
        goto toolong;
    for (size_t i = 0; i < c->nheaders; i++) {
        if (provider_add_header(req, c->headers[i].name, c->headers[i].value) != 0)
            goto badheader;
    }
    if (c->auth == REST_AUTH_HEADER &&
        provider_add_header(req, c->auth_pair.name, c->auth_pair.value) != 0)
        goto badheader;
    memcpy(p->fetched, req->url, sizeof(p->fetched));
    p->have_next = 0;
    p->pages++;
    return 1;
toolong:
    snprintf(err, errlen, "request URL longer than %d bytes", PROVIDER_URL_MAX);
    return -1;
badheader:
    snprintf(err, errlen, "request header too long or holding a control character");
    return -1;
}

typedef struct rest_emit {
    provider_emit_t e;
    const rest_conf_t *conf;
} rest_emit_t;

static int rest_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    const rest_emit_t *r = opaque;
    char id[DIFF_ID_MAX + 1];
    if (rec->kind != PAGE_SCAN_OBJECT) {
        snprintf(err, errlen, "record %zu is not an object", rec->index);
        return -1;
    }
    if (page_scan_id_text(&rec->id, id, sizeof(id)) != 0) {
        snprintf(err, errlen,
                 "record %zu lacks an id at \"%s\" (a non-empty string of at most %d bytes, or "
                 "an integer)",
                 rec->index, r->conf->id, DIFF_ID_MAX);
        return -1;
    }
    /* A numeric status is its text as sent ("3"), as status_map names it. */
    if ((rec->status.kind != PAGE_SCAN_STRING && rec->status.kind != PAGE_SCAN_NUMBER) ||
        rec->status.too_long) {
        snprintf(err, errlen,
                 "record %zu lacks a status at \"%s\" (a string of at most %d bytes, or a "
                 "number)",
                 rec->index, r->conf->status, DIFF_STATUS_MAX);
        return -1;
    }
    return r->e.fn(r->e.opaque, id, strlen(id), rec->status.text, rec->status.len, rec->span,
                   rec->len, err, errlen);
}

/* The current list is over: the next one, or the poll's end. */
static void list_end(rest_poll_t *p)
{
    if (++p->path >= p->conf->npaths)
        p->done = 1;
    else
        list_begin(p);
}

/* Where the page's Link headers point next: 1 with p->url set, 0, -1. */
static int link_next(rest_poll_t *p, const http_response_t *resp, char *err, size_t errlen)
{
    char target[PROVIDER_URL_MAX];
    /* A response may carry several Link fields (RFC 8288 §3). */
    for (size_t i = 0; i < resp->nheaders; i++) {
        if (strcasecmp(resp->headers[i].name, "Link") != 0)
            continue;
        /* Missing the next page would end the poll early: every session
         * past it would look vanished. */
        if (resp->headers[i].too_long) {
            snprintf(err, errlen, "Link header longer than %d bytes", HTTP_HEADER_MAX - 1);
            return -1;
        }
        int r = provider_link_next(resp->headers[i].value, target, sizeof(target));
        if (r < 0) {
            snprintf(err, errlen, "Link header's next target longer than %d bytes",
                     PROVIDER_URL_MAX - 1);
            return -1;
        }
        if (r == 1)
            return provider_follow_url(p->src->base_url, p->fetched, target, p->url, sizeof(p->url),
                                       err, errlen) == 0
                       ? 1
                       : -1;
    }
    return 0;
}

/* Paging from the body's next field (cursor, next_url): 1 with the next
 * page set, 0 at the list's end, -1. */
static int body_next(rest_poll_t *p, const page_scan_value_t *next, char *err, size_t errlen)
{
    const char *path = "pagination.next";
    if (next->kind == PAGE_SCAN_ABSENT || next->kind == PAGE_SCAN_NULL ||
        (next->kind == PAGE_SCAN_STRING && next->len == 0))
        return 0;
    if (p->conf->paging == REST_PAGE_NEXT_URL) {
        if (next->kind != PAGE_SCAN_STRING || next->too_long) {
            snprintf(err, errlen, "page's %s is not a URL of at most %d bytes, nor null", path,
                     PROVIDER_URL_MAX - 1);
            return -1;
        }
        return provider_follow_url(p->src->base_url, p->fetched, next->text, p->url, sizeof(p->url),
                                   err, errlen) == 0
                   ? 1
                   : -1;
    }
    if ((next->kind != PAGE_SCAN_STRING && next->kind != PAGE_SCAN_NUMBER) || next->too_long ||
        next->len > REST_CURSOR_MAX) {
        snprintf(err, errlen,
                 "page's %s is not a cursor (a string of at most %d bytes, or a "
                 "number), nor null",
                 path, REST_CURSOR_MAX);
        return -1;
    }
    if (strcmp(p->cursor, next->text) == 0) {
        snprintf(err, errlen, "page's cursor repeats the one just sent (a paging loop)");
        return -1;
    }
    memcpy(p->cursor, next->text, next->len + 1);
    return 1;
}

/*
 * Records reach fn as the scan meets them, before the next field is read
 * (it may follow them): a page that fails after that fails the poll, and
 * the engine drops the cycle with all it observed.
 */
static int rest_handle_page(void *poll, const http_response_t *resp, provider_record_fn fn,
                            void *opaque, char *err, size_t errlen)
{
    rest_poll_t *p = poll;
    const rest_conf_t *c = p->conf;
    char next[PROVIDER_URL_MAX];
    page_scan_result_t res = {.fields[0] = {.text = next, .cap = sizeof(next)}};
    rest_emit_t r = {{fn, opaque}, c};
    page_scan_rc_t rc =
        page_scan(c->scan, resp->body, resp->len, rest_record, &r, &res, err, errlen);
    if (rc != PAGE_SCAN_OK)
        return -1;
    int more = 0;
    switch (c->paging) {
    case REST_PAGE_CURSOR:
    case REST_PAGE_NEXT_URL:
        more = body_next(p, &res.fields[0], err, errlen);
        break;
    case REST_PAGE_LINK:
        more = link_next(p, resp, err, errlen);
        break;
    case REST_PAGE_OFFSET:
        p->offset += (long long)res.records;
        more = res.records >= (size_t)p->src->page_size;
        break;
    case REST_PAGE_NUMBER:
        p->page++;
        more = res.records >= (size_t)p->src->page_size;
        break;
    case REST_PAGE_NONE:
        break;
    }
    if (more < 0)
        return -1;
    if (more && (c->paging == REST_PAGE_NEXT_URL || c->paging == REST_PAGE_LINK)) {
        if (strcmp(p->url, p->fetched) == 0) {
            snprintf(err, errlen, "next URL repeats the URL just fetched (a paging loop)");
            return -1;
        }
        p->have_next = 1;
    }
    if (!more)
        list_end(p);
    return 0;
}

const provider_ops_t provider_rest = {
    .name = "rest",
    .statuses = rest_statuses,
    .keys = rest_keys,
    .default_page_size = REST_DEFAULT_PAGE_SIZE,
    .max_page_size = REST_MAX_PAGE_SIZE,
    .configure = rest_configure,
    .free_config = rest_free_config,
    .poll_begin = rest_poll_begin,
    .next_request = rest_next_request,
    .handle_page = rest_handle_page,
    .poll_free = rest_poll_free,
};
