/*
 * sinks: where lifecycle events go.
 *
 * A sink type is one struct of function pointers (sink_type_t), shaped
 * like a Fluent Bit output plugin: init(), submit(), flush() with a
 * deadline, exit(), and a few optional callbacks. The core makes an
 * instance per configured sink, hands it encoded events with a ticket
 * each, and drives it from the main loop thread: a sink watches its
 * sockets and arms its timers on the bridge's event loop (sink_loop_t), or,
 * if it does not, is served by the core calling flush() with a deadline
 * already past now and then. The sink resolves its tickets (see
 * sink_ticket_t for who resolves what at exit) with 0 when the event is
 * durably accepted (Kafka: a successful delivery report with acks=all) or
 * an error. The core commits a source's snapshot only when all tickets of
 * its cycle resolved with 0.
 *
 * Sinks flagged SINK_F_OUTBOX (webhooks) are not called during the cycle:
 * their events are written to a durable outbox in Redis in the same
 * transaction as the snapshot delta, and the core's outbox worker later
 * submits them one attempt at a time, retrying on the sink's
 * retry_schedule_s and moving what exhausts it to the dead-letter store.
 *
 * A sink type declares its keys in an option table (sink_option_t): the core
 * validates a sink's object against it and hands init() typed values. The
 * configuration helpers below (sink_conf_*) remain for checks a table
 * cannot express (an option's check(), nested objects).
 *
 * This header is installed: external sink modules are written against it
 * (see sink_module_t at the end).
 */
#ifndef SB_SINK_H
#define SB_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cjson/cJSON.h>

typedef struct sink_errors sink_errors_t;

/* ---- results ---- */

/*
 * The ABI of this header. A module records the version it was built
 * against in sink_module_t; the bridge refuses any other. Bump it on every
 * change to a struct or a signature below.
 */
#define SINK_ABI_VERSION 4

typedef enum sink_result {
    SINK_OK = 0,
    SINK_ERR_RETRY,     /* not delivered; delivered again later (next cycle or retry) */
    SINK_ERR_FATAL,     /* the sink cannot go on (e.g. Kafka fatal error) */
    SINK_ERR_PERMANENT, /* this event can never be delivered here: it goes to the dead letters */
    SINK_ERR_GONE,      /* the endpoint asked to be disabled (HTTP 410); outbox sinks only */
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
 * at most once per submitted event, on the main loop thread (inside
 * submit(), one of its loop callbacks, or flush()), and must not touch it
 * afterwards. Who resolves what:
 *  - until exit(), the sink resolves every ticket it took, exactly once;
 *  - in exit(), a sink that is not SINK_F_OUTBOX resolves what is left
 *    (Kafka purges its queue, redis_stream and file give theirs back as
 *    RETRY): the core's tickets never dangle, and a cycle whose events
 *    were not acknowledged is not committed;
 *  - in exit(), an outbox sink (the webhook) abandons its attempts in
 *    flight unresolved, on purpose: their events are still claimed in the
 *    outbox and are delivered again once the claim expires, instead of
 *    being counted as a failed attempt that never failed. The outbox
 *    worker, which owns those tickets, frees them after exit()
 *    (outbox_free()); the sink must not call them from exit().
 */
typedef struct sink_ticket sink_ticket_t;
struct sink_ticket {
    void (*done)(sink_ticket_t *ticket, sink_result_t result, const char *errmsg);
    void *opaque;
    /*
     * The core sets it to -1. A sink resolving with SINK_ERR_RETRY may set
     * it first to the delay the endpoint asked for (Retry-After, seconds):
     * the next attempt is not made earlier.
     */
    double retry_after_s;
};

static inline void sink_ticket_done(sink_ticket_t *ticket, sink_result_t result, const char *errmsg)
{
    ticket->done(ticket, result, errmsg);
}

/* ---- the event loop ---- */

/*
 * The bridge's one event loop, as a sink sees it: file descriptors to
 * watch and timers to arm, every callback on the main loop thread. A sink
 * that uses it (SINK_F_LOOP) registers its sockets and deadlines in
 * init() and is never driven by the core's flush() calls between
 * deliveries; the loop sleeps until one of them is due.
 * The table stays valid for the instance's whole life (unlike the strings
 * of sink_host_t); its members are called with loop as first argument.
 */
#define SINK_IO_READ 0x1u
#define SINK_IO_WRITE 0x2u

typedef struct sink_watch sink_watch_t;
typedef struct sink_timer sink_timer_t;

/* Main loop thread. events: the SINK_IO_* that are ready. */
typedef void (*sink_io_fn)(void *opaque, int fd, unsigned events);
/* Main loop thread. */
typedef void (*sink_timer_fn)(void *opaque);

typedef struct sink_loop {
    void *loop;
    /* A watch of fd, watching nothing until watch_set(); NULL when out of memory. */
    sink_watch_t *(*watch_new)(void *loop, int fd, sink_io_fn fn, void *opaque);
    /* Watches for events (SINK_IO_*; 0: none) until changed. 0 or -1. */
    int (*watch_set)(sink_watch_t *w, unsigned events);
    /* Stops and frees the watch (before the fd is closed). Accepts NULL. */
    void (*watch_free)(sink_watch_t *w);
    /* A disarmed timer; NULL when out of memory. */
    sink_timer_t *(*timer_new)(void *loop, sink_timer_fn fn, void *opaque);
    /* Fires once after_s seconds from now (again: re-armed); < 0 disarms it. */
    void (*timer_arm)(sink_timer_t *t, double after_s);
    /* Disarms and frees the timer. Accepts NULL. */
    void (*timer_free)(sink_timer_t *t);
    /*
     * Serves the loop until something happened or timeout_ms passed, for a
     * flush() that must wait; never from inside a loop callback (the core
     * calls flush() and exit() outside them).
     */
    void (*run)(void *loop, int timeout_ms);
} sink_loop_t;

/* ---- the sink interface ---- */

/* What the bridge tells a sink instance about its surroundings. */
typedef struct sink_host {
    const char *name;         /* the sink's configured name */
    const char *redis_url;    /* the bridge's redis.url (for sinks that write to Redis) */
    const char *redis_prefix; /* the bridge's redis.prefix */
    /*
     * The event loop, valid until exit(); NULL when the caller drives the
     * instance with flush() itself (tests, tools, probe()).
     */
    const sink_loop_t *loop;
} sink_host_t;

/* ---- options ---- */

/*
 * A sink type declares its configuration keys in a table of sink_option_t,
 * ended by an entry whose key is NULL. The core validates a sink's object
 * against it (the JSON path of every problem, unknown keys refused with the
 * nearest known key suggested), fills in the defaults, and hands init() a
 * sink_config_t holding one typed value per option. The same table prints
 * the documentation of `session-bridge sinks`. The common keys name, type,
 * events, sources (and a module's path) are the core's and belong in no
 * table.
 */
typedef enum sink_opt_type {
    SINK_OPT_STRING = 0, /* a non-empty string */
    SINK_OPT_INT,        /* a whole number */
    SINK_OPT_NUMBER,     /* any number (fractions allowed) */
    SINK_OPT_BOOL,       /* true or false */
    SINK_OPT_ENUM,       /* one of choices */
    SINK_OPT_OBJECT,     /* a JSON object, checked by the option's check() */
    SINK_OPT_ARRAY,      /* a list of elem */
    SINK_OPT_SECRET,     /* a string never quoted in a message or a log line */
} sink_opt_type_t;

/* sink_option_t.flags */
#define SINK_OPT_REQUIRED 0x1u /* no default: the key must be set (or one of its group) */
/* Strings that go into a header, a URL or a signed text: no control characters. */
#define SINK_OPT_NO_CONTROL 0x2u

typedef struct sink_config sink_config_t;

/* A numeric constant as the text of a default: .def = SINK_STR(MY_DEFAULT). */
#define SINK_STR_(x) #x
#define SINK_STR(x) SINK_STR_(x)

/*
 * An option's further check of a value that passed its type and bounds:
 * appends problems at path (the option's JSON path) to errs. Connects to
 * nothing. Main thread (configuration loading).
 */
typedef void (*sink_opt_check_fn)(const cJSON *value, const char *path, sink_errors_t *errs);

typedef struct sink_option {
    const char *key;
    sink_opt_type_t type;
    unsigned flags; /* SINK_OPT_* */
    /* The default as JSON text ("10", "\"interval\"", "[0, 5]"); NULL: none. */
    const char *def;
    /*
     * Bounds, both inclusive; both 0: none. INT, NUMBER: the value;
     * STRING, SECRET: the length in bytes; ARRAY: the number of elements.
     */
    double min, max;
    const char *const *choices; /* ENUM: the accepted strings, NULL-terminated */
    /* ARRAY: the elements' type (STRING, INT, NUMBER, SECRET) and bounds, as above. */
    sink_opt_type_t elem;
    double elem_min, elem_max;
    /*
     * Options sharing a group are alternatives: at most one may be set,
     * and when they are SINK_OPT_REQUIRED, exactly one.
     */
    const char *group;
    sink_opt_check_fn check; /* optional */
    const char *desc;        /* one sentence, for `session-bridge sinks` */
} sink_option_t;

/*
 * An option's value in a sink_config_t: the configured one, else the
 * default. Everything points into the configuration and is valid while it
 * is (for init() and probe(): during the call).
 */
typedef struct sink_value {
    bool set;          /* the key was in the sink's object */
    bool present;      /* set, or a default applies */
    const char *s;     /* STRING, SECRET, ENUM: the text */
    long long i;       /* INT; BOOL: 0 or 1; ENUM: the index in choices */
    double d;          /* NUMBER, INT */
    const cJSON *json; /* the JSON value (OBJECT, ARRAY, and every other type) */
    /* ARRAY: count elements, numbers[] for INT and NUMBER, strings[] else */
    size_t count;
    const double *numbers;
    const char *const *strings;
} sink_value_t;

/* The value of the option key; NULL when key is not in the type's table. */
const sink_value_t *sink_config_get(const sink_config_t *cfg, const char *key);

/* sink_type_t.flags */
#define SINK_F_OUTBOX 0x1u /* delivered through the durable outbox (see above) */
/*
 * Given host->loop, the instance drives itself on it. Without the flag (or
 * without a loop) the core calls flush() with a deadline already past every
 * few milliseconds while the instance holds unresolved tickets: a fallback
 * for modules that do not use the loop, which costs them those wake-ups.
 */
#define SINK_F_LOOP 0x2u

/*
 * The time base of every deadline below: CLOCK_MONOTONIC, in milliseconds
 * (immune to clock steps). A deadline is an absolute time on it.
 */
static inline int64_t sink_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline budget_ms from now. */
static inline int64_t sink_deadline_in(int64_t budget_ms)
{
    return sink_now_ms() + (budget_ms > 0 ? budget_ms : 0);
}

/*
 * Milliseconds left until deadline_ms, clamped to [0, INT32_MAX]: the
 * timeout to hand a library call that must keep the deadline.
 */
static inline int sink_ms_left(int64_t deadline_ms)
{
    int64_t left = deadline_ms - sink_now_ms();
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

typedef struct sink_type {
    const char *name; /* the config "type" */
    unsigned flags;   /* SINK_F_* */
    const char *desc; /* one line, for `session-bridge sinks` */
    /* The sink's own keys, ended by a {0} entry (see sink_option_t). */
    const sink_option_t *options;

    /* ---- required ---- */

    /*
     * Makes an instance from a configuration that passed the table and
     * check(); NULL with a reason in err. May start background connections
     * but must not block on them. Main thread. The returned context
     * belongs to the caller, who releases it with exit(). cfg, host and
     * their strings are valid during the call only: the instance copies
     * what it keeps.
     */
    void *(*init)(const sink_config_t *cfg, const sink_host_t *host, char *err, size_t errlen);
    /*
     * Hands over one event. Main loop thread. The sink copies what it
     * needs from ev before returning. Returns SINK_OK when the ticket is
     * now the sink's responsibility (resolved later or already), or an
     * error when it did not take it (the ticket is then untouched and the
     * caller resolves it).
     */
    sink_result_t (*submit)(void *ctx, const sink_event_t *ev, sink_ticket_t *ticket);
    /*
     * Serves completions until every ticket the sink holds resolved or
     * deadline_ms (sink_now_ms()'s clock) came, and returns how many are
     * still unresolved: 0 means everything handed over was resolved. A
     * deadline already past serves what is ready without waiting (the
     * core's fallback drive of a sink off the loop, and a cheap way for a
     * tool to ask how many are left). A sink keeps the deadline: every
     * wait inside is bounded by what is left of it. Main loop thread,
     * never from inside a loop callback.
     */
    size_t (*flush)(void *ctx, int64_t deadline_ms);
    /*
     * Flushes within a bound of its own (short: the core flushed with its
     * shutdown grace first), resolves or abandons what is left as
     * sink_ticket_t says, and frees everything. Accepts NULL. Main thread,
     * outside loop callbacks; the loop is still valid during the call.
     */
    void (*exit)(void *ctx);

    /* ---- optional ---- */

    /*
     * Checks that span options (a value the table cannot judge alone), on
     * a configuration that passed the table. path is the sink's JSON path
     * ("sinks[1]") for messages. Appends problems to errs. Connects to
     * nothing. Main thread (configuration loading). NULL: none.
     */
    void (*check)(const sink_config_t *cfg, const char *path, sink_errors_t *errs);
    /*
     * 1 when the sink can take events now, 0 otherwise (for /readyz and
     * the sink_ready gauge). Main loop thread, every few seconds; it may
     * probe (redis_stream connects while disconnected). NULL: always
     * ready. Not merged with capacity(): readiness is about the endpoint
     * (a broker up, a file writable) and asked rarely, capacity about the
     * sink's own slots and asked before every outbox claim, and no sink
     * needs both.
     */
    int (*ready)(void *ctx);
    /*
     * How many more events the sink would start delivering right now
     * (e.g. max_in_flight minus the requests in flight); the outbox
     * worker claims no more than this. Main loop thread; cheap, no I/O.
     * NULL: unbounded.
     */
    size_t (*capacity)(void *ctx);
    /*
     * `session-bridge check --connect`: reaches the sink's endpoint
     * without delivering anything (broker metadata, a TLS handshake, a
     * PING, a directory's permissions) and writes one line for people
     * into msg ("3 brokers, topic sessions: 6 partitions"; the reason when
     * it fails), never a secret. Returns 0 when the endpoint is usable,
     * -1 otherwise. Works from the configuration alone (no instance: init()
     * may write, e.g. create a file), host->loop is NULL, and every wait
     * ends by deadline_ms. Called on a thread of its own, at the same
     * time as other sinks' probes: it shares nothing with them. NULL: the
     * type cannot be probed (reported as skipped).
     */
    int (*probe)(const sink_config_t *cfg, const sink_host_t *host, int64_t deadline_ms, char *msg,
                 size_t msglen);
} sink_type_t;

/* The optional ready() through its default: always ready. */
static inline int sink_ready(const sink_type_t *type, void *ctx)
{
    return type->ready ? type->ready(ctx) : 1;
}

/* The built-in sink types, NULL-terminated. */
extern const sink_type_t *const sink_builtin_types[];
/* Looks up a built-in type by name; NULL when unknown. */
const sink_type_t *sink_type_find(const char *name);

/*
 * Validates a sink's object against its type's table and check(): every
 * problem goes to errs with its JSON path (path "": the bare key). Keys
 * in core_keys (NULL-terminated; NULL: none) are the core's and skipped.
 * Returns the typed configuration (the caller's, released with
 * sink_config_free(); it holds a copy of obj) or NULL when invalid.
 */
sink_config_t *sink_config_parse(const sink_type_t *type, const cJSON *obj, const char *path,
                                 const char *const *core_keys, sink_errors_t *errs);
/* Accepts NULL. */
void sink_config_free(sink_config_t *cfg);
/* The sink's object as configured (a copy, owned by cfg). */
const cJSON *sink_config_json(const sink_config_t *cfg);

/*
 * Shortcuts for tools and tests: sink_validate() is sink_config_parse()
 * with the common keys skipped, 0 or -1; sink_init() parses conf
 * (messages without a path prefix, joined into err) and makes the
 * instance with type->init(); sink_probe() parses conf the same way and
 * calls type->probe() (-1 with a message when the type has none).
 */
int sink_validate(const sink_type_t *type, const cJSON *conf, const char *path,
                  sink_errors_t *errs);
void *sink_init(const sink_type_t *type, const cJSON *conf, const sink_host_t *host, char *err,
                size_t errlen);
int sink_probe(const sink_type_t *type, const cJSON *conf, const sink_host_t *host,
               int64_t deadline_ms, char *msg, size_t msglen);

/* The keys every sink has, which the core checks: name, type, events, sources. */
extern const char *const sink_common_keys[];

/* Prints the type's options (type, default, bounds, description) to out. */
void sink_type_doc(const sink_type_t *type, FILE *out);

/* The built-in types themselves, sink_<name>_type, one per line of sink_list.h. */
#define SINK(name) extern const sink_type_t sink_##name##_type;
#include "sink_list.h"
#undef SINK

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

/* Joins the collected messages with "; " into err (for init()'s reason). */
void sink_errors_join(const sink_errors_t *errs, char *err, size_t errlen);

/* Appends "<path>: <printf message>" ("<message>" when path is NULL or empty). */
void sink_errors_add(sink_errors_t *errs, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Reports every key of obj that is not in allowed (NULL-terminated) as
 * "<path>.<key>: unknown key", followed by ' (did you mean "<known>"?)'
 * when a key of allowed is a likely typo away (at most two edits, one for
 * keys of four letters or less). The one check of unknown keys: sources,
 * providers, the top level and the sinks' option tables all go through it.
 * Returns the number of unknown keys.
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
int sink_conf_int(const cJSON *obj, const char *path, const char *key, bool required, long long def,
                  long long min, long long max, long long *out, sink_errors_t *errs);
int sink_conf_bool(const cJSON *obj, const char *path, const char *key, bool def, bool *out,
                   sink_errors_t *errs);

/*
 * As sink_conf_string(), for a value that goes into an HTTP header, a URL or
 * a signed string: one holding a control character (a CR or LF would end
 * the header and start another) is refused with "<path>.<key>: must not
 * contain control characters", the value never quoted.
 */
int sink_conf_request_string(const cJSON *obj, const char *path, const char *key, bool required,
                             const char *def, const char **out, sink_errors_t *errs);
/* True when s holds a control character (below 0x20, or DEL). */
bool sink_has_control(const char *s);

/*
 * The one checked conversion of a JSON number to an integer: 0 with *out set
 * when d is a whole number within [min, max]; -1 (and *out untouched) for a
 * fraction, anything out of range, an infinity (cJSON reads 1e999 as one) or
 * NaN. Converting first and checking after is undefined behaviour in C for
 * values beyond long long (1e49), and cJSON's own valueint is a saturated
 * guess for them: every double from JSON goes through here instead.
 */
int sink_exact_integer(double d, long long min, long long max, long long *out);

/*
 * The outbox's own options, which every SINK_F_OUTBOX type has after its
 * table's (so no sink declares them, and the outbox reads no other
 * module's keys): retry_schedule_s, the delay before each attempt (at most
 * SINK_SCHEDULE_MAX of them, each 0..SINK_SCHEDULE_DELAY_MAX s), and
 * timeout_s, the longest one attempt may take (the sink bounds its request
 * by it, the worker its claim). Ended by a {0} entry.
 */
extern const sink_option_t sink_outbox_options[];
#define SINK_SCHEDULE_MAX 32
#define SINK_SCHEDULE_DELAY_MAX (7.0 * 86400.0)
#define SINK_OUTBOX_TIMEOUT_DEFAULT_S 10
/* Past a minute an endpoint is down rather than slow; claims are held twice this long. */
#define SINK_OUTBOX_TIMEOUT_MAX_S 60
/*
 * Expands "{source}" and "{type}" (the short kind: started, completed,
 * cancelled) in a name template such as a topic or a stream name. Returns
 * the length written, or -1 when the result does not fit size.
 */
int sink_expand_name(char *buf, size_t size, const char *tmpl, const char *source,
                     const char *kind);

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

/* ---- external sink modules ---- */

/*
 * A sink module is a shared object named in the config as
 * { "type": "module", "path": "/path/x.so", ...its own keys }. It exports one
 * object of this type under the name SINK_MODULE_SYMBOL:
 *
 *     const sink_module_t session_bridge_sink_module = {
 *         .abi_version = SINK_ABI_VERSION, .type = &my_sink_type };
 *
 * Its option table lists its own keys only: name, type, events, sources and
 * path are the core's. It may call the sink_config_get(), sink_conf_* and
 * sink_log helpers above: the bridge exports them.
 */
#define SINK_MODULE_SYMBOL "session_bridge_sink_module"

typedef struct sink_module {
    uint32_t abi_version; /* SINK_ABI_VERSION the module was built against */
    const sink_type_t *type;
} sink_module_t;

#endif /* SB_SINK_H */
