/*
 * sim_pop.c: the generic session population of sb-provider-sim (see sim.c).
 *
 * Sessions live in one array ordered by (key_ms, id) and are never removed:
 * a session that disappears upstream only changes state to GONE, so a
 * position, once given, names the same session forever. New sessions get a
 * key_ms later than every existing one, which keeps the array sorted by
 * appending. One Fenwick tree per state over the positions answers "how
 * many sessions in these states before position p" and "where is the k-th
 * one" in O(log n); that is what lets keyset and offset pages cost
 * O(page * log n) with 100,000s of sessions and churn between pages.
 *
 * Ground truth: every transition is written to the truth file as one JSON
 * line, {"tick":T,"session_id":"...","from":"none","to":"active"}, and the
 * file is flushed before the tick returns.
 */
#include "sim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static const struct {
    const char *name;
    const char *subject;
} test_table[] = {
    {"English Smart Initial Assessment", "English"},
    {"Maths Smart Initial Assessment", "Maths"},
    {"Science Smart Initial Assessment", "Science"},
    {"English Smart Progress Assessment", "English"},
    {"Maths Smart Progress Assessment", "Maths"},
    {"Computing Smart Initial Assessment", "Computing"},
};
#define NTESTS (sizeof(test_table) / sizeof(test_table[0]))

static const char *const first_names[] = {
    "John",  "Jane", "Amir",  "Chloe", "Oliver", "Priya", "Liam",  "Sofia", "Noah",   "Aisha",
    "Ethan", "Maya", "Lucas", "Zara",  "Jack",   "Emily", "Mateo", "Hana",  "Samuel", "Ines",
};
static const char *const last_names[] = {
    "Doe",    "Smith",  "Khan",     "Jones", "Garcia", "Patel",  "Brown",
    "Nowak",  "Okafor", "Rossi",    "Evans", "Murphy", "Nguyen", "Silva",
    "Taylor", "Wilson", "Kowalski", "Ali",   "Moreau", "Berg",
};
#define NFIRST (sizeof(first_names) / sizeof(first_names[0]))
#define NLAST (sizeof(last_names) / sizeof(last_names[0]))

struct sim_pop {
    struct sim_session *s;
    size_t n;
    size_t cap; /* of s and of the trees; a power of two */
    /* 1-based Fenwick trees over positions, one per state but SIM_NONE. */
    uint32_t *tree[SIM_NSTATES];
    size_t count[SIM_NSTATES];
    uint64_t rng[4];
    uint64_t seed;
    uint32_t users;
    struct sim_test tests[NTESTS];
    int64_t clock_start_ms;
    int64_t tick_ms;
    uint64_t tick;
    int64_t last_key;
    int seeded;
    FILE *truth;
    const char *truth_path;
};

const char *sim_state_name(enum sim_state s)
{
    static const char *const names[SIM_NSTATES] = {"none",      "pending",   "active",
                                                   "completed", "cancelled", "gone"};
    return (unsigned)s < SIM_NSTATES ? names[s] : "?";
}

/* xoshiro256**: fast, and the same seed gives the same run. */
static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct sim_pop *p)
{
    uint64_t *s = p->rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Modulo bias is irrelevant at these sizes. */
static uint64_t rng_below(struct sim_pop *p, uint64_t n)
{
    return n ? rng_next(p) % n : 0;
}

static int64_t wall_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int64_t sim_pop_now(const struct sim_pop *p)
{
    if (p->clock_start_ms)
        return p->clock_start_ms + (int64_t)p->tick * p->tick_ms;
    return wall_ms();
}

uint64_t sim_pop_tick_no(const struct sim_pop *p)
{
    return p->tick;
}

size_t sim_pop_size(const struct sim_pop *p)
{
    return p->n;
}

const struct sim_session *sim_pop_at(const struct sim_pop *p, size_t pos)
{
    return &p->s[pos];
}

uint32_t sim_pop_users(const struct sim_pop *p)
{
    return p->users;
}

unsigned sim_pop_tests(const struct sim_pop *p)
{
    return (unsigned)NTESTS;
}

const struct sim_test *sim_pop_test(const struct sim_pop *p, unsigned idx)
{
    return &p->tests[idx % NTESTS];
}

void sim_pop_user(const struct sim_pop *p, uint32_t idx, struct sim_user *u)
{
    static const char *const genders[] = {"male", "female", "other", "unknown"};
    uint64_t st = p->seed ^ (0x75736572ULL << 32) ^ ((uint64_t)idx * 0x9e3779b97f4a7c15ULL);
    uint64_t hi = sim_splitmix64(&st), lo = sim_splitmix64(&st), r = sim_splitmix64(&st);
    size_t i;

    sim_uuid_format(hi, lo, u->id);
    snprintf(u->first, sizeof(u->first), "%s", first_names[r % NFIRST]);
    snprintf(u->last, sizeof(u->last), "%s", last_names[(r >> 8) % NLAST]);
    snprintf(u->full, sizeof(u->full), "%s %s", u->first, u->last);
    snprintf(u->username, sizeof(u->username), "%s_%s_%u", u->first, u->last, (unsigned)idx);
    for (i = 0; u->username[i]; i++)
        if (u->username[i] >= 'A' && u->username[i] <= 'Z')
            u->username[i] = (char)(u->username[i] - 'A' + 'a');
    snprintf(u->email, sizeof(u->email), "%s@example.com", u->username);
    u->gender = genders[(r >> 16) % 4];
    snprintf(u->birth_date, sizeof(u->birth_date), "%04u-%02u-%02u",
             (unsigned)(2006 + (r >> 24) % 9), (unsigned)(1 + (r >> 32) % 12),
             (unsigned)(1 + (r >> 40) % 28));
    /* Like the seeds: some users carry an external identifier, some not. */
    if (idx % 3 == 0)
        snprintf(u->external_id, sizeof(u->external_id), "External_ID_%u", (unsigned)idx);
    else
        u->external_id[0] = '\0';
}

/* ---- Fenwick trees --------------------------------------------------- */

static void tree_add(struct sim_pop *p, unsigned state, size_t pos, int delta)
{
    uint32_t *t = p->tree[state];

    for (size_t i = pos + 1; i <= p->cap; i += i & (~i + 1))
        t[i] = (uint32_t)((int64_t)t[i] + delta);
}

static size_t tree_prefix(const struct sim_pop *p, unsigned state, size_t pos)
{
    const uint32_t *t = p->tree[state];
    size_t sum = 0;

    for (size_t i = pos; i > 0; i -= i & (~i + 1))
        sum += t[i];
    return sum;
}

size_t sim_pop_rank(const struct sim_pop *p, unsigned mask, size_t pos)
{
    size_t sum = 0;

    if (pos > p->n)
        pos = p->n;
    for (unsigned s = SIM_PENDING; s < SIM_NSTATES; s++)
        if (mask & SIM_MASK(s))
            sum += tree_prefix(p, s, pos);
    return sum;
}

size_t sim_pop_count(const struct sim_pop *p, unsigned mask)
{
    size_t sum = 0;

    for (unsigned s = SIM_PENDING; s < SIM_NSTATES; s++)
        if (mask & SIM_MASK(s))
            sum += p->count[s];
    return sum;
}

size_t sim_pop_select(const struct sim_pop *p, unsigned mask, size_t k)
{
    size_t pos = 0, rem = k + 1;

    /* Descend the implicit tree: at each step take the left part whole when
     * it holds fewer than rem matching sessions. */
    for (size_t step = p->cap; step; step >>= 1) {
        size_t sum = 0;
        if (pos + step > p->cap)
            continue;
        for (unsigned s = SIM_PENDING; s < SIM_NSTATES; s++)
            if (mask & SIM_MASK(s))
                sum += p->tree[s][pos + step];
        if (sum < rem) {
            pos += step;
            rem -= sum;
        }
    }
    return pos;
}

/* Grows the array and the trees to hold at least need positions; the trees
 * are rebuilt in O(cap). Nothing changes on failure. */
static int reserve(struct sim_pop *p, size_t need)
{
    size_t cap = p->cap;
    struct sim_session *s;
    uint32_t *trees[SIM_NSTATES] = {NULL};

    if (need <= p->cap)
        return 0;
    while (cap < need)
        cap *= 2;
    for (unsigned st = SIM_PENDING; st < SIM_NSTATES; st++) {
        trees[st] = calloc(cap + 1, sizeof(uint32_t));
        if (!trees[st])
            goto fail;
    }
    s = realloc(p->s, cap * sizeof(*s));
    if (!s)
        goto fail;
    p->s = s;
    for (unsigned st = SIM_PENDING; st < SIM_NSTATES; st++) {
        uint32_t *t = trees[st];
        for (size_t i = 1; i <= cap; i++) {
            size_t parent = i + (i & (~i + 1));
            if (i <= p->n && p->s[i - 1].state == st)
                t[i]++;
            if (parent <= cap)
                t[parent] += t[i];
        }
        free(p->tree[st]);
        p->tree[st] = t;
    }
    p->cap = cap;
    return 0;
fail:
    for (unsigned st = SIM_PENDING; st < SIM_NSTATES; st++)
        free(trees[st]);
    return -1;
}

static int key_cmp(int64_t ams, const char *aid, int64_t bms, const char *bid)
{
    if (ams != bms)
        return ams < bms ? -1 : 1;
    if (!aid || !bid)
        return aid ? 1 : bid ? -1 : 0;
    return strcmp(aid, bid);
}

size_t sim_pop_bound(const struct sim_pop *p, int64_t key_ms, const char *id, int strict)
{
    size_t lo = 0, hi = p->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(p->s[mid].key_ms, p->s[mid].id, key_ms, id);
        if (c < 0 || (strict && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- changes --------------------------------------------------------- */

static void truth_line(struct sim_pop *p, const struct sim_session *s, unsigned from, unsigned to)
{
    if (!p->truth)
        return;
    fprintf(p->truth, "{\"tick\":%llu,\"session_id\":\"%s\",\"from\":\"%s\",\"to\":\"%s\"}\n",
            (unsigned long long)p->tick, s->id, sim_state_name(from), sim_state_name(to));
}

static int truth_flush(struct sim_pop *p)
{
    if (p->truth && (fflush(p->truth) != 0 || ferror(p->truth))) {
        fprintf(stderr, "sb-provider-sim: writing %s: %s\n", p->truth_path, strerror(errno));
        clearerr(p->truth);
        return -1;
    }
    return 0;
}

static void set_state(struct sim_pop *p, size_t pos, unsigned to)
{
    unsigned from = p->s[pos].state;

    tree_add(p, from, pos, -1);
    p->count[from]--;
    tree_add(p, to, pos, 1);
    p->count[to]++;
    p->s[pos].state = (uint8_t)to;
}

static void new_session(struct sim_pop *p, struct sim_session *s, int64_t key_ms, unsigned state)
{
    uint64_t hi = rng_next(p), lo = rng_next(p), r = rng_next(p);

    memset(s, 0, sizeof(*s));
    sim_uuid_format(hi, lo, s->id);
    s->state = (uint8_t)state;
    s->outcome = (uint8_t)r;
    s->test = (uint16_t)((r >> 8) % NTESTS);
    s->user = (uint32_t)((r >> 24) % p->users);
    s->key_ms = key_ms;
    s->start_ms = state == SIM_PENDING ? 0 : key_ms;
}

static int session_cmp(const void *a, const void *b)
{
    const struct sim_session *x = a, *y = b;

    return key_cmp(x->key_ms, x->id, y->key_ms, y->id);
}

/* Appends sessions sorted by (key_ms, id), all later than the last one. */
static void append_sorted(struct sim_pop *p, const struct sim_session *batch, size_t n,
                          struct sim_transition *tr, size_t *ntr)
{
    for (size_t i = 0; i < n; i++) {
        size_t pos = p->n++;
        p->s[pos] = batch[i];
        tree_add(p, batch[i].state, pos, 1);
        p->count[batch[i].state]++;
        p->last_key = batch[i].key_ms;
        truth_line(p, &p->s[pos], SIM_NONE, batch[i].state);
        if (tr)
            tr[(*ntr)++] = (struct sim_transition){(uint32_t)pos, SIM_NONE, batch[i].state};
    }
}

int sim_pop_seed(struct sim_pop *p, uint32_t pending, uint32_t active, uint32_t completed,
                 char *err, size_t errlen)
{
    static const int64_t min = 60 * 1000, hour = 3600 * 1000, day = 24 * hour;
    size_t total = (size_t)pending + active + completed, i = 0;
    int64_t now = sim_pop_now(p);
    struct sim_session *batch;

    if (p->seeded || p->tick) {
        snprintf(err, errlen, "the population is already seeded");
        return -1;
    }
    if (total > SIM_MAX_SESSIONS) {
        snprintf(err, errlen, "at most %u sessions", SIM_MAX_SESSIONS);
        return -1;
    }
    batch = malloc((total ? total : 1) * sizeof(*batch));
    if (!batch || reserve(p, total) < 0) {
        free(batch);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Times in the past, inside a 7-day lookback: pending ones created in
     * the last hour, active ones started in the last 2 hours, completed ones
     * started 3 hours to 6 days ago and lasting 10 minutes to 2 hours. */
    for (uint32_t k = 0; k < pending; k++, i++) {
        new_session(p, &batch[i], now - min - (int64_t)rng_below(p, (uint64_t)hour), SIM_PENDING);
    }
    for (uint32_t k = 0; k < active; k++, i++) {
        new_session(p, &batch[i], now - min - (int64_t)rng_below(p, (uint64_t)(2 * hour)),
                    SIM_ACTIVE);
    }
    for (uint32_t k = 0; k < completed; k++, i++) {
        int64_t start = now - 3 * hour - (int64_t)rng_below(p, (uint64_t)(6 * day - 3 * hour));
        new_session(p, &batch[i], start, SIM_COMPLETED);
        batch[i].end_ms = start + 10 * min + (int64_t)rng_below(p, (uint64_t)(110 * min));
    }
    qsort(batch, total, sizeof(*batch), session_cmp);
    append_sorted(p, batch, total, NULL, NULL);
    free(batch);
    p->seeded = 1;
    if (p->last_key < now - 1)
        p->last_key = now - 1;
    return truth_flush(p) == 0 ? 0 : (snprintf(err, errlen, "cannot write the truth file"), -1);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Moves up to n random sessions from the states in mask to state to. */
static void move_random(struct sim_pop *p, unsigned mask, unsigned to, uint32_t *n, int64_t now,
                        struct sim_transition *tr, size_t *ntr)
{
    uint32_t done = 0;

    for (; done < *n; done++) {
        size_t avail = sim_pop_count(p, mask), pos;
        struct sim_session *s;
        unsigned from;

        if (!avail)
            break;
        pos = sim_pop_select(p, mask, (size_t)rng_below(p, avail));
        s = &p->s[pos];
        from = s->state;
        set_state(p, pos, to);
        if (to == SIM_ACTIVE)
            s->start_ms = now;
        if (to == SIM_COMPLETED || to == SIM_CANCELLED)
            s->end_ms = now > s->start_ms ? now : s->start_ms + 1;
        truth_line(p, s, from, to);
        tr[(*ntr)++] = (struct sim_transition){(uint32_t)pos, (uint8_t)from, (uint8_t)to};
    }
    *n = done;
}

static int id_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sim_session *)a)->id, ((const struct sim_session *)b)->id);
}

int sim_pop_tick(struct sim_pop *p, struct sim_tick_spec *spec, struct sim_transition **out,
                 size_t *nout, char *err, size_t errlen)
{
    const unsigned terminal = SIM_MASK(SIM_COMPLETED) | SIM_MASK(SIM_CANCELLED);
    size_t fresh = (size_t)spec->started + spec->pending, ntr = 0, bound;
    struct sim_transition *tr;
    struct sim_session *batch;
    int64_t now, key;

    *out = NULL;
    *nout = 0;
    if (fresh > SIM_MAX_SESSIONS - p->n) {
        snprintf(err, errlen, "the population would exceed %u sessions", SIM_MAX_SESSIONS);
        return -1;
    }
    /* Every count is bounded by what exists before the tick, plus fresh. */
    bound = fresh + min_size(spec->purged, sim_pop_count(p, terminal)) +
            min_size(spec->completed, p->count[SIM_ACTIVE]) +
            min_size(spec->vanished, p->count[SIM_ACTIVE]) +
            min_size(spec->cancelled, p->count[SIM_ACTIVE] + p->count[SIM_PENDING]) +
            min_size(spec->activated, p->count[SIM_PENDING]);
    tr = malloc((bound ? bound : 1) * sizeof(*tr));
    batch = malloc((fresh ? fresh : 1) * sizeof(*batch));
    if (!tr || !batch || reserve(p, p->n + fresh) < 0) {
        free(tr);
        free(batch);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    p->tick++;
    now = sim_pop_now(p);
    /* Terminal sessions of earlier ticks first, then the active and pending
     * ones that existed before this tick, so no session moves twice. */
    move_random(p, terminal, SIM_GONE, &spec->purged, now, tr, &ntr);
    move_random(p, SIM_MASK(SIM_ACTIVE), SIM_COMPLETED, &spec->completed, now, tr, &ntr);
    move_random(p, SIM_MASK(SIM_ACTIVE), SIM_GONE, &spec->vanished, now, tr, &ntr);
    move_random(p, SIM_MASK(SIM_ACTIVE) | SIM_MASK(SIM_PENDING), SIM_CANCELLED, &spec->cancelled,
                now, tr, &ntr);
    move_random(p, SIM_MASK(SIM_PENDING), SIM_ACTIVE, &spec->activated, now, tr, &ntr);

    /* One batch shares a key strictly after every existing one, ordered by
     * id, which keeps the array sorted by appending. */
    key = now > p->last_key ? now : p->last_key + 1;
    for (size_t i = 0; i < fresh; i++)
        new_session(p, &batch[i], key, i < spec->pending ? SIM_PENDING : SIM_ACTIVE);
    qsort(batch, fresh, sizeof(*batch), id_cmp);
    append_sorted(p, batch, fresh, tr, &ntr);
    free(batch);

    *out = tr;
    *nout = ntr;
    truth_flush(p);
    return 0;
}

/* ---- queries --------------------------------------------------------- */

static void query_indexed(const struct sim_pop *p, const struct sim_query *q, size_t lo, size_t hi,
                          struct sim_page *pg)
{
    size_t base = sim_pop_rank(p, q->mask, lo);
    size_t total = sim_pop_rank(p, q->mask, hi) - base, start, end;
    size_t anchor = q->anchor < lo ? lo : q->anchor > hi ? hi : q->anchor;

    switch (q->from) {
    case SIM_FROM_AFTER:
        start = sim_pop_rank(p, q->mask, anchor) - base;
        end = min_size(start + q->limit, total);
        break;
    case SIM_FROM_BEFORE:
        end = sim_pop_rank(p, q->mask, anchor) - base;
        start = end > q->limit ? end - q->limit : 0;
        break;
    default:
        start = min_size(q->offset, total);
        end = min_size(start + q->limit, total);
        break;
    }
    pg->n = 0;
    for (size_t k = start; k < end; k++)
        pg->pos[pg->n++] = sim_pop_select(p, q->mask, base + k);
    pg->total = total;
    pg->offset = start;
    pg->has_prev = start > 0;
    pg->has_next = end < total;
}

static void query_scan(const struct sim_pop *p, const struct sim_query *q, size_t lo, size_t hi,
                       struct sim_page *pg)
{
    size_t total = 0, before = 0;

    pg->n = 0;
    for (size_t pos = lo; pos < hi; pos++) {
        const struct sim_session *s = &p->s[pos];
        if (!(q->mask & SIM_MASK(s->state)) || !q->match(p, s, q->opaque))
            continue;
        switch (q->from) {
        case SIM_FROM_AFTER:
            if (pos < q->anchor)
                before++;
            else if (pg->n < q->limit)
                pg->pos[pg->n++] = pos;
            break;
        case SIM_FROM_BEFORE:
            /* A ring of the last limit matches before the anchor. */
            if (pos < q->anchor)
                pg->pos[before++ % q->limit] = pos;
            break;
        default:
            if (total >= q->offset && pg->n < q->limit)
                pg->pos[pg->n++] = pos;
            break;
        }
        total++;
    }
    if (q->from == SIM_FROM_BEFORE) {
        size_t ring[SIM_MAX_PAGE], n = min_size(before, q->limit), first = before % q->limit;
        if (before > q->limit) {
            for (size_t i = 0; i < n; i++)
                ring[i] = pg->pos[(first + i) % q->limit];
            memcpy(pg->pos, ring, n * sizeof(ring[0]));
        }
        pg->n = n;
        pg->offset = before - n;
        pg->has_next = before < total;
    } else {
        pg->offset = q->from == SIM_FROM_AFTER ? before : min_size(q->offset, total);
        pg->has_next = pg->offset + pg->n < total;
    }
    pg->total = total;
    pg->has_prev = pg->offset > 0;
}

void sim_pop_query(const struct sim_pop *p, const struct sim_query *q, struct sim_page *out)
{
    size_t hi = q->hi > p->n ? p->n : q->hi;
    size_t lo = q->lo > hi ? hi : q->lo;

    if (q->match)
        query_scan(p, q, lo, hi, out);
    else
        query_indexed(p, q, lo, hi, out);
}

/* ---- lifetime -------------------------------------------------------- */

struct sim_pop *sim_pop_new(const struct sim_pop_options *o, char *err, size_t errlen)
{
    struct sim_pop *p = calloc(1, sizeof(*p));
    uint64_t st;

    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->seed = o->seed;
    p->users = o->users ? o->users : 1;
    p->clock_start_ms = o->clock_start_ms;
    p->tick_ms = o->tick_ms;
    st = o->seed;
    for (int i = 0; i < 4; i++)
        p->rng[i] = sim_splitmix64(&st);
    for (size_t i = 0; i < NTESTS; i++) {
        uint64_t a = sim_splitmix64(&st), b = sim_splitmix64(&st);
        p->tests[i].name = test_table[i].name;
        p->tests[i].subject = test_table[i].subject;
        sim_uuid_format(a, b, p->tests[i].id);
        a = sim_splitmix64(&st);
        b = sim_splitmix64(&st);
        sim_uuid_format(a, b, p->tests[i].version_id);
    }
    p->cap = 1;
    for (unsigned s = SIM_PENDING; s < SIM_NSTATES; s++) {
        p->tree[s] = calloc(p->cap + 1, sizeof(uint32_t));
        if (!p->tree[s])
            goto oom;
    }
    p->s = calloc(p->cap, sizeof(*p->s));
    if (!p->s)
        goto oom;
    if (o->truth_path) {
        p->truth_path = o->truth_path;
        p->truth = fopen(o->truth_path, "w");
        if (!p->truth) {
            snprintf(err, errlen, "cannot open %s: %s", o->truth_path, strerror(errno));
            sim_pop_free(p);
            return NULL;
        }
    }
    return p;
oom:
    snprintf(err, errlen, "out of memory");
    sim_pop_free(p);
    return NULL;
}

void sim_pop_free(struct sim_pop *p)
{
    if (!p)
        return;
    if (p->truth)
        fclose(p->truth);
    for (unsigned s = 0; s < SIM_NSTATES; s++)
        free(p->tree[s]);
    free(p->s);
    free(p);
}
