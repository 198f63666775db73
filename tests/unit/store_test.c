/*
 * store_test: the Redis store against real redis-server processes.
 *
 * Every test case starts its own redis-server (redis_server.h). Servers
 * shared by a test case are started by the runner process (unchecked
 * fixture); the restart tests, which kill and restart their server, start it
 * in the forked test itself (checked fixture).
 */
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "redis_server.h"
#include "store.h"
#include "testlib.h"

#define ERRLEN 512
/* Population of the command-count tests. */
#define BIG_N 5000
#define SMALL_N 10
/* The password of every URL in the tests: no message may contain it. */
#define SECRET "s3cr3t"

static redis_server_t srv;

/* ---- stores and deltas ---- */

static store_t *open_store_url(const char *url, const char *prefix, int timeout_ms)
{
    char err[ERRLEN] = "";
    store_options_t opt = {.url = url, .prefix = prefix, .timeout_ms = timeout_ms};
    store_t *st = store_new(&opt, err, sizeof err);

    ck_assert_msg(st != NULL, "store_new(%s): %s", url, err);
    return st;
}

static store_t *open_store(int port)
{
    char url[64];

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    return open_store_url(url, NULL, 2000);
}

static diff_change_t upsert(const char *id, diff_state_t state, uint8_t misses, uint64_t fp,
                            const char *status)
{
    return (diff_change_t){
        .session_id = id,
        .removed = false,
        .rec = {.state = state, .misses = misses, .fingerprint = fp, .status = status}};
}

static diff_change_t removal(const char *id)
{
    return (diff_change_t){.session_id = id, .removed = true};
}

static void assert_record(const diff_index_t *ix, const char *id, const diff_record_t *want)
{
    diff_record_t got;

    ck_assert_msg(diff_index_get(ix, id, &got) == 0, "session %s missing after load", id);
    ck_assert_int_eq(got.state, want->state);
    ck_assert_uint_eq(got.misses, want->misses);
    ck_assert_uint_eq(got.fingerprint, want->fingerprint);
    ck_assert_str_eq(got.status, want->status);
}

static void assert_absent(const diff_index_t *ix, const char *id)
{
    diff_record_t got;

    ck_assert_msg(diff_index_get(ix, id, &got) != 0, "session %s still present", id);
}

/* The lease every commit of these tests is fenced by. */
#define TEST_TOKEN "0123456789abcdef0123456789abcdef"
/* Commands the fence of a commit sends before its transaction: WATCH,
 * GET (the lease) and HGET (the cycle). */
#define FENCE_CMDS 3

/*
 * A commit as the engine makes it: fenced by a lease (taken here, for the
 * test's own token) and by the base *cycle. 0 when it applied, else -1 with
 * err.
 */
static int commit_tx(store_t *st, const char *source, const diff_change_t *ch, size_t n,
                     size_t after, const store_extra_t *extra, uint64_t *cycle, char *err,
                     size_t errlen)
{
    store_delta_t d = store_delta_of(ch, n);

    (void)store_lease_acquire(st, source, TEST_TOKEN, 60000, err, errlen);
    return store_commit_fenced(st, source, TEST_TOKEN, &d, after, extra, cycle, err, errlen) ==
                   STORE_FENCE_OK
               ? 0
               : -1;
}

/* Commits as commit_ok() does; returns the commands of the transaction alone. */
static uint64_t commit_cost(store_t *st, const char *source, const diff_change_t *ch, size_t n,
                            size_t after, uint64_t *cycle)
{
    char err[ERRLEN] = "";
    store_delta_t d = store_delta_of(ch, n);
    uint64_t before;

    ck_assert_int_eq(store_lease_acquire(st, source, TEST_TOKEN, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    before = store_commands_sent(st);
    ck_assert_msg(store_commit_fenced(st, source, TEST_TOKEN, &d, after, NULL, cycle, err,
                                      sizeof err) == STORE_FENCE_OK,
                  "commit %s: %s", source, err);
    return store_commands_sent(st) - before - FENCE_CMDS;
}

static void commit_ok(store_t *st, const char *source, const diff_change_t *ch, size_t n,
                      size_t after, uint64_t *cycle)
{
    char err[ERRLEN] = "";
    uint64_t before = *cycle;

    ck_assert_msg(commit_tx(st, source, ch, n, after, NULL, cycle, err, sizeof err) == 0,
                  "commit %s: %s", source, err);
    ck_assert_uint_eq(*cycle, before + 1);
}

/* ---- the asynchronous calls, waited for ---- */

/*
 * The tests of what a load, a read of last records, a claim or a settle
 * writes and reads wait for each answer: the call runs on a loop of its
 * own, attached for it alone (unless the store is attached already).
 */
typedef struct waited {
    int calls, rc;
    bool exists;
    uint64_t cycle;
    store_claim_t *claims;
    size_t n;
    char err[ERRLEN];
} waited_t;

static void waited_err(waited_t *w, int rc, const char *err)
{
    w->calls++;
    w->rc = rc;
    snprintf(w->err, sizeof w->err, "%s", err ? err : "");
}

static void on_waited_load(void *opaque, int rc, bool exists, uint64_t cycle, const char *err)
{
    waited_t *w = opaque;
    w->exists = exists;
    w->cycle = cycle;
    waited_err(w, rc, err);
}

static void on_waited_done(void *opaque, int rc, const char *err)
{
    waited_err(opaque, rc, err);
}

static void on_waited_claims(void *opaque, int rc, store_claim_t *claims, size_t n, const char *err)
{
    waited_t *w = opaque;
    w->claims = claims;
    w->n = n;
    waited_err(w, rc, err);
}

/* A fenced write's answer: its store_fence_t in rc (OK is 0). */
static void on_waited_fence(void *opaque, store_fence_t f, uint64_t cycle, const char *err)
{
    waited_t *w = opaque;
    w->cycle = cycle;
    waited_err(w, (int)f, err);
}

typedef enum waited_op { W_LOAD, W_CLAIM, W_SETTLE, W_RESTORE } waited_op_t;

typedef struct waited_call {
    waited_op_t op;
    const char *name; /* source or sink */
    diff_index_t *ix;
    size_t n;
    const store_settle_t *ops;
    const char *token; /* W_RESTORE: the lease token, and the cycle restored at */
    uint64_t cycle;
} waited_call_t;

/* Makes call c and waits for its answer (10 s at most); rc as the blocking calls return it. */
static int call_waited(store_t *st, const waited_call_t *c, waited_t *w, char *err, size_t errlen)
{
    loop_t *l = NULL;
    int rc;

    memset(w, 0, sizeof *w);
    l = loop_new(err, errlen);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(store_attach(st, l, err, errlen), 0);
    switch (c->op) {
    case W_LOAD:
        rc = store_load_async(st, c->name, c->ix, on_waited_load, w, err, errlen);
        break;
    case W_CLAIM:
        rc = store_outbox_claim_async(st, c->name, c->n, 60000, false, on_waited_claims, w, err,
                                      errlen);
        break;
    case W_RESTORE:
        rc = store_restore_async(st, c->name, c->token, c->ix, c->cycle, on_waited_fence, w, err,
                                 errlen);
        break;
    default:
        rc = store_outbox_settle_async(st, c->name, c->ops, c->n, on_waited_done, w, err, errlen);
        break;
    }
    for (int waited = 0; rc == 0 && w->calls == 0 && waited < 10000; waited += 10)
        loop_run_for(l, 10);
    store_detach(st);
    loop_free(l);
    if (rc != 0)
        return -1;
    ck_assert_int_eq(w->calls, 1);
    if (w->rc != 0)
        snprintf(err, errlen, "%s", w->err);
    return w->rc;
}

/* store_load_async(), waited for. */
static int load_now(store_t *st, const char *source, diff_index_t *ix, bool *exists,
                    uint64_t *cycle, char *err, size_t errlen)
{
    waited_t w;
    waited_call_t c = {.op = W_LOAD, .name = source, .ix = ix};
    int rc = call_waited(st, &c, &w, err, errlen);

    *exists = w.exists;
    *cycle = w.cycle;
    return rc;
}

/* store_restore_async(), waited for: its answer (ERROR when nothing was sent). */
static store_fence_t restore_now(store_t *st, const char *source, const char *token,
                                 diff_index_t *ix, uint64_t cycle, char *err, size_t errlen)
{
    waited_t w;
    waited_call_t c = {.op = W_RESTORE, .name = source, .ix = ix, .token = token, .cycle = cycle};
    int rc = call_waited(st, &c, &w, err, errlen);

    return rc < 0 ? STORE_FENCE_ERROR : (store_fence_t)rc;
}

/* A window of last records read, and its answer (each's opaque). */
typedef struct last_wait {
    store_last_fn each;
    void *opaque;
    waited_t w;
} last_wait_t;

static int last_wait_each(void *opaque, size_t k, const char *text, size_t len)
{
    last_wait_t *lw = opaque;
    return lw->each(lw->opaque, k, text, len);
}

static void on_last_wait_done(void *opaque, int rc, const char *err)
{
    waited_err(&((last_wait_t *)opaque)->w, rc, err);
}

/* store_last_get_async(), waited for. */
static int last_get_now(store_t *st, const char *source, const char *const *ids, size_t n,
                        store_last_fn fn, void *opaque, char *err, size_t errlen)
{
    last_wait_t lw = {.each = fn, .opaque = opaque};
    loop_t *l = loop_new(err, errlen);
    int rc;

    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(store_attach(st, l, err, errlen), 0);
    rc = store_last_get_async(st, source, ids, n, last_wait_each, on_last_wait_done, &lw, err,
                              errlen);
    for (int waited = 0; rc == 0 && lw.w.calls == 0 && waited < 10000; waited += 10)
        loop_run_for(l, 10);
    store_detach(st);
    loop_free(l);
    if (rc != 0)
        return -1;
    ck_assert_int_eq(lw.w.calls, 1);
    if (lw.w.rc != 0)
        snprintf(err, errlen, "%s", lw.w.err);
    return lw.w.rc;
}

/* store_outbox_claim_async(), waited for: the claims into *out, *n. */
static int claim_now(store_t *st, const char *sink, size_t max, store_claim_t **out, size_t *n,
                     char *err, size_t errlen)
{
    waited_t w;
    waited_call_t c = {.op = W_CLAIM, .name = sink, .n = max};
    int rc = call_waited(st, &c, &w, err, errlen);

    *out = w.claims;
    *n = w.n;
    return rc;
}

/* store_outbox_settle_async() of one settle, waited for. */
static int settle_now(store_t *st, const char *sink, store_settle_t op, char *err, size_t errlen)
{
    waited_t w;
    waited_call_t c = {.op = W_SETTLE, .name = sink, .ops = &op, .n = 1};

    return call_waited(st, &c, &w, err, errlen);
}

static diff_index_t *load_ok(store_t *st, const char *source, bool *exists, uint64_t *cycle)
{
    char err[ERRLEN] = "";
    diff_index_t *ix = diff_index_new();

    ck_assert_ptr_nonnull(ix);
    ck_assert_msg(load_now(st, source, ix, exists, cycle, err, sizeof err) == 0, "load %s: %s",
                  source, err);
    return ix;
}

static void assert_no_secret(const char *err)
{
    ck_assert_msg(strstr(err, SECRET) == NULL, "the password leaked into: %s", err);
}

/* ================= URL and options (no server) ================= */

struct url_case {
    const char *url;
    bool ok;
    const char *err_part; /* expected in the message when !ok */
};

static const struct url_case url_cases[] = {
    {"redis://127.0.0.1", true, NULL},
    {"redis://127.0.0.1:1", true, NULL},
    {"redis://127.0.0.1:65535/", true, NULL},
    {"redis://127.0.0.1:1/15", true, NULL},
    {"REDIS://localhost:1/0", true, NULL},
    {"redis://[::1]:1/2", true, NULL},
    {"redis://:" SECRET "@127.0.0.1:1", true, NULL},
    {"redis://alice:" SECRET "@127.0.0.1:1/3", true, NULL},
    {"redis://:" SECRET "%40x%3a@127.0.0.1:1", true, NULL},
    {"redis://:" SECRET ":with@at@127.0.0.1:1", true, NULL},
    {"", false, "empty"},
    {"127.0.0.1:6379", false, "redis://"},
    {"http://127.0.0.1:6379", false, "redis://"},
    {"rediss://:" SECRET "@127.0.0.1:6379", false, "TLS"},
    {"unix:///tmp/redis.sock", false, "unix"},
    {"redis://", false, "no host"},
    {"redis://:6379", false, "no host"},
    {"redis://:" SECRET "@:6379", false, "no host"},
    {"redis://:" SECRET "@", false, "no host"},
    {"redis://h:0", false, "port"},
    {"redis://h:65536", false, "port"},
    {"redis://h:", false, "port"},
    {"redis://h:-1", false, "port"},
    {"redis://h:63a", false, "unexpected"},
    {"redis://:" SECRET "@h:99999999999999999999999", false, "port"},
    {"redis://h/abc", false, "unexpected"},
    {"redis://h/1/2", false, "unexpected"},
    {"redis://h/-1", false, "unexpected"},
    {"redis://h/2147483648", false, "database"},
    {"redis://h/0?timeout=1", false, "query"},
    {"redis://h#frag", false, "unexpected"},
    {"redis://ho$t", false, "host"},
    {"redis://[::1", false, "IPv6"},
    {"redis://[]:1", false, "no host"},
    {"redis://h st", false, "space"},
    {"redis://:" SECRET " x@h", false, "space"},
    {"redis://h\n", false, "control"},
    {"redis://" SECRET "@h", false, "[user]:password"},
    {"redis://alice:@h", false, "empty password"},
    {"redis://:" SECRET "%zz@h", false, "percent"},
    {"redis://:" SECRET "%4@h", false, "percent"},
    {"redis://:" SECRET "%@h", false, "percent"},
    {"redis://al%xxce:" SECRET "@h", false, "user"},
};

START_TEST(test_url_table)
{
    const struct url_case *c = &url_cases[_i];
    char err[ERRLEN] = "";
    store_options_t opt = {.url = c->url, .prefix = "sb", .timeout_ms = 200};
    store_t *st = store_new(&opt, err, sizeof err);

    if (c->ok) {
        ck_assert_msg(st != NULL, "case %d: store_new rejected a valid URL: %s", _i, err);
    } else {
        ck_assert_msg(st == NULL, "case %d: store_new accepted an invalid URL", _i);
        ck_assert_msg(strstr(err, c->err_part) != NULL, "case %d: \"%s\" does not mention %s", _i,
                      err, c->err_part);
        ck_assert_msg(strstr(err, "redis URL") != NULL, "case %d: %s", _i, err);
    }
    assert_no_secret(err);
    store_free(st);
}
END_TEST

START_TEST(test_url_too_long)
{
    char url[4096];
    char err[ERRLEN] = "";
    store_options_t opt = {.url = url, .timeout_ms = 200};
    int n = snprintf(url, sizeof url, "redis://:%s", SECRET);

    memset(url + n, 'a', sizeof url - (size_t)n - 20);
    strcpy(url + sizeof url - 20, "@127.0.0.1:1");
    ck_assert_ptr_null(store_new(&opt, err, sizeof err));
    ck_assert_msg(strstr(err, "longer") != NULL, "%s", err);
    assert_no_secret(err);
}
END_TEST

START_TEST(test_options_invalid)
{
    char err[ERRLEN];
    char long_prefix[STORE_PREFIX_MAX + 2];
    store_options_t opt = {.url = "redis://127.0.0.1:1", .timeout_ms = 200};
    const char *bad_prefixes[] = {"", "a b", "tab\there", "nl\n", "del\x7f", long_prefix};

    memset(long_prefix, 'p', sizeof long_prefix - 1);
    long_prefix[sizeof long_prefix - 1] = '\0';
    for (size_t i = 0; i < sizeof bad_prefixes / sizeof *bad_prefixes; i++) {
        opt.prefix = bad_prefixes[i];
        err[0] = '\0';
        ck_assert_msg(store_new(&opt, err, sizeof err) == NULL, "prefix %zu accepted", i);
        ck_assert_msg(strstr(err, "prefix") != NULL, "%s", err);
    }
    /* The longest accepted prefix. */
    long_prefix[STORE_PREFIX_MAX] = '\0';
    opt.prefix = long_prefix;
    store_free(open_store_url(opt.url, opt.prefix, 200));

    opt.prefix = NULL;
    opt.timeout_ms = -1;
    ck_assert_ptr_null(store_new(&opt, err, sizeof err));
    ck_assert_msg(strstr(err, "timeout") != NULL, "%s", err);

    opt.timeout_ms = 200;
    opt.url = NULL;
    ck_assert_ptr_null(store_new(&opt, err, sizeof err));
    ck_assert_ptr_null(store_new(NULL, err, sizeof err));
    /* No error buffer at all must not crash. */
    ck_assert_ptr_null(store_new(NULL, NULL, 0));
    store_free(NULL);
}
END_TEST

/* ================= a server that is down ================= */

START_TEST(test_down_server)
{
    char url[96], err[ERRLEN] = "", endpoint[32];
    int port = redis_server_free_port(); /* nobody listens there */
    diff_change_t ch = upsert("a", DIFF_STATE_ACTIVE, 0, 1, "IN_PROGRESS");
    diff_index_t *ix = diff_index_new();
    uint64_t cycle = 7;
    bool exists = true;
    store_t *st;

    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d/1", SECRET, port);
    snprintf(endpoint, sizeof endpoint, "127.0.0.1:%d", port);
    st = open_store_url(url, NULL, 500); /* down is not an error for store_new */
    uint64_t errors0 = store_errors(st); /* its connect attempt may count */

    ck_assert_int_eq(store_ping(st, err, sizeof err), -1);
    ck_assert_msg(strstr(err, endpoint) != NULL && strstr(err, "refused") != NULL, "%s", err);
    assert_no_secret(err);
    ck_assert_uint_eq(store_errors(st), errors0 + 1);

    err[0] = '\0';
    ck_assert_int_eq(commit_tx(st, "src", &ch, 1, 1, NULL, &cycle, err, sizeof err), -1);
    ck_assert_uint_eq(cycle, 7);
    ck_assert_msg(strstr(err, endpoint) != NULL && strstr(err, "refused") != NULL, "%s", err);
    assert_no_secret(err);

    err[0] = '\0';
    ck_assert_int_eq(load_now(st, "src", ix, &exists, &cycle, err, sizeof err), -1);
    ck_assert(!exists);
    ck_assert_msg(strstr(err, "refused") != NULL, "%s", err);
    assert_no_secret(err);
    /* every failed call counts, those failed by the reconnect pause too
     * (commit_tx() makes two: the lease, then the commit) */
    ck_assert_uint_eq(store_errors(st), errors0 + 4);

    diff_index_free(ix);
    store_free(st);
}
END_TEST

/* ================= one shared server ================= */

static void basic_setup(void)
{
    redis_server_setup(&srv, "store_test", false, NULL);
}

static void basic_teardown(void)
{
    redis_server_teardown(&srv);
}

START_TEST(test_ping)
{
    char err[ERRLEN] = "";
    store_t *st = open_store(srv.port);
    uint64_t before = store_commands_sent(st);

    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(store_commands_sent(st), before + 1);
    store_free(st);
}
END_TEST

START_TEST(test_load_without_snapshot)
{
    store_t *st = open_store(srv.port);
    diff_index_t *ix = diff_index_new();
    diff_record_t stale = {.state = DIFF_STATE_ACTIVE, .status = "x"};
    char err[ERRLEN] = "";
    uint64_t cycle = 42;
    bool exists = true;

    ck_assert_int_eq(diff_index_put(ix, "stale", &stale), 0);
    ck_assert_msg(load_now(st, "never-committed", ix, &exists, &cycle, err, sizeof err) == 0, "%s",
                  err);
    ck_assert(!exists);
    ck_assert_uint_eq(cycle, 0);
    ck_assert_uint_eq(diff_index_size(ix), 0);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

START_TEST(test_round_trip)
{
    char long_id[DIFF_ID_MAX + 1], long_status[DIFF_STATUS_MAX + 1];
    store_t *st = open_store(srv.port);
    diff_index_t *ix;
    uint64_t cycle = 0;
    bool exists;
    long long t0 = unix_ms(), t1;

    memset(long_id, 'i', DIFF_ID_MAX);
    long_id[DIFF_ID_MAX] = '\0';
    memset(long_status, 's', DIFF_STATUS_MAX);
    long_status[DIFF_STATUS_MAX] = '\0';

    diff_change_t first[] = {
        upsert("plain", DIFF_STATE_ACTIVE, 0, 0x0123456789abcdefULL, "IN_PROGRESS"),
        upsert("with space:and colon", DIFF_STATE_PENDING, 1, 0, "Needs Proctor"),
        upsert("st:colon", DIFF_STATE_COMPLETED, 0, UINT64_MAX, "a:b: c :"),
        upsert("empty-status", DIFF_STATE_NONE, 0, 42, ""),
        upsert("misses-max", DIFF_STATE_ACTIVE, DIFF_MAX_GRACE, 7, "Active"),
        upsert("cancelled", DIFF_STATE_CANCELLED, 2, 9, "Approval Denied"),
        upsert("bytes\x01\x7f\xff\xc3\xa9", DIFF_STATE_ACTIVE, 0, 1, "started"),
        upsert(long_id, DIFF_STATE_ACTIVE, 3, 3, long_status),
        upsert("to-remove", DIFF_STATE_COMPLETED, 0, 5, "COMPLETED"),
    };
    const size_t nfirst = sizeof first / sizeof *first;

    commit_ok(st, "rt", first, nfirst, nfirst, &cycle);
    ck_assert_uint_eq(cycle, 1);
    ix = load_ok(st, "rt", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_uint_eq(diff_index_size(ix), nfirst);
    for (size_t i = 0; i < nfirst; i++)
        assert_record(ix, first[i].session_id, &first[i].rec);

    /* Second cycle: a change, a miss counted up, a removal, a new session. */
    diff_change_t second[] = {
        upsert("plain", DIFF_STATE_COMPLETED, 0, 0xfedcba9876543210ULL, "COMPLETED"),
        upsert("with space:and colon", DIFF_STATE_PENDING, 2, 0, "Needs Proctor"),
        removal("to-remove"),
        removal("never-stored"), /* removing an unknown id is harmless */
        upsert("new one", DIFF_STATE_ACTIVE, 0, 11, "in progress: step 2"),
    };
    const size_t nsecond = sizeof second / sizeof *second;

    commit_ok(st, "rt", second, nsecond, nfirst, &cycle);
    ck_assert_uint_eq(cycle, 2);
    t1 = unix_ms();
    diff_index_free(ix);
    ix = load_ok(st, "rt", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 2);
    ck_assert_uint_eq(diff_index_size(ix), nfirst);
    assert_record(ix, "plain", &second[0].rec);
    assert_record(ix, "with space:and colon", &second[1].rec);
    assert_absent(ix, "to-remove");
    assert_absent(ix, "never-stored");
    assert_record(ix, "new one", &second[4].rec);
    for (size_t i = 2; i < nfirst - 1; i++) /* untouched ones */
        assert_record(ix, first[i].session_id, &first[i].rec);

    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:rt cycle"), 2);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:rt sessions"), (long long)nfirst);
    long long at = redis_server_int(srv.port, "HGET sb:meta:rt committed_at");
    ck_assert_msg(at >= t0 && at <= t1, "committed_at %lld not in [%lld, %lld]", at, t0, t1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:rt"), (long long)nfirst);

    diff_index_free(ix);
    store_free(st);
}
END_TEST

START_TEST(test_meta_cycles)
{
    store_t *st = open_store(srv.port);
    diff_index_t *ix;
    uint64_t cycle = 0;
    bool exists = true;

    ix = load_ok(st, "meta", &exists, &cycle);
    ck_assert(!exists);
    ck_assert_uint_eq(cycle, 0);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:meta:meta"), 0);

    /* An empty first poll still gives the source a snapshot. */
    /* MULTI, HSET meta, EXEC */
    ck_assert_uint_eq(commit_cost(st, "meta", NULL, 0, 0, &cycle), 3);
    diff_index_free(ix);
    ix = load_ok(st, "meta", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_uint_eq(diff_index_size(ix), 0);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:meta sessions"), 0);

    for (int i = 0; i < 3; i++)
        commit_ok(st, "meta", NULL, 0, 0, &cycle);
    diff_index_free(ix);
    ix = load_ok(st, "meta", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 4);

    /* Sources are independent. */
    diff_index_free(ix);
    ix = load_ok(st, "meta-other", &exists, &cycle);
    ck_assert(!exists);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

/* What a fenced commit of an empty delta on top of *cycle finds. */
static store_fence_t commit_fenced(store_t *st, const char *token, uint64_t *cycle)
{
    char err[ERRLEN] = "";

    store_delta_t none = store_delta_of(NULL, 0);
    return store_commit_fenced(st, "fenced", token, &none, 0, NULL, cycle, err, sizeof err);
}

/*
 * The lease and the base a fenced write checks, and what it answers when
 * Redis lost them (FLUSHALL): nobody's lease is told from another
 * replica's, a lost snapshot from one another holder advanced, and a
 * restore writes only where no snapshot is.
 */
START_TEST(test_fences_and_restore)
{
    char err[ERRLEN] = "", a[STORE_TOKEN_LEN], b[STORE_TOKEN_LEN];
    store_t *st = open_store(srv.port);
    diff_change_t ch[2] = {upsert("s-1", DIFF_STATE_ACTIVE, 0, 0x11, "IN_PROGRESS"),
                           upsert("s-2", DIFF_STATE_COMPLETED, 1, 0x22, "COMPLETED")};
    uint64_t cycle = 0, stale = 0;
    bool exists = false;

    ck_assert_int_eq(store_new_token(a), 0);
    ck_assert_int_eq(store_new_token(b), 0);
    ck_assert_int_eq(store_lease_acquire(st, "fenced", a, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    ck_assert_int_eq(store_lease_acquire(st, "fenced", b, 60000, err, sizeof err),
                     STORE_LEASE_OTHER);
    store_delta_t two = store_delta_of(ch, 2);
    ck_assert_int_eq(store_commit_fenced(st, "fenced", a, &two, 2, NULL, &cycle, err, sizeof err),
                     STORE_FENCE_OK);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_int_eq(commit_fenced(st, a, &cycle), STORE_FENCE_OK);
    ck_assert_uint_eq(cycle, 2);

    /* The holder's view of the base must match: a stale one is refused. */
    stale = 1;
    ck_assert_int_eq(commit_fenced(st, a, &stale), STORE_FENCE_BASE_MOVED);
    ck_assert_uint_eq(stale, 1);
    ck_assert_int_eq(commit_fenced(st, b, &cycle), STORE_FENCE_LEASE_OTHER);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:fenced cycle"), 2);

    /* A member beat tells a first beat, and a membership Redis forgot, from a renewal. */
    size_t live = 0;
    bool was_member = true;
    ck_assert_int_eq(store_member_beat(st, a, NULL, 60000, &live, &was_member, err, sizeof err), 0);
    ck_assert(!was_member);
    ck_assert_int_eq(store_member_beat(st, a, NULL, 60000, &live, &was_member, err, sizeof err), 0);
    ck_assert(was_member);
    ck_assert_uint_eq(live, 1);

    /* Redis loses everything: the lease is nobody's, not another replica's. */
    redis_server_ok(srv.port, "FLUSHALL");
    ck_assert_int_eq(store_member_beat(st, a, NULL, 60000, &live, &was_member, err, sizeof err), 0);
    ck_assert(!was_member);
    ck_assert_int_eq(store_lease_renew(st, "fenced", a, 60000, err, sizeof err), STORE_LEASE_GONE);
    ck_assert_int_eq(commit_fenced(st, a, &cycle), STORE_FENCE_LEASE_GONE);
    ck_assert_int_eq(store_lease_acquire(st, "fenced", a, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    /* A delta must not land where its base is gone. */
    ck_assert_int_eq(commit_fenced(st, a, &cycle), STORE_FENCE_BASE_MISSING);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:meta:fenced"), 0);

    /* The holder puts back what it has in memory, at its cycle. */
    diff_index_t *mem = diff_index_new();
    ck_assert_ptr_nonnull(mem);
    for (size_t i = 0; i < 2; i++)
        ck_assert_int_eq(diff_index_put(mem, ch[i].session_id, &ch[i].rec), 0);
    redis_server_ok(srv.port, "HSET sb:snap:fenced leftover 1:0:0000000000000000:X");
    ck_assert_int_eq(restore_now(st, "fenced", b, mem, cycle, err, sizeof err),
                     STORE_FENCE_LEASE_OTHER);
    ck_assert_int_eq(restore_now(st, "fenced", a, mem, cycle, err, sizeof err), STORE_FENCE_OK);
    diff_index_t *ix = load_ok(st, "fenced", &exists, &stale);
    ck_assert(exists);
    ck_assert_uint_eq(stale, 2);
    ck_assert_uint_eq(diff_index_size(ix), 2);
    assert_record(ix, "s-1", &ch[0].rec);
    assert_record(ix, "s-2", &ch[1].rec);
    assert_absent(ix, "leftover");
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:fenced sessions"), 2);
    diff_index_free(ix);
    /* Commits go on from the restored cycle. */
    ck_assert_int_eq(commit_fenced(st, a, &cycle), STORE_FENCE_OK);
    ck_assert_uint_eq(cycle, 3);

    /* A snapshot that exists (another holder's, advanced) is never overwritten. */
    ck_assert_int_eq(restore_now(st, "fenced", a, mem, 1, err, sizeof err), STORE_FENCE_BASE_MOVED);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:fenced cycle"), 3);

    /* A lapsed lease that another replica took is OTHER to the old holder. */
    redis_server_ok(srv.port, "DEL sb:lease:fenced");
    ck_assert_int_eq(store_lease_acquire(st, "fenced", b, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    ck_assert_int_eq(store_lease_renew(st, "fenced", a, 60000, err, sizeof err), STORE_LEASE_OTHER);
    ck_assert_int_eq(commit_fenced(st, a, &cycle), STORE_FENCE_LEASE_OTHER);

    /* The connection stayed in sync through every refusal. */
    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    diff_index_free(mem);
    store_free(st);
}
END_TEST

static char big_ids[BIG_N][24];

static diff_change_t *make_upserts(size_t n)
{
    diff_change_t *ch = calloc(n, sizeof *ch);

    ck_assert_ptr_nonnull(ch);
    for (size_t i = 0; i < n; i++) {
        snprintf(big_ids[i], sizeof big_ids[i], "s-%05zu", i);
        ch[i] = upsert(big_ids[i], DIFF_STATE_ACTIVE, 0, (uint64_t)i * 2654435761u, "active");
    }
    return ch;
}

/* A change that sets, or drops, a session's last record. */
static diff_change_t with_last(diff_change_t ch, diff_last_t last, const char *text, size_t len)
{
    ch.last = last;
    ch.last_text = text;
    ch.last_len = len;
    return ch;
}

/* What last_get_now() handed over: copies, NULL for none. */
typedef struct lasts {
    char *text[4];
    size_t len[4];
} lasts_t;

static int lasts_take(void *opaque, size_t k, const char *text, size_t len)
{
    lasts_t *l = opaque;

    ck_assert_uint_lt(k, 4);
    l->text[k] = text != NULL ? strndup(text, len) : NULL;
    l->len[k] = len;
    if (text != NULL)
        ck_assert_ptr_nonnull(l->text[k]);
    return 0;
}

static void lasts_free(lasts_t *l)
{
    for (size_t k = 0; k < 4; k++)
        free(l->text[k]);
    memset(l, 0, sizeof *l);
}

static void lasts_get(store_t *st, const char *source, const char *const *ids, size_t n, lasts_t *l)
{
    char err[ERRLEN] = "";

    lasts_free(l);
    ck_assert_msg(last_get_now(st, source, ids, n, lasts_take, l, err, sizeof err) == 0, "%s", err);
}

/* Last records are written, replaced and removed with the delta they
 * belong to, in its transaction. */
START_TEST(test_last_records)
{
    static const char a1[] = "{\"id\":\"a\",\"status\":\"active\",\"n\":1}",
                      a2[] = "{\"id\":\"a\",\"status\":\"active\",\"n\":2}",
                      b1[] = "{\"id\":\"b\",\"name\":\"\xc3\xa9t\xc3\xa9\"}",
                      c1[] = "{\"id\":\"c\"}";
    const char *ids[4] = {"a", "b", "c", "none"};
    store_t *st = open_store(srv.port);
    char err[ERRLEN] = "";
    uint64_t cycle = 0, stale;
    lasts_t got = {0};

    diff_change_t first[] = {
        with_last(upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active"), DIFF_LAST_SET, a1, sizeof a1 - 1),
        with_last(upsert("b", DIFF_STATE_PENDING, 0, 2, "pending"), DIFF_LAST_SET, b1,
                  sizeof b1 - 1),
        with_last(upsert("c", DIFF_STATE_ACTIVE, 0, 3, "active"), DIFF_LAST_SET, c1, sizeof c1 - 1),
        upsert("d", DIFF_STATE_COMPLETED, 0, 4, "completed"),
    };
    commit_ok(st, "lr", first, 4, 4, &cycle);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:rec:lr"), 3);
    lasts_get(st, "lr", ids, 4, &got);
    ck_assert_str_eq(got.text[0], a1);
    ck_assert_uint_eq(got.len[1], sizeof b1 - 1);
    ck_assert_str_eq(got.text[1], b1);
    ck_assert_str_eq(got.text[2], c1);
    ck_assert_ptr_null(got.text[3]);

    /* replaced (a), dropped as the session ended (b), removed with the
     * session (c), left alone (d's change keeps: it has none) */
    diff_change_t second[] = {
        with_last(upsert("a", DIFF_STATE_ACTIVE, 0, 5, "active"), DIFF_LAST_SET, a2, sizeof a2 - 1),
        with_last(upsert("b", DIFF_STATE_COMPLETED, 0, 6, "completed"), DIFF_LAST_DROP, NULL, 0),
        removal("c"),
    };
    commit_ok(st, "lr", second, 3, 3, &cycle);
    lasts_get(st, "lr", ids, 3, &got);
    ck_assert_str_eq(got.text[0], a2);
    ck_assert_ptr_null(got.text[1]);
    ck_assert_ptr_null(got.text[2]);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:rec:lr"), 1);

    /* A refused commit writes no record either: the fence holds them too. */
    /* commit_ok() took the lease with TEST_TOKEN */
    diff_change_t third[] = {
        with_last(upsert("a", DIFF_STATE_ACTIVE, 0, 7, "active"), DIFF_LAST_SET, a1, sizeof a1 - 1),
        removal("b"),
    };
    store_delta_t d = store_delta_of(third, 2);
    stale = cycle - 1;
    ck_assert_int_eq(
        store_commit_fenced(st, "lr", TEST_TOKEN, &d, 2, NULL, &stale, err, sizeof err),
        STORE_FENCE_BASE_MOVED);
    lasts_get(st, "lr", ids, 1, &got);
    ck_assert_str_eq(got.text[0], a2);
    ck_assert_int_eq(
        store_commit_fenced(st, "lr", TEST_TOKEN, &d, 2, NULL, &cycle, err, sizeof err),
        STORE_FENCE_OK);
    lasts_get(st, "lr", ids, 1, &got);
    ck_assert_str_eq(got.text[0], a1);

    /* A change that says it sets a record must bring one. */
    diff_change_t bad =
        with_last(upsert("e", DIFF_STATE_ACTIVE, 0, 8, "active"), DIFF_LAST_SET, NULL, 0);
    ck_assert_int_eq(commit_tx(st, "lr", &bad, 1, 1, NULL, &cycle, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no text"));

    /* reads are bounded to one batch, and a value we did not write as a
     * record (empty) reads as none */
    ck_assert_int_eq(
        last_get_now(st, "lr", ids, STORE_BATCH + 1, lasts_take, &got, err, sizeof err), -1);
    redis_server_ok(srv.port, "HSET sb:rec:lr c %s", "");
    lasts_get(st, "lr", ids, 3, &got);
    ck_assert_ptr_null(got.text[2]);
    lasts_free(&got);
    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    store_free(st);
}
END_TEST

/* Records of LAST_BIG_N changes, each LAST_TEXT bytes: more than one chunk
 * of fields and more than STORE_FLUSH_BYTES of text, so that a part of the
 * transaction is on the wire before the rest is read. */
#define LAST_BIG_N 2500
#define LAST_TEXT 2048
#define LAST_HUGE (3u * 1024u * 1024u)

typedef struct last_delta {
    diff_change_t *ch;
    char *text;      /* LAST_TEXT bytes, the change's number in front */
    char *huge;      /* one record larger than a whole chunk's bytes */
    size_t fail_at;  /* the last reader fails here (SIZE_MAX: never) */
    size_t previous; /* last reads come in change order */
} last_delta_t;

static int last_delta_get(void *opaque, size_t i, diff_change_t *out)
{
    *out = ((last_delta_t *)opaque)->ch[i];
    return 0;
}

static int last_delta_text(void *opaque, size_t i, const char **text, size_t *len)
{
    last_delta_t *l = opaque;

    if (i == l->fail_at)
        return -1;
    ck_assert(l->previous == SIZE_MAX || i > l->previous);
    l->previous = i;
    if (i == LAST_BIG_N / 2) {
        *text = l->huge;
        *len = LAST_HUGE;
        return 0;
    }
    /* one buffer for every record: what was handed out before is gone */
    snprintf(l->text, 16, "%015zu", i);
    l->text[15] = '"';
    *text = l->text;
    *len = LAST_TEXT;
    return 0;
}

START_TEST(test_last_records_in_chunks)
{
    store_t *st = open_store(srv.port);
    diff_change_t *ch = make_upserts(LAST_BIG_N);
    last_delta_t l = {.ch = ch, .fail_at = LAST_BIG_N - 10, .previous = SIZE_MAX};
    store_delta_t d = {
        .n = LAST_BIG_N, .get = last_delta_get, .last = last_delta_text, .opaque = &l};
    char err[ERRLEN] = "", token[STORE_TOKEN_LEN];
    uint64_t cycle = 0;
    lasts_t got = {0};

    l.text = malloc(LAST_TEXT);
    l.huge = malloc(LAST_HUGE);
    ck_assert(l.text != NULL && l.huge != NULL);
    memset(l.text, 'x', LAST_TEXT);
    memset(l.huge, 'h', LAST_HUGE);
    for (size_t i = 0; i < LAST_BIG_N; i++)
        ch[i].last = DIFF_LAST_SET;
    ck_assert_int_eq(store_new_token(token), 0);
    ck_assert_int_eq(store_lease_acquire(st, "chunks", token, 60000, err, sizeof err),
                     STORE_LEASE_HELD);

    /* the reader fails after megabytes were sent: nothing of it applies */
    ck_assert_int_eq(
        store_commit_fenced(st, "chunks", token, &d, LAST_BIG_N, NULL, &cycle, err, sizeof err),
        STORE_FENCE_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "last record"));
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:rec:chunks"), 0);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:snap:chunks"), 0);

    l.fail_at = SIZE_MAX;
    l.previous = SIZE_MAX;
    ck_assert_msg(store_commit_fenced(st, "chunks", token, &d, LAST_BIG_N, NULL, &cycle, err,
                                      sizeof err) == STORE_FENCE_OK,
                  "%s", err);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:rec:chunks"), LAST_BIG_N);
    ck_assert_int_eq(redis_server_int(srv.port, "HSTRLEN sb:rec:chunks s-01250"), LAST_HUGE);
    const char *ids[3] = {"s-00000", "s-01999", "s-02499"};
    lasts_get(st, "chunks", ids, 3, &got);
    for (size_t k = 0; k < 3; k++) {
        char want[16];
        ck_assert_uint_eq(got.len[k], LAST_TEXT);
        snprintf(want, sizeof want, "%015d", k == 0 ? 0 : k == 1 ? 1999 : 2499);
        ck_assert(memcmp(got.text[k], want, 15) == 0);
    }
    lasts_free(&got);
    free(l.text);
    free(l.huge);
    free(ch);
    store_free(st);
}
END_TEST

START_TEST(test_command_counts)
{
    const uint64_t batches = (BIG_N + STORE_BATCH - 1) / STORE_BATCH;
    store_t *st = open_store(srv.port);
    diff_change_t *big = make_upserts(BIG_N);
    diff_change_t small[SMALL_N];
    char small_ids[SMALL_N][24];
    uint64_t cycle_big = 0, cycle_small = 0, before, big_commit, small_on_big, small_on_small;
    uint64_t load_cmds;
    diff_index_t *ix;
    bool exists;

    big_commit = commit_cost(st, "big", big, BIG_N, BIG_N, &cycle_big);
    /* MULTI, ceil(5000 / STORE_BATCH) HSET, HSET meta, EXEC */
    ck_assert_uint_le(big_commit, 2 + batches + 2);
    ck_assert_uint_eq(big_commit, 2 + batches + 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:big"), BIG_N);

    before = store_commands_sent(st);
    ix = load_ok(st, "big", &exists, &cycle_big);
    load_cmds = store_commands_sent(st) - before;
    ck_assert_uint_eq(diff_index_size(ix), BIG_N);
    for (size_t i = 0; i < BIG_N; i += 499)
        assert_record(ix, big[i].session_id, &big[i].rec);
    diff_index_free(ix);

    /* Ten changes cost the same against 5,000 stored sessions as against ten:
     * 5 upserts and 5 removals = MULTI, HSET, HDEL, HDEL of their last
     * records, HSET meta, EXEC. */
    for (size_t i = 0; i < SMALL_N; i++) {
        snprintf(small_ids[i], sizeof small_ids[i], "s-%05zu", i * 7);
        small[i] = i % 2 ? removal(small_ids[i])
                         : upsert(small_ids[i], DIFF_STATE_COMPLETED, 0, i, "completed");
    }
    small_on_big = commit_cost(st, "big", small, SMALL_N, BIG_N - SMALL_N / 2, &cycle_big);

    commit_ok(st, "small", big, SMALL_N * 7, SMALL_N * 7, &cycle_small);
    small_on_small =
        commit_cost(st, "small", small, SMALL_N, SMALL_N * 7 - SMALL_N / 2, &cycle_small);
    ck_assert_uint_eq(small_on_big, 6);
    ck_assert_uint_eq(small_on_small, small_on_big);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:big"), BIG_N - SMALL_N / 2);

    /* A delta half upserts, half removals: both kinds chunked (the
     * removals twice: the snapshot's fields and the last records). */
    for (size_t i = 0; i < BIG_N; i += 2)
        big[i].removed = true;
    uint64_t mixed = commit_cost(st, "big", big, BIG_N, BIG_N / 2, &cycle_big);
    ck_assert_uint_le(mixed, 2 + 3 * ((BIG_N / 2 + STORE_BATCH - 1) / STORE_BATCH) + 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:big"), BIG_N / 2);

    fprintf(stderr,
            "store_test: commands: commit %d upserts %" PRIu64 ", load %d sessions %" PRIu64
            ", commit %d changes on %d sessions %" PRIu64 " / on %d sessions %" PRIu64
            ", commit %d mixed %" PRIu64 "\n",
            BIG_N, big_commit, BIG_N, load_cmds, SMALL_N, BIG_N, small_on_big, SMALL_N * 7,
            small_on_small, BIG_N, mixed);
    free(big);
    store_free(st);
}
END_TEST

/* A stored value or meta field that we did not write fails the load, and the
 * message names the key and the field. */
START_TEST(test_malformed_values)
{
    static const struct {
        const char *field;
        size_t field_len;
        const char *value;
        size_t value_len;
        const char *err_part;
    } cases[] = {
        {"bad id", 6, "garbage", 7, "\"bad id\""},
        {"bad-state", 9, "9:0:0000000000000000:x", 22, "bad-state"},
        {"short-fp", 8, "1:0:00ff:x", 10, "short-fp"},
        {"empty", 5, "", 0, "empty"},
        {"nul\0id", 6, "1:0:0000000000000000:x", 22, "nul\\x00id"},
        {"", 0, "1:0:0000000000000000:x", 22, "\"\""},
        {"bin\x01\xff", 5, "x", 1, "bin\\x01\\xff"},
    };
    char long_value[DIFF_RECORD_MAX + 2], long_field[DIFF_ID_MAX + 2];
    diff_change_t ok = upsert("good", DIFF_STATE_ACTIVE, 0, 1, "active");
    store_t *st = open_store(srv.port);
    char err[ERRLEN];
    uint64_t cycle = 0;
    bool exists;
    diff_index_t *ix = diff_index_new();

    commit_ok(st, "bad", &ok, 1, 1, &cycle);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        redis_server_ok(srv.port, "HSET sb:snap:bad %b %b", cases[i].field, cases[i].field_len,
                        cases[i].value, cases[i].value_len);
        err[0] = '\0';
        ck_assert_msg(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err) == -1,
                      "case %zu loaded", i);
        ck_assert_msg(strstr(err, "sb:snap:bad") != NULL && strstr(err, cases[i].err_part) != NULL,
                      "case %zu: %s", i, err);
        ck_assert_uint_eq(diff_index_size(ix), 0);
        ck_assert(!exists);
        ck_assert_uint_eq(cycle, 0);
        redis_server_ok(srv.port, "HDEL sb:snap:bad %b", cases[i].field, cases[i].field_len);
    }

    /* Longer than any record: rejected before decoding. */
    memset(long_value, 'v', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    redis_server_ok(srv.port, "HSET sb:snap:bad long-value %s", long_value);
    ck_assert_int_eq(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "long-value") != NULL && strstr(err, "longer") != NULL, "%s", err);
    redis_server_ok(srv.port, "DEL sb:snap:bad");
    memset(long_field, 'f', sizeof long_field - 1);
    long_field[sizeof long_field - 1] = '\0';
    redis_server_ok(srv.port, "HSET sb:snap:bad %s 1:0:0000000000000000:x", long_field);
    ck_assert_int_eq(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "sb:snap:bad") != NULL && strstr(err, "ffff...") != NULL, "%s", err);
    redis_server_ok(srv.port, "DEL sb:snap:bad");

    /* The meta hash. */
    redis_server_ok(srv.port, "HSET sb:meta:bad cycle 12x");
    ck_assert_int_eq(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "sb:meta:bad") != NULL && strstr(err, "cycle") != NULL, "%s", err);
    redis_server_ok(srv.port, "HSET sb:meta:bad cycle 99999999999999999999");
    ck_assert_int_eq(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err), -1);
    redis_server_ok(srv.port, "HDEL sb:meta:bad cycle");
    ck_assert_int_eq(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "sb:meta:bad") != NULL && strstr(err, "cycle") != NULL, "%s", err);
    redis_server_ok(srv.port, "HSET sb:meta:bad cycle 12");

    /* And a correct one loads again over the same connection. */
    ck_assert_msg(load_now(st, "bad", ix, &exists, &cycle, err, sizeof err) == 0, "%s", err);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 12);
    ck_assert_uint_eq(diff_index_size(ix), 0);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

START_TEST(test_error_reply_fails_commit)
{
    diff_change_t ch[] = {upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active"), removal("b")};
    store_t *st = open_store(srv.port);
    diff_index_t *ix = diff_index_new();
    char err[ERRLEN] = "";
    uint64_t cycle = 0;
    bool exists;

    redis_server_ok(srv.port, "SET sb:snap:wrongtype not-a-hash");
    ck_assert_int_eq(commit_tx(st, "wrongtype", ch, 2, 1, NULL, &cycle, err, sizeof err), -1);
    ck_assert_uint_eq(cycle, 0);
    ck_assert_msg(strstr(err, "WRONGTYPE") != NULL && strstr(err, "sb:snap:wrongtype") != NULL,
                  "%s", err);

    err[0] = '\0';
    ck_assert_int_eq(load_now(st, "wrongtype", ix, &exists, &cycle, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "WRONGTYPE") != NULL, "%s", err);

    ck_assert_uint_eq(store_errors(st), 2);

    /* Every reply was read: the connection is still in step. */
    cycle = 0;
    commit_ok(st, "after-error", ch, 2, 1, &cycle);
    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(store_errors(st), 2);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

/* A delta whose changes can be read n times, then no more (a reader that
 * runs out of memory half way through a commit). */
typedef struct flaky_delta {
    const diff_change_t *ch;
    int reads_left;
} flaky_delta_t;

static int flaky_get(void *opaque, size_t i, diff_change_t *out)
{
    flaky_delta_t *f = (flaky_delta_t *)opaque;
    if (f->reads_left-- <= 0)
        return -1;
    *out = f->ch[i];
    return 0;
}

/* The delta is read once to check it, then again as it is queued: a failure
 * the second time leaves MULTI and part of the transaction queued, and the
 * next command must not join them. */
START_TEST(test_failure_while_queueing_leaves_connection_in_step)
{
    diff_change_t ch[] = {upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active"),
                          upsert("b", DIFF_STATE_ACTIVE, 0, 2, "active")};
    store_t *st = open_store(srv.port);
    char token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    uint64_t cycle = 0;

    ck_assert_int_eq(store_new_token(token), 0);
    ck_assert_int_eq(store_lease_acquire(st, "half", token, 10000, err, sizeof err),
                     STORE_LEASE_HELD);
    flaky_delta_t f = {.ch = ch, .reads_left = 3};
    store_delta_t d = {.n = 2, .get = flaky_get, .opaque = &f};
    ck_assert_int_eq(store_commit_fenced(st, "half", token, &d, 2, NULL, &cycle, err, sizeof err),
                     STORE_FENCE_ERROR);
    ck_assert_uint_eq(cycle, 0);

    /* nothing of it reached Redis, and the next commit goes through whole */
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:snap:half"), 0);
    store_delta_t good = store_delta_of(ch, 2);
    err[0] = '\0';
    ck_assert_msg(store_commit_fenced(st, "half", token, &good, 2, NULL, &cycle, err, sizeof err) ==
                      STORE_FENCE_OK,
                  "%s", err);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:half"), 2);
    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    store_free(st);
}
END_TEST

/* The outbox and dead-letter sizes the metrics report. */
START_TEST(test_outbox_and_dlq_counts)
{
    diff_change_t ch = upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active");
    store_letter_t out[] = {{.sink = "hook", .id = "e1", .json = "{}", .len = 2},
                            {.sink = "hook", .id = "e2", .json = "{}", .len = 2},
                            {.sink = "other", .id = "e1", .json = "{}", .len = 2}};
    store_letter_t dead[] = {{.sink = "kafka", .id = "e3", .json = "{}", .len = 2}};
    store_extra_t extra = {.outbox = store_letters_of(out, 3), .dead = store_letters_of(dead, 1)};
    store_t *st = open_store(srv.port);
    char err[ERRLEN] = "";
    uint64_t cycle = 0;
    size_t n = 99;

    ck_assert_msg(store_outbox_count(st, "hook", &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 0);
    ck_assert_msg(commit_tx(st, "counts", &ch, 1, 1, &extra, &cycle, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_msg(store_outbox_count(st, "hook", &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 2);
    ck_assert_msg(store_outbox_count(st, "other", &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 1);
    ck_assert_msg(store_dlq_count(st, "kafka", &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 1);
    ck_assert_msg(settle_now(st, "hook", (store_settle_t){.kind = STORE_SETTLE_DONE, .id = "e1"},
                             err, sizeof err) == 0,
                  "%s", err);
    ck_assert_msg(store_outbox_count(st, "hook", &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(store_outbox_count(st, "Bad Name", &n, err, sizeof err), -1);
    store_free(st);
}
END_TEST

/* ---- large outboxes, read window by window ---- */

/* More letters than one window (STORE_BATCH) and, at LETTER_BYTES each, more
 * bytes per window than STORE_FLUSH_BYTES: windows are written out as queued. */
#define BIG_OUTBOX (2 * STORE_BATCH + 500)
#define LETTER_BYTES 2048
/* Claims per store_outbox_claim_async() call in the tests: the worker's batches. */
#define CLAIM_BATCH 300
/* Commands Redis holds in the MULTI when the crash test dies before its third
 * window: the delta's HSET, the first window's HSET and ZADD, the second's
 * HSET (its small ZADD may still wait in our buffer). */
#define QUEUED_BEFORE_CRASH 4

/* A reader that makes each window when asked and frees the one before, as
 * the engine does, and records how it was called. */
typedef struct window_reader {
    char *texts;                           /* the current window's bodies */
    char (*ids)[16];                       /* and ids */
    size_t calls, max_window, next, reads; /* reads: letters handed out, over all windows */
    int crash_at_call;                     /* > 0: at that call, _exit once Redis queued windows */
    int redis_port;
} window_reader_t;

static void letter_body(size_t i, char *out)
{
    int n = snprintf(out, LETTER_BYTES, "{\"id\":\"e%05zu\",\"pad\":\"", i);

    memset(out + n, 'a' + (char)(i % 26), LETTER_BYTES - (size_t)n - 2);
    memcpy(out + LETTER_BYTES - 2, "\"}", 2);
}

/* Whether some client of the server is inside MULTI with at least n commands
 * queued (CLIENT LIST's multi=). */
static bool redis_has_multi(int port, long n)
{
    redisContext *c = redis_server_connect(port);
    redisReply *r = c ? redisCommand(c, "CLIENT LIST") : NULL;
    bool found = false;

    for (const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
         p && (p = strstr(p, " multi=")) != NULL; p += 7)
        found |= strtol(p + 7, NULL, 10) >= n;
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return found;
}

static int window_get(void *opaque, size_t from, store_letter_t *out, size_t max, size_t *got)
{
    window_reader_t *w = opaque;

    w->calls++;
    if (w->crash_at_call > 0 && w->calls == (size_t)w->crash_at_call) {
        /* The earlier windows must be in Redis (queued in its MULTI), not
         * only in our buffer, for this to be a death between windows. */
        for (int i = 0; i < 200 && !redis_has_multi(w->redis_port, QUEUED_BEFORE_CRASH); i++)
            usleep(10000);
        _exit(redis_has_multi(w->redis_port, QUEUED_BEFORE_CRASH) ? 42 : 43);
    }
    ck_assert_uint_le(max, STORE_BATCH);
    if (from != w->next) /* retried from the start */
        ck_assert_uint_eq(from, 0);
    free(w->texts);
    free(w->ids);
    w->texts = malloc(max * LETTER_BYTES);
    w->ids = malloc(max * sizeof *w->ids);
    ck_assert(w->texts != NULL && w->ids != NULL);
    for (size_t k = 0; k < max; k++) {
        letter_body(from + k, w->texts + k * LETTER_BYTES);
        snprintf(w->ids[k], sizeof w->ids[k], "e%05zu", from + k);
        out[k] = (store_letter_t){.sink = "big",
                                  .id = w->ids[k],
                                  .json = w->texts + k * LETTER_BYTES,
                                  .len = LETTER_BYTES};
    }
    *got = max;
    w->next = from + max;
    w->reads += max;
    if (max > w->max_window)
        w->max_window = max;
    return 0;
}

static void window_reader_free(window_reader_t *w)
{
    free(w->texts);
    free(w->ids);
}

/* Claims everything due in batches of CLAIM_BATCH, checks each body, and
 * settles it delivered; every id must come exactly once. */
static void claim_all_once(store_t *st, size_t n)
{
    unsigned char *seen = calloc(n, 1);
    char body[LETTER_BYTES], err[ERRLEN] = "";
    size_t total = 0;

    ck_assert_ptr_nonnull(seen);
    for (;;) {
        store_claim_t *c = NULL;
        size_t got = 0;

        ck_assert_msg(claim_now(st, "big", CLAIM_BATCH, &c, &got, err, sizeof err) == 0, "%s", err);
        ck_assert_uint_le(got, CLAIM_BATCH);
        for (size_t k = 0; k < got; k++) {
            size_t i = strtoul(c[k].id + 1, NULL, 10);

            ck_assert_uint_lt(i, n);
            ck_assert_msg(!seen[i], "event %s claimed twice", c[k].id);
            seen[i] = 1;
            letter_body(i, body);
            ck_assert_uint_eq(c[k].len, LETTER_BYTES);
            ck_assert(memcmp(c[k].json, body, LETTER_BYTES) == 0);
            ck_assert_uint_eq(c[k].attempt, 1);
            ck_assert_msg(settle_now(st, "big",
                                     (store_settle_t){.kind = STORE_SETTLE_DONE, .id = c[k].id},
                                     err, sizeof err) == 0,
                          "%s", err);
        }
        store_claims_free(c, got);
        total += got;
        if (got == 0)
            break;
    }
    ck_assert_uint_eq(total, n);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:big"), 0);
    free(seen);
}

/* Empties the "big" outbox and takes the lease of source with a new token. */
static void big_outbox_lease(store_t *st, const char *source, char token[STORE_TOKEN_LEN])
{
    char err[ERRLEN] = "";

    redis_server_ok(srv.port, "DEL sb:ob:big sb:ob:big:due sb:ob:big:att");
    ck_assert_int_eq(store_new_token(token), 0);
    ck_assert_msg(store_lease_acquire(st, source, token, 60000, err, sizeof err) ==
                      STORE_LEASE_HELD,
                  "%s", err);
}

/* A commit asks for its letters one window at a time (never more than one
 * exists), writes them all in the snapshot's transaction, and the worker's
 * claims read them back in bounded batches, each exactly once. */
START_TEST(test_large_outbox_in_windows)
{
    diff_change_t ch[] = {upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active")};
    store_t *st = open_store(srv.port);
    char token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    uint64_t cycle = 0;
    window_reader_t w = {0};

    big_outbox_lease(st, "bigsrc", token);
    store_delta_t d = store_delta_of(ch, 1);
    store_extra_t extra = {.outbox = {.n = BIG_OUTBOX, .get = window_get, .opaque = &w}};
    ck_assert_msg(store_commit_fenced(st, "bigsrc", token, &d, 1, &extra, &cycle, err,
                                      sizeof err) == STORE_FENCE_OK,
                  "%s", err);
    ck_assert_uint_eq(w.calls, (BIG_OUTBOX + STORE_BATCH - 1) / STORE_BATCH);
    ck_assert_uint_eq(w.max_window, STORE_BATCH);
    ck_assert_uint_eq(w.reads, BIG_OUTBOX);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:big"), BIG_OUTBOX);
    ck_assert_int_eq(redis_server_int(srv.port, "ZCARD sb:ob:big:due"), BIG_OUTBOX);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:bigsrc"), 1);
    claim_all_once(st, BIG_OUTBOX);
    window_reader_free(&w);
    store_free(st);
}
END_TEST

/*
 * The process dies between two windows, with the earlier ones already
 * queued in Redis: nothing of the transaction applies (not the outbox, not
 * the snapshot), and the next commit writes everything once.
 */
START_TEST(test_crash_between_windows_writes_nothing)
{
    diff_change_t ch[] = {upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active"),
                          upsert("b", DIFF_STATE_ACTIVE, 0, 2, "active")};
    char token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    uint64_t cycle = 0;
    int status = 0;
    pid_t pid;

    {
        store_t *st = open_store(srv.port);
        big_outbox_lease(st, "crash", token);
        store_free(st);
    }
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* the bridge that dies in its commit */
        store_t *st = open_store(srv.port);
        window_reader_t w = {.crash_at_call = 3, .redis_port = srv.port};
        store_delta_t d = store_delta_of(ch, 2);
        store_extra_t extra = {.outbox = {.n = BIG_OUTBOX, .get = window_get, .opaque = &w}};

        (void)store_commit_fenced(st, "crash", token, &d, 2, &extra, &cycle, err, sizeof err);
        _exit(44); /* the crash point was never reached */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 42,
                  "the child did not die between windows with windows queued in redis (status "
                  "%d)",
                  status);
    ck_assert_int_eq(
        redis_server_int(srv.port, "EXISTS sb:snap:crash sb:meta:crash sb:ob:big sb:ob:big:due"),
        0);

    store_t *st = open_store(srv.port);
    window_reader_t w = {0};
    store_delta_t d = store_delta_of(ch, 2);
    store_extra_t extra = {.outbox = {.n = BIG_OUTBOX, .get = window_get, .opaque = &w}};
    ck_assert_msg(store_commit_fenced(st, "crash", token, &d, 2, &extra, &cycle, err, sizeof err) ==
                      STORE_FENCE_OK,
                  "%s", err);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:crash"), 2);
    claim_all_once(st, BIG_OUTBOX);
    window_reader_free(&w);
    store_free(st);
}
END_TEST

/* A reader that fails mid-way fails the commit whole, and the connection
 * stays in step for the next one. */
static int failing_get(void *opaque, size_t from, store_letter_t *out, size_t max, size_t *got)
{
    if (from >= STORE_BATCH)
        return -1;
    return window_get(opaque, from, out, max, got);
}

START_TEST(test_reader_failure_writes_nothing)
{
    diff_change_t ch[] = {upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active")};
    store_t *st = open_store(srv.port);
    char token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    uint64_t cycle = 0;
    window_reader_t w = {0};

    big_outbox_lease(st, "failing", token);
    store_delta_t d = store_delta_of(ch, 1);
    store_extra_t extra = {.outbox = {.n = BIG_OUTBOX, .get = failing_get, .opaque = &w}};
    ck_assert_int_eq(
        store_commit_fenced(st, "failing", token, &d, 1, &extra, &cycle, err, sizeof err),
        STORE_FENCE_ERROR);
    ck_assert_msg(strstr(err, "letter 1000") != NULL, "%s", err);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:snap:failing sb:ob:big"), 0);
    extra.outbox.get = window_get;
    w.next = 0;
    ck_assert_msg(store_commit_fenced(st, "failing", token, &d, 1, &extra, &cycle, err,
                                      sizeof err) == STORE_FENCE_OK,
                  "%s", err);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:big"), BIG_OUTBOX);
    window_reader_free(&w);
    store_free(st);
}
END_TEST

/*
 * Redis busy while the EXEC of a large transaction waits for its reply (as
 * when it applies and logs a million outbox events): the reply is awaited
 * for longer than the command timeout, in proportion to the transaction's
 * bytes, instead of the commit failing although it applies.
 */
#define SLOW_TIMEOUT_MS 200
#define BUSY_US 600000
static const char busy_script[] = "local t = redis.call('TIME')\n"
                                  "local s = t[1] * 1000000 + t[2]\n"
                                  "repeat t = redis.call('TIME')\n"
                                  "until t[1] * 1000000 + t[2] - s > tonumber(ARGV[1])\n"
                                  "return 1\n";

typedef struct busy_reader {
    window_reader_t w;
    redisContext *busy; /* sent the busy script before the last window */
} busy_reader_t;

static int busy_get(void *opaque, size_t from, store_letter_t *out, size_t max, size_t *got)
{
    busy_reader_t *b = opaque;

    if (from + max == BIG_OUTBOX) {
        int done = 0;

        b->busy = redis_server_connect(srv.port);
        ck_assert_ptr_nonnull(b->busy);
        ck_assert_int_eq(redisAppendCommand(b->busy, "EVAL %s 0 %d", busy_script, BUSY_US),
                         REDIS_OK);
        while (!done)
            ck_assert_int_eq(redisBufferWrite(b->busy, &done), REDIS_OK);
        usleep(50000); /* Redis is in the script by now */
    }
    return window_get(&b->w, from, out, max, got);
}

START_TEST(test_large_exec_waits_longer_than_a_command)
{
    char url[64], token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    diff_change_t ch[] = {upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active")};
    uint64_t cycle = 0;
    busy_reader_t b = {0};
    store_t *st;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    st = open_store_url(url, NULL, SLOW_TIMEOUT_MS);
    big_outbox_lease(st, "slow", token);
    store_delta_t d = store_delta_of(ch, 1);
    store_extra_t extra = {.outbox = {.n = BIG_OUTBOX, .get = busy_get, .opaque = &b}};
    ck_assert_msg(store_commit_fenced(st, "slow", token, &d, 1, &extra, &cycle, err, sizeof err) ==
                      STORE_FENCE_OK,
                  "%s", err);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:big"), BIG_OUTBOX);
    redisFree(b.busy);
    window_reader_free(&b.w);
    store_free(st);
}
END_TEST

START_TEST(test_db_and_prefix)
{
    char url[96];
    diff_change_t ch = upsert("x", DIFF_STATE_ACTIVE, 0, 1, "active");
    store_t *st;
    uint64_t cycle = 0;
    bool exists;
    diff_index_t *ix;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", srv.port);
    st = open_store_url(url, "tenant:a", 2000);
    commit_ok(st, "db3", &ch, 1, 1, &cycle);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS tenant:a:snap:db3"), 0); /* not in db 0 */
    {
        redisContext *c = redis_server_connect(srv.port);
        redisReply *r;

        ck_assert_ptr_nonnull(c);
        freeReplyObject(redisCommand(c, "SELECT 3"));
        r = redisCommand(c, "EXISTS tenant:a:snap:db3 tenant:a:meta:db3");
        ck_assert_int_eq(r->integer, 2);
        freeReplyObject(r);
        redisFree(c);
    }
    ix = load_ok(st, "db3", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(diff_index_size(ix), 1);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

/* Bad input is refused before anything is sent. */
START_TEST(test_invalid_input_sends_nothing)
{
    char too_long_id[DIFF_ID_MAX + 2], too_long_status[DIFF_STATUS_MAX + 2], long_src[70];
    store_t *st = open_store(srv.port);
    diff_index_t *ix = diff_index_new();
    char err[ERRLEN];
    uint64_t cycle = 0, before;
    bool exists;
    const char *bad_sources[] = {NULL, "", "Upper", "sp ace", "colon:x", long_src};
    store_delta_t none = store_delta_of(NULL, 0);

    memset(long_src, 'a', sizeof long_src - 1);
    long_src[sizeof long_src - 1] = '\0';
    memset(too_long_id, 'i', sizeof too_long_id - 1);
    too_long_id[sizeof too_long_id - 1] = '\0';
    memset(too_long_status, 's', sizeof too_long_status - 1);
    too_long_status[sizeof too_long_status - 1] = '\0';

    ck_assert_int_eq(store_lease_acquire(st, "input", TEST_TOKEN, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    before = store_commands_sent(st);
    for (size_t i = 0; i < sizeof bad_sources / sizeof *bad_sources; i++) {
        err[0] = '\0';
        ck_assert_int_eq(store_commit_fenced(st, bad_sources[i], TEST_TOKEN, &none, 0, NULL, &cycle,
                                             err, sizeof err),
                         STORE_FENCE_ERROR);
        ck_assert_msg(strstr(err, "source") != NULL, "%s", err);
        ck_assert_int_eq(load_now(st, bad_sources[i], ix, &exists, &cycle, err, sizeof err), -1);
    }

    diff_change_t bad_changes[][2] = {
        {upsert("ok", DIFF_STATE_ACTIVE, 0, 1, "a"), upsert(NULL, DIFF_STATE_ACTIVE, 0, 1, "a")},
        {upsert("ok", DIFF_STATE_ACTIVE, 0, 1, "a"), upsert("", DIFF_STATE_ACTIVE, 0, 1, "a")},
        {upsert("ok", DIFF_STATE_ACTIVE, 0, 1, "a"), removal(too_long_id)},
        {upsert("ok", DIFF_STATE_ACTIVE, 0, 1, "a"),
         upsert("x", DIFF_STATE_ACTIVE, 0, 1, too_long_status)},
        {upsert("ok", DIFF_STATE_ACTIVE, 0, 1, "a"),
         upsert("x", DIFF_STATE_ACTIVE, DIFF_MAX_GRACE + 1, 1, "a")},
        {upsert("ok", DIFF_STATE_ACTIVE, 0, 1, "a"), upsert("x", (diff_state_t)9, 0, 1, "a")},
    };
    for (size_t i = 0; i < sizeof bad_changes / sizeof *bad_changes; i++) {
        err[0] = '\0';
        store_delta_t d = store_delta_of(bad_changes[i], 2);

        ck_assert_int_eq(
            store_commit_fenced(st, "input", TEST_TOKEN, &d, 2, NULL, &cycle, err, sizeof err),
            STORE_FENCE_ERROR);
        ck_assert_msg(strstr(err, "change 1") != NULL, "case %zu: %s", i, err);
        ck_assert_uint_eq(cycle, 0);
    }
    cycle = UINT64_MAX;
    ck_assert_int_eq(
        store_commit_fenced(st, "input", TEST_TOKEN, &none, 0, NULL, &cycle, err, sizeof err),
        STORE_FENCE_ERROR);
    ck_assert_uint_eq(store_commands_sent(st), before);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:meta:input sb:snap:input"), 0);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

/* The server closing an idle connection (its timeout, CLIENT KILL, a restart)
 * is noticed before sending, so the call reconnects instead of failing. */
START_TEST(test_idle_connection_closed_by_server)
{
    store_t *st = open_store(srv.port);
    char err[ERRLEN] = "";
    uint64_t cycle = 0;

    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    ck_assert_int_ge(redis_server_int(srv.port, "CLIENT KILL TYPE normal SKIPME yes"), 1);
    sleep_ms(50);
    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    ck_assert_int_ge(redis_server_int(srv.port, "CLIENT KILL TYPE normal SKIPME yes"), 1);
    sleep_ms(50);
    commit_ok(st, "idle", NULL, 0, 0, &cycle);
    store_free(st);
}
END_TEST

/* ================= authentication ================= */

static const char *const auth_args[] = {
    "--requirepass",     SECRET "@pw:x", "--user", "alice", "on",
    ">" SECRET "-alice", "~*",           "&*",     "+@all", NULL};

static void auth_setup(void)
{
    redis_server_setup(&srv, "store_test", false, auth_args);
}

START_TEST(test_auth)
{
    static const struct {
        const char *userinfo;
        bool ok;
    } cases[] = {
        {":" SECRET "@pw:x", true},          /* '@' and ':' unencoded */
        {":" SECRET "%40pw%3Ax", true},      /* and encoded */
        {"default:" SECRET "@pw:x", true},   /* ACL user "default" */
        {"alice:" SECRET "-alice", true},    /* ACL user */
        {"al%69ce:" SECRET "-alice", true},  /* encoded user name */
        {":" SECRET "-wrong", false},        /* wrong password */
        {"alice:" SECRET "@pw:x", false},    /* right password, wrong user */
        {"mallory:" SECRET "-alice", false}, /* unknown user */
    };

    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char url[160], err[ERRLEN] = "";
        store_t *st;
        int rc;

        snprintf(url, sizeof url, "redis://%s@127.0.0.1:%d", cases[i].userinfo, srv.port);
        st = open_store_url(url, NULL, 2000);
        rc = store_ping(st, err, sizeof err);
        if (cases[i].ok) {
            ck_assert_msg(rc == 0, "case %zu: %s", i, err);
        } else {
            ck_assert_msg(rc == -1, "case %zu: accepted", i);
            ck_assert_msg(strstr(err, "AUTH") != NULL, "case %zu: %s", i, err);
        }
        assert_no_secret(err);
        store_free(st);
    }
}
END_TEST

START_TEST(test_auth_missing)
{
    char url[96], err[ERRLEN] = "";
    uint64_t cycle = 0;
    store_t *st;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    st = open_store_url(url, NULL, 2000);
    ck_assert_int_eq(commit_tx(st, "noauth", NULL, 0, 0, NULL, &cycle, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "NOAUTH") != NULL, "%s", err);
    ck_assert_uint_eq(cycle, 0);
    store_free(st);
}
END_TEST

/* ================= restarts, outages, timeouts ================= */

/*
 * The runner owns the directory, so that it is removed even when a test
 * fails and its own teardown never runs; each test starts a server of its
 * own in it, on an empty directory.
 */
static void restart_dir_setup(void)
{
    redis_server_prepare(&srv, "store_test");
}

static void restart_setup(void)
{
    redis_server_start_fresh(&srv, true);
}

static void restart_teardown(void)
{
    redis_server_kill(&srv);
}

static diff_index_t *load_after_outage(store_t *st, const char *source, bool *exists,
                                       uint64_t *cycle)
{
    char err[ERRLEN] = "";
    diff_index_t *ix = diff_index_new();

    /* Calls fail while the store finds the old connection dead or pauses
     * after a refused connect (about a second); then it must reconnect. */
    for (int i = 0; load_now(st, source, ix, exists, cycle, err, sizeof err) != 0; i++) {
        ck_assert_msg(strstr(err, "redis 127.0.0.1:") != NULL, "%s", err);
        ck_assert_msg(i < 30, "no reconnect within 3 s: %s", err);
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    /* the load went on the asynchronous connection: the blocking one (the
     * commits') reconnects by itself too */
    for (int i = 0; store_ping(st, err, sizeof err) != 0; i++) {
        ck_assert_msg(i < 30, "no reconnect within 3 s: %s", err);
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    return ix;
}

START_TEST(test_restart_between_commits)
{
    diff_change_t a[] = {upsert("a1", DIFF_STATE_ACTIVE, 0, 1, "IN_PROGRESS"),
                         upsert("a2", DIFF_STATE_PENDING, 0, 2, "Needs Proctor")};
    diff_change_t b[] = {upsert("a1", DIFF_STATE_COMPLETED, 0, 3, "COMPLETED"),
                         upsert("b1", DIFF_STATE_ACTIVE, 0, 4, "IN_PROGRESS")};
    store_t *st = open_store(srv.port);
    char err[ERRLEN] = "";
    uint64_t cycle = 0;
    bool exists;
    diff_index_t *ix;

    commit_ok(st, "rs", a, 2, 2, &cycle);
    redis_server_kill(&srv);
    redis_server_start(&srv); /* same port, same directory: the AOF is replayed */

    ix = load_after_outage(st, "rs", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_uint_eq(diff_index_size(ix), 2);
    assert_record(ix, "a1", &a[0].rec);
    assert_record(ix, "a2", &a[1].rec);
    diff_index_free(ix);

    /* This time the first call after the restart is a commit. */
    redis_server_kill(&srv);
    redis_server_start(&srv);
    if (commit_tx(st, "rs", b, 2, 3, NULL, &cycle, err, sizeof err) != 0) {
        ck_assert_uint_eq(cycle, 1);
        commit_ok(st, "rs", b, 2, 3, &cycle);
    }
    ck_assert_uint_eq(cycle, 2);
    redis_server_kill(&srv);
    redis_server_start(&srv);
    ix = load_after_outage(st, "rs", &exists, &cycle);
    ck_assert_uint_eq(cycle, 2);
    ck_assert_uint_eq(diff_index_size(ix), 3);
    assert_record(ix, "a1", &b[0].rec);
    assert_record(ix, "a2", &a[1].rec);
    assert_record(ix, "b1", &b[1].rec);
    diff_index_free(ix);
    store_free(st);
}
END_TEST

START_TEST(test_commit_while_down_changes_nothing)
{
    diff_change_t a[] = {upsert("a1", DIFF_STATE_ACTIVE, 0, 1, "IN_PROGRESS")};
    diff_change_t b[] = {upsert("a1", DIFF_STATE_COMPLETED, 0, 3, "COMPLETED"),
                         upsert("b1", DIFF_STATE_ACTIVE, 0, 4, "IN_PROGRESS")};
    store_t *st = open_store(srv.port);
    char err[ERRLEN] = "", endpoint[32];
    uint64_t cycle = 0, sent;
    bool exists;
    diff_index_t *ix;

    snprintf(endpoint, sizeof endpoint, "redis 127.0.0.1:%d", srv.port);
    commit_ok(st, "down", a, 1, 1, &cycle);
    redis_server_kill(&srv);

    for (int i = 0; i < 3; i++) { /* every call tries again, none sleeps */
        long long t0 = now_ms();

        err[0] = '\0';
        ck_assert_int_eq(commit_tx(st, "down", b, 2, 2, NULL, &cycle, err, sizeof err), -1);
        ck_assert_uint_eq(cycle, 1);
        ck_assert_msg(strstr(err, endpoint) != NULL && strstr(err, "refused") != NULL, "%s", err);
        ck_assert_int_lt(now_ms() - t0, 1000);
    }
    ck_assert_int_eq(store_ping(st, err, sizeof err), -1);
    sent = store_commands_sent(st);

    redis_server_start(&srv);
    ix = load_after_outage(st, "down", &exists, &cycle);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_uint_eq(diff_index_size(ix), 1);
    assert_record(ix, "a1", &a[0].rec);
    ck_assert_uint_gt(store_commands_sent(st), sent);
    diff_index_free(ix);

    commit_ok(st, "down", b, 2, 2, &cycle);
    ck_assert_uint_eq(cycle, 2);
    store_free(st);
}
END_TEST

START_TEST(test_timeout_then_reconnect)
{
    char url[96], err[ERRLEN] = "";
    store_t *st;
    long long t0, elapsed;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    st = open_store_url(url, NULL, 300);
    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);

    kill(srv.pid, SIGSTOP); /* accepts nothing, answers nothing */
    t0 = now_ms();
    ck_assert_int_eq(store_ping(st, err, sizeof err), -1);
    elapsed = now_ms() - t0;
    kill(srv.pid, SIGCONT);
    ck_assert_msg(strstr(err, "timed out after 300 ms") != NULL, "%s", err);
    ck_assert_msg(elapsed >= 250 && elapsed < 2000, "took %lld ms", elapsed);

    ck_assert_msg(store_ping(st, err, sizeof err) == 0, "%s", err);
    store_free(st);
}
END_TEST

/* ================= asynchronous operations ================= */

/* What the callbacks of one test saw; each counts its calls. */
typedef struct async_seen {
    int calls;
    int rc;
    size_t n;
    bool was_member;
    store_lease_t lease;
    char err[ERRLEN];
} async_seen_t;

static void seen_err(async_seen_t *a, const char *err)
{
    a->calls++;
    snprintf(a->err, sizeof a->err, "%s", err ? err : "");
}

static void on_done(void *opaque, int rc, const char *err)
{
    async_seen_t *a = opaque;
    a->rc = rc;
    seen_err(a, err);
}

static void on_count(void *opaque, int rc, size_t n, const char *err)
{
    async_seen_t *a = opaque;
    a->rc = rc;
    a->n = n;
    seen_err(a, err);
}

static void on_lease(void *opaque, store_lease_t r, const char *err)
{
    async_seen_t *a = opaque;
    a->lease = r;
    seen_err(a, err);
}

static void on_beat(void *opaque, int rc, size_t live, bool was_member, const char *err)
{
    async_seen_t *a = opaque;
    a->rc = rc;
    a->n = live;
    a->was_member = was_member;
    seen_err(a, err);
}

static void on_load_seen(void *opaque, int rc, bool exists, uint64_t cycle, const char *err)
{
    async_seen_t *a = opaque;
    a->rc = rc;
    a->n = exists ? (size_t)cycle : 0;
    seen_err(a, err);
}

/* Runs l until *calls reaches want, for at most max_ms. */
static void run_until(loop_t *l, const int *calls, int want, int max_ms)
{
    for (int waited = 0; *calls < want && waited < max_ms; waited += 10)
        loop_run_for(l, 10);
}

static loop_t *attached_loop(store_t *st)
{
    char err[ERRLEN] = "";
    loop_t *l = loop_new(err, sizeof err);

    ck_assert_msg(l != NULL, "%s", err);
    ck_assert_msg(store_attach(st, l, err, sizeof err) == 0, "%s", err);
    return l;
}

START_TEST(test_async_operations)
{
    char err[ERRLEN] = "", a_tok[STORE_TOKEN_LEN];
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    store_t *st = open_store_url(url, "async", 2000); /* members of its own */
    loop_t *l = attached_loop(st);
    async_seen_t ping = {0}, dlq = {0}, renew = {0}, beat1 = {0}, beat2 = {0};
    uint64_t before = store_commands_sent(st);

    ck_assert_int_eq(store_new_token(a_tok), 0);
    /* nothing is answered before the loop runs: the calls do not block */
    ck_assert_int_eq(store_ping_async(st, on_done, &ping, err, sizeof err), 0);
    ck_assert_int_eq(store_dlq_count_async(st, "async", on_count, &dlq, err, sizeof err), 0);
    ck_assert_int_eq(
        store_lease_renew_async(st, "async", a_tok, 60000, on_lease, &renew, err, sizeof err), 0);
    ck_assert_int_eq(
        store_member_beat_async(st, a_tok, NULL, 60000, on_beat, &beat1, err, sizeof err), 0);
    ck_assert_int_eq(ping.calls + dlq.calls + renew.calls + beat1.calls, 0);
    run_until(l, &beat1.calls, 1, 2000);
    ck_assert_msg(ping.calls == 1 && ping.rc == 0, "%s", ping.err);
    ck_assert_msg(dlq.calls == 1 && dlq.rc == 0 && dlq.n == 0, "%s", dlq.err);
    ck_assert_int_eq(renew.calls, 1);
    ck_assert_int_eq(renew.lease, STORE_LEASE_GONE); /* nobody holds it */
    ck_assert_msg(beat1.calls == 1 && beat1.rc == 0, "%s", beat1.err);
    ck_assert_uint_eq(beat1.n, 1);
    ck_assert(!beat1.was_member);
    /* PING, HLEN, EVAL and the beat's six (one round trip) */
    ck_assert_uint_eq(store_commands_sent(st), before + 9);

    /* taken in one round trip; taken again (ours already); another's is OTHER */
    char b_tok[STORE_TOKEN_LEN];
    async_seen_t take[3] = {{0}}, rel = {0};
    ck_assert_int_eq(store_new_token(b_tok), 0);
    before = store_commands_sent(st);
    ck_assert_int_eq(
        store_lease_acquire_async(st, "async", a_tok, 60000, on_lease, &take[0], err, sizeof err),
        0);
    ck_assert_int_eq(
        store_lease_acquire_async(st, "async", a_tok, 60000, on_lease, &take[1], err, sizeof err),
        0);
    ck_assert_int_eq(
        store_lease_acquire_async(st, "async", b_tok, 60000, on_lease, &take[2], err, sizeof err),
        0);
    run_until(l, &take[2].calls, 1, 2000);
    ck_assert_uint_eq(store_commands_sent(st), before + 6);
    ck_assert_int_eq(take[0].lease, STORE_LEASE_HELD);
    ck_assert_int_eq(take[1].lease, STORE_LEASE_HELD);
    ck_assert_int_eq(take[2].lease, STORE_LEASE_OTHER);
    /* another's release changes nothing; ours frees it */
    ck_assert_int_eq(store_lease_release_async(st, "async", b_tok, on_done, &rel, err, sizeof err),
                     0);
    run_until(l, &rel.calls, 1, 2000);
    ck_assert_msg(rel.calls == 1 && rel.rc == 0, "%s", rel.err);
    ck_assert_int_eq(store_lease_renew(st, "async", a_tok, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    rel = (async_seen_t){0};
    ck_assert_int_eq(store_lease_release_async(st, "async", a_tok, on_done, &rel, err, sizeof err),
                     0);
    run_until(l, &rel.calls, 1, 2000);
    ck_assert_int_eq(store_lease_renew(st, "async", a_tok, 60000, err, sizeof err),
                     STORE_LEASE_GONE);

    /* the same answers as the blocking calls give */
    ck_assert_int_eq(store_lease_acquire(st, "async", a_tok, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    renew = (async_seen_t){0};
    ck_assert_int_eq(
        store_lease_renew_async(st, "async", a_tok, 60000, on_lease, &renew, err, sizeof err), 0);
    ck_assert_int_eq(
        store_member_beat_async(st, a_tok, NULL, 60000, on_beat, &beat2, err, sizeof err), 0);
    run_until(l, &beat2.calls, 1, 2000);
    ck_assert_int_eq(renew.lease, STORE_LEASE_HELD);
    ck_assert(beat2.was_member);
    ck_assert_int_eq(store_lease_release(st, "async", a_tok, err, sizeof err), 0);

    /* a bad sink name sends nothing and calls nothing back */
    ck_assert_int_eq(store_dlq_count_async(st, "Bad Name", on_count, &dlq, err, sizeof err), -1);
    ck_assert_int_eq(dlq.calls, 1);
    store_free(st);
    loop_free(l);
}
END_TEST

/* Sessions of the mid-scan test: several STORE_LOAD_SCAN_COUNT pages. */
#define SCAN_N (5 * STORE_LOAD_SCAN_COUNT)

static void on_flag(void *opaque, int rc, bool disabled, const char *why, const char *err)
{
    async_seen_t *a = opaque;
    a->rc = rc;
    a->n = disabled;
    seen_err(a, why ? why : err);
}

/*
 * A load is one HSCAN page per round trip, each put into the index from its
 * reply: the index fills while the loop turns. The connection killed in the
 * middle (CLIENT KILL) fails it once, and leaves nothing of it in the index.
 */
START_TEST(test_async_load_killed_mid_scan)
{
    diff_change_t *ch = calloc(SCAN_N, sizeof *ch);
    char(*ids)[16] = calloc(SCAN_N, sizeof *ids);
    char err[ERRLEN] = "";
    store_t *st = open_store(srv.port);
    diff_index_t *ix = diff_index_new();
    async_seen_t a = {0};
    uint64_t cycle = 0, before;
    bool exists;
    loop_t *l;

    ck_assert(ch != NULL && ids != NULL && ix != NULL);
    for (size_t i = 0; i < SCAN_N; i++) {
        snprintf(ids[i], sizeof ids[i], "s%zu", i);
        ch[i] = upsert(ids[i], DIFF_STATE_ACTIVE, 0, i, "IN_PROGRESS");
    }
    commit_ok(st, "scan", ch, SCAN_N, SCAN_N, &cycle);

    /* whole: the meta and every page, one page per round trip */
    before = store_commands_sent(st);
    ck_assert_msg(load_now(st, "scan", ix, &exists, &cycle, err, sizeof err) == 0, "%s", err);
    ck_assert(exists);
    ck_assert_uint_eq(cycle, 1);
    ck_assert_uint_eq(diff_index_size(ix), SCAN_N);
    ck_assert_uint_ge(store_commands_sent(st) - before, 1 + SCAN_N / STORE_LOAD_SCAN_COUNT);

    l = attached_loop(st);
    ck_assert_int_eq(store_load_async(st, "scan", ix, on_load_seen, &a, err, sizeof err), 0);
    ck_assert_uint_eq(diff_index_size(ix), 0); /* cleared first */
    for (int waited = 0; diff_index_size(ix) == 0 && a.calls == 0 && waited < 5000; waited++)
        loop_run_for(l, 1);
    ck_assert_msg(a.calls == 0 && diff_index_size(ix) > 0 && diff_index_size(ix) < SCAN_N,
                  "not caught mid-scan: %d calls, %zu sessions", a.calls, diff_index_size(ix));
    ck_assert_int_ge(redis_server_int(srv.port, "CLIENT KILL TYPE normal SKIPME yes"), 1);
    run_until(l, &a.calls, 1, 3000);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(a.rc, -1);
    ck_assert_msg(strstr(a.err, "HSCAN") != NULL || strstr(a.err, "redis 127.0.0.1") != NULL, "%s",
                  a.err);
    ck_assert_uint_eq(diff_index_size(ix), 0);
    loop_run_for(l, 300); /* nothing more comes */
    ck_assert_int_eq(a.calls, 1);

    /* the next load connects again and reads it whole */
    a = (async_seen_t){0};
    ck_assert_int_eq(store_load_async(st, "scan", ix, on_load_seen, &a, err, sizeof err), 0);
    run_until(l, &a.calls, 1, 5000);
    ck_assert_msg(a.calls == 1 && a.rc == 0, "%s", a.err);
    ck_assert_uint_eq(diff_index_size(ix), SCAN_N);
    store_free(st);
    loop_free(l);
    diff_index_free(ix);
    free(ch);
    free(ids);
}
END_TEST

/*
 * The settles of a turn are one transaction: delivered, retried and dead
 * events at once, in one round trip; the disabled flag by callback; the
 * member leave.
 */
START_TEST(test_async_outbox)
{
    diff_change_t ch = upsert("a", DIFF_STATE_ACTIVE, 0, 1, "active");
    store_letter_t out[] = {{.sink = "aob", .id = "e1", .json = "{}", .len = 2},
                            {.sink = "aob", .id = "e2", .json = "{}", .len = 2},
                            {.sink = "aob", .id = "e3", .json = "{}", .len = 2}};
    store_extra_t extra = {.outbox = store_letters_of(out, 3)};
    store_t *st = open_store(srv.port);
    char err[ERRLEN] = "";
    uint64_t cycle = 0, before;
    store_claim_t *c = NULL;
    size_t n = 0;
    loop_t *l;

    ck_assert_msg(commit_tx(st, "aob", &ch, 1, 1, &extra, &cycle, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(claim_now(st, "aob", 10, &c, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(c[0].attempt, 1);
    store_claims_free(c, n);
    /* claimed: not due again within the claim lease */
    ck_assert_msg(claim_now(st, "aob", 10, &c, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n, 0);
    store_claims_free(c, n);

    store_settle_t ops[] = {{.kind = STORE_SETTLE_DONE, .id = "e1"},
                            {.kind = STORE_SETTLE_RETRY, .id = "e2", .due_ms = 1234},
                            {.kind = STORE_SETTLE_DEAD, .id = "e3", .record = "{\"id\":\"e3\"}"}};
    l = attached_loop(st);
    async_seen_t done = {0};
    before = store_commands_sent(st);
    ck_assert_int_eq(store_outbox_settle_async(st, "aob", ops, 3, on_done, &done, err, sizeof err),
                     0);
    ck_assert_int_eq(done.calls, 0);
    run_until(l, &done.calls, 1, 2000);
    ck_assert_msg(done.calls == 1 && done.rc == 0, "%s", done.err);
    /* MULTI, done 3, retry 1, dead 4, EXEC */
    ck_assert_uint_eq(store_commands_sent(st) - before, 10);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:aob"), 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HEXISTS sb:ob:aob e2"), 1);
    ck_assert_int_eq(redis_server_int(srv.port, "ZCARD sb:ob:aob:due"), 1);
    ck_assert_int_eq(redis_server_int(srv.port, "ZCOUNT sb:ob:aob:due 1234 1234"), 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:ob:aob:att"), 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HEXISTS sb:dlq:aob e3"), 1);

    /* a command refused inside the transaction fails the settle, once */
    ck_assert_int_eq(redis_server_int(srv.port, "SADD sb:ob:bad:due x"), 1);
    done = (async_seen_t){0};
    ck_assert_int_eq(
        store_outbox_settle_async(st, "bad", &ops[1], 1, on_done, &done, err, sizeof err), 0);
    run_until(l, &done.calls, 1, 2000);
    ck_assert_int_eq(done.calls, 1);
    ck_assert_msg(done.rc == -1 && strstr(done.err, "WRONGTYPE") != NULL, "%s", done.err);
    /* nothing to settle, or no id: refused before anything is sent */
    ck_assert_int_eq(store_outbox_settle_async(st, "aob", ops, 0, on_done, &done, err, sizeof err),
                     -1);
    store_settle_t noid = {.kind = STORE_SETTLE_DEAD, .id = "e9"};
    ck_assert_int_eq(
        store_outbox_settle_async(st, "aob", &noid, 1, on_done, &done, err, sizeof err), -1);
    ck_assert_int_eq(done.calls, 1);

    /* the disabled flag: set, read with its reason, cleared */
    async_seen_t flag = {0}, set = {0};
    ck_assert_int_eq(
        store_sink_set_disabled_async(st, "aob", "HTTP 410 Gone", on_done, &set, err, sizeof err),
        0);
    ck_assert_int_eq(store_sink_disabled_async(st, "aob", on_flag, &flag, err, sizeof err), 0);
    run_until(l, &flag.calls, 1, 2000);
    ck_assert_msg(set.calls == 1 && set.rc == 0, "%s", set.err);
    ck_assert_int_eq(flag.rc, 0);
    ck_assert_uint_eq(flag.n, 1);
    ck_assert_str_eq(flag.err, "HTTP 410 Gone");
    set = flag = (async_seen_t){0};
    ck_assert_int_eq(store_sink_set_disabled_async(st, "aob", NULL, on_done, &set, err, sizeof err),
                     0);
    ck_assert_int_eq(store_sink_disabled_async(st, "aob", on_flag, &flag, err, sizeof err), 0);
    run_until(l, &flag.calls, 1, 2000);
    ck_assert_int_eq(flag.rc, 0);
    ck_assert_uint_eq(flag.n, 0);

    /* the member leave */
    char tok[STORE_TOKEN_LEN];
    async_seen_t beat = {0}, leave = {0};
    ck_assert_int_eq(store_new_token(tok), 0);
    ck_assert_int_eq(store_member_beat_async(st, tok, NULL, 60000, on_beat, &beat, err, sizeof err),
                     0);
    ck_assert_int_eq(store_member_leave_async(st, tok, on_done, &leave, err, sizeof err), 0);
    run_until(l, &leave.calls, 1, 2000);
    ck_assert_msg(leave.calls == 1 && leave.rc == 0, "%s", leave.err);
    ck_assert_msg(beat.calls == 1 && beat.rc == 0, "%s", beat.err);
    ck_assert_int_eq(redis_server_int(srv.port, "ZRANK sb:members %s", tok), -1);
    store_free(st);
    loop_free(l);
}
END_TEST

/* A TCP listener that accepts and never answers: a Redis that is stuck. */
static int silent_listener(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

START_TEST(test_async_timeout_fails_each_once)
{
    char url[96], err[ERRLEN] = "";
    int port, fd = silent_listener(&port);
    async_seen_t p[3] = {{0}}, late = {0};
    store_t *st;
    loop_t *l;

    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", SECRET, port);
    st = open_store_url(url, NULL, 300);
    l = attached_loop(st);
    uint64_t errors0 = store_errors(st);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(store_ping_async(st, on_done, &p[i], err, sizeof err), 0);
    run_until(l, &p[2].calls, 1, 3000);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(p[i].calls, 1);
        ck_assert_int_eq(p[i].rc, -1);
        ck_assert_msg(strstr(p[i].err, "timed out after 300 ms") != NULL, "%s", p[i].err);
        assert_no_secret(p[i].err);
    }
    ck_assert_uint_eq(store_errors(st), errors0 + 3);
    /* nothing more comes later */
    loop_run_for(l, 400);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p[i].calls, 1);

    /* closing the store fails what is pending, once each */
    ck_assert_int_eq(store_ping_async(st, on_done, &late, err, sizeof err), 0);
    store_detach(st);
    ck_assert_int_eq(late.calls, 1);
    ck_assert_msg(strstr(late.err, "closing") != NULL, "%s", late.err);
    ck_assert_int_eq(store_ping_async(st, on_done, &late, err, sizeof err), -1);
    ck_assert_int_eq(late.calls, 1);
    store_free(st);
    loop_free(l);
    close(fd);
}
END_TEST

START_TEST(test_async_down_server_pauses_reconnects)
{
    char url[96], err[ERRLEN] = "";
    int port = redis_server_free_port();
    async_seen_t a = {0};
    store_t *st;
    loop_t *l;

    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", SECRET, port);
    st = open_store_url(url, NULL, 500);
    l = attached_loop(st);
    ck_assert_int_eq(store_ping_async(st, on_done, &a, err, sizeof err), 0);
    run_until(l, &a.calls, 1, 2000);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_msg(a.rc == -1 && strstr(a.err, "refused") != NULL, "%s", a.err);
    assert_no_secret(a.err);
    /* within the reconnect pause: refused at once, no callback */
    err[0] = '\0';
    ck_assert_int_eq(store_ping_async(st, on_done, &a, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "refused") != NULL, "%s", err);
    assert_no_secret(err);
    ck_assert_int_eq(a.calls, 1);
    store_free(st);
    loop_free(l);
}
END_TEST

/* ---- what status reads, and what the daemon writes for it ---- */

/* A string value read on a plain connection (owned), or NULL when absent. */
static char *get_string(const char *key, int64_t *pttl)
{
    redisContext *c = redis_server_connect(srv.port);
    redisReply *r;
    char *out = NULL;

    ck_assert_ptr_nonnull(c);
    r = redisCommand(c, "GET %s", key);
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        out = strdup(r->str);
    freeReplyObject(r);
    r = redisCommand(c, "PTTL %s", key);
    if (pttl != NULL)
        *pttl = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -3;
    freeReplyObject(r);
    redisFree(c);
    return out;
}

START_TEST(test_replica_record_written_by_the_beat)
{
    char err[ERRLEN] = "", tok[STORE_TOKEN_LEN], key[128], host[400];
    snprintf(key, sizeof key, "redis://127.0.0.1:%d", srv.port);
    store_t *st = open_store_url(key, "rr", 2000);
    loop_t *l = attached_loop(st);
    size_t live = 0;
    bool was = true;
    int64_t pttl = 0;

    ck_assert_int_eq(store_new_token(tok), 0);
    store_replica_t who = {.host = "pod-a", .version = "1.2.3", .pid = 4242, .started_ms = 1000};
    ck_assert_int_eq(store_member_beat(st, tok, &who, 60000, &live, &was, err, sizeof err), 0);
    ck_assert_uint_eq(live, 1);
    snprintf(key, sizeof key, "rr:replica:%s", tok);
    char *rec = get_string(key, &pttl);
    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(rec,
                     "{\"host\":\"pod-a\",\"pid\":4242,\"version\":\"1.2.3\",\"started_at\":1000}");
    ck_assert(pttl > 0 && pttl <= 60000); /* it expires with the membership */
    free(rec);

    /* the asynchronous beat writes it too, in its one round trip; a host
     * longer than any DNS name is cut to the bound */
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    who.host = host;
    async_seen_t beat = {0};
    uint64_t before = store_commands_sent(st);
    ck_assert_int_eq(store_member_beat_async(st, tok, &who, 30000, on_beat, &beat, err, sizeof err),
                     0);
    run_until(l, &beat.calls, 1, 2000);
    ck_assert_msg(beat.rc == 0, "%s", beat.err);
    ck_assert(beat.was_member);
    ck_assert_uint_eq(beat.n, 1);
    ck_assert_uint_eq(store_commands_sent(st), before + 7); /* the six and the SET */
    rec = get_string(key, &pttl);
    ck_assert_ptr_nonnull(rec);
    ck_assert(pttl > 0 && pttl <= 30000);
    char want[STORE_HOST_MAX + 16];
    snprintf(want, sizeof want, "{\"host\":\"%.*s\"", STORE_HOST_MAX, host);
    ck_assert_msg(strncmp(rec, want, strlen(want)) == 0, "%s", rec);
    free(rec);

    /* leaving takes the record with the membership */
    async_seen_t leave = {0};
    ck_assert_int_eq(store_member_leave_async(st, tok, on_done, &leave, err, sizeof err), 0);
    run_until(l, &leave.calls, 1, 2000);
    ck_assert_msg(leave.rc == 0, "%s", leave.err);
    ck_assert_ptr_null(get_string(key, NULL));
    ck_assert_int_eq(redis_server_int(srv.port, "ZCARD rr:members"), 0);
    store_free(st);
    loop_free(l);
}
END_TEST

START_TEST(test_poll_status_overwritten_and_bounded)
{
    char err[ERRLEN] = "", url[64], long_error[STORE_POLL_ERROR_MAX * 2];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    store_t *st = open_store_url(url, "ps", 2000);
    loop_t *l = attached_loop(st);
    async_seen_t w1 = {0}, w2 = {0};

    memset(long_error, 'e', sizeof long_error - 1);
    long_error[sizeof long_error - 1] = '\0';
    store_poll_t p = {.at_ms = 1700000000123,
                      .ok = false,
                      .error = long_error,
                      .events = 0,
                      .pages = 2,
                      .replica = "abc"};
    ck_assert_int_eq(store_poll_set_async(st, "src", &p, on_done, &w1, err, sizeof err), 0);
    run_until(l, &w1.calls, 1, 2000);
    ck_assert_msg(w1.rc == 0, "%s", w1.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HSTRLEN ps:poll:src error"), STORE_POLL_ERROR_MAX);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET ps:poll:src at"), 1700000000123LL);

    /* the next cycle's outcome replaces every field: no error left behind */
    p = (store_poll_t){.at_ms = 1700000001000, .ok = true, .error = "ignored", .events = 5};
    ck_assert_int_eq(store_poll_set_async(st, "src", &p, on_done, &w2, err, sizeof err), 0);
    run_until(l, &w2.calls, 1, 2000);
    ck_assert_msg(w2.rc == 0, "%s", w2.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HSTRLEN ps:poll:src error"), 0);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET ps:poll:src events"), 5);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN ps:poll:src"), 6);

    /* a name that cannot be a key sends nothing and calls nothing back */
    ck_assert_int_eq(store_poll_set_async(st, "Bad Name", &p, on_done, &w2, err, sizeof err), -1);
    ck_assert_int_eq(w2.calls, 1);
    store_free(st);
    loop_free(l);
}
END_TEST

START_TEST(test_sources_status_as_redis_holds_them)
{
    char err[ERRLEN] = "", url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    store_t *st = open_store_url(url, "ss", 2000);
    store_source_status_t out[4];
    const char tok[] = "0123456789abcdef0123456789abcdef";

    /* ours: a commit, a held lease with its holder's record, a failed poll */
    redis_server_ok(srv.port, "HSET ss:meta:full cycle 7 committed_at 1700000000000 sessions 3");
    redis_server_ok(srv.port, "SET ss:lease:full %s PX 9000", tok);
    redis_server_ok(srv.port, "SET ss:replica:%s %s PX 9000", tok,
                    "{\"host\":\"pod-a\",\"pid\":12,\"version\":\"9\",\"started_at\":5}");
    redis_server_ok(srv.port,
                    "HSET ss:poll:full at 1700000000100 outcome failed error %s events 0 pages 1 "
                    "replica %s",
                    "HTTP status 401", tok);
    /* foreign: a lease of a writer that is not us (no TTL, long, binary), a
     * record that is not JSON, an over-long error */
    char foreign[200];
    memset(foreign, 'x', sizeof foreign);
    foreign[10] = '\x01';
    redisContext *c = redis_server_connect(srv.port);
    freeReplyObject(redisCommand(c, "SET ss:lease:odd %b", foreign, sizeof foreign));
    freeReplyObject(redisCommand(c, "SET ss:replica:xxxxxxxxxx not-json"));
    redisFree(c);

    const char *names[] = {"full", "empty", "odd"};
    uint64_t before = store_commands_sent(st);
    ck_assert_msg(store_sources_status(st, names, 3, out, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(store_commands_sent(st), before + 3 * 4 + 3 * 2); /* two round trips */

    ck_assert(out[0].committed);
    ck_assert_uint_eq(out[0].cycle, 7);
    ck_assert_int_eq(out[0].committed_ms, 1700000000000LL);
    ck_assert_uint_eq(out[0].sessions, 3);
    ck_assert_str_eq(out[0].holder, tok);
    ck_assert(out[0].lease_ttl_ms > 0 && out[0].lease_ttl_ms <= 9000);
    ck_assert(out[0].holder_info.known);
    ck_assert_str_eq(out[0].holder_info.host, "pod-a");
    ck_assert_int_eq(out[0].holder_info.pid, 12);
    ck_assert(out[0].polled && !out[0].poll_ok);
    ck_assert_str_eq(out[0].poll_error, "HTTP status 401");
    ck_assert_uint_eq(out[0].poll_pages, 1);
    ck_assert_str_eq(out[0].poll_replica, tok);
    ck_assert(out[0].poll_replica_info.known);

    ck_assert(!out[1].committed && !out[1].polled);
    ck_assert_str_eq(out[1].holder, "");
    ck_assert_int_eq(out[1].lease_ttl_ms, -1);
    ck_assert(!out[1].holder_info.known);

    /* read up to its bound, shown printable, no TTL said as it is */
    ck_assert_uint_le(strlen(out[2].holder), STORE_HOLDER_MAX);
    ck_assert_msg(strstr(out[2].holder, "\\x01") != NULL, "%s", out[2].holder);
    ck_assert_int_eq(out[2].lease_ttl_ms, -1);
    ck_assert(!out[2].holder_info.known);

    /* a bad name, or too many: refused before anything is sent, and the
     * connection stays in step */
    const char *bad[] = {"full", "Bad Name"};
    before = store_commands_sent(st);
    ck_assert_int_eq(store_sources_status(st, bad, 2, out, err, sizeof err), -1);
    ck_assert_int_eq(store_sources_status(st, names, STORE_BATCH + 1, NULL, err, sizeof err), -1);
    ck_assert_uint_eq(store_commands_sent(st), before);
    ck_assert_msg(store_sources_status(st, names, 1, out, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(out[0].cycle, 7);
    store_free(st);
}
END_TEST

typedef struct found {
    char names[8][65]; /* source names are at most 64 bytes */
    int n, stop_after;
} found_t;

static int on_found(void *opaque, const char *name)
{
    found_t *f = opaque;

    ck_assert_int_lt(f->n, 8);
    snprintf(f->names[f->n++], sizeof f->names[0], "%s", name);
    return f->n == f->stop_after;
}

START_TEST(test_scan_sources_under_the_prefix_only)
{
    char err[ERRLEN] = "", url[64], longname[80];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    store_t *st = open_store_url(url, "g*[x]", 2000); /* glob characters in the prefix */
    found_t f = {.n = 0};

    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    redis_server_ok(srv.port, "HSET g*[x]:meta:one cycle 1");
    redis_server_ok(srv.port, "HSET g*[x]:meta:two cycle 1");
    redis_server_ok(srv.port, "HSET gZx:meta:other cycle 1"); /* matched by an unescaped glob */
    redis_server_ok(srv.port, "HSET g*[x]:meta:Bad cycle 1"); /* not a name of ours */
    redis_server_ok(srv.port, "HSET g*[x]:meta:%s cycle 1", longname);
    redis_server_ok(srv.port, "HSET g*[x]:snap:three a b"); /* not a meta hash */
    ck_assert_msg(store_scan_sources(st, on_found, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 2);
    ck_assert((strcmp(f.names[0], "one") == 0 && strcmp(f.names[1], "two") == 0) ||
              (strcmp(f.names[0], "two") == 0 && strcmp(f.names[1], "one") == 0));
    /* the callback stops it */
    f = (found_t){.stop_after = 1};
    ck_assert_msg(store_scan_sources(st, on_found, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 1);
    store_free(st);
}
END_TEST

/* ================= commits on the loop ================= */

typedef struct fence_seen {
    int calls;
    store_fence_t f;
    uint64_t cycle;
    char err[ERRLEN];
} fence_seen_t;

static void on_fence(void *opaque, store_fence_t f, uint64_t cycle, const char *err)
{
    fence_seen_t *a = opaque;
    a->calls++;
    a->f = f;
    a->cycle = cycle;
    snprintf(a->err, sizeof a->err, "%s", err ? err : "");
}

/* Commits delta from base on the loop and waits for the one answer. */
static fence_seen_t commit_async(store_t *st, loop_t *l, const char *source, const char *token,
                                 const store_delta_t *d, size_t after, uint64_t base)
{
    fence_seen_t a = {0};
    char err[ERRLEN] = "";

    ck_assert_msg(store_commit_fenced_async(st, source, token, d, after, NULL, base, on_fence, &a,
                                            err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(a.calls, 0); /* never from inside the call */
    run_until(l, &a.calls, 1, 10000);
    ck_assert_int_eq(a.calls, 1);
    return a;
}

/*
 * A delta whose reader runs a Redis command of a second client when change
 * `at` is read: on the loop, between the commit's WATCH and its EXEC.
 */
typedef enum meddle { MEDDLE_NOTE, MEDDLE_CYCLE, MEDDLE_RENEW, MEDDLE_KILL } meddle_t;

typedef struct meddling {
    const diff_change_t *ch;
    size_t at;
    meddle_t cmd;
    int port;
    int done;
} meddling_t;

static int meddling_get(void *opaque, size_t i, diff_change_t *out)
{
    meddling_t *m = opaque;

    if (i == m->at && !m->done) {
        m->done = 1;
        switch (m->cmd) {
        case MEDDLE_NOTE:
            redis_server_ok(m->port, "HSET sb:meta:af note 1");
            break;
        case MEDDLE_CYCLE:
            redis_server_ok(m->port, "HSET sb:meta:af cycle 9");
            break;
        case MEDDLE_RENEW:
            redis_server_ok(m->port, "PEXPIRE sb:lease:af 60000");
            break;
        case MEDDLE_KILL:
            ck_assert_int_ge(redis_server_int(m->port, "CLIENT KILL TYPE normal SKIPME yes"), 1);
            break;
        }
    }
    *out = m->ch[i];
    return 0;
}

/* Every outcome of the fence, as the blocking commit gives them, and in order. */
START_TEST(test_async_commit_outcomes)
{
    store_t *st = open_store(srv.port);
    loop_t *l = attached_loop(st);
    char a[STORE_TOKEN_LEN], b[STORE_TOKEN_LEN], err[ERRLEN] = "";
    diff_change_t ch[] = {upsert("x", DIFF_STATE_ACTIVE, 0, 1, "active"),
                          upsert("y", DIFF_STATE_PENDING, 0, 2, "pending")};
    store_delta_t two = store_delta_of(ch, 2), one = store_delta_of(ch, 1);
    fence_seen_t r, q[2] = {{0}};

    ck_assert_int_eq(store_new_token(a), 0);
    ck_assert_int_eq(store_new_token(b), 0);
    /* nobody holds the lease */
    r = commit_async(st, l, "af", a, &two, 2, 0);
    ck_assert_int_eq(r.f, STORE_FENCE_LEASE_GONE);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:snap:af sb:meta:af"), 0);
    /* another replica holds it */
    ck_assert_int_eq(store_lease_acquire(st, "af", b, 60000, err, sizeof err), STORE_LEASE_HELD);
    r = commit_async(st, l, "af", a, &two, 2, 0);
    ck_assert_int_eq(r.f, STORE_FENCE_LEASE_OTHER);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:snap:af sb:meta:af"), 0);
    ck_assert_int_eq(store_lease_release(st, "af", b, err, sizeof err), 0);
    ck_assert_int_eq(store_lease_acquire(st, "af", a, 60000, err, sizeof err), STORE_LEASE_HELD);
    /* a refused fence leaves nothing WATCHed: this one applies */
    r = commit_async(st, l, "af", a, &two, 2, 0);
    ck_assert_msg(r.f == STORE_FENCE_OK, "%s", r.err);
    ck_assert_uint_eq(r.cycle, 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:af"), 2);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:af cycle"), 1);
    /* a base the snapshot left */
    r = commit_async(st, l, "af", a, &one, 2, 0);
    ck_assert_int_eq(r.f, STORE_FENCE_BASE_MOVED);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:af cycle"), 1);
    /* two commits queued at once run one after the other, in order */
    ck_assert_int_eq(
        store_commit_fenced_async(st, "af", a, &one, 2, NULL, 1, on_fence, &q[0], err, sizeof err),
        0);
    ck_assert_int_eq(
        store_commit_fenced_async(st, "af", a, &one, 2, NULL, 2, on_fence, &q[1], err, sizeof err),
        0);
    run_until(l, &q[1].calls, 1, 5000);
    ck_assert_msg(q[0].calls == 1 && q[0].f == STORE_FENCE_OK, "%s", q[0].err);
    ck_assert_msg(q[1].calls == 1 && q[1].f == STORE_FENCE_OK, "%s", q[1].err);
    ck_assert_uint_eq(q[1].cycle, 3);
    /* Redis lost the snapshot: BASE_MISSING, and the restore puts it back */
    redis_server_ok(srv.port, "DEL sb:meta:af sb:snap:af");
    r = commit_async(st, l, "af", a, &one, 2, 3);
    ck_assert_int_eq(r.f, STORE_FENCE_BASE_MISSING);
    diff_index_t *ix = diff_index_new();
    ck_assert_int_eq(diff_index_put(ix, "x", &ch[0].rec), 0);
    ck_assert_int_eq(diff_index_put(ix, "y", &ch[1].rec), 0);
    fence_seen_t rs = {0};
    ck_assert_int_eq(store_restore_async(st, "af", b, ix, 3, on_fence, &rs, err, sizeof err), 0);
    run_until(l, &rs.calls, 1, 5000);
    ck_assert_int_eq(rs.f, STORE_FENCE_LEASE_OTHER);
    rs = (fence_seen_t){0};
    ck_assert_int_eq(store_restore_async(st, "af", a, ix, 3, on_fence, &rs, err, sizeof err), 0);
    run_until(l, &rs.calls, 1, 5000);
    ck_assert_msg(rs.f == STORE_FENCE_OK, "%s", rs.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:af"), 2);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:af cycle"), 3);
    rs = (fence_seen_t){0};
    ck_assert_int_eq(store_restore_async(st, "af", a, ix, 3, on_fence, &rs, err, sizeof err), 0);
    run_until(l, &rs.calls, 1, 5000);
    ck_assert_int_eq(rs.f, STORE_FENCE_BASE_MOVED); /* a snapshot exists now */
    r = commit_async(st, l, "af", a, &one, 2, 3);
    ck_assert_msg(r.f == STORE_FENCE_OK, "%s", r.err);

    /* a second client writes the meta hash between WATCH and EXEC: aborted,
     * nothing applied; a cycle moved says BASE_MOVED, another field only
     * that a concurrent write aborted it */
    diff_change_t more[] = {upsert("z", DIFF_STATE_ACTIVE, 0, 3, "active")};
    meddling_t m = {.ch = more, .at = 0, .cmd = MEDDLE_NOTE, .port = srv.port};
    store_delta_t dm = {.n = 1, .get = meddling_get, .opaque = &m};
    r = commit_async(st, l, "af", a, &dm, 3, 4);
    ck_assert_int_eq(r.f, STORE_FENCE_ERROR);
    ck_assert_msg(strstr(r.err, "aborted by a concurrent write") != NULL, "%s", r.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HEXISTS sb:snap:af z"), 0);
    m = (meddling_t){.ch = more, .at = 0, .cmd = MEDDLE_CYCLE, .port = srv.port};
    r = commit_async(st, l, "af", a, &dm, 3, 4);
    ck_assert_int_eq(r.f, STORE_FENCE_BASE_MOVED);
    ck_assert_int_eq(redis_server_int(srv.port, "HEXISTS sb:snap:af z"), 0);
    /* the lease renewed meanwhile (PEXPIRE) does not abort it */
    redis_server_ok(srv.port, "HSET sb:meta:af cycle 4");
    m = (meddling_t){.ch = more, .at = 0, .cmd = MEDDLE_RENEW, .port = srv.port};
    r = commit_async(st, l, "af", a, &dm, 3, 4);
    ck_assert_msg(r.f == STORE_FENCE_OK, "%s", r.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HEXISTS sb:snap:af z"), 1);
    ck_assert_int_eq(redis_server_int(srv.port, "HGET sb:meta:af cycle"), 5);

    diff_index_free(ix);
    store_free(st);
    loop_free(l);
}
END_TEST

/* The connection killed in the middle of a transaction of many windows:
 * the commit fails once, Redis holds none of it, the next one reconnects. */
START_TEST(test_async_commit_connection_killed)
{
    store_t *st = open_store(srv.port);
    loop_t *l = attached_loop(st);
    char token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    diff_change_t *ch = make_upserts(BIG_N);
    meddling_t m = {.ch = ch, .at = BIG_N / 2, .cmd = MEDDLE_KILL, .port = srv.port};
    store_delta_t d = {.n = BIG_N, .get = meddling_get, .opaque = &m};
    uint64_t errors0 = store_errors(st);
    fence_seen_t r;

    ck_assert_int_eq(store_new_token(token), 0);
    ck_assert_int_eq(store_lease_acquire(st, "killed", token, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    r = commit_async(st, l, "killed", token, &d, BIG_N, 0);
    ck_assert_int_eq(r.f, STORE_FENCE_ERROR);
    ck_assert_msg(r.err[0] != '\0', "no reason");
    ck_assert_uint_eq(store_errors(st), errors0 + 1);
    /* nothing more comes later */
    loop_run_for(l, 200);
    ck_assert_int_eq(redis_server_int(srv.port, "EXISTS sb:snap:killed sb:meta:killed"), 0);
    r = commit_async(st, l, "killed", token, &d, BIG_N, 0);
    ck_assert_msg(r.f == STORE_FENCE_OK, "%s", r.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:snap:killed"), BIG_N);

    /* closing the store fails the commit running and those waiting, once each */
    fence_seen_t q[2] = {{0}};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(store_commit_fenced_async(st, "killed", token, &d, BIG_N, NULL, 1,
                                                   on_fence, &q[i], err, sizeof err),
                         0);
    loop_run_for(l, 1);
    store_detach(st);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(q[i].calls, 1);
        ck_assert_int_eq(q[i].f, STORE_FENCE_ERROR);
    }
    free(ch);
    store_free(st);
    loop_free(l);
}
END_TEST

/*
 * A commit of many windows (LAST_BIG_N changes whose last records hold
 * LAST_ASYNC_TEXT bytes each: ~100 MiB of transaction) keeps only a few
 * windows in memory: the next is queued when Redis answered the earlier.
 * Queued at once, the output buffer would hold all of it.
 */
#define ASYNC_BIG_N 50000
#define LAST_ASYNC_TEXT 2048
#define ASYNC_HEAP_MAX (48u * 1024u * 1024u)

typedef struct heavy_delta {
    diff_change_t *ch;
    char *text;
    size_t heap0, heap_max;
} heavy_delta_t;

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static int heavy_get(void *opaque, size_t i, diff_change_t *out)
{
    heavy_delta_t *h = opaque;
    *out = h->ch[i];
    return 0;
}

static int heavy_last(void *opaque, size_t i, const char **text, size_t *len)
{
    heavy_delta_t *h = opaque;
    size_t heap = heap_in_use();

    if (heap > h->heap_max)
        h->heap_max = heap;
    snprintf(h->text, 16, "%015zu", i);
    *text = h->text;
    *len = LAST_ASYNC_TEXT;
    return 0;
}

START_TEST(test_async_commit_memory_stays_bounded)
{
    store_t *st = open_store(srv.port);
    loop_t *l = attached_loop(st);
    char token[STORE_TOKEN_LEN], err[ERRLEN] = "";
    static char ids[ASYNC_BIG_N][16];
    heavy_delta_t h = {.ch = calloc(ASYNC_BIG_N, sizeof(diff_change_t)),
                       .text = malloc(LAST_ASYNC_TEXT)};
    store_delta_t d = {.n = ASYNC_BIG_N, .get = heavy_get, .last = heavy_last, .opaque = &h};
    fence_seen_t r;

    ck_assert(h.ch != NULL && h.text != NULL);
    memset(h.text, 'x', LAST_ASYNC_TEXT);
    for (size_t i = 0; i < ASYNC_BIG_N; i++) {
        snprintf(ids[i], sizeof ids[i], "h-%06zu", i);
        h.ch[i] = upsert(ids[i], DIFF_STATE_ACTIVE, 0, i, "active");
        h.ch[i].last = DIFF_LAST_SET;
    }
    ck_assert_int_eq(store_new_token(token), 0);
    ck_assert_int_eq(store_lease_acquire(st, "heavy", token, 60000, err, sizeof err),
                     STORE_LEASE_HELD);
    h.heap0 = heap_in_use();
    r = commit_async(st, l, "heavy", token, &d, ASYNC_BIG_N, 0);
    ck_assert_msg(r.f == STORE_FENCE_OK, "%s", r.err);
    ck_assert_int_eq(redis_server_int(srv.port, "HLEN sb:rec:heavy"), ASYNC_BIG_N);
    ck_assert_int_eq(redis_server_int(srv.port, "HSTRLEN sb:rec:heavy h-049999"), LAST_ASYNC_TEXT);
    /* ASan's allocator reports nothing to mallinfo2(): the bound holds trivially there */
    ck_assert_msg(h.heap_max - h.heap0 < ASYNC_HEAP_MAX,
                  "%zu MiB in use during a commit of ~%d MiB", (h.heap_max - h.heap0) >> 20,
                  (int)((size_t)ASYNC_BIG_N * LAST_ASYNC_TEXT >> 20));
    free(h.ch);
    free(h.text);
    store_free(st);
    loop_free(l);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc;

    tc = tcase_create("url");
    tcase_add_loop_test(tc, test_url_table, 0, (int)(sizeof url_cases / sizeof *url_cases));
    tcase_add_test(tc, test_url_too_long);
    tcase_add_test(tc, test_options_invalid);
    tcase_add_test(tc, test_down_server);
    suite_add_tcase(s, tc);

    tc = tcase_create("redis");
    tcase_add_unchecked_fixture(tc, basic_setup, basic_teardown);
    tcase_add_test(tc, test_ping);
    tcase_add_test(tc, test_load_without_snapshot);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_meta_cycles);
    tcase_add_test(tc, test_fences_and_restore);
    tcase_add_test(tc, test_command_counts);
    tcase_add_test(tc, test_last_records);
    tcase_add_test(tc, test_last_records_in_chunks);
    tcase_add_test(tc, test_malformed_values);
    tcase_add_test(tc, test_error_reply_fails_commit);
    tcase_add_test(tc, test_failure_while_queueing_leaves_connection_in_step);
    tcase_add_test(tc, test_db_and_prefix);
    tcase_add_test(tc, test_outbox_and_dlq_counts);
    tcase_add_test(tc, test_large_outbox_in_windows);
    tcase_add_test(tc, test_crash_between_windows_writes_nothing);
    tcase_add_test(tc, test_reader_failure_writes_nothing);
    tcase_add_test(tc, test_large_exec_waits_longer_than_a_command);
    tcase_add_test(tc, test_invalid_input_sends_nothing);
    tcase_add_test(tc, test_idle_connection_closed_by_server);
    tcase_add_test(tc, test_async_operations);
    tcase_add_test(tc, test_async_load_killed_mid_scan);
    tcase_add_test(tc, test_async_outbox);
    tcase_add_test(tc, test_async_timeout_fails_each_once);
    tcase_add_test(tc, test_async_down_server_pauses_reconnects);
    tcase_add_test(tc, test_async_commit_outcomes);
    tcase_add_test(tc, test_async_commit_connection_killed);
    tcase_add_test(tc, test_async_commit_memory_stays_bounded);
    tcase_add_test(tc, test_replica_record_written_by_the_beat);
    tcase_add_test(tc, test_poll_status_overwritten_and_bounded);
    tcase_add_test(tc, test_sources_status_as_redis_holds_them);
    tcase_add_test(tc, test_scan_sources_under_the_prefix_only);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_add_unchecked_fixture(tc, auth_setup, basic_teardown);
    tcase_add_test(tc, test_auth);
    tcase_add_test(tc, test_auth_missing);
    suite_add_tcase(s, tc);

    /* These kill their server: each test starts its own, in the test process. */
    tc = tcase_create("restart");
    tcase_add_unchecked_fixture(tc, restart_dir_setup, basic_teardown);
    tcase_add_checked_fixture(tc, restart_setup, restart_teardown);
    tcase_add_test(tc, test_restart_between_commits);
    tcase_add_test(tc, test_commit_while_down_changes_nothing);
    tcase_add_test(tc, test_timeout_then_reconnect);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(store_suite());
}
