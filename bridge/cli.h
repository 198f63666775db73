/*
 * cli: the command line of CONTRACT §2, read from two tables (the commands,
 * and their options): the parse of argv, the list of commands and each
 * command's help. main.c runs what it reads. Adding a flag is one row of
 * the options table (cli.c) and one value of cli_option_id_t.
 */
#ifndef SB_CLI_H
#define SB_CLI_H

#include <stdio.h>

typedef enum cli_command {
    CLI_RUN,
    CLI_ONCE,
    CLI_CHECK,
    CLI_STATUS,
    CLI_DLQ,
    CLI_SINKS,
    CLI_VERSION,
    CLI_HELP,
    CLI_COMMAND_COUNT,
} cli_command_t;

typedef enum cli_option_id {
    CLI_OPT_CONFIG,  /* -c, --config FILE */
    CLI_OPT_SOURCE,  /* --source NAME */
    CLI_OPT_SINK,    /* --sink NAME */
    CLI_OPT_DRY_RUN, /* --dry-run */
    CLI_OPT_JSON,    /* --json */
    CLI_OPT_CONNECT, /* --connect */
    CLI_OPT_HELP,    /* -h, --help (last: option_by_letter() falls back on it) */
    CLI_OPT_COUNT,
} cli_option_id_t;

typedef struct cli_args {
    cli_command_t cmd;
    const char *action;             /* dlq's: one of dlq_action_names */
    const char *opt[CLI_OPT_COUNT]; /* each option's value (into argv), NULL when not given;
                                       a flag's is "" */
} cli_args_t;

/* Where a command line ends up: run the command, print its help, or refuse it. */
typedef enum cli_result {
    CLI_OK = 0,
    CLI_SHOW_HELP, /* cli_command_usage(a->cmd) */
    CLI_USAGE_ERROR,
} cli_result_t;

/*
 * Reads the command line into a: the command word (and dlq's action), then
 * its options, each as "--opt VALUE" or "--opt=VALUE" (-c FILE, -cFILE).
 * Every mistake is printed here, on stderr, as one line with the nearest
 * command, action or option when one is close (an option of another
 * command says which takes it), then where help is: CLI_USAGE_ERROR.
 * Options are not permuted, so a stray word is a mistake too; long options
 * are taken only when spelled out: an abbreviation ("--conf") that one more
 * option could make ambiguous is refused now rather than broken later.
 * -h or --help after the command is CLI_SHOW_HELP, whatever else the line
 * holds; so is `help COMMAND`. An option's value is never printed.
 */
cli_result_t cli_parse(int argc, char **argv, cli_args_t *a);

/* The list of commands (`session-bridge --help`). */
void cli_usage(FILE *out);
/* One command's usage line, what it does, its exit codes and its options. */
void cli_command_usage(cli_command_t cmd, FILE *out);

#endif /* SB_CLI_H */
