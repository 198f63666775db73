/*
 * Configuration: ${VAR} expansion, and a table of bad files, each with the
 * JSON path and expectation its message must name. No message may quote a
 * value, since after expansion any string may be a secret.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "testlib.h"

#define SECRET "s3cr3t-VALUE-never-logged"

static const struct {
    const char *in;
    const char *out; /* NULL: an error containing err */
    const char *err;
} expansions[] = {
    {"plain", "plain", NULL},
    {"${SB_T_SET}", "value", NULL},
    {"a-${SB_T_SET}-b", "a-value-b", NULL},
    {"${SB_T_UNSET:-fallback}", "fallback", NULL},
    {"${SB_T_SET:-fallback}", "value", NULL},
    {"${SB_T_EMPTY:-fallback}", "", NULL}, /* set but empty is set */
    {"${SB_T_UNSET:-}", "", NULL},
    {"$${SB_T_SET}", "${SB_T_SET}", NULL},
    {"cost $5", "cost $5", NULL},
    {"${SB_T_UNSET}", NULL, "SB_T_UNSET is not set"},
    {"${SB_T_SET", NULL, "unterminated"},
    {"${1BAD}", NULL, "invalid variable"},
    {"${}", NULL, "invalid variable"},
};

START_TEST(expand_table)
{
    char err[256] = "";
    setenv("SB_T_SET", "value", 1);
    setenv("SB_T_EMPTY", "", 1);
    unsetenv("SB_T_UNSET");
    char *v = conf_expand(expansions[_i].in, err, sizeof(err));
    if (expansions[_i].out) {
        ck_assert_msg(v != NULL, "row %d: %s", _i, err);
        ck_assert_str_eq(v, expansions[_i].out);
    } else {
        ck_assert_ptr_null(v);
        ck_assert_msg(strstr(err, expansions[_i].err), "row %d: %s", _i, err);
    }
    free(v);
}
END_TEST

#define SRC_OK                                                                                     \
    "{\"name\":\"century\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x/api/v1\","   \
    "\"auth\":{\"api_key\":\"${SB_T_SECRET}\"}}"
#define SINKS_OK "[{\"name\":\"console\",\"type\":\"stdout\"}]"

/* Each row: a whole file, and a fragment the error list must contain. */
static const struct {
    const char *json;
    const char *want;
} bad[] = {
    {"not json", "invalid JSON near line 1"},
    {"[]", "expected a JSON object"},
    {"{\"sinks\":" SINKS_OK "}", "sources: required"},
    {"{\"sources\":[" SRC_OK "]}", "sinks: required"},
    {"{\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK ",\"extra\":1}", "extra: unknown key"},
    {"{\"redis\":{\"url\":\"http://x\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}",
     "redis.url: invalid redis URL: the scheme must be redis://"},
    /* The store's parser runs at check time: what check passes, once can use. */
    {"{\"redis\":{\"url\":\"redis://:" SECRET "@@:x\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK
     "}",
     "redis.url: invalid redis URL: no host"},
    {"{\"redis\":{\"url\":\"redis://:" SECRET "@h:99999\"},\"sources\":[" SRC_OK
     "],\"sinks\":" SINKS_OK "}",
     "redis.url: invalid redis URL: the port must be 1..65535"},
    {"{\"redis\":{\"url\":\"redis://" SECRET "@h\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK
     "}",
     "redis.url: invalid redis URL: the userinfo must be [user]:password"},
    {"{\"redis\":{\"url\":\"redis://h/db1\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}",
     "redis.url: invalid redis URL: unexpected text after the host"},
    {"{\"redis\":{\"url\":\"rediss://h\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}",
     "redis.url: invalid redis URL: TLS (rediss://) is not supported"},
    {"{\"sources\":[" SRC_OK "],\"sinks\":[{\"name\":\"x\",\"type\":\"redis_stream\","
     "\"stream\":\"s\",\"url\":\"redis://:" SECRET "@@:x\"}]}",
     "sinks[0].url: invalid redis URL: no host"},
    {"{\"redis\":{\"urll\":\"redis://x\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}",
     "redis.urll: unknown key (did you mean \"url\"?)"},
    {"{\"admin\":{\"listen\":\"nowhere\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}",
     "admin.listen: expected host:port"},
    {"{\"sources\":[{\"name\":\"Bad Name\",\"provider\":\"century_smart_ia\",\"base_url\":"
     "\"https://x\",\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].name: expected [a-z0-9_-]"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"nope\",\"base_url\":\"https://x\"}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].provider: unknown provider \"nope\", expected one of: century_smart_ia"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"ftp://x\","
     "\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].base_url: expected an http:// or https:// URL"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":"
     "\"https://x/a\\u007f\",\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].base_url: expected an http:// or https:// URL"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{}}],\"sinks\":" SINKS_OK "}",
     "sources[0].auth.api_key: required"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"${SB_T_NOT_SET}\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].auth.api_key: environment variable SB_T_NOT_SET is not set"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\",\"apikey\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].auth.apikey: unknown key (did you mean \"api_key\"?)"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"page_size\":101}],\"sinks\":" SINKS_OK "}",
     "sources[0].page_size"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"interval_s\":\"30\"}],\"sinks\":" SINKS_OK "}",
     "sources[0].interval_s"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"vanish_grace\":0}],\"sinks\":" SINKS_OK "}",
     "sources[0].vanish_grace"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"max_sessions\":0}],\"sinks\":" SINKS_OK "}",
     "sources[0].max_sessions"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"max_sessions\":1000001}],\"sinks\":" SINKS_OK "}",
     "sources[0].max_sessions"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"initial_snapshot\":\"all\"}],\"sinks\":" SINKS_OK "}",
     "sources[0].initial_snapshot: expected \"baseline\" or \"emit\""},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"status_map\":{\"X\":\"done\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].status_map.X: expected one of pending, active, completed, cancelled"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"startDate\":{\"gt\":1,\"gte\":2}}}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].filters.startDate: gt and gte cannot be used together"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"startDate\":{\"lt\":\"2023-07-15\","
     "\"lte\":\"2023-07-16\"}}}],\"sinks\":" SINKS_OK "}",
     "sources[0].filters.startDate: lt and lte cannot be used together"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"startDate\":{\"gt\":\"yesterday\"}}}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].filters.startDate.gt: expected a unix timestamp or an ISO 8601"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"userId\":[\"not-a-uuid\"]}}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].filters.userId[0]: expected a UUID"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"subject\":[]}}],\"sinks\":" SINKS_OK "}",
     "sources[0].filters.subject: expected an array of 1 to 30 values"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"sort\":\"x\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].filters.sort: unknown key"},
    /* Every unknown key gets the nearest known one when it is close: top level,
     * sections, source keys, provider blocks. */
    {"{\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK ",\"lease_ttl\":5}",
     "lease_ttl: unknown key (did you mean \"lease_ttl_s\"?)"},
    {"{\"admin\":{\"listn\":\"x:1\"},\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}",
     "admin.listn: unknown key (did you mean \"listen\"?)"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filter\":{}}],\"sinks\":" SINKS_OK "}",
     "sources[0].filter: unknown key (did you mean \"filters\"?)"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"completed_lookback\":60}],\"sinks\":" SINKS_OK "}",
     "sources[0].completed_lookback: unknown key (did you mean \"completed_lookback_s\"?)"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
     "\"auth\":{\"api_key\":\"k\"},\"filters\":{\"userid\":[]}}],\"sinks\":" SINKS_OK "}",
     "sources[0].filters.userid: unknown key (did you mean \"userId\"?)"},
    {"{\"sources\":[" SRC_OK "," SRC_OK "],\"sinks\":" SINKS_OK "}",
     "sources[1]: duplicate source name \"century\""},
    {"{\"sources\":[" SRC_OK "],\"sinks\":[{\"name\":\"x\",\"type\":\"carrier-pigeon\"}]}",
     "sinks[0].type: unknown sink type \"carrier-pigeon\""},
    {"{\"sources\":[" SRC_OK "],\"sinks\":[{\"name\":\"x\",\"type\":\"stdout\",\"events\":"
     "[\"started\",\"paused\"]}]}",
     "sinks[0].events[1]: expected one of started, completed, cancelled"},
    {"{\"sources\":[" SRC_OK "],\"sinks\":[{\"name\":\"x\",\"type\":\"stdout\",\"sources\":"
     "[\"elsewhere\"]}]}",
     "sinks[0].sources[0]: no source named \"elsewhere\""},
    {"{\"sources\":[" SRC_OK "],\"sinks\":[{\"name\":\"x\",\"type\":\"kafka\"}]}",
     "sinks[0].brokers"},
    /* base_url as libcurl parses it: these would fail every poll */
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":"
     "\"https://c:onnect.example/api\",\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].base_url: expected an http:// or https:// URL"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":"
     "\"https://con\u00e9ct.example/api\",\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].base_url: expected an http:// or https:// URL"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":"
     "\"https://[::1/api\",\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "sources[0].base_url: expected an http:// or https:// URL"},
    /* the file itself: UTF-8, one document */
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\",\"base_url\":"
     "\"https://x/\x8b\",\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
     "$: not UTF-8 near line 1 (byte 76)"},
    {"{\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}\n{\"sources\":[]}",
     "$: invalid JSON near line 2"},
};

START_TEST(bad_configs_name_path_and_expectation)
{
    setenv("SB_T_SECRET", SECRET, 1);
    unsetenv("SB_T_NOT_SET");
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = conf_parse(bad[_i].json, strlen(bad[_i].json), "t.json", errs);
    ck_assert_msg(c == NULL, "row %d was accepted", _i);
    ck_assert_uint_gt(errs->count, 0);
    int found = 0;
    for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++) {
        found |= strstr(errs->msg[i], bad[_i].want) != NULL;
        ck_assert_msg(strstr(errs->msg[i], SECRET) == NULL, "secret in \"%s\"", errs->msg[i]);
    }
    if (!found) {
        for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++)
            fprintf(stderr, "row %d: %s\n", _i, errs->msg[i]);
    }
    ck_assert_msg(found, "row %d: no message contains \"%s\"", _i, bad[_i].want);
    free(errs);
}
END_TEST

START_TEST(every_problem_is_listed)
{
    const char *json = "{\"sources\":[{\"name\":\"a\",\"provider\":\"century_smart_ia\","
                       "\"base_url\":\"x\",\"auth\":{},\"interval_s\":0,\"typo\":1}],"
                       "\"sinks\":[{\"name\":\"b\",\"type\":\"nope\"}]}";
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    ck_assert_ptr_null(conf_parse(json, strlen(json), "t.json", errs));
    ck_assert_uint_ge(errs->count, 5);
    free(errs);
}
END_TEST

START_TEST(good_config_with_defaults)
{
    setenv("SB_T_SECRET", SECRET, 1);
    setenv("SB_T_BROKERS", "127.0.0.1:9092", 1);
    const char *json =
        "{\"sources\":[" SRC_OK "],\"sinks\":[{\"name\":\"bus\",\"type\":\"kafka\","
        "\"brokers\":\"${SB_T_BROKERS}\",\"events\":[\"completed\"],\"sources\":[\"century\"]},"
        "{\"name\":\"console\",\"type\":\"stdout\"}]}";
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = conf_parse(json, strlen(json), "t.json", errs);
    ck_assert_msg(c != NULL, "%s", errs->count ? errs->msg[0] : "");
    ck_assert_str_eq(c->redis_url, CONF_DEFAULT_REDIS_URL);
    ck_assert_str_eq(c->redis_prefix, "sb");
    ck_assert_str_eq(c->admin_listen, CONF_DEFAULT_ADMIN);
    const conf_source_t *s = conf_find_source(c, "century");
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->interval_s, 30);
    ck_assert_int_eq(s->timeout_s, 10);
    ck_assert_int_eq(s->page_size, 100);
    ck_assert_uint_eq(s->vanish_grace, 2);
    ck_assert_uint_eq(s->max_sessions, DIFF_DEFAULT_MAX_SESSIONS);
    ck_assert(!s->initial_emit);
    ck_assert_str_eq(s->base_url, "https://x/api/v1");
    ck_assert_str_eq(sink_config_get(c->sinks[0].cfg, "brokers")->s, "127.0.0.1:9092");
    /* Defaults are filled in from the table. */
    ck_assert(!sink_config_get(c->sinks[0].cfg, "topics")->set);
    ck_assert_ptr_nonnull(sink_config_get(c->sinks[0].cfg, "topics")->json);
    ck_assert(conf_sink_routes(&c->sinks[0], "century", DIFF_EV_COMPLETED));
    ck_assert(!conf_sink_routes(&c->sinks[0], "century", DIFF_EV_STARTED));
    ck_assert(!conf_sink_routes(&c->sinks[0], "other", DIFF_EV_COMPLETED));
    ck_assert(conf_sink_routes(&c->sinks[1], "other", DIFF_EV_CANCELLED));
    conf_free(c);
    free(errs);
}
END_TEST

#define PE_SRC(extra)                                                                              \
    "{\"sources\":[{\"name\":\"pe\",\"provider\":\"proctorexam\",\"base_url\":\"https://x\","      \
    "\"auth\":{\"api_token\":\"t\",\"secret_key\":\"k\"}" extra "}],\"sinks\":" SINKS_OK "}"

/* The digest a reload compares blocks by: values count, whitespace does not. */
static conf_t *parse_ok(const char *json)
{
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = conf_parse(json, strlen(json), "t.json", errs);
    ck_assert_msg(c != NULL, "%s", errs->count ? errs->msg[0] : "");
    free(errs);
    return c;
}

START_TEST(block_digests_follow_the_values)
{
    setenv("SB_T_SECRET", "one", 1);
    conf_t *a = parse_ok("{\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}");
    conf_t *spaced = parse_ok("{\"sources\":[ " SRC_OK " ],\n\"sinks\": [ {\"name\": \"console\", "
                              "\"type\":\"stdout\"} ]}");
    conf_t *iv =
        parse_ok("{\"sources\":[{\"name\":\"century\",\"provider\":\"century_smart_ia\","
                 "\"base_url\":\"https://x/api/v1\",\"auth\":{\"api_key\":\"${SB_T_SECRET}\"},"
                 "\"interval_s\":5}],\"sinks\":[{\"name\":\"console\",\"type\":"
                 "\"stdout\",\"events\":[\"started\"]}]}");
    setenv("SB_T_SECRET", "two", 1);
    conf_t *secret = parse_ok("{\"sources\":[" SRC_OK "],\"sinks\":" SINKS_OK "}");
    conf_t *pe = parse_ok(PE_SRC(",\"exam_ids\":[12,34]"));

    ck_assert_mem_eq(a->sources[0].digest, spaced->sources[0].digest, CONF_DIGEST_LEN);
    ck_assert_mem_eq(a->sinks[0].digest, spaced->sinks[0].digest, CONF_DIGEST_LEN);
    ck_assert(memcmp(a->sources[0].digest, iv->sources[0].digest, CONF_DIGEST_LEN) != 0);
    ck_assert(memcmp(a->sinks[0].digest, iv->sinks[0].digest, CONF_DIGEST_LEN) != 0);
    /* a secret that changes in the environment changes the source */
    ck_assert(memcmp(a->sources[0].digest, secret->sources[0].digest, CONF_DIGEST_LEN) != 0);
    /* each copy of an expansion is its own block */
    ck_assert(memcmp(pe->sources[0].digest, pe->sources[1].digest, CONF_DIGEST_LEN) != 0);
    conf_free(a);
    conf_free(spaced);
    conf_free(iv);
    conf_free(secret);
    conf_free(pe);
}
END_TEST

START_TEST(exam_ids_expand_into_one_source_each)
{
    const char *json = PE_SRC(",\"exam_ids\":[12,\"34\",56]");
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    conf_t *c = conf_parse(json, strlen(json), "t.json", errs);
    ck_assert_msg(c != NULL, "%s", errs->count ? errs->msg[0] : "");
    ck_assert_uint_eq(c->nsources, 3);
    ck_assert_ptr_nonnull(conf_find_source(c, "pe-12"));
    ck_assert_ptr_nonnull(conf_find_source(c, "pe-34"));
    ck_assert_ptr_nonnull(conf_find_source(c, "pe-56"));
    conf_free(c);

    static const struct {
        const char *json, *want;
    } bad_rows[] = {
        {PE_SRC(",\"exam_ids\":[1],\"exam_id\":2"),
         "sources[0]: exam_id and exam_ids cannot be used together"},
        {PE_SRC(",\"exam_ids\":[]"), "sources[0].exam_ids: expected a non-empty array"},
        {PE_SRC(",\"exam_ids\":[1,{}]"), "sources[0].exam_ids[1]: expected a positive integer"},
        {PE_SRC(",\"exam_ids\":[1,1]"), "duplicate source name \"pe-1\""},
        /* Paths are the file's: an expanded entry counts once, not once per exam. */
        {"{\"sources\":[{\"name\":\"pe\",\"provider\":\"proctorexam\",\"base_url\":\"https://x\","
         "\"auth\":{\"api_token\":\"t\",\"secret_key\":\"k\"},\"exam_ids\":[1,2]},"
         "{\"name\":\"pe-2\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","
         "\"auth\":{\"api_key\":\"k\"}}],\"sinks\":" SINKS_OK "}",
         "sources[1]: duplicate source name \"pe-2\" (also sources[0])"},
    };
    for (size_t r = 0; r < sizeof(bad_rows) / sizeof(bad_rows[0]); r++) {
        memset(errs, 0, sizeof(*errs));
        ck_assert_ptr_null(conf_parse(bad_rows[r].json, strlen(bad_rows[r].json), "t.json", errs));
        int found = 0;
        for (size_t i = 0; i < errs->count && i < SINK_ERRORS_MAX; i++)
            found |= strstr(errs->msg[i], bad_rows[r].want) != NULL;
        ck_assert_msg(found, "row %zu: no \"%s\" (first: %s)", r, bad_rows[r].want,
                      errs->count ? errs->msg[0] : "none");
    }
    /* A problem shared by every copy is reported once, not once per exam. */
    const char *shared = "{\"sources\":[{\"name\":\"pe\",\"provider\":\"proctorexam\","
                         "\"base_url\":\"https://x\",\"auth\":{\"api_token\":\"t\"},"
                         "\"exam_ids\":[1,2,3,4,5]}],\"sinks\":" SINKS_OK "}";
    memset(errs, 0, sizeof(*errs));
    ck_assert_ptr_null(conf_parse(shared, strlen(shared), "t.json", errs));
    ck_assert_uint_eq(errs->count, 1);
    free(errs);
}
END_TEST

/*
 * Messages that quote a configured string, each given one that came from
 * the environment: the message shows the file's text (the variable), never
 * the value, whoever wrote it (the loader, dlerror(), librdkafka).
 */
#define NAMED_SRC(name)                                                                            \
    "{\"name\":\"" name "\",\"provider\":\"century_smart_ia\",\"base_url\":\"https://x\","         \
    "\"auth\":{\"api_key\":\"k\"}}"
#define ONE_SRC "{\"sources\":[" NAMED_SRC("a") "],"
static const struct {
    const char *json;
    const char *want;
} quoting[] = {
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"${SB_T_SECRET}\",\"base_url\":\"https://x\"}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].provider: unknown provider \"${SB_T_SECRET}\", expected one of: century_smart_ia"},
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"x-${SB_T_SECRET}\",\"base_url\":\"https://x\"}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].provider: unknown provider \"x-${SB_T_SECRET}\""},
    /* Short values are replaced where they stand alone, not inside words. */
    {"{\"sources\":[{\"name\":\"a\",\"provider\":\"${SB_T_SHORT}\",\"base_url\":\"https://x\"}],"
     "\"sinks\":" SINKS_OK "}",
     "sources[0].provider: unknown provider \"${SB_T_SHORT}\", expected one of: century_smart_ia"},
    {"{\"sources\":[" NAMED_SRC("${SB_T_NAME}") "," NAMED_SRC("${SB_T_NAME}") "],"
                                                                              "\"sinks\":" SINKS_OK
                                                                              "}",
     "sources[1]: duplicate source name \"${SB_T_NAME}\" (also sources[0])"},
    {"{\"sources\":[{\"name\":\"${SB_T_NAME}\",\"provider\":\"proctorexam\",\"base_url\":"
     "\"https://x\",\"auth\":{\"api_token\":\"t\",\"secret_key\":\"k\"},\"exam_ids\":[1,1]}],"
     "\"sinks\":" SINKS_OK "}",
     "duplicate source name \"${SB_T_NAME}-1\""},
    {ONE_SRC "\"sinks\":[{\"name\":\"${SB_T_NAME}\",\"type\":\"stdout\"},"
             "{\"name\":\"${SB_T_NAME}\",\"type\":\"stdout\"}]}",
     "sinks[1]: duplicate sink name \"${SB_T_NAME}\" (also sinks[0])"},
    {ONE_SRC "\"sinks\":[{\"name\":\"x\",\"type\":\"stdout\",\"sources\":[\"${SB_T_SECRET}\"]}]}",
     "sinks[0].sources[0]: no source named \"${SB_T_SECRET}\""},
    {ONE_SRC "\"sinks\":[{\"name\":\"x\",\"type\":\"${SB_T_SECRET}\"}]}",
     "sinks[0].type: unknown sink type \"${SB_T_SECRET}\", expected one of:"},
    {ONE_SRC "\"sinks\":[{\"name\":\"x\",\"type\":\"module\",\"path\":"
             "\"/nonexistent/${SB_T_SECRET}/x.so\"}]}",
     "sinks[0].path: cannot load the sink module: /nonexistent/${SB_T_SECRET}/x.so"},
    /* Longer than a message: cut inside the value, whose head is cut off too. */
    {ONE_SRC "\"sinks\":[{\"name\":\"x\",\"type\":\"module\",\"path\":\"${SB_T_LONG}\"}]}",
     "sinks[0].path: cannot load the sink module: "},
    {ONE_SRC "\"sinks\":[{\"name\":\"x\",\"type\":\"kafka\",\"brokers\":\"h:9092\","
             "\"properties\":{\"compression.type\":\"${SB_T_SECRET}\"}}]}",
     "sinks[0].properties.compression.type: "},
};

START_TEST(messages_name_the_variable_not_its_value)
{
    char long_path[1024] = "/nonexistent/";
    while (strlen(long_path) + 8 < sizeof(long_path))
        strcat(long_path, "s3cr3t/");
    setenv("SB_T_SECRET", SECRET, 1);
    setenv("SB_T_NAME", "s3cr3tname", 1);
    setenv("SB_T_SHORT", "ab", 1);
    setenv("SB_T_LONG", long_path, 1);
    sink_errors_t *errs = calloc(1, sizeof(*errs));
    ck_assert_ptr_null(conf_parse(quoting[_i].json, strlen(quoting[_i].json), "t.json", errs));
    ck_assert_msg(errs_contain(errs, quoting[_i].want), "row %d: no \"%s\" in: %s", _i,
                  quoting[_i].want, errs_dump(errs));
    ck_assert_msg(!errs_contain(errs, "s3cr3t") && !errs_contain(errs, "\"ab\""),
                  "row %d: a value is quoted: %s", _i, errs_dump(errs));
    free(errs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_loop_test(tc, expand_table, 0, (int)(sizeof(expansions) / sizeof(expansions[0])));
    tcase_add_loop_test(tc, bad_configs_name_path_and_expectation, 0,
                        (int)(sizeof(bad) / sizeof(bad[0])));
    tcase_add_test(tc, every_problem_is_listed);
    tcase_add_test(tc, good_config_with_defaults);
    tcase_add_test(tc, exam_ids_expand_into_one_source_each);
    tcase_add_test(tc, block_digests_follow_the_values);
    tcase_add_loop_test(tc, messages_name_the_variable_not_its_value, 0,
                        (int)(sizeof(quoting) / sizeof(quoting[0])));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
