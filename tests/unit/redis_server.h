/*
 * redis_server: real redis-server processes for the unit tests.
 *
 * Each server listens on a free loopback port and keeps its files in a
 * temporary directory of its own, so that a test never touches a Redis that
 * may already run. Every server is started with PR_SET_PDEATHSIG so that it
 * dies with whoever started it, even when a test aborts or the runner is
 * killed by a timeout.
 *
 * The functions fail the current Check test (ck_assert) instead of
 * returning errors.
 */
#ifndef SB_TEST_REDIS_SERVER_H
#define SB_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

typedef struct redis_server {
    pid_t pid; /* 0 while not running */
    int port;
    bool aof;                 /* appendonly with appendfsync always: a SIGKILL loses nothing */
    const char *const *extra; /* more redis-server arguments, NULL-terminated */
    char dir[64];
} redis_server_t;

/* A loopback TCP port nobody listens on right now. */
int redis_server_free_port(void);

/*
 * Fills s, makes a fresh directory /tmp/<tag>.XXXXXX, picks a free port and
 * starts the server there.
 */
void redis_server_setup(redis_server_t *s, const char *tag, bool aof, const char *const *extra);
/* Kills the server and removes its directory. */
void redis_server_teardown(redis_server_t *s);

/*
 * For tests that kill and restart their server. The runner makes the
 * directory once with redis_server_prepare() (an unchecked fixture, so that
 * redis_server_teardown() removes it even when a test fails); each test
 * starts a server of its own with redis_server_start_fresh() (a checked
 * fixture): on the emptied directory and a new free port.
 */
void redis_server_prepare(redis_server_t *s, const char *tag);
void redis_server_start_fresh(redis_server_t *s, bool aof);

/*
 * Starts redis-server with s's port, directory and options, and waits until
 * it answers PING (an AOF being replayed delays that). Used to restart a
 * killed server on the same port and data.
 */
void redis_server_start(redis_server_t *s);
/* SIGKILL: no shutdown, no final save; with aof every acknowledged write
 * is already on disk. */
void redis_server_kill(redis_server_t *s);

/* A plain blocking connection to 127.0.0.1:port (0.5 s timeouts), or NULL. */
redisContext *redis_server_connect(int port);
/* Runs a command (redisCommand() format) on a new connection; fails the test
 * on an error reply. */
void redis_server_ok(int port, const char *fmt, ...);
/* Runs a command and returns its integer (or decimal string) reply; -1
 * otherwise. */
long long redis_server_int(int port, const char *fmt, ...);

#endif /* SB_TEST_REDIS_SERVER_H */
