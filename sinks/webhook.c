/*
 * sinks/webhook: delivers events to one HTTP endpoint as Standard Webhooks
 * (https://www.standardwebhooks.com): a signed POST per attempt, whose body
 * is the CloudEvent in the CloudEvents HTTP binding's structured mode.
 *
 * This is an outbox sink (SINK_F_OUTBOX). The core's outbox worker owns
 * retries, backoff and dead letters, and calls submit() once per attempt;
 * the sink makes that one attempt and says how it went: SINK_OK on 2xx,
 * SINK_ERR_GONE on 410 (the endpoint asks to be disabled), SINK_ERR_RETRY
 * on anything else, with the endpoint's Retry-After on the ticket. So there
 * is no retry loop here: retry_schedule_s is the outbox's option (sink_outbox_options).
 *
 * One curl multi handle per instance holds the connection cache, so that
 * the endpoint's connections stay alive between attempts. At most
 * max_in_flight requests run at once, each in a slot whose easy handle
 * (with its options and TLS session) is kept for the slot's next request;
 * submissions beyond the slots wait in a FIFO queue. On the bridge's loop
 * the multi handle is driven by socket and timer callbacks (multi_loop.h,
 * shared with the pollers' HTTP client), so an attempt completes as its
 * response arrives; without one, flush() drives it. Everything runs on the
 * main loop thread, inside submit(), the loop's callbacks, flush() and
 * exit().
 *
 * probe() (check --connect) opens a connection to the URL's origin and
 * completes the TLS handshake, then closes it: no HTTP request at all.
 * Not a HEAD or an OPTIONS: a receiver may route any request on its path
 * to the handler that acts on events, log it as a failed delivery or
 * count it against a rate limit, and a signed one would be a delivery;
 * DNS, TCP and TLS (the certificate checked as for a delivery) are what
 * fails in practice, and an empty connection is invisible to the handler.
 *
 * Logs and messages name the endpoint by its origin (scheme://host[:port])
 * only: a webhook URL's path or query often carries a token.
 */
#include "multi_loop.h"
#include "net.h"
#include "sink.h"
#include "webhook.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define WEBHOOK_IN_FLIGHT_DEFAULT 8
#define WEBHOOK_IN_FLIGHT_MAX 256
/* Keys signed with at once: a rotation needs two; each one adds 48 bytes of header. */
#define WEBHOOK_SECRETS_MAX 8
/* Connecting may take this much of the request's timeout_s at most. */
#define WEBHOOK_CONNECT_TIMEOUT_MS 5000L
/* The endpoint's answer is read and dropped; past this bound the transfer is cut. */
#define WEBHOOK_RESPONSE_MAX (64L * 1024L)
/* Event ids are 32 hex digits; more, or other characters, cannot be one. */
#define WEBHOOK_ID_MAX 64
#define WEBHOOK_URL_MAX 2048
/* "https://" + a DNS name (253) + ":65535", with room to spare. */
#define WEBHOOK_ORIGIN_MAX 300
/* A Retry-After value: an HTTP-date is 29 characters. */
#define WEBHOOK_RETRY_AFTER_LEN 64
#define WEBHOOK_MSG_MAX 512

#define WEBHOOK_SECRET_PREFIX "whsec_"

typedef struct webhook_key {
    unsigned char bytes[WEBHOOK_KEY_MAX];
    size_t len;
} webhook_key_t;

/* One attempt at one event: what submit() copied from it. */
typedef struct webhook_delivery {
    struct webhook_delivery *next; /* in the queue */
    sink_ticket_t *ticket;
    char id[WEBHOOK_ID_MAX + 1];
    char *body;
    size_t body_len;
} webhook_delivery_t;

typedef struct webhook_sink webhook_sink_t;

/* A request slot: busy while delivery is set. */
typedef struct webhook_slot {
    CURL *easy; /* created on first use, kept for the next request */
    webhook_delivery_t *delivery;
    struct curl_slist *headers;
    long response_bytes;
    double retry_after_s; /* from the response, -1 when absent */
} webhook_slot_t;

struct webhook_sink {
    char *name;
    char *url;
    char origin[WEBHOOK_ORIGIN_MAX];
    webhook_key_t keys[WEBHOOK_SECRETS_MAX];
    size_t nkeys;
    long timeout_ms;
    CURLM *multi;     /* ml's when on the loop */
    multi_loop_t *ml; /* on the bridge's loop; NULL when flush() drives multi */
    const sink_loop_t *loop;
    webhook_slot_t *slots;
    size_t nslots; /* max_in_flight */
    size_t in_flight;
    webhook_delivery_t *queue_head, *queue_tail;
    size_t queued;
};

/* ---- signing and secrets (webhook.h) ---- */

/* The standard base64 alphabet (RFC 4648, section 4), without the padding. */
static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

webhook_secret_status_t webhook_decode_secret(const char *secret, unsigned char *key,
                                              size_t *keylen)
{
    const size_t plen = strlen(WEBHOOK_SECRET_PREFIX);
    /* The padded text of the longest key, and what EVP_DecodeBlock() writes for it. */
    char text[(WEBHOOK_KEY_MAX + 2) / 3 * 4 + 1];
    unsigned char raw[(WEBHOOK_KEY_MAX + 2) / 3 * 3];
    const char *b64;
    size_t n, pad = 0, len;
    int out;

    if (!secret || strncmp(secret, WEBHOOK_SECRET_PREFIX, plen) != 0)
        return WEBHOOK_SECRET_FORMAT;
    b64 = secret + plen;
    n = strlen(b64);
    while (n > 0 && pad < 2 && b64[n - 1] == '=') {
        n--;
        pad++;
    }
    /*
     * Checked here rather than left to OpenSSL, which trims blanks and line
     * ends around the text and would take '=' anywhere in its last group.
     * One digit left over carries 6 bits: never a whole byte.
     */
    if (n == 0 || strspn(b64, base64_alphabet) != n || n % 4 == 1 ||
        (pad > 0 && (n + pad) % 4 != 0))
        return WEBHOOK_SECRET_FORMAT;
    *keylen = n * 3 / 4;
    if (*keylen < WEBHOOK_KEY_MIN || *keylen > WEBHOOK_KEY_MAX)
        return WEBHOOK_SECRET_LENGTH;
    /* EVP_DecodeBlock() wants whole groups of four: pad what was left unpadded. */
    len = (n + 3) / 4 * 4;
    memcpy(text, b64, n);
    memset(text + n, '=', len - n);
    out = EVP_DecodeBlock(raw, (const unsigned char *)text, (int)len);
    /* It counts the bytes the padding stands for too: the key is the first *keylen. */
    if (out < 0 || (size_t)out != len / 4 * 3) {
        OPENSSL_cleanse(text, sizeof(text));
        OPENSSL_cleanse(raw, sizeof(raw));
        return WEBHOOK_SECRET_FORMAT;
    }
    memcpy(key, raw, *keylen);
    OPENSSL_cleanse(text, sizeof(text));
    OPENSSL_cleanse(raw, sizeof(raw));
    return WEBHOOK_SECRET_OK;
}

int webhook_sign(const unsigned char *key, size_t keylen, const char *msg_id, long long ts,
                 const char *body, size_t body_len, char *out, size_t outlen)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    unsigned char mac[32];
    char stamp[24];
    size_t maclen = 0;
    int stamplen = snprintf(stamp, sizeof(stamp), "%lld", ts);
    EVP_MAC *hmac;
    EVP_MAC_CTX *mctx = NULL;
    int ok;

    if (outlen < WEBHOOK_SIGNATURE_SIZE || stamplen < 0)
        return -1;
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    /* The signed content is "<msg_id>.<timestamp>.<body>", fed in pieces. */
    ok = hmac && (mctx = EVP_MAC_CTX_new(hmac)) && EVP_MAC_init(mctx, key, keylen, params) &&
         EVP_MAC_update(mctx, (const unsigned char *)msg_id, strlen(msg_id)) &&
         EVP_MAC_update(mctx, (const unsigned char *)".", 1) &&
         EVP_MAC_update(mctx, (const unsigned char *)stamp, (size_t)stamplen) &&
         EVP_MAC_update(mctx, (const unsigned char *)".", 1) &&
         (body_len == 0 || EVP_MAC_update(mctx, (const unsigned char *)body, body_len)) &&
         EVP_MAC_final(mctx, mac, &maclen, sizeof(mac)) && maclen == sizeof(mac);
    EVP_MAC_CTX_free(mctx);
    EVP_MAC_free(hmac);
    if (!ok)
        return -1;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)sizeof(mac)); /* 44 digits and a NUL */
    return 0;
}

/* ---- configuration ---- */

/*
 * Checks url (absolute http or https, a host, no userinfo) and writes its
 * origin. 0, or -1 with the reason in *why. The URL itself never goes into a
 * message: its path or query may hold a token.
 */
static int parse_url(const char *url, char *origin, size_t size, const char **why)
{
    CURLU *u = NULL;

    if (strlen(url) > WEBHOOK_URL_MAX) {
        *why = "too long (at most 2048 characters)";
        return -1;
    }
    switch (net_url_parse(url, NET_URL_NO_USERINFO, &u)) {
    case NET_URL_OK:
        break;
    case NET_URL_MALFORMED:
    case NET_URL_SCHEME:
        *why = "expected an absolute http:// or https:// URL";
        return -1;
    case NET_URL_USERINFO:
        *why = "must not carry credentials (user:password@): the signature authenticates "
               "the sender, and credentials in a URL end up in logs";
        return -1;
    case NET_URL_NO_HOST:
        *why = "expected a URL with a host";
        return -1;
    }
    /* The origin shows the port only when one was configured. */
    int rc = net_url_origin(u, origin, size);
    curl_url_cleanup(u);
    if (rc != 0)
        *why = "host too long";
    return rc;
}

static void check_url(const cJSON *value, const char *path, sink_errors_t *errs)
{
    char origin[WEBHOOK_ORIGIN_MAX];
    const char *why;

    if (parse_url(value->valuestring, origin, sizeof(origin), &why) != 0)
        sink_errors_add(errs, path, "%s", why);
}

/* Decodes one whsec_ secret into key, or reports why not (never showing it). 0 or -1. */
static int decode_secret(const char *secret, const char *path, webhook_key_t *key,
                         sink_errors_t *errs)
{
    switch (webhook_decode_secret(secret, key->bytes, &key->len)) {
    case WEBHOOK_SECRET_OK:
        return 0;
    case WEBHOOK_SECRET_FORMAT:
        sink_errors_add(errs, path,
                        "expected a whsec_ secret: \"whsec_\" followed by the base64 of the "
                        "key (the value is not shown)");
        return -1;
    case WEBHOOK_SECRET_LENGTH:
        sink_errors_add(errs, path,
                        "the whsec_ secret decodes to %zu bytes; Standard Webhooks asks for %d "
                        "to %d (the value is not shown)",
                        key->len, WEBHOOK_KEY_MIN, WEBHOOK_KEY_MAX);
        return -1;
    }
    return -1;
}

static void check_secret(const cJSON *value, const char *path, sink_errors_t *errs)
{
    webhook_key_t key;

    decode_secret(value->valuestring, path, &key, errs);
    OPENSSL_cleanse(&key, sizeof(key));
}

static void check_secrets(const cJSON *value, const char *path, sink_errors_t *errs)
{
    char epath[SINK_PATH_MAX];
    const cJSON *item;
    size_t i = 0;

    cJSON_ArrayForEach(item, value)
    {
        check_secret(item, sink_conf_path_index(epath, sizeof(epath), path, i++), errs);
    }
}

/* retry_schedule_s and timeout_s are the outbox's (sink_outbox_options). */
static const sink_option_t webhook_options[] = {
    {.key = "url",
     .type = SINK_OPT_STRING,
     .flags = SINK_OPT_REQUIRED | SINK_OPT_NO_CONTROL,
     .min = 1,
     .max = WEBHOOK_URL_MAX,
     .check = check_url,
     .desc = "the endpoint: an absolute http:// or https:// URL without user:password@"},
    {.key = "secret",
     .type = SINK_OPT_SECRET,
     .flags = SINK_OPT_REQUIRED,
     .group = "secret",
     .check = check_secret,
     .desc = "the whsec_ signing secret (Standard Webhooks; 24 to 64 bytes once decoded)"},
    {.key = "secrets",
     .type = SINK_OPT_ARRAY,
     .flags = SINK_OPT_REQUIRED,
     .min = 1,
     .max = WEBHOOK_SECRETS_MAX,
     .elem = SINK_OPT_SECRET,
     .group = "secret",
     .check = check_secrets,
     .desc = "whsec_ secrets, every one signing each request: for rotation"},
    {.key = "max_in_flight",
     .type = SINK_OPT_INT,
     .def = SINK_STR(WEBHOOK_IN_FLIGHT_DEFAULT),
     .min = 1,
     .max = WEBHOOK_IN_FLIGHT_MAX,
     .desc = "requests to the endpoint at once"},
    {0},
};

/* ---- requests ---- */

/* Event ids go into a header and into the signed "<id>.<ts>.<body>": no '.', no CR/LF. */
static bool valid_id(const char *id)
{
    size_t n = 0;

    for (const char *p = id; p && *p; p++, n++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    }
    return n > 0 && n <= WEBHOOK_ID_MAX;
}

static void delivery_free(webhook_delivery_t *d)
{
    if (!d)
        return;
    free(d->body);
    free(d);
}

/* A copy of what one attempt needs from ev; NULL when out of memory. */
static webhook_delivery_t *delivery_new(const sink_event_t *ev, sink_ticket_t *ticket)
{
    webhook_delivery_t *d = calloc(1, sizeof(*d));

    if (!d || !(d->body = malloc(ev->json_len ? ev->json_len : 1))) {
        free(d);
        return NULL;
    }
    if (ev->json_len)
        memcpy(d->body, ev->json, ev->json_len);
    d->body_len = ev->json_len;
    snprintf(d->id, sizeof(d->id), "%s", ev->id);
    d->ticket = ticket;
    return d;
}

/* libcurl, inside curl_multi_perform() (main loop thread): counts and drops the body. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *opaque)
{
    webhook_slot_t *slot = opaque;
    size_t n = size * nmemb;

    (void)data;
    slot->response_bytes += (long)n;
    return slot->response_bytes > WEBHOOK_RESPONSE_MAX ? 0 : n; /* 0 aborts the transfer */
}

/* libcurl, inside curl_multi_perform() (main loop thread): picks up Retry-After. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *opaque)
{
    static const char name[] = "retry-after:";
    const size_t nlen = sizeof(name) - 1;
    webhook_slot_t *slot = opaque;
    size_t n = size * nmemb, vlen;
    char value[WEBHOOK_RETRY_AFTER_LEN];

    /* A status line starts a new response (after a 1xx): forget the last one's. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        slot->retry_after_s = -1;
        return n;
    }
    if (n <= nlen || strncasecmp(data, name, nlen) != 0 || n - nlen >= sizeof(value))
        return n;
    vlen = n - nlen;
    memcpy(value, data + nlen, vlen);
    while (vlen > 0 && (value[vlen - 1] == '\r' || value[vlen - 1] == '\n' ||
                        value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
        vlen--;
    value[vlen] = '\0';
    net_retry_after(value, time(NULL), &slot->retry_after_s); /* invalid: stays absent */
    return n;
}

/* An easy handle with everything but the request's headers and body; NULL on failure. */
static CURL *easy_new(const webhook_sink_t *ctx, webhook_slot_t *slot)
{
    net_easy_options_t eo = {.timeout_ms = ctx->timeout_ms,
                             .connect_timeout_ms = ctx->timeout_ms < WEBHOOK_CONNECT_TIMEOUT_MS
                                                       ? ctx->timeout_ms
                                                       : WEBHOOK_CONNECT_TIMEOUT_MS,
                             .max_response = WEBHOOK_RESPONSE_MAX};
    CURL *h = net_easy_new(&eo);

    if (!h)
        return NULL;
    if (curl_easy_setopt(h, CURLOPT_URL, ctx->url) != CURLE_OK) {
        curl_easy_cleanup(h);
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, slot);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, slot);
    curl_easy_setopt(h, CURLOPT_PRIVATE, slot);
    return h;
}

/* "v1,<sig>" per key, space-separated, into out. 0, or -1 when signing failed. */
static int signature_list(const webhook_sink_t *ctx, const webhook_delivery_t *d, long long ts,
                          char *out, size_t size)
{
    size_t o = 0;

    for (size_t i = 0; i < ctx->nkeys; i++) {
        if (i > 0 && o + 1 < size)
            out[o++] = ' ';
        if (webhook_sign(ctx->keys[i].bytes, ctx->keys[i].len, d->id, ts, d->body, d->body_len,
                         out + o, size - o) != 0)
            return -1;
        o += strlen(out + o);
    }
    return 0;
}

/* The request headers of one attempt; NULL when out of memory or signing failed. */
static struct curl_slist *request_headers(const webhook_sink_t *ctx, const webhook_delivery_t *d,
                                          long long ts)
{
    char sigs[WEBHOOK_SECRETS_MAX * WEBHOOK_SIGNATURE_SIZE];
    char id[sizeof("webhook-id: ") + WEBHOOK_ID_MAX], stamp[64], sig[sizeof(sigs) + 32];
    /* CloudEvents HTTP binding, structured mode (§3.2): this media type is
     * what tells a CloudEvents SDK that the body is the whole event. */
    const char *lines[] = {"content-type: application/cloudevents+json",
                           /* No 100-continue round trip: endpoints answer the POST itself. */
                           "Expect:", id, stamp, sig};
    struct curl_slist *list = NULL, *next;

    if (signature_list(ctx, d, ts, sigs, sizeof(sigs)) != 0)
        return NULL;
    snprintf(id, sizeof(id), "webhook-id: %s", d->id);
    snprintf(stamp, sizeof(stamp), "webhook-timestamp: %lld", ts);
    snprintf(sig, sizeof(sig), "webhook-signature: %s", sigs);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        if (!(next = curl_slist_append(list, lines[i]))) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = next;
    }
    return list;
}

static webhook_slot_t *free_slot(webhook_sink_t *ctx)
{
    if (ctx->in_flight == ctx->nslots)
        return NULL;
    for (size_t i = 0; i < ctx->nslots; i++) {
        if (!ctx->slots[i].delivery)
            return &ctx->slots[i];
    }
    return NULL;
}

/*
 * Starts the attempt d in the free slot; the slot owns d from then on.
 * 0, or -1 with err (d is then still the caller's). The timestamp is taken
 * now rather than at submit(): receivers reject stale ones.
 */
static int slot_start(webhook_sink_t *ctx, webhook_slot_t *slot, webhook_delivery_t *d, char *err,
                      size_t errlen)
{
    long long ts = (long long)time(NULL);
    struct curl_slist *headers;
    CURLMcode mc;

    if (!slot->easy && !(slot->easy = easy_new(ctx, slot))) {
        snprintf(err, errlen, "cannot create a libcurl handle");
        return -1;
    }
    if (!(headers = request_headers(ctx, d, ts))) {
        snprintf(err, errlen, "cannot sign the request or build its headers");
        return -1;
    }
    curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->body_len);
    slot->response_bytes = 0;
    slot->retry_after_s = -1;
    if ((mc = curl_multi_add_handle(ctx->multi, slot->easy)) != CURLM_OK) {
        curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, NULL);
        curl_slist_free_all(headers);
        snprintf(err, errlen, "%s", curl_multi_strerror(mc));
        return -1;
    }
    slot->headers = headers;
    slot->delivery = d;
    ctx->in_flight++;
    sink_log(SINK_LOG_DEBUG, ctx->name, "event %s: POST %zu bytes to %s", d->id, d->body_len,
             ctx->origin);
    return 0;
}

/* Detaches the slot's transfer and frees its request; the slot is free again. */
static void slot_clear(webhook_sink_t *ctx, webhook_slot_t *slot)
{
    curl_multi_remove_handle(ctx->multi, slot->easy);
    curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(slot->headers);
    slot->headers = NULL;
    delivery_free(slot->delivery);
    slot->delivery = NULL;
    ctx->in_flight--;
}

static void enqueue(webhook_sink_t *ctx, webhook_delivery_t *d)
{
    d->next = NULL;
    if (ctx->queue_tail)
        ctx->queue_tail->next = d;
    else
        ctx->queue_head = d;
    ctx->queue_tail = d;
    ctx->queued++;
}

static webhook_delivery_t *dequeue(webhook_sink_t *ctx)
{
    webhook_delivery_t *d = ctx->queue_head;

    if (!d)
        return NULL;
    ctx->queue_head = d->next;
    if (!ctx->queue_head)
        ctx->queue_tail = NULL;
    ctx->queued--;
    return d;
}

/*
 * Moves queued attempts into free slots. One that cannot start is resolved
 * RETRY at once; its ticket's done() may call submit() again, which is safe:
 * the queue and the slots are consistent at that point.
 */
static void start_queued(webhook_sink_t *ctx)
{
    webhook_slot_t *slot;

    while (ctx->queue_head && (slot = free_slot(ctx))) {
        webhook_delivery_t *d = dequeue(ctx);
        sink_ticket_t *ticket = d->ticket;
        char err[WEBHOOK_MSG_MAX];

        if (slot_start(ctx, slot, d, err, sizeof(err)) == 0)
            continue;
        sink_log(SINK_LOG_WARN, ctx->name, "event %s: cannot start the request to %s: %s", d->id,
                 ctx->origin, err);
        delivery_free(d);
        sink_ticket_done(ticket, SINK_ERR_RETRY, err);
    }
}

/*
 * What an attempt came to. Once a status line arrived, the status decides,
 * whatever happened to the body afterwards (too large, cut short): the
 * endpoint has already said whether it took the event.
 */
static sink_result_t classify(const webhook_sink_t *ctx, CURLcode cc, long status, char *msg,
                              size_t size)
{
    if (status >= 200 && status <= 299) {
        snprintf(msg, size, "HTTP %ld from %s", status, ctx->origin);
        return SINK_OK;
    }
    if (status == 410) {
        snprintf(msg, size, "HTTP 410 Gone from %s: the endpoint asks to be disabled", ctx->origin);
        return SINK_ERR_GONE;
    }
    if (status >= 300 && status <= 399)
        snprintf(msg, size,
                 "HTTP %ld from %s: redirects are refused (set url to the final location)", status,
                 ctx->origin);
    else if (status > 0)
        snprintf(msg, size, "HTTP %ld from %s", status, ctx->origin);
    else if (cc == CURLE_OPERATION_TIMEDOUT)
        snprintf(msg, size, "no response from %s within %ld s", ctx->origin,
                 ctx->timeout_ms / 1000);
    else
        /* curl_easy_strerror(), not CURLOPT_ERRORBUFFER: that one may quote the URL. */
        snprintf(msg, size, "%s (%s)", curl_easy_strerror(cc), ctx->origin);
    return SINK_ERR_RETRY;
}

/* Resolves the attempt of a slot whose transfer ended with cc, and frees the slot. */
static void finish(webhook_sink_t *ctx, webhook_slot_t *slot, CURLcode cc)
{
    sink_ticket_t *ticket = slot->delivery->ticket;
    double retry_after_s = slot->retry_after_s;
    char msg[WEBHOOK_MSG_MAX];
    long status = 0;
    sink_result_t result;

    curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &status);
    result = classify(ctx, cc, status, msg, sizeof(msg));
    if (result == SINK_OK)
        sink_log(SINK_LOG_DEBUG, ctx->name, "event %s: %s", slot->delivery->id, msg);
    else if (result == SINK_ERR_RETRY && retry_after_s >= 0)
        sink_log(SINK_LOG_WARN, ctx->name, "event %s: %s, Retry-After %.0f s", slot->delivery->id,
                 msg, retry_after_s);
    else
        sink_log(SINK_LOG_WARN, ctx->name, "event %s: %s", slot->delivery->id, msg);
    slot_clear(ctx, slot);
    /* Refill the slot before done(), so that capacity() is right if done() asks. */
    start_queued(ctx);
    if (result == SINK_ERR_RETRY && retry_after_s >= 0)
        ticket->retry_after_s = retry_after_s;
    sink_ticket_done(ticket, result, result == SINK_OK ? NULL : msg);
}

/* A transfer ended (multi_loop_collect(), main loop thread). */
static void on_transfer_done(void *opaque, CURL *easy, CURLcode cc)
{
    webhook_slot_t *slot = NULL;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&slot);
    finish(opaque, slot, cc);
}

/* Resolves every finished transfer; returns how many. */
static int collect(webhook_sink_t *ctx)
{
    return multi_loop_collect(ctx->multi, on_transfer_done, ctx);
}

static void perform(webhook_sink_t *ctx)
{
    int running;
    CURLMcode mc = curl_multi_perform(ctx->multi, &running);

    if (mc != CURLM_OK)
        sink_log(SINK_LOG_ERROR, ctx->name, "libcurl: %s", curl_multi_strerror(mc));
}

/* ---- the sink interface ---- */

static void webhook_exit(void *vctx)
{
    webhook_sink_t *ctx = vctx;
    webhook_delivery_t *d;

    if (!ctx)
        return;
    /* The tickets stay unresolved on purpose (sink.h, sink_ticket_t): their
     * outbox claims expire and the worker, which frees them, delivers those
     * events again. */
    if (ctx->in_flight + ctx->queued > 0)
        sink_log(SINK_LOG_WARN, ctx->name,
                 "%zu deliveries to %s abandoned at shutdown; the outbox delivers them again",
                 ctx->in_flight + ctx->queued, ctx->origin);
    for (size_t i = 0; ctx->slots && i < ctx->nslots; i++) {
        if (ctx->slots[i].delivery)
            slot_clear(ctx, &ctx->slots[i]);
        if (ctx->slots[i].easy)
            curl_easy_cleanup(ctx->slots[i].easy);
    }
    while ((d = dequeue(ctx)))
        delivery_free(d);
    if (ctx->ml)
        multi_loop_free(ctx->ml);
    else if (ctx->multi)
        curl_multi_cleanup(ctx->multi);
    OPENSSL_cleanse(ctx->keys, sizeof(ctx->keys));
    free(ctx->slots);
    free(ctx->url);
    free(ctx->name);
    free(ctx);
}

/* The keys of secret or secrets (validated already); 0, or -1 with err. */
static int load_keys(webhook_sink_t *ctx, const sink_config_t *cfg, char *err, size_t errlen)
{
    const sink_value_t *one = sink_config_get(cfg, "secret");
    const sink_value_t *list = sink_config_get(cfg, "secrets");
    const char *const *texts = one->set ? &one->s : list->strings;
    size_t n = one->set ? 1 : list->count;
    sink_errors_t errs = {0};

    for (ctx->nkeys = 0; ctx->nkeys < n && ctx->nkeys < WEBHOOK_SECRETS_MAX; ctx->nkeys++) {
        if (decode_secret(texts[ctx->nkeys], one->set ? "secret" : "secrets",
                          &ctx->keys[ctx->nkeys], &errs) != 0) {
            sink_errors_join(&errs, err, errlen);
            return -1;
        }
    }
    return ctx->nkeys > 0 ? 0 : -1;
}

static void *webhook_init(const sink_config_t *cfg, const sink_host_t *host, char *err,
                          size_t errlen)
{
    const char *url = sink_config_get(cfg, "url")->s, *why;
    webhook_sink_t *ctx = calloc(1, sizeof(*ctx));

    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (parse_url(url, ctx->origin, sizeof(ctx->origin), &why) != 0) {
        snprintf(err, errlen, "url: %s", why);
        goto fail;
    }
    if (load_keys(ctx, cfg, err, errlen) != 0)
        goto fail;
    ctx->name = strdup(host && host->name ? host->name : "webhook");
    ctx->url = strdup(url);
    ctx->nslots = (size_t)sink_config_get(cfg, "max_in_flight")->i;
    ctx->slots = calloc(ctx->nslots, sizeof(*ctx->slots));
    if (!ctx->name || !ctx->url || !ctx->slots) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* The outbox's attempt timeout bounds the request. */
    ctx->timeout_ms = (long)sink_config_get(cfg, "timeout_s")->i * 1000L;
    ctx->loop = host ? host->loop : NULL;
    if (ctx->loop) {
        if (!(ctx->ml = multi_loop_new(ctx->loop, on_transfer_done, ctx, err, errlen)))
            goto fail;
        ctx->multi = multi_loop_handle(ctx->ml);
    } else if (!(ctx->multi = curl_multi_init())) {
        snprintf(err, errlen, "cannot create a libcurl multi handle");
        goto fail;
    }
    /* Keep a connection per slot alive between attempts. */
    curl_multi_setopt(ctx->multi, CURLMOPT_MAXCONNECTS, (long)ctx->nslots);
    return ctx;

fail:
    webhook_exit(ctx);
    return NULL;
}

static sink_result_t webhook_submit(void *vctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    webhook_sink_t *ctx = vctx;
    webhook_slot_t *slot;
    webhook_delivery_t *d;
    char err[WEBHOOK_MSG_MAX];

    if (!valid_id(ev->id)) {
        sink_log(SINK_LOG_ERROR, ctx->name,
                 "an event id is not 1 to %d letters, digits, '_' or '-'; it cannot be a "
                 "webhook-id",
                 WEBHOOK_ID_MAX);
        return SINK_ERR_PERMANENT;
    }
    if (!(d = delivery_new(ev, ticket)))
        return SINK_ERR_RETRY; /* ticket untouched: the caller resolves it */
    /* The worker claims no more than capacity(); queueing covers a caller that does not. */
    if (ctx->queue_head || !(slot = free_slot(ctx))) {
        enqueue(ctx, d);
        return SINK_OK;
    }
    if (slot_start(ctx, slot, d, err, sizeof(err)) != 0) {
        sink_log(SINK_LOG_WARN, ctx->name, "event %s: cannot start the request to %s: %s", ev->id,
                 ctx->origin, err);
        delivery_free(d);
        return SINK_ERR_RETRY;
    }
    return SINK_OK;
}

/*
 * Drives the transfers: starts queued attempts, moves every transfer on, and
 * resolves the finished ones. Waits (up to timeout_ms) only when something is
 * in flight and nothing finished yet. On the loop, it runs the loop that
 * long instead (never called from inside a loop callback).
 */
static void serve(webhook_sink_t *ctx, int timeout_ms)
{
    start_queued(ctx);
    if (ctx->ml) {
        if (ctx->in_flight > 0)
            ctx->loop->run(ctx->loop->loop, timeout_ms);
        return;
    }
    if (ctx->in_flight == 0)
        return;
    perform(ctx);
    if (collect(ctx) > 0 || timeout_ms <= 0)
        return;
    curl_multi_poll(ctx->multi, NULL, 0, timeout_ms, NULL);
    perform(ctx);
    collect(ctx);
}

static size_t webhook_flush(void *vctx, int64_t deadline_ms)
{
    webhook_sink_t *ctx = vctx;

    do {
        serve(ctx, sink_ms_left(deadline_ms));
    } while (ctx->in_flight + ctx->queued > 0 && sink_now_ms() < deadline_ms);
    return ctx->in_flight + ctx->queued;
}

/* How many more attempts would start now: free slots not already promised to the queue. */
static size_t webhook_capacity(void *vctx)
{
    const webhook_sink_t *ctx = vctx;
    size_t used = ctx->in_flight + ctx->queued;

    return used >= ctx->nslots ? 0 : ctx->nslots - used;
}

/*
 * A connection to the origin and, for https, the TLS handshake with the
 * certificate checked, then nothing: see the top of the file for why no
 * request. Bounded by the attempt timeout and the deadline, whichever is
 * first. On the caller's thread (a blocking transfer of its own).
 */
static int webhook_probe(const sink_config_t *cfg, const sink_host_t *host, int64_t deadline_ms,
                         char *msg, size_t msglen)
{
    char origin[WEBHOOK_ORIGIN_MAX];
    const char *why;
    long timeout_ms = (long)sink_config_get(cfg, "timeout_s")->i * 1000L;
    long left = sink_ms_left(deadline_ms);
    curl_off_t connect_us = 0, tls_us = 0;
    CURLcode cc;
    CURL *h;

    (void)host;
    if (parse_url(sink_config_get(cfg, "url")->s, origin, sizeof(origin), &why) != 0) {
        snprintf(msg, msglen, "url: %s", why);
        return -1;
    }
    if (left < timeout_ms)
        timeout_ms = left > 0 ? left : 1;
    net_easy_options_t eo = {.timeout_ms = timeout_ms,
                             .connect_timeout_ms = timeout_ms,
                             .max_response = WEBHOOK_RESPONSE_MAX};
    if (!(h = net_easy_new(&eo)) || curl_easy_setopt(h, CURLOPT_URL, origin) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L) != CURLE_OK) {
        curl_easy_cleanup(h);
        snprintf(msg, msglen, "cannot set up a libcurl handle");
        return -1;
    }
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
    curl_easy_getinfo(h, CURLINFO_APPCONNECT_TIME_T, &tls_us);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) {
        /* curl_easy_strerror(), not the error buffer: that one may quote the URL. */
        snprintf(msg, msglen, "%s: %s", origin,
                 cc == CURLE_OPERATION_TIMEDOUT ? "no connection within the timeout"
                                                : curl_easy_strerror(cc));
        return -1;
    }
    if (tls_us > 0)
        snprintf(msg, msglen, "%s: connected and TLS handshake done in %lld ms (no request sent)",
                 origin, (long long)(tls_us / 1000));
    else
        snprintf(msg, msglen, "%s: connected in %lld ms (no request sent)", origin,
                 (long long)(connect_us / 1000));
    return 0;
}

/* No .ready: an HTTP endpoint has no standing connection whose state could gate readiness. */
const sink_type_t sink_webhook_type = {
    .name = "webhook",
    .flags = SINK_F_OUTBOX | SINK_F_LOOP,
    .desc = "a signed POST per event (Standard Webhooks, CloudEvents structured mode), retried "
            "from the outbox",
    .options = webhook_options,
    .init = webhook_init,
    .submit = webhook_submit,
    .flush = webhook_flush,
    .exit = webhook_exit,
    .capacity = webhook_capacity,
    .probe = webhook_probe,
};
