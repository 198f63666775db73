/*
 * diff: the lifecycle rules and the poll cycle that applies them. See
 * diff.h for the contract.
 *
 * The rules come first and read on their own, in canonical states only:
 * what one observation of a session does to what is stored
 * (plan_observation), and what a complete poll without it does
 * (plan_absence). The cycle below feeds them, and is laid out for 100k sessions per
 * source:
 * - "seen in this cycle" is a stamp written into the session's entry:
 *   every cycle reserves a range of a per-index counter at its begin, and
 *   an observation takes the next value. The stamp doubles as the first
 *   observation order, or names the session's note in the cycle, and an
 *   abandoned cycle's stamps are simply older than the next cycle's, so no
 *   cleanup is needed;
 * - a cycle notes only sessions that change (new, different fields, misses
 *   to reset, vanishing), in one array of 40-byte notes, so a poll that
 *   changes nothing allocates nothing per session; a new session's entry is
 *   built once, at its first sighting, and moved into the index by apply;
 * - the records events carry wait compressed in the cycle's record store,
 *   and events are 8-byte references to notes: a first cycle that emits for
 *   every session holds ~130 bytes per session beside the index, not a
 *   parsed copy of each record.
 *
 * The other files of diff/, each with its own job:
 * - index.c, index.h: the stored sessions (diff_index_t), entries of 16
 *   bytes plus the id in the slab pool, raw statuses interned per index so
 *   that an entry stores a 16-bit index instead of a string;
 * - htab.c, htab.h: the open-addressing tables (8-byte slots: a 32-bit
 *   reference and 32 bits of the key's XXH3 hash, compared before the key's
 *   bytes) that the index, the statuses, a cycle's new sessions and the
 *   status maps use;
 * - pool.c, pool.h: the slabs of entries in 8-byte size classes with free
 *   lists, not one malloc each;
 * - rstore.c, rstore.h: the record store (zstd-compressed blocks);
 * - status_map.c, record.c, names.c, utf8.c: the status maps, the stored
 *   record format and the fingerprint, names and event ids, UTF-8 checks;
 * - internal.h: what these files share (the malloc cost model the memory
 *   figures count with, bounded lengths, error messages).
 */
#include "diff.h"

#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "index.h"
#include "internal.h"
#include "rstore.h"

/* Observed state of an unknown raw status: below every canonical state. */
#define OBS_UNKNOWN 0xff

/* ---- lifecycle rules ---- */

static bool state_terminal(unsigned s)
{
    return s == DIFF_STATE_COMPLETED || s == DIFF_STATE_CANCELLED;
}

/* How advanced an observation is, for duplicates: the two terminal states
 * tie, and an unknown status is below everything. */
static unsigned obs_rank(unsigned obs)
{
    switch (obs) {
    case DIFF_STATE_PENDING:
        return 1;
    case DIFF_STATE_ACTIVE:
        return 2;
    case DIFF_STATE_COMPLETED:
    case DIFF_STATE_CANCELLED:
        return 3;
    default:
        return 0;
    }
}

/* What is stored for a session before the cycle (absent: present false). */
typedef struct stored {
    bool present;
    uint8_t state;
    uint8_t misses;
    uint16_t status_idx;
    uint64_t fingerprint;
} stored_t;

typedef struct planned_event {
    uint8_t type;
    uint8_t state;
    uint8_t previous_state;
    bool synthesized;
} planned_event_t;

/* The outcome of one observation against what is stored. */
typedef struct plan {
    uint8_t state;
    uint8_t misses;
    uint16_t status_idx;
    uint64_t fingerprint;
    unsigned nev;
    planned_event_t ev[2];
} plan_t;

static void plan_event(plan_t *p, diff_event_type_t type, unsigned state, unsigned prev, bool synth)
{
    p->ev[p->nev++] = (planned_event_t){
        .type = (uint8_t)type,
        .state = (uint8_t)state,
        .previous_state = (uint8_t)prev,
        .synthesized = synth,
    };
}

static void plan_observation(const stored_t *s, unsigned obs, uint16_t obs_status, uint64_t obs_fp,
                             bool baseline, plan_t *p)
{
    memset(p, 0, sizeof(*p));
    unsigned cur = s->present ? s->state : DIFF_STATE_NONE;
    p->misses = 0; /* seen */
    if (obs == OBS_UNKNOWN) {
        /* A sighting only. A session known in no state keeps its latest raw
         * status so that the first event can report it; a known one keeps
         * the status its state came from. */
        p->state = (uint8_t)cur;
        if (cur == DIFF_STATE_NONE) {
            p->status_idx = obs_status;
            p->fingerprint = obs_fp;
        } else {
            p->status_idx = s->status_idx;
            p->fingerprint = s->fingerprint;
        }
        return;
    }
    p->state = (uint8_t)cur;
    p->status_idx = obs_status;
    p->fingerprint = obs_fp;
    if (state_terminal(cur) || obs <= cur)
        return; /* forward only; terminal is final */
    p->state = (uint8_t)obs;
    if (baseline)
        return;
    switch (obs) {
    case DIFF_STATE_ACTIVE:
        plan_event(p, DIFF_EV_STARTED, DIFF_STATE_ACTIVE, cur, false);
        break;
    case DIFF_STATE_COMPLETED:
        /* consumers always see started before completed */
        if (cur < DIFF_STATE_ACTIVE) {
            plan_event(p, DIFF_EV_STARTED, DIFF_STATE_ACTIVE, cur, true);
            plan_event(p, DIFF_EV_COMPLETED, DIFF_STATE_COMPLETED, DIFF_STATE_ACTIVE, false);
        } else {
            plan_event(p, DIFF_EV_COMPLETED, DIFF_STATE_COMPLETED, cur, false);
        }
        break;
    case DIFF_STATE_CANCELLED:
        /* cancelled before it ever became active: no started */
        plan_event(p, DIFF_EV_CANCELLED, DIFF_STATE_CANCELLED, cur, false);
        break;
    default: /* pending has no event */
        break;
    }
}

static bool plan_changes(const stored_t *s, const plan_t *p)
{
    return !s->present || p->state != s->state || p->misses != s->misses ||
           p->status_idx != s->status_idx || p->fingerprint != s->fingerprint;
}

/* The states a session can vanish from (with an event): the store keeps
 * their sessions' last records. */
static bool state_vanishable(unsigned s)
{
    return s == DIFF_STATE_PENDING || s == DIFF_STATE_ACTIVE;
}

/* Whether the outcome p of an observation replaces the session's stored
 * last record: a session that can vanish whose record is new to the store. */
static bool plan_sets_last(const stored_t *s, const plan_t *p)
{
    return state_vanishable(p->state) &&
           (!s->present || !state_vanishable(s->state) || s->fingerprint != p->fingerprint);
}

/*
 * The outcome of a complete poll that did not see the stored session s:
 * whether it is removed, after vanish_grace such polls in a row (false:
 * it only counts one more miss). A removed session that could still
 * vanish is cancelled; terminal and never-known sessions are forgotten
 * silently, and a baseline poll publishes nothing.
 */
static bool plan_absence(const stored_t *s, unsigned vanish_grace, bool baseline, plan_t *p)
{
    memset(p, 0, sizeof(*p));
    if ((unsigned)s->misses + 1 < vanish_grace)
        return false;
    if (!baseline && state_vanishable(s->state))
        plan_event(p, DIFF_EV_CANCELLED, DIFF_STATE_CANCELLED, s->state, false);
    return true;
}

/* ---- one cycle ---- */

static stored_t stored_of(const entry_t *e)
{
    stored_t s = {0};
    if (e != NULL) {
        s.present = true;
        s.state = e->state;
        s.misses = e->misses;
        s.status_idx = e->status_idx;
        s.fingerprint = e->fingerprint;
    }
    return s;
}

/* Stored raw status as an event reports it: NULL when there is none. */
static const char *previous_status_of(const diff_index_t *ix, const entry_t *e)
{
    if (e == NULL || e->status_idx == STATUS_NONE_IDX)
        return NULL;
    return status_raw(ix, e->status_idx);
}

/*
 * Per-cycle note of a session that changes (or might, for duplicates), in
 * one array: 40 bytes (34 used: the entry is a 4-byte pool reference),
 * no allocation of its own. A stored session seen in
 * the cycle points at its note through its `seen` field (see NOTE_REF); a
 * new session's entry is built at its first sighting, found through the
 * cycle's table of new entries, and moved into the index by apply.
 */
typedef struct note {
    uint64_t fingerprint; /* observed */
    uint32_t entry;       /* pool reference: the index's, or (NOTE_NEW) the cycle's until apply */
    uint32_t order;       /* first observation stamp; vanished: their sequence */
    uint32_t rec_block;   /* retained record, RSTORE_NONE when none */
    uint32_t rec_off;
    uint32_t rec_len;
    uint16_t status_idx;       /* observed */
    uint16_t store_status_idx; /* what finish decided to store */
    uint8_t obs;               /* observed state or OBS_UNKNOWN */
    uint8_t flags;
} note_t;

#define NOTE_NEW 0x01      /* the entry is the cycle's: a session the index lacks */
#define NOTE_VANISHED 0x02 /* a stored session the cycle did not see */
#define NOTE_CHANGED 0x04
#define NOTE_REMOVED 0x08

/*
 * An event in 8 bytes: what it reports besides its note is four small
 * numbers. The strings are the note's and the index's, the id is computed
 * when the event is read.
 */
typedef struct cevent {
    uint32_t note;
    uint8_t type;
    uint8_t reason;
    uint8_t synthesized;
    uint8_t states; /* state << 4 | previous_state */
} cevent_t;

/*
 * Stamps of one cycle: [base, base + max_observed) are observations, and
 * [note_base, note_base + max_observed) name a note (the value is note_base
 * plus its index). Either way a value >= base marks an entry seen in the
 * cycle. A cycle reserves both ranges at begin.
 */
#define STAMP_RANGES 2
/* Largest max_sessions the stamp ranges allow (kept well below 2^32). */
#define CYCLE_MAX_OBSERVED (UINT32_MAX / 8)

#define STATE_CACHE_UNSET (-2)
#define STATE_CACHE_UNKNOWN (-1)

struct diff_cycle {
    diff_index_t *ix;
    const diff_options_t *opt;
    uint32_t base;      /* stamps >= base were written by this cycle */
    uint32_t note_base; /* stamps >= note_base name a note */
    /* the index's statuses at begin (later ones are this cycle's), and the
     * sizes of their tables */
    size_t nstatuses0, statuses_cap0, stab_cap0;
    size_t max_observed;
    size_t max_retained; /* bound of records.held */
    bool finished;
    bool settled; /* finish succeeded: the changes are complete */
    bool applied;
    htab_t fresh; /* pool references of the sessions the index lacks, by id */
    /* the pool's slab count and array size at begin, to give back what an
     * abandoned cycle made */
    size_t nslabs0, slabs_cap0;
    note_t *notes;
    size_t nnotes, notes_cap;
    rstore_t records;
    size_t observed;
    size_t unknown_count;
    const char **new_unknown;
    size_t nnew_unknown;
    size_t new_unknown_cap;
    cevent_t *events;
    size_t nevents;
    size_t nvanished;  /* the last events: the vanished ones */
    bool events_read;  /* diff_cycle_event() was called: no record may be added */
    uint32_t *changed; /* the notes of the changes, in order */
    size_t nchanges;
    size_t sessions_after; /* the index's size after apply */
    /* status_idx -> state, computed once per cycle (the map is fixed for
     * its duration) */
    int8_t state_cache[DIFF_MAX_STATUSES + 1];
};

diff_cycle_t *diff_cycle_begin(diff_index_t *ix, const diff_options_t *opt)
{
    if (ix == NULL || opt == NULL || opt->source == NULL || opt->vanish_grace < 1 ||
        opt->vanish_grace > DIFF_MAX_GRACE || ix->cycle_open)
        return NULL;
    size_t max = opt->max_sessions != 0 ? opt->max_sessions : DIFF_DEFAULT_MAX_SESSIONS;
    if (max > CYCLE_MAX_OBSERVED)
        return NULL;
    diff_cycle_t *cy = calloc(1, sizeof(*cy));
    if (cy == NULL)
        return NULL;
    cy->ix = ix;
    cy->opt = opt;
    cy->nstatuses0 = ix->nstatuses;
    cy->statuses_cap0 = ix->statuses_cap;
    cy->stab_cap0 = ix->stab.cap;
    cy->nslabs0 = ix->pool.nslabs;
    cy->slabs_cap0 = ix->pool.slabs_cap;
    cy->max_observed = max;
    cy->max_retained = max * DIFF_RETAINED_BYTES_PER_SESSION;
    cy->records.cache_block = SIZE_MAX;
    for (size_t i = 0; i < sizeof(cy->state_cache); i++)
        cy->state_cache[i] = STATE_CACHE_UNSET;
    if (ix->next_stamp > UINT32_MAX - STAMP_RANGES * max - 1) {
        for (size_t i = 0; i < ix->tab.cap; i++) {
            if (ix->tab.slots[i].ref != 0)
                entry_at(ix, ix->tab.slots[i].ref)->seen = STAMP_NEVER;
        }
        ix->next_stamp = STAMP_NEVER + 1;
    }
    cy->base = ix->next_stamp;
    cy->note_base = cy->base + (uint32_t)max;
    /* an abandoned cycle's stamps stay older than the next cycle's */
    ix->next_stamp = cy->note_base + (uint32_t)max;
    ix->cycle_open = true;
    return cy;
}

static unsigned cycle_state_of(diff_cycle_t *cy, uint16_t sidx)
{
    int8_t v = cy->state_cache[sidx];
    if (v == STATE_CACHE_UNSET) {
        diff_state_t st;
        const char *raw = status_raw(cy->ix, sidx);
        v = (raw[0] != '\0' && diff_status_map_lookup(cy->opt->status_map, raw, &st) == 0)
                ? (int8_t)st
                : STATE_CACHE_UNKNOWN;
        cy->state_cache[sidx] = v;
    }
    return v == STATE_CACHE_UNKNOWN ? OBS_UNKNOWN : (unsigned)v;
}

/* The note e points at in this cycle, or NULL. */
static note_t *note_of(const diff_cycle_t *cy, const entry_t *e)
{
    if (e->seen < cy->note_base)
        return NULL;
    return &cy->notes[e->seen - cy->note_base];
}

/* The entry of note n. */
static entry_t *note_entry(const diff_cycle_t *cy, const note_t *n)
{
    return entry_at(cy->ix, n->entry);
}

/* A new note for entry ref, which the entry points at from then on; NULL
 * on ENOMEM. The pointer is valid until the next note_add. */
static note_t *note_add(diff_cycle_t *cy, uint32_t ref, uint32_t order, uint8_t flags)
{
    if (cy->nnotes == cy->notes_cap) {
        note_t *v = array_grow(cy->notes, &cy->notes_cap, cy->nnotes + 1, sizeof(*v), 64);
        if (v == NULL)
            return NULL;
        cy->notes = v;
    }
    note_t *n = &cy->notes[cy->nnotes];
    *n = (note_t){.entry = ref, .order = order, .rec_block = RSTORE_NONE, .flags = flags};
    if (!(flags & NOTE_VANISHED))
        entry_at(cy->ix, ref)->seen = cy->note_base + (uint32_t)cy->nnotes;
    cy->nnotes++;
    return n;
}

/* What is stored for the note's session before the cycle. */
static stored_t note_stored(const diff_cycle_t *cy, const note_t *n)
{
    return (n->flags & NOTE_NEW) ? (stored_t){0} : stored_of(note_entry(cy, n));
}

/* Stores an observation into n, keeping the record's text only when an
 * event of this cycle will carry it or the store is to write it as the
 * session's last record, and the cycle's byte bound allows. 0 or -1 with
 * err. */
static int note_observe(diff_cycle_t *cy, note_t *n, unsigned obs, uint16_t sidx, uint64_t fp,
                        const char *text, size_t len, char *err, size_t errlen)
{
    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, obs, sidx, fp, cy->opt->baseline, &p);
    n->rec_block = RSTORE_NONE;
    n->rec_len = 0;
    if ((p.nev > 0 || plan_sets_last(&s, &p)) && text != NULL) {
        /* a replaced record's bytes stay in their block and keep counting */
        int rc =
            rstore_append(&cy->records, text, len, cy->max_retained, &n->rec_block, &n->rec_off);
        if (rc == -2) {
            set_err(err, errlen,
                    "the records of this poll's events take more than %zu bytes compressed (%d "
                    "per record of max_sessions %zu; raise max_sessions to allow more)",
                    cy->max_retained, DIFF_RETAINED_BYTES_PER_SESSION, cy->max_observed);
            return -1;
        }
        if (rc != 0) {
            n->rec_block = RSTORE_NONE;
            set_err(err, errlen, "%s", "out of memory");
            return -1;
        }
        n->rec_len = (uint32_t)len;
    }
    n->obs = (uint8_t)obs;
    n->status_idx = sidx;
    n->fingerprint = fp;
    return 0;
}

static int cycle_note_unknown(diff_cycle_t *cy, uint16_t sidx)
{
    cy->unknown_count++;
    status_t *st = cy->ix->statuses[sidx];
    if (st->reported)
        return 0;
    const char **v =
        array_grow(cy->new_unknown, &cy->new_unknown_cap, cy->nnew_unknown + 1, sizeof(*v), 8);
    if (v == NULL)
        return -1;
    cy->new_unknown = v;
    /* at first sight, so that the cycle lists it once; an abandoned cycle
     * takes it back (diff_cycle_free) */
    st->reported = true;
    cy->new_unknown[cy->nnew_unknown++] = st->raw;
    return 0;
}

/* Why the n bytes of s cannot be an id or a status, or NULL; *bad is then
 * the offset of the first byte that is not UTF-8, or of the first NUL. */
static const char *text_problem(const char *s, size_t n, size_t *bad)
{
    const char *nul = memchr(s, '\0', n);
    if (diff_utf8_check(s, nul != NULL ? (size_t)(nul - s) : n, bad) != 0)
        return "is not UTF-8";
    if (nul != NULL) {
        *bad = (size_t)(nul - s);
        return "holds a NUL";
    }
    return NULL;
}

int diff_cycle_observe(diff_cycle_t *cy, const char *session_id, size_t id_len,
                       const char *raw_status, size_t status_len, const char *text, size_t len,
                       char *err, size_t errlen)
{
    if (cy == NULL) {
        set_err(err, errlen, "%s", "no cycle");
        return -1;
    }
    if (cy->finished) {
        set_err(err, errlen, "%s", "cycle already finished");
        return -1;
    }
    if (cy->observed >= cy->max_observed) {
        set_err(err, errlen,
                "more than %zu records in one poll (max_sessions; raise it if the population "
                "is that large)",
                cy->max_observed);
        return -1;
    }
    if (session_id == NULL || id_len == 0 || id_len > DIFF_ID_MAX) {
        set_err(err, errlen, "session id is empty or longer than %d bytes", DIFF_ID_MAX);
        return -1;
    }
    /* ids and statuses reach events, keys and logs: UTF-8 only (CONTRACT
     * §6), and C strings there (no NUL); the offending bytes are not quoted
     * back */
    size_t bad;
    const char *why = text_problem(session_id, id_len, &bad);
    if (why != NULL) {
        set_err(err, errlen, "session id %s (byte %zu of the id)", why, bad);
        return -1;
    }
    int idp = (int)id_len; /* for "%.*s": id_len <= DIFF_ID_MAX */
    if (raw_status == NULL || status_len == 0 || status_len > DIFF_STATUS_MAX) {
        set_err(err, errlen, "status of session \"%.*s\" is empty or longer than %d bytes", idp,
                session_id, DIFF_STATUS_MAX);
        return -1;
    }
    if ((why = text_problem(raw_status, status_len, &bad)) != NULL) {
        set_err(err, errlen, "status of session \"%.*s\" %s (byte %zu of the status)", idp,
                session_id, why, bad);
        return -1;
    }
    diff_index_t *ix = cy->ix;
    int sidx_i = index_intern_status(ix, raw_status, status_len);
    if (sidx_i < 0) {
        if (ix->nstatuses > DIFF_MAX_STATUSES)
            set_err(err, errlen, "more than %d distinct raw statuses (new one: \"%.*s\")",
                    DIFF_MAX_STATUSES, (int)status_len, raw_status);
        else
            set_err(err, errlen, "%s", "out of memory");
        return -1;
    }
    uint16_t sidx = (uint16_t)sidx_i;
    unsigned obs = cycle_state_of(cy, sidx);
    if (obs == OBS_UNKNOWN && cycle_note_unknown(cy, sidx) != 0) {
        set_err(err, errlen, "%s", "out of memory");
        return -1;
    }
    uint64_t fp = diff_fingerprint(text, len);
    uint32_t stamp = cy->base + (uint32_t)cy->observed;
    cy->observed++;

    uint32_t tag = key_tag(session_id, id_len);
    uint32_t ref = htab_get(&ix->tab, tag, session_id, id_len, entry_eq, ix);
    entry_t *e = ref != 0 ? entry_at(ix, ref) : NULL;
    note_t *n = NULL;
    if (e != NULL && e->seen < cy->base) {
        /* first sighting of a stored session in this cycle */
        e->seen = stamp;
        stored_t s = stored_of(e);
        plan_t p;
        plan_observation(&s, obs, sidx, fp, cy->opt->baseline, &p);
        /* Nothing to note when nothing changes. Requiring the same raw
         * status also lets a later duplicate recover this observation's
         * state from the stored status alone. */
        if (!plan_changes(&s, &p) && p.nev == 0 && sidx == e->status_idx)
            return 0;
        n = note_add(cy, ref, stamp, 0);
    } else if (e != NULL) {
        /* duplicate of a stored session */
        n = note_of(cy, e);
        unsigned first = n != NULL ? n->obs : cycle_state_of(cy, (uint16_t)e->status_idx);
        if (obs_rank(obs) <= obs_rank(first))
            return 0; /* ties keep the first */
        if (n == NULL)
            n = note_add(cy, ref, e->seen, 0);
    } else if ((ref = htab_get(&cy->fresh, tag, session_id, id_len, entry_eq, ix)) != 0) {
        /* duplicate of a new session */
        n = note_of(cy, entry_at(ix, ref));
        if (obs_rank(obs) <= obs_rank(n->obs))
            return 0;
    } else {
        if (htab_reserve(&cy->fresh, cy->fresh.count + 1) != 0 ||
            (ref = entry_new(ix, session_id, id_len)) == 0)
            goto oom;
        n = note_add(cy, ref, stamp, NOTE_NEW);
        if (n == NULL) {
            entry_free(ix, ref);
            goto oom;
        }
        ix->cycle_bytes += entry_cost(ix, ref);
        htab_insert(&cy->fresh, ref, tag);
    }
    if (n == NULL)
        goto oom;
    return note_observe(cy, n, obs, sidx, fp, text, len, err, errlen);
oom:
    set_err(err, errlen, "%s", "out of memory");
    return -1;
}

static int note_cmp(const void *a, const void *b)
{
    const note_t *x = a, *y = b;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void cycle_add_event(diff_cycle_t *cy, size_t note, const planned_event_t *pe,
                            diff_reason_t reason)
{
    cy->events[cy->nevents++] = (cevent_t){
        .note = (uint32_t)note,
        .type = pe->type,
        .reason = (uint8_t)reason,
        .synthesized = pe->synthesized,
        .states = (uint8_t)(pe->state << 4 | pe->previous_state),
    };
}

/* Notes every stored session this cycle did not see. */
static int cycle_note_vanished(diff_cycle_t *cy)
{
    diff_index_t *ix = cy->ix;
    uint32_t n = 0;
    for (size_t i = 0; i < ix->tab.cap; i++) {
        uint32_t ref = ix->tab.slots[i].ref;
        if (ref == 0 || entry_at(ix, ref)->seen >= cy->base)
            continue;
        if (note_add(cy, ref, n++, NOTE_VANISHED) == NULL)
            return -1;
    }
    return 0;
}

/* What note n stores, as finish decided it (called before apply: it reads
 * the entry as it was). */
static void note_record(const diff_cycle_t *cy, const note_t *n, diff_record_t *rec)
{
    if (n->flags & NOTE_VANISHED) {
        entry_record(cy->ix, note_entry(cy, n), rec);
        if (!(n->flags & NOTE_REMOVED))
            rec->misses++;
        return;
    }
    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    *rec = (diff_record_t){
        .state = (diff_state_t)p.state,
        .misses = p.misses,
        .fingerprint = p.fingerprint,
        .status = status_raw(cy->ix, p.status_idx),
    };
}

/* What the change of note n does to the session's last record (called
 * before apply: it reads the entry as it was). */
static diff_last_t note_last(const diff_cycle_t *cy, const note_t *n)
{
    if (n->flags & NOTE_VANISHED)
        return (n->flags & NOTE_REMOVED) ? DIFF_LAST_DROP : DIFF_LAST_KEEP;
    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    if (plan_sets_last(&s, &p))
        /* an observation without a record leaves none to carry */
        return n->rec_block != RSTORE_NONE ? DIFF_LAST_SET : DIFF_LAST_DROP;
    if (s.present && state_vanishable(s.state) && !state_vanishable(p.state))
        return DIFF_LAST_DROP; /* it ended: a terminal session cannot vanish */
    return DIFF_LAST_KEEP;
}

/* Decides the change and events of note i. */
static void cycle_settle(diff_cycle_t *cy, size_t i)
{
    note_t *n = &cy->notes[i];
    const entry_t *e = note_entry(cy, n);

    if (n->flags & NOTE_VANISHED) {
        stored_t s = stored_of(e);
        plan_t p;
        n->flags |= NOTE_CHANGED;
        n->store_status_idx = e->status_idx;
        if (!plan_absence(&s, cy->opt->vanish_grace, cy->opt->baseline, &p))
            return;
        n->flags |= NOTE_REMOVED;
        /* vanished notes follow the observed ones: their events come last */
        for (unsigned k = 0; k < p.nev; k++)
            cycle_add_event(cy, i, &p.ev[k], DIFF_REASON_VANISHED);
        cy->nvanished += p.nev;
        return;
    }

    stored_t s = note_stored(cy, n);
    plan_t p;
    plan_observation(&s, n->obs, n->status_idx, n->fingerprint, cy->opt->baseline, &p);
    if (plan_changes(&s, &p))
        n->flags |= NOTE_CHANGED;
    n->store_status_idx = p.status_idx;
    diff_reason_t reason =
        s.state == DIFF_STATE_NONE ? DIFF_REASON_FIRST_SEEN : DIFF_REASON_STATUS_CHANGE;
    for (unsigned k = 0; k < p.nev; k++)
        cycle_add_event(cy, i, &p.ev[k], reason);
}

int diff_cycle_finish(diff_cycle_t *cy)
{
    if (cy == NULL || cy->finished)
        return -1;
    cy->finished = true;
    /* observations in first-sighting order; the vanished follow in theirs */
    if (cy->nnotes > 1)
        qsort(cy->notes, cy->nnotes, sizeof(*cy->notes), note_cmp);
    if (cycle_note_vanished(cy) != 0)
        return -1;
    if (cy->nnotes > 0) {
        /* at most two events per session */
        cy->events = malloc(cy->nnotes * 2 * sizeof(*cy->events));
        /* 4 bytes per change: the change itself is derived when read */
        cy->changed = malloc(cy->nnotes * sizeof(*cy->changed));
        if (cy->events == NULL || cy->changed == NULL)
            return -1;
    }
    cy->sessions_after = cy->ix->tab.count;
    for (size_t i = 0; i < cy->nnotes; i++) {
        cycle_settle(cy, i);
        const note_t *n = &cy->notes[i];
        if (!(n->flags & NOTE_CHANGED))
            continue;
        cy->changed[cy->nchanges++] = (uint32_t)i;
        if (n->flags & NOTE_REMOVED)
            cy->sessions_after--;
        else if (n->flags & NOTE_NEW)
            cy->sessions_after++;
    }
    /* the events took 8 bytes for each of two per note: keep what they use */
    if (cy->nevents > 0 && cy->nevents < cy->nnotes * 2) {
        cevent_t *v = realloc(cy->events, cy->nevents * sizeof(*v));
        if (v != NULL)
            cy->events = v;
    }
    /* Room for the new sessions now, so that apply cannot fail; a larger
     * table does not change what the index holds. An empty index takes
     * the cycle's table of new sessions as its own instead (a first
     * cycle: no second table of the whole population beside it). */
    if (cy->ix->tab.count > 0 &&
        htab_reserve(&cy->ix->tab, cy->ix->tab.count + cy->fresh.count) != 0)
        return -1;
    cy->settled = true;
    return 0;
}

size_t diff_cycle_nevents(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->nevents : 0;
}

diff_event_type_t diff_cycle_event_type(const diff_cycle_t *cy, size_t i)
{
    return (diff_event_type_t)cy->events[i].type;
}

int diff_cycle_event(diff_cycle_t *cy, size_t i, diff_event_t *ev)
{
    if (cy == NULL || i >= cy->nevents || cy->applied)
        return -1;
    const cevent_t *ce = &cy->events[i];
    const note_t *n = &cy->notes[ce->note];
    const diff_index_t *ix = cy->ix;
    bool vanished = ce->reason == DIFF_REASON_VANISHED;
    cy->events_read = true;
    *ev = (diff_event_t){
        .type = (diff_event_type_t)ce->type,
        .reason = (diff_reason_t)ce->reason,
        .synthesized = ce->synthesized != 0,
        .session_id = note_entry(cy, n)->id,
        .state = (diff_state_t)(ce->states >> 4),
        .previous_state = (diff_state_t)(ce->states & 0xf),
        .status = vanished ? NULL : status_raw(ix, n->status_idx),
        .previous_status = (n->flags & NOTE_NEW) ? NULL : previous_status_of(ix, note_entry(cy, n)),
    };
    if (n->rec_block != RSTORE_NONE) {
        ev->record = rstore_get(&cy->records, n->rec_block, n->rec_off);
        if (ev->record == NULL)
            return -1;
        ev->record_len = n->rec_len;
    }
    return event_id_compute(cy->opt->source, ev->session_id, ev->type, ev->id);
}

size_t diff_cycle_nvanished(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->nvanished : 0;
}

/* The note of the k-th vanished event, NULL out of range. */
static note_t *vanished_note(const diff_cycle_t *cy, size_t k)
{
    if (cy == NULL || k >= cy->nvanished || cy->applied)
        return NULL;
    return &cy->notes[cy->events[cy->nevents - cy->nvanished + k].note];
}

const char *diff_cycle_vanished_id(const diff_cycle_t *cy, size_t k)
{
    const note_t *n = vanished_note(cy, k);
    return n != NULL ? note_entry(cy, n)->id : NULL;
}

diff_keep_t diff_cycle_vanished_keep(diff_cycle_t *cy, size_t k, const char *text, size_t len)
{
    note_t *n = vanished_note(cy, k);
    /* appending after a read could close the block a returned record is in */
    if (n == NULL || text == NULL || cy->events_read)
        return DIFF_KEEP_ERROR;
    uint32_t block, off;
    int rc = rstore_append(&cy->records, text, len, cy->max_retained, &block, &off);
    if (rc == -2)
        return DIFF_KEEP_FULL;
    if (rc != 0)
        return DIFF_KEEP_ERROR;
    n->rec_block = block;
    n->rec_off = off;
    n->rec_len = (uint32_t)len;
    return DIFF_KEEP_OK;
}

size_t diff_cycle_nchanges(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->nchanges : 0;
}

int diff_cycle_change(const diff_cycle_t *cy, size_t i, diff_change_t *out)
{
    if (cy == NULL || i >= cy->nchanges || cy->applied)
        return -1;
    const note_t *n = &cy->notes[cy->changed[i]];
    *out = (diff_change_t){.session_id = note_entry(cy, n)->id,
                           .removed = (n->flags & NOTE_REMOVED) != 0,
                           .last = note_last(cy, n)};
    note_record(cy, n, &out->rec);
    return 0;
}

int diff_cycle_change_last(diff_cycle_t *cy, size_t i, const char **text, size_t *len)
{
    if (cy == NULL || i >= cy->nchanges || cy->applied)
        return -1;
    const note_t *n = &cy->notes[cy->changed[i]];
    if (note_last(cy, n) != DIFF_LAST_SET)
        return -1;
    *text = rstore_get(&cy->records, n->rec_block, n->rec_off);
    *len = n->rec_len;
    return *text != NULL ? 0 : -1;
}

size_t diff_cycle_sessions_after(const diff_cycle_t *cy)
{
    return cy != NULL && cy->settled ? cy->sessions_after : diff_index_size(cy ? cy->ix : NULL);
}

size_t diff_cycle_observed(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->observed : 0;
}

size_t diff_cycle_memory(const diff_cycle_t *cy)
{
    if (cy == NULL)
        return 0;
    const rstore_t *rs = &cy->records;
    size_t n = heap_cost(sizeof(*cy)) + heap_cost(cy->fresh.cap * sizeof(hslot_t)) +
               heap_cost(cy->notes_cap * sizeof(note_t)) +
               heap_cost((cy->finished ? cy->nevents : 0) * sizeof(cevent_t)) +
               heap_cost((cy->finished ? cy->nnotes : 0) * sizeof(uint32_t)) +
               heap_cost(rs->blocks_cap * sizeof(rblock_t)) + heap_cost(rs->open_cap) +
               heap_cost(rs->scratch_cap) + heap_cost(rs->cache_cap) + (rs->held - rs->open_len);
    /* the new sessions' entries, in the index's pool until apply gives them to it */
    return n + (cy->applied ? 0 : cy->ix->cycle_bytes);
}

size_t diff_cycle_retained(const diff_cycle_t *cy, size_t *raw)
{
    if (raw != NULL)
        *raw = cy != NULL ? cy->records.raw : 0;
    return cy != NULL ? cy->records.held : 0;
}

size_t diff_cycle_new_unknown_statuses(const diff_cycle_t *cy, const char *const **statuses)
{
    if (statuses != NULL)
        *statuses = cy != NULL ? cy->new_unknown : NULL;
    return cy != NULL ? cy->nnew_unknown : 0;
}

size_t diff_cycle_unknown_count(const diff_cycle_t *cy)
{
    return cy != NULL ? cy->unknown_count : 0;
}

void diff_cycle_apply(diff_cycle_t *cy)
{
    if (cy == NULL || !cy->settled || cy->applied)
        return;
    cy->applied = true;
    diff_index_t *ix = cy->ix;
    bool removed_any = false, adopt = ix->tab.count == 0;
    if (adopt) {
        /* every new session is in the cycle's table, and nothing else */
        htab_release(&ix->tab);
        ix->tab = cy->fresh;
        memset(&cy->fresh, 0, sizeof(cy->fresh));
    }
    ix->cycle_bytes = 0; /* the new entries are the index's now */
    for (size_t i = 0; i < cy->nnotes; i++) {
        note_t *n = &cy->notes[i];
        if (!(n->flags & NOTE_CHANGED))
            continue;
        entry_t *e = note_entry(cy, n);
        if (n->flags & NOTE_REMOVED) {
            size_t slot = htab_find_ref(&ix->tab, key_tag(e->id, entry_idlen(e)), n->entry);
            if (slot != SIZE_MAX)
                htab_remove_at(&ix->tab, slot);
            ix->by_state[e->state]--;
            entry_free(ix, n->entry);
            n->entry = 0;
            removed_any = true;
            continue;
        }
        diff_record_t rec;
        note_record(cy, n, &rec); /* before the entry changes */
        if (n->flags & NOTE_NEW) {
            /* the index owns it now: moved, not copied */
            n->flags &= (uint8_t)~NOTE_NEW;
            if (!adopt)
                htab_insert(&ix->tab, n->entry, key_tag(e->id, entry_idlen(e)));
        } else {
            ix->by_state[e->state]--;
        }
        ix->by_state[rec.state]++;
        e->state = (uint32_t)rec.state;
        e->misses = rec.misses;
        e->fingerprint = rec.fingerprint;
        e->status_idx = n->store_status_idx;
    }
    /* what only the events needed goes now, before the caller frees the cycle */
    htab_release(&cy->fresh);
    rstore_release(&cy->records);
    if (removed_any) {
        index_compact(ix);
        htab_maybe_shrink(&ix->tab);
    }
}

/* What an abandoned cycle did to the index: its "reported" marks on the
 * statuses that stay, the statuses it interned, and the entries it made
 * for new sessions (their chunks, and the slabs made for them). */
static void cycle_roll_back(diff_cycle_t *cy)
{
    diff_index_t *ix = cy->ix;
    for (size_t i = 0; i < cy->nnew_unknown; i++) {
        const char *raw = cy->new_unknown[i];
        size_t n = strlen(raw);
        uint32_t ref = htab_get(&ix->stab, key_tag(raw, n), raw, n, status_eq, ix);
        if (ref != 0 && ref - 1 < cy->nstatuses0)
            ix->statuses[ref - 1]->reported = false;
    }
    index_statuses_truncate(ix, cy->nstatuses0, cy->statuses_cap0, cy->stab_cap0);
    for (size_t i = 0; i < cy->nnotes; i++) {
        if (cy->notes[i].flags & NOTE_NEW)
            entry_free(ix, cy->notes[i].entry);
    }
    ix->cycle_bytes = 0;
    pool_truncate(&ix->pool, cy->nslabs0, cy->slabs_cap0);
}

void diff_cycle_free(diff_cycle_t *cy)
{
    if (cy == NULL)
        return;
    if (!cy->applied)
        cycle_roll_back(cy);
    free(cy->notes);
    htab_release(&cy->fresh);
    rstore_release(&cy->records);
    free(cy->new_unknown);
    free(cy->events);
    free(cy->changed);
    cy->ix->cycle_open = false;
    free(cy);
}
