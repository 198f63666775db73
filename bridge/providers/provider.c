/*
 * provider: the registry of adapters and what they share.
 */
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "page_scan.h"

const provider_ops_t *const provider_all[] = {
#define PROVIDER(name) &provider_##name,
#include "list.h"
#undef PROVIDER
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
    /*
     * curl_easy_escape() encodes as RFC 3986 says: unreserved characters
     * kept, "%20" for a space, upper-case digits. Not curl_url_set() with
     * CURLU_APPENDQUERY | CURLU_URLENCODE: libcurl 7.88 writes a space as
     * '+' there, which a server reading RFC 3986 takes for a '+' (and
     * ProctorExam's signature of such a value would no longer match), and
     * rewrites every escape of the URL in lower case.
     */
    char *ename = curl_easy_escape(NULL, name, 0), *evalue = curl_easy_escape(NULL, value, 0);
    size_t len = strlen(url);
    int n = -1;

    if (ename != NULL && evalue != NULL)
        n = snprintf(url + len, urlsize - len, "%c%s=%s", strchr(url, '?') ? '&' : '?', ename,
                     evalue);
    curl_free(ename);
    curl_free(evalue);
    if (n < 0 || (size_t)n >= urlsize - len) {
        url[len] = '\0';
        return -1;
    }
    return 0;
}

/* RFC 7230 tchar. */
static int is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr(extra, c) != NULL);
}

int provider_is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (!is_tchar((unsigned char)*s))
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

int provider_value_text(const cJSON *v, size_t max, char *buf, size_t n)
{
    if (cJSON_IsString(v)) {
        if (v->valuestring[0] == '\0' || strlen(v->valuestring) > max ||
            sink_has_control(v->valuestring))
            return -1;
        snprintf(buf, n, "%s", v->valuestring);
        return 0;
    }
    if (cJSON_IsBool(v)) {
        snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
        return 0;
    }
    if (cJSON_IsNumber(v)) {
        long long ll;
        double d = v->valuedouble;
        if (provider_exact_integer(d, &ll))
            snprintf(buf, n, "%lld", ll);
        else if (d == d && d - d == 0) { /* finite: the shortest text that reads back */
            snprintf(buf, n, "%.15g", d);
            if (strtod(buf, NULL) != d)
                snprintf(buf, n, "%.17g", d);
        } else
            return -1;
        return 0;
    }
    return -1;
}

/* ---- next URLs ---- */

/* RFC 3986 unreserved, reserved and '%': what a link may hold unencoded.
 * Spaces, controls, quotes, '\\', '<>', '{}', '|', '^' and '`' are not. */
static int url_char_ok(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("-._~:/?#[]@!$&'()*+,;=%", ch) != NULL);
}

/* An http(s) URL's origin as curl_url() reads it, the port made explicit. */
typedef struct url_origin {
    char scheme[8];
    char host[256];
    char port[8];
} url_origin_t;

/* Fills o from u; -1 when u has no http(s) scheme or no host. */
static int origin_of(CURLU *u, url_origin_t *o)
{
    char *scheme = NULL, *host = NULL, *port = NULL;
    int ok = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
             (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0) &&
             host[0] != '\0' && strlen(host) < sizeof(o->host) && strlen(port) < sizeof(o->port);
    if (ok) {
        snprintf(o->scheme, sizeof(o->scheme), "%s", scheme);
        snprintf(o->host, sizeof(o->host), "%s", host);
        snprintf(o->port, sizeof(o->port), "%s", port);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    return ok ? 0 : -1;
}

int provider_follow_url(const char *base_url, const char *fetched, const char *ref, char *out,
                        size_t n, char *err, size_t errlen)
{
    CURLU *base = curl_url(), *u = curl_url();
    url_origin_t bo, o;
    char *user = NULL, *password = NULL, *url = NULL;
    int rc = -1;

    if (base == NULL || u == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (curl_url_set(base, CURLUPART_URL, base_url, 0) != CURLUE_OK || origin_of(base, &bo) != 0 ||
        curl_url_set(u, CURLUPART_URL, fetched, 0) != CURLUE_OK) {
        snprintf(err, errlen, "base_url has no http(s) origin to resolve next URLs against");
        goto out;
    }
    /* libcurl sends some characters RFC 3986 does not allow as they are
     * ('^', '|', '{'...): a provider's link holding one is refused. */
    for (size_t i = 0; ref[i]; i++) {
        if (!url_char_ok((unsigned char)ref[i])) {
            snprintf(err, errlen, "next URL has a character not allowed in a URL at byte %zu", i);
            goto out;
        }
    }
    /* A URL already in the handle is the base a relative one resolves
     * against. */
    if (curl_url_set(u, CURLUPART_URL, ref, 0) != CURLUE_OK) {
        snprintf(err, errlen, "next URL is not a URL (RFC 3986)");
        goto out;
    }
    if (origin_of(u, &o) != 0) {
        snprintf(err, errlen, "next URL is not an http(s) URL with a host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
        snprintf(err, errlen, "next URL carries user information; refusing to follow it");
        goto out;
    }
    if (strcasecmp(o.scheme, bo.scheme) != 0 || strcasecmp(o.host, bo.host) != 0 ||
        strcmp(o.port, bo.port) != 0) {
        snprintf(err, errlen,
                 "next URL is on another origin (%s://%s:%s, base_url's is %s://%s:%s); refusing "
                 "to send the credentials there",
                 o.scheme, o.host, o.port, bo.scheme, bo.host, bo.port);
        goto out;
    }
    /* The fragment never reaches the server. */
    if (curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK) {
        snprintf(err, errlen, "next URL cannot be rebuilt");
        goto out;
    }
    if (strlen(url) >= n) {
        snprintf(err, errlen, "next URL longer than %zu bytes once resolved", n - 1);
        goto out;
    }
    memcpy(out, url, strlen(url) + 1);
    rc = 0;
out:
    curl_free(user);
    curl_free(password);
    curl_free(url);
    curl_url_cleanup(u);
    curl_url_cleanup(base);
    return rc;
}

/* ---- RFC 8288 Link ---- */

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* 1 when the relation types v[0..len) (space-separated) hold "next". */
static int rel_has_next(const char *v, size_t len)
{
    const char *end = v + len;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        const char *w = v;
        while (v < end && *v != ' ' && *v != '\t')
            v++;
        if (v - w == 4 && strncasecmp(w, "next", 4) == 0)
            return 1;
    }
    return 0;
}

/* Past the rest of a malformed link: up to the next comma outside a
 * quoted string and outside <...>. */
static const char *skip_link(const char *p)
{
    while (*p && *p != ',') {
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
            }
        } else if (*p == '<') {
            const char *close = strchr(p, '>');
            p = close ? close : p + strlen(p) - 1;
        }
        if (*p)
            p++;
    }
    return p;
}

/*
 * Reads the parameters of one link from p (just after its '>'); sets *next
 * and *anchor. Returns where the link ends (at ',' or the end), or NULL
 * when it is malformed.
 */
static const char *link_params(const char *p, int *next, int *anchor)
{
    int rel_seen = 0;
    for (;;) {
        p = skip_ows(p);
        if (*p == ',' || *p == '\0')
            return p;
        if (*p != ';')
            return NULL;
        p = skip_ows(p + 1);
        /* A trailing ';' is not in the grammar, but harmless. */
        if (*p == ',' || *p == '\0')
            return p;
        const char *name = p;
        while (is_tchar((unsigned char)*p))
            p++;
        size_t nlen = (size_t)(p - name);
        if (nlen == 0)
            return NULL;
        p = skip_ows(p);
        const char *v = NULL;
        size_t vlen = 0;
        if (*p == '=') {
            p = skip_ows(p + 1);
            if (*p == '"') {
                v = ++p;
                while (*p && *p != '"')
                    p += *p == '\\' && p[1] ? 2 : 1;
                if (*p != '"')
                    return NULL;
                vlen = (size_t)(p++ - v);
            } else {
                v = p;
                while (is_tchar((unsigned char)*p))
                    p++;
                vlen = (size_t)(p - v);
                if (vlen == 0)
                    return NULL;
            }
        }
        /* RFC 8288 §3.3: a second rel is ignored. */
        if (nlen == 3 && strncasecmp(name, "rel", 3) == 0 && !rel_seen) {
            rel_seen = 1;
            *next = v != NULL && rel_has_next(v, vlen);
        } else if (nlen == 6 && strncasecmp(name, "anchor", 6) == 0) {
            *anchor = 1;
        }
    }
}

int provider_link_next(const char *value, char *out, size_t n)
{
    const char *p = value;
    for (int links = 0; links < PROVIDER_LINK_MAX; links++) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return 0;
        const char *close = *p == '<' ? strchr(p + 1, '>') : NULL;
        int next = 0, anchor = 0;
        const char *end = close ? link_params(close + 1, &next, &anchor) : NULL;
        if (end == NULL) {
            p = skip_link(p);
            continue;
        }
        if (next && !anchor) {
            size_t len = (size_t)(close - (p + 1));
            if (len >= n)
                return -1;
            memcpy(out, p + 1, len);
            out[len] = '\0';
            return 1;
        }
        p = end;
    }
    return 0;
}
