/*
 * sinks/webhook: the pure parts of the webhook sink (Standard Webhooks
 * signing, whsec_ secret decoding), exposed for its unit tests.
 * Internal to sinks/: not installed, not part of the sink ABI.
 */
#ifndef SB_WEBHOOK_H
#define SB_WEBHOOK_H

#include <stddef.h>

/*
 * Bounds of a whsec_ key, in decoded bytes, as Standard Webhooks asks
 * (24 bytes, 192 bits, to 64): a shorter key is weaker than the spec's
 * receivers are built for, and 64 bytes is one SHA-256 block, the longest
 * key HMAC uses as it is rather than hashing it first.
 */
#define WEBHOOK_KEY_MIN 24
#define WEBHOOK_KEY_MAX 64

/* "v1," + base64 of a 32-byte HMAC-SHA256 (44 characters) + NUL. */
#define WEBHOOK_SIGNATURE_SIZE (3 + 44 + 1)

typedef enum webhook_secret_status {
    WEBHOOK_SECRET_OK = 0,
    WEBHOOK_SECRET_FORMAT, /* not "whsec_" followed by standard base64 */
    WEBHOOK_SECRET_LENGTH, /* well formed, but the key is not 24..64 bytes long */
} webhook_secret_status_t;

/*
 * Decodes a "whsec_<base64>" secret into key (WEBHOOK_KEY_MAX bytes) and
 * *keylen. Standard base64 alphabet; the '=' padding is optional, as the
 * reference libraries accept it both ways. With WEBHOOK_SECRET_LENGTH,
 * *keylen is the length the text decodes to and key is untouched.
 */
webhook_secret_status_t webhook_decode_secret(const char *secret, unsigned char *key,
                                              size_t *keylen);

/*
 * Writes "v1,<base64 HMAC-SHA256(key, "<msg_id>.<ts>.<body>")>" into out
 * (at least WEBHOOK_SIGNATURE_SIZE bytes). Returns 0, or -1 when out is too
 * small or OpenSSL fails.
 */
int webhook_sign(const unsigned char *key, size_t keylen, const char *msg_id, long long ts,
                 const char *body, size_t body_len, char *out, size_t outlen);

#endif /* SB_WEBHOOK_H */
