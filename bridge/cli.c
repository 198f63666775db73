/*
 * cli: see cli.h. The two tables below are the whole command line: a
 * command's usage line, summary and help text, and each option's names,
 * value and the commands that take it.
 */
#include "cli.h"
#include "dlq.h"
#include "suggest.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#define ON(cmd) (1u << (cmd))
#define ON_ALL ((1u << CLI_COMMAND_COUNT) - 1)

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

static const command_t commands[CLI_COMMAND_COUNT] = {
    [CLI_RUN] = {"run", "-c FILE", "poll every source until SIGTERM/SIGINT",
                 "The daemon: polls every source, delivers every event to its sinks, commits\n"
                 "each source's snapshot to Redis, and serves /healthz, /readyz and /metrics\n"
                 "on admin.listen. SIGTERM or SIGINT: finish, flush, exit 0. SIGHUP: read\n"
                 "FILE again and apply what changed; an invalid file is refused and logged,\n"
                 "the running configuration stays.\n"
                 "Exit codes: 0 stopped by a signal, 1 runtime failure, 2 usage error,\n"
                 "78 configuration error.\n",
                 true, NULL},
    [CLI_ONCE] = {"once", "-c FILE [--source NAME] [--dry-run]",
                  "one poll cycle per source, then exit",
                  "One poll cycle per source (or only NAME): deliver the events, commit the\n"
                  "snapshots, exit. No admin endpoint. With --dry-run: poll and diff, print\n"
                  "the events it would deliver on stdout (one JSON line each), and deliver,\n"
                  "commit and write to Redis nothing.\n"
                  "Exit codes: 0 every source done, 1 a source failed (nothing committed for\n"
                  "it), 2 usage error or no such source, 78 configuration error.\n",
                  true, NULL},
    [CLI_CHECK] = {"check", "-c FILE [--connect]",
                   "validate the configuration, print what is wrong",
                   "Validates the configuration file: prints every problem as\n"
                   "FILE: JSON.PATH: what was expected, or OK with the sources and sinks.\n"
                   "Contacts nothing, unless --connect: then it also reaches Redis, every sink\n"
                   "and every source with their credentials, writes nothing anywhere, and\n"
                   "prints one line per target (ok, FAILED or skipped, and what it found).\n"
                   "Exit codes: 0 valid (with --connect: and every target ok), 1 a target\n"
                   "failed (--connect), 2 usage error, 78 configuration error.\n",
                   true, NULL},
    [CLI_STATUS] = {"status", "-c FILE [--json] [--source NAME]",
                    "what each source and sink is doing, from Redis alone",
                    "What each source is doing, read from Redis alone (the same answer from any\n"
                    "replica, while the daemons run; nothing is written): the last commit, the\n"
                    "sessions tracked, the lease holder and its TTL, the last poll's outcome and\n"
                    "error; per sink, the dead letters, the outbox and the disabled flag. Also\n"
                    "the sources Redis holds that the configuration no longer names (marked *).\n"
                    "Exit codes: 0 done, 1 Redis unreachable or failing, 2 usage error or no\n"
                    "such source, 78 configuration error.\n",
                    true, NULL},
    [CLI_DLQ] = {"dlq", "list|replay|purge -c FILE [--sink NAME]",
                 "dead letters: list, hand to their sink again, or delete",
                 "The events that exhausted their sink's retries:\n"
                 "  list    print them, one JSON object per line\n"
                 "  replay  hand them to their sink again (those delivered leave the store)\n"
                 "  purge   delete them\n"
                 "Exit codes: 0 done, 1 Redis failed or a replay was not delivered,\n"
                 "2 usage error or no such sink, 78 configuration error.\n",
                 true, dlq_action_names},
    [CLI_SINKS] = {"sinks", "", "the sink types and their keys",
                   "Prints the keys every sink has, then each built-in type's keys (type,\n"
                   "bounds, default, description): the tables check validates against.\n",
                   false, NULL},
    [CLI_VERSION] = {"version", "", "the version, with librdkafka's and libcurl's",
                     "Prints the version of session-bridge and of the libraries it runs on.\n",
                     false, NULL},
    [CLI_HELP] = {"help", "[COMMAND]", "this help, or a command's",
                  "Prints the list of commands, or COMMAND's usage and options.\n", false, NULL},
};

typedef struct option_row {
    const char *name;  /* the long name, without "--" */
    char letter;       /* the short name, 0: none */
    const char *arg;   /* the value's name in the help, NULL: a flag */
    unsigned commands; /* ON(CLI_...) of the commands that take it */
    const char *help;
} option_t;

static const option_t options[CLI_OPT_COUNT] = {
    [CLI_OPT_CONFIG] = {"config", 'c', "FILE",
                        ON(CLI_RUN) | ON(CLI_ONCE) | ON(CLI_CHECK) | ON(CLI_STATUS) | ON(CLI_DLQ),
                        "the configuration file (JSON)"},
    [CLI_OPT_SOURCE] = {"source", 0, "NAME", ON(CLI_ONCE) | ON(CLI_STATUS),
                        "only the source named NAME"},
    [CLI_OPT_SINK] = {"sink", 0, "NAME", ON(CLI_DLQ),
                      "only the dead letters of the sink named NAME"},
    [CLI_OPT_DRY_RUN] = {"dry-run", 0, NULL, ON(CLI_ONCE),
                         "print the events instead of delivering them; write nothing"},
    [CLI_OPT_JSON] = {"json", 0, NULL, ON(CLI_STATUS), "one JSON object instead of the tables"},
    [CLI_OPT_CONNECT] = {"connect", 0, NULL, ON(CLI_CHECK),
                         "also reach Redis, every sink and every source; write nothing"},
    [CLI_OPT_HELP] = {"help", 'h', NULL, ON_ALL, "print this help and exit"},
};

static bool takes(cli_command_t cmd, cli_option_id_t o)
{
    return (options[o].commands & ON(cmd)) != 0;
}

/* "-c, --config FILE" or "    --source NAME" into buf. */
static const char *option_label(char *buf, size_t size, cli_option_id_t o)
{
    const option_t *opt = &options[o];
    const char *arg = opt->arg ? opt->arg : "";

    if (opt->letter)
        snprintf(buf, size, "-%c, --%s%s%s", opt->letter, opt->name, *arg ? " " : "", arg);
    else
        snprintf(buf, size, "    --%s%s%s", opt->name, *arg ? " " : "", arg);
    return buf;
}

void cli_usage(FILE *out)
{
    fprintf(out,
            "session-bridge %s: lifecycle events from \"list sessions\" APIs\n"
            "\n"
            "Usage: session-bridge COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n",
            SB_VERSION);
    for (int c = 0; c < CLI_COMMAND_COUNT; c++) {
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
                 "Environment: SB_LOG_LEVEL=error|warn|info|debug (default info),\n"
                 "SB_LOG_FORMAT=text|json (default text on a terminal, json otherwise). Strings\n"
                 "in the configuration may use ${VAR} and ${VAR:-default}.\n");
}

void cli_command_usage(cli_command_t cmd, FILE *out)
{
    const command_t *c = &commands[cmd];
    char label[64];

    fprintf(out, "Usage: session-bridge %s%s%s\n\n%s\nOptions:\n", c->name, *c->synopsis ? " " : "",
            c->synopsis, c->details);
    for (int o = 0; o < CLI_OPT_COUNT; o++) {
        if (takes(cmd, (cli_option_id_t)o))
            fprintf(out, "  %-20s  %s\n", option_label(label, sizeof(label), (cli_option_id_t)o),
                    options[o].help);
    }
}

/* "list, replay or purge": the command's actions. */
static const char *command_actions(cli_command_t cmd, char *buf, size_t size)
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
    for (int c = 0; c < CLI_COMMAND_COUNT; c++) {
        if (strcmp(word, commands[c].name) == 0)
            return c;
    }
    return -1;
}

/* Prints the problem, then where help is; always CLI_USAGE_ERROR. */
static cli_result_t refuse(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static cli_result_t refuse(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "session-bridge%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun \"session-bridge %s%s--help\" for usage.\n", cmd ? cmd : "",
            cmd ? " " : "");
    return CLI_USAGE_ERROR;
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

    while (o < CLI_OPT_COUNT - 1 && options[o].letter != letter)
        o++;
    return o;
}

/* "run, once, check": the commands that take option o, into buf. */
static const char *commands_taking(cli_option_id_t o, char *buf, size_t size)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int k = 0; k < CLI_COMMAND_COUNT && n < size; k++) {
        if (takes((cli_command_t)k, o)) {
            int w = snprintf(buf + n, size - n, "%s%s", n ? ", " : "", commands[k].name);
            n += w > 0 ? (size_t)w : 0;
        }
    }
    return buf;
}

/* An option of other commands: say which take it. */
static cli_result_t option_elsewhere(cli_command_t cmd, cli_option_id_t o)
{
    char with[96];

    return refuse(commands[cmd].name, "--%s goes with %s, not %s", options[o].name,
                  commands_taking(o, with, sizeof(with)), commands[cmd].name);
}

/* An option the command does not know: the nearest of its own, if one is close. */
static cli_result_t unknown_option(cli_command_t cmd, const char *arg)
{
    char word[SUGGEST_WORD_MAX + 1], spelled[CLI_OPT_COUNT][24], hint[128] = "";
    suggest_t own, other;

    /* "--sorce=x" is measured as "--sorce" */
    snprintf(word, sizeof(word), "%.*s", (int)strcspn(arg, "="), arg);
    suggest_init(&own, word);
    suggest_init(&other, word);
    for (int o = 0; o < CLI_OPT_COUNT; o++) {
        snprintf(spelled[o], sizeof(spelled[o]), "--%s", options[o].name);
        suggest_offer(takes(cmd, (cli_option_id_t)o) ? &own : &other, spelled[o]);
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
                 commands_taking((cli_option_id_t)o, with, sizeof(with)));
    }
    return refuse(commands[cmd].name, "unknown option \"%s\"%s", word, hint);
}

/* Whether arg is "--name" or "--name=...", not an abbreviation of it. */
static int spelled_out(const char *arg, const char *name)
{
    size_t n = strlen(name);

    return strncmp(arg + 2, name, n) == 0 && (arg[2 + n] == '\0' || arg[2 + n] == '=');
}

static cli_result_t unknown_command(const char *word)
{
    char hint[64];
    suggest_t s;

    suggest_init(&s, word);
    for (int k = 0; k < CLI_COMMAND_COUNT; k++)
        suggest_offer(&s, commands[k].name);
    return refuse(NULL, "unknown command \"%s\"%s", word, did_you_mean(hint, sizeof(hint), &s));
}

/* The word after the command when it must be one of words (dlq's actions). */
static cli_result_t parse_action(cli_command_t cmd, const char *word, const char *const *words)
{
    char hint[64], names[128];
    suggest_t s;

    suggest_init(&s, word);
    for (size_t k = 0; words[k]; k++) {
        if (strcmp(words[k], word) == 0)
            return CLI_OK;
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
static cli_result_t parse_help(int argc, char **argv, cli_args_t *a)
{
    int c;

    a->cmd = strcmp(argv[1], "--version") == 0 ? CLI_VERSION : CLI_HELP;
    if (argc == 2)
        return CLI_OK;
    if (a->cmd == CLI_VERSION || argc > 3)
        return refuse(NULL, "unexpected argument \"%s\"", argv[a->cmd == CLI_VERSION ? 2 : 3]);
    if (is_help(argv[2]))
        return CLI_SHOW_HELP; /* help's own */
    if ((c = command_find(argv[2])) < 0)
        return unknown_command(argv[2]);
    a->cmd = (cli_command_t)c;
    return CLI_SHOW_HELP;
}

cli_result_t cli_parse(int argc, char **argv, cli_args_t *a)
{
    /* getopt_long()'s value for options[o]: above every character, so that 0 is no option */
    enum { LONG_BASE = 0x100 };
    struct option longopts[CLI_OPT_COUNT + 1] = {{0}};
    char shortopts[2 * CLI_OPT_COUNT + 3] = "+:", hint[128];
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
    a->cmd = (cli_command_t)c;
    for (int i = first; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (is_help(argv[i]))
            return CLI_SHOW_HELP;
    }
    if (commands[c].actions && argc > 2 && argv[2][0] != '-') {
        a->action = argv[first++];
        if (parse_action(a->cmd, a->action, commands[c].actions) != CLI_OK)
            return CLI_USAGE_ERROR;
    }
    for (int o = 0; o < CLI_OPT_COUNT; o++) {
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
    optind = 0; /* glibc: 0 also resets its state within a cluster ("-cx"), for a second parse */
    /* at: the argument getopt_long() reads next (optind 0 means 1) */
    while ((at = optind ? optind : 1, li = -1,
            c = getopt_long(argc, argv, shortopts, longopts, &li)) != -1) {
        int o;

        if (c == ':')
            return refuse(commands[a->cmd].name, "\"%s\" expects a value", argv[at]);
        if (c == '?' || (li >= 0 && !spelled_out(argv[at], longopts[li].name)))
            return unknown_option(a->cmd, argv[at]);
        o = c >= LONG_BASE ? c - LONG_BASE : option_by_letter(c);
        if (!takes(a->cmd, (cli_option_id_t)o))
            return option_elsewhere(a->cmd, (cli_option_id_t)o);
        a->opt[o] = options[o].arg ? optarg : "";
    }
    if (a->opt[CLI_OPT_HELP]) /* within a cluster: "-hc" */
        return CLI_SHOW_HELP;
    if (optind < argc)
        return refuse(commands[a->cmd].name, "unexpected argument \"%s\"", argv[optind]);
    if (commands[a->cmd].actions && !a->action)
        return refuse(commands[a->cmd].name, "expected %s first",
                      command_actions(a->cmd, hint, sizeof(hint)));
    if (commands[a->cmd].needs_config && !a->opt[CLI_OPT_CONFIG])
        return refuse(commands[a->cmd].name, "-c FILE is required");
    return CLI_OK;
}
