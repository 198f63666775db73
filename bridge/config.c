/*
 * config: load, expand and validate the configuration.
 *
 * Expansion happens on the parsed tree, string by string, before any
 * validation, so that validators see the values the daemon will use and
 * every message can name the JSON path. After expansion any string may hold
 * a secret, yet messages quote strings (an unknown provider, a duplicate
 * name) and so do texts we do not write (dlerror(), librdkafka, a sink
 * module's validate()). So the loader records what expansion substituted,
 * and before conf_parse() returns, every message it collected is rewritten
 * to show the file's text ("${X}") where it would show a substituted value.
 */
#include "config.h"
#include "array.h"
#include "net.h"
#include "redis_conn.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* Longest string after expansion. */
#define CONF_EXPANDED_MAX (64u * 1024u)
/* Longest JSON path we format. */
#define CONF_PATH_MAX SINK_PATH_MAX
/*
 * A substituted value at least this long is redacted wherever it appears
 * in a message; a shorter one only where it stands as a word of its own
 * (between quotes, spaces, ':' ...), so that X=s does not rewrite every 's'
 * of every message.
 */
#define CONF_REDACT_ANYWHERE_MIN 8

static const char *const top_keys[] = {
    "redis", "admin", "shutdown_grace_s", "lease_ttl_s", "sources", "sinks", NULL};
static const char *const redis_keys[] = {"url", "prefix", NULL};
static const char *const admin_keys[] = {"listen", NULL};
static const char *const source_common_keys[] = {
    "name",      "provider",     "base_url", "auth",       "interval_s",       "timeout_s",
    "page_size", "vanish_grace", "filters",  "status_map", "initial_snapshot", "max_sessions",
    NULL};

/* ---- ${VAR} expansion ---- */

typedef struct strbuf {
    char *buf;
    size_t len, cap;
} strbuf_t;

static int sb_put(strbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > CONF_EXPANDED_MAX)
        return -1;
    char *nb = array_grow(b->buf, &b->cap, b->len + n + 1, 1, 64);
    if (nb == NULL)
        return -1;
    b->buf = nb;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return 0;
}

static int valid_var_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    }
    return 1;
}

/* ---- what expansion substituted, and the messages that must not show it ---- */

typedef struct conf_subst {
    char *value; /* what no message may show */
    size_t len;  /* strlen(value) */
    char *shown; /* what it shows instead: the text of the file */
} conf_subst_t;

typedef struct conf_substs {
    conf_subst_t *v;
    size_t n, cap;
} conf_substs_t;

/* Records value -> shown (copies both); an empty or known value is skipped. */
static int substs_add(conf_substs_t *s, const char *value, const char *shown)
{
    if (value[0] == '\0')
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].value, value) == 0)
            return 0;
    }
    conf_subst_t *v = array_grow(s->v, &s->cap, s->n + 1, sizeof(*v), 16);
    if (v == NULL)
        return -1;
    s->v = v;
    conf_subst_t *e = &s->v[s->n];
    e->value = strdup(value);
    e->shown = strdup(shown);
    if (e->value == NULL || e->shown == NULL) {
        free(e->value);
        free(e->shown);
        return -1;
    }
    e->len = strlen(value);
    s->n++;
    return 0;
}

static void substs_free(conf_substs_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        explicit_bzero(s->v[i].value, s->v[i].len);
        free(s->v[i].value);
        free(s->v[i].shown);
    }
    free(s->v);
}

/* Longest value first: "s3cr3t-1" is replaced whole, not as "${X}-1" plus rest. */
static int by_length_desc(const void *a, const void *b)
{
    size_t la = ((const conf_subst_t *)a)->len, lb = ((const conf_subst_t *)b)->len;
    return la < lb ? 1 : la > lb ? -1 : 0;
}

static int word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || (unsigned char)c >= 0x80;
}

/* True when v occurs in msg at p under the rule of CONF_REDACT_ANYWHERE_MIN. */
static int redactable_at(const char *msg, const char *p, const char *v, size_t n)
{
    if (strncmp(p, v, n) != 0)
        return 0;
    if (n >= CONF_REDACT_ANYWHERE_MIN)
        return 1;
    return (p == msg || !word_char(p[-1])) && !word_char(p[n]);
}

/*
 * A message cut at SINK_ERROR_LEN may end inside a value, where no whole
 * occurrence is left to find: such a tail (a prefix of a value) is cut off.
 */
static void cut_partial_tail(char *msg, const conf_substs_t *s)
{
    size_t len = strlen(msg);
    if (len + 1 < SINK_ERROR_LEN)
        return;
    for (size_t i = 0; i < s->n; i++) {
        size_t vlen = s->v[i].len;
        for (size_t k = vlen - 1 < len ? vlen - 1 : len; k > 0; k--) {
            if (memcmp(msg + len - k, s->v[i].value, k) == 0) {
                len -= k;
                msg[len] = '\0';
                break;
            }
        }
    }
}

/* Rewrites errs->msg[from..] so that no substituted value shows (see the top). */
static void redact_messages(sink_errors_t *errs, size_t from, conf_substs_t *s)
{
    size_t shown = errs->count < SINK_ERRORS_MAX ? errs->count : SINK_ERRORS_MAX;

    if (s->n == 0)
        return;
    qsort(s->v, s->n, sizeof(*s->v), by_length_desc);
    for (size_t m = from; m < shown; m++) {
        char *msg = errs->msg[m], out[SINK_ERROR_LEN];
        size_t o = 0;

        cut_partial_tail(msg, s);
        for (const char *p = msg; *p && o + 1 < sizeof(out);) {
            size_t i;
            for (i = 0; i < s->n; i++) {
                size_t n = s->v[i].len;
                if (redactable_at(msg, p, s->v[i].value, n)) {
                    int w = snprintf(out + o, sizeof(out) - o, "%s", s->v[i].shown);
                    o = w < 0 ? o : o + (size_t)w < sizeof(out) ? o + (size_t)w : sizeof(out) - 1;
                    p += n;
                    break;
                }
            }
            if (i == s->n)
                out[o++] = *p++;
        }
        out[o] = '\0';
        memcpy(msg, out, o + 1);
    }
}

/* ---- ${VAR} expansion ---- */

/* conf_expand(); with rec, each variable's value is recorded against "${NAME}". */
static char *expand(const char *s, conf_substs_t *rec, char *err, size_t errlen)
{
    strbuf_t b = {0};
    const char *p = s;

    if (sb_put(&b, "", 0) != 0)
        goto nomem;
    while (*p) {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            if (sb_put(&b, "${", 2) != 0)
                goto toolong;
            p += 3;
            continue;
        }
        if (p[0] != '$' || p[1] != '{') {
            if (sb_put(&b, p, 1) != 0)
                goto toolong;
            p++;
            continue;
        }
        const char *name = p + 2;
        const char *close = strchr(name, '}');
        if (close == NULL) {
            snprintf(err, errlen, "unterminated ${ in string");
            goto fail;
        }
        const char *sep = strstr(name, ":-");
        size_t namelen = (sep && sep < close) ? (size_t)(sep - name) : (size_t)(close - name);
        if (!valid_var_name(name, namelen)) {
            snprintf(err, errlen, "invalid variable reference ${%.*s}", (int)(close - name), name);
            goto fail;
        }
        char var[256];
        if (namelen >= sizeof(var)) {
            snprintf(err, errlen, "variable name too long");
            goto fail;
        }
        memcpy(var, name, namelen);
        var[namelen] = '\0';
        const char *val = getenv(var);
        if (val == NULL) {
            if (sep && sep < close) {
                if (sb_put(&b, sep + 2, (size_t)(close - sep - 2)) != 0)
                    goto toolong;
            } else {
                snprintf(err, errlen, "environment variable %s is not set (and no ${%s:-default})",
                         var, var);
                goto fail;
            }
        } else if (sb_put(&b, val, strlen(val)) != 0) {
            goto toolong;
        } else if (rec) {
            char shown[sizeof(var) + 3];
            snprintf(shown, sizeof(shown), "${%s}", var);
            if (substs_add(rec, val, shown) != 0)
                goto nomem;
        }
        p = close + 1;
    }
    return b.buf;
toolong:
    snprintf(err, errlen, "string longer than %u bytes after expansion", CONF_EXPANDED_MAX);
    goto fail;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    if (b.buf)
        explicit_bzero(b.buf, b.len);
    free(b.buf);
    return NULL;
}

char *conf_expand(const char *s, char *err, size_t errlen)
{
    return expand(s, NULL, err, errlen);
}

/*
 * Replaces every string in the tree by its expansion; reports failures.
 * Records in rec what each variable and each string that used one became.
 */
static void expand_tree(cJSON *node, const char *path, conf_substs_t *rec, sink_errors_t *errs)
{
    char sub[CONF_PATH_MAX];
    size_t i = 0;

    if (cJSON_IsString(node)) {
        char err[256];
        size_t vars = rec->n;
        char *v = expand(node->valuestring, rec, err, sizeof(err));
        if (v == NULL) {
            sink_errors_add(errs, path, "%s", err);
            return;
        }
        /* The whole string too: a short value inside a word ("v${X}" with
         * X=2) is not redacted alone, but as part of the string it is in. */
        if (rec->n != vars && substs_add(rec, v, node->valuestring) != 0)
            sink_errors_add(errs, path, "out of memory");
        /* cJSON has no setter that takes ownership; swap the pointer. */
        cJSON_free(node->valuestring);
        node->valuestring = v;
        return;
    }
    for (cJSON *c = node->child; c; c = c->next, i++) {
        if (cJSON_IsObject(node))
            sink_conf_path(sub, sizeof(sub), path, c->string ? c->string : "");
        else
            sink_conf_path_index(sub, sizeof(sub), path, i);
        expand_tree(c, sub, rec, errs);
    }
}

/* ---- helpers ---- */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONF_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int valid_http_url(const char *s)
{
    if (strlen(s) > CONF_URL_MAX)
        return 0;
    /* ASCII only: a host in another script needs IDNA, which nothing here
     * does (percent-encoding serves paths); no query or fragment, which the
     * adapters add. */
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
            return 0;
    }
    /* Then as libcurl parses it at every request. */
    return net_url_parse(s, 0, NULL) == NET_URL_OK;
}

/* Accepts host:port with a numeric port. */
static int valid_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return *end == '\0' && errno == 0 && port >= 0 && port <= 65535 && colon[1] != '\0';
}

/* Reads and validates the "name" of a source or sink; returns a copy. */
static char *dup_name(const cJSON *obj, const char *path, sink_errors_t *errs)
{
    const char *name = NULL;
    char sub[CONF_PATH_MAX];
    if (sink_conf_string(obj, path, "name", true, NULL, &name, errs) == 0 && name &&
        !valid_name(name))
        sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "name"),
                        "expected [a-z0-9_-]{1,%d}", CONF_NAME_MAX);
    return xstrdup(name);
}

/* Writes "a, b, c": the names a registry knows, for "expected one of". */
static const char *join_names(char *buf, size_t n, const char *(*name_at)(size_t i))
{
    const char *name;
    buf[0] = '\0';
    for (size_t i = 0; (name = name_at(i)) != NULL; i++) {
        strncat(buf, i ? ", " : "", n - strlen(buf) - 1);
        strncat(buf, name, n - strlen(buf) - 1);
    }
    return buf;
}

static const char *provider_name_at(size_t i)
{
    return provider_all[i] ? provider_all[i]->name : NULL;
}

static const char *sink_type_name_at(size_t i)
{
    size_t n = 0;
    while (sink_builtin_types[n])
        n++;
    return i < n ? sink_builtin_types[i]->name : i == n ? "module" : NULL;
}

/*
 * SHA-256 of obj's compact JSON text into digest (zeros when out of
 * memory: the block then reads as changed at every reload, which is safe).
 * The text holds expanded secrets: it is wiped before it is freed.
 */
static void block_digest(const cJSON *obj, unsigned char digest[CONF_DIGEST_LEN])
{
    char *text = cJSON_PrintUnformatted(obj);
    unsigned int n = 0;

    memset(digest, 0, CONF_DIGEST_LEN);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    if (EVP_Digest(text, len, digest, &n, EVP_sha256(), NULL) != 1 || n != CONF_DIGEST_LEN)
        memset(digest, 0, CONF_DIGEST_LEN);
    OPENSSL_cleanse(text, len);
    cJSON_free(text);
}

/* ---- sources ---- */

static void parse_source(conf_source_t *src, const cJSON *obj, const char *path,
                         sink_errors_t *errs)
{
    const char *provider = NULL, *base_url = NULL, *initial = NULL;
    long long v;
    char sub[CONF_PATH_MAX];

    if (!cJSON_IsObject(obj)) {
        sink_errors_add(errs, path, "expected an object");
        return;
    }
    src->name = dup_name(obj, path, errs);
    block_digest(obj, src->digest);

    if (sink_conf_string(obj, path, "provider", true, NULL, &provider, errs) == 0 && provider) {
        src->provider = provider_find(provider);
        if (src->provider == NULL) {
            char known[256];
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "provider"),
                            "unknown provider \"%s\", expected one of: %s", provider,
                            join_names(known, sizeof(known), provider_name_at));
        }
    }

    /* Unknown keys: the common ones plus what the provider adds. */
    const char *allowed[64];
    size_t na = 0;
    for (size_t i = 0; source_common_keys[i]; i++)
        allowed[na++] = source_common_keys[i];
    if (src->provider && src->provider->expand_key) {
        /* The list itself is gone after a good expansion, reported if bad. */
        allowed[na++] = src->provider->expand_key;
        allowed[na++] = src->provider->expand_into;
    }
    if (src->provider && src->provider->keys) {
        for (size_t i = 0; src->provider->keys[i] && na < 63; i++)
            allowed[na++] = src->provider->keys[i];
    }
    allowed[na] = NULL;
    if (cJSON_IsObject(obj))
        sink_conf_check_keys(obj, path, allowed, errs);

    if (sink_conf_string(obj, path, "base_url", true, NULL, &base_url, errs) == 0 && base_url) {
        if (!valid_http_url(base_url)) {
            sink_conf_path(sub, sizeof(sub), path, "base_url");
            sink_errors_add(errs, sub,
                            "expected an http:// or https:// URL with a host, without query or "
                            "fragment, at most %d bytes",
                            CONF_URL_MAX);
        } else {
            src->base_url = xstrdup(base_url);
            size_t n = strlen(src->base_url);
            while (n > 0 && src->base_url[n - 1] == '/')
                src->base_url[--n] = '\0';
        }
    }
    if (sink_conf_int(obj, path, "interval_s", false, CONF_DEFAULT_INTERVAL_S, 1, 86400, &v,
                      errs) == 0)
        src->interval_s = (int)v;
    if (sink_conf_int(obj, path, "timeout_s", false, CONF_DEFAULT_TIMEOUT_S, 1, 300, &v, errs) == 0)
        src->timeout_s = (int)v;
    if (sink_conf_int(obj, path, "vanish_grace", false, CONF_DEFAULT_VANISH_GRACE, 1,
                      DIFF_MAX_GRACE, &v, errs) == 0)
        src->vanish_grace = (unsigned)v;
    if (sink_conf_int(obj, path, "max_sessions", false, DIFF_DEFAULT_MAX_SESSIONS, 1,
                      DIFF_MAX_SESSIONS_LIMIT, &v, errs) == 0)
        src->max_sessions = (size_t)v;
    if (src->provider) {
        if (sink_conf_int(obj, path, "page_size", false, src->provider->default_page_size, 1,
                          src->provider->max_page_size, &v, errs) == 0)
            src->page_size = (int)v;
    }
    if (sink_conf_string(obj, path, "initial_snapshot", false, "baseline", &initial, errs) == 0 &&
        initial) {
        if (strcmp(initial, "emit") == 0) {
            src->initial_emit = true;
        } else if (strcmp(initial, "baseline") != 0) {
            sink_conf_path(sub, sizeof(sub), path, "initial_snapshot");
            sink_errors_add(errs, sub, "expected \"baseline\" or \"emit\"");
        }
    }

    const cJSON *smap = cJSON_GetObjectItemCaseSensitive(obj, "status_map");
    sink_conf_path(sub, sizeof(sub), path, "status_map");
    if (smap && !cJSON_IsObject(smap)) {
        sink_errors_add(errs, sub, "expected an object of raw status -> state");
        smap = NULL;
    }
    int smap_ok = 1;
    for (const cJSON *e = smap ? smap->child : NULL; e; e = e->next) {
        diff_state_t st;
        char epath[CONF_PATH_MAX];
        sink_conf_path(epath, sizeof(epath), sub, e->string);
        if (!cJSON_IsString(e) || diff_state_parse(e->valuestring, &st) != 0) {
            sink_errors_add(errs, epath, "expected one of pending, active, completed, cancelled");
            smap_ok = 0;
        } else if (e->string[0] == '\0' || strlen(e->string) > DIFF_STATUS_MAX) {
            sink_errors_add(errs, epath, "raw status must be 1..%d bytes", DIFF_STATUS_MAX);
            smap_ok = 0;
        }
    }
    if (src->provider) {
        src->pconf = src->provider->configure(obj, path, errs);
        if (smap_ok) {
            src->status_map = provider_status_map(src->provider, smap);
            if (src->status_map == NULL)
                sink_errors_add(errs, sub, "out of memory");
        }
    }
}

/* ---- sinks ---- */

/*
 * Loads the shared object of a "module" sink and returns the sink type it
 * exports, or NULL with the reason in errs. The handle stays open in sk
 * until conf_free(): the type's functions live in it.
 */
static const sink_type_t *load_module(conf_sink_t *sk, const cJSON *obj, const char *path,
                                      sink_errors_t *errs)
{
    const char *file = NULL;
    char sub[CONF_PATH_MAX];
    const sink_module_t *m;
    const sink_type_t *t;

    sink_conf_path(sub, sizeof(sub), path, "path");
    if (sink_conf_string(obj, path, "path", true, NULL, &file, errs) != 0 || file == NULL)
        return NULL;
    sk->module = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (sk->module == NULL) {
        const char *why = dlerror();
        sink_errors_add(errs, sub, "cannot load the sink module: %s", why ? why : "dlopen failed");
        return NULL;
    }
    m = dlsym(sk->module, SINK_MODULE_SYMBOL);
    if (m == NULL) {
        sink_errors_add(errs, sub, "%s does not export %s; is it a session-bridge sink module?",
                        file, SINK_MODULE_SYMBOL);
        return NULL;
    }
    if (m->abi_version != SINK_ABI_VERSION) {
        sink_errors_add(errs, sub,
                        "%s was built for sink ABI %u, this session-bridge speaks %u; rebuild "
                        "it against this version's sink.h",
                        file, (unsigned)m->abi_version, (unsigned)SINK_ABI_VERSION);
        return NULL;
    }
    t = m->type;
    if (t == NULL || t->name == NULL || !t->options || !t->init || !t->submit || !t->flush ||
        !t->exit) {
        sink_errors_add(errs, sub,
                        "%s exports an incomplete sink type (name, options, init, submit, "
                        "flush and exit are required)",
                        file);
        return NULL;
    }
    return t;
}

static void parse_sink(conf_t *conf, conf_sink_t *sk, const cJSON *obj, const char *path,
                       sink_errors_t *errs)
{
    const char *type = NULL;
    char sub[CONF_PATH_MAX];

    if (!cJSON_IsObject(obj)) {
        sink_errors_add(errs, path, "expected an object");
        return;
    }
    sk->name = dup_name(obj, path, errs);
    block_digest(obj, sk->digest);
    if (sink_conf_string(obj, path, "type", true, NULL, &type, errs) == 0 && type) {
        sk->type =
            strcmp(type, "module") == 0 ? load_module(sk, obj, path, errs) : sink_type_find(type);
        if (sk->type == NULL && strcmp(type, "module") != 0) {
            char known[256];
            sink_errors_add(errs, sink_conf_path(sub, sizeof(sub), path, "type"),
                            "unknown sink type \"%s\", expected one of: %s", type,
                            join_names(known, sizeof(known), sink_type_name_at));
        }
    }

    const cJSON *events = cJSON_GetObjectItemCaseSensitive(obj, "events");
    sink_conf_path(sub, sizeof(sub), path, "events");
    if (events == NULL) {
        sk->events = (1u << DIFF_EV_COUNT) - 1;
    } else if (!cJSON_IsArray(events) || cJSON_GetArraySize(events) == 0) {
        sink_errors_add(errs, sub, "expected a non-empty array of started, completed, cancelled");
    } else {
        size_t i = 0;
        for (const cJSON *e = events->child; e; e = e->next, i++) {
            int t = -1;
            for (int k = 0; k < DIFF_EV_COUNT && cJSON_IsString(e); k++) {
                if (strcmp(e->valuestring, diff_event_type_short((diff_event_type_t)k)) == 0)
                    t = k;
            }
            if (t < 0) {
                char ep[CONF_PATH_MAX];
                sink_conf_path_index(ep, sizeof(ep), sub, i);
                sink_errors_add(errs, ep, "expected one of started, completed, cancelled");
            } else {
                sk->events |= 1u << t;
            }
        }
    }

    const cJSON *sources = cJSON_GetObjectItemCaseSensitive(obj, "sources");
    sink_conf_path(sub, sizeof(sub), path, "sources");
    if (sources != NULL) {
        if (!cJSON_IsArray(sources) || cJSON_GetArraySize(sources) == 0) {
            sink_errors_add(errs, sub, "expected a non-empty array of source names");
        } else {
            size_t n = (size_t)cJSON_GetArraySize(sources), i = 0;
            sk->sources = calloc(n, sizeof(char *));
            for (const cJSON *e = sources->child; e && sk->sources; e = e->next, i++) {
                char ep[CONF_PATH_MAX];
                sink_conf_path_index(ep, sizeof(ep), sub, i);
                if (!cJSON_IsString(e)) {
                    sink_errors_add(errs, ep, "expected a source name");
                    continue;
                }
                if (conf_find_source(conf, e->valuestring) == NULL)
                    sink_errors_add(errs, ep, "no source named \"%s\"", e->valuestring);
                sk->sources[sk->nsources++] = xstrdup(e->valuestring);
            }
        }
    }
    if (sk->type) {
        static const char *const module_keys[] = {"name",    "type", "events",
                                                  "sources", "path", NULL};
        sk->cfg = sink_config_parse(sk->type, obj, path,
                                    sk->module ? module_keys : sink_common_keys, errs);
    }
}

/* Appends the messages of from that errs does not hold yet. */
static void merge_errors(sink_errors_t *errs, const sink_errors_t *from)
{
    size_t shown = from->count < SINK_ERRORS_MAX ? from->count : SINK_ERRORS_MAX;
    for (size_t i = 0; i < shown; i++) {
        size_t j, have = errs->count < SINK_ERRORS_MAX ? errs->count : SINK_ERRORS_MAX;
        for (j = 0; j < have && strcmp(errs->msg[j], from->msg[i]) != 0; j++)
            ;
        if (j == have) {
            if (errs->count < SINK_ERRORS_MAX)
                memcpy(errs->msg[errs->count], from->msg[i], SINK_ERROR_LEN);
            errs->count++;
        }
    }
}

/* The text of one element of an expansion list: a positive integer or a
 * non-empty string of [A-Za-z0-9_-] (it becomes part of a source name). */
static int expansion_text(const cJSON *v, char *out, size_t n)
{
    long long id;
    if (cJSON_IsNumber(v) &&
        sink_exact_integer(v->valuedouble, 1, PROVIDER_EXACT_INT_MAX - 1, &id) == 0) {
        snprintf(out, n, "%lld", id);
        return 0;
    }
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) >= n)
        return -1;
    for (const char *p = v->valuestring; *p; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-'))
            return -1;
    }
    snprintf(out, n, "%s", v->valuestring);
    return 0;
}

/*
 * Turns the sources array into [{"path": "sources[i]", "source": {...}}],
 * one element per source after expansion: an entry whose provider declares
 * an expand_key (exam_ids) becomes one source per listed value. Returns NULL
 * only on ENOMEM; problems go to errs and the entry is kept as it is.
 */
static cJSON *expand_sources(const cJSON *sources, sink_errors_t *errs)
{
    cJSON *out = cJSON_CreateArray();
    size_t i = 0, total = 0;
    char path[CONF_PATH_MAX], sub[CONF_PATH_MAX];

    for (const cJSON *e = sources ? sources->child : NULL; out && e; e = e->next, i++) {
        sink_conf_path_index(path, sizeof(path), "sources", i);
        const cJSON *prov = cJSON_GetObjectItemCaseSensitive(e, "provider");
        const provider_ops_t *p = cJSON_IsString(prov) ? provider_find(prov->valuestring) : NULL;
        const cJSON *list =
            p && p->expand_key ? cJSON_GetObjectItemCaseSensitive(e, p->expand_key) : NULL;
        size_t copies = 1;
        if (list) {
            sink_conf_path(sub, sizeof(sub), path, p->expand_key);
            if (cJSON_GetObjectItemCaseSensitive(e, p->expand_into)) {
                sink_errors_add(errs, path, "%s and %s cannot be used together", p->expand_into,
                                p->expand_key);
                list = NULL;
            } else if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
                sink_errors_add(errs, sub, "expected a non-empty array");
                list = NULL;
            } else {
                copies = (size_t)cJSON_GetArraySize(list);
            }
        }
        if (total + copies > CONF_MAX_SOURCES) {
            sink_errors_add(errs, path, "more than %d sources after expansion", CONF_MAX_SOURCES);
            break;
        }
        total += copies;
        if (list == NULL) {
            cJSON *item = cJSON_CreateObject();
            cJSON_AddItemToArray(out, item);
            if (!cJSON_AddStringToObject(item, "path", path) ||
                !cJSON_AddItemToObject(item, "source", cJSON_Duplicate(e, 1)))
                goto nomem;
            continue;
        }
        size_t j = 0;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        for (const cJSON *v = list->child; v; v = v->next, j++) {
            char text[CONF_NAME_MAX + 1], full[2 * CONF_NAME_MAX + 2];
            if (expansion_text(v, text, sizeof(text)) != 0) {
                char vpath[CONF_PATH_MAX];
                sink_errors_add(errs, sink_conf_path_index(vpath, sizeof(vpath), sub, j),
                                "expected a positive integer or a string of [A-Za-z0-9_-]");
                continue;
            }
            cJSON *copy = cJSON_Duplicate(e, 1);
            cJSON *item = cJSON_CreateObject();
            cJSON_AddItemToArray(out, item);
            if (copy == NULL || item == NULL || !cJSON_AddStringToObject(item, "path", path) ||
                !cJSON_AddItemToObject(item, "source", copy)) {
                cJSON_Delete(copy);
                goto nomem;
            }
            cJSON_DeleteItemFromObjectCaseSensitive(copy, p->expand_key);
            cJSON_AddItemToObject(copy, p->expand_into, cJSON_Duplicate(v, 1));
            if (cJSON_IsString(name)) {
                snprintf(full, sizeof(full), "%s-%s", name->valuestring, text);
                cJSON_ReplaceItemInObjectCaseSensitive(copy, "name", cJSON_CreateString(full));
            }
        }
    }
    return out;
nomem:
    cJSON_Delete(out);
    return NULL;
}

/* ---- the whole file ---- */

/*
 * Reports every name already taken by an earlier element. paths[i] is the
 * path of element i in the file (a source from an exam_ids entry has its
 * entry's), or with paths NULL, top[i].
 */
static void check_unique(const char *what, const char *top, char **names, const char *const *paths,
                         size_t n, sink_errors_t *errs)
{
    char sub[CONF_PATH_MAX], first[CONF_PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (names[i] && names[j] && strcmp(names[i], names[j]) == 0) {
                if (paths) {
                    snprintf(sub, sizeof(sub), "%s", paths[i]);
                    snprintf(first, sizeof(first), "%s", paths[j]);
                } else {
                    sink_conf_path_index(sub, sizeof(sub), top, i);
                    sink_conf_path_index(first, sizeof(first), top, j);
                }
                sink_errors_add(errs, sub, "duplicate %s name \"%s\" (also %s)", what, names[i],
                                first);
            }
        }
    }
}

/* The 1-based line of byte off of text. */
static size_t line_of(const char *text, size_t off)
{
    size_t line = 1;
    for (size_t i = 0; i < off; i++)
        line += text[i] == '\n';
    return line;
}

conf_t *conf_parse(const char *text, size_t len, const char *path, sink_errors_t *errs)
{
    conf_t *conf = NULL;
    cJSON *root = NULL, *empty = NULL, *expanded = NULL;
    const char *s;
    size_t start_count = errs->count;
    conf_substs_t substs = {0};

    /* JSON is UTF-8 (RFC 8259 §8.1); a configuration that is not would put
     * bytes no consumer accepts into requests, events and logs. */
    size_t bad = 0;
    if (diff_utf8_check(text, len, &bad) != 0) {
        sink_errors_add(errs, "$", "not UTF-8 near line %zu (byte %zu)", line_of(text, bad), bad);
        return NULL;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    /* After the document only whitespace: a second one would be ignored. */
    while (root && off < len && text[off] && strchr(" \t\r\n", text[off]))
        off++;
    if (root == NULL || off != len) {
        const char *at = root ? text + off : cJSON_GetErrorPtr();
        off = (at && at >= text && at <= text + len) ? (size_t)(at - text) : 0;
        sink_errors_add(errs, "$", "invalid JSON near line %zu (byte %zu)", line_of(text, off),
                        off);
        cJSON_Delete(root);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        sink_errors_add(errs, "$", "expected a JSON object at the top");
        goto out;
    }
    expand_tree(root, "", &substs, errs);

    conf = calloc(1, sizeof(*conf));
    if (conf == NULL)
        goto out;
    conf->path = xstrdup(path);
    sink_conf_check_keys(root, "", top_keys, errs);
    /* Absent sections read as empty objects, so that defaults apply. */
    empty = cJSON_CreateObject();
    if (empty == NULL)
        goto out;

    const cJSON *redis = cJSON_GetObjectItemCaseSensitive(root, "redis");
    if (redis && !cJSON_IsObject(redis)) {
        sink_errors_add(errs, "redis", "expected an object");
        redis = NULL;
    }
    if (redis)
        sink_conf_check_keys(redis, "redis", redis_keys, errs);
    else
        redis = empty;
    if (sink_conf_string(redis, "redis", "url", false, CONF_DEFAULT_REDIS_URL, &s, errs) == 0) {
        /* The store's own parser, so that what check passes the store can use;
         * its messages name the host at most, never the password. */
        redis_target_t target = {0};
        char why[256];
        if (strlen(s) > CONF_URL_MAX)
            sink_errors_add(errs, "redis.url", "longer than %d bytes", CONF_URL_MAX);
        else if (redis_url_parse(s, &target, why, sizeof(why)) != 0)
            sink_errors_add(errs, "redis.url",
                            "%s (expected redis://[[user]:password@]host[:port][/db])", why);
        redis_target_clear(&target);
        conf->redis_url = xstrdup(s);
    }
    if (sink_conf_string(redis, "redis", "prefix", false, CONF_DEFAULT_PREFIX, &s, errs) == 0) {
        int ok = strlen(s) >= 1 && strlen(s) <= 64;
        for (const char *p = s; *p; p++)
            ok = ok && (unsigned char)*p > 0x20 && *p != 0x7f;
        if (!ok)
            sink_errors_add(errs, "redis.prefix", "expected 1..64 printable characters, no spaces");
        conf->redis_prefix = xstrdup(s);
    }

    const cJSON *admin = cJSON_GetObjectItemCaseSensitive(root, "admin");
    if (admin && !cJSON_IsObject(admin)) {
        sink_errors_add(errs, "admin", "expected an object");
        admin = NULL;
    }
    if (admin)
        sink_conf_check_keys(admin, "admin", admin_keys, errs);
    else
        admin = empty;
    if (sink_conf_string(admin, "admin", "listen", false, CONF_DEFAULT_ADMIN, &s, errs) == 0) {
        if (!valid_listen(s))
            sink_errors_add(errs, "admin.listen", "expected host:port");
        conf->admin_listen = xstrdup(s);
    }

    long long grace = CONF_DEFAULT_SHUTDOWN_GRACE_S;
    sink_conf_int(root, "", "shutdown_grace_s", false, CONF_DEFAULT_SHUTDOWN_GRACE_S, 1, 3600,
                  &grace, errs);
    conf->shutdown_grace_s = (int)grace;
    long long ttl = CONF_DEFAULT_LEASE_TTL_S;
    sink_conf_int(root, "", "lease_ttl_s", false, CONF_DEFAULT_LEASE_TTL_S, 2, 600, &ttl, errs);
    conf->lease_ttl_s = (int)ttl;

    const cJSON *sources = cJSON_GetObjectItemCaseSensitive(root, "sources");
    if (!cJSON_IsArray(sources) || cJSON_GetArraySize(sources) == 0) {
        sink_errors_add(errs, "sources", "required, expected a non-empty array of sources");
    } else {
        expanded = expand_sources(sources, errs);
        if (expanded == NULL)
            goto out;
        size_t n = (size_t)cJSON_GetArraySize(expanded), i = 0;
        conf->sources = calloc(n ? n : 1, sizeof(conf_source_t));
        if (conf->sources == NULL)
            goto out;
        for (const cJSON *e = expanded->child; e; e = e->next, i++) {
            const char *spath = cJSON_GetObjectItemCaseSensitive(e, "path")->valuestring;
            const cJSON *obj = cJSON_GetObjectItemCaseSensitive(e, "source");
            /* Copies of one entry share every problem but their id: say each once. */
            sink_errors_t *mine = calloc(1, sizeof(*mine));
            if (mine == NULL)
                goto out;
            parse_source(&conf->sources[i], obj, spath, mine);
            conf->nsources++;
            merge_errors(errs, mine);
            free(mine);
        }
        char **names = calloc(n ? n : 1, sizeof(char *));
        const char **paths = calloc(n ? n : 1, sizeof(char *));
        i = 0;
        for (const cJSON *e = expanded->child; names && paths && e; e = e->next, i++) {
            names[i] = conf->sources[i].name;
            paths[i] = cJSON_GetObjectItemCaseSensitive(e, "path")->valuestring;
        }
        if (names && paths)
            check_unique("source", "sources", names, paths, n, errs);
        free(names);
        free(paths);
    }

    const cJSON *sinks = cJSON_GetObjectItemCaseSensitive(root, "sinks");
    if (!cJSON_IsArray(sinks) || cJSON_GetArraySize(sinks) == 0) {
        sink_errors_add(errs, "sinks", "required, expected a non-empty array of sinks");
    } else {
        size_t n = (size_t)cJSON_GetArraySize(sinks), i = 0;
        conf->sinks = calloc(n, sizeof(conf_sink_t));
        if (conf->sinks == NULL)
            goto out;
        char sub[CONF_PATH_MAX];
        for (const cJSON *e = sinks->child; e; e = e->next, i++) {
            sink_conf_path_index(sub, sizeof(sub), "sinks", i);
            parse_sink(conf, &conf->sinks[i], e, sub, errs);
            conf->nsinks++;
        }
        char **names = calloc(n, sizeof(char *));
        for (i = 0; names && i < n; i++)
            names[i] = conf->sinks[i].name;
        if (names)
            check_unique("sink", "sinks", names, NULL, n, errs);
        free(names);
    }

out:
    cJSON_Delete(expanded);
    cJSON_Delete(empty);
    cJSON_Delete(root);
    if (conf == NULL && errs->count == start_count)
        sink_errors_add(errs, "$", "out of memory");
    redact_messages(errs, start_count, &substs);
    substs_free(&substs);
    if (errs->count != start_count) {
        conf_free(conf);
        return NULL;
    }
    return conf;
}

conf_t *conf_load(const char *path, sink_errors_t *errs)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        sink_errors_add(errs, "$", "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = malloc(CONF_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CONF_MAX_BYTES + 1, f) : 0;
    int rerr = ferror(f);
    fclose(f);
    if (buf == NULL || rerr) {
        sink_errors_add(errs, "$", "cannot read the file");
        free(buf);
        return NULL;
    }
    if (n > CONF_MAX_BYTES) {
        sink_errors_add(errs, "$", "larger than %u bytes", CONF_MAX_BYTES);
        free(buf);
        return NULL;
    }
    conf_t *conf = conf_parse(buf, n, path, errs);
    free(buf);
    return conf;
}

void conf_free(conf_t *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < conf->nsources; i++) {
        conf_source_t *s = &conf->sources[i];
        if (s->provider && s->pconf)
            s->provider->free_config(s->pconf);
        diff_status_map_free(s->status_map);
        free(s->name);
        free(s->base_url);
    }
    for (size_t i = 0; i < conf->nsinks; i++) {
        conf_sink_t *k = &conf->sinks[i];
        for (size_t j = 0; j < k->nsources; j++)
            free(k->sources[j]);
        free(k->sources);
        sink_config_free(k->cfg);
        free(k->name);
        if (k->module)
            dlclose(k->module);
    }
    free(conf->sources);
    free(conf->sinks);
    free(conf->path);
    free(conf->redis_url);
    free(conf->redis_prefix);
    free(conf->admin_listen);
    free(conf);
}

const conf_source_t *conf_find_source(const conf_t *conf, const char *name)
{
    for (size_t i = 0; i < conf->nsources; i++) {
        if (conf->sources[i].name && strcmp(conf->sources[i].name, name) == 0)
            return &conf->sources[i];
    }
    return NULL;
}

int conf_sink_routes(const conf_sink_t *sink, const char *source, diff_event_type_t type)
{
    if (!(sink->events & (1u << type)))
        return 0;
    if (sink->sources == NULL)
        return 1;
    for (size_t i = 0; i < sink->nsources; i++) {
        if (sink->sources[i] && strcmp(sink->sources[i], source) == 0)
            return 1;
    }
    return 0;
}
