/*
 * check_total.c - the counted total (lib/total.c): slack, the bytes that
 * the rooms beside the core (a chunk pool's free space) count without an
 * account, through the narrow interface of lib/core.h.
 *
 * The total's other parts (the shared sum, the threads' slices, the peak)
 * are tested through claims and releases in check_participation.c and
 * check_threads.c.
 */
#include "testutil.h"

#include "core.h"

START_TEST(test_slack_counts_in_used_and_shows_as_slack)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    fake_part fp;
    world_holder(&w, &fp, 1, NULL, WORLD_START_TIME, 1000);
    memq__slack_add(w.t, 300);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.used, 1300);
    ck_assert_uint_eq(st.slack, 300);
    ck_assert_uint_eq(st.claimed, 1000);
    ck_assert_uint_eq(st.peak, 1300);
    memq__slack_sub(w.t, 300);
    st = world_stats(&w);
    ck_assert_uint_eq(st.used, 1000);
    ck_assert_uint_eq(st.slack, 0);
    ck_assert_uint_eq(st.misuse_events, 0);
    world_teardown(&w);
}
END_TEST

/* Slack counts against max: crossing it starts reclamation like a claim
 * would, wakeup included (no account holds slack, so the episode takes
 * participants' data). */
START_TEST(test_slack_crossing_max_calls_the_wakeup_and_starts_reclamation)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    fake_part fp;
    world_holder(&w, &fp, 1, NULL, WORLD_START_TIME, 6000);
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    memq__slack_add(w.t, 3000); /* 9000: below max */
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    memq__slack_add(w.t, 2000); /* 11000: above */
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(fp.calls, 1);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.slack, 5000);
    ck_assert_uint_eq(st.used, 5000); /* the participant gave all it had */
    memq__slack_sub(w.t, 5000);
    world_teardown(&w);
}
END_TEST

START_TEST(test_more_slack_given_back_than_counted_is_clamped_and_counted_as_misuse)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    fake_part fp;
    world_holder(&w, &fp, 1, NULL, WORLD_START_TIME, 1000);
    memq__slack_add(w.t, 100);
    memq__slack_sub(w.t, 250);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.slack, 0);
    ck_assert_uint_eq(st.used, 1000); /* only the 100 counted went */
    ck_assert_uint_eq(st.misuse_events, 1);
    ck_assert_int_eq(atomic_load(&w.logs), 1);
    ck_assert_ptr_nonnull(strstr(w.last_log, "slack"));
    world_teardown(&w);
}
END_TEST

START_TEST(test_slack_of_zero_bytes_changes_nothing)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq__slack_add(w.t, 0);
    memq__slack_sub(w.t, 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.used, 0);
    ck_assert_uint_eq(st.slack, 0);
    ck_assert_uint_eq(st.misuse_events, 0);
    world_teardown(&w);
}
END_TEST

/* An unlimited tracker keeps no shared total: slack is ignored both ways,
 * and giving back what was never counted is no misuse. */
START_TEST(test_slack_is_ignored_by_an_unlimited_tracker)
{
    fake_world w;
    world_init(&w, MEMQ_UNLIMITED, 0);
    world_start(&w);
    memq__slack_add(w.t, 5000);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.used, 0);
    ck_assert_uint_eq(st.slack, 0);
    memq__slack_sub(w.t, 9000);
    st = world_stats(&w);
    ck_assert_uint_eq(st.slack, 0);
    ck_assert_uint_eq(st.misuse_events, 0);
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    world_teardown(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("total");
    TCase *tc = test_case("slack");
    tcase_add_test(tc, test_slack_counts_in_used_and_shows_as_slack);
    tcase_add_test(tc, test_slack_crossing_max_calls_the_wakeup_and_starts_reclamation);
    tcase_add_test(tc, test_more_slack_given_back_than_counted_is_clamped_and_counted_as_misuse);
    tcase_add_test(tc, test_slack_of_zero_bytes_changes_nothing);
    tcase_add_test(tc, test_slack_is_ignored_by_an_unlimited_tracker);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
