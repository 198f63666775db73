/*
 * metrics: a small Prometheus registry (text exposition format 0.0.4).
 *
 *   metrics_t *m = metrics_new();
 *   metric_family_t *polls = metrics_counter(m, "x_polls_total", "Complete polls.",
 *                                            (const char *const[]){"source", "result", NULL},
 *                                            err, sizeof(err));
 *   metric_add(polls, (const char *const[]){"century", "ok"}, 1);
 *   char *text = metrics_render(m, &len);   // on another thread
 *
 * A family has a kind, a name, a help text and fixed label names; it holds
 * one series per tuple of label values, found through a hash of the values
 * (O(1) on average: a process tracks up to 10,000 sources). A family
 * without labels has its one series from the start, at 0.
 *
 * Threads: everything but metrics_free() may run concurrently. Updates
 * (typically from the main loop) take only their family's mutex, so an
 * update waits at most for the rendering of its own family (the admin
 * server's thread), and updates of different families never wait for each
 * other. Registration takes the registry's mutex, as the render does.
 *
 * Bounds: a family refuses new series beyond its cap (METRICS_SERIES_MAX
 * unless changed) and label values longer than METRICS_LABEL_VALUE_MAX
 * bytes or not valid UTF-8 (one bad value must not make a whole scrape
 * unparseable); refusals are counted per family and can be exposed with
 * metrics_refusals().
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Series per family: ten times what 10,000 sources with a few label values
 * each need, and still a scrape of a few megabytes. */
#define METRICS_SERIES_MAX 100000
/* Label names per family; ours have at most two. */
#define METRICS_LABELS_MAX 8
/* Histogram bounds per family, +Inf excluded. */
#define METRICS_BUCKETS_MAX 32
/* Longest metric or label name. */
#define METRICS_NAME_MAX 128
/* Longest label value: names of sources and sinks are at most 64 bytes. */
#define METRICS_LABEL_VALUE_MAX 256
/* Longest help text. */
#define METRICS_HELP_MAX 1024

typedef struct metrics metrics_t;
typedef struct metric_family metric_family_t;

/* NULL when out of memory. */
metrics_t *metrics_new(void);
/* Frees the registry and every family in it (their pointers become invalid).
 * No other thread may use it any more. Accepts NULL. */
void metrics_free(metrics_t *m);

/*
 * Registration. name is a Prometheus metric name, help a one-line text,
 * labels a NULL-terminated list of label names (NULL for none); all are
 * copied. The family belongs to the registry. NULL with the reason in err
 * when a name is invalid or already registered, the labels repeat, or
 * memory runs out. Families are rendered in registration order.
 *
 * Histogram bounds are finite and strictly increasing (1 to
 * METRICS_BUCKETS_MAX of them); the +Inf bucket is implicit.
 */
metric_family_t *metrics_counter(metrics_t *m, const char *name, const char *help,
                                 const char *const *labels, char *err, size_t errlen);
metric_family_t *metrics_gauge(metrics_t *m, const char *name, const char *help,
                               const char *const *labels, char *err, size_t errlen);
metric_family_t *metrics_histogram(metrics_t *m, const char *name, const char *help,
                                   const char *const *labels, const double *bounds, size_t nbounds,
                                   char *err, size_t errlen);

/*
 * Exposes the refusals of every family as the counter name with one label,
 * "family": one series per family registered (before or after this call),
 * so that an alert can watch a family that starts refusing series.
 */
int metrics_refusals(metrics_t *m, const char *name, const char *help, char *err, size_t errlen);

/*
 * Updates. values holds one label value per label name of the family, in
 * the same order (NULL for a family without labels); the values are copied
 * when a series is created. The series is created on first use. Each
 * returns 0, or -1 when nothing changed: f is NULL (so that code may update
 * a family whose registration it did not check), the call does not fit the
 * kind, v is out of range, or the series was refused.
 *
 * metric_add: counters (v >= 0) and gauges (any finite v).
 * metric_set: gauges, and counters whose total is kept elsewhere (a
 *             collect callback copying it; the caller keeps it monotonic).
 * metric_observe: histograms (v not NaN).
 */
int metric_add(metric_family_t *f, const char *const *values, double v);
int metric_set(metric_family_t *f, const char *const *values, double v);
int metric_observe(metric_family_t *f, const char *const *values, double v);

/*
 * Removes every series of f whose label named label has value (a source or
 * a sink that is gone, so that its series stop being scraped rather than
 * stay at their last value). Returns how many; 0 when f is NULL or has no
 * such label.
 */
size_t metric_drop(metric_family_t *f, const char *label, const char *value);

/* Changes the series cap of f (tests use a small one). */
void metric_set_series_cap(metric_family_t *f, size_t cap);
/* Series refused by f so far. */
uint64_t metric_refused(metric_family_t *f);

/*
 * Renders every family in the text format 0.0.4: HELP and TYPE lines,
 * then the series sorted by their label values (a stable order, whatever
 * order they were created in). Returns a NUL-terminated text the caller
 * frees with free(), its length in *len; NULL when out of memory.
 * Holds one family's mutex at a time, while that family is rendered.
 */
char *metrics_render(metrics_t *m, size_t *len);

#endif /* SB_METRICS_H */
