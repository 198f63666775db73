/*
 * net: Retry-After, URLs and the easy-handle set-up (see net.h).
 */
#include "net.h"

#include <stdio.h>
#include <string.h>

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

net_url_status_t net_url_parse(const char *url, unsigned flags, CURLU **out)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL;
    net_url_status_t rc;

    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        rc = NET_URL_MALFORMED;
    else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
        rc = NET_URL_SCHEME;
    else if ((flags & NET_URL_NO_USERINFO) &&
             (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
              curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK))
        rc = NET_URL_USERINFO;
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
        rc = NET_URL_NO_HOST;
    else
        rc = NET_URL_OK;
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(password);
    if (rc == NET_URL_OK && out != NULL) {
        *out = u;
        u = NULL; /* the caller's now */
    }
    curl_url_cleanup(u);
    return rc;
}

int net_url_origin(CURLU *u, char *out, size_t size)
{
    char *scheme = NULL, *host = NULL, *port = NULL;
    int n = -1;

    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        /* Without CURLU_DEFAULT_PORT, only a port the URL spells is returned. */
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        n = snprintf(out, size, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}
