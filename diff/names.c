/*
 * names: what states, event types and reasons are called, and the events'
 * deterministic ids (CONTRACT 6).
 */
#include "diff.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "internal.h"

/* Stack buffer for the event id input; longer inputs are hashed from the heap. */
#define EVENT_ID_STACK_BUF 512

static const char *const state_names[] = {
    [DIFF_STATE_NONE] = NULL,
    [DIFF_STATE_PENDING] = "pending",
    [DIFF_STATE_ACTIVE] = "active",
    [DIFF_STATE_COMPLETED] = "completed",
    [DIFF_STATE_CANCELLED] = "cancelled",
};

static const char *const event_names[DIFF_EV_COUNT] = {
    [DIFF_EV_STARTED] = "session.started",
    [DIFF_EV_COMPLETED] = "session.completed",
    [DIFF_EV_CANCELLED] = "session.cancelled",
};

static const char *const event_short[DIFF_EV_COUNT] = {
    [DIFF_EV_STARTED] = "started",
    [DIFF_EV_COMPLETED] = "completed",
    [DIFF_EV_CANCELLED] = "cancelled",
};

static const char *const reason_names[] = {
    [DIFF_REASON_STATUS_CHANGE] = "status_change",
    [DIFF_REASON_FIRST_SEEN] = "first_seen",
    [DIFF_REASON_VANISHED] = "vanished",
};

const char *diff_state_name(diff_state_t state)
{
    if ((unsigned)state > STATE_LAST)
        return NULL;
    return state_names[state];
}

int diff_state_parse(const char *name, diff_state_t *out)
{
    if (name == NULL)
        return -1;
    for (unsigned s = DIFF_STATE_PENDING; s <= STATE_LAST; s++) {
        if (strcmp(name, state_names[s]) == 0) {
            if (out != NULL)
                *out = (diff_state_t)s;
            return 0;
        }
    }
    return -1;
}

const char *diff_event_type_name(diff_event_type_t type)
{
    return (unsigned)type < DIFF_EV_COUNT ? event_names[type] : NULL;
}

const char *diff_event_type_short(diff_event_type_t type)
{
    return (unsigned)type < DIFF_EV_COUNT ? event_short[type] : NULL;
}

const char *diff_reason_name(diff_reason_t reason)
{
    return (unsigned)reason <= DIFF_REASON_VANISHED ? reason_names[reason] : NULL;
}

/* ---- event id ---- */
int event_id_compute(const char *source, const char *session_id, diff_event_type_t type,
                     char out[DIFF_EVENT_ID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    const char *tname = diff_event_type_name(type);
    if (source == NULL || session_id == NULL || tname == NULL)
        return -1;
    size_t ls = strlen(source), li = strlen(session_id), lt = strlen(tname);
    size_t n = ls + 1 + li + 1 + lt;
    char stackbuf[EVENT_ID_STACK_BUF];
    char *buf = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
    if (buf == NULL)
        return -1;
    memcpy(buf, source, ls);
    buf[ls] = '\n';
    memcpy(buf + ls + 1, session_id, li);
    buf[ls + 1 + li] = '\n';
    memcpy(buf + ls + 2 + li, tname, lt);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)buf, n, md);
    if (buf != stackbuf)
        free(buf);
    for (size_t i = 0; i < (DIFF_EVENT_ID_LEN - 1) / 2; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[DIFF_EVENT_ID_LEN - 1] = '\0';
    return 0;
}

/* On failure (only ENOMEM for an absurdly long source) the id is empty, which
 * no consumer can mistake for a real one. */
void diff_event_id(const char *source, const char *session_id, diff_event_type_t type,
                   char out[DIFF_EVENT_ID_LEN])
{
    if (event_id_compute(source, session_id, type, out) != 0)
        out[0] = '\0';
}
