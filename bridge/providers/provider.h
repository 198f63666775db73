/*
 * provider: one adapter per "list sessions" API.
 *
 * An adapter is a request/response state machine: the engine asks it for
 * the next request, performs it (with the shared retry policy), and hands
 * back the response, from which the adapter extracts (id, raw status,
 * record) triples. Adapters do no I/O themselves, so the same adapter runs
 * under a blocking loop or an event loop, and its paging is unit-testable
 * with canned responses.
 */
#ifndef SB_PROVIDER_H
#define SB_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "diff.h"
#include "http.h"
#include "page_scan.h"
#include "sink.h"

/* Longest request URL an adapter builds. */
#define PROVIDER_URL_MAX 8192
/* Pages one poll may fetch; a provider that never ends is cut off. */
#define PROVIDER_MAX_PAGES 20000

struct conf_source;

typedef struct provider_request {
    char url[PROVIDER_URL_MAX];
    /* "Name: value" lines; they may hold credentials: never log them. */
    char headers[HTTP_MAX_REQUEST_HEADERS][HTTP_HEADER_MAX];
    size_t nheaders;
    /* What a log line may show of the request: the endpoint, no query. */
    char label[256];
} provider_request_t;

/*
 * Receives one record of a page: its id (id_len bytes) and raw status
 * (status_len bytes), as decoded, and its len bytes of JSON text (the
 * record as received, a span of the page), all borrowed for the call and
 * none NUL-terminated for certain: lengths travel with the bytes, so that
 * nothing downstream measures them again (diff_cycle_observe). A length
 * above the diff's bound (an id or status too long for the scanner's
 * buffer) is passed as it is, and fails the page there. Called on the thread that calls
 * handle_page, as the page is scanned: a page may still fail after some
 * records (the poll fails, and its cycle is dropped whole). Returns 0, or
 * -1 with err to fail the page.
 */
typedef int (*provider_record_fn)(void *opaque, const char *session_id, size_t id_len,
                                  const char *raw_status, size_t status_len, const char *text,
                                  size_t len, char *err, size_t errlen);

typedef struct provider_status {
    const char *raw;
    diff_state_t state;
} provider_status_t;

typedef struct provider_ops {
    const char *name;
    /* Default status map (CONTRACT §5), terminated by {NULL, 0}. */
    const provider_status_t *statuses;
    /* Source keys this provider adds to the common ones, NULL-terminated. */
    const char *const *keys;
    int default_page_size;
    int max_page_size;
    /*
     * Per-exam providers: a source entry holding the list key expand_key
     * (e.g. "exam_ids") becomes one source per element, each with
     * expand_into (e.g. "exam_id") set to the element and named
     * "<name>-<element>". NULL when the provider has no such list.
     */
    const char *expand_key;
    const char *expand_into;
    /*
     * Validates the provider's own keys of src (path is "sources[i]") and
     * returns its parsed configuration, owned by the caller and released
     * with free_config(); NULL after adding problems to errs.
     */
    void *(*configure)(const cJSON *src, const char *path, sink_errors_t *errs);
    void (*free_config)(void *pconf);
    /*
     * Starts one poll at unix time now_s. Returns the poll state, owned by
     * the caller and released with poll_free(); NULL on ENOMEM.
     */
    void *(*poll_begin)(const struct conf_source *src, int64_t now_s);
    /*
     * Fills req with the next request and returns 1, returns 0 when the
     * poll is complete, or -1 with err.
     */
    int (*next_request)(void *poll, provider_request_t *req, char *err, size_t errlen);
    /*
     * Optional. Rebuilds the last request before it is retried, for APIs
     * whose requests are single-use (ProctorExam: fresh timestamp, nonce and
     * signature). NULL: a retry resends the request as it was. 0 or -1.
     */
    int (*refresh_request)(void *poll, provider_request_t *req, char *err, size_t errlen);
    /*
     * Consumes the 2xx response to the last request, calling fn per record.
     * Returns 0, or -1 with err when the page is malformed.
     */
    int (*handle_page)(void *poll, const http_response_t *resp, provider_record_fn fn, void *opaque,
                       char *err, size_t errlen);
    void (*poll_free)(void *poll);
} provider_ops_t;

#define PROVIDER(name) extern const provider_ops_t provider_##name;
#include "list.h"
#undef PROVIDER

/* Known providers, NULL-terminated. */
extern const provider_ops_t *const provider_all[];
const provider_ops_t *provider_find(const char *name);

/*
 * Builds a source's status map: the provider's defaults, then the
 * overrides of status_map (raw -> state name), which may be NULL.
 */
diff_status_map_t *provider_status_map(const provider_ops_t *p, const cJSON *overrides);

/* Helpers shared by adapters. */

/*
 * Appends "&name=value" (or "?name=value" for the first) to the URL in url
 * (urlsize bytes), both percent-encoded by libcurl. -1, url unchanged,
 * when the result does not fit.
 */
int provider_url_add(char *url, size_t urlsize, const char *name, const char *value);
/*
 * Splits a provider's page paths once, at configure time (page_scan.h).
 * Returns the spec, owned by the adapter's parsed config; NULL after
 * adding a problem at path to errs (only a path the adapter itself got
 * wrong, or ENOMEM).
 */
page_scan_spec_t *provider_scan_spec(const page_scan_paths_t *paths, const char *path,
                                     sink_errors_t *errs);
/*
 * Where an adapter's page_scan() callback hands each record on: the
 * engine's fn and its opaque, as handle_page received them.
 */
typedef struct provider_emit {
    provider_record_fn fn;
    void *opaque;
} provider_emit_t;
/* Beyond 2^53 a double skips integers: an id read from JSON there may not be the one sent. */
#define PROVIDER_EXACT_INT_MAX 9007199254740992LL
/*
 * 1 with *out set when d is a whole number that a double holds exactly
 * (|d| <= PROVIDER_EXACT_INT_MAX); 0 otherwise. sink_exact_integer() with
 * that range.
 */
int provider_exact_integer(double d, long long *out);
/*
 * A session id as the provider sent it: a non-empty string shorter than n,
 * or a whole number (exact in a double) as decimal text. 0, or -1 for
 * anything else.
 */
int provider_id_text(const cJSON *v, char *out, size_t n);
/* 1 when s is an HTTP header name (RFC 7230 token: letters, digits, !#$%&'*+-.^_`|~). */
int provider_is_token(const char *s);
/*
 * Sets req->headers[req->nheaders++] = "name: value". -1 when it does not
 * fit, when name is not a token, or when value holds a control character:
 * whatever configuration let through, a CR or LF never reaches the wire
 * to start another header.
 */
int provider_add_header(provider_request_t *req, const char *name, const char *value);

/*
 * A configured query value as the query carries it: a non-empty string of
 * at most max bytes without control characters (as it is), a boolean
 * ("true"/"false") or a finite number (an integer as such, else the
 * shortest text that reads back), into buf (n bytes, n > max). 0, or -1
 * for anything else.
 */
int provider_value_text(const cJSON *v, size_t max, char *buf, size_t n);

/*
 * Resolves ref, a next page's URL as a provider wrote it (absolute,
 * "//host/...", "/path", "?query" or a relative path), against fetched,
 * the URL just requested (RFC 3986, by curl_url() as libcurl will read it),
 * without its fragment, into out (n bytes). The request carries the
 * source's credentials, so the result must be on base_url's origin
 * (scheme, host and port, the default port made explicit) and hold no
 * user information. 0, or -1 with err, which names the origins but never
 * quotes ref's path or query (a provider may put a token there).
 */
int provider_follow_url(const char *base_url, const char *fetched, const char *ref, char *out,
                        size_t n, char *err, size_t errlen);

/* Links of one Link header value looked at; the rest are ignored (a page
 * needs one, a few more are prev, first, last). */
#define PROVIDER_LINK_MAX 32
/*
 * Finds the target of the first link of an RFC 8288 Link header value
 * whose rel (a space-separated list, compared case-insensitively) holds
 * "next": `<url>; rel="next"`, among other links (comma-separated) and
 * parameters (token or quoted-string values, where a comma does not end
 * the link). A malformed link is skipped up to the next comma outside
 * quotes; links with an anchor parameter describe another context and are
 * skipped too. Returns 1 with out (n bytes) set, 0 when there is none, -1
 * when the target does not fit n.
 */
int provider_link_next(const char *value, char *out, size_t n);

#endif /* SB_PROVIDER_H */
