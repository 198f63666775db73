/*
 * What the floor programs share: reading a page file as a client reads a
 * response, into one buffer reused across pages. Benchmark tools, not part
 * of the product.
 */
#ifndef SB_FLOOR_READ_H
#define SB_FLOOR_READ_H

#include <stdio.h>
#include <stdlib.h>

/* Page paths are our own, short temp paths. */
#define FLOOR_PATH_MAX 4096

/* Reads path into *buf (grown as needed, reused across pages as a client's
 * response buffer would be). Returns the length or -1. */
static long read_file(const char *path, char **buf, size_t *cap)
{
    FILE *f = fopen(path, "rb");
    long n;

    if (!f)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    if ((size_t)n + 1 > *cap) {
        char *p = realloc(*buf, (size_t)n + 1);
        if (!p) {
            fclose(f);
            return -1;
        }
        *buf = p;
        *cap = (size_t)n + 1;
    }
    if (fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        return -1;
    }
    fclose(f);
    (*buf)[n] = '\0';
    return n;
}

#endif /* SB_FLOOR_READ_H */
