/*
 * sinks: a sink's configuration checked against its option table, turned
 * into typed values, and the table printed as documentation.
 *
 * Like the sink_conf_* getters, messages name the JSON path and what was
 * expected and never echo a value: a string in the wrong place may be a
 * secret.
 */
#include "sink.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const sink_common_keys[] = {"name", "type", "events", "sources", NULL};

/*
 * The outbox's own keys, declared once: every SINK_F_OUTBOX type has them
 * after its own, and the outbox worker (bridge/outbox.c) reads them.
 */
const sink_option_t sink_outbox_options[] = {
    {.key = "retry_schedule_s",
     .type = SINK_OPT_ARRAY,
     .def = "[0, 5, 300, 1800, 7200, 18000, 36000, 36000]",
     .min = 1,
     .max = SINK_SCHEDULE_MAX,
     .elem = SINK_OPT_NUMBER,
     .elem_max = SINK_SCHEDULE_DELAY_MAX,
     .desc = "(outbox) the delay before each attempt, in seconds; its length is the number of "
             "attempts, after which the event goes to the dead letters"},
    {.key = "timeout_s",
     .type = SINK_OPT_INT,
     .def = SINK_STR(SINK_OUTBOX_TIMEOUT_DEFAULT_S),
     .min = 1,
     .max = SINK_OUTBOX_TIMEOUT_MAX_S,
     .desc = "(outbox) how long one attempt may take; an event claimed by a bridge that died "
             "comes back after twice this plus 5 s"},
    {0},
};

struct sink_config {
    const sink_type_t *type;
    cJSON *json;         /* the sink's object, copied */
    cJSON *defaults;     /* the parsed defaults that apply, an array owning them */
    sink_option_t *opts; /* the type's options, then the outbox's for an outbox type */
    size_t n;
    sink_value_t *values; /* one per option, in opts order */
};

static size_t table_len(const sink_option_t *t)
{
    size_t n = 0;

    while (t && t[n].key)
        n++;
    return n;
}

/* The options of type (its own, then the outbox's), malloc'd; NULL when out of memory. */
static sink_option_t *all_options(const sink_type_t *type, size_t *n)
{
    size_t own = table_len(type->options);
    size_t ob = type->flags & SINK_F_OUTBOX ? table_len(sink_outbox_options) : 0;
    sink_option_t *opts = calloc(own + ob + 1, sizeof(*opts));

    if (!opts)
        return NULL;
    if (own)
        memcpy(opts, type->options, own * sizeof(*opts));
    if (ob)
        memcpy(opts + own, sink_outbox_options, ob * sizeof(*opts));
    *n = own + ob;
    return opts;
}

static bool bounded(double min, double max)
{
    return min != 0 || max != 0;
}

/* ---- unknown keys ---- */

/* Case-sensitive, as every lookup here: "Brokers" is a typo. */
static const sink_option_t *find_option(const sink_option_t *opts, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    }
    return NULL;
}

/*
 * Unknown keys, through the one check (and its suggestions) that sources
 * and providers use too: the known ones are the options', then core_keys.
 */
static void check_unknown(const cJSON *obj, const char *path, const sink_option_t *opts, size_t n,
                          const char *const *core_keys, sink_errors_t *errs)
{
    size_t ncore = 0;
    const char **known;

    while (core_keys && core_keys[ncore])
        ncore++;
    known = calloc(n + ncore + 1, sizeof(*known));
    if (!known) {
        sink_errors_add(errs, path, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        known[i] = opts[i].key;
    for (size_t i = 0; i < ncore; i++)
        known[n + i] = core_keys[i];
    sink_conf_check_keys(obj, path, known, errs);
    free(known);
}

/* ---- values ---- */

static const char *type_word(sink_opt_type_t t)
{
    switch (t) {
    case SINK_OPT_STRING:
        return "string";
    case SINK_OPT_INT:
        return "integer";
    case SINK_OPT_NUMBER:
        return "number";
    case SINK_OPT_BOOL:
        return "boolean";
    case SINK_OPT_ENUM:
        return "enum";
    case SINK_OPT_OBJECT:
        return "object";
    case SINK_OPT_ARRAY:
        return "list";
    case SINK_OPT_SECRET:
        return "secret";
    }
    return "value";
}

/* "a, b or c" into buf. */
static const char *choice_list(char *buf, size_t size, const char *const *choices)
{
    size_t o = 0, n = 0;

    while (choices && choices[n])
        n++;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < size; i++) {
        int w = snprintf(buf + o, size - o, "%s%s",
                         i == 0       ? ""
                         : i + 1 == n ? " or "
                                      : ", ",
                         choices[i]);
        o += w > 0 ? (size_t)w : 0;
    }
    return buf;
}

/*
 * Checks one scalar of type t within [min, max] (both 0: unbounded) and
 * fills v. 0, or -1 with a message at path.
 */
static int scalar(const cJSON *item, sink_opt_type_t t, unsigned flags, double min, double max,
                  const char *const *choices, const char *path, sink_value_t *v,
                  sink_errors_t *errs)
{
    char buf[SINK_ERROR_LEN / 2];
    long long ll;

    switch (t) {
    case SINK_OPT_STRING:
    case SINK_OPT_SECRET:
        if (!cJSON_IsString(item) || !item->valuestring || !*item->valuestring) {
            sink_errors_add(errs, path, "expected a non-empty string");
            return -1;
        }
        if (bounded(min, max) &&
            (strlen(item->valuestring) < min || strlen(item->valuestring) > max)) {
            sink_errors_add(errs, path, "expected %.0f to %.0f bytes", min, max);
            return -1;
        }
        if ((flags & SINK_OPT_NO_CONTROL) && sink_has_control(item->valuestring)) {
            sink_errors_add(errs, path,
                            "must not contain control characters (a line break would start "
                            "another header or request)");
            return -1;
        }
        v->s = item->valuestring;
        return 0;
    case SINK_OPT_INT:
        if (!bounded(min, max)) {
            min = (double)LLONG_MIN;
            max = (double)LLONG_MAX;
        }
        if (!cJSON_IsNumber(item) ||
            sink_exact_integer(item->valuedouble, LLONG_MIN, LLONG_MAX, &ll) != 0) {
            sink_errors_add(errs, path, "expected an integer between %.0f and %.0f", min, max);
            return -1;
        }
        if ((double)ll < min || (double)ll > max) {
            sink_errors_add(errs, path, "expected an integer between %.0f and %.0f, got %lld", min,
                            max, ll);
            return -1;
        }
        v->i = ll;
        v->d = (double)ll;
        return 0;
    case SINK_OPT_NUMBER:
        if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) ||
            (bounded(min, max) && (item->valuedouble < min || item->valuedouble > max))) {
            if (bounded(min, max))
                sink_errors_add(errs, path, "expected a number between %g and %g", min, max);
            else
                sink_errors_add(errs, path, "expected a number");
            return -1;
        }
        v->d = item->valuedouble;
        return 0;
    case SINK_OPT_BOOL:
        if (!cJSON_IsBool(item)) {
            sink_errors_add(errs, path, "expected true or false");
            return -1;
        }
        v->i = cJSON_IsTrue(item);
        return 0;
    case SINK_OPT_ENUM:
        for (size_t k = 0; cJSON_IsString(item) && choices && choices[k]; k++) {
            if (strcmp(item->valuestring, choices[k]) == 0) {
                v->s = choices[k];
                v->i = (long long)k;
                return 0;
            }
        }
        sink_errors_add(errs, path, "expected %s", choice_list(buf, sizeof(buf), choices));
        return -1;
    case SINK_OPT_OBJECT:
        if (!cJSON_IsObject(item)) {
            sink_errors_add(errs, path, "expected an object");
            return -1;
        }
        return 0;
    case SINK_OPT_ARRAY:
        break;
    }
    sink_errors_add(errs, path, "expected a %s", type_word(t));
    return -1;
}

/* An ARRAY option: the list, then every element as a scalar of elem. */
static int array(const cJSON *item, const sink_option_t *o, const char *path, sink_value_t *v,
                 sink_errors_t *errs)
{
    char epath[SINK_PATH_MAX];
    size_t n, k = 0;
    const cJSON *e;
    double *numbers = NULL;
    const char **strings = NULL;
    int rc = 0;

    if (!cJSON_IsArray(item) ||
        (bounded(o->min, o->max) && ((double)cJSON_GetArraySize(item) < o->min ||
                                     (double)cJSON_GetArraySize(item) > o->max))) {
        if (bounded(o->min, o->max))
            sink_errors_add(errs, path, "expected a list of %.0f to %.0f %ss", o->min, o->max,
                            type_word(o->elem));
        else
            sink_errors_add(errs, path, "expected a list of %ss", type_word(o->elem));
        return -1;
    }
    n = (size_t)cJSON_GetArraySize(item);
    if (o->elem == SINK_OPT_INT || o->elem == SINK_OPT_NUMBER)
        numbers = calloc(n ? n : 1, sizeof(*numbers));
    else
        strings = calloc(n ? n : 1, sizeof(*strings));
    if (!numbers && !strings) {
        sink_errors_add(errs, path, "out of memory");
        return -1;
    }
    cJSON_ArrayForEach(e, item)
    {
        sink_value_t ev = {0};

        if (scalar(e, o->elem, o->flags, o->elem_min, o->elem_max, NULL,
                   sink_conf_path_index(epath, sizeof(epath), path, k), &ev, errs) != 0)
            rc = -1;
        else if (numbers)
            numbers[k] = ev.d;
        else
            strings[k] = ev.s;
        k++;
    }
    v->count = n;
    v->numbers = numbers;
    v->strings = strings;
    return rc;
}

/* Type, bounds, then the option's own check (for configured values only). */
static int convert(const cJSON *item, const sink_option_t *o, const char *path, bool configured,
                   sink_value_t *v, sink_errors_t *errs)
{
    size_t before = errs->count;
    int rc = o->type == SINK_OPT_ARRAY
                 ? array(item, o, path, v, errs)
                 : scalar(item, o->type, o->flags, o->min, o->max, o->choices, path, v, errs);

    v->json = item;
    if (rc == 0 && configured && o->check) {
        o->check(item, path, errs);
        rc = errs->count == before ? 0 : -1;
    }
    return rc;
}

/* "secret or secrets": the options of o's group. */
static const char *group_names(char *buf, size_t size, const sink_option_t *opts, size_t n,
                               const char *group, const char *sep)
{
    size_t o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && o < size; i++) {
        if (!opts[i].group || strcmp(opts[i].group, group) != 0)
            continue;
        int w = snprintf(buf + o, size - o, "%s%s", o ? sep : "", opts[i].key);
        o += w > 0 ? (size_t)w : 0;
    }
    return buf;
}

/* Each group once: at most one of its options set, exactly one when required. */
static void check_groups(const sink_config_t *cfg, const char *path, sink_errors_t *errs)
{
    const sink_option_t *opts = cfg->opts;
    char names[SINK_ERROR_LEN / 2], kpath[SINK_PATH_MAX];

    for (size_t i = 0; i < cfg->n; i++) {
        size_t set = 0, j;
        bool required = false;

        if (!opts[i].group)
            continue;
        for (j = 0; j < i && !(opts[j].group && strcmp(opts[j].group, opts[i].group) == 0); j++)
            ;
        if (j < i)
            continue; /* reported with its first member */
        for (j = i; j < cfg->n; j++) {
            if (opts[j].group && strcmp(opts[j].group, opts[i].group) == 0) {
                set += cfg->values[j].set;
                required |= (opts[j].flags & SINK_OPT_REQUIRED) != 0;
            }
        }
        if (set > 1)
            sink_errors_add(errs, path, "set one of %s, not several",
                            group_names(names, sizeof(names), opts, cfg->n, opts[i].group, ", "));
        else if (set == 0 && required)
            sink_errors_add(errs, sink_conf_path(kpath, sizeof(kpath), path, opts[i].key),
                            "required (or one of: %s)",
                            group_names(names, sizeof(names), opts, cfg->n, opts[i].group, ", "));
    }
}

static void value_free(sink_value_t *v)
{
    free((void *)v->numbers);
    free((void *)v->strings);
}

void sink_config_free(sink_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; cfg->values && i < cfg->n; i++)
        value_free(&cfg->values[i]);
    free(cfg->values);
    free(cfg->opts);
    cJSON_Delete(cfg->defaults);
    cJSON_Delete(cfg->json);
    free(cfg);
}

/* An option's default, parsed into cfg->defaults; NULL when it has none or it does not parse. */
static const cJSON *default_value(sink_config_t *cfg, const sink_option_t *o)
{
    cJSON *d;

    if (!o->def || !(d = cJSON_Parse(o->def)))
        return NULL;
    cJSON_AddItemToArray(cfg->defaults, d);
    return d;
}

/* What a missing required option is: "a non-empty string", "an integer between 1 and 60". */
static void report_required(const sink_option_t *o, const char *kpath, sink_errors_t *errs)
{
    if (o->type == SINK_OPT_INT && bounded(o->min, o->max))
        sink_errors_add(errs, kpath, "required, expected an integer between %.0f and %.0f", o->min,
                        o->max);
    else if (o->type == SINK_OPT_STRING || o->type == SINK_OPT_SECRET)
        sink_errors_add(errs, kpath, "required, expected a non-empty string");
    else
        sink_errors_add(errs, kpath, "required, expected a %s", type_word(o->type));
}

sink_config_t *sink_config_parse(const sink_type_t *type, const cJSON *obj, const char *path,
                                 const char *const *core_keys, sink_errors_t *errs)
{
    size_t before = errs->count, n = 0;
    const sink_option_t *opts;
    char kpath[SINK_PATH_MAX];
    sink_config_t *cfg;

    if (!cJSON_IsObject(obj)) {
        sink_errors_add(errs, path, "expected an object");
        return NULL;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (!cfg || !(cfg->opts = all_options(type, &n)) ||
        !(cfg->values = calloc(n ? n : 1, sizeof(*cfg->values))) ||
        !(cfg->json = cJSON_Duplicate(obj, 1)) || !(cfg->defaults = cJSON_CreateArray())) {
        sink_errors_add(errs, path, "out of memory");
        sink_config_free(cfg);
        return NULL;
    }
    cfg->type = type;
    cfg->n = n;
    opts = cfg->opts;
    check_unknown(cfg->json, path, opts, n, core_keys, errs);
    for (size_t i = 0; i < n; i++) {
        const sink_option_t *o = &opts[i];
        sink_value_t *v = &cfg->values[i];
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg->json, o->key);

        sink_conf_path(kpath, sizeof(kpath), path, o->key);
        v->set = item != NULL;
        if (!item && !(item = default_value(cfg, o))) {
            if ((o->flags & SINK_OPT_REQUIRED) && !o->group)
                report_required(o, kpath, errs);
            continue;
        }
        v->present = true;
        convert(item, o, kpath, v->set, v, errs);
    }
    check_groups(cfg, path, errs);
    /* Cross-option checks judge values that are each valid already. */
    if (errs->count == before && type->check)
        type->check(cfg, path, errs);
    if (errs->count != before) {
        sink_config_free(cfg);
        return NULL;
    }
    return cfg;
}

const sink_value_t *sink_config_get(const sink_config_t *cfg, const char *key)
{
    const sink_option_t *o = find_option(cfg->opts, cfg->n, key);

    return o ? &cfg->values[o - cfg->opts] : NULL;
}

const cJSON *sink_config_json(const sink_config_t *cfg)
{
    return cfg->json;
}

int sink_validate(const sink_type_t *type, const cJSON *conf, const char *path, sink_errors_t *errs)
{
    sink_config_t *cfg = sink_config_parse(type, conf, path, sink_common_keys, errs);

    sink_config_free(cfg);
    return cfg ? 0 : -1;
}

/* conf parsed as sink_init() and sink_probe() take it; NULL with the problems joined into err. */
static sink_config_t *parse_for_call(const sink_type_t *type, const cJSON *conf, char *err,
                                     size_t errlen)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    sink_config_t *cfg;

    if (!errs) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cfg = sink_config_parse(type, conf, "", sink_common_keys, errs);
    if (!cfg)
        sink_errors_join(errs, err, errlen);
    free(errs);
    return cfg;
}

void *sink_init(const sink_type_t *type, const cJSON *conf, const sink_host_t *host, char *err,
                size_t errlen)
{
    sink_config_t *cfg = parse_for_call(type, conf, err, errlen);
    void *ctx = cfg ? type->init(cfg, host, err, errlen) : NULL;

    sink_config_free(cfg);
    return ctx;
}

int sink_probe(const sink_type_t *type, const cJSON *conf, const sink_host_t *host,
               int64_t deadline_ms, char *msg, size_t msglen)
{
    sink_config_t *cfg = parse_for_call(type, conf, msg, msglen);
    int rc = -1;

    if (cfg && !type->probe)
        snprintf(msg, msglen, "the %s type has no probe", type->name);
    else if (cfg)
        rc = type->probe(cfg, host, deadline_ms, msg, msglen);
    sink_config_free(cfg);
    return rc;
}

/* ---- documentation ---- */

/* "integer 1..60, default 10": what one option accepts, into buf. */
static const char *option_summary(char *buf, size_t size, const sink_option_t *o)
{
    char choices[SINK_ERROR_LEN / 2];
    size_t w = 0;

#define PUT(...)                                                                                   \
    do {                                                                                           \
        int r_ = snprintf(buf + w, w < size ? size - w : 0, __VA_ARGS__);                          \
        w += r_ > 0 ? (size_t)r_ : 0;                                                              \
    } while (0)
    buf[0] = '\0';
    if (o->type == SINK_OPT_ENUM)
        PUT("%s", choice_list(choices, sizeof(choices), o->choices));
    else
        PUT("%s", type_word(o->type));
    if (bounded(o->min, o->max)) {
        if (o->type == SINK_OPT_INT || o->type == SINK_OPT_NUMBER)
            PUT(" %.15g..%.15g", o->min, o->max);
        else if (o->type == SINK_OPT_ARRAY)
            PUT(" of %.15g..%.15g", o->min, o->max);
        else
            PUT(", %.15g..%.15g bytes", o->min, o->max);
    }
    if (o->type == SINK_OPT_ARRAY) {
        PUT(" %ss", type_word(o->elem));
        if (bounded(o->elem_min, o->elem_max))
            PUT(" (each %.15g..%.15g)", o->elem_min, o->elem_max);
    }
    if (o->flags & SINK_OPT_REQUIRED)
        PUT(", required");
    if (o->def)
        PUT(", default %s", o->def);
#undef PUT
    return buf;
}

void sink_type_doc(const sink_type_t *type, FILE *out)
{
    size_t n = 0;
    sink_option_t *opts = all_options(type, &n);
    char line[SINK_ERROR_LEN], names[SINK_ERROR_LEN / 2];

    if (!opts)
        return;

    fprintf(out, "%s%s\n", type->name, type->flags & SINK_F_OUTBOX ? " (through the outbox)" : "");
    if (type->desc)
        fprintf(out, "  %s\n", type->desc);
    if (n == 0)
        fprintf(out, "  (no keys of its own)\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(out, "  %-18s %s\n", opts[i].key, option_summary(line, sizeof(line), &opts[i]));
        if (opts[i].group)
            fprintf(out, "  %-18s one of: %s\n", "",
                    group_names(names, sizeof(names), opts, n, opts[i].group, ", "));
        if (opts[i].desc)
            fprintf(out, "  %-18s %s\n", "", opts[i].desc);
    }
    free(opts);
}
