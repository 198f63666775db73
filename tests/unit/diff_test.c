/*
 * Unit tests of diff/: lifecycle transitions, vanishing, duplicates, unknown
 * statuses, the persisted delta, event ids, record encoding and memory.
 */
#include "diff.h"

#include <check.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRC "src"
/* A UUID without the NUL: the session id length the memory budget is for. */
#define UUID_LEN 36
/* Memory budget per session beyond the id itself, table included: a
 * 56-byte pool chunk (16-byte header, id, NUL) and 8-byte table slots at a
 * load of 1/2..3/4 make ~34 (a malloc'd entry per session and pointer
 * slots at 3/8..3/4 made ~45). */
#define MEM_BUDGET_PER_SESSION 40
#define MEM_SESSIONS 100000

/* ---- fixture ---- */

/* The test map: one raw status per state, plus a second active one. */
static const struct {
    const char *raw;
    diff_state_t state;
} test_statuses[] = {
    {"p", DIFF_STATE_PENDING},   {"a", DIFF_STATE_ACTIVE},    {"a2", DIFF_STATE_ACTIVE},
    {"c", DIFF_STATE_COMPLETED}, {"x", DIFF_STATE_CANCELLED},
};

typedef struct fx {
    diff_index_t *ix;
    diff_status_map_t *map;
    diff_options_t opt;
    diff_cycle_t *cy;
    /* the cycle's events as events() read them, records copied */
    diff_event_t *evs;
    char **recs;
    size_t nevs;
    diff_change_t *chs; /* the changes as changes() read them */
} fx_t;

static void fx_init(fx_t *f, unsigned grace, bool baseline)
{
    memset(f, 0, sizeof(*f));
    f->ix = diff_index_new();
    f->map = diff_status_map_new();
    ck_assert_ptr_nonnull(f->ix);
    ck_assert_ptr_nonnull(f->map);
    for (size_t i = 0; i < sizeof(test_statuses) / sizeof(test_statuses[0]); i++)
        ck_assert_int_eq(diff_status_map_set(f->map, test_statuses[i].raw, test_statuses[i].state),
                         0);
    f->opt = (diff_options_t){
        .source = SRC, .vanish_grace = grace, .status_map = f->map, .baseline = baseline};
}

static void evs_free(fx_t *f)
{
    for (size_t i = 0; i < f->nevs; i++)
        free(f->recs[i]);
    free(f->evs);
    free(f->recs);
    f->evs = NULL;
    f->recs = NULL;
    f->nevs = 0;
}

static void fx_done(fx_t *f)
{
    evs_free(f);
    free(f->chs);
    diff_cycle_free(f->cy);
    diff_index_free(f->ix);
    diff_status_map_free(f->map);
}

/* Longest record text rec_make() writes. */
#define REC_MAX 512

/* The record a provider returns for (id, raw), as text: equal inputs, equal
 * records. Returns its length. */
static size_t rec_make(const char *id, const char *raw, char out[REC_MAX])
{
    int n = snprintf(out, REC_MAX, "{\"id\":\"%s\",\"status\":\"%s\",\"score\":1}", id, raw);
    ck_assert(n > 0 && n < REC_MAX);
    return (size_t)n;
}

static uint64_t rec_fp(const char *id, const char *raw)
{
    char text[REC_MAX];
    size_t n = rec_make(id, raw, text);
    return diff_fingerprint(text, n);
}

/* Length of a test's id or status; NULL (a missing one) is 0 bytes. */
static size_t slen(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

/* Stores id as if an earlier cycle had seen it with raw. */
static void put(fx_t *f, const char *id, diff_state_t state, const char *raw, unsigned misses)
{
    diff_record_t r = {
        .state = state, .misses = (uint8_t)misses, .fingerprint = rec_fp(id, raw), .status = raw};
    ck_assert_int_eq(diff_index_put(f->ix, id, &r), 0);
}

static void begin(fx_t *f)
{
    diff_cycle_free(f->cy);
    f->cy = diff_cycle_begin(f->ix, &f->opt);
    ck_assert_ptr_nonnull(f->cy);
}

static void observe(fx_t *f, const char *id, const char *raw)
{
    char err[256] = "", text[REC_MAX];
    size_t n = rec_make(id, raw, text);
    ck_assert_msg(
        diff_cycle_observe(f->cy, id, slen(id), raw, slen(raw), text, n, err, sizeof(err)) == 0,
        "observe %s: %s", id, err);
    /* the cycle must not keep the borrowed record */
    memset(text, '#', sizeof(text));
}

static void finish(fx_t *f)
{
    ck_assert_int_eq(diff_cycle_finish(f->cy), 0);
}

/* Reads every event of the cycle, copying the records (a record read is
 * valid only until the next read). */
static size_t events(fx_t *f, const diff_event_t **ev)
{
    evs_free(f);
    size_t n = diff_cycle_nevents(f->cy);
    f->evs = calloc(n + 1, sizeof(*f->evs));
    f->recs = calloc(n + 1, sizeof(*f->recs));
    ck_assert(f->evs != NULL && f->recs != NULL);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(diff_cycle_event(f->cy, i, &f->evs[i]), 0);
        ck_assert_int_eq(f->evs[i].type, diff_cycle_event_type(f->cy, i));
        if (f->evs[i].record != NULL) {
            f->recs[i] = strndup(f->evs[i].record, f->evs[i].record_len);
            ck_assert_ptr_nonnull(f->recs[i]);
            f->evs[i].record = f->recs[i];
        }
    }
    f->nevs = n;
    if (ev != NULL)
        *ev = f->evs;
    return n;
}

static size_t changes(fx_t *f, const diff_change_t **ch)
{
    size_t n = diff_cycle_nchanges(f->cy);
    free(f->chs);
    f->chs = calloc(n + 1, sizeof(*f->chs));
    ck_assert_ptr_nonnull(f->chs);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(diff_cycle_change(f->cy, i, &f->chs[i]), 0);
    ck_assert_int_eq(diff_cycle_change(f->cy, n, &f->chs[n]), -1);
    if (ch != NULL)
        *ch = f->chs;
    return n;
}

static void apply_and_close(fx_t *f)
{
    size_t after = diff_cycle_sessions_after(f->cy);
    diff_cycle_apply(f->cy);
    ck_assert_uint_eq(diff_index_size(f->ix), after);
    /* what the test copied out of the cycle goes with it */
    evs_free(f);
    free(f->chs);
    f->chs = NULL;
    diff_cycle_free(f->cy);
    f->cy = NULL;
}

static const diff_change_t *change_of(fx_t *f, const char *id)
{
    const diff_change_t *ch;
    size_t n = changes(f, &ch);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ch[i].session_id, id) == 0)
            return &ch[i];
    }
    return NULL;
}

static void expect_id(const diff_event_t *e)
{
    char id[DIFF_EVENT_ID_LEN];
    diff_event_id(SRC, e->session_id, e->type, id);
    ck_assert_str_eq(e->id, id);
}

/* The status carried in an event's record, or NULL. */
static const char *record_status(const diff_event_t *e)
{
    static char out[REC_MAX];
    const char *key = "\"status\":\"";
    const char *p = e->record != NULL ? strstr(e->record, key) : NULL;
    if (p == NULL)
        return NULL;
    p += strlen(key);
    snprintf(out, sizeof(out), "%.*s", (int)strcspn(p, "\""), p);
    return out;
}

/* ---- names ---- */

START_TEST(test_names)
{
    static const struct {
        diff_state_t state;
        const char *name;
    } rows[] = {
        {DIFF_STATE_PENDING, "pending"},
        {DIFF_STATE_ACTIVE, "active"},
        {DIFF_STATE_COMPLETED, "completed"},
        {DIFF_STATE_CANCELLED, "cancelled"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        diff_state_t s = DIFF_STATE_NONE;
        ck_assert_str_eq(diff_state_name(rows[i].state), rows[i].name);
        ck_assert_int_eq(diff_state_parse(rows[i].name, &s), 0);
        ck_assert_int_eq(s, rows[i].state);
    }
    ck_assert_ptr_null(diff_state_name(DIFF_STATE_NONE));
    diff_state_t s;
    ck_assert_int_eq(diff_state_parse("none", &s), -1);
    ck_assert_int_eq(diff_state_parse("Active", &s), -1);
    ck_assert_int_eq(diff_state_parse("", &s), -1);
    ck_assert_int_eq(diff_state_parse(NULL, &s), -1);

    ck_assert_str_eq(diff_event_type_name(DIFF_EV_STARTED), "session.started");
    ck_assert_str_eq(diff_event_type_name(DIFF_EV_COMPLETED), "session.completed");
    ck_assert_str_eq(diff_event_type_name(DIFF_EV_CANCELLED), "session.cancelled");
    ck_assert_str_eq(diff_event_type_short(DIFF_EV_STARTED), "started");
    ck_assert_str_eq(diff_event_type_short(DIFF_EV_COMPLETED), "completed");
    ck_assert_str_eq(diff_event_type_short(DIFF_EV_CANCELLED), "cancelled");
    ck_assert_str_eq(diff_reason_name(DIFF_REASON_STATUS_CHANGE), "status_change");
    ck_assert_str_eq(diff_reason_name(DIFF_REASON_FIRST_SEEN), "first_seen");
    ck_assert_str_eq(diff_reason_name(DIFF_REASON_VANISHED), "vanished");
}
END_TEST

/* ---- status maps ---- */

static const struct {
    const char *raw;
    diff_state_t state;
} map_rows[] = {
    {"Needs Proctor", DIFF_STATE_PENDING},     {"Scheduled", DIFF_STATE_PENDING},
    {"In Progress", DIFF_STATE_ACTIVE},        {"IN_PROGRESS", DIFF_STATE_ACTIVE},
    {"Closed", DIFF_STATE_COMPLETED},          {"exam_finished", DIFF_STATE_COMPLETED},
    {"Approval Denied", DIFF_STATE_CANCELLED}, {"expired", DIFF_STATE_CANCELLED},
};
#define MAP_ROWS (sizeof(map_rows) / sizeof(map_rows[0]))

START_TEST(test_status_map_rows)
{
    diff_status_map_t *m = diff_status_map_new();
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < MAP_ROWS; i++)
        ck_assert_int_eq(diff_status_map_set(m, map_rows[i].raw, map_rows[i].state), 0);
    diff_state_t s = DIFF_STATE_NONE;
    ck_assert_int_eq(diff_status_map_lookup(m, map_rows[_i].raw, &s), 0);
    ck_assert_int_eq(s, map_rows[_i].state);

    /* an override replaces the mapping and leaves the others alone */
    diff_state_t other =
        map_rows[_i].state == DIFF_STATE_CANCELLED ? DIFF_STATE_PENDING : DIFF_STATE_CANCELLED;
    ck_assert_int_eq(diff_status_map_set(m, map_rows[_i].raw, other), 0);
    ck_assert_int_eq(diff_status_map_lookup(m, map_rows[_i].raw, &s), 0);
    ck_assert_int_eq(s, other);
    for (size_t i = 0; i < MAP_ROWS; i++) {
        if (i == (size_t)_i)
            continue;
        ck_assert_int_eq(diff_status_map_lookup(m, map_rows[i].raw, &s), 0);
        ck_assert_int_eq(s, map_rows[i].state);
    }
    diff_status_map_free(m);
}
END_TEST

START_TEST(test_status_map_errors)
{
    diff_status_map_t *m = diff_status_map_new();
    ck_assert_ptr_nonnull(m);
    char long_raw[DIFF_STATUS_MAX + 2];
    memset(long_raw, 'r', sizeof(long_raw) - 1);
    long_raw[sizeof(long_raw) - 1] = '\0';

    ck_assert_int_eq(diff_status_map_set(m, "x", DIFF_STATE_NONE), -1);
    ck_assert_int_eq(diff_status_map_set(m, "x", (diff_state_t)99), -1);
    ck_assert_int_eq(diff_status_map_set(m, "", DIFF_STATE_ACTIVE), -1);
    ck_assert_int_eq(diff_status_map_set(m, NULL, DIFF_STATE_ACTIVE), -1);
    ck_assert_int_eq(diff_status_map_set(NULL, "x", DIFF_STATE_ACTIVE), -1);
    ck_assert_int_eq(diff_status_map_set(m, long_raw, DIFF_STATE_ACTIVE), -1);
    long_raw[DIFF_STATUS_MAX] = '\0';
    ck_assert_int_eq(diff_status_map_set(m, long_raw, DIFF_STATE_ACTIVE), 0);

    /* exact match only */
    diff_state_t s;
    ck_assert_int_eq(diff_status_map_set(m, "active", DIFF_STATE_ACTIVE), 0);
    ck_assert_int_eq(diff_status_map_lookup(m, "active", &s), 0);
    ck_assert_int_eq(diff_status_map_lookup(m, "Active", &s), -1);
    ck_assert_int_eq(diff_status_map_lookup(m, "active ", &s), -1);
    ck_assert_int_eq(diff_status_map_lookup(m, "activ", &s), -1);
    ck_assert_int_eq(diff_status_map_lookup(m, "", &s), -1);
    ck_assert_int_eq(diff_status_map_lookup(m, NULL, &s), -1);

    /* growth keeps every mapping */
    char raw[32];
    for (int i = 0; i < 500; i++) {
        snprintf(raw, sizeof(raw), "status-%d", i);
        ck_assert_int_eq(diff_status_map_set(m, raw, (diff_state_t)(1 + i % 4)), 0);
    }
    for (int i = 0; i < 500; i++) {
        snprintf(raw, sizeof(raw), "status-%d", i);
        ck_assert_int_eq(diff_status_map_lookup(m, raw, &s), 0);
        ck_assert_int_eq(s, 1 + i % 4);
    }
    diff_status_map_free(m);
    diff_status_map_free(NULL);
}
END_TEST

/* ---- the transition table ---- */

#define ABSENT (-1)
/* Raw status the index holds for each stored state in the table. */
static const char *const stored_raw[] = {
    [DIFF_STATE_NONE] = "weird",  [DIFF_STATE_PENDING] = "p",   [DIFF_STATE_ACTIVE] = "a",
    [DIFF_STATE_COMPLETED] = "c", [DIFF_STATE_CANCELLED] = "x",
};

typedef struct exp_event {
    diff_event_type_t type;
    bool synthesized;
    diff_reason_t reason;
    diff_state_t state;
    diff_state_t previous_state;
} exp_event_t;

typedef struct transition_row {
    int stored;           /* ABSENT or a diff_state_t */
    const char *observed; /* raw; "mystery" is unknown */
    size_t nev;
    exp_event_t ev[2];
    bool change;
    diff_state_t final_state;
    const char *final_status;
} transition_row_t;

#define EV(t, syn, r, st, prev)                                                                    \
    {                                                                                              \
        DIFF_EV_##t, syn, DIFF_REASON_##r, DIFF_STATE_##st, DIFF_STATE_##prev                      \
    }
#define STARTED_FIRST EV(STARTED, false, FIRST_SEEN, ACTIVE, NONE)
#define SYNTH_FIRST EV(STARTED, true, FIRST_SEEN, ACTIVE, NONE)
#define COMPLETED_FIRST EV(COMPLETED, false, FIRST_SEEN, COMPLETED, ACTIVE)
#define CANCELLED_FIRST EV(CANCELLED, false, FIRST_SEEN, CANCELLED, NONE)
#define N DIFF_STATE_NONE
#define P DIFF_STATE_PENDING
#define A DIFF_STATE_ACTIVE
#define C DIFF_STATE_COMPLETED
#define X DIFF_STATE_CANCELLED

static const transition_row_t transitions[] = {
    /* never stored */
    {ABSENT, "p", 0, {{0}}, true, P, "p"},
    {ABSENT, "a", 1, {STARTED_FIRST}, true, A, "a"},
    {ABSENT, "c", 2, {SYNTH_FIRST, COMPLETED_FIRST}, true, C, "c"},
    {ABSENT, "x", 1, {CANCELLED_FIRST}, true, X, "x"},
    {ABSENT, "mystery", 0, {{0}}, true, N, "mystery"},
    /* stored, but only ever seen with unknown statuses */
    {N, "p", 0, {{0}}, true, P, "p"},
    {N, "a", 1, {STARTED_FIRST}, true, A, "a"},
    {N, "c", 2, {SYNTH_FIRST, COMPLETED_FIRST}, true, C, "c"},
    {N, "x", 1, {CANCELLED_FIRST}, true, X, "x"},
    {N, "mystery", 0, {{0}}, true, N, "mystery"},
    /* pending */
    {P, "p", 0, {{0}}, false, P, "p"},
    {P, "a", 1, {EV(STARTED, false, STATUS_CHANGE, ACTIVE, PENDING)}, true, A, "a"},
    {P,
     "c",
     2,
     {EV(STARTED, true, STATUS_CHANGE, ACTIVE, PENDING),
      EV(COMPLETED, false, STATUS_CHANGE, COMPLETED, ACTIVE)},
     true,
     C,
     "c"},
    {P, "x", 1, {EV(CANCELLED, false, STATUS_CHANGE, CANCELLED, PENDING)}, true, X, "x"},
    {P, "mystery", 0, {{0}}, false, P, "p"},
    /* active */
    {A, "p", 0, {{0}}, true, A, "p"},
    {A, "a", 0, {{0}}, false, A, "a"},
    {A, "c", 1, {EV(COMPLETED, false, STATUS_CHANGE, COMPLETED, ACTIVE)}, true, C, "c"},
    {A, "x", 1, {EV(CANCELLED, false, STATUS_CHANGE, CANCELLED, ACTIVE)}, true, X, "x"},
    {A, "mystery", 0, {{0}}, false, A, "a"},
    /* completed: final */
    {C, "p", 0, {{0}}, true, C, "p"},
    {C, "a", 0, {{0}}, true, C, "a"},
    {C, "c", 0, {{0}}, false, C, "c"},
    {C, "x", 0, {{0}}, true, C, "x"},
    {C, "mystery", 0, {{0}}, false, C, "c"},
    /* cancelled: final */
    {X, "p", 0, {{0}}, true, X, "p"},
    {X, "a", 0, {{0}}, true, X, "a"},
    {X, "c", 0, {{0}}, true, X, "c"},
    {X, "x", 0, {{0}}, false, X, "x"},
    {X, "mystery", 0, {{0}}, false, X, "x"},
};
#define TRANSITIONS (sizeof(transitions) / sizeof(transitions[0]))

/* Loop index: rows in emit mode, then the same rows in baseline mode. */
START_TEST(test_transition)
{
    const transition_row_t *row = &transitions[(size_t)_i % TRANSITIONS];
    bool baseline = (size_t)_i >= TRANSITIONS;
    const char *prev_raw = row->stored == ABSENT ? NULL : stored_raw[row->stored];
    fx_t f;
    fx_init(&f, 2, baseline);
    if (row->stored != ABSENT)
        put(&f, "s1", (diff_state_t)row->stored, prev_raw, 0);
    begin(&f);
    observe(&f, "s1", row->observed);
    finish(&f);

    const diff_event_t *ev;
    size_t nev = events(&f, &ev);
    size_t want = baseline ? 0 : row->nev;
    ck_assert_msg(nev == want, "row %d (stored %d, observed %s): %zu events, want %zu", _i,
                  row->stored, row->observed, nev, want);
    for (size_t i = 0; i < nev; i++) {
        const exp_event_t *x = &row->ev[i];
        ck_assert_int_eq(ev[i].type, x->type);
        ck_assert_int_eq(ev[i].synthesized, x->synthesized);
        ck_assert_int_eq(ev[i].reason, x->reason);
        ck_assert_int_eq(ev[i].state, x->state);
        ck_assert_int_eq(ev[i].previous_state, x->previous_state);
        ck_assert_str_eq(ev[i].session_id, "s1");
        ck_assert_str_eq(ev[i].status, row->observed);
        ck_assert_pstr_eq(ev[i].previous_status, prev_raw);
        /* the record is the cycle's own copy: ours was freed by observe() */
        ck_assert_ptr_nonnull(ev[i].record);
        ck_assert_str_eq(record_status(&ev[i]), row->observed);
        expect_id(&ev[i]);
    }

    const diff_change_t *ch;
    size_t nch = changes(&f, &ch);
    ck_assert_uint_eq(nch, row->change ? 1 : 0);
    if (nch == 1) {
        ck_assert_str_eq(ch[0].session_id, "s1");
        ck_assert(!ch[0].removed);
        ck_assert_int_eq(ch[0].rec.state, row->final_state);
        ck_assert_str_eq(ch[0].rec.status, row->final_status);
        ck_assert_uint_eq(ch[0].rec.misses, 0);
    }
    apply_and_close(&f);

    diff_record_t r;
    ck_assert_int_eq(diff_index_get(f.ix, "s1", &r), 0);
    ck_assert_int_eq(r.state, row->final_state);
    ck_assert_str_eq(r.status, row->final_status);
    ck_assert_uint_eq(r.misses, 0);
    fx_done(&f);
}
END_TEST

/* ---- vanishing ---- */

static const struct {
    const char *id;
    diff_state_t state;
    bool cancels; /* non-terminal: vanishing publishes session.cancelled */
} vanish_rows[] = {
    {"vp", DIFF_STATE_PENDING, true},    {"va", DIFF_STATE_ACTIVE, true},
    {"vc", DIFF_STATE_COMPLETED, false}, {"vx", DIFF_STATE_CANCELLED, false},
    {"vn", DIFF_STATE_NONE, false},
};
#define VANISH_ROWS (sizeof(vanish_rows) / sizeof(vanish_rows[0]))

/* Loop index: vanish_grace. */
START_TEST(test_vanish)
{
    unsigned grace = (unsigned)_i;
    fx_t f;
    fx_init(&f, grace, false);
    for (size_t i = 0; i < VANISH_ROWS; i++)
        put(&f, vanish_rows[i].id, vanish_rows[i].state, stored_raw[vanish_rows[i].state], 0);
    put(&f, "keep", DIFF_STATE_ACTIVE, "a", 0);

    for (unsigned cycle = 1; cycle <= grace; cycle++) {
        begin(&f);
        observe(&f, "keep", "a");
        finish(&f);
        const diff_event_t *ev;
        size_t nev = events(&f, &ev);
        ck_assert_uint_eq(changes(&f, NULL), VANISH_ROWS);
        ck_assert_ptr_null(change_of(&f, "keep"));
        if (cycle < grace) {
            ck_assert_uint_eq(nev, 0);
            for (size_t i = 0; i < VANISH_ROWS; i++) {
                const diff_change_t *c = change_of(&f, vanish_rows[i].id);
                ck_assert_ptr_nonnull(c);
                ck_assert(!c->removed);
                ck_assert_uint_eq(c->rec.misses, cycle);
                ck_assert_int_eq(c->rec.state, vanish_rows[i].state);
                ck_assert_str_eq(c->rec.status, stored_raw[vanish_rows[i].state]);
            }
            apply_and_close(&f);
            ck_assert_uint_eq(diff_index_size(f.ix), VANISH_ROWS + 1);
            continue;
        }
        ck_assert_uint_eq(nev, 2);
        for (size_t i = 0; i < VANISH_ROWS; i++) {
            const diff_change_t *c = change_of(&f, vanish_rows[i].id);
            ck_assert_ptr_nonnull(c);
            ck_assert(c->removed);
            const diff_event_t *e = NULL;
            for (size_t k = 0; k < nev; k++) {
                if (strcmp(ev[k].session_id, vanish_rows[i].id) == 0)
                    e = &ev[k];
            }
            if (!vanish_rows[i].cancels) {
                ck_assert_ptr_null(e);
                continue;
            }
            ck_assert_ptr_nonnull(e);
            ck_assert_int_eq(e->type, DIFF_EV_CANCELLED);
            ck_assert_int_eq(e->reason, DIFF_REASON_VANISHED);
            ck_assert(!e->synthesized);
            ck_assert_int_eq(e->state, DIFF_STATE_CANCELLED);
            ck_assert_int_eq(e->previous_state, vanish_rows[i].state);
            ck_assert_ptr_null(e->status);
            ck_assert_str_eq(e->previous_status, stored_raw[vanish_rows[i].state]);
            ck_assert_ptr_null(e->record);
            expect_id(e);
        }
        apply_and_close(&f);
    }
    ck_assert_uint_eq(diff_index_size(f.ix), 1);
    ck_assert_int_eq(diff_index_get(f.ix, "keep", NULL), 0);
    fx_done(&f);
}
END_TEST

/* What a change does to the session's last record (what the store keeps
 * for its vanished event), per stored state and observation. */
#define NO_CHANGE ((int)-1)
static const struct {
    const char *id;
    bool stored;
    diff_state_t state;     /* stored */
    const char *stored_raw; /* stored, with the fingerprint of rec_make(id, stored_raw) */
    const char *obs;        /* NULL: not seen this cycle (vanish_grace 1: forgotten) */
    int last;               /* diff_last_t, or NO_CHANGE */
} last_rows[] = {
    {"new-active", false, DIFF_STATE_NONE, NULL, "a", DIFF_LAST_SET},
    {"new-pending", false, DIFF_STATE_NONE, NULL, "p", DIFF_LAST_SET},
    /* a terminal or unknown session cannot vanish with an event: no record */
    {"new-completed", false, DIFF_STATE_NONE, NULL, "c", DIFF_LAST_KEEP},
    {"new-unknown", false, DIFF_STATE_NONE, NULL, "zz", DIFF_LAST_KEEP},
    {"same-active", true, DIFF_STATE_ACTIVE, "a", "a", NO_CHANGE},
    /* a changed record replaces the stored one, without an event too */
    {"changed-active", true, DIFF_STATE_ACTIVE, "a", "a2", DIFF_LAST_SET},
    {"pending-active", true, DIFF_STATE_PENDING, "p", "a", DIFF_LAST_SET},
    {"unknown-pending", true, DIFF_STATE_NONE, "zz", "p", DIFF_LAST_SET},
    /* the session ended: its record goes */
    {"active-completed", true, DIFF_STATE_ACTIVE, "a", "c", DIFF_LAST_DROP},
    {"pending-cancelled", true, DIFF_STATE_PENDING, "p", "x", DIFF_LAST_DROP},
    {"completed-again", true, DIFF_STATE_COMPLETED, "c", "c", NO_CHANGE},
    {"completed-changed", true, DIFF_STATE_COMPLETED, "c", "x", DIFF_LAST_KEEP},
    /* forgotten, with or without an event */
    {"active-gone", true, DIFF_STATE_ACTIVE, "a", NULL, DIFF_LAST_DROP},
    {"completed-gone", true, DIFF_STATE_COMPLETED, "c", NULL, DIFF_LAST_DROP},
};
#define LAST_ROWS (sizeof(last_rows) / sizeof(last_rows[0]))

START_TEST(test_last_records)
{
    bool baseline = _i != 0;
    fx_t f;
    fx_init(&f, 1, baseline);
    for (size_t i = 0; i < LAST_ROWS; i++) {
        if (last_rows[i].stored)
            put(&f, last_rows[i].id, last_rows[i].state, last_rows[i].stored_raw, 0);
    }
    begin(&f);
    for (size_t i = 0; i < LAST_ROWS; i++) {
        if (last_rows[i].obs != NULL)
            observe(&f, last_rows[i].id, last_rows[i].obs);
    }
    finish(&f);
    const diff_change_t *ch;
    size_t n = changes(&f, &ch);
    for (size_t i = 0; i < LAST_ROWS; i++) {
        const char *id = last_rows[i].id;
        size_t k = 0;
        while (k < n && strcmp(ch[k].session_id, id) != 0)
            k++;
        if (last_rows[i].last == NO_CHANGE) {
            ck_assert_msg(k == n, "%s: a change", id);
            continue;
        }
        ck_assert_msg(k < n, "%s: no change", id);
        ck_assert_msg((int)ch[k].last == last_rows[i].last, "%s: last %d, expected %d", id,
                      (int)ch[k].last, last_rows[i].last);
        ck_assert_ptr_null(ch[k].last_text);
        const char *text = NULL;
        size_t len = 0;
        if (ch[k].last != DIFF_LAST_SET) {
            ck_assert_int_eq(diff_cycle_change_last(f.cy, k, &text, &len), -1);
            continue;
        }
        /* the record as received, byte for byte */
        char want[REC_MAX];
        size_t wn = rec_make(id, last_rows[i].obs, want);
        ck_assert_int_eq(diff_cycle_change_last(f.cy, k, &text, &len), 0);
        ck_assert_uint_eq(len, wn);
        ck_assert(memcmp(text, want, wn) == 0);
    }
    apply_and_close(&f);

    /* the same records seen again: nothing to write */
    begin(&f);
    for (size_t i = 0; i < LAST_ROWS; i++) {
        if (last_rows[i].obs != NULL)
            observe(&f, last_rows[i].id, last_rows[i].obs);
    }
    finish(&f);
    ck_assert_uint_eq(changes(&f, NULL), 0);
    fx_done(&f);
}
END_TEST

/* A missed session keeps its record until it is forgotten. */
START_TEST(test_last_record_kept_while_missed)
{
    fx_t f;
    fx_init(&f, 2, false);
    put(&f, "m", DIFF_STATE_ACTIVE, "a", 0);
    begin(&f);
    finish(&f);
    const diff_change_t *c = change_of(&f, "m");
    ck_assert_ptr_nonnull(c);
    ck_assert(!c->removed);
    ck_assert_int_eq(c->last, DIFF_LAST_KEEP);
    ck_assert_uint_eq(diff_cycle_nvanished(f.cy), 0);
    apply_and_close(&f);
    begin(&f);
    finish(&f);
    c = change_of(&f, "m");
    ck_assert(c != NULL && c->removed);
    ck_assert_int_eq(c->last, DIFF_LAST_DROP);
    fx_done(&f);
}
END_TEST

/* The caller gives vanished events their last records; the event carries
 * what was given, byte for byte, and null for a session given none. */
START_TEST(test_vanished_keep)
{
    fx_t f;
    fx_init(&f, 1, false);
    put(&f, "seen", DIFF_STATE_ACTIVE, "a", 0);
    put(&f, "v1", DIFF_STATE_ACTIVE, "a", 0);
    put(&f, "v2", DIFF_STATE_PENDING, "p", 0);
    put(&f, "v3", DIFF_STATE_ACTIVE, "a", 0);
    put(&f, "done", DIFF_STATE_COMPLETED, "c", 0); /* forgotten silently: no event */
    begin(&f);
    observe(&f, "seen", "c");
    finish(&f);
    size_t nv = diff_cycle_nvanished(f.cy), nev = diff_cycle_nevents(f.cy);
    ck_assert_uint_eq(nv, 3);
    ck_assert_ptr_null(diff_cycle_vanished_id(f.cy, nv));
    char given[3][REC_MAX];
    size_t glen[3];
    for (size_t k = 0; k < nv; k++) {
        const char *id = diff_cycle_vanished_id(f.cy, k);
        ck_assert_ptr_nonnull(id);
        ck_assert_int_eq(diff_cycle_event_type(f.cy, nev - nv + k), DIFF_EV_CANCELLED);
        glen[k] = rec_make(id, "last \xc3\xa9", given[k]);
        if (strcmp(id, "v2") != 0)
            ck_assert_int_eq(diff_cycle_vanished_keep(f.cy, k, given[k], glen[k]), DIFF_KEEP_OK);
    }
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), nev);
    /* once events were read nothing more is kept */
    ck_assert_int_eq(diff_cycle_vanished_keep(f.cy, 0, given[0], glen[0]), DIFF_KEEP_ERROR);
    for (size_t k = 0; k < nv; k++) {
        const diff_event_t *e = &ev[nev - nv + k];
        ck_assert_int_eq(e->reason, DIFF_REASON_VANISHED);
        ck_assert_ptr_null(e->status);
        ck_assert_ptr_nonnull(e->previous_status);
        if (strcmp(e->session_id, "v2") == 0) {
            ck_assert_ptr_null(e->record);
            continue;
        }
        ck_assert_uint_eq(e->record_len, glen[k]);
        ck_assert(memcmp(e->record, given[k], glen[k]) == 0);
    }
    fx_done(&f);
}
END_TEST

/* Vanished records count against the cycle's byte bound: past it the
 * event carries null instead of failing the cycle. */
START_TEST(test_vanished_keep_bound)
{
    fx_t f;
    fx_init(&f, 1, false);
    f.opt.max_sessions = 1; /* DIFF_RETAINED_BYTES_PER_SESSION bytes */
    put(&f, "v", DIFF_STATE_ACTIVE, "a", 0);
    begin(&f);
    finish(&f);
    ck_assert_uint_eq(diff_cycle_nvanished(f.cy), 1);
    char big[2 * DIFF_RETAINED_BYTES_PER_SESSION];
    memset(big, ' ', sizeof(big));
    ck_assert_int_eq(diff_cycle_vanished_keep(f.cy, 0, big, sizeof(big)), DIFF_KEEP_FULL);
    ck_assert_int_eq(diff_cycle_vanished_keep(f.cy, 1, "{}", 2), DIFF_KEEP_ERROR);
    ck_assert_int_eq(diff_cycle_vanished_keep(f.cy, 0, "{}", 2), DIFF_KEEP_OK);
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 1);
    ck_assert_uint_eq(ev[0].record_len, 2);
    fx_done(&f);
}
END_TEST

/* A session missed and seen again: misses are counted, then reset by a change. */
START_TEST(test_misses_reset)
{
    fx_t f;
    fx_init(&f, 3, false);
    put(&f, "s", DIFF_STATE_ACTIVE, "a", 0);
    diff_record_t r;

    for (unsigned miss = 1; miss <= 2; miss++) {
        begin(&f);
        finish(&f);
        ck_assert_uint_eq(events(&f, NULL), 0);
        ck_assert_uint_eq(changes(&f, NULL), 1);
        ck_assert_uint_eq(change_of(&f, "s")->rec.misses, miss);
        apply_and_close(&f);
        ck_assert_int_eq(diff_index_get(f.ix, "s", &r), 0);
        ck_assert_uint_eq(r.misses, miss);
    }

    begin(&f);
    observe(&f, "s", "a");
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_uint_eq(changes(&f, NULL), 1);
    const diff_change_t *c = change_of(&f, "s");
    ck_assert(!c->removed);
    ck_assert_uint_eq(c->rec.misses, 0);
    ck_assert_int_eq(c->rec.state, DIFF_STATE_ACTIVE);
    ck_assert_str_eq(c->rec.status, "a");
    apply_and_close(&f);
    ck_assert_int_eq(diff_index_get(f.ix, "s", &r), 0);
    ck_assert_uint_eq(r.misses, 0);

    /* back to steady state: nothing to write */
    begin(&f);
    observe(&f, "s", "a");
    finish(&f);
    ck_assert_uint_eq(changes(&f, NULL), 0);
    ck_assert_uint_eq(events(&f, NULL), 0);
    fx_done(&f);
}
END_TEST

/* Seen again after an outage in a later state: the missing started comes first. */
START_TEST(test_outage_synthesizes)
{
    fx_t f;
    fx_init(&f, 3, false);
    put(&f, "s", DIFF_STATE_PENDING, "p", 0);
    begin(&f);
    finish(&f);
    apply_and_close(&f);

    begin(&f);
    observe(&f, "s", "c");
    finish(&f);
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 2);
    ck_assert_int_eq(ev[0].type, DIFF_EV_STARTED);
    ck_assert(ev[0].synthesized);
    ck_assert_int_eq(ev[0].reason, DIFF_REASON_STATUS_CHANGE);
    ck_assert_int_eq(ev[0].previous_state, DIFF_STATE_PENDING);
    ck_assert_str_eq(ev[0].previous_status, "p");
    ck_assert_str_eq(ev[0].status, "c");
    ck_assert_int_eq(ev[1].type, DIFF_EV_COMPLETED);
    ck_assert(!ev[1].synthesized);
    ck_assert_int_eq(ev[1].previous_state, DIFF_STATE_ACTIVE);
    const diff_change_t *c = change_of(&f, "s");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->rec.state, DIFF_STATE_COMPLETED);
    ck_assert_uint_eq(c->rec.misses, 0);
    fx_done(&f);
}
END_TEST

/* ---- baseline ---- */

START_TEST(test_baseline)
{
    static const char *const raws[] = {"p", "a", "c", "x", "mystery"};
    fx_t f;
    fx_init(&f, 1, true);
    put(&f, "old-active", DIFF_STATE_ACTIVE, "a", 0);
    begin(&f);
    char id[16];
    for (size_t i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "b%zu", i);
        observe(&f, id, raws[i]);
    }
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_uint_eq(changes(&f, NULL), 6);
    const diff_change_t *c = change_of(&f, "old-active");
    ck_assert_ptr_nonnull(c);
    ck_assert(c->removed);
    apply_and_close(&f);
    ck_assert_uint_eq(diff_index_size(f.ix), 5);
    static const diff_state_t want[] = {DIFF_STATE_PENDING, DIFF_STATE_ACTIVE, DIFF_STATE_COMPLETED,
                                        DIFF_STATE_CANCELLED, DIFF_STATE_NONE};
    for (size_t i = 0; i < 5; i++) {
        diff_record_t r;
        snprintf(id, sizeof(id), "b%zu", i);
        ck_assert_int_eq(diff_index_get(f.ix, id, &r), 0);
        ck_assert_int_eq(r.state, want[i]);
        ck_assert_str_eq(r.status, raws[i]);
    }

    /* the next cycle is an ordinary one and sees nothing new */
    f.opt.baseline = false;
    begin(&f);
    for (size_t i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "b%zu", i);
        observe(&f, id, raws[i]);
    }
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_uint_eq(changes(&f, NULL), 0);
    fx_done(&f);
}
END_TEST

/* ---- duplicates ---- */

typedef struct dup_row {
    int stored; /* ABSENT or state, stored with stored_raw[] */
    const char *obs[4];
    size_t nev;
    diff_event_type_t types[2];
    const char *event_status; /* status the events (and their record) carry */
    size_t nchanges;
    const char *final_status;
} dup_row_t;

static const dup_row_t dup_rows[] = {
    /* the most advanced wins; the two terminal states tie */
    {ABSENT, {"a", "p", "c", "x"}, 2, {DIFF_EV_STARTED, DIFF_EV_COMPLETED}, "c", 1, "c"},
    {ABSENT, {"x", "c"}, 1, {DIFF_EV_CANCELLED}, "x", 1, "x"},
    {ABSENT, {"p", "x", "a"}, 1, {DIFF_EV_CANCELLED}, "x", 1, "x"},
    /* ties keep the first */
    {ABSENT, {"a", "a2"}, 1, {DIFF_EV_STARTED}, "a", 1, "a"},
    {ABSENT, {"a2", "a"}, 1, {DIFF_EV_STARTED}, "a2", 1, "a2"},
    {ABSENT, {"mystery", "p"}, 0, {0}, NULL, 1, "p"},
    {ABSENT, {"p", "mystery"}, 0, {0}, NULL, 1, "p"},
    /* stored sessions: the first sighting may have changed nothing */
    {A, {"a", "c"}, 1, {DIFF_EV_COMPLETED}, "c", 1, "c"},
    {A, {"c", "a"}, 1, {DIFF_EV_COMPLETED}, "c", 1, "c"},
    {A, {"a", "a2"}, 0, {0}, NULL, 0, "a"},
    {A, {"a2", "a"}, 0, {0}, NULL, 1, "a2"},
    {A, {"mystery", "a"}, 0, {0}, NULL, 0, "a"},
    /* an unknown first sighting ranks below any known duplicate */
    {A, {"mystery", "a2"}, 0, {0}, NULL, 1, "a2"},
    {A, {"mystery", "p"}, 0, {0}, NULL, 1, "p"},
    {A, {"a", "p"}, 0, {0}, NULL, 0, "a"},
    {P, {"p", "mystery", "p"}, 0, {0}, NULL, 0, "p"},
    {P, {"p", "a", "c"}, 2, {DIFF_EV_STARTED, DIFF_EV_COMPLETED}, "c", 1, "c"},
};
#define DUP_ROWS (sizeof(dup_rows) / sizeof(dup_rows[0]))

START_TEST(test_duplicates)
{
    const dup_row_t *row = &dup_rows[_i];
    fx_t f;
    fx_init(&f, 2, false);
    if (row->stored != ABSENT)
        put(&f, "d", (diff_state_t)row->stored, stored_raw[row->stored], 0);
    begin(&f);
    size_t nobs = 0;
    for (; nobs < 4 && row->obs[nobs] != NULL; nobs++)
        observe(&f, "d", row->obs[nobs]);
    finish(&f);
    ck_assert_uint_eq(diff_cycle_observed(f.cy), nobs);

    const diff_event_t *ev;
    size_t nev = events(&f, &ev);
    ck_assert_msg(nev == row->nev, "row %d: %zu events, want %zu", _i, nev, row->nev);
    for (size_t i = 0; i < nev; i++) {
        ck_assert_int_eq(ev[i].type, row->types[i]);
        ck_assert_str_eq(ev[i].status, row->event_status);
        ck_assert_str_eq(record_status(&ev[i]), row->event_status);
    }
    ck_assert_uint_eq(changes(&f, NULL), row->nchanges);
    apply_and_close(&f);
    diff_record_t r;
    ck_assert_int_eq(diff_index_get(f.ix, "d", &r), 0);
    ck_assert_str_eq(r.status, row->final_status);
    fx_done(&f);
}
END_TEST

/* Events follow the first sighting of each session; vanished ones come last. */
START_TEST(test_event_order)
{
    fx_t f;
    fx_init(&f, 1, false);
    put(&f, "s0", DIFF_STATE_PENDING, "p", 0);
    put(&f, "s1", DIFF_STATE_ACTIVE, "a", 0);
    begin(&f);
    observe(&f, "s1", "a"); /* unchanged at first sight */
    observe(&f, "s2", "a");
    observe(&f, "s3", "c");
    observe(&f, "s1", "c"); /* then advanced by a duplicate */
    finish(&f);

    static const struct {
        const char *id;
        diff_event_type_t type;
        bool synthesized;
    } want[] = {
        {"s1", DIFF_EV_COMPLETED, false}, {"s2", DIFF_EV_STARTED, false},
        {"s3", DIFF_EV_STARTED, true},    {"s3", DIFF_EV_COMPLETED, false},
        {"s0", DIFF_EV_CANCELLED, false},
    };
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 5);
    for (size_t i = 0; i < 5; i++) {
        ck_assert_str_eq(ev[i].session_id, want[i].id);
        ck_assert_int_eq(ev[i].type, want[i].type);
        ck_assert_int_eq(ev[i].synthesized, want[i].synthesized);
    }
    ck_assert_int_eq(ev[4].reason, DIFF_REASON_VANISHED);
    fx_done(&f);
}
END_TEST

/* ---- unknown statuses ---- */

static void expect_unknown(fx_t *f, const char *const *want, size_t nwant, size_t count)
{
    const char *const *got;
    size_t n = diff_cycle_new_unknown_statuses(f->cy, &got);
    ck_assert_uint_eq(n, nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(got[i], want[i]);
    ck_assert_uint_eq(diff_cycle_unknown_count(f->cy), count);
}

START_TEST(test_unknown_statuses)
{
    fx_t f;
    fx_init(&f, 2, false);
    begin(&f);
    observe(&f, "u1", "weird");
    observe(&f, "u2", "weird");
    observe(&f, "u3", "odd");
    observe(&f, "k", "a");
    finish(&f);
    expect_unknown(&f, (const char *const[]){"weird", "odd"}, 2, 3);
    ck_assert_uint_eq(diff_cycle_observed(f.cy), 4);
    ck_assert_uint_eq(events(&f, NULL), 1); /* k only */
    ck_assert_uint_eq(changes(&f, NULL), 4);
    const diff_change_t *c = change_of(&f, "u1");
    ck_assert_int_eq(c->rec.state, DIFF_STATE_NONE);
    ck_assert_str_eq(c->rec.status, "weird");
    apply_and_close(&f);

    /* reported once per index lifetime; counted every time */
    begin(&f);
    observe(&f, "u1", "weird");
    observe(&f, "u2", "odd");
    observe(&f, "u3", "new");
    observe(&f, "k", "mystery");
    finish(&f);
    expect_unknown(&f, (const char *const[]){"new", "mystery"}, 2, 4);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_ptr_null(change_of(&f, "u1")); /* same unknown status: nothing new */
    ck_assert_ptr_null(change_of(&f, "k"));  /* known session: status kept */
    ck_assert_str_eq(change_of(&f, "u2")->rec.status, "odd");
    ck_assert_str_eq(change_of(&f, "u3")->rec.status, "new");
    apply_and_close(&f);

    diff_record_t r;
    ck_assert_int_eq(diff_index_get(f.ix, "k", &r), 0);
    ck_assert_int_eq(r.state, DIFF_STATE_ACTIVE);
    ck_assert_str_eq(r.status, "a");

    /* an unknown status keeps a session seen */
    begin(&f);
    observe(&f, "u1", "weird");
    observe(&f, "u2", "odd");
    observe(&f, "u3", "new");
    observe(&f, "k", "mystery");
    finish(&f);
    expect_unknown(&f, NULL, 0, 4);
    ck_assert_uint_eq(changes(&f, NULL), 0);
    apply_and_close(&f);

    /* the first known status of a NONE session is a first sighting */
    begin(&f);
    observe(&f, "u1", "a");
    finish(&f);
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 1);
    ck_assert_int_eq(ev[0].reason, DIFF_REASON_FIRST_SEEN);
    ck_assert_int_eq(ev[0].previous_state, DIFF_STATE_NONE);
    ck_assert_str_eq(ev[0].previous_status, "weird");
    fx_done(&f);
}
END_TEST

/* ---- proportional to churn ---- */

#define STEADY_SESSIONS 1000

static void observe_many(fx_t *f, size_t n, const char *raw)
{
    char id[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "sess-%zu", i);
        observe(f, id, raw);
    }
}

START_TEST(test_unchanged_no_change)
{
    fx_t f;
    fx_init(&f, 2, false);
    begin(&f);
    observe_many(&f, STEADY_SESSIONS, "a");
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), STEADY_SESSIONS);
    ck_assert_uint_eq(changes(&f, NULL), STEADY_SESSIONS);
    apply_and_close(&f);

    begin(&f);
    observe_many(&f, STEADY_SESSIONS, "a");
    finish(&f);
    ck_assert_uint_eq(diff_cycle_observed(f.cy), STEADY_SESSIONS);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_uint_eq(changes(&f, NULL), 0);
    apply_and_close(&f);
    ck_assert_uint_eq(diff_index_size(f.ix), STEADY_SESSIONS);
    fx_done(&f);
}
END_TEST

START_TEST(test_fingerprint_change_only)
{
    fx_t f;
    fx_init(&f, 2, false);
    put(&f, "s", DIFF_STATE_ACTIVE, "a", 0);
    begin(&f);
    const char *o = "{\"id\":\"s\",\"status\":\"a\",\"score\":1,\"progress\":42}";
    char err[128];
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "s", slen("s"), "a", slen("a"), o, strlen(o), err, sizeof(err)),
        0);
    uint64_t fp = diff_fingerprint(o, strlen(o));
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), 0);
    const diff_change_t *ch;
    ck_assert_uint_eq(changes(&f, &ch), 1);
    ck_assert_int_eq(ch[0].rec.state, DIFF_STATE_ACTIVE);
    ck_assert(ch[0].rec.fingerprint == fp);
    ck_assert(fp != rec_fp("s", "a"));
    apply_and_close(&f);
    diff_record_t r;
    ck_assert_int_eq(diff_index_get(f.ix, "s", &r), 0);
    ck_assert(r.fingerprint == fp);
    fx_done(&f);
}
END_TEST

/* ---- abandoned cycles ---- */

typedef struct ev_copy {
    char session_id[32];
    diff_event_type_t type;
    char id[DIFF_EVENT_ID_LEN];
} ev_copy_t;

static size_t copy_events(fx_t *f, ev_copy_t *out, size_t max)
{
    const diff_event_t *ev;
    size_t n = events(f, &ev);
    ck_assert_uint_le(n, max);
    for (size_t i = 0; i < n; i++) {
        snprintf(out[i].session_id, sizeof(out[i].session_id), "%s", ev[i].session_id);
        out[i].type = ev[i].type;
        memcpy(out[i].id, ev[i].id, DIFF_EVENT_ID_LEN);
    }
    return n;
}

static void run_abandon_input(fx_t *f)
{
    begin(f);
    observe(f, "s1", "a");
    observe(f, "s3", "c");
    finish(f);
}

static void expect_untouched(fx_t *f)
{
    diff_record_t r;
    ck_assert_uint_eq(diff_index_size(f->ix), 2);
    ck_assert_int_eq(diff_index_get(f->ix, "s1", &r), 0);
    ck_assert_int_eq(r.state, DIFF_STATE_PENDING);
    ck_assert_str_eq(r.status, "p");
    ck_assert_uint_eq(r.misses, 0);
    ck_assert_int_eq(diff_index_get(f->ix, "s2", &r), 0);
    ck_assert_int_eq(r.state, DIFF_STATE_ACTIVE);
    ck_assert_str_eq(r.status, "a");
    ck_assert_uint_eq(r.misses, 0);
    ck_assert_int_eq(diff_index_get(f->ix, "s3", &r), -1);
}

START_TEST(test_abandoned_cycle)
{
    fx_t f;
    fx_init(&f, 1, false);
    put(&f, "s1", DIFF_STATE_PENDING, "p", 0);
    put(&f, "s2", DIFF_STATE_ACTIVE, "a", 0);

    ev_copy_t first[8], again[8];
    size_t n1 = 0, mem = diff_index_memory(f.ix);
    for (int attempt = 0; attempt < 3; attempt++) {
        run_abandon_input(&f);
        size_t n = copy_events(&f, attempt == 0 ? first : again, 8);
        ck_assert_uint_eq(changes(&f, NULL), 3);
        diff_cycle_free(f.cy); /* delivery failed: nothing committed */
        f.cy = NULL;
        expect_untouched(&f);
        /* nothing stays behind, not even the raw status "c" the cycle
         * interned */
        ck_assert_uint_eq(diff_index_memory(f.ix), mem);
        if (attempt == 0) {
            n1 = n;
            ck_assert_uint_eq(n1, 4); /* s1 started, s3 started+completed, s2 vanished */
            continue;
        }
        ck_assert_uint_eq(n, n1);
        for (size_t i = 0; i < n1; i++) {
            ck_assert_str_eq(again[i].session_id, first[i].session_id);
            ck_assert_int_eq(again[i].type, first[i].type);
            ck_assert_str_eq(again[i].id, first[i].id);
        }
    }

    run_abandon_input(&f);
    ck_assert_uint_eq(events(&f, NULL), n1);
    apply_and_close(&f);
    diff_record_t r;
    ck_assert_uint_eq(diff_index_size(f.ix), 2);
    ck_assert_int_eq(diff_index_get(f.ix, "s1", &r), 0);
    ck_assert_int_eq(r.state, DIFF_STATE_ACTIVE);
    ck_assert_int_eq(diff_index_get(f.ix, "s3", &r), 0);
    ck_assert_int_eq(r.state, DIFF_STATE_COMPLETED);
    ck_assert_int_eq(diff_index_get(f.ix, "s2", &r), -1);
    fx_done(&f);
}
END_TEST

/* Sightings of an abandoned cycle do not count in the next one. */
START_TEST(test_abandoned_sightings)
{
    fx_t f;
    fx_init(&f, 1, false);
    put(&f, "s", DIFF_STATE_ACTIVE, "a", 0);
    begin(&f);
    observe(&f, "s", "a");
    finish(&f);
    ck_assert_uint_eq(changes(&f, NULL), 0);
    diff_cycle_free(f.cy);
    f.cy = NULL;

    begin(&f);
    finish(&f);
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 1);
    ck_assert_int_eq(ev[0].reason, DIFF_REASON_VANISHED);
    ck_assert_uint_eq(changes(&f, NULL), 1);
    fx_done(&f);
}
END_TEST

START_TEST(test_one_cycle_at_a_time)
{
    fx_t f;
    fx_init(&f, 1, false);
    begin(&f);
    ck_assert_ptr_null(diff_cycle_begin(f.ix, &f.opt));
    finish(&f);
    ck_assert_int_eq(diff_cycle_finish(f.cy), -1);
    char err[64] = "";
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "late", slen("late"), "a", slen("a"), NULL, 0, err, sizeof(err)),
        -1);
    ck_assert_str_ne(err, "");
    diff_cycle_free(f.cy);
    f.cy = NULL;
    begin(&f);

    diff_options_t bad = f.opt;
    bad.vanish_grace = 0;
    diff_cycle_free(f.cy);
    f.cy = NULL;
    ck_assert_ptr_null(diff_cycle_begin(f.ix, &bad));
    bad.vanish_grace = DIFF_MAX_GRACE + 1;
    ck_assert_ptr_null(diff_cycle_begin(f.ix, &bad));

    /* no status map: every status is unknown */
    diff_options_t nomap = f.opt;
    nomap.status_map = NULL;
    f.cy = diff_cycle_begin(f.ix, &nomap);
    ck_assert_ptr_nonnull(f.cy);
    observe(&f, "n", "a");
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_uint_eq(diff_cycle_unknown_count(f.cy), 1);
    diff_cycle_free(NULL);
    fx_done(&f);
}
END_TEST

/* ---- event ids ---- */

/* The expected id comes from the openssl command line, not from diff's code. */
START_TEST(test_event_id_known_answer)
{
    diff_event_type_t type = (diff_event_type_t)_i;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "printf 'src\\nsess-1\\n%s' | openssl dgst -sha256",
             diff_event_type_name(type));
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char line[256] = "";
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), p));
    ck_assert_int_eq(pclose(p), 0);
    /* "SHA2-256(stdin)= <hex>" or "(stdin)= <hex>" */
    const char *hex = strstr(line, "= ");
    ck_assert_ptr_nonnull(hex);
    hex += 2;
    ck_assert_uint_ge(strlen(hex), 64);

    char want[DIFF_EVENT_ID_LEN];
    memcpy(want, hex, DIFF_EVENT_ID_LEN - 1);
    want[DIFF_EVENT_ID_LEN - 1] = '\0';
    char got[DIFF_EVENT_ID_LEN];
    diff_event_id("src", "sess-1", type, got);
    ck_assert_str_eq(got, want);
}
END_TEST

START_TEST(test_event_id_distinct)
{
    char a[DIFF_EVENT_ID_LEN], b[DIFF_EVENT_ID_LEN], c[DIFF_EVENT_ID_LEN];
    diff_event_id("src", "s", DIFF_EV_STARTED, a);
    diff_event_id("src", "s", DIFF_EV_COMPLETED, b);
    diff_event_id("sr", "cs", DIFF_EV_STARTED, c);
    ck_assert_uint_eq(strlen(a), DIFF_EVENT_ID_LEN - 1);
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(a, c);
    for (const char *p = a; *p; p++)
        ck_assert((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
}
END_TEST

/* ---- record encoding ---- */

static const diff_record_t encode_rows[] = {
    {DIFF_STATE_NONE, 0, 0, ""},
    {DIFF_STATE_PENDING, 1, UINT64_C(0x0123456789abcdef), "Needs Proctor"},
    {DIFF_STATE_ACTIVE, DIFF_MAX_GRACE, UINT64_MAX, "a:b::c"},
    {DIFF_STATE_COMPLETED, 7, 1, "exam_finished"},
    {DIFF_STATE_CANCELLED, 42, UINT64_C(0xfedcba9876543210),
     "0123456789012345678901234567890123456789012345678901234567890123"},
};

START_TEST(test_record_round_trip)
{
    const diff_record_t *in = &encode_rows[_i];
    char buf[DIFF_RECORD_MAX];
    int n = diff_record_encode(in, buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_uint_eq((size_t)n, strlen(buf));
    diff_record_t out;
    char status[DIFF_STATUS_MAX + 1];
    ck_assert_int_eq(diff_record_decode(buf, (size_t)n, &out, status, sizeof(status)), 0);
    ck_assert_int_eq(out.state, in->state);
    ck_assert_uint_eq(out.misses, in->misses);
    ck_assert(out.fingerprint == in->fingerprint);
    ck_assert_str_eq(out.status, in->status);
    ck_assert_ptr_eq(out.status, status);
    /* too small a buffer fails instead of truncating */
    ck_assert_int_eq(diff_record_encode(in, buf, (size_t)n), -1);
}
END_TEST

START_TEST(test_record_encode_format)
{
    diff_record_t r = {DIFF_STATE_ACTIVE, 5, 0xff, "In Progress"};
    char buf[DIFF_RECORD_MAX];
    ck_assert_int_eq(diff_record_encode(&r, buf, sizeof(buf)), 32);
    ck_assert_str_eq(buf, "2:5:00000000000000ff:In Progress");
    r.status = NULL;
    ck_assert_int_gt(diff_record_encode(&r, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "2:5:00000000000000ff:");
    r.state = (diff_state_t)9;
    ck_assert_int_eq(diff_record_encode(&r, buf, sizeof(buf)), -1);
}
END_TEST

static const char *const malformed_rows[] = {
    "",
    "2",
    "2:",
    "5:0:0000000000000000:x", /* state out of range */
    "9:0:0000000000000000:x",
    "a:0:0000000000000000:x",
    "-1:0:0000000000000000:x",
    "2::0000000000000000:x",    /* no misses */
    "2:101:0000000000000000:x", /* misses above DIFF_MAX_GRACE */
    "2:1000:0000000000000000:x",
    "2:+1:0000000000000000:x",
    "2:1a:0000000000000000:x",
    "2-1:0000000000000000:x",
    "2:1:000000000000000g:x",  /* bad hex */
    "2:1:00000000000000:x",    /* short hex */
    "2:1:00000000000000000:x", /* long hex */
    "2:1:0000000000000000",    /* no status separator */
    "2:1:0000000000000000x",
    "2:1:0000000000000000:01234567890123456789012345678901234567890123456789012345678901234",
};
#define MALFORMED_ROWS (sizeof(malformed_rows) / sizeof(malformed_rows[0]))

START_TEST(test_record_malformed)
{
    const char *text = malformed_rows[_i];
    diff_record_t out;
    char status[DIFF_STATUS_MAX + 1];
    ck_assert_msg(diff_record_decode(text, strlen(text), &out, status, sizeof(status)) == -1,
                  "accepted \"%s\"", text);
}
END_TEST

START_TEST(test_record_decode_edges)
{
    diff_record_t out;
    char status[DIFF_STATUS_MAX + 1];
    /* an embedded NUL is not a status */
    static const char nul[] = "2:1:0000000000000000:a\0b";
    ck_assert_int_eq(diff_record_decode(nul, sizeof(nul) - 1, &out, status, sizeof(status)), -1);
    /* only len bytes are read */
    static const char longer[] = "2:1:0000000000000000:abcdef";
    ck_assert_int_eq(diff_record_decode(longer, 24, &out, status, sizeof(status)), 0);
    ck_assert_str_eq(out.status, "abc");
    /* too small a status buffer */
    ck_assert_int_eq(diff_record_decode(longer, strlen(longer), &out, status, 3), -1);
    /* leading zeros and upper-case hex are still numbers */
    static const char up[] = "1:007:ABCDEF0123456789:";
    ck_assert_int_eq(diff_record_decode(up, strlen(up), &out, status, sizeof(status)), 0);
    ck_assert_uint_eq(out.misses, 7);
    ck_assert(out.fingerprint == UINT64_C(0xabcdef0123456789));
    ck_assert_str_eq(out.status, "");
}
END_TEST

/* ---- fingerprints ---- */

static const struct {
    const char *a, *b;
    bool equal;
} fp_rows[] = {
    {"{\"a\":1,\"b\":2}", "{\"a\":1,\"b\":2}", true},
    /* the bytes as received: a record formatted differently has changed */
    {"{\"a\":1.0}", "{\"a\":1}", false},
    {"{\"a\": 1}", "{\"a\":1}", false},
    {"{\"a\":\"\\u00e9\"}", "{\"a\":\"\xc3\xa9\"}", false},
    {"{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}", false},
    {"{\"a\":1}", "{\"a\":\"1\"}", false},
    {"{\"a\":1}", "{\"a\":2}", false},
    {"{\"a\":true}", "{\"a\":false}", false},
    {"{\"a\":null}", "{\"b\":null}", false},
    {"{\"ab\":\"c\"}", "{\"a\":\"bc\"}", false},
    {"{\"a\":\"x\"}", "{\"a\":\"x \"}", false},
    {"[[1],2]", "[[1,2]]", false},
    {"[]", "{}", false},
    {"{\"a\":{}}", "{\"a\":[]}", false},
    {"[\"a\",\"b\"]", "[\"ab\"]", false},
    {"{\"a\":[1,{\"b\":[null]}]}", "{\"a\":[1,{\"b\":[null]}]}", true},
};

START_TEST(test_fingerprint)
{
    const char *a = fp_rows[_i].a, *b = fp_rows[_i].b;
    ck_assert_msg((diff_fingerprint(a, strlen(a)) == diff_fingerprint(b, strlen(b))) ==
                      fp_rows[_i].equal,
                  "%s vs %s", a, b);
    /* a span is hashed without what follows it in the page */
    char page[64];
    snprintf(page, sizeof(page), "%s,{\"next\":1}", a);
    ck_assert(diff_fingerprint(page, strlen(a)) == diff_fingerprint(a, strlen(a)));
}
END_TEST

/* ---- bounds ---- */

START_TEST(test_bounds)
{
    fx_t f;
    fx_init(&f, 2, false);
    begin(&f);
    char id[DIFF_ID_MAX + 2], st[DIFF_STATUS_MAX + 2], err[256];

    memset(id, 'i', DIFF_ID_MAX);
    id[DIFF_ID_MAX] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, id, slen(id), "a", slen("a"), NULL, 0, err, sizeof(err)), 0);
    id[DIFF_ID_MAX] = 'i';
    id[DIFF_ID_MAX + 1] = '\0';
    err[0] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, id, slen(id), "a", slen("a"), NULL, 0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "session id"));
    err[0] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "", slen(""), "a", slen("a"), NULL, 0, err, sizeof(err)), -1);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, NULL, slen(NULL), "a", slen("a"), NULL, 0, err, sizeof(err)), -1);

    memset(st, 's', DIFF_STATUS_MAX);
    st[DIFF_STATUS_MAX] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "s", slen("s"), st, slen(st), NULL, 0, err, sizeof(err)), 0);
    st[DIFF_STATUS_MAX] = 's';
    st[DIFF_STATUS_MAX + 1] = '\0';
    err[0] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "s", slen("s"), st, slen(st), NULL, 0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "status"));
    err[0] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "s", slen("s"), "", slen(""), NULL, 0, err, sizeof(err)), -1);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(diff_cycle_observe(f.cy, "s", slen("s"), NULL, slen(NULL), NULL, 0, NULL, 0),
                     -1);
    ck_assert_uint_eq(diff_cycle_observed(f.cy), 2);
    /* refused while a cycle is open: abandoning it may drop its statuses */
    diff_record_t r = {DIFF_STATE_ACTIVE, 0, 0, "a"};
    ck_assert_int_eq(diff_index_put(f.ix, "ok", &r), -1);
    diff_cycle_free(f.cy);
    f.cy = NULL;
    ck_assert_int_eq(diff_index_put(f.ix, "ok", &r), 0);

    /* index_put has the same bounds */
    ck_assert_int_eq(diff_index_put(f.ix, id, &r), -1);
    ck_assert_int_eq(diff_index_put(f.ix, "", &r), -1);
    r.status = st;
    ck_assert_int_eq(diff_index_put(f.ix, "ok", &r), -1);
    fx_done(&f);
}
END_TEST

START_TEST(test_too_many_statuses)
{
    fx_t f;
    fx_init(&f, 2, false);
    begin(&f);
    char id[32], st[32], err[256];
    for (int i = 0; i < DIFF_MAX_STATUSES; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        snprintf(st, sizeof(st), "st%04d", i);
        ck_assert_msg(
            diff_cycle_observe(f.cy, id, slen(id), st, slen(st), NULL, 0, err, sizeof(err)) == 0,
            "%d: %s", i, err);
    }
    err[0] = '\0';
    ck_assert_int_eq(diff_cycle_observe(f.cy, "one-more", slen("one-more"), "st-new",
                                        slen("st-new"), NULL, 0, err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "distinct"));
    /* statuses already interned still work */
    ck_assert_int_eq(diff_cycle_observe(f.cy, "again", slen("again"), "st0005", slen("st0005"),
                                        NULL, 0, err, sizeof(err)),
                     0);
    fx_done(&f);
}
END_TEST

/* A page of too many statuses fails its poll, and only that poll: the next
 * one interns a status of its own (issue 10, item 4). */
START_TEST(test_failed_cycle_interns_nothing)
{
    fx_t f;
    fx_init(&f, 2, false);
    put(&f, "old", DIFF_STATE_ACTIVE, "a", 0);
    size_t mem = diff_index_memory(f.ix);
    char id[32], st[32], err[256];
    for (int attempt = 0; attempt < 2; attempt++) {
        begin(&f);
        int i, rc = 0;
        for (i = 0; i < 1100 && rc == 0; i++) {
            snprintf(id, sizeof(id), "s%d", i);
            snprintf(st, sizeof(st), "st%04d", i);
            rc = diff_cycle_observe(f.cy, id, slen(id), st, slen(st), NULL, 0, err, sizeof(err));
        }
        ck_assert_int_eq(rc, -1);
        ck_assert_int_eq(i, DIFF_MAX_STATUSES); /* index 0 is "", "a" was there */
        ck_assert_ptr_nonnull(strstr(err, "distinct"));
        diff_cycle_free(f.cy);
        f.cy = NULL;
        ck_assert_uint_eq(diff_index_memory(f.ix), mem);
    }
    /* statuses the abandoned cycles saw first are not known to the next */
    begin(&f);
    observe(&f, "old", "a");
    observe(&f, "n", "IN_PROGRESS");
    observe(&f, "m", "st0001");
    finish(&f);
    expect_unknown(&f, (const char *const[]){"IN_PROGRESS", "st0001"}, 2, 2);
    apply_and_close(&f);
    diff_record_t r;
    ck_assert_int_eq(diff_index_get(f.ix, "n", &r), 0);
    ck_assert_str_eq(r.status, "IN_PROGRESS");
    ck_assert_int_eq(diff_index_get(f.ix, "old", &r), 0);
    ck_assert_str_eq(r.status, "a");

    /* an applied cycle's statuses stay */
    begin(&f);
    observe(&f, "old", "a");
    observe(&f, "n", "IN_PROGRESS");
    observe(&f, "m", "st0001");
    ck_assert_int_eq(diff_cycle_observe(f.cy, "q", slen("q"), "another", slen("another"), NULL, 0,
                                        err, sizeof(err)),
                     0);
    diff_cycle_free(f.cy);
    f.cy = NULL;
    ck_assert_int_eq(diff_index_get(f.ix, "m", &r), 0);
    ck_assert_str_eq(r.status, "st0001");
    fx_done(&f);
}
END_TEST

/* An unknown status first seen by an abandoned cycle is reported by the
 * next cycle: the abandoned one never reached its log. */
START_TEST(test_abandoned_cycle_reports_again)
{
    fx_t f;
    fx_init(&f, 2, false);
    put(&f, "k", DIFF_STATE_NONE, "weird", 0); /* interned by the load */
    begin(&f);
    observe(&f, "k", "weird");
    observe(&f, "u", "odd");
    diff_cycle_free(f.cy); /* a later page failed */
    f.cy = NULL;
    begin(&f);
    observe(&f, "k", "weird");
    observe(&f, "u", "odd");
    finish(&f);
    expect_unknown(&f, (const char *const[]){"weird", "odd"}, 2, 2);
    apply_and_close(&f);
    begin(&f);
    observe(&f, "k", "weird");
    observe(&f, "u", "odd");
    finish(&f);
    expect_unknown(&f, NULL, 0, 2);
    fx_done(&f);
}
END_TEST

/* Records one cycle may observe (issue 10, item 3). */
START_TEST(test_max_sessions)
{
    fx_t f;
    fx_init(&f, 2, true);
    char id[32], err[256];
    f.opt.max_sessions = 10;
    begin(&f);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        observe(&f, id, "a");
    }
    err[0] = '\0';
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "s0", slen("s0"), "a", slen("a"), NULL, 0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "more than 10 records in one poll"));
    ck_assert_ptr_nonnull(strstr(err, "max_sessions"));
    diff_cycle_free(f.cy);
    f.cy = NULL;
    ck_assert_uint_eq(diff_index_size(f.ix), 0);

    f.opt.max_sessions = 0; /* the default */
    begin(&f);
    for (int i = 0; i < DIFF_DEFAULT_MAX_SESSIONS; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        ck_assert_int_eq(
            diff_cycle_observe(f.cy, id, slen(id), "a", slen("a"), NULL, 0, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(diff_cycle_observe(f.cy, "one-more", slen("one-more"), "a", slen("a"), NULL, 0,
                                        err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "max_sessions"));
    fx_done(&f);
}
END_TEST

/* Bytes of the records test_retained_bytes feeds. */
#define BIG_PAD 5000

/* A record of ~5 KiB that does not compress: more than
 * DIFF_RETAINED_BYTES_PER_SESSION takes for several records. With
 * compressible, the pad repeats one letter instead. */
static size_t rec_big(const char *id, const char *raw, bool compressible, char *out, size_t n)
{
    char pad[BIG_PAD + 1];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < BIG_PAD; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pad[i] = compressible ? 'x' : (char)('a' + x % 26);
    }
    pad[BIG_PAD] = '\0';
    int len = snprintf(out, n, "{\"id\":\"%s\",\"status\":\"%s\",\"pad\":\"%s\"}", id, raw, pad);
    ck_assert(len > 0 && (size_t)len < n);
    return (size_t)len;
}

/* The records kept for events are bounded by max_sessions, counted as the
 * compressed bytes they take. */
START_TEST(test_retained_bytes)
{
    fx_t f;
    fx_init(&f, 2, false);
    f.opt.max_sessions = 30; /* 7680 bytes: one such record, not two */
    char err[256] = "", d[BIG_PAD + 128], e[BIG_PAD + 128], id[16];
    size_t nd = rec_big("d", "a", false, d, sizeof(d)), ne = rec_big("e", "a", false, e, sizeof(e));

    begin(&f);
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "d", slen("d"), "a", slen("a"), d, nd, err, sizeof(err)), 0);
    ck_assert_msg(
        diff_cycle_observe(f.cy, "e", slen("e"), "a", slen("a"), e, ne, err, sizeof(err)) == -1,
        "no bound");
    ck_assert_ptr_nonnull(strstr(err, "7680 bytes"));
    ck_assert_ptr_nonnull(strstr(err, "max_sessions"));
    diff_cycle_free(f.cy);
    f.cy = NULL;

    /* what compresses counts compressed: 20 records of 5 KiB fit in 7680 */
    begin(&f);
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "z%d", i);
        size_t n = rec_big(id, "a", true, d, sizeof(d));
        ck_assert_msg(
            diff_cycle_observe(f.cy, id, slen(id), "a", slen("a"), d, n, err, sizeof(err)) == 0,
            "%s", err);
    }
    size_t raw, held = diff_cycle_retained(f.cy, &raw);
    ck_assert_uint_ge(raw, 20 * BIG_PAD);
    ck_assert_uint_le(held, 7680);
    finish(&f);
    /* and every record reads back as it was given */
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 20);
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "z%d", i);
        size_t n = rec_big(id, "a", true, d, sizeof(d));
        ck_assert_uint_eq(ev[i].record_len, n);
        ck_assert(memcmp(ev[i].record, d, n) == 0);
    }
    diff_cycle_free(f.cy);
    f.cy = NULL;

    /* records that produce no event and no new last record are not kept,
     * so not counted: an active session seen as it was stored, and a
     * completed one whose record changed (a terminal session cannot
     * vanish) */
    diff_record_t same = {
        .state = DIFF_STATE_ACTIVE, .fingerprint = diff_fingerprint(d, nd), .status = "a"};
    ck_assert_int_eq(diff_index_put(f.ix, "d", &same), 0);
    put(&f, "e", DIFF_STATE_COMPLETED, "c", 0);
    begin(&f);
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "d", slen("d"), "a", slen("a"), d, nd, err, sizeof(err)), 0);
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "e", slen("e"), "c", slen("c"), e, ne, err, sizeof(err)), 0);
    ck_assert_uint_eq(diff_cycle_retained(f.cy, NULL), 0);
    fx_done(&f);
}
END_TEST

/* RFC 3629 well-formed sequences, and the offsets of the first bad byte. */
static const struct {
    const char *s;
    int ok;
    size_t bad;
} utf8_rows[] = {
    {"plain", 1, 0},
    {"\xc3\xa9t\xc3\xa9", 1, 0}, /* U+00E9 */
    {"\xe2\x82\xac", 1, 0},      /* U+20AC */
    {"\xef\xbf\xbf", 1, 0},      /* U+FFFF */
    {"\xf0\x9f\x98\x80", 1, 0},  /* U+1F600 */
    {"\xf4\x8f\xbf\xbf", 1, 0},  /* U+10FFFF */
    {"s-\xff", 0, 2},            /* never in UTF-8 */
    {"s-\x80", 0, 2},            /* a lone continuation byte */
    {"ab\xc0\xaf", 0, 2},        /* overlong '/' */
    {"\xe0\x80\xaf", 0, 0},      /* overlong '/' in three bytes */
    {"\xf0\x80\x80\xaf", 0, 0},  /* overlong in four */
    {"x\xed\xa0\x80", 0, 1},     /* U+D800, a surrogate */
    {"\xed\xbf\xbf", 0, 0},      /* U+DFFF */
    {"\xf4\x90\x80\x80", 0, 0},  /* above U+10FFFF */
    {"\xf5\x80\x80\x80", 0, 0},
    {"abc\xe2\x82", 0, 3},   /* cut short */
    {"\xe2\x28\xa1", 0, 0},  /* second byte not a continuation */
    {"\xf0\x9f\x98(", 0, 0}, /* fourth byte not a continuation */
};

START_TEST(test_utf8)
{
    size_t bad = 99;
    const char *s = utf8_rows[_i].s;
    int rc = diff_utf8_check(s, strlen(s), &bad);
    ck_assert_msg(rc == (utf8_rows[_i].ok ? 0 : -1), "row %d", _i);
    if (!utf8_rows[_i].ok)
        ck_assert_uint_eq(bad, utf8_rows[_i].bad);
}
END_TEST

/* The diff refuses ids and statuses that are not UTF-8 itself, whatever
 * its caller checked (issue 10, item 5). */
START_TEST(test_observe_refuses_bad_utf8)
{
    fx_t f;
    fx_init(&f, 2, false);
    begin(&f);
    char err[256] = "";
    ck_assert_int_eq(diff_cycle_observe(f.cy, "s-\xff", slen("s-\xff"), "a", slen("a"), NULL, 0,
                                        err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "session id is not UTF-8 (byte 2"));
    ck_assert_ptr_null(strchr(err, '\xff'));
    ck_assert_int_eq(diff_cycle_observe(f.cy, "s", slen("s"), "IN_\xed\xa0\x80",
                                        slen("IN_\xed\xa0\x80"), NULL, 0, err, sizeof(err)),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "not UTF-8 (byte 3"));
    ck_assert_uint_eq(diff_cycle_observed(f.cy), 0);
    observe(&f, "s-\xc3\xa9", "a");
    finish(&f);
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 1);
    ck_assert_str_eq(ev[0].session_id, "s-\xc3\xa9");
    fx_done(&f);
}
END_TEST

/* Ids and statuses arrive with their lengths, as spans of a larger buffer
 * (the page): the diff reads those bytes only, and an id holding a NUL,
 * which no event or key could carry, fails the page. */
START_TEST(test_observe_takes_spans)
{
    fx_t f;
    fx_init(&f, 2, false);
    put(&f, "abc", DIFF_STATE_PENDING, "p", 0);
    begin(&f);
    char err[256] = "";
    const char page[] = "abcdef\"activeX";
    /* "abc" of "abcdef", status "a" of "active" */
    ck_assert_int_eq(diff_cycle_observe(f.cy, page, 3, page + 7, 1, NULL, 0, err, sizeof(err)), 0);
    /* "abcd" is another session than "abc", and "abcd" of "abcdef" is it */
    ck_assert_int_eq(diff_cycle_observe(f.cy, page, 4, page + 7, 6, NULL, 0, err, sizeof(err)), 0);
    ck_assert_int_eq(diff_cycle_observe(f.cy, "ab\0c", 4, "a", 1, NULL, 0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "session id holds a NUL (byte 2"));
    ck_assert_int_eq(diff_cycle_observe(f.cy, "s", 1, "a\0", 2, NULL, 0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "holds a NUL (byte 1"));
    /* a length past the bound is refused before its bytes are read */
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "", DIFF_ID_MAX + 1, "a", 1, NULL, 0, err, sizeof(err)), -1);
    ck_assert_int_eq(
        diff_cycle_observe(f.cy, "s", 1, "", DIFF_STATUS_MAX + 1, NULL, 0, err, sizeof(err)), -1);
    ck_assert_uint_eq(diff_cycle_observed(f.cy), 2);
    finish(&f);
    const diff_event_t *ev;
    ck_assert_uint_eq(events(&f, &ev), 1);
    ck_assert_str_eq(ev[0].session_id, "abc");
    ck_assert_str_eq(ev[0].status, "a");
    apply_and_close(&f);
    diff_record_t r;
    ck_assert_int_eq(diff_index_get(f.ix, "abcd", &r), 0);
    ck_assert_str_eq(r.status, "active");
    ck_assert_int_eq(diff_index_get(f.ix, "ab", NULL), -1);
    fx_done(&f);
}
END_TEST

/* ---- the index ---- */

START_TEST(test_index_put_get_clear)
{
    diff_index_t *ix = diff_index_new();
    ck_assert_ptr_nonnull(ix);
    diff_record_t r = {DIFF_STATE_ACTIVE, 3, 77, "In Progress"}, out;
    ck_assert_int_eq(diff_index_put(ix, "s", &r), 0);
    ck_assert_int_eq(diff_index_get(ix, "s", &out), 0);
    ck_assert_int_eq(out.state, DIFF_STATE_ACTIVE);
    ck_assert_uint_eq(out.misses, 3);
    ck_assert(out.fingerprint == 77);
    ck_assert_str_eq(out.status, "In Progress");

    r.state = DIFF_STATE_COMPLETED;
    r.status = NULL;
    ck_assert_int_eq(diff_index_put(ix, "s", &r), 0);
    ck_assert_uint_eq(diff_index_size(ix), 1);
    ck_assert_int_eq(diff_index_get(ix, "s", &out), 0);
    ck_assert_int_eq(out.state, DIFF_STATE_COMPLETED);
    ck_assert_str_eq(out.status, "");
    ck_assert_int_eq(diff_index_get(ix, "t", &out), -1);
    r.state = (diff_state_t)7;
    ck_assert_int_eq(diff_index_put(ix, "bad", &r), -1);

    size_t empty = diff_index_memory(ix);
    diff_index_clear(ix);
    ck_assert_uint_eq(diff_index_size(ix), 0);
    ck_assert_uint_lt(diff_index_memory(ix), empty);
    diff_index_free(ix);
    diff_index_free(NULL);
}
END_TEST

/* Mass removal: every survivor is still found (backward-shift deletion). */
/* The per-state counts follow loads, transitions, removals and clears. */
static void assert_states(fx_t *f, size_t pending, size_t active, size_t completed,
                          size_t cancelled)
{
    size_t n[DIFF_STATE_COUNT];
    diff_index_states(f->ix, n);
    ck_assert_uint_eq(n[DIFF_STATE_NONE], 0);
    ck_assert_uint_eq(n[DIFF_STATE_PENDING], pending);
    ck_assert_uint_eq(n[DIFF_STATE_ACTIVE], active);
    ck_assert_uint_eq(n[DIFF_STATE_COMPLETED], completed);
    ck_assert_uint_eq(n[DIFF_STATE_CANCELLED], cancelled);
}

START_TEST(test_index_state_counts)
{
    fx_t f;
    fx_init(&f, 1, false);
    put(&f, "p1", DIFF_STATE_PENDING, "p", 0);
    put(&f, "p2", DIFF_STATE_PENDING, "p", 0);
    put(&f, "a1", DIFF_STATE_ACTIVE, "a", 0);
    put(&f, "a1", DIFF_STATE_COMPLETED, "c", 0); /* a replacing put moves it */
    assert_states(&f, 2, 0, 1, 0);

    /* p1 starts, n1 arrives active, p2 vanishes: cancelled and forgotten */
    begin(&f);
    observe(&f, "p1", "a");
    observe(&f, "a1", "c");
    observe(&f, "n1", "a");
    finish(&f);
    assert_states(&f, 2, 0, 1, 0); /* nothing moves before apply */
    apply_and_close(&f);
    assert_states(&f, 0, 2, 1, 0);

    /* p1 completes, n1 is cancelled, a1 (terminal) vanishes silently */
    begin(&f);
    observe(&f, "p1", "c");
    observe(&f, "n1", "x");
    finish(&f);
    apply_and_close(&f);
    assert_states(&f, 0, 0, 1, 1);
    ck_assert_uint_eq(diff_index_size(f.ix), 2);

    diff_index_clear(f.ix);
    assert_states(&f, 0, 0, 0, 0);
    fx_done(&f);
}
END_TEST

START_TEST(test_index_mass_removal)
{
    fx_t f;
    fx_init(&f, 1, false);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        put(&f, id, DIFF_STATE_COMPLETED, "c", 0);
    }
    size_t full = diff_index_memory(f.ix);
    begin(&f);
    for (int i = 0; i < 5000; i += 10) {
        snprintf(id, sizeof(id), "m%d", i);
        observe(&f, id, "c");
    }
    finish(&f);
    ck_assert_uint_eq(events(&f, NULL), 0);
    ck_assert_uint_eq(changes(&f, NULL), 4500);
    apply_and_close(&f);
    ck_assert_uint_eq(diff_index_size(f.ix), 500);
    ck_assert_uint_lt(diff_index_memory(f.ix), full / 5);
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        ck_assert_int_eq(diff_index_get(f.ix, id, NULL), i % 10 == 0 ? 0 : -1);
    }
    fx_done(&f);
}
END_TEST

/* ---- memory ---- */

static void uuid_like(char out[UUID_LEN + 1], unsigned i)
{
    snprintf(out, UUID_LEN + 1, "%08x-%04x-4%03x-8%03x-%012x", i * 2654435761u, i & 0xffff,
             (i >> 4) & 0xfff, (i >> 8) & 0xfff, i);
}

START_TEST(test_memory_per_session)
{
    struct mallinfo2 before = mallinfo2();
    fx_t f;
    fx_init(&f, 2, true);
    char id[UUID_LEN + 1];
    begin(&f);
    for (unsigned i = 0; i < MEM_SESSIONS; i++) {
        uuid_like(id, i);
        ck_assert_uint_eq(strlen(id), UUID_LEN);
        char err[128];
        ck_assert_int_eq(
            diff_cycle_observe(f.cy, id, slen(id), "a", slen("a"), NULL, 0, err, sizeof(err)), 0);
    }
    finish(&f);
    ck_assert_uint_eq(changes(&f, NULL), MEM_SESSIONS);
    apply_and_close(&f);
    ck_assert_uint_eq(diff_index_size(f.ix), MEM_SESSIONS);

    size_t mem = diff_index_memory(f.ix);
    double per = (double)mem / MEM_SESSIONS;
    struct mallinfo2 after = mallinfo2();
    /* the status map and index struct are noise at this scale */
    double measured =
        (double)((after.uordblks + after.hblkhd) - (before.uordblks + before.hblkhd)) /
        MEM_SESSIONS;
    /* ASan and valgrind replace malloc, and mallinfo2() then reports nothing */
    bool glibc_counts = measured > 0;
    printf("diff index: %d sessions, %d-char ids: %zu bytes, %.1f bytes/session "
           "(%.1f beyond the id); malloc in use: %.1f bytes/session%s\n",
           MEM_SESSIONS, UUID_LEN, mem, per, per - UUID_LEN, measured,
           glibc_counts ? "" : " (allocator replaced: not comparable)");
    ck_assert_msg(per < UUID_LEN + MEM_BUDGET_PER_SESSION, "%.1f bytes per session", per);
    if (glibc_counts) {
        /* diff_index_memory() is honest: within 10% of what malloc reports */
        ck_assert_msg(per > measured * 0.9 && per < measured * 1.1, "reported %.1f, malloc %.1f",
                      per, measured);
    }
    fx_done(&f);
}
END_TEST

static Suite *diff_suite(void)
{
    Suite *s = suite_create("diff");
    TCase *tc = tcase_create("names");
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("status_map");
    tcase_add_loop_test(tc, test_status_map_rows, 0, (int)MAP_ROWS);
    tcase_add_test(tc, test_status_map_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("lifecycle");
    tcase_add_loop_test(tc, test_transition, 0, (int)(2 * TRANSITIONS));
    tcase_add_loop_test(tc, test_vanish, 1, 4);
    tcase_add_test(tc, test_misses_reset);
    tcase_add_loop_test(tc, test_last_records, 0, 2);
    tcase_add_test(tc, test_last_record_kept_while_missed);
    tcase_add_test(tc, test_vanished_keep);
    tcase_add_test(tc, test_vanished_keep_bound);
    tcase_add_test(tc, test_outage_synthesizes);
    tcase_add_test(tc, test_baseline);
    tcase_add_loop_test(tc, test_duplicates, 0, (int)DUP_ROWS);
    tcase_add_test(tc, test_event_order);
    tcase_add_test(tc, test_unknown_statuses);
    suite_add_tcase(s, tc);

    tc = tcase_create("cycle");
    tcase_add_test(tc, test_unchanged_no_change);
    tcase_add_test(tc, test_fingerprint_change_only);
    tcase_add_test(tc, test_abandoned_cycle);
    tcase_add_test(tc, test_abandoned_sightings);
    tcase_add_test(tc, test_one_cycle_at_a_time);
    tcase_add_test(tc, test_bounds);
    tcase_add_test(tc, test_too_many_statuses);
    tcase_add_test(tc, test_failed_cycle_interns_nothing);
    tcase_add_test(tc, test_abandoned_cycle_reports_again);
    tcase_add_test(tc, test_max_sessions);
    tcase_add_test(tc, test_retained_bytes);
    tcase_add_loop_test(tc, test_utf8, 0, (int)(sizeof(utf8_rows) / sizeof(utf8_rows[0])));
    tcase_add_test(tc, test_observe_refuses_bad_utf8);
    tcase_add_test(tc, test_observe_takes_spans);
    suite_add_tcase(s, tc);

    tc = tcase_create("encoding");
    tcase_add_loop_test(tc, test_event_id_known_answer, 0, DIFF_EV_COUNT);
    tcase_add_test(tc, test_event_id_distinct);
    tcase_add_loop_test(tc, test_record_round_trip, 0,
                        (int)(sizeof(encode_rows) / sizeof(encode_rows[0])));
    tcase_add_test(tc, test_record_encode_format);
    tcase_add_loop_test(tc, test_record_malformed, 0, (int)MALFORMED_ROWS);
    tcase_add_test(tc, test_record_decode_edges);
    tcase_add_loop_test(tc, test_fingerprint, 0, (int)(sizeof(fp_rows) / sizeof(fp_rows[0])));
    suite_add_tcase(s, tc);

    tc = tcase_create("index");
    tcase_add_test(tc, test_index_put_get_clear);
    tcase_add_test(tc, test_index_mass_removal);
    tcase_add_test(tc, test_index_state_counts);
    tcase_add_test(tc, test_memory_per_session);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(diff_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
