/*
 * bench_diff: what diff/ costs at a population of N sessions (default
 * 1,000,000), in one process and without I/O: synthetic Century-shaped
 * records (~530 bytes, the shape of tests/e2e/hostile.py) driven through
 * diff_cycle_begin/observe/finish, the events read and encoded window by
 * window as the engine does (ENGINE_DELIVERY_WINDOW), and apply.
 *
 *   bench_diff [sessions]            first emit cycle, then a churn cycle
 *   bench_diff [sessions] restart    the index loaded, then a churn cycle
 *
 * Cycle 1 is a first `initial_snapshot: emit` poll (every session new, 80%
 * in progress, 20% completed: 1.2 events per session); cycle 2 observes the
 * same population with 1% of it completed since. `restart` (a process of
 * its own) loads the index as a restarted bridge loads it from Redis
 * (diff_index_put) and runs the churn cycle there. Prints peak RSS (VmHWM,
 * reset between phases through /proc/self/clear_refs) and CPU per session.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "diff.h"
#include "event.h"

/* Events the engine hands to its sinks at a time (bridge/engine/deliver.c). */
#define BENCH_WINDOW 5000
#define BENCH_DEFAULT_SESSIONS 1000000
/* One record's text; Century's are ~530 bytes. */
#define BENCH_RECORD_MAX 1024

static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, n) == 0) {
            v = atol(line + n);
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    return v;
}

/* Makes VmHWM start again from the current RSS (Linux >= 4.0). */
static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f != NULL) {
        fputs("5", f);
        fclose(f);
    }
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void session_id(char out[37], unsigned i)
{
    snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012x", i * 2654435761u, i & 0xffff, (i >> 4) & 0xfff,
             (i >> 8) & 0xfff, i);
}

/* The record of session i in cycle c: completed from the start for one in
 * five, and in cycle 1 for 1% more. */
static const char *status_of(unsigned i, int cycle)
{
    if (i % 5 == 0 || (cycle > 0 && i % 100 == 1))
        return "COMPLETED";
    return "IN_PROGRESS";
}

static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/*
 * A record with the entropy of the simulator's (tests/stack/sim_century.c):
 * a random user id, a user drawn from a pool of names, one of 40 tests, a
 * start time to the millisecond. Repetitive text would compress far better
 * than real pages do.
 */
static size_t record(char *out, const char *id, const char *status, unsigned i)
{
    static const char *const first[] = {"Ada",      "Grace",  "Alan",    "Edsger",
                                        "Barbara",  "Donald", "Frances", "John",
                                        "Margaret", "Dennis", "Ken",     "Radia"};
    static const char *const last[] = {"Lovelace", "Hopper",  "Turing",   "Dijkstra",
                                       "Liskov",   "Knuth",   "Allen",    "Backus",
                                       "Hamilton", "Ritchie", "Thompson", "Perlman"};
    static const char *const subjects[] = {"Mathematics", "English", "Science", "History"};
    uint64_t r = mix(i), u = mix(r), t = mix(u) % 40;
    const char *f = first[r % 12], *l = last[(r >> 8) % 12];
    int n = snprintf(
        out, BENCH_RECORD_MAX,
        "{\"test\":{\"name\":\"Test %u of %s\",\"testId\":\"9c1e2a4e-8f2b-4c55-9d61-%012llx\","
        "\"subject\":\"%s\",\"testVersionId\":\"0b6f3c8a-2d4e-4f1a-8b9c-%012llx\"},\"user\":"
        "{\"emails\":[\"%s.%s%u@example.org\"],\"gender\":\"%s\",\"userId\":"
        "\"%08llx-%04llx-4%03llx-8%03llx-%012llx\",\"fullName\":\"%s %s\",\"lastName\":\"%s\","
        "\"username\":\"%s.%s%u\",\"firstName\":\"%s\",\"dateOfBirth\":\"20%02u-%02u-%02u\"},"
        "\"status\":\"%s\",\"sessionId\":\"%s\",\"startDate\":\"2026-11-%02uT%02u:%02u:%02u.%"
        "03uZ\"}",
        (unsigned)t, subjects[t % 4], (unsigned long long)(mix(t) & 0xffffffffffffULL),
        subjects[t % 4], (unsigned long long)(mix(t + 99) & 0xffffffffffffULL), f, l,
        (unsigned)(u % 1000), (u & 1) ? "female" : "male", (unsigned long long)(u >> 32),
        (unsigned long long)(u & 0xffff), (unsigned long long)((u >> 16) & 0xfff),
        (unsigned long long)((u >> 28) & 0xfff), (unsigned long long)(mix(u) & 0xffffffffffffULL),
        f, l, l, f, l, (unsigned)(u % 1000), f, (unsigned)(5 + r % 10), (unsigned)(1 + r % 12),
        (unsigned)(1 + (r >> 4) % 28), status, id, (unsigned)(1 + (r >> 12) % 28),
        (unsigned)((r >> 20) % 24), (unsigned)((r >> 28) % 60), (unsigned)((r >> 36) % 60),
        (unsigned)((r >> 44) % 1000));
    return (size_t)n;
}

typedef struct phase {
    const char *name;
    double cpu;
} phase_t;

static int run_cycle(diff_index_t *ix, diff_status_map_t *map, unsigned n, int cycle, bool emit,
                     const char *label)
{
    diff_options_t opt = {.source = "century",
                          .vanish_grace = 2,
                          .status_map = map,
                          .baseline = !emit && cycle == 0,
                          .max_sessions = n};
    char id[37], text[BENCH_RECORD_MAX], err[256];
    size_t raw_bytes = 0;
    long rss0 = status_kib("VmRSS:");
    reset_peak();
    double t0 = cpu_s();
    diff_cycle_t *cy = diff_cycle_begin(ix, &opt);
    if (cy == NULL)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        session_id(id, i);
        const char *st = status_of(i, cycle);
        size_t len = record(text, id, st, i);
        raw_bytes += len;
        if (diff_cycle_observe(cy, id, sizeof(id) - 1, st, strlen(st), text, len, err,
                               sizeof(err)) != 0) {
            fprintf(stderr, "observe %u: %s\n", i, err);
            return -1;
        }
    }
    double t1 = cpu_s();
    if (diff_cycle_finish(cy) != 0)
        return -1;
    double t2 = cpu_s();
    size_t nev = diff_cycle_nevents(cy), encoded = 0;
    for (size_t w = 0; w < nev; w += BENCH_WINDOW) {
        for (size_t i = w; i < nev && i < w + BENCH_WINDOW; i++) {
            diff_event_t ev;
            size_t len;
            if (diff_cycle_event(cy, i, &ev) != 0)
                return -1;
            char *json = event_encode(&ev, "century", "century_smart_ia", 1700000000000LL, &len);
            if (json == NULL)
                return -1;
            encoded += len;
            free(json);
        }
    }
    double t3 = cpu_s();
    /* the commit's pass over the last records it writes (bridge/store/snapshot.c) */
    size_t nlast = 0, last_bytes = 0;
    for (size_t i = 0; i < diff_cycle_nchanges(cy); i++) {
        diff_change_t ch;
        const char *last;
        size_t len;
        if (diff_cycle_change(cy, i, &ch) != 0)
            return -1;
        if (ch.last != DIFF_LAST_SET)
            continue;
        if (diff_cycle_change_last(cy, i, &last, &len) != 0)
            return -1;
        nlast++;
        last_bytes += len;
    }
    double t3b = cpu_s();
    size_t held_raw, held = diff_cycle_retained(cy, &held_raw);
    size_t cymem = diff_cycle_memory(cy), nch = diff_cycle_nchanges(cy);
    diff_cycle_apply(cy);
    diff_cycle_free(cy);
    /* as the engine does after a large cycle (ENGINE_TRIM_AFTER_BYTES) */
    if (cymem >= 16u * 1024u * 1024u)
        malloc_trim(0);
    double t4 = cpu_s();
    long hwm = status_kib("VmHWM:"), rss = status_kib("VmRSS:");
    printf("%s: %u sessions, %zu events, %zu changes\n", label, n, nev, nch);
    printf("  records observed %.0f MiB; kept for events %.1f MiB raw -> %.1f MiB compressed "
           "(%.1fx, %.0f B/record)\n",
           raw_bytes / 1048576.0, held_raw / 1048576.0, held / 1048576.0,
           held ? (double)held_raw / (double)held : 0.0,
           nev ? (double)held / (double)(held_raw ? nch : 1) : 0.0);
    printf("  cycle heap at its peak %.1f MiB (%.0f B/session); index after %.1f MiB (%.0f "
           "B/session)\n",
           cymem / 1048576.0, (double)cymem / n, diff_index_memory(ix) / 1048576.0,
           (double)diff_index_memory(ix) / n);
    printf("  CPU per session: observe %.2f us (record text generation included), finish %.2f "
           "us, read+encode events %.2f us (%.2f us per event, %.0f MiB encoded), apply+free "
           "%.2f us\n",
           (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6, (t3 - t2) / n * 1e6,
           nev ? (t3 - t2) / (double)nev * 1e6 : 0.0, encoded / 1048576.0, (t4 - t3b) / n * 1e6);
    printf("  last records for the store: %zu (%.0f MiB), read in %.2f us per session\n", nlast,
           last_bytes / 1048576.0, (t3b - t3) / n * 1e6);
    printf("  RSS before %.1f MiB, peak %.1f MiB, after %.1f MiB (%.0f B/session)\n", rss0 / 1024.0,
           hwm / 1024.0, rss / 1024.0, rss * 1024.0 / n);
    return 0;
}

/* Loads the index a cycle-1 poll leaves, as store_load_async() does at start. */
static int load_index(diff_index_t *ix, unsigned n)
{
    char id[37], text[BENCH_RECORD_MAX];
    for (unsigned i = 0; i < n; i++) {
        session_id(id, i);
        const char *st = status_of(i, 0);
        size_t len = record(text, id, st, i);
        diff_record_t rec = {.state = i % 5 == 0 ? DIFF_STATE_COMPLETED : DIFF_STATE_ACTIVE,
                             .fingerprint = diff_fingerprint(text, len),
                             .status = st};
        if (diff_index_put(ix, id, &rec) != 0)
            return -1;
    }
    return 0;
}

/* CPU of making the records alone, to subtract from observe's figure. */
static void generation_cost(unsigned n)
{
    char id[37], text[BENCH_RECORD_MAX];
    size_t bytes = 0;
    double t0 = cpu_s();
    for (unsigned i = 0; i < n; i++) {
        session_id(id, i);
        bytes += record(text, id, status_of(i, 0), i);
    }
    printf("record text generation alone: %.2f us per session (%.0f MiB)\n",
           (cpu_s() - t0) / n * 1e6, bytes / 1048576.0);
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : BENCH_DEFAULT_SESSIONS;
    bool restart = argc > 2 && strcmp(argv[2], "restart") == 0;
    diff_status_map_t *map = diff_status_map_new();
    diff_status_map_set(map, "IN_PROGRESS", DIFF_STATE_ACTIVE);
    diff_status_map_set(map, "COMPLETED", DIFF_STATE_COMPLETED);
    diff_index_t *ix = diff_index_new();

    if (!restart) {
        generation_cost(n);
        if (run_cycle(ix, map, n, 0, true, "cycle 1, initial_snapshot emit") != 0 ||
            run_cycle(ix, map, n, 1, true, "cycle 2, 1% churn") != 0)
            return 1;
    } else {
        /* a restarted bridge: the index loaded as from Redis, then churn */
        long rss0 = status_kib("VmRSS:");
        if (load_index(ix, n) != 0)
            return 1;
        printf("restart: index loaded, %.1f MiB (%.0f B/session); RSS %.1f MiB (%.1f before)\n",
               diff_index_memory(ix) / 1048576.0, (double)diff_index_memory(ix) / n,
               status_kib("VmRSS:") / 1024.0, rss0 / 1024.0);
        if (run_cycle(ix, map, n, 1, true, "restart, 1% churn") != 0)
            return 1;
    }
    diff_index_free(ix);
    diff_status_map_free(map);
    return 0;
}
