/*
 * http: the pollers' HTTP client. One client (a libcurl easy handle) per
 * source, every transfer driven by one multi handle, whose connection cache
 * keeps provider connections alive between pages and cycles.
 *
 * Every response is bounded: the body by max_body, the headers by count and
 * size. The retry policy lives here too (http_retry_decide), so that every
 * provider gets the same polite behaviour: bounded attempts, exponential
 * backoff with jitter, Retry-After; the engine runs its delays as timers.
 */
#ifndef SB_HTTP_H
#define SB_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "backoff.h"
#include "sink.h"

/* Response headers kept per response; further ones are dropped. */
#define HTTP_MAX_HEADERS 64
/* Longest header line kept; longer ones are dropped. */
#define HTTP_HEADER_MAX 1024
/* Default bound of a response body: a page of 1,000 rich records fits. */
#define HTTP_DEFAULT_MAX_BODY (16u * 1024u * 1024u)
/* Request headers a caller may pass. */
#define HTTP_MAX_REQUEST_HEADERS 8

typedef struct http_header {
    char name[128];
    char value[HTTP_HEADER_MAX];
    /* The value did not fit: it is kept empty, so that a reader that must
     * not miss a header (a Link to the next page) can tell it came. */
    bool too_long;
} http_header_t;

typedef struct http_response {
    long status; /* HTTP status, 0 when no response */
    char *body;  /* NUL-terminated, owned; NULL when empty */
    size_t len;  /* body length */
    http_header_t *headers;
    size_t nheaders;
    double retry_after_s; /* from Retry-After, -1 when absent */
} http_response_t;

typedef struct http_client http_client_t;
typedef struct http_multi http_multi_t;

typedef struct http_options {
    long timeout_ms; /* whole request */
    long connect_timeout_ms;
    size_t max_body;
} http_options_t;

http_client_t *http_client_new(const http_options_t *opt, char *err, size_t errlen);
void http_client_free(http_client_t *c);

/* Frees what a response holds and resets it to empty. */
void http_response_reset(http_response_t *r);
/* Case-insensitive header lookup; NULL when absent or too long. */
const char *http_response_header(const http_response_t *r, const char *name);
/*
 * Keeps one received header line ("Name: value", CRLF or not; n bytes, not
 * NUL-terminated) in r as every response keeps it: value trimmed, lines
 * past HTTP_MAX_HEADERS or with a name over its bound dropped, a value
 * over HTTP_HEADER_MAX kept empty and marked too_long, Retry-After parsed.
 * The transfer's header callback uses it, and so do the fuzz targets.
 */
void http_response_add_header(http_response_t *r, const char *data, size_t n);

typedef struct http_retry_policy {
    int max_attempts;         /* >= 1 */
    backoff_policy_t backoff; /* the delay before each retry */
    double max_retry_after_s; /* a longer Retry-After fails at once */
} http_retry_policy_t;

extern const http_retry_policy_t http_default_retry;

/* 1 when status deserves a retry (429, 5xx), 0 otherwise. */
int http_status_retryable(long status);

/*
 * Delay before retry number attempt (1-based) after a response with
 * retry_after_s (-1 when none): p's backoff, raised to Retry-After when
 * that is larger. rnd is a uniform sample in [0, 1).
 */
double http_backoff_delay(const http_retry_policy_t *p, int attempt, double retry_after_s,
                          double rnd);

typedef enum http_retry {
    HTTP_RETRY_DONE = 0, /* a 2xx response */
    HTTP_RETRY_AGAIN,    /* retry after *delay_s */
    HTTP_RETRY_FAIL,     /* give up; err says why */
} http_retry_t;

/*
 * What to do after attempt number attempt (1-based) of a request whose
 * transfer ended with rc (as passed to http_done_fn, its message in err) and
 * response resp. The one retry policy of every poller, blocking or not.
 */
http_retry_t http_retry_decide(const http_retry_policy_t *p, int attempt, int rc,
                               const http_response_t *resp, double *delay_s, char *err,
                               size_t errlen);

/* A uniform sample in [0, 1) from the CSPRNG, for jitter. */
double http_uniform01(void);

/* ---- many transfers at once (libcurl multi), for the scheduler ---- */

/*
 * Called on the event loop's thread when the transfer started with
 * http_start() ended. rc is 0 when a response arrived (whatever its status;
 * it is in the resp passed to http_start()), or -1 with err for a transport
 * failure, a timeout or a body over max_body; err never holds the URL's
 * query. Request headers may carry credentials: they are never logged.
 */
typedef void (*http_done_fn)(void *opaque, int rc, const char *err);

/*
 * Transfers run on loop (borrowed: it must outlive the multi), moved on by
 * libcurl's socket and timer callbacks as their sockets become ready.
 */
http_multi_t *http_multi_new(const sink_loop_t *loop, char *err, size_t errlen);
/* Every transfer must have completed (or the clients be freed) before. */
void http_multi_free(http_multi_t *m);
/*
 * Starts one GET on client c (one transfer per client at a time) into resp,
 * which must stay valid until done is called. 0, or -1 with err (done is
 * then not called).
 */
int http_start(http_multi_t *m, http_client_t *c, const char *url, const char *const *headers,
               size_t nheaders, http_response_t *resp, http_done_fn done, void *opaque, char *err,
               size_t errlen);
/* Transfers started and not yet done. */
size_t http_multi_active(const http_multi_t *m);

#endif /* SB_HTTP_H */
