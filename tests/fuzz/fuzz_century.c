/*
 * Fuzz target: the century_smart_ia adapter's page handling (two lists,
 * pagination.nextCursor), one poll per input; input format and checks in
 * fuzz_provider.h.
 */
#include "fuzz.h"
#include "fuzz_provider.h"

static const char *const sources[] = {
    "{\"name\":\"century\",\"provider\":\"century_smart_ia\","
    "\"base_url\":\"https://connect.century.tech/api/v1\",\"auth\":{\"api_key\":\"k-fuzz\"}}",
    /* Small pages, no lookback, a status override, a base_url with a port
     * and a trailing '/'. */
    "{\"name\":\"century-2\",\"provider\":\"century_smart_ia\","
    "\"base_url\":\"http://127.0.0.1:8080/api/v1/\",\"auth\":{\"api_key\":\"k-fuzz\"},"
    "\"page_size\":2,\"completed_lookback_s\":0,\"status_map\":{\"PAUSED\":\"active\"},"
    "\"filters\":{\"startDate\":{\"gte\":\"2024-01-01T00:00:00Z\"},\"subject\":[\"maths\"]}}",
    NULL,
};

static const fuzz_provider_t target = {&provider_century, sources};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_provider_run(&target, data, size);
}
