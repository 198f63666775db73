/*
 * engine, leases: one replica polls a source at a time. The member beat,
 * the renewals (asynchronous, batched within ENGINE_LEASE_SLACK_S), takes
 * and releases, the fair share among live replicas, and what losing a
 * lease means for the source's snapshot.
 */
#include <math.h>
#include <stdio.h>

#include "internal.h"

/*
 * Lease renewals due within this much of each other are sent together:
 * with thousands of leases taken at scattered times, the lease timer
 * wakes about once a second instead of once per lease. Renewing up to a
 * second early only moves the expiry a second later.
 */
#define ENGINE_LEASE_SLACK_S 1.0
/* once: how often a lease another replica holds is asked for again. */
#define ENGINE_LEASE_WAIT_S 0.25

/* The lease timer fires by when (monotonic s), or sooner as it was. */
void lease_due(engine_t *e, double when)
{
    if (when >= e->lease_armed_at)
        return;
    e->lease_armed_at = when;
    loop_timer_arm(e->lease_timer, when - clock_mono_s() > 0 ? when - clock_mono_s() : 0);
}

static int64_t lease_ttl_ms(const engine_t *e)
{
    return (int64_t)e->conf->lease_ttl_s * 1000;
}

/* The most sources this replica takes: an even share among the live replicas. */
static size_t fair_share(const engine_t *e)
{
    size_t live = e->live_replicas ? e->live_replicas : 1;
    return (e->nsources + live - 1) / live;
}

static void lease_lost(source_rt_t *s, const char *why)
{
    if (!s->lease.held)
        return;
    s->lease.held = 0;
    s->loaded = 0; /* the next holder commits: re-read the snapshot when ours again */
    s->e->leases_held--;
    observe_lease_gauges(s);
    metric_add(ENGINE_METRIC(s->e, lease_lost), LABELS(s->conf->name), 1);
    LOG_WARN("lease lost; another replica polls this source now", LF_S("source", s->conf->name),
             LF_S("why", why));
}

/*
 * Another replica holds the lease of s: it may commit, so our index may
 * fall behind the snapshot and must never be restored over a Redis that
 * lost it (fetch_cycle_start() reads the snapshot instead). A lease that only
 * lapsed (Redis unreachable, or restarted empty) leaves the index ours.
 */
void lease_taken_over(source_rt_t *s, const char *why)
{
    s->index_valid = 0;
    lease_lost(s, why);
}

/*
 * The lease of s is ours (taken, or taken again): another replica may have
 * committed since we last read the snapshot, so the next cycle checks it.
 */
static void lease_taken(source_rt_t *s, double now)
{
    double ttl = s->e->conf->lease_ttl_s;

    if (!s->lease.held) {
        s->lease.held = 1;
        s->e->leases_held++;
        observe_lease_gauges(s);
    }
    s->loaded = 0;
    s->lease.renew_at = now + ttl / 3;
    s->lease.valid_until = now + ttl;
    s->lease.wait_since = 0;
    lease_due(s->e, s->lease.renew_at);
}

/*
 * What taking a lapsed lease of s again found: 1 when the lease is ours
 * again, 0 when another replica's, -1 on a Redis error (err says why).
 */
int lease_retake_outcome(source_rt_t *s, store_lease_t r, const char *err, double now)
{
    switch (r) {
    case STORE_LEASE_HELD:
        lease_taken(s, now);
        LOG_WARN("lease gone from redis (nobody held it); taken again",
                 LF_S("source", s->conf->name), LF_DUR("ttl_ms", s->e->conf->lease_ttl_s));
        return 1;
    case STORE_LEASE_OTHER:
    case STORE_LEASE_GONE:
        lease_taken_over(s, "taken by another replica after it lapsed");
        return 0;
    case STORE_LEASE_ERROR:
        break;
    }
    LOG_WARN("cannot take the lapsed lease again", LF_S("source", s->conf->name),
             LF_S("error", err));
    return -1;
}

/*
 * Nobody holds the lease of s although this replica did: it expired while
 * we could not renew it, or Redis lost it (flushed, restarted empty). Asks
 * Redis for it again unless another replica was faster; fn gets the answer
 * on the loop, for lease_retake_outcome(). Whether the snapshot survived
 * is for the commit's fence and the next load to find out. For a renewal
 * that found the lease gone (on_retaken()) and for the commit's repair
 * (commit.c), when a fence found it lapsed under a commit. 0, or -1 with
 * err when nothing was sent.
 */
int lease_retake_async(source_rt_t *s, store_lease_fn fn, char *err, size_t errlen)
{
    engine_t *e = s->e;

    return store_lease_acquire_async(e->store, s->conf->name, e->token, lease_ttl_ms(e), fn, s, err,
                                     errlen);
}

/* The next time the lease timer must fire: the beat, or the first renewal due. */
static void leases_rearm(engine_t *e)
{
    double next = e->next_beat;

    /* a renewal in flight re-arms the timer when its answer comes */
    for (size_t i = 0; i < e->nsources; i++) {
        const source_rt_t *s = e->sources[i];
        if (s->lease.held && !s->lease.renewing && s->lease.renew_at < next)
            next = s->lease.renew_at;
    }
    lease_due(e, next);
}

/* store_member_beat_async()'s answer. */
static void on_beat(void *opaque, int rc, size_t live, bool was_member, const char *err)
{
    engine_t *e = opaque;
    double ttl = e->conf->lease_ttl_s;
    (void)err;

    e->beating = 0;
    if (e->closing || rc != 0)
        return;
    e->live_replicas = live;
    if (e->beaten && !was_member) {
        /* Every replica's leases and beats vanished with it: the live
         * count is too low until they beat again, and the sources they
         * held are theirs to take back, with the snapshots only they
         * have in memory. */
        e->quiet_until = e->beat_sent_at + ttl;
        LOG_WARN("this replica's membership vanished from redis (it lost its data, or "
                 "this replica was cut off past the lease TTL); taking no source it does "
                 "not hold for one lease TTL",
                 LF_DUR("ttl_ms", ttl));
    }
    e->beaten = 1;
}

/* A renewal (or retake) of s failed: lost past its TTL, else asked again in a second. */
static void renew_failed(source_rt_t *s, double now)
{
    if (now >= s->lease.valid_until)
        lease_lost(s, "not renewed within its TTL");
    else
        s->lease.renew_at = now + 1;
}

/* store_lease_acquire_async()'s answer to a retake of a lapsed lease (on_renewed()). */
static void on_retaken(void *opaque, store_lease_t r, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    double now;

    s->lease.renewing = 0;
    if (e->closing || !s->lease.held)
        return;
    now = clock_mono_s();
    if (lease_retake_outcome(s, r, err, now) < 0)
        renew_failed(s, now);
    leases_rearm(e);
}

/*
 * store_lease_renew_async()'s answer for s. The lease counts from when the
 * renewal was sent: Redis extended it at some moment after that.
 */
static void on_renewed(void *opaque, store_lease_t r, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    double ttl = e->conf->lease_ttl_s, sent = s->lease.renew_sent_at, now;
    char rerr[256];
    (void)err;

    s->lease.renewing = 0;
    if (s->next.removed)
        engine_kick(e); /* a reload waits for it to be idle */
    if (e->closing || !s->lease.held)
        return;
    now = clock_mono_s();
    switch (r) {
    case STORE_LEASE_HELD:
        s->lease.renew_at = sent + ttl / 3;
        s->lease.valid_until = sent + ttl;
        break;
    case STORE_LEASE_OTHER:
        lease_taken_over(s, "taken by another replica (this one was paused or cut off)");
        break;
    case STORE_LEASE_GONE:
    case STORE_LEASE_ERROR:
        /* Gone: take it again (renewing until on_retaken()); a Redis error
         * either way counts as a failed renewal. */
        if (r == STORE_LEASE_GONE) {
            if (lease_retake_async(s, on_retaken, rerr, sizeof(rerr)) == 0) {
                s->lease.renewing = 1;
                s->lease.renew_at = now + 1;
                break;
            }
            (void)lease_retake_outcome(s, STORE_LEASE_ERROR, rerr, now); /* says why */
        }
        renew_failed(s, now);
        break;
    }
    leases_rearm(e);
}

/*
 * Beats the replica's membership and renews the leases that are due (or
 * due within ENGINE_LEASE_SLACK_S), without waiting for Redis: each answer
 * comes back through on_beat() or on_renewed(). Re-arms the lease timer
 * for the next.
 */
void leases_tick(engine_t *e, double now)
{
    double ttl = e->conf->lease_ttl_s;
    char err[256];

    if (now >= e->next_beat && !e->beating) {
        e->next_beat = now + ttl / 3;
        e->beat_sent_at = now;
        e->beating = store_member_beat_async(e->store, e->token, &e->who, lease_ttl_ms(e), on_beat,
                                             e, err, sizeof(err)) == 0;
    }
    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = e->sources[i];
        if (!s->lease.held || s->lease.renewing || now + ENGINE_LEASE_SLACK_S < s->lease.renew_at)
            continue;
        s->lease.renew_sent_at = now;
        if (store_lease_renew_async(e->store, s->conf->name, e->token, lease_ttl_ms(e), on_renewed,
                                    s, err, sizeof(err)) == 0) {
            s->lease.renewing = 1;
            /* asked again if no answer came by then (the store times out first) */
            s->lease.renew_at = now + 1;
            continue;
        }
        renew_failed(s, now);
    }
    leases_rearm(e);
}

void lease_on_timer(void *opaque)
{
    engine_t *e = opaque;

    e->lease_armed_at = INFINITY;
    if (!e->closing)
        leases_tick(e, clock_mono_s());
}

/* store_lease_release_async()'s answer: a release that failed keeps the lease. */
static void on_released(void *opaque, int rc, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    (void)err;

    s->lease.releasing = 0;
    if (s->next.removed)
        engine_kick(e); /* a reload waits for it to be idle */
    if (e->closing || rc != 0 || !s->lease.held)
        return;
    s->lease.held = 0;
    s->loaded = 0;
    s->index_valid = 0; /* the next holder commits */
    e->leases_held--;
    observe_lease_gauges(s);
    LOG_INFO("lease released to balance the replicas", LF_S("source", s->conf->name),
             LF_I("replicas", e->live_replicas), LF_I("held", e->leases_held));
}

/* After a cycle: gives the lease back when this replica holds more than its share. */
void lease_rebalance(source_rt_t *s)
{
    engine_t *e = s->e;
    char err[256];

    if (e->once || !s->lease.held || s->lease.releasing || e->leases_held <= fair_share(e))
        return;
    s->lease.releasing = store_lease_release_async(e->store, s->conf->name, e->token, on_released,
                                                   s, err, sizeof(err)) == 0;
}

/* An exit release (or the member leave, s NULL) was answered. */
static void on_exit_released(engine_t *e, source_rt_t *s, int rc, const char *err)
{
    e->exit_pending--;
    if (rc != 0 && s != NULL)
        LOG_WARN("cannot release the lease; it expires by itself", LF_S("source", s->conf->name),
                 LF_S("error", err));
}

static void on_exit_release(void *opaque, int rc, const char *err)
{
    source_rt_t *s = opaque;
    on_exit_released(s->e, s, rc, err);
}

static void on_exit_leave(void *opaque, int rc, const char *err)
{
    on_exit_released(opaque, NULL, rc, err);
}

/*
 * At exit: releases every lease held and leaves the members, on the loop
 * (engine_free() serves it until e->exit_pending is 0 or its bound).
 */
void leases_release_all(engine_t *e)
{
    char err[256];

    for (size_t i = 0; i < e->nsources; i++) {
        source_rt_t *s = e->sources[i];

        if (s->lease.held) {
            if (store_lease_release_async(e->store, s->conf->name, e->token, on_exit_release, s,
                                          err, sizeof(err)) == 0)
                e->exit_pending++;
            else
                LOG_WARN("cannot release the lease; it expires by itself",
                         LF_S("source", s->conf->name), LF_S("error", err));
        }
        s->lease.held = 0;
    }
    e->leases_held = 0;
    if (store_member_leave_async(e->store, e->token, on_exit_leave, e, err, sizeof(err)) == 0)
        e->exit_pending++;
}

/* ---- before a cycle: is the lease ours? ---- */

/* Another replica holds the lease of s (or this one has its share): when to ask again. */
static void lease_wait(source_rt_t *s, double now)
{
    engine_t *e = s->e;
    double ttl = e->conf->lease_ttl_s;

    if (!e->once) {
        double retry = ttl / 2 < s->conf->interval_s ? ttl / 2 : s->conf->interval_s;
        s->next_due = now + retry * (0.75 + 0.5 * http_uniform01());
        engine_source_arm(s, s->next_due - now);
        return;
    }
    if (s->lease.wait_since == 0) {
        s->lease.wait_since = now;
        LOG_INFO("another replica holds the lease; waiting for it", LF_S("source", s->conf->name),
                 LF_DUR("up_to_ms", ttl + 1));
    } else if (now - s->lease.wait_since > ttl + 1) {
        LOG_ERROR("another replica kept the lease; nothing polled", LF_S("source", s->conf->name));
        s->lease.wait_since = 0;
        s->finished = 1;
        s->last_ok = 0;
        engine_kick(e);
        return;
    }
    engine_source_arm(s, ENGINE_LEASE_WAIT_S);
}

/* store_lease_acquire_async()'s answer: the cycle starts, waits, or fails. */
static void on_lease_asked(void *opaque, store_lease_t r, const char *err)
{
    source_rt_t *s = opaque;
    engine_t *e = s->e;
    double now = clock_mono_s();

    if (e->closing)
        return;
    s->phase = PHASE_IDLE;
    switch (r) {
    case STORE_LEASE_HELD:
        lease_taken(s, now);
        LOG_INFO("lease acquired", LF_S("source", s->conf->name),
                 LF_DUR("ttl_ms", e->conf->lease_ttl_s));
        if (engine_cycle_wanted(s))
            fetch_cycle_start(s);
        else
            engine_kick(e); /* a stop came meanwhile */
        return;
    case STORE_LEASE_OTHER:
    case STORE_LEASE_GONE:
        lease_wait(s, now);
        engine_kick(e);
        return;
    case STORE_LEASE_ERROR:
        break;
    }
    LOG_ERROR("cannot take the lease; skipping this cycle", LF_S("source", s->conf->name),
              LF_S("error", err));
    engine_cycle_end(s, 0);
}

/*
 * Whether s may start its cycle: its lease is ours, or could be taken now
 * (in run mode only up to this replica's fair share). Otherwise another
 * replica polls it; run mode tries again within half a TTL (so that a dead
 * holder's sources are taken over within the TTL), once mode waits up to a
 * TTL for it and then gives the source up as failed.
 *
 * 1 when s holds its lease and may start a cycle; 0 when not now: the
 * timer of s is re-armed, or Redis is asked for the lease (PHASE_LEASE)
 * and on_lease_asked() goes on.
 */
int lease_ready(source_rt_t *s, double now)
{
    engine_t *e = s->e;
    char err[256];

    /* A dry run needs no lease: it writes nothing, so there is nothing to
     * fence; it reads the snapshot as committed by whichever replica polls. */
    if (e->dry_out)
        return 1;
    if (s->lease.releasing) {
        engine_source_arm(s, ENGINE_LEASE_WAIT_S);
        return 0;
    }
    if (s->lease.held)
        return 1;
    if (!e->once && (e->leases_held >= fair_share(e) || now < e->quiet_until)) {
        lease_wait(s, now);
        return 0;
    }
    s->phase = PHASE_LEASE;
    if (store_lease_acquire_async(e->store, s->conf->name, e->token, lease_ttl_ms(e),
                                  on_lease_asked, s, err, sizeof(err)) != 0)
        on_lease_asked(s, STORE_LEASE_ERROR, err);
    return 0;
}
