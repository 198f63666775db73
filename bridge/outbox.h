/*
 * outbox: the delivery worker of one outbox sink (a webhook).
 *
 * A committed cycle leaves the events of outbox sinks in Redis (store.h:
 * P:ob:K, written in the same transaction as the snapshot delta). The
 * worker claims the events that are due, at most as many as the sink has
 * capacity for, hands each one to the sink as one attempt, and settles the
 * result: delivered events leave the outbox; failed ones are due again
 * after the next delay of the sink's retry_schedule_s (with jitter, never
 * before the endpoint's Retry-After); what exhausts the schedule, or is
 * refused for good, goes to the dead letters; a 410 disables the endpoint
 * (kept in Redis, so a restart keeps it disabled), and from then on every
 * event of the sink goes to the dead letters until `dlq replay` re-enables
 * it.
 *
 * Runs on the engine's loop thread and shares its store; the sink resolves
 * the attempts from its loop callbacks (or its flush(), driven by the
 * engine when the sink is not on the loop).
 * Every Redis call is asynchronous (the store's *_async calls): a claim is
 * answered from the loop, and the outcomes of the attempts that settled
 * since the last turn go to Redis in one transaction at the next turn, so
 * that a large drain costs a round trip per batch, not one per event, and
 * holds nobody while it waits.
 */
#ifndef SB_OUTBOX_H
#define SB_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "sink.h"
#include "store.h"

typedef struct outbox outbox_t;

/* Attempts settled since outbox_new(), for metrics. */
typedef struct outbox_counts {
    uint64_t delivered; /* acknowledged by the endpoint */
    uint64_t retried;   /* failed, due again later */
    uint64_t dead;      /* moved (or meant to move) to the dead letters */
} outbox_counts_t;

typedef struct outbox_options {
    const char *sink;          /* the sink's name; borrowed */
    const sink_type_t *type;   /* flagged SINK_F_OUTBOX */
    void *ctx;                 /* the sink instance; borrowed */
    const sink_config_t *conf; /* the sink's config: retry_schedule_s, timeout_s; borrowed */
    store_t *store;            /* borrowed; used on the caller's thread only */
    /*
     * Optional: called with opaque on the loop's thread when the worker
     * wants a turn soon: an attempt settled (the sink has capacity for
     * another claim, and its outcome is to be written), a claim or a settle
     * transaction was answered.
     */
    void (*settled)(void *opaque);
    void *opaque;
} outbox_options_t;

/* NULL with a reason in err. Reads nothing from Redis yet. */
outbox_t *outbox_new(const outbox_options_t *opt, char *err, size_t errlen);
/*
 * Frees the worker and the attempts still in flight. Those, and settles
 * not sent yet (outbox_settle_now()), are not settled: their events stay
 * claimed in Redis and come back when the claim lease runs out. Call it
 * after the sink's exit(), which abandons its attempts without resolving
 * them (sink.h, sink_ticket_t), and after the store let go of the loop
 * (store_detach(): a call of the worker still pending is answered before).
 * Accepts NULL.
 */
void outbox_free(outbox_t *ob);

/*
 * One turn: refreshes the disabled flag now and then, claims due events
 * while the sink has room (no new claims once stopping is set) and hands
 * them over. Returns the seconds until it wants the next turn (sooner
 * after a nudge or a settled attempt).
 */
double outbox_turn(outbox_t *ob, bool stopping);
/*
 * Sends the settles buffered since the last turn (outbox_turn() does it
 * first): at exit, after the sink was flushed.
 */
void outbox_settle_now(outbox_t *ob);
/*
 * No more claims: the sink is about to go. A claim answered later is
 * dropped (its events come back when the claim expires); settles still go.
 */
void outbox_close(outbox_t *ob);
/* Whether settles wait to be sent or answered, or a claim or flag read is in flight. */
bool outbox_busy(const outbox_t *ob);
/* New events were committed: claim at the next turn instead of waiting. */
void outbox_nudge(outbox_t *ob);
/* Attempts handed to the sink and not settled yet. */
size_t outbox_in_flight(const outbox_t *ob);
void outbox_get_counts(const outbox_t *ob, outbox_counts_t *out);
/* Whether the endpoint is disabled (a 410), as of the last flag check. */
bool outbox_disabled(const outbox_t *ob);
/*
 * true once a claim found nothing due (and no nudge came since), no
 * attempt is in flight and the worker is not busy with Redis: what `once`
 * waits for before it exits.
 */
bool outbox_idle(const outbox_t *ob);

/*
 * The dead-letter record of an event (store.h): a JSON text, owned by the
 * caller (free()); NULL when out of memory. event_json is embedded as JSON
 * when it parses, as a string otherwise.
 */
char *outbox_dead_record(const char *sink, const char *id, unsigned attempts, const char *error,
                         const char *event_json, size_t len);

/*
 * Fills ev from a parsed CloudEvent of ours (id, type, subject,
 * data.source) so that it can be submitted again. key receives
 * "<source>/<session_id>" (keylen bytes). Every pointer in ev points into
 * event, key and json. Returns 0, or -1 when a member is missing.
 */
int outbox_event_view(const cJSON *event, const char *json, size_t len, char *key, size_t keylen,
                      sink_event_t *ev);

#endif /* SB_OUTBOX_H */
