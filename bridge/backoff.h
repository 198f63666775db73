/*
 * backoff: the one policy for waiting before trying again, with the
 * parameters of each user: a poller retrying a page (exponential, jittered
 * down to half), the outbox retrying a delivery (the sink's
 * retry_schedule_s, jittered by 10% either way), the store reconnecting
 * to Redis (a fixed pause).
 *
 * Pure arithmetic: the caller passes the time and the random sample, so
 * the tests can hold every rule to a table.
 */
#ifndef SB_BACKOFF_H
#define SB_BACKOFF_H

#include <stddef.h>

typedef struct backoff_policy {
    /* Without a schedule: base_s before the first retry, each further
     * delay factor times the last (2 doubles, 1 keeps base_s), at most
     * cap_s (0: no cap). */
    double base_s;
    double factor;
    double cap_s;
    /* When set, the delays themselves, one per retry (borrowed); past
     * its end the retries are exhausted. base_s and factor are unused. */
    const double *schedule;
    size_t nschedule;
    /* The delay d is drawn uniformly in [d * jitter_min, d * jitter_max]:
     * spread retries of many clients apart. 1 and 1 for none. */
    double jitter_min;
    double jitter_max;
} backoff_policy_t;

/*
 * The delay in seconds before retry number n (1-based) under p, rnd being
 * a uniform sample in [0, 1); -1 when p's schedule has no retry n.
 */
double backoff_delay(const backoff_policy_t *p, unsigned n, double rnd);

/* The state of one thing being retried: consecutive failures and when to try next. */
typedef struct backoff {
    const backoff_policy_t *policy; /* borrowed */
    unsigned failures;              /* since the last success */
    double next_s;                  /* no attempt before this time (the caller's clock) */
} backoff_t;

/* A fresh state under policy: the first attempt may be made at once. */
backoff_t backoff_init(const backoff_policy_t *policy);
/* 1 when an attempt may be made at now, 0 while the last failure's delay runs. */
int backoff_ready(const backoff_t *b, double now);
/* An attempt failed at now: the next one waits the delay of this failure's retry.
 * When a schedule is exhausted, its last delay repeats. */
void backoff_failed(backoff_t *b, double now, double rnd);
/* An attempt succeeded: the next failure starts again from the first delay. */
void backoff_reset(backoff_t *b);

#endif /* SB_BACKOFF_H */
