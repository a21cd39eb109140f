/*
 * check_pressure.c - the pressure room: the built-in watcher (systemd's
 * $MEMORY_PRESSURE_WATCH, cgroup v2 memory.pressure, /proc/pressure/memory,
 * cgroup v1 memory.pressure_level) and the readers of the machine's
 * figures (RSS, the cgroup's usage and limit).
 *
 * Most tests build a fake /proc and /sys under a temporary root; the
 * watcher and the readers take every path under it.  A few read this
 * machine's real files and say what they found.  The watcher is started
 * and stopped directly (memq__watcher_start/stop), as the core does from
 * memq_tracker_new/free, so that each test chooses its root and its
 * systemd variables.  No test needs privileges.
 */
#include "testutil.h"

#include "core.h" /* holding a tracker past its shutdown */
#include "pressure.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

#define PSI_TRIGGER "some 150000 2000000" /* what the test trackers are configured with */
#define WAIT_MS 5000                      /* how long an expected event may take */

/* ======================================================================
 * A fake root
 * ====================================================================== */

static char root[64];

static void root_path(char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/%s", root, rel);
}

/* mkdir -p for the parents of rel. */
static void make_parents(const char *rel)
{
    char path[512];
    root_path(path, sizeof path, rel);
    for (char *s = strchr(path + strlen(root) + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
}

static void write_file(const char *rel, const char *text)
{
    char path[512];
    make_parents(rel);
    root_path(path, sizeof path, rel);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *rel)
{
    char path[512];
    make_parents(rel);
    root_path(path, sizeof path, rel);
    ck_assert_int_eq(mkdir(path, 0755), 0);
}

static void make_fifo(const char *rel)
{
    char path[512];
    make_parents(rel);
    root_path(path, sizeof path, rel);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
}

static void make_symlink(const char *rel, const char *target)
{
    char path[512];
    make_parents(rel);
    root_path(path, sizeof path, rel);
    ck_assert_int_eq(symlink(target, path), 0);
}

/* The whole content of a file under the root (binary-safe); its length. */
static size_t read_file(const char *rel, char *buf, size_t len)
{
    char path[512];
    root_path(path, sizeof path, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
    return (size_t)n;
}

/* Every fallback source present: a cgroup v2 memory.pressure, the PSI
 * file, and a cgroup v1 memory.pressure_level with its event_control. */
static void all_fallbacks(void)
{
    write_file("proc/self/cgroup", "4:memory:/jail\n0::/svc.slice/relay.service\n");
    write_file("sys/fs/cgroup/svc.slice/relay.service/memory.pressure", "");
    write_file("proc/pressure/memory", "");
    write_file("sys/fs/cgroup/memory/jail/memory.pressure_level", "");
    write_file("sys/fs/cgroup/memory/jail/cgroup.event_control", "");
}

/* ======================================================================
 * A tracker that records its log lines
 * ====================================================================== */

#define MAX_LINES 64

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[MAX_LINES][1024];
static int log_levels[MAX_LINES];
static int log_count;

static void record_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    pthread_mutex_lock(&log_lock);
    if (log_count < MAX_LINES) {
        snprintf(log_lines[log_count], sizeof log_lines[0], "%s", msg);
        log_levels[log_count] = level;
        log_count++;
    }
    pthread_mutex_unlock(&log_lock);
}

/* Log lines containing every one of the given (NULL-terminated) words. */
static int lines_with(const char *word, ...)
{
    int n = 0;
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < log_count; i++) {
        bool all = strstr(log_lines[i], word) != NULL;
        va_list ap;
        va_start(ap, word);
        for (const char *w = va_arg(ap, const char *); w != NULL && all;
             w = va_arg(ap, const char *))
            all = strstr(log_lines[i], w) != NULL;
        va_end(ap);
        n += all;
    }
    pthread_mutex_unlock(&log_lock);
    return n;
}

static void print_log(void)
{
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < log_count; i++)
        fprintf(stderr, "  log[%d] %s\n", log_levels[i], log_lines[i]);
    pthread_mutex_unlock(&log_lock);
}

static memq_tracker *tracker;

/* A small max and a long pressure_interval_ms: the first report schedules
 * an episode, the later ones are absorbed but counted. */
static memq_tracker *new_tracker(memq_reclaim_mode mode, unsigned window_us)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    cfg.cache_max = 0;
    cfg.reclaim_mode = mode;
    cfg.pressure_interval_ms = 60 * 1000;
    cfg.pressure_stall_us = 150000;
    cfg.pressure_window_us = window_us;
    cfg.log = record_log;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    return t;
}

static uint64_t pressure_events(memq_tracker *t)
{
    memq_stats st;
    memq_tracker_stats(t, &st);
    return st.pressure_events;
}

/* Wait until the tracker has heard n reports (false after WAIT_MS). */
static bool wait_events(memq_tracker *t, uint64_t n)
{
    for (int i = 0; i < WAIT_MS; i++) {
        if (pressure_events(t) >= n)
            return true;
        sleep_ms(1);
    }
    return false;
}

static void setup(void)
{
    watchdog_start();
    snprintf(root, sizeof root, "/tmp/memq-pressure-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    pthread_mutex_lock(&log_lock);
    log_count = 0;
    pthread_mutex_unlock(&log_lock);
    tracker = new_tracker(MEMQ_RECLAIM_MANUAL, 2000000);
}

static void teardown(void)
{
    memq_tracker_free(tracker);
    tracker = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
    watchdog_stop();
}

/* Entries in a /proc/self directory (fd, task). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - (strcmp(dir, "/proc/self/fd") == 0); /* opendir's own */
}

/* Write one byte into a FIFO under the root, as a fresh writer that then
 * goes away (the way `echo > fifo` would). */
static void poke_fifo(const char *rel)
{
    char path[512];
    root_path(path, sizeof path, rel);
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "x", 1), 1);
    close(fd);
}

/* ======================================================================
 * systemd's convention: a FIFO
 * ====================================================================== */

START_TEST(test_each_write_to_the_systemd_fifo_is_one_pressure_event)
{
    make_fifo("run/pressure.fifo");
    int source = -1;
    unsigned refused = 99;
    memq_watcher *w = memq__watcher_start(tracker, root, "/run/pressure.fifo", NULL, &source,
                                          &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_SYSTEMD);
    ck_assert_uint_eq(refused, 0);
    ck_assert(!fd_readable(memq_tracker_fd(tracker)));

    /* One writer after another, each heard: the watcher holds the FIFO's
     * write side too, so a writer closing never hangs it up. */
    for (uint64_t i = 1; i <= 5; i++) {
        poke_fifo("run/pressure.fifo");
        ck_assert_msg(wait_events(tracker, i), "event %d not heard", (int)i);
        sleep_ms(20);
        ck_assert_uint_eq(pressure_events(tracker), i);
    }
    memq_stats st;
    memq_tracker_stats(tracker, &st);
    ck_assert_uint_eq(st.pressure_episodes, 1); /* the rest fell in the interval */
    /* The watcher only reports; the tracker's descriptor says "reclaim". */
    ck_assert(fd_readable(memq_tracker_fd(tracker)));
    memq__watcher_stop(w);
}
END_TEST

START_TEST(test_the_real_environment_variable_names_the_fifo)
{
    make_fifo("fifo");
    char fifo[512];
    root_path(fifo, sizeof fifo, "fifo");
    ck_assert_int_eq(setenv("MEMORY_PRESSURE_WATCH", fifo, 1), 0);
    ck_assert_int_eq(unsetenv("MEMORY_PRESSURE_WRITE"), 0);
    /* What the core does in memq_tracker_new(). */
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, "/", getenv("MEMORY_PRESSURE_WATCH"),
                                          getenv("MEMORY_PRESSURE_WRITE"), &source, &refused);
    ck_assert_int_eq(unsetenv("MEMORY_PRESSURE_WATCH"), 0);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_SYSTEMD);
    poke_fifo("fifo");
    ck_assert(wait_events(tracker, 1));
    memq__watcher_stop(w);
    ck_assert_uint_eq(pressure_events(tracker), 1);
}
END_TEST

/* ======================================================================
 * The fallback order
 * ====================================================================== */

START_TEST(test_systemd_watch_comes_before_every_other_source)
{
    all_fallbacks();
    make_fifo("fifo");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, "/fifo", NULL, &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_SYSTEMD);
    ck_assert_uint_eq(refused, 0);
    memq__watcher_stop(w);
    char buf[64];
    ck_assert_uint_eq(read_file("sys/fs/cgroup/svc.slice/relay.service/memory.pressure", buf,
                                sizeof buf), 0); /* never touched */
}
END_TEST

START_TEST(test_cgroup2_memory_pressure_comes_next_and_gets_the_trigger_with_its_nul)
{
    all_fallbacks();
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_CGROUP2);
    ck_assert_uint_eq(refused, 0);
    memq__watcher_stop(w);
    char buf[64];
    size_t n = read_file("sys/fs/cgroup/svc.slice/relay.service/memory.pressure", buf, sizeof buf);
    ck_assert_uint_eq(n, sizeof PSI_TRIGGER); /* the NUL too */
    ck_assert_int_eq(memcmp(buf, PSI_TRIGGER, sizeof PSI_TRIGGER), 0);
    ck_assert_int_eq(lines_with("watching", "cgroup v2", NULL), 1);
}
END_TEST

START_TEST(test_cgroup2_in_systemds_hybrid_layout_is_found_under_unified)
{
    write_file("proc/self/cgroup", "1:name=systemd:/x\n0::/x\n");
    write_file("sys/fs/cgroup/unified/x/memory.pressure", "");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_CGROUP2);
    memq__watcher_stop(w);
    char buf[64];
    ck_assert_uint_eq(read_file("sys/fs/cgroup/unified/x/memory.pressure", buf, sizeof buf),
                      sizeof PSI_TRIGGER);
}
END_TEST

START_TEST(test_proc_pressure_memory_when_the_cgroup_has_none)
{
    write_file("proc/self/cgroup", "0::/svc.slice\n");
    write_file("proc/pressure/memory", "");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_PSI);
    ck_assert_uint_eq(refused, 1u << MEMQ_WATCH_CGROUP2);
    ck_assert_int_eq(lines_with("cgroup v2", "refused", NULL), 1);
    memq__watcher_stop(w);
    char buf[64];
    ck_assert_uint_eq(read_file("proc/pressure/memory", buf, sizeof buf), sizeof PSI_TRIGGER);
    ck_assert_str_eq(buf, PSI_TRIGGER);
}
END_TEST

START_TEST(test_cgroup1_pressure_level_is_the_last_resort)
{
    write_file("proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/jail\n0::/\n");
    write_file("sys/fs/cgroup/memory/jail/memory.pressure_level", "");
    write_file("sys/fs/cgroup/memory/jail/cgroup.event_control", "");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_CGROUP1);
    ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_CGROUP2) | (1u << MEMQ_WATCH_PSI));
    char buf[64];
    read_file("sys/fs/cgroup/memory/jail/cgroup.event_control", buf, sizeof buf);
    int efd = -1, level_fd = -1;
    char level[16] = "";
    ck_assert_int_eq(sscanf(buf, "%d %d %15s", &efd, &level_fd, level), 3);
    ck_assert_str_eq(level, "medium");
    /* The registration names the watcher's own open descriptors. */
    ck_assert_int_ge(fcntl(efd, F_GETFD), 0);
    ck_assert_int_ge(fcntl(level_fd, F_GETFD), 0);
    ck_assert_int_eq(fcntl(efd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    memq__watcher_stop(w);
}
END_TEST

START_TEST(test_no_source_means_no_thread_and_every_refusal_logged)
{
    int tasks = count_entries("/proc/self/task");
    int source = -1;
    unsigned refused = 0;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(source, MEMQ_WATCH_NONE);
    ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_CGROUP2) | (1u << MEMQ_WATCH_PSI) |
                                   (1u << MEMQ_WATCH_CGROUP1));
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    ck_assert_int_eq(lines_with("refused", NULL), 3);
    ck_assert_int_eq(lines_with("running without a pressure watcher", NULL), 1);
}
END_TEST

START_TEST(test_a_missing_systemd_watch_is_refused_and_the_next_source_taken)
{
    all_fallbacks();
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, "/run/missing", "c29tZQ==", &source,
                                          &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_CGROUP2);
    ck_assert_uint_eq(refused, 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "/run/missing", "refused", NULL), 1);
    memq__watcher_stop(w);
}
END_TEST

START_TEST(test_a_systemd_watch_on_a_plain_file_is_not_a_psi_file)
{
    write_file("plain", "");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, "/plain", NULL, &source, &refused);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("not a PSI file", NULL), 1);
    char buf[8];
    ck_assert_uint_eq(read_file("plain", buf, sizeof buf), 0); /* nothing written */
}
END_TEST

START_TEST(test_a_relative_or_unnormalized_systemd_watch_is_refused)
{
    make_fifo("fifo");
    const char *bad[] = {"fifo", "/./fifo", "/x/../fifo", "//fifo"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int source;
        unsigned refused;
        memq_watcher *w = memq__watcher_start(tracker, root, bad[i], NULL, &source, &refused);
        ck_assert_ptr_null(w);
        ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    }
    ck_assert_int_eq(lines_with("not an absolute, normalized path", NULL), 4);
}
END_TEST

START_TEST(test_dev_null_turns_the_watcher_off)
{
    all_fallbacks();
    const char *off[] = {"/dev/null", "", "/dev//null", "/dev/./null"};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        int source = -1;
        unsigned refused = 99;
        memq_watcher *w = memq__watcher_start(tracker, root, off[i], "c29tZQ==", &source,
                                              &refused);
        ck_assert_ptr_null(w); /* and no fallback to the cgroup */
        ck_assert_int_eq(source, MEMQ_WATCH_NONE);
        ck_assert_uint_eq(refused, 0);
    }
    ck_assert_int_eq(lines_with("turned off", NULL), 4);
    char buf[8];
    ck_assert_uint_eq(read_file("sys/fs/cgroup/svc.slice/relay.service/memory.pressure", buf,
                                sizeof buf), 0);
}
END_TEST

START_TEST(test_a_malformed_base64_payload_is_refused_with_one_log_line)
{
    make_fifo("fifo");
    const char *bad[] = {"not base64!", "c29tZQ=x", "c", "c29tZQ==="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int source;
        unsigned refused;
        memq_watcher *w = memq__watcher_start(tracker, root, "/fifo", bad[i], &source, &refused);
        ck_assert_ptr_null(w);
        ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
        ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WRITE", "base64", NULL), (int)i + 1);
    }
    /* Padding, line breaks and spaces are fine, as for systemd. */
    int source;
    memq_watcher *w = memq__watcher_start(tracker, root, "/fifo", "c29t\nZQ ==", &source, NULL);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_SYSTEMD);
    memq__watcher_stop(w);
}
END_TEST

/* ======================================================================
 * Sources that refuse: EINVAL and other errors
 * ====================================================================== */

/*
 * A real EINVAL on any kernel, without privileges: /proc/self/oom_score_adj
 * stands in for the cgroup's memory.pressure, and the kernel refuses the
 * trigger text as a number.  The watcher logs one line and takes the next
 * source; the file keeps its value.
 */
START_TEST(test_einval_from_a_trigger_write_is_logged_once_and_the_next_source_tried)
{
    char before[32], after[32];
    int fd = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "note: /proc/self/oom_score_adj not writable here: skipped\n");
        return;
    }
    ssize_t n = read(fd, before, sizeof before - 1);
    close(fd);
    ck_assert_int_gt(n, 0);
    before[n] = '\0';

    write_file("proc/self/cgroup", "0::/svc\n");
    make_symlink("sys/fs/cgroup/svc/memory.pressure", "/proc/self/oom_score_adj");
    write_file("proc/pressure/memory", "");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_PSI);
    ck_assert_uint_eq(refused, 1u << MEMQ_WATCH_CGROUP2);
    ck_assert_int_eq(lines_with("cgroup v2", "trigger refused", "Invalid argument", NULL), 1);
    ck_assert_int_eq(lines_with("refused", NULL), 1);
    memq__watcher_stop(w);

    fd = open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC);
    n = read(fd, after, sizeof after - 1);
    close(fd);
    after[n] = '\0';
    ck_assert_str_eq(after, before);
}
END_TEST

START_TEST(test_a_directory_where_the_psi_file_should_be_is_refused)
{
    write_file("proc/self/cgroup", "0::/svc\n");
    make_dir("sys/fs/cgroup/svc/memory.pressure");
    make_dir("proc/pressure/memory");
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_CGROUP2) | (1u << MEMQ_WATCH_PSI) |
                                   (1u << MEMQ_WATCH_CGROUP1));
    ck_assert_int_eq(lines_with("cannot open", "Is a directory", NULL), 2);
}
END_TEST

/* True if this kernel has PSI turned on: with CONFIG_PSI_DEFAULT_DISABLED
 * and no psi=1, the file exists but reading (and writing) it fails with
 * EOPNOTSUPP. */
static bool psi_works(void)
{
    char buf[256];
    int fd = open("/proc/pressure/memory", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    return n > 0;
}

/* The real /proc/pressure/memory, given through systemd's variables a
 * trigger no kernel accepts (a stall of 0): the kernel's own EINVAL. */
START_TEST(test_this_machines_psi_file_answers_einval_to_an_invalid_trigger)
{
    if (!psi_works()) {
        fprintf(stderr, "note: no working /proc/pressure/memory here: skipped\n");
        return;
    }
    /* base64 of "some 0 2000000\0" */
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, "/", "/proc/pressure/memory",
                                          "c29tZSAwIDIwMDAwMDAA", &source, &refused);
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_ne(source, MEMQ_WATCH_SYSTEMD);
    if (access("/proc/pressure/memory", W_OK) == 0)
        ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "Invalid argument", NULL), 1);
    else
        ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "cannot open", NULL), 1);
    memq__watcher_stop(w); /* whatever this machine fell back to */
}
END_TEST

/*
 * This machine's PSI with our own trigger and a one-second window.  A
 * kernel that does not see CAP_SYS_RESOURCE accepts only windows that are
 * whole multiples of 2 s (systemd's default is 2 s for that reason), so
 * here it answers EINVAL; with the capability it accepts.  Either way the
 * watcher copes: one line and the next source, or the source in use.
 */
START_TEST(test_this_machines_psi_file_with_a_one_second_window)
{
    if (!psi_works() || access("/proc/pressure/memory", W_OK) != 0) {
        fprintf(stderr, "note: /proc/pressure/memory absent, off or not writable here: "
                        "skipped\n");
        return;
    }
    memq_tracker *t = new_tracker(MEMQ_RECLAIM_MANUAL, 1000000);
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(t, "/", "/proc/pressure/memory", NULL, &source,
                                          &refused);
    if (source == MEMQ_WATCH_SYSTEMD) {
        fprintf(stderr, "note: this kernel accepts a 1 s PSI window (CAP_SYS_RESOURCE?)\n");
        ck_assert_uint_eq(refused, 0);
    } else {
        fprintf(stderr, "note: this kernel answers EINVAL to a 1 s PSI window\n");
        ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
        ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "trigger refused",
                                    "Invalid argument", NULL), 1);
    }
    memq__watcher_stop(w);
    memq_tracker_free(t);
}
END_TEST

/* What the watcher picks on this machine, with no systemd variables. */
START_TEST(test_this_machine_has_a_source_or_says_why_not)
{
    int source = -1;
    unsigned refused = 0;
    memq_watcher *w = memq__watcher_start(tracker, "/", NULL, NULL, &source, &refused);
    fprintf(stderr, "note: this machine's watcher source %d, refused mask 0x%x\n", source,
            refused);
    print_log();
    if (w == NULL) {
        ck_assert_int_eq(source, MEMQ_WATCH_NONE);
        ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_CGROUP2) | (1u << MEMQ_WATCH_PSI) |
                                       (1u << MEMQ_WATCH_CGROUP1));
    } else {
        ck_assert_int_ge(source, MEMQ_WATCH_CGROUP2);
        ck_assert_uint_eq(refused & (1u << source), 0);
        ck_assert_uint_lt(refused, 1u << source); /* only earlier sources refused */
    }
    ck_assert_int_eq(lines_with("refused", NULL), __builtin_popcount(refused));
    memq__watcher_stop(w);
}
END_TEST

/* ======================================================================
 * systemd's convention: an AF_UNIX socket
 * ====================================================================== */

START_TEST(test_a_socket_watch_gets_the_payload_and_each_message_is_an_event)
{
    char path[512];
    root_path(path, sizeof path, "sock");
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);

    /* base64 of "some 150000 2000000\0": binary-safe, NUL included */
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, "/sock", "c29tZSAxNTAwMDAgMjAwMDAwMAA=",
                                          &source, &refused);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_SYSTEMD);
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(cfd, 0);
    char got[64];
    size_t n = 0;
    while (n < sizeof PSI_TRIGGER) {
        struct pollfd p = {.fd = cfd, .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, WAIT_MS), 1);
        ssize_t k = read(cfd, got + n, sizeof got - n);
        ck_assert_int_gt(k, 0);
        n += (size_t)k;
    }
    ck_assert_uint_eq(n, sizeof PSI_TRIGGER);
    ck_assert_int_eq(memcmp(got, PSI_TRIGGER, sizeof PSI_TRIGGER), 0);

    for (uint64_t i = 1; i <= 3; i++) {
        ck_assert_int_eq(write(cfd, "event", 5), 5);
        ck_assert(wait_events(tracker, i));
        sleep_ms(20);
        ck_assert_uint_eq(pressure_events(tracker), i);
    }
    /* The peer going away ends the watch with one line; stop still works. */
    close(cfd);
    for (int i = 0; i < WAIT_MS && lines_with("was closed", NULL) == 0; i++)
        sleep_ms(1);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "was closed", NULL), 1);
    memq__watcher_stop(w);
    close(lfd);
    ck_assert_uint_eq(pressure_events(tracker), 3);
}
END_TEST

/* ======================================================================
 * The machine's figures
 * ====================================================================== */

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

START_TEST(test_machine_figures_from_a_fake_cgroup_v2)
{
    write_file("proc/self/statm", "1000 250 30 10 0 200 0\n");
    write_file("proc/self/cgroup", "0::/a/b\n");
    write_file("sys/fs/cgroup/a/b/memory.current", "12345\n");
    write_file("sys/fs/cgroup/a/b/memory.max", "max\n");
    write_file("sys/fs/cgroup/a/b/memory.high", "5000000\n");
    write_file("sys/fs/cgroup/a/memory.max", "4000000\n");
    write_file("sys/fs/cgroup/a/memory.high", "max\n");
    memq_machine m;
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.rss, 250 * page_size());
    ck_assert_uint_eq(memq__machine_rss(root), 250 * page_size());
    ck_assert_uint_eq(m.cgroup_usage, 12345);
    ck_assert_uint_eq(m.cgroup_limit, 4000000); /* the parent's max binds */
}
END_TEST

START_TEST(test_memory_high_is_the_limit_when_it_is_the_tightest)
{
    write_file("proc/self/cgroup", "0::/a/b\n");
    write_file("sys/fs/cgroup/a/b/memory.high", "3000000\n");
    write_file("sys/fs/cgroup/a/memory.max", "4000000\n");
    memq_machine m;
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.cgroup_limit, 3000000);
    /* memq_auto_max() counts hard limits only. */
    ck_assert_uint_eq(memq__machine_cgroup_max(root), 4000000);
}
END_TEST

START_TEST(test_machine_figures_from_a_fake_cgroup_v1)
{
    write_file("proc/self/statm", "1000 7 30 10 0 200 0\n");
    write_file("proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/jail\n1:name=systemd:/\n0::/\n");
    write_file("sys/fs/cgroup/memory/jail/memory.usage_in_bytes", "777\n");
    write_file("sys/fs/cgroup/memory/jail/memory.limit_in_bytes", "1073741824\n");
    write_file("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    memq_machine m;
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.rss, 7 * page_size());
    ck_assert_uint_eq(m.cgroup_usage, 777);
    ck_assert_uint_eq(m.cgroup_limit, 1073741824);
    ck_assert_uint_eq(memq__machine_cgroup_max(root), 1073741824);
}
END_TEST

START_TEST(test_machine_figures_are_zero_where_absent_or_unlimited)
{
    memq_machine m;
    memset(&m, 0xff, sizeof m);
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.rss, 0);
    ck_assert_uint_eq(m.cgroup_usage, 0);
    ck_assert_uint_eq(m.cgroup_limit, 0);

    write_file("proc/self/statm", "garbage\n");
    write_file("proc/self/cgroup", "4:memory:/\n0::/c\n");
    write_file("sys/fs/cgroup/c/memory.max", "max\n");
    write_file("sys/fs/cgroup/c/memory.high", "max\n");
    write_file("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.rss, 0);
    ck_assert_uint_eq(m.cgroup_limit, 0);
    ck_assert_uint_eq(memq__machine_cgroup_max(root), UINT64_MAX);
    memq__machine_read(root, NULL); /* ignored */
}
END_TEST

START_TEST(test_a_cgroup_path_leaving_its_namespace_is_not_followed)
{
    write_file("proc/self/cgroup", "0::/../../outside\n");
    write_file("sys/fs/cgroup/memory.max", "1000\n");
    ck_assert_uint_eq(memq__machine_cgroup_max(root), UINT64_MAX);
}
END_TEST

START_TEST(test_machine_figures_of_this_process)
{
    memq_machine m;
    memq__machine_read("/", &m);
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    ck_assert_uint_gt(m.rss, 0);
    /* Bytes, not pages or KiB: within 4 MiB of the peak the kernel keeps
     * (its high-water mark is updated lazily, so the RSS read now can be
     * a little above it: by 16 pages once, under valgrind). */
    ck_assert_uint_le(m.rss, (size_t)ru.ru_maxrss * 1024 + 4 * 1024 * 1024);
    fprintf(stderr, "note: this process: rss %zu, cgroup usage %zu, cgroup limit %zu\n", m.rss,
            m.cgroup_usage, m.cgroup_limit);
    /* A NULL root is "/" too. */
    memq_machine again;
    memq__machine_read(NULL, &again);
    ck_assert_uint_gt(again.rss, 0);
    ck_assert_uint_gt(memq__machine_rss(NULL), 0);
    /* The hard limit, if any, bounds the limit shown (memory.high may be
     * tighter). */
    uint64_t hard = memq__machine_cgroup_max("/");
    if (hard != UINT64_MAX) {
        ck_assert_uint_gt(m.cgroup_limit, 0);
        ck_assert_uint_le(m.cgroup_limit, hard);
    }
}
END_TEST

START_TEST(test_rss_follows_memory_the_process_touches)
{
    size_t len = 32 * MIB;
    memq_machine before, after;
    memq__machine_read("/", &before);
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(p != MAP_FAILED);
    memset(p, 1, len);
    memq__machine_read("/", &after);
    munmap(p, len);
    ck_assert_uint_ge(after.rss, before.rss + len / 4 * 3);
}
END_TEST

/* ======================================================================
 * Life cycle
 * ====================================================================== */

START_TEST(test_start_and_stop_many_times_leaks_no_thread_or_descriptor)
{
    make_fifo("fifo");
    all_fallbacks();
    int fds = count_entries("/proc/self/fd");
    int tasks = count_entries("/proc/self/task");
    int rounds = getenv("MEMQ_VALGRIND") != NULL ? 40 : 200;
    for (int i = 0; i < rounds; i++) {
        int source;
        /* A FIFO, a PSI file and the v1 eventfd in turn. */
        const char *watch = i % 3 == 0 ? "/fifo" : NULL;
        if (i % 3 == 2) {
            char path[512];
            root_path(path, sizeof path, "sys/fs/cgroup/svc.slice/relay.service/memory.pressure");
            unlink(path);
            root_path(path, sizeof path, "proc/pressure/memory");
            unlink(path);
        } else if (i % 3 == 1) {
            write_file("sys/fs/cgroup/svc.slice/relay.service/memory.pressure", "");
            write_file("proc/pressure/memory", "");
        }
        memq_watcher *w = memq__watcher_start(tracker, root, watch, NULL, &source, NULL);
        ck_assert_ptr_nonnull(w);
        ck_assert_int_eq(source, i % 3 == 0   ? MEMQ_WATCH_SYSTEMD
                                 : i % 3 == 1 ? MEMQ_WATCH_CGROUP2
                                              : MEMQ_WATCH_CGROUP1);
        if (i % 3 == 0 && i % 2 == 0)
            poke_fifo("fifo");
        memq__watcher_stop(w);
    }
    ck_assert_int_eq(count_entries("/proc/self/fd"), fds);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    memq__watcher_stop(NULL);
}
END_TEST

typedef struct hammer {
    char path[512];
    atomic_bool stop;
    atomic_long writes;
} hammer;

/* Writes into the FIFO as fast as it can, through its own read-write
 * descriptor (so that no SIGPIPE comes when no watcher is reading). */
static void *hammer_fifo(void *arg)
{
    hammer *h = arg;
    int fd = open(h->path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char drain[4096];
    while (!atomic_load(&h->stop)) {
        if (write(fd, "x", 1) == 1)
            atomic_fetch_add(&h->writes, 1);
        else if (read(fd, drain, sizeof drain) < 0) /* full and nobody reading */
            sched_yield();
    }
    close(fd);
    return NULL;
}

START_TEST(test_stop_while_events_arrive)
{
    make_fifo("fifo");
    hammer *h = calloc(1, sizeof *h);
    ck_assert_ptr_nonnull(h);
    root_path(h->path, sizeof h->path, "fifo");
    int tasks = count_entries("/proc/self/task");
    pthread_t writer;
    ck_assert_int_eq(pthread_create(&writer, NULL, hammer_fifo, h), 0);
    int rounds = getenv("MEMQ_VALGRIND") != NULL ? 10 : 50;
    for (int i = 0; i < rounds; i++) {
        int source;
        memq_watcher *w = memq__watcher_start(tracker, root, "/fifo", NULL, &source, NULL);
        ck_assert_ptr_nonnull(w);
        sleep_ms(2);
        memq__watcher_stop(w);
        /* Stopped: nothing more is reported. */
        uint64_t seen = pressure_events(tracker);
        sleep_ms(2);
        ck_assert_uint_eq(pressure_events(tracker), seen);
    }
    atomic_store(&h->stop, true);
    pthread_join(writer, NULL);
    ck_assert_int_gt(atomic_load(&h->writes), 0);
    ck_assert_uint_gt(pressure_events(tracker), 0);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    free(h);
}
END_TEST

/* The one case where stop runs on the watcher thread: a wakeup callback
 * (run by memq_tracker_pressure() on that thread) that shuts down. */
static _Atomic(memq_watcher *) self_stopping;
static atomic_int self_stops;

static void stop_from_wakeup(void *ctx)
{
    (void)ctx;
    memq__watcher_stop(atomic_load(&self_stopping));
    atomic_fetch_add(&self_stops, 1);
}

START_TEST(test_stop_called_on_the_watcher_thread_does_not_wait_for_itself)
{
    make_fifo("fifo");
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    cfg.cache_max = 0;
    cfg.wakeup = stop_from_wakeup;
    cfg.log = record_log;
    memq_tracker *t;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    int tasks = count_entries("/proc/self/task");
    int fds = count_entries("/proc/self/fd");
    int source;
    atomic_store(&self_stopping, memq__watcher_start(t, root, "/fifo", NULL, &source, NULL));
    ck_assert_ptr_nonnull(atomic_load(&self_stopping));
    poke_fifo("fifo");
    for (int i = 0; i < WAIT_MS && atomic_load(&self_stops) == 0; i++)
        sleep_ms(1);
    ck_assert_int_eq(atomic_load(&self_stops), 1);
    /* The detached thread finishes by itself and closes what it held. */
    for (int i = 0; i < WAIT_MS && count_entries("/proc/self/task") != tasks; i++)
        sleep_ms(1);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    ck_assert_int_eq(count_entries("/proc/self/fd"), fds);
    /* Nobody reads the FIFO any more (a write-only open would fail with
     * ENXIO): nothing is reported. */
    char path[512];
    root_path(path, sizeof path, "fifo");
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "x", 1), 1);
    close(fd);
    sleep_ms(20);
    ck_assert_uint_eq(pressure_events(t), 1);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Pressure from the watcher racing claims (run under TSan)
 * ====================================================================== */

static bool racing_oldest(void *self, memq_time *when)
{
    (void)self;
    *when = memq_now();
    return true;
}

/* Gives nothing back: the claimers keep their memory, episodes stop as
 * unreclaimable, and no callback touches another thread's participation. */
static memq_reclaim_status racing_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops racing_ops = {racing_oldest, racing_reclaim};

typedef struct claimer {
    memq_tracker *t;
    atomic_bool *stop;
    atomic_long rounds;
} claimer;

static void *claim_loop(void *arg)
{
    claimer *c = arg;
    memq_account *a;
    memq_participation *p;
    if (memq_account_new(c->t, NULL, &a) != 0)
        return NULL;
    if (memq_participant_register(a, &racing_ops, NULL, &p) == 0) {
        while (!atomic_load(c->stop)) {
            if (memq_claim(p, 4096) == 0)
                memq_release(p, 4096);
            atomic_fetch_add(&c->rounds, 1);
            spin_turn();
        }
        memq_participation_free(p);
    }
    memq_account_unref(a);
    return NULL;
}

START_TEST(test_watcher_reports_race_claims_on_several_threads)
{
    make_fifo("fifo");
    memq_tracker *t = new_tracker(MEMQ_RECLAIM_THREAD, 2000000);
    int source;
    memq_watcher *w = memq__watcher_start(t, root, "/fifo", NULL, &source, NULL);
    ck_assert_ptr_nonnull(w);
    atomic_bool stop = false;
    claimer c[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        c[i].t = t;
        c[i].stop = &stop;
        atomic_init(&c[i].rounds, 0);
        ck_assert_int_eq(pthread_create(&th[i], NULL, claim_loop, &c[i]), 0);
    }
    for (uint64_t i = 1; i <= 10; i++) {
        poke_fifo("fifo");
        ck_assert(wait_events(t, i));
    }
    /* Every claimer has run (valgrind may starve one for a while). */
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < WAIT_MS && atomic_load(&c[i].rounds) == 0; k++)
            sleep_ms(1);
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_gt(atomic_load(&c[i].rounds), 0);
    }
    memq__watcher_stop(w);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.pressure_events, 10);
    ck_assert_uint_ge(st.pressure_episodes, 1);
    ck_assert_uint_eq(st.used, 0);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * The readers: what they do with files that are odd, broken or too long
 * ====================================================================== */

/* "/" followed by n - 1 copies of c: a cgroup path of n bytes. */
static void long_component(char *buf, size_t n, char c)
{
    buf[0] = '/';
    memset(buf + 1, c, n - 1);
    buf[n] = '\0';
}

START_TEST(test_a_figure_file_that_cannot_be_read_counts_as_absent)
{
    /* A directory opens, and reading it fails (EISDIR). */
    make_dir("proc/self/statm");
    write_file("proc/self/cgroup", "0::/a\n");
    make_dir("sys/fs/cgroup/a/memory.current");
    write_file("sys/fs/cgroup/a/memory.max", "5000\n");
    memq_machine m;
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.rss, 0);
    ck_assert_uint_eq(m.cgroup_usage, 0);
    ck_assert_uint_eq(m.cgroup_limit, 5000);
    ck_assert_uint_eq(memq__machine_rss(root), 0);
}
END_TEST

START_TEST(test_number_files_may_start_with_blanks_and_must_hold_a_number)
{
    write_file("proc/self/cgroup", "0::/a/b\n");
    write_file("sys/fs/cgroup/a/b/memory.current", "  777\n");
    write_file("sys/fs/cgroup/a/b/memory.max", "lots\n");                    /* not a number */
    write_file("sys/fs/cgroup/a/b/memory.high", "99999999999999999999999\n"); /* overflows */
    write_file("sys/fs/cgroup/a/memory.max", "\t5000\n");
    memq_machine m;
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.cgroup_usage, 777);
    ck_assert_uint_eq(m.cgroup_limit, 5000);
    ck_assert_uint_eq(memq__machine_cgroup_max(root), 5000);
}
END_TEST

START_TEST(test_a_usage_file_saying_max_gives_no_usage)
{
    write_file("proc/self/cgroup", "0::/a\n");
    write_file("sys/fs/cgroup/a/memory.current", "max\n");
    memq_machine m;
    memq__machine_read(root, &m);
    ck_assert_uint_eq(m.cgroup_usage, 0);
}
END_TEST

/* Each statm below is unusable in its own way: RSS is 0, never garbage. */
START_TEST(test_a_malformed_or_overflowing_statm_gives_no_rss)
{
    const char *bad[] = {
        "abc 7\n",                          /* no first number */
        "1000\n",                           /* no second */
        "1000 x\n",                         /* not a number */
        "99999999999999999999999 7\n",      /* the first overflows */
        "1000 99999999999999999999999\n",   /* the second overflows */
        "1000 18446744073709551615 0\n",    /* pages that overflow as bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file("proc/self/statm", bad[i]);
        ck_assert_msg(memq__machine_rss(root) == 0, "statm \"%s\" gave an RSS", bad[i]);
    }
    write_file("proc/self/statm", "1000 7 0\n");
    ck_assert_uint_eq(memq__machine_rss(root), 7 * page_size());
}
END_TEST

START_TEST(test_memtotal_is_found_on_any_line_and_a_malformed_one_gives_nothing)
{
    ck_assert_uint_eq(memq__machine_ram(root), 0); /* no meminfo */
    write_file("proc/meminfo", "MemFree:  100 kB\nMemTotal:\t 2048 kB\nBuffers: 1 kB\n");
    ck_assert_uint_eq(memq__machine_ram(root), 2048 * 1024);
    write_file("proc/meminfo", "MemFree:  100 kB\nBuffers: 1 kB\n");
    ck_assert_uint_eq(memq__machine_ram(root), 0);
    write_file("proc/meminfo", "MemFree:  100 kB\nBuffers: 1 kB"); /* no final newline */
    ck_assert_uint_eq(memq__machine_ram(root), 0);
    write_file("proc/meminfo", "MemTotal: lots\n");
    ck_assert_uint_eq(memq__machine_ram(root), 0);
    /* Too many KiB for 64 bits of bytes: as good as unlimited. */
    write_file("proc/meminfo", "MemTotal: 99999999999999999 kB\n");
    ck_assert_uint_eq(memq__machine_ram(root), UINT64_MAX);
}
END_TEST

START_TEST(test_cgroup_lines_that_are_malformed_or_relative_are_skipped)
{
    write_file("proc/self/cgroup", "garbage\n7:x\n0::relative/path\n0::/ok\n");
    write_file("sys/fs/cgroup/relative/path/memory.max", "1000\n");
    write_file("sys/fs/cgroup/ok/memory.max", "6000\n");
    ck_assert_uint_eq(memq__machine_cgroup_max(root), 6000);
}
END_TEST

/* /proc/self/cgroup longer than the reader's buffer: the line it cuts in
 * two is not read as a shorter path. */
START_TEST(test_a_cgroup_line_cut_off_by_the_buffer_is_ignored)
{
    static char text[4200];
    size_t head = 4085; /* the v2 line starts 10 bytes before the cut */
    memcpy(text, "5:cpu:/", 7);
    memset(text + 7, 'x', head - 8);
    text[head - 1] = '\n';
    snprintf(text + head, sizeof text - head, "0::/svc/lengthy/path\n");
    write_file("proc/self/cgroup", text);
    write_file("sys/fs/cgroup/svc/l/memory.max", "1000\n"); /* what "0::/svc/l" would read */
    ck_assert_uint_eq(memq__machine_cgroup_max(root), UINT64_MAX);
}
END_TEST

/* A root (or a cgroup path) that leaves no room in PATH_MAX: every file
 * under it counts as absent, and the watcher says "path too long". */
START_TEST(test_a_root_too_long_for_any_path_reads_nothing_and_watches_nothing)
{
    static char longroot[PATH_MAX + 100];
    snprintf(longroot, sizeof longroot, "%s", root);
    size_t n = strlen(longroot);
    long_component(longroot + n, sizeof longroot - n - 1, 'r');
    memq_machine m;
    memset(&m, 0xff, sizeof m);
    memq__machine_read(longroot, &m);
    ck_assert_uint_eq(m.rss, 0);
    ck_assert_uint_eq(m.cgroup_usage, 0);
    ck_assert_uint_eq(m.cgroup_limit, 0);
    ck_assert_uint_eq(memq__machine_ram(longroot), 0);
    ck_assert_uint_eq(memq__machine_cgroup_max(longroot), UINT64_MAX);

    /* Short of PATH_MAX itself, but too long once a file name is added. */
    longroot[PATH_MAX - 8] = '\0';
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, longroot, "/run/pressure.fifo", NULL, &source,
                                          &refused);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_SYSTEMD) | (1u << MEMQ_WATCH_CGROUP2) |
                                   (1u << MEMQ_WATCH_PSI) | (1u << MEMQ_WATCH_CGROUP1));
    /* The reason comes before the path, which the line's limit cuts. */
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH refused: path too long", NULL), 1);
    ck_assert_int_eq(lines_with("PSI refused: path too long", NULL), 1);
}
END_TEST

START_TEST(test_a_cgroup_path_too_long_for_its_files_is_refused_as_too_long)
{
    static char text[PATH_MAX + 16];
    char dir[PATH_MAX];
    long_component(dir, PATH_MAX - 40, 'v'); /* fits the cgroup file, not a path */
    snprintf(text, sizeof text, "0::%s\n", dir);
    write_file("proc/self/cgroup", text);
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_CGROUP2), 1u << MEMQ_WATCH_CGROUP2);
    ck_assert_int_eq(lines_with("cgroup v2 memory.pressure refused: path too long", root, NULL), 1);
    ck_assert_uint_eq(memq__machine_cgroup_max(root), UINT64_MAX);

    snprintf(text, sizeof text, "4:memory:%s\n", dir);
    write_file("proc/self/cgroup", text);
    w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_CGROUP1), 1u << MEMQ_WATCH_CGROUP1);
    ck_assert_int_eq(lines_with("cgroup v1 memory.pressure_level refused: path too long", root, NULL),
                     1);
}
END_TEST

/* ======================================================================
 * The watcher: more sources that refuse
 * ====================================================================== */

/* The level of the first log line containing word, or -1. */
static int level_of(const char *word)
{
    int level = -1;
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < log_count && level < 0; i++)
        if (strstr(log_lines[i], word) != NULL)
            level = log_levels[i];
    pthread_mutex_unlock(&log_lock);
    return level;
}

START_TEST(test_a_watcher_started_without_a_tracker_watches_nothing)
{
    all_fallbacks();
    int source = -1;
    unsigned refused = 99;
    ck_assert_ptr_null(memq__watcher_start(NULL, root, NULL, NULL, &source, &refused));
    ck_assert_int_eq(source, MEMQ_WATCH_NONE);
    ck_assert_uint_eq(refused, 0);
    ck_assert_ptr_null(memq__watcher_start(NULL, root, NULL, NULL, NULL, NULL));
}
END_TEST

START_TEST(test_without_source_and_refused_pointers_the_watcher_still_starts)
{
    all_fallbacks();
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, NULL, NULL);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(lines_with("watching", "cgroup v2", NULL), 1);
    memq__watcher_stop(w);
}
END_TEST

START_TEST(test_a_tracker_without_a_log_callback_still_learns_what_was_refused)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    int source = -1;
    unsigned refused = 0;
    ck_assert_ptr_null(memq__watcher_start(t, root, "/run/missing", NULL, &source, &refused));
    ck_assert_int_eq(source, MEMQ_WATCH_NONE);
    ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_SYSTEMD) | (1u << MEMQ_WATCH_CGROUP2) |
                                   (1u << MEMQ_WATCH_PSI) | (1u << MEMQ_WATCH_CGROUP1));
    ck_assert_int_eq(log_count, 0); /* the fixture's tracker logged nothing either */
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_systemd_watch_on_a_directory_is_refused)
{
    make_dir("run/pressure");
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/run/pressure", NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "not a PSI file, FIFO or socket",
                                "Is a directory", NULL), 1);
    ck_assert_int_eq(level_of("Is a directory"), MEMQ_LOG_WARN);
}
END_TEST

/* Absent (ENOENT) or under something that is not a directory (ENOTDIR):
 * the common case on many machines, logged at INFO, not WARN. */
START_TEST(test_a_systemd_watch_below_a_plain_file_is_absent_and_logged_at_info)
{
    write_file("plain", "");
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/plain/pressure", NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "cannot find it", "Not a directory", NULL),
                     1);
    ck_assert_int_eq(level_of("Not a directory"), MEMQ_LOG_INFO);
}
END_TEST

/* A block device is neither a PSI file, a FIFO nor a socket. */
START_TEST(test_a_systemd_watch_on_a_block_device_is_refused)
{
    const char *found = NULL;
    const char *candidates[] = {"/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/ram0"};
    struct stat st;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0] && found == NULL; i++)
        if (stat(candidates[i], &st) == 0 && S_ISBLK(st.st_mode))
            found = candidates[i];
    if (found == NULL) {
        fprintf(stderr, "note: no block device found in /dev: skipped\n");
        return;
    }
    make_symlink("run/blk", found);
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/run/blk", NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "not a PSI file, FIFO or socket", NULL),
                     1);
}
END_TEST

/* A character device is watched as a FIFO is, payload included: one that
 * refuses the payload (/dev/full) is refused with one line. */
START_TEST(test_a_character_device_refusing_the_payload_is_refused)
{
    make_symlink("run/full", "/dev/full");
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/run/full", "c29tZQ==", NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("cannot write $MEMORY_PRESSURE_WRITE", "No space left", NULL), 1);
}
END_TEST

/* A device node with no driver behind it: open fails (ENXIO, or EPERM
 * where the device cgroup forbids it).  Needs CAP_MKNOD. */
START_TEST(test_a_character_device_that_cannot_be_opened_is_refused)
{
    char path[512];
    make_parents("run/nodev");
    root_path(path, sizeof path, "run/nodev");
    if (mknod(path, S_IFCHR | 0600, makedev(240, 17)) != 0) {
        fprintf(stderr, "note: mknod refused (%s): skipped\n", strerror(errno));
        return;
    }
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        fprintf(stderr, "note: char device 240:17 has a driver here: skipped\n");
        return;
    }
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/run/nodev", NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "cannot open", NULL), 1);
}
END_TEST

/* A watched device that reports an error without data (an unattached
 * /dev/net/tun answers POLLERR) ends the watch with one line. */
START_TEST(test_a_watched_device_reporting_an_error_ends_the_watch)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "note: /dev/net/tun cannot be opened here (%s): skipped\n",
                strerror(errno));
        return;
    }
    close(fd);
    make_symlink("run/tun", "/dev/net/tun");
    int tasks = count_entries("/proc/self/task");
    int source = -1;
    memq_watcher *w = memq__watcher_start(tracker, root, "/run/tun", NULL, &source, NULL);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_SYSTEMD);
    for (int i = 0; i < WAIT_MS && lines_with("no longer watching", NULL) == 0; i++)
        sleep_ms(1);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "/run/tun", "no longer watching", NULL),
                     1);
    for (int i = 0; i < WAIT_MS && count_entries("/proc/self/task") != tasks; i++)
        sleep_ms(1);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    memq__watcher_stop(w);
    ck_assert_uint_eq(pressure_events(tracker), 0); /* an error is not pressure */
}
END_TEST

/* A payload larger than any PSI trigger is refused rather than allocated. */
START_TEST(test_a_payload_longer_than_4_kib_is_refused)
{
    make_fifo("fifo");
    static char payload[5600];
    memset(payload, 'A', 5464); /* 4098 bytes once decoded */
    payload[5464] = '\0';
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/fifo", payload, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WRITE", "too long", NULL), 1);
}
END_TEST

START_TEST(test_a_cgroup1_without_memory_pressure_level_is_refused)
{
    write_file("proc/self/cgroup", "4:memory:/jail\n");
    write_file("sys/fs/cgroup/memory/jail/cgroup.event_control", "");
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, NULL, NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_CGROUP1), 1u << MEMQ_WATCH_CGROUP1);
    ck_assert_int_eq(lines_with("cgroup v1", "memory.pressure_level", "cannot open", NULL), 1);
}
END_TEST

START_TEST(test_a_cgroup1_without_event_control_is_refused_and_closes_what_it_opened)
{
    write_file("proc/self/cgroup", "4:memory:/jail\n");
    write_file("sys/fs/cgroup/memory/jail/memory.pressure_level", "");
    int fds = count_entries("/proc/self/fd");
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, NULL, NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_CGROUP1), 1u << MEMQ_WATCH_CGROUP1);
    ck_assert_int_eq(lines_with("cgroup v1", "cannot open cgroup.event_control", NULL), 1);
    ck_assert_int_eq(count_entries("/proc/self/fd"), fds);
}
END_TEST

/* The registration is written to cgroup.event_control; a write that fails
 * (here /dev/full) is a refusal. */
START_TEST(test_a_cgroup1_refusing_the_registration_is_refused)
{
    write_file("proc/self/cgroup", "4:memory:/jail\n");
    write_file("sys/fs/cgroup/memory/jail/memory.pressure_level", "");
    make_symlink("sys/fs/cgroup/memory/jail/cgroup.event_control", "/dev/full");
    int fds = count_entries("/proc/self/fd");
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, NULL, NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_CGROUP1), 1u << MEMQ_WATCH_CGROUP1);
    ck_assert_int_eq(lines_with("cgroup v1", "registration refused", "No space left", NULL), 1);
    ck_assert_int_eq(count_entries("/proc/self/fd"), fds);
}
END_TEST

/* A trigger that finds no room (a FIFO standing for memory.pressure,
 * already full) waits up to a second for it, then is refused. */
START_TEST(test_a_trigger_write_that_finds_no_room_for_a_second_is_refused)
{
    write_file("proc/self/cgroup", "0::/svc\n");
    make_fifo("sys/fs/cgroup/svc/memory.pressure");
    write_file("proc/pressure/memory", "");
    char path[512];
    root_path(path, sizeof path, "sys/fs/cgroup/svc/memory.pressure");
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    static char block[4096];
    while (write(fd, block, sizeof block) > 0) {
    }
    while (write(fd, block, 1) > 0) { /* to the last byte */
    }
    ck_assert_int_eq(errno, EAGAIN);
    uint64_t start = real_ns();
    int source;
    unsigned refused;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    uint64_t waited = real_ns() - start;
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(source, MEMQ_WATCH_PSI);
    ck_assert_uint_eq(refused, 1u << MEMQ_WATCH_CGROUP2);
    ck_assert_int_eq(lines_with("cgroup v2", "trigger refused", "timed out", NULL), 1);
    ck_assert_uint_ge(waited, 900 * 1000 * 1000ull); /* it did wait, about a second */
    memq__watcher_stop(w);
    close(fd);
}
END_TEST

/* ======================================================================
 * The watcher: sockets that refuse or go away
 * ====================================================================== */

/* A listening AF_UNIX socket at rel under the root; its descriptor. */
static int listen_at(const char *rel)
{
    char path[512];
    root_path(path, sizeof path, rel);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);
    return lfd;
}

/* Read exactly n bytes from fd (within WAIT_MS each). */
static void read_exactly(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, WAIT_MS), 1);
        ssize_t k = read(fd, buf + got, n - got);
        ck_assert_int_gt(k, 0);
        got += (size_t)k;
    }
}

/* "++++////" holds the two digits beyond letters and numbers. */
START_TEST(test_a_payload_is_decoded_with_every_base64_digit)
{
    int lfd = listen_at("sock");
    memq_watcher *w = memq__watcher_start(tracker, root, "/sock", "++++////", NULL, NULL);
    ck_assert_ptr_nonnull(w);
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(cfd, 0);
    unsigned char got[6];
    read_exactly(cfd, got, sizeof got);
    const unsigned char want[6] = {0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff};
    ck_assert_int_eq(memcmp(got, want, sizeof want), 0);
    memq__watcher_stop(w);
    close(cfd);
    close(lfd);
}
END_TEST

/* sun_path holds 108 bytes: a longer path (here through a symlink) is
 * refused before any socket is made. */
START_TEST(test_a_socket_watch_with_a_path_too_long_for_a_socket_is_refused)
{
    int lfd = listen_at("sock");
    char sock[512], rel[256];
    root_path(sock, sizeof sock, "sock");
    snprintf(rel, sizeof rel, "run/%0120d", 0);
    make_symlink(rel, sock);
    char watch[sizeof rel + 1];
    snprintf(watch, sizeof watch, "/%s", rel);
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, watch, NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("socket path too long", NULL), 1);
    close(lfd);
}
END_TEST

START_TEST(test_a_socket_nobody_listens_on_is_refused)
{
    close(listen_at("sock")); /* the file stays, the listener is gone */
    unsigned refused;
    ck_assert_ptr_null(memq__watcher_start(tracker, root, "/sock", NULL, NULL, &refused));
    ck_assert_uint_eq(refused & (1u << MEMQ_WATCH_SYSTEMD), 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "cannot connect", "refused", NULL), 1);
}
END_TEST

/* A peer that closes without reading what the watcher sent resets the
 * connection: the watcher says so in one line and stops watching. */
START_TEST(test_a_socket_peer_resetting_the_connection_ends_the_watch)
{
    int lfd = listen_at("sock");
    int tasks = count_entries("/proc/self/task");
    memq_watcher *w = memq__watcher_start(tracker, root, "/sock", "c29tZQ==", NULL, NULL);
    ck_assert_ptr_nonnull(w);
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(cfd, 0);
    struct pollfd p = {.fd = cfd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, WAIT_MS), 1); /* the payload is there, unread */
    close(cfd);
    for (int i = 0; i < WAIT_MS && lines_with("reset", NULL) == 0; i++)
        sleep_ms(1);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "Connection reset by peer",
                                "no longer watching", NULL), 1);
    /* Its thread is gone; stop still cleans up. */
    for (int i = 0; i < WAIT_MS && count_entries("/proc/self/task") != tasks; i++)
        sleep_ms(1);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    memq__watcher_stop(w);
    ck_assert_uint_eq(pressure_events(tracker), 0);
    close(lfd);
}
END_TEST

/* ======================================================================
 * The watcher: descriptors, threads and trackers running out
 * ====================================================================== */

START_TEST(test_a_source_that_opens_but_whose_thread_cannot_start_is_refused)
{
    make_fifo("fifo");
    int fds = count_entries("/proc/self/fd");
    int tasks = count_entries("/proc/self/task");
    thread_squeeze ts;
    threads_forbidden(&ts);
    int source = -1;
    unsigned refused = 0;
    memq_watcher *w = memq__watcher_start(tracker, root, "/fifo", NULL, &source, &refused);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(source, MEMQ_WATCH_NONE);
    ck_assert_uint_eq(refused, 1u << MEMQ_WATCH_SYSTEMD); /* no fallback after it */
    ck_assert_int_eq(lines_with("opened but the watcher cannot start",
                                "running without a pressure watcher", NULL), 1);
    /* The same for cgroup v1, which holds two descriptors. */
    write_file("proc/self/cgroup", "4:memory:/jail\n");
    write_file("sys/fs/cgroup/memory/jail/memory.pressure_level", "");
    write_file("sys/fs/cgroup/memory/jail/cgroup.event_control", "");
    w = memq__watcher_start(tracker, root, NULL, NULL, &source, &refused);
    threads_allowed(&ts);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused, (1u << MEMQ_WATCH_CGROUP2) | (1u << MEMQ_WATCH_PSI) |
                                   (1u << MEMQ_WATCH_CGROUP1));
    ck_assert_int_eq(lines_with("cgroup v1", "opened but the watcher cannot start", NULL), 1);
    ck_assert_int_eq(count_entries("/proc/self/fd"), fds);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
}
END_TEST

START_TEST(test_a_source_that_opens_with_no_descriptor_left_for_its_thread_is_refused)
{
    make_fifo("fifo");
    int source = -1;
    unsigned refused = 0;
    fd_squeeze fs;
    fds_squeeze(&fs, 1); /* the FIFO takes it; the stop eventfd finds none */
    memq_watcher *w = memq__watcher_start(tracker, root, "/fifo", NULL, &source, &refused);
    fds_unsqueeze(&fs);
    ck_assert_ptr_null(w);
    ck_assert_uint_eq(refused, 1u << MEMQ_WATCH_SYSTEMD);
    ck_assert_int_eq(lines_with("cannot start", "Too many open files", NULL), 1);
}
END_TEST

START_TEST(test_sources_with_no_descriptor_to_spare_are_refused)
{
    int lfd = listen_at("sock");
    fd_squeeze fs;
    fds_squeeze(&fs, 0);
    unsigned refused = 0;
    memq_watcher *w = memq__watcher_start(tracker, root, "/sock", NULL, NULL, &refused);
    fds_unsqueeze(&fs);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(lines_with("MEMORY_PRESSURE_WATCH", "cannot create a socket",
                                "Too many open files", NULL), 1);

    /* cgroup v1: the level file opens, its eventfd does not. */
    write_file("proc/self/cgroup", "4:memory:/jail\n");
    write_file("sys/fs/cgroup/memory/jail/memory.pressure_level", "");
    write_file("sys/fs/cgroup/memory/jail/cgroup.event_control", "");
    fds_squeeze(&fs, 1); /* the cgroup file is read and closed, then the level file opens */
    w = memq__watcher_start(tracker, root, NULL, NULL, NULL, &refused);
    fds_unsqueeze(&fs);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(lines_with("cgroup v1", "cannot create an eventfd", NULL), 1);
    close(lfd);
}
END_TEST

/* A watcher started on a tracker that is then shut down (its memory kept
 * by a holder) stops at the first event it cannot report. */
START_TEST(test_a_watcher_whose_tracker_shut_down_stops_at_its_next_event)
{
    make_fifo("fifo");
    memq_tracker *t = new_tracker(MEMQ_RECLAIM_MANUAL, 2000000);
    memq__tracker_hold(t);
    int tasks = count_entries("/proc/self/task");
    memq_watcher *w = memq__watcher_start(t, root, "/fifo", NULL, NULL, NULL);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks + 1);
    memq_tracker_free(t); /* not through the tracker: w is the test's */
    poke_fifo("fifo");
    for (int i = 0; i < WAIT_MS && count_entries("/proc/self/task") != tasks; i++)
        sleep_ms(1);
    ck_assert_int_eq(count_entries("/proc/self/task"), tasks);
    ck_assert_int_eq(memq_tracker_pressure(t), MEMQ_ESHUTDOWN);
    memq__watcher_stop(w);
    memq__tracker_drop(t);
}
END_TEST

/* The real thing: a PSI file of a cgroup that is removed while watched
 * reports an error, and the watcher stops with one line.  Needs a
 * writable cgroup v2 hierarchy (root, usually): skipped otherwise. */
START_TEST(test_a_cgroup_removed_while_watched_ends_the_watch_with_one_line)
{
    const char *bases[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
    const char *base = NULL;
    char cg[256], probe[300];
    for (size_t i = 0; i < 2 && base == NULL; i++) {
        snprintf(probe, sizeof probe, "%s/cgroup.controllers", bases[i]);
        snprintf(cg, sizeof cg, "%s/memq-check-%d", bases[i], (int)getpid());
        if (access(probe, F_OK) == 0 && mkdir(cg, 0755) == 0)
            base = bases[i];
    }
    if (base == NULL) {
        fprintf(stderr, "note: no writable cgroup v2 hierarchy here: skipped\n");
        return;
    }
    char text[128];
    snprintf(text, sizeof text, "0::/memq-check-%d\n", (int)getpid());
    write_file("proc/self/cgroup", text);
    make_symlink("sys/fs/cgroup", base);
    int source = -1;
    memq_watcher *w = memq__watcher_start(tracker, root, NULL, NULL, &source, NULL);
    if (w == NULL) {
        rmdir(cg);
        print_log();
        fprintf(stderr, "note: this cgroup's memory.pressure refused a trigger: skipped\n");
        return;
    }
    ck_assert_int_eq(source, MEMQ_WATCH_CGROUP2);
    ck_assert_int_eq(rmdir(cg), 0);
    for (int i = 0; i < WAIT_MS && lines_with("no longer watching", NULL) == 0; i++)
        sleep_ms(1);
    ck_assert_int_eq(lines_with("cgroup v2", "was closed or removed", "no longer watching", NULL),
                     1);
    memq__watcher_stop(w);
    ck_assert_uint_eq(pressure_events(tracker), 0); /* an error is not pressure */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pressure");
    TCase *tc = test_case("systemd_fifo");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_each_write_to_the_systemd_fifo_is_one_pressure_event);
    tcase_add_test(tc, test_the_real_environment_variable_names_the_fifo);
    suite_add_tcase(s, tc);

    tc = test_case("fallback_order");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_systemd_watch_comes_before_every_other_source);
    tcase_add_test(tc, test_cgroup2_memory_pressure_comes_next_and_gets_the_trigger_with_its_nul);
    tcase_add_test(tc, test_cgroup2_in_systemds_hybrid_layout_is_found_under_unified);
    tcase_add_test(tc, test_proc_pressure_memory_when_the_cgroup_has_none);
    tcase_add_test(tc, test_cgroup1_pressure_level_is_the_last_resort);
    tcase_add_test(tc, test_no_source_means_no_thread_and_every_refusal_logged);
    tcase_add_test(tc, test_a_missing_systemd_watch_is_refused_and_the_next_source_taken);
    tcase_add_test(tc, test_a_systemd_watch_on_a_plain_file_is_not_a_psi_file);
    tcase_add_test(tc, test_a_relative_or_unnormalized_systemd_watch_is_refused);
    tcase_add_test(tc, test_dev_null_turns_the_watcher_off);
    tcase_add_test(tc, test_a_malformed_base64_payload_is_refused_with_one_log_line);
    suite_add_tcase(s, tc);

    tc = test_case("refusals");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_einval_from_a_trigger_write_is_logged_once_and_the_next_source_tried);
    tcase_add_test(tc, test_a_directory_where_the_psi_file_should_be_is_refused);
    tcase_add_test(tc, test_this_machines_psi_file_answers_einval_to_an_invalid_trigger);
    tcase_add_test(tc, test_this_machines_psi_file_with_a_one_second_window);
    tcase_add_test(tc, test_this_machine_has_a_source_or_says_why_not);
    suite_add_tcase(s, tc);

    tc = test_case("socket");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_socket_watch_gets_the_payload_and_each_message_is_an_event);
    suite_add_tcase(s, tc);

    tc = test_case("machine");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_machine_figures_from_a_fake_cgroup_v2);
    tcase_add_test(tc, test_memory_high_is_the_limit_when_it_is_the_tightest);
    tcase_add_test(tc, test_machine_figures_from_a_fake_cgroup_v1);
    tcase_add_test(tc, test_machine_figures_are_zero_where_absent_or_unlimited);
    tcase_add_test(tc, test_a_cgroup_path_leaving_its_namespace_is_not_followed);
    tcase_add_test(tc, test_machine_figures_of_this_process);
    tcase_add_test(tc, test_rss_follows_memory_the_process_touches);
    suite_add_tcase(s, tc);

    tc = test_case("life_cycle");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_start_and_stop_many_times_leaks_no_thread_or_descriptor);
    tcase_add_test(tc, test_stop_while_events_arrive);
    tcase_add_test(tc, test_stop_called_on_the_watcher_thread_does_not_wait_for_itself);
    tcase_add_test(tc, test_watcher_reports_race_claims_on_several_threads);
    suite_add_tcase(s, tc);

    tc = test_case("odd_files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_figure_file_that_cannot_be_read_counts_as_absent);
    tcase_add_test(tc, test_number_files_may_start_with_blanks_and_must_hold_a_number);
    tcase_add_test(tc, test_a_usage_file_saying_max_gives_no_usage);
    tcase_add_test(tc, test_a_malformed_or_overflowing_statm_gives_no_rss);
    tcase_add_test(tc, test_memtotal_is_found_on_any_line_and_a_malformed_one_gives_nothing);
    tcase_add_test(tc, test_cgroup_lines_that_are_malformed_or_relative_are_skipped);
    tcase_add_test(tc, test_a_cgroup_line_cut_off_by_the_buffer_is_ignored);
    tcase_add_test(tc, test_a_root_too_long_for_any_path_reads_nothing_and_watches_nothing);
    tcase_add_test(tc, test_a_cgroup_path_too_long_for_its_files_is_refused_as_too_long);
    suite_add_tcase(s, tc);

    tc = test_case("more_refusals");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_watcher_started_without_a_tracker_watches_nothing);
    tcase_add_test(tc, test_without_source_and_refused_pointers_the_watcher_still_starts);
    tcase_add_test(tc, test_a_tracker_without_a_log_callback_still_learns_what_was_refused);
    tcase_add_test(tc, test_a_systemd_watch_on_a_directory_is_refused);
    tcase_add_test(tc, test_a_systemd_watch_below_a_plain_file_is_absent_and_logged_at_info);
    tcase_add_test(tc, test_a_systemd_watch_on_a_block_device_is_refused);
    tcase_add_test(tc, test_a_character_device_refusing_the_payload_is_refused);
    tcase_add_test(tc, test_a_character_device_that_cannot_be_opened_is_refused);
    tcase_add_test(tc, test_a_watched_device_reporting_an_error_ends_the_watch);
    tcase_add_test(tc, test_a_payload_longer_than_4_kib_is_refused);
    tcase_add_test(tc, test_a_cgroup1_without_memory_pressure_level_is_refused);
    tcase_add_test(tc, test_a_cgroup1_without_event_control_is_refused_and_closes_what_it_opened);
    tcase_add_test(tc, test_a_cgroup1_refusing_the_registration_is_refused);
    tcase_add_test(tc, test_a_trigger_write_that_finds_no_room_for_a_second_is_refused);
    suite_add_tcase(s, tc);

    tc = test_case("more_sockets");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_payload_is_decoded_with_every_base64_digit);
    tcase_add_test(tc, test_a_socket_watch_with_a_path_too_long_for_a_socket_is_refused);
    tcase_add_test(tc, test_a_socket_nobody_listens_on_is_refused);
    tcase_add_test(tc, test_a_socket_peer_resetting_the_connection_ends_the_watch);
    suite_add_tcase(s, tc);

    tc = test_case("running_out");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_source_that_opens_but_whose_thread_cannot_start_is_refused);
    tcase_add_test(tc, test_a_source_that_opens_with_no_descriptor_left_for_its_thread_is_refused);
    tcase_add_test(tc, test_sources_with_no_descriptor_to_spare_are_refused);
    tcase_add_test(tc, test_a_watcher_whose_tracker_shut_down_stops_at_its_next_event);
    tcase_add_test(tc, test_a_cgroup_removed_while_watched_ends_the_watch_with_one_line);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
