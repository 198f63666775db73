/*
 * malloc_count: an LD_PRELOAD shim that counts the allocation calls of a
 * process (malloc, calloc, realloc, the aligned ones; every thread) and
 * tags each of its log lines with the count, so that the allocations of
 * one poll cycle are the difference between two "cycle committed" lines.
 * bench_allocs.py builds it (cc -shared) and reads the tagged lines.
 *
 *   MALLOC_COUNT_OUT=FILE LD_PRELOAD=./malloc_count.so session-bridge run -c ...
 *
 * FILE receives "<allocations> <log line>" for every write(2) to stderr
 * (the bridge writes each log line with one write). glibc's __libc_*
 * entry points are the real allocator, so no dlsym() (which allocates)
 * is needed; write(2) is the raw system call for the same reason.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t k, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

static atomic_ullong allocations;
static int out_fd = -1;

__attribute__((constructor)) static void count_init(void)
{
    const char *path = getenv("MALLOC_COUNT_OUT");
    if (path != NULL)
        out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
}

void *malloc(size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    void *p = __libc_memalign(align, n);
    if (p == NULL)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_memalign(align, n);
}

/* Decimal digits of v into buf (at least 21 bytes), returns their count. */
static size_t put_u64(char *buf, unsigned long long v)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (fd == STDERR_FILENO && out_fd >= 0) {
        /* the count first, then the line, in one write so that threads do
         * not interleave them (lines are short: the bridge bounds them) */
        char line[8192];
        size_t k = put_u64(line, atomic_load(&allocations));
        line[k++] = ' ';
        size_t m = n < sizeof(line) - k ? n : sizeof(line) - k;
        memcpy(line + k, buf, m);
        (void)syscall(SYS_write, out_fd, line, k + m);
    }
    return syscall(SYS_write, fd, buf, n);
}
