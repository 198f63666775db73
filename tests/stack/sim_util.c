/*
 * sim_util.c: stateless helpers of sb-provider-sim (see sim.c): text
 * buffers, JSON strings, ISO 8601 times and durations, base64, UUIDs.
 */
#include "sim.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void sim_buf_init(struct sim_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void sim_buf_free(struct sim_buf *b)
{
    free(b->data);
    sim_buf_init(b);
}

static int buf_reserve(struct sim_buf *b, size_t extra)
{
    size_t need, cap;
    char *d;

    if (b->oom)
        return -1;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void sim_buf_add(struct sim_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sim_buf_puts(struct sim_buf *b, const char *s)
{
    sim_buf_add(b, s, strlen(s));
}

void sim_buf_printf(struct sim_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sim_buf_json_str(struct sim_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;

    sim_buf_add(b, "\"", 1);
    for (; *p; p++) {
        char esc[7];
        size_t elen;

        if (*p >= 0x20 && *p != '"' && *p != '\\')
            continue;
        sim_buf_add(b, (const char *)run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            elen = 2;
        } else {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            elen = 6;
        }
        sim_buf_add(b, esc, elen);
        run = p + 1;
    }
    sim_buf_add(b, (const char *)run, (size_t)(p - run));
    sim_buf_add(b, "\"", 1);
}

void sim_format_time(int64_t ms, char out[SIM_TIME_LEN + 1])
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;

    if (!gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        memcpy(out, "1970-01-01T00:00:00.000Z", SIM_TIME_LEN + 1);
        return;
    }
    snprintf(out, SIM_TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

void sim_buf_json_time(struct sim_buf *b, int64_t ms)
{
    char t[SIM_TIME_LEN + 1];

    sim_format_time(ms, t);
    sim_buf_add(b, "\"", 1);
    sim_buf_add(b, t, SIM_TIME_LEN);
    sim_buf_add(b, "\"", 1);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), so parsing never depends on the TZ environment. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Reads exactly n digits. */
static int digits(const char **s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*s)[i]))
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : dm[m - 1];
}

/* The largest unix time accepted, 9999-12-31T23:59:59Z. */
#define MAX_UNIX_SECONDS 253402300799LL

int sim_parse_time(const char *s, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, off = 0;
    const char *p = s;

    if (!*s)
        return -1;
    if (strspn(s, "0123456789") == strlen(s)) {
        uint64_t v;
        if (sim_parse_u64(s, 0, MAX_UNIX_SECONDS, &v) < 0)
            return -1;
        *ms = (int64_t)v * 1000;
        return 0;
    }
    if (digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &mo) < 0 || *p++ != '-' ||
        digits(&p, 2, &d) < 0)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0)
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec) < 0)
                return -1;
            if (*p == '.' || *p == ',') {
                int scale = 100, nd = 0;
                p++;
                while (isdigit((unsigned char)*p)) {
                    if (++nd > 9)
                        return -1;
                    frac += (*p - '0') * scale;
                    scale /= 10;
                    p++;
                }
                if (nd == 0)
                    return -1;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return -1;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (digits(&p, 2, &oh) < 0)
                return -1;
            if (*p == ':')
                p++;
            if (*p && digits(&p, 2, &om) < 0)
                return -1;
            if (oh > 23 || om > 59)
                return -1;
            off = sign * (oh * 60 + om);
        }
    }
    if (*p)
        return -1;
    *ms = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec -
            off * 60) *
           1000) +
          frac;
    return 0;
}

void sim_format_duration(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms > 0 ? ms / 1000 : 0;
    int64_t h = s / 3600, m = s / 60 % 60, sec = s % 60;
    size_t n = (size_t)snprintf(out, outlen, "PT");

    if (h && n < outlen)
        n += (size_t)snprintf(out + n, outlen - n, "%lldH", (long long)h);
    if (m && n < outlen)
        n += (size_t)snprintf(out + n, outlen - n, "%lldM", (long long)m);
    if ((sec || (!h && !m)) && n < outlen)
        snprintf(out + n, outlen - n, "%lldS", (long long)sec);
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t sim_b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;

    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

int sim_b64_decode(const char *in, unsigned char *out, size_t outcap, size_t *outlen)
{
    size_t len = strlen(in), o = 0;

    if (len == 0 || len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            const char *c = in[i + j] ? strchr(b64chars, in[i + j]) : NULL;
            v <<= 6;
            if (in[i + j] == '=' && i + 4 == len && j >= 2) {
                pad++;
            } else if (!c || pad) {
                return -1;
            } else {
                v |= (unsigned)(c - b64chars);
            }
        }
        if (o + 3 - (size_t)pad > outcap)
            return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    *outlen = o;
    return 0;
}

void sim_uuid_format(uint64_t hi, uint64_t lo, char out[SIM_UUID_LEN + 1])
{
    hi = (hi & ~0xf000ULL) | 0x4000ULL;       /* version 4 */
    lo = (lo & ~(3ULL << 62)) | (2ULL << 62); /* RFC 4122 variant */
    snprintf(out, SIM_UUID_LEN + 1, "%08llx-%04llx-%04llx-%04llx-%012llx",
             (unsigned long long)(hi >> 32), (unsigned long long)(hi >> 16 & 0xffff),
             (unsigned long long)(hi & 0xffff), (unsigned long long)(lo >> 48),
             (unsigned long long)(lo & 0xffffffffffffULL));
}

int sim_is_uuid(const char *s)
{
    for (int i = 0; i < SIM_UUID_LEN; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return s[SIM_UUID_LEN] == '\0';
}

int sim_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

uint64_t sim_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
