/*
 * check_evbuffer.c - memq_evbuffer: claims that follow the buffer (and
 * libevent's allocations), ages by Tor's rule, libevent's own writes,
 * collapse on reclaim and on a closed notice, a bufferevent's frozen
 * output, and freeing in either order.
 *
 * libevent's allocations are counted through event_set_mem_functions(),
 * set in main() before libevent allocates anything; an allocation can be
 * made to fail to test all-or-nothing additions.  The library's own
 * allocations (and libevent's, which go through this program's allocator
 * functions) can be made to fail too, by interposing malloc.
 */
#include "event_helpers.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>

#include "failalloc.h" /* our allocations, made to fail */
#include "levalloc.h" /* libevent's, counted */

/* ----------------------------------------------------------------------
 * Fixtures
 * ---------------------------------------------------------------------- */

static unsigned char pattern[4 * MIB];
static atomic_int collapses;
static size_t collapse_saw_claimed; /* memq_evbuffer_claimed() in on_collapse */

static void count_collapse(void *ctx)
{
    atomic_fetch_add(&collapses, 1);
    if (ctx != NULL)
        collapse_saw_claimed = memq_evbuffer_claimed(*(memq_evbuffer **)ctx);
}

static memq_evbuffer *owned_make(memq_account *a)
{
    memq_evbuffer *b = NULL;
    atomic_store(&collapses, 0);
    ck_assert_int_eq(memq_evbuffer_new(a, count_collapse, NULL, &b), 0);
    ck_assert_ptr_nonnull(b);
    return b;
}

/* A connected pair of sockets; the peer's receive buffer is small, so
 * that what is written to the first mostly stays in its output. */
static void socket_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    evutil_make_socket_nonblocking(sv[0]);
}

static size_t drain_socket(int fd)
{
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0)
            return total;
        total += (size_t)n;
    }
}

/* ----------------------------------------------------------------------
 * Basics
 * ---------------------------------------------------------------------- */

START_TEST(test_null_arguments_and_thread_mode_are_rejected)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = (memq_evbuffer *)&b;
    ck_assert_int_eq(memq_evbuffer_new(NULL, NULL, NULL, &b), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evbuffer_new(a, NULL, NULL, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, NULL, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &b),
                     MEMQ_EINVAL);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, 3, NULL, NULL, &b), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(NULL, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &b),
                     MEMQ_EINVAL);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, NULL),
                     MEMQ_EINVAL);
    ck_assert_ptr_eq(b, (memq_evbuffer *)&b);
    ck_assert_int_eq(memq_evbuffer_add(NULL, "x", 1), MEMQ_EINVAL);
    ck_assert_uint_eq(memq_evbuffer_claimed(NULL), 0);
    ck_assert(memq_evbuffer_closed(NULL));
    ck_assert(!memq_evbuffer_oldest(NULL, NULL));
    ck_assert_ptr_null(memq_evbuffer_get(NULL));
    memq_evbuffer_free(NULL);
    ck_assert_uint_eq(stats_of(t).participants, 0);

    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = MIB;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    memq_tracker *threaded;
    ck_assert_int_eq(memq_tracker_new(&threaded, &cfg), 0);
    memq_account *ta;
    ck_assert_int_eq(memq_account_new(threaded, NULL, &ta), 0);
    ck_assert_int_eq(memq_evbuffer_new(ta, NULL, NULL, &b), MEMQ_EINVAL);
    memq_account_unref(ta);
    memq_tracker_free(threaded);

    memq_account_unref(a);
    bufferevent_free(bev);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_buffer_claims_what_it_holds_and_one_chain_at_least)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    struct evbuffer *buf = memq_evbuffer_get(b);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 100), 0);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 1024); /* libevent's smallest chain */
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 2000), 0);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 2100);
    ck_assert_uint_eq(memq_account_used(a), 2100);
    evbuffer_drain(buf, 2000);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 1024);
    evbuffer_drain(buf, 100);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_int_eq(memq_evbuffer_add(b, NULL, 0), 0);
    ck_assert_int_eq(memq_evbuffer_add(b, NULL, 1), MEMQ_EINVAL);
    memq_evbuffer_free(b);
    ck_assert_uint_eq(stats_of(t).participants, 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* About 1 MiB through memq_evbuffer_add(), in four calls: full 64 KiB
 * chains, and each call's rest in chains of decreasing powers of two, so
 * what libevent allocates is what is claimed plus a few KiB a call.  The
 * same bytes in one evbuffer_add() take a 2 MiB chain. */
START_TEST(test_claims_follow_libevents_allocations_within_one_chain)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    size_t before = atomic_load(&lev_live);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(memq_evbuffer_add(b, pattern, 256 * KIB + 1000), 0);
    size_t allocated = atomic_load(&lev_live) - before;
    size_t claimed = memq_evbuffer_claimed(b);
    ck_assert_uint_eq(claimed, 4 * (256 * KIB + 1000));
    ck_assert_uint_ge(allocated, claimed);
    ck_assert_uint_le(allocated, claimed + 4 * 2048 + 4 * 8 * 256);

    /* 100,000 bytes: one 64 KiB chain and chains of 32, 2 and 1 KiB. */
    memq_evbuffer *mid = owned_make(a);
    before = atomic_load(&lev_live);
    ck_assert_int_eq(memq_evbuffer_add(mid, pattern, 100000), 0);
    ck_assert_uint_le(atomic_load(&lev_live) - before, (64 + 32 + 2 + 1) * KIB);
    ck_assert_uint_eq(memq_evbuffer_claimed(mid), 100000);
    memq_evbuffer_free(mid);

    struct evbuffer *plain = evbuffer_new();
    before = atomic_load(&lev_live);
    evbuffer_add(plain, pattern, MIB);
    ck_assert_uint_ge(atomic_load(&lev_live) - before, 2 * MIB);
    evbuffer_free(plain);

    /* Small additions fill the chain they share. */
    memq_evbuffer *s = owned_make(a);
    before = atomic_load(&lev_live);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(memq_evbuffer_add(s, pattern, 100), 0);
    ck_assert_uint_eq(atomic_load(&lev_live) - before, 1024);
    ck_assert_uint_eq(memq_evbuffer_claimed(s), 1024);
    memq_evbuffer_free(s);
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_an_addition_is_all_or_nothing)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 5000), 0);
    for (int k = 1; k <= 64; k++) {
        atomic_store(&lev_fail_in, k);
        int rc = memq_evbuffer_add(b, pattern, MIB);
        bool failed = atomic_load(&lev_fail_in) == 0;
        atomic_store(&lev_fail_in, 0);
        if (rc == 0) {
            ck_assert(!failed);
            break;
        }
        ck_assert_int_eq(rc, MEMQ_ENOMEM);
        ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 5000);
        ck_assert_uint_eq(memq_evbuffer_claimed(b), 5000);
    }
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 5000 + MIB);
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* Bytes a bufferevent's buffers hold before they are tracked are claimed
 * at once (at least one chain), stamped now, and released as they go. */
START_TEST(test_tracking_a_buffer_that_holds_data_claims_it_at_once)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    ck_assert_int_eq(evbuffer_add(bufferevent_get_output(bev), pattern, 100 * KIB), 0);
    /* The input's end is the bufferevent's: thawed as for its own read. */
    evbuffer_unfreeze(bufferevent_get_input(bev), 0);
    ck_assert_int_eq(evbuffer_add(bufferevent_get_input(bev), pattern, 10), 0);
    evbuffer_freeze(bufferevent_get_input(bev), 0);
    fake_set(7 * SECOND);
    memq_evbuffer *out = NULL, *in = NULL;
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &out),
                     0);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_INPUT, NULL, NULL, &in),
                     0);
    ck_assert_uint_eq(memq_evbuffer_claimed(out), 100 * KIB);
    ck_assert_uint_eq(memq_evbuffer_claimed(in), 1024); /* one chain at least */
    ck_assert_uint_eq(memq_account_used(a), 100 * KIB + 1024);
    memq_time when = 0;
    ck_assert(memq_evbuffer_oldest(out, &when));
    ck_assert_uint_eq(when, 7 * SECOND);
    ck_assert(memq_evbuffer_oldest(out, NULL));
    ck_assert(memq_evbuffer_oldest(in, &when));
    ck_assert_uint_eq(when, 7 * SECOND);

    /* The output's start is the bufferevent's: thawed as for its write. */
    struct evbuffer *output = bufferevent_get_output(bev);
    fake_set(8 * SECOND);
    evbuffer_add(output, pattern, 100); /* newer bytes */
    evbuffer_unfreeze(output, 1);
    evbuffer_drain(output, 100 * KIB);
    ck_assert_uint_eq(memq_evbuffer_claimed(out), 1024);
    ck_assert(memq_evbuffer_oldest(out, &when));
    ck_assert_uint_eq(when, 8 * SECOND);
    evbuffer_drain(output, 100);
    evbuffer_freeze(output, 1);
    evbuffer_drain(bufferevent_get_input(bev), 10);
    ck_assert_uint_eq(memq_account_used(a), 0);
    memq_evbuffer_free(out);
    memq_evbuffer_free(in);
    bufferevent_free(bev);
    event_base_free(base);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* An account closed by reclamation, then one whose tracker was freed:
 * nothing can be tracked on them, and nothing is left behind (the
 * evbuffer memq_evbuffer_new() made is freed, bev is not referenced). */
START_TEST(test_a_closed_or_shut_down_account_refuses_new_buffers)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 2 * MIB), 0);
    ck_assert_int_eq(reclaim_all(t), 0);
    ck_assert(memq_account_closed(a));
    memq_evbuffer_free(b);

    size_t before = atomic_load(&lev_live);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    evbuffer_add(bufferevent_get_output(bev), pattern, 100);
    size_t live = atomic_load(&lev_live);
    memq_evbuffer *got = (memq_evbuffer *)&got;
    ck_assert_int_eq(memq_evbuffer_new(a, NULL, NULL, &got), MEMQ_ECLOSED);
    ck_assert_int_eq(
        memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &got), MEMQ_ECLOSED);
    ck_assert_ptr_eq(got, (memq_evbuffer *)&got);
    ck_assert_uint_eq(atomic_load(&lev_live), live);
    ck_assert_uint_eq(stats_of(t).participants, 0);
    memq_account_unref(a);

    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_tracker_free(t); /* the account keeps its memory */
    ck_assert_int_eq(memq_evbuffer_new(a, NULL, NULL, &got), MEMQ_ESHUTDOWN);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_INPUT, NULL, NULL, &got),
                     MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(got, (memq_evbuffer *)&got);
    ck_assert_uint_eq(atomic_load(&lev_live), live);
    memq_account_unref(a);
    bufferevent_free(bev); /* no reference was kept: finalized with the base */
    event_base_free(base);
    ck_assert_uint_eq(atomic_load(&lev_live), before);
}
END_TEST

/* Track an owned buffer, and a bufferevent's output holding data, with
 * the k-th allocation failing; returns whether one failed, after checking
 * that a failure left nothing behind. */
typedef struct sweep {
    memq_tracker *t;
    memq_account *a;
    struct bufferevent *bev;
    bool lev_only; /* fail libevent's allocations only (lev_fail_in) */
} sweep;

static bool new_buffers_with_failure(sweep *sw, unsigned k, int *failures)
{
    bool any = false;
    for (int kind = 0; kind < 2; kind++) {
        size_t live = atomic_load(&lev_live), held = evbuffer_get_length(bufferevent_get_output(sw->bev));
        memq_evbuffer *b = (memq_evbuffer *)&b;
        int rc;
        bool failed;
        if (sw->lev_only)
            atomic_store(&lev_fail_in, (int)k);
        else
            fail_arm(k);
        if (kind == 0)
            rc = memq_evbuffer_new(sw->a, count_collapse, NULL, &b);
        else
            rc = memq_evbuffer_new_bufferevent(sw->a, sw->bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &b);
        if (sw->lev_only) {
            failed = atomic_load(&lev_fail_in) == 0;
            atomic_store(&lev_fail_in, 0);
        } else {
            failed = fail_disarm();
        }
        if (!failed) {
            ck_assert_int_eq(rc, 0);
            memq_evbuffer_free(b);
            continue;
        }
        any = true;
        failures[kind]++;
        ck_assert_msg(rc == MEMQ_ENOMEM, "kind %d, allocation %u: %d", kind, k, rc);
        ck_assert_ptr_eq(b, (memq_evbuffer *)&b);
        ck_assert_uint_eq(atomic_load(&lev_live), live);
        ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_output(sw->bev)), held);
        memq_stats st = stats_of(sw->t);
        ck_assert_uint_eq(st.participants, 0);
        ck_assert_uint_eq(st.used, 0);
    }
    return any;
}

static void sweep_new_buffers(bool lev_only, int min_owned, int min_bev)
{
    sweep sw = {.lev_only = lev_only};
    sw.t = tracker_make(64 * MIB, 0, false);
    ck_assert_int_eq(memq_account_new(sw.t, NULL, &sw.a), 0);
    struct event_base *base = event_base_new();
    sw.bev = bufferevent_socket_new(base, -1, 0);
    evbuffer_add(bufferevent_get_output(sw.bev), pattern, 3000);
    int failures[2] = {0, 0};
    unsigned k = 1;
    while (k < 100 && new_buffers_with_failure(&sw, k, failures))
        k++;
    ck_assert_uint_lt(k, 100);
    ck_assert_int_ge(failures[0], min_owned);
    ck_assert_int_ge(failures[1], min_bev);
    /* With memory, both are tracked: the bufferevent's 3000 bytes too. */
    memq_evbuffer *b = NULL;
    ck_assert_int_eq(
        memq_evbuffer_new_bufferevent(sw.a, sw.bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &b), 0);
    ck_assert_uint_eq(memq_account_used(sw.a), 3000);
    memq_evbuffer_free(b);
    bufferevent_free(sw.bev);
    event_base_free(base);
    memq_account_unref(sw.a);
    memq_tracker_free(sw.t);
}

/* libevent's allocations (the evbuffer, the callback entry) failing: the
 * new buffer fails with MEMQ_ENOMEM and leaves nothing behind. */
START_TEST(test_a_new_buffer_fails_cleanly_when_libevent_cannot_allocate)
{
    sweep_new_buffers(true, 2, 1);
}
END_TEST

/* Every allocation, ours (the tracked buffer, its participation, the age
 * index's entry) and libevent's, failing in turn. */
START_TEST(test_a_new_buffer_fails_cleanly_whichever_allocation_fails)
{
    if (!failures_work()) {
        fprintf(stderr, "check_evbuffer: test_a_new_buffer_fails_cleanly_whichever_allocation_fails "
                        "skipped: malloc is not this program's (valgrind)\n");
        return;
    }
    sweep_new_buffers(false, 4, 3);
}
END_TEST

/* A small addition libevent cannot store: refused whole, nothing claimed,
 * and the buffer goes on. */
START_TEST(test_a_small_addition_libevent_cannot_store_is_refused_whole)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    atomic_store(&lev_fail_in, 1); /* its first chain */
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 100), MEMQ_ENOMEM);
    ck_assert_int_eq(atomic_load(&lev_fail_in), 0);
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 0);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert(!memq_evbuffer_closed(b));
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 100), 0);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 1024);
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Ages
 * ---------------------------------------------------------------------- */

START_TEST(test_ages_follow_tors_rule)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    struct evbuffer *buf = memq_evbuffer_get(b);
    memq_time when = 0;
    ck_assert(!memq_evbuffer_oldest(b, &when));

    fake_set(10 * SECOND);
    evbuffer_add(buf, pattern, 100); /* libevent's own call: seen too */
    fake_set(11 * SECOND);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 100), 0);
    fake_set(12 * SECOND);
    evbuffer_add_printf(buf, "%s", "a line libevent formats");
    ck_assert(memq_evbuffer_oldest(b, &when));
    ck_assert_uint_eq(when, 10 * SECOND);

    evbuffer_drain(buf, 60); /* a partly drained run keeps its stamp */
    ck_assert(memq_evbuffer_oldest(b, &when));
    ck_assert_uint_eq(when, 10 * SECOND);
    evbuffer_drain(buf, 40);
    ck_assert(memq_evbuffer_oldest(b, &when));
    ck_assert_uint_eq(when, 11 * SECOND);
    evbuffer_drain(buf, 100);
    ck_assert(memq_evbuffer_oldest(b, &when));
    ck_assert_uint_eq(when, 12 * SECOND);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    ck_assert(!memq_evbuffer_oldest(b, &when));
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_with_every_mark_in_use_the_age_is_never_younger_than_the_truth)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    struct evbuffer *buf = memq_evbuffer_get(b);
    for (int i = 0; i < 40; i++) {
        fake_set((memq_time)(i + 1) * SECOND);
        ck_assert_int_eq(memq_evbuffer_add(b, pattern, 10), 0);
    }
    for (int i = 0; i < 40; i++) {
        memq_time when;
        ck_assert(memq_evbuffer_oldest(b, &when));
        ck_assert_uint_le(when, (memq_time)(i + 1) * SECOND); /* at most the truth */
        evbuffer_drain(buf, 10);
    }
    ck_assert(!memq_evbuffer_oldest(b, NULL));
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * libevent's own writes
 * ---------------------------------------------------------------------- */

START_TEST(test_libevents_own_writes_and_moves_are_seen)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    struct evbuffer *buf = memq_evbuffer_get(b);
    evbuffer_add_printf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 5000);
    size_t headers = evbuffer_get_length(buf);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 1024);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, pattern, 5000);
    evbuffer_add_buffer(buf, body); /* chains moved in */
    ck_assert_uint_eq(memq_evbuffer_claimed(b), headers + 5000);
    evbuffer_add_buffer(body, buf); /* and out */
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    evbuffer_free(body);
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

static bool output_empty(void *arg)
{
    return evbuffer_get_length(bufferevent_get_output(arg)) == 0;
}

START_TEST(test_a_bufferevents_reads_and_writes_are_seen)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    struct event_base *base = event_base_new();
    int sv[2];
    socket_pair(sv);
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    memq_evbuffer *out = NULL, *in = NULL;
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &out),
                     0);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_INPUT, NULL, NULL, &in),
                     0);
    ck_assert_ptr_eq(memq_evbuffer_get(out), bufferevent_get_output(bev));
    ck_assert_int_eq(memq_evbuffer_add(in, "x", 1), MEMQ_EINVAL); /* input: libevent's */

    ck_assert_int_eq(bufferevent_write(bev, pattern, 200 * KIB), 0);
    ck_assert_uint_eq(memq_evbuffer_claimed(out), 200 * KIB);
    /* The peer reads everything: the bufferevent's writes release it. */
    for (int i = 0; i < 2000 && evbuffer_get_length(bufferevent_get_output(bev)) > 0; i++) {
        drain_socket(sv[1]);
        loop_until(base, output_empty, bev, 2);
    }
    drain_socket(sv[1]);
    ck_assert_uint_eq(memq_evbuffer_claimed(out), 0);

    ck_assert_int_eq((int)send(sv[1], pattern, 3000, 0), 3000);
    for (int i = 0; i < 500 && memq_evbuffer_claimed(in) == 0; i++)
        loop_turns(base, 1);
    ck_assert_uint_eq(memq_evbuffer_claimed(in), 3000); /* the bufferevent's read */
    memq_evbuffer_free(in);
    memq_evbuffer_free(out);
    bufferevent_free(bev);
    close(sv[1]);
    event_base_free(base);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Collapse
 * ---------------------------------------------------------------------- */

START_TEST(test_reclaim_drains_the_buffer_and_tells_the_owner_once)
{
    memq_tracker *t = tracker_make(MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = NULL;
    atomic_store(&collapses, 0);
    collapse_saw_claimed = 0;
    ck_assert_int_eq(memq_evbuffer_new(a, count_collapse, &b, &b), 0);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 900 * KIB), 0);
    fake_set(5 * SECOND);
    holder young;
    holder_init(&young, t, NULL, 'y');
    holder_claim(&young, 200 * KIB, 5 * SECOND);
    ck_assert_int_eq(reclaim_all(t), 0);

    ck_assert(memq_evbuffer_closed(b));
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 0);
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(collapse_saw_claimed, 900 * KIB); /* what it gave up */
    ck_assert(memq_account_closed(a));
    ck_assert_int_eq(atomic_load(&young.reclaims), 0);
    ck_assert_uint_eq(memq_tracker_used(t), 200 * KIB);
    /* Closed: nothing more gets in, and the owner is not told again. */
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 10), MEMQ_ECLOSED);
    ck_assert_int_ne(evbuffer_add(memq_evbuffer_get(b), pattern, 10), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_evbuffer_free(b);
    holder_fini(&young);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* The account's oldest data is a sibling participant's, which answers
 * COLLAPSING: the buffer hears of it by a closed notice and frees what it
 * holds in the same drive.  (The core asks the participant registered
 * last first, so the sibling is registered after the buffer.) */
START_TEST(test_a_closed_notice_frees_the_buffer)
{
    memq_tracker *t = tracker_make(MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    fake_set(9 * SECOND);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 500 * KIB), 0);
    holder sibling;
    holder_init(&sibling, t, a, 's');
    holder_claim(&sibling, 600 * KIB, SECOND);
    ck_assert_int_eq(reclaim_all(t), 0);
    ck_assert_int_eq(atomic_load(&sibling.reclaims), 1);
    ck_assert_int_eq(atomic_load(&sibling.notices), 0);
    ck_assert(memq_account_closed(a));
    ck_assert(memq_evbuffer_closed(b));
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(memq_tracker_used(t), 0);
    memq_evbuffer_free(b);
    holder_fini(&sibling);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_bufferevents_frozen_output_is_drained_and_stays_frozen)
{
    memq_tracker *t = tracker_make(MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    struct event_base *base = event_base_new();
    int sv[2];
    socket_pair(sv);
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_enable(bev, EV_WRITE);
    memq_evbuffer *out = NULL;
    atomic_store(&collapses, 0);
    ck_assert_int_eq(
        memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, count_collapse, NULL, &out), 0);
    ck_assert_int_eq(memq_evbuffer_add(out, pattern, 2 * MIB), 0); /* the peer never reads */
    loop_turns(base, 3);
    size_t held = evbuffer_get_length(bufferevent_get_output(bev));
    ck_assert_uint_gt(held, MIB);
    ck_assert_uint_eq(memq_evbuffer_claimed(out), held);
    ck_assert_int_eq(reclaim_all(t), 0);
    ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_output(bev)), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    /* Still frozen at its start: only the bufferevent drains it. */
    ck_assert_int_eq(evbuffer_add(bufferevent_get_output(bev), "x", 1), 0);
    ck_assert_int_ne(evbuffer_drain(bufferevent_get_output(bev), 1), 0);
    loop_turns(base, 2);
    memq_evbuffer_free(out);
    bufferevent_free(bev);
    close(sv[1]);
    event_base_free(base);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_claim_failing_in_the_callback_stops_and_add_settles)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 100), 0);
    memq_account_unref(a); /* closed some other way */
    evbuffer_add(memq_evbuffer_get(b), pattern, 100); /* the claim fails inside */
    ck_assert(memq_evbuffer_closed(b));
    ck_assert_int_eq(atomic_load(&collapses), 0); /* not inside libevent's call */
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 200);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 1), MEMQ_ECLOSED);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 0);
    ck_assert_int_eq(memq_evbuffer_add(b, NULL, 0), MEMQ_ECLOSED);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_evbuffer_free(b);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_an_empty_add_detects_a_closed_account)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    memq_tracker_free(t); /* the tracker shut down */
    ck_assert_int_eq(memq_evbuffer_add(b, NULL, 0), MEMQ_ECLOSED);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_evbuffer_free(b);
    memq_account_unref(a);
}
END_TEST

/* A clock that drops an account's last reference at its next read, once
 * armed: the buffer's callback reads it between the claim of 0 bytes that
 * proves the account open and the claim of the bytes, the moment another
 * thread could close the account. */
static memq_account *_Atomic close_at_read;

static memq_time closing_clock(void *ctx)
{
    (void)ctx;
    memq_account *a = atomic_exchange(&close_at_read, NULL);
    if (a != NULL)
        memq_account_unref(a);
    return atomic_load(&fake_now);
}

START_TEST(test_an_account_closed_while_the_callback_claims_stops_the_buffer)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = MIB;
    cfg.cache_max = 0;
    cfg.reclaim_mode = MEMQ_RECLAIM_MANUAL;
    cfg.clock = closing_clock;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_evbuffer *b = owned_make(a);
    atomic_store(&close_at_read, a); /* the only reference */
    evbuffer_add(memq_evbuffer_get(b), pattern, 100); /* the claim fails inside */
    ck_assert_ptr_null(atomic_load(&close_at_read));
    ck_assert(memq_evbuffer_closed(b));
    ck_assert_uint_eq(memq_evbuffer_claimed(b), 0);
    ck_assert(!memq_evbuffer_oldest(b, NULL));
    ck_assert_uint_eq(memq_tracker_used(t), 0);
    ck_assert_int_eq(atomic_load(&collapses), 0); /* not inside libevent's call */
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 100);
    ck_assert_int_eq(memq_evbuffer_add(b, pattern, 1), MEMQ_ECLOSED);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(b)), 0);
    memq_evbuffer_free(b);
    memq_tracker_free(t);
}
END_TEST

/* A bufferevent's output whose account was closed (its last reference
 * dropped): the next change stops it, the next memq_evbuffer_add() drains
 * it (thawing its frozen start) and says so; its end stays open, as the
 * bufferevent's, and nothing is tracked any more. */
START_TEST(test_a_bufferevents_output_whose_account_closed_is_drained_at_the_next_add)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    struct evbuffer *output = bufferevent_get_output(bev);
    memq_evbuffer *out = NULL;
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &out),
                     0);
    ck_assert_int_eq(memq_evbuffer_add(out, pattern, 100), 0);
    memq_account_unref(a); /* closed some other way */
    ck_assert_int_eq(evbuffer_add(output, pattern, 100), 0); /* the claim fails inside */
    ck_assert(memq_evbuffer_closed(out));
    ck_assert_uint_eq(evbuffer_get_length(output), 200);
    ck_assert_int_eq(memq_evbuffer_add(out, pattern, 1), MEMQ_ECLOSED);
    ck_assert_uint_eq(evbuffer_get_length(output), 0);
    ck_assert_int_eq(evbuffer_add(output, "x", 1), 0); /* its end is not frozen */
    ck_assert_int_ne(evbuffer_drain(output, 1), 0);     /* its start is, again */
    ck_assert_uint_eq(memq_evbuffer_claimed(out), 0);
    ck_assert_uint_eq(memq_tracker_used(t), 0);
    memq_evbuffer_free(out);
    bufferevent_free(bev);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* on_collapse called by a reclaim asks each buffer of the account for the
 * age of what it held: the one that held data tells its oldest byte's
 * stamp (also with a NULL when), the empty one has none. */
typedef struct asked {
    memq_evbuffer *b;
    bool known, known_null;
    memq_time when;
    size_t claimed;
} asked;

static void ask_on_collapse(void *ctx)
{
    asked *q = ctx;
    q->when = 1;
    q->known = memq_evbuffer_oldest(q->b, &q->when);
    q->known_null = memq_evbuffer_oldest(q->b, NULL);
    q->claimed = memq_evbuffer_claimed(q->b);
}

START_TEST(test_on_collapse_is_told_the_age_of_what_the_buffer_held)
{
    memq_tracker *t = tracker_make(MIB, 0, true);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    asked full = {0}, empty = {0};
    ck_assert_int_eq(memq_evbuffer_new(a, ask_on_collapse, &full, &full.b), 0);
    ck_assert_int_eq(memq_evbuffer_new(a, ask_on_collapse, &empty, &empty.b), 0);
    memq_evbuffer *untold = NULL; /* no on_collapse: collapses all the same */
    ck_assert_int_eq(memq_evbuffer_new(a, NULL, NULL, &untold), 0);
    ck_assert_int_eq(memq_evbuffer_add(untold, pattern, 100), 0);
    fake_set(3 * SECOND);
    ck_assert_int_eq(memq_evbuffer_add(full.b, pattern, 600 * KIB), 0);
    fake_set(4 * SECOND);
    ck_assert_int_eq(memq_evbuffer_add(full.b, pattern, 600 * KIB), 0); /* crosses max */
    fake_set(5 * SECOND);
    ck_assert_int_eq(reclaim_all(t), 0);
    ck_assert(memq_evbuffer_closed(full.b));
    ck_assert(memq_evbuffer_closed(empty.b));
    ck_assert(full.known);
    ck_assert(full.known_null);
    ck_assert_uint_eq(full.when, 3 * SECOND);
    ck_assert_uint_eq(full.claimed, 1200 * KIB);
    ck_assert(!empty.known);
    ck_assert(!empty.known_null);
    ck_assert_uint_eq(empty.when, 1); /* untouched */
    ck_assert_uint_eq(empty.claimed, 0);
    ck_assert(memq_evbuffer_closed(untold));
    ck_assert_uint_eq(evbuffer_get_length(memq_evbuffer_get(untold)), 0);
    ck_assert_uint_eq(memq_tracker_used(t), 0);
    /* Afterwards, a closed buffer has no age. */
    ck_assert(!memq_evbuffer_oldest(full.b, NULL));
    memq_evbuffer_free(untold);
    memq_evbuffer_free(full.b);
    memq_evbuffer_free(empty.b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Lifetimes
 * ---------------------------------------------------------------------- */

START_TEST(test_a_bufferevent_and_its_tracked_buffer_may_be_freed_in_either_order)
{
    memq_tracker *t = tracker_make(64 * MIB, 0, false);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    struct event_base *base = event_base_new();
    for (int order = 0; order < 2; order++) {
        int sv[2];
        socket_pair(sv);
        struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        memq_evbuffer *out = NULL, *in = NULL;
        ck_assert_int_eq(
            memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_OUTPUT, NULL, NULL, &out), 0);
        ck_assert_int_eq(
            memq_evbuffer_new_bufferevent(a, bev, MEMQ_EVBUFFER_INPUT, NULL, NULL, &in), 0);
        ck_assert_int_eq(memq_evbuffer_add(out, pattern, 300 * KIB), 0);
        send(sv[1], pattern, 1000, 0);
        loop_turns(base, 3);
        if (order == 0) {
            bufferevent_free(bev); /* its owner lets go first */
            loop_turns(base, 2);
            ck_assert_uint_gt(memq_evbuffer_claimed(out), 0);
            evbuffer_add(memq_evbuffer_get(out), pattern, 10); /* still valid */
            memq_evbuffer_free(out);
            memq_evbuffer_free(in); /* the last reference: finalized */
        } else {
            memq_evbuffer_free(out);
            memq_evbuffer_free(in);
            bufferevent_free(bev);
        }
        loop_turns(base, 2);
        ck_assert_uint_eq(memq_account_used(a), 0);
        close(sv[1]);
    }
    event_base_free(base);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

static memq_evbuffer *free_me;
static struct bufferevent *free_bev;

static void free_on_collapse(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&collapses, 1);
    memq_evbuffer_free(free_me);
    if (free_bev != NULL)
        bufferevent_free(free_bev);
}

START_TEST(test_on_collapse_may_free_the_buffer_and_its_bufferevent)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = event_base_new();
    for (int kind = 0; kind < 2; kind++) {
        memq_account *a;
        ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
        int sv[2] = {-1, -1};
        free_bev = NULL;
        atomic_store(&collapses, 0);
        if (kind == 0) {
            ck_assert_int_eq(memq_evbuffer_new(a, free_on_collapse, NULL, &free_me), 0);
        } else {
            socket_pair(sv);
            free_bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
            ck_assert_int_eq(memq_evbuffer_new_bufferevent(a, free_bev, MEMQ_EVBUFFER_OUTPUT,
                                                           free_on_collapse, NULL, &free_me),
                             0);
        }
        ck_assert_int_eq(memq_evbuffer_add(free_me, pattern, 2 * MIB), 0);
        ck_assert_int_eq(reclaim_all(t), 0);
        ck_assert_int_eq(atomic_load(&collapses), 1);
        ck_assert_uint_eq(memq_tracker_used(t), 0);
        loop_turns(base, 2); /* the bufferevent's finalizer */
        if (sv[1] >= 0)
            close(sv[1]);
        memq_account_unref(a);
    }
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* A daemon's connection: input and output tracked on its account, and a
 * close path that frees both, the bufferevent, the account and the
 * connection, run from on_collapse (the pattern doc/integration.md shows
 * and relayd uses). */
typedef struct conn {
    struct bufferevent *bev;
    memq_account *account;
    memq_evbuffer *in, *out;
} conn;

static atomic_int conns_closed;

static void conn_close_now(void *ctx)
{
    conn *c = ctx;
    memq_evbuffer_free(c->in);
    memq_evbuffer_free(c->out);
    bufferevent_free(c->bev);
    memq_account_unref(c->account);
    free(c);
    atomic_fetch_add(&conns_closed, 1);
}

START_TEST(test_a_connection_may_be_freed_whole_from_on_collapse)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = event_base_new();
    int sv[2];
    socket_pair(sv);
    conn *c = calloc(1, sizeof *c);
    c->bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    ck_assert_int_eq(memq_account_new(t, NULL, &c->account), 0);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(c->account, c->bev, MEMQ_EVBUFFER_INPUT,
                                                   conn_close_now, c, &c->in),
                     0);
    ck_assert_int_eq(memq_evbuffer_new_bufferevent(c->account, c->bev, MEMQ_EVBUFFER_OUTPUT,
                                                   conn_close_now, c, &c->out),
                     0);
    send(sv[1], pattern, 2000, 0);
    ck_assert_int_eq(memq_evbuffer_add(c->out, pattern, 2 * MIB), 0);
    loop_turns(base, 3);
    ck_assert_uint_gt(memq_tracker_used(t), MIB);
    atomic_store(&conns_closed, 0);
    ck_assert_int_eq(reclaim_all(t), 0);
    ck_assert_int_eq(atomic_load(&conns_closed), 1);
    ck_assert_uint_eq(memq_tracker_used(t), 0);
    memq_stats st = stats_of(t);
    ck_assert_uint_eq(st.participants, 0);
    ck_assert_uint_eq(st.accounts, 0);
    loop_turns(base, 2); /* the finalizer closes the socket */
    drain_socket(sv[1]);
    char byte;
    ck_assert_int_eq((int)recv(sv[1], &byte, 1, MSG_DONTWAIT), 0); /* closed: end of file */
    close(sv[1]);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

static Suite *evbuffer_suite(void)
{
    Suite *s = suite_create("evbuffer");
    TCase *basics = tcase_create("basics");
    TCase *ages = tcase_create("ages");
    TCase *writes = tcase_create("writes");
    TCase *collapse = tcase_create("collapse");
    TCase *lifetimes = tcase_create("lifetimes");

    tcase_add_test(basics, test_null_arguments_and_thread_mode_are_rejected);
    tcase_add_test(basics, test_a_buffer_claims_what_it_holds_and_one_chain_at_least);
    tcase_add_test(basics, test_claims_follow_libevents_allocations_within_one_chain);
    tcase_add_test(basics, test_an_addition_is_all_or_nothing);
    tcase_add_test(basics, test_tracking_a_buffer_that_holds_data_claims_it_at_once);
    tcase_add_test(basics, test_a_closed_or_shut_down_account_refuses_new_buffers);
    tcase_add_test(basics, test_a_new_buffer_fails_cleanly_when_libevent_cannot_allocate);
    tcase_add_test(basics, test_a_new_buffer_fails_cleanly_whichever_allocation_fails);
    tcase_add_test(basics, test_a_small_addition_libevent_cannot_store_is_refused_whole);
    suite_add_tcase(s, basics);

    tcase_add_test(ages, test_ages_follow_tors_rule);
    tcase_add_test(ages, test_with_every_mark_in_use_the_age_is_never_younger_than_the_truth);
    suite_add_tcase(s, ages);

    tcase_set_timeout(writes, 30);
    tcase_add_test(writes, test_libevents_own_writes_and_moves_are_seen);
    tcase_add_test(writes, test_a_bufferevents_reads_and_writes_are_seen);
    suite_add_tcase(s, writes);

    tcase_add_test(collapse, test_reclaim_drains_the_buffer_and_tells_the_owner_once);
    tcase_add_test(collapse, test_a_closed_notice_frees_the_buffer);
    tcase_add_test(collapse, test_a_bufferevents_frozen_output_is_drained_and_stays_frozen);
    tcase_add_test(collapse, test_a_claim_failing_in_the_callback_stops_and_add_settles);
    tcase_add_test(collapse, test_an_empty_add_detects_a_closed_account);
    tcase_add_test(collapse, test_an_account_closed_while_the_callback_claims_stops_the_buffer);
    tcase_add_test(collapse,
                   test_a_bufferevents_output_whose_account_closed_is_drained_at_the_next_add);
    tcase_add_test(collapse, test_on_collapse_is_told_the_age_of_what_the_buffer_held);
    suite_add_tcase(s, collapse);

    tcase_add_test(lifetimes,
                   test_a_bufferevent_and_its_tracked_buffer_may_be_freed_in_either_order);
    tcase_add_test(lifetimes, test_on_collapse_may_free_the_buffer_and_its_bufferevent);
    tcase_add_test(lifetimes, test_a_connection_may_be_freed_whole_from_on_collapse);
    suite_add_tcase(s, lifetimes);
    return s;
}

int main(void)
{
    event_set_mem_functions(lev_malloc, lev_realloc, lev_free);
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (unsigned char)"0123456789abcdef"[i % 16];
    SRunner *sr = srunner_create(evbuffer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    libevent_global_shutdown();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
