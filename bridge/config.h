/*
 * config: the JSON configuration of CONTRACT §3, loaded, expanded
 * (${VAR}, ${VAR:-default}) and validated in one pass that collects every
 * problem with its JSON path, so that `check` can list them all.
 */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "diff.h"
#include "provider.h"
#include "sink.h"

/* A configuration file larger than this is refused. */
#define CONF_MAX_BYTES (4u * 1024u * 1024u)
#define CONF_NAME_MAX 64
#define CONF_URL_MAX 1024
/* Sources after expansion (exam_ids); more is a configuration error. */
#define CONF_MAX_SOURCES 10000

#define CONF_DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"
#define CONF_DEFAULT_PREFIX "sb"
#define CONF_DEFAULT_ADMIN "127.0.0.1:9464"
#define CONF_DEFAULT_INTERVAL_S 30
#define CONF_DEFAULT_TIMEOUT_S 10
#define CONF_DEFAULT_VANISH_GRACE 2
/* Under Kubernetes' default terminationGracePeriodSeconds of 30. */
#define CONF_DEFAULT_SHUTDOWN_GRACE_S 20
/* A paused or dead replica's sources are taken over within this. */
#define CONF_DEFAULT_LEASE_TTL_S 15
/* SHA-256 of a source's or sink's block: a reload compares them by it. */
#define CONF_DIGEST_LEN 32

typedef struct conf_source {
    char *name;
    const provider_ops_t *provider;
    void *pconf;    /* the provider's parsed keys, owned */
    char *base_url; /* without a trailing '/' */
    int interval_s;
    int timeout_s;
    int page_size;
    unsigned vanish_grace;
    size_t max_sessions; /* records one poll may observe */
    bool initial_emit;   /* initial_snapshot = "emit" */
    diff_status_map_t *status_map;
    /* of its block as the file holds it after ${VAR} expansion (one copy's
     * block for an exam_ids expansion), compact: a reload that changes any
     * value of it changes the source; whitespace alone does not */
    unsigned char digest[CONF_DIGEST_LEN];
} conf_source_t;

typedef struct conf_sink {
    char *name;
    const sink_type_t *type;
    unsigned events; /* bit (1 << diff_event_type_t) per routed type */
    char **sources;  /* NULL: every source */
    size_t nsources;
    sink_config_t *cfg; /* the sink's own keys, validated and typed; owned */
    void *module;       /* dlopen() handle of a "module" sink, closed by conf_free() */
    unsigned char digest[CONF_DIGEST_LEN]; /* of its block, as conf_source_t's */
} conf_sink_t;

typedef struct conf {
    char *path;
    char *redis_url;
    char *redis_prefix;
    char *admin_listen;
    int shutdown_grace_s; /* SIGTERM to exit, at most */
    int lease_ttl_s;      /* lifetime of a source's lease between renewals */
    conf_source_t *sources;
    size_t nsources;
    conf_sink_t *sinks;
    size_t nsinks;
} conf_t;

/*
 * Reads, expands and validates path. Returns the configuration (owned by
 * the caller, released with conf_free()) or NULL with every problem in errs
 * ("sources[2].auth.api_key: required, expected a non-empty string"). No
 * message ever contains an expanded value: where one would quote a string
 * that came from the environment, whoever wrote the message, it shows the
 * file's text instead (unknown provider "${X}").
 */
conf_t *conf_load(const char *path, sink_errors_t *errs);
/* The same from a JSON text already in memory (path is used in messages). */
conf_t *conf_parse(const char *text, size_t len, const char *path, sink_errors_t *errs);
void conf_free(conf_t *conf);

/* The source named name, or NULL. */
const conf_source_t *conf_find_source(const conf_t *conf, const char *name);
/* 1 when sink routes events of type from source. */
int conf_sink_routes(const conf_sink_t *sink, const char *source, diff_event_type_t type);

/*
 * Expands ${VAR} and ${VAR:-default} in s ("$${" is a literal "${").
 * Returns a malloc'd string, or NULL with a reason in err that names the
 * variable but never its value.
 */
char *conf_expand(const char *s, char *err, size_t errlen);

#endif /* SB_CONFIG_H */
