/*
 * check_queue.c - memq_queue: costs, ages, both reclaim policies, collapse
 * from outside, and a producer/consumer/reclaimer run.
 */
#include "container_helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ======================================================================
 * Items and a ledger of what the queue freed
 * ====================================================================== */

typedef struct item {
    int id;
} item;

#define LOG_MAX 256

typedef struct ledger {
    atomic_int freed;         /* free_item calls */
    int order[LOG_MAX];       /* ids in the order free_item saw them */
    atomic_int collapses;     /* on_collapse calls */
    memq_queue *free_on_collapse; /* on_collapse frees this queue if set */
} ledger;

static item *item_new(int id)
{
    item *it = malloc(sizeof *it);
    ck_assert_ptr_nonnull(it);
    it->id = id;
    return it;
}

static void ledger_free_item(void *p, void *ctx)
{
    ledger *l = ctx;
    item *it = p;
    int n = atomic_fetch_add(&l->freed, 1);
    if (n < LOG_MAX)
        l->order[n] = it->id;
    free(it);
}

static void ledger_collapse(void *ctx)
{
    ledger *l = ctx;
    atomic_fetch_add(&l->collapses, 1);
    if (l->free_on_collapse) {
        memq_queue *q = l->free_on_collapse;
        l->free_on_collapse = NULL;
        memq_queue_free(q);
    }
}

static void free_plain(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static memq_queue *queue_make(memq_account *a, int policy, ledger *l)
{
    memq_queue *q = NULL;
    ck_assert_int_eq(memq_queue_new(a, policy, ledger_free_item, ledger_collapse, l, &q), 0);
    ck_assert_ptr_nonnull(q);
    return q;
}

static void push_ok(memq_queue *q, int id, size_t cost)
{
    ck_assert_int_eq(memq_queue_push(q, item_new(id), cost), 0);
}

/* ======================================================================
 * Basics
 * ====================================================================== */

START_TEST(test_queue_new_rejects_null_arguments_and_unknown_policies)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_queue *q = (memq_queue *)&q; /* must stay untouched */

    ck_assert_int_eq(memq_queue_new(NULL, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q), MEMQ_EINVAL);
    ck_assert_int_eq(memq_queue_new(a, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_queue_new(a, 7, NULL, NULL, NULL, &q), MEMQ_EINVAL);
    ck_assert_ptr_eq(q, (memq_queue *)&q);
    ck_assert_int_eq(memq_queue_push(NULL, NULL, 1), MEMQ_EINVAL);
    ck_assert_ptr_null(memq_queue_pop(NULL));
    ck_assert_uint_eq(memq_queue_len(NULL), 0);
    ck_assert(memq_queue_closed(NULL));
    memq_queue_free(NULL);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_new_on_a_collapsed_account_fails_with_eclosed)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    memq_queue *other = (memq_queue *)&other;

    push_ok(q, 1, 20 * MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert(memq_account_closed(a));
    ck_assert_int_eq(memq_queue_new(a, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &other),
                     MEMQ_ECLOSED);
    ck_assert_ptr_eq(other, (memq_queue *)&other);
    memq_queue_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_new_after_tracker_shutdown_fails_with_eshutdown)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_queue *q = NULL;

    memq_tracker_free(t);
    ck_assert_int_eq(memq_queue_new(a, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q), MEMQ_ESHUTDOWN);
    ck_assert_ptr_null(q);
    memq_account_unref(a);
}
END_TEST

START_TEST(test_items_pop_in_the_order_they_were_pushed)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    for (int i = 0; i < 5; i++)
        push_ok(q, i, 10);
    ck_assert_uint_eq(memq_queue_len(q), 5);
    for (int i = 0; i < 5; i++) {
        item *it = memq_queue_pop(q);
        ck_assert_ptr_nonnull(it);
        ck_assert_int_eq(it->id, i);
        free(it);
    }
    ck_assert_ptr_null(memq_queue_pop(q));
    ck_assert_uint_eq(memq_queue_len(q), 0);
    ck_assert_int_eq(atomic_load(&l.freed), 0);
    memq_queue_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_push_claims_the_cost_plus_a_fixed_overhead_and_pop_releases_it)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    push_ok(q, 1, 100);
    size_t one = memq_account_used(a);
    ck_assert_uint_gt(one, 100);
    size_t overhead = one - 100;
    push_ok(q, 2, 1000);
    ck_assert_uint_eq(memq_account_used(a), 1100 + 2 * overhead);
    ck_assert_uint_eq(claims_of(t), 1100 + 2 * overhead); /* cache_max 0: exact */

    free(memq_queue_pop(q));
    ck_assert_uint_eq(memq_account_used(a), 1000 + overhead);
    free(memq_queue_pop(q));
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_queue_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_push_with_an_overflowing_cost_fails_and_leaves_the_item_with_the_caller)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    item *it = item_new(1);

    ck_assert_int_eq(memq_queue_push(q, it, SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_queue_len(q), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert(!memq_queue_closed(q));
    free(it); /* still ours: ASan would report a double free otherwise */
    memq_queue_free(q);
    ck_assert_int_eq(atomic_load(&l.freed), 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_push_pop_of_19_items_leaves_at_most_two_caches_tracked)
{
    const size_t cache_max = 16 * KIB;
    memq_tracker *t = tracker_make(64 * MIB, 48 * MIB, cache_max, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    for (int i = 0; i < 19; i++)
        push_ok(q, i, MIB);
    ck_assert_uint_ge(memq_tracker_used(t), 19 * MIB);
    for (int i = 0; i < 19; i++)
        free(memq_queue_pop(q));
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_uint_le(claims_of(t), 2 * cache_max);
    memq_queue_free(q);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_free_frees_the_remaining_items_with_free_item)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    for (int i = 0; i < 3; i++)
        push_ok(q, i, 10);
    memq_queue_free(q);
    ck_assert_int_eq(atomic_load(&l.freed), 3);
    ck_assert_int_eq(l.order[0], 0);
    ck_assert_int_eq(l.order[2], 2);
    ck_assert_int_eq(atomic_load(&l.collapses), 0);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * COLLAPSE policy
 * ====================================================================== */

START_TEST(test_reclaimed_collapse_queue_holds_nothing_refuses_pushes_and_calls_its_hook_once)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    for (int i = 0; i < 20; i++)
        push_ok(q, i, MIB);
    ck_assert_uint_gt(memq_tracker_used(t), 16 * MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);

    ck_assert(memq_queue_closed(q));
    ck_assert_uint_eq(memq_queue_len(q), 0);
    ck_assert_ptr_null(memq_queue_pop(q));
    ck_assert_int_eq(atomic_load(&l.freed), 20);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(l.order[i], i); /* oldest first */
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    ck_assert_uint_le(memq_tracker_used(t), 12 * MIB);
    ck_assert(memq_account_closed(a));

    item *late = item_new(99);
    ck_assert_int_eq(memq_queue_push(q, late, MIB), MEMQ_ECLOSED);
    ck_assert_int_eq(late->id, 99); /* not freed: still ours */
    free(late);
    ck_assert_int_eq(atomic_load(&l.freed), 20);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);

    memq_queue_free(q);
    ck_assert_int_eq(atomic_load(&l.freed), 20);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_on_collapse_may_free_the_queue)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    l.free_on_collapse = q;
    for (int i = 0; i < 20; i++)
        push_ok(q, i, MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    ck_assert_ptr_null(l.free_on_collapse); /* the hook did free it */
    ck_assert_int_eq(atomic_load(&l.freed), 20);
    ck_assert_uint_le(memq_tracker_used(t), 12 * MIB);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

typedef struct teardown {
    memq_queue *q;
    memq_account *a;
    atomic_int calls;
} teardown;

/* What a daemon's connection does when reclaimed: drop everything. */
static void teardown_on_collapse(void *ctx)
{
    teardown *td = ctx;
    atomic_fetch_add(&td->calls, 1);
    memq_queue_free(td->q);
    memq_account_unref(td->a);
    td->q = NULL;
    td->a = NULL;
}

START_TEST(test_on_collapse_may_free_the_queue_and_drop_the_last_account_reference)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    teardown td = {0};

    td.a = account_make(t);
    ck_assert_int_eq(memq_queue_new(td.a, MEMQ_QUEUE_COLLAPSE, free_plain, teardown_on_collapse,
                                    &td, &td.q),
                     0);
    for (int i = 0; i < 20; i++)
        push_ok(td.q, i, MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_int_eq(atomic_load(&td.calls), 1);
    ck_assert_ptr_null(td.q);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.accounts, 0);
    ck_assert_uint_eq(st.participants, 0);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_on_an_unlimited_tracker_counts_and_never_collapses)
{
    memq_config cfg;
    memq_tracker *t = NULL;
    memq_config_init(&cfg);
    cfg.max = MEMQ_UNLIMITED;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    for (int i = 0; i < 100; i++)
        push_ok(q, i, 100 * MIB);
    ck_assert_uint_ge(memq_tracker_used(t), 100 * 100 * MIB);
    ck_assert_int_eq(memq_tracker_reclaim(t), 0);
    ck_assert(!memq_queue_closed(q));
    for (int i = 0; i < 100; i++) {
        item *it = memq_queue_pop(q);
        ck_assert_int_eq(it->id, i);
        free(it);
    }
    ck_assert_uint_eq(claims_of(t), 0);
    ck_assert_int_eq(atomic_load(&l.collapses), 0);
    memq_queue_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_whose_account_was_unreffed_collapses_at_its_next_push)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_DROP_OLDEST, &l);

    push_ok(q, 1, 10);
    push_ok(q, 2, 10);
    memq_account_unref(a); /* the last reference: the account closes */
    ck_assert(!memq_queue_closed(q));

    item *late = item_new(3);
    ck_assert_int_eq(memq_queue_push(q, late, 10), MEMQ_ECLOSED);
    free(late);
    ck_assert(memq_queue_closed(q));
    ck_assert_uint_eq(memq_queue_len(q), 0);
    ck_assert_int_eq(atomic_load(&l.freed), 2);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);

    late = item_new(4);
    ck_assert_int_eq(memq_queue_push(q, late, 10), MEMQ_ECLOSED);
    free(late);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    memq_queue_free(q);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_whose_account_was_unreffed_collapses_at_its_next_pop)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    push_ok(q, 1, 10);
    memq_account_unref(a);
    ck_assert_ptr_null(memq_queue_pop(q));
    ck_assert(memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.freed), 1);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    ck_assert_ptr_null(memq_queue_pop(q));
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    memq_queue_free(q);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_queue_collapses_at_its_next_push_after_tracker_shutdown)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);

    push_ok(q, 1, 10);
    memq_tracker_free(t);
    item *late = item_new(2);
    ck_assert_int_eq(memq_queue_push(q, late, 10), MEMQ_ECLOSED);
    free(late);
    ck_assert(memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.freed), 1);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    memq_queue_free(q);
    memq_account_unref(a);
}
END_TEST

/* The account that has held memory the longest is not always the oldest:
 * what counts is the head items now.  The young account holds memory from
 * 50 on, but by the time reclamation runs its data is from 500. */
START_TEST(test_the_account_with_the_oldest_head_item_is_reclaimed_first)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *young = account_make(t), *old = account_make(t);
    ledger ly = {0}, lo = {0};
    memq_queue *control = queue_make(young, MEMQ_QUEUE_COLLAPSE, &ly);
    memq_queue *bulk = queue_make(young, MEMQ_QUEUE_COLLAPSE, &ly);
    memq_queue *stalled = queue_make(old, MEMQ_QUEUE_COLLAPSE, &lo);

    fake_clock_set(&clock, 50);
    push_ok(control, 1, 10);
    fake_clock_set(&clock, 100);
    push_ok(stalled, 2, 2 * MIB + MIB / 2);
    fake_clock_set(&clock, 500);
    push_ok(bulk, 3, 2 * MIB);
    free(memq_queue_pop(control));
    fake_clock_set(&clock, 900);
    ck_assert_int_eq(reclaim_until_done(t), 0);

    ck_assert_int_eq(atomic_load(&lo.collapses), 1);
    ck_assert_int_eq(atomic_load(&ly.collapses), 0);
    ck_assert(memq_queue_closed(stalled));
    ck_assert(!memq_queue_closed(bulk));
    ck_assert_uint_eq(memq_queue_len(bulk), 1);
    memq_queue_free(control);
    memq_queue_free(bulk);
    memq_queue_free(stalled);
    memq_account_unref(young);
    memq_account_unref(old);
    memq_tracker_free(t);
}
END_TEST

/* Two COLLAPSE queues on two accounts and a young third: the queue whose
 * head is oldest goes first, and popping a head makes the next item's stamp
 * the queue's age. */
typedef struct collapse_log {
    int order[4];
    atomic_int n;
} collapse_log;

typedef struct named_hook {
    collapse_log *log;
    int id;
} named_hook;

static void log_collapse(void *ctx)
{
    named_hook *h = ctx;
    int n = atomic_fetch_add(&h->log->n, 1);
    if (n < 4)
        h->log->order[n] = h->id;
}

START_TEST(test_popping_the_head_makes_the_next_items_stamp_the_queues_age)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t), *b = account_make(t), *c = account_make(t);
    collapse_log log = {0};
    named_hook ha = {&log, 'A'}, hb = {&log, 'B'}, hc = {&log, 'C'};
    memq_queue *qa, *qb, *qc;

    ck_assert_int_eq(memq_queue_new(a, MEMQ_QUEUE_COLLAPSE, free_plain, log_collapse, &ha, &qa), 0);
    ck_assert_int_eq(memq_queue_new(b, MEMQ_QUEUE_COLLAPSE, free_plain, log_collapse, &hb, &qb), 0);
    ck_assert_int_eq(memq_queue_new(c, MEMQ_QUEUE_COLLAPSE, free_plain, log_collapse, &hc, &qc), 0);
    fake_clock_set(&clock, 10);
    push_ok(qa, 1, MIB);
    fake_clock_set(&clock, 100);
    push_ok(qb, 2, MIB);
    fake_clock_set(&clock, 200);
    push_ok(qa, 3, MIB);
    fake_clock_set(&clock, 300);
    push_ok(qc, 4, 2 * MIB + MIB / 2);
    fake_clock_set(&clock, 400);

    free(memq_queue_pop(qa)); /* A's age goes from 10 to 200 */
    ck_assert_uint_gt(memq_tracker_used(t), 4 * MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);

    ck_assert_int_eq(atomic_load(&log.n), 2);
    ck_assert_int_eq(log.order[0], 'B');
    ck_assert_int_eq(log.order[1], 'A');
    ck_assert(!memq_queue_closed(qc));
    ck_assert_uint_eq(memq_queue_len(qc), 1);

    memq_queue_free(qa);
    memq_queue_free(qb);
    memq_queue_free(qc);
    memq_account_unref(a);
    memq_account_unref(b);
    memq_account_unref(c);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * DROP_OLDEST policy
 * ====================================================================== */

START_TEST(test_drop_oldest_frees_exactly_the_items_older_than_the_next_candidate_oldest_first)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(10 * MIB, 5 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t), *b = account_make(t);
    ledger la = {0}, lb = {0};
    memq_queue *qa = queue_make(a, MEMQ_QUEUE_DROP_OLDEST, &la);
    memq_queue *qb = queue_make(b, MEMQ_QUEUE_COLLAPSE, &lb);

    /* A: ten items stamped 10, 20, ... 100; B: one item stamped 55. */
    for (int i = 1; i <= 10; i++) {
        fake_clock_set(&clock, (memq_time)(10 * i));
        push_ok(qa, 10 * i, MIB);
        if (i == 5) {
            fake_clock_set(&clock, 55);
            push_ok(qb, 55, MIB);
        }
    }
    fake_clock_set(&clock, 1000);
    ck_assert_uint_gt(memq_tracker_used(t), 10 * MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);

    /* A's first answer stopped at the cutoff 55: 10..50, oldest first; then
     * B (now the oldest) collapsed; only then did A give anything newer. */
    ck_assert_int_eq(atomic_load(&lb.collapses), 1);
    ck_assert_int_ge(atomic_load(&la.freed), 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(la.order[i], 10 * (i + 1));
    ck_assert_uint_le(memq_tracker_used(t), 5 * MIB);

    /* A stays open and keeps its newest items, in order. */
    ck_assert(!memq_queue_closed(qa));
    ck_assert_int_eq(atomic_load(&la.collapses), 0);
    int expected = 10 * (atomic_load(&la.freed) + 1);
    ck_assert_uint_eq(memq_queue_len(qa), (size_t)(10 - atomic_load(&la.freed)));
    item *it;
    while ((it = memq_queue_pop(qa)) != NULL) {
        ck_assert_int_eq(it->id, expected);
        expected += 10;
        free(it);
    }
    ck_assert_int_eq(expected, 110);

    item *more = item_new(200);
    ck_assert_int_eq(memq_queue_push(qa, more, 10), 0);
    memq_queue_free(qa);
    memq_queue_free(qb);
    memq_account_unref(a);
    memq_account_unref(b);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_drop_oldest_alone_frees_oldest_first_until_low_water)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(10 * MIB, 5 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_DROP_OLDEST, &l);

    for (int i = 0; i < 12; i++) {
        fake_clock_set(&clock, (memq_time)(100 + i));
        push_ok(q, i, MIB);
    }
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_uint_le(memq_tracker_used(t), 5 * MIB);
    /* 12 MiB and a few nodes down to 5 MiB: exactly 8 items had to go. */
    ck_assert_int_eq(atomic_load(&l.freed), 8);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(l.order[i], i);
    ck_assert_uint_eq(memq_queue_len(q), 4);
    ck_assert(!memq_queue_closed(q));
    memq_queue_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_equally_old_drop_oldest_queues_still_make_progress)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(10 * MIB, 5 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t), *b = account_make(t);
    ledger la = {0}, lb = {0};
    memq_queue *qa = queue_make(a, MEMQ_QUEUE_DROP_OLDEST, &la);
    memq_queue *qb = queue_make(b, MEMQ_QUEUE_DROP_OLDEST, &lb);

    fake_clock_set(&clock, 42); /* a coarse clock: every stamp is the same */
    for (int i = 0; i < 6; i++) {
        push_ok(qa, i, MIB);
        push_ok(qb, i, MIB);
    }
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_uint_le(memq_tracker_used(t), 5 * MIB);
    ck_assert_int_gt(atomic_load(&la.freed) + atomic_load(&lb.freed), 0);
    memq_queue_free(qa);
    memq_queue_free(qb);
    memq_account_unref(a);
    memq_account_unref(b);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Producer, consumer and the reclaim thread
 * ====================================================================== */

typedef struct race {
    memq_queue *q;
    atomic_bool stop;
    atomic_bool producer_done;
    pthread_t main_thread;
    atomic_long pushed, refused, popped, freed_by_reclaim, freed_at_end;
    atomic_long misuses; /* an item freed twice, or freed after a pop */
    atomic_int collapses;
    atomic_uint_fast8_t *state; /* per item: 0 unused, 1 queued, 2 gone */
    bool paced;                 /* COLLAPSE run: see race_consumer() */
    atomic_bool stalled;
    double stall_after;
    struct timespec start;
    long capacity;
} race;

static void race_free_item(void *p, void *ctx)
{
    race *r = ctx;
    item *it = p;
    /* A double free, or freeing an item that was popped, shows here.
     * (Counted, not asserted: Check's assertions are slow in hot loops.) */
    if (atomic_exchange(&r->state[it->id], 2) != 1)
        atomic_fetch_add(&r->misuses, 1);
    /* Only the reclaim thread and memq_queue_free() on the main thread
     * free items. */
    if (pthread_equal(pthread_self(), r->main_thread))
        atomic_fetch_add(&r->freed_at_end, 1);
    else
        atomic_fetch_add(&r->freed_by_reclaim, 1);
    free(it);
}

static void race_collapse(void *ctx)
{
    race *r = ctx;
    atomic_fetch_add(&r->collapses, 1);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void nap_us(long us)
{
    struct timespec nap = {0, us * 1000};
    nanosleep(&nap, NULL);
}

static void *race_producer(void *arg)
{
    race *r = arg;
    for (long id = 0; id < r->capacity && !atomic_load(&r->stop); id++) {
        item *it = malloc(sizeof *it);
        it->id = (int)id;
        atomic_store(&r->state[id], 1);
        int rc = memq_queue_push(r->q, it, 16 * KIB);
        if (rc == 0) {
            atomic_fetch_add(&r->pushed, 1);
        } else {
            ck_assert_int_eq(rc, MEMQ_ECLOSED);
            atomic_store(&r->state[id], 2);
            atomic_fetch_add(&r->refused, 1);
            free(it);
            break; /* a collapsed queue takes nothing more */
        }
        if (r->paced) {
            /* While the reader keeps up, stay well under the quota. */
            while (!atomic_load(&r->stalled) && memq_queue_len(r->q) > 64 &&
                   !atomic_load(&r->stop))
                nap_us(50);
            if (id % 16 == 0)
                nap_us(50);
        } else if (id % 16 == 0) {
            sched_yield();
        }
    }
    atomic_store(&r->producer_done, true);
    return NULL;
}

static void *race_consumer(void *arg)
{
    race *r = arg;

    while (!atomic_load(&r->stop)) {
        /* Unpaced: at most 16 items a millisecond, far slower than the
         * producer even under a sanitizer, so the queue grows and is
         * reclaimed again and again.  Paced: keeps up for a while, then
         * stalls like a client that stops reading. */
        bool stalled = !r->paced || seconds_since(&r->start) > r->stall_after;
        atomic_store(&r->stalled, stalled);
        int batch = stalled ? (r->paced ? 1 : 16) : 1000000;
        for (int i = 0; i < batch; i++) {
            item *it = memq_queue_pop(r->q);
            if (!it)
                break;
            if (atomic_exchange(&r->state[it->id], 2) != 1)
                atomic_fetch_add(&r->misuses, 1);
            atomic_fetch_add(&r->popped, 1);
            free(it);
        }
        nap_us(r->paced && !stalled ? 20 : 1000);
    }
    return NULL;
}

static void race_run(int policy, double seconds)
{
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 16 * KIB, MEMQ_RECLAIM_THREAD, NULL);
    memq_account *a = account_make(t);
    race r = {0};
    pthread_t producer, consumer;

    r.capacity = 8000000;
    r.main_thread = pthread_self();
    r.paced = policy == MEMQ_QUEUE_COLLAPSE;
    r.stall_after = seconds / 2;
    r.state = calloc((size_t)r.capacity, sizeof *r.state);
    ck_assert_ptr_nonnull(r.state);
    ck_assert_int_eq(memq_queue_new(a, policy, race_free_item, race_collapse, &r, &r.q), 0);
    clock_gettime(CLOCK_MONOTONIC, &r.start);
    ck_assert_int_eq(pthread_create(&producer, NULL, race_producer, &r), 0);
    ck_assert_int_eq(pthread_create(&consumer, NULL, race_consumer, &r), 0);
    while (seconds_since(&r.start) < seconds && !atomic_load(&r.producer_done))
        nap_us(10000);
    atomic_store(&r.stop, true);
    pthread_join(producer, NULL);
    pthread_join(consumer, NULL);

    memq_queue_free(r.q); /* waits for a running reclaim callback */
    long pushed = atomic_load(&r.pushed), popped = atomic_load(&r.popped);
    long freed_by_reclaim = atomic_load(&r.freed_by_reclaim);
    long freed_at_end = atomic_load(&r.freed_at_end);
    long refused = atomic_load(&r.refused), misuses = atomic_load(&r.misuses);
    int collapses = atomic_load(&r.collapses);

    ck_assert_int_eq(pushed, popped + freed_by_reclaim + freed_at_end);
    ck_assert_int_gt(freed_by_reclaim, 0); /* reclamation really raced */
    ck_assert_int_gt(popped, 0);
    long lost = 0;
    for (long id = 0; id < r.capacity; id++)
        lost += atomic_load(&r.state[id]) == 1;
    ck_assert_int_eq(lost, 0);
    ck_assert_int_eq(misuses, 0);
    if (policy == MEMQ_QUEUE_COLLAPSE) {
        ck_assert_int_eq(collapses, 1);
        ck_assert_int_eq(refused, 1);
    } else {
        ck_assert_int_eq(collapses, 0);
        ck_assert_int_eq(refused, 0);
    }

    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_gt(st.episodes, 0);
    free(r.state);
    memq_account_unref(a);
    memq_tracker_free(t);
}

START_TEST(test_producer_consumer_and_reclaim_thread_lose_and_double_free_nothing_dropping_oldest)
{
    race_run(MEMQ_QUEUE_DROP_OLDEST, 2.5);
}
END_TEST

START_TEST(test_producer_consumer_and_reclaim_thread_lose_and_double_free_nothing_collapsing)
{
    race_run(MEMQ_QUEUE_COLLAPSE, 2.5);
}
END_TEST

/* ======================================================================
 * The suite
 * ====================================================================== */

START_TEST(test_an_idle_queue_frees_its_items_when_a_sibling_collapses_its_account)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(2 * MIB, 1 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t), *young = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l); /* asked after the sibling */
    collapser victim;
    fake_clock_set(&clock, 1);
    collapser_start(&victim, a, 4 * KIB, 1);
    fake_clock_set(&clock, 2);
    for (int i = 0; i < 100; i++)
        push_ok(q, i, 12000); /* a stalled reader's data: never popped */
    size_t queued = memq_account_used(a) - 4 * KIB;
    fake_clock_set(&clock, 3);
    ledger young_ledger = {0};
    memq_queue *later = queue_make(young, MEMQ_QUEUE_COLLAPSE, &young_ledger);
    for (int i = 0; i < 100; i++)
        push_ok(later, 1000 + i, 10000); /* crosses max */
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_int_eq(victim.calls, 1);
    ck_assert(memq_account_closed(a));
    /* In the same drive: every item freed, on_collapse once. */
    ck_assert(memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.freed), 100);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.bytes_reclaimed, queued + 4 * KIB);
    memq_queue_free(q);
    memq_queue_free(later);
    memq_participation_free(victim.p);
    memq_account_unref(a);
    memq_account_unref(young);
    memq_tracker_free(t);
}
END_TEST

/* The queue learns that its account closed at its own next pop, before
 * reclamation's notice reaches it: the notice then finds nothing to do,
 * and nothing is freed or reported twice. */
START_TEST(test_a_queue_that_collapsed_before_its_notice_arrives_collapses_once)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(64 * KIB, 32 * KIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    pender sibling;
    fake_clock_set(&clock, 1);
    pender_start(&sibling, a, 80 * KIB, 1); /* crosses max */
    for (int i = 0; i < 1000 && sibling.calls == 0; i++)
        ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_EAGAIN); /* its answer will be pending */
    ck_assert_int_eq(sibling.calls, 1);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    fake_clock_set(&clock, 2);
    for (int i = 0; i < 3; i++)
        push_ok(q, i, 100);
    pender_answer(&sibling, MEMQ_RECLAIMED_COLLAPSING); /* the account closes */
    ck_assert(memq_account_closed(a));
    ck_assert_ptr_null(memq_queue_pop(q)); /* the owner sees it first */
    ck_assert(memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.freed), 3);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    ck_assert_int_eq(reclaim_until_done(t), 0); /* the notice comes */
    ck_assert_int_eq(atomic_load(&l.freed), 3);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_queue_free(q);
    memq_participation_free(sibling.p);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* The account closes (here from the clock the push reads: the moment
 * another thread could close it) after the push checked it: the claim
 * fails, the queue collapses, and the item stays the caller's. */
START_TEST(test_a_push_racing_its_accounts_close_collapses_the_queue_and_leaves_the_item)
{
    closing_clock clock = {.now = 10};
    memq_tracker *t = tracker_with_closing_clock(1 * MIB, &clock);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    push_ok(q, 1, 100);
    clock.unref = a; /* the only reference */
    item *it = item_new(2);
    ck_assert_int_eq(memq_queue_push(q, it, 100), MEMQ_ECLOSED);
    ck_assert(memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.freed), 1); /* item 1 only */
    ck_assert_int_eq(l.order[0], 1);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    ck_assert_uint_eq(claims_of(t), 0);
    free(it); /* not taken */
    memq_queue_free(q);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_push_racing_tracker_shutdown_collapses_the_queue_and_leaves_the_item)
{
    closing_clock clock = {.now = 10};
    memq_tracker *t = tracker_with_closing_clock(1 * MIB, &clock);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    push_ok(q, 1, 100);
    clock.shut_down = t;
    item *it = item_new(2);
    ck_assert_int_eq(memq_queue_push(q, it, 100), MEMQ_ECLOSED);
    ck_assert(memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.freed), 1);
    ck_assert_int_eq(atomic_load(&l.collapses), 1);
    free(it);
    memq_queue_free(q);
    memq_account_unref(a); /* the tracker's memory goes with it */
}
END_TEST

/* A clock at its very last value still stamps data that has an age
 * (MEMQ_TIME_MAX means "no data"): that queue is a candidate like any
 * other, and the newest one, reclaimed after the older one. */
static int collapse_order[2], collapses_seen;

static void note_collapse(void *ctx)
{
    collapse_order[collapses_seen++ % 2] = *(int *)ctx;
}

START_TEST(test_a_push_when_the_clock_reads_time_max_is_still_the_newest_data)
{
    fake_clock clock = {0};
    /* (low_water above what the pool keeps: its metadata and a span.) */
    memq_tracker *t = tracker_make(1 * MIB, 256 * KIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *old = account_make(t), *last = account_make(t);
    static int old_id = 1, last_id = 2;
    collapses_seen = 0;
    memq_queue *qo = NULL, *ql = NULL;
    ck_assert_int_eq(memq_queue_new(old, MEMQ_QUEUE_COLLAPSE, free_plain, note_collapse, &old_id,
                                    &qo), 0);
    ck_assert_int_eq(memq_queue_new(last, MEMQ_QUEUE_COLLAPSE, free_plain, note_collapse,
                                    &last_id, &ql), 0);
    fake_clock_set(&clock, 1000);
    ck_assert_int_eq(memq_queue_push(qo, item_new(1), 600 * KIB), 0);
    fake_clock_set(&clock, MEMQ_TIME_MAX);
    ck_assert_int_eq(memq_queue_push(ql, item_new(2), 600 * KIB), 0); /* crosses max */
    ck_assert_int_eq(reclaim_until_done(t), 0);
    /* Both had to go to reach low water: the older first. */
    ck_assert_int_eq(collapses_seen, 2);
    ck_assert_int_eq(collapse_order[0], 1);
    ck_assert_int_eq(collapse_order[1], 2);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.unreclaimable_events, 0);
    memq_queue_free(qo);
    memq_queue_free(ql);
    memq_account_unref(old);
    memq_account_unref(last);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * The pool the nodes come from
 * ====================================================================== */

static size_t pool_in_use(memq_pool *pool)
{
    memq_pool_stats st;
    ck_assert_int_eq(memq_pool_get_stats(pool, &st), 0);
    return st.in_use;
}

START_TEST(test_nodes_come_from_the_pool_given_and_go_back_to_it)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(64 * MIB, 0, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    memq_pool *pool = NULL;
    ck_assert_int_eq(memq_pool_new(t, NULL, &pool), 0);
    ledger l = {0};
    memq_queue *q = NULL;
    ck_assert_int_eq(memq_queue_new_pool(a, pool, MEMQ_QUEUE_COLLAPSE, ledger_free_item,
                                         ledger_collapse, &l, &q), 0);
    size_t node = 32; /* a pool class: next, item, cost, stamp */
    for (int i = 0; i < 100; i++)
        push_ok(q, i, 10);
    ck_assert_uint_eq(pool_in_use(pool), 100 * node);
    ck_assert_uint_eq(claims_of(t), 100 * (10 + node)); /* cache_max 0: exact */
    for (int i = 0; i < 40; i++)
        free(memq_queue_pop(q));
    ck_assert_uint_eq(pool_in_use(pool), 60 * node);
    ck_assert_int_eq(reclaim_until_done(t), 0); /* nothing wanted: a no-op */
    memq_queue_free(q); /* frees the other 60 */
    ck_assert_uint_eq(pool_in_use(pool), 0);
    ck_assert_uint_eq(claims_of(t), 0);
    ck_assert_int_eq(atomic_load(&l.freed), 60);
    memq_pool_free(pool);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_collapse_gives_the_nodes_back_to_the_trackers_pool)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(1 * MIB, 512 * KIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    ledger l = {0};
    memq_queue *q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    memq_pool *pool = memq_tracker_pool(t);
    ck_assert_ptr_nonnull(pool);
    for (int i = 0; i < 1000; i++)
        push_ok(q, i, 1 * KIB); /* the last ones cross max */
    ck_assert_uint_gt(pool_in_use(pool), 0);
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert(memq_queue_closed(q));
    ck_assert_uint_eq(pool_in_use(pool), 0);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_queue_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* A cost that passes the check against the node's size but cannot be
 * added to what the participation claims: the node was taken (and
 * claimed) first, so it goes back to the pool with its claim, and the
 * item stays the caller's. */
START_TEST(test_a_cost_refused_after_the_node_was_taken_gives_the_node_back)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_pool_config pc;
    memq_pool_config_init(&pc);
    pc.cache = 0; /* every node straight from and back to the spans */
    memq_pool *pool = NULL;
    ck_assert_int_eq(memq_pool_new(t, &pc, &pool), 0);
    ledger l = {0};
    memq_queue *q = NULL;
    ck_assert_int_eq(memq_queue_new_pool(a, pool, MEMQ_QUEUE_COLLAPSE, ledger_free_item,
                                         ledger_collapse, &l, &q), 0);
    push_ok(q, 1, 100);
    size_t in_use = pool_in_use(pool), used = memq_account_used(a), claims = claims_of(t);
    ck_assert_uint_eq(in_use, 32);

    item *it = item_new(2);
    ck_assert_int_eq(memq_queue_push(q, it, SIZE_MAX - 64), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(pool_in_use(pool), in_use);
    ck_assert_uint_eq(memq_account_used(a), used);
    ck_assert_uint_eq(claims_of(t), claims);
    ck_assert_uint_eq(memq_queue_len(q), 1);
    ck_assert(!memq_queue_closed(q));
    ck_assert_int_eq(atomic_load(&l.collapses), 0);
    free(it); /* still ours */

    push_ok(q, 3, 100); /* the queue goes on */
    item *first = memq_queue_pop(q), *second = memq_queue_pop(q);
    ck_assert_int_eq(first->id, 1);
    ck_assert_int_eq(second->id, 3);
    free(first);
    free(second);
    ck_assert_uint_eq(pool_in_use(pool), 0);
    ck_assert_uint_eq(claims_of(t), claims - used);
    memq_queue_free(q);
    ck_assert_int_eq(atomic_load(&l.freed), 0);
    memq_pool_free(pool);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_pool_of_another_tracker_is_refused)
{
    memq_tracker *t = tracker_make(1 * MIB, 0, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_tracker *other = tracker_make(1 * MIB, 0, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_pool *theirs = NULL;
    ck_assert_int_eq(memq_pool_new(other, NULL, &theirs), 0);
    memq_queue *q = (memq_queue *)&q;
    ck_assert_int_eq(memq_queue_new_pool(a, theirs, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q),
                     MEMQ_EINVAL);
    ck_assert_ptr_eq(q, (memq_queue *)&q);
    ck_assert_int_eq(memq_queue_new_pool(a, memq_tracker_pool(other), MEMQ_QUEUE_COLLAPSE, NULL,
                                         NULL, NULL, &q),
                     MEMQ_EINVAL);
    /* NULL is the tracker's own. */
    ck_assert_int_eq(memq_queue_new_pool(a, NULL, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q), 0);
    memq_queue_free(q);
    memq_pool_free(theirs);
    memq_account_unref(a);
    memq_tracker_free(other);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * No address space for the tracker's pool
 * ====================================================================== */

/* The first queue of a process whose address space is limited: the
 * tracker's pool cannot map its first metadata block (1 MiB), so the
 * queue is not made and its registration is undone. */
START_TEST(test_a_queue_is_not_made_when_the_trackers_pool_cannot_be_mapped)
{
    const char *why = no_fresh_address_space();
    if (why != NULL) {
        fprintf(stderr, "check_queue: test_a_queue_is_not_made_when_the_trackers_pool_cannot_be_mapped "
                        "skipped: %s\n",
                why);
        return;
    }
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_queue *q = (memq_queue *)&q;
    struct rlimit old = address_space_squeeze(256 * KIB);
    int rc = memq_queue_new(a, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    ck_assert_int_eq(rc, MEMQ_ENOMEM);
    ck_assert_ptr_eq(q, (memq_queue *)&q);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.participants, 0);
    ck_assert(!memq_account_closed(a));
    /* With the address space back, the next one gets the pool. */
    ledger l = {0};
    q = queue_make(a, MEMQ_QUEUE_COLLAPSE, &l);
    push_ok(q, 1, 10);
    ck_assert_uint_eq(pool_in_use(memq_tracker_pool(t)), 32);
    memq_queue_free(q);
    ck_assert_int_eq(atomic_load(&l.freed), 1);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

static Suite *queue_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *basics = tcase_create("basics");
    TCase *collapse = tcase_create("collapse");
    TCase *drop = tcase_create("drop_oldest");
    TCase *threads = tcase_create("threads");
    TCase *pool = tcase_create("pool");

    tcase_add_test(basics, test_queue_new_rejects_null_arguments_and_unknown_policies);
    tcase_add_test(basics, test_queue_new_on_a_collapsed_account_fails_with_eclosed);
    tcase_add_test(basics, test_queue_new_after_tracker_shutdown_fails_with_eshutdown);
    tcase_add_test(basics, test_items_pop_in_the_order_they_were_pushed);
    tcase_add_test(basics, test_push_claims_the_cost_plus_a_fixed_overhead_and_pop_releases_it);
    tcase_add_test(basics,
                   test_push_with_an_overflowing_cost_fails_and_leaves_the_item_with_the_caller);
    tcase_add_test(basics, test_push_pop_of_19_items_leaves_at_most_two_caches_tracked);
    tcase_add_test(basics, test_queue_free_frees_the_remaining_items_with_free_item);
    tcase_add_test(basics, test_queue_on_an_unlimited_tracker_counts_and_never_collapses);
    suite_add_tcase(s, basics);

    tcase_add_test(collapse,
                   test_reclaimed_collapse_queue_holds_nothing_refuses_pushes_and_calls_its_hook_once);
    tcase_add_test(collapse, test_on_collapse_may_free_the_queue);
    tcase_add_test(collapse,
                   test_on_collapse_may_free_the_queue_and_drop_the_last_account_reference);
    tcase_add_test(collapse, test_queue_whose_account_was_unreffed_collapses_at_its_next_push);
    tcase_add_test(collapse, test_queue_whose_account_was_unreffed_collapses_at_its_next_pop);
    tcase_add_test(collapse, test_queue_collapses_at_its_next_push_after_tracker_shutdown);
    tcase_add_test(collapse, test_the_account_with_the_oldest_head_item_is_reclaimed_first);
    tcase_add_test(collapse, test_popping_the_head_makes_the_next_items_stamp_the_queues_age);
    tcase_add_test(collapse, test_an_idle_queue_frees_its_items_when_a_sibling_collapses_its_account);
    tcase_add_test(collapse, test_a_queue_that_collapsed_before_its_notice_arrives_collapses_once);
    tcase_add_test(collapse,
                   test_a_push_racing_its_accounts_close_collapses_the_queue_and_leaves_the_item);
    tcase_add_test(collapse,
                   test_a_push_racing_tracker_shutdown_collapses_the_queue_and_leaves_the_item);
    tcase_add_test(collapse, test_a_push_when_the_clock_reads_time_max_is_still_the_newest_data);
    suite_add_tcase(s, collapse);

    tcase_add_test(drop,
                   test_drop_oldest_frees_exactly_the_items_older_than_the_next_candidate_oldest_first);
    tcase_add_test(drop, test_drop_oldest_alone_frees_oldest_first_until_low_water);
    tcase_add_test(drop, test_equally_old_drop_oldest_queues_still_make_progress);
    suite_add_tcase(s, drop);

    tcase_set_timeout(threads, 60);
    tcase_add_test(threads,
                   test_producer_consumer_and_reclaim_thread_lose_and_double_free_nothing_dropping_oldest);
    tcase_add_test(threads,
                   test_producer_consumer_and_reclaim_thread_lose_and_double_free_nothing_collapsing);
    suite_add_tcase(s, threads);
    tcase_add_test(pool, test_nodes_come_from_the_pool_given_and_go_back_to_it);
    tcase_add_test(pool, test_a_collapse_gives_the_nodes_back_to_the_trackers_pool);
    tcase_add_test(pool, test_a_pool_of_another_tracker_is_refused);
    tcase_add_test(pool, test_a_cost_refused_after_the_node_was_taken_gives_the_node_back);
    tcase_add_test(pool, test_a_queue_is_not_made_when_the_trackers_pool_cannot_be_mapped);
    suite_add_tcase(s, pool);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(queue_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
