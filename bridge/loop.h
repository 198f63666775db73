/*
 * loop: the daemon's one event loop, on libevent's core. Every file
 * descriptor (HTTP transfers, the sinks' sockets, librdkafka's queue
 * wake-up pipe) and every deadline (cycles, retries, leases, the metrics
 * tick) is a watch or a timer here, so an idle daemon sleeps in one
 * epoll_wait() until the next of them is due.
 *
 * Watches and timers are the sink_watch_t and sink_timer_t of sink.h: the
 * sinks reach the same functions through loop_sink_api(). Everything runs
 * on the thread that calls loop_run(); nothing here is thread-safe, except
 * that a signal registered with loop_on_signal() may arrive on any thread.
 */
#ifndef SB_LOOP_H
#define SB_LOOP_H

#include <stddef.h>

#include "sink.h"

typedef struct loop loop_t;
struct event_base;

/* NULL with a reason in err. */
loop_t *loop_new(char *err, size_t errlen);
/* Frees the loop; every watch and timer must have been freed before. Accepts NULL. */
void loop_free(loop_t *l);

/* See sink_loop_t for the contract of each. */
sink_watch_t *loop_watch_new(loop_t *l, int fd, sink_io_fn fn, void *opaque);
int loop_watch_set(sink_watch_t *w, unsigned events);
void loop_watch_free(sink_watch_t *w);
sink_timer_t *loop_timer_new(loop_t *l, sink_timer_fn fn, void *opaque);
void loop_timer_arm(sink_timer_t *t, double after_s);
void loop_timer_free(sink_timer_t *t);
/* Whether the timer is armed. */
int loop_timer_armed(const sink_timer_t *t);

/*
 * Calls fn(opaque) on the loop's thread, soon after signo arrives (the
 * handler only writes to libevent's internal pipe, so the wake-up is
 * immediate however long the loop would have slept). Replaces any handler
 * of signo while the loop exists. 0 or -1.
 */
int loop_on_signal(loop_t *l, int signo, sink_timer_fn fn, void *opaque);

/* Serves watches and timers until loop_stop(). 0, or -1 when libevent fails. */
int loop_run(loop_t *l);
/* Makes loop_run() return once the callback that calls it has returned. */
void loop_stop(loop_t *l);
/* Serves what is ready, waiting up to timeout_ms for something (flushes). */
void loop_run_for(loop_t *l, int timeout_ms);

/* libevent's base under l, for libraries that bring their own libevent
 * adapter (hiredis's asynchronous API: the store). Valid while l is. */
struct event_base *loop_event_base(loop_t *l);

/* The sinks' view of l (sink_host_t.loop); valid while l is. */
const sink_loop_t *loop_sink_api(loop_t *l);

#endif /* SB_LOOP_H */
