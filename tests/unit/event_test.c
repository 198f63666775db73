/*
 * The CloudEvent of CONTRACT §6, read back with a JSON parser.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "event.h"

static cJSON *encode(const diff_event_t *ev)
{
    size_t len = 0;
    char *json = event_encode(ev, "century", "century_smart_ia", 1700000000123LL, &len);
    ck_assert_ptr_nonnull(json);
    ck_assert_uint_eq(len, strlen(json));
    cJSON *doc = cJSON_Parse(json);
    ck_assert_ptr_nonnull(doc);
    free(json);
    return doc;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *const rec_text = "{\"sessionId\":\"s-1\",\"status\":\"COMPLETED\",\"n\":[1,2]}";

/* An active -> completed event of session_id carrying rec_text. */
static diff_event_t completed_event(const char *session_id)
{
    return (diff_event_t){.type = DIFF_EV_COMPLETED,
                          .reason = DIFF_REASON_STATUS_CHANGE,
                          .session_id = session_id,
                          .state = DIFF_STATE_COMPLETED,
                          .previous_state = DIFF_STATE_ACTIVE,
                          .status = "COMPLETED",
                          .previous_status = "IN_PROGRESS",
                          .record = rec_text,
                          .record_len = strlen(rec_text)};
}

START_TEST(status_change_event)
{
    cJSON *record = cJSON_Parse(rec_text);
    diff_event_t ev = completed_event("s-1");
    diff_event_id("century", "s-1", DIFF_EV_COMPLETED, ev.id);
    cJSON *doc = encode(&ev);
    ck_assert_str_eq(str(doc, "specversion"), "1.0");
    ck_assert_str_eq(str(doc, "id"), ev.id);
    ck_assert_str_eq(str(doc, "source"), "session-bridge/century");
    ck_assert_str_eq(str(doc, "type"), "session.completed");
    ck_assert_str_eq(str(doc, "subject"), "s-1");
    ck_assert_str_eq(str(doc, "time"), "2023-11-14T22:13:20.123Z");
    ck_assert_str_eq(str(doc, "datacontenttype"), "application/json");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    ck_assert_str_eq(str(data, "source"), "century");
    ck_assert_str_eq(str(data, "provider"), "century_smart_ia");
    ck_assert_str_eq(str(data, "session_id"), "s-1");
    ck_assert_str_eq(str(data, "state"), "completed");
    ck_assert_str_eq(str(data, "previous_state"), "active");
    ck_assert_str_eq(str(data, "status"), "COMPLETED");
    ck_assert_str_eq(str(data, "previous_status"), "IN_PROGRESS");
    ck_assert_str_eq(str(data, "reason"), "status_change");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(data, "synthesized")));
    ck_assert(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(data, "session"), record, 1));
    cJSON_Delete(doc);
    cJSON_Delete(record);
}
END_TEST

START_TEST(vanished_event_has_nulls)
{
    diff_event_t ev = {.type = DIFF_EV_CANCELLED,
                       .reason = DIFF_REASON_VANISHED,
                       .session_id = "s\"2",
                       .state = DIFF_STATE_CANCELLED,
                       .previous_state = DIFF_STATE_ACTIVE,
                       .previous_status = "IN_PROGRESS"};
    strcpy(ev.id, "0123456789abcdef0123456789abcdef");
    cJSON *doc = encode(&ev);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    ck_assert_str_eq(str(doc, "subject"), "s\"2");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "status")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "session")));
    ck_assert_str_eq(str(data, "reason"), "vanished");
    ck_assert_str_eq(str(data, "state"), "cancelled");
    cJSON_Delete(doc);
}
END_TEST

START_TEST(first_seen_synthesized_event)
{
    diff_event_t ev = {.type = DIFF_EV_STARTED,
                       .reason = DIFF_REASON_FIRST_SEEN,
                       .synthesized = true,
                       .session_id = "s-3",
                       .state = DIFF_STATE_ACTIVE,
                       .previous_state = DIFF_STATE_NONE,
                       .status = "COMPLETED"};
    cJSON *doc = encode(&ev);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "previous_state")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(data, "previous_status")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "synthesized")));
    ck_assert_str_eq(str(data, "reason"), "first_seen");
    cJSON_Delete(doc);
}
END_TEST

/* Whatever a caller hands in, an event is UTF-8 or nothing. */
START_TEST(never_invalid_utf8)
{
    const char *record = "{\"name\":\"Ren\xe9\"}";
    diff_event_t ev = {.type = DIFF_EV_STARTED,
                       .reason = DIFF_REASON_FIRST_SEEN,
                       .session_id = "s-1",
                       .state = DIFF_STATE_ACTIVE,
                       .status = "IN_PROGRESS",
                       .record = record,
                       .record_len = strlen(record)};
    size_t len = 0;
    ck_assert_ptr_null(event_encode(&ev, "century", "century_smart_ia", 0, &len));
    ev.record = NULL;
    ev.session_id = "s-\xff";
    ck_assert_ptr_null(event_encode(&ev, "century", "century_smart_ia", 0, &len));
    ev.session_id = "s-\xc3\xa9";
    char *json = event_encode(&ev, "century", "century_smart_ia", 0, &len);
    ck_assert_ptr_nonnull(json);
    ck_assert_ptr_nonnull(strstr(json, "\"subject\":\"s-\xc3\xa9\""));
    free(json);
}
END_TEST

/*
 * Events byte for byte as the cJSON encoder before this one wrote them
 * (member order, no spaces, cJSON's escapes in the strings): consumers that
 * compare or hash the text see no change.
 */
START_TEST(bytes_as_before)
{
    static const char want_change[] =
        "{\"specversion\":\"1.0\",\"id\":\"0123456789abcdef0123456789abcdef\",\"source\":"
        "\"session-bridge/century\",\"type\":\"session.completed\",\"subject\":"
        "\"s\\\"\\\\\\b\\f\\n\\r\\t\\u0001-\xc3\xa9\",\"time\":\"2023-11-14T22:13:20.123Z\","
        "\"datacontenttype\":\"application/json\",\"data\":{\"source\":\"century\",\"provider\":"
        "\"century_smart_ia\",\"session_id\":\"s\\\"\\\\\\b\\f\\n\\r\\t\\u0001-\xc3\xa9\","
        "\"state\":"
        "\"completed\",\"previous_state\":\"active\",\"status\":\"COMPLETED\",\"previous_status\":"
        "\"IN_PROGRESS\",\"reason\":\"status_change\",\"synthesized\":false,\"session\":"
        "{\"sessionId\":\"s-1\",\"status\":\"COMPLETED\",\"n\":[1,2]}}}";
    static const char want_vanished[] =
        "{\"specversion\":\"1.0\",\"id\":\"fedcba9876543210fedcba9876543210\",\"source\":"
        "\"session-bridge/century\",\"type\":\"session.cancelled\",\"subject\":\"s-2\",\"time\":"
        "\"1970-01-01T00:00:00.000Z\",\"datacontenttype\":\"application/"
        "json\",\"data\":{\"source\":"
        "\"century\",\"provider\":\"century_smart_ia\",\"session_id\":\"s-2\",\"state\":"
        "\"cancelled\",\"previous_state\":\"active\",\"status\":null,\"previous_status\":"
        "\"IN_PROGRESS\",\"reason\":\"vanished\",\"synthesized\":false,\"session\":null}}";
    static const char want_first[] =
        "{\"specversion\":\"1.0\",\"id\":\"00000000000000000000000000000000\",\"source\":"
        "\"session-bridge/century\",\"type\":\"session.started\",\"subject\":\"s-3\",\"time\":"
        "\"1970-01-01T00:00:00.000Z\",\"datacontenttype\":\"application/"
        "json\",\"data\":{\"source\":"
        "\"century\",\"provider\":\"century_smart_ia\",\"session_id\":\"s-3\",\"state\":\"active\","
        "\"previous_state\":null,\"status\":\"COMPLETED\",\"previous_status\":null,\"reason\":"
        "\"first_seen\",\"synthesized\":true,\"session\":{\"sessionId\":\"s-1\",\"status\":"
        "\"COMPLETED\",\"n\":[1,2]}}}";
    diff_event_t change = completed_event("s\"\\\b\f\n\r\t\x01-\xc3\xa9");
    strcpy(change.id, "0123456789abcdef0123456789abcdef");
    diff_event_t vanished = {.type = DIFF_EV_CANCELLED,
                             .reason = DIFF_REASON_VANISHED,
                             .session_id = "s-2",
                             .state = DIFF_STATE_CANCELLED,
                             .previous_state = DIFF_STATE_ACTIVE,
                             .previous_status = "IN_PROGRESS"};
    strcpy(vanished.id, "fedcba9876543210fedcba9876543210");
    diff_event_t first = {.type = DIFF_EV_STARTED,
                          .reason = DIFF_REASON_FIRST_SEEN,
                          .synthesized = true,
                          .session_id = "s-3",
                          .state = DIFF_STATE_ACTIVE,
                          .status = "COMPLETED",
                          .record = rec_text,
                          .record_len = strlen(rec_text)};
    strcpy(first.id, "00000000000000000000000000000000");
    const struct {
        const diff_event_t *ev;
        int64_t ms;
        const char *want;
    } rows[] = {{&change, 1700000000123LL, want_change},
                {&vanished, 0, want_vanished},
                {&first, 0, want_first}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t len = 0;
        char *json = event_encode(rows[i].ev, "century", "century_smart_ia", rows[i].ms, &len);
        ck_assert_ptr_nonnull(json);
        ck_assert_str_eq(json, rows[i].want);
        ck_assert_uint_eq(len, strlen(rows[i].want));
        free(json);
    }
}
END_TEST

/*
 * Odd but valid JSON (issue 11, point 5): escapes, unicode, exponents,
 * nesting, whitespace, integers a double holds exactly but cJSON would print
 * as %g. data.session is the record: equal when parsed, and the very bytes
 * received.
 */
static const char *const odd_records[] = {
    "{\"s\":\"q\\\"b\\\\s\\/l\\b\\f\\n\\r\\t\\u0000\\u001f\"}",
    "{\"u\":\"\\u00e9\\u20ac\\ud83d\\ude00\",\"raw\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
    "\"k\\u00e9y\":1}",
    "{\"n\":[1e3,1E+3,-2.5e-7,0.0,-0,12345678901234567890,4436481160115170,-9007199254740992,"
    "2147483648,1.7976931348623157e308]}",
    "{\"a\":{\"b\":{\"c\":[[],[{}],[[1,[2,[3]]]],{\"d\":null}]}},\"t\":true,\"f\":false}",
    " {\n\t\"id\" :  \"s-1\" ,\r\n  \"status\":\"IN_PROGRESS\"\t,\"arr\" : [ 1 , 2 ] }\n",
    "[1,\"two\",{\"three\":3}]",
    "{\"\":\"empty key\",\" \":{\"\":[]}}",
};

START_TEST(odd_records_verbatim)
{
    const char *rec = odd_records[_i];
    diff_event_t ev = {.type = DIFF_EV_STARTED,
                       .reason = DIFF_REASON_FIRST_SEEN,
                       .session_id = "s-1",
                       .state = DIFF_STATE_ACTIVE,
                       .status = "IN_PROGRESS",
                       .record = rec,
                       .record_len = strlen(rec)};
    size_t len = 0;
    char *json = event_encode(&ev, "century", "century_smart_ia", 0, &len);
    ck_assert_ptr_nonnull(json);
    /* the bytes: "session": then the record as it came, closing the event */
    char *at = strstr(json, ",\"session\":");
    ck_assert_ptr_nonnull(at);
    at += strlen(",\"session\":");
    ck_assert_uint_eq(strlen(at), strlen(rec) + 2);
    ck_assert(memcmp(at, rec, strlen(rec)) == 0);
    ck_assert_str_eq(at + strlen(rec), "}}");
    /* and a JSON parser reads the same value */
    cJSON *doc = cJSON_ParseWithLength(json, len), *want = cJSON_Parse(rec);
    ck_assert_ptr_nonnull(doc);
    ck_assert_ptr_nonnull(want);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    ck_assert(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(data, "session"), want, 1));
    cJSON_Delete(doc);
    cJSON_Delete(want);
    free(json);
}
END_TEST

/*
 * event_write(): the text event_encode() gives, in one buffer reused from
 * event to event (no allocation per event once it holds the largest), and
 * a refused event leaves the buffer usable for the next.
 */
START_TEST(write_reuses_its_buffer)
{
    static const char long_record[] =
        "{\"sessionId\":\"s-1\",\"status\":\"COMPLETED\",\"notes\":\"a record that is "
        "longer than the one after it, so that the buffer it leaves is big enough\"}";
    static const char bad_record[] = "{\"name\":\"Ren\xe9\"}";
    char when[EVENT_TIME_LEN];
    event_buf_t buf = {0};
    event_format_time(1700000000123LL, when);

    diff_event_t evs[3] = {completed_event("s-1"), completed_event("s-2"), completed_event("s-3")};
    evs[0].record = long_record;
    evs[0].record_len = strlen(long_record);
    evs[1].record = bad_record;
    evs[1].record_len = strlen(bad_record);
    char *first_text = NULL;
    size_t first_cap = 0;
    for (int i = 0; i < 3; i++) {
        diff_event_id("century", evs[i].session_id, evs[i].type, evs[i].id);
        size_t len = 0;
        char *want = event_encode(&evs[i], "century", "century_smart_ia", 1700000000123LL, &len);
        int rc = event_write(&buf, &evs[i], "century", "century_smart_ia", when);
        if (i == 0) {
            first_text = buf.text;
            first_cap = buf.cap;
        }
        ck_assert_ptr_eq(buf.text, first_text);
        ck_assert_uint_eq(buf.cap, first_cap);
        if (want == NULL) {
            ck_assert_int_eq(rc, -1);
            ck_assert_uint_eq(buf.len, 0);
            continue;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(buf.len, len);
        ck_assert_uint_eq(strlen(buf.text), len);
        ck_assert_str_eq(buf.text, want);
        free(want);
    }
    event_buf_free(&buf);
    ck_assert_ptr_null(buf.text);
    event_buf_free(&buf); /* twice is harmless, and so is NULL */
    event_buf_free(NULL);
}
END_TEST

START_TEST(time_format)
{
    char out[EVENT_TIME_LEN];
    event_format_time(0, out);
    ck_assert_str_eq(out, "1970-01-01T00:00:00.000Z");
    event_format_time(1700000000007LL, out);
    ck_assert_str_eq(out, "2023-11-14T22:13:20.007Z");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("event");
    tcase_add_test(tc, status_change_event);
    tcase_add_test(tc, vanished_event_has_nulls);
    tcase_add_test(tc, first_seen_synthesized_event);
    tcase_add_test(tc, time_format);
    tcase_add_test(tc, never_invalid_utf8);
    tcase_add_test(tc, bytes_as_before);
    tcase_add_test(tc, write_reuses_its_buffer);
    tcase_add_loop_test(tc, odd_records_verbatim, 0, sizeof(odd_records) / sizeof(odd_records[0]));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
