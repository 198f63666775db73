/*
 * outbox: claims, attempts and settles the events of one outbox sink.
 */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
/* Claims per turn; the sink's room() usually caps it lower. */
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
    outbox_counts_t counts;
};

/* One attempt handed to the sink. */
typedef struct attempt {
    sink_ticket_t ticket; /* first: the sink hands it back */
    outbox_t *ob;
    store_claim_t claim;
} attempt_t;

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

void outbox_free(outbox_t *ob)
{
    if (ob == NULL)
        return;
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
    return ob->drained && ob->in_flight == 0;
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

/* Moves the claimed event to the dead letters; logs what happened. */
static void bury(outbox_t *ob, const store_claim_t *c, const char *error)
{
    char err[256];
    char *rec = outbox_dead_record(ob->sink, c->id, c->attempt, error, c->json, c->len);

    ob->counts.dead++;
    if (rec == NULL || store_outbox_dead(ob->store, ob->sink, c->id, rec, err, sizeof(err)) != 0) {
        LOG_ERROR("cannot move an event to the dead letters; it stays in the outbox",
                  LF_S("sink", ob->sink), LF_S("event_id", c->id),
                  LF_S("error", rec ? err : "out of memory"));
    } else {
        LOG_WARN("event moved to the dead letters", LF_S("sink", ob->sink), LF_S("event_id", c->id),
                 LF_I("attempts", c->attempt), LF_S("error", error));
    }
    free(rec);
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

static void disable(outbox_t *ob, const char *error)
{
    char at[EVENT_TIME_LEN], err[256];

    event_format_time(clock_unix_ms(), at);
    snprintf(ob->why, sizeof(ob->why), "%s (at %s)", error ? error : "HTTP 410 Gone", at);
    ob->disabled = true;
    if (store_sink_set_disabled(ob->store, ob->sink, ob->why, err, sizeof(err)) != 0)
        LOG_ERROR("cannot record the disabled endpoint in Redis", LF_S("sink", ob->sink),
                  LF_S("error", err));
    LOG_ERROR("endpoint disabled: it answered 410 Gone; its events go to the dead letters until "
              "`session-bridge dlq replay` re-enables it",
              LF_S("sink", ob->sink));
}

/* Called by the sink on the loop's thread, once per attempt. */
static void on_attempt_done(sink_ticket_t *t, sink_result_t result, const char *errmsg)
{
    attempt_t *a = (attempt_t *)t;
    outbox_t *ob = a->ob;
    store_claim_t *c = &a->claim;
    char err[256], why[320];
    int rc = 0;
    double delay;

    ob->in_flight--;
    switch (result) {
    case SINK_OK:
        ob->counts.delivered++;
        rc = store_outbox_done(ob->store, ob->sink, c->id, err, sizeof(err));
        LOG_DEBUG("event delivered", LF_S("sink", ob->sink), LF_S("event_id", c->id),
                  LF_I("attempt", c->attempt));
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
        rc = store_outbox_retry(ob->store, ob->sink, c->id,
                                clock_unix_ms() + (int64_t)(delay * 1000), err, sizeof(err));
        break;
    }
    if (rc != 0)
        LOG_WARN("cannot settle an attempt in Redis; the event comes back when its claim expires",
                 LF_S("sink", ob->sink), LF_S("event_id", c->id), LF_S("error", err));
    free(c->id);
    free(c->json);
    free(a);
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

static void refresh_flag(outbox_t *ob, double now)
{
    char err[256];
    bool was = ob->disabled;

    ob->next_flag_check = now + OUTBOX_FLAG_CHECK_S;
    if (store_sink_disabled(ob->store, ob->sink, &ob->disabled, ob->why, sizeof(ob->why), err,
                            sizeof(err)) != 0) {
        ob->disabled = was;
        return;
    }
    if (was && !ob->disabled)
        LOG_INFO("endpoint re-enabled", LF_S("sink", ob->sink));
    else if (!was && ob->disabled)
        LOG_WARN("endpoint is disabled; its events go to the dead letters", LF_S("sink", ob->sink),
                 LF_S("why", ob->why));
}

double outbox_turn(outbox_t *ob, bool stopping)
{
    double now = clock_mono_s();
    store_claim_t *claims = NULL;
    size_t n = 0, room;
    char err[256];

    if (now >= ob->next_flag_check)
        refresh_flag(ob, now);
    if (stopping || now < ob->next_claim)
        return stopping ? OUTBOX_IDLE_CLAIM_S : ob->next_claim - now;

    room = ob->disabled     ? OUTBOX_CLAIM_BATCH
           : ob->type->room ? ob->type->room(ob->ctx)
                            : OUTBOX_CLAIM_BATCH;
    if (room > OUTBOX_CLAIM_BATCH)
        room = OUTBOX_CLAIM_BATCH;
    if (room == 0) /* a settled attempt frees a slot, and calls settled() */
        return OUTBOX_IDLE_CLAIM_S;
    if (store_outbox_claim(ob->store, ob->sink, room, ob->lease_ms, ob->disabled, &claims, &n, err,
                           sizeof(err)) != 0) {
        LOG_WARN("cannot read the outbox; retrying", LF_S("sink", ob->sink), LF_S("error", err));
        ob->next_claim = now + OUTBOX_REDIS_RETRY_S;
        ob->drained = true; /* nothing more can be done now: `once` may end */
        return OUTBOX_REDIS_RETRY_S;
    }
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
    ob->next_claim = n == room ? now : now + OUTBOX_IDLE_CLAIM_S;
    return ob->next_claim - now;
}
