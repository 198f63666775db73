/*
 * diff: snapshot and lifecycle logic of session-bridge.
 *
 * Pure code: no sockets, no files, no clock. The caller hands in the
 * records of one complete poll and the time it observed them; the module
 * answers with the lifecycle events to publish and the delta to persist.
 *
 * A cycle never mutates the index until diff_cycle_apply(), which the caller
 * invokes only after every event was acknowledged and the delta committed.
 * Abandoning a cycle (diff_cycle_free() without apply) leaves the index as
 * it was, so a failed poll or a failed delivery commits nothing: the raw
 * statuses the cycle interned are dropped again, and the marks it leaves on
 * sessions it saw (first-sighting stamps) mean nothing to a later cycle.
 * What one cycle may hold is bounded (diff_options_t.max_sessions).
 */
#ifndef SB_DIFF_H
#define SB_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest provider session id we accept; longer ids fail the page. */
#define DIFF_ID_MAX 256
/* Longest raw status we accept; longer statuses fail the page. */
#define DIFF_STATUS_MAX 64
/* Distinct raw statuses one index may intern; a provider that invents more
 * is misbehaving and its page is rejected rather than growing memory. */
#define DIFF_MAX_STATUSES 1024
/* Upper bound of vanish_grace (misses are stored in a byte). */
#define DIFF_MAX_GRACE 100
/* Length of an event id: 32 hex digits and the NUL. */
#define DIFF_EVENT_ID_LEN 33
/* Longest stored record encoding, see diff_record_encode(). */
#define DIFF_RECORD_MAX (DIFF_STATUS_MAX + 32)
/*
 * Records one poll may observe unless the source says otherwise
 * (max_sessions). A cycle holds what it observes until it is applied or
 * freed, so this bounds a poll's memory: besides the index, a cycle holds
 * ~130 bytes per new session (the entry apply moves into the index
 * included), ~50 per stored session that changes and, for a session an
 * event carries or whose last record changes (diff_last_t), its record's
 * text zstd-compressed (~80 bytes for a
 * ~500-byte Century record; tests/bench/bench_diff.c). 100,000 is the
 * population the index is laid out for; a provider that never stops
 * paging is cut off there.
 */
#define DIFF_DEFAULT_MAX_SESSIONS 100000
/* Largest max_sessions a source may set: a first emit poll of that many
 * Century sessions peaks at ~210 MiB in diff (BENCHMARKS.md), inside a
 * 512 MiB pod. */
#define DIFF_MAX_SESSIONS_LIMIT 1000000
/*
 * Heap a cycle may spend on the compressed text of the records it keeps
 * (those its events carry, and the last records the store is to write),
 * per record it may observe: max_sessions * this. The count bound
 * alone leaves a poll's memory to the size of the records; 256 bytes is
 * three times what a Century record takes compressed, and caps the
 * default's records at 25 MiB (256 MiB at DIFF_MAX_SESSIONS_LIMIT) whatever
 * the provider sends. Raising max_sessions raises both bounds, so one key
 * answers both failures.
 */
#define DIFF_RETAINED_BYTES_PER_SESSION 256

typedef enum diff_state {
    DIFF_STATE_NONE = 0, /* never seen in a known status */
    DIFF_STATE_PENDING,
    DIFF_STATE_ACTIVE,
    DIFF_STATE_COMPLETED,
    DIFF_STATE_CANCELLED,
} diff_state_t;
#define DIFF_STATE_COUNT 5

typedef enum diff_event_type {
    DIFF_EV_STARTED = 0,
    DIFF_EV_COMPLETED,
    DIFF_EV_CANCELLED,
} diff_event_type_t;
#define DIFF_EV_COUNT 3

typedef enum diff_reason {
    DIFF_REASON_STATUS_CHANGE = 0,
    DIFF_REASON_FIRST_SEEN,
    DIFF_REASON_VANISHED,
} diff_reason_t;

/* "pending", "active", "completed", "cancelled"; NULL for DIFF_STATE_NONE. */
const char *diff_state_name(diff_state_t state);
/* Parses a canonical state name (not "none"). Returns 0 or -1. */
int diff_state_parse(const char *name, diff_state_t *out);
/* "session.started", ... */
const char *diff_event_type_name(diff_event_type_t type);
/* "started", "completed", "cancelled": the names used in config. */
const char *diff_event_type_short(diff_event_type_t type);
/* "status_change", "first_seen", "vanished". */
const char *diff_reason_name(diff_reason_t reason);

/*
 * Writes the deterministic event id: the first 32 hex digits of
 * SHA-256(source "\n" session_id "\n" type name), type name as
 * diff_event_type_name() returns it.
 */
void diff_event_id(const char *source, const char *session_id, diff_event_type_t type,
                   char out[DIFF_EVENT_ID_LEN]);

/*
 * Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) at the start of s, which holds n > 0
 * bytes: 1..4, or 0 when s does not start with one.
 */
size_t diff_utf8_seq(const unsigned char *s, size_t n);
/* 0 when the n bytes of s are UTF-8 (NUL included), or -1 with *bad set to
 * the offset of the first byte that is not. */
int diff_utf8_check(const char *s, size_t n, size_t *bad);

/* ---- status maps: raw provider status -> canonical state ---- */

typedef struct diff_status_map diff_status_map_t;

diff_status_map_t *diff_status_map_new(void);
void diff_status_map_free(diff_status_map_t *map);
/* Adds or replaces one mapping (the raw string is copied). 0 or -1 (ENOMEM,
 * raw longer than DIFF_STATUS_MAX or empty). Mapping to DIFF_STATE_NONE is an
 * error: an override must name a canonical state. */
int diff_status_map_set(diff_status_map_t *map, const char *raw, diff_state_t state);
/* 0 and *out set when raw is mapped; -1 when it is unknown. Exact match. */
int diff_status_map_lookup(const diff_status_map_t *map, const char *raw, diff_state_t *out);

/* ---- what is remembered per session ---- */

/*
 * The persisted view of one session: the state last published, the raw status
 * last seen, a fingerprint of the record last seen and how many complete
 * polls in a row have missed it.
 */
typedef struct diff_record {
    diff_state_t state;
    uint8_t misses;
    uint64_t fingerprint;
    const char *status; /* raw status, borrowed; "" when none */
} diff_record_t;

/*
 * Encodes a record as the compact text stored in Redis:
 * "<state digit>:<misses>:<16 hex fingerprint>:<raw status>".
 * Returns the length written (excluding the NUL) or -1 if buf is too small.
 */
int diff_record_encode(const diff_record_t *rec, char *buf, size_t buflen);
/*
 * Decodes what diff_record_encode() wrote. The raw status is copied into
 * status_buf (at least DIFF_STATUS_MAX + 1 bytes) and rec->status points to it.
 * Returns 0 or -1 on malformed input.
 */
int diff_record_decode(const char *text, size_t len, diff_record_t *rec, char *status_buf,
                       size_t status_buflen);

/*
 * Fingerprint of a provider record: XXH3-64 of its len bytes as received
 * (text may be NULL: no record). Equal bytes give equal fingerprints; the
 * same record formatted differently counts as changed.
 */
uint64_t diff_fingerprint(const char *text, size_t len);

/* ---- the session index of one source ---- */

typedef struct diff_index diff_index_t;

diff_index_t *diff_index_new(void);
void diff_index_free(diff_index_t *ix);
size_t diff_index_size(const diff_index_t *ix);
/* Inserts or replaces a session (used when loading from the store). The id
 * and rec->status are copied. 0 or -1 (ENOMEM, id or status too long,
 * misses above DIFF_MAX_GRACE, a cycle open on the index). */
int diff_index_put(diff_index_t *ix, const char *session_id, const diff_record_t *rec);
/* Looks a session up. On 0, out->status points into the index and stays
 * valid until the index is modified. -1 when absent. */
int diff_index_get(const diff_index_t *ix, const char *session_id, diff_record_t *out);
/* Removes every session. */
void diff_index_clear(diff_index_t *ix);
/* Bytes the index holds on the heap (entries, table, interned statuses).
 * Entries live in slabs of a pool: this counts the slabs, free chunks
 * included, except the chunks of an open cycle's new sessions, which
 * diff_cycle_memory() counts until apply. */
size_t diff_index_memory(const diff_index_t *ix);
/* Sessions per state (indexed by diff_state_t), kept up to date by every
 * change of the index: reading them costs nothing. */
void diff_index_states(const diff_index_t *ix, size_t counts[DIFF_STATE_COUNT]);
/*
 * Calls fn for every session of ix, in no particular order; rec->status
 * points into the index and session_id is the index's own: both are valid
 * during the call only, and fn must not modify ix. Stops at the first
 * nonzero return of fn and returns it; 0 when every session was visited.
 */
typedef int (*diff_index_fn)(void *opaque, const char *session_id, const diff_record_t *rec);
int diff_index_foreach(const diff_index_t *ix, diff_index_fn fn, void *opaque);
/*
 * diff_index_foreach() in steps, for a caller that visits a large index
 * a part at a time (the store restores one in windows): starts at position
 * *pos (0 the first time); when fn returns nonzero, *pos is left just past
 * the session it was called for and fn's value returned, so that the next
 * call goes on after it. 0 once every session from *pos on was visited.
 * ix must not change between the steps.
 */
int diff_index_foreach_from(const diff_index_t *ix, size_t *pos, diff_index_fn fn, void *opaque);

/* ---- one poll cycle ---- */

typedef struct diff_options {
    const char *source;                  /* source name, for event ids; borrowed */
    unsigned vanish_grace;               /* 1..DIFF_MAX_GRACE */
    const diff_status_map_t *status_map; /* borrowed */
    /*
     * True when the source has no stored snapshot yet and its
     * initial_snapshot is "baseline": the cycle records every session and
     * produces no event.
     */
    bool baseline;
    /* Records the cycle may observe (duplicates included), which also sets
     * the heap its compressed records may take (DIFF_RETAINED_BYTES_PER_SESSION
     * each); 0 means DIFF_DEFAULT_MAX_SESSIONS. */
    size_t max_sessions;
} diff_options_t;

typedef struct diff_event {
    diff_event_type_t type;
    diff_reason_t reason;
    bool synthesized;
    const char *session_id;
    diff_state_t state;          /* the state the event enters */
    diff_state_t previous_state; /* DIFF_STATE_NONE when first seen */
    const char *status;          /* raw status observed; NULL when vanished */
    const char *previous_status; /* raw status stored before; NULL if none */
    /* the provider's record as received (record_len bytes, not
     * NUL-terminated); NULL when observed without one. Vanished: the last
     * record received, when the caller gave it (diff_cycle_vanished_keep()) */
    const char *record;
    size_t record_len;
    char id[DIFF_EVENT_ID_LEN];
} diff_event_t;

/*
 * What a change does to the session's last record: the provider's record
 * as last received, which the store keeps beside the snapshot for the
 * sessions that can vanish (pending, active) so that their vanished event
 * can carry it (CONTRACT §6).
 */
typedef enum diff_last {
    DIFF_LAST_KEEP = 0, /* leave the stored one (unchanged, or none to keep) */
    DIFF_LAST_SET,      /* store the record observed in the cycle */
    DIFF_LAST_DROP,     /* delete it: the session ended, was forgotten or left no record */
} diff_last_t;

typedef struct diff_change {
    const char *session_id;
    bool removed;      /* true: delete from the store; rec is unused */
    diff_record_t rec; /* the record to store */
    diff_last_t last;  /* removed changes are DIFF_LAST_DROP */
    /* DIFF_LAST_SET: the record's text (last_len bytes, valid JSON). A
     * cycle's changes leave it NULL: diff_cycle_change_last() reads it. */
    const char *last_text;
    size_t last_len;
} diff_change_t;

typedef struct diff_cycle diff_cycle_t;

/*
 * Starts a cycle over ix. opt and everything it points to must outlive the
 * cycle. At most one cycle per index may be open at a time. NULL on ENOMEM.
 */
diff_cycle_t *diff_cycle_begin(diff_index_t *ix, const diff_options_t *opt);

/*
 * Feeds one record of the poll: its session id (id_len bytes), its raw
 * status (status_len bytes), neither NUL-terminated nor holding a NUL, and
 * its len bytes of text as received (valid JSON, which the caller's page
 * parse checked; NULL for none). The lengths come with the bytes because
 * the page scanner knows them: the id is hashed once (XXH3-64) and no
 * string function runs on it. session_id, raw_status and text are borrowed
 * for this call only: the cycle copies the id of a new session, and the
 * text (compressed) when an event will carry it. A session seen twice in
 * one poll keeps the observation with the most advanced state. A length
 * of 0 or above its bound (DIFF_ID_MAX, DIFF_STATUS_MAX) fails the page
 * before any of those bytes is read, so a caller may pass the length of a
 * value it could not hold.
 * Returns 0, or -1 with a reason in err for input that must fail the page
 * (empty or oversized id or status, an id or status that is not UTF-8 or
 * holds a NUL, too many distinct statuses, more records than max_sessions
 * or their copies past its byte bound, ENOMEM); the caller then abandons
 * the cycle.
 */
int diff_cycle_observe(diff_cycle_t *cy, const char *session_id, size_t id_len,
                       const char *raw_status, size_t status_len, const char *text, size_t len,
                       char *err, size_t errlen);

/*
 * Closes a complete poll: computes vanished sessions, the events and the
 * changes. Call once, after the last observe. Returns 0 or -1 (ENOMEM).
 */
int diff_cycle_finish(diff_cycle_t *cy);

/* Events of a finished cycle, in publication order (a session's events
 * adjacent, started before completed). */
size_t diff_cycle_nevents(const diff_cycle_t *cy);
/* The type of event i < diff_cycle_nevents(), at any time until free. */
diff_event_type_t diff_cycle_event_type(const diff_cycle_t *cy, size_t i);
/*
 * Fills ev with event i < diff_cycle_nevents(). Its strings belong to the
 * cycle and the index: ev->record stays valid until the next call of
 * diff_cycle_event() on cy (the records wait compressed, and reading one
 * decodes its block), the others until diff_cycle_apply(). Read events in
 * order: that decodes each block once. 0, or -1 after apply, on ENOMEM or
 * when a record does not decode.
 */
int diff_cycle_event(diff_cycle_t *cy, size_t i, diff_event_t *ev);
/*
 * Vanished events of a finished cycle, which the caller completes with the
 * sessions' last records before reading the events (the diff keeps no
 * record of a session between cycles: the store does). The k-th of them
 * (k < diff_cycle_nvanished()) is event diff_cycle_nevents() - nvanished + k;
 * its session id stays valid until diff_cycle_apply().
 */
size_t diff_cycle_nvanished(const diff_cycle_t *cy);
const char *diff_cycle_vanished_id(const diff_cycle_t *cy, size_t k);

typedef enum diff_keep {
    DIFF_KEEP_OK = 0, /* kept: the event carries it */
    DIFF_KEEP_FULL,   /* not kept: past the cycle's byte bound; the event carries null */
    DIFF_KEEP_ERROR,  /* out of memory, k out of range, or called once events were read */
} diff_keep_t;

/*
 * Gives the k-th vanished event its session's last record: len bytes of
 * JSON text (borrowed for the call: the cycle copies it, compressed, under
 * the same bound as the records it observed). Call after finish and
 * before the first diff_cycle_event().
 */
diff_keep_t diff_cycle_vanished_keep(diff_cycle_t *cy, size_t k, const char *text, size_t len);

/* Changes of a finished cycle: the delta to persist. */
size_t diff_cycle_nchanges(const diff_cycle_t *cy);
/*
 * Fills out with change i < diff_cycle_nchanges(), in a stable order (a
 * session at most once). Its strings stay valid until diff_cycle_apply().
 * Derived when read, so that a cycle holds 4 bytes per change instead of
 * the struct. 0, or -1 out of range or after apply.
 */
int diff_cycle_change(const diff_cycle_t *cy, size_t i, diff_change_t *out);
/*
 * The text of change i's last record (a change whose last is
 * DIFF_LAST_SET): *text (*len bytes) stays valid until the next call of
 * this or diff_cycle_event() on cy (records wait compressed). Read changes
 * in order: that decodes each block once. 0, or -1 for a change without
 * one, after apply, on ENOMEM or when the record does not decode.
 */
int diff_cycle_change_last(diff_cycle_t *cy, size_t i, const char **text, size_t *len);
/* Sessions the index will hold after diff_cycle_apply() of a finished
 * cycle (its current size before finish). */
size_t diff_cycle_sessions_after(const diff_cycle_t *cy);
/* Sessions observed in this cycle, including duplicates. */
size_t diff_cycle_observed(const diff_cycle_t *cy);
/* Bytes the cycle holds on the heap beside the index (notes, new entries,
 * events, changes, records). */
size_t diff_cycle_memory(const diff_cycle_t *cy);
/* Bytes the records kept for events take (what the retained bound counts),
 * and in *raw (may be NULL) their size as received. */
size_t diff_cycle_retained(const diff_cycle_t *cy, size_t *raw);
/*
 * Raw statuses that mapped to no state and were never reported before by this
 * index (each is reported once by the cycles applied to it: an abandoned
 * cycle's are reported again), and the number of observations with an
 * unknown status in this cycle.
 */
size_t diff_cycle_new_unknown_statuses(const diff_cycle_t *cy, const char *const **statuses);
size_t diff_cycle_unknown_count(const diff_cycle_t *cy);

/* Applies the changes to the index: call only after they were committed.
 * The raw statuses the cycle interned become the index's from then on, and
 * so do the entries it built for new sessions; the retained records are
 * freed (events can no longer be read). */
void diff_cycle_apply(diff_cycle_t *cy);
/* Frees the cycle; without a prior apply the index is left as it was at
 * diff_cycle_begin() (statuses interned by the cycle are dropped again). */
void diff_cycle_free(diff_cycle_t *cy);

#endif /* SB_DIFF_H */
