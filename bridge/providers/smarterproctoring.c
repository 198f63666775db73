/*
 * smarterproctoring: the SmarterProctoring adapter (seed 004).
 *
 * One list per source, GET
 * /v1/installs/{install_sid}/enrollments/{enrollment_sid}/exams/{exam_sid}/sessions,
 * paged by offset and limit. The first request is built here (offset=0);
 * every later one is the page's "next" link as the provider wrote it, until
 * next is null, absent or "". Following a provider's link is what the seed
 * asks for, and it is also where the token could leak: the link is resolved
 * against base_url (absolute, "/path", "?query" or a relative path) and
 * refused unless its scheme, host and port are base_url's, because the
 * token header goes to whatever URL we request.
 *
 * includeActive=true is always sent: without it the seed's default (false)
 * leaves active sessions out, and they would look vanished. A next link
 * that dropped the parameter gets it appended; one that sets it to anything
 * but true fails the poll.
 */
#include "config.h"
#include "net.h"
#include "provider.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

/* The seed gives no maximum for limit (only x >= 0); 1000 records of the
 * seed's shape stay far below HTTP_DEFAULT_MAX_BODY. */
#define SP_MAX_LIMIT 1000
#define SP_DEFAULT_LIMIT 100
/* "token: <value>" must fit one request header line. */
#define SP_TOKEN_MAX (HTTP_HEADER_MAX - 16)
/* The seed's SIDs: a two-letter prefix and 32 lowercase hex digits. */
#define SP_SID_HEX 32
#define SP_HOST_MAX 256

static const char *const sp_keys[] = {"install_sid", "enrollment_sid", "exam_sid", NULL};
static const char *const auth_keys[] = {"token", NULL};
static const char *const filter_keys[] = {"status", "sortKeys", "sortOrder", NULL};
/* The seed's enums, verbatim. */
static const char *const status_enum[] = {
    "Needs Proctor", "Pending Approval", "Approval Denied", "Scheduled",
    "Incident",      "Closed",           "Processing",      NULL};
static const char *const sort_key_enum[] = {"createdDate", NULL};
static const char *const sort_order_enum[] = {"ASC", "DESC", NULL};

static const struct {
    const char *key;
    const char *prefix;
} sids[] = {{"install_sid", "AI"}, {"enrollment_sid", "EN"}, {"exam_sid", "EX"}};
#define NSIDS (sizeof(sids) / sizeof(sids[0]))

/* CONTRACT §5. "Active" and "In Progress" are not in the seed's status
 * enum: they are what includeActive adds. */
static const provider_status_t sp_statuses[] = {
    {"Needs Proctor", DIFF_STATE_PENDING},     {"Pending Approval", DIFF_STATE_PENDING},
    {"Scheduled", DIFF_STATE_PENDING},         {"Active", DIFF_STATE_ACTIVE},
    {"In Progress", DIFF_STATE_ACTIVE},        {"Incident", DIFF_STATE_ACTIVE},
    {"Processing", DIFF_STATE_COMPLETED},      {"Closed", DIFF_STATE_COMPLETED},
    {"Approval Denied", DIFF_STATE_CANCELLED}, {NULL, DIFF_STATE_NONE},
};

typedef struct sp_conf {
    char sid[NSIDS][2 + SP_SID_HEX + 1];
    char *token;
    const char *statuses[8]; /* point into status_enum */
    size_t nstatuses;
    int sort_created;       /* sortKeys=createdDate */
    const char *sort_order; /* NULL: the provider's default; else points into sort_order_enum */
    page_scan_spec_t *scan; /* the page's paths, split once */
} sp_conf_t;

/* ---- configuration ---- */

static int valid_sid(const char *s, const char *prefix)
{
    if (strncmp(s, prefix, 2) != 0 || strlen(s) != 2 + SP_SID_HEX)
        return 0;
    for (size_t i = 2; i < 2 + SP_SID_HEX; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

/* Index of s in a NULL-terminated table, or -1. */
static int enum_index(const char *const *table, const char *s)
{
    for (int i = 0; table[i]; i++) {
        if (strcmp(table[i], s) == 0)
            return i;
    }
    return -1;
}

static void join_enum(const char *const *table, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; table[i] && len < n; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? ", " : "", table[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

static void sp_free_config(void *p)
{
    sp_conf_t *c = p;
    if (c == NULL)
        return;
    free(c->token);
    page_scan_spec_free(c->scan);
    free(c);
}

/*
 * Validates filters.<key> as an array of 1..max values of table; each valid
 * value is passed to add(). Duplicates are refused: they would only repeat
 * a query parameter.
 */
static void configure_enum_array(const cJSON *filters, const char *fpath, const char *key,
                                 const char *const *table, size_t max, const char **out,
                                 size_t *nout, sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], epath[SINK_PATH_MAX], names[256];
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(filters, key);
    if (arr == NULL)
        return;
    sink_conf_path(sub, sizeof(sub), fpath, key);
    join_enum(table, names, sizeof(names));
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (n < 1 || (size_t)n > max) {
        sink_errors_add(errs, sub, "expected an array of 1 to %zu of: %s", max, names);
        return;
    }
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        sink_conf_path_index(epath, sizeof(epath), sub, i);
        int k = cJSON_IsString(e) ? enum_index(table, e->valuestring) : -1;
        if (k < 0) {
            sink_errors_add(errs, epath, "expected one of: %s", names);
            continue;
        }
        for (size_t j = 0; j < *nout; j++) {
            if (out[j] == table[k]) {
                sink_errors_add(errs, epath, "\"%s\" is listed twice", table[k]);
                k = -1;
                break;
            }
        }
        if (k >= 0)
            out[(*nout)++] = table[k];
    }
}

static void configure_filters(sp_conf_t *c, const cJSON *filters, const char *path,
                              sink_errors_t *errs)
{
    char fpath[SINK_PATH_MAX], sub[SINK_PATH_MAX];
    sink_conf_path(fpath, sizeof(fpath), path, "filters");
    if (!cJSON_IsObject(filters)) {
        sink_errors_add(errs, fpath, "expected an object of status, sortKeys, sortOrder");
        return;
    }
    sink_conf_check_keys(filters, fpath, filter_keys, errs);
    configure_enum_array(filters, fpath, "status", status_enum,
                         sizeof(c->statuses) / sizeof(c->statuses[0]) - 1, c->statuses,
                         &c->nstatuses, errs);
    const char *keys[2];
    size_t nkeys = 0;
    configure_enum_array(filters, fpath, "sortKeys", sort_key_enum, 1, keys, &nkeys, errs);
    c->sort_created = nkeys > 0;

    const cJSON *order = cJSON_GetObjectItemCaseSensitive(filters, "sortOrder");
    if (order) {
        int k = cJSON_IsString(order) ? enum_index(sort_order_enum, order->valuestring) : -1;
        if (k < 0)
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), fpath, "sortOrder"),
                            "expected \"ASC\" or \"DESC\"");
        else
            c->sort_order = sort_order_enum[k];
    }
}

static void *sp_configure(const cJSON *src, const char *path, sink_errors_t *errs)
{
    sp_conf_t *c = calloc(1, sizeof(*c));
    char sub[SINK_PATH_MAX];
    const char *v = NULL;
    size_t before = errs->count;

    if (c == NULL) {
        sink_errors_add(errs, path, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < NSIDS; i++) {
        v = NULL;
        if (sink_conf_string(src, path, sids[i].key, true, NULL, &v, errs) != 0 || v == NULL)
            continue;
        if (!valid_sid(v, sids[i].prefix)) {
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, sids[i].key),
                            "expected a string matching ^%s[a-f0-9]{32}$", sids[i].prefix);
            continue;
        }
        memcpy(c->sid[i], v, sizeof(c->sid[i]));
    }

    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(src, "auth");
    sink_conf_path(sub, sizeof(sub), path, "auth");
    if (!cJSON_IsObject(auth)) {
        sink_errors_add(errs, sub, "required, expected an object with token");
    } else {
        char tpath[SINK_PATH_MAX];
        sink_conf_check_keys(auth, sub, auth_keys, errs);
        v = NULL;
        if (sink_conf_request_string(auth, sub, "token", true, NULL, &v, errs) == 0 && v) {
            /* The message never shows the value: it is the credential. */
            if (strlen(v) > SP_TOKEN_MAX)
                sink_errors_add(errs, sink_conf_path(tpath, sizeof(tpath), sub, "token"),
                                "expected a non-empty string of at most %d bytes without "
                                "control characters",
                                SP_TOKEN_MAX);
            else
                c->token = strdup(v);
        }
    }

    const cJSON *filters = cJSON_GetObjectItemCaseSensitive(src, "filters");
    if (filters)
        configure_filters(c, filters, path, errs);
    c->scan = provider_scan_spec(
        &(page_scan_paths_t){
            .records = "results", .id = "sid", .status = "status", .fields = {"next"}},
        path, errs);
    if (errs->count != before || c->token == NULL) {
        if (errs->count == before)
            sink_errors_add(errs, path, "out of memory");
        sp_free_config(c);
        return NULL;
    }
    return c;
}

/* ---- URLs ---- */

/* scheme://host[:port] of an http(s) URL as libcurl reads it, the port made explicit. */
typedef struct sp_origin {
    char scheme[8];
    char host[SP_HOST_MAX];
    unsigned port;
} sp_origin_t;

/*
 * The origin of the parsed URL u into *o: 0, or -1 when a part is missing
 * or too long. Hosts are compared as text, case aside: no IDNA, no IP
 * normalisation, so "127.1" and "127.0.0.1" are different origins, which
 * errs on the side of refusing.
 */
static int origin_of(CURLU *u, sp_origin_t *o)
{
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -1;

    memset(o, 0, sizeof(*o));
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        strlen(scheme) < sizeof(o->scheme) && strlen(host) < sizeof(o->host) && host[0] != '\0') {
        snprintf(o->scheme, sizeof(o->scheme), "%s", scheme);
        snprintf(o->host, sizeof(o->host), "%s", host);
        o->port = (unsigned)strtoul(port, NULL, 10);
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    return rc;
}

/* RFC 3986 unreserved, reserved and '%': what a link may hold unencoded.
 * Spaces, controls, quotes, '\\', '<>', '{}', '|', '^' and '`' are not. */
static int url_char_ok(unsigned char ch)
{
    return isalnum(ch) || (ch && strchr("-._~:/?#[]@!$&'()*+,;=%", ch) != NULL);
}

/* ---- one poll ---- */

typedef struct sp_poll {
    const conf_source_t *src;
    const sp_conf_t *conf;
    int pages;
    int done;
    int have_next; /* url holds the next request */
    sp_origin_t origin;
    int origin_ok;
    char label[256];
    char url[PROVIDER_URL_MAX];     /* the next request */
    char fetched[PROVIDER_URL_MAX]; /* the last request made */
} sp_poll_t;

static void *sp_poll_begin(const conf_source_t *src, int64_t now_s)
{
    sp_poll_t *p = calloc(1, sizeof(*p));
    (void)now_s;
    if (p == NULL)
        return NULL;
    p->src = src;
    p->conf = src->pconf;
    CURLU *base = NULL;
    p->origin_ok =
        net_url_parse(src->base_url, 0, &base) == NET_URL_OK && origin_of(base, &p->origin) == 0;
    curl_url_cleanup(base);
    snprintf(p->label, sizeof(p->label), "/v1/installs/%s/enrollments/%s/exams/%s/sessions",
             p->conf->sid[0], p->conf->sid[1], p->conf->sid[2]);
    return p;
}

static void sp_poll_free(void *poll)
{
    sp_poll_t *p = poll;
    if (p == NULL)
        return;
    free(p);
}

static int first_url(sp_poll_t *p, char *url, size_t n)
{
    const sp_conf_t *c = p->conf;
    char limit[16];
    int w = snprintf(url, n, "%s%s", p->src->base_url, p->label);
    if (w < 0 || (size_t)w >= n)
        return -1;
    snprintf(limit, sizeof(limit), "%d", p->src->page_size);
    if (provider_url_add(url, n, "offset", "0") != 0 ||
        provider_url_add(url, n, "limit", limit) != 0 ||
        provider_url_add(url, n, "includeActive", "true") != 0)
        return -1;
    for (size_t i = 0; i < c->nstatuses; i++) {
        if (provider_url_add(url, n, "status", c->statuses[i]) != 0)
            return -1;
    }
    if (c->sort_created && provider_url_add(url, n, "sortKeys", "createdDate") != 0)
        return -1;
    if (c->sort_order && provider_url_add(url, n, "sortOrder", c->sort_order) != 0)
        return -1;
    return 0;
}

static int sp_next_request(void *poll, provider_request_t *req, char *err, size_t errlen)
{
    sp_poll_t *p = poll;

    if (p->done)
        return 0;
    if (p->pages >= PROVIDER_MAX_PAGES) {
        snprintf(err, errlen, "more than %d pages in one poll", PROVIDER_MAX_PAGES);
        return -1;
    }
    memset(req, 0, sizeof(*req));
    snprintf(req->label, sizeof(req->label), "%s", p->label);
    if (p->have_next) {
        memcpy(req->url, p->url, sizeof(req->url));
    } else if (first_url(p, req->url, sizeof(req->url)) != 0) {
        snprintf(err, errlen, "request URL longer than %d bytes", PROVIDER_URL_MAX);
        return -1;
    }
    if (provider_add_header(req, "token", p->conf->token) != 0 ||
        provider_add_header(req, "Accept", "application/json") != 0) {
        snprintf(err, errlen, "request header too long or holding a control character");
        return -1;
    }
    memcpy(p->fetched, req->url, sizeof(p->fetched));
    p->have_next = 0;
    p->pages++;
    return 1;
}

/*
 * Resolves the page's next link (a string, its text read into a buffer of
 * PROVIDER_URL_MAX bytes) against the URL just fetched, as libcurl does
 * (RFC 3986), into out; it is followed only on base_url's origin. Returns
 * 0, or -1 with err; err never holds the link's query.
 */
static int resolve_next(const sp_poll_t *p, const page_scan_value_t *link, char *out, size_t n,
                        char *err, size_t errlen)
{
    char buf[PROVIDER_URL_MAX];
    const char *next = link->text;
    size_t len = link->len;
    CURLU *u = NULL;
    char *user = NULL, *password = NULL, *full = NULL;
    CURLUcode uc;
    sp_origin_t o;
    int rc = -1;

    if (link->too_long) {
        snprintf(err, errlen, "next URL longer than %d bytes", PROVIDER_URL_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!url_char_ok((unsigned char)next[i])) {
            snprintf(err, errlen, "next URL has a character not allowed in a URL at byte %zu", i);
            return -1;
        }
    }
    if (!p->origin_ok) {
        snprintf(err, errlen, "base_url has no http(s) origin to resolve next URLs against");
        return -1;
    }
    /* The fragment never reaches the server; dropping it keeps the loop
     * check exact. */
    len = strcspn(next, "#");
    memcpy(buf, next, len);
    buf[len] = '\0';

    uc = (u = curl_url()) == NULL ? CURLUE_OUT_OF_MEMORY
                                  : curl_url_set(u, CURLUPART_URL, p->fetched, CURLU_PATH_AS_IS);
    if (uc == CURLUE_OK)
        uc = curl_url_set(u, CURLUPART_URL, buf, CURLU_PATH_AS_IS);
    if (uc == CURLUE_UNSUPPORTED_SCHEME ||
        (uc == CURLUE_OK && origin_of(u, &o) == 0 && strcmp(o.scheme, "http") != 0 &&
         strcmp(o.scheme, "https") != 0)) {
        snprintf(err, errlen,
                 "next URL's scheme is not %s like base_url's; refusing to send the token there",
                 p->origin.scheme);
        goto out;
    }
    if (uc != CURLUE_OK || origin_of(u, &o) != 0) {
        snprintf(err, errlen, "next URL has no valid host or port");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
        snprintf(err, errlen, "next URL carries user information; refusing to follow it");
        goto out;
    }
    const char *what = strcmp(o.scheme, p->origin.scheme) != 0   ? "scheme"
                       : strcasecmp(o.host, p->origin.host) != 0 ? "host"
                       : o.port != p->origin.port                ? "port"
                                                                 : NULL;
    if (what) {
        snprintf(err, errlen,
                 "next URL's %s differs from base_url's (it points to %s://%s:%u); refusing to "
                 "send the token to another origin",
                 what, o.scheme, o.host, o.port);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK || strlen(full) >= sizeof(buf)) {
        snprintf(err, errlen, "next URL longer than %d bytes once resolved", PROVIDER_URL_MAX - 1);
        goto out;
    }
    snprintf(buf, sizeof(buf), "%s", full);
    rc = 0;
out:
    curl_free(user);
    curl_free(password);
    curl_free(full);
    curl_url_cleanup(u);
    if (rc != 0)
        return -1;
    const char *rest = strstr(buf, "://") + 3;

    /* includeActive: kept true on every page, or active sessions of the
     * later pages would look vanished. */
    const char *q = strchr(rest, '?');
    int seen = 0;
    for (const char *s = q; s && *s;) {
        s++;
        size_t plen = strcspn(s, "&");
        if (plen >= 14 && strncmp(s, "includeActive=", 14) == 0) {
            if (plen != 18 || strncasecmp(s + 14, "true", 4) != 0) {
                snprintf(err, errlen, "next URL sets includeActive to another value than true");
                return -1;
            }
            seen = 1;
        } else if (plen == 13 && strncmp(s, "includeActive", 13) == 0) {
            snprintf(err, errlen, "next URL sets includeActive to another value than true");
            return -1;
        }
        s += plen;
    }
    if (!seen && provider_url_add(buf, sizeof(buf), "includeActive", "true") != 0) {
        snprintf(err, errlen, "next URL longer than %d bytes once resolved", PROVIDER_URL_MAX - 1);
        return -1;
    }
    if (strcmp(buf, p->fetched) == 0) {
        snprintf(err, errlen, "next URL repeats the URL just fetched (a paging loop)");
        return -1;
    }
    memcpy(out, buf, n < sizeof(buf) ? n : sizeof(buf));
    out[n - 1] = '\0';
    return 0;
}

static int sp_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    const provider_emit_t *e = opaque;
    if (rec->id.kind != PAGE_SCAN_STRING || rec->id.len == 0 ||
        rec->status.kind != PAGE_SCAN_STRING) {
        snprintf(err, errlen,
                 "results[%zu] lacks a non-empty string \"sid\" or a string "
                 "\"status\"",
                 rec->index);
        return -1;
    }
    return e->fn(e->opaque, rec->id.text, rec->id.len, rec->status.text, rec->status.len, rec->span,
                 rec->len, err, errlen);
}

/*
 * Records reach fn as the scan meets them, before the next link is read
 * (it may follow them): a page that fails after that, its link included,
 * fails the poll, and the engine drops the cycle with all it observed, so
 * a page we cannot continue from still fails whole.
 */
static int sp_handle_page(void *poll, const http_response_t *resp, provider_record_fn fn,
                          void *opaque, char *err, size_t errlen)
{
    sp_poll_t *p = poll;
    char link[PROVIDER_URL_MAX];
    page_scan_result_t res = {.fields[0] = {.text = link, .cap = sizeof(link)}};
    provider_emit_t e = {fn, opaque};
    page_scan_rc_t rc =
        page_scan(p->conf->scan, resp->body, resp->len, sp_record, &e, &res, err, errlen);
    if (rc != PAGE_SCAN_OK && rc != PAGE_SCAN_E_RECORD)
        return -1;
    /* The link is checked ahead of a record's own failure, as it was when
     * it was checked before any record was handed over. */
    const page_scan_value_t *next = &res.fields[0];
    if (next->kind != PAGE_SCAN_ABSENT && next->kind != PAGE_SCAN_NULL &&
        next->kind != PAGE_SCAN_STRING) {
        snprintf(err, errlen, "page's \"next\" is neither a string nor null");
        return -1;
    }
    int more = next->kind == PAGE_SCAN_STRING && next->len > 0;
    if (more && resolve_next(p, next, p->url, sizeof(p->url), err, errlen) != 0)
        return -1;
    if (rc != PAGE_SCAN_OK)
        return -1;
    p->have_next = more;
    p->done = !more;
    return 0;
}

const provider_ops_t provider_smarterproctoring = {
    .name = "smarterproctoring",
    .statuses = sp_statuses,
    .keys = sp_keys,
    .default_page_size = SP_DEFAULT_LIMIT,
    .max_page_size = SP_MAX_LIMIT,
    .configure = sp_configure,
    .free_config = sp_free_config,
    .poll_begin = sp_poll_begin,
    .next_request = sp_next_request,
    .handle_page = sp_handle_page,
    .poll_free = sp_poll_free,
};
