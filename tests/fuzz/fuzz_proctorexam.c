/*
 * Fuzz target: the proctorexam adapter's page handling (the students
 * array, X-Pagination-* headers or the full-page fallback, a signed
 * request rebuilt on every retry), one poll per input; input format and
 * checks in fuzz_provider.h.
 */
#include "fuzz.h"
#include "fuzz_provider.h"

static const char *const sources[] = {
    "{\"name\":\"pe\",\"provider\":\"proctorexam\",\"base_url\":\"https://pe.example\","
    "\"exam_id\":4711,\"auth\":{\"api_token\":\"t-fuzz\",\"secret_key\":\"s-fuzz\"}}",
    /* Pages of two (the fallback pages on after a full page), the
     * successor endpoint, filters and another join. */
    "{\"name\":\"pe-2\",\"provider\":\"proctorexam\",\"base_url\":\"http://pe.example:8080/\","
    "\"exam_id\":\"0042\",\"endpoint\":\"student_sessions\",\"signature_join\":\"&\","
    "\"page_size\":2,\"auth\":{\"api_token\":\"t-fuzz\",\"secret_key\":\"s-fuzz\"},"
    "\"filters\":{\"status\":\"exam_started\",\"sort\":[{\"id\":\"asc\"}]}}",
    NULL,
};

static const fuzz_provider_t target = {&provider_proctorexam, sources};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_provider_run(&target, data, size);
}
