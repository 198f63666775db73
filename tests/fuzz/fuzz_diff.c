/*
 * Fuzz target: diff/, a sequence of poll cycles over one index checked
 * against a model of what diff.h promises.
 *
 * Input: byte 0 sets vanish_grace (1 + b % 4). Then cycles, each a header
 * byte h and h >> 3 observations of three bytes (id, status, payload):
 *
 *   h & 3     0: finish and apply; 1: the same, then reload the index from
 *             the encoded records as a restart does (diff_record_encode,
 *             _decode, diff_index_put); 2: finish and abandon; 3: abandon
 *             unfinished
 *   h & 4     a baseline cycle
 *   id        < 0xf0: one of POOL_IDS ids; 0xf0..0xfe: the next byte is a
 *             length n, the n bytes after it the id (any bytes; too long
 *             and empty ones must fail); 0xff: the empty id
 *   status    < 0xf0: one of statuses[] (mapped, unknown, empty, too
 *             long); 0xf0..0xfe: raw bytes as for ids; 0xff: a burst of
 *             BURST observations of pool ids, each with a new status, to
 *             reach DIFF_MAX_STATUSES
 *   payload   the record's "v", so that fingerprints change
 *
 * A failed observation fails the page: the cycle is abandoned, as the
 * engine does. Checked after every cycle: the index holds exactly the model
 * (which only applied changes move), its state counts equal a recount;
 * after finish: at most one event per (session, type) in a cycle and per
 * stay in the index, event ids as diff_event_id() computes them, events
 * match their type and reason, a session's events adjacent and started
 * before completed, none in a baseline, every event's session among the
 * changes, lifecycles forward only, observed sessions stored with no miss,
 * every unobserved one counted a miss or removed at vanish_grace, stored
 * records that survive encode and decode. Open issues (fuzz.h): a cycle
 * that failed must leave no interned status behind; events carry UTF-8.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "fuzz.h"

#define SOURCE "fz"
#define POOL_IDS 48
/* Distinct ids the model tracks (the pool's first); later raw ids fall
 * back to the pool, to keep the per-input work linear in its size. */
#define MAX_TRACKED 512
#define MODEL_SLOTS (2 * MAX_TRACKED)
#define BURST 128
/* Distinct statuses one input can name: bursts are bounded by its size. */
#define STATUS_SET_CAP 4096
#define LONG_STATUS "L234567890123456789012345678901234567890123456789012345678901234"

static const struct {
    const char *raw;
    diff_state_t state;
} mapped[] = {
    {"pending", DIFF_STATE_PENDING},  {"queued", DIFF_STATE_PENDING},
    {"active", DIFF_STATE_ACTIVE},    {"ACTIVE", DIFF_STATE_ACTIVE},
    {"done", DIFF_STATE_COMPLETED},   {"finished", DIFF_STATE_COMPLETED},
    {"cancel", DIFF_STATE_CANCELLED},
};
#define NMAPPED (sizeof(mapped) / sizeof(mapped[0]))
/* The mapped ones, unknown ones, and two that must fail the page. */
static const char *const statuses[] = {"pending", "queued",   "active", "ACTIVE",
                                       "done",    "finished", "cancel", "weird",
                                       "Active",  "paused",   "",       LONG_STATUS};
#define NSTATUSES (sizeof(statuses) / sizeof(statuses[0]))

/* ---- the model: what the index must hold ---- */

typedef struct mentry {
    char *id;
    bool present;
    diff_state_t state;
    uint8_t misses;
    uint64_t fingerprint;
    char status[DIFF_STATUS_MAX + 1];
    unsigned emitted; /* event types sent since the session entered the index */
    /* The current cycle: observed, its change, its event types, its last event. */
    bool seen;
    const diff_change_t *change;
    unsigned cycle_types;
    size_t last_event;
} mentry_t;

/* A set of strings: open addressing, and the slots in use to walk it. */
typedef struct strset {
    char **slot;
    size_t *used;
    size_t count;
} strset_t;

typedef struct run {
    const uint8_t *p, *end;
    diff_index_t *ix;
    diff_status_map_t *map;
    diff_options_t opt;
    mentry_t e[MAX_TRACKED];
    size_t n;
    unsigned short by_id[MODEL_SLOTS]; /* 1 + index into e, by str_hash(id) */
    strset_t committed;                /* statuses of applied cycles: what the index may intern */
    strset_t cycle;                    /* statuses observed by the open cycle */
    unsigned burst;                    /* statuses made by bursts so far */
} run_t;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static void set_add(strset_t *set, const char *s)
{
    size_t i = (size_t)(str_hash(s) % STATUS_SET_CAP);
    while (set->slot[i] && strcmp(set->slot[i], s) != 0)
        i = (i + 1) % STATUS_SET_CAP;
    if (set->slot[i])
        return;
    FUZZ_CHECK(set->count + 1 < STATUS_SET_CAP, "status set full");
    set->slot[i] = strdup(s);
    FUZZ_CHECK(set->slot[i] != NULL, "out of memory");
    set->used[set->count++] = i;
}

static bool set_has(const strset_t *set, const char *s)
{
    size_t i = (size_t)(str_hash(s) % STATUS_SET_CAP);
    while (set->slot[i] && strcmp(set->slot[i], s) != 0)
        i = (i + 1) % STATUS_SET_CAP;
    return set->slot[i] != NULL;
}

static void set_clear(strset_t *set)
{
    for (size_t i = 0; i < set->count; i++) {
        free(set->slot[set->used[i]]);
        set->slot[set->used[i]] = NULL;
    }
    set->count = 0;
}

/* Statuses the index would hold with the open cycle's and s. */
static size_t union_count(const run_t *r, const char *s)
{
    size_t n = r->committed.count;
    for (size_t i = 0; i < r->cycle.count; i++) {
        if (!set_has(&r->committed, r->cycle.slot[r->cycle.used[i]]))
            n++;
    }
    return n + (!set_has(&r->committed, s) && !set_has(&r->cycle, s));
}

/* The slot of id in by_id: where it is, or the free one it would take. */
static size_t model_slot(const run_t *r, const char *id)
{
    size_t i = (size_t)(str_hash(id) % MODEL_SLOTS);
    while (r->by_id[i] && strcmp(r->e[r->by_id[i] - 1].id, id) != 0)
        i = (i + 1) % MODEL_SLOTS;
    return i;
}

static mentry_t *model_find(run_t *r, const char *id)
{
    size_t i = model_slot(r, id);
    return r->by_id[i] ? &r->e[r->by_id[i] - 1] : NULL;
}

static mentry_t *model_track(run_t *r, const char *id)
{
    size_t i = model_slot(r, id);
    if (r->by_id[i])
        return &r->e[r->by_id[i] - 1];
    FUZZ_CHECK(r->n < MAX_TRACKED, "model full");
    mentry_t *m = &r->e[r->n++];
    memset(m, 0, sizeof(*m));
    m->id = strdup(id);
    FUZZ_CHECK(m->id != NULL, "out of memory");
    r->by_id[i] = (unsigned short)r->n;
    return m;
}

/* The index holds the model: every tracked id as the model has it, nothing else. */
static void check_index(const run_t *r, const char *when)
{
    size_t counts[DIFF_STATE_COUNT], recount[DIFF_STATE_COUNT] = {0}, present = 0;
    for (size_t i = 0; i < r->n; i++) {
        const mentry_t *m = &r->e[i];
        diff_record_t rec;
        int got = diff_index_get(r->ix, m->id, &rec);
        FUZZ_CHECK((got == 0) == m->present, "%s: session \"%s\" is %s the index", when, m->id,
                   m->present ? "missing from" : "unexpectedly in");
        if (!m->present)
            continue;
        FUZZ_CHECK(rec.state == m->state && rec.misses == m->misses &&
                       rec.fingerprint == m->fingerprint && strcmp(rec.status, m->status) == 0,
                   "%s: session \"%s\" holds state %d misses %u status \"%s\", the changes said "
                   "%d %u \"%s\"",
                   when, m->id, rec.state, rec.misses, rec.status, m->state, m->misses, m->status);
        recount[rec.state]++;
        present++;
    }
    FUZZ_CHECK(diff_index_size(r->ix) == present, "%s: index size %zu, model %zu", when,
               diff_index_size(r->ix), present);
    diff_index_states(r->ix, counts);
    for (int s = 0; s < DIFF_STATE_COUNT; s++)
        FUZZ_CHECK(counts[s] == recount[s], "%s: %zu sessions in state %d, a recount finds %zu",
                   when, counts[s], s, recount[s]);
}

/* ---- the input ---- */

static int next_byte(run_t *r, uint8_t *b)
{
    if (r->p >= r->end)
        return -1;
    *b = *r->p++;
    return 0;
}

/*
 * A length-prefixed string of the input into buf (cut at a NUL). Length
 * bytes up to 0xbf are the length, later ones step by 4 from 256, so that
 * ids over DIFF_ID_MAX can be written.
 */
static void raw_string(run_t *r, char *buf, size_t size)
{
    uint8_t b = 0;
    next_byte(r, &b);
    size_t n = b < 0xc0 ? b : 256u + (b - 0xc0u) * 4u;
    size_t len = (size_t)(r->end - r->p) < n ? (size_t)(r->end - r->p) : n;
    if (len >= size)
        len = size - 1;
    memcpy(buf, r->p, len);
    buf[len] = '\0';
    r->p += len;
}

/* ---- one cycle ---- */

/* The record's text: what the diff sees of it is its bytes (the diff does
 * not parse it), so equal inputs give equal text and payload changes it. */
static size_t make_record(const char *id, const char *status, uint8_t payload, char *out,
                          size_t size)
{
    int n =
        snprintf(out, size, "{\"id\":\"%s\",\"status\":\"%s\",\"v\":%u}", id, status, payload % 4u);
    FUZZ_CHECK(n > 0 && (size_t)n < size, "record does not fit");
    return (size_t)n;
}

/* One observation; -1 when it failed the page. */
static int observe(run_t *r, diff_cycle_t *cy, const char *id, const char *status, uint8_t payload,
                   size_t *observed)
{
    char err[512] = "", rec[4 * (DIFF_ID_MAX + DIFF_STATUS_MAX)];
    size_t len = make_record(id, status, payload, rec, sizeof(rec));
    size_t idlen = strlen(id), slen = strlen(status);
    int rc = diff_cycle_observe(cy, id, idlen, status, slen, rec, len, err, sizeof(err));
    /* the cycle keeps a copy, never the caller's bytes: overwritten with
     * NULs, which no record holds ('#' was a marker ids may hold too) */
    memset(rec, '\0', len);
    if (idlen == 0 || idlen > DIFF_ID_MAX || slen == 0 || slen > DIFF_STATUS_MAX) {
        FUZZ_CHECK(rc == -1 && err[0], "observe accepted id of %zu bytes, status of %zu", idlen,
                   slen);
        return -1;
    }
    /* JSON is UTF-8: an id or status that is not fails the page. */
    if (!fuzz_utf8_valid(id, idlen) || !fuzz_utf8_valid(status, slen)) {
        FUZZ_CHECK(rc == -1 && strstr(err, "not UTF-8") != NULL,
                   "observe accepted an id or status that is not UTF-8: %s", err);
        return -1;
    }
    if (rc != 0) {
        FUZZ_CHECK(err[0] != '\0', "observe failed without a reason");
        FUZZ_CHECK(strstr(err, "distinct raw statuses") != NULL, "observe failed: %s", err);
        FUZZ_CHECK(union_count(r, status) > DIFF_MAX_STATUSES,
                   "observe refused a status with %zu distinct statuses committed and "
                   "observed: statuses of failed cycles stayed interned (issue 10, item 4)",
                   union_count(r, status));
        return -1;
    }
    (*observed)++;
    set_add(&r->cycle, status);
    model_track(r, id)->seen = true;
    return 0;
}

static bool terminal(diff_state_t s)
{
    return s == DIFF_STATE_COMPLETED || s == DIFF_STATE_CANCELLED;
}

static diff_state_t type_state(diff_event_type_t t)
{
    return t == DIFF_EV_STARTED     ? DIFF_STATE_ACTIVE
           : t == DIFF_EV_COMPLETED ? DIFF_STATE_COMPLETED
                                    : DIFF_STATE_CANCELLED;
}

/* Every change of a finished cycle (malloc'd; its strings live until apply). */
static size_t read_changes(const diff_cycle_t *cy, diff_change_t **out)
{
    size_t n = diff_cycle_nchanges(cy);
    diff_change_t *ch = calloc(n + 1, sizeof(*ch));
    FUZZ_CHECK(ch != NULL, "out of memory");
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(diff_cycle_change(cy, i, &ch[i]) == 0, "change %zu cannot be read", i);
    FUZZ_CHECK(diff_cycle_change(cy, n, &ch[n]) == -1, "change %zu past the end", n);
    *out = ch;
    return n;
}

/* Every event (malloc'd). A record stays readable only until the next
 * event is read: here only whether there is one counts, and its bytes. */
static size_t read_events(diff_cycle_t *cy, diff_event_t **out)
{
    size_t n = diff_cycle_nevents(cy);
    diff_event_t *ev = calloc(n + 1, sizeof(*ev));
    FUZZ_CHECK(ev != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(diff_cycle_event(cy, i, &ev[i]) == 0, "event %zu cannot be read", i);
        FUZZ_CHECK(ev[i].type == diff_cycle_event_type(cy, i), "event %zu: two types", i);
        if (ev[i].record != NULL) {
            /* the record of the observation the event reports (record_len
             * bytes, not a string: its block holds the next records) */
            static const char key[] = "\"status\":\"";
            bool status = false;
            for (size_t k = 0; !status && k + sizeof(key) - 1 <= ev[i].record_len; k++)
                status = memcmp(ev[i].record + k, key, sizeof(key) - 1) == 0;
            FUZZ_CHECK(status && ev[i].record_len > 0 &&
                           memchr(ev[i].record, '\0', ev[i].record_len) == NULL,
                       "event %zu: record is not what was observed", i);
        }
    }
    *out = ev;
    return n;
}

/* After check_changes(), which notes each session's change. */
static void check_events(run_t *r, const diff_event_t *ev, size_t n)
{
    FUZZ_CHECK(!r->opt.baseline || n == 0, "a baseline cycle produced %zu events", n);
    for (size_t i = 0; i < n; i++) {
        const diff_event_t *e = &ev[i];
        char id[DIFF_EVENT_ID_LEN];
        diff_event_id(SOURCE, e->session_id, e->type, id);
        FUZZ_CHECK(strcmp(id, e->id) == 0 && strspn(id, "0123456789abcdef") == 32,
                   "event %zu: id %s, diff_event_id says %s", i, e->id, id);
        FUZZ_CHECK(e->state == type_state(e->type), "event %zu: type %d enters state %d", i,
                   e->type, e->state);
        FUZZ_CHECK((e->reason == DIFF_REASON_VANISHED) == (e->status == NULL) &&
                       (e->status == NULL) == (e->record == NULL) &&
                       (e->reason != DIFF_REASON_VANISHED || e->type == DIFF_EV_CANCELLED),
                   "event %zu: reason %d with status %p and record %p", i, e->reason,
                   (const void *)e->status, (const void *)e->record);
        mentry_t *m = model_find(r, e->session_id);
        FUZZ_CHECK(m != NULL && m->change != NULL, "event %zu: session \"%s\" has no change", i,
                   e->session_id);
        if (m->cycle_types) {
            FUZZ_CHECK(!(m->cycle_types & (1u << e->type)), "two events of type %d for \"%s\"",
                       e->type, e->session_id);
            FUZZ_CHECK(m->last_event == i - 1, "events of \"%s\" are not adjacent", e->session_id);
            FUZZ_CHECK(
                !(e->type == DIFF_EV_STARTED && (m->cycle_types & (1u << DIFF_EV_COMPLETED))),
                "completed before started for \"%s\"", e->session_id);
        }
        m->cycle_types |= 1u << e->type;
        m->last_event = i;
        FUZZ_CHECK(fuzz_utf8_valid(e->session_id, strlen(e->session_id)),
                   "event %zu: session id is not UTF-8 (issue 10, item 5)", i);
        FUZZ_CHECK(e->status == NULL || fuzz_utf8_valid(e->status, strlen(e->status)),
                   "event %zu: status is not UTF-8 (issue 10, item 5)", i);
    }
}

static void check_changes(run_t *r, const diff_change_t *ch, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const diff_change_t *c = &ch[i];
        mentry_t *m = model_find(r, c->session_id);
        FUZZ_CHECK(m != NULL, "change for \"%s\", never observed", c->session_id);
        FUZZ_CHECK(m->change == NULL, "two changes for \"%s\"", c->session_id);
        m->change = c;
        if (c->removed) {
            FUZZ_CHECK(m->present && !m->seen, "removal of \"%s\", %s", c->session_id,
                       m->present ? "which was observed" : "which is not stored");
            FUZZ_CHECK(m->misses + 1u >= r->opt.vanish_grace,
                       "\"%s\" removed after %u misses, vanish_grace %u", c->session_id,
                       m->misses + 1u, r->opt.vanish_grace);
            continue;
        }
        char buf[DIFF_RECORD_MAX + 1], status[DIFF_STATUS_MAX + 1];
        diff_record_t back;
        int len = diff_record_encode(&c->rec, buf, sizeof(buf));
        FUZZ_CHECK(
            len > 0 && diff_record_decode(buf, (size_t)len, &back, status, sizeof(status)) == 0 &&
                back.state == c->rec.state && back.misses == c->rec.misses &&
                back.fingerprint == c->rec.fingerprint && strcmp(back.status, c->rec.status) == 0,
            "the record of \"%s\" does not survive encode and decode", c->session_id);
        FUZZ_CHECK(m->present || m->seen, "change for \"%s\", neither stored nor observed",
                   c->session_id);
        if (m->seen) {
            FUZZ_CHECK(c->rec.misses == 0, "\"%s\" observed, stored with %u misses", c->session_id,
                       c->rec.misses);
        } else {
            FUZZ_CHECK(c->rec.misses == m->misses + 1u && c->rec.state == m->state &&
                           m->misses + 1u < r->opt.vanish_grace,
                       "\"%s\" unobserved: misses %u -> %u, state %d -> %d", c->session_id,
                       m->misses, c->rec.misses, m->state, c->rec.state);
        }
        if (m->present)
            FUZZ_CHECK(terminal(m->state) ? c->rec.state == m->state : c->rec.state >= m->state,
                       "\"%s\" moves back from state %d to %d", c->session_id, m->state,
                       c->rec.state);
    }
    /* Every stored session that was not observed is counted a miss. */
    for (size_t i = 0; i < r->n; i++) {
        if (r->e[i].present && !r->e[i].seen)
            FUZZ_CHECK(r->e[i].change != NULL, "\"%s\" vanished without a change", r->e[i].id);
        if (!r->e[i].present && r->e[i].seen)
            FUZZ_CHECK(r->e[i].change != NULL, "new session \"%s\" is not stored", r->e[i].id);
    }
}

/* Moves the model as apply will move the index (called before apply: the
 * strings of removed sessions go with it). */
static void apply_model(run_t *r, const diff_change_t *ch, size_t n, const diff_event_t *ev,
                        size_t nev)
{
    for (size_t i = 0; i < nev; i++) {
        mentry_t *m = model_find(r, ev[i].session_id);
        FUZZ_CHECK(!(m->emitted & (1u << ev[i].type)),
                   "a second %s for \"%s\" while it stayed in the index",
                   diff_event_type_name(ev[i].type), m->id);
        m->emitted |= 1u << ev[i].type;
    }
    for (size_t i = 0; i < n; i++) {
        mentry_t *m = model_find(r, ch[i].session_id);
        if (ch[i].removed) {
            m->present = false;
            m->emitted = 0;
            continue;
        }
        m->present = true;
        m->state = ch[i].rec.state;
        m->misses = ch[i].rec.misses;
        m->fingerprint = ch[i].rec.fingerprint;
        snprintf(m->status, sizeof(m->status), "%s", ch[i].rec.status);
    }
    for (size_t i = 0; i < r->cycle.count; i++)
        set_add(&r->committed, r->cycle.slot[r->cycle.used[i]]);
}

/* A restart: the index rebuilt from the records as the store keeps them. */
static void reload(run_t *r)
{
    diff_index_clear(r->ix);
    for (size_t i = 0; i < r->n; i++) {
        const mentry_t *m = &r->e[i];
        char buf[DIFF_RECORD_MAX + 1], status[DIFF_STATUS_MAX + 1];
        diff_record_t rec = {m->state, m->misses, m->fingerprint, m->status};
        if (!m->present)
            continue;
        int len = diff_record_encode(&rec, buf, sizeof(buf));
        FUZZ_CHECK(len > 0 &&
                       diff_record_decode(buf, (size_t)len, &rec, status, sizeof(status)) == 0 &&
                       diff_index_put(r->ix, m->id, &rec) == 0,
                   "\"%s\" cannot be reloaded", m->id);
    }
}

/* Runs one cycle; -1 at the end of the input. */
static int run_cycle(run_t *r)
{
    uint8_t h;
    if (next_byte(r, &h) != 0)
        return -1;
    int mode = h & 3, failed = 0;
    size_t nobs = h >> 3, observed = 0;
    r->opt.baseline = (h & 4) != 0;
    for (size_t i = 0; i < r->n; i++) {
        r->e[i].seen = false;
        r->e[i].change = NULL;
        r->e[i].cycle_types = 0;
    }
    set_clear(&r->cycle);
    diff_cycle_t *cy = diff_cycle_begin(r->ix, &r->opt);
    FUZZ_CHECK(cy != NULL, "diff_cycle_begin failed");

    for (size_t k = 0; k < nobs && !failed; k++) {
        uint8_t ib, sb, pb = 0;
        char id[2 * DIFF_ID_MAX], status[2 * DIFF_STATUS_MAX];
        if (next_byte(r, &ib) != 0 || next_byte(r, &sb) != 0)
            break;
        if (ib < 0xf0 || (r->n >= MAX_TRACKED && ib != 0xff))
            snprintf(id, sizeof(id), "s%u", ib % POOL_IDS);
        else if (ib == 0xff)
            id[0] = '\0';
        else
            raw_string(r, id, sizeof(id));
        if (sb < 0xf0)
            snprintf(status, sizeof(status), "%s", statuses[sb % NSTATUSES]);
        else if (sb < 0xff)
            raw_string(r, status, sizeof(status));
        next_byte(r, &pb);
        if (sb == 0xff) {
            for (unsigned b = 0; b < BURST && !failed; b++) {
                snprintf(id, sizeof(id), "s%u", (b + pb) % POOL_IDS);
                snprintf(status, sizeof(status), "u%u", r->burst++);
                failed = observe(r, cy, id, status, pb, &observed) != 0;
            }
        } else {
            failed = observe(r, cy, id, status, pb, &observed) != 0;
        }
    }
    FUZZ_CHECK(diff_cycle_observed(cy) == observed, "%zu observed, diff counts %zu", observed,
               diff_cycle_observed(cy));
    diff_change_t *ch = NULL;
    diff_event_t *ev = NULL;
    if (!failed && mode != 3) {
        FUZZ_CHECK(diff_cycle_finish(cy) == 0, "diff_cycle_finish failed");
        size_t nch = read_changes(cy, &ch), nev = read_events(cy, &ev);
        check_changes(r, ch, nch);
        check_events(r, ev, nev);
        if (mode <= 1) {
            apply_model(r, ch, nch, ev, nev);
            diff_cycle_apply(cy);
            FUZZ_CHECK(diff_index_size(r->ix) == diff_cycle_sessions_after(cy),
                       "apply left %zu sessions, finish said %zu", diff_index_size(r->ix),
                       diff_cycle_sessions_after(cy));
            FUZZ_CHECK(diff_cycle_event(cy, 0, &(diff_event_t){0}) == -1,
                       "an event read after apply");
        }
    }
    free(ch);
    free(ev);
    diff_cycle_free(cy);
    check_index(r, mode <= 1 && !failed ? "after apply" : "after an abandoned cycle");
    if (mode == 1 && !failed) {
        reload(r);
        check_index(r, "after a reload");
    }
    return 0;
}

/*
 * The model's tables, allocated once and emptied after each input: fresh
 * ones per input cost more than the cycles (ASan hands out new pages while
 * freed memory sits in its quarantine). They stay reachable: no leak.
 */
static run_t *shared_run(void)
{
    static run_t *r;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        FUZZ_CHECK(r != NULL, "out of memory");
        r->committed.slot = calloc(STATUS_SET_CAP, sizeof(char *));
        r->committed.used = calloc(STATUS_SET_CAP, sizeof(size_t));
        r->cycle.slot = calloc(STATUS_SET_CAP, sizeof(char *));
        r->cycle.used = calloc(STATUS_SET_CAP, sizeof(size_t));
        FUZZ_CHECK(r->committed.slot && r->committed.used && r->cycle.slot && r->cycle.used,
                   "out of memory");
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    run_t *r = shared_run();
    r->ix = diff_index_new();
    r->map = diff_status_map_new();
    FUZZ_CHECK(r->ix && r->map, "out of memory");
    for (unsigned i = 0; i < POOL_IDS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%u", i);
        model_track(r, id);
    }
    for (size_t i = 0; i < NMAPPED; i++)
        FUZZ_CHECK(diff_status_map_set(r->map, mapped[i].raw, mapped[i].state) == 0, "status map");
    r->opt =
        (diff_options_t){.source = SOURCE, .vanish_grace = 1u + data[0] % 4u, .status_map = r->map};
    r->p = data + 1;
    r->end = data + size;
    r->burst = 0;
    while (run_cycle(r) == 0)
        ;
    for (size_t i = 0; i < r->n; i++)
        free(r->e[i].id);
    memset(r->by_id, 0, sizeof(r->by_id));
    r->n = 0;
    set_clear(&r->committed);
    set_clear(&r->cycle);
    diff_index_free(r->ix);
    diff_status_map_free(r->map);
    return 0;
}
