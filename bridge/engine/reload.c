/*
 * engine, reload: SIGHUP re-reads the configuration file and applies what
 * changed without a restart (CONTRACT §2).
 *
 * The new file is validated as at boot (conf_load(): every key, every
 * sink's option table, every provider's keys); an invalid one, or one that
 * changes a setting the running process cannot change, is refused with its
 * problems logged and the running configuration stays. A valid one is
 * compared with the running one by name, block by block (conf_source_t's
 * and conf_sink_t's digests):
 *
 * - Sources: an unchanged one keeps its runtime (index, lease, cycle
 *   count, schedule) and only moves to the new configuration's copy of its
 *   block when idle. A changed one does the same and takes the new
 *   settings from its next cycle on; the cycle in flight finishes with the
 *   old ones. A removed one finishes its cycle in flight (or abandons it,
 *   nothing committed, as a stop would), then gives its lease back, drops
 *   its metric series and is freed. An added one starts as at boot.
 * - Sinks: an unchanged one keeps running. A changed or removed one is
 *   stopped (flushed within ENGINE_SINK_DRAIN_MS, then exited) only when
 *   no cycle has tickets on it: while the reload waits, no source starts a
 *   cycle, and the cycles in flight finish; then the sinks are stopped and
 *   started again from the new configuration, outside the loop's callbacks
 *   (run_loop() calls reload_swap(), since a flush may run the loop), and
 *   the cycles resume. An outbox sink's events stay in its Redis outbox,
 *   which the new instance drains. Waiting for every source rather than
 *   those that route to the sink keeps each cycle's set of sinks fixed from
 *   its start to its commit; the wait lasts one cycle at most.
 *
 * Who owns what: each configuration is an engine_conf_t (internal.h) that
 * sources, sinks and the engine reference while they point into it; a
 * reload's configuration is freed by its last reference (the caller's first
 * configuration never is: it outlives the engine).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "internal.h"

/*
 * How long a sink a reload changes or removes may take to flush what it
 * holds. No cycle has tickets on it by then; an outbox sink's attempts in
 * flight that do not settle stay in its outbox and are claimed again.
 */
#define ENGINE_SINK_DRAIN_MS 10000
/* Bytes of the "configuration reloaded" line's lists of names. */
#define RELOAD_SUMMARY_MAX 2048

/* ---- configurations and their references ---- */

/* Registers conf; owned: freed with its last reference. NULL on ENOMEM (conf untouched). */
engine_conf_t *engine_conf_adopt(engine_t *e, conf_t *conf, int owned)
{
    engine_conf_t *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    g->conf = conf;
    g->owned = owned;
    g->next = e->gens;
    e->gens = g;
    return g;
}

engine_conf_t *engine_conf_ref(engine_conf_t *g)
{
    if (g)
        g->refs++;
    return g;
}

/* Drops a reference to g (NULL accepted); the last frees a reload's configuration. */
void engine_conf_unref(engine_t *e, engine_conf_t *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    for (engine_conf_t **at = &e->gens; *at; at = &(*at)->next) {
        if (*at == g) {
            *at = g->next;
            break;
        }
    }
    if (g->owned)
        conf_free(g->conf);
    free(g);
}

/* At engine_free(), after every source and sink: what a reload left. */
void reload_free(engine_t *e)
{
    while (e->gens) {
        engine_conf_t *g = e->gens;
        e->gens = g->next;
        if (g->owned)
            conf_free(g->conf);
        free(g);
    }
    free(e->reload.summary);
    free(e->reload.path);
}

int engine_reload_on_hup(engine_t *e, const char *path)
{
    free(e->reload.path);
    e->reload.path = strdup(path);
    return e->reload.path ? 0 : -1;
}

/* ---- the new file ---- */

static void reload_count(engine_t *e, const char *result)
{
    metric_add(ENGINE_METRIC(e, config_reloads), LABELS(result), 1);
}

/*
 * The first setting the running process cannot take from nc, as its JSON
 * path, or NULL. The store, the admin listener and the member beat are
 * built on them at start: redis.url and redis.prefix name where every
 * snapshot, lease and outbox is, admin.listen is a bound socket, and the
 * leases and membership this replica holds were written with lease_ttl_s.
 * shutdown_grace_s is read when a stop comes: it may change.
 */
static const char *fixed_key_changed(const conf_t *old, const conf_t *nc)
{
    if (strcmp(old->redis_url, nc->redis_url) != 0)
        return "redis.url";
    if (strcmp(old->redis_prefix, nc->redis_prefix) != 0)
        return "redis.prefix";
    if (strcmp(old->admin_listen, nc->admin_listen) != 0)
        return "admin.listen";
    if (old->lease_ttl_s != nc->lease_ttl_s)
        return "lease_ttl_s";
    return NULL;
}

/* Appends name to one of the summary's lists ("a,b"), cut at RELOAD_SUMMARY_MAX. */
static void list_add(char *list, const char *name)
{
    size_t n = strlen(list);

    if (n + strlen(name) + 5 >= RELOAD_SUMMARY_MAX / 8) {
        if (n + 4 < RELOAD_SUMMARY_MAX / 8 && (n < 3 || strcmp(list + n - 3, "...") != 0))
            snprintf(list + n, RELOAD_SUMMARY_MAX / 8 - n, "%s...", n ? "," : "");
        return;
    }
    snprintf(list + n, RELOAD_SUMMARY_MAX / 8 - n, "%s%s", n ? "," : "", name);
}

static const conf_sink_t *conf_find_sink(const conf_t *conf, const char *name)
{
    for (size_t k = 0; k < conf->nsinks; k++) {
        if (strcmp(conf->sinks[k].name, name) == 0)
            return &conf->sinks[k];
    }
    return NULL;
}

enum { L_SRC_ADD, L_SRC_CHANGE, L_SRC_REMOVE, L_SINK_ADD, L_SINK_CHANGE, L_SINK_REMOVE, L_COUNT };

/*
 * Compares nc (in g) with what runs and marks what changes: sources get
 * their next block (or are marked removed), sources nc adds are created,
 * sinks that change or go are marked retiring. lists receive the names.
 * Returns -1 when out of memory for a new source (nothing is undone: the
 * sources created so far run with g).
 */
static int reload_plan(engine_t *e, engine_conf_t *g, char lists[L_COUNT][RELOAD_SUMMARY_MAX / 8])
{
    const conf_t *nc = g->conf;
    double now = clock_mono_s();
    size_t old_n = e->nsources;

    for (size_t k = 0; k < e->nsinks; k++) {
        engine_sink_t *sk = e->sinks[k];
        const conf_sink_t *nk = conf_find_sink(nc, sk->conf->name);
        if (nk == NULL || memcmp(nk->digest, sk->conf->digest, CONF_DIGEST_LEN) != 0) {
            sk->retiring = 1;
            e->reload.sinks_wait = 1;
            list_add(lists[nk ? L_SINK_CHANGE : L_SINK_REMOVE], sk->conf->name);
        }
    }
    for (size_t k = 0; k < nc->nsinks; k++) {
        if (engine_sink_find(e, nc->sinks[k].name) == NULL) {
            e->reload.sinks_wait = 1;
            list_add(lists[L_SINK_ADD], nc->sinks[k].name);
        }
    }
    for (size_t i = 0; i < old_n; i++) {
        source_rt_t *s = e->sources[i];
        const conf_source_t *ns = conf_find_source(nc, s->conf->name);
        if (ns == NULL) {
            s->next.removed = 1;
            list_add(lists[L_SRC_REMOVE], s->conf->name);
            continue;
        }
        s->next.conf = ns;
        s->next.gen = engine_conf_ref(g);
        s->next.changed = memcmp(ns->digest, s->conf->digest, CONF_DIGEST_LEN) != 0;
        if (s->next.changed)
            list_add(lists[L_SRC_CHANGE], ns->name);
    }
    for (size_t i = 0; i < nc->nsources; i++) {
        const conf_source_t *ns = &nc->sources[i];
        int known = 0;
        for (size_t j = 0; j < old_n && !known; j++)
            known = strcmp(e->sources[j]->conf->name, ns->name) == 0;
        if (known)
            continue;
        source_rt_t *s = engine_source_add(e, ns, g, now);
        if (s == NULL)
            return -1;
        list_add(lists[L_SRC_ADD], ns->name);
        if (e->observed)
            observe_source_series(s);
        engine_source_arm(s, s->next_due - now);
    }
    return 0;
}

/* Logs every problem of a refused file, as `check` lists them. */
static void log_problems(const char *path, const sink_errors_t *errs)
{
    size_t shown = errs->count < SINK_ERRORS_MAX ? errs->count : SINK_ERRORS_MAX;

    for (size_t i = 0; i < shown; i++)
        LOG_ERROR("configuration error", LF_S("file", path), LF_S("error", errs->msg[i]));
}

/* A SIGHUP in run mode: reads, validates and compares the file, then applies it. */
static void reload_begin(engine_t *e)
{
    const char *path = e->reload.path;
    char lists[L_COUNT][RELOAD_SUMMARY_MAX / 8] = {{0}};

    if (e->halt_at) {
        LOG_INFO("SIGHUP while stopping: the configuration is not reloaded");
        return;
    }
    if (e->reload.gen) {
        e->reload.again = 1;
        LOG_INFO("SIGHUP while a reload is applied: reloading again once it is done");
        return;
    }
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *nc = errs ? conf_load(path, errs) : NULL;
    if (nc == NULL) {
        if (errs)
            log_problems(path, errs);
        LOG_ERROR("configuration reload refused: the file is invalid; the running configuration "
                  "stays",
                  LF_S("file", path), LF_I("problems", errs ? errs->count : 0));
        free(errs);
        reload_count(e, "invalid");
        return;
    }
    free(errs);
    const char *key = fixed_key_changed(e->conf, nc);
    if (key) {
        LOG_ERROR("configuration reload refused: this setting cannot change while running; "
                  "restart to change it. The running configuration stays",
                  LF_S("file", path), LF_S("key", key));
        conf_free(nc);
        reload_count(e, "invalid");
        return;
    }
    engine_conf_t *g = engine_conf_adopt(e, nc, 1);
    if (g == NULL) {
        conf_free(nc);
        LOG_ERROR("configuration reload failed: out of memory; the running configuration stays",
                  LF_S("file", path));
        return;
    }
    /* From here on the new configuration is the engine's (its fixed keys are the old ones). */
    engine_conf_t *old = e->gen;
    e->gen = engine_conf_ref(g);
    e->conf = nc;
    engine_conf_unref(e, old);
    e->reload.gen = engine_conf_ref(g);
    if (reload_plan(e, g, lists) != 0)
        LOG_ERROR("out of memory adding the sources of the new configuration; those missing are "
                  "added by the next reload");
    free(e->reload.summary);
    e->reload.summary = malloc(RELOAD_SUMMARY_MAX);
    if (e->reload.summary) {
        static const char *const what[L_COUNT] = {"sources_added",   "sources_changed",
                                                  "sources_removed", "sinks_added",
                                                  "sinks_changed",   "sinks_removed"};
        size_t n = 0;
        for (int i = 0; i < L_COUNT; i++)
            n += (size_t)snprintf(e->reload.summary + n, RELOAD_SUMMARY_MAX - n, "%s%s=%s",
                                  i ? " " : "", what[i], lists[i][0] ? lists[i] : "-");
    }
    reload_settle(e);
}

void reload_on_signal(void *opaque)
{
    engine_t *e = opaque;

    if (e->closing)
        return;
    if (e->reload.path == NULL) {
        LOG_INFO("SIGHUP ignored: once reads its configuration once");
        return;
    }
    reload_begin(e);
}

void engine_reload_request(engine_t *e)
{
    /* The loop may not run yet: on_settle() starts it in the loop's first
     * turn (reload_settle() may stop the loop, which only a running loop
     * can be asked). */
    e->reload.requested = 1;
    engine_kick(e);
}

/* ---- applying it ---- */

/* store_lease_release_async()'s answer for a source a reload removed. */
static void on_removed_released(void *opaque, int rc, const char *err)
{
    char *name = opaque;

    if (rc != 0)
        LOG_WARN("cannot release the lease of a removed source; it expires by itself",
                 LF_S("source", name), LF_S("error", err));
    free(name);
}

/* A removed source, idle: its lease given back, its series dropped, freed. */
static void source_retire(engine_t *e, size_t i)
{
    source_rt_t *s = e->sources[i];
    char err[256];

    if (s->lease.held) {
        char *name = strdup(s->conf->name);
        if (name == NULL ||
            store_lease_release_async(e->store, s->conf->name, e->token, on_removed_released, name,
                                      err, sizeof(err)) != 0) {
            LOG_WARN("cannot release the lease of a removed source; it expires by itself",
                     LF_S("source", s->conf->name), LF_S("error", name ? err : "out of memory"));
            free(name);
        }
        s->lease.held = 0;
        e->leases_held--;
    }
    if (e->observed)
        bridge_metrics_forget(e->obs.metrics, "source", s->conf->name);
    memmove(&e->sources[i], &e->sources[i + 1], (e->nsources - i - 1) * sizeof(*e->sources));
    e->nsources--;
    engine_source_free(s);
}

/* An idle source moves to its block of the new configuration. */
static void source_move(source_rt_t *s)
{
    const conf_source_t *old = s->conf;
    double now = clock_mono_s();

    s->conf = s->next.conf;
    engine_conf_unref(s->e, s->gen);
    s->gen = s->next.gen;
    s->next.conf = NULL;
    s->next.gen = NULL;
    if (!s->next.changed)
        return;
    s->next.changed = 0;
    if (old->timeout_s != s->conf->timeout_s && engine_source_http(s) != 0)
        LOG_WARN("out of memory applying the new timeout_s; the old one stays",
                 LF_S("source", s->conf->name));
    /* A shorter interval applies from now, a longer one from the next cycle. */
    if (s->conf->interval_s < old->interval_s && s->next_due > now + s->conf->interval_s) {
        s->next_due = now + s->conf->interval_s;
        if (!s->e->reload.sinks_wait)
            engine_source_arm(s, s->conf->interval_s);
    }
}

/* Whether s is between cycles with nothing of Redis's on its way to it. */
static int source_idle(const source_rt_t *s)
{
    return s->phase == PHASE_IDLE && !s->lease.renewing && !s->lease.releasing;
}

/* Every source idle and nothing pending: the reload is done. */
static void reload_done(engine_t *e)
{
    LOG_INFO("configuration reloaded", LF_S("file", e->reload.path),
             LF_S("changes", e->reload.summary ? e->reload.summary : "(out of memory)"),
             LF_I("sources", e->nsources), LF_I("sinks", e->nsinks));
    reload_count(e, "ok");
    metric_set(ENGINE_METRIC(e, config_reload_stamp), NULL, (double)clock_unix_ms() / 1000.0);
    engine_conf_unref(e, e->reload.gen);
    e->reload.gen = NULL;
    if (e->reload.again) {
        e->reload.again = 0;
        engine_reload_request(e); /* reload_swap() runs outside the loop */
    }
}

/*
 * After anything that may have made a source idle (on_settle()): applies
 * what waited for it; once every source is idle and sinks change, has the
 * loop stopped so that run_loop() swaps them.
 */
void reload_settle(engine_t *e)
{
    int all_idle = 1;

    for (size_t i = 0; i < e->nsources;) {
        source_rt_t *s = e->sources[i];
        if (!source_idle(s)) {
            all_idle = 0;
            i++;
        } else if (s->next.removed) {
            source_retire(e, i); /* i is the next one now */
        } else {
            if (s->next.conf)
                source_move(s);
            i++;
        }
    }
    if (!all_idle)
        return;
    if (e->reload.sinks_wait) {
        e->reload.swap_now = 1;
        loop_stop(e->loop);
        return;
    }
    reload_done(e);
}

/*
 * run_loop(), between two runs of the loop, every source idle and none
 * started (sinks_wait): stops the retiring sinks, starts those of the new
 * configuration that do not run, and lets the cycles go on.
 */
void reload_swap(engine_t *e)
{
    const conf_t *nc = e->conf;
    char err[512];
    double now = clock_mono_s();

    e->reload.swap_now = 0;
    for (size_t k = 0; k < e->nsinks;) {
        engine_sink_t *sk = e->sinks[k];
        if (!sk->retiring) {
            k++;
            continue;
        }
        memmove(&e->sinks[k], &e->sinks[k + 1], (e->nsinks - k - 1) * sizeof(*e->sinks));
        e->nsinks--;
        if (e->observed && conf_find_sink(nc, sk->conf->name) == NULL)
            bridge_metrics_forget(e->obs.metrics, "sink", sk->conf->name);
        engine_sink_stop(sk, sink_deadline_in(ENGINE_SINK_DRAIN_MS));
        engine_sink_t **grown =
            engine_sink_busy(sk)
                ? array_grow(e->retired, &e->capretired, e->nretired + 1, sizeof(*e->retired), 4)
                : NULL;
        if (grown != NULL) {
            e->retired = grown;
            e->retired[e->nretired++] = sk;
        } else {
            /* Nothing waits (or no memory to wait with: its answers then
             * find a closed outbox named by a freed sink, so wait here). */
            while (engine_sink_busy(sk) && e->loop)
                loop_run_for(e->loop, 50);
            engine_sink_free(sk);
        }
    }
    observe_unready_sink(e, NULL); /* the next check says again */
    for (size_t k = 0; k < nc->nsinks; k++) {
        if (engine_sink_find(e, nc->sinks[k].name))
            continue;
        if (engine_sink_start(e, &nc->sinks[k], e->gen, err, sizeof(err)) != 0) {
            /* Its events could be neither delivered nor committed: stop
             * rather than run without it (the next start says the same). */
            LOG_ERROR("a sink of the reloaded configuration cannot start; stopping",
                      LF_S("error", err));
            e->fatal = 1;
            engine_kick(e);
            return;
        }
        if (e->observed)
            observe_sink_series(e->sinks[e->nsinks - 1]);
    }
    engine_sinks_arm(e);
    e->reload.sinks_wait = 0;
    for (size_t i = 0; i < e->nsources; i++)
        engine_source_arm(e->sources[i], e->sources[i]->next_due - now);
    reload_done(e);
}
