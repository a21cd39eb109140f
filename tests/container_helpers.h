/*
 * container_helpers.h - small helpers shared by check_queue.c and
 * check_buf.c: a fake clock, tracker set-up, what participants hold, and
 * manual reclamation, and a limit on the address space.
 */
#ifndef CONTAINER_HELPERS_H
#define CONTAINER_HELPERS_H

#include <memquota.h>

#include <check.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)

/* A clock the test moves by hand.  Thread-safe, as the contract asks. */
typedef struct fake_clock {
    _Atomic memq_time now;
} fake_clock;

static inline memq_time fake_clock_read(void *ctx)
{
    fake_clock *c = ctx;
    return atomic_load(&c->now);
}

static inline void fake_clock_set(fake_clock *c, memq_time now)
{
    atomic_store(&c->now, now);
}

/* A tracker with explicit marks.  clock may be NULL (the real clock). */
static inline memq_tracker *tracker_make(size_t max, size_t low_water, size_t cache_max,
                                         memq_reclaim_mode mode, fake_clock *clock)
{
    memq_config cfg;
    memq_tracker *t = NULL;

    memq_config_init(&cfg);
    cfg.max = max;
    cfg.low_water = low_water;
    cfg.cache_max = cache_max;
    cfg.reclaim_mode = mode;
    if (clock) {
        cfg.clock = fake_clock_read;
        cfg.clock_ctx = clock;
    }
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_ptr_nonnull(t);
    return t;
}

static inline memq_account *account_make(memq_tracker *t)
{
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    return a;
}

/* What the tracker counts for its participants: claims and caches, used
 * less the pool's slack.  The containers take their memory from the
 * tracker's pool, whose free room (a reserve kept mapped, the rest of a
 * span) counts in used as well; it is never a participant's. */
static inline size_t claims_of(memq_tracker *t)
{
    memq_stats st;
    memq_tracker_stats(t, &st);
    return st.used - st.slack;
}

/* Run manual reclamation until the episode is over; returns the last code.
 * Bounded, so that a tracker that never finishes fails the test instead of
 * hanging it. */
static inline int reclaim_until_done(memq_tracker *t)
{
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < 10000 && rc == MEMQ_EAGAIN; i++)
        rc = memq_tracker_reclaim(t);
    return rc;
}

/* An on_collapse hook that counts its calls in an atomic int. */
static inline void count_collapse(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
}

/* A minimal participant holding `bytes` of data stamped `stamp`; asked to
 * reclaim, it releases everything and answers COLLAPSING (its account
 * closes).  For tests where a container's sibling closes the account. */
typedef struct collapser {
    memq_participation *p;
    size_t bytes;
    memq_time stamp;
    int calls;
} collapser;

static inline bool collapser_oldest(void *self, memq_time *when)
{
    collapser *c = self;
    if (c->bytes == 0)
        return false;
    *when = c->stamp;
    return true;
}

static inline memq_reclaim_status collapser_reclaim(void *self, const memq_reclaim_request *req)
{
    collapser *c = self;
    (void)req;
    c->calls++;
    memq_release(c->p, c->bytes);
    c->bytes = 0;
    return MEMQ_RECLAIMED_COLLAPSING;
}

/* Register c on a and claim `bytes` stamped `stamp`. */
static inline void collapser_start(collapser *c, memq_account *a, size_t bytes, memq_time stamp)
{
    static const memq_participant_ops ops = {collapser_oldest, collapser_reclaim};
    c->bytes = bytes;
    c->stamp = stamp;
    c->calls = 0;
    ck_assert_int_eq(memq_participant_register(a, &ops, c, &c->p), 0);
    ck_assert_int_eq(memq_claim(c->p, bytes), 0);
}

/* A participant holding `bytes` stamped `stamp` that answers every request
 * PENDING; the test completes the answer with memq_reclaim_done().  Told
 * that its account closed, it releases everything. */
typedef struct pender {
    memq_participation *p;
    size_t bytes;
    memq_time stamp;
    int calls;
} pender;

static inline bool pender_oldest(void *self, memq_time *when)
{
    pender *d = self;
    if (d->bytes == 0)
        return false;
    *when = d->stamp;
    return true;
}

static inline memq_reclaim_status pender_reclaim(void *self, const memq_reclaim_request *req)
{
    pender *d = self;
    d->calls++;
    if (req->closed) {
        memq_release(d->p, d->bytes);
        d->bytes = 0;
    }
    return MEMQ_RECLAIM_PENDING;
}

static inline void pender_start(pender *d, memq_account *a, size_t bytes, memq_time stamp)
{
    static const memq_participant_ops ops = {pender_oldest, pender_reclaim};
    d->bytes = bytes;
    d->stamp = stamp;
    d->calls = 0;
    ck_assert_int_eq(memq_participant_register(a, &ops, d, &d->p), 0);
    ck_assert_int_eq(memq_claim(d->p, bytes), 0);
}

/* Give everything back, then complete the pending answer with st. */
static inline void pender_answer(pender *d, memq_reclaim_status st)
{
    memq_release(d->p, d->bytes);
    d->bytes = 0;
    memq_reclaim_done(d->p, st);
}

/* A clock that, at its next read once armed, closes an account (drops the
 * test's last reference) or shuts the tracker down, then reads as usual.
 * A container reads the clock in the middle of a push or an add, between
 * checking that its account is open and claiming: the window in which
 * another thread could close the account, made deterministic. */
typedef struct closing_clock {
    _Atomic memq_time now;
    memq_account *unref;     /* its last reference dropped at the next read */
    memq_tracker *shut_down; /* freed at the next read */
} closing_clock;

static inline memq_time closing_clock_read(void *ctx)
{
    closing_clock *c = ctx;
    memq_account *a = c->unref;
    memq_tracker *t = c->shut_down;
    c->unref = NULL;
    c->shut_down = NULL;
    if (a != NULL)
        memq_account_unref(a);
    if (t != NULL)
        memq_tracker_free(t);
    return atomic_load(&c->now);
}

static inline memq_tracker *tracker_with_closing_clock(size_t max, closing_clock *c)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = max;
    cfg.cache_max = 0;
    cfg.clock = closing_clock_read;
    cfg.clock_ctx = c;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    return t;
}

/* Limits on the address space (RLIMIT_AS) are not for valgrind, which
 * keeps its own map of it, nor for TSan, which maps shadow memory for
 * each of the program's mappings; and they need a process in which no
 * pool was made yet, as Check's fork mode gives each test. */
static inline const char *no_fresh_address_space(void)
{
#if defined(__SANITIZE_THREAD__)
    return "TSan maps shadow memory for each of the program's mappings";
#else
    if (getenv("MEMQ_VALGRIND") != NULL)
        return "valgrind manages the address space itself";
    const char *fork = getenv("CK_FORK");
    if (fork != NULL && strcmp(fork, "no") == 0)
        return "needs a process of its own (CK_FORK=no)";
    return NULL;
#endif
}

/* The process's address-space size (statm's first figure). */
static inline size_t vm_size(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    char text[128];
    ssize_t k = read(fd, text, sizeof text - 1);
    close(fd);
    ck_assert_int_gt(k, 0);
    text[k] = '\0';
    return (size_t)strtoull(text, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE);
}

/* RLIMIT_AS brought to `headroom` bytes above the process's size now:
 * the next mappings beyond it fail with ENOMEM.  Returns the old limit. */
static inline struct rlimit address_space_squeeze(size_t headroom)
{
    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)(vm_size() + headroom);
    if (old.rlim_cur != RLIM_INFINITY && low.rlim_cur > old.rlim_cur)
        low.rlim_cur = old.rlim_cur;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &low), 0);
    return old;
}

#endif /* CONTAINER_HELPERS_H */
