/*
 * session-bridge: the command line of CONTRACT §2.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "admin.h"
#include "bridge_metrics.h"
#include "config.h"
#include "dlq.h"
#include "engine.h"
#include "log.h"

/* sysexits.h: EX_USAGE is 64, but the contract says 2 for usage errors. */
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_CONFIG 78

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The engine's heartbeat, on its loop's thread: the admin endpoint's liveness. */
static void admin_beat(void *opaque)
{
    admin_heartbeat(opaque);
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "session-bridge %s: lifecycle events from \"list sessions\" APIs\n"
        "\n"
        "Usage:\n"
        "  session-bridge run   -c FILE                  poll every source until SIGTERM/SIGINT\n"
        "  session-bridge once  -c FILE [--source NAME]  one cycle per source, then exit\n"
        "  session-bridge check -c FILE                  validate the configuration\n"
        "  session-bridge dlq list|replay|purge -c FILE [--sink NAME]\n"
        "                                                dead letters: list them (JSON lines),\n"
        "                                                hand them to their sink again, or delete\n"
        "  session-bridge sinks                          the sink types and their keys\n"
        "  session-bridge version\n"
        "\n"
        "Exit codes: 0 success, 1 runtime failure (nothing committed for the failed\n"
        "source), 2 usage error, 78 configuration error.\n"
        "Environment: SB_LOG_LEVEL=error|warn|info|debug (default info),\n"
        "SB_LOG_FORMAT=text|json (default text on a terminal, json otherwise). Strings\n"
        "in the configuration may use ${VAR} and ${VAR:-default}.\n",
        SB_VERSION);
}

/*
 * `session-bridge sinks`: the keys every sink has, then each built-in type's
 * option table, the same tables the configuration is checked against.
 */
static int cmd_sinks(void)
{
    printf("Keys of every sink (the core's):\n"
           "  %-18s string, required: [a-z0-9_-]{1,%d}, unique among the sinks\n"
           "  %-18s one of the types below, or module\n"
           "  %-18s list of started, completed, cancelled, default all\n"
           "  %-18s list of source names, default all\n",
           "name", CONF_NAME_MAX, "type", "events", "sources");
    for (size_t i = 0; sink_builtin_types[i]; i++) {
        printf("\n");
        sink_type_doc(sink_builtin_types[i], stdout);
    }
    printf("\nmodule\n"
           "  a sink type loaded at run time from a shared object (see sink.h)\n"
           "  %-18s string, required\n"
           "  %-18s the module's file; the module's own keys come from its table\n",
           "path", "");
    return 0;
}

typedef struct args {
    const char *cmd;
    const char *action; /* dlq */
    const char *config;
    const char *source;
    const char *sink;
} args_t;

/* Whether arg is "--name" or "--name=...", not an abbreviation of it. */
static int spelled_out(const char *arg, const char *name)
{
    size_t n = strlen(name);

    return strncmp(arg + 2, name, n) == 0 && (arg[2 + n] == '\0' || arg[2 + n] == '=');
}

/*
 * Reads the options after the command word (and after dlq's action):
 * -c/--config, --source, --sink, each as "--opt VALUE" or "--opt=VALUE".
 * getopt_long() prints nothing (opterr = 0): every mistake is reported as
 * the argument it stopped at, and options are not permuted, so a stray
 * word is one too. Long options are taken only when spelled out: an
 * abbreviation ("--conf") that one more option could make ambiguous is
 * refused now rather than broken later.
 */
static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"source", required_argument, NULL, 's'},
        {"sink", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    int first = 2, c, at, li;

    memset(a, 0, sizeof(*a));
    if (argc < 2)
        return -1;
    a->cmd = argv[1];
    if (strcmp(a->cmd, "dlq") == 0 && argc > 2 && argv[2][0] != '-')
        a->action = argv[first++];
    /* getopt_long() reads from argv[1]: the word before the options stands in for argv[0]. */
    argc -= first - 1;
    argv += first - 1;
    opterr = 0;
    optind = 1;
    while ((at = optind, li = -1, c = getopt_long(argc, argv, "+c:", longopts, &li)) != -1) {
        if (li >= 0 && !spelled_out(argv[at], longopts[li].name))
            c = '?';
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case 's':
            a->source = optarg;
            break;
        case 'k':
            a->sink = optarg;
            break;
        default: /* unknown, or its value missing */
            fprintf(stderr, "session-bridge: unexpected argument \"%s\"\n", argv[at]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "session-bridge: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* Prints every configuration problem as FILE: PATH: MESSAGE. */
static void print_conf_errors(const char *path, const sink_errors_t *errs, int as_log)
{
    size_t shown = errs->count < SINK_ERRORS_MAX ? errs->count : SINK_ERRORS_MAX;
    for (size_t i = 0; i < shown; i++) {
        if (as_log)
            LOG_ERROR("configuration error", LF_S("file", path), LF_S("error", errs->msg[i]));
        else
            fprintf(stderr, "%s: %s\n", path, errs->msg[i]);
    }
    if (errs->count > shown && !as_log)
        fprintf(stderr, "%s: ... and %zu more\n", path, errs->count - shown);
}

static int cmd_check(const args_t *a)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    if (errs == NULL)
        return EXIT_RUNTIME;
    conf_t *conf = conf_load(a->config, errs);
    if (conf == NULL) {
        print_conf_errors(a->config, errs, 0);
        fprintf(stderr, "%s: %zu problem%s\n", a->config, errs->count, errs->count == 1 ? "" : "s");
        free(errs);
        return EXIT_CONFIG;
    }
    printf("%s: OK (%zu source%s, %zu sink%s)\n", a->config, conf->nsources,
           conf->nsources == 1 ? "" : "s", conf->nsinks, conf->nsinks == 1 ? "" : "s");
    for (size_t i = 0; i < conf->nsources; i++)
        printf("  source %-24s %-18s every %ds\n", conf->sources[i].name,
               conf->sources[i].provider->name, conf->sources[i].interval_s);
    for (size_t i = 0; i < conf->nsinks; i++)
        printf("  sink   %-24s %s\n", conf->sinks[i].name, conf->sinks[i].type->name);
    conf_free(conf);
    free(errs);
    return 0;
}

static int cmd_daemon(const args_t *a, int once)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    char err[512];
    int rc = EXIT_RUNTIME;
    engine_t *e = NULL;
    metrics_t *metrics = NULL;
    bridge_metrics_t *bm = NULL;
    admin_t *admin = NULL;

    if (errs == NULL)
        return EXIT_RUNTIME;
    conf_t *conf = conf_load(a->config, errs);
    if (conf == NULL) {
        print_conf_errors(a->config, errs, 1);
        free(errs);
        return EXIT_CONFIG;
    }
    free(errs);
    if (a->source && conf_find_source(conf, a->source) == NULL) {
        LOG_ERROR("no such source in the configuration", LF_S("source", a->source),
                  LF_S("file", a->config));
        conf_free(conf);
        return EXIT_USAGE;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A file sink over RLIMIT_FSIZE gets EFBIG from write() and reports it, instead of dying. */
    signal(SIGXFSZ, SIG_IGN);

    LOG_INFO("starting", LF_S("version", SB_VERSION), LF_S("mode", once ? "once" : "run"),
             LF_S("config", a->config), LF_S("librdkafka", rd_kafka_version_str()));
    e = engine_new(conf, &stop_requested, err, sizeof(err));
    if (e == NULL) {
        LOG_ERROR("cannot start", LF_S("error", err));
        goto out;
    }
    if (once) {
        rc = engine_run_once(e, a->source) == 0 ? 0 : EXIT_RUNTIME;
        goto out;
    }
    /* run: the admin endpoint (CONTRACT §8), answered from what the engine publishes */
    metrics = metrics_new();
    bm = metrics ? bridge_metrics_new(metrics, err, sizeof(err)) : NULL;
    if (bm == NULL) {
        LOG_ERROR("cannot start", LF_S("error", metrics ? err : "out of memory"));
        goto out;
    }
    admin_options_t ao = {
        .listen = conf->admin_listen, .metrics = metrics, .ready = engine_ready, .opaque = e};
    admin = admin_start(&ao, err, sizeof(err));
    if (admin == NULL) {
        LOG_ERROR("cannot serve the admin endpoint", LF_S("listen", conf->admin_listen),
                  LF_S("error", err));
        goto out;
    }
    LOG_INFO("admin endpoint listening", LF_S("listen", conf->admin_listen),
             LF_I("port", admin_port(admin)));
    engine_observe(e,
                   &(engine_observer_t){.metrics = bm, .heartbeat = admin_beat, .opaque = admin});
    rc = engine_run(e) == 0 ? 0 : EXIT_RUNTIME;
out:
    /* before the engine: the readiness callback reads it */
    admin_stop(admin);
    engine_free(e);
    bridge_metrics_free(bm);
    metrics_free(metrics);
    conf_free(conf);
    LOG_INFO("exiting", LF_I("code", rc));
    return rc;
}

static int cmd_dlq(const args_t *a, dlq_action_t action)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    int rc;

    if (errs == NULL)
        return EXIT_RUNTIME;
    conf_t *conf = conf_load(a->config, errs);
    if (conf == NULL) {
        print_conf_errors(a->config, errs, 0);
        free(errs);
        return EXIT_CONFIG;
    }
    free(errs);
    int found = a->sink == NULL;
    for (size_t i = 0; !found && i < conf->nsinks; i++)
        found = strcmp(conf->sinks[i].name, a->sink) == 0;
    if (!found) {
        fprintf(stderr, "session-bridge dlq: no sink named \"%s\" in %s\n", a->sink, a->config);
        conf_free(conf);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = dlq_run(conf, action, a->sink) == 0 ? 0 : EXIT_RUNTIME;
    conf_free(conf);
    return rc;
}

int main(int argc, char **argv)
{
    args_t a;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0)) {
        printf("session-bridge %s (librdkafka %s, %s)\n", SB_VERSION, rd_kafka_version_str(),
               curl_version());
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "sinks") == 0)
        return cmd_sinks();
    if (parse_args(argc, argv, &a) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    int is_run = strcmp(a.cmd, "run") == 0, is_once = strcmp(a.cmd, "once") == 0,
        is_check = strcmp(a.cmd, "check") == 0, is_dlq = strcmp(a.cmd, "dlq") == 0;
    dlq_action_t action = DLQ_LIST;
    if (is_dlq && dlq_action_parse(a.action, &action) != 0) {
        fprintf(stderr, "session-bridge dlq: expected list, replay or purge\n\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (a.sink && !is_dlq) {
        fprintf(stderr, "session-bridge %s: --sink only goes with dlq\n", a.cmd);
        return EXIT_USAGE;
    }
    if (!is_run && !is_once && !is_check && !is_dlq) {
        fprintf(stderr, "session-bridge: unknown command \"%s\"\n\n", a.cmd);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (a.config == NULL) {
        fprintf(stderr, "session-bridge %s: -c FILE is required\n", a.cmd);
        return EXIT_USAGE;
    }
    if (a.source && !is_once) {
        fprintf(stderr, "session-bridge %s: --source only goes with once\n", a.cmd);
        return EXIT_USAGE;
    }
    /* The environment configures the process as the file does: a bad
     * value is a configuration error, named before anything runs. */
    char log_err[160];
    if (log_init_from_env(log_err, sizeof(log_err)) != 0) {
        fprintf(stderr, "session-bridge: %s\n", log_err);
        return EXIT_CONFIG;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "session-bridge: libcurl failed to initialise\n");
        return EXIT_RUNTIME;
    }
    int rc = is_check ? cmd_check(&a) : is_dlq ? cmd_dlq(&a, action) : cmd_daemon(&a, is_once);
    curl_global_cleanup();
    return rc;
}
