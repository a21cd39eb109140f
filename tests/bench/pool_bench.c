/*
 * pool_bench.c - what the chunk pool costs against glibc's malloc, and the
 * real memory it holds against glibc's, jemalloc's and mimalloc's (issue
 * 11).
 *
 * Speed: an alloc+free pair of 512 B, 4 KiB and 64 KiB (memq_pool_alloc()
 * and memq_pool_dealloc() with a participation whose cache is on, the
 * default cache_max, so the claim is part of the pair) against malloc()
 * and free() of the same size, on one thread and on two at once (each
 * with its own participation, one pool).  Each figure is the best of N
 * interleaved repetitions; with two threads a pair costs the CPU time its
 * thread spent, so a neighbour on the shared machine slows a repetition
 * down but never makes one look faster.
 *
 * Memory: two patterns, each run in a child process per allocator (the
 * pool, then glibc, jemalloc and mimalloc through LD_PRELOAD), which
 * reports its resident memory above what it had before the pattern
 * started, and the bytes its live chunks asked for:
 *  - streams: the demo's pattern without the network.  1,000 honest FIFO
 *    streams whose chunks are drained within a few rounds (under a
 *    millisecond) and 100 stalled streams that only grow, to 64 MiB;
 *    then every chunk of the stalled streams is freed, as reclamation
 *    does, and the honest streams run 100 ms more.
 *  - random: the worst case: chunks of mixed sizes, then random frees down
 *    to 10% of them, then 100 ms idle.
 * Sizes are those the daemon's data comes in: 514-byte cells, the tracked
 * buffer's 4 KiB - 64 KiB chunks, and some of any size up to 4 KiB.
 *
 * Output as memq_bench's: a table, then for scripts
 *     BENCH <name> <value> <unit>
 *     RATIO <name> <value> target=<op><value> <PASS|MISS>
 * A MISS is a measurement, not a failure; the exit status is 0 unless the
 * benchmark itself breaks.
 *
 * Usage: pool_bench [--quick]
 */
#include "memquota.h"

#define BENCH_NAME "pool_bench"
#include "bench_util.h"

#include <errno.h>
#include <float.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static const char *const allocator_libs[] = {
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
};

/* ======================================================================
 * Utilities
 * ====================================================================== */

/* Bookkeeping memory from mmap, so that it is the same for every
 * allocator measured and outside all of them; touched at once, so that it
 * is in the baseline. */
static void *book(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap of %zu bytes: %s", n, strerror(errno));
    memset(p, 0, n);
    return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f == NULL || fscanf(f, "%lu %lu", &size, &resident) != 2)
        die("cannot read /proc/self/statm");
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Resident bytes gained since `before` (0 if fewer). */
static size_t rss_above(size_t before)
{
    size_t now = rss_bytes();
    return now > before ? now - before : 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static bool idle_oldest(void *self, memq_time *when)
{
    (void)self;
    (void)when;
    return false;
}

static memq_reclaim_status idle_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops idle_ops = {idle_oldest, idle_reclaim};

static const size_t BIG_MAX = (size_t)1 << 50;

static memq_tracker *new_tracker(void)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = BIG_MAX;
    memq_tracker *t = NULL;
    MUST(memq_tracker_new(&t, &cfg));
    return t;
}

static memq_participation *new_participation(memq_tracker *t, memq_account **a)
{
    memq_participation *p = NULL;
    MUST(memq_account_new(t, NULL, a));
    MUST(memq_participant_register(*a, &idle_ops, NULL, &p));
    return p;
}

/* ======================================================================
 * Results
 * ====================================================================== */

static char table[32][160];
static size_t table_n;
static char lines[64][160];
static size_t lines_n;
static unsigned misses;

static void table_row(const char *figure, const char *ours, const char *base, const char *ratio,
                      const char *target, const char *result)
{
    if (table_n == sizeof table / sizeof table[0])
        die("too many table rows");
    snprintf(table[table_n++], sizeof table[0], "%-40s %15s %15s %8s %8s  %s", figure, ours, base,
             ratio, target, result);
}

static void table_section(const char *title)
{
    table_row(title, "", "", "", "", "");
}

static void add_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void add_line(const char *fmt, ...)
{
    if (lines_n == sizeof lines / sizeof lines[0])
        die("too many result lines");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lines[lines_n++], sizeof lines[0], fmt, ap);
    va_end(ap);
}

static const char *ratio_value(const char *name, double value, double target)
{
    bool pass = value <= target;
    if (!pass)
        misses++;
    add_line("RATIO %s %.3f target=<=%g %s", name, value, target, pass ? "PASS" : "MISS");
    return pass ? "PASS" : "MISS";
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    static char buf[8][96];
    static unsigned next;
    char *b = buf[next++ % 8];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof buf[0], f, ap);
    va_end(ap);
    return b;
}

/* ======================================================================
 * 1. Speed: alloc+free pairs
 * ====================================================================== */

typedef struct pair_ctx {
    memq_pool *pool;
    memq_participation *p;
    size_t n;
    unsigned long failures;
} pair_ctx;

static NOINLINE uint64_t loop_pool(pair_ctx *c, size_t iters)
{
    memq_pool *pool = c->pool;
    memq_participation *p = c->p;
    size_t n = c->n;
    unsigned long failures = 0;
    uint64_t t0 = thread_cpu_ns();
    for (size_t i = 0; i < iters; i++) {
        void *q = NULL;
        if (memq_pool_alloc(pool, p, n, &q) != 0)
            failures++;
        __asm__ volatile("" : : "r"(q) : "memory");
        memq_pool_dealloc(p, q);
    }
    uint64_t ns = thread_cpu_ns() - t0;
    c->failures += failures;
    return ns;
}

static NOINLINE uint64_t loop_malloc(pair_ctx *c, size_t iters)
{
    size_t n = c->n;
    uint64_t t0 = thread_cpu_ns();
    for (size_t i = 0; i < iters; i++) {
        void *q = malloc(n);
        __asm__ volatile("" : : "r"(q) : "memory");
        free(q);
    }
    return thread_cpu_ns() - t0;
}

typedef struct worker {
    bool pool;
    pair_ctx ctx;
    size_t iters;
    pthread_barrier_t *barrier;
    uint64_t ns;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->barrier);
    w->ns = w->pool ? loop_pool(&w->ctx, w->iters) : loop_malloc(&w->ctx, w->iters);
    return NULL;
}

/* Nanoseconds per pair, each of nthreads threads running iters pairs at
 * once (the mean of the threads' CPU time). */
static double run_pairs(bool pool, pair_ctx *ctx, unsigned nthreads, size_t iters)
{
    if (nthreads == 1) {
        uint64_t ns = pool ? loop_pool(ctx, iters) : loop_malloc(ctx, iters);
        return (double)ns / (double)iters;
    }
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, nthreads);
    worker w[2];
    pthread_t th[2];
    for (unsigned i = 0; i < nthreads; i++) {
        w[i] = (worker){pool, ctx[i], iters, &barrier, 0};
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0)
            die("pthread_create failed");
    }
    double sum = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        ctx[i].failures += w[i].ctx.failures;
        sum += (double)w[i].ns / (double)iters;
    }
    pthread_barrier_destroy(&barrier);
    return sum / nthreads;
}

static void bench_speed(bool quick)
{
    memq_tracker *t = new_tracker();
    memq_pool *pool = NULL;
    MUST(memq_pool_new(t, NULL, &pool));
    memq_account *a[2];
    pair_ctx ctx[2];
    for (int i = 0; i < 2; i++) {
        ctx[i] = (pair_ctx){pool, new_participation(t, &a[i]), 0, 0};
        MUST(memq_claim(ctx[i].p, 1)); /* fills its cache */
    }
    static const struct {
        size_t n;
        const char *name;
    } sizes[] = {{512, "512"}, {4096, "4k"}, {65536, "64k"}};
    unsigned reps = quick ? 7 : 21;
    size_t iters = quick ? 100000 : 300000;

    table_section("1. Speed: alloc+free pair, pool (with its claim) vs malloc+free");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (unsigned nthreads = 1; nthreads <= 2; nthreads++) {
            double best_pool = DBL_MAX, best_malloc = DBL_MAX;
            for (int i = 0; i < 2; i++)
                ctx[i].n = sizes[s].n;
            run_pairs(true, ctx, nthreads, iters / 10); /* warm the caches */
            run_pairs(false, ctx, nthreads, iters / 10);
            for (unsigned r = 0; r < reps; r++) {
                /* Interleaved, each repetition starting from the other. */
                for (int k = 0; k < 2; k++) {
                    bool pool_turn = (r + (unsigned)k) % 2 == 0;
                    double ns = run_pairs(pool_turn, ctx, nthreads, iters);
                    if (pool_turn && ns < best_pool)
                        best_pool = ns;
                    if (!pool_turn && ns < best_malloc)
                        best_malloc = ns;
                }
            }
            const char *name =
                fmt("pool_vs_malloc_%s%s", sizes[s].name, nthreads == 2 ? "_2t" : "");
            add_line("BENCH %s_pool %.2f ns", name, best_pool);
            add_line("BENCH %s_malloc %.2f ns", name, best_malloc);
            double ratio = best_pool / best_malloc;
            const char *res = ratio_value(name, ratio, 1.0);
            table_row(fmt("  %zu B, %u thread%s", sizes[s].n, nthreads, nthreads == 2 ? "s" : ""),
                      fmt("%.2f ns", best_pool), fmt("%.2f ns", best_malloc), fmt("%.3f", ratio),
                      "<=1", res);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (ctx[i].failures != 0)
            die("memq_pool_alloc failed %lu times", ctx[i].failures);
        if (memq_participation_claimed(ctx[i].p) != 1)
            die("a participation did not return to its start");
        memq_participation_free(ctx[i].p);
        memq_account_unref(a[i]);
    }
    memq_pool_free(pool);
    memq_tracker_free(t);
}

/* ======================================================================
 * 2. Memory: the patterns, run in a child per allocator
 * ====================================================================== */

/* The chunks the patterns allocate: with the pool, or with malloc. */
typedef struct heap {
    memq_tracker *t;
    memq_pool *pool; /* NULL: malloc */
    memq_participation *p;
    memq_account *a;
    size_t live;     /* bytes asked for by the live chunks */
} heap;

static void heap_init(heap *h, bool use_pool)
{
    memset(h, 0, sizeof *h);
    if (!use_pool)
        return;
    h->t = new_tracker();
    MUST(memq_pool_new(h->t, NULL, &h->pool));
    h->p = new_participation(h->t, &h->a);
}

static void *heap_alloc(heap *h, size_t n)
{
    void *q;
    if (h->pool != NULL)
        MUST(memq_pool_alloc(h->pool, h->p, n, &q));
    else if ((q = malloc(n)) == NULL)
        die("malloc(%zu) failed", n);
    /* Data is written: the pages are resident, as a daemon's are. */
    memset(q, 0x5a, n);
    h->live += n;
    return q;
}

static void heap_free(heap *h, void *q, size_t n)
{
    if (h->pool != NULL)
        memq_pool_dealloc(h->p, q);
    else
        free(q);
    h->live -= n;
}

/* Cells, the tracked buffer's chunks, and anything up to 4 KiB. */
static uint32_t chunk_size(void)
{
    unsigned r = (unsigned)(rng() % 100);
    if (r < 35)
        return 514;
    if (r < 55)
        return 4096;
    if (r < 70)
        return 8192;
    if (r < 80)
        return 16384;
    if (r < 85)
        return 32768;
    if (r < 90)
        return 65536;
    return 1 + (uint32_t)(rng() % 4096);
}

typedef struct item {
    void *q;
    uint32_t n;
} item;

/* A FIFO stream: a ring of items. */
typedef struct stream {
    item *ring;
    uint32_t cap, head, len;
    uint32_t depth; /* an honest stream keeps at most this many */
} stream;

static void stream_push(heap *h, stream *s, size_t n)
{
    if (s->len == s->cap)
        die("a stream's ring is full");
    item *it = &s->ring[(s->head + s->len++) % s->cap];
    it->n = (uint32_t)n;
    it->q = heap_alloc(h, n);
}

static void stream_pop(heap *h, stream *s)
{
    item *it = &s->ring[s->head];
    heap_free(h, it->q, it->n);
    s->head = (s->head + 1) % s->cap;
    s->len--;
}

#define HONEST 1000
#define STALLED 100

static void honest_round(heap *h, stream *honest)
{
    for (int i = 0; i < HONEST; i++) {
        stream_push(h, &honest[i], chunk_size());
        while (honest[i].len > honest[i].depth)
            stream_pop(h, &honest[i]);
    }
}

/* Returns the resident bytes gained and the live bytes at the end. */
static void pattern_streams(heap *h, bool quick, size_t *resident, size_t *live)
{
    size_t stalled_target = quick ? 32u << 20 : 64u << 20;
    stream *honest = book(HONEST * sizeof *honest);
    stream *stalled = book(STALLED * sizeof *stalled);
    for (int i = 0; i < HONEST; i++) {
        honest[i].cap = 16;
        honest[i].depth = 1 + (uint32_t)(rng() % 8);
        honest[i].ring = book(honest[i].cap * sizeof(item));
    }
    for (int i = 0; i < STALLED; i++) {
        stalled[i].cap = 4096;
        stalled[i].ring = book(stalled[i].cap * sizeof(item));
    }
    size_t before = rss_bytes();
    /* The stalled streams grow to their target while the honest ones
     * churn; each stalled stream gets a chunk one round in ten. */
    size_t stalled_bytes = 0;
    while (stalled_bytes < stalled_target) {
        honest_round(h, honest);
        for (int i = 0; i < STALLED; i++)
            if (rng() % 10 == 0) {
                size_t n = chunk_size();
                stream_push(h, &stalled[i], n);
                stalled_bytes += n;
            }
    }
    /* Reclamation frees the stalled streams; the honest ones go on. */
    for (int i = 0; i < STALLED; i++)
        while (stalled[i].len > 0)
            stream_pop(h, &stalled[i]);
    uint64_t end = now_ns() + 100 * 1000000u;
    while (now_ns() < end)
        honest_round(h, honest);
    *resident = rss_above(before);
    *live = h->live;
}

static void pattern_random(heap *h, bool quick, size_t *resident, size_t *live)
{
    size_t total = quick ? 64u << 20 : 192u << 20, n = 0, bytes = 0;
    size_t max_items = total / 256;
    item *items = book(max_items * sizeof *items);
    size_t before = rss_bytes();
    while (bytes < total && n < max_items) {
        items[n].n = chunk_size();
        items[n].q = heap_alloc(h, items[n].n);
        bytes += items[n].n;
        n++;
    }
    /* Random frees down to a tenth of the chunks. */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng() % i);
        item tmp = items[i - 1];
        items[i - 1] = items[j];
        items[j] = tmp;
    }
    for (size_t i = n / 10; i < n; i++)
        heap_free(h, items[i].q, items[i].n);
    sleep_ms(100);
    *resident = rss_above(before);
    *live = h->live;
}

/* The child: run one pattern with one allocator, print what it held. */
static int child_main(const char *pattern, const char *allocator, bool quick)
{
    heap h;
    heap_init(&h, strcmp(allocator, "pool") == 0);
    /* Let the allocator set itself up before the baseline. */
    free(malloc(64));
    size_t resident = 0, live = 0;
    if (strcmp(pattern, "streams") == 0)
        pattern_streams(&h, quick, &resident, &live);
    else
        pattern_random(&h, quick, &resident, &live);
    printf("%zu %zu\n", resident, live);
    return 0;
}

/* Resident/live for one allocator, from a child; < 0 if it could not run. */
static double measure(const char *pattern, const char *allocator, const char *preload, bool quick)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (preload != NULL)
            setenv("LD_PRELOAD", preload, 1);
        else
            unsetenv("LD_PRELOAD");
        execl("/proc/self/exe", "pool_bench", "--child", pattern, allocator,
              quick ? "--quick" : "--full", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[128] = {0};
    ssize_t got = 0, r;
    while ((r = read(fds[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0)
        got += r;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    size_t resident = 0, live = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        sscanf(buf, "%zu %zu", &resident, &live) != 2 || live == 0)
        return -1;
    return (double)resident / (double)live;
}

static void bench_memory(bool quick)
{
    static const char *const names[] = {"pool", "glibc", "jemalloc", "mimalloc"};
    static const char *const patterns[] = {"streams", "random"};
    table_section("2. Real memory: resident / live bytes (child processes)");
    for (int p = 0; p < 2; p++) {
        double figure[4];
        for (int a = 0; a < 4; a++) {
            const char *preload = a >= 2 ? allocator_libs[a - 2] : NULL;
            if (preload != NULL && access(preload, R_OK) != 0) {
                figure[a] = -1;
                fprintf(stderr, "pool_bench: %s not found, %s skipped\n", preload, names[a]);
                continue;
            }
            figure[a] = measure(patterns[p], a == 0 ? "pool" : "malloc", preload, quick);
            if (a == 0 && figure[a] < 0)
                die("the pool's %s child failed", patterns[p]);
            if (figure[a] >= 0)
                add_line("BENCH pool_rss_%s_%s %.3f ratio", patterns[p], names[a], figure[a]);
            else
                add_line("BENCH pool_rss_%s_%s skipped", patterns[p], names[a]);
        }
        double best = DBL_MAX;
        int best_a = -1;
        for (int a = 1; a < 4; a++)
            if (figure[a] >= 0 && figure[a] < best) {
                best = figure[a];
                best_a = a;
            }
        if (p == 0) {
            const char *res = ratio_value("pool_rss_per_live_streams", figure[0], 1.15);
            table_row("  streams: pool", fmt("%.3f", figure[0]), "", fmt("%.3f", figure[0]),
                      "<=1.15", res);
        } else if (best_a > 0) {
            double ratio = figure[0] / best;
            const char *res = ratio_value("pool_rss_per_live_random", ratio, 1.0);
            table_row(fmt("  random: pool vs best (%s)", names[best_a]), fmt("%.3f", figure[0]),
                      fmt("%.3f", best), fmt("%.3f", ratio), "<=1", res);
        } else {
            table_row("  random: pool (no allocator to compare)", fmt("%.3f", figure[0]), "", "",
                      "", "");
        }
        for (int a = 1; a < 4; a++)
            table_row(fmt("    %s: %s", patterns[p], names[a]),
                      figure[a] >= 0 ? fmt("%.3f", figure[a]) : "skipped", "", "", "", "");
    }
}

int main(int argc, char **argv)
{
    bool quick = false;
    if (argc >= 5 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], argv[3], strcmp(argv[4], "--quick") == 0);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else {
            fprintf(stderr, "usage: pool_bench [--quick]\n");
            return 2;
        }
    }
    uint64_t t0 = now_ns();
    fprintf(stderr, "pool_bench: 1/2 speed\n");
    bench_speed(quick);
    fprintf(stderr, "pool_bench: 2/2 memory\n");
    bench_memory(quick);
    double seconds = (double)(now_ns() - t0) / 1e9;

    printf("libmemquota %s chunk pool benchmark, %s run, %.0f s\n\n", memq_version_string(),
           quick ? "quick" : "full", seconds);
    printf("%-40s %15s %15s %8s %8s  %s\n", "figure", "pool", "baseline", "ratio", "target",
           "result");
    for (size_t i = 0; i < table_n; i++)
        printf("%s\n", table[i]);
    printf("\n");
    for (size_t i = 0; i < lines_n; i++)
        printf("%s\n", lines[i]);
    printf("BENCH pool_duration %.1f s\n", seconds);
    printf("\n%u target%s missed\n", misses, misses == 1 ? "" : "s");
    return 0;
}
