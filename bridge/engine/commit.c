/*
 * engine, commit: the fenced write of a cycle's delta with its outbox
 * events and dead letters (read by the store window by window), the
 * repairs a fence asks for, what a restore of the snapshot from memory
 * comes to (fetch.c sends one before a cycle, the repairs here after a
 * fence), and the metrics of a committed cycle.
 *
 * The commit is asynchronous: the source waits in PHASE_COMMIT while the
 * store queues the transaction on its commit connection, and its answer
 * (on_committed) applies the delta to the index, counts the metrics and
 * arms the next cycle. Until then the cycle, its delta and its letters
 * stay as they are: the store reads them as it goes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Bytes of text one window of a commit's outbox events or dead letters may
 * hold (store_letters_t): the store queues a window and writes it out
 * before the next is encoded, so that the outbox events of a first emit
 * cycle (~1.5 KiB each, a million of them) are never all in memory. 1 MiB
 * matches the store's STORE_FLUSH_BYTES; a window also holds at most
 * STORE_BATCH letters.
 */
#define ENGINE_LETTER_WINDOW_BYTES (1024u * 1024u)
/*
 * Commits of one cycle: the first, and one more after each repair a fence
 * asks for (the lease taken again, then the snapshot restored).
 */
#define ENGINE_COMMIT_TRIES 3

/*
 * Puts the snapshot of s back into Redis from memory, where Redis has none
 * although this replica holds the lease and the snapshot it committed (or
 * loaded) last: Redis lost its data (FLUSHALL, restarted without
 * persistence, failed over to an empty replica). Without it the next cycle
 * would take the empty Redis for a first poll: a baseline that swallows
 * every change since, or, with initial_snapshot emit, every session sent
 * again. The restore is asynchronous (store_restore_async(), on the
 * commit connection); this judges its answer f, logs and counts it: 1
 * restored, 0 Redis holds a snapshot (someone else's, or ours after all:
 * load it), -1 refused or failed.
 */
int commit_restore_outcome(source_rt_t *s, store_fence_t f, const char *err)
{
    engine_t *e = s->e;

    switch (f) {
    case STORE_FENCE_OK:
        metric_add(ENGINE_METRIC(e, redis_state_restored), LABELS(s->conf->name), 1);
        LOG_WARN("redis lost the snapshot of this source; restored it from memory (outbox events "
                 "and dead letters redis held are not restored)",
                 LF_S("source", s->conf->name), LF_I("cycle", (long long)s->cycle),
                 LF_I("sessions", diff_index_size(s->index)));
        return 1;
    case STORE_FENCE_BASE_MOVED:
        return 0;
    case STORE_FENCE_LEASE_OTHER:
        lease_taken_over(s, err);
        break;
    case STORE_FENCE_LEASE_GONE:
        s->lease.renew_at = 0; /* the next tick takes it again */
        lease_due(e, 0);
        break;
    case STORE_FENCE_BASE_MISSING:
    case STORE_FENCE_ERROR:
        break;
    }
    LOG_WARN("redis lost the snapshot of this source and it cannot be restored now",
             LF_S("source", s->conf->name), LF_S("error", err));
    return -1;
}

/* The CloudEvent text of event i of the cycle (malloc'd, owned by the
 * caller), *ev filled; NULL on ENOMEM or text that is not UTF-8. */
static char *cycle_event_json(source_rt_t *s, size_t i, diff_event_t *ev, size_t *len)
{
    if (diff_cycle_event(s->cy, i, ev) != 0)
        return NULL;
    return event_encode(ev, s->conf->name, s->conf->provider->name, s->observed_ms, len);
}

/*
 * What a commit writes besides the delta, read by the store window by
 * window (store_letters_t): the events of outbox sinks, sink by sink (so
 * that the store batches each sink's run), and the events sinks refused for
 * good as dead-letter records. A window's texts are encoded when the store
 * asks for it and freed when it asks for the next one.
 */
typedef struct letters {
    source_rt_t *s;
    store_letters_t outbox, dead;
    /* the next outbox letter: its index, and the sink and event it is */
    size_t next, sink, event;
    char **texts; /* the window's texts, owned */
    size_t ntexts;
    char (*ids)[DIFF_EVENT_ID_LEN]; /* the outbox window's event ids */
} letters_t;

static void letters_window_free(letters_t *l)
{
    for (size_t i = 0; i < l->ntexts; i++)
        free(l->texts[i]);
    l->ntexts = 0;
}

static void letters_free(letters_t *l)
{
    if (l->texts != NULL)
        letters_window_free(l);
    free(l->texts);
    free(l->ids);
}

/* Moves the outbox cursor to the next (sink, event) the sink routes, at or
 * after the current one; sink == nsinks when there is none. */
static void letters_seek(letters_t *l)
{
    engine_t *e = l->s->e;

    for (; l->sink < e->nsinks; l->sink++, l->event = 0) {
        const engine_sink_t *sk = e->sinks[l->sink];
        for (; sk->ob && l->event < l->s->nevents; l->event++) {
            if (conf_sink_routes(sk->conf, l->s->conf->name,
                                 diff_cycle_event_type(l->s->cy, l->event)))
                return;
        }
    }
}

static int outbox_letters_get(void *opaque, size_t from, store_letter_t *out, size_t max,
                              size_t *got)
{
    letters_t *l = opaque;
    source_rt_t *s = l->s;
    size_t bytes = 0;

    letters_window_free(l);
    if (from < l->next) { /* the commit is tried again: from the start */
        l->next = l->sink = l->event = 0;
        letters_seek(l);
    }
    for (; l->next < from; l->next++, l->event++)
        letters_seek(l);
    *got = 0;
    while (*got < max && bytes < ENGINE_LETTER_WINDOW_BYTES) {
        diff_event_t ev;
        size_t len = 0;
        char *json;

        letters_seek(l);
        if (l->sink == s->e->nsinks || (json = cycle_event_json(s, l->event, &ev, &len)) == NULL)
            return -1; /* fewer letters than counted, or ENOMEM */
        l->texts[l->ntexts++] = json;
        memcpy(l->ids[*got], ev.id, DIFF_EVENT_ID_LEN);
        out[*got] = (store_letter_t){
            .sink = s->e->sinks[l->sink]->conf->name, .id = l->ids[*got], .json = json, .len = len};
        (*got)++;
        bytes += len;
        l->next++;
        l->event++;
    }
    return 0;
}

static int dead_letters_get(void *opaque, size_t from, store_letter_t *out, size_t max, size_t *got)
{
    letters_t *l = opaque;
    source_rt_t *s = l->s;
    size_t bytes = 0;

    letters_window_free(l);
    for (*got = 0; *got < max && bytes < ENGINE_LETTER_WINDOW_BYTES; (*got)++) {
        const dead_event_t *d = &s->delivery.dead[from + *got];
        diff_event_t ev;
        size_t len = 0;
        char *json = cycle_event_json(s, d->event, &ev, &len);
        char *rec = json ? outbox_dead_record(d->sink, d->id, 1, d->error, json, len) : NULL;

        free(json);
        if (rec == NULL)
            return -1;
        l->texts[l->ntexts++] = rec;
        out[*got] = (store_letter_t){.sink = d->sink, .id = d->id, .json = rec, .len = strlen(rec)};
        bytes += out[*got].len;
    }
    return 0;
}

/* Counts the letters of the commit and sets up their readers. -1: out of memory. */
static int letters_init(source_rt_t *s, letters_t *l)
{
    engine_t *e = s->e;
    size_t nout = 0;

    memset(l, 0, sizeof(*l));
    l->s = s;
    for (size_t k = 0; k < e->nsinks; k++) {
        for (size_t i = 0; e->sinks[k]->ob && i < s->nevents; i++)
            nout +=
                conf_sink_routes(e->sinks[k]->conf, s->conf->name, diff_cycle_event_type(s->cy, i));
    }
    l->outbox = (store_letters_t){.n = nout, .get = outbox_letters_get, .opaque = l};
    l->dead = (store_letters_t){.n = s->delivery.ndead, .get = dead_letters_get, .opaque = l};
    if (nout == 0 && s->delivery.ndead == 0)
        return 0;
    l->texts = calloc(STORE_BATCH, sizeof(*l->texts));
    l->ids = calloc(STORE_BATCH, sizeof(*l->ids));
    if (l->texts == NULL || l->ids == NULL)
        return -1;
    letters_seek(l);
    return 0;
}

static void commit_metrics(source_rt_t *s)
{
    engine_t *e = s->e;
    size_t by_type[DIFF_EV_COUNT] = {0};

    if (e->obs.metrics == NULL)
        return;
    for (size_t i = 0; i < s->nevents; i++)
        by_type[diff_cycle_event_type(s->cy, i)]++;
    for (int t = 0; t < DIFF_EV_COUNT; t++) {
        if (by_type[t] > 0)
            metric_add(e->obs.metrics->events,
                       LABELS(s->conf->name, diff_event_type_short((diff_event_type_t)t)),
                       (double)by_type[t]);
    }
    metric_add(e->obs.metrics->unknown_statuses, LABELS(s->conf->name),
               (double)diff_cycle_unknown_count(s->cy));
    metric_add(e->obs.metrics->vanished_no_record, LABELS(s->conf->name),
               (double)s->stats.vanished_no_record);
    metric_set(e->obs.metrics->last_success_timestamp, LABELS(s->conf->name),
               (double)clock_unix_ms() / 1000.0);
    observe_sessions_gauge(s);
}

static void commit_send(source_rt_t *s);

void commit_release(source_rt_t *s)
{
    if (s->commit.letters != NULL) {
        letters_free(s->commit.letters);
        free(s->commit.letters);
    }
    memset(&s->commit, 0, sizeof(s->commit));
}

/* The fence's answer stands, or its repair failed: what the cycle comes to. */
static void commit_finish(source_rt_t *s, store_fence_t f, const char *err)
{
    engine_t *e = s->e;
    engine_cycle_stats_t *st = &s->stats;
    size_t nout = s->commit.letters->outbox.n, ndead = s->commit.letters->dead.n;

    switch (f) {
    case STORE_FENCE_OK:
        break;
    case STORE_FENCE_LEASE_OTHER:
        lease_taken_over(s, err);
        engine_cycle_fail(
            s, "commit refused: another replica holds the lease; it delivers these events", err);
        return;
    case STORE_FENCE_LEASE_GONE:
        engine_cycle_fail(
            s, "commit refused: nobody holds the lease and it could not be taken again", err);
        return;
    case STORE_FENCE_BASE_MISSING:
    case STORE_FENCE_BASE_MOVED:
        s->loaded = 0;
        engine_cycle_fail(
            s,
            "commit refused: the snapshot in redis is not the one this cycle was diffed "
            "against; the next cycle diffs again",
            err);
        return;
    case STORE_FENCE_ERROR:
        /* An EXEC whose reply was lost may have applied: re-read it. */
        s->loaded = 0;
        engine_cycle_fail(s, "commit failed; events may be delivered again with the same ids", err);
        return;
    }
    for (size_t k = 0; k < e->nsinks && nout > 0; k++) {
        if (e->sinks[k]->ob) {
            outbox_nudge(e->sinks[k]->ob);
            loop_timer_arm(e->sinks[k]->outbox_timer, 0);
        }
    }
    st->commit_s = clock_mono_s() - s->commit.t0;
    diff_cycle_apply(s->cy);
    s->has_snapshot = 1;
    /* The fence saw our base in Redis: whatever made us doubt it, the index matches. */
    s->index_valid = s->loaded = 1;
    st->sessions = diff_index_size(s->index);
    commit_metrics(s);
    st->redis_commands = store_commands_sent(e->store) - s->cmds0;
    /* A cycle that changed nothing is told by the source's summary
     * (observe.c); once runs one cycle, and shows it. */
    int quiet = !s->opt.baseline && st->events == 0 && st->changes == 0 && !e->once;
    s->summary.events += st->events;
    LOG_AT(quiet ? LOG_LVL_DEBUG : LOG_LVL_INFO,
           s->opt.baseline ? "baseline recorded" : "cycle committed", LF_S("source", s->conf->name),
           LF_I("cycle", (long long)s->cycle), LF_I("pages", st->pages),
           LF_I("observed", st->observed), LF_I("events", st->events), LF_I("changes", st->changes),
           LF_I("sessions", st->sessions), LF_I("outbox", nout), LF_I("dead_letters", ndead),
           LF_I("unknown_statuses", diff_cycle_unknown_count(s->cy)),
           LF_I("vanished_without_record", st->vanished_no_record), LF_DUR("poll_ms", st->poll_s),
           LF_DUR("deliver_ms", st->deliver_s), LF_DUR("commit_ms", st->commit_s),
           LF_I("redis_commands", (long long)st->redis_commands),
           LF_I("index_bytes", diff_index_memory(s->index)));
    engine_cycle_end(s, 1);
}

/* lease_retake_async()'s answer to a repair: the commit goes again, or its refusal stands. */
static void on_repair_retaken(void *opaque, store_lease_t r, const char *err)
{
    source_rt_t *s = opaque;

    if (s->e->closing)
        return;
    if (lease_retake_outcome(s, r, err, clock_mono_s()) == 1)
        commit_send(s);
    else
        commit_finish(s, s->commit.refused, s->commit.refused_why);
}

/* store_restore_async()'s answer to a repair: the commit goes again, or its refusal stands. */
static void on_repair_restored(void *opaque, store_fence_t f, uint64_t cycle, const char *err)
{
    source_rt_t *s = opaque;
    (void)cycle;

    if (s->e->closing)
        return;
    if (commit_restore_outcome(s, f, err) == 1)
        commit_send(s);
    else
        commit_finish(s, s->commit.refused, s->commit.refused_why);
}

/*
 * A fenced commit found that Redis forgot what this replica holds: the
 * lease (nobody holds it) or the snapshot the delta builds on. Takes the
 * lease again, or puts the snapshot back from memory (on the commit
 * connection, behind the commits waiting there), and commits once more
 * from that answer; otherwise the fence's answer stands. Neither waits on
 * the loop: the source stays in PHASE_COMMIT meanwhile.
 */
static void commit_repair(source_rt_t *s, store_fence_t f, const char *err)
{
    engine_t *e = s->e;
    char rerr[256];

    s->commit.refused = f;
    snprintf(s->commit.refused_why, sizeof(s->commit.refused_why), "%s", err ? err : "");
    if (s->commit.tries < ENGINE_COMMIT_TRIES) {
        if (f == STORE_FENCE_LEASE_GONE) {
            if (lease_retake_async(s, on_repair_retaken, rerr, sizeof(rerr)) == 0)
                return;
            (void)lease_retake_outcome(s, STORE_LEASE_ERROR, rerr, clock_mono_s()); /* says why */
        }
        if (f == STORE_FENCE_BASE_MISSING && s->index_valid && s->has_snapshot) {
            if (store_restore_async(e->store, s->conf->name, e->token, s->index, s->cycle,
                                    on_repair_restored, s, rerr, sizeof(rerr)) == 0)
                return;
            (void)commit_restore_outcome(s, STORE_FENCE_ERROR, rerr);
        }
    }
    commit_finish(s, f, err);
}

/* store_commit_fenced_async()'s answer, on the loop. */
static void on_committed(void *opaque, store_fence_t f, uint64_t cycle, const char *err)
{
    source_rt_t *s = opaque;

    if (s->e->closing)
        return; /* engine_free() releases the cycle */
    if (f == STORE_FENCE_OK) {
        s->cycle = cycle;
        commit_finish(s, f, NULL);
    } else {
        commit_repair(s, f, err);
    }
}

/* store_delta_t's readers of a cycle's changes and their last records. */
static int cycle_change(void *opaque, size_t i, diff_change_t *out)
{
    return diff_cycle_change(opaque, i, out);
}

static int cycle_change_last(void *opaque, size_t i, const char **text, size_t *len)
{
    return diff_cycle_change_last(opaque, i, text, len);
}

/* Sends the cycle's transaction; its answer comes to on_committed(). */
static void commit_send(source_rt_t *s)
{
    engine_t *e = s->e;
    letters_t *l = s->commit.letters;
    char err[256];
    /* the changes are read from the cycle one by one, not copied out */
    store_delta_t delta = {
        .n = s->stats.changes, .get = cycle_change, .last = cycle_change_last, .opaque = s->cy};
    store_extra_t extra = {.outbox = l->outbox, .dead = l->dead};

    s->commit.tries++;
    if (store_commit_fenced_async(e->store, s->conf->name, e->token, &delta,
                                  diff_cycle_sessions_after(s->cy), &extra, s->cycle, on_committed,
                                  s, err, sizeof(err)) != 0)
        commit_finish(s, STORE_FENCE_ERROR, err);
}

void commit_cycle(source_rt_t *s)
{
    engine_cycle_stats_t *st = &s->stats;

    /* t_deliver is set when sinks took events during the cycle, not when
     * every event went to an outbox */
    st->deliver_s = s->delivery.nds ? clock_mono_s() - s->delivery.t_deliver : 0;
    st->changes = diff_cycle_nchanges(s->cy);
    s->commit.letters = malloc(sizeof(*s->commit.letters));
    if (s->commit.letters == NULL || letters_init(s, s->commit.letters) != 0) {
        engine_cycle_fail(s, "cannot commit", "out of memory");
        return;
    }
    s->phase = PHASE_COMMIT;
    s->commit.t0 = clock_mono_s();
    commit_send(s);
}
