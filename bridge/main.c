/*
 * session-bridge: the command line of CONTRACT §2.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
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
#include "suggest.h"

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

/* ---- the command line: its commands and options, as tables ---- */

typedef enum command_id {
    CMD_RUN,
    CMD_ONCE,
    CMD_CHECK,
    CMD_DLQ,
    CMD_SINKS,
    CMD_VERSION,
    CMD_HELP,
    CMD_COUNT,
} command_id_t;

#define ON(cmd) (1u << (cmd))
#define ON_ALL ((1u << CMD_COUNT) - 1)

/*
 * A command: what its usage line shows after the name, one line for the
 * list, and its own help. Which options it takes is said by the options
 * table, so that adding a flag is one row there.
 */
typedef struct command {
    const char *name;
    const char *synopsis; /* after "session-bridge NAME" */
    const char *summary;  /* the list's line */
    const char *details;  /* the command's help, after its usage line */
    bool needs_config;
    const char *const *actions; /* the word after the command (dlq), NULL-terminated */
} command_t;

static const command_t commands[CMD_COUNT] = {
    [CMD_RUN] = {"run", "-c FILE", "poll every source until SIGTERM/SIGINT",
                 "The daemon: polls every source, delivers every event to its sinks, commits\n"
                 "each source's snapshot to Redis, and serves /healthz, /readyz and /metrics\n"
                 "on admin.listen. SIGTERM or SIGINT: finish, flush, exit 0.\n"
                 "Exit codes: 0 stopped by a signal, 1 runtime failure, 2 usage error,\n"
                 "78 configuration error.\n",
                 true, NULL},
    [CMD_ONCE] = {"once", "-c FILE [--source NAME]", "one poll cycle per source, then exit",
                  "One poll cycle per source (or only NAME): deliver the events, commit the\n"
                  "snapshots, exit. No admin endpoint.\n"
                  "Exit codes: 0 every source done, 1 a source failed (nothing committed for\n"
                  "it), 2 usage error or no such source, 78 configuration error.\n",
                  true, NULL},
    [CMD_CHECK] = {"check", "-c FILE", "validate the configuration, print what is wrong",
                   "Validates the configuration file: prints every problem as\n"
                   "FILE: JSON.PATH: what was expected, or OK with the sources and sinks.\n"
                   "Contacts nothing.\n"
                   "Exit codes: 0 valid, 2 usage error, 78 configuration error.\n",
                   true, NULL},
    [CMD_DLQ] = {"dlq", "list|replay|purge -c FILE [--sink NAME]",
                 "dead letters: list, hand to their sink again, or delete",
                 "The events that exhausted their sink's retries:\n"
                 "  list    print them, one JSON object per line\n"
                 "  replay  hand them to their sink again (those delivered leave the store)\n"
                 "  purge   delete them\n"
                 "Exit codes: 0 done, 1 Redis failed or a replay was not delivered,\n"
                 "2 usage error or no such sink, 78 configuration error.\n",
                 true, dlq_action_names},
    [CMD_SINKS] = {"sinks", "", "the sink types and their keys",
                   "Prints the keys every sink has, then each built-in type's keys (type,\n"
                   "bounds, default, description): the tables check validates against.\n",
                   false, NULL},
    [CMD_VERSION] = {"version", "", "the version, with librdkafka's and libcurl's",
                     "Prints the version of session-bridge and of the libraries it runs on.\n",
                     false, NULL},
    [CMD_HELP] = {"help", "[COMMAND]", "this help, or a command's",
                  "Prints the list of commands, or COMMAND's usage and options.\n", false, NULL},
};

typedef enum option_id {
    OPT_CONFIG,
    OPT_SOURCE,
    OPT_SINK,
    OPT_HELP,
    OPT_COUNT,
} option_id_t;

typedef struct cli_option {
    const char *name;  /* the long name, without "--" */
    char letter;       /* the short name, 0: none */
    const char *arg;   /* the value's name in the help, NULL: a flag */
    unsigned commands; /* ON(CMD_...) of the commands that take it */
    const char *help;
} cli_option_t;

static const cli_option_t options[OPT_COUNT] = {
    [OPT_CONFIG] = {"config", 'c', "FILE", ON(CMD_RUN) | ON(CMD_ONCE) | ON(CMD_CHECK) | ON(CMD_DLQ),
                    "the configuration file (JSON)"},
    [OPT_SOURCE] = {"source", 0, "NAME", ON(CMD_ONCE), "only the source named NAME"},
    [OPT_SINK] = {"sink", 0, "NAME", ON(CMD_DLQ), "only the dead letters of the sink named NAME"},
    [OPT_HELP] = {"help", 'h', NULL, ON_ALL, "print this help and exit"},
};

typedef struct args {
    command_id_t cmd;
    const char *action;         /* dlq's */
    const char *opt[OPT_COUNT]; /* each option's value; a flag's is "" when given */
} args_t;

/* Where a command line ends up: run the command, print help, or refuse it. */
typedef enum parse_result {
    PARSE_OK = 0,
    PARSE_HELP,
    PARSE_USAGE_ERROR,
} parse_result_t;

static bool takes(command_id_t cmd, option_id_t o)
{
    return (options[o].commands & ON(cmd)) != 0;
}

/* "-c, --config FILE" or "    --source NAME" into buf. */
static const char *option_label(char *buf, size_t size, option_id_t o)
{
    const cli_option_t *opt = &options[o];
    const char *arg = opt->arg ? opt->arg : "";

    if (opt->letter)
        snprintf(buf, size, "-%c, --%s%s%s", opt->letter, opt->name, *arg ? " " : "", arg);
    else
        snprintf(buf, size, "    --%s%s%s", opt->name, *arg ? " " : "", arg);
    return buf;
}

static void usage(FILE *out)
{
    fprintf(out,
            "session-bridge %s: lifecycle events from \"list sessions\" APIs\n"
            "\n"
            "Usage: session-bridge COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n",
            SB_VERSION);
    for (int c = 0; c < CMD_COUNT; c++) {
        char line[128];

        snprintf(line, sizeof(line), "%s %s", commands[c].name, commands[c].synopsis);
        if (strlen(line) > 32)
            fprintf(out, "  %s\n  %-32s  %s\n", line, "", commands[c].summary);
        else
            fprintf(out, "  %-32s  %s\n", line, commands[c].summary);
    }
    fprintf(out, "\n"
                 "Run \"session-bridge COMMAND --help\" for a command's options.\n"
                 "Exit codes: 0 success, 1 runtime failure (nothing committed for the failed\n"
                 "source), 2 usage error, 78 configuration error.\n"
                 "Environment: SB_LOG_LEVEL=error|warn|info|debug (default info). Strings in\n"
                 "the configuration may use ${VAR} and ${VAR:-default}.\n");
}

static void command_usage(command_id_t cmd, FILE *out)
{
    const command_t *c = &commands[cmd];
    char label[64];

    fprintf(out, "Usage: session-bridge %s%s%s\n\n%s\nOptions:\n", c->name, *c->synopsis ? " " : "",
            c->synopsis, c->details);
    for (int o = 0; o < OPT_COUNT; o++) {
        if (takes(cmd, (option_id_t)o))
            fprintf(out, "  %-20s  %s\n", option_label(label, sizeof(label), (option_id_t)o),
                    options[o].help);
    }
}

/* "list, replay or purge": the command's actions. */
static const char *command_actions(command_id_t cmd, char *buf, size_t size)
{
    const char *const *w = commands[cmd].actions;
    size_t n = 0;

    buf[0] = '\0';
    for (size_t k = 0; w && w[k] && n < size; k++) {
        int r = snprintf(buf + n, size - n, "%s%s", k == 0 ? "" : w[k + 1] ? ", " : " or ", w[k]);
        n += r > 0 ? (size_t)r : 0;
    }
    return buf;
}

/* The command named word, or -1. */
static int command_find(const char *word)
{
    for (int c = 0; c < CMD_COUNT; c++) {
        if (strcmp(word, commands[c].name) == 0)
            return c;
    }
    return -1;
}

/* Prints the problem, then where help is; always PARSE_USAGE_ERROR. */
static parse_result_t refuse(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static parse_result_t refuse(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "session-bridge%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun \"session-bridge %s%s--help\" for usage.\n", cmd ? cmd : "",
            cmd ? " " : "");
    return PARSE_USAGE_ERROR;
}

/* ' (did you mean "x"?)' when a candidate is close, else "". */
static const char *did_you_mean(char *buf, size_t size, const suggest_t *s)
{
    if (!suggest_best(s))
        return "";
    snprintf(buf, size, " (did you mean \"%s\"?)", suggest_best(s));
    return buf;
}

/* The option whose short name is letter (one of shortopts: there is one). */
static int option_by_letter(int letter)
{
    int o = 0;

    while (o < OPT_COUNT - 1 && options[o].letter != letter)
        o++;
    return o;
}

/* "run, once, check": the commands that take option o, into buf. */
static const char *commands_taking(option_id_t o, char *buf, size_t size)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int k = 0; k < CMD_COUNT && n < size; k++) {
        if (takes((command_id_t)k, o)) {
            int w = snprintf(buf + n, size - n, "%s%s", n ? ", " : "", commands[k].name);
            n += w > 0 ? (size_t)w : 0;
        }
    }
    return buf;
}

/* An option of other commands: say which take it. */
static parse_result_t option_elsewhere(command_id_t cmd, option_id_t o)
{
    char with[96];

    return refuse(commands[cmd].name, "--%s goes with %s, not %s", options[o].name,
                  commands_taking(o, with, sizeof(with)), commands[cmd].name);
}

/* An option the command does not know: the nearest of its own, if one is close. */
static parse_result_t unknown_option(command_id_t cmd, const char *arg)
{
    char word[SUGGEST_WORD_MAX + 1], spelled[OPT_COUNT][24], hint[128] = "";
    suggest_t own, other;

    /* "--sorce=x" is measured as "--sorce" */
    snprintf(word, sizeof(word), "%.*s", (int)strcspn(arg, "="), arg);
    suggest_init(&own, word);
    suggest_init(&other, word);
    for (int o = 0; o < OPT_COUNT; o++) {
        snprintf(spelled[o], sizeof(spelled[o]), "--%s", options[o].name);
        suggest_offer(takes(cmd, (option_id_t)o) ? &own : &other, spelled[o]);
    }
    if (suggest_best(&own)) {
        snprintf(hint, sizeof(hint), " (did you mean \"%s\"?)", suggest_best(&own));
    } else if (suggest_best(&other)) {
        /* "check --sorce": the option exists, for another command */
        int o = 0;
        char with[96];

        while (spelled[o] != suggest_best(&other))
            o++;
        snprintf(hint, sizeof(hint), " (%s goes with %s)", spelled[o],
                 commands_taking((option_id_t)o, with, sizeof(with)));
    }
    return refuse(commands[cmd].name, "unknown option \"%s\"%s", word, hint);
}

/* Whether arg is "--name" or "--name=...", not an abbreviation of it. */
static int spelled_out(const char *arg, const char *name)
{
    size_t n = strlen(name);

    return strncmp(arg + 2, name, n) == 0 && (arg[2 + n] == '\0' || arg[2 + n] == '=');
}

static parse_result_t unknown_command(const char *word)
{
    char hint[64];
    suggest_t s;

    suggest_init(&s, word);
    for (int k = 0; k < CMD_COUNT; k++)
        suggest_offer(&s, commands[k].name);
    return refuse(NULL, "unknown command \"%s\"%s", word, did_you_mean(hint, sizeof(hint), &s));
}

/* The word after the command when it must be one of words (dlq's actions). */
static parse_result_t parse_action(command_id_t cmd, const char *word, const char *const *words)
{
    char hint[64], names[128];
    suggest_t s;

    suggest_init(&s, word);
    for (size_t k = 0; words[k]; k++) {
        if (strcmp(words[k], word) == 0)
            return PARSE_OK;
        suggest_offer(&s, words[k]);
    }
    return refuse(commands[cmd].name, "unknown action \"%s\"%s, expected %s", word,
                  did_you_mean(hint, sizeof(hint), &s), command_actions(cmd, names, sizeof(names)));
}

static bool is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* `help [COMMAND]`, `--help`, `--version`: the lines that are not a command and its options. */
static parse_result_t parse_help(int argc, char **argv, args_t *a)
{
    int c;

    a->cmd = strcmp(argv[1], "--version") == 0 ? CMD_VERSION : CMD_HELP;
    if (argc == 2)
        return PARSE_OK;
    if (a->cmd == CMD_VERSION || argc > 3)
        return refuse(NULL, "unexpected argument \"%s\"", argv[a->cmd == CMD_VERSION ? 2 : 3]);
    if (is_help(argv[2]))
        return PARSE_HELP; /* help's own */
    if ((c = command_find(argv[2])) < 0)
        return unknown_command(argv[2]);
    a->cmd = (command_id_t)c;
    return PARSE_HELP;
}

/*
 * Reads the command line into a: the command word (and dlq's action), then
 * its options, each as "--opt VALUE" or "--opt=VALUE" (-c FILE, -cFILE).
 * getopt_long() prints nothing (opterr = 0): every mistake is reported
 * here, with the nearest command, action or option when one is close, and
 * options are not permuted, so a stray word is one too. Long options are
 * taken only when spelled out: an abbreviation ("--conf") that one more
 * option could make ambiguous is refused now rather than broken later.
 * -h or --help after the command is PARSE_HELP, whatever else the line holds.
 */
static parse_result_t parse_args(int argc, char **argv, args_t *a)
{
    /* getopt_long()'s value for options[o]: above every character, so that 0 is no option */
    enum { LONG_BASE = 0x100 };
    struct option longopts[OPT_COUNT + 1] = {{0}};
    char shortopts[2 * OPT_COUNT + 3] = "+:", hint[128];
    int first = 2, c, at, li;

    memset(a, 0, sizeof(*a));
    if (argc < 2)
        return refuse(NULL, "expected a command");
    if (strcmp(argv[1], "help") == 0 || is_help(argv[1]) || strcmp(argv[1], "--version") == 0)
        return parse_help(argc, argv, a);
    if ((c = command_find(argv[1])) < 0) {
        if (argv[1][0] == '-')
            return refuse(NULL, "expected a command before \"%s\"", argv[1]);
        return unknown_command(argv[1]);
    }
    a->cmd = (command_id_t)c;
    for (int i = first; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (is_help(argv[i]))
            return PARSE_HELP;
    }
    if (commands[c].actions && argc > 2 && argv[2][0] != '-') {
        a->action = argv[first++];
        if (parse_action(a->cmd, a->action, commands[c].actions) != PARSE_OK)
            return PARSE_USAGE_ERROR;
    }
    for (int o = 0; o < OPT_COUNT; o++) {
        longopts[o] = (struct option){
            options[o].name, options[o].arg ? required_argument : no_argument, NULL, LONG_BASE + o};
        if (options[o].letter) {
            size_t n = strlen(shortopts);

            shortopts[n++] = options[o].letter;
            if (options[o].arg)
                shortopts[n++] = ':';
            shortopts[n] = '\0';
        }
    }
    /* getopt_long() reads from argv[1]: the word before the options stands in for argv[0]. */
    argc -= first - 1;
    argv += first - 1;
    opterr = 0;
    optind = 1;
    while ((at = optind, li = -1, c = getopt_long(argc, argv, shortopts, longopts, &li)) != -1) {
        int o;

        if (c == ':')
            return refuse(commands[a->cmd].name, "\"%s\" expects a value", argv[at]);
        if (c == '?' || (li >= 0 && !spelled_out(argv[at], longopts[li].name)))
            return unknown_option(a->cmd, argv[at]);
        o = c >= LONG_BASE ? c - LONG_BASE : option_by_letter(c);
        if (!takes(a->cmd, (option_id_t)o))
            return option_elsewhere(a->cmd, (option_id_t)o);
        a->opt[o] = options[o].arg ? optarg : "";
    }
    if (a->opt[OPT_HELP]) /* within a cluster: "-hc" */
        return PARSE_HELP;
    if (optind < argc)
        return refuse(commands[a->cmd].name, "unexpected argument \"%s\"", argv[optind]);
    if (commands[a->cmd].actions && !a->action)
        return refuse(commands[a->cmd].name, "expected %s first",
                      command_actions(a->cmd, hint, sizeof(hint)));
    if (commands[a->cmd].needs_config && !a->opt[OPT_CONFIG])
        return refuse(commands[a->cmd].name, "-c FILE is required");
    return PARSE_OK;
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
    conf_t *conf = conf_load(a->opt[OPT_CONFIG], errs);
    if (conf == NULL) {
        print_conf_errors(a->opt[OPT_CONFIG], errs, 0);
        fprintf(stderr, "%s: %zu problem%s\n", a->opt[OPT_CONFIG], errs->count,
                errs->count == 1 ? "" : "s");
        free(errs);
        return EXIT_CONFIG;
    }
    printf("%s: OK (%zu source%s, %zu sink%s)\n", a->opt[OPT_CONFIG], conf->nsources,
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
    conf_t *conf = conf_load(a->opt[OPT_CONFIG], errs);
    if (conf == NULL) {
        print_conf_errors(a->opt[OPT_CONFIG], errs, 1);
        free(errs);
        return EXIT_CONFIG;
    }
    free(errs);
    if (a->opt[OPT_SOURCE] && conf_find_source(conf, a->opt[OPT_SOURCE]) == NULL) {
        LOG_ERROR("no such source in the configuration", LF_S("source", a->opt[OPT_SOURCE]),
                  LF_S("file", a->opt[OPT_CONFIG]));
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
             LF_S("config", a->opt[OPT_CONFIG]), LF_S("librdkafka", rd_kafka_version_str()));
    e = engine_new(conf, &stop_requested, err, sizeof(err));
    if (e == NULL) {
        LOG_ERROR("cannot start", LF_S("error", err));
        goto out;
    }
    if (once) {
        rc = engine_run_once(e, a->opt[OPT_SOURCE]) == 0 ? 0 : EXIT_RUNTIME;
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

static int cmd_dlq(const args_t *a)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    dlq_action_t action = DLQ_LIST;
    int rc;

    /* parse_args() took only a word of dlq_action_names */
    dlq_action_parse(a->action, &action);
    if (errs == NULL)
        return EXIT_RUNTIME;
    conf_t *conf = conf_load(a->opt[OPT_CONFIG], errs);
    if (conf == NULL) {
        print_conf_errors(a->opt[OPT_CONFIG], errs, 0);
        free(errs);
        return EXIT_CONFIG;
    }
    free(errs);
    int found = a->opt[OPT_SINK] == NULL;
    for (size_t i = 0; !found && i < conf->nsinks; i++)
        found = strcmp(conf->sinks[i].name, a->opt[OPT_SINK]) == 0;
    if (!found) {
        fprintf(stderr, "session-bridge dlq: no sink named \"%s\" in %s\n", a->opt[OPT_SINK],
                a->opt[OPT_CONFIG]);
        conf_free(conf);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = dlq_run(conf, action, a->opt[OPT_SINK]) == 0 ? 0 : EXIT_RUNTIME;
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
    args_t a;

    switch (parse_args(argc, argv, &a)) {
    case PARSE_OK:
        break;
    case PARSE_HELP:
        command_usage(a.cmd, stdout);
        return 0;
    case PARSE_USAGE_ERROR:
        return EXIT_USAGE;
    }
    switch (a.cmd) {
    case CMD_HELP:
        usage(stdout);
        return 0;
    case CMD_VERSION:
        return cmd_version();
    case CMD_SINKS:
        return cmd_sinks();
    default:
        break;
    }
    if (log_init_from_env() != 0) {
        fprintf(stderr, "session-bridge: SB_LOG_LEVEL must be error, warn, info or debug\n");
        return EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "session-bridge: libcurl failed to initialise\n");
        return EXIT_RUNTIME;
    }
    int rc = a.cmd == CMD_CHECK ? cmd_check(&a)
             : a.cmd == CMD_DLQ ? cmd_dlq(&a)
                                : cmd_daemon(&a, a.cmd == CMD_ONCE);
    curl_global_cleanup();
    return rc;
}
