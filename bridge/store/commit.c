/*
 * store: the fenced commit of a cycle's delta with its outbox events and
 * dead letters, and the restore of a snapshot from memory (see store.h).
 *
 * Both are one transaction, built window by window (store_tx_t): a window
 * is at most one HSET/HDEL chunk of STORE_BATCH fields or one window of
 * letters, read from the caller when it is queued and formatted by hiredis
 * at once, so that only one window of texts exists at a time. This file
 * builds them and drives them on the blocking connection (the CLI and the
 * tests); acommit.c drives the same transaction on the daemon's loop.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

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

/* Rejects change i when the transaction could not write it whole. */
static int check_change(const diff_change_t *ch, const store_delta_t *d, size_t i, char *err,
                        size_t errlen)
{
    char buf[STORE_RECORD_SLOT], status[DIFF_STATUS_MAX + 1];
    diff_record_t back;
    size_t len;
    int enc;

    if (ch->session_id == NULL) {
        store_set_err(err, errlen, "store: change %zu has no session id", i);
        return -1;
    }
    len = strnlen(ch->session_id, DIFF_ID_MAX + 1);
    if (len == 0 || len > DIFF_ID_MAX) {
        store_set_err(err, errlen, "store: change %zu: session id empty or longer than %d bytes", i,
                      DIFF_ID_MAX);
        return -1;
    }
    if (ch->last != DIFF_LAST_KEEP && ch->last != DIFF_LAST_SET && ch->last != DIFF_LAST_DROP) {
        store_set_err(err, errlen, "store: change %zu: unknown last record operation", i);
        return -1;
    }
    if (ch->removed)
        return 0;
    if (ch->last == DIFF_LAST_SET && d->last == NULL && ch->last_text == NULL) {
        store_set_err(err, errlen, "store: change %zu: a last record to store but no text", i);
        return -1;
    }
    /* diff_record_encode() takes a NULL status for "". */
    if (ch->rec.status != NULL && strnlen(ch->rec.status, DIFF_STATUS_MAX + 1) > DIFF_STATUS_MAX) {
        store_set_err(err, errlen, "store: change %zu: status longer than %d bytes", i,
                      DIFF_STATUS_MAX);
        return -1;
    }
    enc = diff_record_encode(&ch->rec, buf, sizeof buf);
    /* What the load would reject must not be written: it would make
     * the source unloadable until someone repairs the hash by hand. */
    if (enc < 0 || diff_record_decode(buf, (size_t)enc, &back, status, sizeof status) != 0) {
        store_set_err(err, errlen, "store: change %zu: record does not encode to a loadable value",
                      i);
        return -1;
    }
    return 0;
}

int store_tx_check_delta(const store_delta_t *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < d->n; i++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, i, &chbuf, err, errlen);

        if (ch == NULL || check_change(ch, d, i, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int tx_send(store_tx_t *tx, int argc, const char **argv, const size_t *argvlen,
                   const char *what, char *err, size_t errlen)
{
    if (tx->send(tx->send_opaque, argc, argv, argvlen, what, err, errlen) != 0)
        return -1;
    tx->commands++;
    return 0;
}

/*
 * One HSET (upserts) or HDEL (removals) chunk of at most STORE_BATCH
 * changes of that kind, from tx->pos on. A delta names each session at
 * most once, so splitting it by kind keeps its meaning. Each change is
 * checked as it is queued: the asynchronous commit does not read the
 * delta twice.
 */
static int window_chunk(store_tx_t *tx, bool removed, char *err, size_t errlen)
{
    store_t *st = tx->st;
    const store_delta_t *d = &tx->delta;
    const int per_field = removed ? 1 : 2;
    int argc = 2;

    st->argv[0] = removed ? "HDEL" : "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = tx->snap;
    st->argvlen[1] = strlen(tx->snap);
    for (; tx->pos < d->n && (argc - 2) / per_field < STORE_BATCH; tx->pos++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, tx->pos, &chbuf, err, errlen);

        if (ch == NULL || check_change(ch, d, tx->pos, err, errlen) != 0)
            return -1;
        if (ch->removed != removed)
            continue;
        st->argv[argc] = ch->session_id;
        st->argvlen[argc] = strlen(ch->session_id);
        if (!removed) {
            char *slot = st->records + (size_t)(argc - 2) / 2 * STORE_RECORD_SLOT;
            /* check_change() encoded it once already: cannot fail here. */
            int len = diff_record_encode(&ch->rec, slot, STORE_RECORD_SLOT);

            st->argv[argc + 1] = slot;
            st->argvlen[argc + 1] = (size_t)len;
        }
        argc += per_field;
    }
    if (argc > 2)
        return tx_send(tx, argc, st->argv, st->argvlen, st->argv[0], err, errlen);
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

/* Makes tx->last_buf hold at least len bytes; nothing may point into it. */
static int last_reserve(store_tx_t *tx, size_t len, char *err, size_t errlen)
{
    size_t cap = len > STORE_FLUSH_BYTES ? len : STORE_FLUSH_BYTES;
    char *v;

    if (len <= tx->last_cap)
        return 0;
    v = realloc(tx->last_buf, cap);
    if (v == NULL) {
        store_set_err(err, errlen, "store: out of memory");
        return -1;
    }
    tx->last_buf = v;
    tx->last_cap = cap;
    return 0;
}

/*
 * One HSET P:rec:S chunk of the changes that set a last record: at most
 * STORE_BATCH fields and about STORE_FLUSH_BYTES of text, copied into
 * tx->last_buf (the delta hands each text out only until it reads the
 * next). A text that does not fit ends the chunk and stays in the buffer
 * for the next one (tx->carry): each is read once, in change order.
 */
static int window_last_set(store_tx_t *tx, char *err, size_t errlen)
{
    store_t *st = tx->st;
    const store_delta_t *d = &tx->delta;
    size_t used = 0;
    int argc = 2;

    st->argv[0] = "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = tx->rec;
    st->argvlen[1] = strlen(tx->rec);
    for (; tx->pos < d->n && (argc - 2) / 2 < STORE_BATCH; tx->pos++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, tx->pos, &chbuf, err, errlen);
        const char *text;
        size_t len;

        if (ch == NULL)
            return -1;
        if (ch->removed || ch->last != DIFF_LAST_SET)
            continue;
        if (tx->carry) {
            /* read by the chunk before, at the start of the buffer */
            len = tx->carry_len;
            tx->carry = false;
        } else {
            if (last_at(d, tx->pos, ch, &text, &len, err, errlen) != 0)
                return -1;
            if (argc > 2 && used + len > tx->last_cap) {
                /* the chunk is sent first; the text waits at the buffer's start */
                if (tx_send(tx, argc, st->argv, st->argvlen, "HSET", err, errlen) != 0 ||
                    last_reserve(tx, len, err, errlen) != 0)
                    return -1;
                memcpy(tx->last_buf, text, len);
                tx->carry = true;
                tx->carry_len = len;
                return 0;
            }
            if (last_reserve(tx, used + len, err, errlen) != 0)
                return -1;
            memcpy(tx->last_buf + used, text, len);
        }
        st->argv[argc] = ch->session_id;
        st->argvlen[argc] = strlen(ch->session_id);
        st->argv[argc + 1] = tx->last_buf + used;
        st->argvlen[argc + 1] = len;
        argc += 2;
        used += len;
    }
    if (argc > 2)
        return tx_send(tx, argc, st->argv, st->argvlen, "HSET", err, errlen);
    return 0;
}

/* One HDEL P:rec:S chunk of the changes that drop one (removals included). */
static int window_last_del(store_tx_t *tx, char *err, size_t errlen)
{
    store_t *st = tx->st;
    const store_delta_t *d = &tx->delta;
    int argc = 2;

    st->argv[0] = "HDEL";
    st->argvlen[0] = 4;
    st->argv[1] = tx->rec;
    st->argvlen[1] = strlen(tx->rec);
    for (; tx->pos < d->n && argc - 2 < STORE_BATCH; tx->pos++) {
        diff_change_t chbuf;
        const diff_change_t *ch = delta_at(d, tx->pos, &chbuf, err, errlen);

        if (ch == NULL)
            return -1;
        if (!ch->removed && ch->last != DIFF_LAST_DROP)
            continue;
        st->argv[argc] = ch->session_id;
        st->argvlen[argc++] = strlen(ch->session_id);
    }
    if (argc > 2)
        return tx_send(tx, argc, st->argv, st->argvlen, "HDEL", err, errlen);
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
static int append_letters(store_tx_t *tx, const char *cmd, const char *kind, const char *suffix,
                          const store_letter_t *l, size_t n, const char *score, char *err,
                          size_t errlen)
{
    store_t *st = tx->st;
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
        if (tx_send(tx, argc, st->argv, st->argvlen, cmd, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/*
 * One window of letters of ls, from tx->pos: read into st->letters, checked
 * and queued before the next one is read. Outbox letters (outbox set) go
 * to P:ob:K and P:ob:K:due (due now), dead letters to P:dlq:K.
 */
static int window_letters(store_tx_t *tx, const store_letters_t *ls, bool outbox, char *err,
                          size_t errlen)
{
    store_t *st = tx->st;
    size_t from = tx->pos, got = 0;
    size_t max = ls->n - from < STORE_BATCH ? ls->n - from : STORE_BATCH;

    if (from >= ls->n)
        return 0;
    if (ls->get == NULL || ls->get(ls->opaque, from, st->letters, max, &got) != 0 || got == 0 ||
        got > max) {
        store_set_err(err, errlen, "store: letter %zu cannot be read", from);
        return -1;
    }
    if (check_letters(st, st->letters, got, from, err, errlen) != 0)
        return -1;
    if (!outbox ? append_letters(tx, "HSET", "dlq", "", st->letters, got, NULL, err, errlen) != 0
                : append_letters(tx, "HSET", "ob", "", st->letters, got, NULL, err, errlen) != 0 ||
                      append_letters(tx, "ZADD", "ob", ":due", st->letters, got, tx->now, err,
                                     errlen) != 0)
        return -1;
    tx->pos += got;
    return 0;
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

/* Gathers the sessions of an index into one HSET of at most STORE_BATCH fields. */
typedef struct restore_chunk {
    store_t *st;
    int argc;
} restore_chunk_t;

static int restore_session(void *opaque, const char *session_id, const diff_record_t *rec)
{
    restore_chunk_t *c = opaque;
    store_t *st = c->st;
    /* The slots are reused per chunk: hiredis formats each command as it is sent. */
    char *slot = st->records + (size_t)(c->argc - 2) / 2 * STORE_RECORD_SLOT;
    int len = diff_record_encode(rec, slot, STORE_RECORD_SLOT);

    if (len < 0)
        return -1;
    st->argv[c->argc] = session_id;
    st->argvlen[c->argc] = strlen(session_id);
    st->argv[c->argc + 1] = slot;
    st->argvlen[c->argc + 1] = (size_t)len;
    c->argc += 2;
    return (c->argc - 2) / 2 == STORE_BATCH ? 1 : 0; /* 1: the chunk is full, pause */
}

/* One HSET P:snap:S chunk of the index, from index position tx->pos on. */
static int window_restore(store_tx_t *tx, bool *done, char *err, size_t errlen)
{
    store_t *st = tx->st;
    restore_chunk_t c = {.st = st, .argc = 2};
    int rc;

    st->argv[0] = "HSET";
    st->argvlen[0] = 4;
    st->argv[1] = tx->snap;
    st->argvlen[1] = strlen(tx->snap);
    rc = diff_index_foreach_from(tx->ix, &tx->pos, restore_session, &c);
    if (rc < 0) {
        store_set_err(err, errlen, "store: a session of the index does not encode");
        return -1;
    }
    *done = rc == 0;
    if (c.argc > 2)
        return tx_send(tx, c.argc, st->argv, st->argvlen, "HSET", err, errlen);
    return 0;
}

/* HSET P:meta:S cycle, committed_at and sessions. */
static int window_meta(store_tx_t *tx, char *err, size_t errlen)
{
    char cycle[STORE_U64_DIGITS + 1], at[STORE_U64_DIGITS + 1], count[STORE_U64_DIGITS + 1];
    const char *argv[8] = {"HSET", tx->meta, "cycle", cycle, "committed_at", at, "sessions", count};
    size_t len[8] = {4, strlen(tx->meta), 5, 0, 12, 0, 8, 0};

    len[3] = (size_t)snprintf(cycle, sizeof cycle, "%" PRIu64, tx->cycle);
    len[5] = (size_t)snprintf(at, sizeof at, "%" PRIu64, (uint64_t)clock_unix_ms());
    len[7] = (size_t)snprintf(count, sizeof count, "%zu", tx->sessions);
    return tx_send(tx, 8, argv, len, "HSET", err, errlen);
}

int store_tx_window(store_tx_t *tx, char *err, size_t errlen)
{
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"}, *del[2] = {"DEL", tx->snap};
    size_t multi_len[1] = {5}, exec_len[1] = {4}, del_len[2] = {3, strlen(tx->snap)};
    const bool restore = tx->ix != NULL;
    bool done = false;
    int rc = 0;

    switch (tx->stage) {
    case TX_MULTI:
        rc = tx_send(tx, 1, multi, multi_len, "MULTI", err, errlen);
        done = true;
        break;
    case TX_SET:
    case TX_DEL:
        rc = window_chunk(tx, tx->stage == TX_DEL, err, errlen);
        done = tx->pos >= tx->delta.n;
        break;
    case TX_LAST_SET:
        rc = window_last_set(tx, err, errlen);
        done = tx->pos >= tx->delta.n && !tx->carry;
        break;
    case TX_LAST_DEL:
        rc = window_last_del(tx, err, errlen);
        done = tx->pos >= tx->delta.n;
        break;
    case TX_OUTBOX:
    case TX_DEAD: {
        const store_letters_t *ls = tx->stage == TX_OUTBOX ? &tx->extra.outbox : &tx->extra.dead;
        rc = window_letters(tx, ls, tx->stage == TX_OUTBOX, err, errlen);
        done = tx->pos >= ls->n;
        break;
    }
    case TX_CLEAR:
        rc = tx_send(tx, 2, del, del_len, "DEL", err, errlen);
        done = true;
        break;
    case TX_RESTORE:
        rc = window_restore(tx, &done, err, errlen);
        break;
    case TX_META:
        rc = window_meta(tx, err, errlen);
        done = true;
        break;
    case TX_EXEC:
        rc = tx_send(tx, 1, exec, exec_len, "EXEC", err, errlen);
        done = true;
        break;
    case TX_DONE:
        return 0;
    }
    if (rc != 0 || !done)
        return rc;
    /* the next stage this transaction has: a commit skips the restore's, and back */
    tx->pos = 0;
    do {
        tx->stage++;
    } while ((restore && tx->stage > TX_MULTI && tx->stage < TX_CLEAR) ||
             (!restore && (tx->stage == TX_CLEAR || tx->stage == TX_RESTORE)));
    return 0;
}

int store_tx_init(store_tx_t *tx, store_t *st, const char *source, const char *token, uint64_t base,
                  uint64_t cycle, size_t sessions, const store_delta_t *delta,
                  const store_extra_t *extra, const diff_index_t *ix, char *err, size_t errlen)
{
    memset(tx, 0, sizeof *tx);
    tx->st = st;
    if (store_make_keys(st, source, tx->snap, tx->meta, err, errlen) != 0 ||
        store_make_key(st, "rec", source, "", tx->rec, err, errlen) != 0 ||
        store_make_key(st, "lease", source, "", tx->lease, err, errlen) != 0)
        return -1;
    if (token == NULL || strlen(token) >= sizeof tx->token) {
        store_set_err(err, errlen, "store: a fenced commit needs a lease token");
        return -1;
    }
    snprintf(tx->source, sizeof tx->source, "%s", source);
    snprintf(tx->token, sizeof tx->token, "%s", token);
    tx->base = base;
    tx->cycle = cycle;
    tx->sessions = sessions;
    if (delta != NULL)
        tx->delta = *delta;
    if (extra != NULL)
        tx->extra = *extra;
    tx->ix = ix;
    snprintf(tx->now, sizeof tx->now, "%" PRIu64, (uint64_t)clock_unix_ms());
    return 0;
}

void store_tx_free(store_tx_t *tx)
{
    free(tx->last_buf);
    tx->last_buf = NULL;
    tx->last_cap = 0;
}

/* ---- the fence ---- */

void store_fence_read_take(store_fence_read_t *fr, bool owner, const redisReply *r)
{
    int *type = owner ? &fr->owner_type : &fr->at_type;
    size_t *len = owner ? &fr->owner_len : &fr->at_len;
    char *buf = owner ? fr->owner : fr->at;
    size_t cap = owner ? sizeof fr->owner : sizeof fr->at;

    *type = r->type;
    if (r->type == REDIS_REPLY_ERROR && fr->error[0] == '\0')
        snprintf(fr->error, sizeof fr->error, "%.*s", (int)r->len, r->str);
    if (r->type != REDIS_REPLY_STRING)
        return;
    /* a value longer than the buffer is neither our token nor a cycle: kept
     * cut, with its real length, so that it compares unequal */
    *len = r->len;
    memcpy(buf, r->str, r->len < cap ? r->len : cap);
}

store_fence_t store_fence_judge(const store_t *st, const store_tx_t *tx,
                                const store_fence_read_t *fr, char *err, size_t errlen)
{
    uint64_t stored = 0;

    if (fr->owner_type == REDIS_REPLY_ERROR || fr->at_type == REDIS_REPLY_ERROR) {
        store_set_err(err, errlen, "redis %s: fence of %s: %s", st->endpoint, tx->source,
                      fr->error);
        return STORE_FENCE_ERROR;
    }
    if (fr->owner_type == REDIS_REPLY_NIL) {
        store_set_err(err, errlen, "lease of %s: nobody holds it (expired, or lost by Redis)",
                      tx->source);
        return STORE_FENCE_LEASE_GONE;
    }
    if (fr->owner_type != REDIS_REPLY_STRING || fr->owner_len != strlen(tx->token) ||
        memcmp(fr->owner, tx->token, fr->owner_len) != 0) {
        store_set_err(err, errlen, "lease of %s: another replica holds it", tx->source);
        return STORE_FENCE_LEASE_OTHER;
    }
    if (fr->at_type == REDIS_REPLY_STRING &&
        (fr->at_len >= sizeof fr->at || redis_parse_u64(fr->at, fr->at_len, &stored) != 0)) {
        store_set_err(err, errlen, "redis %s: %s field \"cycle\": not a decimal cycle number",
                      st->endpoint, tx->meta);
        return STORE_FENCE_ERROR;
    }
    if (stored == tx->base)
        return STORE_FENCE_OK;
    if (stored == 0) {
        store_set_err(err, errlen, "snapshot of %s: not in Redis (expected cycle %" PRIu64 ")",
                      tx->source, tx->base);
        return STORE_FENCE_BASE_MISSING;
    }
    store_set_err(err, errlen, "snapshot of %s: at cycle %" PRIu64 " in Redis, expected %s%" PRIu64,
                  tx->source, stored, tx->base ? "cycle " : "none: ", tx->base);
    return STORE_FENCE_BASE_MOVED;
}

store_fence_t store_fence_aborted(const store_t *st, const store_tx_t *tx,
                                  const store_fence_read_t *fr, char *err, size_t errlen)
{
    store_fence_t f = store_fence_judge(st, tx, fr, err, errlen);

    if (f == STORE_FENCE_OK)
        store_set_err(err, errlen,
                      "redis %s: commit of %s: transaction aborted by a concurrent write",
                      st->endpoint, tx->source);
    return f == STORE_FENCE_OK ? STORE_FENCE_ERROR : f;
}

/* ---- on the blocking connection ---- */

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
 * Reads the fence of tx (GET lease, HGET meta cycle, pipelined), after a
 * WATCH of both when watch is set.
 */
static store_fence_t read_fence(store_t *st, const store_tx_t *tx, bool watch, char *err,
                                size_t errlen)
{
    const char *watch_argv[2] = {"WATCH", tx->meta}, *get[2] = {"GET", tx->lease},
               *hget[3] = {"HGET", tx->meta, "cycle"};
    size_t watch_len[2] = {5, strlen(tx->meta)}, get_len[2] = {3, strlen(tx->lease)},
           hget_len[3] = {4, watch_len[1], 5};
    store_fence_read_t fr = {0};
    redisReply *owner = NULL, *at = NULL;
    store_fence_t rc = STORE_FENCE_ERROR;

    if (watch && expect_ok(st, 2, watch_argv, watch_len, "WATCH", err, errlen) != 0)
        return STORE_FENCE_ERROR;
    /* Both questions in one round trip. */
    if (store_append_command(st, 2, get, get_len, "GET lease", err, errlen) != 0 ||
        store_append_command(st, 3, hget, hget_len, "HGET meta", err, errlen) != 0 ||
        (owner = store_read_reply(st, "GET lease", err, errlen)) == NULL ||
        (at = store_read_reply(st, "HGET meta", err, errlen)) == NULL)
        goto out; /* the connection was dropped, and the WATCH with it */
    store_fence_read_take(&fr, true, owner);
    store_fence_read_take(&fr, false, at);
    rc = store_fence_judge(st, tx, &fr, err, errlen);
    if (fr.error[0])
        st->errors++;
out:
    if (owner != NULL)
        freeReplyObject(owner);
    if (at != NULL)
        freeReplyObject(at);
    return rc;
}

/*
 * WATCHes the meta hash of the source and checks that the lease holds the
 * token and that the snapshot is at the base cycle: the EXEC that follows
 * then applies only if no other commit came in between (store.h says why
 * the lease is not WATCHed).
 * Anything but OK leaves nothing WATCHed.
 */
static store_fence_t watch_fence(store_t *st, const store_tx_t *tx, char *err, size_t errlen)
{
    const char *unwatch[1] = {"UNWATCH"};
    size_t unwatch_len[1] = {7};
    store_fence_t rc = read_fence(st, tx, true, err, errlen);

    if (rc != STORE_FENCE_OK && st->ctx != NULL)
        (void)expect_ok(st, 1, unwatch, unwatch_len, "UNWATCH", NULL, 0);
    return rc;
}

static int blocking_send(void *opaque, int argc, const char **argv, const size_t *argvlen,
                         const char *what, char *err, size_t errlen)
{
    store_tx_t *tx = opaque;
    uint64_t had = tx->st->bytes_queued;

    if (store_append_command(tx->st, argc, argv, argvlen, what, err, errlen) != 0)
        return -1;
    tx->bytes += tx->st->bytes_queued - had;
    return 0;
}

/*
 * Runs tx on the blocking connection: the fence, then every window queued
 * back to back (written out past STORE_FLUSH_BYTES, the rest by the first
 * read): one round trip for the whole transaction. A window that fails
 * leaves MULTI and part of the transaction queued or sent, and the next
 * command would join them: only a new connection is in sync, and Redis
 * discards the MULTI of the one dropped.
 */
static store_fence_t run_blocking(store_t *st, store_tx_t *tx, char *err, size_t errlen)
{
    store_fence_t f;
    int rc = 0;

    if (store_ensure_connected(st, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    if ((f = watch_fence(st, tx, err, errlen)) != STORE_FENCE_OK)
        return f;
    tx->send = blocking_send;
    tx->send_opaque = tx;
    while (rc == 0 && tx->stage != TX_DONE)
        rc = store_tx_window(tx, err, errlen);
    store_tx_free(tx);
    if (rc != 0) {
        if (st->ctx != NULL) { /* a failed send has dropped it already */
            st->errors++;
            store_disconnect(st);
        }
        return STORE_FENCE_ERROR;
    }
    rc = store_read_transaction(st, tx->commands, tx->bytes, tx->snap, err, errlen);
    if (rc == -2) {
        /* which of the two changed: the fence read again (nothing WATCHed now) */
        f = read_fence(st, tx, false, err, errlen);
        if (f == STORE_FENCE_OK)
            store_set_err(err, errlen,
                          "redis %s: commit of %s: transaction aborted by a concurrent write",
                          st->endpoint, tx->source);
        return f == STORE_FENCE_OK ? STORE_FENCE_ERROR : f;
    }
    return rc == 0 ? STORE_FENCE_OK : STORE_FENCE_ERROR;
}

store_fence_t store_commit_fenced(store_t *st, const char *source, const char *token,
                                  const store_delta_t *delta, size_t sessions_after,
                                  const store_extra_t *extra, uint64_t *cycle, char *err,
                                  size_t errlen)
{
    store_tx_t tx;
    store_fence_t f;

    if (token == NULL) {
        store_set_err(err, errlen, "store: a fenced commit needs a lease token");
        return STORE_FENCE_ERROR;
    }
    if (*cycle == UINT64_MAX) {
        store_set_err(err, errlen, "store: cycle number exhausted");
        return STORE_FENCE_ERROR;
    }
    if (store_tx_init(&tx, st, source, token, *cycle, *cycle + 1, sessions_after, delta, extra,
                      NULL, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    /* Nothing is sent for a delta that could not be written whole. */
    if (store_tx_check_delta(&tx.delta, err, errlen) != 0)
        return STORE_FENCE_ERROR;
    f = run_blocking(st, &tx, err, errlen);
    if (f == STORE_FENCE_OK)
        *cycle += 1;
    return f;
}
