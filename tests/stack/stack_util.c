/*
 * stack_util.c: process plumbing shared by sb-kafka-mock and sb-provider-sim
 * (see stack_util.h).
 */
#include "stack_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

/* Logs "PROG: WHAT: REASON", as perror() would with "PROG: WHAT". */
static void log_errno(const char *prog, const char *what)
{
    int err = errno;

    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
}

/* Static: callers go through stack_write_file(), which adds the log line
 * both programs print on failure. errno is left as the failing call set it. */
static int write_file_atomic(const char *path, const char *text)
{
    char tmp[4096];
    FILE *f;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());

    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (!f)
        return -1;
    if (fprintf(f, "%s\n", text) < 0 || fclose(f) != 0) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int stack_write_file(const char *prog, const char *path, const char *text)
{
    if (write_file_atomic(path, text) != 0) {
        fprintf(stderr, "%s: cannot write %s: %s\n", prog, path, strerror(errno));
        return -1;
    }
    return 0;
}

int stack_write_pid_file(const char *prog, const char *path)
{
    char pid[32];

    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    return stack_write_file(prog, path, pid);
}

int stack_install_signals(const char *prog, void (*handler)(int), const int *sigs, size_t nsigs,
                          sigset_t *waitmask)
{
    struct sigaction sa;
    sigset_t blocked;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&blocked);
    for (size_t i = 0; i < nsigs; i++) {
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            log_errno(prog, "signals");
            return -1;
        }
        sigaddset(&blocked, sigs[i]);
    }
    signal(SIGPIPE, SIG_IGN);
    if (pthread_sigmask(SIG_BLOCK, &blocked, waitmask) != 0) {
        log_errno(prog, "signals");
        return -1;
    }
    return 0;
}

int stack_wait(const char *prog, const sigset_t *waitmask, long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (ms % 1000) * 1000000L};

    if (pselect(0, NULL, NULL, NULL, &ts, waitmask) < 0 && errno != EINTR) {
        log_errno(prog, "pselect");
        return -1;
    }
    return 0;
}
