/*
 * sinks: configuration helpers shared by the sinks and the core.
 *
 * Every getter reports its problem with the full JSON path and what was
 * expected, and never echoes the offending value: a string in the wrong
 * place may well be a secret.
 */
#include "sink.h"

#include <stdarg.h>
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
        size_t i;

        for (i = 0; allowed && allowed[i]; i++) {
            /* Case-sensitive, as every lookup here: "Brokers" is a typo. */
            if (item->string && strcmp(item->string, allowed[i]) == 0)
                break;
        }
        if (allowed && allowed[i])
            continue;
        sink_errors_add(errs, sink_conf_path(buf, sizeof(buf), path, item->string), "unknown key");
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

/* True when d is a whole number that fits a long long (NaN fails the range test). */
static bool integral(double d, long long *out)
{
    if (!(d >= -LLONG_AS_DOUBLE_LIMIT && d < LLONG_AS_DOUBLE_LIMIT))
        return false;
    *out = (long long)d;
    return (double)*out == d;
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
    if (!cJSON_IsNumber(item) || !integral(item->valuedouble, &v)) {
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
