/*
 * quiz_jsonapi: the JSON:API quiz sessions adapter (seed 002).
 *
 * One list, GET /api/v3/quiz/sessions, paged by page[number] (from 1) and
 * page[size]. The seed documents no total, no links and no cursor, so the
 * list ends on the first page holding fewer records than page[size] (an
 * empty page included). That rule is only sound when the server honours
 * page[size]: a server capping it below ours would end every poll after its
 * first page, so max_page_size is the seed's default (1000), nothing more.
 *
 * Offset pages shift when a session is deleted between two of our requests:
 * the session that slid onto an already read page is missed by that poll.
 * vanish_grace (default 2) absorbs it: a single miss is never reported.
 *
 * The credential is a header whose name the user configures
 * (auth.header / auth.value); the value is a secret and appears only in the
 * request's headers, never in an error, a log line or the request label.
 */
#include "config.h"
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUIZ_PATH "/api/v3/quiz/sessions"
/* The seed: page[size] "default to 1000". It documents no maximum. */
#define QUIZ_PAGE_SIZE 1000
/* Bounds on configured strings; a URL must still fit PROVIDER_URL_MAX. */
#define QUIZ_HEADER_NAME_MAX 64
#define QUIZ_VALUE_MAX 512
/* A session id longer than this is not one (the seed's ids are strings). */
#define QUIZ_ID_MAX 256

static const char *const quiz_keys[] = {"sort", NULL};
static const char *const auth_keys[] = {"header", "value", NULL};
/* The seed's filter object, in its order (person_id is listed twice). */
static const char *const filter_names[] = {
    "id", "person_id", "created_at", "name", "status", "expires_at", "score", "name__match", NULL};

static const provider_status_t quiz_statuses[] = {
    {"pending", DIFF_STATE_PENDING},     {"created", DIFF_STATE_PENDING},
    {"started", DIFF_STATE_ACTIVE},      {"in_progress", DIFF_STATE_ACTIVE},
    {"active", DIFF_STATE_ACTIVE},       {"completed", DIFF_STATE_COMPLETED},
    {"finished", DIFF_STATE_COMPLETED},  {"submitted", DIFF_STATE_COMPLETED},
    {"cancelled", DIFF_STATE_CANCELLED}, {"canceled", DIFF_STATE_CANCELLED},
    {"expired", DIFF_STATE_CANCELLED},   {NULL, DIFF_STATE_NONE},
};

typedef struct quiz_filter {
    char *name;  /* sent as filter[name] */
    char *value; /* stringified */
} quiz_filter_t;

typedef struct quiz_conf {
    char *header; /* auth.header */
    char *value;  /* auth.value: secret */
    char *sort;   /* NULL: not sent */
    quiz_filter_t *filters;
    size_t nfilters;
    page_scan_spec_t *scan; /* the page's paths, split once */
} quiz_conf_t;

/* ---- configuration ---- */

static void quiz_free_config(void *p)
{
    quiz_conf_t *c = p;
    if (c == NULL)
        return;
    free(c->header);
    if (c->value) {
        /* Not a guarantee against the optimiser, but the usual courtesy. */
        memset(c->value, 0, strlen(c->value));
        free(c->value);
    }
    free(c->sort);
    for (size_t i = 0; i < c->nfilters; i++) {
        free(c->filters[i].name);
        free(c->filters[i].value);
    }
    free(c->filters);
    page_scan_spec_free(c->scan);
    free(c);
}

static int known_filter(const char *name)
{
    for (size_t i = 0; filter_names[i]; i++) {
        if (strcmp(filter_names[i], name) == 0)
            return 1;
    }
    return 0;
}

static void configure_filters(quiz_conf_t *c, const cJSON *filters, const char *path,
                              sink_errors_t *errs)
{
    char fpath[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    sink_conf_path(fpath, sizeof(fpath), path, "filters");
    if (!cJSON_IsObject(filters)) {
        sink_errors_add(errs, fpath, "expected an object of filter name -> value");
        return;
    }
    int n = cJSON_GetArraySize(filters);
    if (n == 0)
        return;
    c->filters = calloc((size_t)n, sizeof(*c->filters));
    if (c->filters == NULL) {
        sink_errors_add(errs, fpath, "out of memory");
        return;
    }
    for (const cJSON *e = filters->child; e; e = e->next) {
        char buf[QUIZ_VALUE_MAX + 1];
        sink_conf_path(vpath, sizeof(vpath), fpath, e->string);
        if (!known_filter(e->string)) {
            sink_errors_add(errs, vpath,
                            "unknown filter, expected one of id, person_id, created_at, name, "
                            "status, expires_at, score, name__match");
            continue;
        }
        if (provider_value_text(e, QUIZ_VALUE_MAX, buf, sizeof(buf)) != 0) {
            sink_errors_add(errs, vpath,
                            "expected a non-empty string (at most %d bytes, no control "
                            "characters), a number or a boolean",
                            QUIZ_VALUE_MAX);
            continue;
        }
        quiz_filter_t *f = &c->filters[c->nfilters];
        f->name = strdup(e->string);
        f->value = strdup(buf);
        if (f->name == NULL || f->value == NULL) {
            free(f->name);
            free(f->value);
            sink_errors_add(errs, vpath, "out of memory");
            continue;
        }
        c->nfilters++;
    }
}

static void configure_auth(quiz_conf_t *c, const cJSON *src, const char *path, sink_errors_t *errs)
{
    char sub[SINK_PATH_MAX], vpath[SINK_PATH_MAX];
    const char *header = NULL, *value = NULL;
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(src, "auth");

    sink_conf_path(sub, sizeof(sub), path, "auth");
    if (!cJSON_IsObject(auth)) {
        sink_errors_add(errs, sub, "required, expected an object with header and value");
        return;
    }
    sink_conf_check_keys(auth, sub, auth_keys, errs);
    if (sink_conf_string(auth, sub, "header", true, NULL, &header, errs) == 0 && header) {
        sink_conf_path(vpath, sizeof(vpath), sub, "header");
        if (!provider_is_token(header) || strlen(header) > QUIZ_HEADER_NAME_MAX)
            sink_errors_add(errs, vpath,
                            "expected an HTTP header name (RFC 7230 token: letters, digits and "
                            "!#$%%&'*+-.^_`|~), at most %d bytes",
                            QUIZ_HEADER_NAME_MAX);
        else
            c->header = strdup(header);
    }
    /* The value is a secret: the messages below describe it, never quote it. */
    if (sink_conf_request_string(auth, sub, "value", true, NULL, &value, errs) == 0 && value) {
        sink_conf_path(vpath, sizeof(vpath), sub, "value");
        /* "Name: value" must fit one request header line. */
        size_t room = HTTP_HEADER_MAX - 1 - 2 - (c->header ? strlen(c->header) : 0);
        if (strlen(value) > room)
            sink_errors_add(errs, vpath, "longer than %zu bytes", room);
        else
            c->value = strdup(value);
    }
}

static void *quiz_configure(const cJSON *src, const char *path, sink_errors_t *errs)
{
    quiz_conf_t *c = calloc(1, sizeof(*c));
    size_t before = errs->count;
    const char *sort = NULL;
    char sub[SINK_PATH_MAX];

    if (c == NULL) {
        sink_errors_add(errs, path, "out of memory");
        return NULL;
    }
    configure_auth(c, src, path, errs);
    if (sink_conf_request_string(src, path, "sort", false, NULL, &sort, errs) == 0 && sort) {
        sink_conf_path(sub, sizeof(sub), path, "sort");
        if (strlen(sort) > QUIZ_VALUE_MAX)
            sink_errors_add(errs, sub,
                            "expected a non-empty comma-separated list of fields (\"-\" for "
                            "descending), at most %d bytes",
                            QUIZ_VALUE_MAX);
        else
            c->sort = strdup(sort);
    }
    const cJSON *filters = cJSON_GetObjectItemCaseSensitive(src, "filters");
    if (filters)
        configure_filters(c, filters, path, errs);
    /* JSON:API's id is a string; the seed also lists attributes.id. */
    c->scan = provider_scan_spec(&(page_scan_paths_t){.records = "data",
                                                      .id = "id",
                                                      .status = "attributes.status",
                                                      .alt_id = "attributes.id"},
                                 path, errs);
    if (errs->count != before) {
        quiz_free_config(c);
        return NULL;
    }
    return c;
}

/* ---- one poll ---- */

typedef struct quiz_poll {
    const conf_source_t *src;
    const quiz_conf_t *conf;
    int page;  /* the page[number] of the next request */
    int pages; /* requests made */
    int done;
} quiz_poll_t;

static void *quiz_poll_begin(const conf_source_t *src, int64_t now_s)
{
    (void)now_s;
    quiz_poll_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->src = src;
    p->conf = src->pconf;
    p->page = 1;
    return p;
}

static void quiz_poll_free(void *poll)
{
    quiz_poll_t *p = poll;
    if (p == NULL)
        return;
    free(p);
}

static int quiz_next_request(void *poll, provider_request_t *req, char *err, size_t errlen)
{
    quiz_poll_t *p = poll;
    const quiz_conf_t *c = p->conf;
    char num[16], size[16], name[64];

    if (p->done)
        return 0;
    if (p->pages >= PROVIDER_MAX_PAGES) {
        snprintf(err, errlen, "more than %d pages in one poll", PROVIDER_MAX_PAGES);
        return -1;
    }
    memset(req, 0, sizeof(*req));
    snprintf(req->label, sizeof(req->label), "%s", QUIZ_PATH);
    int n = snprintf(req->url, sizeof(req->url), "%s%s", p->src->base_url, QUIZ_PATH);
    if (n < 0 || (size_t)n >= sizeof(req->url))
        goto toolong;
    snprintf(num, sizeof(num), "%d", p->page);
    snprintf(size, sizeof(size), "%d", p->src->page_size);
    if (provider_url_add(req->url, sizeof(req->url), "page[number]", num) != 0 ||
        provider_url_add(req->url, sizeof(req->url), "page[size]", size) != 0)
        goto toolong;
    if (c->sort && provider_url_add(req->url, sizeof(req->url), "sort", c->sort) != 0)
        goto toolong;
    for (size_t i = 0; i < c->nfilters; i++) {
        snprintf(name, sizeof(name), "filter[%s]", c->filters[i].name);
        if (provider_url_add(req->url, sizeof(req->url), name, c->filters[i].value) != 0)
            goto toolong;
    }
    if (provider_add_header(req, c->header, c->value) != 0 ||
        provider_add_header(req, "Accept", "application/vnd.api+json") != 0) {
        snprintf(err, errlen, "request header too long or holding a control character");
        return -1;
    }
    p->pages++;
    return 1;
toolong:
    snprintf(err, errlen, "request URL longer than %d bytes", PROVIDER_URL_MAX);
    return -1;
}

/*
 * One resource: the session id is its "id" (JSON:API makes it a string; a
 * number is taken as its decimal text), else attributes.id.
 */
static int quiz_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    const provider_emit_t *e = opaque;
    char id[QUIZ_ID_MAX + 1];
    if (rec->kind != PAGE_SCAN_OBJECT) {
        snprintf(err, errlen, "data[%zu] is not a resource object", rec->index);
        return -1;
    }
    const page_scan_value_t *idv =
        rec->id.kind == PAGE_SCAN_ABSENT || rec->id.kind == PAGE_SCAN_NULL ? &rec->alt_id
                                                                           : &rec->id;
    if (page_scan_id_text(idv, id, sizeof(id)) != 0) {
        snprintf(err, errlen,
                 "data[%zu] lacks an \"id\" (a non-empty string of at most %d bytes, or an "
                 "integer)",
                 rec->index, QUIZ_ID_MAX);
        return -1;
    }
    if (rec->status.kind != PAGE_SCAN_STRING) {
        snprintf(err, errlen, "data[%zu] lacks a string \"attributes.status\"", rec->index);
        return -1;
    }
    /* the id may be a number's text made here: measured, a few bytes */
    return e->fn(e->opaque, id, strlen(id), rec->status.text, rec->status.len, rec->span, rec->len,
                 err, errlen);
}

/* Records reach fn before the page is read to its end: a page that fails
 * fails the poll, whose cycle the engine drops with all it observed. */
static int quiz_handle_page(void *poll, const http_response_t *resp, provider_record_fn fn,
                            void *opaque, char *err, size_t errlen)
{
    quiz_poll_t *p = poll;
    page_scan_result_t res = {0};
    provider_emit_t e = {fn, opaque};
    if (page_scan(p->conf->scan, resp->body, resp->len, quiz_record, &e, &res, err, errlen) !=
        PAGE_SCAN_OK)
        return -1;
    /* Fewer than asked: the last page. A page larger than asked means the
     * server pages by its own size; the next number still follows on. */
    if (res.records < (size_t)p->src->page_size)
        p->done = 1;
    else
        p->page++;
    return 0;
}

const provider_ops_t provider_quiz_jsonapi = {
    .name = "quiz_jsonapi",
    .statuses = quiz_statuses,
    .keys = quiz_keys,
    .default_page_size = QUIZ_PAGE_SIZE,
    .max_page_size = QUIZ_PAGE_SIZE,
    .configure = quiz_configure,
    .free_config = quiz_free_config,
    .poll_begin = quiz_poll_begin,
    .next_request = quiz_next_request,
    .handle_page = quiz_handle_page,
    .poll_free = quiz_poll_free,
};
