/*
 * floor_cjson: the parse-only floor of a cycle, as a whole process.
 *
 * Reads every page file named in a list file (one path a line), parses each
 * with cJSON, the parser session-bridge uses, and frees the tree. No HTTP,
 * no diff, no Redis, no Kafka: what is left is the least CPU any program
 * that builds a cJSON tree of every page can spend on a cycle, which
 * bench_side_by_side.py divides by the sessions to compare against the
 * bridge's CPU per session.
 *
 *   floor_cjson LIST_FILE     prints "pages <n> bytes <n> records <n>"
 *
 * A benchmark tool, not part of the product: the pages are our own files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "floor_read.h"

int main(int argc, char **argv)
{
    char path[FLOOR_PATH_MAX];
    char *buf = NULL;
    size_t cap = 0, pages = 0, bytes = 0, records = 0;
    FILE *list;

    if (argc != 2) {
        fprintf(stderr, "usage: floor_cjson LIST_FILE\n");
        return 2;
    }
    list = fopen(argv[1], "r");
    if (!list) {
        perror(argv[1]);
        return 1;
    }
    while (fgets(path, sizeof(path), list)) {
        long n;
        cJSON *root;

        path[strcspn(path, "\n")] = '\0';
        if (!*path)
            continue;
        n = read_file(path, &buf, &cap);
        if (n < 0) {
            perror(path);
            return 1;
        }
        root = cJSON_ParseWithLength(buf, (size_t)n);
        if (!root) {
            fprintf(stderr, "%s: not JSON\n", path);
            return 1;
        }
        /* Counting the records keeps the parse from being optimised away
         * and lets the harness check it read what the bridge read. */
        records += (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "data"));
        cJSON_Delete(root);
        pages++;
        bytes += (size_t)n;
    }
    fclose(list);
    free(buf);
    printf("pages %zu bytes %zu records %zu\n", pages, bytes, records);
    return 0;
}
