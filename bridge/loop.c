/*
 * loop: watches, timers and signals as libevent events on one event_base.
 */
#include "loop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

struct loop {
    struct event_base *base;
    struct event *run_timer; /* ends one loop_run_for() */
    struct event *signals[8];
    size_t nsignals;
    sink_loop_t api;
};

struct sink_watch {
    struct event *ev;
    loop_t *loop;
    int fd;
    unsigned events;
    sink_io_fn fn;
    void *opaque;
};

struct sink_timer {
    struct event *ev;
    sink_timer_fn fn;
    void *opaque;
};

typedef struct signal_cb {
    sink_timer_fn fn;
    void *opaque;
} signal_cb_t;

/* ---- the sinks' table: the same functions, with loop as a void * ---- */

static sink_watch_t *api_watch_new(void *l, int fd, sink_io_fn fn, void *opaque)
{
    return loop_watch_new(l, fd, fn, opaque);
}

static sink_timer_t *api_timer_new(void *l, sink_timer_fn fn, void *opaque)
{
    return loop_timer_new(l, fn, opaque);
}

static void api_run(void *l, int timeout_ms)
{
    loop_run_for(l, timeout_ms);
}

static void on_run_timer(evutil_socket_t fd, short what, void *opaque)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(opaque);
}

loop_t *loop_new(char *err, size_t errlen)
{
    loop_t *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->base = event_base_new();
    if (l->base == NULL || (l->run_timer = evtimer_new(l->base, on_run_timer, l->base)) == NULL) {
        snprintf(err, errlen, "cannot create the event loop (libevent)");
        loop_free(l);
        return NULL;
    }
    l->api = (sink_loop_t){.loop = l,
                           .watch_new = api_watch_new,
                           .watch_set = loop_watch_set,
                           .watch_free = loop_watch_free,
                           .timer_new = api_timer_new,
                           .timer_arm = loop_timer_arm,
                           .timer_free = loop_timer_free,
                           .run = api_run};
    return l;
}

void loop_free(loop_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nsignals; i++) {
        free(event_get_callback_arg(l->signals[i]));
        event_free(l->signals[i]);
    }
    if (l->run_timer)
        event_free(l->run_timer);
    if (l->base)
        event_base_free(l->base);
    free(l);
}

struct event_base *loop_event_base(loop_t *l)
{
    return l->base;
}

const sink_loop_t *loop_sink_api(loop_t *l)
{
    return &l->api;
}

/* ---- watches ---- */

static void on_io(evutil_socket_t fd, short what, void *opaque)
{
    sink_watch_t *w = opaque;
    unsigned events =
        ((what & EV_READ) ? SINK_IO_READ : 0) | ((what & EV_WRITE) ? SINK_IO_WRITE : 0);

    w->fn(w->opaque, (int)fd, events);
}

sink_watch_t *loop_watch_new(loop_t *l, int fd, sink_io_fn fn, void *opaque)
{
    sink_watch_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    *w = (sink_watch_t){.loop = l, .fd = fd, .fn = fn, .opaque = opaque};
    w->ev = event_new(l->base, fd, EV_PERSIST, on_io, w);
    if (w->ev == NULL) {
        free(w);
        return NULL;
    }
    return w;
}

/*
 * libevent cannot change the events of an added event: it is deleted and
 * assigned again (allowed from inside its own callback, where libcurl's
 * socket callback often changes it).
 */
int loop_watch_set(sink_watch_t *w, unsigned events)
{
    short what = EV_PERSIST | ((events & SINK_IO_READ) ? EV_READ : 0) |
                 ((events & SINK_IO_WRITE) ? EV_WRITE : 0);

    if (events == w->events)
        return 0;
    event_del(w->ev);
    w->events = 0;
    if (events == 0)
        return 0;
    if (event_assign(w->ev, w->loop->base, w->fd, what, on_io, w) != 0 ||
        event_add(w->ev, NULL) != 0)
        return -1;
    w->events = events;
    return 0;
}

void loop_watch_free(sink_watch_t *w)
{
    if (w == NULL)
        return;
    event_free(w->ev);
    free(w);
}

/* ---- timers ---- */

static void on_timer(evutil_socket_t fd, short what, void *opaque)
{
    sink_timer_t *t = opaque;
    (void)fd;
    (void)what;
    t->fn(t->opaque);
}

sink_timer_t *loop_timer_new(loop_t *l, sink_timer_fn fn, void *opaque)
{
    sink_timer_t *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->fn = fn;
    t->opaque = opaque;
    t->ev = evtimer_new(l->base, on_timer, t);
    if (t->ev == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

void loop_timer_arm(sink_timer_t *t, double after_s)
{
    if (after_s < 0 || isnan(after_s)) {
        evtimer_del(t->ev);
        return;
    }
    /* Beyond a year is "never" for a daemon, and keeps tv_sec in range. */
    if (after_s > 365.0 * 86400.0)
        after_s = 365.0 * 86400.0;
    struct timeval tv = {.tv_sec = (time_t)after_s,
                         .tv_usec = (suseconds_t)((after_s - floor(after_s)) * 1e6)};
    evtimer_add(t->ev, &tv);
}

int loop_timer_armed(const sink_timer_t *t)
{
    return evtimer_pending(t->ev, NULL) != 0;
}

void loop_timer_free(sink_timer_t *t)
{
    if (t == NULL)
        return;
    event_free(t->ev);
    free(t);
}

/* ---- signals and running ---- */

static void on_signal(evutil_socket_t sig, short what, void *opaque)
{
    signal_cb_t *cb = opaque;
    (void)sig;
    (void)what;
    cb->fn(cb->opaque);
}

int loop_on_signal(loop_t *l, int signo, sink_timer_fn fn, void *opaque)
{
    signal_cb_t *cb;
    struct event *ev;

    if (l->nsignals == sizeof(l->signals) / sizeof(l->signals[0]) ||
        (cb = malloc(sizeof(*cb))) == NULL)
        return -1;
    *cb = (signal_cb_t){.fn = fn, .opaque = opaque};
    ev = evsignal_new(l->base, signo, on_signal, cb);
    if (ev == NULL || event_add(ev, NULL) != 0) {
        if (ev)
            event_free(ev);
        free(cb);
        return -1;
    }
    l->signals[l->nsignals++] = ev;
    return 0;
}

int loop_run(loop_t *l)
{
    /* NO_EXIT_ON_EMPTY: between two cycles nothing may be armed for a moment. */
    return event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0 ? -1 : 0;
}

void loop_stop(loop_t *l)
{
    event_base_loopbreak(l->base);
}

void loop_run_for(loop_t *l, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms > 0 ? timeout_ms / 1000 : 0,
                         .tv_usec = timeout_ms > 0 ? (timeout_ms % 1000) * 1000 : 0};

    evtimer_add(l->run_timer, &tv);
    event_base_loop(l->base, EVLOOP_ONCE);
    evtimer_del(l->run_timer);
}
