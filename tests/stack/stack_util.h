/*
 * stack_util.h: process plumbing shared by the programs of the local test
 * stack (sb-kafka-mock in kafka_mock.c, sb-provider-sim in sim.c).
 *
 * Both are long-running processes that a test starts, waits for by polling
 * for a file, and stops with a signal. The helpers here are the parts of that
 * contract that must behave the same in both: files written atomically,
 * signals delivered only to the main loop. Every helper that can fail logs
 * "PROG: ..." to stderr itself, PROG being the program name it is given, so
 * both programs report failures in the same words.
 */
#ifndef SB_STACK_UTIL_H
#define SB_STACK_UTIL_H

#include <signal.h>
#include <stddef.h>

/* Writes text and a newline to path through a temporary file and rename(),
 * so that a test polling for the file never reads a partial line. On failure
 * logs "PROG: cannot write PATH: REASON" and returns -1; else 0. */
int stack_write_file(const char *prog, const char *path, const char *text);

/* stack_write_file() with the process id as the text. */
int stack_write_pid_file(const char *prog, const char *path);

/* Installs handler for each of sigs[0..nsigs), ignores SIGPIPE and blocks
 * sigs in the calling thread; *waitmask receives the mask from before, to
 * pass to stack_wait(). Call it before starting any thread: threads inherit
 * the mask, so the signals reach only the main loop, and one that arrives
 * while the loop is busy stays pending instead of being lost. On failure logs
 * "PROG: signals: REASON" and returns -1; else 0. */
int stack_install_signals(const char *prog, void (*handler)(int), const int *sigs, size_t nsigs,
                          sigset_t *waitmask);

/* Sleeps up to ms milliseconds with *waitmask in place, so that the signals
 * stack_install_signals() blocked are taken only here: a flag a handler sets
 * is seen by the loop's next check and never slept through. Returns 0 after
 * the timeout or a signal; on any other failure logs "PROG: pselect: REASON"
 * and returns -1. */
int stack_wait(const char *prog, const sigset_t *waitmask, long ms);

#endif
