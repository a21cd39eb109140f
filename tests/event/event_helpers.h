/*
 * event_helpers.h - helpers shared by the libmemquota-event suites: a fake
 * clock, a tracker in manual mode, a "holder" participant whose data has a
 * chosen age and which records when it is reclaimed, and loop drivers.
 *
 * Everything is static inline so each program stays one translation unit.
 * Callbacks never call ck_assert: they record, the test asserts after.
 */
#ifndef MEMQ_EVENT_HELPERS_H
#define MEMQ_EVENT_HELPERS_H

#include <check.h>
#include <memquota.h>
#include <memquota/event.h>

#include <event2/event.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define MS ((memq_time)1000000)
#define SECOND ((memq_time)1000000000)

/* Slower under valgrind (MEMQ_VALGRIND is set by make check-valgrind). */
static inline unsigned slow_factor(void)
{
    return getenv("MEMQ_VALGRIND") != NULL ? 20 : 1;
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static inline uint64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ----------------------------------------------------------------------
 * A fake clock the test moves by hand
 * ---------------------------------------------------------------------- */

static _Atomic memq_time fake_now = SECOND;

static inline memq_time fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static inline void fake_set(memq_time t)
{
    atomic_store(&fake_now, t);
}

/* A tracker in manual mode with exact accounting (cache_max 0); fake
 * selects the fake clock. */
static inline memq_tracker *tracker_make(size_t max, size_t low_water, bool fake)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = max;
    cfg.low_water = low_water;
    cfg.cache_max = 0;
    if (fake) {
        cfg.clock = fake_clock;
        fake_set(SECOND);
    }
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    return t;
}

/* memq_tracker_reclaim() until the episode is over (a slow build, under a
 * sanitizer or valgrind, may run out of the call's budget). */
static inline int reclaim_all(memq_tracker *t)
{
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < 10000 && rc == MEMQ_EAGAIN; i++)
        rc = memq_tracker_reclaim(t);
    return rc;
}

static inline memq_stats stats_of(memq_tracker *t)
{
    memq_stats st;
    memq_tracker_stats(t, &st);
    return st;
}

/* ----------------------------------------------------------------------
 * An order log: what ran, in order
 * ---------------------------------------------------------------------- */

#define LOG_MAX 64
static char order_log[LOG_MAX];
static atomic_int order_n;

static inline void log_reset(void)
{
    atomic_store(&order_n, 0);
    memset(order_log, 0, sizeof order_log);
}

static inline void log_event(char what)
{
    int i = atomic_fetch_add(&order_n, 1);
    if (i < LOG_MAX - 1)
        order_log[i] = what;
}

/* ----------------------------------------------------------------------
 * A holder: one participant on its own account, holding `bytes` claimed
 * at a chosen time; a reclaim releases everything and collapses.
 * ---------------------------------------------------------------------- */

typedef struct holder {
    memq_account *account;
    memq_participation *p;
    /* Atomics: a claim may come from another thread than the loop's,
     * which reads them when it reclaims. */
    atomic_size_t bytes;
    _Atomic memq_time since;
    char tag;                /* logged when reclaimed */
    atomic_int reclaims;     /* reclaim requests */
    atomic_int notices;      /* closed notices */
    atomic_size_t used_seen; /* the tracker's used when reclaimed */
    memq_tracker *tracker;
} holder;

static inline bool holder_oldest(void *self, memq_time *when)
{
    holder *h = self;
    if (h->bytes == 0)
        return false;
    *when = h->since;
    return true;
}

static inline memq_reclaim_status holder_reclaim(void *self, const memq_reclaim_request *req)
{
    holder *h = self;
    if (req->closed)
        atomic_fetch_add(&h->notices, 1);
    else
        atomic_fetch_add(&h->reclaims, 1);
    atomic_store(&h->used_seen, memq_tracker_used(h->tracker));
    log_event(h->tag);
    memq_release(h->p, h->bytes);
    h->bytes = 0;
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops holder_ops = {holder_oldest, holder_reclaim};

/* Register h on a new account (or on `on`, if not NULL). */
static inline void holder_init(holder *h, memq_tracker *t, memq_account *on, char tag)
{
    memset(h, 0, sizeof *h);
    h->tracker = t;
    h->tag = tag;
    if (on != NULL)
        h->account = memq_account_ref(on);
    else
        ck_assert_int_eq(memq_account_new(t, NULL, &h->account), 0);
    ck_assert_int_eq(memq_participant_register(h->account, &holder_ops, h, &h->p), 0);
}

/* Claim n bytes now, with data dated `since` (memq_claim_at). */
static inline void holder_claim(holder *h, size_t n, memq_time since)
{
    h->since = since;
    ck_assert_int_eq(memq_claim_at(h->p, n, since), 0);
    h->bytes += n;
}

static inline void holder_fini(holder *h)
{
    memq_participation_free(h->p);
    memq_account_unref(h->account);
}

/* ----------------------------------------------------------------------
 * Loop drivers
 * ---------------------------------------------------------------------- */

/* Run n turns of the loop without blocking. */
static inline void loop_turns(struct event_base *base, int n)
{
    for (int i = 0; i < n; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

typedef struct until_ctx {
    bool (*done)(void *);
    void *arg;
    struct event_base *base;
    uint64_t deadline_ms;
} until_ctx;

static inline void until_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    until_ctx *u = arg;
    if (u->done(u->arg) || real_ms() >= u->deadline_ms)
        event_base_loopbreak(u->base);
}

/* Run the loop until done(arg) is true (checked every 2 ms) or timeout_ms
 * of real time passed (times slow_factor()).  Returns done(arg). */
static inline bool loop_until(struct event_base *base, bool (*done)(void *), void *arg,
                              unsigned timeout_ms)
{
    until_ctx u = {done, arg, base, real_ms() + (uint64_t)timeout_ms * slow_factor()};
    struct event *tick = event_new(base, -1, EV_PERSIST, until_tick, &u);
    ck_assert_ptr_nonnull(tick);
    struct timeval every = {0, 2000};
    event_add(tick, &every);
    if (!done(arg))
        event_base_dispatch(base);
    event_free(tick);
    return done(arg);
}

#endif /* MEMQ_EVENT_HELPERS_H */
