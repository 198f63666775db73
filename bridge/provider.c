/*
 * provider: the registry of adapters and what they share.
 */
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "page_scan.h"

const provider_ops_t *const provider_all[] = {&provider_century, &provider_quiz_jsonapi,
                                              &provider_proctorexam, &provider_smarterproctoring,
                                              NULL};

const provider_ops_t *provider_find(const char *name)
{
    for (size_t i = 0; provider_all[i]; i++) {
        if (strcmp(provider_all[i]->name, name) == 0)
            return provider_all[i];
    }
    return NULL;
}

diff_status_map_t *provider_status_map(const provider_ops_t *p, const cJSON *overrides)
{
    diff_status_map_t *m = diff_status_map_new();
    if (m == NULL)
        return NULL;
    for (const provider_status_t *s = p->statuses; s && s->raw; s++) {
        if (diff_status_map_set(m, s->raw, s->state) != 0)
            goto fail;
    }
    for (const cJSON *e = overrides ? overrides->child : NULL; e; e = e->next) {
        diff_state_t st;
        if (!cJSON_IsString(e) || diff_state_parse(e->valuestring, &st) != 0 ||
            diff_status_map_set(m, e->string, st) != 0)
            goto fail;
    }
    return m;
fail:
    diff_status_map_free(m);
    return NULL;
}

int provider_url_add(char *url, size_t urlsize, const char *name, const char *value)
{
    /*
     * curl_easy_escape() encodes as RFC 3986 says: unreserved characters
     * kept, "%20" for a space, upper-case digits. Not curl_url_set() with
     * CURLU_APPENDQUERY | CURLU_URLENCODE: libcurl 7.88 writes a space as
     * '+' there, which a server reading RFC 3986 takes for a '+' (and
     * ProctorExam's signature of such a value would no longer match), and
     * rewrites every escape of the URL in lower case.
     */
    char *ename = curl_easy_escape(NULL, name, 0), *evalue = curl_easy_escape(NULL, value, 0);
    size_t len = strlen(url);
    int n = -1;

    if (ename != NULL && evalue != NULL)
        n = snprintf(url + len, urlsize - len, "%c%s=%s", strchr(url, '?') ? '&' : '?', ename,
                     evalue);
    curl_free(ename);
    curl_free(evalue);
    if (n < 0 || (size_t)n >= urlsize - len) {
        url[len] = '\0';
        return -1;
    }
    return 0;
}

int provider_is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && strchr(extra, c) == NULL)
            return 0;
    }
    return 1;
}

int provider_add_header(provider_request_t *req, const char *name, const char *value)
{
    if (req->nheaders >= HTTP_MAX_REQUEST_HEADERS || !provider_is_token(name) ||
        sink_has_control(value))
        return -1;
    int n = snprintf(req->headers[req->nheaders], sizeof(req->headers[0]), "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof(req->headers[0]))
        return -1;
    req->nheaders++;
    return 0;
}

page_scan_spec_t *provider_scan_spec(const page_scan_paths_t *paths, const char *path,
                                     sink_errors_t *errs)
{
    char err[256];
    page_scan_spec_t *spec = page_scan_spec_new(paths, err, sizeof(err));
    if (spec == NULL)
        sink_errors_add(errs, path, "%s", err);
    return spec;
}

int provider_exact_integer(double d, long long *out)
{
    return sink_exact_integer(d, -PROVIDER_EXACT_INT_MAX, PROVIDER_EXACT_INT_MAX, out) == 0;
}

int provider_id_text(const cJSON *v, char *out, size_t n)
{
    long long ll;
    if (cJSON_IsNumber(v) && provider_exact_integer(v->valuedouble, &ll)) {
        snprintf(out, n, "%lld", ll);
        return 0;
    }
    if (cJSON_IsString(v) && v->valuestring[0] != '\0' && strlen(v->valuestring) < n) {
        snprintf(out, n, "%s", v->valuestring);
        return 0;
    }
    return -1;
}
