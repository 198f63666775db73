/*
 * Fuzz target: the smarterproctoring adapter's page handling (results,
 * the next link resolved against base_url and never followed to another
 * origin, includeActive kept), one poll per input; input format and checks
 * in fuzz_provider.h, whose origin check is the one that matters here.
 */
#include "fuzz.h"
#include "fuzz_provider.h"

#define SIDS                                                                                       \
    "\"install_sid\":\"AI0123456789abcdef0123456789abcdef\","                                      \
    "\"enrollment_sid\":\"EN0123456789abcdef0123456789abcdef\","                                   \
    "\"exam_sid\":\"EX0123456789abcdef0123456789abcdef\",\"auth\":{\"token\":\"sp-fuzz\"}"

static const char *const sources[] = {
    "{\"name\":\"sp\",\"provider\":\"smarterproctoring\",\"base_url\":\"https://sp.example\"," SIDS
    "}",
    /* A port, a path prefix, small pages and filters. */
    "{\"name\":\"sp-2\",\"provider\":\"smarterproctoring\","
    "\"base_url\":\"http://SP.example:8080/prefix/\",\"page_size\":2," SIDS
    ",\"filters\":{\"status\":[\"Scheduled\",\"Closed\"],\"sortKeys\":[\"createdDate\"],"
    "\"sortOrder\":\"DESC\"}}",
    /* An IPv6 literal with the default port spelt out. */
    "{\"name\":\"sp-3\",\"provider\":\"smarterproctoring\","
    "\"base_url\":\"https://[::1]:443/api\"," SIDS "}",
    NULL,
};

static const fuzz_provider_t target = {&provider_smarterproctoring, sources};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_provider_run(&target, data, size);
}
