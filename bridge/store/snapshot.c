/*
 * store: the snapshot of every source (load, fenced commit with its
 * outbox and dead letters, restore) and the last records (see store.h).
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* The meta hash holds three fields; a much larger one was not written by us
 * and is not worth reading. */
#define STORE_META_FIELDS_MAX 64

/* The HGETALL reply r of the meta hash: *exists and *cycle. */
int store_meta_reply(const store_t *st, const char *meta, const redisReply *r, bool *exists,
                     uint64_t *cycle, char *err, size_t errlen)
{
    bool have_cycle = false;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0 ||
        r->elements > 2 * STORE_META_FIELDS_MAX) {
        store_set_err(err, errlen, "redis %s: %s: not a snapshot meta hash", st->endpoint, meta);
        return -1;
    }
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            store_set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, meta);
            return -1;
        }
        if (f->len == 5 && memcmp(f->str, "cycle", 5) == 0) {
            if (redis_parse_u64(v->str, v->len, cycle) != 0) {
                store_set_err(err, errlen,
                              "redis %s: %s field \"cycle\": not a decimal cycle number",
                              st->endpoint, meta);
                return -1;
            }
            have_cycle = true;
        }
    }
    *exists = r->elements > 0;
    if (*exists && !have_cycle) {
        store_set_err(err, errlen, "redis %s: %s: no field \"cycle\"", st->endpoint, meta);
        return -1;
    }
    return 0;
}

/* Checks and decodes one stored field/value pair into the index (opaque). */
int store_load_pair(store_t *st, const char *snap, const redisReply *f, const redisReply *v,
                    void *opaque, char *err, size_t errlen)
{
    diff_index_t *ix = opaque;
    char status[DIFF_STATUS_MAX + 1];
    char shown[4 * STORE_ERR_FIELD_SHOWN + 4];
    diff_record_t rec;
    const char *why = NULL;

    store_quote_bytes(f->str, f->len, shown, sizeof shown);
    /* The index takes C strings: an id with a NUL was not written by us. */
    if (f->len == 0 || f->len > DIFF_ID_MAX || memchr(f->str, '\0', f->len) != NULL)
        why = "not a session id (empty, too long or holding a NUL)";
    else if (v->len > DIFF_RECORD_MAX)
        why = "value longer than a record";
    else if (diff_record_decode(v->str, v->len, &rec, status, sizeof status) != 0)
        why = "malformed record";
    else if (diff_index_put(ix, f->str, &rec) != 0)
        why = "cannot be indexed (out of memory?)";
    if (why != NULL) {
        store_set_err(err, errlen, "redis %s: %s field \"%s\": %s", st->endpoint, snap, shown, why);
        return -1;
    }
    return 0;
}

/* Change i of delta into *buf; NULL (with err) when the reader fails. */
static const diff_change_t *delta_at(const store_delta_t *d, size_t i, diff_change_t *buf,
                                     char *err, size_t errlen)
{
    if (d->get(d->opaque, i, buf) != 0) {
        store_set_err(err, errlen, "store: change %zu cannot be read", i);
        return NULL;
    }
    return buf;
}

/* Rejects a delta we could not write whole before anything is queued. */
static int check_changes(const store_delta_t *d, char *err, size_t errlen)
{
    char buf[STORE_RECORD_SLOT], status[DIFF_STATUS_MAX + 1];
    diff_record_t back;

    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);
        size_t len;
        int enc;

        if (ch == NULL)
            return -1;

        if (ch->session_id == NULL) {
            store_set_err(err, errlen, "store: change %zu has no session id", i);
            return -1;
        }
        len = strnlen(ch->session_id, DIFF_ID_MAX + 1);
        if (len == 0 || len > DIFF_ID_MAX) {
            store_set_err(err, errlen,
                          "store: change %zu: session id empty or longer than %d bytes", i,
                          DIFF_ID_MAX);
            return -1;
        }
        if (ch->last != DIFF_LAST_KEEP && ch->last != DIFF_LAST_SET && ch->last != DIFF_LAST_DROP) {
            store_set_err(err, errlen, "store: change %zu: unknown last record operation", i);
            return -1;
        }
        if (ch->removed)
            continue;
        if (ch->last == DIFF_LAST_SET && d->last == NULL && ch->last_text == NULL) {
            store_set_err(err, errlen, "store: change %zu: a last record to store but no text", i);
            return -1;
        }
        /* diff_record_encode() takes a NULL status for "". */
        if (ch->rec.status != NULL &&
            strnlen(ch->rec.status, DIFF_STATUS_MAX + 1) > DIFF_STATUS_MAX) {
            store_set_err(err, errlen, "store: change %zu: status longer than %d bytes", i,
                          DIFF_STATUS_MAX);
            return -1;
        }
        enc = diff_record_encode(&ch->rec, buf, sizeof buf);
        /* What the load would reject must not be written: it would make
         * the source unloadable until someone repairs the hash by hand. */
        if (enc < 0 || diff_record_decode(buf, (size_t)enc, &back, status, sizeof status) != 0) {
            store_set_err(err, errlen,
                          "store: change %zu: record does not encode to a loadable value", i);
            return -1;
        }
    }
    return 0;
}

/*
 * Queues HSET (upserts) or HDEL (removals) of every change of that kind, at
 * most STORE_BATCH fields per command. A delta names each session at most
 * once, so splitting it by kind keeps its meaning.
 */
static int append_chunks(store_t *st, const char *snap, const store_delta_t *d, bool removed,
                         char *err, size_t errlen)
{
    const int per_field = removed ? 1 : 2;
    int argc = 2;

    st->argv[0] = removed ? "HDEL" : "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = snap;
    st->argvlen[1] = strlen(snap);
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);

        if (ch == NULL)
            return -1;
        if (ch->removed != removed)
            continue;
        st->argv[argc] = ch->session_id;
        st->argvlen[argc] = strlen(ch->session_id);
        if (!removed) {
            char *slot = st->records + (size_t)(argc - 2) / 2 * STORE_RECORD_SLOT;
            /* check_changes() encoded it once already: cannot fail here. */
            int len = diff_record_encode(&ch->rec, slot, STORE_RECORD_SLOT);

            st->argv[argc + 1] = slot;
            st->argvlen[argc + 1] = (size_t)len;
        }
        argc += per_field;
        if ((argc - 2) / per_field == STORE_BATCH) {
            if (store_append_command(st, argc, st->argv, st->argvlen, st->argv[0], err, errlen) !=
                0)
                return -1;
            argc = 2;
        }
    }
    if (argc > 2)
        return store_append_command(st, argc, st->argv, st->argvlen, st->argv[0], err, errlen);
    return 0;
}

/* The text of change i's last record; -1 with err when it cannot be read. */
static int last_at(const store_delta_t *d, size_t i, const diff_change_t *ch, const char **text,
                   size_t *len, char *err, size_t errlen)
{
    if (d->last == NULL) {
        *text = ch->last_text;
        *len = ch->last_len;
    } else if (d->last(d->opaque, i, text, len) != 0) {
        *text = NULL;
    }
    if (*text == NULL || *len == 0) {
        store_set_err(err, errlen, "store: the last record of change %zu cannot be read", i);
        return -1;
    }
    return 0;
}

/*
 * Queues HSET P:rec:S of the changes that set a last record, in chunks of
 * at most STORE_BATCH fields and about STORE_FLUSH_BYTES of text (copied
 * into st->last_buf, which a chunk is flushed before it grows), then HDEL
 * P:rec:S of those that drop one (removals included).
 */
static int append_last(store_t *st, const char *rec, const store_delta_t *d, char *err,
                       size_t errlen)
{
    size_t used = 0;
    int argc = 2;

    st->argv[0] = "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = rec;
    st->argvlen[1] = strlen(rec);
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);
        const char *text;
        size_t len;

        if (ch == NULL)
            return -1;
        if (ch->removed || ch->last != DIFF_LAST_SET)
            continue;
        if (last_at(d, i, ch, &text, &len, err, errlen) != 0)
            return -1;
        if (argc > 2 && (used + len > st->last_cap || (argc - 2) / 2 == STORE_BATCH)) {
            if (store_append_command(st, argc, st->argv, st->argvlen, "HSET", err, errlen) != 0)
                return -1;
            argc = 2;
            used = 0;
        }
        if (len > st->last_cap) {
            /* nothing points into the buffer now: the chunk was flushed */
            size_t cap = len > STORE_FLUSH_BYTES ? len : STORE_FLUSH_BYTES;
            char *v = realloc(st->last_buf, cap);

            if (v == NULL) {
                store_set_err(err, errlen, "store: out of memory");
                return -1;
            }
            st->last_buf = v;
            st->last_cap = cap;
        }
        memcpy(st->last_buf + used, text, len);
        st->argv[argc] = ch->session_id;
        st->argvlen[argc] = strlen(ch->session_id);
        st->argv[argc + 1] = st->last_buf + used;
        st->argvlen[argc + 1] = len;
        argc += 2;
        used += len;
    }
    if (argc > 2 && store_append_command(st, argc, st->argv, st->argvlen, "HSET", err, errlen) != 0)
        return -1;

    argc = 2;
    st->argv[0] = "HDEL";
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);

        if (ch == NULL)
            return -1;
        if (!ch->removed && ch->last != DIFF_LAST_DROP)
            continue;
        st->argv[argc] = ch->session_id;
        st->argvlen[argc++] = strlen(ch->session_id);
        if (argc - 2 == STORE_BATCH) {
            if (store_append_command(st, argc, st->argv, st->argvlen, "HDEL", err, errlen) != 0)
                return -1;
            argc = 2;
        }
    }
    if (argc > 2)
        return store_append_command(st, argc, st->argv, st->argvlen, "HDEL", err, errlen);
    return 0;
}

/* Rejects letters (window l of n, the first being letter `first`) that
 * would not make valid keys or fields. */
static int check_letters(const store_t *st, const store_letter_t *l, size_t n, size_t first,
                         char *err, size_t errlen)
{
    char key[STORE_KEY_MAX];

    for (size_t i = 0; i < n; i++) {
        if (store_make_key(st, "ob", l[i].sink, "", key, err, errlen) != 0)
            return -1;
        if (l[i].id == NULL || l[i].id[0] == '\0' || l[i].json == NULL) {
            store_set_err(err, errlen, "store: letter %zu has no id or no body", first + i);
            return -1;
        }
    }
    return 0;
}

/*
 * Queues one command per run of consecutive letters for the same sink (at
 * most STORE_BATCH each): "<cmd> <kind:sink:suffix> [value] id ..." where the
 * per-letter argument pair is (id, json) for HSET and (score, id) for ZADD.
 */
static int append_letters(store_t *st, const char *cmd, const char *kind, const char *suffix,
                          const store_letter_t *l, size_t n, const char *score, char *err,
                          size_t errlen)
{
    char key[STORE_KEY_MAX];
    size_t i = 0;

    while (i < n) {
        int argc = 2;
        const char *sink = l[i].sink;

        if (store_make_key(st, kind, sink, suffix, key, err, errlen) != 0)
            return -1;
        st->argv[0] = cmd;
        st->argvlen[0] = strlen(cmd);
        st->argv[1] = key;
        st->argvlen[1] = strlen(key);
        for (; i < n && strcmp(l[i].sink, sink) == 0 && argc < 2 + 2 * STORE_BATCH; i++) {
            if (score != NULL) {
                st->argv[argc] = score;
                st->argvlen[argc++] = strlen(score);
                st->argv[argc] = l[i].id;
                st->argvlen[argc++] = strlen(l[i].id);
            } else {
                st->argv[argc] = l[i].id;
                st->argvlen[argc++] = strlen(l[i].id);
                st->argv[argc] = l[i].json;
                st->argvlen[argc++] = l[i].len;
            }
        }
        if (store_append_command(st, argc, st->argv, st->argvlen, cmd, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/*
 * Queues the letters of ls window by window: a window is read into
 * st->letters, checked and queued (hiredis formats each command into its
 * buffer, written out past STORE_FLUSH_BYTES) before the next one is read,
 * so that only one window of texts exists at a time. Outbox letters (now
 * set: their due time) go to P:ob:K and P:ob:K:due, dead letters to P:dlq:K.
 */
static int append_letter_windows(store_t *st, const store_letters_t *ls, const char *now, char *err,
                                 size_t errlen)
{
    for (size_t from = 0; from < ls->n;) {
        size_t max = ls->n - from < STORE_BATCH ? ls->n - from : STORE_BATCH, got = 0;

        if (ls->get == NULL || ls->get(ls->opaque, from, st->letters, max, &got) != 0 || got == 0 ||
            got > max) {
            store_set_err(err, errlen, "store: letter %zu cannot be read", from);
            return -1;
        }
        if (check_letters(st, st->letters, got, from, err, errlen) != 0)
            return -1;
        if (now == NULL
                ? append_letters(st, "HSET", "dlq", "", st->letters, got, NULL, err, errlen) != 0
                : append_letters(st, "HSET", "ob", "", st->letters, got, NULL, err, errlen) != 0 ||
                      append_letters(st, "ZADD", "ob", ":due", st->letters, got, now, err,
                                     errlen) != 0)
            return -1;
        from += got;
    }
    return 0;
}

/* Queues the outbox events (due at once) and the dead letters of extra. */
static int append_extra(store_t *st, const store_extra_t *x, char *err, size_t errlen)
{
    char now[STORE_U64_DIGITS + 1];

    if (x == NULL)
        return 0;
    snprintf(now, sizeof now, "%" PRIu64, (uint64_t)clock_unix_ms());
    if (append_letter_windows(st, &x->outbox, now, err, errlen) != 0)
        return -1;
    return append_letter_windows(st, &x->dead, NULL, err, errlen);
}

static int letters_array_get(void *opaque, size_t from, store_letter_t *out, size_t max,
                             size_t *got)
{
    const store_letter_t *l = opaque;

    /* max <= n - from; the window stays valid for the whole commit: the
     * array is the caller's */
    memcpy(out, l + from, max * sizeof *out);
    *got = max;
    return 0;
}

store_letters_t store_letters_of(const store_letter_t *letters, size_t n)
{
    /* opaque is only read (letters_array_get) */
    return (store_letters_t){
        .n = letters != NULL ? n : 0, .get = letters_array_get, .opaque = (void *)letters};
}

/* Runs a command whose reply must be a status (+OK). */
static int expect_ok(store_t *st, int argc, const char **argv, const size_t *argvlen,
                     const char *what, char *err, size_t errlen)
{
    redisReply *r = store_run_command(st, argc, argv, argvlen, what, err, errlen);
    int rc = 0;

    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_STATUS) {
        store_set_err(err, errlen, "redis %s: %s: unexpected reply type %d", st->endpoint, what,
                      r->type);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/*
 * WATCHes the lease and the meta hash of source and checks that the lease
 * holds token and that the snapshot is at cycle base (0: no snapshot): the
 * EXEC that follows then applies only if neither changed in between.
 * Anything but OK leaves nothing WATCHed.
 */
static store_fence_t watch_fence(store_t *st, const char *source, const char *token, uint64_t base,
                                 char *err, size_t errlen)
{
    char lease[STORE_KEY_MAX], snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];
    const char *watch[3] = {"WATCH", lease, meta}, *get[2] = {"GET", lease},
               *hget[3] = {"HGET", meta, "cycle"}, *unwatch[1] = {"UNWATCH"};
    size_t watch_len[3] = {5, 0, 0}, get_len[2] = {3, 0}, hget_len[3] = {4, 0, 5},
           unwatch_len[1] = {7};
    redisReply *owner = NULL, *at = NULL;
    store_fence_t rc = STORE_FENCE_ERROR;
    uint64_t stored = 0;

    if (store_make_key(st, "lease", source, "", lease, err, errlen) != 0 ||
        store_make_keys(st, source, snap, meta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    watch_len[1] = get_len[1] = strlen(lease);
    watch_len[2] = hget_len[1] = strlen(meta);
    if (expect_ok(st, 3, watch, watch_len, "WATCH", err, errlen) != 0)
        return STORE_FENCE_ERROR;
    /* Both questions in one round trip. */
    if (store_append_command(st, 2, get, get_len, "GET lease", err, errlen) != 0 ||
        store_append_command(st, 3, hget, hget_len, "HGET meta", err, errlen) != 0 ||
        (owner = store_read_reply(st, "GET lease", err, errlen)) == NULL ||
        (at = store_read_reply(st, "HGET meta", err, errlen)) == NULL)
        goto out; /* the connection was dropped, and the WATCH with it */
    if (owner->type == REDIS_REPLY_ERROR || at->type == REDIS_REPLY_ERROR) {
        const redisReply *e = owner->type == REDIS_REPLY_ERROR ? owner : at;
        store_set_err(err, errlen, "redis %s: fence of %s: %.*s", st->endpoint, source, (int)e->len,
                      e->str);
        st->errors++;
    } else if (owner->type == REDIS_REPLY_NIL) {
        store_set_err(err, errlen, "lease of %s: nobody holds it (expired, or lost by Redis)",
                      source);
        rc = STORE_FENCE_LEASE_GONE;
    } else if (owner->type != REDIS_REPLY_STRING || owner->len != strlen(token) ||
               memcmp(owner->str, token, owner->len) != 0) {
        store_set_err(err, errlen, "lease of %s: another replica holds it", source);
        rc = STORE_FENCE_LEASE_OTHER;
    } else if (at->type == REDIS_REPLY_STRING && redis_parse_u64(at->str, at->len, &stored) != 0) {
        store_set_err(err, errlen, "redis %s: %s field \"cycle\": not a decimal cycle number",
                      st->endpoint, meta);
    } else if (stored == base) {
        rc = STORE_FENCE_OK;
    } else if (stored == 0) {
        store_set_err(err, errlen, "snapshot of %s: not in Redis (expected cycle %" PRIu64 ")",
                      source, base);
        rc = STORE_FENCE_BASE_MISSING;
    } else {
        store_set_err(err, errlen,
                      "snapshot of %s: at cycle %" PRIu64 " in Redis, expected %s%" PRIu64 "",
                      source, stored, base ? "cycle " : "none: ", base);
        rc = STORE_FENCE_BASE_MOVED;
    }
out:
    if (owner != NULL)
        freeReplyObject(owner);
    if (at != NULL)
        freeReplyObject(at);
    if (rc != STORE_FENCE_OK && st->ctx != NULL)
        (void)expect_ok(st, 1, unwatch, unwatch_len, "UNWATCH", NULL, 0);
    return rc;
}

/*
 * After an EXEC that a WATCHed key aborted: which of the two changed (the
 * fence read again, then released), ERROR when neither still differs.
 */
static store_fence_t aborted_why(store_t *st, const char *source, const char *token, uint64_t base,
                                 char *err, size_t errlen)
{
    const char *unwatch[1] = {"UNWATCH"};
    size_t unwatch_len[1] = {7};
    store_fence_t rc = watch_fence(st, source, token, base, err, errlen);

    if (rc == STORE_FENCE_OK) {
        (void)expect_ok(st, 1, unwatch, unwatch_len, "UNWATCH", NULL, 0);
        store_set_err(err, errlen,
                      "redis %s: commit of %s: transaction aborted by a concurrent write",
                      st->endpoint, source);
        return STORE_FENCE_ERROR;
    }
    return rc;
}

/* Queues HSET P:meta:S cycle, committed_at and sessions; the buffers hold the numbers. */
typedef struct meta_cmd {
    char cycle[STORE_U64_DIGITS + 1], at[STORE_U64_DIGITS + 1], count[STORE_U64_DIGITS + 1];
} meta_cmd_t;

static int append_meta(store_t *st, const char *meta, uint64_t cycle, size_t sessions,
                       meta_cmd_t *m, char *err, size_t errlen)
{
    const char *argv[8] = {"HSET",         meta,  "cycle",    m->cycle,
                           "committed_at", m->at, "sessions", m->count};
    size_t len[8] = {4, strlen(meta), 5, 0, 12, 0, 8, 0};

    len[3] = (size_t)snprintf(m->cycle, sizeof m->cycle, "%" PRIu64, cycle);
    len[5] = (size_t)snprintf(m->at, sizeof m->at, "%" PRIu64, (uint64_t)clock_unix_ms());
    len[7] = (size_t)snprintf(m->count, sizeof m->count, "%zu", sessions);
    return store_append_command(st, 8, argv, len, "HSET", err, errlen);
}

/*
 * After a transaction failed while it was being queued (a change that
 * could not be read, a command that did not fit): MULTI and part of it may
 * sit in the output buffer or be sent already (past STORE_FLUSH_BYTES),
 * and the next command would join it. Only a new connection is in sync.
 * A failed store_append_command() has dropped the connection already.
 */
static void drop_half_transaction(store_t *st)
{
    if (st->ctx != NULL) {
        st->errors++;
        store_disconnect(st);
    }
}

static store_fence_t commit(store_t *st, const char *source, const char *token,
                            const store_delta_t *delta, size_t sessions_after,
                            const store_extra_t *extra, uint64_t *cycle, char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX], rec[STORE_KEY_MAX];
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t multi_len[1] = {5}, exec_len[1] = {4};
    meta_cmd_t m;
    uint64_t before, bytes_before;
    store_fence_t f;
    int rc;

    if (store_make_keys(st, source, snap, meta, err, errlen) != 0 ||
        store_make_key(st, "rec", source, "", rec, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (*cycle == UINT64_MAX) {
        store_set_err(err, errlen, "store: cycle number exhausted");
        return STORE_FENCE_ERROR;
    }
    if (check_changes(delta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (store_ensure_connected(st, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (token != NULL &&
        (f = watch_fence(st, source, token, *cycle, err, errlen)) != STORE_FENCE_OK)
        return f;

    /* Everything is queued in hiredis's buffer (written out past
     * STORE_FLUSH_BYTES, the rest by the first read): one round trip for
     * the whole transaction. The letters are read and checked as they are
     * queued, window by window: one that fails drops the half transaction. */
    before = st->commands;
    bytes_before = st->bytes_queued;
    if (store_append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0 ||
        append_chunks(st, snap, delta, false, err, errlen) != 0 ||
        append_chunks(st, snap, delta, true, err, errlen) != 0 ||
        append_last(st, rec, delta, err, errlen) != 0 ||
        append_extra(st, extra, err, errlen) != 0 ||
        append_meta(st, meta, *cycle + 1, sessions_after, &m, err, errlen) != 0 ||
        store_append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0) {
        drop_half_transaction(st);
        return STORE_FENCE_ERROR;
    }
    rc = store_read_transaction(st, (size_t)(st->commands - before),
                                st->bytes_queued - bytes_before, snap, err, errlen);
    if (rc == -2 && token != NULL)
        return aborted_why(st, source, token, *cycle, err, errlen);
    if (rc != 0)
        return STORE_FENCE_ERROR;
    *cycle += 1;
    return STORE_FENCE_OK;
}

static int array_get(void *opaque, size_t i, diff_change_t *out)
{
    *out = ((const diff_change_t *)opaque)[i];
    return 0;
}

store_delta_t store_delta_of(const diff_change_t *changes, size_t n)
{
    /* opaque is only read (array_get); the changes carry their texts */
    return (store_delta_t){
        .n = changes != NULL ? n : 0, .get = array_get, .opaque = (void *)changes};
}

/* Hands the HMGET reply r of n last records to fn; -1 with err. */
int store_last_reply(const store_t *st, const char *what, const redisReply *r, size_t n,
                     store_last_fn fn, void *opaque, char *err, size_t errlen)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        store_set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, what);
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        const redisReply *v = r->element[k];
        bool have = v->type == REDIS_REPLY_STRING && v->len > 0 && v->len <= STORE_LAST_MAX;

        if (!have && v->type != REDIS_REPLY_NIL && v->type != REDIS_REPLY_STRING) {
            store_set_err(err, errlen, "redis %s: %s: unexpected reply", st->endpoint, what);
            return -1;
        }
        if (fn(opaque, k, have ? v->str : NULL, have ? v->len : 0) != 0) {
            store_set_err(err, errlen, "store: %s: the caller refused a record", what);
            return -1;
        }
    }
    return 0;
}

store_fence_t store_commit_fenced(store_t *st, const char *source, const char *token,
                                  const store_delta_t *delta, size_t sessions_after,
                                  const store_extra_t *extra, uint64_t *cycle, char *err,
                                  size_t errlen)
{
    if (token == NULL) {
        store_set_err(err, errlen, "store: a fenced commit needs a lease token");
        return STORE_FENCE_ERROR;
    }
    return commit(st, source, token, delta, sessions_after, extra, cycle, err, errlen);
}

/* Queues the sessions of an index as HSETs of at most STORE_BATCH fields. */
typedef struct restore_chunk {
    store_t *st;
    const char *snap;
    int argc;
    char *err;
    size_t errlen;
} restore_chunk_t;

static int restore_flush(restore_chunk_t *c)
{
    int rc = 0;

    if (c->argc > 2)
        rc = store_append_command(c->st, c->argc, c->st->argv, c->st->argvlen, "HSET", c->err,
                                  c->errlen);
    c->argc = 2;
    return rc;
}

static int restore_session(void *opaque, const char *session_id, const diff_record_t *rec)
{
    restore_chunk_t *c = opaque;
    store_t *st = c->st;
    /* The slots are reused per chunk: hiredis formats each command as it is appended. */
    char *slot = st->records + (size_t)(c->argc - 2) / 2 * STORE_RECORD_SLOT;
    int len = diff_record_encode(rec, slot, STORE_RECORD_SLOT);

    if (len < 0) {
        store_set_err(c->err, c->errlen, "store: a session of the index does not encode");
        return -1;
    }
    st->argv[0] = "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = c->snap;
    st->argvlen[1] = strlen(c->snap);
    st->argv[c->argc] = session_id;
    st->argvlen[c->argc] = strlen(session_id);
    st->argv[c->argc + 1] = slot;
    st->argvlen[c->argc + 1] = (size_t)len;
    c->argc += 2;
    if ((c->argc - 2) / 2 == STORE_BATCH)
        return restore_flush(c);
    return 0;
}

store_fence_t store_restore(store_t *st, const char *source, const char *token,
                            const diff_index_t *ix, uint64_t cycle, char *err, size_t errlen)
{
    char snap[STORE_KEY_MAX], meta[STORE_KEY_MAX];
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"}, *del[2] = {"DEL", snap};
    size_t multi_len[1] = {5}, exec_len[1] = {4}, del_len[2] = {3, 0};
    restore_chunk_t c = {.st = st, .snap = snap, .argc = 2, .err = err, .errlen = errlen};
    meta_cmd_t m;
    uint64_t before, bytes_before;
    store_fence_t f;
    int rc;

    if (store_make_keys(st, source, snap, meta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if (token == NULL || ix == NULL || cycle == 0) {
        store_set_err(err, errlen, "store: a restore needs a lease token, an index and a cycle");
        return STORE_FENCE_ERROR;
    }
    del_len[1] = strlen(snap);
    if (store_ensure_connected(st, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    /* Base 0: it writes only where Redis holds no snapshot at all. */
    if ((f = watch_fence(st, source, token, 0, err, errlen)) != STORE_FENCE_OK)
        return f;
    before = st->commands;
    bytes_before = st->bytes_queued;
    if (store_append_command(st, 1, multi, multi_len, "MULTI", err, errlen) != 0 ||
        store_append_command(st, 2, del, del_len, "DEL", err, errlen) != 0 ||
        diff_index_foreach(ix, restore_session, &c) != 0 || restore_flush(&c) != 0 ||
        append_meta(st, meta, cycle, diff_index_size(ix), &m, err, errlen) != 0 ||
        store_append_command(st, 1, exec, exec_len, "EXEC", err, errlen) != 0) {
        drop_half_transaction(st);
        return STORE_FENCE_ERROR;
    }
    rc = store_read_transaction(st, (size_t)(st->commands - before),
                                st->bytes_queued - bytes_before, snap, err, errlen);
    if (rc == -2)
        return aborted_why(st, source, token, 0, err, errlen);
    return rc == 0 ? STORE_FENCE_OK : STORE_FENCE_ERROR;
}
