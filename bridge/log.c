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

#include "sink.h"

/* A line longer than this is cut, with "truncated":true. */
#define LOG_LINE_MAX 4096

volatile int log_max_level = LOG_LVL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *log_level_name(log_level_t level)
{
    return (unsigned)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level]
                                                                          : "info";
}

void log_set_level(log_level_t level)
{
    log_max_level = level;
}

typedef struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    int truncated;
} line_t;

static void put_raw(line_t *l, const char *s, size_t n)
{
    /* Keep room for the closing `,"truncated":true}\n`. */
    const size_t reserve = 24;
    if (l->truncated || l->len + n + reserve > sizeof(l->buf)) {
        l->truncated = 1;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(line_t *l, const char *s)
{
    put_raw(l, s, strlen(s));
}

static void put_json_string(line_t *l, const char *s)
{
    char esc[8];
    put_raw(l, "\"", 1);
    if (s == NULL)
        s = "";
    for (const unsigned char *p = (const unsigned char *)s; *p && !l->truncated; p++) {
        switch (*p) {
        case '"':
            put_raw(l, "\\\"", 2);
            break;
        case '\\':
            put_raw(l, "\\\\", 2);
            break;
        case '\n':
            put_raw(l, "\\n", 2);
            break;
        case '\r':
            put_raw(l, "\\r", 2);
            break;
        case '\t':
            put_raw(l, "\\t", 2);
            break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                put_str(l, esc);
            } else {
                put_raw(l, (const char *)p, 1);
            }
        }
    }
    put_raw(l, "\"", 1);
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
    put_json_string(l, buf);
}

void log_write(log_level_t level, const char *msg, const log_field_t *fields)
{
    line_t l;
    char num[64];

    l.len = 0;
    l.truncated = 0;
    put_str(&l, "{\"ts\":");
    put_timestamp(&l);
    put_str(&l, ",\"level\":");
    put_json_string(&l, log_level_name(level));
    put_str(&l, ",\"msg\":");
    put_json_string(&l, msg);
    for (const log_field_t *f = fields; f && f->type != LOG_FT_END; f++) {
        put_raw(&l, ",", 1);
        put_json_string(&l, f->key);
        put_raw(&l, ":", 1);
        switch (f->type) {
        case LOG_FT_STR:
            if (f->s == NULL)
                put_str(&l, "null");
            else
                put_json_string(&l, f->s);
            break;
        case LOG_FT_INT:
            snprintf(num, sizeof(num), "%lld", f->i);
            put_str(&l, num);
            break;
        case LOG_FT_DBL:
            snprintf(num, sizeof(num), "%.6g", f->d);
            put_str(&l, num);
            break;
        case LOG_FT_BOOL:
            put_str(&l, f->i ? "true" : "false");
            break;
        case LOG_FT_END:
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
