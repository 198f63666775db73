/*
 * bridge_metrics: the families as one table, registered in its order (the
 * order /metrics shows them in).
 */
#include "bridge_metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef SB_VERSION
#define SB_VERSION "unknown"
#endif

#define PREFIX "session_bridge_"

typedef enum def_kind {
    DEF_COUNTER,
    DEF_GAUGE,
    DEF_HISTOGRAM,
} def_kind_t;

typedef struct metric_def {
    size_t offset; /* of the family pointer in bridge_metrics_t */
    def_kind_t kind;
    const char *name;
    const char *help;
    const char *const *labels;
} metric_def_t;

static const char *const no_labels[] = {NULL};
static const char *const by_version[] = {"version", NULL};
static const char *const by_source[] = {"source", NULL};
static const char *const by_source_result[] = {"source", "result", NULL};
static const char *const by_source_state[] = {"source", "state", NULL};
static const char *const by_source_type[] = {"source", "type", NULL};
static const char *const by_source_code[] = {"source", "code", NULL};
static const char *const by_sink[] = {"sink", NULL};
static const char *const by_sink_result[] = {"sink", "result", NULL};
static const char *const by_result[] = {"result", NULL};

/* A poll fetches every page of a source: from a fraction of a second for
 * one page to minutes for many pages behind rate limits. */
static const double poll_duration_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

#define DEF(field, kind_, suffix, labels_, help_)                                                  \
    {                                                                                              \
        .offset = offsetof(bridge_metrics_t, field), .kind = (kind_), .name = PREFIX suffix,       \
        .help = (help_), .labels = (labels_)                                                       \
    }

static const metric_def_t defs[] = {
    DEF(build_info, DEF_GAUGE, "build_info", by_version,
        "The running version of session-bridge (always 1)."),
    DEF(heartbeat_timestamp, DEF_GAUGE, "heartbeat_timestamp_seconds", no_labels,
        "Unix time of the main loop's last turn."),
    DEF(polls, DEF_COUNTER, "polls_total", by_source_result,
        "Complete polls of a source (result ok: the cycle committed) and failed ones."),
    DEF(poll_duration, DEF_HISTOGRAM, "poll_duration_seconds", by_source,
        "Time to fetch and parse every page of a poll."),
    DEF(last_success_timestamp, DEF_GAUGE, "last_success_timestamp_seconds", by_source,
        "Unix time of the last committed cycle of a source."),
    DEF(sessions, DEF_GAUGE, "sessions", by_source_state,
        "Sessions tracked in the snapshot of a source, by state."),
    DEF(events, DEF_COUNTER, "events_total", by_source_type,
        "Events produced by committed cycles, by type (started, completed, cancelled)."),
    DEF(unknown_statuses, DEF_COUNTER, "unknown_statuses_total", by_source,
        "Raw statuses seen that map to no state."),
    DEF(http_requests, DEF_COUNTER, "http_requests_total", by_source_code,
        "Provider page requests, by HTTP status (error: transport failure)."),
    DEF(sink_deliveries, DEF_COUNTER, "sink_deliveries_total", by_sink_result,
        "Delivery attempts resolved by a sink (ok, retry, dead_letter, failed)."),
    DEF(sink_queue_depth, DEF_GAUGE, "sink_queue_depth", by_sink,
        "Events handed to a sink and not resolved yet."),
    DEF(sink_ready, DEF_GAUGE, "sink_ready", by_sink, "1 when the sink can take events."),
    DEF(sink_fatal, DEF_GAUGE, "sink_fatal", by_sink,
        "1 after a fatal sink error (the process then exits)."),
    DEF(outbox_depth, DEF_GAUGE, "outbox_depth", by_sink,
        "Events waiting in the durable outbox of a sink."),
    DEF(dead_letters, DEF_GAUGE, "dead_letters", by_sink,
        "Events in the dead-letter store of a sink."),
    DEF(sink_disabled, DEF_GAUGE, "sink_disabled", by_sink,
        "1 when an endpoint answered 410 Gone and the sink was disabled."),
    DEF(redis_errors, DEF_COUNTER, "redis_errors_total", no_labels, "Failed Redis operations."),
    DEF(lease_owned, DEF_GAUGE, "lease_owned", by_source,
        "1 when this replica holds the lease of the source."),
    DEF(lease_lost, DEF_COUNTER, "lease_lost_total", by_source,
        "Leases of a source lost, or refused at commit (fencing)."),
    DEF(paused_until, DEF_GAUGE, "paused_until_timestamp_seconds", by_source,
        "Unix time until which a source is paused because its provider asked (Retry-After); "
        "0 when it is not."),
    DEF(redis_state_restored, DEF_COUNTER, "redis_state_restored_total", by_source,
        "Snapshots of a source that Redis had lost and this replica restored from memory."),
    DEF(vanished_no_record, DEF_COUNTER, "vanished_without_record_total", by_source,
        "Vanished sessions whose cancelled event carries a null session: Redis held no last "
        "record of them (state from before records were kept, or lost)."),
    DEF(config_reloads, DEF_COUNTER, "config_reloads_total", by_result,
        "Configuration reloads (SIGHUP): ok, applied; invalid, refused, the running "
        "configuration stays."),
    DEF(config_reload_stamp, DEF_GAUGE, "config_last_reload_success_timestamp_seconds", no_labels,
        "Unix time of the last configuration reload that was applied; 0 before any."),
};

/* Not in the table: the registry keeps it, there is no family to update. */
#define REFUSALS_NAME PREFIX "metric_series_refused_total"
#define REFUSALS_HELP "Series a metric family refused (over its cap, or an invalid label value)."

static metric_family_t *register_def(metrics_t *m, const metric_def_t *d, char *err, size_t errlen)
{
    switch (d->kind) {
    case DEF_COUNTER:
        return metrics_counter(m, d->name, d->help, d->labels, err, errlen);
    case DEF_GAUGE:
        return metrics_gauge(m, d->name, d->help, d->labels, err, errlen);
    case DEF_HISTOGRAM:
        return metrics_histogram(m, d->name, d->help, d->labels, poll_duration_bounds,
                                 sizeof(poll_duration_bounds) / sizeof(poll_duration_bounds[0]),
                                 err, errlen);
    }
    return NULL;
}

bridge_metrics_t *bridge_metrics_new(metrics_t *m, char *err, size_t errlen)
{
    bridge_metrics_t *bm = calloc(1, sizeof(*bm));
    if (bm == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
        const metric_def_t *d = &defs[i];
        metric_family_t *f = register_def(m, d, err, errlen);
        if (f == NULL)
            goto fail;
        *(metric_family_t **)(void *)((char *)bm + d->offset) = f;
    }
    if (metrics_refusals(m, REFUSALS_NAME, REFUSALS_HELP, err, errlen) != 0)
        goto fail;
    metric_set(bm->build_info, (const char *const[]){SB_VERSION}, 1);
    return bm;
fail:
    free(bm);
    return NULL;
}

void bridge_metrics_forget(bridge_metrics_t *bm, const char *label, const char *value)
{
    if (bm == NULL)
        return;
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        metric_drop(*(metric_family_t **)(void *)((char *)bm + defs[i].offset), label, value);
}

void bridge_metrics_free(bridge_metrics_t *bm)
{
    free(bm);
}
