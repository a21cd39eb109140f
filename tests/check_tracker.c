/*
 * check_tracker.c - trackers (lib/tracker.c): what creation does when the
 * system refuses what a tracker needs, a descriptor for its notifications
 * or a thread for thread mode.
 *
 * The rest of tracker.c is tested where its behaviour shows: the marks,
 * reconfiguration and the clock in check_config.c, the wakeup and the
 * descriptor in check_reclaim.c, shutdown in check_threads.c, and every
 * bad input in check_errors.c.  The resources are made to run out with
 * the process's own limits (testutil.h): no privileges, no interposition.
 */
#include "testutil.h"

#include <dirent.h>

/* Open descriptors of this process. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* opendir's own */
}

static memq_config small_config(memq_reclaim_mode mode)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    cfg.reclaim_mode = mode;
    return cfg;
}

START_TEST(test_tracker_new_fails_with_esystem_when_no_descriptor_is_left)
{
    memq_config cfg = small_config(MEMQ_RECLAIM_MANUAL);
    memq_tracker *t = (memq_tracker *)0x1;
    fd_squeeze fs;
    fds_squeeze(&fs, 0);
    int rc = memq_tracker_new(&t, &cfg);
    int err = errno;
    fds_unsqueeze(&fs);
    ck_assert_int_eq(rc, MEMQ_ESYSTEM);
    ck_assert_int_eq(err, EMFILE); /* errno says which */
    ck_assert_ptr_eq(t, (memq_tracker *)0x1); /* untouched */
    /* Nothing was half made: with a descriptor, the same call works. */
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_int_ge(memq_tracker_fd(t), 0);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_thread_mode_tracker_new_fails_with_esystem_when_its_thread_cannot_start)
{
    memq_config cfg = small_config(MEMQ_RECLAIM_THREAD);
    memq_tracker *t = (memq_tracker *)0x1;
    int fds = open_fds();
    thread_squeeze ts;
    threads_forbidden(&ts);
    int rc = memq_tracker_new(&t, &cfg);
    int err = errno;
    /* A manual tracker needs no thread. */
    memq_config manual = small_config(MEMQ_RECLAIM_MANUAL);
    memq_tracker *m = NULL;
    int manual_rc = memq_tracker_new(&m, &manual);
    threads_allowed(&ts);
    ck_assert_int_eq(rc, MEMQ_ESYSTEM);
    ck_assert_int_ne(err, 0);
    ck_assert_ptr_eq(t, (memq_tracker *)0x1);
    ck_assert_int_eq(manual_rc, 0);
    memq_tracker_free(m);
    ck_assert_int_eq(open_fds(), fds); /* its descriptor went with it */
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_tracker_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tracker");
    TCase *tc = test_case("creation");
    tcase_add_test(tc, test_tracker_new_fails_with_esystem_when_no_descriptor_is_left);
    tcase_add_test(tc, test_thread_mode_tracker_new_fails_with_esystem_when_its_thread_cannot_start);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
