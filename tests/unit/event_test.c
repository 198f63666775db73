/*
 * The CloudEvent of CONTRACT §6, read back with a JSON parser.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

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

START_TEST(status_change_event)
{
    cJSON *record = cJSON_Parse("{\"sessionId\":\"s-1\",\"status\":\"COMPLETED\",\"n\":[1,2]}");
    diff_event_t ev = {.type = DIFF_EV_COMPLETED,
                       .reason = DIFF_REASON_STATUS_CHANGE,
                       .session_id = "s-1",
                       .state = DIFF_STATE_COMPLETED,
                       .previous_state = DIFF_STATE_ACTIVE,
                       .status = "COMPLETED",
                       .previous_status = "IN_PROGRESS",
                       .record = record};
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
    /* The record was attached by reference and is still intact. */
    ck_assert_str_eq(str(record, "sessionId"), "s-1");
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

START_TEST(large_integers_stay_exact)
{
    cJSON *record = cJSON_Parse("{\"id\":4436481160115170,\"n\":[-9007199254740992,7,1.5],"
                                "\"s\":{\"x\":2147483648}}");
    diff_event_t ev = {.type = DIFF_EV_STARTED,
                       .reason = DIFF_REASON_FIRST_SEEN,
                       .session_id = "4436481160115170",
                       .state = DIFF_STATE_ACTIVE,
                       .status = "exam_started",
                       .record = record};
    size_t len = 0;
    char *json = event_encode(&ev, "pe", "proctorexam", 0, &len);
    ck_assert_ptr_nonnull(json);
    ck_assert_ptr_nonnull(strstr(json, "\"session\":{\"id\":4436481160115170,\"n\":"
                                       "[-9007199254740992,7,1.5],\"s\":{\"x\":2147483648}}"));
    ck_assert_ptr_null(strstr(json, "e+"));
    free(json);
    cJSON_Delete(record);
}
END_TEST

/* Whatever a caller hands in, an event is UTF-8 or nothing. */
START_TEST(never_invalid_utf8)
{
    cJSON *record = cJSON_CreateObject();
    cJSON_AddStringToObject(record, "name", "Ren\xe9");
    diff_event_t ev = {.type = DIFF_EV_STARTED,
                       .reason = DIFF_REASON_FIRST_SEEN,
                       .session_id = "s-1",
                       .state = DIFF_STATE_ACTIVE,
                       .status = "IN_PROGRESS",
                       .record = record};
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
    cJSON_Delete(record);
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
    tcase_add_test(tc, large_integers_stay_exact);
    tcase_add_test(tc, time_format);
    tcase_add_test(tc, never_invalid_utf8);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
