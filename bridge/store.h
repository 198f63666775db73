/*
 * store: the snapshot of every source, kept in Redis.
 *
 * Layout, with P the configured prefix and S the source name:
 *   P:snap:S   hash  session id -> diff_record_encode() text
 *   P:meta:S   hash  cycle (decimal, increments per commit), committed_at
 *                    (unix ms), sessions (count after the commit)
 *   P:rec:S    hash  session id -> the provider's record as last received,
 *                    for the sessions that can vanish (pending, active):
 *                    what their vanished event carries (CONTRACT §6).
 *                    Written with the delta (diff_change_t.last), never
 *                    held by the bridge; store_restore_async() leaves it alone
 *                    (a Redis that lost the snapshot lost it too)
 * A source "has a snapshot" when P:meta:S exists.
 *
 * The durable outbox of an outbox sink K (webhooks, CONTRACT §7) and the
 * dead letters of any sink:
 *   P:ob:K       hash  event id -> the CloudEvent JSON
 *   P:ob:K:due   zset  event id -> when the next attempt is due (unix ms);
 *                      a claimed event is pushed past its claim lease, so
 *                      the events of a holder that died come back
 *   P:ob:K:att   hash  event id -> attempts made
 *   P:ob:K:off   string, present while the endpoint is disabled (why)
 *   P:dlq:K      hash  event id -> dead-letter record JSON
 *                      {"id","sink","attempts","error","failed_at","event"}
 *
 * Replicas (several bridges on one Redis):
 *   P:lease:S    string: the token of the replica polling source S, with a
 *                TTL; set only if absent, renewed and released only by a
 *                script that compares the token
 *   P:members    zset  replica id -> unix ms until which it counts as alive
 *   P:replica:ID string, JSON {"host","pid","version","started_at"}: who
 *                replica ID is, for `status`; written with each member
 *                beat, with the membership's TTL. A replica's id is its
 *                lease token, so the lease names its holder while the
 *                fence still compares one opaque random value: a lease
 *                without a record (a replica of an older version, or one
 *                that stopped beating) is shown by its token alone.
 *
 * What the daemon says of each source, for `status` (nothing reads it back):
 *   P:poll:S     hash  at (unix ms), outcome (ok|failed), error (""
 *                      when ok, at most STORE_POLL_ERROR_MAX bytes, the
 *                      text the daemon logged: no secrets), events, pages,
 *                      replica (the writer's id); every field overwritten
 *                      at the end of each cycle, on the asynchronous
 *                      connection, so its size stays bounded
 * A commit given a lease token is fenced twice: it WATCHes P:meta:S,
 * checks that the lease holds the token and that the snapshot is still at
 * the cycle the delta was computed against, and EXEC applies nothing if
 * the meta hash changed meanwhile. So the commit of a replica that lost
 * its lease (paused past its TTL) is refused, and so is a delta that would
 * land on a snapshot Redis no longer has (flushed, restarted empty): the
 * fence says which of the two, and a holder that still has the snapshot in
 * memory can put it back (store_restore_async()) before committing. The lease
 * is not WATCHed: its holder renews it (PEXPIRE) while a long commit is
 * in flight, which would abort that commit every time. The meta hash is
 * what every writer of the snapshot moves, so it orders them: a replica
 * that took the lease over after our fence and commits first aborts our
 * EXEC; if ours lands first, its own fence finds the base moved, and it
 * diffs again against ours (whose events were delivered: nothing is lost).
 *
 * A commit writes only the delta of a cycle (changed and removed sessions),
 * its outbox events and dead letters, plus the meta hash in one MULTI/EXEC
 * transaction, pipelined, with at most STORE_BATCH fields per command:
 * Redis work grows with churn, not with the population. The transaction is
 * written out as it is queued (our memory holds one window of it, Redis
 * queues the rest until EXEC); a commit that fails, or a process that dies,
 * before EXEC leaves a MULTI whose connection closed, which Redis discards
 * whole. The connection is re-established transparently when Redis
 * went away; a call that fails reports -1 and changes nothing it knows of
 * (an EXEC whose reply was lost may or may not have applied; the caller
 * reloads the index before its next cycle).
 *
 * Not thread-safe: one store per thread.
 */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diff.h"
#include "loop.h"

/* Fields per HSET/HDEL command and per HSCAN page, and letters per window
 * of a commit (store_letters_t). */
#define STORE_BATCH 1000
/* Longest key prefix accepted. */
#define STORE_PREFIX_MAX 64

typedef struct store store_t;

typedef struct store_options {
    const char *url;    /* redis://[:password@]host[:port][/db]; borrowed */
    const char *prefix; /* key prefix, default "sb"; borrowed */
    int timeout_ms;     /* connect and command timeout */
} store_options_t;

/*
 * Parses the URL and connects. NULL with a reason in err (never containing
 * the password) when the URL is invalid. A server that is down is not an
 * error here: the first command reconnects and reports it.
 */
store_t *store_new(const store_options_t *opt, char *err, size_t errlen);
void store_free(store_t *st);

/* PING; 0 when Redis answers. */
int store_ping(store_t *st, char *err, size_t errlen);

/* One event for an outbox, or one dead-letter record; all borrowed. */
typedef struct store_letter {
    const char *sink; /* sink name, [a-z0-9_-]{1,64} */
    const char *id;   /* event id */
    const char *json; /* outbox: the CloudEvent; dead letter: the record */
    size_t len;
} store_letter_t;

/*
 * Letters read window by window, so that a commit never holds them all: a
 * first cycle with initial_snapshot=emit puts an event per session into an
 * outbox, and a million event texts would be the sum of them all in memory.
 * get fills out[0 .. *got) with letters from, from + 1, ... (1 <= *got <=
 * max; max <= n - from) and returns 0, or -1 to fail the commit. Their
 * strings stay valid until the next call of get or the end of the commit:
 * each window is queued (and past STORE_FLUSH_BYTES written out) before the
 * next one is read. Called on the committing thread, from 0 upwards, and
 * from 0 again when the commit is tried again. Consecutive letters for the
 * same sink share a command: give them sink by sink.
 */
typedef struct store_letters {
    size_t n;
    int (*get)(void *opaque, size_t from, store_letter_t *out, size_t max, size_t *got);
    void *opaque;
} store_letters_t;

/* The letters of an array of n (borrowed, only read). */
store_letters_t store_letters_of(const store_letter_t *letters, size_t n);

/* What a commit writes besides the delta, in the same transaction. */
typedef struct store_extra {
    store_letters_t outbox; /* due at once */
    store_letters_t dead;
} store_extra_t;

/*
 * A delta read change by change, so that a large one need not exist as an
 * array (diff_cycle_change() derives each change when asked): get fills
 * *out with change i < n (its strings valid until the commit returns) and
 * returns 0, or -1 to fail the commit. last, when set, gives the text of
 * change i's last record (a change whose last is DIFF_LAST_SET) in
 * *text and *len, valid until the next call of last, and returns 0 or -1; when
 * NULL the changes carry it (last_text). Called on the committing thread,
 * get several times per change, last once per record in change order.
 */
typedef struct store_delta {
    size_t n;
    int (*get)(void *opaque, size_t i, diff_change_t *out);
    int (*last)(void *opaque, size_t i, const char **text, size_t *len);
    void *opaque;
} store_delta_t;

/* The delta of an array of n changes (borrowed, only read). */
store_delta_t store_delta_of(const diff_change_t *changes, size_t n);

/* A stored record larger than the largest page the bridge reads
 * (HTTP_DEFAULT_MAX_BODY) was not written by it, and is not read. */
#define STORE_LAST_MAX (16u * 1024u * 1024u)

/*
 * Called per session of store_last_get_async(), in the order asked, with
 * its last record (len bytes, valid during the call), or NULL when Redis
 * holds none (or one longer than STORE_LAST_MAX). Returns 0 to go on.
 */
typedef int (*store_last_fn)(void *opaque, size_t k, const char *text, size_t len);

/* ---- leases ---- */

/* Length of a lease token: 32 hex digits and the NUL. */
#define STORE_TOKEN_LEN 33

/* A fresh random token (CSPRNG). 0 or -1. */
int store_new_token(char token[STORE_TOKEN_LEN]);

typedef enum store_lease {
    STORE_LEASE_HELD = 0, /* ours (taken or renewed) */
    STORE_LEASE_OTHER,    /* another replica holds it */
    STORE_LEASE_GONE,     /* nobody holds it (it expired, or Redis lost it); renew only */
    STORE_LEASE_ERROR,    /* Redis failed; err says why */
} store_lease_t;

/* SET P:lease:S token NX PX ttl_ms; HELD when we hold it now (already ours too). */
store_lease_t store_lease_acquire(store_t *st, const char *source, const char *token,
                                  int64_t ttl_ms, char *err, size_t errlen);
/*
 * Extends our lease to ttl_ms from now; OTHER when another replica holds
 * it, GONE when nobody does (the caller may take it again with
 * store_lease_acquire(), which fails if someone was faster).
 */
store_lease_t store_lease_renew(store_t *st, const char *source, const char *token, int64_t ttl_ms,
                                char *err, size_t errlen);
/* Deletes our lease (nothing when it is not ours). 0 or -1. */
int store_lease_release(store_t *st, const char *source, const char *token, char *err,
                        size_t errlen);
/* Longest host name a replica's record keeps (a DNS name is at most 253). */
#define STORE_HOST_MAX 253
/* Longest version string a replica's record keeps. */
#define STORE_VERSION_MAX 32

/* Who a replica is, as its beats write it (P:replica:ID); all borrowed. */
typedef struct store_replica {
    const char *host;    /* gethostname(): the pod's name under Kubernetes; cut to STORE_HOST_MAX */
    const char *version; /* cut to STORE_VERSION_MAX */
    long pid;
    int64_t started_ms; /* unix ms */
} store_replica_t;

/*
 * Registers replica id as alive for ttl_ms, forgets the expired ones, and
 * counts the live replicas (ourselves included) into *live. *was_member
 * tells whether id was registered (and not expired) before this beat: a
 * replica that beat before and finds itself gone was forgotten by Redis
 * (its data lost) or cut off past its TTL. who, when not NULL, is written
 * as P:replica:ID in the same transaction, with the same TTL.
 */
int store_member_beat(store_t *st, const char *id, const store_replica_t *who, int64_t ttl_ms,
                      size_t *live, bool *was_member, char *err, size_t errlen);

/* What a fenced write found; OK is 0. */
typedef enum store_fence {
    STORE_FENCE_OK = 0,
    STORE_FENCE_ERROR,        /* Redis failed (err says why); nothing is known to be written */
    STORE_FENCE_LEASE_OTHER,  /* another replica holds the lease */
    STORE_FENCE_LEASE_GONE,   /* nobody holds the lease */
    STORE_FENCE_BASE_MISSING, /* Redis has no snapshot of the source, the write expected one */
    STORE_FENCE_BASE_MOVED,   /* the snapshot is at another cycle than the write expected */
} store_fence_t;

/*
 * Commits one cycle's delta atomically and sets meta: cycle = *cycle + 1,
 * sessions = sessions_after; extra (may be NULL) goes into the same
 * MULTI/EXEC. Fenced by the lease and the base: it applies only while
 * P:lease:S holds token and P:meta:S says cycle *cycle (no snapshot at all
 * when *cycle is 0); otherwise nothing is written and the result says what
 * was found instead. On OK, *cycle holds the new number.
 */
store_fence_t store_commit_fenced(store_t *st, const char *source, const char *token,
                                  const store_delta_t *delta, size_t sessions_after,
                                  const store_extra_t *extra, uint64_t *cycle, char *err,
                                  size_t errlen);

/* ---- the outbox of a sink ---- */

/* One claimed outbox event; json is owned (free with store_claims_free()). */
typedef struct store_claim {
    char *id;
    char *json;
    size_t len;
    unsigned attempt; /* this attempt's number, from 1 */
} store_claim_t;

/* Frees n claims and their array; accepts NULL. */
void store_claims_free(store_claim_t *claims, size_t n);

/* Events in sink's outbox: due, waiting for a retry or claimed. */
int store_outbox_count(store_t *st, const char *sink, size_t *n, char *err, size_t errlen);

/*
 * The disabled flag of an outbox sink (an endpoint that answered 410).
 * store_sink_disabled() sets *disabled and copies the reason into why.
 * A NULL why to store_sink_set_disabled() clears the flag.
 */
int store_sink_disabled(store_t *st, const char *sink, bool *disabled, char *why, size_t whylen,
                        char *err, size_t errlen);
int store_sink_set_disabled(store_t *st, const char *sink, const char *why, char *err,
                            size_t errlen);

/* ---- dead letters ---- */

/*
 * Calls fn for every dead letter of sink (HSCAN: an entry may come twice
 * when the hash changes during the scan). fn returns 0 to go on. record is
 * valid during the call only.
 */
typedef int (*store_dlq_fn)(void *opaque, const char *id, const char *record, size_t len);
int store_dlq_scan(store_t *st, const char *sink, store_dlq_fn fn, void *opaque, char *err,
                   size_t errlen);
int store_dlq_count(store_t *st, const char *sink, size_t *n, char *err, size_t errlen);
/* Removes one dead letter. */
int store_dlq_delete(store_t *st, const char *sink, const char *id, char *err, size_t errlen);
/* Removes every dead letter of sink; *n receives how many there were. */
int store_dlq_purge(store_t *st, const char *sink, size_t *n, char *err, size_t errlen);

/* ---- asynchronous operations, on the daemon's loop ---- */

/*
 * The daemon's loop calls these instead of their blocking twins, so that no
 * Redis round trip stalls every source (issue 12). They use a second
 * connection, hiredis's asynchronous one, watched by the loop through
 * hiredis's libevent adapter; the blocking functions above keep their own
 * (the CLI, the tests, and the operations not moved yet).
 *
 * Each returns 0 when its callback will be called, exactly once, on the
 * loop's thread, from a later turn of the loop; or -1 with err when it
 * could not start (no callback then). A callback's err (NULL on success)
 * is valid during the call. A connection that is lost, or that gives no
 * reply for the store's timeout while some are awaited, is dropped and
 * every operation pending on it fails; the next one connects again (not
 * before STORE_RECONNECT_PAUSE_S after a failed connect, failing at once
 * meanwhile). Host names are resolved by a blocking getaddrinfo() in
 * hiredis 0.14's connect: configure an address when that matters.
 */

/* Lets the store use l's loop (before any *_async call). 0 or -1. */
int store_attach(store_t *st, loop_t *l, char *err, size_t errlen);
/* Drops the asynchronous connection, failing what is pending on it, and
 * lets go of the loop (before it is freed). store_free() does it too. */
void store_detach(store_t *st);

typedef void (*store_done_fn)(void *opaque, int rc, const char *err);
typedef void (*store_count_fn)(void *opaque, int rc, size_t n, const char *err);
typedef void (*store_lease_fn)(void *opaque, store_lease_t r, const char *err);
typedef void (*store_beat_fn)(void *opaque, int rc, size_t live, bool was_member, const char *err);

/* store_ping(); rc 0 when Redis answered. */
int store_ping_async(store_t *st, store_done_fn fn, void *opaque, char *err, size_t errlen);
/* store_dlq_count(), store_outbox_count(). */
int store_dlq_count_async(store_t *st, const char *sink, store_count_fn fn, void *opaque, char *err,
                          size_t errlen);
int store_outbox_count_async(store_t *st, const char *sink, store_count_fn fn, void *opaque,
                             char *err, size_t errlen);
/* store_lease_renew(). */
int store_lease_renew_async(store_t *st, const char *source, const char *token, int64_t ttl_ms,
                            store_lease_fn fn, void *opaque, char *err, size_t errlen);
/* store_lease_acquire(), in one round trip. */
int store_lease_acquire_async(store_t *st, const char *source, const char *token, int64_t ttl_ms,
                              store_lease_fn fn, void *opaque, char *err, size_t errlen);
/* store_lease_release(). */
int store_lease_release_async(store_t *st, const char *source, const char *token, store_done_fn fn,
                              void *opaque, char *err, size_t errlen);
/* store_member_beat(), its commands pipelined in one round trip. */
int store_member_beat_async(store_t *st, const char *id, const store_replica_t *who, int64_t ttl_ms,
                            store_beat_fn fn, void *opaque, char *err, size_t errlen);
/* Removes replica id from the members, and its record (at shutdown). */
int store_member_leave_async(store_t *st, const char *id, store_done_fn fn, void *opaque, char *err,
                             size_t errlen);

/* ---- asynchronous reads of the snapshot ---- */

/*
 * HSCAN page size of a load. Each page is a round trip: with Redis a
 * network hop away, 1M sessions are 100 of them instead of the 1,000 of
 * STORE_BATCH; a page stays ~0.5 MiB of reply (at most COUNT entries of
 * DIFF_ID_MAX + DIFF_RECORD_MAX bytes, ~3 MiB), held only while it is put
 * into the index.
 */
#define STORE_LOAD_SCAN_COUNT 10000

/* exists: the source has a snapshot; cycle: its number (0 without one). */
typedef void (*store_load_fn)(void *opaque, int rc, bool exists, uint64_t cycle, const char *err);

/*
 * Loads the snapshot of source into ix, which is cleared first and is the
 * store's until fn is called (the caller neither reads nor frees it
 * meanwhile): HGETALL of P:meta:S with the first HSCAN page of P:snap:S
 * in one round trip, then one page per round trip, each put into ix from
 * its reply and the next one asked for from there. On rc -1 (an error
 * reply, a value that is not ours, a lost connection) ix is cleared again:
 * nothing of a half scan stays.
 */
int store_load_async(store_t *st, const char *source, diff_index_t *ix, store_load_fn fn,
                     void *opaque, char *err, size_t errlen);

/*
 * Reads the last records of n (1..STORE_BATCH) sessions of source in one
 * HMGET of P:rec:S: each(opaque, k, ...) per session, then done(opaque,
 * rc, err); rc -1 on a Redis error or when each refused a record. ids are
 * borrowed during the call only.
 */
int store_last_get_async(store_t *st, const char *source, const char *const *ids, size_t n,
                         store_last_fn each, store_done_fn done, void *opaque, char *err,
                         size_t errlen);

/* ---- the asynchronous outbox worker's calls ---- */

/* Longest outbox claim batch: one reply holds them all. */
#define STORE_CLAIM_MAX 1000

/* claims (owned by the callee, free with store_claims_free()) is NULL when rc is -1. */
typedef void (*store_claims_fn)(void *opaque, int rc, store_claim_t *claims, size_t n,
                                const char *err);
/*
 * Claims up to max (1..STORE_CLAIM_MAX) events of sink's outbox that are
 * due (every event when any is set, due or not) in one atomic script: each
 * one's attempt count is incremented and it is made due again at now +
 * lease_ms, so that the events of a holder that dies come back after the
 * lease. The claims come oldest due first.
 */
int store_outbox_claim_async(store_t *st, const char *sink, size_t max, int64_t lease_ms, bool any,
                             store_claims_fn fn, void *opaque, char *err, size_t errlen);

/* What became of one attempt of a claimed event. */
typedef enum store_settle_kind {
    STORE_SETTLE_DONE = 0, /* delivered: removed from the outbox */
    STORE_SETTLE_RETRY,    /* due again at due_ms (unix ms), unless removed meanwhile */
    STORE_SETTLE_DEAD,     /* moved to the dead letters, record its dead-letter JSON */
} store_settle_kind_t;

typedef struct store_settle {
    store_settle_kind_t kind;
    const char *id;     /* the event id */
    int64_t due_ms;     /* RETRY */
    const char *record; /* DEAD */
} store_settle_t;

/*
 * Settles n (1..STORE_BATCH) attempts of sink's outbox in one MULTI/EXEC,
 * pipelined: one round trip whatever n. ops and their strings are borrowed
 * during the call only. rc -1 when it may not have applied: the events
 * then come back when their claims expire.
 */
int store_outbox_settle_async(store_t *st, const char *sink, const store_settle_t *ops, size_t n,
                              store_done_fn fn, void *opaque, char *err, size_t errlen);

/* why (NULL when not disabled) is valid during the call. */
typedef void (*store_flag_fn)(void *opaque, int rc, bool disabled, const char *why,
                              const char *err);
/* store_sink_disabled(), store_sink_set_disabled(). */
int store_sink_disabled_async(store_t *st, const char *sink, store_flag_fn fn, void *opaque,
                              char *err, size_t errlen);
int store_sink_set_disabled_async(store_t *st, const char *sink, const char *why, store_done_fn fn,
                                  void *opaque, char *err, size_t errlen);

/* Bytes of a poll's error kept in P:poll:S (longer ones are cut). */
#define STORE_POLL_ERROR_MAX 400

/* The end of a cycle of a source, as P:poll:S holds it; strings borrowed. */
typedef struct store_poll {
    int64_t at_ms; /* unix ms the cycle ended */
    bool ok;
    const char *error; /* why it failed (NULL or "" when ok); never a secret */
    size_t events, pages;
    const char *replica; /* the writer's id */
} store_poll_t;

/* Overwrites P:poll:S with p: one HSET of every field, so none is left from before. */
int store_poll_set_async(store_t *st, const char *source, const store_poll_t *p, store_done_fn fn,
                         void *opaque, char *err, size_t errlen);

/* ---- what `status` reads: Redis only, nothing written ---- */

/* Bytes of a lease value read: a token is 32 hex digits; another writer's
 * longer value is shown cut. */
#define STORE_HOLDER_MAX 64

/* A replica's record (P:replica:ID), as read back. */
typedef struct store_replica_info {
    bool known; /* a record was found and parsed */
    char host[STORE_HOST_MAX + 1];
    char version[STORE_VERSION_MAX + 1];
    long pid;
    int64_t started_ms;
} store_replica_info_t;

/* What Redis holds of one source. Strings are printable ASCII (other bytes quoted). */
typedef struct store_source_status {
    bool committed; /* P:meta:S exists */
    uint64_t cycle;
    int64_t committed_ms; /* unix ms; 0 when the meta hash does not say */
    size_t sessions;
    char holder[STORE_HOLDER_MAX + 1]; /* the lease's value; "" when nobody holds it */
    int64_t lease_ttl_ms;              /* -1 when nobody holds it */
    store_replica_info_t holder_info;
    bool polled; /* P:poll:S exists */
    int64_t poll_ms;
    bool poll_ok;
    char poll_error[STORE_POLL_ERROR_MAX + 1];
    size_t poll_events, poll_pages;
    char poll_replica[STORE_HOLDER_MAX + 1];
    store_replica_info_t poll_replica_info;
} store_source_status_t;

/*
 * Reads what Redis holds of sources names[0 .. n), n <= STORE_BATCH, into
 * out[0 .. n) (the caller's): two pipelined round trips, whatever n. Each
 * value is read with a bound of its own (GETRANGE for strings). 0, or -1
 * with err.
 */
int store_sources_status(store_t *st, const char *const *names, size_t n,
                         store_source_status_t *out, char *err, size_t errlen);

/*
 * Calls fn with the name of every source Redis holds a snapshot of
 * (P:meta:*), by SCAN with COUNT STORE_BATCH: a name may come twice, and
 * names a scan cannot be a source's are skipped. fn returns 0 to go on,
 * 1 to stop the scan there. 0, or -1 with err.
 */
typedef int (*store_name_fn)(void *opaque, const char *name);
int store_scan_sources(store_t *st, store_name_fn fn, void *opaque, char *err, size_t errlen);

/*
 * A fenced write's answer, on the loop's thread: f as store_commit_fenced()
 * would return it (a restore's, below), and on OK the cycle the snapshot
 * is at now.
 */
typedef void (*store_fence_fn)(void *opaque, store_fence_t f, uint64_t cycle, const char *err);

/*
 * store_commit_fenced() on the loop, from base cycle `cycle`: the same
 * transaction, fences and outcomes, driven by callbacks on a connection of
 * its own (WATCH holds per connection, and MULTI would take in every other
 * caller's commands), one commit at a time, the others waiting in order.
 * The delta and the letters are read window by window as Redis queues the
 * earlier ones (STORE_TX_WINDOWS_IN_FLIGHT at most in our memory), so
 * their readers, and what they read, must stay valid until fn, and are
 * called on the loop's thread meanwhile. A connection lost before EXEC
 * fails the commit once with nothing applied; an EXEC whose reply was lost
 * may have applied (ERROR, as the blocking call says). The next commit
 * connects again.
 */
int store_commit_fenced_async(store_t *st, const char *source, const char *token,
                              const store_delta_t *delta, size_t sessions_after,
                              const store_extra_t *extra, uint64_t cycle, store_fence_fn fn,
                              void *opaque, char *err, size_t errlen);
/*
 * Writes the whole of ix as the snapshot of source, at cycle (> 0), in one
 * transaction queued like a commit: for a holder whose Redis lost the
 * source's state while the holder still has the last committed snapshot in
 * memory. Fenced: it applies only while P:lease:S holds token and Redis has
 * no snapshot of the source (P:meta:S absent); BASE_MOVED means a snapshot
 * exists (another holder's, or ours after all): nothing is written and it
 * must be loaded instead. Leftover session fields without a meta hash are
 * replaced. ix must not change until fn.
 */
int store_restore_async(store_t *st, const char *source, const char *token, const diff_index_t *ix,
                        uint64_t cycle, store_fence_fn fn, void *opaque, char *err, size_t errlen);

/* Commands sent to Redis since store_new(), for benchmarks and metrics. */
uint64_t store_commands_sent(const store_t *st);
/*
 * Failed Redis operations since store_new(): connections lost or refused,
 * error replies (a transaction aborted by WATCH is not one), for metrics.
 */
uint64_t store_errors(const store_t *st);

#endif /* SB_STORE_H */
