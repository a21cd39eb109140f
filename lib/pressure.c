/*
 * pressure.c - the machine's view: the built-in pressure watcher and the
 * readers of the process's and its cgroup's memory figures.
 *
 * A room beside the core: it talks to the tracker only through the public
 * API (memq_tracker_pressure()) and lib/core.h (the configuration), and
 * the core calls it through lib/pressure.h.
 *
 * The watcher.  Linux says "memory is short" in several ways, and the
 * watcher takes the first that works, in this order:
 *
 *   1. systemd's convention (docs/PRESSURE.md in systemd's tree, and what
 *      sd_event_add_memory_pressure() does): $MEMORY_PRESSURE_WATCH names
 *      an absolute path, $MEMORY_PRESSURE_WRITE holds base64 data to write
 *      to it right after opening.  A regular file is a PSI file (it must
 *      live on procfs or cgroup2): wait for POLLPRI, never read it.  A
 *      FIFO (or character device): wait for POLLIN and read and discard
 *      what arrives.  An AF_UNIX stream socket: connect, then as a FIFO.
 *      "/dev/null" (or an empty value) means pressure handling is off.
 *   2. The process's cgroup v2 memory.pressure, and
 *   3. /proc/pressure/memory: PSI files, given the trigger
 *      "some <pressure_stall_us> <pressure_window_us>".
 *   4. The cgroup v1 memory.pressure_level, registered through
 *      cgroup.event_control with an eventfd that counts events.
 *
 * A source that refuses (absent, EACCES, EINVAL from the trigger, a bad
 * payload...) is logged in one line, recorded in the refused mask, and
 * the next one is tried.  Nothing here makes tracker creation fail.
 *
 * Invariants and the reasons for them:
 *  - One event, one memq_tracker_pressure() call: a POLLPRI, a chunk read
 *    from a FIFO or socket, one read of the eventfd.  The tracker's rate
 *    limit (pressure_interval_ms) absorbs bursts; the watcher adds none of
 *    its own, so pressure_events counts what the OS said.
 *  - The thread only reports.  In manual mode and thread mode alike,
 *    memq_tracker_pressure() makes memq_tracker_fd() readable and wakes the
 *    reclaim thread, so a daemon still polls one descriptor.  The other
 *    design, an epoll set holding the tracker's descriptor and the PSI
 *    file, is fragile: a PSI file's POLLPRI is consumed by the poll that
 *    reports it (the kernel clears the trigger's event flag as it answers),
 *    so an outer loop that polls the inner epoll descriptor makes the
 *    kernel check the PSI file once for the outer readiness and again for
 *    the inner epoll_wait, and the second check finds nothing: the event
 *    is swallowed.
 *  - The thread holds no lock of its own, ever: it calls
 *    memq_tracker_pressure() and the log callback with nothing held, and
 *    it blocks every signal, so a daemon's handlers run on its own threads.
 *  - memq__watcher_stop() wakes the thread through an eventfd and joins
 *    it: no report is made after it returns.  Every descriptor is
 *    O_CLOEXEC.
 *  - A PSI trigger is written with its terminating NUL, as systemd does:
 *    the files under /proc/pressure replace the last byte written with a
 *    NUL before parsing, so "some 200000 2000000" sent without one reads
 *    as a 200 ms window and is refused with EINVAL.
 *
 * The machine's figures.  RSS from /proc/self/statm; the cgroup's usage and
 * limit from the files named in /proc/self/cgroup: v2 under
 * /sys/fs/cgroup (or /sys/fs/cgroup/unified, systemd's hybrid layout), v1
 * under /sys/fs/cgroup/memory.  Limits walk up the hierarchy, because a
 * parent's limit binds its children.  The readers use open/read on stack
 * buffers, never malloc or a FILE, so that they cost a few system calls and
 * may run on any thread at any time.  memq_auto_max() (config.c) reads its
 * limit through the same functions: one discovery of the cgroups.
 */
#include "pressure.h"

#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Values from here up mean "no limit" (cgroup v1 writes 2^63 rounded down
 * to a page for it). */
#define NO_LIMIT (UINT64_C(1) << 60)

/* ======================================================================
 * Files under a root
 * ====================================================================== */

/* root followed by the formatted path (which starts with '/'); root may
 * be NULL, "", "/" or end with slashes.  False if it does not fit: the
 * file then counts as absent. */
static bool at_root(char *buf, size_t len, const char *root, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool at_root(char *buf, size_t len, const char *root, const char *fmt, ...)
{
    size_t n = root != NULL ? strlen(root) : 0;
    while (n > 0 && root[n - 1] == '/')
        n--;
    if (n >= len || n > INT_MAX)
        return false;
    snprintf(buf, len, "%.*s", (int)n, n > 0 ? root : "");
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
    return k >= 0 && (size_t)k < len - n;
}

/* Read a small file whole into buf (NUL-terminated).  Returns the length,
 * or -1 with errno set.  A file larger than the buffer is cut short. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < len - 1) {
        ssize_t k = read(fd, buf + got, len - 1 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* A file holding one number (or "max").  False if absent or unparsable;
 * "max" reads as UINT64_MAX. */
static bool read_number(const char *path, uint64_t *out)
{
    char text[64];
    if (read_small(path, text, sizeof text) < 0)
        return false;
    const char *s = text;
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncmp(s, "max", 3) == 0 && (s[3] == '\0' || isspace((unsigned char)s[3]))) {
        *out = UINT64_MAX;
        return true;
    }
    if (!isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return false;
    *out = v;
    return true;
}

static size_t to_size(uint64_t v)
{
    return v > SIZE_MAX ? SIZE_MAX : (size_t)v;
}

/* ======================================================================
 * The process's cgroups
 * ====================================================================== */

/* Where the unified (v2) hierarchy may be mounted: on its own, or beside
 * the v1 controllers in systemd's hybrid layout.  The first that holds the
 * file asked for wins; limits are taken from both (the unified hierarchy
 * of a hybrid system has no memory controller, so this costs a few failed
 * opens and changes nothing). */
static const char *const v2_bases[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
#define V1_MEMORY_BASE "/sys/fs/cgroup/memory"

typedef struct cgroups {
    bool has_v2, has_v1;
    char v2[PATH_MAX]; /* the "0::" path */
    char v1[PATH_MAX]; /* the memory controller's path */
} cgroups;

/* A cgroup path as /proc/self/cgroup gives it: absolute, and with no ".."
 * (a process outside its cgroup namespace's root sees "/../x"; walking
 * that would leave the hierarchy). */
static bool usable_cgroup_path(const char *p)
{
    if (p[0] != '/')
        return false;
    for (const char *s = p; (s = strstr(s, "/..")) != NULL; s += 3)
        if (s[3] == '/' || s[3] == '\0')
            return false;
    return true;
}

static void copy_path(char *dst, const char *src)
{
    size_t n = strlen(src);
    if (n >= PATH_MAX)
        n = PATH_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Lines are "hierarchy-id:controllers:path": "0::/path" for v2, and for v1
 * the line whose comma-separated controllers include "memory".  A line cut
 * off by the buffer's end is ignored. */
static void cgroups_read(const char *root, cgroups *cg)
{
    cg->has_v2 = cg->has_v1 = false;
    char path[PATH_MAX];
    char text[4096];
    if (!at_root(path, sizeof path, root, "/proc/self/cgroup"))
        return;
    ssize_t n = read_small(path, text, sizeof text);
    if (n < 0)
        return;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (line + strlen(line) == text + n && (size_t)n == sizeof text - 1)
            break; /* cut off */
        char *controllers = strchr(line, ':');
        char *dir = controllers != NULL ? strchr(controllers + 1, ':') : NULL;
        if (dir == NULL)
            continue;
        *controllers++ = '\0';
        *dir++ = '\0';
        if (!usable_cgroup_path(dir))
            continue;
        if (strcmp(line, "0") == 0 && *controllers == '\0') {
            cg->has_v2 = true;
            copy_path(cg->v2, dir);
            continue;
        }
        char *csave = NULL;
        for (char *c = strtok_r(controllers, ",", &csave); c != NULL;
             c = strtok_r(NULL, ",", &csave))
            if (strcmp(c, "memory") == 0) {
                cg->has_v1 = true;
                copy_path(cg->v1, dir);
            }
    }
}

/* <root><base><dir>/<file>, with dir "/" adding nothing. */
static bool cgroup_file(char *buf, size_t len, const char *root, const char *base,
                        const char *dir, const char *file)
{
    return at_root(buf, len, root, "%s%s/%s", base, strcmp(dir, "/") == 0 ? "" : dir, file);
}

/* The smallest value of `file` from dir up to the top of the hierarchy
 * under base; values of NO_LIMIT and above ("max", v1's unlimited) do not
 * count.  UINT64_MAX if none. */
static uint64_t walk_up_min(const char *root, const char *base, const char *cgroup_dir,
                            const char *file)
{
    char dir[PATH_MAX], path[PATH_MAX];
    copy_path(dir, cgroup_dir);
    uint64_t best = UINT64_MAX;
    for (;;) {
        uint64_t v;
        if (cgroup_file(path, sizeof path, root, base, dir, file) && read_number(path, &v) &&
            v < NO_LIMIT && v < best)
            best = v;
        if (strcmp(dir, "/") == 0)
            break;
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
    }
    return best;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* ======================================================================
 * The machine's figures
 * ====================================================================== */

uint64_t memq__machine_ram(const char *root)
{
    char path[PATH_MAX], text[4096];
    if (!at_root(path, sizeof path, root, "/proc/meminfo") ||
        read_small(path, text, sizeof text) < 0)
        return 0;
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, "MemTotal:", 9) == 0) {
            const char *s = line + 9;
            while (*s == ' ' || *s == '\t')
                s++;
            if (!isdigit((unsigned char)*s))
                return 0;
            errno = 0;
            unsigned long long kib = strtoull(s, NULL, 10);
            if (errno != 0 || kib > UINT64_MAX / 1024)
                return UINT64_MAX;
            return (uint64_t)kib * 1024;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return 0;
}

uint64_t memq__machine_cgroup_max(const char *root)
{
    cgroups cg;
    cgroups_read(root, &cg);
    uint64_t best = UINT64_MAX;
    if (cg.has_v2)
        for (size_t i = 0; i < sizeof v2_bases / sizeof v2_bases[0]; i++)
            best = min_u64(best, walk_up_min(root, v2_bases[i], cg.v2, "memory.max"));
    if (cg.has_v1)
        best = min_u64(best, walk_up_min(root, V1_MEMORY_BASE, cg.v1, "memory.limit_in_bytes"));
    return best;
}

size_t memq__machine_rss(const char *root)
{
    char path[PATH_MAX], text[256];
    if (!at_root(path, sizeof path, root, "/proc/self/statm") ||
        read_small(path, text, sizeof text) < 0)
        return 0;
    /* "size resident shared text lib data dt", in pages. */
    char *end;
    errno = 0;
    (void)strtoull(text, &end, 10);
    const char *s = end;
    while (*s == ' ')
        s++;
    if (errno != 0 || end == text || !isdigit((unsigned char)*s))
        return 0;
    unsigned long long resident = strtoull(s, NULL, 10);
    if (errno != 0)
        return 0;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || resident > UINT64_MAX / (unsigned long long)page)
        return 0;
    return to_size((uint64_t)resident * (uint64_t)page);
}

void memq__machine_read(const char *root, memq_machine *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    out->rss = memq__machine_rss(root);

    cgroups cg;
    cgroups_read(root, &cg);
    char path[PATH_MAX];
    uint64_t usage = 0, limit = UINT64_MAX;
    bool have_usage = false;
    if (cg.has_v2)
        for (size_t i = 0; i < sizeof v2_bases / sizeof v2_bases[0]; i++) {
            if (!have_usage && cgroup_file(path, sizeof path, root, v2_bases[i], cg.v2,
                                           "memory.current"))
                have_usage = read_number(path, &usage);
            limit = min_u64(limit, walk_up_min(root, v2_bases[i], cg.v2, "memory.max"));
            limit = min_u64(limit, walk_up_min(root, v2_bases[i], cg.v2, "memory.high"));
        }
    if (cg.has_v1) {
        if (!have_usage && cgroup_file(path, sizeof path, root, V1_MEMORY_BASE, cg.v1,
                                       "memory.usage_in_bytes"))
            have_usage = read_number(path, &usage);
        limit = min_u64(limit, walk_up_min(root, V1_MEMORY_BASE, cg.v1, "memory.limit_in_bytes"));
    }
    out->cgroup_usage = have_usage && usage != UINT64_MAX ? to_size(usage) : 0;
    out->cgroup_limit = limit != UINT64_MAX ? to_size(limit) : 0;
}

/* ======================================================================
 * The watcher: log lines
 * ====================================================================== */

static void say(memq_tracker *t, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One line through the tracker's log callback, read afresh (reconfigure
 * may change it).  Never called with a lock of ours held: we have none. */
static void say(memq_tracker *t, int level, const char *fmt, ...)
{
    memq_config cfg;
    memq_config_init(&cfg);
    memq__tracker_config(t, &cfg);
    if (cfg.log == NULL)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    cfg.log(cfg.log_ctx, level, line);
}

static const char *source_name(int source)
{
    switch (source) {
    case MEMQ_WATCH_SYSTEMD: return "systemd's $MEMORY_PRESSURE_WATCH";
    case MEMQ_WATCH_CGROUP2: return "cgroup v2 memory.pressure";
    case MEMQ_WATCH_PSI: return "PSI";
    case MEMQ_WATCH_CGROUP1: return "cgroup v1 memory.pressure_level";
    default: return "none";
    }
}

/* ======================================================================
 * The watcher: opening a source
 * ====================================================================== */

/* How the thread waits on a source's descriptor. */
enum {
    WAIT_PRIORITY, /* a PSI file: POLLPRI, never read */
    WAIT_DATA,     /* a FIFO, character device or socket: read and discard a chunk */
    WAIT_COUNTER   /* an eventfd (cgroup v1): read its count */
};

/* systemd's payloads are PSI triggers of some twenty bytes; a payload
 * larger than this is refused rather than allocated for. */
#define PAYLOAD_MAX 4096

/* What trying a source produced: a descriptor to wait on, or the step
 * that failed and its errno. */
typedef struct attempt {
    int fd;
    int aux_fd; /* cgroup v1: memory.pressure_level, kept with the registration */
    int how;
    char path[PATH_MAX]; /* what is (or was to be) watched */
    const char *step;    /* on failure: what failed */
    int err;             /* on failure: errno */
} attempt;

static bool fail(attempt *a, const char *step, int err)
{
    if (a->fd >= 0)
        close(a->fd);
    if (a->aux_fd >= 0)
        close(a->aux_fd);
    a->fd = a->aux_fd = -1;
    a->step = step;
    a->err = err;
    return false;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Write all of buf to a non-blocking descriptor, waiting up to a second in
 * all for room (a FIFO or socket whose reader is slow).  A PSI file takes
 * the trigger whole in its one write.  0, or -1 with errno set. */
static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    uint64_t deadline = mono_ms() + 1000;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno != EAGAIN)
            return -1;
        uint64_t now = mono_ms();
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            return -1;
    }
    return 0;
}

/* Open a PSI file and arm it with trigger (n bytes).  A PSI file allows
 * one trigger per open file, and the kernel checks it at the write. */
static bool open_psi(attempt *a, const void *trigger, size_t n)
{
    a->fd = open(a->path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (a->fd < 0)
        return fail(a, "cannot open", errno);
    if (write_all(a->fd, trigger, n) != 0)
        return fail(a, "trigger refused", errno);
    a->how = WAIT_PRIORITY;
    return true;
}

/*
 * A FIFO is opened for reading and writing, where systemd opens it
 * read-only unless it has a payload: holding the write side ourselves,
 * the FIFO never reports a hang-up when a writer (systemd, a script, a
 * test) closes it, so every writer that comes along is heard, and the
 * open never waits for a writer.  The payload, if any, goes in as systemd
 * says; since the watcher reads the same FIFO, it may read it back as one
 * event, as sd-event would.
 */
static bool open_fifo(attempt *a, const void *payload, size_t n)
{
    a->fd = open(a->path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (a->fd < 0)
        return fail(a, "cannot open", errno);
    if (n > 0 && write_all(a->fd, payload, n) != 0)
        return fail(a, "cannot write $MEMORY_PRESSURE_WRITE", errno);
    a->how = WAIT_DATA;
    return true;
}

/* Connect a stream socket to the path and write the payload.  The connect
 * is non-blocking: a listener whose backlog is full refuses at once
 * (EAGAIN) rather than stalling tracker creation. */
static bool open_socket(attempt *a, const void *payload, size_t n)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(a->path);
    if (len >= sizeof sa.sun_path)
        return fail(a, "socket path too long", ENAMETOOLONG);
    memcpy(sa.sun_path, a->path, len + 1);
    a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->fd < 0)
        return fail(a, "cannot create a socket", errno);
    if (connect(a->fd, (const struct sockaddr *)&sa, sizeof sa) != 0)
        return fail(a, "cannot connect", errno);
    if (n > 0 && write_all(a->fd, payload, n) != 0)
        return fail(a, "cannot write $MEMORY_PRESSURE_WRITE", errno);
    a->how = WAIT_DATA;
    return true;
}

static int base64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard base64 with optional '=' padding; white space is skipped (as
 * systemd's decoder does).  False for any other character, data after
 * padding, an impossible length, or more than cap bytes. */
static bool base64_decode(const char *s, unsigned char *out, size_t cap, size_t *n)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t len = 0, digits = 0, pad = 0;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (isspace(c))
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int d = base64_digit(c);
        if (d < 0 || pad > 0)
            return false;
        acc = ((acc << 6) | (uint32_t)d) & 0xffffffu;
        bits += 6;
        digits++;
        if (bits >= 8) {
            bits -= 8;
            if (len == cap)
                return false;
            out[len++] = (unsigned char)(acc >> bits);
        }
    }
    if (digits % 4 == 1 || pad > 2 || (pad > 0 && (digits + pad) % 4 != 0))
        return false;
    *n = len;
    return true;
}

/* Path equality as systemd's path_equal() sees it: repeated slashes and
 * "." components do not count. */
static const char *next_component(const char *p)
{
    while (*p == '/' || (p[0] == '.' && (p[1] == '/' || p[1] == '\0')))
        p++;
    return p;
}

static bool same_path(const char *a, const char *b)
{
    if ((a[0] == '/') != (b[0] == '/'))
        return false;
    for (;;) {
        a = next_component(a);
        b = next_component(b);
        size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
        if (la != lb || strncmp(a, b, la) != 0)
            return false;
        if (la == 0)
            return true;
        a += la;
        b += lb;
    }
}

/* systemd wants an absolute path with no "." or ".." component and no
 * repeated slash (path_is_normalized()). */
static bool normalized_absolute(const char *p)
{
    if (p[0] != '/')
        return false;
    for (const char *s = p; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        const char *c = s + 1;
        size_t len = strcspn(c, "/");
        if (c[0] == '/' || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return false;
    }
    return true;
}

static bool try_systemd(attempt *a, const char *root, const char *watch, const char *write_env,
                        const char *trigger, size_t trigger_len)
{
    snprintf(a->path, sizeof a->path, "%s", watch);
    if (!normalized_absolute(watch))
        return fail(a, "not an absolute, normalized path", EINVAL);
    unsigned char payload[PAYLOAD_MAX];
    size_t n = 0;
    if (write_env != NULL && !base64_decode(write_env, payload, sizeof payload, &n))
        return fail(a, "$MEMORY_PRESSURE_WRITE is not valid base64 (or too long)", EINVAL);
    if (!at_root(a->path, sizeof a->path, root, "%s", watch))
        return fail(a, "path too long", ENAMETOOLONG);
    struct stat st;
    if (stat(a->path, &st) != 0)
        return fail(a, "cannot find it", errno);
    if (S_ISSOCK(st.st_mode))
        return open_socket(a, payload, n);
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))
        return open_fifo(a, payload, n);
    if (S_ISDIR(st.st_mode))
        return fail(a, "not a PSI file, FIFO or socket", EISDIR);
    if (!S_ISREG(st.st_mode))
        return fail(a, "not a PSI file, FIFO or socket", ENOTSUP);
    /* A regular file must be a kernel PSI file, or POLLPRI never comes. */
    struct statfs sfs;
    if (statfs(a->path, &sfs) != 0)
        return fail(a, "cannot find it", errno);
    if (sfs.f_type != PROC_SUPER_MAGIC && sfs.f_type != CGROUP2_SUPER_MAGIC)
        return fail(a, "a regular file outside procfs and cgroup2, so not a PSI file", ENOTTY);
    /* No payload: systemd gave no trigger, so use ours (a PSI file without
     * one never signals). */
    if (n == 0)
        return open_psi(a, trigger, trigger_len);
    return open_psi(a, payload, n);
}

static bool try_cgroup2(attempt *a, const char *root, const cgroups *cg, const char *trigger,
                        size_t trigger_len)
{
    if (!cg->has_v2) {
        snprintf(a->path, sizeof a->path, "/proc/self/cgroup");
        return fail(a, "no cgroup v2 entry", ENOENT);
    }
    bool found = false;
    for (size_t i = 0; i < sizeof v2_bases / sizeof v2_bases[0] && !found; i++) {
        struct stat st;
        if (cgroup_file(a->path, sizeof a->path, root, v2_bases[i], cg->v2, "memory.pressure") &&
            stat(a->path, &st) == 0)
            found = true;
    }
    if (!found) {
        if (!cgroup_file(a->path, sizeof a->path, root, v2_bases[0], cg->v2, "memory.pressure"))
            return fail(a, "path too long", ENAMETOOLONG);
        return fail(a, "cannot open", ENOENT);
    }
    return open_psi(a, trigger, trigger_len);
}

static bool try_psi(attempt *a, const char *root, const char *trigger, size_t trigger_len)
{
    if (!at_root(a->path, sizeof a->path, root, "/proc/pressure/memory"))
        return fail(a, "path too long", ENAMETOOLONG);
    return open_psi(a, trigger, trigger_len);
}

/*
 * cgroup v1: "<eventfd> <fd of memory.pressure_level> <level>" written to
 * cgroup.event_control registers the eventfd, whose count then grows at
 * each event.  "medium" is the level closest to the PSI default ("some"
 * 10% stalled): the cgroup is swapping or evicting working cache; "low"
 * fires on any reclaim at all, "critical" only near the OOM killer.
 */
static bool try_cgroup1(attempt *a, const char *root, const cgroups *cg)
{
    if (!cg->has_v1) {
        snprintf(a->path, sizeof a->path, "/proc/self/cgroup");
        return fail(a, "no cgroup v1 memory controller", ENOENT);
    }
    char control[PATH_MAX];
    if (!cgroup_file(a->path, sizeof a->path, root, V1_MEMORY_BASE, cg->v1,
                     "memory.pressure_level") ||
        !cgroup_file(control, sizeof control, root, V1_MEMORY_BASE, cg->v1,
                     "cgroup.event_control"))
        return fail(a, "path too long", ENAMETOOLONG);
    a->aux_fd = open(a->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (a->aux_fd < 0)
        return fail(a, "cannot open", errno);
    a->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->fd < 0)
        return fail(a, "cannot create an eventfd", errno);
    int cfd = open(control, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (cfd < 0)
        return fail(a, "cannot open cgroup.event_control", errno);
    char line[64];
    int len = snprintf(line, sizeof line, "%d %d medium", a->fd, a->aux_fd);
    int rc = write_all(cfd, line, (size_t)len);
    int err = errno;
    close(cfd);
    if (rc != 0)
        return fail(a, "registration refused by cgroup.event_control", err);
    a->how = WAIT_COUNTER;
    return true;
}

/* ======================================================================
 * The watcher: the thread
 * ====================================================================== */

struct memq_watcher {
    memq_tracker *t;
    int source;
    int fd, aux_fd, how;
    int stop_fd;    /* eventfd: readable once memq__watcher_stop() asks */
    pthread_t thread;
    bool self_stop; /* stop was called on this thread: only it reads or writes this */
    char path[];    /* what is watched, for log lines */
};

static void watcher_close(memq_watcher *w)
{
    close(w->fd);
    if (w->aux_fd >= 0)
        close(w->aux_fd);
    close(w->stop_fd);
    free(w);
}

/* What one wake-up of poll says: an event, the source gone, or nothing. */
enum { SEEN_NOTHING, SEEN_EVENT, SEEN_GONE };

static int take_event(memq_watcher *w, short revents, int *err)
{
    *err = 0;
    if (w->how == WAIT_PRIORITY) {
        /* POLLERR with POLLPRI is what a PSI file says once its cgroup is
         * gone (or when it has no trigger): not pressure. */
        if (revents & (POLLERR | POLLHUP | POLLNVAL))
            return SEEN_GONE;
        return (revents & POLLPRI) ? SEEN_EVENT : SEEN_NOTHING;
    }
    if (revents & POLLIN) {
        char buf[PIPE_BUF];
        ssize_t k = read(w->fd, buf, w->how == WAIT_COUNTER ? sizeof(uint64_t) : sizeof buf);
        if (k > 0)
            return SEEN_EVENT;
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            return SEEN_NOTHING;
        *err = k < 0 ? errno : 0;
        return SEEN_GONE; /* 0: the socket's peer closed */
    }
    if (revents & (POLLERR | POLLHUP | POLLNVAL))
        return SEEN_GONE;
    return SEEN_NOTHING;
}

static void *watch_thread(void *arg)
{
    memq_watcher *w = arg;
    struct pollfd fds[2] = {
        {.fd = w->stop_fd, .events = POLLIN},
        {.fd = w->fd, .events = w->how == WAIT_PRIORITY ? POLLPRI : POLLIN},
    };
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            char text[128];
            say(w->t, MEMQ_LOG_WARN, "pressure watcher: poll failed: %s; no longer watching %s",
                strerror_r(e, text, sizeof text), w->path);
            break;
        }
        if (fds[0].revents != 0)
            break;
        int err;
        int seen = take_event(w, fds[1].revents, &err);
        if (seen == SEEN_EVENT) {
            int rc = memq_tracker_pressure(w->t);
            if (w->self_stop)
                break;
            if (rc == MEMQ_ESHUTDOWN || rc == MEMQ_EINVAL)
                break; /* the tracker is going away: nobody to tell */
        } else if (seen == SEEN_GONE) {
            char text[128];
            say(w->t, MEMQ_LOG_WARN, "pressure watcher: %s (%s) %s; no longer watching it",
                source_name(w->source), w->path,
                err != 0 ? strerror_r(err, text, sizeof text) : "was closed or removed");
            break;
        }
    }
    if (w->self_stop)
        watcher_close(w); /* detached: nobody else will */
    return NULL;
}

/* Start the thread on what a succeeded; NULL (logged) if memory or a
 * thread cannot be had, and a's descriptors are closed. */
static memq_watcher *launch(memq_tracker *t, int source, attempt *a)
{
    char text[128];
    size_t len = strlen(a->path);
    memq_watcher *w = calloc(1, sizeof *w + len + 1);
    int stop_fd = w != NULL ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
    int rc = 0;
    if (w != NULL && stop_fd >= 0) {
        w->t = t;
        w->source = source;
        w->fd = a->fd;
        w->aux_fd = a->aux_fd;
        w->how = a->how;
        w->stop_fd = stop_fd;
        memcpy(w->path, a->path, len + 1);
        /* The thread blocks every signal: they are the daemon's to handle,
         * on its own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&w->thread, NULL, watch_thread, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0)
            return w;
    }
    int err = w == NULL ? ENOMEM : stop_fd < 0 ? errno : rc;
    if (stop_fd >= 0)
        close(stop_fd);
    free(w);
    close(a->fd);
    if (a->aux_fd >= 0)
        close(a->aux_fd);
    say(t, MEMQ_LOG_WARN, "pressure watcher: %s (%s) opened but the watcher cannot start: %s; "
        "running without a pressure watcher", source_name(source), a->path,
        strerror_r(err, text, sizeof text));
    return NULL;
}

memq_watcher *memq__watcher_start(memq_tracker *t, const char *root, const char *watch_env,
                                  const char *write_env, int *source, unsigned *refused)
{
    int dummy_source;
    unsigned dummy_refused;
    if (source == NULL)
        source = &dummy_source;
    if (refused == NULL)
        refused = &dummy_refused;
    *source = MEMQ_WATCH_NONE;
    *refused = 0;
    if (t == NULL)
        return NULL;
    if (watch_env != NULL && (watch_env[0] == '\0' || same_path(watch_env, "/dev/null"))) {
        say(t, MEMQ_LOG_INFO, "pressure watcher: turned off by $MEMORY_PRESSURE_WATCH=\"%s\"",
            watch_env);
        return NULL;
    }

    memq_config cfg;
    memq_config_init(&cfg);
    memq__tracker_config(t, &cfg);
    char trigger[64];
    /* The NUL goes too: see the opening comment. */
    size_t trigger_len = (size_t)snprintf(trigger, sizeof trigger, "some %u %u",
                                          cfg.pressure_stall_us, cfg.pressure_window_us) + 1;

    cgroups cg;
    cgroups_read(root, &cg);
    static const int order[] = {MEMQ_WATCH_SYSTEMD, MEMQ_WATCH_CGROUP2, MEMQ_WATCH_PSI,
                                MEMQ_WATCH_CGROUP1};
    size_t count = sizeof order / sizeof order[0];
    for (size_t i = 0; i < count; i++) {
        int s = order[i];
        attempt a;
        a.fd = a.aux_fd = -1;
        a.how = WAIT_PRIORITY;
        a.path[0] = '\0';
        a.step = "";
        a.err = 0;
        bool ok;
        switch (s) {
        case MEMQ_WATCH_SYSTEMD:
            if (watch_env == NULL)
                continue; /* not set: not tried */
            ok = try_systemd(&a, root, watch_env, write_env, trigger, trigger_len);
            break;
        case MEMQ_WATCH_CGROUP2: ok = try_cgroup2(&a, root, &cg, trigger, trigger_len); break;
        case MEMQ_WATCH_PSI: ok = try_psi(&a, root, trigger, trigger_len); break;
        default: ok = try_cgroup1(&a, root, &cg); break;
        }
        if (ok) {
            memq_watcher *w = launch(t, s, &a);
            if (w == NULL) {
                *refused |= 1u << s;
                return NULL;
            }
            *source = s;
            say(t, MEMQ_LOG_INFO, "pressure watcher: watching %s (%s)", source_name(s), a.path);
            return w;
        }
        *refused |= 1u << s;
        char text[128];
        /* An absent source is the common case on many machines: INFO.
         * The path last: a long one is what the line's limit cuts. */
        say(t, a.err == ENOENT || a.err == ENOTDIR ? MEMQ_LOG_INFO : MEMQ_LOG_WARN,
            "pressure watcher: %s refused: %s: %s; %s (%s)", source_name(s), a.step,
            strerror_r(a.err, text, sizeof text),
            i + 1 < count ? "trying the next source" : "running without a pressure watcher",
            a.path);
    }
    return NULL;
}

void memq__watcher_stop(memq_watcher *w)
{
    if (w == NULL)
        return;
    if (pthread_equal(w->thread, pthread_self())) {
        /* From a callback the thread is running: it cannot join itself.
         * It sees the flag when the callback returns and cleans up. */
        w->self_stop = true;
        pthread_detach(w->thread);
        return;
    }
    uint64_t one = 1;
    while (write(w->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    pthread_join(w->thread, NULL);
    watcher_close(w);
}
