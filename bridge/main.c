/*
 * session-bridge: runs the commands of CONTRACT §2, as cli.c reads them.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "admin.h"
#include "bridge_metrics.h"
#include "cli.h"
#include "config.h"
#include "connect_check.h"
#include "dlq.h"
#include "engine.h"
#include "log.h"
#include "status.h"

/* sysexits.h: EX_USAGE is 64, but the contract says 2 for usage errors. */
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_CONFIG 78

static volatile sig_atomic_t stop_requested, reload_requested;

/* Until the engine's loop watches them (and again after it): a stop, or a SIGHUP noted. */
static void on_signal(int sig)
{
    if (sig == SIGHUP)
        reload_requested = 1;
    else
        stop_requested = 1;
}

/* The engine's heartbeat, on its loop's thread: the admin endpoint's liveness. */
static void admin_beat(void *opaque)
{
    admin_heartbeat(opaque);
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

static int cmd_check(const cli_args_t *a)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    if (errs == NULL)
        return EXIT_RUNTIME;
    conf_t *conf = conf_load(a->opt[CLI_OPT_CONFIG], errs);
    if (conf == NULL) {
        print_conf_errors(a->opt[CLI_OPT_CONFIG], errs, 0);
        fprintf(stderr, "%s: %zu problem%s\n", a->opt[CLI_OPT_CONFIG], errs->count,
                errs->count == 1 ? "" : "s");
        free(errs);
        return EXIT_CONFIG;
    }
    printf("%s: OK (%zu source%s, %zu sink%s)\n", a->opt[CLI_OPT_CONFIG], conf->nsources,
           conf->nsources == 1 ? "" : "s", conf->nsinks, conf->nsinks == 1 ? "" : "s");
    if (a->opt[CLI_OPT_CONNECT]) {
        /* A closed socket is an answer to report, not a reason to die. */
        signal(SIGPIPE, SIG_IGN);
        int rc = connect_check_run(conf, stdout) == 0 ? 0 : EXIT_RUNTIME;
        conf_free(conf);
        free(errs);
        return rc;
    }
    for (size_t i = 0; i < conf->nsources; i++)
        printf("  source %-24s %-18s every %ds\n", conf->sources[i].name,
               conf->sources[i].provider->name, conf->sources[i].interval_s);
    for (size_t i = 0; i < conf->nsinks; i++)
        printf("  sink   %-24s %s\n", conf->sinks[i].name, conf->sinks[i].type->name);
    conf_free(conf);
    free(errs);
    return 0;
}

static int cmd_daemon(const cli_args_t *a, int once)
{
    int dry_run = a->opt[CLI_OPT_DRY_RUN] != NULL;
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    char err[512];
    int rc = EXIT_RUNTIME;
    engine_t *e = NULL;
    metrics_t *metrics = NULL;
    bridge_metrics_t *bm = NULL;
    admin_t *admin = NULL;

    /* First: a SIGHUP that comes while the file is read must not end the process (129). */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A file sink over RLIMIT_FSIZE gets EFBIG from write() and reports it, instead of dying. */
    signal(SIGXFSZ, SIG_IGN);

    if (errs == NULL)
        return EXIT_RUNTIME;
    conf_t *conf = conf_load(a->opt[CLI_OPT_CONFIG], errs);
    if (conf == NULL) {
        print_conf_errors(a->opt[CLI_OPT_CONFIG], errs, 1);
        free(errs);
        return EXIT_CONFIG;
    }
    free(errs);
    if (a->opt[CLI_OPT_SOURCE] && conf_find_source(conf, a->opt[CLI_OPT_SOURCE]) == NULL) {
        LOG_ERROR("no such source in the configuration", LF_S("source", a->opt[CLI_OPT_SOURCE]),
                  LF_S("file", a->opt[CLI_OPT_CONFIG]));
        conf_free(conf);
        return EXIT_USAGE;
    }

    LOG_INFO("starting", LF_S("version", SB_VERSION),
             LF_S("mode", dry_run ? "once --dry-run"
                          : once  ? "once"
                                  : "run"),
             LF_S("config", a->opt[CLI_OPT_CONFIG]), LF_S("librdkafka", rd_kafka_version_str()));
    e = dry_run ? engine_new_dry_run(conf, &stop_requested, stdout, err, sizeof(err))
                : engine_new(conf, &stop_requested, err, sizeof(err));
    if (e == NULL) {
        LOG_ERROR("cannot start", LF_S("error", err));
        goto out;
    }
    if (once) {
        if (reload_requested)
            LOG_INFO("SIGHUP ignored: once reads its configuration once");
        rc = engine_run_once(e, a->opt[CLI_OPT_SOURCE]) == 0 ? 0 : EXIT_RUNTIME;
        goto out;
    }
    /* The engine's loop watches SIGHUP from engine_new() on; one before it is read again now. */
    if (engine_reload_on_hup(e, a->opt[CLI_OPT_CONFIG]) != 0) {
        LOG_ERROR("cannot start", LF_S("error", "out of memory"));
        goto out;
    }
    if (reload_requested)
        engine_reload_request(e);
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

/*
 * The configuration of a command that prints to a terminal: its problems
 * on stderr. 0 with *conf (owned by the caller), or the exit code.
 */
static int load_for_cli(const char *path, conf_t **conf)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));

    if (errs == NULL)
        return EXIT_RUNTIME;
    *conf = conf_load(path, errs);
    if (*conf == NULL)
        print_conf_errors(path, errs, 0);
    free(errs);
    return *conf ? 0 : EXIT_CONFIG;
}

/* `status`: Redis unreachable is one line and exit 1; nothing is logged as JSON. */
static int cmd_status(const cli_args_t *a)
{
    char err[512] = "";
    status_result_t r;
    conf_t *conf;
    int rc = load_for_cli(a->opt[CLI_OPT_CONFIG], &conf);

    if (rc != 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    status_options_t so = {.source = a->opt[CLI_OPT_SOURCE], .json = a->opt[CLI_OPT_JSON] != NULL};
    r = status_run(conf, &so, stdout, err, sizeof(err));
    conf_free(conf);
    if (r != STATUS_OK)
        fprintf(stderr, "session-bridge status: %s\n", err);
    return r == STATUS_OK ? 0 : r == STATUS_NO_SUCH_SOURCE ? EXIT_USAGE : EXIT_RUNTIME;
}

static int cmd_dlq(const cli_args_t *a)
{
    dlq_action_t action = DLQ_LIST;
    conf_t *conf;
    int rc;

    /* parse_args() took only a word of dlq_action_names */
    dlq_action_parse(a->action, &action);
    if ((rc = load_for_cli(a->opt[CLI_OPT_CONFIG], &conf)) != 0)
        return rc;
    int found = a->opt[CLI_OPT_SINK] == NULL;
    for (size_t i = 0; !found && i < conf->nsinks; i++)
        found = strcmp(conf->sinks[i].name, a->opt[CLI_OPT_SINK]) == 0;
    if (!found) {
        fprintf(stderr, "session-bridge dlq: no sink named \"%s\" in %s\n", a->opt[CLI_OPT_SINK],
                a->opt[CLI_OPT_CONFIG]);
        conf_free(conf);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = dlq_run(conf, action, a->opt[CLI_OPT_SINK]) == 0 ? 0 : EXIT_RUNTIME;
    conf_free(conf);
    return rc;
}

static int cmd_version(void)
{
    printf("session-bridge %s (librdkafka %s, %s)\n", SB_VERSION, rd_kafka_version_str(),
           curl_version());
    return 0;
}

int main(int argc, char **argv)
{
    cli_args_t a;

    switch (cli_parse(argc, argv, &a)) {
    case CLI_OK:
        break;
    case CLI_SHOW_HELP:
        cli_command_usage(a.cmd, stdout);
        return 0;
    case CLI_USAGE_ERROR:
        return EXIT_USAGE;
    }
    switch (a.cmd) {
    case CLI_HELP:
        cli_usage(stdout);
        return 0;
    case CLI_VERSION:
        return cmd_version();
    case CLI_SINKS:
        return cmd_sinks();
    default:
        break;
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
    int rc = a.cmd == CLI_CHECK    ? cmd_check(&a)
             : a.cmd == CLI_DLQ    ? cmd_dlq(&a)
             : a.cmd == CLI_STATUS ? cmd_status(&a)
                                   : cmd_daemon(&a, a.cmd == CLI_ONCE);
    curl_global_cleanup();
    return rc;
}
