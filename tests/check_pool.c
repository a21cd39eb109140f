/*
 * check_pool.c - the chunk pool: misuse survived, memory given back to the
 * OS, exact claims and slack, fullest-first placement, size classes,
 * large chunks, debug mode, threads, the tracker's own pool and dumps.
 */
#include "testutil.h"

#include "pool.h" /* lib/pool.h: memq__pool_dump, memq__pool_tracker_gone */
#include "internal.h" /* the age index, to check the key a stamp gives */

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

/* ----------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    unsigned long size = 0, resident = 0;
    ck_assert_int_eq(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static bool under_valgrind(void)
{
    return getenv("MEMQ_VALGRIND") != NULL || RUNNING_ON_VALGRIND;
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif

/* What RSS may keep beyond the pool's own figures after `touched` bytes
 * of chunks were written and given back: the sanitizers' shadow memory
 * is not given back with the pages it describes (an eighth of them for
 * ASan; four times them for TSan, where RSS says nothing of the pool). */
static size_t rss_slack(size_t touched)
{
#if defined(UNDER_TSAN)
    (void)touched;
    return SIZE_MAX / 2;
#elif defined(UNDER_ASAN)
    return touched / 8 + 2 * MIB;
#else
    (void)touched;
    return 2 * MIB;
#endif
}

static memq_pool_config pool_cfg(size_t reserve, size_t cache, bool debug)
{
    memq_pool_config cfg;
    memq_pool_config_init(&cfg);
    cfg.reserve = reserve;
    cfg.cache = cache;
    cfg.debug = debug;
    return cfg;
}

static memq_pool *pool_make(fake_world *w, size_t reserve, size_t cache, bool debug)
{
    memq_pool_config cfg = pool_cfg(reserve, cache, debug);
    memq_pool *pool = NULL;
    int rc = memq_pool_new(w->t, &cfg, &pool);
    ck_assert_msg(rc == 0, "memq_pool_new: %s", memq_strerror(rc));
    ck_assert_ptr_nonnull(pool);
    return pool;
}

static void *chunk_alloc(memq_pool *pool, fake_part *fp, size_t n)
{
    void *chunk = NULL;
    int rc = memq_pool_alloc(pool, fp->p, n, &chunk);
    ck_assert_msg(rc == 0, "memq_pool_alloc(%zu): %s", n, memq_strerror(rc));
    ck_assert_ptr_nonnull(chunk);
    fp->claimed += memq_pool_class_size(n);
    fp->has_data = true;
    return chunk;
}

static void chunk_free(fake_part *fp, void *chunk)
{
    size_t size = memq_pool_chunk_size(chunk);
    ck_assert_uint_gt(size, 0);
    memq_pool_dealloc(fp->p, chunk);
    fp->claimed -= size;
}

static memq_pool_stats pool_stats(memq_pool *pool)
{
    memq_pool_stats st;
    ck_assert_int_eq(memq_pool_get_stats(pool, &st), 0);
    return st;
}

static const memq_pool_class_stats *class_stats(const memq_pool_stats *st, size_t size)
{
    for (int k = 0; k < MEMQ_POOL_CLASSES; k++)
        if (st->class_stats[k].size == size)
            return &st->class_stats[k];
    ck_abort_msg("no class of %zu bytes", size);
    return NULL;
}

/* The world with one account and one participant. */
typedef struct pool_world {
    fake_world w;
    fake_part fp;
    memq_account *a;
} pool_world;

static void pool_world_new(pool_world *pw, size_t max)
{
    world_new(&pw->w, max, 0);
    pw->a = world_account(&pw->w, NULL);
    part_add(&pw->w, &pw->fp, 1, pw->a);
}

/* The tracker's own pool goes with the tracker's memory: the core calls
 * memq__pool_tracker_gone() then. */
static void pool_world_teardown(pool_world *pw)
{
    world_teardown(&pw->w);
}

static char *pool_dump(memq_tracker *t, int format)
{
    memstream *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    FILE *f = open_memstream(&m->text, &m->len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(memq__pool_dump(t, f, format), 0);
    fclose(f);
    char *text = m->text;
    free(m);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* ----------------------------------------------------------------------
 * Arguments and size classes
 * ---------------------------------------------------------------------- */

START_TEST(test_null_arguments_and_zero_bytes_are_rejected)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    void *chunk = (void *)&pw;
    ck_assert_int_eq(memq_pool_alloc(NULL, pw.fp.p, 16, &chunk), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_alloc(pool, NULL, 16, &chunk), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, 16, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, 0, &chunk), MEMQ_EINVAL);
    ck_assert_ptr_eq(chunk, (void *)&pw);
    ck_assert_int_eq(memq_pool_new(NULL, NULL, &pool), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_new(pw.w.t, NULL, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_get_stats(NULL, NULL), MEMQ_EINVAL);
    ck_assert_ptr_null(memq_tracker_pool(NULL));
    ck_assert_uint_eq(memq_pool_chunk_size(NULL), 0);
    memq_pool_dealloc(pw.fp.p, NULL);
    memq_pool_free(NULL);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_size_classes_hold_tor_cells_and_buffer_chunks_with_little_waste)
{
    ck_assert_uint_eq(memq_pool_class_size(514), 528);
    ck_assert_uint_eq(memq_pool_class_size(32), 32); /* a queue node */
    for (size_t size = 4096; size <= 65536; size *= 2)
        ck_assert_uint_eq(memq_pool_class_size(size), size);
    ck_assert_uint_eq(memq_pool_class_size(0), 0);
    ck_assert_uint_eq(memq_pool_class_size(SIZE_MAX), 0);
    /* Every size gets a class that holds it, wasting less than 16 bytes up
     * to 128 B and less than a fifth of the chunk above. */
    for (size_t n = 1; n <= MEMQ_POOL_CLASS_MAX; n++) {
        size_t c = memq_pool_class_size(n);
        ck_assert_uint_ge(c, n);
        if (n <= 128)
            ck_assert_uint_lt(c - n, 16);
        else
            ck_assert_uint_lt((c - n) * 5, c);
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    ck_assert_uint_eq(memq_pool_class_size(MEMQ_POOL_CLASS_MAX + 1), MEMQ_POOL_CLASS_MAX + page);
}
END_TEST

START_TEST(test_chunks_are_claimed_at_their_class_size)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    size_t sizes[] = {1, 17, 514, 4000, 4096, 65536, 100000};
    void *chunks[7];
    size_t claimed = 0;
    for (int i = 0; i < 7; i++) {
        chunks[i] = chunk_alloc(pool, &pw.fp, sizes[i]);
        claimed += memq_pool_class_size(sizes[i]);
        ck_assert_uint_eq(memq_pool_chunk_size(chunks[i]), memq_pool_class_size(sizes[i]));
        ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), claimed);
        memset(chunks[i], 0xa5, sizes[i]);
    }
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 528 + 16 + 32 + 4096 + 4096 + 65536 + 102400);
    for (int i = 0; i < 7; i++)
        chunk_free(&pw.fp, chunks[i]);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_chunks_are_aligned_to_their_power_of_two_class)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    for (size_t size = 16; size <= 65536; size *= 2) {
        void *chunk = chunk_alloc(pool, &pw.fp, size);
        ck_assert_uint_eq((uintptr_t)chunk % size, 0);
        void *odd = chunk_alloc(pool, &pw.fp, size * 3 / 4 + 1);
        ck_assert_uint_eq((uintptr_t)odd % 16, 0);
        chunk_free(&pw.fp, chunk);
        chunk_free(&pw.fp, odd);
    }
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_large_chunk_gets_its_own_mapping_and_goes_back_when_freed)
{
    pool_world pw;
    pool_world_new(&pw, 1 * GIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    size_t n = 8 * MIB + 1, page = (size_t)sysconf(_SC_PAGESIZE);
    size_t before = rss_bytes();
    unsigned char *chunk = chunk_alloc(pool, &pw.fp, n);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 8 * MIB + page);
    memset(chunk, 1, n);
    ck_assert_uint_ge(rss_bytes(), before + 8 * MIB);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.large_chunks, 1);
    ck_assert_uint_eq(st.large_bytes, 8 * MIB + page);
    ck_assert_uint_eq(st.in_use, 8 * MIB + page);
    chunk_free(&pw.fp, chunk);
    ck_assert_uint_lt(rss_bytes(), before + rss_slack(8 * MIB));
    st = pool_stats(pool);
    ck_assert_uint_eq(st.large_chunks, 0);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Misuse
 * ---------------------------------------------------------------------- */

START_TEST(test_double_free_is_counted_and_ignored)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    void *x = chunk_alloc(pool, &pw.fp, 100);
    void *keep = chunk_alloc(pool, &pw.fp, 100);
    chunk_free(&pw.fp, x);
    size_t claimed = memq_participation_claimed(pw.fp.p);
    memq_pool_dealloc(pw.fp.p, x);
    /* Nothing was released twice, and the chunk is not handed out twice. */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), claimed);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.double_frees, 1);
    ck_assert_uint_eq(class_stats(&st, 112)->misuse, 1);
    ck_assert_uint_eq(class_stats(&st, 112)->chunks_in_use, 1);
    void *a = chunk_alloc(pool, &pw.fp, 100);
    void *b = chunk_alloc(pool, &pw.fp, 100);
    ck_assert_ptr_ne(a, b);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 1);
    ck_assert_int_ge(atomic_load(&pw.w.logs), 1);
    ck_assert_ptr_nonnull(strstr(pw.w.last_log, "double free"));
    chunk_free(&pw.fp, a);
    chunk_free(&pw.fp, b);
    chunk_free(&pw.fp, keep);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_double_free_through_a_thread_cache_is_counted_and_ignored)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    void *x = chunk_alloc(pool, &pw.fp, 512);
    chunk_free(&pw.fp, x); /* into this thread's cache */
    memq_pool_dealloc(pw.fp.p, x);
    ck_assert_uint_eq(pool_stats(pool).double_frees, 1);
    void *a = chunk_alloc(pool, &pw.fp, 512);
    void *b = chunk_alloc(pool, &pw.fp, 512);
    ck_assert_ptr_ne(a, b);
    chunk_free(&pw.fp, a);
    chunk_free(&pw.fp, b);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_foreign_pointers_are_counted_and_ignored)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    void *keep = chunk_alloc(pool, &pw.fp, 64);
    uint64_t before = pool_stats(pool).foreign;
    char *heap = malloc(64);
    ck_assert_ptr_nonnull(heap);
    int on_stack = 0;
    memq_pool_dealloc(pw.fp.p, heap);
    memq_pool_dealloc(pw.fp.p, &on_stack);
    memq_pool_dealloc(pw.fp.p, (void *)(uintptr_t)0xfff0000000000000u); /* not a user address */
    free(heap);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.foreign, before + 3);
    /* The participation's tracker counts them as misuse, and logs one. */
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 3);
    ck_assert_ptr_nonnull(strstr(pw.w.last_log, "no pool allocated"));
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 64);
    ck_assert_uint_eq(memq_pool_chunk_size(&on_stack), 0);
    chunk_free(&pw.fp, keep);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_interior_pointers_are_counted_and_ignored)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    char *x = chunk_alloc(pool, &pw.fp, 4096);
    char *cell = chunk_alloc(pool, &pw.fp, 514);
    memq_pool_dealloc(pw.fp.p, x + 16);
    memq_pool_dealloc(pw.fp.p, x + 4095);
    memq_pool_dealloc(pw.fp.p, cell + 1);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.interior, 3);
    ck_assert_uint_eq(class_stats(&st, 4096)->misuse, 2);
    ck_assert_uint_eq(class_stats(&st, 528)->misuse, 1);
    ck_assert_uint_eq(memq_pool_chunk_size(x), 4096);
    ck_assert_uint_eq(memq_pool_chunk_size(x + 16), 0);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 4096 + 528);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 3);
    chunk_free(&pw.fp, x);
    chunk_free(&pw.fp, cell);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_pointer_into_a_large_chunk_is_counted_and_ignored)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    char *big = chunk_alloc(pool, &pw.fp, 1 * MIB);
    memq_pool_dealloc(pw.fp.p, big + 4096);
    memq_pool_dealloc(pw.fp.p, big + 1 * MIB - 1);
    ck_assert_uint_eq(pool_stats(pool).interior, 2);
    ck_assert_uint_eq(memq_pool_chunk_size(big), 1 * MIB);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 1 * MIB);
    big[1 * MIB - 1] = 1; /* still mapped */
    chunk_free(&pw.fp, big);
    memq_pool_dealloc(pw.fp.p, big); /* gone: no longer the pool's */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_free_with_no_participation_releases_nothing_and_counts_slack_later)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    void *x = chunk_alloc(pool, &pw.fp, 1000);
    fake_part other;
    part_add(&pw.w, &other, 2, pw.a);
    void *y = chunk_alloc(pool, &other, 1000);
    /* The participation goes first, with its claims (libevent's cleanup
     * callbacks run after the connection is gone). */
    part_free(&other);
    memq_pool_dealloc(NULL, y);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 1024);
    /* The pool's next call with a participation counts the change. */
    chunk_free(&pw.fp, x);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.slack, st.resident);
    ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), st.slack);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Accounting
 * ---------------------------------------------------------------------- */

/* With exact accounting on both sides (cache_max 0, no thread cache). */
static void check_exact(pool_world *pw, memq_pool *pool, size_t claimed)
{
    memq_pool_stats st = pool_stats(pool);
    memq_stats ts = world_stats(&pw->w);
    ck_assert_uint_eq(memq_participation_claimed(pw->fp.p), claimed);
    ck_assert_uint_eq(st.in_use, claimed);
    ck_assert_uint_eq(st.slack, st.resident - st.in_use);
    ck_assert_uint_eq(ts.slack, st.slack);
    ck_assert_uint_eq(memq_tracker_used(pw->w.t), claimed + st.slack);
    ck_assert_uint_eq(ts.misuse_events, 0);
}

START_TEST(test_tracker_counts_claims_plus_the_pools_slack_exactly)
{
    pool_world pw;
    pool_world_new(&pw, 1 * GIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    check_exact(&pw, pool, 0);
    ck_assert_uint_gt(pool_stats(pool).slack, 0); /* its metadata */
    uint64_t seed = 11;
    void *chunks[2000];
    size_t claimed = 0;
    for (int i = 0; i < 2000; i++) {
        size_t n = 1 + rng_below(&seed, i % 10 == 0 ? 65536 : 2048);
        chunks[i] = chunk_alloc(pool, &pw.fp, n);
        claimed += memq_pool_class_size(n);
    }
    check_exact(&pw, pool, claimed);
    for (int i = 0; i < 2000; i += 1 + (int)rng_below(&seed, 3)) {
        claimed -= memq_pool_chunk_size(chunks[i]);
        chunk_free(&pw.fp, chunks[i]);
        chunks[i] = NULL;
    }
    check_exact(&pw, pool, claimed);
    for (int i = 0; i < 2000; i++)
        if (chunks[i] != NULL)
            chunk_free(&pw.fp, chunks[i]);
    check_exact(&pw, pool, 0);
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_thread_cache_over_count_stays_within_cache_bytes)
{
    pool_world pw;
    pool_world_new(&pw, 1 * GIB);
    size_t cache = 128 * KIB;
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, cache, false);
    uint64_t seed = 5;
    void *chunks[512] = {0};
    for (int round = 0; round < 20000; round++) {
        int i = (int)rng_below(&seed, 512);
        if (chunks[i] != NULL) {
            chunk_free(&pw.fp, chunks[i]);
            chunks[i] = NULL;
        } else {
            chunks[i] = chunk_alloc(pool, &pw.fp, 1 + rng_below(&seed, 20000));
        }
        if (round % 97 == 0) {
            memq_pool_stats st = pool_stats(pool);
            size_t real = st.resident - st.in_use;
            ck_assert_uint_ge(st.slack, real);
            ck_assert_uint_le(st.slack, real + cache);
            ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack);
            ck_assert_uint_le(st.cached, cache);
        }
    }
    for (int i = 0; i < 512; i++)
        if (chunks[i] != NULL)
            chunk_free(&pw.fp, chunks[i]);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_failed_claim_allocates_nothing)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    memq_pool *cached = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    void *keep = chunk_alloc(pool, &pw.fp, 600);
    void *keep2 = chunk_alloc(cached, &pw.fp, 600);
    memq_account *closed = world_account(&pw.w, NULL);
    fake_part fp;
    part_add(&pw.w, &fp, 2, closed);
    world_unref(&pw.w, closed);
    void *chunk = (void *)&fp;
    ck_assert_int_eq(memq_pool_alloc(pool, fp.p, 600, &chunk), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_pool_alloc(cached, fp.p, 600, &chunk), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_pool_alloc(pool, fp.p, 1 * MIB, &chunk), MEMQ_ECLOSED);
    ck_assert_ptr_eq(chunk, (void *)&fp);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(class_stats(&st, 640)->chunks_in_use, 1);
    ck_assert_uint_eq(pool_stats(pool).in_use, 640);
    ck_assert_uint_eq(pool_stats(cached).in_use, 640);
    ck_assert_uint_eq(pool_stats(pool).large_chunks, 0);
    chunk_free(&pw.fp, keep);
    chunk_free(&pw.fp, keep2);
    memq_pool_free(pool);
    memq_pool_free(cached);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_slack_never_makes_the_pool_a_victim)
{
    /* max 1 MiB: the pool's slack alone crosses it. */
    pool_world pw;
    pool_world_new(&pw, 1 * MIB);
    memq_pool *pool = pool_make(&pw.w, 4 * MIB, 0, false);
    void *chunks[64];
    for (int i = 0; i < 64; i++)
        chunks[i] = chunk_alloc(pool, &pw.fp, 32 * KIB);
    for (int i = 0; i < 64; i++)
        chunk_free(&pw.fp, chunks[i]);
    ck_assert_uint_gt(memq_tracker_used(pw.w.t), 1 * MIB);
    ck_assert_int_ge(atomic_load(&pw.w.wakeups), 1); /* slack counts against max */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    /* Reclamation finds nothing to take: the slack belongs to no account. */
    ck_assert_int_eq(world_reclaim(&pw.w), 0);
    ck_assert_int_eq(pw.fp.calls, 0);
    ck_assert_uint_eq(world_stats(&pw.w).unreclaimable_events, 1);
    memq_pool_free(pool);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), 0);
    pool_world_teardown(&pw);
}
END_TEST

/* The wakeup callback runs inside the claim of memq_pool_alloc(): it may
 * use the same pool, on the same thread, with the same cache. */
static void wakeup_uses_pool(fake_world *w)
{
    memq_pool *pool = w->hook_ctx;
    fake_part *fp = w->parts[0];
    void *x = NULL, *y = NULL;
    if (memq_pool_alloc(pool, fp->p, 512, &x) == 0 && memq_pool_alloc(pool, fp->p, 512, &y) == 0) {
        memset(x, 1, 512);
        memset(y, 2, 512);
        memq_pool_dealloc(fp->p, x);
        memq_pool_dealloc(fp->p, y);
    } else {
        w->library_calls_from_callbacks = -1000;
    }
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_wakeup_callback_may_use_the_pool_during_an_allocation)
{
    pool_world pw;
    pool_world_new(&pw, 1 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    pw.w.hook_ctx = pool;
    pw.w.wakeup_hook = wakeup_uses_pool;
    enum { N = 3000 }; /* 1.5 MiB: crosses max */
    void **chunks = calloc(N, sizeof *chunks);
    ck_assert_ptr_nonnull(chunks);
    for (int i = 0; i < N; i++) {
        chunks[i] = chunk_alloc(pool, &pw.fp, 512);
        memset(chunks[i], 3, 512);
    }
    /* The crossing claim ran the callback, which allocated and freed. */
    ck_assert_int_ge(atomic_load(&pw.w.wakeups), 1);
    ck_assert_int_ge(pw.w.library_calls_from_callbacks, 0);
    /* No chunk was handed out twice. */
    qsort(chunks, N, sizeof *chunks, by_address);
    for (int i = 1; i < N; i++)
        ck_assert_ptr_ne(chunks[i - 1], chunks[i]);
    pw.w.wakeup_hook = NULL;
    for (int i = 0; i < N; i++)
        chunk_free(&pw.fp, chunks[i]);
    free(chunks);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.double_frees, 0);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_misuse_with_no_participation_reaches_the_tracker_at_the_next_call)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    void *x = chunk_alloc(pool, &pw.fp, 300);
    chunk_free(&pw.fp, x);
    memq_pool_dealloc(NULL, x); /* no participation: the tracker may be gone */
    ck_assert_uint_eq(pool_stats(pool).double_frees, 1);
    chunk_free(&pw.fp, chunk_alloc(pool, &pw.fp, 300));
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 1);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Memory given back to the OS
 * ---------------------------------------------------------------------- */

START_TEST(test_freed_memory_goes_back_to_the_os)
{
    pool_world pw;
    pool_world_new(&pw, 4 * GIB);
    size_t reserve = 256 * KIB;
    memq_pool *pool = pool_make(&pw.w, reserve, 128 * KIB, false);
    size_t total = under_valgrind() ? 16 * MIB : 96 * MIB, held = 0, n = 0;
    void **chunks = calloc(total / 16, sizeof *chunks);
    ck_assert_ptr_nonnull(chunks);
    size_t sizes[] = {32, 514, 4096, 16384, 65536, 3000, 200};
    size_t before = rss_bytes();
    while (held < total) {
        size_t size = sizes[n % 7];
        chunks[n] = chunk_alloc(pool, &pw.fp, size);
        memset(chunks[n], 0x5a, size);
        held += size;
        n++;
    }
    size_t full = rss_bytes();
    ck_assert_uint_ge(full, before + total * 9 / 10);
    for (size_t i = 0; i < n; i++)
        chunk_free(&pw.fp, chunks[i]);
    free(chunks);
    memq_pool_stats st = pool_stats(pool);
    size_t after = rss_bytes();
    /* What stays: the reserve, this thread's cache, metadata, and noise. */
    ck_assert_msg(after <= before + reserve + 128 * KIB + st.metadata + rss_slack(total),
                  "RSS before %zu, full %zu, after %zu", before, full, after);
    ck_assert_uint_le(st.resident, reserve + 128 * KIB + st.metadata + 64 * KIB);
    ck_assert_uint_ge(st.returned, total * 9 / 10);
    ck_assert_uint_le(st.reserved, reserve);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_free_pages_inside_partly_used_spans_go_back)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    void *chunks[64];
    for (int i = 0; i < 64; i++) {
        chunks[i] = chunk_alloc(pool, &pw.fp, 4096);
        memset(chunks[i], 1, 4096);
    }
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(class_stats(&st, 4096)->resident, 64 * 4096);
    ck_assert_uint_eq(class_stats(&st, 4096)->spans_full, 1);
    for (int i = 0; i < 64; i += 2)
        chunk_free(&pw.fp, chunks[i]);
    st = pool_stats(pool);
    ck_assert_uint_eq(class_stats(&st, 4096)->resident, 32 * 4096);
    ck_assert_uint_eq(class_stats(&st, 4096)->returned, 32 * 4096);
    ck_assert_uint_eq(class_stats(&st, 4096)->spans_partial, 1);
    for (int i = 1; i < 64; i += 2)
        chunk_free(&pw.fp, chunks[i]);
    st = pool_stats(pool);
    ck_assert_uint_eq(class_stats(&st, 4096)->resident, 0);
    ck_assert_uint_eq(class_stats(&st, 4096)->spans_partial + class_stats(&st, 4096)->spans_empty, 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_reserve_keeps_free_pages_up_to_its_size)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 64 * KIB, 0, false);
    void *chunks[64];
    for (int i = 0; i < 64; i++)
        chunks[i] = chunk_alloc(pool, &pw.fp, 4096);
    for (int i = 0; i < 64; i++)
        chunk_free(&pw.fp, chunks[i]);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.reserved, 64 * KIB);
    ck_assert_uint_eq(class_stats(&st, 4096)->resident, 64 * KIB);
    ck_assert_uint_eq(class_stats(&st, 4096)->spans_empty, 1);
    /* The next chunks reuse the reserved pages first. */
    void *again = chunk_alloc(pool, &pw.fp, 4096);
    ck_assert_uint_eq(pool_stats(pool).reserved, 60 * KIB);
    chunk_free(&pw.fp, again);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Placement
 * ---------------------------------------------------------------------- */

static bool in_span_of(const void *x, const void *span_member)
{
    return ((uintptr_t)x >> 18) == ((uintptr_t)span_member >> 18);
}

START_TEST(test_next_chunk_comes_from_the_fullest_span)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 1 * MIB, 0, false);
    /* Two spans of 64 chunks of 4 KiB, then the first made sparse and the
     * second kept nearly full. */
    void *chunks[128];
    for (int i = 0; i < 128; i++)
        chunks[i] = chunk_alloc(pool, &pw.fp, 4096);
    ck_assert(!in_span_of(chunks[0], chunks[64]));
    for (int i = 0; i < 54; i++)
        chunk_free(&pw.fp, chunks[i]);
    for (int i = 64; i < 68; i++)
        chunk_free(&pw.fp, chunks[i]);
    for (int i = 0; i < 4; i++) {
        void *x = chunk_alloc(pool, &pw.fp, 4096);
        ck_assert_msg(in_span_of(x, chunks[100]), "chunk %d came from the sparse span", i);
    }
    /* Now the dense span is full: the sparse one serves. */
    void *y = chunk_alloc(pool, &pw.fp, 4096);
    ck_assert(in_span_of(y, chunks[60]));
    memq_pool_free(pool); /* the chunks still allocated keep it */
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Debug mode
 * ---------------------------------------------------------------------- */

START_TEST(test_debug_mode_reports_a_write_after_free)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, true);
    char *x = chunk_alloc(pool, &pw.fp, 200);
    chunk_free(&pw.fp, x);
    x[7] = 'u'; /* the bug */
    char *again = chunk_alloc(pool, &pw.fp, 200);
    ck_assert_ptr_eq(again, x);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.use_after_free, 1);
    ck_assert_uint_eq(class_stats(&st, 224)->misuse, 1);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 1);
    ck_assert_ptr_nonnull(strstr(pw.w.last_log, "use after free"));
    /* A clean reuse is not reported. */
    chunk_free(&pw.fp, again);
    chunk_free(&pw.fp, chunk_alloc(pool, &pw.fp, 200));
    ck_assert_uint_eq(pool_stats(pool).use_after_free, 1);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_debug_mode_cache_checks_chunks_too)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, true);
    char *x = chunk_alloc(pool, &pw.fp, 64);
    chunk_free(&pw.fp, x);
    x[63] = 0;
    char *again = chunk_alloc(pool, &pw.fp, 64);
    ck_assert_ptr_eq(again, x);
    ck_assert_uint_eq(pool_stats(pool).use_after_free, 1);
    chunk_free(&pw.fp, again);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* Runs fn in a child process; returns the signal that ended it, or 0. */
static int child_signal(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        fn(arg);
        _exit(0);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void write_byte(void *at)
{
    *(volatile char *)at = 1;
}

START_TEST(test_debug_mode_puts_guard_pages_around_spans_and_large_chunks)
{
    if (under_valgrind())
        return; /* the child's fault would be reported as an error */
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, true);
    /* A span holds four 64 KiB chunks, lowest first. */
    char *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = chunk_alloc(pool, &pw.fp, 65536);
    ck_assert_ptr_eq(c[3], c[0] + 3 * 65536);
    ck_assert_int_eq(child_signal(write_byte, c[3] + 65535), 0);
    ck_assert_int_eq(child_signal(write_byte, c[3] + 65536), SIGSEGV);
    ck_assert_int_eq(child_signal(write_byte, c[0] - 1), SIGSEGV);
    char *big = chunk_alloc(pool, &pw.fp, 100000);
    size_t bytes = memq_pool_chunk_size(big);
    ck_assert_int_eq(child_signal(write_byte, big + bytes - 1), 0);
    ck_assert_int_eq(child_signal(write_byte, big + bytes), SIGSEGV);
    ck_assert_int_eq(child_signal(write_byte, big - 1), SIGSEGV);
    for (int i = 0; i < 4; i++)
        chunk_free(&pw.fp, c[i]);
    chunk_free(&pw.fp, big);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------- */

#define THREADS 4
#define HANDOFF 64

typedef struct thread_arg {
    memq_pool *pool;
    memq_participation *p;
    uint64_t seed;
    int rounds;
    /* Chunks handed to the next thread, which frees them. */
    void *_Atomic handoff[HANDOFF];
    struct thread_arg *next;
    atomic_int failures;
} thread_arg;

static void *churn(void *arg)
{
    thread_arg *ta = arg;
    void *mine[256] = {0};
    for (int r = 0; r < ta->rounds; r++) {
        int i = (int)rng_below(&ta->seed, 256);
        if (mine[i] != NULL) {
            size_t size = memq_pool_chunk_size(mine[i]);
            if (((unsigned char *)mine[i])[size - 1] != (unsigned char)i)
                atomic_fetch_add(&ta->failures, 1);
            void *give = mine[i];
            mine[i] = NULL;
            /* Half go to the next thread, which frees them with its own
             * participation after moving the claim. */
            int h = (int)rng_below(&ta->seed, HANDOFF);
            void *expected = NULL;
            if ((r & 1) && atomic_compare_exchange_strong(&ta->next->handoff[h], &expected, give)) {
                memq_release(ta->p, size);
                continue;
            }
            memq_pool_dealloc(ta->p, give);
        } else {
            size_t n = 1 + rng_below(&ta->seed, (r % 16) ? 4096 : 70000);
            if (memq_pool_alloc(ta->pool, ta->p, n, &mine[i]) != 0) {
                atomic_fetch_add(&ta->failures, 1);
                mine[i] = NULL;
                continue;
            }
            memset(mine[i], i, n);
            ((unsigned char *)mine[i])[memq_pool_chunk_size(mine[i]) - 1] = (unsigned char)i;
        }
        int h = (int)rng_below(&ta->seed, HANDOFF);
        void *got = atomic_exchange(&ta->handoff[h], NULL);
        if (got != NULL) {
            if (memq_claim(ta->p, memq_pool_chunk_size(got)) != 0)
                atomic_fetch_add(&ta->failures, 1);
            memq_pool_dealloc(ta->p, got);
        }
    }
    for (int i = 0; i < 256; i++)
        if (mine[i] != NULL)
            memq_pool_dealloc(ta->p, mine[i]);
    return NULL;
}

START_TEST(test_threads_allocate_and_free_each_others_chunks)
{
    pool_world pw;
    pool_world_new(&pw, 4 * GIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 64 * KIB, false);
    static thread_arg ta[THREADS];
    fake_part fps[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&ta[i], 0, sizeof ta[i]);
        part_add(&pw.w, &fps[i], 10 + i, world_account(&pw.w, NULL));
        ta[i].pool = pool;
        ta[i].p = fps[i].p;
        ta[i].seed = 1000 + (uint64_t)i;
        ta[i].rounds = under_valgrind() ? 3000 : 40000;
        ta[i].next = &ta[(i + 1) % THREADS];
    }
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, churn, &ta[i]), 0);
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    /* What is left in the hand-off slots is claimed by nobody. */
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(atomic_load(&ta[i].failures), 0);
        for (int h = 0; h < HANDOFF; h++) {
            void *got = atomic_exchange(&ta[i].handoff[h], NULL);
            if (got != NULL)
                memq_pool_dealloc(NULL, got);
        }
        ck_assert_uint_eq(memq_participation_claimed(fps[i].p), 0);
    }
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    /* The threads' caches went back at their exit; the main thread's
     * holds what it freed. */
    ck_assert_uint_le(st.cached, 64 * KIB);
    ck_assert_uint_eq(st.double_frees + st.interior + st.use_after_free, 0);
    ck_assert_uint_ge(st.slack, st.resident);
    ck_assert_uint_le(st.slack, st.resident + 64 * KIB);
    ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

typedef struct racer {
    pthread_barrier_t *barrier;
    void *_Atomic *chunk;
    int rounds;
} racer;

static void *free_racer(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < r->rounds; i++) {
        pthread_barrier_wait(r->barrier); /* a chunk is ready */
        memq_pool_dealloc(NULL, atomic_load(r->chunk));
        pthread_barrier_wait(r->barrier); /* both have freed it */
    }
    return NULL;
}

START_TEST(test_a_double_free_racing_itself_on_two_threads_frees_once)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    int rounds = under_valgrind() ? 50 : 500;
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 3);
    void *_Atomic chunk = NULL;
    racer r = {&barrier, &chunk, rounds};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, free_racer, &r), 0);
    for (int i = 0; i < rounds; i++) {
        void *x = NULL;
        ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, 2000, &x), 0);
        memq_release(pw.fp.p, 2048); /* the racers free it with no participation */
        atomic_store(&chunk, x);
        pthread_barrier_wait(&barrier);
        pthread_barrier_wait(&barrier);
        ck_assert_uint_eq(memq_pool_chunk_size(x), 0);
    }
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.double_frees, (uint64_t)rounds);
    ck_assert_uint_eq(st.in_use, 0);
    /* Every chunk went back once: the span counts none twice. */
    ck_assert_uint_eq(class_stats(&st, 2048)->chunks_in_use, 0);
    void *a = chunk_alloc(pool, &pw.fp, 2000), *b = chunk_alloc(pool, &pw.fp, 2000);
    ck_assert_ptr_ne(a, b);
    chunk_free(&pw.fp, a);
    chunk_free(&pw.fp, b);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

typedef struct exit_arg {
    memq_pool *pool;
    memq_participation *p;
    size_t cached_before_exit;
} exit_arg;

static void *use_cache_and_exit(void *arg)
{
    exit_arg *ea = arg;
    void *chunks[16];
    for (int i = 0; i < 16; i++)
        if (memq_pool_alloc(ea->pool, ea->p, 700, &chunks[i]) != 0)
            return NULL;
    for (int i = 0; i < 16; i++)
        memq_pool_dealloc(ea->p, chunks[i]);
    memq_pool_stats st;
    memq_pool_get_stats(ea->pool, &st);
    ea->cached_before_exit = st.cached;
    return NULL;
}

START_TEST(test_a_threads_cache_goes_back_to_the_pool_when_it_exits)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    exit_arg ea = {pool, pw.fp.p, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, use_cache_and_exit, &ea), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_uint_gt(ea.cached_before_exit, 0);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.cached, 0);
    ck_assert_uint_eq(st.in_use, 0);
    /* Its slack is counted at the pool's next call with a participation. */
    chunk_free(&pw.fp, chunk_alloc(pool, &pw.fp, 16));
    st = pool_stats(pool);
    ck_assert_uint_ge(st.slack, st.resident - st.in_use);
    ck_assert_uint_le(st.slack, st.resident - st.in_use + 128 * KIB);
    ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Lifetimes: pool_free, the tracker's own pool
 * ---------------------------------------------------------------------- */

START_TEST(test_chunks_outlive_their_freed_pool)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    char *x = chunk_alloc(pool, &pw.fp, 3000);
    char *big = chunk_alloc(pool, &pw.fp, 300000);
    char *y = chunk_alloc(pool, &pw.fp, 40);
    chunk_free(&pw.fp, y);
    memq_pool_free(pool);
    /* The slack is no longer counted; the claims stay. */
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), 3072 + memq_pool_class_size(300000));
    memset(x, 1, 3000);
    memset(big, 2, 300000);
    ck_assert_uint_eq(memq_pool_chunk_size(x), 3072);
    chunk_free(&pw.fp, big);
    chunk_free(&pw.fp, x); /* the last one: the pool's memory goes */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), 0);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_pool_cannot_be_created_for_a_shut_down_tracker)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *own = memq_tracker_pool(pw.w.t);
    ck_assert_ptr_nonnull(own);
    void *chunk = chunk_alloc(own, &pw.fp, 100);
    memq_tracker *t = pw.w.t;
    memq_tracker_free(t); /* the account and participation keep its memory */
    pw.w.t = NULL;
    memq_pool *pool = (memq_pool *)&pw;
    ck_assert_int_eq(memq_pool_new(t, NULL, &pool), MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(pool, (memq_pool *)&pw);
    ck_assert_ptr_null(memq_tracker_pool(t));
    ck_assert_int_eq(memq_pool_alloc(own, pw.fp.p, 100, &chunk), MEMQ_ESHUTDOWN);
    /* Chunks allocated before stay valid and can be freed. */
    memset(chunk, 0, 100);
    memq_pool_dealloc(pw.fp.p, chunk);
    memq__pool_tracker_gone(t);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_tracker_pool_is_created_once_with_the_trackers_settings)
{
    pool_world pw;
    world_init(&pw.w, 64 * MIB, 0);
    pw.w.cfg.pool_reserve = 64 * KIB;
    pw.w.cfg.pool_debug = true;
    world_start(&pw.w);
    pw.a = world_account(&pw.w, NULL);
    part_add(&pw.w, &pw.fp, 1, pw.a);
    memq_pool *own = memq_tracker_pool(pw.w.t);
    ck_assert_ptr_nonnull(own);
    ck_assert_ptr_eq(memq_tracker_pool(pw.w.t), own);
    /* Debug mode: a write after free is seen. */
    char *x = chunk_alloc(own, &pw.fp, 10);
    chunk_free(&pw.fp, x);
    x[0] = 1;
    chunk_free(&pw.fp, chunk_alloc(own, &pw.fp, 10));
    memq_pool_stats st = pool_stats(own);
    ck_assert_uint_eq(st.use_after_free, 1);
    /* The reserve: 64 KiB of 4 KiB pages at most. */
    void *c[32];
    for (int i = 0; i < 32; i++)
        c[i] = chunk_alloc(own, &pw.fp, 4096);
    for (int i = 0; i < 32; i++)
        chunk_free(&pw.fp, c[i]);
    ck_assert_uint_le(pool_stats(own).reserved, 64 * KIB);
    /* An exact tracker (cache_max 0) gets an exact pool: no thread cache. */
    ck_assert_uint_eq(pool_stats(own).cached, 0);
    ck_assert_uint_eq(world_stats(&pw.w).slack, pool_stats(own).slack);
    /* It is not the caller's to free. */
    memq_pool_free(own);
    ck_assert_ptr_eq(memq_tracker_pool(pw.w.t), own);
    pool_world_teardown(&pw);
}
END_TEST

typedef struct own_race {
    memq_tracker *t;
    pthread_barrier_t *barrier;
    memq_pool *got;
} own_race;

static void *get_own_pool(void *arg)
{
    own_race *r = arg;
    pthread_barrier_wait(r->barrier);
    r->got = memq_tracker_pool(r->t);
    return NULL;
}

START_TEST(test_threads_asking_for_the_tracker_pool_at_once_get_the_same_one)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    own_race r[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (own_race){pw.w.t, &barrier, NULL};
        ck_assert_int_eq(pthread_create(&th[i], NULL, get_own_pool, &r[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_ptr_nonnull(r[i].got);
        ck_assert_ptr_eq(r[i].got, r[0].got);
    }
    ck_assert_ptr_eq(memq_tracker_pool(pw.w.t), r[0].got);
    void *x = chunk_alloc(r[0].got, &pw.fp, 64);
    chunk_free(&pw.fp, x);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_tracker_pool_forgets_its_tracker_when_the_tracker_goes)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *own = memq_tracker_pool(pw.w.t);
    void *x = chunk_alloc(own, &pw.fp, 5000);
    part_free(&pw.fp);
    memq__pool_tracker_gone(pw.w.t);
    /* The dump no longer lists it, and its chunk can still be freed. */
    char *json = pool_dump(pw.w.t, MEMQ_DUMP_JSON);
    ck_assert_str_eq(json, "[]");
    free(json);
    memq_pool_dealloc(NULL, x);
    ck_assert_uint_eq(memq_pool_chunk_size(x), 0);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Dumps
 * ---------------------------------------------------------------------- */

static memq_pool *dump_fixture(pool_world *pw, void **chunks)
{
    pool_world_new(pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw->w, 256 * KIB, 0, false);
    chunks[0] = chunk_alloc(pool, &pw->fp, 514);
    chunks[1] = chunk_alloc(pool, &pw->fp, 514);
    chunks[2] = chunk_alloc(pool, &pw->fp, 4096);
    memq_pool_dealloc(pw->fp.p, (char *)chunks[2] + 1); /* one misuse */
    return pool;
}

static void dump_cleanup(pool_world *pw, memq_pool *pool, void **chunks)
{
    for (int i = 0; i < 3; i++)
        chunk_free(&pw->fp, chunks[i]);
    memq_pool_free(pool);
    pool_world_teardown(pw);
}

START_TEST(test_dump_text_shows_each_pool_and_class)
{
    pool_world pw;
    void *chunks[3];
    memq_pool *pool = dump_fixture(&pw, chunks);
    char *text = pool_dump(pw.w.t, MEMQ_DUMP_TEXT);
    ck_assert_msg(strstr(text, "pool ") == text, "%s", text);
    ck_assert_ptr_nonnull(strstr(text, "in use 5152"));
    ck_assert_ptr_nonnull(strstr(text, "interior 1"));
    ck_assert_ptr_nonnull(strstr(text, "\n  class 528: in use 2, cached 0, spans 1 partial"));
    ck_assert_ptr_nonnull(strstr(text, "\n  class 4096: in use 1,"));
    ck_assert_ptr_nonnull(strstr(text, "misuse 1\n"));
    ck_assert_ptr_null(strstr(text, "class 16:"));
    free(text);
    dump_cleanup(&pw, pool, chunks);
}
END_TEST

START_TEST(test_dump_json_is_an_array_of_pools_with_their_classes)
{
    pool_world pw;
    void *chunks[3];
    memq_pool *pool = dump_fixture(&pw, chunks);
    memq_pool *own = memq_tracker_pool(pw.w.t);
    ck_assert_ptr_nonnull(own);
    char *json = pool_dump(pw.w.t, MEMQ_DUMP_JSON);
    ck_assert_msg(json[0] == '[' && json[strlen(json) - 1] == ']', "%s", json);
    ck_assert_ptr_nonnull(strstr(json, "\"own\":false,\"in_use\":5152,"));
    ck_assert_ptr_nonnull(strstr(json, "\"own\":true,\"in_use\":0,"));
    ck_assert_ptr_nonnull(strstr(json, "\"interior\":1,"));
    ck_assert_ptr_nonnull(strstr(json, "{\"size\":528,\"chunks_in_use\":2,\"chunks_cached\":0,"
                                       "\"spans_partial\":1,"));
    ck_assert_ptr_nonnull(strstr(json, "{\"size\":4096,\"chunks_in_use\":1,"));
    free(json);
    dump_cleanup(&pw, pool, chunks);
}
END_TEST

START_TEST(test_dump_prometheus_labels_pool_and_class)
{
    pool_world pw;
    void *chunks[3];
    memq_pool *pool = dump_fixture(&pw, chunks);
    char *prom = pool_dump(pw.w.t, MEMQ_DUMP_PROMETHEUS);
    ck_assert_ptr_nonnull(strstr(prom, "# HELP memq_pool_in_use_bytes "));
    ck_assert_ptr_nonnull(strstr(prom, "# TYPE memq_pool_in_use_bytes gauge\n"));
    ck_assert_ptr_nonnull(strstr(prom, "# TYPE memq_pool_class_chunks_in_use gauge\n"));
    ck_assert_ptr_nonnull(strstr(prom, "\",class=\"528\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(prom, "memq_pool_interior_frees_total{pool=\""));
    ck_assert_ptr_nonnull(strstr(prom, "# TYPE memq_pool_returned_bytes_total counter\n"));
    /* One HELP line per metric, however many pools. */
    const char *first = strstr(prom, "# HELP memq_pool_slack_bytes");
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_null(strstr(first + 1, "# HELP memq_pool_slack_bytes"));
    free(prom);
    dump_cleanup(&pw, pool, chunks);
}
END_TEST

START_TEST(test_alloc_at_files_the_datas_stamp_in_the_age_index)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = memq_tracker_pool(pw.w.t);
    ck_assert_ptr_nonnull(pool);
    world_advance_to(&pw.w, world_now(&pw.w) + 100 * MS);
    memq_time stamp = world_now(&pw.w) - 50 * MS; /* older than the claim */
    void *chunk = NULL;
    ck_assert_int_eq(memq_pool_alloc_at(pool, pw.fp.p, 600, stamp, &chunk), 0);
    ck_assert_uint_ne(pw.a->slot, 0);
    ck_assert_uint_eq(pw.w.t->ages[pw.a->slot - 1].key, stamp);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), memq_pool_class_size(600));
    memq_pool_dealloc(pw.fp.p, chunk);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_the_trackers_dumps_carry_the_pools_statistics)
{
    pool_world pw;
    void *chunks[3];
    memq_pool *pool = dump_fixture(&pw, chunks);
    char *text = dump_to_string(pw.w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_msg(strncmp(text, "tracker:", 8) == 0, "%s", text);
    ck_assert_ptr_nonnull(strstr(text, "\n  class 528: in use 2,"));
    free(text);
    int rc;
    char *json = dump_to_string(pw.w.t, MEMQ_DUMP_JSON, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(json, "],\"pools\":[{"));
    ck_assert_msg(strcmp(json + strlen(json) - 3, "]}\n") == 0, "%s", json);
    free(json);
    char *prom = dump_to_string(pw.w.t, MEMQ_DUMP_PROMETHEUS, NULL);
    ck_assert_ptr_nonnull(strstr(prom, "\nmemq_used_bytes "));
    ck_assert_ptr_nonnull(strstr(prom, "\",class=\"528\"} 2\n"));
    free(prom);
    dump_cleanup(&pw, pool, chunks);
}
END_TEST

START_TEST(test_dump_of_a_tracker_without_pools_is_empty)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    char *text = pool_dump(pw.w.t, MEMQ_DUMP_TEXT);
    char *json = pool_dump(pw.w.t, MEMQ_DUMP_JSON);
    char *prom = pool_dump(pw.w.t, MEMQ_DUMP_PROMETHEUS);
    ck_assert_str_eq(text, "");
    ck_assert_str_eq(json, "[]");
    ck_assert_str_eq(prom, "");
    free(text);
    free(json);
    free(prom);
    ck_assert_int_eq(memq__pool_dump(pw.w.t, stdout, 7), MEMQ_EINVAL);
    ck_assert_int_eq(memq__pool_dump(NULL, stdout, MEMQ_DUMP_TEXT), MEMQ_EINVAL);
    pool_world_teardown(&pw);
}
END_TEST

static bool wired_oldest(void *self, memq_time *when)
{
    (void)self;
    (void)when;
    return false;
}

static memq_reclaim_status wired_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops wired_ops = {wired_oldest, wired_reclaim};

START_TEST(test_tracker_pool_goes_with_the_trackers_memory)
{
    for (int round = 0; round < 50; round++) {
        memq_config cfg;
        memq_config_init(&cfg);
        cfg.max = 64 * MIB;
        memq_tracker *t = NULL;
        ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
        memq_account *a = NULL;
        memq_participation *p = NULL;
        ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
        ck_assert_int_eq(memq_participant_register(a, &wired_ops, NULL, &p), 0);
        memq_pool *own = memq_tracker_pool(t);
        ck_assert_ptr_nonnull(own);
        void *kept = NULL, *x = NULL;
        ck_assert_int_eq(memq_pool_alloc(own, p, 600, &kept), 0);
        ck_assert_int_eq(memq_pool_alloc(own, p, 600, &x), 0);
        memq_pool_dealloc(p, x);
        /* The participation goes, then the tracker's last reference. */
        memq_participation_free(p);
        memq_account_unref(a);
        memq_tracker_free(t);
        /* Its pool forgot it: a new tracker at the same address gets a new
         * pool, and a dump for the old address lists nothing. */
        char *json = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&json, &len);
        ck_assert_int_eq(memq__pool_dump(t, f, MEMQ_DUMP_JSON), 0);
        fclose(f);
        ck_assert_str_eq(json, "[]");
        free(json);
        /* The chunk still allocated is valid until freed. */
        memset(kept, 1, 600);
        ck_assert_uint_eq(memq_pool_chunk_size(kept), 640);
        memq_pool_dealloc(NULL, kept);
        ck_assert_uint_eq(memq_pool_chunk_size(kept), 0);
    }
}
END_TEST

START_TEST(test_tracker_with_an_unused_pool_is_destroyed_cleanly)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * MIB;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_ptr_nonnull(memq_tracker_pool(t));
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Resources made to run out, fresh processes, and a calloc that glibc's
 * pthread_setspecific() reaches
 * ---------------------------------------------------------------------- */

/* A test that needs what the run cannot give says so on stderr. */
static void skipped(const char *test, const char *why)
{
    size_t n = strlen(test);
    if (n > 3 && strcmp(test + n - 3, "_fn") == 0) /* START_TEST's function */
        n -= 3;
    fprintf(stderr, "check_pool: %.*s skipped: %s\n", (int)n, test, why);
}

/* Address-space tricks (RLIMIT_AS, the mapping count) are not for
 * valgrind, which keeps its own map of the address space, nor for TSan,
 * which maps shadow memory for every mapping the program makes. */
static const char *no_vm_tricks(void)
{
#if defined(UNDER_TSAN)
    return "TSan maps shadow memory for each of the program's mappings";
#else
    return under_valgrind() ? "valgrind manages the address space itself" : NULL;
#endif
}

/* The process's address-space size (statm's first figure), read without
 * allocating; 0 if unreadable.  No assertion: also used outside tests. */
static size_t vm_size(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[128];
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[k > 0 ? k : 0] = '\0';
    return (size_t)strtoull(buf, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE);
}

/* RLIMIT_AS brought to `headroom` bytes above the process's size now, so
 * that the next mappings beyond it fail (ENOMEM); as_unsqueeze() puts
 * the old limit back.  Sized from the current size, so the sanitizers'
 * reservations are not in the way. */
typedef struct as_squeeze {
    struct rlimit old;
} as_squeeze;

static void as_squeeze_to(as_squeeze *s, size_t headroom)
{
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &s->old), 0);
    struct rlimit low = s->old;
    low.rlim_cur = (rlim_t)(vm_size() + headroom);
    if (s->old.rlim_cur != RLIM_INFINITY && low.rlim_cur > s->old.rlim_cur)
        low.rlim_cur = s->old.rlim_cur;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &low), 0);
}

static void as_unsqueeze(as_squeeze *s)
{
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &s->old), 0);
}

/*
 * The mapping count (vm.max_map_count) made to run out: a reservation
 * whose odd pages are made readable one by one, each a mapping of its
 * own, until the kernel refuses (ENOMEM), then single pages mapped until
 * mmap() refuses too; then every mmap() and every mprotect() that splits
 * a mapping fails.  vmas_room() unmaps n of the odd pages, so that n more
 * mappings can be made; vmas_refill() takes the count back to the limit;
 * vmas_release() unmaps everything.
 */
#define VMA_EXTRA 64

typedef struct vma_squeeze {
    char *base;
    size_t page, pages;
    size_t split; /* pages 1, 3, ..., 2 * split - 1 are mappings of their own */
    size_t freed; /* of those, the first `freed` are unmapped */
    void *extra[VMA_EXTRA];
    int n_extra;
} vma_squeeze;

static bool vmas_refill(vma_squeeze *v)
{
    for (;;) {
        if (2 * v->split + 1 >= v->pages)
            return false; /* the count never ran out */
        if (mprotect(v->base + (2 * v->split + 1) * v->page, v->page, PROT_READ) != 0)
            break;
        v->split++;
    }
    while (v->n_extra < VMA_EXTRA) {
        void *m = mmap(NULL, v->page, (v->n_extra & 1) ? PROT_NONE : PROT_READ,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            break;
        v->extra[v->n_extra++] = m;
    }
    return true;
}

/* False (nothing changed) if the count cannot be made to run out here. */
static bool vmas_fill(vma_squeeze *v)
{
    memset(v, 0, sizeof *v);
    v->page = (size_t)sysconf(_SC_PAGESIZE);
    long max = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f == NULL)
        return false;
    int got = fscanf(f, "%ld", &max);
    fclose(f);
    if (got != 1 || max <= 0 || max > 300000)
        return false;
    v->pages = 2 * ((size_t)max + 1024);
    v->base = mmap(NULL, v->pages * v->page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (v->base == MAP_FAILED) {
        v->base = NULL;
        return false;
    }
    if (!vmas_refill(v)) {
        munmap(v->base, v->pages * v->page);
        v->base = NULL;
        return false;
    }
    return true;
}

static void vmas_room(vma_squeeze *v, size_t n)
{
    for (; n > 0 && v->freed < v->split; n--, v->freed++)
        munmap(v->base + (2 * v->freed + 1) * v->page, v->page);
}

static void vmas_release(vma_squeeze *v)
{
    if (v->base != NULL)
        munmap(v->base, v->pages * v->page);
    v->base = NULL;
    while (v->n_extra > 0)
        munmap(v->extra[--v->n_extra], v->page);
}

/*
 * calloc, interposed for the whole program (the pattern of check_oom.c):
 * glibc's pthread_setspecific() allocates a second-level block of 32
 * keys with calloc(32, 16) the first time a thread sets a key from 32 on.
 * A thread that arms `calloc_trap` makes its next such call fail, or wait
 * at a gate until the test opens it; every other call goes to the real
 * calloc (the sanitizer's when there is one).
 */
extern void *__interceptor_calloc(size_t, size_t) __attribute__((weak));
extern void *__libc_calloc(size_t, size_t);

#define NO_SANITIZE __attribute__((no_sanitize("thread", "address", "undefined")))

enum { CALLOC_PASS, CALLOC_FAIL, CALLOC_GATE };
static _Thread_local int calloc_trap;
static atomic_int calloc_trapped;
static atomic_bool calloc_gate_entered, calloc_gate_open;

NO_SANITIZE void *calloc(size_t n, size_t size)
{
    if (calloc_trap != CALLOC_PASS && n == 32 && size == 16) {
        int trap = calloc_trap;
        calloc_trap = CALLOC_PASS;
        atomic_fetch_add(&calloc_trapped, 1);
        if (trap == CALLOC_FAIL)
            return NULL;
        atomic_store(&calloc_gate_entered, true);
        while (!atomic_load(&calloc_gate_open)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return __interceptor_calloc ? __interceptor_calloc(n, size) : __libc_calloc(n, size);
}

/*
 * Fresh processes: some paths run once per process (reserving the address
 * range, creating the thread-cache key).  in_fresh_process(name) runs the
 * test `name` alone in a new execution of this program (MEMQ_POOL_FRESH
 * says which; no fork mode), after its setup, and fails if it fails.
 * Under valgrind the new process runs natively.
 */
static char self_exe[4096];
extern char **environ;

static void in_fresh_process(const char *name)
{
    ck_assert_msg(self_exe[0] != '\0', "cannot find this program's path");
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    ck_assert_ptr_nonnull(envp);
    size_t k = 0;
    static const char *const drop[] = {"MEMQ_POOL_FRESH=", "CK_RUN_SUITE=", "CK_RUN_CASE=",
                                       "CK_INCLUDE_TAGS=", "CK_EXCLUDE_TAGS=", "CK_LOG_FILE_NAME=",
                                       "CK_XML_LOG_FILE_NAME=", "CK_TAP_LOG_FILE_NAME="};
    for (size_t i = 0; i < n; i++) {
        bool keep = true;
        for (size_t d = 0; d < sizeof drop / sizeof drop[0]; d++)
            if (strncmp(environ[i], drop[d], strlen(drop[d])) == 0)
                keep = false;
        if (keep)
            envp[k++] = environ[i];
    }
    char var[256];
    snprintf(var, sizeof var, "MEMQ_POOL_FRESH=%s", name);
    envp[k++] = var;
    envp[k] = NULL;
    char *argv[] = {self_exe, NULL};
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execve(self_exe, argv, envp);
        _exit(127);
    }
    free(envp);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s in a fresh process: %s %d", name,
                  WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* ----------------------------------------------------------------------
 * A world whose clock and log callbacks can run a hook once
 * ---------------------------------------------------------------------- */

typedef struct hook_world hook_world;
struct hook_world {
    fake_world w;
    void (*clock_hook)(hook_world *);
    void (*log_hook)(hook_world *);
    atomic_bool clock_armed, log_armed; /* one shot each */
    int clock_hooks, log_hooks;
    /* For the hooks. */
    memq_pool *pool;
    fake_part *fp, *other;
    memq_account *account;
    void *chunk;
    void **held;
    int n_held;
    size_t cap;
};

static memq_time hook_clock(void *ctx)
{
    hook_world *hw = ctx;
    if (atomic_exchange(&hw->clock_armed, false)) {
        hw->clock_hooks++;
        hw->clock_hook(hw);
    }
    return fake_clock_read(&hw->w.clock);
}

static void hook_log(void *ctx, int level, const char *msg)
{
    hook_world *hw = ctx;
    world_log(&hw->w, level, msg);
    if (atomic_exchange(&hw->log_armed, false)) {
        hw->log_hooks++;
        hw->log_hook(hw);
    }
}

static void hook_world_new(hook_world *hw, size_t max)
{
    memset(hw, 0, sizeof *hw);
    world_init(&hw->w, max, 0);
    hw->w.cfg.clock = hook_clock;
    hw->w.cfg.clock_ctx = hw;
    hw->w.cfg.log = hook_log;
    hw->w.cfg.log_ctx = hw;
    world_start(&hw->w);
}

/* ----------------------------------------------------------------------
 * Handles and sizes the pool refuses
 * ---------------------------------------------------------------------- */

START_TEST(test_handles_that_are_not_pools_are_refused_and_null_config_ignored)
{
    memq_pool_config_init(NULL); /* ignored */
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    /* Zeroed memory is not a pool: every call that takes a handle says so. */
    static _Alignas(64) unsigned char not_a_pool[1 << 16];
    memq_pool *fake = (memq_pool *)not_a_pool;
    void *chunk = (void *)&pw;
    ck_assert_int_eq(memq_pool_alloc(fake, pw.fp.p, 16, &chunk), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_alloc_at(fake, pw.fp.p, 16, world_now(&pw.w), &chunk), MEMQ_EINVAL);
    ck_assert_ptr_eq(chunk, (void *)&pw);
    memq_pool_stats st;
    memset(&st, 0x5a, sizeof st);
    ck_assert_int_eq(memq_pool_get_stats(fake, &st), MEMQ_EINVAL);
    ck_assert_int_eq(memq_pool_get_stats(pool, NULL), MEMQ_EINVAL);
    ck_assert_uint_eq(st.in_use, (size_t)0x5a5a5a5a5a5a5a5aull); /* untouched */
    memq_pool_free(fake); /* ignored */
    ck_assert_ptr_null(memq__pool_tracker(NULL));
    ck_assert_ptr_null(memq__pool_tracker(fake));
    ck_assert_ptr_eq(memq__pool_tracker(pool), pw.w.t);
    ck_assert_int_eq(memq__pool_dump(pw.w.t, NULL, MEMQ_DUMP_TEXT), MEMQ_EINVAL);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_a_size_whose_pages_do_not_fit_overflows_and_one_no_mapping_holds_is_enomem)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    memq_pool *debug = pool_make(&pw.w, 0, 0, true);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    memq_pool_stats before = pool_stats(pool);
    size_t used = memq_tracker_used(pw.w.t);
    void *chunk = (void *)&pw;
    /* Rounded up to whole pages, these do not fit in size_t. */
    ck_assert_uint_eq(memq_pool_class_size(SIZE_MAX - page + 2), 0);
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, SIZE_MAX, &chunk), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, SIZE_MAX - page + 2, &chunk), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_pool_alloc(debug, pw.fp.p, SIZE_MAX, &chunk), MEMQ_EOVERFLOW);
    /* 4 EiB fit in size_t but in no address space: the mapping fails. */
    ck_assert_uint_ne(memq_pool_class_size((size_t)1 << 62), 0);
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, (size_t)1 << 62, &chunk), MEMQ_ENOMEM);
    ck_assert_int_eq(memq_pool_alloc(debug, pw.fp.p, (size_t)1 << 62, &chunk), MEMQ_ENOMEM);
    ck_assert_ptr_eq(chunk, (void *)&pw);
    /* Nothing claimed, nothing allocated, nothing counted. */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_stats after = pool_stats(pool);
    ck_assert_uint_eq(after.large_chunks, 0);
    ck_assert_uint_eq(after.in_use, 0);
    ck_assert_uint_eq(after.metadata, before.metadata);
    ck_assert_uint_eq(pool_stats(debug).large_chunks, 0);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), used);
    memq_pool_free(pool);
    memq_pool_free(debug);
    pool_world_teardown(&pw);
}
END_TEST

/* The header and memq_pool_alloc(3) promise MEMQ_EOVERFLOW only when n
 * rounded up to whole pages does not fit in size_t, which is also when
 * memq_pool_class_size() returns 0; alloc_large() refuses more. */
START_TEST(test_a_size_whose_pages_fit_is_not_an_overflow)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t n = SIZE_MAX - 4 * page; /* rounds to SIZE_MAX - 4 pages + 1 */
    ck_assert_uint_ne(memq_pool_class_size(n), 0);
    void *chunk = NULL;
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, n, &chunk), MEMQ_ENOMEM);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_a_claim_that_would_overflow_the_total_allocates_nothing)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    memq_pool *cached = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    void *keep = chunk_alloc(pool, &pw.fp, 64);
    void *keep2 = chunk_alloc(cached, &pw.fp, 64);
    /* Another participation takes the total to a few bytes below the most
     * a claim may reach. */
    fake_part hog;
    part_add(&pw.w, &hog, 2, world_account(&pw.w, NULL));
    size_t room = MEMQ_TOTAL_MAX - memq_tracker_used(pw.w.t) - 8;
    ck_assert_int_eq(memq_claim(hog.p, room), 0);
    memq_pool_stats st0 = pool_stats(pool), cst0 = pool_stats(cached);
    /* A chunk on pages already counted as slack changes nothing in the
     * total; these need new pages. */
    void *chunk = (void *)&hog;
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, 5000, &chunk), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_pool_alloc(cached, pw.fp.p, 3000, &chunk), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_pool_alloc(pool, pw.fp.p, 1 * MIB, &chunk), MEMQ_EOVERFLOW);
    ck_assert_ptr_eq(chunk, (void *)&hog);
    memq_pool_stats st1 = pool_stats(pool), cst1 = pool_stats(cached);
    ck_assert_uint_eq(st1.in_use, st0.in_use);
    ck_assert_uint_eq(st1.large_chunks, 0);
    ck_assert_uint_eq(cst1.in_use, cst0.in_use);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 128);
    memq_release(hog.p, room);
    /* Below the limit again, the same calls succeed. */
    void *a = chunk_alloc(pool, &pw.fp, 5000), *b = chunk_alloc(cached, &pw.fp, 3000);
    void *c = chunk_alloc(pool, &pw.fp, 1 * MIB);
    chunk_free(&pw.fp, a);
    chunk_free(&pw.fp, b);
    chunk_free(&pw.fp, c);
    chunk_free(&pw.fp, keep);
    chunk_free(&pw.fp, keep2);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    memq_pool_free(pool);
    memq_pool_free(cached);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_alloc_at_the_end_of_time_keeps_the_account_a_candidate)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    /* The clock reads MEMQ_TIME_MAX, and so does the data's stamp. */
    world_advance_to(&pw.w, MEMQ_TIME_MAX);
    void *chunk = NULL;
    ck_assert_int_eq(memq_pool_alloc_at(pool, pw.fp.p, 100, MEMQ_TIME_MAX, &chunk), 0);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 112);
    /* The account is filed in the age index with an age (MEMQ_TIME_MAX
     * itself would mean "set aside"): it can still be a victim. */
    ck_assert_uint_ne(pw.a->slot, 0);
    ck_assert_uint_eq(pw.w.t->ages[pw.a->slot - 1].key, MEMQ_TIME_MAX - 1);
    memq_pool_dealloc(pw.fp.p, chunk);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_a_pool_whose_tracker_is_gone_refuses_to_allocate)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *own = memq_tracker_pool(pw.w.t);
    ck_assert_ptr_nonnull(own);
    void *x = chunk_alloc(own, &pw.fp, 100);
    /* What the core does when the tracker's memory goes. */
    memq__pool_tracker_gone(pw.w.t);
    ck_assert_ptr_null(memq__pool_tracker(own));
    void *chunk = (void *)&pw;
    ck_assert_int_eq(memq_pool_alloc(own, pw.fp.p, 100, &chunk), MEMQ_ESHUTDOWN);
    ck_assert_int_eq(memq_pool_alloc(own, pw.fp.p, 1 * MIB, &chunk), MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(chunk, (void *)&pw);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 112);
    /* Its chunk is still valid and is freed as usual. */
    memset(x, 7, 100);
    chunk_free(&pw.fp, x);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_a_freed_pool_with_chunks_left_ignores_a_second_free_and_misuse)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *older = pool_make(&pw.w, 0, 0, false);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    char *x = chunk_alloc(pool, &pw.fp, 300);
    /* Freed before the older pool: the registry keeps the older one. */
    memq_pool_free(pool);
    ck_assert_ptr_null(memq__pool_tracker(pool));
    ck_assert_ptr_eq(memq__pool_tracker(older), pw.w.t);
    ck_assert_uint_eq(world_stats(&pw.w).slack, pool_stats(older).slack);
    /* A second free while a chunk keeps the pool's memory changes nothing:
     * the tracker's reference is not dropped twice, no slack subtracted. */
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&pw.w).slack, pool_stats(older).slack);
    /* Misuse of the chunk is ignored: nothing freed or released, and the
     * pool no longer reports to the tracker. */
    memq_pool_dealloc(pw.fp.p, x + 16);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 320);
    ck_assert_uint_eq(memq_pool_chunk_size(x), 320);
    memset(x, 1, 300);
    chunk_free(&pw.fp, x); /* the last chunk: the pool's memory goes */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    ck_assert_uint_eq(memq_pool_chunk_size(x), 0);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), pool_stats(older).slack);
    memq_pool_free(older);
    ck_assert_uint_eq(memq_tracker_used(pw.w.t), 0);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Pointers just past a span's last chunk or a large chunk's end
 * ---------------------------------------------------------------------- */

START_TEST(test_pointers_past_a_spans_last_chunk_or_a_large_chunks_end)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 0, false);
    /* 256 KiB / 48 leaves 16 bytes after the last chunk of the span. */
    char *c48 = chunk_alloc(pool, &pw.fp, 48);
    char *span = (char *)((uintptr_t)c48 & ~(uintptr_t)(256 * KIB - 1));
    char *tail = span + (256 * KIB / 48) * 48 + 8;
    ck_assert_uint_eq(memq_pool_chunk_size(tail), 0);
    memq_pool_dealloc(pw.fp.p, tail);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.interior, 1);
    ck_assert_uint_eq(class_stats(&st, 48)->misuse, 1);
    ck_assert_uint_eq(class_stats(&st, 48)->chunks_in_use, 1);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 1);
    /* A large chunk of 17 pages does not fill its 256 KiB granule: what
     * follows it is not the pool's. */
    char *big = chunk_alloc(pool, &pw.fp, 65537);
    size_t bytes = memq_pool_chunk_size(big);
    ck_assert_uint_eq(bytes, memq_pool_class_size(65537));
    ck_assert_uint_lt(bytes, 256 * KIB - 64);
    ck_assert_uint_eq(memq_pool_chunk_size(big + 4096), 0);
    ck_assert_uint_eq(memq_pool_chunk_size(big + bytes + 64), 0);
    uint64_t foreign = st.foreign;
    memq_pool_dealloc(pw.fp.p, big + bytes + 64);
    st = pool_stats(pool);
    ck_assert_uint_eq(st.foreign, foreign + 1);
    ck_assert_uint_eq(st.interior, 1);
    ck_assert_uint_eq(st.large_chunks, 1);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 48 + bytes);
    /* Freed with no participation (its claim was moved away first):
     * unmapped, nothing released. */
    memq_release(pw.fp.p, bytes);
    pw.fp.claimed -= bytes;
    memq_pool_dealloc(NULL, big);
    st = pool_stats(pool);
    ck_assert_uint_eq(st.large_chunks, 0);
    ck_assert_uint_eq(st.large_bytes, 0);
    ck_assert_uint_eq(st.in_use, 48);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 48);
    ck_assert_uint_eq(memq_pool_chunk_size(big), 0);
    /* A foreign pointer with no participation: counted, and no tracker to
     * tell. */
    int local = 0;
    memq_pool_dealloc(NULL, &local);
    ck_assert_uint_eq(pool_stats(pool).foreign, foreign + 2);
    chunk_free(&pw.fp, c48);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* The header: misuse, "a pointer the pool never gave out" included, is
 * counted in the tracker's misuse_events, also when it lies in the last
 * granule of a large chunk, past its end (found through the large chunk's
 * table entry; before 2026-12-03 dealloc_large() counted it in `foreign`
 * and told nobody). */
START_TEST(test_a_foreign_pointer_after_a_large_chunk_is_reported_to_the_tracker)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    char *big = chunk_alloc(pool, &pw.fp, 65537);
    size_t bytes = memq_pool_chunk_size(big);
    int local = 0;
    memq_pool_dealloc(pw.fp.p, &local);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 1);
    memq_pool_dealloc(pw.fp.p, big + bytes + 64);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 2);
    chunk_free(&pw.fp, big);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Callbacks that run in the middle of a pool call
 * ---------------------------------------------------------------------- */

/* The release of a large chunk being freed logs a misuse (the chunk's
 * participation claims less than its size); the log callback frees the
 * same chunk again, before the first free has unmapped it. */
static void free_big_again(hook_world *hw)
{
    memq_pool_dealloc(NULL, hw->chunk);
}

START_TEST(test_a_large_chunk_freed_again_during_its_free_is_a_double_free)
{
    hook_world hw;
    hook_world_new(&hw, 64 * MIB);
    memq_account *a = world_account(&hw.w, NULL);
    fake_part fp;
    part_add(&hw.w, &fp, 1, a);
    memq_pool *pool = pool_make(&hw.w, 0, 0, false);
    void *big = chunk_alloc(pool, &fp, 1 * MIB);
    memq_release(fp.p, 1 * MIB - 4096); /* wrongly: it claims 4 KiB now */
    hw.chunk = big;
    hw.log_hook = free_big_again;
    atomic_store(&hw.log_armed, true);
    memq_pool_dealloc(fp.p, big);
    ck_assert_int_eq(hw.log_hooks, 1);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.double_frees, 1);
    ck_assert_uint_eq(st.large_chunks, 0);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(memq_pool_chunk_size(big), 0);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    /* Both misuses reached the tracker: the release, and the double free. */
    ck_assert_uint_eq(world_stats(&hw.w).misuse_events, 2);
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&hw.w).slack, 0);
    world_teardown(&hw.w);
}
END_TEST

/* The tracker's first misuse is logged while the pool reports it; the log
 * callback misuses the pool again, or allocates (a new span: more slack):
 * what it did is reported too, before the first call returns. */
static void misuse_again(hook_world *hw)
{
    memq_pool_dealloc(hw->fp->p, (char *)hw->chunk + 8);
}

static void allocate_meanwhile(hook_world *hw)
{
    void *x = NULL;
    if (memq_pool_alloc(hw->pool, hw->fp->p, 5000, &x) == 0)
        hw->held[0] = x;
}

START_TEST(test_what_the_log_callback_does_while_misuse_is_reported_is_reported_too)
{
    for (int allocate = 0; allocate < 2; allocate++) {
        hook_world hw;
        hook_world_new(&hw, 64 * MIB);
        fake_part fp;
        part_add(&hw.w, &fp, 1, world_account(&hw.w, NULL));
        memq_pool *pool = pool_make(&hw.w, 0, 0, false);
        char *x = chunk_alloc(pool, &fp, 100);
        void *held[1] = {NULL};
        hw.pool = pool;
        hw.fp = &fp;
        hw.chunk = x;
        hw.held = held;
        hw.log_hook = allocate ? allocate_meanwhile : misuse_again;
        atomic_store(&hw.log_armed, true);
        memq_pool_dealloc(fp.p, x + 16);
        ck_assert_int_eq(hw.log_hooks, 1);
        /* Counted before the free returned. */
        size_t counted = world_stats(&hw.w).slack;
        ck_assert_uint_eq(world_stats(&hw.w).misuse_events, allocate ? 1 : 2);
        ck_assert_int_eq(atomic_load(&hw.w.logs), 1); /* the first only */
        memq_pool_stats st = pool_stats(pool);
        ck_assert_uint_eq(st.slack, counted);
        ck_assert_uint_eq(st.slack, st.resident - st.in_use);
        ck_assert_uint_eq(st.interior, allocate ? 1 : 2);
        ck_assert_uint_eq(class_stats(&st, 112)->misuse, allocate ? 1 : 2);
        ck_assert_uint_eq(memq_participation_claimed(fp.p), allocate ? 112 + 5120 : 112);
        if (allocate) {
            ck_assert_ptr_nonnull(held[0]);
            memq_pool_dealloc(fp.p, held[0]);
        }
        chunk_free(&fp, x);
        memq_pool_free(pool);
        world_teardown(&hw.w);
    }
}
END_TEST

/* The claim of a chunk just taken from the thread's cache reads the clock
 * (its participation holds nothing); the clock callback fills the cache
 * to the brim and closes the account, so the claim fails: the chunk goes
 * back to its span. */
static void fill_cache_and_close(hook_world *hw)
{
    for (int i = 0; i < hw->n_held; i++) {
        memq_pool_stats st;
        memq_pool_get_stats(hw->pool, &st);
        size_t cached = 0;
        for (int k = 0; k < MEMQ_POOL_CLASSES; k++)
            if (st.class_stats[k].size == 64)
                cached = st.class_stats[k].chunks_cached;
        if (cached >= hw->cap)
            break;
        memq_pool_dealloc(hw->fp->p, hw->held[i]);
        hw->held[i] = NULL;
    }
    world_unref(&hw->w, hw->account);
}

START_TEST(test_a_chunk_whose_claim_fails_goes_back_even_if_the_cache_filled_meanwhile)
{
    hook_world hw;
    hook_world_new(&hw, 64 * MIB);
    fake_part fp, late;
    part_add(&hw.w, &fp, 1, world_account(&hw.w, NULL));
    memq_account *closing = world_account(&hw.w, NULL);
    part_add(&hw.w, &late, 2, closing);
    memq_pool *pool = pool_make(&hw.w, 256 * KIB, 128 * KIB, false);
    enum { N = 200 };
    void **held = calloc(N, sizeof *held);
    ck_assert_ptr_nonnull(held);
    /* The magazine's capacity: the most chunks the cache ever holds. */
    for (int i = 0; i < N; i++)
        held[i] = chunk_alloc(pool, &fp, 64);
    size_t cap = 0;
    for (int i = 0; i < N; i++) {
        chunk_free(&fp, held[i]);
        memq_pool_stats st = pool_stats(pool);
        size_t cached = class_stats(&st, 64)->chunks_cached;
        cap = cached > cap ? cached : cap;
    }
    ck_assert_uint_gt(cap, 1);
    for (int i = 0; i < N; i++)
        held[i] = chunk_alloc(pool, &fp, 64);
    fp.claimed = memq_participation_claimed(fp.p);
    hw.pool = pool;
    hw.fp = &fp;
    hw.account = closing;
    hw.held = held;
    hw.n_held = N;
    hw.cap = cap;
    hw.clock_hook = fill_cache_and_close;
    atomic_store(&hw.clock_armed, true);
    void *chunk = (void *)&hw;
    ck_assert_int_eq(memq_pool_alloc(pool, late.p, 64, &chunk), MEMQ_ECLOSED);
    ck_assert_int_eq(hw.clock_hooks, 1);
    ck_assert_ptr_eq(chunk, (void *)&hw);
    ck_assert_uint_eq(memq_participation_claimed(late.p), 0);
    int kept = 0;
    for (int i = 0; i < N; i++)
        kept += held[i] != NULL;
    memq_pool_stats st = pool_stats(pool);
    const memq_pool_class_stats *cs = class_stats(&st, 64);
    ck_assert_uint_eq(cs->chunks_cached, cap);
    ck_assert_uint_eq(cs->chunks_in_use, (size_t)kept);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), (size_t)kept * 64);
    /* The chunk taken for the failed claim is in one place only: no chunk
     * is handed out twice. */
    void **again = calloc(2 * N, sizeof *again);
    ck_assert_ptr_nonnull(again);
    int n = 0;
    for (int i = 0; i < N; i++)
        if (held[i] != NULL)
            again[n++] = held[i];
    while (n < 2 * N)
        again[n++] = chunk_alloc(pool, &fp, 64);
    qsort(again, (size_t)n, sizeof *again, by_address);
    for (int i = 1; i < n; i++)
        ck_assert_ptr_ne(again[i - 1], again[i]);
    for (int i = 0; i < n; i++)
        chunk_free(&fp, again[i]);
    free(again);
    free(held);
    st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.double_frees + st.interior, 0);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    memq_pool_free(pool);
    world_teardown(&hw.w);
}
END_TEST

START_TEST(test_a_debug_pools_cache_takes_back_a_chunk_whose_claim_fails)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, true);
    memq_account *closed = world_account(&pw.w, NULL);
    fake_part fp;
    part_add(&pw.w, &fp, 2, closed);
    world_unref(&pw.w, closed);
    void *chunk = (void *)&fp;
    ck_assert_int_eq(memq_pool_alloc(pool, fp.p, 64, &chunk), MEMQ_ECLOSED);
    ck_assert_ptr_eq(chunk, (void *)&fp);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_gt(class_stats(&st, 64)->chunks_cached, 0);
    /* The chunk is handed out again, unharmed. */
    char *x = chunk_alloc(pool, &pw.fp, 64);
    memset(x, 1, 64);
    chunk_free(&pw.fp, x);
    st = pool_stats(pool);
    ck_assert_uint_eq(st.use_after_free + st.double_frees, 0);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Thread caches: exits, sweeps, destructors, owned spans
 * ---------------------------------------------------------------------- */

/* Exact accounting but for the thread caches: what the tracker counts is
 * what the pool says it counts, between the pool's true slack and that
 * plus `cache` per thread. */
static void check_slack(pool_world *pw, memq_pool *pool, size_t cache, size_t threads)
{
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_ge(st.slack, st.resident - st.in_use);
    ck_assert_uint_le(st.slack, st.resident - st.in_use + cache * threads);
    ck_assert_uint_eq(world_stats(&pw->w).slack, st.slack);
}

typedef struct visitor {
    memq_pool *pools[4];
    int n;
    memq_participation *p;
    pthread_barrier_t *barrier; /* NULL: none */
    int rc;
} visitor;

/* Allocate and free one chunk in each pool, in order. */
static void *visit_pools(void *arg)
{
    visitor *v = arg;
    for (int i = 0; i < v->n; i++) {
        void *x = NULL;
        int rc = memq_pool_alloc(v->pools[i], v->p, 100, &x);
        if (rc != 0) {
            v->rc = rc;
            continue;
        }
        memset(x, 1, 100);
        memq_pool_dealloc(v->p, x);
    }
    return NULL;
}

START_TEST(test_a_thread_exit_is_counted_by_the_next_lock_free_call)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    size_t cache = 128 * KIB;
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, cache, false);
    fake_part other;
    part_add(&pw.w, &other, 2, world_account(&pw.w, NULL));
    /* This thread's cache holds chunks of 640 bytes. */
    void *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = chunk_alloc(pool, &pw.fp, 600);
    for (int i = 0; i < 4; i++)
        chunk_free(&pw.fp, c[i]);
    void *mine = chunk_alloc(pool, &pw.fp, 600);
    for (int round = 0; round < 2; round++) {
        /* Another thread uses the pool and exits: its cache goes back, and
         * the change waits for a call with a participation. */
        visitor v = {{pool}, 1, other.p, NULL, 0};
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, visit_pools, &v), 0);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_int_eq(v.rc, 0);
        size_t counted = world_stats(&pw.w).slack;
        /* An allocation, then a free, from this thread's cache. */
        if (round == 0) {
            void *x = chunk_alloc(pool, &pw.fp, 600);
            chunk_free(&pw.fp, mine);
            mine = x;
        } else {
            chunk_free(&pw.fp, mine);
        }
        size_t now = world_stats(&pw.w).slack; /* before any statistics call */
        ck_assert_uint_lt(now, counted);
        memq_pool_stats st = pool_stats(pool);
        ck_assert_uint_eq(st.slack, now);
        check_slack(&pw, pool, cache, 1);
    }
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

typedef struct sweeper {
    memq_pool *a, *b, *c, *d;
    memq_participation *p;
    pthread_barrier_t barrier;
    int rc;
} sweeper;

static void *sweep_thread(void *arg)
{
    sweeper *s = arg;
    visitor v = {{s->a, s->b}, 2, s->p, NULL, 0};
    visit_pools(&v);
    pthread_barrier_wait(&s->barrier); /* the test frees a */
    pthread_barrier_wait(&s->barrier);
    v = (visitor){{s->c, s->d}, 2, s->p, NULL, v.rc};
    visit_pools(&v);
    pthread_barrier_wait(&s->barrier); /* the test frees d */
    pthread_barrier_wait(&s->barrier);
    s->rc = v.rc;
    return NULL; /* exits with caches of b, c and of the freed d */
}

START_TEST(test_caches_of_freed_pools_are_swept_by_their_thread)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    size_t cache = 64 * KIB;
    memq_pool *a = pool_make(&pw.w, 0, cache, false);
    memq_pool *b = pool_make(&pw.w, 0, cache, false);
    memq_pool *c = pool_make(&pw.w, 0, cache, false);
    memq_pool *d = pool_make(&pw.w, 0, cache, false);
    fake_part other;
    part_add(&pw.w, &other, 2, world_account(&pw.w, NULL));
    sweeper s = {a, b, c, d, other.p, {{0}}, 0};
    pthread_barrier_init(&s.barrier, NULL, 2);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, sweep_thread, &s), 0);
    pthread_barrier_wait(&s.barrier);
    memq_pool_free(a); /* takes the thread's cache back */
    pthread_barrier_wait(&s.barrier);
    pthread_barrier_wait(&s.barrier);
    memq_pool_free(d); /* the newest pool */
    pthread_barrier_wait(&s.barrier);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_barrier_destroy(&s.barrier);
    ck_assert_int_eq(s.rc, 0);
    memq_pool_stats sb = pool_stats(b), sc = pool_stats(c);
    ck_assert_uint_eq(sb.cached + sc.cached, 0);
    ck_assert_uint_eq(sb.in_use + sc.in_use, 0);
    /* Within what the thread that used them may add, counted exactly by
     * the tracker. */
    ck_assert_uint_ge(sb.slack, sb.resident);
    ck_assert_uint_le(sb.slack, sb.resident + cache);
    ck_assert_uint_ge(sc.slack, sc.resident);
    ck_assert_uint_le(sc.slack, sc.resident + cache);
    ck_assert_uint_eq(world_stats(&pw.w).slack, sb.slack + sc.slack);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    ck_assert_uint_eq(memq_participation_claimed(other.p), 0);
    memq_pool_free(b);
    memq_pool_free(c);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

/* A thread-specific destructor that uses the pool in every round of
 * destructors, the rounds after the pool's own destructor gave the
 * thread's cache back included (it asks for every round there is, but
 * under TSan, which finishes the thread in the last one). */
#if defined(UNDER_TSAN)
#define LATE_ROUNDS 2 /* TSan tears the thread down in the last round */
#else
#define LATE_ROUNDS PTHREAD_DESTRUCTOR_ITERATIONS
#endif

typedef struct late_user {
    memq_pool *pool;
    memq_participation *p;
    pthread_key_t key;
    int calls, rc;
    size_t size, claimed_after;
} late_user;

static void late_destructor(void *arg)
{
    late_user *u = arg;
    u->calls++;
    void *x = NULL;
    int rc = memq_pool_alloc(u->pool, u->p, 100, &x);
    if (rc != 0) {
        u->rc = rc;
    } else {
        u->size = memq_pool_chunk_size(x);
        memset(x, 2, 100);
        memq_pool_dealloc(u->p, x);
    }
    u->claimed_after = memq_participation_claimed(u->p);
    if (u->calls < LATE_ROUNDS)
        pthread_setspecific(u->key, u);
}

static void *use_pool_then_exit(void *arg)
{
    late_user *u = arg;
    visitor v = {{u->pool}, 1, u->p, NULL, 0};
    visit_pools(&v);
    pthread_setspecific(u->key, u);
    return NULL;
}

START_TEST(test_a_thread_destructor_may_use_the_pool_after_its_cache_went_back)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 128 * KIB, false);
    memq_pool *keyer = pool_make(&pw.w, 0, 128 * KIB, false);
    fake_part other;
    part_add(&pw.w, &other, 2, world_account(&pw.w, NULL));
    /* The pool's thread key exists before the test's: its destructor comes
     * first in each round. */
    chunk_free(&pw.fp, chunk_alloc(keyer, &pw.fp, 100));
    late_user u = {pool, other.p, 0, 0, 0, 0, 1};
    ck_assert_int_eq(pthread_key_create(&u.key, late_destructor), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, use_pool_then_exit, &u), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_key_delete(u.key);
    ck_assert_int_eq(u.calls, LATE_ROUNDS);
    ck_assert_int_eq(u.rc, 0);
    ck_assert_uint_eq(u.size, 112);
    ck_assert_uint_eq(u.claimed_after, 0);
    /* No cache of the exited thread is left: nothing cached, nothing
     * counted beyond the pool's true slack. */
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.cached, 0);
    ck_assert_uint_eq(st.double_frees + st.interior, 0);
    ck_assert_uint_eq(st.slack, st.resident);
    memq_pool_free(pool);
    memq_pool_free(keyer);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

START_TEST(test_an_empty_span_a_threads_cache_refills_from_counts_as_empty)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 256 * KIB, 128 * KIB, false);
    /* Chunks of 64 KiB, four to a span: the fifth comes from a second span,
     * which this thread's cache then refills from. */
    void *c[5];
    for (int i = 0; i < 5; i++)
        c[i] = chunk_alloc(pool, &pw.fp, 65536);
    ck_assert(!in_span_of(c[4], c[0]));
    chunk_free(&pw.fp, c[4]); /* into the cache */
    chunk_free(&pw.fp, c[0]); /* the cache is full: c[4] goes back to its span */
    memq_pool_stats st = pool_stats(pool);
    const memq_pool_class_stats *cs = class_stats(&st, 65536);
    ck_assert_uint_eq(cs->chunks_in_use, 3);
    ck_assert_uint_eq(cs->chunks_cached, 1);
    ck_assert_uint_eq(cs->spans_full, 1);    /* a chunk in a cache is taken */
    ck_assert_uint_eq(cs->spans_empty, 1);   /* the second, its pages kept */
    ck_assert_uint_eq(cs->spans_partial, 0);
    ck_assert_uint_eq(cs->resident, 5 * 65536);
    ck_assert_uint_eq(st.reserved, 65536);
    for (int i = 1; i < 4; i++)
        chunk_free(&pw.fp, c[i]);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* A thread's exit gives its cache back (cache_detach()): the spans its
 * cache refilled from are disowned and, empty with no page resident,
 * freed, and their class's slack is settled at once, so the tracker stops
 * counting their metadata (it used to until the class was used again,
 * beyond the documented bound: at most `cache` bytes above the pool's
 * true slack per thread that used the pool). */
static void *touch_every_cached_class(void *arg)
{
    visitor *v = arg;
    for (size_t n = 16; n <= 8192; n = memq_pool_class_size(n) + 1) {
        void *x = NULL;
        if (memq_pool_alloc(v->pools[0], v->p, n, &x) != 0) {
            v->rc = -1;
            break;
        }
        memq_pool_dealloc(v->p, x);
    }
    return NULL;
}

START_TEST(test_a_thread_exit_settles_the_slack_of_the_spans_it_frees)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    size_t cache = 16 * KIB;
    memq_pool *pool = pool_make(&pw.w, 0, cache, false);
    fake_part other;
    part_add(&pw.w, &other, 2, world_account(&pw.w, NULL));
    visitor v = {{pool}, 1, other.p, NULL, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, touch_every_cached_class, &v), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(v.rc, 0);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use + st.cached, 0);
    ck_assert_uint_le(st.slack, st.resident - st.in_use + cache); /* one thread used it */
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* memq_pool_stats.returned is "bytes given back to the OS so far": a large
 * chunk, unmapped when freed, counts too. */
START_TEST(test_a_freed_large_chunk_is_counted_as_returned)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    uint64_t before = pool_stats(pool).returned;
    chunk_free(&pw.fp, chunk_alloc(pool, &pw.fp, 1 * MIB));
    ck_assert_uint_ge(pool_stats(pool).returned, before + 1 * MIB);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * Dumps: only the tracker's pools; classes with a history
 * ---------------------------------------------------------------------- */

START_TEST(test_dumps_list_the_trackers_pools_only_and_classes_with_a_history)
{
    pool_world pw, other;
    pool_world_new(&pw, 64 * MIB);
    pool_world_new(&other, 64 * MIB);
    memq_pool *theirs = pool_make(&other.w, 0, 0, false);
    void *t = chunk_alloc(theirs, &other.fp, 3000);
    memq_pool *cached = pool_make(&pw.w, 0, 128 * KIB, false);
    memq_pool *plain = pool_make(&pw.w, 0, 0, false);
    /* Class 640: only in this thread's cache.  Class 4096: every chunk
     * freed, its pages given back, its span gone. */
    chunk_free(&pw.fp, chunk_alloc(cached, &pw.fp, 600));
    chunk_free(&pw.fp, chunk_alloc(plain, &pw.fp, 4096));
    memq_pool_stats sc = pool_stats(cached), sp = pool_stats(plain);
    ck_assert_uint_gt(class_stats(&sc, 640)->chunks_cached, 0);
    ck_assert_uint_eq(class_stats(&sp, 4096)->resident, 0);
    ck_assert_uint_eq(class_stats(&sp, 4096)->returned, 4096);
    char *text = pool_dump(pw.w.t, MEMQ_DUMP_TEXT);
    ck_assert_ptr_nonnull(strstr(text, "\n  class 640: in use 0, cached "));
    ck_assert_ptr_nonnull(strstr(text, "\n  class 4096: in use 0, cached 0, spans 0 partial 0 full "
                                       "0 empty, resident 0, returned 4096, misuse 0\n"));
    ck_assert_ptr_null(strstr(text, "class 3072")); /* the other tracker's */
    ck_assert_ptr_null(strstr(text, "in use 3072"));
    free(text);
    /* A counter stays listed once its class is empty. */
    char *prom = pool_dump(pw.w.t, MEMQ_DUMP_PROMETHEUS);
    ck_assert_ptr_nonnull(strstr(prom, "memq_pool_class_returned_bytes_total{pool=\""));
    ck_assert_ptr_nonnull(strstr(prom, "\",class=\"4096\"} 4096\n"));
    ck_assert_ptr_null(strstr(prom, "class=\"3072\""));
    free(prom);
    char *json = pool_dump(other.w.t, MEMQ_DUMP_JSON);
    ck_assert_ptr_nonnull(strstr(json, "\"in_use\":3072,"));
    ck_assert_ptr_null(strstr(json, "\"size\":640,"));
    ck_assert_ptr_null(strstr(json, "},{\"id\"")); /* one pool */
    free(json);
    chunk_free(&other.fp, t);
    memq_pool_free(theirs);
    memq_pool_free(cached);
    memq_pool_free(plain);
    pool_world_teardown(&other);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * The OS refusing memory: nothing allocated, nothing claimed
 * ---------------------------------------------------------------------- */

/* Allocate chunks of n bytes with p until the pool fails (at most max);
 * returns how many it gave and stores its error. */
static int alloc_until_failure(memq_pool *pool, memq_participation *p, size_t n, void **got,
                               int max, int *rc_out)
{
    int k = 0, rc = 0;
    while (k < max) {
        void *x = NULL;
        rc = memq_pool_alloc(pool, p, n, &x);
        if (rc != 0)
            break;
        got[k++] = x;
    }
    *rc_out = rc;
    return k;
}

/* Give the kernel one more mapping at a time until the allocation works
 * (at most 12 times); returns how many attempts failed with ENOMEM, -1
 * if one failed otherwise, and stores the chunk. */
static int alloc_with_more_room(vma_squeeze *v, memq_pool *pool, memq_participation *p, size_t n,
                                void **chunk)
{
    int failures = 0;
    vmas_refill(v);
    for (int step = 0; step < 12; step++) {
        int rc = memq_pool_alloc(pool, p, n, chunk);
        if (rc == 0)
            return failures;
        if (rc != MEMQ_ENOMEM)
            return -1;
        failures++;
        vmas_room(v, 1);
    }
    return failures;
}

START_TEST(test_when_the_kernel_refuses_mappings_nothing_is_allocated_or_claimed)
{
    const char *why = no_vm_tricks();
    if (why != NULL) {
        skipped(__func__, why);
        return;
    }
    pool_world pw;
    pool_world_new(&pw, 64 * GIB);
    fake_world bare; /* a tracker whose own pool is not made yet */
    world_new(&bare, 64 * MIB, 0);
    memq_pool *plain = pool_make(&pw.w, 0, 0, false);
    memq_pool *cached = pool_make(&pw.w, 0, 128 * KIB, false);
    memq_pool *debug = pool_make(&pw.w, 0, 0, true);
    memq_pool *uncached = pool_make(&pw.w, 0, 128 * KIB, false); /* no cache made yet */
    /* Held throughout: the account stays in the age index, so claims
     * allocate nothing.  This thread's cache for `cached` exists. */
    void *keep = chunk_alloc(plain, &pw.fp, 16);
    chunk_free(&pw.fp, chunk_alloc(cached, &pw.fp, 16));
    size_t claimed0 = memq_participation_claimed(pw.fp.p);
    enum { MAXN = 2048, MAXPOOLS = 512 };
    void **got_plain = calloc(MAXN, sizeof(void *)), **got_cached = calloc(MAXN, sizeof(void *));
    memq_pool **made = calloc(MAXPOOLS, sizeof *made);
    ck_assert(got_plain != NULL && got_cached != NULL && made != NULL);

    vma_squeeze v;
    if (!vmas_fill(&v)) {
        skipped(__func__, "vm.max_map_count cannot be made to run out here");
        free(got_plain);
        free(got_cached);
        free(made);
        chunk_free(&pw.fp, keep);
        memq_pool_free(plain);
        memq_pool_free(cached);
        memq_pool_free(debug);
        memq_pool_free(uncached);
        world_teardown(&bare);
        pool_world_teardown(&pw);
        return;
    }
    /* No mapping for a thread cache: the allocation goes without one. */
    void *nocache = NULL;
    int rc_nocache = memq_pool_alloc(uncached, pw.fp.p, 16, &nocache);
    memq_pool_stats su = pool_stats(uncached);
    /* New spans need a region: the range's next 16 MiB (an mprotect that
     * splits a mapping) or a mapping of its own. */
    int rc_plain, rc_cached, rc_pool = 0, n_made = 0;
    int n_plain = alloc_until_failure(plain, pw.fp.p, 65536, got_plain, MAXN, &rc_plain);
    int n_cached = alloc_until_failure(cached, pw.fp.p, 65536, got_cached, MAXN, &rc_cached);
    void *sentinel = (void *)&v, *chunk = sentinel;
    int rc_large = memq_pool_alloc(plain, pw.fp.p, 300000, &chunk);
    void *unchanged = chunk;
    size_t claimed_short = memq_participation_claimed(pw.fp.p);
    memq_pool_stats sp = pool_stats(plain), sc = pool_stats(cached);
    /* A debug span (a mapping, two guard pages, maybe a table leaf), then a
     * debug large chunk, each with one more mapping allowed at a time. */
    void *dspan = NULL, *dlarge = NULL;
    int debug_span_failures = alloc_with_more_room(&v, debug, pw.fp.p, 65536, &dspan);
    int debug_large_failures = alloc_with_more_room(&v, debug, pw.fp.p, 100000, &dlarge);
    /* Pools, until their metadata needs a new block. */
    unsigned refs = pw.w.t->refs;
    vmas_refill(&v);
    memq_pool *newp = (memq_pool *)sentinel;
    while (n_made < MAXPOOLS) {
        memq_pool_config cfg = pool_cfg(0, 0, false);
        rc_pool = memq_pool_new(pw.w.t, &cfg, &newp);
        if (rc_pool != 0)
            break;
        made[n_made++] = newp;
        newp = (memq_pool *)sentinel;
    }
    memq_pool *bare_own = memq_tracker_pool(bare.t);
    vmas_release(&v);
    /* The pools used up the metadata block, but for less than a pool.
     * Large chunks, with the address space limited to one chunk's mapping
     * at a time (less than a metadata block), until their metadata needs a
     * new block. */
    void **bigs = calloc(MAXN, sizeof(void *));
    ck_assert_ptr_nonnull(bigs);
    int n_big = 0, rc_big = 0;
    size_t claimed_big = 0, vm_before = 0, vm_after = 0;
    while (n_big < MAXN) {
        as_squeeze s;
        as_squeeze_to(&s, 69632 + 256 * KIB + 64 * KIB);
        claimed_big = memq_participation_claimed(pw.fp.p);
        vm_before = vm_size();
        void *x = NULL;
        rc_big = memq_pool_alloc(plain, pw.fp.p, 65537, &x);
        vm_after = vm_size();
        as_unsqueeze(&s);
        if (rc_big != 0)
            break;
        bigs[n_big++] = x;
    }
    ck_assert_int_eq(rc_big, MEMQ_ENOMEM);
    ck_assert_uint_eq(vm_after, vm_before); /* its mapping went back */
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), claimed_big);
    ck_assert_uint_eq(pool_stats(plain).large_chunks, (size_t)n_big);
    for (int i = 0; i < n_big; i++)
        memq_pool_dealloc(pw.fp.p, bigs[i]);
    free(bigs);

    ck_assert_int_eq(rc_nocache, 0);
    ck_assert_uint_eq(su.in_use, 16);
    ck_assert_uint_eq(su.cached, 0);
    ck_assert_uint_eq(su.slack, su.resident - su.in_use); /* no cache counted */
    ck_assert_int_eq(rc_plain, MEMQ_ENOMEM);
    ck_assert_int_eq(rc_cached, MEMQ_ENOMEM);
    ck_assert_int_lt(n_plain, MAXN);
    ck_assert_int_lt(n_cached, MAXN);
    ck_assert_int_eq(rc_large, MEMQ_ENOMEM);
    ck_assert_ptr_eq(unchanged, sentinel);
    ck_assert_uint_eq(claimed_short, claimed0 + 16 + (size_t)(n_plain + n_cached) * 65536);
    ck_assert_uint_eq(sp.in_use, 16 + (size_t)n_plain * 65536);
    ck_assert_uint_eq(sp.large_chunks, 0);
    ck_assert_uint_eq(sc.in_use, (size_t)n_cached * 65536);
    ck_assert_int_ge(debug_span_failures, 1);
    ck_assert_int_ge(debug_large_failures, 1);
    ck_assert_ptr_nonnull(dspan);
    ck_assert_ptr_nonnull(dlarge);
    ck_assert_int_eq(rc_pool, MEMQ_ENOMEM);
    ck_assert_ptr_eq(newp, (memq_pool *)sentinel);
    ck_assert_ptr_null(bare_own);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    /* Everything works again, and the counts are right. */
    void *more = chunk_alloc(plain, &pw.fp, 65536);
    void *more2 = chunk_alloc(cached, &pw.fp, 65536);
    void *big = chunk_alloc(plain, &pw.fp, 300000);
    ck_assert_ptr_nonnull(memq_tracker_pool(bare.t));
    for (int i = 0; i < n_made; i++)
        memq_pool_free(made[i]);
    ck_assert_uint_eq(pw.w.t->refs, refs); /* the failed creation holds none */
    size_t slack = pool_stats(plain).slack + pool_stats(cached).slack + pool_stats(debug).slack +
                   pool_stats(uncached).slack;
    ck_assert_uint_eq(world_stats(&pw.w).slack, slack);
    for (int i = 0; i < n_plain; i++)
        memq_pool_dealloc(pw.fp.p, got_plain[i]);
    for (int i = 0; i < n_cached; i++)
        memq_pool_dealloc(pw.fp.p, got_cached[i]);
    memq_pool_dealloc(pw.fp.p, dspan);
    memq_pool_dealloc(pw.fp.p, dlarge);
    memq_pool_dealloc(pw.fp.p, more);
    memq_pool_dealloc(pw.fp.p, more2);
    memq_pool_dealloc(pw.fp.p, big);
    memq_pool_dealloc(pw.fp.p, nocache);
    chunk_free(&pw.fp, keep);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    ck_assert_uint_eq(pool_stats(plain).in_use + pool_stats(cached).in_use +
                          pool_stats(debug).in_use + pool_stats(uncached).in_use,
                      0);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 0);
    free(got_plain);
    free(got_cached);
    free(made);
    memq_pool_free(plain);
    memq_pool_free(cached);
    memq_pool_free(debug);
    memq_pool_free(uncached);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    world_teardown(&bare);
    pool_world_teardown(&pw);
}
END_TEST

/* A large chunk is found through a two-level table whose leaves (one per
 * 8 GiB of address space) are mapped when first needed.  With the address
 * space limited to the chunk's mapping and one leaf, a 17 GiB chunk, which
 * needs at least two new leaves, is refused. */
START_TEST(test_a_large_chunk_is_refused_when_the_table_that_finds_it_cannot_grow)
{
    const char *why = no_vm_tricks();
    if (why != NULL) {
        skipped(__func__, why);
        return;
    }
    pool_world pw;
    pool_world_new(&pw, 64 * GIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    void *keep = chunk_alloc(pool, &pw.fp, 16);
    size_t n = 17 * GIB;
    memq_pool_stats before = pool_stats(pool);
    size_t vm0 = vm_size();
    ck_assert_uint_gt(vm0, 0);
    as_squeeze s;
    as_squeeze_to(&s, n + 384 * KIB);
    void *chunk = (void *)&s;
    int rc = memq_pool_alloc(pool, pw.fp.p, n, &chunk);
    as_unsqueeze(&s);
    size_t vm1 = vm_size();
    ck_assert_int_eq(rc, MEMQ_ENOMEM);
    ck_assert_ptr_eq(chunk, (void *)&s);
    ck_assert_uint_le(vm1, vm0 + 512 * KIB); /* the mapping went back */
    memq_pool_stats after = pool_stats(pool);
    ck_assert_uint_eq(after.large_chunks, 0);
    ck_assert_uint_eq(after.in_use, before.in_use);
    ck_assert_uint_eq(after.metadata, before.metadata);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 16);
    /* Without the limit it is allocated (never touched: no memory). */
    char *big = chunk_alloc(pool, &pw.fp, n);
    ck_assert_uint_eq(memq_pool_chunk_size(big), n);
    ck_assert_uint_eq(memq_pool_chunk_size(big + 9 * GIB), 0);
    memq_pool_dealloc(pw.fp.p, big + 9 * GIB);
    ck_assert_uint_eq(pool_stats(pool).interior, 1);
    chunk_free(&pw.fp, big);
    chunk_free(&pw.fp, keep);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* ----------------------------------------------------------------------
 * In a fresh process: what happens once per process
 * ---------------------------------------------------------------------- */

/* Without the reserved range (the address space was limited when the
 * first pool call reserved it), every span is found through the
 * two-level table, and regions are mapped one by one. */
static void fresh_setup_no_range(void)
{
    struct rlimit old, low;
    getrlimit(RLIMIT_AS, &old);
    low = old;
    low.rlim_cur = (rlim_t)(vm_size() + 512 * MIB);
    setrlimit(RLIMIT_AS, &low);
    (void)memq_pool_class_size(1); /* reserves the range, or fails to */
    setrlimit(RLIMIT_AS, &old);
}

START_TEST(test_fresh_without_the_reserved_range_spans_are_mapped_one_by_one)
{
    pool_world pw;
    pool_world_new(&pw, 1 * GIB);
    memq_pool *pool = pool_make(&pw.w, 0, 0, false);
    memq_pool *cached = pool_make(&pw.w, 64 * KIB, 128 * KIB, false);
    /* 300 chunks of 64 KiB: more than a 16 MiB region. */
    enum { N = 300 };
    void **c = calloc(N, sizeof *c);
    ck_assert_ptr_nonnull(c);
    size_t claimed = 0;
    static const size_t sizes[] = {16, 48, 514, 4096, 65536};
    for (int i = 0; i < N; i++) {
        size_t n = i < 250 ? 65536 : sizes[i % 5];
        c[i] = chunk_alloc(i % 2 ? cached : pool, &pw.fp, n);
        ck_assert_uint_eq(memq_pool_chunk_size(c[i]), memq_pool_class_size(n));
        if ((memq_pool_class_size(n) & (memq_pool_class_size(n) - 1)) == 0)
            ck_assert_uint_eq((uintptr_t)c[i] % memq_pool_class_size(n), 0);
        memset(c[i], i, n);
        claimed += memq_pool_class_size(n);
    }
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), claimed);
    char *big = chunk_alloc(pool, &pw.fp, 1 * MIB + 1);
    /* Misuse and foreign pointers are told apart as with the range. */
    int local = 0;
    uint64_t foreign = pool_stats(pool).foreign;
    memq_pool_dealloc(pw.fp.p, (char *)c[0] + 16);
    memq_pool_dealloc(pw.fp.p, big + 4096);
    memq_pool_dealloc(pw.fp.p, &local);
    memq_pool_dealloc(pw.fp.p, (void *)(uintptr_t)0x100000000000u); /* no table leaf there */
    memq_pool_dealloc(pw.fp.p, (void *)(uintptr_t)0xfff0000000000000u); /* not a user address */
    ck_assert_uint_eq(memq_pool_chunk_size((void *)(uintptr_t)0x100000000000u), 0);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.interior, 2);
    ck_assert_uint_eq(st.foreign, foreign + 3);
    ck_assert_uint_eq(world_stats(&pw.w).misuse_events, 5);
    chunk_free(&pw.fp, big);
    for (int i = 0; i < N; i++)
        chunk_free(&pw.fp, c[i]);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    st = pool_stats(pool);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_ge(st.returned, 125 * 65536);
    ck_assert_uint_eq(st.resident, st.metadata); /* reserve 0: every page went back */
    /* Spans given back are used again. */
    for (int i = 0; i < N; i++)
        c[i] = chunk_alloc(pool, &pw.fp, 65536);
    for (int i = 0; i < N; i++)
        chunk_free(&pw.fp, c[i]);
    free(c);
    ck_assert_uint_eq(memq_participation_claimed(pw.fp.p), 0);
    memq_pool_stats sc = pool_stats(cached);
    st = pool_stats(pool);
    ck_assert_uint_eq(st.slack, st.resident);
    ck_assert_uint_ge(sc.slack, sc.resident);
    ck_assert_uint_le(sc.slack, sc.resident + 128 * KIB);
    ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack + sc.slack);
    memq_pool_free(pool);
    memq_pool_free(cached);
    ck_assert_uint_eq(world_stats(&pw.w).slack, 0);
    pool_world_teardown(&pw);
}
END_TEST

/* Every thread key taken: the pool cannot make its key, so no thread
 * cache at all, and the count is exact. */
START_TEST(test_fresh_without_a_thread_key_the_pool_keeps_no_thread_caches)
{
    static pthread_key_t keys[PTHREAD_KEYS_MAX + 1];
    int n = 0;
    while (n < PTHREAD_KEYS_MAX + 1 && pthread_key_create(&keys[n], NULL) == 0)
        n++;
    ck_assert_int_gt(n, 0);
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    memq_pool *pool = pool_make(&pw.w, 0, 128 * KIB, false);
    void *c[64];
    for (int i = 0; i < 64; i++)
        c[i] = chunk_alloc(pool, &pw.fp, 100 + 50 * (size_t)i);
    for (int i = 0; i < 64; i++)
        chunk_free(&pw.fp, c[i]);
    fake_part other;
    part_add(&pw.w, &other, 2, world_account(&pw.w, NULL));
    visitor v = {{pool}, 1, other.p, NULL, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, visit_pools, &v), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(v.rc, 0);
    memq_pool_stats st = pool_stats(pool);
    ck_assert_uint_eq(st.cached, 0);
    ck_assert_uint_eq(st.in_use, 0);
    ck_assert_uint_eq(st.slack, st.resident);
    ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack);
    for (int i = 0; i < n; i++)
        pthread_key_delete(keys[i]);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/* Keys taken up to 40, so that the pool's key needs a second-level block
 * in each thread, which glibc allocates with calloc(32, 16). */
static void fresh_setup_high_key(void)
{
    static pthread_key_t keys[64];
    for (int i = 0; i < 64; i++)
        if (pthread_key_create(&keys[i], NULL) != 0 || keys[i] >= 40)
            break;
}

START_TEST(test_fresh_no_memory_to_set_the_thread_key_means_no_cache_for_that_call)
{
    pool_world pw;
    pool_world_new(&pw, 64 * MIB);
    size_t cache = 128 * KIB;
    memq_pool *pool = pool_make(&pw.w, 0, cache, false);
    calloc_trap = CALLOC_FAIL;
    void *x = chunk_alloc(pool, &pw.fp, 100);
    calloc_trap = CALLOC_PASS;
    memq_pool_stats st = pool_stats(pool);
    if (atomic_load(&calloc_trapped) == 0) {
        skipped(__func__, "pthread_setspecific() allocated nothing");
    } else {
        /* No cache was made: none is counted. */
        ck_assert_uint_eq(st.cached, 0);
        ck_assert_uint_eq(st.slack, st.resident - st.in_use);
    }
    ck_assert_uint_eq(st.in_use, 112);
    ck_assert_uint_eq(world_stats(&pw.w).slack, st.slack);
    /* The next call makes the cache. */
    chunk_free(&pw.fp, x);
    st = pool_stats(pool);
    ck_assert_uint_gt(st.cached, 0);
    check_slack(&pw, pool, cache, 1);
    memq_pool_free(pool);
    pool_world_teardown(&pw);
}
END_TEST

/*
 * A chunk of the tracker's own pool freed with no participation on a
 * thread that has no cache yet, while the tracker's last reference goes:
 * the free stops in the middle of making the thread's cache (held in
 * glibc's calloc), the pool is orphaned meanwhile, and the free finds it
 * orphaned when it takes the registry.
 */
typedef struct gated_free {
    void *chunk;
    atomic_bool done;
} gated_free;

static void *free_through_the_gate(void *arg)
{
    gated_free *g = arg;
    calloc_trap = CALLOC_GATE;
    memq_pool_dealloc(NULL, g->chunk);
    calloc_trap = CALLOC_PASS;
    atomic_store(&g->done, true);
    return NULL;
}

static memq_pool *orphaned_during_a_free(bool gate, void **chunk_out)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 64 * MIB;
    memq_tracker *t = NULL;
    memq_account *a = NULL;
    memq_participation *p = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    ck_assert_int_eq(memq_participant_register(a, &wired_ops, NULL, &p), 0);
    memq_pool *own = memq_tracker_pool(t);
    ck_assert_ptr_nonnull(own);
    void *x = NULL;
    ck_assert_int_eq(memq_pool_alloc(own, p, 600, &x), 0);
    memset(x, 3, 600);
    /* The claim goes with the participation; the chunk is freed later with
     * no participation, as a libevent cleanup callback would. */
    memq_participation_free(p);
    memq_account_unref(a);
    gated_free g = {x, false};
    pthread_t th;
    if (gate) {
        atomic_store(&calloc_gate_open, false);
        ck_assert_int_eq(pthread_create(&th, NULL, free_through_the_gate, &g), 0);
        while (!atomic_load(&calloc_gate_entered) && !atomic_load(&g.done))
            sleep_ms(1);
    }
    memq_tracker_free(t); /* its last reference: the pool is orphaned */
    if (gate) {
        atomic_store(&calloc_gate_open, true);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
    } else {
        memq_pool_dealloc(NULL, x);
    }
    *chunk_out = x;
    return own;
}

START_TEST(test_fresh_a_free_while_the_trackers_memory_goes_frees_its_chunk)
{
    void *x = NULL;
    orphaned_during_a_free(true, &x);
    if (atomic_load(&calloc_trapped) == 0)
        skipped(__func__, "pthread_setspecific() allocated nothing: no window to hold open");
    ck_assert_uint_eq(memq_pool_chunk_size(x), 0);
}
END_TEST

/* The last chunk of an orphaned pool takes the pool's memory with it
 * (probed through memq_pool_get_stats(), which refuses a handle whose
 * memory went), also when the pool is orphaned while the free is under
 * way: dealloc_slow() read `orphan` false, then cache_for() found the pool
 * orphaned; whether the chunk was counted is decided under its class's
 * lock (it used to be decided by the early read, and the pool was never
 * destroyed). */
static void check_pool_memory_went(bool gate)
{
    void *x = NULL;
    memq_pool *own = orphaned_during_a_free(gate, &x);
    ck_assert_uint_eq(memq_pool_chunk_size(x), 0);
    memq_pool_stats st;
    ck_assert_int_eq(memq_pool_get_stats(own, &st), MEMQ_EINVAL);
}

START_TEST(test_fresh_the_last_chunk_of_an_orphaned_pool_takes_its_memory)
{
    check_pool_memory_went(false);
}
END_TEST

START_TEST(test_fresh_a_free_racing_the_orphaning_still_frees_the_pool)
{
    check_pool_memory_went(true);
}
END_TEST

static const TTest *fresh_lookup(const char *name, void (**setup)(void))
{
    static const struct {
        const char *name;
        void (*setup)(void);
        const TTest *const *test;
    } table[] = {
        {"no_range", fresh_setup_no_range,
         &test_fresh_without_the_reserved_range_spans_are_mapped_one_by_one},
        {"no_keys", NULL, &test_fresh_without_a_thread_key_the_pool_keeps_no_thread_caches},
        {"no_memory_for_key", fresh_setup_high_key,
         &test_fresh_no_memory_to_set_the_thread_key_means_no_cache_for_that_call},
        {"free_while_orphaned", fresh_setup_high_key,
         &test_fresh_a_free_while_the_trackers_memory_goes_frees_its_chunk},
        {"last_chunk_takes_pool", NULL,
         &test_fresh_the_last_chunk_of_an_orphaned_pool_takes_its_memory},
        {"racing_free_frees_pool", fresh_setup_high_key,
         &test_fresh_a_free_racing_the_orphaning_still_frees_the_pool},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) {
            *setup = table[i].setup;
            return *table[i].test;
        }
    return NULL;
}

/* The program run by in_fresh_process(). */
static int run_fresh(const char *name)
{
    void (*setup)(void) = NULL;
    const TTest *test = fresh_lookup(name, &setup);
    if (test == NULL) {
        fprintf(stderr, "check_pool: no fresh-process test %s\n", name);
        return 2;
    }
    if (setup != NULL)
        setup();
    Suite *s = suite_create("pool (fresh process)");
    TCase *tc = test_case(name);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    if (failed > 0) {
        TestResult **r = srunner_failures(sr);
        for (int i = 0; i < failed; i++)
            fprintf(stderr, "%s:%d: %s (fresh process)\n", tr_lfile(r[i]), tr_lno(r[i]),
                    tr_msg(r[i]));
        free(r);
    }
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

#define FRESH_TEST(fn, name)                                                                   \
    START_TEST(fn)                                                                             \
    {                                                                                          \
        in_fresh_process(name);                                                                \
    }                                                                                          \
    END_TEST

FRESH_TEST(test_without_the_reserved_range_spans_are_mapped_one_by_one, "no_range")
FRESH_TEST(test_without_a_thread_key_the_pool_keeps_no_thread_caches, "no_keys")
FRESH_TEST(test_no_memory_to_set_the_thread_key_means_no_cache_for_that_call, "no_memory_for_key")
FRESH_TEST(test_a_free_while_the_trackers_memory_goes_frees_its_chunk, "free_while_orphaned")
FRESH_TEST(test_the_last_chunk_of_an_orphaned_pool_takes_its_memory, "last_chunk_takes_pool")
FRESH_TEST(test_a_free_racing_the_orphaning_still_frees_the_pool, "racing_free_frees_pool")

int main(void)
{
    const char *fresh = getenv("MEMQ_POOL_FRESH");
    if (fresh != NULL)
        return run_fresh(fresh);
    ssize_t len = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    self_exe[len > 0 ? len : 0] = '\0';

    Suite *s = suite_create("pool");

    TCase *basics = test_case("basics");
    tcase_add_test(basics, test_null_arguments_and_zero_bytes_are_rejected);
    tcase_add_test(basics, test_size_classes_hold_tor_cells_and_buffer_chunks_with_little_waste);
    tcase_add_test(basics, test_chunks_are_claimed_at_their_class_size);
    tcase_add_test(basics, test_chunks_are_aligned_to_their_power_of_two_class);
    tcase_add_test(basics, test_large_chunk_gets_its_own_mapping_and_goes_back_when_freed);
    tcase_add_test(basics, test_handles_that_are_not_pools_are_refused_and_null_config_ignored);
    tcase_add_test(basics, test_a_size_whose_pages_do_not_fit_overflows_and_one_no_mapping_holds_is_enomem);
    tcase_add_test(basics, test_a_size_whose_pages_fit_is_not_an_overflow);
    suite_add_tcase(s, basics);

    TCase *misuse = test_case("misuse");
    tcase_add_test(misuse, test_double_free_is_counted_and_ignored);
    tcase_add_test(misuse, test_double_free_through_a_thread_cache_is_counted_and_ignored);
    tcase_add_test(misuse, test_foreign_pointers_are_counted_and_ignored);
    tcase_add_test(misuse, test_interior_pointers_are_counted_and_ignored);
    tcase_add_test(misuse, test_pointer_into_a_large_chunk_is_counted_and_ignored);
    tcase_add_test(misuse, test_free_with_no_participation_releases_nothing_and_counts_slack_later);
    tcase_add_test(misuse, test_pointers_past_a_spans_last_chunk_or_a_large_chunks_end);
    tcase_add_test(misuse, test_a_large_chunk_freed_again_during_its_free_is_a_double_free);
    tcase_add_test(misuse, test_what_the_log_callback_does_while_misuse_is_reported_is_reported_too);
    tcase_add_test(misuse, test_a_foreign_pointer_after_a_large_chunk_is_reported_to_the_tracker);
    suite_add_tcase(s, misuse);

    TCase *accounting = test_case("accounting");
    tcase_add_test(accounting, test_tracker_counts_claims_plus_the_pools_slack_exactly);
    tcase_add_test(accounting, test_thread_cache_over_count_stays_within_cache_bytes);
    tcase_add_test(accounting, test_failed_claim_allocates_nothing);
    tcase_add_test(accounting, test_slack_never_makes_the_pool_a_victim);
    tcase_add_test(accounting, test_wakeup_callback_may_use_the_pool_during_an_allocation);
    tcase_add_test(accounting, test_misuse_with_no_participation_reaches_the_tracker_at_the_next_call);
    tcase_add_test(accounting, test_a_claim_that_would_overflow_the_total_allocates_nothing);
    tcase_add_test(accounting, test_a_chunk_whose_claim_fails_goes_back_even_if_the_cache_filled_meanwhile);
    tcase_add_test(accounting, test_a_debug_pools_cache_takes_back_a_chunk_whose_claim_fails);
    tcase_add_test(accounting, test_alloc_at_the_end_of_time_keeps_the_account_a_candidate);
    suite_add_tcase(s, accounting);

    TCase *os = test_case("os");
    tcase_add_test(os, test_freed_memory_goes_back_to_the_os);
    tcase_add_test(os, test_free_pages_inside_partly_used_spans_go_back);
    tcase_add_test(os, test_reserve_keeps_free_pages_up_to_its_size);
    tcase_add_test(os, test_next_chunk_comes_from_the_fullest_span);
    tcase_add_test(os, test_when_the_kernel_refuses_mappings_nothing_is_allocated_or_claimed);
    tcase_add_test(os, test_a_large_chunk_is_refused_when_the_table_that_finds_it_cannot_grow);
    tcase_add_test(os, test_a_freed_large_chunk_is_counted_as_returned);
    suite_add_tcase(s, os);

    TCase *debug = test_case("debug");
    tcase_add_test(debug, test_debug_mode_reports_a_write_after_free);
    tcase_add_test(debug, test_debug_mode_cache_checks_chunks_too);
    tcase_add_test(debug, test_debug_mode_puts_guard_pages_around_spans_and_large_chunks);
    suite_add_tcase(s, debug);

    TCase *threads = test_case("threads");
    tcase_add_test(threads, test_threads_allocate_and_free_each_others_chunks);
    tcase_add_test(threads, test_a_threads_cache_goes_back_to_the_pool_when_it_exits);
    tcase_add_test(threads, test_a_double_free_racing_itself_on_two_threads_frees_once);
    tcase_add_test(threads, test_a_thread_exit_is_counted_by_the_next_lock_free_call);
    tcase_add_test(threads, test_caches_of_freed_pools_are_swept_by_their_thread);
    tcase_add_test(threads, test_a_thread_destructor_may_use_the_pool_after_its_cache_went_back);
    tcase_add_test(threads, test_an_empty_span_a_threads_cache_refills_from_counts_as_empty);
    tcase_add_test(threads, test_a_thread_exit_settles_the_slack_of_the_spans_it_frees);
    suite_add_tcase(s, threads);

    TCase *lifetimes = test_case("lifetimes");
    tcase_add_test(lifetimes, test_chunks_outlive_their_freed_pool);
    tcase_add_test(lifetimes, test_pool_cannot_be_created_for_a_shut_down_tracker);
    tcase_add_test(lifetimes, test_tracker_pool_is_created_once_with_the_trackers_settings);
    tcase_add_test(lifetimes, test_threads_asking_for_the_tracker_pool_at_once_get_the_same_one);
    tcase_add_test(lifetimes, test_tracker_pool_forgets_its_tracker_when_the_tracker_goes);
    tcase_add_test(lifetimes, test_tracker_pool_goes_with_the_trackers_memory);
    tcase_add_test(lifetimes, test_the_trackers_dumps_carry_the_pools_statistics);
    tcase_add_test(lifetimes, test_alloc_at_files_the_datas_stamp_in_the_age_index);
    tcase_add_test(lifetimes, test_tracker_with_an_unused_pool_is_destroyed_cleanly);
    tcase_add_test(lifetimes, test_a_pool_whose_tracker_is_gone_refuses_to_allocate);
    tcase_add_test(lifetimes, test_a_freed_pool_with_chunks_left_ignores_a_second_free_and_misuse);
    suite_add_tcase(s, lifetimes);

    /* Paths that run once per process, each in a new one. */
    TCase *once = test_case("fresh processes");
    tcase_add_test(once, test_without_the_reserved_range_spans_are_mapped_one_by_one);
    tcase_add_test(once, test_without_a_thread_key_the_pool_keeps_no_thread_caches);
    tcase_add_test(once, test_no_memory_to_set_the_thread_key_means_no_cache_for_that_call);
    tcase_add_test(once, test_a_free_while_the_trackers_memory_goes_frees_its_chunk);
    tcase_add_test(once, test_the_last_chunk_of_an_orphaned_pool_takes_its_memory);
    tcase_add_test(once, test_a_free_racing_the_orphaning_still_frees_the_pool);
    suite_add_tcase(s, once);

    TCase *dumps = test_case("dumps");
    tcase_add_test(dumps, test_dump_text_shows_each_pool_and_class);
    tcase_add_test(dumps, test_dump_json_is_an_array_of_pools_with_their_classes);
    tcase_add_test(dumps, test_dump_prometheus_labels_pool_and_class);
    tcase_add_test(dumps, test_dump_of_a_tracker_without_pools_is_empty);
    tcase_add_test(dumps, test_dumps_list_the_trackers_pools_only_and_classes_with_a_history);
    suite_add_tcase(s, dumps);

    return run_suite(s);
}
