/*
 * century: the Century Smart IA adapter (seeds 000 and 001).
 *
 * One poll reads two lists, in-progress first and then completed, each page
 * by page through pagination.nextCursor until it is null. In that order a
 * session that completes while we page shows up in both lists at worst
 * (the diff keeps its most advanced state), never in neither.
 *
 * Completed sessions are bounded by completed_lookback_s, sent as
 * startDate[gt]: a session must complete within that window after its start
 * or the bridge, seeing it leave in-progress and never arrive in completed,
 * reports it cancelled (reason vanished).
 */
#include "config.h"
#include "provider.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The seed: "This parameter supports a maximum of 30 identifiers." */
#define CENTURY_MAX_FILTER_VALUES 30
/* The seed: limit "Minimum value is 1, maximum value is 100." */
#define CENTURY_MAX_LIMIT 100
#define CENTURY_DEFAULT_LOOKBACK_S (7 * 24 * 3600)
/* A cursor is an opaque base64 token; anything longer is not one. */
#define CENTURY_CURSOR_MAX 2048
#define CENTURY_VALUE_MAX 256
/* 9999-12-31T23:59:59Z: the last second a four-digit ISO 8601 year can
 * write, so that both forms of a date cover the same range. */
#define CENTURY_DATE_MAX_S 253402300799LL
/* Its digits: a longer digit string is refused before strtoll, which would saturate it. */
#define CENTURY_DATE_MAX_DIGITS 12

static const char *const century_keys[] = {"completed_lookback_s", NULL};
static const char *const auth_keys[] = {"api_key", NULL};
static const char *const filter_keys[] = {"startDate", "userId", "testId", "subject", NULL};
static const char *const date_ops[] = {"gt", "gte", "lt", "lte", NULL};
static const char *const list_filters[] = {"userId", "testId", "subject"};

enum { OP_GT, OP_GTE, OP_LT, OP_LTE, OP_COUNT };

typedef struct century_conf {
    char *api_key;
    long long lookback_s; /* 0: completed sessions are not bounded */
    /* startDate[op]: the value as configured, and as unix seconds. */
    char *date[OP_COUNT];
    long long date_s[OP_COUNT];
    char **lists[3];
    size_t nlists[3];
    page_scan_spec_t *scan; /* the page's paths, split once */
} century_conf_t;

static const provider_status_t century_statuses[] = {
    {"IN_PROGRESS", DIFF_STATE_ACTIVE},
    {"COMPLETED", DIFF_STATE_COMPLETED},
    {NULL, DIFF_STATE_NONE},
};

/* ---- configuration ---- */

static int is_uuid(const char *s)
{
    static const int dash[] = {8, 13, 18, 23};
    if (strlen(s) != 36)
        return 0;
    for (int i = 0, d = 0; i < 36; i++) {
        if (d < 4 && i == dash[d]) {
            if (s[i] != '-')
                return 0;
            d++;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/*
 * Parses the seed's two date forms: a unix timestamp, or ISO 8601
 * (YYYY-MM-DD, optionally THH:MM[:SS[.fff]] and Z or +HH:MM).
 */
static int parse_date(const char *s, long long *out)
{
    size_t digits = strspn(s, "0123456789");
    if (*s && digits == strlen(s)) {
        if (digits > CENTURY_DATE_MAX_DIGITS)
            return -1;
        long long v = strtoll(s, NULL, 10);
        if (v > CENTURY_DATE_MAX_S)
            return -1;
        *out = v;
        return 0;
    }
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    const char *p = s + 10;
    long off = 0;
    if (*p == 'T' || *p == ' ') {
        int m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &m) != 2 || m != 5)
            return -1;
        p += 1 + m;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &sec, &m) != 1 || m != 2)
                return -1;
            p += 1 + m;
            if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p))
                    return -1;
                while (isdigit((unsigned char)*p))
                    p++;
            }
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5)
                return -1;
            off = (oh * 3600L + om * 60L) * (*p == '+' ? 1 : -1);
            p += 1 + m;
        }
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = (long long)timegm(&tm) - off;
    return 0;
}

static void century_free_config(void *p)
{
    century_conf_t *c = p;
    if (c == NULL)
        return;
    free(c->api_key);
    for (int i = 0; i < OP_COUNT; i++)
        free(c->date[i]);
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < c->nlists[i]; j++)
            free(c->lists[i][j]);
        free(c->lists[i]);
    }
    page_scan_spec_free(c->scan);
    free(c);
}

static void configure_filters(century_conf_t *c, const cJSON *filters, const char *path,
                              sink_errors_t *errs)
{
    char fpath[256], sub[300];
    sink_conf_path(fpath, sizeof(fpath), path, "filters");
    if (!cJSON_IsObject(filters)) {
        sink_errors_add(errs, fpath, "expected an object");
        return;
    }
    sink_conf_check_keys(filters, fpath, filter_keys, errs);

    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(filters, "startDate");
    sink_conf_path(sub, sizeof(sub), fpath, "startDate");
    if (sd && !cJSON_IsObject(sd)) {
        sink_errors_add(errs, sub, "expected an object of gt, gte, lt, lte");
    } else if (sd) {
        sink_conf_check_keys(sd, sub, date_ops, errs);
        for (int op = 0; op < OP_COUNT; op++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(sd, date_ops[op]);
            char vpath[320], buf[64];
            const char *text = NULL;
            if (v == NULL)
                continue;
            sink_conf_path(vpath, sizeof(vpath), sub, date_ops[op]);
            long long secs;
            if (cJSON_IsNumber(v) &&
                sink_exact_integer(v->valuedouble, 0, CENTURY_DATE_MAX_S, &secs) == 0) {
                snprintf(buf, sizeof(buf), "%lld", secs);
                text = buf;
            } else if (cJSON_IsString(v)) {
                text = v->valuestring;
            }
            if (text == NULL || parse_date(text, &c->date_s[op]) != 0) {
                sink_errors_add(errs, vpath,
                                "expected a unix timestamp or an ISO 8601 date-time (a "
                                "timestamp is whole seconds, 0..%lld)",
                                CENTURY_DATE_MAX_S);
                continue;
            }
            c->date[op] = strdup(text);
        }
        if (c->date[OP_GT] && c->date[OP_GTE])
            sink_errors_add(errs, sub, "gt and gte cannot be used together");
        if (c->date[OP_LT] && c->date[OP_LTE])
            sink_errors_add(errs, sub, "lt and lte cannot be used together");
    }

    for (int i = 0; i < 3; i++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(filters, list_filters[i]);
        sink_conf_path(sub, sizeof(sub), fpath, list_filters[i]);
        if (arr == NULL)
            continue;
        int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
        if (n < 1 || n > CENTURY_MAX_FILTER_VALUES) {
            sink_errors_add(errs, sub, "expected an array of 1 to %d values",
                            CENTURY_MAX_FILTER_VALUES);
            continue;
        }
        c->lists[i] = calloc((size_t)n, sizeof(char *));
        if (c->lists[i] == NULL)
            continue;
        size_t j = 0;
        for (const cJSON *e = arr->child; e; e = e->next, j++) {
            char epath[320];
            sink_conf_path_index(epath, sizeof(epath), sub, j);
            int uuid = i < 2; /* userId and testId are UUIDs */
            if (!cJSON_IsString(e) || e->valuestring[0] == '\0' ||
                strlen(e->valuestring) > CENTURY_VALUE_MAX || (uuid && !is_uuid(e->valuestring)) ||
                sink_has_control(e->valuestring)) {
                sink_errors_add(errs, epath,
                                uuid ? "expected a UUID"
                                     : "expected a non-empty string without control characters");
                continue;
            }
            c->lists[i][c->nlists[i]++] = strdup(e->valuestring);
        }
    }
}

static void *century_configure(const cJSON *src, const char *path, sink_errors_t *errs)
{
    century_conf_t *c = calloc(1, sizeof(*c));
    char sub[256];
    long long v;
    const char *key = NULL;
    size_t before = errs->count;

    if (c == NULL) {
        sink_errors_add(errs, path, "out of memory");
        return NULL;
    }
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(src, "auth");
    sink_conf_path(sub, sizeof(sub), path, "auth");
    if (!cJSON_IsObject(auth)) {
        sink_errors_add(errs, sub, "required, expected an object with api_key");
    } else {
        sink_conf_check_keys(auth, sub, auth_keys, errs);
        /* It goes into the x-api-key header line. */
        if (sink_conf_request_string(auth, sub, "api_key", true, NULL, &key, errs) == 0 && key)
            c->api_key = strdup(key);
    }
    if (sink_conf_int(src, path, "completed_lookback_s", false, CENTURY_DEFAULT_LOOKBACK_S, 0,
                      10LL * 366 * 24 * 3600, &v, errs) == 0)
        c->lookback_s = v;
    const cJSON *filters = cJSON_GetObjectItemCaseSensitive(src, "filters");
    if (filters)
        configure_filters(c, filters, path, errs);
    c->scan = provider_scan_spec(&(page_scan_paths_t){.records = "data",
                                                      .id = "sessionId",
                                                      .status = "status",
                                                      .fields = {"pagination.nextCursor"}},
                                 path, errs);
    if (errs->count != before) {
        century_free_config(c);
        return NULL;
    }
    return c;
}

/* ---- one poll ---- */

enum { LIST_IN_PROGRESS, LIST_COMPLETED, LIST_DONE };

typedef struct century_poll {
    const conf_source_t *src;
    const century_conf_t *conf;
    int64_t now_s;
    int list;
    int pages;
    char *cursor; /* NULL: first page of the list */
} century_poll_t;

static void *century_poll_begin(const conf_source_t *src, int64_t now_s)
{
    century_poll_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->src = src;
    p->conf = src->pconf;
    p->now_s = now_s;
    p->list = LIST_IN_PROGRESS;
    return p;
}

static void century_poll_free(void *poll)
{
    century_poll_t *p = poll;
    if (p == NULL)
        return;
    free(p->cursor);
    free(p);
}

static void iso8601(long long secs, char *out, size_t n)
{
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

static int add_date_filters(century_poll_t *p, char *url, size_t n)
{
    const century_conf_t *c = p->conf;
    int skip_lower = 0;
    char name[32];

    if (p->list == LIST_COMPLETED && c->lookback_s > 0) {
        long long bound = p->now_s - c->lookback_s;
        long long user = c->date[OP_GT]    ? c->date_s[OP_GT]
                         : c->date[OP_GTE] ? c->date_s[OP_GTE]
                                           : -1;
        /* gt and gte are exclusive: keep the later of the two bounds. */
        if (user < bound) {
            char iso[40];
            iso8601(bound, iso, sizeof(iso));
            if (provider_url_add(url, n, "startDate[gt]", iso) != 0)
                return -1;
            skip_lower = 1;
        }
    }
    for (int op = 0; op < OP_COUNT; op++) {
        if (c->date[op] == NULL || (skip_lower && (op == OP_GT || op == OP_GTE)))
            continue;
        snprintf(name, sizeof(name), "startDate[%s]", date_ops[op]);
        if (provider_url_add(url, n, name, c->date[op]) != 0)
            return -1;
    }
    return 0;
}

static int century_next_request(void *poll, provider_request_t *req, char *err, size_t errlen)
{
    century_poll_t *p = poll;
    const century_conf_t *c = p->conf;
    char limit[16];

    if (p->list == LIST_DONE)
        return 0;
    if (p->pages >= PROVIDER_MAX_PAGES) {
        snprintf(err, errlen, "more than %d pages in one poll", PROVIDER_MAX_PAGES);
        return -1;
    }
    const char *path = p->list == LIST_IN_PROGRESS ? "/smart-ia/sessions/in-progress"
                                                   : "/smart-ia/sessions/completed";
    memset(req, 0, sizeof(*req));
    snprintf(req->label, sizeof(req->label), "%s", path);
    int n = snprintf(req->url, sizeof(req->url), "%s%s", p->src->base_url, path);
    if (n < 0 || (size_t)n >= sizeof(req->url))
        goto toolong;
    snprintf(limit, sizeof(limit), "%d", p->src->page_size);
    if (provider_url_add(req->url, sizeof(req->url), "limit", limit) != 0)
        goto toolong;
    if (p->cursor && provider_url_add(req->url, sizeof(req->url), "cursor", p->cursor) != 0)
        goto toolong;
    if (add_date_filters(p, req->url, sizeof(req->url)) != 0)
        goto toolong;
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < c->nlists[i]; j++) {
            if (provider_url_add(req->url, sizeof(req->url), list_filters[i], c->lists[i][j]) != 0)
                goto toolong;
        }
    }
    if (provider_add_header(req, "x-api-key", c->api_key) != 0 ||
        provider_add_header(req, "Accept", "application/json") != 0) {
        snprintf(err, errlen, "request header too long or holding a control character");
        return -1;
    }
    p->pages++;
    return 1;
toolong:
    snprintf(err, errlen, "request URL longer than %d bytes", PROVIDER_URL_MAX);
    return -1;
}

static int century_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    const provider_emit_t *e = opaque;
    if (rec->id.kind != PAGE_SCAN_STRING || rec->status.kind != PAGE_SCAN_STRING) {
        snprintf(err, errlen, "data[%zu] lacks a string \"sessionId\" or \"status\"", rec->index);
        return -1;
    }
    /* An id or status too long for its buffer is "": the engine refuses it
     * with its own bound, as it refused the whole text. */
    return e->fn(e->opaque, rec->id.text, rec->id.len, rec->status.text, rec->status.len, rec->span,
                 rec->len, err, errlen);
}

/*
 * Records reach fn as the scan meets them, before the page is known to be
 * whole: a page that fails after that fails the poll, and the engine drops
 * the cycle with everything observed in it (nothing of it is published).
 */
static int century_handle_page(void *poll, const http_response_t *resp, provider_record_fn fn,
                               void *opaque, char *err, size_t errlen)
{
    century_poll_t *p = poll;
    char cursor[CENTURY_CURSOR_MAX + 1];
    page_scan_result_t res = {.fields[0] = {.text = cursor, .cap = sizeof(cursor)}};
    provider_emit_t e = {fn, opaque};
    page_scan_rc_t rc =
        page_scan(p->conf->scan, resp->body, resp->len, century_record, &e, &res, err, errlen);
    if (rc != PAGE_SCAN_OK && rc != PAGE_SCAN_E_RECORD)
        return -1;
    /* Without pagination we cannot know the list ended: failing is the only
     * answer that cannot produce a false cancellation. Checked ahead of the
     * records' own failures, as a page without it always failed first. */
    const page_scan_value_t *next = &res.fields[0];
    if (next->kind != PAGE_SCAN_NULL && next->kind != PAGE_SCAN_STRING) {
        snprintf(err, errlen, "page has no \"pagination.nextCursor\" (string or null)");
        return -1;
    }
    if (rc != PAGE_SCAN_OK)
        return -1;
    if (next->kind == PAGE_SCAN_STRING && (next->too_long || next->len > 0)) {
        if (next->too_long) {
            snprintf(err, errlen, "nextCursor longer than %d bytes", CENTURY_CURSOR_MAX);
            return -1;
        }
        if (p->cursor && strcmp(p->cursor, cursor) == 0) {
            snprintf(err, errlen, "nextCursor repeats the cursor just sent (a paging loop)");
            return -1;
        }
        char *dup = strdup(cursor);
        if (dup == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(p->cursor);
        p->cursor = dup;
    } else {
        free(p->cursor);
        p->cursor = NULL;
        p->list++;
    }
    return 0;
}

const provider_ops_t provider_century = {
    .name = "century_smart_ia",
    .statuses = century_statuses,
    .keys = century_keys,
    .default_page_size = CENTURY_MAX_LIMIT,
    .max_page_size = CENTURY_MAX_LIMIT,
    .configure = century_configure,
    .free_config = century_free_config,
    .poll_begin = century_poll_begin,
    .next_request = century_next_request,
    .handle_page = century_handle_page,
    .poll_free = century_poll_free,
};
