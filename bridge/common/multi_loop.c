/*
 * multi_loop: libcurl's socket and timer callbacks on a sink_loop_t.
 */
#include "multi_loop.h"

#include <stdio.h>
#include <stdlib.h>

/* A socket libcurl asked us to watch; assigned to it with curl_multi_assign(). */
typedef struct ml_socket {
    multi_loop_t *ml;
    sink_watch_t *watch;
    struct ml_socket *prev, *next; /* every live one, for multi_loop_free() */
} ml_socket_t;

struct multi_loop {
    const sink_loop_t *loop;
    CURLM *multi;
    sink_timer_t *timer;
    multi_loop_done_fn done;
    void *opaque;
    ml_socket_t *sockets;
};

int multi_loop_collect(CURLM *multi, multi_loop_done_fn done, void *opaque)
{
    CURLMsg *msg;
    int left, n = 0;

    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* msg is invalid once the handle is removed: read it first */
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        done(opaque, easy, result);
        n++;
    }
    return n;
}

static void act(multi_loop_t *ml, curl_socket_t s, int flags)
{
    int running;

    /* An error here is libcurl's own (out of memory, bad handle): the
     * transfers it concerns end with their own result. */
    (void)curl_multi_socket_action(ml->multi, s, flags, &running);
    multi_loop_collect(ml->multi, ml->done, ml->opaque);
}

static void on_io(void *opaque, int fd, unsigned events)
{
    ml_socket_t *ms = opaque;
    int flags = ((events & SINK_IO_READ) ? CURL_CSELECT_IN : 0) |
                ((events & SINK_IO_WRITE) ? CURL_CSELECT_OUT : 0);

    act(ms->ml, fd, flags);
}

static void on_timer(void *opaque)
{
    act(opaque, CURL_SOCKET_TIMEOUT, 0);
}

static void socket_drop(multi_loop_t *ml, ml_socket_t *ms)
{
    ml->loop->watch_free(ms->watch);
    if (ms->prev)
        ms->prev->next = ms->next;
    else
        ml->sockets = ms->next;
    if (ms->next)
        ms->next->prev = ms->prev;
    free(ms);
}

/* libcurl, inside a socket action or a remove: what to watch on s. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    multi_loop_t *ml = userp;
    ml_socket_t *ms = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (ms) {
            curl_multi_assign(ml->multi, s, NULL);
            socket_drop(ml, ms);
        }
        return 0;
    }
    if (ms == NULL) {
        if ((ms = calloc(1, sizeof(*ms))) == NULL)
            return -1;
        ms->ml = ml;
        if ((ms->watch = ml->loop->watch_new(ml->loop->loop, s, on_io, ms)) == NULL) {
            free(ms);
            return -1;
        }
        ms->next = ml->sockets;
        if (ml->sockets)
            ml->sockets->prev = ms;
        ml->sockets = ms;
        curl_multi_assign(ml->multi, s, ms);
    }
    unsigned events = (what == CURL_POLL_IN || what == CURL_POLL_INOUT ? SINK_IO_READ : 0) |
                      (what == CURL_POLL_OUT || what == CURL_POLL_INOUT ? SINK_IO_WRITE : 0);
    return ml->loop->watch_set(ms->watch, events) == 0 ? 0 : -1;
}

/* libcurl: when to call it with CURL_SOCKET_TIMEOUT (-1: never). Only arms the timer. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    multi_loop_t *ml = userp;
    (void)multi;

    ml->loop->timer_arm(ml->timer, timeout_ms < 0 ? -1.0 : (double)timeout_ms / 1000.0);
    return 0;
}

multi_loop_t *multi_loop_new(const sink_loop_t *loop, multi_loop_done_fn done, void *opaque,
                             char *err, size_t errlen)
{
    multi_loop_t *ml = calloc(1, sizeof(*ml));

    if (ml == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ml->loop = loop;
    ml->done = done;
    ml->opaque = opaque;
    ml->multi = curl_multi_init();
    ml->timer = ml->multi ? loop->timer_new(loop->loop, on_timer, ml) : NULL;
    if (ml->timer == NULL) {
        snprintf(err, errlen, "cannot create a libcurl multi handle on the loop");
        multi_loop_free(ml);
        return NULL;
    }
    curl_multi_setopt(ml->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(ml->multi, CURLMOPT_SOCKETDATA, ml);
    curl_multi_setopt(ml->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(ml->multi, CURLMOPT_TIMERDATA, ml);
    return ml;
}

CURLM *multi_loop_handle(const multi_loop_t *ml)
{
    return ml->multi;
}

void multi_loop_free(multi_loop_t *ml)
{
    if (ml == NULL)
        return;
    /* Closing the cached connections calls on_socket() with REMOVE. */
    if (ml->multi)
        curl_multi_cleanup(ml->multi);
    while (ml->sockets)
        socket_drop(ml, ml->sockets);
    if (ml->timer)
        ml->loop->timer_free(ml->timer);
    free(ml);
}
