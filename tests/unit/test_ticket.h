/*
 * A sink ticket for tests: it records how, and how often, the sink resolved
 * it. Shared by the sink tests (header-only: each test is its own program).
 */
#ifndef SB_TEST_TICKET_H
#define SB_TEST_TICKET_H

#include <stdio.h>
#include <string.h>

#include "sink.h"

typedef struct test_ticket {
    sink_ticket_t t; /* first: the callback casts back */
    int calls;
    sink_result_t result;
    char err[512];
} test_ticket_t;

/* Called by the sink, on the thread that drives it (the test's). */
static inline void test_ticket_done(sink_ticket_t *t, sink_result_t result, const char *errmsg)
{
    test_ticket_t *tt = (test_ticket_t *)t;

    tt->calls++;
    tt->result = result;
    snprintf(tt->err, sizeof(tt->err), "%s", errmsg ? errmsg : "");
}

/* As the core hands it over: unresolved, no Retry-After. */
static inline void ticket_init(test_ticket_t *t)
{
    memset(t, 0, sizeof(*t));
    t->t.done = test_ticket_done;
    t->t.retry_after_s = -1;
    t->result = (sink_result_t)-1;
}

#endif /* SB_TEST_TICKET_H */
