/*
 * sinks: where lifecycle events go.
 *
 * A sink type is one struct of function pointers (sink_type_t). The core
 * creates an instance per configured sink, hands it encoded events with a
 * ticket each, and drives it from the main loop thread through poll(). The
 * sink resolves every ticket exactly once, with 0 when the event is durably
 * accepted (Kafka: a successful delivery report with acks=all) or an error.
 * The core commits a source's snapshot only when all tickets of its cycle
 * resolved with 0.
 *
 * The configuration helpers below (sink_conf_*) are part of this API because
 * every sink validates its own keys with them, and so does the core.
 */
#ifndef SB_SINK_H
#define SB_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef struct sink_errors sink_errors_t;

/* ---- results ---- */

typedef enum sink_result {
    SINK_OK = 0,
    SINK_ERR_RETRY,  /* not delivered; the next cycle delivers it again */
    SINK_ERR_FATAL,  /* the sink cannot go on (e.g. Kafka fatal error) */
} sink_result_t;

/* ---- the event as sinks see it ---- */

typedef struct sink_event {
    const char *id;         /* 32 hex digits, deterministic */
    const char *type;       /* "session.started" */
    const char *kind;       /* "started" | "completed" | "cancelled" */
    const char *source;     /* source name */
    const char *session_id; /* provider session id */
    const char *key;        /* "<source>/<session_id>" */
    const char *json;       /* the CloudEvent, structured mode */
    size_t json_len;
} sink_event_t;

/*
 * A delivery promise. The core owns it; the sink calls sink_ticket_done()
 * exactly once per submitted event, on the main loop thread (inside submit()
 * or a later poll()/flush()), and must not touch it afterwards.
 */
typedef struct sink_ticket sink_ticket_t;
struct sink_ticket {
    void (*done)(sink_ticket_t *ticket, sink_result_t result, const char *errmsg);
    void *opaque;
};

static inline void sink_ticket_done(sink_ticket_t *ticket, sink_result_t result,
                                    const char *errmsg)
{
    ticket->done(ticket, result, errmsg);
}

/* ---- the sink interface ---- */

typedef struct sink_type {
    const char *name; /* the config "type" */
    /*
     * Validates the sink's own keys (the common keys name, type, events,
     * sources are checked by the core and must be ignored here). conf is the
     * sink's JSON object, path its JSON path ("sinks[1]") for messages.
     * Appends every problem to errs. Returns 0 when valid, -1 otherwise.
     * Connects to nothing.
     */
    int (*validate)(const cJSON *conf, const char *path, sink_errors_t *errs);
    /*
     * Creates an instance; NULL with a reason in err. May start background
     * connections but must not block on them. The returned context belongs to
     * the caller, who releases it with destroy().
     */
    void *(*create)(const cJSON *conf, const char *name, char *err, size_t errlen);
    /*
     * Hands over one event. The sink copies what it needs from ev before
     * returning. Returns SINK_OK when the ticket is now the sink's
     * responsibility (resolved later or already), or an error when it did
     * not take it (the ticket is then untouched and the caller resolves it).
     */
    sink_result_t (*submit)(void *ctx, const sink_event_t *ev, sink_ticket_t *ticket);
    /* Serves completions, waiting at most timeout_ms. Main loop thread. */
    void (*poll)(void *ctx, int timeout_ms);
    /* Events handed over and not yet resolved. */
    size_t (*pending)(void *ctx);
    /* 1 when the sink can take events now, 0 otherwise (for /readyz). */
    int (*ready)(void *ctx);
    /*
     * Waits up to timeout_ms for every pending ticket to resolve. Returns 0
     * when none is left pending, -1 otherwise.
     */
    int (*flush)(void *ctx, int timeout_ms);
    /* Flushes within a bound and frees everything. Accepts NULL. */
    void (*destroy)(void *ctx);
} sink_type_t;

/* The built-in sink types, NULL-terminated. */
extern const sink_type_t *const sink_builtin_types[];
/* Looks up a built-in type by name; NULL when unknown. */
const sink_type_t *sink_type_find(const char *name);

extern const sink_type_t sink_kafka_type;
extern const sink_type_t sink_stdout_type;

/* ---- configuration helpers ---- */

/* Bound on the collected messages; past it, further ones are counted only. */
#define SINK_ERRORS_MAX 64
#define SINK_ERROR_LEN 512

/* Accumulates configuration problems so that `check` can list them all. */
struct sink_errors {
    char msg[SINK_ERRORS_MAX][SINK_ERROR_LEN];
    size_t count; /* may exceed SINK_ERRORS_MAX */
};

/* Longest JSON path the helpers build; longer ones are truncated. */
#define SINK_PATH_MAX 256

/*
 * JSON path joiners for messages. sink_conf_path() writes "<path>.<key>"
 * (just "<key>" when path is NULL or empty), sink_conf_path_index() writes
 * "<path>[<index>]". Both write into the caller's buf (truncating to size)
 * and return it, so that they can be used as arguments.
 */
const char *sink_conf_path(char *buf, size_t size, const char *path, const char *key);
const char *sink_conf_path_index(char *buf, size_t size, const char *path, size_t index);

/* Appends "<path>: <printf message>" ("<message>" when path is NULL or empty). */
void sink_errors_add(sink_errors_t *errs, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Reports every key of obj that is not in allowed (NULL-terminated) as
 * "<path>.<key>: unknown key". Returns the number of unknown keys.
 */
int sink_conf_check_keys(const cJSON *obj, const char *path, const char *const *allowed,
                         sink_errors_t *errs);

/*
 * Typed getters. Each looks up key in obj (absent: *out = def, returns 0, or
 * when required an error "<path>.<key>: required, expected ...").
 * Wrong types and out-of-range values are reported to errs and return -1.
 * String results point into the cJSON tree (no copy).
 */
int sink_conf_string(const cJSON *obj, const char *path, const char *key, bool required,
                     const char *def, const char **out, sink_errors_t *errs);
int sink_conf_int(const cJSON *obj, const char *path, const char *key, bool required,
                  long long def, long long min, long long max, long long *out,
                  sink_errors_t *errs);
int sink_conf_bool(const cJSON *obj, const char *path, const char *key, bool def, bool *out,
                   sink_errors_t *errs);

/* ---- logging ---- */

/*
 * Sinks log through the core's logger so that every line has the same JSON
 * shape and a sink= field. Never pass secrets (passwords, sasl.*, tokens).
 */
typedef enum sink_log_level {
    SINK_LOG_ERROR = 0,
    SINK_LOG_WARN,
    SINK_LOG_INFO,
    SINK_LOG_DEBUG,
} sink_log_level_t;

/* Called on whichever thread logs; must be thread-safe. */
typedef void (*sink_log_fn)(sink_log_level_t level, const char *sink, const char *msg,
                            void *opaque);

/* Installs the logger (the default writes plain lines to stderr). */
void sink_set_logger(sink_log_fn fn, sink_log_level_t max_level, void *opaque);
/* Formats and logs when level is enabled; arguments are not formatted otherwise. */
void sink_log(sink_log_level_t level, const char *sink, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* SB_SINK_H */
