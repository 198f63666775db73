/*
 * dlq: listing, replaying and purging dead letters from the command line.
 */
#include "dlq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "outbox.h"
#include "store.h"

#define DLQ_REDIS_TIMEOUT_MS 5000
/* Dead letters handed to a sink before waiting for their results. */
#define DLQ_BATCH 200
/* How long one batch may take to be acknowledged. */
#define DLQ_BATCH_WAIT_MS 60000

const char *const dlq_action_names[] = {"list", "replay", "purge", NULL};

int dlq_action_parse(const char *s, dlq_action_t *out)
{
    for (int i = 0; s != NULL && dlq_action_names[i]; i++) {
        if (strcmp(s, dlq_action_names[i]) == 0) {
            *out = (dlq_action_t)i;
            return 0;
        }
    }
    return -1;
}

/* The record's members, or NULL ones when it is not a record of ours. */
typedef struct record {
    cJSON *rec, *event;
    const char *event_text;
} record_t;

static int record_parse(const char *text, size_t len, record_t *r)
{
    const cJSON *ev;

    memset(r, 0, sizeof(*r));
    r->rec = cJSON_ParseWithLength(text, len);
    ev = cJSON_GetObjectItemCaseSensitive(r->rec, "event");
    if (!cJSON_IsString(ev))
        return -1;
    r->event_text = ev->valuestring;
    r->event = cJSON_Parse(r->event_text);
    return r->event ? 0 : -1;
}

static void record_free(record_t *r)
{
    cJSON_Delete(r->rec);
    cJSON_Delete(r->event);
}

/* ---- list ---- */

typedef struct list_ctx {
    const char *sink;
    size_t count;
} list_ctx_t;

static const char *member_string(const cJSON *obj, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(m) ? m->valuestring : NULL;
}

static int list_one(void *opaque, const char *id, const char *text, size_t len)
{
    list_ctx_t *l = opaque;
    record_t r;
    cJSON *out = cJSON_CreateObject();
    char *line;

    record_parse(text, len, &r); /* a foreign record is listed with what it has */
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(r.event, "data");
    const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(r.rec, "attempts");
    cJSON_AddStringToObject(out, "sink", l->sink);
    cJSON_AddStringToObject(out, "id", id);
    cJSON_AddStringToObject(out, "type", member_string(r.event, "type"));
    cJSON_AddStringToObject(out, "source", member_string(data, "source"));
    cJSON_AddStringToObject(out, "subject", member_string(r.event, "subject"));
    cJSON_AddNumberToObject(out, "attempts", cJSON_IsNumber(attempts) ? attempts->valuedouble : 0);
    cJSON_AddStringToObject(out, "error", member_string(r.rec, "error"));
    cJSON_AddStringToObject(out, "failed_at", member_string(r.rec, "failed_at"));
    line = cJSON_PrintUnformatted(out);
    if (line != NULL)
        printf("%s\n", line);
    free(line);
    cJSON_Delete(out);
    record_free(&r);
    l->count++;
    return 0;
}

/* ---- replay ---- */

typedef struct pending_letter pending_letter_t;

typedef struct replay_ctx {
    store_t *store;
    const conf_sink_t *sink;
    void *ctx; /* the sink instance */
    pending_letter_t *batch;
    size_t nbatch;
    size_t seen, delivered, failed;
    int gone;
} replay_ctx_t;

struct pending_letter {
    sink_ticket_t ticket; /* first: the sink hands it back */
    replay_ctx_t *rp;
    char *id;
    char *record;
    size_t len;
    int resolved;
    sink_result_t result;
    char error[160];
};

/* Called by the sink on this thread (inside submit, poll or flush). */
static void on_replayed(sink_ticket_t *t, sink_result_t result, const char *errmsg)
{
    pending_letter_t *p = (pending_letter_t *)t;

    p->resolved = 1;
    p->result = result;
    snprintf(p->error, sizeof(p->error), "%s", errmsg ? errmsg : "");
}

/* Hands the batch to the sink, waits for the results, deletes what was delivered. */
static void replay_batch(replay_ctx_t *rp)
{
    const sink_type_t *t = rp->sink->type;
    char err[256];

    for (size_t i = 0; i < rp->nbatch; i++) {
        pending_letter_t *p = &rp->batch[i];
        record_t r;
        sink_event_t ev;
        char key[2 * DIFF_ID_MAX + 2];

        p->ticket = (sink_ticket_t){.done = on_replayed, .opaque = rp, .retry_after_s = -1};
        if (record_parse(p->record, p->len, &r) != 0 ||
            outbox_event_view(r.event, r.event_text, strlen(r.event_text), key, sizeof(key), &ev) !=
                0) {
            on_replayed(&p->ticket, SINK_ERR_PERMANENT, "not a dead-letter record of ours");
        } else {
            sink_result_t res = t->submit(rp->ctx, &ev, &p->ticket);
            if (res != SINK_OK)
                on_replayed(&p->ticket, res, "the sink refused the event");
        }
        record_free(&r);
    }
    (void)t->flush(rp->ctx, sink_deadline_in(DLQ_BATCH_WAIT_MS));
    for (size_t i = 0; i < rp->nbatch; i++) {
        pending_letter_t *p = &rp->batch[i];

        if (p->resolved && p->result == SINK_OK &&
            store_dlq_delete(rp->store, rp->sink->name, p->id, err, sizeof(err)) == 0) {
            rp->delivered++;
        } else {
            rp->failed++;
            rp->gone |= p->resolved && p->result == SINK_ERR_GONE;
            LOG_WARN("dead letter not delivered; it stays in the store",
                     LF_S("sink", rp->sink->name), LF_S("event_id", p->id),
                     LF_S("error", !p->resolved           ? "no answer in time"
                                   : p->result == SINK_OK ? err
                                                          : p->error));
        }
        free(p->id);
        free(p->record);
    }
    rp->nbatch = 0;
}

static int replay_one(void *opaque, const char *id, const char *text, size_t len)
{
    replay_ctx_t *rp = opaque;
    pending_letter_t *p = &rp->batch[rp->nbatch];

    memset(p, 0, sizeof(*p));
    p->rp = rp;
    p->id = strdup(id);
    p->record = malloc(len + 1);
    if (p->id == NULL || p->record == NULL) {
        free(p->id);
        free(p->record);
        return -1;
    }
    memcpy(p->record, text, len);
    p->record[len] = '\0';
    p->len = len;
    rp->seen++;
    if (++rp->nbatch == DLQ_BATCH)
        replay_batch(rp);
    return 0;
}

static int replay_sink(const conf_t *conf, store_t *st, const conf_sink_t *cs)
{
    char err[256];
    replay_ctx_t rp = {.store = st, .sink = cs};
    int rc = 0;

    if ((cs->type->flags & SINK_F_OUTBOX) &&
        store_sink_set_disabled(st, cs->name, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "sink %s: cannot re-enable the endpoint: %s\n", cs->name, err);
        return -1;
    }
    /* The sink's own loop: its flush() runs it while the batch is delivered. */
    loop_t *loop = loop_new(err, sizeof(err));
    if (loop == NULL) {
        fprintf(stderr, "sink %s: %s\n", cs->name, err);
        return -1;
    }
    sink_host_t host = {.name = cs->name,
                        .redis_url = conf->redis_url,
                        .redis_prefix = conf->redis_prefix,
                        .loop = loop_sink_api(loop)};
    rp.batch = calloc(DLQ_BATCH, sizeof(pending_letter_t));
    rp.ctx = rp.batch ? cs->type->init(cs->cfg, &host, err, sizeof(err)) : NULL;
    if (rp.ctx == NULL) {
        fprintf(stderr, "sink %s: %s\n", cs->name, rp.batch ? err : "out of memory");
        free(rp.batch);
        loop_free(loop);
        return -1;
    }
    if (store_dlq_scan(st, cs->name, replay_one, &rp, err, sizeof(err)) != 0) {
        fprintf(stderr, "sink %s: %s\n", cs->name, err);
        rc = -1;
    }
    if (rp.nbatch > 0)
        replay_batch(&rp);
    cs->type->exit(rp.ctx);
    loop_free(loop);
    free(rp.batch);
    if (rp.gone) {
        /* It said 410 again: keep the daemon from retrying it. */
        (void)store_sink_set_disabled(st, cs->name, "HTTP 410 Gone during dlq replay", err,
                                      sizeof(err));
    }
    fprintf(stderr, "sink %s: replayed %zu of %zu dead letter%s (%zu left)%s\n", cs->name,
            rp.delivered, rp.seen, rp.seen == 1 ? "" : "s", rp.failed,
            rp.gone ? "; the endpoint answered 410 again and stays disabled" : "");
    return rc == 0 && rp.failed == 0 ? 0 : -1;
}

/* ---- the command ---- */

int dlq_run(const conf_t *conf, dlq_action_t action, const char *sink)
{
    store_options_t so = {
        .url = conf->redis_url, .prefix = conf->redis_prefix, .timeout_ms = DLQ_REDIS_TIMEOUT_MS};
    char err[256];
    int rc = 0;
    store_t *st = store_new(&so, err, sizeof(err));

    if (st == NULL) {
        fprintf(stderr, "redis: %s\n", err);
        return -1;
    }
    for (size_t i = 0; i < conf->nsinks; i++) {
        const conf_sink_t *cs = &conf->sinks[i];
        list_ctx_t l = {.sink = cs->name};
        size_t n = 0;

        if (sink != NULL && strcmp(sink, cs->name) != 0)
            continue;
        switch (action) {
        case DLQ_LIST:
            if (store_dlq_scan(st, cs->name, list_one, &l, err, sizeof(err)) != 0) {
                fprintf(stderr, "sink %s: %s\n", cs->name, err);
                rc = -1;
            } else {
                fprintf(stderr, "sink %s: %zu dead letter%s\n", cs->name, l.count,
                        l.count == 1 ? "" : "s");
            }
            break;
        case DLQ_PURGE:
            if (store_dlq_purge(st, cs->name, &n, err, sizeof(err)) != 0) {
                fprintf(stderr, "sink %s: %s\n", cs->name, err);
                rc = -1;
            } else {
                fprintf(stderr, "sink %s: purged %zu dead letter%s\n", cs->name, n,
                        n == 1 ? "" : "s");
            }
            break;
        case DLQ_REPLAY:
            if (replay_sink(conf, st, cs) != 0)
                rc = -1;
            break;
        }
    }
    store_free(st);
    return rc;
}
