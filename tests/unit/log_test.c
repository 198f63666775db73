/*
 * The JSON log lines, read back from a file put in place of stderr and
 * parsed: a line cut at its bound is still one JSON object (strings cut
 * between whole characters and closed, fields left out whole), and no line
 * holds invalid UTF-8, whatever bytes the caller passed.
 */
#include <check.h>
#include <iconv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "log.h"
#include "testlib.h"

/* log.c's LOG_LINE_MAX: the contract of a line's size, newline included. */
#define LINE_MAX_BYTES 4096

/* Runs log_write() with stderr redirected; returns the line, malloc'd. */
static char *capture(const char *msg, const log_field_t *fields)
{
    char path[] = "/tmp/sb-log-test.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    log_write(LOG_LVL_INFO, msg, fields);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    ck_assert_int_gt(size, 0);
    char *buf = malloc((size_t)size + 1);
    ck_assert_int_eq(pread(fd, buf, (size_t)size, 0), size);
    buf[size] = '\0';
    close(fd);
    return buf;
}

/* True when s[0..n) is UTF-8, judged by iconv rather than by log.c's own decoder. */
static int valid_utf8(const char *s, size_t n)
{
    iconv_t cd = iconv_open("UTF-8", "UTF-8");
    ck_assert(cd != (iconv_t)-1);
    char *in = (char *)s, *outbuf = malloc(n * 4 + 4), *out = outbuf;
    size_t inleft = n, outleft = n * 4 + 4;
    size_t rc = iconv(cd, &in, &inleft, &out, &outleft);
    iconv_close(cd);
    free(outbuf);
    return rc != (size_t)-1 && inleft == 0;
}

/*
 * The line's checks every test shares: one line, within the bound, UTF-8,
 * one JSON object with ts, level and msg. Returns the parsed object.
 */
static cJSON *parse_line(const char *line)
{
    size_t n = strlen(line);
    ck_assert_uint_le(n, LINE_MAX_BYTES);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(line[n - 1], '\n');
    ck_assert_ptr_null(memchr(line, '\n', n - 1));
    ck_assert_msg(valid_utf8(line, n), "not UTF-8: %s", line);
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(line, n - 1, &end, 0);
    ck_assert_msg(o != NULL, "not JSON: %s", line);
    ck_assert(cJSON_IsObject(o));
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "ts")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "level")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "msg")));
    return o;
}

static int truncated(const cJSON *o)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "truncated"));
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsString(v), "no string %s", key);
    return v->valuestring;
}

START_TEST(short_line_is_whole)
{
    char *line = capture("poll complete", (const log_field_t[]){
                                              LF_S("source", "c\"q\\\n\t\x01"),
                                              LF_I("pages", 3),
                                              LF_D("ratio", 0.5),
                                              LF_D("nan", NAN),
                                              LF_B("ok", 1),
                                              LF_S("none", NULL),
                                              LF_END_,
                                          });
    cJSON *o = parse_line(line);
    ck_assert_str_eq(str(o, "msg"), "poll complete");
    ck_assert_str_eq(str(o, "source"), "c\"q\\\n\t\x01");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(o, "pages")->valuedouble, 3);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "nan")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "none")));
    ck_assert(!truncated(o));
    cJSON_Delete(o);
    free(line);
}
END_TEST

/* A value longer than a line: cut, closed, and what is kept is its start. */
START_TEST(long_value_is_cut_and_closed)
{
    char *big = malloc(10001);
    memset(big, 'a', 10000);
    big[10000] = '\0';
    char *line = capture("m", (const log_field_t[]){LF_S("error", big), LF_I("after", 1), LF_END_});
    cJSON *o = parse_line(line);
    const char *v = str(o, "error");
    ck_assert_uint_gt(strlen(v), 3500);
    ck_assert_int_eq(strncmp(v, big, strlen(v)), 0);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "after"));
    ck_assert(truncated(o));
    cJSON_Delete(o);
    free(line);
    /* The message itself, too. */
    line = capture(big, (const log_field_t[]){LF_S("source", "s"), LF_END_});
    o = parse_line(line);
    ck_assert_int_eq(strncmp(str(o, "msg"), big, strlen(str(o, "msg"))), 0);
    ck_assert(truncated(o));
    cJSON_Delete(o);
    free(line);
    free(big);
}
END_TEST

/* Many fields: the ones kept are whole; the first that does not fit and all
 * after it are left out. */
START_TEST(many_fields_are_kept_whole)
{
    enum { N = 400 };
    static char keys[N][16];
    log_field_t fields[N + 1];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%03d", i);
        fields[i] = i % 2 ? LF_I(keys[i], 1234567890) : LF_S(keys[i], "value-value");
    }
    fields[N] = LF_END_;
    char *line = capture("m", fields);
    cJSON *o = parse_line(line);
    ck_assert(truncated(o));
    int kept = 0;
    for (int i = 0; i < N; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
        if (v == NULL)
            break;
        if (i % 2)
            ck_assert(cJSON_IsNumber(v) && v->valuedouble == 1234567890);
        else
            ck_assert(cJSON_IsString(v) && strcmp(v->valuestring, "value-value") == 0);
        kept++;
    }
    ck_assert_int_gt(kept, 100);
    ck_assert_int_lt(kept, N);
    for (int i = kept; i < N; i++)
        ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, keys[i]));
    cJSON_Delete(o);
    free(line);
}
END_TEST

/*
 * The cut falls at every offset of multibyte characters (2, 3 and 4 bytes)
 * and of escapes (2 and 6 bytes): the line stays JSON and UTF-8, and the
 * kept value is a prefix of the input made of whole characters.
 */
static const char *const units[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\"", "\x01"};

START_TEST(cut_never_splits_a_character_or_an_escape)
{
    const char *u = units[_i];
    for (int shift = 0; shift < 8; shift++) {
        char *big = malloc(5000 * 4 + 16);
        size_t n = 0;
        for (int i = 0; i < shift; i++)
            big[n++] = 'x';
        while (n < 5000 * 3) {
            memcpy(big + n, u, strlen(u));
            n += strlen(u);
        }
        big[n] = '\0';
        char *line = capture("m", (const log_field_t[]){LF_S("v", big), LF_END_});
        cJSON *o = parse_line(line);
        const char *v = str(o, "v");
        size_t kept = strlen(v);
        ck_assert_int_eq(memcmp(v, big, kept), 0);
        ck_assert_uint_eq((kept - (size_t)shift) % strlen(u), 0);
        ck_assert(truncated(o));
        cJSON_Delete(o);
        free(line);
        free(big);
    }
}
END_TEST

/* Control characters are escaped by the events' rule (json_escape.h): the
 * two-letter escapes JSON has, \u00XX for the others. */
START_TEST(controls_escape_as_events_do)
{
    char *line =
        capture("m", (const log_field_t[]){LF_S("v", "a\"\\\b\f\n\r\t\x01\x1fz"), LF_END_});
    ck_assert_ptr_nonnull(strstr(line, "\"v\":\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001fz\""));
    cJSON *o = parse_line(line);
    ck_assert_str_eq(str(o, "v"), "a\"\\\b\f\n\r\t\x01\x1fz");
    cJSON_Delete(o);
    free(line);
}
END_TEST

/* Invalid UTF-8 anywhere (message, key, value) becomes U+FFFD; valid
 * characters around it are kept. */
static const struct bad_utf8 {
    const char *in, *out;
} bad_utf8[] = {
    {"s-\xff", "s-\xef\xbf\xbd"},
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong '/' */
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* a surrogate */
    {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* cut short */
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
    {"\x80\xbf", "\xef\xbf\xbd\xef\xbf\xbd"}, /* lone continuations */
    {"ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
    {"a\xc3", "a\xef\xbf\xbd"},
};

START_TEST(invalid_utf8_is_replaced)
{
    const struct bad_utf8 *c = &bad_utf8[_i];
    char key[32];
    snprintf(key, sizeof(key), "k%s", c->in);
    char *line = capture(c->in, (const log_field_t[]){LF_S("id", c->in), LF_S(key, "v"), LF_END_});
    cJSON *o = parse_line(line);
    ck_assert_str_eq(str(o, "msg"), c->out);
    ck_assert_str_eq(str(o, "id"), c->out);
    char want_key[64];
    snprintf(want_key, sizeof(want_key), "k%s", c->out);
    ck_assert_str_eq(str(o, want_key), "v");
    ck_assert(!truncated(o));
    cJSON_Delete(o);
    free(line);
}
END_TEST

/* Invalid bytes at the cut: replaced, and the replacement is not split. */
START_TEST(invalid_bytes_at_the_cut)
{
    char *big = malloc(6001);
    memset(big, '\xff', 6000);
    big[6000] = '\0';
    char *line = capture("m", (const log_field_t[]){LF_S("v", big), LF_END_});
    cJSON *o = parse_line(line);
    ck_assert_uint_eq(strlen(str(o, "v")) % 3, 0);
    ck_assert(truncated(o));
    cJSON_Delete(o);
    free(line);
    free(big);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("lines");
    tcase_add_test(tc, short_line_is_whole);
    tcase_add_test(tc, long_value_is_cut_and_closed);
    tcase_add_test(tc, many_fields_are_kept_whole);
    tcase_add_loop_test(tc, cut_never_splits_a_character_or_an_escape, 0,
                        (int)(sizeof(units) / sizeof(units[0])));
    tcase_add_loop_test(tc, invalid_utf8_is_replaced, 0,
                        (int)(sizeof(bad_utf8) / sizeof(bad_utf8[0])));
    tcase_add_test(tc, invalid_bytes_at_the_cut);
    tcase_add_test(tc, controls_escape_as_events_do);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
