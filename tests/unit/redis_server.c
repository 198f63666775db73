/*
 * redis_server: real redis-server processes for the unit tests (see
 * redis_server.h).
 */
#include "redis_server.h"
#include "testlib.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long a starting redis-server may take to answer PING. */
#define SERVER_START_MS 10000
#define SERVER_POLL_MS 20

int redis_server_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

redisContext *redis_server_connect(int port)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);

    if (c != NULL && c->err != 0) {
        redisFree(c);
        return NULL;
    }
    if (c != NULL)
        redisSetTimeout(c, tv);
    return c;
}

static bool server_answers(int port)
{
    redisContext *c = redis_server_connect(port);
    redisReply *r;
    bool ok;

    if (c == NULL)
        return false;
    r = redisCommand(c, "PING");
    /* NOAUTH proves the server is up; LOADING (an AOF being replayed) does
     * not: it refuses every command until it is done. */
    ok = r != NULL && (r->type == REDIS_REPLY_STATUS ||
                       (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

void redis_server_start(redis_server_t *s)
{
    char port[16], logfile[96];
    const char *argv[40];
    int argc = 0;
    pid_t pid;

    snprintf(port, sizeof port, "%d", s->port);
    snprintf(logfile, sizeof logfile, "%s/redis.log", s->dir);
    argv[argc++] = "redis-server";
    argv[argc++] = "--port";
    argv[argc++] = port;
    argv[argc++] = "--bind";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--save";
    argv[argc++] = "";
    argv[argc++] = "--daemonize";
    argv[argc++] = "no";
    argv[argc++] = "--dir";
    argv[argc++] = s->dir;
    argv[argc++] = "--logfile";
    argv[argc++] = logfile;
    argv[argc++] = "--appendonly";
    argv[argc++] = s->aof ? "yes" : "no";
    if (s->aof) {
        argv[argc++] = "--appendfsync";
        argv[argc++] = "always";
    }
    for (int i = 0; s->extra != NULL && s->extra[i] != NULL; i++)
        argv[argc++] = s->extra[i];
    argv[argc] = NULL;

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (int waited = 0; !server_answers(s->port); waited += SERVER_POLL_MS) {
        int status;

        if (waitpid(pid, &status, WNOHANG) != 0 || waited >= SERVER_START_MS) {
            char log[512] = "";
            FILE *f = fopen(logfile, "r");

            /* The last line of its log says why. */
            while (f != NULL && fgets(log, sizeof log, f) != NULL)
                ;
            if (f != NULL)
                fclose(f);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            s->pid = 0;
            remove_tree(s->dir);
            ck_abort_msg("redis-server on port %d did not start: %s", s->port, log);
        }
        sleep_ms(SERVER_POLL_MS);
    }
}

void redis_server_kill(redis_server_t *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void redis_server_prepare(redis_server_t *s, const char *tag)
{
    memset(s, 0, sizeof *s);
    make_temp_dir(s->dir, sizeof s->dir, tag);
}

void redis_server_start_fresh(redis_server_t *s, bool aof)
{
    remove_tree(s->dir);
    ck_assert_int_eq(mkdir(s->dir, 0700), 0);
    s->aof = aof;
    s->port = redis_server_free_port();
    redis_server_start(s);
}

void redis_server_setup(redis_server_t *s, const char *tag, bool aof, const char *const *extra)
{
    redis_server_prepare(s, tag);
    s->extra = extra;
    redis_server_start_fresh(s, aof);
}

void redis_server_teardown(redis_server_t *s)
{
    redis_server_kill(s);
    if (s->dir[0] != '\0')
        remove_tree(s->dir);
    s->dir[0] = '\0';
}

/* Runs one command on a connection of its own; the reply is the caller's. */
static redisReply *command(int port, const char *fmt, va_list ap)
{
    redisContext *c = redis_server_connect(port);
    redisReply *r;

    ck_assert_msg(c != NULL, "cannot connect to redis-server on port %d", port);
    r = redisvCommand(c, fmt, ap);
    redisFree(c);
    ck_assert_ptr_nonnull(r);
    return r;
}

void redis_server_ok(int port, const char *fmt, ...)
{
    redisReply *r;
    va_list ap;

    va_start(ap, fmt);
    r = command(port, fmt, ap);
    va_end(ap);
    ck_assert_msg(r->type != REDIS_REPLY_ERROR, "%s", r->str);
    freeReplyObject(r);
}

long long redis_server_int(int port, const char *fmt, ...)
{
    redisReply *r;
    long long v;
    va_list ap;

    va_start(ap, fmt);
    r = command(port, fmt, ap);
    va_end(ap);
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    else
        v = -1;
    freeReplyObject(r);
    return v;
}
