/*
 * sim.h: internal interface of sb-provider-sim (see sim.c for what the
 * program is and how to run it).
 *
 * Three layers:
 *  - sim_util.c: text buffers, JSON string escaping, ISO 8601 time, base64,
 *    UUIDs, number parsing. No state.
 *  - sim_pop.c: the generic session population. Sessions are kept in one
 *    append-only array ordered by (key_ms, id) with a Fenwick tree per
 *    lifecycle state, so that counting, ranking and the k-th session of any
 *    set of states are O(log n) and a page costs O(page * log n) however
 *    large the population. Ticks change it and append ground truth.
 *  - dialects (sim_century.c, later others): turn a request into a response
 *    over the population, in one provider's shape. A dialect only reads the
 *    population; every change goes through ticks.
 * sim.c owns the HTTP server, the control API and the fault injection, and
 * serialises all of it under one lock.
 */
#ifndef SB_SIM_H
#define SB_SIM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- sim_util.c ------------------------------------------------------ */

/* A growable byte buffer. On allocation failure it sets oom and drops
 * further writes, so builders check once at the end. data is NUL-terminated
 * whenever len > 0. */
struct sim_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
};

void sim_buf_init(struct sim_buf *b);
/* Frees data and resets b; accepts an initialised empty buffer. */
void sim_buf_free(struct sim_buf *b);
void sim_buf_add(struct sim_buf *b, const char *s, size_t n);
void sim_buf_puts(struct sim_buf *b, const char *s);
void sim_buf_printf(struct sim_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string. */
void sim_buf_json_str(struct sim_buf *b, const char *s);
/* Appends ms since the epoch as a quoted "2023-07-10T14:00:00.000Z". */
void sim_buf_json_time(struct sim_buf *b, int64_t ms);

#define SIM_TIME_LEN 24 /* "2023-07-10T14:00:00.000Z" */
void sim_format_time(int64_t ms, char out[SIM_TIME_LEN + 1]);
/* Parses ISO 8601 (date, or date and time with optional fraction and zone;
 * no zone means UTC) or unix seconds (digits only). 0 or -1. */
int sim_parse_time(const char *s, int64_t *ms);
/* ISO 8601 duration of a non-negative span, e.g. "PT1H30M", "PT0S". */
void sim_format_duration(int64_t ms, char *out, size_t outlen);

/* Standard base64 with padding. encode returns the length written (out must
 * hold 4 * ceil(n / 3) + 1 bytes); decode returns 0 or -1 on bad input or
 * when the result would not fit in outcap. */
size_t sim_b64_encode(const unsigned char *in, size_t n, char *out);
int sim_b64_decode(const char *in, unsigned char *out, size_t outcap, size_t *outlen);

#define SIM_UUID_LEN 36
/* Formats 128 random bits as a version 4 UUID. */
void sim_uuid_format(uint64_t hi, uint64_t lo, char out[SIM_UUID_LEN + 1]);
/* 1 if s is a UUID in canonical text form (any version, either case). */
int sim_is_uuid(const char *s);
/* Decimal, no sign, no spaces, in [min, max]. 0 or -1. */
int sim_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

uint64_t sim_splitmix64(uint64_t *state);

/* ---- sim_pop.c: the population ---------------------------------------- */

/* Generic lifecycle. SIM_NONE is only ever a "from" in ground truth; GONE
 * means the provider no longer lists the session at all. */
enum sim_state {
    SIM_NONE = 0,
    SIM_PENDING,
    SIM_ACTIVE,
    SIM_COMPLETED,
    SIM_CANCELLED,
    SIM_GONE,
    SIM_NSTATES
};
#define SIM_MASK(s) (1u << (s))

const char *sim_state_name(enum sim_state s);

/* Upper bound on sessions ever created in one run (each costs ~100 bytes). */
#define SIM_MAX_SESSIONS 4000000u

struct sim_session {
    char id[SIM_UUID_LEN + 1];
    uint8_t state;   /* enum sim_state */
    uint8_t outcome; /* random; dialects map it to a level, a score ... */
    uint16_t test;   /* index into the test table */
    uint32_t user;   /* index into the user pool */
    /* Creation time; the population is ordered by (key_ms, id). Sessions
     * created active (all of Century's) have start_ms == key_ms. */
    int64_t key_ms;
    int64_t start_ms; /* entered active; 0 if never */
    int64_t end_ms;   /* entered completed or cancelled; 0 if not */
};

/* Derived deterministically from the seed and the index; not stored. */
struct sim_user {
    char id[SIM_UUID_LEN + 1];
    char first[32];
    char last[32];
    char full[64];
    char username[80];
    char email[112];
    const char *gender;   /* male, female, other, unknown */
    char birth_date[11];  /* YYYY-MM-DD */
    char external_id[32]; /* empty for users without one */
};

struct sim_test {
    const char *name;
    const char *subject;
    char id[SIM_UUID_LEN + 1];
    char version_id[SIM_UUID_LEN + 1];
};

struct sim_pop_options {
    uint64_t seed;
    uint32_t users;         /* size of the user pool, >= 1 */
    int64_t clock_start_ms; /* 0: the clock is wall time */
    int64_t tick_ms;        /* with clock_start_ms: simulated time per tick */
    const char *truth_path; /* NULL: no ground truth file */
};

struct sim_pop;

/* Returns a population or NULL with the reason in err. The truth file is
 * truncated. Free with sim_pop_free(). */
struct sim_pop *sim_pop_new(const struct sim_pop_options *o, char *err, size_t errlen);
void sim_pop_free(struct sim_pop *p);

/* Creates the initial population as tick 0: start times spread over the
 * past, so later sessions sort after them. Only before the first tick. */
int sim_pop_seed(struct sim_pop *p, uint32_t pending, uint32_t active, uint32_t completed,
                 char *err, size_t errlen);

/* Changes applied by one tick; each count is clamped to what is available. */
struct sim_tick_spec {
    uint32_t started;   /* new sessions, active */
    uint32_t pending;   /* new sessions, pending */
    uint32_t activated; /* pending -> active */
    uint32_t completed; /* active -> completed */
    uint32_t cancelled; /* pending or active -> cancelled */
    uint32_t vanished;  /* active -> gone */
    uint32_t purged;    /* completed or cancelled -> gone */
};

struct sim_transition {
    uint32_t pos;
    uint8_t from;
    uint8_t to;
};

/* Applies one tick. On success *out (heap, the caller frees it) lists the
 * transitions in the order applied, every one already written and flushed
 * to the truth file, and spec holds the clamped counts. -1 with err when
 * the population would exceed SIM_MAX_SESSIONS or memory runs out; nothing
 * has changed then. */
int sim_pop_tick(struct sim_pop *p, struct sim_tick_spec *spec, struct sim_transition **out,
                 size_t *nout, char *err, size_t errlen);

uint64_t sim_pop_tick_no(const struct sim_pop *p);
int64_t sim_pop_now(const struct sim_pop *p);
/* Number of index positions (every session ever created). */
size_t sim_pop_size(const struct sim_pop *p);
const struct sim_session *sim_pop_at(const struct sim_pop *p, size_t pos);
/* Sessions whose state is in mask. */
size_t sim_pop_count(const struct sim_pop *p, unsigned mask);
/* Sessions in mask at positions < pos. */
size_t sim_pop_rank(const struct sim_pop *p, unsigned mask, size_t pos);
/* Position of the k-th (from 0) session in mask; k < sim_pop_count(). */
size_t sim_pop_select(const struct sim_pop *p, unsigned mask, size_t k);
/* First position whose (key_ms, id) is > (strict) or >= (key_ms, id).
 * id NULL sorts below every id: (ms, NULL) finds the first session at or
 * after ms, and (ms + 1, NULL) the first one after ms. O(log n). */
size_t sim_pop_bound(const struct sim_pop *p, int64_t key_ms, const char *id, int strict);

void sim_pop_user(const struct sim_pop *p, uint32_t idx, struct sim_user *out);
uint32_t sim_pop_users(const struct sim_pop *p);
const struct sim_test *sim_pop_test(const struct sim_pop *p, unsigned idx);
unsigned sim_pop_tests(const struct sim_pop *p);

/* ---- queries --------------------------------------------------------- */

/* Optional per-session predicate for filters that the index cannot answer
 * (user, test ...). Called on the server thread. */
typedef int (*sim_match_fn)(const struct sim_pop *p, const struct sim_session *s, void *opaque);

enum sim_from { SIM_FROM_OFFSET = 0, SIM_FROM_AFTER, SIM_FROM_BEFORE };

/* Largest page any dialect may ask for. */
#define SIM_MAX_PAGE 1000

struct sim_query {
    unsigned mask;      /* states listed */
    size_t lo, hi;      /* position range, from key filters: [lo, hi) */
    sim_match_fn match; /* NULL: every session in range and mask */
    void *opaque;
    enum sim_from from;
    size_t offset; /* SIM_FROM_OFFSET: items to skip */
    size_t anchor; /* AFTER: first position to list; BEFORE: list what is before it */
    size_t limit;  /* 1..SIM_MAX_PAGE */
};

struct sim_page {
    size_t pos[SIM_MAX_PAGE]; /* positions, in list order */
    size_t n;
    size_t total;  /* items in the whole (filtered) list */
    size_t offset; /* rank of pos[0] in the list (or of where it would be) */
    int has_prev;
    int has_next;
};

/* Without a predicate O(limit * log n); with one O(hi - lo). */
void sim_pop_query(const struct sim_pop *p, const struct sim_query *q, struct sim_page *out);

/* ---- dialects -------------------------------------------------------- */

struct sim_param {
    const char *key; /* percent-decoded */
    const char *value;
};

struct sim_request {
    const char *method;
    const char *path; /* below the prefix, e.g. "/smart-ia/sessions/in-progress" */
    const struct sim_param *params;
    size_t nparams;
    void *conn; /* for sim_request_header() */
};

/* Case-insensitive request header lookup; NULL if absent. */
const char *sim_request_header(const struct sim_request *r, const char *name);

#define SIM_MAX_RESPONSE_HEADERS 8

struct sim_response {
    int status;
    const char *content_type; /* static string */
    struct sim_buf body;
    size_t nheaders;
    struct {
        char name[48];
        char value[640]; /* a Link header with several links fits */
    } headers[SIM_MAX_RESPONSE_HEADERS];
};

void sim_response_header(struct sim_response *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replaces res with status and the error object Century answers with,
 * {"statusCode":400,"error":"Bad Request","message":msg}, "error" being the
 * status's reason phrase. The simulator's own errors (control API, injected
 * faults) take the same shape, so there is one writer for both. */
void sim_error_body(struct sim_response *res, int status, const char *msg);

/* What a dialect sees of the simulator. */
struct sim_env {
    const struct sim_pop *pop;
    const char *api_key; /* the credential requests must present */
    const char *secret;  /* the signing secret (proctorexam), never logged */
};

struct sim_dialect {
    const char *name;
    const char *description;
    const char *default_prefix; /* prepended to its paths unless --prefix */
    unsigned states;            /* SIM_MASK()s of the states it can show */
    /* A short static name for an endpoint path (below the prefix), or NULL
     * when the path is not one of the provider's endpoints (404). */
    const char *(*route)(const char *path);
    /* Serves a routed request; fills status, content type, headers, body.
     * Called with the simulator lock held, on the server thread. */
    void (*handle)(const struct sim_env *env, const struct sim_request *req,
                   struct sim_response *res);
};

extern const struct sim_dialect sim_dialect_century;
extern const struct sim_dialect sim_dialect_quiz_jsonapi;
extern const struct sim_dialect sim_dialect_proctorexam;
extern const struct sim_dialect sim_dialect_smarterproctoring;
extern const struct sim_dialect sim_dialect_rest;

#endif
