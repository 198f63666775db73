/*
 * Tests of bridge/common/net: the one Retry-After rule set of every HTTP client
 * (table), read against a fixed "now" so that dates are exact; URL checks
 * and origins (table); and the shared easy-handle set-up, which must refuse every protocol but
 * http(s).
 */
#include "net.h"

#include <check.h>

#include "testlib.h"

/* 2015-10-21 07:28:00 UTC */
#define DATE_T 1445412480
static const struct retry_case {
    const char *value;
    time_t now;
    int rc;
    double delay;
} retry_cases[] = {
    /* delta-seconds: digits only, blanks around them ignored */
    {"7", 0, 0, 7},
    {" 7 ", 0, 0, 7},
    {"\t7\t", 0, 0, 7},
    {"0", 0, 0, 0},
    {"007", 0, 0, 7},
    {"86401", 0, 0, 86401},
    {"100000", 0, 0, 100000},
    /* the bound: clamped, never overflowing */
    {"31536000", 0, 0, NET_RETRY_AFTER_MAX_S},
    {"31536001", 0, 0, NET_RETRY_AFTER_MAX_S},
    {"99999999999999999999999999999999999999", 0, 0, NET_RETRY_AFTER_MAX_S},
    /* invalid: counts as absent */
    {"7.5", 0, -1, -1},
    {"1e3", 0, -1, -1},
    {"-3", 0, -1, -1},
    {"+3", 0, -1, -1},
    {"7s", 0, -1, -1},
    {"7 8", 0, -1, -1},
    {"", 0, -1, -1},
    {"   ", 0, -1, -1},
    {"soon", 0, -1, -1},
    {"inf", 0, -1, -1},
    {"nan", 0, -1, -1},
    /* HTTP-date, the three formats of RFC 9110 */
    {"Wed, 21 Oct 2015 07:28:00 GMT", DATE_T - 120, 0, 120},
    {" Wed, 21 Oct 2015 07:28:00 GMT ", DATE_T - 120, 0, 120},
    {"Wednesday, 21-Oct-15 07:28:00 GMT", DATE_T - 120, 0, 120},
    {"Wed Oct 21 07:28:00 2015", DATE_T - 120, 0, 120},
    /* a date in the past: no wait */
    {"Wed, 21 Oct 2015 07:28:00 GMT", DATE_T + 50, 0, 0},
    {"Wed, 21 Oct 2015 07:28:00 GMT", DATE_T - 200000, 0, 200000},
    {"Wed, 21 Oct 2015 07:28:00 GMT", 0, 0, NET_RETRY_AFTER_MAX_S},
};

START_TEST(test_retry_after)
{
    const struct retry_case *c = &retry_cases[_i];
    double delay = -1;

    ck_assert_msg(net_retry_after(c->value, c->now, &delay) == c->rc, "\"%s\"", c->value);
    ck_assert_msg(delay == c->delay, "\"%s\": %f, expected %f", c->value, delay, c->delay);
}
END_TEST

static const struct url_case {
    const char *url;
    unsigned flags;
    net_url_status_t status;
    const char *origin; /* on OK */
} url_cases[] = {
    {"https://hooks.example.com/in?token=t", 0, NET_URL_OK, "https://hooks.example.com"},
    {"http://127.0.0.1:8080/x", 0, NET_URL_OK, "http://127.0.0.1:8080"},
    {"https://h:443/x", 0, NET_URL_OK, "https://h:443"}, /* as configured */
    {"HTTPS://H/x", 0, NET_URL_OK, "https://H"},
    {"http://[::1]:9/x", 0, NET_URL_OK, "http://[::1]:9"},
    {"https://u:p@h/x", 0, NET_URL_OK, "https://h"}, /* userinfo never in the origin */
    {"https://u:p@h/x", NET_URL_NO_USERINFO, NET_URL_USERINFO, NULL},
    {"https://u@h/x", NET_URL_NO_USERINFO, NET_URL_USERINFO, NULL},
    {"ftp://h/x", 0, NET_URL_SCHEME, NULL},
    {"file:///etc/passwd", 0, NET_URL_SCHEME, NULL},
    {"/relative/path", 0, NET_URL_MALFORMED, NULL},
    {"", 0, NET_URL_MALFORMED, NULL},
    {"https://h:99999/x", 0, NET_URL_MALFORMED, NULL},
    {"https://h:8a/x", 0, NET_URL_MALFORMED, NULL},
    {"https://h st/x", 0, NET_URL_MALFORMED, NULL},
    {"https://:8080/x", 0, NET_URL_MALFORMED, NULL},
};

START_TEST(test_url)
{
    const struct url_case *c = &url_cases[_i];
    CURLU *u = NULL;
    char origin[64];

    ck_assert_msg(net_url_parse(c->url, c->flags, &u) == c->status, "\"%s\"", c->url);
    if (c->status != NET_URL_OK) {
        ck_assert_ptr_null(u);
        return;
    }
    ck_assert_int_eq(net_url_origin(u, origin, sizeof(origin)), 0);
    ck_assert_str_eq(origin, c->origin);
    ck_assert_int_eq(net_url_origin(u, origin, 8), -1); /* does not fit */
    curl_url_cleanup(u);
    ck_assert_int_eq(net_url_parse(c->url, c->flags, NULL), NET_URL_OK);
}
END_TEST

/* A file:// URL would read local files on a configured URL's say. */
START_TEST(test_easy_refuses_other_protocols)
{
    static const char *const urls[] = {"file:///etc/hostname", "ftp://127.0.0.1:1/x",
                                       "gopher://127.0.0.1:1/x"};
    net_easy_options_t o = {.timeout_ms = 2000, .max_response = 1024};

    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        CURL *h = net_easy_new(&o);

        ck_assert_ptr_nonnull(h);
        curl_easy_setopt(h, CURLOPT_URL, urls[i]);
        ck_assert_int_eq(curl_easy_perform(h), CURLE_UNSUPPORTED_PROTOCOL);
        curl_easy_cleanup(h);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("retry_after");

    tcase_add_loop_test(tc, test_retry_after, 0,
                        (int)(sizeof(retry_cases) / sizeof(retry_cases[0])));
    suite_add_tcase(s, tc);
    tc = tcase_create("url");
    tcase_add_loop_test(tc, test_url, 0, (int)(sizeof(url_cases) / sizeof(url_cases[0])));
    suite_add_tcase(s, tc);
    tc = tcase_create("easy");
    tcase_add_test(tc, test_easy_refuses_other_protocols);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
