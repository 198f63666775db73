/*
 * The event loop: timers fire once, in order, re-armed or disarmed; a
 * watched descriptor calls back while it is ready and not after it is
 * unwatched; a signal wakes a loop that would otherwise sleep for seconds;
 * loop_run_for() waits no longer than asked.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static loop_t *fresh_loop(void)
{
    char err[128];
    loop_t *l = loop_new(err, sizeof(err));
    ck_assert_msg(l != NULL, "%s", err);
    return l;
}

typedef struct order {
    loop_t *loop;
    char seen[16];
    size_t n;
    char tag;
    sink_timer_t *rearm; /* re-armed once by the 'b' timer */
} order_t;

typedef struct tagged {
    order_t *o;
    char tag;
} tagged_t;

static void on_tag(void *opaque)
{
    tagged_t *t = opaque;
    order_t *o = t->o;
    o->seen[o->n++] = t->tag;
    if (t->tag == 'b' && o->rearm) {
        loop_timer_arm(o->rearm, 0.01); /* from inside a timer callback */
        o->rearm = NULL;
    }
    if (t->tag == 'z')
        loop_stop(o->loop);
}

START_TEST(timers_fire_once_in_order)
{
    loop_t *l = fresh_loop();
    order_t o = {.loop = l};
    tagged_t ta = {&o, 'a'}, tb = {&o, 'b'}, tc = {&o, 'c'}, tz = {&o, 'z'};
    sink_timer_t *a = loop_timer_new(l, on_tag, &ta);
    sink_timer_t *b = loop_timer_new(l, on_tag, &tb);
    sink_timer_t *c = loop_timer_new(l, on_tag, &tc);
    sink_timer_t *z = loop_timer_new(l, on_tag, &tz);

    loop_timer_arm(c, 0.03);
    loop_timer_arm(a, 0.0);
    loop_timer_arm(b, 0.02);
    loop_timer_arm(c, 0.04); /* re-arming moves it */
    ck_assert(loop_timer_armed(c));
    loop_timer_arm(c, -1); /* and disarming drops it */
    ck_assert(!loop_timer_armed(c));
    o.rearm = a;
    loop_timer_arm(z, 0.1);
    ck_assert_int_eq(loop_run(l), 0);
    ck_assert_str_eq(o.seen, "abaz");
    loop_timer_free(a);
    loop_timer_free(b);
    loop_timer_free(c);
    loop_timer_free(z);
    loop_free(l);
}
END_TEST

typedef struct reader {
    loop_t *loop;
    sink_watch_t *w;
    int calls;
    unsigned events;
} reader_t;

static void on_readable(void *opaque, int fd, unsigned events)
{
    reader_t *r = opaque;
    char buf[16];
    r->calls++;
    r->events |= events;
    ck_assert_int_eq(read(fd, buf, sizeof(buf)), 1);
    loop_watch_set(r->w, 0); /* from inside its own callback */
    loop_stop(r->loop);
}

START_TEST(watch_calls_back_while_ready_only)
{
    loop_t *l = fresh_loop();
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    reader_t r = {.loop = l};
    r.w = loop_watch_new(l, p[0], on_readable, &r);
    ck_assert_ptr_nonnull(r.w);
    ck_assert_int_eq(loop_watch_set(r.w, SINK_IO_READ), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(loop_run(l), 0);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(r.events, SINK_IO_READ);
    /* unwatched: a ready descriptor no longer calls back */
    ck_assert_int_eq(write(p[1], "y", 1), 1);
    double t0 = mono_s();
    loop_run_for(l, 100);
    ck_assert_int_eq(r.calls, 1);
    ck_assert(mono_s() - t0 >= 0.09);
    /* watched again: served at once, not after the timeout */
    ck_assert_int_eq(loop_watch_set(r.w, SINK_IO_READ), 0);
    t0 = mono_s();
    loop_run_for(l, 5000);
    ck_assert_int_eq(r.calls, 2);
    ck_assert(mono_s() - t0 < 1.0);
    loop_watch_free(r.w);
    close(p[0]);
    close(p[1]);
    loop_free(l);
}
END_TEST

static void on_stop_signal(void *opaque)
{
    loop_stop(opaque);
}

static void *send_signal(void *arg)
{
    (void)arg;
    usleep(100 * 1000);
    kill(getpid(), SIGUSR1);
    return NULL;
}

static void never(void *opaque)
{
    (void)opaque;
    ck_abort_msg("the far timer fired: the signal did not wake the loop");
}

START_TEST(signal_wakes_a_sleeping_loop)
{
    loop_t *l = fresh_loop();
    pthread_t th;
    sink_timer_t *far = loop_timer_new(l, never, NULL);

    ck_assert_int_eq(loop_on_signal(l, SIGUSR1, on_stop_signal, l), 0);
    loop_timer_arm(far, 30.0);
    double t0 = mono_s();
    ck_assert_int_eq(pthread_create(&th, NULL, send_signal, NULL), 0);
    ck_assert_int_eq(loop_run(l), 0);
    pthread_join(th, NULL);
    ck_assert(mono_s() - t0 < 2.0);
    loop_timer_free(far);
    loop_free(l);
}
END_TEST

/* The sinks' table reaches the same loop. */
static void on_api_timer(void *opaque)
{
    (*(int *)opaque)++;
}

START_TEST(sink_api_drives_the_same_loop)
{
    loop_t *l = fresh_loop();
    const sink_loop_t *api = loop_sink_api(l);
    int fired = 0;
    sink_timer_t *t = api->timer_new(api->loop, on_api_timer, &fired);

    api->timer_arm(t, 0.01);
    for (int i = 0; i < 20 && !fired; i++)
        api->run(api->loop, 100);
    ck_assert_int_eq(fired, 1);
    api->timer_free(t);
    loop_free(l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("loop");
    tcase_add_test(tc, timers_fire_once_in_order);
    tcase_add_test(tc, watch_calls_back_while_ready_only);
    tcase_add_test(tc, signal_wakes_a_sleeping_loop);
    tcase_add_test(tc, sink_api_drives_the_same_loop);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
