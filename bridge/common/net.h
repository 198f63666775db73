/*
 * net: what every HTTP client of the daemon shares, the pollers
 * (bridge/http.c) and the webhook sink (sinks/webhook.c) alike, so that
 * both read a response and set up a connection by the same rules.
 *
 * Part of sb_common, the helpers the core and the sinks share.
 */
#ifndef SB_NET_H
#define SB_NET_H

#include <stddef.h>
#include <time.h>

#include <curl/curl.h>

/*
 * The longest wait a Retry-After value can express here (a year); longer
 * ones are clamped to it. No caller waits that long: each applies its own,
 * lower limit (a poller's retry policy, the engine's pause, the outbox's
 * schedule), so this bound only keeps the arithmetic finite.
 */
#define NET_RETRY_AFTER_MAX_S (365.0 * 86400.0)

/*
 * Parses a Retry-After value (RFC 9110, section 10.2.3) read at now into
 * *delay_s, in seconds. Blanks around the value are ignored. The value is
 * either delta-seconds, one or more decimal digits and nothing else (no
 * sign, no fraction, no unit), or an HTTP-date in any of the three formats
 * of RFC 9110 (IMF-fixdate, RFC 850, asctime); a date in the past means 0.
 * The result is clamped to NET_RETRY_AFTER_MAX_S.
 *
 * Returns 0, or -1 when the value is neither (*delay_s is then untouched):
 * an invalid Retry-After counts as absent, and the caller's own backoff
 * decides.
 */
int net_retry_after(const char *value, time_t now, double *delay_s);

/* What net_url_parse() found; OK is 0. */
typedef enum net_url_status {
    NET_URL_OK = 0,
    NET_URL_MALFORMED, /* not an absolute URL libcurl can read */
    NET_URL_SCHEME,    /* a scheme other than http or https */
    NET_URL_USERINFO,  /* user[:password]@ in it, and the caller refuses that */
    NET_URL_NO_HOST,   /* an empty host */
} net_url_status_t;

/* net_url_parse() flags. */
#define NET_URL_NO_USERINFO 1u

/*
 * Reads url as libcurl will at every request, so that a URL it would
 * refuse fails when the configuration is checked rather than at each
 * poll: absolute, http or https, with a host; with NET_URL_NO_USERINFO,
 * without user[:password]@. The checks run in the order of the enum.
 * On OK, when out is not NULL, *out is the parsed URL, which the caller
 * owns (curl_url_cleanup()). Nothing of url is ever put in a message
 * here: its path or query may hold a token.
 */
net_url_status_t net_url_parse(const char *url, unsigned flags, CURLU **out);

/*
 * Writes u's origin, "scheme://host[:port]" (the port only when the URL
 * spells one), into out: how messages name an endpoint without its path
 * or query. 0, or -1 when out is too small or libcurl fails.
 */
int net_url_origin(CURLU *u, char *out, size_t size);

/* What every request of the daemon says it is. */
#define NET_USER_AGENT "session-bridge/" SB_VERSION

typedef struct net_easy_options {
    long timeout_ms;         /* the whole transfer, > 0 */
    long connect_timeout_ms; /* 0: timeout_ms */
    long long max_response;  /* bytes of response body, > 0; a larger announced body fails */
} net_easy_options_t;

/*
 * A new easy handle with what every HTTP client of the daemon sets: no
 * signals (transfers run on threads that handle none), the timeouts, TCP
 * keep-alive (connections are reused between polls and attempts), http and
 * https only and no redirects (a redirect could carry the credentials of a
 * request to another host), the response bound and NET_USER_AGENT. The
 * caller adds the request (URL, method, headers, body callbacks).
 *
 * No CURLOPT_ERRORBUFFER on purpose: its text may quote the URL, whose
 * query can hold a token; messages come from curl_easy_strerror().
 *
 * The caller owns the handle (curl_easy_cleanup()). NULL when libcurl
 * cannot create it or refuses an option the contract rests on (protocols,
 * redirects).
 */
CURL *net_easy_new(const net_easy_options_t *opt);

#endif /* SB_NET_H */
