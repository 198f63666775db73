/*
 * Fuzz target: the rest provider's page handling, one poll per input
 * (format and checks in fuzz_provider.h: every request stays on
 * base_url's origin, whatever next URL or Link header a page gives), and
 * the RFC 8288 Link parser (provider_link_next) on the whole input as one
 * header value: it never reads past the value, and a target it finds is
 * the text between a '<' and the next '>' of the value.
 *
 * Variants (first line "#N"): cursor at dotted paths, next_url, a Link
 * header (query auth, so that the credential rides on followed URLs),
 * page numbers over a body that is the array, offsets over two lists.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "fuzz_provider.h"

#define HEAD(name, auth) "{\"name\":\"" name "\",\"provider\":\"rest\",\"auth\":" auth ","
#define MAP ",\"status_map\":{\"on\":\"active\",\"done\":\"completed\",\"x\":\"cancelled\"}}"
#define BEARER "{\"type\":\"bearer\",\"token\":\"rest-fuzz\"}"

static const char *const sources[] = {
    HEAD("r0", BEARER) "\"base_url\":\"https://r.example/api\",\"path\":\"/v2/attempts\","
                       "\"records\":\"data.items\",\"id\":\"id\",\"status\":\"attributes.state\","
                       "\"page_size\":2,\"pagination\":{\"type\":\"cursor\",\"param\":\"cursor\","
                       "\"next\":\"meta.next_cursor\",\"size_param\":\"limit\"}" MAP,
    HEAD("r1", BEARER) "\"base_url\":\"http://R.example:8080/p/\",\"path\":\"/list\","
                       "\"records\":\"items\",\"id\":\"a.b.id\",\"status\":\"s\","
                       "\"pagination\":{\"type\":\"next_url\",\"next\":\"links.next\"}" MAP,
    HEAD("r2",
         "{\"type\":\"query\",\"param\":\"key\",\"value\":\"rest-fuzz\"}") "\"base_url\":\"https://"
                                                                           "[::1]:443/"
                                                                           "api\",\"path\":\"/"
                                                                           "x\",\"records\":"
                                                                           "\"items\","
                                                                           "\"id\":\"id\","
                                                                           "\"status\":\"s\","
                                                                           "\"pagination\":{"
                                                                           "\"type\":\"link_"
                                                                           "header\","
                                                                           "\"size_param\":\"per_"
                                                                           "page\"}" MAP,
    HEAD("r3",
         "{\"type\":\"basic\",\"username\":\"u\",\"password\":\"p\"}") "\"base_url\":\"http://"
                                                                       "r.example\",\"path\":\"/"
                                                                       "x\",\"records\":\"\","
                                                                       "\"id\":\"id\","
                                                                       "\"status\":\"s\",\"page_"
                                                                       "size\":1,\"pagination\":{"
                                                                       "\"type\":\"page\","
                                                                       "\"param\":\"page\","
                                                                       "\"size_param\":\"n\","
                                                                       "\"start\":0}" MAP,
    HEAD("r4",
         "{\"type\":\"header\",\"header\":\"X-Key\",\"value\":\"k\"}") "\"base_url\":\"http://"
                                                                       "r.example\",\"path\":[\"/"
                                                                       "a\",\"/"
                                                                       "b\"],\"records\":\"r\","
                                                                       "\"id\":\"id\",\"status\":"
                                                                       "\"s\",\"page_size\":1,"
                                                                       "\"pagination\":{\"type\":"
                                                                       "\"offset\","
                                                                       "\"param\":\"o\",\"size_"
                                                                       "param\":\"n\"}" MAP,
    NULL,
};

static const fuzz_provider_t target = {&provider_rest, sources};

static void check_link(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1), out[HTTP_HEADER_MAX];
    if (value == NULL)
        return;
    memcpy(value, data, size);
    value[size] = '\0';
    int rc = provider_link_next(value, out, sizeof(out));
    FUZZ_CHECK(rc >= -1 && rc <= 1, "provider_link_next returned %d", rc);
    if (rc == 1) {
        /* Somewhere in the value as "<out>" (the value may hold a NUL:
         * only what precedes it is the header). */
        size_t n = strlen(out), len = strlen(value);
        int found = 0;
        for (const char *p = value; !found && (p = strchr(p, '<')) != NULL; p++)
            found = (size_t)(p - value) + n + 2 <= len && memcmp(p + 1, out, n) == 0 &&
                    p[1 + n] == '>' && memchr(p + 1, '>', n) == NULL;
        FUZZ_CHECK(found, "Link target \"%s\" is not a <...> of the value", out);
    }
    free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_link(data, size);
    return fuzz_provider_run(&target, data, size);
}
