/*
 * check_pool.c - the chunk pool: misuse survived, memory given back to the
 * OS, exact claims and slack, fullest-first placement, size classes,
 * large chunks, debug mode, threads, the tracker's own pool and dumps.
 */
#include "testutil.h"

#include "pool.h" /* lib/pool.h: memq__pool_dump, memq__pool_tracker_gone */
#include "internal.h" /* the age index, to check the key a stamp gives */

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

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
    return getenv("MEMQ_VALGRIND") != NULL;
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

int main(void)
{
    Suite *s = suite_create("pool");

    TCase *basics = test_case("basics");
    tcase_add_test(basics, test_null_arguments_and_zero_bytes_are_rejected);
    tcase_add_test(basics, test_size_classes_hold_tor_cells_and_buffer_chunks_with_little_waste);
    tcase_add_test(basics, test_chunks_are_claimed_at_their_class_size);
    tcase_add_test(basics, test_chunks_are_aligned_to_their_power_of_two_class);
    tcase_add_test(basics, test_large_chunk_gets_its_own_mapping_and_goes_back_when_freed);
    suite_add_tcase(s, basics);

    TCase *misuse = test_case("misuse");
    tcase_add_test(misuse, test_double_free_is_counted_and_ignored);
    tcase_add_test(misuse, test_double_free_through_a_thread_cache_is_counted_and_ignored);
    tcase_add_test(misuse, test_foreign_pointers_are_counted_and_ignored);
    tcase_add_test(misuse, test_interior_pointers_are_counted_and_ignored);
    tcase_add_test(misuse, test_pointer_into_a_large_chunk_is_counted_and_ignored);
    tcase_add_test(misuse, test_free_with_no_participation_releases_nothing_and_counts_slack_later);
    suite_add_tcase(s, misuse);

    TCase *accounting = test_case("accounting");
    tcase_add_test(accounting, test_tracker_counts_claims_plus_the_pools_slack_exactly);
    tcase_add_test(accounting, test_thread_cache_over_count_stays_within_cache_bytes);
    tcase_add_test(accounting, test_failed_claim_allocates_nothing);
    tcase_add_test(accounting, test_slack_never_makes_the_pool_a_victim);
    tcase_add_test(accounting, test_wakeup_callback_may_use_the_pool_during_an_allocation);
    tcase_add_test(accounting, test_misuse_with_no_participation_reaches_the_tracker_at_the_next_call);
    suite_add_tcase(s, accounting);

    TCase *os = test_case("os");
    tcase_add_test(os, test_freed_memory_goes_back_to_the_os);
    tcase_add_test(os, test_free_pages_inside_partly_used_spans_go_back);
    tcase_add_test(os, test_reserve_keeps_free_pages_up_to_its_size);
    tcase_add_test(os, test_next_chunk_comes_from_the_fullest_span);
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
    suite_add_tcase(s, lifetimes);

    TCase *dumps = test_case("dumps");
    tcase_add_test(dumps, test_dump_text_shows_each_pool_and_class);
    tcase_add_test(dumps, test_dump_json_is_an_array_of_pools_with_their_classes);
    tcase_add_test(dumps, test_dump_prometheus_labels_pool_and_class);
    tcase_add_test(dumps, test_dump_of_a_tracker_without_pools_is_empty);
    suite_add_tcase(s, dumps);

    return run_suite(s);
}
