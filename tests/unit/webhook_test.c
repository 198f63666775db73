/*
 * Tests of sinks/webhook: the signature against the Standard Webhooks
 * spec's published vector, whsec_ decoding (tables), the
 * configuration checks (table), and deliveries to an in-process
 * libmicrohttpd server on a free loopback port. The server checks every
 * request with its own HMAC code and raw key bytes, not the sink's, so that
 * a mistake in the sink's decoding or signing cannot verify itself.
 */
#include "loop.h"
#include "sink.h"
#include "webhook.h"
#include "test_ticket.h"

#include <arpa/inet.h>
#include <check.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* The Standard Webhooks test vector (spec repository, libraries' sign tests). */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_B64 "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330LL
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIGNATURE "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* The vector's key, decoded by hand (base64 -d | xxd). */
static const unsigned char vec_key[24] = {0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a,
                                          0xab, 0x4f, 0x08, 0xd4, 0x3c, 0x3f, 0x08, 0x2c,
                                          0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0};
/* A second key for rotation: the bytes 0..31. */
#define ROT_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define ROT_SECRET "whsec_" ROT_B64

/* Safety net for anything that waits on the network (not a timing assertion). */
#define WAIT_BOUND_MS 15000

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static cJSON *parse_json(const char *text)
{
    cJSON *j = cJSON_Parse(text);

    ck_assert_msg(j != NULL, "bad test JSON: %s", text);
    return j;
}

/* ---- signing, secrets ---- */

START_TEST(test_spec_vector)
{
    unsigned char key[WEBHOOK_KEY_MAX];
    char sig[WEBHOOK_SIGNATURE_SIZE], small[WEBHOOK_SIGNATURE_SIZE - 1];
    size_t keylen = 0;

    ck_assert_int_eq(webhook_decode_secret(VEC_SECRET, key, &keylen), WEBHOOK_SECRET_OK);
    ck_assert_uint_eq(keylen, sizeof(vec_key));
    ck_assert_mem_eq(key, vec_key, sizeof(vec_key));
    ck_assert_int_eq(
        webhook_sign(key, keylen, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), sig, sizeof(sig)), 0);
    ck_assert_str_eq(sig, VEC_SIGNATURE);
    /* Each part is signed: another timestamp or body gives another signature. */
    webhook_sign(key, keylen, VEC_ID, VEC_TS + 1, VEC_BODY, strlen(VEC_BODY), sig, sizeof(sig));
    ck_assert_str_ne(sig, VEC_SIGNATURE);
    webhook_sign(key, keylen, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY) - 1, sig, sizeof(sig));
    ck_assert_str_ne(sig, VEC_SIGNATURE);
    ck_assert_int_eq(
        webhook_sign(key, keylen, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), small, sizeof(small)),
        -1);
}
END_TEST

static const struct secret_case {
    const char *secret;
    webhook_secret_status_t status;
    size_t keylen; /* for OK and LENGTH */
} secret_cases[] = {
    {VEC_SECRET, WEBHOOK_SECRET_OK, 24},
    {ROT_SECRET, WEBHOOK_SECRET_OK, 32},
    /* 25 and 26 bytes, padded and not: the reference libraries take both */
    {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGA==", WEBHOOK_SECRET_OK, 25},
    {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGA", WEBHOOK_SECRET_OK, 25},
    {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk=", WEBHOOK_SECRET_OK, 26},
    {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk", WEBHOOK_SECRET_OK, 26},
    {VEC_B64, WEBHOOK_SECRET_FORMAT, 0},
    {"WHSEC_" VEC_B64, WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_", WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_====", WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaL", WEBHOOK_SECRET_FORMAT, 0}, /* 29 digits: 6 bits over */
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", WEBHOOK_SECRET_FORMAT, 0}, /* bad padding */
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w", WEBHOOK_SECRET_FORMAT, 0},  /* URL-safe alphabet */
    {"whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw", WEBHOOK_SECRET_FORMAT, 0},
    /* blanks and line ends around it are no base64 either (OpenSSL would trim them) */
    {"whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ", WEBHOOK_SECRET_FORMAT, 0},
    /* padding only at the end, and at most two */
    {"whsec_AAECAwQFBgcICQoLDA0O=w==", WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_AAECAwQFBgcICQoLDA0ODxA=A", WEBHOOK_SECRET_FORMAT, 0},
    {"whsec_AAECAwQFBgcICQoLDA0ODw===", WEBHOOK_SECRET_FORMAT, 0},
    /* 18 bytes: no padding needed, and none taken (then too short) */
    {"whsec_AAECAwQFBgcICQoLDA0ODxAR", WEBHOOK_SECRET_LENGTH, 18},
    {"whsec_QUJDRA==", WEBHOOK_SECRET_LENGTH, 4},
    {"whsec_AAECAwQFBgcICQoLDA0O", WEBHOOK_SECRET_LENGTH, 15},
    /* well formed, but below Standard Webhooks' 24 bytes */
    {"whsec_AAECAwQFBgcICQoLDA0ODw==", WEBHOOK_SECRET_LENGTH, 16},
    {"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRY=", WEBHOOK_SECRET_LENGTH, 23},
};

START_TEST(test_decode_secret)
{
    const struct secret_case *c = &secret_cases[_i];
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t keylen = 0;

    ck_assert_int_eq(webhook_decode_secret(c->secret, key, &keylen), c->status);
    if (c->status != WEBHOOK_SECRET_FORMAT)
        ck_assert_uint_eq(keylen, c->keylen);
    if (strcmp(c->secret, ROT_SECRET) == 0) {
        for (size_t i = 0; i < keylen; i++)
            ck_assert_uint_eq(key[i], i);
    }
}
END_TEST

/* The length bounds, with keys of n bytes 0, 1, 2 ... encoded by OpenSSL. */
START_TEST(test_decode_secret_bounds)
{
    static const struct {
        size_t n;
        webhook_secret_status_t status;
    } cases[] = {{16, WEBHOOK_SECRET_LENGTH}, {23, WEBHOOK_SECRET_LENGTH},
                 {24, WEBHOOK_SECRET_OK},     {64, WEBHOOK_SECRET_OK},
                 {65, WEBHOOK_SECRET_LENGTH}, {128, WEBHOOK_SECRET_LENGTH},
                 {129, WEBHOOK_SECRET_LENGTH}};

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        unsigned char raw[200], key[WEBHOOK_KEY_MAX];
        char secret[300] = "whsec_";
        size_t keylen = 0;

        for (size_t i = 0; i < cases[c].n; i++)
            raw[i] = (unsigned char)(i * 7);
        EVP_EncodeBlock((unsigned char *)secret + 6, raw, (int)cases[c].n);
        ck_assert_int_eq(webhook_decode_secret(secret, key, &keylen), cases[c].status);
        ck_assert_uint_eq(keylen, cases[c].n);
        if (cases[c].status == WEBHOOK_SECRET_OK)
            ck_assert_mem_eq(key, raw, cases[c].n);
    }
}
END_TEST

/* ---- configuration ---- */

#define URL_OK "\"url\":\"https://hooks.example.com/in?token=tok3n\""
#define SECRET_OK "\"secret\":\"" VEC_SECRET "\""
/* Keys of 16, 64 and 65 bytes (0, 1, 2 ...): below, at and above the bounds. */
#define KEY16_B64 "AAECAwQFBgcICQoLDA0ODw=="
#define KEY16_SECRET "whsec_" KEY16_B64
#define KEY64_SECRET                                                                               \
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"   \
    "Pw=="
#define KEY65_B64                                                                                  \
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A="
#define KEY65_SECRET "whsec_" KEY65_B64

static const struct conf_case {
    const char *json;
    int rc;
    const char *err; /* a message that must be among the collected ones */
} conf_cases[] = {
    {"{\"name\":\"h\",\"type\":\"webhook\",\"events\":[\"started\"],\"sources\":[\"a\"]," URL_OK
     "," SECRET_OK "}",
     0, NULL},
    {"{" URL_OK ",\"secrets\":[\"" VEC_SECRET "\",\"" ROT_SECRET "\"],"
     "\"retry_schedule_s\":[0,1.5,60],\"timeout_s\":60,\"max_in_flight\":256}",
     0, NULL},
    {"{\"url\":\"http://[::1]:8080/x\"," SECRET_OK ",\"timeout_s\":1,\"max_in_flight\":1}", 0,
     NULL},
    {"[]", -1, "sinks[3]: expected an object"},
    {"{" SECRET_OK "}", -1, "sinks[3].url: required, expected a non-empty string"},
    {"{\"url\":5," SECRET_OK "}", -1, "sinks[3].url: expected a non-empty string"},
    {"{\"url\":\"ftp://example.com/x\"," SECRET_OK "}", -1,
     "sinks[3].url: expected an absolute http:// or https:// URL"},
    {"{\"url\":\"/relative/path\"," SECRET_OK "}", -1,
     "sinks[3].url: expected an absolute http:// or https:// URL"},
    {"{\"url\":\"https://bob:pa55w0rd@example.com/x\"," SECRET_OK "}", -1,
     "sinks[3].url: must not carry credentials"},
    {"{\"url\":\"https://example.com/x\\r\\nX-Injected: yes\"," SECRET_OK "}", -1,
     "sinks[3].url: must not contain control characters"},
    {"{\"url\":\"https://example.com/x\\t\"," SECRET_OK "}", -1,
     "sinks[3].url: must not contain control characters"},
    {"{\"retry_schedule_s\":[1e999]," URL_OK "," SECRET_OK "}", -1,
     "sinks[3].retry_schedule_s[0]: expected a number between 0 and 604800"},
    {"{" URL_OK "," SECRET_OK ",\"timeout_s\":1e49}", -1,
     "sinks[3].timeout_s: expected an integer between 1 and 60"},
    {"{" URL_OK "}", -1, "sinks[3].secret: required (or one of: secret, secrets)"},
    {"{" URL_OK "," SECRET_OK ",\"secrets\":[\"" ROT_SECRET "\"]}", -1,
     "sinks[3]: set one of secret, secrets, not several"},
    {"{" URL_OK ",\"secret\":\"" VEC_B64 "\"}", -1,
     "sinks[3].secret: expected a whsec_ secret: \"whsec_\" followed by the base64 of the key"},
    {"{" URL_OK ",\"secret\":\"whsec_QUJDRA==\"}", -1,
     "sinks[3].secret: the whsec_ secret decodes to 4 bytes; Standard Webhooks asks for 24 to "
     "64"},
    {"{" URL_OK ",\"secret\":\"" KEY16_SECRET "\"}", -1,
     "sinks[3].secret: the whsec_ secret decodes to 16 bytes; Standard Webhooks asks for 24 to "
     "64"},
    {"{" URL_OK ",\"secrets\":[\"" VEC_SECRET "\",\"" KEY65_SECRET "\"]}", -1,
     "sinks[3].secrets[1]: the whsec_ secret decodes to 65 bytes; Standard Webhooks asks for 24 "
     "to 64"},
    {"{" URL_OK ",\"secrets\":[\"" KEY64_SECRET "\",\"" VEC_SECRET "\"]}", 0, NULL},
    {"{" URL_OK ",\"secret\":42}", -1, "sinks[3].secret: expected a non-empty string"},
    {"{" URL_OK ",\"secret\":\"\"}", -1, "sinks[3].secret: expected a non-empty string"},
    {"{" URL_OK ",\"secrets\":[]}", -1, "sinks[3].secrets: expected a list of 1 to 8 secrets"},
    {"{" URL_OK ",\"secrets\":\"" VEC_SECRET "\"}", -1,
     "sinks[3].secrets: expected a list of 1 to 8 secrets"},
    {"{" URL_OK ",\"secrets\":[\"" VEC_SECRET "\",\"" VEC_B64 "\"]}", -1,
     "sinks[3].secrets[1]: expected a whsec_ secret: "},
    {"{" URL_OK ",\"secrets\":[\"" ROT_SECRET "\",\"" ROT_SECRET "\",\"" ROT_SECRET
     "\",\"" ROT_SECRET "\",\"" ROT_SECRET "\",\"" ROT_SECRET "\",\"" ROT_SECRET "\",\"" ROT_SECRET
     "\",\"" ROT_SECRET "\"]}",
     -1, "sinks[3].secrets: expected a list of 1 to 8 secrets"},
    {"{" URL_OK "," SECRET_OK ",\"retry_schedule_s\":[]}", -1,
     "sinks[3].retry_schedule_s: expected a list of 1 to 32 numbers"},
    {"{" URL_OK "," SECRET_OK ",\"retry_schedule_s\":[1,-1]}", -1,
     "sinks[3].retry_schedule_s[1]: expected a number between 0 and 604800"},
    {"{" URL_OK "," SECRET_OK ",\"retry_schedule_s\":5}", -1,
     "sinks[3].retry_schedule_s: expected a list"},
    {"{" URL_OK "," SECRET_OK ",\"timeout_s\":0}", -1,
     "sinks[3].timeout_s: expected an integer between 1 and 60, got 0"},
    {"{" URL_OK "," SECRET_OK ",\"timeout_s\":61}", -1,
     "sinks[3].timeout_s: expected an integer between 1 and 60, got 61"},
    {"{" URL_OK "," SECRET_OK ",\"max_in_flight\":0}", -1,
     "sinks[3].max_in_flight: expected an integer between 1 and 256, got 0"},
    {"{" URL_OK "," SECRET_OK ",\"max_in_flight\":\"8\"}", -1,
     "sinks[3].max_in_flight: expected an integer between 1 and 256"},
    {"{" URL_OK "," SECRET_OK ",\"secert\":1}", -1,
     "sinks[3].secert: unknown key (did you mean \"secret\"?)"},
};

/* Nothing secret in the table may show up in a message. */
static const char *const secret_parts[] = {VEC_B64,  ROT_B64,    KEY16_B64, KEY65_B64,
                                           "QUJDRA", "pa55w0rd", "tok3n",   NULL};

static void assert_no_secret(const char *text)
{
    for (size_t i = 0; secret_parts[i]; i++)
        ck_assert_msg(!strstr(text, secret_parts[i]), "secret part %s shown in: %s",
                      secret_parts[i], text);
}

START_TEST(test_validate)
{
    const struct conf_case *c = &conf_cases[_i];
    cJSON *j = parse_json(c->json);
    sink_errors_t errs = {0};
    bool found = c->err == NULL;
    char err[2048];
    void *ctx;

    ck_assert_int_eq(sink_validate(&sink_webhook_type, j, "sinks[3]", &errs), c->rc);
    for (size_t i = 0; i < errs.count && i < SINK_ERRORS_MAX; i++) {
        assert_no_secret(errs.msg[i]);
        if (c->err && strncmp(errs.msg[i], c->err, strlen(c->err)) == 0)
            found = true;
    }
    ck_assert_msg(found, "case %d: no message starting with \"%s\" (got %zu, first: %s)", _i,
                  c->err, errs.count, errs.count ? errs.msg[0] : "-");
    if (c->rc == 0)
        ck_assert_uint_eq(errs.count, 0);

    /* init() agrees, and says why without the path prefix or a secret. */
    err[0] = '\0';
    ctx = sink_init(&sink_webhook_type, j, &(sink_host_t){.name = "hook"}, err, sizeof(err));
    ck_assert((ctx != NULL) == (c->rc == 0));
    if (!ctx) {
        ck_assert_msg(strlen(err) > 0, "init() failed without a reason");
        assert_no_secret(err);
    }
    sink_webhook_type.exit(ctx);
    cJSON_Delete(j);
}
END_TEST

/* ---- the loopback server ---- */

#define HOOK_PATH "/hook"
#define REQUEST_BODY_MAX (1024 * 1024)

typedef struct server_key {
    const unsigned char *bytes;
    size_t len;
} server_key_t;

static struct server {
    struct MHD_Daemon *daemon;
    unsigned port;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* the script */
    unsigned status;
    const char *retry_after, *location;
    size_t body_len; /* response body bytes ('x'), 0: "ok" */
    bool hold;       /* answer only when released */
    int release;     /* held requests allowed to answer */
    server_key_t keys[2];
    size_t nkeys;
    /* what arrived */
    int hook_hits, other_hits, bad, connections, nsigs;
    int current, max_current; /* requests received and not answered */
    int answered;
    char why[512]; /* the first failed check */
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

typedef struct request {
    char *body;
    size_t len;
} request_t;

/* Records the first failed check (server threads). */
static void server_fail(const char *why)
{
    pthread_mutex_lock(&srv.lock);
    if (srv.bad++ == 0)
        snprintf(srv.why, sizeof(srv.why), "%s", why);
    pthread_mutex_unlock(&srv.lock);
}

/* "v1,<base64 HMAC>" with the test's own OpenSSL calls. */
static void expected_signature(const server_key_t *k, const char *id, const char *ts,
                               const request_t *r, char *out, size_t size)
{
    char *msg = malloc(strlen(id) + strlen(ts) + r->len + 3);
    unsigned char mac[32];
    unsigned maclen = 0;
    size_t n = (size_t)sprintf(msg, "%s.%s.", id, ts);
    unsigned char b64[64];

    memcpy(msg + n, r->body ? r->body : "", r->len);
    HMAC(EVP_sha256(), k->bytes, (int)k->len, (unsigned char *)msg, n + r->len, mac, &maclen);
    EVP_EncodeBlock(b64, mac, (int)maclen);
    snprintf(out, size, "v1,%s", (char *)b64);
    free(msg);
}

/*
 * What is wrong with one delivery's method, headers or signatures, in buf;
 * NULL when nothing is. Server threads.
 */
static const char *delivery_problem(struct MHD_Connection *c, const char *method,
                                    const request_t *r, char *buf, size_t size)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "content-type");
    const char *ua = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "user-agent");
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
    const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
    const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
    char want[1024] = "", one[128], needle[128];

    if (strcmp(method, "POST") != 0)
        snprintf(buf, size, "method %s", method);
    else if (!ct || strcmp(ct, "application/cloudevents+json") != 0)
        /* CloudEvents HTTP binding, structured mode (HTTP binding §3.2) */
        snprintf(buf, size, "content-type %s", ct ? ct : "(none)");
    else if (!ua || strcmp(ua, "session-bridge/" SB_VERSION) != 0)
        snprintf(buf, size, "user-agent %s", ua ? ua : "(none)");
    else if (!id || !ts || !sig)
        snprintf(buf, size, "a webhook-* header is missing");
    else if (snprintf(needle, sizeof(needle), "\"id\":\"%s\"", id) < 0 || !r->body ||
             !strstr(r->body, needle))
        /* The test's bodies carry their event id: webhook-id must be that one. */
        snprintf(buf, size, "webhook-id %s is not the body's", id);
    else if (llabs(strtoll(ts, NULL, 10) - (long long)time(NULL)) > 300)
        snprintf(buf, size, "webhook-timestamp %s is not now", ts);
    else
        buf[0] = '\0';
    if (buf[0])
        return buf;
    for (size_t i = 0; i < srv.nkeys; i++) {
        expected_signature(&srv.keys[i], id, ts, r, one, sizeof(one));
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i ? " " : "", one);
    }
    if (strcmp(sig, want) != 0) {
        snprintf(buf, size, "webhook-signature %s, expected %s", sig, want);
        return buf;
    }
    pthread_mutex_lock(&srv.lock);
    srv.nsigs = 1;
    for (const char *p = sig; (p = strchr(p, ' ')); p++)
        srv.nsigs++;
    pthread_mutex_unlock(&srv.lock);
    return NULL;
}

/* Waits for a release if the script holds requests (server threads). */
static void wait_release(void)
{
    pthread_mutex_lock(&srv.lock);
    while (srv.hold && srv.release == 0)
        pthread_cond_wait(&srv.cond, &srv.lock);
    if (srv.release > 0)
        srv.release--;
    srv.current--;
    srv.answered++;
    pthread_mutex_unlock(&srv.lock);
}

static enum MHD_Result respond(struct MHD_Connection *c)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (srv.body_len) {
        char *body = malloc(srv.body_len);

        memset(body, 'x', srv.body_len);
        resp = MHD_create_response_from_buffer(srv.body_len, body, MHD_RESPMEM_MUST_FREE);
    } else {
        resp = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    }
    if (srv.retry_after)
        MHD_add_response_header(resp, "Retry-After", srv.retry_after);
    if (srv.location)
        MHD_add_response_header(resp, "Location", srv.location);
    ret = MHD_queue_response(c, srv.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* MHD, one thread per connection. */
static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    request_t *r = *con_cls;
    char why[2048];

    if (!r) {
        *con_cls = calloc(1, sizeof(request_t));
        pthread_mutex_lock(&srv.lock);
        if (++srv.current > srv.max_current)
            srv.max_current = srv.current;
        pthread_mutex_unlock(&srv.lock);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (r->len + *upload_size <= REQUEST_BODY_MAX) {
            r->body = realloc(r->body, r->len + *upload_size + 1);
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&srv.lock);
    if (strcmp(url, HOOK_PATH) == 0)
        srv.hook_hits++;
    else
        srv.other_hits++;
    pthread_mutex_unlock(&srv.lock);
    if (strcmp(url, HOOK_PATH) == 0 && delivery_problem(c, method, r, why, sizeof(why)))
        server_fail(why);
    wait_release();
    return respond(c);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode code)
{
    request_t *r = *con_cls;

    if (r) {
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    if (code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    pthread_mutex_lock(&srv.lock);
    srv.connections++;
    pthread_mutex_unlock(&srv.lock);
}

/* Starts the server on 127.0.0.1 and a free port, answering status. */
static void server_start(unsigned status)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

    srv.status = status;
    srv.keys[0] = (server_key_t){vec_key, sizeof(vec_key)};
    srv.nkeys = 1;
    srv.daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED,
        completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
    ck_assert_ptr_nonnull(srv.daemon);
    srv.port = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT)->port;
}

static void server_release(int n)
{
    pthread_mutex_lock(&srv.lock);
    srv.release += n;
    pthread_cond_broadcast(&srv.cond);
    pthread_mutex_unlock(&srv.lock);
}

static int server_get(const int *field)
{
    int v;

    pthread_mutex_lock(&srv.lock);
    v = *field;
    pthread_mutex_unlock(&srv.lock);
    return v;
}

static void server_stop(void)
{
    pthread_mutex_lock(&srv.lock);
    srv.hold = false;
    pthread_cond_broadcast(&srv.cond);
    pthread_mutex_unlock(&srv.lock);
    MHD_stop_daemon(srv.daemon);
    srv.daemon = NULL;
    ck_assert_msg(srv.bad == 0, "%d bad requests, first: %s", srv.bad, srv.why);
}

/* ---- the sink's side ---- */

/* Everything the sink logs, to check that no secret or URL path shows. */
static char logbuf[65536];
static size_t loglen;

static void capture_log(sink_log_level_t level, const char *sink, const char *msg, void *opaque)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    loglen += (size_t)snprintf(logbuf + loglen, sizeof(logbuf) - loglen, "%s %s: %s\n",
                               names[level], sink, msg);
    if (loglen >= sizeof(logbuf))
        loglen = sizeof(logbuf) - 1;
}

static void assert_log_clean(void)
{
    assert_no_secret(logbuf);
    ck_assert_msg(!strstr(logbuf, HOOK_PATH), "URL path logged: %s", logbuf);
}

/* A sink for the server, with the URL's query holding a token the logs must not show. */
/*
 * The "http_loop" cases run every HTTP test again with the sink on an event
 * loop (sink_host_t.loop): nothing calls flush() then, the loop alone moves
 * the transfers on.
 */
static loop_t *loop;

static void loop_setup(void)
{
    char err[128];
    loop = loop_new(err, sizeof(err));
    ck_assert_msg(loop != NULL, "%s", err);
}

static void loop_teardown(void)
{
    loop_free(loop);
    loop = NULL;
}

static void *sink_for(unsigned port, const char *secrets_json, int timeout_s, int max_in_flight)
{
    char text[1024], err[512];
    cJSON *conf;
    void *ctx;

    snprintf(text, sizeof(text),
             "{\"url\":\"http://127.0.0.1:%u" HOOK_PATH "?token=tok3n\",%s,"
             "\"timeout_s\":%d,\"max_in_flight\":%d}",
             port, secrets_json, timeout_s, max_in_flight);
    conf = parse_json(text);
    ctx = sink_init(&sink_webhook_type, conf,
                    &(sink_host_t){.name = "hook", .loop = loop ? loop_sink_api(loop) : NULL}, err,
                    sizeof(err));
    ck_assert_msg(ctx != NULL, "create: %s", err);
    cJSON_Delete(conf);
    loglen = 0;
    logbuf[0] = '\0';
    sink_set_logger(capture_log, SINK_LOG_DEBUG, NULL);
    return ctx;
}

/* Event number n: its id in the body, as the server checks. */
typedef struct test_event {
    char id[33], json[128];
    sink_event_t ev;
} test_event_t;

static void event_init(test_event_t *e, unsigned n)
{
    snprintf(e->id, sizeof(e->id), "%032x", n);
    snprintf(e->json, sizeof(e->json), "{\"id\":\"%s\",\"type\":\"session.started\",\"n\":%u}",
             e->id, n);
    e->ev = (sink_event_t){.id = e->id,
                           .type = "session.started",
                           .kind = "started",
                           .source = "s",
                           .session_id = "x",
                           .key = "s/x",
                           .json = e->json,
                           .json_len = strlen(e->json)};
}

static void submit_n(void *ctx, test_event_t *evs, test_ticket_t *tickets, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        event_init(&evs[i], i + 1);
        ticket_init(&tickets[i]);
        ck_assert_int_eq(sink_webhook_type.submit(ctx, &evs[i].ev, &tickets[i].t), SINK_OK);
    }
}

static bool all_resolved(const test_ticket_t *tickets, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (tickets[i].calls == 0)
            return false;
    }
    return true;
}

/* Moves the transfers on for up to ms: the loop runs them, or flush() when there is none. */
static void serve(void *ctx, int ms)
{
    if (loop)
        loop_run_for(loop, ms);
    else
        sink_webhook_type.flush(ctx, sink_deadline_in(ms));
}

/* Serves until every ticket is resolved (bounded); each exactly once. */
static void drive(void *ctx, test_ticket_t *tickets, unsigned n)
{
    int64_t deadline = now_ms() + WAIT_BOUND_MS;

    while (!all_resolved(tickets, n) && now_ms() < deadline)
        serve(ctx, 100);
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(tickets[i].calls, 1);
    ck_assert_uint_eq(sink_webhook_type.flush(ctx, 0), 0);
}

/* One event to a server answering status; returns its ticket. */
static test_ticket_t deliver_one(unsigned status, int timeout_s)
{
    test_event_t ev;
    test_ticket_t t;
    void *ctx = sink_for(srv.port, SECRET_OK, timeout_s, 4);

    srv.status = status;
    submit_n(ctx, &ev, &t, 1);
    drive(ctx, &t, 1);
    assert_log_clean();
    sink_webhook_type.exit(ctx);
    return t;
}

START_TEST(test_ok_and_keep_alive)
{
    test_event_t evs[3];
    test_ticket_t t[3];
    void *ctx;

    server_start(200);
    ctx = sink_for(srv.port, SECRET_OK, 5, 4);
    ck_assert_int_eq(sink_ready(&sink_webhook_type, ctx), 1);
    for (unsigned i = 0; i < 3; i++) {
        submit_n(ctx, &evs[i], &t[i], 1);
        drive(ctx, &t[i], 1);
        ck_assert_int_eq(t[i].result, SINK_OK);
        ck_assert_double_eq(t[i].t.retry_after_s, -1);
    }
    ck_assert_int_eq(server_get(&srv.hook_hits), 3);
    ck_assert_int_eq(server_get(&srv.nsigs), 1);
    /* One kept-alive connection served the three attempts. */
    ck_assert_int_eq(server_get(&srv.connections), 1);
    ck_assert_uint_eq(sink_webhook_type.capacity(ctx), 4);
    ck_assert_ptr_nonnull(strstr(logbuf, "debug hook: event "));
    ck_assert_ptr_nonnull(strstr(logbuf, "http://127.0.0.1:"));
    assert_log_clean();
    sink_webhook_type.exit(ctx);
    server_stop();
}
END_TEST

START_TEST(test_two_secrets_two_signatures)
{
    static const unsigned char rot_key[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                              11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                              22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    test_event_t ev;
    test_ticket_t t;
    void *ctx;

    server_start(204);
    srv.keys[0] = (server_key_t){rot_key, sizeof(rot_key)};
    srv.keys[1] = (server_key_t){vec_key, sizeof(vec_key)};
    srv.nkeys = 2;
    ctx = sink_for(srv.port, "\"secrets\":[\"" ROT_SECRET "\",\"" VEC_SECRET "\"]", 5, 4);
    submit_n(ctx, &ev, &t, 1);
    drive(ctx, &t, 1);
    ck_assert_int_eq(t.result, SINK_OK);
    ck_assert_int_eq(server_get(&srv.nsigs), 2);
    assert_log_clean();
    sink_webhook_type.exit(ctx);
    server_stop();
}
END_TEST

START_TEST(test_gone)
{
    test_ticket_t t;

    server_start(410);
    t = deliver_one(410, 5);
    ck_assert_int_eq(t.result, SINK_ERR_GONE);
    ck_assert_ptr_nonnull(strstr(t.err, "410"));
    ck_assert_ptr_nonnull(strstr(logbuf, "warn hook: "));
    server_stop();
}
END_TEST

START_TEST(test_retry_after_503)
{
    char origin[64];
    test_ticket_t t;

    server_start(503);
    srv.retry_after = "7";
    t = deliver_one(503, 5);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    ck_assert_double_eq(t.t.retry_after_s, 7);
    ck_assert_ptr_nonnull(strstr(t.err, "503"));
    /* The warning names the status and the origin, not the path or query. */
    snprintf(origin, sizeof(origin), "HTTP 503 from http://127.0.0.1:%u", srv.port);
    ck_assert_msg(strstr(logbuf, origin) && strstr(logbuf, "warn hook: "), "log: %s", logbuf);

    /* Without Retry-After the ticket keeps -1: the worker's schedule decides. */
    srv.retry_after = NULL;
    t = deliver_one(500, 5);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    ck_assert_double_eq(t.t.retry_after_s, -1);
    ck_assert_ptr_nonnull(strstr(t.err, "500"));

    /* Other statuses, 4xx included, are failures to retry. */
    t = deliver_one(400, 5);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    server_stop();
}
END_TEST

START_TEST(test_redirect_refused)
{
    test_ticket_t t;

    server_start(302);
    srv.location = "/elsewhere";
    t = deliver_one(302, 5);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    ck_assert_msg(strstr(t.err, "302") && strstr(t.err, "redirects are refused"), "%s", t.err);
    ck_assert_int_eq(server_get(&srv.hook_hits), 1);
    ck_assert_int_eq(server_get(&srv.other_hits), 0);
    server_stop();
}
END_TEST

/* The endpoint answers 2xx with a body past the 64 KiB bound: cut, and still delivered. */
START_TEST(test_large_response_body)
{
    test_ticket_t t;

    server_start(200);
    srv.body_len = 1024 * 1024;
    t = deliver_one(200, 5);
    ck_assert_int_eq(t.result, SINK_OK);
    t = deliver_one(503, 5);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    server_stop();
}
END_TEST

/* A loopback socket that listens and never accepts: connections complete, nothing answers. */
static int silent_listener(unsigned *port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

START_TEST(test_no_answer_times_out)
{
    unsigned port;
    int fd = silent_listener(&port);
    test_event_t ev;
    test_ticket_t t;
    void *ctx = sink_for(port, SECRET_OK, 1, 4);
    int64_t start = now_ms();

    submit_n(ctx, &ev, &t, 1);
    drive(ctx, &t, 1);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    ck_assert_msg(strstr(t.err, "no response") && strstr(t.err, "within 1 s"), "%s", t.err);
    /* Safety net: timeout_s is 1; far below the drive() bound. */
    ck_assert_int_lt(now_ms() - start, 5000);
    assert_log_clean();
    sink_webhook_type.exit(ctx);
    close(fd);

    /* Nobody listening at all: refused, also a retry. */
    ctx = sink_for(port, SECRET_OK, 1, 4);
    submit_n(ctx, &ev, &t, 1);
    drive(ctx, &t, 1);
    ck_assert_int_eq(t.result, SINK_ERR_RETRY);
    ck_assert_ptr_nonnull(strstr(t.err, "127.0.0.1"));
    sink_webhook_type.exit(ctx);
}
END_TEST

/*
 * max_in_flight=2, 6 events: the server holds every request until the test
 * releases it, and releases only once two are held and the sink has had
 * several polls to (wrongly) start more.
 */
START_TEST(test_max_in_flight)
{
    test_event_t evs[6];
    test_ticket_t t[6];
    int64_t deadline = now_ms() + WAIT_BOUND_MS;
    void *ctx;

    server_start(200);
    srv.hold = true;
    ctx = sink_for(srv.port, SECRET_OK, 10, 2);
    submit_n(ctx, evs, t, 6);
    ck_assert_int_eq(t[5].calls, 0);
    ck_assert_uint_eq(sink_webhook_type.capacity(ctx), 0);
    while (!all_resolved(t, 6) && now_ms() < deadline) {
        int held = server_get(&srv.current), left = 6 - server_get(&srv.answered);

        if (held > 0 && held >= (left < 2 ? left : 2)) {
            for (int i = 0; i < 5; i++)
                serve(ctx, 20);
            server_release(held);
        }
        serve(ctx, 20);
    }
    drive(ctx, t, 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(t[i].result, SINK_OK);
    ck_assert_int_eq(server_get(&srv.hook_hits), 6);
    ck_assert_int_eq(server_get(&srv.max_current), 2);
    ck_assert_uint_eq(sink_webhook_type.capacity(ctx), 2);
    sink_webhook_type.exit(ctx);
    server_stop();
}
END_TEST

START_TEST(test_capacity_flush_and_exit)
{
    test_event_t evs[5];
    test_ticket_t t[5];
    int64_t deadline = now_ms() + WAIT_BOUND_MS;
    void *ctx;

    server_start(200);
    srv.hold = true;
    ctx = sink_for(srv.port, SECRET_OK, 10, 3);
    ck_assert_uint_eq(sink_webhook_type.capacity(ctx), 3);
    for (unsigned i = 0; i < 4; i++) {
        submit_n(ctx, &evs[i], &t[i], 1);
        ck_assert_uint_eq(sink_webhook_type.capacity(ctx), i < 3 ? 2 - i : 0);
        ck_assert_uint_eq(sink_webhook_type.flush(ctx, 0), i + 1);
    }
    /* Held by the server: the deadline of flush() ends it, nothing resolved. */
    ck_assert_uint_eq(sink_webhook_type.flush(ctx, sink_deadline_in(200)), 4);
    ck_assert_int_eq(t[0].calls, 0);

    server_release(4);
    ck_assert_uint_eq(sink_webhook_type.flush(ctx, sink_deadline_in(WAIT_BOUND_MS)), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(t[i].result, SINK_OK);
    ck_assert_uint_eq(sink_webhook_type.capacity(ctx), 3);

    /* An id that cannot be a webhook-id is refused, the ticket left to the caller. */
    event_init(&evs[4], 5);
    evs[4].ev.id = "bad.id";
    ticket_init(&t[4]);
    ck_assert_int_eq(sink_webhook_type.submit(ctx, &evs[4].ev, &t[4].t), SINK_ERR_PERMANENT);
    ck_assert_int_eq(t[4].calls, 0);
    ck_assert_uint_eq(sink_webhook_type.flush(ctx, 0), 0);

    /* exit() abandons what is in flight without resolving it. */
    submit_n(ctx, evs, t, 2);
    while (server_get(&srv.current) < 2 && now_ms() < deadline)
        serve(ctx, 20);
    ck_assert_int_eq(server_get(&srv.current), 2);
    sink_webhook_type.exit(ctx);
    ck_assert_int_eq(t[0].calls + t[1].calls, 0);
    ck_assert_ptr_nonnull(strstr(logbuf, "2 deliveries"));
    server_stop();
}
END_TEST

/* check --connect's probe of the sink at port: 0 or -1, the message in msg. */
static int probe_port(unsigned port, char *msg, size_t size)
{
    char text[512];
    cJSON *conf;
    int rc;

    snprintf(text, sizeof(text),
             "{\"url\":\"http://127.0.0.1:%u" HOOK_PATH "?token=tok3n\"," SECRET_OK
             ",\"timeout_s\":2}",
             port);
    conf = parse_json(text);
    rc = sink_probe(&sink_webhook_type, conf, &(sink_host_t){.name = "hook"},
                    sink_deadline_in(5000), msg, size);
    cJSON_Delete(conf);
    return rc;
}

/*
 * The probe connects to the URL's origin and sends nothing: the endpoint
 * sees a connection and no request. The message names the origin only
 * (the query holds a token). A closed port fails it.
 */
START_TEST(test_probe_connects_and_sends_nothing)
{
    char msg[512], origin[64];
    unsigned port;

    server_start(200);
    port = srv.port;
    snprintf(origin, sizeof(origin), "http://127.0.0.1:%u: connected in ", port);
    ck_assert_int_eq(probe_port(port, msg, sizeof(msg)), 0);
    ck_assert_msg(strstr(msg, origin) == msg && strstr(msg, "(no request sent)"), "%s", msg);
    ck_assert_ptr_null(strstr(msg, "tok3n"));
    ck_assert_ptr_null(strstr(msg, HOOK_PATH));
    for (int64_t until = now_ms() + WAIT_BOUND_MS;
         server_get(&srv.connections) == 0 && now_ms() < until;)
        usleep(10 * 1000); /* the server's thread counts the connection when it accepts it */
    ck_assert_int_eq(server_get(&srv.connections), 1);
    server_stop();
    ck_assert_int_eq(srv.hook_hits + srv.other_hits, 0);

    ck_assert_int_eq(probe_port(port, msg, sizeof(msg)), -1);
    ck_assert_msg(strstr(msg, "Couldn't connect to server") || strstr(msg, "connect"), "%s", msg);
    ck_assert_ptr_null(strstr(msg, "tok3n"));
}
END_TEST

static Suite *webhook_suite(void)
{
    Suite *s = suite_create("webhook");
    TCase *pure = tcase_create("pure");
    TCase *conf = tcase_create("config");
    TCase *http = tcase_create("http");
    TCase *http_loop = tcase_create("http_loop");

    tcase_add_test(pure, test_spec_vector);
    tcase_add_loop_test(pure, test_decode_secret, 0,
                        (int)(sizeof(secret_cases) / sizeof(secret_cases[0])));
    tcase_add_test(pure, test_decode_secret_bounds);
    tcase_add_loop_test(conf, test_validate, 0, (int)(sizeof(conf_cases) / sizeof(conf_cases[0])));
    tcase_add_test(http, test_ok_and_keep_alive);
    tcase_add_test(http, test_two_secrets_two_signatures);
    tcase_add_test(http, test_gone);
    tcase_add_test(http, test_retry_after_503);
    tcase_add_test(http, test_redirect_refused);
    tcase_add_test(http, test_large_response_body);
    tcase_add_test(http, test_no_answer_times_out);
    tcase_add_test(http, test_max_in_flight);
    tcase_add_test(http, test_capacity_flush_and_exit);
    tcase_add_test(http, test_probe_connects_and_sends_nothing);
    tcase_add_checked_fixture(http_loop, loop_setup, loop_teardown);
    tcase_add_test(http_loop, test_ok_and_keep_alive);
    tcase_add_test(http_loop, test_two_secrets_two_signatures);
    tcase_add_test(http_loop, test_gone);
    tcase_add_test(http_loop, test_retry_after_503);
    tcase_add_test(http_loop, test_redirect_refused);
    tcase_add_test(http_loop, test_large_response_body);
    tcase_add_test(http_loop, test_no_answer_times_out);
    tcase_add_test(http_loop, test_max_in_flight);
    tcase_add_test(http_loop, test_capacity_flush_and_exit);
    suite_add_tcase(s, pure);
    suite_add_tcase(s, conf);
    suite_add_tcase(s, http);
    suite_add_tcase(s, http_loop);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(webhook_suite());
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
