/*
 * Unit tests of bridge/cli.c: what cli_parse() reads from a command line,
 * row by row (the command, dlq's action, each option's value, and the
 * result: run, help, or a usage error). The messages themselves, and the
 * help text, are the end-to-end tests' (tests/e2e/test_cli.py).
 */
#include "cli.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"

#define ARGV_MAX 8

static const struct {
    const char *argv[ARGV_MAX]; /* after "session-bridge", NULL-terminated */
    cli_result_t rc;
    cli_command_t cmd;
    const char *config, *source, *sink, *action;
} rows[] = {
    {.argv = {"run", "-c", "f.json"}, .rc = CLI_OK, .cmd = CLI_RUN, .config = "f.json"},
    {.argv = {"run", "-cf.json"}, .rc = CLI_OK, .cmd = CLI_RUN, .config = "f.json"},
    {.argv = {"run", "--config", "f.json"}, .rc = CLI_OK, .cmd = CLI_RUN, .config = "f.json"},
    {.argv = {"run", "--config=f.json"}, .rc = CLI_OK, .cmd = CLI_RUN, .config = "f.json"},
    {.argv = {"once", "-c", "f", "--source", "century"},
     .rc = CLI_OK,
     .cmd = CLI_ONCE,
     .config = "f",
     .source = "century"},
    {.argv = {"once", "--source=century", "-c", "f"},
     .rc = CLI_OK,
     .cmd = CLI_ONCE,
     .config = "f",
     .source = "century"},
    {.argv = {"check", "-c", "f"}, .rc = CLI_OK, .cmd = CLI_CHECK, .config = "f"},
    {.argv = {"dlq", "replay", "-c", "f", "--sink", "hook"},
     .rc = CLI_OK,
     .cmd = CLI_DLQ,
     .config = "f",
     .sink = "hook",
     .action = "replay"},
    {.argv = {"sinks"}, .rc = CLI_OK, .cmd = CLI_SINKS},
    {.argv = {"version"}, .rc = CLI_OK, .cmd = CLI_VERSION},
    {.argv = {"--version"}, .rc = CLI_OK, .cmd = CLI_VERSION},
    {.argv = {"help"}, .rc = CLI_OK, .cmd = CLI_HELP},
    {.argv = {"--help"}, .rc = CLI_OK, .cmd = CLI_HELP},
    {.argv = {"-h"}, .rc = CLI_OK, .cmd = CLI_HELP},
    /* help for one command, whatever else the line holds */
    {.argv = {"check", "--help"}, .rc = CLI_SHOW_HELP, .cmd = CLI_CHECK},
    {.argv = {"check", "-h"}, .rc = CLI_SHOW_HELP, .cmd = CLI_CHECK},
    {.argv = {"help", "dlq"}, .rc = CLI_SHOW_HELP, .cmd = CLI_DLQ},
    {.argv = {"help", "--help"}, .rc = CLI_SHOW_HELP, .cmd = CLI_HELP},
    {.argv = {"once", "-c", "f", "--bogus", "--help"}, .rc = CLI_SHOW_HELP, .cmd = CLI_ONCE},
    {.argv = {"dlq", "--help"}, .rc = CLI_SHOW_HELP, .cmd = CLI_DLQ},
    {.argv = {"sinks", "-h"}, .rc = CLI_SHOW_HELP, .cmd = CLI_SINKS},
    {.argv = {"check", "-hc", "f"}, .rc = CLI_SHOW_HELP, .cmd = CLI_CHECK},
    /* usage errors */
    {.argv = {NULL}, .rc = CLI_USAGE_ERROR},
    {.argv = {"chek", "-c", "f"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"-c", "f"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"check"}, .rc = CLI_USAGE_ERROR},       /* -c FILE is required */
    {.argv = {"check", "-c"}, .rc = CLI_USAGE_ERROR}, /* its value missing */
    {.argv = {"check", "--config"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"check", "--conf", "f"}, .rc = CLI_USAGE_ERROR}, /* abbreviations are refused */
    {.argv = {"check", "-c", "f", "--source", "x"}, .rc = CLI_USAGE_ERROR}, /* once's option */
    {.argv = {"sinks", "-c", "f"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"check", "-c", "f", "extra"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"check", "-c", "f", "--", "--help"}, .rc = CLI_USAGE_ERROR}, /* after "--", a word */
    {.argv = {"check", "-x"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"dlq", "-c", "f"}, .rc = CLI_USAGE_ERROR}, /* no action */
    {.argv = {"dlq", "lst", "-c", "f"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"version", "extra"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"help", "chek"}, .rc = CLI_USAGE_ERROR},
    {.argv = {"help", "check", "extra"}, .rc = CLI_USAGE_ERROR},
};

static void assert_str_or_null(const char *got, const char *want, const char *what)
{
    if (want)
        ck_assert_msg(got && strcmp(got, want) == 0, "%s: got %s, want %s", what,
                      got ? got : "NULL", want);
    else
        ck_assert_msg(got == NULL, "%s: got %s, want NULL", what, got);
}

START_TEST(test_parse)
{
    char *argv[ARGV_MAX + 2] = {"session-bridge"};
    int argc = 1;
    cli_args_t a;

    for (int i = 0; rows[_i].argv[i]; i++)
        argv[argc++] = (char *)rows[_i].argv[i];
    ck_assert_int_eq(cli_parse(argc, argv, &a), rows[_i].rc);
    if (rows[_i].rc == CLI_USAGE_ERROR)
        return;
    ck_assert_int_eq(a.cmd, rows[_i].cmd);
    if (rows[_i].rc != CLI_OK)
        return;
    assert_str_or_null(a.opt[CLI_OPT_CONFIG], rows[_i].config, "config");
    assert_str_or_null(a.opt[CLI_OPT_SOURCE], rows[_i].source, "source");
    assert_str_or_null(a.opt[CLI_OPT_SINK], rows[_i].sink, "sink");
    assert_str_or_null(a.action, rows[_i].action, "action");
}
END_TEST

/* The same line twice reads the same: getopt's state does not leak from one parse to the next. */
START_TEST(test_parse_twice)
{
    char *bad[] = {"session-bridge", "check", "-yz", NULL}; /* stops within "-yz" */
    char *good[] = {"session-bridge", "once", "-c", "f", "--source", "s", NULL};
    cli_args_t a;

    ck_assert_int_eq(cli_parse(3, bad, &a), CLI_USAGE_ERROR);
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(cli_parse(6, good, &a), CLI_OK);
        ck_assert_str_eq(a.opt[CLI_OPT_SOURCE], "s");
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("parse");

    tcase_add_loop_test(tc, test_parse, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    tcase_add_test(tc, test_parse_twice);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
