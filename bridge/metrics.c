/*
 * metrics: the registry (see metrics.h).
 *
 * A family keeps its series in a chained hash table keyed by FNV-1a over
 * the label values; the table doubles when it holds as many series as
 * buckets, so a lookup walks one short chain on average. A series is one
 * allocation: the struct, the pointers to its label values, its histogram
 * bucket counts and the values' bytes.
 *
 * Histograms count per bucket (not cumulatively), so an observation
 * touches one counter; the render adds them up.
 */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"

/* Buckets of a new family's hash table (a power of two). */
#define TABLE_INITIAL 16
/* Room for a number as text: "-1.2345678901234567e-308" and the NUL. */
#define NUMBER_MAX 32
/* Integral values up to 2^53 are exact doubles: print them as integers. */
#define EXACT_INTEGER_MAX 9007199254740992.0

typedef enum metric_kind {
    KIND_COUNTER = 0,
    KIND_GAUGE,
    KIND_HISTOGRAM,
    KIND_REFUSALS, /* the counter of metrics_refusals(), computed at render */
} metric_kind_t;

static const char *const kind_names[] = {"counter", "gauge", "histogram", "counter"};

typedef struct series {
    struct series *chain; /* next in the same hash bucket */
    uint64_t hash;
    double value;     /* counters and gauges; the sum of a histogram */
    uint64_t count;   /* histograms: observations */
    uint64_t *counts; /* histograms: per bucket, +Inf last; in this allocation */
    const char *values[];
} series_t;

struct metric_family {
    struct metric_family *next; /* registration order */
    metric_kind_t kind;
    char *name;
    char *help;
    size_t nlabels;
    char *labels[METRICS_LABELS_MAX];
    size_t nbounds;
    double bounds[METRICS_BUCKETS_MAX];
    char le[METRICS_BUCKETS_MAX][NUMBER_MAX]; /* bounds as the le label prints them */

    pthread_mutex_t lock; /* everything below */
    series_t **table;
    size_t table_size; /* a power of two */
    size_t nseries;
    size_t cap;
    uint64_t refused;
};

struct metrics {
    pthread_mutex_t lock; /* the family list */
    metric_family_t *head, *tail;
};

/* The render's output: grows by doubling; failed once any append failed. */
typedef struct outbuf {
    char *p;
    size_t len, cap;
    bool failed;
} outbuf_t;

/* ---- names and values ---- */

static bool valid_name(const char *s, bool colons)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > METRICS_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || (colons && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const unsigned char *s)
{
    while (*s) {
        unsigned char c = *s;
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            s++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += n + 1;
    }
    return true;
}

/*
 * Formats v so that Prometheus parses back the same double: integers
 * exactly and without exponent, other values with the fewest digits that
 * round-trip.
 */
static void format_number(char *buf, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        snprintf(buf, n, "0"); /* not "-0" */
    } else if (v == floor(v) && fabs(v) <= EXACT_INTEGER_MAX) {
        snprintf(buf, n, "%.0f", v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, n, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
}

/* ---- the series table ---- */

/*
 * FNV-1a over the values, each followed by a 0xff byte (never in UTF-8),
 * so that ("ab", "c") and ("a", "bc") differ; then murmur3's finalizer,
 * because the table indexes with the low bits, and in FNV those depend on
 * the low bits of each byte only ("sa" and "sq" would share a bucket).
 */
static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const void *)values[i]; *p; p++)
            h = (h ^ *p) * UINT64_C(1099511628211);
        h = (h ^ 0xff) * UINT64_C(1099511628211);
    }
    h = (h ^ (h >> 33)) * UINT64_C(0xff51afd7ed558ccd);
    h = (h ^ (h >> 33)) * UINT64_C(0xc4ceb9fe1a85ec53);
    return h ^ (h >> 33);
}

static bool series_matches(const metric_family_t *f, const series_t *s, uint64_t hash,
                           const char *const *values)
{
    if (s->hash != hash)
        return false;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (strcmp(s->values[i], values[i]) != 0)
            return false;
    }
    return true;
}

static series_t **series_slot(metric_family_t *f, uint64_t hash, const char *const *values)
{
    series_t **slot = &f->table[hash & (f->table_size - 1)];
    while (*slot && !series_matches(f, *slot, hash, values))
        slot = &(*slot)->chain;
    return slot;
}

/* One allocation: struct, value pointers, bucket counts, value bytes. */
static series_t *series_new(const metric_family_t *f, uint64_t hash, const char *const *values)
{
    size_t head = sizeof(series_t) + f->nlabels * sizeof(char *);
    size_t align = _Alignof(uint64_t);
    head = (head + align - 1) / align * align;
    size_t ncounts = f->kind == KIND_HISTOGRAM ? f->nbounds + 1 : 0;
    size_t size = head + ncounts * sizeof(uint64_t);
    for (size_t i = 0; i < f->nlabels; i++)
        size += strlen(values[i]) + 1;
    series_t *s = calloc(1, size);
    if (s == NULL)
        return NULL;
    s->hash = hash;
    s->counts = (uint64_t *)(void *)((char *)s + head);
    char *p = (char *)(s->counts + ncounts);
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(p, values[i], n);
        s->values[i] = p;
        p += n;
    }
    return s;
}

/* Doubles the table; on allocation failure it stays as it is (slower, not wrong). */
static void table_grow(metric_family_t *f)
{
    size_t size = f->table_size * 2;
    series_t **table = calloc(size, sizeof(*table));
    if (table == NULL)
        return;
    for (size_t i = 0; i < f->table_size; i++) {
        series_t *s = f->table[i];
        while (s) {
            series_t *next = s->chain;
            s->chain = table[s->hash & (size - 1)];
            table[s->hash & (size - 1)] = s;
            s = next;
        }
    }
    free(f->table);
    f->table = table;
    f->table_size = size;
}

static void table_insert(metric_family_t *f, series_t *s)
{
    if (f->nseries >= f->table_size)
        table_grow(f);
    series_t **slot = &f->table[s->hash & (f->table_size - 1)];
    s->chain = *slot;
    *slot = s;
    f->nseries++;
}

/* ---- registration ---- */

metrics_t *metrics_new(void)
{
    metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void series_free_all(metric_family_t *f)
{
    for (size_t i = 0; f->table && i < f->table_size; i++) {
        series_t *s = f->table[i];
        while (s) {
            series_t *next = s->chain;
            free(s);
            s = next;
        }
    }
    free(f->table);
}

static void family_free(metric_family_t *f)
{
    if (f == NULL)
        return;
    series_free_all(f);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void metrics_free(metrics_t *m)
{
    if (m == NULL)
        return;
    metric_family_t *f = m->head;
    while (f) {
        metric_family_t *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Checks and copies the label names into f. */
static int family_set_labels(metric_family_t *f, const char *const *labels, char *err,
                             size_t errlen)
{
    for (size_t i = 0; labels && labels[i]; i++) {
        const char *l = labels[i];
        if (i == METRICS_LABELS_MAX) {
            snprintf(err, errlen, "%s: more than %d labels", f->name, METRICS_LABELS_MAX);
            return -1;
        }
        /* "__" names are Prometheus' own; "le" is the histogram bucket's. */
        if (!valid_name(l, false) || strncmp(l, "__", 2) == 0 ||
            (f->kind == KIND_HISTOGRAM && strcmp(l, "le") == 0)) {
            snprintf(err, errlen, "%s: invalid label name \"%.*s\"", f->name, METRICS_NAME_MAX, l);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[j], l) == 0) {
                snprintf(err, errlen, "%s: label \"%s\" appears twice", f->name, l);
                return -1;
            }
        }
        if ((f->labels[i] = strdup(l)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        f->nlabels = i + 1;
    }
    return 0;
}

static int family_set_bounds(metric_family_t *f, const double *bounds, size_t n, char *err,
                             size_t errlen)
{
    if (n == 0 || n > METRICS_BUCKETS_MAX || bounds == NULL) {
        snprintf(err, errlen, "%s: a histogram needs 1 to %d bucket bounds", f->name,
                 METRICS_BUCKETS_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
            snprintf(err, errlen, "%s: bucket bounds must be finite and increasing", f->name);
            return -1;
        }
        f->bounds[i] = bounds[i];
        format_number(f->le[i], sizeof(f->le[i]), bounds[i]);
    }
    f->nbounds = n;
    return 0;
}

/* Appends f to the registry unless its name is taken. */
static int registry_append(metrics_t *m, metric_family_t *f, char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    for (metric_family_t *g = m->head; g; g = g->next) {
        if (strcmp(g->name, f->name) == 0) {
            snprintf(err, errlen, "%s: registered twice", f->name);
            rc = -1;
            break;
        }
    }
    if (rc == 0) {
        if (m->tail)
            m->tail->next = f;
        else
            m->head = f;
        m->tail = f;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/*
 * The common part of every registration. A family without labels gets its
 * one series now, so that it is exposed (at 0) before its first update.
 */
static metric_family_t *family_new(metrics_t *m, metric_kind_t kind, const char *name,
                                   const char *help, const char *const *labels,
                                   const double *bounds, size_t nbounds, char *err, size_t errlen)
{
    if (m == NULL) {
        snprintf(err, errlen, "no registry");
        return NULL;
    }
    if (!valid_name(name, true)) {
        snprintf(err, errlen, "invalid metric name \"%.*s\"", METRICS_NAME_MAX, name ? name : "");
        return NULL;
    }
    if (help == NULL || strlen(help) > METRICS_HELP_MAX || !valid_utf8((const void *)help)) {
        snprintf(err, errlen, "%s: the help text must be UTF-8 of at most %d bytes", name,
                 METRICS_HELP_MAX);
        return NULL;
    }
    metric_family_t *f = calloc(1, sizeof(*f));
    if (f == NULL || pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->kind = kind;
    f->cap = METRICS_SERIES_MAX;
    f->table_size = TABLE_INITIAL;
    f->table = calloc(f->table_size, sizeof(*f->table));
    f->name = strdup(name);
    f->help = strdup(help);
    if (f->table == NULL || f->name == NULL || f->help == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (family_set_labels(f, labels, err, errlen) != 0)
        goto fail;
    if (kind == KIND_HISTOGRAM && family_set_bounds(f, bounds, nbounds, err, errlen) != 0)
        goto fail;
    if (f->nlabels == 0 && kind != KIND_REFUSALS) {
        series_t *s = series_new(f, hash_values(NULL, 0), NULL);
        if (s == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        table_insert(f, s);
    }
    if (registry_append(m, f, err, errlen) != 0)
        goto fail;
    return f;
fail:
    family_free(f);
    return NULL;
}

metric_family_t *metrics_counter(metrics_t *m, const char *name, const char *help,
                                 const char *const *labels, char *err, size_t errlen)
{
    return family_new(m, KIND_COUNTER, name, help, labels, NULL, 0, err, errlen);
}

metric_family_t *metrics_gauge(metrics_t *m, const char *name, const char *help,
                               const char *const *labels, char *err, size_t errlen)
{
    return family_new(m, KIND_GAUGE, name, help, labels, NULL, 0, err, errlen);
}

metric_family_t *metrics_histogram(metrics_t *m, const char *name, const char *help,
                                   const char *const *labels, const double *bounds, size_t nbounds,
                                   char *err, size_t errlen)
{
    return family_new(m, KIND_HISTOGRAM, name, help, labels, bounds, nbounds, err, errlen);
}

int metrics_refusals(metrics_t *m, const char *name, const char *help, char *err, size_t errlen)
{
    static const char *const labels[] = {"family", NULL};
    return family_new(m, KIND_REFUSALS, name, help, labels, NULL, 0, err, errlen) ? 0 : -1;
}

/* ---- updates ---- */

static bool values_acceptable(const metric_family_t *f, const char *const *values)
{
    for (size_t i = 0; i < f->nlabels; i++) {
        if (strlen(values[i]) > METRICS_LABEL_VALUE_MAX || !valid_utf8((const void *)values[i]))
            return false;
    }
    return true;
}

/* The series of values (hashed into hash), created when new; NULL
 * (counted) when refused. Called with f->lock held. */
static series_t *series_get(metric_family_t *f, uint64_t hash, const char *const *values)
{
    series_t **slot = series_slot(f, hash, values);
    if (*slot)
        return *slot;
    series_t *s = NULL;
    if (f->nseries < f->cap && values_acceptable(f, values))
        s = series_new(f, hash, values);
    if (s == NULL) {
        f->refused++;
        return NULL;
    }
    table_insert(f, s);
    return s;
}

typedef enum update_op {
    OP_ADD,
    OP_SET,
    OP_OBSERVE,
} update_op_t;

static bool op_fits(const metric_family_t *f, update_op_t op, double v)
{
    switch (op) {
    case OP_ADD:
        return (f->kind == KIND_COUNTER && v >= 0 && isfinite(v)) ||
               (f->kind == KIND_GAUGE && isfinite(v));
    case OP_SET:
        return (f->kind == KIND_COUNTER || f->kind == KIND_GAUGE) && !isnan(v);
    case OP_OBSERVE:
        return f->kind == KIND_HISTOGRAM && !isnan(v);
    }
    return false;
}

static void histogram_observe(const metric_family_t *f, series_t *s, double v)
{
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i])
        i++;
    s->counts[i]++; /* i == nbounds: the +Inf bucket */
    s->count++;
    s->value += v;
}

/* The cheap checks every update makes; the costlier ones (length, UTF-8)
 * run only when a series is created. */
static bool values_present(const metric_family_t *f, const char *const *values)
{
    if (f->nlabels > 0 && values == NULL)
        return false;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (values[i] == NULL)
            return false;
    }
    return true;
}

static int update(metric_family_t *f, const char *const *values, update_op_t op, double v)
{
    if (f == NULL || !op_fits(f, op, v) || !values_present(f, values))
        return -1;
    uint64_t hash = hash_values(values, f->nlabels); /* outside the lock */
    pthread_mutex_lock(&f->lock);
    series_t *s = series_get(f, hash, values);
    if (s) {
        if (op == OP_ADD)
            s->value += v;
        else if (op == OP_SET)
            s->value = v;
        else
            histogram_observe(f, s, v);
    }
    pthread_mutex_unlock(&f->lock);
    return s ? 0 : -1;
}

int metric_add(metric_family_t *f, const char *const *values, double v)
{
    return update(f, values, OP_ADD, v);
}

int metric_set(metric_family_t *f, const char *const *values, double v)
{
    return update(f, values, OP_SET, v);
}

int metric_observe(metric_family_t *f, const char *const *values, double v)
{
    return update(f, values, OP_OBSERVE, v);
}

size_t metric_drop(metric_family_t *f, const char *label, const char *value)
{
    size_t k, dropped = 0;

    if (f == NULL)
        return 0;
    for (k = 0; k < f->nlabels && strcmp(f->labels[k], label) != 0; k++)
        ;
    if (k == f->nlabels)
        return 0;
    pthread_mutex_lock(&f->lock);
    for (size_t b = 0; b < f->table_size; b++) {
        for (series_t **at = &f->table[b]; *at;) {
            series_t *sr = *at;
            if (strcmp(sr->values[k], value) != 0) {
                at = &sr->chain;
                continue;
            }
            *at = sr->chain;
            free(sr);
            f->nseries--;
            dropped++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return dropped;
}

void metric_set_series_cap(metric_family_t *f, size_t cap)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->cap = cap;
    pthread_mutex_unlock(&f->lock);
}

uint64_t metric_refused(metric_family_t *f)
{
    if (f == NULL)
        return 0;
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->refused;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ---- rendering ---- */

static void out_reserve(outbuf_t *o, size_t n)
{
    if (o->failed)
        return;
    /* one byte more than n: the text stays NUL-terminated */
    char *p = array_grow(o->p, &o->cap, o->len + n + 1, 1, 4096);
    if (p == NULL) {
        o->failed = true;
        return;
    }
    o->p = p;
}

static void out_mem(outbuf_t *o, const char *s, size_t n)
{
    out_reserve(o, n);
    if (o->failed)
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(outbuf_t *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

/* Escapes backslash and newline (HELP texts), and '"' too (label values). */
static void out_escaped(outbuf_t *o, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\'           ? "\\\\"
                          : *s == '\n'         ? "\\n"
                          : quote && *s == '"' ? "\\\""
                                               : NULL;
        if (esc == NULL)
            continue;
        out_mem(o, run, (size_t)(s - run));
        out_str(o, esc);
        run = s + 1;
    }
    out_mem(o, run, (size_t)(s - run));
}

static void out_number(outbuf_t *o, double v)
{
    char buf[NUMBER_MAX];
    format_number(buf, sizeof(buf), v);
    out_str(o, buf);
}

static void out_u64(outbuf_t *o, uint64_t v)
{
    char buf[NUMBER_MAX];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    out_str(o, buf);
}

/*
 * Writes name+suffix and the label set: the family's labels with values,
 * then an extra pair (the histogram's le) when extra_name is not NULL.
 */
static void out_series_name(outbuf_t *o, const metric_family_t *f, const char *suffix,
                            const char *const *values, const char *extra_name,
                            const char *extra_value)
{
    out_str(o, f->name);
    out_str(o, suffix);
    if (f->nlabels == 0 && extra_name == NULL) {
        out_str(o, " ");
        return;
    }
    out_str(o, "{");
    for (size_t i = 0; i < f->nlabels; i++) {
        out_str(o, i ? "," : "");
        out_str(o, f->labels[i]);
        out_str(o, "=\"");
        out_escaped(o, values[i], true);
        out_str(o, "\"");
    }
    if (extra_name) {
        out_str(o, f->nlabels ? "," : "");
        out_str(o, extra_name);
        out_str(o, "=\"");
        out_str(o, extra_value); /* ours: needs no escaping */
        out_str(o, "\"");
    }
    out_str(o, "} ");
}

static void out_histogram(outbuf_t *o, const metric_family_t *f, const series_t *s)
{
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cumulative += s->counts[i];
        out_series_name(o, f, "_bucket", s->values, "le", i < f->nbounds ? f->le[i] : "+Inf");
        out_u64(o, cumulative);
        out_str(o, "\n");
    }
    out_series_name(o, f, "_sum", s->values, NULL, NULL);
    out_number(o, s->value);
    out_str(o, "\n");
    out_series_name(o, f, "_count", s->values, NULL, NULL);
    out_u64(o, s->count);
    out_str(o, "\n");
}

static void out_header(outbuf_t *o, const metric_family_t *f)
{
    out_str(o, "# HELP ");
    out_str(o, f->name);
    out_str(o, " ");
    out_escaped(o, f->help, false);
    out_str(o, "\n# TYPE ");
    out_str(o, f->name);
    out_str(o, " ");
    out_str(o, kind_names[f->kind]);
    out_str(o, "\n");
}

/* qsort() has no context argument: the label count travels in each item. */
typedef struct sort_item {
    const series_t *s;
    size_t nlabels;
} sort_item_t;

static int compare_items(const void *a, const void *b)
{
    const sort_item_t *x = a, *y = b;
    for (size_t i = 0; i < x->nlabels; i++) {
        int c = strcmp(x->s->values[i], y->s->values[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

/* Renders one family's series, sorted. Called with f->lock held. */
static void out_family_series(outbuf_t *o, const metric_family_t *f)
{
    sort_item_t *items = malloc((f->nseries ? f->nseries : 1) * sizeof(*items));
    if (items == NULL) {
        o->failed = true;
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < f->table_size; i++) {
        for (const series_t *s = f->table[i]; s; s = s->chain)
            items[n++] = (sort_item_t){.s = s, .nlabels = f->nlabels};
    }
    qsort(items, n, sizeof(*items), compare_items);
    for (size_t i = 0; i < n && !o->failed; i++) {
        if (f->kind == KIND_HISTOGRAM) {
            out_histogram(o, f, items[i].s);
        } else {
            out_series_name(o, f, "", items[i].s->values, NULL, NULL);
            out_number(o, items[i].s->value);
            out_str(o, "\n");
        }
    }
    free(items);
}

/* The refusals counter: one series per other family, in registration order
 * (which the registry lock, held by the caller, keeps stable). */
static void out_refusals(outbuf_t *o, const metrics_t *m, const metric_family_t *r)
{
    for (metric_family_t *f = m->head; f; f = f->next) {
        if (f->kind == KIND_REFUSALS)
            continue;
        const char *values[] = {f->name};
        out_series_name(o, r, "", values, NULL, NULL);
        out_u64(o, metric_refused(f));
        out_str(o, "\n");
    }
}

char *metrics_render(metrics_t *m, size_t *len)
{
    outbuf_t o = {0};
    out_reserve(&o, 1);
    if (m) {
        pthread_mutex_lock(&m->lock);
        for (metric_family_t *f = m->head; f && !o.failed; f = f->next) {
            out_header(&o, f);
            if (f->kind == KIND_REFUSALS) {
                out_refusals(&o, m, f);
                continue;
            }
            pthread_mutex_lock(&f->lock);
            out_family_series(&o, f);
            pthread_mutex_unlock(&f->lock);
        }
        pthread_mutex_unlock(&m->lock);
    }
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    o.p[o.len] = '\0';
    if (len)
        *len = o.len;
    return o.p;
}
