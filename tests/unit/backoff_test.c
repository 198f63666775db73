/*
 * Tests of bridge/backoff: the delays of each user's parameters (table),
 * and the state of one thing retried (ready, failed, reset).
 */
#include "backoff.h"

#include <check.h>

#include "testlib.h"

static const double schedule[] = {0, 10, 60};

/* The pollers' parameters (http_default_retry), the outbox's, the store's. */
static const backoff_policy_t exponential = {
    .base_s = 0.5, .factor = 2, .cap_s = 30, .jitter_min = 0.5, .jitter_max = 1};
static const backoff_policy_t scheduled = {
    .schedule = schedule, .nschedule = 3, .jitter_min = 0.9, .jitter_max = 1.1};
static const backoff_policy_t fixed = {.base_s = 1, .factor = 1, .jitter_min = 1, .jitter_max = 1};

static const struct delay_case {
    const backoff_policy_t *p;
    unsigned n;
    double rnd, want;
} delay_cases[] = {
    /* doubling from base, drawn in [d/2, d], capped before the draw */
    {&exponential, 1, 0.0, 0.25},
    {&exponential, 1, 0.5, 0.375},
    {&exponential, 2, 0.0, 0.5},
    {&exponential, 4, 1.0, 4.0},
    {&exponential, 7, 1.0, 30.0},
    {&exponential, 30, 0.0, 15.0},
    {&exponential, 5000, 1.0, 30.0}, /* 2^4999 overflows; the cap holds */
    {&exponential, 0, 1.0, 0.5},     /* 0 is taken as the first */
    /* the schedule's own delays, 10% either way, then exhausted */
    {&scheduled, 1, 0.5, 0},
    {&scheduled, 2, 0.0, 9.0},
    {&scheduled, 2, 0.5, 10.0},
    {&scheduled, 3, 1.0, 66.0},
    {&scheduled, 4, 0.5, -1},
    /* a fixed pause */
    {&fixed, 1, 0.7, 1.0},
    {&fixed, 100, 0.2, 1.0},
};

START_TEST(test_delay)
{
    const struct delay_case *c = &delay_cases[_i];

    ck_assert_double_eq_tol(backoff_delay(c->p, c->n, c->rnd), c->want, 1e-9);
}
END_TEST

START_TEST(test_state)
{
    backoff_t b = backoff_init(&exponential);

    ck_assert(backoff_ready(&b, 0));
    backoff_failed(&b, 100, 1.0); /* 0.5 s */
    ck_assert(!backoff_ready(&b, 100.4));
    ck_assert(backoff_ready(&b, 100.5));
    backoff_failed(&b, 101, 1.0); /* 1 s */
    backoff_failed(&b, 102, 1.0); /* 2 s */
    ck_assert_uint_eq(b.failures, 3);
    ck_assert(!backoff_ready(&b, 103.9));
    ck_assert(backoff_ready(&b, 104));
    /* a success: the next failure waits the first delay again */
    backoff_reset(&b);
    ck_assert(backoff_ready(&b, 0));
    backoff_failed(&b, 200, 1.0);
    ck_assert(!backoff_ready(&b, 200.4));
    ck_assert(backoff_ready(&b, 200.5));

    /* past a schedule's end, its last delay repeats */
    b = backoff_init(&scheduled);
    for (int i = 0; i < 5; i++)
        backoff_failed(&b, 0, 0.5);
    ck_assert_double_eq_tol(b.next_s, 60, 1e-9);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc = tcase_create("backoff");

    tcase_add_loop_test(tc, test_delay, 0, (int)(sizeof(delay_cases) / sizeof(delay_cases[0])));
    tcase_add_test(tc, test_state);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
