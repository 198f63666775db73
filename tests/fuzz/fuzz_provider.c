/*
 * fuzz_provider: see fuzz_provider.h.
 */
#include "fuzz_provider.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "diff.h"
#include "fuzz.h"

/* The poll's clock: fixed, so that an input always means the same. */
#define FUZZ_NOW_S 1700000000
#define SEPARATOR "\n--\n"
#define SEPARATOR_LEN 4
/* A configuration document around one source object. */
#define CONF_TEXT_MAX 8192

typedef struct span {
    const char *p;
    size_t n;
} span_t;

/* ---- the input ---- */

/* The next response of in (advanced past it and its separator); 0 at the end. */
static int next_response(span_t *in, span_t *out)
{
    if (in->p == NULL)
        return 0;
    const char *sep = NULL;
    for (size_t i = 0; i + SEPARATOR_LEN <= in->n; i++) {
        if (memcmp(in->p + i, SEPARATOR, SEPARATOR_LEN) == 0) {
            sep = in->p + i;
            break;
        }
    }
    out->p = in->p;
    if (sep == NULL) {
        out->n = in->n;
        in->p = NULL; /* the last one */
        in->n = 0;
    } else {
        out->n = (size_t)(sep - in->p);
        in->n -= out->n + SEPARATOR_LEN;
        in->p = sep + SEPARATOR_LEN;
    }
    return 1;
}

static int token_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Fills r (status 200) from one response of the input. */
static void build_response(span_t in, http_response_t *r)
{
    memset(r, 0, sizeof(*r));
    r->status = 200;
    r->retry_after_s = -1;
    while (in.n > 0) {
        const char *nl = memchr(in.p, '\n', in.n);
        size_t len = nl ? (size_t)(nl - in.p) : in.n;
        size_t name = 0;
        while (name < len && token_char((unsigned char)in.p[name]))
            name++;
        if (name == 0 || name == len || in.p[name] != ':')
            break;
        http_response_add_header(r, in.p, len);
        in.p += len + (nl ? 1 : 0);
        in.n -= len + (nl ? 1 : 0);
    }
    if (in.n > 0) {
        /* Exactly the body's size and its NUL, so that a read past either
         * is caught. */
        r->body = malloc(in.n + 1);
        FUZZ_CHECK(r->body != NULL, "out of memory");
        memcpy(r->body, in.p, in.n);
        r->body[in.n] = '\0';
        r->len = in.n;
    }
}

/* ---- the checks ---- */

typedef struct origin {
    char scheme[8];
    char host[256];
    unsigned port;
} origin_t;

/*
 * scheme://host[:port] of an http(s) URL, lowercased, the port made
 * explicit; -1 for anything else, and for user information unless
 * userinfo_ok. Written apart from the adapters' own parser: it is the
 * judge of what they send.
 */
static int origin_of(const char *url, bool userinfo_ok, origin_t *o)
{
    size_t slen = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    memset(o, 0, sizeof(*o));
    if (slen == 0 || slen >= sizeof(o->scheme) || strncmp(url + slen, "://", 3) != 0)
        return -1;
    for (size_t i = 0; i < slen; i++)
        o->scheme[i] = (char)tolower((unsigned char)url[i]);
    if (strcmp(o->scheme, "http") == 0)
        o->port = 80;
    else if (strcmp(o->scheme, "https") == 0)
        o->port = 443;
    else
        return -1;
    const char *a = url + slen + 3;
    size_t alen = strcspn(a, "/?#");
    const char *at = NULL; /* the last '@': what follows it is the host */
    for (size_t i = 0; i < alen; i++) {
        if (a[i] == '@')
            at = a + i;
    }
    if (at != NULL) {
        if (!userinfo_ok)
            return -1;
        alen -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    const char *close = a[0] == '[' ? memchr(a, ']', alen) : NULL;
    const char *colon = memchr(close ? close : a, ':', alen - (size_t)((close ? close : a) - a));
    size_t hlen = colon ? (size_t)(colon - a) : alen;
    if (hlen == 0 || hlen >= sizeof(o->host))
        return -1;
    for (size_t i = 0; i < hlen; i++)
        o->host[i] = (char)tolower((unsigned char)a[i]);
    if (colon && colon + 1 < a + alen) {
        unsigned long port = 0;
        for (const char *d = colon + 1; d < a + alen; d++) {
            if (!isdigit((unsigned char)*d) || (port = port * 10 + (unsigned)(*d - '0')) > 65535)
                return -1;
        }
        o->port = (unsigned)port;
    }
    return 0;
}

/* RFC 3986's characters (unreserved, reserved, '%'): what a URL sent may hold. */
static int url_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~:/?#[]@!$&'()*+,;=%", c) != NULL);
}

static void check_label_headers(const provider_request_t *req)
{
    FUZZ_CHECK(strnlen(req->label, sizeof(req->label)) < sizeof(req->label) &&
                   strchr(req->label, '?') == NULL,
               "request label is unterminated or shows a query");
    FUZZ_CHECK(req->nheaders <= HTTP_MAX_REQUEST_HEADERS, "%zu request headers", req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *h = req->headers[i];
        size_t hl = strnlen(h, sizeof(req->headers[i]));
        size_t name = 0;
        FUZZ_CHECK(hl < sizeof(req->headers[i]), "request header %zu not terminated", i);
        while (token_char((unsigned char)h[name]))
            name++;
        FUZZ_CHECK(name > 0 && h[name] == ':', "request header %zu is not \"Name: value\"", i);
        for (size_t j = 0; j < hl; j++)
            FUZZ_CHECK((unsigned char)h[j] >= 0x20 && h[j] != 0x7f,
                       "request header %zu has control character 0x%02x (issue 10, item 2)", i,
                       (unsigned char)h[j]);
    }
}

void fuzz_check_request(const conf_source_t *src, const provider_request_t *req)
{
    origin_t want, got;
    size_t len = strnlen(req->url, sizeof(req->url)), blen = strlen(src->base_url);
    FUZZ_CHECK(len < sizeof(req->url), "request URL not terminated");
    /* base_url is the loader's to judge (it refuses spaces and controls;
     * the config target is where its other characters are fuzzed): what
     * the adapter adds, or a link it followed, is judged here. */
    size_t from = strncmp(req->url, src->base_url, blen) == 0 ? blen : 0;
    for (size_t i = from; i < len; i++)
        FUZZ_CHECK(url_char((unsigned char)req->url[i]),
                   "request URL has byte 0x%02x at %zu, not a URL character",
                   (unsigned char)req->url[i], i);
    /* User information is base_url's to carry (the loader allows it), never
     * a link's to add. */
    if (origin_of(src->base_url, true, &want) != 0) {
        /* A base_url the loader should have refused (reported): requests
         * may only extend it. */
        FUZZ_CHECK(from > 0, "request %s leaves base_url %s", req->url, src->base_url);
        check_label_headers(req);
        return;
    }
    FUZZ_CHECK(origin_of(req->url, from > 0, &got) == 0, "request URL has no http(s) origin: %s",
               req->url);
    FUZZ_CHECK(strcmp(want.scheme, got.scheme) == 0 && strcmp(want.host, got.host) == 0 &&
                   want.port == got.port,
               "request goes to %s://%s:%u, not to base_url's origin %s://%s:%u", got.scheme,
               got.host, got.port, want.scheme, want.host, want.port);
    check_label_headers(req);
}

typedef struct poll_state {
    diff_cycle_t *cy;
    size_t records;
    const http_response_t *resp; /* the page being handled */
} poll_state_t;

static int on_record(void *opaque, const char *session_id, size_t id_len, const char *raw_status,
                     size_t status_len, const char *text, size_t len, char *err, size_t errlen)
{
    poll_state_t *st = opaque;
    FUZZ_CHECK(session_id != NULL && raw_status != NULL && text != NULL && len > 0,
               "record %zu handed over without an id, a status or the record", st->records);
    /* lengths within the diff's bounds are the decoded strings' own */
    FUZZ_CHECK(id_len > DIFF_ID_MAX || id_len == strlen(session_id),
               "record %zu: id length %zu, not the id's", st->records, id_len);
    FUZZ_CHECK(status_len > DIFF_STATUS_MAX || status_len == strlen(raw_status),
               "record %zu: status length %zu, not the status's", st->records, status_len);
    /* the record is the page's own bytes (a span, no copy, no reprint) */
    uintptr_t at = (uintptr_t)text, body = (uintptr_t)st->resp->body;
    FUZZ_CHECK(at >= body && len <= st->resp->len && at - body <= st->resp->len - len,
               "record %zu is not a span of the page", st->records);
    /* the record is one JSON value, as its events will embed it */
    cJSON *doc = cJSON_ParseWithLength(text, len);
    FUZZ_CHECK(doc != NULL, "record %zu: its text is not JSON", st->records);
    cJSON_Delete(doc);
    st->records++;
    return diff_cycle_observe(st->cy, session_id, id_len, raw_status, status_len, text, len, err,
                              errlen);
}

static void check_events(diff_cycle_t *cy)
{
    size_t n = diff_cycle_nevents(cy);
    for (size_t i = 0; i < n; i++) {
        diff_event_t ev;
        FUZZ_CHECK(diff_cycle_event(cy, i, &ev) == 0, "event %zu cannot be read", i);
        FUZZ_CHECK(fuzz_utf8_valid(ev.session_id, strlen(ev.session_id)),
                   "event %zu: session id is not UTF-8 (issue 10, item 5)", i);
        FUZZ_CHECK(ev.status == NULL || fuzz_utf8_valid(ev.status, strlen(ev.status)),
                   "event %zu: status is not UTF-8 (issue 10, item 5)", i);
        FUZZ_CHECK(ev.record == NULL || fuzz_utf8_valid(ev.record, ev.record_len),
                   "event %zu: record is not UTF-8", i);
    }
}

/* ---- one poll ---- */

static conf_t *load_variant(const fuzz_provider_t *fp, span_t *in)
{
    size_t nvariants = 0, v = 0;
    while (fp->sources[nvariants])
        nvariants++;
    if (in->n >= 3 && in->p[0] == '#' && isdigit((unsigned char)in->p[1]) && in->p[2] == '\n') {
        v = (size_t)(in->p[1] - '0') % nvariants;
        in->p += 3;
        in->n -= 3;
    }
    char text[CONF_TEXT_MAX];
    int w = snprintf(text, sizeof(text),
                     "{\"sources\":[%s],\"sinks\":[{\"name\":\"out\",\"type\":\"stdout\"}]}",
                     fp->sources[v]);
    FUZZ_CHECK(w > 0 && (size_t)w < sizeof(text), "variant %zu does not fit", v);
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    FUZZ_CHECK(errs != NULL, "out of memory");
    conf_t *conf = conf_parse(text, (size_t)w, "fuzz.json", errs);
    FUZZ_CHECK(conf != NULL && conf->nsources == 1 && conf->sources[0].provider == fp->ops,
               "variant %zu refused: %s", v, errs->count ? errs->msg[0] : "?");
    free(errs);
    return conf;
}

int fuzz_provider_run(const fuzz_provider_t *fp, const uint8_t *data, size_t size)
{
    span_t in = {(const char *)data, size}, chunk;
    conf_t *conf = load_variant(fp, &in);
    const conf_source_t *src = &conf->sources[0];
    const provider_ops_t *ops = fp->ops;
    provider_request_t *req = calloc(1, sizeof(*req));
    diff_index_t *ix = diff_index_new();
    diff_options_t opt = {
        .source = src->name, .vanish_grace = src->vanish_grace, .status_map = src->status_map};
    poll_state_t st = {0};
    FUZZ_CHECK(req != NULL && ix != NULL, "out of memory");
    st.cy = diff_cycle_begin(ix, &opt);
    void *poll = ops->poll_begin(src, FUZZ_NOW_S);
    FUZZ_CHECK(st.cy != NULL && poll != NULL, "out of memory");

    int complete = 0;
    size_t page;
    char err[512] = "";
    for (page = 0;; page++) {
        err[0] = '\0';
        int r = ops->next_request(poll, req, err, sizeof(err));
        FUZZ_CHECK(r >= -1 && r <= 1, "next_request returned %d", r);
        if (r == 0) {
            complete = 1;
            break;
        }
        if (r < 0) {
            FUZZ_CHECK(err[0] != '\0', "next_request failed without a reason");
            break;
        }
        fuzz_check_request(src, req);
        /* Every other page as a retry would send it, where the API wants
         * each request rebuilt. */
        if (ops->refresh_request && page % 2 == 1) {
            r = ops->refresh_request(poll, req, err, sizeof(err));
            /* provider.h: 0, or -1 with a reason */
            FUZZ_CHECK(r == 0 || (r == -1 && err[0] != '\0'), "refresh_request returned %d", r);
            if (r < 0)
                break;
            fuzz_check_request(src, req);
        }
        if (!next_response(&in, &chunk))
            break; /* the input ends mid-poll: the poll never completes */
        http_response_t resp;
        build_response(chunk, &resp);
        st.resp = &resp;
        r = ops->handle_page(poll, &resp, on_record, &st, err, sizeof(err));
        http_response_reset(&resp);
        FUZZ_CHECK(r == 0 || r == -1, "handle_page returned %d", r);
        if (r != 0) {
            FUZZ_CHECK(err[0] != '\0', "handle_page failed without a reason");
            break;
        }
    }
    if (complete && diff_cycle_finish(st.cy) == 0) {
        check_events(st.cy);
        diff_cycle_apply(st.cy);
    }
    /* What an input does, for writing seeds. */
    if (getenv("SB_FUZZ_TRACE"))
        fprintf(stderr, "poll: %zu requests, %zu records, %s%s%s, %zu sessions stored\n", page,
                st.records, complete ? "complete" : "incomplete", err[0] ? ": " : "", err,
                diff_index_size(ix));
    ops->poll_free(poll);
    diff_cycle_free(st.cy);
    diff_index_free(ix);
    free(req);
    conf_free(conf);
    return 0;
}
