/*
 * summary_sink: an example external sink module for session-bridge.
 *
 * It appends one line per event to a file: "<prefix><type> <source>
 * <session_id> <event id>". Small on purpose: it shows everything a module
 * needs (the exported sink_module_t, validation of its own keys with the
 * sink_conf_* helpers, tickets resolved exactly once, logging through
 * sink_log) and nothing else. Build it outside the tree with:
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

/* The core's common keys, "path" (the module file), and our own. */
static const char *const allowed_keys[] = {"name", "type",   "events", "sources",
                                           "path", "output", "prefix", NULL};

typedef struct summary {
    char *name;
    char *prefix;
    FILE *out;
} summary_t;

static int summary_validate(const cJSON *conf, const char *path, sink_errors_t *errs)
{
    const char *output = NULL, *prefix = NULL;
    int rc = 0;

    if (sink_conf_check_keys(conf, path, allowed_keys, errs) != 0)
        rc = -1;
    if (sink_conf_string(conf, path, "output", true, NULL, &output, errs) != 0)
        rc = -1;
    if (sink_conf_string(conf, path, "prefix", false, "", &prefix, errs) != 0)
        rc = -1;
    return rc;
}

static void summary_destroy(void *vctx)
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

static void *summary_create(const cJSON *conf, const sink_host_t *host, char *err, size_t errlen)
{
    sink_errors_t errs = {0};
    const char *output = NULL, *prefix = "";
    summary_t *s = NULL;

    if (summary_validate(conf, "", &errs) != 0) {
        sink_errors_join(&errs, err, errlen);
        return NULL;
    }
    sink_conf_string(conf, "", "output", true, NULL, &output, &errs);
    sink_conf_string(conf, "", "prefix", false, "", &prefix, &errs);
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(host->name)) == NULL ||
        (s->prefix = strdup(prefix)) == NULL) {
        snprintf(err, errlen, "out of memory");
        summary_destroy(s);
        return NULL;
    }
    s->out = fopen(output, "a");
    if (s->out == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", output, strerror(errno));
        summary_destroy(s);
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

/* Every ticket is resolved inside submit(): nothing to serve or wait for. */
static void summary_poll(void *vctx, int timeout_ms)
{
    (void)vctx;
    (void)timeout_ms;
}

static size_t summary_pending(void *vctx)
{
    (void)vctx;
    return 0;
}

static int summary_ready(void *vctx)
{
    (void)vctx;
    return 1;
}

static int summary_flush(void *vctx, int timeout_ms)
{
    (void)vctx;
    (void)timeout_ms;
    return 0;
}

static const sink_type_t summary_type = {
    .name = "summary",
    .validate = summary_validate,
    .create = summary_create,
    .submit = summary_submit,
    .poll = summary_poll,
    .pending = summary_pending,
    .ready = summary_ready,
    .flush = summary_flush,
    .destroy = summary_destroy,
};

/* The one symbol the bridge looks for. */
const sink_module_t session_bridge_sink_module = {
    .abi_version = SINK_ABI_VERSION,
    .type = &summary_type,
};
