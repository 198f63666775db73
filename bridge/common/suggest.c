/*
 * suggest: see suggest.h.
 */
#include "suggest.h"

#include <stdint.h>
#include <string.h>

size_t suggest_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[SUGGEST_WORD_MAX + 1][SUGGEST_WORD_MAX + 1];

    if (la > SUGGEST_WORD_MAX || lb > SUGGEST_WORD_MAX)
        return SIZE_MAX;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j - 1] + cost;

            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

void suggest_init(suggest_t *s, const char *word)
{
    s->word = word;
    /* A short word is one edit from too many others for two edits to mean anything. */
    s->limit = strlen(word) <= 4 ? 1 : SUGGEST_EDITS;
    s->best_d = SIZE_MAX;
    s->best = NULL;
}

void suggest_offer(suggest_t *s, const char *candidate)
{
    size_t d;

    if (!candidate)
        return;
    d = suggest_distance(s->word, candidate);
    if (d <= s->limit && d < s->best_d) {
        s->best_d = d;
        s->best = candidate;
    }
}

const char *suggest_best(const suggest_t *s)
{
    return s->best;
}

const char *suggest_nearest(const char *word, const char *const *candidates)
{
    suggest_t s;

    suggest_init(&s, word);
    for (size_t i = 0; candidates && candidates[i]; i++)
        suggest_offer(&s, candidates[i]);
    return suggest_best(&s);
}
