/*
 * Tests of bridge/common's header-only helpers: array_grow() (the one
 * growth rule of the daemon's arrays: doubling from a first capacity,
 * nothing when there is room, a refusal rather than a wrapped size) and
 * json_escape_ascii() (the JSON text of every ASCII byte, as cJSON writes
 * it), suggest (the nearest known word to a typo, for "did you mean") and
 * sink_conf_path() (the JSON paths of configuration messages).
 */
#include "array.h"
#include "json_escape.h"
#include "sink.h"
#include "suggest.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <string.h>
#include <stdint.h>

#include "testlib.h"

START_TEST(test_array_grow_doubles_from_first)
{
    size_t cap = 0;
    int *v = array_grow(NULL, &cap, 1, sizeof(*v), 16);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(cap, 16);
    for (int i = 0; i < 16; i++)
        v[i] = i;
    /* room enough: the same array, untouched */
    ck_assert_ptr_eq(array_grow(v, &cap, 16, sizeof(*v), 16), v);
    ck_assert_uint_eq(cap, 16);
    /* one more: doubled, the contents kept */
    v = array_grow(v, &cap, 17, sizeof(*v), 16);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(cap, 32);
    ck_assert_int_eq(v[15], 15);
    /* far more: doubled until it holds it */
    v = array_grow(v, &cap, 1000, sizeof(*v), 16);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(cap, 1024);
    ck_assert_int_eq(v[7], 7);
    free(v);
}
END_TEST

START_TEST(test_array_grow_first_zero)
{
    size_t cap = 0;
    char *v = array_grow(NULL, &cap, 3, 1, 0);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(cap, 4);
    free(v);
}
END_TEST

START_TEST(test_array_grow_refuses_overflow)
{
    size_t cap = 16;
    char *v = malloc(cap);
    ck_assert_ptr_nonnull(v);
    /* the element count or the byte size would wrap: refused, v kept */
    ck_assert_ptr_null(array_grow(v, &cap, SIZE_MAX, 1, 16));
    ck_assert_ptr_null(array_grow(v, &cap, SIZE_MAX / 4, 8, 16));
    ck_assert_uint_eq(cap, 16);
    v[15] = 'x';
    free(v);
}
END_TEST

/* Every ASCII byte, against what cJSON writes for it. */
START_TEST(test_json_escape_every_ascii_byte)
{
    for (unsigned c = 1; c < 0x80; c++) {
        char in[2] = {(char)c, '\0'};
        cJSON *s = cJSON_CreateString(in);
        char *want = cJSON_PrintUnformatted(s); /* with its quotes */
        char got[JSON_ESCAPE_MAX + 1];
        size_t n = json_escape_ascii((unsigned char)c, got);
        got[n] = '\0';
        ck_assert_uint_eq(n, strlen(want) - 2);
        ck_assert_int_eq(memcmp(got, want + 1, n), 0);
        ck_assert_int_eq(json_escape_needed((unsigned char)c), n > 1);
        cJSON_free(want);
        cJSON_Delete(s);
    }
}
END_TEST

/* ---- suggest ---- */

static const struct {
    const char *a, *b;
    size_t d;
} distances[] = {
    {"", "", 0},
    {"path", "path", 0},
    {"pth", "path", 1},
    {"filter", "filters", 1},
    {"filetrs", "filters", 1}, /* a swap is one edit */
    {"Brokers", "brokers", 1},
    {"steam", "stream", 1},
    {"abc", "", 3},
    {"kitten", "sitting", 3},
};

START_TEST(test_suggest_distance)
{
    ck_assert_uint_eq(suggest_distance(distances[_i].a, distances[_i].b), distances[_i].d);
    ck_assert_uint_eq(suggest_distance(distances[_i].b, distances[_i].a), distances[_i].d);
}
END_TEST

START_TEST(test_suggest_distance_refuses_long_words)
{
    char lng[SUGGEST_WORD_MAX + 2];

    memset(lng, 'a', sizeof(lng) - 1);
    lng[sizeof(lng) - 1] = '\0';
    ck_assert_uint_eq(suggest_distance(lng, "a"), SIZE_MAX);
    lng[SUGGEST_WORD_MAX] = '\0'; /* at the bound: still measured */
    ck_assert_uint_eq(suggest_distance(lng, lng), 0);
}
END_TEST

static const char *const keys[] = {"name",       "provider",  "base_url", "filters",
                                   "interval_s", "timeout_s", "auth",     NULL};

static const struct {
    const char *typo, *want; /* want NULL: no suggestion */
} nearest[] = {
    {"filter", "filters"},
    {"fliters", "filters"},
    {"interval", "interval_s"},
    {"timeout", "timeout_s"},
    {"nmae", "name"},
    {"auht", "auth"},
    {"provder", "provider"},
    /* four letters or less: one edit only ("nm" is two from "name") */
    {"nm", NULL},
    {"aut", "auth"},
    /* more than two edits: nothing rather than a guess */
    {"zzzzzz", NULL},
    {"interval_seconds", NULL},
};

START_TEST(test_suggest_nearest)
{
    const char *got = suggest_nearest(nearest[_i].typo, keys);

    if (nearest[_i].want)
        ck_assert_str_eq(got ? got : "(none)", nearest[_i].want);
    else
        ck_assert_msg(got == NULL, "%s: suggested %s", nearest[_i].typo, got);
}
END_TEST

START_TEST(test_suggest_offers_from_any_table)
{
    suggest_t s;

    /* The nearest wins, and among equals the first offered. */
    suggest_init(&s, "sorce");
    suggest_offer(&s, "sink");
    suggest_offer(&s, "source");
    suggest_offer(&s, "sources");
    suggest_offer(&s, NULL);
    ck_assert_str_eq(suggest_best(&s), "source");
    suggest_init(&s, "cat");
    suggest_offer(&s, "bat");
    suggest_offer(&s, "car");
    ck_assert_str_eq(suggest_best(&s), "bat");
    ck_assert_ptr_null(suggest_nearest("x", NULL));
}
END_TEST

/* ---- JSON paths ---- */

START_TEST(test_conf_paths)
{
    char buf[SINK_PATH_MAX], small[8];

    ck_assert_str_eq(sink_conf_path(buf, sizeof(buf), "", "sources"), "sources");
    ck_assert_str_eq(sink_conf_path(buf, sizeof(buf), NULL, "redis"), "redis");
    ck_assert_str_eq(sink_conf_path(buf, sizeof(buf), "sources[1]", "name"), "sources[1].name");
    ck_assert_str_eq(sink_conf_path_index(buf, sizeof(buf), "sources", 2), "sources[2]");
    ck_assert_str_eq(sink_conf_path_index(buf, sizeof(buf), "sources[0].filters.userId", 12),
                     "sources[0].filters.userId[12]");
    /* Truncated to the buffer, always terminated. */
    ck_assert_str_eq(sink_conf_path(small, sizeof(small), "sources[1]", "name"), "sources");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("array");
    tcase_add_test(tc, test_array_grow_doubles_from_first);
    tcase_add_test(tc, test_array_grow_first_zero);
    tcase_add_test(tc, test_array_grow_refuses_overflow);
    suite_add_tcase(s, tc);
    tc = tcase_create("json_escape");
    tcase_add_test(tc, test_json_escape_every_ascii_byte);
    suite_add_tcase(s, tc);
    tc = tcase_create("suggest");
    tcase_add_loop_test(tc, test_suggest_distance, 0,
                        (int)(sizeof(distances) / sizeof(distances[0])));
    tcase_add_test(tc, test_suggest_distance_refuses_long_words);
    tcase_add_loop_test(tc, test_suggest_nearest, 0, (int)(sizeof(nearest) / sizeof(nearest[0])));
    tcase_add_test(tc, test_suggest_offers_from_any_table);
    tcase_add_test(tc, test_conf_paths);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
