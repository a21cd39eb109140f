/*
 * check_ids.c - the open accounts by id (lib/ids.c): found while open,
 * gone once closed, through growth, shrinking, collisions and backward
 * shifts; every open account visited once; a tracker closing them all.
 */
#include "testutil.h"

#include "internal.h" /* the table itself */

static memq_account *found(fake_world *w, uint64_t id)
{
    memq_account *a = memq_account_find(w->t, id);
    if (a != NULL)
        memq_account_unref(a);
    return a;
}

START_TEST(test_every_open_account_is_found_and_no_closed_one_through_random_churn)
{
    enum { N = 6000 };
    fake_world w;
    world_new(&w, 1 * GIB, 0);
    memq_account **acc = calloc(N, sizeof *acc);
    bool *open = calloc(N, sizeof *open);
    ck_assert_ptr_nonnull(acc);
    ck_assert_ptr_nonnull(open);
    uint64_t rng = 0x1d5;
    size_t n_open = 0, max_cap = 0;
    for (int step = 0; step < 60000; step++) {
        size_t i = rng_below(&rng, N);
        /* Grow first, then mostly close: the table grows and shrinks. */
        bool create = step < 30000 ? rng_below(&rng, 3) != 0 : rng_below(&rng, 10) == 0;
        if (create && !open[i]) {
            ck_assert_int_eq(memq_account_new(w.t, NULL, &acc[i]), 0);
            open[i] = true;
            n_open++;
        } else if (!create && open[i]) {
            memq_account_unref(acc[i]);
            open[i] = false;
            n_open--;
        }
        if (w.t->ids_cap > max_cap)
            max_cap = w.t->ids_cap;
        if (step % 997 == 0) {
            for (size_t k = 0; k < N; k++)
                if (open[k])
                    ck_assert_ptr_eq(found(&w, memq_account_id(acc[k])), acc[k]);
            ck_assert_uint_eq(world_stats(&w).accounts, n_open);
            /* At most half full, and never below an eighth but for the floor. */
            ck_assert_uint_le(2 * w.t->naccounts, w.t->ids_cap);
        }
    }
    /* Ids of closed accounts are not found (ids are never reused). */
    for (uint64_t id = 1; id < 200; id++) {
        memq_account *a = found(&w, id);
        if (a != NULL)
            ck_assert(!memq_account_closed(a));
    }
    ck_assert_uint_lt(w.t->ids_cap, max_cap); /* it shrank */
    size_t visited = 0, slot = 0;
    while (memq__ids_next(w.t, &slot) != NULL)
        visited++;
    ck_assert_uint_eq(visited, n_open);
    for (size_t k = 0; k < N; k++)
        if (open[k])
            memq_account_unref(acc[k]);
    ck_assert_uint_eq(world_stats(&w).accounts, 0);
    free(acc);
    free(open);
    world_teardown(&w);
}
END_TEST

START_TEST(test_tracker_free_closes_every_account_of_a_crowded_table)
{
    enum { N = 3000 };
    fake_world w;
    world_new(&w, 1 * GIB, 0);
    memq_account **acc = calloc(N, sizeof *acc);
    ck_assert_ptr_nonnull(acc);
    for (size_t k = 0; k < N; k++)
        ck_assert_int_eq(memq_account_new(w.t, NULL, &acc[k]), 0);
    memq_tracker_free(w.t);
    w.t = NULL;
    for (size_t k = 0; k < N; k++) {
        ck_assert(memq_account_closed(acc[k]));
        memq_account_unref(acc[k]);
    }
    free(acc);
    world_teardown(&w);
}
END_TEST

START_TEST(test_an_unknown_id_is_not_found_in_an_empty_or_full_table)
{
    fake_world w;
    world_new(&w, 1 * GIB, 0);
    ck_assert_ptr_null(memq_account_find(w.t, 1));
    ck_assert_ptr_null(memq_account_find(w.t, 0));
    memq_account *a = world_account(&w, NULL);
    ck_assert_ptr_null(memq_account_find(w.t, memq_account_id(a) + 1));
    ck_assert_ptr_null(memq_account_find(w.t, UINT64_MAX));
    world_teardown(&w);
}
END_TEST

/* Removing an account that is not in the table (the table may even be
 * unallocated) changes nothing: every open account is still found. */
START_TEST(test_removing_an_account_that_is_not_in_the_table_changes_nothing)
{
    fake_world w;
    world_new(&w, 1 * GIB, 0);
    memq_account stranger;
    memset(&stranger, 0, sizeof stranger);
    stranger.id = 12345;
    pthread_mutex_lock(&w.t->lock);
    ck_assert_uint_eq(w.t->ids_cap, 0);
    memq__ids_remove(w.t, &stranger); /* an empty, unallocated table */
    pthread_mutex_unlock(&w.t->lock);
    memq_account *a = world_account(&w, NULL), *b = world_account(&w, NULL);
    pthread_mutex_lock(&w.t->lock);
    memq__ids_remove(w.t, &stranger);
    size_t n = w.t->naccounts;
    pthread_mutex_unlock(&w.t->lock);
    ck_assert_uint_eq(n, 2);
    ck_assert_ptr_eq(found(&w, memq_account_id(a)), a);
    ck_assert_ptr_eq(found(&w, memq_account_id(b)), b);
    world_teardown(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ids");
    TCase *tc = test_case("ids");
    tcase_add_test(tc, test_every_open_account_is_found_and_no_closed_one_through_random_churn);
    tcase_add_test(tc, test_tracker_free_closes_every_account_of_a_crowded_table);
    tcase_add_test(tc, test_an_unknown_id_is_not_found_in_an_empty_or_full_table);
    tcase_add_test(tc, test_removing_an_account_that_is_not_in_the_table_changes_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
