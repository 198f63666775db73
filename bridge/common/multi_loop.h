/*
 * multi_loop: a libcurl multi handle driven by an event loop (sink_loop_t)
 * through curl_multi_socket_action(): libcurl's socket callback watches and
 * unwatches its sockets on the loop, its timer callback arms one loop
 * timer, and every finished transfer is handed to a done callback. Shared
 * by the pollers' HTTP client (bridge/http.c) and the webhook sink; not
 * part of the installed sink API.
 */
#ifndef SB_MULTI_LOOP_H
#define SB_MULTI_LOOP_H

#include <stddef.h>

#include <curl/curl.h>

#include "sink.h"

typedef struct multi_loop multi_loop_t;

/*
 * Called on the loop's thread, outside libcurl's callbacks, once per
 * transfer that ended with result. The easy handle is still in the multi:
 * the callee removes it (curl_multi_remove_handle), and may add others.
 */
typedef void (*multi_loop_done_fn)(void *opaque, CURL *easy, CURLcode result);

/* loop must outlive the driver. NULL with a reason in err. */
multi_loop_t *multi_loop_new(const sink_loop_t *loop, multi_loop_done_fn done, void *opaque,
                             char *err, size_t errlen);
/* The multi handle, to add and remove easy handles (and set options) on. */
CURLM *multi_loop_handle(const multi_loop_t *ml);
/* Cleans the multi handle up (every easy handle removed before) and frees all. Accepts NULL. */
void multi_loop_free(multi_loop_t *ml);

/*
 * Hands every finished transfer of multi to done (the loop driver calls it
 * after each socket action; a caller driving multi with curl_multi_perform()
 * may too). Returns how many.
 */
int multi_loop_collect(CURLM *multi, multi_loop_done_fn done, void *opaque);

#endif /* SB_MULTI_LOOP_H */
