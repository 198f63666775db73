/*
 * redis_conn: what every Redis client of the project shares: the redis://
 * URL, and a blocking connection made ready for commands (connected within
 * a bound, authenticated, on the right database).
 *
 * Internal to session-bridge (the snapshot store and the redis_stream sink);
 * not part of sink.h's ABI and not installed. No message written by these
 * functions ever contains the password: they quote the host, never the URL.
 * Every err may be NULL when its errlen is 0.
 */
#ifndef SB_REDIS_CONN_H
#define SB_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/* The URL comes from configuration; anything longer is not a Redis URL. */
#define REDIS_URL_MAX 2048
/* DNS names are at most 253 bytes; IPv6 literals with a zone fit too. */
#define REDIS_HOST_MAX 255
/* "[" host "]:" port and the NUL. */
#define REDIS_ENDPOINT_MAX (REDIS_HOST_MAX + 10)
/* Bounds of the decoded URL userinfo (Redis ACL user names and passwords). */
#define REDIS_USER_MAX 256
#define REDIS_PASSWORD_MAX 1024
#define REDIS_DEFAULT_PORT 6379
/* A uint64_t in decimal: at most 20 digits. */
#define REDIS_U64_DIGITS 20

/* Where to connect, parsed from redis://[[user]:password@]host[:port][/db]. */
typedef struct redis_target {
    char host[REDIS_HOST_MAX + 1];
    char endpoint[REDIS_ENDPOINT_MAX]; /* host:port ([v6]:port) as messages show it */
    int port;
    int db;
    char *user; /* NULL: AUTH with the password only */
    size_t user_len;
    char *password; /* NULL: no AUTH; may hold any byte, hence the length */
    size_t password_len;
} redis_target_t;

/*
 * Parses url into *out, which the caller releases with redis_target_clear()
 * (it owns the decoded user and password). 0, or -1 with a reason in err
 * ("invalid redis URL: ...") and *out left empty. Connects to nothing.
 */
int redis_url_parse(const char *url, redis_target_t *out, char *err, size_t errlen);

/* Wipes the password, frees the userinfo and empties *t. Accepts NULL. */
void redis_target_clear(redis_target_t *t);

/*
 * Connects to t within timeout_ms (> 0), which also becomes the socket's
 * read and write timeout, enables TCP keepalive, then sends AUTH and SELECT
 * when the target asks for them. Returns a blocking context with nothing
 * left to read, owned by the caller (redisFree()), or NULL with
 * "redis <endpoint>: <step>: <reason>" in err.
 */
redisContext *redis_connect_target(const redis_target_t *t, int timeout_ms, char *err,
                                   size_t errlen);

/*
 * Describes the I/O error of c ("timed out after N ms", "connection closed
 * by the server", hiredis's text, or "connection lost" when c is NULL or
 * has no error) into buf. saved_errno is errno right after the hiredis call
 * that failed: a blocking read or write that hit the socket timeout reports
 * EAGAIN, which hiredis words as "Resource temporarily unavailable".
 */
void redis_describe_error(const redisContext *c, int saved_errno, int timeout_ms, char *buf,
                          size_t size);

/*
 * True when c, idle with no reply outstanding, has become readable: the
 * server closed or reset it (a restart, its idle timeout, CLIENT KILL).
 * Callers check before sending so that they reconnect instead of failing.
 */
bool redis_idle_closed(const redisContext *c);

/*
 * Connects to t within timeout_ms, PINGs, reads the server's version (INFO
 * server), and closes: what check --connect and the redis_stream sink's
 * probe say about a Redis, read-only. Writes "redis 7.0.15 at
 * 127.0.0.1:6379" into msg and returns 0, or the reason ("redis <endpoint>:
 * <step>: <reason>") and -1. Blocking, on the caller's thread.
 */
int redis_probe(const redis_target_t *t, int timeout_ms, char *msg, size_t msglen);

/* Strict unsigned decimal as Redis replies and URLs hold it: no sign, no
 * spaces, no overflow. 0 or -1. */
int redis_parse_u64(const char *s, size_t len, uint64_t *out);

#endif /* SB_REDIS_CONN_H */
