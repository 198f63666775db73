/*
 * sinks/file: events appended to a local file, one CloudEvent per line
 * (JSON Lines), with size-based rotation.
 *
 * Each line goes out in one write(2) on an O_APPEND descriptor, so readers
 * (tail -F, log shippers) never see two events interleaved. How durable an
 * acknowledged event is depends on fsync:
 *   always    a ticket resolves only after an fsync that covers its line:
 *             submit() writes, the next tick or flush() fsyncs once for every
 *             line written since and resolves them all (group commit);
 *   interval  a ticket resolves once the kernel has the line; the tick fsyncs
 *             at most once per FILE_SYNC_INTERVAL_MS, so a machine crash may
 *             lose the last second (a process crash loses nothing);
 *   never     a ticket resolves once the kernel has the line; the kernel
 *             writes it back when it wants.
 * A failed write resolves RETRY and leaves no partial line behind (the file
 * is cut back to where the line began); the file is then reopened by path
 * by the next submit() or tick. The tick also notices, within
 * FILE_CHECK_MS, a file moved or deleted by someone else, and starts a new
 * one instead of writing on to it.
 *
 * Rotation: before a write that would take a non-empty file past
 * rotate_bytes, the file is fsynced (unless never) and closed, path.(k)
 * becomes path.(k+1) for k = keep-1 .. 1 (the oldest, path.keep, is
 * overwritten), path becomes path.1, and a new path is created.
 *
 * The tick is the periodic work, done by one timer on the bridge's loop when it is due: the
 * group fsync of fsync=always right after the submits of a loop turn, the
 * fsync of fsync=interval FILE_SYNC_INTERVAL_MS after the last one, the
 * path check every FILE_CHECK_MS. Without a loop, every flush() does it.
 * flush() also fsyncs at once whatever the mode asks (except never).
 *
 * Everything runs on the main loop thread, ready() included.
 *
 * probe() (check --connect) only asks whether the directory lets us create
 * and write files (access(2) with W_OK and X_OK): it creates nothing.
 */
#include "clock.h"
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_DEFAULT_ROTATE_BYTES 104857600 /* 100 MiB */
/* Smaller files would rotate every few events. */
#define FILE_ROTATE_MIN 4096LL
/* 1 TiB: a bound for the config check, not a recommendation. */
#define FILE_ROTATE_MAX 1099511627776LL
#define FILE_DEFAULT_KEEP 5
#define FILE_KEEP_MAX 1000
/* ".1000": the longest suffix of a rotated file. */
#define FILE_SUFFIX_MAX 5
/* Room for the suffix within PATH_MAX. */
#define FILE_PATH_MAX (PATH_MAX - FILE_SUFFIX_MAX - 1)
#define FILE_MODE 0640
/* fsync=interval: the longest a written line stays only in the page cache. */
#define FILE_SYNC_INTERVAL_MS 1000
/*
 * fsync=always: lines written and waiting for their fsync. Past the bound,
 * submit() fsyncs before writing more, so the batch stays bounded even when
 * the caller submits a whole cycle before flushing.
 */
#define FILE_WAITING_MAX 10000
/*
 * How often the tick looks at the path: it reopens a file closed by a failure
 * (so that ready() recovers without waiting for an event), and notices a
 * file moved or deleted by someone else (so that lines stop going to it).
 */
#define FILE_CHECK_MS 1000
/* After a rotation failed (a rename refused): the next attempt, not sooner. */
#define FILE_ROTATE_RETRY_MS 60000
/* A message: the path is the long part. */
#define FILE_MSG_MAX (PATH_MAX + 256)

typedef enum fsync_mode {
    FSYNC_ALWAYS,
    FSYNC_INTERVAL,
    FSYNC_NEVER,
} fsync_mode_t;

static const char *const fsync_names[] = {"always", "interval", "never", NULL};

typedef struct file_sink {
    char *name;
    char *path;
    char *dir; /* the directory holding path: fsynced after a create or a rename */
    fsync_mode_t fsync;
    unsigned long long rotate_bytes;
    int keep;
    int fd;                  /* -1: closed, opened again by submit() or the tick */
    unsigned long long size; /* of the open file */
    bool dirty;              /* lines written since the last fsync */
    bool dir_dirty;          /* an entry of dir changed since its last fsync */
    int64_t last_sync_ms;
    int64_t check_ms; /* the tick's next look at the path */
    dev_t dev;        /* the identity of the open file */
    ino_t ino;
    int64_t rotate_retry_ms;
    char *line; /* event + '\n', so that a line goes out in one write() */
    size_t cap;
    sink_ticket_t **waiting; /* fsync=always: written, waiting for the fsync */
    size_t nwaiting;
    int healthy;             /* the last open, write and fsync succeeded */
    const sink_loop_t *loop; /* NULL: the caller flushes */
    sink_timer_t *tick;      /* on the loop: the tick's work, when due */
    int64_t tick_at;         /* when tick fires (monotonic ms), INT64_MAX when disarmed */
} file_sink_t;

/* ---- configuration ---- */

static void check_file_name(const cJSON *value, const char *path, sink_errors_t *errs)
{
    if (value->valuestring[strlen(value->valuestring) - 1] == '/')
        sink_errors_add(errs, path, "expected a file name, not a directory");
}

static void check_rotate(const cJSON *value, const char *path, sink_errors_t *errs)
{
    if (value->valuedouble > 0 && value->valuedouble < FILE_ROTATE_MIN)
        sink_errors_add(errs, path, "expected 0 (never rotate) or at least %lld bytes, got %.0f",
                        FILE_ROTATE_MIN, value->valuedouble);
}

static const sink_option_t file_options[] = {
    {.key = "path",
     .type = SINK_OPT_STRING,
     .flags = SINK_OPT_REQUIRED,
     .min = 1,
     .max = FILE_PATH_MAX,
     .check = check_file_name,
     .desc = "the file events are appended to; its directory must exist"},
    {.key = "fsync",
     .type = SINK_OPT_ENUM,
     .def = "\"interval\"",
     .choices = fsync_names,
     .desc = "always: acknowledged once on disk (one fsync per batch); interval: fsync once a "
             "second; never: the kernel decides"},
    {.key = "rotate_bytes",
     .type = SINK_OPT_INT,
     .def = SINK_STR(FILE_DEFAULT_ROTATE_BYTES),
     .min = 0,
     .max = FILE_ROTATE_MAX,
     .check = check_rotate,
     .desc = "rotate before a line would take the file past this size (0: never; else at least "
             "4096)"},
    {.key = "keep",
     .type = SINK_OPT_INT,
     .def = SINK_STR(FILE_DEFAULT_KEEP),
     .min = 1,
     .max = FILE_KEEP_MAX,
     .desc = "rotated files kept: path.1 (the newest) to path.<keep>"},
    {0},
};

/* ---- the file ---- */

/* The directory part of path: "." for a bare name, "/" for a file in the root. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static void file_close(file_sink_t *ctx)
{
    if (ctx->fd >= 0)
        close(ctx->fd);
    ctx->fd = -1;
}

/* Opens (creating it if needed) the file for appending. 0 or -1 with msg. */
static int file_open(file_sink_t *ctx, char *msg, size_t size)
{
    struct stat sb;
    int fd = open(ctx->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, FILE_MODE);

    if (fd < 0) {
        int e = errno;

        snprintf(msg, size, "file %s: open: %s%s", ctx->path, strerror(e),
                 e == ENOENT ? " (does the directory exist?)" : "");
        ctx->healthy = 0;
        return -1;
    }
    /* Truncating a partial line and rotating only make sense for a file. */
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(msg, size, "file %s: not a regular file", ctx->path);
        close(fd);
        ctx->healthy = 0;
        return -1;
    }
    ctx->fd = fd;
    ctx->size = (unsigned long long)sb.st_size;
    ctx->dev = sb.st_dev;
    ctx->ino = sb.st_ino;
    /* The file may be new: its directory entry is durable only once the
     * directory is synced too. */
    ctx->dir_dirty = true;
    ctx->healthy = 1;
    return 0;
}

/* fsync(2) of the directory; filesystems that cannot (EINVAL) need not. */
static int sync_dir(file_sink_t *ctx, char *msg, size_t size)
{
    int fd = open(ctx->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
        snprintf(msg, size, "directory %s: fsync: %s", ctx->dir, strerror(errno));
        rc = -1;
    }
    if (fd >= 0)
        close(fd);
    if (rc == 0)
        ctx->dir_dirty = false;
    return rc;
}

/*
 * Makes everything written so far durable: the file, and the directory
 * when an entry changed. On failure the file is closed, to be reopened by
 * the next submit(): after a failed fsync Linux may have dropped the dirty
 * pages and report success next time, so that descriptor proves nothing.
 */
static int sync_file(file_sink_t *ctx, char *msg, size_t size)
{
    ctx->last_sync_ms = clock_mono_ms();
    if (ctx->fd >= 0 && ctx->dirty && fsync(ctx->fd) != 0) {
        snprintf(msg, size, "file %s: fsync: %s", ctx->path, strerror(errno));
        file_close(ctx);
        ctx->healthy = 0;
        return -1;
    }
    ctx->dirty = false;
    if (ctx->dir_dirty && sync_dir(ctx, msg, size) != 0) {
        ctx->healthy = 0;
        return -1;
    }
    return 0;
}

/*
 * fsync=always: one fsync for every line waiting, then their tickets: OK, or
 * RETRY when the fsync failed (the lines are in the file but may not survive
 * a crash; delivering them again duplicates them with the same ids).
 */
static void sync_waiting(file_sink_t *ctx)
{
    char msg[FILE_MSG_MAX];
    size_t n = ctx->nwaiting;
    int rc;

    if (n == 0)
        return;
    rc = sync_file(ctx, msg, sizeof(msg));
    if (rc != 0)
        sink_log(SINK_LOG_WARN, ctx->name, "%s; %zu events given back", msg, n);
    ctx->nwaiting = 0;
    for (size_t i = 0; i < n; i++)
        sink_ticket_done(ctx->waiting[i], rc == 0 ? SINK_OK : SINK_ERR_RETRY, rc == 0 ? NULL : msg);
}

/* Durable up to now, whatever the mode asks of the tickets. */
static void sync_now(file_sink_t *ctx)
{
    char msg[FILE_MSG_MAX];

    if (ctx->fsync == FSYNC_ALWAYS) {
        sync_waiting(ctx);
        return;
    }
    if (sync_file(ctx, msg, sizeof(msg)) != 0)
        sink_log(SINK_LOG_ERROR, ctx->name,
                 "%s; events acknowledged since the last fsync may be lost if the machine "
                 "crashes",
                 msg);
}

/* ---- rotation ---- */

static void rotated_name(char *buf, size_t size, const char *path, int k)
{
    snprintf(buf, size, "%s.%d", path, k);
}

/*
 * Shifts path.(k) to path.(k+1) for k = keep-1 .. 1, then path to path.1.
 * Missing files are skipped. Stops at the first other failure so that no
 * rename overwrites a file that was not moved on first.
 */
static int shift_files(file_sink_t *ctx, char *msg, size_t size)
{
    char from[PATH_MAX], to[PATH_MAX];

    for (int k = ctx->keep; k >= 1; k--) {
        if (k == 1)
            snprintf(from, sizeof(from), "%s", ctx->path);
        else
            rotated_name(from, sizeof(from), ctx->path, k - 1);
        rotated_name(to, sizeof(to), ctx->path, k);
        if (rename(from, to) != 0 && errno != ENOENT) {
            snprintf(msg, size, "rename %s to %s: %s", from, to, strerror(errno));
            return -1;
        }
        ctx->dir_dirty = true;
    }
    return 0;
}

static bool rotation_due(const file_sink_t *ctx, size_t n)
{
    return ctx->fd >= 0 && ctx->rotate_bytes > 0 && ctx->size > 0 &&
           ctx->size + n > ctx->rotate_bytes && clock_mono_ms() >= ctx->rotate_retry_ms;
}

/*
 * Closes the full file and shifts the rotated ones; the caller then opens a
 * new one. The full file is made durable first (unless never), which also
 * resolves the tickets waiting for an fsync. A rotation that fails is
 * logged and retried after FILE_ROTATE_RETRY_MS; meanwhile lines are
 * appended to the full file: a file past its size is better than lost events.
 */
static void rotate(file_sink_t *ctx)
{
    char msg[FILE_MSG_MAX];

    if (ctx->fsync != FSYNC_NEVER)
        sync_now(ctx);
    file_close(ctx);
    if (shift_files(ctx, msg, sizeof(msg)) != 0) {
        ctx->rotate_retry_ms = clock_mono_ms() + FILE_ROTATE_RETRY_MS;
        sink_log(SINK_LOG_WARN, ctx->name, "cannot rotate %s: %s; writing on to it for now",
                 ctx->path, msg);
        return;
    }
    sink_log(SINK_LOG_INFO, ctx->name, "rotated %s", ctx->path);
}

/* ---- writing ---- */

/*
 * Cuts off the `written` bytes of a line that failed part way. The size is
 * read back rather than remembered, so that lines appended meanwhile by
 * someone else survive.
 */
static void cut_partial_line(file_sink_t *ctx, size_t written)
{
    struct stat sb;

    if (fstat(ctx->fd, &sb) != 0 || (unsigned long long)sb.st_size < written ||
        ftruncate(ctx->fd, sb.st_size - (off_t)written) != 0)
        sink_log(SINK_LOG_ERROR, ctx->name,
                 "file %s: cannot remove the %zu bytes of a partial line: %s", ctx->path, written,
                 strerror(errno));
}

/* Writes ctx->line (n bytes) whole, or nothing. 0 or -1 with msg. */
static int write_line(file_sink_t *ctx, size_t n, char *msg, size_t size)
{
    size_t done = 0;

    while (done < n) {
        ssize_t w = write(ctx->fd, ctx->line + done, n - done);

        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        /* A regular file never takes 0 bytes of a non-empty write; if it
         * does, looping would never end. */
        snprintf(msg, size, "file %s: write: %s", ctx->path, strerror(w < 0 ? errno : EIO));
        if (done > 0)
            cut_partial_line(ctx, done);
        return -1;
    }
    return 0;
}

/* Copies the event and its '\n' into ctx->line. -1 when out of memory. */
static int make_line(file_sink_t *ctx, const sink_event_t *ev, size_t n)
{
    if (n > ctx->cap) {
        char *line = realloc(ctx->line, n);

        if (!line)
            return -1;
        ctx->line = line;
        ctx->cap = n;
    }
    memcpy(ctx->line, ev->json, ev->json_len);
    ctx->line[ev->json_len] = '\n';
    return 0;
}

/*
 * After a failed write: the lines before it still get their fsync (and
 * their tickets), then the file is closed so that the next submit() starts
 * on a fresh descriptor.
 */
static void drop_file(file_sink_t *ctx)
{
    sync_waiting(ctx);
    file_close(ctx);
    ctx->healthy = 0;
}

/* On the loop: the tick fires by when_ms, or sooner as it was. */
static void tick_due(file_sink_t *ctx, int64_t when_ms)
{
    int64_t now = clock_mono_ms();

    if (!ctx->loop || when_ms >= ctx->tick_at)
        return;
    ctx->tick_at = when_ms;
    ctx->loop->timer_arm(ctx->tick, when_ms > now ? (double)(when_ms - now) / 1000.0 : 0);
}

/* After a write: its fsync (always: this turn's group commit; interval: the next sync). */
static void sync_due(file_sink_t *ctx)
{
    if (ctx->fsync == FSYNC_ALWAYS && ctx->nwaiting > 0)
        tick_due(ctx, clock_mono_ms());
    else if (ctx->fsync == FSYNC_INTERVAL && (ctx->dirty || ctx->dir_dirty))
        tick_due(ctx, ctx->last_sync_ms + FILE_SYNC_INTERVAL_MS);
}

static void tick_work(file_sink_t *ctx);

static void on_tick(void *opaque)
{
    file_sink_t *ctx = opaque;

    ctx->tick_at = INT64_MAX;
    tick_work(ctx);
    tick_due(ctx, ctx->check_ms);
    sync_due(ctx);
}

static sink_result_t file_submit(void *vctx, const sink_event_t *ev, sink_ticket_t *ticket)
{
    file_sink_t *ctx = vctx;
    char msg[FILE_MSG_MAX];
    size_t n = ev->json_len + 1;

    /* A raw newline would split the event over two lines. */
    if (memchr(ev->json, '\n', ev->json_len)) {
        sink_log(SINK_LOG_ERROR, ctx->name, "event %s holds a newline: not written", ev->id);
        sink_ticket_done(ticket, SINK_ERR_PERMANENT, "the event holds a newline");
        return SINK_OK;
    }
    if (make_line(ctx, ev, n) != 0)
        return SINK_ERR_RETRY; /* ticket untouched: the caller resolves it */
    if (ctx->nwaiting == FILE_WAITING_MAX)
        sync_waiting(ctx);
    if (rotation_due(ctx, n))
        rotate(ctx);
    if ((ctx->fd < 0 && file_open(ctx, msg, sizeof(msg)) != 0) ||
        write_line(ctx, n, msg, sizeof(msg)) != 0) {
        if (ctx->fd >= 0)
            drop_file(ctx);
        sink_log(SINK_LOG_WARN, ctx->name, "event %s: %s", ev->id, msg);
        sink_ticket_done(ticket, SINK_ERR_RETRY, msg);
        return SINK_OK;
    }
    ctx->size += n;
    ctx->dirty = true;
    ctx->healthy = 1;
    if (ctx->fsync != FSYNC_ALWAYS) {
        sync_due(ctx);
        sink_ticket_done(ticket, SINK_OK, NULL);
        return SINK_OK;
    }
    ctx->waiting[ctx->nwaiting++] = ticket;
    sync_due(ctx);
    return SINK_OK;
}

/* True when path still names the file we have open. */
static bool still_ours(const file_sink_t *ctx)
{
    struct stat sb;

    return stat(ctx->path, &sb) == 0 && sb.st_dev == ctx->dev && sb.st_ino == ctx->ino;
}

/*
 * Reopens the file when it is closed after a failure, or when path no
 * longer names it (moved by an outside rotator, deleted): the lines written
 * to the old one get their fsync first, then new lines go to a new file.
 */
static void check_path(file_sink_t *ctx)
{
    char msg[FILE_MSG_MAX];

    if (ctx->fd >= 0) {
        if (still_ours(ctx))
            return;
        sink_log(SINK_LOG_WARN, ctx->name, "%s was moved or deleted; writing to a new file",
                 ctx->path);
        if (ctx->fsync != FSYNC_NEVER)
            sync_now(ctx);
        file_close(ctx);
    }
    if (file_open(ctx, msg, sizeof(msg)) != 0)
        sink_log(SINK_LOG_DEBUG, ctx->name, "%s", msg);
}

/* The periodic work: the path check when due, and the fsyncs the mode asks for. */
static void tick_work(file_sink_t *ctx)
{
    if (clock_mono_ms() >= ctx->check_ms) {
        ctx->check_ms = clock_mono_ms() + FILE_CHECK_MS;
        check_path(ctx);
    }
    if (ctx->fsync == FSYNC_ALWAYS)
        sync_waiting(ctx);
    else if (ctx->fsync == FSYNC_INTERVAL && (ctx->dirty || ctx->dir_dirty) &&
             clock_mono_ms() - ctx->last_sync_ms >= FILE_SYNC_INTERVAL_MS)
        sync_now(ctx);
}

static int file_ready(void *vctx)
{
    return ((file_sink_t *)vctx)->healthy;
}

/* The tick's work, then everything written made durable (unless never), at
 * once: an fsync waits for nothing else, so the deadline is never needed. */
static size_t file_flush(void *vctx, int64_t deadline_ms)
{
    file_sink_t *ctx = vctx;

    (void)deadline_ms;
    tick_work(ctx);
    if (ctx->fsync != FSYNC_NEVER)
        sync_now(ctx);
    return ctx->nwaiting;
}

/*
 * The directory must let us create and write the file (and the file, when
 * it exists, be writable): what open() at init() needs, asked without
 * creating anything. Answers at once; the deadline is never needed.
 */
static int file_probe(const sink_config_t *cfg, const sink_host_t *host, int64_t deadline_ms,
                      char *msg, size_t msglen)
{
    const char *path = sink_config_get(cfg, "path")->s;
    char *dir = dir_of(path);
    struct stat sb;
    int rc = -1;

    (void)host;
    (void)deadline_ms;
    if (!dir)
        snprintf(msg, msglen, "out of memory");
    else if (stat(dir, &sb) != 0)
        snprintf(msg, msglen, "directory %s: %s", dir, strerror(errno));
    else if (!S_ISDIR(sb.st_mode))
        snprintf(msg, msglen, "%s is not a directory", dir);
    else if (access(dir, W_OK | X_OK) != 0)
        snprintf(msg, msglen, "directory %s is not writable: %s", dir, strerror(errno));
    else if (stat(path, &sb) == 0 && (S_ISDIR(sb.st_mode) || access(path, W_OK) != 0))
        snprintf(msg, msglen, "%s exists and is not a writable file", path);
    else {
        snprintf(msg, msglen, "directory %s is writable", dir);
        rc = 0;
    }
    free(dir);
    return rc;
}

/* ---- instance ---- */

static void file_exit(void *vctx)
{
    file_sink_t *ctx = vctx;

    if (!ctx)
        return;
    if (ctx->waiting)
        file_flush(ctx, 0); /* resolves every waiting ticket, OK or RETRY */
    if (ctx->loop)
        ctx->loop->timer_free(ctx->tick);
    file_close(ctx);
    free(ctx->waiting);
    free(ctx->line);
    free(ctx->dir);
    free(ctx->path);
    free(ctx->name);
    free(ctx);
}

static void *file_init(const sink_config_t *cfg, const sink_host_t *host, char *err, size_t errlen)
{
    const char *path = sink_config_get(cfg, "path")->s;
    file_sink_t *ctx = calloc(1, sizeof(*ctx));

    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->fd = -1;
    ctx->fsync = (fsync_mode_t)sink_config_get(cfg, "fsync")->i;
    ctx->rotate_bytes = (unsigned long long)sink_config_get(cfg, "rotate_bytes")->i;
    ctx->keep = (int)sink_config_get(cfg, "keep")->i;
    ctx->name = strdup(host && host->name ? host->name : "file");
    ctx->path = strdup(path);
    ctx->dir = dir_of(path);
    ctx->waiting = calloc(FILE_WAITING_MAX, sizeof(*ctx->waiting));
    if (!ctx->name || !ctx->path || !ctx->dir || !ctx->waiting) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* Opened now so that a wrong path is a configuration error at startup,
     * not a retry loop later. */
    if (file_open(ctx, err, errlen) != 0)
        goto fail;
    ctx->last_sync_ms = clock_mono_ms();
    ctx->tick_at = INT64_MAX;
    if (host && host->loop) {
        if (!(ctx->tick = host->loop->timer_new(host->loop->loop, on_tick, ctx))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        ctx->loop = host->loop;
        tick_due(ctx, clock_mono_ms() + FILE_CHECK_MS);
    }
    return ctx;

fail:
    file_exit(ctx);
    return NULL;
}

const sink_type_t sink_file_type = {
    .name = "file",
    .flags = SINK_F_LOOP,
    .desc = "one event per line appended to a local file (JSON Lines), rotated by size",
    .options = file_options,
    .init = file_init,
    .submit = file_submit,
    .flush = file_flush,
    .exit = file_exit,
    .ready = file_ready,
    .probe = file_probe,
};
