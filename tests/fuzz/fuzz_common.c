/*
 * fuzz_common: see fuzz.h.
 */
#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("fuzz: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

bool fuzz_check_open_issues(void)
{
    /* Read once: it is asked in the targets' inner loops. */
    static int check = -1;
    if (check < 0) {
        const char *v = getenv("SB_FUZZ_SKIP_OPEN_ISSUES");
        check = v == NULL || strcmp(v, "1") != 0;
    }
    return check;
}

/*
 * The well-formed byte sequences of RFC 3629 §4, as its table gives them
 * (an oracle written apart from the code it judges): the lead byte decides
 * the range of the second byte, later bytes are 80..BF.
 */
bool fuzz_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned char c = *p;
        unsigned char lo = 0x80, hi = 0xbf;
        size_t n;
        if (c <= 0x7f) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong below */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates above */
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n || p[1] < lo || p[1] > hi)
            return false;
        for (size_t i = 2; i <= n; i++) {
            if (p[i] < 0x80 || p[i] > 0xbf)
                return false;
        }
        p += n + 1;
    }
    return true;
}
