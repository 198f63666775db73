/*
 * event: CloudEvents 1.0, JSON structured mode. The provider's record is
 * attached by reference, not copied (it is owned by the diff cycle), unless
 * it holds integers cJSON would not print as they were received.
 */
#include "event.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

void event_format_time(int64_t unix_ms, char out[EVENT_TIME_LEN])
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, EVENT_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, EVENT_TIME_LEN - n, ".%03dZ", (int)(unix_ms % 1000));
}

static cJSON *string_or_null(const char *s)
{
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* Integers above this are not exact in a double: cJSON parsed them lossily. */
#define EVENT_MAX_EXACT_INT 9007199254740992.0 /* 2^53 */

static int big_integer(const cJSON *n)
{
    double d = n->valuedouble;
    return cJSON_IsNumber(n) && fabs(d) > INT_MAX && fabs(d) <= EVENT_MAX_EXACT_INT &&
           d == floor(d);
}

/*
 * cJSON prints an integer beyond int's range as "%1.15g"
 * (4436481160115170 becomes 4.43648116011517e+15): no longer the record as
 * received. Such numbers are exact in a double up to 2^53, so a record that
 * holds any is copied with them as raw integer text.
 */
static int has_big_integer(const cJSON *n)
{
    if (big_integer(n))
        return 1;
    for (const cJSON *c = n->child; c; c = c->next) {
        if (has_big_integer(c))
            return 1;
    }
    return 0;
}

static cJSON *copy_exact(const cJSON *n)
{
    if (big_integer(n)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.0f", n->valuedouble);
        return cJSON_CreateRaw(buf);
    }
    if (!cJSON_IsArray(n) && !cJSON_IsObject(n))
        return cJSON_Duplicate(n, 0);
    cJSON *copy = cJSON_IsArray(n) ? cJSON_CreateArray() : cJSON_CreateObject();
    for (const cJSON *c = n->child; copy && c; c = c->next) {
        cJSON *item = copy_exact(c);
        if (item == NULL) {
            cJSON_Delete(copy);
            return NULL;
        }
        if (cJSON_IsArray(n))
            cJSON_AddItemToArray(copy, item);
        else
            cJSON_AddItemToObject(copy, c->string, item);
    }
    return copy;
}

char *event_encode(const diff_event_t *ev, const char *source, const char *provider,
                   int64_t observed_ms, size_t *len)
{
    char ce_source[128], when[EVENT_TIME_LEN];
    char *out = NULL;
    cJSON *ce = cJSON_CreateObject();
    cJSON *data = cJSON_CreateObject();
    const char *prev_state = diff_state_name(ev->previous_state);

    if (ce == NULL || data == NULL)
        goto out;
    snprintf(ce_source, sizeof(ce_source), "session-bridge/%s", source);
    event_format_time(observed_ms, when);
    cJSON_AddStringToObject(ce, "specversion", "1.0");
    cJSON_AddStringToObject(ce, "id", ev->id);
    cJSON_AddStringToObject(ce, "source", ce_source);
    cJSON_AddStringToObject(ce, "type", diff_event_type_name(ev->type));
    cJSON_AddStringToObject(ce, "subject", ev->session_id);
    cJSON_AddStringToObject(ce, "time", when);
    cJSON_AddStringToObject(ce, "datacontenttype", "application/json");
    cJSON_AddItemToObject(ce, "data", data);

    cJSON_AddStringToObject(data, "source", source);
    cJSON_AddStringToObject(data, "provider", provider);
    cJSON_AddStringToObject(data, "session_id", ev->session_id);
    cJSON_AddStringToObject(data, "state", diff_state_name(ev->state));
    cJSON_AddItemToObject(data, "previous_state", string_or_null(prev_state));
    cJSON_AddItemToObject(data, "status", string_or_null(ev->status));
    cJSON_AddItemToObject(data, "previous_status", string_or_null(ev->previous_status));
    cJSON_AddStringToObject(data, "reason", diff_reason_name(ev->reason));
    cJSON_AddBoolToObject(data, "synthesized", ev->synthesized);
    if (ev->record && has_big_integer(ev->record))
        cJSON_AddItemToObject(data, "session", copy_exact(ev->record));
    else if (ev->record)
        cJSON_AddItemReferenceToObject(data, "session", (cJSON *)ev->record);
    else
        cJSON_AddNullToObject(data, "session");

    out = cJSON_PrintUnformatted(ce);
    /* Consumers in Java or Go reject or mangle text that is not UTF-8.
     * provider_parse_json() and diff_cycle_observe() already refuse such
     * input; this pass makes the promise hold for any caller. */
    size_t n = out ? strlen(out) : 0, bad;
    if (out && diff_utf8_check(out, n, &bad) != 0) {
        cJSON_free(out);
        out = NULL;
    }
    if (out && len)
        *len = n;
out:
    if (ce)
        cJSON_Delete(ce); /* frees data too, and not the referenced record */
    else
        cJSON_Delete(data);
    return out;
}
