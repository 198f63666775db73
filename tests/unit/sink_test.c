/*
 * Tests of sinks/: the configuration helpers and logger (tables), kafka's
 * validation (table), and the kafka and stdout sinks end to end: kafka
 * against librdkafka's in-process mock cluster, read back with a consumer;
 * stdout through a temporary file put in place of fd 1.
 */
#include "loop.h"
#include "sink.h"
#include "testlib.h"

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* InitProducerId, the Kafka protocol's ApiKey 22. */
#define API_INIT_PRODUCER_ID 22

/* ---- path joiners and the error list ---- */

START_TEST(test_paths)
{
    char buf[SINK_PATH_MAX], small[8];

    ck_assert_str_eq(sink_conf_path_index(buf, sizeof(buf), "sinks", 1), "sinks[1]");
    ck_assert_str_eq(sink_conf_path(buf, sizeof(buf), "sinks[1]", "topics"), "sinks[1].topics");
    ck_assert_str_eq(sink_conf_path(buf, sizeof(buf), "", "redis"), "redis");
    ck_assert_str_eq(sink_conf_path(buf, sizeof(buf), NULL, "redis"), "redis");
    ck_assert_str_eq(sink_conf_path_index(buf, sizeof(buf), "sources[0].filters.userId", 12),
                     "sources[0].filters.userId[12]");
    ck_assert_str_eq(sink_conf_path(small, sizeof(small), "sinks[1]", "topics"), "sinks[1");
}
END_TEST

START_TEST(test_errors_add)
{
    sink_errors_t errs = {0};
    char longmsg[SINK_ERROR_LEN * 2];

    sink_errors_add(&errs, "sinks[0].brokers", "expected %s", "a string");
    sink_errors_add(&errs, "", "no path");
    sink_errors_add(&errs, NULL, "null path");
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    sink_errors_add(&errs, "p", "%s", longmsg);
    ck_assert_uint_eq(errs.count, 4);
    ck_assert_str_eq(errs.msg[0], "sinks[0].brokers: expected a string");
    ck_assert_str_eq(errs.msg[1], "no path");
    ck_assert_str_eq(errs.msg[2], "null path");
    ck_assert_uint_eq(strlen(errs.msg[3]), SINK_ERROR_LEN - 1);
    ck_assert(strncmp(errs.msg[3], "p: xxx", 6) == 0);

    /* Past the bound, messages are counted only. */
    for (int i = 0; i < SINK_ERRORS_MAX + 6; i++)
        sink_errors_add(&errs, "k", "n%d", i);
    ck_assert_uint_eq(errs.count, 4 + SINK_ERRORS_MAX + 6);
    ck_assert_str_eq(errs.msg[SINK_ERRORS_MAX - 1], "k: n59");

    sink_errors_add(NULL, "k", "ignored"); /* must not crash */
}
END_TEST

START_TEST(test_check_keys)
{
    static const char *const allowed[] = {"name", "brokers", NULL};
    cJSON *j = parse_json("{\"name\":1,\"brokres\":2,\"brokers\":3,\"Brokers\":4,\"topic\":5}");
    sink_errors_t errs = {0};

    /* Every unknown key at once, in document order; matching is case-sensitive;
     * the nearest known key when one is close. */
    ck_assert_int_eq(sink_conf_check_keys(j, "sinks[1]", allowed, &errs), 3);
    ck_assert_uint_eq(errs.count, 3);
    ck_assert_str_eq(errs.msg[0], "sinks[1].brokres: unknown key (did you mean \"brokers\"?)");
    ck_assert_str_eq(errs.msg[1], "sinks[1].Brokers: unknown key (did you mean \"brokers\"?)");
    ck_assert_str_eq(errs.msg[2], "sinks[1].topic: unknown key");

    /* At the top level (no path), and with nothing allowed. */
    memset(&errs, 0, sizeof(errs));
    ck_assert_int_eq(sink_conf_check_keys(j, "", NULL, &errs), 5);
    ck_assert_str_eq(errs.msg[0], "name: unknown key");

    /* Not an object, or NULL: nothing to report. */
    memset(&errs, 0, sizeof(errs));
    ck_assert_int_eq(sink_conf_check_keys(NULL, "x", allowed, &errs), 0);
    ck_assert_uint_eq(errs.count, 0);
    cJSON_Delete(j);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- option tables ---- */

static void check_even(const cJSON *value, const char *path, sink_errors_t *errs)
{
    if ((long long)value->valuedouble % 2 != 0)
        sink_errors_add(errs, path, "expected an even number");
}

static const char *const modes[] = {"fast", "slow", NULL};

/* One option of every type, as a sink declares them. */
static const sink_option_t test_options[] = {
    {.key = "url", .type = SINK_OPT_STRING, .flags = SINK_OPT_REQUIRED | SINK_OPT_NO_CONTROL},
    {.key = "count", .type = SINK_OPT_INT, .def = "4", .min = 0, .max = 10, .check = check_even},
    {.key = "ratio", .type = SINK_OPT_NUMBER, .def = "0.5", .min = 0, .max = 1},
    {.key = "on", .type = SINK_OPT_BOOL, .def = "true"},
    {.key = "mode", .type = SINK_OPT_ENUM, .def = "\"slow\"", .choices = modes},
    {.key = "extra", .type = SINK_OPT_OBJECT},
    {.key = "delays",
     .type = SINK_OPT_ARRAY,
     .def = "[1, 2.5]",
     .min = 1,
     .max = 3,
     .elem = SINK_OPT_NUMBER,
     .elem_max = 60},
    {.key = "token", .type = SINK_OPT_SECRET, .flags = SINK_OPT_REQUIRED, .group = "auth"},
    {.key = "tokens",
     .type = SINK_OPT_ARRAY,
     .flags = SINK_OPT_REQUIRED,
     .elem = SINK_OPT_SECRET,
     .group = "auth"},
    {0},
};

static int cross_checked;

static void test_check(const sink_config_t *cfg, const char *path, sink_errors_t *errs)
{
    cross_checked++;
    if (sink_config_get(cfg, "count")->i == 0 && sink_config_get(cfg, "on")->i)
        sink_errors_add(errs, path, "count 0 needs on false");
}

static const sink_type_t test_type = {
    .name = "test", .desc = "a table", .options = test_options, .check = test_check};

static const struct option_case {
    const char *json;
    const char *expect[3]; /* exact messages, in order; none: valid */
} option_cases[] = {
    {"{\"name\":\"a\",\"type\":\"test\",\"events\":[],\"sources\":[],\"url\":\"u\",\"token\":"
     "\"t\"}",
     {NULL}},
    {"{\"url\":\"u\",\"tokens\":[\"a\",\"b\"],\"count\":10,\"ratio\":1,\"on\":false,\"mode\":"
     "\"fast\",\"extra\":{},\"delays\":[0,60,3]}",
     {NULL}},
    /* unknown keys, with the nearest known one when it is close (core keys too) */
    {"{\"url\":\"u\",\"token\":\"t\",\"cuont\":2,\"nmae\":\"x\",\"zzzzzz\":1,\"Url\":1}",
     {"sinks[0].cuont: unknown key (did you mean \"count\"?)",
      "sinks[0].nmae: unknown key (did you mean \"name\"?)", "sinks[0].zzzzzz: unknown key"}},
    {"{\"token\":\"t\"}", {"sinks[0].url: required, expected a non-empty string"}},
    {"{\"url\":\"a\\nb\",\"token\":\"t\"}",
     {"sinks[0].url: must not contain control characters "
      "(a line break would start another header or "
      "request)"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"count\":11}",
     {"sinks[0].count: expected an integer between 0 and 10, got 11"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"count\":2.5}",
     {"sinks[0].count: expected an integer between 0 and 10"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"count\":3}", {"sinks[0].count: expected an even number"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"ratio\":2}",
     {"sinks[0].ratio: expected a number between 0 and 1"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"on\":1}", {"sinks[0].on: expected true or false"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"mode\":\"medium\"}",
     {"sinks[0].mode: expected fast or slow"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"extra\":[]}", {"sinks[0].extra: expected an object"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"delays\":[]}",
     {"sinks[0].delays: expected a list of 1 to 3 numbers"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"delays\":[1,61]}",
     {"sinks[0].delays[1]: expected a number between 0 and 60"}},
    {"{\"url\":\"u\"}", {"sinks[0].token: required (or one of: token, tokens)"}},
    {"{\"url\":\"u\",\"token\":\"t\",\"tokens\":[\"t\"]}",
     {"sinks[0]: set one of token, tokens, not several"}},
    {"{\"url\":\"u\",\"tokens\":[\"t\",7]}", {"sinks[0].tokens[1]: expected a non-empty string"}},
    /* the type's check() runs on a configuration the table passed */
    {"{\"url\":\"u\",\"token\":\"t\",\"count\":0}", {"sinks[0]: count 0 needs on false"}},
    {"[]", {"sinks[0]: expected an object"}},
};

START_TEST(test_options_validate)
{
    const struct option_case *c = &option_cases[_i];

    assert_validate(&test_type, c->json, "sinks[0]", c->expect, N(c->expect), NULL, _i);
}
END_TEST

/* Defaults fill what was not set; values come typed. */
START_TEST(test_options_typed)
{
    cJSON *j = parse_json("{\"url\":\"u\",\"tokens\":[\"a\",\"b\"],\"mode\":\"fast\"}");
    sink_errors_t errs = {0};
    sink_config_t *cfg = sink_config_parse(&test_type, j, "sinks[0]", sink_common_keys, &errs);
    const sink_value_t *v;

    ck_assert_msg(cfg != NULL, "%s", errs_dump(&errs));
    ck_assert_ptr_null(sink_config_get(cfg, "nope"));
    v = sink_config_get(cfg, "url");
    ck_assert(v->set && v->present);
    ck_assert_str_eq(v->s, "u");
    v = sink_config_get(cfg, "count");
    ck_assert(!v->set && v->present);
    ck_assert_int_eq(v->i, 4);
    ck_assert(sink_config_get(cfg, "ratio")->d == 0.5);
    ck_assert_int_eq(sink_config_get(cfg, "on")->i, 1);
    ck_assert_int_eq(sink_config_get(cfg, "mode")->i, 0);
    ck_assert_str_eq(sink_config_get(cfg, "mode")->s, "fast");
    v = sink_config_get(cfg, "delays");
    ck_assert_uint_eq(v->count, 2);
    ck_assert(v->numbers[0] == 1 && v->numbers[1] == 2.5);
    v = sink_config_get(cfg, "tokens");
    ck_assert_uint_eq(v->count, 2);
    ck_assert_str_eq(v->strings[1], "b");
    ck_assert(!sink_config_get(cfg, "token")->present);
    ck_assert(!sink_config_get(cfg, "extra")->present);
    ck_assert_ptr_null(sink_config_get(cfg, "extra")->json);
    /* The configuration holds its own copy. */
    cJSON_Delete(j);
    ck_assert_str_eq(cJSON_GetObjectItem(sink_config_json(cfg), "url")->valuestring, "u");
    sink_config_free(cfg);
    sink_config_free(NULL);
}
END_TEST

/* A value never shows in a message, secrets least of all. */
START_TEST(test_options_never_quote)
{
    cJSON *j =
        parse_json("{\"url\":\"u\",\"token\":7,\"tokens\":[\"hunter2\",3],\"mode\":\"hunter3\"}");
    sink_errors_t errs = {0};

    ck_assert_int_eq(sink_validate(&test_type, j, "s", &errs), -1);
    ck_assert(!errs_contain(&errs, "hunter"));
    cJSON_Delete(j);
}
END_TEST

/*
 * The outbox is a property of the type: a SINK_F_OUTBOX type has the
 * outbox's options (declared once, by the core) without listing them, and
 * any other type refuses them.
 */
START_TEST(test_options_outbox)
{
    static const sink_option_t none[] = {{0}};
    const sink_type_t plain = {.name = "plain", .options = none};
    const sink_type_t queued = {.name = "queued", .flags = SINK_F_OUTBOX, .options = none};
    cJSON *j = parse_json("{\"timeout_s\":5}");
    sink_errors_t errs = {0};
    sink_config_t *cfg = sink_config_parse(&queued, j, "sinks[0]", sink_common_keys, &errs);

    ck_assert_msg(cfg != NULL, "%s", errs_dump(&errs));
    ck_assert_int_eq(sink_config_get(cfg, "timeout_s")->i, 5);
    ck_assert_uint_eq(sink_config_get(cfg, "retry_schedule_s")->count, 8);
    ck_assert(sink_config_get(cfg, "retry_schedule_s")->numbers[2] == 300);
    sink_config_free(cfg);
    ck_assert_int_eq(sink_validate(&plain, j, "sinks[0]", &errs), -1);
    ck_assert_str_eq(errs.msg[0], "sinks[0].timeout_s: unknown key");
    cJSON_Delete(j);
    j = parse_json("{\"timeout_s\":61,\"retry_schedule_s\":[0.5,700000]}");
    memset(&errs, 0, sizeof(errs));
    ck_assert_int_eq(sink_validate(&queued, j, "sinks[0]", &errs), -1);
    ck_assert_str_eq(errs.msg[0], "sinks[0].retry_schedule_s[1]: expected a number between 0 and "
                                  "604800");
    ck_assert_str_eq(errs.msg[1],
                     "sinks[0].timeout_s: expected an integer between 1 and 60, got 61");
    cJSON_Delete(j);
}
END_TEST

/* `session-bridge sinks`: every option with its type, bounds, default and description. */
START_TEST(test_options_doc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    sink_type_doc(&test_type, out);
    sink_type_doc(&sink_webhook_type, out);
    fclose(out);
    ck_assert_msg(strstr(text, "test\n  a table\n") && strstr(text, "integer 0..10, default 4") &&
                      strstr(text, "fast or slow, default \"slow\"") &&
                      strstr(text, "list of 1..3 numbers (each 0..60), default [1, 2.5]") &&
                      strstr(text, "one of: token, tokens"),
                  "%s", text);
    ck_assert_msg(strstr(text, "webhook (through the outbox)") &&
                      strstr(text, "timeout_s          integer 1..60, default 10") &&
                      strstr(text, "secret             secret, required"),
                  "%s", text);
    free(text);
}
END_TEST

/* ---- typed getters (tables) ---- */

static const struct string_case {
    const char *json, *key;
    bool required;
    const char *def;
    int rc;
    const char *out; /* NULL: expect NULL */
    const char *err; /* NULL: no error */
} string_cases[] = {
    {"{\"started\":\"sessions.started\"}", "started", true, NULL, 0, "sessions.started", NULL},
    {"{}", "started", false, "dflt", 0, "dflt", NULL},
    {"{}", "started", false, NULL, 0, NULL, NULL},
    {"{}", "started", true, NULL, -1, NULL,
     "sinks[1].topics.started: required, expected a non-empty string"},
    {"{\"started\":\"\"}", "started", false, "dflt", -1, "dflt",
     "sinks[1].topics.started: expected a non-empty string"},
    {"{\"started\":5}", "started", false, "dflt", -1, "dflt",
     "sinks[1].topics.started: expected a non-empty string"},
    {"{\"started\":null}", "started", false, "dflt", -1, "dflt",
     "sinks[1].topics.started: expected a non-empty string"},
    {"{\"started\":[\"a\"]}", "started", true, NULL, -1, NULL,
     "sinks[1].topics.started: expected a non-empty string"},
    {"{\"Started\":\"x\"}", "started", false, "dflt", 0, "dflt", NULL},
    {"[\"started\"]", "started", false, "dflt", 0, "dflt", NULL},
};

START_TEST(test_conf_string)
{
    const struct string_case *c = &string_cases[_i];
    cJSON *j = parse_json(c->json);
    sink_errors_t errs = {0};
    const char *out = "untouched";

    ck_assert_int_eq(
        sink_conf_string(j, "sinks[1].topics", c->key, c->required, c->def, &out, &errs), c->rc);
    if (c->out)
        ck_assert_str_eq(out, c->out);
    else
        ck_assert_ptr_null(out);
    if (c->err) {
        ck_assert_uint_eq(errs.count, 1);
        ck_assert_str_eq(errs.msg[0], c->err);
    } else {
        ck_assert_msg(errs.count == 0, "unexpected: %s", errs_dump(&errs));
    }
    cJSON_Delete(j);
}
END_TEST

static const struct int_case {
    const char *json;
    bool required;
    long long def, min, max;
    int rc;
    long long out;
    const char *err;
} int_cases[] = {
    {"{\"n\":5}", true, 0, 1, 10, 0, 5, NULL},
    {"{\"n\":1}", true, 0, 1, 10, 0, 1, NULL},
    {"{\"n\":10}", true, 0, 1, 10, 0, 10, NULL},
    {"{}", false, 7, 1, 10, 0, 7, NULL},
    {"{}", true, 7, 1, 10, -1, 7, "s.n: required, expected an integer between 1 and 10"},
    {"{\"n\":0}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10, got 0"},
    {"{\"n\":11}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10, got 11"},
    {"{\"n\":1.5}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":\"5\"}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":true}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":1e300}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":-9007199254740992}", false, 0, -9007199254740992LL, 0, 0, -9007199254740992LL, NULL},
    /* Past long long, infinite (cJSON's reading of 1e999) or at 2^63: no conversion is tried. */
    {"{\"n\":1e49}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":-1e49}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":1e999}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":-1e999}", false, 7, 1, 10, -1, 7, "s.n: expected an integer between 1 and 10"},
    {"{\"n\":9223372036854775808}", false, 7, 1, 10, -1, 7,
     "s.n: expected an integer between 1 and 10"},
    {"{\"n\":-9223372036854775808}", false, 7, 1, 10, -1, 7,
     "s.n: expected an integer between 1 and 10, got -9223372036854775808"},
};

/*
 * The one checked conversion: whole numbers within [min, max] only. The
 * doubles a JSON text can produce, and NaN, which none can but a caller
 * might compute.
 */
static const struct exact_case {
    double d;
    long long min, max;
    int rc;
    long long out;
} exact_cases[] = {
    {0, 0, 10, 0, 0},
    {10, 0, 10, 0, 10},
    {11, 0, 10, -1, -1},
    {-1, 0, 10, -1, -1},
    {1.5, 0, 10, -1, -1},
    {-0.5, -10, 10, -1, -1},
    {1e49, LLONG_MIN, LLONG_MAX, -1, -1},
    {-1e49, LLONG_MIN, LLONG_MAX, -1, -1},
    {9223372036854775808.0, LLONG_MIN, LLONG_MAX, -1, -1},
    {-9223372036854775808.0, LLONG_MIN, LLONG_MAX, 0, LLONG_MIN},
    {9223372036854774784.0, LLONG_MIN, LLONG_MAX, 0, 9223372036854774784LL},
    {9007199254740993.0, 0, 9007199254740992LL, 0, 9007199254740992LL}, /* reads as 2^53 */
    {HUGE_VAL, LLONG_MIN, LLONG_MAX, -1, -1},
    {-HUGE_VAL, LLONG_MIN, LLONG_MAX, -1, -1},
    {NAN, LLONG_MIN, LLONG_MAX, -1, -1},
    {-NAN, LLONG_MIN, LLONG_MAX, -1, -1},
};

START_TEST(test_exact_integer)
{
    const struct exact_case *c = &exact_cases[_i];
    long long out = -1;

    ck_assert_int_eq(sink_exact_integer(c->d, c->min, c->max, &out), c->rc);
    ck_assert_int_eq(out, c->out);
}
END_TEST

/* Values that go into a request: control characters refused, never quoted. */
START_TEST(test_conf_request_string)
{
    static const struct {
        const char *json;
        int rc;
        const char *err;
    } rows[] = {
        {"{\"k\":\"plain value, with spaces; and \u00e9\"}", 0, NULL},
        {"{\"k\":\"v\\r\\nX-Injected: yes\"}", -1,
         "a.k: must not contain control characters (a line break would start another header "
         "or request)"},
        {"{\"k\":\"v\\tw\"}", -1, "a.k: must not contain control characters"},
        {"{\"k\":\"v\\u001bw\"}", -1, "a.k: must not contain control characters"},
        {"{\"k\":\"v\\u007fw\"}", -1, "a.k: must not contain control characters"},
        {"{\"k\":\"\"}", -1, "a.k: expected a non-empty string"},
        {"{}", 0, NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cJSON *j = parse_json(rows[i].json);
        sink_errors_t errs = {0};
        const char *out = "untouched";

        ck_assert_int_eq(sink_conf_request_string(j, "a", "k", false, NULL, &out, &errs),
                         rows[i].rc);
        if (rows[i].err) {
            ck_assert_uint_eq(errs.count, 1);
            ck_assert_msg(strncmp(errs.msg[0], rows[i].err, strlen(rows[i].err)) == 0,
                          "row %zu: %s", i, errs.msg[0]);
            ck_assert_ptr_null(strstr(errs.msg[0], "X-Injected"));
            ck_assert_ptr_null(out);
        } else {
            ck_assert_msg(errs.count == 0, "row %zu: %s", i, errs_dump(&errs));
        }
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(test_conf_int)
{
    const struct int_case *c = &int_cases[_i];
    cJSON *j = parse_json(c->json);
    sink_errors_t errs = {0};
    long long out = -12345;

    ck_assert_int_eq(sink_conf_int(j, "s", "n", c->required, c->def, c->min, c->max, &out, &errs),
                     c->rc);
    ck_assert_int_eq(out, c->out);
    if (c->err) {
        ck_assert_uint_eq(errs.count, 1);
        ck_assert_str_eq(errs.msg[0], c->err);
    } else {
        ck_assert_msg(errs.count == 0, "unexpected: %s", errs_dump(&errs));
    }
    cJSON_Delete(j);
}
END_TEST

static const struct bool_case {
    const char *json;
    bool def;
    int rc;
    bool out;
    const char *err;
} bool_cases[] = {
    {"{\"b\":true}", false, 0, true, NULL},
    {"{\"b\":false}", true, 0, false, NULL},
    {"{}", true, 0, true, NULL},
    {"{\"b\":\"true\"}", false, -1, false, "a.b: expected true or false"},
    {"{\"b\":1}", true, -1, true, "a.b: expected true or false"},
};

START_TEST(test_conf_bool)
{
    const struct bool_case *c = &bool_cases[_i];
    cJSON *j = parse_json(c->json);
    sink_errors_t errs = {0};
    bool out = !c->out;

    ck_assert_int_eq(sink_conf_bool(j, "a", "b", c->def, &out, &errs), c->rc);
    ck_assert(out == c->out);
    if (c->err) {
        ck_assert_uint_eq(errs.count, 1);
        ck_assert_str_eq(errs.msg[0], c->err);
    } else {
        ck_assert_uint_eq(errs.count, 0);
    }
    cJSON_Delete(j);
}
END_TEST

/* ---- registry and logger ---- */

START_TEST(test_registry)
{
    size_t n = 0;

    ck_assert_ptr_eq(sink_type_find("kafka"), &sink_kafka_type);
    ck_assert_ptr_eq(sink_type_find("stdout"), &sink_stdout_type);
    ck_assert_ptr_eq(sink_type_find("webhook"), &sink_webhook_type);
    ck_assert_uint_eq(sink_webhook_type.flags & SINK_F_OUTBOX, SINK_F_OUTBOX);
    ck_assert_ptr_nonnull(sink_webhook_type.capacity);
    ck_assert_ptr_eq(sink_type_find("file"), &sink_file_type);
    ck_assert_ptr_eq(sink_type_find("redis_stream"), &sink_redis_stream_type);
    ck_assert_ptr_null(sink_type_find("Kafka"));
    ck_assert_ptr_null(sink_type_find("webhook-nope"));
    ck_assert_ptr_null(sink_type_find(NULL));
    for (const sink_type_t *const *t = sink_builtin_types; *t; t++, n++) {
        /* check, ready and capacity are optional; every built-in uses the loop and can be
         * probed by check --connect */
        ck_assert((*t)->name && (*t)->desc && (*t)->options && (*t)->init && (*t)->submit &&
                  (*t)->flush && (*t)->exit && (*t)->probe && ((*t)->flags & SINK_F_LOOP));
    }
    ck_assert_uint_eq(n, 5);
    /* The optional ready() reads through its default. */
    ck_assert_ptr_null(sink_stdout_type.ready);
    ck_assert_int_eq(sink_ready(&sink_stdout_type, NULL), 1);
}
END_TEST

static struct {
    int calls;
    sink_log_level_t level;
    char sink[64], msg[256];
    void *opaque;
} logged;

static void capture_logger(sink_log_level_t level, const char *sink, const char *msg, void *opaque)
{
    logged.calls++;
    logged.level = level;
    snprintf(logged.sink, sizeof(logged.sink), "%s", sink);
    snprintf(logged.msg, sizeof(logged.msg), "%s", msg);
    logged.opaque = opaque;
}

START_TEST(test_logger)
{
    int marker;

    memset(&logged, 0, sizeof(logged));
    sink_set_logger(capture_logger, SINK_LOG_WARN, &marker);
    sink_log(SINK_LOG_DEBUG, "bus", "hidden %d", 1);
    sink_log(SINK_LOG_INFO, "bus", "hidden %d", 2);
    ck_assert_int_eq(logged.calls, 0);
    sink_log(SINK_LOG_WARN, "bus", "shown %d %s", 3, "x");
    sink_log(SINK_LOG_ERROR, "bus", "shown %d", 4);
    ck_assert_int_eq(logged.calls, 2);
    ck_assert_int_eq(logged.level, SINK_LOG_ERROR);
    ck_assert_str_eq(logged.sink, "bus");
    ck_assert_str_eq(logged.msg, "shown 4");
    ck_assert_ptr_eq(logged.opaque, &marker);

    /* Back to the default stderr logger; nothing reaches the capture any more. */
    sink_set_logger(NULL, SINK_LOG_DEBUG, NULL);
    sink_log(SINK_LOG_DEBUG, "bus", "to stderr");
    ck_assert_int_eq(logged.calls, 2);
}
END_TEST

/* ---- kafka: validation (table) ---- */

static const struct validate_case {
    const char *json;
    int rc;
    const char *expect[4]; /* substrings that must each appear in some message */
    const char *never;     /* must appear in no message */
} validate_cases[] = {
    {"{\"name\":\"bus\",\"type\":\"kafka\",\"events\":[\"started\"],\"sources\":[\"a\"],"
     "\"brokers\":\"127.0.0.1:9092\"}",
     0,
     {NULL},
     NULL},
    {"{\"brokers\":\"b:9092\",\"topics\":{\"started\":\"sb.{source}.{type}\"},"
     "\"properties\":{\"compression.type\":\"lz4\",\"message.timeout.ms\":3000,"
     "\"enable.idempotence\":true,\"acks\":\"all\",\"socket.keepalive.enable\":true,"
     "\"request.required.acks\":-1}}",
     0,
     {NULL},
     NULL},
    {"[]", -1, {"sinks[1]: expected an object"}, NULL},
    {"{\"type\":\"kafka\"}", -1, {"sinks[1].brokers: required, expected a non-empty string"}, NULL},
    {"{\"brokers\":\"b\",\"brokres\":\"x\",\"propertys\":{}}",
     -1,
     {"sinks[1].brokres: unknown key", "sinks[1].propertys: unknown key"},
     NULL},
    {"{\"brokers\":\"b\",\"topics\":\"sessions\"}",
     -1,
     {"sinks[1].topics: expected an object"},
     NULL},
    {"{\"brokers\":\"b\",\"topics\":{\"started\":5,\"strated\":\"x\"}}",
     -1,
     {"sinks[1].topics.started: expected a non-empty string",
      "sinks[1].topics.strated: unknown key"},
     NULL},
    {"{\"brokers\":\"b\",\"topics\":{\"completed\":\"sessions/completed\"}}",
     -1,
     {"sinks[1].topics.completed: expected a Kafka topic name"},
     NULL},
    {"{\"brokers\":\"b\",\"topics\":{\"cancelled\":\"sb.{sorce}\"}}",
     -1,
     {"sinks[1].topics.cancelled: expected a Kafka topic name"},
     NULL},
    /* 186 characters and {source} (64): 250, one past the limit. */
    {"{\"brokers\":\"b\",\"topics\":{\"started\":\"{source}"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxx\"}}",
     -1,
     {"sinks[1].topics.started: too long"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":[\"acks\"]}",
     -1,
     {"sinks[1].properties: expected an object"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"foo.bar\":\"1\"}}",
     -1,
     {"sinks[1].properties.foo.bar: No such configuration property: \"foo.bar\""},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"compression.type\":\"lz5\"}}",
     -1,
     {"sinks[1].properties.compression.type: Invalid value \"lz5\""},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"linger.ms\":{\"v\":1}}}",
     -1,
     {"sinks[1].properties.linger.ms: expected a string, number or boolean"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"enable.idempotence\":false}}",
     -1,
     {"sinks[1].properties.enable.idempotence: refused: enable.idempotence must stay true"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"acks\":1}}",
     -1,
     {"sinks[1].properties.acks: refused: acks must stay all"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"request.required.acks\":\"0\"}}",
     -1,
     {"sinks[1].properties.request.required.acks: refused: acks must stay all"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"transactional.id\":\"tx\"}}",
     -1,
     {"sinks[1].properties.transactional.id: refused"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"bootstrap.servers\":\"x:1\"}}",
     -1,
     {"sinks[1].properties.bootstrap.servers: set the sink's brokers key instead"},
     NULL},
    /* Secrets: librdkafka echoes bad values; the message must not. */
    {"{\"brokers\":\"b\",\"properties\":{\"sasl.kerberos.min.time.before.relogin\":"
     "\"notanumber-s3cr3t\"}}",
     -1,
     {"sinks[1].properties.sasl.kerberos.min.time.before.relogin: "},
     "s3cr3t"},
    {"{\"brokers\":\"b\",\"properties\":{\"sasl.kerberos.min.time.before.relogin\":-54321}}",
     -1,
     {"sinks[1].properties.sasl.kerberos.min.time.before.relogin: ", "(redacted)"},
     "54321"},
    {"{\"brokers\":\"b\",\"properties\":{\"SSL.Key.Password\":\"hunter2-s3cr3t\"}}",
     -1,
     {"sinks[1].properties.SSL.Key.Password: No such configuration property"},
     "hunter2"},
    {"{\"brokers\":\"b\",\"properties\":{\"sasl.password\":{\"v\":\"hunter2\"}}}",
     -1,
     {"sinks[1].properties.sasl.password: expected a string, number or boolean"},
     "hunter2"},
    /* Checks across properties, which only rd_kafka_new() makes. */
    {"{\"brokers\":\"b\",\"properties\":{\"max.in.flight\":10}}",
     -1,
     {"sinks[1].properties: `max.in.flight` must be set <= 5"},
     NULL},
    {"{\"brokers\":\"b\",\"properties\":{\"security.protocol\":\"ssl\","
     "\"ssl.key.location\":\"/nonexistent/s3cr3t.pem\"}}",
     -1,
     {"sinks[1].properties: ", "ssl.key.location"},
     "s3cr3t"},
    /* Everything wrong at once is reported at once. */
    {"{\"brokres\":1,\"topics\":{\"strated\":\"x\"},\"properties\":{\"acks\":0,\"foo\":1}}",
     -1,
     {"sinks[1].brokres: unknown key", "sinks[1].brokers: required",
      "sinks[1].topics.strated: unknown key", "sinks[1].properties.foo: No such"},
     NULL},
};

START_TEST(test_kafka_validate)
{
    const struct validate_case *c = &validate_cases[_i];
    cJSON *j = parse_json(c->json);
    sink_errors_t errs = {0};
    int rc = sink_validate(&sink_kafka_type, j, "sinks[1]", &errs);

    ck_assert_msg(rc == c->rc, "case %d: rc %d: %s", _i, rc, errs_dump(&errs));
    ck_assert_msg((rc == 0) == (errs.count == 0), "case %d: %s", _i, errs_dump(&errs));
    for (int k = 0; k < 4 && c->expect[k]; k++)
        ck_assert_msg(errs_contain(&errs, c->expect[k]), "case %d: no \"%s\" in %s", _i,
                      c->expect[k], errs_dump(&errs));
    if (c->never)
        ck_assert_msg(!errs_contain(&errs, c->never), "case %d: leaked \"%s\": %s", _i, c->never,
                      errs_dump(&errs));
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_kafka_create_invalid)
{
    cJSON *j = parse_json("{\"brokres\":\"x\",\"properties\":{\"acks\":1}}");
    char err[512] = "";

    ck_assert_ptr_null(
        sink_init(&sink_kafka_type, j, &(sink_host_t){.name = "bus"}, err, sizeof(err)));
    ck_assert_msg(strstr(err, "brokres: unknown key") && strstr(err, "brokers: required") &&
                      strstr(err, "properties.acks: refused"),
                  "%s", err);
    cJSON_Delete(j);
}
END_TEST

/* ---- kafka against the mock cluster ---- */

typedef struct mock {
    rd_kafka_t *rk; /* only for the cluster's bookkeeping */
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
} mock_t;

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void mock_start(mock_t *m, int brokers)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];

    /* The handle has no bootstrap.servers and would warn about it. */
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    ck_assert_msg(m->rk != NULL, "%s", err);
    m->mc = rd_kafka_mock_cluster_new(m->rk, brokers);
    ck_assert_ptr_nonnull(m->mc);
    m->bootstraps = rd_kafka_mock_cluster_bootstraps(m->mc);
}

static void mock_topics(mock_t *m, const char *const *topics)
{
    for (; *topics; topics++)
        ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, *topics, 1, 1), 0);
}

static void mock_stop(mock_t *m)
{
    rd_kafka_mock_cluster_destroy(m->mc);
    rd_kafka_destroy(m->rk);
    /* Every handle, ours and the sink's, must be gone. */
    ck_assert_int_eq(rd_kafka_wait_destroyed(5000), 0);
}

static void *kafka_sink_new(const mock_t *m, const char *extra)
{
    char json[1024], err[512] = "";
    cJSON *conf;
    void *ctx;

    snprintf(json, sizeof(json), "{\"name\":\"bus\",\"type\":\"kafka\",\"brokers\":\"%s\"%s}",
             m->bootstraps, extra);
    conf = parse_json(json);
    ctx = sink_init(&sink_kafka_type, conf, &(sink_host_t){.name = "bus"}, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "create: %s", err);
    cJSON_Delete(conf); /* the sink keeps no pointer into it */
    return ctx;
}

static const char *header(rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size)
{
    const void *val;
    size_t len;

    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return "(missing)";
    snprintf(buf, size, "%.*s", (int)len, (const char *)val);
    return buf;
}

/* A consumer reading partition 0 of each topic from the beginning; no group join. */
static rd_kafka_t *consumer_new(const mock_t *m, const char *const *topics)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(4);
    rd_kafka_t *rk;
    char err[512];

    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", m->bootstraps, err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "sink_test", err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    ck_assert_msg(rk != NULL, "%s", err);
    for (; *topics; topics++)
        rd_kafka_topic_partition_list_add(parts, *topics, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

/* The next message, skipping consumer events; NULL after timeout_ms. */
static rd_kafka_message_t *consume_one(rd_kafka_t *rk, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    while (now_ms() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);

        if (msg && !msg->err)
            return msg;
        if (msg)
            rd_kafka_message_destroy(msg);
    }
    return NULL;
}

/* A broker with topics and a sink whose started topic is "sb.{source}.{type}". */
static void *kafka_templated_start(mock_t *m, const char *const *topics)
{
    sink_set_logger(NULL, SINK_LOG_WARN, NULL);
    mock_start(m, 1);
    mock_topics(m, topics);
    return kafka_sink_new(m, ",\"topics\":{\"started\":\"sb.{source}.{type}\"},"
                             "\"properties\":{\"linger.ms\":0}");
}

START_TEST(test_kafka_end_to_end)
{
    static const char *const topics[] = {"sb.century.started", "sessions.completed",
                                         "sessions.cancelled", NULL};
    mock_t m;
    test_event_t ev[3];
    test_ticket_t t[3];
    rd_kafka_t *consumer;
    void *ctx;

    ctx = kafka_templated_start(&m, topics);

    event_init(&ev[0], "century", "s-1", "started", 0);
    event_init(&ev[1], "century", "s-1", "completed", 1);
    event_init(&ev[2], "quiz", "q-9", "cancelled", 2);
    for (int i = 0; i < 3; i++) {
        ticket_init(&t[i]);
        ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev[i].ev, &t[i].t), SINK_OK);
    }
    for (int i = 0; i < 3; i++) /* delivery reports are served by flush() or the loop */
        ck_assert_int_eq(t[i].calls, 0);
    ck_assert(flush_until_resolved(&sink_kafka_type, ctx, t, 3, 10000));
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(t[i].calls, 1);
        ck_assert_msg(t[i].result == SINK_OK, "ticket %d: %d %s", i, t[i].result, t[i].err);
    }
    ck_assert_uint_eq(sink_kafka_type.flush(ctx, 0), 0);
    ck_assert_int_eq(sink_kafka_type.ready(ctx), 1);
    ck_assert_uint_eq(sink_kafka_type.flush(ctx, sink_deadline_in(1000)), 0);

    consumer = consumer_new(&m, topics);
    for (int i = 0; i < 3; i++) {
        rd_kafka_message_t *msg = consume_one(consumer, 10000);
        rd_kafka_headers_t *hdrs = NULL;
        test_event_t *e = NULL;
        char buf[256], src[128];

        ck_assert_msg(msg != NULL, "message %d not consumed", i);
        for (int k = 0; k < 3; k++) {
            if (strcmp(rd_kafka_topic_name(msg->rkt), topics[k]) == 0)
                e = &ev[k];
        }
        ck_assert_msg(e != NULL, "unexpected topic %s", rd_kafka_topic_name(msg->rkt));
        ck_assert_uint_eq(msg->key_len, strlen(e->key));
        ck_assert(memcmp(msg->key, e->key, msg->key_len) == 0);
        ck_assert_uint_eq(msg->len, e->ev.json_len);
        ck_assert(memcmp(msg->payload, e->json, msg->len) == 0);
        ck_assert_int_eq(rd_kafka_message_headers(msg, &hdrs), 0);
        ck_assert_uint_eq(rd_kafka_header_cnt(hdrs), 4);
        ck_assert_str_eq(header(hdrs, "ce_id", buf, sizeof(buf)), e->id);
        ck_assert_str_eq(header(hdrs, "ce_type", buf, sizeof(buf)), e->type);
        snprintf(src, sizeof(src), "session-bridge/%s", e->ev.source);
        ck_assert_str_eq(header(hdrs, "ce_source", buf, sizeof(buf)), src);
        ck_assert_str_eq(header(hdrs, "content-type", buf, sizeof(buf)),
                         "application/cloudevents+json");
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);

    sink_kafka_type.exit(ctx);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(t[i].calls, 1); /* destroy resolved nothing twice */
    mock_stop(&m);
}
END_TEST

/*
 * The sink remembers where the last event of each kind from a source went;
 * events of sources taking turns, and of the same source in another kind,
 * must still each reach their own topic with their own ce_source.
 */
START_TEST(test_kafka_routes_per_source)
{
    static const char *const topics[] = {"sb.century.started", "sb.quiz.started",
                                         "sessions.completed", NULL};
    static const struct {
        const char *source, *kind, *topic;
    } rows[] = {
        {"century", "started", "sb.century.started"},
        {"quiz", "started", "sb.quiz.started"},
        {"century", "started", "sb.century.started"},
        {"quiz", "completed", "sessions.completed"},
        {"quiz", "started", "sb.quiz.started"},
        {"century", "completed", "sessions.completed"},
    };
    enum { N = sizeof(rows) / sizeof(rows[0]) };
    mock_t m;
    test_event_t ev[N];
    test_ticket_t t[N];
    rd_kafka_t *consumer;
    void *ctx;

    ctx = kafka_templated_start(&m, topics);
    for (int i = 0; i < N; i++) {
        char session[16];

        snprintf(session, sizeof(session), "s-%d", i);
        event_init(&ev[i], rows[i].source, session, rows[i].kind, i);
        ticket_init(&t[i]);
        ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev[i].ev, &t[i].t), SINK_OK);
    }
    ck_assert(flush_until_resolved(&sink_kafka_type, ctx, t, N, 10000));
    for (int i = 0; i < N; i++)
        ck_assert_msg(t[i].result == SINK_OK, "ticket %d: %d %s", i, t[i].result, t[i].err);

    consumer = consumer_new(&m, topics);
    for (int n = 0; n < N; n++) {
        rd_kafka_message_t *msg = consume_one(consumer, 10000);
        rd_kafka_headers_t *hdrs = NULL;
        char buf[256], src[128];
        int i = -1;

        ck_assert_msg(msg != NULL, "message %d not consumed", n);
        for (int k = 0; k < N; k++) {
            if (msg->key_len == strlen(ev[k].key) && memcmp(msg->key, ev[k].key, msg->key_len) == 0)
                i = k;
        }
        ck_assert_msg(i >= 0, "unexpected key %.*s", (int)msg->key_len, (const char *)msg->key);
        ck_assert_str_eq(rd_kafka_topic_name(msg->rkt), rows[i].topic);
        ck_assert_int_eq(rd_kafka_message_headers(msg, &hdrs), 0);
        snprintf(src, sizeof(src), "session-bridge/%s", rows[i].source);
        ck_assert_str_eq(header(hdrs, "ce_source", buf, sizeof(buf)), src);
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    sink_kafka_type.exit(ctx);
    mock_stop(&m);
}
END_TEST

/*
 * On the bridge's loop the producer is never polled: librdkafka wakes the
 * loop through the main queue's pipe and the watch serves the delivery
 * reports. A loop that only sleeps until something happens must see every
 * ticket resolved.
 */
START_TEST(test_kafka_on_the_loop)
{
    static const char *const topics[] = {"sessions.started", "sessions.completed", NULL};
    char json[1024], lerr[128];
    mock_t m;
    test_event_t ev[2];
    test_ticket_t t[2];
    loop_t *loop = loop_new(lerr, sizeof(lerr));
    void *ctx;

    ck_assert_msg(loop != NULL, "%s", lerr);
    sink_set_logger(NULL, SINK_LOG_WARN, NULL);
    mock_start(&m, 1);
    mock_topics(&m, topics);
    snprintf(json, sizeof(json),
             "{\"name\":\"bus\",\"type\":\"kafka\",\"brokers\":\"%s\","
             "\"properties\":{\"linger.ms\":0,\"debug\":\"generic\"}}",
             m.bootstraps);
    /* debug logs from inside rd_kafka_new(): the main queue is not empty
     * when the sink asks for its wake-ups, as when a broker refuses at once */
    ctx = sink_on_loop(&sink_kafka_type, "bus", json, loop_sink_api(loop));
    event_init(&ev[0], "century", "s-1", "started", 0);
    event_init(&ev[1], "century", "s-1", "completed", 1);
    for (int i = 0; i < 2; i++) {
        ticket_init(&t[i]);
        ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev[i].ev, &t[i].t), SINK_OK);
    }
    sink_done_on_loop(&sink_kafka_type, ctx, loop_sink_api(loop), t, 2, 10000);
    loop_free(loop);
    mock_stop(&m);
}
END_TEST

static void set_brokers(rd_kafka_mock_cluster_t *mc, int nbrokers, bool up)
{
    /* -1 means every broker (documented); fall back to each id if refused. */
    rd_kafka_resp_err_t err =
        up ? rd_kafka_mock_broker_set_up(mc, -1) : rd_kafka_mock_broker_set_down(mc, -1);

    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    for (int id = 1; id <= nbrokers; id++) {
        err = up ? rd_kafka_mock_broker_set_up(mc, id) : rd_kafka_mock_broker_set_down(mc, id);
        ck_assert_int_eq(err, 0);
    }
}

START_TEST(test_kafka_brokers_down)
{
    static const char *const topics[] = {"sessions.started", NULL};
    mock_t m;
    test_event_t ev[4];
    test_ticket_t t[4];
    void *ctx;
    int64_t start;

    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
    mock_start(&m, 1);
    mock_topics(&m, topics);
    /* Short timeouts and backoffs keep this test to seconds. */
    ctx = kafka_sink_new(&m, ",\"properties\":{\"message.timeout.ms\":3000,"
                             "\"reconnect.backoff.ms\":100,\"reconnect.backoff.max.ms\":500,"
                             "\"linger.ms\":0}");

    /* Up: delivered. */
    event_init(&ev[0], "century", "s-1", "started", 0);
    ticket_init(&t[0]);
    ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev[0].ev, &t[0].t), SINK_OK);
    ck_assert(flush_until_resolved(&sink_kafka_type, ctx, t, 1, 10000));
    ck_assert_int_eq(t[0].result, SINK_OK);
    ck_assert_int_eq(sink_kafka_type.ready(ctx), 1);

    /* Down: every ticket resolves with RETRY within message.timeout.ms (+ the scan). */
    set_brokers(m.mc, 1, false);
    start = now_ms();
    for (int i = 1; i <= 2; i++) {
        event_init(&ev[i], "century", "s-2", "started", i);
        ticket_init(&t[i]);
        ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev[i].ev, &t[i].t), SINK_OK);
    }
    ck_assert_int_eq(t[1].calls + t[2].calls, 0);
    ck_assert(flush_until_resolved(&sink_kafka_type, ctx, &t[1], 2, 8000));
    ck_assert_int_lt(now_ms() - start, 6000);
    for (int i = 1; i <= 2; i++) {
        ck_assert_int_eq(t[i].calls, 1);
        ck_assert_msg(t[i].result == SINK_ERR_RETRY, "ticket %d: %d %s", i, t[i].result, t[i].err);
        ck_assert_str_ne(t[i].err, "");
    }
    ck_assert_uint_eq(sink_kafka_type.flush(ctx, 0), 0);
    ck_assert_uint_eq(sink_kafka_type.flush(ctx, sink_deadline_in(0)), 0);
    ck_assert_int_eq(sink_kafka_type.ready(ctx), 0);

    /* Up again: idle, flush()'s metadata request notices; then new events are delivered. */
    set_brokers(m.mc, 1, true);
    start = now_ms();
    while (!sink_kafka_type.ready(ctx) && now_ms() - start < 10000)
        if (sink_kafka_type.flush(ctx, sink_deadline_in(100)) == 0)
            usleep(100 * 1000); /* nothing pending: flush() returns at once */
    ck_assert_int_eq(sink_kafka_type.ready(ctx), 1);

    event_init(&ev[3], "century", "s-3", "started", 3);
    ticket_init(&t[3]);
    ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev[3].ev, &t[3].t), SINK_OK);
    ck_assert(flush_until_resolved(&sink_kafka_type, ctx, &t[3], 1, 10000));
    ck_assert_msg(t[3].result == SINK_OK, "%d %s", t[3].result, t[3].err);
    ck_assert_uint_eq(sink_kafka_type.flush(ctx, 0), 0);

    sink_kafka_type.exit(ctx);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(t[i].calls, 1);
    mock_stop(&m);
}
END_TEST

START_TEST(test_kafka_fatal)
{
    static const char *const topics[] = {"sessions.started", NULL};
    mock_t m;
    test_event_t ev;
    test_ticket_t t;
    void *ctx;
    sink_result_t r;

    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
    mock_start(&m, 1);
    mock_topics(&m, topics);
    /* The idempotent producer treats this answer to InitProducerId as fatal. */
    rd_kafka_mock_push_request_errors(m.mc, API_INIT_PRODUCER_ID, 1,
                                      RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED);
    ctx = kafka_sink_new(&m, "");

    event_init(&ev, "century", "s-1", "started", 0);
    ticket_init(&t);
    r = sink_kafka_type.submit(ctx, &ev.ev, &t.t);
    if (r == SINK_OK) {
        ck_assert(flush_until_resolved(&sink_kafka_type, ctx, &t, 1, 10000));
        ck_assert_int_eq(t.calls, 1);
        ck_assert_msg(t.result == SINK_ERR_FATAL, "%d %s", t.result, t.err);
    } else {
        ck_assert_int_eq(r, SINK_ERR_FATAL);
        ck_assert_int_eq(t.calls, 0);
    }
    ck_assert_int_eq(sink_kafka_type.ready(ctx), 0);
    ticket_init(&t);
    ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev.ev, &t.t), SINK_ERR_FATAL);
    ck_assert_int_eq(t.calls, 0);
    ck_assert_uint_eq(sink_kafka_type.flush(ctx, 0), 0);
    sink_kafka_type.exit(ctx);
    mock_stop(&m);
}
END_TEST

/* exit() with an undeliverable event: the ticket still resolves, once. */
START_TEST(test_kafka_destroy_resolves)
{
    static const char *const topics[] = {"sessions.started", NULL};
    mock_t m;
    test_event_t ev;
    test_ticket_t t;
    void *ctx;
    int64_t start;

    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
    mock_start(&m, 1);
    mock_topics(&m, topics);
    set_brokers(m.mc, 1, false);
    ctx = kafka_sink_new(&m, ",\"properties\":{\"message.timeout.ms\":1000}");
    event_init(&ev, "century", "s-1", "started", 0);
    ticket_init(&t);
    ck_assert_int_eq(sink_kafka_type.submit(ctx, &ev.ev, &t.t), SINK_OK);
    start = now_ms();
    sink_kafka_type.exit(ctx);
    ck_assert_int_lt(now_ms() - start, 5000);
    ck_assert_int_eq(t.calls, 1);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    mock_stop(&m);
}
END_TEST

/* ---- stdout ---- */

/* Runs fn with fd 1 replaced by fd; stdout is flushed around the swap. */
static void with_stdout(int fd, void (*fn)(void *), void *arg)
{
    int saved;

    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fd, STDOUT_FILENO), 0);
    fn(arg);
    fflush(stdout);
    clearerr(stdout);
    ck_assert_int_ge(dup2(saved, STDOUT_FILENO), 0);
    close(saved);
}

typedef struct stdout_run {
    void *ctx;
    test_event_t ev[3];
    test_ticket_t t[3];
    sink_result_t r[3];
    int n;
} stdout_run_t;

static void stdout_submit_all(void *arg)
{
    stdout_run_t *run = arg;

    for (int i = 0; i < run->n; i++)
        run->r[i] = sink_stdout_type.submit(run->ctx, &run->ev[i].ev, &run->t[i].t);
}

START_TEST(test_stdout_lines)
{
    cJSON *conf = parse_json("{\"name\":\"console\",\"type\":\"stdout\",\"events\":[\"started\"]}");
    stdout_run_t run = {.n = 3};
    char err[256] = "", line[1024];
    FILE *tmp = tmpfile();
    int lines = 0;

    ck_assert_ptr_nonnull(tmp);
    run.ctx =
        sink_init(&sink_stdout_type, conf, &(sink_host_t){.name = "console"}, err, sizeof(err));
    ck_assert_msg(run.ctx != NULL, "%s", err);
    for (int i = 0; i < 3; i++) {
        event_init(&run.ev[i], "century", "s-1", i == 0 ? "started" : "completed", i);
        ticket_init(&run.t[i]);
    }
    with_stdout(fileno(tmp), stdout_submit_all, &run);

    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(run.r[i], SINK_OK);
        ck_assert_int_eq(run.t[i].calls, 1); /* resolved inside submit() */
        ck_assert_int_eq(run.t[i].result, SINK_OK);
    }
    ck_assert_uint_eq(sink_stdout_type.flush(run.ctx, 0), 0);
    ck_assert_int_eq(sink_ready(&sink_stdout_type, run.ctx), 1);
    ck_assert_int_eq(sink_stdout_type.flush(run.ctx, 0), 0);

    rewind(tmp);
    while (fgets(line, sizeof(line), tmp)) {
        ck_assert_int_lt(lines, 3);
        ck_assert_uint_eq(strlen(line), run.ev[lines].ev.json_len + 1);
        ck_assert(line[run.ev[lines].ev.json_len] == '\n');
        line[run.ev[lines].ev.json_len] = '\0';
        ck_assert_str_eq(line, run.ev[lines].json);
        lines++;
    }
    ck_assert_int_eq(lines, 3);
    fclose(tmp);
    sink_stdout_type.exit(run.ctx);
    sink_stdout_type.exit(NULL);
    cJSON_Delete(conf);
}
END_TEST

START_TEST(test_stdout_write_error)
{
    cJSON *conf = parse_json("{}");
    stdout_run_t run = {.n = 1};
    char err[256] = "";
    int fd = open("/dev/null", O_RDONLY); /* writes fail with EBADF */

    ck_assert_int_ge(fd, 0);
    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
    run.ctx =
        sink_init(&sink_stdout_type, conf, &(sink_host_t){.name = "console"}, err, sizeof(err));
    ck_assert_ptr_nonnull(run.ctx);
    event_init(&run.ev[0], "century", "s-1", "started", 0);
    ticket_init(&run.t[0]);
    with_stdout(fd, stdout_submit_all, &run);
    close(fd);
    ck_assert_int_eq(run.r[0], SINK_OK);
    ck_assert_int_eq(run.t[0].calls, 1);
    ck_assert_int_eq(run.t[0].result, SINK_ERR_RETRY);
    ck_assert_msg(strstr(run.t[0].err, "write to stdout") != NULL, "%s", run.t[0].err);
    sink_stdout_type.exit(run.ctx);
    cJSON_Delete(conf);
}
END_TEST

START_TEST(test_stdout_validate)
{
    cJSON *ok = parse_json("{\"name\":\"c\",\"type\":\"stdout\",\"events\":[],\"sources\":[]}");
    cJSON *bad = parse_json("{\"name\":\"c\",\"type\":\"stdout\",\"path\":\"/tmp/x\",\"fsync\":1}");
    sink_errors_t errs = {0};
    char err[256] = "";

    ck_assert_int_eq(sink_validate(&sink_stdout_type, ok, "sinks[0]", &errs), 0);
    ck_assert_uint_eq(errs.count, 0);
    ck_assert_int_eq(sink_validate(&sink_stdout_type, bad, "sinks[0]", &errs), -1);
    ck_assert_uint_eq(errs.count, 2);
    ck_assert_str_eq(errs.msg[0], "sinks[0].path: unknown key");
    ck_assert_str_eq(errs.msg[1], "sinks[0].fsync: unknown key");
    ck_assert_ptr_null(
        sink_init(&sink_stdout_type, bad, &(sink_host_t){.name = "c"}, err, sizeof(err)));
    ck_assert_msg(strstr(err, "path: unknown key") != NULL, "%s", err);
    cJSON_Delete(ok);
    cJSON_Delete(bad);
}
END_TEST

/* sink_probe() of a kafka sink on brokers with extra keys (a JSON fragment), within budget_ms. */
static int kafka_probe_with(const char *brokers, const char *extra, int budget_ms, char *msg,
                            size_t size)
{
    char json[1024];
    cJSON *conf;
    int rc;

    snprintf(json, sizeof(json), "{\"name\":\"bus\",\"type\":\"kafka\",\"brokers\":\"%s\",%s}",
             brokers, extra);
    conf = parse_json(json);
    rc = sink_probe(&sink_kafka_type, conf, &(sink_host_t){.name = "bus"},
                    sink_deadline_in(budget_ms), msg, size);
    cJSON_Delete(conf);
    return rc;
}

/*
 * check --connect's probe: the brokers and the partitions of each topic
 * from one metadata request, a missing topic a failure (and not created:
 * the mock creates topics a metadata request names), a {source} template
 * not checked, and a cluster that does not answer a failure within the
 * deadline, with no secret property in the message.
 */
START_TEST(test_kafka_probe)
{
    static const char *const topics[] = {"sessions.started", "sessions.completed", NULL};
    static const char absent[] = "\"topics\":{\"cancelled\":\"sessions.absent\"}";
    char msg[1024];
    mock_t m;
    int64_t start;

    sink_set_logger(NULL, SINK_LOG_ERROR, NULL);
    mock_start(&m, 3);
    mock_topics(&m, topics);
    ck_assert_int_eq(kafka_probe_with(m.bootstraps,
                                      "\"topics\":{\"started\":\"sessions.started\","
                                      "\"completed\":\"sessions.completed\","
                                      "\"cancelled\":\"sessions.{source}\"}",
                                      5000, msg, sizeof(msg)),
                     0);
    ck_assert_str_eq(msg, "3 brokers, topic sessions.started: 1 partition, topic "
                          "sessions.completed: 1 partition, topic sessions.{source}: one per "
                          "source, not checked");

    /* A missing topic fails the probe; asked again, still missing: the probe did not create it. */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(kafka_probe_with(m.bootstraps, absent, 5000, msg, sizeof(msg)), -1);
        ck_assert_msg(strstr(msg, "topic sessions.absent: does not exist"), "%s", msg);
    }

    /* Nobody answers: the deadline ends it, the SASL password stays out of the message. */
    set_brokers(m.mc, 3, false);
    start = now_ms();
    ck_assert_int_eq(kafka_probe_with(m.bootstraps,
                                      "\"properties\":{\"security.protocol\":\"sasl_plaintext\","
                                      "\"sasl.mechanism\":\"PLAIN\",\"sasl.username\":\"u\","
                                      "\"sasl.password\":\"hunter2-secret\"}",
                                      1000, msg, sizeof(msg)),
                     -1);
    ck_assert_int_lt(now_ms() - start, 3000);
    ck_assert_msg(strstr(msg, "no metadata from ") == msg, "%s", msg);
    ck_assert_ptr_null(strstr(msg, "hunter2-secret"));
    mock_stop(&m);
}
END_TEST

static Suite *sink_suite(void)
{
    Suite *s = suite_create("sink");
    TCase *conf = tcase_create("conf");
    TCase *kafka = tcase_create("kafka");
    TCase *out = tcase_create("stdout");

    tcase_add_test(conf, test_paths);
    tcase_add_test(conf, test_errors_add);
    tcase_add_test(conf, test_check_keys);
    tcase_add_loop_test(conf, test_options_validate, 0, N(option_cases));
    tcase_add_test(conf, test_options_typed);
    tcase_add_test(conf, test_options_never_quote);
    tcase_add_test(conf, test_options_doc);
    tcase_add_test(conf, test_options_outbox);
    tcase_add_loop_test(conf, test_conf_string, 0, N(string_cases));
    tcase_add_loop_test(conf, test_conf_int, 0, N(int_cases));
    tcase_add_loop_test(conf, test_exact_integer, 0, N(exact_cases));
    tcase_add_test(conf, test_conf_request_string);
    tcase_add_loop_test(conf, test_conf_bool, 0, N(bool_cases));
    tcase_add_test(conf, test_registry);
    tcase_add_test(conf, test_logger);
    suite_add_tcase(s, conf);

    tcase_add_loop_test(kafka, test_kafka_validate, 0, N(validate_cases));
    tcase_add_test(kafka, test_kafka_create_invalid);
    tcase_add_test(kafka, test_kafka_end_to_end);
    tcase_add_test(kafka, test_kafka_routes_per_source);
    tcase_add_test(kafka, test_kafka_on_the_loop);
    tcase_add_test(kafka, test_kafka_brokers_down);
    tcase_add_test(kafka, test_kafka_fatal);
    tcase_add_test(kafka, test_kafka_destroy_resolves);
    tcase_add_test(kafka, test_kafka_probe);
    tcase_set_timeout(kafka, 60);
    suite_add_tcase(s, kafka);

    tcase_add_test(out, test_stdout_lines);
    tcase_add_test(out, test_stdout_write_error);
    tcase_add_test(out, test_stdout_validate);
    suite_add_tcase(s, out);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sink_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
