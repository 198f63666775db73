/*
 * http: a libcurl easy handle per client, its transfers run by a multi
 * handle on the event loop (http_start, multi_loop.h).
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "array.h"
#include "multi_loop.h"
#include "net.h"

/* 0.5 s doubling up to 30 s, each drawn in [d/2, d]: polite to a provider
 * in trouble, and the sources that failed together spread apart. */
const http_retry_policy_t http_default_retry = {
    .max_attempts = 4,
    .backoff = {.base_s = 0.5, .factor = 2, .cap_s = 30.0, .jitter_min = 0.5, .jitter_max = 1},
    .max_retry_after_s = 120.0,
};

struct http_client {
    CURL *curl;
    http_options_t opt;
    /* The request in progress, between request_begin() and request_end(). */
    http_response_t *resp;
    size_t cap;
    int too_large;
    struct curl_slist *request_headers;
    /* For transfers driven by an http_multi_t. */
    http_done_fn done;
    void *done_opaque;
    http_multi_t *multi; /* while a transfer of an http_multi_t runs */
};

struct http_multi {
    multi_loop_t *driver;
    CURLM *multi; /* the driver's */
    size_t active;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *opaque)
{
    http_client_t *c = opaque;
    http_response_t *r = c->resp;
    size_t n = size * nmemb;

    if (r->len + n > c->opt.max_body) {
        c->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    char *nb = array_grow(r->body, &c->cap, r->len + n + 1, 1, 16384);
    if (nb == NULL)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

void http_response_add_header(http_response_t *r, const char *data, size_t n)
{
    const char *colon = memchr(data, ':', n);
    if (colon == NULL || r->nheaders >= HTTP_MAX_HEADERS)
        return;
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (nl == 0 || nl >= sizeof(r->headers[0].name))
        return;
    bool too_long = vl >= sizeof(r->headers[0].value);
    if (r->headers == NULL) {
        r->headers = calloc(HTTP_MAX_HEADERS, sizeof(http_header_t));
        if (r->headers == NULL)
            return;
    }
    http_header_t *h = &r->headers[r->nheaders++];
    memcpy(h->name, data, nl);
    h->name[nl] = '\0';
    h->too_long = too_long;
    if (too_long)
        vl = 0;
    memcpy(h->value, v, vl);
    h->value[vl] = '\0';
    if (strcasecmp(h->name, "Retry-After") == 0)
        net_retry_after(h->value, time(NULL), &r->retry_after_s); /* invalid: stays absent */
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *opaque)
{
    http_client_t *c = opaque;
    http_response_t *r = c->resp;
    size_t n = size * nmemb;

    /* A new status line (redirect or 100-continue) starts a new header set. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        r->nheaders = 0;
        r->retry_after_s = -1;
        return n;
    }
    http_response_add_header(r, data, n);
    return n;
}

http_client_t *http_client_new(const http_options_t *opt, char *err, size_t errlen)
{
    http_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->opt = *opt;
    if (c->opt.max_body == 0)
        c->opt.max_body = HTTP_DEFAULT_MAX_BODY;
    net_easy_options_t eo = {.timeout_ms = c->opt.timeout_ms,
                             .connect_timeout_ms = c->opt.connect_timeout_ms,
                             .max_response = (long long)c->opt.max_body};
    c->curl = net_easy_new(&eo);
    if (c->curl == NULL) {
        snprintf(err, errlen, "cannot create a libcurl handle");
        free(c);
        return NULL;
    }
    CURL *h = c->curl;
    /* Pages compress well; the body bound applies to what is decoded. */
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    return c;
}

/* Abandons the transfer in flight on c, if any, without calling its done callback. */
static void detach(http_client_t *c)
{
    if (c == NULL || c->multi == NULL)
        return;
    curl_multi_remove_handle(c->multi->multi, c->curl);
    c->multi->active--;
    c->multi = NULL;
    curl_slist_free_all(c->request_headers);
    c->request_headers = NULL;
}

void http_client_free(http_client_t *c)
{
    if (c == NULL)
        return;
    detach(c); /* abandoned mid-transfer (shutdown) */
    curl_easy_cleanup(c->curl);
    free(c);
}

void http_response_reset(http_response_t *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof(*r));
    r->retry_after_s = -1;
}

const char *http_response_header(const http_response_t *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!r->headers[i].too_long && strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

/* Prepares c for one GET into resp. 0, or -1 with err (ENOMEM). */
static int request_begin(http_client_t *c, const char *url, const char *const *headers,
                         size_t nheaders, http_response_t *resp, char *err, size_t errlen)
{
    http_response_reset(resp);
    c->resp = resp;
    c->cap = 0;
    c->too_large = 0;
    c->request_headers = NULL;
    for (size_t i = 0; i < nheaders; i++) {
        struct curl_slist *n = curl_slist_append(c->request_headers, headers[i]);
        if (n == NULL) {
            curl_slist_free_all(c->request_headers);
            c->request_headers = NULL;
            c->resp = NULL;
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        c->request_headers = n;
    }
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->request_headers);
    curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
    return 0;
}

/* Closes the request begun on c, whose transfer ended with cc. */
static int request_end(http_client_t *c, CURLcode cc, char *err, size_t errlen)
{
    http_response_t *resp = c->resp;
    int rc = -1;

    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (c->too_large || cc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(err, errlen, "response body larger than %zu bytes", c->opt.max_body);
    } else if (cc != CURLE_OK) {
        /* curl's message may quote the URL; ours never shows the query. */
        snprintf(err, errlen, "%s", curl_easy_strerror(cc));
    } else {
        rc = 0;
    }
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(c->request_headers);
    c->request_headers = NULL;
    c->resp = NULL;
    if (rc != 0) {
        free(resp->body);
        resp->body = NULL;
        resp->len = 0;
    }
    return rc;
}

/* ---- many transfers at once ---- */

/* A transfer ended (multi_loop, on the loop's thread): closes it and tells its client. */
static void on_transfer_done(void *opaque, CURL *easy, CURLcode cc)
{
    http_multi_t *m = opaque;
    http_client_t *c = NULL;
    char err[256] = "";

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
    curl_multi_remove_handle(m->multi, easy);
    m->active--;
    c->multi = NULL;
    int rc = request_end(c, cc, err, sizeof(err));
    c->done(c->done_opaque, rc, err);
}

http_multi_t *http_multi_new(const sink_loop_t *loop, char *err, size_t errlen)
{
    http_multi_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->driver = multi_loop_new(loop, on_transfer_done, m, err, errlen);
    if (m->driver == NULL) {
        free(m);
        return NULL;
    }
    m->multi = multi_loop_handle(m->driver);
    return m;
}

void http_multi_free(http_multi_t *m)
{
    if (m == NULL)
        return;
    multi_loop_free(m->driver);
    free(m);
}

int http_start(http_multi_t *m, http_client_t *c, const char *url, const char *const *headers,
               size_t nheaders, http_response_t *resp, http_done_fn done, void *opaque, char *err,
               size_t errlen)
{
    if (request_begin(c, url, headers, nheaders, resp, err, errlen) != 0)
        return -1;
    c->done = done;
    c->done_opaque = opaque;
    curl_easy_setopt(c->curl, CURLOPT_PRIVATE, c);
    CURLMcode mc = curl_multi_add_handle(m->multi, c->curl);
    if (mc != CURLM_OK) {
        request_end(c, CURLE_FAILED_INIT, err, errlen);
        snprintf(err, errlen, "%s", curl_multi_strerror(mc));
        return -1;
    }
    m->active++;
    c->multi = m;
    return 0;
}

size_t http_multi_active(const http_multi_t *m)
{
    return m->active;
}

int http_status_retryable(long status)
{
    return status == 429 || (status >= 500 && status <= 599);
}

double http_backoff_delay(const http_retry_policy_t *p, int attempt, double retry_after_s,
                          double rnd)
{
    double d = backoff_delay(&p->backoff, attempt > 1 ? (unsigned)attempt : 1, rnd);
    if (retry_after_s > d)
        d = retry_after_s;
    return d;
}

double http_uniform01(void)
{
    uint32_t v;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (uint32_t)rand();
    return (double)v / 4294967296.0;
}

http_retry_t http_retry_decide(const http_retry_policy_t *p, int attempt, int rc,
                               const http_response_t *resp, double *delay_s, char *err,
                               size_t errlen)
{
    int retryable = 1; /* transport failures: timeouts, refused, reset */
    if (rc == 0) {
        if (resp->status >= 200 && resp->status <= 299)
            return HTTP_RETRY_DONE;
        snprintf(err, errlen, "HTTP status %ld", resp->status);
        retryable = http_status_retryable(resp->status);
    }
    if (!retryable || attempt >= p->max_attempts)
        return HTTP_RETRY_FAIL;
    if (resp->retry_after_s > p->max_retry_after_s) {
        snprintf(err, errlen, "HTTP status %ld with Retry-After %.0f s (over %.0f s)", resp->status,
                 resp->retry_after_s, p->max_retry_after_s);
        return HTTP_RETRY_FAIL;
    }
    *delay_s = http_backoff_delay(p, attempt, resp->retry_after_s, http_uniform01());
    return HTTP_RETRY_AGAIN;
}
