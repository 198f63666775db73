/*
 * rusage_run: runs a command and accounts for it as /usr/bin/time -v does.
 *
 *   rusage_run OUT_FILE COMMAND [ARG...]
 *
 * Forks, execs COMMAND, waits for it with wait4() and writes one line to
 * OUT_FILE: "<wall s> <user s> <sys s> <max RSS KiB> <exit code>". Exits
 * with the command's exit code (128 + the signal when it was killed).
 *
 * Why not os.wait4() in the harness directly: a child's ru_maxrss is the
 * high-water mark of the process since fork, and exec keeps it (the kernel
 * carries the old mm's peak into the new image). A child forked from a
 * harness holding a few hundred MiB of pages and snapshots would report
 * that as its own peak. Forked from this small launcher instead, the peak
 * is the command's. A benchmark tool, not part of the product.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    struct rusage ru;
    double t0, wall;
    int status, code;
    pid_t pid;
    FILE *out;

    if (argc < 3) {
        fprintf(stderr, "usage: rusage_run OUT_FILE COMMAND [ARG...]\n");
        return 2;
    }
    t0 = now_s();
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("wait4");
        return 1;
    }
    wall = now_s() - t0;
    code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    fprintf(out, "%.6f %.6f %.6f %ld %d\n", wall, tv_s(ru.ru_utime), tv_s(ru.ru_stime),
            ru.ru_maxrss, code);
    fclose(out);
    return code;
}
