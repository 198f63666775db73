/*
 * Tests of bridge/common's header-only helpers: array_grow() (the one
 * growth rule of the daemon's arrays: doubling from a first capacity,
 * nothing when there is room, a refusal rather than a wrapped size) and
 * json_escape_ascii() (the JSON text of every ASCII byte, as cJSON writes
 * it).
 */
#include "array.h"
#include "json_escape.h"

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
    return run_suite(s);
}
