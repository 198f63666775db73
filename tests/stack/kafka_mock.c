/*
 * sb-kafka-mock: a Kafka-protocol broker in its own process, for tests.
 *
 * It wraps librdkafka's mock cluster (rdkafka_mock.h): real Kafka wire
 * protocol on 127.0.0.1, no JVM, no ZooKeeper. Producers (including the
 * idempotent producer with acks=all), low-level and group consumers, and
 * metadata all work, so the bridge's Kafka sink and kcat can talk to it as to
 * a real cluster.
 *
 * Run:
 *   sb-kafka-mock --brokers 1 --partitions 3 --topic sessions.started \
 *                 --bootstrap-file /tmp/kafka.addr --pid-file /tmp/kafka.pid &
 *   # wait until /tmp/kafka.addr exists (it is written with rename, so a
 *   # reader never sees half an address), then:
 *   kcat -b "$(cat /tmp/kafka.addr)" -L
 *
 * Control, by signal (the main loop acts, the handlers only set flags):
 *   SIGUSR1  every broker goes down: connections are closed and new ones are
 *            dropped, so producers cannot deliver (outage test)
 *   SIGUSR2  every broker comes back up
 *   SIGTERM, SIGINT  destroy the cluster, remove the bootstrap and pid files,
 *            exit 0
 *
 * Quirks of the librdkafka 2.0.2 mock worth knowing (see --help):
 * - Listen ports are ephemeral and cannot be chosen: read the bootstrap file.
 * - Topics that are not pre-created with --topic are auto-created on first
 *   metadata request with the mock's built-in default partition count; the
 *   public API has no way to change that default, so --partitions only
 *   applies to --topic topics. Pre-create every topic a test depends on.
 * - SIGUSR1 closes the listeners too, so clients see "Connection refused";
 *   kcat gives up at once ("all brokers down"), a long-lived producer keeps
 *   retrying. After SIGUSR2 such a producer reconnects only when its
 *   reconnect backoff expires (reconnect.backoff.max.ms, 10 s by default):
 *   outage tests should lower it or wait longer than that. Messages that
 *   timed out while down are reported as such; an idempotent producer then
 *   bumps its epoch and goes on delivering.
 * - Everything is in memory; messages are lost when the process exits.
 * - The mock leaves Nagle's algorithm on for the connections it accepts
 *   (Kafka brokers turn it off). A small response written while the last
 *   one is unacknowledged then waits for the client's delayed ACK, 40 ms on
 *   Linux: 4 of the 9 ProduceResponses of a 200-event delivery came 44 ms
 *   late, which was most of that delivery's time. accept() below turns it
 *   off on every connection; "stopping" reports how many.
 */
#define _GNU_SOURCE /* accept4() */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "stack_util.h"

/* Brokers get ids 1..N; more than a handful only costs threads and ports. */
#define MAX_BROKERS 16
/* Partition counts beyond this are a typo, not a test. */
#define MAX_PARTITIONS 1024
#define MAX_TOPICS 64
/* Kafka's own limit on topic name length. */
#define MAX_TOPIC_NAME 249
/* How often the main loop wakes without a signal, to serve librdkafka's
 * callbacks on our own thread. */
#define LOOP_WAKE_MS 200

struct topic_spec {
    char name[MAX_TOPIC_NAME + 1];
    int partitions; /* 0: use --partitions */
};

struct options {
    int brokers;
    int partitions;
    struct topic_spec topics[MAX_TOPICS];
    int ntopics;
    const char *bootstrap_file;
    const char *pid_file;
};

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t down_requested;
static volatile sig_atomic_t up_requested;

/* Connections accept() turned Nagle's algorithm off on. */
static atomic_ulong nodelay_connections;

/*
 * librdkafka's mock accepts its connections with accept(); this definition
 * in the executable comes first in symbol lookup, so the mock's calls land
 * here (from its broker threads). accept4() is glibc's own entry point, so
 * no dlsym() is needed. Kafka's brokers set TCP_NODELAY on every
 * connection; so does this.
 */
int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    int one = 1;
    int s = accept4(fd, addr, len, 0);

    if (s >= 0 && setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
        atomic_fetch_add(&nodelay_connections, 1);
    return s;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        down_requested = 1;
    else if (sig == SIGUSR2)
        up_requested = 1;
    else
        stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: sb-kafka-mock [OPTIONS]\n"
            "\n"
            "A Kafka-protocol broker for tests, built on librdkafka's mock cluster.\n"
            "Listens on 127.0.0.1 at ephemeral ports.\n"
            "\n"
            "Options:\n"
            "  --brokers N            number of brokers, ids 1..N (default 1, max %d)\n"
            "  --partitions N         partitions of each --topic (default 3)\n"
            "  --topic NAME[:PARTS]   pre-create a topic, repeatable (max %d); PARTS\n"
            "                         overrides --partitions for that topic\n"
            "  --bootstrap-file PATH  write the bootstrap servers (\"127.0.0.1:40123\",\n"
            "                         comma-separated with several brokers) to PATH,\n"
            "                         atomically, once listening\n"
            "  --pid-file PATH        write the process id to PATH\n"
            "  --help                 this text\n"
            "\n"
            "Signals:\n"
            "  SIGUSR1  take every broker down     (logs \"brokers down\")\n"
            "  SIGUSR2  bring every broker back up (logs \"brokers up\")\n"
            "  SIGTERM/SIGINT  exit 0, removing the bootstrap and pid files\n"
            "\n"
            "librdkafka %s mock: topics that are not pre-created are auto-created\n"
            "with the mock's built-in partition count, which --partitions cannot\n"
            "change; pre-create the topics a test depends on.\n",
            MAX_BROKERS, MAX_TOPICS, rd_kafka_version_str());
}

/* Not sim_parse_u64() (sb-provider-sim's): strtol() also takes leading
 * blanks and a '+', which --brokers and --partitions have always accepted. */
static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int add_topic(struct options *o, const char *arg)
{
    struct topic_spec *t;
    const char *colon = strchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);

    if (o->ntopics == MAX_TOPICS) {
        fprintf(stderr, "sb-kafka-mock: too many --topic (max %d)\n", MAX_TOPICS);
        return -1;
    }
    if (len == 0 || len > MAX_TOPIC_NAME) {
        fprintf(stderr, "sb-kafka-mock: bad topic name in --topic %s\n", arg);
        return -1;
    }
    t = &o->topics[o->ntopics];
    memcpy(t->name, arg, len);
    t->name[len] = '\0';
    t->partitions = 0;
    if (colon && parse_int(colon + 1, 1, MAX_PARTITIONS, &t->partitions) < 0) {
        fprintf(stderr, "sb-kafka-mock: bad partition count in --topic %s\n", arg);
        return -1;
    }
    o->ntopics++;
    return 0;
}

/* Returns 0 to run, 1 when --help was printed, 2 on a usage error. */
static int parse_args(int argc, char **argv, struct options *o)
{
    enum { OPT_BROKERS = 1, OPT_PARTITIONS, OPT_TOPIC, OPT_BOOTSTRAP, OPT_PID, OPT_HELP };
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"partitions", required_argument, NULL, OPT_PARTITIONS},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"bootstrap-file", required_argument, NULL, OPT_BOOTSTRAP},
        {"pid-file", required_argument, NULL, OPT_PID},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(o, 0, sizeof(*o));
    o->brokers = 1;
    o->partitions = 3;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKERS:
            if (parse_int(optarg, 1, MAX_BROKERS, &o->brokers) < 0) {
                fprintf(stderr, "sb-kafka-mock: --brokers wants 1..%d\n", MAX_BROKERS);
                return 2;
            }
            break;
        case OPT_PARTITIONS:
            if (parse_int(optarg, 1, MAX_PARTITIONS, &o->partitions) < 0) {
                fprintf(stderr, "sb-kafka-mock: --partitions wants 1..%d\n", MAX_PARTITIONS);
                return 2;
            }
            break;
        case OPT_TOPIC:
            if (add_topic(o, optarg) < 0)
                return 2;
            break;
        case OPT_BOOTSTRAP:
            o->bootstrap_file = optarg;
            break;
        case OPT_PID:
            o->pid_file = optarg;
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sb-kafka-mock: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* Called from librdkafka's internal threads; stderr writes are atomic per
 * line for lines this short, which is all a log needs. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* The hosting handle has no bootstrap.servers on purpose. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
        return;
    fprintf(stderr, "sb-kafka-mock: rdkafka %d %s: %s\n", level, fac, buf);
}

static void set_all_brokers(rd_kafka_mock_cluster_t *mc, int brokers, int up)
{
    for (int id = 1; id <= brokers; id++) {
        rd_kafka_resp_err_t err =
            up ? rd_kafka_mock_broker_set_up(mc, id) : rd_kafka_mock_broker_set_down(mc, id);
        if (err)
            fprintf(stderr, "sb-kafka-mock: broker %d %s: %s\n", id, up ? "up" : "down",
                    rd_kafka_err2str(err));
    }
    fprintf(stderr, "sb-kafka-mock: brokers %s\n", up ? "up" : "down");
}

int main(int argc, char **argv)
{
    struct options o;
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
    sigset_t waitmask;
    char errstr[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
    int rc = parse_args(argc, argv, &o);
    int exit_code = 0;
    int wrote_pid = 0, wrote_bootstrap = 0;

    if (rc == 1)
        return 0;
    if (rc != 0)
        return 2;
    /* Before rd_kafka_new(): librdkafka's threads inherit the blocked mask. */
    if (stack_install_signals("sb-kafka-mock", on_signal, sigs, sizeof(sigs) / sizeof(sigs[0]),
                              &waitmask) != 0)
        return 1;

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (rd_kafka_conf_set(conf, "client.id", "sb-kafka-mock", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "sb-kafka-mock: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    /* The handle only hosts the cluster; it never connects anywhere. */
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "sb-kafka-mock: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    conf = NULL; /* owned by rk now */

    mc = rd_kafka_mock_cluster_new(rk, o.brokers);
    if (!mc) {
        fprintf(stderr, "sb-kafka-mock: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = 0; i < o.ntopics; i++) {
        int parts = o.topics[i].partitions ? o.topics[i].partitions : o.partitions;
        int replicas = o.brokers < 3 ? o.brokers : 3;
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, o.topics[i].name, parts, replicas);
        if (err) {
            fprintf(stderr, "sb-kafka-mock: topic %s: %s\n", o.topics[i].name,
                    rd_kafka_err2str(err));
            exit_code = 1;
            goto out;
        }
        fprintf(stderr, "sb-kafka-mock: topic %s partitions=%d replicas=%d\n", o.topics[i].name,
                parts, replicas);
    }

    bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (o.pid_file) {
        if (stack_write_pid_file("sb-kafka-mock", o.pid_file) != 0) {
            exit_code = 1;
            goto out;
        }
        wrote_pid = 1;
    }
    /* Last, so that a test waiting for this file finds topics created. */
    if (o.bootstrap_file && stack_write_file("sb-kafka-mock", o.bootstrap_file, bootstraps) != 0) {
        exit_code = 1;
        goto out;
    }
    wrote_bootstrap = o.bootstrap_file != NULL;
    fprintf(stderr, "sb-kafka-mock: listening brokers=%d bootstrap=%s librdkafka=%s\n", o.brokers,
            bootstraps, rd_kafka_version_str());

    while (!stop_requested) {
        if (down_requested) {
            down_requested = 0;
            set_all_brokers(mc, o.brokers, 0);
        }
        if (up_requested) {
            up_requested = 0;
            set_all_brokers(mc, o.brokers, 1);
        }
        rd_kafka_poll(rk, 0);
        /* Signals are unblocked only while waiting here, so a flag set just
         * before this call is never slept through. */
        if (stack_wait("sb-kafka-mock", &waitmask, LOOP_WAKE_MS) != 0) {
            exit_code = 1;
            break;
        }
    }
    fprintf(stderr, "sb-kafka-mock: stopping; TCP_NODELAY set on %lu connections\n",
            atomic_load(&nodelay_connections));

out:
    if (wrote_bootstrap)
        unlink(o.bootstrap_file);
    if (wrote_pid)
        unlink(o.pid_file);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return exit_code;
}
