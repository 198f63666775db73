/*
 * bare_producer: the broker's own limit for a first emit cycle.
 *
 *   bare_producer -b BROKERS [-X name=value]... MESSAGES
 *
 * Produces every message of MESSAGES (the file bench_side_by_side.py
 * writes from the bridge's own first cycle: topic, partition, key, headers
 * and value of each message, in the bridge's order) with librdkafka
 * directly, and waits for every delivery report. Nothing else:
 * no page, no diff, no encoding, no Redis. What the bridge's first cycle
 * costs beyond this program's wall time is ours.
 *
 * The producer is configured as sinks/kafka.c configures its own: the same
 * defaults (client.id, message.timeout.ms), then the -X properties (the
 * harness passes the sink's "properties", i.e. the same partitioner), then
 * acks=all and enable.idempotence=true forced last, as the sink forces
 * them. The sink sets no linger or batch property, so neither does this:
 * both run on librdkafka's defaults. Each message is produced as the sink
 * produces it: rd_kafka_producev() with RD_KAFKA_MSG_F_COPY, the key, the
 * four headers, partition unassigned (the partitioner places it).
 *
 * The loop is the canonical one of librdkafka's examples: rd_kafka_poll(0)
 * after each produce serves delivery reports, QUEUE_FULL means poll and
 * retry, then rd_kafka_flush() until nothing is left. Each delivery report
 * checks the partition against the one the bridge's message landed on
 * (the same partitioner places the same key in the same partition).
 *
 * The file is mapped, not read, so that reading it costs next to nothing
 * beside the producer's work (a read() and copy of each field took ~25% of
 * the wall time at 110,000 messages).
 *
 * File format, per message: a line "<topic> <partition> <headers> <key
 * bytes> <value bytes>\n", then per header "<name bytes> <value bytes>\n"
 * and the name and value, then the key and the value.
 *
 * Prints one line: "messages N delivered N failed N misplaced N produce_s
 * Y" (produce_s: from the first produce to the last delivery report).
 * Exits 0 when every message was delivered to its partition. A benchmark
 * tool, not part of the product.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* A field larger than this is a corrupt file, not an event. */
#define BARE_FIELD_MAX (64u * 1024u * 1024u)
/* The sink's four CloudEvents headers; more is a corrupt file. */
#define BARE_HEADERS_MAX 16
#define BARE_TOPICS_MAX 16
#define BARE_NAME_MAX 256
/* QUEUE_FULL: serve delivery reports this long before trying again. */
#define BARE_QUEUE_FULL_POLL_MS 100
/* Flush bound: the sink's message.timeout.ms (30 s) with room to spare. */
#define BARE_FLUSH_MS 60000
#define BARE_ERR_MAX 512

typedef struct counts {
    size_t delivered, failed, misplaced;
} counts_t;

/* The mapped file and the read position. */
typedef struct cursor {
    const char *p, *end;
} cursor_t;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Delivery reports, from rd_kafka_poll()/rd_kafka_flush() on main's thread. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    counts_t *c = opaque;
    int32_t expected = (int32_t)(intptr_t)msg->_private;

    (void)rk;
    if (msg->err) {
        if (c->failed++ == 0)
            fprintf(stderr, "bare_producer: delivery failed: %s\n", rd_kafka_err2str(msg->err));
        return;
    }
    c->delivered++;
    c->misplaced += msg->partition != expected;
}

/* The next line's text (without its '\n') into line; 0 or -1 at the end. */
static int next_line(cursor_t *c, char *line, size_t size)
{
    const char *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
    size_t n;

    if (!nl || (n = (size_t)(nl - c->p)) >= size)
        return -1;
    memcpy(line, c->p, n);
    line[n] = '\0';
    c->p = nl + 1;
    return 0;
}

/* The next n bytes, in place; NULL past the end. */
static const char *next_bytes(cursor_t *c, size_t n)
{
    const char *at = c->p;

    if (n > BARE_FIELD_MAX || n > (size_t)(c->end - c->p))
        return NULL;
    c->p += n;
    return at;
}

typedef struct topics {
    char names[BARE_TOPICS_MAX][BARE_NAME_MAX];
    rd_kafka_topic_t *rkt[BARE_TOPICS_MAX];
    size_t n;
} topics_t;

static rd_kafka_topic_t *topic_of(rd_kafka_t *rk, topics_t *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->names[i], name) == 0)
            return t->rkt[i];
    }
    if (t->n == BARE_TOPICS_MAX || strlen(name) >= BARE_NAME_MAX)
        return NULL;
    snprintf(t->names[t->n], BARE_NAME_MAX, "%s", name);
    t->rkt[t->n] = rd_kafka_topic_new(rk, name, NULL);
    return t->rkt[t->n++];
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char err[BARE_ERR_MAX];

    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return 0;
    fprintf(stderr, "bare_producer: %s: %s\n", name, err);
    return -1;
}

/* The producer as sinks/kafka.c's parse() builds it. */
static rd_kafka_conf_t *producer_conf(int argc, char **argv, const char **file)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int bad = 0;

    bad |= conf_set(conf, "client.id", "session-bridge");
    bad |= conf_set(conf, "message.timeout.ms", "30000");
    *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-b") == 0 && i + 1 < argc) {
            bad |= conf_set(conf, "bootstrap.servers", argv[++i]);
        } else if (strcmp(argv[i], "-X") == 0 && i + 1 < argc) {
            char *eq = strchr(argv[++i], '=');
            if (!eq) {
                bad = 1;
                continue;
            }
            *eq = '\0';
            bad |= conf_set(conf, argv[i], eq + 1);
        } else if (!*file && argv[i][0] != '-') {
            *file = argv[i];
        } else {
            bad = 1;
        }
    }
    bad |= conf_set(conf, "enable.idempotence", "true");
    bad |= conf_set(conf, "acks", "all");
    if (bad || !*file) {
        fprintf(stderr, "usage: bare_producer -b BROKERS [-X name=value]... MESSAGES\n");
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

/* Produces one message at c; 0, or -1 on a corrupt file or a refused produce. */
static int produce_one(rd_kafka_t *rk, topics_t *topics, cursor_t *c, size_t i)
{
    char line[BARE_NAME_MAX + 64], topic[BARE_NAME_MAX];
    size_t nh, klen, vlen;
    int part;
    const char *key, *value;
    rd_kafka_topic_t *rkt;
    rd_kafka_headers_t *hdrs;
    rd_kafka_resp_err_t e;

    if (next_line(c, line, sizeof(line)) != 0 ||
        sscanf(line, "%255s %d %zu %zu %zu", topic, &part, &nh, &klen, &vlen) != 5 ||
        nh > BARE_HEADERS_MAX || !(rkt = topic_of(rk, topics, topic))) {
        fprintf(stderr, "bare_producer: message %zu: bad record line\n", i);
        return -1;
    }
    hdrs = rd_kafka_headers_new(nh);
    for (size_t h = 0; h < nh; h++) {
        size_t nlen, hlen;
        const char *name, *hval;

        if (next_line(c, line, sizeof(line)) != 0 || sscanf(line, "%zu %zu", &nlen, &hlen) != 2 ||
            !(name = next_bytes(c, nlen)) || !(hval = next_bytes(c, hlen))) {
            fprintf(stderr, "bare_producer: message %zu: bad header\n", i);
            rd_kafka_headers_destroy(hdrs);
            return -1;
        }
        rd_kafka_header_add(hdrs, name, (ssize_t)nlen, hval, (ssize_t)hlen);
    }
    if (!(key = next_bytes(c, klen)) || !(value = next_bytes(c, vlen))) {
        fprintf(stderr, "bare_producer: message %zu: truncated\n", i);
        rd_kafka_headers_destroy(hdrs);
        return -1;
    }
    for (;;) {
        e = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)value, vlen),
                              RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE((void *)(intptr_t)part),
                              RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, BARE_QUEUE_FULL_POLL_MS);
    }
    if (e) {
        /* the headers become the producer's only on success */
        rd_kafka_headers_destroy(hdrs);
        fprintf(stderr, "bare_producer: produce: %s\n", rd_kafka_err2str(e));
        return -1;
    }
    rd_kafka_poll(rk, 0);
    return 0;
}

int main(int argc, char **argv)
{
    static topics_t topics;
    counts_t c = {0};
    char err[BARE_ERR_MAX];
    size_t messages = 0;
    const char *file;
    rd_kafka_conf_t *conf = producer_conf(argc, argv, &file);
    rd_kafka_t *rk;
    cursor_t cur;
    struct stat st;
    void *map;
    double t0;
    int fd, rc = 1;

    if (!conf)
        return 2;
    if ((fd = open(file, O_RDONLY)) < 0 || fstat(fd, &st) != 0 || st.st_size == 0 ||
        (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        perror(file);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    close(fd);
    madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
    cur.p = map;
    cur.end = cur.p + st.st_size;
    rd_kafka_conf_set_opaque(conf, &c);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        fprintf(stderr, "bare_producer: %s\n", err);
        rd_kafka_conf_destroy(conf);
        munmap(map, (size_t)st.st_size);
        return 1;
    }
    t0 = now_s();
    while (cur.p < cur.end) {
        if (produce_one(rk, &topics, &cur, messages) != 0)
            goto out;
        messages++;
    }
    rd_kafka_flush(rk, BARE_FLUSH_MS);
    if (rd_kafka_outq_len(rk) > 0)
        fprintf(stderr, "bare_producer: %d requests left after %d ms\n", rd_kafka_outq_len(rk),
                BARE_FLUSH_MS);
    printf("messages %zu delivered %zu failed %zu misplaced %zu produce_s %.3f\n", messages,
           c.delivered, c.failed, c.misplaced, now_s() - t0);
    rc = c.delivered == messages && c.failed == 0 && c.misplaced == 0 ? 0 : 1;
out:
    for (size_t i = 0; i < topics.n; i++)
        rd_kafka_topic_destroy(topics.rkt[i]);
    rd_kafka_destroy(rk);
    munmap(map, (size_t)st.st_size);
    return rc;
}
