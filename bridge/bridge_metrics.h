/*
 * bridge_metrics: the metric families of session-bridge, in one place: the
 * names, types, label names and help texts the alert rules and dashboards
 * rely on (CONTRACT §8; the table is in README.md). The engine updates them
 * through the metric_*() calls of metrics.h.
 *
 * Label values the rules expect:
 *   result of polls:           "ok" (the cycle committed), "failed"
 *   state of sessions:         "pending", "active", "completed", "cancelled"
 *                              (set all four per source, 0 included, so a
 *                              state that empties drops to 0 instead of
 *                              keeping its last value)
 *   type of events:            "started", "completed", "cancelled"
 *   code of http_requests:     the HTTP status as decimal text ("200"), or
 *                              "error" for a transport failure
 *   result of sink_deliveries: "ok", "retry", "dead_letter", "failed"
 *   result of config_reloads:  "ok" (applied), "invalid" (refused: the
 *                              running configuration stays)
 */
#ifndef SB_BRIDGE_METRICS_H
#define SB_BRIDGE_METRICS_H

#include <stddef.h>

#include "metrics.h"

typedef struct bridge_metrics {
    /* process */
    metric_family_t *build_info;          /* gauge {version}, 1; set by bridge_metrics_new() */
    metric_family_t *heartbeat_timestamp; /* gauge, unix s of the main loop's last turn */
    metric_family_t *redis_errors;        /* counter */
    /* sources */
    metric_family_t *polls;                  /* counter {source, result} */
    metric_family_t *poll_duration;          /* histogram {source}, seconds */
    metric_family_t *last_success_timestamp; /* gauge {source}, unix s */
    metric_family_t *sessions;               /* gauge {source, state} */
    metric_family_t *events;                 /* counter {source, type} */
    metric_family_t *unknown_statuses;       /* counter {source} */
    metric_family_t *http_requests;          /* counter {source, code} */
    metric_family_t *lease_owned;            /* gauge {source}, 0 or 1 */
    metric_family_t *lease_lost;             /* counter {source} */
    metric_family_t *paused_until;           /* gauge {source}, unix s; 0 when not paused */
    metric_family_t *redis_state_restored;   /* counter {source} */
    metric_family_t *vanished_no_record;     /* counter {source} */
    /* sinks */
    metric_family_t *sink_deliveries;  /* counter {sink, result} */
    metric_family_t *sink_queue_depth; /* gauge {sink} */
    metric_family_t *sink_ready;       /* gauge {sink}, 0 or 1 */
    metric_family_t *sink_fatal;       /* gauge {sink}, 0 or 1 */
    metric_family_t *outbox_depth;     /* gauge {sink} */
    metric_family_t *dead_letters;     /* gauge {sink} */
    metric_family_t *sink_disabled;    /* gauge {sink}, 0 or 1 */
    /* the configuration (SIGHUP) */
    metric_family_t *config_reloads;      /* counter {result} */
    metric_family_t *config_reload_stamp; /* gauge, unix s of the last successful reload */
} bridge_metrics_t;

/*
 * Removes the series of a source or sink that is gone (label "source" or
 * "sink", value its name) from every family that has that label.
 */
void bridge_metrics_forget(bridge_metrics_t *bm, const char *label, const char *value);

/*
 * Registers every family in m (which owns them) and sets build_info; also
 * session_bridge_metric_series_refused_total{family}, which the registry
 * maintains itself. The returned struct only points into m: use it only
 * while m lives. NULL with the reason in err (a family already registered
 * in m, or out of memory); the families registered before the failure stay
 * in m.
 */
bridge_metrics_t *bridge_metrics_new(metrics_t *m, char *err, size_t errlen);
/* Frees the struct, not the families (they belong to the registry). Accepts NULL. */
void bridge_metrics_free(bridge_metrics_t *bm);

#endif /* SB_BRIDGE_METRICS_H */
