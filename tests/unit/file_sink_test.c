/*
 * file_sink_test: the file sink on real files in a temporary directory:
 * config validation (table), the lines written, when each fsync mode
 * resolves its tickets, rotation, and write errors (RLIMIT_FSIZE makes a
 * write fail half way, like a full disk) that must leave no partial line.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"
#include "sink.h"
#include "testlib.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define ERRLEN 512
/* The sink's bound on lines waiting for an fsync (file.c). */
#define WAITING_MAX 10000

static const sink_type_t *const T = &sink_file_type;
static char dir[64];
static char path[128];

/*
 * The runner owns the directory (an unchecked fixture), so that it is
 * removed even when a failing test never gets to its teardown; each test
 * starts on it emptied.
 */
static void runner_setup(void)
{
    make_temp_dir(dir, sizeof(dir), "file_sink_test");
    snprintf(path, sizeof(path), "%s/events.jsonl", dir);
}

static void runner_teardown(void)
{
    remove_tree(dir);
}

static void test_setup(void)
{
    remove_tree(dir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    /* A write past RLIMIT_FSIZE must fail with EFBIG, not kill the test. */
    signal(SIGXFSZ, SIG_IGN);
    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
}

/* A sink on `path` with extra keys (a JSON fragment, may be empty). */
static void *file_sink_new(const char *extra)
{
    char json[512], err[ERRLEN] = "";
    cJSON *conf;
    void *ctx;

    snprintf(json, sizeof(json), "{\"name\":\"files\",\"type\":\"file\",\"path\":\"%s\"%s%s}", path,
             *extra ? "," : "", extra);
    conf = parse_json(json);
    ctx = sink_init(T, conf, &(sink_host_t){.name = "files"}, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "create %s: %s", json, err);
    cJSON_Delete(conf);
    return ctx;
}

static void submit_ok(void *ctx, test_event_t *ev, test_ticket_t *t)
{
    ticket_init(t);
    ck_assert_int_eq(T->submit(ctx, &ev->ev, &t->t), SINK_OK);
}

/* Events 0..n-1 of one session of source "century". */
static void events_init(test_event_t *ev, int n)
{
    for (int i = 0; i < n; i++)
        event_init(&ev[i], "century", "s-1", i % 2 ? "completed" : "started", i);
}

static void assert_resolved(const test_ticket_t *t, sink_result_t want)
{
    ck_assert_int_eq(t->calls, 1);
    ck_assert_msg(t->result == want, "result %d, want %d: %s", t->result, want, t->err);
}

static long file_size(const char *p)
{
    struct stat sb;

    return stat(p, &sb) == 0 ? (long)sb.st_size : -1;
}

/* The whole file, NUL-terminated; the caller frees it. */
static char *slurp(const char *p)
{
    FILE *f = fopen(p, "r");
    long size = file_size(p);
    char *buf;

    ck_assert_msg(f != NULL && size >= 0, "cannot read %s", p);
    buf = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    buf[size] = '\0';
    fclose(f);
    return buf;
}

/*
 * Checks that the file holds exactly the lines of ev[from..from+n), in
 * order, and nothing else.
 */
static void assert_lines(const char *p, const test_event_t *ev, int from, int n)
{
    char *text = slurp(p), *line = text;

    for (int i = from; i < from + n; i++) {
        char *nl = strchr(line, '\n');

        ck_assert_msg(nl != NULL, "%s: line %d missing", p, i - from + 1);
        *nl = '\0';
        ck_assert_str_eq(line, ev[i].json);
        line = nl + 1;
    }
    ck_assert_msg(*line == '\0', "%s: more than %d lines, or a partial one: \"%.40s\"", p, n, line);
    free(text);
}

/* The number of lines of p, and the event number ("n" in event_init()'s
 * data) of its first. */
static int count_lines(const char *p, int *first)
{
    char *text = slurp(p);
    const char *n_at = strstr(text, "\"n\":");
    int n = 0;

    ck_assert_msg(n_at != NULL, "%s: no event", p);
    *first = atoi(n_at + 4);
    for (const char *s = text; (s = strchr(s, '\n')) != NULL; s++)
        n++;
    free(text);
    return n;
}

/* ---- validation (table) ---- */

static const struct validate_case {
    const char *json;
    const char *expect[3]; /* exact messages, in order; none: valid */
} validate_cases[] = {
    {"{\"name\":\"f\",\"type\":\"file\",\"events\":[\"started\"],\"sources\":[\"a\"],"
     "\"path\":\"/var/log/sb/events.jsonl\"}",
     {NULL}},
    {"{\"path\":\"events.jsonl\",\"fsync\":\"always\",\"rotate_bytes\":4096,\"keep\":1000}",
     {NULL}},
    {"{\"path\":\"/x\",\"fsync\":\"never\",\"rotate_bytes\":0,\"keep\":1}", {NULL}},
    {"{}", {"sinks[2].path: required, expected a non-empty string"}},
    {"{\"path\":\"\"}", {"sinks[2].path: expected a non-empty string"}},
    {"{\"path\":7}", {"sinks[2].path: expected a non-empty string"}},
    {"{\"path\":\"/var/log/\"}", {"sinks[2].path: expected a file name, not a directory"}},
    {"{\"path\":\"/x\",\"fsync\":\"sometimes\"}",
     {"sinks[2].fsync: expected always, interval or never"}},
    {"{\"path\":\"/x\",\"fsync\":true}", {"sinks[2].fsync: expected always, interval or never"}},
    {"{\"path\":\"/x\",\"rotate_bytes\":100}",
     {"sinks[2].rotate_bytes: expected 0 (never rotate) or at least 4096 bytes, got 100"}},
    {"{\"path\":\"/x\",\"rotate_bytes\":-1}",
     {"sinks[2].rotate_bytes: expected an integer between 0 and 1099511627776, got -1"}},
    {"{\"path\":\"/x\",\"rotate_bytes\":\"100MB\"}",
     {"sinks[2].rotate_bytes: expected an integer between 0 and 1099511627776"}},
    {"{\"path\":\"/x\",\"keep\":0}",
     {"sinks[2].keep: expected an integer between 1 and 1000, got 0"}},
    {"{\"path\":\"/x\",\"keep\":1001}",
     {"sinks[2].keep: expected an integer between 1 and 1000, got 1001"}},
    {"[]", {"sinks[2]: expected an object"}},
    /* Everything wrong at once is reported at once, in document order. */
    {"{\"pth\":\"/x\",\"fsync\":\"sometimes\",\"keep\":2.5}",
     {"sinks[2].pth: unknown key (did you mean \"path\"?)",
      "sinks[2].path: required, expected a non-empty string",
      "sinks[2].fsync: expected always, interval or never"}},
};

START_TEST(test_validate)
{
    const struct validate_case *c = &validate_cases[_i];

    assert_validate(T, c->json, "sinks[2]", c->expect, N(c->expect), NULL, _i);
}
END_TEST

START_TEST(test_path_too_long)
{
    char json[PATH_MAX + 64];
    cJSON *j;
    sink_errors_t errs = {0};
    int n = snprintf(json, sizeof(json), "{\"path\":\"/");

    memset(json + n, 'a', PATH_MAX);
    snprintf(json + n + PATH_MAX, sizeof(json) - (size_t)n - PATH_MAX, "\"}");
    j = parse_json(json);
    ck_assert_int_eq(sink_validate(T, j, "sinks[0]", &errs), -1);
    ck_assert_msg(errs_contain(&errs, "sinks[0].path: expected 1 to"), "%s", errs_dump(&errs));
    cJSON_Delete(j);
}
END_TEST

/* init() checks the keys too, and opens the file: a wrong path is a
 * startup error that names it. */
START_TEST(test_create_errors)
{
    char json[256], err[ERRLEN] = "";
    cJSON *conf = parse_json("{\"path\":\"/x\",\"keep\":0}");

    ck_assert_ptr_null(sink_init(T, conf, &(sink_host_t){.name = "files"}, err, sizeof(err)));
    ck_assert_str_eq(err, "keep: expected an integer between 1 and 1000, got 0");
    cJSON_Delete(conf);

    snprintf(json, sizeof(json), "{\"path\":\"%s/missing/events.jsonl\"}", dir);
    conf = parse_json(json);
    ck_assert_ptr_null(sink_init(T, conf, &(sink_host_t){.name = "files"}, err, sizeof(err)));
    ck_assert_msg(strstr(err, dir) && strstr(err, "/missing/events.jsonl") &&
                      strstr(err, "No such file or directory") &&
                      strstr(err, "does the directory exist"),
                  "%s", err);
    cJSON_Delete(conf);

    snprintf(json, sizeof(json), "{\"path\":\"%s\"}", dir); /* a directory */
    conf = parse_json(json);
    ck_assert_ptr_null(sink_init(T, conf, &(sink_host_t){.name = "files"}, err, sizeof(err)));
    ck_assert_msg(strstr(err, dir) && strstr(err, "Is a directory"), "%s", err);
    cJSON_Delete(conf);
}
END_TEST

/* ---- lines and durability ---- */

static const char *const modes[] = {"always", "interval", "never"};

/* Every event becomes one line, in order; the file is created 0640. */
START_TEST(test_lines)
{
    char extra[64];
    test_event_t ev[50];
    test_ticket_t t[50];
    struct stat sb;
    void *ctx;

    snprintf(extra, sizeof(extra), "\"fsync\":\"%s\"", modes[_i]);
    umask(0);
    ctx = file_sink_new(extra);
    for (int i = 0; i < N(ev); i++) {
        event_init(&ev[i], i % 2 ? "century" : "quiz", "s-1", i % 3 ? "completed" : "started", i);
        submit_ok(ctx, &ev[i], &t[i]);
    }
    ck_assert(flush_until_resolved(T, ctx, t, N(t), 5000));
    for (int i = 0; i < N(t); i++)
        assert_resolved(&t[i], SINK_OK);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
    ck_assert_int_eq(T->ready(ctx), 1);
    ck_assert_uint_eq(T->flush(ctx, sink_deadline_in(0)), 0);
    assert_lines(path, ev, 0, N(ev));
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0640);
    T->exit(ctx);
    T->exit(NULL);
}
END_TEST

/* A second instance appends to what the first one wrote. */
START_TEST(test_appends_across_instances)
{
    test_event_t ev[4];
    test_ticket_t t[4];
    void *ctx = file_sink_new("");

    events_init(ev, 4);
    submit_ok(ctx, &ev[0], &t[0]);
    submit_ok(ctx, &ev[1], &t[1]);
    T->exit(ctx);
    ctx = file_sink_new("");
    submit_ok(ctx, &ev[2], &t[2]);
    submit_ok(ctx, &ev[3], &t[3]);
    T->exit(ctx);
    assert_lines(path, ev, 0, 4);
}
END_TEST

/*
 * fsync=always: submit() writes at once (readers see the line) but resolves
 * nothing; the next flush() (or the tick) fsyncs once and resolves every line written.
 * interval and never resolve inside submit().
 */
START_TEST(test_always_resolves_in_flush)
{
    test_event_t ev[3];
    test_ticket_t t[3];
    void *ctx = file_sink_new("\"fsync\":\"always\"");

    for (int i = 0; i < 3; i++) {
        event_init(&ev[i], "century", "s-1", "started", i);
        submit_ok(ctx, &ev[i], &t[i]);
        ck_assert_int_eq(t[i].calls, 0);
    }
    assert_lines(path, ev, 0, 3);
    T->flush(ctx, sink_deadline_in(0));
    for (int i = 0; i < 3; i++)
        assert_resolved(&t[i], SINK_OK);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);

    /* Every flush() does. */
    submit_ok(ctx, &ev[0], &t[0]);
    ck_assert_int_eq(t[0].calls, 0);
    ck_assert_uint_eq(T->flush(ctx, sink_deadline_in(0)), 0);
    assert_resolved(&t[0], SINK_OK);

    /* So does exit(): no ticket is left dangling. */
    submit_ok(ctx, &ev[1], &t[1]);
    T->exit(ctx);
    assert_resolved(&t[1], SINK_OK);

    ctx = file_sink_new("\"fsync\":\"interval\"");
    submit_ok(ctx, &ev[2], &t[2]);
    assert_resolved(&t[2], SINK_OK);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);
    T->exit(ctx);
}
END_TEST

/*
 * fsync=always on the bridge's loop: nothing polls; the group fsync of the
 * lines submitted in one turn runs from the sink's own timer.
 */
START_TEST(test_always_resolves_on_the_loop)
{
    char json[512], err[ERRLEN] = "";
    test_event_t ev[3];
    test_ticket_t t[3];
    loop_t *loop = loop_new(err, sizeof(err));
    void *ctx;

    ck_assert_msg(loop != NULL, "%s", err);
    snprintf(json, sizeof(json),
             "{\"name\":\"files\",\"type\":\"file\",\"path\":\"%s\",\"fsync\":\"always\"}", path);
    ctx = sink_on_loop(T, "files", json, loop_sink_api(loop));
    for (int i = 0; i < 3; i++) {
        event_init(&ev[i], "century", "s-1", "started", i);
        submit_ok(ctx, &ev[i], &t[i]);
        ck_assert_int_eq(t[i].calls, 0);
    }
    sink_done_on_loop(T, ctx, loop_sink_api(loop), t, 3, 1000);
    loop_free(loop);
}
END_TEST

/* Past WAITING_MAX lines waiting for their fsync, submit() syncs first. */
START_TEST(test_always_bounds_the_batch)
{
    static test_ticket_t t[WAITING_MAX + 1];
    test_event_t ev;
    void *ctx = file_sink_new("\"fsync\":\"always\",\"rotate_bytes\":0");

    event_init(&ev, "century", "s-1", "started", 0);
    for (int i = 0; i < WAITING_MAX; i++)
        submit_ok(ctx, &ev, &t[i]);
    ck_assert_int_eq(t[0].calls, 0);
    ck_assert_int_eq(t[WAITING_MAX - 1].calls, 0);
    submit_ok(ctx, &ev, &t[WAITING_MAX]);
    for (int i = 0; i < WAITING_MAX; i++)
        assert_resolved(&t[i], SINK_OK);
    ck_assert_int_eq(t[WAITING_MAX].calls, 0);
    T->exit(ctx);
    assert_resolved(&t[WAITING_MAX], SINK_OK);
}
END_TEST

/* A raw newline would split an event over two lines: refused for good. */
START_TEST(test_newline_refused)
{
    test_event_t ev;
    test_ticket_t t;
    void *ctx = file_sink_new("");

    event_init(&ev, "century", "s-1", "started", 0);
    ev.json[5] = '\n';
    submit_ok(ctx, &ev, &t);
    assert_resolved(&t, SINK_ERR_PERMANENT);
    ck_assert_int_eq(file_size(path), 0);
    T->exit(ctx);
}
END_TEST

/* ---- rotation ---- */

static void rotated(char *buf, size_t size, int k)
{
    if (k == 0)
        snprintf(buf, size, "%s", path);
    else
        snprintf(buf, size, "%s.%d", path, k);
}

/*
 * With keep large enough, the files path.N .. path.1, path hold every event
 * exactly once and in order, each file within rotate_bytes.
 */
START_TEST(test_rotation_loses_nothing)
{
    enum { EVENTS = 400 };
    static test_event_t ev[EVENTS];
    static test_ticket_t t[EVENTS];
    char name[256];
    int files = 0, next = 0;
    void *ctx = file_sink_new("\"fsync\":\"always\",\"rotate_bytes\":4096,\"keep\":100");

    for (int i = 0; i < EVENTS; i++) {
        event_init(&ev[i], "century", "s-1", "started", i);
        submit_ok(ctx, &ev[i], &t[i]);
        if (i % 7 == 0)
            T->flush(ctx, sink_deadline_in(0));
    }
    T->exit(ctx);
    for (int i = 0; i < EVENTS; i++)
        assert_resolved(&t[i], SINK_OK);

    for (files = 1;; files++) {
        rotated(name, sizeof(name), files);
        if (file_size(name) < 0)
            break;
    }
    ck_assert_int_ge(files, 5); /* 400 lines of ~140 bytes in 4 KiB files */
    for (int k = files - 1; k >= 0; k--) {
        int first, n;

        rotated(name, sizeof(name), k);
        ck_assert_int_le(file_size(name), 4096);
        n = count_lines(name, &first);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(first, next);
        assert_lines(name, ev, next, n);
        next += n;
    }
    ck_assert_int_eq(next, EVENTS);
}
END_TEST

/* keep = 3: path, path.1 .. path.3 and nothing older; what is kept is the
 * newest events, contiguous up to the last one. */
START_TEST(test_rotation_keeps_at_most_keep)
{
    enum { EVENTS = 300 };
    static test_event_t ev[EVENTS];
    char name[256];
    int next = -1;
    void *ctx = file_sink_new("\"fsync\":\"never\",\"rotate_bytes\":4096,\"keep\":3");

    for (int i = 0; i < EVENTS; i++) {
        test_ticket_t t;

        event_init(&ev[i], "century", "s-1", "completed", i);
        submit_ok(ctx, &ev[i], &t);
        assert_resolved(&t, SINK_OK);
    }
    T->exit(ctx);
    rotated(name, sizeof(name), 4);
    ck_assert_int_eq(file_size(name), -1);
    for (int k = 3; k >= 0; k--) {
        int first, n;

        rotated(name, sizeof(name), k);
        ck_assert_msg(file_size(name) > 0, "%s missing or empty", name);
        n = count_lines(name, &first);
        if (next >= 0)
            ck_assert_int_eq(first, next);
        assert_lines(name, ev, first, n);
        next = first + n;
    }
    ck_assert_int_eq(next, EVENTS);
}
END_TEST

/* ---- write errors ---- */

/*
 * Submits with the file size limit (RLIMIT_FSIZE) lowered to `limit` bytes.
 * No assertion runs meanwhile: Check writes each one to a file of its own,
 * which the limit would break.
 */
static void submit_limited(void *ctx, test_event_t *ev, test_ticket_t *t, rlim_t limit)
{
    struct rlimit saved, low;
    int lowered;
    sink_result_t r;

    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    low = saved;
    low.rlim_cur = limit;
    ticket_init(t);
    lowered = setrlimit(RLIMIT_FSIZE, &low);
    r = T->submit(ctx, &ev->ev, &t->t);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    ck_assert_int_eq(lowered, 0);
    ck_assert_int_eq(r, SINK_OK);
}

/*
 * A write that fails half way (the file size limit, as a full disk would)
 * resolves RETRY naming the file, and the partial line is cut off. With
 * fsync=always the lines written before it still get their fsync and OK.
 * Once the cause is gone, the next submit() writes again.
 */
START_TEST(test_write_error_leaves_no_partial_line)
{
    char extra[64];
    test_event_t ev[5];
    test_ticket_t t[5];
    long before;
    void *ctx;

    snprintf(extra, sizeof(extra), "\"fsync\":\"%s\"", modes[_i]);
    ctx = file_sink_new(extra);
    events_init(ev, 5);
    for (int i = 0; i < 3; i++)
        submit_ok(ctx, &ev[i], &t[i]);
    before = file_size(path);
    ck_assert_int_gt(before, 0);

    submit_limited(ctx, &ev[3], &t[3], (rlim_t)before + ev[3].ev.json_len / 2);
    assert_resolved(&t[3], SINK_ERR_RETRY);
    ck_assert_msg(strstr(t[3].err, path) && strstr(t[3].err, "write") &&
                      strstr(t[3].err, "File too large"),
                  "%s", t[3].err);
    for (int i = 0; i < 3; i++) /* resolved inside submit() at the latest */
        assert_resolved(&t[i], SINK_OK);
    ck_assert_int_eq(file_size(path), before);
    assert_lines(path, ev, 0, 3);
    ck_assert_int_eq(T->ready(ctx), 0);
    ck_assert_uint_eq(T->flush(ctx, 0), 0);

    submit_ok(ctx, &ev[3], &t[3]);
    submit_ok(ctx, &ev[4], &t[4]);
    ck_assert(flush_until_resolved(T, ctx, &t[3], 2, 5000));
    assert_resolved(&t[3], SINK_OK);
    assert_resolved(&t[4], SINK_OK);
    ck_assert_int_eq(T->ready(ctx), 1);
    assert_lines(path, ev, 0, 5);
    T->exit(ctx);
}
END_TEST

/*
 * After a failure the file is reopened by path: when a directory took its
 * place, that is a RETRY naming the path; once it is gone, a new file is
 * created (by flush() already) and written.
 */
START_TEST(test_file_replaced_by_directory)
{
    test_event_t ev[3];
    test_ticket_t t[3];
    void *ctx = file_sink_new("");

    events_init(ev, 3);
    submit_ok(ctx, &ev[0], &t[0]);
    assert_resolved(&t[0], SINK_OK);

    submit_limited(ctx, &ev[1], &t[1], (rlim_t)file_size(path)); /* fails at once */
    assert_resolved(&t[1], SINK_ERR_RETRY);

    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    submit_ok(ctx, &ev[1], &t[1]);
    assert_resolved(&t[1], SINK_ERR_RETRY);
    ck_assert_msg(strstr(t[1].err, path) && strstr(t[1].err, "Is a directory"), "%s", t[1].err);
    ck_assert_int_eq(T->ready(ctx), 0);

    /* Once the directory is gone, flush() reopens the file: ready again. */
    ck_assert_int_eq(rmdir(path), 0);
    T->flush(ctx, sink_deadline_in(0));
    ck_assert_int_eq(T->ready(ctx), 1);
    submit_ok(ctx, &ev[1], &t[1]);
    submit_ok(ctx, &ev[2], &t[2]);
    assert_resolved(&t[1], SINK_OK);
    assert_resolved(&t[2], SINK_OK);
    assert_lines(path, ev, 1, 2);
    T->exit(ctx);
}
END_TEST

/* A file moved away by someone else (an outside rotator) is noticed by
 * flush(): new lines go to a new file at path, none to the moved one. */
START_TEST(test_file_moved_away)
{
    char moved[160];
    test_event_t ev[2];
    test_ticket_t t[2];
    void *ctx = file_sink_new("");

    events_init(ev, 2);
    snprintf(moved, sizeof(moved), "%s.moved", path);
    submit_ok(ctx, &ev[0], &t[0]);
    assert_resolved(&t[0], SINK_OK);
    ck_assert_int_eq(rename(path, moved), 0);
    T->flush(ctx, sink_deadline_in(0));
    submit_ok(ctx, &ev[1], &t[1]);
    assert_resolved(&t[1], SINK_OK);
    assert_lines(moved, ev, 0, 1);
    assert_lines(path, ev, 1, 1);
    T->exit(ctx);
}
END_TEST

/* check --connect's probe of path (with its directory): 0 or -1, the message in msg. */
static int probe_path(const char *p, char *msg, size_t size)
{
    char json[512];
    cJSON *conf;
    int rc;

    snprintf(json, sizeof(json), "{\"name\":\"files\",\"type\":\"file\",\"path\":\"%s\"}", p);
    conf = parse_json(json);
    rc = sink_probe(T, conf, &(sink_host_t){.name = "files"}, sink_deadline_in(1000), msg, size);
    cJSON_Delete(conf);
    return rc;
}

/*
 * The probe asks whether the file could be created and written, and
 * creates nothing: a missing directory, a directory at the path and a
 * read-only directory fail (the last one only without root, which may
 * write anywhere).
 */
START_TEST(test_probe)
{
    char msg[ERRLEN], want[ERRLEN], sub[160];

    ck_assert_int_eq(probe_path(path, msg, sizeof(msg)), 0);
    snprintf(want, sizeof(want), "directory %s is writable", dir);
    ck_assert_str_eq(msg, want);
    ck_assert_int_eq(access(path, F_OK), -1); /* not created */

    snprintf(sub, sizeof(sub), "%s/missing/events.jsonl", dir);
    ck_assert_int_eq(probe_path(sub, msg, sizeof(msg)), -1);
    ck_assert_msg(strstr(msg, "No such file or directory"), "%s", msg);

    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(probe_path(path, msg, sizeof(msg)), -1);
    ck_assert_msg(strstr(msg, "exists and is not a writable file"), "%s", msg);
    ck_assert_int_eq(rmdir(path), 0);

    if (geteuid() != 0) {
        ck_assert_int_eq(chmod(dir, 0500), 0);
        ck_assert_int_eq(probe_path(path, msg, sizeof(msg)), -1);
        ck_assert_msg(strstr(msg, "is not writable"), "%s", msg);
        ck_assert_int_eq(chmod(dir, 0700), 0);
    }
}
END_TEST

static Suite *file_sink_suite(void)
{
    Suite *s = suite_create("file_sink");
    TCase *conf = tcase_create("config");
    TCase *io = tcase_create("io");

    tcase_add_unchecked_fixture(conf, runner_setup, runner_teardown);
    tcase_add_checked_fixture(conf, test_setup, NULL);
    tcase_add_loop_test(conf, test_validate, 0, N(validate_cases));
    tcase_add_test(conf, test_path_too_long);
    tcase_add_test(conf, test_create_errors);
    tcase_add_test(conf, test_probe);
    suite_add_tcase(s, conf);

    tcase_add_unchecked_fixture(io, runner_setup, runner_teardown);
    tcase_add_checked_fixture(io, test_setup, NULL);
    tcase_add_loop_test(io, test_lines, 0, N(modes));
    tcase_add_test(io, test_appends_across_instances);
    tcase_add_test(io, test_always_resolves_in_flush);
    tcase_add_test(io, test_always_resolves_on_the_loop);
    tcase_add_test(io, test_always_bounds_the_batch);
    tcase_add_test(io, test_newline_refused);
    tcase_add_test(io, test_rotation_loses_nothing);
    tcase_add_test(io, test_rotation_keeps_at_most_keep);
    tcase_add_loop_test(io, test_write_error_leaves_no_partial_line, 0, N(modes));
    tcase_add_test(io, test_file_replaced_by_directory);
    tcase_add_test(io, test_file_moved_away);
    suite_add_tcase(s, io);
    return s;
}

int main(void)
{
    return run_suite(file_sink_suite());
}
