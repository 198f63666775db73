/*
 * page_scan: one pass over a provider's page (see page_scan.h).
 *
 * A recursive-descent validator (the depth is bounded, so is the C stack)
 * that carries, into each object it enters, the set of configured paths
 * still looking for a member there. Strings, most of a page's bytes, are
 * skipped eight bytes at a time; only the members on a path are compared
 * and only the values at the end of one are copied out.
 */
#include "page_scan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "provider.h"
#include "sink.h"

/* The document's paths: the records array first, then the fields. */
#define DOC_RECORDS 0
#define DOC_PATHS (1 + PAGE_SCAN_MAX_FIELDS)
/* A record's paths. */
#define REC_ID 0
#define REC_STATUS 1
#define REC_ALT 2
#define REC_PATHS 3

#define BIT(i) (1u << (i))

typedef struct scan_step {
    const char *name;
    size_t len;
} scan_step_t;

typedef struct scan_path {
    scan_step_t steps[PAGE_SCAN_PATH_STEPS];
    unsigned nsteps;
} scan_path_t;

/* The paths of one side: the document's or a record's. */
typedef struct scan_paths {
    scan_path_t path[DOC_PATHS];
    unsigned mask; /* the paths in use */
} scan_paths_t;

struct page_scan_spec {
    scan_paths_t doc, rec;
    bool records_root;
    /* The records path as configured, for the error message. */
    char *records;
    /* Copies of the paths the steps point into. */
    char *copies[DOC_PATHS + REC_PATHS];
};

typedef enum scan_side { SIDE_DOC, SIDE_REC } scan_side_t;

typedef enum scan_records { RECORDS_UNSEEN, RECORDS_FOUND, RECORDS_NOT_ARRAY } scan_records_t;

typedef struct scan {
    const unsigned char *base, *end;
    const page_scan_spec_t *spec;
    page_scan_value_t *doc_values[DOC_PATHS];
    page_scan_value_t *rec_values[REC_PATHS];
    page_scan_record_t *rec;
    page_scan_record_fn fn;
    void *opaque;
    char *err;
    size_t errlen;
    int depth;
    scan_records_t records;
    bool fn_failed;
    size_t nrecords;
    page_scan_rc_t rc;
    const unsigned char *at;
    const char *why;
} scan_t;

/* ---- the spec ---- */

static int split_path(const char *text, scan_path_t *p, char **copy, char *err, size_t errlen)
{
    *copy = strdup(text);
    if (*copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->nsteps = 0;
    for (char *s = *copy;;) {
        char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        if (len == 0 || len > PAGE_SCAN_NAME_MAX || p->nsteps == PAGE_SCAN_PATH_STEPS) {
            snprintf(err, errlen,
                     "path \"%s\": steps must be 1..%d bytes, at most %d of them, between dots",
                     text, PAGE_SCAN_NAME_MAX, PAGE_SCAN_PATH_STEPS);
            return -1;
        }
        p->steps[p->nsteps++] = (scan_step_t){s, len};
        if (dot == NULL)
            return 0;
        s = dot + 1;
    }
}

int page_scan_path_check(const char *text, char *err, size_t errlen)
{
    scan_path_t p;
    char *copy = NULL;
    int rc = split_path(text, &p, &copy, err, errlen);
    free(copy);
    return rc;
}

/* Adds text as path i of side; a path equal to another of the same kind is
 * refused (its value would have two places to go). */
static int add_path(page_scan_spec_t *spec, scan_paths_t *side, unsigned i, const char *text,
                    char *err, size_t errlen)
{
    char **copy = &spec->copies[(side == &spec->rec ? DOC_PATHS : 0) + i];
    if (split_path(text, &side->path[i], copy, err, errlen) != 0)
        return -1;
    for (unsigned b = side->mask; b; b &= b - 1) {
        unsigned j = (unsigned)__builtin_ctz(b);
        /* A field may name the records array: it reads as an array. */
        if (side == &spec->doc && j == DOC_RECORDS)
            continue;
        if (strcmp(spec->copies[(side == &spec->rec ? DOC_PATHS : 0) + j], *copy) == 0) {
            snprintf(err, errlen, "path \"%s\" is given twice", text);
            return -1;
        }
    }
    side->mask |= BIT(i);
    return 0;
}

page_scan_spec_t *page_scan_spec_new(const page_scan_paths_t *paths, char *err, size_t errlen)
{
    page_scan_spec_t *spec = calloc(1, sizeof(*spec));
    if (spec == NULL || paths->records == NULL ||
        (spec->records = strdup(paths->records)) == NULL) {
        snprintf(err, errlen, paths->records ? "out of memory" : "no records path");
        goto fail;
    }
    spec->records_root = paths->records[0] == '\0';
    if (!spec->records_root &&
        add_path(spec, &spec->doc, DOC_RECORDS, paths->records, err, errlen) != 0)
        goto fail;
    for (unsigned i = 0; i < PAGE_SCAN_MAX_FIELDS && paths->fields[i]; i++) {
        if (add_path(spec, &spec->doc, 1 + i, paths->fields[i], err, errlen) != 0)
            goto fail;
    }
    const char *rec[REC_PATHS] = {
        [REC_ID] = paths->id, [REC_STATUS] = paths->status, [REC_ALT] = paths->alt_id};
    for (unsigned i = 0; i < REC_PATHS; i++) {
        if (rec[i] && add_path(spec, &spec->rec, i, rec[i], err, errlen) != 0)
            goto fail;
    }
    return spec;
fail:
    page_scan_spec_free(spec);
    return NULL;
}

void page_scan_spec_free(page_scan_spec_t *spec)
{
    if (spec == NULL)
        return;
    for (size_t i = 0; i < sizeof(spec->copies) / sizeof(spec->copies[0]); i++)
        free(spec->copies[i]);
    free(spec->records);
    free(spec);
}

/* ---- the scan ---- */

static const unsigned char *fail(scan_t *st, page_scan_rc_t rc, const unsigned char *at,
                                 const char *why)
{
    if (st->rc == PAGE_SCAN_OK) {
        st->rc = rc;
        st->at = at;
        st->why = why;
    }
    return NULL;
}

/* What was found at p instead of what the grammar expected: the end, a
 * control character, bytes that are not UTF-8 (as the earlier prescan
 * named them), or plain bad syntax. */
static const unsigned char *unexpected(scan_t *st, const unsigned char *p, const char *expected)
{
    if (p == st->end)
        return fail(st, PAGE_SCAN_E_SYNTAX, p, "the body ends early");
    if (*p < 0x20)
        return fail(st, PAGE_SCAN_E_CONTROL, p, "a control character");
    if (*p >= 0x80 && diff_utf8_seq(p, (size_t)(st->end - p)) == 0)
        return fail(st, PAGE_SCAN_E_UTF8, p, NULL);
    return fail(st, PAGE_SCAN_E_SYNTAX, p, expected);
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static inline int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int hex4(const unsigned char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        int d = is_digit(c)            ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/*
 * The bytes of x (little-endian) that end a run of plain string text: '"',
 * '\\', a control character or a non-ASCII byte, each flagged by its high
 * bit. A flag may be false only above a true one (borrows run upwards), so
 * the lowest flag is exact, which is all the caller reads.
 */
static inline uint64_t string_stops(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x) & HIGHS;
}

/*
 * Validates a string's body from p (just after the opening quote) and
 * returns the byte after its closing quote, with *escaped set when it holds
 * an escape; NULL on an error.
 */
static const unsigned char *scan_string(scan_t *st, const unsigned char *p, bool *escaped)
{
    const unsigned char *end = st->end;
    for (;;) {
#if defined(__SSE2__)
        /* Sixteen bytes at a time: a signed compare below 0x20 flags the
         * control characters and every non-ASCII byte at once. */
        while (end - p >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                                  _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
                                     _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));
            unsigned bits = (unsigned)_mm_movemask_epi8(m);
            if (bits != 0) {
                p += __builtin_ctz(bits);
                goto stop;
            }
            p += 16;
        }
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, sizeof(x));
            uint64_t stops = string_stops(x);
            if (stops != 0) {
                p += __builtin_ctzll(stops) >> 3;
                goto stop;
            }
            p += 8;
        }
#endif
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p == end)
            return fail(st, PAGE_SCAN_E_SYNTAX, p, "the body ends inside a string");
#if defined(__SSE2__) || (defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    stop:
#endif
        if (*p == '"')
            return p + 1;
        if (*p == '\\') {
            *escaped = true;
            if (end - p < 2)
                return fail(st, PAGE_SCAN_E_SYNTAX, end, "the body ends inside a string");
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                continue;
            case 'u':
                break;
            default:
                return fail(st, PAGE_SCAN_E_ESCAPE, p, "an unknown escape");
            }
            int code = end - p >= 6 ? hex4(p + 2) : -1;
            if (code < 0)
                return fail(st, PAGE_SCAN_E_ESCAPE, p, "\\u without four hex digits");
            if (code == 0)
                return fail(st, PAGE_SCAN_E_NUL, p, NULL);
            if (code >= 0xdc00 && code <= 0xdfff)
                return fail(st, PAGE_SCAN_E_ESCAPE, p, "a lone low surrogate");
            if (code >= 0xd800 && code <= 0xdbff) {
                int low = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;
                if (low == 0)
                    return fail(st, PAGE_SCAN_E_NUL, p + 6, NULL);
                if (low < 0xdc00 || low > 0xdfff)
                    return fail(st, PAGE_SCAN_E_ESCAPE, p, "a high surrogate without its low half");
                p += 12;
            } else {
                p += 6;
            }
            continue;
        }
        if (*p < 0x20)
            return fail(st, PAGE_SCAN_E_CONTROL, p, "a control character in a string");
        size_t n = diff_utf8_seq(p, (size_t)(end - p));
        if (n == 0)
            return fail(st, PAGE_SCAN_E_UTF8, p, NULL);
        p += n;
    }
}

static size_t put_utf8(unsigned char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Decodes the validated string body s..e into out (cap bytes, NUL-terminated
 * when cap > 0) and returns the decoded length; when that does not fit, out
 * is "".
 */
static size_t decode(const unsigned char *s, const unsigned char *e, char *out, size_t cap)
{
    size_t n = 0;
    while (s < e) {
        const unsigned char *bs = memchr(s, '\\', (size_t)(e - s));
        size_t run = (size_t)((bs ? bs : e) - s);
        if (n + run < cap)
            memcpy(out + n, s, run);
        n += run;
        if (bs == NULL)
            break;
        unsigned char tmp[4];
        size_t k = 1;
        switch (bs[1]) {
        case 'b':
            tmp[0] = '\b';
            break;
        case 'f':
            tmp[0] = '\f';
            break;
        case 'n':
            tmp[0] = '\n';
            break;
        case 'r':
            tmp[0] = '\r';
            break;
        case 't':
            tmp[0] = '\t';
            break;
        case 'u': {
            unsigned cp = (unsigned)hex4(bs + 2);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)hex4(bs + 8) - 0xdc00);
                bs += 6;
            }
            k = put_utf8(tmp, cp);
            bs += 4;
            break;
        }
        default: /* '"', '\\', '/' */
            tmp[0] = bs[1];
            break;
        }
        s = bs + 2;
        if (n + k < cap)
            memcpy(out + n, tmp, k);
        n += k;
    }
    if (cap > 0)
        out[n < cap ? n : 0] = '\0';
    return n;
}

static const unsigned char *scan_number(scan_t *st, const unsigned char *p)
{
    const unsigned char *start = p, *end = st->end;
    if (*p == '-')
        p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return p == end ? unexpected(st, p, NULL)
                        : fail(st, PAGE_SCAN_E_NUMBER, p, "a number without digits");
    }
    if (p < end && *p == '.') {
        if (++p == end || !is_digit(*p))
            return fail(st, PAGE_SCAN_E_NUMBER, p, "no digit after a decimal point");
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return fail(st, PAGE_SCAN_E_NUMBER, p, "no digit in an exponent");
        while (p < end && is_digit(*p))
            p++;
    }
    /* "01", "1.5.2", "1e5e5": cJSON read a prefix of these and went on. */
    if (p < end && (is_digit(*p) || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-'))
        return fail(st, PAGE_SCAN_E_NUMBER, p, "not a number as RFC 8259 writes it");
    if (p - start > PAGE_SCAN_NUMBER_MAX)
        return fail(st, PAGE_SCAN_E_NUMBER, start, "a number longer than 63 characters");
    return p;
}

static void set_text(page_scan_value_t *v, const unsigned char *s, size_t n)
{
    v->len = n;
    if (n < v->cap) {
        memcpy(v->text, s, n);
        v->text[n] = '\0';
    } else {
        v->too_long = true;
        if (v->cap > 0)
            v->text[0] = '\0';
    }
}

/* Fills the values of the paths in caps (of side) that end at the value
 * start..end. */
static void capture(scan_t *st, scan_side_t side, unsigned caps, page_scan_kind_t kind,
                    const unsigned char *start, const unsigned char *end, bool escaped)
{
    for (; caps; caps &= caps - 1) {
        unsigned i = (unsigned)__builtin_ctz(caps);
        page_scan_value_t *v = side == SIDE_DOC ? st->doc_values[i] : st->rec_values[i];
        if (v == NULL)
            continue;
        v->kind = kind;
        v->raw = (const char *)start;
        v->raw_len = (size_t)(end - start);
        v->too_long = false;
        if (kind == PAGE_SCAN_STRING && escaped) {
            v->len = decode(start + 1, end - 1, v->text, v->cap);
            v->too_long = v->len >= v->cap;
        } else if (kind == PAGE_SCAN_STRING) {
            set_text(v, start + 1, (size_t)(end - start) - 2);
        } else if (kind == PAGE_SCAN_NUMBER || kind == PAGE_SCAN_BOOL) {
            set_text(v, start, (size_t)(end - start));
        } else {
            set_text(v, start, 0);
        }
    }
}

/* The paths of mask (of side, all at step level) that name the member
 * k..e (a validated string body, escaped or not). */
static unsigned match(const scan_t *st, scan_side_t side, unsigned mask, unsigned level,
                      const unsigned char *k, const unsigned char *e, bool escaped)
{
    const scan_paths_t *paths = side == SIDE_DOC ? &st->spec->doc : &st->spec->rec;
    char buf[PAGE_SCAN_NAME_MAX + 1];
    const char *name = (const char *)k;
    size_t n = (size_t)(e - k);
    if (escaped) {
        n = decode(k, e, buf, sizeof(buf));
        if (n > PAGE_SCAN_NAME_MAX)
            return 0;
        name = buf;
    }
    unsigned m = 0;
    for (unsigned b = mask; b; b &= b - 1) {
        unsigned i = (unsigned)__builtin_ctz(b);
        const scan_step_t *step = &paths->path[i].steps[level];
        if (step->len == n && memcmp(step->name, name, n) == 0)
            m |= BIT(i);
    }
    return m;
}

static const unsigned char *scan_value(scan_t *st, const unsigned char *p, scan_side_t side,
                                       unsigned mask, unsigned level, unsigned caps,
                                       page_scan_kind_t *kind);

/* An object at p ('{'), with the paths of mask looking for a member at
 * step level. */
static const unsigned char *scan_object(scan_t *st, const unsigned char *p, scan_side_t side,
                                        unsigned mask, unsigned level)
{
    const unsigned char *end = st->end;
    if (++st->depth > PAGE_SCAN_MAX_DEPTH)
        return fail(st, PAGE_SCAN_E_DEPTH, p, NULL);
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        st->depth--;
        return p + 1;
    }
    const scan_paths_t *paths = side == SIDE_DOC ? &st->spec->doc : &st->spec->rec;
    for (;;) {
        if (p == end || *p != '"')
            return unexpected(st, p, "a member name was expected");
        const unsigned char *name = p + 1;
        bool escaped = false;
        p = scan_string(st, name, &escaped);
        if (p == NULL)
            return NULL;
        unsigned caps = 0, child = 0;
        if (mask) {
            /* The first member of a name is the one cJSON finds. */
            unsigned m = match(st, side, mask, level, name, p - 1, escaped);
            mask &= ~m;
            for (; m; m &= m - 1) {
                unsigned i = (unsigned)__builtin_ctz(m);
                if (paths->path[i].nsteps == level + 1)
                    caps |= BIT(i);
                else
                    child |= BIT(i);
            }
        }
        p = skip_ws(p, end);
        if (p == end || *p != ':')
            return unexpected(st, p, "':' was expected");
        p = skip_ws(p + 1, end);
        page_scan_kind_t kind;
        p = scan_value(st, p, side, child, level + 1, caps, &kind);
        if (p == NULL)
            return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            st->depth--;
            return p + 1;
        }
        return unexpected(st, p, "',' or '}' was expected");
    }
}

/* An array at p ('['); when records, each element is a record handed to
 * the callback. */
static const unsigned char *scan_array(scan_t *st, const unsigned char *p, bool records)
{
    const unsigned char *end = st->end;
    if (++st->depth > PAGE_SCAN_MAX_DEPTH)
        return fail(st, PAGE_SCAN_E_DEPTH, p, NULL);
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']') {
        st->depth--;
        return p + 1;
    }
    page_scan_record_t *r = st->rec;
    for (;;) {
        const unsigned char *start = p;
        page_scan_kind_t kind;
        if (records) {
            page_scan_value_t *v[REC_PATHS] = {&r->id, &r->status, &r->alt_id};
            for (unsigned i = 0; i < REC_PATHS; i++) {
                v[i]->kind = PAGE_SCAN_ABSENT;
                v[i]->raw = NULL;
                v[i]->raw_len = v[i]->len = 0;
                v[i]->too_long = false;
                v[i]->text[0] = '\0';
            }
            p = scan_value(st, p, SIDE_REC, st->spec->rec.mask, 0, 0, &kind);
        } else {
            p = scan_value(st, p, SIDE_DOC, 0, 0, 0, &kind);
        }
        if (p == NULL)
            return NULL;
        if (records) {
            r->index = st->nrecords++;
            r->span = (const char *)start;
            r->len = (size_t)(p - start);
            r->kind = kind;
            if (st->fn && !st->fn_failed && st->fn(st->opaque, r, st->err, st->errlen) != 0)
                st->fn_failed = true;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') {
            st->depth--;
            return p + 1;
        }
        return unexpected(st, p, "',' or ']' was expected");
    }
}

/*
 * A value at p. mask: the paths looking for a member of it, should it be
 * an object; caps: the paths that end at it (on the document's side, bit
 * DOC_RECORDS makes it the records array).
 */
static const unsigned char *scan_value(scan_t *st, const unsigned char *p, scan_side_t side,
                                       unsigned mask, unsigned level, unsigned caps,
                                       page_scan_kind_t *kind)
{
    const unsigned char *start = p, *end = st->end;
    bool escaped = false;
    if (p == end)
        return unexpected(st, p, NULL);
    switch (*p) {
    case '"':
        *kind = PAGE_SCAN_STRING;
        p = scan_string(st, p + 1, &escaped);
        break;
    case '{':
        *kind = PAGE_SCAN_OBJECT;
        p = scan_object(st, p, side, mask, level);
        break;
    case '[':
        *kind = PAGE_SCAN_ARRAY;
        p = scan_array(st, p, side == SIDE_DOC && (caps & BIT(DOC_RECORDS)));
        break;
    case 't':
    case 'f':
    case 'n': {
        const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        size_t n = strlen(word);
        if ((size_t)(end - p) < n || memcmp(p, word, n) != 0)
            return fail(st, PAGE_SCAN_E_SYNTAX, p, "not a value");
        *kind = *p == 'n' ? PAGE_SCAN_NULL : PAGE_SCAN_BOOL;
        p += n;
        break;
    }
    default:
        if (*p != '-' && !is_digit(*p))
            return unexpected(st, p, "a value was expected");
        *kind = PAGE_SCAN_NUMBER;
        p = scan_number(st, p);
        break;
    }
    if (p == NULL || caps == 0)
        return p;
    if (side == SIDE_DOC && (caps & BIT(DOC_RECORDS)))
        st->records = *kind == PAGE_SCAN_ARRAY ? RECORDS_FOUND : RECORDS_NOT_ARRAY;
    capture(st, side, caps, *kind, start, p, escaped);
    return p;
}

static void reset_value(page_scan_value_t *v)
{
    v->kind = PAGE_SCAN_ABSENT;
    v->raw = NULL;
    v->raw_len = v->len = 0;
    v->too_long = false;
    if (v->cap > 0)
        v->text[0] = '\0';
}

page_scan_rc_t page_scan(const page_scan_spec_t *spec, const char *body, size_t len,
                         page_scan_record_fn fn, void *opaque, page_scan_result_t *res, char *err,
                         size_t errlen)
{
    page_scan_record_t rec = {
        .id = {.text = rec.id_text, .cap = sizeof(rec.id_text)},
        .status = {.text = rec.status_text, .cap = sizeof(rec.status_text)},
        .alt_id = {.text = rec.alt_id_text, .cap = sizeof(rec.alt_id_text)},
    };
    scan_t st = {
        .spec = spec,
        .rec = &rec,
        .fn = fn,
        .opaque = opaque,
        .err = err,
        .errlen = errlen,
        .rec_values = {&rec.id, &rec.status, &rec.alt_id},
    };
    for (unsigned i = 0; i < PAGE_SCAN_MAX_FIELDS; i++) {
        reset_value(&res->fields[i]);
        st.doc_values[1 + i] = &res->fields[i];
    }
    res->records = 0;
    res->error_at = 0;
    if (body == NULL || len == 0) {
        snprintf(err, errlen, "empty body");
        return PAGE_SCAN_E_EMPTY;
    }
    st.base = (const unsigned char *)body;
    st.end = st.base + len;
    const unsigned char *p = st.base;
    /* A byte order mark: RFC 8259 §8.1 lets a parser ignore it, as cJSON did. */
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;
    p = skip_ws(p, st.end);
    page_scan_kind_t kind;
    if (spec->records_root)
        p = scan_value(&st, p, SIDE_DOC, 0, 0, BIT(DOC_RECORDS), &kind);
    else
        p = scan_value(&st, p, SIDE_DOC, spec->doc.mask, 0, 0, &kind);
    if (p != NULL) {
        p = skip_ws(p, st.end);
        if (p != st.end)
            fail(&st, PAGE_SCAN_E_TRAILING, p, "data after the document");
    }
    res->records = st.nrecords;
    if (st.rc != PAGE_SCAN_OK) {
        size_t at = (size_t)(st.at - st.base);
        res->error_at = at;
        switch (st.rc) {
        case PAGE_SCAN_E_UTF8:
            snprintf(err, errlen, "invalid UTF-8 at byte %zu of %zu", at, len);
            break;
        case PAGE_SCAN_E_NUL:
            snprintf(err, errlen, "\"\\u0000\" in a string at byte %zu of %zu", at, len);
            break;
        case PAGE_SCAN_E_DEPTH:
            snprintf(err, errlen, "JSON nested deeper than %d levels at byte %zu of %zu",
                     PAGE_SCAN_MAX_DEPTH, at, len);
            break;
        default:
            snprintf(err, errlen, "malformed JSON at byte %zu of %zu: %s", at, len, st.why);
            break;
        }
        return st.rc;
    }
    /* page_scan_check()'s spec names no records: validation only */
    if (spec->records != NULL && st.records != RECORDS_FOUND) {
        if (spec->records_root)
            snprintf(err, errlen, "page is not an array");
        else
            snprintf(err, errlen, "page has no \"%s\" array", spec->records);
        return PAGE_SCAN_E_RECORDS;
    }
    if (st.fn_failed)
        return PAGE_SCAN_E_RECORD;
    return PAGE_SCAN_OK;
}

page_scan_rc_t page_scan_check(const char *text, size_t len, char *err, size_t errlen)
{
    static const page_scan_spec_t validate_only; /* no path at all */
    page_scan_result_t res = {0};                /* no field's text is wanted */
    return page_scan(&validate_only, text, len, NULL, NULL, &res, err, errlen);
}

int page_scan_id_text(const page_scan_value_t *v, char *out, size_t n)
{
    if (v->kind == PAGE_SCAN_STRING && !v->too_long && v->len > 0 && v->len < n) {
        memcpy(out, v->text, v->len + 1);
        return 0;
    }
    if (v->kind == PAGE_SCAN_NUMBER && !v->too_long) {
        /* The double cJSON made of the same text, so that an id keeps the
         * decimal text it had (9007199254740993 reads as ...992 there too). */
        long long ll;
        double d = strtod(v->text, NULL);
        if (sink_exact_integer(d, -PROVIDER_EXACT_INT_MAX, PROVIDER_EXACT_INT_MAX, &ll) == 0) {
            int k = snprintf(out, n, "%lld", ll);
            return k > 0 && (size_t)k < n ? 0 : -1;
        }
    }
    return -1;
}
