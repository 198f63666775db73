/*
 * log: lines on stderr, JSON or text. Each line is assembled in a stack
 * buffer and written with a single write(2), so lines from the librdkafka
 * threads and the main loop never interleave.
 */
#include "log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "diff.h"
#include "json_escape.h"
#include "sink.h"

/* A line longer than this is cut, with "truncated":true (text: truncated=true). */
#define LOG_LINE_MAX 4096
/* What a cut line still needs after its last field: `,"truncated":true}\n`,
 * the longer of the two formats' tails (text: ` truncated=true\n`). */
#define LOG_TAIL_MAX (sizeof(",\"truncated\":true}\n") - 1)
/* The JSON text of one character: an escape (JSON_ESCAPE_MAX) or a UTF-8
 * sequence (4 bytes at most), never NUL-terminated. */
#define LOG_UNIT_SIZE JSON_ESCAPE_MAX
/* Text lines pad the message to this many characters before the first
 * field, so that the fields of the common short messages ("cycle
 * committed", "lease acquired") start in one column; a longer message is
 * followed by two spaces. logrus and Redpanda Connect pad to about as much. */
#define LOG_TEXT_MSG_WIDTH 40
/* Room for a number's text: %lld, %.6g and the durations all fit. */
#define LOG_NUM_MAX 64

typedef enum log_format {
    LOG_FMT_JSON = 0,
    LOG_FMT_TEXT,
} log_format_t;

volatile int log_max_level = LOG_LVL_INFO;
/* Set once by log_init_from_env(), before any other thread logs. */
static volatile int log_format = LOG_FMT_JSON;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* The text line's level column: upper case, padded to one width. */
static const char *const level_columns[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

const char *log_level_name(log_level_t level)
{
    return (unsigned)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level]
                                                                          : "info";
}

/*
 * A line under construction. Everything but the tail is written within
 * LOG_LINE_MAX - LOG_TAIL_MAX, and only whole pieces: a field that does not
 * fit is left out whole, a string value that does not fit is cut between
 * two characters (and closed, when quoted), so that a cut JSON line is
 * still one JSON object and a cut text line still parses as key=value.
 */
typedef struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    int truncated;
} line_t;

static const size_t line_room = LOG_LINE_MAX - LOG_TAIL_MAX;

/* Appends s[0..n) whole, or nothing and -1 when it does not fit. */
static int put_raw(line_t *l, const char *s, size_t n)
{
    if (l->len + n > line_room)
        return -1;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

static int put_str(line_t *l, const char *s)
{
    return put_raw(l, s, strlen(s));
}

static int put_spaces(line_t *l, size_t n)
{
    if (l->len + n > line_room)
        return -1;
    memset(l->buf + l->len, ' ', n);
    l->len += n;
    return 0;
}

/* How the characters of a string are written. */
typedef enum unit_style {
    UNIT_JSON, /* inside a JSON string (or a quoted text value): json_escape.h's rule */
    UNIT_BARE, /* text outside quotes: control characters escaped, '"' and '\' as they are */
} unit_style_t;

/*
 * The text of the character at *p (before end) into unit, its length
 * returned and *p moved past it. A byte that starts no well-formed UTF-8
 * sequence becomes U+FFFD: JSON is UTF-8, and consumers in Java or Go
 * reject or mangle a line that is not; a terminal shows garbage.
 */
static size_t encode_unit(const unsigned char **p, const unsigned char *end, unit_style_t style,
                          char unit[LOG_UNIT_SIZE])
{
    unsigned char c = **p;
    size_t left = (size_t)(end - *p);
    /* At most 4 bytes are read, and none past end or a NUL: either ends
     * every sequence check. */
    size_t n = diff_utf8_seq(*p, left < 4 ? left : 4);

    if (n == 0) {
        (*p)++;
        memcpy(unit, "\xef\xbf\xbd", 3);
        return 3;
    }
    *p += n;
    if (n > 1) {
        memcpy(unit, *p - n, n);
        return n;
    }
    if (style == UNIT_BARE && (c == '"' || c == '\\')) {
        unit[0] = (char)c; /* only quoted text needs them escaped */
        return 1;
    }
    return json_escape_ascii(c, unit);
}

/*
 * Appends s[0..n), in quotes with quoted (JSON's string syntax), bare
 * otherwise. With cut, a string that does not fit is cut after its last
 * whole character (and closed; returns 1); without, nothing is written
 * (returns -1). 0 when it fits whole.
 */
static int put_chars(line_t *l, const char *s, size_t n, unit_style_t style, int quoted, int cut)
{
    size_t start = l->len, q = quoted ? 1 : 0;
    char unit[LOG_UNIT_SIZE];
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    /* The opening quote and room for the closing one. */
    if (l->len + 2 * q > line_room)
        return -1;
    if (quoted)
        l->buf[l->len++] = '"';
    while (p < end && *p) {
        size_t u = encode_unit(&p, end, style, unit);
        if (l->len + u + q > line_room) {
            if (!cut) {
                l->len = start;
                return -1;
            }
            if (quoted)
                l->buf[l->len++] = '"';
            return 1;
        }
        memcpy(l->buf + l->len, unit, u);
        l->len += u;
    }
    if (quoted)
        l->buf[l->len++] = '"';
    return 0;
}

static int put_json_string(line_t *l, const char *s, int cut)
{
    s = s ? s : "";
    return put_chars(l, s, strlen(s), UNIT_JSON, 1, cut);
}

/*
 * True when a text value must be quoted to read back as one value: empty,
 * or holding a space, a control character, '"', '=' or '\' (logfmt's
 * rule). Bytes from 0x80 are characters (or become U+FFFD), never
 * separators.
 */
static int text_needs_quotes(const char *s)
{
    if (*s == '\0')
        return 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == 0x7f || *p == '"' || *p == '=' || *p == '\\')
            return 1;
    }
    return 0;
}

static void put_timestamp(line_t *l)
{
    struct timespec ts;
    struct tm tm;
    char buf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    if (log_format == LOG_FMT_TEXT)
        put_str(l, buf);
    else
        put_json_string(l, buf, 0);
}

/* Drops the trailing zeros of a number printed with decimals, and its
 * point when nothing is left after it. */
static void trim_decimals(char *num)
{
    if (strchr(num, '.') == NULL)
        return;
    size_t n = strlen(num);
    while (n > 0 && num[n - 1] == '0')
        num[--n] = '\0';
    if (n > 0 && num[n - 1] == '.')
        num[--n] = '\0';
}

/*
 * A duration in milliseconds for the JSON line, with three significant
 * digits down to the microsecond (41.2, 1240, 0.076), never in exponent
 * notation. JSON has no NaN or infinity: null.
 */
static void format_ms(double seconds, char num[LOG_NUM_MAX])
{
    double ms = seconds * 1000, a = fabs(ms);
    int decimals = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;

    if (!isfinite(ms) || snprintf(num, LOG_NUM_MAX, "%.*f", decimals, ms) >= LOG_NUM_MAX) {
        snprintf(num, LOG_NUM_MAX, "null");
        return;
    }
    trim_decimals(num);
}

/*
 * A duration for people, in the unit that keeps it short: 76µs, 4.2ms,
 * 41ms, 1.24s, 12.3s, 5m0s, 2h5m (Go's time.Duration reads the same way).
 */
static void format_duration_text(double seconds, char num[LOG_NUM_MAX])
{
    double a = fabs(seconds);
    const char *sign = seconds < 0 ? "-" : "";

    if (!isfinite(seconds) || a >= 1e12) {
        snprintf(num, LOG_NUM_MAX, "null");
    } else if (a == 0) {
        snprintf(num, LOG_NUM_MAX, "0s");
    } else if (a < 0.001) {
        snprintf(num, LOG_NUM_MAX, "%s%.0f\xc2\xb5s", sign, a * 1e6);
    } else if (a < 0.01) {
        snprintf(num, LOG_NUM_MAX, "%s%.1f", sign, a * 1e3);
        trim_decimals(num);
        strcat(num, "ms");
    } else if (a < 1) {
        snprintf(num, LOG_NUM_MAX, "%s%.0fms", sign, a * 1e3);
    } else if (a < 60) {
        snprintf(num, LOG_NUM_MAX, "%s%.*f", sign, a < 10 ? 2 : 1, a);
        trim_decimals(num);
        strcat(num, "s");
    } else if (a < 3600) {
        long long s = llround(a);
        snprintf(num, LOG_NUM_MAX, "%s%lldm%llds", sign, s / 60, s % 60);
    } else {
        long long m = llround(a / 60);
        snprintf(num, LOG_NUM_MAX, "%s%lldh%lldm", sign, m / 60, m % 60);
    }
}

/* A field's value, in the line's format. 0 when it fits whole, 1 when a
 * string was cut, -1 when nothing fits. */
static int put_value(line_t *l, const log_field_t *f)
{
    char num[LOG_NUM_MAX];
    int text = log_format == LOG_FMT_TEXT;

    switch (f->type) {
    case LOG_FT_STR:
        if (f->s == NULL)
            return put_str(l, "null");
        if (!text)
            return put_json_string(l, f->s, 1);
        if (text_needs_quotes(f->s))
            return put_chars(l, f->s, strlen(f->s), UNIT_JSON, 1, 1);
        return put_chars(l, f->s, strlen(f->s), UNIT_BARE, 0, 1);
    case LOG_FT_INT:
        snprintf(num, sizeof(num), "%lld", f->i);
        break;
    case LOG_FT_DBL:
        /* JSON has no NaN or infinity. */
        if (isfinite(f->d))
            snprintf(num, sizeof(num), "%.6g", f->d);
        else
            snprintf(num, sizeof(num), "null");
        break;
    case LOG_FT_BOOL:
        snprintf(num, sizeof(num), "%s", f->i ? "true" : "false");
        break;
    case LOG_FT_DUR:
        if (text)
            format_duration_text(f->d, num);
        else
            format_ms(f->d, num);
        break;
    case LOG_FT_END:
        return 0;
    }
    return put_str(l, num);
}

/* The length of a text line's key: a duration's without its _ms. */
static size_t text_key_len(const log_field_t *f)
{
    size_t n = strlen(f->key);
    if (f->type == LOG_FT_DUR && n > 3 && strcmp(f->key + n - 3, "_ms") == 0)
        n -= 3;
    return n;
}

/*
 * Appends one field: ,"key":value (JSON) or  key=value (text; the first
 * after the message padded to LOG_TEXT_MSG_WIDTH). A field that does not
 * fit is left out whole, except a string value, which is cut (see
 * put_chars). 0 when it fits, 1 when the line is full (truncated is then
 * set and nothing more fits).
 */
static int put_field(line_t *l, const log_field_t *f, size_t pad)
{
    size_t start = l->len;
    int rc;

    if (log_format == LOG_FMT_TEXT) {
        if (put_spaces(l, pad) != 0 ||
            put_chars(l, f->key, text_key_len(f), UNIT_BARE, 0, 0) != 0 || put_raw(l, "=", 1) != 0)
            goto full;
    } else if (put_raw(l, ",", 1) != 0 || put_json_string(l, f->key, 0) != 0 ||
               put_raw(l, ":", 1) != 0) {
        goto full;
    }
    rc = put_value(l, f);
    if (rc == 0)
        return 0;
    if (rc > 0) {
        l->truncated = 1;
        return 1;
    }
full:
    l->len = start;
    l->truncated = 1;
    return 1;
}

/* The characters of s[0..n) on a terminal (a UTF-8 sequence is one). */
static size_t text_width(const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += ((unsigned char)s[i] & 0xc0) != 0x80;
    return w;
}

/*
 * The start of a line, up to the message: 0, or 1 when the message was cut
 * (nothing else fits). *pad is what the first text field's separator needs.
 */
static int put_head(line_t *l, log_level_t level, const char *msg, size_t *pad)
{
    const char *m = msg ? msg : "";
    int rc;

    if (log_format == LOG_FMT_TEXT) {
        put_timestamp(l);
        put_raw(l, " ", 1);
        put_str(l, (unsigned)level < sizeof(level_columns) / sizeof(level_columns[0])
                       ? level_columns[level]
                       : level_columns[LOG_LVL_INFO]);
        put_raw(l, " ", 1);
        size_t at = l->len;
        rc = put_chars(l, m, strlen(m), UNIT_BARE, 0, 1);
        size_t w = text_width(l->buf + at, l->len - at);
        *pad = w + 2 <= LOG_TEXT_MSG_WIDTH ? LOG_TEXT_MSG_WIDTH - w : 2;
    } else {
        put_str(l, "{\"ts\":");
        put_timestamp(l);
        put_str(l, ",\"level\":");
        put_json_string(l, log_level_name(level), 0);
        size_t start = l->len;
        if (put_str(l, ",\"msg\":") != 0) {
            l->len = start;
            rc = -1;
        } else {
            rc = put_json_string(l, m, 1);
        }
        *pad = 0;
    }
    if (rc != 0)
        l->truncated = 1;
    return rc != 0;
}

void log_write(log_level_t level, const char *msg, const log_field_t *fields)
{
    line_t l;
    size_t pad = 0;
    int text = log_format == LOG_FMT_TEXT;

    l.len = 0;
    l.truncated = 0;
    if (put_head(&l, level, msg, &pad) == 0) {
        for (const log_field_t *f = fields; f && f->type != LOG_FT_END; f++) {
            if (put_field(&l, f, f == fields ? pad : 1) != 0)
                break;
        }
    }
    const char *tail = text ? (l.truncated ? " truncated=true\n" : "\n")
                            : (l.truncated ? ",\"truncated\":true}\n" : "}\n");
    size_t n = strlen(tail);
    memcpy(l.buf + l.len, tail, n);
    l.len += n;
    /* Best effort: there is nowhere to report a failing stderr. */
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc;
}

static void sink_logger(sink_log_level_t level, const char *sink, const char *msg, void *opaque)
{
    log_level_t lvl = (log_level_t)level; /* the two enums share their order */
    if ((int)lvl <= log_max_level)
        log_write(lvl, msg, (const log_field_t[]){LF_S("sink", sink), LF_END_});
}

/* The index of v in names (case-insensitive), or -1. */
static int name_index(const char *v, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(v, names[i]) == 0)
            return (int)i;
    }
    return -1;
}

int log_init_from_env(char *err, size_t errlen)
{
    /* In log_format_t's order. */
    static const char *const format_names[] = {"json", "text"};
    const char *level = getenv("SB_LOG_LEVEL"), *format = getenv("SB_LOG_FORMAT");
    int rc = 0, i;

    if (level && *level) {
        i = name_index(level, level_names, sizeof(level_names) / sizeof(level_names[0]));
        if (i >= 0) {
            log_max_level = i;
        } else {
            snprintf(err, errlen, "SB_LOG_LEVEL must be error, warn, info or debug");
            rc = -1;
        }
    }
    /* A person at a terminal reads text; a pod, a pipe or a file gets
     * JSON for whatever collects it. */
    log_format = isatty(STDERR_FILENO) ? LOG_FMT_TEXT : LOG_FMT_JSON;
    if (format && *format) {
        i = name_index(format, format_names, sizeof(format_names) / sizeof(format_names[0]));
        if (i >= 0) {
            log_format = i;
        } else if (rc == 0) {
            snprintf(err, errlen,
                     "SB_LOG_FORMAT must be text or json (unset: text on a terminal, json "
                     "otherwise)");
            rc = -1;
        }
    }
    sink_set_logger(sink_logger, (sink_log_level_t)log_max_level, NULL);
    return rc;
}
