/*
 * check_machine.c - the tracker's view of the machine (lib/machine.c):
 * pressure reports and their episodes, the rate limit, rss_max with an
 * injected RSS source and its guards, the machine's figures in the
 * statistics, and the built-in watcher end to end through systemd's
 * variable and a FIFO.
 *
 * Worlds here use the fake clock for data ages; the rate limit and the RSS
 * checks run on the real clock, so the tests that need time to pass sleep
 * a little (bounded, a few hundred ms in all).
 */
#include "testutil.h"

#include "internal.h" /* the injected RSS source */

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#define T0 WORLD_START_TIME
#define AT(ms) (T0 + (memq_time)(ms) * MS)

/* Ten single-participant accounts of 100 bytes, stamped 10, 20 ... 100 ms:
 * 1000 bytes, below max (2000); low water 800, pressure low water 500. */
static void setup_ten(fake_world *w, fake_part parts[10])
{
    world_init(w, 2000, 800);
    w->cfg.pressure_low_water = 500;
    w->cfg.pressure_interval_ms = 60000;
    world_start(w);
    for (int i = 0; i < 10; i++)
        world_holder(w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
}

/* ----------------------------------------------------------------------
 * Pressure reports
 * ---------------------------------------------------------------------- */

START_TEST(test_pressure_starts_an_episode_below_max_down_to_pressure_low_water)
{
    fake_world w;
    fake_part parts[10];
    setup_ten(&w, parts);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(memq_tracker_pressure(w.t), 1);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(atomic_load(&w.wakeups), 1);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 500);
    /* Oldest first: the five oldest went, the five newest stayed. */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(parts[i].calls, i < 5 ? 1 : 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.pressure_events, 1);
    ck_assert_uint_eq(st.pressure_episodes, 1);
    ck_assert_uint_eq(st.episodes, 1);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_pressure_within_its_interval_is_counted_and_absorbed)
{
    fake_world w;
    fake_part parts[10];
    setup_ten(&w, parts);
    ck_assert_int_eq(memq_tracker_pressure(w.t), 1);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(memq_tracker_pressure(w.t), 0);
    ck_assert_int_eq(memq_tracker_pressure(w.t), 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.pressure_events, 3);
    ck_assert_uint_eq(st.pressure_episodes, 1);
    ck_assert_uint_eq(memq_tracker_used(w.t), 500);
    world_teardown(&w);
}
END_TEST

START_TEST(test_lasting_pressure_stops_at_its_target_every_time)
{
    fake_world w;
    fake_part parts[10];
    world_init(&w, 2000, 800);
    w.cfg.pressure_low_water = 500;
    w.cfg.pressure_interval_ms = 1;
    world_start(&w);
    for (int i = 0; i < 10; i++)
        world_holder(&w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
    for (int k = 0; k < 5; k++) {
        sleep_ms(2);
        ck_assert_int_eq(memq_tracker_pressure(w.t), 1);
        ck_assert_int_eq(world_reclaim(&w), 0);
        /* Never below the target: C Tor's "kill everything" cannot happen. */
        ck_assert_uint_eq(memq_tracker_used(w.t), 500);
    }
    ck_assert_uint_eq(world_stats(&w).pressure_episodes, 5);
    ck_assert_uint_eq(world_stats(&w).unreclaimable_events, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_pressure_during_an_episode_lowers_its_target)
{
    fake_world w;
    fake_part parts[10];
    setup_ten(&w, parts);
    fake_part big;
    world_holder(&w, &big, 10, NULL, AT(200), 1001); /* 2001 > max */
    w.cfg.reclaim_budget_us = 1;
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &w.cfg), 0);
    ck_assert_int_eq(memq_tracker_reclaim(w.t), MEMQ_EAGAIN); /* the episode runs */
    ck_assert_int_eq(memq_tracker_pressure(w.t), 1);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_le(memq_tracker_used(w.t), 500);
    ck_assert_uint_eq(world_stats(&w).episodes, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_pressure_on_an_unlimited_tracker_is_counted_only)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = MEMQ_UNLIMITED;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_int_eq(memq_tracker_pressure(t), 0);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.pressure_events, 1);
    ck_assert_uint_eq(st.pressure_episodes, 0);
    memq_tracker_free(t);
    ck_assert_int_eq(memq_tracker_pressure(NULL), MEMQ_EINVAL);
}
END_TEST

START_TEST(test_pressure_after_shutdown_is_refused)
{
    fake_world w;
    world_new(&w, 2000, 800);
    memq_tracker *t = w.t;
    fake_part fp;
    memq_account *a = world_account(&w, NULL); /* keeps the tracker's memory */
    part_add(&w, &fp, 1, a);
    memq_tracker_free(t);
    w.t = NULL;
    ck_assert_int_eq(memq_tracker_pressure(t), MEMQ_ESHUTDOWN);
    world_teardown(&w);
}
END_TEST

typedef struct presser {
    memq_tracker *t;
    atomic_bool *stop;
    atomic_long reports;
} presser;

static void *press_main(void *arg)
{
    presser *p = arg;
    while (!atomic_load(p->stop)) {
        (void)memq_tracker_pressure(p->t);
        atomic_fetch_add(&p->reports, 1);
        spin_turn();
    }
    return NULL;
}

typedef struct claimer_ctx {
    memq_participation *p;
    atomic_bool *stop;
    atomic_long ops;
    int failures;
} claimer_ctx;

static void *claim_main(void *arg)
{
    claimer_ctx *c = arg;
    while (!atomic_load(c->stop)) {
        if (memq_claim(c->p, 3000) != MEMQ_ECLOSED)
            memq_release(c->p, 3000);
        atomic_fetch_add(&c->ops, 1);
        spin_turn();
    }
    return NULL;
}

static bool quiet_oldest(void *self, memq_time *when)
{
    (void)self;
    *when = memq_now();
    return true;
}

static memq_reclaim_status quiet_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

/* Run under `make check-tsan`: reports, claims and the reclaim thread. */
START_TEST(test_pressure_reports_racing_claims_on_several_threads)
{
    static const memq_participant_ops ops = {quiet_oldest, quiet_reclaim};
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 16 * MIB;
    cfg.cache_max = 4 * KIB;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    cfg.pressure_interval_ms = 1;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *a[2];
    memq_participation *p[2];
    atomic_bool stop = false;
    claimer_ctx c[2];
    pthread_t th[3];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(memq_account_new(t, NULL, &a[i]), 0);
        ck_assert_int_eq(memq_participant_register(a[i], &ops, NULL, &p[i]), 0);
        c[i] = (claimer_ctx){p[i], &stop, 0, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, claim_main, &c[i]), 0);
    }
    presser pr = {t, &stop, 0};
    ck_assert_int_eq(pthread_create(&th[2], NULL, press_main, &pr), 0);
    for (int i = 0; i < 2000 && (atomic_load(&c[0].ops) < 1000 || atomic_load(&c[1].ops) < 1000 ||
                                 atomic_load(&pr.reports) < 100); i++)
        sleep_ms(1);
    sleep_ms(50);
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_ge(st.pressure_events, 100);
    ck_assert_uint_ge(st.pressure_episodes, 1);
    for (int i = 0; i < 2; i++) {
        memq_participation_free(p[i]);
        memq_account_unref(a[i]);
    }
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * rss_max, with an injected RSS source
 * ---------------------------------------------------------------------- */

typedef struct fake_rss {
    _Atomic size_t rss;
    bool follows;    /* RSS falls with what is reclaimed */
    fake_world *w;
    size_t base;     /* RSS = base + used, when it follows */
} fake_rss;

static size_t fake_rss_read(void *ctx)
{
    fake_rss *r = ctx;
    if (r->follows)
        return r->base + memq_tracker_used(r->w->t);
    return atomic_load(&r->rss);
}

static void inject_rss(fake_world *w, fake_rss *r)
{
    pthread_mutex_lock(&w->t->lock);
    w->t->rss_read = fake_rss_read;
    w->t->rss_read_ctx = r;
    w->t->rss_checked_ns = 0;
    pthread_mutex_unlock(&w->t->lock);
}

/* Ten accounts of 100 bytes (max 2000, low water 800); RSS as given. */
static void setup_rss(fake_world *w, fake_part parts[10], fake_rss *r, size_t rss_max)
{
    world_init(w, 2000, 800);
    w->cfg.rss_max = rss_max;
    world_start(w);
    r->w = w;
    inject_rss(w, r);
    for (int i = 0; i < 10; i++)
        world_holder(w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
}

START_TEST(test_rss_over_rss_max_reclaims_oldest_first)
{
    fake_world w;
    fake_part parts[10];
    fake_rss r = {.follows = true, .base = 9000};
    setup_rss(&w, parts, &r, 9800); /* RSS 10000: 200 over */
    ck_assert_int_eq(world_reclaim(&w), 0);
    /* The excess (200) plus a quarter of the band (300): down to 500 would
     * be below low water (800), so it stops there. */
    ck_assert_uint_eq(memq_tracker_used(w.t), 800);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(parts[i].calls, i < 2 ? 1 : 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.rss_episodes, 1);
    ck_assert_uint_eq(st.rss_stalls, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_rss_alone_never_reclaims_below_low_water)
{
    fake_world w;
    fake_part parts[10];
    fake_rss r = {.follows = true, .base = 100000};
    setup_rss(&w, parts, &r, 1000); /* far over: would take everything */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 800);
    world_teardown(&w);
}
END_TEST

START_TEST(test_rss_that_does_not_fall_stops_logs_once_and_waits_for_growth)
{
    fake_world w;
    fake_part parts[10];
    fake_rss r = {.follows = false, .rss = 10000};
    setup_rss(&w, parts, &r, 9000);
    ck_assert_int_eq(world_reclaim(&w), 0); /* an RSS episode: 1000 -> 800 */
    ck_assert_uint_eq(memq_tracker_used(w.t), 800);
    int logs = atomic_load(&w.logs);
    /* The next check: RSS did not fall (the allocator kept it). */
    sleep_ms(260);
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.rss_episodes, 1);
    ck_assert_uint_eq(st.rss_stalls, 1);
    ck_assert_int_eq(atomic_load(&w.logs), logs + 1);
    ck_assert_ptr_nonnull(strstr(w.last_log, "did not lower RSS"));
    /* Still over, not grown by a quarter of the band (300): nothing. */
    sleep_ms(260);
    atomic_store(&r.rss, 10200);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).rss_episodes, 1);
    /* Grown past it: one more try (which finds nothing above low water). */
    sleep_ms(260);
    atomic_store(&r.rss, 10400);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).rss_episodes, 2);
    ck_assert_uint_eq(memq_tracker_used(w.t), 800);
    world_teardown(&w);
}
END_TEST

START_TEST(test_rss_under_rss_max_starts_nothing_and_the_fd_comes_back_for_the_next_check)
{
    fake_world w;
    fake_part parts[10];
    fake_rss r = {.follows = false, .rss = 5000};
    setup_rss(&w, parts, &r, 9000);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).episodes, 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    sleep_ms(300);
    ck_assert(fd_readable(memq_tracker_fd(w.t))); /* time for the next check */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).episodes, 0);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * The machine's figures
 * ---------------------------------------------------------------------- */

START_TEST(test_stats_show_this_processs_rss_and_what_is_untracked)
{
    fake_world w;
    world_new(&w, 64 * MIB, 0);
    fake_part fp;
    world_holder(&w, &fp, 1, NULL, AT(1), 1000);
    memq_stats st = world_stats(&w);
    ck_assert_uint_gt(st.rss, 1 * MIB);
    ck_assert_int_eq(st.untracked, (int64_t)st.rss - (int64_t)st.used);
    ck_assert_uint_eq(st.claimed, 1000);
    ck_assert_uint_eq(st.used, st.claimed + st.cached + st.slack);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * The built-in watcher, end to end
 * ---------------------------------------------------------------------- */

START_TEST(test_a_fifo_named_by_memory_pressure_watch_drives_pressure_episodes)
{
    char dir[] = "/tmp/memq-machine-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char fifo[64];
    snprintf(fifo, sizeof fifo, "%s/pressure", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    setenv("MEMORY_PRESSURE_WATCH", fifo, 1);
    unsetenv("MEMORY_PRESSURE_WRITE");
    fake_world w;
    fake_part parts[10];
    world_init(&w, 2000, 800);
    w.cfg.pressure_low_water = 500;
    w.cfg.pressure_interval_ms = 1;
    w.cfg.pressure_watch = true;
    world_start(&w);
    unsetenv("MEMORY_PRESSURE_WATCH");
    for (int i = 0; i < 10; i++)
        world_holder(&w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
    memq_stats st = world_stats(&w);
    ck_assert_int_eq(st.watch_source, MEMQ_WATCH_SYSTEMD);
    ck_assert_uint_eq(st.watch_refused, 0);
    int fd = open(fifo, O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "x", 1), 1);
    /* The watcher thread reports; the descriptor says there is work. */
    for (int i = 0; i < 2000 && !fd_readable(memq_tracker_fd(w.t)); i++)
        sleep_ms(1);
    ck_assert(fd_readable(memq_tracker_fd(w.t)));
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 500);
    ck_assert_uint_eq(world_stats(&w).pressure_events, 1);
    close(fd);
    world_teardown(&w);
    unlink(fifo);
    rmdir(dir);
}
END_TEST

START_TEST(test_a_watch_that_cannot_be_used_never_fails_tracker_creation)
{
    setenv("MEMORY_PRESSURE_WATCH", "/nonexistent/memory.pressure", 1);
    fake_world w;
    world_init(&w, 2000, 800);
    w.cfg.pressure_watch = true;
    world_start(&w);
    unsetenv("MEMORY_PRESSURE_WATCH");
    memq_stats st = world_stats(&w);
    ck_assert(st.watch_refused & (1u << MEMQ_WATCH_SYSTEMD));
    ck_assert_int_ge(atomic_load(&w.logs), 1);
    world_teardown(&w);
}
END_TEST

/* Fifteen accounts of 100 bytes (1500, below max 2000); RSS 100 over
 * rss_max: the episode frees the excess and a quarter of the band (300),
 * 400 bytes, and stops at 1100, well above low water (800). */
START_TEST(test_an_rss_episode_frees_the_excess_and_a_quarter_of_the_band_and_no_more)
{
    fake_world w;
    fake_part parts[15];
    fake_rss r = {.follows = true, .base = 9000};
    world_init(&w, 2000, 800);
    w.cfg.rss_max = 9000 + 1400; /* RSS 10500 with 1500 used */
    world_start(&w);
    r.w = &w;
    inject_rss(&w, &r);
    for (int i = 0; i < 15; i++)
        world_holder(&w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 1100);
    for (int i = 0; i < 15; i++)
        ck_assert_int_eq(parts[i].calls, i < 4 ? 1 : 0);
    ck_assert_uint_eq(world_stats(&w).rss_episodes, 1);
    world_teardown(&w);
}
END_TEST

/* No RSS source injected: rss_max is held against this process's own
 * resident memory, megabytes, far above an rss_max of one byte.  RSS alone
 * takes the tracked memory down to low water and no lower. */
START_TEST(test_rss_max_is_held_against_this_processs_own_rss)
{
    fake_world w;
    fake_part parts[10];
    world_init(&w, 2000, 800);
    w.cfg.rss_max = 1;
    world_start(&w);
    for (int i = 0; i < 10; i++)
        world_holder(&w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.rss_episodes, 1);
    ck_assert_uint_gt(st.rss, 1 * MIB);
    ck_assert_uint_eq(st.used, 800);
    world_teardown(&w);
}
END_TEST

/* In thread mode nobody calls memq_tracker_reclaim(): the reclaim thread
 * wakes for the RSS checks by itself. */
START_TEST(test_the_reclaim_thread_checks_rss_by_itself)
{
    fake_world w;
    fake_part parts[10];
    fake_rss r = {.follows = true, .base = 9000};
    world_init(&w, 2000, 800);
    w.cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    w.cfg.rss_max = SIZE_MAX / 2; /* nothing to do until the source is injected */
    world_start(&w);
    r.w = &w;
    inject_rss(&w, &r);
    for (int i = 0; i < 10; i++)
        world_holder(&w, &parts[i], i, NULL, AT(10 * (i + 1)), 100);
    memq_config cfg = w.cfg;
    cfg.rss_max = 9800; /* RSS 10000: 200 over */
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &cfg), 0);
    memq_stats st = world_stats(&w);
    for (int i = 0; i < 10000 && (st.rss_episodes == 0 || st.used > 800); i++) {
        sleep_ms(1);
        st = world_stats(&w);
    }
    ck_assert_uint_eq(st.rss_episodes, 1);
    ck_assert_uint_eq(st.used, 800);
    ck_assert_int_eq(parts[0].calls, 1);
    ck_assert_int_eq(parts[9].calls, 0);
    world_teardown(&w);
}
END_TEST

/* An unlimited tracker tracks nothing, so it ignores pressure: asked for
 * the watcher, it starts none, and refuses no source either. */
START_TEST(test_an_unlimited_tracker_starts_no_watcher)
{
    char dir[] = "/tmp/memq-machine-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char fifo[64];
    snprintf(fifo, sizeof fifo, "%s/pressure", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    setenv("MEMORY_PRESSURE_WATCH", fifo, 1);
    fake_world w;
    world_init(&w, MEMQ_UNLIMITED, 0);
    w.cfg.pressure_watch = true;
    world_start(&w);
    unsetenv("MEMORY_PRESSURE_WATCH");
    memq_stats st = world_stats(&w);
    ck_assert_int_eq(st.watch_source, MEMQ_WATCH_NONE);
    ck_assert_uint_eq(st.watch_refused, 0);
    ck_assert_int_eq(atomic_load(&w.logs), 0);
    /* Nobody reads the FIFO: a writer that does not wait finds no reader. */
    ck_assert_int_lt(open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC), 0);
    ck_assert_int_eq(errno, ENXIO);
    world_teardown(&w);
    unlink(fifo);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("machine");
    TCase *tc = test_case("pressure");
    tcase_add_test(tc, test_pressure_starts_an_episode_below_max_down_to_pressure_low_water);
    tcase_add_test(tc, test_pressure_within_its_interval_is_counted_and_absorbed);
    tcase_add_test(tc, test_lasting_pressure_stops_at_its_target_every_time);
    tcase_add_test(tc, test_pressure_during_an_episode_lowers_its_target);
    tcase_add_test(tc, test_pressure_on_an_unlimited_tracker_is_counted_only);
    tcase_add_test(tc, test_pressure_after_shutdown_is_refused);
    tcase_add_test(tc, test_pressure_reports_racing_claims_on_several_threads);
    suite_add_tcase(s, tc);
    tc = test_case("rss_max");
    tcase_add_test(tc, test_rss_over_rss_max_reclaims_oldest_first);
    tcase_add_test(tc, test_rss_alone_never_reclaims_below_low_water);
    tcase_add_test(tc, test_rss_that_does_not_fall_stops_logs_once_and_waits_for_growth);
    tcase_add_test(tc, test_rss_under_rss_max_starts_nothing_and_the_fd_comes_back_for_the_next_check);
    tcase_add_test(tc, test_an_rss_episode_frees_the_excess_and_a_quarter_of_the_band_and_no_more);
    tcase_add_test(tc, test_rss_max_is_held_against_this_processs_own_rss);
    tcase_add_test(tc, test_the_reclaim_thread_checks_rss_by_itself);
    suite_add_tcase(s, tc);
    tc = test_case("figures");
    tcase_add_test(tc, test_stats_show_this_processs_rss_and_what_is_untracked);
    suite_add_tcase(s, tc);
    tc = test_case("watcher");
    tcase_add_test(tc, test_a_fifo_named_by_memory_pressure_watch_drives_pressure_episodes);
    tcase_add_test(tc, test_a_watch_that_cannot_be_used_never_fails_tracker_creation);
    tcase_add_test(tc, test_an_unlimited_tracker_starts_no_watcher);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
