/*
 * sink_conf: the configuration checks the sinks, the sources and the
 * providers share. Declared in sinks/sink.h because external sink modules
 * call them too (the daemon exports them); here, in sb_common, because the
 * core uses them at least as much as the sinks do.
 *
 * Every getter reports its problem with the full JSON path and what was
 * expected, and never echoes the offending value: a string in the wrong
 * place may well be a secret.
 */
#include "sink.h"
#include "suggest.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* 2^63: doubles in [-2^63, 2^63) convert to long long without overflow. */
#define LLONG_AS_DOUBLE_LIMIT 9223372036854775808.0

const char *sink_conf_path(char *buf, size_t size, const char *path, const char *key)
{
    if (size == 0)
        return buf;
    if (path && *path)
        snprintf(buf, size, "%s.%s", path, key ? key : "");
    else
        snprintf(buf, size, "%s", key ? key : "");
    return buf;
}

const char *sink_conf_path_index(char *buf, size_t size, const char *path, size_t index)
{
    if (size == 0)
        return buf;
    snprintf(buf, size, "%s[%zu]", path ? path : "", index);
    return buf;
}

void sink_errors_add(sink_errors_t *errs, const char *path, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    size_t len = 0;

    if (!errs)
        return;
    if (errs->count >= SINK_ERRORS_MAX) {
        errs->count++;
        return;
    }
    msg = errs->msg[errs->count++];
    msg[0] = '\0';
    if (path && *path) {
        int n = snprintf(msg, SINK_ERROR_LEN, "%s: ", path);
        len = n < 0 ? 0 : (size_t)n < SINK_ERROR_LEN ? (size_t)n : SINK_ERROR_LEN - 1;
    }
    va_start(ap, fmt);
    vsnprintf(msg + len, SINK_ERROR_LEN - len, fmt, ap);
    va_end(ap);
}

int sink_conf_check_keys(const cJSON *obj, const char *path, const char *const *allowed,
                         sink_errors_t *errs)
{
    const cJSON *item;
    char buf[SINK_PATH_MAX];
    int unknown = 0;

    if (!cJSON_IsObject(obj))
        return 0;
    cJSON_ArrayForEach(item, obj)
    {
        const char *near;
        size_t i;

        for (i = 0; allowed && allowed[i]; i++) {
            /* Case-sensitive, as every lookup here: "Brokers" is a typo. */
            if (item->string && strcmp(item->string, allowed[i]) == 0)
                break;
        }
        if (allowed && allowed[i])
            continue;
        sink_conf_path(buf, sizeof(buf), path, item->string);
        near = item->string ? suggest_nearest(item->string, allowed) : NULL;
        if (near)
            sink_errors_add(errs, buf, "unknown key (did you mean \"%s\"?)", near);
        else
            sink_errors_add(errs, buf, "unknown key");
        unknown++;
    }
    return unknown;
}

/* The member named key, or NULL when obj is not an object or lacks it. */
static const cJSON *member(const cJSON *obj, const char *key)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

int sink_conf_string(const cJSON *obj, const char *path, const char *key, bool required,
                     const char *def, const char **out, sink_errors_t *errs)
{
    const cJSON *item = member(obj, key);
    char buf[SINK_PATH_MAX];

    *out = def;
    if (!item) {
        if (!required)
            return 0;
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "required, expected a non-empty string");
        return -1;
    }
    if (!cJSON_IsString(item) || !item->valuestring || !*item->valuestring) {
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "expected a non-empty string");
        return -1;
    }
    *out = item->valuestring;
    return 0;
}

bool sink_has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return true;
    }
    return false;
}

int sink_conf_request_string(const cJSON *obj, const char *path, const char *key, bool required,
                             const char *def, const char **out, sink_errors_t *errs)
{
    char buf[SINK_PATH_MAX];

    if (sink_conf_string(obj, path, key, required, def, out, errs) != 0)
        return -1;
    if (*out && sink_has_control(*out)) {
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "must not contain control characters (a line break would start another "
                        "header or request)");
        *out = def;
        return -1;
    }
    return 0;
}

int sink_exact_integer(double d, long long min, long long max, long long *out)
{
    long long v;

    /* The range test comes before the cast, and refuses NaN too. */
    if (!(d >= -LLONG_AS_DOUBLE_LIMIT && d < LLONG_AS_DOUBLE_LIMIT))
        return -1;
    v = (long long)d;
    if ((double)v != d || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sink_conf_int(const cJSON *obj, const char *path, const char *key, bool required, long long def,
                  long long min, long long max, long long *out, sink_errors_t *errs)
{
    const cJSON *item = member(obj, key);
    char buf[SINK_PATH_MAX];
    long long v;

    *out = def;
    if (!item) {
        if (!required)
            return 0;
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "required, expected an integer between %lld and %lld", min, max);
        return -1;
    }
    if (!cJSON_IsNumber(item) ||
        sink_exact_integer(item->valuedouble, LLONG_MIN, LLONG_MAX, &v) != 0) {
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "expected an integer between %lld and %lld", min, max);
        return -1;
    }
    if (v < min || v > max) {
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "expected an integer between %lld and %lld, got %lld", min, max, v);
        return -1;
    }
    *out = v;
    return 0;
}

int sink_conf_bool(const cJSON *obj, const char *path, const char *key, bool def, bool *out,
                   sink_errors_t *errs)
{
    const cJSON *item = member(obj, key);
    char buf[SINK_PATH_MAX];

    *out = def;
    if (!item)
        return 0;
    if (!cJSON_IsBool(item)) {
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, key),
                        "expected true or false");
        return -1;
    }
    *out = cJSON_IsTrue(item);
    return 0;
}

void sink_errors_join(const sink_errors_t *errs, char *err, size_t errlen)
{
    size_t n = errs->count < SINK_ERRORS_MAX ? errs->count : SINK_ERRORS_MAX;
    size_t o = 0;

    if (errlen == 0)
        return;
    err[0] = '\0';
    for (size_t i = 0; i < n && o < errlen - 1; i++) {
        int w = snprintf(err + o, errlen - o, "%s%s", i ? "; " : "", errs->msg[i]);
        o += w > 0 ? (size_t)w : 0;
    }
}

int sink_expand_name(char *buf, size_t size, const char *tmpl, const char *source, const char *kind)
{
    size_t o = 0;

    for (const char *p = tmpl; *p;) {
        const char *sub = NULL;
        size_t len;

        if (strncmp(p, "{source}", 8) == 0) {
            sub = source;
            p += 8;
        } else if (strncmp(p, "{type}", 6) == 0) {
            sub = kind;
            p += 6;
        }
        if (!sub) {
            if (o + 1 >= size)
                return -1;
            buf[o++] = *p++;
            continue;
        }
        len = strlen(sub);
        if (o + len >= size)
            return -1;
        memcpy(buf + o, sub, len);
        o += len;
    }
    if (size == 0)
        return -1;
    buf[o] = '\0';
    return (int)o;
}
