/*
 * net: Retry-After and the easy-handle set-up (see net.h).
 */
#include "net.h"

#include <curl/curl.h>

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

int net_retry_after(const char *value, time_t now, double *delay_s)
{
    const char *p = skip_blanks(value);
    double d = 0;

    if (*p >= '0' && *p <= '9') {
        /* Digits past the bound no longer change the result, nor overflow. */
        for (; *p >= '0' && *p <= '9'; p++) {
            if (d <= NET_RETRY_AFTER_MAX_S)
                d = d * 10 + (*p - '0');
        }
        if (*skip_blanks(p) != '\0')
            return -1;
    } else {
        /* curl_getdate() reads the three HTTP-date formats (and a few more
         * lenient spellings); it ignores trailing blanks. */
        time_t when = *p != '\0' ? curl_getdate(p, NULL) : -1;

        if (when == -1)
            return -1;
        d = difftime(when, now);
        if (d < 0)
            d = 0;
    }
    *delay_s = d > NET_RETRY_AFTER_MAX_S ? NET_RETRY_AFTER_MAX_S : d;
    return 0;
}

CURL *net_easy_new(const net_easy_options_t *opt)
{
    CURL *h = curl_easy_init();

    if (h == NULL)
        return NULL;
    if (curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK) {
        curl_easy_cleanup(h);
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, opt->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : opt->timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)opt->max_response);
    curl_easy_setopt(h, CURLOPT_USERAGENT, NET_USER_AGENT);
    return h;
}
