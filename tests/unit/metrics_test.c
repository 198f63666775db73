/*
 * metrics_test: the registry's exact text output, its bounds, concurrent
 * updates while rendering, and the output of the real metric set checked
 * by a real parser and linter (promtool check metrics).
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bridge_metrics.h"
#include "metrics.h"

#define ERRLEN 256
/* Updates made by the writer of the concurrency test. */
#define CONCURRENT_UPDATES 200000
/* Distinct sources of the concurrency and growth tests. */
#define CONCURRENT_SOURCES 50
#define MANY_SOURCES 10000

static char err[ERRLEN];

/* Renders m; the caller frees. Fails the test when rendering fails. */
static char *render(metrics_t *m)
{
    size_t len = 0;
    char *text = metrics_render(m, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(len, strlen(text));
    return text;
}

static void assert_renders(metrics_t *m, const char *expected)
{
    char *text = render(m);
    ck_assert_str_eq(text, expected);
    free(text);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define V(...) ((const char *const[]){__VA_ARGS__})

START_TEST(counter_and_gauge_text)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_requests_total", "Requests, by path\\code\nsecond",
                                         L("path", "code"), err, ERRLEN);
    metric_family_t *g =
        metrics_gauge(m, "x_temperature_celsius", "Temperature.", NULL, err, ERRLEN);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(metric_add(c, V("/a", "200"), 1), 0);
    ck_assert_int_eq(metric_add(c, V("/a", "200"), 2), 0);
    ck_assert_int_eq(metric_add(c, V("q\"uote\\back\nline", "500"), 1), 0);
    ck_assert_int_eq(metric_set(g, NULL, -3.5), 0);
    ck_assert_int_eq(metric_add(g, NULL, 1), 0);
    assert_renders(m, "# HELP x_requests_total Requests, by path\\\\code\\nsecond\n"
                      "# TYPE x_requests_total counter\n"
                      "x_requests_total{path=\"/a\",code=\"200\"} 3\n"
                      "x_requests_total{path=\"q\\\"uote\\\\back\\nline\",code=\"500\"} 1\n"
                      "# HELP x_temperature_celsius Temperature.\n"
                      "# TYPE x_temperature_celsius gauge\n"
                      "x_temperature_celsius -2.5\n");
    metrics_free(m);
}
END_TEST

START_TEST(unlabelled_family_exists_at_zero)
{
    metrics_t *m = metrics_new();
    ck_assert_ptr_nonnull(metrics_counter(m, "x_errors_total", "Errors.", NULL, err, ERRLEN));
    ck_assert_ptr_nonnull(
        metrics_gauge(m, "x_by_source", "Empty until used.", L("source"), err, ERRLEN));
    assert_renders(m, "# HELP x_errors_total Errors.\n"
                      "# TYPE x_errors_total counter\n"
                      "x_errors_total 0\n"
                      "# HELP x_by_source Empty until used.\n"
                      "# TYPE x_by_source gauge\n");
    metrics_free(m);
}
END_TEST

START_TEST(histogram_text)
{
    static const double bounds[] = {0.05, 1, 2.5};
    metrics_t *m = metrics_new();
    metric_family_t *h = metrics_histogram(m, "x_duration_seconds", "Durations.", L("source"),
                                           bounds, 3, err, ERRLEN);
    ck_assert_ptr_nonnull(h);
    /* A bound is inclusive: 0.05 and 1 land in their own buckets. */
    const double obs[] = {0.05, 0.5, 1, 3, 100};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        ck_assert_int_eq(metric_observe(h, V("b"), obs[i]), 0);
    ck_assert_int_eq(metric_observe(h, V("a"), 0.25), 0);
    assert_renders(m, "# HELP x_duration_seconds Durations.\n"
                      "# TYPE x_duration_seconds histogram\n"
                      "x_duration_seconds_bucket{source=\"a\",le=\"0.05\"} 0\n"
                      "x_duration_seconds_bucket{source=\"a\",le=\"1\"} 1\n"
                      "x_duration_seconds_bucket{source=\"a\",le=\"2.5\"} 1\n"
                      "x_duration_seconds_bucket{source=\"a\",le=\"+Inf\"} 1\n"
                      "x_duration_seconds_sum{source=\"a\"} 0.25\n"
                      "x_duration_seconds_count{source=\"a\"} 1\n"
                      "x_duration_seconds_bucket{source=\"b\",le=\"0.05\"} 1\n"
                      "x_duration_seconds_bucket{source=\"b\",le=\"1\"} 3\n"
                      "x_duration_seconds_bucket{source=\"b\",le=\"2.5\"} 3\n"
                      "x_duration_seconds_bucket{source=\"b\",le=\"+Inf\"} 5\n"
                      "x_duration_seconds_sum{source=\"b\"} 104.55\n"
                      "x_duration_seconds_count{source=\"b\"} 5\n");
    metrics_free(m);
}
END_TEST

START_TEST(unlabelled_histogram_text)
{
    static const double bounds[] = {1};
    metrics_t *m = metrics_new();
    metric_family_t *h =
        metrics_histogram(m, "x_size_bytes", "Sizes.", NULL, bounds, 1, err, ERRLEN);
    ck_assert_int_eq(metric_observe(h, NULL, 2), 0);
    assert_renders(m, "# HELP x_size_bytes Sizes.\n"
                      "# TYPE x_size_bytes histogram\n"
                      "x_size_bytes_bucket{le=\"1\"} 0\n"
                      "x_size_bytes_bucket{le=\"+Inf\"} 1\n"
                      "x_size_bytes_sum 2\n"
                      "x_size_bytes_count 1\n");
    metrics_free(m);
}
END_TEST

/* Values as Prometheus must read them back: integers exact, others shortest. */
static const struct {
    double v;
    const char *text;
} numbers[] = {
    {0.1, "0.1"},
    {-0.0, "0"},
    {1.0 / 3.0, "0.3333333333333333"},
    {123456789012.0, "123456789012"},
    {9007199254740992.0, "9007199254740992"},
    {1e20, "1e+20"},
    {1.5e-7, "1.5e-07"},
    {-42, "-42"},
    {INFINITY, "+Inf"},
    {-INFINITY, "-Inf"},
};

START_TEST(number_formats)
{
    metrics_t *m = metrics_new();
    metric_family_t *g = metrics_gauge(m, "x_value", "A value.", NULL, err, ERRLEN);
    char expected[128];
    snprintf(expected, sizeof(expected),
             "# HELP x_value A value.\n# TYPE x_value gauge\nx_value %s\n", numbers[_i].text);
    ck_assert_int_eq(metric_set(g, NULL, numbers[_i].v), 0);
    assert_renders(m, expected);
    metrics_free(m);
}
END_TEST

START_TEST(series_sorted_whatever_the_creation_order)
{
    metrics_t *m = metrics_new();
    metric_family_t *g = metrics_gauge(m, "x_g", "G.", L("a", "b"), err, ERRLEN);
    metric_set(g, V("a", "2"), 2);
    metric_set(g, V("a", "10"), 3);
    metric_set(g, V("m", "0"), 4);
    metric_set(g, V("b", "0"), 5);
    assert_renders(m, "# HELP x_g G.\n# TYPE x_g gauge\n"
                      "x_g{a=\"a\",b=\"10\"} 3\n"
                      "x_g{a=\"a\",b=\"2\"} 2\n"
                      "x_g{a=\"b\",b=\"0\"} 5\n"
                      "x_g{a=\"m\",b=\"0\"} 4\n");
    metrics_free(m);
}
END_TEST

/* Label tuples that concatenate alike are different series. */
START_TEST(label_boundaries_matter)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_total", "X.", L("a", "b"), err, ERRLEN);
    metric_add(c, V("ab", "c"), 1);
    metric_add(c, V("a", "bc"), 2);
    assert_renders(m, "# HELP x_total X.\n# TYPE x_total counter\n"
                      "x_total{a=\"a\",b=\"bc\"} 2\n"
                      "x_total{a=\"ab\",b=\"c\"} 1\n");
    metrics_free(m);
}
END_TEST

START_TEST(updates_that_do_not_fit_change_nothing)
{
    static const double bounds[] = {1};
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_total", "X.", L("a"), err, ERRLEN);
    metric_family_t *g = metrics_gauge(m, "x_g", "G.", L("a"), err, ERRLEN);
    metric_family_t *h = metrics_histogram(m, "x_h", "H.", L("a"), bounds, 1, err, ERRLEN);
    ck_assert_int_eq(metric_add(c, V("v"), -1), -1); /* counters only go up */
    ck_assert_int_eq(metric_add(c, V("v"), NAN), -1);
    ck_assert_int_eq(metric_add(g, V("v"), INFINITY), -1);
    ck_assert_int_eq(metric_set(g, V("v"), NAN), -1);
    ck_assert_int_eq(metric_observe(c, V("v"), 1), -1);
    ck_assert_int_eq(metric_observe(h, V("v"), NAN), -1);
    ck_assert_int_eq(metric_add(h, V("v"), 1), -1);
    ck_assert_int_eq(metric_set(h, V("v"), 1), -1);
    ck_assert_int_eq(metric_add(c, NULL, 1), -1); /* values missing */
    ck_assert_int_eq(metric_add(NULL, V("v"), 1), -1);
    ck_assert_int_eq(metric_set(c, V("v"), 7), 0); /* a total kept elsewhere */
    assert_renders(m, "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"v\"} 7\n"
                      "# HELP x_g G.\n# TYPE x_g gauge\n"
                      "# HELP x_h H.\n# TYPE x_h histogram\n");
    metrics_free(m);
}
END_TEST

START_TEST(series_cap_refuses_and_counts)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_total", "X.", L("source"), err, ERRLEN);
    ck_assert_int_eq(metrics_refusals(m, "x_refused_total", "Refused.", err, ERRLEN), 0);
    metric_set_series_cap(c, 2);
    ck_assert_int_eq(metric_add(c, V("a"), 1), 0);
    ck_assert_int_eq(metric_add(c, V("b"), 1), 0);
    ck_assert_int_eq(metric_add(c, V("c"), 1), -1);
    ck_assert_int_eq(metric_add(c, V("d"), 1), -1);
    ck_assert_int_eq(metric_add(c, V("a"), 1), 0); /* existing series still count */
    ck_assert_uint_eq(metric_refused(c), 2);
    assert_renders(m, "# HELP x_total X.\n# TYPE x_total counter\n"
                      "x_total{source=\"a\"} 2\n"
                      "x_total{source=\"b\"} 1\n"
                      "# HELP x_refused_total Refused.\n# TYPE x_refused_total counter\n"
                      "x_refused_total{family=\"x_total\"} 2\n");
    metrics_free(m);
}
END_TEST

START_TEST(drop_removes_the_series_of_one_label_value)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_total", "X.", L("source", "result"), err, ERRLEN);
    metric_family_t *g = metrics_gauge(m, "y", "Y.", L("sink"), err, ERRLEN);
    metric_set_series_cap(c, 3);
    ck_assert_int_eq(metric_add(c, V("a", "ok"), 1), 0);
    ck_assert_int_eq(metric_add(c, V("gone", "ok"), 1), 0);
    ck_assert_int_eq(metric_add(c, V("gone", "failed"), 1), 0);
    ck_assert_int_eq(metric_set(g, V("gone"), 1), 0);
    ck_assert_uint_eq(metric_drop(c, "source", "gone"), 2);
    ck_assert_uint_eq(metric_drop(c, "sink", "a"), 0); /* no such label */
    ck_assert_uint_eq(metric_drop(NULL, "source", "a"), 0);
    /* the dropped series no longer count against the cap */
    ck_assert_int_eq(metric_add(c, V("b", "ok"), 1), 0);
    ck_assert_int_eq(metric_add(c, V("c", "ok"), 1), 0);
    /* a series dropped and used again starts from zero */
    ck_assert_int_eq(metric_drop(c, "source", "c"), 1);
    ck_assert_int_eq(metric_add(c, V("c", "ok"), 5), 0);
    assert_renders(m, "# HELP x_total X.\n# TYPE x_total counter\n"
                      "x_total{source=\"a\",result=\"ok\"} 1\n"
                      "x_total{source=\"b\",result=\"ok\"} 1\n"
                      "x_total{source=\"c\",result=\"ok\"} 5\n"
                      "# HELP y Y.\n# TYPE y gauge\n"
                      "y{sink=\"gone\"} 1\n");
    metrics_free(m);
}
END_TEST

START_TEST(default_series_cap)
{
    metrics_t *m = metrics_new();
    metric_family_t *g = metrics_gauge(m, "x_g", "G.", L("n"), err, ERRLEN);
    char v[16];
    for (int i = 0; i < METRICS_SERIES_MAX; i++) {
        snprintf(v, sizeof(v), "%d", i);
        ck_assert_int_eq(metric_set(g, V(v), i), 0);
    }
    ck_assert_int_eq(metric_set(g, V("one too many"), 1), -1);
    ck_assert_uint_eq(metric_refused(g), 1);
    metrics_free(m);
}
END_TEST

START_TEST(bad_label_values_refused)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_total", "X.", L("a"), err, ERRLEN);
    char longv[METRICS_LABEL_VALUE_MAX + 2];
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    ck_assert_int_eq(metric_add(c, V(longv), 1), -1);
    longv[METRICS_LABEL_VALUE_MAX] = '\0';
    ck_assert_int_eq(metric_add(c, V(longv), 1), 0);
    ck_assert_int_eq(metric_add(c, V("\xff"), 1), -1);
    ck_assert_int_eq(metric_add(c, V("\xc0\xaf"), 1), -1);     /* overlong '/' */
    ck_assert_int_eq(metric_add(c, V("\xed\xa0\x80"), 1), -1); /* a surrogate */
    ck_assert_int_eq(metric_add(c, V("caf\xc3\xa9"), 1), 0);
    ck_assert_uint_eq(metric_refused(c), 4);
    metrics_free(m);
}
END_TEST

/* Registrations that must fail, with a word the reason must contain. */
static const struct {
    const char *name;
    const char *const *labels;
    int histogram;
    const char *why;
} bad_families[] = {
    {"", NULL, 0, "invalid metric name"},
    {"9lives", NULL, 0, "invalid metric name"},
    {"x-y", NULL, 0, "invalid metric name"},
    {"x_dup", NULL, 0, "registered twice"},
    {"x_l", L("a", "a"), 0, "twice"},
    {"x_l", L("bad-name"), 0, "invalid label name"},
    {"x_l", L("__reserved"), 0, "invalid label name"},
    {"x_h", L("le"), 1, "invalid label name"},
    {"x_l", L("a", "b", "c", "d", "e", "f", "g", "h", "i"), 0, "more than"},
};

START_TEST(registration_errors)
{
    metrics_t *m = metrics_new();
    static const double bounds[] = {1};
    ck_assert_ptr_nonnull(metrics_gauge(m, "x_dup", "D.", NULL, err, ERRLEN));
    err[0] = '\0';
    metric_family_t *f =
        bad_families[_i].histogram
            ? metrics_histogram(m, bad_families[_i].name, "H.", bad_families[_i].labels, bounds, 1,
                                err, ERRLEN)
            : metrics_counter(m, bad_families[_i].name, "C.", bad_families[_i].labels, err, ERRLEN);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err, bad_families[_i].why), "\"%s\" lacks \"%s\"", err,
                  bad_families[_i].why);
    metrics_free(m);
}
END_TEST

START_TEST(histogram_bounds_checked)
{
    metrics_t *m = metrics_new();
    static const double unordered[] = {1, 0.5};
    static const double repeated[] = {1, 1};
    static const double infinite[] = {1, INFINITY};
    ck_assert_ptr_null(metrics_histogram(m, "x_h", "H.", NULL, unordered, 2, err, ERRLEN));
    ck_assert_ptr_null(metrics_histogram(m, "x_h", "H.", NULL, repeated, 2, err, ERRLEN));
    ck_assert_ptr_null(metrics_histogram(m, "x_h", "H.", NULL, infinite, 2, err, ERRLEN));
    ck_assert_ptr_null(metrics_histogram(m, "x_h", "H.", NULL, unordered, 0, err, ERRLEN));
    ck_assert_ptr_nonnull(strstr(err, "bucket bounds"));
    /* The failed names were not taken. */
    ck_assert_ptr_nonnull(metrics_histogram(m, "x_h", "H.", NULL, unordered, 1, err, ERRLEN));
    metrics_free(m);
}
END_TEST

/* The table keeps working as it grows far past its first size. */
START_TEST(many_series)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_total", "X.", L("source", "result"), err, ERRLEN);
    char src[16];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < MANY_SOURCES; i++) {
            snprintf(src, sizeof(src), "s%05d", i);
            ck_assert_int_eq(metric_add(c, V(src, "ok"), 1), 0);
        }
    }
    char *text = render(m);
    int lines = 0;
    for (const char *p = strstr(text, "x_total{"); p; p = strstr(p + 1, "x_total{")) {
        lines++;
        ck_assert_ptr_nonnull(strstr(p, "\"} 3\n"));
    }
    ck_assert_int_eq(lines, MANY_SOURCES);
    ck_assert_ptr_nonnull(strstr(text, "x_total{source=\"s00001\",result=\"ok\"} 3\n"));
    free(text);
    metrics_free(m);
}
END_TEST

/* ---- concurrency ---- */

static const double conc_bounds[] = {1, 3, 5};

typedef struct conc {
    metric_family_t *c, *g, *h;
    atomic_bool done;
} conc_t;

static void *writer(void *arg)
{
    conc_t *w = arg;
    char src[16];
    for (int i = 0; i < CONCURRENT_UPDATES; i++) {
        snprintf(src, sizeof(src), "s%d", i % CONCURRENT_SOURCES);
        metric_add(w->c, V(src), 1);
        metric_observe(w->h, V(src), i % 7);
        metric_set(w->g, V(src), i);
    }
    atomic_store(&w->done, true);
    return NULL;
}

/*
 * Checks what a render shows of the histogram: buckets of a series never
 * decrease and the +Inf bucket equals _count. Adds up counts and counter
 * values into the totals.
 */
static void check_consistent(const char *text, unsigned long long *counter_total,
                             unsigned long long *histogram_total)
{
    unsigned long long prev = 0, inf = 0;
    *counter_total = *histogram_total = 0;
    for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
        const char *value = strchr(line, ' ');
        ck_assert_ptr_nonnull(value);
        unsigned long long v = strtoull(value + 1, NULL, 10);
        if (strncmp(line, "h_bucket{", 9) == 0) {
            if (strstr(line, "le=\"1\"")) /* a series' first bucket */
                prev = 0;
            ck_assert_uint_ge(v, prev);
            prev = v;
            inf = v;
        } else if (strncmp(line, "h_count{", 8) == 0) {
            ck_assert_uint_eq(v, inf);
            *histogram_total += v;
        } else if (strncmp(line, "c_total{", 8) == 0) {
            *counter_total += v;
        }
    }
}

START_TEST(render_while_updating)
{
    metrics_t *m = metrics_new();
    conc_t w = {
        .c = metrics_counter(m, "c_total", "C.", L("source"), err, ERRLEN),
        .g = metrics_gauge(m, "g", "G.", L("source"), err, ERRLEN),
        .h = metrics_histogram(m, "h", "H.", L("source"), conc_bounds, 3, err, ERRLEN),
    };
    atomic_init(&w.done, false);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, writer, &w), 0);
    unsigned long long ctotal, htotal, renders = 0;
    do {
        char *text = render(m);
        check_consistent(text, &ctotal, &htotal);
        ck_assert_uint_le(ctotal, CONCURRENT_UPDATES);
        free(text);
        renders++;
    } while (!atomic_load(&w.done));
    pthread_join(t, NULL);
    char *text = render(m);
    check_consistent(text, &ctotal, &htotal);
    ck_assert_uint_eq(ctotal, CONCURRENT_UPDATES);
    ck_assert_uint_eq(htotal, CONCURRENT_UPDATES);
    ck_assert_uint_ge(renders, 1);
    free(text);
    metrics_free(m);
}
END_TEST

/* ---- promtool ---- */

/*
 * Runs `promtool check metrics` on text; returns its exit status and its
 * output (stdout and stderr) in out. promtool is a test dependency
 * (deploy/deps.sh installs the Debian package prometheus).
 */
static int promtool_check(const char *text, char *out, size_t outlen)
{
    char in_path[] = "/tmp/sb_metrics_XXXXXX";
    int fd = mkstemp(in_path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", in_path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    unlink(in_path);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 127,
                  "promtool not found: run deploy/deps.sh (Debian package prometheus)");
    return WEXITSTATUS(status);
}

static void assert_promtool_clean(metrics_t *m)
{
    char *text = render(m);
    char out[4096];
    int rc = promtool_check(text, out, sizeof(out));
    ck_assert_msg(rc == 0 && out[0] == '\0', "promtool exit %d: %s\non:\n%.2000s", rc, out, text);
    free(text);
}

START_TEST(promtool_accepts_every_kind)
{
    static const double bounds[] = {0.005, 0.5, 1, 60};
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_requests_total", "Requests \\ with\nescapes.",
                                         L("path", "code"), err, ERRLEN);
    metric_family_t *g = metrics_gauge(m, "x_queue_depth", "Depth.", NULL, err, ERRLEN);
    metric_family_t *h = metrics_histogram(m, "x_duration_seconds", "Durations.", L("source"),
                                           bounds, 4, err, ERRLEN);
    ck_assert_int_eq(metrics_refusals(m, "x_series_refused_total", "Refused.", err, ERRLEN), 0);
    metric_add(c, V("q\"uote\\back\nline", "200"), 3);
    metric_add(c, V("caf\xc3\xa9", "error"), 1);
    metric_set(g, NULL, 1e20);
    metric_observe(h, V("a"), 0.3);
    metric_observe(h, V("a"), 1e9);
    assert_promtool_clean(m);
    metrics_free(m);
}
END_TEST

/* The bad case must fail, or the check above proves nothing. */
START_TEST(promtool_rejects_a_lint_error)
{
    metrics_t *m = metrics_new();
    metric_family_t *c = metrics_counter(m, "x_requests", "No _total suffix.", NULL, err, ERRLEN);
    metric_add(c, NULL, 1);
    char *text = render(m);
    char out[4096];
    ck_assert_int_ne(promtool_check(text, out, sizeof(out)), 0);
    ck_assert_ptr_nonnull(strstr(out, "_total"));
    free(text);
    metrics_free(m);
}
END_TEST

/* The families of the metrics spec: names, types, label names. */
static const struct {
    const char *name;
    const char *type;
    const char *labels; /* as rendered with every value "v" */
} spec[] = {
    {"session_bridge_build_info", "gauge", "{version=\""},
    {"session_bridge_heartbeat_timestamp_seconds", "gauge", ""},
    {"session_bridge_polls_total", "counter", "{source=\"v\",result=\"v\"}"},
    {"session_bridge_poll_duration_seconds", "histogram", "{source=\"v\"}"},
    {"session_bridge_last_success_timestamp_seconds", "gauge", "{source=\"v\"}"},
    {"session_bridge_sessions", "gauge", "{source=\"v\",state=\"v\"}"},
    {"session_bridge_events_total", "counter", "{source=\"v\",type=\"v\"}"},
    {"session_bridge_unknown_statuses_total", "counter", "{source=\"v\"}"},
    {"session_bridge_http_requests_total", "counter", "{source=\"v\",code=\"v\"}"},
    {"session_bridge_sink_deliveries_total", "counter", "{sink=\"v\",result=\"v\"}"},
    {"session_bridge_sink_queue_depth", "gauge", "{sink=\"v\"}"},
    {"session_bridge_sink_ready", "gauge", "{sink=\"v\"}"},
    {"session_bridge_sink_fatal", "gauge", "{sink=\"v\"}"},
    {"session_bridge_outbox_depth", "gauge", "{sink=\"v\"}"},
    {"session_bridge_dead_letters", "gauge", "{sink=\"v\"}"},
    {"session_bridge_sink_disabled", "gauge", "{sink=\"v\"}"},
    {"session_bridge_redis_errors_total", "counter", ""},
    {"session_bridge_lease_owned", "gauge", "{source=\"v\"}"},
    {"session_bridge_lease_lost_total", "counter", "{source=\"v\"}"},
    {"session_bridge_paused_until_timestamp_seconds", "gauge", "{source=\"v\"}"},
    {"session_bridge_redis_state_restored_total", "counter", "{source=\"v\"}"},
    {"session_bridge_vanished_without_record_total", "counter", "{source=\"v\"}"},
    {"session_bridge_config_reloads_total", "counter", "{result=\"v\"}"},
    {"session_bridge_config_last_reload_success_timestamp_seconds", "gauge", ""},
    {"session_bridge_metric_series_refused_total", "counter", "{family=\""},
};
#define SPEC_FAMILIES (sizeof(spec) / sizeof(spec[0]))

/* One series in every family of bm, every label value "v". bridge_metrics_t
 * holds nothing but family pointers: walk it as an array so that a family
 * added later cannot be forgotten here. */
static void fill(bridge_metrics_t *bm)
{
    metric_family_t *const *fams = (metric_family_t *const *)bm;
    size_t n = sizeof(*bm) / sizeof(metric_family_t *);
    const char *const vv[] = {"v", "v"};
    for (size_t i = 0; i < n; i++) {
        if (fams[i] == bm->build_info)
            continue;
        if (metric_add(fams[i], vv, 1) != 0)
            ck_assert_int_eq(metric_observe(fams[i], vv, 0.3), 0);
    }
}

START_TEST(bridge_metrics_follow_the_spec)
{
    metrics_t *m = metrics_new();
    bridge_metrics_t *bm = bridge_metrics_new(m, err, ERRLEN);
    ck_assert_msg(bm != NULL, "%s", err);
    fill(bm);
    char *text = render(m);
    char want[256];
    for (size_t i = 0; i < SPEC_FAMILIES; i++) {
        snprintf(want, sizeof(want), "\n# TYPE %s %s\n", spec[i].name, spec[i].type);
        ck_assert_msg(strstr(text, want) || strncmp(text, want + 1, strlen(want + 1)) == 0,
                      "missing %s", want + 1);
        const char *suffix = strcmp(spec[i].type, "histogram") == 0 ? "_count" : "";
        snprintf(want, sizeof(want), "\n%s%s%s", spec[i].name, suffix, spec[i].labels);
        ck_assert_msg(strstr(text, want), "no series %s", want + 1);
    }
    size_t types = 0;
    for (const char *p = strstr(text, "# TYPE "); p; p = strstr(p + 1, "# TYPE "))
        types++;
    ck_assert_uint_eq(types, SPEC_FAMILIES);
    ck_assert_ptr_nonnull(
        strstr(text, "session_bridge_build_info{version=\"" SB_VERSION "\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"0.05\"} 0\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"0.1\"} 0\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"0.25\"} 0\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"0.5\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"1\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"2.5\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"5\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"10\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"30\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"60\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"120\"} 1\n"
                     "session_bridge_poll_duration_seconds_bucket{source=\"v\",le=\"+Inf\"} 1\n"));
    free(text);
    assert_promtool_clean(m);
    bridge_metrics_free(bm);
    metrics_free(m);
}
END_TEST

START_TEST(bridge_metrics_twice_is_an_error)
{
    metrics_t *m = metrics_new();
    bridge_metrics_t *bm = bridge_metrics_new(m, err, ERRLEN);
    ck_assert_ptr_nonnull(bm);
    ck_assert_ptr_null(bridge_metrics_new(m, err, ERRLEN));
    ck_assert_ptr_nonnull(strstr(err, "session_bridge_build_info: registered twice"));
    bridge_metrics_free(bm);
    metrics_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("text");
    tcase_add_test(tc, counter_and_gauge_text);
    tcase_add_test(tc, unlabelled_family_exists_at_zero);
    tcase_add_test(tc, histogram_text);
    tcase_add_test(tc, unlabelled_histogram_text);
    tcase_add_loop_test(tc, number_formats, 0, sizeof(numbers) / sizeof(numbers[0]));
    tcase_add_test(tc, series_sorted_whatever_the_creation_order);
    tcase_add_test(tc, label_boundaries_matter);
    suite_add_tcase(s, tc);

    tc = tcase_create("bounds");
    tcase_add_test(tc, updates_that_do_not_fit_change_nothing);
    tcase_add_test(tc, series_cap_refuses_and_counts);
    tcase_add_test(tc, drop_removes_the_series_of_one_label_value);
    tcase_add_test(tc, default_series_cap);
    tcase_add_test(tc, bad_label_values_refused);
    tcase_add_loop_test(tc, registration_errors, 0, sizeof(bad_families) / sizeof(bad_families[0]));
    tcase_add_test(tc, histogram_bounds_checked);
    tcase_add_test(tc, many_series);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrency");
    tcase_add_test(tc, render_while_updating);
    suite_add_tcase(s, tc);

    tc = tcase_create("promtool");
    tcase_add_test(tc, promtool_accepts_every_kind);
    tcase_add_test(tc, promtool_rejects_a_lint_error);
    tcase_add_test(tc, bridge_metrics_follow_the_spec);
    tcase_add_test(tc, bridge_metrics_twice_is_an_error);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
