/*
 * diff's UTF-8 checks (RFC 3629), declared in diff.h because the core
 * holds text to the same rule: the page scanner, the event writer, the log
 * escaper and the configuration loader use them too.
 */
#include "diff.h"

#include <stdint.h>
#include <string.h>

size_t diff_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* U+D800..U+DFFF are surrogates, not characters */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* a continuation byte, 0xc0/0xc1 (overlong) or 0xf5.. */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    return len;
}

/* High bit of every byte of a word: a word without any is ASCII. */
#define UTF8_HIGH_BITS UINT64_C(0x8080808080808080)

int diff_utf8_check(const char *s, size_t n, size_t *bad)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        /* records and events are mostly ASCII: eight bytes at a time */
        uint64_t w;
        if (n - i >= sizeof(w)) {
            memcpy(&w, u + i, sizeof(w));
            if ((w & UTF8_HIGH_BITS) == 0) {
                i += sizeof(w);
                continue;
            }
        }
        size_t len = diff_utf8_seq(u + i, n - i);
        if (len == 0) {
            if (bad != NULL)
                *bad = i;
            return -1;
        }
        i += len;
    }
    return 0;
}
