/*
 * event: a diff event as the CloudEvent 1.0 of CONTRACT §6.
 */
#ifndef SB_EVENT_H
#define SB_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "diff.h"

/* RFC 3339 UTC with milliseconds: "2026-11-23T10:00:00.123Z" and a NUL. */
#define EVENT_TIME_LEN 25

void event_format_time(int64_t unix_ms, char out[EVENT_TIME_LEN]);

/*
 * Encodes ev observed at observed_ms from the named source and provider.
 * ev->record, when set, goes in as data.session byte for byte: the caller
 * hands in valid JSON (the page parse checked it). Returns the JSON text
 * (malloc'd, owned by the caller; *len set), always UTF-8, or NULL on
 * ENOMEM or when a string of ev or its record is not UTF-8 (what the page
 * parse accepts always is).
 */
char *event_encode(const diff_event_t *ev, const char *source, const char *provider,
                   int64_t observed_ms, size_t *len);

/*
 * A buffer events are written into one after the other, for a caller that
 * hands each event on before the next (the sinks copy what they keep): it
 * grows to the largest event and is reused, so that a cycle's events cost
 * no allocation each. Zero-initialise it; event_buf_free() releases it.
 */
typedef struct event_buf {
    char *text; /* the last event written, NUL-terminated; owned by the buffer */
    size_t len;
    size_t cap;
} event_buf_t;

void event_buf_free(event_buf_t *buf);

/*
 * event_encode() into buf, with the observation time as
 * event_format_time() wrote it (every event of a cycle shares it, so the
 * caller formats it once). 0, or -1 as event_encode() returns NULL; buf's
 * text is then not an event.
 */
int event_write(event_buf_t *buf, const diff_event_t *ev, const char *source, const char *provider,
                const char when[EVENT_TIME_LEN]);

#endif /* SB_EVENT_H */
