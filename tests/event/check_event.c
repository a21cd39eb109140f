/*
 * check_event.c - memq_event: attaching a tracker to an event_base, the
 * wakeup wired to event_active(), reclamation before any other ready
 * event, the descriptor's event yielding below max, wakeups from other
 * threads, and teardown in either order.
 */
#include "event_helpers.h"

#include <event2/thread.h>

#include <pthread.h>

#include "failalloc.h" /* our allocations, made to fail */
#include "levalloc.h" /* libevent's, counted */

/* ----------------------------------------------------------------------
 * Fixtures
 * ---------------------------------------------------------------------- */

static atomic_int user_wakeups;
static void *user_wakeup_ctx;

static void user_wakeup(void *ctx)
{
    user_wakeup_ctx = ctx;
    atomic_fetch_add(&user_wakeups, 1);
}

static struct event_base *base_make(void)
{
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    return base;
}

static memq_event *attach(memq_tracker *t, struct event_base *base, unsigned flags)
{
    memq_event *e = NULL;
    ck_assert_int_eq(memq_event_attach(t, base, flags, &e), 0);
    ck_assert_ptr_nonnull(e);
    return e;
}

static memq_event_stats event_stats(const memq_event *e)
{
    memq_event_stats st;
    memq_event_get_stats(e, &st);
    return st;
}

/* ----------------------------------------------------------------------
 * Attach and detach
 * ---------------------------------------------------------------------- */

START_TEST(test_attach_rejects_null_arguments_and_unknown_flags)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    memq_event *e = (memq_event *)&e;
    ck_assert_int_eq(memq_event_attach(NULL, base, 0, &e), MEMQ_EINVAL);
    ck_assert_int_eq(memq_event_attach(t, NULL, 0, &e), MEMQ_EINVAL);
    ck_assert_int_eq(memq_event_attach(t, base, 0, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_event_attach(t, base, 2, &e), MEMQ_EINVAL);
    ck_assert_ptr_eq(e, (memq_event *)&e); /* untouched */
    ck_assert_uint_eq(stats_of(t).accounts, 0);
    memq_event_detach(NULL);
    memq_event_stats st;
    memset(&st, 0xff, sizeof st);
    memq_event_get_stats(NULL, &st);
    ck_assert_uint_eq(st.runs, 0);
    memq_event_get_stats(NULL, NULL);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_attach_refuses_a_tracker_in_thread_mode)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = MIB;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    struct event_base *base = base_make();
    memq_event *e = NULL;
    ck_assert_int_eq(memq_event_attach(t, base, 0, &e), MEMQ_EINVAL);
    ck_assert_ptr_null(e);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_attach_chains_the_wakeup_and_detach_restores_it)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_config cfg;
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    int marker;
    cfg.wakeup = user_wakeup;
    cfg.wakeup_ctx = &marker;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);

    memq_config now;
    ck_assert_int_eq(memq_tracker_config(t, &now), 0);
    ck_assert_ptr_ne((void *)now.wakeup, (void *)user_wakeup);
    ck_assert_uint_eq(now.max, MIB); /* the rest of the configuration kept */

    /* A crossing calls ours, which calls the user's with its ctx. */
    atomic_store(&user_wakeups, 0);
    holder h;
    holder_init(&h, t, NULL, 'h');
    holder_claim(&h, 2 * MIB, memq_now());
    ck_assert_int_eq(atomic_load(&user_wakeups), 1);
    ck_assert_ptr_eq(user_wakeup_ctx, &marker);
    ck_assert_uint_eq(event_stats(e).wakeups, 1);

    memq_event_detach(e);
    ck_assert_int_eq(memq_tracker_config(t, &now), 0);
    ck_assert_ptr_eq((void *)now.wakeup, (void *)user_wakeup);
    ck_assert_ptr_eq(now.wakeup_ctx, &marker);
    holder_fini(&h);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_attach_gives_a_one_priority_base_two_priorities)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    ck_assert_int_eq(event_base_get_npriorities(base), 1);
    memq_event *e = attach(t, base, 0);
    ck_assert_int_eq(event_base_get_npriorities(base), 2);
    /* Events created afterwards get the default priority, 1. */
    struct event *ev = event_new(base, -1, 0, (event_callback_fn)NULL, NULL);
    ck_assert_int_eq(event_get_priority(ev), 1);
    event_free(ev);
    /* The account that keeps the tracker is the only one. */
    ck_assert_uint_eq(stats_of(t).accounts, 1);
    memq_event_detach(e);
    ck_assert_uint_eq(stats_of(t).accounts, 0);
    ck_assert_int_eq(event_base_get_npriorities(base), 2);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_attach_keeps_a_base_with_more_priorities)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    ck_assert_int_eq(event_base_priority_init(base, 5), 0);
    memq_event *e = attach(t, base, 0);
    ck_assert_int_eq(event_base_get_npriorities(base), 5);
    memq_event_detach(e);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_the_tracker_may_be_freed_before_detach)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    loop_turns(base, 2);
    memq_tracker_free(t); /* the attachment's account keeps its memory */
    loop_turns(base, 2);  /* the descriptor is quiet, nothing runs */
    memq_event_stats st = event_stats(e);
    ck_assert_uint_eq(st.errors, 0);
    memq_event_detach(e); /* frees the tracker's memory (ASan checks) */
    event_base_free(base);
}
END_TEST

/* A wakeup installed over attach's own (chaining to it) stays when the
 * attachment is detached; attach's wakeup, still called through it, then
 * only calls the one it chained from, and touches no event. */
static void (*wrapped_wakeup)(void *);
static void *wrapped_ctx;
static atomic_int wrapper_calls;

static void wrapping_wakeup(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&wrapper_calls, 1);
    wrapped_wakeup(wrapped_ctx);
}

START_TEST(test_detach_leaves_a_wakeup_installed_over_its_own)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_config cfg;
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    int marker;
    cfg.wakeup = user_wakeup;
    cfg.wakeup_ctx = &marker;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    loop_turns(base, 1);
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    wrapped_wakeup = cfg.wakeup;
    wrapped_ctx = cfg.wakeup_ctx;
    cfg.wakeup = wrapping_wakeup;
    cfg.wakeup_ctx = NULL;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    memq_event_detach(e);
    memq_config now;
    ck_assert_int_eq(memq_tracker_config(t, &now), 0);
    ck_assert_ptr_eq((void *)now.wakeup, (void *)wrapping_wakeup); /* left as it is */

    atomic_store(&user_wakeups, 0);
    atomic_store(&wrapper_calls, 0);
    user_wakeup_ctx = NULL;
    holder h;
    holder_init(&h, t, NULL, 'h');
    holder_claim(&h, 2 * MIB, memq_now()); /* crosses max */
    ck_assert_int_eq(atomic_load(&wrapper_calls), 1);
    ck_assert_int_eq(atomic_load(&user_wakeups), 1);
    ck_assert_ptr_eq(user_wakeup_ctx, &marker);
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE), 0);
    holder_fini(&h);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* Two attachments of one tracker, the second chaining to the first's
 * wakeup: detaching the first leaves the second's in force, which still
 * wakes its own loop; the first's, chained, only calls the user's. */
START_TEST(test_detaching_one_of_two_attachments_leaves_the_other_in_force)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_config cfg;
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    int marker;
    cfg.wakeup = user_wakeup;
    cfg.wakeup_ctx = &marker;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    struct event_base *base1 = base_make(), *base2 = base_make();
    memq_event *e1 = attach(t, base1, 0), *e2 = attach(t, base2, 0);
    loop_turns(base1, 1);
    loop_turns(base2, 1);
    memq_config with_both;
    ck_assert_int_eq(memq_tracker_config(t, &with_both), 0);
    ck_assert_uint_eq(stats_of(t).accounts, 2);
    memq_event_detach(e1);
    ck_assert_uint_eq(stats_of(t).accounts, 1); /* e2's */
    memq_config now;
    ck_assert_int_eq(memq_tracker_config(t, &now), 0);
    ck_assert_ptr_eq((void *)now.wakeup, (void *)with_both.wakeup); /* e2's, kept */
    ck_assert_ptr_eq(now.wakeup_ctx, with_both.wakeup_ctx);

    atomic_store(&user_wakeups, 0);
    holder h;
    holder_init(&h, t, NULL, 'h');
    holder_claim(&h, 2 * MIB, memq_now());
    ck_assert_uint_eq(event_stats(e2).wakeups, 1);
    ck_assert_int_eq(atomic_load(&user_wakeups), 1);
    ck_assert_ptr_eq(user_wakeup_ctx, &marker);
    loop_turns(base2, 2);
    ck_assert_int_eq(atomic_load(&h.reclaims), 1);
    ck_assert_int_eq(event_base_get_num_events(base1, EVENT_BASE_COUNT_ADDED), 0);
    memq_event_detach(e2);
    ck_assert_uint_eq(stats_of(t).accounts, 0); /* the holder's collapsed */
    holder_fini(&h);
    event_base_free(base1);
    event_base_free(base2);
    memq_tracker_free(t);
}
END_TEST

/* The tracker freed after attach, before the loop's first turn: the run
 * attach scheduled finds it shut down, and counts the error. */
START_TEST(test_a_run_after_the_tracker_was_freed_counts_the_error)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    memq_tracker_free(t);
    loop_turns(base, 2);
    memq_event_stats st = event_stats(e);
    ck_assert_uint_eq(st.runs, 1);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_int_eq(st.last_error, MEMQ_ESHUTDOWN);
    ck_assert_uint_eq(st.unfinished, 0);
    memq_event_detach(e);
    event_base_free(base);
}
END_TEST

/* A base with one priority and an event already active cannot be given a
 * second one (event_base_priority_init() refuses): attach fails with
 * MEMQ_EINVAL and leaves nothing behind. */
START_TEST(test_attach_refuses_a_one_priority_base_with_an_active_event)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_config cfg;
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    int marker;
    cfg.wakeup = user_wakeup;
    cfg.wakeup_ctx = &marker;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    struct event_base *base = base_make();
    struct event *busy = event_new(base, -1, 0, (event_callback_fn)NULL, NULL);
    ck_assert_ptr_nonnull(busy);
    event_active(busy, EV_TIMEOUT, 0);
    size_t live = atomic_load(&lev_live);
    int added = event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);

    memq_event *e = (memq_event *)&e;
    ck_assert_int_eq(memq_event_attach(t, base, 0, &e), MEMQ_EINVAL);
    ck_assert_ptr_eq(e, (memq_event *)&e);
    ck_assert_int_eq(event_base_get_npriorities(base), 1);
    ck_assert_uint_eq(stats_of(t).accounts, 0);
    ck_assert_uint_eq(atomic_load(&lev_live), live); /* both events freed */
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), added);
    memq_config now;
    ck_assert_int_eq(memq_tracker_config(t, &now), 0);
    ck_assert_ptr_eq((void *)now.wakeup, (void *)user_wakeup);
    ck_assert_ptr_eq(now.wakeup_ctx, &marker);

    event_free(busy); /* no longer active: attach works */
    e = attach(t, base, 0);
    ck_assert_int_eq(event_base_get_npriorities(base), 2);
    memq_event_detach(e);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* Every allocation attach makes (its own, the account's, libevent's for
 * the two events and the descriptor's entry), made to fail in turn on a
 * fresh base with two priorities already: MEMQ_ENOMEM, and nothing
 * attached or left behind (freeing the base gives libevent's memory back
 * to the byte), until one succeeds. */
START_TEST(test_attach_fails_cleanly_whichever_allocation_fails)
{
    if (!failures_work()) {
        fprintf(stderr, "check_event: test_attach_fails_cleanly_whichever_allocation_fails "
                        "skipped: malloc is not this program's (valgrind)\n");
        return;
    }
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_config cfg;
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    int marker;
    cfg.wakeup = user_wakeup;
    cfg.wakeup_ctx = &marker;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    event_base_free(base_make()); /* libevent's globals, made once */
    size_t live = atomic_load(&lev_live);
    unsigned failures = 0;
    bool attached = false;
    for (unsigned k = 1; k < 100 && !attached; k++) {
        struct event_base *base = base_make();
        ck_assert_int_eq(event_base_priority_init(base, 2), 0);
        memq_event *e = (memq_event *)&e;
        fail_arm(k);
        int rc = memq_event_attach(t, base, 0, &e);
        bool failed = fail_disarm();
        if (failed) {
            failures++;
            ck_assert_msg(rc == MEMQ_ENOMEM, "allocation %u: %d", k, rc);
            ck_assert_ptr_eq(e, (memq_event *)&e);
            ck_assert_uint_eq(stats_of(t).accounts, 0);
            ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
            memq_config now;
            ck_assert_int_eq(memq_tracker_config(t, &now), 0);
            ck_assert_ptr_eq((void *)now.wakeup, (void *)user_wakeup);
            ck_assert_ptr_eq(now.wakeup_ctx, &marker);
        } else {
            ck_assert_int_eq(rc, 0);
            attached = true;
            loop_turns(base, 1);
            ck_assert_uint_eq(event_stats(e).runs, 1);
            memq_event_detach(e);
        }
        event_base_free(base);
        ck_assert_uint_eq(atomic_load(&lev_live), live);
    }
    ck_assert(attached);
    /* calloc twice, the account, its name, two events, the descriptor. */
    ck_assert_uint_ge(failures, 6);
    memq_tracker_free(t);
}
END_TEST

/* The same on a base with one priority: event_base_priority_init() also
 * allocates, and its failure is a memory shortage, which attach reports
 * as MEMQ_ENOMEM (memquota/event.h keeps MEMQ_EINVAL for a base whose
 * events are active).  libevent frees the base's queues before the
 * allocation that fails; the base keeps working after the failed attach.
 * (Before 2026-12-03 attach returned MEMQ_EINVAL and left the base with
 * no queue.) */
static void count_call(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ++*(int *)arg;
}
START_TEST(test_attach_reports_enomem_when_the_bases_priorities_cannot_be_allocated)
{
    if (!failures_work()) {
        fprintf(stderr, "check_event: "
                        "test_attach_reports_enomem_when_the_bases_priorities_cannot_be_allocated "
                        "skipped: malloc is not this program's (valgrind)\n");
        return;
    }
    memq_tracker *t = tracker_make(MIB, 0, false);
    bool attached = false;
    for (unsigned k = 1; k < 100 && !attached; k++) {
        struct event_base *base = base_make(); /* one priority */
        memq_event *e = (memq_event *)&e;
        fail_arm(k);
        int rc = memq_event_attach(t, base, 0, &e);
        bool failed = fail_disarm();
        if (failed) {
            ck_assert_msg(rc == MEMQ_ENOMEM, "allocation %u: %d", k, rc);
            ck_assert_ptr_eq(e, (memq_event *)&e);
            /* The base still has its priority and runs an event. */
            ck_assert_int_ge(event_base_get_npriorities(base), 1);
            int calls = 0;
            struct event *ev = event_new(base, -1, 0, count_call, &calls);
            ck_assert_ptr_nonnull(ev);
            event_active(ev, 0, 0);
            ck_assert_int_eq(event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), 0);
            ck_assert_int_eq(calls, 1);
            event_free(ev);
        } else {
            ck_assert_int_eq(rc, 0);
            attached = true;
            memq_event_detach(e);
        }
        event_base_free(base);
    }
    ck_assert(attached);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Wakeups and order
 * ---------------------------------------------------------------------- */

START_TEST(test_a_claim_crossing_max_activates_the_reclaim_event)
{
    memq_tracker *t = tracker_make(MIB, 0, true);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    loop_turns(base, 1); /* the first turn: the loop's thread is known */
    ck_assert_uint_eq(event_stats(e).runs, 1);

    holder old;
    holder_init(&old, t, NULL, 'o');
    holder_claim(&old, 3 * MIB / 4, SECOND);
    ck_assert_uint_eq(event_stats(e).wakeups, 0);
    fake_set(2 * SECOND);
    holder young;
    holder_init(&young, t, NULL, 'y');
    holder_claim(&young, MIB / 2, 2 * SECOND); /* crosses max */
    memq_event_stats st = event_stats(e);
    ck_assert_uint_eq(st.wakeups, 1);
    ck_assert_uint_eq(st.wakeups_to_descriptor, 0);
    ck_assert_int_eq(atomic_load(&old.reclaims), 0); /* only scheduled */

    loop_turns(base, 1);
    ck_assert_int_eq(atomic_load(&old.reclaims), 1);
    ck_assert_int_eq(atomic_load(&young.reclaims), 0);
    ck_assert_uint_le(memq_tracker_used(t), 3 * MIB / 4);
    ck_assert_uint_ge(event_stats(e).runs, 2);
    memq_event_detach(e);
    holder_fini(&old);
    holder_fini(&young);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* Three events of the default priority made ready together; the first
 * claims across max.  Reclamation must run right after it, before the
 * other two. */
static holder *crossing_holder;

static void ready_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    char tag = (char)(intptr_t)arg;
    log_event(tag);
    if (tag == '1')
        holder_claim(crossing_holder, MIB / 2, fake_clock(NULL));
}

START_TEST(test_reclamation_runs_before_other_ready_events)
{
    memq_tracker *t = tracker_make(MIB, 0, true);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    holder old, young;
    holder_init(&old, t, NULL, 'R');
    holder_claim(&old, 3 * MIB / 4, SECOND);
    fake_set(2 * SECOND);
    holder_init(&young, t, NULL, 'Y');
    crossing_holder = &young;

    struct event *ev[3];
    for (int i = 0; i < 3; i++) {
        ev[i] = event_new(base, -1, 0, ready_cb, (void *)(intptr_t)('1' + i));
        ck_assert_int_eq(event_get_priority(ev[i]), 1);
    }
    log_reset();
    for (int i = 0; i < 3; i++)
        event_active(ev[i], EV_TIMEOUT, 0);
    loop_turns(base, 6);
    ck_assert_str_eq(order_log, "1R23");
    ck_assert_uint_eq(event_stats(e).wakeups, 1);

    for (int i = 0; i < 3; i++)
        event_free(ev[i]);
    memq_event_detach(e);
    holder_fini(&old);
    holder_fini(&young);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* An episode of many small steps: above max each turn of the loop is
 * reclamation's; between max and low water a ready event of the default
 * priority gets its turn. */
static memq_tracker *probe_tracker;
static atomic_size_t probe_used;

static void probe_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    log_event('P');
    atomic_store(&probe_used, memq_tracker_used(probe_tracker));
}

START_TEST(test_the_descriptor_event_yields_between_max_and_low_water)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 100 * KIB;
    cfg.low_water = 50 * KIB;
    cfg.cache_max = 0;
    cfg.clock = fake_clock;
    cfg.reclaim_budget_us = 1; /* one step per call */
    fake_set(SECOND);
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    probe_tracker = t;
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    loop_turns(base, 1);

    holder h[8];
    for (int i = 0; i < 8; i++)
        holder_init(&h[i], t, NULL, (char)('a' + i));
    for (int i = 0; i < 7; i++)
        holder_claim(&h[i], 16 * KIB, (memq_time)(i + 1) * SECOND); /* 112 KiB */
    ck_assert_uint_gt(memq_tracker_used(t), cfg.max);
    struct event *probe = event_new(base, -1, 0, probe_cb, NULL);
    log_reset();
    event_active(probe, EV_TIMEOUT, 0);
    holder_claim(&h[7], 16 * KIB, 9 * SECOND); /* a wakeup: 128 KiB */
    ck_assert_uint_eq(event_stats(e).wakeups, 1);
    loop_turns(base, 40);

    /* Victims oldest first; the probe ran once used was at or below max,
     * before the episode reached low water. */
    char *p = strchr(order_log, 'P');
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_le(atomic_load(&probe_used), cfg.max);
    ck_assert_uint_gt(atomic_load(&probe_used), cfg.low_water);
    ck_assert_uint_ge((size_t)(p - order_log), 2); /* 'a' and 'b' first */
    ck_assert_int_eq(strncmp(order_log, "ab", 2), 0);
    ck_assert_uint_le(memq_tracker_used(t), cfg.low_water);
    memq_event_stats st = event_stats(e);
    ck_assert_uint_ge(st.yields, 1);
    ck_assert_uint_ge(st.unfinished, 2);

    event_free(probe);
    memq_event_detach(e);
    for (int i = 0; i < 8; i++)
        holder_fini(&h[i]);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Other threads
 * ---------------------------------------------------------------------- */

typedef struct thread_claim {
    holder *h;
    size_t n;
    unsigned delay_ms;
} thread_claim;

static void *claim_thread(void *arg)
{
    thread_claim *tc = arg;
    sleep_ms(tc->delay_ms);
    tc->h->since = memq_now();
    if (memq_claim(tc->h->p, tc->n) == 0)
        tc->h->bytes += tc->n;
    return NULL;
}

static bool holder_was_reclaimed(void *arg)
{
    holder *h = arg;
    return atomic_load(&h->reclaims) > 0;
}

START_TEST(test_a_wakeup_on_another_thread_is_left_to_the_descriptor)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, 0);
    loop_turns(base, 1);
    holder old, young;
    holder_init(&old, t, NULL, 'o');
    holder_claim(&old, 3 * MIB / 4, memq_now() - SECOND);
    holder_init(&young, t, NULL, 'y');
    thread_claim tc = {&young, MIB / 2, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, claim_thread, &tc), 0);
    pthread_join(th, NULL);
    memq_event_stats st = event_stats(e);
    ck_assert_uint_eq(st.wakeups, 1);
    ck_assert_uint_eq(st.wakeups_to_descriptor, 1);
    /* The descriptor is readable: the loop reclaims at its next poll. */
    ck_assert(loop_until(base, holder_was_reclaimed, &old, 2000));
    ck_assert_int_eq(atomic_load(&young.reclaims), 0);
    memq_event_detach(e);
    holder_fini(&old);
    holder_fini(&young);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_wakeup_on_another_thread_activates_the_event_with_threads)
{
    /* evthread_use_pthreads() was called in main(), before any base. */
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    memq_event *e = attach(t, base, MEMQ_EVENT_THREADS);
    loop_turns(base, 1);
    holder old, young;
    holder_init(&old, t, NULL, 'o');
    holder_claim(&old, 3 * MIB / 4, memq_now() - SECOND);
    holder_init(&young, t, NULL, 'y');
    thread_claim tc = {&young, MIB / 2, 20};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, claim_thread, &tc), 0);
    bool reclaimed = loop_until(base, holder_was_reclaimed, &old, 3000);
    pthread_join(th, NULL);
    ck_assert(reclaimed);
    memq_event_stats st = event_stats(e);
    ck_assert_uint_eq(st.wakeups, 1);
    ck_assert_uint_eq(st.wakeups_to_descriptor, 0);
    memq_event_detach(e);
    holder_fini(&old);
    holder_fini(&young);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* Threads claim and cross max again and again while the loop reclaims and
 * the main thread detaches and attaches: no wakeup may touch a freed
 * event (ASan, TSan). */
typedef struct churn {
    memq_tracker *t;
    atomic_bool stop;
    atomic_int crossings;
} churn;

static bool churn_holder_oldest(void *self, memq_time *when)
{
    (void)self;
    *when = 0;
    return true;
}

static memq_reclaim_status churn_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops churn_ops = {churn_holder_oldest, churn_reclaim};

static void *churn_thread(void *arg)
{
    churn *c = arg;
    memq_account *a;
    memq_participation *p;
    if (memq_account_new(c->t, NULL, &a) != 0)
        return NULL;
    if (memq_participant_register(a, &churn_ops, NULL, &p) != 0) {
        memq_account_unref(a);
        return NULL;
    }
    while (!atomic_load(&c->stop)) {
        if (memq_claim(p, 2 * MIB) == 0) {
            atomic_fetch_add(&c->crossings, 1);
            memq_release(p, 2 * MIB);
        }
        sleep_ms(1);
    }
    memq_participation_free(p);
    memq_account_unref(a);
    return NULL;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

START_TEST(test_detach_races_safely_with_wakeups_on_other_threads)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    churn c = {.t = t};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, churn_thread, &c), 0);
    for (int round = 0; round < 20; round++) {
        memq_event *e = attach(t, base, MEMQ_EVENT_THREADS);
        loop_until(base, never, NULL, 5);
        memq_event_detach(e);
    }
    atomic_store(&c.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_gt(atomic_load(&c.crossings), 0);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Detaching from inside
 * ---------------------------------------------------------------------- */

static memq_event *detach_me;

static memq_reclaim_status detaching_reclaim(void *self, const memq_reclaim_request *req)
{
    holder *h = self;
    (void)req;
    memq_release(h->p, h->bytes);
    h->bytes = 0;
    memq_event_detach(detach_me);
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops detaching_ops = {holder_oldest, detaching_reclaim};

START_TEST(test_detach_from_a_callback_of_its_own_run_is_safe)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = base_make();
    detach_me = attach(t, base, 0);
    loop_turns(base, 1);
    holder h;
    memset(&h, 0, sizeof h);
    ck_assert_int_eq(memq_account_new(t, NULL, &h.account), 0);
    ck_assert_int_eq(memq_participant_register(h.account, &detaching_ops, &h, &h.p), 0);
    h.since = memq_now();
    ck_assert_int_eq(memq_claim(h.p, 2 * MIB), 0);
    h.bytes = 2 * MIB;
    loop_turns(base, 3); /* runs, detaches inside, frees on the way out */
    ck_assert_uint_eq(h.bytes, 0);
    memq_config cfg;
    ck_assert_int_eq(memq_tracker_config(t, &cfg), 0);
    ck_assert_ptr_null((void *)cfg.wakeup);
    holder_fini(&h);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

static Suite *event_suite(void)
{
    Suite *s = suite_create("event");
    TCase *attach_tc = tcase_create("attach");
    TCase *order = tcase_create("order");
    TCase *threads = tcase_create("threads");

    tcase_add_test(attach_tc, test_attach_rejects_null_arguments_and_unknown_flags);
    tcase_add_test(attach_tc, test_attach_refuses_a_tracker_in_thread_mode);
    tcase_add_test(attach_tc, test_attach_chains_the_wakeup_and_detach_restores_it);
    tcase_add_test(attach_tc, test_attach_gives_a_one_priority_base_two_priorities);
    tcase_add_test(attach_tc, test_attach_keeps_a_base_with_more_priorities);
    tcase_add_test(attach_tc, test_the_tracker_may_be_freed_before_detach);
    tcase_add_test(attach_tc, test_detach_from_a_callback_of_its_own_run_is_safe);
    tcase_add_test(attach_tc, test_detach_leaves_a_wakeup_installed_over_its_own);
    tcase_add_test(attach_tc, test_detaching_one_of_two_attachments_leaves_the_other_in_force);
    tcase_add_test(attach_tc, test_a_run_after_the_tracker_was_freed_counts_the_error);
    tcase_add_test(attach_tc, test_attach_refuses_a_one_priority_base_with_an_active_event);
    tcase_add_test(attach_tc, test_attach_fails_cleanly_whichever_allocation_fails);
    tcase_add_test(attach_tc, test_attach_reports_enomem_when_the_bases_priorities_cannot_be_allocated);
    suite_add_tcase(s, attach_tc);

    tcase_add_test(order, test_a_claim_crossing_max_activates_the_reclaim_event);
    tcase_add_test(order, test_reclamation_runs_before_other_ready_events);
    tcase_add_test(order, test_the_descriptor_event_yields_between_max_and_low_water);
    suite_add_tcase(s, order);

    tcase_set_timeout(threads, 60);
    tcase_add_test(threads, test_a_wakeup_on_another_thread_is_left_to_the_descriptor);
    tcase_add_test(threads, test_a_wakeup_on_another_thread_activates_the_event_with_threads);
    tcase_add_test(threads, test_detach_races_safely_with_wakeups_on_other_threads);
    suite_add_tcase(s, threads);
    return s;
}

int main(void)
{
    event_set_mem_functions(lev_malloc, lev_realloc, lev_free); /* before any */
    /* Every base of this program is thread-safe, so that event_active()
     * from another thread is allowed where MEMQ_EVENT_THREADS says so. */
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "evthread_use_pthreads failed\n");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(event_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    libevent_global_shutdown();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
