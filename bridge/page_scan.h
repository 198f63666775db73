/*
 * page_scan: one pass over a provider's page, the hot-path parser.
 *
 * A "list sessions" page is one JSON document holding one array of records
 * and a few fields beside it (a next cursor, a next URL). page_scan() reads
 * the body once, byte by byte, without building a tree and without
 * allocating, and in that pass:
 * - validates the whole document as JSON (RFC 8259: grammar, numbers,
 *   escapes, nothing after the value but whitespace) and as UTF-8
 *   (RFC 3629), with the bounds the bridge keeps on every page: nesting
 *   (PAGE_SCAN_MAX_DEPTH), "\u0000" refused (it would cut a C string),
 *   lone or mismatched surrogate escapes refused (they are not text), raw
 *   control characters refused, numbers of at most PAGE_SCAN_NUMBER_MAX
 *   characters; the first error is reported with its byte offset;
 * - finds the records array at a dotted path and calls back once per
 *   element with the element's bytes as received (a span of the body) and
 *   its id and status (and an alternative id) read at dotted paths within
 *   the element, decoded from their escapes into bounded buffers;
 * - reads up to PAGE_SCAN_MAX_FIELDS other dotted paths of the document.
 *
 * A path follows cJSON_GetObjectItemCaseSensitive() at every step, so that
 * an adapter moved from cJSON sees the same values: the first member of a
 * name wins over later duplicates, names are compared as decoded text (a
 * "st\u0061tus" member is "status"), and a step into anything but an
 * object finds nothing.
 *
 * Where this is stricter than cJSON (which the bridge used before, and
 * still uses for configuration), on purpose: leading zeros, "1." and "-.5"
 * are not numbers; a number longer than PAGE_SCAN_NUMBER_MAX fails (cJSON
 * fails it too, inside a container); control characters are refused in
 * strings and are not whitespace (cJSON passes a raw NUL inside a string,
 * which cut the string short); "\u" must be followed by four hex digits
 * (cJSON decodes "\uZZZZ" into a NUL); data after the document fails the
 * page (cJSON ignored it). A UTF-8 byte order mark before the document is
 * skipped, as cJSON does. Every page that passes here parses with cJSON
 * to the same values.
 *
 * How an adapter uses it (century, sketched):
 *
 *   configure:  spec = page_scan_spec_new(&(page_scan_paths_t){
 *                   .records = "data", .id = "sessionId", .status = "status",
 *                   .fields = {"pagination.nextCursor"}}, err, errlen);
 *   handle_page:
 *       char cursor[CENTURY_CURSOR_MAX + 1];
 *       page_scan_result_t res = {.fields[0] = {.text = cursor, .cap = sizeof(cursor)}};
 *       if (page_scan(spec, resp->body, resp->len, on_record, &ctx, &res, err, errlen) != 0)
 *           return -1;  // err says why: the page fails whole
 *       then res.fields[0].kind / .text / .too_long, as cJSON's next was read
 *   on_record(opaque, rec, err, errlen):
 *       rec->kind != PAGE_SCAN_OBJECT, rec->id.kind != PAGE_SCAN_STRING ...:
 *           the adapter's own "data[%zu] lacks ..." message with rec->index;
 *       rec->id.too_long / rec->status.too_long: fail the page;
 *       otherwise hand rec->id.text, rec->status.text and the span
 *       rec->span/rec->len (the record as received) on.
 *
 * Records are handed over as the pass reaches them, before the rest of the
 * page is read: a page that fails after some callbacks must be dropped as a
 * whole, as a page whose tenth record lacks an id always was. When a
 * callback fails, the pass goes on without callbacks to the end of the
 * body, so that a malformed page still reports the malformation (the
 * first error in the bytes) rather than whatever a record looked like.
 */
#ifndef SB_PAGE_SCAN_H
#define SB_PAGE_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "diff.h"

/* Nesting deeper than this fails the page: no session list needs it, and
 * every consumer of a record (cJSON in particular) recurses per level. */
#define PAGE_SCAN_MAX_DEPTH 64
/* cJSON reads at most 63 characters of a number and fails a longer one
 * inside a container; no id, timestamp or count needs more. */
#define PAGE_SCAN_NUMBER_MAX 63
/* Steps of a dotted path, and bytes of one step: configured names, short. */
#define PAGE_SCAN_PATH_STEPS 8
#define PAGE_SCAN_NAME_MAX 128
/* Document-level fields one scan reads besides the records. */
#define PAGE_SCAN_MAX_FIELDS 4

typedef enum page_scan_kind {
    PAGE_SCAN_ABSENT = 0,
    PAGE_SCAN_NULL,
    PAGE_SCAN_STRING,
    PAGE_SCAN_NUMBER,
    PAGE_SCAN_BOOL,
    PAGE_SCAN_OBJECT,
    PAGE_SCAN_ARRAY,
} page_scan_kind_t;

/* What page_scan() returns; the error's offset is in the result. */
typedef enum page_scan_rc {
    PAGE_SCAN_OK = 0,
    PAGE_SCAN_E_EMPTY,    /* no body */
    PAGE_SCAN_E_SYNTAX,   /* not JSON grammar, or the body ends early */
    PAGE_SCAN_E_NUMBER,   /* a number not as RFC 8259 writes it, or too long */
    PAGE_SCAN_E_CONTROL,  /* a raw control character (cJSON let these through) */
    PAGE_SCAN_E_ESCAPE,   /* an unknown escape, bad hex, a lone or mismatched surrogate */
    PAGE_SCAN_E_NUL,      /* "\u0000" */
    PAGE_SCAN_E_UTF8,     /* not UTF-8 */
    PAGE_SCAN_E_DEPTH,    /* deeper than PAGE_SCAN_MAX_DEPTH */
    PAGE_SCAN_E_TRAILING, /* something after the document */
    PAGE_SCAN_E_RECORDS,  /* the records path does not hold an array */
    PAGE_SCAN_E_RECORD,   /* the record callback failed; err is its own */
} page_scan_rc_t;

/*
 * A value found at a path. text is a buffer of cap bytes owned by whoever
 * set it (the caller for fields, the record for its id and status); the
 * scan writes there, NUL-terminated, a string decoded, a number as sent or
 * "true"/"false". A string cannot hold a NUL ("\u0000" fails the page).
 * When the text needs cap bytes or more, too_long is set and text is "".
 */
typedef struct page_scan_value {
    page_scan_kind_t kind;
    /* The value's bytes in the body (a string with its quotes); NULL when absent. */
    const char *raw;
    size_t raw_len;
    char *text;
    size_t cap;
    /* Length of the decoded text (set even when too_long). */
    size_t len;
    bool too_long;
} page_scan_value_t;

/* One element of the records array, valid for the callback only. */
typedef struct page_scan_record {
    size_t index;
    /* The element as received: a span of the body, no whitespace around it. */
    const char *span;
    size_t len;
    /* PAGE_SCAN_OBJECT for a record; anything else fails the page (the
     * adapter's message), and then id, status and alt_id are absent. */
    page_scan_kind_t kind;
    page_scan_value_t id, status, alt_id;
    char id_text[DIFF_ID_MAX + 1];
    char status_text[DIFF_STATUS_MAX + 1];
    char alt_id_text[DIFF_ID_MAX + 1];
} page_scan_record_t;

/*
 * Called once per element of the records array, in order, on the thread
 * that called page_scan(). Returns 0, or -1 with err to fail the page.
 */
typedef int (*page_scan_record_fn)(void *opaque, const page_scan_record_t *rec, char *err,
                                   size_t errlen);

/*
 * Dotted paths ("a.b.c": member a, then its member b ...). records "" is
 * the document itself; id and status are within each record (NULL: not
 * read); alt_id, if set, is a second place for the id (JSON:API's
 * attributes.id, read when id is absent or null). fields[] are read from
 * the document; NULL ends the list.
 */
typedef struct page_scan_paths {
    const char *records;
    const char *id;
    const char *status;
    const char *alt_id;
    const char *fields[PAGE_SCAN_MAX_FIELDS];
} page_scan_paths_t;

typedef struct page_scan_spec page_scan_spec_t;

/*
 * Splits the paths once, at configuration time. Returns the spec, owned by
 * the caller (page_scan_spec_free) and read-only afterwards, so that any
 * number of scans may share it; NULL with err for an empty step, a path
 * longer than PAGE_SCAN_PATH_STEPS steps or a step longer than
 * PAGE_SCAN_NAME_MAX, a repeated path, or ENOMEM. The strings are copied.
 */
page_scan_spec_t *page_scan_spec_new(const page_scan_paths_t *paths, char *err, size_t errlen);
void page_scan_spec_free(page_scan_spec_t *spec);
/*
 * 0 when text is a dotted path page_scan_spec_new() takes (1..
 * PAGE_SCAN_PATH_STEPS steps of 1..PAGE_SCAN_NAME_MAX bytes), or -1 with
 * err; for configurations that name their own paths, to report each at
 * its key.
 */
int page_scan_path_check(const char *text, char *err, size_t errlen);

/*
 * The outcome of a scan. Before the call, set fields[i].text and .cap for
 * the fields whose text is wanted (cap 0: kind and raw only); the scan sets
 * everything else, and on failure error_at (the byte offset of the error).
 */
typedef struct page_scan_result {
    page_scan_value_t fields[PAGE_SCAN_MAX_FIELDS];
    size_t records;
    size_t error_at;
} page_scan_result_t;

/*
 * Scans body[0..len), calling fn per record (fn may be NULL: validation and
 * fields only). body need not be NUL-terminated and is only read; spans and
 * raw pointers point into it. Returns PAGE_SCAN_OK, or an error with err
 * set: "invalid UTF-8 at byte N of LEN", "\"\\u0000\" in a string at byte N
 * of LEN", "JSON nested deeper than 64 levels at byte N of LEN", "malformed
 * JSON at byte N of LEN: <why>", "page has no \"data\" array", "empty body",
 * or the callback's own message.
 */
page_scan_rc_t page_scan(const page_scan_spec_t *spec, const char *body, size_t len,
                         page_scan_record_fn fn, void *opaque, page_scan_result_t *res, char *err,
                         size_t errlen);

/*
 * Validates one JSON value (a record read back from Redis) with the rules
 * and bounds of a page, reading nothing out of it: PAGE_SCAN_OK, or the
 * error with err set as page_scan() sets it.
 */
page_scan_rc_t page_scan_check(const char *text, size_t len, char *err, size_t errlen);

/*
 * A session id as provider_id_text() makes it from the cJSON value: a
 * non-empty string shorter than n, or a number that is a whole number a
 * double holds exactly (|v| <= 2^53, as cJSON's double reads it) as decimal
 * text. 0 with out set, or -1 (any other kind, too long, empty).
 */
int page_scan_id_text(const page_scan_value_t *v, char *out, size_t n);

#endif /* SB_PAGE_SCAN_H */
