/*
 * check_buf.c - memq_buf: chunk claims, Tor's age rules, collapse, and a
 * writer racing the reclaim thread.
 */
#include "container_helpers.h"

#include "internal.h" /* the age index, to compare its key with the stamps */

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* The byte at stream offset i, so that content can be checked anywhere. */
static unsigned char stream_byte(size_t i)
{
    return (unsigned char)((i * 131u + 7u) >> 3);
}

/* Check's assertions record a mark point each (a write in fork mode), so
 * byte-by-byte comparisons count mismatches and assert once. */
static size_t stream_mismatches(const unsigned char *out, size_t offset, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += out[i] != stream_byte(offset + i);
    return bad;
}

static void add_stream(memq_buf *b, size_t *written, size_t n)
{
    unsigned char *data = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < n; i++)
        data[i] = stream_byte(*written + i);
    ck_assert_int_eq(memq_buf_add(b, data, n), 0);
    *written += n;
    free(data);
}

static memq_buf *buf_make(memq_account *a, atomic_int *collapses)
{
    memq_buf *b = NULL;
    ck_assert_int_eq(memq_buf_new(a, collapses ? count_collapse : NULL, collapses, &b), 0);
    ck_assert_ptr_nonnull(b);
    return b;
}

/* Add one byte at a time until the buffer allocates a new chunk: returns
 * how many bytes the tail chunk had room for.  Lets the tests find chunk
 * boundaries without knowing the chunk sizes. */
static size_t fill_tail_chunk(memq_buf *b, size_t *written)
{
    size_t before = memq_buf_allocated(b), n = 0;
    for (;;) {
        add_stream(b, written, 1);
        if (memq_buf_allocated(b) != before)
            return n;
        n++;
        ck_assert_uint_lt(n, 1024 * KIB);
    }
}

/* ======================================================================
 * Basics
 * ====================================================================== */

START_TEST(test_empty_buffer_claims_nothing_and_has_no_age)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    memq_time when = 12345;

    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert(!memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 12345);
    ck_assert(!memq_buf_closed(b));
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_null_arguments_are_rejected)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    memq_buf *untouched = (memq_buf *)&untouched;
    char byte;

    ck_assert_int_eq(memq_buf_new(NULL, NULL, NULL, &untouched), MEMQ_EINVAL);
    ck_assert_int_eq(memq_buf_new(a, NULL, NULL, NULL), MEMQ_EINVAL);
    ck_assert_ptr_eq(untouched, (memq_buf *)&untouched);
    ck_assert_int_eq(memq_buf_add(NULL, "x", 1), MEMQ_EINVAL);
    ck_assert_int_eq(memq_buf_add(b, NULL, 1), MEMQ_EINVAL);
    ck_assert_int_eq(memq_buf_add(b, NULL, 0), 0);
    ck_assert_uint_eq(memq_buf_peek(NULL, &byte, 1), 0);
    ck_assert_uint_eq(memq_buf_drain(NULL, 1), 0);
    ck_assert_uint_eq(memq_buf_len(NULL), 0);
    ck_assert(!memq_buf_oldest(NULL, NULL));
    ck_assert(memq_buf_closed(NULL));
    memq_buf_free(NULL);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_add_of_an_overflowing_size_fails_and_changes_nothing)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;

    add_stream(b, &written, 10);
    size_t allocated = memq_buf_allocated(b);
    ck_assert_int_eq(memq_buf_add(b, "x", SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_buf_len(b), 10);
    ck_assert_uint_eq(memq_buf_allocated(b), allocated);
    ck_assert_uint_eq(memq_account_used(a), allocated);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_peek_copies_the_front_without_removing_it)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    char out[16] = {0};

    ck_assert_int_eq(memq_buf_add(b, "hello, ", 7), 0);
    ck_assert_int_eq(memq_buf_add(b, "world", 5), 0);
    ck_assert_uint_eq(memq_buf_peek(b, out, 5), 5);
    ck_assert_str_eq(out, "hello");
    ck_assert_uint_eq(memq_buf_len(b), 12);
    memset(out, 0, sizeof out);
    ck_assert_uint_eq(memq_buf_peek(b, out, sizeof out), 12);
    ck_assert_str_eq(out, "hello, world");
    ck_assert_uint_eq(memq_buf_drain(b, 7), 7);
    memset(out, 0, sizeof out);
    ck_assert_uint_eq(memq_buf_peek(b, out, sizeof out), 5);
    ck_assert_str_eq(out, "world");
    ck_assert_uint_eq(memq_buf_drain(b, 100), 5);
    ck_assert_uint_eq(memq_buf_peek(b, out, sizeof out), 0);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_bytes_cross_chunk_boundaries_intact)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0, n = 300 * KIB + 17;
    unsigned char *out = malloc(n);

    add_stream(b, &written, 5);
    add_stream(b, &written, n - 5);
    ck_assert_uint_eq(memq_buf_len(b), n);
    ck_assert_uint_eq(memq_buf_peek(b, out, n), n);
    ck_assert_uint_eq(stream_mismatches(out, 0, n), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), memq_account_used(a));
    ck_assert_uint_ge(memq_buf_allocated(b), n);
    free(out);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Claims follow the chunks
 * ====================================================================== */

START_TEST(test_a_chunk_is_freed_as_soon_as_it_is_fully_drained)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;

    add_stream(b, &written, 1);
    size_t one_chunk = memq_buf_allocated(b);
    ck_assert_uint_gt(one_chunk, 1); /* a whole chunk, header included */
    size_t room = 1 + fill_tail_chunk(b, &written); /* now two chunks */
    size_t two_chunks = memq_buf_allocated(b);
    ck_assert_uint_gt(two_chunks, one_chunk);
    ck_assert_uint_gt(one_chunk, room); /* the header is claimed too */

    ck_assert_uint_eq(memq_buf_drain(b, room - 1), room - 1);
    ck_assert_uint_eq(memq_buf_allocated(b), two_chunks); /* one byte left in it */
    ck_assert_uint_eq(memq_buf_drain(b, 1), 1);
    ck_assert_uint_eq(memq_buf_allocated(b), two_chunks - one_chunk);
    ck_assert_uint_eq(memq_account_used(a), two_chunks - one_chunk);
    ck_assert_uint_eq(memq_buf_drain(b, 1), 1);
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_tracked_use_equals_allocated_chunks_through_10000_random_operations)
{
    memq_tracker *t = tracker_make(1024 * MIB, 768 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0, read = 0;
    unsigned seed = 12345;
    unsigned char *out = malloc(200 * KIB);

    for (int step = 0; step < 10000; step++) {
        unsigned r = (unsigned)rand_r(&seed);
        size_t n;
        switch (r % 3) {
        case 0: /* small and large additions, empty ones too */
            n = (r / 3) % 8 == 0 ? (size_t)(r / 24) % (150 * KIB) : (size_t)(r / 3) % 3000;
            add_stream(b, &written, n);
            break;
        case 1:
            n = (size_t)(r / 3) % (written - read + 100);
            ck_assert_uint_eq(memq_buf_drain(b, n), n < written - read ? n : written - read);
            read += n < written - read ? n : written - read;
            break;
        default:
            n = (size_t)(r / 3) % (200 * KIB);
            size_t got = memq_buf_peek(b, out, n);
            ck_assert_uint_eq(got, n < written - read ? n : written - read);
            ck_assert_uint_eq(stream_mismatches(out, read, got), 0);
            break;
        }
        size_t len = written - read, allocated = memq_buf_allocated(b);
        ck_assert_uint_eq(memq_buf_len(b), len);
        ck_assert_uint_eq(memq_account_used(a), allocated);
        ck_assert_uint_eq(claims_of(t), allocated); /* cache_max 0: exact */
        ck_assert(len == 0 ? allocated == 0 : allocated > len);
        /* Drained chunks are freed: only the head's drained part, the
         * tail's spare room and the headers are not data. */
        ck_assert_uint_le(allocated, len + len / 16 + 2 * 64 * KIB);
    }
    free(out);
    memq_buf_free(b);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Ages (Tor's rules), with a fake clock
 * ====================================================================== */

START_TEST(test_a_chunk_is_stamped_when_its_first_byte_arrives)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;
    memq_time when = 0;

    fake_clock_set(&clock, 100);
    add_stream(b, &written, 10);
    fake_clock_set(&clock, 200);
    add_stream(b, &written, 10); /* same chunk: its stamp stays */
    ck_assert(memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 100);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_partly_drained_head_chunk_keeps_its_stamp)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;
    memq_time when = 0;

    fake_clock_set(&clock, 100);
    add_stream(b, &written, 100);
    fake_clock_set(&clock, 500);
    ck_assert_uint_eq(memq_buf_drain(b, 99), 99);
    ck_assert(memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 100);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_draining_a_whole_chunk_exposes_the_next_chunks_stamp)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;
    memq_time when = 0;

    fake_clock_set(&clock, 100);
    add_stream(b, &written, 1);
    fake_clock_set(&clock, 300); /* the byte that opens chunk two arrives at 300 */
    size_t room = 1 + fill_tail_chunk(b, &written);
    fake_clock_set(&clock, 400);
    add_stream(b, &written, 10); /* into chunk two: still 300 */

    ck_assert(memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 100);
    ck_assert_uint_eq(memq_buf_drain(b, 1), 1); /* partly: chunk one stays */
    ck_assert(memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 100);
    ck_assert_uint_eq(memq_buf_drain(b, room - 1), room - 1);
    ck_assert(memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 300);
    ck_assert_uint_eq(memq_buf_drain(b, 11), 11);
    ck_assert(!memq_buf_oldest(b, &when));
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_a_buffer_emptied_and_refilled_takes_the_new_time)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;
    memq_time when = 0;

    fake_clock_set(&clock, 100);
    add_stream(b, &written, 10);
    ck_assert_uint_eq(memq_buf_drain(b, 10), 10);
    fake_clock_set(&clock, 700);
    add_stream(b, &written, 10);
    ck_assert(memq_buf_oldest(b, &when));
    ck_assert_uint_eq(when, 700);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_the_buffer_with_the_oldest_head_chunk_is_reclaimed_first)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *young = account_make(t), *old = account_make(t);
    atomic_int young_collapses = 0, old_collapses = 0;
    memq_buf *by = buf_make(young, &young_collapses);
    memq_buf *bo = buf_make(old, &old_collapses);
    size_t wy = 0, wo = 0;

    fake_clock_set(&clock, 500);
    add_stream(by, &wy, 2 * MIB);
    fake_clock_set(&clock, 100); /* a stalled reader's data, queued earlier */
    add_stream(bo, &wo, 2 * MIB + MIB / 2);
    fake_clock_set(&clock, 900);
    ck_assert_int_eq(reclaim_until_done(t), 0);

    ck_assert_int_eq(atomic_load(&old_collapses), 1);
    ck_assert_int_eq(atomic_load(&young_collapses), 0);
    ck_assert(memq_buf_closed(bo));
    ck_assert(!memq_buf_closed(by));
    ck_assert_uint_eq(memq_buf_len(by), 2 * MIB);
    memq_buf_free(by);
    memq_buf_free(bo);
    memq_account_unref(young);
    memq_account_unref(old);
    memq_tracker_free(t);
}
END_TEST

/* An episode asks every participant of a candidate account for its oldest
 * data, an empty buffer too: it answers that it holds none, so the
 * account's age is its other data's.  Account a entered the age index
 * first (its claim is the oldest) but holds younger data than b: once
 * asked, a makes way for b, which is reclaimed alone.  An empty buffer
 * that gave an age of its own (any older than b's data) would have had a
 * reclaimed instead. */
START_TEST(test_an_empty_buffer_in_a_candidate_account_gives_it_no_age)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(1 * MIB, 700 * KIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t), *b = account_make(t);
    atomic_int collapses = 0;
    memq_buf *empty = buf_make(a, &collapses);
    collapser young, old;
    fake_clock_set(&clock, 100);
    collapser_start(&young, a, 600 * KIB, 600); /* claimed at 100, data of 600 */
    fake_clock_set(&clock, 300);
    collapser_start(&old, b, 600 * KIB, 300); /* crosses max */
    fake_clock_set(&clock, 900);
    ck_assert_int_eq(reclaim_until_done(t), 0);

    ck_assert_int_eq(old.calls, 1);
    ck_assert_int_eq(young.calls, 0);
    ck_assert(memq_account_closed(b));
    ck_assert(!memq_account_closed(a));
    ck_assert(!memq_buf_closed(empty));
    ck_assert_int_eq(atomic_load(&collapses), 0);
    ck_assert_uint_eq(claims_of(t), 600 * KIB);
    memq_buf_free(empty);
    memq_participation_free(young.p);
    memq_participation_free(old.p);
    memq_account_unref(a);
    memq_account_unref(b);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * Collapse
 * ====================================================================== */

START_TEST(test_reclaim_collapses_the_buffer_and_calls_on_collapse_once)
{
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    size_t written = 0;
    char byte;

    add_stream(b, &written, 5 * MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert(!memq_buf_oldest(b, NULL));
    ck_assert_uint_eq(claims_of(t), 0);
    ck_assert(memq_account_closed(a));

    ck_assert_int_eq(memq_buf_add(b, "x", 1), MEMQ_ECLOSED);
    ck_assert_uint_eq(memq_buf_drain(b, 1), 0);
    ck_assert_uint_eq(memq_buf_peek(b, &byte, 1), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

typedef struct self_freeing {
    memq_buf *b;
    atomic_int calls;
} self_freeing;

static void free_buf_on_collapse(void *ctx)
{
    self_freeing *s = ctx;
    atomic_fetch_add(&s->calls, 1);
    memq_buf_free(s->b);
    s->b = NULL;
}

START_TEST(test_on_collapse_may_free_the_buffer)
{
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    self_freeing s = {0};
    size_t written = 0;

    ck_assert_int_eq(memq_buf_new(a, free_buf_on_collapse, &s, &s.b), 0);
    add_stream(s.b, &written, 5 * MIB);
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_int_eq(atomic_load(&s.calls), 1);
    ck_assert_ptr_null(s.b);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_buffer_whose_account_was_unreffed_collapses_at_its_next_add)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    size_t written = 0;

    add_stream(b, &written, 100);
    memq_account_unref(a);
    ck_assert(!memq_buf_closed(b));
    ck_assert_int_eq(memq_buf_add(b, "x", 1), MEMQ_ECLOSED);
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_int_eq(memq_buf_add(b, "x", 1), MEMQ_ECLOSED);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_buf_free(b);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_buffer_whose_account_was_unreffed_collapses_at_its_next_drain)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    size_t written = 0;

    add_stream(b, &written, 100);
    memq_account_unref(a);
    ck_assert_uint_eq(memq_buf_drain(b, 10), 0);
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_buf_free(b);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_buffer_collapses_at_its_next_add_after_tracker_shutdown)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    size_t written = 0;

    add_stream(b, &written, 100);
    memq_tracker_free(t);
    ck_assert_int_eq(memq_buf_add(b, "x", 1), MEMQ_ECLOSED);
    ck_assert(memq_buf_closed(b));
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_buf_free(b);
    memq_account_unref(a);
}
END_TEST

/* ======================================================================
 * A writer against the reclaim thread
 * ====================================================================== */

START_TEST(test_a_buffer_user_and_the_reclaim_thread_keep_counts_and_bytes_consistent)
{
    memq_tracker *t = tracker_make(2 * MIB, 1 * MIB, 16 * KIB, MEMQ_RECLAIM_THREAD, NULL);
    struct timespec start, now, nap = {0, 100 * 1000};
    unsigned seed = 7;
    unsigned char *out = malloc(64 * KIB);
    long drained = 0, collapsed = 0;
    double elapsed;

    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        /* One connection: its own account and output buffer, written
         * faster than it drains until reclamation collapses it. */
        memq_account *a = account_make(t);
        atomic_int collapses = 0;
        memq_buf *b = buf_make(a, &collapses);
        size_t written = 0, read = 0;
        for (int step = 0; step < 20000; step++) {
            unsigned r = (unsigned)rand_r(&seed);
            if (r % 3 != 0) {
                size_t n = r % (8 * KIB);
                unsigned char *data = malloc(n + 1);
                for (size_t i = 0; i < n; i++)
                    data[i] = stream_byte(written + i);
                int rc = memq_buf_add(b, data, n);
                free(data);
                if (rc == MEMQ_ECLOSED)
                    break;
                ck_assert_int_eq(rc, 0);
                written += n;
            } else {
                size_t want = r % (4 * KIB);
                size_t got = memq_buf_peek(b, out, want);
                ck_assert_uint_eq(stream_mismatches(out, read, got), 0);
                size_t n = memq_buf_drain(b, got);
                if (n != got) { /* collapsed since the peek */
                    ck_assert(memq_buf_closed(b));
                    ck_assert_uint_eq(n, 0);
                    break;
                }
                read += n;
                drained += (long)n;
            }
            if (step % 256 == 0)
                nanosleep(&nap, NULL);
        }
        /* The reclaim thread may collapse the buffer at any moment until
         * memq_buf_free() returns, after which the hook count is final.
         * Until it does, the buffer holds exactly what was not drained
         * (and peek checked that every drained byte came in order). */
        size_t len = memq_buf_len(b);
        bool closed = memq_buf_closed(b);
        if (closed) {
            /* A collapse may still be under way: on_collapse comes last. */
            for (int i = 0; i < 10000 && atomic_load(&collapses) == 0; i++)
                nanosleep(&nap, NULL);
            ck_assert_int_eq(atomic_load(&collapses), 1);
            ck_assert_uint_eq(memq_buf_len(b), 0);
            ck_assert_uint_eq(memq_buf_allocated(b), 0);
            collapsed++;
        } else {
            ck_assert_uint_eq(len, written - read);
        }
        memq_buf_free(b);
        if (closed)
            ck_assert_int_eq(atomic_load(&collapses), 1);
        ck_assert_int_le(atomic_load(&collapses), 1);
        memq_account_unref(a);
        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    } while (elapsed < 2.0);

    ck_assert_int_gt(drained, 0);
    ck_assert_int_gt(collapsed, 0); /* reclamation really raced */
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_ge(st.accounts_collapsed, (uint64_t)collapsed);
    ck_assert_uint_eq(claims_of(t), 0);
    free(out);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_an_idle_buffer_frees_its_chunks_when_a_sibling_collapses_its_account)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(2 * MIB, 1 * MIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t), *young = account_make(t);
    atomic_int collapses = 0, young_collapses = 0;
    memq_buf *b = buf_make(a, &collapses); /* asked after the sibling */
    collapser victim;
    fake_clock_set(&clock, 1);
    collapser_start(&victim, a, 4 * KIB, 1);
    fake_clock_set(&clock, 2);
    size_t written = 0;
    add_stream(b, &written, 1200000); /* a stalled reader's bytes */
    size_t held = memq_buf_allocated(b);
    fake_clock_set(&clock, 3);
    memq_buf *later = buf_make(young, &young_collapses);
    size_t more = 0;
    add_stream(later, &more, 1000000); /* crosses max */
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert(memq_account_closed(a));
    /* In the same drive: every chunk freed, on_collapse once. */
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.bytes_reclaimed, held + 4 * KIB);
    memq_buf_free(b);
    memq_buf_free(later);
    memq_participation_free(victim.p);
    memq_account_unref(a);
    memq_account_unref(young);
    memq_tracker_free(t);
}
END_TEST

/* A clock that moves one nanosecond on every read: any second read of it
 * within one operation shows. */
static memq_time ticking_read(void *ctx)
{
    return atomic_fetch_add((_Atomic memq_time *)ctx, 1) + 1;
}

START_TEST(test_a_buffer_enters_the_age_index_no_later_than_its_data)
{
    _Atomic memq_time ticks = 1000;
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    cfg.clock = ticking_read;
    cfg.clock_ctx = (void *)&ticks;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *a = account_make(t);
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;
    add_stream(b, &written, 100);
    memq_time stamp = 0;
    ck_assert(memq_buf_oldest(b, &stamp));
    ck_assert_uint_ne(a->slot, 0);
    /* The key is a lower bound of the account's data. */
    ck_assert_uint_le(t->ages[a->slot - 1].key, stamp);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* The buffer learns that its account closed at its own next drain, before
 * reclamation's notice reaches it: the notice then finds nothing to do,
 * and on_collapse runs once. */
START_TEST(test_a_buffer_that_collapsed_before_its_notice_arrives_collapses_once)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(64 * KIB, 32 * KIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *a = account_make(t);
    pender sibling;
    fake_clock_set(&clock, 1);
    pender_start(&sibling, a, 80 * KIB, 1); /* crosses max */
    for (int i = 0; i < 1000 && sibling.calls == 0; i++)
        ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_EAGAIN); /* its answer will be pending */
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    fake_clock_set(&clock, 2);
    size_t written = 0;
    add_stream(b, &written, 10000);
    pender_answer(&sibling, MEMQ_RECLAIMED_COLLAPSING); /* the account closes */
    ck_assert_uint_eq(memq_buf_drain(b, 10), 0); /* the owner sees it first */
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_int_eq(reclaim_until_done(t), 0); /* the notice comes */
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_buf_free(b);
    memq_participation_free(sibling.p);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* The account closes (here from the clock the add reads: the moment
 * another thread could close it) after the add checked it: the claim
 * fails, nothing is appended, and the buffer collapses. */
START_TEST(test_an_add_racing_its_accounts_close_collapses_the_buffer)
{
    closing_clock clock = {.now = 10};
    memq_tracker *t = tracker_with_closing_clock(1 * MIB, &clock);
    memq_account *a = account_make(t);
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    size_t written = 0;
    add_stream(b, &written, 5000);
    clock.unref = a; /* the only reference */
    static unsigned char more[10000];
    ck_assert_int_eq(memq_buf_add(b, more, sizeof more), MEMQ_ECLOSED);
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_buf_free(b);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_an_add_racing_tracker_shutdown_collapses_the_buffer)
{
    closing_clock clock = {.now = 10};
    memq_tracker *t = tracker_with_closing_clock(1 * MIB, &clock);
    memq_account *a = account_make(t);
    atomic_int collapses = 0;
    memq_buf *b = buf_make(a, &collapses);
    clock.shut_down = t;
    ck_assert_int_eq(memq_buf_add(b, "abc", 3), MEMQ_ECLOSED);
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    memq_buf_free(b);
    memq_account_unref(a); /* the tracker's memory goes with it */
}
END_TEST

/* A clock at its very last value still stamps a chunk with an age
 * (MEMQ_TIME_MAX means "no data"): that buffer is a candidate like any
 * other, and the newest one, reclaimed after the older one. */
static int collapse_order[2], collapses_seen;

static void note_collapse(void *ctx)
{
    collapse_order[collapses_seen++ % 2] = *(int *)ctx;
}

START_TEST(test_an_add_when_the_clock_reads_time_max_is_still_the_newest_data)
{
    fake_clock clock = {0};
    memq_tracker *t = tracker_make(100 * KIB, 16 * KIB, 0, MEMQ_RECLAIM_MANUAL, &clock);
    memq_account *old = account_make(t), *last = account_make(t);
    static int old_id = 1, last_id = 2;
    collapses_seen = 0;
    memq_buf *bo = NULL, *bl = NULL;
    ck_assert_int_eq(memq_buf_new(old, note_collapse, &old_id, &bo), 0);
    ck_assert_int_eq(memq_buf_new(last, note_collapse, &last_id, &bl), 0);
    size_t wo = 0, wl = 0;
    fake_clock_set(&clock, 1000);
    add_stream(bo, &wo, 40000); /* one 64 KiB chunk */
    fake_clock_set(&clock, MEMQ_TIME_MAX);
    add_stream(bl, &wl, 40000); /* another: crosses max */
    memq_time stamp = 0;
    ck_assert(memq_buf_oldest(bl, &stamp));
    ck_assert_uint_eq(stamp, MEMQ_TIME_MAX - 1);
    ck_assert(memq_buf_oldest(bl, NULL)); /* the time is optional */
    ck_assert_int_eq(reclaim_until_done(t), 0);
    /* Both had to go to reach low water: the older first. */
    ck_assert_int_eq(collapses_seen, 2);
    ck_assert_int_eq(collapse_order[0], 1);
    ck_assert_int_eq(collapse_order[1], 2);
    memq_buf_free(bo);
    memq_buf_free(bl);
    memq_account_unref(old);
    memq_account_unref(last);
    memq_tracker_free(t);
}
END_TEST

/* What a fresh buffer allocates for one add of n bytes. */
static size_t allocation_for(memq_account *a, size_t n)
{
    memq_buf *b = buf_make(a, NULL);
    size_t written = 0;
    add_stream(b, &written, n);
    size_t allocated = memq_buf_allocated(b);
    memq_buf_free(b);
    return allocated;
}

/* The size of the chunks' header and of the largest chunk, from what adds
 * allocate: the smallest chunk holds its size less the header. */
static void chunk_geometry(memq_account *a, size_t *header, size_t *chunk_max)
{
    size_t smallest = allocation_for(a, 1), lo = 1, hi = smallest;
    while (lo + 1 < hi) { /* the largest n that still fits the smallest chunk */
        size_t mid = (lo + hi) / 2;
        if (allocation_for(a, mid) == smallest)
            lo = mid;
        else
            hi = mid;
    }
    *header = smallest - lo;
    size_t size = smallest;
    while (allocation_for(a, 2 * size - *header) == 2 * size) /* one chunk, twice as large */
        size *= 2;
    *chunk_max = size;
}

/* Chunks counted one by one, the last one tipping the total past
 * SIZE_MAX: refused before anything is allocated. */
START_TEST(test_an_add_whose_last_chunk_would_overflow_the_total_fails_and_changes_nothing)
{
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    size_t header, chunk_max;
    chunk_geometry(a, &header, &chunk_max);
    ck_assert_uint_gt(header, 0);
    ck_assert_uint_ge(chunk_max, 4 * KIB);
    memq_buf *b = buf_make(a, NULL);
    /* As many full chunks as fit in size_t, and one byte more. */
    size_t n = (SIZE_MAX / chunk_max) * (chunk_max - header) + 1;
    ck_assert_int_eq(memq_buf_add(b, "x", n), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_uint_eq(claims_of(t), 0);
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

/* The wakeup runs on the adding thread when a chunk's claim crosses max;
 * here it drops the account's last reference, as another thread could at
 * that moment, so the add's next chunk finds the account closed. */
static memq_account *close_at_wakeup;

static void wakeup_closing(void *ctx)
{
    (void)ctx;
    memq_account *a = close_at_wakeup;
    close_at_wakeup = NULL;
    if (a != NULL)
        memq_account_unref(a);
}

/* An add of several chunks whose third finds the account closed: the two
 * it took go back to the pool with their claims, nothing is appended, and
 * the buffer collapses (the add's bytes are not the caller's to lose:
 * all or nothing). */
START_TEST(test_an_add_whose_later_chunk_finds_the_account_closed_gives_back_the_chunks_it_took)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 100 * KIB;
    cfg.low_water = 50 * KIB;
    cfg.cache_max = 0;
    cfg.reclaim_mode = MEMQ_RECLAIM_MANUAL;
    cfg.wakeup = wakeup_closing;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_account *a = account_make(t);
    memq_pool_config pc;
    memq_pool_config_init(&pc);
    pc.reserve = 0;
    pc.cache = 0; /* every chunk straight from and back to the spans */
    memq_pool *pool = NULL;
    ck_assert_int_eq(memq_pool_new(t, &pc, &pool), 0);
    atomic_int collapses = 0;
    memq_buf *b = NULL;
    ck_assert_int_eq(memq_buf_new_pool(a, pool, count_collapse, &collapses, &b), 0);
    size_t written = 0;
    add_stream(b, &written, 1000);
    memq_pool_stats st;
    ck_assert_int_eq(memq_pool_get_stats(pool, &st), 0);
    ck_assert_uint_eq(st.in_use, memq_buf_allocated(b));
    ck_assert_uint_lt(claims_of(t), cfg.max / 2);

    /* 64 KiB chunks: the second one's claim crosses max. */
    close_at_wakeup = a;
    static unsigned char more[300 * 1024];
    ck_assert_int_eq(memq_buf_add(b, more, sizeof more), MEMQ_ECLOSED);
    ck_assert_ptr_null(close_at_wakeup); /* the wakeup ran inside the add */
    ck_assert(memq_buf_closed(b));
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert_int_eq(memq_pool_get_stats(pool, &st), 0);
    ck_assert_uint_eq(st.in_use, 0); /* the chunks it took, given back */
    ck_assert_uint_eq(claims_of(t), 0);
    memq_buf_free(b);
    memq_pool_free(pool);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * The pool the chunks come from
 * ====================================================================== */

START_TEST(test_chunks_come_from_the_pool_given_and_a_collapse_gives_their_pages_back)
{
    memq_tracker *t = tracker_make(4 * MIB, 3 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_pool_config pc;
    memq_pool_config_init(&pc);
    pc.reserve = 0; /* every free page back to the OS at once */
    pc.cache = 0;   /* and no chunk kept in a thread cache */
    memq_pool *pool = NULL;
    ck_assert_int_eq(memq_pool_new(t, &pc, &pool), 0);
    atomic_int collapses = 0;
    memq_buf *b = NULL;
    ck_assert_int_eq(memq_buf_new_pool(a, pool, count_collapse, &collapses, &b), 0);
    size_t written = 0;
    add_stream(b, &written, 3 * MIB);
    memq_pool_stats st;
    ck_assert_int_eq(memq_pool_get_stats(pool, &st), 0);
    ck_assert_uint_eq(st.in_use, memq_buf_allocated(b));
    ck_assert_uint_ge(st.resident, st.in_use);
    ck_assert_uint_eq(claims_of(t), memq_buf_allocated(b));
    add_stream(b, &written, 2 * MIB); /* crosses max */
    ck_assert_int_eq(reclaim_until_done(t), 0);
    ck_assert_int_eq(atomic_load(&collapses), 1);
    ck_assert_int_eq(memq_pool_get_stats(pool, &st), 0);
    ck_assert_uint_eq(st.in_use, 0);
    /* 5 MiB of chunks freed: what stays resident is the metadata. */
    ck_assert_uint_eq(st.resident, st.metadata);
    ck_assert_uint_ge(st.returned, 5 * MIB);
    memq_buf_free(b);
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
    memq_buf *b = (memq_buf *)&b;
    ck_assert_int_eq(memq_buf_new_pool(a, memq_tracker_pool(other), NULL, NULL, &b), MEMQ_EINVAL);
    ck_assert_ptr_eq(b, (memq_buf *)&b);
    ck_assert_int_eq(memq_buf_new_pool(a, NULL, NULL, NULL, &b), 0); /* the tracker's own */
    ck_assert_int_eq(memq_buf_add(b, "abc", 3), 0);
    memq_pool_stats st;
    ck_assert_int_eq(memq_pool_get_stats(memq_tracker_pool(t), &st), 0);
    ck_assert_uint_eq(st.in_use, memq_buf_allocated(b));
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(other);
    memq_tracker_free(t);
}
END_TEST

/* ======================================================================
 * No address space for the tracker's pool
 * ====================================================================== */

/* The first buffer of a process whose address space is limited: the
 * tracker's pool cannot map its first metadata block (1 MiB), so the
 * buffer is not made and its registration is undone. */
START_TEST(test_a_buffer_is_not_made_when_the_trackers_pool_cannot_be_mapped)
{
    const char *why = no_fresh_address_space();
    if (why != NULL) {
        fprintf(stderr, "check_buf: test_a_buffer_is_not_made_when_the_trackers_pool_cannot_be_mapped "
                        "skipped: %s\n",
                why);
        return;
    }
    memq_tracker *t = tracker_make(16 * MIB, 12 * MIB, 0, MEMQ_RECLAIM_MANUAL, NULL);
    memq_account *a = account_make(t);
    memq_buf *b = (memq_buf *)&b;
    struct rlimit old = address_space_squeeze(256 * KIB);
    int rc = memq_buf_new(a, NULL, NULL, &b);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    ck_assert_int_eq(rc, MEMQ_ENOMEM);
    ck_assert_ptr_eq(b, (memq_buf *)&b);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.participants, 0);
    ck_assert(!memq_account_closed(a));
    /* With the address space back, the next one gets the pool. */
    b = buf_make(a, NULL);
    size_t written = 0;
    add_stream(b, &written, 3);
    ck_assert_uint_eq(claims_of(t), memq_buf_allocated(b));
    memq_buf_free(b);
    memq_account_unref(a);
    memq_tracker_free(t);
}
END_TEST

static Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *basics = tcase_create("basics");
    TCase *claims = tcase_create("claims");
    TCase *ages = tcase_create("ages");
    TCase *collapse = tcase_create("collapse");
    TCase *threads = tcase_create("threads");

    tcase_add_test(basics, test_empty_buffer_claims_nothing_and_has_no_age);
    tcase_add_test(basics, test_null_arguments_are_rejected);
    tcase_add_test(basics, test_add_of_an_overflowing_size_fails_and_changes_nothing);
    tcase_add_test(basics,
                   test_an_add_whose_last_chunk_would_overflow_the_total_fails_and_changes_nothing);
    tcase_add_test(basics, test_peek_copies_the_front_without_removing_it);
    tcase_add_test(basics, test_bytes_cross_chunk_boundaries_intact);
    suite_add_tcase(s, basics);

    tcase_set_timeout(claims, 60);
    tcase_add_test(claims, test_a_chunk_is_freed_as_soon_as_it_is_fully_drained);
    tcase_add_test(claims, test_tracked_use_equals_allocated_chunks_through_10000_random_operations);
    suite_add_tcase(s, claims);

    tcase_add_test(ages, test_a_chunk_is_stamped_when_its_first_byte_arrives);
    tcase_add_test(ages, test_a_buffer_enters_the_age_index_no_later_than_its_data);
    tcase_add_test(ages, test_a_partly_drained_head_chunk_keeps_its_stamp);
    tcase_add_test(ages, test_draining_a_whole_chunk_exposes_the_next_chunks_stamp);
    tcase_add_test(ages, test_a_buffer_emptied_and_refilled_takes_the_new_time);
    tcase_add_test(ages, test_the_buffer_with_the_oldest_head_chunk_is_reclaimed_first);
    tcase_add_test(ages, test_an_empty_buffer_in_a_candidate_account_gives_it_no_age);
    suite_add_tcase(s, ages);

    tcase_add_test(collapse, test_reclaim_collapses_the_buffer_and_calls_on_collapse_once);
    tcase_add_test(collapse, test_an_idle_buffer_frees_its_chunks_when_a_sibling_collapses_its_account);
    tcase_add_test(collapse, test_on_collapse_may_free_the_buffer);
    tcase_add_test(collapse, test_buffer_whose_account_was_unreffed_collapses_at_its_next_add);
    tcase_add_test(collapse, test_buffer_whose_account_was_unreffed_collapses_at_its_next_drain);
    tcase_add_test(collapse, test_buffer_collapses_at_its_next_add_after_tracker_shutdown);
    tcase_add_test(collapse, test_a_buffer_that_collapsed_before_its_notice_arrives_collapses_once);
    tcase_add_test(collapse, test_an_add_racing_its_accounts_close_collapses_the_buffer);
    tcase_add_test(collapse, test_an_add_racing_tracker_shutdown_collapses_the_buffer);
    tcase_add_test(collapse, test_an_add_when_the_clock_reads_time_max_is_still_the_newest_data);
    tcase_add_test(collapse,
                   test_an_add_whose_later_chunk_finds_the_account_closed_gives_back_the_chunks_it_took);
    suite_add_tcase(s, collapse);

    tcase_set_timeout(threads, 60);
    tcase_add_test(threads, test_a_buffer_user_and_the_reclaim_thread_keep_counts_and_bytes_consistent);
    suite_add_tcase(s, threads);
    TCase *pool = tcase_create("pool");
    tcase_add_test(pool, test_chunks_come_from_the_pool_given_and_a_collapse_gives_their_pages_back);
    tcase_add_test(pool, test_a_pool_of_another_tracker_is_refused);
    tcase_add_test(pool, test_a_buffer_is_not_made_when_the_trackers_pool_cannot_be_mapped);
    suite_add_tcase(s, pool);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
