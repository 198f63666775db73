/*
 * Fuzz target: the quiz_jsonapi adapter's page handling (JSON:API
 * resources, page[number] until a short page), one poll per input; input
 * format and checks in fuzz_provider.h.
 */
#include "fuzz.h"
#include "fuzz_provider.h"

static const char *const sources[] = {
    "{\"name\":\"quiz\",\"provider\":\"quiz_jsonapi\",\"base_url\":\"https://quiz.example\","
    "\"auth\":{\"header\":\"Authorization\",\"value\":\"Bearer q-fuzz\"}}",
    /* Pages of two, so that short inputs page on; sort, a filter, an
     * override. */
    "{\"name\":\"quiz-2\",\"provider\":\"quiz_jsonapi\",\"base_url\":\"http://[::1]:8443/\","
    "\"auth\":{\"header\":\"X-Api-Key\",\"value\":\"q-fuzz\"},\"page_size\":2,"
    "\"sort\":\"-created_at\",\"status_map\":{\"paused\":\"active\"}}",
    NULL,
};

static const fuzz_provider_t target = {&provider_quiz_jsonapi, sources};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_provider_run(&target, data, size);
}
