/*
 * Fuzz target: the configuration loader (bridge/config.h), the input being
 * the configuration file, with the environment variables of env[] set for
 * ${VAR} and ${VAR:-default}.
 *
 * Every input goes through conf_parse(); one in LOAD_EVERY also through
 * conf_load() from a temporary file, which must agree. Whatever the input:
 * a refused configuration says why, every message is terminated; an
 * accepted one holds what config.h promises (unique valid names, a
 * provider and a status map per source, base_url without a trailing '/',
 * bounds kept) and builds each source's first request without failing.
 * The first requests pass the checks of fuzz_provider.h. Open issues
 * (fuzz.h): no message quotes the value of a secret variable (unless the
 * input holds it literally), and no request header built from a
 * configured value holds a control character.
 *
 * Nothing may leave the process: a "module" sink's path could name any
 * shared object on the machine, so dlopen() is replaced below; and a Kafka
 * sink's properties are checked with a real librdkafka instance (no broker
 * is contacted, but some properties read files, load plugins or run
 * commands), so inputs naming a property outside safe_properties[] are
 * skipped.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "fuzz_provider.h"

#define SECRET "Sx9fuzzSecretQz"
#define LOAD_EVERY 16

static const char *const env[][2] = {
    {"FUZZ_SECRET", SECRET},
    {"FUZZ_NUM", "30"},
    {"FUZZ_URL", "https://api.example"},
    {"FUZZ_EMPTY", ""},
    {"FUZZ_CRLF", "k\r\nX-Injected: yes"},
    /* A value that looks like a reference: expansion must not recurse. */
    {"FUZZ_NESTED", "${FUZZ_SECRET}"},
    {"FUZZ_JSON", "\"quoted\" {\"a\":1}"},
};

/* librdkafka properties that read no file, load nothing and run nothing;
 * the secret ones are there for the redaction of their values. */
static const char *const safe_properties[] = {"compression.type",
                                              "message.timeout.ms",
                                              "linger.ms",
                                              "acks",
                                              "request.required.acks",
                                              "enable.idempotence",
                                              "max.in.flight.requests.per.connection",
                                              "max.in.flight",
                                              "batch.num.messages",
                                              "queue.buffering.max.messages",
                                              "queue.buffering.max.ms",
                                              "client.id",
                                              "retries",
                                              "retry.backoff.ms",
                                              "socket.timeout.ms",
                                              "sasl.username",
                                              "sasl.password",
                                              "ssl.key.password",
                                              "transactional.id",
                                              "bootstrap.servers",
                                              "metadata.broker.list",
                                              NULL};

void *dlopen(const char *file, int flags)
{
    (void)file;
    (void)flags;
    return NULL;
}

static bool safe_property(const char *name)
{
    for (size_t i = 0; safe_properties[i]; i++) {
        if (strcmp(safe_properties[i], name) == 0)
            return true;
    }
    return false;
}

/* 0 when every "properties" object under node names safe properties only. */
static int properties_safe(const cJSON *node)
{
    for (const cJSON *c = node ? node->child : NULL; c; c = c->next) {
        if (c->string && strcmp(c->string, "properties") == 0) {
            for (const cJSON *p = c->child; p; p = p->next) {
                if (p->string == NULL || !safe_property(p->string))
                    return -1;
            }
        }
        if (properties_safe(c) != 0)
            return -1;
    }
    return 0;
}

static bool contains(const uint8_t *data, size_t size, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= size; i++) {
        if (memcmp(data + i, s, n) == 0)
            return true;
    }
    return false;
}

static void check_errors(const sink_errors_t *errs, const uint8_t *data, size_t size)
{
    size_t n = errs->count < SINK_ERRORS_MAX ? errs->count : SINK_ERRORS_MAX;
    bool literal = contains(data, size, SECRET);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(strnlen(errs->msg[i], SINK_ERROR_LEN) < SINK_ERROR_LEN && errs->msg[i][0],
                   "message %zu is empty or unterminated", i);
        if (!literal)
            FUZZ_CHECK(strstr(errs->msg[i], SECRET) == NULL,
                       "message quotes an expanded value (issue 10, item 6): %s", errs->msg[i]);
    }
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= CONF_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* What an accepted configuration promises; each source's first request. */
static void check_conf(const conf_t *c)
{
    FUZZ_CHECK(c->nsources >= 1 && c->nsources <= CONF_MAX_SOURCES && c->nsinks >= 1,
               "%zu sources, %zu sinks accepted", c->nsources, c->nsinks);
    FUZZ_CHECK(c->redis_url && c->redis_prefix && c->admin_listen, "a top-level string missing");
    for (size_t i = 0; i < c->nsources; i++) {
        const conf_source_t *s = &c->sources[i];
        size_t blen = strlen(s->base_url);
        FUZZ_CHECK(valid_name(s->name), "source name \"%s\" accepted", s->name);
        FUZZ_CHECK(conf_find_source(c, s->name) == s, "source \"%s\" is not unique", s->name);
        FUZZ_CHECK(s->provider && s->pconf && s->status_map, "source %zu half configured", i);
        FUZZ_CHECK(blen > 0 && s->base_url[blen - 1] != '/', "base_url \"%s\"", s->base_url);
        FUZZ_CHECK(s->interval_s >= 1 && s->timeout_s >= 1 && s->vanish_grace >= 1 &&
                       s->vanish_grace <= DIFF_MAX_GRACE && s->page_size >= 1 &&
                       s->page_size <= s->provider->max_page_size,
                   "source \"%s\": interval %d timeout %d grace %u page size %d", s->name,
                   s->interval_s, s->timeout_s, s->vanish_grace, s->page_size);

        provider_request_t *req = calloc(1, sizeof(*req));
        char err[512] = "";
        FUZZ_CHECK(req != NULL, "out of memory");
        void *poll = s->provider->poll_begin(s, 1700000000);
        FUZZ_CHECK(poll != NULL, "out of memory");
        int r = s->provider->next_request(poll, req, err, sizeof(err));
        FUZZ_CHECK(r == 1 || (r == -1 && err[0]), "source \"%s\": first request %d", s->name, r);
        if (r == 1)
            fuzz_check_request(s, req);
        s->provider->poll_free(poll);
        free(req);
    }
    for (size_t i = 0; i < c->nsinks; i++) {
        const conf_sink_t *k = &c->sinks[i];
        FUZZ_CHECK(k->name && k->type && k->cfg, "sink %zu half configured", i);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(c->sinks[j].name, k->name) != 0, "sink \"%s\" twice", k->name);
    }
}

/* conf_load() of the same bytes from a temporary file: the same verdict. */
static void check_load(const uint8_t *data, size_t size, bool accepted)
{
    const char *tmp = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/sb-fuzz-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0, "mkstemp failed");
    FUZZ_CHECK(write(fd, data, size) == (ssize_t)size, "cannot write %s", path);
    close(fd);
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    FUZZ_CHECK(errs != NULL, "out of memory");
    conf_t *c = conf_load(path, errs);
    unlink(path);
    FUZZ_CHECK((c != NULL) == accepted, "conf_load and conf_parse disagree");
    check_errors(errs, data, size);
    conf_free(c);
    free(errs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool env_set;
    if (!env_set) {
        for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
            setenv(env[i][0], env[i][1], 1);
        env_set = true;
    }
    cJSON *doc = cJSON_ParseWithLength((const char *)data, size);
    int unsafe = properties_safe(doc);
    cJSON_Delete(doc);
    if (unsafe)
        return 0;

    sink_errors_t *errs = calloc(1, sizeof(*errs));
    FUZZ_CHECK(errs != NULL, "out of memory");
    conf_t *c = conf_parse((const char *)data, size, "fuzz.json", errs);
    FUZZ_CHECK((c == NULL) == (errs->count > 0), "verdict %s with %zu messages",
               c ? "accepted" : "refused", errs->count);
    check_errors(errs, data, size);
    if (c)
        check_conf(c);
    if (size % LOAD_EVERY == 0)
        check_load(data, size, c != NULL);
    conf_free(c);
    free(errs);
    return 0;
}
