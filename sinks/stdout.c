/*
 * sinks/stdout: one event per line on standard output (JSON Lines), for
 * debugging and for piping into other tools.
 *
 * A write is acknowledged once fflush() returned, i.e. once the kernel has
 * the line; that is as durable as a pipe gets. Tickets are resolved inside
 * submit(), so nothing is ever pending. The daemon must ignore SIGPIPE for
 * a closed reader to surface as a write error here rather than kill it.
 */
#include "sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stdout_sink {
    char *name;
    char *line; /* event + '\n', so that each line goes out in one fwrite() */
    size_t cap;
} stdout_sink_t;

static void stdout_exit(void *vctx)
{
    stdout_sink_t *ctx = vctx;

    if (!ctx)
        return;
    free(ctx->line);
    free(ctx->name);
    free(ctx);
}

static void *stdout_init(const sink_config_t *cfg, const sink_host_t *host, char *err,
                         size_t errlen)
{
    stdout_sink_t *ctx = calloc(1, sizeof(*ctx));

    (void)cfg;
    if (!ctx || !(ctx->name = strdup(host && host->name ? host->name : "stdout"))) {
        snprintf(err, errlen, "out of memory");
        stdout_exit(ctx);
        return NULL;
    }
    return ctx;
}

static sink_result_t stdout_submit(void *vctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    stdout_sink_t *ctx = vctx;
    size_t n = ev->json_len + 1;

    if (n > ctx->cap) {
        char *line = realloc(ctx->line, n);

        if (!line)
            return SINK_ERR_RETRY; /* ticket untouched: the caller resolves it */
        ctx->line = line;
        ctx->cap = n;
    }
    memcpy(ctx->line, ev->json, ev->json_len);
    ctx->line[ev->json_len] = '\n';

    if (fwrite(ctx->line, 1, n, stdout) != n || fflush(stdout) != 0) {
        char msg[128];

        snprintf(msg, sizeof(msg), "write to stdout: %s", strerror(errno));
        clearerr(stdout);
        sink_log(SINK_LOG_WARN, ctx->name, "event %s: %s", ev->id, msg);
        sink_ticket_done(ticket, SINK_ERR_RETRY, msg);
        return SINK_OK;
    }
    sink_ticket_done(ticket, SINK_OK, NULL);
    return SINK_OK;
}

static size_t stdout_flush(void *vctx, int64_t deadline_ms)
{
    (void)vctx;
    (void)deadline_ms;
    return 0;
}

/* Nothing to reach: a write to stdout fails only once a reader is gone, and then per event. */
static int stdout_probe(const sink_config_t *cfg, const sink_host_t *host, int64_t deadline_ms,
                        char *msg, size_t msglen)
{
    (void)cfg;
    (void)host;
    (void)deadline_ms;
    snprintf(msg, msglen, "standard output");
    return 0;
}

const sink_type_t sink_stdout_type = {
    .name = "stdout",
    .flags = SINK_F_LOOP, /* every ticket resolves in submit(): nothing to drive */
    .desc = "one event per line on standard output (JSON Lines)",
    .options = (const sink_option_t[]){{0}},
    .init = stdout_init,
    .submit = stdout_submit,
    .flush = stdout_flush,
    .exit = stdout_exit,
    .probe = stdout_probe,
};
