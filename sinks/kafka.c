/*
 * sinks/kafka: publishes events to Kafka with librdkafka.
 *
 * One idempotent producer (acks=all) per sink instance. Every callback the
 * producer makes (delivery reports, errors, and librdkafka's own log lines,
 * whose queue is forwarded to the main queue) runs inside rd_kafka_poll() or
 * rd_kafka_flush() on the main loop thread, so the context needs no lock.
 * On the bridge's loop, librdkafka writes a byte to a pipe the loop watches
 * when the main queue gets an event (rd_kafka_queue_io_event_enable), and
 * the watch serves the queue with rd_kafka_poll(rk, 0): a delivery report
 * is handled as it arrives, and nothing wakes up while nothing happens.
 * The core calls ready() on that thread too, so nothing here is atomic.
 *
 * A ticket travels as the message opaque and is resolved exactly once: by
 * the delivery report, or by the purge in exit() for what never got one.
 * The sink counts the messages between a successful produce and their report
 * itself (pending), because rd_kafka_outq_len() also counts requests and
 * queued callbacks.
 */
#include "clock.h"
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* Kafka's limit on topic names. */
#define KAFKA_TOPIC_MAX 249
/* Longest source name the core accepts ([a-z0-9_-]{1,64}); {source} counts as this. */
#define KAFKA_SOURCE_MAX 64
/* Longest event kind ("completed", "cancelled"); {type} counts as this. */
#define KAFKA_KIND_MAX 9
/*
 * Topic handles kept open. With {source} in a name there is one per source
 * and kind; past the bound, handles are opened per message and dropped,
 * which is slower but correct. A linear scan is cheaper than the produce at
 * this size.
 */
#define KAFKA_TOPIC_CACHE_MAX 256
/*
 * QUEUE_FULL means queue.buffering.max.* is reached: serve delivery reports
 * for up to KAFKA_QUEUE_FULL_RETRIES x KAFKA_QUEUE_FULL_POLL_MS (2 s), then
 * give the event back so that the main loop is not held longer.
 */
#define KAFKA_QUEUE_FULL_POLL_MS 100
#define KAFKA_QUEUE_FULL_RETRIES 20
/* librdkafka's default (300 s) would hold a source's commit for 5 minutes. */
#define KAFKA_DEFAULT_MESSAGE_TIMEOUT_MS "30000"
/*
 * Key placement by default: Java's murmur2 (random for null keys, which we
 * never send), so that a session's key lands on the partition a Java or
 * Kafka Streams producer would choose and consumers co-partitioning on it
 * agree with us; librdkafka's own default hashes with CRC32.
 */
#define KAFKA_DEFAULT_PARTITIONER "murmur2_random"
/* Numeric properties written as integers up to this; beyond, as %.17g (exact below 2^53). */
#define KAFKA_PROPERTY_INT_MAX 1000000000000000LL
/*
 * exit(): grace time for in-flight deliveries before purging them. Short:
 * the core calls flush() with its own bound (the shutdown grace) first, and
 * a second long wait here would overrun that grace.
 */
#define KAFKA_DESTROY_FLUSH_MS 500
/* exit(): time to serve the delivery reports of purged messages. */
#define KAFKA_PURGE_SERVE_MS 500
/* While the brokers are down and the sink idle: how often flush() asks for metadata. */
#define KAFKA_PROBE_INTERVAL_MS 5000
/* ... and for how long at most (also bounded by flush()'s deadline). */
#define KAFKA_PROBE_TIMEOUT_MS 1000
/* librdkafka property values and error strings we handle. */
#define KAFKA_STR_MAX 512

#define KAFKA_CLIENT_ID "session-bridge"
#define KAFKA_CE_SOURCE_PREFIX "session-bridge/"
#define KAFKA_CONTENT_TYPE "application/cloudevents+json"

enum { KIND_STARTED, KIND_COMPLETED, KIND_CANCELLED, KIND_COUNT };

static const char *const kind_names[KIND_COUNT + 1] = {"started", "completed", "cancelled", NULL};
static const char *const default_topics[KIND_COUNT] = {"sessions.started", "sessions.completed",
                                                       "sessions.cancelled"};

typedef struct kafka_topic {
    char *name;
    rd_kafka_topic_t *rkt;
} kafka_topic_t;

/*
 * Where the last event of one kind from one source went. A cycle hands a
 * source's events over in a row: with this, the topic template is expanded
 * and the cache searched once per source and kind, not once per event.
 */
typedef struct kafka_route {
    char source[KAFKA_SOURCE_MAX + 1]; /* "" while unused */
    rd_kafka_topic_t *rkt;             /* a cached handle, never an owned one */
    char ce_source[sizeof(KAFKA_CE_SOURCE_PREFIX) + KAFKA_SOURCE_MAX];
} kafka_route_t;

typedef struct kafka_sink {
    char *name;
    rd_kafka_t *rk;
    char *topics[KIND_COUNT]; /* templates */
    kafka_topic_t cache[KAFKA_TOPIC_CACHE_MAX];
    size_t ncache;
    kafka_route_t last[KIND_COUNT];
    size_t pending; /* produced, no delivery report yet */
    int64_t last_probe_ms;
    int seen_cluster; /* metadata arrived or a delivery succeeded */
    int down;         /* all brokers down or a delivery timed out */
    /* On the bridge's loop: the main queue's wake-up pipe and its watch. */
    const sink_loop_t *loop;
    int wake[2];
    sink_watch_t *watch;
} kafka_sink_t;

/* ---- configuration ---- */

/* Property names whose values must never appear in a message. */
static bool secret_property(const char *name)
{
    static const char *const words[] = {"password", "secret", "sasl", "ssl.key", NULL};
    char lower[SINK_PATH_MAX];
    size_t i, n = strlen(name);

    if (n >= sizeof(lower))
        return true; /* too long to tell: err on the safe side */
    for (i = 0; i <= n; i++)
        lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    for (i = 0; words[i]; i++) {
        if (strstr(lower, words[i]))
            return true;
    }
    return false;
}

static void trim_right(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/*
 * librdkafka quotes values in its messages ("Invalid value \"x\" for ...")
 * and prints numbers bare. For a secret property, every quoted token but the
 * property's name becomes (redacted), and if the value still shows anywhere
 * the whole message is replaced.
 */
static void redact(char *msg, size_t size, const char *name, const char *value)
{
    char out[KAFKA_STR_MAX];
    size_t o = 0;
    const char *p = msg;

    while (*p && o < sizeof(out) - 1) {
        const char *end;
        size_t len;

        if (*p != '"' || !(end = strchr(p + 1, '"'))) {
            out[o++] = *p++;
            continue;
        }
        len = (size_t)(end - p - 1);
        if (len == strlen(name) && strncmp(p + 1, name, len) == 0)
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\"%s\"", name);
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\"(redacted)\"");
        if (o >= sizeof(out))
            o = sizeof(out) - 1;
        p = end + 1;
    }
    out[o] = '\0';
    if (*value && strstr(out, value))
        snprintf(out, sizeof(out), "invalid value (redacted)");
    snprintf(msg, size, "%s", out);
}

/* Sets name=value; 0 or -1 with librdkafka's message (secrets redacted) in errs. */
static int conf_set(rd_kafka_conf_t *conf, const char *path, const char *name, const char *value,
                    sink_errors_t *errs)
{
    char errstr[KAFKA_STR_MAX];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK)
        return 0;
    trim_right(errstr);
    if (secret_property(name))
        redact(errstr, sizeof(errstr), name, value);
    sink_errors_add(errs, path, "%s", errstr);
    return -1;
}

/* Replaces every occurrence of needle in msg with "(redacted)". */
static void replace_all(char *msg, size_t size, const char *needle)
{
    char out[KAFKA_STR_MAX];
    size_t o = 0, n = strlen(needle);
    const char *p = msg, *hit;

    if (n == 0)
        return;
    while ((hit = strstr(p, needle)) && o < sizeof(out)) {
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s(redacted)", (int)(hit - p), p);
        p = hit + n;
    }
    if (o < sizeof(out))
        snprintf(out + o, sizeof(out) - o, "%s", p);
    snprintf(msg, size, "%s", out);
}

static const char *property_value(const cJSON *item, char *buf, size_t size);

/*
 * For librdkafka messages that are not about one property (rd_kafka_new()'s
 * checks across properties): the values of secret properties are cut out,
 * and so is whatever follows a secret property's name, where librdkafka may
 * quote part of its value.
 */
static void redact_text(char *msg, size_t size, const cJSON *props)
{
    const cJSON *item;

    cJSON_ArrayForEach(item, props)
    {
        char num[64], *hit;
        const char *value;

        if (!item->string || !secret_property(item->string))
            continue;
        if ((value = property_value(item, num, sizeof(num))))
            replace_all(msg, size, value);
        if ((hit = strstr(msg, item->string))) {
            size_t at = (size_t)(hit - msg) + strlen(item->string);

            snprintf(msg + at, size - at, " (rest redacted)");
        }
    }
}

/* Reads a property back, so that aliases ("request.required.acks") are seen too. */
static const char *conf_get(rd_kafka_conf_t *conf, const char *name, char *buf, size_t size)
{
    if (rd_kafka_conf_get(conf, name, buf, &size) != RD_KAFKA_CONF_OK)
        return "";
    return buf;
}

/* What the contract (§7) needs of the producer; set before and after the user's properties. */
static void force_guarantees(rd_kafka_conf_t *conf, sink_errors_t *errs)
{
    conf_set(conf, "", "enable.idempotence", "true", errs);
    conf_set(conf, "", "acks", "all", errs);
    /* Log lines are served by rd_kafka_poll() on the main thread. */
    conf_set(conf, "", "log.queue", "true", errs);
}

/* The JSON value of a property as librdkafka wants it: a string. */
static const char *property_value(const cJSON *item, char *buf, size_t size)
{
    if (cJSON_IsString(item))
        return item->valuestring;
    if (cJSON_IsBool(item))
        return cJSON_IsTrue(item) ? "true" : "false";
    if (cJSON_IsNumber(item)) {
        long long ll;

        /* Whole numbers as integers (librdkafka refuses "1e+06" for an int property). */
        if (sink_exact_integer(item->valuedouble, -KAFKA_PROPERTY_INT_MAX, KAFKA_PROPERTY_INT_MAX,
                               &ll) == 0)
            snprintf(buf, size, "%lld", ll);
        else
            snprintf(buf, size, "%.17g", item->valuedouble);
        return buf;
    }
    return NULL;
}

static void apply_property(rd_kafka_conf_t *conf, const char *ppath, const cJSON *item,
                           sink_errors_t *errs)
{
    const char *name = item->string;
    char path[SINK_PATH_MAX];
    char num[64], got[KAFKA_STR_MAX];
    const char *value;

    sink_conf_path(path, sizeof(path), ppath, name);
    value = property_value(item, num, sizeof(num));
    if (!value) {
        sink_errors_add(errs, path, "expected a string, number or boolean");
        return;
    }
    if (strncmp(name, "transactional.", strlen("transactional.")) == 0) {
        sink_errors_add(errs, path,
                        "refused: the sink does not use transactions; events are "
                        "acknowledged one by one by the idempotent producer");
        return;
    }
    if (strcmp(name, "bootstrap.servers") == 0 || strcmp(name, "metadata.broker.list") == 0) {
        sink_errors_add(errs, path, "set the sink's brokers key instead");
        return;
    }
    if (conf_set(conf, path, name, value, errs) != 0)
        return;
    if (strcmp(conf_get(conf, "enable.idempotence", got, sizeof(got)), "true") != 0) {
        sink_errors_add(errs, path,
                        "refused: enable.idempotence must stay true, or a retry may "
                        "duplicate or reorder a session's events");
        force_guarantees(conf, errs);
    }
    if (strcmp(conf_get(conf, "acks", got, sizeof(got)), "-1") != 0) {
        sink_errors_add(errs, path,
                        "refused: acks must stay all (-1); an event counts as delivered "
                        "only when every in-sync replica has it");
        force_guarantees(conf, errs);
    }
}

/*
 * A topic template: Kafka's topic characters plus the {source} and {type}
 * placeholders, short enough once expanded.
 */
static void check_topic(const char *tmpl, const char *path, sink_errors_t *errs)
{
    size_t len = 0;

    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "{source}", 8) == 0) {
            len += KAFKA_SOURCE_MAX;
            p += 8;
        } else if (strncmp(p, "{type}", 6) == 0) {
            len += KAFKA_KIND_MAX;
            p += 6;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-') {
            len++;
            p++;
        } else {
            sink_errors_add(errs, path,
                            "expected a Kafka topic name (letters, digits, '.', '_', '-') "
                            "with optional {source} and {type} placeholders");
            return;
        }
    }
    if (len > KAFKA_TOPIC_MAX)
        sink_errors_add(errs, path,
                        "too long: a topic name has at most %d characters, counting "
                        "{source} as %d",
                        KAFKA_TOPIC_MAX, KAFKA_SOURCE_MAX);
}

/*
 * Some checks span properties and run only in rd_kafka_new() (max.in.flight
 * with idempotence, linger.ms against message.timeout.ms, loading ssl.*
 * files, SASL support in this build). validate() runs them on an instance
 * without bootstrap servers, which knows no broker and so connects nowhere;
 * its log lines stay in its unforwarded log queue.
 */
static void trial_instance(const rd_kafka_conf_t *kconf, const char *ppath, const cJSON *props,
                           sink_errors_t *errs)
{
    rd_kafka_conf_t *dup = rd_kafka_conf_dup(kconf);
    char errstr[KAFKA_STR_MAX];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, dup, errstr, sizeof(errstr));

    if (rk) {
        rd_kafka_destroy(rk);
        return;
    }
    rd_kafka_conf_destroy(dup); /* not taken over on failure */
    trim_right(errstr);
    redact_text(errstr, sizeof(errstr), props);
    sink_errors_add(errs, ppath, "%s", errstr);
}

/*
 * The librdkafka configuration of properties (a JSON object, or NULL), the
 * caller's; NULL with the problems in errs, at ppath. rd_kafka_conf_set() is
 * the only judge of property names and values, so this is the check too.
 */
static rd_kafka_conf_t *build_conf(const cJSON *props, const char *ppath, sink_errors_t *errs)
{
    size_t before = errs->count;
    rd_kafka_conf_t *kconf = rd_kafka_conf_new();
    const cJSON *item;

    /* Defaults the user's properties may override. */
    conf_set(kconf, "", "client.id", KAFKA_CLIENT_ID, errs);
    conf_set(kconf, "", "message.timeout.ms", KAFKA_DEFAULT_MESSAGE_TIMEOUT_MS, errs);
    conf_set(kconf, "", "partitioner", KAFKA_DEFAULT_PARTITIONER, errs);
    force_guarantees(kconf, errs);
    cJSON_ArrayForEach(item, props)
    {
        apply_property(kconf, ppath, item, errs);
    }
    force_guarantees(kconf, errs);
    if (errs->count != before) {
        rd_kafka_conf_destroy(kconf);
        return NULL;
    }
    return kconf;
}

static void check_properties(const cJSON *value, const char *path, sink_errors_t *errs)
{
    rd_kafka_conf_t *kconf = build_conf(value, path, errs);

    if (kconf) {
        trial_instance(kconf, path, value, errs);
        rd_kafka_conf_destroy(kconf);
    }
}

static void check_topics(const cJSON *value, const char *path, sink_errors_t *errs)
{
    char kpath[SINK_PATH_MAX];
    const char *tmpl;

    sink_conf_check_keys(value, path, kind_names, errs);
    for (int k = 0; k < KIND_COUNT; k++) {
        if (sink_conf_string(value, path, kind_names[k], false, NULL, &tmpl, errs) == 0 && tmpl)
            check_topic(tmpl, sink_conf_path(kpath, sizeof(kpath), path, kind_names[k]), errs);
    }
}

static const sink_option_t kafka_options[] = {
    {.key = "brokers",
     .type = SINK_OPT_STRING,
     .flags = SINK_OPT_REQUIRED,
     .desc = "the bootstrap servers, host:port[,host:port...]"},
    {.key = "topics",
     .type = SINK_OPT_OBJECT,
     .def = "{\"started\": \"sessions.started\", \"completed\": \"sessions.completed\", "
            "\"cancelled\": \"sessions.cancelled\"}",
     .check = check_topics,
     .desc = "the topic of each event type (started, completed, cancelled; a missing one keeps "
             "its default); names may hold {source} and {type}"},
    {.key = "properties",
     .type = SINK_OPT_OBJECT,
     .def = "{}",
     .check = check_properties,
     .desc = "librdkafka producer properties, passed as they are (enable.idempotence and "
             "acks=all cannot be turned off)"},
    {0},
};

/* ---- callbacks (main loop thread, from rd_kafka_poll() / rd_kafka_flush()) ---- */

/*
 * Errors that no retry can cure for this message (it is too large or the
 * broker refuses its content): the event goes to the dead letters instead
 * of blocking its source forever.
 */
static bool permanent(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || err == RD_KAFKA_RESP_ERR_INVALID_MSG ||
           err == RD_KAFKA_RESP_ERR_INVALID_RECORD || err == RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    kafka_sink_t *ctx = opaque;
    sink_ticket_t *ticket = msg->_private;
    char fatal[KAFKA_STR_MAX];

    ctx->pending--;
    if (!ticket)
        return;
    if (!msg->err) {
        ctx->seen_cluster = 1;
        ctx->down = 0;
        sink_ticket_done(ticket, SINK_OK, NULL);
        return;
    }
    if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal))) {
        sink_ticket_done(ticket, SINK_ERR_FATAL, fatal);
        return;
    }
    if (permanent(msg->err)) {
        sink_log(SINK_LOG_ERROR, ctx->name, "event rejected by %s for good: %s",
                 rd_kafka_topic_name(msg->rkt), rd_kafka_err2str(msg->err));
        sink_ticket_done(ticket, SINK_ERR_PERMANENT, rd_kafka_err2str(msg->err));
        return;
    }
    if (msg->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)
        ctx->down = 1;
    sink_log(SINK_LOG_DEBUG, ctx->name, "delivery to %s failed: %s", rd_kafka_topic_name(msg->rkt),
             rd_kafka_err2str(msg->err));
    sink_ticket_done(ticket, SINK_ERR_RETRY, rd_kafka_err2str(msg->err));
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_sink_t *ctx = opaque;
    char fatal[KAFKA_STR_MAX];
    rd_kafka_resp_err_t orig;

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        sink_log(SINK_LOG_ERROR, ctx->name, "fatal producer error, the sink cannot go on: %s: %s",
                 rd_kafka_err2name(orig), fatal);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        ctx->down = 1;
    sink_log(SINK_LOG_WARN, ctx->name, "%s: %s", rd_kafka_err2name(err), reason);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const kafka_sink_t *ctx = rd_kafka_opaque(rk);
    sink_log_level_t l = level <= 3   ? SINK_LOG_ERROR /* emerg .. err */
                         : level == 4 ? SINK_LOG_WARN
                         : level <= 6 ? SINK_LOG_INFO /* notice, info */
                                      : SINK_LOG_DEBUG;

    /* Connection failures come twice, here and in error_cb(), which has them at warn. */
    if (strcmp(fac, "FAIL") == 0)
        l = SINK_LOG_DEBUG;
    sink_log(l, ctx ? ctx->name : "kafka", "librdkafka %s: %s", fac, buf);
}

/* ---- instance ---- */

/* The loop: the main queue got an event. Serves every event it holds. */
static void on_wake(void *opaque, int fd, unsigned events)
{
    kafka_sink_t *ctx = opaque;
    char buf[64];
    (void)events;

    /* librdkafka writes once per non-polling period: draining loses nothing */
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    rd_kafka_poll(ctx->rk, 0);
}

/*
 * Has librdkafka wake the loop (a byte on a pipe) when the main queue,
 * where delivery reports, errors and logs arrive, gets an event. 0, or -1
 * with err.
 */
static int watch_main_queue(kafka_sink_t *ctx, const sink_loop_t *loop, char *err, size_t errlen)
{
    rd_kafka_queue_t *q;

    if (pipe(ctx->wake) != 0) {
        ctx->wake[0] = ctx->wake[1] = -1;
        snprintf(err, errlen, "cannot create the wake-up pipe: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(ctx->wake[i], F_SETFL, O_NONBLOCK);
        fcntl(ctx->wake[i], F_SETFD, FD_CLOEXEC);
    }
    ctx->loop = loop;
    ctx->watch = loop->watch_new(loop->loop, ctx->wake[0], on_wake, ctx);
    if (!ctx->watch || loop->watch_set(ctx->watch, SINK_IO_READ) != 0) {
        snprintf(err, errlen, "cannot watch the wake-up pipe on the loop");
        return -1;
    }
    q = rd_kafka_queue_get_main(ctx->rk);
    rd_kafka_queue_io_event_enable(q, ctx->wake[1], "1", 1);
    rd_kafka_queue_destroy(q); /* our handle only: the main queue stays */
    /*
     * librdkafka writes only when the queue goes from empty to non-empty.
     * Events queued since rd_kafka_new() (a broker that refuses the
     * connection logs and errors at once) would keep it non-empty, so no
     * later event would ever wake the loop: serve them now.
     */
    rd_kafka_poll(ctx->rk, 0);
    return 0;
}

static void kafka_exit(void *vctx)
{
    kafka_sink_t *ctx = vctx;

    if (!ctx)
        return;
    if (ctx->loop)
        ctx->loop->watch_free(ctx->watch); /* rd_kafka_flush() serves from here on */
    if (ctx->rk) {
        rd_kafka_flush(ctx->rk, KAFKA_DESTROY_FLUSH_MS);
        if (ctx->pending > 0) {
            /* Resolve what is left (as RETRY, through the delivery reports of
             * the purge) rather than leave the core's tickets dangling. */
            sink_log(SINK_LOG_WARN, ctx->name,
                     "%zu events not acknowledged within %d ms, giving them back", ctx->pending,
                     KAFKA_DESTROY_FLUSH_MS);
            rd_kafka_purge(ctx->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(ctx->rk, KAFKA_PURGE_SERVE_MS);
        }
        if (ctx->pending > 0)
            sink_log(SINK_LOG_ERROR, ctx->name, "%zu events left without a delivery report",
                     ctx->pending);
        if (rd_kafka_outq_len(ctx->rk) > 0)
            sink_log(SINK_LOG_WARN, ctx->name, "%d requests still queued at shutdown",
                     rd_kafka_outq_len(ctx->rk));
        for (size_t i = 0; i < ctx->ncache; i++) {
            rd_kafka_topic_destroy(ctx->cache[i].rkt);
            free(ctx->cache[i].name);
        }
        rd_kafka_destroy(ctx->rk);
    }
    /* after rd_kafka_destroy(): librdkafka may write to it until then */
    for (int i = 0; i < 2; i++) {
        if (ctx->wake[i] >= 0)
            close(ctx->wake[i]);
    }
    for (int k = 0; k < KIND_COUNT; k++)
        free(ctx->topics[k]);
    free(ctx->name);
    free(ctx);
}

static void *kafka_init(const sink_config_t *cfg, const sink_host_t *host, char *err, size_t errlen)
{
    const cJSON *topics = sink_config_get(cfg, "topics")->json;
    const cJSON *props = sink_config_get(cfg, "properties")->json;
    kafka_sink_t *ctx = calloc(1, sizeof(*ctx));
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    rd_kafka_conf_t *kconf = NULL;
    char errstr[KAFKA_STR_MAX];

    if (!errs || !ctx) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ctx->wake[0] = ctx->wake[1] = -1;
    if (!(kconf = build_conf(props, "properties", errs)) ||
        conf_set(kconf, "brokers", "bootstrap.servers", sink_config_get(cfg, "brokers")->s, errs) !=
            0) {
        sink_errors_join(errs, err, errlen);
        goto fail;
    }
    ctx->name = strdup(host && host->name ? host->name : "kafka");
    for (int k = 0; k < KIND_COUNT; k++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(topics, kind_names[k]);

        ctx->topics[k] = strdup(cJSON_IsString(t) ? t->valuestring : default_topics[k]);
    }
    if (!ctx->name || !ctx->topics[0] || !ctx->topics[1] || !ctx->topics[2]) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    rd_kafka_conf_set_opaque(kconf, ctx);
    rd_kafka_conf_set_dr_msg_cb(kconf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(kconf, error_cb);
    rd_kafka_conf_set_log_cb(kconf, log_cb);
    ctx->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, errstr, sizeof(errstr));
    if (!ctx->rk) {
        trim_right(errstr);
        redact_text(errstr, sizeof(errstr), props);
        snprintf(err, errlen, "cannot create the producer: %s", errstr);
        goto fail;
    }
    kconf = NULL; /* owned by ctx->rk now */
    if (rd_kafka_set_log_queue(ctx->rk, NULL) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "cannot forward librdkafka's log queue");
        goto fail;
    }
    if (host && host->loop && watch_main_queue(ctx, host->loop, err, errlen) != 0)
        goto fail;
    ctx->last_probe_ms = clock_mono_ms();
    free(errs);
    return ctx;

fail:
    if (kconf)
        rd_kafka_conf_destroy(kconf);
    kafka_exit(ctx);
    free(errs);
    return NULL;
}

/*
 * The cached handle for topic, opening it on a miss. When the cache is full
 * the handle is new and *owned is set: the caller destroys it after use.
 */
static rd_kafka_topic_t *topic_handle(kafka_sink_t *ctx, const char *topic, bool *owned)
{
    rd_kafka_topic_t *rkt;
    char *copy;

    *owned = false;
    for (size_t i = 0; i < ctx->ncache; i++) {
        if (strcmp(ctx->cache[i].name, topic) == 0)
            return ctx->cache[i].rkt;
    }
    /* NULL topic conf: the default one, which carries acks=all. */
    rkt = rd_kafka_topic_new(ctx->rk, topic, NULL);
    if (!rkt)
        return NULL;
    if (ctx->ncache == KAFKA_TOPIC_CACHE_MAX || !(copy = strdup(topic))) {
        *owned = true;
        return rkt;
    }
    ctx->cache[ctx->ncache].name = copy;
    ctx->cache[ctx->ncache].rkt = rkt;
    ctx->ncache++;
    return rkt;
}

static int kind_index(const char *kind)
{
    for (int k = 0; kind && k < KIND_COUNT; k++) {
        if (strcmp(kind, kind_names[k]) == 0)
            return k;
    }
    return -1;
}

/*
 * The topic handle and ce_source of ev: from ctx->last when the previous
 * event of its kind came from the same source, else worked out (and
 * remembered unless the handle is an owned one, which *owned then says).
 * NULL when the event cannot go anywhere (logged).
 */
static rd_kafka_topic_t *route(kafka_sink_t *ctx, const sink_event_t *ev, bool *owned,
                               const char **ce_source)
{
    char topic[KAFKA_TOPIC_MAX + 1];
    rd_kafka_topic_t *rkt;
    kafka_route_t *r;
    int k = kind_index(ev->kind);
    size_t n = strlen(ev->source);

    *owned = false;
    if (k >= 0 && n > 0 && strcmp(ctx->last[k].source, ev->source) == 0) {
        *ce_source = ctx->last[k].ce_source;
        return ctx->last[k].rkt;
    }
    if (k < 0 || n > KAFKA_SOURCE_MAX ||
        sink_expand_name(topic, sizeof(topic), ctx->topics[k], ev->source, ev->kind) < 0) {
        sink_log(SINK_LOG_ERROR, ctx->name, "event %s: bad kind or source name too long", ev->id);
        return NULL;
    }
    r = &ctx->last[k];
    rkt = topic_handle(ctx, topic, owned);
    if (!rkt) {
        sink_log(SINK_LOG_WARN, ctx->name, "cannot open topic %s: %s", topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return NULL;
    }
    snprintf(r->ce_source, sizeof(r->ce_source), KAFKA_CE_SOURCE_PREFIX "%s", ev->source);
    *ce_source = r->ce_source;
    /* an owned handle is destroyed after this event: not one to remember */
    memcpy(r->source, ev->source, *owned ? 0 : n);
    r->source[*owned ? 0 : n] = '\0';
    r->rkt = rkt;
    return rkt;
}

static sink_result_t kafka_submit(void *vctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    kafka_sink_t *ctx = vctx;
    const char *ce_source = NULL;
    char fatal[KAFKA_STR_MAX];
    rd_kafka_resp_err_t err;
    rd_kafka_topic_t *rkt;
    bool owned;

    if (rd_kafka_fatal_error(ctx->rk, fatal, sizeof(fatal)))
        return SINK_ERR_FATAL;
    if (!(rkt = route(ctx, ev, &owned, &ce_source)))
        return SINK_ERR_RETRY;

    for (int attempt = 0;; attempt++) {
        err = rd_kafka_producev(
            ctx->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(ev->key, strlen(ev->key)),
            RD_KAFKA_V_VALUE((void *)ev->json, ev->json_len),
            RD_KAFKA_V_HEADER("ce_id", ev->id, -1), RD_KAFKA_V_HEADER("ce_type", ev->type, -1),
            RD_KAFKA_V_HEADER("ce_source", ce_source, -1),
            RD_KAFKA_V_HEADER("content-type", KAFKA_CONTENT_TYPE, -1), RD_KAFKA_V_OPAQUE(ticket),
            RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt == KAFKA_QUEUE_FULL_RETRIES)
            break;
        rd_kafka_poll(ctx->rk, KAFKA_QUEUE_FULL_POLL_MS);
    }
    bool is_fatal = err && (err == RD_KAFKA_RESP_ERR__FATAL ||
                            rd_kafka_fatal_error(ctx->rk, fatal, sizeof(fatal)));
    if (err && !is_fatal) /* the handle names the topic: it may be gone after this */
        sink_log(SINK_LOG_WARN, ctx->name, "cannot produce event %s to %s: %s", ev->id,
                 rd_kafka_topic_name(rkt), rd_kafka_err2str(err));
    if (owned)
        rd_kafka_topic_destroy(rkt);

    if (!err) {
        ctx->pending++;
        return SINK_OK;
    }
    if (is_fatal)
        return SINK_ERR_FATAL;
    return permanent(err) ? SINK_ERR_PERMANENT : SINK_ERR_RETRY;
}

/*
 * After an outage with nothing to deliver, no delivery report would ever
 * tell that the brokers are back: while the sink is marked down and idle,
 * flush() spends part of what is left before its deadline on a metadata
 * request, every KAFKA_PROBE_INTERVAL_MS at most. Off the loop only in
 * practice: the core flushes a sink on its loop at exit alone.
 */
static void reprobe(kafka_sink_t *ctx, int64_t deadline_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    int budget = sink_ms_left(deadline_ms);

    if (!ctx->down || budget == 0 || sink_now_ms() - ctx->last_probe_ms < KAFKA_PROBE_INTERVAL_MS)
        return;
    ctx->last_probe_ms = sink_now_ms();
    if (budget > KAFKA_PROBE_TIMEOUT_MS)
        budget = KAFKA_PROBE_TIMEOUT_MS;
    if (rd_kafka_metadata(ctx->rk, 0, NULL, &md, budget) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_metadata_destroy(md);
        ctx->down = 0;
    }
}

/*
 * Ready when the producer has no fatal error, the cluster has answered
 * (cached metadata, checked without blocking, or a delivery report) and
 * nothing since says it is gone (all brokers down, a delivery timed out);
 * a successful delivery or flush()'s metadata request clears that.
 */
static int kafka_ready(void *vctx)
{
    kafka_sink_t *ctx = vctx;
    char fatal[KAFKA_STR_MAX];

    if (rd_kafka_fatal_error(ctx->rk, fatal, sizeof(fatal)) || ctx->down)
        return 0;
    if (!ctx->seen_cluster && rd_kafka_controllerid(ctx->rk, 0) >= 0)
        ctx->seen_cluster = 1;
    return ctx->seen_cluster;
}

static size_t kafka_flush(void *vctx, int64_t deadline_ms)
{
    kafka_sink_t *ctx = vctx;

    if (ctx->pending == 0) {
        reprobe(ctx, deadline_ms);
        rd_kafka_poll(ctx->rk, 0);
        return 0;
    }
    rd_kafka_flush(ctx->rk, sink_ms_left(deadline_ms));
    return ctx->pending;
}

/* What probe()'s producer reports through error_cb, served by rd_kafka_poll(). */
typedef struct kafka_probe_state {
    char error[KAFKA_STR_MAX];
} kafka_probe_state_t;

static void probe_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_probe_state_t *st = opaque;

    (void)rk;
    snprintf(st->error, sizeof(st->error), "%s: %s", rd_kafka_err2name(err), reason);
}

/* Appends printf text to msg at *o, as far as it fits. */
static void msg_add(char *msg, size_t msglen, size_t *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void msg_add(char *msg, size_t msglen, size_t *o, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (*o >= msglen)
        return;
    va_start(ap, fmt);
    w = vsnprintf(msg + *o, msglen - *o, fmt, ap);
    va_end(ap);
    *o = w < 0 ? msglen : *o + (size_t)w;
}

/*
 * check --connect: a producer of its own (the sink's properties, so SASL
 * and TLS are tried as configured) asks the cluster for the metadata of
 * every topic, bounded by the deadline, and finds the sink's topics in it.
 * All topics rather than ours by name: a metadata request naming a topic
 * that does not exist creates it on a cluster that auto-creates topics
 * (and on librdkafka's mock), and check --connect must change nothing.
 * Nothing is produced; the producer is destroyed before returning.
 */
static int kafka_probe(const sink_config_t *cfg, const sink_host_t *host, int64_t deadline_ms,
                       char *msg, size_t msglen)
{
    const cJSON *topics = sink_config_get(cfg, "topics")->json;
    const cJSON *props = sink_config_get(cfg, "properties")->json;
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    kafka_probe_state_t st = {{0}};
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_conf_t *kconf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_resp_err_t err;
    char names[KIND_COUNT][KAFKA_TOPIC_MAX + 1], errstr[KAFKA_STR_MAX];
    size_t o = 0;
    int rc = -1;

    (void)host;
    if (!errs) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    if (!(kconf = build_conf(props, "properties", errs)) ||
        conf_set(kconf, "brokers", "bootstrap.servers", sink_config_get(cfg, "brokers")->s, errs) !=
            0) {
        sink_errors_join(errs, msg, msglen);
        goto out;
    }
    rd_kafka_conf_set_opaque(kconf, &st);
    rd_kafka_conf_set_error_cb(kconf, probe_error_cb);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, errstr, sizeof(errstr)))) {
        trim_right(errstr);
        redact_text(errstr, sizeof(errstr), props);
        snprintf(msg, msglen, "cannot create a producer: %s", errstr);
        goto out;
    }
    kconf = NULL; /* owned by rk now */
    err = rd_kafka_metadata(rk, 1, NULL, &md,
                            sink_ms_left(deadline_ms) > 0 ? sink_ms_left(deadline_ms) : 1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_poll(rk, 0); /* error_cb says why the brokers did not answer */
        redact_text(st.error, sizeof(st.error), props);
        snprintf(msg, msglen, "no metadata from %s: %s%s%s", sink_config_get(cfg, "brokers")->s,
                 rd_kafka_err2str(err), st.error[0] ? "; last error " : "", st.error);
        goto out;
    }
    msg_add(msg, msglen, &o, "%d broker%s", md->broker_cnt, md->broker_cnt == 1 ? "" : "s");
    rc = 0;
    for (int k = 0; k < KIND_COUNT; k++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(topics, kind_names[k]);
        const char *tmpl = cJSON_IsString(t) ? t->valuestring : default_topics[k];
        const struct rd_kafka_metadata_topic *found = NULL;
        bool seen = false;

        if (strstr(tmpl, "{source}")) {
            msg_add(msg, msglen, &o, ", topic %s: one per source, not checked", tmpl);
            names[k][0] = '\0';
            continue;
        }
        if (sink_expand_name(names[k], sizeof(names[k]), tmpl, "", kind_names[k]) < 0)
            names[k][0] = '\0';
        for (int j = 0; j < k && !seen; j++)
            seen = strcmp(names[j], names[k]) == 0;
        if (seen || !names[k][0])
            continue;
        for (int i = 0; i < md->topic_cnt && !found; i++) {
            if (strcmp(md->topics[i].topic, names[k]) == 0)
                found = &md->topics[i];
        }
        if (!found || found->err) {
            msg_add(msg, msglen, &o, ", topic %s: %s", names[k],
                    found ? rd_kafka_err2str(found->err) : "does not exist");
            rc = -1;
        } else {
            msg_add(msg, msglen, &o, ", topic %s: %d partition%s", names[k], found->partition_cnt,
                    found->partition_cnt == 1 ? "" : "s");
        }
    }
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rk)
        rd_kafka_destroy(rk);
    if (kconf)
        rd_kafka_conf_destroy(kconf);
    free(errs);
    return rc;
}

const sink_type_t sink_kafka_type = {
    .name = "kafka",
    .flags = SINK_F_LOOP,
    .desc = "an idempotent producer (acks=all), one topic per event type, key <source>/<session>",
    .options = kafka_options,
    .init = kafka_init,
    .submit = kafka_submit,
    .flush = kafka_flush,
    .exit = kafka_exit,
    .ready = kafka_ready,
    .probe = kafka_probe,
};
