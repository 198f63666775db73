/*
 * backoff: delays before retrying (see backoff.h).
 */
#include "backoff.h"

#include <math.h>

/* Failures counted at most: long before, the cap or the schedule's end fixed the delay. */
#define BACKOFF_FAILURES_MAX 1000000u

double backoff_delay(const backoff_policy_t *p, unsigned n, double rnd)
{
    double d;

    if (n == 0)
        n = 1;
    if (p->schedule != NULL) {
        if (n > p->nschedule)
            return -1;
        d = p->schedule[n - 1];
    } else {
        /* pow() overflows to infinity for a large n: the cap takes it. */
        d = p->base_s * pow(p->factor, (double)(n - 1));
    }
    if (p->cap_s > 0 && d > p->cap_s)
        d = p->cap_s;
    return d * (p->jitter_min + (p->jitter_max - p->jitter_min) * rnd);
}

backoff_t backoff_init(const backoff_policy_t *policy)
{
    return (backoff_t){.policy = policy};
}

int backoff_ready(const backoff_t *b, double now)
{
    return b->failures == 0 || now >= b->next_s;
}

void backoff_failed(backoff_t *b, double now, double rnd)
{
    const backoff_policy_t *p = b->policy;
    double d;

    if (b->failures < BACKOFF_FAILURES_MAX)
        b->failures++;
    d = backoff_delay(p, b->failures, rnd);
    if (d < 0) /* a schedule exhausted: keep its last pace */
        d = backoff_delay(p, (unsigned)p->nschedule, rnd);
    b->next_s = now + (d > 0 ? d : 0);
}

void backoff_reset(backoff_t *b)
{
    b->failures = 0;
    b->next_s = 0;
}
