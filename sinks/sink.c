/*
 * sinks: the registry of built-in sink types and the logger they share.
 */
#include "sink.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Longest log message; librdkafka's own lines stay well below it. */
#define SINK_LOG_MSG_MAX 1024

const sink_type_t *const sink_builtin_types[] = {
#define SINK(name) &sink_##name##_type,
#include "sink_list.h"
#undef SINK
    NULL,
};

const sink_type_t *sink_type_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; sink_builtin_types[i]; i++) {
        if (strcmp(sink_builtin_types[i]->name, name) == 0)
            return sink_builtin_types[i];
    }
    return NULL;
}

/* ---- logging ---- */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Thread: any. One fprintf per line so that stdio's lock keeps lines whole. */
static void stderr_logger(sink_log_level_t level, const char *sink, const char *msg, void *opaque)
{
    (void)opaque;
    fprintf(stderr, "%s sink=%s: %s\n", level_names[level], sink ? sink : "-", msg);
}

/*
 * The level is read on every sink_log() call, lock-free; the function and its
 * opaque change together under the lock (rarely: at startup and in tests).
 */
static atomic_int log_max_level = SINK_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static sink_log_fn log_fn = stderr_logger;
static void *log_opaque;

void sink_set_logger(sink_log_fn fn, sink_log_level_t max_level, void *opaque)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn ? fn : stderr_logger;
    log_opaque = fn ? opaque : NULL;
    pthread_mutex_unlock(&log_lock);
    atomic_store(&log_max_level, (int)max_level);
}

void sink_log(sink_log_level_t level, const char *sink, const char *fmt, ...)
{
    char msg[SINK_LOG_MSG_MAX];
    va_list ap;
    sink_log_fn fn;
    void *opaque;

    if ((int)level < SINK_LOG_ERROR || (int)level > SINK_LOG_DEBUG ||
        (int)level > atomic_load(&log_max_level))
        return;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    pthread_mutex_lock(&log_lock);
    fn = log_fn;
    opaque = log_opaque;
    pthread_mutex_unlock(&log_lock);
    fn(level, sink, msg, opaque);
}
