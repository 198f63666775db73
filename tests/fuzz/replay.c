/*
 * The replay driver: runs a fuzz target's LLVMFuzzerTestOneInput over
 * files, so that the checked-in corpora are ordinary tests under any
 * compiler (and, built with SB_SANITIZE, under ASan and UBSan).
 *
 *   fuzz_replay_<target> DIR|FILE...
 *
 * Every regular file of a directory counts (in name order, dot files
 * skipped); an empty directory is an error, so that a moved corpus cannot
 * pass by replaying nothing. A failing input aborts the run, and its name
 * is the last line printed.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0) {
        perror(path);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)sb.st_size;
    /* A buffer of exactly the input's size, as libFuzzer passes it: a read
     * past its end is caught by ASan. */
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL || fread(buf, 1, n, f) != n) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int visible(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

/* Replays the files of dir; the number replayed, or -1. */
static long run_dir(const char *dir)
{
    struct dirent **names;
    long done = 0;
    int n = scandir(dir, &names, visible, by_name);
    if (n < 0) {
        perror(dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (done >= 0 && stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            done = run_file(path) == 0 ? done + 1 : -1;
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        long n;
        if (stat(argv[i], &sb) != 0) {
            perror(argv[i]);
            return 1;
        }
        n = S_ISDIR(sb.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) == 0 ? 1 : -1;
        if (n <= 0) {
            fprintf(stderr, "%s: %s\n", argv[i], n == 0 ? "no inputs" : "replay failed");
            return 1;
        }
        total += n;
    }
    printf("%ld inputs replayed\n", total);
    return 0;
}
