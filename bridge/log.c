/*
 * log: JSON lines on stderr. Each line is assembled in a stack buffer and
 * written with a single write(2), so lines from the librdkafka threads and
 * the main loop never interleave.
 */
#include "log.h"

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

/* A line longer than this is cut, with "truncated":true. */
#define LOG_LINE_MAX 4096
/* What a cut line still needs after its last field: `,"truncated":true}\n`. */
#define LOG_TAIL_MAX (sizeof(",\"truncated\":true}\n") - 1)
/* The JSON text of one character: an escape (JSON_ESCAPE_MAX) or a UTF-8
 * sequence (4 bytes at most), never NUL-terminated. */
#define LOG_UNIT_SIZE JSON_ESCAPE_MAX

volatile int log_max_level = LOG_LVL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *log_level_name(log_level_t level)
{
    return (unsigned)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level]
                                                                          : "info";
}

/*
 * A line under construction. Everything but the tail is written within
 * LOG_LINE_MAX - LOG_TAIL_MAX, and only whole pieces: a field that does not
 * fit is left out whole, a string value that does not fit is cut between
 * two characters and closed, so that a cut line is still one JSON object.
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

/*
 * The JSON text of the character at *p into unit, its
 * length returned and *p moved past it. A byte that starts no well-formed
 * UTF-8 sequence becomes U+FFFD: JSON is UTF-8, and consumers in Java or
 * Go reject or mangle a line that is not.
 */
static size_t json_unit(const unsigned char **p, char unit[LOG_UNIT_SIZE])
{
    unsigned char c = **p;
    /* At most 4 bytes are read, and none past a NUL: it ends every
     * sequence check. */
    size_t n = diff_utf8_seq(*p, 4);

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
    return json_escape_ascii(c, unit);
}

/*
 * Appends s as a JSON string. With cut, a string that does not fit is cut
 * after its last whole character and closed (returns 1); without, nothing
 * is written (returns -1). 0 when it fits whole.
 */
static int put_json_string(line_t *l, const char *s, int cut)
{
    size_t start = l->len;
    char unit[LOG_UNIT_SIZE];

    /* The opening quote and room for the closing one. */
    if (l->len + 2 > line_room)
        return -1;
    l->buf[l->len++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        size_t n = json_unit(&p, unit);
        if (l->len + n + 1 > line_room) {
            if (!cut) {
                l->len = start;
                return -1;
            }
            l->buf[l->len++] = '"';
            return 1;
        }
        memcpy(l->buf + l->len, unit, n);
        l->len += n;
    }
    l->buf[l->len++] = '"';
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
    put_json_string(l, buf, 0);
}

/*
 * Appends ,"key":value. A field that does not fit is left out whole, except
 * a string value, which is cut (see put_json_string). 0 when it fits, 1
 * when the line is full (truncated is then set and nothing more fits).
 */
static int put_field(line_t *l, const char *key, const log_field_t *f, const char *msg)
{
    size_t start = l->len;
    char num[64];
    int rc = 0;

    if (put_raw(l, ",", 1) != 0 || put_json_string(l, key, 0) != 0 || put_raw(l, ":", 1) != 0)
        goto full;
    if (f == NULL) {
        rc = put_json_string(l, msg, 1);
    } else {
        switch (f->type) {
        case LOG_FT_STR:
            rc = f->s == NULL ? put_str(l, "null") : put_json_string(l, f->s, 1);
            break;
        case LOG_FT_INT:
            snprintf(num, sizeof(num), "%lld", f->i);
            rc = put_str(l, num);
            break;
        case LOG_FT_DBL:
            /* JSON has no NaN or infinity. */
            if (f->d == f->d && f->d - f->d == 0)
                snprintf(num, sizeof(num), "%.6g", f->d);
            else
                snprintf(num, sizeof(num), "null");
            rc = put_str(l, num);
            break;
        case LOG_FT_BOOL:
            rc = put_str(l, f->i ? "true" : "false");
            break;
        case LOG_FT_END:
            break;
        }
    }
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

void log_write(log_level_t level, const char *msg, const log_field_t *fields)
{
    line_t l;

    l.len = 0;
    l.truncated = 0;
    put_str(&l, "{\"ts\":");
    put_timestamp(&l);
    put_str(&l, ",\"level\":");
    put_json_string(&l, log_level_name(level), 0);
    if (put_field(&l, "msg", NULL, msg) == 0) {
        for (const log_field_t *f = fields; f && f->type != LOG_FT_END; f++) {
            if (put_field(&l, f->key, f, NULL) != 0)
                break;
        }
    }
    if (l.truncated) {
        memcpy(l.buf + l.len, ",\"truncated\":true", 17);
        l.len += 17;
    }
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
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

int log_init_from_env(void)
{
    const char *v = getenv("SB_LOG_LEVEL");
    int rc = 0;
    if (v && *v) {
        size_t i;
        for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
            if (strcasecmp(v, level_names[i]) == 0)
                break;
        }
        if (i < sizeof(level_names) / sizeof(level_names[0]))
            log_max_level = (int)i;
        else
            rc = -1;
    }
    sink_set_logger(sink_logger, (sink_log_level_t)log_max_level, NULL);
    return rc;
}
