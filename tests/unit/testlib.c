/*
 * testlib: what the unit tests share (see testlib.h).
 */
#include "testlib.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_ms(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    signal(SIGPIPE, SIG_IGN);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int64_t now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t unix_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void make_temp_dir(char *buf, size_t size, const char *tag)
{
    snprintf(buf, size, "/tmp/%s.XXXXXX", tag);
    ck_assert_msg(mkdtemp(buf) != NULL, "mkdtemp %s: %s", buf, strerror(errno));
}

void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    if (d == NULL) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        char sub[512];
        struct stat sb;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

cJSON *parse_json(const char *text)
{
    cJSON *j = cJSON_Parse(text);

    ck_assert_msg(j != NULL, "bad test JSON: %s", text);
    return j;
}

const char *errs_dump(const sink_errors_t *errs)
{
    static char buf[8192];
    size_t o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX && o < sizeof(buf); i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "[%s] ", errs->msg[i]);
    return buf;
}

bool errs_contain(const sink_errors_t *errs, const char *needle)
{
    for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++) {
        if (strstr(errs->msg[i], needle))
            return true;
    }
    return false;
}

void assert_validate(const sink_type_t *type, const char *json, const char *path,
                     const char *const *expect, size_t max, const char *never, int case_no)
{
    cJSON *j = parse_json(json);
    sink_errors_t errs = {0};
    int rc = sink_validate(type, j, path, &errs);
    size_t want = 0;

    while (want < max && expect[want])
        want++;
    ck_assert_msg(rc == (want ? -1 : 0), "case %d: rc %d: %s", case_no, rc, errs_dump(&errs));
    ck_assert_msg(errs.count >= want && (want > 0 || errs.count == 0), "case %d: %s", case_no,
                  errs_dump(&errs));
    for (size_t k = 0; k < want; k++)
        ck_assert_msg(strcmp(errs.msg[k], expect[k]) == 0, "case %d: message %zu: %s, want %s",
                      case_no, k, errs.msg[k], expect[k]);
    ck_assert_msg(!never || !errs_contain(&errs, never), "case %d: \"%s\" leaked: %s", case_no,
                  never, errs_dump(&errs));
    cJSON_Delete(j);
}

void event_init(test_event_t *te, const char *source, const char *session, const char *kind, int n)
{
    snprintf(te->kind, sizeof(te->kind), "%s", kind);
    snprintf(te->source, sizeof(te->source), "%s", source);
    snprintf(te->session, sizeof(te->session), "%s", session);
    snprintf(te->id, sizeof(te->id), "%032x", 0xabc000 + n);
    snprintf(te->type, sizeof(te->type), "session.%s", kind);
    snprintf(te->key, sizeof(te->key), "%s/%s", source, session);
    snprintf(te->json, sizeof(te->json),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"session-bridge/%s\","
             "\"type\":\"%s\",\"subject\":\"%s\",\"data\":{\"n\":%d}}",
             te->id, source, te->type, session, n);
    te->ev = (sink_event_t){.id = te->id,
                            .type = te->type,
                            .kind = te->kind,
                            .source = te->source,
                            .session_id = te->session,
                            .key = te->key,
                            .json = te->json,
                            .json_len = strlen(te->json)};
}

/* Serves with serve(a, b, 50) until every ticket of t resolved or timeout_ms passed. */
static bool serve_until_resolved(void (*serve)(void *, void *, int), void *a, void *b,
                                 test_ticket_t *t, int n, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        int open = 0;

        for (int i = 0; i < n; i++)
            open += t[i].calls == 0;
        if (!open)
            return true;
        if (now_ms() > deadline)
            return false;
        serve(a, b, 50);
    }
}

static void serve_flush(void *type, void *ctx, int ms)
{
    ((const sink_type_t *)type)->flush(ctx, sink_deadline_in(ms));
}

static void serve_loop(void *loop, void *unused, int ms)
{
    (void)unused;
    ((const sink_loop_t *)loop)->run(((const sink_loop_t *)loop)->loop, ms);
}

bool flush_until_resolved(const sink_type_t *type, void *ctx, test_ticket_t *t, int n,
                          int timeout_ms)
{
    return serve_until_resolved(serve_flush, (void *)type, ctx, t, n, timeout_ms);
}

bool loop_until_resolved(const sink_loop_t *loop, test_ticket_t *t, int n, int timeout_ms)
{
    return serve_until_resolved(serve_loop, (void *)loop, NULL, t, n, timeout_ms);
}

void *sink_on_loop(const sink_type_t *type, const char *name, const char *json,
                   const sink_loop_t *loop)
{
    char err[512] = "";
    cJSON *conf = parse_json(json);
    void *ctx = sink_init(type, conf, &(sink_host_t){.name = name, .loop = loop}, err, sizeof(err));

    ck_assert_msg(ctx != NULL, "create %s: %s", json, err);
    cJSON_Delete(conf);
    return ctx;
}

void sink_done_on_loop(const sink_type_t *type, void *ctx, const sink_loop_t *loop,
                       test_ticket_t *t, int n, int timeout_ms)
{
    ck_assert(loop_until_resolved(loop, t, n, timeout_ms));
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(t[i].calls, 1);
        ck_assert_msg(t[i].result == SINK_OK, "ticket %d: %d %s", i, t[i].result, t[i].err);
    }
    ck_assert_uint_eq(type->flush(ctx, 0), 0);
    ck_assert(type->flags & SINK_F_LOOP);
    type->exit(ctx);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(t[i].calls, 1); /* exit() resolved nothing twice */
}
