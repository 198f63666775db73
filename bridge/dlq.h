/*
 * dlq: `session-bridge dlq list|replay|purge -c FILE [--sink NAME]`, the
 * operator's hands on the dead-letter store (store.h: P:dlq:K).
 *
 *   list    one JSON line per dead letter on stdout (sink, id, type, source,
 *           subject, attempts, error, failed_at); a count per sink on stderr
 *   replay  re-enables a disabled endpoint, then hands every dead letter to
 *           its sink once, directly; the delivered ones leave the store
 *   purge   deletes the dead letters
 */
#ifndef SB_DLQ_H
#define SB_DLQ_H

#include "config.h"

typedef enum dlq_action {
    DLQ_LIST = 0,
    DLQ_REPLAY,
    DLQ_PURGE,
} dlq_action_t;

/* The actions' names, in dlq_action_t order, NULL-terminated: "list", "replay", "purge". */
extern const char *const dlq_action_names[];

/* "list" | "replay" | "purge" -> *out; -1 for anything else. */
int dlq_action_parse(const char *s, dlq_action_t *out);

/*
 * Runs action over the sinks of conf (only the one named sink when not
 * NULL; it must exist). Returns 0, or -1 when Redis failed or a replayed
 * event was not delivered (those stay in the store).
 */
int dlq_run(const conf_t *conf, dlq_action_t action, const char *sink);

#endif /* SB_DLQ_H */
