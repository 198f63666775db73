/*
 * testlib: what the unit tests share: time, temporary directories, config
 * checks, and the tickets and events that sink tests hand to a sink.
 *
 * Helpers fail the current Check test (ck_assert) instead of returning
 * errors.
 */
#ifndef SB_TESTLIB_H
#define SB_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "sink.h"
#include "test_ticket.h"

/*
 * Runs every test of s and returns main()'s exit status. SIGPIPE is
 * ignored first: like the daemon, tests must see EPIPE when they write to
 * a connection the peer dropped.
 */
int run_suite(Suite *s);

/* ---- time ---- */

/* CLOCK_MONOTONIC in milliseconds: for durations. */
int64_t now_ms(void);
/* CLOCK_REALTIME in milliseconds since the epoch: for stored timestamps. */
int64_t unix_ms(void);
void sleep_ms(int ms);

/* ---- files ---- */

/* Makes a fresh directory /tmp/<tag>.XXXXXX into buf (size >= 64). */
void make_temp_dir(char *buf, size_t size, const char *tag);
/* rm -rf path (symlinks are removed, not followed). */
void remove_tree(const char *path);

/* ---- configuration ---- */

/* Parses test JSON; a typo in a test fails it. The caller frees it. */
cJSON *parse_json(const char *text);
/* Every collected message, for failure output (a static buffer). */
const char *errs_dump(const sink_errors_t *errs);
bool errs_contain(const sink_errors_t *errs, const char *needle);
/*
 * Runs type->validate() on json at path and checks the messages: the first
 * ones must be expect[0..] exactly and in order (at most max entries, NULL
 * ends the list early; none means json is valid). No message may contain
 * never (a secret) unless it is NULL. case_no labels failures.
 */
void assert_validate(const sink_type_t *type, const char *json, const char *path,
                     const char *const *expect, size_t max, const char *never, int case_no);

/* ---- tickets and events ---- */

/* test_ticket_t and ticket_init(): test_ticket.h. */

/* An event with its own storage (copies of the arguments too); ev points into it. */
typedef struct test_event {
    char id[33], type[32], kind[16], source[65], session[64], key[128], json[512];
    sink_event_t ev;
} test_event_t;

/* Event number n of source/session, kind started|completed|cancelled. */
void event_init(test_event_t *te, const char *source, const char *session, const char *kind, int n);

/* Flushes until every ticket of t[0..n) resolved or timeout_ms passed. */
bool flush_until_resolved(const sink_type_t *type, void *ctx, test_ticket_t *t, int n,
                          int timeout_ms);
/* The same for a sink on an event loop: runs the loop instead of flushing. */
bool loop_until_resolved(const sink_loop_t *loop, test_ticket_t *t, int n, int timeout_ms);
/* An instance of type from json on loop, named name (the test fails if init() does). */
void *sink_on_loop(const sink_type_t *type, const char *name, const char *json,
                   const sink_loop_t *loop);
/*
 * Runs loop until every ticket of t resolved (within timeout_ms), checks
 * each resolved SINK_OK, nothing is left pending and the type declares
 * SINK_F_LOOP (the core never drives it with flush()), then exits ctx.
 */
void sink_done_on_loop(const sink_type_t *type, void *ctx, const sink_loop_t *loop,
                       test_ticket_t *t, int n, int timeout_ms);

#endif /* SB_TESTLIB_H */
