/*
 * summary_sink: an example external sink module for session-bridge.
 *
 * It appends one line per event to a file: "<prefix><type> <source>
 * <session_id> <event id>". Small on purpose: it shows everything a module
 * needs (the exported sink_module_t, an option table from which the bridge
 * validates its keys and hands it typed values, tickets resolved exactly
 * once, logging through sink_log) and nothing else. Build it outside the tree with:
 *
 *   cc -shared -fPIC -O2 -I<prefix>/include/session-bridge \
 *      $(pkg-config --cflags libcjson) -o summary_sink.so summary_sink.c
 *
 * and load it with { "name": "summary", "type": "module",
 * "path": "/abs/summary_sink.so", "output": "/var/log/summary.txt" }.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink.h"

typedef struct summary {
    char *name;
    char *prefix;
    FILE *out;
} summary_t;

/* Our keys only: name, type, events, sources and path are the bridge's. */
static const sink_option_t summary_options[] = {
    {.key = "output",
     .type = SINK_OPT_STRING,
     .flags = SINK_OPT_REQUIRED,
     .desc = "the file the summary lines are appended to"},
    {.key = "prefix", .type = SINK_OPT_STRING, .desc = "text put before every line"},
    {0},
};

static void summary_exit(void *vctx)
{
    summary_t *s = vctx;

    if (s == NULL)
        return;
    if (s->out != NULL)
        fclose(s->out);
    free(s->prefix);
    free(s->name);
    free(s);
}

static void *summary_init(const sink_config_t *cfg, const sink_host_t *host, char *err,
                          size_t errlen)
{
    const char *output = sink_config_get(cfg, "output")->s;
    const char *prefix = sink_config_get(cfg, "prefix")->s;
    summary_t *s = NULL;

    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(host->name)) == NULL ||
        (s->prefix = strdup(prefix ? prefix : "")) == NULL) {
        snprintf(err, errlen, "out of memory");
        summary_exit(s);
        return NULL;
    }
    s->out = fopen(output, "a");
    if (s->out == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", output, strerror(errno));
        summary_exit(s);
        return NULL;
    }
    sink_log(SINK_LOG_INFO, s->name, "summary module writing to %s", output);
    return s;
}

static sink_result_t summary_submit(void *vctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    summary_t *s = vctx;

    if (fprintf(s->out, "%s%s %s %s %s\n", s->prefix, ev->type, ev->source, ev->session_id,
                ev->id) < 0 ||
        fflush(s->out) != 0) {
        clearerr(s->out);
        sink_ticket_done(ticket, SINK_ERR_RETRY, "write failed");
        return SINK_OK;
    }
    sink_ticket_done(ticket, SINK_OK, NULL);
    return SINK_OK;
}

/* Every ticket was resolved inside submit(): none is ever left. */
static size_t summary_flush(void *vctx, int64_t deadline_ms)
{
    (void)vctx;
    (void)deadline_ms;
    return 0;
}

static const sink_type_t summary_type = {
    .name = "summary",
    /* Every ticket is resolved inside submit(): nothing to drive, always ready (the
     * optional callbacks are left out; without .probe, check --connect says "skipped"). */
    .flags = SINK_F_LOOP,
    .desc = "one line per event appended to a file (an example module)",
    .options = summary_options,
    .init = summary_init,
    .submit = summary_submit,
    .flush = summary_flush,
    .exit = summary_exit,
};

/* The one symbol the bridge looks for. */
const sink_module_t session_bridge_sink_module = {
    .abi_version = SINK_ABI_VERSION,
    .type = &summary_type,
};
