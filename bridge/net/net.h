/*
 * net: what every HTTP client of the daemon shares, the pollers
 * (bridge/http.c) and the webhook sink (sinks/webhook.c) alike, so that
 * both read a response and set up a connection by the same rules.
 *
 * A library of its own (sb_net) because both sb_bridge and sb_sinks link
 * it, and sb_bridge already depends on sb_sinks.
 */
#ifndef SB_NET_H
#define SB_NET_H

#include <time.h>

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

#endif /* SB_NET_H */
