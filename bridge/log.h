/*
 * log: one line per call on stderr (CONTRACT §8), a JSON object or, with
 * SB_LOG_FORMAT=text (the default on a terminal), the same fields as
 * `TIME LEVEL message  key=value ...` for people.
 *
 *   LOG_INFO("poll complete", LF_S("source", name), LF_I("pages", pages),
 *            LF_DUR("poll_ms", poll_s));
 *
 * The level is checked before any argument is evaluated, so a disabled
 * debug line costs one comparison. Fields are typed so that numbers stay
 * numbers in the JSON and durations read as durations. Never pass a
 * secret: there is no redaction here, by design, so that no code path
 * depends on it.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum log_level {
    LOG_LVL_ERROR = 0,
    LOG_LVL_WARN,
    LOG_LVL_INFO,
    LOG_LVL_DEBUG,
} log_level_t;

typedef enum log_field_type {
    LOG_FT_END = 0,
    LOG_FT_STR,
    LOG_FT_INT,
    LOG_FT_DBL,
    LOG_FT_BOOL,
    LOG_FT_DUR,
} log_field_type_t;

typedef struct log_field {
    log_field_type_t type;
    const char *key;
    const char *s;
    long long i;
    double d;
} log_field_t;

#define LF_S(k, v) ((log_field_t){.type = LOG_FT_STR, .key = (k), .s = (v)})
#define LF_I(k, v) ((log_field_t){.type = LOG_FT_INT, .key = (k), .i = (long long)(v)})
#define LF_D(k, v) ((log_field_t){.type = LOG_FT_DBL, .key = (k), .d = (double)(v)})
#define LF_B(k, v) ((log_field_t){.type = LOG_FT_BOOL, .key = (k), .i = (v) ? 1 : 0})
/*
 * A duration, given in seconds (what clock_mono_s() differences and the
 * configuration's *_s keys hold). Its key ends in _ms: the JSON line holds
 * milliseconds under it ("poll_ms":41.2), the text line the key without
 * _ms and a unit (poll=41ms, poll=1.24s), so that no line shows seconds
 * as 7.6194e-05.
 */
#define LF_DUR(k, seconds) ((log_field_t){.type = LOG_FT_DUR, .key = (k), .d = (double)(seconds)})
#define LF_END_ ((log_field_t){.type = LOG_FT_END})

extern volatile int log_max_level;

#define LOG_AT_(lvl, msg, ...)                                                                     \
    do {                                                                                           \
        if ((int)(lvl) <= log_max_level)                                                           \
            log_write((lvl), (msg), (const log_field_t[]){__VA_ARGS__});                           \
    } while (0)

#define LOG_ERROR(...) LOG_AT_(LOG_LVL_ERROR, __VA_ARGS__, LF_END_)
#define LOG_WARN(...) LOG_AT_(LOG_LVL_WARN, __VA_ARGS__, LF_END_)
#define LOG_INFO(...) LOG_AT_(LOG_LVL_INFO, __VA_ARGS__, LF_END_)
#define LOG_DEBUG(...) LOG_AT_(LOG_LVL_DEBUG, __VA_ARGS__, LF_END_)
/* A line whose level the caller decides (a quiet cycle at debug, others at info). */
#define LOG_AT(lvl, ...) LOG_AT_((lvl), __VA_ARGS__, LF_END_)

/*
 * Reads SB_LOG_LEVEL (error|warn|info|debug, default info) and
 * SB_LOG_FORMAT (text|json; unset or empty: text when stderr is a
 * terminal, json otherwise, so that pods and pipes get JSON), and routes the
 * sinks' log lines through this logger. Returns -1 with the variable and
 * its allowed values in err when one holds something else (that setting
 * keeps its default).
 */
int log_init_from_env(char *err, size_t errlen);
const char *log_level_name(log_level_t level);
/* Writes one line; fields end with LOG_FT_END. Thread-safe (one write(2)). */
void log_write(log_level_t level, const char *msg, const log_field_t *fields);

#endif /* SB_LOG_H */
