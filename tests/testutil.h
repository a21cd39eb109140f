/*
 * testutil.h - helpers shared by the Check suites: a fake clock, a fake
 * participant whose answers the test chooses, and a "world" (one tracker
 * in manual mode with exact accounting) that records every reclaim call in
 * order and tears everything down at the end of a test.
 *
 * Everything here is static inline so that each check_*.c program stays
 * one translation unit.  Callbacks never call ck_assert (a failure would
 * unwind through library code); they record what happened and the test
 * asserts afterwards.
 */
#ifndef MEMQ_TESTUTIL_H
#define MEMQ_TESTUTIL_H

#include <check.h>
#include <memquota.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ----------------------------------------------------------------------
 * Small utilities
 * ---------------------------------------------------------------------- */

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)
#define MS ((memq_time)1000000)      /* one millisecond in memq_time */
#define SECOND ((memq_time)1000000000)

/* A test that deadlocks (a callback invoked under an internal lock) is
 * stopped by SIGALRM instead of hanging the suite; Check's own timeout does
 * not apply when CK_FORK=no.  The handler is ours: Check's SIGALRM handler
 * kills the process group of the test's child (killpg(), SIGKILL), which
 * with CK_FORK=no is no child's but the caller's own, so a slow test under
 * memcheck killed `make check-valgrind` and the CI script with it.  Ours
 * says so and exits 124, as timeout(1) does.  Ten times longer under
 * valgrind (MEMQ_VALGRIND set), whose threads run one at a time. */
#define WATCHDOG_SECONDS 60

/* The test running now, for the watchdog to name: Check's START_TEST,
 * wrapped so that the test's function records its name first. */
static const char *volatile watchdog_test = "(outside any test)";
#undef START_TEST
#define START_TEST(name)                                                     \
    static void name##_body(int _i);                                         \
    static void name##_fn(int _i)                                            \
    {                                                                        \
        watchdog_test = #name;                                               \
        name##_body(_i);                                                     \
    }                                                                        \
    static const TTest name##_ttest = {#name, name##_fn, __FILE__, __LINE__}; \
    static const TTest *name = &name##_ttest;                                \
    static void name##_body(int _i CK_ATTRIBUTE_UNUSED)

static inline void watchdog_fired(int sig)
{
    (void)sig;
    static const char pre[] = "watchdog: ";
    static const char post[] = " ran past its time limit (a deadlock?)\n";
    const char *name = watchdog_test;
    ssize_t r = write(STDERR_FILENO, pre, sizeof pre - 1);
    r = write(STDERR_FILENO, name, strlen(name));
    r = write(STDERR_FILENO, post, sizeof post - 1);
    (void)r;
    _exit(124);
}
static inline void watchdog_start(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watchdog_fired;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(getenv("MEMQ_VALGRIND") != NULL ? 10 * WATCHDOG_SECONDS : WATCHDOG_SECONDS);
}
static inline void watchdog_stop(void) { alarm(0); }

/* In a loop that spins against other threads: under valgrind (MEMQ_VALGRIND
 * set), which runs one thread at a time, give the others their turn, or a
 * thread that takes a lock in a loop can starve them for minutes; natively
 * it does nothing, so the threads keep racing at full speed. */
static inline void spin_turn(void)
{
    static atomic_int under_valgrind = -1;
    int v = atomic_load_explicit(&under_valgrind, memory_order_relaxed);
    if (v < 0) {
        v = getenv("MEMQ_VALGRIND") != NULL;
        atomic_store_explicit(&under_valgrind, v, memory_order_relaxed);
    }
    if (v)
        sched_yield();
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Real monotonic time in nanoseconds, independent of the library. */
static inline uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* True if fd is readable right now (poll with a zero timeout). */
static inline bool fd_readable(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r = poll(&pfd, 1, 0);
    return r > 0 && (pfd.revents & POLLIN) != 0;
}

/* A small deterministic PRNG (xorshift64*), so failures reproduce. */
static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline size_t rng_below(uint64_t *state, size_t n)
{
    return n ? (size_t)(rng_next(state) % n) : 0;
}

/* A Check case with the watchdog and a timeout generous enough for the
 * sanitizer builds on a shared machine. */
static inline TCase *test_case(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, watchdog_start, watchdog_stop);
    tcase_set_timeout(tc, WATCHDOG_SECONDS);
    return tc;
}

/* Run one suite with CK_NORMAL output; the process exit status says
 * whether every test passed. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ----------------------------------------------------------------------
 * System resources made to run out, for the paths where a system call
 * fails.  No privileges needed, and no interposition: the limits are the
 * process's own, and each helper undoes what it did.
 * ---------------------------------------------------------------------- */

#define SQUEEZE_FDS 256

/* Leave exactly n_free descriptors free: the soft RLIMIT_NOFILE comes down
 * to SQUEEZE_FDS (the hard limit stays, as valgrind requires) and every
 * free slot below it is filled but the last n_free.  Until
 * fds_unsqueeze(), an open, socket, eventfd or timerfd beyond those fails
 * with EMFILE. */
typedef struct fd_squeeze {
    struct rlimit old;
    int fds[SQUEEZE_FDS];
    int n;
} fd_squeeze;

static inline void fds_squeeze(fd_squeeze *s, int n_free)
{
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &s->old), 0);
    struct rlimit low = s->old;
    if (low.rlim_cur > SQUEEZE_FDS)
        low.rlim_cur = SQUEEZE_FDS;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    s->n = 0;
    int fd;
    while (s->n < SQUEEZE_FDS && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        s->fds[s->n++] = fd;
    ck_assert_int_ge(s->n, n_free);
    for (int i = 0; i < n_free; i++)
        close(s->fds[--s->n]);
}

static inline void fds_unsqueeze(fd_squeeze *s)
{
    while (s->n > 0)
        close(s->fds[--s->n]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &s->old), 0);
}

/* Make every pthread_create() with default attributes fail (the library
 * creates its threads so): the default stack becomes larger than the
 * address space, so mapping it fails (EAGAIN; valgrind says EINVAL).
 * threads_allowed() puts the old default back. */
typedef struct thread_squeeze {
    pthread_attr_t old;
} thread_squeeze;

static inline void threads_forbidden(thread_squeeze *s)
{
    ck_assert_int_eq(pthread_getattr_default_np(&s->old), 0);
    pthread_attr_t huge;
    ck_assert_int_eq(pthread_attr_init(&huge), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&huge, (size_t)1 << 50), 0);
    ck_assert_int_eq(pthread_setattr_default_np(&huge), 0);
    pthread_attr_destroy(&huge);
}

static inline void threads_allowed(thread_squeeze *s)
{
    ck_assert_int_eq(pthread_setattr_default_np(&s->old), 0);
    pthread_attr_destroy(&s->old);
}

/* ----------------------------------------------------------------------
 * Fake clock: thread-safe, moves only when the test says so.
 * ---------------------------------------------------------------------- */

typedef struct fake_clock {
    _Atomic memq_time now;
    atomic_int reads;
} fake_clock;

static inline void fake_clock_init(fake_clock *c, memq_time start)
{
    atomic_store(&c->now, start);
    atomic_store(&c->reads, 0);
}

static inline memq_time fake_clock_read(void *ctx)
{
    fake_clock *c = ctx;
    atomic_fetch_add(&c->reads, 1);
    return atomic_load(&c->now);
}

static inline void fake_clock_advance(fake_clock *c, memq_time by)
{
    atomic_fetch_add(&c->now, by);
}

/* ----------------------------------------------------------------------
 * The world: one tracker (manual mode, cache_max 0 so accounting is exact,
 * fake clock) plus what its callbacks saw.
 * ---------------------------------------------------------------------- */

#define WORLD_MAX_CALLS 4096
#define WORLD_MAX_ACCOUNTS 256
#define WORLD_MAX_PARTS 256
#define WORLD_START_TIME (1000 * SECOND)

typedef struct fake_part fake_part;
typedef struct fake_world fake_world;

struct fake_world {
    memq_tracker *t;
    memq_config cfg;
    fake_clock clock;

    atomic_int wakeups;
    atomic_int logs;
    atomic_int bad_logs; /* empty, NULL or containing a newline */
    char last_log[512];

    /* Reclaim calls in order: the fake participant's id and its request. */
    int n_calls;
    int call_ids[WORLD_MAX_CALLS];
    memq_reclaim_request call_reqs[WORLD_MAX_CALLS];
    /* Callbacks that reached a participant after its free returned. */
    int calls_after_free;

    /* When set, wakeup, log, clock, oldest and reclaim callbacks call
     * memq_tracker_stats(), which takes the tracker's lock: a callback
     * invoked under that lock deadlocks and the watchdog fails the test. */
    bool callbacks_call_library;
    bool clock_calls_library; /* the same, for the clock alone */
    int library_calls_from_callbacks;
    /* Optional extra work for the wakeup callback. */
    void (*wakeup_hook)(fake_world *w);
    void *hook_ctx;

    memq_account *accounts[WORLD_MAX_ACCOUNTS];
    int n_accounts;
    fake_part *parts[WORLD_MAX_PARTS];
    int n_parts;
};

struct fake_part {
    fake_world *w;
    int id;
    memq_account *account;
    memq_participation *p;
    bool freed;

    /* What oldest() answers. */
    bool has_data;
    memq_time oldest;
    /* The test's own record of what this participant claims. */
    size_t claimed;

    /* How reclaim() answers: PARTIAL releases up to free_per_call bytes
     * (SIZE_MAX: everything) first; COLLAPSING releases everything first;
     * PENDING does nothing. */
    memq_reclaim_status answer;
    size_t free_per_call;
    /* Runs first inside reclaim(); may free, unref, claim... */
    void (*hook)(fake_part *fp, const memq_reclaim_request *req);
    void *hook_ctx;
    int hook_rc;
    unsigned sleep_ms_in_reclaim;
    unsigned sleep_ms_in_oldest;

    int calls;
    int oldest_calls;
    memq_reclaim_request last_req;
    /* Notices (req->closed: the account was closed by reclamation) among
     * the calls.  On a notice the participant frees everything it holds,
     * as a real one does, unless ignore_notice is set. */
    int notices;
    bool ignore_notice;
};

static _Thread_local int testutil_clock_depth;

static inline void world_call_library_now(fake_world *w)
{
    if (w->t) {
        memq_stats st;
        memq_tracker_stats(w->t, &st);
        (void)memq_tracker_used(w->t);
        w->library_calls_from_callbacks++;
    }
}

static inline void world_call_library(fake_world *w)
{
    if (w->callbacks_call_library)
        world_call_library_now(w);
}

static inline memq_time world_clock(void *ctx)
{
    fake_world *w = ctx;
    if ((w->callbacks_call_library || w->clock_calls_library) && testutil_clock_depth == 0) {
        testutil_clock_depth++;
        world_call_library_now(w);
        testutil_clock_depth--;
    }
    return fake_clock_read(&w->clock);
}

static inline void world_wakeup(void *ctx)
{
    fake_world *w = ctx;
    atomic_fetch_add(&w->wakeups, 1);
    world_call_library(w);
    if (w->wakeup_hook)
        w->wakeup_hook(w);
}

static inline void world_log(void *ctx, int level, const char *msg)
{
    fake_world *w = ctx;
    (void)level;
    atomic_fetch_add(&w->logs, 1);
    if (msg == NULL || msg[0] == '\0' || strchr(msg, '\n') != NULL)
        atomic_fetch_add(&w->bad_logs, 1);
    snprintf(w->last_log, sizeof w->last_log, "%s", msg ? msg : "(null)");
    world_call_library(w);
}

/* Fill w->cfg: manual mode, exact accounting, the world's callbacks and
 * fake clock, a 50 ms reclaim timeout.  Tests may adjust w->cfg before
 * world_start(). */
static inline void world_init(fake_world *w, size_t max, size_t low_water)
{
    memset(w, 0, sizeof *w);
    fake_clock_init(&w->clock, WORLD_START_TIME);
    memq_config_init(&w->cfg);
    w->cfg.max = max;
    w->cfg.low_water = low_water;
    w->cfg.cache_max = 0;
    w->cfg.wakeup = world_wakeup;
    w->cfg.wakeup_ctx = w;
    w->cfg.log = world_log;
    w->cfg.log_ctx = w;
    w->cfg.clock = world_clock;
    w->cfg.clock_ctx = w;
    w->cfg.reclaim_timeout_ms = 50;
}

static inline void world_start(fake_world *w)
{
    int rc = memq_tracker_new(&w->t, &w->cfg);
    ck_assert_msg(rc == 0, "memq_tracker_new: %s", memq_strerror(rc));
    ck_assert_ptr_nonnull(w->t);
}

static inline void world_new(fake_world *w, size_t max, size_t low_water)
{
    world_init(w, max, low_water);
    world_start(w);
}

/* Create an account the world owns; no assertion (usable from callbacks). */
static inline int world_account_rc(fake_world *w, memq_account *parent, memq_account **out)
{
    memq_account *a = NULL;
    if (w->n_accounts >= WORLD_MAX_ACCOUNTS)
        return MEMQ_ENOMEM;
    int rc = memq_account_new(w->t, parent, &a);
    if (rc == 0)
        w->accounts[w->n_accounts++] = a;
    *out = a;
    return rc;
}

static inline memq_account *world_account(fake_world *w, memq_account *parent)
{
    memq_account *a = NULL;
    int rc = world_account_rc(w, parent, &a);
    ck_assert_msg(rc == 0, "memq_account_new: %s", memq_strerror(rc));
    ck_assert_ptr_nonnull(a);
    return a;
}

/* Drop the world's reference to a (the test's only one, usually). */
static inline void world_unref(fake_world *w, memq_account *a)
{
    for (int i = 0; i < w->n_accounts; i++) {
        if (w->accounts[i] == a) {
            w->accounts[i] = NULL;
            memq_account_unref(a);
            return;
        }
    }
    ck_abort_msg("world_unref: account not owned by the world");
}

/* --- the fake participant's callbacks --- */

static inline bool fake_oldest(void *self, memq_time *when)
{
    fake_part *fp = self;
    fp->oldest_calls++;
    if (fp->freed)
        fp->w->calls_after_free++;
    world_call_library(fp->w);
    if (fp->sleep_ms_in_oldest)
        sleep_ms(fp->sleep_ms_in_oldest);
    if (!fp->has_data)
        return false;
    *when = fp->oldest;
    return true;
}

static inline memq_reclaim_status fake_reclaim(void *self, const memq_reclaim_request *req)
{
    fake_part *fp = self;
    fake_world *w = fp->w;
    if (fp->freed)
        w->calls_after_free++;
    fp->calls++;
    fp->last_req = *req;
    if (w->n_calls < WORLD_MAX_CALLS) {
        w->call_ids[w->n_calls] = fp->id;
        w->call_reqs[w->n_calls] = *req;
    }
    w->n_calls++;
    world_call_library(w);
    if (fp->sleep_ms_in_reclaim)
        sleep_ms(fp->sleep_ms_in_reclaim);
    if (fp->hook)
        fp->hook(fp, req);
    if (req->closed) {
        fp->notices++;
        if (!fp->ignore_notice && fp->p && !fp->freed && fp->claimed > 0) {
            memq_release(fp->p, fp->claimed);
            fp->claimed = 0;
            fp->has_data = false;
        }
        return MEMQ_RECLAIMED_COLLAPSING;
    }
    memq_reclaim_status answer = fp->answer;
    if (answer == MEMQ_RECLAIMED_PARTIAL) {
        size_t n = fp->free_per_call < fp->claimed ? fp->free_per_call : fp->claimed;
        if (n > 0 && fp->p && !fp->freed) {
            memq_release(fp->p, n);
            fp->claimed -= n;
        }
        if (fp->claimed == 0)
            fp->has_data = false;
    } else if (answer == MEMQ_RECLAIMED_COLLAPSING) {
        /* Tearing down: it frees everything and says so first. */
        if (fp->claimed > 0 && fp->p && !fp->freed)
            memq_release(fp->p, fp->claimed);
        fp->claimed = 0;
        fp->has_data = false;
    }
    return answer;
}

static inline const memq_participant_ops *fake_ops(void)
{
    static const memq_participant_ops ops = { fake_oldest, fake_reclaim };
    return &ops;
}

/* Register fp (zeroed first) on account a as participant `id`, holding no
 * data yet, answering PARTIAL by freeing everything. */
static inline int part_add_rc(fake_world *w, fake_part *fp, int id, memq_account *a)
{
    memset(fp, 0, sizeof *fp);
    fp->w = w;
    fp->id = id;
    fp->account = a;
    fp->answer = MEMQ_RECLAIMED_PARTIAL;
    fp->free_per_call = SIZE_MAX;
    if (w->n_parts >= WORLD_MAX_PARTS)
        return MEMQ_ENOMEM;
    int rc = memq_participant_register(a, fake_ops(), fp, &fp->p);
    if (rc == 0)
        w->parts[w->n_parts++] = fp;
    else
        fp->freed = true;
    return rc;
}

static inline void part_add(fake_world *w, fake_part *fp, int id, memq_account *a)
{
    int rc = part_add_rc(w, fp, id, a);
    ck_assert_msg(rc == 0, "memq_participant_register: %s", memq_strerror(rc));
    ck_assert_ptr_nonnull(fp->p);
}

/* Move the fake clock forward to `when` (never back). */
static inline void world_advance_to(fake_world *w, memq_time when)
{
    memq_time now = atomic_load(&w->clock.now);
    if (when > now)
        atomic_store(&w->clock.now, when);
}

static inline memq_time world_now(fake_world *w) { return atomic_load(&w->clock.now); }

/* Claim n bytes of data stamped `oldest` and record them; the participant
 * keeps its older data's stamp if it has some.  As in a daemon, data is
 * claimed when it arrives: the fake clock first moves forward to the stamp
 * (it never goes back, so a stamp in the past models data that is older
 * than its claim, which memq_claim_at() declares). */
static inline int part_claim_at(fake_part *fp, size_t n, memq_time oldest)
{
    world_advance_to(fp->w, oldest);
    int rc = oldest < world_now(fp->w) ? memq_claim_at(fp->p, n, oldest) : memq_claim(fp->p, n);
    if (rc == 0) {
        fp->claimed += n;
        if (!fp->has_data || oldest < fp->oldest)
            fp->oldest = oldest;
        fp->has_data = true;
    }
    return rc;
}

static inline void part_release(fake_part *fp, size_t n)
{
    memq_release(fp->p, n);
    fp->claimed -= n < fp->claimed ? n : fp->claimed;
    if (fp->claimed == 0)
        fp->has_data = false;
}

static inline void part_free(fake_part *fp)
{
    if (fp->freed)
        return;
    memq_participation_free(fp->p);
    fp->freed = true;
    fp->p = NULL;
    fp->claimed = 0;
    fp->has_data = false;
}

/* A new account (child of parent, may be NULL) with one participant that
 * claims `bytes` of data as old as `oldest`. */
static inline memq_account *world_holder(fake_world *w, fake_part *fp, int id,
                                         memq_account *parent, memq_time oldest, size_t bytes)
{
    memq_account *a = world_account(w, parent);
    part_add(w, fp, id, a);
    int rc = part_claim_at(fp, bytes, oldest);
    ck_assert_msg(rc == 0, "memq_claim: %s", memq_strerror(rc));
    return a;
}

/* Call memq_tracker_reclaim() until it stops answering MEMQ_EAGAIN (at
 * most `tries` times); returns its last answer. */
static inline int world_reclaim_tries(fake_world *w, int tries)
{
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < tries && rc == MEMQ_EAGAIN; i++)
        rc = memq_tracker_reclaim(w->t);
    return rc;
}

static inline int world_reclaim(fake_world *w) { return world_reclaim_tries(w, 2000); }

static inline memq_stats world_stats(fake_world *w)
{
    memq_stats st;
    memq_tracker_stats(w->t, &st);
    return st;
}

/* Index of the first reclaim call to participant `id`, or -1. */
static inline int world_call_index(const fake_world *w, int id)
{
    int n = w->n_calls < WORLD_MAX_CALLS ? w->n_calls : WORLD_MAX_CALLS;
    for (int i = 0; i < n; i++)
        if (w->call_ids[i] == id)
            return i;
    return -1;
}

/* Free every participation still registered, drop every account reference
 * the world holds, and free the tracker (if the test has not). */
static inline void world_teardown(fake_world *w)
{
    /* (Written only if set: a watcher thread may be reading them.) */
    if (w->callbacks_call_library)
        w->callbacks_call_library = false;
    if (w->wakeup_hook != NULL)
        w->wakeup_hook = NULL;
    for (int i = 0; i < w->n_parts; i++)
        part_free(w->parts[i]);
    for (int i = 0; i < w->n_accounts; i++) {
        if (w->accounts[i]) {
            memq_account_unref(w->accounts[i]);
            w->accounts[i] = NULL;
        }
    }
    if (w->t) {
        memq_tracker_free(w->t);
        w->t = NULL;
    }
}

/* Run memq_tracker_dump() into an open_memstream and return what it wrote
 * as a malloc'd string (the caller frees it); *rc_out gets its answer.
 * The stream's state lives on the heap: GCC's -Wdangling-pointer takes a
 * buffer whose address came from a local variable for that variable. */
typedef struct memstream {
    char *text;
    size_t len;
} memstream;

static inline char *dump_to_string(memq_tracker *t, int format, int *rc_out)
{
    memstream *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    FILE *f = open_memstream(&m->text, &m->len);
    ck_assert_ptr_nonnull(f);
    int rc = memq_tracker_dump(t, f, format);
    fclose(f);
    if (rc_out)
        *rc_out = rc;
    char *text = m->text;
    free(m);
    ck_assert_ptr_nonnull(text);
    return text;
}

#endif /* MEMQ_TESTUTIL_H */
