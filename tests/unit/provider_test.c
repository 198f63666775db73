/*
 * The helpers every adapter builds its requests with: header lines that no
 * configured value can split (defence in depth behind the config checks),
 * and the checked reading of JSON numbers as integers.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider.h"
#include "testlib.h"

static const struct header_case {
    const char *name, *value;
    int rc;
} header_cases[] = {
    {"x-api-key", "k-123", 0},
    {"Authorization", "Token token=abc def", 0},
    {"Accept", "application/vnd.procwise.v3", 0},
    {"x-api-key", "k\r\nX-Injected: yes", -1},
    {"x-api-key", "k\nX-Injected: yes", -1},
    {"x-api-key", "k\rX", -1},
    {"x-api-key", "k\tv", -1},
    {"x-api-key", "k\x7f", -1},
    {"x-api-key", "k\x01", -1},
    {"X-Injected: yes\r\nx-api-key", "k", -1},
    {"x api key", "k", -1},
    {"x-api-key:", "k", -1},
    {"", "k", -1},
    {"x-k\xc3\xa9y", "k", -1},
};

START_TEST(header_lines_cannot_be_split)
{
    const struct header_case *c = &header_cases[_i];
    provider_request_t *req = calloc(1, sizeof(*req));

    ck_assert_int_eq(provider_add_header(req, c->name, c->value), c->rc);
    ck_assert_uint_eq(req->nheaders, c->rc == 0 ? 1 : 0);
    if (c->rc == 0) {
        char want[HTTP_HEADER_MAX];
        snprintf(want, sizeof(want), "%s: %s", c->name, c->value);
        ck_assert_str_eq(req->headers[0], want);
    }
    free(req);
}
END_TEST

START_TEST(header_bounds)
{
    provider_request_t *req = calloc(1, sizeof(*req));
    char *big = malloc(HTTP_HEADER_MAX + 1);

    memset(big, 'a', HTTP_HEADER_MAX);
    big[HTTP_HEADER_MAX] = '\0';
    ck_assert_int_eq(provider_add_header(req, "x", big), -1);
    for (size_t i = 0; i < HTTP_MAX_REQUEST_HEADERS; i++)
        ck_assert_int_eq(provider_add_header(req, "x", "v"), 0);
    ck_assert_int_eq(provider_add_header(req, "x", "v"), -1);
    free(big);
    free(req);
}
END_TEST

static const struct int_case {
    double d;
    int ok;
    long long out;
} int_cases[] = {
    {0, 1, 0},
    {-42, 1, -42},
    {9007199254740992.0, 1, 9007199254740992LL},
    {-9007199254740992.0, 1, -9007199254740992LL},
    {9007199254740994.0, 0, 0},
    {1e49, 0, 0},
    {-1e49, 0, 0},
    {9223372036854775808.0, 0, 0},
    {1.5, 0, 0},
    {HUGE_VAL, 0, 0},
    {-HUGE_VAL, 0, 0},
    {NAN, 0, 0},
};

/* RFC 3986 encoding of both halves, '?' first then '&', and the bound. */
START_TEST(query_parameters_are_encoded_and_bounded)
{
    char url[64] = "http://h/p";

    ck_assert_int_eq(provider_url_add(url, sizeof(url), "a b", "a b&c=d/\xc3\xa9~"), 0);
    ck_assert_str_eq(url, "http://h/p?a%20b=a%20b%26c%3Dd%2F%C3%A9~");
    ck_assert_int_eq(provider_url_add(url, sizeof(url), "page[size]", "5"), 0);
    ck_assert_str_eq(url, "http://h/p?a%20b=a%20b%26c%3Dd%2F%C3%A9~&page%5Bsize%5D=5");
    /* One byte short: refused, and the URL is left as it was. */
    char small[16] = "http://h/p";
    ck_assert_int_eq(provider_url_add(small, sizeof(small), "ab", "c"), 0);
    ck_assert_int_eq(provider_url_add(small, sizeof(small), "d", ""), -1);
    ck_assert_str_eq(small, "http://h/p?ab=c");
}
END_TEST

START_TEST(exact_integers_only)
{
    const struct int_case *c = &int_cases[_i];
    long long out = 0;

    ck_assert_int_eq(provider_exact_integer(c->d, &out), c->ok);
    ck_assert_int_eq(out, c->out);
}
END_TEST

/* Ids from a page: numbers beyond what a double holds exactly are refused. */
START_TEST(id_text_refuses_inexact_numbers)
{
    static const struct {
        const char *json;
        int rc;
        const char *text;
    } rows[] = {
        {"[42]", 0, "42"},     {"[\"s-1\"]", 0, "s-1"}, {"[1e49]", -1, NULL},
        {"[-1e49]", -1, NULL}, {"[1e999]", -1, NULL},   {"[9223372036854775808]", -1, NULL},
        {"[4.5]", -1, NULL},   {"[\"\"]", -1, NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cJSON *doc = cJSON_Parse(rows[i].json);
        char text[64] = "";
        ck_assert_ptr_nonnull(doc);
        ck_assert_int_eq(provider_id_text(doc->child, text, sizeof(text)), rows[i].rc);
        if (rows[i].text)
            ck_assert_str_eq(text, rows[i].text);
        cJSON_Delete(doc);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("provider");
    TCase *tc = tcase_create("helpers");
    tcase_add_loop_test(tc, header_lines_cannot_be_split, 0,
                        (int)(sizeof(header_cases) / sizeof(header_cases[0])));
    tcase_add_test(tc, header_bounds);
    tcase_add_test(tc, query_parameters_are_encoded_and_bounded);
    tcase_add_loop_test(tc, exact_integers_only, 0,
                        (int)(sizeof(int_cases) / sizeof(int_cases[0])));
    tcase_add_test(tc, id_text_refuses_inexact_numbers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
