/*
 * status: the operator's view of every source and sink, from Redis alone
 * (see status.h).
 */
#include "status.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "clock.h"
#include "redis_conn.h"
#include "store.h"

#define STATUS_REDIS_TIMEOUT_MS 5000
/* Bytes of one table cell: a host name longer than this is cut, with "...". */
#define STATUS_CELL_MAX 64
/* Bytes of a disabled sink's reason kept (the outbox writes at most 256). */
#define STATUS_REASON_MAX 320
/* "2026-12-01T16:02:03Z" and the NUL. */
#define STATUS_TIME_LEN 21

enum { COL_SOURCE, COL_COMMIT, COL_SESSIONS, COL_HOLDER, COL_TTL, COL_POLL, COL_COUNT };
static const char *const col_titles[COL_COUNT] = {"SOURCE",       "LAST COMMIT", "SESSIONS",
                                                  "LEASE HOLDER", "TTL",         "LAST POLL"};

enum { SCOL_SINK, SCOL_TYPE, SCOL_OUTBOX, SCOL_DEAD, SCOL_DISABLED, SCOL_COUNT };
/* Columns of the widest table. */
#define STATUS_COLS_MAX 6
static const char *const scol_titles[SCOL_COUNT] = {"SINK", "TYPE", "OUTBOX", "DEAD LETTERS",
                                                    "DISABLED"};

typedef struct row {
    const char *name;
    const conf_source_t *conf; /* NULL: found in Redis, not configured */
    store_source_status_t st;
} row_t;

typedef struct sink_row {
    const conf_sink_t *conf;
    bool outbox; /* an outbox sink: depth and disabled flag are its */
    size_t depth, dead;
    bool disabled;
    char why[STATUS_REASON_MAX];
} sink_row_t;

typedef struct status {
    const conf_t *conf;
    const status_options_t *opt;
    store_t *store;
    int64_t now_ms;
    row_t *rows;
    size_t nrows, caprows;
    bool truncated; /* more unconfigured sources than STATUS_MAX_UNCONFIGURED */
    size_t unconfigured;
    sink_row_t *sinks;
    size_t nsinks;
    char endpoint[REDIS_ENDPOINT_MAX];
    int db;
} status_t;

/* ---- reading ---- */

static int row_add(status_t *s, const char *name, const conf_source_t *conf)
{
    if (s->nrows == s->caprows) {
        size_t cap = s->caprows ? 2 * s->caprows : 64;
        row_t *r = realloc(s->rows, cap * sizeof(*r));
        if (r == NULL)
            return -1;
        s->rows = r;
        s->caprows = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return -1;
    s->rows[s->nrows++] = (row_t){.name = copy, .conf = conf};
    return 0;
}

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const row_t *)a)->name, ((const row_t *)b)->name);
}

/* store_scan_sources()'s callback: a source of Redis the configuration does not name. */
static int on_found(void *opaque, const char *name)
{
    status_t *s = opaque;

    if (conf_find_source(s->conf, name) != NULL)
        return 0;
    if (s->unconfigured == STATUS_MAX_UNCONFIGURED) {
        s->truncated = true;
        return 1;
    }
    if (row_add(s, name, NULL) != 0)
        return 1; /* out of memory: shown as cut */
    s->unconfigured++;
    return 0;
}

/* The unconfigured rows sorted, each once (SCAN may give a name twice). */
static void unconfigured_unique(status_t *s, size_t first)
{
    size_t n = s->nrows - first, out = 0;
    row_t *r = s->rows + first;

    qsort(r, n, sizeof(*r), row_cmp);
    for (size_t i = 0; i < n; i++) {
        if (out > 0 && strcmp(r[out - 1].name, r[i].name) == 0) {
            free((char *)r[i].name);
            continue;
        }
        r[out++] = r[i];
    }
    s->nrows = first + out;
    s->unconfigured = out;
}

/* The rows: the configured sources (or the one asked for), then Redis's others. */
static status_result_t rows_collect(status_t *s, char *err, size_t errlen)
{
    const char *only = s->opt->source;

    for (size_t i = 0; i < s->conf->nsources; i++) {
        const conf_source_t *cs = &s->conf->sources[i];
        if ((only == NULL || strcmp(only, cs->name) == 0) && row_add(s, cs->name, cs) != 0)
            goto nomem;
    }
    if (only != NULL && s->nrows == 1)
        return STATUS_OK;
    if (only != NULL) { /* not configured: Redis may still hold it (rows_read() looks) */
        size_t len = strlen(only);
        if (len == 0 || len > CONF_NAME_MAX ||
            strspn(only, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len)
            return STATUS_NO_SUCH_SOURCE;
        if (row_add(s, only, NULL) != 0)
            goto nomem;
        return STATUS_OK;
    }
    size_t first = s->nrows;
    if (store_scan_sources(s->store, on_found, s, err, errlen) != 0)
        return STATUS_REDIS_FAILED;
    unconfigured_unique(s, first);
    return STATUS_OK;
nomem:
    snprintf(err, errlen, "out of memory");
    return STATUS_REDIS_FAILED;
}

static status_result_t rows_read(status_t *s, char *err, size_t errlen)
{
    const char *names[STORE_BATCH];
    store_source_status_t *out = malloc(STORE_BATCH * sizeof(*out));

    if (out == NULL) {
        snprintf(err, errlen, "out of memory");
        return STATUS_REDIS_FAILED;
    }
    for (size_t at = 0; at < s->nrows; at += STORE_BATCH) {
        size_t n = s->nrows - at < STORE_BATCH ? s->nrows - at : STORE_BATCH;
        for (size_t i = 0; i < n; i++)
            names[i] = s->rows[at + i].name;
        if (store_sources_status(s->store, names, n, out, err, errlen) != 0) {
            free(out);
            return STATUS_REDIS_FAILED;
        }
        for (size_t i = 0; i < n; i++)
            s->rows[at + i].st = out[i];
    }
    free(out);
    /* --source of a name neither configured nor known to Redis: a typo */
    if (s->opt->source != NULL && s->nrows == 1 && s->rows[0].conf == NULL) {
        const store_source_status_t *st = &s->rows[0].st;
        if (!st->committed && !st->polled && !st->holder[0])
            return STATUS_NO_SUCH_SOURCE;
    }
    return STATUS_OK;
}

/* Whether sink k routes source (any event type): shown with --source. */
static bool sink_routes(const conf_sink_t *k, const char *source)
{
    for (int t = 0; t < DIFF_EV_COUNT; t++) {
        if (conf_sink_routes(k, source, (diff_event_type_t)t))
            return true;
    }
    return false;
}

static status_result_t sinks_read(status_t *s, char *err, size_t errlen)
{
    s->sinks = calloc(s->conf->nsinks ? s->conf->nsinks : 1, sizeof(*s->sinks));
    if (s->sinks == NULL) {
        snprintf(err, errlen, "out of memory");
        return STATUS_REDIS_FAILED;
    }
    for (size_t i = 0; i < s->conf->nsinks; i++) {
        const conf_sink_t *k = &s->conf->sinks[i];
        sink_row_t *r = &s->sinks[s->nsinks];

        if (s->opt->source != NULL && !sink_routes(k, s->opt->source))
            continue;
        r->conf = k;
        r->outbox = (k->type->flags & SINK_F_OUTBOX) != 0;
        if (store_dlq_count(s->store, k->name, &r->dead, err, errlen) != 0 ||
            (r->outbox && (store_outbox_count(s->store, k->name, &r->depth, err, errlen) != 0 ||
                           store_sink_disabled(s->store, k->name, &r->disabled, r->why,
                                               sizeof(r->why), err, errlen) != 0)))
            return STATUS_REDIS_FAILED;
        s->nsinks++;
    }
    return STATUS_OK;
}

/* ---- shown ---- */

static void format_time(int64_t ms, char out[STATUS_TIME_LEN])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL || strftime(out, STATUS_TIME_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, STATUS_TIME_LEN, "?");
}

/* "4s", "3m", "5h", "2d": how long ago, as a person reads it. */
static void format_age(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms > 0 ? ms / 1000 : 0;

    if (s < 120)
        snprintf(out, outlen, "%" PRId64 "s", s);
    else if (s < 120 * 60)
        snprintf(out, outlen, "%" PRId64 "m", s / 60);
    else if (s < 48 * 3600)
        snprintf(out, outlen, "%" PRId64 "h", s / 3600);
    else
        snprintf(out, outlen, "%" PRId64 "d", s / 86400);
}

static void format_holder(const store_source_status_t *st, char *out, size_t outlen)
{
    if (!st->holder[0])
        snprintf(out, outlen, "-");
    else if (st->holder_info.known)
        snprintf(out, outlen, "%s pid %ld", st->holder_info.host, st->holder_info.pid);
    else /* an older replica, or one that stopped beating: its token is all there is */
        snprintf(out, outlen, "token %.8s...", st->holder);
}

static void cell_fit(char *cell)
{
    if (strlen(cell) >= STATUS_CELL_MAX - 1)
        memcpy(cell + STATUS_CELL_MAX - 4, "...", 4);
}

static void row_cells(const status_t *s, const row_t *r, char cells[COL_COUNT][STATUS_CELL_MAX])
{
    const store_source_status_t *st = &r->st;
    char when[STATUS_TIME_LEN], age[16];

    snprintf(cells[COL_SOURCE], STATUS_CELL_MAX, "%s%s", r->name, r->conf ? "" : " *");
    if (st->committed) {
        format_time(st->committed_ms, when);
        format_age(s->now_ms - st->committed_ms, age, sizeof(age));
        snprintf(cells[COL_COMMIT], STATUS_CELL_MAX, "cycle %" PRIu64 ", %s (%s ago)", st->cycle,
                 when, age);
        snprintf(cells[COL_SESSIONS], STATUS_CELL_MAX, "%zu", st->sessions);
    } else {
        snprintf(cells[COL_COMMIT], STATUS_CELL_MAX, "never");
        snprintf(cells[COL_SESSIONS], STATUS_CELL_MAX, "-");
    }
    format_holder(st, cells[COL_HOLDER], STATUS_CELL_MAX);
    if (st->holder[0] && st->lease_ttl_ms >= 0)
        snprintf(cells[COL_TTL], STATUS_CELL_MAX, "%.1fs", (double)st->lease_ttl_ms / 1000.0);
    else
        snprintf(cells[COL_TTL], STATUS_CELL_MAX, "-");
    if (st->polled) {
        format_age(s->now_ms - st->poll_ms, age, sizeof(age));
        snprintf(cells[COL_POLL], STATUS_CELL_MAX, "%s %s ago, %zu event%s",
                 st->poll_ok ? "ok" : "FAILED", age, st->poll_events,
                 st->poll_events == 1 ? "" : "s");
    } else {
        snprintf(cells[COL_POLL], STATUS_CELL_MAX, "-");
    }
    for (int c = 0; c < COL_COUNT; c++)
        cell_fit(cells[c]);
}

static void sink_cells(const sink_row_t *k, char cells[SCOL_COUNT][STATUS_CELL_MAX])
{
    snprintf(cells[SCOL_SINK], STATUS_CELL_MAX, "%s", k->conf->name);
    snprintf(cells[SCOL_TYPE], STATUS_CELL_MAX, "%s", k->conf->type->name);
    if (k->outbox)
        snprintf(cells[SCOL_OUTBOX], STATUS_CELL_MAX, "%zu", k->depth);
    else
        snprintf(cells[SCOL_OUTBOX], STATUS_CELL_MAX, "-");
    snprintf(cells[SCOL_DEAD], STATUS_CELL_MAX, "%zu", k->dead);
    if (!k->outbox)
        snprintf(cells[SCOL_DISABLED], STATUS_CELL_MAX, "-");
    else if (k->disabled)
        snprintf(cells[SCOL_DISABLED], STATUS_CELL_MAX, "yes");
    else
        snprintf(cells[SCOL_DISABLED], STATUS_CELL_MAX, "no");
    for (int c = 0; c < SCOL_COUNT; c++)
        cell_fit(cells[c]);
}

/* One table: a title row and n rows of ncols cells, columns as wide as their widest cell. */
static void print_table(FILE *out, const char *const *titles, int ncols, const char *cells,
                        size_t n)
{
    size_t width[STATUS_COLS_MAX] = {0};
#define CELL(i, c) (cells + ((i) * (size_t)ncols + (size_t)(c)) * STATUS_CELL_MAX)

    for (int c = 0; c < ncols; c++) {
        width[c] = strlen(titles[c]);
        for (size_t i = 0; i < n; i++) {
            size_t w = strlen(CELL(i, c));
            width[c] = w > width[c] ? w : width[c];
        }
    }
    for (size_t i = 0; i <= n; i++) {
        for (int c = 0; c < ncols; c++) {
            const char *text = i == 0 ? titles[c] : CELL(i - 1, c);
            if (c + 1 == ncols)
                fprintf(out, "%s\n", text); /* no trailing spaces */
            else
                fprintf(out, "%-*s  ", (int)width[c], text);
        }
    }
#undef CELL
}

static int print_text(const status_t *s, FILE *out)
{
    char(*cells)[COL_COUNT][STATUS_CELL_MAX] = calloc(s->nrows ? s->nrows : 1, sizeof(*cells));
    char(*scells)[SCOL_COUNT][STATUS_CELL_MAX] = calloc(s->nsinks ? s->nsinks : 1, sizeof(*scells));
    char now[STATUS_TIME_LEN];
    int failed = 0;

    if (cells == NULL || scells == NULL) {
        free(cells);
        free(scells);
        return -1;
    }
    format_time(s->now_ms, now);
    fprintf(out, "redis %s db %d, prefix %s, at %s\n\n", s->endpoint, s->db, s->conf->redis_prefix,
            now);
    for (size_t i = 0; i < s->nrows; i++) {
        row_cells(s, &s->rows[i], cells[i]);
        failed += s->rows[i].st.polled && !s->rows[i].st.poll_ok;
    }
    print_table(out, col_titles, COL_COUNT, &cells[0][0][0], s->nrows);
    if (s->unconfigured > 0)
        fprintf(out, "* not in the configuration: found in redis (a removed source's state)\n");
    if (s->truncated)
        fprintf(out, "  ... and more not shown (at most %d)\n", STATUS_MAX_UNCONFIGURED);
    if (failed > 0) {
        fprintf(out, "\nLast poll failed:\n");
        for (size_t i = 0; i < s->nrows; i++) {
            const store_source_status_t *st = &s->rows[i].st;
            if (st->polled && !st->poll_ok)
                fprintf(out, "  %s: %s\n", s->rows[i].name, st->poll_error);
        }
    }
    if (s->nsinks > 0) {
        fprintf(out, "\n");
        for (size_t i = 0; i < s->nsinks; i++)
            sink_cells(&s->sinks[i], scells[i]);
        print_table(out, scol_titles, SCOL_COUNT, &scells[0][0][0], s->nsinks);
    }
    for (size_t i = 0, n = 0; i < s->nsinks; i++) {
        if (s->sinks[i].disabled)
            fprintf(out, "%s  %s: %s\n", n++ ? "" : "\nDisabled (dlq replay re-enables):\n",
                    s->sinks[i].conf->name, s->sinks[i].why);
    }
    free(cells);
    free(scells);
    return 0;
}

static cJSON *replica_json(const store_replica_info_t *r)
{
    cJSON *o;

    if (!r->known)
        return cJSON_CreateNull();
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "host", r->host);
    cJSON_AddNumberToObject(o, "pid", (double)r->pid);
    cJSON_AddStringToObject(o, "version", r->version);
    cJSON_AddNumberToObject(o, "started_at", (double)r->started_ms);
    return o;
}

static cJSON *row_json(const status_t *s, const row_t *r)
{
    const store_source_status_t *st = &r->st;
    cJSON *o = cJSON_CreateObject(), *x;

    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddBoolToObject(o, "configured", r->conf != NULL);
    if (r->conf != NULL)
        cJSON_AddStringToObject(o, "provider", r->conf->provider->name);
    if (st->committed) {
        x = cJSON_AddObjectToObject(o, "last_commit");
        cJSON_AddNumberToObject(x, "cycle", (double)st->cycle);
        cJSON_AddNumberToObject(x, "at", (double)st->committed_ms);
        cJSON_AddNumberToObject(x, "age_s", (double)(s->now_ms - st->committed_ms) / 1000.0);
        cJSON_AddNumberToObject(o, "sessions", (double)st->sessions);
    } else {
        cJSON_AddNullToObject(o, "last_commit");
        cJSON_AddNullToObject(o, "sessions");
    }
    if (st->holder[0]) {
        x = cJSON_AddObjectToObject(o, "lease");
        cJSON_AddStringToObject(x, "holder", st->holder);
        cJSON_AddNumberToObject(x, "ttl_ms", (double)st->lease_ttl_ms);
        cJSON_AddItemToObject(x, "replica", replica_json(&st->holder_info));
    } else {
        cJSON_AddNullToObject(o, "lease");
    }
    if (st->polled) {
        x = cJSON_AddObjectToObject(o, "last_poll");
        cJSON_AddNumberToObject(x, "at", (double)st->poll_ms);
        cJSON_AddNumberToObject(x, "age_s", (double)(s->now_ms - st->poll_ms) / 1000.0);
        cJSON_AddStringToObject(x, "outcome", st->poll_ok ? "ok" : "failed");
        if (st->poll_ok)
            cJSON_AddNullToObject(x, "error");
        else
            cJSON_AddStringToObject(x, "error", st->poll_error);
        cJSON_AddNumberToObject(x, "events", (double)st->poll_events);
        cJSON_AddNumberToObject(x, "pages", (double)st->poll_pages);
        cJSON_AddStringToObject(x, "by", st->poll_replica);
        cJSON_AddItemToObject(x, "replica", replica_json(&st->poll_replica_info));
    } else {
        cJSON_AddNullToObject(o, "last_poll");
    }
    return o;
}

static cJSON *sink_json(const sink_row_t *k)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "name", k->conf->name);
    cJSON_AddStringToObject(o, "type", k->conf->type->name);
    cJSON_AddNumberToObject(o, "dead_letters", (double)k->dead);
    if (k->outbox) {
        cJSON_AddNumberToObject(o, "outbox", (double)k->depth);
        cJSON_AddBoolToObject(o, "disabled", k->disabled);
        if (k->disabled)
            cJSON_AddStringToObject(o, "disabled_reason", k->why);
        else
            cJSON_AddNullToObject(o, "disabled_reason");
    } else {
        cJSON_AddNullToObject(o, "outbox");
        cJSON_AddNullToObject(o, "disabled");
        cJSON_AddNullToObject(o, "disabled_reason");
    }
    return o;
}

static int print_json(const status_t *s, FILE *out)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *redis, *sources, *sinks;
    char *text;

    cJSON_AddNumberToObject(o, "at", (double)s->now_ms);
    redis = cJSON_AddObjectToObject(o, "redis");
    sources = cJSON_AddArrayToObject(o, "sources");
    cJSON_AddStringToObject(redis, "endpoint", s->endpoint);
    cJSON_AddNumberToObject(redis, "db", s->db);
    cJSON_AddStringToObject(redis, "prefix", s->conf->redis_prefix);
    for (size_t i = 0; i < s->nrows; i++)
        cJSON_AddItemToArray(sources, row_json(s, &s->rows[i]));
    cJSON_AddBoolToObject(o, "sources_truncated", s->truncated);
    sinks = cJSON_AddArrayToObject(o, "sinks");
    for (size_t i = 0; i < s->nsinks; i++)
        cJSON_AddItemToArray(sinks, sink_json(&s->sinks[i]));
    text = cJSON_PrintUnformatted(o); /* one line: for jq, grep and scripts */
    cJSON_Delete(o);
    if (text == NULL)
        return -1;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}

status_result_t status_run(const conf_t *conf, const status_options_t *opt, FILE *out, char *err,
                           size_t errlen)
{
    status_t s = {.conf = conf, .opt = opt};
    store_options_t so = {.url = conf->redis_url,
                          .prefix = conf->redis_prefix,
                          .timeout_ms = STATUS_REDIS_TIMEOUT_MS};
    redis_target_t target;
    status_result_t rc = STATUS_REDIS_FAILED;

    if (redis_url_parse(conf->redis_url, &target, err, errlen) != 0)
        return STATUS_REDIS_FAILED;
    snprintf(s.endpoint, sizeof(s.endpoint), "%s", target.endpoint);
    s.db = target.db;
    redis_target_clear(&target);
    s.store = store_new(&so, err, errlen);
    if (s.store == NULL)
        return STATUS_REDIS_FAILED;
    s.now_ms = clock_unix_ms();
    if ((rc = rows_collect(&s, err, errlen)) != STATUS_OK ||
        (rc = rows_read(&s, err, errlen)) != STATUS_OK ||
        (rc = sinks_read(&s, err, errlen)) != STATUS_OK)
        goto out;
    if ((opt->json ? print_json(&s, out) : print_text(&s, out)) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = STATUS_REDIS_FAILED;
    }
out:
    if (rc == STATUS_NO_SUCH_SOURCE)
        snprintf(err, errlen, "no source named \"%s\" in the configuration or in redis",
                 opt->source);
    for (size_t i = 0; i < s.nrows; i++)
        free((char *)s.rows[i].name);
    free(s.rows);
    free(s.sinks);
    store_free(s.store);
    return rc;
}
