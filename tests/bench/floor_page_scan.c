/*
 * floor_page_scan: floor_cjson.c with the bridge's own page scanner
 * (bridge/page_scan.h): reads every page file named in a list file and
 * scans each as century_smart_ia's pages are (records "data", id
 * "sessionId", status "status", field "pagination.nextCursor"), touching
 * every record's id, status and span. Where floor_cjson only parses and
 * frees, this also validates the page as the bridge must (RFC 8259, UTF-8,
 * depth, escapes) and reads what an adapter needs: the least CPU the
 * bridge's data path can spend on a page.
 *
 *   floor_page_scan LIST_FILE  prints "pages <n> bytes <n> records <n> span <n>"
 *
 * A benchmark tool, not part of the product: the pages are our own files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "floor_read.h"
#include "page_scan.h"

/* As century.c's CENTURY_CURSOR_MAX. */
#define FLOOR_CURSOR_MAX 2048

typedef struct floor_count {
    size_t records, span;
} floor_count_t;

static int on_record(void *opaque, const page_scan_record_t *rec, char *err, size_t errlen)
{
    floor_count_t *c = opaque;
    if (rec->kind != PAGE_SCAN_OBJECT || rec->id.kind != PAGE_SCAN_STRING ||
        rec->status.kind != PAGE_SCAN_STRING || rec->id.too_long || rec->status.too_long) {
        snprintf(err, errlen, "data[%zu] lacks a string \"sessionId\" or \"status\"", rec->index);
        return -1;
    }
    c->records++;
    c->span += rec->len + rec->id.len + rec->status.len;
    return 0;
}

int main(int argc, char **argv)
{
    char path[FLOOR_PATH_MAX], err[256];
    char *buf = NULL;
    size_t cap = 0, pages = 0, bytes = 0;
    floor_count_t count = {0};
    if (argc != 2) {
        fprintf(stderr, "usage: floor_page_scan LIST_FILE\n");
        return 2;
    }
    page_scan_spec_t *spec =
        page_scan_spec_new(&(page_scan_paths_t){.records = "data",
                                                .id = "sessionId",
                                                .status = "status",
                                                .fields = {"pagination.nextCursor"}},
                           err, sizeof(err));
    FILE *list = fopen(argv[1], "r");
    if (!spec || !list) {
        fprintf(stderr, "%s\n", spec ? argv[1] : err);
        return 1;
    }
    while (fgets(path, sizeof(path), list)) {
        char cursor[FLOOR_CURSOR_MAX + 1];
        page_scan_result_t res = {.fields = {{.text = cursor, .cap = sizeof(cursor)}}};
        path[strcspn(path, "\n")] = '\0';
        if (!*path)
            continue;
        long n = read_file(path, &buf, &cap);
        if (n < 0) {
            perror(path);
            return 1;
        }
        if (page_scan(spec, buf, (size_t)n, on_record, &count, &res, err, sizeof(err)) !=
            PAGE_SCAN_OK) {
            fprintf(stderr, "%s: %s\n", path, err);
            return 1;
        }
        count.span += res.fields[0].len;
        pages++;
        bytes += (size_t)n;
    }
    fclose(list);
    free(buf);
    page_scan_spec_free(spec);
    printf("pages %zu bytes %zu records %zu span %zu\n", pages, bytes, count.records, count.span);
    return 0;
}
