/*
 * suggest: the known word nearest to a mistyped one, for "did you mean"
 * wherever a user types a name we check: configuration keys (an unknown
 * key, sinks/sink_options.c and sink_conf_check_keys()) and the command
 * line (an unknown command or option, bridge/main.c). One rule for all, so
 * that a typo gets the same help wherever it is made. Part of sb_common;
 * not part of the installed sink API.
 */
#ifndef SB_SUGGEST_H
#define SB_SUGGEST_H

#include <stddef.h>

/* Words longer than this get no suggestion: nobody mistypes a paragraph. */
#define SUGGEST_WORD_MAX 64
/* Edits (insert, delete, replace, swap) a typo may be away from the word it suggests. */
#define SUGGEST_EDITS 2

/*
 * The candidate nearest to word so far. Candidates are offered one by one
 * (from tables of any shape: option tables, key lists, getopt's options);
 * the strings stay the caller's, best points at one of them.
 */
typedef struct suggest {
    const char *word;
    size_t limit;  /* the most edits a candidate may be away */
    size_t best_d; /* best's distance, SIZE_MAX while there is none */
    const char *best;
} suggest_t;

void suggest_init(suggest_t *s, const char *word);
/* Keeps candidate when it is nearer than every earlier one (ties: the earlier wins). */
void suggest_offer(suggest_t *s, const char *candidate);
/* The nearest candidate close enough to be the one meant, or NULL. */
const char *suggest_best(const suggest_t *s);

/* The same over a NULL-terminated list (NULL list: none). */
const char *suggest_nearest(const char *word, const char *const *candidates);

/*
 * Edit distance with adjacent swaps (optimal string alignment): "pth" is 1
 * from "path", "filetrs" 1 from "filters". SIZE_MAX when either word is
 * longer than SUGGEST_WORD_MAX.
 */
size_t suggest_distance(const char *a, const char *b);

#endif
