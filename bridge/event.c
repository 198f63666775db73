/*
 * event: CloudEvents 1.0, JSON structured mode. The envelope is written
 * directly, in the member order CONTRACT §6 shows, and the provider's
 * record goes in as the bytes received: no tree is built, nothing is
 * re-serialised, so numbers, escapes and key order stay the provider's.
 */
#include "event.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_escape.h"

/* Everything of an event but its strings and its record: the member names,
 * punctuation and the fixed values, with room to spare. */
#define EVENT_ENVELOPE_MAX 512

void event_format_time(int64_t unix_ms, char out[EVENT_TIME_LEN])
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, EVENT_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, EVENT_TIME_LEN - n, ".%03dZ", (int)(unix_ms % 1000));
}

/*
 * A writer into a buffer sized up front for the worst case of what it is
 * given (every string byte escaped), so that it never grows; writing past
 * the size sets `over` instead, which a correct size never does.
 */
typedef struct writer {
    char *buf;
    size_t len, cap;
    bool over;
} writer_t;

static void put(writer_t *w, const char *s, size_t n)
{
    if (w->over || n > w->cap - w->len) {
        w->over = true;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void put_lit(writer_t *w, const char *s)
{
    put(w, s, strlen(s));
}

/* s as a JSON string, by json_escape.h's rule (cJSON's, so that events
 * read as they always did); UTF-8 is checked on the whole. Runs of bytes
 * that need no escape are copied at once. */
static void put_escaped(writer_t *w, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    for (;;) {
        const unsigned char *run = p;
        while (*p >= 0x80 || !json_escape_needed(*p))
            p++;
        put(w, (const char *)run, (size_t)(p - run));
        if (*p == '\0')
            return;
        char unit[JSON_ESCAPE_MAX];
        put(w, unit, json_escape_ascii(*p, unit));
        p++;
    }
}

static void put_string(writer_t *w, const char *s)
{
    put(w, "\"", 1);
    put_escaped(w, s);
    put(w, "\"", 1);
}

static void put_string_or_null(writer_t *w, const char *s)
{
    if (s != NULL)
        put_string(w, s);
    else
        put_lit(w, "null");
}

/* A member "name": and a string value; first member without the comma. */
static void put_member(writer_t *w, const char *name, const char *value)
{
    put_lit(w, name);
    put_string_or_null(w, value);
}

static size_t escaped_max(const char *s)
{
    return s != NULL ? strlen(s) * JSON_ESCAPE_MAX + 2 : 4;
}

void event_buf_free(event_buf_t *buf)
{
    if (buf == NULL)
        return;
    free(buf->text);
    *buf = (event_buf_t){0};
}

int event_write(event_buf_t *buf, const diff_event_t *ev, const char *source, const char *provider,
                const char when[EVENT_TIME_LEN])
{
    const char *type = diff_event_type_name(ev->type);
    const char *state = diff_state_name(ev->state);
    const char *reason = diff_reason_name(ev->reason);
    buf->len = 0;
    if (type == NULL || state == NULL || reason == NULL || ev->session_id == NULL)
        return -1;
    /* the source twice (ce source and data.source), the session id twice */
    size_t cap = EVENT_ENVELOPE_MAX + 2 * escaped_max(source) + escaped_max(provider) +
                 2 * escaped_max(ev->session_id) + escaped_max(ev->status) +
                 escaped_max(ev->previous_status) + escaped_max(ev->id) +
                 (ev->record != NULL ? ev->record_len : 4) + 1;
    if (cap > buf->cap) {
        /* the old text is not needed: realloc would copy it for nothing */
        free(buf->text);
        *buf = (event_buf_t){.text = malloc(cap)};
        if (buf->text == NULL)
            return -1;
        buf->cap = cap;
    }
    writer_t w = {.buf = buf->text, .cap = buf->cap};

    put_lit(&w, "{\"specversion\":\"1.0\",\"id\":");
    put_string(&w, ev->id);
    put_lit(&w, ",\"source\":\"session-bridge/");
    put_escaped(&w, source);
    put_lit(&w, "\"");
    put_member(&w, ",\"type\":", type);
    put_member(&w, ",\"subject\":", ev->session_id);
    put_member(&w, ",\"time\":", when);
    put_lit(&w, ",\"datacontenttype\":\"application/json\",\"data\":{");
    put_member(&w, "\"source\":", source);
    put_member(&w, ",\"provider\":", provider);
    put_member(&w, ",\"session_id\":", ev->session_id);
    put_member(&w, ",\"state\":", state);
    put_member(&w, ",\"previous_state\":", diff_state_name(ev->previous_state));
    put_member(&w, ",\"status\":", ev->status);
    put_member(&w, ",\"previous_status\":", ev->previous_status);
    put_member(&w, ",\"reason\":", reason);
    put_lit(&w, ev->synthesized ? ",\"synthesized\":true" : ",\"synthesized\":false");
    put_lit(&w, ",\"session\":");
    if (ev->record != NULL)
        put(&w, ev->record, ev->record_len);
    else
        put_lit(&w, "null");
    put_lit(&w, "}}");
    put(&w, "", 1);
    /* Consumers in Java or Go reject or mangle text that is not UTF-8.
     * The page parse and diff_cycle_observe() already refuse such input;
     * this pass makes the promise hold for any caller. */
    size_t bad;
    if (w.over || diff_utf8_check(w.buf, w.len - 1, &bad) != 0)
        return -1;
    buf->len = w.len - 1;
    return 0;
}

char *event_encode(const diff_event_t *ev, const char *source, const char *provider,
                   int64_t observed_ms, size_t *len)
{
    char when[EVENT_TIME_LEN];
    event_buf_t buf = {0};
    event_format_time(observed_ms, when);
    if (event_write(&buf, ev, source, provider, when) != 0) {
        event_buf_free(&buf);
        return NULL;
    }
    if (len != NULL)
        *len = buf.len;
    return buf.text; /* the caller's now */
}
