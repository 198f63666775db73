/*
 * fuzz_provider: one poll of an adapter driven by a fuzz input, as the
 * engine drives it (bridge/engine/fetch.c): poll_begin, then next_request and
 * handle_page until the poll completes or fails, every record fed to a
 * diff cycle, which a complete poll finishes and applies.
 *
 * The input is the poll's responses, separated by a line "--" (a JSON text
 * never holds that line: it is not a token, and strings cannot span
 * lines):
 *
 *   #1                            optional first line: configuration variant 1
 *   X-Pagination-Page: 1          optional header lines, "Name: value"
 *   X-Pagination-Page-Count: 2
 *   {"students": [...]}           the body
 *   --
 *   {"students": []}              the next response
 *
 * A response's header lines are its leading lines whose name (HTTP token
 * characters) is directly followed by ':'; the body is the rest. Headers
 * are kept by the code that keeps a transfer's (http_response_add_header),
 * bounded and trimmed. Every response has status 200: retries and
 * transport failures are the engine's, not the adapter's.
 *
 * Whatever the input, these must hold, or the target aborts: every
 * request's URL is made of URL characters and goes to base_url's origin
 * (scheme, host, port; the credentials go wherever it points), its label
 * (what logs show) carries no query, its header lines are "Name: value"
 * without control characters; every record has an id, a status and a
 * record; a failure says why. Events must carry valid UTF-8 (open issue,
 * see fuzz.h).
 */
#ifndef SB_FUZZ_PROVIDER_H
#define SB_FUZZ_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include "provider.h"

typedef struct fuzz_provider {
    const provider_ops_t *ops;
    /* The configuration variants: source objects as a config file holds
     * them, for the real loader; NULL-terminated, at most 10. */
    const char *const *sources;
} fuzz_provider_t;

/* Runs one poll of fp over the responses in data. Returns 0. */
int fuzz_provider_run(const fuzz_provider_t *fp, const uint8_t *data, size_t size);

/* The checks of one request of src, above; aborts when one fails. */
void fuzz_check_request(const struct conf_source *src, const provider_request_t *req);

#endif /* SB_FUZZ_PROVIDER_H */
