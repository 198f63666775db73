/*
 * store's internals, shared by the files of bridge/store/ and by nothing
 * else: the store itself, the limits several of its files need, and the
 * helpers of the blocking connection (conn.c). The public API is store.h.
 */
#ifndef SB_STORE_INTERNAL_H
#define SB_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "redis_conn.h"
#include "store.h"

/* Source names are [a-z0-9_-]{1,64} (CONTRACT §3). */
#define STORE_SOURCE_MAX 64
/* prefix ":snap:" source, or prefix ":ob:" sink ":due", and the NUL. */
#define STORE_KEY_MAX (STORE_PREFIX_MAX + 6 + STORE_SOURCE_MAX + 4 + 1)

/* A cycle, a cursor or a unix time in ms: at most 20 decimal digits. */
#define STORE_U64_DIGITS REDIS_U64_DIGITS
/* Bytes of a stored field quoted in an error (before escaping). */
#define STORE_ERR_FIELD_SHOWN 48

/*
 * Queued commands are written out once hiredis's buffer holds this much,
 * instead of all at the first read: a transaction of a million changes
 * formats to ~85 MiB, which the buffer would otherwise hold at once (and
 * grow to by doubling). Redis queues what arrives until EXEC either way.
 */
#define STORE_FLUSH_BYTES (1024 * 1024)

/* One encoded record and its NUL. */
#define STORE_RECORD_SLOT (DIFF_RECORD_MAX + 1)

/* Room for the reason of a failed connect. */
#define STORE_ERR_MAX 256

/*
 * One asynchronous connection of the store on the loop (aconn.c): async.c
 * has one for its operations, acommit.c one for the commits.
 */
typedef struct store_aconn {
    store_t *st;
    redisAsyncContext *ctx;            /* NULL while disconnected */
    backoff_t reconnect;               /* after failed connects */
    char fail[STORE_ERR_MAX];          /* why ctx is being dropped, for its pending replies */
    char connect_error[STORE_ERR_MAX]; /* repeated while the pause after it runs */
} store_aconn_t;

void store_aconn_init(store_aconn_t *c, store_t *st, const backoff_policy_t *pause);
/*
 * Makes c->ctx a connection: the current one (0), or a new one whose
 * non-blocking connect is under way (1: the caller queues its handshake,
 * store_aconn_setup(), ahead of its commands). -1 with err when it cannot
 * (not attached, a failed connect's pause, no memory).
 */
int store_aconn_open(store_aconn_t *c, char *err, size_t errlen);
/* Drops c->ctx: hiredis calls every pending callback with NULL (later
 * when called from one of them). why is what they report. */
void store_aconn_drop(store_aconn_t *c, const char *why);
/* The handshake was refused (AUTH, SELECT): drops the connection, and the
 * next connect waits for the pause, why repeated meanwhile. */
void store_aconn_refused(store_aconn_t *c, const char *why);
/* Queues AUTH and SELECT as the URL asks through send (0 or -1 each). */
typedef int (*store_aconn_send_fn)(void *opaque, int argc, const char **argv, const size_t *lens);
int store_aconn_setup(store_aconn_t *c, store_aconn_send_fn send, void *opaque);

struct store {
    redis_target_t target;
    const char *endpoint; /* target.endpoint: host:port as errors show it */
    int timeout_ms;
    char prefix[STORE_PREFIX_MAX + 1];
    redisContext *ctx;     /* NULL while disconnected */
    uint64_t commands;     /* ours; the AUTH and SELECT of each connect are not counted */
    uint64_t bytes_queued; /* of those commands, as formatted for the wire */
    uint64_t errors;       /* connections lost or refused, error replies */
    backoff_t reconnect;   /* after failed connects; monotonic s */
    char connect_error[STORE_ERR_MAX]; /* its reason, repeated during the pause */
    /* Scratch for one HSET/HDEL chunk, allocated once so that a commit does
     * not allocate per change. */
    const char **argv;
    size_t *argvlen;
    char *records;           /* STORE_BATCH slots of STORE_RECORD_SLOT bytes */
    store_letter_t *letters; /* one window of letters (STORE_BATCH) */
    /* The asynchronous connection on the daemon's loop (store_attach()). */
    loop_t *loop; /* NULL until attached */
    store_aconn_t a;
    sink_timer_t *awatch; /* armed while replies are awaited */
    unsigned ainflight;   /* replies awaited on a */
    /* The commit connection (acommit.c): a second asynchronous one, since
     * WATCH holds per connection and MULTI would take in the commands of
     * every other caller. One commit at a time runs on it. */
    store_aconn_t c;
    sink_timer_t *cwatch;          /* armed while replies are awaited */
    sink_timer_t *ckick;           /* finishes commits and starts the next, from the loop */
    unsigned cinflight;            /* replies awaited on c */
    struct acommit *chead, *ctail; /* the commit running first, then those waiting */
};

/*
 * The slowest rate at which Redis is expected to apply a queued transaction
 * and log it (AOF with appendfsync always writes the whole EXEC before it
 * answers): the EXEC reply of a large transaction is awaited for the
 * command timeout plus its bytes at this rate. A first emit cycle of a
 * million sessions with an outbox sink queues ~1.7 GiB, which Redis took
 * ~45 s to apply on the 2-core benchmark machine (38 MiB/s); at the plain
 * 5 s timeout the commit was reported failed although it applied. Slower
 * than this, Redis is in trouble and the commit counts as failed (it may
 * still apply: the caller reloads before its next cycle).
 */
#define STORE_EXEC_MIN_BYTES_PER_S (8u * 1024u * 1024u)

/* MULTI + EXEC around the commands of a transaction. */
#define STORE_TX_WRAP 2

/*
 * A fenced commit or restore transaction (tx.c), built window by window:
 * each store_tx_window() call queues the next few commands through send
 * (at most one HSET/HDEL chunk of STORE_BATCH fields, or one window of
 * letters), so that whoever drives it holds one window at a time: the
 * blocking commit queues them back to back, the asynchronous one
 * (acommit.c) waits for Redis to have queued earlier windows first.
 */
typedef enum store_tx_stage {
    TX_MULTI = 0,
    TX_SET,      /* HSET P:snap:S of the upserts */
    TX_DEL,      /* HDEL P:snap:S of the removals */
    TX_LAST_SET, /* HSET P:rec:S */
    TX_LAST_DEL, /* HDEL P:rec:S */
    TX_OUTBOX,   /* HSET P:ob:K and ZADD P:ob:K:due */
    TX_DEAD,     /* HSET P:dlq:K */
    TX_CLEAR,    /* restore: DEL P:snap:S */
    TX_RESTORE,  /* restore: HSET P:snap:S of the index */
    TX_META,
    TX_EXEC,
    TX_DONE
} store_tx_stage_t;

/* Queues one command; 0, or -1 with err (the transaction is then abandoned). */
typedef int (*store_tx_send_fn)(void *opaque, int argc, const char **argv, const size_t *argvlen,
                                const char *what, char *err, size_t errlen);

typedef struct store_tx {
    store_t *st;
    char source[STORE_SOURCE_MAX + 1];
    char token[STORE_TOKEN_LEN];
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX], rec[STORE_KEY_MAX], lease[STORE_KEY_MAX];
    uint64_t base;   /* the cycle the fence expects (0: no snapshot) */
    uint64_t cycle;  /* the cycle meta says after it */
    size_t sessions; /* the count meta says after it */
    store_delta_t delta;
    store_extra_t extra;
    const diff_index_t *ix; /* restore: the sessions written */
    store_tx_stage_t stage;
    size_t pos; /* where the stage goes on: a change, a letter, an index position */
    char now[STORE_U64_DIGITS + 1]; /* the due time of outbox letters */
    /* The last record read but not queued yet: it did not fit in the
     * chunk before it (a delta hands each one out once). */
    bool carry;
    size_t carry_len;
    char *last_buf; /* one chunk of last records, copied (owned) */
    size_t last_cap;
    store_tx_send_fn send;
    void *send_opaque;
    size_t commands; /* sent, MULTI and EXEC included */
    uint64_t bytes;  /* of those, as formatted for the wire (the sender counts) */
} store_tx_t;

/* A commit of delta (restore: of ix when delta is NULL) on the source's
 * keys; 0, or -1 with err (a name that makes no key). */
int store_tx_init(store_tx_t *tx, store_t *st, const char *source, const char *token, uint64_t base,
                  uint64_t cycle, size_t sessions, const store_delta_t *delta,
                  const store_extra_t *extra, const diff_index_t *ix, char *err, size_t errlen);
/* Queues the next window; 0 (stage TX_DONE once EXEC went), or -1 with err. */
int store_tx_window(store_tx_t *tx, char *err, size_t errlen);
void store_tx_free(store_tx_t *tx);
/* Rejects a delta the transaction could not write whole. */
int store_tx_check_delta(const store_delta_t *d, char *err, size_t errlen);

/* What the lease and the meta hash hold, as the fence reads them (GET, HGET). */
typedef struct store_fence_read {
    int owner_type, at_type; /* REDIS_REPLY_* */
    size_t owner_len, at_len;
    char owner[STORE_TOKEN_LEN + 1]; /* cut: a longer one is not ours */
    char at[STORE_U64_DIGITS + 2];   /* cut: a longer one is not a cycle */
    char error[STORE_ERR_MAX];       /* an error reply to either */
} store_fence_read_t;

void store_fence_read_take(store_fence_read_t *fr, bool owner, const redisReply *r);
/* The fence's verdict on what it read; err says why when not OK. */
store_fence_t store_fence_judge(const store_t *st, const store_tx_t *tx,
                                const store_fence_read_t *fr, char *err, size_t errlen);
/* The aborted EXEC's verdict: which key moved, ERROR when neither differs now. */
store_fence_t store_fence_aborted(const store_t *st, const store_tx_t *tx,
                                  const store_fence_read_t *fr, char *err, size_t errlen);
/* Checks the EXEC reply of a transaction of `sent` commands: 0, -1 with err, -2 aborted. */
int store_tx_exec_reply(const store_t *st, const redisReply *r, size_t sent, const char *what,
                        char *err, size_t errlen);
/* store_attach()'s and store_detach()'s part for the commit connection (acommit.c). */
int store_acommit_attach(store_t *st, loop_t *loop);
void store_acommit_detach(store_t *st);

/* Called per field/value pair of a scanned hash; 0 to go on. */
typedef int (*store_pair_fn)(store_t *st, const char *key, const redisReply *f, const redisReply *v,
                             void *opaque, char *err, size_t errlen);

/* err (may be NULL) receives the formatted message, cut to errlen. */
void store_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void store_quote_bytes(const char *s, size_t len, char *out, size_t outlen);
void store_printable(const char *s, size_t len, char *out, size_t outlen);
int store_make_key(const store_t *st, const char *kind, const char *name, const char *suffix,
                   char key[STORE_KEY_MAX], char *err, size_t errlen);
int store_make_keys(const store_t *st, const char *source, char snap[STORE_KEY_MAX],
                    char meta[STORE_KEY_MAX], char *err, size_t errlen);
void store_disconnect(store_t *st);
int store_ensure_connected(store_t *st, char *err, size_t errlen);
int store_append_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
                         const char *what, char *err, size_t errlen);
redisReply *store_read_reply(store_t *st, const char *what, char *err, size_t errlen);
redisReply *store_run_command(store_t *st, int argc, const char **argv, const size_t *argvlen,
                              const char *what, char *err, size_t errlen);
int store_read_transaction(store_t *st, size_t sent, uint64_t tx_bytes, const char *snap, char *err,
                           size_t errlen);
int store_run_transaction(store_t *st, const char *const *const *cmds, size_t ncmds,
                          const char *what, char *err, size_t errlen);
int store_run_count(store_t *st, const char *cmd, const char *key, size_t *n, char *err,
                    size_t errlen);
int store_scan_hash(store_t *st, const char *key, store_pair_fn fn, void *opaque, char *err,
                    size_t errlen);
int store_scan_page(store_t *st, const char *key, const redisReply *r, store_pair_fn fn,
                    void *opaque, char cursor[STORE_U64_DIGITS + 1], uint64_t *next, char *err,
                    size_t errlen);

/* The snapshot's replies (snapshot.c), read by the asynchronous load. */
int store_meta_reply(const store_t *st, const char *meta, const redisReply *r, bool *exists,
                     uint64_t *cycle, char *err, size_t errlen);
int store_load_pair(store_t *st, const char *snap, const redisReply *f, const redisReply *v,
                    void *opaque, char *err, size_t errlen);
int store_last_reply(const store_t *st, const char *what, const redisReply *r, size_t n,
                     store_last_fn fn, void *opaque, char *err, size_t errlen);

/* The outbox's claim script and its reply (outbox.c). */
extern const char store_claim_script[];
int store_read_claims(const store_t *st, const redisReply *r, store_claim_t **out, size_t *n,
                      char *err, size_t errlen);

/*
 * Bytes of a replica's record (P:replica:ID) and its NUL: its JSON with the
 * longest host name and version, every byte escaped, fits; a longer value
 * read back was not written by us.
 */
#define STORE_REPLICA_RECORD_MAX (6 * (STORE_HOST_MAX + STORE_VERSION_MAX) + 128)
int store_replica_record(const store_replica_t *who, char *out);

/* The lease scripts (lease.c), sent by the blocking and the asynchronous calls alike. */
extern const char store_renew_script[];
extern const char store_release_script[];

#endif
