/*
 * check_ages.c - the age index (lib/ages.c): which account holds the
 * oldest data, with keys that stay lower bounds of each account's data.
 *
 * The first tests go through the public API, as a daemon would, and look
 * at the index afterwards.  The last ones hold the index's own contract
 * (lib/internal.h) where its callers never go, because they always
 * reserve room first or check the account first: an account set aside
 * only with room in the list, entered only with room in the heap, never
 * for a closed account.  Those calls are made under the tracker's lock,
 * as the library makes them.
 */
#include "testutil.h"

#include "internal.h"

#define T0 WORLD_START_TIME
#define AT(ms) (T0 + (memq_time)(ms) * MS)

/* The account's key in the index (MEMQ_TIME_MAX: not there). */
static memq_time key_of(fake_world *w, memq_account *a)
{
    pthread_mutex_lock(&w->t->lock);
    memq_time key = memq__ages_key(w->t, a);
    pthread_mutex_unlock(&w->t->lock);
    return key;
}

static memq_account *top_of(fake_world *w)
{
    pthread_mutex_lock(&w->t->lock);
    memq_account *a = memq__ages_top(w->t);
    pthread_mutex_unlock(&w->t->lock);
    return a;
}

/* ----------------------------------------------------------------------
 * Through the public API
 * ---------------------------------------------------------------------- */

START_TEST(test_an_account_enters_the_index_with_the_time_of_its_first_claim)
{
    fake_world w;
    world_new(&w, 1 * MIB, 0);
    fake_part a_part, b_part;
    memq_account *a = world_holder(&w, &a_part, 1, NULL, AT(100), 10);
    memq_account *b = world_holder(&w, &b_part, 2, NULL, AT(150), 10);
    ck_assert_uint_eq(key_of(&w, a), AT(100));
    ck_assert_uint_eq(key_of(&w, b), AT(150));
    ck_assert_ptr_eq(top_of(&w), a);
    /* Newer data does not change a key: it stays a lower bound. */
    ck_assert_int_eq(part_claim_at(&a_part, 10, AT(300)), 0);
    ck_assert_uint_eq(key_of(&w, a), AT(100));
    /* Holding nothing takes an account out. */
    part_release(&a_part, a_part.claimed);
    ck_assert_uint_eq(key_of(&w, a), MEMQ_TIME_MAX);
    ck_assert_ptr_eq(top_of(&w), b);
    world_teardown(&w);
}
END_TEST

/* Data older than the account's key (cells moved from another queue with
 * their stamps) lowers the key at once, and the account moves up. */
START_TEST(test_data_claimed_older_than_an_accounts_key_moves_it_up_the_index)
{
    fake_world w;
    world_new(&w, 1 * MIB, 0);
    fake_part a_part, b_part;
    memq_account *a = world_holder(&w, &a_part, 1, NULL, AT(200), 10);
    memq_account *b = world_holder(&w, &b_part, 2, NULL, AT(250), 10);
    ck_assert_ptr_eq(top_of(&w), a);
    ck_assert_int_eq(part_claim_at(&b_part, 10, AT(100)), 0);
    ck_assert_uint_eq(key_of(&w, b), AT(100));
    ck_assert_ptr_eq(top_of(&w), b);
    world_teardown(&w);
}
END_TEST

/* The victim of a round, set aside while it is asked, receives data older
 * than the age it reported (here from its own reclaim callback) and frees
 * the rest: the key it gets back after the round is that data's time, so
 * that the key stays a lower bound. */
static void receive_data_from_20(fake_part *fp, const memq_reclaim_request *req)
{
    (void)req;
    fp->hook_rc = part_claim_at(fp, 100, AT(20));
}

START_TEST(test_data_older_than_its_age_claimed_while_set_aside_lowers_the_key_it_gets_back)
{
    fake_world w;
    world_new(&w, 1000, 500);
    fake_part fp;
    memq_account *a = world_holder(&w, &fp, 1, NULL, AT(100), 1100); /* crosses max */
    fp.hook = receive_data_from_20;
    fp.free_per_call = 1100; /* frees the data from 100, keeps the data from 20 */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(fp.hook_rc, 0);
    ck_assert_int_eq(fp.calls, 1);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 100);
    ck_assert_uint_eq(key_of(&w, a), AT(20));
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * The index's own contract, where its callers never go
 * ---------------------------------------------------------------------- */

START_TEST(test_an_account_outside_the_index_is_not_set_aside)
{
    fake_world w;
    world_new(&w, 1 * MIB, 0);
    memq_account *a = world_account(&w, NULL);
    memq_tracker *t = w.t;
    pthread_mutex_lock(&t->lock);
    ck_assert(memq__aside_reserve(t));
    memq__set_aside(t, a, AT(5));
    ck_assert_uint_eq(a->aside, 0);
    ck_assert_uint_eq(a->listed, 0);
    ck_assert_uint_eq(t->ep.aside_n, 0);
    ck_assert_uint_eq(a->slot, 0);
    pthread_mutex_unlock(&t->lock);
    world_teardown(&w);
}
END_TEST

START_TEST(test_without_room_reserved_in_the_aside_list_an_account_stays_in_the_running)
{
    fake_world w;
    world_new(&w, 1 * MIB, 0);
    fake_part fp;
    memq_account *a = world_holder(&w, &fp, 1, NULL, AT(100), 10);
    memq_tracker *t = w.t;
    pthread_mutex_lock(&t->lock);
    ck_assert_uint_eq(t->ep.aside_cap, 0); /* no room reserved yet */
    memq__set_aside(t, a, AT(100));
    ck_assert_uint_eq(a->aside, 0);
    ck_assert_uint_eq(t->ep.aside_n, 0);
    ck_assert_ptr_eq(memq__ages_top(t), a);
    ck_assert_uint_eq(memq__ages_key(t, a), AT(100));
    pthread_mutex_unlock(&t->lock);
    world_teardown(&w);
}
END_TEST

START_TEST(test_a_closed_account_never_comes_back_into_the_index)
{
    fake_world w;
    world_new(&w, 1 * MIB, 0);
    fake_part fp;
    memq_account *a = world_holder(&w, &fp, 1, NULL, AT(100), 10);
    world_unref(&w, a); /* closed; the participation keeps its memory */
    memq_tracker *t = w.t;
    pthread_mutex_lock(&t->lock);
    ck_assert(a->closed);
    ck_assert_uint_eq(a->slot, 0);
    ck_assert(memq__ages_reserve(t));
    memq__ages_claimed(t, a, AT(5));
    ck_assert_uint_eq(a->slot, 0);
    ck_assert_uint_eq(t->ages_n, 0);
    ck_assert_uint_eq(atomic_load(&a->key_hint), MEMQ_TIME_MAX);
    pthread_mutex_unlock(&t->lock);
    world_teardown(&w);
}
END_TEST

START_TEST(test_an_account_enters_the_index_only_with_room_reserved)
{
    fake_world w;
    world_new(&w, 1 * MIB, 0);
    memq_account *a = world_account(&w, NULL);
    memq_tracker *t = w.t;
    pthread_mutex_lock(&t->lock);
    ck_assert_uint_eq(t->ages_cap, 0);
    memq__ages_claimed(t, a, AT(5)); /* its claim answered MEMQ_ENOMEM */
    ck_assert_uint_eq(a->slot, 0);
    ck_assert_uint_eq(t->ages_n, 0);
    ck_assert(memq__ages_reserve(t));
    memq__ages_claimed(t, a, AT(5));
    ck_assert_uint_eq(a->slot, 1);
    ck_assert_uint_eq(memq__ages_key(t, a), AT(5));
    ck_assert_uint_eq(atomic_load(&a->key_hint), AT(5));
    memq__ages_leave(t, a); /* it holds nothing: out again */
    ck_assert_uint_eq(a->slot, 0);
    pthread_mutex_unlock(&t->lock);
    world_teardown(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ages");
    TCase *tc = test_case("public");
    tcase_add_test(tc, test_an_account_enters_the_index_with_the_time_of_its_first_claim);
    tcase_add_test(tc, test_data_claimed_older_than_an_accounts_key_moves_it_up_the_index);
    tcase_add_test(tc, test_data_older_than_its_age_claimed_while_set_aside_lowers_the_key_it_gets_back);
    suite_add_tcase(s, tc);
    tc = test_case("contract");
    tcase_add_test(tc, test_an_account_outside_the_index_is_not_set_aside);
    tcase_add_test(tc, test_without_room_reserved_in_the_aside_list_an_account_stays_in_the_running);
    tcase_add_test(tc, test_a_closed_account_never_comes_back_into_the_index);
    tcase_add_test(tc, test_an_account_enters_the_index_only_with_room_reserved);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
