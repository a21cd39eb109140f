/*
 * check_oom.c - allocation failure at the N-th allocation, swept over N
 * for a full scenario: every function must return MEMQ_ENOMEM or succeed,
 * the totals must stay consistent, and nothing may leak (the ASan build's
 * LeakSanitizer and `make check-valgrind` check the last).
 *
 * The program links the static library, so it interposes malloc, calloc,
 * realloc and strdup for the whole process; only calls made directly from
 * this executable's code (the library) while a
 * library function runs are counted and may fail.  The real allocator is
 * the sanitizer's when there is one (__interceptor_*), else glibc's
 * (__libc_*), which valgrind also replaces.
 *
 * Two sweeps: the N-th allocation fails once (the usual transient
 * failure), and every allocation from the N-th on fails (memory stays
 * short: cleanup paths must not need any).
 */
#include <check.h>
#include <memquota.h>

#include "det_clock.h" /* every run makes the same allocations */
#include "internal.h"  /* the state a failed claim must leave as it was */

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ======================================================================
 * The failing allocator
 * ====================================================================== */

#include "interpose.h" /* the interposers; should_fail() is below */

static _Thread_local int armed;    /* a library call is running on this thread */
static unsigned long long counted; /* allocations seen while armed */
static unsigned long long fail_at; /* 0: never */
static bool fail_after;            /* fail every allocation from fail_at on */
static unsigned long long failures;

/* A thread the test does not run (the reclaim thread) marks itself from
 * inside a callback; while short_on_memory is set, every allocation the
 * library makes on a marked thread fails. */
static _Thread_local int marked;
static atomic_bool short_on_memory;
static atomic_ulong marked_failures;

NO_SANITIZE static bool should_fail(const void *caller)
{
    if (marked && atomic_load_explicit(&short_on_memory, memory_order_relaxed) &&
        from_executable(caller)) {
        atomic_fetch_add_explicit(&marked_failures, 1, memory_order_relaxed);
        return true;
    }
    if (!armed || !from_executable(caller))
        return false;
    counted++;
    if (fail_at == 0 || counted < fail_at || (counted > fail_at && !fail_after))
        return false;
    failures++;
    return true;
}

/* ======================================================================
 * The scenario
 * ====================================================================== */

#define KIB ((size_t)1024)

static void sleep_ms_oom(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

#define CALL(expr) (armed = 1, call_rc = (expr), armed = 0, call_rc)
#define VCALL(expr) (armed = 1, (expr), armed = 0)
static int call_rc;

/* Every function returning an error code may only fail for lack of memory. */
#define OK_OR_NOMEM(expr)                                                                    \
    do {                                                                                     \
        int rc_ = CALL(expr);                                                                \
        ck_assert_msg(rc_ == 0 || rc_ == MEMQ_ENOMEM, "%s returned %d (%s) at allocation %llu", \
                      #expr, rc_, memq_strerror(rc_), fail_at);                              \
    } while (0)

typedef struct part {
    memq_participation *p;
    size_t held;
    memq_time stamp;
    int answer; /* 0 partial (free all), 1 collapse, 2 pending */
} part;

static bool part_oldest(void *self, memq_time *when)
{
    part *x = self;
    if (x->held == 0)
        return false;
    *when = x->stamp;
    return true;
}

static memq_reclaim_status part_reclaim(void *self, const memq_reclaim_request *req)
{
    part *x = self;
    (void)req;
    if (x->answer == 1) {
        x->held = 0;
        return MEMQ_RECLAIMED_COLLAPSING;
    }
    if (x->answer == 2)
        return MEMQ_RECLAIM_PENDING;
    memq_release(x->p, x->held);
    x->held = 0;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops part_ops = {part_oldest, part_reclaim};
static memq_time now_ns = 1000000;

static memq_time fake_clock(void *ctx)
{
    (void)ctx;
    return now_ns;
}

static void free_item(void *item, void *ctx)
{
    (void)ctx;
    free(item);
}

static void *pop(memq_queue *q)
{
    armed = 1;
    void *item = memq_queue_pop(q);
    armed = 0;
    return item;
}

#define NACC 12
#define NPART 16

/* used must equal the sum of the claims (cache_max is 0). */
static void check_totals(memq_tracker *t, part *ps, int n)
{
    size_t sum = 0;
    for (int i = 0; i < n; i++)
        if (ps[i].p != NULL)
            sum += memq_participation_claimed(ps[i].p);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_msg(st.used >= sum, "used %zu < claims %zu at allocation %llu", st.used, sum,
                  fail_at);
    ck_assert_msg(st.used - sum <= 64 * KIB, /* the containers' own claims */
                  "used %zu vs claims %zu at allocation %llu", st.used, sum, fail_at);
}

static void scenario_run(void);

/* One run, with a deterministic budget: a run cut short by a loaded
 * machine would make fewer allocations, and leave a site of the sweep
 * untried. */
static void scenario(void)
{
    det_clock_on = true;
    det_clock_now = (uint64_t)1 << 40;
    scenario_run();
    det_clock_on = false;
}

static void scenario_run(void)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 256 * KIB;
    cfg.low_water = 128 * KIB;
    cfg.cache_max = 0;
    cfg.clock = fake_clock;
    cfg.reclaim_timeout_ms = 5;
    memq_tracker *t = NULL;
    OK_OR_NOMEM(memq_tracker_new(&t, &cfg));
    if (t == NULL)
        return;

    memq_account *acc[NACC] = {0};
    for (int i = 0; i < NACC; i++) {
        memq_account *parent = i >= 3 ? acc[i % 3] : NULL;
        OK_OR_NOMEM(memq_account_new(t, parent, &acc[i]));
        if (acc[i] != NULL) {
            char name[32];
            snprintf(name, sizeof name, "account %d", i);
            OK_OR_NOMEM(memq_account_set_name(acc[i], name));
        }
    }
    for (int i = 3; i < NACC; i++)
        if (acc[i] != NULL && acc[(i + 1) % 3] != NULL) {
            int rc = CALL(memq_account_add_parent(acc[i], acc[(i + 1) % 3]));
            ck_assert_msg(rc == 0 || rc == MEMQ_ENOMEM || rc == MEMQ_EEXIST, "add_parent %d", rc);
        }

    part ps[NPART];
    memset(ps, 0, sizeof ps);
    for (int i = 0; i < NPART; i++) {
        memq_account *a = acc[i % NACC];
        if (a == NULL)
            continue;
        ps[i].answer = i % 5 == 1 ? 1 : i % 5 == 2 ? 2 : 0;
        OK_OR_NOMEM(memq_participant_register(a, &part_ops, &ps[i], &ps[i].p));
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NPART; i++) {
            if (ps[i].p == NULL)
                continue;
            size_t n = (size_t)(i + 1) * 3 * KIB;
            int rc = CALL(memq_claim(ps[i].p, n));
            /* MEMQ_ENOMEM: the account could not enter the age index. */
            ck_assert_msg(rc == 0 || rc == MEMQ_ECLOSED || rc == MEMQ_ENOMEM, "claim %d", rc);
            if (rc == 0) {
                if (ps[i].held == 0)
                    ps[i].stamp = now_ns;
                ps[i].held += n;
            }
            now_ns += 1000;
        }
        check_totals(t, ps, NPART);
        for (int k = 0; k < 20; k++) {
            int rc = CALL(memq_tracker_reclaim(t));
            ck_assert_msg(rc == 0 || rc == MEMQ_EAGAIN || rc == MEMQ_ENOMEM, "reclaim %d", rc);
            check_totals(t, ps, NPART);
            if (rc == 0)
                break;
            now_ns += 3000000; /* pending answers time out */
        }
    }

    /* Containers. */
    memq_queue *q = NULL;
    memq_buf *b = NULL;
    memq_account *cacc = NULL; /* the containers' own account */
    OK_OR_NOMEM(memq_account_new(t, NULL, &cacc));
    if (cacc != NULL) {
        OK_OR_NOMEM(memq_queue_new(cacc, MEMQ_QUEUE_DROP_OLDEST, free_item, NULL, NULL, &q));
        OK_OR_NOMEM(memq_buf_new(cacc, NULL, NULL, &b));
    }
    if (q != NULL)
        for (int i = 0; i < 20; i++) {
            void *item = real_malloc(16);
            int rc = CALL(memq_queue_push(q, item, 100));
            ck_assert_msg(rc == 0 || rc == MEMQ_ENOMEM || rc == MEMQ_ECLOSED, "push %d", rc);
            if (rc != 0)
                free(item);
            if (i % 3 == 0)
                free(pop(q));
        }
    if (b != NULL) {
        char data[5000];
        memset(data, 'x', sizeof data);
        for (int i = 0; i < 10; i++) {
            int rc = CALL(memq_buf_add(b, data, sizeof data));
            ck_assert_msg(rc == 0 || rc == MEMQ_ENOMEM || rc == MEMQ_ECLOSED, "buf_add %d", rc);
            VCALL(memq_buf_drain(b, 3000));
        }
    }

    /* Reconfigure, queries, dumps. */
    cfg.max = 128 * KIB;
    cfg.low_water = 64 * KIB;
    OK_OR_NOMEM(memq_tracker_reconfigure(t, &cfg));
    for (int f = 0; f < 3; f++) {
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        if (out != NULL) {
            int rc = CALL(memq_tracker_dump(t, out, f));
            ck_assert_msg(rc == 0 || rc == MEMQ_ENOMEM, "dump %d", rc);
            fclose(out);
            free(text);
        }
    }
    if (acc[1] != NULL) {
        memq_account *found;
        armed = 1;
        found = memq_account_find(t, memq_account_id(acc[1]));
        armed = 0;
        if (found != NULL)
            memq_account_unref(found);
    }
    for (int k = 0; k < 20; k++) {
        int rc = CALL(memq_tracker_reclaim(t));
        ck_assert_msg(rc == 0 || rc == MEMQ_EAGAIN || rc == MEMQ_ENOMEM, "reclaim %d", rc);
        if (rc == 0)
            break;
        now_ns += 3000000;
    }
    check_totals(t, ps, NPART);

    /* Teardown: nothing here may need memory. */
    if (q != NULL)
        VCALL(memq_queue_free(q));
    if (b != NULL)
        VCALL(memq_buf_free(b));
    for (int i = 0; i < NPART; i++)
        if (ps[i].p != NULL)
            VCALL(memq_participation_free(ps[i].p));
    for (int i = 0; i < NACC; i++)
        if (acc[i] != NULL)
            VCALL(memq_account_unref(acc[i]));
    if (cacc != NULL)
        VCALL(memq_account_unref(cacc));
    VCALL(memq_tracker_free(t));
}

/* How many counted allocations a run without failures makes. */
static unsigned long long scenario_allocations(void)
{
    fail_at = 0;
    counted = 0;
    now_ns = 1000000;
    scenario();
    return counted;
}

static void sweep(bool after)
{
    unsigned long long total = scenario_allocations();
    ck_assert_uint_gt(total, 50); /* the scenario does allocate */
    unsigned long long failed_runs = 0;
    for (unsigned long long n = 1; n <= total + 1; n++) {
        fail_at = n;
        fail_after = after;
        counted = 0;
        failures = 0;
        now_ns = 1000000;
        scenario();
        if (failures > 0)
            failed_runs++;
    }
    fail_at = 0;
    /* Every allocation site up to the last was made to fail at least once. */
    ck_assert_uint_ge(failed_runs, total);
}

START_TEST(test_every_function_survives_the_nth_allocation_failing)
{
    sweep(false);
}
END_TEST

START_TEST(test_every_function_survives_all_allocations_failing_from_the_nth)
{
    sweep(true);
}
END_TEST

START_TEST(test_interposition_sees_the_library_allocations)
{
    fail_at = 1;
    fail_after = false;
    counted = 0;
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1024 * KIB;
    memq_tracker *t = (memq_tracker *)0x1;
    ck_assert_int_eq(CALL(memq_tracker_new(&t, &cfg)), MEMQ_ENOMEM);
    ck_assert_ptr_eq(t, (memq_tracker *)0x1);
    fail_at = 0;
}
END_TEST

static bool no_data(void *self, memq_time *when)
{
    (void)self;
    (void)when;
    return false;
}

static memq_reclaim_status give_nothing(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

START_TEST(test_a_claim_without_memory_for_its_index_entry_changes_nothing)
{
    static const memq_participant_ops ops = {no_data, give_nothing};
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1024 * KIB;
    cfg.cache_max = 4 * KIB;
    memq_tracker *t = NULL;
    memq_account *a = NULL;
    memq_participation *p = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    ck_assert_int_eq(memq_participant_register(a, &ops, NULL, &p), 0);
    for (int at = 0; at < 2; at++) {
        fail_at = 1; /* the index's first entry cannot be allocated */
        fail_after = false;
        counted = 0;
        int rc = at ? CALL(memq_claim_at(p, 100, 1)) : CALL(memq_claim(p, 100));
        fail_at = 0;
        ck_assert_int_eq(rc, MEMQ_ENOMEM);
        ck_assert_uint_eq(atomic_load(&p->claimed), 0);
        ck_assert_uint_eq(p->cache, 0);
        ck_assert_uint_eq(atomic_load(&p->charged), 0);
        ck_assert_uint_eq(atomic_load(&a->charged), 0);
        ck_assert_uint_eq(a->slot, 0);
        ck_assert_uint_eq(memq_tracker_used(t), 0);
    }
    ck_assert_int_eq(memq_claim(p, 100), 0); /* with memory, it goes through */
    memq_participation_free(p);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Reclamation when an allocation fails
 * ====================================================================== */

static bool gives_all_oldest(void *self, memq_time *when)
{
    part *x = self;
    if (x->held == 0)
        return false;
    *when = x->stamp;
    return true;
}

static memq_reclaim_status gives_all(void *self, const memq_reclaim_request *req)
{
    part *x = self;
    (void)req;
    memq_release(x->p, x->held);
    x->held = 0;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops giving_ops = {gives_all_oldest, gives_all};

/* Two accounts over max; the n-th allocation of the first reclaim call
 * fails.  Then reclaim calls with memory back.  Returns the stats. */
static memq_stats reclaim_with_nth_allocation_failing(unsigned long long n, int *first_rc,
                                                      unsigned long long *failed)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * KIB;
    cfg.low_water = 32 * KIB;
    cfg.cache_max = 0;
    cfg.clock = fake_clock;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *acc[2];
    part ps[2];
    memset(ps, 0, sizeof ps);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(memq_account_new(t, NULL, &acc[i]), 0);
        ck_assert_int_eq(memq_participant_register(acc[i], &giving_ops, &ps[i], &ps[i].p), 0);
        now_ns += 1000;
        ps[i].stamp = now_ns;
        ps[i].held = 40 * KIB;
        ck_assert_int_eq(memq_claim(ps[i].p, ps[i].held), 0); /* the second crosses max */
    }
    fail_at = n;
    fail_after = false;
    counted = 0;
    failures = 0;
    *first_rc = CALL(memq_tracker_reclaim(t));
    fail_at = 0;
    *failed = failures;
    for (int k = 0; k < 10; k++)
        (void)memq_tracker_reclaim(t);
    memq_stats st;
    memq_tracker_stats(t, &st);
    for (int i = 0; i < 2; i++) {
        memq_participation_free(ps[i].p);
        memq_account_unref(acc[i]);
    }
    memq_tracker_free(t);
    return st;
}

/* The first allocations of a reclaim call (the list of an account's
 * participations while its age is checked, the stack of the walk over a
 * victim's descendants, the list of its participations) once failed
 * silently: the victim was taken as holding nothing (or as having given
 * nothing), the episode stopped as "nothing reclaimable left", and the
 * next one waited for growth of a quarter of the band.  Each allocation
 * failing once must leave the episode to be retried, as
 * memq_tracker_reclaim() promises for MEMQ_ENOMEM. */
START_TEST(test_a_failed_allocation_in_a_reclaim_call_never_makes_memory_look_unreclaimable)
{
    for (unsigned long long n = 1; n <= 6; n++) {
        int rc;
        unsigned long long failed;
        memq_stats st = reclaim_with_nth_allocation_failing(n, &rc, &failed);
        if (failed == 0)
            break; /* the call made fewer than n allocations */
        ck_assert_msg(rc == 0 || rc == MEMQ_EAGAIN || rc == MEMQ_ENOMEM, "reclaim %d", rc);
        ck_assert_msg(st.unreclaimable_events == 0,
                      "allocation %llu failing once: the episode stopped as unreclaimable", n);
        ck_assert_msg(st.used <= 32 * KIB,
                      "allocation %llu failing once: used %zu stays above low water", n, st.used);
    }
}
END_TEST

/* Thread mode: the reclaim thread finds no memory for its list of
 * accounts set aside (the 17th victim outgrows its first 16 places).  It
 * waits a second, not spinning, and finishes the episode once memory is
 * back. */
static atomic_int reclaims_seen;

static memq_reclaim_status gives_all_then_memory_runs_short(void *self,
                                                            const memq_reclaim_request *req)
{
    if (atomic_fetch_add(&reclaims_seen, 1) + 1 == 16) {
        marked = 1; /* this is the reclaim thread */
        atomic_store(&short_on_memory, true);
    }
    return gives_all(self, req);
}

START_TEST(test_the_reclaim_thread_waits_out_an_allocation_failure_and_finishes_the_episode)
{
    static const memq_participant_ops ops = {gives_all_oldest, gives_all_then_memory_runs_short};
    enum { SMALL = 17, BIG = 3, N = SMALL + BIG };
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 100 * KIB;
    cfg.low_water = 50 * KIB;
    cfg.cache_max = 0;
    cfg.clock = fake_clock;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    atomic_store(&reclaims_seen, 0);
    atomic_store(&marked_failures, 0);
    memq_account *acc[N];
    static part ps[N];
    memset(ps, 0, sizeof ps);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(memq_account_new(t, NULL, &acc[i]), 0);
        ck_assert_int_eq(memq_participant_register(acc[i], &ops, &ps[i], &ps[i].p), 0);
        ps[i].stamp = 1000 + (memq_time)i; /* the small ones are the oldest */
        ps[i].held = i < SMALL ? 1 * KIB : 40 * KIB;
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(memq_claim(ps[i].p, ps[i].held), 0); /* the last crosses max */
    for (int i = 0; i < 10000 && atomic_load(&marked_failures) == 0; i++)
        sleep_ms_oom(1);
    ck_assert_uint_ge(atomic_load(&marked_failures), 1);
    sleep_ms_oom(100);
    ck_assert_uint_le(atomic_load(&marked_failures), 2); /* it waits, it does not spin */
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_gt(st.used, 50 * KIB);
    atomic_store(&short_on_memory, false);
    for (int i = 0; i < 10000 && st.used > 50 * KIB; i++) {
        sleep_ms_oom(1);
        memq_tracker_stats(t, &st);
    }
    ck_assert_uint_le(st.used, 50 * KIB);
    ck_assert_uint_eq(st.episodes, 1);
    ck_assert_uint_eq(st.unreclaimable_events, 0);
    ck_assert_int_ge(atomic_load(&reclaims_seen), SMALL + 1);
    memq_tracker_free(t);
    for (int i = 0; i < N; i++) {
        memq_participation_free(ps[i].p);
        memq_account_unref(acc[i]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("sweep");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_interposition_sees_the_library_allocations);
    tcase_add_test(tc, test_a_claim_without_memory_for_its_index_entry_changes_nothing);
    tcase_add_test(tc, test_every_function_survives_the_nth_allocation_failing);
    tcase_add_test(tc, test_every_function_survives_all_allocations_failing_from_the_nth);
    tcase_add_test(tc, test_the_reclaim_thread_waits_out_an_allocation_failure_and_finishes_the_episode);
    tcase_add_test(tc, test_a_failed_allocation_in_a_reclaim_call_never_makes_memory_look_unreclaimable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
