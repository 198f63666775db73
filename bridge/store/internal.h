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
    /* The last records of one HSET chunk, copied: a cycle hands each one
     * out only until it reads the next. */
    char *last_buf;
    size_t last_cap;
    /* The asynchronous connection on the daemon's loop (store_attach()). */
    loop_t *loop;              /* NULL until attached */
    redisAsyncContext *actx;   /* NULL while disconnected */
    sink_timer_t *awatch;      /* armed while replies are awaited */
    unsigned ainflight;        /* replies awaited on actx */
    backoff_t areconnect;      /* after failed async connects */
    char afail[STORE_ERR_MAX]; /* why actx is being dropped, for its pending replies */
    char aconnect_error[STORE_ERR_MAX];
};

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
