/*
 * log: one JSON object per line on stderr (CONTRACT §8).
 *
 *   LOG_INFO("poll complete", LF_S("source", name), LF_I("pages", pages));
 *
 * The level is checked before any argument is evaluated, so a disabled
 * debug line costs one comparison. Fields are typed so that numbers stay
 * numbers in the JSON. Never pass a secret: there is no redaction here, by
 * design, so that no code path depends on it.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stdbool.h>

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

/*
 * Reads SB_LOG_LEVEL (error|warn|info|debug, default info) and routes the
 * sinks' log lines through this logger. Returns -1 when the variable holds
 * something else (the level stays info).
 */
int log_init_from_env(void);
const char *log_level_name(log_level_t level);
/* Writes one line; fields end with LOG_FT_END. Thread-safe (one write(2)). */
void log_write(log_level_t level, const char *msg, const log_field_t *fields);

#endif /* SB_LOG_H */
