/*
 * check_participation.c - registering participants, claims and releases,
 * the local cache and its over-count bound, misuse, closed and shut-down
 * trackers, overflow.
 */
#include "testutil.h"

#include "internal.h" /* the state a failed claim must leave as it was */

#define BIG_MAX (1 * GIB)

/* A world whose max is far away (no reclamation) with the given cache. */
static void world_cached(fake_world *w, size_t cache_max)
{
    world_init(w, BIG_MAX, 0);
    w->cfg.cache_max = cache_max;
    world_start(w);
}

/* ----------------------------------------------------------------------
 * Registration
 * ---------------------------------------------------------------------- */

static bool never_oldest(void *self, memq_time *when)
{
    (void)self;
    (void)when;
    return false;
}

START_TEST(test_register_rejects_null_arguments)
{
    fake_world w;
    world_cached(&w, 0);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    memset(&fp, 0, sizeof fp);
    memq_participation *sentinel = (memq_participation *)&w;
    memq_participation *p = sentinel;
    ck_assert_int_eq(memq_participant_register(NULL, fake_ops(), &fp, &p), MEMQ_EINVAL);
    ck_assert_int_eq(memq_participant_register(a, NULL, &fp, &p), MEMQ_EINVAL);
    ck_assert_int_eq(memq_participant_register(a, fake_ops(), &fp, NULL), MEMQ_EINVAL);
    ck_assert_ptr_eq(p, sentinel);
    ck_assert_uint_eq(world_stats(&w).participants, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_register_rejects_null_callbacks)
{
    fake_world w;
    world_cached(&w, 0);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    memset(&fp, 0, sizeof fp);
    memq_participant_ops no_reclaim = { never_oldest, NULL };
    memq_participant_ops no_oldest = { NULL, fake_reclaim };
    memq_participation *sentinel = (memq_participation *)&w;
    memq_participation *p = sentinel;
    ck_assert_int_eq(memq_participant_register(a, &no_reclaim, &fp, &p), MEMQ_EINVAL);
    ck_assert_int_eq(memq_participant_register(a, &no_oldest, &fp, &p), MEMQ_EINVAL);
    ck_assert_ptr_eq(p, sentinel);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_registered_participations)
{
    fake_world w;
    world_cached(&w, 0);
    memq_account *a = world_account(&w, NULL);
    fake_part parts[3];
    for (int i = 0; i < 3; i++)
        part_add(&w, &parts[i], i, a);
    ck_assert_uint_eq(world_stats(&w).participants, 3);
    part_free(&parts[1]);
    ck_assert_uint_eq(world_stats(&w).participants, 2);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Claims and releases
 * ---------------------------------------------------------------------- */

START_TEST(test_accounting_is_exact_with_cache_max_zero)
{
    fake_world w;
    world_cached(&w, 0);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_int_eq(memq_claim(fp.p, 1), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 101);
    memq_release(fp.p, 40);
    ck_assert_uint_eq(memq_tracker_used(w.t), 61);
    memq_release(fp.p, 61);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_participation_claimed_follows_claims_and_releases)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    ck_assert_int_eq(memq_claim(fp.p, 5000), 0);
    ck_assert_int_eq(memq_claim(fp.p, 50000), 0);
    memq_release(fp.p, 7);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 54993);
    ck_assert_uint_eq(memq_participation_claimed(NULL), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_claim_of_zero_bytes_changes_nothing)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 0), 0);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_claims_over_max_are_never_refused)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 10000);
    world_teardown(&w);
}
END_TEST

START_TEST(test_freeing_a_participation_releases_its_claims)
{
    fake_world w;
    world_cached(&w, 0);
    memq_account *a = world_account(&w, NULL);
    fake_part keep, gone;
    part_add(&w, &keep, 1, a);
    part_add(&w, &gone, 2, a);
    ck_assert_int_eq(memq_claim(keep.p, 10), 0);
    ck_assert_int_eq(memq_claim(gone.p, 500), 0);
    part_free(&gone);
    ck_assert_uint_eq(memq_tracker_used(w.t), 10);
    ck_assert_uint_eq(memq_account_used(a), 10);
    world_teardown(&w);
}
END_TEST

START_TEST(test_freeing_every_participation_returns_the_caches_too)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    memq_account *a = world_account(&w, NULL);
    fake_part parts[8];
    for (int i = 0; i < 8; i++) {
        part_add(&w, &parts[i], i, a);
        ck_assert_int_eq(memq_claim(parts[i].p, 1000 * (size_t)(i + 1)), 0);
        memq_release(parts[i].p, 500);
    }
    for (int i = 0; i < 8; i++)
        part_free(&parts[i]);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_participation_free_ignores_null)
{
    memq_participation_free(NULL);
    memq_release(NULL, 10);
    memq_reclaim_done(NULL, MEMQ_RECLAIMED_PARTIAL);
}
END_TEST

START_TEST(test_claim_rejects_a_null_participation)
{
    ck_assert_int_eq(memq_claim(NULL, 1), MEMQ_EINVAL);
    ck_assert_int_eq(memq_claim(NULL, 0), MEMQ_EINVAL);
}
END_TEST

/* ----------------------------------------------------------------------
 * The cache and its bound
 * ---------------------------------------------------------------------- */

START_TEST(test_participation_that_never_claimed_adds_nothing_to_used)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    memq_account *a = world_account(&w, NULL);
    static fake_part parts[200];
    for (int i = 0; i < 200; i++)
        part_add(&w, &parts[i], i, a);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    ck_assert_uint_eq(world_stats(&w).used, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_first_claim_counts_at_most_one_cache_extra)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 1), 0);
    size_t used = memq_tracker_used(w.t);
    ck_assert_uint_ge(used, 1);
    ck_assert_uint_le(used, 1 + 16 * KIB);
    world_teardown(&w);
}
END_TEST

START_TEST(test_overcount_is_at_most_cache_max_per_participation)
{
    fake_world w;
    world_cached(&w, 4 * KIB);
    memq_account *a = world_account(&w, NULL);
    enum { N = 50 };
    static fake_part parts[N];
    size_t sum = 0;
    for (int i = 0; i < N; i++) {
        part_add(&w, &parts[i], i, a);
        size_t n = 1 + (size_t)i * 997;
        ck_assert_int_eq(memq_claim(parts[i].p, n), 0);
        sum += n;
        if (i % 3 == 0) {
            memq_release(parts[i].p, n / 2);
            sum -= n / 2;
        }
    }
    size_t used = memq_tracker_used(w.t);
    ck_assert_uint_ge(used, sum);
    ck_assert_uint_le(used - sum, N * 4 * KIB);
    world_teardown(&w);
}
END_TEST

START_TEST(test_release_of_everything_leaves_at_most_one_cache_counted)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 1 * MIB), 0);
    memq_release(fp.p, 1 * MIB);
    ck_assert_uint_le(memq_tracker_used(w.t), 16 * KIB);
    world_teardown(&w);
}
END_TEST

/* 10,000 random claims and releases over several participations; after
 * every step the tracker's total is compared with the test's own record. */
static void random_walk(size_t cache_max)
{
    enum { N = 6, STEPS = 10000 };
    fake_world w;
    world_cached(&w, cache_max);
    memq_account *accounts[2] = { world_account(&w, NULL), NULL };
    accounts[1] = world_account(&w, accounts[0]);
    fake_part parts[N];
    size_t record[N] = { 0 };
    for (int i = 0; i < N; i++)
        part_add(&w, &parts[i], i, accounts[i % 2]);

    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    size_t sum = 0;
    for (int step = 0; step < STEPS; step++) {
        int i = (int)rng_below(&rng, N);
        size_t n;
        switch (rng_below(&rng, 4)) {
        case 0: /* small claim */
            n = 1 + rng_below(&rng, 200);
            break;
        case 1: /* large claim, bigger than any cache */
            n = 1 + rng_below(&rng, 64 * KIB);
            break;
        default:
            n = 0;
            break;
        }
        if (n > 0) {
            ck_assert_int_eq(memq_claim(parts[i].p, n), 0);
            record[i] += n;
            sum += n;
        } else {
            n = rng_below(&rng, record[i] + 1);
            if (rng_below(&rng, 8) == 0)
                n = record[i]; /* release everything now and then */
            memq_release(parts[i].p, n);
            record[i] -= n;
            sum -= n;
        }
        size_t used = memq_tracker_used(w.t);
        ck_assert_msg(used >= sum, "step %d: used %zu below the claims %zu", step, used, sum);
        ck_assert_msg(used - sum <= N * cache_max,
                      "step %d: used %zu over-counts the claims %zu by more than %d caches",
                      step, used, sum, N);
        ck_assert_uint_eq(memq_participation_claimed(parts[i].p), record[i]);
    }
    for (int i = 0; i < N; i++)
        part_free(&parts[i]);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}

START_TEST(test_random_claims_and_releases_are_exact_with_cache_max_zero)
{
    random_walk(0);
}
END_TEST

START_TEST(test_random_claims_and_releases_stay_within_the_cache_bound)
{
    random_walk(16 * KIB);
}
END_TEST

/* ----------------------------------------------------------------------
 * Misuse
 * ---------------------------------------------------------------------- */

START_TEST(test_over_release_is_clamped_to_what_was_claimed)
{
    fake_world w;
    world_cached(&w, 0);
    fake_part fp, other;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    part_add(&w, &other, 2, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(other.p, 1000), 0);
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    memq_release(fp.p, 150);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 1000); /* the other's claim untouched */
    ck_assert_int_eq(memq_claim(fp.p, 10), 0);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 10);
    ck_assert_uint_eq(memq_tracker_used(w.t), 1010);
    world_teardown(&w);
}
END_TEST

START_TEST(test_over_release_is_clamped_with_a_cache)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    memq_release(fp.p, 1 * MIB);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    ck_assert_uint_le(memq_tracker_used(w.t), 16 * KIB);
    part_free(&fp);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_over_release_is_counted_as_misuse)
{
    fake_world w;
    world_cached(&w, 0);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    memq_release(fp.p, 100);
    ck_assert_uint_eq(world_stats(&w).misuse_events, 0);
    memq_release(fp.p, 1);
    ck_assert_uint_eq(world_stats(&w).misuse_events, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_release_by_a_participation_that_never_claimed_is_misuse)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    memq_release(fp.p, 5);
    ck_assert_uint_eq(world_stats(&w).misuse_events, 1);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Overflow
 * ---------------------------------------------------------------------- */

START_TEST(test_claim_overflowing_the_participation_fails_with_eoverflow)
{
    fake_world w;
    world_cached(&w, 0);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 1), 0);
    ck_assert_int_eq(memq_claim(fp.p, SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 1);
    ck_assert_uint_eq(memq_tracker_used(w.t), 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_claim_of_size_max_with_a_cache_fails_with_eoverflow)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    size_t used = memq_tracker_used(w.t);
    ck_assert_int_eq(memq_claim(fp.p, SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_claim(fp.p, SIZE_MAX - 50), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 100);
    ck_assert_uint_eq(memq_tracker_used(w.t), used);
    world_teardown(&w);
}
END_TEST

START_TEST(test_claim_overflowing_the_tracker_total_fails_with_eoverflow)
{
    fake_world w;
    world_cached(&w, 0);
    fake_part a, b;
    part_add(&w, &a, 1, world_account(&w, NULL));
    part_add(&w, &b, 2, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(a.p, SIZE_MAX / 2), 0);
    ck_assert_int_eq(memq_claim(b.p, SIZE_MAX / 2 + 2), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_participation_claimed(b.p), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), SIZE_MAX / 2);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Closed accounts and shut-down trackers
 * ---------------------------------------------------------------------- */

/* Claims push the only account over max; its participant collapses. */
static void collapse(fake_world *w, fake_part *fp)
{
    fp->answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(part_claim_at(fp, 2000, world_now(w) + MS), 0);
    ck_assert_int_eq(world_reclaim(w), 0);
    ck_assert(memq_account_closed(fp->account));
}

START_TEST(test_claim_after_collapse_fails_with_eclosed)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    collapse(&w, &fp);
    ck_assert_int_eq(memq_claim(fp.p, 10), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_claim(fp.p, 0), MEMQ_ECLOSED);
    world_teardown(&w);
}
END_TEST

START_TEST(test_release_after_collapse_changes_nothing)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp, other;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    part_add(&w, &other, 2, world_account(&w, NULL));
    fp.answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(part_claim_at(&fp, 2000, WORLD_START_TIME + 1 * MS), 0);
    ck_assert_int_eq(part_claim_at(&other, 300, WORLD_START_TIME + 2 * MS), 0); /* newer */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(fp.account));
    ck_assert_uint_eq(memq_tracker_used(w.t), 300);
    memq_release(fp.p, 2000);
    memq_release(fp.p, 1);
    ck_assert_uint_eq(memq_tracker_used(w.t), 300);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    ck_assert_uint_eq(memq_participation_claimed(other.p), 300);
    world_teardown(&w);
}
END_TEST

START_TEST(test_collapsed_participation_can_still_be_freed)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    collapse(&w, &fp);
    part_free(&fp);
    ck_assert_uint_eq(world_stats(&w).participants, 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_claim_after_tracker_free_fails_with_eshutdown)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 10), 0);
    memq_tracker_free(w.t);
    w.t = NULL;
    ck_assert_int_eq(memq_claim(fp.p, 10), MEMQ_ESHUTDOWN);
    ck_assert_int_eq(memq_claim(fp.p, 0), MEMQ_ESHUTDOWN);
    world_teardown(&w);
}
END_TEST

START_TEST(test_release_after_tracker_free_is_harmless)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 10), 0);
    memq_tracker_free(w.t);
    w.t = NULL;
    memq_release(fp.p, 5);
    memq_release(fp.p, 500);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_handles_can_be_freed_after_tracker_free_in_any_order)
{
    fake_world w;
    world_cached(&w, 16 * KIB);
    memq_account *a = world_account(&w, NULL);
    memq_account *child = world_account(&w, a);
    fake_part p1, p2;
    part_add(&w, &p1, 1, a);
    part_add(&w, &p2, 2, child);
    ck_assert_int_eq(memq_claim(p1.p, 10), 0);
    ck_assert_int_eq(memq_claim(p2.p, 10), 0);
    memq_tracker_free(w.t);
    w.t = NULL;
    ck_assert(memq_account_closed(a));
    world_unref(&w, a);     /* an account before its participation */
    part_free(&p1);
    part_free(&p2);         /* a participation before its account */
    world_unref(&w, child);
    world_teardown(&w);
}
END_TEST

START_TEST(test_eshutdown_wins_over_eclosed)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    collapse(&w, &fp);
    memq_tracker_free(w.t);
    w.t = NULL;
    ck_assert_int_eq(memq_claim(fp.p, 10), MEMQ_ESHUTDOWN);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * A claim that fails changes nothing
 * ---------------------------------------------------------------------- */

/* Everything a claim could change, as one value to compare. */
typedef struct claim_state {
    size_t claimed, cache, charged, cache_limit, account_charged, used, slices;
    unsigned gate;
    uint32_t slot;
    bool dropped;
    memq_time key;
    uint64_t episodes, pressure;
    bool wanted, active;
    size_t aside;
} claim_state;

static claim_state state_of(memq_tracker *t, memq_participation *p)
{
    claim_state st;
    memset(&st, 0, sizeof st);
    pthread_mutex_lock(&t->lock);
    memq_account *a = p->account;
    st.claimed = atomic_load(&p->claimed);
    st.cache = p->cache;
    st.charged = atomic_load(&p->charged);
    st.cache_limit = atomic_load(&p->cache_limit);
    st.gate = atomic_load(&p->gate);
    st.account_charged = atomic_load(&a->charged);
    st.slot = a->slot;
    st.dropped = a->dropped;
    st.key = a->slot ? t->ages[a->slot - 1].key : 0;
    st.used = atomic_load(&t->used);
    for (int i = 0; t->lockfree.slices != NULL && i < MEMQ_SLICES; i++)
        st.slices += atomic_load(&t->lockfree.slices[i].bytes);
    st.episodes = t->stats.episodes;
    st.wanted = t->wanted;
    st.active = t->ep.active;
    st.aside = t->ep.aside_n;
    pthread_mutex_unlock(&t->lock);
    return st;
}

static void assert_same_state(const claim_state *x, const claim_state *y, const char *what)
{
    ck_assert_msg(memcmp(x, y, sizeof *x) == 0, "%s changed the state", what);
}

/* Try a claim that must fail with `expect`, through memq_claim and
 * memq_claim_at, and check that nothing changed. */
static void failing_claims(memq_tracker *t, memq_participation *p, size_t n, int expect,
                           const char *what)
{
    claim_state before = state_of(t, p);
    ck_assert_int_eq(memq_claim(p, n), expect);
    claim_state after = state_of(t, p);
    assert_same_state(&before, &after, what);
    ck_assert_int_eq(memq_claim_at(p, n, 1), expect);
    after = state_of(t, p);
    assert_same_state(&before, &after, what);
}

/* Inside the big holder's reclaim callback, during an episode in which the
 * account of the participant in hook_ctx was found holding only cache:
 * every way a claim can fail there. */
static void fail_every_way(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *other = fp->hook_ctx;
    memq_tracker *t = fp->w->t;
    ck_assert_uint_eq(atomic_load(&other->p->gate), MEMQ_GATE_OFFER);
    /* Beyond what the participation can hold. */
    failing_claims(t, other->p, SIZE_MAX, MEMQ_EOVERFLOW, "a participation overflow");
    /* Beyond what the tracker's total can hold. */
    failing_claims(t, other->p, SIZE_MAX / 2 + 16 * KIB, MEMQ_EOVERFLOW, "a total overflow");
    fp->hook_rc = 1;
}

START_TEST(test_failed_claims_change_nothing_on_any_error_path)
{
    fake_world w;
    /* A narrow band (no slices: totals near SIZE_MAX read exactly). */
    world_init(&w, 1 * GIB, 1 * GIB - 512 * KIB);
    w.cfg.cache_max = 4 * KIB;
    world_start(&w);
    fake_part cached, big, closed;
    world_holder(&w, &cached, 1, NULL, world_now(&w), 1);
    part_release(&cached, 1); /* holds only cache */
    world_holder(&w, &big, 2, NULL, world_now(&w) + MS, SIZE_MAX / 2);
    big.free_per_call = 0;
    big.hook = fail_every_way;
    big.hook_ctx = &cached;
    (void)world_reclaim(&w);
    ck_assert_int_eq(big.hook_rc, 1);
    /* An account closed, a participation freed, a tracker shut down. */
    world_holder(&w, &closed, 3, NULL, world_now(&w), 10);
    memq_participation *keep = closed.p;
    world_unref(&w, closed.account);
    failing_claims(w.t, keep, 10, MEMQ_ECLOSED, "a closed account");
    failing_claims(w.t, big.p, SIZE_MAX, MEMQ_EOVERFLOW, "a participation overflow");
    memq_tracker_free(w.t);
    failing_claims(w.t, cached.p, 10, MEMQ_ESHUTDOWN, "a shut-down tracker");
    ck_assert_int_eq(memq_claim(NULL, 1), MEMQ_EINVAL);
    ck_assert_int_eq(memq_claim_at(NULL, 1, 1), MEMQ_EINVAL);
    w.t = NULL;
    world_teardown(&w);
}
END_TEST

/* The participant in hook_ctx, whose account holds only cache (set aside
 * for the episode), tries a claim too big for the total, then claims a
 * little data: its account must be a candidate again. */
static void overflow_then_claim(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *other = fp->hook_ctx;
    if (fp->calls > 1)
        return;
    fp->hook_rc = memq_claim(other->p, SIZE_MAX / 2 + 16 * KIB);
    if (part_claim_at(other, 100, world_now(fp->w)) != 0)
        fp->hook_rc = 1;
}

START_TEST(test_a_failed_claim_leaves_an_account_set_aside_ready_to_be_offered)
{
    fake_world w;
    /* A narrow band (no slices: totals near SIZE_MAX read exactly). */
    world_init(&w, 1 * GIB, 1 * GIB - 512 * KIB);
    w.cfg.cache_max = 4 * KIB;
    world_start(&w);
    fake_part cached, big;
    world_holder(&w, &cached, 1, NULL, world_now(&w), 1);
    part_release(&cached, 1); /* holds only cache */
    world_holder(&w, &big, 2, NULL, world_now(&w) + MS, SIZE_MAX / 2);
    big.free_per_call = 0; /* gives nothing */
    big.hook = overflow_then_claim;
    big.hook_ctx = &cached;
    (void)world_reclaim(&w);
    ck_assert_int_eq(big.hook_rc, MEMQ_EOVERFLOW);
    /* The data claimed after the failure made its account a candidate in
     * the same episode. */
    ck_assert_int_eq(cached.calls, 1);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Slices after a reconfiguration
 * ---------------------------------------------------------------------- */

typedef struct slice_filler {
    memq_participation *p;
    size_t slice_bytes; /* what its thread's slice held when it stopped */
    memq_tracker *t;
} slice_filler;

/* Claims (refills without the lock) until this thread's slice holds more
 * than 32 KiB, then stops and leaves it so. */
static void *fill_slice(void *arg)
{
    slice_filler *f = arg;
    for (int i = 0; i < 1000; i++) {
        if (memq_claim(f->p, 13 * KIB) != 0)
            return NULL;
        size_t max_slice = 0;
        for (int s = 0; s < MEMQ_SLICES; s++) {
            size_t v = atomic_load(&f->t->lockfree.slices[s].bytes);
            if (v < SIZE_MAX / 2 && v > max_slice)
                max_slice = v;
        }
        if (max_slice > 32 * KIB) {
            f->slice_bytes = max_slice;
            return NULL;
        }
    }
    return NULL;
}

START_TEST(test_lowering_the_band_folds_slices_larger_than_the_new_batch)
{
    fake_world w;
    world_init(&w, 64 * MIB, 48 * MIB); /* band 16 MiB: batch 64 KiB */
    w.cfg.cache_max = 16 * KIB;
    w.cfg.clock = NULL; /* the filler thread claims: the real clock */
    w.cfg.clock_ctx = NULL;
    world_start(&w);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 1), 0); /* the account holds memory */
    slice_filler f = {fp.p, 0, w.t};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, fill_slice, &f), 0);
    pthread_join(th, NULL);
    ck_assert_uint_gt(f.slice_bytes, 32 * KIB);
    /* Band 8 MiB: batch 32 KiB, so each slice may hold at most that. */
    memq_config cfg = w.cfg;
    cfg.max = 40 * MIB;
    cfg.low_water = 32 * MIB;
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &cfg), 0);
    size_t batch = atomic_load(&w.t->lockfree.batch);
    ck_assert_uint_eq(batch, 32 * KIB);
    for (int s = 0; s < MEMQ_SLICES; s++) {
        size_t v = atomic_load(&w.t->lockfree.slices[s].bytes);
        ck_assert_msg(v <= batch || v >= SIZE_MAX - batch, "slice %d holds %zu", s, v);
    }
    world_teardown(&w);
}
END_TEST

/* Refills without the lock add to the thread's slice of the total; past
 * its batch the slice folds into the shared sum.  Across folds the total
 * stays exact and the peak follows it. */
START_TEST(test_a_slice_past_its_batch_folds_into_the_total_which_stays_exact)
{
    fake_world w;
    world_init(&w, 64 * MIB, 48 * MIB); /* band 16 MiB: batch 64 KiB */
    w.cfg.cache_max = 16 * KIB;
    world_start(&w);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 1), 0); /* through the lock: the account holds memory */
    size_t shared = atomic_load(&w.t->used), batch = atomic_load(&w.t->lockfree.batch);
    ck_assert_uint_eq(batch, 64 * KIB);
    size_t claimed = 1;
    for (int i = 0; i < 100 && atomic_load(&w.t->used) == shared; i++) {
        ck_assert_int_eq(memq_claim(fp.p, 13 * KIB), 0);
        claimed += 13 * KIB;
    }
    ck_assert_uint_gt(atomic_load(&w.t->used), shared + batch); /* a slice folded */
    for (int k = 0; k < MEMQ_SLICES; k++) {
        size_t v = atomic_load(&w.t->lockfree.slices[k].bytes);
        ck_assert_msg(v <= batch || v >= SIZE_MAX - batch, "slice %d holds %zu", k, v);
    }
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.claimed, claimed);
    ck_assert_uint_eq(st.used, st.claimed + st.cached);
    ck_assert_uint_le(st.cached, 16 * KIB);
    ck_assert_uint_ge(st.peak, atomic_load(&w.t->used));
    world_teardown(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("participation");
    TCase *tc;

    tc = test_case("register");
    tcase_add_test(tc, test_register_rejects_null_arguments);
    tcase_add_test(tc, test_register_rejects_null_callbacks);
    tcase_add_test(tc, test_stats_count_registered_participations);
    suite_add_tcase(s, tc);

    tc = test_case("claims");
    tcase_add_test(tc, test_accounting_is_exact_with_cache_max_zero);
    tcase_add_test(tc, test_participation_claimed_follows_claims_and_releases);
    tcase_add_test(tc, test_claim_of_zero_bytes_changes_nothing);
    tcase_add_test(tc, test_claims_over_max_are_never_refused);
    tcase_add_test(tc, test_freeing_a_participation_releases_its_claims);
    tcase_add_test(tc, test_freeing_every_participation_returns_the_caches_too);
    tcase_add_test(tc, test_participation_free_ignores_null);
    tcase_add_test(tc, test_claim_rejects_a_null_participation);
    suite_add_tcase(s, tc);

    tc = test_case("cache");
    tcase_add_test(tc, test_participation_that_never_claimed_adds_nothing_to_used);
    tcase_add_test(tc, test_first_claim_counts_at_most_one_cache_extra);
    tcase_add_test(tc, test_overcount_is_at_most_cache_max_per_participation);
    tcase_add_test(tc, test_release_of_everything_leaves_at_most_one_cache_counted);
    tcase_add_test(tc, test_random_claims_and_releases_are_exact_with_cache_max_zero);
    tcase_add_test(tc, test_random_claims_and_releases_stay_within_the_cache_bound);
    tcase_add_test(tc, test_a_slice_past_its_batch_folds_into_the_total_which_stays_exact);
    suite_add_tcase(s, tc);

    tc = test_case("misuse");
    tcase_add_test(tc, test_over_release_is_clamped_to_what_was_claimed);
    tcase_add_test(tc, test_over_release_is_clamped_with_a_cache);
    tcase_add_test(tc, test_over_release_is_counted_as_misuse);
    tcase_add_test(tc, test_release_by_a_participation_that_never_claimed_is_misuse);
    tcase_add_test(tc, test_claim_overflowing_the_participation_fails_with_eoverflow);
    tcase_add_test(tc, test_claim_of_size_max_with_a_cache_fails_with_eoverflow);
    tcase_add_test(tc, test_claim_overflowing_the_tracker_total_fails_with_eoverflow);
    tcase_add_test(tc, test_failed_claims_change_nothing_on_any_error_path);
    tcase_add_test(tc, test_a_failed_claim_leaves_an_account_set_aside_ready_to_be_offered);
    tcase_add_test(tc, test_lowering_the_band_folds_slices_larger_than_the_new_batch);
    suite_add_tcase(s, tc);

    tc = test_case("closed");
    tcase_add_test(tc, test_claim_after_collapse_fails_with_eclosed);
    tcase_add_test(tc, test_release_after_collapse_changes_nothing);
    tcase_add_test(tc, test_collapsed_participation_can_still_be_freed);
    tcase_add_test(tc, test_claim_after_tracker_free_fails_with_eshutdown);
    tcase_add_test(tc, test_release_after_tracker_free_is_harmless);
    tcase_add_test(tc, test_handles_can_be_freed_after_tracker_free_in_any_order);
    tcase_add_test(tc, test_eshutdown_wins_over_eclosed);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
