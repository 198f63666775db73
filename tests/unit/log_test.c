/*
 * The log lines, read back from a file put in place of stderr and parsed.
 * JSON: a line cut at its bound is still one JSON object (strings cut
 * between whole characters and closed, fields left out whole), and no line
 * holds invalid UTF-8, whatever bytes the caller passed. Text
 * (SB_LOG_FORMAT=text): the same fields and the same bound, values quoted
 * where a space or a quote would make them ambiguous, durations in units;
 * and which of the two a terminal or a pipe gets.
 */
#include <check.h>
#include <iconv.h>
#include <math.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "log.h"
#include "sink.h"
#include "testlib.h"

/* log.c's LOG_LINE_MAX: the contract of a line's size, newline included. */
#define LINE_MAX_BYTES 4096

/* A stderr redirected to a temporary file, to read back what was logged. */
typedef struct captured {
    int fd, saved;
} captured_t;

static captured_t capture_start(void)
{
    char path[] = "/tmp/sb-log-test.XXXXXX";
    captured_t c = {.fd = mkstemp(path), .saved = dup(STDERR_FILENO)};
    ck_assert_int_ge(c.fd, 0);
    ck_assert_int_ge(c.saved, 0);
    unlink(path);
    ck_assert_int_ge(dup2(c.fd, STDERR_FILENO), 0);
    return c;
}

/* Puts stderr back; returns what was written to it meanwhile, malloc'd. */
static char *capture_end(captured_t c)
{
    ck_assert_int_ge(dup2(c.saved, STDERR_FILENO), 0);
    close(c.saved);
    off_t size = lseek(c.fd, 0, SEEK_END);
    ck_assert_int_gt(size, 0);
    char *buf = malloc((size_t)size + 1);
    ck_assert_int_eq(pread(c.fd, buf, (size_t)size, 0), size);
    buf[size] = '\0';
    close(c.fd);
    return buf;
}

/* Runs log_write() with stderr redirected; returns the line, malloc'd. */
static char *capture_at(log_level_t level, const char *msg, const log_field_t *fields)
{
    captured_t c = capture_start();
    log_write(level, msg, fields);
    return capture_end(c);
}

static char *capture(const char *msg, const log_field_t *fields)
{
    return capture_at(LOG_LVL_INFO, msg, fields);
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
/* What every line is, in either format: one line, within the bound,
 * UTF-8. Returns its length. */
static size_t check_one_line(const char *line)
{
    size_t n = strlen(line);
    ck_assert_uint_le(n, LINE_MAX_BYTES);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(line[n - 1], '\n');
    ck_assert_ptr_null(memchr(line, '\n', n - 1));
    ck_assert_msg(valid_utf8(line, n), "not UTF-8: %s", line);
    return n;
}

static cJSON *parse_line(const char *line)
{
    size_t n = check_one_line(line);
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

/* ---- text lines (SB_LOG_FORMAT=text) ---- */

/* Sets SB_LOG_FORMAT (NULL: unset) and reads the environment again. */
static void use_format(const char *format)
{
    char err[160] = "";
    if (format)
        setenv("SB_LOG_FORMAT", format, 1);
    else
        unsetenv("SB_LOG_FORMAT");
    ck_assert_msg(log_init_from_env(err, sizeof(err)) == 0, "%s", err);
}

/*
 * Reads a text line back: `TS LEVEL message  key=value ...`, a quoted value
 * in JSON's string syntax (parsed by cJSON, not by log.c), a bare one up to
 * the next space. Checks the shape every text line has (one line, within
 * the bound, UTF-8, the timestamp, the level column) and returns the
 * fields as an object of strings, with "ts", "level" and "msg" among them.
 * The test messages hold no two spaces in a row: they end the message.
 */
static cJSON *parse_text(const char *line)
{
    size_t n = check_one_line(line);
    ck_assert_uint_gt(n, 32);
    /* 2026-12-01T15:04:05.123Z */
    ck_assert_msg(line[4] == '-' && line[10] == 'T' && line[19] == '.' && line[23] == 'Z' &&
                      line[24] == ' ' && line[30] == ' ',
                  "no timestamp and level column: %s", line);
    cJSON *o = cJSON_CreateObject();
    char part[LINE_MAX_BYTES];
    snprintf(part, sizeof(part), "%.24s", line);
    cJSON_AddStringToObject(o, "ts", part);
    snprintf(part, sizeof(part), "%.5s", line + 25);
    cJSON_AddStringToObject(o, "level", part);
    const char *p = line + 31, *end = line + n - 1;
    const char *gap = strstr(p, "  ");
    const char *msg_end = gap && gap < end ? gap : end;
    snprintf(part, sizeof(part), "%.*s", (int)(msg_end - p), p);
    cJSON_AddStringToObject(o, "msg", part);
    p = msg_end;
    while (p < end) {
        while (*p == ' ')
            p++;
        const char *eq = strchr(p, '=');
        ck_assert_msg(eq != NULL && eq < end, "no key=value at \"%s\"", p);
        char key[LINE_MAX_BYTES];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - p), p);
        ck_assert_msg(strpbrk(key, " \"") == NULL, "bad key \"%s\" in %s", key, line);
        p = eq + 1;
        if (*p == '"') {
            const char *vend = NULL;
            cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &vend, 0);
            ck_assert_msg(cJSON_IsString(v), "bad quoted value at %s", p);
            cJSON_AddStringToObject(o, key, v->valuestring);
            cJSON_Delete(v);
            p = vend;
        } else {
            const char *vend = strchr(p, ' ');
            if (vend == NULL || vend > end)
                vend = end;
            snprintf(part, sizeof(part), "%.*s", (int)(vend - p), p);
            cJSON_AddStringToObject(o, key, part);
            p = vend;
        }
        ck_assert_msg(p == end || *p == ' ', "no space after a value: %s", p);
    }
    return o;
}

/* The same fields as the JSON line, in order, values quoted when they must
 * be (logfmt's rule), the message padded so that fields line up. */
START_TEST(text_line_holds_the_fields)
{
    use_format("text");
    char *line = capture("cycle committed", (const log_field_t[]){
                                                LF_S("source", "century"),
                                                LF_I("events", 3),
                                                LF_S("error", "connection refused"),
                                                LF_S("empty", ""),
                                                LF_S("none", NULL),
                                                LF_B("ok", 1),
                                                LF_D("ratio", 0.5),
                                                LF_S("path", "/api/v3/x?a=b"),
                                                LF_S("q", "say \"hi\""),
                                                LF_DUR("poll_ms", 0.0412),
                                                LF_END_,
                                            });
    /* `TS INFO  cycle committed<pad>source=century events=3 error="..." ...` */
    ck_assert_ptr_nonnull(strstr(line, "Z INFO  cycle committed "));
    const char *first = strstr(line, "source=century events=3 error=\"connection refused\" "
                                     "empty=\"\" none=null ok=true ratio=0.5 "
                                     "path=\"/api/v3/x?a=b\" q=\"say \\\"hi\\\"\" poll=41ms\n");
    ck_assert_msg(first != NULL, "%s", line);
    ck_assert_int_eq(first - strstr(line, "cycle committed"), 40);
    cJSON *o = parse_text(line);
    ck_assert_str_eq(str(o, "level"), "INFO ");
    ck_assert_str_eq(str(o, "msg"), "cycle committed");
    ck_assert_str_eq(str(o, "error"), "connection refused");
    ck_assert_str_eq(str(o, "q"), "say \"hi\"");
    ck_assert_str_eq(str(o, "empty"), "");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "truncated"));
    cJSON_Delete(o);
    free(line);
    /* A message longer than the column: two spaces, then the fields. */
    line = capture("provider asked for a pause (Retry-After); source paused",
                   (const log_field_t[]){LF_S("source", "s"), LF_END_});
    ck_assert_ptr_nonnull(strstr(line, "source paused  source=s\n"));
    free(line);
    /* No field: no padding after the message. */
    line = capture("stopping", (const log_field_t[]){LF_END_});
    ck_assert_ptr_nonnull(strstr(line, "INFO  stopping\n"));
    free(line);
}
END_TEST

/* Every level has its column, padded to one width. */
START_TEST(text_levels_line_up)
{
    static const char *const want[] = {"ERROR m\n", "WARN  m\n", "INFO  m\n", "DEBUG m\n"};
    use_format("text");
    for (int lvl = LOG_LVL_ERROR; lvl <= LOG_LVL_DEBUG; lvl++) {
        char *line = capture_at((log_level_t)lvl, "m", (const log_field_t[]){LF_END_});
        ck_assert_str_eq(line + 25, want[lvl]);
        free(line);
    }
}
END_TEST

/*
 * Nothing a caller passes breaks the line: control characters are escaped
 * (quoted values by JSON's rule, the message and keys outside quotes with
 * the same escapes), invalid UTF-8 becomes U+FFFD, as in the JSON line.
 */
START_TEST(text_escapes_what_would_break_the_line)
{
    use_format("text");
    char *line = capture("two\nlines \"quoted\" \\ \xff", (const log_field_t[]){
                                                              LF_S("v", "a\nb\tc\x01\\"),
                                                              LF_S("id", "caf\xc3\xa9-\xff"),
                                                              LF_S("k\n", "x"),
                                                              LF_S("eq", "a=b"),
                                                              LF_END_,
                                                          });
    ck_assert_ptr_nonnull(strstr(line, "two\\nlines \"quoted\" \\ \xef\xbf\xbd  "));
    ck_assert_ptr_nonnull(strstr(line, " v=\"a\\nb\\tc\\u0001\\\\\" "));
    ck_assert_ptr_nonnull(strstr(line, " id=caf\xc3\xa9-\xef\xbf\xbd "));
    ck_assert_ptr_nonnull(strstr(line, " k\\n=x "));
    cJSON *o = parse_text(line);
    ck_assert_str_eq(str(o, "v"), "a\nb\tc\x01\\");
    ck_assert_str_eq(str(o, "eq"), "a=b");
    cJSON_Delete(o);
    free(line);
    /* The invalid UTF-8 table, through the text line. */
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        line = capture("m", (const log_field_t[]){LF_S("id", bad_utf8[i].in), LF_END_});
        o = parse_text(line);
        ck_assert_str_eq(str(o, "id"), bad_utf8[i].out);
        cJSON_Delete(o);
        free(line);
    }
}
END_TEST

/* The bound of the JSON line holds for text: a long value is cut between
 * characters (quoted: and closed), later fields left out whole, and the
 * line says truncated=true. */
START_TEST(text_line_is_bounded)
{
    use_format("text");
    char *big = malloc(10001);
    for (int quoted = 0; quoted < 2; quoted++) {
        for (int i = 0; i < 10000; i++)
            big[i] = quoted ? " a"[i % 2] : "\xc3\xa9"[i % 2]; /* quoted: spaces */
        big[10000] = '\0';
        char *line = capture(
            "m", (const log_field_t[]){LF_S("a", "1"), LF_S("v", big), LF_I("after", 1), LF_END_});
        cJSON *o = parse_text(line);
        ck_assert_str_eq(str(o, "a"), "1");
        const char *v = str(o, "v");
        ck_assert_uint_gt(strlen(v), 3500);
        ck_assert_int_eq(strncmp(v, big, strlen(v)), 0);
        ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "after"));
        ck_assert_str_eq(str(o, "truncated"), "true");
        cJSON_Delete(o);
        free(line);
    }
    /* Many fields: those kept are whole, but for the last string, cut. */
    enum { N = 400 };
    static char keys[N][16];
    log_field_t fields[N + 1];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%03d", i);
        fields[i] = LF_S(keys[i], "value value");
    }
    fields[N] = LF_END_;
    char *line = capture("m", fields);
    cJSON *o = parse_text(line);
    ck_assert_str_eq(str(o, "truncated"), "true");
    int kept = 0;
    while (kept < N && cJSON_GetObjectItemCaseSensitive(o, keys[kept]))
        kept++;
    for (int i = 0; i < kept - 1; i++)
        ck_assert_str_eq(str(o, keys[i]), "value value");
    ck_assert_int_eq(strncmp(str(o, keys[kept - 1]), "value value", strlen(str(o, keys[kept - 1]))),
                     0);
    ck_assert_int_gt(kept, 100);
    ck_assert_int_lt(kept, N);
    cJSON_Delete(o);
    free(line);
    /* The message itself. */
    memset(big, 'x', 10000);
    line = capture(big, (const log_field_t[]){LF_S("source", "s"), LF_END_});
    ck_assert_uint_le(strlen(line), LINE_MAX_BYTES);
    ck_assert_ptr_nonnull(strstr(line, "x truncated=true\n"));
    ck_assert_ptr_null(strstr(line, "source="));
    free(line);
    free(big);
}
END_TEST

/* Durations: milliseconds with three significant digits in JSON (never an
 * exponent), a short unit in text, the key without its _ms. */
static const struct duration_case {
    double seconds;
    const char *json, *text;
} durations[] = {
    {7.6194e-05, "0.076", "76\xc2\xb5s"},
    {0.0042, "4.2", "4.2ms"},
    {0.0412, "41.2", "41ms"},
    {0.5, "500", "500ms"},
    {1.24, "1240", "1.24s"},
    {12.34, "12340", "12.3s"},
    {300, "300000", "5m0s"},
    {7500, "7500000", "2h5m"},
    {0, "0", "0s"},
    {NAN, "null", "null"},
};

START_TEST(durations_read_as_durations)
{
    const struct duration_case *c = &durations[_i];
    char want[64];
    use_format("json");
    char *line = capture("m", (const log_field_t[]){LF_DUR("poll_ms", c->seconds), LF_END_});
    snprintf(want, sizeof(want), ",\"poll_ms\":%s}\n", c->json);
    ck_assert_msg(strstr(line, want) != NULL, "%s not in %s", want, line);
    cJSON_Delete(parse_line(line));
    free(line);
    use_format("text");
    line = capture("m", (const log_field_t[]){LF_DUR("poll_ms", c->seconds), LF_END_});
    snprintf(want, sizeof(want), " poll=%s\n", c->text);
    ck_assert_msg(strstr(line, want) != NULL, "%s not in %s", want, line);
    free(line);
}
END_TEST

/*
 * Unset, the format follows stderr: text on a terminal (a pty here), JSON
 * on a pipe or a file; SB_LOG_FORMAT overrides both ways; anything else is
 * refused with the allowed values named.
 */
static const char *format_on(int fd, const char *format)
{
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    use_format(format);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    char *line = capture("m", (const log_field_t[]){LF_END_});
    const char *kind = line[0] == '{' ? "json" : "text";
    free(line);
    return kind;
}

START_TEST(format_follows_the_terminal)
{
    int master, slave, pipefd[2];
    ck_assert_int_eq(openpty(&master, &slave, NULL, NULL, NULL), 0);
    ck_assert_int_eq(pipe(pipefd), 0);
    ck_assert_str_eq(format_on(slave, NULL), "text");
    ck_assert_str_eq(format_on(slave, ""), "text");
    ck_assert_str_eq(format_on(pipefd[1], NULL), "json");
    ck_assert_str_eq(format_on(slave, "json"), "json");
    ck_assert_str_eq(format_on(pipefd[1], "TEXT"), "text");

    char err[160] = "";
    setenv("SB_LOG_FORMAT", "logfmt", 1);
    ck_assert_int_eq(log_init_from_env(err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "SB_LOG_FORMAT"));
    ck_assert_ptr_nonnull(strstr(err, "text or json"));
    unsetenv("SB_LOG_FORMAT");
    close(master);
    close(slave);
    close(pipefd[0]);
    close(pipefd[1]);
}
END_TEST

/* The sinks' lines (sink_log) take the same route and format. */
START_TEST(sink_lines_follow_the_format)
{
    use_format("text");
    captured_t c = capture_start();
    sink_log(SINK_LOG_WARN, "bus", "broker %s down", "127.0.0.1:9092");
    char *buf = capture_end(c);
    cJSON *o = parse_text(buf);
    ck_assert_str_eq(str(o, "level"), "WARN ");
    ck_assert_str_eq(str(o, "msg"), "broker 127.0.0.1:9092 down");
    ck_assert_str_eq(str(o, "sink"), "bus");
    cJSON_Delete(o);
    free(buf);
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
    tc = tcase_create("text");
    tcase_add_test(tc, text_line_holds_the_fields);
    tcase_add_test(tc, text_levels_line_up);
    tcase_add_test(tc, text_escapes_what_would_break_the_line);
    tcase_add_test(tc, text_line_is_bounded);
    tcase_add_loop_test(tc, durations_read_as_durations, 0,
                        (int)(sizeof(durations) / sizeof(durations[0])));
    tcase_add_test(tc, format_follows_the_terminal);
    tcase_add_test(tc, sink_lines_follow_the_format);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
