/*
 * outbox: claims, attempts and settles the events of one outbox sink.
 */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array.h"
#include "backoff.h"
#include "clock.h"
#include "event.h"
#include "http.h"
#include "log.h"

/*
 * A claimed event is due again after twice the sink's timeout plus this
 * margin: long enough for an attempt to finish and be settled, short enough
 * that the events of a bridge killed mid-attempt come back soon.
 */
#define OUTBOX_LEASE_MARGIN_S 5
/* Claims per turn; the sink's capacity() usually caps it lower. */
#define OUTBOX_CLAIM_BATCH 100
/* How often an idle worker looks for due events (retries come due by time). */
#define OUTBOX_IDLE_CLAIM_S 0.5
/* How often the disabled flag is re-read (`dlq replay` clears it). */
#define OUTBOX_FLAG_CHECK_S 5.0
/* Wait after a Redis error before trying again. */
#define OUTBOX_REDIS_RETRY_S 2.0
/* Fraction of a retry delay added or removed at random. */
#define OUTBOX_JITTER 0.1
/* Longest Retry-After honoured (a day): a larger one is a misconfiguration. */
#define OUTBOX_RETRY_AFTER_MAX_S 86400.0
/* Reason kept in Redis when an endpoint disables itself. */
#define OUTBOX_WHY_MAX 256
/* Settles per transaction (the store's bound); more wait for the next one. */
#define OUTBOX_SETTLE_MAX STORE_BATCH

struct outbox {
    char *sink;
    const sink_type_t *type;
    void *ctx;
    store_t *store;
    void (*settled)(void *opaque);
    void *opaque;
    double *schedule; /* delay before attempt i+1 */
    size_t nschedule;
    backoff_policy_t backoff; /* over schedule */
    int64_t lease_ms;

    bool disabled;
    char why[OUTBOX_WHY_MAX];
    double next_flag_check; /* monotonic s */
    double next_claim;
    bool drained; /* the last claim found nothing due, and no nudge since */
    size_t in_flight;
    /*
     * The attempts in flight: the worker owns them until the sink resolves
     * them, and frees those an outbox sink abandoned at exit (sink.h).
     */
    struct attempt *attempts;
    outbox_counts_t counts;

    /* Redis calls, all asynchronous: their answers come from the loop. */
    bool claiming;     /* a claim is in flight */
    size_t claim_room; /* how many it asked for */
    bool flag_reading; /* a read of the disabled flag is in flight */
    bool flag_stale;   /* the endpoint disabled itself after that read was sent */
    bool closed;       /* outbox_close(): no claim, and claims answered late are dropped */
    /* The settles of the attempts since the last turn, sent as one
     * transaction by the next; each one's strings owned. */
    store_settle_t *settles;
    size_t nsettles, capsettles;
    size_t settling; /* settle transactions awaiting their answer */
};

/* One attempt handed to the sink. */
typedef struct attempt {
    sink_ticket_t ticket; /* first: the sink hands it back */
    outbox_t *ob;
    store_claim_t claim;
    struct attempt *prev, *next; /* in ob->attempts */
} attempt_t;

static void attempt_free(attempt_t *a)
{
    outbox_t *ob = a->ob;

    if (a->prev)
        a->prev->next = a->next;
    else
        ob->attempts = a->next;
    if (a->next)
        a->next->prev = a->prev;
    free(a->claim.id);
    free(a->claim.json);
    free(a);
}

outbox_t *outbox_new(const outbox_options_t *opt, char *err, size_t errlen)
{
    const sink_value_t *schedule = sink_config_get(opt->conf, "retry_schedule_s");
    const sink_value_t *timeout = sink_config_get(opt->conf, "timeout_s");
    outbox_t *ob = calloc(1, sizeof(*ob));

    if (ob == NULL || (ob->sink = strdup(opt->sink)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ob->type = opt->type;
    ob->ctx = opt->ctx;
    ob->store = opt->store;
    ob->settled = opt->settled;
    ob->opaque = opt->opaque;
    /* The outbox's own options (sink_outbox_options), typed and bounded by the table. */
    if (!schedule || !schedule->present || schedule->count == 0 || !timeout || !timeout->present) {
        snprintf(err, errlen, "an outbox sink needs retry_schedule_s and timeout_s options");
        goto fail;
    }
    ob->nschedule = schedule->count;
    if ((ob->schedule = malloc(ob->nschedule * sizeof(double))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(ob->schedule, schedule->numbers, ob->nschedule * sizeof(double));
    ob->lease_ms = (2 * timeout->i + OUTBOX_LEASE_MARGIN_S) * 1000;
    /* After attempt k, schedule[k] (the policy's retry k + 1), as the field says. */
    ob->backoff = (backoff_policy_t){.schedule = ob->schedule,
                                     .nschedule = ob->nschedule,
                                     .jitter_min = 1.0 - OUTBOX_JITTER,
                                     .jitter_max = 1.0 + OUTBOX_JITTER};
    return ob;
fail:
    outbox_free(ob);
    return NULL;
}

static void settles_free(outbox_t *ob, size_t n);

void outbox_free(outbox_t *ob)
{
    if (ob == NULL)
        return;
    settles_free(ob, ob->nsettles);
    free(ob->settles);
    /* Abandoned by the sink's exit(): their claims expire in Redis, and the
     * events come back to whichever worker claims them next. */
    while (ob->attempts)
        attempt_free(ob->attempts);
    free(ob->schedule);
    free(ob->sink);
    free(ob);
}

void outbox_nudge(outbox_t *ob)
{
    ob->next_claim = 0;
    ob->drained = false;
}

size_t outbox_in_flight(const outbox_t *ob)
{
    return ob->in_flight;
}

void outbox_get_counts(const outbox_t *ob, outbox_counts_t *out)
{
    *out = ob->counts;
}

bool outbox_disabled(const outbox_t *ob)
{
    return ob->disabled;
}

bool outbox_idle(const outbox_t *ob)
{
    return ob->drained && ob->in_flight == 0 && !outbox_busy(ob);
}

bool outbox_busy(const outbox_t *ob)
{
    return ob->nsettles > 0 || ob->settling > 0 || ob->claiming || ob->flag_reading;
}

/* ---- records ---- */

char *outbox_dead_record(const char *sink, const char *id, unsigned attempts, const char *error,
                         const char *event_json, size_t len)
{
    char at[EVENT_TIME_LEN];
    cJSON *rec = cJSON_CreateObject();
    char *event = malloc(len + 1), *text = NULL;

    if (rec == NULL || event == NULL)
        goto out;
    /* Kept as a string: replay must hand over the very bytes (big integers
     * in provider records would not survive a parse and print). */
    memcpy(event, event_json, len);
    event[len] = '\0';
    event_format_time(clock_unix_ms(), at);
    if (cJSON_AddStringToObject(rec, "id", id) && cJSON_AddStringToObject(rec, "sink", sink) &&
        cJSON_AddNumberToObject(rec, "attempts", attempts) &&
        cJSON_AddStringToObject(rec, "error", error ? error : "") &&
        cJSON_AddStringToObject(rec, "failed_at", at) &&
        cJSON_AddStringToObject(rec, "event", event))
        text = cJSON_PrintUnformatted(rec);
out:
    cJSON_Delete(rec);
    free(event);
    return text;
}

int outbox_event_view(const cJSON *event, const char *json, size_t len, char *key, size_t keylen,
                      sink_event_t *ev)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(event, "id");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(event, "type");
    const cJSON *subject = cJSON_GetObjectItemCaseSensitive(event, "subject");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(event, "data");
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(data, "source");

    if (!cJSON_IsString(id) || !cJSON_IsString(type) || !cJSON_IsString(subject) ||
        !cJSON_IsString(source) || strncmp(type->valuestring, "session.", 8) != 0)
        return -1;
    if ((size_t)snprintf(key, keylen, "%s/%s", source->valuestring, subject->valuestring) >= keylen)
        return -1;
    *ev = (sink_event_t){.id = id->valuestring,
                         .type = type->valuestring,
                         .kind = type->valuestring + 8,
                         .source = source->valuestring,
                         .session_id = subject->valuestring,
                         .key = key,
                         .json = json,
                         .json_len = len};
    return 0;
}

/* ---- settling ---- */

/* Frees the strings of the first n buffered settles and drops them. */
static void settles_free(outbox_t *ob, size_t n)
{
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        free((char *)ob->settles[i].id);
        free((char *)ob->settles[i].record);
    }
    memmove(ob->settles, ob->settles + n, (ob->nsettles - n) * sizeof(*ob->settles));
    ob->nsettles -= n;
}

/*
 * Buffers what became of claim c for the next settle transaction; takes
 * over c->id and record (NULL unless DEAD). An attempt whose settle cannot
 * be buffered (out of memory) comes back when its claim expires.
 */
static void settle_later(outbox_t *ob, store_claim_t *c, store_settle_kind_t kind, int64_t due_ms,
                         char *record)
{
    store_settle_t *v = array_grow(ob->settles, &ob->capsettles, ob->nsettles + 1,
                                   sizeof(*ob->settles), OUTBOX_CLAIM_BATCH);

    if (v == NULL) {
        LOG_ERROR("out of memory; the event comes back when its claim expires",
                  LF_S("sink", ob->sink), LF_S("event_id", c->id));
        free(c->id);
        free(record);
        c->id = NULL;
        return;
    }
    ob->settles = v;
    ob->settles[ob->nsettles++] =
        (store_settle_t){.kind = kind, .id = c->id, .due_ms = due_ms, .record = record};
    c->id = NULL; /* the buffer's now */
}

/* store_outbox_settle_async()'s answer for one transaction (n settles). */
typedef struct settle_tx {
    outbox_t *ob;
    size_t n;
} settle_tx_t;

static void on_settled(void *opaque, int rc, const char *err)
{
    settle_tx_t *tx = opaque;
    outbox_t *ob = tx->ob;

    ob->settling--;
    if (rc != 0)
        LOG_WARN("cannot settle attempts in Redis; their events come back when their claims expire",
                 LF_S("sink", ob->sink), LF_I("attempts", tx->n), LF_S("error", err));
    free(tx);
    if (ob->settled && !ob->closed)
        ob->settled(ob->opaque);
}

void outbox_settle_now(outbox_t *ob)
{
    char err[256];

    while (ob->nsettles > 0) {
        size_t n = ob->nsettles < OUTBOX_SETTLE_MAX ? ob->nsettles : OUTBOX_SETTLE_MAX;
        settle_tx_t *tx = malloc(sizeof(*tx));

        if (tx == NULL) {
            snprintf(err, sizeof(err), "out of memory");
        } else {
            *tx = (settle_tx_t){.ob = ob, .n = n};
            if (store_outbox_settle_async(ob->store, ob->sink, ob->settles, n, on_settled, tx, err,
                                          sizeof(err)) == 0) {
                ob->settling++;
                settles_free(ob, n); /* the store formatted the commands: copies on the wire */
                continue;
            }
            free(tx);
        }
        LOG_WARN("cannot settle attempts in Redis; their events come back when their claims expire",
                 LF_S("sink", ob->sink), LF_I("attempts", n), LF_S("error", err));
        settles_free(ob, n);
    }
}

/* Moves the claimed event to the dead letters (with the next settles); logs it. */
static void bury(outbox_t *ob, store_claim_t *c, const char *error)
{
    char *rec = outbox_dead_record(ob->sink, c->id, c->attempt, error, c->json, c->len);

    ob->counts.dead++;
    if (rec == NULL) {
        LOG_ERROR("cannot move an event to the dead letters; it stays in the outbox",
                  LF_S("sink", ob->sink), LF_S("event_id", c->id), LF_S("error", "out of memory"));
        return;
    }
    LOG_WARN("event moved to the dead letters", LF_S("sink", ob->sink), LF_S("event_id", c->id),
             LF_I("attempts", c->attempt), LF_S("error", error));
    settle_later(ob, c, STORE_SETTLE_DEAD, 0, rec);
}

/* The delay before the attempt after c's, or < 0 when the schedule is exhausted. */
static double next_delay(const outbox_t *ob, const store_claim_t *c, double retry_after_s)
{
    double d = backoff_delay(&ob->backoff, c->attempt + 1, http_uniform01());

    if (d < 0)
        return -1;
    if (retry_after_s > OUTBOX_RETRY_AFTER_MAX_S)
        retry_after_s = OUTBOX_RETRY_AFTER_MAX_S;
    return d > retry_after_s ? d : retry_after_s;
}

/* store_sink_set_disabled_async()'s answer. */
static void on_flag_written(void *opaque, int rc, const char *err)
{
    outbox_t *ob = opaque;

    if (rc != 0)
        LOG_ERROR("cannot record the disabled endpoint in Redis", LF_S("sink", ob->sink),
                  LF_S("error", err));
}

static void disable(outbox_t *ob, const char *error)
{
    char at[EVENT_TIME_LEN], err[256];

    event_format_time(clock_unix_ms(), at);
    snprintf(ob->why, sizeof(ob->why), "%s (at %s)", error ? error : "HTTP 410 Gone", at);
    ob->disabled = true;
    ob->flag_stale = ob->flag_reading; /* a read sent before would say "enabled" */
    if (store_sink_set_disabled_async(ob->store, ob->sink, ob->why, on_flag_written, ob, err,
                                      sizeof(err)) != 0)
        on_flag_written(ob, -1, err);
    LOG_ERROR("endpoint disabled: it answered 410 Gone; its events go to the dead letters until "
              "`session-bridge dlq replay` re-enables it",
              LF_S("sink", ob->sink));
}

/*
 * Called by the sink on the loop's thread, once per attempt. The outcome is
 * buffered: the next turn settles every attempt since the last one in one
 * transaction (a settle each was a round trip each).
 */
static void on_attempt_done(sink_ticket_t *t, sink_result_t result, const char *errmsg)
{
    attempt_t *a = (attempt_t *)t;
    outbox_t *ob = a->ob;
    store_claim_t *c = &a->claim;
    char why[320];
    double delay;

    ob->in_flight--;
    switch (result) {
    case SINK_OK:
        ob->counts.delivered++;
        LOG_DEBUG("event delivered", LF_S("sink", ob->sink), LF_S("event_id", c->id),
                  LF_I("attempt", c->attempt));
        settle_later(ob, c, STORE_SETTLE_DONE, 0, NULL);
        break;
    case SINK_ERR_GONE:
        if (!ob->disabled)
            disable(ob, errmsg);
        bury(ob, c, errmsg ? errmsg : "HTTP 410 Gone");
        break;
    case SINK_ERR_PERMANENT:
        bury(ob, c, errmsg);
        break;
    case SINK_ERR_RETRY:
    case SINK_ERR_FATAL:
        delay = next_delay(ob, c, t->retry_after_s);
        if (delay < 0) {
            snprintf(why, sizeof(why), "gave up after %u attempts: %s", c->attempt,
                     errmsg ? errmsg : "failed");
            bury(ob, c, why);
            break;
        }
        ob->counts.retried++;
        LOG_INFO("delivery failed; retrying later", LF_S("sink", ob->sink), LF_S("event_id", c->id),
                 LF_I("attempt", c->attempt), LF_DUR("retry_in_ms", delay),
                 LF_S("error", errmsg ? errmsg : "failed"));
        settle_later(ob, c, STORE_SETTLE_RETRY, clock_unix_ms() + (int64_t)(delay * 1000), NULL);
        break;
    }
    attempt_free(a); /* its claim's id is NULL once handed to the settles */
    if (ob->settled)
        ob->settled(ob->opaque);
}

/* Hands one claimed event to the sink; takes over the claim's memory. */
static void attempt_start(outbox_t *ob, store_claim_t *c)
{
    cJSON *event = cJSON_ParseWithLength(c->json, c->len);
    char key[2 * DIFF_ID_MAX + 2];
    sink_event_t ev;
    attempt_t *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        LOG_ERROR("out of memory; the event comes back when its claim expires",
                  LF_S("sink", ob->sink), LF_S("event_id", c->id));
        free(c->id);
        free(c->json);
        cJSON_Delete(event);
        return;
    }
    a->ob = ob;
    a->claim = *c;
    a->next = ob->attempts;
    if (ob->attempts)
        ob->attempts->prev = a;
    ob->attempts = a;
    a->ticket.done = on_attempt_done;
    a->ticket.opaque = ob;
    a->ticket.retry_after_s = -1;
    ob->in_flight++;
    if (event == NULL ||
        outbox_event_view(event, a->claim.json, a->claim.len, key, sizeof(key), &ev) != 0) {
        on_attempt_done(&a->ticket, SINK_ERR_PERMANENT, "not a CloudEvent written by us");
    } else {
        sink_result_t r = ob->type->submit(ob->ctx, &ev, &a->ticket);
        if (r != SINK_OK) /* not taken: settle it ourselves */
            on_attempt_done(&a->ticket, r, "the sink refused the event");
    }
    cJSON_Delete(event);
}

/* ---- the turn ---- */

/* store_sink_disabled_async()'s answer. */
static void on_flag(void *opaque, int rc, bool disabled, const char *why, const char *err)
{
    outbox_t *ob = opaque;
    bool was = ob->disabled;
    (void)err;

    ob->flag_reading = false;
    if (rc != 0 || ob->flag_stale || ob->closed) {
        ob->flag_stale = false;
        return;
    }
    ob->disabled = disabled;
    if (disabled)
        snprintf(ob->why, sizeof(ob->why), "%s", why ? why : "");
    if (was && !ob->disabled)
        LOG_INFO("endpoint re-enabled", LF_S("sink", ob->sink));
    else if (!was && ob->disabled)
        LOG_WARN("endpoint is disabled; its events go to the dead letters", LF_S("sink", ob->sink),
                 LF_S("why", ob->why));
}

static void refresh_flag(outbox_t *ob, double now)
{
    char err[256];

    ob->next_flag_check = now + OUTBOX_FLAG_CHECK_S;
    ob->flag_reading =
        store_sink_disabled_async(ob->store, ob->sink, on_flag, ob, err, sizeof(err)) == 0;
}

/* A claim failed: nothing more can be done now (`once` may end); later again. */
static void claim_failed(outbox_t *ob, double now, const char *err)
{
    LOG_WARN("cannot read the outbox; retrying", LF_S("sink", ob->sink), LF_S("error", err));
    ob->next_claim = now + OUTBOX_REDIS_RETRY_S;
    ob->drained = true;
}

/* store_outbox_claim_async()'s answer: hands the claimed events over. */
static void on_claimed(void *opaque, int rc, store_claim_t *claims, size_t n, const char *err)
{
    outbox_t *ob = opaque;
    double now = clock_mono_s();

    ob->claiming = false;
    if (ob->closed) {
        /* the sink is going: the events come back when their claims expire */
        store_claims_free(claims, n);
        return;
    }
    if (rc != 0) {
        claim_failed(ob, now, err);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (ob->disabled) {
                char why[OUTBOX_WHY_MAX + 32];
                snprintf(why, sizeof(why), "endpoint disabled: %s", ob->why);
                bury(ob, &claims[i], why);
                free(claims[i].id);
                free(claims[i].json);
            } else {
                attempt_start(ob, &claims[i]);
            }
        }
        free(claims); /* the members were handed over above */
        /* A full batch: more may be due right away. */
        ob->drained = n == 0;
        ob->next_claim = n == ob->claim_room ? now : now + OUTBOX_IDLE_CLAIM_S;
    }
    if (ob->settled)
        ob->settled(ob->opaque); /* a turn now: it settles the burials, claims again */
}

double outbox_turn(outbox_t *ob, bool stopping)
{
    double now = clock_mono_s();
    size_t room;
    char err[256];

    outbox_settle_now(ob);
    if (ob->closed)
        return OUTBOX_IDLE_CLAIM_S;
    if (now >= ob->next_flag_check && !ob->flag_reading)
        refresh_flag(ob, now);
    /* a claim in flight calls settled() with its answer */
    if (stopping || ob->claiming || now < ob->next_claim)
        return stopping || ob->claiming ? OUTBOX_IDLE_CLAIM_S : ob->next_claim - now;

    room = ob->disabled         ? OUTBOX_CLAIM_BATCH
           : ob->type->capacity ? ob->type->capacity(ob->ctx)
                                : OUTBOX_CLAIM_BATCH;
    if (room > OUTBOX_CLAIM_BATCH)
        room = OUTBOX_CLAIM_BATCH;
    if (room == 0) /* a settled attempt frees a slot, and calls settled() */
        return OUTBOX_IDLE_CLAIM_S;
    if (store_outbox_claim_async(ob->store, ob->sink, room, ob->lease_ms, ob->disabled, on_claimed,
                                 ob, err, sizeof(err)) != 0) {
        claim_failed(ob, now, err);
        return OUTBOX_REDIS_RETRY_S;
    }
    ob->claiming = true;
    ob->claim_room = room;
    return OUTBOX_IDLE_CLAIM_S;
}

void outbox_close(outbox_t *ob)
{
    ob->closed = true;
}
