/*
 * check_reclaim.c - reclamation: victims oldest-data-first, the account
 * tree, the request's hints, the three answers, timeouts, callbacks that
 * re-enter the library, fresh ages, unreclaimable episodes, wakeup and the
 * notification descriptor, reconfiguration, the time budget.
 *
 * Every world here uses exact accounting (cache_max 0), manual mode and a
 * fake clock.  Data is stamped AT(ms), T0 + ms on the fake clock: the
 * smaller the stamp, the older the data.  As in a daemon, data is claimed
 * when it arrives (part_claim_at moves the clock forward to the stamp), so
 * scenarios whose age order differs from the creation order create the
 * accounts first and claim later.  The few tests about data older than
 * its claim say so in their names.
 */
#include "testutil.h"

#include "internal.h" /* the age index, to check what it holds */

#define T0 WORLD_START_TIME
#define AT(ms) (T0 + (memq_time)(ms) * MS)

/* ----------------------------------------------------------------------
 * Hooks run inside a fake participant's reclaim callback
 * ---------------------------------------------------------------------- */

static void free_own_participation(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    part_free(fp);
}

static void unref_own_account(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    world_unref(fp->w, fp->account);
}

static void claim_more(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fp->hook_rc = part_claim_at(fp, 50, fp->oldest);
}

static void release_everything(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    part_release(fp, fp->claimed);
}

/* The participant in hook_ctx drains its old data: what it still holds
 * arrived just now, at AT(400), later than anything else. */
static void make_other_young(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *other = fp->hook_ctx;
    world_advance_to(fp->w, AT(400));
    other->oldest = AT(400);
}

/* Free the participation in hook_ctx unless it is already gone. */
static void free_sibling(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *sibling = fp->hook_ctx;
    part_free(sibling);
}

/* Create a new account whose participant (hook_ctx) claims 100 bytes of
 * data arriving now, at AT(400). */
static void create_account(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *created = fp->hook_ctx;
    memq_account *a = NULL;
    fp->hook_rc = world_account_rc(fp->w, NULL, &a);
    if (fp->hook_rc == 0)
        fp->hook_rc = part_add_rc(fp->w, created, 99, a);
    if (fp->hook_rc == 0)
        fp->hook_rc = part_claim_at(created, 100, AT(400));
}

static void reclaim_nested(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fp->hook_rc = memq_tracker_reclaim(fp->w->t);
}

static void free_tracker(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    memq_tracker_free(fp->w->t);
    fp->w->t = NULL;
}

/* ----------------------------------------------------------------------
 * Oldest first: 21 single-participant accounts
 * ---------------------------------------------------------------------- */

enum { N21 = 21 };

/* Age rank of account i (0 = oldest): a permutation, so that neither
 * creation order nor its reverse is the age order. */
static int rank_of(int i) { return (i * 8 + 5) % N21; }

/* 21 accounts created first; then each claims 100 bytes, in age order,
 * 10 ms apart; max 2050 so that the 21st claim crosses it; low water 1500,
 * so exactly the 6 oldest must go.  Returns the crossing claim's answer. */
static int setup_21_accounts(fake_world *w, fake_part parts[N21])
{
    world_new(w, 2050, 1500);
    for (int i = 0; i < N21; i++)
        part_add(w, &parts[i], i, world_account(w, NULL));
    int crossing_rc = 0;
    for (int rank = 0; rank < N21; rank++) {
        int i = 0;
        while (rank_of(i) != rank)
            i++;
        int rc = part_claim_at(&parts[i], 100, AT(10 + 10 * rank));
        if (rank < N21 - 1)
            ck_assert_int_eq(rc, 0);
        else
            crossing_rc = rc;
    }
    return crossing_rc;
}

START_TEST(test_oldest_of_21_accounts_is_reclaimed_first)
{
    fake_world w;
    fake_part parts[N21];
    setup_21_accounts(&w, parts);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_ge(w.n_calls, 1);
    ck_assert_int_eq(rank_of(w.call_ids[0]), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclamation_proceeds_oldest_first_down_to_low_water)
{
    fake_world w;
    fake_part parts[N21];
    setup_21_accounts(&w, parts);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 6);
    for (int k = 0; k < 6; k++)
        ck_assert_msg(rank_of(w.call_ids[k]) == k, "victim %d has age rank %d", k,
                      rank_of(w.call_ids[k]));
    ck_assert_uint_eq(memq_tracker_used(w.t), 1500);
    world_teardown(&w);
}
END_TEST

START_TEST(test_claim_that_crosses_max_still_succeeds)
{
    fake_world w;
    fake_part parts[N21];
    int rc = setup_21_accounts(&w, parts);
    ck_assert_int_eq(rc, 0);
    for (int i = 0; i < N21; i++)
        ck_assert_uint_eq(memq_participation_claimed(parts[i].p), 100);
    ck_assert_uint_eq(memq_tracker_used(w.t), 2100);
    world_teardown(&w);
}
END_TEST

/* The same 21 accounts, all claiming at the same moment data stamped
 * earlier, in a permuted order (data that arrived before its claim: cells
 * moved from another queue keep their stamps), declared with
 * memq_claim_at() (see part_claim_at). */
START_TEST(test_data_stamped_before_its_claim_is_still_reclaimed_oldest_first)
{
    fake_world w;
    world_new(&w, 2050, 1500);
    fake_part parts[N21];
    for (int i = 0; i < N21; i++) {
        part_add(&w, &parts[i], i, world_account(&w, NULL));
        ck_assert_int_eq(part_claim_at(&parts[i], 100, T0 - SECOND + (memq_time)rank_of(i) * 10 * MS), 0);
    }
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 6);
    for (int k = 0; k < 6; k++)
        ck_assert_msg(rank_of(w.call_ids[k]) == k, "victim %d has age rank %d", k,
                      rank_of(w.call_ids[k]));
    world_teardown(&w);
}
END_TEST

START_TEST(test_used_is_at_or_below_low_water_after_an_episode)
{
    fake_world w;
    world_new(&w, 10000, 4000);
    fake_part parts[30];
    for (int i = 0; i < 30; i++)
        world_holder(&w, &parts[i], i, NULL, AT(i + 1), 100 + (size_t)i * 20);
    ck_assert_uint_gt(memq_tracker_used(w.t), 10000);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_le(memq_tracker_used(w.t), 4000);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclaim_below_max_does_nothing)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp;
    world_holder(&w, &fp, 1, NULL, AT(1), 900);
    ck_assert_int_eq(memq_tracker_reclaim(w.t), 0);
    ck_assert_int_eq(w.n_calls, 0);
    ck_assert_uint_eq(world_stats(&w).episodes, 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 900);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclaim_and_fd_reject_null)
{
    ck_assert_int_eq(memq_tracker_reclaim(NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_fd(NULL), MEMQ_EINVAL);
}
END_TEST

/* ----------------------------------------------------------------------
 * The account tree
 * ---------------------------------------------------------------------- */

START_TEST(test_child_with_oldest_data_is_reclaimed_alone)
{
    fake_world w;
    world_new(&w, 250, 200);
    fake_part parent, child, other;
    memq_account *p = world_account(&w, NULL);
    part_add(&w, &parent, 1, p);
    part_add(&w, &child, 2, world_account(&w, p));
    part_add(&w, &other, 3, world_account(&w, NULL));
    ck_assert_int_eq(part_claim_at(&child, 100, AT(100)), 0);
    ck_assert_int_eq(part_claim_at(&other, 100, AT(300)), 0);
    ck_assert_int_eq(part_claim_at(&parent, 100, AT(500)), 0);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 1);
    ck_assert_int_eq(w.call_ids[0], 2);
    ck_assert_int_eq(parent.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_older_parent_takes_its_descendants_with_it)
{
    fake_world w;
    world_new(&w, 350, 300);
    fake_part parent, child, grandchild, other;
    memq_account *p = world_holder(&w, &parent, 1, NULL, AT(100), 100);
    world_holder(&w, &other, 4, NULL, AT(300), 100);
    memq_account *c = world_holder(&w, &child, 2, p, AT(500), 100);
    world_holder(&w, &grandchild, 3, c, AT(600), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(parent.calls, 1);
    ck_assert_int_eq(child.calls, 1);
    ck_assert_int_eq(grandchild.calls, 1);
    ck_assert_int_eq(other.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_with_two_parents_is_reclaimed_with_either)
{
    fake_world w;
    world_new(&w, 350, 300);
    fake_part first, second, child, other;
    memq_account *p1 = world_account(&w, NULL);
    part_add(&w, &first, 1, p1);
    memq_account *p2 = world_holder(&w, &second, 2, NULL, AT(100), 100);
    world_holder(&w, &other, 4, NULL, AT(300), 100);
    memq_account *c = world_holder(&w, &child, 3, p1, AT(500), 100);
    ck_assert_int_eq(memq_account_add_parent(c, p2), 0);
    ck_assert_int_eq(part_claim_at(&first, 100, AT(900)), 0);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(second.calls, 1); /* the victim, by its added child */
    ck_assert_int_eq(child.calls, 1);
    ck_assert_int_eq(first.calls, 0);
    ck_assert_int_eq(other.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_every_participant_of_the_victim_gets_the_request)
{
    /* The first participant alone frees enough; the second is asked all
     * the same (the account is reclaimed as a whole). */
    fake_world w;
    world_new(&w, 250, 200);
    fake_part a1, a2, b;
    memq_account *a = world_holder(&w, &a1, 1, NULL, AT(100), 100);
    part_add(&w, &a2, 2, a);
    world_holder(&w, &b, 3, NULL, AT(500), 100);
    ck_assert_int_eq(part_claim_at(&a2, 100, AT(900)), 0);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(a1.calls, 1);
    ck_assert_int_eq(a2.calls, 1);
    ck_assert_int_eq(b.calls, 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * The request's hints
 * ---------------------------------------------------------------------- */

/* A, B, C hold 100 bytes each, A oldest; max 250, low water 150: A then B
 * are reclaimed. */
static void setup_abc(fake_world *w, fake_part *a, fake_part *b, fake_part *c)
{
    world_new(w, 250, 150);
    world_holder(w, a, 1, NULL, AT(100), 100);
    world_holder(w, b, 2, NULL, AT(200), 100);
    world_holder(w, c, 3, NULL, AT(300), 100);
}

START_TEST(test_request_want_is_the_excess_over_low_water_when_the_round_starts)
{
    fake_world w;
    fake_part a, b, c;
    setup_abc(&w, &a, &b, &c);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 2);
    ck_assert_uint_eq(w.call_reqs[0].want, 150); /* 300 - 150 */
    ck_assert_uint_eq(w.call_reqs[1].want, 50);  /* 200 - 150 */
    world_teardown(&w);
}
END_TEST

START_TEST(test_request_older_than_is_the_next_candidates_oldest_time)
{
    fake_world w;
    fake_part a, b, c;
    setup_abc(&w, &a, &b, &c);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 2);
    ck_assert_uint_eq(w.call_reqs[0].older_than, AT(200)); /* B's */
    ck_assert_uint_eq(w.call_reqs[1].older_than, AT(300)); /* C's */
    world_teardown(&w);
}
END_TEST

START_TEST(test_request_older_than_is_time_max_without_another_candidate)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a;
    world_holder(&w, &a, 1, NULL, AT(100), 300);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_uint_eq(a.last_req.older_than, MEMQ_TIME_MAX);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Answers: PARTIAL, COLLAPSING, unknown
 * ---------------------------------------------------------------------- */

START_TEST(test_partial_answer_leaves_the_account_open)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(!memq_account_closed(a.account));
    ck_assert_int_eq(memq_claim(a.p, 10), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_collapsing_answer_closes_the_account_and_forgets_its_usage)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(a.account));
    ck_assert_uint_eq(memq_account_used(a.account), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_int_eq(memq_claim(a.p, 1), MEMQ_ECLOSED);
    ck_assert_int_eq(b.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_collapsing_answer_forgets_every_participant_of_the_account)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a1, a2, b;
    memq_account *a = world_holder(&w, &a1, 1, NULL, AT(100), 100);
    part_add(&w, &a2, 2, a);
    world_holder(&w, &b, 3, NULL, AT(500), 100);
    ck_assert_int_eq(part_claim_at(&a2, 100, AT(900)), 0);
    a1.answer = MEMQ_RECLAIMED_COLLAPSING;
    a2.free_per_call = 0; /* PARTIAL, but frees nothing */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_uint_eq(memq_participation_claimed(a2.p), 0);
    ck_assert_int_eq(memq_claim(a2.p, 1), MEMQ_ECLOSED);
    world_teardown(&w);
}
END_TEST

START_TEST(test_descendants_of_a_collapsed_account_stay_open)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part parent, child, other;
    memq_account *p = world_holder(&w, &parent, 1, NULL, AT(100), 100);
    memq_account *c = world_holder(&w, &child, 2, p, AT(500), 100);
    world_holder(&w, &other, 3, NULL, AT(900), 100);
    parent.answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(p));
    ck_assert_int_eq(child.calls, 1);
    ck_assert(!memq_account_closed(c));
    ck_assert_int_eq(memq_claim(child.p, 10), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unknown_answer_is_treated_as_partial)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.hook = release_everything;
    a.answer = (memq_reclaim_status)42;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(!memq_account_closed(a.account));
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.partial_reclaims, 1);
    ck_assert_uint_eq(st.misuse_events, 1);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * PENDING answers, memq_reclaim_done and timeouts (50 ms of fake clock)
 * ---------------------------------------------------------------------- */

/* A (200 bytes, oldest) answers PENDING; B holds 100; max 250, low 150.
 * A's usage covers the whole excess. */
static void setup_pending(fake_world *w, fake_part *a, fake_part *b)
{
    world_new(w, 250, 150);
    world_holder(w, a, 1, NULL, AT(100), 200);
    world_holder(w, b, 2, NULL, AT(500), 100);
    a->answer = MEMQ_RECLAIM_PENDING;
}

START_TEST(test_pending_answer_is_awaited_until_its_timeout)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, 49 * MS);
    ck_assert_int_eq(world_reclaim_tries(&w, 50), MEMQ_EAGAIN);
    ck_assert_int_eq(a.calls, 1);
    ck_assert(!memq_account_closed(a.account));
    ck_assert_uint_eq(world_stats(&w).callback_timeouts, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_pending_answer_times_out_and_is_treated_as_collapsed)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, 51 * MS);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(a.account));
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_int_eq(memq_claim(a.p, 1), MEMQ_ECLOSED);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.callback_timeouts, 1);
    ck_assert_uint_eq(st.accounts_collapsed, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_pending_victim_covering_the_excess_holds_back_new_victims)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    ck_assert_int_eq(b.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_pending_victim_not_covering_the_excess_lets_the_next_be_chosen)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 50);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 150);
    a.answer = MEMQ_RECLAIM_PENDING;
    /* 300 - 50 pending > 150: B goes too; then 200 - 50 <= 150: C stays. */
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    ck_assert_int_eq(b.calls, 1);
    ck_assert_int_eq(c.calls, 0);
    part_release(&a, 50);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_PARTIAL);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(c.calls, 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 150);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclaim_done_completes_a_pending_answer)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    part_release(&a, 200);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_PARTIAL);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert(!memq_account_closed(a.account));
    ck_assert_int_eq(b.calls, 0);
    ck_assert_uint_eq(world_stats(&w).callback_timeouts, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclaim_done_collapsing_closes_the_account)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_COLLAPSING);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(a.account));
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_uint_eq(world_stats(&w).accounts_collapsed, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclaim_done_without_a_pending_answer_is_ignored)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_COLLAPSING);
    ck_assert(!memq_account_closed(a.account));
    ck_assert_uint_eq(memq_tracker_used(w.t), 200);
    ck_assert_int_eq(memq_claim(a.p, 1), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_late_reclaim_done_after_the_timeout_is_ignored)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, 51 * MS);
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats before = world_stats(&w);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_PARTIAL);
    memq_stats after = world_stats(&w);
    ck_assert(memq_account_closed(a.account));
    ck_assert_uint_eq(after.used, before.used);
    ck_assert_uint_eq(after.partial_reclaims, before.partial_reclaims);
    ck_assert_uint_eq(after.accounts_collapsed, before.accounts_collapsed);
    world_teardown(&w);
}
END_TEST

START_TEST(test_freeing_a_pending_participation_abandons_its_answer)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    part_free(&a); /* releases its 200 bytes */
    ck_assert_int_eq(world_reclaim(&w), 0); /* no clock advance needed */
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_uint_eq(world_stats(&w).callback_timeouts, 0);
    fake_clock_advance(&w.clock, SECOND);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.calls_after_free, 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Callbacks that re-enter the library
 * ---------------------------------------------------------------------- */

START_TEST(test_callback_may_free_its_own_participation)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.hook = free_own_participation;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(a.freed);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_uint_eq(world_stats(&w).participants, 1);
    ck_assert_int_eq(w.calls_after_free, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_callback_may_unref_its_account)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.hook = unref_own_account;
    a.free_per_call = 0; /* the unref releases everything */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    ck_assert_uint_eq(world_stats(&w).accounts, 1);
    ck_assert_int_eq(memq_claim(a.p, 1), MEMQ_ECLOSED);
    world_teardown(&w);
}
END_TEST

START_TEST(test_callback_may_claim_more_while_being_reclaimed)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.hook = claim_more;
    a.hook_rc = -100;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(a.hook_rc, 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    world_teardown(&w);
}
END_TEST

START_TEST(test_nested_reclaim_from_a_callback_returns_eagain)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.hook = reclaim_nested;
    a.hook_rc = -100;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(a.hook_rc, MEMQ_EAGAIN);
    ck_assert_int_eq(a.calls, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reclaim_returns_eshutdown_when_a_callback_frees_the_tracker)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.hook = free_tracker;
    memq_tracker *t = w.t;
    int rc = MEMQ_EAGAIN;
    /* The handle is dead once the callback ran: stop calling then. */
    for (int i = 0; i < 1000 && rc == MEMQ_EAGAIN && a.calls == 0; i++)
        rc = memq_tracker_reclaim(t);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(rc, MEMQ_ESHUTDOWN);
    ck_assert_ptr_null(w.t);
    ck_assert_int_eq(memq_claim(b.p, 1), MEMQ_ESHUTDOWN);
    world_teardown(&w);
}
END_TEST

START_TEST(test_participant_callbacks_may_call_the_library)
{
    /* Every callback takes the tracker's lock through memq_tracker_stats():
     * one invoked under the lock deadlocks and the watchdog fires. */
    fake_world w;
    world_new(&w, 250, 150);
    w.callbacks_call_library = true;
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    b.answer = MEMQ_RECLAIM_PENDING;
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, SECOND);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_gt(w.library_calls_from_callbacks, 3);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(b.calls, 2); /* the request, then the notice of its timeout */
    ck_assert_int_eq(b.notices, 1);
    ck_assert_uint_le(memq_tracker_used(w.t), 150);
    world_teardown(&w);
}
END_TEST

START_TEST(test_clock_is_never_called_under_a_lock)
{
    fake_world w;
    world_new(&w, 250, 150);
    w.clock_calls_library = true;
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    a.answer = MEMQ_RECLAIM_PENDING;
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, SECOND);
    ck_assert_int_eq(world_reclaim(&w), 0); /* the timeout needs the clock */
    ck_assert_int_gt(atomic_load(&w.clock.reads), 0);
    ck_assert_uint_eq(world_stats(&w).callback_timeouts, 1);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Fresh ages
 * ---------------------------------------------------------------------- */

START_TEST(test_participant_claiming_memory_without_data_is_treated_as_oldest)
{
    /* The hider started holding memory after b, whose old data has since
     * gone (b now holds data from 200): once asked, the hider counts as
     * the oldest and goes first.  Believed, it would be skipped for b. */
    fake_world w;
    world_new(&w, 250, 200);
    fake_part hider, b, c;
    world_holder(&w, &b, 2, NULL, AT(100), 100);
    part_add(&w, &hider, 1, world_account(&w, NULL));
    world_advance_to(&w, AT(150));
    ck_assert_int_eq(memq_claim(hider.p, 100), 0);
    hider.claimed = 100; /* claims memory, but oldest() says "no data" */
    b.oldest = AT(200);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 1);
    ck_assert_int_eq(w.call_ids[0], 1);
    world_teardown(&w);
}
END_TEST

/* The age index: 200 accounts started holding memory in order, a
 * millisecond apart; one victim is enough.  Only the oldest is asked,
 * plus the runner-up for older_than: no episode asks every account. */
START_TEST(test_a_victim_is_found_without_asking_every_account)
{
    enum { N = 200 };
    static fake_part parts[N];
    fake_world w;
    world_new(&w, N * 100 - 1, N * 100 - 150);
    for (int i = 0; i < N; i++)
        world_holder(&w, &parts[i], i + 1, NULL, AT(i + 1), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 2);
    ck_assert_int_eq(w.call_ids[0], 1);
    ck_assert_int_eq(w.call_ids[1], 2);
    int asked = 0;
    for (int i = 0; i < N; i++)
        asked += parts[i].oldest_calls > 0;
    ck_assert_msg(asked <= 3, "%d of %d accounts asked their age", asked, N);
    world_teardown(&w);
}
END_TEST

/* A key is a lower bound, never trusted as an age: the account that
 * started holding memory first has since drained its old data, so the
 * one asked next holds the oldest data and goes first. */
START_TEST(test_an_account_whose_old_data_is_gone_waits_for_its_true_turn)
{
    fake_world w;
    world_new(&w, 250, 200);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_advance_to(&w, AT(300));
    a.oldest = AT(300); /* drained and refilled */
    world_holder(&w, &c, 3, NULL, AT(400), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 1);
    ck_assert_int_eq(w.call_ids[0], 2);
    ck_assert_int_gt(a.oldest_calls, 0);
    world_teardown(&w);
}
END_TEST

/* Data moved into an account with its old stamp is declared with
 * memq_claim_at(): the account's key goes down to the stamp. */
START_TEST(test_claim_at_puts_data_older_than_its_claim_in_its_true_order)
{
    fake_world w;
    world_new(&w, 250, 200);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    part_add(&w, &c, 3, world_account(&w, NULL));
    world_advance_to(&w, AT(300));
    ck_assert_int_eq(memq_claim_at(c.p, 100, AT(50)), 0);
    c.claimed = 100;
    c.oldest = AT(50);
    c.has_data = true;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 1);
    ck_assert_int_eq(w.call_ids[0], 3);
    ck_assert_int_eq(memq_claim_at(NULL, 1, AT(0)), MEMQ_EINVAL);
    world_teardown(&w);
}
END_TEST

START_TEST(test_ages_are_checked_again_before_each_victim)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    a.hook = make_other_young; /* B's data becomes the newest */
    a.hook_ctx = &b;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 2);
    ck_assert_int_eq(w.call_ids[0], 1);
    ck_assert_int_eq(w.call_ids[1], 3);
    ck_assert_int_eq(b.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_ages_changed_between_budgeted_calls_are_followed)
{
    fake_world w;
    world_init(&w, 250, 100);
    w.cfg.reclaim_budget_us = 1;
    world_start(&w);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    a.sleep_ms_in_reclaim = 2; /* far beyond the 1 us budget */
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < 1000 && a.calls == 0; i++)
        rc = memq_tracker_reclaim(w.t);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(rc, MEMQ_EAGAIN);
    ck_assert_int_eq(b.calls, 0); /* the budget stopped the call after A */
    world_advance_to(&w, AT(400)); /* between calls, B drains its old data: */
    b.oldest = AT(400);            /* what it holds now is the newest */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 2);
    ck_assert_int_eq(w.call_ids[1], 3);
    ck_assert_int_eq(b.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_created_during_an_episode_is_a_candidate)
{
    /* Low water 1 needs every account reclaimed, the new one included. */
    fake_world w;
    world_new(&w, 250, 1);
    fake_part a, b, c, created;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    a.hook = create_account; /* 100 bytes at AT(400) */
    a.hook_ctx = &created;
    a.hook_rc = -100;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(a.hook_rc, 0);
    ck_assert_int_eq(created.calls, 1);
    ck_assert_int_eq(w.n_calls, 4);
    ck_assert_int_eq(w.call_ids[3], 99);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Nothing reclaimable left
 * ---------------------------------------------------------------------- */

/* A and B hold 200 bytes each and free nothing when asked; max 300, low
 * water 200. */
static void setup_unreclaimable(fake_world *w, fake_part *a, fake_part *b)
{
    world_new(w, 300, 200);
    world_holder(w, a, 1, NULL, AT(100), 200);
    world_holder(w, b, 2, NULL, AT(200), 200);
    a->free_per_call = 0;
    b->free_per_call = 0;
}

START_TEST(test_episode_without_reclaimable_data_stops_and_returns_zero)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_ge(a.calls, 1);
    ck_assert_int_ge(b.calls, 1);
    ck_assert_uint_eq(memq_tracker_used(w.t), 400);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unreclaimable_episode_is_counted)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).unreclaimable_events, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unreclaimable_episode_is_logged_in_one_line)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    int before = atomic_load(&w.logs);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_gt(atomic_load(&w.logs), before);
    ck_assert_int_eq(atomic_load(&w.bad_logs), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_log_callback_may_call_the_library)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    w.callbacks_call_library = true;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_gt(atomic_load(&w.logs), 0);
    ck_assert_int_gt(w.library_calls_from_callbacks, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_next_crossing_after_an_unreclaimable_episode_starts_a_new_episode)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), 0);
    int calls_before = a.calls + b.calls;
    part_release(&a, 150); /* 250: below max */
    ck_assert_int_eq(part_claim_at(&a, 100, AT(300)), 0); /* 350: crosses again */
    ck_assert_int_eq(atomic_load(&w.wakeups), 2);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_gt(a.calls + b.calls, calls_before);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.episodes, 2);
    ck_assert_uint_eq(st.unreclaimable_events, 2);
    world_teardown(&w);
}
END_TEST

/* max 300, low 200: a quarter of the band is 25 bytes.  Claims that keep
 * use above max after a stop do not sweep again until use grows by that. */
START_TEST(test_claims_above_max_after_an_unreclaimable_episode_wait_for_growth)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), 0); /* stops at 400 */
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    ck_assert_int_eq(part_claim_at(&a, 10, AT(300)), 0); /* 410 */
    ck_assert_int_eq(part_claim_at(&a, 10, AT(300)), 0); /* 420 */
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(part_claim_at(&a, 10, AT(300)), 0); /* 430 >= 425 */
    ck_assert_int_eq(atomic_load(&w.wakeups), 2);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_tracker_recovers_after_an_unreclaimable_episode)
{
    fake_world w;
    fake_part a, b;
    setup_unreclaimable(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), 0);
    a.free_per_call = SIZE_MAX;
    b.free_per_call = SIZE_MAX;
    part_release(&b, 150); /* 250 */
    ck_assert_int_eq(part_claim_at(&b, 100, AT(300)), 0); /* 350 */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_le(memq_tracker_used(w.t), 200);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Wakeup and the notification descriptor
 * ---------------------------------------------------------------------- */

/* One participant claims 100 bytes n times; max 2050, low 1000. */
static void claim_hundreds(fake_world *w, fake_part *fp, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(part_claim_at(fp, 100, world_now(w)), 0);
}

START_TEST(test_wakeup_fires_once_per_crossing)
{
    fake_world w;
    world_new(&w, 2050, 1000);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    claim_hundreds(&w, &fp, 20);
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    claim_hundreds(&w, &fp, 1);
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    claim_hundreds(&w, &fp, 9);
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_wakeup_is_rearmed_when_the_episode_ends)
{
    fake_world w;
    world_new(&w, 2050, 1000);
    fake_part a, b;
    part_add(&w, &a, 1, world_account(&w, NULL));
    part_add(&w, &b, 2, world_account(&w, NULL));
    claim_hundreds(&w, &a, 25);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_le(memq_tracker_used(w.t), 1000);
    claim_hundreds(&w, &b, 25);
    ck_assert_int_eq(atomic_load(&w.wakeups), 2);
    world_teardown(&w);
}
END_TEST

START_TEST(test_wakeup_is_rearmed_when_a_reclaim_call_finds_use_below_max)
{
    fake_world w;
    world_new(&w, 2050, 1000);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    claim_hundreds(&w, &fp, 21);
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    part_release(&fp, 1500); /* 600: the owner freed memory by itself */
    ck_assert_int_eq(memq_tracker_reclaim(w.t), 0);
    ck_assert_int_eq(w.n_calls, 0);
    claim_hundreds(&w, &fp, 15); /* 2100: crosses again */
    ck_assert_int_eq(atomic_load(&w.wakeups), 2);
    world_teardown(&w);
}
END_TEST

static void claim_from_wakeup(fake_world *w)
{
    fake_part *other = w->hook_ctx;
    other->hook_rc = memq_claim(other->p, 1);
}

START_TEST(test_wakeup_runs_without_the_lock_held)
{
    fake_world w;
    world_new(&w, 2050, 1000);
    fake_part fp, other;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    part_add(&w, &other, 2, world_account(&w, NULL));
    other.hook_rc = -100;
    w.callbacks_call_library = true; /* memq_tracker_stats and _used */
    w.wakeup_hook = claim_from_wakeup;
    w.hook_ctx = &other;
    claim_hundreds(&w, &fp, 21);
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    ck_assert_int_gt(w.library_calls_from_callbacks, 0);
    ck_assert_int_eq(other.hook_rc, 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 2101);
    world_teardown(&w);
}
END_TEST

START_TEST(test_fd_is_readable_while_reclamation_is_wanted)
{
    fake_world w;
    world_new(&w, 2050, 1000);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    int fd = memq_tracker_fd(w.t);
    ck_assert_int_ge(fd, 0);
    claim_hundreds(&w, &fp, 20);
    ck_assert(!fd_readable(fd));
    claim_hundreds(&w, &fp, 1);
    ck_assert(fd_readable(fd));
    ck_assert(fd_readable(fd)); /* polling does not consume it */
    world_teardown(&w);
}
END_TEST

START_TEST(test_fd_is_not_readable_after_the_episode_ends)
{
    fake_world w;
    world_new(&w, 2050, 1000);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    claim_hundreds(&w, &fp, 21);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_fd_stays_readable_while_the_budget_interrupts_the_episode)
{
    fake_world w;
    world_init(&w, 250, 100);
    w.cfg.reclaim_budget_us = 1;
    world_start(&w);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    a.sleep_ms_in_reclaim = 2;
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < 1000 && a.calls == 0; i++)
        rc = memq_tracker_reclaim(w.t);
    ck_assert_int_eq(rc, MEMQ_EAGAIN);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_fd_is_not_readable_while_only_pending_answers_are_awaited)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_fd_becomes_readable_when_a_pending_answer_arrives)
{
    fake_world w;
    fake_part a, b;
    setup_pending(&w, &a, &b);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    part_release(&a, 200);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_PARTIAL);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_fd_becomes_readable_when_a_pending_answer_times_out)
{
    /* The real clock here: the descriptor cannot follow a fake one. */
    fake_world w;
    world_init(&w, 250, 150);
    w.cfg.clock = NULL;
    w.cfg.clock_ctx = NULL;
    w.cfg.reclaim_timeout_ms = 300;
    world_start(&w);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(100), 200);
    world_holder(&w, &b, 2, NULL, AT(500), 100);
    a.answer = MEMQ_RECLAIM_PENDING;
    int rc = MEMQ_EAGAIN;
    for (int i = 0; i < 1000 && rc == MEMQ_EAGAIN && a.calls == 0; i++)
        rc = memq_tracker_reclaim(w.t);
    ck_assert_int_eq(rc, MEMQ_EAGAIN);
    int fd = memq_tracker_fd(w.t);
    ck_assert(!fd_readable(fd));
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    ck_assert_int_eq(poll(&pfd, 1, 10000), 1); /* bounded: a hang guard only */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(a.account));
    ck_assert_uint_eq(world_stats(&w).callback_timeouts, 1);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Reconfiguration
 * ---------------------------------------------------------------------- */

/* Three accounts of 1000 bytes under a max of 10000; by age: 1, 2, 0. */
static void setup_three_thousands(fake_world *w, fake_part parts[3])
{
    world_new(w, 10000, 5000);
    for (int i = 0; i < 3; i++)
        part_add(w, &parts[i], i, world_account(w, NULL));
    ck_assert_int_eq(part_claim_at(&parts[1], 1000, AT(100)), 0);
    ck_assert_int_eq(part_claim_at(&parts[2], 1000, AT(300)), 0);
    ck_assert_int_eq(part_claim_at(&parts[0], 1000, AT(500)), 0);
}

START_TEST(test_reconfigure_lowering_max_below_use_calls_wakeup)
{
    fake_world w;
    fake_part parts[3];
    setup_three_thousands(&w, parts);
    memq_config cfg = w.cfg;
    cfg.max = 2500;
    cfg.low_water = 1500;
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &cfg), 0);
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_reconfigure_lowering_max_below_use_starts_reclamation)
{
    fake_world w;
    fake_part parts[3];
    setup_three_thousands(&w, parts);
    memq_config cfg = w.cfg;
    cfg.max = 2500;
    cfg.low_water = 1500;
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &cfg), 0);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 1000);
    ck_assert_int_eq(w.n_calls, 2);
    ck_assert_int_eq(w.call_ids[0], 1);
    ck_assert_int_eq(w.call_ids[1], 2);
    world_teardown(&w);
}
END_TEST

START_TEST(test_reconfigure_raising_max_above_use_starts_nothing)
{
    fake_world w;
    fake_part parts[3];
    setup_three_thousands(&w, parts);
    memq_config cfg = w.cfg;
    cfg.max = 20000;
    cfg.low_water = 15000;
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &cfg), 0);
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * No callback after memq_participation_free
 * ---------------------------------------------------------------------- */

START_TEST(test_no_callback_runs_after_participation_free_returns)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(100), 100);
    world_holder(&w, &b, 2, NULL, AT(200), 100);
    world_holder(&w, &c, 3, NULL, AT(300), 100);
    part_free(&a);
    ck_assert_int_eq(part_claim_at(&b, 200, AT(400)), 0); /* crosses */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_gt(b.calls, 0);
    ck_assert_int_eq(a.calls, 0);
    ck_assert_int_eq(a.oldest_calls, 0);
    ck_assert_int_eq(w.calls_after_free, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_participation_freed_by_a_sibling_callback_is_not_called)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a1, a2, b;
    memq_account *a = world_holder(&w, &a1, 1, NULL, AT(100), 100);
    part_add(&w, &a2, 2, a);
    ck_assert_int_eq(part_claim_at(&a2, 100, AT(150)), 0);
    world_holder(&w, &b, 3, NULL, AT(900), 100);
    /* Whichever is asked first frees the other. */
    a1.hook = free_sibling;
    a1.hook_ctx = &a2;
    a2.hook = free_sibling;
    a2.hook_ctx = &a1;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(a1.calls + a2.calls, 1);
    ck_assert_int_eq(w.calls_after_free, 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 100);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * The time budget
 * ---------------------------------------------------------------------- */

/* Five accounts whose callbacks each take 2 ms; a 1 us budget. */
static void setup_slow_five(fake_world *w, fake_part parts[5])
{
    world_init(w, 450, 1);
    w->cfg.reclaim_budget_us = 1;
    world_start(w);
    for (int i = 0; i < 5; i++) {
        world_holder(w, &parts[i], i, NULL, AT(100 * (i + 1)), 100);
        parts[i].sleep_ms_in_reclaim = 2;
    }
}

START_TEST(test_reclaim_returns_eagain_when_its_budget_runs_out)
{
    fake_world w;
    fake_part parts[5];
    setup_slow_five(&w, parts);
    ck_assert_int_eq(memq_tracker_reclaim(w.t), MEMQ_EAGAIN);
    ck_assert_int_le(w.n_calls, 1); /* the budget is checked between callbacks */
    world_teardown(&w);
}
END_TEST

START_TEST(test_episode_continues_across_budgeted_calls)
{
    fake_world w;
    fake_part parts[5];
    setup_slow_five(&w, parts);
    int calls = 0, rc;
    do {
        rc = memq_tracker_reclaim(w.t);
        calls++;
    } while (rc == MEMQ_EAGAIN && calls < 1000);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_ge(calls, 5);
    ck_assert_int_eq(w.n_calls, 5);
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(w.call_ids[k], k);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    ck_assert_uint_eq(world_stats(&w).episodes, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_slow_oldest_callbacks_do_not_stall_the_episode)
{
    /* Each oldest() call takes longer than the default 1 ms budget: a
     * call may overrun its budget, but the episode must still advance. */
    fake_world w;
    world_new(&w, 250, 1);
    fake_part parts[3];
    for (int i = 0; i < 3; i++) {
        world_holder(&w, &parts[i], i, NULL, AT(100 * (i + 1)), 100);
        parts[i].sleep_ms_in_oldest = 2;
    }
    ck_assert_int_eq(world_reclaim_tries(&w, 100), 0);
    ck_assert_int_eq(w.n_calls, 3);
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * A collapse reaches every participant of the account
 * ---------------------------------------------------------------------- */

START_TEST(test_collapse_notifies_every_other_participant_of_the_account_in_the_same_call)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part idle, victim, other;
    memq_account *a = world_account(&w, NULL);
    part_add(&w, &idle, 1, a); /* registered first: asked after the victim */
    part_add(&w, &victim, 2, a);
    ck_assert_int_eq(part_claim_at(&victim, 100, AT(100)), 0);
    ck_assert_int_eq(part_claim_at(&idle, 100, AT(200)), 0);
    world_holder(&w, &other, 3, NULL, AT(300), 100);
    victim.answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(a));
    /* The idle sibling heard of it and freed its data in the same drive. */
    ck_assert_int_eq(idle.notices, 1);
    ck_assert(idle.last_req.closed);
    ck_assert_uint_eq(idle.last_req.older_than, MEMQ_TIME_MAX);
    ck_assert_uint_eq(idle.claimed, 0);
    ck_assert_int_eq(victim.notices, 0); /* it answered: it knows */
    ck_assert_int_eq(other.calls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_bytes_reclaimed_counts_only_what_participants_gave_back)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part stubborn, victim, other;
    memq_account *a = world_account(&w, NULL);
    part_add(&w, &stubborn, 1, a);
    part_add(&w, &victim, 2, a);
    ck_assert_int_eq(part_claim_at(&victim, 100, AT(100)), 0);
    ck_assert_int_eq(part_claim_at(&stubborn, 100, AT(200)), 0);
    world_holder(&w, &other, 3, NULL, AT(300), 100);
    victim.answer = MEMQ_RECLAIMED_COLLAPSING;
    victim.hook = release_everything; /* it frees its 100 before answering */
    stubborn.ignore_notice = true;    /* hears of it, frees nothing */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(stubborn.notices, 1);
    ck_assert_uint_eq(world_stats(&w).bytes_reclaimed, 100);
    world_teardown(&w);
}
END_TEST

START_TEST(test_a_timed_out_account_notifies_each_of_its_participants)
{
    fake_world w;
    fake_part a, b, sibling;
    setup_pending(&w, &a, &b);
    part_add(&w, &sibling, 3, a.account);
    ck_assert_int_eq(part_claim_at(&sibling, 20, AT(600)), 0);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, 51 * MS);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert(memq_account_closed(a.account));
    /* Each participant of the closed account, the silent one included. */
    ck_assert_int_eq(a.notices, 1);
    ck_assert_int_eq(sibling.notices, 1);
    ck_assert_uint_eq(a.claimed, 0);
    ck_assert_uint_eq(sibling.claimed, 0);
    ck_assert_uint_eq(world_stats(&w).bytes_reclaimed, 220);
    world_teardown(&w);
}
END_TEST

START_TEST(test_a_late_collapsing_answer_notifies_the_siblings_at_the_next_call)
{
    fake_world w;
    fake_part a, b, sibling;
    setup_pending(&w, &a, &b);
    part_add(&w, &sibling, 3, a.account);
    ck_assert_int_eq(part_claim_at(&sibling, 20, AT(600)), 0);
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    part_release(&a, a.claimed);
    memq_reclaim_done(a.p, MEMQ_RECLAIMED_COLLAPSING);
    ck_assert(memq_account_closed(a.account));
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(sibling.notices, 1);
    ck_assert_int_eq(a.notices, 0);
    ck_assert_uint_eq(world_stats(&w).bytes_reclaimed, 220);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Review of the age index and the rounds
 * ---------------------------------------------------------------------- */

/* The wakeup closes the account of the participant in hook_ctx, once. */
static void unref_from_wakeup(fake_world *w)
{
    fake_part *fp = w->hook_ctx;
    w->wakeup_hook = NULL;
    world_unref(w, fp->account);
}

START_TEST(test_claim_at_racing_an_account_close_leaves_no_account_in_the_index)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part a, b;
    memq_account *acc = world_account(&w, NULL);
    part_add(&w, &a, 1, acc);
    world_advance_to(&w, AT(500));
    w.wakeup_hook = unref_from_wakeup;
    w.hook_ctx = &a;
    /* Old data crossing max: the claim succeeds, the wakeup closes the
     * account, then the claim files the data's age. */
    ck_assert_int_eq(memq_claim_at(a.p, 300, AT(100)), 0);
    ck_assert(memq_account_closed(acc));
    part_free(&a); /* the account's memory goes with its last participation */
    ck_assert_uint_eq(w.t->ages_n, 0);
    world_holder(&w, &b, 2, NULL, AT(600), 300);
    ck_assert_int_eq(world_reclaim(&w), 0); /* reads no freed account */
    ck_assert_int_eq(b.calls, 1);
    world_teardown(&w);
}
END_TEST

/* The stalled participant frees part of its old data while its busy
 * sibling (hook_ctx) claims new data, more than was freed. */
static void sibling_claims_meanwhile(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *busy = fp->hook_ctx;
    if (busy->claimed == 0)
        fp->hook_rc = part_claim_at(busy, 4000, world_now(fp->w));
}

START_TEST(test_victim_that_gave_back_stays_a_candidate_while_a_sibling_claims)
{
    fake_world w;
    world_new(&w, 18000, 12000);
    fake_part stalled, busy, c, d;
    memq_account *a = world_account(&w, NULL);
    part_add(&w, &busy, 1, a);
    part_add(&w, &stalled, 2, a); /* asked first */
    ck_assert_int_eq(part_claim_at(&stalled, 9000, AT(100)), 0);
    world_holder(&w, &c, 3, NULL, AT(200), 5000);
    world_holder(&w, &d, 4, NULL, AT(300), 5000);
    world_advance_to(&w, AT(400));
    stalled.free_per_call = 3000;
    stalled.hook = sibling_claims_meanwhile;
    stalled.hook_ctx = &busy;
    busy.free_per_call = 0;
    ck_assert_int_eq(part_claim_at(&c, 1, AT(400)), 0); /* crosses max */
    ck_assert_int_eq(world_reclaim(&w), 0);
    /* 9,000 old bytes went first, three rounds of 3,000, before anything
     * younger; then C (stamped 200) was enough, and D stays. */
    ck_assert_uint_eq(stalled.claimed, 0);
    ck_assert_int_eq(stalled.calls, 3);
    ck_assert_int_lt(world_call_index(&w, 2), world_call_index(&w, 3));
    ck_assert_int_eq(d.calls, 0);
    world_teardown(&w);
}
END_TEST

/* An oldest callback during which the sibling, read as empty just before,
 * receives data arriving at AT(150); another account's participant
 * (`other`) replaces its data with data arriving at AT(155); and this
 * participant's own data is replaced by data arriving at AT(160). */
typedef struct batch_part {
    fake_part base;
    fake_part *sibling, *other;
    memq_participation *p;
    bool armed;
} batch_part;

static bool batch_oldest(void *self, memq_time *when)
{
    batch_part *bp = self;
    fake_world *w = bp->base.w;
    if (bp->armed) {
        bp->armed = false;
        world_advance_to(w, AT(150));
        bp->base.hook_rc = part_claim_at(bp->sibling, 100, AT(150));
        world_advance_to(w, AT(155));
        bp->other->oldest = AT(155);
        world_advance_to(w, AT(160));
    }
    *when = AT(160);
    return true;
}

static memq_reclaim_status batch_reclaim(void *self, const memq_reclaim_request *req)
{
    batch_part *bp = self;
    (void)req;
    bp->base.calls++;
    return MEMQ_RECLAIMED_PARTIAL;
}

START_TEST(test_keys_stay_lower_bounds_when_a_sibling_claims_during_the_batch)
{
    static const memq_participant_ops ops = {batch_oldest, batch_reclaim};
    fake_world w;
    world_new(&w, 1000, 500);
    batch_part bp;
    memset(&bp, 0, sizeof bp);
    bp.base.w = &w;
    fake_part sibling, other;
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_participant_register(a, &ops, &bp, &bp.p), 0);
    part_add(&w, &sibling, 2, a); /* read first, while still empty */
    world_advance_to(&w, AT(100));
    ck_assert_int_eq(memq_claim(bp.p, 100), 0); /* A enters the index at 100 */
    world_holder(&w, &other, 3, NULL, AT(120), 800);
    bp.sibling = &sibling;
    bp.other = &other;
    bp.armed = true;
    /* The crossing, at 140: A (key 100) is asked first, from 140 to 160. */
    ck_assert_int_eq(part_claim_at(&other, 200, AT(140)), 0);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(bp.base.hook_rc, 0);
    /* A holds data from 150, older than the other's 155: A goes first. */
    ck_assert_int_ge(world_call_index(&w, 2), 0);
    ck_assert(world_call_index(&w, 3) < 0 || world_call_index(&w, 2) < world_call_index(&w, 3));
    memq_participation_free(bp.p);
    world_teardown(&w);
}
END_TEST

/* The participant in hook_ctx (its account holding only cache) claims
 * and releases a byte: its account flips back into the running and out.
 * hook_rc records the most accounts ever set aside at once. */
static void flip_other_account(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *flipper = fp->hook_ctx;
    if (memq_claim(flipper->p, 1) == 0)
        memq_release(flipper->p, 1);
    size_t n = fp->w->t->ep.aside_n;
    if ((size_t)fp->hook_rc < n)
        fp->hook_rc = (int)n;
}

START_TEST(test_an_account_flipping_between_cache_and_claims_takes_one_place_aside)
{
    fake_world w;
    world_init(&w, 100 * KIB, 50 * KIB);
    w.cfg.cache_max = 4 * KIB;
    world_start(&w);
    fake_part flipper, old;
    world_holder(&w, &flipper, 1, NULL, AT(10), 1);
    part_release(&flipper, 1); /* holds only cache now */
    world_holder(&w, &old, 2, NULL, AT(20), 120 * KIB);
    old.free_per_call = 512; /* a little per round: many rounds */
    old.hook = flip_other_account;
    old.hook_ctx = &flipper;
    (void)world_reclaim(&w);
    ck_assert_int_gt(old.calls, 20);
    ck_assert_int_le(old.hook_rc, 2);
    world_teardown(&w);
}
END_TEST

/* The sibling in hook_ctx refills its cache while the round is on. */
static void sibling_refills(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fake_part *sibling = fp->hook_ctx;
    fp->hook_rc = part_claim_at(sibling, 8 * KIB, world_now(fp->w)); /* a refill */
}

START_TEST(test_a_target_that_refills_during_its_round_still_gives_everything_back)
{
    fake_world w;
    world_init(&w, 100 * KIB, 50 * KIB);
    w.cfg.cache_max = 4 * KIB;
    world_start(&w);
    fake_part first, second;
    memq_account *a = world_account(&w, NULL);
    part_add(&w, &second, 1, a);
    part_add(&w, &first, 2, a); /* asked first */
    ck_assert_int_eq(part_claim_at(&first, 60 * KIB, AT(10)), 0);
    ck_assert_int_eq(part_claim_at(&second, 60 * KIB, AT(20)), 0);
    first.hook = sibling_refills;
    first.hook_ctx = &second;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(first.hook_rc, 0);
    ck_assert_uint_eq(second.claimed, 0);
    /* What the second freed went back to the tracker, not to its cache. */
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.cached, 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * A fake participant that acts once inside its oldest callback
 * ---------------------------------------------------------------------- */

typedef struct acting_part acting_part;
struct acting_part {
    fake_part base; /* first: the fake reclaim callback takes it as its self */
    void (*in_oldest)(acting_part *ap);
    void *ctx;
    bool armed;
    int rc;
};

static bool acting_oldest(void *self, memq_time *when)
{
    acting_part *ap = self;
    if (ap->armed) {
        ap->armed = false;
        ap->in_oldest(ap);
    }
    return fake_oldest(&ap->base, when);
}

static void acting_add(fake_world *w, acting_part *ap, int id, memq_account *a)
{
    static const memq_participant_ops ops = {acting_oldest, fake_reclaim};
    memset(ap, 0, sizeof *ap);
    fake_part *fp = &ap->base;
    fp->w = w;
    fp->id = id;
    fp->account = a;
    fp->answer = MEMQ_RECLAIMED_PARTIAL;
    fp->free_per_call = SIZE_MAX;
    ck_assert_int_eq(memq_participant_register(a, &ops, ap, &fp->p), 0);
    w->parts[w->n_parts++] = fp;
}

/* The sibling in ctx receives 100 bytes of data that arrived at AT(50). */
static void sibling_receives_old_data(acting_part *ap)
{
    ap->rc = part_claim_at(ap->ctx, 100, AT(50));
}

/* A's batch reads p1 (data from 100), then p0 (from 150), whose callback
 * runs while p1, already read, receives data from 50: the key A gets must
 * be 50, not 100, or B (60) would go first. */
START_TEST(test_data_older_than_its_claim_claimed_during_the_batch_keeps_the_key_a_lower_bound)
{
    fake_world w;
    world_new(&w, 1000, 500);
    memq_account *a = world_account(&w, NULL);
    acting_part p0;
    fake_part p1, b;
    acting_add(&w, &p0, 1, a);
    part_add(&w, &p1, 2, a); /* registered last: read first */
    ck_assert_int_eq(part_claim_at(&p1, 100, AT(10)), 0); /* A enters the index at 10 */
    ck_assert_int_eq(part_claim_at(&p0.base, 100, AT(15)), 0);
    world_holder(&w, &b, 3, NULL, AT(60), 800);
    /* Both drain their old data; new data arrives at 100 and 150. */
    part_release(&p1, 100);
    ck_assert_int_eq(part_claim_at(&p1, 100, AT(100)), 0);
    part_release(&p0.base, 100);
    p0.in_oldest = sibling_receives_old_data;
    p0.ctx = &p1;
    p0.armed = true;
    ck_assert_int_eq(part_claim_at(&p0.base, 200, AT(150)), 0); /* crosses max */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(p0.rc, 0);
    ck_assert_int_eq(p1.oldest, AT(50));
    ck_assert_int_ge(world_call_index(&w, 2), 0);
    ck_assert(world_call_index(&w, 3) < 0 || world_call_index(&w, 2) < world_call_index(&w, 3));
    world_teardown(&w);
}
END_TEST

static void free_the_tracker(acting_part *ap)
{
    memq_tracker_free(ap->base.w->t);
    ap->base.w->t = NULL;
}

/* An oldest callback may free the tracker too, whether it is the first
 * account's (the victim's) or the next one's (the runner-up's): the call
 * ends with MEMQ_ESHUTDOWN and no reclaim callback runs. */
START_TEST(test_an_oldest_callback_freeing_the_tracker_ends_the_reclaim_call_with_eshutdown)
{
    for (int runner_up = 0; runner_up < 2; runner_up++) {
        fake_world w;
        world_new(&w, 1000, 500);
        memq_account *a = world_account(&w, NULL), *b = world_account(&w, NULL);
        acting_part pa, pb;
        acting_add(&w, &pa, 1, a);
        acting_add(&w, &pb, 2, b);
        ck_assert_int_eq(part_claim_at(&pa.base, 600, AT(10)), 0);
        ck_assert_int_eq(part_claim_at(&pb.base, 600, AT(20)), 0);
        acting_part *freer = runner_up ? &pb : &pa;
        freer->in_oldest = free_the_tracker;
        freer->armed = true;
        memq_tracker *t = w.t; /* the world's accounts keep its memory */
        ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_ESHUTDOWN);
        ck_assert_ptr_null(w.t);
        ck_assert_int_eq(w.n_calls, 0);
        ck_assert_int_eq(pa.base.oldest_calls, 1);
        ck_assert_int_eq(pb.base.oldest_calls, runner_up);
        world_teardown(&w);
    }
}
END_TEST

/* Participants still to be told that their account collapsed hear nothing
 * once the tracker is freed: no callback runs after memq_tracker_free(). */
START_TEST(test_tracker_free_drops_notices_not_yet_delivered)
{
    fake_world w;
    world_init(&w, 1000, 500);
    w.cfg.reclaim_budget_us = 10 * 1000 * 1000; /* one call does the round */
    world_start(&w);
    fake_part pending, late;
    memq_account *a = world_holder(&w, &pending, 1, NULL, AT(10), 1100);
    pending.answer = MEMQ_RECLAIM_PENDING;
    ck_assert_int_eq(memq_tracker_reclaim(w.t), MEMQ_EAGAIN);
    ck_assert_int_eq(pending.calls, 1);
    part_add(&w, &late, 2, a);
    ck_assert_int_eq(part_claim_at(&late, 50, AT(20)), 0);
    part_release(&pending, pending.claimed);
    memq_reclaim_done(pending.p, MEMQ_RECLAIMED_COLLAPSING); /* queues late's notice */
    ck_assert(memq_account_closed(a));
    ck_assert(fd_readable(memq_tracker_fd(w.t))); /* the next call would tell it */
    memq_tracker_free(w.t);
    w.t = NULL;
    ck_assert_int_eq(late.calls, 0);
    ck_assert_int_eq(late.notices, 0);
    ck_assert_int_eq(memq_claim(late.p, 1), MEMQ_ESHUTDOWN);
    world_teardown(&w);
}
END_TEST

/* The answer given with memq_reclaim_done() before the callback returns
 * PENDING (the work finished at once, on this thread or another) counts
 * as given: nothing is left pending. */
static void answer_early(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    memq_reclaim_status st = fp->hook_ctx != NULL ? MEMQ_RECLAIMED_COLLAPSING
                                                  : MEMQ_RECLAIMED_PARTIAL;
    part_release(fp, fp->claimed);
    memq_reclaim_done(fp->p, st);
}

START_TEST(test_a_partial_answer_given_before_the_callback_returns_pending_completes_it)
{
    fake_world w;
    world_init(&w, 1000, 500);
    w.cfg.reclaim_budget_us = 10 * 1000 * 1000; /* one call does the round */
    world_start(&w);
    fake_part fp;
    memq_account *a = world_holder(&w, &fp, 1, NULL, AT(10), 1100);
    fp.answer = MEMQ_RECLAIM_PENDING;
    fp.hook = answer_early;
    ck_assert_int_eq(memq_tracker_reclaim(w.t), 0); /* not waiting for anything */
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.partial_reclaims, 1);
    ck_assert_uint_eq(st.bytes_reclaimed, 1100);
    ck_assert_uint_eq(st.misuse_events, 0);
    ck_assert(!memq_account_closed(a));
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    world_advance_to(&w, AT(1000)); /* long after the timeout: nothing expires */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).callback_timeouts, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_a_collapsing_answer_given_before_the_callback_returns_pending_closes_the_account)
{
    fake_world w;
    world_init(&w, 1000, 500);
    w.cfg.reclaim_budget_us = 10 * 1000 * 1000; /* one call does the round */
    world_start(&w);
    fake_part fp;
    memq_account *a = world_holder(&w, &fp, 1, NULL, AT(10), 1100);
    fp.answer = MEMQ_RECLAIM_PENDING;
    fp.hook = answer_early;
    fp.hook_ctx = &fp; /* collapse */
    ck_assert_int_eq(memq_tracker_reclaim(w.t), 0);
    ck_assert(memq_account_closed(a));
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.accounts_collapsed, 1);
    ck_assert_uint_eq(st.callback_timeouts, 0);
    ck_assert_uint_eq(st.used, 0);
    world_teardown(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reclaim");
    TCase *tc;

    tc = test_case("oldest_first");
    tcase_add_test(tc, test_oldest_of_21_accounts_is_reclaimed_first);
    tcase_add_test(tc, test_reclamation_proceeds_oldest_first_down_to_low_water);
    tcase_add_test(tc, test_claim_that_crosses_max_still_succeeds);
    tcase_add_test(tc, test_data_stamped_before_its_claim_is_still_reclaimed_oldest_first);
    tcase_add_test(tc, test_used_is_at_or_below_low_water_after_an_episode);
    tcase_add_test(tc, test_reclaim_below_max_does_nothing);
    tcase_add_test(tc, test_reclaim_and_fd_reject_null);
    suite_add_tcase(s, tc);

    tc = test_case("tree");
    tcase_add_test(tc, test_child_with_oldest_data_is_reclaimed_alone);
    tcase_add_test(tc, test_older_parent_takes_its_descendants_with_it);
    tcase_add_test(tc, test_account_with_two_parents_is_reclaimed_with_either);
    tcase_add_test(tc, test_every_participant_of_the_victim_gets_the_request);
    suite_add_tcase(s, tc);

    tc = test_case("request");
    tcase_add_test(tc, test_request_want_is_the_excess_over_low_water_when_the_round_starts);
    tcase_add_test(tc, test_request_older_than_is_the_next_candidates_oldest_time);
    tcase_add_test(tc, test_request_older_than_is_time_max_without_another_candidate);
    suite_add_tcase(s, tc);

    tc = test_case("answers");
    tcase_add_test(tc, test_partial_answer_leaves_the_account_open);
    tcase_add_test(tc, test_collapsing_answer_closes_the_account_and_forgets_its_usage);
    tcase_add_test(tc, test_collapsing_answer_forgets_every_participant_of_the_account);
    tcase_add_test(tc, test_descendants_of_a_collapsed_account_stay_open);
    tcase_add_test(tc, test_unknown_answer_is_treated_as_partial);
    suite_add_tcase(s, tc);

    tc = test_case("pending");
    tcase_add_test(tc, test_pending_answer_is_awaited_until_its_timeout);
    tcase_add_test(tc, test_pending_answer_times_out_and_is_treated_as_collapsed);
    tcase_add_test(tc, test_pending_victim_covering_the_excess_holds_back_new_victims);
    tcase_add_test(tc, test_pending_victim_not_covering_the_excess_lets_the_next_be_chosen);
    tcase_add_test(tc, test_reclaim_done_completes_a_pending_answer);
    tcase_add_test(tc, test_reclaim_done_collapsing_closes_the_account);
    tcase_add_test(tc, test_reclaim_done_without_a_pending_answer_is_ignored);
    tcase_add_test(tc, test_late_reclaim_done_after_the_timeout_is_ignored);
    tcase_add_test(tc, test_freeing_a_pending_participation_abandons_its_answer);
    suite_add_tcase(s, tc);

    tc = test_case("reentrancy");
    tcase_add_test(tc, test_callback_may_free_its_own_participation);
    tcase_add_test(tc, test_callback_may_unref_its_account);
    tcase_add_test(tc, test_callback_may_claim_more_while_being_reclaimed);
    tcase_add_test(tc, test_nested_reclaim_from_a_callback_returns_eagain);
    tcase_add_test(tc, test_reclaim_returns_eshutdown_when_a_callback_frees_the_tracker);
    tcase_add_test(tc, test_participant_callbacks_may_call_the_library);
    tcase_add_test(tc, test_clock_is_never_called_under_a_lock);
    suite_add_tcase(s, tc);

    tc = test_case("ages");
    tcase_add_test(tc, test_participant_claiming_memory_without_data_is_treated_as_oldest);
    tcase_add_test(tc, test_a_victim_is_found_without_asking_every_account);
    tcase_add_test(tc, test_an_account_whose_old_data_is_gone_waits_for_its_true_turn);
    tcase_add_test(tc, test_claim_at_puts_data_older_than_its_claim_in_its_true_order);
    tcase_add_test(tc, test_ages_are_checked_again_before_each_victim);
    tcase_add_test(tc, test_ages_changed_between_budgeted_calls_are_followed);
    tcase_add_test(tc, test_account_created_during_an_episode_is_a_candidate);
    suite_add_tcase(s, tc);

    tc = test_case("unreclaimable");
    tcase_add_test(tc, test_episode_without_reclaimable_data_stops_and_returns_zero);
    tcase_add_test(tc, test_unreclaimable_episode_is_counted);
    tcase_add_test(tc, test_unreclaimable_episode_is_logged_in_one_line);
    tcase_add_test(tc, test_log_callback_may_call_the_library);
    tcase_add_test(tc, test_next_crossing_after_an_unreclaimable_episode_starts_a_new_episode);
    tcase_add_test(tc, test_tracker_recovers_after_an_unreclaimable_episode);
    tcase_add_test(tc, test_claims_above_max_after_an_unreclaimable_episode_wait_for_growth);
    suite_add_tcase(s, tc);

    tc = test_case("wakeup_and_fd");
    tcase_add_test(tc, test_wakeup_fires_once_per_crossing);
    tcase_add_test(tc, test_wakeup_is_rearmed_when_the_episode_ends);
    tcase_add_test(tc, test_wakeup_is_rearmed_when_a_reclaim_call_finds_use_below_max);
    tcase_add_test(tc, test_wakeup_runs_without_the_lock_held);
    tcase_add_test(tc, test_fd_is_readable_while_reclamation_is_wanted);
    tcase_add_test(tc, test_fd_is_not_readable_after_the_episode_ends);
    tcase_add_test(tc, test_fd_stays_readable_while_the_budget_interrupts_the_episode);
    tcase_add_test(tc, test_fd_is_not_readable_while_only_pending_answers_are_awaited);
    tcase_add_test(tc, test_fd_becomes_readable_when_a_pending_answer_arrives);
    tcase_add_test(tc, test_fd_becomes_readable_when_a_pending_answer_times_out);
    suite_add_tcase(s, tc);

    tc = test_case("reconfigure");
    tcase_add_test(tc, test_reconfigure_lowering_max_below_use_calls_wakeup);
    tcase_add_test(tc, test_reconfigure_lowering_max_below_use_starts_reclamation);
    tcase_add_test(tc, test_reconfigure_raising_max_above_use_starts_nothing);
    suite_add_tcase(s, tc);

    tc = test_case("free");
    tcase_add_test(tc, test_no_callback_runs_after_participation_free_returns);
    tcase_add_test(tc, test_participation_freed_by_a_sibling_callback_is_not_called);
    suite_add_tcase(s, tc);

    tc = test_case("collapse_notice");
    tcase_add_test(tc, test_collapse_notifies_every_other_participant_of_the_account_in_the_same_call);
    tcase_add_test(tc, test_bytes_reclaimed_counts_only_what_participants_gave_back);
    tcase_add_test(tc, test_a_timed_out_account_notifies_each_of_its_participants);
    tcase_add_test(tc, test_a_late_collapsing_answer_notifies_the_siblings_at_the_next_call);
    suite_add_tcase(s, tc);

    tc = test_case("review");
    tcase_add_test(tc, test_claim_at_racing_an_account_close_leaves_no_account_in_the_index);
    tcase_add_test(tc, test_victim_that_gave_back_stays_a_candidate_while_a_sibling_claims);
    tcase_add_test(tc, test_keys_stay_lower_bounds_when_a_sibling_claims_during_the_batch);
    tcase_add_test(tc, test_an_account_flipping_between_cache_and_claims_takes_one_place_aside);
    tcase_add_test(tc, test_a_target_that_refills_during_its_round_still_gives_everything_back);
    tcase_add_test(tc,
                   test_data_older_than_its_claim_claimed_during_the_batch_keeps_the_key_a_lower_bound);
    tcase_add_test(tc, test_an_oldest_callback_freeing_the_tracker_ends_the_reclaim_call_with_eshutdown);
    tcase_add_test(tc, test_tracker_free_drops_notices_not_yet_delivered);
    tcase_add_test(tc, test_a_partial_answer_given_before_the_callback_returns_pending_completes_it);
    tcase_add_test(tc,
                   test_a_collapsing_answer_given_before_the_callback_returns_pending_closes_the_account);
    suite_add_tcase(s, tc);

    tc = test_case("budget");
    tcase_add_test(tc, test_reclaim_returns_eagain_when_its_budget_runs_out);
    tcase_add_test(tc, test_episode_continues_across_budgeted_calls);
    tcase_add_test(tc, test_slow_oldest_callbacks_do_not_stall_the_episode);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
