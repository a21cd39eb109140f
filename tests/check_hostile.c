/*
 * check_hostile.c - hostile and broken participants: each test is one way a
 * participant (or its owner) can misbehave, and what the tracker must do
 * about it: count it, contain it, keep working.
 *
 * Some tests also reproduce, in a few lines, defects the model-based tests
 * (check_model.c) found; their comments say which.
 */
#include <check.h>
#include <memquota.h>

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define MS ((memq_time)1000000)

/* ======================================================================
 * A hostile participant
 * ====================================================================== */

typedef struct hp hp;
typedef memq_reclaim_status (*hp_reclaim_fn)(hp *h, const memq_reclaim_request *req);

struct hp {
    uint32_t canary; /* HP_ALIVE while the struct may be used */
    memq_tracker *t;
    memq_account *a;
    memq_participation *p;
    size_t held;
    memq_time stamp; /* when its oldest data arrived */
    bool lie;        /* oldest() says "no data" whatever it holds */
    hp_reclaim_fn on_reclaim; /* NULL: free everything, answer PARTIAL */
    unsigned sleep_ms;        /* in reclaim(), before answering */
    unsigned oldest_sleep_ms; /* in oldest() */
    bool free_self_in_oldest;
    /* In its next oldest(): claim this much (from its cache, the fast
     * path), then report no data, as if the claim came just after the
     * library read its claims. */
    size_t claim_in_oldest;
    atomic_int reclaims, oldests, in_callback, after_free;
    int order; /* position among the reclaim calls of its test (first call) */
};

#define HP_ALIVE 0x48505050u

static _Atomic memq_time fake_now;

static atomic_int call_counter;

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static uint64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN) != 0;
}

static bool hp_oldest(void *self, memq_time *when)
{
    hp *h = self;
    if (h->canary != HP_ALIVE)
        abort(); /* a callback after free: fail loudly even without ASan */
    atomic_fetch_add(&h->oldests, 1);
    atomic_fetch_add(&h->in_callback, 1);
    if (h->oldest_sleep_ms)
        sleep_ms(h->oldest_sleep_ms);
    if (h->claim_in_oldest > 0 && h->p != NULL) {
        size_t n = h->claim_in_oldest;
        h->claim_in_oldest = 0;
        ck_assert_int_eq(memq_claim(h->p, n), 0);
        h->held += n;
        h->stamp = atomic_load(&fake_now);
        atomic_fetch_sub(&h->in_callback, 1);
        return false;
    }
    bool has = !h->lie && h->held > 0;
    if (has)
        *when = h->stamp;
    if (h->free_self_in_oldest && h->p != NULL) {
        memq_participation_free(h->p);
        h->p = NULL;
        h->held = 0;
        has = false;
    }
    atomic_fetch_sub(&h->in_callback, 1);
    return has;
}

static memq_reclaim_status hp_reclaim(void *self, const memq_reclaim_request *req)
{
    hp *h = self;
    if (h->canary != HP_ALIVE)
        abort();
    if (atomic_fetch_add(&h->reclaims, 1) == 0)
        h->order = atomic_fetch_add(&call_counter, 1);
    atomic_fetch_add(&h->in_callback, 1);
    if (h->sleep_ms)
        sleep_ms(h->sleep_ms);
    memq_reclaim_status st = MEMQ_RECLAIMED_PARTIAL;
    if (h->on_reclaim != NULL) {
        st = h->on_reclaim(h, req);
    } else if (h->held > 0 && h->p != NULL) {
        memq_release(h->p, h->held);
        h->held = 0;
    }
    atomic_fetch_sub(&h->in_callback, 1);
    return st;
}

static const memq_participant_ops hp_ops = {hp_oldest, hp_reclaim};

/* A fake clock the tests move by hand. */
static _Atomic memq_time fake_now = 1000 * MS;

static memq_time fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static memq_tracker *tracker(size_t max, size_t low, memq_reclaim_mode mode)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = max;
    cfg.low_water = low;
    cfg.cache_max = 0;
    cfg.reclaim_mode = mode;
    cfg.reclaim_timeout_ms = 50;
    cfg.clock = fake_clock;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    atomic_store(&fake_now, 1000 * MS);
    atomic_store(&call_counter, 0);
    return t;
}

/* A participant on a new account (child of parent), holding `bytes` of
 * data stamped `stamp`. */
static void hp_init(hp *h, memq_tracker *t, memq_account *parent, memq_time stamp, size_t bytes)
{
    memset(h, 0, sizeof *h);
    h->canary = HP_ALIVE;
    h->t = t;
    h->order = -1;
    ck_assert_int_eq(memq_account_new(t, parent, &h->a), 0);
    ck_assert_int_eq(memq_participant_register(h->a, &hp_ops, h, &h->p), 0);
    h->stamp = stamp;
    if (bytes > 0) {
        ck_assert_int_eq(memq_claim(h->p, bytes), 0);
        h->held = bytes;
    }
}

static void hp_done(hp *h)
{
    if (h->p != NULL)
        memq_participation_free(h->p);
    h->p = NULL;
    if (h->a != NULL)
        memq_account_unref(h->a);
    h->a = NULL;
    h->canary = 0;
}

static int reclaim_all(memq_tracker *t, int tries)
{
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < tries && rc == MEMQ_EAGAIN; i++)
        rc = memq_tracker_reclaim(t);
    return rc;
}

static memq_stats stats(memq_tracker *t)
{
    memq_stats st;
    memq_tracker_stats(t, &st);
    return st;
}

/* ======================================================================
 * Invalid answers
 * ====================================================================== */

static int invalid_status;

static memq_reclaim_status answer_invalid(hp *h, const memq_reclaim_request *req)
{
    (void)req;
    memq_release(h->p, h->held);
    h->held = 0;
    return (memq_reclaim_status)invalid_status;
}

START_TEST(test_reclaim_returning_an_invalid_status_is_misuse_treated_as_partial)
{
    static const int bad[] = {3, 42, -1, 0x7fffffff};
    invalid_status = bad[_i];
    memq_tracker *t = tracker(64 * KIB, 32 * KIB, MEMQ_RECLAIM_MANUAL);
    hp h;
    hp_init(&h, t, NULL, 1000 * MS, 80 * KIB);
    h.on_reclaim = answer_invalid;
    ck_assert_int_eq(reclaim_all(t, 100), 0);
    memq_stats st = stats(t);
    ck_assert_uint_eq(st.misuse_events, 1);
    ck_assert_uint_eq(st.partial_reclaims, 1);
    ck_assert_uint_eq(st.accounts_collapsed, 0);
    ck_assert(!memq_account_closed(h.a)); /* PARTIAL, not COLLAPSING */
    ck_assert_uint_le(st.used, st.low_water);
    ck_assert_int_eq(memq_claim(h.p, 10), 0);
    memq_release(h.p, 10);
    hp_done(&h);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * PENDING answers that never come
 * ====================================================================== */

static memq_reclaim_status answer_pending(hp *h, const memq_reclaim_request *req)
{
    (void)h;
    (void)req;
    return MEMQ_RECLAIM_PENDING;
}

START_TEST(test_pending_answer_never_completed_times_out_and_collapses_its_account)
{
    memq_tracker *t = tracker(64 * KIB, 32 * KIB, MEMQ_RECLAIM_MANUAL);
    hp h;
    hp_init(&h, t, NULL, 1000 * MS, 80 * KIB);
    h.on_reclaim = answer_pending;
    ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_EAGAIN);
    ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_EAGAIN); /* still waiting */
    ck_assert_int_eq(atomic_load(&h.reclaims), 1);          /* not asked twice */
    ck_assert(!memq_account_closed(h.a));
    atomic_fetch_add(&fake_now, 51 * MS); /* timeout 50 ms */
    ck_assert_int_eq(reclaim_all(t, 100), 0);
    memq_stats st = stats(t);
    ck_assert_uint_eq(st.callback_timeouts, 1);
    ck_assert_uint_eq(st.accounts_collapsed, 1);
    ck_assert(memq_account_closed(h.a));
    ck_assert_uint_eq(st.used, 0); /* treated as collapsed: forgotten */
    ck_assert_int_eq(memq_claim(h.p, 1), MEMQ_ECLOSED);
    /* A late answer is ignored. */
    memq_reclaim_done(h.p, MEMQ_RECLAIMED_COLLAPSING);
    ck_assert_uint_eq(stats(t).accounts_collapsed, 1);
    hp_done(&h);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Claiming while being reclaimed
 * ====================================================================== */

static memq_reclaim_status answer_claim_more(hp *h, const memq_reclaim_request *req)
{
    (void)req;
    if (memq_claim(h->p, 64 * KIB) == 0)
        h->held += 64 * KIB;
    return MEMQ_RECLAIMED_PARTIAL;
}

START_TEST(test_participant_claiming_more_while_being_reclaimed_cannot_wedge_the_tracker)
{
    memq_tracker *t = tracker(256 * KIB, 128 * KIB, MEMQ_RECLAIM_MANUAL);
    hp h;
    hp_init(&h, t, NULL, 1000 * MS, 300 * KIB);
    h.on_reclaim = answer_claim_more;
    ck_assert_int_eq(reclaim_all(t, 1000), 0);
    memq_stats st = stats(t);
    ck_assert_uint_eq(st.unreclaimable_events, 1);
    ck_assert_int_eq(atomic_load(&h.reclaims), 1); /* refused for the rest of the episode */
    ck_assert_uint_eq(st.used, h.held);             /* what it claimed is counted */
    /* The tracker keeps working: once the participant cooperates, a new
     * crossing reclaims it. */
    h.on_reclaim = NULL;
    memq_release(h.p, h.held);
    h.held = 0;
    ck_assert_int_eq(memq_claim(h.p, 300 * KIB), 0);
    h.held = 300 * KIB;
    ck_assert_int_eq(reclaim_all(t, 1000), 0);
    st = stats(t);
    ck_assert_uint_eq(st.episodes, 2);
    ck_assert_uint_le(st.used, st.low_water);
    hp_done(&h);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Freeing its own participation, unreffing its account
 * ====================================================================== */

static int free_self_answer;

static memq_reclaim_status answer_free_self(hp *h, const memq_reclaim_request *req)
{
    (void)req;
    memq_participation_free(h->p);
    h->p = NULL;
    h->held = 0;
    return (memq_reclaim_status)free_self_answer;
}

START_TEST(test_participant_freeing_its_own_participation_from_its_reclaim_callback)
{
    free_self_answer = _i == 0 ? MEMQ_RECLAIMED_PARTIAL : MEMQ_RECLAIMED_COLLAPSING;
    memq_tracker *t = tracker(64 * KIB, 32 * KIB, MEMQ_RECLAIM_MANUAL);
    hp h, sibling;
    hp_init(&h, t, NULL, 1000 * MS, 80 * KIB);
    h.on_reclaim = answer_free_self;
    /* A sibling on the same account, asked in the same round. */
    memset(&sibling, 0, sizeof sibling);
    sibling.canary = HP_ALIVE;
    ck_assert_int_eq(memq_participant_register(h.a, &hp_ops, &sibling, &sibling.p), 0);
    ck_assert_int_eq(reclaim_all(t, 100), 0);
    memq_stats st = stats(t);
    ck_assert_uint_eq(st.used, 0);
    ck_assert_uint_eq(st.participants, 1);
    ck_assert_int_eq(atomic_load(&h.reclaims), 1);
    ck_assert_int_eq(memq_account_closed(h.a), _i == 1); /* a collapse still closes it */
    h.canary = 0; /* any later callback to it aborts */
    ck_assert_int_eq(memq_claim(sibling.p, 1), _i == 1 ? MEMQ_ECLOSED : 0);
    memq_participation_free(sibling.p);
    memq_account_unref(h.a);
    memq_tracker_free(t);
}
END_TEST

static memq_reclaim_status answer_unref_account(hp *h, const memq_reclaim_request *req)
{
    (void)req;
    memq_account_unref(h->a); /* its only reference */
    h->a = NULL;
    return MEMQ_RECLAIMED_PARTIAL;
}

START_TEST(test_participant_unreffing_its_account_from_its_reclaim_callback)
{
    memq_tracker *t = tracker(64 * KIB, 32 * KIB, MEMQ_RECLAIM_MANUAL);
    hp h, other;
    hp_init(&h, t, NULL, 1000 * MS, 80 * KIB);
    hp_init(&other, t, NULL, 2000 * MS, 10 * KIB);
    h.on_reclaim = answer_unref_account;
    ck_assert_int_eq(reclaim_all(t, 100), 0);
    memq_stats st = stats(t);
    ck_assert_uint_eq(st.used, 10 * KIB); /* the closed account's claims are gone */
    ck_assert_uint_eq(st.accounts, 1);
    ck_assert_uint_eq(st.accounts_collapsed, 0); /* closed, not collapsed */
    ck_assert_int_eq(atomic_load(&other.reclaims), 0);
    ck_assert_int_eq(memq_claim(h.p, 1), MEMQ_ECLOSED);
    memq_release(h.p, h.held); /* a no-op now */
    ck_assert_uint_eq(stats(t).used, 10 * KIB);
    hp_done(&h);
    hp_done(&other);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Thread mode: freeing a participation whose callback is running
 * ====================================================================== */

START_TEST(test_thread_mode_free_waits_for_a_sleeping_callback_of_that_participation)
{
    /* _i == 0: the reclaim callback sleeps; _i == 1: the oldest callback. */
    memq_tracker *t = tracker(64 * KIB, 32 * KIB, MEMQ_RECLAIM_THREAD);
    hp *h = malloc(sizeof *h); /* freed right after memq_participation_free */
    ck_assert_ptr_nonnull(h);
    hp_init(h, t, NULL, 1000 * MS, 0);
    if (_i == 0)
        h->sleep_ms = 300;
    else
        h->oldest_sleep_ms = 300;
    h->held = 80 * KIB; /* before the claim that wakes the reclaim thread */
    ck_assert_int_eq(memq_claim(h->p, 80 * KIB), 0);
    uint64_t deadline = real_ms() + 5000;
    while (atomic_load(&h->in_callback) == 0 && real_ms() < deadline)
        sleep_ms(1);
    ck_assert_msg(atomic_load(&h->in_callback) == 1, "the reclaim thread never called back");
    uint64_t start = real_ms();
    memq_participation_free(h->p);
    uint64_t waited = real_ms() - start;
    /* No callback may run once free returned. */
    ck_assert_int_eq(atomic_load(&h->in_callback), 0);
    ck_assert_uint_ge(waited, 100);
    memq_account *a = h->a;
    h->canary = 0;
    free(h); /* a callback still using it would be a use-after-free (ASan) */
    sleep_ms(50);
    ck_assert_uint_eq(stats(t).participants, 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Participants that lie about their data
 * ====================================================================== */

START_TEST(test_oldest_reporting_no_data_while_holding_megabytes_is_treated_as_oldest)
{
    /* The liar says it holds nothing while holding 4 MiB.  It is asked no
     * later than the turn of the time it started holding memory, and then
     * taken as holding the oldest data.  The honest account started
     * holding memory earlier, but its old data is gone and what it holds
     * is newer than the liar's claim: the liar goes first, and reclaiming
     * it is enough.  (Believed, the liar would hide behind the honest
     * account.) */
    memq_tracker *t = tracker(4 * MIB, 3 * MIB, MEMQ_RECLAIM_MANUAL);
    hp honest, liar;
    atomic_store(&fake_now, 1000 * MS);
    hp_init(&honest, t, NULL, 1000 * MS, 1 * MIB);
    atomic_store(&fake_now, 2000 * MS);
    hp_init(&liar, t, NULL, 2000 * MS, 4 * MIB);
    liar.lie = true;
    atomic_store(&fake_now, 3000 * MS);
    honest.stamp = 3000 * MS; /* drained, and refilled */
    ck_assert_int_eq(reclaim_all(t, 1000), 0);
    ck_assert_int_ge(atomic_load(&liar.reclaims), 1);
    ck_assert_int_eq(liar.order, 0);
    ck_assert_int_eq(atomic_load(&honest.reclaims), 0);
    ck_assert_uint_le(stats(t).used, 3 * MIB);
    hp_done(&honest);
    hp_done(&liar);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_participant_freed_in_its_oldest_callback_is_not_taken_as_oldest)
{
    /* Found by check_model.c (seed 5).  The parent's only participant frees
     * itself from oldest() while holding new data; the parent then holds
     * nothing.  It must not be taken as holding the oldest data, or its
     * child, holding the newest data, is reclaimed before the old account. */
    memq_tracker *t = tracker(64 * KIB, 48 * KIB, MEMQ_RECLAIM_MANUAL);
    hp old, parent, child;
    hp_init(&old, t, NULL, 1000 * MS, 30 * KIB);
    atomic_store(&fake_now, 5000 * MS);
    hp_init(&parent, t, NULL, 5000 * MS, 10 * KIB);
    parent.free_self_in_oldest = true;
    atomic_store(&fake_now, 9000 * MS);
    hp_init(&child, t, parent.a, 9000 * MS, 30 * KIB);
    ck_assert_int_eq(reclaim_all(t, 1000), 0);
    ck_assert_int_ge(atomic_load(&old.reclaims), 1);
    ck_assert_msg(child.order == -1 || child.order > old.order,
                  "the newest data (child of a parent that freed its participant in "
                  "oldest()) was reclaimed first (child asked #%d, old account #%d)",
                  child.order, old.order);
    hp_done(&old);
    hp_done(&parent);
    hp_done(&child);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Thousands of participants that refuse to free anything
 * ====================================================================== */

static memq_reclaim_status answer_nothing(hp *h, const memq_reclaim_request *req)
{
    (void)h;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

static atomic_int warnings;

static void count_warnings(void *ctx, int level, const char *msg)
{
    (void)ctx;
    (void)msg;
    if (level <= MEMQ_LOG_WARN)
        atomic_fetch_add(&warnings, 1);
}

START_TEST(test_thousands_of_refusing_participants_end_the_episode_and_a_later_one_succeeds)
{
    enum { N = 4000 };
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 3 * MIB;
    cfg.low_water = 2 * MIB;
    cfg.cache_max = 0; /* 4000 caches would hold more than the band */
    cfg.log = count_warnings;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    atomic_store(&warnings, 0);
    hp *h = calloc(N, sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (int i = 0; i < N; i++) {
        hp_init(&h[i], t, NULL, memq_now(), 1 * KIB);
        h[i].on_reclaim = answer_nothing;
    }
    ck_assert_uint_gt(memq_tracker_used(t), cfg.max);
    ck_assert_int_eq(reclaim_all(t, 100000), 0);
    memq_stats st = stats(t);
    ck_assert_uint_eq(st.unreclaimable_events, 1);
    ck_assert_uint_eq(st.accounts_reclaimed, N); /* each asked once */
    ck_assert_int_ge(atomic_load(&warnings), 1); /* said so */
    ck_assert_uint_gt(st.used, cfg.max);
    /* The daemon keeps running: claims work, and once the participants
     * cooperate a later episode reaches low water. */
    for (int i = 0; i < N; i++)
        h[i].on_reclaim = NULL;
    for (int i = 0; i < N / 2; i++) {
        memq_release(h[i].p, h[i].held);
        h[i].held = 0;
    }
    ck_assert_uint_le(memq_tracker_used(t), cfg.max);
    ck_assert_int_eq(reclaim_all(t, 100000), 0); /* back under max: nothing to do */
    for (int i = 0; i < N / 2; i++) {
        ck_assert_int_eq(memq_claim(h[i].p, 1 * KIB), 0); /* a true crossing */
        h[i].held = 1 * KIB;
        h[i].stamp = memq_now();
    }
    ck_assert_int_eq(reclaim_all(t, 100000), 0);
    st = stats(t);
    ck_assert_uint_eq(st.episodes, 2);
    ck_assert_uint_eq(st.unreclaimable_events, 1);
    ck_assert_uint_le(st.used, cfg.low_water);
    for (int i = 0; i < N; i++)
        hp_done(&h[i]);
    free(h);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * A slow oldest callback and the time budget
 * ====================================================================== */

START_TEST(test_oldest_callback_slower_than_the_budget_does_not_stall_reclamation)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * KIB;
    cfg.low_water = 32 * KIB;
    cfg.cache_max = 0;
    cfg.reclaim_budget_us = 1;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    hp a, b;
    hp_init(&a, t, NULL, 1, 40 * KIB);
    hp_init(&b, t, NULL, 2, 40 * KIB);
    a.oldest_sleep_ms = b.oldest_sleep_ms = 2;
    ck_assert_int_eq(reclaim_all(t, 50), 0);
    ck_assert_uint_le(stats(t).used, 32 * KIB);
    hp_done(&a);
    hp_done(&b);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * The descriptor after PENDING answers are abandoned
 * ====================================================================== */

START_TEST(test_abandoning_a_pending_answer_makes_the_descriptor_readable_again)
{
    /* Found by check_model.c (seed 19).  The episode sleeps on one PENDING
     * answer (the descriptor is armed at its deadline); then the pending
     * participant is freed (_i == 0) or its account unreffed (_i == 1).
     * Nothing is pending any more and used is above low water: reclaim has
     * work, so the descriptor must be readable now, not when the abandoned
     * answer's deadline passes (reclaim_timeout_ms later: 10 s by
     * default). */
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * KIB;
    cfg.low_water = 32 * KIB;
    cfg.cache_max = 0;
    cfg.reclaim_timeout_ms = 10000;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    hp pending, refuser;
    hp_init(&pending, t, NULL, 1, 20 * KIB);
    hp_init(&refuser, t, NULL, 2, 50 * KIB);
    pending.on_reclaim = answer_pending;
    refuser.on_reclaim = answer_nothing;
    ck_assert_int_eq(reclaim_all(t, 100), MEMQ_EAGAIN);
    ck_assert_int_eq(atomic_load(&pending.reclaims), 1);
    ck_assert_int_eq(atomic_load(&refuser.reclaims), 1);
    int fd = memq_tracker_fd(t);
    ck_assert(!readable(fd)); /* only waiting for the answer */
    if (_i == 0) {
        memq_participation_free(pending.p);
        pending.p = NULL;
    } else {
        memq_account_unref(pending.a);
        pending.a = NULL;
    }
    sleep_ms(20);
    ck_assert_msg(readable(fd), "nothing is pending and used %zu > low_water %zu, but the "
                                "descriptor stays unreadable until the abandoned deadline",
                  memq_tracker_used(t), cfg.low_water);
    ck_assert_int_eq(memq_tracker_reclaim(t), 0); /* ends: nothing reclaimable */
    hp_done(&pending);
    hp_done(&refuser);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * An account that starts holding data from its cache during an episode
 * ====================================================================== */

static int pending_once_calls;

static memq_reclaim_status answer_pending_once(hp *h, const memq_reclaim_request *req)
{
    (void)h;
    (void)req;
    return ++pending_once_calls == 1 ? MEMQ_RECLAIM_PENDING : MEMQ_RECLAIMED_PARTIAL;
}

/* A tracker with a 1 KiB cache (max 64 KiB, low water 32 KiB), and x, an
 * account that started holding memory at 100 ms and now holds only its
 * cache: a 100-byte claim refilled it, the release left 868 bytes. */
static memq_tracker *tracker_with_cache_only_account(hp *x)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * KIB;
    cfg.low_water = 32 * KIB;
    cfg.cache_max = 1024;
    cfg.clock = fake_clock;
    /* The scenarios count on a call getting as far as a PENDING answer:
     * no budget may cut it short, however slow the build (valgrind). */
    cfg.reclaim_budget_us = 10u * 1000 * 1000;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    atomic_store(&fake_now, 100 * MS);
    atomic_store(&call_counter, 0);
    hp_init(x, t, NULL, 100 * MS, 0);
    ck_assert_int_eq(memq_claim(x->p, 100), 0);
    memq_release(x->p, 100);
    return t;
}

START_TEST(test_account_starting_to_hold_data_from_its_cache_during_an_episode_is_a_candidate)
{
    /* Found by check_model.c (seeds 8, 10; _i == 1: seed 2071).  x's
     * participant holds only cached quota when the episode starts, so
     * selection finds no data and sets its account aside; then, while the
     * episode waits for a PENDING answer, it claims data from its cache
     * (behind a gate on offer: the slow path puts it back).  Its data is older than w's, so it must be asked before w,
     * and certainly before the episode gives up as "unreclaimable" while x
     * would free its data. */
    hp x, y, z, w;
    memq_tracker *t = tracker_with_cache_only_account(&x);
    pending_once_calls = 0;
    atomic_store(&fake_now, 1000 * MS);
    hp_init(&y, t, NULL, 1000 * MS, 40 * KIB);
    hp_init(&z, t, NULL, 1000 * MS, 28 * KIB);
    y.on_reclaim = answer_pending_once;
    z.on_reclaim = answer_nothing;
    ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_EAGAIN); /* waits for y */
    atomic_store(&fake_now, 2000 * MS);
    hp *holder = &x;
    hp late;
    if (_i == 1) {
        /* Variant (check_model.c seed 2071): the data comes from a
         * participation registered on x's account after it was dropped. */
        memset(&late, 0, sizeof late);
        late.canary = HP_ALIVE;
        late.order = -1;
        ck_assert_int_eq(memq_participant_register(x.a, &hp_ops, &late, &late.p), 0);
        holder = &late;
    }
    ck_assert_int_eq(memq_claim(holder->p, 500), 0); /* from x's cache, or a new one */
    holder->held = 500;
    holder->stamp = 2000 * MS;
    atomic_store(&fake_now, 3000 * MS);
    hp_init(&w, t, NULL, 3000 * MS, 4 * KIB);
    w.on_reclaim = answer_nothing;
    memq_reclaim_done(y.p, MEMQ_RECLAIMED_PARTIAL);
    ck_assert_int_eq(reclaim_all(t, 1000), 0);
    ck_assert_msg(atomic_load(&holder->reclaims) > 0 && (w.order == -1 || holder->order < w.order),
                  "x (data from 2000 ms, would free it) asked #%d, w (data from 3000 ms) "
                  "asked #%d; unreclaimable events %" PRIu64,
                  holder->order, w.order, stats(t).unreclaimable_events);
    if (_i == 1)
        memq_participation_free(late.p);
    hp_done(&x);
    hp_done(&y);
    hp_done(&z);
    hp_done(&w);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_data_claimed_while_its_account_is_asked_is_found_in_the_same_episode)
{
    /* x holds only cache when asked; it claims from its cache just after
     * the library read its claims, and says it holds nothing.  Its claims
     * after the batch show that it claimed meanwhile, so it is not taken
     * as holding nothing: it is asked again at once, and the same episode
     * reclaims its data (y and z refuse). */
    hp x, y, z;
    memq_tracker *t = tracker_with_cache_only_account(&x);
    x.claim_in_oldest = 500;
    atomic_store(&fake_now, 1000 * MS);
    hp_init(&y, t, NULL, 1000 * MS, 40 * KIB);
    hp_init(&z, t, NULL, 1000 * MS, 28 * KIB);
    y.on_reclaim = answer_nothing;
    z.on_reclaim = answer_nothing;
    ck_assert_int_eq(reclaim_all(t, 1000), 0);
    ck_assert_uint_eq(stats(t).episodes, 1);
    ck_assert_int_gt(atomic_load(&x.reclaims), 0);
    ck_assert_uint_eq(x.held, 0);
    hp_done(&x);
    hp_done(&y);
    hp_done(&z);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * A callback that shuts the tracker down
 * ====================================================================== */

static memq_reclaim_status answer_free_tracker(hp *h, const memq_reclaim_request *req)
{
    (void)req;
    memq_tracker_free(h->t);
    return MEMQ_RECLAIMED_PARTIAL;
}

START_TEST(test_reclaim_callback_freeing_the_tracker)
{
    memq_tracker *t = tracker(64 * KIB, 32 * KIB, _i == 0 ? MEMQ_RECLAIM_MANUAL
                                                           : MEMQ_RECLAIM_THREAD);
    hp h, other;
    hp_init(&h, t, NULL, 1000 * MS, 0);
    hp_init(&other, t, NULL, 2000 * MS, 10 * KIB);
    h.on_reclaim = answer_free_tracker;
    h.held = 80 * KIB;
    ck_assert_int_eq(memq_claim(h.p, 80 * KIB), 0);
    if (_i == 0) {
        ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_ESHUTDOWN);
    } else {
        uint64_t deadline = real_ms() + 5000;
        while (atomic_load(&h.reclaims) == 0 && real_ms() < deadline)
            sleep_ms(1);
        ck_assert_int_eq(atomic_load(&h.reclaims), 1);
        while (!memq_account_closed(other.a) && real_ms() < deadline)
            sleep_ms(1);
    }
    /* The handles stay valid and refuse claims. */
    ck_assert(memq_account_closed(h.a));
    ck_assert_int_eq(memq_claim(other.p, 1), MEMQ_ESHUTDOWN);
    ck_assert_int_eq(memq_claim(h.p, 1), MEMQ_ESHUTDOWN);
    memq_release(other.p, 1);
    ck_assert_int_le(atomic_load(&other.reclaims), 0);
    hp_done(&h);
    hp_done(&other);
}
END_TEST

/* ======================================================================
 * Dumps of unusual account trees
 * ====================================================================== */

START_TEST(test_text_dump_of_a_very_deep_account_chain_does_not_overflow_the_stack)
{
    /* Each account the child of the previous one: the tree walk is
     * iterative for this reason, the text dump must be too. */
    enum { DEPTH = 300000 };
    if (getenv("MEMQ_VALGRIND") != NULL)
        return; /* a crashing child takes minutes under memcheck */
    memq_tracker *t = tracker(64 * MIB, 32 * MIB, MEMQ_RECLAIM_MANUAL);
    memq_account **a = malloc(DEPTH * sizeof *a);
    ck_assert_ptr_nonnull(a);
    for (int i = 0; i < DEPTH; i++)
        ck_assert_int_eq(memq_account_new(t, i ? a[i - 1] : NULL, &a[i]), 0);
    /* In a child, so that a stack overflow fails this test only, also
     * with CK_FORK=no. */
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *f = fopen("/dev/null", "w");
        _exit(f != NULL && memq_tracker_dump(t, f, MEMQ_DUMP_TEXT) == 0 ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the text dump of a %d-deep chain %s %d", DEPTH,
                  WIFSIGNALED(status) ? "died of signal" : "exited with",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    for (int i = DEPTH; i-- > 0;)
        memq_account_unref(a[i]);
    free(a);
    memq_tracker_free(t);
}
END_TEST

static ssize_t count_lines(void *cookie, const char *buf, size_t n)
{
    size_t *lines = cookie;
    for (size_t i = 0; i < n; i++)
        *lines += buf[i] == '\n';
    return (ssize_t)n;
}

START_TEST(test_text_dump_of_a_layered_account_graph_stays_proportional_to_its_size)
{
    /* 18 layers of two accounts, each a child of both accounts of the
     * layer above: 36 accounts.  Printing an account under each of its
     * parents repeats it once per path from a root, 2^layers times: the
     * dump of 36 accounts must not run to 2^18 lines (a daemon that
     * serves its dump could be stalled by a graph of a hundred). */
    enum { LAYERS = 18 };
    memq_tracker *t = tracker(64 * MIB, 32 * MIB, MEMQ_RECLAIM_MANUAL);
    memq_account *layer[LAYERS][2];
    for (int i = 0; i < LAYERS; i++)
        for (int j = 0; j < 2; j++) {
            ck_assert_int_eq(memq_account_new(t, i ? layer[i - 1][0] : NULL, &layer[i][j]), 0);
            if (i > 0)
                ck_assert_int_eq(memq_account_add_parent(layer[i][j], layer[i - 1][1]), 0);
        }
    size_t lines = 0;
    cookie_io_functions_t io = {.write = count_lines};
    FILE *f = fopencookie(&lines, "w", io);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(memq_tracker_dump(t, f, MEMQ_DUMP_TEXT), 0);
    fclose(f);
    ck_assert_msg(lines <= 100 * 2 * LAYERS, "%zu lines for %d accounts", lines, 2 * LAYERS);
    for (int i = LAYERS; i-- > 0;)
        for (int j = 0; j < 2; j++)
            memq_account_unref(layer[i][j]);
    memq_tracker_free(t);
}
END_TEST

static Suite *hostile_suite(void)
{
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("answers");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_reclaim_returning_an_invalid_status_is_misuse_treated_as_partial,
                        0, 4);
    tcase_add_test(tc, test_pending_answer_never_completed_times_out_and_collapses_its_account);
    tcase_add_test(tc, test_participant_claiming_more_while_being_reclaimed_cannot_wedge_the_tracker);
    tcase_add_loop_test(tc, test_participant_freeing_its_own_participation_from_its_reclaim_callback,
                        0, 2);
    tcase_add_test(tc, test_participant_unreffing_its_account_from_its_reclaim_callback);
    tcase_add_loop_test(tc, test_reclaim_callback_freeing_the_tracker, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_thread_mode_free_waits_for_a_sleeping_callback_of_that_participation,
                        0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("ages");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_oldest_reporting_no_data_while_holding_megabytes_is_treated_as_oldest);
    tcase_add_test(tc, test_participant_freed_in_its_oldest_callback_is_not_taken_as_oldest);
    tcase_add_loop_test(tc, test_account_starting_to_hold_data_from_its_cache_during_an_episode_is_a_candidate,
                        0, 2);
    tcase_add_test(tc, test_data_claimed_while_its_account_is_asked_is_found_in_the_same_episode);
    suite_add_tcase(s, tc);

    tc = tcase_create("scale");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_thousands_of_refusing_participants_end_the_episode_and_a_later_one_succeeds);
    tcase_add_test(tc, test_oldest_callback_slower_than_the_budget_does_not_stall_reclamation);
    tcase_add_loop_test(tc, test_abandoning_a_pending_answer_makes_the_descriptor_readable_again, 0,
                        2);
    suite_add_tcase(s, tc);

    tc = tcase_create("dumps");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_text_dump_of_a_very_deep_account_chain_does_not_overflow_the_stack);
    tcase_add_test(tc, test_text_dump_of_a_layered_account_graph_stays_proportional_to_its_size);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hostile_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
