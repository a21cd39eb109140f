/*
 * check_threads.c - the reclaim thread (MEMQ_RECLAIM_THREAD) and
 * concurrency: claimers on several threads, frees racing callbacks,
 * shutdown of a running reclaim thread.
 *
 * Threaded tests run for about a second at most and assert nothing about
 * speed: every wait is bounded by a generous deadline and only guards
 * against a hang.
 */
#include "testutil.h"

#include <pthread.h>

#include "internal.h" /* the age index, to check what it holds */

#define DEADLINE_MS 10000

/* Wait until *flag is non-zero (at most DEADLINE_MS); returns its value. */
static int wait_for(atomic_int *flag)
{
    for (int i = 0; i < DEADLINE_MS && atomic_load(flag) == 0; i++)
        sleep_ms(1);
    return atomic_load(flag);
}

/* Wait (at most DEADLINE_MS) until *x reaches at least n. */
static void wait_at_least(atomic_long *x, long n)
{
    for (int i = 0; i < DEADLINE_MS && atomic_load(x) < n; i++)
        sleep_ms(1);
}

/* ----------------------------------------------------------------------
 * A thread-safe fake participant: the owner and the reclaim callbacks
 * serialise on its mutex, as a real queue would.
 * ---------------------------------------------------------------------- */

typedef struct tpart {
    pthread_mutex_t mu;
    memq_participation *p;
    memq_account *account;
    size_t claimed;  /* the test's record */
    memq_time oldest;
    atomic_int reclaims;
} tpart;

static bool tpart_oldest(void *self, memq_time *when)
{
    tpart *tp = self;
    pthread_mutex_lock(&tp->mu);
    bool has = tp->claimed > 0;
    if (has)
        *when = tp->oldest;
    pthread_mutex_unlock(&tp->mu);
    return has;
}

/* Frees half of what it holds (at least one byte); what is left counts as
 * new data. */
static memq_reclaim_status tpart_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)req;
    tpart *tp = self;
    pthread_mutex_lock(&tp->mu);
    size_t n = (tp->claimed + 1) / 2;
    if (n > 0) {
        memq_release(tp->p, n);
        tp->claimed -= n;
    }
    tp->oldest = memq_now();
    pthread_mutex_unlock(&tp->mu);
    atomic_fetch_add(&tp->reclaims, 1);
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops tpart_ops = { tpart_oldest, tpart_reclaim };

static void tpart_init(tpart *tp, memq_tracker *t)
{
    memset(tp, 0, sizeof *tp);
    pthread_mutex_init(&tp->mu, NULL);
    ck_assert_int_eq(memq_account_new(t, NULL, &tp->account), 0);
    ck_assert_int_eq(memq_participant_register(tp->account, &tpart_ops, tp, &tp->p), 0);
}

/* Claim under the participant's mutex; returns memq_claim's answer. */
static int tpart_claim(tpart *tp, size_t n)
{
    pthread_mutex_lock(&tp->mu);
    int rc = memq_claim(tp->p, n);
    if (rc == 0) {
        if (tp->claimed == 0)
            tp->oldest = memq_now();
        tp->claimed += n;
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

static void tpart_release(tpart *tp, size_t n)
{
    pthread_mutex_lock(&tp->mu);
    if (n > tp->claimed)
        n = tp->claimed;
    memq_release(tp->p, n);
    tp->claimed -= n;
    pthread_mutex_unlock(&tp->mu);
}

static void tpart_destroy(tpart *tp)
{
    memq_participation_free(tp->p); /* not under tp->mu: it may wait for a callback */
    memq_account_unref(tp->account);
    pthread_mutex_destroy(&tp->mu);
}

static memq_tracker *thread_tracker(size_t max, size_t low_water, size_t cache_max)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = max;
    cfg.low_water = low_water;
    cfg.cache_max = cache_max;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    return t;
}

/* ----------------------------------------------------------------------
 * Claimers on two threads while the reclaim thread reclaims
 * ---------------------------------------------------------------------- */

enum { PER_THREAD = 4, THREADS = 2, CACHE = 4 * KIB };

typedef struct claimer {
    tpart *parts;
    uint64_t seed;
    atomic_bool *stop;
    int failures;
    atomic_long ops; /* read by the main thread while it runs */
} claimer;

static void *claimer_main(void *arg)
{
    claimer *c = arg;
    uint64_t rng = c->seed;
    while (!atomic_load(c->stop)) {
        tpart *tp = &c->parts[rng_below(&rng, PER_THREAD)];
        if (rng_below(&rng, 100) < 55) {
            if (tpart_claim(tp, 1 + rng_below(&rng, 3000)) != 0)
                c->failures++;
        } else {
            tpart_release(tp, 1 + rng_below(&rng, 3000));
        }
        atomic_fetch_add(&c->ops, 1);
        spin_turn();
    }
    return NULL;
}

/* Two trackers: with a narrow band every refill and return takes the
 * tracker's lock; with a wide one (16 MiB, 8 MiB) they go without it while
 * no reclamation is wanted, into per-thread slices of the total. */
static const size_t claimers_max[2] = {256 * KIB, 16 * 1024 * KIB};

START_TEST(test_concurrent_claimers_keep_used_equal_to_their_records)
{
    memq_tracker *t = thread_tracker(claimers_max[_i], claimers_max[_i] / 2, CACHE);
    static tpart parts[THREADS][PER_THREAD];
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            tpart_init(&parts[i][j], t);

    atomic_bool stop = false;
    claimer claimers[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        claimers[i] = (claimer){ parts[i], 0x1234567ULL * (uint64_t)(i + 1), &stop, 0, 0 };
        ck_assert_int_eq(pthread_create(&threads[i], NULL, claimer_main, &claimers[i]), 0);
    }
    /* At least 1.2 s, until both claimers have run, and until the reclaim
     * thread has reclaimed: under
     * valgrind the threads are serialised and may need longer. */
    sleep_ms(1200);
    for (int i = 0; i < THREADS; i++)
        wait_at_least(&claimers[i].ops, 1);
    memq_stats st;
    for (int i = 0; i < DEADLINE_MS; i += 10) {
        memq_tracker_stats(t, &st);
        if (st.accounts_reclaimed > 0)
            break;
        sleep_ms(10);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);

    /* With every participant's mutex held nothing can claim or release. */
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            pthread_mutex_lock(&parts[i][j].mu);
    size_t sum = 0;
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            sum += parts[i][j].claimed;
    size_t used = memq_tracker_used(t);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            pthread_mutex_unlock(&parts[i][j].mu);

    memq_tracker_stats(t, &st);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            tpart_destroy(&parts[i][j]);
    memq_tracker_free(t);

    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(claimers[i].failures, 0);
        ck_assert_int_gt(atomic_load(&claimers[i].ops), 0);
    }
    ck_assert_uint_gt(st.accounts_reclaimed, 0); /* the reclaim thread did work */
    ck_assert_msg(used >= sum && used - sum <= THREADS * PER_THREAD * CACHE,
                  "used %zu, records %zu, bound %d", used, sum, THREADS * PER_THREAD * CACHE);
}
END_TEST

/* Accounts and participations opened and closed on two threads while the
 * reclaim thread reclaims them. */
typedef struct churner {
    memq_tracker *t;
    uint64_t seed;
    atomic_bool *stop;
    int failures;
    atomic_long ops; /* read by the main thread while it runs */
} churner;

static void *churn_main(void *arg)
{
    churner *c = arg;
    memq_tracker *t = c->t;
    uint64_t rng = c->seed;
    while (!atomic_load(c->stop)) {
        tpart *tp = malloc(sizeof *tp);
        if (tp == NULL)
            break;
        memset(tp, 0, sizeof *tp);
        pthread_mutex_init(&tp->mu, NULL);
        if (memq_account_new(t, NULL, &tp->account) != 0 ||
            memq_participant_register(tp->account, &tpart_ops, tp, &tp->p) != 0) {
            c->failures++;
            break;
        }
        for (int k = 0; k < 20; k++)
            if (tpart_claim(tp, 1 + rng_below(&rng, 8000)) != 0)
                c->failures++;
        tpart_release(tp, rng_below(&rng, 20000));
        if (rng_below(&rng, 2)) { /* either order of the two frees */
            memq_participation_free(tp->p);
            memq_account_unref(tp->account);
        } else {
            memq_account_unref(tp->account);
            memq_participation_free(tp->p);
        }
        pthread_mutex_destroy(&tp->mu);
        free(tp);
        atomic_fetch_add(&c->ops, 1);
        spin_turn();
    }
    return NULL;
}

/* As with the claimers: a narrow band, and a wide one where refills and
 * returns go without the tracker's lock while accounts close around them. */
static const size_t churn_max[2] = {64 * KIB, 16 * 1024 * KIB};

START_TEST(test_accounts_opened_and_closed_during_reclamation_leave_nothing_counted)
{
    memq_tracker *t = thread_tracker(churn_max[_i], churn_max[_i] / 2, CACHE);
    atomic_bool stop = false;
    churner churners[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        churners[i] = (churner){ t, 0x9876543ULL * (uint64_t)(i + 1), &stop, 0, 0 };
        ck_assert_int_eq(pthread_create(&threads[i], NULL, churn_main, &churners[i]), 0);
    }
    /* About a second, and until both churners have run (under valgrind
     * the threads are serialised and one may wait a long time). */
    sleep_ms(1000);
    for (int i = 0; i < THREADS; i++)
        wait_at_least(&churners[i].ops, 1);
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    size_t used = memq_tracker_used(t);
    memq_stats st;
    memq_tracker_stats(t, &st);
    memq_tracker_free(t);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(churners[i].failures, 0);
        ck_assert_int_gt(atomic_load(&churners[i].ops), 0);
    }
    ck_assert_uint_eq(used, 0);
    ck_assert_uint_eq(st.accounts, 0);
    ck_assert_uint_eq(st.participants, 0);
}
END_TEST

/* Refills and returns without the tracker's lock (a wide band) on one
 * thread while another closes the account by dropping its last reference:
 * whichever wins, nothing stays counted once the participation is freed,
 * and the owner's claims fail with MEMQ_ECLOSED from the close on. */
typedef struct closer_race {
    tpart *tp;
    atomic_bool *stop;
    atomic_long ops, closed_claims;
    int failures;
} closer_race;

static void *closer_race_owner(void *arg)
{
    closer_race *c = arg;
    uint64_t rng = 0x51ed;
    while (!atomic_load(c->stop)) {
        int rc = tpart_claim(c->tp, 1 + rng_below(&rng, 9000));
        if (rc == MEMQ_ECLOSED)
            atomic_fetch_add(&c->closed_claims, 1);
        else if (rc != 0)
            c->failures++;
        tpart_release(c->tp, rng_below(&rng, 9000));
        atomic_fetch_add(&c->ops, 1);
        spin_turn();
    }
    return NULL;
}


START_TEST(test_account_closed_under_refills_without_the_lock_leaves_nothing_counted)
{
    memq_tracker *t = thread_tracker(16 * 1024 * KIB, 8 * 1024 * KIB, CACHE);
    for (int round = 0; round < 20; round++) {
        tpart tp;
        tpart_init(&tp, t);
        atomic_bool stop = false;
        closer_race c = {&tp, &stop, 0, 0, 0};
        pthread_t owner;
        ck_assert_int_eq(pthread_create(&owner, NULL, closer_race_owner, &c), 0);
        wait_at_least(&c.ops, 1000);
        memq_account_unref(tp.account); /* the last reference: closes it */
        tp.account = NULL;
        wait_at_least(&c.closed_claims, 10);
        atomic_store(&stop, true);
        pthread_join(owner, NULL);
        ck_assert_int_eq(c.failures, 0);
        ck_assert_int_gt(atomic_load(&c.closed_claims), 0);
        memq_participation_free(tp.p);
        pthread_mutex_destroy(&tp.mu);
        ck_assert_uint_eq(memq_tracker_used(t), 0);
    }
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_reclaim_thread_brings_use_down_to_low_water)
{
    /* Ten claims stay under max; the eleventh crosses it, and nothing is
     * claimed after (a later claim could legitimately leave use between
     * low water and max). */
    memq_tracker *t = thread_tracker(512 * KIB, 256 * KIB, 0);
    static tpart parts[11];
    for (int i = 0; i < 11; i++)
        tpart_init(&parts[i], t);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tpart_claim(&parts[i], 50 * KIB), 0);
    ck_assert_int_eq(tpart_claim(&parts[10], 100 * KIB), 0);
    for (int i = 0; i < DEADLINE_MS && memq_tracker_used(t) > 256 * KIB; i++)
        sleep_ms(1);
    size_t used = memq_tracker_used(t);
    for (int i = 0; i < 11; i++)
        tpart_destroy(&parts[i]);
    memq_tracker_free(t);
    ck_assert_uint_le(used, 256 * KIB);
}
END_TEST

/* ----------------------------------------------------------------------
 * A slow participant: its reclaim callback sleeps, so that other threads
 * act while it runs.
 * ---------------------------------------------------------------------- */

typedef struct observer {
    atomic_int entered;         /* a reclaim callback started */
    atomic_int in_callback;     /* callbacks running now */
    atomic_int calls;           /* callbacks of any kind */
    atomic_int calls_after_free;
    atomic_int freed;           /* set once memq_participation_free returned */
} observer;

typedef struct slow_part {
    observer *obs;
    memq_participation *p;
    unsigned sleep_ms;
    size_t release_after_sleep; /* bytes the callback releases, as it must */
    int touched; /* written at the end of the callback: ASan sees a late one */
} slow_part;

static bool slow_oldest(void *self, memq_time *when)
{
    slow_part *sp = self;
    atomic_fetch_add(&sp->obs->calls, 1);
    if (atomic_load(&sp->obs->freed))
        atomic_fetch_add(&sp->obs->calls_after_free, 1);
    *when = 1;
    return true;
}

static memq_reclaim_status slow_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)req;
    slow_part *sp = self;
    observer *obs = sp->obs;
    atomic_fetch_add(&obs->calls, 1);
    if (atomic_load(&obs->freed))
        atomic_fetch_add(&obs->calls_after_free, 1);
    atomic_fetch_add(&obs->in_callback, 1);
    atomic_store(&obs->entered, 1);
    sleep_ms(sp->sleep_ms);
    if (sp->release_after_sleep)
        memq_release(sp->p, sp->release_after_sleep);
    sp->touched++;
    atomic_fetch_sub(&obs->in_callback, 1);
    return MEMQ_RECLAIMED_PARTIAL; /* frees nothing */
}

static const memq_participant_ops slow_ops = { slow_oldest, slow_reclaim };

static slow_part *slow_part_new(memq_account *a, observer *obs, unsigned ms)
{
    slow_part *sp = calloc(1, sizeof *sp);
    ck_assert_ptr_nonnull(sp);
    sp->obs = obs;
    sp->sleep_ms = ms;
    ck_assert_int_eq(memq_participant_register(a, &slow_ops, sp, &sp->p), 0);
    return sp;
}

START_TEST(test_participation_free_waits_for_a_running_callback)
{
    static observer obs;
    memset(&obs, 0, sizeof obs);
    memq_tracker *t = thread_tracker(1000, 500, 0);
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    slow_part *sp = slow_part_new(a, &obs, 300);
    ck_assert_int_eq(memq_claim(sp->p, 2000), 0); /* wakes the reclaim thread */
    ck_assert_int_eq(wait_for(&obs.entered), 1);
    memq_participation_free(sp->p);
    int still_running = atomic_load(&obs.in_callback);
    atomic_store(&obs.freed, 1);
    free(sp); /* a callback still using it would be a use after free */
    memq_account_unref(a);
    memq_tracker_free(t);
    ck_assert_int_eq(still_running, 0);
}
END_TEST

START_TEST(test_callback_may_release_while_its_participation_is_freed_elsewhere)
{
    /* The owner may not hold the lock its callbacks take while freeing, so
     * a callback's memq_release() and the owner's memq_participation_free()
     * meet; the free waits for the callback (TSan checks the rest). */
    static observer obs;
    memset(&obs, 0, sizeof obs);
    memq_tracker *t = thread_tracker(1000, 500, 0);
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    slow_part *sp = slow_part_new(a, &obs, 200);
    sp->release_after_sleep = 1500;
    ck_assert_int_eq(memq_claim(sp->p, 2000), 0);
    ck_assert_int_eq(wait_for(&obs.entered), 1);
    memq_participation_free(sp->p);
    int still_running = atomic_load(&obs.in_callback);
    atomic_store(&obs.freed, 1);
    size_t used = memq_tracker_used(t);
    free(sp);
    memq_account_unref(a);
    memq_tracker_free(t);
    ck_assert_int_eq(still_running, 0);
    ck_assert_uint_eq(used, 0);
}
END_TEST

START_TEST(test_no_callback_runs_after_participation_free_on_another_thread)
{
    static observer obs;
    memset(&obs, 0, sizeof obs);
    memq_tracker *t = thread_tracker(1000, 500, 0);
    memq_account *a = NULL, *b = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    ck_assert_int_eq(memq_account_new(t, NULL, &b), 0);
    slow_part *sp = slow_part_new(a, &obs, 100);
    static observer other_obs;
    memset(&other_obs, 0, sizeof other_obs);
    slow_part *other = slow_part_new(b, &other_obs, 1);
    ck_assert_int_eq(memq_claim(sp->p, 2000), 0);
    ck_assert_int_eq(memq_claim(other->p, 2000), 0); /* keeps reclamation going */
    ck_assert_int_eq(wait_for(&obs.entered), 1);
    memq_participation_free(sp->p);
    atomic_store(&obs.freed, 1);
    for (int i = 0; i < 20; i++) { /* cross max again and again */
        memq_release(other->p, 1500);
        ck_assert_int_eq(memq_claim(other->p, 1500), 0);
        sleep_ms(10);
    }
    memq_participation_free(other->p);
    memq_account_unref(a);
    memq_account_unref(b);
    memq_tracker_free(t);
    ck_assert_int_gt(atomic_load(&other_obs.calls), 0);
    ck_assert_int_eq(atomic_load(&obs.calls_after_free), 0);
    free(sp);
    free(other);
}
END_TEST

START_TEST(test_tracker_free_waits_for_a_running_callback)
{
    static observer obs;
    memset(&obs, 0, sizeof obs);
    memq_tracker *t = thread_tracker(1000, 500, 0);
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    slow_part *sp = slow_part_new(a, &obs, 300);
    ck_assert_int_eq(memq_claim(sp->p, 2000), 0);
    ck_assert_int_eq(wait_for(&obs.entered), 1);
    memq_tracker_free(t);
    int still_running = atomic_load(&obs.in_callback);
    ck_assert_int_eq(memq_claim(sp->p, 1), MEMQ_ESHUTDOWN);
    memq_participation_free(sp->p);
    memq_account_unref(a);
    free(sp);
    ck_assert_int_eq(still_running, 0);
}
END_TEST

START_TEST(test_no_callback_runs_after_tracker_free_returns)
{
    static observer obs;
    memset(&obs, 0, sizeof obs);
    memq_tracker *t = thread_tracker(1000, 500, 0);
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    slow_part *sp = slow_part_new(a, &obs, 50);
    ck_assert_int_eq(memq_claim(sp->p, 2000), 0);
    ck_assert_int_eq(wait_for(&obs.entered), 1);
    memq_tracker_free(t);
    int calls = atomic_load(&obs.calls);
    sleep_ms(200);
    int later = atomic_load(&obs.calls);
    memq_participation_free(sp->p);
    memq_account_unref(a);
    free(sp);
    ck_assert_int_eq(later, calls);
}
END_TEST

START_TEST(test_tracker_free_of_an_idle_reclaim_thread_is_clean)
{
    memq_tracker *t = thread_tracker(1 * MIB, 512 * KIB, CACHE);
    tpart tp;
    tpart_init(&tp, t);
    ck_assert_int_eq(tpart_claim(&tp, 1000), 0);
    memq_tracker_free(t);
    ck_assert_int_eq(memq_claim(tp.p, 1), MEMQ_ESHUTDOWN);
    tpart_destroy(&tp);
}
END_TEST

/* ----------------------------------------------------------------------
 * The reclaim thread waiting for a PENDING answer
 * ---------------------------------------------------------------------- */

/* Holds `held` bytes of old data; answers every request PENDING and
 * leaves the work to the test (its owner), which answers later. */
typedef struct deferring {
    memq_participation *p;
    _Atomic size_t held;
    atomic_int asked;
} deferring;

static bool deferring_oldest(void *self, memq_time *when)
{
    deferring *d = self;
    if (atomic_load(&d->held) == 0)
        return false;
    *when = 1;
    return true;
}

static memq_reclaim_status deferring_reclaim(void *self, const memq_reclaim_request *req)
{
    deferring *d = self;
    (void)req;
    atomic_fetch_add(&d->asked, 1);
    return MEMQ_RECLAIM_PENDING;
}

START_TEST(test_reclaim_thread_waits_for_a_pending_answer_and_ends_the_episode_when_it_comes)
{
    static const memq_participant_ops ops = {deferring_oldest, deferring_reclaim};
    memq_tracker *t = thread_tracker(64 * KIB, 32 * KIB, 0);
    memq_account *a;
    deferring d;
    memset(&d, 0, sizeof d);
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    ck_assert_int_eq(memq_participant_register(a, &ops, &d, &d.p), 0);
    atomic_store(&d.held, 100 * KIB);
    ck_assert_int_eq(memq_claim(d.p, 100 * KIB), 0); /* crosses max */
    ck_assert_int_eq(wait_for(&d.asked), 1);
    sleep_ms(50); /* the thread waits: several of its polls go by */
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_int_eq(atomic_load(&d.asked), 1); /* not asked again meanwhile */
    ck_assert_uint_eq(st.used, 100 * KIB);
    ck_assert_uint_eq(st.callback_timeouts, 0);
    /* The owner finishes the work and answers. */
    memq_release(d.p, 100 * KIB);
    atomic_store(&d.held, 0);
    memq_reclaim_done(d.p, MEMQ_RECLAIMED_PARTIAL);
    for (int i = 0; i < DEADLINE_MS; i++) {
        memq_tracker_stats(t, &st);
        if (st.partial_reclaims == 1 && !fd_readable(memq_tracker_fd(t)))
            break;
        sleep_ms(1);
    }
    ck_assert_uint_eq(st.partial_reclaims, 1);
    ck_assert_uint_eq(st.used, 0);
    ck_assert_uint_eq(st.episodes, 1);
    ck_assert_uint_eq(st.unreclaimable_events, 0);
    ck_assert(!memq_account_closed(a));
    memq_participation_free(d.p);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Wakeup in thread mode, and concurrent manual reclaim calls
 * ---------------------------------------------------------------------- */

typedef struct wakeup_record {
    pthread_mutex_t mu;
    pthread_t thread;
    int calls;
} wakeup_record;

static void record_wakeup(void *ctx)
{
    wakeup_record *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->thread = pthread_self();
    r->calls++;
    pthread_mutex_unlock(&r->mu);
}

typedef struct crossing {
    tpart *tp;
    int rc;
} crossing;

static void *cross_max(void *arg)
{
    crossing *c = arg;
    c->rc = tpart_claim(c->tp, 2 * MIB);
    return NULL;
}

START_TEST(test_wakeup_runs_on_the_thread_whose_claim_crossed_max)
{
    static wakeup_record rec;
    memset(&rec, 0, sizeof rec);
    pthread_mutex_init(&rec.mu, NULL);
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    cfg.low_water = 512 * KIB;
    cfg.cache_max = 0;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    cfg.wakeup = record_wakeup;
    cfg.wakeup_ctx = &rec;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    tpart tp;
    tpart_init(&tp, t);
    crossing c = { &tp, -100 };
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, cross_max, &c), 0);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&rec.mu);
    int calls = rec.calls;
    bool on_claimer = calls > 0 && pthread_equal(rec.thread, thread);
    pthread_mutex_unlock(&rec.mu);
    tpart_destroy(&tp);
    memq_tracker_free(t);
    pthread_mutex_destroy(&rec.mu);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_int_eq(calls, 1);
    ck_assert(on_claimer);
}
END_TEST

typedef struct reclaimer {
    memq_tracker *t;
    int rc;
} reclaimer;

static void *reclaim_main(void *arg)
{
    reclaimer *r = arg;
    r->rc = memq_tracker_reclaim(r->t);
    return NULL;
}

START_TEST(test_second_thread_reclaiming_during_reclamation_gets_eagain)
{
    static observer obs;
    memset(&obs, 0, sizeof obs);
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1000;
    cfg.low_water = 500;
    cfg.cache_max = 0;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0); /* manual mode */
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    slow_part *sp = slow_part_new(a, &obs, 300);
    ck_assert_int_eq(memq_claim(sp->p, 2000), 0);
    reclaimer first = { t, -100 };
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, reclaim_main, &first), 0);
    ck_assert_int_eq(wait_for(&obs.entered), 1);
    int second = memq_tracker_reclaim(t); /* while the first is in a callback */
    int still_running = atomic_load(&obs.in_callback);
    pthread_join(thread, NULL);
    memq_participation_free(sp->p);
    memq_account_unref(a);
    memq_tracker_free(t);
    free(sp);
    ck_assert_int_eq(still_running, 1);
    ck_assert_int_eq(second, MEMQ_EAGAIN);
}
END_TEST

/* ----------------------------------------------------------------------
 * memq_claim_at() racing a close; reconfiguration racing claims
 * ---------------------------------------------------------------------- */

typedef struct claim_at_race {
    memq_participation *p;
    atomic_int started;
    int unexpected;
} claim_at_race;

/* Claims old data, one byte at a time, until the account is closed. */
static void *claim_at_until_closed(void *arg)
{
    claim_at_race *r = arg;
    for (;;) {
        int rc = memq_claim_at(r->p, 1, memq_now() > 1000 ? memq_now() - 1000 : 0);
        atomic_store(&r->started, 1);
        if (rc == MEMQ_ECLOSED)
            return NULL;
        if (rc != 0) {
            r->unexpected++;
            return NULL;
        }
        spin_turn(); /* under memcheck, let the main thread reach its close */
    }
}

START_TEST(test_claim_at_racing_a_close_never_puts_a_closed_account_in_the_index)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1024 * MIB;
    cfg.cache_max = 0;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    for (int round = 0; round < 200; round++) {
        memq_account *a = NULL;
        ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
        claim_at_race r = {0};
        static const memq_participant_ops ops = {tpart_oldest, tpart_reclaim};
        tpart tp;
        memset(&tp, 0, sizeof tp);
        ck_assert_int_eq(memq_participant_register(a, &ops, &tp, &r.p), 0);
        pthread_t owner;
        ck_assert_int_eq(pthread_create(&owner, NULL, claim_at_until_closed, &r), 0);
        wait_for(&r.started);
        memq_account_unref(a); /* the last reference: closes it */
        pthread_join(owner, NULL);
        ck_assert_int_eq(r.unexpected, 0);
        memq_participation_free(r.p); /* the account's memory goes now */
        pthread_mutex_lock(&t->lock);
        size_t indexed = t->ages_n;
        pthread_mutex_unlock(&t->lock);
        ck_assert_msg(indexed == 0, "round %d: %zu accounts left in the index", round, indexed);
    }
    memq_tracker_free(t);
}
END_TEST

typedef struct reconfigurer {
    memq_tracker *t;
    memq_config cfg;
    atomic_bool *stop;
    atomic_long ops;
    int failures;
} reconfigurer;

static void *reconfigure_main(void *arg)
{
    reconfigurer *r = arg;
    while (!atomic_load(r->stop)) {
        if (memq_tracker_reconfigure(r->t, &r->cfg) != 0)
            r->failures++;
        atomic_fetch_add(&r->ops, 1);
        spin_turn();
    }
    return NULL;
}

static memq_time counting_clock(void *ctx)
{
    (void)ctx;
    return memq_now();
}

/* Run under `make check-tsan`: reconfiguration must not race with what
 * claims read without the lock (the clock above all). */
START_TEST(test_reconfigure_racing_claims_is_free_of_data_races)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * MIB;
    cfg.cache_max = 0; /* every claim takes the slow path */
    cfg.clock = counting_clock;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    static const memq_participant_ops ops = {tpart_oldest, tpart_reclaim};
    tpart tp;
    memset(&tp, 0, sizeof tp);
    memq_participation *p = NULL;
    ck_assert_int_eq(memq_participant_register(a, &ops, &tp, &p), 0);
    atomic_bool stop = false;
    reconfigurer r = {t, cfg, &stop, 0, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, reconfigure_main, &r), 0);
    wait_at_least(&r.ops, 1);
    for (int i = 0; i < 20000; i++) {
        ck_assert_int_eq(memq_claim(p, 100), 0); /* enters the index: reads the clock */
        memq_release(p, 100);
    }
    atomic_store(&stop, true);
    pthread_join(th, NULL);
    ck_assert_int_eq(r.failures, 0);
    memq_participation_free(p);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc;

    tc = test_case("claimers");
    tcase_add_loop_test(tc, test_concurrent_claimers_keep_used_equal_to_their_records, 0, 2);
    tcase_add_loop_test(tc, test_accounts_opened_and_closed_during_reclamation_leave_nothing_counted,
                        0, 2);
    tcase_add_test(tc, test_account_closed_under_refills_without_the_lock_leaves_nothing_counted);
    tcase_add_test(tc, test_reclaim_thread_brings_use_down_to_low_water);
    suite_add_tcase(s, tc);

    tc = test_case("free");
    tcase_add_test(tc, test_participation_free_waits_for_a_running_callback);
    tcase_add_test(tc, test_callback_may_release_while_its_participation_is_freed_elsewhere);
    tcase_add_test(tc, test_no_callback_runs_after_participation_free_on_another_thread);
    tcase_add_test(tc, test_tracker_free_waits_for_a_running_callback);
    tcase_add_test(tc, test_no_callback_runs_after_tracker_free_returns);
    tcase_add_test(tc, test_tracker_free_of_an_idle_reclaim_thread_is_clean);
    tcase_add_test(tc, test_reclaim_thread_waits_for_a_pending_answer_and_ends_the_episode_when_it_comes);
    suite_add_tcase(s, tc);

    tc = test_case("races");
    tcase_add_test(tc, test_claim_at_racing_a_close_never_puts_a_closed_account_in_the_index);
    tcase_add_test(tc, test_reconfigure_racing_claims_is_free_of_data_races);
    suite_add_tcase(s, tc);

    tc = test_case("wakeup");
    tcase_add_test(tc, test_wakeup_runs_on_the_thread_whose_claim_crossed_max);
    tcase_add_test(tc, test_second_thread_reclaiming_during_reclamation_gets_eagain);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
