/*
 * redis_conn: the redis:// URL and a ready blocking connection (see
 * redis_conn.h). Shared by the snapshot store and the redis_stream sink so
 * that both accept the same URLs and authenticate the same way.
 *
 * Messages are written with snprintf(err, errlen, ...) directly: C allows a
 * NULL err when errlen is 0, which is how a caller asks for no message.
 */
#include "redis_conn.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

int redis_parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > REDIS_U64_DIGITS)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return -1;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* ---- URL ---- */

/*
 * Percent-decodes one part of the userinfo into a new heap buffer (NUL
 * terminated, *outlen excludes it). The caller owns the result. -1 on bad
 * encoding, on a result longer than max, or ENOMEM (*oom set).
 */
static int percent_decode(const char *s, size_t len, size_t max, char **out, size_t *outlen,
                          int *oom)
{
    char *buf;
    size_t o = 0;

    *oom = 0;
    buf = malloc(len + 1);
    if (buf == NULL) {
        *oom = 1;
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi, lo;

            if (i + 2 >= len)
                goto bad;
            hi = OPENSSL_hexchar2int((unsigned char)s[i + 1]);
            lo = OPENSSL_hexchar2int((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                goto bad;
            buf[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            buf[o++] = s[i];
        }
    }
    if (o > max)
        goto bad;
    buf[o] = '\0';
    *out = buf;
    *outlen = o;
    return 0;
bad:
    /* The buffer may hold part of a password. */
    explicit_bzero(buf, len + 1);
    free(buf);
    return -1;
}

static int host_char(char c, bool bracketed)
{
    if (isalnum((unsigned char)c))
        return 1;
    if (bracketed)
        return c == ':' || c == '.' || c == '%';
    return c == '.' || c == '-' || c == '_';
}

/* Checks the length, the alphabet and the scheme; returns what follows "redis://". */
static const char *skip_scheme(const char *url, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    size_t url_len;

    if (url == NULL || url[0] == '\0') {
        snprintf(err, errlen, "invalid redis URL: empty (expected redis://host[:port][/db])");
        return NULL;
    }
    url_len = strnlen(url, REDIS_URL_MAX + 1);
    if (url_len > REDIS_URL_MAX) {
        snprintf(err, errlen, "invalid redis URL: longer than %d bytes", REDIS_URL_MAX);
        return NULL;
    }
    for (size_t i = 0; i < url_len; i++) {
        unsigned char c = (unsigned char)url[i];

        if (c <= 0x20 || c == 0x7f) {
            snprintf(err, errlen,
                     "invalid redis URL: contains a space or control character "
                     "(percent-encode them in the password)");
            return NULL;
        }
    }
    if (strncasecmp(url, scheme, sizeof scheme - 1) == 0)
        return url + sizeof scheme - 1;
    if (strncasecmp(url, "rediss://", 9) == 0)
        snprintf(err, errlen, "invalid redis URL: TLS (rediss://) is not supported");
    else if (strncasecmp(url, "unix://", 7) == 0)
        snprintf(err, errlen, "invalid redis URL: unix sockets are not supported");
    else
        snprintf(err, errlen, "invalid redis URL: the scheme must be redis://");
    return NULL;
}

/*
 * Decodes "[user]:password@" at the start of *rest into t and moves *rest
 * past it; no '@' means no userinfo. The last '@' ends the userinfo: a db
 * number or host never holds one, a password may.
 */
static int parse_userinfo(redis_target_t *t, const char **rest, char *err, size_t errlen)
{
    const char *at = strrchr(*rest, '@'), *colon;
    int oom;

    if (at == NULL)
        return 0;
    colon = memchr(*rest, ':', (size_t)(at - *rest));
    if (colon == NULL) {
        snprintf(err, errlen, "invalid redis URL: the userinfo must be [user]:password");
        return -1;
    }
    if (colon + 1 == at) {
        snprintf(err, errlen, "invalid redis URL: empty password");
        return -1;
    }
    if (colon > *rest && percent_decode(*rest, (size_t)(colon - *rest), REDIS_USER_MAX, &t->user,
                                        &t->user_len, &oom) != 0) {
        snprintf(err, errlen, "invalid redis URL: %s in the user name",
                 oom ? "out of memory" : "bad percent-encoding or too long");
        return -1;
    }
    if (percent_decode(colon + 1, (size_t)(at - colon - 1), REDIS_PASSWORD_MAX, &t->password,
                       &t->password_len, &oom) != 0) {
        snprintf(err, errlen, "invalid redis URL: %s in the password",
                 oom ? "out of memory" : "bad percent-encoding or too long");
        return -1;
    }
    *rest = at + 1;
    return 0;
}

/* Copies the host (a name, an IPv4 address or a [IPv6 address]) into t and
 * moves *rest past it. */
static int parse_host(redis_target_t *t, const char **rest, bool *bracketed, char *err,
                      size_t errlen)
{
    const char *p = *rest, *host;
    size_t host_len;

    *bracketed = *p == '[';
    if (*bracketed) {
        host = ++p;
        while (*p != '\0' && *p != ']')
            p++;
        if (*p != ']') {
            snprintf(err, errlen, "invalid redis URL: unterminated [IPv6 address]");
            return -1;
        }
        host_len = (size_t)(p++ - host);
    } else {
        host = p;
        while (*p != '\0' && *p != ':' && *p != '/' && *p != '?' && *p != '#')
            p++;
        host_len = (size_t)(p - host);
    }
    if (host_len == 0) {
        snprintf(err, errlen, "invalid redis URL: no host");
        return -1;
    }
    if (host_len > REDIS_HOST_MAX) {
        snprintf(err, errlen, "invalid redis URL: host longer than %d bytes", REDIS_HOST_MAX);
        return -1;
    }
    for (size_t i = 0; i < host_len; i++) {
        if (!host_char(host[i], *bracketed)) {
            snprintf(err, errlen, "invalid redis URL: bad character in the host");
            return -1;
        }
    }
    memcpy(t->host, host, host_len);
    t->host[host_len] = '\0';
    *rest = p;
    return 0;
}

/* Parses "[:port][/db]", the end of the URL. */
static int parse_port_db(redis_target_t *t, const char *p, char *err, size_t errlen)
{
    t->port = REDIS_DEFAULT_PORT;
    if (*p == ':') {
        const char *digits = ++p;
        uint64_t port;

        while (*p >= '0' && *p <= '9')
            p++;
        if (redis_parse_u64(digits, (size_t)(p - digits), &port) != 0 || port < 1 || port > 65535) {
            snprintf(err, errlen, "invalid redis URL: the port must be 1..65535");
            return -1;
        }
        t->port = (int)port;
    }
    t->db = 0;
    if (*p == '/') {
        const char *digits = ++p;
        uint64_t db;

        while (*p >= '0' && *p <= '9')
            p++;
        /* "redis://host/" is common and means db 0. */
        if (p > digits) {
            if (redis_parse_u64(digits, (size_t)(p - digits), &db) != 0 || db > INT_MAX) {
                snprintf(err, errlen, "invalid redis URL: the database must be 0..%d", INT_MAX);
                return -1;
            }
            t->db = (int)db;
        }
    }
    if (*p == '?') {
        snprintf(err, errlen, "invalid redis URL: query parameters are not supported");
        return -1;
    }
    if (*p != '\0') {
        snprintf(err, errlen,
                 "invalid redis URL: unexpected text after the host (expected [:port][/db])");
        return -1;
    }
    return 0;
}

void redis_target_clear(redis_target_t *t)
{
    if (t == NULL)
        return;
    if (t->password != NULL) {
        explicit_bzero(t->password, t->password_len);
        free(t->password);
    }
    free(t->user);
    memset(t, 0, sizeof *t);
}

/* No message quotes the URL: only the host, which cannot hold the password. */
int redis_url_parse(const char *url, redis_target_t *out, char *err, size_t errlen)
{
    const char *rest;
    bool bracketed;

    memset(out, 0, sizeof *out);
    rest = skip_scheme(url, err, errlen);
    if (rest == NULL || parse_userinfo(out, &rest, err, errlen) != 0 ||
        parse_host(out, &rest, &bracketed, err, errlen) != 0 ||
        parse_port_db(out, rest, err, errlen) != 0) {
        redis_target_clear(out);
        return -1;
    }
    snprintf(out->endpoint, sizeof out->endpoint, bracketed ? "[%s]:%d" : "%s:%d", out->host,
             out->port);
    return 0;
}

/* ---- connection ---- */

void redis_describe_error(const redisContext *c, int saved_errno, int timeout_ms, char *buf,
                          size_t size)
{
    if (c == NULL || c->err == 0)
        snprintf(buf, size, "connection lost");
    else if (c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK))
        snprintf(buf, size, "timed out after %d ms", timeout_ms);
    else if (c->err == REDIS_ERR_EOF)
        snprintf(buf, size, "connection closed by the server");
    else
        snprintf(buf, size, "%s", c->errstr);
}

bool redis_idle_closed(const redisContext *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

    return poll(&pfd, 1, 0) > 0;
}

/* Runs one setup command (AUTH, SELECT) that must answer +OK. */
static int expect_ok(redisContext *c, const redis_target_t *t, int timeout_ms, int argc,
                     const char **argv, const size_t *argvlen, char *err, size_t errlen)
{
    redisReply *r = redisCommandArgv(c, argc, argv, argvlen);
    int rc = -1;

    if (r == NULL) {
        char why[160];

        redis_describe_error(c, errno, timeout_ms, why, sizeof why);
        snprintf(err, errlen, "redis %s: %s: %s", t->endpoint, argv[0], why);
        return -1;
    }
    /* Redis never echoes the password in its AUTH errors (WRONGPASS, NOAUTH). */
    if (r->type == REDIS_REPLY_ERROR)
        snprintf(err, errlen, "redis %s: %s: %.*s", t->endpoint, argv[0], (int)r->len, r->str);
    else if (r->type != REDIS_REPLY_STATUS)
        snprintf(err, errlen, "redis %s: %s: unexpected reply type %d", t->endpoint, argv[0],
                 r->type);
    else
        rc = 0;
    freeReplyObject(r);
    return rc;
}

static int authenticate(redisContext *c, const redis_target_t *t, int timeout_ms, char *err,
                        size_t errlen)
{
    const char *argv[3] = {"AUTH", NULL, NULL};
    size_t argvlen[3] = {4, 0, 0};
    int argc = 2;

    if (t->user != NULL) {
        argv[1] = t->user;
        argvlen[1] = t->user_len;
        argc = 3;
    }
    argv[argc - 1] = t->password;
    argvlen[argc - 1] = t->password_len;
    return expect_ok(c, t, timeout_ms, argc, argv, argvlen, err, errlen);
}

static int select_db(redisContext *c, const redis_target_t *t, int timeout_ms, char *err,
                     size_t errlen)
{
    char db[16];
    const char *argv[2] = {"SELECT", db};
    size_t argvlen[2] = {6, 0};

    argvlen[1] = (size_t)snprintf(db, sizeof db, "%d", t->db);
    return expect_ok(c, t, timeout_ms, 2, argv, argvlen, err, errlen);
}

redisContext *redis_connect_target(const redis_target_t *t, int timeout_ms, char *err,
                                   size_t errlen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(t->host, t->port, tv);

    if (c == NULL) {
        snprintf(err, errlen, "redis %s: connect: out of memory", t->endpoint);
        return NULL;
    }
    if (c->err != 0) {
        snprintf(err, errlen, "redis %s: connect: %s", t->endpoint, c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        char why[160];

        redis_describe_error(c, errno, timeout_ms, why, sizeof why);
        snprintf(err, errlen, "redis %s: set timeout: %s", t->endpoint, why);
        goto fail;
    }
    /* Detects a peer that vanished without closing; failure only loses that. */
    (void)redisEnableKeepAlive(c);
    if (t->password != NULL && authenticate(c, t, timeout_ms, err, errlen) != 0)
        goto fail;
    if (t->db != 0 && select_db(c, t, timeout_ms, err, errlen) != 0)
        goto fail;
    return c;

fail:
    redisFree(c);
    return NULL;
}

/* Longest server version we quote ("7.0.15"; a fork may say more). */
#define REDIS_VERSION_MAX 32

int redis_probe(const redis_target_t *t, int timeout_ms, char *msg, size_t msglen)
{
    char version[REDIS_VERSION_MAX + 1] = "";
    redisContext *c = redis_connect_target(t, timeout_ms > 0 ? timeout_ms : 1, msg, msglen);
    redisReply *r;
    int rc = -1;

    if (c == NULL)
        return -1;
    r = redisCommand(c, "PING");
    if (r == NULL || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "PONG") != 0) {
        char why[160];

        if (r == NULL)
            redis_describe_error(c, errno, timeout_ms, why, sizeof why);
        else
            snprintf(why, sizeof why, "unexpected reply");
        snprintf(msg, msglen, "redis %s: PING: %s", t->endpoint,
                 r && r->type == REDIS_REPLY_ERROR ? r->str : why);
        goto out;
    }
    freeReplyObject(r);
    /* The version is a courtesy: a server that hides INFO (an ACL) still answered PING. */
    r = redisCommand(c, "INFO server");
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        const char *v = strstr(r->str, "redis_version:");
        size_t n = 0;

        if (v != NULL) {
            v += strlen("redis_version:");
            while (n < REDIS_VERSION_MAX && v[n] && v[n] != '\r' && v[n] != '\n')
                n++;
            memcpy(version, v, n);
            version[n] = '\0';
        }
    }
    if (version[0])
        snprintf(msg, msglen, "redis %s at %s", version, t->endpoint);
    else
        snprintf(msg, msglen, "redis at %s (PING answered, version not shown)", t->endpoint);
    rc = 0;
out:
    freeReplyObject(r);
    redisFree(c);
    return rc;
}
